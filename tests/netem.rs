//! Latency shaping against the real kernel: golden command lists, the same tree (pfifo leaves)
//! built in throwaway network namespaces with per-class counters checked, teardown restoring
//! the interface, leftovers, refusals, `oa-run net-reset`, and — where the kernel has
//! sch_netem — measured round trips.

mod netem_lab;
mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use netem_lab::{Lab, OTHER_IP, SERVER_IF, SERVER_IP, player_ip};
use oa_run::netem::commands::{self, DEFAULT_CLASS, LeafKind, Target, TreeSpec, class_id};
use oa_run::netem::verify::DeviceState;
use oa_run::netem::{
    LatencyShaper, NetemError, Probe, Recorder, SetupOptions, SystemRunner, ifb_name,
};
use oa_run::scenario::{SecretsMode, Split, load_str};

// ---------------------------------------------------------------------------------------------
// Golden command lists

fn golden_scenario(humans: u32, split: &str) -> oa_run::scenario::LoadedScenario {
    let y = format!(
        "name: golden\nserver: {{launch: {{}}, address: 0.0.0.0:27960, rcon_password: rc}}\n\
         players: {{humans: {humans}}}\nwarmup: {{duration: 10s}}\nmatches: {{timelimit: 1m}}\n\
         latency: {{interface: enp1s0, levels: [0ms, 75ms, 150ms, 225ms], split: {split}}}\n\
         obs: {{password: pw, recording: {{}}}}\n"
    );
    load_str(
        "golden.yaml",
        &y,
        &[],
        &BTreeMap::new(),
        SecretsMode::Optional,
    )
    .unwrap()
}

/// Player `i` of the golden scenarios: 10.0.<i / 200>.<10 + i % 200>.
fn golden_ip(i: u32) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::new(
        10,
        0,
        (i / 200) as u8,
        (10 + i % 200) as u8,
    ))
}

/// The whole command story of a run, as the dry run shows it: setup, each match, teardown.
fn script(humans: u32, split: &str) -> String {
    let loaded = golden_scenario(humans, split);
    let plan = oa_run::plan::compile(&loaded).unwrap();
    let s = &loaded.scenario;
    let ips: Vec<Option<IpAddr>> = (1..=humans).map(|i| Some(golden_ip(i))).collect();
    let mut out = String::from("# setup\n");
    for l in oa_run::netem::describe_setup_commands(s, &ips) {
        out.push_str(&l);
        out.push('\n');
    }
    for m in &plan.matches {
        out.push_str(&format!("# match {}\n", m.number));
        for l in oa_run::netem::describe_match_commands(s, &m.latency_ms) {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out.push_str("# teardown\n");
    for l in oa_run::netem::describe_teardown_commands(s) {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

fn assert_golden(name: &str, got: &str) {
    support::assert_golden("netem", name, got);
}

#[test]
fn golden_commands() {
    for n in [1, 3, 16, 64] {
        for split in ["egress", "symmetric"] {
            assert_golden(&format!("{n}p-{split}.txt"), &script(n, split));
        }
    }
}

#[test]
fn golden_shape_holds_for_every_size() {
    // Independent of the files: count what each script must contain.
    for n in [1u32, 3, 16, 64] {
        for (split, sym) in [("egress", false), ("symmetric", true)] {
            let s = script(n, split);
            let count = |pat: &str| s.lines().filter(|l| l.contains(pat)).count() as u32;
            let devs = if sym { 2 } else { 1 };
            assert_eq!(count("root handle 4f41: htb default 1"), devs);
            assert_eq!(count("classid 4f41:1 htb"), devs);
            let leaves = s
                .lines()
                .filter(|l| {
                    l.starts_with("tc qdisc add ") && l.ends_with(" netem delay 0ms limit 10000")
                })
                .count() as u32;
            assert_eq!(leaves, n * devs);
            assert_eq!(count("u32 match ip dst"), n);
            assert_eq!(count("u32 match ip src"), if sym { 2 * n } else { 0 });
            assert_eq!(
                count("action mirred egress redirect"),
                if sym { n } else { 0 }
            );
            // 4 matches, one change per player and device; nothing but leaves changes.
            assert_eq!(count("qdisc change"), 4 * n * devs);
            let between: Vec<&str> = s
                .lines()
                .skip_while(|l| *l != "# match 1")
                .take_while(|l| *l != "# teardown")
                .filter(|l| !l.starts_with('#'))
                .collect();
            assert!(between.iter().all(|l| l.starts_with("tc qdisc change ")));
            for i in 1..=n {
                let ip = golden_ip(i);
                assert_eq!(
                    count(&format!("match ip dst {ip}/32 flowid {}", class_id(i))),
                    1,
                    "n={n} player {i}"
                );
            }
        }
    }
    // symmetric halves: 75 ms round trip = 37.5 ms each way.
    assert!(script(3, "symmetric").contains("netem delay 37500us limit 10000"));
}

// ---------------------------------------------------------------------------------------------
// Real kernel, throwaway namespaces

fn lab_or_skip(tag: &str, n: u32) -> Option<Lab> {
    if let Some(why) = support::missing_root()
        .or_else(|| support::missing_program("ip"))
        .or_else(|| support::missing_program("tc"))
    {
        support::skip(&why);
        return None;
    }
    Some(Lab::new(tag, &support::unique_suffix(), n).expect("create the namespace lab"))
}

fn pfifo() -> SetupOptions {
    SetupOptions {
        force: false,
        leaf: LeafKind::Pfifo,
    }
}

fn class_packets(devs: &[DeviceState], dev: &str, class: &str) -> u64 {
    devs.iter()
        .find(|d| d.device == dev)
        .and_then(|d| d.class(class))
        .map(|c| c.packets)
        .unwrap_or_else(|| panic!("no class {class} on {dev}"))
}

/// Send `counts[k]` datagrams from `from` to each `to[k]`; return how many each receiver got.
fn send_and_count(
    from_ns: &netem_lab::Netns,
    from: Vec<IpAddr>,
    to_ns: &netem_lab::Netns,
    to: Vec<SocketAddr>,
    counts: &[u64],
) -> Vec<u64> {
    let socks = to
        .iter()
        .map(|a| netem_lab::udp_in(to_ns, *a).unwrap())
        .collect();
    let sink = netem_lab::Sink::new(socks);
    for ((src, dst), n) in from.iter().zip(&to).zip(counts) {
        let s = netem_lab::udp_in(from_ns, SocketAddr::new(*src, 0)).unwrap();
        for _ in 0..*n {
            s.send_to(b"oa-run latency test", dst).unwrap();
            // Spaced out so nothing is lost to a full neighbour queue while ARP resolves.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let got = sink.finish();
    to.iter()
        .map(|a| got.iter().find(|(b, _)| b == a).map(|(_, n)| *n).unwrap())
        .collect()
}

#[test]
fn egress_tree_puts_each_player_in_its_own_class_and_teardown_restores() {
    let Some(lab) = lab_or_skip("e", 2) else {
        return;
    };
    let before = lab.server_qdiscs();
    let rec = Recorder::wrap(SystemRunner::in_netns(&lab.server.name));
    let lat = netem_lab::latency(Split::Egress, &[0, 100]);
    let players = netem_lab::players(2);
    let mut sh = LatencyShaper::setup(&lat, &players, pfifo(), Box::new(rec.clone())).unwrap();

    // Exactly the generated commands ran.
    let spec = TreeSpec::new(&lat, LeafKind::Pfifo);
    let targets: Vec<Target> = players.iter().map(Target::from).collect();
    assert_eq!(
        rec.changes(),
        commands::lines(&commands::build_commands(&spec, &targets))
    );

    let m = sh.apply_match(1, &[100, 0]).unwrap();
    assert!(m.applied);
    let p1 = m.players[0].egress.as_ref().unwrap();
    assert_eq!(
        (p1.class_id.as_str(), p1.planned_delay_ms, p1.limit),
        ("4f41:101", 100.0, 1000)
    );
    assert_eq!(p1.delay_ms, None, "pfifo leaves carry no delay");
    assert!(m.players[0].ingress.is_none());
    assert!(
        serde_json::to_string(&m)
            .unwrap()
            .contains("\"class_id\":\"4f41:102\"")
    );

    let before_counts = sh.read_back().unwrap();
    let port = support::free_udp_port();
    let dst = |ip| SocketAddr::new(IpAddr::V4(ip), port);
    let got = send_and_count(
        &lab.server,
        vec![IpAddr::V4(SERVER_IP); 3],
        &lab.players,
        vec![dst(player_ip(1)), dst(player_ip(2)), dst(OTHER_IP)],
        &[7, 5, 9],
    );
    assert_eq!(got, [7, 5, 9], "every datagram arrives");
    let after = sh.read_back().unwrap();
    let delta =
        |c: &str| class_packets(&after, SERVER_IF, c) - class_packets(&before_counts, SERVER_IF, c);
    assert_eq!(
        delta("4f41:101"),
        7,
        "player 1's packets in player 1's class"
    );
    assert_eq!(
        delta("4f41:102"),
        5,
        "player 2's packets in player 2's class"
    );
    // Other traffic (the 9 datagrams plus ARP) goes to the unshaped default class.
    assert!(
        delta(DEFAULT_CLASS) >= 9,
        "default class got {}",
        delta(DEFAULT_CLASS)
    );

    let report = sh.teardown().unwrap();
    assert!(report.restored);
    assert_eq!(report.commands, ["tc qdisc del dev oasrv0 root"]);
    assert_eq!(lab.server_qdiscs(), before, "interface as found");
    // Idempotent.
    assert!(sh.teardown().unwrap().commands.is_empty());
}

#[test]
fn symmetric_tree_redirects_player_sources_through_the_ifb() {
    let Some(lab) = lab_or_skip("y", 2) else {
        return;
    };
    let before = lab.server_qdiscs();
    let ifb = ifb_name(SERVER_IF);
    let lat = netem_lab::latency(Split::Symmetric, &[0, 100]);
    let mut sh = LatencyShaper::setup(
        &lat,
        &netem_lab::players(2),
        pfifo(),
        Box::new(SystemRunner::in_netns(&lab.server.name)),
    )
    .unwrap();
    assert!(lab.server_has_link(&ifb));
    let m = sh.apply_match(1, &[101, 0]).unwrap();
    let ing = m.players[0].ingress.as_ref().unwrap();
    assert_eq!(
        (ing.device.as_str(), ing.planned_delay_ms),
        (ifb.as_str(), 50.5)
    );
    assert_eq!(m.players[0].egress.as_ref().unwrap().planned_delay_ms, 50.5);
    assert_eq!(m.ifb.as_deref(), Some(ifb.as_str()));

    let before_counts = sh.read_back().unwrap();
    let port = support::free_udp_port();
    let server = SocketAddr::new(IpAddr::V4(SERVER_IP), port);
    // From each player address (and the other one) to the server.
    let sink_sock = netem_lab::udp_in(&lab.server, server).unwrap();
    let sink = netem_lab::Sink::new(vec![sink_sock]);
    for (src, n) in [
        (IpAddr::V4(player_ip(1)), 6u64),
        (IpAddr::V4(player_ip(2)), 4),
        (IpAddr::V4(OTHER_IP), 8),
    ] {
        let s = netem_lab::udp_in(&lab.players, SocketAddr::new(src, 0)).unwrap();
        for _ in 0..n {
            s.send_to(b"from a player", server).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        sink.finish()[0].1,
        18,
        "every datagram arrives through the ifb"
    );
    let after = sh.read_back().unwrap();
    let delta =
        |dev: &str, c: &str| class_packets(&after, dev, c) - class_packets(&before_counts, dev, c);
    assert_eq!(
        delta(&ifb, "4f41:101"),
        6,
        "player 1's ingress in its ifb class"
    );
    assert_eq!(
        delta(&ifb, "4f41:102"),
        4,
        "player 2's ingress in its ifb class"
    );
    assert_eq!(
        delta(&ifb, DEFAULT_CLASS),
        0,
        "non-players are not redirected"
    );

    let report = sh.teardown().unwrap();
    assert!(report.restored, "{report:?}");
    assert_eq!(
        report.commands,
        [
            "tc qdisc del dev oasrv0 ingress".to_string(),
            format!("ip link del dev {ifb}"),
            "tc qdisc del dev oasrv0 root".to_string()
        ]
    );
    assert_eq!(lab.server_qdiscs(), before);
    assert!(!lab.server_has_link(&ifb), "the ifb is gone");
}

#[test]
fn ipv6_players_get_their_own_classes() {
    let Some(lab) = lab_or_skip("6", 2) else {
        return;
    };
    lab.add_ipv6().unwrap();
    let before = lab.server_qdiscs();
    // Player 1 over IPv6, player 2 over IPv4, both directions.
    let players = [
        oa_run::netem::Player {
            index: 1,
            ip: IpAddr::V6(netem_lab::player_ip6(1)),
        },
        oa_run::netem::Player {
            index: 2,
            ip: IpAddr::V4(player_ip(2)),
        },
    ];
    let lat = netem_lab::latency(Split::Symmetric, &[0, 60]);
    let mut sh = LatencyShaper::setup(
        &lat,
        &players,
        pfifo(),
        Box::new(SystemRunner::in_netns(&lab.server.name)),
    )
    .unwrap();
    sh.apply_match(1, &[60, 0]).unwrap();
    let before_counts = sh.read_back().unwrap();
    let port = support::free_udp_port();
    let got = send_and_count(
        &lab.server,
        vec!["fd77::1".parse().unwrap(), IpAddr::V4(SERVER_IP)],
        &lab.players,
        vec![
            SocketAddr::new(IpAddr::V6(netem_lab::player_ip6(1)), port),
            SocketAddr::new(IpAddr::V4(player_ip(2)), port),
        ],
        &[6, 3],
    );
    assert_eq!(got, [6, 3]);
    let after = sh.read_back().unwrap();
    let delta =
        |c: &str| class_packets(&after, SERVER_IF, c) - class_packets(&before_counts, SERVER_IF, c);
    // Neighbour discovery to the player's own address is IPv6 too, so it may add a packet or two.
    let d1 = delta("4f41:101");
    assert!((6..=8).contains(&d1), "player 1 (IPv6) class got {d1}");
    assert_eq!(delta("4f41:102"), 3, "player 2 (IPv4) class");
    sh.teardown().unwrap();
    assert_eq!(lab.server_qdiscs(), before);
}

#[test]
fn leftovers_foreign_qdiscs_and_refusals() {
    let Some(lab) = lab_or_skip("l", 2) else {
        return;
    };
    let ns = lab.server.name.clone();
    let runner = || Box::new(SystemRunner::in_netns(&ns));
    let before = lab.server_qdiscs();
    let lat = netem_lab::latency(Split::Symmetric, &[0, 50]);
    let players = netem_lab::players(2);

    // While a run holds the interface, a second run and net-reset are refused: its tree is
    // not a leftover.
    let live = LatencyShaper::setup(&lat, &players, pfifo(), runner()).unwrap();
    match LatencyShaper::setup(&lat, &players, pfifo(), runner()) {
        Err(NetemError::InUse { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
        other => panic!("expected InUse, got {other:?}"),
    }
    let e = oa_run::netem::reset(&SystemRunner::in_netns(&ns), SERVER_IF).unwrap_err();
    assert!(matches!(e, NetemError::InUse { .. }), "{e}");
    drop(live);
    assert_eq!(lab.server_qdiscs(), before);

    // A crash: the process vanishes without teardown; the kernel drops its lock.
    let sh = LatencyShaper::setup(&lat, &players, pfifo(), runner()).unwrap();
    sh.simulate_crash();
    let found = oa_run::netem::preflight::inspect(&SystemRunner::in_netns(&ns), SERVER_IF).unwrap();
    assert!(found.has_leftover(), "{found:?}");
    // The next run recognises it, removes it and builds afresh.
    let mut sh = LatencyShaper::setup(&lat, &players, pfifo(), runner()).unwrap();
    sh.apply_match(1, &[50, 0]).unwrap();
    // Dropping without teardown (an error path) still cleans up.
    drop(sh);
    assert_eq!(lab.server_qdiscs(), before);
    assert!(!lab.server_has_link(&ifb_name(SERVER_IF)));

    // net-reset is idempotent and leaves other people's qdiscs alone.
    let sh = LatencyShaper::setup(&lat, &players, pfifo(), runner()).unwrap();
    sh.simulate_crash();
    let r = oa_run::netem::reset(&SystemRunner::in_netns(&ns), SERVER_IF).unwrap();
    assert_eq!(r.removed.len(), 3, "{r:?}");
    let r = oa_run::netem::reset(&SystemRunner::in_netns(&ns), SERVER_IF).unwrap();
    assert!(r.removed.is_empty(), "{r:?}");
    assert_eq!(lab.server_qdiscs(), before);

    // Someone else's root qdisc: refused, untouched; replaced only when forced.
    lab.server
        .exec(&[
            "tc", "qdisc", "add", "dev", SERVER_IF, "root", "handle", "1:", "pfifo",
        ])
        .unwrap();
    let theirs = lab.server_qdiscs();
    let e = LatencyShaper::setup(&lat, &players, pfifo(), runner()).unwrap_err();
    assert!(matches!(e, NetemError::ForeignRootQdisc { .. }), "{e}");
    assert!(e.to_string().contains("pfifo 1:"), "{e}");
    assert_eq!(lab.server_qdiscs(), theirs);
    let r = oa_run::netem::reset(&SystemRunner::in_netns(&ns), SERVER_IF).unwrap();
    assert_eq!(r.left_alone, ["root qdisc pfifo 1: (not oa-run's)"]);
    let mut sh = LatencyShaper::setup(
        &lat,
        &players,
        SetupOptions {
            force: true,
            leaf: LeafKind::Pfifo,
        },
        runner(),
    )
    .unwrap();
    sh.teardown().unwrap();
    assert_eq!(lab.server_qdiscs(), before, "the kernel default is back");

    // Missing interface, missing tc, no permission: clear errors, nothing left behind.
    let mut other = lat.clone();
    other.interface = "nosuch0".into();
    let e = LatencyShaper::setup(&other, &players, pfifo(), runner()).unwrap_err();
    assert!(matches!(e, NetemError::InterfaceMissing(_)), "{e}");
    let e = LatencyShaper::setup(
        &lat,
        &players,
        pfifo(),
        Box::new(SystemRunner::in_netns(&ns).with_program("tc", "/nonexistent/oa-run/tc")),
    )
    .unwrap_err();
    assert!(matches!(e, NetemError::ToolMissing { .. }), "{e}");
    if support::missing_program("setpriv").is_none() {
        let unprivileged = SystemRunner::new().with_prefix(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]);
        let e = LatencyShaper::setup(&lat, &players, pfifo(), Box::new(unprivileged)).unwrap_err();
        assert!(matches!(e, NetemError::NotPermitted { .. }), "{e}");
        let code = oa_run::Error::from(e).exit_code();
        assert_eq!(code, oa_run::error::exit::NO_PERMISSION);
    }
    assert_eq!(lab.server_qdiscs(), before);
    // A kernel without netem: a netem leaf is refused with a message saying what to do.
    if oa_run::netem::netem_probe() != Probe::Available {
        let e =
            LatencyShaper::setup(&lat, &players, SetupOptions::default(), runner()).unwrap_err();
        assert!(matches!(e, NetemError::NetemUnavailable { .. }), "{e}");
        assert!(e.to_string().contains("latency.shaper: none"));
        assert_eq!(
            lab.server_qdiscs(),
            before,
            "the half-built tree was removed"
        );
        assert!(!lab.server_has_link(&ifb_name(SERVER_IF)));
    }
}

#[test]
fn net_reset_cli_removes_a_leftover() {
    let Some(lab) = lab_or_skip("r", 1) else {
        return;
    };
    let before = lab.server_qdiscs();
    let lat = netem_lab::latency(Split::Symmetric, &[0]);
    let sh = LatencyShaper::setup(
        &lat,
        &netem_lab::players(1),
        pfifo(),
        Box::new(SystemRunner::in_netns(&lab.server.name)),
    )
    .unwrap();
    let bin = support::oa_run();
    let bin = bin.to_str().unwrap();
    // A live run's tree is refused (the CLI inside the namespace sees the test's lock).
    let st = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.server.name,
            bin,
            "net-reset",
            "--interface",
            SERVER_IF,
        ])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(69));
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(
        err.contains(&format!(
            "another oa-run (pid {}) is shaping",
            std::process::id()
        )),
        "{err}"
    );
    sh.simulate_crash();
    let out = lab
        .server
        .exec(&[bin, "net-reset", "--interface", SERVER_IF])
        .unwrap();
    assert!(out.contains("removed root qdisc htb 4f41:"), "{out}");
    assert!(
        out.contains(&format!("removed ifb device {}", ifb_name(SERVER_IF))),
        "{out}"
    );
    assert_eq!(lab.server_qdiscs(), before);
    let out = lab
        .server
        .exec(&[bin, "net-reset", "--interface", SERVER_IF])
        .unwrap();
    assert!(out.contains("nothing removed"), "{out}");
    let st = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.server.name,
            bin,
            "net-reset",
            "--interface",
            "nosuch0",
        ])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&st.stderr).contains("`nosuch0` does not exist"));
}

#[test]
fn check_rows_report_the_latency_layer() {
    if let Some(why) = support::missing_root().or_else(|| support::missing_program("tc")) {
        return support::skip(&why);
    }
    // Read-only on the host's loopback: inspection only, probes run in private namespaces.
    let y = "name: c\nserver: {launch: {}, address: 0.0.0.0:27960, rcon_password: rc}\n\
             players: {humans: 1}\nwarmup: {duration: 10s}\nmatches: {timelimit: 1m}\n\
             latency: {interface: lo, levels: [0ms], split: symmetric}\n\
             obs: {password: pw, recording: {}}\n";
    let s = load_str("c.yaml", y, &[], &BTreeMap::new(), SecretsMode::Optional)
        .unwrap()
        .scenario;
    let rows = oa_run::netem::check_rows(&s);
    let row = |t: &str| {
        rows.iter()
            .find(|r| r.target == t)
            .unwrap_or_else(|| panic!("{t}: {rows:?}"))
    };
    assert!(row("shaper").ok);
    assert!(row("tc").ok);
    assert!(row("tc").details[0].1.starts_with("iproute2"), "{rows:?}");
    assert!(row("permission").ok);
    assert!(row("ifb").ok, "ifb works on this kernel: {rows:?}");
    let netem = oa_run::netem::netem_probe();
    assert_eq!(row("netem").ok, netem == Probe::Available, "{rows:?}");
    if let Probe::Missing(why) = netem {
        assert!(why.contains("qdisc kind is unknown"), "{why}");
    }
    let mut s2 = s.clone();
    s2.latency.interface = "nosuch0".into();
    let rows = oa_run::netem::check_rows(&s2);
    let r = rows.iter().find(|r| r.target == "nosuch0").unwrap();
    assert!(!r.ok);
    println!("{}", oa_run::check::table(&rows));
}

// ---------------------------------------------------------------------------------------------
// The real netem path: runs only where the kernel has sch_netem.

#[test]
fn netem_round_trips_match_the_configured_latency() {
    if oa_run::netem::netem_probe() != Probe::Available {
        // The one skip allowed under CI: this kernel cannot delay packets at all.
        eprintln!("SKIPPED: kernel has no sch_netem");
        return;
    }
    let Some(lab) = lab_or_skip("n", 3) else {
        return;
    };
    let port = support::free_udp_port();
    let echo = netem_lab::Echo::new(
        (1..=3)
            .map(|i| {
                netem_lab::udp_in(
                    &lab.players,
                    SocketAddr::new(IpAddr::V4(player_ip(i)), port),
                )
                .unwrap()
            })
            .collect(),
    );
    let client = netem_lab::udp_in(&lab.server, SocketAddr::new(IpAddr::V4(SERVER_IP), 0)).unwrap();
    let before = lab.server_qdiscs();
    for split in [Split::Egress, Split::Symmetric] {
        let lat = netem_lab::latency(split, &[0, 40, 80]);
        let mut sh = LatencyShaper::setup(
            &lat,
            &netem_lab::players(3),
            SetupOptions::default(),
            Box::new(SystemRunner::in_netns(&lab.server.name)),
        )
        .unwrap();
        for (k, levels) in [[0u64, 40, 80], [80, 0, 40]].iter().enumerate() {
            let m = sh.apply_match(k as u32 + 1, levels).unwrap();
            for (i, want) in levels.iter().enumerate() {
                let p = &m.players[i];
                let eg = p.egress.as_ref().unwrap().delay_ms.unwrap();
                let ing = p
                    .ingress
                    .as_ref()
                    .map(|d| d.delay_ms.unwrap())
                    .unwrap_or(0.0);
                assert!((eg + ing - *want as f64).abs() < 0.01, "{p:?}");
                let to = SocketAddr::new(IpAddr::V4(player_ip(i as u32 + 1)), port);
                let r = netem_lab::rtts(&client, to, 5, Duration::from_secs(3)).unwrap();
                let med = netem_lab::median(&r).as_secs_f64() * 1000.0;
                eprintln!(
                    "{split:?} match {} player {}: configured {want} ms, measured RTT {med:.2} ms",
                    k + 1,
                    i + 1
                );
                assert!(
                    med >= *want as f64 - 0.5 && med <= *want as f64 + 15.0,
                    "{split:?} player {}: RTT {med:.2} ms, configured {want} ms",
                    i + 1
                );
            }
        }
        sh.teardown().unwrap();
        assert_eq!(lab.server_qdiscs(), before);
    }
    drop(echo);
}
