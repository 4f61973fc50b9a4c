//! The command line as a user meets it: exit codes, stdout vs stderr, dry run, --set, secrets.

mod support;

use std::path::Path;
use std::process::{Command, Output};

const RCON: &str = "s3cr3t-rcon-pw";
const OBS: &str = "s3cr3t-obs-pw";

fn oa(args: &[&str]) -> Output {
    oa_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

fn oa_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(support::oa_run())
        .args(args)
        .current_dir(dir)
        .env("OA_RCON_PASSWORD", RCON)
        .env("OBS_PASSWORD", OBS)
        .env_remove("OA_RUN_LOG")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const STUDY: &str = "scenarios/latency-study.yaml";

#[test]
fn dry_run_shows_the_nfqueue_rules() {
    let o = oa(&[STUDY, "--dry-run", "--set", "latency.shaper=nfqueue"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("oa-run's own nfqueue shaper on enp1s0, game traffic only"),
        "{out}"
    );
    assert!(
        out.contains("$ iptables -w 5 -t mangle -N OA_RUN_SHAPE_OUT"),
        "{out}"
    );
    assert!(out.contains("$ iptables -w 5 -t mangle -A OA_RUN_SHAPE_OUT -d <ip-of-player2>/32 -p udp -m udp --sport 27960 -j NFQUEUE --queue-num 20289 --queue-bypass"), "{out}");
    assert!(
        out.contains("$ iptables -w 5 -t mangle -I POSTROUTING 1 -o enp1s0 -j OA_RUN_SHAPE_OUT")
    );
    assert!(out.contains("$ iptables -w 5 -t mangle -X OA_RUN_SHAPE_OUT"));
    // A match's delays are an in-memory switch: no command per match.
    assert!(!out.contains("$ tc "), "{out}");
}

#[test]
fn dry_run_prints_steps_matrix_names_and_summary() {
    // In order: player i on row i, so the lines below are known; `auto` would pick by this
    // machine's kernel, and the tc commands are the subject here.
    let o = oa(&[
        STUDY,
        "--dry-run",
        "--set",
        "design.assign=in_order",
        "--set",
        "latency.shaper=tc",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("7 matches × 3 players = 21 recordings, about"),
        "{out}"
    );
    assert!(out.contains(
        "match 0 (practice, no added latency, not analysed): play 1m (server timelimit)"
    ));
    assert!(out.contains("match 0: set latency <player1>=0ms <player2>=0ms <player3>=0ms"));
    assert!(out.contains("latency-study_<started>_m0_<player1>_0ms"));
    assert!(out.contains("players to rows (in order): <player1>→row 1, <player2>→row 2"));
    assert!(out.contains("launch server /usr/games/openarena-server on 0.0.0.0:27960, map oa_dm1"));
    assert!(out.contains("wait for 3 humans (up to 30m)"));
    assert!(out.contains("match 1: set latency <player1>=100ms <player2>=200ms <player3>=300ms"));
    assert!(out.contains("latency-study_<started>_m6_<player3>_300ms"));
    assert!(out.contains("This was a dry run"));
    // The exact tc commands: the tree once, then only the leaves change per match.
    assert!(out.contains("$ tc filter add dev enp1s0 parent 4f41: protocol ip prio 1 u32 match ip dst <ip-of-player2>/32 match ip protocol 17 0xff match ip sport 27960 0xffff flowid 4f41:102"));
    assert!(out.contains(
        "$ tc qdisc change dev enp1s0 parent 4f41:103 handle 103: netem delay 300ms limit 10000"
    ));
    // Practice match included.
    assert_eq!(out.matches("$ tc qdisc change").count(), 7 * 3);
    assert!(out.contains("$ tc qdisc del dev enp1s0 root"));
    assert!(!out.contains("iptables"), "tc only: {out}");
    // The questionnaire after every match, the practice match too.
    assert!(
        out.contains(
            "match 0: questionnaire (3 items: quality, noticed_lag, comment) on each present \
         player's page; wait until all have answered, at most 90s"
        ),
        "{out}"
    );
    // One line per step: 7 before the matches, 5 per match (practice too), teardown.
    let steps = out
        .lines()
        .filter(|l| {
            l.trim_start()
                .split_once(". ")
                .is_some_and(|(n, _)| n.parse::<u32>().is_ok())
        })
        .count();
    assert_eq!(steps, 7 + 5 * 7 + 1);
    assert!(
        !out.contains('\u{1b}') && !stderr(&o).contains('\u{1b}'),
        "no colour codes off a terminal"
    );
}

#[test]
fn dry_run_json_is_the_plan() {
    let o = oa(&[STUDY, "--dry-run", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let steps = plan["steps"].as_array().unwrap();
    assert_eq!(steps.first().unwrap()["step"], "preflight");
    assert_eq!(steps.last().unwrap()["step"], "teardown");
    assert_eq!(
        steps.iter().filter(|s| s["step"] == "play_match").count(),
        7
    );
    let all = plan["matches"].as_array().unwrap();
    assert_eq!(all.len(), 7);
    assert_eq!(all[0]["practice"], true);
    // The design's balance, after the random assignment, without the practice match.
    let matches: Vec<&serde_json::Value> = all.iter().filter(|m| m["practice"].is_null()).collect();
    assert_eq!(matches.len(), 6);
    assert!(plan["design"]["seed"].as_u64().is_some());
    assert_eq!(plan["design"]["seed_source"], "drawn");
    // Every player meets every level exactly twice (3 levels × 2 repeats).
    for p in 0..3 {
        let mut seen: Vec<u64> = matches
            .iter()
            .map(|m| m["latency_ms"][p].as_u64().unwrap())
            .collect();
        seen.sort();
        assert_eq!(seen, vec![100, 100, 200, 200, 300, 300], "player {p}");
    }
    // Every match has every level once.
    for m in &matches {
        let mut l: Vec<u64> = m["latency_ms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        l.sort();
        assert_eq!(l, vec![100, 200, 300]);
    }
    assert_eq!(plan["scenario"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(plan["estimate"]["recordings"], 21);
}

#[test]
fn set_overrides_are_validated_and_shown() {
    let o = oa(&[
        STUDY,
        "--dry-run",
        "--format",
        "json",
        "--set",
        "matches.repeats=1",
        "--set",
        "latency.order=cyclic",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        plan["matches"].as_array().unwrap().len(),
        1 + 3,
        "practice + 3"
    );
    assert_eq!(plan["latency"]["order"], "cyclic");
    assert_eq!(
        plan["scenario"]["overrides"],
        serde_json::json!(["matches.repeats=1", "latency.order=cyclic"])
    );

    let o = oa(&[STUDY, "--dry-run", "--set", "matches.repeats=1"]);
    assert!(stdout(&o).contains("Overrides: matches.repeats=1"));

    let o = oa(&[STUDY, "--dry-run", "--set", "matches.repeats=0"]);
    assert_eq!(o.status.code(), Some(65));
    assert!(
        stderr(&o).contains(
            "--set matches.repeats=0: error: matches.repeats: found `0`, expected at least 1"
        ),
        "{}",
        stderr(&o)
    );
    let o = oa(&[STUDY, "--dry-run", "--set", "matches.repeets=1"]);
    assert_eq!(o.status.code(), Some(65));
    assert!(
        stderr(&o).contains("did you mean `repeats`?"),
        "{}",
        stderr(&o)
    );

    let o = oa(&[STUDY, "--dry-run", "--set", "no-equals-sign"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn exit_codes_for_bad_input() {
    let o = oa(&["does/not/exist.yaml", "--dry-run"]);
    assert_eq!(o.status.code(), Some(66));
    assert!(stderr(&o).contains("does/not/exist.yaml: no such file"));

    let o = oa(&[
        "tests/fixtures/invalid/21-several-errors-at-once.yaml",
        "--dry-run",
    ]);
    assert_eq!(o.status.code(), Some(65));
    let err = stderr(&o);
    assert_eq!(
        err.matches(": error: ").count(),
        4,
        "all errors at once:\n{err}"
    );
    assert!(err.contains("nothing was started"));
    assert!(stdout(&o).is_empty(), "no data on stdout when invalid");

    let o = oa(&[]);
    assert_eq!(o.status.code(), Some(2));
    let o = oa(&["--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
    let o = oa(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("Exit codes:") && stdout(&o).contains("65"));
}

#[test]
fn secrets_never_appear() {
    for args in [
        vec![STUDY, "--dry-run"],
        vec![STUDY, "--dry-run", "--format", "json"],
        vec!["validate", STUDY],
        vec![
            STUDY,
            "--dry-run",
            "--set",
            "server.rcon_password=has space",
            "-vv",
        ],
    ] {
        let o = oa(&args);
        let all = format!("{}{}", stdout(&o), stderr(&o));
        assert!(
            !all.contains(RCON) && !all.contains(OBS),
            "{args:?} leaked a secret:\n{all}"
        );
    }
    let o = oa(&[
        STUDY,
        "--dry-run",
        "--set",
        "server.rcon_password=has space",
    ]);
    assert!(!stderr(&o).contains("has space"), "{}", stderr(&o));
}

#[test]
fn missing_secret_is_a_warning_in_dry_run_only() {
    let o = Command::new(support::oa_run())
        .args([STUDY, "--dry-run"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("OA_RCON_PASSWORD")
        .env_remove("OBS_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(stderr(&o).contains(
        "warning: server.rcon_password: environment variable `OA_RCON_PASSWORD` is not set"
    ));
    let o = Command::new(support::oa_run())
        .args([STUDY])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("OA_RCON_PASSWORD")
        .env_remove("OBS_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(65),
        "a real run refuses: {}",
        stderr(&o)
    );
}

#[test]
fn dry_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scenarios")).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(STUDY);
    std::fs::copy(&src, dir.path().join(STUDY)).unwrap();
    let before: Vec<_> = walk(dir.path());
    let o = oa_in(dir.path(), &[STUDY, "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(walk(dir.path()), before, "the dry run created files");
}

fn walk(p: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        v.push(e.path().display().to_string());
        if e.file_type().unwrap().is_dir() {
            v.extend(walk(&e.path()));
        }
    }
    v.sort();
    v
}

#[test]
fn validate_reports_each_file() {
    let o = oa(&[
        "validate",
        STUDY,
        "tests/fixtures/invalid/01-unknown-key-typo.yaml",
    ]);
    assert_eq!(o.status.code(), Some(65));
    assert!(
        stdout(&o)
            .contains("scenarios/latency-study.yaml: ok (7 matches × 3 players = 21 recordings")
    );
    assert!(stderr(&o).contains("01-unknown-key-typo.yaml:17:3: error: matches.repeets"));
}

#[test]
fn every_committed_scenario_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let o = oa(&["validate", p.to_str().unwrap()]);
            assert_eq!(o.status.code(), Some(0), "{}: {}", p.display(), stderr(&o));
            n += 1;
        }
    }
    assert!(n >= 1);
}

#[test]
fn live_view_address_is_checked_before_anything_starts() {
    // Not loopback and no token: a scenario error, even for a dry run.
    let o = oa(&[STUDY, "--dry-run", "--live", "0.0.0.0:8080"]);
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("live.listen: 0.0.0.0:8080 is not a loopback address"),
        "{}",
        stderr(&o)
    );
    // With a token from the environment it is accepted, and the token is never shown.
    let token = "l1ve-t0ken-value";
    let o = Command::new(support::oa_run())
        .args([STUDY, "--dry-run", "--live", "0.0.0.0:8080"])
        .args(["--set", "live.token=${OA_RUN_LIVE_TOKEN}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("OA_RCON_PASSWORD", RCON)
        .env("OBS_PASSWORD", OBS)
        .env("OA_RUN_LIVE_TOKEN", token)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stdout(&o).contains(token) && !stderr(&o).contains(token));

    // A busy port stops the run before anything starts: exit 69, no run directory.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let out_dir = format!("output.dir={}", runs.display());
    let study = Path::new(env!("CARGO_MANIFEST_DIR")).join(STUDY);
    let o = oa_in(
        tmp.path(),
        &[study.to_str().unwrap(), "--live", &addr, "--set", &out_dir],
    );
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("live view: cannot listen on"),
        "{}",
        stderr(&o)
    );
    assert!(!runs.exists(), "nothing was started");
}

#[test]
fn completions_for_every_shell_and_a_man_page() {
    for (shell, marker) in [
        ("bash", "complete -F _oa__run"),
        ("zsh", "#compdef oa-run"),
        ("fish", "complete -c oa-run"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let o = oa(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0), "{shell}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains(marker), "{shell}: no `{marker}`");
        // Subcommands and their flags are completed.
        assert!(
            out.contains("report") && (out.contains("--format") || out.contains("-l format")),
            "{shell}"
        );
    }
    let o = oa(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));

    let o = oa(&["man"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let man = stdout(&o);
    assert!(
        man.starts_with(".ie") || man.contains(".TH oa-run"),
        "{man}"
    );
    assert!(man.contains(".TH oa-run 1"));
    assert!(man.contains("report") && man.contains("completions"));
    assert!(man.contains("Exit codes"));
}

#[test]
fn bash_completion_script_loads_in_bash() {
    if let Some(why) = support::missing_program("bash") {
        return support::skip(&why);
    }
    let script = stdout(&oa(&["completions", "bash"]));
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("oa-run.bash");
    std::fs::write(&f, script).unwrap();
    // Source it and ask for the completions of `oa-run rep`.
    let o = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && COMP_WORDS=(oa-run rep) COMP_CWORD=1 && _oa__run oa-run rep oa-run && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            f.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "report");
}

#[test]
fn validate_warns_when_names_are_not_run_unique() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(STUDY))
        .unwrap()
        .replace("{{ scenario }}_{{ started }}_m", "{{ scenario }}_m");
    let f = dir.path().join("same-names.yaml");
    std::fs::write(&f, src).unwrap();
    let o = oa(&["validate", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning: obs.recording.name: has no run-unique part"),
        "{}",
        stderr(&o)
    );
    // The committed scenarios use {{ started }}: no such warning.
    let o = oa(&["validate", STUDY]);
    assert!(!stderr(&o).contains("run-unique"), "{}", stderr(&o));
}

/// `-v`/`-q` are global: they work before a subcommand as after it (`oa-run -v check …`
/// used to be refused), while a run's own arguments still do not mix with a subcommand.
#[test]
fn global_flags_work_before_the_subcommand() {
    for args in [
        &["-v", "validate", STUDY][..],
        &["--quiet", "validate", STUDY],
        &["validate", "-v", STUDY],
        &["-vv", "schema"],
    ] {
        let o = oa(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(!stdout(&o).is_empty(), "{args:?}");
    }
    let o = oa(&["-v", "validate", STUDY]);
    assert!(stdout(&o).contains(": ok ("), "{}", stdout(&o));
    for args in [
        &["--dry-run", "validate", STUDY][..],
        &["--set", "matches.repeats=1", "schema"],
    ] {
        let o = oa(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("without a subcommand"),
            "{}",
            stderr(&o)
        );
    }
}
