//! The questionnaire in a real headless Chromium (Debian's `chromium` over WebDriver): the
//! real live server serves each player's page from the desk the executor opens after a
//! match. Two players fill their own forms (clicks and typing, one answer a script), the
//! dashboard shows both links going from waiting to answered, and the answers reach the desk
//! exactly as typed. Then the refusals, over plain HTTP: a wrong token (404), a second answer
//! (409), an answer after the questionnaire closed (409), an answer out of range (400) and an
//! oversized body (413). The wait with its timeout is the executor's, run for real in
//! tests/e2e_lab.rs.

mod support;

use oa_run::manifest::Answer;
use oa_run::run::events::RunEvent;
use oa_run::run::questionnaire::Desk;
use oa_run::run::signals::Shutdown;
use serde_json::json;
use support::live::{http, http_body, hub, serve_with, study_in_progress};
use support::webdriver::Driver;

/// Would set `window.pwned` if an answer or a name were ever parsed as HTML.
const HOSTILE: &str =
    "<img src=x onerror=\"window.pwned=1\"></textarea><script>window.pwned=2</script>";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn questionnaire() -> oa_run::scenario::Questionnaire {
    serde_json::from_value(json!({
        "timeout": "90s",
        "items": [
            { "id": "quality", "prompt": "How did the game feel?", "kind": "likert",
              "min": 1, "max": 5, "min_label": "unplayable", "max_label": "perfect" },
            { "id": "lag", "prompt": "Did you notice delay?", "kind": "choice",
              "options": ["no", "a little", "a lot"] },
            { "id": "note", "prompt": "Anything else?", "kind": "text", "max_length": 200 }
        ]
    }))
    .unwrap()
}

async fn element(d: &Driver, css: &str) -> String {
    let v = d
        .session(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )
        .await;
    v[ELEMENT]
        .as_str()
        .unwrap_or_else(|| panic!("no element {css}: {v}"))
        .to_string()
}

async fn click(d: &Driver, css: &str) {
    let id = element(d, css).await;
    d.session("POST", &format!("/element/{id}/click"), Some(json!({})))
        .await;
}

async fn type_into(d: &Driver, css: &str, text: &str) {
    let id = element(d, css).await;
    d.session(
        "POST",
        &format!("/element/{id}/value"),
        Some(json!({ "text": text })),
    )
    .await;
}

async fn goto(d: &Driver, url: &str) {
    d.session("POST", "/url", Some(json!({ "url": url }))).await;
}

fn token_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

/// The dashboard's questionnaire rows as text, in `rows`.
const ROWS: &str = "const rows = [...document.querySelectorAll('#questionnaire tr')].map(tr => \
                    [...tr.cells].map(td => td.textContent));";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_players_answer_in_a_real_browser_and_every_refusal_is_clear() {
    for p in ["chromium", "chromedriver"] {
        if let Some(why) = support::missing_program(p) {
            return support::skip(&why);
        }
    }
    let mut h = hub();
    let (live, addr, desk) = serve_with(&mut h, Some("qt0ken"), Shutdown::manual(), |base| {
        Desk::new(&questionnaire(), base)
    })
    .await;
    let desk = desk.unwrap();
    for e in study_in_progress("pc2") {
        h.emit(e);
    }
    // What the executor does after match 1: open the round for the players present.
    let links = desk
        .open(1, &[(1, "pc1".into()), (2, HOSTILE.into())])
        .unwrap();
    h.emit(RunEvent::QuestionnaireOpened {
        match_no: 1,
        players: vec![1, 2],
        timeout_s: 90.0,
    });
    h.tick();
    for (_, url) in &links {
        assert!(url.starts_with(&format!("http://{addr}/q/")), "{url}");
        assert_eq!(token_of(url).len(), 32, "128 bits, hex");
    }
    assert_ne!(links[0].1, links[1].1);

    let d = Driver::start().await;
    // The experimenter's dashboard: both links, both waiting.
    goto(&d, &format!("http://{addr}/#token=qt0ken")).await;
    let rows = d
        .wait_for(
            "both links on the dashboard",
            &format!("{ROWS} return rows.length == 2 && rows;"),
        )
        .await;
    assert_eq!(rows[0][2], links[0].1.as_str(), "{rows}");
    assert_eq!(rows[1][1], HOSTILE, "the label is text: {rows}");
    assert_eq!(rows[0][3], "waiting");
    assert_eq!(rows[1][3], "waiting");

    // Player 1 on their own page: a likert, a choice and free text.
    goto(&d, &links[0].1).await;
    let title = d.js("return document.title").await;
    assert_eq!(title, "After match 1");
    let form = d
        .js(
            "return {legends: [...document.querySelectorAll('legend')].map(l => l.textContent), \
             ends: document.querySelector('.ends').textContent, \
             radios: document.querySelectorAll('input[name=quality]').length, \
             hello: document.querySelector('p').textContent}",
        )
        .await;
    assert_eq!(
        form["legends"],
        json!([
            "How did the game feel?",
            "Did you notice delay?",
            "Anything else?"
        ])
    );
    assert_eq!(form["ends"], "1 = unplayable · 5 = perfect");
    assert_eq!(form["radios"], 5);
    assert!(
        form["hello"].as_str().unwrap().starts_with("pc1,"),
        "{form}"
    );
    click(&d, "input[name=quality][value='4']").await;
    click(&d, "input[name=lag][value='a little']").await;
    type_into(&d, "textarea[name=note]", "fine, «smooth» ✓").await;
    click(&d, "#send").await;
    d.wait_for(
        "player 1's thanks",
        "return document.getElementById('done') != null",
    )
    .await;

    // Player 2 types hostile text; it is kept as typed and never runs.
    goto(&d, &links[1].1).await;
    let hello = d.js("return document.querySelector('p').textContent").await;
    assert!(
        hello.as_str().unwrap().starts_with(HOSTILE),
        "the name is shown as text: {hello}"
    );
    click(&d, "input[name=quality][value='1']").await;
    type_into(&d, "textarea[name=note]", HOSTILE).await;
    click(&d, "#send").await;
    d.wait_for(
        "player 2's thanks",
        "return document.getElementById('done') != null",
    )
    .await;
    let after = d
        .js("return {pwned: window.pwned === undefined ? null : window.pwned, imgs: document.querySelectorAll('img').length}")
        .await;
    assert_eq!(after, json!({"pwned": null, "imgs": 0}));

    // The answers reached the desk for the executor, checked and raw.
    let taken = desk.take();
    assert_eq!(taken.len(), 2, "{taken:?}");
    let (m1, p1, a1) = &taken[0];
    assert_eq!((*m1, *p1), (1, 1));
    assert_eq!(a1["quality"], Answer::Scale(4));
    assert_eq!(a1["lag"], Answer::Text("a little".into()));
    assert_eq!(a1["note"], Answer::Text("fine, «smooth» ✓".into()));
    let (_, p2, a2) = &taken[1];
    assert_eq!(*p2, 2);
    assert_eq!(a2["quality"], Answer::Scale(1));
    assert!(!a2.contains_key("lag"), "left blank: not answered");
    assert_eq!(a2["note"], Answer::Text(HOSTILE.into()));

    // The dashboard says both answered (it refetches on the next event).
    goto(&d, &format!("http://{addr}/#token=qt0ken")).await;
    h.emit(RunEvent::Info {
        message: "tick".into(),
    });
    d.wait_for(
        "both answered on the dashboard",
        &format!(
            "{ROWS} return rows.length == 2 && rows[0][3] == 'answered' && rows[1][3] == 'answered';"
        ),
    )
    .await;
    drop(d);

    // The links are only for the token holder: without the live token, no overview.
    let (code, _, _) = http(addr, "GET", "/api/questionnaire", &[]).await;
    assert_eq!(code, 401);

    // A wrong token: 404, for the page and for an answer.
    let wrong = "/q/00000000000000000000000000000000";
    let (code, _, body) = http(addr, "GET", wrong, &[]).await;
    assert_eq!(code, 404);
    assert!(body.contains("not valid"), "{body}");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let (code, _, _) = http_body(addr, "POST", wrong, &form, "match=1&quality=3").await;
    assert_eq!(code, 404);
    let (code, _, _) = http(addr, "GET", &format!("/q/{}", "a".repeat(5000)), &[]).await;
    assert!(code == 404 || code == 414 || code == 431, "{code}");

    // A second answer for the same match: refused, and the first stays.
    let p1_path = format!("/q/{}", token_of(&links[0].1));
    let (code, _, body) = http_body(addr, "POST", &p1_path, &form, "match=1&quality=2").await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("already in"), "{body}");
    assert!(desk.take().is_empty());

    // The next match's questionnaire, for player 1 only: out of range is refused with the form
    // again; once closed, an answer is refused as too late.
    desk.open(2, &[(1, "pc1".into())]).unwrap();
    let (code, _, body) = http_body(addr, "POST", &p1_path, &form, "match=2&quality=9").await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("takes a whole number from 1 to 5") && body.contains("<form"),
        "{body}"
    );
    let (code, _, body) = http_body(
        addr,
        "POST",
        &p1_path,
        &form,
        &format!("match=2&note={}", "x".repeat(201)),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    let big = format!("match=2&note={}", "x".repeat(600 << 10));
    let (code, _, _) = http_body(addr, "POST", &p1_path, &form, &big).await;
    assert_eq!(code, 413, "the body limit");
    let p2_path = format!("/q/{}", token_of(&links[1].1));
    let (code, _, body) = http_body(addr, "POST", &p2_path, &form, "match=2&quality=3").await;
    assert_eq!(code, 409, "player 2 is not asked after match 2: {body}");
    desk.close();
    let (code, _, body) = http_body(addr, "POST", &p1_path, &form, "match=2&quality=3").await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("not open"), "{body}");
    let (code, _, body) = http(addr, "GET", &p1_path, &[]).await;
    assert_eq!(code, 200);
    assert!(body.contains("id=\"idle\""), "{body}");
    assert!(desk.take().is_empty());
    live.stop().await;
}
