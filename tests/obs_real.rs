//! Against real OBS Studio 29.0.2 / obs-websocket 5.1.0, headless (see support/obs.rs).
//! Each OBS start costs ~2–10 s, so one instance serves several assertions, and at most three
//! run at once.

#[path = "support/obs_contract.rs"]
mod contract;
#[path = "support/obs.rs"]
mod obs_harness;
mod support;

use std::time::{Duration, Instant};

use contract::Peer;
use oa_run::obs::{
    Confirmation, Fleet, IfActive, LinkState, ObsClient, ObsConfig, ObsError, ObsEvent,
};
use obs_harness::RealObs;

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(std::env::var("OA_RUN_LOG").unwrap_or_else(|_| "oa_run=debug".into()))
        .try_init();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn peer(o: &RealObs) -> Peer {
    Peer {
        kind: "real",
        port: o.port,
        password: o.password.clone(),
        rec_dir: o.rec_dir.clone(),
    }
}

fn start_two() -> (RealObs, RealObs) {
    std::thread::scope(|s| {
        let a = s.spawn(RealObs::start);
        let b = s.spawn(RealObs::start);
        (
            a.join().unwrap().unwrap_or_else(|e| panic!("OBS A: {e}")),
            b.join().unwrap().unwrap_or_else(|e| panic!("OBS B: {e}")),
        )
    })
}

/// The contract suite, `oa-run check`, and a fleet of two, on two real OBS.
#[test]
fn real_obs_contract_check_and_fleet() {
    if let Some(why) = obs_harness::missing() {
        return support::skip(&why);
    }
    init_logs();
    let (a, b) = start_two();
    let rt = runtime();
    rt.block_on(async {
        let pa = peer(&a);
        contract::run_all(&pa).await;

        // oa-run check: one reachable seat, one dead one → exit 69, a row each.
        let dead = support::free_tcp_port();
        let yaml =
            contract::scenario_yaml(&[("pc1", "127.0.0.1", a.port), ("pc2", "127.0.0.2", dead)]);
        let (code, out, err) = contract::run_check(a.root.path(), &yaml, &a.password).await;
        assert_eq!(code, 69, "{out}\n{err}");
        let pc1 = contract::row(&out, "pc1");
        for want in [
            " yes ",
            "obs=29.0.2",
            "websocket=5.1.0",
            "auth=ok",
            "recording=no",
            "free_disk=",
        ] {
            assert!(pc1.contains(want), "{want} missing in {pc1}");
        }
        let pc2 = contract::row(&out, "pc2");
        assert!(
            pc2.contains(" NO ") && pc2.contains(&format!("127.0.0.2:{dead}")),
            "{pc2}"
        );
        assert!(!out.contains(&a.password) && !err.contains(&a.password));
        // Both reachable → exit 0.
        let yaml =
            contract::scenario_yaml(&[("pc1", "127.0.0.1", a.port), ("pc2", "127.0.0.2", a.port)]);
        let (code, out, err) = contract::run_check(a.root.path(), &yaml, &a.password).await;
        assert_eq!(code, 0, "{out}\n{err}");

        // A fleet of two real OBS: started together, stopped together, files final.
        let fleet_cfg = contract::cfg();
        let mut fleet = Fleet::connect(
            vec![peer(&a).target("pc1"), peer(&b).target("pc2")],
            fleet_cfg,
        )
        .await;
        assert!(fleet.failures().is_empty(), "{:?}", fleet.failures());
        let names = vec![
            ("pc1".to_string(), "fleet_m1_pc1_100ms".to_string()),
            ("pc2".to_string(), "fleet_m1_pc2_200ms".to_string()),
        ];
        let started = fleet.start_all(&names, IfActive::Refuse).await;
        assert_eq!(started.failed().count(), 0, "{:?}", started.recordings);
        let skew = started.skew().expect("two STARTED events");
        eprintln!(
            "real OBS x2: start skew {:.1} ms, send spread {:.2} ms",
            started.skew_ms.unwrap(),
            started.send_spread_ms.unwrap_or(0.0)
        );
        assert!(skew < Duration::from_secs(1), "start skew {skew:?}");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let stopped = fleet.stop_all().await;
        assert_eq!(stopped.failed().count(), 0, "{:?}", stopped.recordings);
        for (r, dir) in stopped.recordings.iter().zip([&a.rec_dir, &b.rec_dir]) {
            let want = dir.join(format!("{}.mkv", r.name));
            assert_eq!(r.path.as_deref(), Some(want.to_str().unwrap()));
            assert!(std::fs::metadata(&want).unwrap().len() > 0);
            assert!(r.duration_ms.is_some() && r.bytes.is_some(), "{r:?}");
            assert!(r.stopped_mono_ms.unwrap() > r.started_mono_ms.unwrap());
            assert_eq!(r.start_confirmed_by, Some(Confirmation::Event));
            assert_eq!(r.stop_confirmed_by, Some(Confirmation::Event));
            // The manifest form: RFC 3339 wall-clock times, no secrets.
            let j = serde_json::to_string(r).unwrap();
            assert!(j.contains("\"started_wall\":\"20"), "{j}");
            assert!(!j.contains(&a.password) && !j.contains(&b.password));
        }
        fleet.close().await;
    });
}

/// SIGTERM mid-recording → typed drop and reconnect when OBS is back; SIGINT → ExitStarted.
#[test]
fn real_obs_killed_restarted_and_exiting() {
    if let Some(why) = obs_harness::missing() {
        return support::skip(&why);
    }
    init_logs();
    let mut o = RealObs::start().unwrap_or_else(|e| panic!("OBS: {e}"));
    let rt = runtime();
    let p = peer(&o);
    let cfg = ObsConfig {
        keepalive_interval: Duration::from_secs(1),
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        reconnect_window: Duration::from_secs(90),
        ..contract::cfg()
    };
    let c = rt
        .block_on(ObsClient::connect(p.target("pc1"), cfg))
        .unwrap();
    let mut events = c.events();
    let first = rt
        .block_on(c.start_recording("killed_m1_pc1", IfActive::Refuse))
        .unwrap();
    let first_path = first.path.clone().unwrap();
    // Long enough for the muxer to have created the file (~1.8 s after STARTED).
    std::thread::sleep(Duration::from_millis(2500));

    // SIGTERM: no close frame; the client reports a drop (1006) and keeps trying.
    o.sigterm().unwrap();
    let err = rt.block_on(contract::wait_event(
        &mut events,
        Duration::from_secs(10),
        |e| match e {
            ObsEvent::Disconnected(err) => Some(err.clone()),
            _ => None,
        },
    ));
    assert!(matches!(err, ObsError::Disconnected { .. }), "{err:?}");
    assert_eq!(err.close_code(), Some(1006));
    assert!(err.to_string().contains(&p.addr()), "{err}");
    assert!(matches!(c.link_state(), LinkState::Reconnecting { .. }));
    // Meanwhile a stop fails with a typed error within its timeout, not a hang.
    let t0 = Instant::now();
    let e = rt.block_on(c.stop_recording()).unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(7));

    // OBS comes back on the same port: reconnected, and reconciled (the recording died).
    o.restart().unwrap();
    let active = rt.block_on(contract::wait_event(
        &mut events,
        Duration::from_secs(60),
        |e| match e {
            ObsEvent::Reconnected { record_active } => Some(*record_active),
            _ => None,
        },
    ));
    assert_eq!(active, Some(false));
    assert_eq!(c.link_state(), LinkState::Connected);
    // Whether the killed recording left a file depends on how far x264/the muxer got.
    eprintln!(
        "after SIGTERM: {first_path} exists: {}",
        std::path::Path::new(&first_path).exists()
    );

    // Recording works on the new connection; then SIGINT while recording.
    let s = rt
        .block_on(c.start_recording("exiting_m2_pc1", IfActive::Refuse))
        .unwrap();
    assert_eq!(s.confirmed_by, Confirmation::Event);
    let sig = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        let r = o.sigint();
        (o, r)
    });
    rt.block_on(contract::wait_event(
        &mut events,
        Duration::from_secs(20),
        |e| matches!(e, ObsEvent::ExitStarted).then_some(()),
    ));
    let err = rt.block_on(contract::wait_event(
        &mut events,
        Duration::from_secs(20),
        |e| match e {
            ObsEvent::Disconnected(err) => Some(err.clone()),
            _ => None,
        },
    ));
    assert!(matches!(err, ObsError::Exiting { .. }), "{err:?}");
    assert!(err.to_string().contains("shutting down"), "{err}");
    let (o, r) = sig.join().unwrap();
    r.unwrap();
    // No STOPPED comes for that recording; stopping it is a typed error.
    assert!(rt.block_on(c.stop_recording()).is_err());
    rt.block_on(c.close());
    drop(o);
}
