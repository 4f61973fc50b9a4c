//! The plan: the ordered list of typed steps a study consists of. `--dry-run` renders it; the
//! executor walks the same list. Nothing is simulated separately.

pub mod design;
pub mod latency;
pub mod names;
pub mod render;

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Serialize;

use crate::scenario::{
    BotGroup, Duration, LoadedScenario, OnFailure, Order, Scenario, Shaper, Split,
};

/// Version of the plan's JSON form.
pub const PLAN_FORMAT: u32 = 1;

/// Fixed cost per match beyond its timelimit: latency change, recordings confirmed started and
/// stopped (STOPPED arrives ~2 s after StopRecord), match restart. Used for the estimate only.
pub const MATCH_OVERHEAD: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub format_version: u32,
    pub tool: Tool,
    pub scenario: ScenarioRef,
    pub players: Vec<PlannedPlayer>,
    pub latency: LatencyDesign,
    /// The randomisation: seed, where it came from, and the two mappings it decided.
    pub design: design::ResolvedDesign,
    /// Every match in order, the practice match (number 0) first when there is one.
    pub matches: Vec<PlannedMatch>,
    pub steps: Vec<Step>,
    pub estimate: Estimate,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tool {
    pub name: &'static str,
    pub version: &'static str,
}

pub const TOOL: Tool = Tool {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
};

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioRef {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    /// `--set` overrides, as given.
    pub overrides: Vec<String>,
}

/// A human player as known before the run.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedPlayer {
    /// 1-based player index: seat order, else join order. The design row it follows is in
    /// `design.rows` (the same as the index with `design.assign: in_order`).
    pub index: u32,
    /// Seat name, or a placeholder such as `<player1>` until someone joins.
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seat: Option<String>,
    /// Known in advance only with seats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    pub obs_port: u16,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyDesign {
    pub order: Order,
    pub split: Split,
    pub shaper: Shaper,
    pub interface: String,
    pub levels_ms: Vec<u64>,
    /// The levels with their jitter and loss (a level is identified by its delay).
    pub levels: Vec<crate::scenario::Level>,
    /// How far a measured added latency may be from the planned one.
    pub tolerance: crate::scenario::Tolerance,
    /// What a deviation beyond it does.
    pub on_deviation: crate::scenario::OnDeviation,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedMatch {
    /// 1-based; the practice match is 0.
    pub number: u32,
    /// 1-based; 0 for the practice match.
    pub repeat: u32,
    /// The practice match: no added latency, not part of the design.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub practice: bool,
    /// Added latency per player, in player order.
    pub latency_ms: Vec<u64>,
    /// Jitter per player (ms), in player order; empty when no level has jitter or loss.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jitter_ms: Vec<u64>,
    /// Loss per player (percent), in player order; empty when no level has jitter or loss.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub loss_pct: Vec<f64>,
    /// Recording name per player, in player order (placeholders where the player is unknown).
    pub recordings: Vec<String>,
}

/// How a match is ended.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum MatchEnd {
    /// The server's own `timelimit` (whole minutes) ends it with `Exit: Timelimit hit.`.
    ServerTimelimit { minutes: u64 },
    /// oa-run ends it after the duration (the server's timelimit is off).
    Runner { after: Duration },
}

/// One step of a study, in order.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Check that everything the study needs is in place before touching anything.
    Preflight {
        checks: Vec<String>,
    },
    LaunchServer {
        binary: PathBuf,
        address: String,
        map: String,
    },
    AttachServer {
        address: String,
        log: PathBuf,
    },
    /// Wait until `count` humans are in; connect each one's OBS as they join.
    WaitForHumans {
        count: u32,
        timeout: Duration,
        by_seat: bool,
    },
    /// Build the latency tree for the players now known (all levels still zero).
    SetupLatency {
        shaper: Shaper,
        interface: String,
        split: Split,
        netem_limit: u32,
        /// The exact tc commands (players' IPs as placeholders until they join, unless seats).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tc_commands: Vec<String>,
    },
    Warmup {
        bots: Vec<String>,
        skill: u8,
        duration: Duration,
        obs_retries: u32,
        obs_connect_timeout: Duration,
    },
    /// Players whose OBS is still not connected: kick, abort or continue.
    ResolveObsFailures {
        policy: OnFailure,
    },
    /// Swap bots to the match bots (before the first match only).
    SetBots {
        bots: Vec<String>,
        skill: u8,
    },
    SetLatency {
        match_no: u32,
        latency_ms: Vec<u64>,
        /// The exact tc commands (only the leaves change between matches).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tc_commands: Vec<String>,
    },
    StartRecordings {
        match_no: u32,
        names: Vec<String>,
        timeout: Duration,
    },
    PlayMatch {
        match_no: u32,
        repeat: u32,
        /// The practice match (match 0): played and recorded, not part of the design.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        practice: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        map: Option<String>,
        end: MatchEnd,
        overtime: Duration,
        #[serde(skip_serializing_if = "Option::is_none")]
        fraglimit: Option<u32>,
    },
    StopRecordings {
        match_no: u32,
        timeout: Duration,
    },
    /// Open the match's questionnaire on every present player's page and wait until all have
    /// answered or `timeout` passes (missing answers are recorded as missing).
    Questionnaire {
        match_no: u32,
        /// The items' ids, in order.
        items: Vec<String>,
        timeout: Duration,
        required: bool,
    },
    /// Stop every recording still running, remove the latency tree, stop a launched server,
    /// finish the manifest. Also runs on error and Ctrl-C.
    Teardown {
        stop_server: bool,
        remove_latency: bool,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tc_commands: Vec<String>,
    },
}

impl Step {
    /// The tc commands this step runs (empty unless it changes latency with `shaper: tc`).
    pub fn tc_commands(&self) -> &[String] {
        match self {
            Step::SetupLatency { tc_commands, .. }
            | Step::SetLatency { tc_commands, .. }
            | Step::Teardown { tc_commands, .. } => tc_commands,
            _ => &[],
        }
    }

    /// Short kind name, as in the JSON `step` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Preflight { .. } => "preflight",
            Step::LaunchServer { .. } => "launch_server",
            Step::AttachServer { .. } => "attach_server",
            Step::WaitForHumans { .. } => "wait_for_humans",
            Step::SetupLatency { .. } => "setup_latency",
            Step::Warmup { .. } => "warmup",
            Step::ResolveObsFailures { .. } => "resolve_obs_failures",
            Step::SetBots { .. } => "set_bots",
            Step::SetLatency { .. } => "set_latency",
            Step::StartRecordings { .. } => "start_recordings",
            Step::PlayMatch { .. } => "play_match",
            Step::StopRecordings { .. } => "stop_recordings",
            Step::Questionnaire { .. } => "questionnaire",
            Step::Teardown { .. } => "teardown",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    /// Warmup plus every match with its overhead; waiting for players is not included.
    pub seconds: u64,
    pub recordings: u32,
}

/// Compile a checked scenario into its plan.
pub fn compile(loaded: &LoadedScenario) -> Result<Plan, String> {
    let s = &loaded.scenario;
    let players: Vec<PlannedPlayer> = (0..s.players.humans)
        .map(|i| {
            let seat = s.players.seats.get(i as usize);
            PlannedPlayer {
                index: i + 1,
                label: names::player_label(s, i).unwrap_or_else(|| names::placeholder(i + 1)),
                seat: seat.map(|x| x.name.clone()),
                ip: seat.map(|x| x.ip),
                obs_port: seat
                    .and_then(|x| x.obs.as_ref())
                    .and_then(|o| o.port)
                    .unwrap_or(s.obs.port),
            }
        })
        .collect();

    let d = &loaded.design;
    let mut matches = Vec::with_capacity(loaded.recording_names.len());
    // Rendered and checked once, while the scenario was validated, in the same slot order.
    let mut names = loaded.recording_names.clone().into_iter();
    let plain = s.latency.levels.iter().all(|l| l.is_plain());
    for slot in latency::slots(s) {
        let levels: Vec<crate::scenario::Level> = (0..s.players.humans)
            .map(|i| latency::slot_level(s, d, slot, i))
            .collect();
        let (jitter_ms, loss_pct) = if plain {
            (Vec::new(), Vec::new())
        } else {
            (
                levels.iter().map(|l| l.jitter_ms()).collect(),
                levels.iter().map(|l| l.loss.as_pct()).collect(),
            )
        };
        matches.push(PlannedMatch {
            number: slot.number,
            repeat: slot.repeat,
            practice: slot.practice,
            latency_ms: levels.iter().map(|l| l.delay_ms()).collect(),
            jitter_ms,
            loss_pct,
            recordings: names.next().ok_or("recording names missing")?,
        });
    }
    let n_matches = matches.len() as u32;

    let steps = steps(s, &players, &matches);
    let per_match = s.matches.timelimit.std() + MATCH_OVERHEAD;
    let practice = s
        .matches
        .practice
        .as_ref()
        .map_or(0, |p| (p.duration.std() + MATCH_OVERHEAD).as_secs());
    let real = u64::from(latency::match_count(s));
    // The questionnaire's wait counts in full: its timeout is the most it takes.
    let asking = s
        .questionnaire
        .as_ref()
        .map_or(0, |q| q.timeout.std().as_secs() * u64::from(n_matches));
    let seconds =
        s.warmup.duration.std().as_secs() + practice + per_match.as_secs() * real + asking;
    Ok(Plan {
        format_version: PLAN_FORMAT,
        tool: TOOL,
        scenario: ScenarioRef {
            name: s.name.clone(),
            path: loaded.path.clone(),
            sha256: loaded.sha256.clone(),
            overrides: loaded.overrides.iter().map(ToString::to_string).collect(),
        },
        latency: LatencyDesign {
            order: s.latency.order,
            split: s.latency.split,
            shaper: s.latency.shaper,
            interface: s.latency.interface.clone(),
            levels_ms: s.latency.levels.iter().map(|l| l.delay_ms()).collect(),
            levels: s.latency.levels.clone(),
            tolerance: s.latency.tolerance,
            on_deviation: s.latency.on_deviation,
        },
        design: loaded.design.clone(),
        estimate: Estimate {
            seconds,
            recordings: n_matches * s.players.humans,
        },
        players,
        matches,
        steps,
    })
}

fn bot_names(s: &Scenario, g: BotGroup) -> Vec<String> {
    s.bots
        .names
        .iter()
        .take(g.count as usize)
        .cloned()
        .collect()
}

fn steps(s: &Scenario, players: &[PlannedPlayer], matches: &[PlannedMatch]) -> Vec<Step> {
    let mut steps = Vec::with_capacity(4 * matches.len() + 8);
    let mut checks = vec![
        "scenario valid".to_string(),
        "output directory writable".to_string(),
    ];
    if s.server.launch.is_some() {
        checks.push("server binary present".into());
    }
    let shaper = crate::netem::resolve_shaper(s.latency.shaper).0;
    match shaper {
        Shaper::Tc => checks.push(format!(
            "tc present and permitted on {}",
            s.latency.interface
        )),
        Shaper::Nfqueue => checks.push(format!(
            "iptables present and permitted, NFQUEUE available for {}",
            s.latency.interface
        )),
        Shaper::None | Shaper::Auto => {}
    }
    if !s.players.seats.is_empty() {
        checks.push("every seat's OBS reachable".into());
    }
    steps.push(Step::Preflight { checks });
    match &s.server.launch {
        Some(l) => steps.push(Step::LaunchServer {
            binary: l.binary.clone(),
            address: s.server.address.clone(),
            map: l.map.clone(),
        }),
        None => steps.push(Step::AttachServer {
            address: s.server.address.clone(),
            log: s.server.log.clone().unwrap_or_default(),
        }),
    }
    steps.push(Step::WaitForHumans {
        count: s.players.humans,
        timeout: s.players.join_timeout,
        by_seat: !s.players.seats.is_empty(),
    });
    steps.push(Step::SetupLatency {
        shaper,
        interface: s.latency.interface.clone(),
        split: s.latency.split,
        netem_limit: s.latency.limit,
        tc_commands: crate::netem::describe_setup_commands(
            s,
            &players.iter().map(|p| p.ip).collect::<Vec<_>>(),
        ),
    });
    steps.push(Step::Warmup {
        bots: bot_names(s, s.bots.warmup),
        skill: s.bots.warmup.skill,
        duration: s.warmup.duration,
        obs_retries: s.obs.retries,
        obs_connect_timeout: s.obs.connect_timeout,
    });
    steps.push(Step::ResolveObsFailures {
        policy: s.obs.on_failure,
    });
    steps.push(Step::SetBots {
        bots: bot_names(s, s.bots.match_),
        skill: s.bots.match_.skill,
    });
    let end_for = |d: Duration| match d.whole_minutes() {
        Some(minutes) => MatchEnd::ServerTimelimit { minutes },
        None => MatchEnd::Runner { after: d },
    };
    let end = end_for(s.matches.timelimit);
    let practice_end = s.matches.practice.as_ref().map(|p| end_for(p.duration));
    let map = s.matches.map.clone();
    // A design has few distinct latency vectors (n per square), so describe each once.
    let mut tc_for: std::collections::HashMap<&[u64], Vec<String>> =
        std::collections::HashMap::new();
    for m in matches {
        steps.push(Step::SetLatency {
            match_no: m.number,
            latency_ms: m.latency_ms.clone(),
            tc_commands: tc_for
                .entry(&m.latency_ms)
                .or_insert_with(|| crate::netem::describe_match_commands(s, &m.latency_ms))
                .clone(),
        });
        steps.push(Step::StartRecordings {
            match_no: m.number,
            names: m.recordings.clone(),
            timeout: s.obs.recording.start_timeout,
        });
        steps.push(Step::PlayMatch {
            match_no: m.number,
            repeat: m.repeat,
            practice: m.practice,
            map: map.clone(),
            end: if m.practice {
                practice_end.unwrap_or(end)
            } else {
                end
            },
            overtime: s.matches.overtime,
            fraglimit: s.matches.fraglimit,
        });
        steps.push(Step::StopRecordings {
            match_no: m.number,
            timeout: s.obs.recording.stop_timeout,
        });
        if let Some(q) = &s.questionnaire {
            steps.push(Step::Questionnaire {
                match_no: m.number,
                items: q.items.iter().map(|i| i.id.clone()).collect(),
                timeout: q.timeout,
                required: q.required,
            });
        }
    }
    steps.push(Step::Teardown {
        stop_server: s.server.launch.is_some(),
        remove_latency: matches!(shaper, Shaper::Tc | Shaper::Nfqueue),
        tc_commands: crate::netem::describe_teardown_commands(s),
    });
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{SecretsMode, load_str};
    use std::collections::BTreeMap;

    const SEATED: &str = r#"
name: seated
server: { launch: {}, address: "127.0.0.1:27960", rcon_password: "${RCON}" }
players:
  humans: 2
  seats:
    - { name: pc1, ip: 10.0.0.11 }
    - { name: pc2, ip: 10.0.0.12, obs: { port: 4460 } }
warmup: { duration: 10s }
matches: { timelimit: 20s, repeats: 2 }
latency: { interface: eth0, levels: [0ms, 150ms], shaper: none }
design: { assign: in_order }
obs: { password: "${OBS}", recording: { name: "{{ seat }}_{{ match }}_{{ latency_ms }}" } }
"#;

    fn loaded(src: &str) -> LoadedScenario {
        let env: BTreeMap<String, String> =
            [("RCON".into(), "r".into()), ("OBS".into(), "o".into())].into();
        load_str("t.yaml", src, &[], &env, SecretsMode::Required).unwrap()
    }

    #[test]
    fn seats_give_resolved_names_ips_and_ports() {
        let plan = compile(&loaded(SEATED)).unwrap();
        assert_eq!(plan.players[1].label, "pc2");
        assert_eq!(plan.players[1].ip.unwrap().to_string(), "10.0.0.12");
        assert_eq!(plan.players[1].obs_port, 4460);
        assert_eq!(plan.players[0].obs_port, 4455);
        assert_eq!(plan.matches[0].recordings, vec!["pc1_1_0", "pc2_1_150"]);
        assert_eq!(plan.matches[3].recordings, vec!["pc1_4_150", "pc2_4_0"]);
        assert!(
            plan.matches
                .iter()
                .flat_map(|m| &m.recordings)
                .all(|r| !r.contains('<'))
        );
    }

    #[test]
    fn steps_are_ordered_and_runner_timed() {
        let plan = compile(&loaded(SEATED)).unwrap();
        let kinds: Vec<&str> = plan.steps.iter().map(Step::kind).collect();
        assert_eq!(
            &kinds[..7],
            [
                "preflight",
                "launch_server",
                "wait_for_humans",
                "setup_latency",
                "warmup",
                "resolve_obs_failures",
                "set_bots"
            ]
        );
        let per_match = [
            "set_latency",
            "start_recordings",
            "play_match",
            "stop_recordings",
        ];
        for (m, chunk) in kinds[7..kinds.len() - 1].chunks(4).enumerate() {
            assert_eq!(chunk, per_match, "match {}", m + 1);
        }
        assert_eq!(*kinds.last().unwrap(), "teardown");
        let Step::PlayMatch { end, .. } = &plan.steps[9] else {
            panic!()
        };
        assert_eq!(
            *end,
            MatchEnd::Runner {
                after: "20s".parse().unwrap()
            }
        );
        let Step::Teardown {
            remove_latency,
            stop_server,
            tc_commands,
        } = plan.steps.last().unwrap()
        else {
            panic!()
        };
        assert!(!remove_latency && *stop_server);
        assert!(tc_commands.is_empty(), "shaper none runs no tc");
        // 10 s warmup + 4 × (20 s + overhead).
        assert_eq!(
            plan.estimate.seconds,
            10 + 4 * (20 + MATCH_OVERHEAD.as_secs())
        );
    }

    const STUDY: &str = r#"
name: study
server: { launch: {}, address: "127.0.0.1:27960", rcon_password: "${RCON}" }
players: { humans: 4 }
warmup: { duration: 10s }
matches: { timelimit: 1m, repeats: 2, practice: { duration: 30s } }
latency: { interface: eth0, levels: [0ms, 50ms, 100ms, 150ms], shaper: none }
obs: { password: "${OBS}" }
"#;

    fn loaded_with(src: &str, sets: &[&str]) -> LoadedScenario {
        let env: BTreeMap<String, String> =
            [("RCON".into(), "r".into()), ("OBS".into(), "o".into())].into();
        let ov: Vec<_> = sets
            .iter()
            .map(|s| crate::scenario::Override::parse(s).unwrap())
            .collect();
        load_str("t.yaml", src, &ov, &env, SecretsMode::Required).unwrap()
    }

    fn matrix(p: &Plan) -> Vec<Vec<u64>> {
        p.matches.iter().map(|m| m.latency_ms.clone()).collect()
    }

    #[test]
    fn same_seed_same_plan_and_the_seed_is_in_the_plan() {
        let sets = ["design.seed=1234", "design.shuffle_levels=true"];
        let a = compile(&loaded_with(STUDY, &sets)).unwrap();
        let b = compile(&loaded_with(STUDY, &sets)).unwrap();
        assert_eq!(matrix(&a), matrix(&b));
        assert_eq!(a.design, b.design);
        assert_eq!(a.design.seed, 1234);
        assert_eq!(a.design.seed_source, design::SeedSource::Scenario);
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["design"]["seed"], 1234);
        assert_eq!(json["design"]["rows"].as_array().unwrap().len(), 4);
        // Some other seed gives another plan (the mapping is not the identity for all seeds).
        let others: Vec<_> = (0..5)
            .map(|k| {
                let seed = format!("design.seed={k}");
                matrix(&compile(&loaded_with(STUDY, &[&seed, sets[1]])).unwrap())
            })
            .collect();
        assert!(others.iter().any(|m| *m != matrix(&a)));
        // The dry run shows the seed and both mappings.
        let text = render::text(&a);
        assert!(text.contains("Design: seed 1234 (design.seed)"), "{text}");
        assert!(text.contains("levels to symbols (shuffled): A="), "{text}");
    }

    #[test]
    fn a_drawn_seed_is_drawn_once_and_reproduces_the_plan() {
        let l = loaded_with(STUDY, &[]);
        assert_eq!(l.design.seed_source, design::SeedSource::Drawn);
        let a = compile(&l).unwrap();
        let b = compile(&l).unwrap();
        assert_eq!(a.design, b.design, "compile must not draw again");
        let seed = format!("design.seed={}", a.design.seed);
        let again = compile(&loaded_with(STUDY, &[&seed])).unwrap();
        assert_eq!(matrix(&again), matrix(&a));
        assert_eq!(again.design.rows, a.design.rows);
        assert!(render::text(&a).contains(&format!("--set design.seed={}", a.design.seed)));
    }

    #[test]
    fn practice_match_comes_first_at_zero_latency_outside_the_design() {
        let plan = compile(&loaded_with(STUDY, &["design.seed=9"])).unwrap();
        assert_eq!(plan.matches.len(), 1 + 8);
        let p = &plan.matches[0];
        assert!(p.practice && p.number == 0 && p.repeat == 0);
        assert_eq!(p.latency_ms, vec![0; 4]);
        assert_eq!(p.recordings[0], "study_<started>_m0_<player1>_0ms");
        // The design's matches are still a balanced square per repeat.
        let real: Vec<&PlannedMatch> = plan.matches.iter().filter(|m| !m.practice).collect();
        assert_eq!(real[0].number, 1);
        for m in &real {
            let mut l = m.latency_ms.clone();
            l.sort();
            assert_eq!(l, vec![0, 50, 100, 150], "match {}", m.number);
        }
        // Steps: set_bots, then the practice match's four steps (latency zero, 30 s by oa-run).
        let kinds: Vec<&str> = plan.steps.iter().map(Step::kind).collect();
        let at = kinds.iter().position(|k| *k == "set_bots").unwrap();
        assert_eq!(
            &kinds[at + 1..at + 5],
            [
                "set_latency",
                "start_recordings",
                "play_match",
                "stop_recordings"
            ]
        );
        let Step::SetLatency {
            match_no,
            latency_ms,
            ..
        } = &plan.steps[at + 1]
        else {
            panic!()
        };
        assert_eq!((*match_no, latency_ms.as_slice()), (0, &[0u64; 4][..]));
        let Step::PlayMatch { practice, end, .. } = &plan.steps[at + 3] else {
            panic!()
        };
        assert!(*practice);
        assert_eq!(
            *end,
            MatchEnd::Runner {
                after: "30s".parse().unwrap()
            }
        );
        let Step::PlayMatch { practice, end, .. } = &plan.steps[at + 7] else {
            panic!()
        };
        assert!(!*practice);
        assert_eq!(*end, MatchEnd::ServerTimelimit { minutes: 1 });
        // 36 recordings; the estimate counts the practice match's 30 s.
        assert_eq!(plan.estimate.recordings, 36);
        assert_eq!(
            plan.estimate.seconds,
            10 + (30 + MATCH_OVERHEAD.as_secs()) + 8 * (60 + MATCH_OVERHEAD.as_secs())
        );
        let text = render::text(&plan);
        assert!(
            text.contains("match 0 (practice, no added latency, not analysed)"),
            "{text}"
        );
    }

    #[test]
    fn a_questionnaire_is_a_step_after_every_match_and_counts_in_the_estimate() {
        let src = STUDY.replace(
            "obs: { password: \"${OBS}\" }",
            "obs: { password: \"${OBS}\" }\nlive: { listen: 127.0.0.1:0 }\n\
             questionnaire: { timeout: 20s, items: [{ id: quality, prompt: How was it?, kind: likert }] }",
        );
        let plan = compile(&loaded_with(&src, &["design.seed=1"])).unwrap();
        let kinds: Vec<&str> = plan.steps.iter().map(Step::kind).collect();
        let asked: Vec<u32> = plan
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Questionnaire { match_no, .. } => Some(*match_no),
                _ => None,
            })
            .collect();
        assert_eq!(asked, (0..=8).collect::<Vec<_>>(), "the practice match too");
        for (i, k) in kinds.iter().enumerate() {
            if *k == "questionnaire" {
                assert_eq!(kinds[i - 1], "stop_recordings");
            }
        }
        assert_eq!(
            plan.estimate.seconds,
            10 + (30 + MATCH_OVERHEAD.as_secs()) + 8 * (60 + MATCH_OVERHEAD.as_secs()) + 9 * 20
        );
        let text = render::text(&plan);
        assert!(
            text.contains("match 1: questionnaire (1 item: quality) on each present player's page; wait until all have answered, at most 20s"),
            "{text}"
        );
    }
}
