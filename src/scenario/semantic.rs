//! Meaning checks that a schema cannot express.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use super::diag::{KeyPath, did_you_mean};
use super::load::{Ctx, describe};
use super::types::{Order, Scenario};
use crate::plan::design::ResolvedDesign;
use crate::plan::names;

/// OpenArena 0.8.8's bots (scripts/bots.txt in pak6-patch088.pk3).
pub const OPENARENA_BOTS: &[&str] = &[
    "Angelyss",
    "Dark",
    "Murielle",
    "Nekoyss",
    "Tanisha",
    "Rai",
    "Arachna",
    "Assassin",
    "Ghost",
    "Ayumi",
    "Jenna",
    "Beret",
    "Headcrash",
    "Morgan",
    "Gargoyle",
    "Broadklin",
    "Cyber-Garg",
    "Kyonshi",
    "Liz",
    "Major",
    "Merman",
    "Neko",
    "Penguin",
    "Sarge",
    "Andriy",
    "Grism",
    "Sergei",
    "Skelebot",
    "Metalbot",
    "Grunt",
    "S_Marine",
    "Sorceress",
    "Tony",
];

/// The engine's slot limit (MAX_CLIENTS).
pub const MAX_CLIENTS: u32 = 64;

fn p(s: &str) -> KeyPath {
    KeyPath::parse(s).expect("static path")
}

/// Checks on the raw document for values the typed layer parses itself, so that every such
/// problem gets a position.
pub fn check_raw(doc: &Value, ctx: &mut Ctx) {
    if let Some(addr) = doc.pointer("/server/address").and_then(Value::as_str)
        && parse_server_address(addr).is_err()
    {
        ctx.error(
            p("server.address"),
            format!(
                "found {}, expected IP:PORT with a port from 1 to 65535 (e.g. 0.0.0.0:27960)",
                describe(&Value::String(addr.into()))
            ),
            None,
        );
    }
    if let Some(addr) = doc.pointer("/live/listen").and_then(Value::as_str)
        && parse_live_listen(addr).is_err()
    {
        ctx.error(
            p("live.listen"),
            format!(
                "found {}, expected IP:PORT (e.g. 127.0.0.1:8080)",
                describe(&Value::String(addr.into()))
            ),
            None,
        );
    }
    if let Some(seats) = doc.pointer("/players/seats").and_then(Value::as_array) {
        for (i, seat) in seats.iter().enumerate() {
            if let Some(ip) = seat.get("ip").and_then(Value::as_str)
                && ip.parse::<IpAddr>().is_err()
            {
                ctx.error(
                    p("players.seats").index(i).key("ip"),
                    format!(
                        "found {}, expected an IPv4 or IPv6 address",
                        describe(&Value::String(ip.into()))
                    ),
                    None,
                );
            }
        }
    }
}

pub fn parse_server_address(s: &str) -> Result<SocketAddr, String> {
    let a: SocketAddr = s.parse().map_err(|_| format!("`{s}` is not IP:PORT"))?;
    if a.port() == 0 {
        return Err("port 0 is not a port".into());
    }
    Ok(a)
}

/// The live view's listen address (port 0: any free port).
pub fn parse_live_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| format!("`{s}` is not IP:PORT"))
}

/// Whether the live view may listen on `addr`: anything but loopback needs a token, since the
/// feed shows who is in the lab and from which address.
pub fn live_listen_allowed(addr: SocketAddr, has_token: bool) -> Result<(), String> {
    if has_token || addr.ip().to_canonical().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "{addr} is not a loopback address; serving the live view there needs `live.token` \
             (e.g. --set 'live.token=${{OA_RUN_LIVE_TOKEN}}'), or listen on 127.0.0.1"
        ))
    }
}

pub fn check(
    s: &Scenario,
    design: &ResolvedDesign,
    interpolated: &BTreeSet<KeyPath>,
    ctx: &mut Ctx,
) {
    // Server.
    match (&s.server.launch, &s.server.log) {
        (Some(_), Some(_)) => ctx.error(
            p("server.log"),
            "`log` is only for attaching to a running server; a launched server's log is managed by oa-run"
                .into(),
            None,
        ),
        (None, None) => ctx.error(
            p("server"),
            "attaching to a running server needs `log:` (the path of its games.log); or add `launch:` to start one"
                .into(),
            None,
        ),
        _ => {}
    }
    secret(
        ctx,
        interpolated,
        "server.rcon_password",
        s.server.rcon_password.expose(),
        true,
    );
    secret(
        ctx,
        interpolated,
        "obs.password",
        s.obs.password.expose(),
        false,
    );

    // Live view.
    if let Some(live) = &s.live {
        let token = live.token.as_ref();
        if let Some(t) = token {
            if !ctx.missing_secrets.contains(&p("live.token")) && t.expose().trim().is_empty() {
                ctx.error(
                    p("live.token"),
                    "is empty; give a token or leave `token` out (loopback only)".into(),
                    None,
                );
            }
            secret(ctx, interpolated, "live.token", t.expose(), false);
        }
        if let Ok(addr) = parse_live_listen(&live.listen)
            && let Err(e) = live_listen_allowed(addr, token.is_some())
        {
            ctx.error(p("live.listen"), e, None);
        }
    }

    if let Some(url) = s.live.as_ref().and_then(|l| l.public_url.as_deref()) {
        // The parser drops tabs and newlines silently; the links use the text as written.
        let plain = !url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>'));
        let ok = plain
            && reqwest::Url::parse(url).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.query().is_none()
                    && u.fragment().is_none()
            });
        if !ok {
            ctx.error(
                p("live.public_url"),
                format!(
                    "found {}, expected an http:// or https:// URL with a host and no query \
                     (e.g. http://192.168.1.10:8080)",
                    describe(&Value::String(url.into()))
                ),
                None,
            );
        }
    }

    questionnaire(s, ctx);

    // Webhooks.
    for (i, n) in s.notify.iter().enumerate() {
        secret(
            ctx,
            interpolated,
            &format!("notify[{i}].url"),
            n.url.expose(),
            false,
        );
        if let Some(k) = &n.secret {
            secret(
                ctx,
                interpolated,
                &format!("notify[{i}].secret"),
                k.expose(),
                false,
            );
        }
        let url = n.url.expose();
        // Empty: an unset `${VAR}` (an error for a real run, a warning in a dry run, elsewhere).
        if !url.is_empty() {
            let ok = reqwest::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                // The value is a secret: say what is wrong without showing it.
                ctx.error(
                    p("notify").index(i).key("url"),
                    "expected an http:// or https:// URL with a host".into(),
                    None,
                );
            }
        }
        for (j, kind) in n.events.iter().flatten().enumerate() {
            if !crate::run::events::RunEvent::KINDS.contains(&kind.as_str()) {
                ctx.error(
                    p("notify").index(i).key("events").index(j),
                    format!("`{kind}` is not an event type"),
                    did_you_mean(kind, crate::run::events::RunEvent::KINDS.iter().copied()),
                );
            }
        }
    }

    // Players and seats.
    let seats = &s.players.seats;
    if !seats.is_empty() && (seats.len() as u32) < s.players.humans {
        ctx.error(
            p("players.humans"),
            format!(
                "found {} humans but only {} seats; every human needs a seat",
                s.players.humans,
                seats.len()
            ),
            None,
        );
    }
    let mut ips = HashMap::new();
    let mut seat_names = HashMap::new();
    for (i, seat) in seats.iter().enumerate() {
        if let Some(first) = ips.insert(seat.ip, i) {
            ctx.error(
                p("players.seats").index(i).key("ip"),
                format!(
                    "IP {} is already used by seat `{}`; seat IPs must be unique",
                    seat.ip, seats[first].name
                ),
                None,
            );
        }
        if let Some(first) = seat_names.insert(seat.name.to_lowercase(), i) {
            ctx.error(
                p("players.seats").index(i).key("name"),
                format!(
                    "seat name `{}` is already used by seats[{first}]; seat names must be unique",
                    seat.name
                ),
                None,
            );
        }
        if let Some(pw) = seat.obs.as_ref().and_then(|o| o.password.as_ref()) {
            let path = format!("players.seats[{i}].obs.password");
            secret(ctx, interpolated, &path, pw.expose(), false);
        }
    }
    if s.players.join_timeout.as_millis() == 0 {
        ctx.error(
            p("players.join_timeout"),
            "found 0s, expected a time to wait for players".into(),
            None,
        );
    }

    // Bots.
    for (i, name) in s.bots.names.iter().enumerate() {
        if !OPENARENA_BOTS.iter().any(|b| b.eq_ignore_ascii_case(name)) {
            ctx.error(
                p("bots.names").index(i),
                format!(
                    "`{name}` is not an OpenArena bot; known bots: {}",
                    OPENARENA_BOTS.join(", ")
                ),
                did_you_mean(name, OPENARENA_BOTS.iter().copied()),
            );
        }
    }
    for (key, group) in [("warmup", s.bots.warmup), ("match", s.bots.match_)] {
        if group.count as usize > s.bots.names.len() {
            ctx.error(
                p("bots").key(key).key("count"),
                format!(
                    "found {} bots but `bots.names` lists only {}; add names or lower the count",
                    group.count,
                    s.bots.names.len()
                ),
                None,
            );
        }
        if s.players.humans + group.count > MAX_CLIENTS {
            ctx.error(
                p("bots").key(key).key("count"),
                format!(
                    "{} humans + {} bots exceed the server's {MAX_CLIENTS} player slots",
                    s.players.humans, group.count
                ),
                None,
            );
        }
    }

    // Matches.
    if s.matches.timelimit.as_millis() < 1000 {
        ctx.error(
            p("matches.timelimit"),
            format!("found {}, expected at least 1s", s.matches.timelimit),
            None,
        );
    }

    if let Some(practice) = &s.matches.practice
        && practice.duration.as_millis() < 1000
    {
        ctx.error(
            p("matches.practice.duration"),
            format!("found {}, expected at least 1s", practice.duration),
            None,
        );
    }

    // Latency.
    let mut seen = HashMap::new();
    for (i, level) in s.latency.levels.iter().enumerate() {
        if let Some(first) = seen.insert(level.delay_ms(), i) {
            ctx.error(
                p("latency.levels").index(i),
                format!(
                    "{} is listed twice (also levels[{first}]); levels must have distinct delays",
                    level.delay
                ),
                None,
            );
        }
        if level.delay_ms() > 10_000 {
            ctx.error(
                p("latency.levels").index(i),
                format!("found {}, expected at most 10s of added delay", level.delay),
                None,
            );
        }
        if level.jitter > level.delay {
            ctx.error(
                p("latency.levels").index(i).key("jitter"),
                format!(
                    "found {}, expected at most the level's delay ({}): the delay cannot go below zero",
                    level.jitter, level.delay
                ),
                None,
            );
        }
        if level.loss.ppm() > 1_000_000 {
            ctx.error(
                p("latency.levels").index(i).key("loss"),
                format!("found {}, expected at most 100%", level.loss),
                None,
            );
        }
    }
    let n = s.latency.levels.len() as u32;
    if s.latency.order == Order::Balanced && n > 2 && n % 2 == 1 && s.matches.repeats % 2 == 1 {
        ctx.warn(
            p("matches.repeats"),
            format!(
                "with an odd number of levels ({n}) a balanced design needs an even number of repeats \
                 (square + mirrored square) to balance carryover; {} leaves it partly unbalanced",
                s.matches.repeats
            ),
        );
    }
    if n > 0 && s.players.humans > n && !s.players.humans.is_multiple_of(n) {
        ctx.warn(
            p("players.humans"),
            format!(
                "{} humans over {n} levels: some matches will have a level more often than others",
                s.players.humans
            ),
        );
    }

    // Recording names: the template and every name it renders (kept for the plan).
    match names::render_all(s, design) {
        Ok(all) => ctx.recording_names = all,
        Err(e) => ctx.error(p("obs.recording.name"), e, None),
    }
    if let Ok(t) = names::NameTemplate::new(&s.obs.recording.name)
        && !names::is_run_unique(&t)
    {
        ctx.warn(
            p("obs.recording.name"),
            "has no run-unique part: running this study again gives the same file names, and OBS saves \
             `name (2).mkv` next to the first run's files; add {{ started }} or {{ run_id }}"
                .to_string(),
        );
    }
}

/// The questionnaire: its pages need the live view, and every item must make sense for its kind.
fn questionnaire(s: &Scenario, ctx: &mut Ctx) {
    use super::types::{ItemKind, MAX_TEXT_ANSWER};
    let Some(q) = &s.questionnaire else {
        return;
    };
    if s.live.is_none() {
        ctx.error(
            p("questionnaire"),
            "the answer pages are served by the live view, which is off: add `live: { listen: \
             IP:PORT }` or run with --live IP:PORT"
                .into(),
            None,
        );
    }
    if q.timeout.as_millis() < 1000 {
        ctx.error(
            p("questionnaire.timeout"),
            format!("found {}, expected at least 1s to answer", q.timeout),
            None,
        );
    }
    let items = p("questionnaire.items");
    let mut ids = HashMap::new();
    for (i, item) in q.items.iter().enumerate() {
        let at = items.index(i);
        if let Some(first) = ids.insert(item.id.as_str(), i) {
            ctx.error(
                at.key("id"),
                format!(
                    "`{}` is already the id of items[{first}]; item ids must be unique",
                    item.id
                ),
                None,
            );
        }
        if item.prompt.trim().is_empty() {
            ctx.error(
                at.key("prompt"),
                "is empty; write the question".into(),
                None,
            );
        }
        let only = |ctx: &mut Ctx, key: &str, set: bool, kind: &str| {
            if set {
                ctx.error(
                    at.key(key),
                    format!(
                        "is only for items of kind {kind}; this one is {}",
                        kind_name(item.kind)
                    ),
                    None,
                );
            }
        };
        let likert = item.kind == ItemKind::Likert;
        only(ctx, "min", !likert && item.min.is_some(), "likert");
        only(ctx, "max", !likert && item.max.is_some(), "likert");
        only(
            ctx,
            "min_label",
            !likert && item.min_label.is_some(),
            "likert",
        );
        only(
            ctx,
            "max_label",
            !likert && item.max_label.is_some(),
            "likert",
        );
        only(
            ctx,
            "options",
            item.kind != ItemKind::Choice && !item.options.is_empty(),
            "choice",
        );
        only(
            ctx,
            "max_length",
            item.kind != ItemKind::Text && item.max_length.is_some(),
            "text",
        );
        match item.kind {
            ItemKind::Likert => {
                let (min, max) = item.likert_range();
                if min >= max {
                    let key = if item.max.is_some() { "max" } else { "min" };
                    ctx.error(
                        at.key(key),
                        format!("the scale runs from {min} to {max}; `min` must be below `max`"),
                        None,
                    );
                } else if max - min > 10 {
                    ctx.error(
                        at.key("max"),
                        format!(
                            "the scale {min}..{max} has {} points; at most 11 are allowed",
                            max - min + 1
                        ),
                        None,
                    );
                }
            }
            ItemKind::Choice => {
                if item.options.is_empty() {
                    ctx.error(
                        at.clone(),
                        "a choice item needs `options`: at least one answer to choose".into(),
                        None,
                    );
                }
                let mut seen = HashMap::new();
                for (j, o) in item.options.iter().enumerate() {
                    if o.trim().is_empty() {
                        ctx.error(at.key("options").index(j), "is empty".into(), None);
                    } else if let Some(first) = seen.insert(o.trim(), j) {
                        ctx.error(
                            at.key("options").index(j),
                            format!("`{o}` is already options[{first}]; options must be distinct"),
                            None,
                        );
                    }
                }
            }
            ItemKind::Text => {
                if let Some(n) = item.max_length
                    && (n == 0 || n > MAX_TEXT_ANSWER)
                {
                    ctx.error(
                        at.key("max_length"),
                        format!("found {n}, expected 1 to {MAX_TEXT_ANSWER} characters"),
                        None,
                    );
                }
            }
        }
    }
}

fn kind_name(k: super::types::ItemKind) -> &'static str {
    match k {
        super::types::ItemKind::Likert => "likert",
        super::types::ItemKind::Choice => "choice",
        super::types::ItemKind::Text => "text",
    }
}

/// A secret must not be empty (where the peer refuses empty ones), must fit the protocol, and
/// should come from the environment rather than a version-controlled file.
fn secret(ctx: &mut Ctx, interpolated: &BTreeSet<KeyPath>, path: &str, value: &str, rcon: bool) {
    let kp = p(path);
    if ctx.missing_secrets.contains(&kp) {
        return;
    }
    if rcon && value.is_empty() {
        ctx.error(
            kp.clone(),
            "is empty; the server refuses rcon without a password".into(),
            None,
        );
    }
    if rcon
        && value
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == ';' || c.is_control())
    {
        ctx.error(
            kp.clone(),
            "contains spaces, quotes, `;` or control characters, which the rcon protocol cannot carry".into(),
            None,
        );
    }
    if !value.is_empty() && !interpolated.contains(&kp) && ctx.is_written(&kp) {
        ctx.warn(
            kp,
            "is written in the scenario file; prefer ${VAR} so the secret stays out of version control".into(),
        );
    }
}
