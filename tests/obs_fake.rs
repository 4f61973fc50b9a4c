//! The fake obs-websocket server: first the same contract real OBS passes (tests/obs_real.rs),
//! then what only a fake can do on demand: drops at exact moments, late responses, no Hello,
//! garbage, half-open sockets, kicks (4011), and many servers at once.

#[path = "support/obs_contract.rs"]
mod contract;
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contract::Peer;
use oa_run::obs::fake::{FakeConfig, FakeObs, Logged};
use oa_run::obs::{
    Confirmation, Fleet, IfActive, LinkState, ObsClient, ObsConfig, ObsError, ObsEvent, ObsTarget,
    OutputState,
};
use oa_run::scenario::Secret;
use tokio::sync::broadcast;

const PW: &str = "fake-secret-pw";

fn fake_cfg(dir: Option<&std::path::Path>) -> FakeConfig {
    FakeConfig {
        password: Some(PW.into()),
        record_dir: dir.map(|d| d.to_path_buf()),
        ..FakeConfig::default()
    }
}

async fn fake() -> FakeObs {
    FakeObs::start(fake_cfg(None)).await.unwrap()
}

fn target(f: &FakeObs) -> ObsTarget {
    ObsTarget::new("pc1", "127.0.0.1", f.port(), Secret::new(PW))
}

/// Short timeouts: everything here is loopback.
fn quick() -> ObsConfig {
    ObsConfig {
        connect_timeout: Duration::from_secs(2),
        retries: 0,
        start_timeout: Duration::from_secs(2),
        stop_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(1),
        keepalive_interval: Duration::from_secs(5),
        keepalive_timeout: Duration::from_secs(1),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        reconnect_window: Duration::from_secs(10),
        auto_reconnect: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_passes_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let f = FakeObs::start(fake_cfg(Some(dir.path()))).await.unwrap();
    let p = Peer {
        kind: "fake",
        port: f.port(),
        password: PW.into(),
        rec_dir: dir.path().to_path_buf(),
    };
    contract::run_all(&p).await;
}

#[tokio::test]
async fn no_hello_times_out_after_bounded_retries() {
    let f = fake().await;
    f.behave(|b| b.no_hello = true);
    let cfg = ObsConfig {
        connect_timeout: Duration::from_millis(300),
        retries: 2,
        ..quick()
    };
    let t0 = Instant::now();
    let e = ObsClient::connect(target(&f), cfg).await.unwrap_err();
    let took = t0.elapsed();
    match &e {
        ObsError::ConnectTimeout {
            stage, attempts, ..
        } => {
            assert_eq!(*stage, "no Hello");
            assert_eq!(*attempts, 3);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.count(&Logged::Accepted), 3);
    // 3 × 300 ms plus backoff 50 + 100 ms, and not much more.
    assert!(took >= Duration::from_millis(1000), "{took:?}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "OBS at 127.0.0.1:{} did not complete the obs-websocket handshake (no Hello) within 300ms (3 attempts)",
            f.port()
        )
    );
    assert_eq!(oa_run::Error::from(e).exit_code(), 69);
}

#[tokio::test]
async fn garbage_instead_of_hello_is_a_protocol_error_not_retried() {
    let f = fake().await;
    f.behave(|b| b.garbage_hello = Some("HTTP/1.1 200 OK\r\n\r\n<html>".into()));
    let cfg = ObsConfig {
        retries: 3,
        ..quick()
    };
    let e = ObsClient::connect(target(&f), cfg).await.unwrap_err();
    assert!(matches!(e, ObsError::Protocol { .. }), "{e:?}");
    assert!(e.to_string().contains("not obs-websocket v5"), "{e}");
    assert_eq!(f.count(&Logged::Accepted), 1);
}

#[tokio::test]
async fn refused_port_is_retried_with_backoff_then_unreachable() {
    let port = support::free_tcp_port();
    let t = ObsTarget::new("pc9", "127.0.0.1", port, Secret::new(PW));
    let cfg = ObsConfig {
        retries: 3,
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(150),
        ..quick()
    };
    let t0 = Instant::now();
    let e = ObsClient::connect(t, cfg).await.unwrap_err();
    let took = t0.elapsed();
    assert!(
        matches!(e, ObsError::Unreachable { attempts: 4, .. }),
        "{e:?}"
    );
    // Backoff 100 + 150 + 150 ms.
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")));
}

#[tokio::test]
async fn an_old_server_is_refused_by_its_available_requests() {
    let mut c = fake_cfg(None);
    c.websocket_version = "5.9.9".into();
    c.available_requests = Some(vec!["GetVersion".into(), "GetStats".into()]);
    let f = FakeObs::start(c).await.unwrap();
    let e = ObsClient::connect(target(&f), quick()).await.unwrap_err();
    match &e {
        ObsError::Unsupported { detail, .. } => {
            assert!(detail.contains("StartRecord"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_server_without_auth_is_fine() {
    let mut c = fake_cfg(None);
    c.password = None;
    let f = FakeObs::start(c).await.unwrap();
    let client = ObsClient::connect(target(&f), quick()).await.unwrap();
    assert!(!client.server_info().authenticated);
}

#[tokio::test]
async fn a_late_response_times_out_alone_and_is_ignored_when_it_comes() {
    let f = fake().await;
    let c = ObsClient::connect(target(&f), quick()).await.unwrap();
    f.behave(|b| {
        b.delay
            .insert("GetStats".into(), Duration::from_millis(1500));
    });
    let t0 = Instant::now();
    let e = c
        .request_timeout("GetStats", None, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(e, ObsError::RequestTimeout { .. }), "{e:?}");
    assert!(t0.elapsed() < Duration::from_millis(600));
    assert_eq!(
        e.to_string(),
        format!(
            "OBS at 127.0.0.1:{} did not answer GetStats within 200ms",
            f.port()
        )
    );
    // Other requests are answered meanwhile, and after the late response arrives.
    assert!(c.record_status().await.is_ok());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!c.record_status().await.unwrap().output_active);
    assert_eq!(c.link_state(), LinkState::Connected);
}

#[tokio::test]
async fn drop_at_start_record_fails_the_start_then_reconnects() {
    let f = fake().await;
    let c = ObsClient::connect(target(&f), quick()).await.unwrap();
    let mut ev = c.events();
    f.behave(|b| b.drop_on = Some("StartRecord".into()));
    let e = c
        .start_recording("m1_pc1", IfActive::Refuse)
        .await
        .unwrap_err();
    assert!(matches!(e, ObsError::Disconnected { .. }), "{e:?}");
    f.behave(|b| b.drop_on = None);
    let active = contract::wait_event(&mut ev, Duration::from_secs(5), |e| match e {
        ObsEvent::Reconnected { record_active } => Some(*record_active),
        _ => None,
    })
    .await;
    assert_eq!(active, Some(false));
    // Usable again.
    c.start_recording("m1_pc1", IfActive::Refuse).await.unwrap();
    c.stop_recording().await.unwrap();
}

#[tokio::test]
async fn drop_right_after_start_record_is_reconciled_as_still_recording() {
    let f = fake().await;
    let c = ObsClient::connect(target(&f), quick()).await.unwrap();
    let mut ev = c.events();
    f.behave(|b| b.drop_after = Some("StartRecord".into()));
    let e = c
        .start_recording("m1_pc1", IfActive::Refuse)
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    f.behave(|b| b.drop_after = None);
    // The recording went on without us; after the reconnect the client sees it (from the
    // reconcile, or from STARTED if the reconnect beat the output).
    contract::wait_event(&mut ev, Duration::from_secs(5), |e| {
        matches!(e, ObsEvent::Reconnected { .. }).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(f.recording_active());
    assert!(c.record_status().await.unwrap().output_active);
    let stopped = c.stop_recording().await.unwrap();
    assert_eq!(stopped.confirmed_by, Confirmation::Event);
    assert!(!f.recording_active());
}

#[tokio::test]
async fn kicked_4011_never_reconnects() {
    let f = fake().await;
    let c = ObsClient::connect(target(&f), quick()).await.unwrap();
    let mut ev = c.events();
    f.kick_all();
    let e = contract::wait_event(&mut ev, Duration::from_secs(3), |e| match e {
        ObsEvent::Closed(e) => Some(e.clone()),
        _ => None,
    })
    .await;
    assert_eq!(e.close_code(), Some(4011), "{e:?}");
    assert!(e.to_string().contains("will not reconnect"), "{e}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(f.count(&Logged::Accepted), 1, "it reconnected");
    assert!(matches!(c.link_state(), LinkState::Closed(_)));
    let e = c.record_status().await.unwrap_err();
    assert_eq!(e.close_code(), Some(4011));
}

#[tokio::test]
async fn keepalive_notices_a_half_open_connection_and_reconnects() {
    let f = fake().await;
    let cfg = ObsConfig {
        keepalive_interval: Duration::from_millis(200),
        keepalive_timeout: Duration::from_millis(300),
        ..quick()
    };
    let c = ObsClient::connect(target(&f), cfg).await.unwrap();
    let mut ev = c.events();
    let t0 = Instant::now();
    f.freeze(true);
    let e = contract::wait_event(&mut ev, Duration::from_secs(3), |e| match e {
        ObsEvent::Disconnected(e) => Some(e.clone()),
        _ => None,
    })
    .await;
    assert!(e.to_string().contains("keepalive"), "{e}");
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    f.freeze(false);
    contract::wait_event(&mut ev, Duration::from_secs(5), |e| {
        matches!(e, ObsEvent::Reconnected { .. }).then_some(())
    })
    .await;
    // The keepalive runs on the new connection.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c.last_stats().is_some());
}

#[tokio::test]
async fn exit_started_ends_waits_and_a_restarted_obs_is_found_again() {
    let mut cfgf = fake_cfg(None);
    cfgf.stop_delay = Duration::from_secs(5);
    let f = FakeObs::start(cfgf).await.unwrap();
    let c = ObsClient::connect(target(&f), quick()).await.unwrap();
    let mut ev = c.events();
    c.start_recording("m1_pc1", IfActive::Refuse).await.unwrap();
    let c2 = c.clone();
    let stop = tokio::spawn(async move { c2.stop_recording().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    f.exit();
    // The stop waiting for STOPPED ends at once with a typed error (no STOPPED will come).
    let e = tokio::time::timeout(Duration::from_secs(1), stop)
        .await
        .expect("stop ended")
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, ObsError::Exiting { .. }), "{e:?}");
    contract::wait_event(&mut ev, Duration::from_secs(1), |e| {
        matches!(e, ObsEvent::Disconnected(ObsError::Exiting { .. })).then_some(())
    })
    .await;
    assert_eq!(f.count(&Logged::Closed(1001)), 1);
    f.restart().await.unwrap();
    let active = contract::wait_event(&mut ev, Duration::from_secs(5), |e| match e {
        ObsEvent::Reconnected { record_active } => Some(*record_active),
        _ => None,
    })
    .await;
    assert_eq!(active, Some(false));
    c.start_recording("m2_pc1", IfActive::Refuse).await.unwrap();
}

#[tokio::test]
async fn reconnecting_gives_up_after_the_window() {
    let f = fake().await;
    let cfg = ObsConfig {
        reconnect_window: Duration::from_millis(600),
        ..quick()
    };
    let c = ObsClient::connect(target(&f), cfg).await.unwrap();
    f.kill();
    let e = c
        .wait_closed(Duration::from_secs(3))
        .await
        .expect("gave up");
    assert!(matches!(e, ObsError::ReconnectGaveUp { .. }), "{e:?}");
    assert!(e.to_string().contains("gave up reconnecting"), "{e}");
}

#[tokio::test]
async fn never_start_record_before_the_previous_stopped() {
    let mut cfgf = fake_cfg(None);
    cfgf.stop_delay = Duration::from_millis(800);
    let f = FakeObs::start(cfgf).await.unwrap();
    let cfg = ObsConfig {
        stop_timeout: Duration::from_millis(500),
        ..quick()
    };
    let c = ObsClient::connect(target(&f), cfg).await.unwrap();
    c.start_recording("m1_pc1", IfActive::Refuse).await.unwrap();
    // STOPPED comes only after 800 ms: the stop times out at 500 ms…
    let e = c.stop_recording().await.unwrap_err();
    assert!(matches!(e, ObsError::StopTimeout { .. }), "{e:?}");
    // …and the next start waits for that STOPPED before its StartRecord.
    let s = c.start_recording("m2_pc1", IfActive::Refuse).await.unwrap();
    assert_eq!(s.confirmed_by, Confirmation::Event);
    let log = f.log();
    let stopped_at = log
        .iter()
        .find(|(_, l)| *l == Logged::RecordState(OutputState::Stopped))
        .map(|(t, _)| *t)
        .expect("STOPPED happened");
    let starts: Vec<Instant> = log
        .iter()
        .filter(|(_, l)| *l == Logged::Request("StartRecord".into()))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(starts.len(), 2, "{log:?}");
    assert!(
        starts[1] > stopped_at,
        "StartRecord went out before STOPPED: {log:?}"
    );
}

#[tokio::test]
async fn a_late_start_response_does_not_hide_the_started_event() {
    let f = fake().await;
    let c = ObsClient::connect(target(&f), quick()).await.unwrap();
    f.behave(|b| {
        b.delay.insert("StartRecord".into(), Duration::from_secs(5));
    });
    let t0 = Instant::now();
    let s = c.start_recording("m1_pc1", IfActive::Refuse).await.unwrap();
    assert_eq!(s.confirmed_by, Confirmation::Event);
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn missing_started_event_is_confirmed_by_status() {
    let f = fake().await;
    let c = ObsClient::connect(target(&f), quick()).await.unwrap();
    f.behave(|b| b.suppress_record_events = true);
    let s = c.start_recording("m1_pc1", IfActive::Refuse).await.unwrap();
    assert_eq!(s.confirmed_by, Confirmation::Status);
    assert_eq!(s.path, None);
    let st = c.stop_recording().await.unwrap();
    assert_eq!(st.confirmed_by, Confirmation::Status);
}

#[tokio::test]
async fn a_recording_that_never_starts_is_a_start_timeout() {
    let f = fake().await;
    let c = ObsClient::connect(target(&f), quick()).await.unwrap();
    f.behave(|b| b.start_fails = true);
    let t0 = Instant::now();
    let e = c
        .start_recording("m1_pc1", IfActive::Refuse)
        .await
        .unwrap_err();
    assert!(matches!(e, ObsError::StartTimeout { .. }), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(4));
    assert!(
        e.to_string()
            .contains("did not report the recording STARTED within 2s")
    );
}

#[tokio::test]
async fn bad_names_never_reach_obs() {
    let f = fake().await;
    let c = ObsClient::connect(target(&f), quick()).await.unwrap();
    for bad in ["../x", "a/b", "100%", "", "a\\b"] {
        let e = c.start_recording(bad, IfActive::Refuse).await.unwrap_err();
        assert!(matches!(e, ObsError::BadName { .. }), "{bad:?}: {e:?}");
    }
    assert_eq!(f.count(&Logged::Request("SetProfileParameter".into())), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_never_blocks_the_reader() {
    let f = fake().await;
    let c = ObsClient::connect(target(&f), quick()).await.unwrap();
    let mut idle = c.events(); // never read until the end
    f.flood(5000);
    let t0 = Instant::now();
    for _ in 0..20 {
        c.record_status().await.unwrap();
    }
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    // The idle subscriber lost the oldest events, nothing else did.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(
        idle.recv().await,
        Err(broadcast::error::RecvError::Lagged(_))
    ));
}

/// Log output captured for the secrets check.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_password_never_shows_in_logs_debug_or_errors() {
    let cap = Captured::default();
    let w = cap.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seen = tracing::subscriber::with_default(sub, || {
        rt.block_on(async {
            let f = fake().await;
            let t = target(&f);
            let c = ObsClient::connect(t.clone(), quick()).await.unwrap();
            let mut seen = format!("{t:?} {t} {c:?} {:?}", quick());
            let mut bad = t.clone();
            bad.password = Secret::new("another-secret-pw");
            let e = ObsClient::connect(bad, quick()).await.unwrap_err();
            seen.push_str(&format!("{e} {e:?}"));
            c.start_recording("m1_pc1", IfActive::Refuse).await.unwrap();
            c.stop_recording().await.unwrap();
            let fleet = Fleet::connect(vec![t], quick()).await;
            fleet.close().await;
            c.close().await;
            seen
        })
    });
    let logs = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("connected to OBS"),
        "nothing was logged: {logs}"
    );
    for s in [&seen, &logs] {
        assert!(!s.contains(PW) && !s.contains("another-secret-pw"), "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dead_or_silent_obs_does_not_delay_the_others() {
    let mut fakes = Vec::new();
    for _ in 0..6 {
        fakes.push(fake().await);
    }
    let silent = fake().await;
    silent.behave(|b| b.no_hello = true);
    let dead_port = support::free_tcp_port();
    let mut targets: Vec<ObsTarget> = fakes
        .iter()
        .enumerate()
        .map(|(i, f)| ObsTarget::new(format!("pc{i}"), "127.0.0.1", f.port(), Secret::new(PW)))
        .collect();
    targets.push(ObsTarget::new(
        "silent",
        "127.0.0.1",
        silent.port(),
        Secret::new(PW),
    ));
    targets.push(ObsTarget::new(
        "dead",
        "127.0.0.1",
        dead_port,
        Secret::new(PW),
    ));
    let cfg = ObsConfig {
        connect_timeout: Duration::from_millis(800),
        start_timeout: Duration::from_millis(800),
        request_timeout: Duration::from_millis(500),
        ..quick()
    };
    let t0 = Instant::now();
    let mut fleet = Fleet::connect(targets, cfg).await;
    let took = t0.elapsed();
    // Bounded by the silent one's own timeout, not by the sum.
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(fleet.connected().len(), 6);
    let failed: Vec<String> = fleet.failures().into_iter().map(|(l, _)| l).collect();
    assert_eq!(failed, vec!["silent".to_string(), "dead".to_string()]);

    // pc0's recording never starts (and its StartRecord is not even answered): it fails at
    // its own start_timeout; the others start promptly and together.
    fakes[0].behave(|b| {
        b.start_fails = true;
        b.delay.insert("StartRecord".into(), Duration::from_secs(3));
    });
    let mut names: Vec<(String, String)> = (0..6)
        .map(|i| (format!("pc{i}"), format!("m1_pc{i}")))
        .collect();
    names.push(("dead".into(), "m1_dead".into()));
    let t0 = Instant::now();
    let started = fleet.start_all(&names, IfActive::Refuse).await;
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    let failed: Vec<&str> = started.failed().map(|r| r.label.as_str()).collect();
    assert_eq!(failed, vec!["pc0", "dead"]);
    assert!(matches!(
        started
            .recordings
            .iter()
            .find(|r| r.label == "pc0")
            .unwrap()
            .obs_error,
        Some(ObsError::StartTimeout { .. })
    ));
    for r in started.recordings.iter().filter(|r| r.ok()) {
        assert!(
            r.started_at.unwrap() - t0 < Duration::from_millis(300),
            "{} started late",
            r.label
        );
    }
    assert!(started.skew().unwrap() < Duration::from_millis(100));
    let offsets: Vec<f64> = started
        .recordings
        .iter()
        .filter_map(|r| r.start_offset_ms)
        .collect();
    assert_eq!(offsets.len(), 5);
    assert!(offsets.contains(&0.0) && offsets.iter().all(|o| *o >= 0.0));
    let failed_rec = started.recordings[0].to_record(1, 1);
    assert_eq!(failed_rec.planned_name, "m1_pc0");
    assert!(failed_rec.error.unwrap().contains("STARTED"));
    let stopped = fleet.stop_all().await;
    assert_eq!(stopped.recordings.len(), 5);
    assert_eq!(stopped.failed().count(), 0);
    // The manifest's form: times, size, offset, no error.
    let rec = stopped.recordings[0].to_record(2, 1);
    assert_eq!((rec.player, rec.match_no), (2, 1));
    assert!(rec.started_at.is_some() && rec.stopped_at > rec.started_at);
    assert!(rec.bytes.is_some() && rec.error.is_none());

    // pc1 is slow to prepare (GetRecordStatus unanswered): the others wait for it at most
    // request_timeout (500 ms), then start.
    fakes[1].behave(|b| {
        b.delay
            .insert("GetRecordStatus".into(), Duration::from_secs(3));
    });
    let names: Vec<(String, String)> = (1..6)
        .map(|i| (format!("pc{i}"), format!("m2_pc{i}")))
        .collect();
    let t0 = Instant::now();
    let started = fleet.start_all(&names, IfActive::Refuse).await;
    let failed: Vec<&str> = started.failed().map(|r| r.label.as_str()).collect();
    assert_eq!(failed, vec!["pc1"]);
    for r in started.recordings.iter().filter(|r| r.ok()) {
        let after = r.started_at.unwrap() - t0;
        assert!(
            after < Duration::from_millis(900),
            "{} after {after:?}",
            r.label
        );
    }
    fleet.stop_all().await;
    fleet.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_command_against_fakes() {
    let dir = tempfile::tempdir().unwrap();
    let ok = fake().await;
    let busy = FakeObs::start(FakeConfig {
        host: "127.0.0.3".parse().unwrap(),
        ..fake_cfg(None)
    })
    .await
    .unwrap();
    busy.set_recording_active();
    let dead = support::free_tcp_port();
    let yaml = contract::scenario_yaml(&[
        ("pc1", "127.0.0.1", ok.port()),
        ("pc2", "127.0.0.2", dead),
        ("pc3", "127.0.0.3", busy.port()),
    ]);
    let (code, out, err) = contract::run_check(dir.path(), &yaml, PW).await;
    assert_eq!(code, 69, "{out}\n{err}");
    let pc1 = contract::row(&out, "pc1");
    assert!(
        pc1.contains(" yes ") && pc1.contains("websocket=5.1.0"),
        "{pc1}"
    );
    assert!(pc1.contains("free_disk=48.8GiB"), "{pc1}");
    let pc2 = contract::row(&out, "pc2");
    assert!(
        pc2.contains(" NO ") && pc2.contains("could not reach OBS"),
        "{pc2}"
    );
    let pc3 = contract::row(&out, "pc3");
    assert!(
        pc3.contains(" NO ") && pc3.contains("recording=ACTIVE"),
        "{pc3}"
    );
    assert!(!out.contains(PW) && !err.contains(PW));

    // Wrong password: 69 and the sentence.
    let yaml = contract::scenario_yaml(&[("pc1", "127.0.0.1", ok.port())]);
    let (code, out, _) = contract::run_check(dir.path(), &yaml, "wrong").await;
    assert_eq!(code, 69);
    assert!(
        out.contains("auth=FAILED") && out.contains("rejected the password (4009)"),
        "{out}"
    );

    // All fine: 0. No seats: a note row, 0.
    let (code, out, err) = contract::run_check(dir.path(), &yaml, PW).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = contract::run_check(dir.path(), &contract::scenario_yaml(&[]), PW).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("discovered when players join"), "{out}");
}

#[tokio::test]
async fn teardown_stops_whatever_is_still_recording() {
    let a = fake().await;
    let b = fake().await;
    b.set_recording_active(); // not started by this fleet
    let mut fleet = Fleet::connect(
        vec![target(&a), {
            let mut t = target(&b);
            t.label = "pc2".into();
            t
        }],
        quick(),
    )
    .await;
    let started = fleet
        .start_all(&[("pc1".into(), "m1_pc1".into())], IfActive::Refuse)
        .await;
    assert_eq!(started.failed().count(), 0);
    let (mut stopped, failed) = fleet.stop_leftovers().await;
    stopped.sort();
    assert_eq!(stopped, vec!["pc1".to_string(), "pc2".to_string()]);
    assert!(failed.is_empty(), "{failed:?}");
    assert!(!a.recording_active() && !b.recording_active());
    fleet.close().await;
}

/// A hostile OBS sends a 16 MiB event: refused from the frame header (the connection drops and
/// comes back), while a 200 KiB one (far above any real message) still passes.
#[tokio::test]
async fn an_oversized_frame_is_refused_before_it_is_buffered() {
    let f = fake().await;
    let c = ObsClient::connect(target(&f), quick()).await.unwrap();
    let mut ev = c.events();
    f.send_oversized(200 * 1024);
    contract::wait_event(&mut ev, Duration::from_secs(3), |e| match e {
        ObsEvent::Other { data, .. } => data["junk"].as_str().map(|s| s.len()),
        _ => None,
    })
    .await;
    let t0 = Instant::now();
    f.send_oversized(16 * 1024 * 1024);
    let e = contract::wait_event(&mut ev, Duration::from_secs(5), |e| match e {
        ObsEvent::Disconnected(e) => Some(e.clone()),
        ObsEvent::Other { .. } => panic!("a 16 MiB event was accepted"),
        _ => None,
    })
    .await;
    eprintln!("oversized frame refused after {:?}: {e}", t0.elapsed());
    assert!(e.to_string().to_lowercase().contains("too"), "{e}");
    contract::wait_event(&mut ev, Duration::from_secs(5), |e| {
        matches!(e, ObsEvent::Reconnected { .. }).then_some(())
    })
    .await;
    assert!(
        c.record_status().await.is_ok(),
        "usable again after the reconnect"
    );
}

/// An OBS that reports a path outside its record directory: kept as reported, flagged.
#[tokio::test]
async fn a_reported_path_outside_the_record_directory_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let f = FakeObs::start(fake_cfg(Some(dir.path()))).await.unwrap();
    let c = ObsClient::connect(target(&f), quick()).await.unwrap();
    let s = c.start_recording("m1_p1", IfActive::Refuse).await.unwrap();
    let rd = s.record_dir.clone().expect("GetRecordDirectory answered");
    let path = s.path.clone().unwrap();
    assert!(
        oa_run::obs::paths::flags(&path, "m1_p1", Some(&rd)).is_empty(),
        "{path} in {rd}"
    );
    c.stop_recording().await.unwrap();
    f.behave(|b| b.report_path = Some("/etc/shadow".into()));
    let s = c.start_recording("m2_p1", IfActive::Refuse).await.unwrap();
    assert_eq!(s.path.as_deref(), Some("/etc/shadow"), "kept as reported");
    assert_eq!(
        oa_run::obs::paths::flags(s.path.as_deref().unwrap(), "m2_p1", s.record_dir.as_deref()),
        vec![
            oa_run::manifest::PathFlag::NotPlannedName,
            oa_run::manifest::PathFlag::OutsideRecordDirectory
        ]
    );
    c.stop_recording().await.unwrap();
}

/// Recordings aligned to the match on a known, shifted timeline: three OBS whose files began
/// 40 ms before, at, and 20 ms before their STARTED, two counting in 10 fps frames like OBS (one
/// behind an encoder that holds 12 frames) and one in ms, one of them slow to answer. Each match edge must land within its own error bound
/// of the truth (when the fake's file began), and the bound must follow each OBS's round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_edges_are_placed_in_each_file_within_their_error_bound() {
    use oa_run::align::{apply_sample, ffmpeg_cut_line, match_spread};
    use oa_run::manifest::{MatchEdge, MatchRecord, RecordingRecord};

    let dir = tempfile::tempdir().unwrap();
    let mut fakes = Vec::new();
    // pc0's encoder holds 12 frames (1.2 s) before OBS counts them, like x264 does.
    for (lead, fps, delay) in [(40, Some(10), 12), (0, None, 0), (20, Some(10), 0)] {
        let f = FakeObs::start(FakeConfig {
            fps,
            timeline_lead_ms: lead,
            encoder_delay_frames: delay,
            ..fake_cfg(Some(dir.path()))
        })
        .await
        .unwrap();
        fakes.push(f);
    }
    // pc2 answers GetRecordStatus 120 ms late: its own round trip, not the others'.
    fakes[2].behave(|b| {
        b.delay
            .insert("GetRecordStatus".into(), Duration::from_millis(120));
    });
    let mut fleet = Fleet::new(quick());
    for (i, f) in fakes.iter().enumerate() {
        let t = ObsTarget::new(format!("pc{i}"), "127.0.0.1", f.port(), Secret::new(PW));
        fleet.insert(ObsClient::connect(t, quick()).await.unwrap());
    }
    // Started before GetRecordStatus is slowed down (start_all asks it first).
    fakes[2].behave(|b| b.delay.clear());
    let names: Vec<(String, String)> = (0..3)
        .map(|i| (format!("pc{i}"), format!("m1_pc{i}")))
        .collect();
    let started = fleet.start_all(&names, IfActive::Refuse).await;
    assert_eq!(started.failed().count(), 0);
    fakes[2].behave(|b| {
        b.delay
            .insert("GetRecordStatus".into(), Duration::from_millis(120));
    });

    tokio::time::sleep(Duration::from_millis(700)).await;
    let match_start = Instant::now();
    let start_wall = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let t = Instant::now();
    let starts = fleet
        .sample_edge(match_start, start_wall, match_start)
        .await;
    // Concurrent: 8 polls each; the slow one (8 x 120 ms) does not add to the others.
    assert!(
        t.elapsed() < Duration::from_millis(1600),
        "{:?}",
        t.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let match_end = Instant::now();
    let ends = fleet
        .sample_edge(match_end, chrono::Utc::now(), match_start)
        .await;

    let mut recs = Vec::new();
    for (i, f) in fakes.iter().enumerate() {
        let label = format!("pc{i}");
        let origin = f.timeline_origin().expect("recording");
        let s = starts
            .iter()
            .find(|(l, _)| *l == label)
            .unwrap()
            .1
            .clone()
            .unwrap();
        let e = ends
            .iter()
            .find(|(l, _)| *l == label)
            .unwrap()
            .1
            .clone()
            .unwrap();
        for (edge, at, smp) in [
            (MatchEdge::Start, match_start, s),
            (MatchEdge::End, match_end, e),
        ] {
            let truth = at.duration_since(origin).as_secs_f64() * 1000.0;
            assert!(
                (smp.offset_ms - truth).abs() <= smp.error_ms + 1.0,
                "{label} {edge:?}: offset {:.1} ms, truth {truth:.1} ms, bound {:.1} ms",
                smp.offset_ms,
                smp.error_ms
            );
            assert!(smp.output_active);
            // The bound is half this OBS's own round trip plus its frame (if it counts frames).
            let frame = if i == 1 { None } else { Some(100.0) };
            assert_eq!(smp.frame_ms, frame, "{label}");
            let lag_err = if frame.is_some() {
                oa_run::align::LAG_ERROR_MS
            } else {
                0.0
            };
            assert!(
                (smp.error_ms - (smp.rtt_ms / 2.0 + frame.unwrap_or(0.0) + lag_err)).abs() <= 0.01
            );
        }
        assert!(
            s.rtt_ms >= if i == 2 { 120.0 } else { 0.0 },
            "{label}: {s:?}"
        );
        if i < 2 {
            assert!(s.rtt_ms < 100.0, "{label}: {s:?}");
        }
        assert_eq!(s.match_elapsed_ms, 0.0);
        // The held frames, half a frame (the count's phase, averaged), and where the file began
        // against STARTED − 30 ms (lead 40 / 20).
        match [Some(1200.0 + 50.0 - 10.0), None, Some(50.0 + 10.0)][i] {
            Some(want) => {
                let got = s.encoder_lag_ms.expect("a lag");
                assert!(
                    (got - want).abs() <= 25.0,
                    "{label}: lag {got} ms, want {want}"
                );
            }
            None => assert_eq!(s.encoder_lag_ms, None, "{label}"),
        }
        assert!(
            (e.match_elapsed_ms - match_end.duration_since(match_start).as_secs_f64() * 1000.0)
                .abs()
                < 1e-6
        );
        let mut rec = RecordingRecord::planned(i as u32 + 1, 1, format!("m1_pc{i}"));
        rec.path = Some(format!("/rec/m1_pc{i}.mkv"));
        assert!(apply_sample(&mut rec, MatchEdge::Start, s).is_empty());
        assert!(
            apply_sample(&mut rec, MatchEdge::End, e).is_empty(),
            "{rec:?}"
        );
        assert!(ffmpeg_cut_line(&rec).unwrap().starts_with("ffmpeg -ss "));
        recs.push(rec);
    }
    // The files' true starts differ by the leads and the STARTED times; the spread says so.
    let mut m: MatchRecord =
        serde_json::from_value(serde_json::json!({"number": 1, "repeat": 1, "latency": []}))
            .unwrap();
    match_spread(&mut m, &recs);
    let origins: Vec<Instant> = fakes.iter().map(|f| f.timeline_origin().unwrap()).collect();
    let true_spread = origins
        .iter()
        .max()
        .unwrap()
        .duration_since(*origins.iter().min().unwrap());
    let spread = m.alignment_spread_ms.unwrap() as f64;
    assert!(
        (spread - true_spread.as_secs_f64() * 1000.0).abs()
            <= 2.0 * m.alignment_error_ms.unwrap() + 2.0,
        "spread {spread} ms, truth {true_spread:?}"
    );

    // A file that began after the match started cannot be aligned, and says so.
    // (pc1's file began at its STARTED, well after the fleet's epoch: connect, prepare, 20 ms.)
    let late_ref = fleet.epoch();
    let late = fleet
        .sample_edge(late_ref, chrono::Utc::now(), late_ref)
        .await;
    let pc1 = late
        .iter()
        .find(|(l, _)| l == "pc1")
        .unwrap()
        .1
        .clone()
        .unwrap();
    let mut rec = RecordingRecord::planned(1, 1, "x");
    let w = apply_sample(&mut rec, MatchEdge::Start, pc1);
    assert!(w[0].contains("after the match began"), "{w:?}");
    assert_eq!(ffmpeg_cut_line(&rec), None);

    // A recording whose output stopped before the match ended.
    fakes[1].drop_output();
    let end = Instant::now();
    let ends = fleet
        .sample_edge(end, chrono::Utc::now(), match_start)
        .await;
    let e = ends
        .iter()
        .find(|(l, _)| l == "pc1")
        .unwrap()
        .1
        .clone()
        .unwrap();
    assert!(!e.output_active);
    let mut rec = recs[1].clone();
    rec.match_end_offset_ms = None;
    let w = apply_sample(&mut rec, MatchEdge::End, e);
    assert!(w[0].contains("stopped before the match ended"), "{w:?}");
    assert_eq!(rec.match_end_offset_ms, None);
    assert_eq!(ffmpeg_cut_line(&rec), None);

    let _ = fleet.stop_all().await;
    for (i, f) in fakes.iter().enumerate() {
        assert!(f.timeline_origin().is_none(), "pc{i}");
    }
    fleet.close().await;
}
