//! The study's randomisation, resolved once from `design.*` and a seed.
//!
//! Two permutations are drawn: which row of the latency square each player follows
//! (`assign: random`), and which latency value each of the square's symbols stands for
//! (`shuffle_levels`). Both are permutations, so every property of the square (each match has
//! every level, carryover balance) holds for the mapped design too.
//!
//! Reproducibility on any machine and with any crate version: the generator is ChaCha20
//! (`rand_chacha`, whose output stream is fixed by the cipher and tested against RFC 8439
//! vectors), keyed with the seed's 8 little-endian bytes followed by zeros; each permutation
//! reads its own stream (rows: stream 0, levels: stream 1), so switching one on or off never
//! changes the other. The shuffle and the bounded draw are written out here (Fisher-Yates from
//! the top, rejection sampling) rather than taken from `rand`, whose sampling algorithms may
//! change between versions. A golden test pins the result for a fixed seed.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::scenario::{Assign, Design, MAX_SEED};

/// Where the seed came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SeedSource {
    /// Given as `design.seed` in the scenario (or with `--set`).
    Scenario,
    /// Drawn from the operating system because the scenario gave none.
    Drawn,
}

/// The randomisation of one run, derived once (when the scenario is loaded) and carried by
/// the plan and the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedDesign {
    pub seed: u64,
    pub seed_source: SeedSource,
    pub assign: Assign,
    pub shuffle_levels: bool,
    /// `rows[i]`: the 0-based row of the square that player i+1 (seat order, else join order)
    /// follows.
    pub rows: Vec<u32>,
    /// `symbols[j]`: index into `latency.levels` of the value that symbol j of the square
    /// stands for.
    pub symbols: Vec<u32>,
}

impl ResolvedDesign {
    /// Resolve `design` for `players` players and `levels` latency levels. `seed` is the
    /// scenario's, else `draw` is called once.
    pub fn resolve(
        design: &Design,
        players: u32,
        levels: u32,
        draw: impl FnOnce() -> u64,
    ) -> ResolvedDesign {
        let (seed, seed_source) = match design.seed {
            Some(s) => (s, SeedSource::Scenario),
            None => (draw() & MAX_SEED, SeedSource::Drawn),
        };
        let identity = |n: u32| (0..n).collect::<Vec<u32>>();
        let rows = match design.assign {
            Assign::InOrder => identity(players),
            Assign::Random => permutation(seed, 0, players),
        };
        let symbols = if design.shuffle_levels {
            permutation(seed, 1, levels)
        } else {
            identity(levels)
        };
        ResolvedDesign {
            seed,
            seed_source,
            assign: design.assign,
            shuffle_levels: design.shuffle_levels,
            rows,
            symbols,
        }
    }

    /// The identity design (player i on row i, levels as listed), seed 0.
    pub fn in_order(players: u32, levels: u32) -> ResolvedDesign {
        let d = Design {
            seed: Some(0),
            assign: Assign::InOrder,
            shuffle_levels: false,
        };
        ResolvedDesign::resolve(&d, players, levels, || 0)
    }
}

/// A fresh seed from the operating system.
pub fn draw_seed() -> u64 {
    // getrandom fails only where the OS has no randomness source at all; then the clock is
    // the best there is, and the seed is recorded either way.
    getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }) & MAX_SEED
}

fn rng(seed: u64, stream: u64) -> ChaCha20Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut r = ChaCha20Rng::from_seed(key);
    r.set_stream(stream);
    r
}

/// Uniform in `0..bound` (bound > 0) without modulo bias: reject draws from the incomplete
/// top block.
fn below(r: &mut ChaCha20Rng, bound: u64) -> u64 {
    // 2^64 mod bound, computed without 128-bit arithmetic.
    let rem = (u64::MAX % bound + 1) % bound;
    loop {
        let x = r.next_u64();
        if rem == 0 || x < u64::MAX - rem + 1 {
            return x % bound;
        }
    }
}

/// A permutation of `0..n` drawn from `seed` on `stream` (Fisher-Yates, from the top).
pub fn permutation(seed: u64, stream: u64, n: u32) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n).collect();
    let mut r = rng(seed, stream);
    for i in (1..v.len()).rev() {
        let j = below(&mut r, i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn design(seed: Option<u64>, assign: Assign, shuffle: bool) -> Design {
        Design {
            seed,
            assign,
            shuffle_levels: shuffle,
        }
    }

    /// Pins the generator, the key layout, the streams and the shuffle: if any dependency or
    /// refactoring changed them, old seeds would no longer reproduce old plans.
    #[test]
    fn golden_permutations_for_fixed_seeds() {
        assert_eq!(permutation(42, 0, 8), GOLDEN_42_0);
        assert_eq!(permutation(42, 1, 4), GOLDEN_42_1);
        assert_eq!(permutation(MAX_SEED, 0, 6), GOLDEN_MAX_0);
        // The raw stream too, so a change is caught even where a shuffle happens to agree.
        let mut r = rng(42, 0);
        assert_eq!(r.next_u64(), GOLDEN_42_FIRST_U64);
    }

    const GOLDEN_42_0: [u32; 8] = [4, 5, 1, 3, 2, 6, 0, 7];
    const GOLDEN_42_1: [u32; 4] = [0, 3, 2, 1];
    const GOLDEN_MAX_0: [u32; 6] = [2, 4, 1, 0, 3, 5];
    /// Checked independently: the first 8 bytes (little-endian) of the RFC 7539 ChaCha20
    /// keystream for key = 42u64 LE + 24 zero bytes, counter 0, nonce 0, as Python's
    /// `cryptography` computes it.
    const GOLDEN_42_FIRST_U64: u64 = 7_702_011_131_394_881_055;

    #[test]
    fn same_seed_same_design_and_streams_are_independent() {
        let a = ResolvedDesign::resolve(&design(Some(7), Assign::Random, true), 6, 4, || 1);
        let b = ResolvedDesign::resolve(&design(Some(7), Assign::Random, true), 6, 4, || 2);
        assert_eq!(a, b);
        assert_eq!(a.seed_source, SeedSource::Scenario);
        // Turning the level shuffle off leaves the row assignment alone.
        let c = ResolvedDesign::resolve(&design(Some(7), Assign::Random, false), 6, 4, || 0);
        assert_eq!(c.rows, a.rows);
        assert_eq!(c.symbols, vec![0, 1, 2, 3]);
        let d = ResolvedDesign::resolve(&design(Some(8), Assign::Random, true), 6, 4, || 0);
        assert_ne!((d.rows, d.symbols), (a.rows, a.symbols), "seed 8 vs 7");
    }

    #[test]
    fn absent_seed_is_drawn_once_and_bounded() {
        let mut calls = 0;
        let d = ResolvedDesign::resolve(&design(None, Assign::InOrder, false), 3, 2, || {
            calls += 1;
            u64::MAX
        });
        assert_eq!(calls, 1);
        assert_eq!(d.seed, MAX_SEED);
        assert_eq!(d.seed_source, SeedSource::Drawn);
        assert_eq!(d.rows, vec![0, 1, 2]);
        assert!(draw_seed() <= MAX_SEED);
    }

    #[test]
    fn permutations_are_permutations_and_roughly_uniform() {
        // 4! = 24 orders over 24,000 seeds: each should come up about 1,000 times.
        let mut counts = std::collections::HashMap::new();
        for seed in 0..24_000u64 {
            let p = permutation(seed, 0, 4);
            let mut s = p.clone();
            s.sort();
            assert_eq!(s, vec![0, 1, 2, 3]);
            *counts.entry(p).or_insert(0u32) += 1;
        }
        assert_eq!(counts.len(), 24);
        assert!(
            counts.values().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(permutation(5, 0, 0), Vec::<u32>::new());
        assert_eq!(permutation(5, 0, 1), vec![0]);
    }

    #[test]
    fn bounded_draw_covers_its_range() {
        let mut r = rng(1, 0);
        let mut seen = [false; 3];
        for _ in 0..100 {
            seen[below(&mut r, 3) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(below(&mut r, 1), 0);
    }
}
