//! The scenario language: the Rust types are the single source of truth. The JSON Schema in
//! `schemas/scenario.schema.json` is generated from them (doc comments become descriptions).

use std::net::IpAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::Duration;
use super::secret::Secret;

/// An oa-run scenario: one latency study on an OpenArena server, run unattended by
/// `oa-run <scenario.yaml>`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
#[schemars(title = "oa-run scenario")]
pub struct Scenario {
    /// Short name of the study; used in run directories and recording names. Letters, digits,
    /// `_`, `-` and `.` only.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"))]
    pub name: String,
    /// Free text describing the study, copied into the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The OpenArena dedicated server: launched by oa-run (`launch`) or attached to.
    pub server: Server,
    /// Who takes part: how many humans the study waits for, and optionally the lab's seats.
    pub players: Players,
    /// Bots that fill the server during warmup and matches.
    #[serde(default)]
    pub bots: Bots,
    /// The warmup phase before the first match (bots in, every OBS connected).
    pub warmup: Warmup,
    /// How long each match lasts and how often the latency design is repeated.
    pub matches: Matches,
    /// Per-player latency added on the server's network interface.
    pub latency: Latency,
    /// Randomisation of the latency design, reproducible from its seed.
    #[serde(default)]
    pub design: Design,
    /// OBS Studio on every human player's PC, controlled over obs-websocket v5.
    pub obs: Obs,
    /// Where the run directory (manifest, logs) is written.
    #[serde(default)]
    pub output: Output,
    /// The live view, served while the study runs: a dashboard, a WebSocket feed, Prometheus
    /// metrics, a health check and abort. Off unless given (or `--live ADDR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<Live>,
    /// Webhooks: the run's events are POSTed to each, as JSON, while it runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notify>,
    /// A short questionnaire every human answers after each match (the practice match
    /// included), on their own page served by the live view (`live` is then required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub questionnaire: Option<Questionnaire>,
}

/// The rating after each match: a few items, answered on a page per player that the live view
/// serves at a link with a per-player random token.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Questionnaire {
    /// The questions, in the order shown.
    #[schemars(length(min = 1, max = 20))]
    pub items: Vec<QuestionItem>,
    /// How long the study waits after a match for every present player to answer; answers
    /// not in by then are recorded as missing.
    #[serde(default = "default_questionnaire_timeout")]
    pub timeout: Duration,
    /// Whether every item must be answered before the form is accepted (default false: a
    /// player may leave items blank).
    #[serde(default)]
    pub required: bool,
}

fn default_questionnaire_timeout() -> Duration {
    Duration::from_secs(90)
}

/// Longest free-text answer accepted, in characters.
pub const MAX_TEXT_ANSWER: u32 = 2000;

/// One question.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuestionItem {
    /// Key of the answer in the manifest: lower-case letters, digits and `_`.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]{0,31}$"))]
    pub id: String,
    /// The question as the player reads it.
    #[schemars(length(min = 1, max = 500))]
    pub prompt: String,
    /// `likert` (a whole number from `min` to `max`), `choice` (one of `options`) or `text`.
    pub kind: ItemKind,
    /// Likert only: the lowest value (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    /// Likert only: the highest value (default 5); at most 10 steps above `min`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    /// Likert only: the label of the lowest value (e.g. `unplayable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_label: Option<String>,
    /// Likert only: the label of the highest value (e.g. `perfect`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_label: Option<String>,
    /// Choice only: the options, at least one, each distinct.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Text only: the longest answer accepted, in characters (default and at most 2000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
}

impl QuestionItem {
    /// A likert item's range (defaults applied).
    pub fn likert_range(&self) -> (i64, i64) {
        (self.min.unwrap_or(1), self.max.unwrap_or(5))
    }
    /// A text item's length limit (default applied, never above [`MAX_TEXT_ANSWER`]).
    pub fn text_limit(&self) -> u32 {
        self.max_length
            .unwrap_or(MAX_TEXT_ANSWER)
            .min(MAX_TEXT_ANSWER)
    }
}

/// What kind of answer an item takes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    /// A whole number on a scale from `min` to `max`.
    Likert,
    /// One of `options`.
    Choice,
    /// Short free text.
    Text,
}

/// One webhook. Each delivery is a POST of the live feed's event message with the headers
/// `X-OA-Run-Event`, `X-OA-Run-Delivery` and (with a secret) `X-OA-Run-Signature:
/// sha256=<hex HMAC-SHA256(secret, body)>`. A webhook that is down never delays the study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// The http:// or https:// URL to POST to. Treated as a secret (such URLs often carry
    /// their credential): write `${VAR}`; logs and the manifest show only scheme and host.
    pub url: Secret,
    /// Event types to deliver (e.g. `match_ended`, `run_finished`); every event when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// Key for the `X-OA-Run-Signature` HMAC; write `${VAR}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
}

/// The OpenArena dedicated server.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Launch a fresh server for this run. Omit it to attach to a server that is already
    /// running at `address` (then `log` names its games.log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
    /// `IP:PORT` the server listens on (launch) or is reached at (attach). `0.0.0.0` binds all
    /// interfaces; rcon then goes to 127.0.0.1.
    pub address: String,
    /// The server's rcon password. Use `${VAR}` to take it from the environment; it is never
    /// printed, logged or passed on a command line.
    pub rcon_password: Secret,
    /// Attach mode only: path to the running server's games.log (written with `g_logsync 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
}

/// How oa-run launches the server.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Launch {
    /// The server program.
    #[serde(default = "default_server_binary")]
    pub binary: PathBuf,
    /// The map loaded at start (and for every match unless `matches.map` says otherwise).
    #[serde(default = "default_map")]
    pub map: String,
    /// When oa-run runs as root: the unprivileged user the server runs as (its home directory
    /// in the run directory is given to that user). `root` keeps it root (not recommended: the
    /// server parses every player's packets).
    #[serde(default = "default_launch_user")]
    pub user: String,
}

fn default_server_binary() -> PathBuf {
    PathBuf::from("/usr/games/openarena-server")
}
fn default_launch_user() -> String {
    "nobody".into()
}
fn default_map() -> String {
    "oa_dm1".into()
}

/// The human players.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Players {
    /// The study starts when this many humans are on the server.
    #[schemars(range(min = 1, max = 64))]
    pub humans: u32,
    /// How long to wait for all humans to join before giving up.
    #[serde(default = "default_join_timeout")]
    pub join_timeout: Duration,
    /// Optional list of the lab's PCs. With seats, players are labelled by seat (matched by IP)
    /// and every OBS can be checked before anyone arrives; without seats, players are
    /// discovered as they join.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seats: Vec<Seat>,
}

fn default_join_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

/// One lab PC.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Seat {
    /// Label of the seat (e.g. `pc1`); used in tables, the manifest and recording names.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"))]
    pub name: String,
    /// The seat's IP address as the server sees it.
    pub ip: IpAddr,
    /// Per-seat OBS settings, overriding `obs.port` / `obs.password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obs: Option<SeatObs>,
}

/// Per-seat OBS overrides.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SeatObs {
    /// obs-websocket port on this seat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// obs-websocket password on this seat (use `${VAR}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

/// Bots.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bots {
    /// Bot names to draw from, in order (OpenArena's bots.txt names, e.g. `Sarge`).
    #[serde(default = "default_bot_names")]
    pub names: Vec<String>,
    /// Bots present during warmup.
    #[serde(default = "default_warmup_bots")]
    pub warmup: BotGroup,
    /// Bots present during every match (they replace the warmup bots).
    #[serde(default = "default_match_bots", rename = "match")]
    pub match_: BotGroup,
}

impl Default for Bots {
    fn default() -> Self {
        Bots {
            names: default_bot_names(),
            warmup: default_warmup_bots(),
            match_: default_match_bots(),
        }
    }
}

fn default_bot_names() -> Vec<String> {
    [
        "Angelyss", "Arachna", "Major", "Sarge", "Skelebot", "Merman", "Beret", "Kyonshi",
    ]
    .map(String::from)
    .to_vec()
}
fn default_warmup_bots() -> BotGroup {
    BotGroup { count: 0, skill: 1 }
}
fn default_match_bots() -> BotGroup {
    BotGroup { count: 0, skill: 3 }
}

/// A number of bots of one skill.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BotGroup {
    /// How many bots (taken from the start of `bots.names`).
    #[schemars(range(max = 60))]
    pub count: u32,
    /// Bot skill, 1 (easiest) to 5.
    #[schemars(range(min = 1, max = 5))]
    pub skill: u8,
}

/// The warmup phase.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Warmup {
    /// How long the warmup lasts once every human is in.
    pub duration: Duration,
}

/// The matches.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Matches {
    /// Length of a match. Whole minutes (`2m`) are ended by the server's own timelimit; any
    /// other value (`20s`, `90s`) is enforced by oa-run.
    pub timelimit: Duration,
    /// How many times the latency design (one square) is repeated.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub repeats: u32,
    /// Extra time a match may run past its timelimit (sudden death on a tie) before oa-run ends it.
    #[serde(default = "default_overtime")]
    pub overtime: Duration,
    /// Optional fraglimit; the match also ends when a player reaches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub fraglimit: Option<u32>,
    /// Map for the matches (default: the server's launch map, or the current map when attached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub map: Option<String>,
    /// One practice match at no added latency before the first real match: recorded like any
    /// match (as match 0), flagged `practice`, and not part of the latency design.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub practice: Option<Practice>,
}

fn one() -> u32 {
    1
}

/// An optional practice match before the first real match.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Practice {
    /// Length of the practice match; whole minutes are ended by the server's timelimit, any
    /// other value by oa-run (as `matches.timelimit`).
    pub duration: Duration,
}
fn default_overtime() -> Duration {
    Duration::from_secs(60)
}

/// Latency shaping.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// The server's network interface that carries the players' traffic (e.g. `enp1s0`).
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.:-]{1,15}$"))]
    pub interface: String,
    /// Added round-trip delays; each player meets each level once per square (e.g. `[100ms,
    /// 200ms]`). A level may carry jitter and loss: `{delay: 200ms, jitter: 20ms, loss: 1%}`.
    #[schemars(length(min = 1))]
    pub levels: Vec<super::Level>,
    /// Order of levels across matches: `balanced` (Williams Latin square, first-order carryover
    /// balanced) or `cyclic` (level (player + match) mod n).
    #[serde(default)]
    pub order: Order,
    /// `egress`: the whole added delay on server→player; `symmetric`: half each way (ingress via ifb).
    #[serde(default)]
    pub split: Split,
    /// `auto` (default): `tc` where the kernel has sch_netem, else `nfqueue`. `tc` applies the
    /// delays with tc/netem; `nfqueue` holds the game packets in oa-run itself (iptables
    /// NFQUEUE, any Linux kernel); `none` plans and records them without applying.
    #[serde(default)]
    pub shaper: Shaper,
    /// netem queue limit in packets (must hold every packet in flight during the delay).
    #[serde(default = "default_netem_limit")]
    #[schemars(range(min = 1))]
    pub limit: u32,
    /// How far a player's measured added latency (server ping p50 in the match minus the
    /// warmup's) may be from the planned value: max(`at_least`, `relative` × planned).
    #[serde(default)]
    pub tolerance: Tolerance,
    /// What to do when a player's measured latency is outside the tolerance: `warn` (a
    /// warning, a flag in the manifest, a row in the summary) or `abort` the study.
    #[serde(default)]
    pub on_deviation: OnDeviation,
}

/// How far a measured latency may be from the planned one: max(`at_least`, `relative` ×
/// planned). The server's ping is quantised by frame times, hence the absolute floor.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    /// Absolute floor (default 15ms).
    #[serde(default = "default_tolerance_abs")]
    pub at_least: Duration,
    /// Share of the planned value (default 10%).
    #[serde(default = "default_tolerance_rel")]
    pub relative: super::Percent,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            at_least: default_tolerance_abs(),
            relative: default_tolerance_rel(),
        }
    }
}

fn default_tolerance_abs() -> Duration {
    Duration::from_millis(15)
}
fn default_tolerance_rel() -> super::Percent {
    super::Percent::from_ppm(100_000)
}

/// What a latency deviation beyond the tolerance does.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnDeviation {
    /// Record a warning and go on.
    #[default]
    Warn,
    /// Stop the study.
    Abort,
}

fn default_netem_limit() -> u32 {
    10_000
}

/// Order of latency levels across matches.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Williams design: every level once per match per group of players, and every level
    /// immediately follows every other equally often (odd n: the mirrored square follows).
    #[default]
    Balanced,
    /// Level (player + match) mod n.
    Cyclic,
}

/// Largest seed: 2^53 - 1, so that the seed survives every JSON reader (many read numbers as
/// doubles).
pub const MAX_SEED: u64 = (1 << 53) - 1;

/// How the latency design is randomised. Every random choice comes from `seed`, so the same
/// seed gives the same plan on any machine.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Design {
    /// Seed of the randomisation (0 to 2^53 - 1). When absent, one is drawn, printed and
    /// recorded in the plan and manifest; pass it back (`--set design.seed=N`) to repeat a plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 9_007_199_254_740_991u64))]
    pub seed: Option<u64>,
    /// How players (by seat order, else join order) are mapped to the design's rows:
    /// `random` (default) or `in_order` (player 1 follows row 1, and so on).
    #[serde(default)]
    pub assign: Assign,
    /// Map the latency values to the square's symbols at random (default false: the first
    /// listed level is the square's first symbol, and so on).
    #[serde(default)]
    pub shuffle_levels: bool,
}

/// How players are mapped to the design's rows.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Assign {
    /// A random permutation drawn from the seed.
    #[default]
    Random,
    /// Player i follows row i.
    InOrder,
}

/// Where the added delay goes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The whole added round-trip delay on server→player traffic.
    #[default]
    Egress,
    /// Half on server→player, half on player→server (through an ifb device).
    Symmetric,
}

/// How latency is applied.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Shaper {
    /// `tc` where the kernel has sch_netem, otherwise `nfqueue`.
    #[default]
    Auto,
    /// Linux tc: HTB + netem on `latency.interface`.
    Tc,
    /// oa-run holds the game packets itself: iptables NFQUEUE rules on `latency.interface`
    /// (works on kernels without netem).
    Nfqueue,
    /// Plan and record the latencies without applying them.
    None,
}

/// OBS Studio on the players' PCs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Obs {
    /// obs-websocket port on each player's PC.
    #[serde(default = "default_obs_port")]
    #[schemars(range(min = 1))]
    pub port: u16,
    /// obs-websocket password (use `${VAR}`); never printed or logged.
    pub password: Secret,
    /// Time allowed for one connection attempt (TCP + Hello + Identify).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Extra connection attempts after the first one fails (with backoff).
    #[serde(default = "default_retries")]
    #[schemars(range(max = 20))]
    pub retries: u32,
    /// What to do with a player whose OBS cannot be reached by the end of warmup: `kick` them,
    /// `abort` the study, or `continue` without their recording.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// A recording lost mid-match (its OBS exited, stopped it unasked, or could not be reached
    /// again): `continue` the study, `abort` it, or `replay` that match once at the end.
    #[serde(default)]
    pub on_lost: OnLost,
    /// An OBS that is already recording when oa-run connects (a recording this study did not
    /// start, e.g. left by a crashed run): `abort` the study (default; nothing is touched) or
    /// `stop` that recording first.
    #[serde(default)]
    pub if_recording: IfRecording,
    /// Warn when an OBS has less free space than this on its recording drive, at connection
    /// and during every match, e.g. `2GB` or `500MB`.
    #[serde(default = "default_min_free_disk")]
    pub min_free_disk: ByteSize,
    /// Recording settings.
    #[serde(default)]
    pub recording: Recording,
}

fn default_obs_port() -> u16 {
    4455
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_retries() -> u32 {
    2
}
fn default_min_free_disk() -> ByteSize {
    ByteSize { mb: 2048 }
}

/// What happens when a recording is lost mid-match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnLost {
    /// Record the loss (the file, if any, is kept as `partial`) and go on.
    #[default]
    Continue,
    /// Stop the study.
    Abort,
    /// Play that match again, once, after the last planned match.
    Replay,
}

/// What to do with an OBS that is already recording when oa-run connects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IfRecording {
    /// Stop the study before it starts, saying which OBS records and what.
    #[default]
    Abort,
    /// Stop that recording (waiting until its file is final) and go on.
    Stop,
}

/// A size such as `2GB`, `500MB` (decimal units are read as their binary counterparts:
/// 1 GB = 1024 MB, as OBS reports free space in MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize {
    /// Mebibytes.
    pub mb: u64,
}

impl ByteSize {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size such as 2GB or 500MB"))?;
        let mult = match unit.trim() {
            "MB" | "MiB" | "M" => 1,
            "GB" | "GiB" | "G" => 1024,
            "TB" | "TiB" | "T" => 1024 * 1024,
            _ => return Err(format!("`{s}`: the unit must be MB, GB or TB")),
        };
        Ok(ByteSize { mb: n * mult })
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.mb.is_multiple_of(1024) && self.mb > 0 {
            write!(f, "{}GB", self.mb / 1024)
        } else {
            write!(f, "{}MB", self.mb)
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ByteSize::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9]+ ?(MB|MiB|M|GB|GiB|G|TB|TiB|T)$",
            "description": "A size: a whole number and MB, GB or TB (e.g. `2GB`)."
        })
    }
}

/// What to do when a player's OBS fails.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Kick the player (by slot) and go on without them.
    #[default]
    Kick,
    /// Stop the study.
    Abort,
    /// Keep the player, without a recording.
    Continue,
}

/// Recording settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Recording {
    /// File name (without extension) of each recording, a minijinja template. Variables:
    /// `scenario`, `match` (1-based), `repeat` (1-based), `player` (seat name, else the cleaned
    /// player name), `player_index` (1-based), `seat`, `latency_ms`, `jitter_ms`, `loss_pct` (the
    /// level's loss as a number, e.g. `0.5`), and per run: `started` (UTC start,
    /// `20261122T140307Z`), `run_id` (8 hex digits), `date` (`2026-11-22`). Must render to a
    /// unique name per player and match, without `/`, `\`, `%` or `..`; without `started` or
    /// `run_id` a second run of the study collides with the first (a warning).
    #[serde(default = "default_recording_name")]
    pub name: String,
    /// How long to wait for OBS to confirm a recording started (RecordStateChanged STARTED).
    #[serde(default = "default_start_timeout")]
    pub start_timeout: Duration,
    /// How long to wait for OBS to finish a file after StopRecord (RecordStateChanged STOPPED).
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: Duration,
}

impl Default for Recording {
    fn default() -> Self {
        Recording {
            name: default_recording_name(),
            start_timeout: default_start_timeout(),
            stop_timeout: default_stop_timeout(),
        }
    }
}

fn default_recording_name() -> String {
    "{{ scenario }}_{{ started }}_m{{ match }}_{{ player }}_{{ latency_ms }}ms".into()
}
fn default_start_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_stop_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Output settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Directory under which each run gets `<name>-<timestamp>/` (manifest, server log, oa-run log).
    #[serde(default = "default_output_dir")]
    pub dir: PathBuf,
}

impl Default for Output {
    fn default() -> Self {
        Output {
            dir: default_output_dir(),
        }
    }
}

fn default_output_dir() -> PathBuf {
    PathBuf::from("runs")
}

/// The live view's server.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Live {
    /// `IP:PORT` to serve on, e.g. `127.0.0.1:8080` (port 0 picks a free one). Without `token`
    /// only a loopback address is allowed.
    pub listen: String,
    /// Token for the feed, the state, the metrics and abort (`Authorization: Bearer TOKEN`, or
    /// `?token=TOKEN` where a browser cannot send a header). Use `${VAR}`. Required for a
    /// non-loopback `listen`; without it abort is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// The base URL players' PCs reach this server at (e.g. `http://192.168.1.10:8080`), used
    /// for the questionnaire links; default `http://` + the listen address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}
