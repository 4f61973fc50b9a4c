//! The questionnaire's pages: one per player at `/q/{token}`, served without the live view's
//! token (the player's own token is the key). Plain HTML forms, no script; everything from
//! the scenario or a player is HTML-escaped. The page reloads itself while there is nothing to
//! answer, so a player can leave it open for the whole study.

use std::fmt::Write as _;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION};
use axum::response::{IntoResponse, Response};

use super::http::AppState;
use crate::run::questionnaire::{Desk, PageState, Refused};
use crate::scenario::{ItemKind, QuestionItem};

/// The largest form accepted: 20 items of 2000 characters, each up to 12 bytes URL-encoded.
pub const MAX_BODY: usize = 512 << 10;
/// Tokens are 32 hex digits; anything much longer is not looked up.
const MAX_TOKEN: usize = 64;
/// How often a page with nothing to answer reloads itself, seconds.
const RELOAD_S: u32 = 5;

/// `&`, `<`, `>`, `"` and `'` as entities: safe in text and in quoted attributes.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, title: &str, body: &str, reload: bool) -> Response {
    let refresh = if reload {
        format!("<meta http-equiv=\"refresh\" content=\"{RELOAD_S}\">")
    } else {
        String::new()
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{refresh}\
         <title>{t}</title><style>\
         body{{font:16px system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em}}\
         fieldset{{border:1px solid #ccc;margin:1em 0;padding:.8em}}legend{{font-weight:600}}\
         .scale label{{display:inline-block;margin:0 .6em .3em 0}}.ends{{color:#555;font-size:.9em}}\
         textarea{{width:100%;min-height:4em}}button{{font-size:1.1em;padding:.4em 1.4em}}\
         .err{{color:#a00}}</style></head><body><h1>{t}</h1>{body}</body></html>",
        t = html_escape(title),
    );
    (
        status,
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-store"),
            (
                CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                 base-uri 'none'; frame-ancestors 'none'",
            ),
        ],
        html,
    )
        .into_response()
}

fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Link not valid",
        "<p>This questionnaire link is not valid. Ask the experimenter for yours.</p>",
        false,
    )
}

fn desk_for(st: &AppState, token: &str) -> Option<Desk> {
    if token.len() > MAX_TOKEN {
        return None;
    }
    st.questionnaire.clone()
}

/// `GET /q/{token}`: the form when the player's questionnaire is open, else where it stands.
pub async fn show(State(st): State<AppState>, Path(token): Path<String>) -> Response {
    let Some(desk) = desk_for(&st, &token) else {
        return not_found();
    };
    let Some((label, state)) = desk.page(&token) else {
        return not_found();
    };
    let who = html_escape(&label);
    match state {
        PageState::Open { match_no } => page(
            StatusCode::OK,
            &format!("After match {match_no}"),
            &form(&desk, match_no, &who, None),
            false,
        ),
        PageState::Answered { match_no } => page(
            StatusCode::OK,
            "Thank you",
            &format!(
                "<p id=\"done\">Thank you, {who}: your answers for match {match_no} are in.</p>\
                 <p>Keep this page open; the next questionnaire shows here after the next match.</p>"
            ),
            true,
        ),
        PageState::Idle => page(
            StatusCode::OK,
            "Nothing to answer now",
            &format!(
                "<p id=\"idle\">Hello {who}: there is nothing to answer right now.</p>\
                 <p>Keep this page open; the questionnaire shows here after each match.</p>"
            ),
            true,
        ),
    }
}

/// `POST /q/{token}`: the answers; accepted once per player and match.
pub async fn submit(
    State(st): State<AppState>,
    Path(token): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let Some(desk) = desk_for(&st, &token) else {
        return not_found();
    };
    let match_no = fields
        .iter()
        .find(|(k, _)| k == "match")
        .and_then(|(_, v)| v.parse::<u32>().ok());
    let Some(match_no) = match_no else {
        if desk.page(&token).is_none() {
            return not_found();
        }
        return page(
            StatusCode::BAD_REQUEST,
            "Not understood",
            "<p>The form did not say which match it answers.</p>",
            false,
        );
    };
    match desk.submit(&token, match_no, &fields) {
        Ok(()) => (
            StatusCode::SEE_OTHER,
            [(LOCATION, format!("/q/{token}"))],
            "",
        )
            .into_response(),
        Err(Refused::UnknownToken) => not_found(),
        Err(Refused::AlreadyAnswered { match_no }) => page(
            StatusCode::CONFLICT,
            "Already answered",
            &format!(
                "<p id=\"already\">Your answers for match {match_no} are already in; a second answer \
                 is not taken.</p>"
            ),
            false,
        ),
        Err(Refused::NotOpen) => page(
            StatusCode::CONFLICT,
            "Questionnaire closed",
            &format!(
                "<p id=\"closed\">The questionnaire for match {match_no} is not open (its time is \
                 over, or it is not yours). Your answers were not recorded.</p>"
            ),
            false,
        ),
        Err(Refused::Invalid(why)) => {
            let who = desk
                .page(&token)
                .map(|(l, _)| html_escape(&l))
                .unwrap_or_default();
            page(
                StatusCode::BAD_REQUEST,
                &format!("After match {match_no}"),
                &form(&desk, match_no, &who, Some(&why)),
                false,
            )
        }
    }
}

/// The form for `match_no` (`who` already escaped), with an error above it when a first try
/// did not fit.
fn form(desk: &Desk, match_no: u32, who: &str, error: Option<&str>) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<p>{who}, please answer about the match you just played.</p>"
    );
    if let Some(e) = error {
        let _ = write!(s, "<p class=\"err\" id=\"error\">{}</p>", html_escape(e));
    }
    let _ = write!(
        s,
        "<form method=\"post\" id=\"q\"><input type=\"hidden\" name=\"match\" value=\"{match_no}\">"
    );
    let req = if desk.required() { " required" } else { "" };
    for item in desk.items() {
        item_html(&mut s, item, req);
    }
    s.push_str("<button type=\"submit\" id=\"send\">Send</button></form>");
    s
}

fn item_html(s: &mut String, item: &QuestionItem, req: &str) {
    // Ids match the scenario's pattern ([a-z0-9_]), so they are safe as names and ids.
    let id = html_escape(&item.id);
    let _ = write!(
        s,
        "<fieldset id=\"item-{id}\"><legend>{}</legend>",
        html_escape(&item.prompt)
    );
    match item.kind {
        ItemKind::Likert => {
            let (min, max) = item.likert_range();
            s.push_str("<div class=\"scale\">");
            for v in min..=max {
                let _ = write!(
                    s,
                    "<label><input type=\"radio\" name=\"{id}\" value=\"{v}\"{req}> {v}</label>"
                );
            }
            s.push_str("</div>");
            if item.min_label.is_some() || item.max_label.is_some() {
                let _ = write!(
                    s,
                    "<div class=\"ends\">{min} = {} · {max} = {}</div>",
                    html_escape(item.min_label.as_deref().unwrap_or("")),
                    html_escape(item.max_label.as_deref().unwrap_or(""))
                );
            }
        }
        ItemKind::Choice => {
            for (j, o) in item.options.iter().enumerate() {
                let o = html_escape(o);
                let _ = write!(
                    s,
                    "<label><input type=\"radio\" name=\"{id}\" value=\"{o}\" id=\"{id}-{j}\"{req}> \
                     {o}</label><br>"
                );
            }
        }
        ItemKind::Text => {
            let _ = write!(
                s,
                "<textarea name=\"{id}\" maxlength=\"{}\"{req}></textarea>",
                item.text_limit()
            );
        }
    }
    s.push_str("</fieldset>");
}

/// `GET /api/questionnaire` (behind the live token): every player's link and status, for the
/// dashboard. 404 when the study has no questionnaire.
pub fn overview(desk: Option<&Desk>) -> Response {
    let Some(desk) = desk else {
        return (StatusCode::NOT_FOUND, "this study has no questionnaire\n").into_response();
    };
    let (open, players) = desk.overview();
    (
        [(CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({ "match": open, "players": players })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            html_escape(r#"<img src=x onerror="a('b')">&"#),
            "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;"
        );
    }
}
