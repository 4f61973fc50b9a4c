//! rcon over UDP: `FF FF FF FF rcon "<password>" <command>`.
//!
//! Facts this follows (reference/openarena.md §1): the server answers every accepted command with
//! one or more `FF FF FF FF print\n` datagrams, split mid-line, with no end marker; no packet at
//! all means the request was dropped (rate limit: burst 10, then ~1/s per source IP, shared by
//! every connectionless request from that IP) and was not executed. So: one request in flight per
//! server, a fresh socket per request (late packets cannot mix into the next reply), read until a
//! quiet gap, decode lossily, pace requests with a client-side bucket, and resend only commands
//! whose repetition is harmless.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tracing::{debug, warn};

use super::MAX_SLOTS;
use super::error::{ArenaError, Result};
use super::rcon_stats::{self as stats, Outcome};
use crate::scenario::Secret;
use crate::scenario::semantic::OPENARENA_BOTS;

const OOB: &[u8] = b"\xff\xff\xff\xff";
const PRINT_HEADER: &[u8] = b"\xff\xff\xff\xffprint\n";

/// Client-side model of the server's per-IP bucket (server: 10, one token per 1000 ms). We keep
/// two tokens spare for other traffic from the same IP and refill a little slower than the server.
const BURST: f64 = 8.0;
const REFILL: Duration = Duration::from_millis(1100);
/// Attempts for commands that are safe to repeat.
const IDEMPOTENT_ATTEMPTS: u32 = 3;
/// Never read one reply for longer than this, whatever the server keeps sending.
const MAX_REPLY_TIME: Duration = Duration::from_secs(30);
/// Most bytes of one reply kept. The largest real replies are `cvarlist` (~10 KB) and `map`
/// (~5 KB); `status` with 64 clients is under 7 KB. More is junk (or a flood) and is cut.
pub const MAX_REPLY_BYTES: usize = 256 * 1024;

/// One server's request gate: held for the whole exchange so at most one request is in flight,
/// and shared by every [`Rcon`] of this process that talks to the same server (the server's
/// bucket is per source IP, not per socket).
struct Gate {
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let gained = now.duration_since(self.last).as_secs_f64() / REFILL.as_secs_f64();
        self.tokens = (self.tokens + gained).min(BURST);
        self.last = now;
    }
    /// How long until one token is available.
    fn wait_needed(&self) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            REFILL.mul_f64(1.0 - self.tokens)
        }
    }
}

fn gate_for(server: SocketAddr) -> Arc<Gate> {
    static GATES: OnceLock<StdMutex<HashMap<SocketAddr, Arc<Gate>>>> = OnceLock::new();
    let map = GATES.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(server)
        .or_insert_with(|| {
            Arc::new(Gate {
                bucket: Mutex::new(Bucket {
                    tokens: BURST,
                    last: Instant::now(),
                }),
            })
        })
        .clone()
}

/// A bot name from OpenArena's bots.txt, in its canonical spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotName(&'static str);

impl BotName {
    pub fn new(name: &str) -> Result<Self> {
        OPENARENA_BOTS
            .iter()
            .find(|b| b.eq_ignore_ascii_case(name))
            .map(|b| BotName(b))
            .ok_or_else(|| ArenaError::InvalidArgument {
                what: "bot name",
                detail: format!("`{}` is not an OpenArena bot", name.escape_debug()),
            })
    }
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

/// A map name safe to put into a command: `[A-Za-z0-9_-]{1,64}` (the scenario's rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapName(String);

impl MapName {
    pub fn new(name: &str) -> Result<Self> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(MapName(name.to_string()))
        } else {
            Err(ArenaError::InvalidArgument {
                what: "map name",
                detail: format!(
                    "`{}` may only contain letters, digits, `_` and `-`",
                    name.escape_debug()
                ),
            })
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The cvars oa-run sets. Values are integers, so nothing free-form is ever interpolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cvar {
    Timelimit,
    Fraglimit,
    DoWarmup,
    Warmup,
    BotMinPlayers,
    AllowVote,
}

impl Cvar {
    pub fn name(self) -> &'static str {
        match self {
            Cvar::Timelimit => "timelimit",
            Cvar::Fraglimit => "fraglimit",
            Cvar::DoWarmup => "g_doWarmup",
            Cvar::Warmup => "g_warmup",
            Cvar::BotMinPlayers => "bot_minplayers",
            Cvar::AllowVote => "g_allowVote",
        }
    }
}

/// How a command's reply is read and whether a lost request may be sent again.
#[derive(Debug, Clone, Copy)]
struct Class {
    /// Repeating it changes nothing (status, set …). `addbot`, `clientkick` (the slot may have
    /// been taken by someone else meanwhile), `map` and `map_restart` are not.
    idempotent: bool,
    first_wait: Duration,
    quiet_gap: Duration,
}

const QUICK: Class = Class {
    idempotent: true,
    first_wait: Duration::from_millis(1200),
    quiet_gap: Duration::from_millis(250),
};
const ONCE: Class = Class {
    idempotent: false,
    ..QUICK
};
/// `map` loads the map before answering, and prints in bursts while loading.
const LOAD: Class = Class {
    idempotent: false,
    first_wait: Duration::from_secs(20),
    quiet_gap: Duration::from_millis(1500),
};
const RESTART: Class = Class {
    idempotent: false,
    first_wait: Duration::from_secs(5),
    quiet_gap: Duration::from_millis(500),
};

/// A command built only from validated parts; see the constructors.
#[derive(Debug, Clone)]
pub struct RconCmd {
    text: String,
    class: Class,
}

fn check_slot(slot: u8) -> Result<u8> {
    if slot < MAX_SLOTS {
        Ok(slot)
    } else {
        Err(ArenaError::InvalidArgument {
            what: "slot",
            detail: format!("{slot} is not a client slot (0–{})", MAX_SLOTS - 1),
        })
    }
}

impl RconCmd {
    fn new(text: String, class: Class) -> Self {
        RconCmd { text, class }
    }
    pub fn status() -> Self {
        Self::new("status".into(), QUICK)
    }
    pub fn cvarlist() -> Self {
        Self::new("cvarlist".into(), QUICK)
    }
    pub fn serverinfo() -> Self {
        Self::new("serverinfo".into(), QUICK)
    }
    pub fn dumpuser(slot: u8) -> Result<Self> {
        Ok(Self::new(format!("dumpuser {}", check_slot(slot)?), QUICK))
    }
    /// Kick by slot (never by name: a name can be anything, including another player's).
    pub fn clientkick(slot: u8) -> Result<Self> {
        Ok(Self::new(format!("clientkick {}", check_slot(slot)?), ONCE))
    }
    pub fn kickbots() -> Self {
        Self::new("kickbots".into(), QUICK)
    }
    /// `addbot <name> <skill>`; skill 1–5.
    pub fn addbot(name: &BotName, skill: u8) -> Result<Self> {
        if !(1..=5).contains(&skill) {
            return Err(ArenaError::InvalidArgument {
                what: "bot skill",
                detail: format!("{skill} is not 1–5"),
            });
        }
        Ok(Self::new(format!("addbot {} {skill}", name.as_str()), ONCE))
    }
    pub fn set(cvar: Cvar, value: i64) -> Self {
        Self::new(format!("set {} {value}", cvar.name()), QUICK)
    }
    /// Typing a cvar's name alone prints its value.
    pub fn get(cvar: Cvar) -> Self {
        Self::new(cvar.name().into(), QUICK)
    }
    pub fn map(map: &MapName) -> Self {
        Self::new(format!("map {}", map.as_str()), LOAD)
    }
    /// `map_restart 0`: restart at once (without the 0 it waits 5 s when warmup is off).
    pub fn map_restart() -> Self {
        Self::new("map_restart 0".into(), RESTART)
    }
    pub fn text(&self) -> &str {
        &self.text
    }
    pub fn idempotent(&self) -> bool {
        self.class.idempotent
    }
}

/// A reassembled reply.
#[derive(Debug, Clone)]
pub struct RconReply {
    /// All packets' payloads concatenated, then decoded lossily.
    pub text: String,
    pub packets: usize,
    /// When the first packet arrived.
    pub first_packet_at: DateTime<Utc>,
    pub first_packet_instant: Instant,
    /// Attempts used (more than 1 only for idempotent commands).
    pub attempts: u32,
}

enum Exchange {
    Reply {
        data: Vec<u8>,
        packets: usize,
        first_wall: DateTime<Utc>,
        first_instant: Instant,
    },
    Silent,
    Refused,
}

/// An rcon client for one server.
#[derive(Clone)]
pub struct Rcon {
    server: SocketAddr,
    password: Secret,
    gate: Arc<Gate>,
}

impl std::fmt::Debug for Rcon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rcon")
            .field("server", &self.server)
            .field("password", &self.password)
            .finish()
    }
}

/// Where rcon goes for a listen address: an unspecified address (`0.0.0.0`, `::`) means the
/// server listens everywhere, so talk to it on loopback.
pub fn rcon_target(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

/// Whether a password can travel in an rcon datagram (and in a quoted config line).
pub fn check_password(pw: &Secret) -> Result<()> {
    let p = pw.expose();
    if p.is_empty() || p.len() > 256 {
        return Err(ArenaError::InvalidArgument {
            what: "rcon password",
            detail: "must be 1–256 characters".into(),
        });
    }
    if p.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == ';')
    {
        return Err(ArenaError::InvalidArgument {
            what: "rcon password",
            detail: "contains spaces, quotes, `;` or control characters, which rcon cannot carry"
                .into(),
        });
    }
    Ok(())
}

impl Rcon {
    /// `server` is the address to send to (see [`rcon_target`]).
    pub fn new(server: SocketAddr, password: Secret) -> Result<Self> {
        check_password(&password)?;
        Ok(Rcon {
            server,
            password,
            gate: gate_for(server),
        })
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Send one command and return its reassembled reply. Idempotent commands are resent (up to
    /// 3 attempts) when no packet at all came back; others are sent once and a silent server
    /// gives [`ArenaError::NoReply`] — the caller checks the game log before trying again.
    pub async fn send(&self, cmd: &RconCmd) -> Result<RconReply> {
        let attempts = if cmd.class.idempotent {
            IDEMPOTENT_ATTEMPTS
        } else {
            1
        };
        let mut datagram = Vec::with_capacity(16 + self.password.expose().len() + cmd.text.len());
        datagram.extend_from_slice(OOB);
        datagram.extend_from_slice(b"rcon \"");
        datagram.extend_from_slice(self.password.expose().as_bytes());
        datagram.extend_from_slice(b"\" ");
        datagram.extend_from_slice(cmd.text.as_bytes());

        // The gate is held for the whole exchange: one request in flight per server.
        let mut bucket = self.gate.bucket.lock().await;
        for attempt in 1..=attempts {
            bucket.refill(Instant::now());
            let wait = bucket.wait_needed();
            if !wait.is_zero() {
                debug!(
                    wait_ms = wait.as_millis() as u64,
                    "rcon: pacing for the server's rate limit"
                );
                tokio::time::sleep(wait).await;
                bucket.refill(Instant::now());
            }
            bucket.tokens -= 1.0;
            debug!(server = %self.server, command = %verb(&cmd.text), attempt, "rcon request");
            let sent = Instant::now();
            let exchanged = self.exchange(&datagram, cmd.class).await;
            let exchanged = exchanged.inspect_err(|_| stats::record(Outcome::Error, None))?;
            match exchanged {
                Exchange::Reply {
                    data,
                    packets,
                    first_wall,
                    first_instant,
                } => {
                    let text = redact(
                        String::from_utf8_lossy(&data).into_owned(),
                        self.password.expose(),
                    );
                    debug!(packets, bytes = data.len(), "rcon reply");
                    let classified = classify(self.server, text);
                    stats::record(
                        if classified.is_ok() {
                            Outcome::Ok
                        } else {
                            Outcome::Error
                        },
                        Some(first_instant.saturating_duration_since(sent)),
                    );
                    return classified.map(|text| RconReply {
                        text,
                        packets,
                        first_packet_at: first_wall,
                        first_packet_instant: first_instant,
                        attempts: attempt,
                    });
                }
                Exchange::Refused => {
                    stats::record(Outcome::Refused, None);
                    return Err(ArenaError::Refused {
                        server: self.server,
                    });
                }
                Exchange::Silent => {
                    stats::record(Outcome::NoReply, None);
                    // Dropped by the server's bucket (or lost): assume its bucket is full.
                    bucket.tokens = 0.0;
                    warn!(server = %self.server, command = %verb(&cmd.text), attempt, "rcon: no reply");
                }
            }
        }
        Err(ArenaError::NoReply {
            server: self.server,
            command: verb(&cmd.text).to_string(),
            attempts,
        })
    }

    async fn exchange(&self, datagram: &[u8], class: Class) -> Result<Exchange> {
        let sock_err = |source| ArenaError::Socket {
            server: self.server,
            source,
        };
        let local: SocketAddr = if self.server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(local).await.map_err(sock_err)?;
        // Connected: the kernel drops datagrams from anyone else, and reports ICMP refusals.
        sock.connect(self.server).await.map_err(sock_err)?;
        sock.send(datagram).await.map_err(sock_err)?;

        let started = Instant::now();
        let mut buf = vec![0u8; 65536];
        let mut data = Vec::new();
        let mut packets = 0usize;
        let mut first: Option<(DateTime<Utc>, Instant)> = None;
        loop {
            let wait = if packets == 0 {
                class.first_wait
            } else {
                class.quiet_gap
            };
            let wait = wait.min(MAX_REPLY_TIME.saturating_sub(started.elapsed()));
            match tokio::time::timeout(wait, sock.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    if packets == 0 {
                        return Ok(Exchange::Refused);
                    }
                    break;
                }
                Ok(Err(e)) => return Err(sock_err(e)),
                Ok(Ok(n)) => {
                    let pkt = &buf[..n];
                    if let Some(payload) = pkt.strip_prefix(PRINT_HEADER) {
                        first.get_or_insert_with(|| (Utc::now(), Instant::now()));
                        let room = MAX_REPLY_BYTES - data.len();
                        data.extend_from_slice(&payload[..payload.len().min(room)]);
                        packets += 1;
                        if payload.len() >= room {
                            warn!(server = %self.server, bytes = MAX_REPLY_BYTES, "rcon: reply cut at the size bound");
                            break;
                        }
                    } else {
                        debug!(
                            bytes = n,
                            "rcon: ignoring a datagram that is not a print reply"
                        );
                    }
                }
            }
        }
        Ok(match first {
            Some((first_wall, first_instant)) => Exchange::Reply {
                data,
                packets,
                first_wall,
                first_instant,
            },
            None => Exchange::Silent,
        })
    }
}

/// Replies can echo the password (`cvarlist` lists `rconPassword "…"`, typing the cvar prints
/// its value); replace its quoted forms so a reply can be logged or stored safely.
fn redact(text: String, pw: &str) -> String {
    if pw.is_empty() || !text.contains(pw) {
        return text;
    }
    text.replace(&format!("\"{pw}\""), "\"***\"")
        .replace(&format!("\"{pw}^7\""), "\"***^7\"")
}

/// The first word of a command, for logs and errors.
fn verb(text: &str) -> &str {
    text.split(' ').next().unwrap_or(text)
}

fn classify(server: SocketAddr, text: String) -> Result<String> {
    match text.trim_end() {
        "Bad rconpassword." => Err(ArenaError::BadPassword { server }),
        "No rconpassword set on the server." => Err(ArenaError::NoPasswordSet { server }),
        _ => Ok(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_built_from_validated_parts() {
        assert_eq!(RconCmd::clientkick(3).unwrap().text(), "clientkick 3");
        assert!(RconCmd::clientkick(64).is_err());
        let sarge = BotName::new("sarge").unwrap();
        assert_eq!(RconCmd::addbot(&sarge, 2).unwrap().text(), "addbot Sarge 2");
        assert!(RconCmd::addbot(&sarge, 0).is_err());
        assert!(BotName::new("Sarge; quit").is_err());
        assert!(BotName::new("Bob").is_err());
        assert!(MapName::new("oa_dm1").is_ok());
        for bad in ["", "oa dm1", "x;quit", "../x", "a\"b", &"m".repeat(65)] {
            assert!(MapName::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(RconCmd::set(Cvar::DoWarmup, 0).text(), "set g_doWarmup 0");
        assert!(!RconCmd::map_restart().idempotent());
        assert!(!RconCmd::clientkick(1).unwrap().idempotent());
        assert!(RconCmd::status().idempotent());
    }

    #[test]
    fn passwords_that_rcon_cannot_carry_are_refused() {
        assert!(check_password(&Secret::new("ok;no")).is_err());
        assert!(check_password(&Secret::new("a b")).is_err());
        assert!(check_password(&Secret::new("a\"b")).is_err());
        assert!(check_password(&Secret::new("")).is_err());
        assert!(check_password(&Secret::new("s3cr//et!")).is_ok());
    }

    #[test]
    fn unspecified_listen_addresses_are_reached_on_loopback() {
        assert_eq!(
            rcon_target("0.0.0.0:27960".parse().unwrap()),
            "127.0.0.1:27960".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            rcon_target("[::]:27960".parse().unwrap()),
            "[::1]:27960".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            rcon_target("10.0.0.5:27961".parse().unwrap()),
            "10.0.0.5:27961".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn bucket_paces_after_the_burst() {
        let now = Instant::now();
        let mut b = Bucket {
            tokens: BURST,
            last: now,
        };
        for _ in 0..8 {
            b.refill(now);
            assert_eq!(b.wait_needed(), Duration::ZERO);
            b.tokens -= 1.0;
        }
        assert!(b.wait_needed() >= Duration::from_millis(1000));
        b.refill(now + REFILL);
        assert_eq!(b.wait_needed(), Duration::ZERO);
    }

    #[test]
    fn replies_never_carry_the_password() {
        let t = redact(
            "          rconPassword \"s3cret\"\n\"rconpassword\" is:\"s3cret^7\" default:\"\"\n sv_hostname \"s3cretive\"\n".into(),
            "s3cret",
        );
        assert!(
            !t.contains("\"s3cret\"") && !t.contains("\"s3cret^7"),
            "{t}"
        );
        assert!(t.contains("rconPassword \"***\""));
        assert!(t.contains("\"s3cretive\""), "other values are left alone");
    }

    #[test]
    fn auth_failures_are_typed() {
        let s: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(matches!(
            classify(s, "Bad rconpassword.\n".into()),
            Err(ArenaError::BadPassword { .. })
        ));
        assert!(matches!(
            classify(s, "No rconpassword set on the server.\n".into()),
            Err(ArenaError::NoPasswordSet { .. })
        ));
        assert!(classify(s, "map: oa_dm1\n".into()).is_ok());
    }

    #[tokio::test]
    async fn a_flood_of_reply_packets_is_cut_at_the_bound() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let flood = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let (_, from) = server.recv_from(&mut buf).await.unwrap();
            let mut pkt = PRINT_HEADER.to_vec();
            pkt.extend(std::iter::repeat_n(b'x', 1000));
            // 2 MB of "reply", back to back.
            for _ in 0..2000 {
                if server.send_to(&pkt, from).await.is_err() {
                    break;
                }
            }
        });
        let r = Rcon::new(addr, Secret::new("pw")).unwrap();
        let reply = r.send(&RconCmd::status()).await.unwrap();
        assert_eq!(reply.text.len(), MAX_REPLY_BYTES);
        flood.abort();
    }

    #[tokio::test]
    async fn a_silent_server_gives_no_reply_and_a_closed_port_is_refused() {
        // A bound socket that never answers: the request is "dropped".
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let r = Rcon::new(addr, Secret::new("pw")).unwrap();
        let t = Instant::now();
        match r.send(&RconCmd::clientkick(1).unwrap()).await {
            Err(ArenaError::NoReply { attempts: 1, .. }) => {}
            other => panic!("expected NoReply after one attempt, got {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(3));
        drop(silent);
        let r = Rcon::new(addr, Secret::new("pw")).unwrap();
        assert!(matches!(
            r.send(&RconCmd::status()).await,
            Err(ArenaError::Refused { .. })
        ));
    }
}
