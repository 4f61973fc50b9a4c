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
}
