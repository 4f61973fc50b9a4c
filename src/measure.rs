//! Measuring the latency players really had: the pure parts (sample accumulation, statistics,
//! the tolerance decision) and an ICMP prober with a timeout at the edge.
//!
//! The server's ping (rcon `status`, every ~2 s) is quantised by the server's frame time
//! (50 ms at `sv_fps 20`) and averaged over its last 32 frames, so single samples are coarse:
//! the median of a match's samples is used, and the default tolerance is max(15 ms, 10 %).
//! The warmup (no added delay) gives each player's baseline; the measured added latency of a
//! match is its p50 minus that baseline.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use crate::netem::{CommandRunner, TcCommand};
use crate::scenario::{OnDeviation, Tolerance};

/// Most samples kept per player and phase (a 1-hour match at one sample per 2 s is 1800).
pub const MAX_SAMPLES: usize = 4096;
/// ioquake3 reports 999 for a client whose connection is interrupted: not a latency.
pub const PING_INTERRUPTED: u32 = 999;

/// One player's ping samples in one phase (warmup or a match), bounded.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    ms: Vec<u32>,
    /// Samples dropped because the buffer was full, or that were not latencies.
    pub dropped: u64,
}

impl Samples {
    /// Add a server-reported ping. 999 (interrupted) and overflow are counted, not kept.
    pub fn push(&mut self, ping_ms: u32) {
        if ping_ms >= PING_INTERRUPTED || self.ms.len() >= MAX_SAMPLES {
            self.dropped += 1;
        } else {
            self.ms.push(ping_ms);
        }
    }
    pub fn len(&self) -> usize {
        self.ms.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ms.is_empty()
    }
    pub fn stats(&self) -> Option<Stats> {
        Stats::of(self.ms.iter().map(|&v| f64::from(v)).collect())
    }
}

/// Count, median and 95th percentile (nearest rank) of a set of samples, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

impl Stats {
    pub fn of(mut v: Vec<f64>) -> Option<Stats> {
        v.retain(|x| x.is_finite());
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Stats {
            count: v.len(),
            p50_ms: rank(0.50),
            p95_ms: rank(0.95),
        })
    }
}

/// The verdict on one player in one match.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Verdict {
    pub planned_ms: f64,
    /// Match p50 − warmup baseline p50.
    pub measured_added_ms: f64,
    /// measured − planned.
    pub deviation_ms: f64,
    /// How far it may be off.
    pub allowed_ms: f64,
    pub within: bool,
}

/// What to do about a match and its verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Every measured player is within tolerance.
    Ok,
    /// Someone is off; record a warning and go on.
    Warn,
    /// Someone is off and the scenario says abort.
    Abort,
}

/// How far a measurement may be from `planned_ms`: max(at_least, relative × planned).
pub fn allowed_ms(t: &Tolerance, planned_ms: f64) -> f64 {
    (t.at_least.as_millis() as f64).max(t.relative.as_pct() / 100.0 * planned_ms)
}

/// Compare a match's samples with the warmup baseline. `None` when either has no samples (a
/// player who was not measured is not judged).
pub fn judge(t: &Tolerance, planned_ms: u64, baseline: &Stats, matched: &Stats) -> Verdict {
    let planned = planned_ms as f64;
    let measured = matched.p50_ms - baseline.p50_ms;
    let allowed = allowed_ms(t, planned);
    Verdict {
        planned_ms: planned,
        measured_added_ms: measured,
        deviation_ms: measured - planned,
        allowed_ms: allowed,
        within: (measured - planned).abs() <= allowed,
    }
}

/// The match's action from its players' verdicts.
pub fn decide(on: OnDeviation, verdicts: &[Verdict]) -> Action {
    match (verdicts.iter().all(|v| v.within), on) {
        (true, _) => Action::Ok,
        (false, OnDeviation::Warn) => Action::Warn,
        (false, OnDeviation::Abort) => Action::Abort,
    }
}

/// `planned 150 ms, measured 148 ms (ping p50 150 ms, p95 200 ms, 9 samples; baseline 2 ms;
/// ICMP 0.1 ms)`, with `OFF by +40 ms (±15 ms)` when outside the tolerance.
pub fn describe(m: &crate::manifest::MeasuredLatency) -> String {
    let measured = match m.added_ms {
        Some(a) => format!("measured {a:.0} ms"),
        None => "measured ? (no baseline)".to_string(),
    };
    let off = match (m.within, m.deviation_ms) {
        (Some(false), Some(d)) => format!(", OFF by {d:+.0} ms (±{:.0} ms)", m.allowed_ms),
        _ => String::new(),
    };
    let baseline = m
        .baseline
        .map(|b| format!("; baseline {:.0} ms", b.p50_ms))
        .unwrap_or_default();
    let icmp = match m.icmp {
        Some(i) => format!("; ICMP {:.2} ms", i.p50_ms),
        None => "; ICMP no answer".to_string(),
    };
    format!(
        "planned {:.0} ms, {measured}{off} (ping p50 {:.0} ms, p95 {:.0} ms, {} samples{baseline}{icmp})",
        m.planned_ms, m.ping.p50_ms, m.ping.p95_ms, m.ping.count
    )
}

/// Round trips in ms from `ping`'s output (one per `time=` reply; duplicates and other lines
/// are ignored). Bounded: at most [`MAX_SAMPLES`] values.
pub fn parse_ping(out: &str) -> Vec<f64> {
    out.lines()
        .filter(|l| !l.contains("DUP!"))
        .filter_map(|l| {
            let t = l.split("time=").nth(1)?;
            t.split_whitespace().next()?.parse::<f64>().ok()
        })
        .filter(|v| v.is_finite() && *v >= 0.0)
        .take(MAX_SAMPLES)
        .collect()
}

/// ICMP echo round trips to `ip` (`count` probes, 0.2 s apart, each waiting at most `wait`),
/// as the path's base RTT (ICMP is never shaped). `None` when nothing answered (a firewall):
/// that is a fact to record, not an error. The runner bounds the whole command's time.
pub fn icmp_probe(
    runner: &dyn CommandRunner,
    ip: IpAddr,
    count: u32,
    wait: Duration,
) -> Option<Stats> {
    let count = count.clamp(1, 100).to_string();
    let wait = wait.as_secs().clamp(1, 10).to_string();
    let cmd = TcCommand::new(
        "ping",
        &[
            "-n",
            "-c",
            &count,
            "-i",
            "0.2",
            "-W",
            &wait,
            &ip.to_string(),
        ],
    );
    // ping exits 1 when some probes got no answer; the answers it printed still count.
    let out = runner.run(&cmd).ok()?;
    Stats::of(parse_ping(&out.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netem::{CmdOutput, Recorder, SystemRunner};

    fn tol() -> Tolerance {
        Tolerance::default()
    }

    #[test]
    fn samples_are_bounded_and_skip_interrupted() {
        let mut s = Samples::default();
        s.push(48);
        s.push(999);
        s.push(52);
        assert_eq!((s.len(), s.dropped), (2, 1));
        for _ in 0..MAX_SAMPLES + 10 {
            s.push(50);
        }
        assert_eq!(s.len(), MAX_SAMPLES);
        assert_eq!(s.dropped, 1 + 12);
        assert!(Samples::default().stats().is_none());
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let st = Stats::of((1..=20).map(f64::from).collect()).unwrap();
        assert_eq!((st.count, st.p50_ms, st.p95_ms), (20, 10.0, 19.0));
        let one = Stats::of(vec![7.0]).unwrap();
        assert_eq!((one.p50_ms, one.p95_ms), (7.0, 7.0));
        assert!(Stats::of(vec![f64::NAN]).is_none());
    }

    #[test]
    fn tolerance_is_max_of_absolute_and_relative() {
        assert_eq!(allowed_ms(&tol(), 100.0), 15.0);
        assert_eq!(allowed_ms(&tol(), 300.0), 30.0);
        let base = Stats::of(vec![0.0, 0.0, 50.0]).unwrap();
        // The server's ping is quantised to 50 ms frames: 100 ms added reads 100 or 150.
        let m = Stats::of(vec![100.0, 100.0, 100.0, 150.0]).unwrap();
        let v = judge(&tol(), 100, &base, &m);
        assert_eq!(
            (v.measured_added_ms, v.deviation_ms, v.within),
            (100.0, 0.0, true)
        );
        let off = Stats::of(vec![150.0, 150.0, 200.0]).unwrap();
        let v2 = judge(&tol(), 100, &base, &off);
        assert!(!v2.within && v2.deviation_ms == 50.0);
        assert_eq!(decide(OnDeviation::Warn, &[v]), Action::Ok);
        assert_eq!(decide(OnDeviation::Warn, &[v, v2]), Action::Warn);
        assert_eq!(decide(OnDeviation::Abort, &[v, v2]), Action::Abort);
    }

    #[test]
    fn describes_planned_against_measured() {
        let st = |count, p50_ms, p95_ms| crate::manifest::RttStats {
            count,
            p50_ms,
            p95_ms,
        };
        let mut m = crate::manifest::MeasuredLatency {
            ping: st(9, 150.0, 200.0),
            baseline: Some(st(3, 0.0, 0.0)),
            planned_ms: 150.0,
            added_ms: Some(150.0),
            deviation_ms: Some(0.0),
            allowed_ms: 15.0,
            within: Some(true),
            icmp: Some(st(5, 0.06, 0.1)),
        };
        assert_eq!(
            describe(&m),
            "planned 150 ms, measured 150 ms (ping p50 150 ms, p95 200 ms, 9 samples; baseline 0 ms; ICMP 0.06 ms)"
        );
        m.added_ms = Some(100.0);
        m.deviation_ms = Some(-50.0);
        m.within = Some(false);
        m.icmp = None;
        assert!(describe(&m).contains("measured 100 ms, OFF by -50 ms (±15 ms)"));
        assert!(describe(&m).ends_with("ICMP no answer)"));
    }

    #[test]
    fn parses_ping_output() {
        let out = "PING 10.0.0.1 (10.0.0.1) 56(84) bytes of data.\n\
                   64 bytes from 10.0.0.1: icmp_seq=1 ttl=64 time=0.052 ms\n\
                   64 bytes from 10.0.0.1: icmp_seq=1 ttl=64 time=0.060 ms (DUP!)\n\
                   64 bytes from 10.0.0.1: icmp_seq=2 ttl=64 time=1.50 ms\n\n\
                   rtt min/avg/max/mdev = 0.052/0.776/1.500/0.724 ms\n";
        assert_eq!(parse_ping(out), [0.052, 1.5]);
        assert!(parse_ping("From 10.0.0.1 icmp_seq=1 Destination Host Unreachable").is_empty());
    }

    #[test]
    fn icmp_probe_answers_on_loopback_and_is_none_without_answers() {
        let st = icmp_probe(
            &SystemRunner::new().with_timeout(Duration::from_secs(5)),
            "127.0.0.1".parse().unwrap(),
            3,
            Duration::from_secs(1),
        );
        if crate::netem::runner::process_permission().is_ok() {
            let st = st.expect("loopback answers ping");
            assert_eq!(st.count, 3);
            assert!(st.p50_ms < 5.0);
        }
        let silent = Recorder::responding(|_| CmdOutput::failed(1, ""));
        assert!(
            icmp_probe(
                &silent,
                "10.0.0.1".parse().unwrap(),
                3,
                Duration::from_secs(1)
            )
            .is_none()
        );
    }
}
