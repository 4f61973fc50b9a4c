//! `schemas/feed.schema.json` is what the code generates (`oa-run schema --feed`), and the
//! messages a real live server sends validate against it.

mod support;

use oa_run::manifest::Answer;
use oa_run::run::events::RunEvent;

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use oa_run::run::signals::Shutdown;
use support::live::{hub, serve, study_start};
use tokio_tungstenite::tungstenite::Message;

fn committed() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/feed.schema.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn feed_schema_is_fresh() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/feed.schema.json");
    let generated = oa_run::schema::to_pretty(&oa_run::live::feed::schema());
    assert!(
        std::fs::read_to_string(p).unwrap() == generated,
        "schemas/feed.schema.json is stale: run `cargo run -- schema --feed > schemas/feed.schema.json`"
    );
    let out = std::process::Command::new(support::oa_run())
        .args(["schema", "--feed"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), generated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_a_live_server_sends_validates() {
    let schema = committed();
    let v = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .build(&schema)
        .unwrap();
    let mut h = hub();
    let (live, addr) = serve(&mut h, None, Duration::from_millis(200), Shutdown::manual()).await;
    let mut events = study_start("<img src=x onerror=alert(1)>");
    // The questionnaire's events, with hostile free text in an answer.
    events.extend([
        RunEvent::QuestionnaireOpened {
            match_no: 1,
            players: vec![1, 2],
            timeout_s: 90.0,
        },
        RunEvent::QuestionnaireAnswered {
            match_no: 1,
            player: 1,
            answers: [
                ("quality".to_string(), Answer::Scale(4)),
                (
                    "note".to_string(),
                    Answer::Text("</script>\u{1b}[2J\"".into()),
                ),
            ]
            .into(),
        },
        RunEvent::QuestionnaireClosed {
            match_no: 1,
            answered: vec![1],
            missing: vec![2],
            timed_out: true,
        },
    ]);
    let n = events.len();
    let (first, rest) = events.split_at(3);
    for e in first {
        h.emit(e.clone());
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/feed"))
        .await
        .unwrap();
    for e in rest {
        h.emit(e.clone());
    }
    let mut types = Vec::new();
    while types.iter().filter(|t| *t == "event").count() < n - 3
        || !types.iter().any(|t| t == "heartbeat")
    {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Message::Text(t) = m else { continue };
        let doc: serde_json::Value = serde_json::from_str(&t).unwrap();
        let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{t}: {errors:?}");
        types.push(doc["type"].as_str().unwrap().to_string());
    }
    assert_eq!(types[0], "welcome");
    assert_eq!(types[1], "snapshot");
    live.stop().await;
}
