//! JSON Schemas generated from the Rust types (draft-07, so editors validate with them).

use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::Value;

use crate::scenario::Scenario;

/// The scenario schema as committed in `schemas/scenario.schema.json`.
pub fn scenario_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(generate::<Scenario>)
}

/// Generate a draft-07 schema for a deserialized type.
pub fn generate<T: schemars::JsonSchema>() -> Value {
    let schema = SchemaSettings::draft07()
        .for_deserialize()
        .into_generator()
        .into_root_schema_for::<T>();
    let mut v = schema.to_value();
    drop_nullable(&mut v);
    v
}

/// Pretty JSON with a trailing newline, as committed.
pub fn to_pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("schema serializes");
    s.push('\n');
    s
}

/// `Option<T>` fields become `anyOf: [T, null]`; a null is never meaningful in a scenario, and
/// the `anyOf` would hide the precise errors inside T (an unknown key deep in `server.launch`
/// would only say "matches none of"). Keep just T.
fn drop_nullable(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(branches)) = map.get("anyOf") {
                let non_null: Vec<Value> = branches
                    .iter()
                    .filter(|b| b.get("type") != Some(&Value::String("null".into())))
                    .cloned()
                    .collect();
                if non_null.len() == 1 && non_null.len() < branches.len() {
                    map.remove("anyOf");
                    if let Value::Object(inner) = &non_null[0] {
                        for (k, val) in inner {
                            map.entry(k.clone()).or_insert_with(|| val.clone());
                        }
                    }
                }
            }
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let t = types[0].clone();
                    map.insert("type".into(), t);
                }
            }
            for val in map.values_mut() {
                drop_nullable(val);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nullable),
        _ => {}
    }
}

/// The subschema that describes the value at `path`, following `$ref`s, `properties`, `items`
/// and single-branch combinators. Used to explain errors (allowed keys, descriptions, choices).
pub fn subschema_at<'a>(root: &'a Value, path: &crate::scenario::KeyPath) -> Option<&'a Value> {
    use crate::scenario::Seg;
    let mut cur = resolve(root, root);
    for seg in &path.0 {
        cur = match seg {
            Seg::Key(k) => resolve(root, with_properties(root, cur)?.get("properties")?.get(k)?),
            Seg::Index(_) => resolve(root, cur.get("items")?),
        };
    }
    Some(cur)
}

/// `v` itself when it has `properties`, else its one `anyOf` branch that has them (a value
/// with a short form and a map form, such as a latency level).
pub fn with_properties<'a>(root: &'a Value, v: &'a Value) -> Option<&'a Value> {
    if v.get("properties").is_some() {
        return Some(v);
    }
    let maps: Vec<&Value> = v
        .get("anyOf")?
        .as_array()?
        .iter()
        .map(|b| resolve(root, b))
        .filter(|b| b.get("properties").is_some())
        .collect();
    match maps.as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

/// Follow a local `$ref` (possibly several). Draft-07 generation wraps a `$ref` that has
/// sibling keywords (a description) in a one-element `allOf`, so follow that too.
pub fn resolve<'a>(root: &'a Value, mut v: &'a Value) -> &'a Value {
    for _ in 0..16 {
        if v.get("$ref").is_none()
            && let Some([only]) = v.get("allOf").and_then(Value::as_array).map(Vec::as_slice)
        {
            v = only;
        }
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
                Some(target) => v = target,
                None => break,
            },
            None => break,
        }
    }
    v
}

/// Whether the scenario value at `path` is, or contains, a secret. Decided from the scenario
/// schema, so new secret fields are covered without a list to maintain. Unknown paths count
/// as secret (fail closed).
pub fn touches_secret(path: &str) -> bool {
    use crate::scenario::{KeyPath, Seg};
    let root = crate::schema::scenario_schema();
    let Some(secret_def) = root.pointer("/definitions/Secret") else {
        return true;
    };
    let Some(kp) = KeyPath::parse(path) else {
        return true;
    };
    let mut nodes = branches(root, root, 8);
    for seg in &kp.0 {
        let mut next = Vec::new();
        for n in &nodes {
            let child = match seg {
                Seg::Key(k) => n
                    .get("properties")
                    .and_then(|p| p.get(k))
                    .or_else(|| n.get("additionalProperties").filter(|v| v.is_object())),
                Seg::Index(_) => n.get("items"),
            };
            if let Some(c) = child {
                next.extend(branches(root, c, 8));
            }
        }
        if next.is_empty() {
            return true;
        }
        nodes = next;
    }
    nodes
        .into_iter()
        .any(|n| contains_schema(root, n, secret_def, 16))
}

/// The concrete schemas a node stands for: `$ref`s followed, `allOf`/`anyOf`/`oneOf` expanded.
fn branches<'a>(root: &'a Value, node: &'a Value, depth: u32) -> Vec<&'a Value> {
    let node = resolve(root, node);
    let mut out = vec![node];
    if depth == 0 {
        return out;
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(vs)) = node.get(key) {
            for v in vs {
                out.extend(branches(root, v, depth - 1));
            }
        }
    }
    out
}

fn contains_schema(root: &Value, node: &Value, target: &Value, depth: u32) -> bool {
    let node = resolve(root, node);
    if std::ptr::eq(node, target) {
        return true;
    }
    if depth == 0 {
        return true;
    }
    let Value::Object(map) = node else {
        return false;
    };
    let mut children: Vec<&Value> = Vec::new();
    if let Some(Value::Object(props)) = map.get("properties") {
        children.extend(props.values());
    }
    for key in ["items", "additionalProperties"] {
        if let Some(v @ Value::Object(_)) = map.get(key) {
            children.push(v);
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(vs)) = map.get(key) {
            children.extend(vs.iter());
        }
    }
    children
        .into_iter()
        .any(|c| contains_schema(root, c, target, depth - 1))
}
