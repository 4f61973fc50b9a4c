//! The pure core of the userspace shaper: when each held packet is released. No I/O and no
//! clock of its own (the caller passes `now`), so order, delay, jitter and loss are unit-tested
//! exactly.
//!
//! One lane per player and direction, first in first out. A packet's release time is
//! `arrival + delay (+ jitter)`, but never before the previous packet of its lane: a player's
//! packets are never reordered, not by jitter and not when the delay drops between matches.
//! (netem, by contrast, re-sorts its queue by send time, so jitter larger than the gap between
//! packets reorders them.)

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What one direction of one player gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Profile {
    /// Added one-way delay.
    pub delay_us: u64,
    /// Uniform jitter: the delay is drawn from `delay ± jitter` (clamped at 0).
    pub jitter_us: u64,
    /// Loss probability in parts per million.
    pub loss_ppm: u32,
}

/// What became of an admitted packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit<T> {
    /// Held; it comes out of [`Scheduler::release_due`] at its time.
    Held,
    /// Lost on purpose (the profile's loss): drop it now.
    Lost(T),
}

struct Lane<T> {
    q: VecDeque<(Instant, T)>,
    /// Release time of the last packet admitted (the floor for the next one).
    last: Option<Instant>,
}

/// A small, fast generator for jitter and loss (splitmix64); the study's randomness needs no
/// cryptographic strength, only independence from the traffic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Held packets of every lane, in release order per lane.
pub struct Scheduler<T> {
    lanes: Vec<Lane<T>>,
    rng: Rng,
    held: usize,
}

impl<T> Scheduler<T> {
    pub fn new(lanes: usize, rng: Rng) -> Scheduler<T> {
        Scheduler {
            lanes: (0..lanes)
                .map(|_| Lane {
                    q: VecDeque::new(),
                    last: None,
                })
                .collect(),
            rng,
            held: 0,
        }
    }

    /// Packets held right now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Admit a packet that arrived at `now` on `lane` under `p`.
    pub fn admit(&mut self, lane: usize, p: Profile, now: Instant, pkt: T) -> Admit<T> {
        if p.loss_ppm > 0 && self.rng.below(1_000_000) < u64::from(p.loss_ppm) {
            return Admit::Lost(pkt);
        }
        let delay = if p.jitter_us > 0 {
            let span = 2 * p.jitter_us + 1;
            (p.delay_us + self.rng.below(span)).saturating_sub(p.jitter_us)
        } else {
            p.delay_us
        };
        let l = &mut self.lanes[lane];
        let mut at = now + Duration::from_micros(delay);
        if let Some(last) = l.last
            && last > at
        {
            at = last;
        }
        l.last = Some(at);
        l.q.push_back((at, pkt));
        self.held += 1;
        Admit::Held
    }

    /// Move every packet due at `now` to `out`, lane by lane in order.
    pub fn release_due(&mut self, now: Instant, out: &mut Vec<T>) {
        for l in &mut self.lanes {
            while l.q.front().is_some_and(|(at, _)| *at <= now) {
                if let Some((_, p)) = l.q.pop_front() {
                    out.push(p);
                    self.held -= 1;
                }
            }
        }
    }

    /// The earliest release time of any held packet.
    pub fn next_due(&self) -> Option<Instant> {
        self.lanes
            .iter()
            .filter_map(|l| l.q.front().map(|(at, _)| *at))
            .min()
    }

    /// Every held packet, at once (teardown: let them go rather than lose them).
    pub fn drain_all(&mut self, out: &mut Vec<T>) {
        for l in &mut self.lanes {
            out.extend(l.q.drain(..).map(|(_, p)| p));
        }
        self.held = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn holds_for_the_delay_and_releases_in_order() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(2, Rng::new(1));
        let p100 = Profile {
            delay_us: 100_000,
            ..Profile::default()
        };
        let p0 = Profile::default();
        assert_eq!(s.admit(0, p100, t0, "a"), Admit::Held);
        assert_eq!(s.admit(1, p0, t0 + ms(1), "x"), Admit::Held);
        assert_eq!(s.admit(0, p100, t0 + ms(10), "b"), Admit::Held);
        let mut out = Vec::new();
        s.release_due(t0 + ms(1), &mut out);
        assert_eq!(out, ["x"], "zero delay goes at once");
        out.clear();
        s.release_due(t0 + ms(99), &mut out);
        assert!(out.is_empty());
        assert_eq!(s.next_due(), Some(t0 + ms(100)));
        s.release_due(t0 + ms(100), &mut out);
        assert_eq!(out, ["a"]);
        s.release_due(t0 + ms(110), &mut out);
        assert_eq!(out, ["a", "b"]);
        assert_eq!(s.held(), 0);
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn a_lower_delay_never_overtakes_packets_held_under_a_higher_one() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(1, Rng::new(1));
        let hi = Profile {
            delay_us: 300_000,
            ..Profile::default()
        };
        s.admit(0, hi, t0, 1);
        // The match changes: 0 ms from now on. The next packet must still wait for packet 1.
        s.admit(0, Profile::default(), t0 + ms(5), 2);
        let mut out = Vec::new();
        s.release_due(t0 + ms(200), &mut out);
        assert!(out.is_empty());
        s.release_due(t0 + ms(300), &mut out);
        assert_eq!(out, [1, 2]);
    }

    #[test]
    fn jitter_spreads_delays_but_never_reorders() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(1, Rng::new(42));
        let p = Profile {
            delay_us: 50_000,
            jitter_us: 20_000,
            loss_ppm: 0,
        };
        // 1000 packets 1 ms apart: jitter (±20 ms) far larger than the gap.
        for i in 0..1000u64 {
            s.admit(0, p, t0 + ms(i), i);
        }
        let mut out = Vec::new();
        let mut delays = Vec::new();
        for step in 0..1200u64 {
            let before = out.len();
            s.release_due(t0 + ms(step), &mut out);
            for &i in &out[before..] {
                delays.push(step - i);
            }
        }
        assert_eq!(out, (0..1000).collect::<Vec<_>>(), "order kept");
        assert!(delays.iter().all(|&d| (30..=70).contains(&d)), "{delays:?}");
        assert!(
            delays.iter().any(|&d| d < 45),
            "jitter really spreads the delay"
        );
    }

    #[test]
    fn loss_drops_about_the_asked_share() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(1, Rng::new(7));
        let p = Profile {
            delay_us: 0,
            jitter_us: 0,
            loss_ppm: 100_000,
        };
        let lost = (0..10_000)
            .filter(|&i| matches!(s.admit(0, p, t0, i), Admit::Lost(_)))
            .count();
        assert!((850..=1150).contains(&lost), "10 % of 10000: {lost}");
        assert_eq!(s.held(), 10_000 - lost);
        let mut out = Vec::new();
        s.drain_all(&mut out);
        assert_eq!(out.len(), 10_000 - lost);
        assert_eq!(s.held(), 0);
    }
}
