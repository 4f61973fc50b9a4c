//! Recording file names: a minijinja template (strict mode) rendered per player and match.

use std::collections::HashMap;

use minijinja::{Environment, UndefinedBehavior, Value as JValue};

use crate::manifest::Timestamp;
use crate::plan::latency;
use crate::scenario::Scenario;

/// Variables a recording-name template may use.
pub const VARS: &[&str] = &[
    "scenario",
    "match",
    "repeat",
    "player",
    "player_index",
    "seat",
    "latency_ms",
    "run_id",
    "started",
    "date",
];

/// Variables whose value differs between two runs of the same study: a template needs one so
/// a second run never makes OBS save `name (2).mkv` next to the first run's files.
pub const RUN_UNIQUE_VARS: &[&str] = &["run_id", "started"];

/// The per-run values of the name variables, known when a run starts (the manifest's run id
/// and start time). The plan, rendered before any run, shows them as `<run_id>`, `<started>`
/// and `<date>` ([`RunStamp::placeholders`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStamp {
    /// The run id's first 8 hex digits.
    pub run_id: String,
    /// The run's UTC start, `YYYYmmddTHHMMSSZ` (as in the run directory's name).
    pub started: String,
    /// The run's UTC start date, `YYYY-mm-dd`.
    pub date: String,
}

impl RunStamp {
    pub fn new(run_id: &uuid::Uuid, started: &Timestamp) -> Self {
        RunStamp {
            run_id: run_id.simple().to_string()[..8].to_string(),
            started: started.compact(),
            date: started.0.format("%Y-%m-%d").to_string(),
        }
    }

    /// What the plan shows before a run has an id and a start time.
    pub fn placeholders() -> Self {
        RunStamp {
            run_id: "<run_id>".into(),
            started: "<started>".into(),
            date: "<date>".into(),
        }
    }
}

/// What a name is rendered from.
#[derive(Debug, Clone)]
pub struct NameVars<'a> {
    pub scenario: &'a str,
    /// 1-based.
    pub match_no: u32,
    /// 1-based.
    pub repeat: u32,
    /// Seat name, else the player's cleaned name (see [`file_safe`]).
    pub player: &'a str,
    /// 1-based.
    pub player_index: u32,
    pub seat: Option<&'a str>,
    pub latency_ms: u64,
    /// See [`RunStamp`].
    pub run_id: &'a str,
    pub started: &'a str,
    pub date: &'a str,
}

/// A compiled template.
#[derive(Debug)]
pub struct NameTemplate {
    env: Environment<'static>,
    /// Literal text and plain `{{ var }}` only: rendered by concatenation, which gives the same
    /// result as minijinja ~50× cheaper (a long study renders thousands of names).
    simple: Option<Vec<Part>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Var(String),
}

/// Split `a_{{ match }}_b` into parts, or `None` if the template uses anything beyond plain
/// variables (filters, expressions, tags, comments, whitespace control).
fn simple_parts(src: &str) -> Option<Vec<Part>> {
    let mut parts = Vec::new();
    let mut rest = src;
    while !rest.is_empty() {
        match rest.find("{{") {
            Some(i) => {
                if i > 0 {
                    parts.push(Part::Lit(rest[..i].to_string()));
                }
                let after = &rest[i + 2..];
                let end = after.find("}}")?;
                let name = after[..end].trim();
                let ident = !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit());
                if !ident || !VARS.contains(&name) {
                    return None;
                }
                parts.push(Part::Var(name.to_string()));
                rest = &after[end + 2..];
            }
            None => {
                parts.push(Part::Lit(rest.to_string()));
                rest = "";
            }
        }
    }
    let specials = ["{%", "{#", "%}", "#}", "}}"];
    let clean = parts
        .iter()
        .all(|p| !matches!(p, Part::Lit(l) if specials.iter().any(|s| l.contains(s))));
    clean.then_some(parts)
}

impl NameTemplate {
    pub fn new(src: &str) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_template_owned("name", src.to_string())
            .map_err(|e| {
                format!(
                    "is not a valid template: {}",
                    e.detail().unwrap_or("syntax error")
                )
            })?;
        let t = env.get_template("name").expect("just added");
        let mut unknown: Vec<String> = t
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| !VARS.contains(&v.as_str()))
            .collect();
        unknown.sort();
        if !unknown.is_empty() {
            return Err(format!(
                "uses undefined variable{} {}; available: {}",
                if unknown.len() > 1 { "s" } else { "" },
                unknown
                    .iter()
                    .map(|u| format!("`{u}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                VARS.join(", ")
            ));
        }
        Ok(NameTemplate {
            env,
            simple: simple_parts(src),
        })
    }

    pub fn uses(&self, var: &str) -> bool {
        let t = self.env.get_template("name").expect("added in new");
        t.undeclared_variables(false).contains(var)
    }

    /// Render and check that the result is a safe, single file name.
    pub fn render(&self, v: &NameVars<'_>) -> Result<String, String> {
        let name = match &self.simple {
            Some(parts) => render_simple(parts, v)?,
            None => self.render_jinja(v)?,
        };
        check_file_name(&name)?;
        Ok(name)
    }

    fn render_jinja(&self, v: &NameVars<'_>) -> Result<String, String> {
        let t = self.env.get_template("name").expect("added in new");
        let mut ctx: std::collections::BTreeMap<&str, JValue> = std::collections::BTreeMap::from([
            ("scenario", JValue::from(v.scenario)),
            ("match", JValue::from(v.match_no)),
            ("repeat", JValue::from(v.repeat)),
            ("player", JValue::from(v.player)),
            ("player_index", JValue::from(v.player_index)),
            ("latency_ms", JValue::from(v.latency_ms)),
            ("run_id", JValue::from(v.run_id)),
            ("started", JValue::from(v.started)),
            ("date", JValue::from(v.date)),
        ]);
        if let Some(seat) = v.seat {
            ctx.insert("seat", JValue::from(seat));
        }
        t.render(ctx)
            .map_err(|e| format!("cannot be rendered: {e}"))
    }
}

fn render_simple(parts: &[Part], v: &NameVars<'_>) -> Result<String, String> {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(64);
    for p in parts {
        match p {
            Part::Lit(l) => out.push_str(l),
            Part::Var(name) => {
                let _ = match name.as_str() {
                    "scenario" => write!(out, "{}", v.scenario),
                    "match" => write!(out, "{}", v.match_no),
                    "repeat" => write!(out, "{}", v.repeat),
                    "player" => write!(out, "{}", v.player),
                    "player_index" => write!(out, "{}", v.player_index),
                    "latency_ms" => write!(out, "{}", v.latency_ms),
                    "run_id" => write!(out, "{}", v.run_id),
                    "started" => write!(out, "{}", v.started),
                    "date" => write!(out, "{}", v.date),
                    "seat" => match v.seat {
                        Some(seat) => write!(out, "{seat}"),
                        // Same refusal as minijinja's strict mode.
                        None => return Err("cannot be rendered: undefined value `seat`".into()),
                    },
                    other => return Err(format!("cannot be rendered: unknown variable `{other}`")),
                };
            }
        }
    }
    Ok(out)
}

/// A rendered name must be one plain file name on every OS the players' PCs may run, and must
/// not contain `%` (OBS expands `%` sequences in FilenameFormatting).
pub fn check_file_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("renders an empty file name".into());
    }
    if name.len() > 200 {
        return Err(format!(
            "renders a file name of {} bytes; keep it under 200",
            name.len()
        ));
    }
    if name.contains("..") {
        return Err(format!("renders `{name}`, which contains `..`"));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(format!(
            "renders `{name}`, which starts with `{}`",
            &name[..1]
        ));
    }
    if let Some(c) = name.chars().find(|c| {
        matches!(
            c,
            '/' | '\\' | '%' | ':' | '*' | '?' | '"' | '<' | '>' | '|'
        ) || c.is_control()
    }) {
        return Err(format!(
            "renders `{}`, which contains `{}`; file names must not contain / \\ % : * ? \" < > | or control characters",
            name.escape_debug(),
            c.escape_debug()
        ));
    }
    Ok(())
}

/// A player name as it may appear in a file name: colour codes (`^1`) removed, anything but
/// ASCII letters, digits, `-`, `_` and `.` replaced by `_`, at most 32 characters. `None` when
/// nothing usable is left (the caller then uses the slot).
pub fn file_safe(raw: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '^' && chars.peek().is_some_and(|n| n.is_ascii_alphanumeric()) {
            chars.next();
            continue;
        }
        let mapped = if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '_'
        };
        if !(mapped == '_' && out.ends_with('_')) {
            out.push(mapped);
        }
    }
    let trimmed: String = out
        .trim_matches(|c| c == '_' || c == '-')
        .chars()
        .take(32)
        .collect();
    let trimmed = trimmed.trim_end_matches(['_', '-']).to_string();
    (!trimmed.is_empty()).then_some(trimmed)
}

/// The label a player has before the run knows them: the seat name, or a placeholder.
pub fn placeholder(player_index: u32) -> String {
    format!("<player{player_index}>")
}

/// Render every recording name of the plan, `[match][player]`, checking each is a safe file
/// name and all are unique. Players not known before the run show as `<playerN>`.
pub fn render_all(s: &Scenario) -> Result<Vec<Vec<String>>, String> {
    let t = NameTemplate::new(&s.obs.recording.name)?;
    if t.uses("seat") && s.players.seats.is_empty() {
        return Err("uses `seat`, but the scenario lists no `players.seats`".into());
    }
    let labels: Vec<String> = (0..s.players.humans)
        .map(|i| player_label(s, i).unwrap_or_else(|| placeholder(i + 1)))
        .collect();
    let stamp = RunStamp::placeholders();
    let n_matches = latency::match_count(s);
    let mut seen: HashMap<String, (u32, u32)> =
        HashMap::with_capacity((n_matches * s.players.humans) as usize);
    let mut all = Vec::with_capacity(n_matches as usize);
    for m in 0..n_matches {
        let mut row = Vec::with_capacity(labels.len());
        for (i, label) in labels.iter().enumerate() {
            let i = i as u32;
            let name = render_for_plan(&t, &vars_for(s, m, i, label, &stamp))?;
            if let Some((pm, pi)) = seen.insert(name.clone(), (m + 1, i + 1)) {
                return Err(format!(
                    "renders `{name}` for both player {pi} in match {pm} and player {} in match {}; \
                     include {{{{ match }}}} and {{{{ player }}}} (or {{{{ player_index }}}}) so names are unique",
                    i + 1,
                    m + 1
                ));
            }
            row.push(name);
        }
        all.push(row);
    }
    Ok(all)
}

/// Placeholders like `<player1>` or `<started>` are not valid file names, so each is rendered
/// as a plain marker (which passes the file-name check) and put back for display.
fn render_for_plan(t: &NameTemplate, vars: &NameVars<'_>) -> Result<String, String> {
    const MARKERS: [&str; 4] = [
        "OARUNxPLAYERxMARKER",
        "OARUNxRUNIDxMARKER",
        "OARUNxSTARTEDxMARKER",
        "OARUNxDATExMARKER",
    ];
    let values = [vars.player, vars.run_id, vars.started, vars.date];
    let marked = |i: usize| {
        if values[i].starts_with('<') {
            MARKERS[i]
        } else {
            values[i]
        }
    };
    let unmark = |mut s: String| {
        for (m, v) in MARKERS.iter().zip(values) {
            s = s.replace(m, v);
        }
        s
    };
    let rendered = t
        .render(&NameVars {
            player: marked(0),
            run_id: marked(1),
            started: marked(2),
            date: marked(3),
            ..vars.clone()
        })
        .map_err(unmark)
        .map(unmark)?;
    // A filter or expression on a value known only at run time (`{{ started | lower }}`)
    // would change the marker, and the run could not fill the name in.
    if rendered.to_ascii_lowercase().contains("oarunx") {
        return Err(
            "applies a filter or expression to `player`, `run_id`, `started` or `date`, whose values are known only when the run starts; use them as plain `{{ started }}`".into(),
        );
    }
    Ok(rendered)
}

/// A name from the plan with its placeholders filled in for the run: `<playerN>` by the
/// player's label, `<run_id>`, `<started>` and `<date>` by the run's values.
pub fn resolve(planned: &str, player_index: u32, label: &str, run: &RunStamp) -> String {
    let ph = RunStamp::placeholders();
    planned
        .replace(&placeholder(player_index), label)
        .replace(&ph.run_id, &run.run_id)
        .replace(&ph.started, &run.started)
        .replace(&ph.date, &run.date)
}

/// The seat name of player `i` (0-based), when the scenario has seats.
pub fn player_label(s: &Scenario, i: u32) -> Option<String> {
    s.players
        .seats
        .get(i as usize)
        .map(|seat| seat.name.clone())
}

/// Name variables for 0-based match `m` and player `i` of the run `run`.
pub fn vars_for<'a>(
    s: &'a Scenario,
    m: u32,
    i: u32,
    label: &'a str,
    run: &'a RunStamp,
) -> NameVars<'a> {
    NameVars {
        scenario: &s.name,
        match_no: m + 1,
        repeat: latency::repeat_of(s, m) + 1,
        player: label,
        player_index: i + 1,
        seat: s
            .players
            .seats
            .get(i as usize)
            .map(|seat| seat.name.as_str()),
        latency_ms: latency::latency_ms(s, i, m),
        run_id: &run.run_id,
        started: &run.started,
        date: &run.date,
    }
}

/// Whether a template's names differ between two runs of the same study (it uses
/// `{{ started }}` or `{{ run_id }}`).
pub fn is_run_unique(t: &NameTemplate) -> bool {
    RUN_UNIQUE_VARS.iter().any(|v| t.uses(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(player: &str) -> NameVars<'_> {
        NameVars {
            scenario: "s",
            match_no: 2,
            repeat: 1,
            player,
            player_index: 1,
            seat: None,
            latency_ms: 100,
            run_id: "1a2b3c4d",
            started: "20261122T140307Z",
            date: "2026-11-22",
        }
    }

    #[test]
    fn renders_strictly() {
        let t = NameTemplate::new("{{ scenario }}_m{{ match }}_{{ player }}_{{ latency_ms }}ms")
            .unwrap();
        assert_eq!(t.render(&vars("pc1")).unwrap(), "s_m2_pc1_100ms");
        // `seat` is declared but undefined without seats: strict mode refuses.
        let t = NameTemplate::new("{{ seat }}").unwrap();
        assert!(t.render(&vars("x")).is_err());
    }

    #[test]
    fn fast_path_agrees_with_minijinja() {
        let templates = [
            "{{ scenario }}_m{{ match }}_{{ player }}_{{ latency_ms }}ms",
            "{{scenario}}-{{repeat}}-{{player_index}}",
            "plain",
            "{{ seat }}_{{ match }}",
            "x{{ match }}{{ match }}y",
            "{{ scenario }}_{{ started }}_{{ run_id }}_{{ date }}",
        ];
        let seat = NameVars {
            seat: Some("pc1"),
            ..vars("alice")
        };
        for src in templates {
            let t = NameTemplate::new(src).unwrap();
            assert!(t.simple.is_some(), "{src} should take the fast path");
            for v in [&vars("alice"), &seat] {
                let fast = t.render(v);
                let jinja = t
                    .render_jinja(v)
                    .and_then(|n| check_file_name(&n).map(|_| n));
                assert_eq!(fast.is_ok(), jinja.is_ok(), "{src}: {fast:?} vs {jinja:?}");
                if let Ok(f) = fast {
                    assert_eq!(f, jinja.unwrap(), "{src}");
                }
            }
        }
        // Anything beyond plain variables goes through minijinja.
        for src in [
            "{{ player | upper }}",
            "{% if match %}a{% endif %}",
            "{{ match + 1 }}",
            "{# c #}x",
            "{{- match }}",
        ] {
            assert!(NameTemplate::new(src).unwrap().simple.is_none(), "{src}");
        }
        let t = NameTemplate::new("{{ player | upper }}_{{ match + 1 }}").unwrap();
        assert_eq!(t.render(&vars("alice")).unwrap(), "ALICE_3");
    }

    #[test]
    fn run_variables_come_from_the_run() {
        let t: Timestamp = chrono::DateTime::parse_from_rfc3339("2026-11-22T14:03:07.125Z")
            .unwrap()
            .with_timezone(&chrono::Utc)
            .into();
        let id = uuid::Uuid::parse_str("1a2b3c4d-0000-4000-8000-000000000000").unwrap();
        let stamp = RunStamp::new(&id, &t);
        assert_eq!(
            stamp,
            RunStamp {
                run_id: "1a2b3c4d".into(),
                started: "20261122T140307Z".into(),
                date: "2026-11-22".into(),
            }
        );
        let tpl =
            NameTemplate::new("{{ scenario }}_{{ started }}_{{ run_id }}_{{ date }}").unwrap();
        let v = NameVars {
            run_id: &stamp.run_id,
            started: &stamp.started,
            date: &stamp.date,
            ..vars("p")
        };
        assert_eq!(
            tpl.render(&v).unwrap(),
            "s_20261122T140307Z_1a2b3c4d_2026-11-22"
        );
        assert!(is_run_unique(&tpl));
        assert!(!is_run_unique(
            &NameTemplate::new("{{ date }}_{{ match }}").unwrap()
        ));
        assert!(is_run_unique(
            &NameTemplate::new("{{ run_id | upper }}_{{ match }}").unwrap()
        ));
    }

    #[test]
    fn the_plan_shows_run_values_as_placeholders_the_run_fills_in() {
        let tpl =
            NameTemplate::new("{{ scenario }}_{{ started }}_m{{ match }}_{{ player }}").unwrap();
        let ph = RunStamp::placeholders();
        let v = NameVars {
            run_id: &ph.run_id,
            started: &ph.started,
            date: &ph.date,
            ..vars("<player1>")
        };
        let planned = render_for_plan(&tpl, &v).unwrap();
        assert_eq!(planned, "s_<started>_m2_<player1>");
        let stamp = RunStamp {
            run_id: "1a2b3c4d".into(),
            started: "20261122T140307Z".into(),
            date: "2026-11-22".into(),
        };
        assert_eq!(
            resolve(&planned, 1, "alice", &stamp),
            "s_20261122T140307Z_m2_alice"
        );
        // A filter on a run value cannot be planned.
        let tpl = NameTemplate::new("{{ started | lower }}_{{ match }}").unwrap();
        let err = render_for_plan(&tpl, &v).unwrap_err();
        assert!(err.contains("known only when the run starts"), "{err}");
    }

    #[test]
    fn rejects_unknown_variables_and_syntax() {
        assert!(
            NameTemplate::new("{{ plyer }}")
                .unwrap_err()
                .contains("`plyer`")
        );
        assert!(NameTemplate::new("{{ match ").is_err());
    }

    #[test]
    fn rejects_unsafe_names() {
        let t = NameTemplate::new("{{ player }}").unwrap();
        for bad in ["../x", "a/b", "a\\b", "100%", "", ".hidden", "a:b"] {
            assert!(t.render(&vars(bad)).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn file_safe_names() {
        assert_eq!(file_safe("^1Big ^2Boss").as_deref(), Some("Big_Boss"));
        assert_eq!(file_safe("../../etc/passwd").as_deref(), Some("etc_passwd"));
        assert_eq!(file_safe("a;b\"c'd").as_deref(), Some("a_b_c_d"));
        assert_eq!(file_safe("^^^"), None);
        assert_eq!(file_safe("名前"), None);
        assert_eq!(file_safe(&"x".repeat(100)).unwrap().len(), 32);
        assert_eq!(file_safe("Sarge").as_deref(), Some("Sarge"));
    }
}
