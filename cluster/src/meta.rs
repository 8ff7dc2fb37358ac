//! The metadata group: one more Raft group (id 0) replicated on up to five
//! nodes, holding the cluster's nodes, shard placement and table
//! definitions, and allocating ids.

use crate::jobs::JobCommand;
use crate::placement::{Placement, META_GROUP};
use crate::wire::{self, Refusal};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use parking_lot::RwLock;
use petuum_core::types::{TableId, TableSpec};
use petuum_storage::keys::{self, CF_SNAPSHOT};
use petuum_storage::metrics::GroupMetrics;
use petuum_storage::types::{SnapshotData, SnapshotMeta, StoredMembership};
use petuum_storage::{
    Entry, LogId, NodeDb, RaftStorageError, ShardRequest, ShardResponse, StorageError, TypeConfig,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The replicated metadata.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaState {
    pub placement: Option<Placement>,
    /// Node id -> address.
    pub nodes: BTreeMap<u64, String>,
    pub tables: BTreeMap<TableId, TableSpec>,
    /// The next id [`MetaCommand::AllocIds`] hands out (ids start at 1).
    pub next_id: u64,
    /// What each node last announced.
    pub node_states: BTreeMap<u64, NodeState>,
    /// Jobs by id (crate::jobs).
    pub jobs: crate::jobs::JobMap,
    /// The dataset store's records by sha256 (crate::datasets).
    pub datasets: crate::datasets::DatasetMap,
    /// Members on their way out, and why (the placement driver moves
    /// their replicas and the scheduler their workers).
    pub retiring: BTreeMap<u64, Retire>,
    /// Ids of nodes removed from the cluster: never reused, and their
    /// messages are refused.
    pub removed: BTreeSet<u64>,
    /// The id of the last node that joined, for the next one.
    pub last_node: u64,
    /// Each join's nonce and the id it got (a repeated join gets the same).
    pub joins: BTreeMap<u64, u64>,
    /// Submission ids (chosen by clients) and the job each made, while
    /// that job is kept: the same submission sent again gets its job
    /// ([`MetaCommand::SubmitOnce`]). Outside this struct's own encoding
    /// (that of protocol version 12, which snapshots and the `MetaRead`
    /// reply keep): a snapshot carries it after the replica.
    #[serde(skip)]
    pub requests: BTreeMap<String, u64>,
}

/// Why a member is leaving the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Retire {
    /// `petuum-client nodes drain`: holds nothing once drained, stays a
    /// member (`nodes add` puts it back in service).
    Drain,
    /// `petuum-client nodes remove`: drained, then removed.
    Remove,
    /// Down for longer than `down_after`: its replicas are rebuilt
    /// elsewhere, then it is removed.
    Dead,
}

impl Retire {
    pub fn name(self) -> &'static str {
        match self {
            Retire::Drain => "draining",
            Retire::Remove => "removing",
            Retire::Dead => "dead",
        }
    }
}

/// What a node announced to the metadata group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Serving (announced after every start).
    Up,
    /// Stopping: its leaderships are handed off (SIGTERM, preemption).
    Leaving,
}

impl NodeState {
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Leaving => "leaving",
        }
    }
}

/// A metadata command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Records the cluster's placement and nodes (the first command; a
    /// repeat with the same placement is a no-op).
    Init {
        placement: Placement,
        nodes: BTreeMap<u64, String>,
    },
    /// A node's new address (after a move).
    SetNodeAddr { node: u64, addr: String },
    /// Defines a table (idempotent for an identical definition).
    DefineTable(TableSpec),
    /// Allocates `count` consecutive ids (jobs, tables).
    AllocIds { count: u64 },
    /// A node announces it is up or leaving.
    SetNodeState { node: u64, state: NodeState },
    /// A change to the job records.
    Job(JobCommand),
    /// A change to the dataset records.
    Dataset(crate::datasets::DatasetCommand),
    /// A new node joins (`join` in its node.toml): it becomes a member
    /// holding nothing. `id` 0 asks for a new id; a repeat with the same
    /// `nonce` gets the same answer.
    Join { nonce: u64, addr: String, id: u64 },
    /// The placement driver moved a group's replicas (preferred leader
    /// first).
    SetMembers { group: u64, members: Vec<u64> },
    /// Marks a member as leaving (drain, remove, dead), or (`None`) back
    /// in service.
    Retire { node: u64, how: Option<Retire> },
    /// Removes a member that holds no replica any more.
    RemoveNode { node: u64 },
    /// A job submission (`submit`, a [`JobCommand::Submit`]) under the id
    /// its client chose: if a kept job was made under that id, its id is
    /// the answer and nothing changes (a client that lost the answer sent
    /// it again). Last of the variants, so that logs of version 12 decode.
    SubmitOnce { request: String, submit: JobCommand },
    /// A cancel, resume or delete ([`JobCommand`]) under the id its client
    /// chose: sent again under that id (its client lost its node), it
    /// answers as if applied and changes nothing more, so a retried resume
    /// does not resume twice and a retried cancel or delete is not refused
    /// by its own first attempt. The id is kept until the job is deleted;
    /// a delete's own id stays (the one id a deleted job leaves behind).
    /// Last of the variants (version 14).
    JobOnce { request: String, cmd: JobCommand },
}

impl MetaCommand {
    /// A cancel, resume or delete, under its client's id when it has one
    /// ([`MetaCommand::JobOnce`]; `request` empty: a plain
    /// [`MetaCommand::Job`]).
    pub fn job_action(cmd: JobCommand, request: &str) -> MetaCommand {
        if request.is_empty() {
            MetaCommand::Job(cmd)
        } else {
            MetaCommand::JobOnce {
                request: request.to_string(),
                cmd,
            }
        }
    }
}

/// What applying a metadata command gives the node that proposed it (the
/// payload of its `ShardResponse`).
pub type MetaResult = Result<MetaAnswer, Refusal>;

/// The answer to a metadata command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MetaAnswer {
    Ok,
    /// The first of the allocated ids.
    Ids {
        first: u64,
    },
    /// A job command's answer: the job id (submit) or its epoch.
    Job(u64),
    /// The id a joining node got.
    Joined {
        id: u64,
    },
}

impl MetaState {
    /// A copy without the records of ended jobs (what a node without a
    /// metadata replica polls; the records are shared, not copied).
    pub fn active(&self) -> MetaState {
        MetaState {
            placement: self.placement.clone(),
            nodes: self.nodes.clone(),
            tables: self.tables.clone(),
            next_id: self.next_id,
            node_states: self.node_states.clone(),
            jobs: self
                .jobs
                .iter()
                .filter(|(_, r)| !r.state.is_terminal())
                .map(|(&id, r)| (id, r.clone()))
                .collect(),
            datasets: self.datasets.clone(),
            retiring: self.retiring.clone(),
            removed: self.removed.clone(),
            last_node: self.last_node,
            joins: BTreeMap::new(),
            requests: BTreeMap::new(),
        }
    }

    /// Applies a job command; a deleted job's request ids go with it.
    fn job_command(&mut self, cmd: JobCommand) -> MetaResult {
        let gone = match &cmd {
            JobCommand::Delete { job } => Some(*job),
            _ => None,
        };
        let r = crate::jobs::apply(&mut self.jobs, &mut self.next_id, cmd)?;
        if let Some(job) = gone {
            self.requests.retain(|_, j| *j != job);
        }
        Ok(MetaAnswer::Job(r))
    }

    /// A member that may take new replicas and workers: not retiring.
    pub fn in_service(&self, node: u64) -> bool {
        self.nodes.contains_key(&node) && !self.retiring.contains_key(&node)
    }

    fn placement_mut(&mut self) -> Result<&mut Placement, Refusal> {
        self.placement
            .as_mut()
            .ok_or_else(|| Refusal::Busy("the cluster is not formed yet".into()))
    }

    /// Applies a command; refusals leave the state unchanged.
    pub fn apply(&mut self, cmd: MetaCommand) -> Result<MetaAnswer, Refusal> {
        match cmd {
            // The first node to form the cluster sends it at every start:
            // once a placement is recorded (and moved on since) it stands.
            MetaCommand::Init { placement, nodes } => {
                if self.placement.is_none() {
                    self.placement = Some(placement);
                    self.nodes.extend(nodes);
                }
                Ok(MetaAnswer::Ok)
            }
            MetaCommand::SetNodeAddr { node, addr } => {
                if !self.nodes.contains_key(&node) {
                    return Err(Refusal::Invalid(format!("node {node} is not a member")));
                }
                self.nodes.insert(node, addr);
                Ok(MetaAnswer::Ok)
            }
            MetaCommand::DefineTable(spec) => match self.tables.get(&spec.id) {
                Some(t) if *t != spec => Err(Refusal::Invalid(format!(
                    "table {} is already defined differently (`{}` of job {})",
                    spec.id, t.name, t.job
                ))),
                _ => {
                    self.tables.insert(spec.id, spec);
                    Ok(MetaAnswer::Ok)
                }
            },
            MetaCommand::SetNodeState { node, state } => {
                if !self.nodes.contains_key(&node) {
                    return Err(Refusal::Invalid(format!("node {node} is not a member")));
                }
                self.node_states.insert(node, state);
                Ok(MetaAnswer::Ok)
            }
            MetaCommand::Job(cmd) => {
                // A job may name only sealed datasets of the store.
                if let JobCommand::Submit { spec, .. } = &cmd {
                    crate::datasets::check_refs(&self.datasets, spec)?;
                }
                self.job_command(cmd)
            }
            MetaCommand::JobOnce { request, cmd } => {
                let job = match &cmd {
                    JobCommand::Cancel { job, .. }
                    | JobCommand::Resume { job, .. }
                    | JobCommand::Delete { job } => *job,
                    _ => {
                        return Err(Refusal::Invalid(
                            "JobOnce must carry a cancel, resume or delete".into(),
                        ))
                    }
                };
                match self.requests.get(&request) {
                    // Applied before: nothing more.
                    Some(&j) if j == job => return Ok(MetaAnswer::Job(job)),
                    Some(&j) => {
                        return Err(Refusal::Invalid(format!(
                            "request id `{request}` was already used for job {j}"
                        )))
                    }
                    None => {}
                }
                let answer = self.job_command(cmd)?;
                self.requests.insert(request, job);
                Ok(answer)
            }
            MetaCommand::SubmitOnce { request, submit } => {
                // Seen before: its job, whatever became of its datasets.
                if let Some(&job) = self.requests.get(&request) {
                    return Ok(MetaAnswer::Job(job));
                }
                let JobCommand::Submit { spec, .. } = &submit else {
                    return Err(Refusal::Invalid(
                        "SubmitOnce must carry a job submission".into(),
                    ));
                };
                crate::datasets::check_refs(&self.datasets, spec)?;
                let job = crate::jobs::apply(&mut self.jobs, &mut self.next_id, submit)?;
                self.requests.insert(request, job);
                Ok(MetaAnswer::Job(job))
            }
            MetaCommand::Dataset(cmd) => {
                crate::datasets::apply(&mut self.datasets, &self.jobs, cmd).map(|()| MetaAnswer::Ok)
            }
            MetaCommand::Join { nonce, addr, id } => {
                if let Some(&got) = self.joins.get(&nonce) {
                    return Ok(MetaAnswer::Joined { id: got });
                }
                if self.placement.is_none() {
                    return Err(Refusal::Busy("the cluster is not formed yet".into()));
                }
                if let Some((&other, _)) = self.nodes.iter().find(|(_, a)| **a == addr) {
                    if !self.retiring.contains_key(&other) {
                        return Err(Refusal::Invalid(format!(
                            "address {addr} belongs to member node {other}; remove it first \
                             (petuum-client nodes remove {other})"
                        )));
                    }
                }
                let placed = self.placement.as_ref().map(|p| p.nodes().to_vec());
                let highest = self
                    .nodes
                    .keys()
                    .chain(self.removed.iter())
                    .chain(placed.iter().flatten())
                    .copied()
                    .max()
                    .unwrap_or(0)
                    .max(self.last_node);
                let id = match id {
                    0 => highest + 1,
                    id if self.nodes.contains_key(&id)
                        || self.removed.contains(&id)
                        || placed.as_ref().is_some_and(|p| p.contains(&id)) =>
                    {
                        return Err(Refusal::Invalid(format!(
                            "node id {id} is taken (ids of removed nodes are never reused)"
                        )))
                    }
                    id => id,
                };
                self.placement_mut()?.add_node(id);
                self.nodes.insert(id, addr);
                self.last_node = self.last_node.max(id);
                self.joins.insert(nonce, id);
                Ok(MetaAnswer::Joined { id })
            }
            MetaCommand::SetMembers { group, members } => {
                self.placement_mut()?
                    .set_members(group, members)
                    .map_err(Refusal::Invalid)?;
                Ok(MetaAnswer::Ok)
            }
            MetaCommand::Retire { node, how } => {
                if !self.nodes.contains_key(&node) {
                    return Err(Refusal::Invalid(format!("node {node} is not a member")));
                }
                match how {
                    Some(how) => {
                        // Dead never overrides what an operator asked.
                        if how != Retire::Dead || !self.retiring.contains_key(&node) {
                            self.retiring.insert(node, how);
                        }
                    }
                    None => {
                        self.retiring.remove(&node);
                    }
                }
                Ok(MetaAnswer::Ok)
            }
            MetaCommand::RemoveNode { node } => {
                if !self.nodes.contains_key(&node) {
                    return Err(Refusal::Invalid(format!("node {node} is not a member")));
                }
                if self.nodes.len() == 1 {
                    return Err(Refusal::Invalid("the last member cannot be removed".into()));
                }
                self.placement_mut()?
                    .remove_node(node)
                    .map_err(Refusal::Busy)?;
                self.nodes.remove(&node);
                self.node_states.remove(&node);
                self.retiring.remove(&node);
                self.removed.insert(node);
                Ok(MetaAnswer::Ok)
            }
            MetaCommand::AllocIds { count } => {
                let first = self.next_id.max(1);
                self.next_id = first + count;
                Ok(MetaAnswer::Ids { first })
            }
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct MetaReplica {
    state: MetaState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshot_id: String,
}

const SNAP_MAGIC: &[u8; 4] = b"PMSN";

/// What a snapshot carries after the replica (absent from snapshots of
/// protocol version 12, which are read as having none of it).
#[derive(Debug, Default, Serialize, Deserialize)]
struct SnapshotTail {
    requests: BTreeMap<String, u64>,
}

fn encode_snapshot(r: &MetaReplica) -> Vec<u8> {
    let mut body = wire::encode(r);
    body.extend_from_slice(&wire::encode(&SnapshotTail {
        requests: r.state.requests.clone(),
    }));
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(SNAP_MAGIC);
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn decode_snapshot(bytes: &[u8]) -> Result<MetaReplica, StorageError> {
    let corrupt = |reason: String| StorageError::Corrupt {
        what: "metadata snapshot",
        shard: 0,
        key: keys::show(CF_SNAPSHOT, &keys::prefix(META_GROUP)),
        reason,
    };
    if bytes.len() < 8 || &bytes[..4] != SNAP_MAGIC {
        return Err(corrupt("bad magic or truncated".into()));
    }
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[8..]) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    let (mut replica, tail) = postcard::take_from_bytes::<MetaReplica>(&bytes[8..])
        .map_err(|e| corrupt(format!("cannot decode metadata snapshot: {e}")))?;
    if !tail.is_empty() {
        let tail: SnapshotTail = wire::decode(tail, "metadata snapshot tail").map_err(corrupt)?;
        replica.state.requests = tail.requests;
    }
    Ok(replica)
}

/// Read access to the metadata a node has applied.
#[derive(Clone, Debug)]
pub struct MetaHandle {
    inner: Arc<RwLock<MetaReplica>>,
    applied: tokio::sync::watch::Receiver<u64>,
}

impl MetaHandle {
    pub fn state(&self) -> MetaState {
        self.inner.read().state.clone()
    }
    pub fn last_applied(&self) -> Option<LogId> {
        self.inner.read().last_applied
    }
    /// Reads the applied metadata in place (no copy of the whole state).
    pub fn with_state<R>(&self, f: impl FnOnce(&MetaState) -> R) -> R {
        f(&self.inner.read().state)
    }
    /// Changes each time the replica applies entries or installs a
    /// snapshot (the value: the index of the last applied log entry), so
    /// waiters await a change of the metadata instead of polling it.
    pub fn applied_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.clone()
    }
}

/// The metadata group's state machine.
pub struct MetaStateMachine {
    db: Arc<NodeDb>,
    inner: Arc<RwLock<MetaReplica>>,
    applied: tokio::sync::watch::Sender<u64>,
    metrics: GroupMetrics,
}

fn applied_index(r: &MetaReplica) -> u64 {
    r.last_applied.map_or(0, |l| l.index)
}

impl MetaStateMachine {
    /// Opens the state machine, restoring the stored snapshot (a damaged
    /// one is an error: the node must not start from it).
    pub fn open(db: Arc<NodeDb>) -> Result<Self, StorageError> {
        let replica = match db.get_blob(
            CF_SNAPSHOT,
            &keys::prefix(META_GROUP),
            "metadata snapshot",
            0,
        )? {
            Some(bytes) => decode_snapshot(&bytes)?,
            None => MetaReplica::default(),
        };
        let (applied, _) = tokio::sync::watch::channel(applied_index(&replica));
        Ok(MetaStateMachine {
            metrics: db.metrics().group(META_GROUP),
            db,
            inner: Arc::new(RwLock::new(replica)),
            applied,
        })
    }

    pub fn handle(&self) -> MetaHandle {
        MetaHandle {
            inner: self.inner.clone(),
            applied: self.applied.subscribe(),
        }
    }

    /// Tells the waiters the replica moved on (after its lock is released).
    fn publish(&self) {
        let index = applied_index(&self.inner.read());
        self.applied.send_replace(index);
    }

    fn store(&self, bytes: &[u8]) -> Result<(), StorageError> {
        self.db.write_blob(
            CF_SNAPSHOT,
            &keys::prefix(META_GROUP),
            &[bytes],
            "store metadata snapshot",
            META_GROUP,
        )
    }
}

/// Builds the snapshot prepared when openraft asked for the builder.
pub struct MetaSnapshotBuilder {
    db: Arc<NodeDb>,
    metrics: GroupMetrics,
    prepared: Option<(SnapshotMeta, Vec<u8>)>,
}

impl RaftSnapshotBuilder<TypeConfig> for MetaSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        let (meta, bytes) = self.prepared.take().ok_or_else(|| {
            StorageError::Config("metadata snapshot builder used twice".into())
                .into_raft(ErrorVerb::Write)
        })?;
        self.db
            .write_blob(
                CF_SNAPSHOT,
                &keys::prefix(META_GROUP),
                &[&bytes],
                "store metadata snapshot",
                META_GROUP,
            )
            .map_err(|e| e.into_raft(ErrorVerb::Write))?;
        self.metrics.snapshots_built.inc();
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotData::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MetaStateMachine {
    type SnapshotBuilder = MetaSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), RaftStorageError> {
        let r = self.inner.read();
        Ok((r.last_applied, r.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ShardResponse>, RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        let mut r = self.inner.write();
        for entry in entries {
            if r.last_applied
                .is_some_and(|l| l.index >= entry.log_id.index)
            {
                out.push(ShardResponse {
                    duplicate: true,
                    ..Default::default()
                });
                continue;
            }
            r.last_applied = Some(entry.log_id);
            let resp = match entry.payload {
                EntryPayload::Blank => ShardResponse::default(),
                EntryPayload::Membership(m) => {
                    r.membership = StoredMembership::new(Some(entry.log_id), m);
                    ShardResponse::default()
                }
                EntryPayload::Normal(ShardRequest::Meta(bytes)) => {
                    // The answer or the typed refusal, for the node that
                    // proposed the command (see `node::calls::meta_answer`).
                    let answer: MetaResult =
                        wire::decode::<MetaCommand>(&bytes, "metadata command")
                            .map_err(Refusal::Invalid)
                            .and_then(|cmd| r.state.apply(cmd));
                    ShardResponse {
                        payload: Some(wire::encode(&answer)),
                        ..Default::default()
                    }
                }
                EntryPayload::Normal(_) => ShardResponse {
                    payload: Some(wire::encode::<MetaResult>(&Err(Refusal::Invalid(
                        "a shard command sent to the metadata group".into(),
                    )))),
                    ..Default::default()
                },
            };
            out.push(resp);
        }
        drop(r);
        self.publish();
        self.metrics
            .apply_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let mut r = self.inner.write();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        r.snapshot_id = format!("meta-{}-{nanos}", r.last_applied.map_or(0, |l| l.index));
        let meta = SnapshotMeta {
            last_log_id: r.last_applied,
            last_membership: r.membership.clone(),
            snapshot_id: r.snapshot_id.clone(),
        };
        MetaSnapshotBuilder {
            db: self.db.clone(),
            metrics: self.metrics.clone(),
            prepared: Some((meta, encode_snapshot(&r))),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, RaftStorageError> {
        Ok(Box::new(SnapshotData::receiving(|b| {
            decode_snapshot(b).map(|_| ()).map_err(|e| e.to_string())
        })))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), RaftStorageError> {
        let bytes = snapshot.into_inner();
        let replica = decode_snapshot(&bytes).map_err(|e| e.into_raft(ErrorVerb::Write))?;
        if replica.last_applied != meta.last_log_id {
            return Err(StorageError::Corrupt {
                what: "metadata snapshot",
                shard: 0,
                key: meta.snapshot_id.clone(),
                reason: "contents do not match the metadata sent with it".into(),
            }
            .into_raft(ErrorVerb::Write));
        }
        self.store(&bytes)
            .map_err(|e| e.into_raft(ErrorVerb::Write))?;
        *self.inner.write() = replica;
        self.publish();
        self.metrics.snapshots_installed.inc();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
        let Some(bytes) = self
            .db
            .get_blob(
                CF_SNAPSHOT,
                &keys::prefix(META_GROUP),
                "metadata snapshot",
                0,
            )
            .map_err(|e| e.into_raft(ErrorVerb::Read))?
        else {
            return Ok(None);
        };
        let r = decode_snapshot(&bytes).map_err(|e| e.into_raft(ErrorVerb::Read))?;
        Ok(Some(Snapshot {
            meta: SnapshotMeta {
                last_log_id: r.last_applied,
                last_membership: r.membership,
                snapshot_id: r.snapshot_id,
            },
            snapshot: Box::new(SnapshotData::new(bytes)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobState;

    fn submission(spec: &str) -> JobCommand {
        JobCommand::Submit {
            name: "j".into(),
            algorithm: "kmeans".into(),
            spec: spec.into(),
            workers: 1,
            clocks: 1,
            tables: 1,
            at_ms: 1,
        }
    }

    fn submit(s: &mut MetaState, spec: &str) -> Result<MetaAnswer, Refusal> {
        s.apply(MetaCommand::Job(submission(spec)))
    }

    /// A submission sent again under its id (its client lost the answer)
    /// gets the job it made, whatever became of its datasets since; a
    /// snapshot keeps the ids, and one without them (version 12) reads as
    /// having none.
    #[test]
    fn a_submission_retried_under_its_id_is_one_job() {
        let mut s = MetaState::default();
        let once = |request: &str| MetaCommand::SubmitOnce {
            request: request.into(),
            submit: submission("{}"),
        };
        let first = s.apply(once("r-1")).unwrap();
        assert_eq!(s.apply(once("r-1")).unwrap(), first);
        assert_eq!(s.jobs.len(), 1);
        assert_ne!(s.apply(once("r-2")).unwrap(), first);
        assert_eq!(s.jobs.len(), 2);
        // Only a submission may be sent this way.
        let bad = MetaCommand::SubmitOnce {
            request: "r-3".into(),
            submit: JobCommand::Cancel { job: 1, at_ms: 1 },
        };
        assert!(s.apply(bad).is_err());
        // Through a snapshot, and from one written before the ids were kept.
        let replica = MetaReplica {
            state: s.clone(),
            ..Default::default()
        };
        let back = decode_snapshot(&encode_snapshot(&replica)).unwrap();
        assert_eq!(back.state.requests, s.requests);
        let body = wire::encode(&replica);
        let mut old = SNAP_MAGIC.to_vec();
        old.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        old.extend_from_slice(&body);
        let back = decode_snapshot(&old).unwrap();
        assert!(back.state.requests.is_empty());
        assert_eq!(back.state.jobs.len(), 2);
        // A deleted job's id goes with it.
        let MetaAnswer::Job(job) = first else {
            panic!("{first:?}")
        };
        s.apply(MetaCommand::Job(JobCommand::Cancel { job, at_ms: 2 }))
            .unwrap();
        s.apply(MetaCommand::Job(JobCommand::Delete { job }))
            .unwrap();
        assert!(!s.requests.values().any(|&j| j == job));
    }

    /// A cancel, resume or delete sent again under its id (its client lost
    /// its node) takes effect once: a second resume does not start another
    /// epoch, a second cancel or delete is not refused as "already ...";
    /// the ids go with the job, but for the delete's own.
    #[test]
    fn job_commands_retried_under_their_ids_take_effect_once() {
        let mut s = MetaState::default();
        let MetaAnswer::Job(job) = submit(&mut s, "{}").unwrap() else {
            panic!()
        };
        let once = |request: &str, cmd: JobCommand| MetaCommand::JobOnce {
            request: request.into(),
            cmd,
        };
        let epoch = s.jobs[&job].epoch;
        s.apply(MetaCommand::Job(JobCommand::Pause {
            job,
            epoch,
            reason: "too few nodes".into(),
            at_ms: 2,
        }))
        .unwrap();
        let resume = JobCommand::Resume { job, at_ms: 3 };
        s.apply(once("r-1", resume.clone())).unwrap();
        let resumed = s.jobs[&job].epoch;
        assert!(resumed > epoch);
        assert_eq!(s.jobs[&job].state, JobState::Recovering);
        // The same resume again: answered, nothing changes.
        s.apply(once("r-1", resume.clone())).unwrap();
        assert_eq!(s.jobs[&job].epoch, resumed, "resumed once");
        // Another resume (another id) is refused: the job is not paused.
        assert!(s.apply(once("r-2", resume)).is_err());
        let cancel = JobCommand::Cancel { job, at_ms: 4 };
        s.apply(once("c-1", cancel.clone())).unwrap();
        assert_eq!(s.jobs[&job].state, JobState::Cancelled);
        s.apply(once("c-1", cancel.clone())).unwrap();
        assert!(s.apply(once("c-2", cancel)).is_err(), "already cancelled");
        // An id names one job; only these three commands go this way.
        let err = s
            .apply(once(
                "r-1",
                JobCommand::Cancel {
                    job: job + 100,
                    at_ms: 5,
                },
            ))
            .unwrap_err();
        assert!(err.to_string().contains("already used for job"), "{err}");
        assert!(s.apply(once("x", submission("{}"))).is_err());
        let delete = JobCommand::Delete { job };
        s.apply(once("d-1", delete.clone())).unwrap();
        assert!(!s.jobs.contains_key(&job));
        s.apply(once("d-1", delete.clone())).unwrap();
        assert!(s.apply(once("d-2", delete)).is_err(), "no such job");
        let left: Vec<&String> = s.requests.keys().collect();
        assert_eq!(left, ["d-1"]);
    }

    /// A job may name only sealed datasets; the active view drops ended
    /// jobs and shares the records of the others with the state.
    #[test]
    fn jobs_name_sealed_datasets_and_the_active_view_drops_ended_jobs() {
        use crate::datasets::{DatasetCommand, DatasetRecord};
        let mut s = MetaState::default();
        let sha = "e".repeat(64);
        let spec = format!(r#"{{"train":"sha256:{sha}"}}"#);
        assert!(submit(&mut s, &spec).is_err(), "an unknown dataset");
        let rec = DatasetRecord {
            sha256: sha.clone(),
            name: "d.csv".into(),
            size: 1,
            chunk_size: crate::datasets::CHUNK,
            chunks_sha256: "0".repeat(64),
            source: "upload".into(),
            holders: vec![1],
            ready: false,
            created_ms: 0,
        };
        s.apply(MetaCommand::Dataset(DatasetCommand::Stage { record: rec }))
            .unwrap();
        assert!(submit(&mut s, &spec).is_err(), "a staged dataset");
        s.apply(MetaCommand::Dataset(DatasetCommand::Seal {
            sha256: sha.clone(),
        }))
        .unwrap();
        let MetaAnswer::Job(a) = submit(&mut s, &spec).unwrap() else {
            panic!()
        };
        let MetaAnswer::Job(b) = submit(&mut s, "{}").unwrap() else {
            panic!()
        };
        // In use by a job that has not ended: not removable.
        let rm = MetaCommand::Dataset(DatasetCommand::Remove {
            sha256: sha.clone(),
            only_staged: false,
        });
        assert!(matches!(s.apply(rm.clone()), Err(Refusal::Busy(_))));
        s.apply(MetaCommand::Job(JobCommand::Cancel { job: a, at_ms: 2 }))
            .unwrap();
        let active = s.active();
        assert_eq!(active.jobs.keys().copied().collect::<Vec<_>>(), vec![b]);
        assert!(
            Arc::ptr_eq(&active.jobs[&b], &s.jobs[&b]),
            "records are shared"
        );
        assert_eq!(active.datasets, s.datasets);
        s.apply(rm).unwrap();
        assert!(s.datasets.is_empty());
    }

    #[test]
    fn commands_apply_and_refuse() {
        let mut s = MetaState::default();
        let p = Placement::new(vec![1, 2, 3], 8, 3);
        let nodes: BTreeMap<u64, String> = [(1, "a:1".to_string())].into();
        assert_eq!(
            s.apply(MetaCommand::Init {
                placement: p.clone(),
                nodes: nodes.clone()
            }),
            Ok(MetaAnswer::Ok)
        );
        // A repeated Init leaves the recorded placement as it is.
        let other = Placement::new(vec![1, 2], 8, 3);
        assert_eq!(
            s.apply(MetaCommand::Init {
                placement: other,
                nodes
            }),
            Ok(MetaAnswer::Ok)
        );
        assert_eq!(s.placement.as_ref(), Some(&p));
        // A node joins: the next id, a member holding nothing; the same
        // nonce again gets the same id; ids are not reused.
        let join = |nonce, addr: &str, id| MetaCommand::Join {
            nonce,
            addr: addr.into(),
            id,
        };
        assert_eq!(s.apply(join(7, "d:1", 0)), Ok(MetaAnswer::Joined { id: 4 }));
        assert_eq!(s.apply(join(7, "d:1", 0)), Ok(MetaAnswer::Joined { id: 4 }));
        assert!(s.apply(join(8, "a:1", 0)).is_err(), "a member's address");
        assert!(s.apply(join(9, "e:1", 4)).is_err(), "a taken id");
        assert!(s.placement.as_ref().unwrap().groups_of(4).is_empty());
        // Removing needs the node to hold nothing.
        assert!(s.apply(MetaCommand::RemoveNode { node: 1 }).is_err());
        s.apply(MetaCommand::Retire {
            node: 4,
            how: Some(crate::meta::Retire::Remove),
        })
        .unwrap();
        s.apply(MetaCommand::RemoveNode { node: 4 }).unwrap();
        assert_eq!(
            s.apply(join(10, "d:1", 0)),
            Ok(MetaAnswer::Joined { id: 5 })
        );
        assert!(s.apply(join(11, "f:1", 4)).is_err(), "a removed id");
        assert_eq!(
            s.apply(MetaCommand::AllocIds { count: 3 }),
            Ok(MetaAnswer::Ids { first: 1 })
        );
        assert_eq!(
            s.apply(MetaCommand::AllocIds { count: 1 }),
            Ok(MetaAnswer::Ids { first: 4 })
        );
        let r = MetaReplica {
            state: s.clone(),
            ..Default::default()
        };
        let mut bytes = encode_snapshot(&r);
        assert_eq!(decode_snapshot(&bytes).unwrap().state, s);
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        assert!(decode_snapshot(&bytes)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
    }

    #[tokio::test]
    async fn applied_entries_answer_typed_and_wake_waiters() {
        use openraft::CommittedLeaderId;
        let dir = tempfile::tempdir().unwrap();
        let db = NodeDb::open(petuum_storage::StorageConfig::new(dir.path())).unwrap();
        let mut sm = MetaStateMachine::open(db).unwrap();
        let h = sm.handle();
        let mut changes = h.applied_watch();
        assert!(!changes.has_changed().unwrap());
        let entry = |index, cmd: &MetaCommand| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(ShardRequest::Meta(wire::encode(cmd))),
        };
        let cmd = MetaCommand::SetNodeAddr {
            node: 7,
            addr: "x:1".into(),
        };
        let alloc = MetaCommand::AllocIds { count: 2 };
        let out = sm.apply([entry(1, &alloc), entry(2, &cmd)]).await.unwrap();
        let answers: Vec<MetaResult> = out
            .iter()
            .map(|r| wire::decode(r.payload.as_ref().unwrap(), "answer").unwrap())
            .collect();
        assert_eq!(answers[0], Ok(MetaAnswer::Ids { first: 1 }));
        assert!(matches!(answers[1], Err(Refusal::Invalid(_))));
        // Waiters see the new applied index without polling.
        tokio::time::timeout(std::time::Duration::from_secs(1), changes.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*changes.borrow_and_update(), 2);
        assert_eq!(h.with_state(|s| s.next_id), 3);
    }
}
