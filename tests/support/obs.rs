//! Real OBS Studio, headless, for tests.
//!
//! Each instance gets its own Xvfb (display picked by `Xvfb -displayfd`, so instances started
//! at the same moment never race for a display number as `xvfb-run -a` can), its own
//! `XDG_CONFIG_HOME` with the global.ini seed from LAB.md (port and password live in that
//! 0600 file, never on a command line), and a small profile (320x240, 10 fps,
//! RecQuality=Small, recordings into a temp dir). Xvfb and OBS share one process group, which
//! Drop kills, also when a test fails.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// At most this many real OBS per test process (2 shared cores).
const MAX_INSTANCES: usize = 3;
static RUNNING: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

pub const PROFILE: &str = "oarun";

/// `Some(reason)` when real OBS cannot be run here.
pub fn missing() -> Option<String> {
    crate::support::missing_program("obs").or_else(|| crate::support::missing_program("Xvfb"))
}

pub struct RealObs {
    pub port: u16,
    pub password: String,
    pub root: tempfile::TempDir,
    pub rec_dir: PathBuf,
    pgid: Pid,
    xvfb: Child,
    obs: Option<Child>,
    display: String,
    starts: u32,
}

impl RealObs {
    /// Start Xvfb and OBS and wait (bounded) until the WebSocket port answers.
    pub fn start() -> Result<RealObs, String> {
        {
            let mut n = RUNNING.lock().unwrap();
            while *n >= MAX_INSTANCES {
                n = FREED.wait(n).unwrap();
            }
            *n += 1;
        }
        let root = tempfile::Builder::new()
            .prefix("oa-run-obs-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let port = crate::support::free_tcp_port();
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let rec_dir = root.path().join("rec");
        fs::create_dir_all(&rec_dir).map_err(|e| e.to_string())?;
        write_config(root.path(), port, &password, &rec_dir)?;

        let xlog = fs::File::create(root.path().join("xvfb.log")).map_err(|e| e.to_string())?;
        let mut xvfb = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "640x480x24",
                "-nolisten",
                "tcp",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(xlog)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start Xvfb: {e}"))?;
        let pgid = Pid::from_raw(xvfb.id() as i32);
        let stdout = xvfb.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut me = RealObs {
            port,
            password,
            root,
            rec_dir,
            pgid,
            xvfb,
            obs: None,
            display: String::new(),
            starts: 0,
        };
        let line = rx
            .recv_timeout(Duration::from_secs(15))
            .map_err(|_| "Xvfb did not report a display within 15 s".to_string())?;
        let n: u32 = line
            .trim()
            .parse()
            .map_err(|_| format!("Xvfb reported display {line:?}"))?;
        me.display = format!(":{n}");
        me.spawn_obs()?;
        Ok(me)
    }

    fn spawn_obs(&mut self) -> Result<(), String> {
        self.starts += 1;
        let log = fs::File::create(self.root.path().join(format!("obs-{}.log", self.starts)))
            .map_err(|e| e.to_string())?;
        let child = Command::new("obs")
            .args(["--multi", "--minimize-to-tray"])
            .current_dir(self.root.path())
            .env("DISPLAY", &self.display)
            .env("XDG_CONFIG_HOME", self.root.path().join("cfg"))
            .env("HOME", self.root.path())
            .env("LIBGL_ALWAYS_SOFTWARE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .process_group(self.pgid.as_raw())
            .spawn()
            .map_err(|e| format!("cannot start obs: {e}"))?;
        self.obs = Some(child);
        self.wait_ready(Duration::from_secs(60))
    }

    /// Poll the port until it accepts a TCP connection.
    fn wait_ready(&mut self, t: Duration) -> Result<(), String> {
        let deadline = Instant::now() + t;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(c) = self.obs.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                return Err(format!("obs exited early ({st}):\n{}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "OBS did not open port {} within {t:?}:\n{}",
            self.port,
            self.log_tail()
        ))
    }

    /// The last lines of the current OBS log, for failure messages.
    pub fn log_tail(&self) -> String {
        let p = self.root.path().join(format!("obs-{}.log", self.starts));
        let s = fs::read_to_string(p).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn signal_obs(&mut self, sig: Signal, t: Duration) -> Result<(), String> {
        let Some(mut c) = self.obs.take() else {
            return Err("obs is not running".into());
        };
        kill(Pid::from_raw(c.id() as i32), sig).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + t;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        let _ = c.wait();
        Err(format!("obs did not exit within {t:?} after {sig}"))
    }

    /// SIGTERM: OBS dies at once; clients see the connection drop (1006).
    pub fn sigterm(&mut self) -> Result<(), String> {
        self.signal_obs(Signal::SIGTERM, Duration::from_secs(15))
    }

    /// SIGINT: OBS exits cleanly (ExitStarted, close 1001).
    pub fn sigint(&mut self) -> Result<(), String> {
        self.signal_obs(Signal::SIGINT, Duration::from_secs(30))
    }

    /// Start OBS again with the same config, port and display.
    pub fn restart(&mut self) -> Result<(), String> {
        if self.obs.is_some() {
            return Err("obs is still running".into());
        }
        self.spawn_obs()
    }

    pub fn config_dir(&self) -> PathBuf {
        self.root.path().join("cfg")
    }
}

impl Drop for RealObs {
    fn drop(&mut self) {
        // TERM first so Xvfb removes its lock file, then KILL whatever is left.
        let _ = killpg(self.pgid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut done = false;
        while Instant::now() < deadline && !done {
            let x = matches!(self.xvfb.try_wait(), Ok(Some(_)));
            let o = self
                .obs
                .as_mut()
                .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))));
            done = x && o;
            if !done {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = killpg(self.pgid, Signal::SIGKILL);
        let _ = self.xvfb.wait();
        if let Some(c) = self.obs.as_mut() {
            let _ = c.wait();
        }
        let mut n = RUNNING.lock().unwrap();
        *n -= 1;
        FREED.notify_one();
    }
}

fn write_config(root: &Path, port: u16, password: &str, rec_dir: &Path) -> Result<(), String> {
    let obs = root.join("cfg/obs-studio");
    let profile = obs.join("basic/profiles").join(PROFILE);
    fs::create_dir_all(&profile).map_err(|e| e.to_string())?;
    let global = obs.join("global.ini");
    // Created 0600 before the password is written into it.
    let f = fs::File::create(&global).map_err(|e| e.to_string())?;
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    fs::write(
        &global,
        format!(
            "[General]\nFirstRun=true\nConfirmOnExit=false\n\
             [Basic]\nProfile={PROFILE}\nProfileDir={PROFILE}\n\
             [OBSWebSocket]\nFirstLoad=false\nServerEnabled=true\nServerPort={port}\n\
             AuthRequired=true\nServerPassword={password}\nAlertsEnabled=false\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    fs::write(
        profile.join("basic.ini"),
        format!(
            "[General]\nName={PROFILE}\n\
             [Video]\nBaseCX=320\nBaseCY=240\nOutputCX=320\nOutputCY=240\nFPSType=1\nFPSInt=10\n\
             [Output]\nMode=Simple\n\
             [SimpleOutput]\nFilePath={}\nRecQuality=Small\nRecFormat=mkv\n",
            rec_dir.display()
        ),
    )
    .map_err(|e| e.to_string())
}
