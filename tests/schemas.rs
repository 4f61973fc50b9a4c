//! The committed schemas are generated from the Rust types; a stale file fails here.
//! Regenerate with `cargo run -- schema > schemas/scenario.schema.json`.

use std::path::Path;

#[test]
fn scenario_schema_is_fresh() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/scenario.schema.json");
    let committed = std::fs::read_to_string(&path).unwrap();
    let generated = oa_run::schema::to_pretty(oa_run::schema::scenario_schema());
    assert!(
        committed == generated,
        "schemas/scenario.schema.json is stale: run `cargo run -- schema > schemas/scenario.schema.json`"
    );
}

#[test]
fn scenario_schema_is_draft07_and_every_field_has_a_description() {
    let s = oa_run::schema::scenario_schema();
    assert_eq!(s["$schema"], "http://json-schema.org/draft-07/schema#");
    let mut missing = Vec::new();
    let mut check = |owner: &str, props: &serde_json::Map<String, serde_json::Value>| {
        for (k, v) in props {
            if v.get("description")
                .and_then(|d| d.as_str())
                .is_none_or(str::is_empty)
            {
                missing.push(format!("{owner}.{k}"));
            }
        }
    };
    check("(root)", s["properties"].as_object().unwrap());
    for (name, def) in s["definitions"].as_object().unwrap() {
        if let Some(p) = def.get("properties").and_then(|p| p.as_object()) {
            check(name, p);
        }
    }
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}

#[test]
fn example_scenario_validates_against_committed_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("schemas/scenario.schema.json")).unwrap(),
    )
    .unwrap();
    let doc: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(root.join("scenarios/latency-study.yaml")).unwrap(),
    )
    .unwrap();
    let v = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .build(&schema)
        .unwrap();
    let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
}

/// Every key of the scenario language appears in the README's reference table (a key inside a
/// documented group, such as `bots.warmup.count`, counts as documented by `bots.warmup`).
#[test]
fn readme_documents_every_scenario_key() {
    fn leaves(
        root: &serde_json::Value,
        s: &serde_json::Value,
        prefix: &str,
        out: &mut Vec<String>,
    ) {
        let s = oa_run::schema::resolve(root, s);
        match s.get("properties").and_then(|p| p.as_object()) {
            Some(props) => {
                for (k, v) in props {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(root, v, &path, out);
                }
            }
            None => out.push(prefix.to_string()),
        }
    }
    let schema = oa_run::schema::scenario_schema();
    let mut paths = Vec::new();
    leaves(schema, schema, "", &mut paths);
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let documented = |p: &str| {
        let mut cur = p;
        loop {
            if readme.contains(&format!("`{cur}`")) {
                return true;
            }
            match cur.rsplit_once('.') {
                Some((parent, _)) if parent.contains('.') => cur = parent,
                _ => return false,
            }
        }
    };
    let missing: Vec<&String> = paths.iter().filter(|p| !documented(p)).collect();
    assert!(
        missing.is_empty(),
        "README.md does not document: {missing:?}"
    );
}
