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
            if let Some(l) = crate::align::match_line(m, &self.recordings) {
                s.push_str(&format!("  m{}: {l}\n", m.number));
            }
        }
        for r in &self.recordings {
            let what = match (&r.path, &r.error) {
                (_, Some(e)) => format!("FAILED: {}", esc(e)),
                (Some(p), None) => esc(p).into_owned(),
                (None, None) => "(not recorded)".into(),
            };
            let at = match (r.match_start_offset_ms, r.match_end_offset_ms) {
                (Some(a), Some(b)) => format!(
                    " (match at {:.3}–{:.3} s)",
                    a as f64 / 1000.0,
                    b as f64 / 1000.0
                ),
                (Some(a), None) => format!(" (match from {:.3} s)", a as f64 / 1000.0),
                _ => String::new(),
            };
            let unaligned = r
                .alignment
                .as_ref()
                .filter(|a| !a.warnings.is_empty())
                .map(|a| format!("; not aligned: {}", esc(&a.warnings.join("; "))))
                .unwrap_or_default();
            s.push_str(&format!(
                "  m{} player{}: {}{at}{unaligned}\n",
                r.match_no, r.player, what
            ));
        }
        s
    }
}
