//! Parsers for the rcon `status` and `dumpuser` replies.
//!
//! `status` comes in two formats (reference/openarena.md §2):
//! - this engine (ioq3 ≥ 2014): `cl score ping name address rate`, the name padded to a visible
//!   width of 16, then `^7<address>` padded to 39, then the rate;
//! - older engines (Q3 1.32, OA's own oa_ded, B3's and OA_Server_Manager's parsers):
//!   `num score ping name lastmsg address qport rate`, `^7` right after the name, padding by byte
//!   length, the address with its port.
//!
//! Names may contain spaces, colour codes, `;`, quotes and anything else, so a row is matched
//! from both ends: the fixed columns at the start, the address (and numbers) at the end, and the
//! name is whatever lies between.
//!
//! A name may also contain a newline (the engine prints the raw userinfo name), which splits its
//! row and can add rows of its own. The server prints one row per slot in slot order, so rows are
//! parsed strictly: a row that does not parse, or whose slot is not above the previous one, marks
//! the reply [`Status::tainted`]; that row, every row of a repeated slot and every row after it
//! are dropped (kept in [`Status::rejected`] for the log), never turned into players.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use regex::Regex;
use serde::Serialize;

/// Which `status` layout a reply used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusFormat {
    /// `cl score ping name address rate`.
    Current,
    /// `num score ping name lastmsg address qport rate`.
    Legacy,
    /// No header seen (an empty or cut reply).
    Unknown,
}

/// The ping column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ping {
    Ms(u32),
    /// `CON` / `CNCT`: still connecting (loading the map).
    Connecting,
    /// `ZMB` / `ZMBI`: disconnected, slot not yet free.
    Zombie,
}

/// The address column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Address {
    Bot,
    Ip(IpAddr),
    /// Anything else (`loopback` for a listen server's own client), kept verbatim.
    Other(String),
}

impl Address {
    pub fn parse(s: &str) -> Address {
        if s.eq_ignore_ascii_case("bot") {
            return Address::Bot;
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Address::Ip(ip);
        }
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Address::Ip(sa.ip());
        }
        // `[v6]` without a port, or `v4:port` written oddly.
        let trimmed = s.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = trimmed.parse::<IpAddr>() {
            return Address::Ip(ip);
        }
        Address::Other(s.to_string())
    }
}

/// One client row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusRow {
    pub slot: u8,
    pub score: i32,
    pub ping: Ping,
    /// The raw name (colour codes kept, trailing padding removed).
    pub name: String,
    pub address: Address,
    pub rate: u32,
}

impl StatusRow {
    pub fn is_bot(&self) -> bool {
        self.address == Address::Bot
    }
    /// A client that has left; the slot is kept a few seconds so it gets the disconnect
    /// message (a kicked client shows like this, with an empty name).
    pub fn is_zombie(&self) -> bool {
        self.ping == Ping::Zombie
    }
    pub fn ip(&self) -> Option<IpAddr> {
        match self.address {
            Address::Ip(ip) => Some(ip),
            _ => None,
        }
    }
}

/// A parsed `status` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub map: Option<String>,
    pub format: StatusFormat,
    pub rows: Vec<StatusRow>,
    /// Lines that looked like rows but did not parse (kept for the log, never fatal).
    pub unparsed: Vec<String>,
    /// A row broke the grammar (see the module doc): rows from there on are in `rejected`, and
    /// a client missing from `rows` may still be on the server.
    pub tainted: bool,
    /// Rows dropped because the reply was tainted at or before them.
    pub rejected: Vec<StatusRow>,
}

impl Status {
    /// Clients that are on the server (zombies excluded).
    pub fn active(&self) -> impl Iterator<Item = &StatusRow> {
        self.rows.iter().filter(|r| !r.is_zombie())
    }
    pub fn humans(&self) -> impl Iterator<Item = &StatusRow> {
        self.active().filter(|r| !r.is_bot())
    }
    pub fn bots(&self) -> impl Iterator<Item = &StatusRow> {
        self.active().filter(|r| r.is_bot())
    }
}

fn current_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        // slot score ping|CON|ZMB name … ^7address rate
        Regex::new(r"^\s*(\d+)\s+(-?\d+)\s+(\d+|CON|ZMB|CNCT|ZMBI)\s(.*?)\s*\^7(\S+)\s+(\d+)\s*$")
            .expect("static regex")
    })
}

fn legacy_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        // num score ping|CNCT|ZMBI name^7 lastmsg address qport rate
        Regex::new(
            r"^\s*(\d+)\s+(-?\d+)\s+(\d+|CNCT|ZMBI|CON|ZMB)\s(.*)\^7\s+(\d+)\s+(\S+)\s+(\d+)\s+(\d+)\s*$",
        )
        .expect("static regex")
    })
}

fn parse_ping(s: &str) -> Ping {
    match s {
        "CON" | "CNCT" => Ping::Connecting,
        "ZMB" | "ZMBI" => Ping::Zombie,
        n => Ping::Ms(n.parse().unwrap_or(u32::MAX)),
    }
}

fn row_from(caps: &regex::Captures<'_>, addr: usize, rate: usize) -> Option<StatusRow> {
    let slot: u8 = caps[1].parse().ok()?;
    if slot >= super::MAX_SLOTS {
        return None;
    }
    Some(StatusRow {
        slot,
        score: caps[2].parse().ok()?,
        ping: parse_ping(&caps[3]),
        name: caps[4].trim_end().to_string(),
        address: Address::parse(&caps[addr]),
        rate: caps[rate].parse().unwrap_or(0),
    })
}

fn parse_current(line: &str) -> Option<StatusRow> {
    // The lazy name group stops at the *last* `^7<addr> <rate>` because the pattern is anchored
    // at the end and `\S+` cannot cross the padding; a name containing `^7x 1` cannot fake it.
    let caps = current_re().captures(line)?;
    row_from(&caps, 5, 6)
}

fn parse_legacy(line: &str) -> Option<StatusRow> {
    let caps = legacy_re().captures(line)?;
    row_from(&caps, 6, 8)
}

/// Parse a whole `status` reply (any junk is skipped, never fatal).
pub fn parse_status(text: &str) -> Status {
    let mut st = Status {
        map: None,
        format: StatusFormat::Unknown,
        rows: Vec::new(),
        unparsed: Vec::new(),
        tainted: false,
        rejected: Vec::new(),
    };
    for raw in text.split('\n') {
        let line = raw.trim_end_matches('\r');
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(map) = line.strip_prefix("map: ") {
            st.map = Some(map.trim().to_string());
            continue;
        }
        if trimmed.starts_with("cl score ping name") {
            st.format = StatusFormat::Current;
            continue;
        }
        if trimmed.starts_with("num score ping name") {
            st.format = StatusFormat::Legacy;
            continue;
        }
        if trimmed.starts_with("--") && trimmed.chars().all(|c| c == '-' || c == ' ') {
            continue;
        }
        let row = match st.format {
            StatusFormat::Current => parse_current(line),
            StatusFormat::Legacy => parse_legacy(line),
            StatusFormat::Unknown => parse_legacy(line).or_else(|| parse_current(line)),
        };
        match row {
            Some(r) if st.tainted => st.rejected.push(r),
            Some(r) if st.rows.last().is_some_and(|last| r.slot <= last.slot) => {
                // Out of slot order: a row forged inside a name. Every row of that slot goes.
                st.tainted = true;
                let (bad, good): (Vec<_>, Vec<_>) =
                    st.rows.drain(..).partition(|old| old.slot >= r.slot);
                st.rows = good;
                st.rejected.extend(bad);
                st.rejected.push(r);
                // The row before the forged ones is the one whose name carried them (and it
                // may have chosen its own address).
                st.rejected.extend(st.rows.pop());
            }
            Some(r) => st.rows.push(r),
            None => {
                // Before the header a stray line is noise; inside the table it is a row cut by
                // a newline in a name, and what follows may be that name's forgery.
                if st.format != StatusFormat::Unknown || !st.rows.is_empty() {
                    st.tainted = true;
                }
                st.unparsed.push(line.to_string());
            }
        }
    }
    // Each player's OBS is reached at their IP, so two humans at one IP are one forging the
    // other's address: neither is trusted.
    let mut seen = BTreeMap::new();
    for r in st.rows.iter().filter(|r| !r.is_zombie()) {
        if let Some(ip) = r.ip() {
            *seen.entry(ip).or_insert(0u32) += 1;
        }
    }
    if seen.values().any(|n| *n > 1) {
        st.tainted = true;
        let (bad, good): (Vec<_>, Vec<_>) = st
            .rows
            .drain(..)
            .partition(|r| !r.is_zombie() && r.ip().is_some_and(|ip| seen[&ip] > 1));
        st.rows = good;
        st.rejected.extend(bad);
    }
    st
}

/// Parse a `dumpuser <slot>` reply: `userinfo`, `--------`, then `key<padding>value` lines.
pub fn parse_dumpuser(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut in_body = false;
    for raw in text.split('\n') {
        let line = raw.trim_end_matches('\r');
        if !in_body {
            if line.starts_with("--------") {
                in_body = true;
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let (key, value) = match line.find(char::is_whitespace) {
            Some(i) => (&line[..i], line[i..].trim_start()),
            None => (line, ""),
        };
        out.insert(key.to_string(), value.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Visible length as `SV_Strlen` counts it: `^x` colour codes take no room.
    fn visible_len(name: &[u8]) -> usize {
        let mut n = 0;
        let mut i = 0;
        while i < name.len() {
            if name[i] == b'^' && i + 1 < name.len() && name[i + 1].is_ascii_alphanumeric() {
                i += 2;
            } else {
                n += 1;
                i += 1;
            }
        }
        n
    }

    /// A row exactly as ioq3 70d07d9's `SV_Status_f` prints it (sv_ccmds.c:1168).
    fn current_row(
        slot: u8,
        score: i32,
        ping: &str,
        name: &[u8],
        addr: &str,
        rate: u32,
    ) -> Vec<u8> {
        let mut out = format!("{slot:>2} {score:>5} ").into_bytes();
        out.extend_from_slice(ping.as_bytes());
        out.extend_from_slice(name);
        let pad = 16usize.saturating_sub(visible_len(name)).max(1);
        out.extend(std::iter::repeat_n(b' ', pad));
        out.extend_from_slice(format!("^7{addr}").as_bytes());
        out.extend(std::iter::repeat_n(
            b' ',
            39usize.saturating_sub(addr.len()).max(1),
        ));
        out.extend_from_slice(format!(" {rate:>5}\n").as_bytes());
        out
    }

    /// A row as pre-2014 ioq3 / Q3 1.32 print it: `^7` after the name, padding by byte length
    /// (lastmsg and qport are fixed fillers here).
    fn legacy_row(slot: u8, score: i32, ping: &str, name: &[u8], addr: &str, rate: u32) -> Vec<u8> {
        let (lastmsg, qport) = (50, 1234 + u32::from(slot));
        let mut out = format!("{slot:>3} {score:>5} ").into_bytes();
        out.extend_from_slice(ping.as_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(b"^7");
        out.extend(std::iter::repeat_n(
            b' ',
            16usize.saturating_sub(name.len()).max(1),
        ));
        out.extend_from_slice(format!("{lastmsg:>7} {addr}").as_bytes());
        out.extend(std::iter::repeat_n(
            b' ',
            22usize.saturating_sub(addr.len()).max(1),
        ));
        out.extend_from_slice(format!("{qport:>5} {rate:>5}\n").as_bytes());
        out
    }

    /// Names that broke earlier tools.
    fn nasty_names() -> Vec<(&'static [u8], &'static str)> {
        vec![
            (b"Sarge", "Sarge"),
            (b"^1Big ^2Boss", "^1Big ^2Boss"),
            (b"Test ^1Human  Two", "Test ^1Human  Two"),
            (b"a;quit;b", "a;quit;b"),
            (b"say \"hi\" 'x'", "say \"hi\" 'x'"),
            (b"../../etc/passwd", "../../etc/passwd"),
            (b"caf\xe9 \xff\xfe", "caf\u{fffd} \u{fffd}\u{fffd}"),
            (b"^7bot 5", "^7bot 5"),
            (
                b"A very long name of 31 chars!!",
                "A very long name of 31 chars!!",
            ),
        ]
    }

    #[test]
    fn current_format_verbatim_from_the_real_server() {
        // Captured from openarena-server 0.8.8 / ioq3 70d07d9 on this machine.
        let text = "map: oa_dm1\n\
cl score ping name            address                                 rate \n\
-- ----- ---- --------------- --------------------------------------- -----\n \
0     0    0 Sarge           ^7bot                                     16384\n \
1     0    0 ^1Big ^2Boss        ^7bot                                     16384\n \
3     0    1 ^1Test ^2Human      ^710.77.201.11                            99999\n\n";
        let st = parse_status(text);
        assert_eq!(st.format, StatusFormat::Current);
        assert_eq!(st.map.as_deref(), Some("oa_dm1"));
        assert!(st.unparsed.is_empty(), "{:?}", st.unparsed);
        assert_eq!(st.rows.len(), 3);
        assert_eq!(st.rows[1].name, "^1Big ^2Boss");
        assert!(st.rows[1].is_bot());
        assert_eq!(st.rows[2].slot, 3);
        assert_eq!(st.rows[2].ip(), Some("10.77.201.11".parse().unwrap()));
        assert_eq!(st.rows[2].rate, 99999);
        assert_eq!(st.humans().count(), 1);
        assert_eq!(st.bots().count(), 2);
    }

    #[test]
    fn current_format_with_nasty_names() {
        let mut bytes = b"map: oa_dm1\ncl score ping name            address                                 rate \n-- ----- ---- --------------- --------------------------------------- -----\n".to_vec();
        let names = nasty_names();
        for (i, (name, _)) in names.iter().enumerate() {
            let (ping, addr) = match i % 3 {
                0 => ("  12 ", "bot".to_string()),
                1 => ("CON ", format!("10.77.0.{}", 11 + i)),
                _ => ("ZMB ", "2001:db8::1".to_string()),
            };
            bytes.extend(current_row(
                2 * i as u8 + (i as u8 % 2),
                -(i as i32),
                ping,
                name,
                &addr,
                25000,
            ));
        }
        bytes.push(b'\n');
        let st = parse_status(&String::from_utf8_lossy(&bytes));
        assert!(st.unparsed.is_empty(), "unparsed: {:?}", st.unparsed);
        assert_eq!(st.rows.len(), names.len());
        let mut rows = st.rows.clone();
        rows.sort_by_key(|r| -r.score);
        for (i, ((_, want), row)) in names.iter().zip(&rows).enumerate() {
            assert_eq!(&row.name, want, "row {i}");
            assert_eq!(row.score, -(i as i32));
            match i % 3 {
                0 => {
                    assert_eq!(row.address, Address::Bot);
                    assert_eq!(row.ping, Ping::Ms(12));
                }
                1 => {
                    assert_eq!(
                        row.ip(),
                        Some(format!("10.77.0.{}", 11 + i).parse().unwrap())
                    );
                    assert_eq!(row.ping, Ping::Connecting);
                }
                _ => {
                    assert_eq!(row.ip(), Some("2001:db8::1".parse().unwrap()));
                    assert_eq!(row.ping, Ping::Zombie);
                }
            }
        }
        // Zombies (clients that just left) count as neither.
        assert_eq!(st.bots().count(), 3);
        assert_eq!(st.humans().count(), 3);
        assert_eq!(st.active().count(), 6);
        // The human called "^7bot 5" is not a bot.
        let fake = rows.iter().find(|r| r.name == "^7bot 5").unwrap();
        assert!(!fake.is_bot());
    }

    #[test]
    fn legacy_format_with_nasty_names() {
        let mut bytes = b"map: q3dm17\nnum score ping name            lastmsg address               qport rate\n--- ----- ---- --------------- ------- --------------------- ----- -----\n".to_vec();
        let names = nasty_names();
        for (i, (name, _)) in names.iter().enumerate() {
            let (ping, addr) = match i % 3 {
                0 => ("   0 ", "bot".to_string()),
                1 => ("CNCT ", format!("192.168.1.{}:27960", 20 + i)),
                _ => ("ZMBI ", "[2001:db8::2]:27960".to_string()),
            };
            bytes.extend(legacy_row(
                i as u8,
                3 * i as i32 - 5,
                ping,
                name,
                &addr,
                8000,
            ));
        }
        bytes.push(b'\n');
        let st = parse_status(&String::from_utf8_lossy(&bytes));
        assert_eq!(st.format, StatusFormat::Legacy);
        assert_eq!(st.map.as_deref(), Some("q3dm17"));
        assert!(st.unparsed.is_empty(), "unparsed: {:?}", st.unparsed);
        assert_eq!(st.rows.len(), names.len());
        for (i, ((_, want), row)) in names.iter().zip(&st.rows).enumerate() {
            assert_eq!(row.slot, i as u8);
            assert_eq!(&row.name, want, "row {i}");
            assert_eq!(row.score, 3 * i as i32 - 5);
            assert_eq!(row.rate, 8000);
            match i % 3 {
                0 => assert!(row.is_bot()),
                1 => {
                    assert_eq!(
                        row.ip(),
                        Some(format!("192.168.1.{}", 20 + i).parse().unwrap())
                    );
                    assert_eq!(row.ping, Ping::Connecting);
                }
                _ => {
                    assert_eq!(row.ip(), Some("2001:db8::2".parse().unwrap()));
                    assert_eq!(row.ping, Ping::Zombie);
                }
            }
        }
    }

    #[test]
    fn legacy_rows_without_a_header_still_parse() {
        let row = legacy_row(2, 7, "  48 ", b"^3Pl ayer", "127.0.0.1:27960", 25000);
        let st = parse_status(&String::from_utf8_lossy(&row));
        assert_eq!(st.rows.len(), 1);
        assert_eq!(st.rows[0].name, "^3Pl ayer");
        assert_eq!(st.rows[0].ping, Ping::Ms(48));
        assert_eq!(st.rows[0].ip(), Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn junk_never_panics() {
        for junk in [
            "",
            "\n\n",
            "map: \n",
            "cl score ping name\n 99 1 2 x ^7bot 1\n",
            "cl score ping name\n300 1 2 x ^7bot 1\n",
            "cl score ping name\n 1 ^7\n",
            "\u{fffd}\u{fffd}\n^7^7^7\n",
        ] {
            let st = parse_status(junk);
            assert!(st.rows.iter().all(|r| r.slot < crate::arena::MAX_SLOTS));
        }
    }

    const HEAD: &str = "map: oa_dm1\ncl score ping name            address                                 rate \n-- ----- ---- --------------- --------------------------------------- -----\n";

    fn reply(rows: &[Vec<u8>]) -> Status {
        let mut b = HEAD.as_bytes().to_vec();
        for r in rows {
            b.extend_from_slice(r);
        }
        b.push(b'\n');
        parse_status(&String::from_utf8_lossy(&b))
    }

    /// A name with a newline that cuts its own row and adds a row for an empty slot at another
    /// seat's IP: the cut row, the forged row and everything after are dropped.
    #[test]
    fn a_newline_in_a_name_cannot_add_a_player() {
        let forged = b"Eve\n 5     0    0 Phantom";
        let st = reply(&[
            current_row(0, 0, "   0 ", b"Sarge", "bot", 16384),
            current_row(3, 0, "   0 ", forged, "10.77.0.11", 99999),
            current_row(4, 0, "   0 ", b"Ann", "10.77.0.12", 99999),
        ]);
        assert!(st.tainted);
        assert_eq!(st.rows.iter().map(|r| r.slot).collect::<Vec<_>>(), vec![0]);
        assert_eq!(st.unparsed.len(), 1, "{:?}", st.unparsed);
        assert!(st.rejected.iter().any(|r| r.name == "Phantom"));
        assert!(st.rejected.iter().any(|r| r.name == "Ann"));
    }

    /// The forged part completes its own row (with a chosen address) and repeats a slot: every
    /// row of that slot goes, and nothing after it is trusted.
    #[test]
    fn a_repeated_or_unordered_slot_is_never_a_player() {
        let forged = b"Eve             ^710.77.0.12                              99999\n  4     0    0 Phantom";
        let st = reply(&[
            current_row(3, 0, "   0 ", forged, "10.77.0.11", 99999),
            current_row(4, 0, "   0 ", b"Ann", "10.77.0.12", 99999),
            current_row(6, 0, "   0 ", b"Bob", "10.77.0.13", 99999),
        ]);
        assert!(st.tainted);
        assert!(st.rows.is_empty(), "{:?}", st.rows);
        assert_eq!(st.rejected.len(), 4, "{:?}", st.rejected);

        // Forged rows above every real slot, after the real ones: the carrier claims another
        // player's IP, and two humans at one IP are both dropped.
        let forged = b"Eve             ^710.77.0.12                              99999\n  7     0    0 Phantom";
        let st = reply(&[
            current_row(1, 0, "   0 ", b"Ann", "10.77.0.12", 99999),
            current_row(3, 0, "   0 ", forged, "10.77.0.11", 99999),
        ]);
        assert!(st.tainted);
        assert_eq!(st.rows.iter().map(|r| r.slot).collect::<Vec<_>>(), vec![7]);
        assert_eq!(
            st.rows[0].ip(),
            Some("10.77.0.11".parse().unwrap()),
            "Eve's own IP"
        );

        let st = reply(&[
            current_row(2, 0, "   0 ", b"A", "10.77.0.11", 99999),
            current_row(1, 0, "   0 ", b"B", "10.77.0.12", 99999),
        ]);
        assert!(st.tainted);
        assert!(st.rows.is_empty(), "{:?}", st.rows);

        let clean = reply(&[
            current_row(1, 0, "   0 ", b"A", "10.77.0.11", 99999),
            current_row(2, 0, "   0 ", b"B", "10.77.0.12", 99999),
        ]);
        assert!(!clean.tainted && clean.rejected.is_empty() && clean.rows.len() == 2);
    }

    #[test]
    fn dumpuser_verbatim() {
        let text = "userinfo\n--------\nip                   10.77.201.11\nname                 ^1Test ^2Human\n\
rate                 25000\ncl_guid              AA908E01A59664516FE43D2BA1DAA2BD\nteam_headmodel       *james\n\
g_redteam\n";
        let m = parse_dumpuser(text);
        assert_eq!(m["ip"], "10.77.201.11");
        assert_eq!(m["name"], "^1Test ^2Human");
        assert_eq!(m["cl_guid"], "AA908E01A59664516FE43D2BA1DAA2BD");
        assert_eq!(m["g_redteam"], "");
        assert!(parse_dumpuser("Client 5 is not active\n").is_empty());
    }
}
