//! Real signals sent to a real child process: Ctrl-C/SIGTERM handling (`oa_run::run::signals`)
//! and the manifest surviving SIGKILL at any moment.
//!
//! The child is this test binary itself, re-run with `--exact probe` and an environment
//! variable naming what to do (no extra binary or Cargo target needed).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal as NixSignal, kill};
use nix::unistd::Pid;
use oa_run::manifest::{self, Event, EventKind, Manifest, ManifestWriter, RunDir, Timestamp};
use oa_run::run::signals::{Shutdown, Signal};

const MODE_ENV: &str = "OA_RUN_TEST_PROBE";
const DIR_ENV: &str = "OA_RUN_TEST_PROBE_DIR";

// ---------------------------------------------------------------------------------------------
// The child side
// ---------------------------------------------------------------------------------------------

/// Does nothing in a normal test run; in a child started by [`Probe::start`] it plays a role.
#[test]
fn probe() {
    let Ok(mode) = std::env::var(MODE_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(DIR_ENV).expect("probe dir"));
    // The handler's messages go to stderr, as in oa-run.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .try_init();
    match mode.as_str() {
        "graceful" => graceful(&dir, false),
        "stuck" => graceful(&dir, true),
        "hanging-hook" => hanging_hook(&dir),
        "manifest-loop" => manifest_loop(&dir),
        other => panic!("unknown probe mode {other}"),
    }
}

fn append(path: &Path, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

/// Like an executor: wait for the stop request, clean up (async), exit 130. With `stuck`, the
/// clean-up never finishes, so only a second signal ends the process.
fn graceful(dir: &Path, stuck: bool) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = Shutdown::install().unwrap();
        let hooks = dir.join("hooks");
        s.on_force_exit({
            let hooks = hooks.clone();
            move || append(&hooks, "old")
        })
        .keep();
        let dropped = s.on_force_exit({
            let hooks = hooks.clone();
            move || append(&hooks, "dropped")
        });
        s.on_force_exit(move || append(&hooks, "new")).keep();
        drop(dropped);
        append(&dir.join("ready"), "ready");
        let sig = tokio::select! {
            sig = s.requested() => sig,
            _ = tokio::time::sleep(Duration::from_secs(60)) => std::process::exit(3),
        };
        append(&dir.join("cleanup"), sig.name());
        if stuck {
            tokio::time::sleep(Duration::from_secs(60)).await;
            std::process::exit(4);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        append(&dir.join("cleanup"), "done");
        std::process::exit(130);
    });
}

/// The newest hook hangs: the second signal must still exit within the budget.
fn hanging_hook(dir: &Path) {
    let s = Shutdown::install_with_budget(Duration::from_millis(500)).unwrap();
    let hooks = dir.join("hooks");
    s.on_force_exit(move || append(&hooks, "old")).keep();
    s.on_force_exit(|| std::thread::sleep(Duration::from_secs(60)))
        .keep();
    append(&dir.join("ready"), "ready");
    std::thread::sleep(Duration::from_secs(60));
    std::process::exit(5);
}

/// Rewrite a manifest as fast as possible until killed.
fn manifest_loop(dir: &Path) {
    let src = r#"
name: crash
server: { launch: {}, address: "127.0.0.1:27960", rcon_password: rcon }
players: { humans: 2 }
warmup: { duration: 10s }
matches: { timelimit: 20s }
latency: { interface: lo, levels: [0ms, 50ms], shaper: none }
obs: { password: pw, recording: {} }
"#;
    let env = std::collections::BTreeMap::new();
    let l = oa_run::scenario::load_str(
        "crash.yaml",
        src,
        &[],
        &env,
        oa_run::scenario::SecretsMode::Required,
    )
    .unwrap();
    let plan = oa_run::plan::compile(&l).unwrap();
    let rd = RunDir::create(dir, "crash", Timestamp::now()).unwrap();
    let mut m = Manifest::from_plan(&l, &plan, &rd);
    let w = ManifestWriter::create(rd.path(), &mut m).unwrap();
    append(&dir.join("ready"), "ready");
    for i in 0u64.. {
        // A growing manifest, so a torn write would show as truncated JSON.
        m.push_event(Event::new(
            EventKind::Info,
            format!("write {i} {}", "x".repeat(200)),
        ));
        w.write(&mut m).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The parent side
// ---------------------------------------------------------------------------------------------

struct Probe {
    child: Child,
    dir: tempfile::TempDir,
}

impl Probe {
    fn start(mode: &str) -> Probe {
        let dir = tempfile::tempdir().unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "probe", "--nocapture", "--test-threads=1"])
            .env(MODE_ENV, mode)
            .env(DIR_ENV, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut p = Probe { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !p.path("ready").exists() {
            if let Some(st) = p.child.try_wait().unwrap() {
                panic!("probe {mode} exited early ({st}): {}", p.read("stderr"));
            }
            assert!(Instant::now() < deadline, "probe {mode} never got ready");
            std::thread::sleep(Duration::from_millis(10));
        }
        p
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    fn send(&self, sig: NixSignal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    fn wait_for_file(&self, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.path(name).exists() {
            assert!(Instant::now() < deadline, "{name} never appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit status, or a panic after `timeout`.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "the probe did not exit within {timeout:?}; stderr: {}",
                self.read("stderr")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // Never leave a child behind, also when an assertion failed.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn first_sigint_asks_for_a_clean_stop_and_exits_130() {
    let mut p = Probe::start("graceful");
    p.send(NixSignal::SIGINT);
    let st = p.wait(Duration::from_secs(20));
    assert_eq!(st.code(), Some(130), "stderr: {}", p.read("stderr"));
    assert_eq!(p.read("cleanup"), "SIGINT\ndone\n");
    // The force-exit hooks are for the second signal only.
    assert_eq!(p.read("hooks"), "");
    assert!(p.read("stderr").contains("press Ctrl-C again"));
}

#[test]
fn sigterm_is_handled_like_ctrl_c() {
    let mut p = Probe::start("graceful");
    p.send(NixSignal::SIGTERM);
    let st = p.wait(Duration::from_secs(20));
    assert_eq!(st.code(), Some(130), "stderr: {}", p.read("stderr"));
    assert_eq!(p.read("cleanup"), "SIGTERM\ndone\n");
}

#[test]
fn second_signal_runs_the_hooks_and_exits_at_once() {
    let mut p = Probe::start("stuck");
    p.send(NixSignal::SIGINT);
    p.wait_for_file("cleanup", Duration::from_secs(10));
    // The clean stop hangs; the process is still there.
    std::thread::sleep(Duration::from_millis(200));
    assert!(p.child.try_wait().unwrap().is_none());
    let t = Instant::now();
    p.send(NixSignal::SIGINT);
    let st = p.wait(Duration::from_secs(10));
    assert_eq!(st.code(), Some(130), "stderr: {}", p.read("stderr"));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // Newest first, the unregistered hook not at all.
    assert_eq!(p.read("hooks"), "new\nold\n");
    assert_eq!(p.read("cleanup"), "SIGINT\n");
}

#[test]
fn a_hanging_hook_does_not_keep_the_process_alive() {
    let mut p = Probe::start("hanging-hook");
    p.send(NixSignal::SIGTERM);
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    p.send(NixSignal::SIGTERM);
    let st = p.wait(Duration::from_secs(10));
    assert_eq!(st.code(), Some(130), "stderr: {}", p.read("stderr"));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(p.read("stderr").contains("exiting anyway"));
}

#[test]
fn sigkill_at_any_moment_leaves_a_valid_manifest() {
    // Kill the writer at several points of its write loop; the manifest on disk must always
    // be a complete, parseable manifest.
    let mut max_events = 0;
    for delay_ms in [0u64, 7, 23, 61, 150] {
        let mut p = Probe::start("manifest-loop");
        std::thread::sleep(Duration::from_millis(delay_ms));
        p.send(NixSignal::SIGKILL);
        let st = p.wait(Duration::from_secs(10));
        assert_eq!(st.code(), None, "killed by a signal");
        let run_dir = std::fs::read_dir(p.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|e| e.is_dir())
            .expect("run directory");
        let m = manifest::read(&run_dir.join(manifest::MANIFEST_FILE))
            .unwrap_or_else(|e| panic!("after SIGKILL at {delay_ms} ms: {e}"));
        assert_eq!(m.status, manifest::RunStatus::Running);
        max_events = max_events.max(m.events.len());
        // Only the manifest, and at most the temp file of the write that was cut short.
        for e in std::fs::read_dir(&run_dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                name == manifest::MANIFEST_FILE || name == ".manifest.json.tmp",
                "unexpected {name}"
            );
        }
    }
    assert!(
        max_events > 0,
        "the writer never got to write; the test proved nothing"
    );
}

#[test]
fn signal_names() {
    assert_eq!(Signal::Interrupt.to_string(), "SIGINT");
    assert_eq!(Signal::Terminate.name(), "SIGTERM");
}
