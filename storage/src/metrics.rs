//! What a node's storage and Raft groups count and time, for the
//! Prometheus endpoint (docs/operations.md). Recorded where it happens
//! (appends, applies, snapshots, WAL syncs); the daemon adds the gauges it
//! reads at scrape time and encodes everything.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicI64;

/// The label of every per-group series: the Raft group's id (0 is the
/// metadata group, shard `s` is group `s + 1`). Bounded by the cluster's
/// shard count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    pub group: u64,
}

impl GroupLabel {
    pub fn of(group: u64) -> GroupLabel {
        GroupLabel { group }
    }
}

type HistogramFamily = Family<GroupLabel, Histogram, fn() -> Histogram>;

/// Latency buckets: 100 µs to about 3.3 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-4, 2.0, 16))
}

/// Counters and histograms of one node's storage and Raft groups.
pub struct StoreMetrics {
    /// fsyncs of the write-ahead log (one per group-commit round).
    pub wal_syncs: Counter,
    pub wal_sync_seconds: Histogram,
    /// From a Raft log append to its durability (the WAL sync after it).
    pub append_seconds: HistogramFamily,
    /// Applying a batch of committed entries to a group's state machine.
    pub apply_seconds: HistogramFamily,
    /// From a write's proposal on its group's leader to its answer
    /// (committed by a quorum and applied there).
    pub commit_seconds: HistogramFamily,
    /// The commit index each group last persisted.
    pub commit_index: Family<GroupLabel, Gauge<i64, AtomicI64>>,
    pub snapshots_built: Family<GroupLabel, Counter>,
    pub snapshots_installed: Family<GroupLabel, Counter>,
    /// Snapshots this node sent to a lagging or new replica.
    pub snapshots_sent: Family<GroupLabel, Counter>,
    /// Elections this node won.
    pub elections_won: Family<GroupLabel, Counter>,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            wal_syncs: Counter::default(),
            wal_sync_seconds: latency_histogram(),
            append_seconds: Family::new_with_constructor(latency_histogram),
            apply_seconds: Family::new_with_constructor(latency_histogram),
            commit_seconds: Family::new_with_constructor(latency_histogram),
            commit_index: Family::default(),
            snapshots_built: Family::default(),
            snapshots_installed: Family::default(),
            snapshots_sent: Family::default(),
            elections_won: Family::default(),
        }
    }
}

impl StoreMetrics {
    /// Adds every series to `registry` (prefix `petuum_`).
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "petuum_wal_syncs",
            "fsyncs of the node's RocksDB write-ahead log (group commit rounds)",
            self.wal_syncs.clone(),
        );
        r.register_with_unit(
            "petuum_wal_sync",
            "duration of one write-ahead log fsync",
            Unit::Seconds,
            self.wal_sync_seconds.clone(),
        );
        r.register_with_unit(
            "petuum_raft_append",
            "from a Raft log append to its durability, per group",
            Unit::Seconds,
            self.append_seconds.clone(),
        );
        r.register_with_unit(
            "petuum_raft_apply",
            "applying a batch of committed entries, per group",
            Unit::Seconds,
            self.apply_seconds.clone(),
        );
        r.register_with_unit(
            "petuum_raft_commit",
            "from a write's proposal on its group's leader to its answer (committed by a quorum and applied), per group",
            Unit::Seconds,
            self.commit_seconds.clone(),
        );
        r.register(
            "petuum_raft_commit_index",
            "the commit index each group last persisted on this node",
            self.commit_index.clone(),
        );
        r.register(
            "petuum_raft_snapshots_built",
            "snapshots this node built, per group",
            self.snapshots_built.clone(),
        );
        r.register(
            "petuum_raft_snapshots_installed",
            "snapshots this node installed from a leader, per group",
            self.snapshots_installed.clone(),
        );
        r.register(
            "petuum_raft_snapshots_sent",
            "snapshots this node sent to another replica, per group",
            self.snapshots_sent.clone(),
        );
        r.register(
            "petuum_raft_elections_won",
            "elections this node won, per group",
            self.elections_won.clone(),
        );
    }

    /// One group's series, looked up once: a group's log store and state
    /// machine keep them, so recording costs no label lookup on the
    /// append and apply paths.
    pub fn group(&self, group: u64) -> GroupMetrics {
        let l = GroupLabel::of(group);
        GroupMetrics {
            append_seconds: self.append_seconds.get_or_create(&l).clone(),
            apply_seconds: self.apply_seconds.get_or_create(&l).clone(),
            commit_index: self.commit_index.get_or_create(&l).clone(),
            snapshots_built: self.snapshots_built.get_or_create(&l).clone(),
            snapshots_installed: self.snapshots_installed.get_or_create(&l).clone(),
            snapshots_sent: self.snapshots_sent.get_or_create(&l).clone(),
            elections_won: self.elections_won.get_or_create(&l).clone(),
        }
    }
}

/// Handles to one group's series in [`StoreMetrics`] (clones share the
/// counts).
#[derive(Clone, Debug)]
pub struct GroupMetrics {
    pub append_seconds: Histogram,
    pub apply_seconds: Histogram,
    pub commit_index: Gauge<i64, AtomicI64>,
    pub snapshots_built: Counter,
    pub snapshots_installed: Counter,
    pub snapshots_sent: Counter,
    pub elections_won: Counter,
}

impl GroupMetrics {
    /// Times `f` into `apply_seconds`.
    pub fn time_apply<R>(&self, f: impl FnOnce() -> R) -> R {
        let started = std::time::Instant::now();
        let r = f();
        self.apply_seconds.observe(started.elapsed().as_secs_f64());
        r
    }
}
