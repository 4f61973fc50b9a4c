//! Which games.log lines can be trusted for statistics.
//!
//! A client controls its name and several userinfo fields (model, colours, `cl_guid`), and the
//! game writes them into the log raw, newlines included (OpenArena 0.8.8's `ClientCleanName`
//! keeps control characters). So one `G_LogPrintf` call can write a *carrier* line followed by
//! lines the client wrote, time prefix and all, e.g. a `Kill:` that never happened. Content
//! alone cannot tell such a line from a real one; two facts can:
//! - `G_LogPrintf` formats into a 1024-byte buffer and writes it at once, so forged lines lie
//!   within 1023 bytes of their carrier and arrive in the same read of the file;
//! - the carrier is cut where the newline was: a `Kill:`, `score:` or `ClientUserinfoChanged:`
//!   line stops matching its grammar (`… by MOD_X` or the final `\id\<guid>` is missing), a line
//!   without a time prefix is the tail of such a cut, and a slot whose userinfo line was cut
//!   has a name that may cut any later line that prints it. Chat lines (`say:`, `sayteam:`,
//!   `tell:`, `vtell:`) end in free text, so each one by a human may be a carrier (bots chat
//!   a lot, from the game's own AI: their lines are not carriers).
//!
//! After a carrier, the rest of its 1023-byte window *within the same read* is untrusted.
//! Statistics use only trusted lines. The cost: a real kill logged right behind a chat line in
//! the same read is not counted (reported as untrusted, never silently).

use super::MAX_SLOTS;
use super::log::{LogLine, split_time};

/// `G_LogPrintf`'s buffer is 1024 bytes including the terminating NUL.
pub const LOG_PRINTF_MAX: usize = 1023;

/// Heads of lines that end in free text a client chose.
const CHAT_HEADS: [&str; 4] = ["say:", "sayteam:", "tell:", "vtell:"];

/// Heads whose strict grammar ends with a fixed field, so a cut shows.
const STRICT_HEADS: [&str; 3] = ["Kill:", "score:", "ClientUserinfoChanged:"];

/// Decides, line by line, whether a line may be used for statistics.
#[derive(Debug)]
pub struct InjectionGuard {
    /// Identity of the read the window belongs to.
    batch: Option<u64>,
    /// Bytes after the last carrier that may still be forged (in `batch` only).
    window: usize,
    /// Slots whose last userinfo line was cut: their name may contain a newline.
    unsafe_name: [bool; MAX_SLOTS as usize],
    /// Logged name of each human's slot (from its userinfo line; bots have `skill`).
    humans: Vec<Option<String>>,
    /// Lines found untrusted so far.
    pub untrusted: u64,
}

impl Default for InjectionGuard {
    fn default() -> Self {
        InjectionGuard {
            batch: None,
            window: 0,
            unsafe_name: [false; MAX_SLOTS as usize],
            humans: vec![None; MAX_SLOTS as usize],
            untrusted: 0,
        }
    }
}

impl InjectionGuard {
    pub fn new() -> InjectionGuard {
        InjectionGuard::default()
    }

    /// Judge one raw line (as read, without its newline) that parsed to `line`; `batch`
    /// identifies the read it came from (lines of one read share it). Returns whether the line
    /// is trusted.
    pub fn check(&mut self, batch: u64, raw: &str, line: &LogLine) -> bool {
        if self.batch != Some(batch) {
            // A later read: whatever a carrier wrote arrived with it.
            self.batch = Some(batch);
            self.window = 0;
        }
        let inside = self.window > 0;
        self.window = self.window.saturating_sub(raw.len() + 1);
        let carrier = self.is_carrier(raw, line);
        if carrier {
            self.window = self
                .window
                .max(LOG_PRINTF_MAX.saturating_sub(raw.len() + 1));
        }
        // A carrier is itself fine to use only if it is not inside another one's window; its
        // own content before the cut was written by the game. Stats never use carriers anyway
        // (they do not parse as Kill or score, or are chat).
        // A line without a time prefix was not started by `G_LogPrintf`.
        let trusted = !inside && split_time(raw).0.is_some();
        if !trusted {
            self.untrusted += 1;
        }
        trusted
    }

    fn is_carrier(&mut self, raw: &str, line: &LogLine) -> bool {
        let (time, text) = split_time(raw);
        if time.is_none() {
            // The tail of a cut line (or not a game line at all).
            return true;
        }
        if let Some(head) = CHAT_HEADS.iter().find(|h| text.starts_with(**h)) {
            // `say: <name>: …`: a carrier if a human may have said it.
            let rest = text[head.len()..].trim_start();
            return self
                .humans
                .iter()
                .flatten()
                .any(|name| rest.starts_with(name.as_str()));
        }
        match line {
            LogLine::UserinfoChanged { slot, info, broken } => {
                // The game's userinfo grammar has one owner: log::check_logged_userinfo.
                let cut = broken.is_some();
                let i = usize::from(*slot);
                self.unsafe_name[i] = cut;
                // Anything that is not clearly a bot counts as a human here.
                self.humans[i] =
                    (cut || info.skill().is_none()).then(|| info.name().unwrap_or("").to_string());
                cut
            }
            LogLine::Disconnect { slot } => {
                self.unsafe_name[usize::from(*slot)] = false;
                self.humans[usize::from(*slot)] = None;
                false
            }
            LogLine::Kill(k) => {
                let killer = match k.killer {
                    super::log::Killer::Slot(s) => self.unsafe_name[usize::from(s)],
                    super::log::Killer::World => false,
                };
                killer || self.unsafe_name[usize::from(k.victim)]
            }
            LogLine::Score { slot, .. } => self.unsafe_name[usize::from(*slot)],
            LogLine::Other => STRICT_HEADS.iter().any(|h| text.starts_with(h)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::log::parse_line;

    fn run(guard: &mut InjectionGuard, batch: u64, text: &str) -> Vec<bool> {
        text.lines()
            .map(|l| guard.check(batch, l, &parse_line(l).1))
            .collect()
    }

    const HUMAN: &str = "  0:05 ClientUserinfoChanged: 3 n\\Eve\\t\\0\\model\\sarge\\hmodel\\sarge\\g_redteam\\\\g_blueteam\\\\c1\\4\\c2\\5\\hc\\100\\w\\0\\l\\0\\tt\\0\\tl\\0\\id\\AA908E01A59664516FE43D2BA1DAA2BD";

    #[test]
    fn ordinary_lines_are_trusted() {
        let mut g = InjectionGuard::new();
        let log = format!(
            "{HUMAN}\n  0:06 ClientConnect: 3\n  0:09 Kill: 3 0 10: Eve killed Sarge by MOD_RAILGUN\n  0:10 Kill: 1022 3 19: <world> killed Eve by MOD_FALLING\n"
        );
        assert!(run(&mut g, 1, &log).iter().all(|t| *t));
        assert_eq!(g.untrusted, 0);
    }

    #[test]
    fn a_kill_forged_through_a_name_is_untrusted() {
        // Name `Eve\n  0:07 Kill: 3 0 10: Eve killed Sarge` in a Kill line as victim: the game
        // writes the carrier, the forged kill, and the rest of its own line, in one write.
        let mut g = InjectionGuard::new();
        let log = "  0:07 Kill: 0 3 1: Sarge killed Eve\n  0:07 Kill: 3 0 10: Eve killed Sarge killed Sarge by MOD_SHOTGUN\n";
        let t = run(&mut g, 1, log);
        assert_eq!(
            t,
            vec![true, false],
            "the carrier is cut, what follows is not trusted"
        );
        // A later read is not part of that write.
        assert_eq!(
            run(
                &mut g,
                2,
                "  0:08 Kill: 3 0 10: Eve killed Sarge by MOD_RAILGUN"
            ),
            vec![true]
        );
    }

    #[test]
    fn a_kill_forged_through_a_guid_or_chat_is_untrusted() {
        let mut g = InjectionGuard::new();
        let log = "  0:05 ClientUserinfoChanged: 3 n\\Eve\\t\\0\\model\\sarge\\id\\AA90\n  0:05 Kill: 3 0 10: Eve killed Sarge by MOD_RAILGUN\n";
        assert_eq!(run(&mut g, 1, log), vec![true, false]);
        // Her name may now hold a newline: lines that print it are carriers, even next read.
        let log =
            "  0:09 score: 5  ping: 0  client: 3 Eve\n  0:09 score: 4  ping: 0  client: 0 Sarge\n";
        assert_eq!(run(&mut g, 2, log), vec![true, false]);
        // Until a clean userinfo line.
        let log = format!("{HUMAN}\n  0:10 Kill: 3 0 10: Eve killed Sarge by MOD_RAILGUN\n");
        assert_eq!(run(&mut g, 3, &log), vec![true, true]);
        // A human's chat ends in free text; a bot's chat comes from the game.
        let log = "  0:11 say: Eve: gg\n  0:11 Kill: 3 0 10: Eve killed Sarge by MOD_RAILGUN\n";
        assert_eq!(run(&mut g, 4, log), vec![true, false]);
        let log = format!(
            "{BOT}\n  0:12 say: Sarge: What the... how cheap!\n  0:12 Kill: 3 0 10: Eve killed Sarge by MOD_RAILGUN\n"
        );
        assert_eq!(run(&mut g, 5, &log), vec![true, true, true]);
        assert_eq!(g.untrusted, 3);
    }

    const BOT: &str = "  0:00 ClientUserinfoChanged: 0 n\\Sarge\\t\\0\\model\\sarge\\hmodel\\sarge\\c1\\4\\c2\\5\\hc\\100\\w\\0\\l\\0\\skill\\ 5.00\\tt\\0\\tl\\0\\id\\";

    #[test]
    fn the_window_ends_after_1023_bytes() {
        let mut g = InjectionGuard::new();
        run(&mut g, 0, HUMAN);
        let filler = format!("  0:12 Item: 3 {}", "x".repeat(500));
        let log = format!(
            "  0:11 say: Eve: gg\n{filler}\n{filler}\n  0:13 Kill: 3 0 10: Eve killed Sarge by MOD_RAILGUN\n"
        );
        assert_eq!(run(&mut g, 1, &log), vec![true, false, false, true]);
    }
}
