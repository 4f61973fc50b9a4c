//! `oa-run check <scenario>`: is everything the study needs reachable and usable, before anyone
//! sits down? Each peer module contributes rows; the table goes to stdout.

use std::fmt::Write as _;

use serde::Serialize;

use crate::term::escape;

/// One line of the check table.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckRow {
    /// What was checked: `scenario`, `server`, `obs`, `latency`.
    pub component: String,
    /// Which instance: a seat name, an address, an interface.
    pub target: String,
    pub ok: bool,
    /// Facts found, as (label, value) pairs, e.g. ("websocket", "5.1.0").
    pub details: Vec<(String, String)>,
}

impl CheckRow {
    pub fn new(component: &str, target: impl Into<String>, ok: bool) -> Self {
        CheckRow {
            component: component.into(),
            target: target.into(),
            ok,
            details: Vec::new(),
        }
    }
    pub fn detail(mut self, k: &str, v: impl ToString) -> Self {
        self.details.push((k.into(), v.to_string()));
        self
    }
}

/// Render rows as an aligned table.
pub fn table(rows: &[CheckRow]) -> String {
    let cw = rows
        .iter()
        .map(|r| r.component.len())
        .max()
        .unwrap_or(0)
        .max(9);
    let tw = rows
        .iter()
        .map(|r| r.target.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<cw$}  {:<tw$}  {:<4}  details",
        "component", "target", "ok"
    );
    for r in rows {
        // Versions, addresses and errors come from peers.
        let details: Vec<String> = r
            .details
            .iter()
            .map(|(k, v)| format!("{k}={}", escape(v)))
            .collect();
        let _ = writeln!(
            out,
            "{:<cw$}  {:<tw$}  {:<4}  {}",
            r.component,
            escape(&r.target),
            if r.ok { "yes" } else { "NO" },
            details.join(" ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_marks_failures() {
        let rows = vec![
            CheckRow::new("obs", "pc1", true).detail("websocket", "5.1.0"),
            CheckRow::new("obs", "pc2", false).detail("error", "connection refused"),
        ];
        let t = table(&rows);
        assert!(t.lines().nth(1).unwrap().contains("yes"));
        assert!(t.lines().nth(2).unwrap().contains("NO"));
        assert!(t.contains("error=connection refused"));
        let rows = vec![CheckRow::new("obs", "pc\n1", true).detail("obs", "29\u{1b}[2J\nfake row")];
        let t = table(&rows);
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(!t.contains('\u{1b}'));
        assert!(t.contains("obs=29\\u{1b}[2J\\nfake row"), "{t}");
    }
}
