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
mod provenance;
mod status;
mod summary;
mod types;
mod writer;

pub use status::{CellOutcome, CellStatus};
pub use types::*;
pub use writer::{ManifestWriter, RunDir, read};

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

/// Major version of the manifest format: bumped when a reader of the old format would
/// misread the new one.
pub const FORMAT_MAJOR: u32 = 1;
/// Minor version: bumped when fields are added.
pub const FORMAT_MINOR: u32 = 4;

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

/// The manifest schema as committed in `schemas/manifest.schema.json` (draft-07).
pub fn manifest_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(crate::schema::generate::<Manifest>)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::LoadedScenario;
    use crate::scenario::secret::REDACTED;
    use crate::scenario::{Override, SecretsMode, load_str};
    use chrono::{DateTime, Utc};
    use std::collections::BTreeMap;
    use std::path::Path;

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

    /// Participants' names and IPs: the run directory is 0700, the manifest and logs 0600.
    #[test]
    fn the_run_directory_and_its_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let tmp = tempfile::tempdir().unwrap();
        let (rd, mut m) = sample(tmp.path());
        let w = ManifestWriter::create(rd.path(), &mut m).unwrap();
        w.write(&mut m).unwrap();
        drop(rd.open_log().unwrap());
        drop(rd.create_server_stderr().unwrap());
        assert_eq!(mode(rd.path()), 0o700);
        assert_eq!(mode(w.path()), 0o600);
        assert_eq!(mode(&rd.log_path()), 0o600);
        assert_eq!(mode(&rd.server_stderr_path()), 0o600);
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
                r#"players.seats.1.obs={"port":4457,"password":"***"}"#,
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
        r.match_start_offset_ms = Some(1_250);
        r.match_end_offset_ms = Some(19_100);
        m.add_recording(r2);
        m.logs.server_stderr = Some(PathBuf::from(SERVER_STDERR_FILE));
        m.set_status(RunStatus::Interrupted {
            signal: Some("SIGINT".into()),
            reason: "Ctrl-C during match 1".into(),
        });
    }

    #[test]
    fn design_and_practice_come_from_the_plan() {
        let tmp = tempfile::tempdir().unwrap();
        let l = loaded(&[
            "matches.repeats=1",
            "matches.practice.duration=30s",
            "design.shuffle_levels=true",
        ]);
        assert!(l.scenario.design.seed.is_none(), "drawn");
        let plan = crate::plan::compile(&l).unwrap();
        let rd = RunDir::create(tmp.path(), "unit", Timestamp::now()).unwrap();
        let m = Manifest::from_plan(&l, &plan, &rd);
        let d = m.design.as_ref().unwrap();
        assert_eq!(d.seed, plan.design.seed);
        assert_eq!(d.seed_source, crate::plan::design::SeedSource::Drawn);
        assert!(d.shuffle_levels);
        // The resolved scenario carries the drawn seed: loading it again gives this plan.
        assert_eq!(m.scenario.resolved.design.seed, Some(plan.design.seed));
        let mut rows: Vec<u32> = d.rows.iter().map(|r| r.row).collect();
        rows.sort();
        assert_eq!(rows, vec![1, 2]);
        assert_eq!(d.symbols.len(), plan.latency.levels_ms.len());
        assert_eq!(d.symbols[0].symbol, "A");
        assert!(m.matches[0].practice && m.matches[0].number == 0);
        assert!(m.matches[0].latency.iter().all(|l| l.latency_ms == 0));
        assert!(!m.matches[1].practice && m.matches[1].number == 1);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["matches"][0]["practice"], true);
        assert!(json["matches"][1].get("practice").is_none());
    }

    #[test]
    fn summary_shows_the_study_players_stats_by_label() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, mut m) = sample(tmp.path());
        let stat = |slot: u32, player: Option<u32>, kind, name: &str| PlayerMatchStats {
            slot,
            player,
            kind,
            name: name.into(),
            kills: 3,
            deaths: 2,
            suicides: 1,
            world_deaths: 1,
            kills_by_weapon: [("railgun".to_string(), 3)].into(),
            score: Some(1),
            time_in_match_s: 59.6,
            joined_late: false,
            left_early: false,
        };
        m.matches[0].stats = Some(MatchStatsRecord {
            players: vec![
                stat(3, Some(1), ParticipantKind::Human, "\u{1b}[31mEve"),
                stat(0, None, ParticipantKind::Bot, "Sarge"),
            ],
            untrusted_lines: 0,
            rejected_kills: 0,
        });
        let s = m.summary();
        assert!(
            s.contains("  m1 stats: pc1 3 kills, 2 deaths, 2 suicides, score 1, 60 s\n"),
            "{s}"
        );
        assert!(
            !s.contains("Eve") && !s.contains("Sarge"),
            "labels only: {s}"
        );
    }

    #[test]
    fn summary_shows_planned_against_measured_latency() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, mut m) = sample(tmp.path());
        let st = |count, p50_ms, p95_ms| RttStats {
            count,
            p50_ms,
            p95_ms,
        };
        let planned = m.matches[0].latency[1].latency_ms as f64;
        m.matches[0].latency[1].measured = Some(MeasuredLatency {
            ping: st(8, planned + 50.0, planned + 100.0),
            baseline: Some(st(3, 0.0, 0.0)),
            planned_ms: planned,
            added_ms: Some(planned + 50.0),
            deviation_ms: Some(50.0),
            allowed_ms: 15.0,
            within: Some(false),
            icmp: None,
        });
        let s = m.summary();
        let want = format!(
            "  m1 latency pc2: planned {planned:.0} ms, measured {:.0} ms, OFF by +50 ms (±15 ms)",
            planned + 50.0
        );
        assert!(s.contains(&want), "{s}");
        assert!(!s.contains("m1 latency pc1"), "pc1 was not measured: {s}");
    }

    #[test]
    fn summary_counts_statuses_and_says_why() {
        let tmp = tempfile::tempdir().unwrap();
        let (_rd, mut m) = sample(tmp.path());
        fill(&mut m);
        let s = m.summary();
        assert!(
            s.contains("recordings complete: 1/4 (1 failed, 2 missing)"),
            "{s}"
        );
        assert!(
            s.contains("m1 pc2: FAILED: OBS answered 500 (OutputRunning)"),
            "{s}"
        );
        assert!(
            s.contains("m2 pc2: MISSING: kicked before the match: OBS unreachable"),
            "{s}"
        );
        assert!(
            s.contains("m2 pc1: MISSING: match not played: run interrupted: Ctrl-C during match 1"),
            "{s}"
        );
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
