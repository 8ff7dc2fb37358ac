//! Messages of the node-to-node `Data` RPC (postcard inside the versioned
//! [`petuum_proto::v1::Envelope`]).

use crate::jobs::JobState;
use crate::meta::{MetaAnswer, MetaCommand, MetaState};
use petuum_core::batch::UpdateBatch;
use petuum_core::row::AnyRow;
use petuum_core::service::{FetchRequest, RowSnapshot};
use petuum_core::types::{Clock, JobId, RowId, ShardId, TableId};
use petuum_core::TableError;
use petuum_storage::{ShardRequest, ShardResponse};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// `Envelope.kind` of Raft messages.
pub const KIND_APPEND: u32 = 1;
pub const KIND_VOTE: u32 = 2;
pub const KIND_SNAPSHOT: u32 = 3;
/// `Envelope.kind` of several groups' Raft messages to one peer in one
/// call ([`RaftBatch`]); answered with a [`RaftBatchReply`].
pub const KIND_BATCH: u32 = 4;
/// The most messages one [`KIND_BATCH`] call carries.
pub const MAX_BATCH_MESSAGES: usize = 256;

/// Raft messages of several groups for one peer: `(group, kind, payload)`,
/// each as it would travel alone (`kind` one of the single kinds).
pub type RaftBatch = Vec<(u64, u32, Vec<u8>)>;

/// The answers to a [`RaftBatch`], in its order: each message's reply
/// payload, or the status it was refused with (code, message).
pub type RaftBatchReply = Vec<Result<Vec<u8>, (i32, String)>>;
/// `Envelope.kind` of a [`DataRequest`].
pub const KIND_DATA: u32 = 10;
/// `Envelope.kind` of a [`DataRequest::DatasetChunk`] whose reply payload
/// is the chunk's bytes alone (not an encoded [`DataReply`]), so a chunk
/// crosses the wire without being copied into and out of an encoding; a
/// failure comes back as the call's status.
pub const KIND_CHUNK: u32 = 11;
/// The longest a long poll (`Fetch`, `Watch`) waits on a node, whatever
/// the request asks: a client cannot park a handler longer.
pub const MAX_WAIT_MS: u64 = 30_000;

/// The most row value bytes one `Fetch` reply carries (beyond its first
/// row): a reply stays far below the message limit however many rows a
/// request names.
pub const FETCH_REPLY_BYTES: usize = 4 << 20;

/// A request of the `Data` RPC.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum DataRequest {
    /// Update batches of run `epoch` for shards this node leads; each is
    /// acknowledged once committed by a quorum of its group.
    Push {
        epoch: u64,
        batches: Vec<UpdateBatch>,
    },
    /// Reads of run `epoch` served by this node's replica once it can
    /// serve them exactly (the run registered there, so its restore or
    /// loads are applied) and they meet their clock conditions, waiting at
    /// most `wait_ms` (capped at [`MAX_WAIT_MS`]). The reply holds the
    /// rows of a prefix of `reqs`: those ready, up to [`FETCH_REPLY_BYTES`]
    /// of values (at least one row); the caller asks again for the rest.
    Fetch {
        shard: ShardId,
        reqs: Vec<FetchRequest>,
        epoch: u64,
        wait_ms: u64,
    },
    /// Reads of everything committed so far (init and export, which wait
    /// for no clock): served by the shard's leader after a linearizable
    /// read barrier, so no acknowledged write is missing. Answered with a
    /// prefix as `Fetch` is.
    FetchLatest {
        shard: ShardId,
        reqs: Vec<FetchRequest>,
        epoch: u64,
    },
    /// Commands for one shard group (table and job setup), in order.
    Commands {
        shard: ShardId,
        commands: Vec<ShardRequest>,
    },
    /// Row ids of a table on this node's replica of a shard.
    RowIds { shard: ShardId, table: TableId },
    /// A row and the applied position of this node's replica, without
    /// waiting (consistency checks, tests).
    ReadLocal {
        shard: ShardId,
        table: TableId,
        row: RowId,
        job: Option<JobId>,
    },
    /// A metadata command, forwarded to the metadata leader.
    Meta(MetaCommand),
    /// Asks the leader of `group` to hand leadership to `to`.
    Yield { group: u64, to: u64 },
    /// Asks this node to campaign for leadership of `group` now (the
    /// leader handing off on shutdown has stopped its heartbeats).
    Elect { group: u64 },
    /// ESSP push as a long poll: answers with fresh copies of `rows` as
    /// soon as the job's min clock on this replica passes `after` (or
    /// `NotYet` after `wait_ms`).
    Watch {
        shard: ShardId,
        job: JobId,
        epoch: u64,
        after: Clock,
        rows: Vec<(TableId, RowId)>,
        wait_ms: u64,
    },
    /// The metadata as this node's replica has applied it (metadata voters
    /// only).
    MetaRead,
    /// A checkpoint part in this node's checkpoint store: worker `worker`'s
    /// state of `job` at `clock` (a replica of the shard group that
    /// committed it has it).
    Blob {
        job: JobId,
        clock: Clock,
        worker: u32,
    },
    /// Liveness probe (the job scheduler's failure detector).
    Ping,
    /// A shard's part of the checkpoint of `job` at `clock` as this node
    /// stores it (to ship to replicas in a `RestoreImage`).
    ShardImage {
        shard: ShardId,
        job: JobId,
        clock: Clock,
    },
    /// One job's record as this node's metadata replica has applied it
    /// (metadata voters only): a node without a replica reads one record,
    /// not the whole metadata.
    MetaJob { job: JobId },
    /// The metadata without the records of ended jobs (metadata voters
    /// only): what a node without a replica polls.
    MetaActive,
    /// Chunk `index` of a dataset this node holds, as it is on disk
    /// (`DataReply::Bytes`): the receiver checks it.
    DatasetChunk {
        record: crate::datasets::DatasetRecord,
        index: u64,
    },
    /// The chunk list of a dataset this node holds (`DataReply::Bytes`).
    DatasetManifest {
        record: crate::datasets::DatasetRecord,
    },
    /// Asks this node to fetch a dataset from its holders and hold it.
    DatasetPull {
        record: crate::datasets::DatasetRecord,
    },
    /// Chunk `index` of this node's copy arrived damaged at the sender:
    /// this node checks it and repairs its copy if so (`DataReply::Ok`).
    DatasetDamaged {
        record: crate::datasets::DatasetRecord,
        index: u64,
    },
    /// A node asks to join the cluster (the only request a node that is no
    /// member yet may send; its envelope names cluster 0). `id` 0 asks for
    /// a new id (without TLS); with TLS it must be the id the joining
    /// node's certificate names. Answered with `DataReply::Joined`.
    Join { nonce: u64, addr: String, id: u64 },
    /// The placement driver asks this node to host an empty replica of
    /// `group`, to be added to it as a learner (idempotent).
    OpenGroup { group: u64 },
    /// To the leader of `group`: add `node` (at `addr`) as a learner and
    /// answer once it has caught up (idempotent).
    AddLearner { group: u64, node: u64, addr: String },
    /// To the leader of `group`: make `voters` the group's voters (joint
    /// consensus), dropping the learners. A leader that is not among them
    /// hands its leadership to one that is and answers `NotLeader`.
    SetVoters { group: u64, voters: Vec<u64> },
    /// This node no longer holds `group`: stop it and delete its state.
    DropGroup { group: u64 },
    /// Copies the checkpoint parts of `shard` (and the worker states it
    /// committed) of `jobs` from node `from` into this node's store, for a
    /// replica that caught up by snapshot.
    CopyCheckpoints {
        shard: ShardId,
        from: u64,
        jobs: Vec<JobId>,
    },
    /// The checkpoints of `jobs` this node stores (`DataReply::Checkpoints`).
    CheckpointIndex { jobs: Vec<JobId> },
    /// Previews of run `epoch` (managed communication) for this node's
    /// replicas of their shards, held in memory and added to reads from
    /// other nodes until the clocks they belong to are applied
    /// (`crate::previews`). Answered `Ok`; best effort.
    Preview {
        epoch: u64,
        previews: Vec<(ShardId, petuum_core::service::Preview)>,
    },
    /// A metadata command forwarded by a node that will answer its own
    /// client once its replica applied it: answered `MetaAt` with the
    /// index of the log entry that carried it.
    MetaAt(MetaCommand),
    /// Pings `node` on the caller's behalf (an indirect probe, as in
    /// SWIM): answered `Ok` if it answered within [`PING_PEER_TIMEOUT`],
    /// else `Unavailable`. The metadata leader asks other members before it
    /// presumes a node it cannot reach dead, so that one broken link (a
    /// partial partition) does not move that node's jobs. A node of an
    /// earlier version cannot decode it and answers with an error: the
    /// leader then counts its own probes only, as before.
    PingPeer { node: u64 },
    /// Sends `req` (a `Push` or `Commands`, which the shards apply once
    /// however often they arrive) on to node `to` and answers with its
    /// answer: a node that cannot reach a shard's leader (a link cut
    /// between just those two) goes through another member that can.
    Relay { to: u64, req: Box<DataRequest> },
    /// To the metadata leader: the index of the log entry a linearizable
    /// read must see (Raft's read index: the leader confirms its leadership
    /// with a majority of the voters first). Answered `Index`, or
    /// `NotLeader` naming the leader this node follows.
    MetaReadIndex,
    /// A metadata read (`MetaJob`, `MetaActive` or `MetaRead`) answered
    /// linearizably by a metadata voter: once its replica applied the
    /// leader's read index, so the answer holds every command committed
    /// before the call (what a node without a replica asks for a client).
    MetaLinear(Box<DataRequest>),
}

/// How long a relaying node waits for the answer of the node it relays to.
pub const RELAY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a node waits for the answer to an indirect probe's ping.
pub const PING_PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(300);

/// What a joining node learns from the member that admitted it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinInfo {
    pub id: u64,
    pub cluster: u64,
    pub shards: u32,
    pub replicas: u32,
    pub placement: crate::placement::Placement,
    pub nodes: Vec<(u64, String)>,
}

/// One stored checkpoint: its clock, the shards and the workers it holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredCheckpoint {
    pub clock: Clock,
    pub shards: Vec<ShardId>,
    pub workers: Vec<u32>,
}

/// Why a `Data` request failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum DataError {
    #[error("group {group}: not the leader (leader: {leader:?})")]
    NotLeader { group: u64, leader: Option<u64> },
    #[error("group {group} has no replica on this node")]
    NotHere { group: u64 },
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("{0}")]
    Refused(Refusal),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("the replica has not reached the requested clock yet")]
    NotYet,
}

/// Why a node, a shard or the metadata group refused a request: retrying
/// it as it is cannot succeed. Carried by [`DataError::Refused`]; callers
/// match on the variant, never on the message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The metadata group has no such job.
    #[error("job {0} not found")]
    NoSuchJob(u64),
    /// A report (or fence) made under an epoch that is not the job's
    /// current one: the job was reassigned and the run is stale.
    #[error("job {job}: report of epoch {epoch}, but the job is at epoch {current} (reassigned)")]
    StaleEpoch { job: u64, epoch: u64, current: u64 },
    /// An assignment whose compare-and-set on the epoch failed.
    #[error("job {job}: assignment for epoch {epoch}, but the job is at epoch {current}")]
    StaleAssignment { job: u64, epoch: u64, current: u64 },
    /// The job is over (succeeded, failed or cancelled).
    #[error("job {job} is already {}", .state.name())]
    Ended { job: u64, state: JobState },
    /// The job is being cancelled: it is not placed again.
    #[error("job {0} is being cancelled")]
    Cancelling(u64),
    /// Only a paused or failed job can be resumed.
    #[error("job {job} is {}: only a paused or failed job can be resumed", .state.name())]
    NotResumable { job: u64, state: JobState },
    /// A malformed or conflicting request (a job without workers, a
    /// placement of the wrong size, a table defined differently, an
    /// unknown node, a cluster formed otherwise, an undecodable command).
    #[error("{0}")]
    Invalid(String),
    /// What the node is doing now rules the request out (it is stopping,
    /// or already handing leadership off).
    #[error("{0}")]
    Busy(String),
    /// A shard's state machine refused a command or batch (its reason).
    #[error("{0}")]
    Shard(String),
    /// The reply could not be understood (an unexpected reply, bytes that
    /// do not decode).
    #[error("{0}")]
    BadReply(String),
    /// The peer answered the call itself with an error status (a bad
    /// token, a malformed or oversized envelope): set by the caller's side
    /// from [`crate::network::CallError::Remote`].
    #[error("{0}")]
    Rejected(String),
}

/// A successful `Data` reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum DataReply {
    Pushed(Vec<Result<(), DataError>>),
    /// Rows of a prefix of a `Fetch` or `FetchLatest`, in request order.
    Snapshots(Vec<RowSnapshot>),
    Done(Vec<ShardResponse>),
    RowIds(Vec<RowId>),
    Local {
        row: Option<AnyRow>,
        last_applied: u64,
        worker_clocks: Vec<Clock>,
    },
    Meta(MetaAnswer),
    Ok,
    /// Pushed rows and the min clock they were read at.
    Rows {
        min_clock: Clock,
        rows: Vec<((TableId, RowId), RowSnapshot)>,
    },
    MetaState(Box<MetaState>),
    Blob(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
    Job(Option<Box<crate::jobs::JobRecord>>),
    /// A dataset chunk or chunk list (encoded as one byte string, not a
    /// sequence of numbers).
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    Joined(Box<JoinInfo>),
    Checkpoints(Vec<(JobId, Vec<StoredCheckpoint>)>),
    /// A metadata command's answer and the index of its log entry.
    MetaAt(MetaAnswer, u64),
    /// A metadata read index (`MetaReadIndex`).
    Index(u64),
}

/// Encodes a value for an envelope payload.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("postcard encoding of in-memory values does not fail")
}

/// Decodes an envelope payload, naming what was expected on failure.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, String> {
    postcard::from_bytes(bytes)
        .map_err(|e| format!("cannot decode {what} ({} bytes): {e}", bytes.len()))
}
