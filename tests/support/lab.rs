//! The local lab (scripts/lab.sh) as the lab tests use it: bring it up and down, run the demo
//! study on it with overrides, read the runs it made, prove nothing is left running.
//! Include with `#[path = "support/lab.rs"] mod lab;` next to `mod support;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// Why the lab tests cannot run here (root, the lab's programs, and `extra`), if they cannot.
pub fn missing(extra: &[&str]) -> Option<String> {
    let lab = [
        "/usr/games/openarena-server",
        "/usr/games/openarena",
        "obs",
        "Xvfb",
    ];
    super::support::missing_root().or_else(|| {
        lab.iter()
            .chain(extra)
            .find_map(|p| super::support::missing_program(p))
    })
}

/// Bring up a lab named `<prefix><pid>` on `10.<octet>.<100 + pid % 150>.0/24`.
pub fn up(prefix: &str, octet: u8) -> Lab {
    let id = std::process::id();
    let lab = Lab {
        dir: super::support::passable_tempdir(),
        name: format!("{prefix}{:04x}", id % 0xffff),
        net: format!("10.{octet}.{}", 100 + id % 150),
        port: super::support::free_udp_port(),
    };
    let t = Instant::now();
    let up = lab.cmd("up");
    assert!(
        up.status.success(),
        "lab.sh up failed:\n{}",
        String::from_utf8_lossy(&up.stderr)
    );
    eprintln!("lab up in {:.1}s", t.elapsed().as_secs_f64());
    lab
}

/// One lab (scripts/lab.sh) of two player PCs, taken down when dropped.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub name: String,
    pub net: String,
    pub port: u16,
}

impl Lab {
    /// Fresh OBS instances (`lab.sh obs`) before a phase, a study of its own: real OBS 29 can
    /// wedge in STOPPING after a number of start/stop cycles in one instance (obs-studio #2869,
    /// #9363; seen here at a PC's seventh or eighth recording of a test).
    pub fn fresh_obs(&self) {
        let out = self.cmd("obs");
        assert!(
            out.status.success(),
            "lab.sh obs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn cmd(&self, verb: &str) -> Output {
        Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lab.sh"))
            .arg(verb)
            .env("LAB_DIR", self.dir.path().join("lab"))
            .env("LAB_NAME", &self.name)
            .env("LAB_NET", &self.net)
            .env("LAB_SERVER_PORT", self.port.to_string())
            .env("LAB_PLAYERS", "2")
            .env("OBS_PASSWORD", "e2e-obs-pw")
            .output()
            .unwrap()
    }

    /// Overrides for the demo scenario on this lab. Without seats, players are discovered as
    /// they join and their OBS is found at their IP.
    pub fn sets_with(&self, timelimit: &str, seats: bool) -> Vec<String> {
        let n = &self.net;
        let seats = if seats {
            format!("players.seats=[{{name: pc1, ip: {n}.11}}, {{name: pc2, ip: {n}.12}}]")
        } else {
            "players.seats=[]".to_string()
        };
        self.sets_raw(timelimit, seats)
    }

    pub fn sets_raw(&self, timelimit: &str, seats: String) -> Vec<String> {
        let n = &self.net;
        [
            format!("server.address={n}.1:{}", self.port),
            seats,
            format!("latency.interface={}br", self.name),
            format!("output.dir={}", self.dir.path().join("runs").display()),
            "warmup.duration=5s".into(),
            format!("matches.timelimit={timelimit}"),
            // The demo's practice match, questionnaire and live view on 8080 are off unless a
            // phase turns them on (e2e_lab phase 1: all of them; phase 3: the live view).
            "matches.practice=null".into(),
            "questionnaire=null".into(),
            "live=null".into(),
        ]
        .into_iter()
        .flat_map(|s| ["--set".to_string(), s])
        .collect()
    }

    pub fn sets(&self, timelimit: &str) -> Vec<String> {
        self.sets_with(timelimit, true)
    }

    /// `oa-run [SUBCOMMAND] scenarios/demo.yaml ARGS`.
    pub fn oa_run_sub(&self, sub: Option<&str>, args: &[String]) -> Command {
        let mut c = Command::new(crate::support::oa_run());
        c.args(sub)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/demo.yaml"))
            .args(args)
            .env("OBS_PASSWORD", "e2e-obs-pw")
            .env("OA_RCON_PASSWORD", "e2e-rcon-pw")
            .env("OA_RUN_LOG", "info")
            // The real tc tree with pfifo leaves where the kernel lacks sch_netem.
            .env("OA_RUN_TEST_PFIFO_LEAVES", "1");
        c
    }

    pub fn oa_run(&self, args: &[String]) -> Command {
        self.oa_run_sub(None, args)
    }

    /// `oa-run` with the lab's environment and no scenario (`recover`, `resume`, `report`).
    pub fn oa_run_bare(&self) -> Command {
        let mut c = Command::new(crate::support::oa_run());
        c.env("OBS_PASSWORD", "e2e-obs-pw")
            .env("OA_RCON_PASSWORD", "e2e-rcon-pw")
            .env("OA_RUN_LOG", "info")
            .env("OA_RUN_TEST_PFIFO_LEAVES", "1");
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.cmd("down");
        if !out.status.success() {
            eprintln!(
                "lab.sh down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The run directories that exist now (a phase's own run is the one not among them).
pub fn runs_so_far(runs: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

pub fn manifest_of(runs: &Path, after: &[PathBuf]) -> Option<(PathBuf, serde_json::Value)> {
    let dir = std::fs::read_dir(runs)
        .ok()?
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| !after.contains(p))?;
    let m = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).ok()?).ok()?;
    Some((dir, m))
}

pub fn validate_against_schema(m: &serde_json::Value) {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/manifest.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let v = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .build(&schema)
        .unwrap();
    let errors: Vec<String> = v
        .iter_errors(m)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "manifest does not match its schema: {errors:?}"
    );
}

/// Samples of the oa-run process: (cpu seconds, peak RSS kB), read from /proc while it runs.
pub fn sample(pid: u32, best: &mut (f64, u64)) {
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        && let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r)
    {
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
        best.0 = best.0.max(ticks / 100.0);
    }
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
        && let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:"))
    {
        let kb = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        best.1 = best.1.max(kb);
    }
}

pub fn wait_sampling(child: &mut Child, timeout: Duration, usage: &mut (f64, u64)) -> i32 {
    let t = Instant::now();
    loop {
        sample(child.id(), usage);
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        if t.elapsed() > timeout {
            let _ = child.kill();
            panic!("oa-run did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn servers_on(port: u16) -> usize {
    crate::support::pids_with_cmdline(&format!("net_port {port}")).len()
}

/// Wait until the study's first match has been live for a few seconds.
pub fn wait_until_match_1_is_live(child: &mut Child, runs: &Path, before: &[PathBuf]) {
    wait_until_match_is_live(child, runs, before, 0);
    std::thread::sleep(Duration::from_secs(3));
}

/// Wait until the `index`th match of the run's manifest (0-based) has started; the run is the
/// one under `runs` not among `before`.
pub fn wait_until_match_is_live(child: &mut Child, runs: &Path, before: &[PathBuf], index: usize) {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("the study ended early ({status}):\n{err}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "match {} never started",
            index + 1
        );
        if let Some((_, m)) = manifest_of(runs, before)
            && m["matches"][index]["started_at"].is_string()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `oa-run check`: server port free (the server is gone), every OBS reachable and NOT recording.
pub fn assert_nothing_running(lab: &Lab) {
    assert_eq!(servers_on(lab.port), 0, "a server is still running");
    let out = lab
        .oa_run_sub(Some("check"), &lab.sets("15s"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check failed:\n{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        table.matches("recording=no").count(),
        2,
        "a recording is still running:\n{table}"
    );
}
