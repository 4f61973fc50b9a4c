//! The OBS contract: the same assertions, run against real OBS (tests/obs_real.rs) and against
//! the fake (tests/obs_fake.rs), so the fake cannot drift from what OBS 29.0.2 /
//! obs-websocket 5.1.0 really does.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use oa_run::obs::protocol::{self, REQUIRED_REQUESTS};
use oa_run::obs::{Confirmation, IfActive, ObsClient, ObsConfig, ObsError, ObsEvent, ObsTarget};
use oa_run::scenario::Secret;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// An obs-websocket server under test.
#[derive(Clone, Debug)]
pub struct Peer {
    pub kind: &'static str,
    pub port: u16,
    pub password: String,
    pub rec_dir: PathBuf,
}

impl Peer {
    pub fn target(&self, label: &str) -> ObsTarget {
        ObsTarget::new(
            label,
            "127.0.0.1",
            self.port,
            Secret::new(self.password.clone()),
        )
    }
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Timeouts that suit a loaded 2-core machine with real OBS.
pub fn cfg() -> ObsConfig {
    ObsConfig {
        connect_timeout: Duration::from_secs(10),
        retries: 0,
        start_timeout: Duration::from_secs(10),
        stop_timeout: Duration::from_secs(20),
        request_timeout: Duration::from_secs(5),
        keepalive_interval: Duration::from_secs(2),
        ..ObsConfig::default()
    }
}

/// Everything in the contract, in an order that leaves the peer idle.
pub async fn run_all(p: &Peer) {
    connect_and_identify(p).await;
    wrong_password_is_final(p).await;
    raw_protocol(p).await;
    record_cycle(p).await;
    recording_survives_the_client(p).await;
}

/// Hello → Identify → Identified, GetVersion, features from availableRequests.
pub async fn connect_and_identify(p: &Peer) {
    let c = ObsClient::connect(p.target("c1"), cfg())
        .await
        .unwrap_or_else(|e| panic!("[{}] connect: {e}", p.kind));
    let info = c.server_info();
    assert!(info.authenticated, "[{}] auth was required", p.kind);
    assert_eq!(info.negotiated_rpc_version, 1);
    assert_eq!(info.version.obs_web_socket_version, "5.1.0", "[{}]", p.kind);
    assert_eq!(info.version.obs_version, "29.0.2", "[{}]", p.kind);
    assert_eq!(info.version.rpc_version, 1);
    let mut rec = oa_run::manifest::PlayerRecord::new(1, "c1", p.port).obs;
    info.fill(&mut rec);
    assert_eq!(rec.websocket_version.as_deref(), Some("5.1.0"));
    assert_eq!(rec.rpc_version, Some(1));
    assert!(rec.connected_at.is_some());
    for r in REQUIRED_REQUESTS {
        assert!(info.version.supports(r), "[{}] lacks {r}", p.kind);
    }
    // 5.1.0 predates SetRecordDirectory (5.3.0) and SplitRecordFile (5.5.0).
    assert!(!info.can_set_record_directory, "[{}]", p.kind);
    assert!(!info.can_split_record_file, "[{}]", p.kind);
    let st = c.record_status().await.unwrap();
    assert!(!st.output_active, "[{}] recording at start", p.kind);
    let stats = c.stats().await.unwrap();
    assert!(stats.available_disk_space_mb > 0.0, "[{}]", p.kind);
    // Unknown request types are a typed error, not a hang.
    match c.request("NoSuchRequest", None).await {
        Err(ObsError::RequestFailed { code, .. }) => assert_eq!(code, 204, "[{}]", p.kind),
        other => panic!("[{}] unknown request: {other:?}", p.kind),
    }
    // Not recording: StopRecord is refused with 501.
    match c.request("StopRecord", None).await {
        Err(ObsError::RequestFailed { code, request, .. }) => {
            assert_eq!(
                (code, request.as_str()),
                (501, "StopRecord"),
                "[{}]",
                p.kind
            )
        }
        other => panic!("[{}] StopRecord while idle: {other:?}", p.kind),
    }
    assert!(matches!(
        c.stop_recording().await,
        Err(ObsError::NotRecording { .. })
    ));
    c.close().await;
}

/// 4009 is a typed error naming host:port, and is not retried.
pub async fn wrong_password_is_final(p: &Peer) {
    let mut t = p.target("bad");
    t.password = Secret::new("definitely-wrong-password");
    let retrying = ObsConfig {
        retries: 3,
        backoff_initial: Duration::from_secs(2),
        ..cfg()
    };
    let t0 = Instant::now();
    let e = ObsClient::connect(t, retrying).await.unwrap_err();
    assert!(
        matches!(e, ObsError::AuthFailed { .. }),
        "[{}] {e:?}",
        p.kind
    );
    assert_eq!(
        e.to_string(),
        format!("OBS at {} rejected the password (4009)", p.addr())
    );
    assert!(!format!("{e} {e:?}").contains("definitely-wrong-password"));
    // A retry would have slept 2 s first.
    assert!(
        t0.elapsed() < Duration::from_millis(1800),
        "[{}] retried a rejected password ({:?})",
        p.kind,
        t0.elapsed()
    );
    // No password at all while the server requires one.
    let mut t = p.target("nopw");
    t.password = Secret::new("");
    let e = ObsClient::connect(t, cfg()).await.unwrap_err();
    assert!(
        matches!(e, ObsError::PasswordMissing { .. }),
        "[{}] {e:?}",
        p.kind
    );
}

type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw_connect(p: &Peer) -> RawWs {
    let mut req = format!("ws://{}/", p.addr()).into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("obswebsocket.json"),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok()),
        Some("obswebsocket.json"),
        "[{}] subprotocol",
        p.kind
    );
    ws
}

async fn next_json(ws: &mut RawWs) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("stream open")
            .expect("frame ok");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// The close code the server sends next (skipping other frames).
async fn close_code(ws: &mut RawWs) -> u16 {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s");
        match m {
            Some(Ok(Message::Close(Some(f)))) => return f.code.into(),
            Some(Ok(Message::Close(None))) => return 1005,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("no close frame: {e}"),
            None => panic!("closed without a close frame"),
        }
    }
}

async fn raw_identify(p: &Peer) -> RawWs {
    let mut ws = raw_connect(p).await;
    let hello = next_json(&mut ws).await;
    let a = &hello["d"]["authentication"];
    let auth = protocol::auth_string(
        &p.password,
        a["salt"].as_str().unwrap(),
        a["challenge"].as_str().unwrap(),
    );
    let id = protocol::encode_identify(Some(auth), protocol::subs::RECORDER);
    ws.send(Message::text(id)).await.unwrap();
    let identified = next_json(&mut ws).await;
    assert_eq!(identified["op"], 2, "[{}] {identified}", p.kind);
    assert_eq!(identified["d"]["negotiatedRpcVersion"], 1);
    ws
}

/// Wire-level behaviour the fake must copy.
pub async fn raw_protocol(p: &Peer) {
    // Hello comes first, with a salt fixed per server start and a fresh challenge.
    let mut a = raw_connect(p).await;
    let mut b = raw_connect(p).await;
    let ha = next_json(&mut a).await;
    let hb = next_json(&mut b).await;
    assert_eq!(ha["op"], 0, "[{}] {ha}", p.kind);
    assert_eq!(ha["d"]["rpcVersion"], 1);
    assert_eq!(ha["d"]["obsWebSocketVersion"], "5.1.0");
    // 5.1.0 does not send obsStudioVersion (5.6.0+).
    assert!(
        ha["d"].get("obsStudioVersion").is_none(),
        "[{}] {ha}",
        p.kind
    );
    assert_eq!(
        ha["d"]["authentication"]["salt"], hb["d"]["authentication"]["salt"],
        "[{}]",
        p.kind
    );
    assert_ne!(
        ha["d"]["authentication"]["challenge"],
        hb["d"]["authentication"]["challenge"]
    );
    // A request before Identify: 4007.
    a.send(Message::text(protocol::encode_request(
        "GetVersion",
        "1",
        None,
    )))
    .await
    .unwrap();
    assert_eq!(close_code(&mut a).await, 4007, "[{}]", p.kind);
    // A wrong authentication string: 4009.
    let id = protocol::encode_identify(Some("AAAA".into()), protocol::subs::RECORDER);
    b.send(Message::text(id)).await.unwrap();
    assert_eq!(close_code(&mut b).await, 4009, "[{}]", p.kind);

    // After Identify: a binary frame on the JSON subprotocol is 4002.
    let mut c = raw_identify(p).await;
    c.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(close_code(&mut c).await, 4002, "[{}]", p.kind);
    // An unknown op code is 4006.
    let mut d = raw_identify(p).await;
    d.send(Message::text(json!({"op": 42, "d": {}}).to_string()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut d).await, 4006, "[{}]", p.kind);
    // A second Identify is 4008.
    let mut e = raw_identify(p).await;
    e.send(Message::text(protocol::encode_identify(None, 65)))
        .await
        .unwrap();
    assert_eq!(close_code(&mut e).await, 4008, "[{}]", p.kind);

    // Responses echo requestType and requestId; the status object is as documented.
    let mut f = raw_identify(p).await;
    f.send(Message::text(protocol::encode_request(
        "GetRecordStatus",
        "abc-1",
        None,
    )))
    .await
    .unwrap();
    let r = next_json(&mut f).await;
    assert_eq!(r["op"], 7, "[{}] {r}", p.kind);
    assert_eq!(r["d"]["requestId"], "abc-1");
    assert_eq!(r["d"]["requestType"], "GetRecordStatus");
    assert_eq!(r["d"]["requestStatus"]["result"], true);
    assert_eq!(r["d"]["requestStatus"]["code"], 100);
    let data = &r["d"]["responseData"];
    for k in [
        "outputActive",
        "outputPaused",
        "outputTimecode",
        "outputDuration",
        "outputBytes",
    ] {
        assert!(
            data.get(k).is_some(),
            "[{}] GetRecordStatus lacks {k}: {r}",
            p.kind
        );
    }
    // A missing field in a known request: 300, with a comment.
    f.send(Message::text(protocol::encode_request(
        "SetProfileParameter",
        "abc-2",
        Some(json!({"parameterCategory": "Output"})),
    )))
    .await
    .unwrap();
    let r = next_json(&mut f).await;
    assert_eq!(r["d"]["requestStatus"]["result"], false, "[{}] {r}", p.kind);
    assert_eq!(r["d"]["requestStatus"]["code"], 300, "[{}] {r}", p.kind);
    let _ = f.close(None).await;
}

fn expected_path(dir: &Path, name: &str) -> String {
    dir.join(format!("{name}.mkv")).display().to_string()
}

fn file_len(path: &str) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Start with the planned name, refuse a double start, stop with a final non-empty file;
/// the same name again gets a new file (never overwritten).
pub async fn record_cycle(p: &Peer) {
    let c = ObsClient::connect(p.target("rec"), cfg()).await.unwrap();
    let name = format!("contract_m1_{}_100ms", p.kind);
    let s = c
        .start_recording(&name, IfActive::Refuse)
        .await
        .unwrap_or_else(|e| panic!("[{}] start: {e}", p.kind));
    assert_eq!(s.confirmed_by, Confirmation::Event, "[{}]", p.kind);
    let path = s.path.clone().expect("STARTED carries the path");
    assert_eq!(path, expected_path(&p.rec_dir, &name), "[{}]", p.kind);
    assert!(s.at >= s.requested_at);
    assert!(c.record_status().await.unwrap().output_active);

    // Double start: our check refuses it; a raw StartRecord gets 500 OutputRunning.
    let e = c
        .start_recording(&format!("{name}_again"), IfActive::Refuse)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ObsError::AlreadyRecording { .. }),
        "[{}] {e:?}",
        p.kind
    );
    assert!(e.to_string().contains(&p.addr()), "{e}");
    match c.request("StartRecord", None).await {
        Err(ObsError::RequestFailed { code, .. }) => assert_eq!(code, 500, "[{}]", p.kind),
        other => panic!("[{}] raw double StartRecord: {other:?}", p.kind),
    }

    // Real OBS's x264 delays the first packets ~1.5 s at 10 fps: before that the status
    // shows 0 bytes and the file does not exist yet.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stopped = c
        .stop_recording()
        .await
        .unwrap_or_else(|e| panic!("[{}] stop: {e}", p.kind));
    assert_eq!(stopped.confirmed_by, Confirmation::Event, "[{}]", p.kind);
    assert_eq!(stopped.path.as_deref(), Some(path.as_str()), "[{}]", p.kind);
    assert!(stopped.duration_ms > 0, "[{}] {stopped:?}", p.kind);
    assert!(stopped.bytes > 0, "[{}] {stopped:?}", p.kind);
    assert!(stopped.at > stopped.requested_at);
    assert!(
        file_len(&path) > 0,
        "[{}] {path} is empty or missing",
        p.kind
    );
    assert!(!c.record_status().await.unwrap().output_active);

    // Straight after STOPPED a new start works; the same name is not overwritten.
    let s2 = c.start_recording(&name, IfActive::Refuse).await.unwrap();
    let path2 = s2.path.clone().unwrap();
    assert_ne!(path2, path, "[{}] overwrote the first file", p.kind);
    assert!(
        path2.starts_with(&p.rec_dir.display().to_string()) && path2.ends_with(".mkv"),
        "[{}] {path2}",
        p.kind
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st2 = c.stop_recording().await.unwrap();
    assert_eq!(st2.path.as_deref(), Some(path2.as_str()));
    assert!(file_len(&path2) > 0, "[{}] {path2}", p.kind);
    assert!(file_len(&path) > 0);
    c.close().await;
}

/// A recording keeps running when its client goes; the next client sees it, refuses to start
/// over it, and can stop it first when told to.
pub async fn recording_survives_the_client(p: &Peer) {
    let a = ObsClient::connect(p.target("a"), cfg()).await.unwrap();
    let first = a
        .start_recording(&format!("left_running_{}", p.kind), IfActive::Refuse)
        .await
        .unwrap();
    a.close().await;
    drop(a);

    let b = ObsClient::connect(p.target("b"), cfg()).await.unwrap();
    let st = b.record_status().await.unwrap();
    assert!(
        st.output_active,
        "[{}] recording stopped with its client",
        p.kind
    );
    let e = b
        .start_recording(&format!("next_{}", p.kind), IfActive::Refuse)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ObsError::AlreadyRecording { .. }),
        "[{}] {e:?}",
        p.kind
    );
    let s = b
        .start_recording(&format!("next_{}", p.kind), IfActive::StopFirst)
        .await
        .unwrap_or_else(|e| panic!("[{}] StopFirst: {e}", p.kind));
    assert_eq!(
        s.path.as_deref(),
        Some(expected_path(&p.rec_dir, &format!("next_{}", p.kind)).as_str())
    );
    assert!(file_len(first.path.as_deref().unwrap()) > 0);
    let stopped = b.stop_recording().await.unwrap();
    assert_eq!(stopped.path, s.path);
    b.close().await;
}

/// A valid scenario whose seats point at the given OBS (`(seat, ip, port)`); the password
/// comes from `${OBS_PASSWORD}`.
pub fn scenario_yaml(seats: &[(&str, &str, u16)]) -> String {
    let mut s = String::from(
        "name: obs-check\n\
         server:\n  launch: {}\n  address: 127.0.0.1:27960\n  rcon_password: ${OA_RCON_PASSWORD}\n\
         players:\n",
    );
    s.push_str(&format!("  humans: {}\n", seats.len().max(1)));
    if !seats.is_empty() {
        s.push_str("  seats:\n");
        for (name, ip, port) in seats {
            s.push_str(&format!(
                "    - {{ name: {name}, ip: {ip}, obs: {{ port: {port} }} }}\n"
            ));
        }
    }
    s.push_str(
        "warmup: { duration: 30s }\n\
         matches: { timelimit: 1m }\n\
         latency: { interface: lo, levels: [100ms], shaper: none }\n\
         obs:\n  password: ${OBS_PASSWORD}\n  connect_timeout: 5s\n  retries: 0\n  recording: {}\n",
    );
    s
}

/// Run `oa-run check` on a scenario file; returns (exit code, stdout, stderr).
pub async fn run_check(dir: &Path, yaml: &str, password: &str) -> (i32, String, String) {
    let path = dir.join("check.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(crate::support::oa_run())
            .arg("check")
            .arg(&path)
            .env("OBS_PASSWORD", password)
            .env("OA_RCON_PASSWORD", "rcon-unused")
            .env_remove("OA_RUN_LOG")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("oa-run check finished within 60 s")
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The table row of one target.
pub fn row<'a>(table: &'a str, target: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(target))
        .unwrap_or_else(|| panic!("no row for {target} in\n{table}"))
}

/// Wait for the first event that `f` accepts (panics after `t`).
pub async fn wait_event<T>(
    rx: &mut broadcast::Receiver<ObsEvent>,
    t: Duration,
    mut f: impl FnMut(&ObsEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + t;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(e)) => {
                if let Some(v) = f(&e) {
                    return v;
                }
            }
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("event channel: {e}"),
            Err(_) => panic!("no matching event within {t:?}"),
        }
    }
}
