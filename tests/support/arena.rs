//! Test harness for the real OpenArena peers: a network namespace with its own address for a
//! player PC, and the real game client under Xvfb as a human. Everything is removed by Drop
//! guards, also when a test fails.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

pub const SERVER: &str = "/usr/games/openarena-server";
pub const CLIENT: &str = "/usr/games/openarena";

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// A player PC: namespace `oat<suffix>` joined to the root namespace by a veth pair, with
/// `10.77.X.1/24` on the root side and `10.77.X.11/24` inside. X is picked among subnets no
/// interface on this machine uses. Deleted on drop.
pub struct Netns {
    pub name: String,
    pub host_if: String,
    pub server_ip: Ipv4Addr,
    pub client_ip: Ipv4Addr,
}

impl Netns {
    pub fn create() -> Result<Netns, String> {
        let suffix = super::unique_suffix();
        let name = format!("oat{suffix}");
        let host_if = format!("oav{suffix}a");
        let peer_if = format!("oav{suffix}b");
        let used =
            output("ip", &["-o", "-4", "addr", "show"]) + &output("ip", &["-4", "route", "show"]);
        let seed = std::process::id() as usize + suffix.len() * 7;
        let x = (0..150)
            .map(|i| 100 + (seed + i * 37) % 150)
            .find(|x| !used.contains(&format!("10.77.{x}.")))
            .ok_or("no free 10.77.X.0/24 subnet")?;
        let ns = Netns {
            name: name.clone(),
            host_if: host_if.clone(),
            server_ip: Ipv4Addr::new(10, 77, x as u8, 1),
            client_ip: Ipv4Addr::new(10, 77, x as u8, 11),
        };
        // From here on, Drop cleans up whatever was created.
        run("ip", &["netns", "add", &name])?;
        run(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
            ],
        )?;
        run("ip", &["link", "set", &peer_if, "netns", &name])?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", ns.server_ip),
                "dev",
                &host_if,
            ],
        )?;
        run("ip", &["link", "set", &host_if, "up"])?;
        run(
            "ip",
            &[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{}/24", ns.client_ip),
                "dev",
                &peer_if,
            ],
        )?;
        run("ip", &["-n", &name, "link", "set", &peer_if, "up"])?;
        run("ip", &["-n", &name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn exists(&self) -> bool {
        output("ip", &["netns", "list"])
            .lines()
            .any(|l| l.split_whitespace().next() == Some(self.name.as_str()))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.host_if]);
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// The real game client, as a human, under `xvfb-run` with software GL at 320x240 and 20 fps,
/// with its own HOME (its own qkey, hence its own GUID). Runs in its own process group; on drop
/// the game is killed (it hangs on SIGTERM once its X server is gone), then xvfb-run and Xvfb.
pub struct GameClient {
    pub pgid: i32,
    pub home: PathBuf,
    pub log: PathBuf,
    child: std::process::Child,
}

impl GameClient {
    /// Connect to `server` (`IP:PORT`) as `name`, inside namespace `netns` if given.
    pub fn spawn(
        home: &Path,
        netns: Option<&str>,
        server: &str,
        name: &str,
    ) -> Result<GameClient, String> {
        std::fs::create_dir_all(home).map_err(|e| e.to_string())?;
        let log = home.join("client.log");
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let fs_home = home.join(".oa");
        let game_args: Vec<String> = [
            "+set",
            "fs_homepath",
            &fs_home.display().to_string(),
            "+set",
            "r_mode",
            "-1",
            "+set",
            "r_customwidth",
            "320",
            "+set",
            "r_customheight",
            "240",
            "+set",
            "r_fullscreen",
            "0",
            "+set",
            "s_initsound",
            "0",
            "+set",
            "com_maxfps",
            "20",
            "+set",
            "net_enabled",
            "1",
            "+set",
            "cl_allowDownload",
            "0",
            "+set",
            "name",
            name,
            "+connect",
            server,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut argv: Vec<String> = Vec::new();
        if let Some(ns) = netns {
            argv.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        argv.extend(["xvfb-run", "-a", "-s", "-screen 0 640x480x24", CLIENT].map(String::from));
        argv.extend(game_args);
        // xvfb-run kills its Xvfb without waiting for it; as a subreaper this process inherits
        // that orphan and reaps it on drop (this machine's PID 1 does not reap).
        nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("subreaper: {e}"))?;
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("HOME", home)
            .env("SDL_AUDIODRIVER", "dummy")
            .env("LIBGL_ALWAYS_SOFTWARE", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("{}: {e}", argv[0]))?;
        Ok(GameClient {
            pgid: child.id() as i32,
            home: home.to_path_buf(),
            log,
            child,
        })
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for GameClient {
    fn drop(&mut self) {
        let members = processes_in_group(self.pgid);
        for pid in members.iter().copied() {
            if comm(pid).as_deref() == Some("ioquake3") {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        // xvfb-run notices the game is gone and stops its Xvfb (removing the lock file).
        let until = Instant::now() + Duration::from_secs(5);
        while !processes_in_group(self.pgid).is_empty() && Instant::now() < until {
            let _ = self.child.try_wait();
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        let _ = self.child.wait();
        // Reap the group's orphans that were reparented to us (only those pids: never
        // `waitpid(-1)`, which could take another test's child).
        let until = Instant::now() + Duration::from_secs(3);
        let mut pending: Vec<i32> = members.into_iter().filter(|p| *p != self.pgid).collect();
        while !pending.is_empty() && Instant::now() < until {
            pending.retain(|pid| {
                match waitpid(Pid::from_raw(*pid), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => true,
                    // Reaped, or not our child (its parent reaps it).
                    _ => false,
                }
            });
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces; the fields after it start after the last ')'.
    let close = stat.rfind(')')?;
    Some(stat[close + 2..].split(' ').map(String::from).collect())
}

fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Live (non-zombie) processes in process group `pgid`.
pub fn processes_in_group(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            stat_fields(*pid).is_some_and(|f| {
                f.first().map(String::as_str) != Some("Z")
                    && f.get(2).and_then(|g| g.parse().ok()) == Some(pgid)
            })
        })
        .collect()
}

/// Every process in group `pgid`, zombies included (a zombie nobody reaps is a leak too).
pub fn any_in_group(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            stat_fields(*pid).is_some_and(|f| f.get(2).and_then(|g| g.parse().ok()) == Some(pgid))
        })
        .collect()
}

/// Live processes whose command line mentions `needle` (e.g. a test's run directory).
pub fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    all_pids()
        .into_iter()
        .filter(|pid| stat_fields(*pid).is_some_and(|f| f.first().map(String::as_str) != Some("Z")))
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmd.contains(needle).then_some((pid, cmd))
        })
        .collect()
}

/// The command line of a process, as others on the machine can read it.
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    stat_fields(pid as i32).is_some_and(|f| f.first().map(String::as_str) != Some("Z"))
}

/// Poll `f` until it is true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
