//! Index of where each key path sits in the YAML source, from the parser's marked events.
//! Schema errors come back as JSON pointers; this turns them into file:line:column.

use std::collections::HashMap;

use granit_parser::{Event, Parser};

use super::diag::{KeyPath, Seg};

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Default)]
pub struct LocationIndex {
    /// Where the value of a path starts.
    values: HashMap<KeyPath, Pos>,
    /// Where the key of a mapping entry is.
    keys: HashMap<KeyPath, Pos>,
}

enum Frame {
    Map { path: KeyPath, key: Option<String> },
    Seq { path: KeyPath, next: usize },
}

impl LocationIndex {
    /// Build the index; on a syntax error, returns what was indexed so far (the YAML error
    /// itself is reported by the deserializer).
    pub fn build(src: &str) -> Self {
        let mut idx = LocationIndex::default();
        let mut stack: Vec<Frame> = Vec::new();
        for ev in Parser::new_from_str(src) {
            let Ok((ev, span)) = ev else { break };
            let pos = Pos {
                line: span.start.line(),
                column: span.start.col() + 1,
            };
            let is_node = matches!(
                ev,
                Event::Scalar(..)
                    | Event::SequenceStart(..)
                    | Event::MappingStart(..)
                    | Event::Alias(_)
            );
            if is_node {
                // Is this node a mapping key? Then record it and wait for the value.
                if let Some(Frame::Map { path, key }) = stack.last_mut()
                    && key.is_none()
                {
                    let k = match &ev {
                        Event::Scalar(s, ..) => s.to_string(),
                        _ => "?".to_string(),
                    };
                    idx.keys.insert(path.key(k.clone()), pos);
                    *key = Some(k);
                    if matches!(ev, Event::SequenceStart(..) | Event::MappingStart(..)) {
                        // A complex key: index nothing inside it.
                        stack.push(Frame::Seq {
                            path: KeyPath(vec![Seg::Key("\u{0}complex".into())]),
                            next: 0,
                        });
                    }
                    continue;
                }
                let path = match stack.last_mut() {
                    None => KeyPath::root(),
                    Some(Frame::Map { path, key }) => path.key(key.take().unwrap_or_default()),
                    Some(Frame::Seq { path, next }) => {
                        *next += 1;
                        path.index(*next - 1)
                    }
                };
                idx.values.entry(path.clone()).or_insert(pos);
                match ev {
                    Event::SequenceStart(..) => stack.push(Frame::Seq { path, next: 0 }),
                    Event::MappingStart(..) => stack.push(Frame::Map { path, key: None }),
                    _ => {}
                }
            } else if matches!(ev, Event::SequenceEnd | Event::MappingEnd) {
                stack.pop();
            }
        }
        idx
    }

    /// Position of the value at `path`, or of the nearest enclosing node that has one.
    pub fn value(&self, path: &KeyPath) -> Option<Pos> {
        let mut p = path.clone();
        loop {
            if let Some(pos) = self.values.get(&p) {
                return Some(*pos);
            }
            p = p.parent()?;
        }
    }

    /// Position of the key of a mapping entry (falls back to its value, then its ancestors).
    pub fn key(&self, path: &KeyPath) -> Option<Pos> {
        self.keys.get(path).copied().or_else(|| self.value(path))
    }

    /// Whether the source mentions this exact path (as opposed to a default filling it in).
    pub fn contains(&self, path: &KeyPath) -> bool {
        self.values.contains_key(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_values() {
        let src = "a: 1\nb:\n  c: [x, y]\n  d:\n    - e: 2\n";
        let idx = LocationIndex::build(src);
        let p = |s: &str| KeyPath::parse(s).unwrap();
        assert_eq!(idx.key(&p("a")), Some(Pos { line: 1, column: 1 }));
        assert_eq!(idx.value(&p("a")), Some(Pos { line: 1, column: 4 }));
        assert_eq!(
            idx.value(&p("b.c[1]")),
            Some(Pos {
                line: 3,
                column: 10
            })
        );
        assert_eq!(idx.key(&p("b.d[0].e")), Some(Pos { line: 5, column: 7 }));
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(idx.value(&p("b.c[7]")), Some(Pos { line: 3, column: 6 }));
        assert!(!idx.contains(&p("b.zzz")));
    }
}
