//! Tables for people (comfy-table): the roster during a run, the results after each match, and
//! the building blocks `report` and `check` use. Every cell that may hold text from a peer goes
//! through [`escape`] (the crate's one escape, `term::escape`), so a player name can never put
//! a control character on the terminal.
//!
//! On a terminal: rounded borders, wrapped to the terminal's width, colour unless `NO_COLOR`
//! is set. Off a terminal: no borders, no colour, no wrapping, columns aligned with spaces.

use std::io::IsTerminal;
use std::net::IpAddr;

use comfy_table::{Cell, Color, ContentArrangement, Table, presets};

use crate::arena::roster::{self, PlayerKind};

/// How a table is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Borders and wrapping to the terminal's width.
    pub tty: bool,
    /// Colours (only with `tty`).
    pub color: bool,
}

impl Style {
    /// Aligned columns, no borders, no colour: for pipes, files, logs and golden tests.
    pub const PLAIN: Style = Style {
        tty: false,
        color: false,
    };

    /// For a table printed to stdout.
    pub fn stdout() -> Style {
        Style::detect(std::io::stdout().is_terminal())
    }

    /// For a table printed to stderr (e.g. through the log).
    pub fn stderr() -> Style {
        Style::detect(std::io::stderr().is_terminal())
    }

    fn detect(tty: bool) -> Style {
        Style::decide(
            tty,
            std::env::var_os("NO_COLOR").as_deref(),
            std::env::var_os("TERM").as_deref(),
        )
    }

    /// The style for a stream that is (or is not) a terminal, given `NO_COLOR` and `TERM`.
    fn decide(
        tty: bool,
        no_color: Option<&std::ffi::OsStr>,
        term: Option<&std::ffi::OsStr>,
    ) -> Style {
        // https://no-color.org: set and not empty disables colour.
        let no_color = no_color.is_some_and(|v| !v.is_empty());
        let dumb = term.is_some_and(|t| t == "dumb");
        Style {
            tty,
            color: tty && !no_color && !dumb,
        }
    }
}

/// A table with these column headers, drawn in `style`.
pub fn new(style: Style, header: &[&str]) -> Table {
    let mut t = Table::new();
    if style.tty {
        t.load_style(presets::UTF8_FULL_CONDENSED.with_rounded_corners())
            .set_content_arrangement(ContentArrangement::Dynamic);
        if style.color {
            t.enforce_styling();
        }
    } else {
        t.load_style(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled)
            .force_no_tty();
    }
    t.set_header(header.iter().map(Cell::new));
    if !style.tty {
        // Two spaces between columns, none before the first.
        for c in t.column_iter_mut() {
            c.set_padding((0, 2));
        }
    }
    t
}

/// A cell holding untrusted text, escaped.
pub fn text(s: &str) -> Cell {
    Cell::new(escape(s))
}

/// A cell coloured `color` when the style has colour.
pub fn colored(style: Style, s: &str, color: Color) -> Cell {
    let c = Cell::new(escape(s));
    if style.color { c.fg(color) } else { c }
}

/// The table as text: one line per row, no trailing spaces, ending in a newline.
pub fn render(t: &Table) -> String {
    let mut out = String::new();
    for line in t.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Peer text made safe for a terminal: the one escape ([`crate::term::escape`]).
pub use crate::term::escape;

/// `-` for a value that is not there.
fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

// ------------------------------------------------------------------------------------------
// The roster during a run
// ------------------------------------------------------------------------------------------

/// The state of a player's OBS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObsStatus {
    Connected,
    /// Not (yet) connected; retries may still be under way.
    NotConnected,
    /// Given up on (the player's `on_failure` policy applies).
    Failed,
    /// Bots have no OBS.
    NotApplicable,
}

impl ObsStatus {
    pub fn label(self) -> &'static str {
        match self {
            ObsStatus::Connected => "Connected",
            ObsStatus::NotConnected => "Not Connected",
            ObsStatus::Failed => "Failed",
            ObsStatus::NotApplicable => "N/A",
        }
    }
}

/// One client on the server, human or bot.
#[derive(Debug, Clone, PartialEq)]
pub struct RosterRow {
    pub slot: u8,
    pub ip: Option<IpAddr>,
    pub kind: PlayerKind,
    /// Added latency now, for a human in the study.
    pub latency_ms: Option<u64>,
    pub obs: ObsStatus,
    /// The name as the game reports it (shown escaped).
    pub name: String,
}

impl RosterRow {
    /// A row for a client from the server's roster; a human's latency and OBS state come from
    /// the study, a bot has neither.
    pub fn from_roster(p: &roster::Player, latency_ms: Option<u64>, obs: ObsStatus) -> Self {
        let bot = p.kind == PlayerKind::Bot;
        RosterRow {
            slot: p.slot,
            ip: p.ip,
            kind: p.kind,
            latency_ms: if bot { None } else { latency_ms },
            obs: if bot { ObsStatus::NotApplicable } else { obs },
            name: p.name.clone(),
        }
    }
}

impl From<&crate::run::state::LivePlayer> for RosterRow {
    /// A human of the study as the run's state sees them.
    fn from(p: &crate::run::state::LivePlayer) -> Self {
        use crate::run::state::ObsStatus as Live;
        RosterRow {
            slot: p.slot,
            ip: Some(p.ip),
            kind: PlayerKind::Human,
            latency_ms: p.planned_latency_ms,
            obs: match p.obs {
                Live::Connected => ObsStatus::Connected,
                Live::NotConnected => ObsStatus::NotConnected,
                Live::Failed => ObsStatus::Failed,
            },
            name: p.name.clone(),
        }
    }
}

fn kind_label(k: PlayerKind) -> &'static str {
    match k {
        PlayerKind::Human => "HUMAN",
        PlayerKind::Bot => "BOT",
        PlayerKind::Unknown => "?",
    }
}

/// The roster table (Slot, IP, Type, Latency, OBS Status, Name), sorted by slot.
pub fn roster(rows: &[RosterRow], style: Style) -> String {
    let mut t = new(
        style,
        &["Slot", "IP", "Type", "Latency", "OBS Status", "Name"],
    );
    let mut rows: Vec<&RosterRow> = rows.iter().collect();
    rows.sort_by_key(|r| r.slot);
    for r in rows {
        let obs_color = match r.obs {
            ObsStatus::Connected => Color::Green,
            ObsStatus::NotConnected => Color::Yellow,
            ObsStatus::Failed => Color::Red,
            ObsStatus::NotApplicable => Color::Reset,
        };
        t.add_row(vec![
            Cell::new(r.slot),
            Cell::new(opt(r.ip)),
            Cell::new(kind_label(r.kind)),
            Cell::new(opt(r.latency_ms.map(|l| format!("{l}ms")))),
            colored(style, r.obs.label(), obs_color),
            text(&r.name),
        ]);
    }
    render(&t)
}

// ------------------------------------------------------------------------------------------
// Results after a match
// ------------------------------------------------------------------------------------------

/// What happened to one player's recording in one match.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub slot: Option<u32>,
    /// The player's label (seat, else cleaned name).
    pub player: String,
    pub latency_ms: Option<u64>,
    /// OBS confirmed the recording started.
    pub started: bool,
    /// OBS confirmed the file was complete.
    pub stopped: bool,
    /// Why the recording failed, if it did.
    pub failed: Option<String>,
    /// Why oa-run kicked the player, if it did.
    pub kicked: Option<String>,
}

impl ResultRow {
    /// One row per player in the manifest for match `match_no`.
    pub fn for_match(m: &crate::manifest::Manifest, match_no: u32) -> Vec<ResultRow> {
        let latency = m.matches.iter().find(|x| x.number == match_no);
        m.players
            .iter()
            .map(|p| {
                let r = m
                    .recordings
                    .iter()
                    .find(|r| r.player == p.index && r.match_no == match_no);
                ResultRow {
                    slot: p.slot,
                    player: p.label.clone(),
                    latency_ms: latency
                        .and_then(|x| x.latency.iter().find(|l| l.player == p.index))
                        .map(|l| l.latency_ms),
                    started: r.is_some_and(|r| r.started_at.is_some()),
                    stopped: r.is_some_and(|r| r.stopped_at.is_some()),
                    failed: r.and_then(|r| r.error.clone()),
                    kicked: p.kicked.as_ref().map(|k| k.reason.clone()),
                }
            })
            .collect()
    }
}

/// The after-match table (Slot, Player, Latency, Recording Started, Recording Stopped,
/// Recording Failed, Client Kicked).
pub fn results(rows: &[ResultRow], style: Style) -> String {
    let mut t = new(
        style,
        &[
            "Slot",
            "Player",
            "Latency",
            "Recording Started",
            "Recording Stopped",
            "Recording Failed",
            "Client Kicked",
        ],
    );
    let yes_no = |b: bool, good: bool| {
        let color = if b == good { Color::Green } else { Color::Red };
        colored(style, if b { "yes" } else { "no" }, color)
    };
    let reason = |r: &Option<String>| match r {
        Some(r) => colored(style, &format!("yes: {r}"), Color::Red),
        None => Cell::new("no"),
    };
    for r in rows {
        t.add_row(vec![
            Cell::new(opt(r.slot)),
            text(&r.player),
            Cell::new(opt(r.latency_ms.map(|l| format!("{l}ms")))),
            yes_no(r.started, true),
            yes_no(r.stopped, true),
            reason(&r.failed),
            reason(&r.kicked),
        ]);
    }
    render(&t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "a,b \"q\" <x>\n\u{1b}[31mred\r\ttab\\n\u{202e}rev";

    fn bot(slot: u8, name: &str) -> RosterRow {
        RosterRow {
            slot,
            ip: None,
            kind: PlayerKind::Bot,
            latency_ms: None,
            obs: ObsStatus::NotApplicable,
            name: name.into(),
        }
    }

    #[test]
    fn escape_shows_controls_and_keeps_the_rest() {
        assert_eq!(escape("Sarge <1>, \"x\""), "Sarge <1>, \"x\"");
        assert_eq!(
            escape(HOSTILE),
            "a,b \"q\" <x>\\n\\u{1b}[31mred\\r\\ttab\\n\\u{202e}rev"
        );
        assert!(!escape(HOSTILE).chars().any(char::is_control));
    }

    #[test]
    fn roster_plain_is_aligned_and_lists_bots() {
        let rows = vec![
            bot(3, "Sarge"),
            RosterRow {
                slot: 0,
                ip: Some("10.77.0.11".parse().unwrap()),
                kind: PlayerKind::Human,
                latency_ms: Some(100),
                obs: ObsStatus::Connected,
                name: "alice".into(),
            },
            RosterRow {
                slot: 1,
                ip: Some("10.77.0.12".parse().unwrap()),
                kind: PlayerKind::Human,
                latency_ms: Some(0),
                obs: ObsStatus::Failed,
                name: HOSTILE.into(),
            },
            RosterRow {
                slot: 2,
                ip: Some("10.77.0.13".parse().unwrap()),
                kind: PlayerKind::Human,
                latency_ms: None,
                obs: ObsStatus::NotConnected,
                name: "bob".into(),
            },
        ];
        let out = roster(&rows, Style::PLAIN);
        let expected = "\
Slot  IP          Type   Latency  OBS Status     Name
0     10.77.0.11  HUMAN  100ms    Connected      alice
1     10.77.0.12  HUMAN  0ms      Failed         a,b \"q\" <x>\\n\\u{1b}[31mred\\r\\ttab\\n\\u{202e}rev
2     10.77.0.13  HUMAN  -        Not Connected  bob
3     -           BOT    -        N/A            Sarge
";
        assert_eq!(out, expected);
        assert!(!out.contains('\u{1b}') && !out.contains('\r'));
    }

    #[test]
    fn style_follows_the_terminal_no_color_and_term() {
        use std::ffi::OsStr;
        let xterm = Some(OsStr::new("xterm-256color"));
        let coloured = Style {
            tty: true,
            color: true,
        };
        assert_eq!(Style::decide(true, None, xterm), coloured);
        assert_eq!(Style::decide(false, None, xterm), Style::PLAIN);
        let tty_plain = Style {
            tty: true,
            color: false,
        };
        assert_eq!(Style::decide(true, Some(OsStr::new("1")), xterm), tty_plain);
        // An empty NO_COLOR does not count (no-color.org).
        assert_eq!(Style::decide(true, Some(OsStr::new("")), xterm), coloured);
        assert_eq!(
            Style::decide(true, None, Some(OsStr::new("dumb"))),
            tty_plain
        );
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        let rows = vec![RosterRow {
            obs: ObsStatus::Failed,
            ..bot(1, "x")
        }];
        let coloured = roster(
            &rows,
            Style {
                tty: true,
                color: true,
            },
        );
        assert!(coloured.contains("\u{1b}["), "{coloured:?}");
        let tty_plain = roster(
            &rows,
            Style {
                tty: true,
                color: false,
            },
        );
        assert!(!tty_plain.contains('\u{1b}'), "{tty_plain:?}");
        assert!(tty_plain.contains('╭'));
        assert!(!roster(&rows, Style::PLAIN).contains('\u{1b}'));
    }

    #[test]
    fn results_table_plain() {
        let rows = vec![
            ResultRow {
                slot: Some(0),
                player: "pc1".into(),
                latency_ms: Some(100),
                started: true,
                stopped: true,
                failed: None,
                kicked: None,
            },
            ResultRow {
                slot: Some(1),
                player: "pc2,\"x\"\n".into(),
                latency_ms: Some(0),
                started: false,
                stopped: false,
                failed: Some("OBS answered 500".into()),
                kicked: Some("OBS unreachable".into()),
            },
        ];
        let expected = "\
Slot  Player     Latency  Recording Started  Recording Stopped  Recording Failed       Client Kicked
0     pc1        100ms    yes                yes                no                     no
1     pc2,\"x\"\\n  0ms      no                 no                 yes: OBS answered 500  yes: OBS unreachable
";
        assert_eq!(results(&rows, Style::PLAIN), expected);
    }
}
