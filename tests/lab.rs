//! `scripts/lab.sh` for real: namespaces with real OBS and game clients come up, every OBS
//! websocket answers from the host at the namespace's IP, `up` is idempotent, and `down`
//! leaves nothing behind (processes, namespaces, links, X lock files), also when run twice.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lab.sh")
}

struct Lab {
    dir: tempfile::TempDir,
    name: String,
    net: String,
}

impl Lab {
    fn new() -> Lab {
        let suffix = support::unique_suffix();
        // A subnet of its own, away from the demo lab's 10.77.0.0/24.
        let pid = std::process::id();
        Lab {
            dir: tempfile::tempdir().unwrap(),
            name: format!("lt{}", &suffix[..suffix.len().min(6)]),
            net: format!("10.{}.{}", 200 + pid % 50, (pid / 50) % 250),
        }
    }

    fn run(&self, cmd: &str) -> Output {
        let out = Command::new("bash")
            .arg(script())
            .arg(cmd)
            .env("LAB_DIR", self.dir.path())
            .env("LAB_NAME", &self.name)
            .env("LAB_NET", &self.net)
            .env("LAB_PLAYERS", "2")
            .env("OBS_PASSWORD", "lab-test-pw")
            .env("LAB_OBS_TIMEOUT", "120")
            .output()
            .unwrap();
        eprintln!(
            "lab.sh {cmd}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ip(&self, pc: u32) -> String {
        format!("{}.{}", self.net, 10 + pc)
    }

    fn pids(&self) -> Vec<(String, i32)> {
        let mut v = Vec::new();
        for pc in 1..=2 {
            for what in ["xvfb-obs", "xvfb-game", "obs", "client"] {
                let f = self.dir.path().join(format!("pc{pc}/{what}.pid"));
                if let Ok(s) = std::fs::read_to_string(&f) {
                    v.push((format!("pc{pc}/{what}"), s.trim().parse().unwrap()));
                }
            }
        }
        v
    }

    fn displays(&self) -> Vec<String> {
        let mut v = Vec::new();
        for pc in 1..=2 {
            for which in ["obs", "game"] {
                let f = self.dir.path().join(format!("pc{pc}/display-{which}"));
                if let Ok(s) = std::fs::read_to_string(f) {
                    v.push(s.trim().to_string());
                }
            }
        }
        v
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Also after a failed assertion: never leave namespaces or processes behind.
        let _ = self.run("down");
    }
}

/// Open a websocket to OBS (the HTTP upgrade only): proves the port is obs-websocket.
fn websocket_upgrade(addr: &str) -> Result<String, String> {
    let sa: SocketAddr = addr.parse().unwrap();
    let mut s =
        TcpStream::connect_timeout(&sa, Duration::from_secs(3)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: obswebsocket.json\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string())
}

fn netns_list() -> String {
    String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
}

fn links() -> String {
    String::from_utf8(
        Command::new("ip")
            .args(["-o", "link", "show"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
}

#[test]
fn lab_up_status_down_leaves_nothing_behind() {
    for p in ["obs", "Xvfb", "/usr/games/openarena", "ip", "setsid"] {
        if let Some(why) = support::missing_program(p) {
            return support::skip(&why);
        }
    }
    if let Some(why) = support::missing_root() {
        return support::skip(&why);
    }
    let lab = Lab::new();
    let t = std::time::Instant::now();
    let up = lab.run("up");
    assert!(up.status.success(), "lab.sh up failed");
    eprintln!("lab up took {:?}", t.elapsed());

    // Every OBS answers the websocket upgrade at its PC's IP, from the host.
    for pc in 1..=2 {
        let line = websocket_upgrade(&format!("{}:4455", lab.ip(pc))).unwrap();
        assert!(line.contains(" 101 "), "pc{pc}: {line}");
    }
    // The websocket password is in a file only root can reach.
    let cfg = lab.dir.path().join("pc1/config");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&cfg).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", cfg.display());
    let status = String::from_utf8(lab.run("status").stdout).unwrap();
    assert_eq!(status.matches(" answers ").count(), 2, "{status}");
    assert!(status.contains(&format!("{}/pc1/recordings", lab.dir.path().display())));
    for pc in 1..=2 {
        assert!(netns_list().contains(&format!("{}-pc{pc}", lab.name)));
    }

    // Idempotent: a second `up` starts nothing new.
    let before = lab.pids();
    assert_eq!(before.len(), 8, "{before:?}");
    assert!(lab.run("up").status.success());
    assert_eq!(lab.pids(), before);
    let displays = lab.displays();
    assert_eq!(displays.len(), 4);

    let down = lab.run("down");
    assert!(down.status.success());
    for (what, pid) in &before {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{what} (pid {pid}) still runs"
        );
    }
    assert!(
        !netns_list().contains(&format!("{}-pc", lab.name)),
        "{}",
        netns_list()
    );
    assert!(!links().contains(&format!("{}br", lab.name)), "bridge left");
    assert!(!links().contains(&format!("{}h1", lab.name)), "veth left");
    for d in displays {
        assert!(
            !Path::new(&format!("/tmp/.X{d}-lock")).exists(),
            "X lock {d} left"
        );
    }
    // The recordings folder is kept; a second down is harmless.
    assert!(lab.dir.path().join("pc1/recordings").is_dir());
    assert!(lab.run("down").status.success());
}

#[test]
fn lab_refuses_bad_settings() {
    let out = Command::new("bash")
        .arg(script())
        .arg("status")
        .env("LAB_DIR", "/nonexistent-oa-lab")
        .env("LAB_NAME", "Bad Name")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LAB_NAME must be"));
    let out = Command::new("bash").arg(script()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lab.sh up"));
}
