//! Fleet benchmark: N fake obs-websocket servers on loopback (N = 1, 8, 64).
//!
//! - connect: time for `Fleet::connect` to connect + identify all N (TCP, Hello, Identify with
//!   auth, GetVersion, GetRecordStatus).
//! - skew: spread of the STARTED receipt times across all N in one `Fleet::start_all` (what
//!   the manifest reports).
//! - send: spread of the moments the N StartRecords were handed to the connections.
//! - fake: spread of the moments the fakes emitted STARTED (the fakes' own serial work: they
//!   play N hosts on one runtime).
//! - added: spread of (receipt − emission) per OBS, i.e. what oa-run's reading adds.
//!
//! `cargo bench --bench obs_fleet` runs the full set; without `--bench` (as under
//! `cargo test --benches`) it runs one quick round as a smoke test. The fakes run on their own
//! runtime (1 thread), the clients on another (2 threads); on a 2-core machine they compete.

use std::time::{Duration, Instant};

use oa_run::obs::fake::{FakeConfig, FakeObs, Logged};
use oa_run::obs::{Fleet, IfActive, ObsConfig, ObsTarget, OutputState};
use oa_run::scenario::Secret;

const PW: &str = "bench-pw";

#[derive(Default)]
struct Samples {
    connect: Vec<f64>,
    skew: Vec<f64>,
    send: Vec<f64>,
    fake: Vec<f64>,
    added: Vec<f64>,
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}
fn med(v: &[f64]) -> f64 {
    sorted(v)[v.len() / 2]
}
fn max(v: &[f64]) -> f64 {
    *sorted(v).last().unwrap()
}
fn spread(v: &[f64]) -> f64 {
    let v = sorted(v);
    v.last().unwrap_or(&0.0) - v.first().unwrap_or(&0.0)
}

fn last_started(f: &FakeObs) -> Instant {
    f.log()
        .iter()
        .rev()
        .find(|(_, l)| *l == Logged::RecordState(OutputState::Started))
        .map(|(t, _)| *t)
        .expect("the fake emitted STARTED")
}

async fn round(fakes: &[FakeObs], cfg: &ObsConfig, s: &mut Samples) {
    let targets: Vec<ObsTarget> = fakes
        .iter()
        .enumerate()
        .map(|(i, f)| ObsTarget::new(format!("pc{i}"), "127.0.0.1", f.port(), Secret::new(PW)))
        .collect();
    let t0 = Instant::now();
    let mut fleet = Fleet::connect(targets, cfg.clone()).await;
    s.connect.push(t0.elapsed().as_secs_f64() * 1000.0);
    assert!(fleet.failures().is_empty(), "{:?}", fleet.failures());
    let names: Vec<(String, String)> = (0..fakes.len())
        .map(|i| (format!("pc{i}"), format!("bench_pc{i}")))
        .collect();
    let started = fleet.start_all(&names, IfActive::Refuse).await;
    assert_eq!(started.failed().count(), 0);
    s.skew.push(started.skew_ms.unwrap_or(0.0));
    s.send.push(started.send_spread_ms.unwrap_or(0.0));
    // The recordings come back in the order of `names`, i.e. of `fakes`.
    let epoch = fleet.epoch();
    let emitted: Vec<f64> = fakes
        .iter()
        .map(|f| {
            last_started(f)
                .saturating_duration_since(epoch)
                .as_secs_f64()
                * 1000.0
        })
        .collect();
    let delivery: Vec<f64> = started
        .recordings
        .iter()
        .zip(&emitted)
        .map(|(r, e)| r.started_mono_ms.unwrap() - e)
        .collect();
    s.fake.push(spread(&emitted));
    s.added.push(spread(&delivery));
    let stopped = fleet.stop_all().await;
    assert_eq!(stopped.failed().count(), 0);
    fleet.close().await;
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = runtime(2);
    let fake_rt = runtime(1);
    let cfg = ObsConfig {
        connect_timeout: Duration::from_secs(5),
        retries: 0,
        start_timeout: Duration::from_secs(5),
        stop_timeout: Duration::from_secs(5),
        ..ObsConfig::default()
    };
    let sizes: &[usize] = if full { &[1, 8, 64] } else { &[1, 8] };
    let rounds = if full { 20 } else { 1 };
    println!(
        "{:>3} {:>6} | {:>17} | {:>17} | {:>8} {:>8} {:>8}",
        "N", "rounds", "connect ms med/max", "skew ms med/max", "send", "fake", "added"
    );
    for &n in sizes {
        let fakes: Vec<FakeObs> = (0..n)
            .map(|_| {
                fake_rt
                    .block_on(FakeObs::start(FakeConfig {
                        password: Some(PW.into()),
                        // No artificial delay: the skew is the pipeline's own.
                        start_delay: Duration::ZERO,
                        stop_delay: Duration::ZERO,
                        ..FakeConfig::default()
                    }))
                    .unwrap()
            })
            .collect();
        let mut s = Samples::default();
        rt.block_on(async {
            // One warm-up round (first connections, allocator).
            round(&fakes, &cfg, &mut Samples::default()).await;
            for _ in 0..rounds {
                round(&fakes, &cfg, &mut s).await;
            }
        });
        println!(
            "{n:>3} {rounds:>6} | {:>17} | {:>17} | {:>8.2} {:>8.2} {:>8.2}",
            format!("{:.1} / {:.1}", med(&s.connect), max(&s.connect)),
            format!("{:.2} / {:.2}", med(&s.skew), max(&s.skew)),
            med(&s.send),
            med(&s.fake),
            med(&s.added),
        );
        drop(fakes);
    }
}
