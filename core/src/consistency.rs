//! Consistency models (docs/design.md §1).
//!
//! A worker "at clock `c`" has finished clocks `0..c`. Under SSP(s) a read by
//! that worker must see every increment of every worker tagged with a clock
//! `< c - s`, plus all of its own increments. A shard whose applied *min
//! clock* (smallest number of finished clocks over the job's workers) is `m`
//! holds every increment tagged `< m`, so the read can be served by state
//! whose min clock is at least `c - s`. BSP is SSP(0). ESSP is SSP where the
//! servers push fresh rows to process caches when the min clock advances.
//! Async never waits.

use crate::types::Clock;
use serde::{Deserialize, Serialize};

/// How stale a worker's reads may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "lowercase")]
pub enum Consistency {
    /// Bulk synchronous: SSP(0).
    Bsp,
    /// Stale synchronous parallel with the given staleness.
    Ssp { staleness: u32 },
    /// Eager SSP: SSP(s) plus server push on min-clock advance.
    Essp { staleness: u32 },
    /// No bound on staleness; reads never wait.
    Async,
}

impl Consistency {
    /// The staleness bound, `None` for async.
    pub fn staleness(self) -> Option<u32> {
        match self {
            Consistency::Bsp => Some(0),
            Consistency::Ssp { staleness } | Consistency::Essp { staleness } => Some(staleness),
            Consistency::Async => None,
        }
    }

    /// The min clock that state must have reached to serve a read by a
    /// worker at clock `c`; `None` when reads never wait.
    pub fn required_min_clock(self, c: Clock) -> Option<Clock> {
        self.staleness().map(|s| c.saturating_sub(s as Clock))
    }

    /// Whether shards push rows to caches when the min clock advances.
    pub fn pushes(self) -> bool {
        matches!(self, Consistency::Essp { .. })
    }

    /// How many flushed clocks of its own a worker keeps to overlay on cached
    /// rows so that its own writes are always visible.
    pub fn own_history_clocks(self) -> usize {
        match self.staleness() {
            Some(s) => s as usize + 1,
            None => 2,
        }
    }

    /// Short name as used in job specs.
    pub fn name(self) -> String {
        match self {
            Consistency::Bsp => "bsp".into(),
            Consistency::Ssp { staleness } => format!("ssp({staleness})"),
            Consistency::Essp { staleness } => format!("essp({staleness})"),
            Consistency::Async => "async".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_min_clock_follows_the_definition() {
        assert_eq!(Consistency::Bsp.required_min_clock(5), Some(5));
        assert_eq!(
            Consistency::Ssp { staleness: 3 }.required_min_clock(5),
            Some(2)
        );
        assert_eq!(
            Consistency::Ssp { staleness: 3 }.required_min_clock(1),
            Some(0)
        );
        assert_eq!(
            Consistency::Essp { staleness: 1 }.required_min_clock(4),
            Some(3)
        );
        assert_eq!(Consistency::Async.required_min_clock(9), None);
    }
}
