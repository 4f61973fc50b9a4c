//! The committed manifest schema is what the code generates, `oa-run schema [--manifest]` prints
//! exactly the committed files, and every manifest the code writes validates against the schema.
//! (The scenario schema's own freshness test lives in tests/schemas.rs.)

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oa_run::manifest::{
    self, Event, EventKind, Manifest, ManifestWriter, MatchEnding, RecordingRecord, RunDir,
    RunStatus, ShapingRecord, Timestamp,
};
use oa_run::scenario::{LoadedScenario, Override, SecretsMode, load_str};
use serde_json::{Value, json};

fn committed(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn assert_fresh(name: &str, generated: &Value, flag: &str) {
    let now = oa_run::schema::to_pretty(generated);
    assert!(
        committed(name) == now,
        "schemas/{name} is stale: regenerate it with `cargo run -- schema{flag} > schemas/{name}` and commit it"
    );
}

#[test]
fn manifest_schema_is_fresh() {
    assert_fresh(
        "manifest.schema.json",
        manifest::manifest_schema(),
        " --manifest",
    );
}

#[test]
fn cli_prints_both_schemas() {
    for (args, file) in [
        (&["schema"][..], "scenario.schema.json"),
        (&["schema", "--manifest"][..], "manifest.schema.json"),
    ] {
        let out = std::process::Command::new(support::oa_run())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            committed(file),
            "{args:?}"
        );
    }
}

fn validator(name: &str) -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&committed(name)).unwrap();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("schemas/{name} is not a valid draft-07 schema: {e}"))
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn loaded() -> LoadedScenario {
    let src = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/latency-study.yaml"),
    )
    .unwrap();
    let env: BTreeMap<String, String> = [
        ("OA_RCON_PASSWORD".to_string(), "rcon-sekrit".to_string()),
        ("OBS_PASSWORD".to_string(), "obs-sekrit".to_string()),
    ]
    .into();
    let ov = vec![Override::parse("matches.repeats=1").unwrap()];
    let mut l = load_str("latency-study.yaml", &src, &ov, &env, SecretsMode::Required).unwrap();
    l.path = PathBuf::from("scenarios/latency-study.yaml");
    l.sha256 = "0".repeat(64);
    l
}

/// A manifest with every optional part present, as a finished run writes it.
fn full_manifest(run_dir: &RunDir, l: &LoadedScenario) -> Manifest {
    let plan = oa_run::plan::compile(l).unwrap();
    let mut m = Manifest::from_plan(l, &plan, run_dir);
    let t0 = Timestamp::now();
    for (i, step) in plan.steps.iter().enumerate() {
        m.step_started(i as u32 + 1, step.kind(), None);
        m.step_finished(i as u32 + 1, (i == 3).then(|| "example".to_string()));
    }
    // The questionnaire: an answer (hostile text kept raw) and a missing one.
    m.ratings = vec![
        oa_run::manifest::RatingRecord {
            match_no: 1,
            player: 1,
            status: oa_run::manifest::RatingStatus::Answered,
            opened_at: t0,
            answered_at: Some(t0),
            answers: [
                ("quality".to_string(), oa_run::manifest::Answer::Scale(4)),
                (
                    "comment".to_string(),
                    oa_run::manifest::Answer::Text("</script>\u{1b}[2J\"".into()),
                ),
            ]
            .into(),
        },
        oa_run::manifest::RatingRecord {
            match_no: 1,
            player: 2,
            status: oa_run::manifest::RatingStatus::Missing,
            opened_at: t0,
            answered_at: None,
            answers: Default::default(),
        },
    ];
    for (i, p) in m.players.iter_mut().enumerate() {
        p.slot = Some(i as u32 + 2);
        p.ip = Some(format!("10.77.0.{}", 11 + i).parse().unwrap());
        p.name_raw = Some(format!("^{i}Pl\"ayer\\{i}"));
        p.name_clean = Some(format!("Player{i}"));
        p.joined_at = Some(t0);
        p.obs.host = Some(format!("10.77.0.{}", 11 + i));
        p.obs.connected_at = Some(t0);
        p.obs.obs_version = Some("29.0.2".into());
        p.obs.websocket_version = Some("5.1.0".into());
        p.obs.rpc_version = Some(1);
    }
    m.players[1].left_at = Some(t0);
    m.players[2].obs.error = Some("connection refused".into());
    m.kick(3, "OBS unreachable after 3 attempts: connection refused");
    let numbers: Vec<u32> = m.matches.iter().map(|x| x.number).collect();
    for n in numbers {
        let mm = m.match_mut(n).unwrap();
        mm.started_at = Some(t0);
        mm.ended_at = Some(Timestamp::now());
        mm.ended_by = Some(if n == 1 {
            MatchEnding::Timelimit
        } else {
            MatchEnding::Aborted
        });
        mm.end_detail = Some("Exit: Timelimit hit.".into());
        mm.shaping = Some(ShapingRecord {
            applied: n % 2 == 0,
            at: Some(t0),
            config: json!({"interface": "enp1s0", "classes": [{"ip": "10.77.0.11", "delay_ms": 100}]}),
            error: (n == 3).then(|| "tc: RTNETLINK answers: Operation not permitted".into()),
        });
        let pm = plan.matches.iter().find(|pm| pm.number == n).unwrap();
        for (i, name) in pm.recordings.iter().enumerate() {
            let r = m.add_recording(RecordingRecord::planned(i as u32 + 1, n, name.clone()));
            r.path = Some(format!("/tmp/oa-lab/pc{}/recordings/{name}.mkv", i + 1));
            r.started_at = Some(t0);
            r.stopped_at = Some(Timestamp::now());
            r.bytes = Some(1_234_567);
            r.duration_ms = Some(120_000);
            r.match_start_offset_ms = Some(2_000 + i as i64 * 3);
            r.match_end_offset_ms = Some(62_000 + i as i64 * 3);
            if i == 2 {
                r.error = Some("STOPPED did not arrive within 30s".into());
            }
        }
    }
    m.push_event(
        Event::new(EventKind::Warning, "a warning")
            .player(1)
            .match_no(2),
    );
    m.logs.server_stderr = Some(PathBuf::from(manifest::SERVER_STDERR_FILE));
    m.logs.server_games_log = Some(run_dir.path().join("server/baseoa/games.log"));
    m.set_status(RunStatus::Failed {
        reason: "the server exited".into(),
        exit_code: 1,
    });
    m
}

#[test]
fn manifests_written_by_the_code_validate_against_the_committed_schema() {
    let v = validator("manifest.schema.json");
    let tmp = tempfile::tempdir().unwrap();
    let l = loaded();

    // At start: what ManifestWriter::create puts on disk.
    let rd = RunDir::create(tmp.path(), "latency-study", Timestamp::now()).unwrap();
    let plan = oa_run::plan::compile(&l).unwrap();
    let mut fresh = Manifest::from_plan(&l, &plan, &rd);
    let w = ManifestWriter::create(rd.path(), &mut fresh).unwrap();
    let on_disk: Value = serde_json::from_slice(&std::fs::read(w.path()).unwrap()).unwrap();
    assert_eq!(errors(&v, &on_disk), Vec::<String>::new());
    assert_eq!(on_disk["status"], json!({"state": "running"}));

    // Everything filled in, every status variant.
    let mut full = full_manifest(&rd, &l);
    w.write(&mut full).unwrap();
    let text = std::fs::read_to_string(w.path()).unwrap();
    assert!(!text.contains("sekrit"), "a secret reached the manifest");
    let on_disk: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(errors(&v, &on_disk), Vec::<String>::new());
    for status in [
        RunStatus::Running,
        RunStatus::Completed,
        RunStatus::Interrupted {
            signal: Some("SIGTERM".into()),
            reason: "SIGTERM during match 2".into(),
        },
        RunStatus::Interrupted {
            signal: None,
            reason: "stopped".into(),
        },
    ] {
        full.status = status.clone();
        let val = serde_json::to_value(&full).unwrap();
        assert_eq!(errors(&v, &val), Vec::<String>::new(), "{status:?}");
    }

    // The resolved scenario inside is itself a valid scenario.
    let sv = validator("scenario.schema.json");
    assert_eq!(
        errors(&sv, &on_disk["scenario"]["resolved"]),
        Vec::<String>::new()
    );
}

#[test]
fn the_manifest_schema_rejects_broken_manifests() {
    let v = validator("manifest.schema.json");
    let tmp = tempfile::tempdir().unwrap();
    let l = loaded();
    let rd = RunDir::create(tmp.path(), "latency-study", Timestamp::now()).unwrap();
    let good = serde_json::to_value(full_manifest(&rd, &l)).unwrap();
    assert!(v.is_valid(&good));
    type Breaker = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Breaker)> = vec![
        (
            "unknown status",
            Box::new(|m| m["status"] = json!({"state": "exploded"})),
        ),
        (
            "failed without reason",
            Box::new(|m| m["status"] = json!({"state": "failed", "exit_code": 1})),
        ),
        (
            "run id not a uuid",
            Box::new(|m| m["run_id"] = json!("run-1")),
        ),
        (
            "time not RFC 3339",
            Box::new(|m| m["started_at"] = json!("yesterday")),
        ),
        (
            "missing recordings",
            Box::new(|m| {
                m.as_object_mut().unwrap().remove("recordings");
            }),
        ),
        (
            "negative bytes",
            Box::new(|m| m["recordings"][0]["bytes"] = json!(-1)),
        ),
        (
            "unknown match ending",
            Box::new(|m| m["matches"][0]["ended_by"] = json!("boredom")),
        ),
    ];
    for (what, break_it) in cases {
        let mut bad = good.clone();
        break_it(&mut bad);
        assert!(!v.is_valid(&bad), "{what}: accepted");
    }
}
