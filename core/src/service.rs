//! The seam between workers and shards. The in-process backend
//! ([`crate::inproc::InProcShards`]) implements it now; the replicated
//! cluster backend implements the same trait over gRPC, so algorithm code
//! does not change between embedded and cluster mode.

use crate::batch::UpdateBatch;
use crate::error::TableError;
use crate::row::AnyRow;
use crate::types::{Clock, JobId, JobShards, RowId, ShardId, TableId, TableSpec, WorkerId};
use std::sync::Arc;

/// A read request from a worker.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FetchRequest {
    pub job: JobId,
    pub table: TableId,
    pub row: RowId,
    pub worker: WorkerId,
    /// Wait until the shard's min clock for the job is at least this
    /// (`None`: answer at once).
    pub min_clock: Option<Clock>,
    /// Wait until this worker's own batches up to this clock are applied.
    pub own_clock: Clock,
}

/// A row as a shard had it, with the clocks that say how fresh it is.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RowSnapshot {
    pub row: Arc<AnyRow>,
    /// The job's min clock on the shard when the row was read.
    pub min_clock: Clock,
    /// Applied clocks of each worker of the job on the shard.
    pub worker_clocks: Arc<[Clock]>,
    /// The shard's version counter (monotonic per shard).
    pub version: u64,
}

/// An early copy of some of a worker's increments of the clock it is in
/// (managed communication, docs/design.md): for each row, the worker's
/// whole increment of `clock` so far. Replicas that hold it add it to
/// reads from other nodes until they apply the worker's `clock`, whose
/// batch carries the same increments (previews are never persisted and
/// never replace a clock's batch). A later `seq` of the same worker and
/// clock replaces a row's earlier copy.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Preview {
    pub job: JobId,
    pub worker: WorkerId,
    pub clock: Clock,
    pub seq: u64,
    pub rows: Vec<crate::batch::RowUpdate>,
}

/// Bytes a preview's row costs on the wire besides its values (the
/// budget's accounting).
pub const PREVIEW_ROW_OVERHEAD: usize = 24;

impl Preview {
    /// Bytes this preview costs on the wire, for the budget.
    pub fn wire_bytes(&self) -> usize {
        self.rows
            .iter()
            .map(|u| u.delta.value_bytes() + PREVIEW_ROW_OVERHEAD)
            .sum()
    }
}

/// Receives rows that shards push when a min clock advances (ESSP).
pub trait PushSink: Send + Sync {
    /// The rows of `shard` this sink wants pushed for `job`.
    fn subscribed(&self, shard: ShardId, job: JobId) -> Vec<(TableId, RowId)>;
    /// Fresh copies of subscribed rows.
    fn push(&self, shard: ShardId, rows: Vec<((TableId, RowId), RowSnapshot)>);
}

/// What a node's workers need from the shards.
pub trait ShardService: Send + Sync {
    /// Number of shards in the cluster's shard space.
    fn num_shards(&self) -> u32;

    /// The shards that hold `job`'s tables and take its clocks (every
    /// shard unless the backend was told otherwise).
    fn job_shards(&self, _job: JobId) -> JobShards {
        JobShards::all(self.num_shards())
    }

    /// Defines a table on every shard.
    fn create_table(&self, spec: &TableSpec) -> Result<(), TableError>;

    /// Registers a job's workers on every shard.
    fn register_job(&self, job: JobId, workers: u32, deterministic: bool)
        -> Result<(), TableError>;

    /// Sets initial row values before workers start (bulk load).
    fn load(&self, table: TableId, rows: Vec<(RowId, AnyRow)>) -> Result<(), TableError>;

    /// Commits one clock's batches of one worker (one per shard). Returns
    /// once they are acknowledged: applied (embedded) or committed by a
    /// quorum (cluster).
    fn push(&self, batches: &[UpdateBatch]) -> Result<(), TableError>;

    /// Whether [`push`](Self::push) waits for something slow enough to
    /// hide behind the staleness bound (a quorum commit): workers then
    /// pipeline their clocks ([`crate::worker::WorkerCtx::clock`]).
    fn pipelines(&self) -> bool {
        false
    }

    /// Whether [`preview`](Self::preview) reaches readers on other nodes
    /// (a networked backend); workers send previews only then.
    fn previews(&self) -> bool {
        false
    }

    /// Sends previews, one per shard, best effort (never waits for them
    /// to arrive, never fails a worker). Returns the bytes put on the
    /// network (a preview goes to each replica off this node).
    fn preview(&self, _previews: Vec<(ShardId, Preview)>) -> usize {
        0
    }

    /// Reads a row, waiting as the request says.
    fn fetch(&self, req: &FetchRequest) -> Result<RowSnapshot, TableError>;

    /// Reads several rows, each waiting as its request says; the answers
    /// are in the order of `reqs`. A networked backend sends one request
    /// per shard instead of one per row.
    fn fetch_many(&self, reqs: &[FetchRequest]) -> Result<Vec<RowSnapshot>, TableError> {
        reqs.iter().map(|r| self.fetch(r)).collect()
    }

    /// Ids of the rows of a table that have been written, sorted.
    fn row_ids(&self, table: TableId) -> Result<Vec<RowId>, TableError>;

    /// Registers a sink for ESSP pushes.
    fn subscribe(&self, sink: std::sync::Weak<dyn PushSink>);

    /// Fails every pending and future wait of a job (a worker died).
    fn abort_job(&self, job: JobId, reason: &str);

    /// Forgets a finished job and its tables.
    fn drop_job(&self, job: JobId);
}
