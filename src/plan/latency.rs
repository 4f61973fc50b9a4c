//! Which latency level each player has in each match.
//!
//! `balanced` is a Williams design: row i of the square gives player i's levels over n matches,
//! `L[(w[k] + i) mod n]` with `w = 0, 1, n-1, 2, n-2, …`. Every match has every level once per
//! group of n players, and every level immediately precedes every other level equally often
//! (once for even n). For odd n a single square cannot do that, so odd repeats use the mirrored
//! square (each row reversed): over a square and its mirror each ordered pair occurs twice.
//! `cyclic` is `L[(i + k) mod n]`.

use super::design::ResolvedDesign;
use crate::scenario::{Order, Scenario};

/// First row of the Williams square: 0, 1, n-1, 2, n-2, …
pub fn williams_row(n: usize) -> Vec<usize> {
    let mut w = Vec::with_capacity(n);
    let (mut lo, mut hi) = (1, n.saturating_sub(1));
    if n > 0 {
        w.push(0);
    }
    for j in 1..n {
        if j % 2 == 1 {
            w.push(lo);
            lo += 1;
        } else {
            w.push(hi);
            hi -= 1;
        }
    }
    w
}

/// Index of the level that player `i` has in match `k` (both 0-based).
pub fn level_index(order: Order, n: usize, i: usize, k: usize) -> usize {
    match order {
        Order::Cyclic => (i + k) % n,
        Order::Balanced => {
            let square = k / n;
            let mut pos = k % n;
            if n % 2 == 1 && square % 2 == 1 {
                pos = n - 1 - pos;
            }
            (williams_row(n)[pos] + i) % n
        }
    }
}

/// Matches in the design: one per level, per repeat (the practice match is not one of them).
pub fn match_count(s: &Scenario) -> u32 {
    s.latency.levels.len() as u32 * s.matches.repeats
}

/// 0-based repeat of 0-based match `m`.
pub fn repeat_of(s: &Scenario, m: u32) -> u32 {
    m / s.latency.levels.len().max(1) as u32
}

/// The level (delay, jitter, loss) of 0-based player `i` in 0-based design match `m`: the
/// player's row is `d.rows[i]`, and the square's symbol stands for the level
/// `d.symbols[symbol]`.
pub fn level<'a>(
    s: &'a Scenario,
    d: &ResolvedDesign,
    i: u32,
    m: u32,
) -> &'a crate::scenario::Level {
    let n = s.latency.levels.len();
    let row = d.rows.get(i as usize).copied().unwrap_or(i) as usize;
    let symbol = level_index(s.latency.order, n, row, m as usize);
    let level = d.symbols.get(symbol).copied().unwrap_or(symbol as u32) as usize;
    &s.latency.levels[level]
}

/// Added latency (ms) of 0-based player `i` in 0-based design match `m`.
pub fn latency_ms(s: &Scenario, d: &ResolvedDesign, i: u32, m: u32) -> u64 {
    level(s, d, i, m).delay_ms()
}

/// One match as the plan lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// 1-based; the practice match is 0.
    pub number: u32,
    /// 1-based; 0 for the practice match.
    pub repeat: u32,
    pub practice: bool,
}

/// Every match in order: the practice match (number 0) when the scenario has one, then the
/// design's matches 1…n.
pub fn slots(s: &Scenario) -> impl Iterator<Item = Slot> + '_ {
    let practice = s.matches.practice.as_ref().map(|_| Slot {
        number: 0,
        repeat: 0,
        practice: true,
    });
    practice
        .into_iter()
        .chain((0..match_count(s)).map(|m| Slot {
            number: m + 1,
            repeat: repeat_of(s, m) + 1,
            practice: false,
        }))
}

/// The level of 0-based player `i` in `slot`: no added delay, jitter or loss in the practice
/// match.
pub fn slot_level(s: &Scenario, d: &ResolvedDesign, slot: Slot, i: u32) -> crate::scenario::Level {
    if slot.practice {
        crate::scenario::Level::delay(crate::scenario::Duration::from_millis(0))
    } else {
        *level(s, d, i, slot.number - 1)
    }
}

/// Added latency (ms) of 0-based player `i` in `slot`: none in the practice match.
pub fn slot_latency_ms(s: &Scenario, d: &ResolvedDesign, slot: Slot, i: u32) -> u64 {
    slot_level(s, d, slot, i).delay_ms()
}

/// The scenario's level with added delay `ms` (levels have distinct delays); a plain delay when
/// none has it.
pub fn level_for_ms(levels: &[crate::scenario::Level], ms: u64) -> crate::scenario::Level {
    levels
        .iter()
        .find(|l| l.delay_ms() == ms)
        .copied()
        .unwrap_or_else(|| {
            crate::scenario::Level::delay(crate::scenario::Duration::from_millis(ms))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn rows(order: Order, n: usize, matches: usize) -> Vec<Vec<usize>> {
        (0..n)
            .map(|i| (0..matches).map(|k| level_index(order, n, i, k)).collect())
            .collect()
    }

    /// Each match has every level once, and each player meets each level once per square.
    fn assert_latin(r: &[Vec<usize>], n: usize) {
        for k in 0..r[0].len() {
            let mut col: Vec<usize> = r.iter().map(|row| row[k]).collect();
            col.sort();
            assert_eq!(col, (0..n).collect::<Vec<_>>(), "match {k} lacks a level");
        }
        for row in r {
            for sq in row.chunks(n) {
                let mut s = sq.to_vec();
                s.sort();
                assert_eq!(
                    s,
                    (0..n).collect::<Vec<_>>(),
                    "row {row:?} misses a level in a square"
                );
            }
        }
    }

    /// Ordered (previous, next) pairs within each square.
    fn carryover(r: &[Vec<usize>], n: usize) -> HashMap<(usize, usize), usize> {
        let mut pairs = HashMap::new();
        for row in r {
            for sq in row.chunks(n) {
                for w in sq.windows(2) {
                    *pairs.entry((w[0], w[1])).or_insert(0) += 1;
                }
            }
        }
        pairs
    }

    #[test]
    fn williams_first_row() {
        assert_eq!(williams_row(4), vec![0, 1, 3, 2]);
        assert_eq!(williams_row(5), vec![0, 1, 4, 2, 3]);
        assert_eq!(williams_row(1), vec![0]);
    }

    #[test]
    fn balanced_even_n_each_ordered_pair_once() {
        for n in [2, 4, 6, 8, 10] {
            let r = rows(Order::Balanced, n, n);
            assert_latin(&r, n);
            let pairs = carryover(&r, n);
            assert_eq!(
                pairs.len(),
                n * (n - 1),
                "n={n}: some ordered pair never occurs"
            );
            assert!(pairs.values().all(|&c| c == 1), "n={n}: {pairs:?}");
        }
    }

    #[test]
    fn balanced_odd_n_square_and_mirror_each_pair_twice() {
        for n in [3, 5, 7, 9] {
            let r = rows(Order::Balanced, n, 2 * n);
            assert_latin(&r, n);
            let pairs = carryover(&r, n);
            assert_eq!(pairs.len(), n * (n - 1), "n={n}");
            assert!(pairs.values().all(|&c| c == 2), "n={n}: {pairs:?}");
        }
    }

    #[test]
    fn cyclic_is_latin_but_not_carryover_balanced() {
        let n = 4;
        let r = rows(Order::Cyclic, n, n);
        assert_latin(&r, n);
        // Level j is always followed by j+1: only n of the n(n-1) ordered pairs occur.
        assert_eq!(carryover(&r, n).len(), n);
        assert_eq!(r[1], vec![1, 2, 3, 0]);
    }

    /// The design's random row assignment and level mapping are permutations, so the mapped
    /// square keeps both properties, for many seeds.
    #[test]
    fn balance_holds_after_random_assignment_and_level_shuffle() {
        use crate::plan::design::ResolvedDesign;
        use crate::scenario::{Assign, Design};
        for n in [2usize, 3, 4, 5, 6] {
            for seed in 0..50 {
                let d = ResolvedDesign::resolve(
                    &Design {
                        seed: Some(seed),
                        assign: Assign::Random,
                        shuffle_levels: true,
                    },
                    n as u32,
                    n as u32,
                    || 0,
                );
                let squares = if n % 2 == 1 { 2 } else { 1 };
                let r: Vec<Vec<usize>> = (0..n)
                    .map(|i| {
                        (0..squares * n)
                            .map(|k| {
                                let sym = level_index(Order::Balanced, n, d.rows[i] as usize, k);
                                d.symbols[sym] as usize
                            })
                            .collect()
                    })
                    .collect();
                assert_latin(&r, n);
                let pairs = carryover(&r, n);
                assert_eq!(pairs.len(), n * (n - 1), "n={n} seed={seed}");
                assert!(pairs.values().all(|&c| c == squares), "n={n} seed={seed}");
            }
        }
    }

    #[test]
    fn one_level_is_trivial() {
        assert_eq!(level_index(Order::Balanced, 1, 3, 7), 0);
        assert_eq!(level_index(Order::Cyclic, 1, 3, 7), 0);
    }
}
