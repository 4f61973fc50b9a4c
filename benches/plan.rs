//! Benchmark (not a timed test): load + validate + compile + render a 1,000-match scenario,
//! in process and as a whole `oa-run --dry-run` process. Run with `cargo bench --bench plan`.
//! Target: the whole dry-run process well under 50 ms.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use oa_run::plan::{compile, render};
use oa_run::scenario::{SecretsMode, load_str};

/// 4 levels × 250 repeats = 1,000 matches; 4 players = 4,000 recording names.
const SCENARIO: &str = r#"
name: bench
server: { launch: {}, address: "127.0.0.1:27960", rcon_password: "${RCON}" }
players: { humans: 4 }
bots: { warmup: { count: 2, skill: 1 }, match: { count: 2, skill: 3 } }
warmup: { duration: 1m }
matches: { timelimit: 2m, repeats: 250 }
latency: { interface: eth0, levels: [0ms, 50ms, 100ms, 150ms] }
obs: { password: "${OBS}", recording: { name: "{{ scenario }}_m{{ match }}_{{ player }}_{{ latency_ms }}ms" } }
"#;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let env: BTreeMap<String, String> =
        [("RCON".into(), "r".into()), ("OBS".into(), "o".into())].into();
    let once = || {
        let loaded = load_str("bench.yaml", SCENARIO, &[], &env, SecretsMode::Required).unwrap();
        let plan = compile(&loaded).unwrap();
        assert_eq!(plan.matches.len(), 1000);
        let text = render::text(&plan);
        let json = serde_json::to_string(&plan).unwrap();
        text.len() + json.len()
    };
    {
        let t = Instant::now();
        let loaded = load_str("bench.yaml", SCENARIO, &[], &env, SecretsMode::Required).unwrap();
        let t1 = t.elapsed();
        let plan = compile(&loaded).unwrap();
        let t2 = t.elapsed();
        let text = render::text(&plan);
        let t3 = t.elapsed();
        let json = serde_json::to_string(&plan).unwrap();
        let t4 = t.elapsed();
        println!(
            "phases (first, cold): load {t1:?}, compile {:?}, text {:?} ({} bytes), json {:?} ({} bytes)",
            t2 - t1,
            t3 - t2,
            text.len(),
            t4 - t3,
            json.len()
        );
    }
    once(); // warm the schema/validator caches as a fresh process would pay them once
    let samples: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(once());
            t.elapsed()
        })
        .collect();
    println!(
        "in-process load+validate+compile+render (1,000 matches): median {:?}",
        median(samples)
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.yaml");
    std::fs::write(&path, SCENARIO).unwrap();
    let bin = env!("CARGO_BIN_EXE_oa-run");
    let mut samples = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let out = Command::new(bin)
            .arg(&path)
            .arg("--dry-run")
            .env("RCON", "r")
            .env("OBS", "o")
            .output()
            .unwrap();
        samples.push(t.elapsed());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!(
        "whole `oa-run --dry-run` process (1,000 matches): median {:?}",
        median(samples)
    );
}
