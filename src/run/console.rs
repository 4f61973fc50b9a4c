//! The terminal's subscriber: one log line per event (the same words as the manifest's event
//! log), the roster table when it changes, and the progress bars.

use tracing::{info, warn};

use super::events::{Envelope, RunEvent};
use super::hub::Sink;
use super::state::{Presence, RunState};
use crate::manifest::{Event, EventKind, RunStatus, Timestamp};
use crate::progress::Progress;

pub struct ConsoleSink {
    progress: Progress,
    /// The roster as last printed, so it is printed once per change.
    last_roster: String,
}

impl ConsoleSink {
    pub fn new(total_steps: usize) -> Self {
        ConsoleSink {
            progress: Progress::new(total_steps),
            last_roster: String::new(),
        }
    }

    fn roster(&mut self, st: &RunState) {
        let t = roster_table(st);
        if t != self.last_roster {
            info!("\n{t}");
            self.last_roster = t;
        }
    }
}

fn secs_since(t: Timestamp) -> std::time::Duration {
    (Timestamp::now().0 - t.0).to_std().unwrap_or_default()
}

impl Sink for ConsoleSink {
    fn on_event(
        &mut self,
        env: &Envelope,
        logged: Option<&Event>,
        st: &RunState,
    ) -> Result<(), crate::Error> {
        if let Some(e) = logged {
            match e.kind {
                EventKind::Join | EventKind::Info | EventKind::Cleanup => info!("{}", e.message),
                _ => warn!("{}", e.message),
            }
        }
        match &env.event {
            RunEvent::StepStarted {
                index, description, ..
            } => self.progress.step(*index as usize, description),
            RunEvent::PlayerJoined { .. }
            | RunEvent::PlayerLeft { .. }
            | RunEvent::PlayerKicked { .. }
            | RunEvent::BotsSet { .. }
            | RunEvent::ObsFailed { .. } => self.roster(st),
            RunEvent::ObsConnected {
                player,
                after_join_ms,
                ..
            } => {
                match (st.player(*player), after_join_ms) {
                    (Some(p), Some(ms)) => info!(
                        player = %p.label,
                        "OBS connected {:.1}s after joining",
                        *ms as f64 / 1000.0
                    ),
                    _ => info!("OBS of player {player} connected"),
                }
                self.roster(st);
            }
            RunEvent::RecordingsStarted {
                match_no,
                started,
                arrival_spread_ms,
            } => match arrival_spread_ms {
                // Arrival of the confirmations, not when the files began: the alignment
                // figure comes from OBS's timelines at the match's edges.
                Some(ms) => info!(
                    "match {match_no}: {started} recordings started (STARTED events arrived {ms:.1} ms apart)"
                ),
                None => info!("match {match_no}: {started} recordings started"),
            },
            RunEvent::MatchEnded {
                match_no,
                ended_by,
                detail,
                duration_s,
                sudden_death,
                ..
            } => info!(
                "match {match_no} ended: {}{} after {duration_s:.1}s{}",
                ended_by.describe(),
                detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default(),
                if *sudden_death { ", sudden death" } else { "" }
            ),
            RunEvent::RecordingsFinal {
                match_no,
                after_end_ms,
            } => {
                let aligned = st
                    .manifest
                    .matches
                    .iter()
                    .find(|m| m.number == *match_no)
                    .and_then(|m| crate::align::match_line(m, &st.manifest.recordings))
                    .map(|l| format!("; {l}"))
                    .unwrap_or_default();
                info!(
                    "match {match_no}: every recording final {:.2}s after the match ended{aligned}",
                    *after_end_ms as f64 / 1000.0
                );
                let rows = crate::table::ResultRow::for_match(&st.manifest, *match_no);
                info!(
                    "
{}",
                    crate::table::results(&rows, crate::table::Style::stderr())
                );
            }
            RunEvent::LatencyMeasured {
                match_no,
                player,
                measured,
            } => {
                let who = st
                    .player(*player)
                    .map(|p| crate::term::escape(&p.label).into_owned())
                    .unwrap_or_else(|| format!("player {player}"));
                let line = crate::measure::describe(measured);
                match measured.within {
                    Some(false) => warn!("match {match_no} {who}: latency {line}"),
                    _ => info!("match {match_no} {who}: latency {line}"),
                }
                if let Some(l) = latency_line(st, *match_no) {
                    self.progress.latency(&l);
                }
            }
            // The match's last fact: its table, recordings and stats together.
            RunEvent::MatchStats { match_no, .. } => {
                let rows = crate::table::ResultRow::for_match(&st.manifest, *match_no);
                info!(
                    "\n{}",
                    crate::table::results(&rows, crate::table::Style::stderr())
                );
            }
            RunEvent::RunFinished { status } => match status {
                RunStatus::Completed => info!("study completed"),
                s => info!("study {}", s.name()),
            },
            _ => {}
        }
        Ok(())
    }

    fn on_tick(&mut self, st: &RunState) {
        let Some(step) = &st.live.step else { return };
        if let Some(m) = &st.live.current_match
            && let Some(started) = m.started_at
            && m.ended_at.is_none()
        {
            self.progress.clock(
                &format!("match {}", m.match_no),
                secs_since(started),
                std::time::Duration::from_secs_f64(m.planned_s),
            );
        } else if let Some(d) = step.duration_s {
            self.progress.clock(
                &step.kind,
                secs_since(step.started_at),
                std::time::Duration::from_secs_f64(d),
            );
        } else if step.kind == "wait_for_humans" {
            let present = st
                .live
                .players
                .iter()
                .filter(|p| p.presence == Presence::In)
                .count();
            self.progress
                .waiting(&format!("{present}/{} humans", st.live.humans_needed));
        }
    }

    fn finish(&mut self) {
        self.progress.finish();
    }
}

/// `m1 planned/measured: pc1 150/148 ms · pc2 0/0 ms` for the progress display: every player
/// of match `match_no` measured so far, labels escaped, a deviation marked `OFF`.
pub fn latency_line(st: &RunState, match_no: u32) -> Option<String> {
    let m = st.manifest.matches.iter().find(|m| m.number == match_no)?;
    let parts: Vec<String> = m
        .latency
        .iter()
        .filter_map(|l| {
            let measured = l.measured.as_ref()?;
            let who = st
                .player(l.player)
                .map(|p| crate::term::escape(&p.label).into_owned())
                .unwrap_or_else(|| format!("player {}", l.player));
            let got = measured
                .added_ms
                .map_or_else(|| "?".to_string(), |a| format!("{a:.0}"));
            let off = if measured.within == Some(false) {
                " OFF"
            } else {
                ""
            };
            Some(format!("{who} {:.0}/{got} ms{off}", measured.planned_ms))
        })
        .collect();
    let which = if m.practice {
        "practice".to_string()
    } else {
        format!("m{match_no}")
    };
    (!parts.is_empty()).then(|| format!("{which} planned/measured: {}", parts.join(" · ")))
}

/// The roster: every human of the study and every bot, through the table module.
pub fn roster_table(st: &RunState) -> String {
    use crate::table::{ObsStatus as Obs, RosterRow, Style};
    let mut rows: Vec<RosterRow> = st
        .live
        .players
        .iter()
        .filter(|p| p.presence == Presence::In)
        .map(RosterRow::from)
        .collect();
    rows.extend(st.live.bots.iter().map(|b| RosterRow {
        slot: b.slot,
        ip: None,
        kind: crate::arena::PlayerKind::Bot,
        latency_ms: None,
        obs: Obs::NotApplicable,
        name: b.name.clone(),
    }));
    crate::table::roster(&rows, Style::stderr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{MeasuredLatency, RttStats};

    fn measured(planned: f64, added: Option<f64>, within: Option<bool>) -> MeasuredLatency {
        let s = RttStats {
            count: 5,
            p50_ms: 100.0,
            p95_ms: 120.0,
        };
        MeasuredLatency {
            ping: s,
            baseline: added.map(|_| s),
            planned_ms: planned,
            added_ms: added,
            deviation_ms: added.map(|a| a - planned),
            allowed_ms: 15.0,
            within,
            icmp: None,
        }
    }

    #[test]
    fn the_latency_line_shows_planned_against_measured_per_player() {
        let mut st = RunState::new(crate::run::state::tests::manifest());
        let mut seq = 0;
        let mut apply = |st: &mut RunState, event: RunEvent| {
            seq += 1;
            st.apply(&Envelope {
                seq,
                at: Timestamp::now(),
                event,
            });
        };
        apply(
            &mut st,
            RunEvent::PlayerJoined {
                player: 1,
                label: "pc\u{1b}[2J1".into(),
                slot: 0,
                ip: "10.77.0.11".parse().unwrap(),
                seat: None,
                name: "a".into(),
                name_raw: "a".into(),
                obs_port: 4455,
            },
        );
        assert_eq!(latency_line(&st, 1), None, "nothing measured yet");
        apply(
            &mut st,
            RunEvent::LatencyMeasured {
                match_no: 1,
                player: 1,
                measured: measured(100.0, Some(98.4), Some(true)),
            },
        );
        let one = latency_line(&st, 1).unwrap();
        assert!(one.starts_with("m1 planned/measured: pc"), "{one}");
        assert!(one.ends_with("1 100/98 ms"), "{one}");
        assert!(
            !one.contains('\u{1b}'),
            "the label reaches the terminal escaped: {one}"
        );
        apply(
            &mut st,
            RunEvent::LatencyMeasured {
                match_no: 1,
                player: 2,
                measured: measured(0.0, None, None),
            },
        );
        apply(
            &mut st,
            RunEvent::LatencyMeasured {
                match_no: 2,
                player: 2,
                measured: measured(0.0, Some(40.0), Some(false)),
            },
        );
        let both = latency_line(&st, 1).unwrap();
        assert!(both.ends_with(" · player 2 0/? ms"), "{both}");
        assert_eq!(
            latency_line(&st, 2).as_deref(),
            Some("m2 planned/measured: player 2 0/40 ms OFF")
        );
        assert_eq!(latency_line(&st, 9), None);
    }
}
