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
