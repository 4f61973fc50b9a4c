//! The executor: walks the compiled plan step by step (the same plan the dry run prints),
//! driving the server ([`crate::arena`]), every player's OBS ([`crate::obs`]) and the latency
//! tree ([`crate::netem`]).
//!
//! It decides from the plan alone and tells what happens only as [`RunEvent`]s into the
//! [`Hub`]: the manifest, the console, the progress bars and the live side are subscribers
//! there, never called from the step code.
//!
//! Cleanup is one routine ([`Exec::teardown`]) that runs at the end, on any error and on the
//! first Ctrl-C/SIGTERM: stop every recording (waiting for the files), remove the latency tree,
//! stop a launched server. A second signal runs the synchronous best-effort hooks registered
//! here and exits at once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::console::ConsoleSink;
use super::events::{RecordingPhase, RunEvent};
use super::hub::{Hub, HubHandle, ManifestSink, Sink};
use super::state::{RunState, final_status};
use super::webhooks::{Policy, WebhookSink};
use crate::arena::stats::MatchStats;
use crate::arena::{Arena, ArenaEvent, MatchOutcome, MatchSpec, Player as ArenaPlayer};
use crate::error::{Error, exit};
use crate::manifest::{
    Manifest, ManifestWriter, MatchEdge, ObsRecord, RunDir, RunStatus, ShapingRecord, Timestamp,
};
use crate::measure;
use crate::netem::{self, LatencyShaper, SetupOptions, SystemRunner};
use crate::obs::health::{HealthIssue, Watch};
use crate::obs::{Fleet, IfActive, ObsClient, ObsConfig, ObsError, ObsEvent, ObsTarget};
use crate::plan::names::{RunStamp, resolve};
use crate::plan::{Plan, Step, render};
use crate::run::signals::{HookGuard, Shutdown};
use crate::scenario::{IfRecording, LoadedScenario, OnFailure, OnLost, Scenario, Shaper};

/// How long the end of a run waits for queued webhook deliveries.
const SETTLE: Duration = Duration::from_secs(10);

/// How a run ended, for the CLI.
#[derive(Debug)]
pub struct RunOutcome {
    pub exit_code: u8,
    pub manifest_path: PathBuf,
    pub summary: String,
}

/// Options not in the scenario.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue an earlier run (`oa-run resume`): skip its completed matches.
    pub resume: Option<super::resume::ResumePoint>,
    /// Replace a root qdisc on the interface that oa-run did not create.
    pub force_latency: bool,
    /// Leaf qdiscs of the latency tree. Always netem in a study; pfifo (same tree, no delay)
    /// only lets the tests run the real tc path on kernels without sch_netem.
    pub leaf: netem::LeafKind,
    /// Where the questionnaire's answer pages hand in answers (the live view serves them);
    /// without it a questionnaire step records every answer as missing.
    pub questionnaire: Option<super::questionnaire::Desk>,
}

/// Timings worth reporting (told as one event at the end of a run).
#[derive(Debug, Default)]
struct Timings {
    /// Per player: from the join line to its OBS connected.
    join_to_obs: Vec<(u32, Duration)>,
    /// Per match: from the match's end to every recording stopped (files final).
    end_to_stopped: Vec<(u32, Duration)>,
    /// Per match: spread of the STARTED confirmations' arrival.
    start_spread_ms: Vec<(u32, f64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    Active,
    Left,
    Kicked,
}

/// A player's (slot, IP) to confirm with `status` before contacting their OBS (no seats).
type Confirm = (u8, IpAddr);

/// A human taking part in the study: what the executor needs to decide (the run's record of
/// them is the state's, built from the events).
#[derive(Debug, Clone)]
struct StudyPlayer {
    /// 1-based row of the latency design.
    index: u32,
    slot: u8,
    /// Unique and file-safe: the seat name, else the player's cleaned name (with the slot added
    /// when two players share one).
    label: String,
    ip: IpAddr,
    joined: Instant,
    presence: Presence,
    obs_ok: bool,
    /// Why their OBS is not connected, when it failed.
    obs_error: Option<String>,
    recording: bool,
}

/// The subscribers a caller adds to a run beside the manifest and the console (the live
/// server, metrics, webhooks).
pub type ExtraSinks = Vec<Box<dyn Sink>>;

/// Run a checked, compiled study. Returns Ok with the exit code for completed/failed/interrupted
/// runs (the manifest says which); Err only when not even a run directory could be made.
pub async fn execute(
    loaded: &LoadedScenario,
    plan: &Plan,
    shutdown: &Shutdown,
    opts: RunOptions,
) -> Result<RunOutcome, Error> {
    execute_with(loaded, plan, shutdown, opts, |_| Vec::new()).await
}

/// [`execute`], with extra subscribers made from the hub's handle once the run directory and
/// manifest exist (before the first event).
pub async fn execute_with(
    loaded: &LoadedScenario,
    plan: &Plan,
    shutdown: &Shutdown,
    opts: RunOptions,
    extra: impl FnOnce(&HubHandle) -> ExtraSinks,
) -> Result<RunOutcome, Error> {
    let s = &loaded.scenario;
    let run_dir = RunDir::create(&s.output.dir, &s.name, Timestamp::now())?;
    if let Err(e) = crate::logging::attach_file(&run_dir.log_path()) {
        warn!("cannot write {}: {e}", run_dir.log_path().display());
    }
    let mut manifest = Manifest::from_plan(loaded, plan, &run_dir);
    let stamp = RunStamp::new(&manifest.run_id, &manifest.started_at);
    let writer = ManifestWriter::create(run_dir.path(), &mut manifest)?;
    let manifest_path = writer.path().to_path_buf();
    info!("run directory {}", run_dir.path().display());

    // Manifest writes go through this gate; the forced-exit hook closes it (true) so nothing
    // the executor writes afterwards can overwrite the hook's final status.
    let write_gate: Arc<Mutex<bool>> = Arc::new(Mutex::new(false));
    let mut hub = Hub::new(
        RunState::new(manifest),
        vec![
            Box::new(ManifestSink::new(writer, write_gate.clone())),
            Box::new(ConsoleSink::new(plan.steps.len())),
        ],
    );
    for sink in extra(&hub.handle()) {
        hub.add_sink(sink);
    }
    let mut webhook_errors = Vec::new();
    for (i, n) in s.notify.iter().enumerate() {
        match WebhookSink::start(i as u32, n, hub.handle(), Policy::default()) {
            Ok(sink) => hub.add_sink(Box::new(sink)),
            // Validation rejects such URLs; told as a warning once the stream runs.
            Err(e) => webhook_errors.push(e),
        }
    }

    let shaper: Arc<Mutex<Option<LatencyShaper>>> = Arc::new(Mutex::new(None));
    let server_pid: Arc<Mutex<Option<u32>>> = Arc::new(Mutex::new(None));
    let _hook = force_exit_hook(
        shutdown,
        &shaper,
        &server_pid,
        &write_gate,
        hub.handle(),
        manifest_path.clone(),
    );

    let mut ex = Exec {
        peers: s,
        plan,
        hub,
        run_dir,
        arena: None,
        events: None,
        fleet: Fleet::new(obs_config(plan)),
        connecting: JoinSet::new(),
        connecting_for: BTreeSet::new(),
        shaper,
        server_pid,
        players: Vec::new(),
        timings: Timings::default(),
        match_no: 0,
        match_ended: None,
        match_stats: None,
        watches: BTreeMap::new(),
        replays: Vec::new(),
        fatal: None,
        opts,
        stamp,
        measuring: Measuring::default(),
    };
    ex.hub.emit(RunEvent::RunStarted {
        study: s.name.clone(),
        run_dir: ex.run_dir.path().to_path_buf(),
        steps: plan.steps.len() as u32,
        matches: plan.matches.len() as u32,
        humans: plan.players.len() as u32,
    });
    if let Some(r) = &ex.opts.resume {
        ex.hub.emit(RunEvent::Resumed {
            from: r.from.clone(),
        });
    }
    for message in webhook_errors {
        ex.hub.emit(RunEvent::Warning {
            message,
            player: None,
            match_no: None,
        });
    }

    let result = ex.walk(shutdown).await;
    if let Err(e) = &result {
        warn!("{e}; cleaning up");
        ex.hub.emit(RunEvent::Stopping {
            reason: e.to_string(),
            interrupted: matches!(e, Error::Interrupted),
        });
    }
    let clean = ex.teardown().await;
    ex.timings_event();
    ex.hub.emit(RunEvent::RunFinished {
        status: final_status(&result, shutdown.signal().map(|s| s.to_string())),
    });
    // Webhook deliveries of the last events, within a bound (a dead webhook cannot hold the
    // run's end for longer).
    ex.hub.settle(SETTLE).await;
    let write = ex.hub.take_error();
    crate::logging::detach_file();
    write?;

    let state = ex.hub.state();
    let failed_recordings = state
        .manifest
        .recordings
        .iter()
        .filter(|r| r.error.is_some())
        .count();
    let exit_code = match &result {
        Ok(()) if clean && failed_recordings == 0 => exit::OK,
        Ok(()) => exit::RUN_FAILED,
        Err(e) => e.exit_code(),
    };
    Ok(RunOutcome {
        exit_code,
        manifest_path,
        summary: state.manifest.summary(),
    })
}

fn force_exit_hook(
    shutdown: &Shutdown,
    shaper: &Arc<Mutex<Option<LatencyShaper>>>,
    server_pid: &Arc<Mutex<Option<u32>>>,
    write_gate: &Arc<Mutex<bool>>,
    hub: HubHandle,
    manifest_path: PathBuf,
) -> HookGuard {
    let shaper = shaper.clone();
    let server_pid = server_pid.clone();
    let write_gate = write_gate.clone();
    shutdown.on_force_exit(move || {
        // try_lock: the executor may hold it mid-command; then Drop at exit cannot run, so
        // fall back to removing the tree by interface.
        match shaper.try_lock() {
            Ok(mut g) => {
                if let Some(mut sh) = g.take() {
                    let _ = sh.teardown();
                }
            }
            Err(_) => {
                eprintln!("oa-run: latency tree may remain; run `oa-run net-reset --interface IF`")
            }
        }
        if let Some(pid) = server_pid.lock().ok().and_then(|g| *g) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // The state first (the hub holds it only while it folds an event), then the gate:
        // a sink holds the state while it waits for the gate, never the other way round.
        let mut m = hub.read().state.manifest.clone();
        // Held until the process exits: the executor cannot write after this.
        let mut closed = write_gate.lock().unwrap_or_else(|e| e.into_inner());
        *closed = true;
        m.set_status(RunStatus::Interrupted {
            signal: Some("second signal".into()),
            reason: "forced exit; recordings may still be running on the players' OBS".into(),
        });
        if let Some(dir) = manifest_path.parent() {
            let _ = ManifestWriter::reopen(dir).write(&mut m);
        }
    })
}

struct Exec<'a> {
    /// Only how to reach the peers (addresses, passwords), which the printable, secret-free
    /// plan does not carry. Every decision comes from `plan`.
    peers: &'a Scenario,
    plan: &'a Plan,
    hub: Hub,
    run_dir: RunDir,
    arena: Option<Arc<Arena>>,
    events: Option<broadcast::Receiver<ArenaEvent>>,
    fleet: Fleet,
    /// OBS connections under way: (player index, result), and which indices they are for.
    connecting: JoinSet<(u32, Result<Connected, ObsError>)>,
    connecting_for: BTreeSet<u32>,
    shaper: Arc<Mutex<Option<LatencyShaper>>>,
    server_pid: Arc<Mutex<Option<u32>>>,
    players: Vec<StudyPlayer>,
    timings: Timings,
    /// The match the current step belongs to (0 before the first).
    match_no: u32,
    /// When the last match ended (for end → recordings final).
    match_ended: Option<(u32, Instant)>,
    /// What the players do in the match being played, from the server's log (its number).
    match_stats: Option<(u32, MatchStats)>,
    /// The running recordings' health watches, by player.
    watches: BTreeMap<u32, Watched>,
    /// Matches to play again at the end (`obs.on_lost: replay`), each once.
    replays: Vec<u32>,
    /// Something found outside a step's own flow that must stop the study (an OBS already
    /// recording with `obs.if_recording: abort`).
    fatal: Option<Error>,
    opts: RunOptions,
    /// This run's values for the names' `<started>`, `<run_id>`, `<date>`.
    stamp: RunStamp,
    /// The latency measurement of the warmup or match being played.
    measuring: Measuring,
}

/// What the run knows of the latency the players really had (see [`crate::measure`]).
#[derive(Default)]
struct Measuring {
    /// Collect the server's pings reported at or after this time (`None`: not collecting).
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Pings of the phase being collected, by player index.
    pings: BTreeMap<u32, measure::Samples>,
    /// Each player's ping with no added delay (the warmup's, else the practice match's).
    baseline: BTreeMap<u32, measure::Stats>,
    /// The added latency planned for the match being played, in player order, and whether the
    /// shaper really applied it (with `shaper: none` nothing is judged).
    planned: Vec<u64>,
    applied: bool,
    /// The path's ICMP round trip per player, probed while the match runs.
    icmp: Vec<tokio::task::JoinHandle<(u32, Option<measure::Stats>)>>,
    /// A deviation with `latency.on_deviation: abort`: the study stops once the match's
    /// recordings are final.
    abort: Option<Error>,
}

/// An OBS connection, with what was found on it.
struct Connected {
    client: ObsClient,
    /// Free space on its recording drive, MiB.
    free_mb: Option<u64>,
    /// It was already recording (not this study's recording).
    foreign: Option<Foreign>,
}

enum Foreign {
    /// `obs.if_recording: stop`: stopped, with the file OBS finished.
    Stopped(Option<String>),
    StopFailed(ObsError),
    /// `obs.if_recording: abort`: left alone.
    Running,
}

/// One running recording's health watch and its OBS's event feed.
struct Watched {
    watch: Watch,
    events: broadcast::Receiver<ObsEvent>,
    client: ObsClient,
    since: Instant,
}

/// ICMP echoes per player and match for the path's base round trip (0.2 s apart).
const ICMP_PROBES: u32 = 5;
/// The most one player's ICMP probe may take (it runs beside the match).
const ICMP_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a running recording's OBS is asked for its stats.
const HEALTH_POLL: Duration = Duration::from_secs(2);
/// How long one such question may take: the match loop waits for the answers, and a drop
/// must still be judged on time.
const HEALTH_ASK: Duration = Duration::from_millis(800);

impl Exec<'_> {
    async fn walk(&mut self, shutdown: &Shutdown) -> Result<(), Error> {
        let steps = &self.plan.steps;
        for (i, step) in steps.iter().enumerate() {
            let started = RunEvent::StepStarted {
                index: i as u32,
                kind: step.kind().to_string(),
                match_no: step_match(step),
                description: render::step_line(self.plan, step),
                duration_s: match step {
                    Step::Warmup { duration, .. } => Some(duration.std().as_secs_f64()),
                    _ => None,
                },
            };
            if matches!(step, Step::Teardown { .. }) {
                self.replay_lost(shutdown).await?;
                // Teardown runs after the loop, also on error.
                self.hub.emit(started);
                break;
            }
            shutdown.check()?;
            if let Some(m) = step_match(step) {
                // Resumed: matches completed by the earlier run are not played again.
                if self
                    .opts
                    .resume
                    .as_ref()
                    .is_some_and(|r| m < r.from.from_match)
                {
                    continue;
                }
                self.match_no = m;
            }
            self.hub.emit(started);
            self.hub.take_error()?;
            let r = tokio::select! {
                r = self.step(i, step) => r,
                sig = shutdown.requested() => {
                    warn!("{sig}: stopping the study");
                    Err(Error::Interrupted)
                }
            };
            let r = r.and_then(|()| self.check_fatal());
            self.hub.emit(RunEvent::StepFinished {
                index: i as u32,
                error: r.as_ref().err().map(ToString::to_string),
            });
            self.hub.take_error()?;
            r?;
        }
        Ok(())
    }

    fn arena(&self) -> Result<Arc<Arena>, Error> {
        self.arena
            .clone()
            .ok_or_else(|| Error::Internal("server step before the server was started".into()))
    }

    async fn step(&mut self, index: usize, step: &Step) -> Result<(), Error> {
        match step {
            Step::Preflight { .. } => self.preflight().await,
            Step::LaunchServer { .. } | Step::AttachServer { .. } => self.start_server().await,
            Step::WaitForHumans { count, timeout, .. } => {
                self.wait_for_humans(*count, timeout.std()).await
            }
            Step::SetupLatency {
                shaper, interface, ..
            } => self.setup_latency(*shaper, interface),
            Step::Warmup {
                bots,
                skill,
                duration,
                obs_retries,
                obs_connect_timeout,
            } => {
                let budget = obs_connect_timeout.std() * (obs_retries + 1);
                self.warmup(bots, *skill, duration.std(), budget).await
            }
            Step::ResolveObsFailures { policy } => self.resolve_obs_failures(*policy).await,
            Step::SetBots { bots, skill } => {
                let slots = self.arena()?.set_bots(bots, *skill).await?;
                self.hub.emit(bots_set(bots, &slots, *skill));
                Ok(())
            }
            Step::SetLatency {
                match_no,
                latency_ms,
                ..
            } => self.set_latency(*match_no, latency_ms),
            Step::StartRecordings {
                match_no, names, ..
            } => {
                // The next step is this match's PlayMatch: set its limits now, so starting it
                // later is a single rcon command right after the recordings are confirmed.
                if let Some(spec) = self
                    .plan
                    .steps
                    .get(index + 1)
                    .and_then(MatchSpec::from_step)
                {
                    self.arena()?.prepare_match(&spec).await?;
                }
                self.start_recordings(*match_no, names).await
            }
            Step::PlayMatch { match_no, .. } => {
                let spec = MatchSpec::from_step(step).expect("a PlayMatch step");
                self.play_match(*match_no, &spec).await
            }
            Step::StopRecordings { match_no, .. } => {
                self.stop_recordings(*match_no).await?;
                // A deviation under `on_deviation: abort` stops the study here, with the
                // match's recordings final.
                match self.measuring.abort.take() {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            }
            Step::Questionnaire {
                match_no, timeout, ..
            } => self.questionnaire(*match_no, timeout.std()).await,
            Step::Teardown { .. } => Ok(()),
        }
    }

    /// The plan's latency setup step (absent: no shaping).
    fn planned_shaper(&self) -> Option<(Shaper, &str)> {
        self.plan.steps.iter().find_map(|s| match s {
            Step::SetupLatency {
                shaper, interface, ..
            } => Some((*shaper, interface.as_str())),
            _ => None,
        })
    }

    async fn preflight(&mut self) -> Result<(), Error> {
        for step in &self.plan.steps {
            if let Step::LaunchServer { binary, .. } = step
                && !binary.exists()
            {
                return Err(Error::Unavailable(format!(
                    "the server program {} is not installed (apt-get install openarena-server)",
                    binary.display()
                )));
            }
        }
        if let Some((Shaper::Tc | Shaper::Nfqueue, interface)) = self.planned_shaper() {
            // Fail before anyone sits down: tc (or iptables and NFQUEUE) present, permitted,
            // interface there and free, netem available. (Setup repeats the ownership checks
            // under the lock.)
            let bad: Vec<String> = netem::check_rows(self.peers)
                .into_iter()
                .filter(|r| !(r.ok || self.opts.force_latency && r.target == interface))
                // Tests with pfifo leaves need no netem.
                .filter(|r| !(self.opts.leaf == netem::LeafKind::Pfifo && r.target == "netem"))
                .map(|r| {
                    let d: Vec<String> =
                        r.details.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{} {}: {}", r.component, r.target, d.join(" "))
                })
                .collect();
            if !bad.is_empty() {
                return Err(Error::Unavailable(format!(
                    "latency shaping cannot work here ({}); fix it, or set latency.shaper: none to run without shaping",
                    bad.join("; ")
                )));
            }
        }
        // With seats, every OBS is known before anyone arrives: connect them all now.
        for (i, target) in ObsTarget::for_seats(self.peers).into_iter().enumerate() {
            self.spawn_connect(i as u32 + 1, target, None);
        }
        if let Some(w) = crate::obs::seats_warning(self.peers) {
            self.hub.emit(RunEvent::Warning {
                message: w.to_string(),
                player: None,
                match_no: None,
            });
        }
        Ok(())
    }

    async fn start_server(&mut self) -> Result<(), Error> {
        let arena = Arena::start(self.peers, self.run_dir.path()).await?;
        *self.server_pid.lock().unwrap_or_else(|e| e.into_inner()) = arena.info.pid;
        let files = arena.info.files.as_ref();
        self.hub.emit(RunEvent::ServerStarted {
            pid: arena.info.pid,
            stderr_log: files.map(|f| f.stderr_log.clone()),
            games_log: files.map(|f| f.games_log.clone()),
        });
        self.events = Some(arena.subscribe());
        self.arena = Some(Arc::new(arena));
        Ok(())
    }

    /// `confirm`: without seats, the player's (slot, IP) that a fresh `status` must confirm
    /// before the OBS password is sent there ([`Arena::confirm_ip`]).
    fn spawn_connect(&mut self, index: u32, target: ObsTarget, confirm: Option<Confirm>) {
        if !self.connecting_for.insert(index) {
            return;
        }
        let cfg = obs_config(self.plan);
        let if_recording = self.peers.obs.if_recording;
        let arena = confirm.and(self.arena.clone());
        self.connecting.spawn(async move {
            let r = async {
                if let (Some(a), Some((slot, ip))) = (arena, confirm) {
                    a.confirm_ip(slot, ip)
                        .await
                        .map_err(|e| ObsError::NotContacted {
                            addr: target.addr(),
                            reason: e.to_string(),
                        })?;
                }
                let client = ObsClient::connect(target, cfg).await?;
                let free_mb = client
                    .stats()
                    .await
                    .ok()
                    .map(|s| s.available_disk_space_mb.max(0.0) as u64);
                // A recording this study did not start (a crashed run's, a manual one).
                let foreign = match client.record_status().await {
                    Ok(st) if st.output_active => Some(match if_recording {
                        IfRecording::Abort => Foreign::Running,
                        IfRecording::Stop => match client.stop_recording().await {
                            Ok(stopped) => Foreign::Stopped(stopped.path),
                            Err(e) => Foreign::StopFailed(e),
                        },
                    }),
                    _ => None,
                };
                Ok(Connected {
                    client,
                    free_mb,
                    foreign,
                })
            }
            .await;
            (index, r)
        });
    }

    fn obs_event(&self, index: u32, client: &ObsClient, after_join: Option<Duration>) -> RunEvent {
        let mut obs = ObsRecord {
            host: Some(client.target().host.clone()),
            port: client.target().port,
            ..Default::default()
        };
        client.server_info().fill(&mut obs);
        RunEvent::ObsConnected {
            player: index,
            obs,
            after_join_ms: after_join.map(|d| d.as_millis() as u64),
        }
    }

    /// An OBS connection finished (success or failure after its retries).
    fn obs_connected(&mut self, index: u32, r: Result<Connected, ObsError>) {
        self.connecting_for.remove(&index);
        match r {
            Ok(Connected {
                client,
                free_mb,
                foreign,
            }) => {
                let after_join = self.players.iter_mut().find(|p| p.index == index).map(|p| {
                    p.obs_ok = true;
                    p.obs_error = None;
                    p.joined.elapsed()
                });
                if let Some(d) = after_join {
                    self.timings.join_to_obs.push((index, d));
                }
                let ev = self.obs_event(index, &client, after_join);
                self.hub.emit(ev);
                let min = self.peers.obs.min_free_disk.mb;
                if let Some(free) = free_mb
                    && free < min
                {
                    self.hub.emit(RunEvent::Warning {
                        message: format!(
                            "the OBS at {} has only {free} MB free on its recording drive (obs.min_free_disk: {})",
                            client.addr(),
                            self.peers.obs.min_free_disk
                        ),
                        player: Some(index),
                        match_no: None,
                    });
                }
                match foreign {
                    None => {}
                    Some(Foreign::Stopped(path)) => self.hub.emit(RunEvent::Warning {
                        message: format!(
                            "the OBS at {} was already recording ({}), a recording this study did not start; stopped it (obs.if_recording: stop)",
                            client.addr(),
                            crate::term::escape(path.as_deref().unwrap_or("path unknown"))
                        ),
                        player: Some(index),
                        match_no: None,
                    }),
                    Some(Foreign::StopFailed(e)) => {
                        self.fatal.get_or_insert(Error::Unavailable(format!(
                            "the OBS at {} is recording something this study did not start, and stopping it failed: {e}",
                            client.addr()
                        )));
                    }
                    Some(Foreign::Running) => {
                        // Not ours: kept out of the fleet, so cleanup does not touch it either.
                        let addr = client.addr().to_string();
                        tokio::spawn(async move { client.close().await });
                        self.fatal.get_or_insert(Error::Unavailable(format!(
                            "the OBS at {} is already recording, a recording this study did not start (a crashed run's, or someone's by hand); \
                             nothing was touched. Stop it in OBS, or set obs.if_recording: stop to have oa-run stop it first",
                            addr
                        )));
                        return;
                    }
                }
                self.fleet.insert(client);
            }
            Err(e) => {
                if let Some(p) = self.players.iter_mut().find(|p| p.index == index) {
                    p.obs_error = Some(e.to_string());
                }
                self.hub.emit(RunEvent::ObsFailed {
                    player: index,
                    error: e.to_string(),
                });
            }
        }
    }

    /// A stop found outside the step's own flow (see `fatal`).
    fn check_fatal(&mut self) -> Result<(), Error> {
        match self.fatal.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Handle server events that arrived since the last look: leaves, late joiners (not part
    /// of the study; recorded), the server exiting.
    async fn drain_events(&mut self) -> Result<(), Error> {
        let Some(rx) = self.events.as_mut() else {
            return Ok(());
        };
        let mut evs = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(ev) => evs.push(ev),
                Err(broadcast::error::TryRecvError::Lagged(n)) => warn!("missed {n} server events"),
                Err(_) => break,
            }
        }
        for ev in evs {
            if let ArenaEvent::Pings { at, pings } = &ev {
                self.collect_pings(*at, pings);
                // Not a log event: the stats must not see it between a kill and its kick.
                continue;
            }
            if let Some((_, st)) = self.match_stats.as_mut() {
                st.apply(&ev, chrono::Utc::now());
            }
            match ev {
                ArenaEvent::Joined { player } if player.is_human() => {
                    self.hub.emit(RunEvent::Outsider {
                        slot: player.slot,
                        name: player.name.clone(),
                        ip: player.ip,
                        reason: "joined after the study started".into(),
                    });
                }
                ArenaEvent::Left { player } => self.player_left(&player).await,
                ArenaEvent::ServerExited { status } => {
                    return Err(Error::RunFailed(format!("the server exited ({status})")));
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn player_left(&mut self, who: &ArenaPlayer) {
        let Some(p) = self
            .players
            .iter_mut()
            .find(|p| p.slot == who.slot && p.presence == Presence::Active)
        else {
            return;
        };
        p.presence = Presence::Left;
        let (index, label, recording) = (p.index, p.label.clone(), p.recording);
        p.recording = false;
        self.watches.remove(&index);
        self.hub.emit(RunEvent::PlayerLeft {
            player: index,
            slot: who.slot,
            before_study: false,
        });
        if recording && let Some(report) = self.fleet.stop_one(&label).await {
            self.record_stop(index, self.match_no, &report);
        }
    }

    /// Assign a joining human to the study: by seat IP with seats, else in join order.
    fn admit(&mut self, p: &ArenaPlayer, count: u32) -> Option<u32> {
        let ip = p.ip?;
        if self
            .players
            .iter()
            .any(|x| x.slot == p.slot && x.presence == Presence::Active)
        {
            return None;
        }
        let by_seat = self
            .plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::WaitForHumans { by_seat: true, .. }));
        let (index, seat) = if !by_seat {
            let taken: Vec<u32> = self
                .players
                .iter()
                .filter(|x| x.presence == Presence::Active)
                .map(|x| x.index)
                .collect();
            // Resumed without seats: each earlier player keeps their row (by address); a new
            // address takes a row nobody had.
            let rows = self.opts.resume.as_ref().map(|r| &r.rows_by_ip);
            let index = match rows.and_then(|r| r.get(&ip)) {
                Some(&i) if !taken.contains(&i) => i,
                Some(_) => return None,
                None => (1..=count).find(|i| {
                    !taken.contains(i) && !rows.is_some_and(|r| r.values().any(|v| v == i))
                })?,
            };
            (index, None)
        } else {
            let planned = self.plan.players.iter().find(|x| x.ip == Some(ip))?;
            let i = planned.index;
            if i > count
                || self
                    .players
                    .iter()
                    .any(|x| x.index == i && x.presence == Presence::Active)
            {
                return None;
            }
            (i, planned.seat.clone())
        };
        let mut label = seat.clone().unwrap_or_else(|| p.file_name.clone());
        if self.players.iter().any(|x| x.label == label) {
            label = format!("{label}_slot{}", p.slot);
        }
        self.players.retain(|x| x.index != index);
        self.players.push(StudyPlayer {
            index,
            slot: p.slot,
            label: label.clone(),
            ip,
            joined: Instant::now(),
            presence: Presence::Active,
            obs_ok: false,
            obs_error: None,
            recording: false,
        });
        self.hub.emit(RunEvent::PlayerJoined {
            player: index,
            label: label.clone(),
            slot: p.slot,
            ip,
            seat,
            name: p.name.clone(),
            name_raw: p.name_raw.clone(),
            obs_port: self.obs_port(index),
        });
        // Connect their OBS at once (with seats it may already be connected from preflight).
        if let Some(client) = self.fleet.client(&label).cloned() {
            if let Some(sp) = self.players.iter_mut().find(|x| x.index == index) {
                sp.obs_ok = true;
            }
            self.timings.join_to_obs.push((index, Duration::ZERO));
            let ev = self.obs_event(index, &client, Some(Duration::ZERO));
            self.hub.emit(ev);
        } else if let Some(sp) = self.players.iter().find(|x| x.index == index) {
            let target = self.target_for(sp);
            let confirm = self.peers.players.seats.is_empty().then_some((p.slot, ip));
            self.spawn_connect(index, target, confirm);
        }
        Some(index)
    }

    fn obs_port(&self, index: u32) -> u16 {
        self.plan
            .players
            .get(index as usize - 1)
            .map(|p| p.obs_port)
            .unwrap_or(self.peers.obs.port)
    }

    fn active(&self) -> impl Iterator<Item = &StudyPlayer> {
        self.players
            .iter()
            .filter(|p| p.presence == Presence::Active)
    }

    async fn wait_for_humans(&mut self, count: u32, timeout: Duration) -> Result<(), Error> {
        // Consume the executor's own event queue, so joins handled here are not seen again
        // later as late joiners.
        let mut rx = self.events.take().ok_or_else(|| {
            Error::Internal("waiting for players before the server started".into())
        })?;
        let r = self.wait_for_humans_on(&mut rx, count, timeout).await;
        self.events = Some(rx);
        r
    }

    async fn wait_for_humans_on(
        &mut self,
        rx: &mut broadcast::Receiver<ArenaEvent>,
        count: u32,
        timeout: Duration,
    ) -> Result<(), Error> {
        let arena = self.arena()?;
        // Humans already on the server (attach mode, or quick joiners) count too.
        for p in arena.roster().humans().cloned().collect::<Vec<_>>() {
            if p.ip.is_some() {
                self.admit(&p, count);
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            self.check_fatal()?;
            let present = self.active().count() as u32;
            if present >= count {
                info!("{count} humans present");
                return Ok(());
            }
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(ArenaEvent::Joined { player }) if player.is_human() => {
                        if self.admit(&player, count).is_none() {
                            self.hub.emit(RunEvent::Outsider {
                                slot: player.slot,
                                name: player.name.clone(),
                                ip: player.ip,
                                reason: "no free seat, or an address that is not a seat's".into(),
                            });
                        }
                    }
                    Ok(ArenaEvent::Left { player }) => {
                        if let Some(p) = self.players.iter_mut().find(|p| p.slot == player.slot && p.presence == Presence::Active) {
                            // Before the study starts a leaver simply frees their place.
                            p.presence = Presence::Left;
                            let index = p.index;
                            self.hub.emit(RunEvent::PlayerLeft { player: index, slot: player.slot, before_study: true });
                        }
                    }
                    Ok(ArenaEvent::ServerExited { status }) => {
                        return Err(Error::RunFailed(format!("the server exited ({status})")));
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Missed events: the roster is the truth.
                        for p in arena.roster().humans().cloned().collect::<Vec<_>>() {
                            self.admit(&p, count);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(Error::RunFailed("the server's event stream ended".into()));
                    }
                },
                Some(done) = self.connecting.join_next(), if !self.connecting.is_empty() => {
                    if let Ok((index, r)) = done {
                        self.obs_connected(index, r);
                    }
                }
                _ = tick.tick() => self.hub.tick(),
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Error::RunFailed(format!(
                        "only {present} of {count} humans joined within {}",
                        crate::scenario::Duration::from(timeout)
                    )));
                }
            }
        }
    }

    fn setup_latency(&mut self, shaper: Shaper, interface: &str) -> Result<(), Error> {
        let mut players: Vec<netem::Player> = self
            .active()
            .map(|p| netem::Player {
                index: p.index,
                ip: p.ip,
            })
            .collect();
        // In the design's order, whoever joined first: the tree and its record read the same
        // for every run of the study.
        players.sort_by_key(|p| p.index);
        let opts = SetupOptions {
            force: self.opts.force_latency,
            leaf: self.opts.leaf,
            game_port: netem::game_port(self.peers),
        };
        // The plan's shaper is the scenario's with `auto` resolved, and its interface the
        // scenario's; the shaper takes the whole latency section for the tree's parameters.
        debug_assert_eq!(
            (shaper, interface),
            (
                netem::resolve_shaper(self.peers.latency.shaper).0,
                self.peers.latency.interface.as_str()
            )
        );
        let sh = LatencyShaper::setup(
            &self.peers.latency,
            &players,
            opts,
            Box::new(SystemRunner::new()),
        )?;
        *self.shaper.lock().unwrap_or_else(|e| e.into_inner()) = Some(sh);
        Ok(())
    }

    async fn warmup(
        &mut self,
        bots: &[String],
        skill: u8,
        duration: Duration,
        obs_budget: Duration,
    ) -> Result<(), Error> {
        let arena = self.arena()?;
        // The warmup has no added delay: the players' pings now are their baselines.
        arena.sample_pings(true);
        self.measuring.pings.clear();
        self.measuring.since = Some(chrono::Utc::now());
        let slots = arena.set_bots(bots, skill).await?;
        self.hub.emit(bots_set(bots, &slots, skill));
        // Retry every OBS that is not connected and not being connected.
        let no_seats = self.peers.players.seats.is_empty();
        let missing: Vec<(u32, ObsTarget, Option<Confirm>)> = self
            .active()
            .filter(|p| !p.obs_ok && !self.connecting_for.contains(&p.index))
            .map(|p| {
                (
                    p.index,
                    self.target_for(p),
                    no_seats.then_some((p.slot, p.ip)),
                )
            })
            .collect();
        for (index, target, confirm) in missing {
            self.hub.emit(RunEvent::Info {
                message: format!("connecting the OBS of player {index} again during warmup"),
            });
            self.spawn_connect(index, target, confirm);
        }
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            self.check_fatal()?;
            let elapsed = start.elapsed();
            if elapsed >= duration && self.connecting.is_empty() {
                break;
            }
            if elapsed >= duration + obs_budget {
                // Connections still under way have had their whole budget.
                self.connecting.abort_all();
                self.connecting_for.clear();
                break;
            }
            tokio::select! {
                _ = tick.tick() => {
                    self.hub.tick();
                    self.drain_events().await?;
                }
                Some(done) = self.connecting.join_next(), if !self.connecting.is_empty() => {
                    if let Ok((index, r)) = done {
                        self.obs_connected(index, r);
                    }
                }
            }
        }
        self.drain_events().await?;
        self.measuring.since = None;
        for (player, samples) in std::mem::take(&mut self.measuring.pings) {
            if let Some(st) = samples.stats() {
                self.measuring.baseline.insert(player, st);
            }
        }
        Ok(())
    }

    fn target_for(&self, p: &StudyPlayer) -> ObsTarget {
        match self.peers.players.seats.get(p.index as usize - 1) {
            Some(seat) => ObsTarget::for_seat(self.peers, seat),
            None => ObsTarget::for_player(self.peers, p.label.clone(), p.ip),
        }
    }

    async fn resolve_obs_failures(&mut self, policy: OnFailure) -> Result<(), Error> {
        self.drain_events().await?;
        let failed: Vec<StudyPlayer> = self.active().filter(|p| !p.obs_ok).cloned().collect();
        if failed.is_empty() {
            return Ok(());
        }
        let reason = |p: &StudyPlayer| {
            p.obs_error
                .clone()
                .unwrap_or_else(|| "OBS not connected".into())
        };
        match policy {
            OnFailure::Abort => Err(Error::Unavailable(format!(
                "OBS not connected for {} (obs.on_failure: abort): {}",
                failed
                    .iter()
                    .map(|p| p.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                reason(&failed[0])
            ))),
            OnFailure::Continue => {
                for p in &failed {
                    self.hub.emit(RunEvent::Warning {
                        message: format!(
                            "no recordings for {}: {} (obs.on_failure: continue)",
                            p.label,
                            reason(p)
                        ),
                        player: Some(p.index),
                        match_no: None,
                    });
                }
                Ok(())
            }
            OnFailure::Kick => {
                let arena = self.arena()?;
                for p in &failed {
                    let why = format!("OBS not reachable: {}", reason(p));
                    arena.kick(p.slot).await?;
                    if let Some(sp) = self.players.iter_mut().find(|x| x.index == p.index) {
                        sp.presence = Presence::Kicked;
                    }
                    self.hub.emit(RunEvent::PlayerKicked {
                        player: p.index,
                        slot: p.slot,
                        reason: why,
                    });
                    self.fleet.remove(&p.label);
                }
                if self.active().count() == 0 {
                    return Err(Error::RunFailed(
                        "every player was kicked; nobody left to study".into(),
                    ));
                }
                Ok(())
            }
        }
    }

    fn set_latency(&mut self, match_no: u32, latency_ms: &[u64]) -> Result<(), Error> {
        let mut guard = self.shaper.lock().unwrap_or_else(|e| e.into_inner());
        let sh = guard
            .as_mut()
            .ok_or_else(|| Error::Internal("latency step before the latency setup".into()))?;
        let applied = sh.apply_match(match_no, latency_ms);
        drop(guard);
        self.measuring.planned = latency_ms.to_vec();
        self.measuring.applied = applied.as_ref().is_ok_and(|a| a.applied);
        match applied {
            Ok(a) => {
                self.hub.emit(RunEvent::LatencySet {
                    match_no,
                    shaping: ShapingRecord {
                        applied: a.applied,
                        at: Some(Timestamp::now()),
                        config: serde_json::to_value(&a).unwrap_or_default(),
                        error: None,
                    },
                });
                Ok(())
            }
            Err(e) => {
                self.hub.emit(RunEvent::LatencyFailed {
                    match_no,
                    error: e.to_string(),
                });
                // Playing a match at the wrong latency would spoil the data: stop.
                Err(e.into())
            }
        }
    }

    /// The plan's name for this player's recording in this step, with the player's label in
    /// place of the plan's `<playerN>` placeholder (players are known only once they join) and
    /// this run's `<started>`, `<run_id>`, `<date>`.
    fn recording_name(&self, p: &StudyPlayer, names: &[String]) -> Result<String, Error> {
        let planned = names.get(p.index as usize - 1).ok_or_else(|| {
            Error::Internal(format!(
                "the plan has no recording name for player {}",
                p.index
            ))
        })?;
        Ok(resolve(planned, p.index, &p.label, &self.stamp))
    }

    async fn start_recordings(&mut self, match_no: u32, planned: &[String]) -> Result<(), Error> {
        self.drain_events().await?;
        let mut names = Vec::new();
        for p in self.active().filter(|p| p.obs_ok) {
            names.push((p.index, p.label.clone(), self.recording_name(p, planned)?));
        }
        for (index, _, name) in &names {
            self.hub.emit(RunEvent::RecordingPlanned {
                player: *index,
                match_no,
                name: name.clone(),
            });
        }
        let list: Vec<(String, String)> = names
            .iter()
            .map(|(_, l, n)| (l.clone(), n.clone()))
            .collect();
        let report = self.fleet.start_all(&list, IfActive::Refuse).await;
        for r in &report.recordings {
            let Some((index, _, planned)) = names.iter().find(|(_, l, _)| *l == r.label) else {
                continue;
            };
            let index = *index;
            if let Some(sp) = self.players.iter_mut().find(|p| p.index == index) {
                sp.recording = r.ok();
            }
            if let Some(e) = &r.error {
                self.hub.emit(RunEvent::RecordingFailed {
                    player: index,
                    match_no,
                    phase: RecordingPhase::Start,
                    error: e.clone(),
                });
                continue;
            }
            self.hub.emit(RunEvent::RecordingStarted {
                player: index,
                match_no,
                record: r.to_record(index, match_no),
            });
            if let Some(client) = self.fleet.client(&r.label).cloned() {
                self.watches.insert(
                    index,
                    Watched {
                        watch: Watch::new(self.peers.obs.min_free_disk.mb),
                        events: client.events(),
                        client,
                        since: Instant::now(),
                    },
                );
            }
            // OBS does not overwrite: an existing file makes it save as `name (2).mkv`.
            if let Some(path) = &r.path
                && std::path::Path::new(path)
                    .file_stem()
                    .and_then(|s| s.to_str())
                    != Some(planned.as_str())
            {
                self.hub.emit(RunEvent::Warning {
                    message: format!(
                        "{}: OBS saved the recording as {}, not under the planned name {planned}",
                        r.label,
                        crate::term::escape(path)
                    ),
                    player: Some(index),
                    match_no: Some(match_no),
                });
            }
        }
        if let Some(ms) = report.skew_ms {
            self.timings.start_spread_ms.push((match_no, ms));
        }
        self.hub.emit(RunEvent::RecordingsStarted {
            match_no,
            started: report.recordings.iter().filter(|r| r.ok()).count() as u32,
            arrival_spread_ms: report.skew_ms,
        });
        Ok(())
    }

    async fn play_match(&mut self, match_no: u32, spec: &MatchSpec) -> Result<(), Error> {
        let arena = self.arena()?;
        let live = arena.start_match(spec).await?;
        // Counting starts with the players present now; events are not drained in between.
        self.match_stats = Some((
            match_no,
            MatchStats::start(
                live.generation,
                &live.started,
                arena.state().roster.players.values(),
            ),
        ));
        let total = match spec.end {
            crate::plan::MatchEnd::ServerTimelimit { minutes } => Duration::from_secs(minutes * 60),
            crate::plan::MatchEnd::Runner { after } => after.std(),
        };
        self.hub.emit(RunEvent::MatchStarted {
            match_no,
            map: live.map.clone(),
            planned_s: total.as_secs_f64(),
        });
        let start = live.started.instant;
        self.start_measuring(live.started.at);
        self.sample_edge(match_no, MatchEdge::Start, start, live.started.at, start)
            .await;
        self.hub.take_error()?;
        // Twice a second: the match clock, server events, and each recording's health (a drop is
        // seen within half a second, a loss judged on time).
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut last_poll = Instant::now();
        let end = arena.await_end(&live);
        tokio::pin!(end);
        let outcome: MatchOutcome = loop {
            tokio::select! {
                r = &mut end => break r?,
                _ = tick.tick() => {
                    self.hub.tick();
                    self.drain_events().await?;
                    let poll = last_poll.elapsed() >= HEALTH_POLL;
                    if poll {
                        last_poll = Instant::now();
                    }
                    self.health_tick(match_no, poll).await?;
                }
            }
        };
        self.match_ended = Some((match_no, Instant::now()));
        if let Some((_, st)) = self.match_stats.as_mut() {
            st.finish(outcome.ended_at);
        }
        // One mapping of how a match ended: the arena's.
        let (ended_by, detail) = outcome.ending();
        self.hub.emit(RunEvent::MatchEnded {
            match_no,
            started_at: Timestamp(outcome.started_at),
            ended_at: Timestamp(outcome.ended_at),
            ended_by,
            detail,
            duration_s: outcome.duration_s,
            sudden_death: outcome.sudden_death,
            map: outcome.map.clone(),
        });
        // The end edge on the same monotonic clock as the start (duration_s is measured on it).
        let end = start + Duration::from_secs_f64(outcome.duration_s);
        self.sample_edge(match_no, MatchEdge::End, end, outcome.ended_at, start)
            .await;
        self.drain_events().await?;
        self.finish_measuring(match_no).await;
        Ok(())
    }

    /// Keep a `status` reply's pings of the study's active players, by slot and IP, while a
    /// warmup or match is measured.
    fn collect_pings(
        &mut self,
        at: chrono::DateTime<chrono::Utc>,
        pings: &[crate::arena::PingSample],
    ) {
        if self.measuring.since.is_none_or(|since| at < since) {
            return;
        }
        for s in pings {
            if let Some(p) = self
                .players
                .iter()
                .find(|p| p.presence == Presence::Active && p.slot == s.slot && p.ip == s.ip)
            {
                self.measuring
                    .pings
                    .entry(p.index)
                    .or_default()
                    .push(s.ping_ms);
            }
        }
    }

    /// Collect the match's pings from now on, and probe each player's path with ICMP beside
    /// the match (not shaped: the network's own round trip).
    fn start_measuring(&mut self, from: chrono::DateTime<chrono::Utc>) {
        self.measuring.pings.clear();
        self.measuring.since = Some(from);
        for h in self.measuring.icmp.drain(..) {
            h.abort();
        }
        let targets: Vec<(u32, IpAddr)> = self.active().map(|p| (p.index, p.ip)).collect();
        for (index, ip) in targets {
            self.measuring
                .icmp
                .push(tokio::task::spawn_blocking(move || {
                    let runner = SystemRunner::new().with_timeout(ICMP_TIMEOUT);
                    (
                        index,
                        measure::icmp_probe(&runner, ip, ICMP_PROBES, Duration::from_secs(1)),
                    )
                }));
        }
    }

    /// The match's measured latency per player, judged against the plan and the tolerance:
    /// one `LatencyMeasured` each, a warning for each deviation, and with `on_deviation:
    /// abort` the study stops after this match's recordings are final.
    async fn finish_measuring(&mut self, match_no: u32) {
        self.measuring.since = None;
        let mut icmp: BTreeMap<u32, measure::Stats> = BTreeMap::new();
        for h in self.measuring.icmp.drain(..) {
            // Each probe is bounded by its runner's timeout; this bounds the wait once more.
            if let Ok(Ok((index, Some(st)))) = tokio::time::timeout(ICMP_TIMEOUT, h).await {
                icmp.insert(index, st);
            }
        }
        let samples = std::mem::take(&mut self.measuring.pings);
        let practice = self
            .plan
            .matches
            .iter()
            .any(|m| m.number == match_no && m.practice);
        let tolerance = self.plan.latency.tolerance;
        let mut verdicts = Vec::new();
        // A player the study cannot vouch for is said so, never silently left out.
        let judge_each = self.measuring.applied && !practice;
        let unmeasured: Vec<u32> = self
            .active()
            .map(|p| p.index)
            .filter(|i| samples.get(i).and_then(|s| s.stats()).is_none())
            .collect();
        for player in unmeasured.into_iter().filter(|_| judge_each) {
            self.hub.emit(RunEvent::Warning {
                message: format!(
                    "player {player}'s latency in match {match_no} was not measured: the server reported no ping for them"
                ),
                player: Some(player),
                match_no: Some(match_no),
            });
        }
        for (player, s) in samples {
            let Some(ping) = s.stats() else { continue };
            if practice {
                // No added latency either: a baseline for whoever the warmup did not measure.
                self.measuring.baseline.entry(player).or_insert(ping);
            }
            let planned = self
                .measuring
                .planned
                .get(player as usize - 1)
                .copied()
                .unwrap_or(0);
            let baseline = self.measuring.baseline.get(&player).copied();
            let verdict = baseline.map(|b| measure::judge(&tolerance, planned, &b, &ping));
            // With nothing applied (`shaper: none`, or a failed setting) there is nothing to judge.
            let judged = verdict.filter(|_| self.measuring.applied);
            if verdict.is_none() && judge_each {
                self.hub.emit(RunEvent::Warning {
                    message: format!(
                        "player {player}'s added latency in match {match_no} cannot be judged: no baseline ping (neither the warmup nor a practice match measured them)"
                    ),
                    player: Some(player),
                    match_no: Some(match_no),
                });
            }
            let measured = crate::manifest::MeasuredLatency {
                ping: ping.into(),
                baseline: baseline.map(Into::into),
                planned_ms: planned as f64,
                added_ms: verdict.map(|v| v.measured_added_ms),
                deviation_ms: verdict.map(|v| v.deviation_ms),
                allowed_ms: measure::allowed_ms(&tolerance, planned as f64),
                within: judged.map(|v| v.within),
                icmp: icmp.get(&player).copied().map(Into::into),
            };
            self.hub.emit(RunEvent::LatencyMeasured {
                match_no,
                player,
                measured,
            });
            if let Some(v) = judged {
                if !v.within {
                    self.hub.emit(RunEvent::Warning {
                        message: format!(
                            "player {player}'s measured added latency in match {match_no} is {:.0} ms, planned {planned} ms (off by {:+.0} ms, tolerance ±{:.0} ms)",
                            v.measured_added_ms, v.deviation_ms, v.allowed_ms
                        ),
                        player: Some(player),
                        match_no: Some(match_no),
                    });
                }
                verdicts.push(v);
            }
        }
        if measure::decide(self.plan.latency.on_deviation, &verdicts) == measure::Action::Abort {
            self.measuring.abort = Some(Error::RunFailed(format!(
                "a player's measured latency in match {match_no} is outside the tolerance (latency.on_deviation: abort)"
            )));
        }
    }

    /// Place a match edge in every running recording (OBS's own timeline, sampled now).
    async fn sample_edge(
        &mut self,
        match_no: u32,
        edge: MatchEdge,
        reference: Instant,
        reference_at: chrono::DateTime<chrono::Utc>,
        match_start: Instant,
    ) {
        let samples = self
            .fleet
            .sample_edge(reference, reference_at, match_start)
            .await;
        for (label, r) in samples {
            let Some(player) = self
                .players
                .iter()
                .find(|p| p.label == label)
                .map(|p| p.index)
            else {
                continue;
            };
            let (sample, error) = match r {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e)),
            };
            self.hub.emit(RunEvent::RecordingSampled {
                player,
                match_no,
                edge,
                sample,
                error,
            });
        }
    }

    async fn stop_recordings(&mut self, match_no: u32) -> Result<(), Error> {
        // One last look (events since the last tick, a final stats sample), then the
        // recordings' frame counts; from here on a STOPPED is asked for.
        self.health_tick(match_no, true).await?;
        for (player, w) in std::mem::take(&mut self.watches) {
            self.hub.emit(RunEvent::RecordingFrames {
                player,
                match_no,
                frames: w.watch.report(),
            });
        }
        let report = self.fleet.stop_all().await;
        for r in &report.recordings {
            let Some(index) = self
                .players
                .iter()
                .find(|p| p.label == r.label)
                .map(|p| p.index)
            else {
                continue;
            };
            self.record_stop(index, match_no, r);
        }
        for p in self.players.iter_mut() {
            p.recording = false;
        }
        if let Some((m, end)) = self.match_ended
            && m == match_no
        {
            let d = end.elapsed();
            self.timings.end_to_stopped.push((match_no, d));
            self.hub.emit(RunEvent::RecordingsFinal {
                match_no,
                after_end_ms: d.as_millis() as u64,
            });
        }
        // The `score:` lines have arrived by now.
        let drained = self.drain_events().await;
        self.emit_match_stats(match_no);
        drained
    }

    /// The questionnaire after a match: open it on every present player's page, print their
    /// links, and wait until all have answered (players who leave are not waited for) or the
    /// timeout passes. Cancelled (Ctrl-C), the round is closed on the way out.
    async fn questionnaire(&mut self, match_no: u32, timeout: Duration) -> Result<(), Error> {
        let players: Vec<(u32, String)> =
            self.active().map(|p| (p.index, p.label.clone())).collect();
        if players.is_empty() {
            return Ok(());
        }
        let indices: Vec<u32> = players.iter().map(|p| p.0).collect();
        let Some(desk) = self.opts.questionnaire.clone() else {
            self.hub.emit(RunEvent::Warning {
                message:
                    "no live view serves the questionnaire; its answers are recorded as missing"
                        .into(),
                player: None,
                match_no: Some(match_no),
            });
            self.hub.emit(RunEvent::QuestionnaireOpened {
                match_no,
                players: indices.clone(),
                timeout_s: 0.0,
            });
            self.hub.emit(RunEvent::QuestionnaireClosed {
                match_no,
                answered: Vec::new(),
                missing: indices,
                timed_out: false,
            });
            return Ok(());
        };
        let links = desk.open(match_no, &players).map_err(Error::RunFailed)?;
        let _close = CloseOnDrop(desk.clone());
        self.hub.emit(RunEvent::QuestionnaireOpened {
            match_no,
            players: indices.clone(),
            timeout_s: timeout.as_secs_f64(),
        });
        for ((_, label), (_, url)) in players.iter().zip(&links) {
            // The links carry the players' tokens: the terminal shows them, the log does not.
            crate::logging::terminal_only(&format!(
                "oa-run: match {match_no}: questionnaire for {}: {}",
                crate::term::escape(label),
                crate::term::escape(url)
            ));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut waiting: BTreeSet<u32> = indices.iter().copied().collect();
        let mut answered = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            self.take_answers(&desk, match_no, &mut waiting, &mut answered);
            waiting.retain(|i| {
                self.players
                    .iter()
                    .any(|p| p.index == *i && p.presence == Presence::Active)
            });
            if waiting.is_empty() || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                () = desk.answered() => {}
                _ = tick.tick() => {
                    self.hub.tick();
                    self.drain_events().await?;
                }
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
        desk.close();
        // Answers the page accepted just before the close still count.
        self.take_answers(&desk, match_no, &mut waiting, &mut answered);
        let missing: Vec<u32> = indices
            .iter()
            .copied()
            .filter(|i| !answered.contains(i))
            .collect();
        self.hub.emit(RunEvent::QuestionnaireClosed {
            match_no,
            timed_out: !waiting.is_empty(),
            answered,
            missing,
        });
        Ok(())
    }

    fn take_answers(
        &mut self,
        desk: &super::questionnaire::Desk,
        match_no: u32,
        waiting: &mut BTreeSet<u32>,
        answered: &mut Vec<u32>,
    ) {
        for (m, player, answers) in desk.take() {
            if m != match_no || answered.contains(&player) {
                continue;
            }
            waiting.remove(&player);
            answered.push(player);
            self.hub.emit(RunEvent::QuestionnaireAnswered {
                match_no,
                player,
                answers,
            });
        }
    }

    /// The match's stats into the record (also on teardown, for a match cut short).
    fn emit_match_stats(&mut self, match_no: u32) {
        let Some((n, st)) = self.match_stats.take() else {
            return;
        };
        if n != match_no {
            return;
        }
        let players = &self.players;
        let stats = st.record(chrono::Utc::now(), |slot| {
            players.iter().find(|p| p.slot == slot).map(|p| p.index)
        });
        self.hub.emit(RunEvent::MatchStats { match_no, stats });
    }

    fn record_stop(&mut self, index: u32, match_no: u32, r: &crate::obs::RecordingReport) {
        self.hub.emit(RunEvent::RecordingStopped {
            player: index,
            match_no,
            record: r.to_record(index, match_no),
        });
        if let Some(e) = &r.error {
            self.hub.emit(RunEvent::RecordingFailed {
                player: index,
                match_no,
                phase: RecordingPhase::Stop,
                error: e.clone(),
            });
        }
    }

    /// Look at every running recording: its OBS's events since the last look and, with `poll`,
    /// a fresh GetStats (all OBS at once, each bounded). Applies `obs.on_lost` to a lost one.
    async fn health_tick(&mut self, match_no: u32, poll: bool) -> Result<(), Error> {
        let mut found: Vec<(u32, HealthIssue)> = Vec::new();
        for (player, w) in self.watches.iter_mut() {
            let t = w.since.elapsed().as_secs_f64();
            loop {
                match w.events.try_recv() {
                    Ok(e) => {
                        if let Some(i) = w.watch.on_event(t, &e, false) {
                            found.push((*player, i));
                        }
                    }
                    Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                    Err(_) => break,
                }
            }
            if let Some(i) = w.watch.on_time(t) {
                found.push((*player, i));
            }
        }
        if poll && !self.watches.is_empty() {
            // An OBS whose connection is down cannot answer; asking would only hold this loop.
            let asks =
                self.watches
                    .iter()
                    .filter(|(_, w)| !w.watch.is_down())
                    .map(|(player, w)| {
                        let client = w.client.clone();
                        let t = w.since.elapsed().as_secs_f64();
                        async move {
                            let r = tokio::time::timeout(HEALTH_ASK, client.stats()).await;
                            (*player, t, r)
                        }
                    });
            for (player, t, r) in futures_util::future::join_all(asks).await {
                if let (Ok(Ok(stats)), Some(w)) = (r, self.watches.get_mut(&player)) {
                    for i in w.watch.on_stats(t, stats) {
                        found.push((player, i));
                    }
                }
            }
        }
        for (player, issue) in found {
            let lost = issue.loses_recording();
            self.hub.emit(RunEvent::ObsHealth {
                player,
                match_no,
                issue: issue.clone(),
            });
            if !lost {
                continue;
            }
            if let Some(p) = self.players.iter_mut().find(|p| p.index == player) {
                p.recording = false;
            }
            match self.peers.obs.on_lost {
                OnLost::Continue => {}
                OnLost::Abort => {
                    return Err(Error::RunFailed(format!(
                        "player {player}'s recording of match {match_no} was lost: {} (obs.on_lost: abort)",
                        issue.describe()
                    )));
                }
                OnLost::Replay => {
                    let is_replay = match_no > self.last_planned_match();
                    if !is_replay && !self.replays.contains(&match_no) {
                        self.replays.push(match_no);
                        let number = self.last_planned_match() + self.replays.len() as u32;
                        self.hub.emit(RunEvent::MatchReplay {
                            of: match_no,
                            number,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The plan's last match number (replays are numbered after it).
    fn last_planned_match(&self) -> u32 {
        self.plan
            .matches
            .iter()
            .map(|m| m.number)
            .max()
            .unwrap_or(0)
    }

    /// Play the matches whose recordings were lost again, once each, numbered after the
    /// plan's last match, with the plan's own steps for that match (its latencies, its names
    /// marked `_replay`).
    async fn replay_lost(&mut self, shutdown: &Shutdown) -> Result<(), Error> {
        let replays = self.replays.clone();
        for (k, of) in replays.into_iter().enumerate() {
            let number = self.last_planned_match() + k as u32 + 1;
            let steps: Vec<(usize, Step)> = self
                .plan
                .steps
                .iter()
                .enumerate()
                .filter(|(_, s)| step_match(s) == Some(of))
                .map(|(i, s)| (i, renumbered(s, number)))
                .collect();
            for (j, (i, step)) in steps.iter().enumerate() {
                shutdown.check()?;
                self.match_no = number;
                self.hub.emit(RunEvent::StepStarted {
                    index: *i as u32,
                    kind: step.kind().to_string(),
                    match_no: Some(number),
                    description: format!(
                        "replay of match {of}: {}",
                        render::step_line(self.plan, step)
                    ),
                    duration_s: None,
                });
                let r = match step {
                    // The next step of the replay is its PlayMatch.
                    Step::StartRecordings { names, .. } => {
                        if let Some(spec) =
                            steps.get(j + 1).and_then(|(_, s)| MatchSpec::from_step(s))
                        {
                            self.arena()?.prepare_match(&spec).await?;
                        }
                        let names = names.clone();
                        tokio::select! {
                            r = self.start_recordings(number, &names) => r,
                            sig = shutdown.requested() => { warn!("{sig}: stopping the study"); Err(Error::Interrupted) }
                        }
                    }
                    _ => tokio::select! {
                        r = self.step(usize::MAX, step) => r,
                        sig = shutdown.requested() => { warn!("{sig}: stopping the study"); Err(Error::Interrupted) }
                    },
                };
                self.hub.emit(RunEvent::StepFinished {
                    index: *i as u32,
                    error: r.as_ref().err().map(ToString::to_string),
                });
                self.hub.take_error()?;
                r?;
            }
        }
        Ok(())
    }

    /// Leave the lab as it was. Every part runs even if an earlier one failed; returns whether
    /// all of it succeeded.
    async fn teardown(&mut self) -> bool {
        let mut clean = true;
        self.connecting.abort_all();
        // A match cut short still has what happened until then.
        self.emit_match_stats(self.match_no);
        // 1. Recordings: anything still recording (this run's, or reconciled after a reconnect).
        let (stopped, failures) = self.fleet.stop_leftovers().await;
        for label in &stopped {
            let index = self
                .players
                .iter()
                .find(|p| &p.label == label)
                .map(|p| p.index);
            self.hub.emit(RunEvent::Cleanup {
                message: format!("stopped the recording still running on {label}'s OBS"),
                ok: true,
            });
            if let Some(index) = index {
                self.hub.emit(RunEvent::RecordingFailed {
                    player: index,
                    match_no: self.match_no,
                    phase: RecordingPhase::Stop,
                    error: "stopped early by cleanup".into(),
                });
            }
        }
        for (label, e) in failures {
            clean = false;
            self.hub.emit(RunEvent::Cleanup {
                message: format!("could not stop the recording on {label}: {e}"),
                ok: false,
            });
        }
        let (stop_server, remove_latency) = self
            .plan
            .steps
            .iter()
            .find_map(|s| match s {
                Step::Teardown {
                    stop_server,
                    remove_latency,
                    ..
                } => Some((*stop_server, *remove_latency)),
                _ => None,
            })
            .unwrap_or((true, true));
        // 2. Latency (a shaper exists only where the plan set one up; with `none` it holds
        // nothing to remove).
        let sh = self
            .shaper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .filter(|_| remove_latency);
        if let Some(mut sh) = sh {
            match sh.teardown() {
                Ok(r) => self.hub.emit(RunEvent::Cleanup {
                    message: format!("latency tree removed ({} commands)", r.commands.len()),
                    ok: true,
                }),
                Err(e) => {
                    clean = false;
                    self.hub.emit(RunEvent::Cleanup {
                        message: format!("latency: {e}"),
                        ok: false,
                    });
                }
            }
        }
        // 3. Server (one oa-run launched; an attached server is left running).
        self.events = None;
        if let Some(arena) = self.arena.take().filter(|_| stop_server) {
            match Arc::try_unwrap(arena) {
                Ok(arena) => {
                    if let Some(report) = arena.stop().await {
                        self.hub.emit(RunEvent::Cleanup {
                            message: format!(
                                "server stopped ({}; {})",
                                if report.graceful {
                                    "on SIGTERM"
                                } else {
                                    "killed after the grace time"
                                },
                                report.exit_status
                            ),
                            ok: true,
                        });
                    }
                }
                // Someone still holds it: dropping our handle ends a launched server (Drop).
                Err(arena) => drop(arena),
            }
            *self.server_pid.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        // 4. OBS connections.
        let fleet = std::mem::replace(&mut self.fleet, Fleet::new(obs_config(self.plan)));
        fleet.close().await;
        clean
    }

    fn timings_event(&mut self) {
        let fmt = |v: &[(u32, Duration)]| {
            v.iter()
                .map(|(i, d)| format!("{i}:{:.2}s", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let message = format!(
            "timings: join→OBS connected [{}]; match end→recordings final [{}]; STARTED arrival spread ms [{}]",
            fmt(&self.timings.join_to_obs),
            fmt(&self.timings.end_to_stopped),
            self.timings
                .start_spread_ms
                .iter()
                .map(|(m, s)| format!("{m}:{s:.1}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        self.hub.emit(RunEvent::Info { message });
    }
}

/// Closes the questionnaire's round however its step ends (an interrupt drops the step).
struct CloseOnDrop(super::questionnaire::Desk);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn step_match(step: &Step) -> Option<u32> {
    match step {
        Step::SetLatency { match_no, .. }
        | Step::StartRecordings { match_no, .. }
        | Step::PlayMatch { match_no, .. }
        | Step::StopRecordings { match_no, .. }
        | Step::Questionnaire { match_no, .. } => Some(*match_no),
        _ => None,
    }
}

/// A match step of the plan, for playing that match again as match `number` (recording names
/// marked `_replay`, so OBS never sees a name twice).
fn renumbered(step: &Step, number: u32) -> Step {
    let mut s = step.clone();
    match &mut s {
        Step::SetLatency { match_no, .. }
        | Step::PlayMatch { match_no, .. }
        | Step::StopRecordings { match_no, .. }
        | Step::Questionnaire { match_no, .. } => *match_no = number,
        Step::StartRecordings {
            match_no, names, ..
        } => {
            *match_no = number;
            for n in names.iter_mut() {
                n.push_str("_replay");
            }
        }
        _ => {}
    }
    s
}

/// OBS settings from the plan: the connection budget from the warmup step, the recording
/// timeouts from the recording steps (the executor decides from the plan alone).
fn obs_config(plan: &Plan) -> ObsConfig {
    let mut cfg = ObsConfig::default();
    for step in &plan.steps {
        match step {
            Step::Warmup {
                obs_retries,
                obs_connect_timeout,
                ..
            } => {
                cfg.retries = *obs_retries;
                cfg.connect_timeout = obs_connect_timeout.std();
            }
            Step::StartRecordings { timeout, .. } => cfg.start_timeout = timeout.std(),
            Step::StopRecordings { timeout, .. } => cfg.stop_timeout = timeout.std(),
            _ => {}
        }
    }
    cfg
}

/// The bots now on the server, in the slots the server gave them.
fn bots_set(names: &[String], slots: &[u8], skill: u8) -> RunEvent {
    RunEvent::BotsSet {
        bots: names
            .iter()
            .zip(slots)
            .map(|(name, &slot)| super::events::BotSlot {
                slot,
                name: name.clone(),
            })
            .collect(),
        skill,
    }
}
