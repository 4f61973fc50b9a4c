//! The end-of-run summary printed to the terminal.

use super::*;

impl Manifest {
    /// A few lines for the end of a run: status, matches, recordings, kicks, where things are.
    pub fn summary(&self) -> String {
        let played = self.matches.iter().filter(|m| m.ended_at.is_some()).count();
        let ok = self
            .recordings
            .iter()
            .filter(|r| r.stopped_at.is_some() && r.error.is_none())
            .count();
        let planned = self.matches.len() * self.players.len();
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
        let esc = crate::term::escape;
        let mut s = format!(
            "run {} {status}\n  matches played: {played}/{}\n  recordings complete: {ok}/{planned}\n  kicks: {kicks}, failures and warnings: {problems}\n  manifest: {}\n",
            self.run_id,
            self.matches.len(),
            esc(&self.run_dir.join(MANIFEST_FILE).display().to_string()),
        );
        for m in &self.matches {
            if let Some(line) = self.stats_line(m) {
                s.push_str(&line);
            }
        }
        for r in &self.recordings {
            let what = match (&r.path, &r.error) {
                (_, Some(e)) => format!("FAILED: {}", esc(e)),
                (Some(p), None) => esc(p).into_owned(),
                (None, None) => "(not recorded)".into(),
            };
            s.push_str(&format!("  m{} player{}: {}\n", r.match_no, r.player, what));
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
                    "{label} {} kills, {} deaths, {} suicides, {score}, {:.0} s",
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
