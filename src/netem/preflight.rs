//! Looking at an interface before touching it: what qdiscs it has, whether a tree is a leftover
//! of an earlier (crashed) oa-run, removing such leftovers (`reset`), and probing whether this
//! kernel has netem and ifb at all.

use std::path::Path;

use serde::Serialize;

use super::commands::{ROOT_HANDLE, TcCommand, TreeSpec, ifb_name};
use super::error::NetemError;
use super::lock::InterfaceLock;
use super::runner::{CommandRunner, RunFailure, SystemRunner, run_checked};
use super::verify::{parse_filters, parse_qdiscs};
use crate::scenario::Split;

/// A qdisc without its counters: what "the interface as found" means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QdiscBrief {
    pub kind: String,
    pub handle: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub root: bool,
}

impl std::fmt::Display for QdiscBrief {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.handle)
    }
}

/// Who owns the root qdisc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RootState {
    /// The kernel's default (handle `0:`: noqueue, pfifo_fast, fq_codel, mq …).
    Default { kind: String },
    /// oa-run's HTB (`4f41:`), left over from an earlier run.
    Ours,
    /// Someone else's.
    Foreign { kind: String, handle: String },
}

/// Who owns the ingress side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum IngressState {
    Absent,
    /// An ingress qdisc whose filters redirect to oa-run's ifb.
    Ours,
    Foreign {
        kind: String,
    },
}

/// The state of an interface as read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inspection {
    pub interface: String,
    pub qdiscs: Vec<QdiscBrief>,
    pub root: RootState,
    pub ingress: IngressState,
    /// Whether oa-run's ifb device for this interface exists.
    pub ifb_exists: bool,
}

impl Inspection {
    /// Anything an earlier oa-run left behind.
    pub fn has_leftover(&self) -> bool {
        self.root == RootState::Ours || self.ingress == IngressState::Ours || self.ifb_exists
    }
}

/// Read the interface's qdiscs (root, ingress) and whether oa-run's ifb exists.
pub fn inspect(runner: &dyn CommandRunner, interface: &str) -> Result<Inspection, NetemError> {
    let qc = TcCommand::tc(&["-j", "qdisc", "show", "dev", interface]);
    let out = run_checked(runner, &qc, interface)?;
    let (qdiscs, _) = parse_qdiscs(&out.stdout).map_err(|detail| NetemError::BadOutput {
        command: qc.to_string(),
        detail,
    })?;
    let qdiscs: Vec<QdiscBrief> = qdiscs
        .into_iter()
        .map(|q| QdiscBrief {
            kind: q.kind,
            handle: q.handle,
            parent: q.parent,
            root: q.root,
        })
        .collect();
    let root = match qdiscs.iter().find(|q| q.root) {
        Some(q) if q.kind == "htb" && q.handle == ROOT_HANDLE => RootState::Ours,
        Some(q) if q.handle == "0:" => RootState::Default {
            kind: q.kind.clone(),
        },
        Some(q) => RootState::Foreign {
            kind: q.kind.clone(),
            handle: q.handle.clone(),
        },
        // No root entry at all (not seen in practice): nothing to protect.
        None => RootState::Default {
            kind: "none".into(),
        },
    };
    let ifb = ifb_name(interface);
    let ingress = match qdiscs
        .iter()
        .find(|q| q.kind == "ingress" || q.kind == "clsact")
    {
        None => IngressState::Absent,
        Some(q) => {
            let fc = TcCommand::tc(&["-j", "filter", "show", "dev", interface, "ingress"]);
            let out = run_checked(runner, &fc, interface)?;
            let filters = parse_filters(&out.stdout).map_err(|detail| NetemError::BadOutput {
                command: fc.to_string(),
                detail,
            })?;
            if filters
                .iter()
                .any(|f| f.redirect_to.as_deref() == Some(ifb.as_str()))
            {
                IngressState::Ours
            } else {
                IngressState::Foreign {
                    kind: q.kind.clone(),
                }
            }
        }
    };
    Ok(Inspection {
        interface: interface.into(),
        qdiscs,
        root,
        ingress,
        ifb_exists: link_exists(runner, &ifb)?,
    })
}

/// Whether a network device exists (`ip link show dev X`).
pub fn link_exists(runner: &dyn CommandRunner, dev: &str) -> Result<bool, NetemError> {
    let c = TcCommand::ip(&["-j", "link", "show", "dev", dev]);
    match runner.run(&c) {
        Ok(o) if o.success => Ok(true),
        Ok(o) if o.stderr.contains("does not exist") || o.stderr.contains("Cannot find") => {
            Ok(false)
        }
        Ok(o) => Err(super::runner::classify(&c, &o.stderr, dev)),
        Err(RunFailure::NotFound { program }) => Err(NetemError::ToolMissing { program }),
        Err(RunFailure::TimedOut { after }) => Err(NetemError::Timeout {
            command: c.to_string(),
            seconds: after.as_secs(),
        }),
        Err(RunFailure::Io(source)) => Err(NetemError::Spawn {
            command: c.to_string(),
            source,
        }),
    }
}

/// Whether a failed delete only says there was nothing to delete.
fn is_nothing_there(e: &NetemError) -> bool {
    let m = match e {
        NetemError::CommandFailed { message, .. } => message.to_ascii_lowercase(),
        NetemError::InterfaceMissing(_) => return true,
        _ => return false,
    };
    [
        "no such file",
        "cannot find",
        "does not exist",
        "cannot delete qdisc with handle of zero",
        "invalid handle",
        "no such device",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// Run a delete, treating "there was nothing to delete" as done.
pub(crate) fn delete(
    runner: &dyn CommandRunner,
    cmd: &TcCommand,
    interface: &str,
) -> Result<bool, NetemError> {
    match run_checked(runner, cmd, interface) {
        Ok(_) => Ok(true),
        Err(e) if is_nothing_there(&e) => {
            tracing::debug!(command = %cmd, "nothing to delete: {e}");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// What [`reset`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResetReport {
    pub interface: String,
    /// What was removed, one sentence each.
    pub removed: Vec<String>,
    /// What belongs to someone else and was left alone.
    pub left_alone: Vec<String>,
}

/// Take the per-interface lock for the namespace `runner` acts in (none for a recorder).
pub fn lock_for(
    runner: &dyn CommandRunner,
    interface: &str,
) -> Result<Option<InterfaceLock>, NetemError> {
    runner
        .lock_scope()
        .map(|scope| InterfaceLock::acquire(&scope, interface))
        .transpose()
}

/// Remove everything oa-run may have left on `interface` (its root HTB, the ingress redirect to
/// its ifb, the ifb device) and nothing else. Idempotent: "no such" answers count as done.
/// Refuses while another oa-run is shaping the interface.
pub fn reset(runner: &dyn CommandRunner, interface: &str) -> Result<ResetReport, NetemError> {
    let _lock = lock_for(runner, interface)?;
    reset_unlocked(runner, interface)
}

fn reset_unlocked(runner: &dyn CommandRunner, interface: &str) -> Result<ResetReport, NetemError> {
    let mut report = ResetReport {
        interface: interface.into(),
        ..Default::default()
    };
    let ifb = ifb_name(interface);
    let found = match inspect(runner, interface) {
        Ok(f) => Some(f),
        // The interface is gone (e.g. a USB NIC): its qdiscs went with it, the ifb may not have.
        Err(NetemError::InterfaceMissing(_)) => None,
        Err(e) => return Err(e),
    };
    if let Some(f) = &found {
        if f.ingress == IngressState::Ours {
            let c = TcCommand::tc(&["qdisc", "del", "dev", interface, "ingress"]);
            if delete(runner, &c, interface)? {
                report
                    .removed
                    .push(format!("ingress qdisc redirecting to {ifb}"));
            }
        }
        if let IngressState::Foreign { kind } = &f.ingress {
            report
                .left_alone
                .push(format!("{kind} qdisc (not oa-run's)"));
        }
    }
    if found.as_ref().is_none_or(|f| f.ifb_exists) && link_exists(runner, &ifb)? {
        let c = TcCommand::ip(&["link", "del", "dev", &ifb]);
        if delete(runner, &c, &ifb)? {
            report.removed.push(format!("ifb device {ifb}"));
        }
    }
    if let Some(f) = &found {
        match &f.root {
            RootState::Ours => {
                let c = TcCommand::tc(&["qdisc", "del", "dev", interface, "root"]);
                if delete(runner, &c, interface)? {
                    report
                        .removed
                        .push(format!("root qdisc htb {ROOT_HANDLE} with its classes"));
                }
            }
            RootState::Foreign { kind, handle } => report
                .left_alone
                .push(format!("root qdisc {kind} {handle} (not oa-run's)")),
            RootState::Default { .. } => {}
        }
    }
    if found.is_none() && report.removed.is_empty() {
        return Err(NetemError::InterfaceMissing(interface.into()));
    }
    Ok(report)
}

/// Make the interface ready for a new tree: take the interface's lock, refuse what is someone
/// else's (unless `force`), remove a leftover of an earlier oa-run. Returns the state the
/// teardown must restore, and the lock to hold until then.
pub fn preflight(
    runner: &dyn CommandRunner,
    spec: &TreeSpec,
    force: bool,
) -> Result<(Inspection, Option<InterfaceLock>), NetemError> {
    let dev = spec.interface.as_str();
    runner
        .permission()
        .map_err(|detail| NetemError::NotPermitted {
            interface: dev.into(),
            detail,
        })?;
    let lock = lock_for(runner, dev)?;
    let mut found = inspect(runner, dev)?;
    if found.has_leftover() {
        tracing::warn!(
            interface = dev,
            "found a latency tree left by an earlier oa-run run (crashed or killed?); removing it"
        );
        let r = reset_unlocked(runner, dev)?;
        for what in &r.removed {
            tracing::warn!(interface = dev, "removed leftover {what}");
        }
        found = inspect(runner, dev)?;
    }
    let mut changed = false;
    if let RootState::Foreign { kind, handle } = &found.root {
        if !force {
            return Err(NetemError::ForeignRootQdisc {
                interface: dev.into(),
                kind: kind.clone(),
                handle: handle.clone(),
            });
        }
        tracing::warn!(
            interface = dev,
            "forced: deleting the root qdisc {kind} {handle} oa-run did not create; teardown \
             leaves the kernel's default qdisc, not this one"
        );
        run_checked(
            runner,
            &TcCommand::tc(&["qdisc", "del", "dev", dev, "root"]),
            dev,
        )?;
        changed = true;
    }
    if spec.split == Split::Symmetric
        && let IngressState::Foreign { kind } = &found.ingress
    {
        if !force {
            return Err(NetemError::ForeignIngressQdisc {
                interface: dev.into(),
                kind: kind.clone(),
            });
        }
        tracing::warn!(
            interface = dev,
            "forced: deleting the {kind} qdisc oa-run did not create (with its filters); it is \
             not restored at teardown"
        );
        run_checked(
            runner,
            &TcCommand::tc(&["qdisc", "del", "dev", dev, kind]),
            dev,
        )?;
        changed = true;
    }
    if changed {
        found = inspect(runner, dev)?;
    }
    Ok((found, lock))
}

/// Whether a qdisc/link kind is usable on this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Available,
    /// The kernel does not have it (message says how we know).
    Missing(String),
    /// Could not find out.
    Unknown(String),
}

/// Try `program args…` in a private, throwaway network namespace (`unshare --net`), so the probe
/// touches no real interface and leaves nothing behind.
fn probe_in_private_netns(args: &[&str], missing_markers: &[&str]) -> Probe {
    let mut prefix = vec!["unshare"];
    if !nix::unistd::geteuid().is_root() {
        prefix.push("--map-root-user");
    }
    prefix.push("--net");
    let runner = SystemRunner::new().with_prefix(&prefix);
    let cmd = TcCommand::new(args[0], &args[1..]);
    match runner.run(&cmd) {
        Ok(o) if o.success => Probe::Available,
        Ok(o) => {
            let msg = o
                .stderr
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            let lower = msg.to_ascii_lowercase();
            if missing_markers.iter().any(|m| lower.contains(m)) {
                Probe::Missing(format!("`{cmd}` said: {msg}"))
            } else {
                Probe::Unknown(format!("probe `{cmd}` failed: {msg}"))
            }
        }
        Err(RunFailure::NotFound { program }) => {
            Probe::Unknown(format!("cannot probe: `{program}` is not installed"))
        }
        Err(e) => Probe::Unknown(format!("cannot probe: {e:?}")),
    }
}

/// Whether this kernel has netem (sch_netem): loaded or built in, or loadable on demand.
pub fn netem_probe() -> Probe {
    if Path::new("/sys/module/sch_netem").exists() {
        return Probe::Available;
    }
    probe_in_private_netns(
        &[
            "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "0ms",
        ],
        &["qdisc kind is unknown", "specified qdisc not found"],
    )
}

/// Whether this kernel can create ifb devices (needed for `split: symmetric`).
pub fn ifb_probe() -> Probe {
    if Path::new("/sys/module/ifb").exists() {
        return Probe::Available;
    }
    probe_in_private_netns(
        &["ip", "link", "add", "oaprobe0", "type", "ifb"],
        &["unknown device type", "not supported"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netem::runner::{CmdOutput, Recorder};

    fn kernel(root: &'static str, ingress_filters: &'static str, ifb: bool) -> Recorder {
        Recorder::responding(move |c| {
            let a: Vec<&str> = c.args.iter().map(String::as_str).collect();
            match (c.program.as_str(), a.as_slice()) {
                ("tc", ["-j", "qdisc", "show", ..]) => CmdOutput::ok(root),
                ("tc", ["-j", "filter", "show", ..]) => CmdOutput::ok(ingress_filters),
                ("ip", ["-j", "link", "show", ..]) if ifb => CmdOutput::ok("[]"),
                ("ip", ["-j", "link", "show", "dev", d]) => {
                    CmdOutput::failed(1, format!("Device \"{d}\" does not exist."))
                }
                _ => CmdOutput::ok(""),
            }
        })
    }

    const DEFAULT: &str =
        r#"[{"kind":"noqueue","handle":"0:","root":true,"refcnt":2,"options":{}}]"#;
    const FOREIGN: &str =
        r#"[{"kind":"fq_codel","handle":"8001:","root":true,"refcnt":2,"options":{}}]"#;
    const OURS: &str = r#"[{"kind":"htb","handle":"4f41:","root":true,"refcnt":2,"options":{}},{"kind":"ingress","handle":"ffff:","parent":"ffff:fff1","options":{}}]"#;

    fn spec(split: Split) -> TreeSpec {
        TreeSpec {
            interface: "eth0".into(),
            split,
            limit: 1000,
            leaf: super::super::LeafKind::Netem,
            game_port: 27960,
            levels: Vec::new(),
        }
    }

    #[test]
    fn foreign_root_is_refused_unless_forced() {
        let r = kernel(FOREIGN, "[]", false);
        let e = preflight(&r, &spec(Split::Egress), false).unwrap_err();
        assert!(matches!(e, NetemError::ForeignRootQdisc { .. }), "{e}");
        assert!(e.to_string().contains("fq_codel 8001:"));
        assert!(r.changes().is_empty(), "refusing must not touch anything");
        let r = kernel(FOREIGN, "[]", false);
        preflight(&r, &spec(Split::Egress), true).unwrap();
        assert_eq!(r.changes(), ["tc qdisc del dev eth0 root"]);
    }

    #[test]
    fn default_root_is_fine() {
        let r = kernel(DEFAULT, "[]", false);
        let (f, _) = preflight(&r, &spec(Split::Symmetric), false).unwrap();
        assert_eq!(
            f.root,
            RootState::Default {
                kind: "noqueue".into()
            }
        );
        assert!(r.changes().is_empty());
    }

    #[test]
    fn leftover_is_recognised_and_reset_removes_only_ours() {
        let ifb = ifb_name("eth0");
        let filt: &'static str = Box::leak(
            format!(r#"[{{"parent":"ffff:","protocol":"ip","pref":1,"kind":"u32","options":{{"match":{{"value":"a4d000b","mask":"ffffffff","offmask":"","off":12}},"actions":[{{"kind":"mirred","to_dev":"{ifb}"}}]}}}}]"#)
                .into_boxed_str(),
        );
        let r = kernel(OURS, filt, true);
        let f = inspect(&r, "eth0").unwrap();
        assert!(f.has_leftover());
        assert_eq!(f.ingress, IngressState::Ours);
        let rep = reset(&r, "eth0").unwrap();
        assert_eq!(
            r.changes(),
            [
                "tc qdisc del dev eth0 ingress".to_string(),
                format!("ip link del dev {ifb}"),
                "tc qdisc del dev eth0 root".to_string()
            ]
        );
        assert_eq!(rep.removed.len(), 3);
        // Someone else's ingress qdisc (no redirect to our ifb) is left alone.
        let r = kernel(OURS, "[]", false);
        let rep = reset(&r, "eth0").unwrap();
        assert_eq!(r.changes(), ["tc qdisc del dev eth0 root"]);
        assert_eq!(rep.left_alone, ["ingress qdisc (not oa-run's)"]);
    }
}
