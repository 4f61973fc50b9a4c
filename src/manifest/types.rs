//! The manifest's types: what a run records, field by field (the schema is generated from these).

use std::net::IpAddr;
use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use uuid::Uuid;

use super::{FORMAT_MAJOR, FORMAT_MINOR, LOG_FILE, RunDir};
use crate::plan::Plan;
use crate::plan::design::SeedSource;
use crate::scenario::{Assign, LoadedScenario, Scenario};

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
    /// The git commit oa-run was built from; absent when it was built outside a git checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Whether oa-run's tracked source files differed from `commit` when it was built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty: Option<bool>,
}

impl ToolInfo {
    /// This oa-run binary.
    pub fn current() -> Self {
        ToolInfo {
            name: env!("CARGO_PKG_NAME").into(),
            version: crate::build_info::VERSION.into(),
            commit: crate::build_info::commit().map(Into::into),
            dirty: crate::build_info::dirty(),
        }
    }

    /// `oa-run 0.1.0 (commit 1a2b3c4d5e6f, dirty)`.
    pub fn describe(&self) -> String {
        format!(
            "{} {}",
            self.name,
            crate::build_info::describe_parts(&self.version, self.commit.as_deref(), self.dirty)
        )
    }
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
    /// The version-control state of the scenario file when the run started; absent when it
    /// could not be read (git not installed, the repository refused, the file not on disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<ScenarioGit>,
}

/// The git repository holding the scenario file, read with the `git` command.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct ScenarioGit {
    /// Whether the scenario file is inside a git work tree (the other fields are absent if not).
    pub in_repo: bool,
    /// The full hash of HEAD, absent in a repository without commits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The checked-out branch; absent when HEAD is detached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Whether the file differs from HEAD: modified, staged, or not committed at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_dirty: Option<bool>,
    /// Whether any tracked file of the repository differs from HEAD (untracked files do not
    /// count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_dirty: Option<bool>,
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
    /// oa-run died without cleaning up (SIGKILL, power cut); a later `oa-run recover` (or the
    /// next run) found it and cleaned up what it could.
    Crashed {
        /// When the recovery ran.
        recovered_at: Timestamp,
        /// Recordings this run had started that were still running and were stopped (their
        /// files are final; paths in `recordings`).
        recordings_stopped: u32,
        /// The leftover latency tree (tc) or rules (iptables) removed, one sentence each.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        latency_removed: Vec<String>,
        /// What could not be recovered, one sentence each.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        problems: Vec<String>,
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
            RunStatus::Crashed { .. } => "crashed",
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
    /// 1-based player index: seat order, else join order. The design row it follows is in
    /// `design.rows` (the same as the index with `design.assign: in_order`).
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
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
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
    /// A team reached the capturelimit (team modes).
    Capturelimit,
    /// oa-run ended it after the planned duration.
    Runner,
    /// It ran past the timelimit plus the allowed overtime and oa-run ended it.
    Overtime,
    /// Cut short by an error or an interrupt.
    Aborted,
}

impl MatchEnding {
    /// Words for the terminal and reports.
    pub fn describe(&self) -> &'static str {
        match self {
            MatchEnding::Timelimit => "the server's timelimit",
            MatchEnding::Fraglimit => "the fraglimit",
            MatchEnding::Capturelimit => "the capturelimit",
            MatchEnding::Runner => "oa-run after the planned duration",
            MatchEnding::Overtime => "oa-run after the overtime ran out",
            MatchEnding::Aborted => "an abort",
        }
    }
}

/// The latency one player had in a match.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct PlayerLatency {
    /// Player index (1-based).
    pub player: u32,
    /// Added round-trip delay in milliseconds, as planned.
    pub latency_ms: u64,
    /// Jitter around the delay in milliseconds (uniform), as planned; absent when the study's
    /// levels have no jitter or loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
    /// Share of game packets dropped per shaped direction, in percent, as planned; absent when
    /// the study's levels have no jitter or loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_pct: Option<f64>,
    /// What the player really had in this match, measured (absent until the match ended, when
    /// the server never reported this player's ping, and in manifests older than format 1.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<MeasuredLatency>,
}

/// Count, median and 95th percentile (nearest rank) of a set of round trips, ms.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct RttStats {
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

impl From<crate::measure::Stats> for RttStats {
    fn from(s: crate::measure::Stats) -> Self {
        RttStats {
            count: s.count,
            p50_ms: s.p50_ms,
            p95_ms: s.p95_ms,
        }
    }
}

/// The latency a player really had in a match: the server's ping for them, sampled every ~2 s
/// (rcon `status`; quantised by the server's frame time and averaged over its last 32 frames),
/// against their baseline from the warmup, which has no added delay.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct MeasuredLatency {
    /// The server's ping for this player during the match: sample count, p50, p95.
    pub ping: RttStats,
    /// The same in the warmup (or, without warmup samples, the practice match): no added delay.
    /// Absent when neither gave a sample; then nothing is judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<RttStats>,
    /// The planned added round trip, ms.
    pub planned_ms: f64,
    /// Measured added latency: ping p50 − baseline p50, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_ms: Option<f64>,
    /// added − planned, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deviation_ms: Option<f64>,
    /// How far it may be off (`latency.tolerance`), ms.
    pub allowed_ms: f64,
    /// Whether the deviation is within the tolerance; `false` is the deviation flag. Absent
    /// without a baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<bool>,
    /// The path's base round trip: ICMP echo to the player's address (never shaped, so it
    /// shows the network without the added delay); `null` where the address does not answer.
    pub icmp: Option<RttStats>,
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

/// The study's randomisation: with `seed` (and the scenario) the plan can be made again.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct DesignRecord {
    /// Seed of every random choice of the design.
    pub seed: u64,
    /// `scenario` if `design.seed` gave it, `drawn` if oa-run drew it for this run.
    pub seed_source: SeedSource,
    /// How players were mapped to the design's rows.
    pub assign: Assign,
    /// Whether latency values were mapped to the square's symbols at random.
    pub shuffle_levels: bool,
    /// Which row of the latency square each player (by index) follows.
    pub rows: Vec<PlayerRow>,
    /// Which latency value each symbol of the square stands for.
    pub symbols: Vec<SymbolLevel>,
}

/// One player's row of the latency square.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct PlayerRow {
    /// Player index (1-based; seat order, else join order).
    pub player: u32,
    /// Row of the square (1-based).
    pub row: u32,
}

/// The latency value one symbol of the square stands for.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct SymbolLevel {
    /// Symbol of the square (`A`, `B`, …; `S27`, … beyond 26).
    pub symbol: String,
    /// Added round-trip delay in milliseconds.
    pub latency_ms: u64,
}

impl DesignRecord {
    pub fn from_plan(plan: &Plan) -> Self {
        let d = &plan.design;
        DesignRecord {
            seed: d.seed,
            seed_source: d.seed_source,
            assign: d.assign,
            shuffle_levels: d.shuffle_levels,
            rows: d
                .rows
                .iter()
                .enumerate()
                .map(|(i, &r)| PlayerRow {
                    player: i as u32 + 1,
                    row: r + 1,
                })
                .collect(),
            symbols: d
                .symbols
                .iter()
                .enumerate()
                .map(|(j, &l)| SymbolLevel {
                    symbol: crate::plan::render::symbol_name(j),
                    latency_ms: plan.latency.levels_ms.get(l as usize).copied().unwrap_or(0),
                })
                .collect(),
        }
    }
}

/// One match.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct MatchRecord {
    /// 1-based; the practice match is 0.
    pub number: u32,
    /// 1-based repeat of the latency design; 0 for the practice match.
    pub repeat: u32,
    /// The practice match: played at no added latency and recorded, but not part of the
    /// design (leave it out of the analysis).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub practice: bool,
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
    /// Spread of the recordings' `match_start_offset_ms` (largest minus smallest), ms: how far
    /// apart the files started relative to the match. Replaces the old start skew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alignment_spread_ms: Option<i64>,
    /// The largest error bound of those offsets, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alignment_error_ms: Option<f64>,
    /// What every player (humans and bots, by slot) did in this match, from the server's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<MatchStatsRecord>,
    /// Completed in the run this one resumes (that run's id); not played here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_in: Option<String>,
    /// This match replays match N, whose recording was lost (`obs.on_lost: replay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<u32>,
}

/// One health finding about a running recording.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct HealthNote {
    pub at: Timestamp,
    #[serde(flatten)]
    pub issue: crate::obs::health::HealthIssue,
}

/// Per-player outcomes of one match, counted from trusted games.log lines between the
/// match's start and its end.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct MatchStatsRecord {
    /// One entry per player per stay in the match (a slot freed and taken again by someone
    /// else gives two entries).
    pub players: Vec<PlayerMatchStats>,
    /// Log lines not used because they may have been forged (written in the same burst as a
    /// line a client could cut with a newline in a name, userinfo field or chat).
    pub untrusted_lines: u32,
    /// Kill lines that named a slot not in the match; not counted.
    pub rejected_kills: u32,
}

/// Who a slot belonged to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantKind {
    Human,
    Bot,
    /// Not known (seen in the log before `status` said who it is).
    Unknown,
}

/// What one player did in one match.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct PlayerMatchStats {
    /// Server client slot (the key; names are not unique).
    pub slot: u32,
    /// The study's player index (1-based) for a human in the study.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub player: Option<u32>,
    pub kind: ParticipantKind,
    /// The name without colour codes or control characters (display only).
    pub name: String,
    /// Other players this player killed.
    pub kills: u32,
    /// Times this player died, however.
    pub deaths: u32,
    /// Deaths by the player's own hand (own rocket, `/kill`, team change).
    pub suicides: u32,
    /// Deaths by `<world>` (falling, lava, crushers, trigger_hurt); no player is credited.
    pub world_deaths: u32,
    /// Kills per means of death (`railgun`, `rocket_splash`, `gauntlet`, …).
    pub kills_by_weapon: std::collections::BTreeMap<String, u32>,
    /// Final score from the scoreboard the server logs after `Exit:`; absent if the player was
    /// not on it (left early, or the match was not ended by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<i32>,
    /// Seconds this player was in the match (from the start, or from joining late, to the
    /// end, or to leaving early): divide counts by it for rates.
    pub time_in_match_s: f64,
    /// Joined after the match started.
    pub joined_late: bool,
    /// Left before the match ended.
    pub left_early: bool,
}

/// One recording of one player in one match.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
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
    /// Event-arrival time: when oa-run received OBS's RecordStateChanged STARTED. OBS began
    /// the file earlier (tens of ms); `timeline_started_at` is the estimate from OBS's own timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// Event-arrival time: when oa-run received RecordStateChanged STOPPED (the file is complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<Timestamp>,
    /// Size of the file, from GetRecordStatus just before StopRecord.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// OBS's outputDuration just before StopRecord (frames x frame interval), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Where the match begins in this file's own timeline, ms from the file's first frame
    /// (OBS's timeline sampled at the match start; see `alignment`). Cut here to align files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_start_offset_ms: Option<i64>,
    /// Where the match ends in this file's own timeline, ms from the file's first frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_end_offset_ms: Option<i64>,
    /// When the file's timeline began, on oa-run's wall clock: the match start minus
    /// `match_start_offset_ms` (from the sample, not from an event's arrival).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline_started_at: Option<Timestamp>,
    /// How the offsets were measured, their error bounds, and why a file cannot be aligned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alignment: Option<Alignment>,
    /// What went wrong while it ran (OBS dropped, exited, stopped it, low disk, lost frames).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<HealthNote>,
    /// Frames written, skipped and lagged while the match ran (from OBS's stats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<crate::obs::health::FrameReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What is unexpected about `path` (kept as OBS reported it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_flags: Vec<PathFlag>,
}

/// Something unexpected about a recording's reported path.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PathFlag {
    /// The file is not named as planned (OBS adds ` (2)` when that file exists, or the name
    /// was changed outside oa-run).
    NotPlannedName,
    /// The path is not inside the directory the OBS said it records to (`GetRecordDirectory`).
    OutsideRecordDirectory,
}

/// Which edge of a match a timeline sample belongs to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MatchEdge {
    Start,
    End,
}

/// The moment a match edge is taken from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AlignmentReference {
    /// Start: oa-run read the match's `InitGame` line in games.log (the moment `match_started`
    /// refers to). End: oa-run read the match's `Exit:` line, or ended the match itself.
    GamesLog,
}

/// One GetRecordStatus answer, turned into the position of a match edge in the file.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct EdgeSample {
    /// Where the edge lies in the file's timeline, ms (negative: before the file's first frame).
    pub offset_ms: f64,
    /// Error bound of `offset_ms`, ms: half the longest round trip, plus the frame interval when
    /// OBS counts its timeline in frames (obs-websocket 5.x does: outputDuration = frames x
    /// interval), plus the encoder lag's own bound where it was corrected for.
    pub error_ms: f64,
    /// The slowest round trip of the edge's GetRecordStatus polls, ms (it bounds the error).
    pub rtt_ms: f64,
    /// The fastest of them: the network round trip plus OBS's quickest answer. A shaped path
    /// would delay every poll; OBS busy for a moment delays only some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_min_ms: Option<f64>,
    /// OBS's frame interval, ms, where OBS told it (GetVideoSettings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_ms: Option<f64>,
    /// How far OBS's frame count (outputDuration counts encoded packets) ran behind the file,
    /// ms, as measured right after the recording started; added to outputDuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_lag_ms: Option<f64>,
    /// Whether OBS was recording when it answered.
    pub output_active: bool,
    /// OBS's outputDuration in the answer, ms.
    pub output_duration_ms: u64,
    /// From the edge to the middle of the request's round trip, on oa-run's monotonic clock, ms.
    pub sampled_after_ms: f64,
    /// From the match start to this edge on oa-run's monotonic clock, ms (0 for the start).
    pub match_elapsed_ms: f64,
    /// The edge's wall-clock time on oa-run.
    pub reference_at: Timestamp,
}

/// How a recording was placed on the match: the samples behind its offsets.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Alignment {
    /// The event both edges are taken from.
    pub reference: AlignmentReference,
    /// The sample taken when the match started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<EdgeSample>,
    /// The sample taken when the match ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<EdgeSample>,
    /// The file's span between the edges minus the match's length on oa-run's monotonic clock,
    /// ms (negative: OBS's timeline lost time, e.g. dropped or lagged frames).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_ms: Option<f64>,
    /// Why this file cannot be aligned to the match, as sentences (empty: it can).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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
            match_start_offset_ms: None,
            match_end_offset_ms: None,
            timeline_started_at: None,
            alignment: None,
            error: None,
            health: Vec::new(),
            frames: None,
            path_flags: Vec::new(),
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
    /// The randomisation of the latency design (absent in manifests older than format 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub design: Option<DesignRecord>,
    pub matches: Vec<MatchRecord>,
    pub recordings: Vec<RecordingRecord>,
    /// Joins, leaves, kicks, failures, interrupts, in order.
    pub events: Vec<Event>,
    /// This run continues an earlier one (`oa-run resume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<ResumedFrom>,
    /// Every webhook delivery (`notify`), delivered or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<DeliveryRecord>,
    /// The questionnaire after each match: one record per player × match asked, answered or
    /// missing (`questionnaire` in the scenario; absent in manifests older than format 1.2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ratings: Vec<RatingRecord>,
}

/// One player's questionnaire after one match.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct RatingRecord {
    #[serde(rename = "match")]
    pub match_no: u32,
    pub player: u32,
    pub status: RatingStatus,
    /// When the questionnaire was opened for this player.
    pub opened_at: Timestamp,
    /// When the answer arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<Timestamp>,
    /// Item id → answer; items left blank are absent. Text is the player's raw input.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub answers: std::collections::BTreeMap<String, Answer>,
}

/// Where one player's questionnaire stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RatingStatus {
    /// Open; no answer yet.
    Waiting,
    Answered,
    /// No answer before the timeout (or the player left, or the run stopped).
    Missing,
}

impl RatingStatus {
    pub fn name(self) -> &'static str {
        match self {
            RatingStatus::Waiting => "waiting",
            RatingStatus::Answered => "answered",
            RatingStatus::Missing => "missing",
        }
    }
}

/// One item's answer: a likert value, or the chosen option / the text as given.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(untagged)]
pub enum Answer {
    Scale(i64),
    Text(String),
}

/// Where a resumed run starts, and what it continues.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ResumedFrom {
    /// The run this one continues.
    pub run_id: String,
    pub run_dir: PathBuf,
    /// That run's status when it was resumed (`interrupted`, `failed`, `crashed`, …).
    pub previous_status: String,
    /// Matches completed there and not played again.
    pub completed_matches: Vec<u32>,
    /// The first match played here (the earlier attempt's recordings of it are partial).
    pub from_match: u32,
    /// `--force`: the scenario file changed since that run, and that was accepted.
    pub forced: bool,
}

/// One webhook delivery: an event POSTed to one `notify` entry, with its retries.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct DeliveryRecord {
    /// 0-based position of the webhook in the scenario's `notify` list.
    pub webhook: u32,
    /// `scheme://host:port` of the webhook (its path may hold a credential, so it is left out).
    pub target: String,
    /// The `X-OA-Run-Delivery` id (the same on every retry).
    pub delivery: String,
    /// The event delivered: its `seq` and `type`.
    pub seq: u64,
    pub event: String,
    /// Whether a 2xx answer came back.
    pub ok: bool,
    /// POSTs made (1 = no retry).
    pub attempts: u32,
    /// The last HTTP status, if any answer came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed (last attempt), or why it was dropped unsent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the last attempt finished.
    pub at: Timestamp,
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
            tool: ToolInfo::current(),
            scenario: ScenarioInfo {
                path: loaded.path.clone(),
                sha256: loaded.sha256.clone(),
                overrides: loaded.overrides.iter().map(ToString::to_string).collect(),
                resolved: loaded.scenario.clone(),
                git: super::provenance::scenario_git(&loaded.path),
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
            design: None,
            matches: Vec::new(),
            recordings: Vec::new(),
            events: Vec::new(),
            notifications: Vec::new(),
            ratings: Vec::new(),
            resumed_from: None,
        }
    }

    /// [`Manifest::new`] with the players (as known before the run) and every planned match
    /// (number, repeat, latency per player) filled in from the plan, so even an interrupted
    /// run's manifest shows the whole design.
    pub fn from_plan(loaded: &LoadedScenario, plan: &Plan, run_dir: &RunDir) -> Self {
        let mut m = Manifest::new(loaded, run_dir);
        m.design = Some(DesignRecord::from_plan(plan));
        // The resolved scenario carries the seed the plan used, drawn or not, so that it
        // makes the same plan again.
        m.scenario.resolved.design.seed = Some(plan.design.seed);
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
                practice: pm.practice,
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
                        jitter_ms: pm.jitter_ms.get(i).copied(),
                        loss_pct: pm.loss_pct.get(i).copied(),
                        measured: None,
                    })
                    .collect(),
                shaping: None,
                stats: None,
                replay_of: None,
                completed_in: None,
                alignment_spread_ms: None,
                alignment_error_ms: None,
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
}
