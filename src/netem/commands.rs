//! Pure generation of the `tc`/`ip` commands. Nothing here runs anything, so the exact command
//! lines can be golden-tested and shown in the dry run, and the runner executes exactly them.
//!
//! The tree (one per run, per device):
//! ```text
//! htb root 4f41: default 1
//! ├── class 4f41:1     unshaped default (everything that is not a player: SSH, DNS, …)
//! ├── class 4f41:101   player 1 ── leaf 101: netem delay … limit …
//! ├── class 4f41:102   player 2 ── leaf 102: netem delay … limit …
//! └── u32 filters: ip dst PLAYER/32, udp, sport GAMEPORT → the player's class
//! ```
//! Only the game's own UDP traffic is classified into a player's class: server → player packets
//! whose source port is the server's game port (and, with `symmetric`, player → server packets
//! whose destination port is the game port). Everything else to the same PC (OBS websocket,
//! SSH, ICMP) goes to the unshaped default class. The port keys assume an IPv4 header without
//! options (`ip sport` reads offset 20), which is what the game sends.
//! `4f41` is "OA" in ASCII: a root HTB with this handle marks a tree oa-run created, so a later
//! run (or `oa-run net-reset`) can recognise a leftover from a crash. Handles are derived from
//! the 1-based player index: class minor and leaf major are the digits of `100 + index` (tc reads
//! them as hex), so player 7 is class `4f41:107` with leaf `107:`.
//!
//! `symmetric` puts half the delay on an ifb device: an ingress qdisc on the interface redirects
//! packets *from* each player (`match ip src`) to the ifb, which carries the same tree with
//! filters on `ip src`.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::scenario::{Latency, Split};

/// Major handle of oa-run's root qdisc (hex for "OA").
pub const ROOT_MAJOR: &str = "4f41";
/// Handle of oa-run's root HTB qdisc.
pub const ROOT_HANDLE: &str = "4f41:";
/// The unshaped class every unclassified packet goes to.
pub const DEFAULT_CLASS: &str = "4f41:1";
/// Handle of the ingress qdisc (fixed by the kernel).
pub const INGRESS_HANDLE: &str = "ffff:";
/// HTB rate and ceil of every class: above any lab link, so HTB itself never shapes.
pub const CLASS_RATE: &str = "100gbit";
/// HTB burst: with the default (tiny at this rate) every packet counts as "over limit" and
/// costs a timer; 1 MB keeps HTB out of the way.
pub const CLASS_BURST: &str = "1mb";
/// Explicit DRR quantum: the default (rate / r2q) is far above the kernel's maximum at
/// 100 Gbit/s and makes HTB print "quantum of class … is big" warnings.
pub const CLASS_QUANTUM: &str = "60000";
/// u32 filter priority for IPv4 and IPv6 filters (one filter list per protocol).
const PRIO_V4: &str = "1";
const PRIO_V6: &str = "2";
/// The OpenArena/ioquake3 default server port (used when no address says otherwise).
pub const DEFAULT_GAME_PORT: u16 = 27960;
/// Highest player index whose handles stay valid (class minor `100 + index` read as hex, and a
/// u32 node id, must fit in 12 bits).
pub const MAX_PLAYER_INDEX: u32 = 899;

/// The leaf qdisc under each player's class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeafKind {
    /// netem with the player's delay: what a study uses.
    #[default]
    Netem,
    /// pfifo with the same limit and no delay: the identical tree for kernels without sch_netem,
    /// used by the structure tests (per-class counters still prove the classification).
    Pfifo,
}

/// What the tree looks like, independent of who plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeSpec {
    pub interface: String,
    pub split: Split,
    /// netem (or pfifo) queue limit in packets.
    pub limit: u32,
    pub leaf: LeafKind,
    /// The server's UDP game port: only game traffic is shaped.
    pub game_port: u16,
    /// The study's levels, for the jitter and loss of a level (found by its delay).
    pub levels: Vec<crate::scenario::Level>,
}

impl TreeSpec {
    pub fn new(latency: &Latency, leaf: LeafKind, game_port: u16) -> TreeSpec {
        TreeSpec {
            interface: latency.interface.clone(),
            split: latency.split,
            limit: latency.limit,
            leaf,
            game_port,
            levels: latency.levels.clone(),
        }
    }

    /// The ifb device used for the ingress half (`symmetric` only).
    pub fn ifb(&self) -> Option<String> {
        (self.split == Split::Symmetric).then(|| ifb_name(&self.interface))
    }
}

/// A player slot in the tree. `ip` is `None` only when describing commands before anyone joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// 1-based player index (the row of the latency design).
    pub index: u32,
    pub ip: Option<IpAddr>,
}

/// Direction of a half of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Server → player, on the interface itself (filters on `ip dst`).
    Egress,
    /// Player → server, on the ifb device (filters on `ip src`).
    Ingress,
}

/// One program invocation: run without a shell, shown shell-like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TcCommand {
    pub program: String,
    pub args: Vec<String>,
}

/// A piece of kernel state a command creates (so a failed setup can undo exactly what exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// oa-run's root HTB on the interface.
    Root,
    /// The ifb device (its whole tree goes with it).
    Ifb,
    /// The ingress qdisc on the interface (its filters go with it).
    Ingress,
}

impl TcCommand {
    pub fn new(program: &str, args: &[&str]) -> TcCommand {
        TcCommand {
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn tc(args: &[&str]) -> TcCommand {
        TcCommand::new("tc", args)
    }

    pub fn ip(args: &[&str]) -> TcCommand {
        TcCommand::new("ip", args)
    }

    fn args_are(&self, prefix: &[&str]) -> bool {
        self.args.len() >= prefix.len() && self.args.iter().zip(prefix).all(|(a, b)| a == b)
    }

    /// Whether this command only reads state (`show`, `-V`, iptables' `-S`).
    pub fn is_read_only(&self) -> bool {
        self.args
            .iter()
            .any(|a| a == "show" || a == "-S" || a == "-V")
    }

    /// The piece of state on `interface` this command creates, if any.
    pub fn creates(&self, interface: &str) -> Option<Piece> {
        match self.program.as_str() {
            "tc" if self.args_are(&["qdisc", "add", "dev", interface]) => {
                if self.args.get(4).map(String::as_str) == Some("root")
                    && self.args.iter().any(|a| a == ROOT_HANDLE)
                {
                    Some(Piece::Root)
                } else if self.args.last().map(String::as_str) == Some("ingress") {
                    Some(Piece::Ingress)
                } else {
                    None
                }
            }
            "ip" if self.args_are(&["link", "add"]) => Some(Piece::Ifb),
            _ => None,
        }
    }
}

impl fmt::Display for TcCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for a in &self.args {
            f.write_str(" ")?;
            f.write_str(&shell_quote(a))?;
        }
        Ok(())
    }
}

/// Quote an argument the way a shell would need it (only for display; nothing runs a shell).
fn shell_quote(a: &str) -> String {
    let plain = !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/,=@%+<>".contains(c));
    if plain {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// Class minor / leaf major of player `index` (1-based), as tc writes it.
fn slot_hex(index: u32) -> String {
    (100 + index).to_string()
}

/// `4f41:1NN`: the HTB class of player `index` (1-based).
pub fn class_id(index: u32) -> String {
    format!("{ROOT_MAJOR}:{}", slot_hex(index))
}

/// `1NN:`: the handle of player `index`'s leaf qdisc.
pub fn leaf_handle(index: u32) -> String {
    format!("{}:", slot_hex(index))
}

/// The ifb device of `interface`: `oaifb` and a hash of the name (fits the 15-character limit,
/// recognisable as oa-run's, one per interface).
pub fn ifb_name(interface: &str) -> String {
    // FNV-1a: tiny, stable across releases (unlike std's hasher).
    let mut h: u32 = 0x811c_9dc5;
    for b in interface.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("oaifb{h:08x}")
}

/// A delay in microseconds as tc reads it (`40ms`, `50500us`).
pub fn fmt_delay(us: u64) -> String {
    if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

/// The (egress, ingress) delay in microseconds for an added round-trip delay of `ms`.
pub fn split_delay(split: Split, ms: u64) -> (u64, Option<u64>) {
    let us = ms * 1000;
    match split {
        Split::Egress => (us, None),
        Split::Symmetric => (us / 2, Some(us - us / 2)),
    }
}

fn ip_text(t: &Target) -> (String, bool) {
    match t.ip {
        Some(IpAddr::V4(a)) => (format!("{a}/32"), false),
        Some(IpAddr::V6(a)) => (format!("{a}/128"), true),
        None => (format!("<ip-of-player{}>/32", t.index), false),
    }
}

/// One direction's netem parameters: delay and jitter in µs, loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeafParams {
    pub delay_us: u64,
    pub jitter_us: u64,
    pub loss: crate::scenario::Percent,
}

/// The (egress, ingress) parameters of a level: delay and jitter split like the delay (all on
/// egress, or half each way), loss applied in each shaped direction.
pub fn split_level(
    split: Split,
    level: &crate::scenario::Level,
) -> (LeafParams, Option<LeafParams>) {
    let (d_eg, d_in) = split_delay(split, level.delay_ms());
    let (j_eg, j_in) = split_delay(split, level.jitter_ms());
    let p = |delay_us, jitter_us| LeafParams {
        delay_us,
        jitter_us,
        loss: level.loss,
    };
    (p(d_eg, j_eg), d_in.map(|d| p(d, j_in.unwrap_or(0))))
}

fn leaf_args(spec: &TreeSpec, p: LeafParams) -> Vec<String> {
    let limit = spec.limit.to_string();
    match spec.leaf {
        LeafKind::Netem => {
            let mut v = vec!["netem".into(), "delay".into(), fmt_delay(p.delay_us)];
            // netem's jitter without a `distribution` is uniform (delay ± jitter), like the
            // nfqueue shaper's; unlike it, netem reorders packets whose jitter exceeds the gap.
            if p.jitter_us > 0 {
                v.push(fmt_delay(p.jitter_us));
            }
            if p.loss.ppm() > 0 {
                v.extend(["loss".into(), "random".into(), p.loss.to_string()]);
            }
            v.extend(["limit".into(), limit]);
            v
        }
        LeafKind::Pfifo => vec!["pfifo".into(), "limit".into(), limit],
    }
}

fn with_tail(mut c: TcCommand, tail: Vec<String>) -> TcCommand {
    c.args.extend(tail);
    c
}

/// An HTB class under the root (the default class, or a player's).
fn class_add(dev: &str, classid: &str, tail: &[&str]) -> TcCommand {
    with_tail(
        TcCommand::tc(&[
            "class",
            "add",
            "dev",
            dev,
            "parent",
            ROOT_HANDLE,
            "classid",
            classid,
        ]),
        tail.iter().map(|s| s.to_string()).collect(),
    )
}

/// The HTB tree on one device: root, default class, and per player a class, a leaf (at zero
/// delay) and a u32 filter.
fn tree_commands(spec: &TreeSpec, dev: &str, dir: Direction, players: &[Target]) -> Vec<TcCommand> {
    let class_tail = [
        "htb",
        "rate",
        CLASS_RATE,
        "ceil",
        CLASS_RATE,
        "burst",
        CLASS_BURST,
        "cburst",
        CLASS_BURST,
        "quantum",
        CLASS_QUANTUM,
    ];
    let mut out = vec![
        TcCommand::tc(&[
            "qdisc",
            "add",
            "dev",
            dev,
            "root",
            "handle",
            ROOT_HANDLE,
            "htb",
            "default",
            "1",
        ]),
        class_add(dev, DEFAULT_CLASS, &class_tail),
    ];
    for t in players {
        let class = class_id(t.index);
        let leaf = leaf_handle(t.index);
        out.push(class_add(dev, &class, &class_tail));
        out.push(with_tail(
            TcCommand::tc(&[
                "qdisc", "add", "dev", dev, "parent", &class, "handle", &leaf,
            ]),
            leaf_args(spec, LeafParams::default()),
        ));
        out.push(game_filter(
            dev,
            ROOT_HANDLE,
            t,
            dir,
            spec.game_port,
            &["flowid", &class],
        ));
    }
    out
}

/// A u32 filter on one player's game traffic under `parent`, then `then` (a `flowid` into
/// their class, or the ingress redirect to the ifb): UDP with the player's address as
/// destination and the game port as source (egress), or the player's address as source and the
/// game port as destination (ingress).
fn game_filter(
    dev: &str,
    parent: &str,
    t: &Target,
    dir: Direction,
    game_port: u16,
    then: &[&str],
) -> TcCommand {
    let (addr, v6) = ip_text(t);
    let (proto, prio, m) = if v6 {
        ("ipv6", PRIO_V6, "ip6")
    } else {
        ("ip", PRIO_V4, "ip")
    };
    let (side, port_side) = match dir {
        Direction::Egress => ("dst", "sport"),
        Direction::Ingress => ("src", "dport"),
    };
    let port = game_port.to_string();
    with_tail(
        TcCommand::tc(&[
            "filter", "add", "dev", dev, "parent", parent, "protocol", proto, "prio", prio, "u32",
            "match", m, side, &addr, "match", m, "protocol", "17", "0xff", "match", m, port_side,
            &port, "0xffff",
        ]),
        then.iter().map(|s| s.to_string()).collect(),
    )
}

/// Every command that builds the tree for `players` (all delays zero), in order. For
/// `symmetric` the ifb tree is complete before the ingress redirect exists, so a redirected
/// packet never meets a half-built tree.
pub fn build_commands(spec: &TreeSpec, players: &[Target]) -> Vec<TcCommand> {
    let dev = spec.interface.as_str();
    let mut out = tree_commands(spec, dev, Direction::Egress, players);
    if let Some(ifb) = spec.ifb() {
        out.push(TcCommand::ip(&["link", "add", "dev", &ifb, "type", "ifb"]));
        out.push(TcCommand::ip(&["link", "set", "dev", &ifb, "up"]));
        out.extend(tree_commands(spec, &ifb, Direction::Ingress, players));
        out.push(TcCommand::tc(&[
            "qdisc",
            "add",
            "dev",
            dev,
            "handle",
            INGRESS_HANDLE,
            "ingress",
        ]));
        for t in players {
            out.push(game_filter(
                dev,
                INGRESS_HANDLE,
                t,
                Direction::Ingress,
                spec.game_port,
                &["action", "mirred", "egress", "redirect", "dev", &ifb],
            ));
        }
    }
    out
}

/// The commands that set each player's delay for one match: only the leaves change
/// (`tc qdisc change`), never classes or filters. `latency_ms[i]` is the added round-trip delay
/// of player `i + 1`; players in `indices` without an entry are left unchanged.
pub fn match_commands(spec: &TreeSpec, indices: &[u32], latency_ms: &[u64]) -> Vec<TcCommand> {
    let mut out = Vec::new();
    let ifb = spec.ifb();
    for &i in indices {
        let Some(&ms) = latency_ms.get(i as usize - 1) else {
            continue;
        };
        let level = crate::plan::latency::level_for_ms(&spec.levels, ms);
        let (eg, ing) = split_level(spec.split, &level);
        let class = class_id(i);
        let leaf = leaf_handle(i);
        out.push(with_tail(
            TcCommand::tc(&[
                "qdisc",
                "change",
                "dev",
                &spec.interface,
                "parent",
                &class,
                "handle",
                &leaf,
            ]),
            leaf_args(spec, eg),
        ));
        if let (Some(ifb), Some(ing)) = (&ifb, ing) {
            out.push(with_tail(
                TcCommand::tc(&[
                    "qdisc", "change", "dev", ifb, "parent", &class, "handle", &leaf,
                ]),
                leaf_args(spec, ing),
            ));
        }
    }
    out
}

/// Which pieces of the tree exist (were created by this run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Created {
    pub root: bool,
    pub ifb: bool,
    pub ingress: bool,
}

impl Created {
    pub fn all(spec: &TreeSpec) -> Created {
        let sym = spec.split == Split::Symmetric;
        Created {
            root: true,
            ifb: sym,
            ingress: sym,
        }
    }
    pub fn add(&mut self, p: Piece) {
        match p {
            Piece::Root => self.root = true,
            Piece::Ifb => self.ifb = true,
            Piece::Ingress => self.ingress = true,
        }
    }
    pub fn any(&self) -> bool {
        self.root || self.ifb || self.ingress
    }
}

/// The commands that remove what was created, in a safe order: first the ingress redirect (so
/// no packet is sent to a vanishing ifb), then the ifb, then the root (which takes the classes,
/// leaves and filters with it; the kernel puts the device's default qdisc back).
pub fn teardown_commands(spec: &TreeSpec, created: Created) -> Vec<TcCommand> {
    let dev = spec.interface.as_str();
    let mut out = Vec::new();
    if created.ingress {
        out.push(TcCommand::tc(&["qdisc", "del", "dev", dev, "ingress"]));
    }
    if created.ifb {
        out.push(TcCommand::ip(&["link", "del", "dev", &ifb_name(dev)]));
    }
    if created.root {
        out.push(TcCommand::tc(&["qdisc", "del", "dev", dev, "root"]));
    }
    out
}

/// Lines for display.
pub fn lines(cmds: &[TcCommand]) -> Vec<String> {
    cmds.iter().map(ToString::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(split: Split) -> TreeSpec {
        TreeSpec {
            interface: "eth0".into(),
            split,
            limit: 10_000,
            leaf: LeafKind::Netem,
            game_port: 27960,
            levels: Vec::new(),
        }
    }

    #[test]
    fn handles_read_as_decimal_digits() {
        assert_eq!(class_id(1), "4f41:101");
        assert_eq!(class_id(64), "4f41:164");
        assert_eq!(leaf_handle(7), "107:");
        assert_eq!(ifb_name("eth0").len(), 13);
        assert_ne!(ifb_name("eth0"), ifb_name("eth1"));
    }

    #[test]
    fn delay_split_is_exact() {
        assert_eq!(split_delay(Split::Egress, 101), (101_000, None));
        assert_eq!(split_delay(Split::Symmetric, 101), (50_500, Some(50_500)));
        assert_eq!(split_delay(Split::Symmetric, 0), (0, Some(0)));
        assert_eq!(fmt_delay(50_500), "50500us");
        assert_eq!(fmt_delay(0), "0ms");
        assert_eq!(fmt_delay(200_000), "200ms");
    }

    #[test]
    fn one_player_egress_exact() {
        let p = [Target {
            index: 1,
            ip: Some("10.0.0.11".parse().unwrap()),
        }];
        let s = spec(Split::Egress);
        let got = lines(&build_commands(&s, &p));
        let want = [
            "tc qdisc add dev eth0 root handle 4f41: htb default 1",
            "tc class add dev eth0 parent 4f41: classid 4f41:1 htb rate 100gbit ceil 100gbit burst 1mb cburst 1mb quantum 60000",
            "tc class add dev eth0 parent 4f41: classid 4f41:101 htb rate 100gbit ceil 100gbit burst 1mb cburst 1mb quantum 60000",
            "tc qdisc add dev eth0 parent 4f41:101 handle 101: netem delay 0ms limit 10000",
            "tc filter add dev eth0 parent 4f41: protocol ip prio 1 u32 match ip dst 10.0.0.11/32 match ip protocol 17 0xff match ip sport 27960 0xffff flowid 4f41:101",
        ];
        assert_eq!(got, want);
        assert_eq!(
            lines(&match_commands(&s, &[1], &[150])),
            ["tc qdisc change dev eth0 parent 4f41:101 handle 101: netem delay 150ms limit 10000"]
        );
        assert_eq!(
            lines(&teardown_commands(&s, Created::all(&s))),
            ["tc qdisc del dev eth0 root"]
        );
    }

    #[test]
    fn jitter_and_loss_go_into_the_netem_leaves() {
        let mut s = spec(Split::Symmetric);
        s.levels = vec![
            crate::scenario::Level::delay(crate::scenario::Duration::from_millis(100)),
            serde_json::from_str(r#"{"delay":"200ms","jitter":"20ms","loss":"0.5%"}"#).unwrap(),
        ];
        let got = lines(&match_commands(&s, &[1, 2], &[200, 100]));
        let ifb = ifb_name("eth0");
        assert_eq!(
            got,
            [
                "tc qdisc change dev eth0 parent 4f41:101 handle 101: netem delay 100ms 10ms loss random 0.5% limit 10000".to_string(),
                format!("tc qdisc change dev {ifb} parent 4f41:101 handle 101: netem delay 100ms 10ms loss random 0.5% limit 10000"),
                "tc qdisc change dev eth0 parent 4f41:102 handle 102: netem delay 50ms limit 10000".into(),
                format!("tc qdisc change dev {ifb} parent 4f41:102 handle 102: netem delay 50ms limit 10000"),
            ]
        );
    }

    #[test]
    fn ipv6_and_placeholders() {
        let p = [
            Target {
                index: 1,
                ip: Some("2001:db8::11".parse().unwrap()),
            },
            Target { index: 2, ip: None },
        ];
        let got = lines(&build_commands(&spec(Split::Symmetric), &p));
        assert!(got.contains(&"tc filter add dev eth0 parent 4f41: protocol ipv6 prio 2 u32 match ip6 dst 2001:db8::11/128 match ip6 protocol 17 0xff match ip6 sport 27960 0xffff flowid 4f41:101".to_string()));
        let ifb = ifb_name("eth0");
        assert!(got.contains(&format!("tc filter add dev eth0 parent ffff: protocol ipv6 prio 2 u32 match ip6 src 2001:db8::11/128 match ip6 protocol 17 0xff match ip6 dport 27960 0xffff action mirred egress redirect dev {ifb}")));
        assert!(got.contains(&"tc filter add dev eth0 parent 4f41: protocol ip prio 1 u32 match ip dst <ip-of-player2>/32 match ip protocol 17 0xff match ip sport 27960 0xffff flowid 4f41:102".to_string()));
    }

    #[test]
    fn creates_and_read_only() {
        let s = spec(Split::Symmetric);
        let cmds = build_commands(
            &s,
            &[Target {
                index: 1,
                ip: Some("10.0.0.1".parse().unwrap()),
            }],
        );
        let pieces: Vec<Piece> = cmds.iter().filter_map(|c| c.creates("eth0")).collect();
        // The ifb's own root goes with the ifb, so only the interface's root counts.
        assert_eq!(pieces, [Piece::Root, Piece::Ifb, Piece::Ingress]);
        assert!(TcCommand::tc(&["-s", "-j", "qdisc", "show", "dev", "x"]).is_read_only());
        assert!(!cmds[0].is_read_only());
    }

    #[test]
    fn display_quotes_only_what_needs_it() {
        let c = TcCommand::new("tc", &["a b", "it's", "4f41:101"]);
        assert_eq!(c.to_string(), r"tc 'a b' 'it'\''s' 4f41:101");
    }
}
