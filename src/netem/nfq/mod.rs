//! The userspace latency shaper (`latency.shaper: nfqueue`) for kernels without sch_netem:
//! iptables sends each player's game packets to an NFQUEUE, and oa-run holds each one for that
//! player's delay before accepting it.
//!
//! - [`commands`]: the exact iptables commands (dry run, golden tests) and leftover parsing.
//! - [`schedule`]: the pure release-time logic (delay, jitter without reordering, loss).
//! - [`socket`]: the NFQUEUE netlink socket (batched reads and verdicts, a wait to the next due
//!   packet).
//! - [`worker`]: the thread that owns the queue socket.
//!
//! [`NfqShaper`] is what [`crate::netem::LatencyShaper`] holds for this backend: `setup` removes
//! leftovers of a killed run, binds the queue, installs the rules and verifies them;
//! `apply_match` swaps the in-memory table; `teardown` removes only oa-run's jumps and chains,
//! then releases whatever is still held.

pub mod commands;
pub mod schedule;
pub mod socket;
pub mod worker;

use serde::Serialize;

use super::commands::{Target, TcCommand};
use super::error::NetemError;
use super::lock::InterfaceLock;
use super::preflight::lock_for;
use super::runner::{CommandRunner, QueueHome, RunFailure, run_checked};
use super::shaper::Player;
use commands::{Family, Found, QUEUE_NUM, RuleSpec};
use schedule::Profile;
use worker::{Table, Way, Worker};

/// The lock name of the userspace shaper (one per network namespace: the queue number and the
/// chain names are fixed).
const LOCK_NAME: &str = "nfqueue";

/// One player's shaping in one direction, as in force.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueDirection {
    /// The delay asked for, in milliseconds.
    pub delay_ms: f64,
    #[serde(skip_serializing_if = "is_zero")]
    pub jitter_ms: f64,
    #[serde(skip_serializing_if = "is_zero")]
    pub loss_pct: f64,
    /// Packets queued so far (cumulative since setup).
    pub packets: u64,
    /// Packets dropped on purpose (the level's loss), cumulative.
    pub lost: u64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl QueueDirection {
    fn of(p: Profile, c: &worker::LaneCounters) -> QueueDirection {
        use std::sync::atomic::Ordering::Relaxed;
        QueueDirection {
            delay_ms: p.delay_us as f64 / 1000.0,
            jitter_ms: p.jitter_us as f64 / 1000.0,
            loss_pct: f64::from(p.loss_ppm) / 10_000.0,
            packets: c.packets.load(Relaxed),
            lost: c.lost.load(Relaxed),
        }
    }
}

/// One player's userspace shaping (`shaper: nfqueue`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueuedPlayer {
    /// Server → player.
    pub egress: QueueDirection,
    /// Player → server (`split: symmetric`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<QueueDirection>,
}

/// What a player gets in one match: (egress, ingress) profiles; ingress only with `symmetric`.
pub type PlayerProfiles = (Profile, Option<Profile>);

/// The shaper's kernel side and its thread.
pub struct NfqShaper {
    spec: RuleSpec,
    runner: Box<dyn CommandRunner>,
    players: Vec<Player>,
    /// Families whose rules were (at least partly) installed.
    installed: Vec<Family>,
    worker: Option<Worker>,
    generation: u64,
    last: Vec<PlayerProfiles>,
    _lock: Option<InterfaceLock>,
}

fn lane(index: u32, way: Way) -> usize {
    (index as usize - 1) * 2 + usize::from(way == Way::Ingress)
}

/// Read oa-run's chains and jumps of `family` (`None`: that program is not installed).
fn find(
    runner: &dyn CommandRunner,
    family: Family,
    what: &str,
) -> Result<Option<Found>, NetemError> {
    let cmd = commands::ipt(family, &["-S"]);
    match runner.run(&cmd) {
        Err(RunFailure::NotFound { .. }) if family == Family::V6 => Ok(None),
        _ => {
            let out = run_checked(runner, &cmd, what)?;
            Ok(Some(commands::parse_found(&out.stdout)))
        }
    }
}

/// Remove every chain of oa-run's and every jump into one (both families), and nothing else.
/// Returns one sentence per removed piece. The caller holds the lock.
fn remove_found(runner: &dyn CommandRunner) -> Result<Vec<String>, NetemError> {
    let mut removed = Vec::new();
    for fam in [Family::V4, Family::V6] {
        let Some(found) = find(runner, fam, LOCK_NAME)? else {
            continue;
        };
        for cmd in commands::reset_commands(fam, &found) {
            run_checked(runner, &cmd, LOCK_NAME)?;
        }
        for j in &found.jumps {
            removed.push(format!("{} rule `{j}`", fam.program()));
        }
        for c in &found.chains {
            removed.push(format!("{} chain {c}", fam.program()));
        }
    }
    Ok(removed)
}

/// `oa-run net-reset`'s part for the userspace shaper: remove oa-run's chains and jumps,
/// refusing while a live oa-run holds them.
pub fn reset(runner: &dyn CommandRunner) -> Result<Vec<String>, NetemError> {
    let _lock = lock_for(runner, LOCK_NAME)?;
    remove_found(runner)
}

/// Whether this kernel lets a process bind an NFQUEUE (probed in a private namespace where
/// possible, so no traffic is touched).
pub fn queue_probe() -> super::Probe {
    // Binding needs no rule: it only registers the queue with nfnetlink_queue.
    match socket::QueueSocket::open(QUEUE_NUM.wrapping_add(1)).and_then(|mut q| {
        q.bind()?;
        q.unbind()
    }) {
        Ok(()) => super::Probe::Available,
        Err(e) => super::Probe::Missing(format!("cannot bind an NFQUEUE: {e}")),
    }
}

impl NfqShaper {
    /// Remove leftovers, bind the queue (all delays zero), install and verify the rules. On
    /// failure whatever was installed is removed again.
    pub fn setup(
        spec: RuleSpec,
        players: &[Player],
        queue_len: u32,
        runner: Box<dyn CommandRunner>,
    ) -> Result<NfqShaper, NetemError> {
        runner
            .permission()
            .map_err(|detail| NetemError::NotPermitted {
                interface: spec.interface.clone(),
                detail,
            })?;
        let lock = lock_for(runner.as_ref(), LOCK_NAME)?;
        let left = remove_found(runner.as_ref())?;
        if !left.is_empty() {
            tracing::warn!(
                "removed latency rules left by an earlier oa-run run (crashed or killed?): {}",
                left.join("; ")
            );
        }
        let lanes = players.iter().map(|p| p.index as usize).max().unwrap_or(0) * 2;
        let worker = match runner.queue_home() {
            QueueHome::Nowhere => None,
            home => Some(
                Worker::start(home, spec.queue_num, queue_len, lanes)
                    .map_err(|detail| NetemError::QueueUnavailable { detail })?,
            ),
        };
        let mut me = NfqShaper {
            spec,
            runner,
            players: players.to_vec(),
            installed: Vec::new(),
            worker,
            generation: 0,
            last: Vec::new(),
            _lock: lock,
        };
        let zero = vec![(Profile::default(), None); me.players.len()];
        let built = me.install().and_then(|()| me.apply(None, &zero).map(drop));
        if let Err(e) = built {
            if let Err(te) = me.teardown() {
                tracing::error!("could not remove the half-installed latency rules: {te}");
            }
            return Err(e);
        }
        Ok(me)
    }

    fn targets(&self) -> Vec<Target> {
        self.players.iter().map(Target::from).collect()
    }

    fn install(&mut self) -> Result<(), NetemError> {
        let targets = self.targets();
        for cmd in commands::build_commands(&self.spec, &targets) {
            let fam = if cmd.program == Family::V6.program() {
                Family::V6
            } else {
                Family::V4
            };
            if !self.installed.contains(&fam) {
                self.installed.push(fam);
            }
            run_checked(self.runner.as_ref(), &cmd, &self.spec.interface)?;
        }
        self.verify_rules(None)
    }

    /// Check that the chains and jumps are exactly as built.
    fn verify_rules(&self, match_no: Option<u32>) -> Result<(), NetemError> {
        let targets = self.targets();
        let fail = |detail: String| NetemError::VerifyFailed {
            match_no,
            device: self.spec.interface.clone(),
            detail,
        };
        for fam in commands::families(&targets) {
            let out = run_checked(
                self.runner.as_ref(),
                &commands::ipt(fam, &["-S"]),
                &self.spec.interface,
            )?;
            let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
            for want in commands::expected_rules(&self.spec, fam, &targets)
                .iter()
                .chain(&commands::expected_jumps(&self.spec))
            {
                if !lines.contains(&want.as_str()) {
                    return Err(fail(format!("{} has no rule `{want}`", fam.program())));
                }
            }
        }
        Ok(())
    }

    /// Put `profiles[i]` (player `i + 1`'s) in force for the match, atomically, after checking
    /// that the rules are still in place.
    pub fn apply(
        &mut self,
        match_no: Option<u32>,
        profiles: &[PlayerProfiles],
    ) -> Result<Vec<QueuedPlayer>, NetemError> {
        if match_no.is_some() {
            self.verify_rules(match_no)?;
        }
        self.generation += 1;
        let mut table = Table {
            generation: self.generation,
            ..Table::default()
        };
        for p in &self.players {
            let (eg, ing) = profiles.get(p.index as usize - 1).copied().ok_or_else(|| {
                NetemError::Internal(format!("no profile for player {}", p.index))
            })?;
            table
                .lanes
                .insert((p.ip, Way::Egress), (lane(p.index, Way::Egress), eg));
            if let Some(ing) = ing {
                table
                    .lanes
                    .insert((p.ip, Way::Ingress), (lane(p.index, Way::Ingress), ing));
            }
        }
        if let Some(w) = &self.worker {
            if let Some(e) = w.error.lock().ok().and_then(|g| g.clone()) {
                tracing::warn!("userspace shaper: {e}");
            }
            let got = w
                .set_table(table)
                .map_err(|detail| NetemError::QueueFailed { match_no, detail })?;
            if got != self.generation {
                return Err(NetemError::QueueFailed {
                    match_no,
                    detail: format!("table {got} in force, {} expected", self.generation),
                });
            }
        }
        self.last = profiles.to_vec();
        Ok(self.in_force())
    }

    /// Each player's (egress, ingress) as now in force, with counters.
    pub fn in_force(&self) -> Vec<QueuedPlayer> {
        self.players
            .iter()
            .map(|p| {
                let (eg, ing) = self
                    .last
                    .get(p.index as usize - 1)
                    .copied()
                    .unwrap_or_default();
                let c = |way| {
                    self.worker
                        .as_ref()
                        .and_then(|w| w.counters.get(lane(p.index, way)))
                };
                let zero = worker::LaneCounters::default();
                QueuedPlayer {
                    egress: QueueDirection::of(eg, c(Way::Egress).unwrap_or(&zero)),
                    ingress: ing.map(|i| QueueDirection::of(i, c(Way::Ingress).unwrap_or(&zero))),
                }
            })
            .collect()
    }

    /// The commands teardown runs for what was installed.
    pub fn teardown_commands(&self) -> Vec<TcCommand> {
        commands::teardown_commands(&self.spec, &self.installed)
    }

    /// Remove the jumps and chains (only oa-run's), then release every held packet and close
    /// the queue. Idempotent; every step is attempted, the first failure is returned.
    pub fn teardown(&mut self) -> Result<Vec<String>, NetemError> {
        let mut done = Vec::new();
        let mut first_err = None;
        for cmd in self.teardown_commands() {
            done.push(cmd.to_string());
            match self.runner.run(&cmd) {
                Ok(o) if o.success => {}
                // Already gone (a chain that was never created, a jump removed by hand).
                Ok(o) if is_absent(&o.stderr) => {}
                Ok(o) => {
                    let e = super::runner::classify(&cmd, &o.stderr, &self.spec.interface);
                    tracing::error!(command = %cmd, "latency teardown step failed: {e}");
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    let e = run_checked(self.runner.as_ref(), &cmd, &self.spec.interface)
                        .err()
                        .unwrap_or_else(|| NetemError::Internal("teardown".into()));
                    first_err.get_or_insert(e);
                }
            }
        }
        self.installed.clear();
        if let Some(mut w) = self.worker.take() {
            match w.stop() {
                Ok(n) if n > 0 => tracing::info!("released {n} held packets at teardown"),
                Ok(_) => {}
                Err(detail) => {
                    first_err.get_or_insert(NetemError::QueueFailed {
                        match_no: None,
                        detail,
                    });
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// Leave the rules in place and stop the thread as SIGKILL would (the queue closes, so
    /// `--queue-bypass` lets traffic through): for tests of leftover handling.
    #[doc(hidden)]
    pub fn simulate_crash(mut self) {
        self.installed.clear();
        drop(self.worker.take());
        drop(self._lock.take());
    }
}

/// iptables' answers for a rule or chain that does not exist.
fn is_absent(stderr: &str) -> bool {
    let l = stderr.to_ascii_lowercase();
    l.contains("does a matching rule exist")
        || l.contains("no chain/target/match by that name")
        || l.contains("bad rule")
        || l.contains("doesn't exist")
}

impl Drop for NfqShaper {
    fn drop(&mut self) {
        if (!self.installed.is_empty() || self.worker.is_some())
            && let Err(e) = self.teardown()
        {
            tracing::error!(
                "could not remove the latency rules: {e}; run `oa-run net-reset --interface {}`",
                self.spec.interface
            );
        }
    }
}
