//! Every invalid fixture under tests/fixtures/invalid/ must be rejected with exactly the
//! messages in its `.expected` file (file:line:column, key path, found/expected, hints).
//! `UPDATE_EXPECT=1 cargo test --test scenario_invalid` rewrites the expectations; review the diff.

use std::collections::BTreeMap;
use std::path::Path;

use oa_run::Error;
use oa_run::scenario::{SecretsMode, load_str};

fn env() -> BTreeMap<String, String> {
    [
        ("OA_RCON_PASSWORD", "rcon-secret-1"),
        ("OBS_PASSWORD", "obs-secret-2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn diagnostics_for(name: &str, src: &str) -> String {
    match load_str(name, src, &[], &env(), SecretsMode::Required) {
        Ok(_) => "(accepted)\n".to_string(),
        Err(Error::InvalidScenario(d)) => d.iter().map(|d| format!("{d}\n")).collect(),
        Err(other) => format!("(other error) {other}\n"),
    }
}

#[test]
fn invalid_fixtures_have_expected_messages() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let update = std::env::var("UPDATE_EXPECT").is_ok();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "expected at least 20 invalid fixtures, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for f in &files {
        let name = format!("{}", f.file_name().unwrap().to_string_lossy());
        let src = std::fs::read_to_string(f).unwrap();
        let got = diagnostics_for(&name, &src);
        assert!(
            !got.contains("(accepted)"),
            "{name} was accepted but must be rejected"
        );
        assert!(
            !got.contains("rcon-secret-1") && !got.contains("obs-secret-2"),
            "{name} leaks a secret:\n{got}"
        );
        let expected_path = f.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "{} is missing (run with UPDATE_EXPECT=1)",
                expected_path.display()
            )
        });
        if got != expected {
            failures.push(format!("--- {name}\nexpected:\n{expected}got:\n{got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
