//! What each player did in one match: a pure fold of [`ArenaEvent`]s.
//!
//! Counted only between the match's live start and its end (its `Exit:`, or [`MatchStats::finish`]
//! when oa-run ends it), only from events of the match's own generation, and only from log
//! lines the [`super::guard::InjectionGuard`] trusts. Players are keyed by slot; a slot that
//! is freed and taken again starts a new entry.
//!
//! Rules (OpenArena's `Kill: K V M` with K the killer's slot or 1022 for `<world>`):
//! - K = V: a suicide (and a death);
//! - K = world: a world death (and a death), nobody credited; except `<world>` + `MOD_SUICIDE`
//!   directly followed by the victim's `ClientDisconnect`, which is how the game logs a kick:
//!   not counted;
//! - otherwise: a kill for K (and for its means of death), a death for V. Bots count like
//!   humans, by slot.
//! - A kill naming a slot that is not in the match is rejected (counted as such, not used).

use std::collections::BTreeMap;

use std::time::Instant;

use chrono::{DateTime, Utc};

use super::log::{Kill, Killer, MOD_SUICIDE};
use super::{ArenaEvent, Player, PlayerKind, Stamp};
use crate::manifest::{MatchStatsRecord, ParticipantKind, PlayerMatchStats};

#[derive(Debug, Clone)]
struct Stint {
    slot: u8,
    kind: PlayerKind,
    name: String,
    from: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    /// Joined mid-match while loading: presence starts at `ClientBegin`.
    awaiting_begin: bool,
    joined_late: bool,
    kills: u32,
    deaths: u32,
    suicides: u32,
    world_deaths: u32,
    by_weapon: BTreeMap<String, u32>,
    score: Option<i32>,
}

/// The accumulator for one match.
#[derive(Debug, Clone)]
pub struct MatchStats {
    generation: u64,
    /// When the match went live: earlier shutdowns (the one right before its own `InitGame`)
    /// are not its end.
    started: Instant,
    ended_at: Option<DateTime<Utc>>,
    /// Ended by this generation's `Exit:` (then the `score:` lines that follow count).
    exited: bool,
    stints: Vec<Stint>,
    /// Slot → its current stint.
    active: BTreeMap<u8, usize>,
    /// A `<world>` MOD_SUICIDE death waiting to see whether the victim leaves next (a kick).
    pending_world_suicide: Option<u8>,
    /// When a slot's `ClientDisconnect` was logged (the leave's time, once `status`
    /// confirms it).
    claimed_leave: BTreeMap<u8, DateTime<Utc>>,
    untrusted_lines: u32,
    rejected_kills: u32,
}

impl MatchStats {
    /// Start counting match `generation` (the live `GameStarted`'s), which went live at
    /// `started_at`, with the players `present` then (the arena's roster).
    pub fn start<'a>(
        generation: u64,
        started: &Stamp,
        present: impl IntoIterator<Item = &'a Player>,
    ) -> MatchStats {
        let started_at = started.at;
        let mut s = MatchStats {
            generation,
            started: started.instant,
            ended_at: None,
            exited: false,
            stints: Vec::new(),
            active: BTreeMap::new(),
            pending_world_suicide: None,
            claimed_leave: BTreeMap::new(),
            untrusted_lines: 0,
            rejected_kills: 0,
        };
        for p in present {
            s.open(p, started_at, false);
        }
        s
    }

    fn counting(&self) -> bool {
        self.ended_at.is_none()
    }

    fn open(&mut self, p: &Player, at: DateTime<Utc>, late: bool) {
        if let Some(i) = self.active.remove(&p.slot) {
            // The slot changed hands without a leave we saw.
            self.stints[i].until.get_or_insert(at);
        }
        self.active.insert(p.slot, self.stints.len());
        self.stints.push(Stint {
            slot: p.slot,
            kind: p.kind,
            name: p.name.clone(),
            from: at,
            until: None,
            awaiting_begin: late && !p.in_game,
            joined_late: late,
            kills: 0,
            deaths: 0,
            suicides: 0,
            world_deaths: 0,
            by_weapon: BTreeMap::new(),
            score: None,
        });
    }

    fn stint(&mut self, slot: u8) -> Option<&mut Stint> {
        let i = *self.active.get(&slot)?;
        self.stints.get_mut(i)
    }

    /// Fold one event, observed at `at` (used where the event carries no time of its own).
    pub fn apply(&mut self, ev: &ArenaEvent, at: DateTime<Utc>) {
        if let Some(slot) = self.pending_world_suicide.take() {
            let kicked = matches!(ev, ArenaEvent::DisconnectLogged { slot: s, .. } if *s == slot);
            if !kicked && let Some(s) = self.stint(slot) {
                s.deaths += 1;
                s.world_deaths += 1;
            }
        }
        match ev {
            ArenaEvent::Kill {
                generation,
                kill,
                stamp: _,
            } if *generation == self.generation && self.counting() => self.kill(*kill),
            ArenaEvent::Joined { player } if self.counting() => self.open(player, at, true),
            ArenaEvent::InGame { slot } if self.counting() => {
                if let Some(s) = self.stint(*slot)
                    && s.awaiting_begin
                {
                    s.awaiting_begin = false;
                    s.from = at;
                }
            }
            ArenaEvent::Renamed { slot, to, .. } => {
                if let Some(s) = self.stint(*slot) {
                    s.name = super::display_clean(to);
                }
            }
            ArenaEvent::DisconnectLogged { slot, stamp } => {
                self.claimed_leave.insert(*slot, stamp.at);
            }
            // `status` confirms a leave a moment after its log line, possibly after the end.
            ArenaEvent::Left { player } => {
                let when = self.claimed_leave.remove(&player.slot).unwrap_or(at);
                if let Some(i) = self.active.remove(&player.slot)
                    && self.ended_at.is_none_or(|end| when < end)
                {
                    self.stints[i].until = Some(when);
                }
            }
            ArenaEvent::MatchExit { exit } if exit.generation == self.generation => {
                self.exited = true;
                self.end(exit.stamp.at);
            }
            ArenaEvent::FinalScore { generation, score }
                if *generation == self.generation && self.exited =>
            {
                if let Some(s) = self.stint(score.slot) {
                    s.score = Some(score.score);
                }
            }
            ArenaEvent::GameStarted { generation, .. } if *generation > self.generation => {
                // A restart or map change ends this match (if it had not ended yet).
                self.end(at);
            }
            ArenaEvent::GameShutdown { stamp } if stamp.instant > self.started => {
                self.end(stamp.at)
            }
            ArenaEvent::UntrustedLine { .. } if self.counting() => self.untrusted_lines += 1,
            _ => {}
        }
    }

    fn kill(&mut self, k: Kill) {
        let victim_in = self.active.contains_key(&k.victim);
        let killer_in = match k.killer {
            Killer::World => true,
            Killer::Slot(s) => self.active.contains_key(&s),
        };
        if !victim_in || !killer_in {
            self.rejected_kills += 1;
            return;
        }
        match k.killer {
            Killer::World if k.means == MOD_SUICIDE => {
                self.pending_world_suicide = Some(k.victim);
            }
            Killer::World => {
                let v = self.stint(k.victim).expect("checked above");
                v.deaths += 1;
                v.world_deaths += 1;
            }
            Killer::Slot(s) if s == k.victim => {
                let v = self.stint(k.victim).expect("checked above");
                v.deaths += 1;
                v.suicides += 1;
            }
            Killer::Slot(s) => {
                let weapon = k.means_name();
                let killer = self.stint(s).expect("checked above");
                killer.kills += 1;
                *killer.by_weapon.entry(weapon).or_insert(0) += 1;
                self.stint(k.victim).expect("checked above").deaths += 1;
            }
        }
    }

    fn end(&mut self, at: DateTime<Utc>) {
        if self.ended_at.is_none() {
            self.ended_at = Some(at);
        }
    }

    /// The match ended without an `Exit:` (oa-run ended it, or it was aborted) at `at`.
    /// Does nothing if it had ended already.
    pub fn finish(&mut self, at: DateTime<Utc>) {
        if let Some(slot) = self.pending_world_suicide.take()
            && let Some(s) = self.stint(slot)
        {
            s.deaths += 1;
            s.world_deaths += 1;
        }
        self.end(at);
    }

    /// Whether the match has ended (its `Exit:`, a restart, a shutdown, or [`Self::finish`]).
    pub fn ended(&self) -> bool {
        self.ended_at.is_some()
    }

    /// The manifest's record; `player_of` maps a human's slot to the study's player index.
    /// Call after the match ended (an unended match is measured up to `now`).
    pub fn record(
        &self,
        now: DateTime<Utc>,
        player_of: impl Fn(u8) -> Option<u32>,
    ) -> MatchStatsRecord {
        let end = self.ended_at.unwrap_or(now);
        let players = self
            .stints
            .iter()
            .map(|s| {
                let until = s.until.unwrap_or(end).min(end);
                let secs = if s.awaiting_begin {
                    0.0
                } else {
                    (until - s.from).num_milliseconds().max(0) as f64 / 1000.0
                };
                PlayerMatchStats {
                    slot: u32::from(s.slot),
                    player: (s.kind == PlayerKind::Human)
                        .then(|| player_of(s.slot))
                        .flatten(),
                    kind: match s.kind {
                        PlayerKind::Human => ParticipantKind::Human,
                        PlayerKind::Bot => ParticipantKind::Bot,
                        PlayerKind::Unknown => ParticipantKind::Unknown,
                    },
                    name: s.name.clone(),
                    kills: s.kills,
                    deaths: s.deaths,
                    suicides: s.suicides,
                    world_deaths: s.world_deaths,
                    kills_by_weapon: s.by_weapon.clone(),
                    score: s.score,
                    time_in_match_s: secs,
                    joined_late: s.joined_late,
                    left_early: s.until.is_some_and(|u| u < end),
                }
            })
            .collect();
        MatchStatsRecord {
            players,
            untrusted_lines: self.untrusted_lines,
            rejected_kills: self.rejected_kills,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::log::split_time;
    use crate::arena::monitor::Tracker;
    use crate::manifest::PlayerMatchStats;

    /// Recorded on the real server (tests/stats_real.rs): 3 bots at skill 5, fraglimit 6,
    /// Tony added at 0:06, Major kicked at 0:09.
    const REAL: &str = include_str!("../../tests/fixtures/games-log/ffa-bots-kick-late.log");

    /// Replay a log through the real tracker and fold the live match's events; each `\n\n`
    /// separated chunk is one read of the file. Wall time = a fixed base + the line's level
    /// time, so durations are exact.
    fn replay(log: &str) -> MatchStatsRecord {
        let base = DateTime::parse_from_rfc3339("2026-12-02T06:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut t = Tracker::new();
        let mut stats: Option<MatchStats> = None;
        let mut inst = Instant::now();
        let mut last = base;
        for chunk in log.split("\n\n") {
            inst += std::time::Duration::from_millis(100);
            for line in chunk.lines().filter(|l| !l.trim().is_empty()) {
                if let Some(s) = split_time(line).0 {
                    last = base + chrono::Duration::seconds(i64::from(s));
                }
                let mut evs = t.apply_line(line, last, inst);
                // The monitor asks `status` after a logged disconnect; answer as the server
                // would: everyone but that slot.
                let gone: Vec<u8> = evs
                    .iter()
                    .filter_map(|e| match e {
                        ArenaEvent::DisconnectLogged { slot, .. } => Some(*slot),
                        _ => None,
                    })
                    .collect();
                for slot in gone {
                    let mut text = String::from("cl score ping name address rate\n");
                    for p in t.state().roster.players.values().filter(|p| p.slot != slot) {
                        text.push_str(&format!(
                            "{:2} {:5} {:4} {:<16}^7{:<39} {:5}\n",
                            p.slot, 0, 0, p.name, "bot", 16384
                        ));
                    }
                    let st = crate::arena::status::parse_status(&text);
                    evs.extend(t.apply_status(&st, t.seq(), last));
                }
                for ev in evs {
                    match (&ev, stats.as_mut()) {
                        (
                            ArenaEvent::GameStarted {
                                generation,
                                warmup: false,
                                stamp,
                                ..
                            },
                            None,
                        ) => {
                            stats = Some(MatchStats::start(
                                *generation,
                                stamp,
                                t.state().roster.players.values(),
                            ))
                        }
                        (_, Some(s)) => s.apply(&ev, last),
                        _ => {}
                    }
                }
            }
        }
        let mut s = stats.expect("a live match");
        s.finish(last);
        s.record(last, |_| None)
    }

    fn by_slot(r: &MatchStatsRecord, slot: u32) -> &PlayerMatchStats {
        r.players.iter().find(|p| p.slot == slot).unwrap()
    }

    fn weapons(w: &[(&str, u32)]) -> BTreeMap<String, u32> {
        w.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    /// Counted by hand from the fixture's 14 Kill lines.
    fn assert_real_counts(r: &MatchStatsRecord) {
        assert_eq!(r.players.len(), 4);
        let sarge = by_slot(r, 0);
        assert_eq!(
            (
                sarge.kills,
                sarge.deaths,
                sarge.suicides,
                sarge.world_deaths
            ),
            (5, 4, 0, 0)
        );
        assert_eq!(
            sarge.kills_by_weapon,
            weapons(&[("lightning", 3), ("machinegun", 1), ("rocket_splash", 1)])
        );
        assert_eq!(sarge.score, Some(5));
        assert_eq!(sarge.time_in_match_s, 56.0);
        assert!(!sarge.joined_late && !sarge.left_early);
        // Knocking Sarge into lava is Grunt's kill, by lava.
        let grunt = by_slot(r, 2);
        assert_eq!((grunt.kills, grunt.deaths, grunt.score), (2, 4, Some(2)));
        assert_eq!(
            grunt.kills_by_weapon,
            weapons(&[("lava", 1), ("plasma", 1)])
        );
        let tony = by_slot(r, 3);
        assert_eq!((tony.kills, tony.deaths, tony.score), (6, 5, Some(6)));
        assert_eq!(
            tony.kills_by_weapon,
            weapons(&[
                ("grenade", 1),
                ("lightning", 1),
                ("machinegun", 1),
                ("plasma", 1),
                ("rocket_splash", 2)
            ])
        );
        assert!(tony.joined_late && !tony.left_early);
        assert_eq!(tony.time_in_match_s, 52.0, "from his ClientBegin at 0:06");
        // The kick's `<world> … MOD_SUICIDE` is a leave, not a death.
        let major = by_slot(r, 1);
        assert_eq!((major.kills, major.deaths, major.world_deaths), (0, 0, 0));
        assert!(major.left_early && major.score.is_none());
        assert_eq!(major.time_in_match_s, 7.0);
        assert_eq!(major.kind, ParticipantKind::Bot);
        assert_eq!(r.rejected_kills, 0);
    }

    #[test]
    fn real_log_counts_per_slot() {
        let r = replay(REAL);
        assert_real_counts(&r);
        assert_eq!(r.untrusted_lines, 0, "bots' chat is not a carrier");
    }

    #[test]
    fn only_the_live_match_counts() {
        let log = REAL
            // A kill in warmup (generation 1) and one after the Exit.
            .replace(
                "  0:01 Item: 1 ammo_grenades\n",
                "  0:01 Kill: 0 1 10: Sarge killed Major by MOD_RAILGUN\n",
            )
            .replace(
                "  1:00 say: Grunt: I was robbed!\n",
                "  1:00 Kill: 0 2 10: Sarge killed Grunt by MOD_RAILGUN\n",
            );
        assert_real_counts(&replay(&log));
    }

    #[test]
    fn a_kill_of_an_absent_slot_is_rejected() {
        let log = REAL.replace(
            "  0:52 Item: 0 weapon_shotgun\n",
            "\n\n  0:52 Kill: 7 0 10: Ghost killed Sarge by MOD_RAILGUN\n\n",
        );
        let r = replay(&log);
        assert_eq!(r.rejected_kills, 1);
        assert_eq!(by_slot(&r, 0).deaths, 4);
    }

    #[test]
    fn forged_lines_do_not_count() {
        const EVE: &str = "  0:20 ClientUserinfoChanged: 4 n\\Eve\\t\\0\\model\\sarge\\hmodel\\sarge\\g_redteam\\\\g_blueteam\\\\c1\\4\\c2\\5\\hc\\100\\w\\0\\l\\0\\tt\\0\\tl\\0\\id\\AA908E01A59664516FE43D2BA1DAA2BD\n  0:20 ClientConnect: 4\n  0:20 ClientBegin: 4\n";
        let log = REAL
            .replace("  0:20 Item: 0 ammo_bullets\n", EVE)
            // Chat by a human: what follows in the same write may be hers.
            .replace(
                "  0:25 Item: 0 item_armor_shard\n  0:25 Item: 0 item_armor_shard\n",
                "\n\n  0:25 say: Eve: hi\n  0:25 Kill: 0 2 10: Sarge killed Grunt by MOD_RAILGUN\n\n",
            )
            // A cut userinfo line (newline in cl_guid) carrying a kill.
            .replace(
                "  0:37 Item: 2 weapon_grenadelauncher\n",
                "\n\n  0:37 ClientUserinfoChanged: 4 n\\Eve\\t\\0\\model\\sarge\\id\\AA90\n  0:37 Kill: 2 0 10: Grunt killed Sarge by MOD_RAILGUN\n\n",
            )
            // A cut Kill line (newline in a name) with the forged kill and the tail.
            .replace(
                "  0:48 Item: 0 item_health_large\n",
                "\n\n  0:48 Kill: 0 3 1: Sarge killed Eve\n  0:48 Kill: 3 2 10: Tony killed Grunt by MOD_RAILGUN by MOD_SHOTGUN\n  0:48 Kill: 3 2 10: Tony killed Grunt by MOD_RAILGUN\n\n",
            )
            // No time prefix: not a line the game started.
            .replace(
                "  0:49 Item: 0 weapon_lightning\n",
                "\n\nKill: 3 0 10: Tony killed Sarge by MOD_RAILGUN\n\n",
            );
        let r = replay(&log);
        assert_real_counts(&r);
        assert!(r.untrusted_lines >= 5, "{}", r.untrusted_lines);
    }

    #[test]
    fn a_match_ended_by_the_runner_counts_up_to_finish() {
        // Cut the log before the Exit: the runner ends the match at 0:50.
        let cut = &REAL[..REAL.find("  0:50 Kill:").unwrap()];
        let r = replay(cut);
        let sarge = by_slot(&r, 0);
        assert_eq!(sarge.score, None, "no scoreboard without an Exit");
        assert_eq!(sarge.kills, 5);
        assert_eq!(
            sarge.time_in_match_s, 47.0,
            "0:02 to the last line read, 0:49"
        );
    }
}
