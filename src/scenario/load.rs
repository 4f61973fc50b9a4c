//! Loading a scenario in layers: YAML → `--set` overrides → `${VAR}` interpolation → JSON Schema
//! (every error at once, with positions) → typed value → meaning checks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::diag::{Diagnostic, KeyPath, Origin, Seg, Severity, did_you_mean};
use super::locate::LocationIndex;
use super::semantic;
use super::types::Scenario;
use crate::error::Error;
use crate::plan::design::{ResolvedDesign, draw_seed};
use crate::schema::{resolve, scenario_schema, subschema_at};

/// Where `${VAR}` values come from (the process environment, or a map in tests).
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// A `--set path=value` override as given on the command line.
#[derive(Clone, PartialEq, Eq)]
pub struct Override {
    pub path: String,
    pub value: String,
}

impl std::fmt::Debug for Override {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Override({self})")
    }
}

impl Override {
    pub fn parse(s: &str) -> Result<Override, String> {
        let (path, value) = s.split_once('=').ok_or_else(|| {
            format!("`{s}` is not of the form path=value (e.g. matches.repeats=1)")
        })?;
        if KeyPath::parse(path.trim()).is_none() {
            return Err(format!("`{path}` is not a key path (e.g. matches.repeats)"));
        }
        Ok(Override {
            path: path.trim().to_string(),
            value: value.to_string(),
        })
    }
}

/// Shown in diagnostics, the plan and the manifest: a secret's value is redacted.
impl std::fmt::Display for Override {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Also an override whose value is a mapping holding a secret (`obs={password: …}`).
        let secret = crate::schema::touches_secret(&self.path);
        // Removing a block (`live=null`) reveals nothing, and `resume` can then apply it again.
        let removal = matches!(self.value.trim(), "" | "~" | "null" | "Null" | "NULL");
        if !secret || removal || is_env_reference(self.value.trim()) {
            return write!(f, "{}={}", self.path, self.value);
        }
        // A structured value (`players.seats=[…]`) keeps what is not secret, so that `resume`
        // and `recover` can apply it again when it holds no secret at all (only `${VAR}`s).
        let parsed = serde_saphyr::from_str::<Value>(&self.value)
            .ok()
            .filter(|v| v.is_object() || v.is_array());
        match (parsed, KeyPath::parse(&self.path)) {
            (Some(mut v), Some(path)) => {
                redact_secrets(&path, &mut v);
                write!(f, "{}={v}", self.path)
            }
            _ => write!(f, "{}={}", self.path, super::secret::REDACTED),
        }
    }
}

/// Whether `s` is exactly one `${VAR}` (no default): it names a secret without holding it.
fn is_env_reference(s: &str) -> bool {
    s.strip_prefix("${")
        .and_then(|r| r.strip_suffix('}'))
        .is_some_and(is_var_name)
}

/// A variable name `${…}` may hold: letters, digits and `_`, not starting with a digit.
fn is_var_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Replace every value in `v` (at `path`) that is or may hold a secret with `***`, keeping
/// `${VAR}` references and everything the schema says is not secret.
fn redact_secrets(path: &KeyPath, v: &mut Value) {
    if !crate::schema::touches_secret(&path.to_string()) {
        return;
    }
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                redact_secrets(&path.key(k.clone()), child);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                redact_secrets(&path.index(i), child);
            }
        }
        Value::Null => {}
        Value::String(s) if is_env_reference(s) => {}
        other => *other = Value::String(super::secret::REDACTED.into()),
    }
}

/// Whether an override as recorded (see [`Override`]'s `Display`) lost a secret value.
pub fn is_redacted(recorded: &str) -> bool {
    recorded
        .split_once('=')
        .is_some_and(|(_, v)| v.contains(super::secret::REDACTED))
}

/// A scenario that passed every check.
#[derive(Debug, Clone)]
pub struct LoadedScenario {
    pub scenario: Scenario,
    /// The file as named on the command line.
    pub path: PathBuf,
    /// sha256 (hex) of the file's bytes, taken before anything runs.
    pub sha256: String,
    pub overrides: Vec<Override>,
    pub warnings: Vec<Diagnostic>,
    /// The randomisation, resolved once here (a missing seed is drawn here and nowhere else);
    /// the plan carries it on.
    pub design: ResolvedDesign,
    /// Every recording name, `[match][player]`, rendered and checked during validation.
    pub recording_names: Vec<Vec<String>>,
}

/// How strict loading is about the environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SecretsMode {
    /// A secret's `${VAR}` must be set (a real run).
    #[default]
    Required,
    /// A missing secret variable is a warning: the dry run and `validate` show no secrets, so
    /// they work on a machine without them.
    Optional,
}

/// Read and check a scenario file.
pub fn load_file(
    path: &Path,
    overrides: &[Override],
    env: &dyn Env,
    mode: SecretsMode,
) -> Result<LoadedScenario, Error> {
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(path.to_path_buf())
        } else {
            Error::Io {
                what: format!("cannot read {}", path.display()),
                source: e,
            }
        }
    })?;
    let name = path.display().to_string();
    let text = match String::from_utf8(bytes.clone()) {
        Ok(t) => t,
        Err(_) => {
            return Err(Error::InvalidScenario(vec![Diagnostic {
                severity: Severity::Error,
                origin: Origin::FileOnly { file: name },
                path: KeyPath::root(),
                message: "the file is not UTF-8 text".into(),
                hint: None,
            }]));
        }
    };
    let mut loaded = load_str(&name, &text, overrides, env, mode)?;
    loaded.path = path.to_path_buf();
    loaded.sha256 = hex(&Sha256::digest(&bytes));
    Ok(loaded)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Check a scenario given as text (`file` names it in messages).
pub fn load_str(
    file: &str,
    src: &str,
    overrides: &[Override],
    env: &dyn Env,
    mode: SecretsMode,
) -> Result<LoadedScenario, Error> {
    let mut ctx = Ctx {
        file: file.to_string(),
        index: LocationIndex::build(src),
        overridden: BTreeMap::new(),
        diags: Vec::new(),
        mode,
        missing_secrets: BTreeSet::new(),
        recording_names: Vec::new(),
    };

    // 1. YAML syntax.
    let mut doc: Value = match serde_saphyr::from_str::<Value>(src) {
        Ok(v) => v,
        Err(e) => {
            let origin = match e.location() {
                Some(l) if l.line() > 0 => Origin::File {
                    file: file.to_string(),
                    line: l.line() as usize,
                    column: l.column().max(1) as usize,
                },
                _ => Origin::FileOnly {
                    file: file.to_string(),
                },
            };
            return Err(Error::InvalidScenario(vec![Diagnostic {
                severity: Severity::Error,
                origin,
                path: KeyPath::root(),
                message: format!("not valid YAML: {}", first_line(&e.to_string())),
                hint: None,
            }]));
        }
    };
    if doc.is_null() {
        doc = Value::Object(Map::new());
    }

    // 2. Overrides, then 3. interpolation.
    for ov in overrides {
        ctx.apply_override(&mut doc, ov);
    }
    let mut interpolated = BTreeSet::new();
    ctx.interpolate(&mut doc, &KeyPath::root(), env, &mut interpolated);

    // 4. Schema. Values the types parse themselves (IPs, addresses) are checked here too, so a
    // typed deserialization error (which has no position) cannot happen for them.
    ctx.schema_check(&doc);
    semantic::check_raw(&doc, &mut ctx);
    if ctx.has_errors() {
        return Err(Error::InvalidScenario(ctx.finish()));
    }

    // 5. Typed value.
    let scenario: Scenario = match serde_json::from_value(doc) {
        Ok(s) => s,
        Err(e) => {
            ctx.error(KeyPath::root(), format!("cannot be read: {e}"), None);
            return Err(Error::InvalidScenario(ctx.finish()));
        }
    };

    // 6. The randomisation (recording names may use the latencies it decides), then meaning.
    let design = ResolvedDesign::resolve(
        &scenario.design,
        scenario.players.humans,
        scenario.latency.levels.len() as u32,
        draw_seed,
    );
    semantic::check(&scenario, &design, &interpolated, &mut ctx);
    if ctx.has_errors() {
        return Err(Error::InvalidScenario(ctx.finish()));
    }
    Ok(LoadedScenario {
        scenario,
        path: PathBuf::from(file),
        sha256: hex(&Sha256::digest(src.as_bytes())),
        overrides: overrides.to_vec(),
        design,
        recording_names: std::mem::take(&mut ctx.recording_names),
        warnings: ctx.finish(),
    })
}

/// The parser's first line, without its own `error: line L column C:` prefix (the position is
/// already in front of the message).
fn first_line(s: &str) -> &str {
    let line = s.lines().next().unwrap_or(s).trim();
    let line = line.strip_prefix("error:").unwrap_or(line).trim_start();
    match line.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
        Some((pos, rest)) if pos.contains("column") => rest,
        _ => line,
    }
}

/// Collects diagnostics and knows where each path is.
pub struct Ctx {
    file: String,
    index: LocationIndex,
    /// Paths set by `--set`, with the override's text.
    overridden: BTreeMap<KeyPath, String>,
    diags: Vec<Diagnostic>,
    mode: SecretsMode,
    /// Secret paths whose variable is unset (only in [`SecretsMode::Optional`]).
    pub missing_secrets: BTreeSet<KeyPath>,
    /// Set by the meaning checks.
    pub recording_names: Vec<Vec<String>>,
}

/// Where a diagnostic should point: the key of an entry, or its value.
#[derive(Clone, Copy)]
pub enum At {
    Key,
    Value,
}

impl Ctx {
    fn origin(&self, path: &KeyPath, at: At) -> Origin {
        let mut p = Some(path.clone());
        while let Some(cur) = p {
            if let Some(text) = self.overridden.get(&cur) {
                return Origin::Override { text: text.clone() };
            }
            p = cur.parent();
        }
        let pos = match at {
            At::Key => self.index.key(path),
            At::Value => self.index.value(path),
        };
        match pos {
            Some(p) => Origin::File {
                file: self.file.clone(),
                line: p.line,
                column: p.column,
            },
            None => Origin::FileOnly {
                file: self.file.clone(),
            },
        }
    }

    pub fn push(
        &mut self,
        severity: Severity,
        path: KeyPath,
        at: At,
        message: String,
        hint: Option<String>,
    ) {
        let origin = self.origin(&path, at);
        let d = Diagnostic {
            severity,
            origin,
            path,
            message,
            hint,
        };
        if !self.diags.contains(&d) {
            self.diags.push(d);
        }
    }

    pub fn error(&mut self, path: KeyPath, message: String, hint: Option<String>) {
        self.push(Severity::Error, path, At::Value, message, hint);
    }

    pub fn warn(&mut self, path: KeyPath, message: String) {
        self.push(Severity::Warning, path, At::Value, message, None);
    }

    /// Whether the scenario text itself (not a default) sets this path.
    pub fn is_written(&self, path: &KeyPath) -> bool {
        self.index.contains(path) || self.overridden.contains_key(path)
    }

    fn has_errors(&self) -> bool {
        self.diags.iter().any(|d| d.severity == Severity::Error)
    }

    /// Errors first, each group in file order.
    fn finish(&mut self) -> Vec<Diagnostic> {
        let mut d = std::mem::take(&mut self.diags);
        d.sort_by_key(|d| {
            let (l, c) = match d.origin {
                Origin::File { line, column, .. } => (line, column),
                _ => (usize::MAX, 0),
            };
            (d.severity == Severity::Warning, l, c)
        });
        d
    }

    fn apply_override(&mut self, doc: &mut Value, ov: &Override) {
        let path = KeyPath::parse(&ov.path).expect("validated by Override::parse");
        self.overridden.insert(path.clone(), ov.to_string());
        let value: Value = if ov.value.trim().is_empty() {
            Value::Null
        } else {
            match serde_saphyr::from_str::<Value>(&ov.value) {
                Ok(v) => v,
                Err(_) => Value::String(ov.value.clone()),
            }
        };
        let mut cur = doc;
        for (i, seg) in path.0.iter().enumerate() {
            let last = i + 1 == path.0.len();
            match seg {
                Seg::Key(k) => {
                    if !cur.is_object() {
                        self.error(
                            path.clone(),
                            "cannot set a key here: the parent is not a mapping".into(),
                            None,
                        );
                        return;
                    }
                    let map = cur.as_object_mut().expect("checked");
                    if last {
                        // An explicit `null` leaves the key out, as if never written (turns
                        // off an optional block: `--set questionnaire=null`).
                        if value.is_null() && !ov.value.trim().is_empty() {
                            map.remove(k);
                        } else {
                            map.insert(k.clone(), value);
                        }
                        return;
                    }
                    cur = map
                        .entry(k.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                }
                Seg::Index(n) => {
                    let Some(arr) = cur.as_array_mut() else {
                        self.error(
                            path.clone(),
                            "cannot index here: the parent is not a list".into(),
                            None,
                        );
                        return;
                    };
                    if *n >= arr.len() {
                        self.error(
                            path.clone(),
                            format!(
                                "index {n} is out of range: the list has {} item(s)",
                                arr.len()
                            ),
                            None,
                        );
                        return;
                    }
                    if last {
                        arr[*n] = value;
                        return;
                    }
                    cur = &mut arr[*n];
                }
            }
        }
    }

    fn interpolate(
        &mut self,
        v: &mut Value,
        path: &KeyPath,
        env: &dyn Env,
        done: &mut BTreeSet<KeyPath>,
    ) {
        match v {
            Value::String(s) if s.contains('$') => match expand(s, env) {
                Ok(Some(out)) => {
                    *s = out;
                    done.insert(path.clone());
                }
                Ok(None) => {}
                Err(msg)
                    if self.mode == SecretsMode::Optional
                        && crate::schema::touches_secret(&path.to_string()) =>
                {
                    self.warn(path.clone(), format!("{msg}; a real run needs it"));
                    self.missing_secrets.insert(path.clone());
                    s.clear();
                }
                Err(msg) => self.error(path.clone(), msg, None),
            },
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.interpolate(item, &path.index(i), env, done);
                }
            }
            Value::Object(map) => {
                for (k, item) in map.iter_mut() {
                    self.interpolate(item, &path.key(k.clone()), env, done);
                }
            }
            _ => {}
        }
    }

    fn schema_check(&mut self, doc: &Value) {
        for err in validator().iter_errors(doc) {
            self.schema_error(&err);
        }
    }

    fn schema_error(&mut self, err: &jsonschema::ValidationError<'_>) {
        let schema = scenario_schema();
        {
            let path = to_key_path(err.instance_path());
            let found = describe(err.instance());
            use jsonschema::error::ValidationErrorKind as K;
            if let K::AnyOf { context } = err.kind() {
                // A value with several written forms (a latency level: a duration or a map):
                // explain it by the form of its own JSON type, when exactly one form has it.
                let same_type = |errs: &&Vec<jsonschema::ValidationError<'static>>| {
                    !errs.iter().any(|e| {
                        matches!(e.kind(), K::Type { .. })
                            && e.instance_path() == err.instance_path()
                    })
                };
                let fitting: Vec<_> = context.iter().filter(same_type).collect();
                if let [branch] = fitting.as_slice()
                    && !branch.is_empty()
                {
                    for e in branch.iter() {
                        self.schema_error(e);
                    }
                    return;
                }
            }
            match err.kind() {
                K::AdditionalProperties { unexpected } => {
                    let allowed: Vec<String> = subschema_at(schema, &path)
                        .and_then(|s| crate::schema::with_properties(schema, s))
                        .and_then(|s| s.get("properties"))
                        .and_then(Value::as_object)
                        .map(|m| m.keys().cloned().collect())
                        .unwrap_or_default();
                    for key in unexpected {
                        let hint = did_you_mean(key, allowed.iter().map(String::as_str));
                        self.push(
                            Severity::Error,
                            path.key(key.clone()),
                            At::Key,
                            format!(
                                "unknown key `{key}`; expected one of: {}",
                                allowed.join(", ")
                            ),
                            hint,
                        );
                    }
                }
                K::Required { property } => {
                    let key = property.as_str().unwrap_or_default().to_string();
                    let what = subschema_at(schema, &path.key(key.clone()))
                        .and_then(|s| s.get("description"))
                        .and_then(Value::as_str)
                        .map(|d| format!(" ({})", first_sentence(d)))
                        .unwrap_or_default();
                    let at = if path.0.is_empty() {
                        At::Value
                    } else {
                        At::Key
                    };
                    self.push(
                        Severity::Error,
                        path.clone(),
                        at,
                        format!("missing required key `{key}`{what}"),
                        None,
                    );
                }
                K::Type { kind } => {
                    self.error(
                        path,
                        format!(
                            "found {found}, expected {}",
                            type_name(&format!("{kind:?}"))
                        ),
                        None,
                    );
                }
                K::Enum { options } => {
                    let choices: Vec<String> = options
                        .as_array()
                        .map(|a| a.iter().map(plain).collect())
                        .unwrap_or_default();
                    let hint = err
                        .instance()
                        .as_str()
                        .and_then(|s| did_you_mean(s, choices.iter().map(String::as_str)));
                    self.error(
                        path,
                        format!("found {found}, expected one of: {}", choices.join(", ")),
                        hint,
                    );
                }
                K::Constant { .. } | K::AnyOf { .. } | K::OneOfNotValid { .. } => {
                    let choices = subschema_at(schema, &path)
                        .map(|s| choices(schema, s))
                        .unwrap_or_default();
                    if choices.is_empty() {
                        self.error(
                            path,
                            format!("found {found}, which is none of the allowed forms"),
                            None,
                        );
                    } else {
                        let hint = err
                            .instance()
                            .as_str()
                            .and_then(|s| did_you_mean(s, choices.iter().map(String::as_str)));
                        self.error(
                            path,
                            format!("found {found}, expected one of: {}", choices.join(", ")),
                            hint,
                        );
                    }
                }
                K::Minimum { limit } => self.error(
                    path,
                    format!("found {found}, expected at least {limit}"),
                    None,
                ),
                K::Maximum { limit } => self.error(
                    path,
                    format!("found {found}, expected at most {limit}"),
                    None,
                ),
                K::MinItems { limit } => self.error(
                    path,
                    format!(
                        "found {found}, expected at least {limit} item{}",
                        if *limit == 1 { "" } else { "s" }
                    ),
                    None,
                ),
                K::MaxItems { limit } => self.error(
                    path,
                    format!("found {found}, expected at most {limit} items"),
                    None,
                ),
                K::Pattern { pattern } => {
                    let expected = if pattern == super::duration::DURATION_PATTERN {
                        "a duration: a whole number with a unit ms, s, m or h (e.g. 250ms, 30s, 2m)"
                            .to_string()
                    } else {
                        subschema_at(schema, &path)
                            .and_then(|s| s.get("description"))
                            .and_then(Value::as_str)
                            .map(|d| format!("text matching {pattern} ({})", first_sentence(d)))
                            .unwrap_or_else(|| format!("text matching {pattern}"))
                    };
                    let expected = if err.instance().as_str().is_some_and(|v| v.starts_with('-')) {
                        format!("{expected}; it cannot be negative")
                    } else {
                        expected
                    };
                    self.error(path, format!("found {found}, expected {expected}"), None);
                }
                _ => self.error(path, format!("found {found}: {err}"), None),
            }
        }
    }
}

fn validator() -> &'static jsonschema::Validator {
    static V: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .build(scenario_schema())
            .expect("the generated schema compiles")
    })
}

fn to_key_path(loc: &jsonschema::paths::Location) -> KeyPath {
    use jsonschema::paths::LocationSegment as L;
    KeyPath(
        loc.iter()
            .map(|s| match s {
                L::Property(p) => Seg::Key(p.to_string()),
                L::Index(i) => Seg::Index(i),
            })
            .collect(),
    )
}

/// The allowed constants of a subschema (`enum`, or `oneOf`/`anyOf` of `const`s).
fn choices(root: &Value, s: &Value) -> Vec<String> {
    let s = resolve(root, s);
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        return e.iter().map(plain).collect();
    }
    if let Some(c) = s.get("const") {
        return vec![plain(c)];
    }
    ["oneOf", "anyOf"]
        .iter()
        .filter_map(|k| s.get(*k).and_then(Value::as_array))
        .flatten()
        .flat_map(|b| choices(root, b))
        .collect()
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn first_sentence(d: &str) -> &str {
    let d = d.trim();
    match d.find(". ") {
        Some(i) => &d[..i],
        None => d.trim_end_matches('.'),
    }
}

fn type_name(kind: &str) -> String {
    let k = kind.to_lowercase();
    let pretty = |t: &str| match t {
        "object" => "a mapping (key: value lines)",
        "array" => "a list",
        "string" => "text",
        "integer" => "a whole number",
        "number" => "a number",
        "boolean" => "true or false",
        "null" => "nothing",
        _ => "a value",
    };
    for t in [
        "object", "array", "string", "integer", "number", "boolean", "null",
    ] {
        if k.contains(t) {
            return pretty(t).to_string();
        }
    }
    kind.to_string()
}

/// A short description of a found value, for messages (never more than ~40 chars).
pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("`{n}`"),
        Value::String(s) => {
            let short: String = s.chars().take(40).collect();
            let ell = if s.chars().count() > 40 { "…" } else { "" };
            format!("`{short}{ell}`")
        }
        Value::Array(a) if a.is_empty() => "an empty list".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// Expand `${VAR}` and `${VAR:-default}`; `$${` is a literal `${`. Ok(None) = nothing to expand.
pub fn expand(s: &str, env: &dyn Env) -> Result<Option<String>, String> {
    if !s.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(lit) = after.strip_prefix("${") {
            out.push_str("${");
            rest = lit;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let end = body
            .find('}')
            .ok_or_else(|| format!("`${{` without a closing `}}` in `{s}`"))?;
        let expr = &body[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        if !is_var_name(name) {
            return Err(format!(
                "`${{{expr}}}` is not a variable reference; expected ${{NAME}} or ${{NAME:-default}}"
            ));
        }
        match (
            env.var(name).filter(|v| !v.is_empty() || default.is_none()),
            default,
        ) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable `{name}` is not set (export {name}=… or write ${{{name}:-default}})"
                ));
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_secret_override_is_redacted_unless_it_removes_the_block() {
        let show = |s: &str| Override::parse(s).unwrap().to_string();
        assert_eq!(show("obs.password=hunter2"), "obs.password=***");
        assert_eq!(show("live={token: t0ps3cret}"), r#"live={"token":"***"}"#);
        assert_eq!(show("live=null"), "live=null");
        assert_eq!(show("live=~"), "live=~");
        assert_eq!(show("matches.repeats=2"), "matches.repeats=2");
        assert_eq!(show("obs.password=${OBS_PW}"), "obs.password=${OBS_PW}");
        assert_eq!(show("obs.password=${OBS_PW:-hunter2}"), "obs.password=***");
        assert_eq!(show("obs.password=x${OBS_PW}"), "obs.password=***");
    }

    #[test]
    fn a_structured_secret_override_keeps_what_is_not_secret() {
        let show = |s: &str| Override::parse(s).unwrap().to_string();
        // Seats hold an optional OBS password: without one nothing is redacted.
        let plain = show("players.seats=[{name: pc1, ip: 10.0.0.11}]");
        assert_eq!(plain, r#"players.seats=[{"name":"pc1","ip":"10.0.0.11"}]"#);
        assert!(!is_redacted(&plain));
        // The override as recorded loads again to the same seats.
        let again = Override::parse(&plain).unwrap();
        assert_eq!(again.to_string(), plain);
        let with_pw = show(
            "players.seats=[{name: pc1, ip: 10.0.0.11, obs: {port: 4456, password: hunter2}}, \
             {name: pc2, ip: 10.0.0.12, obs: {password: '${PC2_PW}'}}]",
        );
        assert!(!with_pw.contains("hunter2"), "{with_pw}");
        assert!(with_pw.contains(r#""password":"***""#), "{with_pw}");
        assert!(with_pw.contains(r#""port":4456"#), "{with_pw}");
        assert!(with_pw.contains(r#""password":"${PC2_PW}""#), "{with_pw}");
        assert!(is_redacted(&with_pw));
        assert_eq!(
            show("obs={password: hunter2, port: 4455}"),
            r#"obs={"password":"***","port":4455}"#
        );
        // Not YAML, or a scalar where a block belongs: all of it.
        assert_eq!(show("players.seats=[oops"), "players.seats=***");
        assert_eq!(show("obs=hunter2"), "obs=***");
        assert!(is_redacted("obs.password=***"));
        assert!(!is_redacted("matches.repeats=2"));
    }

    #[test]
    fn expands_variables_and_defaults() {
        let e = env(&[("A", "x"), ("EMPTY", "")]);
        assert_eq!(expand("${A}-${B:-y}", &e).unwrap().unwrap(), "x-y");
        assert_eq!(expand("${EMPTY:-d}", &e).unwrap().unwrap(), "d");
        assert_eq!(expand("${EMPTY}", &e).unwrap().unwrap(), "");
        assert_eq!(
            expand("$${A} costs $5", &e).unwrap().unwrap(),
            "${A} costs $5"
        );
        assert_eq!(expand("no vars", &e).unwrap(), None);
        assert!(
            expand("${MISSING}", &e)
                .unwrap_err()
                .contains("`MISSING` is not set")
        );
        assert!(expand("${A", &e).is_err());
        assert!(expand("${1A}", &e).is_err());
    }

    #[test]
    fn override_parse() {
        let o = Override::parse("matches.repeats=1").unwrap();
        assert_eq!(
            (o.path.as_str(), o.value.as_str()),
            ("matches.repeats", "1")
        );
        assert!(Override::parse("matches.repeats").is_err());
        assert!(Override::parse("a..b=1").is_err());
    }
}
