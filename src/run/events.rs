//! The run's event stream: every fact the executor learns is one typed [`RunEvent`].
//!
//! The executor only emits; [`super::state::RunState`] folds the events into the run's state
//! (the manifest included), and the subscribers (manifest writer, console, progress, and the
//! live side) read the events and the state. Events are serde-serialisable with a `type` tag,
//! so the live feed and webhooks send them as they are.

use std::net::IpAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::obs::health::{FrameReport, HealthIssue};

use crate::manifest::{
    DeliveryRecord, EdgeSample, MatchEdge, MatchEnding, MeasuredLatency, ObsRecord,
    RecordingRecord, ResumedFrom, RunStatus, ShapingRecord, Timestamp,
};

/// One event with its place in the stream.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Envelope {
    /// 1-based, gap-free within a run.
    pub seq: u64,
    pub at: Timestamp,
    pub event: RunEvent,
}

/// A bot in a slot.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct BotSlot {
    pub slot: u8,
    pub name: String,
}

/// Which side of a recording failed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RecordingPhase {
    Start,
    Stop,
}

/// Something that happened in a run. Player numbers are the plan's 1-based player indices;
/// `slot` is the server's client slot.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunEvent {
    /// The run began: what the dashboard needs to lay itself out.
    RunStarted {
        study: String,
        run_dir: PathBuf,
        steps: u32,
        matches: u32,
        humans: u32,
    },
    /// This run continues an earlier one; matches completed there are not played here.
    Resumed {
        from: ResumedFrom,
    },
    /// A plan step began. `index` is 0-based in the plan.
    StepStarted {
        index: u32,
        kind: String,
        #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
        match_no: Option<u32>,
        /// The plan's one-line description of the step.
        description: String,
        /// Planned length of a timed step (warmup), seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_s: Option<f64>,
    },
    StepFinished {
        index: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The game server is up (launched or attached).
    ServerStarted {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stderr_log: Option<PathBuf>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        games_log: Option<PathBuf>,
    },
    /// A human was admitted to the study.
    PlayerJoined {
        player: u32,
        label: String,
        slot: u8,
        ip: IpAddr,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seat: Option<String>,
        /// Name without colour codes.
        name: String,
        /// Name exactly as the game reported it.
        name_raw: String,
        obs_port: u16,
    },
    /// A human on the server who is not part of the study (late, or unknown address).
    Outsider {
        slot: u8,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<IpAddr>,
        reason: String,
    },
    PlayerLeft {
        player: u32,
        slot: u8,
        /// They left while the study was still waiting for players (their place is free again).
        before_study: bool,
    },
    PlayerKicked {
        player: u32,
        slot: u8,
        reason: String,
    },
    /// Bots on the server changed: who is in which slot now.
    BotsSet {
        bots: Vec<BotSlot>,
        skill: u8,
    },
    /// A player's (or a seat's) OBS connected and identified.
    ObsConnected {
        player: u32,
        obs: ObsRecord,
        /// From the player's join to this connection, where they had joined first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_join_ms: Option<u64>,
    },
    ObsFailed {
        player: u32,
        error: String,
    },
    /// The match's latencies are in force.
    LatencySet {
        match_no: u32,
        shaping: ShapingRecord,
    },
    LatencyFailed {
        match_no: u32,
        error: String,
    },
    /// What a player really had in a match (the server's ping against their warmup baseline,
    /// and the path's ICMP round trip), measured once the match ended.
    LatencyMeasured {
        match_no: u32,
        player: u32,
        measured: MeasuredLatency,
    },
    /// A recording is about to be started under this name.
    RecordingPlanned {
        player: u32,
        match_no: u32,
        name: String,
    },
    /// OBS confirmed the recording started (the record holds what OBS reported).
    RecordingStarted {
        player: u32,
        match_no: u32,
        record: RecordingRecord,
    },
    /// OBS confirmed the file is complete (or the stop failed: `record.error`).
    RecordingStopped {
        player: u32,
        match_no: u32,
        record: RecordingRecord,
    },
    RecordingFailed {
        player: u32,
        match_no: u32,
        phase: RecordingPhase,
        error: String,
    },
    /// Every recording of the match that could start has started.
    RecordingsStarted {
        match_no: u32,
        started: u32,
        /// Spread of the STARTED confirmations' arrival at oa-run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        arrival_spread_ms: Option<f64>,
    },
    /// A recording's OBS timeline, sampled at an edge of the match (GetRecordStatus): where the
    /// edge lies in that file. `error` when OBS could not be asked.
    RecordingSampled {
        player: u32,
        match_no: u32,
        edge: MatchEdge,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sample: Option<EdgeSample>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Every recording of the match is final.
    RecordingsFinal {
        match_no: u32,
        after_end_ms: u64,
    },
    MatchStarted {
        match_no: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        map: Option<String>,
        /// How long the match is planned to last, seconds.
        planned_s: f64,
    },
    MatchEnded {
        match_no: u32,
        started_at: Timestamp,
        ended_at: Timestamp,
        ended_by: MatchEnding,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        duration_s: f64,
        sudden_death: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        map: Option<String>,
    },
    /// Something worth knowing that did not stop the run.
    Warning {
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        player: Option<u32>,
        #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
        match_no: Option<u32>,
    },
    Info {
        message: String,
    },
    /// A cleanup action and whether it worked.
    Cleanup {
        message: String,
        ok: bool,
    },
    /// The error that stopped the run, or the interrupt.
    Stopping {
        reason: String,
        interrupted: bool,
    },
    /// Something wrong with a running recording (its OBS dropped, exited, stopped it, ran low
    /// on disk, lost frames).
    ObsHealth {
        player: u32,
        match_no: u32,
        issue: HealthIssue,
    },
    /// A recording's frame counts over the match (from its OBS's stats).
    RecordingFrames {
        player: u32,
        match_no: u32,
        frames: FrameReport,
    },
    /// What every player did in the match, from the server's log (kills, deaths, score, time
    /// in the match), keyed by slot and mapped to the study's players.
    MatchStats {
        match_no: u32,
        stats: crate::manifest::MatchStatsRecord,
    },
    /// A match whose recording was lost will be played again as match `number`
    /// (`obs.on_lost: replay`).
    MatchReplay {
        of: u32,
        number: u32,
    },
    /// The match's questionnaire is open on these players' pages (their links are not in
    /// the stream: each carries that player's token).
    QuestionnaireOpened {
        match_no: u32,
        players: Vec<u32>,
        timeout_s: f64,
    },
    /// A player's answers, checked against the items (text raw, as typed; untrusted).
    QuestionnaireAnswered {
        match_no: u32,
        player: u32,
        answers: std::collections::BTreeMap<String, crate::manifest::Answer>,
    },
    /// The wait is over: everyone answered, or the timeout passed (`missing` did not answer).
    QuestionnaireClosed {
        match_no: u32,
        answered: Vec<u32>,
        missing: Vec<u32>,
        timed_out: bool,
    },
    /// The run is over; only webhook delivery reports follow.
    RunFinished {
        status: RunStatus,
    },
    /// A webhook delivery finished (delivered, or given up). Never itself delivered.
    WebhookDelivery {
        record: DeliveryRecord,
    },
}

impl RunEvent {
    /// The `type` tag, for webhook filters and headers.
    pub fn kind(&self) -> &'static str {
        match self {
            RunEvent::RunStarted { .. } => "run_started",
            RunEvent::Resumed { .. } => "resumed",
            RunEvent::StepStarted { .. } => "step_started",
            RunEvent::StepFinished { .. } => "step_finished",
            RunEvent::ServerStarted { .. } => "server_started",
            RunEvent::PlayerJoined { .. } => "player_joined",
            RunEvent::Outsider { .. } => "outsider",
            RunEvent::PlayerLeft { .. } => "player_left",
            RunEvent::PlayerKicked { .. } => "player_kicked",
            RunEvent::BotsSet { .. } => "bots_set",
            RunEvent::ObsConnected { .. } => "obs_connected",
            RunEvent::ObsFailed { .. } => "obs_failed",
            RunEvent::LatencySet { .. } => "latency_set",
            RunEvent::LatencyFailed { .. } => "latency_failed",
            RunEvent::LatencyMeasured { .. } => "latency_measured",
            RunEvent::RecordingPlanned { .. } => "recording_planned",
            RunEvent::RecordingStarted { .. } => "recording_started",
            RunEvent::RecordingStopped { .. } => "recording_stopped",
            RunEvent::RecordingFailed { .. } => "recording_failed",
            RunEvent::RecordingsStarted { .. } => "recordings_started",
            RunEvent::RecordingSampled { .. } => "recording_sampled",
            RunEvent::RecordingsFinal { .. } => "recordings_final",
            RunEvent::MatchStarted { .. } => "match_started",
            RunEvent::MatchEnded { .. } => "match_ended",
            RunEvent::Warning { .. } => "warning",
            RunEvent::Info { .. } => "info",
            RunEvent::Cleanup { .. } => "cleanup",
            RunEvent::Stopping { .. } => "stopping",
            RunEvent::ObsHealth { .. } => "obs_health",
            RunEvent::RecordingFrames { .. } => "recording_frames",
            RunEvent::MatchReplay { .. } => "match_replay",
            RunEvent::MatchStats { .. } => "match_stats",
            RunEvent::QuestionnaireOpened { .. } => "questionnaire_opened",
            RunEvent::QuestionnaireAnswered { .. } => "questionnaire_answered",
            RunEvent::QuestionnaireClosed { .. } => "questionnaire_closed",
            RunEvent::RunFinished { .. } => "run_finished",
            RunEvent::WebhookDelivery { .. } => "webhook_delivery",
        }
    }

    /// Every event type name (for scenario validation of webhook filters).
    pub const KINDS: &'static [&'static str] = &[
        "run_started",
        "resumed",
        "step_started",
        "step_finished",
        "server_started",
        "player_joined",
        "outsider",
        "player_left",
        "player_kicked",
        "bots_set",
        "obs_connected",
        "obs_failed",
        "latency_set",
        "latency_failed",
        "latency_measured",
        "recording_planned",
        "recording_started",
        "recording_stopped",
        "recording_failed",
        "recordings_started",
        "recording_sampled",
        "recordings_final",
        "match_started",
        "match_ended",
        "warning",
        "info",
        "cleanup",
        "stopping",
        "obs_health",
        "recording_frames",
        "match_replay",
        "match_stats",
        "questionnaire_opened",
        "questionnaire_answered",
        "questionnaire_closed",
        "run_finished",
        "webhook_delivery",
    ];
}
