//! Pure generation of the `iptables`/`ip6tables` commands of the userspace (NFQUEUE) shaper, and
//! the parsing of `iptables -S` that finds oa-run's rules again (leftovers, `net-reset`). Nothing
//! here runs anything: the dry run prints exactly what the real run executes.
//!
//! The rules (table `mangle`, one pair of chains per address family in use):
//! ```text
//! POSTROUTING -o IF -j OA_RUN_SHAPE_OUT       server → player (locally sent or forwarded)
//!   OA_RUN_SHAPE_OUT -d PLAYER -p udp --sport GAMEPORT -j NFQUEUE --queue-num 20289 --queue-bypass
//! PREROUTING -i IF -j OA_RUN_SHAPE_IN         player → server (`split: symmetric` only)
//!   OA_RUN_SHAPE_IN  -s PLAYER -p udp --dport GAMEPORT -j NFQUEUE --queue-num 20289 --queue-bypass
//! ```
//! POSTROUTING and PREROUTING see a packet once whether the server runs on this host (OUTPUT →
//! POSTROUTING, PREROUTING → INPUT) or behind it (FORWARD in between), so one rule set serves
//! both. `--queue-bypass` lets packets through unshaped while no process listens on the queue:
//! if oa-run dies, the game goes on undelayed instead of being black-holed.

use std::net::IpAddr;

use crate::netem::commands::{Target, TcCommand};
use crate::scenario::Split;

/// Every chain of oa-run's starts with this (leftover detection and `net-reset` look for it).
pub const CHAIN_PREFIX: &str = "OA_RUN_SHAPE";
/// Server → player rules.
pub const CHAIN_OUT: &str = "OA_RUN_SHAPE_OUT";
/// Player → server rules (`symmetric`).
pub const CHAIN_IN: &str = "OA_RUN_SHAPE_IN";
/// The table the chains live in.
pub const TABLE: &str = "mangle";
/// The NFQUEUE number ("OA" in ASCII, as the tc handle).
pub const QUEUE_NUM: u16 = 0x4f41;

/// Address family: which program manages its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn program(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// What the rules look like, independent of who plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub interface: String,
    pub split: Split,
    pub game_port: u16,
    pub queue_num: u16,
}

/// `iptables -w 5 -t mangle ARGS…` (waits up to 5 s for the xtables lock instead of failing).
pub fn ipt(family: Family, args: &[&str]) -> TcCommand {
    let mut all = vec!["-w", "5", "-t", TABLE];
    all.extend_from_slice(args);
    TcCommand::new(family.program(), &all)
}

fn addr_text(t: &Target) -> (Family, String) {
    match t.ip {
        Some(IpAddr::V4(a)) => (Family::V4, format!("{a}/32")),
        Some(IpAddr::V6(a)) => (Family::V6, format!("{a}/128")),
        None => (Family::V4, format!("<ip-of-player{}>/32", t.index)),
    }
}

/// The families the players' addresses need (IPv4 also for players not known yet).
pub fn families(players: &[Target]) -> Vec<Family> {
    let mut f: Vec<Family> = players.iter().map(|t| addr_text(t).0).collect();
    f.sort();
    f.dedup();
    f
}

/// One queueing rule as `iptables -S` prints it, without the leading `-A CHAIN`.
fn queue_rule(spec: &RuleSpec, t: &Target, egress: bool) -> (Family, Vec<String>) {
    let (fam, addr) = addr_text(t);
    let (side, port_side) = if egress {
        ("-d", "--sport")
    } else {
        ("-s", "--dport")
    };
    let v = [
        side,
        &addr,
        "-p",
        "udp",
        "-m",
        "udp",
        port_side,
        &spec.game_port.to_string(),
        "-j",
        "NFQUEUE",
        "--queue-num",
        &spec.queue_num.to_string(),
        "--queue-bypass",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    (fam, v)
}

/// The jump rules (hook, interface option, chain) for `spec`, as `iptables -S` prints them
/// without the leading `-A HOOK`.
fn jumps(spec: &RuleSpec) -> Vec<(&'static str, Vec<String>)> {
    let mut out = vec![(
        "POSTROUTING",
        vec![
            "-o".to_string(),
            spec.interface.clone(),
            "-j".into(),
            CHAIN_OUT.into(),
        ],
    )];
    if spec.split == Split::Symmetric {
        out.push((
            "PREROUTING",
            vec![
                "-i".to_string(),
                spec.interface.clone(),
                "-j".into(),
                CHAIN_IN.into(),
            ],
        ));
    }
    out
}

fn chains(spec: &RuleSpec) -> Vec<&'static str> {
    if spec.split == Split::Symmetric {
        vec![CHAIN_OUT, CHAIN_IN]
    } else {
        vec![CHAIN_OUT]
    }
}

fn with(family: Family, head: &[&str], tail: &[String]) -> TcCommand {
    let mut c = ipt(family, head);
    c.args.extend(tail.iter().cloned());
    c
}

/// The rules each chain must hold for `players`, in order, as `iptables -S CHAIN` prints them.
pub fn expected_rules(spec: &RuleSpec, family: Family, players: &[Target]) -> Vec<String> {
    let mut out = Vec::new();
    for chain in chains(spec) {
        out.push(format!("-N {chain}"));
        for t in players {
            let (fam, rule) = queue_rule(spec, t, chain == CHAIN_OUT);
            if fam == family {
                out.push(format!("-A {chain} {}", rule.join(" ")));
            }
        }
    }
    out
}

/// The jump rules as `iptables -S HOOK` prints them.
pub fn expected_jumps(spec: &RuleSpec) -> Vec<String> {
    jumps(spec)
        .into_iter()
        .map(|(hook, rule)| format!("-A {hook} {}", rule.join(" ")))
        .collect()
}

/// Every command that installs the rules: chains and their rules first, the jumps into them
/// last (so no packet meets a half-built chain).
pub fn build_commands(spec: &RuleSpec, players: &[Target]) -> Vec<TcCommand> {
    let mut out = Vec::new();
    for fam in families(players) {
        for chain in chains(spec) {
            out.push(ipt(fam, &["-N", chain]));
            for t in players {
                let (f, rule) = queue_rule(spec, t, chain == CHAIN_OUT);
                if f == fam {
                    out.push(with(fam, &["-A", chain], &rule));
                }
            }
        }
        for (hook, rule) in jumps(spec) {
            out.push(with(fam, &["-I", hook, "1"], &rule));
        }
    }
    out
}

/// The commands that remove the rules `build_commands` installed: jumps first (no new packet is
/// queued), then each chain flushed and deleted.
pub fn teardown_commands(spec: &RuleSpec, families: &[Family]) -> Vec<TcCommand> {
    let mut out = Vec::new();
    for &fam in families {
        for (hook, rule) in jumps(spec) {
            out.push(with(fam, &["-D", hook], &rule));
        }
        for chain in chains(spec) {
            out.push(ipt(fam, &["-F", chain]));
            out.push(ipt(fam, &["-X", chain]));
        }
    }
    out
}

/// oa-run's rules found in `iptables -t mangle -S` output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// Chains whose name starts with [`CHAIN_PREFIX`].
    pub chains: Vec<String>,
    /// Rules in other chains that jump to one of them (as printed, starting with `-A`).
    pub jumps: Vec<String>,
}

impl Found {
    pub fn any(&self) -> bool {
        !self.chains.is_empty() || !self.jumps.is_empty()
    }
}

/// Find oa-run's chains and the jumps into them in `iptables -S` output. Foreign chains and
/// rules are never listed.
pub fn parse_found(text: &str) -> Found {
    let mut f = Found::default();
    for line in text.lines().map(str::trim) {
        let t: Vec<&str> = line.split_whitespace().collect();
        match t.as_slice() {
            ["-N", name] if name.starts_with(CHAIN_PREFIX) => f.chains.push(name.to_string()),
            ["-A", chain, .., "-j", target]
                if target.starts_with(CHAIN_PREFIX) && !chain.starts_with(CHAIN_PREFIX) =>
            {
                f.jumps.push(line.to_string())
            }
            _ => {}
        }
    }
    f
}

/// The commands that remove what [`parse_found`] found: each jump (its `-A` turned into `-D`),
/// then each chain flushed and deleted.
pub fn reset_commands(family: Family, found: &Found) -> Vec<TcCommand> {
    let mut out = Vec::new();
    for j in &found.jumps {
        let t: Vec<String> = j.split_whitespace().skip(1).map(String::from).collect();
        out.push(with(family, &["-D"], &t));
    }
    for c in &found.chains {
        out.push(ipt(family, &["-F", c]));
    }
    for c in &found.chains {
        out.push(ipt(family, &["-X", c]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netem::commands::lines;

    fn spec(split: Split) -> RuleSpec {
        RuleSpec {
            interface: "eth0".into(),
            split,
            game_port: 27960,
            queue_num: QUEUE_NUM,
        }
    }

    fn t(index: u32, ip: &str) -> Target {
        Target {
            index,
            ip: Some(ip.parse().unwrap()),
        }
    }

    #[test]
    fn symmetric_rules_exact() {
        let got = lines(&build_commands(
            &spec(Split::Symmetric),
            &[t(1, "10.0.0.11"), t(2, "2001:db8::12")],
        ));
        let q = "-j NFQUEUE --queue-num 20289 --queue-bypass";
        let want = [
            "iptables -w 5 -t mangle -N OA_RUN_SHAPE_OUT".to_string(),
            format!(
                "iptables -w 5 -t mangle -A OA_RUN_SHAPE_OUT -d 10.0.0.11/32 -p udp -m udp --sport 27960 {q}"
            ),
            "iptables -w 5 -t mangle -N OA_RUN_SHAPE_IN".into(),
            format!(
                "iptables -w 5 -t mangle -A OA_RUN_SHAPE_IN -s 10.0.0.11/32 -p udp -m udp --dport 27960 {q}"
            ),
            "iptables -w 5 -t mangle -I POSTROUTING 1 -o eth0 -j OA_RUN_SHAPE_OUT".into(),
            "iptables -w 5 -t mangle -I PREROUTING 1 -i eth0 -j OA_RUN_SHAPE_IN".into(),
            "ip6tables -w 5 -t mangle -N OA_RUN_SHAPE_OUT".into(),
            format!(
                "ip6tables -w 5 -t mangle -A OA_RUN_SHAPE_OUT -d 2001:db8::12/128 -p udp -m udp --sport 27960 {q}"
            ),
            "ip6tables -w 5 -t mangle -N OA_RUN_SHAPE_IN".into(),
            format!(
                "ip6tables -w 5 -t mangle -A OA_RUN_SHAPE_IN -s 2001:db8::12/128 -p udp -m udp --dport 27960 {q}"
            ),
            "ip6tables -w 5 -t mangle -I POSTROUTING 1 -o eth0 -j OA_RUN_SHAPE_OUT".into(),
            "ip6tables -w 5 -t mangle -I PREROUTING 1 -i eth0 -j OA_RUN_SHAPE_IN".into(),
        ];
        assert_eq!(got, want);
        assert_eq!(
            lines(&teardown_commands(&spec(Split::Symmetric), &[Family::V4])),
            [
                "iptables -w 5 -t mangle -D POSTROUTING -o eth0 -j OA_RUN_SHAPE_OUT",
                "iptables -w 5 -t mangle -D PREROUTING -i eth0 -j OA_RUN_SHAPE_IN",
                "iptables -w 5 -t mangle -F OA_RUN_SHAPE_OUT",
                "iptables -w 5 -t mangle -X OA_RUN_SHAPE_OUT",
                "iptables -w 5 -t mangle -F OA_RUN_SHAPE_IN",
                "iptables -w 5 -t mangle -X OA_RUN_SHAPE_IN",
            ]
        );
    }

    #[test]
    fn egress_has_no_ingress_chain_and_placeholders() {
        let got = lines(&build_commands(
            &spec(Split::Egress),
            &[Target { index: 2, ip: None }],
        ));
        assert_eq!(got.len(), 3);
        assert!(got[1].contains("-d <ip-of-player2>/32"));
        assert!(got.iter().all(|l| !l.contains("OA_RUN_SHAPE_IN")));
    }

    #[test]
    fn expected_rules_match_build_commands() {
        let s = spec(Split::Symmetric);
        let p = [t(1, "10.0.0.11")];
        let rules = expected_rules(&s, Family::V4, &p);
        assert_eq!(rules.len(), 4);
        for r in rules.iter().filter(|r| r.starts_with("-A")) {
            assert!(
                lines(&build_commands(&s, &p))
                    .iter()
                    .any(|c| c.ends_with(&r[3..])),
                "{r}"
            );
        }
        assert_eq!(
            expected_jumps(&s),
            [
                "-A POSTROUTING -o eth0 -j OA_RUN_SHAPE_OUT",
                "-A PREROUTING -i eth0 -j OA_RUN_SHAPE_IN"
            ]
        );
    }

    #[test]
    fn finds_only_our_chains_and_jumps() {
        let text = "-P PREROUTING ACCEPT\n-N OA_RUN_SHAPE_OUT\n-N MYCHAIN\n\
                    -A PREROUTING -i br0 -j OA_RUN_SHAPE_IN\n-A POSTROUTING -o eth0 -j OA_RUN_SHAPE_OUT\n\
                    -A POSTROUTING -j MYCHAIN\n-A OA_RUN_SHAPE_OUT -d 10.0.0.1/32 -p udp -m udp --sport 1 -j NFQUEUE --queue-num 20289 --queue-bypass\n";
        let f = parse_found(text);
        assert_eq!(f.chains, ["OA_RUN_SHAPE_OUT"]);
        assert_eq!(f.jumps.len(), 2);
        assert_eq!(
            lines(&reset_commands(Family::V4, &f)),
            [
                "iptables -w 5 -t mangle -D PREROUTING -i br0 -j OA_RUN_SHAPE_IN",
                "iptables -w 5 -t mangle -D POSTROUTING -o eth0 -j OA_RUN_SHAPE_OUT",
                "iptables -w 5 -t mangle -F OA_RUN_SHAPE_OUT",
                "iptables -w 5 -t mangle -X OA_RUN_SHAPE_OUT",
            ]
        );
        assert!(!parse_found("-P INPUT ACCEPT\n-A INPUT -j MYCHAIN\n").any());
    }
}
