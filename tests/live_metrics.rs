//! `/metrics` from the real live server, fed by a real hub: the text passes Debian's
//! `promtool check metrics`, and the figures follow the events (and real rcon exchanges).

mod support;

use std::time::Duration;

use oa_run::arena::rcon::{Rcon, RconCmd};
use oa_run::manifest::{RecordingRecord, RunStatus};
use oa_run::run::events::{RecordingPhase, RunEvent};
use oa_run::run::signals::Shutdown;
use oa_run::scenario::Secret;
use support::live::{http, hub, serve, study_start};

/// A value from the exposition text, by the sample's full name with labels.
fn value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

/// One real rcon exchange with a loopback UDP peer that answers like the server, and one to a
/// closed port (the kernel refuses it).
async fn rcon_traffic() {
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = peer.local_addr().unwrap();
    let answer = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        let (_, from) = peer.recv_from(&mut buf).await.unwrap();
        peer.send_to(b"\xff\xff\xff\xffprint\nmap: oa_dm1\n", from)
            .await
            .unwrap();
    });
    let r = Rcon::new(addr, Secret::new("pw")).unwrap();
    r.send(&RconCmd::status()).await.unwrap();
    answer.await.unwrap();
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let r = Rcon::new(closed_addr, Secret::new("pw")).unwrap();
    assert!(r.send(&RconCmd::status()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_run_and_pass_promtool() {
    let mut h = hub();
    let (live, addr) = serve(
        &mut h,
        Some("t0k"),
        Duration::from_secs(5),
        Shutdown::manual(),
    )
    .await;
    for e in study_start("<img src=x onerror=alert(1)>\"\n}") {
        h.emit(e);
    }
    let rec = |player: u32, error: Option<&str>| {
        let mut r = RecordingRecord::planned(player, 1, format!("live-test_m1_pc{player}"));
        r.error = error.map(String::from);
        r
    };
    h.emit(RunEvent::RecordingStarted {
        player: 1,
        match_no: 1,
        record: rec(1, None),
    });
    h.emit(RunEvent::RecordingFailed {
        player: 2,
        match_no: 1,
        phase: RecordingPhase::Start,
        error: "OBS said no".into(),
    });
    h.emit(RunEvent::PlayerKicked {
        player: 2,
        slot: 2,
        reason: "OBS failed".into(),
    });
    rcon_traffic().await;

    // Prometheus asks for OpenMetrics; promtool and curl get the 0.0.4 text format.
    let (code, head, om) = http(
        addr,
        "GET",
        "/metrics",
        &[
            ("Authorization", "Bearer t0k"),
            (
                "Accept",
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
            ),
        ],
    )
    .await;
    assert_eq!(code, 200);
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(om.ends_with("# EOF\n"));
    let (code, head, text) =
        http(addr, "GET", "/metrics", &[("Authorization", "Bearer t0k")]).await;
    assert_eq!(code, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let v = |s: &str| value(&text, s).unwrap_or_else(|| panic!("no sample {s} in\n{text}"));
    assert_eq!(v("oa_run_step"), 3.0, "step index 2 is step 3 of 6");
    assert_eq!(v("oa_run_match"), 1.0);
    assert_eq!(v("oa_run_players{state=\"in\"}"), 1.0);
    assert_eq!(v("oa_run_players{state=\"kicked\"}"), 1.0);
    assert_eq!(v("oa_run_recording{player=\"pc1\"}"), 1.0);
    assert_eq!(v("oa_run_recording{player=\"pc2\"}"), 0.0);
    assert_eq!(v("oa_run_recordings_total{result=\"failed\"}"), 1.0);
    assert_eq!(v("oa_run_recording_start_skew_seconds_count"), 1.0);
    assert_eq!(v("oa_run_recording_start_skew_seconds_sum"), 0.023);
    assert_eq!(
        v("oa_run_player_latency_planned_seconds{player=\"pc1\"}")
            + v("oa_run_player_latency_planned_seconds{player=\"pc2\"}"),
        0.1
    );
    assert!(v("oa_run_rcon_requests_total{result=\"ok\"}") >= 1.0);
    assert!(v("oa_run_rcon_requests_total{result=\"refused\"}") >= 1.0);
    assert!(v("oa_run_rcon_rtt_seconds_count") >= 1.0);
    assert_eq!(v("oa_run_obs_reconnects_total"), 0.0);
    assert!(
        !text.contains("onerror"),
        "no player name reaches a label: labels are the study's"
    );

    h.emit(RunEvent::RunFinished {
        status: RunStatus::Completed,
    });
    if let Some(why) = support::missing_program("promtool") {
        live.stop().await;
        return support::skip(&why);
    }
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejected /metrics:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    live.stop().await;
}
