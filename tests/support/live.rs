//! A real hub and live server for the live-view tests (and the feed benchmark): a study
//! compiled from a scenario, fed synthetic events by the test.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use oa_run::live::{LiveConfig, LiveServer};
use oa_run::manifest::{Manifest, RunDir, Timestamp};
use oa_run::run::events::RunEvent;
use oa_run::run::hub::Hub;
use oa_run::run::signals::Shutdown;
use oa_run::run::state::RunState;
use oa_run::scenario::{Secret, SecretsMode, load_str};

const SCENARIO: &str = r#"
name: live-test
server:
  launch: {}
  address: 127.0.0.1:27960
  rcon_password: rcon
players:
  humans: 2
  seats:
    - { name: pc1, ip: 10.77.0.11 }
    - { name: pc2, ip: 10.77.0.12 }
warmup: { duration: 10s }
matches: { timelimit: 2m, repeats: 1 }
latency: { interface: lo, levels: [0ms, 100ms], shaper: none }
obs:
  password: obs
  recording: {}
"#;

/// A hub over a two-player, two-match study, with no sinks.
pub fn hub() -> Hub {
    let l = load_str(
        "live-test.yaml",
        SCENARIO,
        &[],
        &BTreeMap::new(),
        SecretsMode::Required,
    )
    .unwrap();
    let plan = oa_run::plan::compile(&l).unwrap();
    let dir = std::env::temp_dir().join(format!("oa-run-live-{}", uuid::Uuid::new_v4()));
    let rd = RunDir::create(&dir, "live-test", Timestamp::now()).unwrap();
    let m = Manifest::from_plan(&l, &plan, &rd);
    let _ = std::fs::remove_dir_all(&dir);
    Hub::new(RunState::new(m), Vec::new())
}

/// A live server on a free loopback port serving `hub` (its metrics sink added to the hub).
pub async fn serve(
    hub: &mut Hub,
    token: Option<&str>,
    heartbeat: Duration,
    shutdown: Shutdown,
) -> (LiveServer, SocketAddr) {
    let mut live = LiveServer::bind(LiveConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: token.map(Secret::new),
        heartbeat,
        stall: oa_run::live::STALL,
    })
    .await
    .unwrap();
    let sink = live.start(&hub.handle(), shutdown);
    hub.add_sink(sink);
    let addr = live.local_addr();
    (live, addr)
}

/// [`serve`] with the questionnaire's pages: `desk` makes the desk from the links' base URL.
pub async fn serve_with(
    hub: &mut Hub,
    token: Option<&str>,
    shutdown: Shutdown,
    desk: impl FnOnce(&str) -> oa_run::run::questionnaire::Desk,
) -> (
    LiveServer,
    SocketAddr,
    Option<oa_run::run::questionnaire::Desk>,
) {
    let mut live = LiveServer::bind(LiveConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: token.map(Secret::new),
        heartbeat: Duration::from_secs(5),
        stall: oa_run::live::STALL,
    })
    .await
    .unwrap();
    let d = desk(&live.public_base(None));
    live.serve_questionnaire(d.clone());
    let sink = live.start(&hub.handle(), shutdown);
    hub.add_sink(sink);
    let addr = live.local_addr();
    (live, addr, Some(d))
}

/// The start of a study as the executor tells it: run, step, two players (one with a
/// hostile name), their OBS, the first match with its latency and recordings.
pub fn study_start(hostile: &str) -> Vec<RunEvent> {
    use oa_run::run::events::RunEvent as E;
    let joined = |player: u32, name: &str| E::PlayerJoined {
        player,
        label: format!("pc{player}"),
        slot: player as u8,
        ip: format!("10.77.0.1{player}").parse().unwrap(),
        seat: Some(format!("pc{player}")),
        name: name.into(),
        name_raw: name.into(),
        obs_port: 4455,
    };
    vec![
        E::RunStarted {
            study: "live-test".into(),
            run_dir: "/tmp/live-test".into(),
            steps: 6,
            matches: 2,
            humans: 2,
        },
        E::StepStarted {
            index: 0,
            kind: "wait_for_players".into(),
            match_no: None,
            description: "wait for 2 humans".into(),
            duration_s: None,
        },
        joined(1, "Alice"),
        joined(2, hostile),
        E::BotsSet {
            bots: vec![
                oa_run::run::events::BotSlot {
                    slot: 3,
                    name: "Sarge".into(),
                },
                oa_run::run::events::BotSlot {
                    slot: 4,
                    name: "Major".into(),
                },
            ],
            skill: 2,
        },
        E::StepStarted {
            index: 2,
            kind: "match".into(),
            match_no: Some(1),
            description: "match 1 of 2".into(),
            duration_s: None,
        },
        E::MatchStarted {
            match_no: 1,
            map: Some("oa_dm1".into()),
            planned_s: 120.0,
        },
        E::RecordingsStarted {
            match_no: 1,
            started: 2,
            arrival_spread_ms: Some(23.0),
        },
    ]
}

/// [`study_start`] plus what makes the dashboard look like a study in progress: both OBS up,
/// the latency applied, player 1 recording.
pub fn study_in_progress(hostile: &str) -> Vec<RunEvent> {
    use oa_run::manifest::{ObsRecord, RecordingRecord, ShapingRecord};
    use oa_run::run::events::RunEvent as E;
    let mut ev = study_start(hostile);
    let at = ev.len() - 2;
    let obs = |player: u32| E::ObsConnected {
        player,
        obs: ObsRecord {
            host: Some(format!("10.77.0.1{player}")),
            port: 4455,
            connected_at: Some(Timestamp::now()),
            obs_version: Some("29.0.2".into()),
            websocket_version: Some("5.1.0".into()),
            rpc_version: Some(1),
            error: None,
        },
        after_join_ms: Some(320),
    };
    let mut rec = RecordingRecord::planned(1, 1, "live-test_m1_pc1_0ms");
    rec.path = Some("/home/lab/recordings/live-test_m1_pc1_0ms.mkv".into());
    rec.started_at = Some(Timestamp::now());
    ev.splice(
        at..at,
        [
            obs(1),
            obs(2),
            E::LatencySet {
                match_no: 1,
                shaping: ShapingRecord {
                    applied: true,
                    at: Some(Timestamp::now()),
                    config: serde_json::Value::Null,
                    error: None,
                },
            },
        ],
    );
    ev.push(E::RecordingStarted {
        player: 1,
        match_no: 1,
        record: rec,
    });
    ev
}

/// An event for filling the stream.
pub fn info(i: u64) -> RunEvent {
    RunEvent::Info {
        message: format!("event {i}"),
    }
}

/// One HTTP/1.1 request over a fresh connection: (status, headers, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    http_body(addr, method, path, headers, "").await
}

/// [`http`] with a request body.
pub async fn http_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    // Read by Content-Length: some servers (chromedriver) keep the connection open.
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = head.lines().find_map(|l| {
                    l.strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                });
                if let Some(len) = len
                    && buf.len() >= end + 4 + len
                {
                    buf.truncate(end + 4 + len);
                    return buf;
                }
            }
            match s.read(&mut chunk).await.unwrap() {
                0 => return buf,
                n => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let buf = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("an HTTP answer within 30 s");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}
