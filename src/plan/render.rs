//! Human-readable rendering of a plan (the dry run's default output).

use std::fmt::Write as _;

use super::{MatchEnd, Plan, Step};
use crate::scenario::{OnFailure, Shaper};

/// One line describing a step.
pub fn step_line(plan: &Plan, step: &Step) -> String {
    let label = |i: usize| plan.players.get(i).map(|p| p.label.as_str()).unwrap_or("?");
    match step {
        Step::Preflight { checks } => format!("preflight: {}", checks.join(", ")),
        Step::LaunchServer { binary, address, map } => {
            format!("launch server {} on {address}, map {map}", binary.display())
        }
        Step::AttachServer { address, log } => {
            format!("attach to server at {address}, reading {}", log.display())
        }
        Step::WaitForHumans {
            count,
            timeout,
            by_seat,
        } => format!(
            "wait for {count} human{} (up to {timeout}{}); connect each player's OBS as they join (not contacted in dry run)",
            if *count == 1 { "" } else { "s" },
            if *by_seat { ", matched to seats by IP" } else { "" }
        ),
        Step::SetupLatency {
            shaper,
            interface,
            split,
            netem_limit,
            ..
        } => match shaper {
            Shaper::Tc => format!(
                "set up latency: tc HTB tree on {interface}, one netem class per player ({split:?} delay, limit {netem_limit}), unshaped default"
            )
            .to_lowercase(),
            Shaper::Nfqueue => format!(
                "set up latency: oa-run's own NFQUEUE shaper on {interface}, game traffic only ({split:?} delay, queue limit {netem_limit})"
            )
            .to_lowercase(),
            Shaper::None | Shaper::Auto => "latency shaper `none`: latencies are planned and recorded, not applied".into(),
        },
        Step::Warmup {
            bots,
            skill,
            duration,
            obs_retries,
            obs_connect_timeout,
        } => format!(
            "warmup {duration} with {} at skill {skill}; connect any OBS still missing ({obs_retries} retries, {obs_connect_timeout} each)",
            bot_list(bots)
        ),
        Step::ResolveObsFailures { policy } => match policy {
            OnFailure::Kick => "kick players whose OBS is not connected (by slot)".into(),
            OnFailure::Abort => "abort the study if any player's OBS is not connected".into(),
            OnFailure::Continue => "continue without the recordings of players whose OBS is not connected".into(),
        },
        Step::SetBots { bots, skill } => format!("match bots: {} at skill {skill}", bot_list(bots)),
        Step::SetLatency {
            match_no, latency_ms, ..
        } => {
            let parts: Vec<String> = latency_ms
                .iter()
                .enumerate()
                .map(|(i, ms)| format!("{}={ms}ms", label(i)))
                .collect();
            format!("match {match_no}: set latency {}", parts.join(" "))
        }
        Step::StartRecordings {
            match_no,
            names,
            timeout,
        } => format!(
            "match {match_no}: start {} recording{} (each confirmed within {timeout})",
            names.len(),
            if names.len() == 1 { "" } else { "s" }
        ),
        Step::PlayMatch {
            match_no,
            repeat,
            practice,
            map,
            end,
            overtime,
            fraglimit,
        } => {
            let how = match end {
                MatchEnd::ServerTimelimit { minutes } => format!("{minutes}m (server timelimit)"),
                MatchEnd::Runner { after } => format!("{after} (ended by oa-run)"),
            };
            let mut s = if *practice {
                format!(
                    "match {match_no} (practice, no added latency, not analysed): play {how}, overtime up to {overtime}"
                )
            } else {
                format!("match {match_no} (repeat {repeat}): play {how}, overtime up to {overtime}")
            };
            if let Some(f) = fraglimit {
                let _ = write!(s, ", fraglimit {f}");
            }
            if let Some(m) = map {
                let _ = write!(s, ", map {m}");
            }
            s
        }
        Step::StopRecordings { match_no, timeout } => {
            format!("match {match_no}: stop recordings (files final within {timeout})")
        }
        Step::Questionnaire {
            match_no,
            items,
            timeout,
            required,
        } => format!(
            "match {match_no}: questionnaire ({} item{}: {}{}) on each present player's page; \
             wait until all have answered, at most {timeout}",
            items.len(),
            if items.len() == 1 { "" } else { "s" },
            items.join(", "),
            if *required { ", all required" } else { "" },
        ),
        Step::Teardown {
            stop_server,
            remove_latency,
            ..
        } => {
            let mut parts = vec!["stop any recording still running"];
            if *remove_latency {
                parts.push("remove the latency tree");
            }
            if *stop_server {
                parts.push("stop the server");
            }
            parts.push("finish the manifest");
            format!("teardown: {}", parts.join(", "))
        }
    }
}

fn bot_list(bots: &[String]) -> String {
    match bots.len() {
        0 => "no bots".into(),
        1 => format!("1 bot ({})", bots[0]),
        n => format!("{n} bots ({})", bots.join(", ")),
    }
}

/// `6 matches × 3 players = 18 recordings, about 16 min (plus waiting for players)`.
pub fn summary_line(plan: &Plan) -> String {
    let m = plan.matches.len();
    let p = plan.players.len();
    let secs = plan.estimate.seconds;
    let about = if secs >= 3600 {
        format!("{}h {:02}min", secs / 3600, (secs % 3600).div_ceil(60))
    } else {
        format!("{} min", secs.div_ceil(60))
    };
    format!(
        "{m} match{} × {p} player{} = {} recording{}, about {about} (plus waiting for players)",
        if m == 1 { "" } else { "es" },
        if p == 1 { "" } else { "s" },
        plan.estimate.recordings,
        if plan.estimate.recordings == 1 {
            ""
        } else {
            "s"
        },
    )
}

/// The randomisation: seed (and how to repeat it), who follows which row, which value each
/// symbol stands for.
pub fn design_text(plan: &Plan) -> String {
    use super::design::SeedSource;
    use crate::scenario::Assign;
    let d = &plan.design;
    let mut out = match d.seed_source {
        SeedSource::Scenario => format!("Design: seed {} (design.seed)", d.seed),
        SeedSource::Drawn => format!(
            "Design: seed {} (drawn; repeat this plan with --set design.seed={})",
            d.seed, d.seed
        ),
    };
    let rows: Vec<String> = plan
        .players
        .iter()
        .zip(&d.rows)
        .map(|(p, r)| format!("{}→row {}", p.label, r + 1))
        .collect();
    let _ = write!(
        out,
        "\n  players to rows ({}): {}",
        match d.assign {
            Assign::Random => "random",
            Assign::InOrder => "in order",
        },
        rows.join(", ")
    );
    let symbols: Vec<String> = d
        .symbols
        .iter()
        .enumerate()
        .map(|(j, &l)| {
            let ms = plan.latency.levels_ms.get(l as usize).copied().unwrap_or(0);
            format!("{}={ms}ms", symbol_name(j))
        })
        .collect();
    let _ = write!(
        out,
        "\n  levels to symbols ({}): {}",
        if d.shuffle_levels {
            "shuffled"
        } else {
            "as listed"
        },
        symbols.join(", ")
    );
    out
}

/// A, B, …, Z, then S27, S28, …
pub fn symbol_name(j: usize) -> String {
    match u8::try_from(j) {
        Ok(b) if b < 26 => char::from(b'A' + b).to_string(),
        _ => format!("S{}", j + 1),
    }
}

/// The whole dry-run text.
pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    let short_sha = plan
        .scenario
        .sha256
        .get(..12)
        .unwrap_or(&plan.scenario.sha256);
    let _ = writeln!(
        out,
        "Plan for {} ({}, sha256 {short_sha}…)",
        plan.scenario.name,
        plan.scenario.path.display()
    );
    if !plan.scenario.overrides.is_empty() {
        let _ = writeln!(out, "Overrides: {}", plan.scenario.overrides.join(", "));
    }
    let _ = writeln!(out, "\nSteps:");
    let width = plan.steps.len().to_string().len();
    for (i, step) in plan.steps.iter().enumerate() {
        let _ = writeln!(out, "  {:>width$}. {}", i + 1, step_line(plan, step));
        for cmd in step.tc_commands() {
            let _ = writeln!(out, "  {:>width$}    $ {cmd}", "");
        }
    }

    let _ = writeln!(out, "\n{}", design_text(plan));
    let _ = writeln!(
        out,
        "\nLatency matrix (added ms; {} order, levels {}):",
        format!("{:?}", plan.latency.order).to_lowercase(),
        plan.latency
            .levels
            .iter()
            .map(|l| match l.is_plain() {
                true => format!("{}ms", l.delay_ms()),
                false => format!("{}ms ({l})", l.delay_ms()),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let col = plan
        .players
        .iter()
        .map(|p| p.label.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let _ = write!(out, "  {:>5} {:>6}", "match", "repeat");
    for p in &plan.players {
        let _ = write!(out, "  {:>col$}", p.label);
    }
    out.push('\n');
    for m in &plan.matches {
        let repeat = if m.practice {
            "practice".to_string()
        } else {
            m.repeat.to_string()
        };
        let _ = write!(out, "  {:>5} {repeat:>6}", m.number);
        for l in &m.latency_ms {
            let _ = write!(out, "  {l:>col$}");
        }
        out.push('\n');
    }

    let _ = writeln!(
        out,
        "\nRecordings (file names without extension, on each player's PC):"
    );
    for m in &plan.matches {
        let _ = writeln!(out, "  match {:>3}: {}", m.number, m.recordings.join(", "));
    }
    if plan.players.iter().any(|p| p.seat.is_none()) {
        let _ = writeln!(
            out,
            "  (<playerN> is filled in with the player's name when they join)"
        );
    }
    let ph = super::names::RunStamp::placeholders();
    let first = plan.matches.first().map(|m| m.recordings.join(" "));
    if first.is_some_and(|n| {
        [&ph.started, &ph.run_id, &ph.date]
            .iter()
            .any(|p| n.contains(p.as_str()))
    }) {
        let _ = writeln!(
            out,
            "  (<started>, <run_id> and <date> are filled in when the run starts: its UTC start as YYYYmmddTHHMMSSZ, the first 8 hex digits of its run id, YYYY-mm-dd)"
        );
    }

    let _ = writeln!(out, "\n{}", summary_line(plan));
    let _ = writeln!(
        out,
        "This was a dry run: nothing was contacted, started or written."
    );
    out
}
