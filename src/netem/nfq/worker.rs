//! The I/O edge of the userspace shaper: one thread that owns the NFQUEUE socket, classifies
//! each queued packet to its player and direction, holds it in the [`Scheduler`] and gives the
//! verdict when it is due. The per-player table is replaced as a whole between matches (one
//! message, acknowledged), so a match's delays switch atomically.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::schedule::{Admit, Profile, Rng, Scheduler};
use super::socket::QueueSocket;
use crate::netem::runner::QueueHome;

/// The longest the thread sleeps while nothing is held and nothing arrives: bounds how long a
/// new table or a stop waits to be seen. Packets wake the thread at once (`ppoll`).
const IDLE: Duration = Duration::from_millis(10);
/// While packets flow, the thread wakes at most once per tick: what arrived meanwhile is read
/// and what fell due is released together, one `recvmmsg` and one `sendto` for all of them.
/// Each wake-up costs a context switch (more in a VM), so this bounds the thread's CPU under
/// load; the price is up to one tick of extra delay per pass. Measured with the benchmark
/// (round trip, two passes; p50 error, p99, thread CPU): 100 µs 0.27 ms, 0.56–0.76 ms, 21–25 %;
/// 200 µs 0.38–0.46 ms, 0.73–2.1 ms, 20–23 %; 250 µs 0.47–0.54 ms, 0.84–1.8 ms, 17–21 %;
/// 350 µs 0.67 ms, 1.1–2.1 ms, 14 %. The tail is mostly the VM's scheduling (it moved from
/// 0.7 to 2 ms between runs of one setting), so the tick is chosen for the CPU.
const TICK: Duration = Duration::from_micros(250);
/// Most packets read from the socket before releasing what is due (a few `recvmmsg`s).
const BATCH: usize = 256;
/// Bytes of each packet copied to userspace: enough for the IPv6 header (40) and UDP ports.
const COPY_RANGE: u16 = 64;

/// Which way a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Way {
    /// Server → player.
    Egress,
    /// Player → server.
    Ingress,
}

/// The in-force table: player address and direction → lane and profile.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub generation: u64,
    pub lanes: HashMap<(IpAddr, Way), (usize, Profile)>,
}

/// Per-lane counters, cumulative since setup.
#[derive(Debug, Default)]
pub struct LaneCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Dropped on purpose (the level's loss).
    pub lost: AtomicU64,
}

enum Ctl {
    Table(Table, Sender<u64>),
    Stop(Sender<usize>),
}

/// The running thread.
pub struct Worker {
    ctl: Sender<Ctl>,
    handle: Option<JoinHandle<()>>,
    pub counters: Arc<Vec<LaneCounters>>,
    /// Packets whose addresses matched no lane (accepted at once).
    pub unmatched: Arc<AtomicU64>,
    /// The first socket error after setup, if any (the thread keeps going).
    pub error: Arc<Mutex<Option<String>>>,
}

/// The player address of a queued packet (destination for egress, source for ingress).
pub fn player_addr(payload: &[u8], way: Way) -> Option<IpAddr> {
    match payload.first()? >> 4 {
        4 if payload.len() >= 20 => {
            let o = if way == Way::Egress { 16 } else { 12 };
            let b: [u8; 4] = payload[o..o + 4].try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 if payload.len() >= 40 => {
            let o = if way == Way::Egress { 24 } else { 8 };
            let b: [u8; 16] = payload[o..o + 16].try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// Run this thread under SCHED_FIFO at a low real-time priority where permitted (root). The
/// loop sleeps whenever nothing is due, and the kernel's real-time throttling bounds it anyway.
fn realtime() {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: plain FFI call on the current thread with a valid parameter struct.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if rc != 0 {
        tracing::debug!("the shaper thread runs without real-time priority (error {rc})");
    }
}

fn enter_netns(home: &QueueHome) -> Result<(), String> {
    if let QueueHome::Netns(ns) = home {
        let f = std::fs::File::open(format!("/run/netns/{ns}"))
            .map_err(|e| format!("cannot open network namespace {ns}: {e}"))?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("cannot enter network namespace {ns}: {e}"))?;
    }
    Ok(())
}

fn open_queue(home: &QueueHome, queue_num: u16, max_len: u32) -> Result<QueueSocket, String> {
    enter_netns(home)?;
    let mut q =
        QueueSocket::open(queue_num).map_err(|e| format!("cannot open an NFQUEUE socket: {e}"))?;
    // A queue whose previous owner just closed it (teardown, or a killed oa-run) is released by
    // the kernel shortly after: retry for up to a second before calling it someone else's.
    let mut tries = 0;
    loop {
        match q.bind() {
            Ok(()) => break,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(format!(
                    "cannot bind NFQUEUE {queue_num} (another process holds it?): {e}"
                ));
            }
        }
    }
    q.configure(COPY_RANGE, max_len)
        .map_err(|e| format!("cannot configure NFQUEUE {queue_num}: {e}"))?;
    Ok(q)
}

impl Worker {
    /// Open and bind the queue in `home` and start the thread; `lanes` is the number of lanes
    /// tables may name. Fails (with nothing left running) when the queue cannot be bound.
    pub fn start(
        home: QueueHome,
        queue_num: u16,
        max_len: u32,
        lanes: usize,
    ) -> Result<Worker, String> {
        let counters: Arc<Vec<LaneCounters>> =
            Arc::new((0..lanes).map(|_| LaneCounters::default()).collect());
        let unmatched = Arc::new(AtomicU64::new(0));
        let error = Arc::new(Mutex::new(None));
        let (ctl, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (c, u, e) = (counters.clone(), unmatched.clone(), error.clone());
        let handle = std::thread::Builder::new()
            .name("oa-run-nfqueue".into())
            .spawn(move || {
                // Wake up close to the asked time (the default slack is 50 µs), and ahead of
                // ordinary processes (a release delayed by the scheduler is a delay error).
                let _ = nix::sys::prctl::set_timerslack(1_000);
                realtime();
                let q = match open_queue(&home, queue_num, max_len) {
                    Ok(q) => {
                        let _ = ready_tx.send(Ok(()));
                        q
                    }
                    Err(why) => {
                        let _ = ready_tx.send(Err(why));
                        return;
                    }
                };
                let mut q = run(q, rx, lanes, c, u, e);
                // Release the queue now rather than when the socket's release is processed, so
                // the next run (or a test) can bind it at once.
                let _ = q.unbind();
            })
            .map_err(|e| format!("cannot start the shaper thread: {e}"))?;
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(Worker {
                ctl,
                handle: Some(handle),
                counters,
                unmatched,
                error,
            }),
            Ok(Err(why)) => {
                let _ = handle.join();
                Err(why)
            }
            Err(_) => Err("the shaper thread did not start within 5 s".into()),
        }
    }

    /// Put `table` in force; returns once the thread uses it (packets arriving from then on get
    /// the new profiles; packets already held keep their release time).
    pub fn set_table(&self, table: Table) -> Result<u64, String> {
        let (tx, rx) = mpsc::channel();
        self.ctl
            .send(Ctl::Table(table, tx))
            .map_err(|_| "the shaper thread has stopped".to_string())?;
        rx.recv_timeout(Duration::from_secs(2)).map_err(|e| {
            match e {
                RecvTimeoutError::Timeout => {
                    "the shaper thread did not take the new delays within 2 s"
                }
                RecvTimeoutError::Disconnected => "the shaper thread has stopped",
            }
            .to_string()
        })
    }

    /// Release every held packet, close the queue and end the thread. Returns how many packets
    /// were released early.
    pub fn stop(&mut self) -> Result<usize, String> {
        let Some(h) = self.handle.take() else {
            return Ok(0);
        };
        let (tx, rx) = mpsc::channel();
        let sent = self.ctl.send(Ctl::Stop(tx)).is_ok();
        let released = if sent {
            rx.recv_timeout(Duration::from_secs(5)).ok()
        } else {
            None
        };
        let joined = h.join().is_ok();
        match (released, joined) {
            (Some(n), true) => Ok(n),
            _ => Err("the shaper thread ended abnormally".into()),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// When packets found after a nap from `t0` to `woke` are taken to have arrived: the nap's middle
/// (an error of ± half a nap, not always + a whole one), but never more than half a tick before
/// waking, so a nap the scheduler stretched cannot release packets early by more than that.
fn arrival_stamp(t0: Instant, woke: Instant, tick: Duration) -> Instant {
    woke - (woke.saturating_duration_since(t0) / 2).min(tick / 2)
}

fn run(
    mut q: QueueSocket,
    ctl: Receiver<Ctl>,
    lanes: usize,
    counters: Arc<Vec<LaneCounters>>,
    unmatched: Arc<AtomicU64>,
    error: Arc<Mutex<Option<String>>>,
) -> QueueSocket {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    // Held packets are only their ids: the kernel keeps the packets themselves.
    let mut sched: Scheduler<u32> = Scheduler::new(lanes, Rng::new(seed));
    let mut table = Table::default();
    let mut out = Vec::new();
    let mut verdicts: Vec<(u32, bool)> = Vec::new();
    let mut napped_from: Option<Instant> = None;
    let note = |e: String| {
        if let Ok(mut g) = error.lock() {
            g.get_or_insert(e);
        }
    };
    let release_all = |q: &mut QueueSocket, sched: &mut Scheduler<u32>, out: &mut Vec<u32>| {
        sched.drain_all(out);
        let n = out.len();
        for id in out.drain(..) {
            if let Err(e) = q.verdict(id, true) {
                note(format!("verdict failed: {e}"));
            }
        }
        if let Err(e) = q.flush() {
            note(format!("verdict failed: {e}"));
        }
        n
    };
    loop {
        loop {
            match ctl.try_recv() {
                Ok(Ctl::Table(t, ack)) => {
                    let g = t.generation;
                    table = t;
                    let _ = ack.send(g);
                }
                Ok(Ctl::Stop(ack)) => {
                    let n = release_all(&mut q, &mut sched, &mut out);
                    let _ = ack.send(n);
                    return q;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    release_all(&mut q, &mut sched, &mut out);
                    return q;
                }
            }
        }
        let woke = Instant::now();
        let stamp = napped_from.map_or(woke, |t0| arrival_stamp(t0, woke, TICK));
        let mut got = 0;
        while got < BATCH {
            let now = if got == 0 { stamp } else { Instant::now() };
            let read = q.recv(|p| {
                let lane = p.player.and_then(|a| table.lanes.get(&(a, p.way)).copied());
                let Some((lane, profile)) = lane else {
                    unmatched.fetch_add(1, Ordering::Relaxed);
                    verdicts.push((p.id, true));
                    return;
                };
                let c = &counters[lane];
                c.packets.fetch_add(1, Ordering::Relaxed);
                c.bytes.fetch_add(u64::from(p.len), Ordering::Relaxed);
                if let Admit::Lost(id) = sched.admit(lane, profile, now, p.id) {
                    c.lost.fetch_add(1, Ordering::Relaxed);
                    verdicts.push((id, false));
                }
            });
            match read {
                // A short read drained the socket.
                Ok(n) if n < super::socket::RX_BATCH => {
                    got += n;
                    break;
                }
                Ok(n) => got += n,
                Err(e) => {
                    note(format!("receiving from the queue failed: {e}"));
                    break;
                }
            }
        }
        let now = Instant::now();
        sched.release_due(now, &mut out);
        let busy = got > 0 || !out.is_empty();
        for (id, accept) in verdicts.drain(..).chain(out.drain(..).map(|id| (id, true))) {
            if let Err(e) = q.verdict(id, accept) {
                note(format!("verdict failed: {e}"));
            }
        }
        if let Err(e) = q.flush() {
            note(format!("verdict failed: {e}"));
        }
        napped_from = None;
        if got >= BATCH {
            continue;
        }
        if busy {
            // Traffic is flowing: nap to the next tick, then take whatever came together.
            let until = woke + TICK;
            let now = Instant::now();
            if until > now {
                std::thread::sleep(until - now);
            }
            napped_from = Some(now);
            continue;
        }
        // Quiet: sleep until a packet arrives or the next one is due.
        let wait = sched
            .next_due()
            .map_or(IDLE, |at| at.saturating_duration_since(now).min(IDLE));
        if !wait.is_zero()
            && let Err(e) = q.wait(wait)
        {
            note(format!("waiting on the queue failed: {e}"));
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_after_a_nap_are_dated_at_its_middle_at_most_half_a_tick_back() {
        let t0 = Instant::now();
        let tick = Duration::from_micros(250);
        let at = |nap_us: u64| {
            let woke = t0 + Duration::from_micros(nap_us);
            woke.duration_since(arrival_stamp(t0, woke, tick))
        };
        assert_eq!(at(250), Duration::from_micros(125));
        assert_eq!(at(100), Duration::from_micros(50));
        // A nap stretched to 8 ms by the scheduler: only half a tick back, not 4 ms.
        assert_eq!(at(8_000), Duration::from_micros(125));
        assert_eq!(at(0), Duration::ZERO);
    }

    #[test]
    fn player_addr_reads_both_families_and_refuses_garbage() {
        let mut v4 = [0u8; 28];
        v4[0] = 0x45;
        v4[12..16].copy_from_slice(&[10, 0, 0, 1]);
        v4[16..20].copy_from_slice(&[10, 0, 0, 11]);
        assert_eq!(
            player_addr(&v4, Way::Egress),
            Some("10.0.0.11".parse().unwrap())
        );
        assert_eq!(
            player_addr(&v4, Way::Ingress),
            Some("10.0.0.1".parse().unwrap())
        );
        let mut v6 = [0u8; 48];
        v6[0] = 0x60;
        v6[39] = 0x11;
        assert_eq!(player_addr(&v6, Way::Egress), Some("::11".parse().unwrap()));
        assert_eq!(player_addr(&v4[..10], Way::Egress), None);
        assert_eq!(player_addr(&[], Way::Egress), None);
        assert_eq!(player_addr(&[0x75; 60], Way::Egress), None);
    }
}
