//! Measure the round trip each player really gets from oa-run's latency tree, on a machine whose
//! kernel has sch_netem. Self-contained: it creates two network namespaces (server, players)
//! joined by a veth pair, builds the tree with oa-run's library on the server side, rotates the
//! levels over as many matches as there are levels, measures RTT per player with a UDP echo,
//! and removes everything again (also on failure).
//!
//! ```text
//! sudo cargo run --example netem_rtt -- [--levels 0,100,200] [--split egress|symmetric|both]
//!                                       [--samples 10] [--pfifo]
//! ```
//! `--pfifo` builds the same tree with pfifo leaves (no delay) to try the script on a kernel
//! without netem. Exit status: 0 when every median RTT is within [L - 0.5 ms, L + 15 ms].

#[path = "../tests/netem_lab/mod.rs"]
mod netem_lab;

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use oa_run::netem::{LatencyShaper, LeafKind, Probe, SetupOptions, SystemRunner};
use oa_run::scenario::Split;

struct Args {
    levels: Vec<u64>,
    splits: Vec<Split>,
    samples: usize,
    leaf: LeafKind,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        levels: vec![0, 100, 200],
        splits: vec![Split::Egress, Split::Symmetric],
        samples: 10,
        leaf: LeafKind::Netem,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--levels" => {
                a.levels = value()?
                    .split(',')
                    .map(|s| s.trim().trim_end_matches("ms").parse::<u64>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--levels: {e}"))?
            }
            "--split" => {
                a.splits = match value()?.as_str() {
                    "egress" => vec![Split::Egress],
                    "symmetric" => vec![Split::Symmetric],
                    "both" => vec![Split::Egress, Split::Symmetric],
                    other => return Err(format!("--split: unknown `{other}`")),
                }
            }
            "--samples" => a.samples = value()?.parse().map_err(|e| format!("--samples: {e}"))?,
            "--pfifo" => a.leaf = LeafKind::Pfifo,
            "-h" | "--help" => {
                return Err(
                    "usage: netem_rtt [--levels 0,100,200] [--split egress|symmetric|both] \
                     [--samples N] [--pfifo]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if a.levels.is_empty() || a.levels.len() > 50 || a.samples == 0 {
        return Err("need 1 to 50 levels and at least one sample".into());
    }
    Ok(a)
}

fn run(a: &Args) -> Result<bool, String> {
    if a.leaf == LeafKind::Netem
        && let Probe::Missing(why) | Probe::Unknown(why) = oa_run::netem::netem_probe()
    {
        return Err(format!(
            "this kernel cannot run netem ({why}); use --pfifo to try the script anyway"
        ));
    }
    let n = a.levels.len() as u32;
    let suffix = format!("{:x}", std::process::id());
    let lab = netem_lab::Lab::new("x", &suffix, n)?;
    let port = 40_000 + (std::process::id() % 20_000) as u16;
    let _echo = netem_lab::Echo::new(
        (1..=n)
            .map(|i| {
                netem_lab::udp_in(
                    &lab.players,
                    SocketAddr::new(IpAddr::V4(netem_lab::player_ip(i)), port),
                )
            })
            .collect::<Result<_, _>>()?,
    );
    let client = netem_lab::udp_in(
        &lab.server,
        SocketAddr::new(IpAddr::V4(netem_lab::SERVER_IP), netem_lab::GAME_PORT),
    )?;
    let mut all_ok = true;
    println!(
        "{:<10} {:>5} {:>6} {:<11} {:>13} {:>10} {:>8} {:>8}",
        "split", "match", "player", "ip", "configured_ms", "median_ms", "min_ms", "max_ms"
    );
    for &split in &a.splits {
        let lat = netem_lab::latency(split, &a.levels);
        let mut shaper = LatencyShaper::setup(
            &lat,
            &netem_lab::players(n),
            SetupOptions {
                force: false,
                leaf: a.leaf,
                game_port: netem_lab::GAME_PORT,
            },
            Box::new(SystemRunner::in_netns(&lab.server.name)),
        )
        .map_err(|e| e.to_string())?;
        for k in 0..n as usize {
            // Cyclic rotation: player i has level (i + k) mod n in match k.
            let levels: Vec<u64> = (0..n as usize)
                .map(|i| a.levels[(i + k) % n as usize])
                .collect();
            shaper
                .apply_match(k as u32 + 1, &levels)
                .map_err(|e| e.to_string())?;
            for (i, &want) in levels.iter().enumerate() {
                let ip = netem_lab::player_ip(i as u32 + 1);
                let to = SocketAddr::new(IpAddr::V4(ip), port);
                let timeout = Duration::from_millis(want * 2 + 3000);
                let r = netem_lab::rtts(&client, to, a.samples, timeout)?;
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                let med = ms(netem_lab::median(&r));
                let min = r.iter().copied().map(ms).fold(f64::MAX, f64::min);
                let max = r.iter().copied().map(ms).fold(0.0, f64::max);
                let expect = if a.leaf == LeafKind::Netem { want } else { 0 } as f64;
                let ok = med >= expect - 0.5 && med <= expect + 15.0;
                all_ok &= ok;
                println!(
                    "{:<10} {:>5} {:>6} {:<11} {:>13} {:>10.2} {:>8.2} {:>8.2}{}",
                    format!("{split:?}").to_lowercase(),
                    k + 1,
                    i + 1,
                    ip,
                    want,
                    med,
                    min,
                    max,
                    if ok { "" } else { "  <-- off" }
                );
            }
        }
        shaper.teardown().map_err(|e| e.to_string())?;
    }
    Ok(all_ok)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("netem_rtt: {e}");
            return ExitCode::from(2);
        }
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("netem_rtt: needs root (network namespaces, tc)");
        return ExitCode::from(77);
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("netem_rtt: some RTTs are off the configured latency");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("netem_rtt: {e}");
            ExitCode::from(1)
        }
    }
}
