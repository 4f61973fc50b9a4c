//! Turns games.log lines (and `status` replies) into the server's state — roster and game phase —
//! and into events. [`Tracker`] is the pure state machine; [`Monitor`] runs it: one task tails the
//! log every 50 ms, another asks `status` when a human's IP or a slot's kind is missing and once
//! after every `InitGame` (to notice players who vanished without a logged disconnect).
//!
//! A player can write lines into games.log (a newline in a userinfo field), so no log line is
//! taken on its own word where it matters:
//! - a line must have the log's grammar: a time prefix, time that only goes back at a new game,
//!   and nothing after a cut `ClientUserinfoChanged` in the same read (see
//!   [`super::log::check_logged_userinfo`]);
//! - `ClientDisconnect`, or another client's userinfo in a slot, only *claims* that a player
//!   left; the player is removed when a `status` asked after the claim no longer shows them;
//! - `Exit:` must be possible: in a live game, once per game, for a limit this game has, and for
//!   the timelimit not before that many minutes of level time ([`super::lifecycle`] checks the
//!   rest against the runner's own clock and `status`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::MAX_SLOTS;
use super::guard::InjectionGuard;
use super::log::{ExitReason, Kill, LogLine, LogTail, Userinfo, parse_line};
use super::rcon::{Rcon, RconCmd};
use super::roster::{Player, PlayerKind, Roster};
use super::server::ServerProcess;
use super::status::{Address, Ping, Status, StatusRow, parse_status};
use crate::term::Esc;

/// How often the log is polled; also the worst-case lateness of an event's read stamp.
pub const POLL: Duration = Duration::from_millis(50);
/// An `InitGame` not followed by `Warmup:` within this time (or by any client line) is live.
const WARMUP_GRACE: Duration = Duration::from_millis(500);
/// After an `InitGame`, compare the roster with `status` once the reconnect lines are through.
const RECONCILE_DELAY: Duration = Duration::from_secs(2);

/// When something was seen: wall clock and monotonic time of reading the line, plus the game's
/// level time from the line itself.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stamp {
    pub at: DateTime<Utc>,
    #[serde(skip)]
    pub instant: Instant,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level_time_s: Option<u32>,
}

/// The game module's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No `InitGame` seen yet.
    NoGame,
    /// `InitGame` seen; whether `Warmup:` follows is not known yet.
    Starting,
    Warmup,
    /// A match is being played (an `InitGame` without `Warmup:`).
    Live,
    /// After `Exit:`; the scoreboard shows until the next `InitGame`.
    Intermission,
    /// `ShutdownGame:` (map change, restart, or the server quitting).
    Shutdown,
}

/// Final score line after an `Exit:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FinalScore {
    pub slot: u8,
    pub score: i32,
    pub ping: u32,
    pub name: String,
}

/// An `Exit:` and what followed it.
#[derive(Debug, Clone, Serialize)]
pub struct ExitInfo {
    pub generation: u64,
    pub reason: ExitReason,
    pub stamp: Stamp,
    pub scores: Vec<FinalScore>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_scores: Option<(i32, i32)>,
}

/// The game as the log shows it.
#[derive(Debug, Clone, Serialize)]
pub struct GameState {
    /// Number of `InitGame` lines seen; each map load or restart is a new generation.
    pub generation: u64,
    pub phase: Phase,
    pub map: Option<String>,
    /// The last `InitGame`'s serverinfo (timelimit, fraglimit, g_doWarmup, g_timestamp …).
    pub serverinfo: Userinfo,
    pub init: Option<Stamp>,
    /// When this generation's match went live (= its `InitGame`).
    pub live: Option<Stamp>,
    /// This generation's `Exit:`.
    pub exit: Option<ExitInfo>,
    pub shutdown: Option<Stamp>,
}

impl Default for GameState {
    fn default() -> Self {
        GameState {
            generation: 0,
            phase: Phase::NoGame,
            map: None,
            serverinfo: Userinfo::default(),
            init: None,
            live: None,
            exit: None,
            shutdown: None,
        }
    }
}

/// Everything known about the server, published after every change.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArenaState {
    pub roster: Roster,
    pub game: GameState,
    /// Log lines read so far.
    pub lines: u64,
    /// Times the log was truncated or replaced.
    pub log_restarts: u32,
    /// Bytes of the current games.log read so far (to know the reader has caught up with
    /// something the server wrote before answering an rcon command).
    pub log_offset: u64,
    /// Set when a launched server process exited.
    pub server_exit: Option<String>,
    /// Log lines statistics did not use because they may have been forged.
    pub untrusted_lines: u64,
    /// Log lines refused as forged or broken (see the module doc), and `status` rows dropped.
    pub rejected: u64,
}

/// What happened, for whoever listens ([`super::Arena::subscribe`]).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ArenaEvent {
    /// A new player (a human once their IP is known). Not sent again for the reconnect lines
    /// every client logs after a map restart.
    Joined {
        player: Player,
    },
    Left {
        player: Player,
    },
    /// A reported player finished loading (`ClientBegin`).
    InGame {
        slot: u8,
    },
    Renamed {
        slot: u8,
        from: String,
        to: String,
    },
    /// An `InitGame` resolved: a live match, or warmup.
    GameStarted {
        generation: u64,
        map: Option<String>,
        warmup: bool,
        stamp: Stamp,
    },
    MatchExit {
        exit: ExitInfo,
    },
    /// A `Kill:` line that parsed strictly and that [`InjectionGuard`] trusts.
    Kill {
        generation: u64,
        kill: Kill,
        stamp: Stamp,
    },
    /// A trusted `score:` line after this generation's `Exit:`.
    FinalScore {
        generation: u64,
        score: FinalScore,
    },
    /// A `ClientDisconnect` line for a player in the roster: only a claim until `status`
    /// confirms it with [`ArenaEvent::Left`], but it carries the time of the leave.
    DisconnectLogged {
        slot: u8,
        stamp: Stamp,
    },
    /// A line refused by the log's grammar, or inside a possible forgery window (see
    /// [`InjectionGuard`]); not used for stats.
    UntrustedLine {
        stamp: Stamp,
    },
    GameShutdown {
        stamp: Stamp,
    },
    LogRestarted,
    ServerExited {
        status: String,
    },
    /// The humans' pings as the server reported them in a `status` reply (every reply, the
    /// roster's own included, and one every [`PING_EVERY`] while sampling is on).
    Pings {
        at: DateTime<Utc>,
        pings: Vec<PingSample>,
    },
}

/// One human's ping in a `status` reply: the server's running average over its last 32
/// frames, quantised by its frame time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PingSample {
    pub slot: u8,
    pub ip: std::net::IpAddr,
    pub ping_ms: u32,
}

/// How often `status` is asked for the pings while sampling is on: half the server's rcon
/// rate budget (one request a second), shared with the roster's own requests.
pub const PING_EVERY: Duration = Duration::from_secs(2);

/// The humans' pings in a `status` reply (active rows with an IP and a measured ping).
pub(crate) fn pings_of(st: &Status, at: DateTime<Utc>) -> Option<ArenaEvent> {
    let pings: Vec<PingSample> = st
        .active()
        .filter_map(|r| match (r.ping, r.ip()) {
            (Ping::Ms(ms), Some(ip)) => Some(PingSample {
                slot: r.slot,
                ip,
                ping_ms: ms,
            }),
            _ => None,
        })
        .collect();
    (!pings.is_empty()).then_some(ArenaEvent::Pings { at, pings })
}

/// The pure state machine.
#[derive(Debug)]
pub(crate) struct Tracker {
    state: ArenaState,
    /// Userinfo logged for a slot before its `ClientConnect`.
    pending: BTreeMap<u8, Userinfo>,
    /// Game-cleaned names as last logged, to notice renames.
    log_names: BTreeMap<u8, String>,
    /// Sequence number of the last `ClientDisconnect` per slot.
    disconnect_seq: Vec<u64>,
    /// `status` rounds that left a human without an IP.
    unresolved_rounds: BTreeMap<u8, u32>,
    /// Slots whose player the log says left or was replaced, with the claiming line's sequence
    /// number and the inconclusive `status` rounds since: confirmed or refuted by `status`.
    gone_claims: BTreeMap<u8, (u64, u32)>,
    /// Level time of the last accepted line (time only goes back at a new game).
    last_level_time: Option<u32>,
    /// The read batch (its instant) in which a cut `ClientUserinfoChanged` was seen: the rest
    /// of that batch may be the client's forgery.
    tainted_batch: Option<Instant>,
    seq: u64,
    dirty: bool,
    reconcile_at: Option<Instant>,
    /// Which lines statistics may use (forged lines after a cut carrier are not).
    guard: InjectionGuard,
    /// Reads of the log so far; lines of one read share a read instant.
    batch: (u64, Option<Instant>),
}

fn kind_of(info: Option<&Userinfo>) -> PlayerKind {
    match info {
        Some(i) if i.skill().is_some() => PlayerKind::Bot,
        Some(i) if i.guid().is_some() => PlayerKind::Human,
        _ => PlayerKind::Unknown,
    }
}

/// Whether a `status` row is still the player the roster has in that slot.
fn same_player(p: &Player, row: &StatusRow) -> bool {
    match (p.kind, row_kind(row)) {
        (PlayerKind::Bot, PlayerKind::Bot) => p.name_raw == row.name,
        (PlayerKind::Human, PlayerKind::Human) | (PlayerKind::Unknown, _) => {
            p.ip.is_none() || p.ip == row.ip()
        }
        _ => false,
    }
}

fn row_kind(row: &StatusRow) -> PlayerKind {
    match row.address {
        Address::Bot => PlayerKind::Bot,
        Address::Ip(_) => PlayerKind::Human,
        Address::Other(_) => PlayerKind::Unknown,
    }
}

impl Tracker {
    pub(crate) fn new() -> Tracker {
        Tracker {
            state: ArenaState::default(),
            pending: BTreeMap::new(),
            log_names: BTreeMap::new(),
            disconnect_seq: vec![0; MAX_SLOTS as usize],
            unresolved_rounds: BTreeMap::new(),
            gone_claims: BTreeMap::new(),
            last_level_time: None,
            tainted_batch: None,
            seq: 0,
            dirty: true,
            reconcile_at: None,
            guard: InjectionGuard::new(),
            batch: (0, None),
        }
    }

    pub(crate) fn state(&self) -> &ArenaState {
        &self.state
    }
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// A copy of the state if it changed since the last call.
    pub(crate) fn take_snapshot(&mut self) -> Option<ArenaState> {
        std::mem::take(&mut self.dirty).then(|| self.state.clone())
    }

    fn announce(&mut self, slot: u8, ev: &mut Vec<ArenaEvent>) {
        if let Some(p) = self.state.roster.players.get_mut(&slot)
            && !p.announced
            && p.complete()
        {
            p.announced = true;
            info!(slot, kind = ?p.kind, name = %p.name, ip = ?p.ip, "player joined");
            ev.push(ArenaEvent::Joined { player: p.clone() });
        }
    }

    fn remove(&mut self, slot: u8, ev: &mut Vec<ArenaEvent>) {
        self.log_names.remove(&slot);
        self.unresolved_rounds.remove(&slot);
        self.gone_claims.remove(&slot);
        if let Some(p) = self.state.roster.players.remove(&slot)
            && p.announced
        {
            info!(slot, name = %p.name, "player left");
            ev.push(ArenaEvent::Left { player: p });
        }
    }

    fn resolve_live(&mut self, ev: &mut Vec<ArenaEvent>) {
        if self.state.game.phase == Phase::Starting {
            let g = &mut self.state.game;
            g.phase = Phase::Live;
            g.live = g.init;
            if let Some(stamp) = g.init {
                ev.push(ArenaEvent::GameStarted {
                    generation: g.generation,
                    map: g.map.clone(),
                    warmup: false,
                    stamp,
                });
            }
        }
    }

    /// Apply one raw log line read at (`now`, `inst`).
    pub(crate) fn apply_line(
        &mut self,
        raw: &str,
        now: DateTime<Utc>,
        inst: Instant,
    ) -> Vec<ArenaEvent> {
        self.seq += 1;
        self.state.lines += 1;
        self.dirty = true;
        let (level_time_s, line, _) = parse_line(raw);
        let stamp = Stamp {
            at: now,
            instant: inst,
            level_time_s,
        };
        if self.batch.1 != Some(inst) {
            self.batch = (self.batch.0 + 1, Some(inst));
        }
        let trusted = self.guard.check(self.batch.0, raw, &line);
        let mut ev = Vec::new();
        if let Err(why) = self.check_grammar(raw, level_time_s, &line, inst) {
            warn!(line = %Esc(raw), "games.log: {why}; line ignored (forged or broken)");
            self.state.rejected += 1;
            ev.push(ArenaEvent::UntrustedLine { stamp });
            return ev;
        }
        if let LogLine::Exit { reason } = &line
            && let Err(why) = self.exit_possible(reason, level_time_s)
        {
            warn!(line = %Esc(raw), "games.log: an Exit that cannot have happened ({why}); ignored");
            self.state.rejected += 1;
            ev.push(ArenaEvent::UntrustedLine { stamp });
            return ev;
        }
        if !trusted {
            self.state.untrusted_lines = self.guard.untrusted;
            ev.push(ArenaEvent::UntrustedLine { stamp });
        }
        if !matches!(
            line,
            LogLine::Warmup | LogLine::Other | LogLine::InitGame { .. }
        ) {
            self.resolve_live(&mut ev);
        }
        match line {
            LogLine::InitGame { info } => {
                let g = &mut self.state.game;
                g.generation += 1;
                g.map = info.get("mapname").map(str::to_string);
                g.init = Some(stamp);
                g.live = None;
                g.exit = None;
                let warmup_off = info.get("g_doWarmup").is_some_and(|v| v.trim() == "0");
                g.serverinfo = info;
                g.phase = Phase::Starting;
                debug!(generation = g.generation, map = ?g.map, "InitGame");
                if warmup_off {
                    // With g_doWarmup 0 every InitGame is a live match.
                    self.resolve_live(&mut ev);
                }
                self.reconcile_at = Some(inst + RECONCILE_DELAY);
            }
            LogLine::Warmup => {
                let g = &mut self.state.game;
                let was = g.phase;
                if matches!(was, Phase::Starting | Phase::Live | Phase::Warmup) {
                    g.phase = Phase::Warmup;
                    g.live = None;
                    if was == Phase::Starting
                        && let Some(stamp) = g.init
                    {
                        ev.push(ArenaEvent::GameStarted {
                            generation: g.generation,
                            map: g.map.clone(),
                            warmup: true,
                            stamp,
                        });
                    }
                }
            }
            LogLine::UserinfoChanged { slot, info, .. } => self.userinfo(slot, info, &mut ev),
            LogLine::Connect { slot } => {
                if !self.state.roster.players.contains_key(&slot) {
                    let info = self.pending.remove(&slot);
                    let name = info.as_ref().and_then(|i| i.name()).unwrap_or("");
                    let mut p = Player::new(slot, kind_of(info.as_ref()), name, now, self.seq);
                    if let Some(i) = &info {
                        p.guid = i.guid().map(str::to_string);
                        p.skill = i.skill();
                        self.log_names.insert(slot, name.to_string());
                    }
                    self.state.roster.players.insert(slot, p);
                    self.announce(slot, &mut ev);
                }
                // Otherwise: the reconnect line every client logs after a restart.
            }
            LogLine::Begin { slot } => match self.state.roster.players.get_mut(&slot) {
                Some(p) => {
                    if !p.in_game {
                        p.in_game = true;
                        if p.announced {
                            ev.push(ArenaEvent::InGame { slot });
                        }
                    }
                }
                None => {
                    // Joined before we started reading; `status` will say who it is.
                    let info = self.pending.remove(&slot);
                    let name = info.as_ref().and_then(|i| i.name()).unwrap_or("");
                    let mut p = Player::new(slot, kind_of(info.as_ref()), name, now, self.seq);
                    p.in_game = true;
                    if let Some(i) = &info {
                        p.guid = i.guid().map(str::to_string);
                        p.skill = i.skill();
                    }
                    self.state.roster.players.insert(slot, p);
                    self.announce(slot, &mut ev);
                }
            },
            LogLine::Disconnect { slot } => {
                self.pending.remove(&slot);
                self.disconnect_seq[slot as usize] = self.seq;
                if self.state.roster.players.contains_key(&slot) {
                    // Only a claim: `status` confirms it (a forged line must not remove anyone).
                    self.gone_claims.insert(slot, (self.seq, 0));
                    ev.push(ArenaEvent::DisconnectLogged { slot, stamp });
                }
            }
            LogLine::Exit { reason } => {
                let g = &mut self.state.game;
                g.phase = Phase::Intermission;
                let exit = ExitInfo {
                    generation: g.generation,
                    reason,
                    stamp,
                    scores: Vec::new(),
                    team_scores: None,
                };
                info!(reason = ?exit.reason, "match exit");
                g.exit = Some(exit.clone());
                ev.push(ArenaEvent::MatchExit { exit });
            }
            LogLine::Score {
                slot,
                score,
                ping,
                name,
            } => {
                if trusted && let Some(exit) = self.state.game.exit.as_mut() {
                    let score = FinalScore {
                        slot,
                        score,
                        ping,
                        name,
                    };
                    exit.scores.push(score.clone());
                    ev.push(ArenaEvent::FinalScore {
                        generation: exit.generation,
                        score,
                    });
                }
            }
            LogLine::Kill(kill) => {
                if trusted {
                    ev.push(ArenaEvent::Kill {
                        generation: self.state.game.generation,
                        kill,
                        stamp,
                    });
                }
            }
            LogLine::TeamScores { red, blue } => {
                if let Some(exit) = self.state.game.exit.as_mut() {
                    exit.team_scores = Some((red, blue));
                }
            }
            LogLine::Shutdown => {
                self.state.game.phase = Phase::Shutdown;
                self.state.game.shutdown = Some(stamp);
                ev.push(ArenaEvent::GameShutdown { stamp });
            }
            LogLine::Other => {}
        }
        ev
    }

    /// Whether a line fits the log's grammar (see the module doc).
    fn check_grammar(
        &mut self,
        raw: &str,
        level_time_s: Option<u32>,
        line: &LogLine,
        inst: Instant,
    ) -> Result<(), &'static str> {
        let Some(t) = level_time_s else {
            return Err("no time prefix (the rest of a line cut by a newline)");
        };
        if self.tainted_batch == Some(inst) {
            return Err("it follows a cut ClientUserinfoChanged in the same write");
        }
        let new_game = matches!(line, LogLine::InitGame { .. })
            || super::log::split_time(raw).1.starts_with("-----");
        if !new_game && self.last_level_time.is_some_and(|last| t < last) {
            return Err("its level time goes back without a new game");
        }
        if let LogLine::UserinfoChanged {
            broken: Some(why), ..
        } = line
        {
            self.tainted_batch = Some(inst);
            return Err(why);
        }
        self.last_level_time = Some(t);
        Ok(())
    }

    /// Whether this game can end with `reason` now: it is live and has not ended, it has that
    /// limit, and for the timelimit, that much level time has passed since its `InitGame`.
    fn exit_possible(&self, reason: &ExitReason, level_time_s: Option<u32>) -> Result<(), String> {
        let g = &self.state.game;
        // After an Exit the game is in intermission; another Exit for a different limit may
        // follow only if the first was forged (the runner refutes it and keeps waiting).
        let after_exit = g.phase == Phase::Intermission && g.exit.is_some();
        if !matches!(g.phase, Phase::Live | Phase::Starting) && !after_exit {
            return Err(format!("the game is in {:?}, not a live match", g.phase).to_lowercase());
        }
        if g.exit.as_ref().is_some_and(|e| e.reason == *reason) {
            return Err("this game already logged that Exit".into());
        }
        let limit = |k: &str| {
            g.serverinfo
                .get(k)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        match reason {
            ExitReason::Timelimit => {
                // The game compares whole minutes (`g_timelimit.integer`).
                let minutes = limit("timelimit").trunc();
                if minutes < 1.0 {
                    return Err("this game has no timelimit".into());
                }
                let start = g.init.and_then(|s| s.level_time_s);
                if let (Some(start), Some(now)) = (start, level_time_s) {
                    let played = now.saturating_sub(start);
                    if f64::from(played) < minutes * 60.0 {
                        return Err(format!(
                            "{played} s of level time played, the timelimit is {minutes} min"
                        ));
                    }
                }
                Ok(())
            }
            ExitReason::Fraglimit if limit("fraglimit") < 1.0 => {
                Err("this game has no fraglimit".into())
            }
            ExitReason::Capturelimit if limit("capturelimit") < 1.0 => {
                Err("this game has no capturelimit".into())
            }
            ExitReason::Fraglimit | ExitReason::Capturelimit => Ok(()),
            ExitReason::Other(s) => Err(format!("the game never logs `Exit: {}`", Esc(s))),
        }
    }

    fn userinfo(&mut self, slot: u8, info: Userinfo, ev: &mut Vec<ArenaEvent>) {
        let kind = kind_of(Some(&info));
        let name = info.name().unwrap_or("").to_string();
        if self.gone_claims.contains_key(&slot) {
            // A new client in a slot whose player is claimed gone: it is taken in once `status`
            // has settled the claim.
            self.pending.insert(slot, info);
            return;
        }
        let Some(p) = self.state.roster.players.get_mut(&slot) else {
            self.pending.insert(slot, info);
            return;
        };
        let same = match (p.kind, kind) {
            (PlayerKind::Unknown, _) | (_, PlayerKind::Unknown) => true,
            (a, b) if a != b => false,
            (PlayerKind::Human, _) => p.guid.is_none() || p.guid.as_deref() == info.guid(),
            _ => self.log_names.get(&slot).is_none_or(|n| *n == name),
        };
        if !same {
            // Another client holds the slot without a logged disconnect (a server restart,
            // or lines we never saw), or a forged line says so: `status` settles it.
            self.gone_claims.insert(slot, (self.seq, 0));
            self.pending.insert(slot, info);
            return;
        }
        if p.kind == PlayerKind::Unknown {
            p.kind = kind;
        }
        if let Some(g) = info.guid() {
            p.guid = Some(g.to_string());
        }
        if let Some(s) = info.skill() {
            p.skill = Some(s);
        }
        let old = self.log_names.insert(slot, name.clone());
        if let Some(old) = old
            && old != name
        {
            let from = p.name.clone();
            p.set_name(&name);
            if p.announced {
                ev.push(ArenaEvent::Renamed {
                    slot,
                    from,
                    to: p.name.clone(),
                });
            }
        }
        self.announce(slot, ev);
    }

    /// Time-based transitions (an `InitGame` without `Warmup:` becomes live).
    pub(crate) fn tick(&mut self, inst: Instant) -> Vec<ArenaEvent> {
        let mut ev = Vec::new();
        let g = &self.state.game;
        if g.phase == Phase::Starting
            && g.init
                .is_some_and(|s| inst.saturating_duration_since(s.instant) >= WARMUP_GRACE)
        {
            self.dirty = true;
            self.resolve_live(&mut ev);
        }
        ev
    }

    /// Whether a `status` would tell something the log cannot.
    pub(crate) fn needs_status(&self, inst: Instant) -> bool {
        self.reconcile_at.is_some_and(|t| inst >= t)
            || !self.gone_claims.is_empty()
            || self.state.roster.players.values().any(|p| !p.complete())
    }

    /// Settle the claims that a player left (see the module doc) with a `status` asked after
    /// them: still there (same kind, and the same IP for a human, the same name for a bot) means
    /// the claim was false; gone, a zombie or someone else means it was true.
    fn settle_claims(&mut self, st: &Status, sent_seq: u64, ev: &mut Vec<ArenaEvent>) {
        let claims: Vec<(u8, (u64, u32))> =
            self.gone_claims.iter().map(|(s, c)| (*s, *c)).collect();
        for (slot, (claim_seq, rounds)) in claims {
            if claim_seq > sent_seq {
                continue; // asked before the claim: says nothing about it
            }
            let Some(p) = self.state.roster.players.get(&slot) else {
                self.gone_claims.remove(&slot);
                continue;
            };
            let row = st.rows.iter().find(|r| r.slot == slot);
            let rejected = st.rejected.iter().any(|r| r.slot == slot);
            match row {
                Some(row) if !row.is_zombie() && same_player(p, row) => {
                    warn!(slot, name = %Esc(&p.name), "games.log said this player left, but `status` still shows them; the line was forged or stale");
                    self.state.rejected += 1;
                    self.gone_claims.remove(&slot);
                    self.pending.remove(&slot);
                }
                None if rejected => {
                    // The reply was tainted at this slot: ask again, a few times.
                    if rounds >= 2 {
                        warn!(
                            slot,
                            "cannot confirm that this player left (`status` keeps being forged); keeping them"
                        );
                        self.gone_claims.remove(&slot);
                    } else {
                        self.gone_claims.insert(slot, (claim_seq, rounds + 1));
                    }
                }
                _ => self.remove(slot, ev),
            }
        }
    }

    pub(crate) fn take_reconcile(&mut self) {
        self.reconcile_at = None;
    }

    /// Apply a `status` reply that was requested when the tracker was at `sent_seq`.
    pub(crate) fn apply_status(
        &mut self,
        st: &Status,
        sent_seq: u64,
        now: DateTime<Utc>,
    ) -> Vec<ArenaEvent> {
        let mut ev = Vec::new();
        self.dirty = true;
        for r in &st.rejected {
            warn!(slot = r.slot, name = %Esc(&r.name), address = ?r.address, "`status` row dropped: the reply breaks the row grammar (a name with a newline?)");
        }
        self.state.rejected += st.rejected.len() as u64;
        self.settle_claims(st, sent_seq, &mut ev);
        // Zombies have left already (their slot is only kept for the disconnect message).
        let rows: BTreeMap<u8, &StatusRow> = st.active().map(|r| (r.slot, r)).collect();
        // Known before the request but absent from the reply: gone (unless the reply was cut
        // there, or a claim about the slot is still open).
        let gone: Vec<u8> = self
            .state
            .roster
            .players
            .values()
            .filter(|p| {
                p.created_seq <= sent_seq
                    && !rows.contains_key(&p.slot)
                    && !st.rejected.iter().any(|r| r.slot == p.slot)
                    && !self.gone_claims.contains_key(&p.slot)
            })
            .map(|p| p.slot)
            .collect();
        for slot in gone {
            self.remove(slot, &mut ev);
        }
        for (slot, row) in rows {
            if self.gone_claims.contains_key(&slot) {
                continue; // settled by a later reply
            }
            let rk = row_kind(row);
            if let Some(p) = self.state.roster.players.get(&slot)
                && p.kind != PlayerKind::Unknown
                && rk != PlayerKind::Unknown
                && p.kind != rk
            {
                // The slot changed hands between what we read and now.
                if p.created_seq <= sent_seq {
                    self.remove(slot, &mut ev);
                } else {
                    continue;
                }
            }
            if !self.state.roster.players.contains_key(&slot) {
                if self.disconnect_seq[slot as usize] > sent_seq {
                    // It left after the request; the reply is stale for this slot.
                    continue;
                }
                let info = self.pending.remove(&slot);
                let mut p = Player::new(slot, rk, &row.name, now, self.seq);
                // Seen only here (e.g. already on the server when we attached): no
                // `ClientBegin` will come, so an active ping means it is in the game.
                p.in_game = matches!(row.ping, Ping::Ms(_));
                if let Some(i) = &info {
                    p.guid = i.guid().map(str::to_string);
                    p.skill = i.skill();
                    self.log_names
                        .insert(slot, i.name().unwrap_or("").to_string());
                }
                self.state.roster.players.insert(slot, p);
            }
            let p = self
                .state
                .roster
                .players
                .get_mut(&slot)
                .expect("inserted above");
            if rk != PlayerKind::Unknown {
                p.kind = rk;
            }
            if p.name_raw != row.name {
                p.set_name(&row.name);
            }
            if let Some(ip) = row.ip() {
                p.ip = Some(ip);
            }
            if p.is_human() && p.ip.is_none() {
                // An address that is not an IP (e.g. `loopback`): after a few rounds, report the
                // player without one rather than asking forever.
                let n = self.unresolved_rounds.entry(slot).or_insert(0);
                *n += 1;
                if *n >= 3 {
                    warn!(
                        slot,
                        "no IP for this human in `status`; reporting without one"
                    );
                    p.ip_unresolvable = true;
                }
            } else if p.kind == PlayerKind::Unknown {
                // Listed, but with an address that is neither `bot` nor an IP.
                p.kind = PlayerKind::Human;
            }
            self.announce(slot, &mut ev);
        }
        ev
    }

    pub(crate) fn set_log_restarts(&mut self, n: u32) -> Option<ArenaEvent> {
        (self.state.log_restarts != n).then(|| {
            self.state.log_restarts = n;
            // A new file starts its own clock.
            self.last_level_time = None;
            self.dirty = true;
            ArenaEvent::LogRestarted
        })
    }

    pub(crate) fn set_log_offset(&mut self, n: u64) {
        if self.state.log_offset != n {
            self.state.log_offset = n;
            self.dirty = true;
        }
    }

    pub(crate) fn set_server_exit(&mut self, status: String) -> ArenaEvent {
        self.state.server_exit = Some(status.clone());
        self.state.roster.players.clear();
        self.pending.clear();
        self.gone_claims.clear();
        self.dirty = true;
        ArenaEvent::ServerExited { status }
    }
}

/// Shared between the monitor's tasks and the [`super::Arena`] handle.
pub(crate) struct Shared {
    pub(crate) tracker: StdMutex<Tracker>,
    pub(crate) state_tx: watch::Sender<ArenaState>,
    pub(crate) events: broadcast::Sender<ArenaEvent>,
    pub(crate) status_wanted: Notify,
    /// Ask `status` every [`PING_EVERY`] for the humans' pings (see [`super::Arena::sample_pings`]).
    pub(crate) sampling: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publish the tracker's changes and events.
    pub(crate) fn publish(&self, tracker: &mut Tracker, events: Vec<ArenaEvent>) {
        if let Some(snap) = tracker.take_snapshot() {
            self.state_tx.send_replace(snap);
        }
        for e in events {
            let _ = self.events.send(e);
        }
    }
}

/// The running watcher: aborts its tasks when dropped.
pub(crate) struct Monitor {
    pub(crate) shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Monitor {
    pub(crate) fn start(tail: LogTail, rcon: Rcon, process: Option<Arc<ServerProcess>>) -> Monitor {
        let (state_tx, _) = watch::channel(ArenaState::default());
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            tracker: StdMutex::new(Tracker::new()),
            state_tx,
            events,
            status_wanted: Notify::new(),
            sampling: std::sync::atomic::AtomicBool::new(false),
        });
        let tail_task = tokio::spawn(tail_loop(shared.clone(), tail, process));
        let status_task = tokio::spawn(status_loop(shared.clone(), rcon));
        Monitor {
            shared,
            tasks: vec![tail_task, status_task],
        }
    }
}

async fn tail_loop(shared: Arc<Shared>, mut tail: LogTail, process: Option<Arc<ServerProcess>>) {
    let mut iv = tokio::time::interval(POLL);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_error: Option<Instant> = None;
    let mut last_proc_check = Instant::now();
    let mut exited = false;
    loop {
        iv.tick().await;
        let lines = match tail.poll() {
            Ok(l) => l,
            Err(e) => {
                if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                    warn!(path = %tail.path().display(), error = %e, "cannot read the game log");
                    last_error = Some(Instant::now());
                }
                Vec::new()
            }
        };
        let now = Utc::now();
        let inst = Instant::now();
        let mut t = shared.lock();
        let mut ev = Vec::new();
        for l in &lines {
            ev.extend(t.apply_line(l, now, inst));
        }
        ev.extend(t.tick(inst));
        ev.extend(t.set_log_restarts(tail.restarts));
        t.set_log_offset(tail.offset());
        if !exited
            && last_proc_check.elapsed() >= Duration::from_millis(500)
            && let Some(p) = &process
        {
            last_proc_check = Instant::now();
            if let Some(status) = p.exit_status() {
                exited = true;
                warn!(%status, "the server process exited");
                ev.push(t.set_server_exit(status));
            }
        }
        let want = t.needs_status(inst) && !exited;
        shared.publish(&mut t, ev);
        drop(t);
        if want {
            shared.status_wanted.notify_one();
        }
    }
}

async fn status_loop(shared: Arc<Shared>, rcon: Rcon) {
    let mut failures: u32 = 0;
    // The last request, for the ping sampling's pace: a roster request counts as a sample.
    let mut last = Instant::now();
    loop {
        let sampling = shared.sampling.load(std::sync::atomic::Ordering::Relaxed);
        let due = last + PING_EVERY;
        let by_clock = tokio::select! {
            _ = shared.status_wanted.notified() => false,
            _ = tokio::time::sleep_until(due.into()), if sampling => true,
            // Sampling may be switched on while this loop waits for the roster.
            _ = tokio::time::sleep(Duration::from_millis(500)), if !sampling => continue,
        };
        if !by_clock {
            // Let a burst of joins settle into one request.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let sent_seq = {
            let mut t = shared.lock();
            if !by_clock && !t.needs_status(Instant::now()) {
                continue;
            }
            t.take_reconcile();
            t.seq()
        };
        last = Instant::now();
        match rcon.send(&RconCmd::status()).await {
            Ok(reply) => {
                failures = 0;
                let st = parse_status(&reply.text);
                if !st.unparsed.is_empty() {
                    debug!(lines = st.unparsed.len(), "status: some rows did not parse");
                }
                let mut t = shared.lock();
                let now = Utc::now();
                let mut ev = t.apply_status(&st, sent_seq, now);
                ev.extend(pings_of(&st, now));
                shared.publish(&mut t, ev);
            }
            Err(e) => {
                failures += 1;
                let backoff =
                    Duration::from_secs(1u64 << failures.min(3)).min(Duration::from_secs(10));
                warn!(error = %e, retry_in_s = backoff.as_secs(), "status for the roster failed");
                tokio::time::sleep(backoff).await;
                shared.status_wanted.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::status::parse_status;

    struct Feed {
        t: Tracker,
        inst: Instant,
    }

    impl Feed {
        fn new() -> Feed {
            Feed {
                t: Tracker::new(),
                inst: Instant::now(),
            }
        }
        fn lines(&mut self, text: &str) -> Vec<ArenaEvent> {
            let mut ev = Vec::new();
            for l in text.lines().filter(|l| !l.trim().is_empty()) {
                ev.extend(self.t.apply_line(l, Utc::now(), self.inst));
            }
            ev
        }
        fn advance(&mut self, d: Duration) -> Vec<ArenaEvent> {
            self.inst += d;
            self.t.tick(self.inst)
        }
        fn phase(&self) -> Phase {
            self.t.state().game.phase
        }
    }

    const INIT_WARMUP: &str = "  0:00 ------------------------------------------------------------\n  0:00 InitGame: \\g_doWarmup\\1\\timelimit\\1\\mapname\\oa_dm1\n  0:00 Info: ServerInfo length: 803 of 1024\n  0:00 Warmup:\n";
    const SARGE: &str = "  0:03 ClientUserinfoChanged: 0 n\\Sarge\\t\\0\\model\\sarge\\skill\\ 2.00\\id\\\n  0:03 ClientConnect: 0\n  0:03 ClientBegin: 0\n";
    const BOSS: &str = "  0:03 ClientUserinfoChanged: 1 n\\^1Big ^2Boss\\t\\0\\model\\major\\skill\\ 3.00\\id\\\n  0:03 ClientConnect: 1\n  0:03 ClientBegin: 1\n";
    const HUMAN: &str = "  0:05 ClientUserinfoChanged: 3 n\\Sarge\\t\\0\\model\\sarge\\g_redteam\\\\g_blueteam\\\\id\\AA908E01A59664516FE43D2BA1DAA2BD\n  0:05 ClientConnect: 3\n";

    fn joined(ev: &[ArenaEvent]) -> Vec<u8> {
        ev.iter()
            .filter_map(|e| match e {
                ArenaEvent::Joined { player } => Some(player.slot),
                _ => None,
            })
            .collect()
    }

    /// The verified sequence: warmup InitGame, bots join, countdown restart (InitGame without
    /// Warmup) with every client logging its lines again, Exit, scores, intermission, restart.
    #[test]
    fn verified_sequence_warmup_live_exit() {
        let mut f = Feed::new();
        let ev = f.lines(INIT_WARMUP);
        assert_eq!(f.phase(), Phase::Warmup);
        assert!(matches!(
            ev[..],
            [ArenaEvent::GameStarted {
                warmup: true,
                generation: 1,
                ..
            }]
        ));
        let ev = f.lines(&format!("{SARGE}{BOSS}"));
        assert_eq!(joined(&ev), vec![0, 1]);
        let r = &f.t.state().roster;
        assert!(r.get(0).unwrap().is_bot() && r.get(1).unwrap().is_bot());
        assert_eq!(r.get(1).unwrap().name, "Big Boss");
        assert_eq!(r.get(1).unwrap().skill, Some(3.0));

        // Warmup ends: ShutdownGame, InitGame without Warmup, reconnect lines.
        let again = format!("{SARGE}{BOSS}").replace("0:03", "1:05");
        let ev = f.lines(&format!(
            "  1:05 ShutdownGame:\n  1:05 ------\n  1:05 InitGame: \\g_doWarmup\\1\\timelimit\\1\\mapname\\oa_dm1\n  1:05 Info: ServerInfo length: 803 of 1024\n{again}"
        ));
        assert_eq!(f.phase(), Phase::Live);
        assert!(
            joined(&ev).is_empty(),
            "reconnect lines are not new players: {ev:?}"
        );
        assert!(ev.iter().any(|e| matches!(
            e,
            ArenaEvent::GameStarted {
                warmup: false,
                generation: 2,
                ..
            }
        )));
        assert_eq!(f.t.state().roster.len(), 2);

        let ev = f.lines("  2:05 Exit: Timelimit hit.\n  2:05 score: 5  ping: 0  client: 1 ^1Big ^2Boss\n  2:05 score: 3  ping: 0  client: 0 Sarge\n");
        assert!(
            matches!(&ev[..], [ArenaEvent::MatchExit { exit }, ArenaEvent::FinalScore { score: a, .. }, ArenaEvent::FinalScore { score: b, .. }]
                if exit.reason == ExitReason::Timelimit && a.slot == 1 && b.score == 3)
        );
        assert_eq!(f.phase(), Phase::Intermission);
        let exit = f.t.state().game.exit.clone().unwrap();
        assert_eq!(exit.generation, 2);
        assert_eq!(exit.scores.len(), 2);
        assert_eq!(exit.scores[0].score, 5);
        assert_eq!(exit.stamp.level_time_s, Some(125));

        // Intermission ends by itself (no humans): next game in warmup.
        f.lines(&format!("  2:21 ShutdownGame:\n{INIT_WARMUP}"));
        assert_eq!(f.phase(), Phase::Warmup);
        assert!(f.t.state().game.exit.is_none());
        assert_eq!(f.t.state().game.generation, 3);
    }

    #[test]
    fn initgame_without_warmup_info_resolves_by_time_or_by_the_next_client_line() {
        let mut f = Feed::new();
        f.lines("  0:00 InitGame: \\g_doWarmup\\1\\mapname\\oa_dm1\n  0:00 Info: ServerInfo length: 1\n");
        assert_eq!(f.phase(), Phase::Starting);
        assert!(f.advance(Duration::from_millis(100)).is_empty());
        let ev = f.advance(WARMUP_GRACE);
        assert_eq!(f.phase(), Phase::Live);
        assert!(matches!(
            ev[..],
            [ArenaEvent::GameStarted { warmup: false, .. }]
        ));

        let mut f = Feed::new();
        f.lines("  0:00 InitGame: \\mapname\\oa_dm1\n");
        f.lines(SARGE);
        assert_eq!(f.phase(), Phase::Live);

        // g_doWarmup 0 in the serverinfo: live at once.
        let mut f = Feed::new();
        f.lines("  0:00 InitGame: \\g_doWarmup\\0\\mapname\\oa_dm2\n");
        assert_eq!(f.phase(), Phase::Live);
        assert_eq!(f.t.state().game.map.as_deref(), Some("oa_dm2"));
        assert!(f.t.state().game.live.is_some());
    }

    #[test]
    fn humans_are_reported_once_their_ip_is_known_and_never_by_name() {
        let mut f = Feed::new();
        f.lines(INIT_WARMUP);
        f.lines(SARGE);
        // A human who calls themselves "Sarge".
        let ev = f.lines(HUMAN);
        assert!(joined(&ev).is_empty(), "no IP yet");
        assert!(f.t.needs_status(f.inst));
        let p = f.t.state().roster.get(3).unwrap();
        assert!(p.is_human());
        assert_eq!(p.guid.as_deref(), Some("AA908E01A59664516FE43D2BA1DAA2BD"));
        let sent = f.t.seq();
        let st = parse_status(
            "map: oa_dm1\ncl score ping name            address                                 rate \n\
-- ----- ---- --------------- --------------------------------------- -----\n \
0     0    0 Sarge           ^7bot                                     16384\n \
3     0    0 Sarge           ^710.77.9.11                              99999\n\n",
        );
        let ev = f.t.apply_status(&st, sent, Utc::now());
        assert_eq!(joined(&ev), vec![3]);
        let r = &f.t.state().roster;
        assert_eq!(r.humans().count(), 1);
        assert_eq!(
            r.humans().next().unwrap().ip,
            Some("10.77.9.11".parse().unwrap())
        );
        assert_eq!(r.bots().count(), 1);
        assert!(!f.t.needs_status(f.inst));
        let ev = f.lines("  0:06 ClientBegin: 3\n");
        assert!(matches!(ev[..], [ArenaEvent::InGame { slot: 3 }]));
        assert_eq!(f.t.state().roster.humans_in_game().count(), 1);

        // Kick: Kill line, then disconnect; `status` (asked after it) shows the slot as a
        // zombie, which confirms it.
        let ev = f.lines("  0:09 Kill: 1022 3 20: <world> killed Sarge by MOD_SUICIDE\n  0:09 ClientDisconnect: 3\n");
        assert!(
            matches!(
                ev[..],
                [
                    ArenaEvent::Kill { .. },
                    ArenaEvent::DisconnectLogged { slot: 3, .. }
                ]
            ),
            "a log line alone removes nobody: {ev:?}"
        );
        assert!(f.t.needs_status(f.inst));
        let st = parse_status(
            "cl score ping name address rate\n 0     0    0 Sarge           ^7bot                                     16384\n 3     0  ZMB                 ^710.77.9.11                              99999\n",
        );
        let ev = f.t.apply_status(&st, f.t.seq(), Utc::now());
        assert!(
            matches!(&ev[..], [ArenaEvent::Left { player }] if player.slot == 3 && player.is_human())
        );
        assert_eq!(f.t.state().roster.humans().count(), 0);
        assert!(!f.t.needs_status(f.inst));
    }

    #[test]
    fn pings_are_the_active_humans_with_a_measured_ping() {
        let st = parse_status(
            "cl score ping name address rate\n 0     0    0 Sarge           ^7bot                                     16384\n 1     2  150 ^2Ann           ^710.77.9.11                              25000\n 2     0  CNCT Bob            ^710.77.9.12                              25000\n 3     0  ZMB                 ^710.77.9.13                              25000\n",
        );
        let at = Utc::now();
        let Some(ArenaEvent::Pings { at: got_at, pings }) = pings_of(&st, at) else {
            panic!("one human with a ping");
        };
        assert_eq!(got_at, at);
        assert_eq!(
            pings,
            [PingSample {
                slot: 1,
                ip: "10.77.9.11".parse().unwrap(),
                ping_ms: 150
            }]
        );
        let bots_only = parse_status(
            "cl score ping name address rate\n 0     0    0 Sarge           ^7bot                                     16384\n",
        );
        assert!(pings_of(&bots_only, at).is_none());
    }

    #[test]
    fn status_reconciliation_is_safe_against_races() {
        let mut f = Feed::new();
        f.lines(INIT_WARMUP);
        f.lines(SARGE);
        let sent = f.t.seq();
        // Slot 1 joins after the request was sent; the reply does not list it yet.
        f.lines(BOSS);
        let st = parse_status(
            "cl score ping name address rate\n 0     0    0 Sarge           ^7bot                                     16384\n",
        );
        let ev = f.t.apply_status(&st, sent, Utc::now());
        assert!(ev.is_empty(), "{ev:?}");
        assert_eq!(
            f.t.state().roster.len(),
            2,
            "a player newer than the request is kept"
        );

        // A player absent from a later reply is gone (e.g. the server restarted under us).
        let sent = f.t.seq();
        let ev = f.t.apply_status(&st, sent, Utc::now());
        assert!(matches!(&ev[..], [ArenaEvent::Left { player }] if player.slot == 1));

        // A reply asked before a disconnect neither confirms nor refutes it; the next does.
        let sent = f.t.seq();
        f.lines("  0:10 ClientDisconnect: 0\n");
        let ev = f.t.apply_status(&st, sent, Utc::now());
        assert!(ev.is_empty(), "{ev:?}");
        assert_eq!(f.t.state().roster.len(), 1);
        assert!(f.t.needs_status(f.inst));
        let empty = parse_status("cl score ping name address rate\n");
        let ev = f.t.apply_status(&empty, f.t.seq(), Utc::now());
        assert!(matches!(&ev[..], [ArenaEvent::Left { player }] if player.slot == 0));
        assert!(f.t.state().roster.is_empty());

        // A zombie row (a client that just left, e.g. kicked) is not a player.
        let mut f = Feed::new();
        let st = parse_status(
            "cl score ping name address rate\n 2     0  ZMB                 ^710.77.9.11                              25000\n",
        );
        assert!(f.t.apply_status(&st, 0, Utc::now()).is_empty());
        assert!(f.t.state().roster.is_empty());

        // Attach: players already there are learned from status.
        let mut f = Feed::new();
        let st = parse_status(
            "cl score ping name address rate\n 2     4   33 ^2Ann           ^7192.168.5.20                            25000\n 5     1    0 Grunt           ^7bot                                     16384\n",
        );
        let ev = f.t.apply_status(&st, 0, Utc::now());
        assert_eq!(joined(&ev), vec![2, 5]);
        let ann = f.t.state().roster.get(2).unwrap();
        assert!(ann.is_human() && ann.in_game);
        assert_eq!(ann.name, "Ann");
        assert_eq!(ann.name_raw, "^2Ann");
    }

    #[test]
    fn a_different_client_in_a_slot_replaces_the_old_one() {
        let mut f = Feed::new();
        f.lines(INIT_WARMUP);
        f.lines(SARGE);
        // Server killed and restarted: a new InitGame, then a human in slot 0 without a
        // disconnect line for the bot.
        let ev = f.lines(&format!("{INIT_WARMUP}  0:02 ClientUserinfoChanged: 0 n\\Eve\\id\\0123456789ABCDEF0123456789ABCDEF\n  0:02 ClientConnect: 0\n"));
        assert!(ev.iter().all(|e| !matches!(e, ArenaEvent::Left { .. })));
        let st = parse_status(
            "cl score ping name address rate\n 0     0    0 Eve             ^710.77.9.12                              99999\n",
        );
        let ev = f.t.apply_status(&st, f.t.seq(), Utc::now());
        assert!(
            ev.iter()
                .any(|e| matches!(e, ArenaEvent::Left { player } if player.is_bot()))
        );
        assert_eq!(joined(&ev), vec![0]);
        let p = f.t.state().roster.get(0).unwrap();
        assert!(p.is_human());
        assert_eq!(p.name, "Eve");
    }

    #[test]
    fn renames_are_reported() {
        let mut f = Feed::new();
        f.lines(INIT_WARMUP);
        f.lines(SARGE);
        let ev = f.lines(
            "  0:09 ClientUserinfoChanged: 0 n\\Sarge2\\t\\0\\model\\sarge\\skill\\ 2.00\\id\\\n",
        );
        // Same slot, same kind, different bot name → a different bot (bots do not rename),
        // once `status` agrees.
        assert!(ev.is_empty());
        let st = parse_status(
            "cl score ping name address rate\n 0     0    0 Sarge2          ^7bot                                     16384\n",
        );
        let ev = f.t.apply_status(&st, f.t.seq(), Utc::now());
        assert!(ev.iter().any(|e| matches!(e, ArenaEvent::Left { .. })));
        assert_eq!(joined(&ev), vec![0]);
        let mut f = Feed::new();
        f.lines(HUMAN);
        let st = parse_status(
            "cl score ping name address rate\n 3     0    0 Sarge           ^7127.0.0.1                               99999\n",
        );
        f.t.apply_status(&st, f.t.seq(), Utc::now());
        let ev = f.lines(
            "  0:09 ClientUserinfoChanged: 3 n\\^3New\\id\\AA908E01A59664516FE43D2BA1DAA2BD\n",
        );
        assert!(matches!(&ev[..], [ArenaEvent::Renamed { slot: 3, to, .. }] if to == "New"));
    }

    /// The userinfo of a human in `slot` whose `cl_guid` ends with `tail` (a modified client
    /// can put a newline there): the game writes `…\\id\\<guid>` last, then a newline.
    fn forged(slot: u8, guid_and_tail: &str) -> String {
        format!(
            "  0:03 ClientUserinfoChanged: {slot} n\\Eve\\t\\0\\model\\sarge\\hmodel\\sarge\\g_redteam\\\\g_blueteam\\\\c1\\4\\c2\\5\\hc\\100\\w\\0\\l\\0\\tt\\0\\tl\\0\\id\\{guid_and_tail}\n"
        )
    }

    const LIVE_30S: &str = "  0:00 ------\n  0:00 InitGame: \\g_doWarmup\\0\\timelimit\\0\\fraglimit\\0\\mapname\\oa_dm1\n";
    const LIVE_1MIN: &str = "  0:00 ------\n  0:00 InitGame: \\g_doWarmup\\0\\timelimit\\1\\fraglimit\\0\\mapname\\oa_dm1\n";

    fn exits(ev: &[ArenaEvent]) -> usize {
        ev.iter()
            .filter(|e| matches!(e, ArenaEvent::MatchExit { .. }))
            .count()
    }

    /// The attack from issue 10: `cl_guid = "AB\n  0:03 Exit: Timelimit hit."` ended a
    /// runner-timed 30 s match after 3 s.
    #[test]
    fn a_forged_exit_never_ends_a_match() {
        // The guid is cut short: the rest of that read is the client's.
        let mut f = Feed::new();
        f.lines(LIVE_30S);
        let ev = f.lines(&forged(
            3,
            "AB\n  0:03 Exit: Timelimit hit.\n  0:03 ClientDisconnect: 0",
        ));
        assert_eq!(exits(&ev), 0, "{ev:?}");
        assert_eq!(f.t.state().rejected, 3);
        assert_eq!(f.phase(), Phase::Live);

        // A valid-looking guid before the newline: the Exit itself is impossible (no timelimit
        // in a runner-timed match; before the timelimit in a server-timed one).
        for (init, line) in [
            (LIVE_30S, "  0:03 Exit: Timelimit hit."),
            (LIVE_30S, "  0:03 Exit: Fraglimit hit."),
            (LIVE_1MIN, "  0:59 Exit: Timelimit hit."),
            (LIVE_1MIN, "  1:30 Exit: Capturelimit hit."),
            (LIVE_1MIN, "  1:30 Exit: Because I say so."),
        ] {
            let mut f = Feed::new();
            f.lines(init);
            let ev = f.lines(&forged(
                3,
                &format!("0123456789ABCDEF0123456789ABCDEF\n{line}"),
            ));
            assert_eq!(exits(&ev), 0, "{line}: {ev:?}");
            assert_eq!(f.phase(), Phase::Live, "{line}");
        }

        // The real one still counts, once.
        let mut f = Feed::new();
        f.lines(LIVE_1MIN);
        let ev = f.lines("  1:00 Exit: Timelimit hit.\n  1:00 Exit: Timelimit hit.\n");
        assert_eq!(exits(&ev), 1);
        assert_eq!(f.phase(), Phase::Intermission);
    }

    #[test]
    fn lines_breaking_the_log_grammar_are_refused() {
        let mut f = Feed::new();
        f.lines(LIVE_1MIN);
        f.lines("  0:20 ClientUserinfoChanged: 0 n\\Sarge\\t\\0\\model\\sarge\\skill\\ 2.00\\id\\\n  0:20 ClientConnect: 0\n");
        assert_eq!(f.t.state().roster.len(), 1);
        // No time prefix: the tail of a line cut by a newline.
        f.lines("ClientDisconnect: 0\nExit: Timelimit hit.\n");
        // Time going back without a new game.
        f.lines("  0:10 ClientDisconnect: 0\n");
        assert_eq!(f.t.state().rejected, 3);
        assert!(!f.t.needs_status(f.inst), "no claim was made");
        // A new game resets the clock.
        f.lines(LIVE_1MIN);
        assert_eq!(f.t.state().game.generation, 2);
        // A name cut short (its newline in the name field): refused, and the rest of that
        // read with it, also in other slots.
        let ev = f.lines("  0:01 ClientUserinfoChanged: 4 n\\Eve\n  0:01 ClientDisconnect: 0\n");
        assert!(
            ev.iter()
                .all(|e| matches!(e, ArenaEvent::UntrustedLine { .. })),
            "{ev:?}"
        );
        assert_eq!(f.t.state().rejected, 5);
    }

    #[test]
    fn a_forged_disconnect_is_refuted_by_status() {
        let mut f = Feed::new();
        f.lines(LIVE_1MIN);
        f.lines("  0:01 ClientUserinfoChanged: 2 n\\Ann\\id\\AA908E01A59664516FE43D2BA1DAA2BD\n  0:01 ClientConnect: 2\n  0:01 ClientBegin: 2\n");
        let two = "cl score ping name address rate\n 2     0    0 Ann             ^710.77.0.12                              99999\n 3     0    0 Eve             ^710.77.0.11                              99999\n";
        f.t.apply_status(&parse_status(two), f.t.seq(), Utc::now());
        assert_eq!(f.t.state().roster.humans().count(), 2);
        // Eve's guid carries a ClientDisconnect for Ann.
        let ev = f.lines(&forged(
            3,
            "0123456789ABCDEF0123456789ABCDEF\n  0:03 ClientDisconnect: 2",
        ));
        assert!(
            ev.iter().all(|e| !matches!(e, ArenaEvent::Left { .. })),
            "{ev:?}"
        );
        assert!(f.t.needs_status(f.inst));
        let ev = f.t.apply_status(&parse_status(two), f.t.seq(), Utc::now());
        assert!(
            ev.iter().all(|e| !matches!(e, ArenaEvent::Left { .. })),
            "{ev:?}"
        );
        assert!(f.t.state().roster.get(2).is_some_and(|p| p.name == "Ann"));
        assert_eq!(f.t.state().rejected, 1);
    }

    /// A `status` reply with rows forged by a name: no phantom joins, and no one is taken
    /// for gone because their row came after the forgery.
    #[test]
    fn a_forged_status_row_adds_and_removes_nobody() {
        let mut f = Feed::new();
        f.lines(LIVE_1MIN);
        f.lines("  0:01 ClientUserinfoChanged: 4 n\\Ann\\id\\AA908E01A59664516FE43D2BA1DAA2BD\n  0:01 ClientConnect: 4\n  0:01 ClientBegin: 4\n");
        let ok = "cl score ping name address rate\n 4     0    0 Ann             ^710.77.0.12                              99999\n";
        f.t.apply_status(&parse_status(ok), f.t.seq(), Utc::now());
        let forged = "cl score ping name address rate\n 3     0    0 Eve\n 5     0    0 Phantom         ^710.77.0.11                              99999\n 4     0    0 Ann             ^710.77.0.12                              99999\n";
        let ev =
            f.t.apply_status(&parse_status(forged), f.t.seq(), Utc::now());
        assert!(ev.is_empty(), "{ev:?}");
        assert_eq!(f.t.state().roster.len(), 1);
        assert!(f.t.state().roster.get(5).is_none());
        assert!(f.t.state().rejected >= 2);
    }
}
