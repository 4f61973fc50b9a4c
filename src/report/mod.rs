//! `oa-run report RUN_DIR...`: the manifests of one or more runs as one tidy table, one row per
//! player × match, as CSV (RFC 4180), JSON or text for people.
//!
//! Rows are built from the manifest only; the status of each row comes from
//! [`Manifest::outcome`], the same derivation the end-of-run summary uses.

mod text;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::Error;
use crate::manifest::{CellStatus, FORMAT_MAJOR, MANIFEST_FILE, Manifest, ScenarioGit, ToolInfo};

pub use text::text;

/// One player in one match of one run: the unit of analysis. Serialized field by field into
/// the CSV header and the JSON rows; to add a column, add a field here and fill it in
/// [`rows`]. Empty (`None`) where the manifest does not have the value.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Row {
    pub study: String,
    pub run_id: String,
    /// The run's status (`completed`, `interrupted`, ...).
    pub run_status: String,
    #[serde(rename = "match")]
    pub match_no: u32,
    pub repeat: u32,
    pub map: Option<String>,
    /// 1-based player index (the row of the latency design).
    pub player: u32,
    pub label: String,
    pub seat: Option<String>,
    pub slot: Option<u32>,
    pub ip: Option<IpAddr>,
    /// The name as the game reported it.
    pub name: Option<String>,
    /// Planned added round-trip delay.
    pub latency_ms: Option<u64>,
    pub jitter_ms: Option<f64>,
    pub loss_pct: Option<f64>,
    pub measured_latency_ms: Option<f64>,
    /// The file on the player's PC, as OBS reported it.
    pub recording_path: Option<String>,
    pub recording_bytes: Option<u64>,
    pub recording_duration_ms: Option<u64>,
    /// Where the match begins and ends in this file's own timeline (cut here to align).
    pub match_start_offset_ms: Option<i64>,
    pub match_end_offset_ms: Option<i64>,
    /// The offsets' error bound (half the query's round trip, a frame, the encoder lag).
    pub alignment_error_ms: Option<f64>,
    /// A ready `ffmpeg` line that cuts this recording to the match.
    pub ffmpeg_cut: Option<String>,
    /// Frames OBS wrote, skipped (encoder) and lagged (renderer) during the match.
    pub frames_output: Option<u64>,
    pub frames_skipped: Option<u64>,
    pub frames_lagged: Option<u64>,
    /// The match this one replays (its recording was lost).
    pub replay_of: Option<u32>,
    pub status: CellStatus,
    /// Why the row is not complete.
    pub reason: Option<String>,
    /// The questionnaire after this match: `answered` or `missing` (empty when not asked).
    pub rating: Option<String>,
    /// The answers as a JSON object, item id → value, text as typed (empty when none).
    pub answers: Option<String>,
}

/// The rows of one run, match by match, player by player.
pub fn rows(m: &Manifest) -> Vec<Row> {
    m.outcomes()
        .map(|(mm, p, o)| {
            let rec = m
                .recordings
                .iter()
                .find(|r| r.player == p.index && r.match_no == mm.number);
            let latency = mm.latency.iter().find(|l| l.player == p.index);
            let rating = m
                .ratings
                .iter()
                .find(|r| r.player == p.index && r.match_no == mm.number);
            Row {
                study: m.scenario.resolved.name.clone(),
                run_id: m.run_id.to_string(),
                run_status: m.status.name().into(),
                match_no: mm.number,
                repeat: mm.repeat,
                map: mm.map.clone(),
                player: p.index,
                label: p.label.clone(),
                seat: p.seat.clone(),
                slot: p.slot,
                ip: p.ip,
                name: p.name_raw.clone(),
                latency_ms: latency.map(|l| l.latency_ms),
                jitter_ms: None,
                loss_pct: None,
                // Ping p50 in the match minus the warmup's (`matches[].latency[].measured`).
                measured_latency_ms: latency.and_then(|l| l.measured?.added_ms),
                recording_path: rec.and_then(|r| r.path.clone()),
                recording_bytes: rec.and_then(|r| r.bytes),
                recording_duration_ms: rec.and_then(|r| r.duration_ms),
                match_start_offset_ms: rec.and_then(|r| r.match_start_offset_ms),
                match_end_offset_ms: rec.and_then(|r| r.match_end_offset_ms),
                alignment_error_ms: mm.alignment_error_ms,
                ffmpeg_cut: rec.and_then(crate::align::ffmpeg_cut_line),
                frames_output: rec.and_then(|r| r.frames.as_ref()).map(|f| f.output),
                frames_skipped: rec.and_then(|r| r.frames.as_ref()).map(|f| f.skipped),
                frames_lagged: rec.and_then(|r| r.frames.as_ref()).map(|f| f.lagged),
                replay_of: mm.replay_of,
                status: o.status,
                reason: o.reason,
                rating: rating.map(|r| r.status.name().to_string()),
                answers: rating
                    .filter(|r| !r.answers.is_empty())
                    .and_then(|r| serde_json::to_string(&r.answers).ok()),
            }
        })
        .collect()
}

/// Output format of `report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Csv,
    Json,
}

/// Read the manifest of a run directory (or a manifest file), refusing a format this oa-run
/// does not read instead of guessing.
pub fn load(path: &Path) -> Result<Manifest, Error> {
    let file: PathBuf = if path.is_dir() {
        path.join(MANIFEST_FILE)
    } else {
        path.to_path_buf()
    };
    if !file.exists() {
        return Err(if path.is_dir() {
            Error::InvalidManifest(format!(
                "{} has no {MANIFEST_FILE}; is it a run directory?",
                path.display()
            ))
        } else {
            Error::NotFound(file)
        });
    }
    let bytes = std::fs::read(&file).map_err(|e| Error::Io {
        what: format!("cannot read {}", file.display()),
        source: e,
    })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::InvalidManifest(format!("{} is not valid JSON: {e}", file.display()))
    })?;
    let version = value.get("format_version");
    let major = version.and_then(|v| v.get("major")).and_then(Value::as_u64);
    let minor = version.and_then(|v| v.get("minor")).and_then(Value::as_u64);
    let (Some(major), Some(minor)) = (major, minor) else {
        return Err(Error::InvalidManifest(format!(
            "{} has no format_version; it is not an oa-run manifest",
            file.display()
        )));
    };
    if major != FORMAT_MAJOR as u64 {
        let writer = value
            .pointer("/tool/version")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let advice = if major > FORMAT_MAJOR as u64 {
            "a newer oa-run wrote it; report it with that version or newer"
        } else {
            "an older oa-run wrote it; report it with that version"
        };
        return Err(Error::InvalidManifest(format!(
            "{} is manifest format {major}.{minor} (written by oa-run {writer}); this oa-run {} reads format {FORMAT_MAJOR}.x only: {advice}",
            file.display(),
            crate::build_info::VERSION,
        )));
    }
    // A newer minor only adds fields (ignored here); an older one lacks some (read as absent).
    serde_json::from_value(value).map_err(|e| {
        Error::InvalidManifest(format!(
            "{} does not match manifest format {major}.{minor}: {e}",
            file.display()
        ))
    })
}

/// Load every run, in the order given; the same run named twice is read once.
pub fn load_all(paths: &[PathBuf]) -> Result<Vec<Manifest>, Error> {
    let mut out: Vec<Manifest> = Vec::with_capacity(paths.len());
    for p in paths {
        let m = load(p)?;
        if !out.iter().any(|o| o.run_id == m.run_id) {
            out.push(m);
        }
    }
    Ok(out)
}

/// The rows as CSV: RFC 4180 (header row, CRLF line ends, fields quoted where needed), one
/// column per [`Row`] field. Control characters other than tab, CR and LF are written as
/// `\u{1b}` so the file is safe to `cat`; everything else is kept exactly.
pub fn csv(runs: &[Manifest]) -> Result<String, Error> {
    let mut w = ::csv::WriterBuilder::new()
        .terminator(::csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let internal = |e: ::csv::Error| Error::Internal(format!("csv: {e}"));
    w.write_record(header()).map_err(internal)?;
    for m in runs {
        for r in rows(m) {
            let Value::Object(fields) =
                serde_json::to_value(&r).map_err(|e| Error::Internal(e.to_string()))?
            else {
                return Err(Error::Internal("a report row is not an object".into()));
            };
            let record = fields.into_iter().map(|(_, v)| match v {
                Value::Null => String::new(),
                Value::String(s) => csv_safe(&s),
                other => other.to_string(),
            });
            w.write_record(record).map_err(internal)?;
        }
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::Internal(format!("csv: {e}")))?;
    String::from_utf8(bytes).map_err(|e| Error::Internal(format!("csv: {e}")))
}

/// The CSV header: the field names of [`Row`], in order.
pub fn header() -> Vec<String> {
    match serde_json::to_value(Row::default()) {
        Ok(Value::Object(o)) => o.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

fn csv_safe(s: &str) -> String {
    let unsafe_char = |c: char| c.is_control() && !matches!(c, '\t' | '\n' | '\r');
    if !s.chars().any(unsafe_char) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if unsafe_char(c) {
                format!("\\u{{{:x}}}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// One run as `report --format json` shows it: who ran what, and its rows.
#[derive(Debug, Serialize)]
pub struct RunReport<'a> {
    pub study: &'a str,
    pub run_id: String,
    pub status: &'a crate::manifest::RunStatus,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub scenario_path: &'a Path,
    pub scenario_sha256: &'a str,
    /// `null`: unknown (git missing); `in_repo: false`: not in a repository.
    pub scenario_git: &'a Option<ScenarioGit>,
    pub tool: &'a ToolInfo,
    pub host: &'a str,
    pub run_dir: &'a Path,
    pub rows: Vec<Row>,
}

/// `{"runs": [...]}`, each run with its provenance and rows.
pub fn json(runs: &[Manifest]) -> Result<String, Error> {
    let reports: Vec<RunReport<'_>> = runs
        .iter()
        .map(|m| RunReport {
            study: &m.scenario.resolved.name,
            run_id: m.run_id.to_string(),
            status: &m.status,
            started_at: m.started_at.to_string(),
            ended_at: m.ended_at.map(|t| t.to_string()),
            scenario_path: &m.scenario.path,
            scenario_sha256: &m.scenario.sha256,
            scenario_git: &m.scenario.git,
            tool: &m.tool,
            host: &m.host.hostname,
            run_dir: &m.run_dir,
            rows: rows(m),
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&serde_json::json!({ "runs": reports }))
        .map_err(|e| Error::Internal(e.to_string()))?;
    s.push('\n');
    Ok(s)
}

/// `report` as the command runs it.
pub fn render(runs: &[Manifest], format: ReportFormat) -> Result<String, Error> {
    match format {
        ReportFormat::Csv => csv(runs),
        ReportFormat::Json => json(runs),
        ReportFormat::Text => Ok(text(runs, crate::table::Style::stdout())),
    }
}
