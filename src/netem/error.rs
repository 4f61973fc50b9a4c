//! Errors of the latency layer, each a sentence a researcher can act on.

use std::net::IpAddr;

/// What went wrong while shaping latency.
#[derive(Debug, thiserror::Error)]
pub enum NetemError {
    #[error(
        "`{program}` is not installed; latency shaping needs iproute2 and iptables (`apt-get \
         install iproute2 iptables`), or set `latency.shaper: none` to plan latencies without applying them"
    )]
    ToolMissing { program: String },

    #[error(
        "not permitted to change traffic control on {interface}: {detail}; run oa-run as root or \
         give it CAP_NET_ADMIN"
    )]
    NotPermitted { interface: String, detail: String },

    #[error(
        "network interface `{0}` does not exist on this machine (check `latency.interface`; \
         `ip link` lists the interfaces)"
    )]
    InterfaceMissing(String),

    #[error(
        "{interface} already has a root qdisc ({kind} {handle}) that oa-run did not create; \
         oa-run will not replace it unless forced (remove it with `tc qdisc del dev {interface} \
         root` if nothing needs it)"
    )]
    ForeignRootQdisc {
        interface: String,
        kind: String,
        handle: String,
    },

    #[error(
        "{interface} already has an {kind} qdisc that oa-run did not create, and `latency.split: \
         symmetric` needs its own; oa-run will not replace it unless forced (remove it with \
         `tc qdisc del dev {interface} {kind}` if nothing needs it)"
    )]
    ForeignIngressQdisc { interface: String, kind: String },

    #[error(
        "this kernel has no netem (sch_netem), so latency cannot be applied ({message}); load it \
         with `modprobe sch_netem` (Fedora: install kernel-modules-extra) or set \
         `latency.shaper: none` to plan latencies without applying them"
    )]
    NetemUnavailable { message: String },

    #[error(
        "this kernel cannot create an ifb device, which `latency.split: symmetric` needs \
         ({message}); load it with `modprobe ifb` or use `latency.split: egress`"
    )]
    IfbUnavailable { message: String },

    #[error(
        "players {first} and {second} both connect from {ip}; per-player latency needs one IP \
         address per player"
    )]
    SharedAddress { first: u32, second: u32, ip: IpAddr },

    #[error(
        "another oa-run{} is shaping {interface} right now; wait for it to finish (its tree is \
         not a leftover)",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse { interface: String, pid: Option<u32> },

    #[error("cannot use the lock file {path}: {source}")]
    Lock {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("`{command}` failed: {message}")]
    CommandFailed { command: String, message: String },

    #[error("`{command}` did not finish within {seconds} s and was killed")]
    Timeout { command: String, seconds: u64 },

    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot understand the output of `{command}`: {detail}")]
    BadOutput { command: String, detail: String },

    #[error("latency on {device} is not what was asked for{}: {detail}", match_label(*.match_no))]
    VerifyFailed {
        match_no: Option<u32>,
        device: String,
        detail: String,
    },

    #[error(
        "the userspace latency shaper (NFQUEUE) cannot work here: {detail}; it needs root, \
         iptables (`apt-get install iptables`) and a kernel with NFQUEUE (nfnetlink_queue)"
    )]
    QueueUnavailable { detail: String },

    #[error("the userspace latency shaper failed{}: {detail}", match_label(*.match_no))]
    QueueFailed {
        match_no: Option<u32>,
        detail: String,
    },

    #[error("internal error in the latency layer: {0}")]
    Internal(String),
}

fn match_label(m: Option<u32>) -> String {
    m.map(|m| format!(" in match {m}")).unwrap_or_default()
}

impl From<NetemError> for crate::Error {
    fn from(e: NetemError) -> Self {
        let msg = e.to_string();
        match e {
            NetemError::NotPermitted { .. } => crate::Error::NoPermission(msg),
            NetemError::ToolMissing { .. }
            | NetemError::InterfaceMissing(_)
            | NetemError::ForeignRootQdisc { .. }
            | NetemError::ForeignIngressQdisc { .. }
            | NetemError::NetemUnavailable { .. }
            | NetemError::IfbUnavailable { .. }
            | NetemError::InUse { .. }
            | NetemError::QueueUnavailable { .. } => crate::Error::Unavailable(msg),
            NetemError::Lock { .. } => crate::Error::Output(msg),
            NetemError::SharedAddress { .. }
            | NetemError::CommandFailed { .. }
            | NetemError::Timeout { .. }
            | NetemError::Spawn { .. }
            | NetemError::BadOutput { .. }
            | NetemError::VerifyFailed { .. }
            | NetemError::QueueFailed { .. } => crate::Error::RunFailed(msg),
            NetemError::Internal(_) => crate::Error::Internal(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit;

    #[test]
    fn exit_codes() {
        let e: crate::Error = NetemError::NotPermitted {
            interface: "eth0".into(),
            detail: "x".into(),
        }
        .into();
        assert_eq!(e.exit_code(), exit::NO_PERMISSION);
        let e: crate::Error = NetemError::InterfaceMissing("eth9".into()).into();
        assert_eq!(e.exit_code(), exit::UNAVAILABLE);
        assert!(e.to_string().contains("`eth9` does not exist"));
        let e: crate::Error = NetemError::CommandFailed {
            command: "tc qdisc add".into(),
            message: "RTNETLINK answers: File exists".into(),
        }
        .into();
        assert_eq!(e.exit_code(), exit::RUN_FAILED);
        assert_eq!(
            e.to_string(),
            "`tc qdisc add` failed: RTNETLINK answers: File exists"
        );
    }
}
