//! The live feed under load: 100 WebSocket clients on the real live server while the study
//! (this thread) emits bursts of events into a real hub. Reports what the study pays (CPU of
//! `emit` on its own thread, CPU of the live server's threads), the fan-out latency from emit
//! to each client's receipt (p50/p99/max; goal p99 < 5 ms), and resident memory across bursts
//! with some clients that never read (it must stay bounded).
//!
//! `cargo bench --bench live_feed` (options: `-- CLIENTS STALLED BURSTS BURST_SIZE`).

#[path = "../tests/support/live.rs"]
mod live;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use oa_run::run::events::RunEvent;
use oa_run::run::signals::Shutdown;

fn thread_cpu() -> Duration {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

/// CPU time of this process's threads whose name starts with `prefix` (from /proc).
fn threads_cpu(prefix: &str) -> Duration {
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as f64;
    let mut total = 0.0;
    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let p = e.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        // Fields after the `(comm)`: utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 12 {
            total +=
                (f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0)) / tick;
        }
    }
    Duration::from_secs_f64(total)
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// The `seq` of an `event` message (they start `{"type":"event","seq":N,`).
fn event_seq(t: &str) -> Option<usize> {
    let rest = t.strip_prefix(r#"{"type":"event","seq":"#)?;
    let end = rest.find(',')?;
    rest[..end].parse().ok()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let clients = args.first().copied().unwrap_or(100);
    let stalled = args.get(1).copied().unwrap_or(10);
    let bursts = args.get(2).copied().unwrap_or(40);
    let burst = args.get(3).copied().unwrap_or(200);
    // Then single events, one every 5 ms: the fan-out of one event, no queue in front of it.
    let singles = 1000;
    let total = bursts * burst + singles;

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("oa-live")
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-clients")
        .enable_all()
        .build()
        .unwrap();

    let mut hub = live::hub();
    let (server, addr) = server_rt.block_on(live::serve(
        &mut hub,
        None,
        oa_run::live::HEARTBEAT,
        Shutdown::manual(),
    ));
    for e in live::study_in_progress("<img src=x onerror=alert(1)>") {
        hub.emit(e);
    }
    let base_seq = hub.handle().read().state.live.seq;

    // Emit times (ns since t0) by seq, and every receipt's latency (µs).
    let t0 = Instant::now();
    let emitted: Arc<Vec<AtomicU64>> = Arc::new(
        (0..base_seq as usize + total + 2)
            .map(|_| AtomicU64::new(0))
            .collect(),
    );
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<(usize, u64)>::with_capacity(
        clients * total,
    )));
    let received = Arc::new(AtomicU64::new(0));

    let mut tasks = Vec::new();
    let mut stalled_socks = Vec::new();
    client_rt.block_on(async {
        for _ in 0..stalled {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.set_recv_buffer_size(4096).unwrap();
            let stream = sock.connect(addr).await.unwrap();
            let (ws, _) = tokio_tungstenite::client_async(
                format!("ws://{addr}/feed"),
                tokio_tungstenite::MaybeTlsStream::Plain(stream),
            )
            .await
            .unwrap();
            stalled_socks.push(ws);
        }
        for _ in 0..clients {
            let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/feed"))
                .await
                .unwrap();
            let emitted = emitted.clone();
            let latencies = latencies.clone();
            let received = received.clone();
            tasks.push(tokio::spawn(async move {
                let mut ws = ws;
                // Written (so resident) before the measurement: the memory figures are the
                // server's, not this bookkeeping's.
                let mut mine = vec![(1usize, 1u64); total + 1];
                let mut n = 0;
                while let Some(Ok(m)) = ws.next().await {
                    let now = t0.elapsed().as_nanos() as u64;
                    let tokio_tungstenite::tungstenite::Message::Text(t) = m else {
                        continue;
                    };
                    // The clients share the machine with the server: read only what is needed.
                    let Some(seq) = event_seq(&t) else { continue };
                    let at = emitted[seq].load(Ordering::Acquire);
                    if n < mine.len() {
                        mine[n] = (seq, now.saturating_sub(at) / 1000);
                        n += 1;
                    }
                    received.fetch_add(1, Ordering::Relaxed);
                    if seq > base_seq as usize + total {
                        break;
                    }
                }
                mine.truncate(n);
                latencies.lock().unwrap().extend(mine);
            }));
        }
    });
    std::thread::sleep(Duration::from_millis(500));

    let rss0 = rss_kib();
    let live0 = threads_cpu("oa-live");
    let wall0 = Instant::now();
    let mut emit_cpu = Duration::ZERO;
    let mut rss_after = Vec::new();
    let mut seq = base_seq;
    let payload = "x".repeat(200);
    for b in 0..bursts {
        let c = thread_cpu();
        for i in 0..burst {
            seq += 1;
            emitted[seq as usize].store(t0.elapsed().as_nanos() as u64, Ordering::Release);
            hub.emit(RunEvent::Info {
                message: format!("burst {b} event {i} {payload}"),
            });
        }
        emit_cpu += thread_cpu() - c;
        std::thread::sleep(Duration::from_millis(100));
        if b % 10 == 9 {
            rss_after.push(rss_kib());
        }
    }
    let last_burst_seq = seq as usize;
    for i in 0..singles {
        seq += 1;
        let c = thread_cpu();
        emitted[seq as usize].store(t0.elapsed().as_nanos() as u64, Ordering::Release);
        hub.emit(RunEvent::Info {
            message: format!("single {i} {payload}"),
        });
        emit_cpu += thread_cpu() - c;
        std::thread::sleep(Duration::from_millis(5));
    }
    rss_after.push(rss_kib());
    seq += 1;
    emitted[seq as usize].store(t0.elapsed().as_nanos() as u64, Ordering::Release);
    hub.emit(RunEvent::RunFinished {
        status: oa_run::manifest::RunStatus::Completed,
    });
    client_rt.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    });
    let wall = wall0.elapsed();
    let live_cpu = threads_cpu("oa-live") - live0;

    let all = latencies.lock().unwrap().clone();
    let mut in_bursts: Vec<u64> = all
        .iter()
        .filter(|(s, _)| *s <= last_burst_seq)
        .map(|(_, l)| *l)
        .collect();
    let mut single: Vec<u64> = all
        .iter()
        .filter(|(s, _)| *s > last_burst_seq)
        .map(|(_, l)| *l)
        .collect();
    in_bursts.sort_unstable();
    single.sort_unstable();
    let expected = clients as u64 * (total as u64 + 1);
    println!(
        "live feed: {clients} reading clients + {stalled} that never read; {bursts} bursts of {burst} events, then {singles} single events 5 ms apart (~300 B each)"
    );
    println!(
        "  delivered {} of {expected} event messages to the reading clients",
        received.load(Ordering::Relaxed)
    );
    for (what, lat) in [("single events", &single), ("within bursts", &in_bursts)] {
        println!(
            "  fan-out latency emit -> client receipt, {what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            pct(lat, 0.50),
            pct(lat, 0.99),
            pct(lat, 1.0)
        );
    }
    println!(
        "  study thread: emit costs {:.1} µs CPU per event ({:.1} ms for all {total})",
        emit_cpu.as_secs_f64() * 1e6 / total as f64,
        emit_cpu.as_secs_f64() * 1e3
    );
    println!(
        "  live server threads: {:.2} s CPU over {:.2} s wall ({:.0}% of one core) = {:.1} µs per event per client",
        live_cpu.as_secs_f64(),
        wall.as_secs_f64(),
        100.0 * live_cpu.as_secs_f64() / wall.as_secs_f64(),
        live_cpu.as_secs_f64() * 1e6 / (total as f64 * (clients + stalled) as f64)
    );
    let steps: Vec<String> = rss_after
        .iter()
        .map(|k| format!("{:.1}", *k as f64 / 1024.0))
        .collect();
    println!(
        "  resident memory (MiB): {:.1} before, then every 2,000 events: {}",
        rss0 as f64 / 1024.0,
        steps.join(", ")
    );
    drop(stalled_socks);
    server_rt.block_on(server.stop());
}
