//! `oa-run report` on hand-made manifests (tests/fixtures/report, written by make.py there):
//! golden text and CSV, the CSV read back by a strict parser and by pandas, several runs in
//! one table, hostile names, and manifests of a format this oa-run does not read.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FIXTURES: [&str; 4] = ["complete", "interrupted", "kicked", "left"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/report")
        .join(format!("{name}.json"))
}

fn report(args: &[&str]) -> Output {
    Command::new(support::oa_run())
        .arg("report")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("OA_RUN_LOG")
        .output()
        .unwrap()
}

fn ok_stdout(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn rel(name: &str) -> String {
    format!("tests/fixtures/report/{name}.json")
}

#[test]
fn golden_text_and_csv_per_fixture() {
    for name in FIXTURES {
        let text = ok_stdout(&report(&[&rel(name)]));
        support::assert_golden("report", &format!("{name}.txt"), &text);
        let csv = ok_stdout(&report(&[&rel(name), "--format", "csv"]));
        support::assert_golden("report", &format!("{name}.csv"), &csv);
    }
}

/// Strict RFC 4180 read-back: every record has the header's width, values come back exactly.
fn parse(csv: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(csv.as_bytes());
    let header = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|rec| rec.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

#[test]
fn csv_reads_back_with_hostile_names_intact() {
    let all: Vec<String> = FIXTURES.iter().map(|n| rel(n)).collect();
    let args: Vec<&str> = all
        .iter()
        .map(String::as_str)
        .chain(["--format", "csv"])
        .collect();
    let csv = ok_stdout(&report(&args));
    assert!(csv.ends_with("\r\n"), "RFC 4180 line ends");
    let (header, rows) = parse(&csv);
    assert_eq!(header, oa_run::report::header());
    for want in [
        "study",
        "run_id",
        "match",
        "repeat",
        "player",
        "label",
        "seat",
        "slot",
        "ip",
        "latency_ms",
        "jitter_ms",
        "loss_pct",
        "measured_latency_ms",
        "recording_path",
        "recording_bytes",
        "recording_duration_ms",
        "match_start_offset_ms",
        "status",
        "reason",
    ] {
        assert!(header.iter().any(|h| h == want), "column {want} missing");
    }
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    // 4 + 6 + 6 + 6 rows, each run told apart by its run_id.
    assert_eq!(rows.len(), 22);
    let runs: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r[col("run_id")].as_str()).collect();
    assert_eq!(runs.len(), 4);
    // Commas, quotes, a newline and `<` come back exactly; the control characters are shown as
    // escapes, never written raw.
    let evil: Vec<&Vec<String>> = rows.iter().filter(|r| r[col("label")] == "pc3").collect();
    assert_eq!(evil.len(), 2);
    assert_eq!(
        evil[0][col("name")],
        "Evil, \"Bob\" <b>\n\\u{1b}[31mred\\u{7}"
    );
    assert_eq!(
        evil[1][col("reason")],
        "OBS answered 500: \"busy,\nnot now\"\\u{1b}[2J"
    );
    assert!(!csv.contains('\u{1b}') && !csv.contains('\u{7}'));
    // Status and reason per fixture.
    let status_of = |run: &str, m: &str, label: &str| {
        rows.iter()
            .find(|r| {
                r[col("run_id")].starts_with(run)
                    && r[col("match")] == m
                    && r[col("label")] == label
            })
            .map(|r| (r[col("status")].clone(), r[col("reason")].clone()))
            .unwrap()
    };
    assert_eq!(status_of("1111", "2", "pc2").0, "complete");
    assert_eq!(status_of("2222", "2", "pc1").0, "partial");
    assert_eq!(
        status_of("2222", "3", "pc2"),
        (
            "missing".into(),
            "match not played: run interrupted: Ctrl-C during match 2".into()
        )
    );
    assert_eq!(
        status_of("3333", "1", "pc2"),
        (
            "missing".into(),
            "kicked before the match: OBS unreachable: connection refused".into()
        )
    );
    assert_eq!(status_of("3333", "2", "pc3").0, "failed");
    assert_eq!(
        status_of("4444", "2", "pc2"),
        ("partial".into(), "left during the match".into())
    );
    assert_eq!(
        status_of("4444", "3", "pc2"),
        ("missing".into(), "left before the match".into())
    );
    // Values the manifests lack are empty, not made up.
    assert!(rows.iter().all(|r| r[col("jitter_ms")].is_empty()));
    assert_eq!(status_of("1111", "1", "pc2").0, "complete");
    let r = rows
        .iter()
        .find(|r| r[col("run_id")].starts_with("1111") && r[col("label")] == "pc2")
        .unwrap();
    assert_eq!(r[col("match_start_offset_ms")], "42");
    assert_eq!(r[col("recording_bytes")], "11000000");
    assert_eq!(r[col("ip")], "10.77.0.12");
}

#[test]
fn pandas_reads_the_csv_without_cleaning() {
    let ok = Command::new("python3")
        .args(["-c", "import pandas"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        return support::skip("python3 with pandas is not installed (.ci/run installs it)");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.csv");
    let all: Vec<String> = FIXTURES.iter().map(|n| rel(n)).collect();
    let args: Vec<&str> = all
        .iter()
        .map(String::as_str)
        .chain(["--format", "csv"])
        .collect();
    std::fs::write(&file, ok_stdout(&report(&args))).unwrap();
    let script = r#"
import sys, pandas as pd
df = pd.read_csv(sys.argv[1])
assert df.shape == (22, len(df.columns)), df.shape
assert str(df["latency_ms"].dtype) == "int64", df["latency_ms"].dtype
assert str(df["match"].dtype) == "int64"
assert str(df["recording_bytes"].dtype) == "float64"  # NaN where there is no recording
assert df["jitter_ms"].isna().all()
evil = df[df["label"] == "pc3"]["name"].iloc[0]
assert evil == 'Evil, "Bob" <b>\n\\u{1b}[31mred\\u{7}', repr(evil)
assert df["run_id"].nunique() == 4
print(df.groupby("status").size().to_dict())
"#;
    let o = Command::new("python3")
        .args(["-c", script])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pandas: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "{'complete': 13, 'failed': 1, 'missing': 5, 'partial': 3}"
    );
}

#[test]
fn several_runs_aggregate_into_one_table_with_a_run_column() {
    let text = ok_stdout(&report(&[&rel("complete"), &rel("left")]));
    let summaries = text
        .lines()
        .filter(|l| l.starts_with("Run ") && l.contains(" of study: "));
    assert_eq!(summaries.count(), 2);
    let header = text
        .lines()
        .find(|l| l.starts_with("Run ") && l.contains("Match"))
        .unwrap();
    assert!(header.starts_with("Run       Match"), "{header}");
    assert!(text.contains("\n11111111      1"));
    assert!(text.contains("\n44444444      3"));
    // The same run given twice (as a file and as its directory) is read once.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("complete"), dir.path().join("manifest.json")).unwrap();
    let d = dir.path().to_str().unwrap();
    let csv = ok_stdout(&report(&[d, &rel("complete"), "--format", "csv"]));
    assert_eq!(parse(&csv).1.len(), 4);
}

#[test]
fn text_escapes_hostile_peer_text() {
    let text = ok_stdout(&report(&[&rel("kicked")]));
    assert!(!text.contains('\u{1b}'), "raw escape in {text:?}");
    assert!(text.contains("OBS answered 500: \"busy,\\nnot now\"\\u{1b}[2J"));
    // One table line per row: the newline in the reason did not break the row.
    assert_eq!(text.lines().filter(|l| l.contains("  pc3  ")).count(), 2);
}

#[test]
fn json_has_provenance_and_rows() {
    let out = ok_stdout(&report(&[
        &rel("complete"),
        &rel("kicked"),
        "--format",
        "json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["scenario_git"]["branch"], "main");
    assert_eq!(
        runs[0]["tool"]["commit"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(runs[1]["scenario_git"]["in_repo"], false);
    assert_eq!(runs[1]["rows"].as_array().unwrap().len(), 6);
    assert_eq!(runs[1]["rows"][5]["status"], "failed");
    assert!(!out.contains('\u{1b}'));
}

#[test]
fn a_manifest_of_another_major_format_is_refused_clearly() {
    let o = report(&[&rel("future-major")]);
    assert_eq!(o.status.code(), Some(65));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is manifest format 2.0 (written by oa-run 2.3.0)")
            && err.contains("reads format 1.x only"),
        "{err}"
    );
    assert!(o.stdout.is_empty());

    // An older major: the same refusal.
    let dir = tempfile::tempdir().unwrap();
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("complete")).unwrap()).unwrap();
    v["format_version"]["major"] = 0.into();
    std::fs::write(dir.path().join("manifest.json"), v.to_string()).unwrap();
    let o = report(&[dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&o.stderr).contains("an older oa-run wrote it"));

    // Not a manifest at all / not a run directory.
    std::fs::write(dir.path().join("manifest.json"), "{\"x\": 1}").unwrap();
    let o = report(&[dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not an oa-run manifest"));
    let empty = tempfile::tempdir().unwrap();
    let o = report(&[empty.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is it a run directory?"));
}

#[test]
fn the_minor_1_0_manifest_reads_with_provenance_not_recorded() {
    let text = ok_stdout(&report(&[&rel("interrupted")]));
    assert!(text.contains("git:       not recorded (manifest format 1.0)"));
    assert!(text.contains("oa-run:    oa-run 0.1.0 (commit unknown)"));
}

#[test]
fn fixtures_validate_against_the_committed_manifest_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("schemas/manifest.schema.json")).unwrap(),
    )
    .unwrap();
    let v = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .build(&schema)
        .unwrap();
    for name in FIXTURES {
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap();
        let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
}
