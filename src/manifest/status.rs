//! The status of one player's recording of one match (complete / partial / failed / missing)
//! with its reason: derived here only, for `report` and for the end-of-run summary.

use serde::Serialize;

use super::{Manifest, MatchEnding, MatchRecord, PlayerRecord, RecordingRecord, RunStatus};

/// What a researcher has for one player in one match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    /// A recording that started and stopped cleanly, of a match that ended normally, with the
    /// player there throughout.
    Complete,
    /// A recording exists but does not cover the whole match (aborted or unfinished match,
    /// player left, stopped early, never confirmed stopped).
    Partial,
    /// The recording failed: OBS reported an error and no final file was confirmed.
    Failed,
    /// No recording (match not played, player gone, OBS not connected, ...).
    #[default]
    Missing,
}

impl CellStatus {
    pub const ALL: [CellStatus; 4] = [
        CellStatus::Complete,
        CellStatus::Partial,
        CellStatus::Failed,
        CellStatus::Missing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CellStatus::Complete => "complete",
            CellStatus::Partial => "partial",
            CellStatus::Failed => "failed",
            CellStatus::Missing => "missing",
        }
    }
}

impl std::fmt::Display for CellStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A status with the reason it is not complete (`None` for complete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellOutcome {
    pub status: CellStatus,
    pub reason: Option<String>,
}

impl CellOutcome {
    fn new(status: CellStatus, reason: impl Into<String>) -> Self {
        CellOutcome {
            status,
            reason: Some(reason.into()),
        }
    }
}

impl Manifest {
    /// The outcome for player `player` (1-based index) in match `match_no`.
    pub fn outcome(&self, player: u32, match_no: u32) -> CellOutcome {
        let p = self.players.iter().find(|p| p.index == player);
        let m = self.matches.iter().find(|m| m.number == match_no);
        let r = self
            .recordings
            .iter()
            .find(|r| r.player == player && r.match_no == match_no);
        derive(&self.status, p, m, r)
    }

    /// Outcomes of every planned player × match, in match then player order. A match that a
    /// resumed run completed (`completed_in`) belongs to that run's rows, not these.
    pub fn outcomes(&self) -> impl Iterator<Item = (&MatchRecord, &PlayerRecord, CellOutcome)> {
        self.matches
            .iter()
            .filter(|m| m.completed_in.is_none())
            .flat_map(move |m| {
                self.players
                    .iter()
                    .map(move |p| (m, p, self.outcome(p.index, m.number)))
            })
    }

    /// How many player × match cells have each status, in [`CellStatus::ALL`] order.
    pub fn outcome_counts(&self) -> [(CellStatus, usize); 4] {
        let mut counts = CellStatus::ALL.map(|s| (s, 0));
        for (_, _, o) in self.outcomes() {
            counts[o.status as usize].1 += 1;
        }
        counts
    }
}

fn derive(
    run: &RunStatus,
    p: Option<&PlayerRecord>,
    m: Option<&MatchRecord>,
    r: Option<&RecordingRecord>,
) -> CellOutcome {
    use CellStatus::*;
    if let Some(r) = r {
        if let Some(e) = &r.error {
            // OBS confirmed both start and stop: there is a final file, but the error (e.g.
            // "stopped early by cleanup") says it does not cover the match.
            let status = if r.started_at.is_some() && r.stopped_at.is_some() {
                Partial
            } else {
                Failed
            };
            return CellOutcome::new(status, e.clone());
        }
        // A recording OBS cut short while it ran (exited, stopped unasked, lost).
        if let Some(h) = r.health.iter().find(|h| h.issue.loses_recording()) {
            let status = if r.stopped_at.is_some() || r.path.is_some() {
                Partial
            } else {
                Failed
            };
            return CellOutcome::new(status, h.issue.describe());
        }
        if let (Some(start), Some(stop)) = (r.started_at, r.stopped_at) {
            if let Some(m) = m.filter(|m| m.ended_by == Some(MatchEnding::Aborted)) {
                return CellOutcome::new(
                    Partial,
                    match &m.end_detail {
                        Some(d) => format!("match aborted: {d}"),
                        None => "match aborted".into(),
                    },
                );
            }
            if m.is_some_and(|m| m.started_at.is_some() && m.ended_at.is_none()) {
                return CellOutcome::new(Partial, "the match did not finish");
            }
            if let Some(p) = p
                && p.left_at.is_some_and(|l| start <= l && l <= stop)
            {
                return CellOutcome::new(Partial, gone_reason(p, "during the match"));
            }
            return CellOutcome {
                status: Complete,
                reason: None,
            };
        }
        if r.started_at.is_some() {
            return CellOutcome::new(
                Partial,
                match run {
                    RunStatus::Interrupted { reason, .. } => {
                        format!("recording not confirmed stopped (run interrupted: {reason})")
                    }
                    RunStatus::Failed { reason, .. } => {
                        format!("recording not confirmed stopped (run failed: {reason})")
                    }
                    _ => "recording not confirmed stopped".into(),
                },
            );
        }
    }
    // No recording, or one that never started.
    let match_start = m.and_then(|m| m.started_at);
    if let Some(p) = p
        && let Some(left) = p.left_at
        && match_start.is_none_or(|s| left <= s)
    {
        return CellOutcome::new(Missing, gone_reason(p, "before the match"));
    }
    if match_start.is_none() {
        return CellOutcome::new(
            Missing,
            match run {
                RunStatus::Running => "match not played yet (run still running)".to_string(),
                RunStatus::Completed => "match not played".into(),
                RunStatus::Failed { reason, .. } => {
                    format!("match not played: run failed: {reason}")
                }
                RunStatus::Interrupted { reason, .. } => {
                    format!("match not played: run interrupted: {reason}")
                }
                RunStatus::Crashed { .. } => "match not played: oa-run died (run recovered)".into(),
            },
        );
    }
    if let Some(p) = p {
        if p.joined_at.is_none() && p.slot.is_none() {
            return CellOutcome::new(Missing, "player never joined");
        }
        if let Some(e) = &p.obs.error {
            return CellOutcome::new(Missing, format!("OBS not connected: {e}"));
        }
        if p.obs.connected_at.is_none() {
            return CellOutcome::new(Missing, "OBS not connected");
        }
    }
    CellOutcome::new(Missing, "not recorded")
}

/// `kicked during the match: <reason>` or `left before the match`.
fn gone_reason(p: &PlayerRecord, when: &str) -> String {
    match &p.kicked {
        Some(k) => format!("kicked {when}: {}", k.reason),
        None => format!("left {when}"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Kick, ObsRecord, Timestamp};
    use super::*;
    use chrono::{DateTime, Utc};

    fn t(s: u32) -> Timestamp {
        Timestamp::from(DateTime::<Utc>::from_timestamp(1_800_000_000 + s as i64, 0).unwrap())
    }

    fn player() -> PlayerRecord {
        let mut p = PlayerRecord::new(1, "pc1", 4455);
        p.slot = Some(2);
        p.joined_at = Some(t(0));
        p.obs = ObsRecord {
            connected_at: Some(t(1)),
            ..p.obs
        };
        p
    }

    fn played() -> MatchRecord {
        MatchRecord {
            number: 1,
            repeat: 1,
            map: None,
            started_at: Some(t(10)),
            ended_at: Some(t(40)),
            ended_by: Some(MatchEnding::Timelimit),
            end_detail: None,
            latency: vec![],
            shaping: None,
            replay_of: None,
            completed_in: None,
            alignment_spread_ms: None,
            alignment_error_ms: None,
        }
    }

    fn recorded() -> RecordingRecord {
        let mut r = RecordingRecord::planned(1, 1, "x");
        r.started_at = Some(t(10));
        r.stopped_at = Some(t(41));
        r
    }

    fn status(
        run: RunStatus,
        p: PlayerRecord,
        m: MatchRecord,
        r: Option<RecordingRecord>,
    ) -> CellOutcome {
        derive(&run, Some(&p), Some(&m), r.as_ref())
    }

    #[test]
    fn a_clean_recording_is_complete() {
        let o = status(RunStatus::Completed, player(), played(), Some(recorded()));
        assert_eq!(o.status, CellStatus::Complete);
        assert_eq!(o.reason, None);
    }

    #[test]
    fn an_error_is_failed_with_its_reason() {
        let mut r = recorded();
        r.error = Some("OBS answered 500".into());
        let o = status(RunStatus::Completed, player(), played(), Some(r));
        assert_eq!(o, CellOutcome::new(CellStatus::Partial, "OBS answered 500"));
        let mut r = RecordingRecord::planned(1, 1, "x");
        r.error = Some("OBS answered 500".into());
        let o = status(RunStatus::Completed, player(), played(), Some(r));
        assert_eq!(o, CellOutcome::new(CellStatus::Failed, "OBS answered 500"));
        // A file finalised by cleanup is partial, with the reason.
        let mut r = recorded();
        r.error = Some("stopped early by cleanup".into());
        let o = status(RunStatus::Completed, player(), played(), Some(r));
        assert_eq!(
            o,
            CellOutcome::new(CellStatus::Partial, "stopped early by cleanup")
        );
    }

    #[test]
    fn an_aborted_match_or_a_leaver_is_partial() {
        let mut m = played();
        m.ended_by = Some(MatchEnding::Aborted);
        m.end_detail = Some("server died".into());
        let o = status(RunStatus::Completed, player(), m, Some(recorded()));
        assert_eq!(
            o,
            CellOutcome::new(CellStatus::Partial, "match aborted: server died")
        );
        let mut m = played();
        m.ended_at = None;
        m.ended_by = None;
        let o = status(RunStatus::Completed, player(), m, Some(recorded()));
        assert_eq!(
            o,
            CellOutcome::new(CellStatus::Partial, "the match did not finish")
        );

        let mut p = player();
        p.left_at = Some(t(20));
        p.kicked = Some(Kick {
            at: t(20),
            reason: "OBS failed".into(),
        });
        let o = status(RunStatus::Completed, p, played(), Some(recorded()));
        assert_eq!(
            o,
            CellOutcome::new(CellStatus::Partial, "kicked during the match: OBS failed")
        );

        let mut r = recorded();
        r.stopped_at = None;
        let o = status(
            RunStatus::Interrupted {
                signal: None,
                reason: "Ctrl-C".into(),
            },
            player(),
            played(),
            Some(r),
        );
        assert_eq!(o.status, CellStatus::Partial);
        assert!(o.reason.unwrap().contains("run interrupted: Ctrl-C"));
    }

    #[test]
    fn a_recording_obs_cut_short_is_partial() {
        use crate::obs::health::HealthIssue;
        let mut r = recorded();
        r.health.push(super::super::HealthNote {
            at: t(20),
            issue: HealthIssue::Frames {
                skipped: 3,
                lagged: 0,
            },
        });
        // Lost frames alone do not lose the recording.
        let o = status(RunStatus::Completed, player(), played(), Some(r.clone()));
        assert_eq!(o.status, CellStatus::Complete);
        r.health.push(super::super::HealthNote {
            at: t(25),
            issue: HealthIssue::StoppedUnexpectedly,
        });
        let o = status(RunStatus::Completed, player(), played(), Some(r));
        assert_eq!(
            o,
            CellOutcome::new(
                CellStatus::Partial,
                "OBS stopped the recording without being asked"
            )
        );
    }

    #[test]
    fn matches_completed_in_the_resumed_run_have_no_rows_here() {
        let mut m = crate::run::state::tests::manifest();
        let n = m.matches.len();
        assert_eq!(m.outcomes().count(), n * m.players.len());
        m.matches[0].completed_in = Some("11111111-1111-4111-8111-111111111111".into());
        assert_eq!(m.outcomes().count(), (n - 1) * m.players.len());
        assert!(
            m.outcomes()
                .all(|(mm, _, _)| mm.number != m.matches[0].number)
        );
    }

    #[test]
    fn missing_says_why() {
        let mut p = player();
        p.left_at = Some(t(5));
        let o = status(RunStatus::Completed, p, played(), None);
        assert_eq!(
            o,
            CellOutcome::new(CellStatus::Missing, "left before the match")
        );

        let mut m = played();
        m.started_at = None;
        let o = status(
            RunStatus::Failed {
                reason: "boom".into(),
                exit_code: 1,
            },
            player(),
            m,
            None,
        );
        assert_eq!(
            o,
            CellOutcome::new(CellStatus::Missing, "match not played: run failed: boom")
        );

        let mut p = player();
        p.obs.connected_at = None;
        p.obs.error = Some("connection refused".into());
        let o = status(RunStatus::Completed, p, played(), None);
        assert_eq!(
            o,
            CellOutcome::new(CellStatus::Missing, "OBS not connected: connection refused")
        );

        let mut p = player();
        p.slot = None;
        p.joined_at = None;
        let o = status(RunStatus::Completed, p, played(), None);
        assert_eq!(o.reason.as_deref(), Some("player never joined"));
    }
}
