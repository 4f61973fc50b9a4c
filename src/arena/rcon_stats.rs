//! Process-wide rcon figures for `/metrics`: requests by result and the round trip to the
//! first reply packet. The rcon client records; the live view's registry reads the same
//! (shared, atomic) metrics.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

pub use crate::live::metrics::ResultLabel;

/// How an rcon request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// No packet came back (the server's rate limit drops silently).
    NoReply,
    /// ICMP port unreachable: nothing listens.
    Refused,
    /// A socket error, or a reply the server marked as an error (bad password).
    Error,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NoReply => "no_reply",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
        }
    }
}

pub struct RconStats {
    pub requests: Family<ResultLabel, Counter>,
    pub rtt: Histogram,
}

pub fn global() -> &'static RconStats {
    static STATS: OnceLock<RconStats> = OnceLock::new();
    STATS.get_or_init(|| {
        let requests: Family<ResultLabel, Counter> = Family::default();
        for o in [
            Outcome::Ok,
            Outcome::NoReply,
            Outcome::Refused,
            Outcome::Error,
        ] {
            requests
                .get_or_create(&ResultLabel { result: o.label() })
                .inc_by(0);
        }
        RconStats {
            requests,
            // LAN round trips are sub-millisecond; a paced or busy server takes up to seconds.
            rtt: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        }
    })
}

/// One rcon datagram exchange: its outcome and, when a reply came, the time to its first packet.
pub fn record(outcome: Outcome, rtt: Option<Duration>) {
    let s = global();
    s.requests
        .get_or_create(&ResultLabel {
            result: outcome.label(),
        })
        .inc();
    if let Some(d) = rtt {
        s.rtt.observe(d.as_secs_f64());
    }
}
