//! The executor: walks the compiled plan step by step (the same plan the dry run prints),
//! driving the server ([`crate::arena`]), every player's OBS ([`crate::obs`]) and the latency
//! tree ([`crate::netem`]), and keeps the manifest current after every step.
//!
//! Cleanup is one routine ([`Exec::teardown`]) that runs at the end, on any error and on the
//! first Ctrl-C/SIGTERM: stop every recording (waiting for the files), remove the latency tree,
//! stop a launched server, finish the manifest. A second signal runs the synchronous
//! best-effort hooks registered here and exits at once.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::arena::{Arena, ArenaEvent, HowEnded, MatchOutcome, MatchSpec, Player as ArenaPlayer};
use crate::error::{Error, exit};
use crate::manifest::{
    Event, EventKind, Manifest, ManifestWriter, MatchEnding, PlayerRecord, RecordingRecord, RunDir,
    RunStatus, ShapingRecord, Timestamp,
};
use crate::netem::{self, LatencyShaper, SetupOptions, SystemRunner};
use crate::obs::{Fleet, IfActive, ObsClient, ObsConfig, ObsError, ObsTarget};
use crate::plan::names::{NameTemplate, vars_for_match};
use crate::plan::{Plan, Step, render};
use crate::progress::Progress;
use crate::run::signals::{HookGuard, Shutdown};
use crate::scenario::{LoadedScenario, OnFailure, Scenario, Shaper};

/// How a run ended, for the CLI.
#[derive(Debug)]
pub struct RunOutcome {
    pub exit_code: u8,
    pub manifest_path: PathBuf,
    pub summary: String,
}

/// Options not in the scenario.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Replace a root qdisc on the interface that oa-run did not create.
    pub force_latency: bool,
    /// Leaf qdiscs of the latency tree. Always netem in a study; pfifo (same tree, no delay)
    /// only lets the tests run the real tc path on kernels without sch_netem.
    pub leaf: netem::LeafKind,
}

/// Timings worth reporting (also logged at the end of a run).
#[derive(Debug, Default)]
struct Metrics {
    /// Per player: from the join line to its OBS connected.
    join_to_obs: Vec<(u32, Duration)>,
    /// Per match: from the match's end to every recording stopped (files final).
    end_to_stopped: Vec<(u32, Duration)>,
    /// Per match: spread of STARTED across players.
    start_skew_ms: Vec<(u32, f64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    Active,
    Left,
    Kicked,
}

/// A human taking part in the study.
#[derive(Debug, Clone)]
struct StudyPlayer {
    /// 1-based row of the latency design.
    index: u32,
    slot: u8,
    /// Unique and file-safe: the seat name, else the player's cleaned name (with the slot added
    /// when two players share one).
    label: String,
    name: String,
    ip: IpAddr,
    seat: Option<String>,
    joined: Instant,
    presence: Presence,
    obs_ok: bool,
    recording: bool,
}

/// Run a checked, compiled study. Returns Ok with the exit code for completed/failed/interrupted
/// runs (the manifest says which); Err only when not even a run directory could be made.
pub async fn execute(
    loaded: &LoadedScenario,
    plan: &Plan,
    shutdown: &Shutdown,
    opts: RunOptions,
) -> Result<RunOutcome, Error> {
    let s = &loaded.scenario;
    let run_dir = RunDir::create(&s.output.dir, &s.name, Timestamp::now())?;
    if let Err(e) = crate::logging::attach_file(&run_dir.log_path()) {
        warn!("cannot write {}: {e}", run_dir.log_path().display());
    }
    let mut manifest = Manifest::from_plan(loaded, plan, &run_dir);
    let writer = ManifestWriter::create(run_dir.path(), &mut manifest)?;
    info!("run directory {}", run_dir.path().display());

    let shaper: Arc<Mutex<Option<LatencyShaper>>> = Arc::new(Mutex::new(None));
    let server_pid: Arc<Mutex<Option<u32>>> = Arc::new(Mutex::new(None));
    // Second Ctrl-C: what can be undone without the async runtime, within the hook budget.
    // Manifest writes go through this gate; the forced-exit hook closes it (true) so nothing
    // the executor writes afterwards can overwrite the hook's final status.
    let write_gate: Arc<Mutex<bool>> = Arc::new(Mutex::new(false));
    let _hook = force_exit_hook(
        shutdown,
        &shaper,
        &server_pid,
        &write_gate,
        writer.path().to_path_buf(),
    );

    let mut ex = Exec {
        s,
        plan,
        template: NameTemplate::new(&s.obs.recording.name).map_err(Error::Internal)?,
        manifest,
        writer,
        write_gate,
        run_dir,
        arena: None,
        events: None,
        fleet: Fleet::new(ObsConfig::from_scenario(s)),
        connecting: JoinSet::new(),
        connecting_for: Default::default(),
        shaper,
        server_pid,
        players: Vec::new(),
        progress: Progress::new(plan.steps.len()),
        metrics: Metrics::default(),
        match_end: BTreeMap::new(),
        opts,
    };

    let result = ex.walk(shutdown).await;
    let status = match &result {
        Ok(()) => RunStatus::Completed,
        Err(Error::Interrupted) => RunStatus::Interrupted {
            signal: shutdown.signal().map(|s| s.to_string()),
            reason: "interrupted; recordings stopped and the lab cleaned up".into(),
        },
        Err(e) => RunStatus::Failed {
            reason: e.to_string(),
            exit_code: e.exit_code(),
        },
    };
    if let Err(e) = &result {
        let kind = if matches!(e, Error::Interrupted) {
            EventKind::Interrupt
        } else {
            EventKind::Failure
        };
        ex.manifest.push_event(Event::new(kind, e.to_string()));
        warn!("{e}; cleaning up");
    }
    let clean = ex.teardown().await;
    ex.progress.finish();
    ex.manifest.set_status(status);
    ex.metrics_summary();
    let write = ex.save();
    crate::logging::detach_file();
    write?;

    let failed_recordings = ex
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
        manifest_path: ex.writer.path().to_path_buf(),
        summary: ex.manifest.summary(),
    })
}

fn force_exit_hook(
    shutdown: &Shutdown,
    shaper: &Arc<Mutex<Option<LatencyShaper>>>,
    server_pid: &Arc<Mutex<Option<u32>>>,
    write_gate: &Arc<Mutex<bool>>,
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
        // Held until the process exits: the executor cannot write after this.
        let mut closed = write_gate.lock().unwrap_or_else(|e| e.into_inner());
        *closed = true;
        if let Ok(mut m) = crate::manifest::read(&manifest_path) {
            m.set_status(RunStatus::Interrupted {
                signal: Some("second signal".into()),
                reason: "forced exit; recordings may still be running on the players' OBS".into(),
            });
            if let Some(dir) = manifest_path.parent() {
                let _ = ManifestWriter::reopen(dir).write(&mut m);
            }
        }
    })
}

struct Exec<'a> {
    s: &'a Scenario,
    plan: &'a Plan,
    template: NameTemplate,
    manifest: Manifest,
    writer: ManifestWriter,
    write_gate: Arc<Mutex<bool>>,
    run_dir: RunDir,
    arena: Option<Arc<Arena>>,
    events: Option<broadcast::Receiver<ArenaEvent>>,
    fleet: Fleet,
    /// OBS connections under way: (player index, result), and which indices they are for.
    connecting: JoinSet<(u32, Result<ObsClient, ObsError>)>,
    connecting_for: std::collections::BTreeSet<u32>,
    shaper: Arc<Mutex<Option<LatencyShaper>>>,
    server_pid: Arc<Mutex<Option<u32>>>,
    players: Vec<StudyPlayer>,
    progress: Progress,
    metrics: Metrics,
    /// When each match ended (for end → recordings stopped).
    match_end: BTreeMap<u32, Instant>,
    opts: RunOptions,
}

impl Exec<'_> {
    async fn walk(&mut self, shutdown: &Shutdown) -> Result<(), Error> {
        let steps = &self.plan.steps;
        for (i, step) in steps.iter().enumerate() {
            if matches!(step, Step::Teardown { .. }) {
                // Teardown runs after the loop, also on error.
                self.progress.step(i, &render::step_line(self.plan, step));
                break;
            }
            shutdown.check()?;
            self.progress.step(i, &render::step_line(self.plan, step));
            self.manifest
                .step_started(i as u32, step.kind(), step_match(step));
            self.save()?;
            let r = tokio::select! {
                r = self.step(i, step) => r,
                sig = shutdown.requested() => {
                    warn!("{sig}: stopping the study");
                    Err(Error::Interrupted)
                }
            };
            self.manifest
                .step_finished(i as u32, r.as_ref().err().map(ToString::to_string));
            self.save()?;
            r?;
        }
        Ok(())
    }

    fn save(&mut self) -> Result<(), Error> {
        let closed = self.write_gate.lock().unwrap_or_else(|e| e.into_inner());
        if *closed {
            return Ok(());
        }
        self.writer.write(&mut self.manifest).map_err(Into::into)
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
            Step::SetupLatency { .. } => self.setup_latency(),
            Step::Warmup {
                bots,
                skill,
                duration,
                ..
            } => self.warmup(bots, *skill, duration.std()).await,
            Step::ResolveObsFailures { policy } => self.resolve_obs_failures(*policy).await,
            Step::SetBots { bots, skill } => {
                self.arena()?.set_bots(bots, *skill).await?;
                Ok(())
            }
            Step::SetLatency {
                match_no,
                latency_ms,
                ..
            } => self.set_latency(*match_no, latency_ms),
            Step::StartRecordings { match_no, .. } => {
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
                self.start_recordings(*match_no).await
            }
            Step::PlayMatch { match_no, .. } => {
                let spec = MatchSpec::from_step(step).expect("a PlayMatch step");
                self.play_match(*match_no, &spec).await
            }
            Step::StopRecordings { match_no, .. } => self.stop_recordings(*match_no).await,
            Step::Teardown { .. } => Ok(()),
        }
    }

    async fn preflight(&mut self) -> Result<(), Error> {
        if let Some(l) = &self.s.server.launch
            && !l.binary.exists()
        {
            return Err(Error::Unavailable(format!(
                "the server program {} is not installed (apt-get install openarena-server)",
                l.binary.display()
            )));
        }
        if self.s.latency.shaper == Shaper::Tc {
            // Fail before anyone sits down: tc present, permitted, interface there and free,
            // netem available. (Setup repeats the ownership checks under the interface lock.)
            let bad: Vec<String> = netem::check_rows(self.s)
                .into_iter()
                .filter(|r| {
                    !(r.ok || self.opts.force_latency && r.target == self.s.latency.interface)
                })
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
        for (i, seat) in self.s.players.seats.iter().enumerate() {
            let target = ObsTarget::for_seat(self.s, seat);
            self.spawn_connect(i as u32 + 1, target);
        }
        Ok(())
    }

    async fn start_server(&mut self) -> Result<(), Error> {
        let arena = Arena::start(self.s, self.run_dir.path()).await?;
        *self.server_pid.lock().unwrap_or_else(|e| e.into_inner()) = arena.info.pid;
        if let Some(files) = &arena.info.files {
            self.manifest.logs.server_stderr = Some(files.stderr_log.clone());
            self.manifest.logs.server_games_log = Some(files.games_log.clone());
        }
        self.events = Some(arena.subscribe());
        self.arena = Some(Arc::new(arena));
        Ok(())
    }

    fn spawn_connect(&mut self, index: u32, target: ObsTarget) {
        if !self.connecting_for.insert(index) {
            return;
        }
        let cfg = ObsConfig::from_scenario(self.s);
        self.connecting
            .spawn(async move { (index, ObsClient::connect(target, cfg).await) });
    }

    /// An OBS connection finished (success or failure after its retries).
    fn obs_connected(&mut self, index: u32, r: Result<ObsClient, ObsError>) {
        self.connecting_for.remove(&index);
        match r {
            Ok(client) => {
                self.fill_obs_record(index, &client);
                if let Some(p) = self.players.iter_mut().find(|p| p.index == index) {
                    p.obs_ok = true;
                    let d = p.joined.elapsed();
                    self.metrics.join_to_obs.push((index, d));
                    info!(player = %p.label, "OBS connected {:.1}s after joining", d.as_secs_f64());
                } else {
                    info!("OBS of seat {index} connected");
                }
                self.fleet.insert(client);
            }
            Err(e) => {
                warn!("player {index}: {e}");
                if let Some(rec) = self.manifest.player_mut(index) {
                    rec.obs.error = Some(e.to_string());
                }
                self.manifest
                    .push_event(Event::new(EventKind::ObsFailure, e.to_string()).player(index));
            }
        }
    }

    fn fill_obs_record(&mut self, index: u32, client: &ObsClient) {
        if let Some(rec) = self.manifest.player_mut(index) {
            rec.obs.host = Some(client.target().host.clone());
            client.server_info().fill(&mut rec.obs);
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
            match ev {
                ArenaEvent::Joined { player } if player.is_human() => {
                    let msg = format!(
                        "{} joined from {} (slot {}) after the study started; not part of it",
                        player.name,
                        player
                            .ip
                            .map(|ip| ip.to_string())
                            .unwrap_or_else(|| "?".into()),
                        player.slot
                    );
                    warn!("{msg}");
                    self.manifest
                        .push_event(Event::new(EventKind::Warning, msg));
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
        warn!(player = %label, "left the server; the study goes on without them");
        if let Some(rec) = self.manifest.player_mut(index) {
            rec.left_at = Some(Timestamp::now());
        }
        self.manifest.push_event(
            Event::new(
                EventKind::Leave,
                format!("{label} (slot {}) left the server", who.slot),
            )
            .player(index),
        );
        if recording && let Some(report) = self.fleet.stop_one(&label).await {
            let m = self.current_match();
            self.record_stop(index, m, &report);
        }
    }

    fn current_match(&self) -> u32 {
        self.manifest
            .steps
            .last()
            .and_then(|s| s.match_no)
            .unwrap_or(0)
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
        let (index, seat) = if self.s.players.seats.is_empty() {
            let taken: Vec<u32> = self
                .players
                .iter()
                .filter(|x| x.presence == Presence::Active)
                .map(|x| x.index)
                .collect();
            ((1..=count).find(|i| !taken.contains(i))?, None)
        } else {
            let i = self.s.players.seats.iter().position(|seat| seat.ip == ip)?;
            let i = i as u32 + 1;
            if i > count
                || self
                    .players
                    .iter()
                    .any(|x| x.index == i && x.presence == Presence::Active)
            {
                return None;
            }
            (i, Some(self.s.players.seats[i as usize - 1].name.clone()))
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
            name: p.name.clone(),
            ip,
            seat: seat.clone(),
            joined: Instant::now(),
            presence: Presence::Active,
            obs_ok: false,
            recording: false,
        });
        let mut rec = PlayerRecord::new(index, label.clone(), self.obs_port(index));
        rec.seat = seat.clone();
        rec.ip = Some(ip);
        rec.slot = Some(p.slot as u32);
        rec.name_raw = Some(p.name_raw.clone());
        rec.name_clean = Some(p.name.clone());
        rec.joined_at = Some(Timestamp::now());
        rec.obs.host = Some(ip.to_string());
        self.manifest.add_player(rec);
        self.manifest.push_event(
            Event::new(
                EventKind::Join,
                format!("{} joined from {ip} (slot {})", p.name, p.slot),
            )
            .player(index),
        );
        // Connect their OBS at once (with seats it may already be connected from preflight).
        if let Some(client) = self.fleet.client(&label).cloned() {
            if let Some(sp) = self.players.iter_mut().find(|x| x.index == index) {
                sp.obs_ok = true;
            }
            self.fill_obs_record(index, &client);
            self.metrics.join_to_obs.push((index, Duration::ZERO));
        } else if let Some(sp) = self.players.iter().find(|x| x.index == index) {
            let target = self.target_for(sp);
            self.spawn_connect(index, target);
        }
        Some(index)
    }

    fn obs_port(&self, index: u32) -> u16 {
        self.plan
            .players
            .get(index as usize - 1)
            .map(|p| p.obs_port)
            .unwrap_or(self.s.obs.port)
    }

    fn active(&self) -> impl Iterator<Item = &StudyPlayer> {
        self.players
            .iter()
            .filter(|p| p.presence == Presence::Active)
    }

    fn roster_table(&self) -> String {
        let mut t = String::from(
            "slot  player            name              ip               seat      obs   ",
        );
        for p in &self.players {
            t.push_str(&format!(
                "\n{:<4}  {:<16}  {:<16}  {:<15}  {:<8}  {:<5}",
                p.slot,
                p.label,
                p.name.chars().take(16).collect::<String>(),
                p.ip,
                p.seat.as_deref().unwrap_or("-"),
                match (p.presence, p.obs_ok) {
                    (Presence::Left, _) => "left",
                    (Presence::Kicked, _) => "kicked",
                    (_, true) => "ok",
                    (_, false) => "-",
                }
            ));
        }
        t
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
            if p.ip.is_some() && self.admit(&p, count).is_some() {
                info!("\n{}", self.roster_table());
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let present = self.active().count() as u32;
            self.progress.waiting(&format!("{present}/{count} humans"));
            if present >= count {
                info!("{count} humans present");
                return Ok(());
            }
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(ArenaEvent::Joined { player }) if player.is_human() => {
                        if self.admit(&player, count).is_some() {
                            info!("\n{}", self.roster_table());
                        } else {
                            warn!(name = %player.name, ip = ?player.ip, "a human joined who is not part of the study (no free seat or unknown IP)");
                        }
                    }
                    Ok(ArenaEvent::Left { player }) => {
                        if let Some(p) = self.players.iter_mut().find(|p| p.slot == player.slot && p.presence == Presence::Active) {
                            // Before the study starts a leaver simply frees their place.
                            p.presence = Presence::Left;
                            info!(player = %p.label, "left before the study started");
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
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Error::RunFailed(format!(
                        "only {present} of {count} humans joined within {}",
                        crate::scenario::Duration::from(timeout)
                    )));
                }
            }
        }
    }

    fn setup_latency(&mut self) -> Result<(), Error> {
        let players: Vec<netem::Player> = self
            .active()
            .map(|p| netem::Player {
                index: p.index,
                ip: p.ip,
            })
            .collect();
        let opts = SetupOptions {
            force: self.opts.force_latency,
            leaf: self.opts.leaf,
        };
        let sh = LatencyShaper::setup(
            &self.s.latency,
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
    ) -> Result<(), Error> {
        let arena = self.arena()?;
        arena.set_bots(bots, skill).await?;
        // Retry every OBS that is not connected and not being connected.
        let missing: Vec<(u32, ObsTarget)> = self
            .active()
            .filter(|p| !p.obs_ok && !self.connecting_for.contains(&p.index))
            .map(|p| (p.index, self.target_for(p)))
            .collect();
        for (index, target) in missing {
            info!(player = index, "connecting OBS again during warmup");
            self.spawn_connect(index, target);
        }
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let elapsed = start.elapsed();
            self.progress.clock("warmup", elapsed, duration);
            if elapsed >= duration && self.connecting.is_empty() {
                break;
            }
            if elapsed >= duration + self.s.obs.connect_timeout.std() * (self.s.obs.retries + 1) {
                // Connections still under way have had their whole budget.
                self.connecting.abort_all();
                self.connecting_for.clear();
                break;
            }
            tokio::select! {
                _ = tick.tick() => { self.drain_events().await?; }
                Some(done) = self.connecting.join_next(), if !self.connecting.is_empty() => {
                    if let Ok((index, r)) = done {
                        self.obs_connected(index, r);
                    }
                }
            }
        }
        Ok(())
    }

    fn target_for(&self, p: &StudyPlayer) -> ObsTarget {
        match self.s.players.seats.get(p.index as usize - 1) {
            Some(seat) => ObsTarget::for_seat(self.s, seat),
            None => ObsTarget::for_player(self.s, p.label.clone(), p.ip),
        }
    }

    async fn resolve_obs_failures(&mut self, policy: OnFailure) -> Result<(), Error> {
        self.drain_events().await?;
        let failed: Vec<StudyPlayer> = self.active().filter(|p| !p.obs_ok).cloned().collect();
        if failed.is_empty() {
            return Ok(());
        }
        let reasons: BTreeMap<u32, String> = failed
            .iter()
            .map(|p| {
                let why = self
                    .manifest
                    .players
                    .iter()
                    .find(|r| r.index == p.index)
                    .and_then(|r| r.obs.error.clone())
                    .unwrap_or_else(|| "OBS not connected".into());
                (p.index, why)
            })
            .collect();
        let reason = |p: &StudyPlayer| reasons[&p.index].clone();
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
                    let why = reason(p);
                    warn!(player = %p.label, "continuing without a recording: {why}");
                    self.manifest.push_event(
                        Event::new(
                            EventKind::Warning,
                            format!("no recordings for {}: {why}", p.label),
                        )
                        .player(p.index),
                    );
                }
                Ok(())
            }
            OnFailure::Kick => {
                let arena = self.arena()?;
                for p in &failed {
                    let why = format!("OBS not reachable: {}", reason(p));
                    warn!(player = %p.label, slot = p.slot, "kicking: {why}");
                    arena.kick(p.slot).await?;
                    self.manifest.kick(p.index, why);
                    if let Some(sp) = self.players.iter_mut().find(|x| x.index == p.index) {
                        sp.presence = Presence::Kicked;
                    }
                    self.fleet.remove(&p.label);
                }
                if self.active().count() == 0 {
                    return Err(Error::RunFailed(
                        "every player was kicked; nobody left to study".into(),
                    ));
                }
                info!("\n{}", self.roster_table());
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
        let rec = match applied {
            Ok(a) => ShapingRecord {
                applied: a.applied,
                at: Some(Timestamp::now()),
                config: serde_json::to_value(&a).unwrap_or_default(),
                error: None,
            },
            Err(e) => {
                self.manifest.push_event(
                    Event::new(EventKind::LatencyFailure, e.to_string()).match_no(match_no),
                );
                if let Some(m) = self.manifest.match_mut(match_no) {
                    m.shaping = Some(ShapingRecord {
                        applied: false,
                        at: Some(Timestamp::now()),
                        config: serde_json::Value::Null,
                        error: Some(e.to_string()),
                    });
                }
                // Playing a match at the wrong latency would spoil the data: stop.
                return Err(e.into());
            }
        };
        if let Some(m) = self.manifest.match_mut(match_no) {
            m.shaping = Some(rec);
        }
        Ok(())
    }

    fn recording_name(&self, p: &StudyPlayer, match_no: u32) -> Result<String, Error> {
        let planned = self
            .plan
            .matches
            .iter()
            .find(|m| m.number == match_no)
            .ok_or_else(|| Error::Internal(format!("match {match_no} is not in the plan")))?;
        let vars = vars_for_match(self.s, planned, p.index - 1, &p.label);
        self.template
            .render(&vars)
            .map_err(|e| Error::Internal(format!("recording name {e}")))
    }

    async fn start_recordings(&mut self, match_no: u32) -> Result<(), Error> {
        self.drain_events().await?;
        let mut names = Vec::new();
        for p in self.active().filter(|p| p.obs_ok) {
            names.push((p.index, p.label.clone(), self.recording_name(p, match_no)?));
        }
        for (index, _, name) in &names {
            self.manifest
                .add_recording(RecordingRecord::planned(*index, match_no, name.clone()));
        }
        let list: Vec<(String, String)> = names
            .iter()
            .map(|(_, l, n)| (l.clone(), n.clone()))
            .collect();
        let report = self.fleet.start_all(&list, IfActive::Refuse).await;
        for r in &report.recordings {
            let Some((index, ..)) = names.iter().find(|(_, l, _)| *l == r.label) else {
                continue;
            };
            if let Some(sp) = self.players.iter_mut().find(|p| p.index == *index) {
                sp.recording = r.ok();
            }
            if let Some(rec) = self.manifest.recording_mut(*index, match_no) {
                *rec = r.to_record(*index, match_no);
            }
            // OBS does not overwrite: an existing file makes it save as `name (2).mkv`.
            if let Some(path) = &r.path
                && let Some((_, planned)) = names
                    .iter()
                    .map(|(i, _, n)| (i, n))
                    .find(|(i, _)| *i == index)
                && std::path::Path::new(path)
                    .file_stem()
                    .and_then(|s| s.to_str())
                    != Some(planned.as_str())
            {
                let msg = format!(
                    "{}: OBS saved the recording as {path}, not as {planned} (a file of that name existed)",
                    r.label
                );
                warn!("{msg}");
                self.manifest.push_event(
                    Event::new(EventKind::Warning, msg)
                        .player(*index)
                        .match_no(match_no),
                );
            }
            if let Some(e) = &r.error {
                warn!(player = %r.label, "recording did not start: {e}");
                self.manifest.push_event(
                    Event::new(EventKind::RecordingFailure, format!("{}: {e}", r.label))
                        .player(*index)
                        .match_no(match_no),
                );
            }
        }
        if let Some(ms) = report.skew_ms {
            self.metrics.start_skew_ms.push((match_no, ms));
            info!(
                "match {match_no}: {} recordings started, skew {ms:.1} ms",
                report.recordings.iter().filter(|r| r.ok()).count()
            );
        }
        Ok(())
    }

    async fn play_match(&mut self, match_no: u32, spec: &MatchSpec) -> Result<(), Error> {
        let arena = self.arena()?;
        let live = arena.start_match(spec).await?;
        let started = Instant::now();
        if let Some(m) = self.manifest.match_mut(match_no) {
            m.started_at = Some(Timestamp::now());
            m.map = live.map.clone();
        }
        self.save()?;
        let total = match spec.end {
            crate::plan::MatchEnd::ServerTimelimit { minutes } => Duration::from_secs(minutes * 60),
            crate::plan::MatchEnd::Runner { after } => after.std(),
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let end = arena.await_end(&live);
        tokio::pin!(end);
        let outcome: MatchOutcome = loop {
            tokio::select! {
                r = &mut end => break r?,
                _ = tick.tick() => {
                    self.progress.clock(&format!("match {match_no}"), started.elapsed(), total);
                    self.drain_events().await?;
                }
            }
        };
        self.match_end.insert(match_no, Instant::now());
        let ended_by = match outcome.how_ended {
            HowEnded::Timelimit => MatchEnding::Timelimit,
            HowEnded::Fraglimit | HowEnded::Capturelimit => MatchEnding::Fraglimit,
            HowEnded::RunnerDuration => MatchEnding::Runner,
            HowEnded::OvertimeExpired => MatchEnding::Overtime,
            HowEnded::OtherExit(_) | HowEnded::Restarted => MatchEnding::Aborted,
        };
        info!(
            "match {match_no} ended: {:?} after {:.1}s{}",
            outcome.how_ended,
            outcome.duration_s,
            if outcome.sudden_death {
                " (sudden death)"
            } else {
                ""
            }
        );
        if let Some(m) = self.manifest.match_mut(match_no) {
            m.started_at = Some(Timestamp(outcome.started_at));
            m.ended_at = Some(Timestamp(outcome.ended_at));
            m.ended_by = Some(ended_by);
            m.end_detail = Some(format!(
                "{:?}{}, {:.1}s",
                outcome.how_ended,
                if outcome.sudden_death {
                    ", sudden death"
                } else {
                    ""
                },
                outcome.duration_s
            ));
        }
        Ok(())
    }

    async fn stop_recordings(&mut self, match_no: u32) -> Result<(), Error> {
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
        if let Some(end) = self.match_end.get(&match_no) {
            let d = end.elapsed();
            self.metrics.end_to_stopped.push((match_no, d));
            info!(
                "match {match_no}: every recording final {:.2}s after the match ended",
                d.as_secs_f64()
            );
        }
        self.drain_events().await?;
        Ok(())
    }

    fn record_stop(&mut self, index: u32, match_no: u32, r: &crate::obs::RecordingReport) {
        if let Some(rec) = self.manifest.recording_mut(index, match_no) {
            // The report carries the whole recording (start and stop); a start error stays.
            let start_error = rec.error.take();
            *rec = r.to_record(index, match_no);
            if start_error.is_some() {
                rec.error = start_error;
            }
        }
        if let Some(e) = &r.error {
            warn!(player = %r.label, "recording did not stop cleanly: {e}");
            self.manifest.push_event(
                Event::new(EventKind::RecordingFailure, format!("{}: {e}", r.label))
                    .player(index)
                    .match_no(match_no),
            );
        }
    }

    /// Leave the lab as it was. Every part runs even if an earlier one failed; returns whether
    /// all of it succeeded.
    async fn teardown(&mut self) -> bool {
        let mut clean = true;
        self.connecting.abort_all();
        // 1. Recordings: anything still recording (this run's, or reconciled after a reconnect).
        let (stopped, failures) = self.fleet.stop_leftovers().await;
        let m = self.current_match();
        for label in &stopped {
            info!(player = %label, "stopped a recording that was still running");
            if let Some(index) = self
                .players
                .iter()
                .find(|p| &p.label == label)
                .map(|p| p.index)
                && let Some(rec) = self.manifest.recording_mut(index, m)
                && rec.stopped_at.is_none()
            {
                rec.stopped_at = Some(Timestamp::now());
                rec.error
                    .get_or_insert_with(|| "stopped early by cleanup".into());
            }
        }
        for (label, e) in failures {
            clean = false;
            self.manifest.push_event(Event::new(
                EventKind::Cleanup,
                format!("could not stop the recording on {label}: {e}"),
            ));
        }
        // 2. Latency.
        let sh = self.shaper.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut sh) = sh {
            match sh.teardown() {
                Ok(r) => self.manifest.push_event(Event::new(
                    EventKind::Cleanup,
                    format!("latency tree removed ({} commands)", r.commands.len()),
                )),
                Err(e) => {
                    clean = false;
                    self.manifest
                        .push_event(Event::new(EventKind::Cleanup, format!("latency: {e}")));
                }
            }
        }
        // 3. Server.
        self.events = None;
        if let Some(arena) = self.arena.take() {
            match Arc::try_unwrap(arena) {
                Ok(arena) => {
                    if let Some(report) = arena.stop().await {
                        self.manifest.push_event(Event::new(
                            EventKind::Cleanup,
                            format!("server stopped: {report:?}"),
                        ));
                    }
                }
                // Someone still holds it: dropping our handle ends a launched server (Drop).
                Err(arena) => drop(arena),
            }
            *self.server_pid.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        // 4. OBS connections.
        let fleet = std::mem::replace(
            &mut self.fleet,
            Fleet::new(ObsConfig::from_scenario(self.s)),
        );
        fleet.close().await;
        clean
    }

    fn metrics_summary(&mut self) {
        let fmt = |v: &[(u32, Duration)]| {
            v.iter()
                .map(|(i, d)| format!("{i}:{:.2}s", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let msg = format!(
            "timings: join→OBS connected [{}]; match end→recordings final [{}]; start skew ms [{}]",
            fmt(&self.metrics.join_to_obs),
            fmt(&self.metrics.end_to_stopped),
            self.metrics
                .start_skew_ms
                .iter()
                .map(|(m, s)| format!("{m}:{s:.1}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        info!("{msg}");
        self.manifest.push_event(Event::new(EventKind::Info, msg));
    }
}

fn step_match(step: &Step) -> Option<u32> {
    match step {
        Step::SetLatency { match_no, .. }
        | Step::StartRecordings { match_no, .. }
        | Step::PlayMatch { match_no, .. }
        | Step::StopRecordings { match_no, .. } => Some(*match_no),
        _ => None,
    }
}
