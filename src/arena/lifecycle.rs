//! Match control: bots, kicks, limits, starting a match, noticing (or enforcing) its end.
//!
//! - A match starts with `set g_doWarmup 0` and `map_restart 0` (or `map X`); it is live when its
//!   `InitGame` is not followed by `Warmup:` (with g_doWarmup 0 the serverinfo says so at once).
//! - It ends with `Exit:` (timelimit/fraglimit), or the runner ends it after the scenario's
//!   duration when that is not whole minutes (the server's timelimit is then 0).
//! - Sudden death: a tie blocks the server's timelimit; the runner ends such a match once
//!   `overtime` has passed beyond the timelimit.
//! - Between matches the server is held in warmup (`g_doWarmup 1`, a day-long `g_warmup`):
//!   intermission never ends while idle humans are connected, and a server left to itself would
//!   start a match of its own after the warmup countdown.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use regex::Regex;
use serde::Serialize;
use tracing::{info, warn};

use super::error::{ArenaError, Result};
use super::monitor::{ArenaState, FinalScore, Phase, Stamp};
use super::rcon::{BotName, Cvar, MapName, RconCmd, RconReply};
use super::server::HOLD_WARMUP_SECS;
use super::{Arena, ArenaEvent};
use crate::manifest::{MatchEnding, MatchRecord, Timestamp};
use crate::plan::{MatchEnd, Step};

/// Time allowed for a kick/addbot to show in the log.
const ROSTER_WAIT: Duration = Duration::from_secs(8);
/// After a non-idempotent command got no reply: how long to look in the log for its effect
/// before sending it once more.
const EFFECT_WAIT: Duration = Duration::from_secs(3);
/// An `Exit:` this late after the timelimit means the tie-break (sudden death) decided it.
const EXIT_SLACK: Duration = Duration::from_secs(1);
/// Score lines follow `Exit:` in the same server frame; give the log reader this long.
const SCORES_WAIT: Duration = Duration::from_millis(400);

/// What one match needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchSpec {
    /// `Some`: play on this map (`map X` if it is not the current one); `None`: restart the
    /// current one (`map_restart 0`).
    pub map: Option<String>,
    pub end: MatchEnd,
    /// With a server timelimit: how long a tie may run past it before the runner ends it.
    pub overtime: Duration,
    pub fraglimit: Option<u32>,
}

impl MatchSpec {
    /// The spec of a `PlayMatch` step.
    pub fn from_step(step: &Step) -> Option<MatchSpec> {
        match step {
            Step::PlayMatch {
                map,
                end,
                overtime,
                fraglimit,
                ..
            } => Some(MatchSpec {
                map: map.clone(),
                end: *end,
                overtime: overtime.std(),
                fraglimit: *fraglimit,
            }),
            _ => None,
        }
    }
}

/// How a match ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HowEnded {
    /// `Exit: Timelimit hit.`
    Timelimit,
    /// `Exit: Fraglimit hit.`
    Fraglimit,
    /// `Exit: Capturelimit hit.`
    Capturelimit,
    /// Another `Exit:` text.
    OtherExit(String),
    /// The runner ended it after the scenario's (non-whole-minute) duration.
    RunnerDuration,
    /// A tie kept it going past timelimit + overtime; the runner ended it.
    OvertimeExpired,
    /// The game restarted without an `Exit:` (someone else restarted it, or the server cycled).
    Restarted,
}

impl HowEnded {
    fn from_exit(r: &super::log::ExitReason) -> HowEnded {
        use super::log::ExitReason as R;
        match r {
            R::Timelimit => HowEnded::Timelimit,
            R::Fraglimit => HowEnded::Fraglimit,
            R::Capturelimit => HowEnded::Capturelimit,
            R::Other(s) => HowEnded::OtherExit(s.clone()),
        }
    }
}

/// A match that is being played.
#[derive(Debug, Clone, Serialize)]
pub struct LiveMatch {
    pub spec: MatchSpec,
    /// The `InitGame` generation of this match.
    pub generation: u64,
    pub map: Option<String>,
    /// When it went live (its `InitGame` was read).
    pub started: Stamp,
}

/// The result of one match, for the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct MatchOutcome {
    pub how_ended: HowEnded,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub duration_s: f64,
    pub map: Option<String>,
    pub end: MatchEnd,
    /// The server's timelimit passed with the top scores tied; play went on.
    pub sudden_death: bool,
    /// Final scores from the `score:` lines (only after an `Exit:`).
    pub scores: Vec<FinalScore>,
    /// Level time of the `Exit:` line (seconds since the map loaded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_level_time_s: Option<u32>,
}

impl MatchOutcome {
    /// The manifest's terms: how it ended, and a detail line where the kind alone says too little.
    pub fn ending(&self) -> (MatchEnding, Option<String>) {
        match &self.how_ended {
            HowEnded::Timelimit => (
                MatchEnding::Timelimit,
                self.sudden_death
                    .then(|| "Exit: Timelimit hit. (after sudden death broke a tie)".to_string()),
            ),
            HowEnded::Fraglimit => (MatchEnding::Fraglimit, None),
            HowEnded::Capturelimit => (MatchEnding::Capturelimit, None),
            HowEnded::OtherExit(s) => (MatchEnding::Aborted, Some(format!("Exit: {s}"))),
            HowEnded::RunnerDuration => (MatchEnding::Runner, None),
            HowEnded::OvertimeExpired => (
                MatchEnding::Overtime,
                Some("the top scores stayed tied past the timelimit plus overtime".into()),
            ),
            HowEnded::Restarted => (
                MatchEnding::Aborted,
                Some("the game restarted without an Exit (not by oa-run)".into()),
            ),
        }
    }

    /// Write start, end, map and ending into the match's manifest record.
    pub fn record_into(&self, rec: &mut MatchRecord) {
        let (ending, detail) = self.ending();
        rec.started_at = Some(Timestamp::from(self.started_at));
        rec.ended_at = Some(Timestamp::from(self.ended_at));
        rec.ended_by = Some(ending);
        rec.end_detail = detail;
        if self.map.is_some() {
            rec.map = self.map.clone();
        }
    }
}

/// What the end-of-match watch should do now (pure, so it can be tested without a server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndDecision {
    /// Wait, at most until this instant.
    WaitUntil(Instant),
    /// Runner-enforced duration reached.
    EndByRunner,
    /// Sudden death outlasted the overtime.
    EndOvertime,
}

pub(crate) fn decide(spec: &MatchSpec, started: Instant, now: Instant) -> EndDecision {
    match spec.end {
        MatchEnd::Runner { after } => {
            let deadline = started + after.std();
            if now >= deadline {
                EndDecision::EndByRunner
            } else {
                EndDecision::WaitUntil(deadline)
            }
        }
        MatchEnd::ServerTimelimit { minutes } => {
            let deadline = started + Duration::from_secs(minutes * 60) + spec.overtime;
            if now >= deadline {
                EndDecision::EndOvertime
            } else {
                EndDecision::WaitUntil(deadline)
            }
        }
    }
}

/// The runner's own clock may read a little less than the server's level time at `Exit:`.
const EXIT_CLOCK_SLACK: Duration = Duration::from_secs(2);

/// Whether an `Exit:` (already possible by the log's own account, see [`super::monitor`]) fits
/// what the runner knows: a timelimit exit only in a server-timed match and not before its
/// minutes have passed on the runner's clock (a runner-timed match is ended by the runner); a
/// fraglimit exit only with a fraglimit that `status` shows someone has reached. `top_score`:
/// the best score in a `status` asked after the line, if one was asked.
pub(crate) fn confirm_exit(
    spec: &MatchSpec,
    reason: &super::log::ExitReason,
    live_for: Duration,
    top_score: Option<i32>,
) -> std::result::Result<(), String> {
    use super::log::ExitReason as R;
    match (reason, spec.end) {
        (R::Timelimit, MatchEnd::ServerTimelimit { minutes }) => {
            let due = Duration::from_secs(minutes * 60).saturating_sub(EXIT_CLOCK_SLACK);
            if live_for < due {
                return Err(format!(
                    "only {:.1} s into a {minutes} min match",
                    live_for.as_secs_f64()
                ));
            }
            Ok(())
        }
        (R::Timelimit, MatchEnd::Runner { .. }) => {
            Err("this match is timed by oa-run, the server has no timelimit".into())
        }
        (R::Fraglimit, _) => {
            let Some(limit) = spec.fraglimit.filter(|f| *f > 0) else {
                return Err("this match has no fraglimit".into());
            };
            match top_score {
                Some(s) if i64::from(s) >= i64::from(limit) => Ok(()),
                Some(s) => Err(format!(
                    "`status` shows a best score of {s}, the fraglimit is {limit}"
                )),
                None => Err("`status` could not confirm the fraglimit".into()),
            }
        }
        (R::Capturelimit | R::Other(_), _) => Err("oa-run never sets this limit".into()),
    }
}

/// Whether `status` (and, when the name changed, the slot's `cl_guid` from `dumpuser`) shows
/// `victim` still in its slot: a bot by name, a human by IP and by name or guid.
pub(crate) fn same_occupant(
    victim: &super::roster::Player,
    st: &super::status::Status,
    guid: Option<&str>,
) -> std::result::Result<(), String> {
    let Some(row) = st.rows.iter().find(|r| r.slot == victim.slot) else {
        return Err(if st.tainted {
            "`status` was forged around this slot; cannot confirm who holds it".into()
        } else {
            "is empty now".into()
        });
    };
    if row.is_zombie() {
        return Err("is leaving already".into());
    }
    if victim.is_bot() {
        return if row.is_bot() && row.name == victim.name_raw {
            Ok(())
        } else {
            Err("holds a different client now".into())
        };
    }
    if victim.ip.is_none() || row.ip() != victim.ip {
        return Err("holds a client at another address now".into());
    }
    let same_guid = guid.is_some() && guid == victim.guid.as_deref();
    if row.name != victim.name_raw && !same_guid {
        return Err("holds a client with another name and guid now".into());
    }
    Ok(())
}

fn connect_slot(reply: &str) -> Option<u8> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"(?m)^ClientConnect: (\d+)\s*$").expect("static regex"));
    re.captures_iter(reply)
        .last()
        .and_then(|c| c[1].parse().ok())
        .filter(|s| *s < super::MAX_SLOTS)
}

impl Arena {
    async fn set(&self, cvar: Cvar, value: i64) -> Result<()> {
        self.rcon()
            .send(&RconCmd::set(cvar, value))
            .await
            .map(|_| ())
    }

    /// The server's timelimit in whole minutes (0 = none).
    pub async fn set_timelimit(&self, minutes: u32) -> Result<()> {
        self.set(Cvar::Timelimit, i64::from(minutes)).await
    }

    /// The fraglimit (0 = none).
    pub async fn set_fraglimit(&self, frags: u32) -> Result<()> {
        self.set(Cvar::Fraglimit, i64::from(frags)).await
    }

    /// Send a non-idempotent command once; if nothing came back, look in the log for its
    /// effect and send it one more time only if there is none.
    async fn send_once_checked(
        &self,
        cmd: &RconCmd,
        took_effect: impl Fn(&ArenaState) -> bool,
    ) -> Result<Option<RconReply>> {
        match self.rcon().send(cmd).await {
            Ok(r) => Ok(Some(r)),
            Err(ArenaError::NoReply { .. }) => {
                if self
                    .wait_until("the command's effect", EFFECT_WAIT, &took_effect)
                    .await
                    .is_ok()
                {
                    return Ok(None);
                }
                warn!(
                    command = cmd.text(),
                    "no reply and no effect in the log; sending it once more"
                );
                self.rcon().send(cmd).await.map(Some)
            }
            Err(e) => Err(e),
        }
    }

    /// Kick the player in `slot` (`clientkick`, never by name) and wait until it has left.
    pub async fn kick(&self, slot: u8) -> Result<()> {
        let before = self.roster();
        let Some(victim) = before.get(slot).cloned() else {
            return Err(ArenaError::Slot {
                slot,
                problem: "is empty; nobody to kick".into(),
            });
        };
        // Slots change hands: confirm with the server that the slot still holds this player
        // (its IP, and its name or cl_guid) before kicking whoever is there now.
        let reply = self.rcon().send(&RconCmd::status()).await?;
        let st = super::status::parse_status(&reply.text);
        let mut guid = None;
        if victim.is_human()
            && victim.guid.is_some()
            && st
                .rows
                .iter()
                .any(|r| r.slot == slot && r.name != victim.name_raw)
        {
            let d = self.rcon().send(&RconCmd::dumpuser(slot)?).await?;
            guid = super::status::parse_dumpuser(&d.text).remove("cl_guid");
        }
        if let Err(problem) = same_occupant(&victim, &st, guid.as_deref()) {
            warn!(slot, "not kicking: {problem}");
            return Err(ArenaError::Slot { slot, problem });
        }
        let gone = move |s: &ArenaState| {
            s.roster
                .get(slot)
                .is_none_or(|p| p.created_seq != victim.created_seq)
        };
        let reply = self
            .send_once_checked(&RconCmd::clientkick(slot)?, &gone)
            .await?;
        if let Some(r) = &reply
            && r.text.contains("is not active")
        {
            return Err(ArenaError::Slot {
                slot,
                problem: "is not active on the server".into(),
            });
        }
        self.wait_until(
            &format!("slot {slot} to leave after the kick"),
            ROSTER_WAIT,
            gone,
        )
        .await?;
        info!(slot, "kicked");
        Ok(())
    }

    /// Add one bot and return its slot.
    pub async fn add_bot(&self, name: &str, skill: u8) -> Result<u8> {
        let bot = BotName::new(name)?;
        let cmd = RconCmd::addbot(&bot, skill)?;
        let before: Vec<u8> = self.roster().bots().map(|p| p.slot).collect();
        let new_bot = |s: &ArenaState| s.roster.bots().any(|p| !before.contains(&p.slot));
        let reply = self.send_once_checked(&cmd, &new_bot).await?;
        if let Some(r) = &reply {
            if r.text.contains("Unable to add bot") {
                return Err(ArenaError::CommandFailed {
                    command: cmd.text().into(),
                    reply: "all player slots are in use (raise sv_maxclients)".into(),
                });
            }
            if r.text.contains("not defined") {
                return Err(ArenaError::CommandFailed {
                    command: cmd.text().into(),
                    reply: format!("the server does not know the bot `{}`", bot.as_str()),
                });
            }
        }
        let slot = reply.as_ref().and_then(|r| connect_slot(&r.text));
        let st = self
            .wait_until(
                &format!("bot {} to join", bot.as_str()),
                ROSTER_WAIT,
                |s| match slot {
                    Some(slot) => s.roster.get(slot).is_some_and(|p| p.is_bot()),
                    None => new_bot(s),
                },
            )
            .await?;
        let slot = slot
            .or_else(|| {
                st.roster
                    .bots()
                    .map(|p| p.slot)
                    .find(|s| !before.contains(s))
            })
            .ok_or_else(|| ArenaError::Unexpected("the new bot's slot is unknown".into()))?;
        info!(slot, bot = bot.as_str(), skill, "bot added");
        Ok(slot)
    }

    /// Kick the bot in `slot` (refuses to kick a human this way).
    pub async fn remove_bot(&self, slot: u8) -> Result<()> {
        match self.roster().get(slot) {
            Some(p) if p.is_bot() => self.kick(slot).await,
            Some(_) => Err(ArenaError::Slot {
                slot,
                problem: "holds a human, not a bot".into(),
            }),
            None => Err(ArenaError::Slot {
                slot,
                problem: "is empty".into(),
            }),
        }
    }

    /// Remove every bot (`kickbots`) and wait until none is left.
    pub async fn kick_bots(&self) -> Result<()> {
        if self.roster().bots().next().is_none() {
            return Ok(());
        }
        self.rcon().send(&RconCmd::kickbots()).await?;
        self.wait_until("the bots to leave", ROSTER_WAIT, |s| {
            s.roster.bots().next().is_none()
        })
        .await?;
        Ok(())
    }

    /// Replace the bots by `names` (validated OpenArena bot names) at `skill`; returns their
    /// slots in order.
    pub async fn set_bots(&self, names: &[String], skill: u8) -> Result<Vec<u8>> {
        // Validate everything before touching the server.
        for n in names {
            RconCmd::addbot(&BotName::new(n)?, skill)?;
        }
        self.kick_bots().await?;
        let mut slots = Vec::with_capacity(names.len());
        for n in names {
            slots.push(self.add_bot(n, skill).await?);
        }
        Ok(slots)
    }

    /// Restart the game with `cmd` (`map_restart 0` or `map X`) and wait for the new
    /// generation's phase (live or warmup).
    async fn restart_game(&self, cmd: RconCmd, timeout: Duration) -> Result<ArenaState> {
        let g0 = self.state().game.generation;
        let newer = move |s: &ArenaState| s.game.generation > g0;
        let reply = self.send_once_checked(&cmd, newer).await?;
        // The game writes (and flushes) its log before the reply is sent, so once the reader has
        // reached the log's present size, the newest generation is ours — not an intermission
        // that happened to advance by itself just before.
        let written = std::fs::metadata(&self.info.games_log).map_or(0, |m| m.len());
        let restarts = self.state().log_restarts;
        if let Some(r) = &reply
            && r.text.contains("Can't find map")
        {
            return Err(ArenaError::CommandFailed {
                command: cmd.text().into(),
                reply: r
                    .text
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .into(),
            });
        }
        self.wait_until("the game to restart", timeout, move |s| {
            (s.log_offset >= written || s.log_restarts != restarts)
                && s.game.generation > g0
                && matches!(s.game.phase, Phase::Live | Phase::Warmup)
        })
        .await
    }

    /// Hold the server in warmup (between matches, and to end a match early): no scoring, no
    /// countdown to a match of its own. Returns the stamp of the warmup's `InitGame`.
    pub async fn hold(&self) -> Result<Stamp> {
        self.arm_hold().await?;
        self.restart_into_hold().await
    }

    /// Make the next game start in held warmup. `g_doWarmup` is read only at `InitGame` and
    /// `g_warmup` only during warmup, so setting them during a live match changes nothing until
    /// the next restart — which is then a single command, on time.
    async fn arm_hold(&self) -> Result<()> {
        // A prepared match is undone by this.
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        // g_warmup only needs setting once (a launched server starts with it).
        if !self.hold_warmup_set.load(Ordering::Relaxed) {
            self.set(Cvar::Warmup, HOLD_WARMUP_SECS).await?;
            self.hold_warmup_set.store(true, Ordering::Relaxed);
        }
        self.set(Cvar::DoWarmup, 1).await
    }

    async fn restart_into_hold(&self) -> Result<Stamp> {
        let st = self
            .restart_game(RconCmd::map_restart(), Duration::from_secs(15))
            .await?;
        if st.game.phase != Phase::Warmup {
            warn!(phase = ?st.game.phase, "the server did not come back in warmup");
        }
        st.game
            .init
            .ok_or_else(|| ArenaError::Unexpected("restart without an InitGame stamp".into()))
    }

    /// Set the match's limits and switch warmup off without restarting anything yet (the
    /// running game is unaffected: `g_doWarmup` is read at the next `InitGame`, and a held
    /// warmup ignores the limits). Calling this early — e.g. before starting the recordings —
    /// leaves a single rcon command for [`Arena::start_match`], so the start is not delayed by the
    /// server's rate limit.
    pub async fn prepare_match(&self, spec: &MatchSpec) -> Result<()> {
        if let Some(m) = &spec.map {
            MapName::new(m)?;
        }
        self.set(Cvar::Fraglimit, i64::from(spec.fraglimit.unwrap_or(0)))
            .await?;
        let minutes = match spec.end {
            MatchEnd::ServerTimelimit { minutes } => minutes as i64,
            // The runner enforces the duration; the server must not end it on its own.
            MatchEnd::Runner { .. } => 0,
        };
        self.set(Cvar::Timelimit, minutes).await?;
        self.set(Cvar::DoWarmup, 0).await?;
        *self.prepared.lock().unwrap_or_else(|p| p.into_inner()) = Some(spec.clone());
        Ok(())
    }

    /// (Re)start the game as a live match ([`Arena::prepare_match`] first unless it was already
    /// called with this spec); returns once it is live.
    pub async fn start_match(&self, spec: &MatchSpec) -> Result<LiveMatch> {
        let map = spec.map.as_deref().map(MapName::new).transpose()?;
        let prepared = self
            .prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if prepared.as_ref() != Some(spec) {
            self.prepare_match(spec).await?;
            self.prepared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
        }
        // `map` makes every human reload; only use it when the map really changes.
        let current = self.state().game.map;
        let (cmd, timeout) = match &map {
            Some(m) if current.as_deref() != Some(m.as_str()) => {
                (RconCmd::map(m), Duration::from_secs(60))
            }
            _ => (RconCmd::map_restart(), Duration::from_secs(15)),
        };
        let st = self.restart_game(cmd, timeout).await?;
        if st.game.phase != Phase::Live {
            return Err(ArenaError::Unexpected(format!(
                "the game restarted in {:?}, not as a live match, although g_doWarmup is 0",
                st.game.phase
            )));
        }
        let started = st
            .game
            .live
            .ok_or_else(|| ArenaError::Unexpected("live game without a start stamp".into()))?;
        // The map name comes from the game log: escaped, and a word when it is missing.
        let map = st
            .game
            .map
            .as_deref()
            .map_or(std::borrow::Cow::Borrowed("unknown"), crate::term::escape);
        info!(generation = st.game.generation, map = %map, "match is live");
        // From now on, any restart (the runner ending the match, or the intermission ending by
        // itself when no human is connected) leads to held warmup, not to another live game.
        self.arm_hold().await?;
        Ok(LiveMatch {
            spec: spec.clone(),
            generation: st.game.generation,
            map: st.game.map.clone(),
            started,
        })
    }

    /// Wait for the match to end (or end it), then leave the server ready for the next one.
    pub async fn await_end(&self, m: &LiveMatch) -> Result<MatchOutcome> {
        let mut rx = self.watch();
        let expected_end = match m.spec.end {
            MatchEnd::ServerTimelimit { minutes } => {
                Some(m.started.instant + Duration::from_secs(minutes * 60))
            }
            MatchEnd::Runner { .. } => None,
        };
        let outcome = |how: HowEnded, ended: Stamp, sudden: bool, scores, level| MatchOutcome {
            how_ended: how,
            started_at: m.started.at,
            ended_at: ended.at,
            duration_s: ended
                .instant
                .saturating_duration_since(m.started.instant)
                .as_secs_f64(),
            map: m.map.clone(),
            end: m.spec.end,
            sudden_death: sudden,
            scores,
            exit_level_time_s: level,
        };
        // An Exit that the runner's clock or `status` contradicts (a forged line): ignored.
        let mut refuted: Option<Instant> = None;
        loop {
            let st = rx.borrow_and_update().clone();
            if let Some(status) = st.server_exit {
                return Err(ArenaError::ServerExited {
                    during: "a match",
                    status,
                    tail: String::new(),
                });
            }
            if let Some(exit) = st
                .game
                .exit
                .as_ref()
                .filter(|e| e.generation == m.generation)
                .filter(|e| refuted != Some(e.stamp.instant))
            {
                let top = if exit.reason == super::log::ExitReason::Fraglimit {
                    self.top_score().await
                } else {
                    None
                };
                let live_for = exit
                    .stamp
                    .instant
                    .saturating_duration_since(m.started.instant);
                if let Err(why) = confirm_exit(&m.spec, &exit.reason, live_for, top) {
                    warn!("games.log says the match ended, but {why}; a forged line, ignored");
                    refuted = Some(exit.stamp.instant);
                    continue;
                }
                // Score lines follow in the same frame; let the reader catch up.
                let wait_until = exit.stamp.instant + SCORES_WAIT;
                tokio::time::sleep_until(wait_until.into()).await;
                let st = self.state();
                let exit = st
                    .game
                    .exit
                    .clone()
                    .filter(|e| e.generation == m.generation)
                    .unwrap_or_else(|| exit.clone());
                let sudden = expected_end.is_some_and(|t| exit.stamp.instant > t + EXIT_SLACK);
                let out = outcome(
                    HowEnded::from_exit(&exit.reason),
                    exit.stamp,
                    sudden,
                    exit.scores.clone(),
                    exit.stamp.level_time_s,
                );
                info!(how = ?out.how_ended, duration_s = out.duration_s, "match ended");
                return Ok(out);
            }
            if st.game.generation != m.generation {
                let stamp = st.game.init.unwrap_or(m.started);
                warn!("the game restarted during the match without an Exit");
                return Ok(outcome(HowEnded::Restarted, stamp, false, Vec::new(), None));
            }
            match decide(&m.spec, m.started.instant, Instant::now()) {
                EndDecision::WaitUntil(t) => {
                    tokio::select! {
                        r = rx.changed() => { if r.is_err() { return Err(ArenaError::MonitorGone); } }
                        _ = tokio::time::sleep_until(t.into()) => {}
                    }
                }
                d @ (EndDecision::EndByRunner | EndDecision::EndOvertime) => {
                    let how = if d == EndDecision::EndByRunner {
                        HowEnded::RunnerDuration
                    } else {
                        warn!("sudden death outlasted the overtime; ending the match");
                        HowEnded::OvertimeExpired
                    };
                    let ended = self.restart_into_hold().await?;
                    let out = outcome(
                        how.clone(),
                        ended,
                        how == HowEnded::OvertimeExpired,
                        Vec::new(),
                        None,
                    );
                    info!(how = ?out.how_ended, duration_s = out.duration_s, "match ended by the runner");
                    return Ok(out);
                }
            }
        }
    }

    /// The best score of a player on the server now, from `status`.
    async fn top_score(&self) -> Option<i32> {
        let reply = self.rcon().send(&RconCmd::status()).await.ok()?;
        let st = super::status::parse_status(&reply.text);
        st.active().map(|r| r.score).max()
    }

    /// Start a match and return when it has ended.
    pub async fn play_match(&self, spec: &MatchSpec) -> Result<MatchOutcome> {
        let live = self.start_match(spec).await?;
        self.await_end(&live).await
    }

    /// Wait for the next event matching `f` (helper for executors that follow events).
    pub async fn next_event(
        &self,
        rx: &mut tokio::sync::broadcast::Receiver<ArenaEvent>,
        timeout: Duration,
        mut f: impl FnMut(&ArenaEvent) -> bool,
    ) -> Result<ArenaEvent> {
        let fut = async {
            loop {
                match rx.recv().await {
                    Ok(e) if f(&e) => return Ok(e),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "event receiver lagged");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return Err(ArenaError::MonitorGone);
                    }
                }
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| ArenaError::timeout("a server event", timeout))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Duration as D;

    fn spec(end: MatchEnd) -> MatchSpec {
        MatchSpec {
            map: None,
            end,
            overtime: Duration::from_secs(30),
            fraglimit: None,
        }
    }

    #[test]
    fn runner_duration_is_enforced() {
        let s = spec(MatchEnd::Runner {
            after: D::from_secs(20),
        });
        let t0 = Instant::now();
        assert_eq!(
            decide(&s, t0, t0 + Duration::from_secs(5)),
            EndDecision::WaitUntil(t0 + Duration::from_secs(20))
        );
        assert_eq!(
            decide(&s, t0, t0 + Duration::from_secs(20)),
            EndDecision::EndByRunner
        );
    }

    #[test]
    fn sudden_death_is_ended_after_the_overtime() {
        let s = spec(MatchEnd::ServerTimelimit { minutes: 2 });
        let t0 = Instant::now();
        // Before timelimit + overtime the server's own Exit is awaited (a tie blocks it).
        assert_eq!(
            decide(&s, t0, t0 + Duration::from_secs(121)),
            EndDecision::WaitUntil(t0 + Duration::from_secs(150))
        );
        assert_eq!(
            decide(&s, t0, t0 + Duration::from_secs(150)),
            EndDecision::EndOvertime
        );
    }

    #[test]
    fn addbot_reply_gives_the_slot() {
        let reply = "loaded skill 1 from bots/default_c.c\nClientUserinfoChanged: 4 n\\Sarge\\skill\\ 2.00\\id\\\nClientConnect: 4\nbroadcast: print \"Sarge^7 connected\\n\"\nClientBegin: 4\n";
        assert_eq!(connect_slot(reply), Some(4));
        assert_eq!(
            connect_slot("Unable to add bot.  All player slots are in use.\n"),
            None
        );
        assert_eq!(connect_slot("ClientConnect: 99\n"), None);
    }

    #[test]
    fn outcomes_fill_the_manifest_record() {
        let now = Utc::now();
        let mut out = MatchOutcome {
            how_ended: HowEnded::OvertimeExpired,
            started_at: now,
            ended_at: now + chrono::Duration::seconds(150),
            duration_s: 150.0,
            map: Some("oa_dm2".into()),
            end: MatchEnd::ServerTimelimit { minutes: 2 },
            sudden_death: true,
            scores: vec![],
            exit_level_time_s: None,
        };
        let mut rec = MatchRecord {
            number: 1,
            repeat: 1,
            practice: false,
            map: None,
            started_at: None,
            ended_at: None,
            ended_by: None,
            end_detail: None,
            latency: vec![],
            shaping: None,
            stats: None,
            replay_of: None,
            completed_in: None,
            alignment_spread_ms: None,
            alignment_error_ms: None,
        };
        out.record_into(&mut rec);
        assert_eq!(rec.ended_by, Some(MatchEnding::Overtime));
        assert_eq!(rec.map.as_deref(), Some("oa_dm2"));
        assert_eq!(
            rec.ended_at.unwrap().millis_since(&rec.started_at.unwrap()),
            150_000
        );
        out.how_ended = HowEnded::RunnerDuration;
        assert_eq!(out.ending(), (MatchEnding::Runner, None));
        out.how_ended = HowEnded::Restarted;
        assert_eq!(out.ending().0, MatchEnding::Aborted);
    }

    #[test]
    fn spec_from_a_plan_step() {
        let step = Step::PlayMatch {
            match_no: 1,
            repeat: 1,
            practice: false,
            map: Some("oa_dm2".into()),
            end: MatchEnd::Runner {
                after: D::from_secs(20),
            },
            overtime: D::from_secs(60),
            fraglimit: Some(5),
        };
        let s = MatchSpec::from_step(&step).unwrap();
        assert_eq!(s.map.as_deref(), Some("oa_dm2"));
        assert_eq!(s.overtime, Duration::from_secs(60));
        assert_eq!(s.fraglimit, Some(5));
        assert!(MatchSpec::from_step(&Step::Preflight { checks: vec![] }).is_none());
    }

    #[test]
    fn an_exit_must_fit_the_runners_clock_and_status() {
        use crate::arena::log::ExitReason as R;
        let timed = spec(MatchEnd::ServerTimelimit { minutes: 1 });
        let s = Duration::from_secs;
        assert!(confirm_exit(&timed, &R::Timelimit, s(60), None).is_ok());
        assert!(
            confirm_exit(&timed, &R::Timelimit, s(59), None).is_ok(),
            "clock slack"
        );
        assert!(confirm_exit(&timed, &R::Timelimit, s(3), None).is_err());
        let runner = spec(MatchEnd::Runner {
            after: D::from_secs(30),
        });
        assert!(confirm_exit(&runner, &R::Timelimit, s(3), None).is_err());
        assert!(confirm_exit(&runner, &R::Timelimit, s(3000), None).is_err());
        assert!(
            confirm_exit(&runner, &R::Fraglimit, s(10), Some(50)).is_err(),
            "no fraglimit"
        );
        let frags = MatchSpec {
            fraglimit: Some(5),
            ..runner
        };
        assert!(confirm_exit(&frags, &R::Fraglimit, s(10), Some(5)).is_ok());
        assert!(confirm_exit(&frags, &R::Fraglimit, s(10), Some(4)).is_err());
        assert!(confirm_exit(&frags, &R::Fraglimit, s(10), None).is_err());
        assert!(confirm_exit(&frags, &R::Capturelimit, s(10), Some(9)).is_err());
    }

    #[test]
    fn a_kick_only_hits_the_player_it_was_meant_for() {
        use crate::arena::roster::{Player, PlayerKind};
        use crate::arena::status::parse_status;
        let mut ann = Player::new(4, PlayerKind::Human, "Ann", Utc::now(), 1);
        ann.ip = Some("10.77.0.12".parse().unwrap());
        ann.guid = Some("AA908E01A59664516FE43D2BA1DAA2BD".into());
        let row = |name: &str, ping: &str, ip: &str| {
            parse_status(&format!(
                "cl score ping name address rate\n 4     0 {ping} {name:<16}^7{ip:<39} 99999\n"
            ))
        };
        assert!(same_occupant(&ann, &row("Ann", "   0", "10.77.0.12"), None).is_ok());
        assert!(same_occupant(&ann, &row("Ann", "   0", "10.77.0.13"), None).is_err());
        assert!(same_occupant(&ann, &row("Ann", " ZMB", "10.77.0.12"), None).is_err());
        assert!(
            same_occupant(
                &ann,
                &parse_status("cl score ping name address rate\n"),
                None
            )
            .is_err()
        );
        let renamed = row("Anna", "   0", "10.77.0.12");
        assert!(same_occupant(&ann, &renamed, None).is_err());
        assert!(same_occupant(&ann, &renamed, Some("0123456789ABCDEF0123456789ABCDEF")).is_err());
        assert!(same_occupant(&ann, &renamed, Some("AA908E01A59664516FE43D2BA1DAA2BD")).is_ok());
        let sarge = Player::new(4, PlayerKind::Bot, "Sarge", Utc::now(), 1);
        assert!(same_occupant(&sarge, &row("Sarge", "   0", "bot"), None).is_ok());
        assert!(same_occupant(&sarge, &row("Grunt", "   0", "bot"), None).is_err());
    }
}
