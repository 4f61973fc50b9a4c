//! The OpenArena server: launch or attach, rcon, the game log, the roster, the match lifecycle.
//!
//! [`Arena`] is the one handle the executor holds. It owns (in launch mode) the server process,
//! an rcon client, and a monitor that tails games.log into [`ArenaState`] (roster + game phase,
//! published on a `watch` channel) and [`ArenaEvent`]s (a `broadcast` channel). Match control
//! (bots, kicks, starting a match and detecting its end) is in [`lifecycle`].
//!
//! Ground rules (reference/openarena.md): players are keyed by slot and never named in a
//! command; games.log, not stderr, is the event source; rcon is paced under the server's rate
//! limit and only harmless commands are resent.

pub mod error;
pub mod guard;
pub mod lifecycle;
pub mod log;
pub mod monitor;
pub mod rcon;
pub mod rcon_stats;
pub mod roster;
pub mod server;
pub mod stats;
pub mod status;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tracing::info;

pub use error::{ArenaError, Result};
pub use lifecycle::{HowEnded, LiveMatch, MatchOutcome, MatchSpec};
pub use monitor::{
    ArenaEvent, ArenaState, ExitInfo, FinalScore, GameState, PING_EVERY, Phase, PingSample, Stamp,
};
pub use rcon::{BotName, Cvar, MapName, Rcon, RconCmd, RconReply, rcon_target};
pub use roster::{Player, PlayerKind, Roster, display_clean};
pub use server::{LaunchSpec, ServerFiles, ServerProcess, StopReport};
pub use status::{Status, StatusRow, parse_dumpuser, parse_status};

use crate::check::CheckRow;
use crate::scenario::{Scenario, Secret};
use log::LogTail;
use monitor::Monitor;

/// The engine's slot limit (MAX_CLIENTS).
pub const MAX_SLOTS: u8 = 64;

/// Launched by oa-run, or already running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Launch,
    Attach,
}

/// Facts about the server for the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    pub mode: Mode,
    /// The address from the scenario.
    pub listen: SocketAddr,
    /// Where rcon goes (loopback for `0.0.0.0`).
    pub rcon_target: SocketAddr,
    pub games_log: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<ServerFiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// A server under oa-run's control.
pub struct Arena {
    rcon: Rcon,
    monitor: Monitor,
    state_rx: watch::Receiver<ArenaState>,
    process: Option<Arc<ServerProcess>>,
    /// A match whose cvars were set by [`Arena::prepare_match`] and not undone since.
    prepared: std::sync::Mutex<Option<MatchSpec>>,
    /// `g_warmup` is known to be [`server::HOLD_WARMUP_SECS`].
    hold_warmup_set: std::sync::atomic::AtomicBool,
    pub info: ServerInfo,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena").field("info", &self.info).finish()
    }
}

/// `sv_maxclients` for a scenario: every human and the larger bot group, plus two spare slots
/// (a late or reconnecting player), within the engine's limit.
pub fn max_clients_for(s: &Scenario) -> u32 {
    let bots = s.bots.warmup.count.max(s.bots.match_.count);
    (s.players.humans + bots + 2).clamp(2, u32::from(MAX_SLOTS))
}

fn parse_listen(address: &str) -> Result<SocketAddr> {
    address.parse().map_err(|_| ArenaError::InvalidArgument {
        what: "server address",
        detail: format!("`{address}` is not IP:PORT"),
    })
}

impl Arena {
    /// Launch or attach, as the scenario says. A launched server lives under `run_dir`.
    pub async fn start(s: &Scenario, run_dir: &Path) -> Result<Arena> {
        let listen = parse_listen(&s.server.address)?;
        match &s.server.launch {
            Some(l) => {
                Arena::launch(LaunchSpec {
                    binary: l.binary.clone(),
                    listen,
                    map: MapName::new(&l.map)?,
                    rcon_password: s.server.rcon_password.clone(),
                    max_clients: max_clients_for(s),
                    run_dir: run_dir.to_path_buf(),
                    start_timeout: Duration::from_secs(60),
                    user: Some(l.user.clone()),
                })
                .await
            }
            None => {
                let log = s.server.log.as_deref().ok_or(ArenaError::InvalidArgument {
                    what: "server.log",
                    detail: "attaching needs the path of the server's games.log".into(),
                })?;
                Arena::attach(listen, s.server.rcon_password.clone(), log).await
            }
        }
    }

    /// Start a fresh server and wait until it is in (held) warmup and answers rcon.
    pub async fn launch(spec: LaunchSpec) -> Result<Arena> {
        let process = Arc::new(ServerProcess::launch(&spec).await?);
        let target = rcon_target(spec.listen);
        let rcon = Rcon::new(target, spec.rcon_password.clone())?;
        let files = process.files.clone();
        let monitor = Monitor::start(
            LogTail::from_start(&files.games_log),
            rcon.clone(),
            Some(process.clone()),
        );
        let arena = Arena {
            state_rx: monitor.shared.state_tx.subscribe(),
            rcon,
            monitor,
            info: ServerInfo {
                mode: Mode::Launch,
                listen: spec.listen,
                rcon_target: target,
                games_log: files.games_log.clone(),
                pid: Some(process.pid()),
                files: Some(files),
            },
            process: Some(process),
            prepared: Default::default(),
            // Launched with `+set g_warmup`.
            hold_warmup_set: true.into(),
        };
        arena
            .wait_until("the first game to start", Duration::from_secs(10), |s| {
                matches!(s.game.phase, Phase::Warmup | Phase::Live)
            })
            .await?;
        // Proves rcon reaches it with this password (one request of the burst).
        arena.rcon.send(&RconCmd::status()).await?;
        Ok(arena)
    }

    /// Attach to a running server: check rcon, learn who is there from `status`, then follow
    /// its games.log from the current end.
    pub async fn attach(listen: SocketAddr, password: Secret, games_log: &Path) -> Result<Arena> {
        let target = rcon_target(listen);
        let rcon = Rcon::new(target, password)?;
        let reply = rcon.send(&RconCmd::status()).await?;
        std::fs::File::open(games_log).map_err(|source| ArenaError::Files {
            what: "cannot read the server's game log",
            path: games_log.to_path_buf(),
            source,
        })?;
        let monitor = Monitor::start(LogTail::from_end(games_log), rcon.clone(), None);
        {
            let st = parse_status(&reply.text);
            let mut t = monitor.shared.lock();
            let ev = t.apply_status(&st, 0, Utc::now());
            monitor.shared.publish(&mut t, ev);
        }
        info!(server = %target, log = %games_log.display(), "attached to the server");
        Ok(Arena {
            state_rx: monitor.shared.state_tx.subscribe(),
            rcon,
            monitor,
            info: ServerInfo {
                mode: Mode::Attach,
                listen,
                rcon_target: target,
                games_log: games_log.to_path_buf(),
                files: None,
                pid: None,
            },
            process: None,
            prepared: Default::default(),
            hold_warmup_set: false.into(),
        })
    }

    pub fn rcon(&self) -> &Rcon {
        &self.rcon
    }

    /// The current state (a copy).
    pub fn state(&self) -> ArenaState {
        self.state_rx.borrow().clone()
    }

    /// The current roster (a copy).
    pub fn roster(&self) -> Roster {
        self.state_rx.borrow().roster.clone()
    }

    /// A receiver that sees every state change.
    pub fn watch(&self) -> watch::Receiver<ArenaState> {
        self.state_rx.clone()
    }

    /// Events from now on (joins, leaves, game starts, exits …).
    pub fn subscribe(&self) -> broadcast::Receiver<ArenaEvent> {
        self.monitor.shared.events.subscribe()
    }

    /// Sample the humans' pings: ask `status` every [`PING_EVERY`] (sharing the roster's
    /// requests and the rcon rate budget) and report them as [`ArenaEvent::Pings`].
    pub fn sample_pings(&self, on: bool) {
        self.monitor
            .shared
            .sampling
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Ask `status` now and fold it into the roster.
    pub async fn refresh_roster(&self) -> Result<Roster> {
        let sent_seq = self.monitor.shared.lock().seq();
        let reply = self.rcon.send(&RconCmd::status()).await?;
        let st = parse_status(&reply.text);
        let mut t = self.monitor.shared.lock();
        let ev = t.apply_status(&st, sent_seq, Utc::now());
        self.monitor.shared.publish(&mut t, ev);
        Ok(t.state().roster.clone())
    }

    /// Before an OBS is contacted at a joining player's IP (studies without seats): ask
    /// `status` now and confirm that `slot` holds an active human at `ip` in a reply whose rows
    /// are not forged around it. The log and an earlier reply are not enough: the password is
    /// about to be sent to that address.
    pub async fn confirm_ip(&self, slot: u8, ip: std::net::IpAddr) -> Result<()> {
        let reply = self.rcon.send(&RconCmd::status()).await?;
        let st = parse_status(&reply.text);
        confirm_ip_in(&st, slot, ip).map_err(|problem| ArenaError::Slot { slot, problem })
    }

    /// Wait until the state satisfies `f`; fails on timeout or when the server process exits.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&ArenaState) -> bool,
    ) -> Result<ArenaState> {
        let mut rx = self.state_rx.clone();
        let fut = rx.wait_for(|s| s.server_exit.is_some() || f(s));
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(s)) => {
                if let Some(status) = &s.server_exit {
                    return Err(ArenaError::ServerExited {
                        during: "a wait",
                        status: status.clone(),
                        tail: self.stderr_tail(),
                    });
                }
                Ok(s.clone())
            }
            Ok(Err(_)) => Err(ArenaError::MonitorGone),
            Err(_) => Err(ArenaError::timeout(what, timeout)),
        }
    }

    /// Wait until `n` humans are in the game (IP known, map loaded).
    pub async fn wait_for_humans(&self, n: usize, timeout: Duration) -> Result<Vec<Player>> {
        let st = self
            .wait_until(&format!("{n} human player(s) to join"), timeout, |s| {
                s.roster.humans_in_game().count() >= n
            })
            .await?;
        Ok(st.roster.humans_in_game().cloned().collect())
    }

    fn stderr_tail(&self) -> String {
        self.info
            .files
            .as_ref()
            .map(|f| {
                let text = std::fs::read(&f.stderr_log)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(10)..].join("\n")
            })
            .unwrap_or_default()
    }

    /// Stop a launched server gracefully (SIGTERM → `ShutdownGame:`, SIGKILL after
    /// [`server::STOP_GRACE`]). An attached server is left running. `None` when attached.
    pub async fn stop(self) -> Option<StopReport> {
        let p = self.process.clone()?;
        let report = p.stop(server::STOP_GRACE).await;
        info!(graceful = report.graceful, shutdown_logged = report.shutdown_logged, status = %report.exit_status, "server stopped");
        Some(report)
    }

    /// The launched server's process, if any.
    pub fn process(&self) -> Option<&ServerProcess> {
        self.process.as_deref()
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // The monitor's task also holds the process; stop it here rather than whenever the
        // runtime gets round to dropping that task.
        if let Some(p) = &self.process {
            p.kill_now();
        }
    }
}

/// Rows for `oa-run check`: can the study use this server?
/// See [`Arena::confirm_ip`].
pub(crate) fn confirm_ip_in(
    st: &status::Status,
    slot: u8,
    ip: std::net::IpAddr,
) -> std::result::Result<(), String> {
    match st.rows.iter().find(|r| r.slot == slot) {
        Some(r) if r.is_zombie() => Err("has left".into()),
        Some(r) if r.ip() == Some(ip) => Ok(()),
        Some(_) => Err(format!("does not show {ip} in `status`")),
        None if st.tainted => Err("`status` was forged around this slot".into()),
        None => Err("is empty in `status`".into()),
    }
}

pub async fn check_rows(s: &Scenario) -> Vec<CheckRow> {
    let target = s.server.address.clone();
    let listen = match parse_listen(&target) {
        Ok(a) => a,
        Err(e) => {
            return vec![CheckRow::new("server", target, false).detail("error", e)];
        }
    };
    match &s.server.launch {
        Some(l) => vec![check_launch(listen, &l.binary, &l.map, &target)],
        None => check_attach(s, listen, &target).await,
    }
}

fn check_launch(listen: SocketAddr, binary: &Path, map: &str, target: &str) -> CheckRow {
    use std::os::unix::fs::PermissionsExt;
    let mut ok = true;
    let mut row_details: Vec<(&str, String)> = vec![("mode", "launch".into())];
    match std::fs::metadata(binary) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
            row_details.push(("binary", binary.display().to_string()));
        }
        Ok(_) => {
            ok = false;
            row_details.push((
                "binary",
                format!("{} is not an executable file", binary.display()),
            ));
        }
        Err(e) => {
            ok = false;
            row_details.push(("binary", format!("{}: {e}", binary.display())));
        }
    }
    // The server would silently move to another port if this one is taken.
    match std::net::UdpSocket::bind(listen) {
        Ok(_) => row_details.push(("port", "free".into())),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            ok = false;
            row_details.push((
                "port",
                format!("{} is in use (another server running?)", listen.port()),
            ));
        }
        Err(e) => {
            ok = false;
            row_details.push(("port", format!("cannot bind {listen}: {e}")));
        }
    }
    row_details.push(("map", map.to_string()));
    let mut row = CheckRow::new("server", target, ok);
    for (k, v) in row_details {
        row = row.detail(k, v);
    }
    row
}

async fn check_attach(s: &Scenario, listen: SocketAddr, target: &str) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    let rcon = match Rcon::new(rcon_target(listen), s.server.rcon_password.clone()) {
        Ok(r) => r,
        Err(e) => return vec![CheckRow::new("server", target, false).detail("error", e)],
    };
    let row = match rcon.send(&RconCmd::status()).await {
        Ok(reply) => {
            let st = parse_status(&reply.text);
            CheckRow::new("server", target, true)
                .detail("mode", "attach")
                .detail("reachable", "yes")
                .detail("rcon", "accepted")
                .detail("map", st.map.as_deref().unwrap_or("?"))
                .detail("humans", st.humans().count())
                .detail("bots", st.bots().count())
        }
        Err(e @ (ArenaError::BadPassword { .. } | ArenaError::NoPasswordSet { .. })) => {
            CheckRow::new("server", target, false)
                .detail("mode", "attach")
                .detail("reachable", "yes")
                .detail("rcon", "refused")
                .detail("error", e)
        }
        Err(e) => CheckRow::new("server", target, false)
            .detail("mode", "attach")
            .detail("reachable", "no")
            .detail("error", e),
    };
    rows.push(row);
    if let Some(log) = &s.server.log {
        let row = match std::fs::metadata(log) {
            Ok(m) if m.is_file() => match std::fs::File::open(log) {
                Ok(_) => CheckRow::new("server-log", log.display().to_string(), true)
                    .detail("bytes", m.len()),
                Err(e) => {
                    CheckRow::new("server-log", log.display().to_string(), false).detail("error", e)
                }
            },
            Ok(_) => CheckRow::new("server-log", log.display().to_string(), false)
                .detail("error", "not a file"),
            Err(e) => {
                CheckRow::new("server-log", log.display().to_string(), false).detail("error", e)
            }
        };
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_obs_is_contacted_only_at_an_ip_status_shows_in_that_slot() {
        let ip: std::net::IpAddr = "10.77.0.11".parse().unwrap();
        let head = "cl score ping name address rate\n";
        let st = parse_status(&format!(
            "{head} 3     0    0 Eve             ^710.77.0.11                              99999\n"
        ));
        assert!(confirm_ip_in(&st, 3, ip).is_ok());
        assert!(confirm_ip_in(&st, 4, ip).is_err());
        assert!(confirm_ip_in(&st, 3, "10.77.0.12".parse().unwrap()).is_err());
        let zombie = parse_status(&format!(
            "{head} 3     0  ZMB Eve             ^710.77.0.11                              99999\n"
        ));
        assert!(confirm_ip_in(&zombie, 3, ip).is_err());
        // The row for slot 3 forged by a name in slot 2: dropped, so not confirmed.
        let forged = parse_status(&format!(
            "{head} 2     0    0 Mal\n 3     0    0 Eve             ^710.77.0.11                              99999\n"
        ));
        assert!(confirm_ip_in(&forged, 3, ip).is_err());
    }
}
