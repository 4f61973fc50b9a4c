//! The end-of-run summary printed to the terminal.

use super::*;

impl Manifest {
    /// A few lines for the end of a run: status, matches, recordings by status, kicks, where
    /// things are, then each player × match that is not complete, with its reason.
    pub fn summary(&self) -> String {
        let played = self.matches.iter().filter(|m| m.ended_at.is_some()).count();
        let counts = self.outcome_counts();
        let planned: usize = counts.iter().map(|(_, n)| n).sum();
        let kicks = self
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Kick)
            .count();
        let problems = self
            .events
            .iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    EventKind::ObsFailure
                        | EventKind::RecordingFailure
                        | EventKind::LatencyFailure
                        | EventKind::ServerFailure
                        | EventKind::Failure
                        | EventKind::Warning
                )
            })
            .count();
        let status = match &self.status {
            RunStatus::Failed { reason, .. } => format!("failed: {}", crate::term::escape(reason)),
            RunStatus::Interrupted { reason, .. } => {
                format!("interrupted: {}", crate::term::escape(reason))
            }
            s => s.name().to_string(),
        };
        let by_status: Vec<String> = counts
            .iter()
            .skip(1)
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        let mut s = format!(
            "run {} {status}\n  matches played: {played}/{}\n  recordings complete: {}/{planned}{}\n  kicks: {kicks}, failures and warnings: {problems}\n  manifest: {}\n",
            self.run_id,
            self.matches.len(),
            counts[0].1,
            if by_status.is_empty() {
                String::new()
            } else {
                format!(" ({})", by_status.join(", "))
            },
            crate::term::escape(&self.run_dir.join(MANIFEST_FILE).display().to_string()),
        );
        for m in &self.matches {
            if let Some(l) = crate::align::match_line(m, &self.recordings) {
                s.push_str(&format!("  m{}: {l}\n", m.number));
            }
            if let Some(line) = self.stats_line(m) {
                s.push_str(&line);
            }
            s.push_str(&self.latency_lines(m));
        }
        for (m, p, o) in self.outcomes() {
            let rec = self
                .recordings
                .iter()
                .find(|r| r.player == p.index && r.match_no == m.number);
            let what = match (o.status, &o.reason) {
                (CellStatus::Complete, _) => rec
                    .and_then(|r| r.path.clone())
                    .unwrap_or_else(|| "complete".into()),
                (st, Some(reason)) => format!("{}: {reason}", st.name().to_uppercase()),
                (st, None) => st.name().to_uppercase(),
            };
            let at = match rec.map(|r| (r.match_start_offset_ms, r.match_end_offset_ms)) {
                Some((Some(a), Some(b))) => format!(
                    " (match at {:.3}–{:.3} s)",
                    a as f64 / 1000.0,
                    b as f64 / 1000.0
                ),
                Some((Some(a), None)) => format!(" (match from {:.3} s)", a as f64 / 1000.0),
                _ => String::new(),
            };
            let unaligned = rec
                .and_then(|r| r.alignment.as_ref())
                .filter(|a| !a.warnings.is_empty())
                .map(|a| format!("; not aligned: {}", a.warnings.join("; ")))
                .unwrap_or_default();
            s.push_str(&format!(
                "  m{} {}: {}{at}{}
",
                m.number,
                crate::term::escape(&p.label),
                crate::term::escape(&what),
                crate::term::escape(&unaligned)
            ));
        }
        s
    }

    /// `  m1 latency pc2: planned 150 ms, measured 148 ms (…)` per measured player: planned
    /// against measured, a deviation marked (see [`crate::measure::describe`]).
    fn latency_lines(&self, m: &MatchRecord) -> String {
        let mut s = String::new();
        for l in &m.latency {
            let Some(measured) = &l.measured else {
                continue;
            };
            let label = self
                .players
                .iter()
                .find(|p| p.index == l.player)
                .map(|p| crate::term::escape(&p.label).into_owned())
                .unwrap_or_else(|| format!("player {}", l.player));
            s.push_str(&format!(
                "  m{}{} latency {label}: {}\n",
                m.number,
                if m.practice { " (practice)" } else { "" },
                crate::measure::describe(measured)
            ));
        }
        s
    }

    /// `  m1 stats: pc1 3 kills, 2 deaths, 0 suicides, score 3, 60 s; pc2 …` for the study's
    /// players (by label, never by their in-game name), when the match has stats.
    fn stats_line(&self, m: &MatchRecord) -> Option<String> {
        let stats = m.stats.as_ref()?;
        let parts: Vec<String> = stats
            .players
            .iter()
            .filter_map(|p| {
                let label = &self
                    .players
                    .iter()
                    .find(|r| Some(r.index) == p.player)?
                    .label;
                let score = p.score.map_or("no score".into(), |s| format!("score {s}"));
                Some(format!(
                    "{} {} kills, {} deaths, {} suicides, {score}, {:.0} s",
                    crate::term::escape(label),
                    p.kills,
                    p.deaths,
                    p.suicides + p.world_deaths,
                    p.time_in_match_s
                ))
            })
            .collect();
        (!parts.is_empty()).then(|| {
            format!(
                "  m{}{} stats: {}\n",
                m.number,
                if m.practice { " (practice)" } else { "" },
                parts.join("; ")
            )
        })
    }
}
