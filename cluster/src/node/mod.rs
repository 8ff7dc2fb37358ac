//! A cluster node: its Raft groups (the metadata group and a replica of
//! each shard placed on it), the handling of peer and client requests, and
//! leadership balancing.
//!
//! This module holds the node itself (opening, identity, token, TLS,
//! bootstrap, accessors); the rest is split by concern: `calls.rs`
//! (writes, metadata reads and commands, calls to peers), `handlers.rs`
//! (Raft and data requests), `leadership.rs` (hand-off and balancing) and
//! `status.rs` (status, shutdown).

use crate::config::NodeConfig;
use crate::meta::{MetaCommand, MetaHandle, MetaStateMachine, NodeState};
use crate::network::{GroupNetwork, Peers};
use crate::placement::{group_shard, shard_group, Placement, META_GROUP};
use crate::retry::Retry;
use openraft::{BasicNode, Raft, SnapshotPolicy};
use parking_lot::Mutex;
use petuum_core::types::ShardId;
use petuum_storage::{
    NodeDb, RaftLogStore, ShardHandle, ShardStateMachine, StorageConfig, TypeConfig,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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
    /// This node's copies of datasets (`DATA_DIR/datasets`).
    pub datasets: Arc<crate::datasets::store::Store>,
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

mod calls;
mod handlers;

pub use calls::MetaChanges;
mod leadership;
mod status;

/// A group opened by [`open_group`].
enum Opened {
    Meta(Raft<TypeConfig>, MetaHandle),
    Shard(ShardGroup),
}

/// Opens one Raft group of this node: its state machine from its last
/// snapshot, then openraft, which re-applies the committed log after it.
async fn open_group(
    me: u64,
    group: u64,
    db: Arc<NodeDb>,
    raft_config: Arc<openraft::Config>,
    peers: Arc<Peers>,
) -> Result<Opened, NodeError> {
    let log = RaftLogStore::new(db.clone(), group);
    let net = GroupNetwork {
        peers,
        group,
        snapshots_sent: db.metrics().group(group).snapshots_sent,
    };
    let started = std::time::Instant::now();
    let raft_error =
        |e: openraft::error::Fatal<u64>| NodeError::Raft(format!("group {group}: {e}"));
    let opened = match group_shard(group) {
        None => {
            let sm = MetaStateMachine::open(db)?;
            let handle = sm.handle();
            let raft = Raft::new(me, raft_config, net, log, sm)
                .await
                .map_err(raft_error)?;
            Opened::Meta(raft, handle)
        }
        Some(shard) => {
            let sm = ShardStateMachine::open(db, group, shard)?;
            let handle = sm.handle();
            let raft = Raft::new(me, raft_config, net, log, sm)
                .await
                .map_err(raft_error)?;
            Opened::Shard(ShardGroup {
                shard,
                raft,
                handle,
            })
        }
    };
    tracing::debug!(
        group,
        ms = started.elapsed().as_millis() as u64,
        "group opened"
    );
    Ok(opened)
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
        let datasets = crate::datasets::store::Store::open(config.data_dir.join("datasets"))
            .map_err(|e| NodeError::DataDir {
                path: config.data_dir.join("datasets").display().to_string(),
                reason: e.to_string(),
            })?;
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
        // Every group at once: opening one replays its log since its last
        // snapshot (openraft re-applies up to the saved commit index), and
        // one after another a restart took the sum of those replays.
        let opening: Vec<_> = placement
            .groups_of(me)
            .into_iter()
            .map(|group| {
                let (db, raft_config, peers) = (db.clone(), raft_config.clone(), peers.clone());
                tokio::spawn(open_group(me, group, db, raft_config, peers))
            })
            .collect();
        let mut meta = None;
        let mut shards = HashMap::new();
        for opened in futures::future::join_all(opening).await {
            match opened.map_err(|e| NodeError::Raft(format!("opening a group: {e}")))?? {
                Opened::Meta(raft, handle) => meta = Some((raft, handle)),
                Opened::Shard(g) => {
                    shards.insert(g.shard, g);
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
            datasets: Arc::new(datasets),
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

    /// `f` of this node's metadata replica (None without one), without
    /// copying it.
    pub fn with_meta<R>(&self, f: impl FnOnce(&crate::meta::MetaState) -> R) -> Option<R> {
        self.meta.as_ref().map(|m| m.1.with_state(f))
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
                // Gives up after three minutes (as 600 rounds of 300 ms did).
                let mut attempts = Retry::META.within(Duration::from_secs(180)).start();
                while !attempts.expired() {
                    let _one_at_a_time = node.announcing.lock().await;
                    if node.is_stopping() {
                        return;
                    }
                    if node.meta_command(cmd.clone()).await.is_ok() {
                        tracing::info!(node = me, "announced as up");
                        return;
                    }
                    drop(_one_at_a_time);
                    attempts.wait().await;
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
                let mut attempts = Retry::META.start();
                loop {
                    match node.meta_command(cmd.clone()).await {
                        Ok(_) => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "metadata init not yet committed");
                            attempts.wait().await;
                        }
                    }
                }
                tracing::info!(node = node.id(), "cluster metadata recorded");
            });
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
