//! Webhooks against a real HTTP receiver on loopback: signed bodies, retries with one delivery
//! id, filters, the manifest's delivery records, and a dead webhook that never holds the study.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use oa_run::manifest::{Manifest, RunDir, RunStatus, Timestamp};
use oa_run::run::events::RunEvent;
use oa_run::run::hub::Hub;
use oa_run::run::state::RunState;
use oa_run::run::webhooks::{Policy, QUEUE, WebhookSink, signature};
use oa_run::scenario::{Notify, Secret, SecretsMode, load_str};

const SCENARIO: &str = r#"
name: hooks
server: { launch: {}, address: 127.0.0.1:27960, rcon_password: x }
players: { humans: 1 }
warmup: { duration: 10s }
matches: { timelimit: 20s, repeats: 1 }
latency: { interface: lo, levels: [0ms], shaper: none }
obs: { password: x, recording: {} }
"#;

fn state(dir: &std::path::Path) -> RunState {
    let l = load_str(
        "hooks.yaml",
        SCENARIO,
        &[],
        &BTreeMap::new(),
        SecretsMode::Required,
    )
    .unwrap();
    let plan = oa_run::plan::compile(&l).unwrap();
    let rd = RunDir::create(dir, "hooks", Timestamp::now()).unwrap();
    RunState::new(Manifest::from_plan(&l, &plan, &rd))
}

#[derive(Debug, Clone)]
struct Seen {
    event: String,
    delivery: String,
    signature: Option<String>,
    body: Vec<u8>,
}

/// A receiver that fails the first `fail_first` attempts of every delivery with 500.
async fn receiver(fail_first: usize) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let s2 = seen.clone();
    let app = axum::Router::new().route(
        "/hook/secret-path",
        post(move |headers: HeaderMap, body: Bytes| {
            let seen = s2.clone();
            async move {
                let h = |k: &str| {
                    headers
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .map(String::from)
                };
                let one = Seen {
                    event: h("x-oa-run-event").unwrap_or_default(),
                    delivery: h("x-oa-run-delivery").unwrap_or_default(),
                    signature: h("x-oa-run-signature"),
                    body: body.to_vec(),
                };
                let mut g = seen.lock().unwrap();
                let tries = g.iter().filter(|s| s.delivery == one.delivery).count();
                g.push(one);
                if tries < fail_first {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}/hook/secret-path"), seen)
}

fn fast() -> Policy {
    Policy {
        timeout: Duration::from_secs(2),
        attempts: 4,
        backoff: Duration::from_millis(20),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_signed_retried_filtered_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (url, seen) = receiver(2).await;
    let mut hub = Hub::new(state(dir.path()), Vec::new());
    let hook = Notify {
        url: Secret::new(url),
        events: Some(vec!["warning".into(), "run_finished".into()]),
        secret: Some(Secret::new("hook-key")),
    };
    hub.add_sink(Box::new(
        WebhookSink::start(0, &hook, hub.handle(), fast()).unwrap(),
    ));
    hub.emit(RunEvent::Info {
        message: "not wanted".into(),
    });
    hub.emit(RunEvent::Warning {
        message: "wanted".into(),
        player: None,
        match_no: None,
    });
    hub.emit(RunEvent::RunFinished {
        status: RunStatus::Completed,
    });
    hub.settle(Duration::from_secs(10)).await;

    let seen = seen.lock().unwrap().clone();
    // Two events, each failed twice then accepted: 6 POSTs, 3 per delivery id.
    assert_eq!(seen.len(), 6, "{seen:?}");
    let mut by_id: BTreeMap<String, Vec<&Seen>> = BTreeMap::new();
    for s in &seen {
        by_id.entry(s.delivery.clone()).or_default().push(s);
        let sig = s.signature.as_deref().expect("signed");
        assert_eq!(sig, signature(&Secret::new("hook-key"), &s.body));
        let v: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
        assert_eq!(v["type"], "event");
        assert_eq!(v["event"]["type"], s.event.as_str());
    }
    assert_eq!(by_id.len(), 2);
    assert!(by_id.values().all(|v| v.len() == 3));
    let kinds: Vec<&str> = seen.iter().map(|s| s.event.as_str()).collect();
    assert!(!kinds.contains(&"info"), "filtered out");

    let st = hub.state();
    let recs = &st.manifest.notifications;
    assert_eq!(recs.len(), 2, "{recs:?}");
    for r in recs {
        assert!(r.ok, "{r:?}");
        assert_eq!(r.attempts, 3);
        assert_eq!(r.status, Some(200));
        assert!(
            !r.target.contains("secret-path"),
            "the URL's path stays out of the manifest"
        );
    }
    let json = serde_json::to_string(&st.manifest).unwrap();
    assert!(!json.contains("secret-path") && !json.contains("hook-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_webhook_is_bounded_and_recorded_but_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: every attempt is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut hub = Hub::new(state(dir.path()), Vec::new());
    let hook = Notify {
        url: Secret::new(format!("http://127.0.0.1:{port}/x")),
        events: None,
        secret: None,
    };
    let policy = Policy {
        timeout: Duration::from_millis(200),
        attempts: 2,
        backoff: Duration::from_millis(200),
    };
    hub.add_sink(Box::new(
        WebhookSink::start(0, &hook, hub.handle(), policy).unwrap(),
    ));
    let n = QUEUE as u64 + 100;
    for i in 0..n {
        hub.emit(RunEvent::Info {
            message: format!("event {i}"),
        });
    }
    // Everything was accepted at once: the queue holds at most QUEUE (the worker may have
    // taken one), the overflow was dropped and reported.
    hub.emit(RunEvent::Info {
        message: "fold the inbox".into(),
    });
    let st = hub.state();
    let dropped = st
        .manifest
        .notifications
        .iter()
        .filter(|r| r.attempts == 0 && !r.ok)
        .count() as u64;
    assert!(dropped >= n - QUEUE as u64 - 1, "dropped {dropped}");
    assert!(
        st.manifest
            .notifications
            .iter()
            .all(|r| r.error.is_some() && !r.ok)
    );
    // The end of the run waits for the queue only within its bound.
    let t = std::time::Instant::now();
    hub.settle(Duration::from_millis(500)).await;
    assert!(t.elapsed() < Duration::from_secs(5));
}
