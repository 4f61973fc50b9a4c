//! Launching `openarena-server` (ioq3ded) for a run, and stopping it.
//!
//! - A fresh home directory per run (`fs_homepath`), so no archived cvar from an earlier run
//!   (`q3config_server.cfg`) comes back.
//! - The rcon password goes into a generated config file (mode 0600) that is `+exec`'d and removed
//!   once the server has read it; it never appears in argv (visible in /proc).
//! - Non-tty stdin (/dev/null): the tty console is off. All console output goes to stderr, which is
//!   captured into a file in the run directory.
//! - ioq3 silently moves to port+1…+9 when the port is busy; the real port is read from
//!   `Opening IP socket: A:P` and a move is an error.
//! - The server runs in its own process group (a terminal's Ctrl-C reaches oa-run, which stops it
//!   in order) and gets SIGTERM if oa-run dies (PR_SET_PDEATHSIG).
//! - It parses every player's packets, so it gets as little as possible: a cleared environment
//!   (`HOME`, `PATH`, `TZ`; never oa-run's password variables), NoNewPrivs, and under root the
//!   unprivileged `server.launch.user` (default `nobody`), which owns the server's home; the run
//!   directory is then 0710 with that user's group, so it can reach its home and list nothing.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::Serialize;
use tracing::{debug, info, warn};

use super::error::{ArenaError, Result};
use super::rcon::{MapName, check_password};
use crate::scenario::Secret;

/// `g_warmup` while holding the server between matches: long enough that the warmup countdown
/// never starts a match of its own (the runner starts every match).
pub const HOLD_WARMUP_SECS: i64 = 86_400;
/// Name of the generated config file inside `<home>/baseoa/`.
const SECRETS_CFG: &str = "oarun-rcon.cfg";
/// How long a graceful stop may take before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// What to launch.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub binary: PathBuf,
    /// Listen address (`net_ip`/`net_port`); `0.0.0.0` listens everywhere.
    pub listen: SocketAddr,
    pub map: MapName,
    pub rcon_password: Secret,
    /// `sv_maxclients` (latched: only takes effect at start or on `map`).
    pub max_clients: u32,
    /// The run directory; the server's home is `<run_dir>/server/`.
    pub run_dir: PathBuf,
    /// Time allowed from spawn to the first `InitGame` in the log.
    pub start_timeout: Duration,
    /// Under root: run the server as this user (`None` or `root`: stay root).
    pub user: Option<String>,
}

/// The environment the server gets: nothing of oa-run's (which may hold passwords) but what
/// the wrapper script and the engine need.
pub(crate) fn server_env(home: &Path) -> Vec<(String, String)> {
    let mut env = vec![
        ("HOME".to_string(), home.display().to_string()),
        (
            "PATH".to_string(),
            "/usr/local/bin:/usr/bin:/bin:/usr/games".to_string(),
        ),
    ];
    if let Ok(tz) = std::env::var("TZ") {
        // `g_timestamp` in InitGame is the server's local time.
        env.push(("TZ".to_string(), tz));
    }
    env
}

/// Whether a process of `uid`/`gid` can reach `dir` (search permission on every ancestor): the
/// server would otherwise fail later with a puzzling "cannot write games.log".
fn reachable(dir: &Path, uid: nix::unistd::Uid, gid: nix::unistd::Gid) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    for a in dir.ancestors().skip(1) {
        let Ok(m) = std::fs::metadata(a) else {
            continue;
        };
        let bit = if m.uid() == uid.as_raw() {
            0o100
        } else if m.gid() == gid.as_raw() {
            0o010
        } else {
            0o001
        };
        if m.mode() & bit == 0 {
            return Err(ArenaError::Files {
                what: "the server's user cannot reach its home directory",
                path: a.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "make it passable (chmod o+x) or set server.launch.user",
                ),
            });
        }
    }
    Ok(())
}

/// The uid/gid to drop to, when running as root with a launch user other than root.
fn drop_to(user: Option<&str>) -> Result<Option<(nix::unistd::Uid, nix::unistd::Gid)>> {
    let Some(name) = user.filter(|u| *u != "root") else {
        return Ok(None);
    };
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) if u.uid.is_root() => Ok(None),
        Ok(Some(u)) => Ok(Some((u.uid, u.gid))),
        Ok(None) => Err(ArenaError::InvalidArgument {
            what: "server.launch.user",
            detail: format!("no user `{}` on this machine", crate::term::escape(name)),
        }),
        Err(e) => Err(ArenaError::InvalidArgument {
            what: "server.launch.user",
            detail: format!("cannot look up `{}`: {e}", crate::term::escape(name)),
        }),
    }
}

/// Where a launched server keeps its files.
#[derive(Debug, Clone, Serialize)]
pub struct ServerFiles {
    pub home: PathBuf,
    /// `<home>/baseoa/games.log`.
    pub games_log: PathBuf,
    /// Everything the server printed (its console goes to stderr).
    pub stderr_log: PathBuf,
}

/// How the server ended.
#[derive(Debug, Clone, Serialize)]
pub struct StopReport {
    /// It exited on SIGTERM within the grace time (no SIGKILL needed).
    pub graceful: bool,
    /// `ShutdownGame:` is the last game-log event.
    pub shutdown_logged: bool,
    pub exit_status: String,
}

/// A launched server process. Dropping it stops the server (SIGTERM, short wait, SIGKILL).
#[derive(Debug)]
pub struct ServerProcess {
    child: Mutex<Option<Child>>,
    /// Keeps the forking thread alive; see [`spawn_from_parent_thread`].
    _parent: std::sync::mpsc::Sender<()>,
    pid: u32,
    pub files: ServerFiles,
    /// The address the server really bound (as it printed it).
    pub bound: String,
    secrets_cfg: PathBuf,
    exit_status: Mutex<Option<String>>,
}

/// The bind outcome read from stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bind {
    /// No socket opened yet (or the last attempt's result not printed yet).
    Pending,
    Bound(String),
    Failed,
}

/// Read the bind outcome from the server's console output: ioq3 prints
/// `Opening IP socket: A:P` before each attempt and `WARNING: NET_IPSocket: bind: …` when it
/// fails; after 10 failures `WARNING: Couldn't bind to a v4 ip address.`.
pub(crate) fn bind_state(stderr: &str, v6: bool) -> Bind {
    let opening = if v6 {
        "Opening IP6 socket: "
    } else {
        "Opening IP socket: "
    };
    let failed_all = if v6 {
        "Couldn't bind to a v6 ip address"
    } else {
        "Couldn't bind to a v4 ip address"
    };
    let mut candidate: Option<&str> = None;
    let mut confirmed = false;
    for line in stderr.lines() {
        if let Some(addr) = line.strip_prefix(opening) {
            candidate = Some(addr.trim());
            confirmed = false;
        } else if line.contains(failed_all) {
            return Bind::Failed;
        } else if line.starts_with("WARNING: NET_IP") && line.contains("bind") {
            candidate = None;
        } else if candidate.is_some() {
            confirmed = true;
        }
    }
    match (candidate, confirmed) {
        (Some(a), true) => Bind::Bound(a.to_string()),
        _ => Bind::Pending,
    }
}

fn port_of(bound: &str) -> Option<u16> {
    bound.rsplit(':').next()?.parse().ok()
}

fn files_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ArenaError {
    let path = path.to_path_buf();
    move |source| ArenaError::Files { what, path, source }
}

fn tail_of(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The `+set` arguments. The rcon password is not among them.
pub(crate) fn server_args(spec: &LaunchSpec, home: &Path) -> Vec<String> {
    let v6 = spec.listen.is_ipv6();
    let ip = spec.listen.ip().to_string();
    let port = spec.listen.port().to_string();
    let max_clients = spec
        .max_clients
        .clamp(1, u32::from(super::MAX_SLOTS))
        .to_string();
    let hold = HOLD_WARMUP_SECS.to_string();
    let mut sets: Vec<(&str, String)> = vec![
        ("fs_homepath", home.display().to_string()),
        // 1 = IPv4 only, 2 = IPv6 only (3 would also join the IPv6 LAN multicast group).
        ("net_enabled", if v6 { "2" } else { "1" }.into()),
    ];
    if v6 {
        sets.push(("net_ip6", ip));
        sets.push(("net_port6", port));
    } else {
        sets.push(("net_ip", ip));
        sets.push(("net_port", port));
    }
    sets.extend([
        // LAN server: no master-server heartbeats.
        ("dedicated", "1".into()),
        ("sv_hostname", "oa-run".into()),
        ("sv_maxclients", max_clients),
        ("g_gametype", "0".into()),
        ("g_log", "games.log".into()),
        // Without it games.log stays empty until shutdown.
        ("g_logsync", "1".into()),
        // Players must not call votes (map, kick, timelimit …) during a study.
        ("g_allowVote", "0".into()),
        ("bot_minplayers", "0".into()),
        // Held warmup until the runner starts a match.
        ("g_doWarmup", "1".into()),
        ("g_warmup", hold),
        ("timelimit", "0".into()),
        ("fraglimit", "0".into()),
    ]);
    let mut args = Vec::new();
    for (k, v) in sets {
        args.extend(["+set".to_string(), k.to_string(), v]);
    }
    args.extend(["+exec".into(), SECRETS_CFG.into()]);
    args.extend(["+map".into(), spec.map.as_str().to_string()]);
    args
}

impl ServerProcess {
    /// Start the server and wait until its game is running (first `InitGame` in games.log).
    pub async fn launch(spec: &LaunchSpec) -> Result<ServerProcess> {
        check_password(&spec.rcon_password)?;
        let home = spec.run_dir.join("server");
        let baseoa = home.join("baseoa");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&baseoa)
            .map_err(files_err(
                "cannot create the server's home directory",
                &baseoa,
            ))?;
        let files = ServerFiles {
            games_log: baseoa.join("games.log"),
            stderr_log: spec.run_dir.join(crate::manifest::SERVER_STDERR_FILE),
            home: home.clone(),
        };
        let secrets_cfg = baseoa.join(SECRETS_CFG);
        write_secrets(&secrets_cfg, &spec.rcon_password)?;
        let ids = drop_to(spec.user.as_deref())?;
        if let Some((uid, gid)) = ids {
            // The server's home becomes its own; the run directory lets its group through
            // (0710) but shows nothing, and everything else in it stays 0600.
            for p in [&home, &baseoa, &secrets_cfg] {
                nix::unistd::chown(p.as_path(), Some(uid), Some(gid))
                    .map_err(|e| files_err("cannot give the server its home", p)(e.into()))?;
            }
            nix::unistd::chown(spec.run_dir.as_path(), None, Some(gid)).map_err(|e| {
                files_err("cannot open the run directory to the server", &spec.run_dir)(e.into())
            })?;
            std::fs::set_permissions(
                &spec.run_dir,
                std::os::unix::fs::PermissionsExt::from_mode(0o710),
            )
            .map_err(files_err(
                "cannot open the run directory to the server",
                &spec.run_dir,
            ))?;
        }

        if let Some((uid, gid)) = ids {
            reachable(&home, uid, gid)?;
        }

        let stderr = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&files.stderr_log)
            .map_err(files_err("cannot create the server log", &files.stderr_log))?;
        let stdout = stderr
            .try_clone()
            .map_err(files_err("cannot create the server log", &files.stderr_log))?;
        let args = server_args(spec, &home);
        info!(binary = %spec.binary.display(), listen = %spec.listen, map = spec.map.as_str(), "launching the server");
        debug!(?args, "server arguments");
        let mut cmd = Command::new(&spec.binary);
        cmd.args(&args)
            .env_clear()
            .envs(server_env(&home))
            .current_dir(&home)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        if let Some((uid, gid)) = ids {
            // std drops the supplementary groups too (setgroups(0) when root).
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
            info!(uid = uid.as_raw(), "the server runs unprivileged");
        }
        // SAFETY: only async-signal-safe syscalls run between fork and exec (after std's
        // setuid, which would clear a death signal set before it).
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_no_new_privs()
                    .and_then(|()| nix::sys::prctl::set_pdeathsig(Signal::SIGTERM))
                    .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
            });
        }
        let (child, parent_guard) = spawn_from_parent_thread(cmd).map_err(|source| {
            let _ = std::fs::remove_file(&secrets_cfg);
            ArenaError::Spawn {
                binary: spec.binary.clone(),
                source,
            }
        })?;
        let pid = child.id();
        let mut proc = ServerProcess {
            child: Mutex::new(Some(child)),
            _parent: parent_guard,
            pid,
            files,
            bound: String::new(),
            secrets_cfg,
            exit_status: Mutex::new(None),
        };
        match proc.wait_ready(spec).await {
            Ok(bound) => {
                proc.bound = bound;
                info!(pid, bound = %proc.bound, "server is up");
                Ok(proc)
            }
            Err(e) => {
                proc.kill_now();
                Err(e)
            }
        }
    }

    async fn wait_ready(&self, spec: &LaunchSpec) -> Result<String> {
        let started = Instant::now();
        let v6 = spec.listen.is_ipv6();
        let mut bound: Option<String> = None;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(ArenaError::ServerExited {
                    during: "startup",
                    status,
                    tail: tail_of(&self.files.stderr_log, 15),
                });
            }
            let text = std::fs::read(&self.files.stderr_log)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            if bound.is_none() {
                match bind_state(&text, v6) {
                    Bind::Pending => {}
                    Bind::Failed => {
                        return Err(ArenaError::BindFailed {
                            address: spec.listen.to_string(),
                            stderr: self.files.stderr_log.clone(),
                        });
                    }
                    Bind::Bound(addr) => {
                        if port_of(&addr) != Some(spec.listen.port()) {
                            return Err(ArenaError::PortMoved {
                                asked: spec.listen.port(),
                                bound: addr,
                            });
                        }
                        bound = Some(addr);
                    }
                }
            }
            if let Some(line) = text.lines().find(|l| l.starts_with("Can't find map")) {
                return Err(ArenaError::CommandFailed {
                    command: format!("map {}", spec.map.as_str()),
                    reply: format!("{line} (is the map installed on the server?)"),
                });
            }
            if text.contains(&format!("execing {SECRETS_CFG}")) {
                self.remove_secrets();
            }
            if let Some(b) = &bound {
                let log = std::fs::read(&self.files.games_log).unwrap_or_default();
                if log.windows(9).any(|w| w == b"InitGame:") {
                    self.remove_secrets();
                    return Ok(b.clone());
                }
            }
            if started.elapsed() > spec.start_timeout {
                return Err(ArenaError::timeout(
                    format!(
                        "the server to load its map (see {})",
                        self.files.stderr_log.display()
                    ),
                    spec.start_timeout,
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn remove_secrets(&self) {
        match std::fs::remove_file(&self.secrets_cfg) {
            Ok(()) => debug!("removed the rcon config file"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(error = %e, path = %self.secrets_cfg.display(), "cannot remove the rcon config file")
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `Some(status)` once the process has exited (it is reaped here).
    pub fn exit_status(&self) -> Option<String> {
        if let Some(s) = self
            .exit_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Some(s);
        }
        let mut guard = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let child = guard.as_mut()?;
        match child.try_wait() {
            Ok(Some(st)) => {
                let s = st.to_string();
                *self.exit_status.lock().unwrap_or_else(|p| p.into_inner()) = Some(s.clone());
                *guard = None;
                Some(s)
            }
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    pub fn is_running(&self) -> bool {
        self.exit_status().is_none()
    }

    /// SIGTERM (the game logs `ShutdownGame:`), wait up to `grace`, then SIGKILL the group.
    pub async fn stop(&self, grace: Duration) -> StopReport {
        if self.is_running() {
            info!(pid = self.pid, "stopping the server");
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        let mut graceful = true;
        while self.is_running() {
            if Instant::now() >= deadline {
                warn!(
                    pid = self.pid,
                    "the server did not stop within {:?}; killing it", grace
                );
                graceful = false;
                let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
                let until = Instant::now() + Duration::from_secs(5);
                while self.is_running() && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.remove_secrets();
        StopReport {
            graceful,
            shutdown_logged: last_event_is_shutdown(&self.files.games_log),
            exit_status: self.exit_status().unwrap_or_else(|| "still running".into()),
        }
    }

    /// Synchronous bounded stop, for Drop and for failed launches.
    pub(crate) fn kill_now(&self) {
        if !self.is_running() {
            self.remove_secrets();
            return;
        }
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        let until = Instant::now() + Duration::from_secs(3);
        while self.is_running() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.is_running() {
            let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            let until = Instant::now() + Duration::from_secs(3);
            while self.is_running() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.remove_secrets();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.is_running() {
            warn!(
                pid = self.pid,
                "server handle dropped while running; stopping it"
            );
        }
        self.kill_now();
    }
}

/// Fork the server from a dedicated thread that lives exactly as long as the returned sender.
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked exits, and a tokio worker can become a
/// blocking-pool thread that exits after idling; this thread only exits when the
/// [`ServerProcess`] is dropped (after it has stopped the server) or oa-run itself dies.
fn spawn_from_parent_thread(
    mut cmd: Command,
) -> std::io::Result<(Child, std::sync::mpsc::Sender<()>)> {
    let (result_tx, result_rx) = std::sync::mpsc::channel();
    let (keep_tx, keep_rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("oa-run-server-parent".into())
        .spawn(move || {
            let spawned = cmd.spawn();
            let ok = spawned.is_ok();
            let _ = result_tx.send(spawned);
            if ok {
                // Returns when the sender is dropped.
                let _ = keep_rx.recv();
            }
        })?;
    let child = result_rx
        .recv()
        .map_err(|_| std::io::Error::other("the server's parent thread died"))??;
    Ok((child, keep_tx))
}

fn write_secrets(path: &Path, pw: &Secret) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(files_err("cannot write the rcon config file", path))?;
    // Quoted so `;` and `//` in a password are not a command separator or a comment.
    let body = format!(
        "// written by oa-run; removed once the server has read it\nset rconpassword \"{}\"\n",
        pw.expose()
    );
    f.write_all(body.as_bytes())
        .map_err(files_err("cannot write the rcon config file", path))
}

fn last_event_is_shutdown(games_log: &Path) -> bool {
    let text = std::fs::read(games_log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    text.lines()
        .rev()
        .map(|l| super::log::split_time(l).1)
        .find(|t| !t.starts_with("---") && !t.trim().is_empty())
        .is_some_and(|t| t.starts_with("ShutdownGame:"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unprivileged_server_must_be_able_to_reach_its_home() {
        use std::os::unix::fs::PermissionsExt;
        let nobody = (
            nix::unistd::Uid::from_raw(65534),
            nix::unistd::Gid::from_raw(65534),
        );
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("run/server");
        std::fs::create_dir_all(&home).unwrap();
        let set =
            |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        set(tmp.path(), 0o700);
        assert!(
            reachable(&home, nobody.0, nobody.1).is_err(),
            "a closed parent"
        );
        set(tmp.path(), 0o711);
        assert!(reachable(&home, nobody.0, nobody.1).is_ok());
        // The server environment carries nothing of ours.
        let env = server_env(&home);
        assert!(
            env.iter()
                .all(|(k, _)| ["HOME", "PATH", "TZ"].contains(&k.as_str())),
            "{env:?}"
        );
    }

    use super::*;

    #[test]
    fn bind_detection_from_real_output() {
        // Verbatim from ioq3 70d07d9 with the port taken by another socket.
        let moved = "IP: 127.0.0.1\nIP6: ::1\nOpening IP socket: 0.0.0.0:28800\nWARNING: NET_IPSocket: bind: Address already in use\nOpening IP socket: 0.0.0.0:28801\nexecing oarun-rcon.cfg\n";
        assert_eq!(
            bind_state(moved, false),
            Bind::Bound("0.0.0.0:28801".into())
        );
        assert_eq!(port_of("0.0.0.0:28801"), Some(28801));
        let ok = "Opening IP socket: 127.0.0.1:28777\nexecing oarun-rcon.cfg\n------ Server Initialization ------\n";
        assert_eq!(bind_state(ok, false), Bind::Bound("127.0.0.1:28777".into()));
        // The attempt's result is not printed yet.
        assert_eq!(
            bind_state("Opening IP socket: 127.0.0.1:28777\n", false),
            Bind::Pending
        );
        assert_eq!(
            bind_state(
                "Opening IP socket: 127.0.0.1:1\nWARNING: NET_IPSocket: bind: Permission denied\n",
                false
            ),
            Bind::Pending
        );
        assert_eq!(
            bind_state("WARNING: Couldn't bind to a v4 ip address.\n", false),
            Bind::Failed
        );
        assert_eq!(
            bind_state("Opening IP6 socket: [::1]:27960\nexecing x\n", true),
            Bind::Bound("[::1]:27960".into())
        );
        assert_eq!(port_of("[::1]:27960"), Some(27960));
    }

    #[test]
    fn the_password_is_never_in_argv() {
        let spec = LaunchSpec {
            binary: "/usr/games/openarena-server".into(),
            listen: "127.0.0.1:27999".parse().unwrap(),
            map: MapName::new("oa_dm1").unwrap(),
            rcon_password: Secret::new("hunter2-secret"),
            max_clients: 100,
            run_dir: "/tmp/x".into(),
            start_timeout: Duration::from_secs(1),
            user: None,
        };
        let args = server_args(&spec, Path::new("/tmp/x/server"));
        let joined = args.join(" ");
        assert!(!joined.contains("hunter2"));
        assert!(joined.contains("+set net_port 27999"));
        assert!(joined.contains("+set g_logsync 1"));
        assert!(
            joined.contains("+set sv_maxclients 64"),
            "clamped: {joined}"
        );
        assert!(joined.contains("+exec oarun-rcon.cfg +map oa_dm1"));
        assert!(joined.contains("+set fs_homepath /tmp/x/server"));
    }

    #[test]
    fn secrets_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.cfg");
        write_secrets(&p, &Secret::new("a;b//c")).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        assert!(
            std::fs::read_to_string(&p)
                .unwrap()
                .contains("set rconpassword \"a;b//c\"")
        );
    }

    #[test]
    fn shutdown_detection() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("games.log");
        std::fs::write(&p, "  0:08 ShutdownGame:\n  0:08 ------------------------------------------------------------\n").unwrap();
        assert!(last_event_is_shutdown(&p));
        std::fs::write(&p, "  0:08 ShutdownGame:\n  0:08 InitGame: \\x\\y\n").unwrap();
        assert!(!last_event_is_shutdown(&p));
    }
}
