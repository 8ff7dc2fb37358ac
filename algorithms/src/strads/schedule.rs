//! Schedulers: which variables a round updates.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// Chooses the block of variables of one round. Implementations must be
/// pure functions of their inputs and the random stream, so that a resumed
/// run schedules exactly what an uninterrupted one would.
pub trait Scheduler: Send + Sync {
    /// The block for a round, given one priority per variable (or an
    /// empty slice: all equal). A negative priority excludes a variable
    /// (e.g. one a screening rule has fixed at zero).
    fn schedule(&self, priorities: &[f64], rng: &mut ChaCha8Rng) -> Vec<u32>;
}

/// Whether two variables may not be updated in the same round (their
/// parallel updates would interfere, e.g. correlated Lasso columns).
pub trait Interference: Send + Sync {
    fn interferes(&self, a: u32, b: u32) -> bool;
}

/// Every pair of variables may be updated together.
pub struct NoInterference;
impl Interference for NoInterference {
    fn interferes(&self, _: u32, _: u32) -> bool {
        false
    }
}

/// SchMP's dynamic schedule (Lee et al. 2014): sample `candidates`
/// variables without replacement with probability ∝ `priority + floor ·
/// mean(priority)` (uniform while every priority is 0), then keep them in sampled order,
/// dropping any that interferes with one already kept, until `block_size`
/// are kept.
pub struct PriorityScheduler {
    pub num_vars: usize,
    pub block_size: usize,
    pub candidates: usize,
    /// The floor relative to the mean priority, so that every variable
    /// keeps a chance of being revisited.
    pub floor: f64,
    pub interference: Arc<dyn Interference>,
}

impl Scheduler for PriorityScheduler {
    fn schedule(&self, priorities: &[f64], rng: &mut ChaCha8Rng) -> Vec<u32> {
        let n = self.num_vars;
        let live = priorities.iter().filter(|p| **p >= 0.0);
        let (sum, count) = live.fold((0.0, 0usize), |(s, c), p| (s + p, c + 1));
        let mean = if count > 0 { sum / count as f64 } else { 0.0 };
        let floor = if mean > 0.0 { self.floor * mean } else { 1.0 };
        // Successive sampling without replacement: draws ∝ weight from the
        // prefix sums, a variable drawn twice redrawn (which conditions on
        // the ones already drawn), at most 20 draws per candidate.
        let mut prefix = Vec::with_capacity(n);
        let mut total = 0.0;
        let mut eligible = 0usize;
        for j in 0..n {
            let p = priorities.get(j).copied().unwrap_or(0.0);
            if p >= 0.0 {
                total += p + floor;
                eligible += 1;
            }
            prefix.push(total);
        }
        let m = self.candidates.clamp(1, n.max(1)).min(eligible);
        let mut drawn = vec![false; n];
        let mut candidates: Vec<u32> = Vec::with_capacity(m);
        let mut tries = 0;
        while candidates.len() < m && tries < 20 * m {
            tries += 1;
            let u = rng.gen::<f64>() * total;
            let j = prefix.partition_point(|&c| c <= u).min(n - 1);
            if drawn[j] || priorities.get(j).is_some_and(|p| *p < 0.0) {
                continue;
            }
            drawn[j] = true;
            candidates.push(j as u32);
        }
        if candidates.len() < m {
            // A few variables hold nearly all the weight and are drawn: the
            // rest have equal (floor) weight, so fill up uniformly.
            for j in rand::seq::index::sample(rng, n, n) {
                if candidates.len() >= m {
                    break;
                }
                if !drawn[j] && priorities.get(j).is_none_or(|p| *p >= 0.0) {
                    drawn[j] = true;
                    candidates.push(j as u32);
                }
            }
        }
        let mut block: Vec<u32> = Vec::with_capacity(self.block_size);
        for j in candidates {
            if block.len() >= self.block_size {
                break;
            }
            if block.iter().all(|&k| !self.interference.interferes(j, k)) {
                block.push(j);
            }
        }
        block
    }
}

/// Shotgun (Bradley et al., ICML 2011): `block_size` variables uniformly
/// at random, without replacement, whatever their interference.
pub struct UniformScheduler {
    pub num_vars: usize,
    pub block_size: usize,
}

impl Scheduler for UniformScheduler {
    fn schedule(&self, priorities: &[f64], rng: &mut ChaCha8Rng) -> Vec<u32> {
        let live: Vec<u32> = (0..self.num_vars as u32)
            .filter(|&j| priorities.get(j as usize).is_none_or(|p| *p >= 0.0))
            .collect();
        let m = self.block_size.min(live.len());
        rand::seq::index::sample(rng, live.len(), m)
            .into_iter()
            .map(|k| live[k])
            .collect()
    }
}

/// A static rotation of `B` disjoint blocks over workers: at clock `c`
/// worker `w` owns block `(c + w) mod B`. With `B` = number of workers,
/// every block is updated by exactly one worker per clock and every worker
/// visits every block once per `B` clocks.
#[derive(Clone, Debug)]
pub struct Rotation {
    pub blocks: Vec<Vec<u32>>,
}

impl Rotation {
    /// `n` variables split into `b` contiguous blocks of near-equal size.
    pub fn contiguous(n: usize, b: usize) -> Self {
        let b = b.max(1);
        Rotation {
            blocks: (0..b)
                .map(|i| ((n * i / b) as u32..(n * (i + 1) / b) as u32).collect())
                .collect(),
        }
    }

    /// The block worker `worker` updates at clock `clock`.
    pub fn block(&self, clock: u64, worker: u32) -> &[u32] {
        let b = self.blocks.len() as u64;
        &self.blocks[((clock + worker as u64) % b) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    struct Adjacent;
    impl Interference for Adjacent {
        fn interferes(&self, a: u32, b: u32) -> bool {
            a.abs_diff(b) == 1
        }
    }

    #[test]
    fn priority_sampling_prefers_high_priorities_and_respects_interference() {
        let s = PriorityScheduler {
            num_vars: 100,
            block_size: 5,
            candidates: 20,
            floor: 0.01,
            interference: Arc::new(Adjacent),
        };
        let mut p = vec![0.0; 100];
        p[40..50].fill(100.0);
        let mut hits = 0;
        for seed in 0..50 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let b = s.schedule(&p, &mut rng);
            assert_eq!(b.len(), 5, "{b:?}");
            for (i, &x) in b.iter().enumerate() {
                for &y in &b[i + 1..] {
                    assert!(x.abs_diff(y) != 1, "adjacent {x} {y} in {b:?}");
                }
            }
            hits += b.iter().filter(|&&j| (40..50).contains(&j)).count();
            // Same seed, same block.
            let again = s.schedule(&p, &mut ChaCha8Rng::seed_from_u64(seed));
            assert_eq!(b, again);
        }
        // 10 of 100 variables hold ~99% of the weight: nearly every pick is
        // among them (at most 5 non-adjacent ones fit in 40..50).
        assert!(hits >= 200, "{hits} of 250 picks were high-priority");
    }

    #[test]
    fn rotation_gives_disjoint_blocks_and_visits_all() {
        let r = Rotation::contiguous(10, 3);
        for c in 0..3 {
            let mut all: Vec<u32> = (0..3).flat_map(|w| r.block(c, w).to_vec()).collect();
            all.sort();
            assert_eq!(all, (0..10).collect::<Vec<_>>());
        }
        let mut seen: Vec<u32> = (0..3).flat_map(|c| r.block(c, 1).to_vec()).collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }
}
