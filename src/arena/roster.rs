//! Who is on the server, keyed by slot.
//!
//! Human or bot is decided by the `status` address (`bot`) or the logged userinfo (`skill` for a
//! bot, a `cl_guid` `id` for a human) — never by the name: a human may call themselves "Sarge"
//! and two bots may share a name. A human's IP comes from `status`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::plan::names::file_safe;

/// Human or bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlayerKind {
    Human,
    Bot,
    /// Not known yet (a slot seen only as `ClientConnect`, before `status` answered).
    Unknown,
}

/// One occupied slot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Player {
    pub slot: u8,
    pub kind: PlayerKind,
    /// The name as the engine has it (`status`), else as logged; colour codes kept. May contain
    /// anything: never put it into a command or a path.
    pub name_raw: String,
    /// Colour codes and control characters removed, for tables and logs.
    pub name: String,
    /// Safe as (part of) a file name: [`file_safe`], else `slot<N>`.
    pub file_name: String,
    /// A human's `cl_guid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    /// A bot's skill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skill: Option<f32>,
    /// A human's address as the server sees it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    pub joined_at: DateTime<Utc>,
    /// `ClientBegin` seen (or `status` shows it active): in the game, not loading.
    pub in_game: bool,
    /// Whether `Joined` was reported for this player (kind known, and a human's IP known).
    #[serde(skip)]
    pub(crate) announced: bool,
    /// Log sequence number when this entry was created (to reconcile with `status` safely).
    #[serde(skip)]
    pub(crate) created_seq: u64,
    /// `status` never gave this human an IP (address not an IP); reported without one.
    #[serde(skip)]
    pub(crate) ip_unresolvable: bool,
}

impl Player {
    pub(crate) fn new(
        slot: u8,
        kind: PlayerKind,
        name_raw: &str,
        now: DateTime<Utc>,
        seq: u64,
    ) -> Player {
        let mut p = Player {
            slot,
            kind,
            name_raw: String::new(),
            name: String::new(),
            file_name: String::new(),
            guid: None,
            skill: None,
            ip: None,
            joined_at: now,
            in_game: false,
            announced: false,
            created_seq: seq,
            ip_unresolvable: false,
        };
        p.set_name(name_raw);
        p
    }

    pub(crate) fn set_name(&mut self, raw: &str) {
        self.name_raw = raw.to_string();
        let clean = display_clean(raw);
        self.name = if clean.is_empty() {
            format!("(slot {})", self.slot)
        } else {
            clean
        };
        self.file_name = file_safe(raw).unwrap_or_else(|| format!("slot{}", self.slot));
    }

    pub fn is_human(&self) -> bool {
        self.kind == PlayerKind::Human
    }
    pub fn is_bot(&self) -> bool {
        self.kind == PlayerKind::Bot
    }
    /// Ready to be reported: kind known, and for a human the IP known.
    pub(crate) fn complete(&self) -> bool {
        match self.kind {
            PlayerKind::Bot => true,
            PlayerKind::Human => self.ip.is_some() || self.ip_unresolvable,
            PlayerKind::Unknown => false,
        }
    }
}

/// A name for display: `^x` colour codes (ioq3's `Q_IsColorString`: `^` + letter or digit) and
/// control characters removed, surrounding spaces trimmed.
pub fn display_clean(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '^' && chars.peek().is_some_and(|n| n.is_ascii_alphanumeric()) {
            chars.next();
            continue;
        }
        if c.is_control() {
            continue;
        }
        out.push(c);
    }
    out.trim().to_string()
}

/// The players now on the server.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Roster {
    pub players: BTreeMap<u8, Player>,
}

impl Roster {
    pub fn get(&self, slot: u8) -> Option<&Player> {
        self.players.get(&slot)
    }
    /// Reported humans (IP known), in slot order.
    pub fn humans(&self) -> impl Iterator<Item = &Player> {
        self.players
            .values()
            .filter(|p| p.is_human() && p.announced)
    }
    /// Reported humans who are in the game (not loading the map).
    pub fn humans_in_game(&self) -> impl Iterator<Item = &Player> {
        self.humans().filter(|p| p.in_game)
    }
    pub fn bots(&self) -> impl Iterator<Item = &Player> {
        self.players.values().filter(|p| p.is_bot())
    }
    pub fn len(&self) -> usize {
        self.players.len()
    }
    pub fn is_empty(&self) -> bool {
        self.players.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_for_display_and_files() {
        assert_eq!(display_clean("^1Big ^2Boss"), "Big Boss");
        assert_eq!(display_clean("  ^7x\u{7}y^"), "xy^");
        assert_eq!(display_clean("a^^1b"), "a^b");
        assert_eq!(display_clean("caf\u{fffd}"), "caf\u{fffd}");
        let p = Player::new(4, PlayerKind::Human, "../^3evil;\"name\"", Utc::now(), 0);
        assert_eq!(p.name, "../evil;\"name\"");
        assert_eq!(p.file_name, "evil_name");
        let p = Player::new(5, PlayerKind::Human, "^1^2", Utc::now(), 0);
        assert_eq!(p.name, "(slot 5)");
        assert_eq!(p.file_name, "slot5");
    }
}
