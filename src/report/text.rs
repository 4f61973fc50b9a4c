//! `report --format text`: a summary per run (what ran, from which scenario version, with which
//! oa-run, how it went), then one table of every player × match.

use std::fmt::Write as _;

use comfy_table::{Cell, CellAlignment, Color};

use super::{Row, rows};
use crate::manifest::{CellStatus, Manifest, RunStatus, ScenarioGit};
use crate::table::{self, Style, escape};

/// The whole text report. With several runs, the table has a Run column (the run id's first
/// 8 hex digits, as in the run's summary line).
pub fn text(runs: &[Manifest], style: Style) -> String {
    let mut out = String::new();
    for m in runs {
        out.push_str(&summary(m));
        out.push('\n');
    }
    let several = runs.len() > 1;
    let mut header = vec![];
    if several {
        header.push("Run");
    }
    header.extend([
        "Match",
        "Repeat",
        "Player",
        "Slot",
        "Latency",
        "Status",
        "Reason",
        "Recording",
        "Size",
        "Duration",
        "Match at",
    ]);
    let mut t = table::new(style, &header);
    for m in runs {
        for r in rows(m) {
            t.add_row(cells(&r, several, style));
        }
    }
    // Numbers right-aligned.
    for i in [0usize, 1, 3, 4, 8, 9, 10] {
        if let Some(c) = t.column_mut(i + usize::from(several)) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    out.push_str(&table::render(&t));
    out
}

fn cells(r: &Row, several: bool, style: Style) -> Vec<Cell> {
    let mut v = Vec::with_capacity(12);
    if several {
        v.push(Cell::new(r.run_id.get(..8).unwrap_or(&r.run_id)));
    }
    let color = match r.status {
        CellStatus::Complete => Color::Green,
        CellStatus::Partial => Color::Yellow,
        CellStatus::Failed | CellStatus::Missing => Color::Red,
    };
    let file = r
        .recording_path
        .as_deref()
        // OBS paths may be Windows paths: take the last component of either kind.
        .map(|p| p.rsplit(['/', '\\']).next().unwrap_or(p));
    v.extend([
        Cell::new(r.match_no),
        Cell::new(r.repeat),
        table::text(&r.label),
        Cell::new(dash(r.slot)),
        Cell::new(dash(r.latency_ms.map(|l| format!("{l}ms")))),
        table::colored(style, r.status.name(), color),
        table::text(r.reason.as_deref().unwrap_or("")),
        table::text(file.unwrap_or("-")),
        Cell::new(dash(r.recording_bytes.map(human_bytes))),
        Cell::new(dash(
            r.recording_duration_ms
                .map(|d| format!("{}.{}s", d / 1000, d % 1000 / 100)),
        )),
        Cell::new(dash(
            r.match_start_offset_ms
                .map(|o| format!("{:.3}s", o as f64 / 1000.0)),
        )),
    ]);
    v
}

fn dash<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// `12.3 MB` (decimal units, as file managers show them).
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The per-run summary: a few labelled lines.
pub fn summary(m: &Manifest) -> String {
    let mut s = String::new();
    let status = match &m.status {
        RunStatus::Failed { reason, exit_code } => format!("failed (exit {exit_code}): {reason}"),
        RunStatus::Interrupted { signal, reason } => match signal {
            Some(sig) => format!("interrupted by {sig}: {reason}"),
            None => format!("interrupted: {reason}"),
        },
        other => other.name().to_string(),
    };
    let _ = writeln!(
        s,
        "Run {} of {}: {}",
        m.run_id,
        escape(&m.scenario.resolved.name),
        escape(&status)
    );
    let ended = m.ended_at.map_or_else(|| "-".into(), |t| t.to_string());
    let _ = writeln!(s, "  started:   {}, ended {ended}", m.started_at);
    let short = m.scenario.sha256.get(..12).unwrap_or(&m.scenario.sha256);
    let _ = writeln!(
        s,
        "  scenario:  {} (sha256 {short}…)",
        escape(&m.scenario.path.display().to_string())
    );
    if !m.scenario.overrides.is_empty() {
        let _ = writeln!(
            s,
            "  overrides: {}",
            escape(&m.scenario.overrides.join(", "))
        );
    }
    let git = if (m.format_version.major, m.format_version.minor) < (1, 1) {
        // Written before oa-run recorded provenance.
        format!(
            "not recorded (manifest format {}.{})",
            m.format_version.major, m.format_version.minor
        )
    } else {
        git_line(&m.scenario.git)
    };
    let _ = writeln!(s, "  git:       {git}");
    let _ = writeln!(s, "  oa-run:    {}", escape(&m.tool.describe()));
    let _ = writeln!(
        s,
        "  host:      {} ({} {})",
        escape(&m.host.hostname),
        escape(&m.host.os),
        escape(&m.host.arch)
    );
    let played = m.matches.iter().filter(|x| x.ended_at.is_some()).count();
    let counts: Vec<String> = m
        .outcome_counts()
        .iter()
        .map(|(st, n)| format!("{n} {st}"))
        .collect();
    let _ = writeln!(
        s,
        "  matches:   {played}/{} played; recordings: {}",
        m.matches.len(),
        counts.join(", ")
    );
    let kicked: Vec<String> = m
        .players
        .iter()
        .filter_map(|p| {
            p.kicked
                .as_ref()
                .map(|k| format!("{} ({})", escape(&p.label), escape(&k.reason)))
        })
        .collect();
    if !kicked.is_empty() {
        let _ = writeln!(s, "  kicked:    {}", kicked.join(", "));
    }
    let left: Vec<String> = m
        .players
        .iter()
        .filter(|p| p.left_at.is_some() && p.kicked.is_none())
        .map(|p| escape(&p.label).into_owned())
        .collect();
    if !left.is_empty() {
        let _ = writeln!(s, "  left:      {}", left.join(", "));
    }
    let _ = writeln!(
        s,
        "  run dir:   {}",
        escape(&m.run_dir.display().to_string())
    );
    s
}

fn git_line(g: &Option<ScenarioGit>) -> String {
    let Some(g) = g else {
        return "unknown (git was not available when the run started)".into();
    };
    if !g.in_repo {
        return "the scenario is not in a git repository".into();
    }
    let commit = g
        .commit
        .as_deref()
        .map_or("no commit yet".to_string(), |c| {
            format!("commit {}", c.get(..12).unwrap_or(c))
        });
    let branch = g
        .branch
        .as_deref()
        .map_or(" (detached HEAD)".to_string(), |b| {
            format!(" on {}", escape(b))
        });
    let flag = |v: Option<bool>, what: &str| match v {
        Some(true) => format!("{what} dirty"),
        Some(false) => format!("{what} clean"),
        None => format!("{what} unknown"),
    };
    format!(
        "{commit}{branch}; {}, {}",
        flag(g.file_dirty, "file"),
        flag(g.repo_dirty, "repository")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(12_345_678), "12.3 MB");
        assert_eq!(human_bytes(1_500_000_000), "1.5 GB");
    }

    #[test]
    fn git_lines() {
        assert!(git_line(&None).starts_with("unknown"));
        let g = ScenarioGit {
            in_repo: true,
            commit: Some("0123456789abcdef".into()),
            branch: Some("main".into()),
            file_dirty: Some(false),
            repo_dirty: Some(true),
        };
        assert_eq!(
            git_line(&Some(g)),
            "commit 0123456789ab on main; file clean, repository dirty"
        );
    }
}
