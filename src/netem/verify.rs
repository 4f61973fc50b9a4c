//! Reading the tree back from the kernel (`tc -s -j qdisc/class/filter show`) and checking it
//! against what was asked for. The parsed state is also what the manifest records.
//!
//! Formats seen: `qdisc show -j` and `filter show -j` are JSON in every iproute2 with `-j`;
//! `class show` ignores `-j` up to at least iproute2 6.1 (prints text) and is JSON later, so both
//! are parsed. u32 filters print one `"match"` key per 32-bit key (IPv6 has four) in the same
//! object, which a plain JSON map would collapse, hence the hand-written visitor.

use std::fmt;
use std::net::IpAddr;

use regex::Regex;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::commands::{
    Direction, INGRESS_HANDLE, LeafKind, ROOT_HANDLE, TcCommand, TreeSpec, class_id, leaf_handle,
};
use super::error::NetemError;
use super::runner::{CommandRunner, run_checked};

/// A qdisc as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QdiscState {
    pub kind: String,
    pub handle: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub root: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// netem only: the delay in microseconds (0 when netem prints no delay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_us: Option<u64>,
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
    pub backlog: u64,
    pub qlen: u64,
}

/// A class with its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassState {
    pub kind: String,
    pub handle: String,
    /// Handle of the leaf qdisc (`101:`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf: Option<String>,
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
}

/// One 32-bit u32 key: `(packet[off] & mask) == value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct U32Key {
    pub value: u32,
    pub mask: u32,
    pub off: i64,
}

/// A u32 filter rule (the hash-table entries without keys are left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilterRule {
    pub parent: String,
    pub protocol: String,
    pub pref: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flowid: Option<String>,
    pub keys: Vec<U32Key>,
    /// `action mirred egress redirect dev X`: X.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_to: Option<String>,
}

/// Everything read back from one device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceState {
    pub device: String,
    pub qdiscs: Vec<QdiscState>,
    pub classes: Vec<ClassState>,
    pub filters: Vec<FilterRule>,
    /// `tc -s -j qdisc show` exactly as the kernel reported it.
    pub raw_qdisc: Value,
}

impl DeviceState {
    pub fn class(&self, handle: &str) -> Option<&ClassState> {
        self.classes.iter().find(|c| same_handle(&c.handle, handle))
    }
    pub fn qdisc(&self, handle: &str) -> Option<&QdiscState> {
        self.qdiscs.iter().find(|q| same_handle(&q.handle, handle))
    }
}

/// Compare tc handles textually but tolerant of `0x` and a missing minor (`101:` vs `101:0`).
fn same_handle(a: &str, b: &str) -> bool {
    norm_handle(a) == norm_handle(b)
}

fn norm_handle(h: &str) -> (u32, u32) {
    let h = h.trim().trim_start_matches("0x");
    let (maj, min) = h.split_once(':').unwrap_or((h, ""));
    let p = |s: &str| u32::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or(0);
    (p(maj), p(min))
}

fn bad(cmd: &TcCommand, detail: impl fmt::Display) -> NetemError {
    NetemError::BadOutput {
        command: cmd.to_string(),
        detail: detail.to_string(),
    }
}

fn u64_at(v: &Value, key: &str) -> u64 {
    v.get(key)
        .or_else(|| v.get("stats").and_then(|s| s.get(key)))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// Parse `tc -s -j qdisc show` output.
pub fn parse_qdiscs(text: &str) -> Result<(Vec<QdiscState>, Value), String> {
    let raw: Value = serde_json::from_str(text.trim()).map_err(|e| e.to_string())?;
    let arr = raw.as_array().ok_or("expected a JSON array")?;
    let mut out = Vec::with_capacity(arr.len());
    for q in arr {
        let s = |k: &str| q.get(k).and_then(Value::as_str).map(str::to_string);
        let kind = s("kind").ok_or("a qdisc without kind")?;
        let opts = q.get("options");
        let delay_us = (kind == "netem").then(|| {
            opts.and_then(|o| o.get("delay"))
                .and_then(|d| d.get("delay"))
                .and_then(Value::as_f64)
                .map(|secs| (secs * 1e6).round() as u64)
                .unwrap_or(0)
        });
        out.push(QdiscState {
            handle: s("handle").unwrap_or_default(),
            parent: s("parent"),
            root: q.get("root").and_then(Value::as_bool).unwrap_or(false),
            limit: opts.and_then(|o| o.get("limit")).and_then(Value::as_u64),
            delay_us,
            packets: u64_at(q, "packets"),
            bytes: u64_at(q, "bytes"),
            drops: u64_at(q, "drops"),
            backlog: u64_at(q, "backlog"),
            qlen: u64_at(q, "qlen"),
            kind,
        });
    }
    Ok((out, raw))
}

/// Parse `tc -s class show` output, JSON (newer iproute2) or text (6.1 and older).
pub fn parse_classes(text: &str) -> Result<Vec<ClassState>, String> {
    let t = text.trim();
    if t.starts_with('[') {
        let raw: Value = serde_json::from_str(t).map_err(|e| e.to_string())?;
        let arr = raw.as_array().ok_or("expected a JSON array")?;
        return Ok(arr
            .iter()
            .map(|c| {
                let s = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
                ClassState {
                    kind: s("class").unwrap_or_default(),
                    handle: s("handle").unwrap_or_default(),
                    leaf: c.get("leaf").and_then(|l| match l {
                        Value::String(s) => Some(format!(
                            "{}:",
                            s.trim_start_matches("0x").trim_end_matches(':')
                        )),
                        Value::Number(n) => n.as_u64().map(|n| format!("{n:x}:")),
                        _ => None,
                    }),
                    packets: u64_at(c, "packets"),
                    bytes: u64_at(c, "bytes"),
                    drops: u64_at(c, "drops"),
                }
            })
            .collect());
    }
    let head = Regex::new(r"^class (\S+) (\S+) ").expect("static regex");
    let leaf = Regex::new(r" leaf ([0-9a-fA-F]+:)").expect("static regex");
    let sent = Regex::new(r"Sent (\d+) bytes (\d+) pkts? \(dropped (\d+)").expect("static regex");
    let mut out: Vec<ClassState> = Vec::new();
    for line in t.lines() {
        if let Some(c) = head.captures(line) {
            out.push(ClassState {
                kind: c[1].to_string(),
                handle: c[2].to_string(),
                leaf: leaf.captures(line).map(|l| l[1].to_string()),
                packets: 0,
                bytes: 0,
                drops: 0,
            });
        } else if let (Some(c), Some(last)) = (sent.captures(line), out.last_mut()) {
            let n = |i: usize| c[i].parse::<u64>().unwrap_or(0);
            last.bytes = n(1);
            last.packets = n(2);
            last.drops = n(3);
        }
    }
    if out.is_empty() && !t.is_empty() {
        return Err(format!(
            "no `class …` line in {:?}",
            t.chars().take(120).collect::<String>()
        ));
    }
    Ok(out)
}

#[derive(Debug, Default, Deserialize)]
struct RawFilter {
    #[serde(default)]
    parent: String,
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    pref: u32,
    #[serde(default)]
    options: Option<U32Options>,
}

#[derive(Debug, Default)]
struct U32Options {
    flowid: Option<String>,
    keys: Vec<U32Key>,
    redirect_to: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawKey {
    value: String,
    mask: String,
    off: i64,
}

#[derive(Debug, Deserialize)]
struct RawAction {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    to_dev: Option<String>,
}

impl<'de> Deserialize<'de> for U32Options {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = U32Options;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("u32 filter options")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<U32Options, A::Error> {
                let mut o = U32Options::default();
                while let Some(k) = m.next_key::<String>()? {
                    match k.as_str() {
                        "flowid" => o.flowid = Some(m.next_value()?),
                        "match" => {
                            let v: Value = m.next_value()?;
                            // `tc -p` prints decoded matches; only the raw form is used here.
                            if let Ok(k) = serde_json::from_value::<RawKey>(v) {
                                let hex =
                                    |s: &str| u32::from_str_radix(s, 16).map_err(de::Error::custom);
                                o.keys.push(U32Key {
                                    value: hex(&k.value)?,
                                    mask: hex(&k.mask)?,
                                    off: k.off,
                                });
                            }
                        }
                        "actions" => {
                            let acts: Vec<RawAction> = m.next_value()?;
                            o.redirect_to = acts
                                .into_iter()
                                .find(|a| a.kind == "mirred")
                                .and_then(|a| a.to_dev);
                        }
                        _ => {
                            let _: IgnoredAny = m.next_value()?;
                        }
                    }
                }
                Ok(o)
            }
        }
        d.deserialize_map(V)
    }
}

/// Parse `tc -j filter show … parent P` output, with `parent` for entries that omit it (tc
/// leaves it out when the command named it).
fn parse_filters_of(text: &str, parent: &str) -> Result<Vec<FilterRule>, String> {
    let mut v = parse_filters(text)?;
    for f in &mut v {
        if f.parent.is_empty() {
            f.parent = parent.into();
        }
    }
    Ok(v)
}

/// Parse `tc -j filter show` output (u32 rules with keys only).
pub fn parse_filters(text: &str) -> Result<Vec<FilterRule>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(Vec::new());
    }
    let raw: Vec<RawFilter> = serde_json::from_str(t).map_err(|e| e.to_string())?;
    Ok(raw
        .into_iter()
        .filter_map(|f| {
            let o = f.options?;
            (!o.keys.is_empty()).then_some(FilterRule {
                parent: f.parent,
                protocol: f.protocol,
                pref: f.pref,
                flowid: o.flowid,
                keys: o.keys,
                redirect_to: o.redirect_to,
            })
        })
        .collect())
}

/// Read qdiscs, classes (with counters) and filters of `dev`. With `ingress`, the interface's
/// ingress filters are read too (they live on `ffff:`).
pub fn read_device(
    runner: &dyn CommandRunner,
    dev: &str,
    ingress: bool,
) -> Result<DeviceState, NetemError> {
    let qc = TcCommand::tc(&["-s", "-j", "qdisc", "show", "dev", dev]);
    let out = run_checked(runner, &qc, dev)?;
    let (qdiscs, raw_qdisc) = parse_qdiscs(&out.stdout).map_err(|e| bad(&qc, e))?;
    let cc = TcCommand::tc(&["-s", "-j", "class", "show", "dev", dev]);
    let out = run_checked(runner, &cc, dev)?;
    let classes = parse_classes(&out.stdout).map_err(|e| bad(&cc, e))?;
    let fc = TcCommand::tc(&["-j", "filter", "show", "dev", dev, "parent", ROOT_HANDLE]);
    let mut filters = if qdiscs.iter().any(|q| same_handle(&q.handle, ROOT_HANDLE)) {
        let out = run_checked(runner, &fc, dev)?;
        parse_filters_of(&out.stdout, ROOT_HANDLE).map_err(|e| bad(&fc, e))?
    } else {
        Vec::new()
    };
    if ingress {
        let ic = TcCommand::tc(&["-j", "filter", "show", "dev", dev, "ingress"]);
        let out = run_checked(runner, &ic, dev)?;
        filters.extend(parse_filters_of(&out.stdout, INGRESS_HANDLE).map_err(|e| bad(&ic, e))?);
    }
    Ok(DeviceState {
        device: dev.into(),
        qdiscs,
        classes,
        filters,
        raw_qdisc,
    })
}

/// The u32 keys of one player's game-traffic filter, in the order the filter gives them: the
/// address (as source with `src`, else destination), UDP, and the game port (destination port
/// with `src`, else source port).
pub fn keys_for(ip: IpAddr, src: bool, game_port: u16) -> Vec<U32Key> {
    let full = u32::MAX;
    let port = u32::from(game_port);
    let (port_value, port_mask) = if src {
        (port, 0x0000_ffff)
    } else {
        (port << 16, 0xffff_0000)
    };
    match ip {
        IpAddr::V4(a) => vec![
            U32Key {
                value: u32::from(a),
                mask: full,
                off: if src { 12 } else { 16 },
            },
            // Protocol is the second byte of the word at offset 8 (TTL, protocol, checksum).
            U32Key {
                value: 17 << 16,
                mask: 0x00ff_0000,
                off: 8,
            },
            U32Key {
                value: port_value,
                mask: port_mask,
                off: 20,
            },
        ],
        IpAddr::V6(a) => {
            let base = if src { 8 } else { 24 };
            let mut keys: Vec<U32Key> = a
                .octets()
                .chunks(4)
                .enumerate()
                .map(|(i, c)| U32Key {
                    value: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                    mask: full,
                    off: base + 4 * i as i64,
                })
                .collect();
            // Next header is the third byte of the word at offset 4.
            keys.push(U32Key {
                value: 17 << 8,
                mask: 0x0000_ff00,
                off: 4,
            });
            keys.push(U32Key {
                value: port_value,
                mask: port_mask,
                off: 40,
            });
            keys
        }
    }
}

/// Counters of one player's class and leaf, cumulative since the tree was built.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub class_packets: u64,
    pub class_bytes: u64,
    pub class_drops: u64,
    /// Packets the leaf dropped (a full netem queue shows up here).
    pub leaf_drops: u64,
    pub leaf_backlog_packets: u64,
}

/// One direction of one player's shaping, as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppliedDirection {
    pub device: String,
    pub class_id: String,
    pub leaf_handle: String,
    pub leaf: LeafKind,
    /// The delay asked for, in milliseconds.
    pub planned_delay_ms: f64,
    /// The delay the kernel reports (netem leaves only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<f64>,
    pub limit: u64,
    pub counters: Counters,
}

/// Check one player's half on `state` and describe it. `Err` says what differs.
pub fn check_direction(
    spec: &TreeSpec,
    state: &DeviceState,
    dir: Direction,
    index: u32,
    ip: IpAddr,
    planned_us: u64,
) -> Result<AppliedDirection, String> {
    let class = class_id(index);
    let leaf = leaf_handle(index);
    let c = state
        .class(&class)
        .ok_or_else(|| format!("player {index}'s class {class} is missing"))?;
    if !c.leaf.as_deref().is_some_and(|l| same_handle(l, &leaf)) {
        return Err(format!(
            "class {class} has leaf {:?}, expected {leaf}",
            c.leaf
        ));
    }
    let q = state
        .qdisc(&leaf)
        .ok_or_else(|| format!("player {index}'s leaf qdisc {leaf} is missing"))?;
    let want_kind = match spec.leaf {
        LeafKind::Netem => "netem",
        LeafKind::Pfifo => "pfifo",
    };
    if q.kind != want_kind {
        return Err(format!("leaf {leaf} is {}, expected {want_kind}", q.kind));
    }
    if q.limit != Some(u64::from(spec.limit)) {
        return Err(format!(
            "leaf {leaf} has limit {:?}, expected {}",
            q.limit, spec.limit
        ));
    }
    let delay_ms = match (spec.leaf, q.delay_us) {
        (LeafKind::Netem, Some(got)) => {
            // iproute2 6.1 converts through scheduler ticks: allow a couple of µs.
            if got.abs_diff(planned_us) > 2 {
                return Err(format!(
                    "player {index}'s delay is {} ms, expected {} ms",
                    got as f64 / 1000.0,
                    planned_us as f64 / 1000.0
                ));
            }
            Some(got as f64 / 1000.0)
        }
        _ => None,
    };
    let want = keys_for(ip, dir == Direction::Ingress, spec.game_port);
    let has_filter = state.filters.iter().any(|f| {
        same_handle(&f.parent, ROOT_HANDLE)
            && f.flowid
                .as_deref()
                .is_some_and(|fl| same_handle(fl, &class))
            && f.keys == want
    });
    if !has_filter {
        return Err(format!(
            "no filter sends {ip} to player {index}'s class {class}"
        ));
    }
    Ok(AppliedDirection {
        device: state.device.clone(),
        class_id: class,
        leaf_handle: leaf,
        leaf: spec.leaf,
        planned_delay_ms: planned_us as f64 / 1000.0,
        delay_ms,
        limit: q.limit.unwrap_or(0),
        counters: Counters {
            class_packets: c.packets,
            class_bytes: c.bytes,
            class_drops: c.drops,
            leaf_drops: q.drops,
            leaf_backlog_packets: q.qlen,
        },
    })
}

/// Whether the interface's ingress redirects packets from `ip` to `ifb`.
pub fn check_redirect(
    state: &DeviceState,
    ip: IpAddr,
    game_port: u16,
    ifb: &str,
) -> Result<(), String> {
    let want = keys_for(ip, true, game_port);
    state
        .filters
        .iter()
        .any(|f| {
            same_handle(&f.parent, INGRESS_HANDLE)
                && f.keys == want
                && f.redirect_to.as_deref() == Some(ifb)
        })
        .then_some(())
        .ok_or_else(|| format!("no ingress filter redirects {ip} to {ifb}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from iproute2 6.1 on this machine (netem's shape from its source, since this
    // kernel has no sch_netem).
    const QDISC: &str = r#"[{"kind":"htb","handle":"4f41:","root":true,"refcnt":3,"options":{"r2q":10,"default":"0x1","direct_packets_stat":0,"direct_qlen":1000},"bytes":90,"packets":1,"drops":0,"overlimits":0,"requeues":0,"backlog":0,"qlen":0},{"kind":"netem","handle":"101:","parent":"4f41:101","options":{"limit":10000,"delay":{"delay":0.1005,"jitter":0,"correlation":0},"ecn":false,"gap":0},"bytes":0,"packets":0,"drops":3,"overlimits":0,"requeues":0,"backlog":0,"qlen":0},{"kind":"netem","handle":"102:","parent":"4f41:102","options":{"limit":10000,"ecn":false,"gap":0},"bytes":0,"packets":0,"drops":0,"overlimits":0,"requeues":0,"backlog":0,"qlen":0}]"#;
    const CLASS_TEXT: &str = "class htb 4f41:101 root leaf 101: prio 0 rate 100Gbit ceil 100Gbit burst 0b cburst 0b \n Sent 270 bytes 3 pkt (dropped 0, overlimits 0 requeues 0) \n backlog 0b 0p requeues 0\n lended: 0 borrowed: 0 giants: 0\n tokens: 15 ctokens: 15\n\nclass htb 4f41:1 root prio 0 rate 100Gbit ceil 100Gbit burst 0b cburst 0b \n Sent 90 bytes 1 pkt (dropped 0, overlimits 1 requeues 0) \n backlog 0b 0p requeues 0\n";
    const FILTER: &str = r#"[{"parent":"4f41:","protocol":"ip","pref":1,"kind":"u32","chain":0},{"parent":"4f41:","protocol":"ip","pref":1,"kind":"u32","chain":0,"options":{"fh":"801:","ht_divisor":1}},{"parent":"4f41:","protocol":"ip","pref":1,"kind":"u32","chain":0,"options":{"fh":"801::800","order":2048,"key_ht":"801","bkt":"0","flowid":"4f41:101","not_in_hw":true,"match":{"value":"a4d000b","mask":"ffffffff","offmask":"","off":16},"match":{"value":"110000","mask":"ff0000","offmask":"","off":8},"match":{"value":"6d380000","mask":"ffff0000","offmask":"","off":20}}},{"parent":"4f41:","protocol":"ipv6","pref":2,"kind":"u32","chain":0,"options":{"fh":"800::800","order":2048,"key_ht":"800","bkt":"0","flowid":"4f41:102","not_in_hw":true,"match":{"value":"20010db8","mask":"ffffffff","offmask":"","off":24},"match":{"value":"0","mask":"ffffffff","offmask":"","off":28},"match":{"value":"0","mask":"ffffffff","offmask":"","off":32},"match":{"value":"11","mask":"ffffffff","offmask":"","off":36},"match":{"value":"1100","mask":"ff00","offmask":"","off":4},"match":{"value":"6d380000","mask":"ffff0000","offmask":"","off":40}}}]"#;
    const INGRESS_FILTER: &str = r#"[{"parent":"ffff:","protocol":"ip","pref":1,"kind":"u32","chain":0,"options":{"fh":"800::800","order":2048,"key_ht":"800","bkt":"0","not_in_hw":true,"match":{"value":"a4d000b","mask":"ffffffff","offmask":"","off":12},"match":{"value":"110000","mask":"ff0000","offmask":"","off":8},"match":{"value":"6d38","mask":"ffff","offmask":"","off":20},"actions":[{"order":1,"kind":"mirred","mirred_action":"redirect","direction":"egress","to_dev":"oaifbx","control_action":{"type":"stolen"},"index":1,"ref":1,"bind":1}]}}]"#;

    fn state() -> DeviceState {
        let (qdiscs, raw_qdisc) = parse_qdiscs(QDISC).unwrap();
        let mut filters = parse_filters(FILTER).unwrap();
        filters.extend(parse_filters(INGRESS_FILTER).unwrap());
        DeviceState {
            device: "eth0".into(),
            qdiscs,
            classes: parse_classes(CLASS_TEXT).unwrap(),
            filters,
            raw_qdisc,
        }
    }

    fn spec() -> TreeSpec {
        TreeSpec {
            interface: "eth0".into(),
            split: crate::scenario::Split::Egress,
            limit: 10_000,
            leaf: LeafKind::Netem,
            game_port: 27960,
            levels: Vec::new(),
        }
    }

    #[test]
    fn parses_netem_delay_and_counters() {
        let s = state();
        assert_eq!(s.qdisc("101:").unwrap().delay_us, Some(100_500));
        assert_eq!(s.qdisc("102:").unwrap().delay_us, Some(0));
        assert_eq!(s.qdisc("4f41:").unwrap().delay_us, None);
        let c = s.class("4f41:101").unwrap();
        assert_eq!(
            (c.packets, c.bytes, c.leaf.as_deref()),
            (3, 270, Some("101:"))
        );
        assert_eq!(s.class("4f41:1").unwrap().packets, 1);
    }

    #[test]
    fn keeps_every_ipv6_key() {
        let s = state();
        let v6 = s.filters.iter().find(|f| f.protocol == "ipv6").unwrap();
        assert_eq!(
            v6.keys,
            keys_for("2001:db8::11".parse().unwrap(), false, 27960)
        );
        assert_eq!(
            s.filters
                .iter()
                .find(|f| f.redirect_to.is_some())
                .unwrap()
                .keys,
            keys_for("10.77.0.11".parse().unwrap(), true, 27960)
        );
    }

    #[test]
    fn check_direction_accepts_and_rejects() {
        let s = state();
        let ip: IpAddr = "10.77.0.11".parse().unwrap();
        let ok = check_direction(&spec(), &s, Direction::Egress, 1, ip, 100_500).unwrap();
        assert_eq!(ok.delay_ms, Some(100.5));
        assert_eq!(ok.counters.leaf_drops, 3);
        assert_eq!(ok.counters.class_packets, 3);
        let e = check_direction(&spec(), &s, Direction::Egress, 1, ip, 200_000).unwrap_err();
        assert!(e.contains("delay is 100.5 ms, expected 200 ms"), "{e}");
        let e = check_direction(
            &spec(),
            &s,
            Direction::Egress,
            1,
            "10.77.0.12".parse().unwrap(),
            100_500,
        )
        .unwrap_err();
        assert!(e.contains("no filter"), "{e}");
        let e = check_direction(&spec(), &s, Direction::Egress, 3, ip, 0).unwrap_err();
        assert!(e.contains("4f41:103 is missing"), "{e}");
        let mut pf = spec();
        pf.leaf = LeafKind::Pfifo;
        assert!(
            check_direction(&pf, &s, Direction::Egress, 1, ip, 0)
                .unwrap_err()
                .contains("is netem")
        );
        assert!(check_redirect(&s, ip, 27960, "oaifbx").is_ok());
        assert!(check_redirect(&s, ip, 27960, "other").is_err());
        // A filter for another port is not the game's.
        assert!(check_redirect(&s, ip, 27961, "oaifbx").is_err());
        let mut other_port = spec();
        other_port.game_port = 27961;
        assert!(
            check_direction(&other_port, &s, Direction::Egress, 1, ip, 100_500)
                .unwrap_err()
                .contains("no filter")
        );
    }

    #[test]
    fn parses_json_classes_of_newer_iproute2() {
        let j = r#"[{"class":"htb","handle":"4f41:101","root":true,"leaf":"0x101","prio":0,"stats":{"bytes":270,"packets":3,"drops":0,"overlimits":0}}]"#;
        let c = parse_classes(j).unwrap();
        assert_eq!(c[0].leaf.as_deref(), Some("101:"));
        assert_eq!(c[0].packets, 3);
    }

    #[test]
    fn bad_output_is_an_error_not_a_panic() {
        assert!(parse_qdiscs("garbage").is_err());
        assert!(parse_classes("garbage").is_err());
        assert!(parse_filters("[{").is_err());
        assert!(parse_classes("").unwrap().is_empty());
    }
}
