//! Latency shaping: per-player added delay with Linux tc (HTB + netem), changed between matches,
//! verified against the kernel after every change, and always removed afterwards.
//!
//! - [`commands`]: the exact `tc`/`ip` commands, generated without running anything (golden
//!   tests, dry run).
//! - [`runner`]: the [`CommandRunner`] seam: [`SystemRunner`] (real programs, no shell, bounded
//!   time) and [`Recorder`].
//! - [`preflight`]: what is on the interface, leftovers of a crashed run, [`reset`], probes.
//! - [`verify`]: reading the tree back (`tc -s -j … show`) and checking it.
//! - [`shaper`]: [`LatencyShaper`], the object the executor holds for a run.
//!
//! The executor's use: `LatencyShaper::setup` at the `SetupLatency` step (players known),
//! `apply_match` at each `SetLatency` step (its [`AppliedMatch`] goes into the manifest), and
//! `teardown` at `Teardown`, on error and on Ctrl-C/SIGTERM (dropping the shaper also tears
//! down). The calls block for a few milliseconds per `tc` command.

pub mod commands;
pub mod error;
pub mod lock;
pub mod nfq;
pub mod preflight;
pub mod runner;
pub mod shaper;
pub mod verify;

use std::net::IpAddr;

pub use commands::{LeafKind, TcCommand, TreeSpec, ifb_name};
pub use error::NetemError;
pub use nfq::QueuedPlayer;
pub use preflight::{Probe, ResetReport, ifb_probe, netem_probe, reset};
pub use runner::{CmdOutput, CommandRunner, Recorder, SystemRunner};
pub use shaper::{
    AppliedMatch, AppliedPlayer, LatencyShaper, Player, SetupOptions, TeardownReport,
};

use crate::check::CheckRow;
use crate::scenario::{Scenario, Shaper, Split};
use commands::{Created, Target};

fn spec_of(s: &Scenario) -> TreeSpec {
    TreeSpec::new(&s.latency, LeafKind::Netem, game_port(s))
}

/// The shaper in force for `requested`, and why: `auto` becomes `tc` where the kernel has
/// sch_netem and `nfqueue` elsewhere (probed once per process).
pub fn resolve_shaper(requested: Shaper) -> (Shaper, String) {
    static NETEM: std::sync::OnceLock<Probe> = std::sync::OnceLock::new();
    match requested {
        Shaper::Auto => match NETEM.get_or_init(netem_probe) {
            Probe::Available => (Shaper::Tc, "auto: this kernel has sch_netem".into()),
            Probe::Missing(why) | Probe::Unknown(why) => (
                Shaper::Nfqueue,
                format!("auto: no usable sch_netem here ({why})"),
            ),
        },
        other => (other, "chosen in the scenario".into()),
    }
}

/// The server's UDP game port, from `server.address` (validated at load time).
pub fn game_port(s: &Scenario) -> u16 {
    crate::scenario::semantic::parse_server_address(&s.server.address)
        .map(|a| a.port())
        .unwrap_or(commands::DEFAULT_GAME_PORT)
}

/// The commands that build the tree (dry run). `player_ips[i]` is player `i + 1`'s address
/// where known (seats); unknown ones appear as `<ip-of-playerN>`. Empty with `shaper: none`.
pub fn describe_setup_commands(s: &Scenario, player_ips: &[Option<IpAddr>]) -> Vec<String> {
    let targets: Vec<Target> = (1..=s.players.humans)
        .map(|index| Target {
            index,
            ip: player_ips.get(index as usize - 1).copied().flatten(),
        })
        .collect();
    match resolve_shaper(s.latency.shaper).0 {
        Shaper::None => Vec::new(),
        Shaper::Nfqueue => {
            commands::lines(&nfq::commands::build_commands(&rule_spec_of(s), &targets))
        }
        Shaper::Tc | Shaper::Auto => {
            commands::lines(&commands::build_commands(&spec_of(s), &targets))
        }
    }
}

fn rule_spec_of(s: &Scenario) -> nfq::commands::RuleSpec {
    nfq::commands::RuleSpec {
        interface: s.latency.interface.clone(),
        split: s.latency.split,
        game_port: game_port(s),
        queue_num: nfq::commands::QUEUE_NUM,
    }
}

/// The exact commands one match runs (dry run): one `tc qdisc change` per player leaf (two with
/// `split: symmetric`). `latency_ms` is the match's added delay per player, in player order.
/// They name classes, not addresses, so they are exact even before anyone joined. Empty with
/// `shaper: none`, and with `nfqueue` (a match's delays are an in-memory switch, no command).
pub fn describe_match_commands(s: &Scenario, latency_ms: &[u64]) -> Vec<String> {
    if resolve_shaper(s.latency.shaper).0 != Shaper::Tc {
        return Vec::new();
    }
    let indices: Vec<u32> = (1..=s.players.humans).collect();
    commands::lines(&commands::match_commands(&spec_of(s), &indices, latency_ms))
}

/// The commands teardown runs after a normal run (dry run). Empty with `shaper: none`.
/// With `nfqueue` the IPv4 rules are shown (IPv6 players add the same for ip6tables).
pub fn describe_teardown_commands(s: &Scenario) -> Vec<String> {
    match resolve_shaper(s.latency.shaper).0 {
        Shaper::None => Vec::new(),
        Shaper::Nfqueue => commands::lines(&nfq::commands::teardown_commands(
            &rule_spec_of(s),
            &[nfq::commands::Family::V4],
        )),
        Shaper::Tc | Shaper::Auto => {
            let spec = spec_of(s);
            commands::lines(&commands::teardown_commands(&spec, Created::all(&spec)))
        }
    }
}

/// Rows for `oa-run check`: which shaper is in force and, for `tc`, whether tc is installed,
/// permitted, the interface exists (and is free), netem (and ifb for `symmetric`) is available.
pub fn check_rows(s: &Scenario) -> Vec<CheckRow> {
    check_rows_with(s, &SystemRunner::new())
}

fn check_rows_with(s: &Scenario, runner: &dyn CommandRunner) -> Vec<CheckRow> {
    let l = &s.latency;
    let split = match l.split {
        Split::Egress => "egress",
        Split::Symmetric => "symmetric",
    };
    let (shaper, why) = resolve_shaper(l.shaper);
    if shaper == Shaper::None {
        return vec![
            CheckRow::new("latency", "shaper", true)
                .detail("shaper", "none")
                .detail("applied", "no (planned and recorded only)"),
        ];
    }
    if shaper == Shaper::Nfqueue {
        return nfqueue_rows(s, runner, &why, split);
    }
    let mut rows = vec![
        CheckRow::new("latency", "shaper", true)
            .detail("shaper", "tc")
            .detail("why", why)
            .detail("split", split)
            .detail("limit", l.limit),
    ];
    let tc_ok = match runner::run_checked(runner, &TcCommand::tc(&["-V"]), &l.interface) {
        Ok(o) => {
            let version = o
                .stdout
                .split(',')
                .map(str::trim)
                .find(|p| p.starts_with("iproute2"))
                .unwrap_or(o.stdout.trim())
                .to_string();
            rows.push(CheckRow::new("latency", "tc", true).detail("version", version));
            true
        }
        Err(e) => {
            rows.push(CheckRow::new("latency", "tc", false).detail("error", e));
            false
        }
    };
    rows.push(match runner.permission() {
        Ok(()) => CheckRow::new("latency", "permission", true).detail("cap_net_admin", "yes"),
        Err(why) => CheckRow::new("latency", "permission", false).detail("error", why),
    });
    if tc_ok {
        rows.push(match preflight::inspect(runner, &l.interface) {
            Ok(f) => {
                let root = f
                    .qdiscs
                    .iter()
                    .find(|q| q.root)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "none".into());
                let (ok, state) = match &f.root {
                    preflight::RootState::Default { .. } => (true, "free"),
                    preflight::RootState::Ours => (true, "leftover oa-run tree (will be removed)"),
                    preflight::RootState::Foreign { .. } => {
                        (false, "root qdisc is not oa-run's (refused unless forced)")
                    }
                };
                let mut row = CheckRow::new("latency", &l.interface, ok)
                    .detail("root", root)
                    .detail("state", state);
                if l.split == Split::Symmetric
                    && let preflight::IngressState::Foreign { kind } = &f.ingress
                {
                    row.ok = false;
                    row = row.detail("ingress", format!("{kind} is not oa-run's"));
                }
                row
            }
            Err(e) => CheckRow::new("latency", &l.interface, false).detail("error", e),
        });
    }
    rows.push(probe_row(
        "netem",
        netem_probe(),
        "set latency.shaper: none",
    ));
    if l.split == Split::Symmetric {
        rows.push(probe_row("ifb", ifb_probe(), "use latency.split: egress"));
    }
    rows
}

/// `check` rows for the userspace shaper: iptables there, permitted, NFQUEUE bindable, and
/// whether rules of an earlier run are left over.
fn nfqueue_rows(s: &Scenario, runner: &dyn CommandRunner, why: &str, split: &str) -> Vec<CheckRow> {
    let l = &s.latency;
    let mut rows = vec![
        CheckRow::new("latency", "shaper", true)
            .detail("shaper", "nfqueue")
            .detail("why", why)
            .detail("split", split)
            .detail("shaped", format!("udp port {} only", game_port(s)))
            .detail("queue", nfq::commands::QUEUE_NUM),
    ];
    let v = TcCommand::new("iptables", &["-V"]);
    let ipt_ok = match runner::run_checked(runner, &v, &l.interface) {
        Ok(o) => {
            rows.push(
                CheckRow::new("latency", "iptables", true).detail("version", o.stdout.trim()),
            );
            true
        }
        Err(e) => {
            rows.push(CheckRow::new("latency", "iptables", false).detail("error", e));
            false
        }
    };
    rows.push(match runner.permission() {
        Ok(()) => CheckRow::new("latency", "permission", true).detail("cap_net_admin", "yes"),
        Err(why) => CheckRow::new("latency", "permission", false).detail("error", why),
    });
    if ipt_ok {
        let c = nfq::commands::ipt(nfq::commands::Family::V4, &["-S"]);
        rows.push(match runner::run_checked(runner, &c, &l.interface) {
            Ok(o) => {
                let f = nfq::commands::parse_found(&o.stdout);
                let state = if f.any() {
                    "leftover oa-run rules (will be removed)"
                } else {
                    "free"
                };
                CheckRow::new("latency", "rules", true).detail("state", state)
            }
            Err(e) => CheckRow::new("latency", "rules", false).detail("error", e),
        });
    }
    rows.push(probe_row(
        "nfqueue",
        nfq::queue_probe(),
        "load nfnetlink_queue, or set latency.shaper: none",
    ));
    rows
}

fn probe_row(what: &str, p: Probe, hint: &str) -> CheckRow {
    match p {
        Probe::Available => CheckRow::new("latency", what, true).detail("available", "yes"),
        Probe::Missing(why) => CheckRow::new("latency", what, false)
            .detail("available", "no")
            .detail("why", why)
            .detail("hint", hint),
        Probe::Unknown(why) => CheckRow::new("latency", what, false)
            .detail("available", "unknown")
            .detail("why", why),
    }
}

/// `oa-run net-reset --interface IF`: remove oa-run's latency tree by hand and say what was
/// done. Returns the exit code.
pub fn net_reset_command(interface: &str) -> Result<u8, crate::Error> {
    let runner = SystemRunner::new();
    runner
        .permission()
        .map_err(|detail| NetemError::NotPermitted {
            interface: interface.into(),
            detail,
        })?;
    // The userspace shaper's rules are per host, not per interface: always look for them.
    let queue_removed = nfq::reset(&runner)?;
    for what in &queue_removed {
        println!("removed {what}");
    }
    let r = match reset(&runner, interface) {
        Ok(r) => r,
        // No such interface: its tree went with it; the rules above were still worth removing.
        Err(NetemError::InterfaceMissing(_)) if !queue_removed.is_empty() => ResetReport {
            interface: interface.into(),
            ..Default::default()
        },
        Err(e) => return Err(e.into()),
    };
    if r.removed.is_empty() && queue_removed.is_empty() {
        println!("{interface}: no oa-run latency tree or rules found; nothing removed");
    }
    for what in &r.removed {
        println!("{interface}: removed {what}");
    }
    for what in &r.left_alone {
        println!("{interface}: left alone {what}");
    }
    Ok(crate::error::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::load_str;
    use std::collections::BTreeMap;

    pub(crate) fn scenario(humans: u32, extra: &str) -> Scenario {
        let y = format!(
            "name: t\nserver: {{launch: {{}}, address: 127.0.0.1:27960, rcon_password: rc}}\nplayers: {{humans: {humans}}}\n\
             warmup: {{duration: 10s}}\nmatches: {{timelimit: 1m}}\n\
             latency: {{interface: eth0, levels: [0ms, 100ms, 201ms]{extra}}}\nobs: {{password: pw, recording: {{}}}}\n"
        );
        load_str(
            "t.yaml",
            &y,
            &[],
            &BTreeMap::new(),
            crate::scenario::SecretsMode::Optional,
        )
        .unwrap()
        .scenario
    }

    #[test]
    fn describe_uses_placeholders_and_is_empty_for_none() {
        let s = scenario(2, ", shaper: tc");
        let ips = [Some("10.0.0.11".parse().unwrap())];
        let setup = describe_setup_commands(&s, &ips);
        assert!(
            setup
                .iter()
                .any(|l| l.contains("match ip dst 10.0.0.11/32 match ip protocol 17 0xff match ip sport 27960 0xffff flowid 4f41:101"))
        );
        assert!(
            setup
                .iter()
                .any(|l| l.contains("match ip dst <ip-of-player2>/32 match ip protocol 17 0xff match ip sport 27960 0xffff flowid 4f41:102"))
        );
        assert_eq!(
            describe_match_commands(&s, &[201, 0]),
            [
                "tc qdisc change dev eth0 parent 4f41:101 handle 101: netem delay 201ms limit 10000",
                "tc qdisc change dev eth0 parent 4f41:102 handle 102: netem delay 0ms limit 10000",
            ]
        );
        assert_eq!(
            describe_teardown_commands(&s),
            ["tc qdisc del dev eth0 root"]
        );
        let none = scenario(2, ", shaper: none");
        assert!(describe_setup_commands(&none, &[]).is_empty());
        assert!(describe_match_commands(&none, &[1, 2]).is_empty());
        let rows = check_rows(&none);
        assert_eq!(rows.len(), 1);
        assert!(rows[0].ok);
        assert_eq!(
            rows[0].details[0],
            ("shaper".to_string(), "none".to_string())
        );
    }

    #[test]
    fn shaper_none_records_the_plan_and_touches_nothing() {
        let s = scenario(2, ", shaper: none");
        let rec = Recorder::new();
        let players = [
            Player {
                index: 1,
                ip: "10.0.0.11".parse().unwrap(),
            },
            Player {
                index: 2,
                ip: "10.0.0.12".parse().unwrap(),
            },
        ];
        let mut sh = LatencyShaper::setup(
            &s.latency,
            &players,
            SetupOptions::default(),
            Box::new(rec.clone()),
        )
        .unwrap();
        assert!(!sh.is_applied());
        let m = sh.apply_match(3, &[100, 0]).unwrap();
        assert!(!m.applied);
        assert_eq!(m.players[0].latency_ms, 100);
        assert_eq!(m.players[1].latency_ms, 0);
        assert!(m.players[0].egress.is_none());
        let j = serde_json::to_value(&m).unwrap();
        assert_eq!(j["applied"], false);
        assert_eq!(j["shaper"], "none");
        sh.teardown().unwrap();
        drop(sh);
        assert!(rec.commands().is_empty(), "{:?}", rec.commands());
    }

    #[test]
    fn setup_failure_undoes_what_was_built_and_names_the_command() {
        let s = scenario(3, ", shaper: tc");
        // A fake kernel: a pristine interface, and the third player's leaf is refused.
        let rec = Recorder::responding(|c| {
            let a: Vec<&str> = c.args.iter().map(String::as_str).collect();
            match a.as_slice() {
                ["-j", "qdisc", "show", ..] => CmdOutput::ok(
                    r#"[{"kind":"noqueue","handle":"0:","root":true,"refcnt":2,"options":{}}]"#,
                ),
                ["-j", "link", "show", "dev", d] => {
                    CmdOutput::failed(1, format!("Device \"{d}\" does not exist."))
                }
                ["qdisc", "add", "dev", "eth0", "parent", "4f41:103", ..] => {
                    CmdOutput::failed(2, "RTNETLINK answers: No buffer space available\n")
                }
                _ => CmdOutput::ok(""),
            }
        });
        let players: Vec<Player> = (1..=3)
            .map(|i| Player {
                index: i,
                ip: format!("10.0.0.{}", 10 + i).parse().unwrap(),
            })
            .collect();
        let e = LatencyShaper::setup(
            &s.latency,
            &players,
            SetupOptions::default(),
            Box::new(rec.clone()),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`tc qdisc add dev eth0 parent 4f41:103 handle 103: netem delay 0ms limit 10000` \
             failed: RTNETLINK answers: No buffer space available"
        );
        let changes = rec.changes();
        assert_eq!(changes.last().unwrap(), "tc qdisc del dev eth0 root");
        assert_eq!(
            changes.iter().filter(|c| c.contains(" del ")).count(),
            1,
            "only the root existed: {changes:?}"
        );
    }

    #[test]
    fn shared_address_is_refused() {
        let s = scenario(2, ", shaper: tc");
        let ip = "10.0.0.5".parse().unwrap();
        let e = LatencyShaper::setup(
            &s.latency,
            &[Player { index: 1, ip }, Player { index: 2, ip }],
            SetupOptions::default(),
            Box::new(Recorder::new()),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("players 1 and 2 both connect from 10.0.0.5")
        );
    }
}
