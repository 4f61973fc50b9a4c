//! games.log: parsing its lines into typed events, and tailing the file.
//!
//! Every line is `%3i:%i%i <text>` (level time, reset by `map`, kept across `map_restart`). The
//! events that matter (reference/openarena.md §3): `InitGame:` (+ `Warmup:` in the same frame
//! when the game starts in warmup), `ClientUserinfoChanged:` (before `ClientConnect:` in OA),
//! `ClientConnect:`, `ClientBegin:`, `ClientDisconnect:`, `Exit:` with its reason, the `score:`
//! lines after it, and `ShutdownGame:`. Lines are stamped with the time they were read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use chrono::{DateTime, Utc};
use regex::Regex;
use serde::Serialize;

/// Why a match ended, from `Exit: …`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    Timelimit,
    Fraglimit,
    Capturelimit,
    /// Any other text after `Exit:` (kept verbatim).
    Other(String),
}

/// A userinfo string `k\v\k\v…` as logged by `ClientUserinfoChanged`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Userinfo(pub BTreeMap<String, String>);

impl Userinfo {
    pub fn parse(s: &str) -> Userinfo {
        let s = s.strip_prefix('\\').unwrap_or(s);
        let mut map = BTreeMap::new();
        let mut it = s.split('\\');
        while let Some(k) = it.next() {
            let v = it.next().unwrap_or("");
            if !k.is_empty() {
                map.insert(k.to_string(), v.to_string());
            }
        }
        Userinfo(map)
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    /// The game-cleaned name (`n`).
    pub fn name(&self) -> Option<&str> {
        self.get("n")
    }
    /// Bots carry `skill`; humans do not.
    pub fn skill(&self) -> Option<f32> {
        self.get("skill").and_then(|s| s.trim().parse().ok())
    }
    /// The client's `cl_guid` (`id`), when non-empty.
    pub fn guid(&self) -> Option<&str> {
        self.get("id").filter(|g| !g.is_empty())
    }
}

/// The keys OpenArena 0.8.8 writes into `ClientUserinfoChanged` (`strings qagamex86_64.so`:
/// `n\%s\t\%i\model\%s\hmodel\%s[\g_redteam\%s\g_blueteam\%s]\c1\%s\c2\%s\hc\%i\w\%i\l\%i[\skill\%s]\tt\%d\tl\%d`,
/// then `\id\%s` last).
const USERINFO_KEYS: &[&str] = &[
    "n",
    "t",
    "model",
    "hmodel",
    "g_redteam",
    "g_blueteam",
    "c1",
    "c2",
    "hc",
    "w",
    "l",
    "skill",
    "tt",
    "tl",
    "id",
];

/// Whether a logged userinfo string has the game's grammar: `n` first, `id` last with an empty
/// value (bots) or a 32-hex `cl_guid`, only the game's keys, each once. The game writes some of
/// these fields unfiltered, so a client can put a newline into one: the line is then cut short
/// (its last key is not `id`, or its `id` is not a guid) and what follows the newline is a line
/// of the client's choosing. `Err` says what is wrong.
pub fn check_logged_userinfo(s: &str) -> Result<(), &'static str> {
    let tokens: Vec<&str> = s.split('\\').collect();
    if !tokens.len().is_multiple_of(2) {
        return Err("an odd number of userinfo fields");
    }
    let keys: Vec<&str> = tokens.iter().step_by(2).copied().collect();
    if keys.first() != Some(&"n") {
        return Err("userinfo does not start with the name");
    }
    if keys.last() != Some(&"id") {
        return Err("userinfo does not end with `id` (cut by a newline?)");
    }
    let mut seen = std::collections::BTreeSet::new();
    if keys
        .iter()
        .any(|k| !USERINFO_KEYS.contains(k) || !seen.insert(*k))
    {
        return Err("a userinfo key the game does not write, or one written twice");
    }
    let id = tokens.last().copied().unwrap_or("");
    if !(id.is_empty() || (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))) {
        return Err("`id` is not a 32-hex cl_guid");
    }
    Ok(())
}

/// One game-log line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogLine {
    /// `InitGame: \k\v…` (serverinfo: mapname, g_doWarmup, timelimit, fraglimit, g_timestamp…).
    InitGame {
        info: Userinfo,
    },
    Warmup,
    UserinfoChanged {
        slot: u8,
        info: Userinfo,
        /// Why the userinfo breaks the game's grammar ([`check_logged_userinfo`]), if it does.
        #[serde(skip_serializing_if = "Option::is_none")]
        broken: Option<&'static str>,
    },
    Connect {
        slot: u8,
    },
    Begin {
        slot: u8,
    },
    Disconnect {
        slot: u8,
    },
    Exit {
        reason: ExitReason,
    },
    /// `score: S  ping: P  client: N name` after an Exit.
    Score {
        slot: u8,
        score: i32,
        ping: u32,
        name: String,
    },
    /// `red:R  blue:B` after an Exit in team modes.
    TeamScores {
        red: i32,
        blue: i32,
    },
    Shutdown,
    /// Everything else (Kill, Item, Award, say, Info, separators …).
    Other,
}

/// A parsed line with its level time (seconds since the map loaded) and read stamp.
#[derive(Debug, Clone, Serialize)]
pub struct LogEvent {
    /// Running number of the line since the watcher started.
    pub seq: u64,
    pub read_at: DateTime<Utc>,
    #[serde(skip)]
    pub read_instant: Instant,
    pub level_time_s: Option<u32>,
    pub line: LogLine,
    /// The line's text after the time prefix (lossily decoded).
    pub text: String,
}

fn prefix_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^\s*(\d+):(\d\d) (.*)$").expect("static regex"))
}

fn score_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^score:\s+(-?\d+)\s+ping:\s+(\d+)\s+client:\s+(\d+)\s?(.*)$")
            .expect("static regex")
    })
}

fn team_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^red:\s*(-?\d+)\s+blue:\s*(-?\d+)").expect("static regex"))
}

fn slot_after(rest: &str) -> Option<u8> {
    let n: u8 = rest.trim().split(' ').next()?.parse().ok()?;
    (n < super::MAX_SLOTS).then_some(n)
}

/// Split the time prefix off a line: (level time in seconds, text).
pub fn split_time(line: &str) -> (Option<u32>, &str) {
    match prefix_re().captures(line) {
        Some(c) => {
            let m: u32 = c[1].parse().unwrap_or(0);
            let s: u32 = c[2].parse().unwrap_or(0);
            let text = c.get(3).map_or("", |m| m.as_str());
            (Some(m.saturating_mul(60).saturating_add(s)), text)
        }
        None => (None, line.trim_start()),
    }
}

/// Parse the text of a line (after the time prefix).
pub fn parse_text(text: &str) -> LogLine {
    let text = text.trim_end_matches(['\r', '\n']);
    let Some((head, rest)) = text.split_once(':') else {
        return LogLine::Other;
    };
    let rest_trim = rest.strip_prefix(' ').unwrap_or(rest);
    match head {
        "InitGame" => LogLine::InitGame {
            info: Userinfo::parse(rest_trim.trim()),
        },
        "Warmup" => LogLine::Warmup,
        "ClientUserinfoChanged" => {
            let Some((n, info)) = rest_trim.split_once(' ') else {
                return LogLine::Other;
            };
            match slot_after(n) {
                Some(slot) => LogLine::UserinfoChanged {
                    slot,
                    info: Userinfo::parse(info),
                    broken: check_logged_userinfo(info).err(),
                },
                None => LogLine::Other,
            }
        }
        "ClientConnect" => {
            slot_after(rest_trim).map_or(LogLine::Other, |slot| LogLine::Connect { slot })
        }
        "ClientBegin" => {
            slot_after(rest_trim).map_or(LogLine::Other, |slot| LogLine::Begin { slot })
        }
        "ClientDisconnect" => {
            slot_after(rest_trim).map_or(LogLine::Other, |slot| LogLine::Disconnect { slot })
        }
        "Exit" => LogLine::Exit {
            reason: match rest_trim.trim() {
                "Timelimit hit." => ExitReason::Timelimit,
                "Fraglimit hit." => ExitReason::Fraglimit,
                "Capturelimit hit." => ExitReason::Capturelimit,
                other => ExitReason::Other(other.to_string()),
            },
        },
        "ShutdownGame" => LogLine::Shutdown,
        "score" => match score_re().captures(text) {
            Some(c) => match (c[1].parse(), c[2].parse(), c[3].parse::<u8>()) {
                (Ok(score), Ok(ping), Ok(slot)) if slot < super::MAX_SLOTS => LogLine::Score {
                    slot,
                    score,
                    ping,
                    name: c.get(4).map_or("", |m| m.as_str()).to_string(),
                },
                _ => LogLine::Other,
            },
            None => LogLine::Other,
        },
        "red" => match team_re().captures(text) {
            Some(c) => match (c[1].parse(), c[2].parse()) {
                (Ok(red), Ok(blue)) => LogLine::TeamScores { red, blue },
                _ => LogLine::Other,
            },
            None => LogLine::Other,
        },
        _ => LogLine::Other,
    }
}

/// Parse one full line (with or without the time prefix).
pub fn parse_line(line: &str) -> (Option<u32>, LogLine, &str) {
    let (t, text) = split_time(line);
    (t, parse_text(text), text)
}

/// Follows a growing games.log: starts at its end (or its start), survives truncation and the
/// file being replaced, and hands out complete lines only.
#[derive(Debug)]
pub struct LogTail {
    path: PathBuf,
    offset: u64,
    /// Identity of the file being read, to notice replacement.
    ident: Option<(u64, u64)>,
    partial: Vec<u8>,
    /// Truncations and replacements seen (for tests and the log).
    pub restarts: u32,
}

#[cfg(unix)]
fn ident(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}
#[cfg(not(unix))]
fn ident(_: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// Longest line kept; the game cuts lines at 1024 bytes, so more is junk.
const MAX_LINE: usize = 64 * 1024;

impl LogTail {
    /// Start at the current end of the file (attach: only what happens from now on). A file that
    /// does not exist yet is read from its start once it appears.
    pub fn from_end(path: &Path) -> LogTail {
        let (offset, ident) = match std::fs::metadata(path) {
            Ok(m) => (m.len(), Some(ident(&m))),
            Err(_) => (0, None),
        };
        LogTail {
            path: path.to_path_buf(),
            offset,
            ident,
            partial: Vec::new(),
            restarts: 0,
        }
    }

    /// Start at the beginning (a launched server's fresh log).
    pub fn from_start(path: &Path) -> LogTail {
        LogTail {
            path: path.to_path_buf(),
            offset: 0,
            ident: None,
            partial: Vec::new(),
            restarts: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of the current file consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Read whatever complete lines were appended since the last call.
    pub fn poll(&mut self) -> std::io::Result<Vec<String>> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let id = ident(&meta);
        if self.ident.is_some_and(|old| old != id) {
            // Replaced (rotated, recreated): the new file is all new.
            self.offset = 0;
            self.partial.clear();
            self.restarts += 1;
        } else if meta.len() < self.offset {
            // Truncated: what is there now was written after the truncation.
            self.offset = 0;
            self.partial.clear();
            self.restarts += 1;
        }
        self.ident = Some(id);
        if meta.len() == self.offset {
            return Ok(Vec::new());
        }
        let mut f = File::open(&self.path)?;
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        // Bounded read per poll so one huge burst cannot stall the caller.
        let n = f.take(4 * 1024 * 1024).read_to_end(&mut buf)?;
        self.offset += n as u64;
        let mut lines = Vec::new();
        for chunk in buf.split_inclusive(|b| *b == b'\n') {
            if chunk.ends_with(b"\n") {
                self.partial.extend_from_slice(&chunk[..chunk.len() - 1]);
                let line = String::from_utf8_lossy(&self.partial).into_owned();
                lines.push(line);
                self.partial.clear();
            } else {
                self.partial.extend_from_slice(chunk);
                if self.partial.len() > MAX_LINE {
                    self.partial.clear();
                }
            }
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn parses_the_verified_lines() {
        let (t, l, _) = parse_line(
            "  1:05 InitGame: \\com_protocol\\71\\g_doWarmup\\1\\fraglimit\\20\\timelimit\\1\\g_gametype\\0\\mapname\\oa_dm1\\g_timestamp\\2026-11-22 02:54:15",
        );
        assert_eq!(t, Some(65));
        match l {
            LogLine::InitGame { info } => {
                assert_eq!(info.get("mapname"), Some("oa_dm1"));
                assert_eq!(info.get("g_doWarmup"), Some("1"));
                assert_eq!(info.get("g_timestamp"), Some("2026-11-22 02:54:15"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_line("  0:00 Warmup:").1, LogLine::Warmup);
        match parse_line(
            "  0:15 ClientUserinfoChanged: 0 n\\Sarge\\t\\0\\model\\sarge\\hmodel\\sarge\\c1\\4\\c2\\5\\hc\\70\\w\\0\\l\\0\\skill\\ 2.00\\tt\\0\\tl\\0\\id\\",
        )
        .1
        {
            LogLine::UserinfoChanged { slot: 0, info, broken: None } => {
                assert_eq!(info.name(), Some("Sarge"));
                assert_eq!(info.skill(), Some(2.0));
                assert_eq!(info.guid(), None);
            }
            other => panic!("{other:?}"),
        }
        match parse_line(
            "  0:01 ClientUserinfoChanged: 3 n\\^1Test ^2Human\\t\\0\\model\\sarge\\hmodel\\sarge\\g_redteam\\\\g_blueteam\\\\c1\\4\\c2\\5\\hc\\100\\w\\0\\l\\0\\tt\\0\\tl\\0\\id\\AA908E01A59664516FE43D2BA1DAA2BD",
        )
        .1
        {
            LogLine::UserinfoChanged { slot: 3, info, broken: None } => {
                assert_eq!(info.name(), Some("^1Test ^2Human"));
                assert_eq!(info.skill(), None);
                assert_eq!(info.guid(), Some("AA908E01A59664516FE43D2BA1DAA2BD"));
                assert_eq!(info.get("g_redteam"), Some(""));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_line("  0:15 ClientConnect: 12").1,
            LogLine::Connect { slot: 12 }
        );
        assert_eq!(
            parse_line("  0:15 ClientBegin: 0").1,
            LogLine::Begin { slot: 0 }
        );
        assert_eq!(
            parse_line("  0:16 ClientDisconnect: 1").1,
            LogLine::Disconnect { slot: 1 }
        );
        assert_eq!(
            parse_line("  2:05 Exit: Timelimit hit.").1,
            LogLine::Exit {
                reason: ExitReason::Timelimit
            }
        );
        assert_eq!(
            parse_line("  3:38 Exit: Fraglimit hit.").1,
            LogLine::Exit {
                reason: ExitReason::Fraglimit
            }
        );
        assert_eq!(
            parse_line("  3:38 Exit: Capturelimit hit.").1,
            LogLine::Exit {
                reason: ExitReason::Capturelimit
            }
        );
        assert_eq!(
            parse_line("  3:38 Exit: Kicked by admin").1,
            LogLine::Exit {
                reason: ExitReason::Other("Kicked by admin".into())
            }
        );
        assert_eq!(
            parse_line("  2:05 score: 12  ping: 0  client: 1 ^1Big ^2Boss").1,
            LogLine::Score {
                slot: 1,
                score: 12,
                ping: 0,
                name: "^1Big ^2Boss".into()
            }
        );
        assert_eq!(
            parse_line("  2:05 score: -1  ping: 48  client: 3 a: b").1,
            LogLine::Score {
                slot: 3,
                score: -1,
                ping: 48,
                name: "a: b".into()
            }
        );
        assert_eq!(
            parse_line("  2:05 red:8  blue:5").1,
            LogLine::TeamScores { red: 8, blue: 5 }
        );
        assert_eq!(parse_line("  0:08 ShutdownGame:").1, LogLine::Shutdown);
        assert_eq!(
            parse_line("  0:16 Kill: 1022 1 20: <world> killed ^1Big ^2Boss by MOD_SUICIDE").1,
            LogLine::Other
        );
        assert_eq!(
            parse_line("  0:00 ------------------------------------------------------------").1,
            LogLine::Other
        );
        // A player's chat cannot forge an event: it starts with `say:`.
        assert_eq!(
            parse_line("  0:20 say: x: Exit: Fraglimit hit.").1,
            LogLine::Other
        );
        // 1000+ minutes widen the field.
        assert_eq!(parse_line("1000:00 ClientBegin: 2").0, Some(60_000));
        // Junk.
        for junk in [
            "",
            ":",
            "ClientConnect: 99",
            "ClientConnect: x",
            "score: a",
            "\u{fffd}",
        ] {
            let _ = parse_line(junk);
        }
        assert_eq!(parse_line("ClientConnect: 64").1, LogLine::Other);
    }

    #[test]
    fn tail_follows_appends_truncation_and_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("games.log");
        std::fs::write(&p, "  0:00 old line\n").unwrap();
        let mut t = LogTail::from_end(&p);
        assert!(t.poll().unwrap().is_empty());
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"  0:01 ClientConnect: 1\n  0:01 Client")
            .unwrap();
        assert_eq!(t.poll().unwrap(), vec!["  0:01 ClientConnect: 1"]);
        f.write_all(b"Begin: 1\n").unwrap();
        assert_eq!(t.poll().unwrap(), vec!["  0:01 ClientBegin: 1"]);
        // Truncated and rewritten (shorter than before).
        std::fs::write(&p, "  0:00 A\n").unwrap();
        assert_eq!(t.poll().unwrap(), vec!["  0:00 A"]);
        assert_eq!(t.restarts, 1);
        // Replaced by a new file (new inode), even if longer.
        let tmp = dir.path().join("new.log");
        std::fs::write(&tmp, b"  0:00 B\n  0:00 C\n\xff\xfe bytes\n").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        assert_eq!(
            t.poll().unwrap(),
            vec!["  0:00 B", "  0:00 C", "\u{fffd}\u{fffd} bytes"]
        );
        assert_eq!(t.restarts, 2);
        // Vanished: nothing, no error.
        std::fs::remove_file(&p).unwrap();
        assert!(t.poll().unwrap().is_empty());
    }

    #[test]
    fn tail_of_a_missing_file_starts_when_it_appears() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("games.log");
        let mut t = LogTail::from_end(&p);
        assert!(t.poll().unwrap().is_empty());
        std::fs::write(&p, "  0:00 InitGame: \\mapname\\x\n").unwrap();
        assert_eq!(t.poll().unwrap().len(), 1);
    }
}
