//! Crash recovery (`oa-run recover`): a run whose oa-run died leaves its OBS recording and its
//! manifest `running`. The OBS here is the fake (a recording left running by a client that
//! vanished, as real OBS does); the same flow against the real lab is a fault test of its own.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use oa_run::manifest::{
    self, Manifest, ManifestWriter, PlayerRecord, RecordingRecord, RunDir, RunStatus, Timestamp,
};
use oa_run::obs::fake::{FakeConfig, FakeObs, Logged};
use oa_run::obs::{IfActive, ObsClient, ObsConfig, ObsTarget};
use oa_run::run::recover::{Outcome, Skip, recover};
use oa_run::scenario::{self, Secret, SecretsMode};

const PW: &str = "recover-secret";

fn scenario_for(port: u16) -> scenario::LoadedScenario {
    let y = format!(
        "name: crashy\nserver: {{launch: {{}}, address: 127.0.0.1:27960, rcon_password: rc}}\n\
         players: {{humans: 1}}\nwarmup: {{duration: 10s}}\nmatches: {{timelimit: 20s}}\n\
         latency: {{interface: lo, levels: [0ms], shaper: none}}\n\
         obs: {{port: {port}, password: \"${{OBS_PW}}\", recording: {{}}}}\n"
    );
    let env: BTreeMap<String, String> = [("OBS_PW".to_string(), PW.to_string())].into();
    scenario::load_str("crashy.yaml", &y, &[], &env, SecretsMode::Required).unwrap()
}

/// A pid that existed and is gone.
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

/// A run directory as a SIGKILLed oa-run leaves it: `running`, one recording started
/// `started_secs_ago` and never stopped.
fn crashed_run(
    out: &Path,
    l: &scenario::LoadedScenario,
    pid: u32,
    started_secs_ago: i64,
) -> RunDir {
    let plan = oa_run::plan::compile(l).unwrap();
    let rd = RunDir::create(out, "crashy", Timestamp::now()).unwrap();
    let mut m = Manifest::from_plan(l, &plan, &rd);
    m.pid = pid;
    let mut p = PlayerRecord::new(1, "p1", l.scenario.obs.port);
    p.obs.host = Some("127.0.0.1".into());
    m.add_player(p);
    let mut r = RecordingRecord::planned(1, 1, "crashy_m1_p1");
    r.started_at = Some(Timestamp::from(
        chrono::Utc::now() - chrono::Duration::seconds(started_secs_ago),
    ));
    r.path = Some("/rec/crashy_m1_p1.mkv".into());
    match m.recording_mut(1, 1) {
        Some(x) => *x = r,
        None => {
            m.add_recording(r);
        }
    }
    ManifestWriter::create(rd.path(), &mut m).unwrap();
    rd
}

/// What a crashed oa-run left: a recording its vanished client started.
async fn leave_recording(f: &FakeObs, name: &str) {
    let t = ObsTarget::new("p1", "127.0.0.1", f.port(), Secret::new(PW));
    let c = ObsClient::connect(t, ObsConfig::default()).await.unwrap();
    c.start_recording(name, IfActive::Refuse).await.unwrap();
    drop(c);
    assert!(f.recording_active());
}

#[tokio::test]
async fn a_crashed_runs_recording_is_stopped_and_the_run_marked_crashed() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = tmp.path().join("rec");
    std::fs::create_dir(&rec).unwrap();
    let f = FakeObs::start(FakeConfig {
        password: Some(PW.into()),
        record_dir: Some(rec.clone()),
        stop_delay: Duration::from_millis(300),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let l = scenario_for(f.port());
    leave_recording(&f, "crashy_m1_p1").await;
    let rd = crashed_run(&tmp.path().join("runs"), &l, dead_pid(), 1);

    let out = recover(rd.path(), &l.scenario).await.unwrap();
    let Outcome::Recovered(r) = out else {
        panic!("expected a recovery, got {out:?}")
    };
    assert_eq!(r.stopped.len(), 1, "{r:?}");
    assert!(r.problems.is_empty(), "{r:?}");
    assert!(!f.recording_active(), "no OBS left recording");
    assert_eq!(f.count(&Logged::Request("StopRecord".into())), 1);
    let m = manifest::read(&rd.manifest_path()).unwrap();
    match &m.status {
        RunStatus::Crashed {
            recordings_stopped, ..
        } => assert_eq!(*recordings_stopped, 1),
        other => panic!("{other:?}"),
    }
    let rec_rec = m.recordings.iter().find(|x| x.player == 1).unwrap();
    assert!(rec_rec.stopped_at.is_some());
    let path = rec_rec.path.clone().unwrap();
    assert!(path.contains("crashy_m1_p1"), "{path}");
    assert!(Path::new(&path).exists(), "the final file: {path}");
    assert!(
        !std::fs::read_to_string(rd.manifest_path())
            .unwrap()
            .contains(PW)
    );

    // Again: nothing to do.
    let again = recover(rd.path(), &l.scenario).await.unwrap();
    assert_eq!(again, Outcome::Skipped(Skip::Finished("crashed")));
}

#[tokio::test]
async fn a_live_run_and_a_foreign_recording_are_never_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let f = FakeObs::start(FakeConfig {
        password: Some(PW.into()),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let l = scenario_for(f.port());
    leave_recording(&f, "someone_else").await;

    // Its oa-run is alive (this process): left exactly as it was.
    let live = crashed_run(&tmp.path().join("a"), &l, std::process::id(), 1);
    let before = std::fs::read(live.manifest_path()).unwrap();
    let out = recover(live.path(), &l.scenario).await.unwrap();
    assert_eq!(out, Outcome::Skipped(Skip::Alive(std::process::id())));
    assert_eq!(std::fs::read(live.manifest_path()).unwrap(), before);
    assert!(f.recording_active());

    // Dead, but the OBS records something that started 10 minutes after this run's recording:
    // not ours, left running, and said so.
    let old = crashed_run(&tmp.path().join("b"), &l, dead_pid(), 600);
    let Outcome::Recovered(r) = recover(old.path(), &l.scenario).await.unwrap() else {
        panic!()
    };
    assert!(r.stopped.is_empty());
    assert!(r.problems[0].contains("did not start"), "{r:?}");
    assert!(f.recording_active(), "a foreign recording keeps running");
    assert_eq!(f.count(&Logged::Request("StopRecord".into())), 0);
    let m = manifest::read(&old.manifest_path()).unwrap();
    assert_eq!(m.status.name(), "crashed");
}

/// The subcommand: a live run is refused with exit 69 and left alone.
#[test]
fn the_recover_command_refuses_a_live_run() {
    let tmp = tempfile::tempdir().unwrap();
    let l = scenario_for(4455);
    let yaml = tmp.path().join("crashy.yaml");
    std::fs::write(&yaml, "name: crashy\nserver: {launch: {}, address: 127.0.0.1:27960, rcon_password: rc}\nplayers: {humans: 1}\nwarmup: {duration: 10s}\nmatches: {timelimit: 20s}\nlatency: {interface: lo, levels: [0ms], shaper: none}\nobs: {password: \"${OBS_PW}\", recording: {}}\n").unwrap();
    let rd = crashed_run(&tmp.path().join("runs"), &l, std::process::id(), 1);
    let o = std::process::Command::new(support::oa_run())
        .args(["-v", "recover"])
        .arg(rd.path())
        .arg("--scenario")
        .arg(&yaml)
        .env("OBS_PW", PW)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(69),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("still running; left alone"), "{out}");
    assert_eq!(
        manifest::read(&rd.manifest_path()).unwrap().status,
        RunStatus::Running
    );
}
