//! How long each node has failed to answer, as the metadata leader's
//! failure detectors (the job scheduler's and the placement driver's)
//! count it: by probe rounds, not by wall-clock time.
//!
//! Each round probes every node and adds the round's duration, capped at
//! the round's expected length, to the silence of each node that did not
//! answer; an answer resets it. Counting the cap rather than the clock
//! keeps the observer's own stalls out of the verdict: when the leader's
//! runtime or host does not run the detector for seconds (a CPU-starved
//! host, a long synchronous write), the rounds it missed probed nobody, and
//! declaring the other nodes dead for the observer's silence would move
//! their jobs or, worse, rebuild their replicas elsewhere. With it, a node
//! is declared dead only after about `limit / cap` rounds in a row in which
//! it was asked and did not answer.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Per-node silence, counted in probe rounds (module docs).
#[derive(Debug)]
pub struct Silence {
    /// The most one round adds: the detector's tick plus its probe timeout.
    cap: Duration,
    silent: HashMap<u64, Duration>,
    last_round: Option<Instant>,
}

impl Silence {
    /// A detector whose rounds are expected to take at most `cap` each.
    pub fn new(cap: Duration) -> Self {
        Silence {
            cap,
            silent: HashMap::new(),
            last_round: None,
        }
    }

    /// Forgets every silence (a new leader counts every node as having
    /// just answered: only silence under its watch counts).
    pub fn reset(&mut self) {
        self.silent.clear();
        self.last_round = None;
    }

    /// A round that ended at `now` probed `nodes`; those in `answered`
    /// answered. Nodes no longer in `nodes` are forgotten; a node probed
    /// for the first time starts silent for nothing.
    pub fn round(&mut self, now: Instant, nodes: &[u64], answered: &BTreeSet<u64>) {
        let step = self
            .last_round
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
            .min(self.cap);
        self.last_round = Some(now);
        self.silent.retain(|n, _| nodes.contains(n));
        for &n in nodes {
            let s = self.silent.entry(n).or_insert(Duration::ZERO);
            if answered.contains(&n) {
                *s = Duration::ZERO;
            } else {
                *s += step;
            }
        }
    }

    /// How long `node` has not answered (zero if it answered the last
    /// round or was never probed).
    pub fn of(&self, node: u64) -> Duration {
        self.silent.get(&node).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn missed_rounds_add_up_and_an_answer_resets() {
        let mut s = Silence::new(600 * MS);
        let t0 = Instant::now();
        let nodes = [1, 2];
        s.round(t0, &nodes, &[1].into());
        assert_eq!(s.of(2), Duration::ZERO, "first round: nothing to count yet");
        s.round(t0 + 500 * MS, &nodes, &[1].into());
        s.round(t0 + 1000 * MS, &nodes, &[1].into());
        assert_eq!(s.of(1), Duration::ZERO);
        assert_eq!(s.of(2), 1000 * MS);
        s.round(t0 + 1500 * MS, &nodes, &[1, 2].into());
        assert_eq!(s.of(2), Duration::ZERO);
    }

    #[test]
    fn the_observers_own_stall_counts_one_round_at_most() {
        let mut s = Silence::new(600 * MS);
        let t0 = Instant::now();
        let nodes = [1, 2, 3];
        s.round(t0, &nodes, &[1, 2, 3].into());
        // The observer did not run for 5 s; its next round heard nobody
        // (its probes timed out while it was starved).
        s.round(t0 + 5000 * MS, &nodes, &[1].into());
        assert_eq!(s.of(2), 600 * MS);
        assert_eq!(s.of(3), 600 * MS);
        // A node that really stays silent is counted round by round.
        for i in 1..=3 {
            s.round(t0 + (5000 + 600 * i) * MS, &nodes, &[1, 2].into());
        }
        assert_eq!(s.of(2), Duration::ZERO);
        assert_eq!(s.of(3), 2400 * MS);
    }

    #[test]
    fn members_come_and_go() {
        let mut s = Silence::new(Duration::from_secs(2));
        let t0 = Instant::now();
        s.round(t0, &[1, 2], &[1].into());
        s.round(t0 + Duration::from_secs(1), &[1, 2], &[1].into());
        assert_eq!(s.of(2), Duration::from_secs(1));
        // 2 left, 3 joined: 3 counts from its first round.
        s.round(t0 + Duration::from_secs(2), &[1, 3], &[1].into());
        assert_eq!(s.of(2), Duration::ZERO);
        assert_eq!(s.of(3), Duration::from_secs(1));
        s.reset();
        assert_eq!(s.of(3), Duration::ZERO);
    }
}
