//! The Raft type configuration of a shard group and its commands.

use petuum_core::batch::UpdateBatch;
use petuum_core::row::AnyRow;
use petuum_core::types::{Clock, JobId, RowId, TableId, TableSpec, WorkerId};
use serde::{Deserialize, Serialize};
use std::io::Cursor;

openraft::declare_raft_types!(
    /// Raft types of a petuum shard group: node ids are `u64`, nodes are
    /// `BasicNode` (an address), snapshots travel as bytes
    /// ([`SnapshotData`]).
    pub TypeConfig:
        D = ShardRequest,
        R = ShardResponse,
        SnapshotData = SnapshotData,
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
///
/// Every job-scoped command names the job's run (`epoch`, the job record's
/// epoch in the metadata group). Each replica keeps a fence per job, the
/// highest epoch that began on the shard, and checks it inside the state
/// machine, so every replica refuses a stale command identically
/// (docs/design.md, "Runs and fences"). A run begins on a shard with
/// `RestoreImage` or `DropJob` of its epoch; every other command must carry
/// the fence's epoch exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ShardRequest {
    /// Defines a table (idempotent for an identical definition).
    CreateTable(TableSpec),
    /// Registers a job's workers (idempotent within a run). A positive
    /// `checkpoint_every` makes the shard write a consistent checkpoint at
    /// every clock `c` with `(c + 1) % checkpoint_every == 0`. A registered job at `epoch`
    /// means every command of that run sent before it (its loads) is
    /// applied on this replica: reads of the run wait for it.
    RegisterJob {
        job: JobId,
        epoch: u64,
        workers: u32,
        deterministic: bool,
        checkpoint_every: Clock,
    },
    /// Sets the initial values of rows (a job's init phase); the job is the
    /// table's. Many rows ride in one entry: one log append and one fsync
    /// per chunk, not per row.
    Load {
        epoch: u64,
        table: TableId,
        rows: Vec<(RowId, AnyRow)>,
    },
    /// One worker's increments for one clock: the replicated unit.
    Batch { epoch: u64, batch: UpdateBatch },
    /// Asks for a consistent checkpoint of `job` at `clock` (written when
    /// the job's min clock passes `clock`, or at once if it is there now).
    Checkpoint {
        job: JobId,
        epoch: u64,
        clock: Clock,
    },
    /// A worker's local state for the checkpoint of `job` at `clock`.
    WorkerBlob {
        job: JobId,
        epoch: u64,
        clock: Clock,
        worker: WorkerId,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Begins run `epoch` by rolling `job` back to the checkpoint part
    /// `image` (as stored by a replica that has it: header and image),
    /// which each replica checks, keeps in its checkpoint store and
    /// restores. It works on replicas that never wrote that checkpoint
    /// (one that caught up by installing a snapshot). A damaged part is
    /// refused by all, and the state stays as it was.
    RestoreImage {
        job: JobId,
        epoch: u64,
        clock: Clock,
        #[serde(with = "serde_bytes")]
        image: Vec<u8>,
    },
    /// Drops a job's tables, rows and clocks: at the start of a run that
    /// starts from scratch, and when a job ends.
    DropJob { job: JobId, epoch: u64 },
    /// A command of the cluster's metadata group, encoded by its owner
    /// (petuum-cluster). Shard groups refuse it; sharing one entry type
    /// lets every group on a node share the log store and the network.
    Meta(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Forgets an ended job for good: its tables and rows, and the
    /// checkpoints, worker states and model this node stored for it
    /// (`petuum-client delete`, the retention policy). Idempotent.
    ForgetJob { job: JobId },
    /// Several batches of one job for one shard in one entry, applied in
    /// order as if each were its own `Batch` entry: the clocks a worker's
    /// push thread found queued together, and the workers of one node
    /// whose updates leave it together (node-level aggregation). A batch
    /// that is refused stops the entry there; those before it stay applied
    /// (as they would have as separate entries).
    Batches {
        epoch: u64,
        batches: Vec<UpdateBatch>,
    },
}

impl ShardRequest {
    /// About how many bytes the command takes in the log (its values and
    /// blobs; a small constant for the rest), for snapshot scheduling.
    pub fn approx_bytes(&self) -> usize {
        const FIXED: usize = 64;
        FIXED
            + match self {
                ShardRequest::Load { rows, .. } => {
                    rows.iter().map(|(_, v)| v.value_bytes() + 16).sum()
                }
                ShardRequest::Batch { batch, .. } => batch.value_bytes(),
                ShardRequest::Batches { batches, .. } => {
                    batches.iter().map(|b| b.value_bytes() + 16).sum()
                }
                ShardRequest::WorkerBlob { data, .. } => data.len(),
                ShardRequest::RestoreImage { image, .. } => image.len(),
                ShardRequest::Meta(m) => m.len(),
                ShardRequest::CreateTable(_)
                | ShardRequest::RegisterJob { .. }
                | ShardRequest::Checkpoint { .. }
                | ShardRequest::DropJob { .. }
                | ShardRequest::ForgetJob { .. } => 0,
            }
    }
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
    #[serde(with = "serde_bytes")]
    pub payload: Option<Vec<u8>>,
    /// Set with `error` when the command named a superseded run: the job's
    /// current epoch on the shard.
    pub superseded_by: Option<u64>,
}

impl ShardResponse {
    pub(crate) fn refused(reason: impl std::fmt::Display) -> Self {
        ShardResponse {
            error: Some(reason.to_string()),
            ..Default::default()
        }
    }

    /// The refusal of a command of a superseded run.
    pub(crate) fn stale(job: JobId, epoch: u64, current: u64) -> Self {
        ShardResponse {
            superseded_by: Some(current),
            ..Self::refused(petuum_core::TableError::StaleEpoch {
                job,
                epoch,
                current,
            })
        }
    }
}

/// Snapshot data as openraft moves it: bytes in memory. One being
/// received from a leader carries the check of its format, run when the
/// last chunk has arrived (openraft then shuts the writer down): a
/// snapshot that fails it is refused to the leader, which sends it again,
/// instead of reaching the state machine, whose install error would stop
/// the group's Raft core (and the node). A peer's garbage, or a transfer
/// assembled wrong, costs a retry, not the node.
pub struct SnapshotData {
    bytes: Cursor<Vec<u8>>,
    check: Option<SnapshotCheck>,
}

/// The check of a snapshot being received ([`SnapshotData::receiving`]).
type SnapshotCheck = Box<dyn Fn(&[u8]) -> Result<(), String> + Send + Sync>;

impl SnapshotData {
    /// A snapshot this node holds.
    pub fn new(bytes: Vec<u8>) -> SnapshotData {
        SnapshotData {
            bytes: Cursor::new(bytes),
            check: None,
        }
    }

    /// An empty buffer for a snapshot to receive, checked with `check`
    /// once complete.
    pub fn receiving(
        check: impl Fn(&[u8]) -> Result<(), String> + Send + Sync + 'static,
    ) -> SnapshotData {
        SnapshotData {
            bytes: Cursor::new(Vec::new()),
            check: Some(Box::new(check)),
        }
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.bytes.into_inner()
    }

    pub fn get_ref(&self) -> &Vec<u8> {
        self.bytes.get_ref()
    }
}

impl tokio::io::AsyncRead for SnapshotData {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.bytes).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SnapshotData {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.bytes).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.bytes).poll_flush(cx)
    }

    /// The end of a received snapshot: its check.
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let checked = match &self.check {
            Some(check) => check(self.bytes.get_ref()).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("received snapshot refused: {e}"),
                )
            }),
            None => Ok(()),
        };
        std::task::Poll::Ready(checked)
    }
}

impl tokio::io::AsyncSeek for SnapshotData {
    fn start_seek(
        mut self: std::pin::Pin<&mut Self>,
        position: std::io::SeekFrom,
    ) -> std::io::Result<()> {
        std::pin::Pin::new(&mut self.bytes).start_seek(position)
    }

    fn poll_complete(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<u64>> {
        std::pin::Pin::new(&mut self.bytes).poll_complete(cx)
    }
}
