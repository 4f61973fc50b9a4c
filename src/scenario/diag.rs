//! Scenario problems, each pointing at a file position and a key path.

use std::fmt;

/// One segment of a key path into the scenario document.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A key path such as `players.seats[1].ip`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }
    pub fn key(&self, k: impl Into<String>) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.into()));
        KeyPath(v)
    }
    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        KeyPath(v)
    }
    pub fn parent(&self) -> Option<KeyPath> {
        let mut v = self.0.clone();
        v.pop().map(|_| KeyPath(v))
    }
    /// Parse the dotted form used by `--set` (`players.seats.0.ip` or `players.seats[0].ip`).
    pub fn parse(s: &str) -> Option<KeyPath> {
        let mut segs = Vec::new();
        for part in s.split('.') {
            let (name, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if !name.is_empty() {
                segs.push(match name.parse::<usize>() {
                    Ok(i) => Seg::Index(i),
                    Err(_) => Seg::Key(name.to_string()),
                });
            } else if rest.is_empty() {
                return None;
            }
            while let Some(stripped) = rest.strip_prefix('[') {
                let end = stripped.find(']')?;
                segs.push(Seg::Index(stripped[..end].parse().ok()?));
                rest = &stripped[end + 1..];
            }
            if !rest.is_empty() {
                return None;
            }
        }
        (!segs.is_empty()).then_some(KeyPath(segs))
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Where a problem is: a file position, or a `--set` override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File {
        file: String,
        line: usize,
        column: usize,
    },
    /// The whole file (no better position known).
    FileOnly {
        file: String,
    },
    Override {
        text: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub origin: Origin,
    pub path: KeyPath,
    /// What was found and what was expected, as one sentence.
    pub message: String,
    /// An optional suggestion (`did you mean `repeats`?`).
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File { file, line, column } => write!(f, "{file}:{line}:{column}: ")?,
            Origin::FileOnly { file } => write!(f, "{file}: ")?,
            Origin::Override { text } => write!(f, "--set {text}: ")?,
        }
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: ")?;
        if !self.path.0.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}

/// Closest candidate for a misspelt key, if it is close enough to be a plausible typo.
pub fn did_you_mean<'a>(
    found: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(found, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_path_round_trip() {
        let p = KeyPath::parse("players.seats[1].ip").unwrap();
        assert_eq!(p.to_string(), "players.seats[1].ip");
        assert_eq!(KeyPath::parse("players.seats.1.ip").unwrap(), p);
        assert!(KeyPath::parse("a..b").is_none());
        assert!(KeyPath::parse("a[x]").is_none());
    }

    #[test]
    fn suggests_close_keys_only() {
        let keys = ["timelimit", "repeats", "overtime"];
        assert_eq!(
            did_you_mean("repeets", keys).unwrap(),
            "did you mean `repeats`?"
        );
        assert_eq!(did_you_mean("colour", keys), None);
    }
}
