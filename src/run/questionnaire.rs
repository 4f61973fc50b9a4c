//! The questionnaire desk: what the executor and the live view's answer pages share.
//!
//! Each player gets one random token for the run (128 bits from the OS's CSPRNG) and with it
//! one link, which shows the questionnaire of the match just played while it is open. The
//! executor opens a round after a match, takes the answers the pages hand in (each checked
//! against the items) and emits them as events; the desk itself writes nothing anywhere. A
//! token is never put in an event, the manifest or the log: only the terminal and the
//! dashboard (behind the live token) show the links.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::manifest::Answer;
use crate::scenario::{ItemKind, QuestionItem, Questionnaire};

/// Bytes of randomness in a token (hex-encoded in the link).
const TOKEN_BYTES: usize = 16;

/// A player's link and where their questionnaire stands, for the dashboard.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct LinkStatus {
    pub player: u32,
    pub label: String,
    pub url: String,
    /// `waiting`, `answered`, or `idle` when no questionnaire is open for them.
    pub status: &'static str,
}

/// What a player's page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageState {
    /// The questionnaire of `match_no` is open and this player has not answered.
    Open { match_no: u32 },
    /// They answered `match_no` (its round may still be open for others).
    Answered { match_no: u32 },
    /// Nothing to answer now.
    Idle,
}

/// Why an answer was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No player has this token.
    UnknownToken,
    /// This player already answered this match.
    AlreadyAnswered { match_no: u32 },
    /// The questionnaire of that match is not open (closed, not yet, or not for them).
    NotOpen,
    /// The answers do not fit the items.
    Invalid(String),
}

struct Seat {
    player: u32,
    label: String,
    token: String,
}

struct Round {
    match_no: u32,
    /// Players asked, and whether each has answered.
    asked: BTreeMap<u32, bool>,
}

#[derive(Default)]
struct Inner {
    seats: Vec<Seat>,
    round: Option<Round>,
    /// Answers handed in, not yet taken by the executor.
    pending: VecDeque<(u32, u32, BTreeMap<String, Answer>)>,
    /// Matches each player has answered (a round reopened for a replay has its own number).
    answered: BTreeSet<(u32, u32)>,
}

/// Shared between the executor and the live view (cheap to clone).
#[derive(Clone)]
pub struct Desk {
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
    base_url: Arc<str>,
    items: Arc<Vec<QuestionItem>>,
    required: bool,
}

impl std::fmt::Debug for Desk {
    // Never the tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desk")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Desk {
    /// A desk for the scenario's questionnaire, its links under `base_url` (no trailing `/`).
    pub fn new(q: &Questionnaire, base_url: &str) -> Desk {
        Desk {
            inner: Arc::default(),
            notify: Arc::new(Notify::new()),
            base_url: base_url.trim_end_matches('/').into(),
            items: Arc::new(q.items.clone()),
            required: q.required,
        }
    }

    pub fn items(&self) -> &[QuestionItem] {
        &self.items
    }

    pub fn required(&self) -> bool {
        self.required
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn url(&self, token: &str) -> String {
        format!("{}/q/{token}", self.base_url)
    }

    /// Open the questionnaire of `match_no` for these players (index, label); returns each
    /// one's link. A player keeps one link for the whole run. A round still open is replaced.
    pub fn open(
        &self,
        match_no: u32,
        players: &[(u32, String)],
    ) -> Result<Vec<(u32, String)>, String> {
        let mut g = self.lock();
        let mut links = Vec::with_capacity(players.len());
        for (player, label) in players {
            let token = match g.seats.iter().find(|s| s.player == *player) {
                Some(s) => s.token.clone(),
                None => {
                    let token = new_token()?;
                    g.seats.push(Seat {
                        player: *player,
                        label: label.clone(),
                        token: token.clone(),
                    });
                    token
                }
            };
            links.push((*player, self.url(&token)));
        }
        g.round = Some(Round {
            match_no,
            asked: players.iter().map(|(p, _)| (*p, false)).collect(),
        });
        g.pending.clear();
        Ok(links)
    }

    /// Close the open round: pages show nothing to answer, late answers are refused.
    pub fn close(&self) {
        self.lock().round = None;
    }

    /// Answers handed in since the last call: (match, player, answers).
    pub fn take(&self) -> Vec<(u32, u32, BTreeMap<String, Answer>)> {
        self.lock().pending.drain(..).collect()
    }

    /// Resolves when an answer may be waiting (a permit is kept if nobody waits yet).
    pub async fn answered(&self) {
        self.notify.notified().await
    }

    /// The player holding `token`, compared in constant time against every token.
    fn holder(g: &Inner, token: &str) -> Option<u32> {
        let mut found = None;
        for s in &g.seats {
            if crate::live::auth::same_token(&s.token, token) {
                found = Some(s.player);
            }
        }
        found
    }

    /// What the page of `token` shows, with the player's label; `None`: no such token.
    pub fn page(&self, token: &str) -> Option<(String, PageState)> {
        let g = self.lock();
        let player = Self::holder(&g, token)?;
        let label = g
            .seats
            .iter()
            .find(|s| s.player == player)
            .map(|s| s.label.clone())
            .unwrap_or_default();
        let state = match &g.round {
            Some(r) => match r.asked.get(&player) {
                Some(false) => PageState::Open {
                    match_no: r.match_no,
                },
                Some(true) => PageState::Answered {
                    match_no: r.match_no,
                },
                None => PageState::Idle,
            },
            None => PageState::Idle,
        };
        Some((label, state))
    }

    /// Take a player's answers for `match_no` from the form's fields (name, value); checked
    /// against the items, once per player and match.
    pub fn submit(
        &self,
        token: &str,
        match_no: u32,
        fields: &[(String, String)],
    ) -> Result<(), Refused> {
        let mut g = self.lock();
        let player = Self::holder(&g, token).ok_or(Refused::UnknownToken)?;
        if g.answered.contains(&(match_no, player)) {
            return Err(Refused::AlreadyAnswered { match_no });
        }
        let open = g
            .round
            .as_ref()
            .is_some_and(|r| r.match_no == match_no && r.asked.contains_key(&player));
        if !open {
            return Err(Refused::NotOpen);
        }
        let answers = check(&self.items, self.required, fields).map_err(Refused::Invalid)?;
        if let Some(r) = g.round.as_mut() {
            r.asked.insert(player, true);
        }
        g.answered.insert((match_no, player));
        g.pending.push_back((match_no, player, answers));
        drop(g);
        self.notify.notify_one();
        Ok(())
    }

    /// Every player's link and status (for the dashboard, behind the live token).
    pub fn overview(&self) -> (Option<u32>, Vec<LinkStatus>) {
        let g = self.lock();
        let rows = g
            .seats
            .iter()
            .map(|s| LinkStatus {
                player: s.player,
                label: s.label.clone(),
                url: self.url(&s.token),
                status: match g.round.as_ref().and_then(|r| r.asked.get(&s.player)) {
                    Some(true) => "answered",
                    Some(false) => "waiting",
                    None => "idle",
                },
            })
            .collect();
        (g.round.as_ref().map(|r| r.match_no), rows)
    }
}

/// A fresh token from the OS's CSPRNG (no fallback: a guessable link is worse than none).
fn new_token() -> Result<String, String> {
    let mut b = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut b).map_err(|e| format!("no random source for the links: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The answers in `fields`, checked against `items`. Blank fields are unanswered items (an
/// error when every item is required); unknown fields are ignored; the first of repeated
/// fields counts. Text is kept exactly as given.
pub fn check(
    items: &[QuestionItem],
    required: bool,
    fields: &[(String, String)],
) -> Result<BTreeMap<String, Answer>, String> {
    let mut out = BTreeMap::new();
    for item in items {
        let value = fields
            .iter()
            .find(|(k, _)| *k == item.id)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.trim().is_empty());
        let Some(v) = value else {
            if required {
                return Err(format!("“{}” needs an answer", item.prompt));
            }
            continue;
        };
        let answer = match item.kind {
            ItemKind::Likert => {
                let (min, max) = item.likert_range();
                match v.trim().parse::<i64>() {
                    Ok(n) if (min..=max).contains(&n) => Answer::Scale(n),
                    _ => {
                        return Err(format!(
                            "“{}” takes a whole number from {min} to {max}",
                            item.prompt
                        ));
                    }
                }
            }
            ItemKind::Choice => match item.options.iter().find(|o| o.as_str() == v) {
                Some(o) => Answer::Text(o.clone()),
                None => {
                    return Err(format!("“{}” takes one of its options", item.prompt));
                }
            },
            ItemKind::Text => {
                let limit = item.text_limit() as usize;
                if v.chars().count() > limit {
                    return Err(format!(
                        "the answer to “{}” is longer than {limit} characters",
                        item.prompt
                    ));
                }
                Answer::Text(v.to_string())
            }
        };
        out.insert(item.id.clone(), answer);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(required: bool) -> Questionnaire {
        serde_json::from_value(serde_json::json!({
            "required": required,
            "items": [
                { "id": "quality", "prompt": "How did it feel?", "kind": "likert", "min": 1, "max": 5 },
                { "id": "lag", "prompt": "Lag?", "kind": "choice", "options": ["yes", "no"] },
                { "id": "note", "prompt": "Anything else?", "kind": "text", "max_length": 10 }
            ]
        }))
        .unwrap()
    }

    fn f(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn answers_are_checked_against_the_items() {
        let items = q(false).items;
        let a = check(
            &items,
            false,
            &f(&[("quality", "4"), ("lag", "no"), ("note", "<b>x</b>")]),
        )
        .unwrap();
        assert_eq!(a["quality"], Answer::Scale(4));
        assert_eq!(a["lag"], Answer::Text("no".into()));
        assert_eq!(a["note"], Answer::Text("<b>x</b>".into()), "raw");
        assert!(check(&items, false, &f(&[("quality", "6")])).is_err());
        assert!(check(&items, false, &f(&[("quality", "2.5")])).is_err());
        assert!(check(&items, false, &f(&[("lag", "maybe")])).is_err());
        assert!(check(&items, false, &f(&[("note", "12345678901")])).is_err());
        // Ten characters, not bytes.
        assert!(check(&items, false, &f(&[("note", "éééééééééé")])).is_ok());
        let blank = check(&items, false, &f(&[("quality", " "), ("x", "y")])).unwrap();
        assert!(blank.is_empty(), "blank is unanswered, unknown is ignored");
        assert!(check(&items, true, &f(&[("quality", "3"), ("lag", "yes")])).is_err());
    }

    #[test]
    fn one_answer_per_player_and_match_with_their_own_token_only() {
        let desk = Desk::new(&q(false), "http://10.0.0.1:8080/");
        let links = desk
            .open(1, &[(1, "pc1".into()), (2, "pc2".into())])
            .unwrap();
        assert_eq!(links.len(), 2);
        let tok = |i: usize| links[i].1.rsplit('/').next().unwrap().to_string();
        assert!(links[0].1.starts_with("http://10.0.0.1:8080/q/"));
        assert_eq!(tok(0).len(), 32);
        assert_ne!(tok(0), tok(1));
        assert_eq!(desk.page("nope"), None);
        assert_eq!(
            desk.page(&tok(0)),
            Some(("pc1".into(), PageState::Open { match_no: 1 }))
        );
        assert_eq!(
            desk.submit("nope", 1, &f(&[("quality", "3")])),
            Err(Refused::UnknownToken)
        );
        assert_eq!(
            desk.submit(&tok(0), 2, &f(&[("quality", "3")])),
            Err(Refused::NotOpen),
            "not the open match"
        );
        desk.submit(&tok(0), 1, &f(&[("quality", "3")])).unwrap();
        assert_eq!(
            desk.submit(&tok(0), 1, &f(&[("quality", "5")])),
            Err(Refused::AlreadyAnswered { match_no: 1 })
        );
        assert_eq!(
            desk.page(&tok(0)).unwrap().1,
            PageState::Answered { match_no: 1 }
        );
        let taken = desk.take();
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].0, taken[0].1), (1, 1));
        assert!(desk.take().is_empty());
        let (open, rows) = desk.overview();
        assert_eq!(open, Some(1));
        assert_eq!(
            rows.iter().map(|r| r.status).collect::<Vec<_>>(),
            ["answered", "waiting"]
        );
        desk.close();
        assert_eq!(
            desk.submit(&tok(1), 1, &f(&[("quality", "3")])),
            Err(Refused::NotOpen),
            "late"
        );
        assert_eq!(desk.page(&tok(1)).unwrap().1, PageState::Idle);
        // The next match: the same links.
        let again = desk.open(2, &[(1, "pc1".into())]).unwrap();
        assert_eq!(again[0].1, links[0].1);
        assert_eq!(desk.page(&tok(1)).unwrap().1, PageState::Idle, "not asked");
    }
}
