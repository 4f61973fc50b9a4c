//! The run's state: a pure fold of the [`RunEvent`] stream (no I/O, no clock: every time comes
//! from the event's envelope), in the style of the arena's `Tracker`.
//!
//! It holds the manifest (what is written to `manifest.json`) and the live view (who is in,
//! whose OBS is up, whose recording runs, the step and match in progress) that the progress
//! display, the roster table and the live feed show.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::events::{Envelope, RecordingPhase, RunEvent};
use crate::manifest::{
    Event, EventKind, Kick, Manifest, PlayerRecord, RatingRecord, RatingStatus, RecordingRecord,
    RunStatus, Timestamp,
};
use crate::obs::health::HealthIssue;

/// Whether a player is in the study.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    In,
    Left,
    Kicked,
}

/// A player's OBS as the roster shows it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ObsStatus {
    NotConnected,
    Connected,
    Failed,
}

/// A player's recording right now.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RecordingState {
    Idle,
    Starting,
    Recording,
    Stopped,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct LivePlayer {
    pub player: u32,
    pub label: String,
    pub slot: u8,
    pub ip: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seat: Option<String>,
    /// As the game reported it: untrusted text, to be shown as text.
    pub name: String,
    pub presence: Presence,
    pub obs: ObsStatus,
    pub recording: RecordingState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_path: Option<String>,
    /// Added latency planned for the current (or next) match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_latency_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct StepNow {
    pub index: u32,
    pub kind: String,
    pub description: String,
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub match_no: Option<u32>,
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct MatchNow {
    pub match_no: u32,
    /// Set when play began (the match clock runs from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    pub planned_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<String>,
    /// Whether the latencies were really applied.
    pub latency_applied: bool,
}

/// What is happening now (the live view).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Live {
    pub study: String,
    pub total_steps: u32,
    pub total_matches: u32,
    pub humans_needed: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepNow>,
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub current_match: Option<MatchNow>,
    pub players: Vec<LivePlayer>,
    pub bots: Vec<super::events::BotSlot>,
    /// The last event folded in.
    pub seq: u64,
    pub finished: bool,
}

/// The whole state of a run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct RunState {
    pub live: Live,
    pub manifest: Manifest,
}

impl RunState {
    /// The state before any event: the manifest as compiled from the plan.
    pub fn new(manifest: Manifest) -> Self {
        RunState {
            live: Live {
                study: manifest.scenario.resolved.name.clone(),
                total_steps: 0,
                total_matches: manifest.matches.len() as u32,
                humans_needed: 0,
                step: None,
                current_match: None,
                players: Vec::new(),
                bots: Vec::new(),
                seq: 0,
                finished: false,
            },
            manifest,
        }
    }

    pub fn player(&self, index: u32) -> Option<&LivePlayer> {
        self.live.players.iter().find(|p| p.player == index)
    }

    fn player_mut(&mut self, index: u32) -> Option<&mut LivePlayer> {
        self.live.players.iter_mut().find(|p| p.player == index)
    }

    /// The match the run is in (from the step in progress), 0 before the first match.
    pub fn current_match_no(&self) -> u32 {
        self.live
            .current_match
            .as_ref()
            .map(|m| m.match_no)
            .unwrap_or(0)
    }

    fn planned_latency(&self, player: u32, match_no: u32) -> Option<u64> {
        self.manifest
            .matches
            .iter()
            .find(|m| m.number == match_no)
            .and_then(|m| m.latency.iter().find(|l| l.player == player))
            .map(|l| l.latency_ms)
    }

    /// Fold one event in. Returns the line it adds to the manifest's event log, if any (the
    /// console prints the same line, so each fact is told once, in the same words).
    pub fn apply(&mut self, env: &Envelope) -> Option<Event> {
        self.live.seq = env.seq;
        let at = env.at;
        let logged = describe(env, self);
        let m = &mut self.manifest;
        match &env.event {
            RunEvent::RunStarted {
                steps,
                matches,
                humans,
                ..
            } => {
                self.live.total_steps = *steps;
                self.live.total_matches = *matches;
                self.live.humans_needed = *humans;
            }
            RunEvent::StepStarted {
                index,
                kind,
                match_no,
                description,
                duration_s,
            } => {
                m.steps.push(crate::manifest::StepRecord {
                    index: *index,
                    kind: kind.clone(),
                    match_no: *match_no,
                    started_at: at,
                    ended_at: None,
                    error: None,
                });
                self.live.step = Some(StepNow {
                    index: *index,
                    kind: kind.clone(),
                    description: description.clone(),
                    match_no: *match_no,
                    started_at: at,
                    duration_s: *duration_s,
                });
                if let Some(n) = match_no
                    && self.live.current_match.as_ref().map(|c| c.match_no) != Some(*n)
                {
                    self.live.current_match = Some(MatchNow {
                        match_no: *n,
                        started_at: None,
                        ended_at: None,
                        planned_s: 0.0,
                        map: None,
                        latency_applied: false,
                    });
                    for i in 0..self.live.players.len() {
                        let p = self.live.players[i].player;
                        let l = self.planned_latency(p, *n);
                        self.live.players[i].planned_latency_ms = l;
                    }
                }
            }
            RunEvent::StepFinished { index, error } => {
                if let Some(s) = m.steps.iter_mut().rev().find(|s| s.index == *index) {
                    s.ended_at = Some(at);
                    s.error = error.clone();
                }
            }
            RunEvent::ServerStarted {
                stderr_log,
                games_log,
                ..
            } => {
                if stderr_log.is_some() {
                    m.logs.server_stderr = stderr_log.clone();
                }
                if games_log.is_some() {
                    m.logs.server_games_log = games_log.clone();
                }
            }
            RunEvent::PlayerJoined {
                player,
                label,
                slot,
                ip,
                seat,
                name,
                name_raw,
                obs_port,
            } => {
                let mut rec = PlayerRecord::new(*player, label.clone(), *obs_port);
                rec.seat = seat.clone();
                rec.ip = Some(*ip);
                rec.slot = Some(*slot as u32);
                rec.name_raw = Some(name_raw.clone());
                rec.name_clean = Some(name.clone());
                rec.joined_at = Some(at);
                rec.obs.host = Some(ip.to_string());
                // A seat's OBS may have connected before its player arrived: keep that.
                if let Some(old) = m.players.iter().find(|p| p.index == *player)
                    && old.obs.connected_at.is_some()
                {
                    rec.obs = old.obs.clone();
                }
                let obs_up = rec.obs.connected_at.is_some();
                m.add_player(rec);
                let live = LivePlayer {
                    player: *player,
                    label: label.clone(),
                    slot: *slot,
                    ip: *ip,
                    seat: seat.clone(),
                    name: name_raw.clone(),
                    presence: Presence::In,
                    obs: if obs_up {
                        ObsStatus::Connected
                    } else {
                        ObsStatus::NotConnected
                    },
                    recording: RecordingState::Idle,
                    recording_path: None,
                    planned_latency_ms: None,
                };
                self.live.players.retain(|p| p.player != *player);
                self.live.players.push(live);
                self.live.players.sort_by_key(|p| p.player);
                let n = self.current_match_no().max(1);
                let l = self.planned_latency(*player, n);
                if let Some(p) = self.player_mut(*player) {
                    p.planned_latency_ms = l;
                }
            }
            RunEvent::PlayerLeft { player, .. } => {
                if let Some(p) = m.player_mut(*player) {
                    p.left_at = Some(at);
                }
                if let Some(p) = self.player_mut(*player) {
                    p.presence = Presence::Left;
                    if p.recording == RecordingState::Recording {
                        p.recording = RecordingState::Stopped;
                    }
                }
            }
            RunEvent::PlayerKicked { player, reason, .. } => {
                if let Some(p) = m.player_mut(*player) {
                    p.kicked = Some(Kick {
                        at,
                        reason: reason.clone(),
                    });
                    p.left_at.get_or_insert(at);
                }
                if let Some(p) = self.player_mut(*player) {
                    p.presence = Presence::Kicked;
                }
            }
            RunEvent::BotsSet { bots, .. } => self.live.bots = bots.clone(),
            RunEvent::ObsConnected { player, obs, .. } => {
                match m.player_mut(*player) {
                    Some(rec) => rec.obs = obs.clone(),
                    // A seat's OBS before its player joined: keep it for the join.
                    None => {
                        let mut rec = PlayerRecord::new(*player, String::new(), obs.port);
                        rec.obs = obs.clone();
                        m.players.push(rec);
                        m.players.sort_by_key(|p| p.index);
                    }
                }
                if let Some(p) = self.player_mut(*player) {
                    p.obs = ObsStatus::Connected;
                }
            }
            RunEvent::ObsFailed { player, error } => {
                if let Some(rec) = m.player_mut(*player) {
                    rec.obs.error = Some(error.clone());
                }
                if let Some(p) = self.player_mut(*player) {
                    p.obs = ObsStatus::Failed;
                }
            }
            RunEvent::LatencySet { match_no, shaping } => {
                if let Some(r) = m.match_mut(*match_no) {
                    r.shaping = Some(shaping.clone());
                }
                if let Some(c) = self.live.current_match.as_mut()
                    && c.match_no == *match_no
                {
                    c.latency_applied = shaping.applied;
                }
            }
            RunEvent::LatencyMeasured {
                match_no,
                player,
                measured,
            } => {
                if let Some(l) = m
                    .match_mut(*match_no)
                    .and_then(|r| r.latency.iter_mut().find(|l| l.player == *player))
                {
                    l.measured = Some(*measured);
                }
            }
            RunEvent::LatencyFailed { match_no, error } => {
                if let Some(r) = m.match_mut(*match_no) {
                    r.shaping = Some(crate::manifest::ShapingRecord {
                        applied: false,
                        at: Some(at),
                        config: serde_json::Value::Null,
                        error: Some(error.clone()),
                    });
                }
            }
            RunEvent::RecordingPlanned {
                player,
                match_no,
                name,
            } => {
                m.add_recording(RecordingRecord::planned(*player, *match_no, name.clone()));
                if let Some(p) = self.player_mut(*player) {
                    p.recording = RecordingState::Starting;
                    p.recording_path = None;
                }
            }
            RunEvent::RecordingStarted {
                player,
                match_no,
                record,
            } => {
                m.add_recording(record.clone());
                if let Some(p) = self.player_mut(*player) {
                    p.recording = RecordingState::Recording;
                    p.recording_path = record.path.clone();
                }
                let _ = match_no;
            }
            RunEvent::RecordingStopped {
                player,
                match_no,
                record,
            } => {
                // The stop report carries the whole recording as OBS reported it; what oa-run
                // learnt while it ran stays: a start error, the alignment (sampled at the
                // match's edges), health notes and frame counts.
                let old = m.recording_mut(*player, *match_no).map(|r| {
                    (
                        (
                            r.error.take(),
                            std::mem::take(&mut r.health),
                            r.frames.take(),
                        ),
                        r.match_start_offset_ms,
                        r.match_end_offset_ms,
                        r.timeline_started_at,
                        r.alignment.take(),
                    )
                });
                let rec = m.add_recording(record.clone());
                if let Some(((start_error, health, frames), start, end, began, alignment)) = old {
                    if start_error.is_some() {
                        rec.error = start_error;
                    }
                    rec.health = health;
                    if rec.frames.is_none() {
                        rec.frames = frames;
                    }
                    rec.match_start_offset_ms = rec.match_start_offset_ms.or(start);
                    rec.match_end_offset_ms = rec.match_end_offset_ms.or(end);
                    rec.timeline_started_at = rec.timeline_started_at.or(began);
                    if rec.alignment.is_none() {
                        rec.alignment = alignment;
                    }
                }
                let failed = rec.error.is_some();
                if let Some(p) = self.player_mut(*player) {
                    p.recording = if failed {
                        RecordingState::Failed
                    } else {
                        RecordingState::Stopped
                    };
                    if record.path.is_some() {
                        p.recording_path = record.path.clone();
                    }
                }
            }
            RunEvent::RecordingFailed {
                player,
                match_no,
                phase,
                error,
            } => {
                if let Some(r) = m.recording_mut(*player, *match_no) {
                    if *phase == RecordingPhase::Stop && r.stopped_at.is_none() {
                        r.stopped_at = Some(at);
                    }
                    r.error.get_or_insert_with(|| error.clone());
                }
                if let Some(p) = self.player_mut(*player) {
                    p.recording = RecordingState::Failed;
                }
            }
            RunEvent::MatchStarted {
                match_no,
                map,
                planned_s,
            } => {
                if let Some(r) = m.match_mut(*match_no) {
                    r.started_at = Some(at);
                    if map.is_some() {
                        r.map = map.clone();
                    }
                }
                let applied = self
                    .live
                    .current_match
                    .as_ref()
                    .is_some_and(|c| c.match_no == *match_no && c.latency_applied);
                self.live.current_match = Some(MatchNow {
                    match_no: *match_no,
                    started_at: Some(at),
                    ended_at: None,
                    planned_s: *planned_s,
                    map: map.clone(),
                    latency_applied: applied,
                });
            }
            RunEvent::MatchEnded {
                match_no,
                started_at,
                ended_at,
                ended_by,
                detail,
                map,
                ..
            } => {
                if let Some(r) = m.match_mut(*match_no) {
                    r.started_at = Some(*started_at);
                    r.ended_at = Some(*ended_at);
                    r.ended_by = Some(*ended_by);
                    r.end_detail = detail.clone();
                    if map.is_some() {
                        r.map = map.clone();
                    }
                }
                if let Some(c) = self.live.current_match.as_mut()
                    && c.match_no == *match_no
                {
                    c.ended_at = Some(*ended_at);
                }
            }
            RunEvent::RunFinished { status } => {
                // A questionnaire still open when the run stopped got no more answers.
                for r in m.ratings.iter_mut() {
                    if r.status == RatingStatus::Waiting {
                        r.status = RatingStatus::Missing;
                    }
                }
                if status.is_final() && m.ended_at.is_none() {
                    m.ended_at = Some(at);
                }
                m.status = status.clone();
                self.live.finished = true;
                for p in &mut self.live.players {
                    if p.recording == RecordingState::Recording {
                        p.recording = RecordingState::Stopped;
                    }
                }
            }
            RunEvent::RecordingSampled {
                player,
                match_no,
                edge,
                sample,
                error,
            } => {
                if let Some(r) = m.recording_mut(*player, *match_no) {
                    match (sample, error) {
                        (Some(s), _) => {
                            crate::align::apply_sample(r, *edge, *s);
                        }
                        (None, e) => {
                            crate::align::apply_sample_error(
                                r,
                                *edge,
                                e.as_deref().unwrap_or("no answer"),
                            );
                        }
                    }
                }
                if let Some(mr) = m.matches.iter_mut().find(|x| x.number == *match_no) {
                    crate::align::match_spread(mr, &m.recordings);
                }
            }
            RunEvent::WebhookDelivery { record } => m.notifications.push(record.clone()),
            RunEvent::Resumed { from } => {
                for x in m.matches.iter_mut() {
                    if from.completed_matches.contains(&x.number) {
                        x.completed_in = Some(from.run_id.clone());
                    }
                }
                m.resumed_from = Some(from.clone());
            }
            RunEvent::ObsHealth {
                player,
                match_no,
                issue,
            } => {
                if let Some(r) = m.recording_mut(*player, *match_no) {
                    r.health.push(crate::manifest::HealthNote {
                        at,
                        issue: issue.clone(),
                    });
                }
                if let Some(p) = self.player_mut(*player) {
                    match issue {
                        HealthIssue::Disconnected { .. } => p.obs = ObsStatus::NotConnected,
                        HealthIssue::Reconnected { .. } => p.obs = ObsStatus::Connected,
                        HealthIssue::Lost { .. } | HealthIssue::Exiting => {
                            p.obs = ObsStatus::Failed
                        }
                        _ => {}
                    }
                    if issue.loses_recording() {
                        p.recording = RecordingState::Failed;
                    }
                }
            }
            RunEvent::RecordingFrames {
                player,
                match_no,
                frames,
            } => {
                if let Some(r) = m.recording_mut(*player, *match_no) {
                    r.frames = Some(frames.clone());
                }
            }
            RunEvent::MatchStats { match_no, stats } => {
                if let Some(r) = m.match_mut(*match_no) {
                    r.stats = Some(stats.clone());
                }
            }
            RunEvent::MatchReplay { of, number } => {
                if let Some(orig) = m.matches.iter().find(|x| x.number == *of).cloned() {
                    m.matches.push(crate::manifest::MatchRecord {
                        number: *number,
                        started_at: None,
                        ended_at: None,
                        ended_by: None,
                        end_detail: None,
                        shaping: None,
                        replay_of: Some(*of),
                        ..orig
                    });
                }
                self.live.total_matches += 1;
            }
            RunEvent::QuestionnaireOpened {
                match_no, players, ..
            } => {
                for &player in players {
                    // A replayed match is asked again under its own number; one record each.
                    if !m
                        .ratings
                        .iter()
                        .any(|r| r.match_no == *match_no && r.player == player)
                    {
                        m.ratings.push(RatingRecord {
                            match_no: *match_no,
                            player,
                            status: RatingStatus::Waiting,
                            opened_at: at,
                            answered_at: None,
                            answers: Default::default(),
                        });
                    }
                }
            }
            RunEvent::QuestionnaireAnswered {
                match_no,
                player,
                answers,
            } => {
                if let Some(r) = m
                    .ratings
                    .iter_mut()
                    .find(|r| r.match_no == *match_no && r.player == *player)
                    // The first answer counts; the desk refuses a second one anyway.
                    && r.status != RatingStatus::Answered
                {
                    r.status = RatingStatus::Answered;
                    r.answered_at = Some(at);
                    r.answers = answers.clone();
                }
            }
            RunEvent::QuestionnaireClosed { match_no, .. } => {
                for r in m.ratings.iter_mut().filter(|r| r.match_no == *match_no) {
                    if r.status == RatingStatus::Waiting {
                        r.status = RatingStatus::Missing;
                    }
                }
            }
            RunEvent::Outsider { .. }
            | RunEvent::RecordingsStarted { .. }
            | RunEvent::RecordingsFinal { .. }
            | RunEvent::Warning { .. }
            | RunEvent::Info { .. }
            | RunEvent::Cleanup { .. }
            | RunEvent::Stopping { .. } => {}
        }
        if let Some(e) = &logged {
            self.manifest.events.push(e.clone());
        }
        logged
    }
}

/// The manifest's event-log line for an event (and the console's), or `None` for events that
/// are state, not news (step boundaries are in `steps`, planned recordings in `recordings`).
fn describe(env: &Envelope, st: &RunState) -> Option<Event> {
    let label = |p: u32| {
        st.player(p)
            .map(|x| x.label.clone())
            .unwrap_or_else(|| format!("player {p}"))
    };
    let ev = |kind: EventKind, message: String| Event {
        at: env.at,
        kind,
        player: None,
        match_no: None,
        message,
    };
    let e = match &env.event {
        RunEvent::PlayerJoined {
            player,
            slot,
            ip,
            name,
            ..
        } => Event {
            player: Some(*player),
            ..ev(
                EventKind::Join,
                format!("{name} joined from {ip} (slot {slot})"),
            )
        },
        RunEvent::Outsider {
            slot,
            name,
            ip,
            reason,
        } => ev(
            EventKind::Warning,
            format!(
                "{name} joined from {} (slot {slot}); not part of the study: {reason}",
                ip.map(|i| i.to_string()).unwrap_or_else(|| "?".into())
            ),
        ),
        RunEvent::PlayerLeft {
            player,
            slot,
            before_study,
        } => Event {
            player: Some(*player),
            ..ev(
                EventKind::Leave,
                if *before_study {
                    format!(
                        "{} (slot {slot}) left before the study started",
                        label(*player)
                    )
                } else {
                    format!(
                        "{} (slot {slot}) left the server; the study goes on without them",
                        label(*player)
                    )
                },
            )
        },
        RunEvent::PlayerKicked { player, reason, .. } => Event {
            player: Some(*player),
            ..ev(EventKind::Kick, reason.clone())
        },
        RunEvent::ObsFailed { player, error } => Event {
            player: Some(*player),
            ..ev(EventKind::ObsFailure, error.clone())
        },
        RunEvent::LatencyFailed { match_no, error } => Event {
            match_no: Some(*match_no),
            ..ev(EventKind::LatencyFailure, error.clone())
        },
        RunEvent::RecordingFailed {
            player,
            match_no,
            phase,
            error,
        } => Event {
            player: Some(*player),
            match_no: Some(*match_no),
            ..ev(
                EventKind::RecordingFailure,
                format!(
                    "{}: recording did not {}: {error}",
                    label(*player),
                    match phase {
                        RecordingPhase::Start => "start",
                        RecordingPhase::Stop => "stop cleanly",
                    }
                ),
            )
        },
        RunEvent::Warning {
            message,
            player,
            match_no,
        } => Event {
            player: *player,
            match_no: *match_no,
            ..ev(EventKind::Warning, message.clone())
        },
        RunEvent::RecordingSampled {
            player,
            match_no,
            edge,
            sample,
            error,
        } => {
            // The same fold on a copy: the warnings this sample adds, told once.
            let mut rec = st
                .manifest
                .recordings
                .iter()
                .find(|r| r.player == *player && r.match_no == *match_no)?
                .clone();
            let added = match (sample, error) {
                (Some(s), _) => crate::align::apply_sample(&mut rec, *edge, *s),
                (None, e) => vec![crate::align::apply_sample_error(
                    &mut rec,
                    *edge,
                    e.as_deref().unwrap_or("no answer"),
                )],
            };
            if added.is_empty() {
                return None;
            }
            Event {
                player: Some(*player),
                match_no: Some(*match_no),
                ..ev(
                    EventKind::Warning,
                    format!("{}: {}", label(*player), added.join("; ")),
                )
            }
        }
        RunEvent::Info { message } => ev(EventKind::Info, message.clone()),
        RunEvent::QuestionnaireOpened {
            match_no,
            players,
            timeout_s,
        } => Event {
            match_no: Some(*match_no),
            ..ev(
                EventKind::Info,
                format!(
                    "match {match_no}: questionnaire open for {} player{}, waiting at most {}",
                    players.len(),
                    if players.len() == 1 { "" } else { "s" },
                    crate::scenario::Duration::from_millis((timeout_s * 1000.0) as u64)
                ),
            )
        },
        RunEvent::QuestionnaireAnswered {
            match_no, player, ..
        } => Event {
            player: Some(*player),
            match_no: Some(*match_no),
            ..ev(
                EventKind::Info,
                format!("{} answered the questionnaire", label(*player)),
            )
        },
        RunEvent::QuestionnaireClosed {
            match_no,
            answered,
            missing,
            timed_out,
        } => Event {
            match_no: Some(*match_no),
            ..ev(
                if missing.is_empty() {
                    EventKind::Info
                } else {
                    EventKind::Warning
                },
                if missing.is_empty() {
                    format!(
                        "match {match_no}: questionnaire answered by all {} player{}",
                        answered.len(),
                        if answered.len() == 1 { "" } else { "s" }
                    )
                } else {
                    format!(
                        "match {match_no}: questionnaire closed{}; no answer from {}",
                        if *timed_out { " at its timeout" } else { "" },
                        missing
                            .iter()
                            .map(|p| label(*p))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
            )
        },
        RunEvent::Resumed { from } => ev(
            EventKind::Info,
            format!(
                "resuming run {} ({}) at match {}; completed there: {}{}",
                from.run_id,
                from.previous_status,
                from.from_match,
                if from.completed_matches.is_empty() {
                    "no match".to_string()
                } else {
                    from.completed_matches
                        .iter()
                        .map(|n| format!("match {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                if from.forced {
                    " (the scenario file changed since: --force)"
                } else {
                    ""
                }
            ),
        ),
        RunEvent::ObsHealth {
            player,
            match_no,
            issue,
        } => Event {
            player: Some(*player),
            match_no: Some(*match_no),
            ..ev(
                if issue.loses_recording() {
                    EventKind::RecordingFailure
                } else if matches!(issue, HealthIssue::Reconnected { .. }) {
                    EventKind::Info
                } else {
                    EventKind::Warning
                },
                format!("{}: {}", label(*player), issue.describe()),
            )
        },
        RunEvent::MatchReplay { of, number } => Event {
            match_no: Some(*of),
            ..ev(
                EventKind::Warning,
                format!(
                    "match {of} will be played again at the end, as match {number} (obs.on_lost: replay)"
                ),
            )
        },
        RunEvent::Cleanup { message, .. } => ev(EventKind::Cleanup, message.clone()),
        RunEvent::Stopping {
            reason,
            interrupted,
        } => ev(
            if *interrupted {
                EventKind::Interrupt
            } else {
                EventKind::Failure
            },
            reason.clone(),
        ),
        _ => return None,
    };
    Some(e)
}

/// The status a run ends with, from how the walk ended.
pub fn final_status(result: &Result<(), crate::Error>, signal: Option<String>) -> RunStatus {
    match result {
        Ok(()) => RunStatus::Completed,
        Err(crate::Error::Interrupted) => RunStatus::Interrupted {
            signal,
            reason: "interrupted; recordings stopped and the lab cleaned up".into(),
        },
        Err(e) => RunStatus::Failed {
            reason: e.to_string(),
            exit_code: e.exit_code(),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::manifest::{EdgeSample, MatchEdge, MatchEnding, ObsRecord, RunDir};
    use crate::scenario::{SecretsMode, load_str};
    use std::collections::BTreeMap;

    const SCENARIO: &str = r#"
name: unit
server:
  launch: {}
  address: 127.0.0.1:27960
  rcon_password: rcon
players:
  humans: 2
  seats:
    - { name: pc1, ip: 10.77.0.11 }
    - { name: pc2, ip: 10.77.0.12 }
warmup: { duration: 10s }
matches: { timelimit: 20s, repeats: 1 }
latency: { interface: lo, levels: [0ms, 100ms], shaper: none }
obs:
  password: obs
  recording: {}
"#;

    /// A manifest compiled from a two-player, two-match scenario.
    pub(crate) fn manifest() -> Manifest {
        let l = load_str(
            "unit.yaml",
            SCENARIO,
            &[],
            &BTreeMap::new(),
            SecretsMode::Required,
        )
        .unwrap();
        let plan = crate::plan::compile(&l).unwrap();
        let dir = std::env::temp_dir().join(format!("oa-run-state-{}", uuid::Uuid::new_v4()));
        let rd = RunDir::create(&dir, "unit", Timestamp::now()).unwrap();
        let m = Manifest::from_plan(&l, &plan, &rd);
        let _ = std::fs::remove_dir_all(&dir);
        m
    }

    struct Run {
        st: RunState,
        seq: u64,
        t0: chrono::DateTime<chrono::Utc>,
    }

    impl Run {
        fn new() -> Self {
            Run {
                st: RunState::new(manifest()),
                seq: 0,
                t0: chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
                    .unwrap()
                    .with_timezone(&chrono::Utc),
            }
        }
        /// Fold `ev` at `secs` after t0.
        fn at(&mut self, secs: i64, ev: RunEvent) -> Option<Event> {
            self.seq += 1;
            self.st.apply(&Envelope {
                seq: self.seq,
                at: Timestamp(self.t0 + chrono::Duration::seconds(secs)),
                event: ev,
            })
        }
        fn ts(&self, secs: i64) -> Timestamp {
            Timestamp(self.t0 + chrono::Duration::seconds(secs))
        }
    }

    fn joined(player: u32, slot: u8, name: &str) -> RunEvent {
        RunEvent::PlayerJoined {
            player,
            label: format!("pc{player}"),
            slot,
            ip: format!("10.77.0.1{player}").parse().unwrap(),
            seat: Some(format!("pc{player}")),
            name: name.into(),
            name_raw: name.into(),
            obs_port: 4455,
        }
    }

    fn obs_up(player: u32) -> RunEvent {
        RunEvent::ObsConnected {
            player,
            obs: ObsRecord {
                host: Some(format!("10.77.0.1{player}")),
                port: 4455,
                obs_version: Some("29.0.2".into()),
                connected_at: Some(Timestamp::now()),
                ..Default::default()
            },
            after_join_ms: None,
        }
    }

    fn rec(player: u32, m: u32, path: &str, stopped: Option<Timestamp>) -> RecordingRecord {
        let mut r = RecordingRecord::planned(player, m, format!("unit_m{m}_pc{player}"));
        r.path = Some(path.into());
        r.stopped_at = stopped;
        r
    }

    #[test]
    fn seat_obs_before_the_player_is_kept_when_they_join() {
        let mut r = Run::new();
        r.at(0, obs_up(1));
        r.at(5, joined(1, 3, "Alice"));
        let p = r.st.manifest.players.iter().find(|p| p.index == 1).unwrap();
        assert_eq!(p.obs.obs_version.as_deref(), Some("29.0.2"));
        assert_eq!(p.slot, Some(3));
        assert_eq!(p.joined_at, Some(r.ts(5)));
        assert_eq!(r.st.player(1).unwrap().obs, ObsStatus::Connected);
        assert_eq!(r.st.manifest.events.len(), 1, "one join line");
        assert_eq!(r.st.manifest.events[0].kind, EventKind::Join);
    }

    #[test]
    fn measured_latency_folds_into_the_players_match_latency() {
        let mut r = Run::new();
        let stats = |count, p50_ms, p95_ms| crate::manifest::RttStats {
            count,
            p50_ms,
            p95_ms,
        };
        let measured = crate::manifest::MeasuredLatency {
            ping: stats(10, 150.0, 200.0),
            baseline: Some(stats(3, 0.0, 50.0)),
            planned_ms: 100.0,
            added_ms: Some(150.0),
            deviation_ms: Some(50.0),
            allowed_ms: 15.0,
            within: Some(false),
            icmp: None,
        };
        let e = r.at(
            40,
            RunEvent::LatencyMeasured {
                match_no: 2,
                player: 2,
                measured,
            },
        );
        assert!(e.is_none(), "the warning about it is its own event");
        let m2 =
            r.st.manifest
                .matches
                .iter()
                .find(|m| m.number == 2)
                .unwrap();
        let l2 = m2.latency.iter().find(|l| l.player == 2).unwrap();
        assert_eq!(l2.measured, Some(measured));
        assert!(
            m2.latency
                .iter()
                .find(|l| l.player == 1)
                .unwrap()
                .measured
                .is_none()
        );
        // The manifest serialises the flag and a null ICMP.
        let v = serde_json::to_value(l2).unwrap();
        assert_eq!(v["measured"]["within"], false);
        assert!(v["measured"]["icmp"].is_null());
        assert_eq!(v["measured"]["ping"]["p50_ms"], 150.0);
        // An unknown match or player changes nothing.
        let before = r.st.manifest.matches.clone();
        r.at(
            41,
            RunEvent::LatencyMeasured {
                match_no: 9,
                player: 1,
                measured,
            },
        );
        r.at(
            41,
            RunEvent::LatencyMeasured {
                match_no: 1,
                player: 7,
                measured,
            },
        );
        assert_eq!(r.st.manifest.matches, before);
    }

    #[test]
    fn a_match_folds_into_steps_recordings_and_the_match_record() {
        let mut r = Run::new();
        r.at(
            0,
            RunEvent::RunStarted {
                study: "unit".into(),
                run_dir: "/tmp/x".into(),
                steps: 20,
                matches: 2,
                humans: 2,
            },
        );
        r.at(1, joined(1, 0, "Alice"));
        r.at(1, joined(2, 1, "Bob"));
        r.at(
            10,
            RunEvent::StepStarted {
                index: 7,
                kind: "start_recordings".into(),
                match_no: Some(2),
                description: "start".into(),
                duration_s: None,
            },
        );
        // Player 2's planned latency in match 2 comes from the manifest's matrix.
        let planned = r.st.manifest.matches[1]
            .latency
            .iter()
            .find(|l| l.player == 2)
            .unwrap()
            .latency_ms;
        assert_eq!(r.st.player(2).unwrap().planned_latency_ms, Some(planned));
        for p in 1..=2 {
            r.at(
                10,
                RunEvent::RecordingPlanned {
                    player: p,
                    match_no: 2,
                    name: format!("unit_m2_pc{p}"),
                },
            );
        }
        assert_eq!(r.st.player(1).unwrap().recording, RecordingState::Starting);
        r.at(
            11,
            RunEvent::RecordingStarted {
                player: 1,
                match_no: 2,
                record: rec(1, 2, "/r/a.mkv", None),
            },
        );
        r.at(
            11,
            RunEvent::RecordingFailed {
                player: 2,
                match_no: 2,
                phase: RecordingPhase::Start,
                error: "OutputRunning".into(),
            },
        );
        assert_eq!(r.st.player(1).unwrap().recording, RecordingState::Recording);
        assert_eq!(r.st.player(2).unwrap().recording, RecordingState::Failed);
        r.at(
            12,
            RunEvent::MatchStarted {
                match_no: 2,
                map: Some("oa_dm1".into()),
                planned_s: 20.0,
            },
        );
        assert_eq!(
            r.st.live.current_match.as_ref().unwrap().started_at,
            Some(r.ts(12))
        );
        r.at(
            32,
            RunEvent::MatchEnded {
                match_no: 2,
                started_at: r.ts(12),
                ended_at: r.ts(32),
                ended_by: MatchEnding::Runner,
                detail: None,
                duration_s: 20.0,
                sudden_death: false,
                map: Some("oa_dm1".into()),
            },
        );
        let stop = r.ts(34);
        r.at(
            34,
            RunEvent::RecordingStopped {
                player: 1,
                match_no: 2,
                record: rec(1, 2, "/r/a.mkv", Some(stop)),
            },
        );
        let m2 =
            r.st.manifest
                .matches
                .iter()
                .find(|m| m.number == 2)
                .unwrap();
        assert_eq!(m2.ended_by, Some(MatchEnding::Runner));
        assert_eq!(m2.started_at, Some(r.ts(12)));
        assert_eq!(m2.map.as_deref(), Some("oa_dm1"));
        let r1 =
            r.st.manifest
                .recordings
                .iter()
                .find(|x| x.player == 1 && x.match_no == 2)
                .unwrap();
        assert_eq!(r1.stopped_at, Some(stop));
        assert!(r1.error.is_none());
        let r2 =
            r.st.manifest
                .recordings
                .iter()
                .find(|x| x.player == 2 && x.match_no == 2)
                .unwrap();
        assert_eq!(r2.error.as_deref(), Some("OutputRunning"));
        assert_eq!(r.st.player(1).unwrap().recording, RecordingState::Stopped);
        assert_eq!(
            r.st.manifest.steps.last().unwrap().started_at,
            r.ts(10),
            "times come from the envelopes, not the clock"
        );
    }

    #[test]
    fn a_start_error_survives_the_stop_report() {
        let mut r = Run::new();
        r.at(0, joined(1, 0, "A"));
        r.at(
            1,
            RunEvent::RecordingPlanned {
                player: 1,
                match_no: 1,
                name: "n".into(),
            },
        );
        r.at(
            2,
            RunEvent::RecordingFailed {
                player: 1,
                match_no: 1,
                phase: RecordingPhase::Start,
                error: "start timed out".into(),
            },
        );
        r.at(
            20,
            RunEvent::ObsHealth {
                player: 1,
                match_no: 1,
                issue: HealthIssue::Exiting,
            },
        );
        r.at(
            30,
            RunEvent::RecordingStopped {
                player: 1,
                match_no: 1,
                record: rec(1, 1, "/r/late.mkv", Some(Timestamp::now())),
            },
        );
        let x = &r.st.manifest.recordings[0];
        assert_eq!(x.health.len(), 1, "health notes survive the stop report");
        assert_eq!(x.health[0].at, r.ts(20));
        assert_eq!(x.error.as_deref(), Some("start timed out"));
        assert_eq!(x.path.as_deref(), Some("/r/late.mkv"));
        assert_eq!(r.st.player(1).unwrap().recording, RecordingState::Failed);
    }

    fn sample(offset_ms: f64, active: bool, elapsed_ms: f64, at: Timestamp) -> EdgeSample {
        EdgeSample {
            offset_ms,
            error_ms: 101.0,
            rtt_ms: 2.0,
            rtt_min_ms: Some(1.0),
            frame_ms: Some(100.0),
            encoder_lag_ms: None,
            output_active: active,
            output_duration_ms: offset_ms.max(0.0) as u64,
            sampled_after_ms: 1.0,
            match_elapsed_ms: elapsed_ms,
            reference_at: at,
        }
    }

    #[test]
    fn edge_samples_fold_into_offsets_spread_and_warnings_that_survive_the_stop() {
        let mut r = Run::new();
        r.at(0, joined(1, 0, "A"));
        r.at(0, joined(2, 1, "B"));
        for p in 1..=2 {
            r.at(
                1,
                RunEvent::RecordingPlanned {
                    player: p,
                    match_no: 1,
                    name: format!("n{p}"),
                },
            );
            r.at(
                2,
                RunEvent::RecordingStarted {
                    player: p,
                    match_no: 1,
                    record: rec(p, 1, &format!("/r/n{p}.mkv"), None),
                },
            );
        }
        let start = r.ts(3);
        let sampled = |player, edge, s| RunEvent::RecordingSampled {
            player,
            match_no: 1,
            edge,
            sample: Some(s),
            error: None,
        };
        assert!(
            r.at(
                3,
                sampled(1, MatchEdge::Start, sample(1_234.4, true, 0.0, start))
            )
            .is_none(),
            "an aligned sample is state, not news"
        );
        r.at(
            3,
            sampled(2, MatchEdge::Start, sample(1_250.0, true, 0.0, start)),
        );
        let m1 = &r.st.manifest.matches[0];
        assert_eq!(m1.alignment_spread_ms, Some(16));
        assert_eq!(m1.alignment_error_ms, Some(101.0));
        // Player 2's output stopped before the end: one warning, logged once.
        let end = r.ts(23);
        r.at(
            23,
            sampled(1, MatchEdge::End, sample(21_234.0, true, 20_000.0, end)),
        );
        let logged = r
            .at(
                23,
                sampled(2, MatchEdge::End, sample(0.0, false, 20_000.0, end)),
            )
            .expect("a warning");
        assert_eq!(logged.kind, EventKind::Warning);
        assert_eq!(logged.player, Some(2));
        assert!(
            logged.message.contains("stopped before the match ended"),
            "{}",
            logged.message
        );
        // OBS's stop report knows nothing of the alignment; the fold keeps it.
        for p in 1..=2 {
            r.at(
                25,
                RunEvent::RecordingStopped {
                    player: p,
                    match_no: 1,
                    record: rec(p, 1, &format!("/r/n{p}.mkv"), Some(r.ts(25))),
                },
            );
        }
        let x1 = &r.st.manifest.recordings[0];
        assert_eq!(
            (x1.match_start_offset_ms, x1.match_end_offset_ms),
            (Some(1_234), Some(21_234))
        );
        let drift = x1.alignment.as_ref().unwrap().drift_ms.unwrap();
        assert!((drift + 0.4).abs() < 1e-6, "{drift}");
        assert_eq!(
            x1.timeline_started_at,
            Some(Timestamp(start.0 - chrono::Duration::milliseconds(1_234)))
        );
        let x2 = &r.st.manifest.recordings[1];
        assert_eq!(x2.match_end_offset_ms, None);
        assert_eq!(x2.alignment.as_ref().unwrap().warnings.len(), 1);
        // A failed sample is a warning too.
        let logged = r
            .at(
                26,
                RunEvent::RecordingSampled {
                    player: 1,
                    match_no: 1,
                    edge: MatchEdge::End,
                    sample: None,
                    error: Some("timed out".into()),
                },
            )
            .unwrap();
        assert!(
            logged
                .message
                .contains("could not be read at the match end: timed out")
        );
    }

    #[test]
    fn leaving_and_kicks_mark_the_player_and_log_once() {
        let mut r = Run::new();
        r.at(0, joined(1, 0, "A"));
        r.at(0, joined(2, 1, "B"));
        let line = r
            .at(
                5,
                RunEvent::PlayerKicked {
                    player: 2,
                    slot: 1,
                    reason: "OBS not reachable".into(),
                },
            )
            .unwrap();
        assert_eq!(line.kind, EventKind::Kick);
        let left = r
            .at(
                6,
                RunEvent::PlayerLeft {
                    player: 1,
                    slot: 0,
                    before_study: false,
                },
            )
            .unwrap();
        assert!(
            left.message.contains("pc1 (slot 0) left"),
            "{}",
            left.message
        );
        let p2 = r.st.manifest.players.iter().find(|p| p.index == 2).unwrap();
        assert_eq!(p2.kicked.as_ref().unwrap().at, r.ts(5));
        assert_eq!(p2.left_at, Some(r.ts(5)));
        assert_eq!(r.st.player(1).unwrap().presence, Presence::Left);
        assert_eq!(r.st.player(2).unwrap().presence, Presence::Kicked);
        let kinds: Vec<EventKind> = r.st.manifest.events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![
                EventKind::Join,
                EventKind::Join,
                EventKind::Kick,
                EventKind::Leave
            ]
        );
    }

    #[test]
    fn run_finished_sets_the_final_status_and_end_time() {
        let mut r = Run::new();
        r.at(
            0,
            RunEvent::Stopping {
                reason: "interrupted".into(),
                interrupted: true,
            },
        );
        r.at(
            3,
            RunEvent::RunFinished {
                status: RunStatus::Interrupted {
                    signal: Some("SIGINT".into()),
                    reason: "x".into(),
                },
            },
        );
        assert_eq!(r.st.manifest.status.name(), "interrupted");
        assert_eq!(r.st.manifest.ended_at, Some(r.ts(3)));
        assert!(r.st.live.finished);
        assert_eq!(r.st.manifest.events[0].kind, EventKind::Interrupt);
        assert_eq!(r.st.live.seq, 2);
    }

    #[test]
    fn events_round_trip_as_tagged_json() {
        let ev = joined(1, 0, "<img src=x onerror=alert(1)>");
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["type"], "player_joined");
        assert_eq!(v["name"], "<img src=x onerror=alert(1)>");
        let back: RunEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, ev);
        assert!(RunEvent::KINDS.contains(&ev.kind()));
    }

    #[test]
    fn questionnaire_answers_fold_per_player_and_match_and_the_rest_is_missing() {
        use crate::manifest::Answer;
        let mut r = Run::new();
        r.at(0, joined(1, 0, "a"));
        r.at(0, joined(2, 1, "b"));
        let opened = r
            .at(
                10,
                RunEvent::QuestionnaireOpened {
                    match_no: 1,
                    players: vec![1, 2],
                    timeout_s: 90.0,
                },
            )
            .unwrap();
        assert_eq!(opened.match_no, Some(1));
        assert!(
            opened.message.contains("open for 2 players"),
            "{}",
            opened.message
        );
        let waiting: Vec<_> = r.st.manifest.ratings.iter().map(|x| x.status).collect();
        assert_eq!(waiting, [RatingStatus::Waiting, RatingStatus::Waiting]);
        let hostile = "</script><b>\u{1b}[2J\"\n".to_string();
        let answers: std::collections::BTreeMap<String, Answer> = [
            ("quality".to_string(), Answer::Scale(4)),
            ("note".to_string(), Answer::Text(hostile.clone())),
        ]
        .into();
        let line = r
            .at(
                25,
                RunEvent::QuestionnaireAnswered {
                    match_no: 1,
                    player: 2,
                    answers: answers.clone(),
                },
            )
            .unwrap();
        assert!(
            !line.message.contains("script"),
            "no answer text in the log"
        );
        // A second answer (never sent by the desk) does not replace the first.
        r.at(
            26,
            RunEvent::QuestionnaireAnswered {
                match_no: 1,
                player: 2,
                answers: Default::default(),
            },
        );
        let closed = r
            .at(
                100,
                RunEvent::QuestionnaireClosed {
                    match_no: 1,
                    answered: vec![2],
                    missing: vec![1],
                    timed_out: true,
                },
            )
            .unwrap();
        assert_eq!(closed.kind, EventKind::Warning);
        assert!(
            closed.message.contains("no answer from pc1"),
            "{}",
            closed.message
        );
        let rs = &r.st.manifest.ratings;
        assert_eq!(rs.len(), 2);
        let p1 = rs.iter().find(|x| x.player == 1).unwrap();
        let p2 = rs.iter().find(|x| x.player == 2).unwrap();
        assert_eq!((p1.status, p1.answered_at), (RatingStatus::Missing, None));
        assert!(p1.answers.is_empty());
        assert_eq!(p2.status, RatingStatus::Answered);
        assert_eq!(p2.opened_at, r.ts(10));
        assert_eq!(p2.answered_at, Some(r.ts(25)));
        assert_eq!(p2.answers, answers, "raw text kept");
        let json = serde_json::to_string(&r.st.manifest).unwrap();
        assert!(
            !json.contains('\u{1b}') && !json.contains("\"\n"),
            "JSON-escaped"
        );
        let back: crate::manifest::Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back.ratings, r.st.manifest.ratings);
        assert_eq!(
            serde_json::to_value(&p2.answers).unwrap()["quality"],
            serde_json::json!(4)
        );

        // A round still open when the run stops: missing.
        r.at(
            110,
            RunEvent::QuestionnaireOpened {
                match_no: 2,
                players: vec![1],
                timeout_s: 90.0,
            },
        );
        r.at(
            111,
            RunEvent::RunFinished {
                status: RunStatus::Interrupted {
                    signal: Some("SIGINT".into()),
                    reason: "interrupted".into(),
                },
            },
        );
        let last = r.st.manifest.ratings.last().unwrap();
        assert_eq!((last.match_no, last.status), (2, RatingStatus::Missing));
    }
}
