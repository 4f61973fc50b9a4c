//! The live feed's contract, against the real live server fed by a real hub: welcome first,
//! then a snapshot, events in order, `since=` replay, heartbeats, a slow client dropped without
//! slowing the study, and a normal close after the run's last event. Also the HTTP side:
//! token checks, `/api/state`, `/healthz`, `/api/abort`.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use oa_run::live::FeedMessage;
use oa_run::manifest::RunStatus;
use oa_run::run::events::RunEvent;
use oa_run::run::signals::Shutdown;
use support::live::{http, hub, info, serve, study_start};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const HOSTILE: &str = "<img src=x onerror=alert(1)>";

async fn connect(addr: std::net::SocketAddr, query: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/feed{query}"))
        .await
        .unwrap();
    ws
}

enum Got {
    Msg(FeedMessage),
    Closed(Option<CloseCode>),
}

async fn next(ws: &mut Ws) -> Got {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a feed message within 10 s");
        match m {
            Some(Ok(Message::Text(t))) => {
                return Got::Msg(serde_json::from_str(&t).expect("a feed message"));
            }
            Some(Ok(Message::Close(f))) => return Got::Closed(f.map(|f| f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Got::Closed(None),
        }
    }
}

async fn msg(ws: &mut Ws) -> FeedMessage {
    match next(ws).await {
        Got::Msg(m) => m,
        Got::Closed(c) => panic!("closed ({c:?}) where a message was expected"),
    }
}

fn event_seq(m: &FeedMessage) -> u64 {
    match m {
        FeedMessage::Event(env) => env.seq,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_then_snapshot_then_events_in_order() {
    let mut h = hub();
    let (live, addr) = serve(&mut h, None, Duration::from_secs(5), Shutdown::manual()).await;
    for e in study_start(HOSTILE) {
        h.emit(e);
    }
    let before = h.handle().read().state.live.seq;
    let run_id = h.handle().read().state.manifest.run_id.to_string();

    let mut ws = connect(addr, "").await;
    match msg(&mut ws).await {
        FeedMessage::Welcome {
            version, run_id: r, ..
        } => {
            assert_eq!(version, 1);
            assert_eq!(r, run_id);
        }
        other => panic!("the first message must be welcome, got {other:?}"),
    }
    match msg(&mut ws).await {
        FeedMessage::Snapshot { seq, state } => {
            assert_eq!(seq, before);
            assert_eq!(state.live.seq, before);
            let names: Vec<&str> = state.live.players.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(
                names,
                vec!["Alice", HOSTILE],
                "names travel unchanged, as data"
            );
            assert!(state.live.current_match.unwrap().started_at.is_some());
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
    for i in 0..50 {
        h.emit(info(i));
    }
    for want in before + 1..=before + 50 {
        assert_eq!(event_seq(&msg(&mut ws).await), want);
    }
    h.emit(RunEvent::RunFinished {
        status: RunStatus::Completed,
    });
    let last = msg(&mut ws).await;
    assert!(
        matches!(&last, FeedMessage::Event(e) if matches!(e.event, RunEvent::RunFinished { .. })),
        "{last:?}"
    );
    match next(&mut ws).await {
        Got::Closed(code) => assert_eq!(code, Some(CloseCode::Normal)),
        Got::Msg(m) => panic!("nothing follows run_finished but the close, got {m:?}"),
    }

    // A client that comes after the end gets the final state and a normal close.
    let mut late = connect(addr, "").await;
    assert!(matches!(msg(&mut late).await, FeedMessage::Welcome { .. }));
    match msg(&mut late).await {
        FeedMessage::Snapshot { state, .. } => assert!(state.live.finished),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        next(&mut late).await,
        Got::Closed(Some(CloseCode::Normal))
    ));
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_replays_from_the_ring_or_sends_a_fresh_snapshot() {
    let mut h = hub();
    let (live, addr) = serve(&mut h, None, Duration::from_secs(5), Shutdown::manual()).await;
    for i in 0..10 {
        h.emit(info(i));
    }
    // Missed events 6..=10 are still in the ring: they come, without a snapshot.
    let mut ws = connect(addr, "?since=5").await;
    assert!(matches!(msg(&mut ws).await, FeedMessage::Welcome { .. }));
    for want in 6..=10 {
        assert_eq!(event_seq(&msg(&mut ws).await), want);
    }
    h.emit(info(11));
    assert_eq!(
        event_seq(&msg(&mut ws).await),
        11,
        "then live events, gap-free"
    );

    // A seq the server never sent: a fresh snapshot.
    let mut future = connect(addr, "?since=999").await;
    assert!(matches!(
        msg(&mut future).await,
        FeedMessage::Welcome { .. }
    ));
    assert!(matches!(
        msg(&mut future).await,
        FeedMessage::Snapshot { seq: 11, .. }
    ));

    // Events 1..=N fell out of the ring: a fresh snapshot, then live events.
    for i in 0..oa_run::run::hub::RING as u64 {
        h.emit(info(i));
    }
    let last = h.handle().read().state.live.seq;
    let mut old = connect(addr, "?since=3").await;
    assert!(matches!(msg(&mut old).await, FeedMessage::Welcome { .. }));
    match msg(&mut old).await {
        FeedMessage::Snapshot { seq, .. } => assert_eq!(seq, last),
        other => panic!("expected a snapshot, got {other:?}"),
    }
    h.emit(info(0));
    assert_eq!(event_seq(&msg(&mut old).await), last + 1);
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_every_five_seconds_with_the_last_seq() {
    let mut h = hub();
    let (live, addr) = serve(&mut h, None, oa_run::live::HEARTBEAT, Shutdown::manual()).await;
    h.emit(info(1));
    let mut ws = connect(addr, "").await;
    let t0 = Instant::now();
    assert!(matches!(msg(&mut ws).await, FeedMessage::Welcome { .. }));
    assert!(matches!(
        msg(&mut ws).await,
        FeedMessage::Snapshot { seq: 1, .. }
    ));
    h.emit(info(2));
    assert_eq!(event_seq(&msg(&mut ws).await), 2);
    match msg(&mut ws).await {
        FeedMessage::Heartbeat { seq, .. } => {
            let after = t0.elapsed();
            assert_eq!(seq, 2, "the heartbeat names the last event sent");
            assert!(
                after >= Duration::from_millis(4500) && after < Duration::from_millis(7000),
                "heartbeat after {after:?}"
            );
        }
        other => panic!("expected a heartbeat, got {other:?}"),
    }
    live.stop().await;
}

/// A client whose socket takes nothing: a small receive buffer, never read.
async fn stalled_client(addr: std::net::SocketAddr) -> Ws {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        format!("ws://{addr}/feed"),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_dropped_and_never_slows_the_study() {
    let mut h = hub();
    let (live, addr) = serve(&mut h, None, Duration::from_secs(5), Shutdown::manual()).await;
    let mut slow = stalled_client(addr).await;
    let fast = connect(addr, "").await;

    // The fast client reads everything, in order, until the normal close.
    let reader = tokio::spawn(async move {
        let mut ws = fast;
        let mut seqs = Vec::new();
        loop {
            match next(&mut ws).await {
                Got::Msg(FeedMessage::Event(e)) => seqs.push(e.seq),
                Got::Msg(_) => {}
                Got::Closed(code) => return (seqs, code),
            }
        }
    });

    // 4000 events of 2 KiB each (8 MiB), in paced batches as a busy run would emit them.
    const N: u64 = 4000;
    let payload = "x".repeat(2048);
    let (h, slowest) = tokio::task::spawn_blocking(move || {
        let mut slowest = Duration::ZERO;
        for i in 0..N {
            let t = Instant::now();
            h.emit(RunEvent::Info {
                message: format!("{i} {payload}"),
            });
            slowest = slowest.max(t.elapsed());
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(15));
            }
        }
        h.emit(RunEvent::RunFinished {
            status: RunStatus::Completed,
        });
        (h, slowest)
    })
    .await
    .unwrap();
    assert!(
        slowest < Duration::from_millis(50),
        "emitting one event took {slowest:?}: the hub must never wait for a client"
    );

    let (seqs, code) = reader.await.unwrap();
    assert_eq!(
        seqs,
        (1..=N + 1).collect::<Vec<_>>(),
        "the fast client got every event in order"
    );
    assert_eq!(code, Some(CloseCode::Normal));

    // The stalled client was dropped: reading now, its stream ends before the last event.
    let mut last_seen = 0;
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match next(&mut slow).await {
                Got::Msg(FeedMessage::Event(e)) => last_seen = e.seq,
                Got::Msg(_) => {}
                Got::Closed(code) => return code,
            }
        }
    })
    .await
    .expect("the slow client's stream ends");
    assert!(
        last_seen < N + 1,
        "the slow client was dropped (it saw up to {last_seen}), not waited for"
    );
    assert!(
        matches!(ended, None | Some(CloseCode::Again)),
        "dropped with 1013 or a cut connection, got {ended:?}"
    );
    drop(h);
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_state_health_and_abort() {
    let mut h = hub();
    let shutdown = Shutdown::manual();
    let (live, addr) = serve(
        &mut h,
        Some("tok3n"),
        Duration::from_secs(5),
        shutdown.clone(),
    )
    .await;
    for e in study_start(HOSTILE) {
        h.emit(e);
    }
    // Without the token: no data.
    for path in ["/api/state", "/metrics", "/feed"] {
        let (code, head, _) = http(addr, "GET", path, &[]).await;
        assert_eq!(code, 401, "{path}");
        assert!(head.contains("www-authenticate: Bearer"), "{head}");
    }
    assert!(
        tokio_tungstenite::connect_async(format!("ws://{addr}/feed?token=wrong"))
            .await
            .is_err()
    );
    // The page holds no data and is served to anyone; health is for probes.
    assert_eq!(http(addr, "GET", "/", &[]).await.0, 200);
    let (code, _, body) = http(addr, "GET", "/healthz", &[]).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"],
        "ok"
    );

    let (code, _, body) = http(
        addr,
        "GET",
        "/api/state",
        &[("Authorization", "Bearer tok3n")],
    )
    .await;
    assert_eq!(code, 200);
    match serde_json::from_str::<FeedMessage>(&body).unwrap() {
        FeedMessage::Snapshot { seq, state } => {
            assert_eq!(seq, 8);
            assert_eq!(state.live.players[1].name, HOSTILE);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        http(addr, "GET", "/api/state?token=tok3n", &[]).await.0,
        200
    );
    let mut ws = connect(addr, "?token=tok3n").await;
    assert!(matches!(msg(&mut ws).await, FeedMessage::Welcome { .. }));

    // Abort: the header only, the right token only; then the Ctrl-C path is taken.
    assert_eq!(
        http(addr, "POST", "/api/abort?token=tok3n", &[]).await.0,
        401
    );
    assert_eq!(
        http(
            addr,
            "POST",
            "/api/abort",
            &[("Authorization", "Bearer tok3")]
        )
        .await
        .0,
        401
    );
    assert!(!shutdown.is_requested());
    let (code, _, _) = http(
        addr,
        "POST",
        "/api/abort",
        &[("Authorization", "Bearer tok3n")],
    )
    .await;
    assert_eq!(code, 202);
    assert_eq!(
        shutdown.signal(),
        Some(oa_run::run::signals::Signal::Interrupt)
    );
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_is_off_without_a_token_and_health_follows_the_watchdog() {
    let mut h = hub();
    let shutdown = Shutdown::manual();
    let mut live = oa_run::live::LiveServer::bind(oa_run::live::LiveConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: None,
        heartbeat: Duration::from_secs(5),
        stall: Duration::from_millis(400),
    })
    .await
    .unwrap();
    h.add_sink(live.start(&h.handle(), shutdown.clone()));
    let addr = live.local_addr();

    assert_eq!(http(addr, "POST", "/api/abort", &[]).await.0, 403);
    assert!(!shutdown.is_requested(), "loopback alone never aborts");
    assert_eq!(
        http(addr, "GET", "/api/state", &[]).await.0,
        200,
        "loopback, no token: open"
    );

    h.tick();
    assert_eq!(http(addr, "GET", "/healthz", &[]).await.0, 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (code, _, body) = http(addr, "GET", "/healthz", &[]).await;
    assert_eq!(code, 503, "no tick for longer than the stall limit: {body}");
    h.tick();
    assert_eq!(http(addr, "GET", "/healthz", &[]).await.0, 200);
    live.stop().await;
}
