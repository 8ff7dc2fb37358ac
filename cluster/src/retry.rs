//! One retry policy for the cluster's calls: exponential backoff with
//! jitter (from [`backon`]), a capped delay and an optional deadline.
//!
//! The loops that retry stay explicit, so each keeps its own rules: it
//! checks its abort flag before every attempt (a superseded run stops
//! within one RPC), follows a `NotLeader` hint at once without waiting
//! ([`Attempts::progressed`]), and only waits ([`Attempts::wait`]) when an
//! attempt got nowhere:
//!
//! ```ignore
//! let mut attempts = Retry::LEADER.within(deadline).start();
//! loop {
//!     check_aborted()?;
//!     if attempts.expired() { return Err(timeout) }
//!     match attempt() {
//!         Ok(x) => return Ok(x),
//!         Err(hint) if followable(hint) => attempts.progressed(),
//!         Err(_) => attempts.wait().await,
//!     }
//! }
//! ```

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::{Duration, Instant};

/// How an operation retries: waits start at `first` and double up to
/// `cap`, each plus a random jitter of up to itself (so callers that
/// failed together do not retry together); with a `deadline`, the
/// operation gives up once that much time has passed since its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    pub first: Duration,
    pub cap: Duration,
    pub deadline: Option<Duration>,
}

impl Retry {
    /// Finding a shard group's leader or another replica (an election, a
    /// fail-over): a few milliseconds at first, at most 100 ms (+ jitter).
    pub const LEADER: Retry = Retry {
        first: Duration::from_millis(5),
        cap: Duration::from_millis(100),
        deadline: None,
    };

    /// Waiting for the metadata group to take a command (it has no leader
    /// during an election): 50 ms at first, at most 250 ms (+ jitter).
    pub const META: Retry = Retry {
        first: Duration::from_millis(50),
        cap: Duration::from_millis(250),
        deadline: None,
    };

    /// The same policy, giving up `deadline` after the start.
    pub const fn within(self, deadline: Duration) -> Retry {
        Retry {
            deadline: Some(deadline),
            ..self
        }
    }

    /// The attempts of one operation, starting now.
    pub fn start(self) -> Attempts {
        Attempts {
            policy: self,
            started: Instant::now(),
            delays: self.delays(),
        }
    }

    fn delays(&self) -> ExponentialBackoff {
        ExponentialBuilder::new()
            .with_jitter()
            .with_factor(2.0)
            .with_min_delay(self.first)
            .with_max_delay(self.cap)
            .without_max_times()
            .build()
    }
}

/// The state of one operation's retries (see [`Retry`]).
#[derive(Debug)]
pub struct Attempts {
    policy: Retry,
    started: Instant,
    delays: ExponentialBackoff,
}

impl Attempts {
    /// Time since the operation started (or was [restarted](Self::restart)).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether the deadline has passed (never without one).
    pub fn expired(&self) -> bool {
        self.policy.deadline.is_some_and(|d| self.elapsed() > d)
    }

    /// The next wait: jittered, capped, and not past the deadline.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.delays.next().unwrap_or(self.policy.cap);
        match self.policy.deadline {
            Some(deadline) => d.min(deadline.saturating_sub(self.elapsed())),
            None => d,
        }
    }

    /// Waits before the next attempt (an attempt that got nowhere).
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// [`wait`](Self::wait) for a thread outside the runtime.
    pub fn wait_blocking(&mut self) {
        std::thread::sleep(self.next_delay());
    }

    /// An attempt made progress (a leader hint to follow, part of the work
    /// done): the next wait is the first one again.
    pub fn progressed(&mut self) {
        self.delays = self.policy.delays();
    }

    /// Starts the deadline and the waits over (the peer is alive and
    /// making the caller wait on purpose).
    pub fn restart(&mut self) {
        self.started = Instant::now();
        self.progressed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_with_jitter_up_to_the_cap_and_the_deadline() {
        let p = Retry {
            first: Duration::from_millis(10),
            cap: Duration::from_millis(40),
            deadline: None,
        };
        let mut a = p.start();
        let waits: Vec<Duration> = (0..6).map(|_| a.next_delay()).collect();
        // Each wait is its base (10, 20, 40, 40, ...) plus up to as much again.
        for (w, base) in waits.iter().zip([10u64, 20, 40, 40, 40, 40]) {
            let base = Duration::from_millis(base);
            assert!(*w >= base && *w <= base * 2, "{waits:?}");
        }
        a.progressed();
        assert!(a.next_delay() <= Duration::from_millis(20));
        assert!(!a.expired());
        let mut b = p.within(Duration::ZERO).start();
        std::thread::sleep(Duration::from_millis(2));
        assert!(b.expired());
        assert_eq!(b.next_delay(), Duration::ZERO);
    }
}
