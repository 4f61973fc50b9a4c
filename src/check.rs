//! `oa-run check <scenario>`: is everything the study needs reachable and usable, before anyone
//! sits down? Each peer module contributes rows; the table goes to stdout.

use serde::Serialize;

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

/// Render rows as a table for stdout (see [`crate::table`] for how it looks where).
pub fn table(rows: &[CheckRow]) -> String {
    table_in(rows, crate::table::Style::stdout())
}

/// Render rows as a table in `style`. Targets and details come from peers: shown escaped.
pub fn table_in(rows: &[CheckRow], style: crate::table::Style) -> String {
    use crate::table::{self, colored, text};
    use comfy_table::Color;
    let mut t = table::new(style, &["component", "target", "ok", "details"]);
    for r in rows {
        let details: Vec<String> = r.details.iter().map(|(k, v)| format!("{k}={v}")).collect();
        t.add_row(vec![
            text(&r.component),
            text(&r.target),
            if r.ok {
                colored(style, "yes", Color::Green)
            } else {
                colored(style, "NO", Color::Red)
            },
            text(&details.join(" ")),
        ]);
    }
    table::render(&t)
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
        let t = table_in(&rows, crate::table::Style::PLAIN);
        assert_eq!(
            t,
            "component  target  ok   details\n\
             obs        pc1     yes  websocket=5.1.0\n\
             obs        pc2     NO   error=connection refused\n"
        );
        // A peer's text cannot reach the terminal raw.
        let rows = vec![CheckRow::new("obs", "pc1", false).detail("error", "bad\n\u{1b}[2J")];
        assert!(table_in(&rows, crate::table::Style::PLAIN).contains("error=bad\\n\\u{1b}[2J"));
    }
}
