//! Update batches: the unit of replication (docs/design.md §2).

use crate::row::AnyRow;
use crate::types::{Clock, JobId, RowId, ShardId, TableId, WorkerId};
use serde::{Deserialize, Serialize};

/// The increment of one row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowUpdate {
    pub table: TableId,
    pub row: RowId,
    pub delta: AnyRow,
}

/// All increments of one worker for one clock for one shard, aggregated.
/// Every worker sends one batch (possibly empty) to every shard at every
/// clock: the batch is also how the shard learns the worker's clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateBatch {
    pub job: JobId,
    pub worker: WorkerId,
    pub clock: Clock,
    pub shard: ShardId,
    pub updates: Vec<RowUpdate>,
}

/// Increments summed row by row, in the order they are added: a row seen
/// before gets the new delta added to its sum (`sum + delta`), a new row
/// is appended. The one summation order of a clock's deltas: a node's
/// outbox sums its members' batches with it, and a deterministic shard
/// sums a complete clock's batches with it, so the two agree bit for bit
/// (`crate::outbox`, `ShardState::apply_clock`).
#[derive(Debug, Default)]
pub struct RowSum {
    updates: Vec<RowUpdate>,
    at: rustc_hash::FxHashMap<(TableId, RowId), usize>,
}

impl RowSum {
    /// Adds `updates` (one batch's: at most one per row) to the sum.
    pub fn add(&mut self, updates: Vec<RowUpdate>) {
        for u in updates {
            match self.at.get(&(u.table, u.row)) {
                Some(&i) => {
                    let ok = self.updates[i].delta.add(&u.delta);
                    debug_assert!(ok, "one table's deltas share a type");
                }
                None => {
                    self.at.insert((u.table, u.row), self.updates.len());
                    self.updates.push(u);
                }
            }
        }
    }

    /// The summed increments, rows in the order they first came.
    pub fn into_updates(self) -> Vec<RowUpdate> {
        self.updates
    }
}

impl UpdateBatch {
    /// The tag that identifies this batch for deduplication.
    pub fn tag(&self) -> (JobId, WorkerId, Clock) {
        (self.job, self.worker, self.clock)
    }

    /// Bytes of values carried (for throughput accounting).
    pub fn value_bytes(&self) -> usize {
        self.updates.iter().map(|u| u.delta.value_bytes()).sum()
    }
}
