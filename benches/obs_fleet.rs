//! Fleet benchmark: N fake obs-websocket servers on loopback (N = 1, 8, 64). Measures the time
//! to connect + identify all of them (Fleet::connect: TCP, Hello, Identify with auth,
//! GetVersion, GetRecordStatus) and the start skew (spread of RecordStateChanged STARTED
//! receipt times across all OBS in one Fleet::start_all).
//!
//! `cargo bench --bench obs_fleet` runs the full set; without `--bench` (as under
//! `cargo test --benches`) it runs one quick round as a smoke test.
//! The fakes run on their own runtime thread (like separate hosts), the clients on a 2-thread
//! runtime; on a 2-core machine both compete for the same cores, so the figures include the
//! fakes' own work.

use std::time::{Duration, Instant};

use oa_run::obs::fake::{FakeConfig, FakeObs, Logged};
use oa_run::obs::{Fleet, IfActive, ObsConfig, ObsTarget, OutputState};
use oa_run::scenario::Secret;

const PW: &str = "bench-pw";

fn quantiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let med = v[v.len() / 2];
    (v[0], med, v[v.len() - 1])
}

/// Spread of the moments the fakes themselves emitted their latest STARTED.
fn fake_emit_spread(fakes: &[FakeObs]) -> f64 {
    let t: Vec<Instant> = fakes
        .iter()
        .filter_map(|f| {
            f.log()
                .iter()
                .rev()
                .find(|(_, l)| *l == Logged::RecordState(OutputState::Started))
                .map(|(t, _)| *t)
        })
        .collect();
    match (t.iter().min(), t.iter().max()) {
        (Some(a), Some(b)) => (*b - *a).as_secs_f64() * 1000.0,
        _ => 0.0,
    }
}

async fn round(fakes: &[FakeObs], cfg: &ObsConfig) -> (f64, f64, f64, f64) {
    let targets: Vec<ObsTarget> = fakes
        .iter()
        .enumerate()
        .map(|(i, f)| ObsTarget::new(format!("pc{i}"), "127.0.0.1", f.port(), Secret::new(PW)))
        .collect();
    let t0 = Instant::now();
    let mut fleet = Fleet::connect(targets, cfg.clone()).await;
    let connect = t0.elapsed();
    assert!(fleet.failures().is_empty(), "{:?}", fleet.failures());
    let names: Vec<(String, String)> = (0..fakes.len())
        .map(|i| (format!("pc{i}"), format!("bench_pc{i}")))
        .collect();
    let started = fleet.start_all(&names, IfActive::Refuse).await;
    assert_eq!(started.failed().count(), 0);
    let emitted = fake_emit_spread(fakes);
    let stopped = fleet.stop_all().await;
    assert_eq!(stopped.failed().count(), 0);
    fleet.close().await;
    (
        connect.as_secs_f64() * 1000.0,
        started.skew_ms.unwrap_or(0.0),
        started.send_spread_ms.unwrap_or(0.0),
        emitted,
    )
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fake_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cfg = ObsConfig {
        connect_timeout: Duration::from_secs(5),
        retries: 0,
        start_timeout: Duration::from_secs(5),
        stop_timeout: Duration::from_secs(5),
        ..ObsConfig::default()
    };
    let sizes: &[usize] = if full { &[1, 8, 64] } else { &[1, 8] };
    let rounds = if full { 10 } else { 1 };
    println!(
        "{:>3}  {:>6}  {:>28}  {:>28}  {:>10}",
        "N",
        "rounds",
        "connect+identify ms min/med/max",
        "start skew ms min/med/max",
        "send ms med"
    );
    for &n in sizes {
        let fakes: Vec<FakeObs> = (0..n)
            .map(|_| {
                fake_rt
                    .block_on(FakeObs::start(FakeConfig {
                        password: Some(PW.into()),
                        // No artificial delay: the skew is oa-run's own (plus the fakes').
                        start_delay: Duration::ZERO,
                        stop_delay: Duration::ZERO,
                        ..FakeConfig::default()
                    }))
                    .unwrap()
            })
            .collect();
        rt.block_on(async {
            // One warm-up round (first connections, allocator).
            round(&fakes, &cfg).await;
            let mut c = Vec::new();
            let mut s = Vec::new();
            let mut sp = Vec::new();
            let mut em = Vec::new();
            for _ in 0..rounds {
                let (a, b, d, e) = round(&fakes, &cfg).await;
                c.push(a);
                s.push(b);
                sp.push(d);
                em.push(e);
            }
            let (c0, c1, c2) = quantiles(c);
            let (s0, s1, s2) = quantiles(s);
            let (_, sp1, _) = quantiles(sp);
            let (_, em1, _) = quantiles(em);
            println!(
                "{n:>3}  {rounds:>6}  {:>28}  {:>28}  {sp1:>10.2}  {em1:>10.2}",
                format!("{c0:.1} / {c1:.1} / {c2:.1}"),
                format!("{s0:.2} / {s1:.2} / {s2:.2}"),
            );
        });
        drop(fakes);
    }
}
