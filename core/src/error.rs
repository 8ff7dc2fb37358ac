//! Errors of the table layer.

use crate::types::{Clock, ElemType, JobId, RowId, RowKind, ShardId, TableId, WorkerId};

/// An error from a table operation, a shard or the backend behind them.
#[derive(Debug, thiserror::Error, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum TableError {
    #[error("table {0} does not exist")]
    NoSuchTable(TableId),
    #[error("no table named `{0}` in this job")]
    NoSuchTableName(String),
    #[error("table {table} holds {found} values, not {expected}")]
    WrongType {
        table: TableId,
        expected: ElemType,
        found: ElemType,
    },
    #[error("table {table} has {kind:?} rows, which this operation does not take")]
    WrongKind { table: TableId, kind: RowKind },
    #[error("table {table} row {row}: delta of width {got} for rows of {columns} columns")]
    WidthMismatch {
        table: TableId,
        row: RowId,
        got: usize,
        columns: u32,
    },
    #[error("table {table} row {row}: column {col} out of range (table has {columns} columns)")]
    ColumnOutOfRange {
        table: TableId,
        row: RowId,
        col: u32,
        columns: u32,
    },
    #[error("table {0} is already defined differently")]
    TableConflict(TableId),
    #[error("job {0} is not registered on this shard")]
    NoSuchJob(JobId),
    #[error("job {job}: worker {worker} out of range (job has {workers} workers)")]
    NoSuchWorker {
        job: JobId,
        worker: WorkerId,
        workers: u32,
    },
    #[error("shard {shard}: batch of job {job} worker {worker} for clock {clock} arrived before clock {expected}")]
    ClockGap {
        shard: ShardId,
        job: JobId,
        worker: WorkerId,
        clock: Clock,
        expected: Clock,
    },
    #[error("shard {shard} out of range ({shards} shards)")]
    NoSuchShard { shard: ShardId, shards: u32 },
    #[error("job {job} aborted: {reason}")]
    Aborted { job: JobId, reason: String },
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The job has moved on to a newer run (epoch): a command or read of
    /// an older run is refused by every replica alike.
    #[error("job {job}: run {epoch} is superseded by run {current}")]
    StaleEpoch {
        job: JobId,
        epoch: u64,
        current: u64,
    },
}
