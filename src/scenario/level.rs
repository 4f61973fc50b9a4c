//! One latency level: an added delay, optionally with jitter and loss. Written either as a plain
//! duration (`100ms`) or as a map (`{delay: 200ms, jitter: 20ms, loss: 1%}`); both read into the
//! same [`Level`]. A level is identified by its delay (levels must have distinct delays), so the
//! latency matrix, names and manifest keep speaking in `latency_ms`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Duration;

/// Pattern shared by the schema and the parser: a percentage with up to 4 decimals.
pub const PERCENT_PATTERN: &str = r"^[0-9]{1,3}(\.[0-9]{1,4})?%$";

/// A share in parts per million, written as a percentage (`1%`, `0.25%`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Percent(u32);

impl Percent {
    pub const fn from_ppm(ppm: u32) -> Percent {
        Percent(ppm)
    }
    pub fn ppm(self) -> u32 {
        self.0
    }
    pub fn as_pct(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }
}

impl FromStr for Percent {
    type Err = String;
    fn from_str(s: &str) -> Result<Percent, String> {
        let err = || format!("`{s}` is not a percentage (e.g. 1%, 0.5%)");
        let num = s.strip_suffix('%').ok_or_else(err)?;
        let (whole, frac) = match num.split_once('.') {
            Some((_, "")) => return Err(err()),
            Some(parts) => parts,
            None => (num, ""),
        };
        if whole.is_empty()
            || whole.len() > 3
            || frac.len() > 4
            || !whole
                .chars()
                .chain(frac.chars())
                .all(|c| c.is_ascii_digit())
        {
            return Err(err());
        }
        let w: u32 = whole.parse().map_err(|_| err())?;
        let f: u32 = format!("{frac:0<4}").parse().map_err(|_| err())?;
        Ok(Percent(w * 10_000 + f))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (w, frac) = (self.0 / 10_000, self.0 % 10_000);
        if frac == 0 {
            write!(f, "{w}%")
        } else {
            let d = format!("{frac:04}");
            write!(f, "{w}.{}%", d.trim_end_matches('0'))
        }
    }
}

impl fmt::Debug for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Percent {
    fn schema_name() -> Cow<'static, str> {
        "Percent".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": PERCENT_PATTERN,
            "description": "A percentage with up to 4 decimals (e.g. 1%, 0.5%).",
            "examples": ["1%", "0.5%"]
        })
    }
}

/// One latency level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Level {
    /// Added round-trip delay.
    pub delay: Duration,
    /// Spread around the delay (uniform, `delay ± jitter`); zero for none.
    pub jitter: Duration,
    /// Share of the game packets dropped, per shaped direction; zero for none.
    pub loss: Percent,
}

impl Level {
    pub fn delay(delay: Duration) -> Level {
        Level {
            delay,
            ..Level::default()
        }
    }
    pub fn delay_ms(&self) -> u64 {
        self.delay.as_millis()
    }
    pub fn jitter_ms(&self) -> u64 {
        self.jitter.as_millis()
    }
    /// Whether it is more than a plain delay.
    pub fn is_plain(&self) -> bool {
        self.jitter == Duration::default() && self.loss == Percent::default()
    }
}

impl fmt::Display for Level {
    /// `100ms`, or `200ms±20ms 1% loss`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.delay)?;
        if self.jitter != Duration::default() {
            write!(f, "±{}", self.jitter)?;
        }
        if self.loss != Percent::default() {
            write!(f, " {} loss", self.loss)?;
        }
        Ok(())
    }
}

/// The map form, as written.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct LevelMap {
    /// Added round-trip delay (e.g. `200ms`).
    delay: Duration,
    /// Uniform jitter around the delay (at most the delay), e.g. `20ms`.
    #[serde(default, skip_serializing_if = "is_zero_duration")]
    jitter: Duration,
    /// Share of game packets dropped in each shaped direction (at most 100%), e.g. `1%`.
    #[serde(default, skip_serializing_if = "is_zero_percent")]
    loss: Percent,
}

fn is_zero_duration(d: &Duration) -> bool {
    *d == Duration::default()
}
fn is_zero_percent(p: &Percent) -> bool {
    *p == Percent::default()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LevelRepr {
    Plain(Duration),
    Map(LevelMap),
}

impl Serialize for Level {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.is_plain() {
            self.delay.serialize(s)
        } else {
            LevelMap {
                delay: self.delay,
                jitter: self.jitter,
                loss: self.loss,
            }
            .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match LevelRepr::deserialize(d)? {
            LevelRepr::Plain(delay) => Level::delay(delay),
            LevelRepr::Map(m) => Level {
                delay: m.delay,
                jitter: m.jitter,
                loss: m.loss,
            },
        })
    }
}

impl JsonSchema for Level {
    fn schema_name() -> Cow<'static, str> {
        "Level".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let plain = g.subschema_for::<Duration>();
        let map = g.subschema_for::<LevelMap>();
        json_schema!({
            "description": "A latency level: an added round-trip delay (`100ms`), or a map with the delay and optional jitter and loss (`{delay: 200ms, jitter: 20ms, loss: 1%}`).",
            "anyOf": [plain, map]
        })
    }
}

impl From<Duration> for Level {
    fn from(d: Duration) -> Level {
        Level::delay(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_round_trips() {
        for (s, ppm) in [
            ("1%", 10_000),
            ("0.5%", 5_000),
            ("100%", 1_000_000),
            ("0.0001%", 1),
        ] {
            let p: Percent = s.parse().unwrap();
            assert_eq!(p.ppm(), ppm, "{s}");
            assert_eq!(p.to_string(), s);
        }
        for bad in ["1", "-1%", "1.%", ".5%", "1.23456%", "1000%", "x%"] {
            assert!(bad.parse::<Percent>().is_err(), "{bad}");
        }
        let re = regex::Regex::new(PERCENT_PATTERN).unwrap();
        for s in ["1%", "0.5%", "100%", "1", "-1%", "1.23456%"] {
            assert_eq!(re.is_match(s), s.parse::<Percent>().is_ok(), "{s}");
        }
    }

    #[test]
    fn both_forms_read_into_one_level() {
        let l: Vec<Level> = serde_json::from_str(
            r#"["100ms", {"delay": "200ms", "jitter": "20ms", "loss": "1%"}]"#,
        )
        .unwrap();
        assert_eq!(l[0], Level::delay(Duration::from_millis(100)));
        assert_eq!(l[1].jitter_ms(), 20);
        assert_eq!(l[1].loss.ppm(), 10_000);
        assert_eq!(l[1].to_string(), "200ms±20ms 1% loss");
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"["100ms",{"delay":"200ms","jitter":"20ms","loss":"1%"}]"#
        );
    }
}
