//! `oa-run resume` refuses what it must: a changed scenario (unless --force), a run with
//! nothing left, a run that is still alive. (Resuming for real is in the lab test.)

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use oa_run::manifest::{Manifest, ManifestWriter, RunDir, RunStatus, Timestamp};
use oa_run::scenario::{SecretsMode, load_file};

const SCENARIO: &str = "name: resumable
server: { launch: {}, address: 127.0.0.1:27960, rcon_password: x }
players: { humans: 1 }
warmup: { duration: 10s }
matches: { timelimit: 20s, repeats: 1 }
latency: { interface: lo, levels: [0ms, 100ms], shaper: none }
obs: { password: x, recording: {} }
";

/// A stopped run of SCENARIO, as its manifest would say after `status`.
fn stopped_run(dir: &Path, status: RunStatus) -> std::path::PathBuf {
    let file = dir.join("s.yaml");
    std::fs::write(&file, SCENARIO).unwrap();
    let l = load_file(&file, &[], &BTreeMap::new(), SecretsMode::Required).unwrap();
    let plan = oa_run::plan::compile(&l).unwrap();
    let rd = RunDir::create(&dir.join("runs"), "resumable", Timestamp::now()).unwrap();
    let mut m = Manifest::from_plan(&l, &plan, &rd);
    m.set_status(status);
    ManifestWriter::create(rd.path(), &mut m).unwrap();
    rd.path().to_path_buf()
}

fn resume(run: &Path, extra: &[&str]) -> Output {
    Command::new(support::oa_run())
        .arg("resume")
        .arg(run)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_changed_scenario_is_refused_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let run = stopped_run(
        dir.path(),
        RunStatus::Interrupted {
            signal: Some("SIGINT".into()),
            reason: "x".into(),
        },
    );
    std::fs::write(
        dir.path().join("s.yaml"),
        SCENARIO.replace("repeats: 1", "repeats: 2"),
    )
    .unwrap();
    let out = resume(&run, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("changed since run"), "{err}");
    assert!(err.contains("--force"), "{err}");
}

#[test]
fn completed_and_live_runs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = stopped_run(dir.path(), RunStatus::Completed);
    let out = resume(&run, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to resume"));

    // `running`, and its pid (this test process) is alive: never touched.
    let dir = tempfile::tempdir().unwrap();
    let run = stopped_run(dir.path(), RunStatus::Running);
    let out = resume(&run, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("still running"), "{err}");
}
