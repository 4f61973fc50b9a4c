//! Text from peers (player names, game-log fields, OBS versions, paths and error texts) made
//! safe for a terminal or a log line.
//!
//! One function, [`escape`], used by the log formatter for every field and message, by the
//! `check` table and by the run summary. The manifest keeps raw values (JSON escapes them).
//! What it does: no control character reaches the output, so no escape sequence (colours,
//! cursor moves, title changes, clearing the screen) and no forged line; `\n`, `\r` and `\t`
//! are shown as such, other control characters as `\u{..}`; the Unicode direction overrides
//! that reorder what a terminal shows ("Trojan Source") are shown the same way.

use std::borrow::Cow;
use std::fmt;

/// Whether `c` must not reach a terminal as it is.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every control character (and direction override) shown escaped; borrowed when
/// there is nothing to escape.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Displays a peer's text escaped: `info!(name = %Esc(&p.name), …)`.
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_untouched_and_borrowed() {
        for s in [
            "",
            "Sarge",
            "<img src=x onerror=alert(1)>",
            "C:\\rec\\a.mkv",
            "café ^1Big",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(b) if b == s));
        }
    }

    #[test]
    fn nothing_reaches_a_terminal_that_could_act_on_it() {
        let nasty = "a\nb\rc\td\u{1b}[2J\u{1b}]0;title\u{7}\u{0}\u{7f}\u{9b}31m\u{202e}gpj.exe";
        let e = escape(nasty);
        assert!(!e.chars().any(unsafe_char), "{e}");
        assert_eq!(
            e,
            "a\\nb\\rc\\td\\u{1b}[2J\\u{1b}]0;title\\u{7}\\u{0}\\u{7f}\\u{9b}31m\\u{202e}gpj.exe"
        );
        assert_eq!(Esc("x\ny").to_string(), "x\\ny");
    }
}
