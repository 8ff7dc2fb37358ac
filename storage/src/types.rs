//! The Raft type configuration of a shard group and its commands.

use petuum_core::batch::UpdateBatch;
use petuum_core::row::AnyRow;
use petuum_core::types::{Clock, JobId, RowId, TableId, TableSpec, WorkerId};
use serde::{Deserialize, Serialize};
use std::io::Cursor;

openraft::declare_raft_types!(
    /// Raft types of a petuum shard group: node ids are `u64`, nodes are
    /// `BasicNode` (an address), snapshots travel as bytes.
    pub TypeConfig:
        D = ShardRequest,
        R = ShardResponse,
);

/// A Raft log entry of a shard group.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id of a shard group.
pub type LogId = openraft::LogId<u64>;
/// The membership as the state machine stores it.
pub type StoredMembership = openraft::StoredMembership<u64, openraft::BasicNode>;
/// Snapshot metadata of a shard group.
pub type SnapshotMeta = openraft::SnapshotMeta<u64, openraft::BasicNode>;

/// A command replicated through a shard's Raft log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ShardRequest {
    /// Defines a table (idempotent for an identical definition).
    CreateTable(TableSpec),
    /// Registers a job's workers (idempotent). `checkpoint_every > 0` makes
    /// the shard write a consistent checkpoint at every clock `c` with
    /// `(c + 1) % checkpoint_every == 0`.
    RegisterJob {
        job: JobId,
        workers: u32,
        deterministic: bool,
        checkpoint_every: Clock,
    },
    /// Sets the initial value of a row (a job's init phase).
    Load {
        table: TableId,
        row: RowId,
        value: AnyRow,
    },
    /// One worker's increments for one clock: the replicated unit.
    Batch(UpdateBatch),
    /// Asks for a consistent checkpoint of `job` at `clock` (written when
    /// the job's min clock passes `clock`, or at once if it is there now).
    Checkpoint { job: JobId, clock: Clock },
    /// A worker's local state for the checkpoint of `job` at `clock`.
    WorkerBlob {
        job: JobId,
        clock: Clock,
        worker: WorkerId,
        data: Vec<u8>,
    },
    /// Rolls `job` back to its checkpoint at `clock`, read from this node's
    /// checkpoint store (design.md §3, resume).
    Restore { job: JobId, clock: Clock },
    /// Rolls `job` back to the checkpoint part `image` (as stored by a
    /// replica that has it: header and image), which each replica checks,
    /// keeps in its checkpoint store and restores. Unlike `Restore` it
    /// works on replicas that never wrote that checkpoint (one that caught
    /// up by installing a snapshot). A damaged part is refused by all.
    RestoreImage {
        job: JobId,
        clock: Clock,
        image: Vec<u8>,
    },
    /// Drops a finished job's tables, rows and clocks.
    DropJob { job: JobId },
    /// A command of the cluster's metadata group, encoded by its owner
    /// (petuum-cluster). Shard groups refuse it; sharing one entry type
    /// lets every group on a node share the log store and the network.
    Meta(Vec<u8>),
}

/// What applying one entry did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardResponse {
    /// The command was refused (bad batch, clock gap, unknown job, ...);
    /// the state is unchanged. Replicas refuse the same commands.
    pub error: Option<String>,
    /// A batch that had been applied before (a replay).
    pub duplicate: bool,
    /// The job's min clock after the entry (for batches).
    pub min_clock: Option<Clock>,
    /// Consistent checkpoints this entry completed on this shard.
    pub checkpoints: Vec<(JobId, Clock)>,
    /// The answer of a metadata command, encoded by its owner.
    pub payload: Option<Vec<u8>>,
}

impl ShardResponse {
    pub(crate) fn refused(reason: impl std::fmt::Display) -> Self {
        ShardResponse {
            error: Some(reason.to_string()),
            ..Default::default()
        }
    }
}

/// Snapshot data as openraft moves it.
pub type SnapshotData = Cursor<Vec<u8>>;
