//! `oa-run --live` for real: the oa-run binary launches the real OpenArena server and waits
//! for a player who never comes, while this test watches it over the live view: health, the
//! feed, metrics with real rcon figures (checked by promtool), then aborts it over the API.
//! The feed must end with `run_finished` (interrupted) and a normal close, oa-run must exit 130
//! having cleaned up, and the port must be free again.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use oa_run::live::FeedMessage;
use oa_run::manifest::RunStatus;
use oa_run::run::events::RunEvent;
use support::live::http;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const SERVER: &str = "/usr/games/openarena-server";
const TOKEN: &str = "live-run-t0ken";

/// Kills oa-run if the test fails half-way (oa-run then stops its server itself).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_run_watched_and_aborted_over_the_live_view() {
    if let Some(why) = support::missing_program(SERVER) {
        return support::skip(&why);
    }
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_udp_port();
    let live_port = support::free_tcp_port();
    let scenario = dir.path().join("live.yaml");
    std::fs::write(
        &scenario,
        format!(
            r#"
name: live-run
server: {{ launch: {{ map: oa_dm1 }}, address: "127.0.0.1:{port}", rcon_password: "${{OA_RCON_PASSWORD}}" }}
players: {{ humans: 1, join_timeout: 10m }}
warmup: {{ duration: 5s }}
matches: {{ timelimit: 10s }}
latency: {{ interface: lo, levels: [0ms], shaper: none }}
obs: {{ password: "${{OBS_PASSWORD}}" }}
output: {{ dir: "{}" }}
live: {{ listen: "127.0.0.1:{live_port}", token: "${{OA_RUN_LIVE_TOKEN}}" }}
"#,
            dir.path().join("runs").display()
        ),
    )
    .unwrap();
    let child = Command::new(support::oa_run())
        .arg(&scenario)
        .env("OA_RCON_PASSWORD", "live-run-rcon")
        .env("OBS_PASSWORD", "live-run-obs")
        .env("OA_RUN_LIVE_TOKEN", TOKEN)
        .env("OA_RUN_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{live_port}").parse().unwrap();
    let auth = ("Authorization", format!("Bearer {TOKEN}"));
    let auth = [(auth.0, auth.1.as_str())];

    // The feed: welcome, a snapshot, then events until the run waits for its player.
    let t = Instant::now();
    let mut ws = loop {
        match tokio_tungstenite::connect_async(format!("ws://{addr}/feed?token={TOKEN}")).await {
            Ok((ws, _)) => break ws,
            Err(_) if t.elapsed() < Duration::from_secs(60) => {
                assert!(guard.0.try_wait().unwrap().is_none(), "oa-run exited early");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the live view never came up: {e}"),
        }
    };
    let mut next = async || -> Option<FeedMessage> {
        loop {
            match tokio::time::timeout(Duration::from_secs(60), ws.next())
                .await
                .expect("a feed message within 60 s")
            {
                Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(f))) => {
                    assert_eq!(f.map(|f| f.code), Some(CloseCode::Normal));
                    return None;
                }
                Some(Ok(_)) => {}
                other => panic!("the feed broke: {other:?}"),
            }
        }
    };
    assert!(matches!(next().await, Some(FeedMessage::Welcome { .. })));
    let mut waiting = match next().await {
        Some(FeedMessage::Snapshot { state, .. }) => {
            state.live.step.is_some_and(|s| s.kind == "wait_for_humans")
        }
        other => panic!("expected a snapshot, got {other:?}"),
    };
    while !waiting {
        if let Some(FeedMessage::Event(e)) = next().await
            && let RunEvent::StepStarted { kind, .. } = &e.event
        {
            waiting = kind == "wait_for_humans";
        }
    }

    // Health, state and metrics while it waits.
    let (code, _, body) = http(addr, "GET", "/healthz", &[]).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(http(addr, "GET", "/api/state", &[]).await.0, 401);
    let (code, _, metrics) = http(addr, "GET", "/metrics", &auth).await;
    assert_eq!(code, 200);
    let ok_rcon: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("oa_run_rcon_requests_total{result=\"ok\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(
        ok_rcon >= 1.0,
        "real rcon exchanges are counted:\n{metrics}"
    );
    if support::missing_program("promtool").is_none() {
        let mut p = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        p.stdin
            .take()
            .unwrap()
            .write_all(metrics.as_bytes())
            .unwrap();
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // Abort over the API: the Ctrl-C path, told on the feed, then a normal close.
    let (code, _, body) = http(addr, "POST", "/api/abort", &auth).await;
    assert_eq!(code, 202, "{body}");
    let mut finished = None;
    while let Some(m) = next().await {
        if let FeedMessage::Event(e) = m
            && let RunEvent::RunFinished { status } = e.event
        {
            finished = Some(status);
        }
    }
    assert!(
        matches!(finished, Some(RunStatus::Interrupted { .. })),
        "{finished:?}"
    );
    let t = Instant::now();
    let code = loop {
        if let Some(s) = guard.0.try_wait().unwrap() {
            break s.code();
        }
        assert!(t.elapsed() < Duration::from_secs(30), "oa-run did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut err = String::new();
    use std::io::Read;
    let _ = guard.0.stderr.take().unwrap().read_to_string(&mut err);
    assert_eq!(code, Some(130), "{err}");
    assert!(
        err.contains(&format!("live view at http://{addr}/")),
        "{err}"
    );
    assert!(!err.contains(TOKEN), "the token is never logged");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the port is released"
    );
    assert!(
        support::pids_with_cmdline(&format!("net_port {port}")).is_empty(),
        "the server was stopped"
    );
}
