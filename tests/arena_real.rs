//! The server layer against the real Debian `openarena-server` (ioq3 + OpenArena 0.8.8) on
//! loopback with unique ports, real bots, and the real game client under Xvfb as a human in its
//! own network namespace. One server is shared by the long test to keep the suite cheap.

#[path = "support/arena.rs"]
mod harness;
mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use harness::{GameClient, Netns};
use oa_run::arena::{
    self, Arena, ArenaError, ArenaEvent, HowEnded, LaunchSpec, MapName, MatchSpec, Phase, RconCmd,
    parse_dumpuser, parse_status,
};
use oa_run::plan::MatchEnd;
use oa_run::scenario::{self, Duration as D, Secret, SecretsMode};
use support::{free_udp_port, missing_program, missing_root, skip, unique_suffix};

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OA_RUN_LOG")
                .unwrap_or_else(|_| "oa_run=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A player name with tricks the engine lets through (no newline: the stock client cannot send
/// one): an `Exit:` and a fake `^7<address> <rate>` status column.
const TRICK_NAME: &str = "^1Exit: Timelimit ^710.0.0.9 99";

fn spec(run_dir: &std::path::Path, listen: SocketAddr, password: &str) -> LaunchSpec {
    LaunchSpec {
        binary: harness::SERVER.into(),
        listen,
        map: MapName::new("oa_dm1").unwrap(),
        rcon_password: Secret::new(password),
        max_clients: 8,
        run_dir: run_dir.to_path_buf(),
        start_timeout: Duration::from_secs(45),
        user: Some("nobody".into()),
    }
}

fn scenario_yaml(address: &str, log: Option<&str>) -> oa_run::scenario::Scenario {
    let server = match log {
        Some(l) => format!(
            "server: {{ address: \"{address}\", rcon_password: \"${{RCON}}\", log: \"{l}\" }}"
        ),
        None => format!(
            "server: {{ launch: {{}}, address: \"{address}\", rcon_password: \"${{RCON}}\" }}"
        ),
    };
    let src = format!(
        r#"
name: arena-test
{server}
players: {{ humans: 1 }}
warmup: {{ duration: 10s }}
matches: {{ timelimit: 20s }}
latency: {{ interface: lo, levels: [0ms], shaper: none }}
obs: {{ password: "${{OBS}}", recording: {{ name: "m{{{{ match }}}}_{{{{ player }}}}" }} }}
"#
    );
    let env: BTreeMap<String, String> = [
        ("RCON".to_string(), RCON_PW.to_string()),
        ("OBS".to_string(), "o".to_string()),
    ]
    .into();
    scenario::load_str("t.yaml", &src, &[], &env, SecretsMode::Required)
        .unwrap_or_else(|e| panic!("test scenario invalid: {e}"))
        .scenario
}

/// `//` would start a comment in an unquoted config line; it proves the quoting.
const RCON_PW: &str = "t3st//pw!";

fn count_joins(events: &mut tokio::sync::broadcast::Receiver<ArenaEvent>) -> (usize, usize) {
    let (mut joins, mut leaves) = (0, 0);
    // A match's kill lines can overflow the channel while nobody reads: skip what was lost
    // (only joins and leaves since the last look matter here) and read on.
    loop {
        match events.try_recv() {
            Ok(ArenaEvent::Joined { .. }) => joins += 1,
            Ok(ArenaEvent::Left { .. }) => leaves += 1,
            Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    (joins, leaves)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_server_rcon_roster_human_matches_and_stop() {
    if let Some(why) = missing_program(harness::SERVER) {
        return skip(&why);
    }
    init_tracing();
    // As output.dir normally is: others may pass through (the run directory itself is not).
    let dir = support::passable_tempdir();
    let run_dir = dir.path().join("run");
    let port = free_udp_port();
    // Listen everywhere so the client in its namespace can reach it; rcon goes to loopback.
    let listen: SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
    let t0 = Instant::now();
    let arena = Arena::launch(spec(&run_dir, listen, RCON_PW))
        .await
        .unwrap();
    let launch_s = t0.elapsed().as_secs_f64();
    eprintln!("server up in {launch_s:.2} s");

    // --- Launch facts.
    let proc = arena.process().unwrap();
    let pid = proc.pid();
    assert_eq!(proc.bound, format!("0.0.0.0:{port}"));
    assert_eq!(
        arena.info.rcon_target,
        format!("127.0.0.1:{port}").parse::<SocketAddr>().unwrap()
    );
    let files = arena.info.files.clone().unwrap();
    assert!(!harness::cmdline(pid).contains(RCON_PW), "password in argv");
    // A cleared environment, no privileges.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let keys: Vec<String> = environ
        .split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            String::from_utf8_lossy(kv)
                .split('=')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        keys.iter()
            // PWD: added by the wrapper script's shell.
            .all(|k| ["HOME", "PATH", "TZ", "PWD"].contains(&k.as_str())),
        "the server inherited {keys:?}"
    );
    assert!(!String::from_utf8_lossy(&environ).contains(RCON_PW));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    if nix::unistd::geteuid().is_root() {
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid_line.split_whitespace().skip(1).all(|u| u != "0"),
            "the server runs as root: {uid_line}"
        );
        let mode = std::fs::metadata(&run_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o710,
            "the run directory lets only the server's group through"
        );
    }
    assert!(harness::cmdline(pid).contains(&format!("net_port {port}")));
    let stderr = std::fs::read_to_string(&files.stderr_log).unwrap();
    assert!(stderr.contains("Opening IP socket"), "stderr captured");
    assert!(!stderr.contains(RCON_PW), "password in the server's output");
    assert!(
        !files.home.join("baseoa/oarun-rcon.cfg").exists(),
        "secrets file left behind"
    );
    let st = arena.state();
    assert_eq!(st.game.phase, Phase::Warmup, "launched in held warmup");
    assert_eq!(st.game.map.as_deref(), Some("oa_dm1"));
    assert_eq!(st.game.serverinfo.get("g_allowVote"), Some("0"));

    // --- rcon round trips.
    let reply = arena.rcon().send(&RconCmd::status()).await.unwrap();
    let status = parse_status(&reply.text);
    assert_eq!(status.format, arena::status::StatusFormat::Current);
    assert_eq!(status.map.as_deref(), Some("oa_dm1"));
    assert!(status.rows.is_empty());
    let t = Instant::now();
    let cvars = arena.rcon().send(&RconCmd::cvarlist()).await.unwrap();
    eprintln!(
        "cvarlist: {} packets, {} bytes, {:?}",
        cvars.packets,
        cvars.text.len(),
        t.elapsed()
    );
    assert!(cvars.packets > 1, "cvarlist should need several datagrams");
    // Reassembly: every cvar line is whole (no header bytes mid-line), and the count matches.
    let lines: Vec<&str> = cvars
        .text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let total: usize = lines
        .iter()
        .find_map(|l| l.strip_suffix(" total cvars"))
        .expect("summary line")
        .trim()
        .parse()
        .unwrap();
    let cvar_lines: Vec<&&str> = lines.iter().filter(|l| l.ends_with('"')).collect();
    assert_eq!(cvar_lines.len(), total, "one line per cvar");
    assert!(
        cvar_lines
            .iter()
            .all(|l| !l.contains('\u{fffd}') && !l.contains("print"))
    );
    assert!(cvars.text.contains("g_logsync \"1\""));
    assert!(
        cvars.text.to_lowercase().contains("rconpassword \"***\""),
        "redacted, not missing"
    );
    assert!(
        !cvars.text.contains(RCON_PW),
        "the password must not come back in a reply"
    );

    let wrong =
        oa_run::arena::Rcon::new(arena.info.rcon_target, Secret::new("wrong-password")).unwrap();
    match wrong.send(&RconCmd::status()).await {
        Err(ArenaError::BadPassword { .. }) => {}
        other => panic!("expected BadPassword, got {other:?}"),
    }
    let e: oa_run::Error = ArenaError::BadPassword {
        server: arena.info.rcon_target,
    }
    .into();
    assert_eq!(e.exit_code(), oa_run::error::exit::UNAVAILABLE);

    // --- Bots join and are classified as bots.
    let mut events = arena.subscribe();
    let bots = arena
        .set_bots(&["Sarge".into(), "major".into()], 2)
        .await
        .unwrap();
    assert_eq!(bots.len(), 2);
    let roster = arena.refresh_roster().await.unwrap();
    for slot in &bots {
        let p = roster.get(*slot).unwrap();
        assert!(p.is_bot(), "slot {slot} should be a bot: {p:?}");
        assert_eq!(p.skill, Some(2.0));
    }
    assert_eq!(roster.get(bots[1]).unwrap().name, "Major");
    assert_eq!(count_joins(&mut events), (2, 0));
    let reply = arena.rcon().send(&RconCmd::status()).await.unwrap();
    assert_eq!(parse_status(&reply.text).bots().count(), 2);

    // --- A real human in its own namespace.
    let human = if let Some(why) = missing_root()
        .or_else(|| missing_program(harness::CLIENT))
        .or_else(|| missing_program("xvfb-run"))
    {
        skip(&format!("human part: {why}"));
        None
    } else {
        let ns = Netns::create().expect("network namespace");
        let client = GameClient::spawn(
            &dir.path().join("client1"),
            Some(&ns.name),
            &format!("{}:{port}", ns.server_ip),
            TRICK_NAME,
        )
        .expect("spawn the game client");
        let t = Instant::now();
        let humans = match arena.wait_for_humans(1, Duration::from_secs(90)).await {
            Ok(h) => h,
            Err(e) => panic!(
                "the client did not join: {e}\nclient log:\n{}",
                client.log_tail()
            ),
        };
        eprintln!(
            "human joined and reported in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let h = humans[0].clone();
        assert!(h.is_human());
        assert_eq!(
            h.ip,
            Some(IpAddr::V4(ns.client_ip)),
            "the namespace's address, not loopback"
        );
        // The name carries a fake `^7<address> <rate>` and an `Exit:`: the status row still
        // gives the namespace's address, and the log no exit.
        assert_eq!(h.name_raw, TRICK_NAME);
        assert_eq!(h.name, oa_run::arena::roster::display_clean(TRICK_NAME));
        assert_eq!(
            Some(h.file_name.clone()),
            oa_run::plan::names::file_safe(TRICK_NAME)
        );
        assert_eq!(arena.state().rejected, 0, "nothing real was refused");
        assert!(arena.state().game.exit.is_none(), "a name is not an Exit");
        let guid = h.guid.clone().expect("a human has a GUID");
        assert!(
            guid.len() == 32 && guid.chars().all(|c| c.is_ascii_hexdigit()),
            "{guid}"
        );
        let dump = arena
            .rcon()
            .send(&RconCmd::dumpuser(h.slot).unwrap())
            .await
            .unwrap();
        assert_eq!(
            parse_dumpuser(&dump.text).get("ip").map(String::as_str),
            Some(ns.client_ip.to_string().as_str())
        );
        assert_eq!(
            arena.roster().bots().count(),
            2,
            "bots still classified as bots"
        );
        Some((ns, client, h))
    };
    let _ = count_joins(&mut events);

    // --- A short runner-ended match (the scenario's duration is not whole minutes), on another
    // map: `map` reloads it for everyone, and every client logs its connect lines again.
    let t = Instant::now();
    let out = arena
        .play_match(&MatchSpec {
            map: Some("oa_dm2".into()),
            end: MatchEnd::Runner {
                after: D::from_secs(4),
            },
            overtime: Duration::from_secs(10),
            fraglimit: None,
        })
        .await
        .unwrap();
    eprintln!(
        "runner-ended match: {out:?} (call took {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(out.how_ended, HowEnded::RunnerDuration);
    assert!(
        (3.95..5.0).contains(&out.duration_s),
        "duration {}",
        out.duration_s
    );
    assert!(out.ended_at > out.started_at);
    assert_eq!(out.map.as_deref(), Some("oa_dm2"));
    let st = arena.state();
    assert_eq!(
        st.game.phase,
        Phase::Warmup,
        "held in warmup after the match"
    );
    assert_eq!(st.roster.bots().count(), 2);
    assert_eq!(
        count_joins(&mut events),
        (0, 0),
        "the reconnect lines after restarts are not new players"
    );

    // --- A match ended by the server's own Exit (fraglimit 1; timelimit 1 min as a backstop).
    let frag_spec = MatchSpec {
        // The current map: restarted with map_restart, no reload.
        map: Some("oa_dm2".into()),
        end: MatchEnd::ServerTimelimit { minutes: 1 },
        overtime: Duration::from_secs(20),
        fraglimit: Some(1),
    };
    arena.prepare_match(&frag_spec).await.unwrap();
    assert_eq!(
        arena.state().game.phase,
        Phase::Warmup,
        "preparing does not start anything"
    );
    let t = Instant::now();
    let live = arena.start_match(&frag_spec).await.unwrap();
    eprintln!(
        "prepared match live {:.2} s after start_match was called",
        live.started
            .instant
            .saturating_duration_since(t)
            .as_secs_f64()
    );
    let out = arena.await_end(&live).await.unwrap();
    eprintln!(
        "server-ended match: {out:?} (call took {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    // Bots almost always frag within seconds (the idle human is an easy target); should the
    // game go otherwise, each other real ending is checked for what it must look like.
    match &out.how_ended {
        HowEnded::Fraglimit => {
            assert!(out.scores.iter().any(|s| s.score >= 1), "{out:?}");
            assert!(out.duration_s < 61.0);
        }
        HowEnded::Timelimit => assert!((59.5..62.0).contains(&out.duration_s), "{out:?}"),
        HowEnded::OvertimeExpired => {
            assert!(
                out.sudden_death && (79.5..83.0).contains(&out.duration_s),
                "{out:?}"
            )
        }
        other => panic!("unexpected end {other:?}: {out:?}"),
    }
    if out.how_ended != HowEnded::OvertimeExpired {
        assert!(!out.scores.is_empty(), "score lines after Exit");
        assert!(out.exit_level_time_s.is_some());
        assert_eq!(arena.state().game.phase, Phase::Intermission);
    }
    // Intermission does not end while an idle human is connected: the runner moves on.
    let warm = arena.hold().await.unwrap();
    assert!(warm.at >= out.ended_at);
    assert_eq!(arena.state().game.phase, Phase::Warmup);

    // --- Kick by slot.
    if let Some((_, _, h)) = &human {
        arena.kick(h.slot).await.unwrap();
        let st = arena.state();
        assert!(st.roster.get(h.slot).is_none());
        assert_eq!(st.roster.humans().count(), 0);
        // The roster's new state is published a moment before its events: wait (bounded) for
        // the leave rather than race the publishing task.
        let mut leaves = count_joins(&mut events).1;
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while leaves == 0 {
            match tokio::time::timeout_at(until, events.recv()).await {
                Ok(Ok(ArenaEvent::Left { .. })) => leaves += 1,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        leaves += count_joins(&mut events).1;
        assert_eq!(leaves, 1, "the kicked human is reported as left");
    }
    arena.remove_bot(bots[1]).await.unwrap();
    assert_eq!(arena.roster().bots().count(), 1);
    assert!(matches!(
        arena.kick(bots[1]).await,
        Err(ArenaError::Slot { .. })
    ));

    // --- Attach to the same server; `oa-run check` rows.
    let attached = Arena::attach(listen, Secret::new(RCON_PW), &files.games_log)
        .await
        .unwrap();
    let r = attached.roster();
    assert_eq!(
        r.bots().count(),
        1,
        "attach learns who is there from status: {r:?}"
    );
    assert_eq!(
        r.humans().count(),
        0,
        "a just-kicked client (zombie slot) is not a player: {r:?}"
    );
    assert_eq!(r.get(bots[0]).unwrap().name, "Sarge");
    assert!(
        attached.stop().await.is_none(),
        "an attached server is not stopped"
    );
    let log_path = files.games_log.display().to_string();
    let rows = arena::check_rows(&scenario_yaml(&format!("0.0.0.0:{port}"), Some(&log_path))).await;
    eprintln!("{}", oa_run::check::table(&rows));
    assert!(rows.iter().all(|r| r.ok), "{rows:?}");
    assert!(rows[0].details.contains(&("map".into(), "oa_dm2".into())));
    assert!(rows[0].details.contains(&("bots".into(), "1".into())));
    assert!(rows[0].details.contains(&("humans".into(), "0".into())));
    let rows = arena::check_rows(&scenario_yaml(&format!("0.0.0.0:{port}"), None)).await;
    assert!(
        !rows[0].ok,
        "launch check must notice the port is taken: {rows:?}"
    );

    // --- Stop: graceful, and nothing left running.
    let run_dir_s = run_dir.display().to_string();
    let report = arena.stop().await.unwrap();
    eprintln!("stop: {report:?}");
    assert!(report.graceful && report.shutdown_logged, "{report:?}");
    assert!(!harness::alive(pid));
    if let Some((ns, client, _)) = human {
        let pgid = client.pgid;
        let ns_name = ns.name.clone();
        drop(client);
        let left = harness::any_in_group(pgid);
        assert!(
            left.is_empty(),
            "client processes (or unreaped zombies) left: {left:?}"
        );
        drop(ns);
        assert!(
            harness::processes_mentioning(&ns_name).is_empty(),
            "processes left in the namespace"
        );
        assert!(
            !output_contains("ip", &["netns", "list"], &ns_name),
            "namespace left"
        );
    }
    let left = harness::processes_mentioning(&run_dir_s);
    assert!(left.is_empty(), "processes left: {left:?}");
    let left = harness::processes_mentioning(&dir.path().display().to_string());
    assert!(left.is_empty(), "processes left: {left:?}");
    eprintln!("whole test: {:.1} s", t0.elapsed().as_secs_f64());
}

fn output_contains(cmd: &str, args: &[&str], needle: &str) -> bool {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(needle))
        .unwrap_or(false)
}

#[tokio::test]
async fn a_busy_port_is_an_error_and_a_dropped_handle_stops_the_server() {
    if let Some(why) = missing_program(harness::SERVER) {
        return skip(&why);
    }
    init_tracing();
    let dir = support::passable_tempdir();
    // Another socket holds the port: ioq3 would silently take port+1.
    let blocker = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = blocker.local_addr().unwrap().port();
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let moved_dir = dir.path().join("moved");
    match Arena::launch(spec(&moved_dir, listen, "pw")).await {
        Err(ArenaError::PortMoved { asked, bound }) => {
            assert_eq!(asked, port);
            assert!(!bound.ends_with(&format!(":{port}")), "{bound}");
        }
        other => panic!("expected PortMoved, got {other:?}"),
    }
    let needle = moved_dir.display().to_string();
    assert!(
        harness::eventually(Duration::from_secs(5), || harness::processes_mentioning(
            &needle
        )
        .is_empty()),
        "the moved server must be stopped"
    );
    drop(blocker);

    // A map the server does not have fails at once, and the server is stopped.
    let nomap_dir = dir.path().join("nomap");
    let mut s = spec(
        &nomap_dir,
        format!("127.0.0.1:{}", free_udp_port()).parse().unwrap(),
        "pw",
    );
    s.map = MapName::new("no_such_map").unwrap();
    let t = Instant::now();
    match Arena::launch(s).await {
        Err(ArenaError::CommandFailed { reply, .. }) => {
            assert!(reply.contains("no_such_map"), "{reply}")
        }
        other => panic!("expected CommandFailed for a missing map, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(10));
    let needle = nomap_dir.display().to_string();
    assert!(harness::processes_mentioning(&needle).is_empty());

    // Dropping the handle without stop() still ends the server.
    let port = free_udp_port();
    let run_dir = dir.path().join("dropped");
    let pw = format!("pw-{}", unique_suffix());
    let arena = Arena::launch(spec(
        &run_dir,
        format!("127.0.0.1:{port}").parse().unwrap(),
        &pw,
    ))
    .await
    .unwrap();
    let pid = arena.process().unwrap().pid();
    assert!(harness::alive(pid));
    drop(arena);
    assert!(!harness::alive(pid), "server still running after drop");
    let needle = run_dir.display().to_string();
    assert!(harness::processes_mentioning(&needle).is_empty());
}
