//! A cluster node: its Raft groups (the metadata group and a replica of
//! each shard placed on it), the handling of peer and client requests, and
//! leadership balancing.

use crate::config::NodeConfig;
use crate::meta::{MetaAnswer, MetaCommand, MetaHandle, MetaState, MetaStateMachine, NodeState};
use crate::network::{GroupNetwork, Method, Peers};
use crate::placement::{group_shard, shard_group, Placement, META_GROUP};
use crate::wire::{
    self, DataError, DataReply, DataRequest, KIND_APPEND, KIND_DATA, KIND_SNAPSHOT, KIND_VOTE,
    MAX_WAIT_MS,
};
use futures::future::join_all;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{BasicNode, Raft, ServerState, SnapshotPolicy};
use parking_lot::Mutex;
use petuum_core::batch::UpdateBatch;
use petuum_core::types::ShardId;
use petuum_proto::v1::{GroupInfo, NodeInfo, StatusReply};
use petuum_proto::PROTOCOL_VERSION;
use petuum_storage::EpochCheck;
use petuum_storage::{
    NodeDb, RaftLogStore, ShardHandle, ShardRequest, ShardResponse, ShardStateMachine,
    StorageConfig, TypeConfig,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("data directory {path}: {reason}")]
    DataDir { path: String, reason: String },
    #[error(transparent)]
    Storage(#[from] petuum_storage::StorageError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("listening on {addr}: {reason}")]
    Listen { addr: String, reason: String },
}

/// A shard replica on this node.
pub struct ShardGroup {
    pub shard: ShardId,
    pub raft: Raft<TypeConfig>,
    pub handle: ShardHandle,
}

/// The identity of the cluster a data directory belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ClusterIdentity {
    cluster_id: u64,
    node: u64,
    nodes: Vec<u64>,
    shards: u32,
    replicas: u32,
}

/// One petuumd node of a cluster.
pub struct ClusterNode {
    pub config: NodeConfig,
    pub placement: Placement,
    pub cluster_id: u64,
    pub db: Arc<NodeDb>,
    pub peers: Arc<Peers>,
    meta: Option<(Raft<TypeConfig>, MetaHandle)>,
    shards: HashMap<ShardId, ShardGroup>,
    /// Groups this node is handing leadership away from: writes refused.
    yielding: Arc<Mutex<HashSet<u64>>>,
    /// Set once the node began to stop: it takes no leadership back (the
    /// balancer ends, requests to campaign are refused).
    stopping: std::sync::atomic::AtomicBool,
    /// Held while this node's own state (up, leaving) is being written to
    /// the metadata group: a late "up" from startup cannot land after the
    /// "leaving" of a stop that began meanwhile.
    announcing: tokio::sync::Mutex<()>,
    pub(crate) token: Option<String>,
}

fn read_token(path: Option<&Path>) -> Result<Option<String>, NodeError> {
    let Some(p) = path else { return Ok(None) };
    let t = std::fs::read_to_string(p).map_err(|e| NodeError::DataDir {
        path: p.display().to_string(),
        reason: format!("cannot read the client token file: {e}"),
    })?;
    let t = t.trim().to_string();
    if t.is_empty() {
        return Err(NodeError::DataDir {
            path: p.display().to_string(),
            reason: "the client token file is empty".into(),
        });
    }
    Ok(Some(t))
}

/// Client-side TLS for node-to-node calls.
pub fn client_tls(
    cfg: &NodeConfig,
) -> Result<Option<tonic::transport::ClientTlsConfig>, NodeError> {
    let Some(tls) = &cfg.tls else { return Ok(None) };
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| NodeError::Tls(format!("{}: {e}", p.display())));
    let identity = tonic::transport::Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
    let ca = tonic::transport::Certificate::from_pem(read(&tls.ca)?);
    Ok(Some(
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(ca)
            .identity(identity),
    ))
}

impl ClusterNode {
    /// Opens the node's storage and Raft groups. Does not listen yet (see
    /// [`crate::server::serve`]).
    pub async fn open(config: NodeConfig) -> Result<Arc<ClusterNode>, NodeError> {
        let placement = Placement::new(
            config.peers.iter().map(|p| p.id).collect(),
            config.shards,
            config.replicas,
        );
        let cluster_id = placement.cluster_id();
        std::fs::create_dir_all(&config.data_dir).map_err(|e| NodeError::DataDir {
            path: config.data_dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let fresh = check_identity(&config, &placement, cluster_id)?;
        let db = NodeDb::open(StorageConfig::new(config.data_dir.join("db")))?;
        let token = read_token(config.client_token_file.as_deref())?;
        let addrs: HashMap<u64, String> = config
            .peers
            .iter()
            .map(|p| {
                let addr = if p.id == config.id {
                    config.advertised()
                } else {
                    p.addr.clone()
                };
                (p.id, addr)
            })
            .collect();
        let peers = Peers::new(
            config.id,
            cluster_id,
            addrs.clone(),
            client_tls(&config)?,
            token.clone(),
        );
        let t = &config.raft;
        let raft_config = Arc::new(
            openraft::Config {
                cluster_name: format!("petuum-{cluster_id:016x}"),
                heartbeat_interval: t.heartbeat_ms,
                election_timeout_min: t.election_timeout_min_ms,
                election_timeout_max: t.election_timeout_max_ms,
                max_payload_entries: t.max_entries_per_append,
                snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_after_entries),
                max_in_snapshot_log_to_keep: (t.snapshot_after_entries / 10).max(10),
                install_snapshot_timeout: t.rpc_timeout_ms.max(5000),
                ..Default::default()
            }
            .validate()
            .map_err(|e| NodeError::Raft(e.to_string()))?,
        );
        let me = config.id;
        let mut meta = None;
        let mut shards = HashMap::new();
        for group in placement.groups_of(me) {
            let log = RaftLogStore::new(db.clone(), group);
            let net = GroupNetwork {
                peers: peers.clone(),
                group,
            };
            match group_shard(group) {
                None => {
                    let sm = MetaStateMachine::open(db.clone())?;
                    let handle = sm.handle();
                    let raft = Raft::new(me, raft_config.clone(), net, log, sm)
                        .await
                        .map_err(|e| NodeError::Raft(format!("group {group}: {e}")))?;
                    meta = Some((raft, handle));
                }
                Some(shard) => {
                    let sm = ShardStateMachine::open(db.clone(), group, shard)?;
                    let handle = sm.handle();
                    let raft = Raft::new(me, raft_config.clone(), net, log, sm)
                        .await
                        .map_err(|e| NodeError::Raft(format!("group {group}: {e}")))?;
                    shards.insert(
                        shard,
                        ShardGroup {
                            shard,
                            raft,
                            handle,
                        },
                    );
                }
            }
        }
        let node = Arc::new(ClusterNode {
            config,
            placement,
            cluster_id,
            db,
            peers,
            meta,
            shards,
            yielding: Arc::new(Mutex::new(HashSet::new())),
            stopping: std::sync::atomic::AtomicBool::new(false),
            announcing: tokio::sync::Mutex::new(()),
            token,
        });
        tracing::info!(
            node = me,
            cluster = format!("{cluster_id:016x}"),
            groups = node.shards.len() + node.meta.is_some() as usize,
            fresh,
            "node opened"
        );
        Ok(node)
    }

    pub fn id(&self) -> u64 {
        self.config.id
    }

    /// The Raft instance of a group hosted here.
    pub fn raft(&self, group: u64) -> Option<&Raft<TypeConfig>> {
        match group_shard(group) {
            None => self.meta.as_ref().map(|m| &m.0),
            Some(s) => self.shards.get(&s).map(|g| &g.raft),
        }
    }

    /// This node's replica of a shard.
    pub fn shard(&self, shard: ShardId) -> Option<&ShardGroup> {
        self.shards.get(&shard)
    }

    /// The metadata this node has applied (None when it holds no replica).
    pub fn meta_state(&self) -> Option<crate::meta::MetaState> {
        self.meta.as_ref().map(|m| m.1.state())
    }

    fn members(&self, group: u64) -> BTreeMap<u64, BasicNode> {
        self.placement
            .members(group)
            .into_iter()
            .map(|n| {
                (
                    n,
                    BasicNode {
                        addr: self.peers.addr(n).unwrap_or_default(),
                    },
                )
            })
            .collect()
    }

    /// Forms the groups this node is the preferred leader of, when they
    /// have never been formed (the bootstrap rule, docs/cluster.md), and
    /// records the placement in the metadata group.
    pub async fn bootstrap(self: &Arc<Self>) {
        let me = self.id();
        let mut groups: Vec<u64> = self.shards.keys().map(|&s| shard_group(s)).collect();
        if self.meta.is_some() {
            groups.push(META_GROUP);
        }
        for group in groups {
            if self.placement.preferred(group) != me {
                continue;
            }
            let Some(raft) = self.raft(group) else {
                continue;
            };
            match raft.is_initialized().await {
                Ok(false) => {
                    if let Err(e) = raft.initialize(self.members(group)).await {
                        tracing::warn!(node = me, group, error = %e, "initialize");
                    }
                }
                Ok(true) => {}
                Err(e) => tracing::warn!(node = me, group, error = %e, "is_initialized"),
            }
        }
        {
            // Announce this node as up once the metadata group takes writes
            // (and the placement is recorded, so the node is a member).
            let node = self.clone();
            tokio::spawn(async move {
                let cmd = MetaCommand::SetNodeState {
                    node: me,
                    state: NodeState::Up,
                };
                for _ in 0..600 {
                    let _one_at_a_time = node.announcing.lock().await;
                    if node.is_stopping() {
                        return;
                    }
                    if node.meta_command(cmd.clone()).await.is_ok() {
                        tracing::info!(node = me, "announced as up");
                        return;
                    }
                    drop(_one_at_a_time);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            });
        }
        if self.placement.preferred(META_GROUP) == me {
            let node = self.clone();
            tokio::spawn(async move {
                let nodes: BTreeMap<u64, String> = node
                    .placement
                    .nodes()
                    .iter()
                    .map(|&n| (n, node.peers.addr(n).unwrap_or_default()))
                    .collect();
                let cmd = MetaCommand::Init {
                    placement: node.placement.clone(),
                    nodes,
                };
                loop {
                    match node.meta_command(cmd.clone()).await {
                        Ok(_) => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "metadata init not yet committed");
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                    }
                }
                tracing::info!(node = node.id(), "cluster metadata recorded");
            });
        }
    }

    /// Writes one command to a group this node leads.
    async fn write(&self, group: u64, req: ShardRequest) -> Result<ShardResponse, DataError> {
        let raft = self.raft(group).ok_or(DataError::NotHere { group })?;
        if self.yielding.lock().contains(&group) {
            let me = self.id();
            return Err(DataError::NotLeader {
                group,
                leader: raft.metrics().borrow().current_leader.filter(|&l| l != me),
            });
        }
        match raft.client_write(req).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(DataError::NotLeader {
                    group,
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(DataError::Unavailable(format!("group {group}: {e}"))),
        }
    }

    /// The bearer token clients must send (the node's own connections as
    /// a client send it too). Never log it.
    pub fn client_token(&self) -> Option<String> {
        self.token.clone()
    }

    /// The address clients reach this node at.
    pub fn endpoint(&self) -> String {
        self.peers
            .addr(self.id())
            .unwrap_or_else(|| self.config.listen.to_string())
    }

    /// Whether this node leads the metadata group now.
    pub fn is_meta_leader(&self) -> bool {
        self.meta
            .as_ref()
            .is_some_and(|(raft, _)| raft.metrics().borrow().current_leader == Some(self.id()))
            && !self.yielding.lock().contains(&META_GROUP)
    }

    /// The metadata: this node's replica when it holds one, else a voter's.
    pub async fn meta_read(&self) -> Result<MetaState, DataError> {
        if let Some((_, h)) = &self.meta {
            return Ok(h.state());
        }
        let mut last = DataError::Unavailable("no metadata replica reachable".into());
        for t in self.placement.meta_voters() {
            match self
                .data_call(t, &DataRequest::MetaRead, Duration::from_secs(3))
                .await
            {
                Ok(DataReply::MetaState(s)) => return Ok(*s),
                Ok(other) => last = DataError::Unavailable(format!("unexpected reply {other:?}")),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Whether `node` answers within `timeout`.
    pub async fn ping(&self, node: u64, timeout: Duration) -> bool {
        matches!(
            self.data_call(node, &DataRequest::Ping, timeout).await,
            Ok(DataReply::Ok)
        )
    }

    /// One data request to a node (this one: handled in place).
    pub async fn data_call(
        &self,
        node: u64,
        req: &DataRequest,
        timeout: Duration,
    ) -> Result<DataReply, DataError> {
        if node == self.id() {
            return Box::pin(self.handle_data(req.clone())).await;
        }
        let bytes = self
            .peers
            .call(node, Method::Data, 0, KIND_DATA, wire::encode(req), timeout)
            .await
            .map_err(|e| DataError::Unavailable(e.to_string()))?;
        let r: Result<DataReply, DataError> =
            wire::decode(&bytes, "data reply").map_err(DataError::Unavailable)?;
        r
    }

    /// Runs a metadata command on the metadata leader (forwarding once).
    pub async fn meta_command(&self, cmd: MetaCommand) -> Result<MetaAnswer, DataError> {
        let mut targets: Vec<u64> = Vec::new();
        if self.meta.is_some() {
            match self
                .write(META_GROUP, ShardRequest::Meta(wire::encode(&cmd)))
                .await
            {
                Ok(resp) => return meta_answer(resp),
                Err(DataError::NotLeader {
                    leader: Some(l), ..
                }) => targets.push(l),
                // No leader known here (an election, or this node is
                // handing off): ask the other voters.
                Err(DataError::NotLeader { leader: None, .. }) => {
                    let me = self.id();
                    targets = self
                        .placement
                        .meta_voters()
                        .into_iter()
                        .filter(|&n| n != me)
                        .collect();
                }
                Err(e) => return Err(e),
            }
        } else {
            targets = self.placement.meta_voters();
        }
        let mut last = DataError::Unavailable("no metadata replica reachable".into());
        for t in targets {
            match self
                .peers
                .call(
                    t,
                    Method::Data,
                    META_GROUP,
                    KIND_DATA,
                    wire::encode(&DataRequest::Meta(cmd.clone())),
                    Duration::from_secs(5),
                )
                .await
            {
                Ok(bytes) => {
                    let r: Result<DataReply, DataError> =
                        wire::decode(&bytes, "metadata reply").map_err(DataError::Unavailable)?;
                    match r? {
                        DataReply::Meta(a) => return Ok(a),
                        other => {
                            return Err(DataError::Unavailable(format!(
                                "unexpected metadata reply {other:?}"
                            )))
                        }
                    }
                }
                Err(e) => last = DataError::Unavailable(e.to_string()),
            }
        }
        Err(last)
    }

    /// Handles a Raft message for one of this node's groups.
    pub async fn handle_raft(
        &self,
        group: u64,
        kind: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, Status> {
        let raft = self.raft(group).ok_or_else(|| {
            Status::not_found(format!(
                "group {group} has no replica on node {}",
                self.id()
            ))
        })?;
        let bad = |e: String| Status::invalid_argument(format!("group {group}: {e}"));
        match kind {
            KIND_APPEND => {
                let req: AppendEntriesRequest<TypeConfig> =
                    wire::decode(payload, "append-entries").map_err(bad)?;
                Ok(wire::encode(&raft.append_entries(req).await))
            }
            KIND_VOTE => {
                let req: VoteRequest<u64> = wire::decode(payload, "vote").map_err(bad)?;
                Ok(wire::encode(&raft.vote(req).await))
            }
            KIND_SNAPSHOT => {
                let req: InstallSnapshotRequest<TypeConfig> =
                    wire::decode(payload, "install-snapshot").map_err(bad)?;
                Ok(wire::encode(&raft.install_snapshot(req).await))
            }
            k => Err(Status::invalid_argument(format!(
                "unknown Raft message kind {k} for group {group}"
            ))),
        }
    }

    /// Handles a table or metadata request.
    pub async fn handle_data(&self, req: DataRequest) -> Result<DataReply, DataError> {
        match req {
            DataRequest::Push { epoch, batches } => {
                Ok(DataReply::Pushed(self.push(epoch, batches).await))
            }
            DataRequest::Fetch {
                shard,
                req,
                epoch,
                wait_ms,
            } => {
                let g = self.shard(shard).ok_or(DataError::NotHere {
                    group: shard_group(shard),
                })?;
                let mut watch = g.handle.applied_watch();
                let deadline = long_poll_deadline(wait_ms);
                loop {
                    let _ = watch.borrow_and_update();
                    if let Some(snap) = g.handle.with_replica(|r| exact_fetch(r, &req, epoch))? {
                        return Ok(DataReply::Row(snap));
                    }
                    match tokio::time::timeout_at(deadline, watch.changed()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Err(DataError::Unavailable("shard closed".into())),
                        Err(_) => return Err(DataError::NotYet),
                    }
                }
            }
            DataRequest::FetchLatest { shard, req, epoch } => {
                let g = self.read_barrier(shard).await?;
                match g.handle.with_replica(|r| exact_fetch(r, &req, epoch))? {
                    Some(snap) => Ok(DataReply::Row(snap)),
                    None => Err(DataError::NotYet),
                }
            }
            DataRequest::Commands { shard, commands } => {
                let group = shard_group(shard);
                let mut out = Vec::with_capacity(commands.len());
                for c in commands {
                    out.push(self.write(group, c).await?);
                }
                Ok(DataReply::Done(out))
            }
            DataRequest::RowIds { shard, table } => {
                // Exports list rows: every acknowledged write must be in
                // the list, so the leader answers after a read barrier.
                let g = self.read_barrier(shard).await?;
                let ids = g.handle.with_current(|st| {
                    st.table(table)?;
                    Ok::<_, petuum_core::TableError>(st.row_ids(table))
                })?;
                Ok(DataReply::RowIds(ids))
            }
            DataRequest::ReadLocal {
                shard,
                table,
                row,
                job,
            } => {
                let g = self.shard(shard).ok_or(DataError::NotHere {
                    group: shard_group(shard),
                })?;
                Ok(g.handle.with_replica(|r| DataReply::Local {
                    row: r.data.current().read(table, row).ok(),
                    last_applied: r.last_applied.map_or(0, |l| l.index),
                    worker_clocks: job
                        .and_then(|j| r.data.current().job(j).ok().map(|c| c.applied()))
                        .unwrap_or_default(),
                }))
            }
            DataRequest::Meta(cmd) => Ok(DataReply::Meta(self.meta_command(cmd).await?)),
            DataRequest::Watch {
                shard,
                job,
                epoch,
                after,
                rows,
                wait_ms,
            } => {
                let g = self.shard(shard).ok_or(DataError::NotHere {
                    group: shard_group(shard),
                })?;
                let mut watch = g.handle.applied_watch();
                let deadline = long_poll_deadline(wait_ms);
                loop {
                    let _ = watch.borrow_and_update();
                    let ready = g.handle.with_replica(|r| {
                        match r.data.check_epoch(job, epoch) {
                            EpochCheck::Stale { current } => {
                                return Err(petuum_core::TableError::StaleEpoch {
                                    job,
                                    epoch,
                                    current,
                                })
                            }
                            _ if !r.data.live_in(job, epoch) => return Ok(None),
                            _ => {}
                        }
                        let st = r.data.current();
                        let clocks = st.job(job)?;
                        let min_clock = clocks.min_clock();
                        if min_clock <= after {
                            return Ok::<_, petuum_core::TableError>(None);
                        }
                        let worker_clocks: Arc<[u64]> = clocks.applied().into();
                        let version = replica_version(r);
                        let out = rows
                            .iter()
                            .filter_map(|&(t, r)| {
                                let row = st.read(t, r).ok()?;
                                Some((
                                    (t, r),
                                    petuum_core::service::RowSnapshot {
                                        row: Arc::new(row),
                                        min_clock,
                                        worker_clocks: worker_clocks.clone(),
                                        version,
                                    },
                                ))
                            })
                            .collect();
                        Ok(Some((min_clock, out)))
                    })?;
                    if let Some((min_clock, rows)) = ready {
                        return Ok(DataReply::Rows { min_clock, rows });
                    }
                    match tokio::time::timeout_at(deadline, watch.changed()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Err(DataError::Unavailable("shard closed".into())),
                        Err(_) => return Err(DataError::NotYet),
                    }
                }
            }
            DataRequest::Yield { group, to } => {
                self.yield_leadership(group, to).await?;
                Ok(DataReply::Ok)
            }
            DataRequest::MetaRead => match &self.meta {
                Some((_, h)) => Ok(DataReply::MetaState(Box::new(h.state()))),
                None => Err(DataError::NotHere { group: META_GROUP }),
            },
            DataRequest::Blob { job, clock, worker } => {
                let store = petuum_storage::CheckpointStore::new(self.db.clone());
                let blob = store
                    .load_worker_blob(job, clock, worker)
                    .map_err(|e| DataError::Unavailable(e.to_string()))?;
                Ok(DataReply::Blob(blob))
            }
            DataRequest::Ping => Ok(DataReply::Ok),
            DataRequest::ShardImage { shard, job, clock } => {
                let store = petuum_storage::CheckpointStore::new(self.db.clone());
                let part = store
                    .load_shard_bytes(job, clock, shard)
                    .map_err(|e| DataError::Unavailable(e.to_string()))?;
                Ok(DataReply::Blob(part))
            }
            DataRequest::Elect { group } => {
                let raft = self.raft(group).ok_or(DataError::NotHere { group })?;
                if self.is_stopping() {
                    return Err(DataError::Refused(format!(
                        "node {} is stopping: it campaigns for no group",
                        self.id()
                    )));
                }
                raft.trigger()
                    .elect()
                    .await
                    .map_err(|e| DataError::Unavailable(e.to_string()))?;
                Ok(DataReply::Ok)
            }
        }
    }

    async fn push(&self, epoch: u64, batches: Vec<UpdateBatch>) -> Vec<Result<(), DataError>> {
        join_all(batches.into_iter().map(|batch| async move {
            let group = shard_group(batch.shard);
            let job = batch.job;
            let resp = self
                .write(group, ShardRequest::Batch { epoch, batch })
                .await?;
            match (resp.superseded_by, resp.error) {
                (Some(current), _) => Err(DataError::Table(petuum_core::TableError::StaleEpoch {
                    job,
                    epoch,
                    current,
                })),
                (None, Some(e)) => Err(DataError::Refused(e)),
                (None, None) => Ok(()),
            }
        }))
        .await
    }

    /// This node's replica of `shard` once it holds every write the group
    /// acknowledged: the leader, after confirming its leadership with a
    /// quorum (a linearizable read). Others answer `NotLeader`.
    async fn read_barrier(&self, shard: ShardId) -> Result<&ShardGroup, DataError> {
        let group = shard_group(shard);
        let g = self.shard(shard).ok_or(DataError::NotHere { group })?;
        match g.raft.ensure_linearizable().await {
            Ok(_) => Ok(g),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(DataError::NotLeader {
                    group,
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(DataError::Unavailable(format!("group {group}: {e}"))),
        }
    }

    /// Whether the node began to stop (see [`hand_off`](Self::hand_off)).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Hands leadership of `group` to `to`: stop heartbeats and refuse
    /// writes until the followers' leader lease runs out, so `to` (which
    /// campaigns when this returns) can win the vote.
    async fn yield_leadership(&self, group: u64, to: u64) -> Result<(), DataError> {
        let raft = self.raft(group).ok_or(DataError::NotHere { group })?;
        let m = raft.metrics().borrow().clone();
        if m.current_leader != Some(self.id()) {
            return Err(DataError::NotLeader {
                group,
                leader: m.current_leader,
            });
        }
        if !self.placement.members(group).contains(&to) {
            return Err(DataError::Refused(format!(
                "node {to} holds no replica of group {group}"
            )));
        }
        if !self.yielding.lock().insert(group) {
            return Err(DataError::Refused("already handing off".into()));
        }
        tracing::info!(node = self.id(), group, to, "handing leadership off");
        raft.runtime_config().heartbeat(false);
        raft.runtime_config().elect(false);
        let lease = Duration::from_millis(self.config.raft.election_timeout_max_ms + 50);
        tokio::time::sleep(lease).await;
        let raft = raft.clone();
        let yielding = self.yielding.clone();
        let restore = Duration::from_millis(self.config.raft.election_timeout_max_ms * 2);
        tokio::spawn(async move {
            tokio::time::sleep(restore).await;
            raft.runtime_config().heartbeat(true);
            raft.runtime_config().elect(true);
            yielding.lock().remove(&group);
        });
        Ok(())
    }

    /// Hands leadership of every group this node leads to another replica
    /// (graceful stop, preemption): stop heartbeats and campaigning, refuse
    /// writes, wait out the followers' leader lease, then ask another
    /// member to campaign. All groups at once; returns the groups handed
    /// off.
    pub async fn hand_off(&self) -> Vec<u64> {
        let me = self.id();
        // From here on the balancer takes nothing back and this node
        // campaigns for nothing: leadership only leaves.
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut led = Vec::new();
        let mut ids: Vec<u64> = self.shards.keys().map(|&s| shard_group(s)).collect();
        if self.meta.is_some() {
            ids.push(META_GROUP);
        }
        for group in ids {
            let Some(raft) = self.raft(group) else {
                continue;
            };
            if raft.metrics().borrow().current_leader == Some(me) {
                self.yielding.lock().insert(group);
                raft.runtime_config().heartbeat(false);
                raft.runtime_config().elect(false);
                led.push(group);
            }
        }
        for group in self.shards.keys().map(|&s| shard_group(s)) {
            if let Some(raft) = self.raft(group) {
                raft.runtime_config().elect(false);
            }
        }
        let announce = async {
            // After any "up" already in flight (stopping is set: no new one).
            let _after_up = self.announcing.lock().await;
            let cmd = MetaCommand::SetNodeState {
                node: me,
                state: NodeState::Leaving,
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while tokio::time::Instant::now() < deadline {
                if self.meta_command(cmd.clone()).await.is_ok() {
                    tracing::info!(node = me, "announced as leaving");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tracing::warn!(
                node = me,
                "could not announce leaving to the metadata group"
            );
        };
        if led.is_empty() {
            announce.await;
            return led;
        }
        tracing::info!(
            node = me,
            groups = led.len(),
            "handing leadership off before stopping"
        );
        tokio::time::sleep(Duration::from_millis(
            self.config.raft.election_timeout_max_ms + 50,
        ))
        .await;
        join_all(led.iter().map(|&group| async move {
            for target in self.placement.members(group) {
                if target == me {
                    continue;
                }
                let r = self
                    .peers
                    .call(
                        target,
                        Method::Data,
                        group,
                        KIND_DATA,
                        wire::encode(&DataRequest::Elect { group }),
                        Duration::from_millis(500),
                    )
                    .await;
                // Campaigning: done. Refused (stopping too) or unreachable:
                // the next replica.
                let campaigning = r.is_ok_and(|b| {
                    matches!(
                        wire::decode::<Result<DataReply, DataError>>(&b, "elect reply"),
                        Ok(Ok(DataReply::Ok))
                    )
                });
                if campaigning {
                    break;
                }
            }
        }))
        .await;
        // The metadata group has a new leader by now (if this node led it).
        announce.await;
        led
    }

    /// Periodically takes back leadership of the groups this node should
    /// lead (after it returns from a failure), one group at a time.
    pub async fn balance_leaders(self: Arc<Self>) {
        let me = self.id();
        let period = Duration::from_millis(self.config.raft.election_timeout_max_ms * 4);
        loop {
            tokio::time::sleep(period).await;
            if self.is_stopping() {
                return;
            }
            // Only rebalance when this node leads fewer than its share.
            let mine: Vec<u64> = self
                .shards
                .keys()
                .map(|&s| shard_group(s))
                .filter(|&g| self.placement.preferred(g) == me)
                .collect();
            for group in mine {
                if self.is_stopping() {
                    return;
                }
                let Some(raft) = self.raft(group) else {
                    continue;
                };
                let m = raft.metrics().borrow().clone();
                let Some(leader) = m.current_leader else {
                    continue;
                };
                if leader == me || m.state != ServerState::Follower {
                    continue;
                }
                // Up to date: everything in the local log is applied.
                if m.last_log_index != m.last_applied.map(|l| l.index) {
                    continue;
                }
                let asked = self
                    .peers
                    .call(
                        leader,
                        Method::Data,
                        group,
                        KIND_DATA,
                        wire::encode(&DataRequest::Yield { group, to: me }),
                        Duration::from_millis(self.config.raft.election_timeout_max_ms * 3),
                    )
                    .await;
                let ok = matches!(
                    asked
                        .as_deref()
                        .map(|b| wire::decode::<Result<DataReply, DataError>>(b, "yield reply")),
                    Ok(Ok(Ok(DataReply::Ok)))
                );
                // A node that began to stop while asking takes nothing back.
                if ok && !self.is_stopping() {
                    let _ = raft.trigger().elect().await;
                    tracing::info!(node = me, group, from = leader, "took leadership back");
                    tokio::time::sleep(Duration::from_millis(
                        self.config.raft.election_timeout_max_ms,
                    ))
                    .await;
                }
            }
        }
    }

    /// Status of this node and its groups.
    pub fn status(&self) -> StatusReply {
        let states = self.meta_state().map(|m| m.node_states).unwrap_or_default();
        let mut groups = Vec::new();
        let mut ids: Vec<u64> = self.shards.keys().map(|&s| shard_group(s)).collect();
        if self.meta.is_some() {
            ids.push(META_GROUP);
        }
        ids.sort_unstable();
        for group in ids {
            let Some(raft) = self.raft(group) else {
                continue;
            };
            let m = raft.metrics().borrow().clone();
            groups.push(GroupInfo {
                group,
                leader: m.current_leader.unwrap_or(0),
                term: m.current_term,
                last_applied: m.last_applied.map_or(0, |l| l.index),
                voters: m.membership_config.voter_ids().collect(),
                state: match m.state {
                    ServerState::Leader => "leader",
                    ServerState::Follower => "follower",
                    ServerState::Candidate => "candidate",
                    ServerState::Learner => "learner",
                    ServerState::Shutdown => "shutdown",
                }
                .to_string(),
            });
        }
        StatusReply {
            node: self.id(),
            cluster: self.cluster_id,
            shards: self.placement.shards(),
            replicas: self.config.replicas,
            nodes: self
                .placement
                .nodes()
                .iter()
                .map(|&n| NodeInfo {
                    id: n,
                    addr: self.peers.addr(n).unwrap_or_default(),
                    state: states.get(&n).map_or("unknown", |s| s.name()).to_string(),
                })
                .collect(),
            groups,
            protocol_version: PROTOCOL_VERSION,
        }
    }

    /// Stops every Raft group.
    pub async fn shutdown(&self) {
        let mut all: Vec<&Raft<TypeConfig>> = self.shards.values().map(|g| &g.raft).collect();
        if let Some((r, _)) = &self.meta {
            all.push(r);
        }
        join_all(all.into_iter().map(|r| async move {
            let _ = r.shutdown().await;
        }))
        .await;
    }
}

/// When a long poll asking for `wait_ms` gives up (capped at
/// [`MAX_WAIT_MS`]: a client-chosen wait cannot overflow the clock or park
/// a handler for long).
fn long_poll_deadline(wait_ms: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_millis(wait_ms.min(MAX_WAIT_MS))
}

/// A replica's version of its rows: the index of the last log entry it
/// applied. Replicas at the same index hold the same state and a higher
/// index is a later state, on every replica of the group (a restore or a
/// snapshot included), so caches can compare copies from any replica.
fn replica_version(r: &petuum_storage::Replica) -> u64 {
    r.last_applied.map_or(0, |l| l.index)
}

/// A read of run `epoch` as this replica can serve it exactly (see
/// [`petuum_storage::ShardData::try_fetch`]), versioned by log index.
fn exact_fetch(
    r: &petuum_storage::Replica,
    req: &petuum_core::service::FetchRequest,
    epoch: u64,
) -> Result<Option<petuum_core::service::RowSnapshot>, petuum_core::TableError> {
    Ok(r.data.try_fetch(req, epoch)?.map(|mut snap| {
        snap.version = replica_version(r);
        snap
    }))
}

fn meta_answer(resp: ShardResponse) -> Result<MetaAnswer, DataError> {
    if let Some(e) = resp.error {
        return Err(DataError::Refused(e));
    }
    let bytes = resp
        .payload
        .ok_or_else(|| DataError::Unavailable("metadata command without an answer".into()))?;
    wire::decode(&bytes, "metadata answer").map_err(DataError::Unavailable)
}

/// Checks (or, on first start, writes) the data directory's cluster
/// identity. Returns true on first start.
fn check_identity(
    config: &NodeConfig,
    placement: &Placement,
    cluster_id: u64,
) -> Result<bool, NodeError> {
    let path = config.data_dir.join("cluster.json");
    let want = ClusterIdentity {
        cluster_id,
        node: config.id,
        nodes: placement.nodes().to_vec(),
        shards: placement.shards(),
        replicas: config.replicas,
    };
    let shown = path.display().to_string();
    match std::fs::read(&path) {
        Ok(bytes) => {
            let have: ClusterIdentity =
                serde_json::from_slice(&bytes).map_err(|e| NodeError::DataDir {
                    path: shown.clone(),
                    reason: format!("corrupt cluster identity: {e}"),
                })?;
            if have != want {
                return Err(NodeError::DataDir {
                    path: shown,
                    reason: format!(
                        "belongs to node {} of a cluster of nodes {:?} with {} shards and {} replicas; \
                         the configuration says node {} of nodes {:?}, {} shards, {} replicas",
                        have.node, have.nodes, have.shards, have.replicas,
                        want.node, want.nodes, want.shards, want.replicas
                    ),
                });
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = config.data_dir.join("cluster.json.tmp");
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&serde_json::to_vec_pretty(&want).expect("plain struct"))?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(&config.data_dir)?.sync_all()
            };
            write().map_err(|e| NodeError::DataDir {
                path: shown,
                reason: e.to_string(),
            })?;
            Ok(true)
        }
        Err(e) => Err(NodeError::DataDir {
            path: shown,
            reason: e.to_string(),
        }),
    }
}
