//! A real headless Chromium (Debian's `chromium` driven over WebDriver by `chromium-driver`)
//! on the dashboard served by the real live server while a real hub is fed a study's events,
//! two players with hostile names among them: the names appear as text, no script in them
//! runs, the match clock moves, events arrive live, and the page says "disconnected" when the
//! server goes away. The screenshot goes to `target/dashboard.png` (`UPDATE_SCREENSHOT=1`:
//! `docs/dashboard.png`, the README's).

mod support;

use std::time::Duration;

use base64::Engine;
use oa_run::run::events::RunEvent;
use oa_run::run::signals::Shutdown;
use serde_json::{Value, json};
use support::live::{hub, serve, study_in_progress};
use support::webdriver::Driver;

/// Would set the title if the page ever parsed a name as HTML.
const TITLE_GRAB: &str = "<img src=x onerror=\"document.title='pwned';window.pwned=1\">";
/// Would open an alert, which makes every later WebDriver command fail.
const ALERT: &str = "<img src=x onerror=alert(1)>";

const PAGE: &str = r#"
const rows = [...document.querySelectorAll('#players tr')].map(tr =>
  [...tr.cells].map(td => td.textContent));
return {
  title: document.title,
  pwned: window.pwned === undefined ? null : window.pwned,
  imgs: document.querySelectorAll('img').length,
  rows,
  clock: document.getElementById('clock').textContent,
  conn: document.getElementById('conn').textContent,
  step: document.getElementById('step').textContent,
  latency: document.getElementById('latency').textContent,
  bots: document.getElementById('bots').textContent,
  log: document.getElementById('log').textContent,
};"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser_shows_hostile_names_as_text_and_a_moving_clock() {
    for p in ["chromium", "chromedriver"] {
        if let Some(why) = support::missing_program(p) {
            return support::skip(&why);
        }
    }
    let mut h = hub();
    let (live, addr) = serve(
        &mut h,
        Some("br0wser"),
        Duration::from_secs(5),
        Shutdown::manual(),
    )
    .await;
    let mut events = study_in_progress(ALERT);
    // Player 1 gets the other hostile name.
    if let RunEvent::PlayerJoined { name, name_raw, .. } = &mut events[2] {
        *name = TITLE_GRAB.into();
        *name_raw = TITLE_GRAB.into();
    }
    for e in events {
        h.emit(e);
    }
    h.tick();

    let d = Driver::start().await;
    // The token travels in the fragment, which the browser never sends to the server.
    d.session(
        "POST",
        "/url",
        Some(json!({"url": format!("http://{addr}/#token=br0wser")})),
    )
    .await;
    d.wait_for(
        "both players' rows",
        "return document.querySelectorAll('#players tr').length == 2 && \
         document.getElementById('conn').textContent == 'live'",
    )
    .await;
    let first = d.js(PAGE).await;
    let rows = first["rows"].as_array().unwrap();
    assert_eq!(
        rows[0][2], TITLE_GRAB,
        "the name is shown as the text it is: {first}"
    );
    assert_eq!(rows[1][2], ALERT, "{first}");
    assert_eq!(rows[0][5], "connected");
    assert_eq!(rows[0][6], "recording");
    assert_eq!(rows[0][8], "joined");
    assert_eq!(first["imgs"], 0, "no element was made from a name");
    assert_eq!(first["pwned"], Value::Null, "no script from a name ran");
    assert_eq!(first["title"], "oa-run live: live-test");
    assert_eq!(first["step"], "step 3/6");
    assert_eq!(first["latency"], "applied");
    assert_eq!(first["bots"], "Bots: Sarge (slot 3), Major (slot 4)");
    let log = first["log"].as_str().unwrap();
    assert!(
        log.contains(&format!("{ALERT} joined from 10.77.0.12 (slot 2)")),
        "{first}"
    );

    // The match clock runs in the page, from the match's start.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let second = d.js(PAGE).await;
    let secs = |v: &Value| {
        let t = v["clock"].as_str().unwrap();
        let (m, s) = t.split_once(':').unwrap_or_else(|| panic!("clock {t}"));
        m.parse::<u32>().unwrap() * 60 + s.parse::<u32>().unwrap()
    };
    assert!(
        secs(&second) > secs(&first),
        "the clock moved: {} then {}",
        first["clock"],
        second["clock"]
    );

    // Events arrive live.
    h.emit(RunEvent::PlayerKicked {
        player: 2,
        slot: 2,
        reason: "OBS failed".into(),
    });
    d.wait_for(
        "the kick to show",
        "const r = document.querySelectorAll('#players tr')[1]; return r && r.cells[8].textContent == 'kicked'",
    )
    .await;
    d.wait_for(
        "the kick in the log, in the server's words",
        "return document.getElementById('log').textContent.includes('OBS failed')",
    )
    .await;
    let png = d.session("GET", "/screenshot", None).await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::write(root.join("target/dashboard.png"), &png).unwrap();
    if std::env::var_os("UPDATE_SCREENSHOT").is_some() {
        std::fs::write(root.join("docs/dashboard.png"), &png).unwrap();
    }
    let after = d.js(PAGE).await;
    assert_eq!(after["pwned"], Value::Null);
    assert_eq!(after["imgs"], 0);

    // The server goes away mid-run: the page says so and keeps trying.
    live.stop().await;
    d.wait_for(
        "the page to say disconnected",
        "return document.getElementById('conn').textContent.startsWith('disconnected')",
    )
    .await;
    // Nothing is listening any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    drop(d);
}
