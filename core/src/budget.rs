//! A node's bandwidth budget for managed communication (docs/design.md,
//! "Managed communication"): a token bucket on the sending side.
//!
//! Tokens are bytes, refilled at the budget's rate up to a burst of
//! [`BURST_SECONDS`] of it. Clock pushes are never held back (the SSP
//! guarantee needs every clock to leave): they [`charge`](Bandwidth::charge)
//! the bucket, into debt if they must. Early pushes of a clock's largest
//! updates ([`Bandwidth::take`]) go only while tokens are left, so the
//! rate of everything a node's workers send stays near the budget once
//! the clock pushes alone fit in it.

use parking_lot::Mutex;
use std::time::Instant;

/// Burst of the bucket, in seconds of its rate.
pub const BURST_SECONDS: f64 = 0.05;

/// A token bucket of bytes, shared by a job's workers on one node.
#[derive(Debug)]
pub struct Bandwidth {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bandwidth {
    /// A budget of `bytes_per_second` (positive and finite), full.
    pub fn new(bytes_per_second: f64) -> Bandwidth {
        assert!(
            bytes_per_second.is_finite() && bytes_per_second > 0.0,
            "a bandwidth budget must be positive"
        );
        let burst = (bytes_per_second * BURST_SECONDS).max(4096.0);
        Bandwidth {
            rate: bytes_per_second,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// The budget in bytes per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn refill(&self, s: &mut (f64, Instant)) {
        let now = Instant::now();
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.burst);
        s.1 = now;
    }

    /// Bytes that may be sent now without going into debt.
    pub fn available(&self) -> f64 {
        let mut s = self.state.lock();
        self.refill(&mut s);
        s.0.max(0.0)
    }

    /// Takes up to `want` bytes if that many are available; returns the
    /// bytes granted (0 or `want`).
    pub fn take(&self, want: usize) -> usize {
        let mut s = self.state.lock();
        self.refill(&mut s);
        if s.0 >= want as f64 {
            s.0 -= want as f64;
            want
        } else {
            0
        }
    }

    /// Records `bytes` sent that could not wait (a clock's push), going
    /// into debt if need be.
    pub fn charge(&self, bytes: usize) {
        let mut s = self.state.lock();
        self.refill(&mut s);
        s.0 -= bytes as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_bucket_refills_at_its_rate_and_debt_holds_early_sends_back() {
        let b = Bandwidth::new(1_000_000.0);
        // Full: the burst is 50 ms of the rate.
        assert_eq!(b.take(50_000), 50_000);
        assert_eq!(b.take(10_000), 0, "empty bucket grants nothing");
        std::thread::sleep(Duration::from_millis(20));
        let a = b.available();
        assert!((15_000.0..=50_000.0).contains(&a), "refilled {a}");
        // A clock push goes into debt (ten seconds of it: no pause of
        // this thread can repay it); early sends wait until it is paid.
        b.charge(10_000_000);
        assert_eq!(b.available(), 0.0);
        assert_eq!(b.take(1), 0);
    }
}
