//! A real run against the real server (no players needed): Ctrl-C, SIGTERM, a second Ctrl-C and
//! an error each leave a final manifest, exit with the documented code, and leave no server
//! running.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const SERVER: &str = "/usr/games/openarena-server";

fn scenario(dir: &Path, port: u16, join_timeout: &str) -> PathBuf {
    let p = dir.join("cleanup.yaml");
    std::fs::write(
        &p,
        format!(
            r#"
name: cleanup
server: {{ launch: {{ map: oa_dm1 }}, address: "127.0.0.1:{port}", rcon_password: "${{OA_RCON_PASSWORD}}" }}
players: {{ humans: 1, join_timeout: {join_timeout} }}
warmup: {{ duration: 5s }}
matches: {{ timelimit: 10s }}
latency: {{ interface: lo, levels: [0ms], shaper: none }}
obs: {{ password: "${{OBS_PASSWORD}}" }}
output: {{ dir: "{}" }}
"#,
            dir.join("runs").display()
        ),
    )
    .unwrap();
    p
}

fn start(scenario: &Path) -> Child {
    Command::new(support::oa_run())
        .arg(scenario)
        .env("OA_RCON_PASSWORD", "cleanup-rcon")
        .env("OBS_PASSWORD", "cleanup-obs")
        .env("OA_RUN_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Kills the child if a test fails half-way.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn manifest(dir: &Path) -> Option<serde_json::Value> {
    let runs = dir.join("runs");
    let run = std::fs::read_dir(runs).ok()?.next()?.ok()?.path();
    serde_json::from_slice(&std::fs::read(run.join("manifest.json")).ok()?).ok()
}

/// Wait until the manifest shows `step` started.
fn wait_for_step(child: &mut Child, dir: &Path, step: &str, timeout: Duration) {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("oa-run exited ({status}) before step {step}:\n{err}");
        }
        if let Some(m) = manifest(dir)
            && m["steps"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["kind"] == step))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the run never reached step {step}");
}

fn wait_exit(child: &mut Child, timeout: Duration) -> i32 {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        assert!(
            t.elapsed() < timeout,
            "oa-run did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Server processes whose command line names this port (ours, nobody else's).
fn servers_on(port: u16) -> Vec<u32> {
    support::pids_with_cmdline(&format!("net_port {port}"))
}

/// Start a run that waits for a player who never comes; returns once it is waiting.
fn start_waiting(dir: &Path, port: u16) -> Guard {
    let mut g = Guard(Some(start(&scenario(dir, port, "10m"))));
    wait_for_step(
        g.0.as_mut().unwrap(),
        dir,
        "wait_for_humans",
        Duration::from_secs(60),
    );
    g
}

fn skip_without_server() -> bool {
    if let Some(why) = support::missing_program(SERVER) {
        support::skip(&why);
        return true;
    }
    false
}

#[test]
fn sigterm_while_waiting_for_players_cleans_up_and_exits_130() {
    if skip_without_server() {
        return;
    }
    let dir = support::passable_tempdir();
    let port = support::free_udp_port();
    let mut g = start_waiting(dir.path(), port);
    assert_eq!(servers_on(port).len(), 1, "the server runs while waiting");
    let child = g.0.as_mut().unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let code = wait_exit(child, Duration::from_secs(30));
    let out = g.0.take().unwrap().wait_with_output().unwrap();
    assert_eq!(code, 130, "{}", String::from_utf8_lossy(&out.stderr));
    let m = manifest(dir.path()).unwrap();
    assert_eq!(m["status"]["state"], "interrupted");
    assert_eq!(m["status"]["signal"], "SIGTERM");
    assert!(m["ended_at"].is_string());
    assert!(
        servers_on(port).is_empty(),
        "the launched server was stopped"
    );
    assert!(
        m["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "interrupt"),
        "the interrupt is recorded"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("interrupted"), "{stdout}");
}

#[test]
fn a_second_ctrl_c_exits_at_once_after_best_effort_cleanup() {
    if skip_without_server() {
        return;
    }
    // A seat whose OBS (the fake) gets a recording running and takes 20 s to stop it: the
    // first signal's cleanup is then slow, and the second must cut it short.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt
        .block_on(oa_run::obs::fake::FakeObs::start(
            oa_run::obs::fake::FakeConfig {
                stop_delay: Duration::from_secs(20),
                ..Default::default()
            },
        ))
        .unwrap();
    let dir = support::passable_tempdir();
    let port = support::free_udp_port();
    let path = scenario(dir.path(), port, "10m");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "players: { humans: 1, join_timeout: 10m }",
        &format!(
            "players: {{ humans: 1, join_timeout: 10m, seats: [{{ name: pc1, ip: 127.0.0.1, obs: {{ port: {}, password: fakepass }} }}] }}",
            fake.port()
        ),
    );
    std::fs::write(&path, text).unwrap();
    let mut g = Guard(Some(start(&path)));
    wait_for_step(
        g.0.as_mut().unwrap(),
        dir.path(),
        "wait_for_humans",
        Duration::from_secs(60),
    );
    let t = Instant::now();
    while !fake
        .log()
        .iter()
        .any(|(_, l)| matches!(l, oa_run::obs::fake::Logged::Identified))
    {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "oa-run never connected to the seat's OBS"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Recording starts on that OBS after oa-run connected (an OBS found recording at connection
    // would stop the study at once: obs.if_recording: abort). Cleanup stops it, slowly.
    fake.set_recording_active();
    std::thread::sleep(Duration::from_millis(300));
    let child = g.0.as_mut().unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    kill(pid, Signal::SIGINT).unwrap();
    // The first cleanup is now waiting for the fake's STOPPED.
    let t = Instant::now();
    while !fake
        .log()
        .iter()
        .any(|(_, l)| matches!(l, oa_run::obs::fake::Logged::Request(r) if r == "StopRecord"))
    {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "cleanup never asked OBS to stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    kill(pid, Signal::SIGINT).unwrap();
    let code = wait_exit(child, Duration::from_secs(15));
    assert_eq!(code, 130);
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "the second signal took {:?}",
        t.elapsed()
    );
    let m = manifest(dir.path()).unwrap();
    assert_eq!(m["status"]["state"], "interrupted", "{}", m["status"]);
    assert_eq!(
        m["status"]["signal"], "second signal",
        "the forced-exit path ran: {}",
        m["status"]
    );
    // The hook killed the server.
    let t = Instant::now();
    while !servers_on(port).is_empty() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(servers_on(port).is_empty(), "the server was left running");
}

#[test]
fn an_error_runs_the_same_cleanup_and_exits_1() {
    if skip_without_server() {
        return;
    }
    let dir = support::passable_tempdir();
    let port = support::free_udp_port();
    let mut g = Guard(Some(start(&scenario(dir.path(), port, "3s"))));
    let code = wait_exit(g.0.as_mut().unwrap(), Duration::from_secs(90));
    let out = g.0.take().unwrap().wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("only 0 of 1 humans joined within 3s"),
        "{stderr}"
    );
    let m = manifest(dir.path()).unwrap();
    assert_eq!(m["status"]["state"], "failed");
    assert!(
        m["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("humans joined")
    );
    assert!(
        servers_on(port).is_empty(),
        "the launched server was stopped"
    );
    // The run directory holds the server's stderr and oa-run's own log.
    let run = std::fs::read_dir(dir.path().join("runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(std::fs::metadata(run.join("oa-run.log")).unwrap().len() > 0);
    assert!(
        std::fs::read_to_string(run.join("server-stderr.log"))
            .unwrap()
            .contains("Opening IP socket")
    );
    // Secrets never reach the logs.
    for f in ["oa-run.log", "server-stderr.log", "manifest.json"] {
        let text = std::fs::read_to_string(run.join(f)).unwrap();
        assert!(
            !text.contains("cleanup-rcon") && !text.contains("cleanup-obs"),
            "{f} leaks a secret"
        );
    }
}

#[test]
fn an_obs_already_recording_stops_the_study_and_is_left_alone() {
    if skip_without_server() {
        return;
    }
    // A recording this study did not start (a crashed run's): obs.if_recording: abort.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt
        .block_on(oa_run::obs::fake::FakeObs::start(
            oa_run::obs::fake::FakeConfig::default(),
        ))
        .unwrap();
    fake.set_recording_active();
    let dir = support::passable_tempdir();
    let port = support::free_udp_port();
    let path = scenario(dir.path(), port, "10m");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "players: { humans: 1, join_timeout: 10m }",
        &format!(
            "players: {{ humans: 1, join_timeout: 10m, seats: [{{ name: pc1, ip: 127.0.0.1, obs: {{ port: {}, password: fakepass }} }}] }}",
            fake.port()
        ),
    );
    std::fs::write(&path, text).unwrap();
    let child = start(&path);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    let m = manifest(dir.path()).expect("a manifest");
    assert_eq!(m["status"]["state"], "failed");
    assert!(
        m["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("did not start"),
        "{}",
        m["status"]
    );
    assert!(
        !fake
            .log()
            .iter()
            .any(|(_, l)| matches!(l, oa_run::obs::fake::Logged::Request(r) if r == "StopRecord")),
        "the foreign recording was touched"
    );
    assert!(servers_on(port).is_empty(), "the server was stopped");
}
