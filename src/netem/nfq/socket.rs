//! The NFQUEUE netlink socket, written for the shaper's one job: many small packets held for a
//! while, then accepted. It replaces the `nfq` crate (0.2.5), measured at 20 % of a core for the
//! benchmark's 7,680 packets/s, because that crate keeps its socket private (so the thread could
//! only sleep-poll every 200 µs) and sends one verdict per system call. Here the thread sleeps in
//! `ppoll` until a packet arrives or the next one is due, reads up to [`RX_BATCH`] packets per
//! `recvmmsg`, keeps only their ids, and sends all verdicts of one wakeup in one `sendto`
//! (netlink processes every message of a datagram).
//!
//! The message layouts are the kernel's (`linux/netfilter/nfnetlink_queue.h`); the builders and
//! the parser are pure functions, unit-tested below, and the parser never panics on a short or
//! malformed message.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::worker::{Way, player_addr};

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NLMSG_ERROR: u16 = 2;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CAP_LEN: u16 = 13;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_UNBIND: u8 = 2;
const NFQNL_COPY_PACKET: u8 = 2;
/// Attribute type bits that are flags, not the type.
const NLA_TYPE_MASK: u16 = 0x3fff;

const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;

/// `NF_INET_PRE_ROUTING`: player → server.
const HOOK_PRE_ROUTING: u8 = 0;

/// Packets read per `recvmmsg`.
pub const RX_BATCH: usize = 64;
/// Bytes per received message: headers and attributes (about 100 bytes) plus the copied part
/// of the packet (at most 64 bytes, the copy range), with room to spare.
const RX_MSG: usize = 512;
/// The kernel-side receive buffer asked for: a burst of a few thousand packets fits.
const RCVBUF: libc::c_int = 4 << 20;
/// Verdicts per datagram (32 bytes each).
const TX_MAX: usize = 1024;

/// What the shaper needs of one queued packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    pub id: u32,
    pub way: Way,
    /// The player's address (destination for egress, source for ingress), if the copied bytes
    /// hold an IP header.
    pub player: Option<IpAddr>,
    /// The packet's length on the wire.
    pub len: u32,
}

/// One message read from the socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Packet(Queued),
    /// An acknowledgement (`errno` 0) or an error reply to a request.
    Ack {
        seq: u32,
        errno: i32,
    },
    /// Something else (ignored).
    Other,
}

fn put_u16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_ne_bytes());
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_ne_bytes());
}

/// Append one netlink message of `kind` for `queue`, with attributes `(type, payload)`.
fn push_msg(b: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, queue: u16, attrs: &[(u16, &[u8])]) {
    let start = b.len();
    put_u32(b, 0); // length, set below
    put_u16(b, (NFNL_SUBSYS_QUEUE << 8) | kind);
    put_u16(b, libc::NLM_F_REQUEST as u16 | flags);
    put_u32(b, seq);
    put_u32(b, 0); // port id: the kernel
    // nfgenmsg: family AF_UNSPEC, version 0, the queue number big-endian.
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&queue.to_be_bytes());
    for (t, data) in attrs {
        put_u16(b, (4 + data.len()) as u16);
        put_u16(b, *t);
        b.extend_from_slice(data);
        while !b.len().is_multiple_of(4) {
            b.push(0);
        }
    }
    let len = (b.len() - start) as u32;
    b[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// A configuration request (acknowledged).
fn config_msg(b: &mut Vec<u8>, seq: u32, queue: u16, attr: u16, data: &[u8]) {
    push_msg(
        b,
        NFQNL_MSG_CONFIG,
        libc::NLM_F_ACK as u16,
        seq,
        queue,
        &[(attr, data)],
    );
}

/// A verdict for packet `id` (not acknowledged: errors still come back as error replies).
pub fn verdict_msg(b: &mut Vec<u8>, queue: u16, id: u32, accept: bool) {
    let mut hdr = [0u8; 8];
    hdr[..4].copy_from_slice(&(if accept { NF_ACCEPT } else { NF_DROP }).to_be_bytes());
    hdr[4..].copy_from_slice(&id.to_be_bytes());
    push_msg(
        b,
        NFQNL_MSG_VERDICT,
        0,
        0,
        queue,
        &[(NFQA_VERDICT_HDR, &hdr)],
    );
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Every netlink message in a datagram, parsed; a truncated tail is ignored.
pub fn parse(datagram: &[u8], mut each: impl FnMut(Incoming)) {
    let mut at = 0;
    while let Some(len) = u32_at(datagram, at) {
        let len = len as usize;
        let Some(msg) = datagram.get(at..at + len).filter(|_| len >= 16) else {
            return;
        };
        each(parse_one(msg));
        at += len.div_ceil(4) * 4;
    }
}

fn parse_one(msg: &[u8]) -> Incoming {
    let kind = u16_at(msg, 4).unwrap_or(0);
    if kind == NLMSG_ERROR {
        let errno = msg
            .get(16..20)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_ne_bytes)
            .unwrap_or(-libc::EPROTO);
        // The echoed request header's sequence number follows the error code.
        let seq = u32_at(msg, 20 + 8).unwrap_or(0);
        return Incoming::Ack { seq, errno: -errno };
    }
    if kind != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
        return Incoming::Other;
    }
    let (mut id_hook, mut payload, mut cap_len) = (None, &[][..], None);
    let mut at = 20; // netlink header (16) + nfgenmsg (4)
    while let (Some(alen), Some(atype)) = (u16_at(msg, at), u16_at(msg, at + 2)) {
        let alen = alen as usize;
        let Some(data) = msg.get(at + 4..at + alen).filter(|_| alen >= 4) else {
            break;
        };
        match atype & NLA_TYPE_MASK {
            // struct nfqnl_msg_packet_hdr { __be32 packet_id; __be16 hw_protocol; __u8 hook; }
            NFQA_PACKET_HDR if data.len() >= 7 => {
                let id = u32::from_be_bytes(data[..4].try_into().unwrap_or_default());
                id_hook = Some((id, data[6]));
            }
            NFQA_PAYLOAD => payload = data,
            NFQA_CAP_LEN if data.len() >= 4 => {
                cap_len = Some(u32::from_be_bytes(data[..4].try_into().unwrap_or_default()));
            }
            _ => {}
        }
        at += alen.div_ceil(4) * 4;
    }
    let Some((id, hook)) = id_hook else {
        return Incoming::Other;
    };
    let way = if hook == HOOK_PRE_ROUTING {
        Way::Ingress
    } else {
        Way::Egress
    };
    Incoming::Packet(Queued {
        id,
        way,
        player: player_addr(payload, way),
        len: cap_len.unwrap_or(payload.len() as u32),
    })
}

/// A bound queue.
pub struct QueueSocket {
    fd: OwnedFd,
    queue: u16,
    seq: u32,
    rx: Vec<[u8; RX_MSG]>,
    tx: Vec<u8>,
    pending: usize,
    /// Packets read while waiting for an acknowledgement, handed out by the next `recv`.
    early: Vec<Queued>,
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl QueueSocket {
    /// Open a netfilter netlink socket (in the calling thread's network namespace).
    pub fn open(queue: u16) -> io::Result<QueueSocket> {
        // SAFETY: plain socket call; the result is checked before it is owned.
        let fd = check(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        })?;
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        let set = |level, name, v: libc::c_int| {
            // SAFETY: a valid descriptor and a pointer to a live c_int of the given size.
            unsafe {
                libc::setsockopt(
                    raw,
                    level,
                    name,
                    (&v as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        // A full socket buffer drops packets (like a full queue); root may go past rmem_max.
        if set(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RCVBUF) < 0 {
            let _ = set(libc::SOL_SOCKET, libc::SO_RCVBUF, RCVBUF);
        }
        // Overruns are counted by the kernel; an ENOBUFS error would only interrupt the loop.
        check(set(libc::SOL_NETLINK, libc::NETLINK_NO_ENOBUFS, 1))?;
        // SAFETY: a zeroed sockaddr_nl with its family set is a valid "let the kernel choose"
        // address, passed with its size.
        check(unsafe {
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::bind(
                raw,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        })?;
        Ok(QueueSocket {
            fd,
            queue,
            seq: 0,
            rx: vec![[0u8; RX_MSG]; RX_BATCH],
            tx: Vec::with_capacity(TX_MAX * 32),
            pending: 0,
            early: Vec::new(),
        })
    }

    fn send(&self, buf: &[u8]) -> io::Result<()> {
        // SAFETY: a zeroed sockaddr_nl addresses the kernel; `buf` is live for the call.
        let rc = unsafe {
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::sendto(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Send one configuration request and wait (at most 2 s) for its acknowledgement. Packets
    /// that arrive meanwhile are kept for the next [`recv`](Self::recv).
    fn request(&mut self, attr: u16, data: &[u8]) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut b = Vec::with_capacity(64);
        config_msg(&mut b, seq, self.queue, attr, data);
        self.send(&b)?;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut result = None;
        while result.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no reply from the kernel",
                ));
            }
            self.wait(left)?;
            let mut early = std::mem::take(&mut self.early);
            self.read(|m| match m {
                Incoming::Ack { seq: s, errno } if s == seq => result = Some(errno),
                Incoming::Packet(p) => early.push(p),
                _ => {}
            })?;
            self.early = early;
        }
        match result {
            Some(0) | None => Ok(()),
            Some(e) => Err(io::Error::from_raw_os_error(e)),
        }
    }

    /// Bind the queue; fails with `EPERM` (as the kernel answers) while another socket holds it.
    pub fn bind(&mut self) -> io::Result<()> {
        // struct nfqnl_msg_config_cmd { __u8 command; __u8 _pad; __be16 pf; }
        self.request(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0])
    }

    /// Copy `range` bytes of each packet to userspace, and hold at most `max_len` in the kernel.
    pub fn configure(&mut self, range: u16, max_len: u32) -> io::Result<()> {
        // struct nfqnl_msg_config_params { __be32 copy_range; __u8 copy_mode; } (packed)
        let mut p = [0u8; 5];
        p[..4].copy_from_slice(&u32::from(range).to_be_bytes());
        p[4] = NFQNL_COPY_PACKET;
        self.request(NFQA_CFG_PARAMS, &p)?;
        self.request(NFQA_CFG_QUEUE_MAXLEN, &max_len.to_be_bytes())
    }

    pub fn unbind(&mut self) -> io::Result<()> {
        self.request(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_UNBIND, 0, 0, 0])
    }

    /// Sleep until a message can be read or `timeout` passes (microsecond resolution).
    pub fn wait(&self, timeout: Duration) -> io::Result<()> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: one valid pollfd and a valid timespec, both live for the call.
        let rc = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Read what is waiting without blocking, one `recvmmsg`; returns how many datagrams.
    fn read(&mut self, mut each: impl FnMut(Incoming)) -> io::Result<usize> {
        // SAFETY: zeroed iovec and mmsghdr are valid values; each header then points at one
        // iovec, and each iovec at one receive buffer, all live across the call below.
        let mut iov: [libc::iovec; RX_BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; RX_BATCH] = unsafe { std::mem::zeroed() };
        for ((h, v), b) in hdrs.iter_mut().zip(iov.iter_mut()).zip(self.rx.iter_mut()) {
            v.iov_base = b.as_mut_ptr().cast();
            v.iov_len = RX_MSG;
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `hdrs` and the buffers they point at live across the call; RX_BATCH entries.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                RX_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let n = n as usize;
        for (h, b) in hdrs.iter().zip(self.rx.iter()).take(n) {
            let len = (h.msg_len as usize).min(RX_MSG);
            parse(&b[..len], &mut each);
        }
        Ok(n)
    }

    /// The packets waiting (at most [`RX_BATCH`] per call, none if nothing waits); error
    /// replies to earlier verdicts are returned as `Err` after the packets are handed out.
    pub fn recv(&mut self, mut each: impl FnMut(Queued)) -> io::Result<usize> {
        let early = std::mem::take(&mut self.early);
        let mut got = early.len();
        for p in early {
            each(p);
        }
        let mut failed = None;
        self.read(|m| match m {
            Incoming::Packet(p) => {
                got += 1;
                each(p);
            }
            Incoming::Ack { errno, .. } if errno != 0 => {
                failed.get_or_insert(errno);
            }
            _ => {}
        })?;
        match failed {
            Some(e) => Err(io::Error::from_raw_os_error(e)),
            None => Ok(got),
        }
    }

    /// Queue a verdict; sent by [`flush`](Self::flush) (or at once when the buffer is full).
    pub fn verdict(&mut self, id: u32, accept: bool) -> io::Result<()> {
        verdict_msg(&mut self.tx, self.queue, id, accept);
        self.pending += 1;
        if self.pending >= TX_MAX {
            return self.flush();
        }
        Ok(())
    }

    /// Send every queued verdict in one datagram.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        let r = self.send(&self.tx);
        self.tx.clear();
        self.pending = 0;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet message as the kernel builds it.
    fn packet_msg(id: u32, hook: u8, payload: &[u8], cap_len: Option<u32>) -> Vec<u8> {
        let mut hdr = [0u8; 7];
        hdr[..4].copy_from_slice(&id.to_be_bytes());
        hdr[4..6].copy_from_slice(&0x0800u16.to_be_bytes());
        hdr[6] = hook;
        let cap;
        let mut attrs: Vec<(u16, &[u8])> = vec![(NFQA_PACKET_HDR, &hdr), (NFQA_PAYLOAD, payload)];
        if let Some(c) = cap_len {
            cap = c.to_be_bytes();
            attrs.push((NFQA_CAP_LEN, &cap));
        }
        let mut b = Vec::new();
        push_msg(&mut b, NFQNL_MSG_PACKET, 0, 0, 7, &attrs);
        b
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    fn all(b: &[u8]) -> Vec<Incoming> {
        let mut v = Vec::new();
        parse(b, |m| v.push(m));
        v
    }

    #[test]
    fn packets_are_read_with_id_direction_player_and_length() {
        let mut b = packet_msg(
            0x0102_0304,
            3,
            &ipv4([10, 0, 0, 1], [10, 0, 0, 11]),
            Some(1200),
        );
        b.extend(packet_msg(9, 0, &ipv4([10, 0, 0, 12], [10, 0, 0, 1]), None));
        assert_eq!(
            all(&b),
            vec![
                Incoming::Packet(Queued {
                    id: 0x0102_0304,
                    way: Way::Egress,
                    player: Some("10.0.0.11".parse().unwrap()),
                    len: 1200,
                }),
                Incoming::Packet(Queued {
                    id: 9,
                    way: Way::Ingress,
                    player: Some("10.0.0.12".parse().unwrap()),
                    len: 28,
                }),
            ]
        );
    }

    #[test]
    fn error_replies_carry_the_request_sequence() {
        let mut req = Vec::new();
        config_msg(&mut req, 77, 7, NFQA_CFG_CMD, &[1, 0, 0, 0]);
        let mut b = Vec::new();
        put_u32(&mut b, (16 + 4 + 16) as u32);
        put_u16(&mut b, NLMSG_ERROR);
        put_u16(&mut b, 0);
        put_u32(&mut b, 77);
        put_u32(&mut b, 0);
        b.extend_from_slice(&(-libc::EPERM).to_ne_bytes());
        b.extend_from_slice(&req[..16]);
        assert_eq!(
            all(&b),
            vec![Incoming::Ack {
                seq: 77,
                errno: libc::EPERM
            }]
        );
    }

    #[test]
    fn verdicts_are_concatenated_kernel_messages() {
        let mut b = Vec::new();
        verdict_msg(&mut b, 7, 5, true);
        verdict_msg(&mut b, 7, 6, false);
        assert_eq!(b.len(), 64);
        for (i, m) in b.chunks(32).enumerate() {
            assert_eq!(u32_at(m, 0), Some(32));
            assert_eq!(u16_at(m, 4), Some(0x0301));
            assert_eq!(&m[18..20], &7u16.to_be_bytes());
            assert_eq!(u16_at(m, 20), Some(12));
            assert_eq!(u16_at(m, 22), Some(NFQA_VERDICT_HDR));
            let verdict = if i == 0 { NF_ACCEPT } else { NF_DROP };
            assert_eq!(&m[24..28], &verdict.to_be_bytes());
            assert_eq!(&m[28..32], &(5 + i as u32).to_be_bytes());
        }
    }

    #[test]
    fn malformed_messages_never_panic() {
        let good = packet_msg(1, 3, &ipv4([1, 1, 1, 1], [2, 2, 2, 2]), None);
        for cut in 0..good.len() {
            let _ = all(&good[..cut]);
        }
        // A length field of zero or past the end, attributes of length 0 or 2.
        let mut bad = good.clone();
        bad[0..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(all(&bad).is_empty());
        let mut bad = good.clone();
        bad[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(all(&bad).is_empty());
        let mut bad = good.clone();
        bad[20..22].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(all(&bad), vec![Incoming::Other]);
        // No payload: the packet is still there (to be accepted), its player unknown.
        let mut b = Vec::new();
        push_msg(
            &mut b,
            NFQNL_MSG_PACKET,
            0,
            0,
            7,
            &[(NFQA_PACKET_HDR, &[0, 0, 0, 4, 8, 0, 3])],
        );
        assert!(matches!(
            all(&b)[..],
            [Incoming::Packet(Queued {
                id: 4,
                player: None,
                ..
            })]
        ));
    }
}
