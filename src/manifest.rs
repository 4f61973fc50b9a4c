//! The run manifest (`runs/<name>-<timestamp>/manifest.json`) and the run directory.
//!
//! The executor builds a [`Manifest`] at start (status `running`), fills it in step by step
//! (players, matches, recordings, events) and rewrites it after every step with
//! [`ManifestWriter::write`]. Each write replaces the file atomically (temp file in the same
//! directory, fsync, rename, fsync of the directory), so a crash or a power cut at any moment
//! leaves the previous complete manifest, never a torn one. The JSON Schema
//! (`schemas/manifest.schema.json`) is generated from these types.
//!
//! Secrets never reach the manifest: the resolved scenario serializes every
//! [`crate::scenario::Secret`] as `***`, and `--set` overrides that touch a secret are shown
//! with their value redacted.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{DateTime, SecondsFormat, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use uuid::Uuid;

use crate::plan::Plan;
use crate::scenario::{LoadedScenario, Scenario};

/// Major version of the manifest format: bumped when a reader of the old format would
/// misread the new one.
pub const FORMAT_MAJOR: u32 = 1;
/// Minor version: bumped when fields are added.
pub const FORMAT_MINOR: u32 = 0;

/// File names inside a run directory.
pub const MANIFEST_FILE: &str = "manifest.json";
pub const LOG_FILE: &str = "oa-run.log";
pub const SERVER_STDERR_FILE: &str = "server-stderr.log";
/// The writer's temp file: one writer per run directory, so one fixed name; a leftover from a
/// crash is simply overwritten by the next write.
const TEMP_FILE: &str = ".manifest.json.tmp";

// ------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------

/// Failures to create the run directory or to write the manifest (exit 74).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "the run directory {} already exists (did another run of this scenario start in the same second?); nothing was overwritten",
        .0.display()
    )]
    RunDirExists(PathBuf),
    #[error("cannot create the run directory {}: {source}{hint}", path.display(), hint = io_hint(source))]
    CreateRunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the scenario name `{0}` cannot be used as a directory name")]
    BadName(String),
    #[error("{} already exists; a run directory holds the manifest of one run only", .0.display())]
    ManifestExists(PathBuf),
    #[error("cannot write the manifest {}: {source}{hint}", path.display(), hint = io_hint(source))]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open {}: {source}", path.display())]
    OpenLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serialize the manifest: {0}")]
    Serialize(#[from] serde_json::Error),
}

fn io_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => " (is output.dir writable by this user?)",
        std::io::ErrorKind::NotADirectory => " (output.dir, or a folder above it, is a file)",
        std::io::ErrorKind::StorageFull => " (the disk is full)",
        std::io::ErrorKind::ReadOnlyFilesystem => " (the file system is read-only)",
        _ => "",
    }
}

impl From<ManifestError> for crate::Error {
    fn from(e: ManifestError) -> Self {
        match e {
            ManifestError::Serialize(_) => crate::Error::Internal(e.to_string()),
            _ => crate::Error::Output(e.to_string()),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Small value types
// ------------------------------------------------------------------------------------------

/// A wall-clock time, UTC, millisecond precision, serialized as RFC 3339
/// (`2026-11-22T14:03:07.125Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Self::from(Utc::now())
    }
    /// Milliseconds from `earlier` to `self` (negative when `self` is earlier).
    pub fn millis_since(&self, earlier: &Timestamp) -> i64 {
        (self.0 - earlier.0).num_milliseconds()
    }
    /// `YYYYmmddTHHMMSSZ`, as used in run directory names.
    pub fn compact(&self) -> String {
        self.0.format("%Y%m%dT%H%M%SZ").to_string()
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(t: DateTime<Utc>) -> Self {
        // Millisecond precision: what is written is what is read back (round trips compare equal).
        let ms = t.timestamp_millis();
        Timestamp(DateTime::from_timestamp_millis(ms).unwrap_or(t))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| Timestamp::from(t.with_timezone(&Utc)))
            .map_err(|e| serde::de::Error::custom(format!("`{s}` is not an RFC 3339 time: {e}")))
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "UTC wall-clock time, RFC 3339 with milliseconds."
        })
    }
}

fn uuid_schema(_: &mut SchemaGenerator) -> Schema {
    // `format: uuid` is not a draft-07 format (validators ignore it); the pattern checks it.
    json_schema!({
        "type": "string",
        "format": "uuid",
        "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    })
}

/// Version of the manifest format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct FormatVersion {
    pub major: u32,
    pub minor: u32,
}

/// The program that wrote the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct ToolInfo {
    pub name: String,
    pub version: String,
}

/// The scenario this run executes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ScenarioInfo {
    /// The file as named on the command line.
    pub path: PathBuf,
    /// sha256 (hex) of the file's bytes, taken before anything ran.
    pub sha256: String,
    /// `--set` overrides as given; values of overrides that touch a secret are `***`.
    pub overrides: Vec<String>,
    /// The scenario after overrides and `${VAR}` expansion, with every secret shown as `***`.
    pub resolved: Scenario,
}

/// The machine oa-run ran on.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct HostInfo {
    pub hostname: String,
    /// `linux`, `macos`, ...
    pub os: String,
    /// Kernel release (`uname -r`), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// `x86_64`, `aarch64`, ...
    pub arch: String,
}

impl HostInfo {
    pub fn current() -> Self {
        HostInfo {
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "unknown".into()),
            os: std::env::consts::OS.into(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            arch: std::env::consts::ARCH.into(),
        }
    }
}

/// State of the run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunStatus {
    /// The run is in progress, or oa-run died without a trace (check `pid` and
    /// `last_written_at`).
    Running,
    /// Every step ran.
    Completed,
    /// The run stopped on an error; cleanup ran.
    Failed {
        /// What went wrong, as printed.
        reason: String,
        /// oa-run's exit code.
        exit_code: u8,
    },
    /// Stopped by Ctrl-C or SIGTERM; cleanup ran.
    Interrupted {
        /// `SIGINT` or `SIGTERM`, when a signal caused it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<String>,
        reason: String,
    },
}

impl RunStatus {
    pub fn is_final(&self) -> bool {
        !matches!(self, RunStatus::Running)
    }
    pub fn name(&self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed { .. } => "failed",
            RunStatus::Interrupted { .. } => "interrupted",
        }
    }
}

/// Where the run's files are, relative to the run directory.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct LogPaths {
    /// oa-run's own log.
    pub oa_run: PathBuf,
    /// The launched server's stderr (its console); absent when attached to a server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_stderr: Option<PathBuf>,
    /// The server's games.log (absolute path; for a launched server, inside its home).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_games_log: Option<PathBuf>,
}

// ------------------------------------------------------------------------------------------
// Progress records
// ------------------------------------------------------------------------------------------

/// One step of the plan as executed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct StepRecord {
    /// 1-based position in the plan.
    pub index: u32,
    /// The plan's step kind (`launch_server`, `play_match`, ...).
    pub kind: String,
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub match_no: Option<u32>,
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// Why the step failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A human player.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct PlayerRecord {
    /// 1-based; the row of the latency design this player follows.
    pub index: u32,
    /// Seat name, else the cleaned player name (used in recording names).
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seat: Option<String>,
    /// The player's IP as the server sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// Server client slot (rcon and kicks use it, never the name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
    /// The name exactly as the game reported it (colour codes included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_raw: Option<String>,
    /// The name without colour codes, safe for file names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_clean: Option<String>,
    pub obs: ObsRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined_at: Option<Timestamp>,
    /// When the player left (quit, timeout or kick); the study went on without them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kicked: Option<Kick>,
}

impl PlayerRecord {
    pub fn new(index: u32, label: impl Into<String>, obs_port: u16) -> Self {
        PlayerRecord {
            index,
            label: label.into(),
            seat: None,
            ip: None,
            slot: None,
            name_raw: None,
            name_clean: None,
            obs: ObsRecord {
                host: None,
                port: obs_port,
                connected_at: None,
                obs_version: None,
                websocket_version: None,
                rpc_version: None,
                error: None,
            },
            joined_at: None,
            left_at: None,
            kicked: None,
        }
    }
}

/// The player's OBS.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct ObsRecord {
    /// Host oa-run connected to (normally the player's IP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub port: u16,
    /// When the websocket session was identified (the last time, after reconnects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obs_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc_version: Option<u32>,
    /// The last connection error, if OBS could not be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A kick by oa-run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct Kick {
    pub at: Timestamp,
    pub reason: String,
}

/// How a match ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MatchEnding {
    /// The server's timelimit (`Exit: Timelimit hit.`).
    Timelimit,
    /// A player reached the fraglimit.
    Fraglimit,
    /// oa-run ended it after the planned duration.
    Runner,
    /// It ran past the timelimit plus the allowed overtime and oa-run ended it.
    Overtime,
    /// Cut short by an error or an interrupt.
    Aborted,
}

/// The latency one player had in a match.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct PlayerLatency {
    /// Player index (1-based).
    pub player: u32,
    /// Added round-trip delay in milliseconds, as planned.
    pub latency_ms: u64,
}

/// What the latency shaper did for a match.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ShapingRecord {
    /// Whether the delays were really applied (false with `latency.shaper: none`, or on error).
    pub applied: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    /// The configuration applied (for tc: interface, classes, filters, netem parameters).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub config: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One match.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct MatchRecord {
    /// 1-based.
    pub number: u32,
    /// 1-based repeat of the latency design.
    pub repeat: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<MatchEnding>,
    /// Detail, e.g. the server's `Exit:` reason or the error that aborted the match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_detail: Option<String>,
    /// Planned added latency per player.
    pub latency: Vec<PlayerLatency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shaping: Option<ShapingRecord>,
}

/// One recording of one player in one match.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct RecordingRecord {
    /// Player index (1-based).
    pub player: u32,
    /// Match number (1-based).
    #[serde(rename = "match")]
    pub match_no: u32,
    /// The file name planned for it (without extension).
    pub planned_name: String,
    /// The file's path on the player's PC, as OBS reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// When OBS confirmed the recording started (RecordStateChanged STARTED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When OBS confirmed the file was complete (RecordStateChanged STOPPED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Start time minus the earliest start of the match's recordings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_skew_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RecordingRecord {
    pub fn planned(player: u32, match_no: u32, planned_name: impl Into<String>) -> Self {
        RecordingRecord {
            player,
            match_no,
            planned_name: planned_name.into(),
            path: None,
            started_at: None,
            stopped_at: None,
            bytes: None,
            duration_ms: None,
            start_skew_ms: None,
            error: None,
        }
    }
}

/// What an event is about.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A human joined.
    Join,
    /// A human left (quit or timed out).
    Leave,
    /// oa-run kicked a player.
    Kick,
    /// A player's OBS could not be reached or broke.
    ObsFailure,
    /// A recording failed to start or to stop.
    RecordingFailure,
    /// Latency could not be applied or removed.
    LatencyFailure,
    /// The server failed or exited.
    ServerFailure,
    /// Something worth knowing that did not stop the run.
    Warning,
    /// An error that stopped the run.
    Failure,
    /// Ctrl-C or SIGTERM.
    Interrupt,
    /// Cleanup work (teardown) and its outcome.
    Cleanup,
    Info,
}

/// Something that happened, with its reason.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct Event {
    pub at: Timestamp,
    pub kind: EventKind,
    /// Player index (1-based), if about one player.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub player: Option<u32>,
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub match_no: Option<u32>,
    pub message: String,
}

impl Event {
    pub fn new(kind: EventKind, message: impl Into<String>) -> Self {
        Event {
            at: Timestamp::now(),
            kind,
            player: None,
            match_no: None,
            message: message.into(),
        }
    }
    pub fn player(mut self, index: u32) -> Self {
        self.player = Some(index);
        self
    }
    pub fn match_no(mut self, n: u32) -> Self {
        self.match_no = Some(n);
        self
    }
}

// ------------------------------------------------------------------------------------------
// The manifest
// ------------------------------------------------------------------------------------------

/// Everything about one run of a study: what ran, with which scenario, who played, every
/// match with its latencies, every recording with its path, every failure with its reason.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[schemars(title = "oa-run run manifest")]
pub struct Manifest {
    pub format_version: FormatVersion,
    /// Unique id of this run (UUID v4).
    #[schemars(schema_with = "uuid_schema")]
    pub run_id: Uuid,
    pub tool: ToolInfo,
    pub scenario: ScenarioInfo,
    pub host: HostInfo,
    /// oa-run's process id (to tell a live `running` run from a dead one).
    pub pid: u32,
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// When this file was last written (the run's heartbeat).
    pub last_written_at: Timestamp,
    pub status: RunStatus,
    /// The run directory (absolute).
    pub run_dir: PathBuf,
    pub logs: LogPaths,
    /// Steps of the plan as they ran.
    pub steps: Vec<StepRecord>,
    pub players: Vec<PlayerRecord>,
    pub matches: Vec<MatchRecord>,
    pub recordings: Vec<RecordingRecord>,
    /// Joins, leaves, kicks, failures, interrupts, in order.
    pub events: Vec<Event>,
}

impl Manifest {
    /// A manifest for a run that starts now (status `running`, nothing done yet); its start
    /// time is the one in the run directory's name.
    pub fn new(loaded: &LoadedScenario, run_dir: &RunDir) -> Self {
        let now = run_dir.started();
        Manifest {
            format_version: FormatVersion {
                major: FORMAT_MAJOR,
                minor: FORMAT_MINOR,
            },
            run_id: Uuid::new_v4(),
            tool: ToolInfo {
                name: env!("CARGO_PKG_NAME").into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            scenario: ScenarioInfo {
                path: loaded.path.clone(),
                sha256: loaded.sha256.clone(),
                overrides: loaded.overrides.iter().map(ToString::to_string).collect(),
                resolved: loaded.scenario.clone(),
            },
            host: HostInfo::current(),
            pid: std::process::id(),
            started_at: now,
            ended_at: None,
            last_written_at: now,
            status: RunStatus::Running,
            run_dir: run_dir.path().to_path_buf(),
            logs: LogPaths {
                oa_run: PathBuf::from(LOG_FILE),
                server_stderr: None,
                server_games_log: None,
            },
            steps: Vec::new(),
            players: Vec::new(),
            matches: Vec::new(),
            recordings: Vec::new(),
            events: Vec::new(),
        }
    }

    /// [`Manifest::new`] with the players (as known before the run) and every planned match
    /// (number, repeat, latency per player) filled in from the plan, so even an interrupted
    /// run's manifest shows the whole design.
    pub fn from_plan(loaded: &LoadedScenario, plan: &Plan, run_dir: &RunDir) -> Self {
        let mut m = Manifest::new(loaded, run_dir);
        for p in &plan.players {
            let mut rec = PlayerRecord::new(p.index, p.label.clone(), p.obs_port);
            rec.seat = p.seat.clone();
            rec.ip = p.ip;
            m.players.push(rec);
        }
        let map = loaded.scenario.matches.map.clone().or_else(|| {
            loaded
                .scenario
                .server
                .launch
                .as_ref()
                .map(|l| l.map.clone())
        });
        for pm in &plan.matches {
            m.matches.push(MatchRecord {
                number: pm.number,
                repeat: pm.repeat,
                map: map.clone(),
                started_at: None,
                ended_at: None,
                ended_by: None,
                end_detail: None,
                latency: pm
                    .latency_ms
                    .iter()
                    .enumerate()
                    .map(|(i, &ms)| PlayerLatency {
                        player: i as u32 + 1,
                        latency_ms: ms,
                    })
                    .collect(),
                shaping: None,
            });
        }
        m
    }

    /// Set the run's status; a final status also sets `ended_at`.
    pub fn set_status(&mut self, status: RunStatus) {
        if status.is_final() && self.ended_at.is_none() {
            self.ended_at = Some(Timestamp::now());
        }
        self.status = status;
    }

    /// Record that a plan step started (`index` 1-based).
    pub fn step_started(&mut self, index: u32, kind: &str, match_no: Option<u32>) {
        self.steps.push(StepRecord {
            index,
            kind: kind.to_string(),
            match_no,
            started_at: Timestamp::now(),
            ended_at: None,
            error: None,
        });
    }

    /// Record that the step started last with this index ended (`error` if it failed).
    pub fn step_finished(&mut self, index: u32, error: Option<String>) {
        if let Some(s) = self.steps.iter_mut().rev().find(|s| s.index == index) {
            s.ended_at = Some(Timestamp::now());
            s.error = error;
        }
    }

    /// Add a player, or replace the one with the same index. Returns it for further filling.
    pub fn add_player(&mut self, player: PlayerRecord) -> &mut PlayerRecord {
        let index = player.index;
        match self.players.iter().position(|p| p.index == index) {
            Some(pos) => self.players[pos] = player,
            None => {
                self.players.push(player);
                self.players.sort_by_key(|p| p.index);
            }
        }
        let pos = self
            .players
            .iter()
            .position(|p| p.index == index)
            .expect("the player was just stored");
        &mut self.players[pos]
    }

    pub fn player_mut(&mut self, index: u32) -> Option<&mut PlayerRecord> {
        self.players.iter_mut().find(|p| p.index == index)
    }

    /// The player currently holding a server slot (one who left no longer holds it).
    pub fn player_by_slot_mut(&mut self, slot: u32) -> Option<&mut PlayerRecord> {
        self.players
            .iter_mut()
            .find(|p| p.slot == Some(slot) && p.left_at.is_none())
    }

    /// Record a kick: on the player and as an event.
    pub fn kick(&mut self, player: u32, reason: impl Into<String>) {
        let reason = reason.into();
        let now = Timestamp::now();
        if let Some(p) = self.player_mut(player) {
            p.kicked = Some(Kick {
                at: now,
                reason: reason.clone(),
            });
            p.left_at.get_or_insert(now);
        }
        self.events.push(Event {
            at: now,
            kind: EventKind::Kick,
            player: Some(player),
            match_no: None,
            message: reason,
        });
    }

    pub fn match_mut(&mut self, number: u32) -> Option<&mut MatchRecord> {
        self.matches.iter_mut().find(|m| m.number == number)
    }

    /// Add a recording, or replace the one for the same player and match.
    pub fn add_recording(&mut self, rec: RecordingRecord) -> &mut RecordingRecord {
        let pos = match self
            .recordings
            .iter()
            .position(|r| r.player == rec.player && r.match_no == rec.match_no)
        {
            Some(pos) => {
                self.recordings[pos] = rec;
                pos
            }
            None => {
                self.recordings.push(rec);
                self.recordings.len() - 1
            }
        };
        &mut self.recordings[pos]
    }

    pub fn recording_mut(&mut self, player: u32, match_no: u32) -> Option<&mut RecordingRecord> {
        self.recordings
            .iter_mut()
            .find(|r| r.player == player && r.match_no == match_no)
    }

    pub fn push_event(&mut self, event: Event) {
        self.events.push(event);
    }

    /// A few lines for the end of a run: status, matches, recordings, kicks, where things are.
    pub fn summary(&self) -> String {
        let played = self.matches.iter().filter(|m| m.ended_at.is_some()).count();
        let ok = self
            .recordings
            .iter()
            .filter(|r| r.stopped_at.is_some() && r.error.is_none())
            .count();
        let planned = self.matches.len() * self.players.len();
        let kicks = self
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Kick)
            .count();
        let problems = self
            .events
            .iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    EventKind::ObsFailure
                        | EventKind::RecordingFailure
                        | EventKind::LatencyFailure
                        | EventKind::ServerFailure
                        | EventKind::Failure
                        | EventKind::Warning
                )
            })
            .count();
        let status = match &self.status {
            RunStatus::Failed { reason, .. } => format!("failed: {reason}"),
            RunStatus::Interrupted { reason, .. } => format!("interrupted: {reason}"),
            s => s.name().to_string(),
        };
        let mut s = format!(
            "run {} {status}\n  matches played: {played}/{}\n  recordings complete: {ok}/{planned}\n  kicks: {kicks}, failures and warnings: {problems}\n  manifest: {}\n",
            self.run_id,
            self.matches.len(),
            self.run_dir.join(MANIFEST_FILE).display(),
        );
        for r in &self.recordings {
            let what = match (&r.path, &r.error) {
                (_, Some(e)) => format!("FAILED: {e}"),
                (Some(p), None) => p.clone(),
                (None, None) => "(not recorded)".into(),
            };
            s.push_str(&format!("  m{} player{}: {}\n", r.match_no, r.player, what));
        }
        s
    }
}

/// The manifest schema as committed in `schemas/manifest.schema.json` (draft-07).
pub fn manifest_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(crate::schema::generate::<Manifest>)
}

// ------------------------------------------------------------------------------------------
// The run directory
// ------------------------------------------------------------------------------------------

/// `<output.dir>/<scenario name>-<UTC start, YYYYmmddTHHMMSSZ>/`: manifest, oa-run's log, the
/// server's stderr.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
    started: Timestamp,
}

impl RunDir {
    /// Create a fresh run directory (parents as needed). Fails if it already exists: a run
    /// never writes into another run's directory.
    pub fn create(
        output_dir: &Path,
        scenario_name: &str,
        started: Timestamp,
    ) -> Result<RunDir, ManifestError> {
        let name = format!("{scenario_name}-{}", started.compact());
        // The scenario name is checked by the schema; this keeps the directory inside
        // output.dir whatever reaches here.
        if crate::plan::names::check_file_name(&name).is_err() || name.contains(['/', '\\']) {
            return Err(ManifestError::BadName(scenario_name.to_string()));
        }
        std::fs::create_dir_all(output_dir).map_err(|e| ManifestError::CreateRunDir {
            path: output_dir.to_path_buf(),
            source: e,
        })?;
        let path = std::path::absolute(output_dir.join(&name)).map_err(|e| {
            ManifestError::CreateRunDir {
                path: output_dir.join(&name),
                source: e,
            }
        })?;
        match std::fs::create_dir(&path) {
            Ok(()) => Ok(RunDir { path, started }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(ManifestError::RunDirExists(path))
            }
            Err(e) => Err(ManifestError::CreateRunDir { path, source: e }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The run's start time (the one in the directory name).
    pub fn started(&self) -> Timestamp {
        self.started
    }
    pub fn manifest_path(&self) -> PathBuf {
        self.path.join(MANIFEST_FILE)
    }
    pub fn log_path(&self) -> PathBuf {
        self.path.join(LOG_FILE)
    }
    pub fn server_stderr_path(&self) -> PathBuf {
        self.path.join(SERVER_STDERR_FILE)
    }

    /// oa-run's log file, opened for appending (hand it to a tracing writer).
    pub fn open_log(&self) -> Result<File, ManifestError> {
        let path = self.log_path();
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| ManifestError::OpenLog { path, source })
    }

    /// A fresh file for the launched server's stderr (pass it as the child's stderr).
    pub fn create_server_stderr(&self) -> Result<File, ManifestError> {
        let path = self.server_stderr_path();
        OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(|source| ManifestError::OpenLog { path, source })
    }
}

// ------------------------------------------------------------------------------------------
// The atomic writer
// ------------------------------------------------------------------------------------------

/// Writes `manifest.json` in a run directory, atomically, every time it is asked to.
#[derive(Debug)]
pub struct ManifestWriter {
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
}

impl ManifestWriter {
    /// Start the manifest of a run: writes it at once (normally with status `running`).
    /// Fails if the directory already holds a manifest.
    pub fn create(run_dir: &Path, manifest: &mut Manifest) -> Result<Self, ManifestError> {
        let w = ManifestWriter {
            dir: run_dir.to_path_buf(),
            path: run_dir.join(MANIFEST_FILE),
            tmp: run_dir.join(TEMP_FILE),
        };
        if w.path.exists() {
            return Err(ManifestError::ManifestExists(w.path));
        }
        w.write(manifest)?;
        Ok(w)
    }

    /// A writer for a run directory whose manifest already exists (the forced-exit hook's last
    /// word on a run). Writes are still atomic; the caller must be the only writer.
    pub fn reopen(run_dir: &Path) -> Self {
        ManifestWriter {
            dir: run_dir.to_path_buf(),
            path: run_dir.join(MANIFEST_FILE),
            tmp: run_dir.join(TEMP_FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replace manifest.json with `manifest` (setting its `last_written_at`). After an error
    /// the previous file is still there, complete.
    pub fn write(&self, manifest: &mut Manifest) -> Result<(), ManifestError> {
        manifest.last_written_at = Timestamp::now();
        let mut bytes = serde_json::to_vec_pretty(manifest)?;
        bytes.push(b'\n');
        self.stage(&bytes)?;
        self.commit()
    }

    /// Write and fsync the temp file. A crash after this leaves manifest.json untouched.
    fn stage(&self, bytes: &[u8]) -> Result<(), ManifestError> {
        let res = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&self.tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        res.map_err(|e| {
            let _ = std::fs::remove_file(&self.tmp);
            self.write_error(e)
        })
    }

    /// Rename the temp file over manifest.json, then fsync the directory so the rename itself
    /// survives a power cut.
    fn commit(&self) -> Result<(), ManifestError> {
        if let Err(e) = std::fs::rename(&self.tmp, &self.path) {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(self.write_error(e));
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.write_error(e))
    }

    fn write_error(&self, source: std::io::Error) -> ManifestError {
        ManifestError::Write {
            path: self.path.clone(),
            source,
        }
    }
}

/// Read a manifest back (tests, `runs show`).
pub fn read(path: &Path) -> Result<Manifest, crate::Error> {
    let bytes = std::fs::read(path).map_err(|e| crate::Error::Io {
        what: format!("cannot read {}", path.display()),
        source: e,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| crate::Error::Io {
        what: format!("{} is not a valid manifest", path.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::secret::REDACTED;
    use crate::scenario::{Override, SecretsMode, load_str};
    use std::collections::BTreeMap;

    const SCENARIO: &str = r#"
name: unit
server:
  launch: {}
  address: 127.0.0.1:27960
  rcon_password: ${RCON}
players:
  humans: 2
  seats:
    - { name: pc1, ip: 10.77.0.11 }
    - { name: pc2, ip: 10.77.0.12, obs: { port: 4456, password: "${SEATPW}" } }
warmup: { duration: 10s }
matches: { timelimit: 20s }
latency: { interface: lo, levels: [0ms, 100ms], shaper: none }
obs:
  password: ${OBSPW}
  recording: {}
"#;

    fn loaded(overrides: &[&str]) -> LoadedScenario {
        let env: BTreeMap<String, String> = [
            ("RCON", "rcon-hunter2"),
            ("OBSPW", "obs-hunter2"),
            ("SEATPW", "seat-hunter2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let ov: Vec<Override> = overrides
            .iter()
            .map(|s| Override::parse(s).unwrap())
            .collect();
        load_str("unit.yaml", SCENARIO, &ov, &env, SecretsMode::Required)
            .unwrap_or_else(|e| panic!("scenario loads: {e:?}"))
    }

    fn sample(dir: &Path) -> (RunDir, Manifest) {
        let l = loaded(&["matches.repeats=1", "obs.password=set-hunter2"]);
        let plan = crate::plan::compile(&l).unwrap();
        let rd = RunDir::create(dir, "unit", Timestamp::now()).unwrap();
        let m = Manifest::from_plan(&l, &plan, &rd);
        (rd, m)
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn run_dir_is_named_by_scenario_and_utc_time_and_never_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let t = Timestamp::from(
            DateTime::parse_from_rfc3339("2026-03-04T05:06:07.890Z")
                .unwrap()
                .with_timezone(&Utc),
        );
        let out = tmp.path().join("runs/nested");
        let rd = RunDir::create(&out, "study", t).unwrap();
        assert_eq!(rd.path(), out.join("study-20260304T050607Z"));
        assert!(rd.path().is_dir() && rd.path().is_absolute());
        let err = RunDir::create(&out, "study", t).unwrap_err();
        assert!(matches!(err, ManifestError::RunDirExists(_)), "{err}");
        assert!(err.to_string().contains("already exists"));
        assert_eq!(crate::Error::from(err).exit_code(), 74);
    }

    #[test]
    fn run_dir_under_a_file_fails_clearly() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let err = RunDir::create(&file, "study", Timestamp::now()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("cannot create the run directory"), "{msg}");
        assert!(msg.contains("not-a-dir"), "{msg}");
        assert_eq!(crate::Error::from(err).exit_code(), 74);
    }

    #[test]
    fn run_dir_rejects_names_that_escape() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["../x", "a/b", ".hidden"] {
            assert!(
                matches!(
                    RunDir::create(tmp.path(), bad, Timestamp::now()),
                    Err(ManifestError::BadName(_))
                ),
                "{bad}"
            );
        }
        assert!(entries(tmp.path()).is_empty());
    }

    #[test]
    fn writes_are_atomic_and_leave_no_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let (rd, mut m) = sample(tmp.path());
        let w = ManifestWriter::create(rd.path(), &mut m).unwrap();
        assert_eq!(read(w.path()).unwrap().status, RunStatus::Running);
        for i in 0..20 {
            m.push_event(Event::new(EventKind::Info, format!("step {i}")));
            w.write(&mut m).unwrap();
            // Valid JSON after every write, with exactly what was written.
            let back = read(w.path()).unwrap();
            assert_eq!(back.events.len(), i + 1);
            assert_eq!(entries(rd.path()), vec![MANIFEST_FILE.to_string()]);
        }
        // Creating a second writer for the same run directory is refused.
        let err = ManifestWriter::create(rd.path(), &mut m).unwrap_err();
        assert!(matches!(err, ManifestError::ManifestExists(_)));
    }

    #[test]
    fn a_crash_between_writes_leaves_the_previous_version() {
        let tmp = tempfile::tempdir().unwrap();
        let (rd, mut m) = sample(tmp.path());
        let w = ManifestWriter::create(rd.path(), &mut m).unwrap();
        m.push_event(Event::new(EventKind::Info, "committed"));
        w.write(&mut m).unwrap();
        let before = std::fs::read(w.path()).unwrap();

        // Crash after the temp file is written but before the rename: a half-written temp
        // file (truncated JSON) is left behind, as a SIGKILL mid-write would leave it.
        m.push_event(Event::new(EventKind::Info, "lost"));
        let full = serde_json::to_vec_pretty(&m).unwrap();
        w.stage(&full[..full.len() / 2]).unwrap();
        assert_eq!(std::fs::read(w.path()).unwrap(), before);
        let back = read(w.path()).unwrap();
        assert_eq!(back.events.last().unwrap().message, "committed");

        // The next write after a restart of the writer replaces the leftover temp file.
        w.write(&mut m).unwrap();
        assert_eq!(entries(rd.path()), vec![MANIFEST_FILE.to_string()]);
        assert_eq!(
            read(w.path()).unwrap().events.last().unwrap().message,
            "lost"
        );
    }

    #[test]
    fn a_failed_write_keeps_the_previous_file_and_maps_to_exit_74() {
        let tmp = tempfile::tempdir().unwrap();
        let (rd, mut m) = sample(tmp.path());
        let w = ManifestWriter::create(rd.path(), &mut m).unwrap();
        let before = std::fs::read(w.path()).unwrap();
        // A directory where the temp file should go makes the write fail (as root, permission
        // bits would not).
        std::fs::create_dir(rd.path().join(TEMP_FILE)).unwrap();
        let err = w.write(&mut m).unwrap_err();
        assert!(
            err.to_string().contains("cannot write the manifest"),
            "{err}"
        );
        assert_eq!(crate::Error::from(err).exit_code(), 74);
        assert_eq!(std::fs::read(w.path()).unwrap(), before);
    }

    #[test]
    fn secrets_never_reach_the_manifest() {
        let tmp = tempfile::tempdir().unwrap();
        let l = loaded(&[
            "obs.password=set-hunter2",
            "players.seats[0].obs.password=seat0-hunter2",
            "players.seats.1.obs={port: 4457, password: obj-hunter2}",
            "matches.repeats=1",
        ]);
        let plan = crate::plan::compile(&l).unwrap();
        let rd = RunDir::create(tmp.path(), "unit", Timestamp::now()).unwrap();
        let mut m = Manifest::from_plan(&l, &plan, &rd);
        let w = ManifestWriter::create(rd.path(), &mut m).unwrap();
        let text = std::fs::read_to_string(w.path()).unwrap();
        assert!(!text.contains("hunter2"), "a secret leaked:\n{text}");
        // The secrets are really in the loaded scenario; the manifest shows them redacted.
        assert_eq!(l.scenario.obs.password.expose(), "set-hunter2");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["scenario"]["resolved"]["obs"]["password"], "***");
        assert_eq!(v["scenario"]["resolved"]["server"]["rcon_password"], "***");
        assert_eq!(
            v["scenario"]["overrides"],
            serde_json::json!([
                "obs.password=***",
                "players.seats[0].obs.password=***",
                "players.seats.1.obs=***",
                "matches.repeats=1"
            ])
        );
        assert!(!format!("{m:?}").contains("hunter2"));
    }

    #[test]
    fn secret_paths_come_from_the_schema() {
        for p in [
            "server.rcon_password",
            "server",
            "obs",
            "obs.password",
            "players",
            "players.seats",
            "players.seats[3].obs",
            "players.seats.3.obs.password",
            "no.such.path",
        ] {
            assert!(crate::schema::touches_secret(p), "{p}");
        }
        for p in [
            "matches.repeats",
            "obs.port",
            "obs.recording.name",
            "players.humans",
            "players.seats[0].ip",
            "latency",
            "name",
        ] {
            assert!(!crate::schema::touches_secret(p), "{p}");
        }
    }

    #[test]
    fn round_trip_of_a_full_manifest() {
        let tmp = tempfile::tempdir().unwrap();
        let (rd, mut m) = sample(tmp.path());
        fill(&mut m);
        let w = ManifestWriter::create(rd.path(), &mut m).unwrap();
        let back = read(w.path()).unwrap();
        // Secrets come back as `***`: compare everything else.
        let mut expect = m.clone();
        expect.scenario.resolved = back.scenario.resolved.clone();
        assert_eq!(back, expect);
        assert_eq!(back.scenario.resolved.obs.password.expose(), REDACTED);
        assert_eq!(back.scenario.resolved.name, "unit");
    }

    /// A manifest with every kind of record, as a finished run would have.
    pub(crate) fn fill(m: &mut Manifest) {
        let t0 = Timestamp::now();
        m.step_started(1, "preflight", None);
        m.step_finished(1, None);
        m.step_started(2, "play_match", Some(1));
        m.step_finished(2, Some("server died".into()));
        let p = m.player_mut(1).unwrap();
        p.slot = Some(3);
        p.name_raw = Some("^1Play\"er\\1".into());
        p.name_clean = Some("Player1".into());
        p.joined_at = Some(t0);
        p.obs.host = Some("10.77.0.11".into());
        p.obs.connected_at = Some(t0);
        p.obs.obs_version = Some("29.0.2".into());
        p.obs.websocket_version = Some("5.1.0".into());
        p.obs.rpc_version = Some(1);
        m.push_event(Event::new(EventKind::Join, "pc1 joined").player(1));
        m.kick(2, "OBS unreachable: connection refused");
        let mm = m.match_mut(1).unwrap();
        mm.started_at = Some(t0);
        mm.ended_at = Some(Timestamp::now());
        mm.ended_by = Some(MatchEnding::Runner);
        mm.end_detail = Some("20s elapsed".into());
        mm.shaping = Some(ShapingRecord {
            applied: false,
            at: Some(t0),
            config: serde_json::json!({"shaper": "none", "classes": []}),
            error: None,
        });
        m.add_recording(RecordingRecord::planned(1, 1, "unit_m1_pc1_0ms"));
        let r = m.recording_mut(1, 1).unwrap();
        r.path = Some("/tmp/oa-lab/pc1/recordings/unit_m1_pc1_0ms.mkv".into());
        r.started_at = Some(t0);
        r.stopped_at = Some(Timestamp::now());
        r.bytes = Some(12345);
        r.duration_ms = Some(20_000);
        let mut r2 = RecordingRecord::planned(2, 1, "unit_m1_pc2_100ms");
        r2.error = Some("OBS answered 500 (OutputRunning)".into());
        r.start_skew_ms = Some(0);
        m.add_recording(r2);
        m.logs.server_stderr = Some(PathBuf::from(SERVER_STDERR_FILE));
        m.set_status(RunStatus::Interrupted {
            signal: Some("SIGINT".into()),
            reason: "Ctrl-C during match 1".into(),
        });
    }

    #[test]
    fn incremental_helpers_behave() {
        let tmp = tempfile::tempdir().unwrap();
        let (rd, mut m) = sample(tmp.path());
        assert_eq!(m.started_at, rd.started());
        assert!(
            rd.path()
                .to_string_lossy()
                .ends_with(&format!("unit-{}", m.started_at.compact()))
        );
        assert_eq!(m.players.len(), 2);
        assert_eq!(m.players[0].seat.as_deref(), Some("pc1"));
        assert_eq!(m.players[1].obs.port, 4456);
        assert_eq!(m.matches.len(), 2);
        assert_eq!(m.matches[0].latency.len(), 2);
        // A player found at run time (no seats) is added; replacing keeps one entry.
        m.add_player(PlayerRecord::new(3, "late", 4455)).slot = Some(7);
        m.add_player(PlayerRecord::new(3, "late", 4455)).slot = Some(8);
        assert_eq!(m.players.len(), 3);
        assert_eq!(m.player_by_slot_mut(8).unwrap().index, 3);
        m.add_player(PlayerRecord::new(0, "zero", 4455)).label = "first".into();
        assert_eq!(m.players[0].label, "first");
        assert!(m.player_by_slot_mut(7).is_none());
        // Final status sets ended_at once.
        assert!(m.ended_at.is_none());
        m.set_status(RunStatus::Completed);
        let ended = m.ended_at;
        assert!(ended.is_some());
        m.set_status(RunStatus::Failed {
            reason: "x".into(),
            exit_code: 1,
        });
        assert_eq!(m.ended_at, ended);
        assert!(m.summary().contains("failed: x"));
    }

    #[test]
    fn timestamps_are_rfc3339_with_milliseconds() {
        let t = Timestamp::from(
            DateTime::parse_from_rfc3339("2026-11-22T14:03:07.125999+02:00")
                .unwrap()
                .with_timezone(&Utc),
        );
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2026-11-22T12:03:07.125Z\""
        );
        assert_eq!(t.compact(), "20261122T120307Z");
        let back: Timestamp = serde_json::from_str("\"2026-11-22T12:03:07.125Z\"").unwrap();
        assert_eq!(back, t);
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}
