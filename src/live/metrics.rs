//! `/metrics`: Prometheus text (OpenMetrics) from the `prometheus-client` crate. A hub
//! [`Sink`] keeps it current: gauges are set from the state after each event, counters and the
//! skew histogram from the events themselves. rcon figures come from the arena's rcon client.
//!
//! Player label values are the study's labels (seat names or `playerN`), never names a player
//! typed, and are reduced to `[A-Za-z0-9_.-]` on top.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::manifest::Event;
use crate::run::events::{Envelope, RunEvent};
use crate::run::hub::Sink;
use crate::run::state::{ObsStatus, Presence, RecordingState, RunState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    study: String,
    run_id: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlayerLabel {
    player: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// Every metric, shared between the sink (writer) and the HTTP route (reader).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    info: Family<RunLabels, Gauge>,
    step: Gauge,
    steps: Gauge,
    match_no: Gauge,
    matches: Gauge,
    players: Family<StateLabel, Gauge>,
    obs_up: Family<PlayerLabel, Gauge>,
    recording: Family<PlayerLabel, Gauge>,
    recordings: Family<ResultLabel, Counter>,
    start_skew: Histogram,
    obs_reconnects: Counter,
    latency: Family<PlayerLabel, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let m = Metrics {
            // Replaced below, once every metric is registered.
            registry: Arc::default(),
            info: Family::default(),
            step: Gauge::default(),
            steps: Gauge::default(),
            match_no: Gauge::default(),
            matches: Gauge::default(),
            players: Family::default(),
            obs_up: Family::default(),
            recording: Family::default(),
            recordings: Family::default(),
            // STARTED confirmations arrive within tens of ms of each other on a LAN.
            start_skew: Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            obs_reconnects: Counter::default(),
            latency: Family::default(),
        };
        r.register(
            "oa_run_info",
            "The run: study name, run id and oa-run version (always 1)",
            m.info.clone(),
        );
        r.register(
            "oa_run_step",
            "The plan step in progress, 1-based (0 before the first)",
            m.step.clone(),
        );
        r.register("oa_run_steps", "Steps in the plan", m.steps.clone());
        r.register(
            "oa_run_match",
            "The match in progress or being prepared, 1-based (0 before the first)",
            m.match_no.clone(),
        );
        r.register("oa_run_matches", "Matches in the plan", m.matches.clone());
        r.register(
            "oa_run_players",
            "Study players by state (in, left, kicked)",
            m.players.clone(),
        );
        r.register(
            "oa_run_obs_up",
            "Whether the player's OBS is connected (1) or not (0)",
            m.obs_up.clone(),
        );
        r.register(
            "oa_run_recording",
            "Whether the player's recording is running (1) or not (0)",
            m.recording.clone(),
        );
        r.register(
            "oa_run_recordings",
            "Recordings finished, by result (ok: the file is complete; failed)",
            m.recordings.clone(),
        );
        r.register_with_unit(
            "oa_run_recording_start_skew",
            "Spread of the recordings' STARTED confirmations within a match",
            prometheus_client::registry::Unit::Seconds,
            m.start_skew.clone(),
        );
        r.register(
            "oa_run_obs_reconnects",
            "OBS connections made again after a player's OBS had been connected",
            m.obs_reconnects.clone(),
        );
        let rcon = crate::arena::rcon_stats::global();
        r.register(
            "oa_run_rcon_requests",
            "rcon requests by result (ok, no_reply, refused, error)",
            rcon.requests.clone(),
        );
        r.register_with_unit(
            "oa_run_rcon_rtt",
            "rcon round trip: request sent to first reply packet",
            prometheus_client::registry::Unit::Seconds,
            rcon.rtt.clone(),
        );
        r.register_with_unit(
            "oa_run_player_latency_planned",
            "Added round-trip latency planned for the player in the current (or next) match",
            prometheus_client::registry::Unit::Seconds,
            m.latency.clone(),
        );
        for state in ["in", "left", "kicked"] {
            m.players.get_or_create(&StateLabel { state }).set(0);
        }
        for result in ["ok", "failed"] {
            m.recordings
                .get_or_create(&ResultLabel { result })
                .inc_by(0);
        }
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }

    /// The sink that keeps these metrics current (add it to the hub).
    pub fn sink(&self) -> Box<dyn Sink> {
        Box::new(MetricsSink {
            m: self.clone(),
            counted: HashSet::new(),
            obs_seen: HashSet::new(),
        })
    }

    /// The exposition in OpenMetrics text (what Prometheus asks for).
    pub fn render(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }

    /// The exposition in Prometheus text format 0.0.4, for clients that do not ask for
    /// OpenMetrics (promtool, curl, older scrapers).
    pub fn render_prometheus_text(&self) -> String {
        openmetrics_to_text(&self.render())
    }

    fn set_gauges(&self, st: &RunState) {
        let live = &st.live;
        let man = &st.manifest;
        self.info
            .get_or_create(&RunLabels {
                study: live.study.clone(),
                run_id: man.run_id.to_string(),
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        self.step
            .set(live.step.as_ref().map(|s| s.index as i64 + 1).unwrap_or(0));
        self.steps.set(live.total_steps as i64);
        self.match_no.set(st.current_match_no() as i64);
        self.matches.set(live.total_matches as i64);
        for (state, presence) in [
            ("in", Presence::In),
            ("left", Presence::Left),
            ("kicked", Presence::Kicked),
        ] {
            let n = live
                .players
                .iter()
                .filter(|p| p.presence == presence)
                .count();
            self.players
                .get_or_create(&StateLabel { state })
                .set(n as i64);
        }
        for p in &live.players {
            let label = PlayerLabel {
                player: label_value(&p.label, p.player),
            };
            self.obs_up
                .get_or_create(&label)
                .set((p.obs == ObsStatus::Connected) as i64);
            self.recording
                .get_or_create(&label)
                .set((p.recording == RecordingState::Recording) as i64);
            match p.planned_latency_ms {
                Some(ms) => {
                    self.latency.get_or_create(&label).set(ms as f64 / 1000.0);
                }
                None => {
                    self.latency.remove(&label);
                }
            }
        }
    }
}

/// OpenMetrics names a counter family without `_total` and adds `# UNIT` and `# EOF`; the
/// 0.0.4 text format names the family as its samples and has neither.
fn openmetrics_to_text(om: &str) -> String {
    let counters: HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + 64);
    for line in om.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{prefix}{name}_total {tail}\n"));
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// A label value that is safe anywhere: the study label, reduced to `[A-Za-z0-9_.-]`.
fn label_value(label: &str, index: u32) -> String {
    let clean: String = label
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        .take(32)
        .collect();
    if clean.is_empty() {
        format!("player{index}")
    } else {
        clean
    }
}

struct MetricsSink {
    m: Metrics,
    /// (player, match) recordings already counted in `oa_run_recordings_total`.
    counted: HashSet<(u32, u32)>,
    /// Players whose OBS has connected at least once.
    obs_seen: HashSet<u32>,
}

impl MetricsSink {
    fn count_recording(&mut self, player: u32, match_no: u32, ok: bool) {
        if self.counted.insert((player, match_no)) {
            let result = if ok { "ok" } else { "failed" };
            self.m
                .recordings
                .get_or_create(&ResultLabel { result })
                .inc();
        }
    }
}

impl Sink for MetricsSink {
    fn on_event(
        &mut self,
        env: &Envelope,
        _logged: Option<&Event>,
        state: &RunState,
    ) -> Result<(), crate::Error> {
        match &env.event {
            RunEvent::RecordingStopped {
                player,
                match_no,
                record,
            } => self.count_recording(*player, *match_no, record.error.is_none()),
            // A failed start has no stop; a failed stop may come without a stop report
            // (cleanup): count each recording once.
            RunEvent::RecordingFailed {
                player, match_no, ..
            } => self.count_recording(*player, *match_no, false),
            RunEvent::RecordingsStarted {
                arrival_spread_ms: Some(ms),
                ..
            } => self.m.start_skew.observe(ms / 1000.0),
            RunEvent::ObsConnected { player, .. } if !self.obs_seen.insert(*player) => {
                self.m.obs_reconnects.inc();
            }
            _ => {}
        }
        self.m.set_gauges(state);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    #[test]
    fn counts_each_recording_once_and_obs_reconnects() {
        use crate::manifest::{ObsRecord, RecordingRecord};
        use crate::run::events::RecordingPhase;
        let m = Metrics::new();
        let mut hub = crate::run::hub::Hub::new(
            RunState::new(crate::run::state::tests::manifest()),
            vec![m.sink()],
        );
        let obs = |player| RunEvent::ObsConnected {
            player,
            obs: ObsRecord {
                port: 4455,
                ..Default::default()
            },
            after_join_ms: None,
        };
        hub.emit(obs(1));
        hub.emit(obs(2));
        hub.emit(obs(1));
        let mut failed = RecordingRecord::planned(1, 1, "a");
        failed.error = Some("OBS said no".into());
        // A failed stop is reported twice (the stop report, then the failure): one recording.
        hub.emit(RunEvent::RecordingStopped {
            player: 1,
            match_no: 1,
            record: failed,
        });
        hub.emit(RunEvent::RecordingFailed {
            player: 1,
            match_no: 1,
            phase: RecordingPhase::Stop,
            error: "OBS said no".into(),
        });
        hub.emit(RunEvent::RecordingStopped {
            player: 2,
            match_no: 1,
            record: RecordingRecord::planned(2, 1, "b"),
        });
        let text = m.render_prometheus_text();
        assert_eq!(sample(&text, "oa_run_obs_reconnects_total"), 1.0);
        assert_eq!(
            sample(&text, "oa_run_recordings_total{result=\"failed\"}"),
            1.0
        );
        assert_eq!(sample(&text, "oa_run_recordings_total{result=\"ok\"}"), 1.0);
    }

    #[test]
    fn label_values_are_safe() {
        assert_eq!(label_value("pc1", 1), "pc1");
        assert_eq!(label_value("a\"b\n}c", 2), "abc");
        assert_eq!(label_value("<>", 3), "player3");
    }

    #[test]
    fn text_format_names_counters_by_their_samples() {
        let om = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total 3\n\
                  # HELP a_rtt Round trip.\n# TYPE a_rtt histogram\n# UNIT a_rtt seconds\n\
                  a_rtt_count 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\n\
             a_requests_total 3\n# HELP a_rtt Round trip.\n# TYPE a_rtt histogram\na_rtt_count 1\n"
        );
    }
}
