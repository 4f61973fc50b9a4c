//! The run-time object: builds the tree once, changes the leaves per match, verifies every
//! change against the kernel, and removes the tree (explicitly, or when dropped).

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use super::commands::{
    Created, Direction, LeafKind, Target, TcCommand, TreeSpec, build_commands, match_commands,
    split_delay, teardown_commands,
};
use super::error::NetemError;
use super::lock::InterfaceLock;
use super::nfq::{self, NfqShaper, QueuedPlayer, commands::RuleSpec, schedule::Profile};
use super::preflight::{self, QdiscBrief};
use super::runner::{CommandRunner, run_checked};
use super::verify::{AppliedDirection, DeviceState, check_direction, check_redirect, read_device};
use crate::scenario::{Latency, Shaper, Split};

/// A player whose traffic is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Player {
    /// 1-based index: the row of the latency design (position in `SetLatency::latency_ms` + 1).
    pub index: u32,
    /// The address the server sees for this player.
    pub ip: IpAddr,
}

impl From<&Player> for Target {
    fn from(p: &Player) -> Target {
        Target {
            index: p.index,
            ip: Some(p.ip),
        }
    }
}

/// Options for [`LatencyShaper::setup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupOptions {
    /// Replace root/ingress qdiscs oa-run did not create (they are not restored afterwards).
    pub force: bool,
    /// Leaf qdisc kind; [`LeafKind::Pfifo`] only for tests on kernels without netem.
    pub leaf: LeafKind,
    /// The server's UDP game port: only game traffic to and from it is shaped.
    pub game_port: u16,
}

impl Default for SetupOptions {
    fn default() -> Self {
        SetupOptions {
            force: false,
            leaf: LeafKind::default(),
            game_port: super::commands::DEFAULT_GAME_PORT,
        }
    }
}

/// One player's latency in one match, as applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppliedPlayer {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// Added round-trip delay the plan asks for.
    pub latency_ms: u64,
    /// Server → player half (the whole delay with `split: egress`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<AppliedDirection>,
    /// Player → server half (`split: symmetric`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<AppliedDirection>,
    /// With `shaper: nfqueue`: what oa-run's own queue holds this player's game packets for,
    /// per direction, with packet counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nfqueue: Option<QueuedPlayer>,
}

/// The latency configuration of one match, for the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct AppliedMatch {
    pub match_no: u32,
    /// `false` with `latency.shaper: none`: planned and recorded, not applied.
    pub applied: bool,
    /// The shaper in force (`auto` resolved to `tc` or `nfqueue`).
    pub shaper: Shaper,
    pub split: Split,
    pub interface: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifb: Option<String>,
    pub players: Vec<AppliedPlayer>,
    /// Everything read back from the kernel after the change (qdiscs with raw counters,
    /// classes with counters, filters).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceState>,
}

/// What teardown did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TeardownReport {
    pub commands: Vec<String>,
    /// Whether the interface's qdiscs read back exactly as before the run (and the ifb is gone).
    pub restored: bool,
}

struct Active {
    runner: Box<dyn CommandRunner>,
    spec: TreeSpec,
    created: Created,
    /// The interface as found (after removing leftovers), which teardown must restore.
    baseline: Vec<QdiscBrief>,
    /// Held until teardown: while it is held the tree is not a leftover.
    _lock: Option<InterfaceLock>,
}

/// Latency shaping for one run. With `latency.shaper: tc` it owns the tree on the interface and
/// removes it on [`teardown`](Self::teardown) or, failing that, when dropped; with `none` it
/// only records the planned matrix.
pub struct LatencyShaper {
    /// The shaper in force (never `auto`).
    shaper: Shaper,
    split: Split,
    interface: String,
    players: Vec<Player>,
    active: Option<Active>,
    /// The userspace backend (`shaper: nfqueue`).
    queue: Option<NfqShaper>,
    /// The study's levels (jitter and loss of a level, found by its delay).
    levels: Vec<crate::scenario::Level>,
}

impl std::fmt::Debug for LatencyShaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyShaper")
            .field("shaper", &self.shaper)
            .field("interface", &self.interface)
            .field("players", &self.players)
            .field("active", &self.active.is_some())
            .field("queue", &self.queue.is_some())
            .finish()
    }
}

fn check_players(players: &[Player]) -> Result<(), NetemError> {
    let mut by_ip: HashMap<IpAddr, u32> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for p in players {
        if p.index == 0 || p.index > super::commands::MAX_PLAYER_INDEX || !seen.insert(p.index) {
            return Err(NetemError::Internal(format!(
                "player index {} is out of range or repeated",
                p.index
            )));
        }
        if let Some(first) = by_ip.insert(p.ip, p.index) {
            return Err(NetemError::SharedAddress {
                first,
                second: p.index,
                ip: p.ip,
            });
        }
    }
    Ok(())
}

/// Warn when a player's address is the one this SSH session comes from: its SSH traffic would
/// be delayed too (the default class only protects other addresses).
fn warn_about_ssh(players: &[Player]) {
    let Some(client) = std::env::var("SSH_CONNECTION")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<IpAddr>().ok())
    else {
        return;
    };
    if let Some(p) = players.iter().find(|p| p.ip == client) {
        tracing::warn!(
            "player {} has the address this SSH session comes from ({client}); that SSH session \
             will be delayed with the player",
            p.index
        );
    }
}

impl LatencyShaper {
    /// Build the tree for `players` (all delays zero) and verify it. With `latency.shaper:
    /// none` nothing is touched. On any failure whatever was built is removed again before the
    /// error is returned.
    pub fn setup(
        latency: &Latency,
        players: &[Player],
        opts: SetupOptions,
        runner: Box<dyn CommandRunner>,
    ) -> Result<LatencyShaper, NetemError> {
        check_players(players)?;
        let (shaper, why) = super::resolve_shaper(latency.shaper);
        let mut me = LatencyShaper {
            shaper,
            split: latency.split,
            interface: latency.interface.clone(),
            players: players.to_vec(),
            active: None,
            queue: None,
            levels: latency.levels.clone(),
        };
        match shaper {
            Shaper::None => {
                tracing::info!(
                    "latency shaper `none`: latencies are planned and recorded, not applied"
                );
                return Ok(me);
            }
            Shaper::Nfqueue => {
                tracing::info!("latency shaper `nfqueue` ({why})");
                let spec = RuleSpec {
                    interface: latency.interface.clone(),
                    split: latency.split,
                    game_port: opts.game_port,
                    queue_num: nfq::commands::QUEUE_NUM,
                };
                me.queue = Some(NfqShaper::setup(spec, players, latency.limit, runner)?);
                tracing::info!(
                    interface = %latency.interface,
                    players = players.len(),
                    split = ?latency.split,
                    "latency queue rules installed"
                );
                return Ok(me);
            }
            Shaper::Tc | Shaper::Auto => tracing::info!("latency shaper `tc` ({why})"),
        }
        warn_about_ssh(players);
        let spec = TreeSpec::new(latency, opts.leaf, opts.game_port);
        let (found, lock) = preflight::preflight(runner.as_ref(), &spec, opts.force)?;
        // From here on the Drop guard owns cleanup.
        me.active = Some(Active {
            runner,
            spec: spec.clone(),
            created: Created::default(),
            baseline: found.qdiscs,
            _lock: lock,
        });
        let targets: Vec<Target> = players.iter().map(Target::from).collect();
        let zeros = vec![0; players.iter().map(|p| p.index as usize).max().unwrap_or(0)];
        let built = build_commands(&spec, &targets)
            .iter()
            .try_for_each(|cmd| me.run_tracked(cmd))
            .and_then(|()| me.verify(None, &zeros).map(drop));
        if let Err(e) = built {
            // Undo exactly what exists before reporting the failure.
            if let Err(te) = me.teardown() {
                tracing::error!("could not remove the half-built latency tree: {te}");
            }
            return Err(e);
        }
        tracing::info!(
            interface = %spec.interface,
            players = players.len(),
            split = ?spec.split,
            "latency tree built"
        );
        Ok(me)
    }

    /// Leave the tree in the kernel and release the interface lock, as a crash (SIGKILL, power
    /// loss of the process) would: for tests of leftover handling. Never use it in a run.
    #[doc(hidden)]
    pub fn simulate_crash(mut self) {
        if let Some(a) = self.active.take() {
            drop(a._lock);
            std::mem::forget(a.runner);
        }
        if let Some(q) = self.queue.take() {
            q.simulate_crash();
        }
    }

    /// The shaper in force (`auto` resolved).
    pub fn shaper(&self) -> Shaper {
        self.shaper
    }

    /// Whether latencies are really applied (`false` with `shaper: none` or after teardown).
    pub fn is_applied(&self) -> bool {
        self.active.is_some() || self.queue.is_some()
    }

    pub fn players(&self) -> &[Player] {
        &self.players
    }

    fn run_tracked(&mut self, cmd: &TcCommand) -> Result<(), NetemError> {
        let a = self
            .active
            .as_mut()
            .ok_or_else(|| NetemError::Internal("the latency tree was already removed".into()))?;
        run_checked(a.runner.as_ref(), cmd, &a.spec.interface)?;
        if let Some(p) = cmd.creates(&a.spec.interface) {
            a.created.add(p);
        }
        Ok(())
    }

    /// Set each player's delay for match `match_no` (`latency_ms[i]` is player `i + 1`'s added
    /// round-trip delay), then read the tree back and confirm it. Only leaves change.
    pub fn apply_match(
        &mut self,
        match_no: u32,
        latency_ms: &[u64],
    ) -> Result<AppliedMatch, NetemError> {
        if let Some(p) = self
            .players
            .iter()
            .find(|p| p.index as usize > latency_ms.len())
        {
            return Err(NetemError::Internal(format!(
                "match {match_no} gives {} latencies but player {} needs one",
                latency_ms.len(),
                p.index
            )));
        }
        if let Some(q) = self.queue.as_mut() {
            let profiles: Vec<nfq::PlayerProfiles> = latency_ms
                .iter()
                .map(|&ms| {
                    let level = crate::plan::latency::level_for_ms(&self.levels, ms);
                    let (eg, ing) = super::commands::split_level(self.split, &level);
                    let p = |l: super::commands::LeafParams| Profile {
                        delay_us: l.delay_us,
                        jitter_us: l.jitter_us,
                        loss_ppm: l.loss.ppm(),
                    };
                    (p(eg), ing.map(p))
                })
                .collect();
            let now = q.apply(Some(match_no), &profiles)?;
            let mut rec = self.planned_only(match_no, latency_ms);
            rec.applied = true;
            for (p, q) in rec.players.iter_mut().zip(now) {
                p.nfqueue = Some(q);
            }
            tracing::info!(match_no, "latency applied (userspace queue)");
            return Ok(rec);
        }
        if self.active.is_none() {
            if self.shaper != Shaper::None {
                return Err(NetemError::Internal(
                    "the latency shaper was already removed".into(),
                ));
            }
            return Ok(self.planned_only(match_no, latency_ms));
        }
        let spec = self.spec().clone();
        let indices: Vec<u32> = self.players.iter().map(|p| p.index).collect();
        for cmd in match_commands(&spec, &indices, latency_ms) {
            self.run_tracked(&cmd)?;
        }
        let rec = self.verify(Some(match_no), latency_ms)?;
        tracing::info!(match_no, "latency applied and verified");
        Ok(rec)
    }

    fn spec(&self) -> &TreeSpec {
        &self.active.as_ref().expect("active").spec
    }

    fn planned_only(&self, match_no: u32, latency_ms: &[u64]) -> AppliedMatch {
        AppliedMatch {
            match_no,
            applied: false,
            shaper: self.shaper,
            split: self.split,
            interface: self.interface.clone(),
            ifb: None,
            players: self
                .players
                .iter()
                .map(|p| AppliedPlayer {
                    index: p.index,
                    ip: Some(p.ip),
                    latency_ms: latency_ms[p.index as usize - 1],
                    egress: None,
                    ingress: None,
                    nfqueue: None,
                })
                .collect(),
            devices: Vec::new(),
        }
    }

    /// Read the tree back from the kernel (qdiscs, classes with counters, filters), e.g. at the
    /// end of a match. Empty when nothing is applied.
    pub fn read_back(&self) -> Result<Vec<DeviceState>, NetemError> {
        let Some(a) = &self.active else {
            return Ok(Vec::new());
        };
        let mut out = vec![read_device(
            a.runner.as_ref(),
            &a.spec.interface,
            a.spec.split == Split::Symmetric,
        )?];
        if let Some(ifb) = a.spec.ifb() {
            out.push(read_device(a.runner.as_ref(), &ifb, false)?);
        }
        Ok(out)
    }

    fn verify(
        &self,
        match_no: Option<u32>,
        latency_ms: &[u64],
    ) -> Result<AppliedMatch, NetemError> {
        let a = self.active.as_ref().expect("active");
        let devices = self.read_back()?;
        let fail = |device: &str, detail: String| NetemError::VerifyFailed {
            match_no,
            device: device.into(),
            detail,
        };
        let mut players = Vec::with_capacity(self.players.len());
        for p in &self.players {
            let ms = latency_ms[p.index as usize - 1];
            let (eg_us, in_us) = split_delay(a.spec.split, ms);
            let egress = check_direction(
                &a.spec,
                &devices[0],
                Direction::Egress,
                p.index,
                p.ip,
                eg_us,
            )
            .map_err(|d| fail(&a.spec.interface, d))?;
            let ingress = match (in_us, devices.get(1)) {
                (Some(us), Some(ifb)) => {
                    check_redirect(&devices[0], p.ip, a.spec.game_port, &ifb.device)
                        .map_err(|d| fail(&a.spec.interface, d))?;
                    Some(
                        check_direction(&a.spec, ifb, Direction::Ingress, p.index, p.ip, us)
                            .map_err(|d| fail(&ifb.device, d))?,
                    )
                }
                _ => None,
            };
            players.push(AppliedPlayer {
                index: p.index,
                ip: Some(p.ip),
                latency_ms: ms,
                egress: Some(egress),
                ingress,
                nfqueue: None,
            });
        }
        Ok(AppliedMatch {
            match_no: match_no.unwrap_or(0),
            applied: true,
            shaper: self.shaper,
            split: self.split,
            interface: a.spec.interface.clone(),
            ifb: a.spec.ifb(),
            players,
            devices,
        })
    }

    /// Remove the tree and restore the interface as found. Idempotent; also runs from `Drop`.
    /// Every removal is attempted even when one fails; the first failure is returned.
    pub fn teardown(&mut self) -> Result<TeardownReport, NetemError> {
        if let Some(mut q) = self.queue.take() {
            let commands = q.teardown()?;
            tracing::info!(interface = %self.interface, "latency queue rules removed");
            return Ok(TeardownReport {
                commands,
                restored: true,
            });
        }
        let Some(a) = self.active.take() else {
            return Ok(TeardownReport {
                commands: Vec::new(),
                restored: true,
            });
        };
        let dev = a.spec.interface.as_str();
        let mut report = TeardownReport::default();
        let mut first_err = None;
        for cmd in teardown_commands(&a.spec, a.created) {
            report.commands.push(cmd.to_string());
            if let Err(e) = preflight::delete(a.runner.as_ref(), &cmd, dev) {
                tracing::error!(command = %cmd, "latency teardown step failed: {e}");
                first_err.get_or_insert(e);
            }
        }
        match preflight::inspect(a.runner.as_ref(), dev) {
            Ok(now) => {
                report.restored = now.qdiscs == a.baseline && !now.ifb_exists;
                if !report.restored {
                    tracing::warn!(
                        interface = dev,
                        before = ?a.baseline,
                        after = ?now.qdiscs,
                        ifb_left = now.ifb_exists,
                        "after teardown the interface's qdiscs differ from how they were found"
                    );
                }
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => {
                tracing::info!(interface = dev, "latency tree removed");
                Ok(report)
            }
        }
    }
}

impl Drop for LatencyShaper {
    fn drop(&mut self) {
        if self.active.is_some() {
            tracing::warn!(
                interface = %self.interface,
                "latency tree still in place while shutting down; removing it"
            );
            if let Err(e) = self.teardown() {
                tracing::error!(
                    "could not remove the latency tree: {e}; run `oa-run net-reset --interface {}`",
                    self.interface
                );
            }
        }
    }
}
