//! Benchmark of the userspace (NFQUEUE) latency shaper: 64 players × 60 packets/s each way
//! through it, in two network namespaces (server, players) joined by a veth pair. Player i gets
//! level i mod 4 of [0, 50, 100, 150] ms, split half each way (`symmetric`), so every packet is
//! queued once on the way out and once on the way back. Reports the added-delay error (measured
//! round trip − planned, p50/p99/max), loss, and the CPU of the shaper thread and of the process.
//!
//! ```text
//! sudo cargo run --release --example nfqueue_bench -- [--players 64] [--rate 60] [--seconds 10] [--no-shaper]
//! ```
//! `--no-shaper` sends the same load with nothing queued: the machine's CPU for the traffic
//! alone, so that the shaper's own share is the difference.
//! Not a test: it asserts nothing and only prints figures (README, Performance).

#[path = "../tests/netem_lab/mod.rs"]
mod netem_lab;

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use oa_run::netem::{LatencyShaper, SetupOptions, SystemRunner};
use oa_run::scenario::{Shaper, Split};

const LEVELS: [u64; 4] = [0, 50, 100, 150];

fn arg(name: &str, default: u64) -> u64 {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) of this process, or of its thread named `thread`.
fn cpu_s(thread: Option<&str>) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let stat_of = |path: &str| -> Option<f64> {
        let s = std::fs::read_to_string(path).ok()?;
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some((f[11].parse::<f64>().ok()? + f[12].parse::<f64>().ok()?) / tick)
    };
    match thread {
        None => stat_of("/proc/self/stat").unwrap_or(0.0),
        Some(name) => std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name)
            })
            .filter_map(|t| stat_of(&t.path().join("stat").to_string_lossy()))
            .sum(),
    }
}

/// Busy CPU seconds of the whole machine (all cores: everything but idle and iowait).
fn machine_busy_s() -> f64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0.0) + f.get(4).copied().unwrap_or(0.0);
    (total - idle) / 100.0
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn run() -> Result<(), String> {
    let n = arg("--players", 64) as u32;
    let rate = arg("--rate", 60);
    let shaped = !std::env::args().any(|a| a == "--no-shaper");
    let seconds = arg("--seconds", 10);
    if !(1..=200).contains(&n) || rate == 0 {
        return Err("need 1..=200 players and a rate above 0".into());
    }
    let lab = netem_lab::Lab::new("b", &format!("{:x}", std::process::id()), n)?;
    let echo_port = 40_000 + (std::process::id() % 20_000) as u16;
    let _echo = netem_lab::Echo::new(
        (1..=n)
            .map(|i| {
                netem_lab::udp_in(
                    &lab.players,
                    SocketAddr::new(IpAddr::V4(netem_lab::player_ip(i)), echo_port),
                )
            })
            .collect::<Result<_, _>>()?,
    );
    let sock = netem_lab::udp_in(
        &lab.server,
        SocketAddr::new(IpAddr::V4(netem_lab::SERVER_IP), netem_lab::GAME_PORT),
    )?;
    let mut lat = netem_lab::latency(Split::Symmetric, &LEVELS);
    lat.shaper = Shaper::Nfqueue;
    lat.limit = 100_000;
    let mut shaper = if shaped {
        Some(
            LatencyShaper::setup(
                &lat,
                &netem_lab::players(n),
                SetupOptions {
                    game_port: netem_lab::GAME_PORT,
                    ..SetupOptions::default()
                },
                Box::new(SystemRunner::in_netns(&lab.server.name)),
            )
            .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let planned: Vec<u64> = (0..n as usize)
        .map(|i| if shaped { LEVELS[i % LEVELS.len()] } else { 0 })
        .collect();
    if let Some(s) = &mut shaper {
        s.apply_match(1, &planned).map_err(|e| e.to_string())?;
    }

    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let rx = sock.try_clone().map_err(|e| e.to_string())?;
    rx.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let stop_rx = stop.clone();
    let planned_rx = planned.clone();
    let reader = std::thread::spawn(move || {
        let mut errors = Vec::new();
        let mut buf = [0u8; 64];
        while !stop_rx.load(Ordering::Relaxed) {
            if let Ok((12, _)) = rx.recv_from(&mut buf) {
                let player = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                let sent = u64::from_be_bytes(buf[4..12].try_into().unwrap());
                let rtt_ms = (t0.elapsed().as_micros() as u64 - sent) as f64 / 1000.0;
                errors.push(rtt_ms - planned_rx[player] as f64);
            }
        }
        errors
    });

    // Warm up ARP and the path, then measure CPU over the load only.
    std::thread::sleep(Duration::from_millis(300));
    let (cpu0, thr0, all0, wall0) = (
        cpu_s(None),
        cpu_s(Some("oa-run-nfqueue")),
        machine_busy_s(),
        Instant::now(),
    );
    let total = n as u64 * rate * seconds;
    let gap = Duration::from_secs_f64(1.0 / (n as f64 * rate as f64));
    let mut next = Instant::now();
    for k in 0..total {
        let player = (k % n as u64) as u32;
        let mut msg = [0u8; 12];
        msg[..4].copy_from_slice(&player.to_be_bytes());
        msg[4..].copy_from_slice(&(t0.elapsed().as_micros() as u64).to_be_bytes());
        let to = SocketAddr::new(IpAddr::V4(netem_lab::player_ip(player + 1)), echo_port);
        let _ = sock.send_to(&msg, to);
        next += gap;
        let now = Instant::now();
        if next > now + Duration::from_micros(500) {
            std::thread::sleep(next - now);
        }
    }
    std::thread::sleep(Duration::from_millis(400));
    let wall = wall0.elapsed().as_secs_f64();
    let (cpu, thr, all) = (
        cpu_s(None) - cpu0,
        cpu_s(Some("oa-run-nfqueue")) - thr0,
        machine_busy_s() - all0,
    );
    stop.store(true, Ordering::Relaxed);
    let mut errors = reader.join().map_err(|_| "reader panicked")?;
    let queued: u64 = match &mut shaper {
        Some(s) => {
            let m = s.apply_match(2, &planned).map_err(|e| e.to_string())?;
            s.teardown().map_err(|e| e.to_string())?;
            m.players
                .iter()
                .filter_map(|p| p.nfqueue.as_ref())
                .map(|q| q.egress.packets + q.ingress.as_ref().map_or(0, |i| i.packets))
                .sum()
        }
        None => 0,
    };

    errors.sort_by(f64::total_cmp);
    if errors.is_empty() {
        return Err("no packet came back".into());
    }
    println!(
        "players {n}, {rate} packets/s each way, {seconds} s: sent {total}, echoed {} ({:.2} % lost), {queued} packets through the queue",
        errors.len(),
        100.0 * (total as f64 - errors.len() as f64) / total as f64
    );
    println!(
        "added-delay error (round trip - planned, ms): p50 {:.3}  p99 {:.3}  max {:.3}  min {:.3}",
        pct(&errors, 0.5),
        pct(&errors, 0.99),
        errors[errors.len() - 1],
        errors[0]
    );
    println!(
        "CPU over {wall:.1} s: shaper thread {:.1} % of one core; whole process (load generator, {n} echo threads, shaper) {:.1} %; whole machine {:.1} %",
        100.0 * thr / wall,
        100.0 * cpu / wall,
        100.0 * all / wall
    );
    Ok(())
}

fn main() -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("nfqueue_bench: needs root (network namespaces, iptables)");
        return ExitCode::from(77);
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nfqueue_bench: {e}");
            ExitCode::from(1)
        }
    }
}
