//! A two-host lab in network namespaces for the latency tests and `examples/netem_rtt.rs`:
//! a "server" namespace and a "players" namespace joined by a veth pair. Everything is created
//! under unique names and deleted by Drop guards, also when a test fails.
#![allow(dead_code)]

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The server's address on the lab link.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The server-side veth (inside the server namespace): the interface that gets the tree.
pub const SERVER_IF: &str = "oasrv0";
/// The players-side veth (inside the players namespace).
pub const PLAYERS_IF: &str = "oaply0";

/// Address of player `i` (1-based) in the lab.
pub fn player_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 10 + i as u8)
}

/// IPv6 address of player `i` (after [`Lab::add_ipv6`]).
pub fn player_ip6(i: u32) -> std::net::Ipv6Addr {
    format!("fd77::{}", 10 + i).parse().expect("valid IPv6")
}

/// The game server's UDP port in these namespaces (they are private, so no clash).
pub const GAME_PORT: u16 = 27960;

/// An address in the players' namespace that is no player ("other traffic").
pub const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 250);

/// Run a command, failing with its stderr.
pub fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Result<Netns, String> {
        sh(&["ip", "netns", "add", &name])?;
        let ns = Netns { name };
        sh(&["ip", "-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Run `f` on a thread that has entered this namespace; sockets created there stay in it.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, String> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
                nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("setns {path}: {e}"))?;
                Ok(f())
            })
            .join()
            .map_err(|_| "namespace thread panicked".to_string())?
        })
    }

    /// `ip netns exec NAME args…`
    pub fn exec(&self, args: &[&str]) -> Result<String, String> {
        let mut v = vec!["ip", "netns", "exec", self.name.as_str()];
        v.extend_from_slice(args);
        sh(&v)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also deletes its veth end, its ifb and every qdisc in it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Server and players namespaces joined by a veth pair; players 1..=n have addresses in the
/// players namespace, plus [`OTHER_IP`].
pub struct Lab {
    pub server: Netns,
    pub players: Netns,
    pub n: u32,
}

impl Lab {
    pub fn new(tag: &str, suffix: &str, n: u32) -> Result<Lab, String> {
        let server = Netns::new(format!("oa{tag}s{suffix}"))?;
        let players = Netns::new(format!("oa{tag}p{suffix}"))?;
        sh(&[
            "ip",
            "-n",
            &server.name,
            "link",
            "add",
            SERVER_IF,
            "type",
            "veth",
            "peer",
            "name",
            PLAYERS_IF,
            "netns",
            &players.name,
        ])?;
        sh(&[
            "ip",
            "-n",
            &server.name,
            "addr",
            "add",
            &format!("{SERVER_IP}/24"),
            "dev",
            SERVER_IF,
        ])?;
        let mut addrs: Vec<Ipv4Addr> = (1..=n).map(player_ip).collect();
        addrs.push(OTHER_IP);
        for a in addrs {
            sh(&[
                "ip",
                "-n",
                &players.name,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                PLAYERS_IF,
            ])?;
        }
        sh(&["ip", "-n", &server.name, "link", "set", SERVER_IF, "up"])?;
        sh(&["ip", "-n", &players.name, "link", "set", PLAYERS_IF, "up"])?;
        Ok(Lab { server, players, n })
    }

    /// Add IPv6 addresses (no duplicate address detection, so they work at once): the server
    /// gets `fd77::1`, each player `fd77::1N`.
    pub fn add_ipv6(&self) -> Result<(), String> {
        sh(&[
            "ip",
            "-n",
            &self.server.name,
            "addr",
            "add",
            "fd77::1/64",
            "dev",
            SERVER_IF,
            "nodad",
        ])?;
        for i in 1..=self.n {
            sh(&[
                "ip",
                "-n",
                &self.players.name,
                "addr",
                "add",
                &format!("{}/64", player_ip6(i)),
                "dev",
                PLAYERS_IF,
                "nodad",
            ])?;
        }
        Ok(())
    }

    /// `tc -j qdisc show dev SERVER_IF` in the server namespace (no counters).
    pub fn server_qdiscs(&self) -> String {
        self.server
            .exec(&["tc", "-j", "qdisc", "show", "dev", SERVER_IF])
            .unwrap_or_else(|e| e)
    }

    /// Whether a link exists in the server namespace.
    pub fn server_has_link(&self, dev: &str) -> bool {
        self.server
            .exec(&["ip", "link", "show", "dev", dev])
            .is_ok()
    }
}

/// Bind a UDP socket to `addr` inside `ns`.
///
/// Tests re-bind an address they just closed. That fails with EADDRINUSE while another test
/// thread's child process, between fork and exec, still holds a copy of the closed socket's
/// descriptor (seen in 1 run of 5), so a refused bind is retried briefly (bounded).
pub fn udp_in(ns: &Netns, addr: SocketAddr) -> Result<UdpSocket, String> {
    let mut tries = 0;
    loop {
        match ns.enter(move || UdpSocket::bind(addr))? {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("bind {addr}: {e}")),
        }
    }
}

/// Counts datagrams arriving at sockets (one thread per socket) until dropped.
pub struct Sink {
    stop: Arc<AtomicBool>,
    threads: Vec<(SocketAddr, JoinHandle<u64>)>,
}

/// Echoes every datagram back to its sender until dropped.
pub struct Echo {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<u64>>,
}

fn serve(sock: UdpSocket, stop: Arc<AtomicBool>, echo: bool) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
        let mut n = 0;
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((len, from)) = sock.recv_from(&mut buf) {
                n += 1;
                if echo {
                    let _ = sock.send_to(&buf[..len], from);
                }
            }
        }
        n
    })
}

impl Sink {
    pub fn new(socks: Vec<UdpSocket>) -> Sink {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = socks
            .into_iter()
            .map(|s| {
                let a = s.local_addr().expect("bound socket");
                (a, serve(s, stop.clone(), false))
            })
            .collect();
        Sink { stop, threads }
    }

    /// Stop and return the count per bound address.
    pub fn finish(mut self) -> Vec<(SocketAddr, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .drain(..)
            .map(|(a, t)| (a, t.join().unwrap_or(0)))
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Echo {
    pub fn new(socks: Vec<UdpSocket>) -> Echo {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = socks
            .into_iter()
            .map(|s| serve(s, stop.clone(), true))
            .collect();
        Echo { stop, threads }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Round trips from `client` to `to` (a UDP echo): `samples` + 1 probes, one at a time, the
/// first dropped (it pays for ARP). Each waits at most `timeout`.
pub fn rtts(
    client: &UdpSocket,
    to: SocketAddr,
    samples: usize,
    timeout: Duration,
) -> Result<Vec<Duration>, String> {
    client
        .set_read_timeout(Some(Duration::from_millis(20)))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(samples);
    let mut buf = [0u8; 64];
    for seq in 0..=samples as u64 {
        let msg = seq.to_be_bytes();
        let t0 = Instant::now();
        client.send_to(&msg, to).map_err(|e| e.to_string())?;
        loop {
            if t0.elapsed() > timeout {
                return Err(format!(
                    "no echo from {to} within {timeout:?} (probe {seq})"
                ));
            }
            match client.recv_from(&mut buf) {
                // Late echoes of earlier probes are skipped by their sequence number.
                Ok((8, from)) if from == to && buf[..8] == msg => break,
                _ => continue,
            }
        }
        if seq > 0 {
            out.push(t0.elapsed());
        }
    }
    Ok(out)
}

pub fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[s.len() / 2]
}

/// The lab's players as oa-run sees them.
pub fn players(n: u32) -> Vec<oa_run::netem::Player> {
    (1..=n)
        .map(|i| oa_run::netem::Player {
            index: i,
            ip: IpAddr::V4(player_ip(i)),
        })
        .collect()
}

/// A latency section for the lab's server interface.
pub fn latency(split: oa_run::scenario::Split, levels_ms: &[u64]) -> oa_run::scenario::Latency {
    oa_run::scenario::Latency {
        interface: SERVER_IF.into(),
        levels: levels_ms
            .iter()
            .map(|&ms| oa_run::scenario::Duration::from_millis(ms).into())
            .collect(),
        order: oa_run::scenario::Order::Cyclic,
        split,
        shaper: oa_run::scenario::Shaper::Tc,
        limit: 1000,
        tolerance: Default::default(),
        on_deviation: Default::default(),
    }
}
