//! The node-local process cache (docs/design.md §1): rows stamped with how fresh
//! they are, shared by the worker threads of one node. A read uses a cached
//! row when its stamp meets the reader's guarantee and fetches otherwise.
//! Striped by shard so that workers touching different shards do not
//! contend, and so that an ESSP push of one shard touches one stripe.

use crate::service::{PushSink, RowSnapshot};
use crate::types::{Clock, JobId, RowId, ShardId, TableId};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// One cached row.
#[derive(Clone, Debug)]
pub struct CacheEntry {
    pub snap: RowSnapshot,
    pub job: JobId,
    /// Highest reader clock at which this copy was fetched or pushed.
    pub fetched_at: Clock,
    /// Whether shards should push fresh copies of this row (ESSP).
    pub subscribed: bool,
}

/// Counters for tests, progress and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub pushes: u64,
}

type Stripe = HashMap<(TableId, RowId), CacheEntry>;

/// Rows cached on one node, striped by shard.
pub struct ProcessCache {
    stripes: Vec<Mutex<Stripe>>,
    max_rows_per_stripe: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    pushes: AtomicU64,
}

impl ProcessCache {
    /// A cache for `num_shards` shards holding at most `max_rows` rows.
    pub fn new(num_shards: u32, max_rows: usize) -> Self {
        let n = num_shards.max(1) as usize;
        ProcessCache {
            stripes: (0..n).map(|_| Mutex::new(HashMap::new())).collect(),
            max_rows_per_stripe: (max_rows / n).max(16),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            pushes: AtomicU64::new(0),
        }
    }

    /// The cached entry of a row, if any.
    pub fn lookup(&self, shard: ShardId, key: (TableId, RowId)) -> Option<CacheEntry> {
        self.stripes[shard as usize].lock().get(&key).cloned()
    }

    /// Counts a read served from the cache or fetched.
    pub fn count(&self, hit: bool) {
        if hit {
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Stores a fetched row unless a newer copy is already there.
    pub fn insert(&self, shard: ShardId, key: (TableId, RowId), entry: CacheEntry) {
        let mut stripe = self.stripes[shard as usize].lock();
        match stripe.get_mut(&key) {
            Some(old) if old.snap.version > entry.snap.version => {
                old.fetched_at = old.fetched_at.max(entry.fetched_at);
                old.subscribed |= entry.subscribed;
            }
            Some(old) => {
                let subscribed = old.subscribed | entry.subscribed;
                *old = entry;
                old.subscribed = subscribed;
            }
            None => {
                if stripe.len() >= self.max_rows_per_stripe {
                    evict_oldest(&mut stripe);
                }
                stripe.insert(key, entry);
            }
        }
    }

    /// Drops every row of a job's tables.
    pub fn forget_job(&self, job: JobId) {
        for s in &self.stripes {
            s.lock().retain(|_, e| e.job != job);
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            pushes: self.pushes.load(Ordering::Relaxed),
        }
    }

    /// Number of rows cached.
    pub fn len(&self) -> usize {
        self.stripes.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Evicts the eighth of a stripe that was fetched longest ago.
fn evict_oldest(stripe: &mut Stripe) {
    let mut ages: Vec<Clock> = stripe.values().map(|e| e.fetched_at).collect();
    let cut = ages.len() / 8;
    let (_, &mut threshold, _) = ages.select_nth_unstable(cut);
    stripe.retain(|_, e| e.fetched_at > threshold);
}

impl PushSink for ProcessCache {
    fn subscribed(&self, shard: ShardId, job: JobId) -> Vec<(TableId, RowId)> {
        self.stripes[shard as usize]
            .lock()
            .iter()
            .filter(|(_, e)| e.subscribed && e.job == job)
            .map(|(k, _)| *k)
            .collect()
    }

    fn push(&self, shard: ShardId, rows: Vec<((TableId, RowId), RowSnapshot)>) {
        let mut stripe = self.stripes[shard as usize].lock();
        for (key, snap) in rows {
            if let Some(e) = stripe.get_mut(&key) {
                if snap.version >= e.snap.version {
                    e.snap = snap;
                    self.pushes.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
