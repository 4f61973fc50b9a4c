//! Fault tests on the local lab (scripts/lab.sh: player PCs as network namespaces, each with a
//! real OBS and a real OpenArena client; oa-run launches the real server). Each phase injects
//! one fault into a real study and asserts the exit code, what the manifest says, and that
//! nothing is left: no OBS recording, no server, no latency tree or iptables rule of oa-run's,
//! and at the end no namespace. Needs root.
//!
//! 1. oa-run is SIGKILLed mid-match; `oa-run recover RUN_DIR` stops the recordings it left and
//!    the userspace shaper's iptables chain; `oa-run resume RUN_DIR` completes the study, every
//!    planned recording complete exactly once across the two runs.
//! 2. oa-run is SIGKILLed again; the next run recovers it by itself at start, while 30 % of the
//!    server's rcon replies to oa-run are dropped (iptables `statistic`), and completes.
//! 3. A player's link is cut for 20 s mid-match (`obs.on_lost: replay`).
//! 4. A player's OBS records onto a small tmpfs that fills up mid-match.
//!
//! `OA_FAULTS=recover,rcon,link,disk` runs only some phases (while working on one).

#[path = "support/lab.rs"]
mod lab;
mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use lab::{
    Lab, assert_nothing_running, manifest_of, runs_so_far, servers_on, validate_against_schema,
    wait_sampling, wait_until_match_1_is_live,
};

fn phase_on(name: &str) -> bool {
    std::env::var("OA_FAULTS").map_or(true, |v| v.split(',').any(|p| p.trim() == name))
}

/// oa-run on the lab, its stderr into `log` (a file: a pipe nobody reads could fill and
/// block it).
fn spawn(mut c: Command, log: &Path) -> Child {
    c.stdout(Stdio::null())
        .stderr(File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn read_log(log: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned()
}

fn read_manifest(run: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap()
}

/// oa-run's iptables rules (the userspace shaper's chains and the jumps into them).
fn shaper_rules() -> Vec<String> {
    let out = Command::new("iptables")
        .args(["-w", "5", "-t", "mangle", "-S"])
        .output()
        .unwrap();
    assert!(out.status.success(), "iptables -S failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("OA_RUN_SHAPE"))
        .map(String::from)
        .collect()
}

/// No server, no OBS recording, no latency tree on the lab's bridge, no iptables rule of
/// oa-run's.
fn assert_clean(lab: &Lab) {
    assert_nothing_running(lab);
    assert_eq!(shaper_rules(), Vec::<String>::new(), "iptables rules left");
    let qdiscs = Command::new("tc")
        .args(["qdisc", "show", "dev", &format!("{}br", lab.name)])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&qdiscs.stdout).contains("4f41"),
        "a latency tree was left behind"
    );
}

/// The server a killed oa-run launched goes with it (SIGTERM on its parent's death).
fn wait_server_gone(lab: &Lab) -> Duration {
    let t = Instant::now();
    while servers_on(lab.port) > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the server outlived its oa-run"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    t.elapsed()
}

/// `oa-run report RUN --format csv` as (match, player, status, reason) rows.
fn report(lab: &Lab, run: &Path) -> Vec<(u64, u64, String, String)> {
    let out = lab
        .oa_run_bare()
        .arg("report")
        .arg(run)
        .args(["--format", "csv"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut csv = csv::Reader::from_reader(&out.stdout[..]);
    let h = csv.headers().unwrap().clone();
    let col = |n: &str| h.iter().position(|x| x == n).unwrap();
    let (m, p, s, r) = (col("match"), col("player"), col("status"), col("reason"));
    csv.records()
        .map(|row| {
            let row = row.unwrap();
            (
                row[m].parse().unwrap(),
                row[p].parse().unwrap(),
                row[s].to_string(),
                row[r].to_string(),
            )
        })
        .collect()
}

fn recording(m: &serde_json::Value, player: u64, match_no: u64) -> Option<&serde_json::Value> {
    m["recordings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["player"] == player && r["match"] == match_no)
}

/// Milliseconds from `since` to the recording's first health note of `issue`.
fn health_after(rec: &serde_json::Value, issue: &str, since: DateTime<Utc>) -> Option<i64> {
    rec["health"].as_array()?.iter().find_map(|h| {
        (h["issue"] == issue).then(|| {
            (DateTime::parse_from_rfc3339(h["at"].as_str().unwrap())
                .unwrap()
                .with_timezone(&Utc)
                - since)
                .num_milliseconds()
        })
    })
}

/// Whether a recording has a note about its connection or its end (frame counts on a loaded
/// machine are the peer's own and do not count).
fn troubled(rec: &serde_json::Value) -> bool {
    rec["health"].as_array().is_some_and(|h| {
        h.iter().any(|n| {
            [
                "disconnected",
                "reconnected",
                "lost",
                "exiting",
                "stopped_unexpectedly",
            ]
            .contains(&n["issue"].as_str().unwrap_or(""))
        })
    })
}

fn file_len(path: &serde_json::Value) -> u64 {
    std::fs::metadata(path.as_str().expect("a path"))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// SIGKILL oa-run once its first match has been live for a few seconds; returns its run
/// directory, its manifest still saying `running`.
fn kill_mid_match(lab: &Lab, runs: &Path, log: &Path) -> PathBuf {
    let before = runs_so_far(runs);
    assert!(lab.cmd("clients").status.success());
    let mut child = spawn(lab.oa_run(&lab.sets("30s")), log);
    wait_until_match_1_is_live(&mut child, runs, &before);
    // The userspace shaper (`auto` on this kernel) holds its chain while the study runs.
    assert!(!shaper_rules().is_empty(), "no shaper chain while running");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), None, "killed by a signal");
    let gone = wait_server_gone(lab);
    eprintln!(
        "SIGKILL: the server followed its oa-run after {} ms",
        gone.as_millis()
    );
    let (run, m) = manifest_of(runs, &before).unwrap();
    assert_eq!(m["status"]["state"], "running", "{}", m["status"]);
    // What a SIGKILL leaves: both OBS recording, the chain.
    assert!(!shaper_rules().is_empty(), "the killed run's chain is left");
    let out = lab
        .oa_run_sub(Some("check"), &lab.sets("15s"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        table.matches("recording=ACTIVE").count(),
        2,
        "both OBS still record:\n{table}"
    );
    run
}

/// The crashed run's manifest after its recovery: `crashed`, both recordings of match 1
/// stopped with their final paths, the chain removed, no problem.
fn assert_recovered(m: &serde_json::Value) {
    validate_against_schema(m);
    let st = &m["status"];
    assert_eq!(st["state"], "crashed", "{st}");
    assert_eq!(st["recordings_stopped"], 2, "{st}");
    assert!(st["problems"].is_null(), "{st}");
    let removed = st["latency_removed"].as_array().expect("what was removed");
    assert!(
        removed
            .iter()
            .any(|r| r.as_str().unwrap().contains("chain OA_RUN_SHAPE")),
        "{st}"
    );
    for p in 1..=2 {
        let r = recording(m, p, 1).expect("a match-1 recording");
        assert!(r["stopped_at"].is_string(), "{r}");
        assert!(file_len(&r["path"]) > 0, "{r}");
        assert!(
            m["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == "cleanup"
                    && e["player"] == p
                    && e["message"]
                        .as_str()
                        .unwrap()
                        .contains("stopped by the crash recovery")),
            "no recovery event for player {p}"
        );
    }
}

/// An iptables rule that drops 30 % of the server's UDP replies to oa-run (both on the lab's
/// host side: over `lo`), and nothing of the players' game traffic. Removed when dropped, also
/// when the test fails.
struct RconDrop {
    spec: Vec<String>,
}

impl RconDrop {
    fn install(lab: &Lab) -> RconDrop {
        let host = format!("{}.1", lab.net);
        let spec: Vec<String> = [
            "OUTPUT",
            "-o",
            "lo",
            "-p",
            "udp",
            "-s",
            &host,
            "--sport",
            &lab.port.to_string(),
            "-d",
            &host,
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            "0.3",
            "-m",
            "comment",
            "--comment",
            &format!("oa-faults-{}", lab.name),
            "-j",
            "DROP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = Command::new("iptables")
            .args(["-w", "5", "-I"])
            .args(&spec)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        RconDrop { spec }
    }

    /// Packets the rule dropped so far.
    fn dropped(&self) -> u64 {
        let out = Command::new("iptables")
            .args(["-w", "5", "-L", "OUTPUT", "-v", "-x", "-n"])
            .output()
            .unwrap();
        let needle = self.spec[self.spec.len() - 3].clone();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains(&needle))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .expect("the rule's counter")
    }
}

impl Drop for RconDrop {
    fn drop(&mut self) {
        // Bounded: one rule was inserted; a second delete only confirms it is gone.
        for _ in 0..3 {
            let ok = Command::new("iptables")
                .args(["-w", "5", "-D"])
                .args(&self.spec)
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                break;
            }
        }
    }
}

/// A player's link, brought up again when dropped (also when the test fails).
struct LinkCut {
    ns: String,
}

impl LinkCut {
    fn set(&self, state: &str) {
        let out = Command::new("ip")
            .args(["-n", &self.ns, "link", "set", "eth0", state])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for LinkCut {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["-n", &self.ns, "link", "set", "eth0", "up"])
            .status();
    }
}

/// A tmpfs mounted on a directory, unmounted when dropped (also when the test fails).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir: dir.into() }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn mounted(dir: &Path) -> bool {
    let d = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(d.as_str()))
}

/// Stop pc`i`'s OBS (SIGINT: its clean exit) and wait until its process group is gone.
fn stop_obs(lab: &Lab, i: u32) {
    let pid_file = lab.dir.path().join(format!("lab/pc{i}/obs.pid"));
    let group: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = kill(Pid::from_raw(-group), Signal::SIGINT);
    let t = Instant::now();
    while kill(Pid::from_raw(-group), None).is_ok() {
        if t.elapsed() > Duration::from_secs(20) {
            let _ = kill(Pid::from_raw(-group), Signal::SIGKILL);
        }
        assert!(t.elapsed() < Duration::from_secs(30), "OBS did not exit");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_file(pid_file);
}

#[test]
fn faults_on_the_local_lab() {
    if let Some(why) = lab::missing(&["iptables"]) {
        return support::skip(&why);
    }
    let lab = lab::up("oaf", 78);
    let runs = lab.dir.path().join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let logs = lab.dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();

    // ---- 1. SIGKILL mid-match, `oa-run recover`, then `oa-run resume`.
    if phase_on("recover") {
        let run_a = kill_mid_match(&lab, &runs, &logs.join("a.log"));
        let t = Instant::now();
        let out = lab
            .oa_run_bare()
            .arg("recover")
            .arg(&run_a)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("recover took {:.1}s:\n{said}", t.elapsed().as_secs_f64());
        assert!(said.contains("marked crashed"), "{said}");
        assert_eq!(said.matches("stopped the recording of player").count(), 2);
        let a = read_manifest(&run_a);
        assert_recovered(&a);
        assert_clean(&lab);

        let before = runs_so_far(&runs);
        assert!(lab.cmd("clients").status.success());
        let log = logs.join("b.log");
        let mut c = lab.oa_run_bare();
        // Seats may hold OBS passwords, so their override is not recorded: given again.
        let seats = lab
            .sets("30s")
            .into_iter()
            .find(|s| s.starts_with("players.seats="))
            .unwrap();
        c.arg("resume").arg(&run_a).args(["--set", &seats]);
        let mut child = spawn(c, &log);
        let code = wait_sampling(&mut child, Duration::from_secs(300), &mut (0.0, 0));
        assert_eq!(code, 0, "{}", read_log(&log));
        let (run_b, b) = manifest_of(&runs, &before).unwrap();
        validate_against_schema(&b);
        assert_eq!(b["status"]["state"], "completed", "{}", b["status"]);
        let from = &b["resumed_from"];
        assert_eq!(from["run_dir"], run_a.display().to_string(), "{from}");
        assert_eq!(from["previous_status"], "crashed", "{from}");
        assert_eq!(from["from_match"], 1, "{from}");
        // Every planned recording complete exactly once across the two runs; the interrupted
        // match's recordings stay partial in the first.
        let (rows_a, rows_b) = (report(&lab, &run_a), report(&lab, &run_b));
        let planned: Vec<u64> = a["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["number"].as_u64().unwrap())
            .collect();
        assert_eq!(planned, [1, 2]);
        for n in &planned {
            for p in 1..=2u64 {
                let complete = rows_a
                    .iter()
                    .chain(&rows_b)
                    .filter(|r| (r.0, r.1) == (*n, p) && r.2 == "complete")
                    .count();
                assert_eq!(complete, 1, "match {n} player {p}: {rows_a:?} {rows_b:?}");
            }
        }
        for r in rows_a.iter().filter(|r| r.0 == 1) {
            assert_eq!(r.2, "partial", "{r:?}");
        }
        for r in b["recordings"].as_array().unwrap() {
            assert!(r["error"].is_null() && file_len(&r["path"]) > 0, "{r}");
        }
        assert_clean(&lab);
    }

    // ---- 2. SIGKILL again; the next run recovers it by itself at start, with 30 % of the
    // server's rcon replies dropped.
    if phase_on("rcon") {
        lab.fresh_obs();
        let run_c = kill_mid_match(&lab, &runs, &logs.join("c.log"));
        let drop_rule = RconDrop::install(&lab);
        let before = runs_so_far(&runs);
        assert!(lab.cmd("clients").status.success());
        let log = logs.join("d.log");
        let started = Instant::now();
        let mut child = spawn(lab.oa_run(&lab.sets("15s")), &log);
        let code = wait_sampling(&mut child, Duration::from_secs(300), &mut (0.0, 0));
        let dropped = drop_rule.dropped();
        drop(drop_rule);
        let text = read_log(&log);
        assert_eq!(code, 0, "{text}");
        eprintln!(
            "study with 30 % of rcon replies dropped: {dropped} replies dropped, {:.1}s wall",
            started.elapsed().as_secs_f64()
        );
        assert!(dropped > 0, "the rule dropped nothing");
        let out = Command::new("iptables")
            .args(["-w", "5", "-S", "OUTPUT"])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("oa-faults"),
            "the drop rule was left"
        );
        // The killed run was recovered by this run's start.
        assert!(
            text.contains("recovered the crashed run"),
            "no recovery in the log:\n{text}"
        );
        assert_recovered(&read_manifest(&run_c));
        let (_, d) = manifest_of(&runs, &before).unwrap();
        validate_against_schema(&d);
        assert_eq!(d["status"]["state"], "completed", "{}", d["status"]);
        let recs = d["recordings"].as_array().unwrap();
        assert_eq!(recs.len(), 4);
        for r in recs {
            assert!(r["error"].is_null() && file_len(&r["path"]) > 0, "{r}");
        }
        assert_clean(&lab);
    }

    // ---- 3. pc2's link is cut for 20 s mid-match.
    if phase_on("link") {
        lab.fresh_obs();
        let before = runs_so_far(&runs);
        assert!(lab.cmd("clients").status.success());
        let log = logs.join("e.log");
        let mut child = spawn(
            lab.oa_run(
                &[
                    lab.sets("35s"),
                    vec!["--set".into(), "obs.on_lost=replay".into()],
                ]
                .concat(),
            ),
            &log,
        );
        wait_until_match_1_is_live(&mut child, &runs, &before);
        let cut = LinkCut {
            ns: format!("{}-pc2", lab.name),
        };
        let cut_at = Utc::now();
        cut.set("down");
        std::thread::sleep(Duration::from_secs(20));
        let up_at = Utc::now();
        cut.set("up");
        drop(cut);
        let code = wait_sampling(&mut child, Duration::from_secs(300), &mut (0.0, 0));
        let text = read_log(&log);
        let (run_e, m) = manifest_of(&runs, &before).unwrap();
        validate_against_schema(&m);
        // The study completed, the lost match replayed in full: exit 0.
        assert_eq!(code, 0, "{text}");
        assert_eq!(m["status"]["state"], "completed", "{}", m["status"]);
        let lost = recording(&m, 2, 1).expect("pc2's match-1 recording");
        let drop_ms = health_after(lost, "disconnected", cut_at).expect("the drop");
        let lost_ms = health_after(lost, "lost", cut_at).expect("the loss");
        let back_ms = health_after(lost, "reconnected", up_at).expect("the reconnect");
        eprintln!(
            "link cut: drop told after {drop_ms} ms, recording lost after {lost_ms} ms, \
             reconnected {back_ms} ms after the link came back"
        );
        // A cut link is a half-open connection: the keepalive tells it within 5 s; the loss
        // follows 5 s of no connection, judged at the match loop's next look (twice a second).
        assert!(drop_ms <= 5_000, "drop told after {drop_ms} ms");
        assert!(
            (5_000..=6_000).contains(&(lost_ms - drop_ms)),
            "loss judged {} ms after the drop",
            lost_ms - drop_ms
        );
        assert!(
            (0..=10_000).contains(&back_ms),
            "reconnected after {back_ms} ms"
        );
        let back = lost["health"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["issue"] == "reconnected")
            .unwrap();
        assert_eq!(back["recording"], true, "OBS kept recording: {back}");
        // OBS kept recording and was stopped at the match's end: a final file, listed
        // partial because the loss was judged.
        assert!(
            lost["error"].is_null() && lost["stopped_at"].is_string(),
            "{lost}"
        );
        assert!(file_len(&lost["path"]) > 0, "{lost}");
        let rows = report(&lab, &run_e);
        let cell = |n: u64, p: u64| rows.iter().find(|r| (r.0, r.1) == (n, p)).unwrap();
        assert_eq!(cell(1, 2).2, "partial", "{rows:?}");
        assert!(cell(1, 2).3.starts_with("OBS lost"), "{rows:?}");
        let pc1 = recording(&m, 1, 1).unwrap();
        assert!(!troubled(pc1), "pc1 is unaffected: {pc1}");
        // obs.on_lost: replay played match 1 again, after the plan, complete for both.
        let matches = m["matches"].as_array().unwrap();
        assert_eq!(matches.len(), 3);
        assert_eq!(matches[2]["replay_of"], 1, "{}", matches[2]);
        assert!(matches[2]["ended_at"].is_string());
        for p in 1..=2 {
            let r = recording(&m, p, 3).expect("a replay recording");
            assert!(r["error"].is_null() && !troubled(r), "{r}");
            assert!(file_len(&r["path"]) > 0, "{r}");
            assert_eq!(cell(3, p).2, "complete", "{rows:?}");
        }
        // The game client rode out the 20 s (the server's timeout is far longer).
        assert!(m["players"][1]["left_at"].is_null(), "{}", m["players"][1]);
        assert_clean(&lab);
    }

    // ---- 4. pc2's OBS records onto a 96 MB tmpfs that fills up mid-match.
    if phase_on("disk") {
        lab.fresh_obs();
        let rec_dir = lab.dir.path().join("lab/pc2/recordings");
        // OBS runs in its own mount namespace (ip netns exec), a copy made when it started:
        // it sees the tmpfs once restarted on top of it.
        stop_obs(&lab, 2);
        let tmpfs = Tmpfs::mount(&rec_dir, "96m");
        assert!(lab.cmd("up").status.success());
        let before = runs_so_far(&runs);
        assert!(lab.cmd("clients").status.success());
        let log = logs.join("f.log");
        let mut child = spawn(
            lab.oa_run(
                &[
                    lab.sets("20s"),
                    vec!["--set".into(), "obs.min_free_disk=60MB".into()],
                ]
                .concat(),
            ),
            &log,
        );
        wait_until_match_1_is_live(&mut child, &runs, &before);
        // Something else fills the drive: 40 MB left, under OBS's own 50 MiB floor.
        let filled_at = Utc::now();
        std::fs::write(rec_dir.join("filler"), vec![0u8; 56 << 20]).unwrap();
        let code = wait_sampling(&mut child, Duration::from_secs(300), &mut (0.0, 0));
        let text = read_log(&log);
        let (run_f, m) = manifest_of(&runs, &before).unwrap();
        validate_against_schema(&m);
        // The study completed without pc2's recordings: exit 1, a recording failed.
        assert_eq!(code, 1, "{text}");
        assert_eq!(m["status"]["state"], "completed", "{}", m["status"]);
        let full = recording(&m, 2, 1).expect("pc2's match-1 recording");
        let stop_ms = health_after(full, "stopped_unexpectedly", filled_at).expect("the stop");
        let low_ms = health_after(full, "low_disk", filled_at).expect("low disk");
        eprintln!(
            "disk full: OBS stopped the recording after {stop_ms} ms (its own 50 MiB floor), \
             low disk told after {low_ms} ms"
        );
        // OBS looks at its free space every second; GetStats is asked every 2 s.
        assert!(stop_ms <= 2_500, "stop told after {stop_ms} ms");
        assert!(low_ms <= 3_000, "low disk told after {low_ms} ms");
        let low = full["health"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["issue"] == "low_disk")
            .unwrap();
        assert_eq!(low["min_mb"], 60, "{low}");
        assert!(low["free_mb"].as_u64().unwrap() < 50, "{low}");
        // The file OBS finalised is kept, partial.
        assert!(file_len(&full["path"]) > 0, "{full}");
        assert!(full["stopped_at"].is_string(), "{full}");
        let rows = report(&lab, &run_f);
        let cell = |n: u64, p: u64| rows.iter().find(|r| (r.0, r.1) == (n, p)).unwrap();
        assert_eq!(cell(1, 2).2, "partial", "{rows:?}");
        // Match 2: OBS refuses to start with under 50 MiB free; the start times out.
        let refused = recording(&m, 2, 2).expect("pc2's match-2 recording");
        assert!(
            refused["error"]
                .as_str()
                .unwrap()
                .contains("did not report the recording STARTED"),
            "{refused}"
        );
        assert!(refused["path"].is_null(), "{refused}");
        assert_eq!(cell(2, 2).2, "failed", "{rows:?}");
        for n in 1..=2 {
            let r = recording(&m, 1, n).unwrap();
            assert!(r["error"].is_null() && file_len(&r["path"]) > 0, "{r}");
            assert_eq!(cell(n, 1).2, "complete", "{rows:?}");
        }
        // Back to a normal drive for pc2's OBS; the mount is gone.
        stop_obs(&lab, 2);
        drop(tmpfs);
        assert!(!mounted(&rec_dir), "the tmpfs is still mounted");
        assert!(lab.cmd("up").status.success());
        assert_clean(&lab);
    }

    // ---- The lab itself comes down without leftovers.
    let lab_dir = lab.dir.path().join("lab");
    let name = lab.name.clone();
    drop(lab);
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&netns.stdout).contains(&name),
        "namespaces left behind"
    );
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(&name),
        "links left behind"
    );
    let left = support::pids_with_cmdline(&lab_dir.display().to_string());
    assert!(left.is_empty(), "lab processes left running: {left:?}");
    assert_eq!(shaper_rules(), Vec::<String>::new(), "iptables rules left");
}
