//! Durations as researchers write them: `250ms`, `30s`, `2m`, `1h`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Pattern shared by the schema and the parser.
pub const DURATION_PATTERN: &str = r"^[0-9]{1,9}(ms|s|m|h)$";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
    pub fn std(self) -> std::time::Duration {
        self.0
    }
    pub fn as_millis(self) -> u64 {
        self.0.as_millis() as u64
    }
    /// Whole, non-zero minutes: the server's `timelimit` can express it.
    pub fn whole_minutes(self) -> Option<u64> {
        let ms = self.as_millis();
        (ms > 0 && ms.is_multiple_of(60_000)).then_some(ms / 60_000)
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseDurationError(pub String);

impl fmt::Display for ParseDurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a duration; expected a number with a unit ms, s, m or h (e.g. 250ms, 30s, 2m, 1h)",
            self.0
        )
    }
}

impl std::error::Error for ParseDurationError {}

impl FromStr for Duration {
    type Err = ParseDurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseDurationError(s.to_string());
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let (num, unit) = s.split_at(split);
        if num.is_empty() || num.len() > 9 {
            return Err(err());
        }
        let n: u64 = num.parse().map_err(|_| err())?;
        let ms = match unit {
            "ms" => n,
            "s" => n * 1000,
            "m" => n * 60_000,
            "h" => n * 3_600_000,
            _ => return Err(err()),
        };
        Ok(Duration::from_millis(ms))
    }
}

impl fmt::Display for Duration {
    /// The largest unit that represents the value exactly, so `120s` prints as `2m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
            if ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration: a whole number with a unit ms, s, m or h (e.g. 250ms, 30s, 2m, 1h).",
            "examples": ["250ms", "30s", "2m", "1h"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!("250ms".parse::<Duration>().unwrap().as_millis(), 250);
        assert_eq!("30s".parse::<Duration>().unwrap().as_millis(), 30_000);
        assert_eq!("2m".parse::<Duration>().unwrap().as_millis(), 120_000);
        assert_eq!("1h".parse::<Duration>().unwrap().as_millis(), 3_600_000);
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "10",
            "ms",
            "1.5s",
            "-1s",
            "10 s",
            "10sec",
            "1d",
            "9999999999s",
        ] {
            assert!(
                bad.parse::<Duration>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn displays_in_largest_exact_unit() {
        assert_eq!("120s".parse::<Duration>().unwrap().to_string(), "2m");
        assert_eq!("90s".parse::<Duration>().unwrap().to_string(), "90s");
        assert_eq!("1500ms".parse::<Duration>().unwrap().to_string(), "1500ms");
        assert_eq!("60m".parse::<Duration>().unwrap().to_string(), "1h");
    }

    #[test]
    fn whole_minutes() {
        assert_eq!("2m".parse::<Duration>().unwrap().whole_minutes(), Some(2));
        assert_eq!("120s".parse::<Duration>().unwrap().whole_minutes(), Some(2));
        assert_eq!("20s".parse::<Duration>().unwrap().whole_minutes(), None);
        assert_eq!("0m".parse::<Duration>().unwrap().whole_minutes(), None);
    }

    #[test]
    fn pattern_agrees_with_parser() {
        let re = regex::Regex::new(DURATION_PATTERN).unwrap();
        for s in ["1ms", "30s", "2m", "1h", "10", "1d", "1.5s", "0s"] {
            assert_eq!(re.is_match(s), s.parse::<Duration>().is_ok(), "{s}");
        }
    }
}
