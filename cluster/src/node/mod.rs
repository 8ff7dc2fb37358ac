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
use parking_lot::{Mutex, RwLock};
use petuum_core::types::ShardId;
use petuum_storage::{
    NodeDb, RaftLogStore, ShardHandle, ShardStateMachine, StorageConfig, TypeConfig,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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

/// A group replica hosted on this node.
#[derive(Clone)]
pub(crate) enum Hosted {
    Meta(Raft<TypeConfig>, MetaHandle),
    Shard(Arc<ShardGroup>),
}

impl Hosted {
    fn raft(&self) -> &Raft<TypeConfig> {
        match self {
            Hosted::Meta(r, _) => r,
            Hosted::Shard(g) => &g.raft,
        }
    }
}

/// The identity of the cluster a data directory belongs to (written once,
/// when the node first formed or joined the cluster).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ClusterIdentity {
    cluster_id: u64,
    node: u64,
    shards: u32,
    replicas: u32,
    /// Joined a running cluster (rather than formed it from `peers`).
    #[serde(default)]
    joined: bool,
}

/// The members and placement this node last knew (`members.json`), so a
/// restart finds the current cluster rather than the one its config
/// listed.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct KnownMembers {
    placement: Placement,
    addrs: BTreeMap<u64, String>,
}

/// One petuumd node of a cluster.
pub struct ClusterNode {
    pub config: NodeConfig,
    pub cluster_id: u64,
    pub db: Arc<NodeDb>,
    pub peers: Arc<Peers>,
    /// The placement as this node last learned it from the metadata group.
    placement: RwLock<Arc<Placement>>,
    /// Member ids, for the TLS guard (kept with `placement`).
    pub(crate) members: crate::auth::Members,
    /// Ids of removed nodes: their messages are refused.
    removed: RwLock<BTreeSet<u64>>,
    /// The groups this node hosts a replica of, and when each was opened.
    groups: RwLock<BTreeMap<u64, (Hosted, std::time::Instant)>>,
    raft_config: Arc<openraft::Config>,
    /// Groups this node is handing leadership away from: writes refused.
    yielding: Arc<Mutex<HashSet<u64>>>,
    /// Set once the node began to stop: it takes no leadership back (the
    /// balancer ends, requests to campaign are refused).
    stopping: std::sync::atomic::AtomicBool,
    /// Held while this node's own state (up, leaving) is being written to
    /// the metadata group: a late "up" from startup cannot land after the
    /// "leaving" of a stop that began meanwhile.
    announcing: tokio::sync::Mutex<()>,
    /// Serializes opening and dropping groups.
    opening: tokio::sync::Mutex<()>,
    /// Groups whose voters this node (their leader) is changing: their
    /// leadership stays put until the change is done (a leader that
    /// yields mid-change leaves the group in its joint configuration).
    changing: Arc<Mutex<HashSet<u64>>>,
    /// Whether this node formed the cluster from its `peers` list (and may
    /// initialize the groups it leads first), not joined it.
    formed: bool,
    pub(crate) token: Option<String>,
    /// This node's copies of datasets (`DATA_DIR/datasets`).
    pub datasets: Arc<crate::datasets::store::Store>,
    /// Other nodes' workers' previews held for this node's replicas.
    pub(crate) previews: crate::previews::Previews,
    /// The node that last ran a metadata command this node forwarded (the
    /// metadata leader then; 0: none yet): a node without a replica reads
    /// the metadata there first, so it sees its own writes.
    meta_leader_hint: std::sync::atomic::AtomicU64,
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
mod driver;
mod leadership;
mod members;
mod status;

/// Opens one Raft group of this node: its state machine from its last
/// snapshot, then openraft, which re-applies the committed log after it.
async fn open_group(
    me: u64,
    group: u64,
    db: Arc<NodeDb>,
    raft_config: Arc<openraft::Config>,
    peers: Arc<Peers>,
) -> Result<Hosted, NodeError> {
    let log = RaftLogStore::new(db.clone(), group).with_read_budget(peers.append_budget().shared());
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
            Hosted::Meta(raft, handle)
        }
        Some(shard) => {
            let sm = ShardStateMachine::open(db, group, shard)?.meta_only_at_start();
            let handle = sm.handle();
            let raft = Raft::new(me, raft_config, net, log, sm)
                .await
                .map_err(raft_error)?;
            Hosted::Shard(Arc::new(ShardGroup {
                shard,
                raft,
                handle,
            }))
        }
    };
    tracing::debug!(
        group,
        ms = started.elapsed().as_millis() as u64,
        "group opened"
    );
    Ok(opened)
}

/// Whether a group's `membership` still lists `node`, as a voter or a
/// learner. A replica its group dropped is no longer listed, and hears
/// nothing more from the group.
fn lists(membership: &openraft::Membership<u64, openraft::BasicNode>, node: u64) -> bool {
    membership.voter_ids().any(|n| n == node) || membership.learner_ids().any(|n| n == node)
}

fn data_dir_error(path: &Path, e: impl std::fmt::Display) -> NodeError {
    NodeError::DataDir {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Writes `bytes` to `path` atomically and durably.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| data_dir_error(path, e))
}

/// Reads a JSON file of the data directory (None when absent).
fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
) -> Result<Option<T>, NodeError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| data_dir_error(path, format!("corrupt {what}: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(data_dir_error(path, e)),
    }
}

impl ClusterNode {
    /// Opens the node's storage and Raft groups. Does not listen yet (see
    /// [`crate::server::serve`]). On its first start a node either forms
    /// the cluster from its `peers` or, with `join`, joins a running one
    /// through any member listed there.
    pub async fn open(mut config: NodeConfig) -> Result<Arc<ClusterNode>, NodeError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| data_dir_error(&config.data_dir, e))?;
        let token = read_token(config.client_token_file.as_deref())?;
        let tls = client_tls(&config)?;
        let id_path = config.data_dir.join("cluster.json");
        let known_path = config.data_dir.join("members.json");
        let (identity, mut known, fresh) = match read_json::<ClusterIdentity>(
            &id_path,
            "cluster identity",
        )? {
            Some(have) => {
                check_identity(&config, &have, &id_path)?;
                let known = read_json::<KnownMembers>(&known_path, "member list")?;
                (have, known, false)
            }
            None if !config.join.is_empty() => {
                let info = members::join(&config, tls.clone(), token.clone()).await?;
                let identity = ClusterIdentity {
                    cluster_id: info.cluster,
                    node: info.id,
                    shards: info.shards,
                    replicas: info.replicas,
                    joined: true,
                };
                let known = KnownMembers {
                    placement: info.placement,
                    addrs: info.nodes.into_iter().collect(),
                };
                write_file(
                    &known_path,
                    &serde_json::to_vec_pretty(&known).expect("plain struct"),
                )?;
                write_file(
                    &id_path,
                    &serde_json::to_vec_pretty(&identity).expect("plain struct"),
                )?;
                (identity, Some(known), true)
            }
            None => {
                if config.peers.is_empty() {
                    return Err(data_dir_error(
                            &id_path,
                            "no cluster identity yet, and the config lists neither `peers` (to form a cluster) nor `join` (to join one)",
                        ));
                }
                let p = Placement::new(
                    config.peers.iter().map(|p| p.id).collect(),
                    config.shards(),
                    config.replicas,
                );
                let identity = ClusterIdentity {
                    cluster_id: p.bootstrap_cluster_id(),
                    node: config.id,
                    shards: config.shards(),
                    replicas: config.replicas,
                    joined: false,
                };
                write_file(
                    &id_path,
                    &serde_json::to_vec_pretty(&identity).expect("plain struct"),
                )?;
                (identity, None, true)
            }
        };
        config.id = identity.node;
        config.shards = Some(identity.shards);
        config.replicas = identity.replicas;
        let cluster_id = identity.cluster_id;
        let formed = !identity.joined;
        let placement = match known.take() {
            Some(k) => {
                // Addresses: what this node last knew, over its config.
                let mut addrs: BTreeMap<u64, String> = config
                    .peers
                    .iter()
                    .map(|p| (p.id, p.addr.clone()))
                    .collect();
                addrs.extend(k.addrs);
                known = Some(KnownMembers {
                    placement: k.placement.clone(),
                    addrs,
                });
                k.placement
            }
            None => Placement::new(
                config.peers.iter().map(|p| p.id).collect(),
                config.shards(),
                config.replicas,
            ),
        };
        let db = NodeDb::open(StorageConfig::new(config.data_dir.join("db")))?;
        let datasets = crate::datasets::store::Store::open(config.data_dir.join("datasets"))
            .map_err(|e| data_dir_error(&config.data_dir.join("datasets"), e))?;
        let mut addrs: HashMap<u64, String> = match &known {
            Some(k) => k.addrs.clone().into_iter().collect(),
            None => config
                .peers
                .iter()
                .map(|p| (p.id, p.addr.clone()))
                .collect(),
        };
        addrs.insert(config.id, config.advertised());
        let peers = Peers::new(config.id, cluster_id, addrs, tls, token.clone());
        peers.set_source(config.source_address);
        let t = &config.raft;
        peers.set_coalesce(t.coalesce_messages);
        let append_bytes = crate::network::append_bytes(config.max_message_mb);
        peers.append_budget().set_cap(append_bytes);
        let raft_config = Arc::new(
            openraft::Config {
                cluster_name: format!("petuum-{cluster_id:016x}"),
                heartbeat_interval: t.heartbeat_ms,
                election_timeout_min: t.election_timeout_min_ms,
                election_timeout_max: t.election_timeout_max_ms,
                max_payload_entries: t.max_entries_per_append,
                snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_after_entries),
                max_in_snapshot_log_to_keep: t.log_kept_after_snapshot,
                install_snapshot_timeout: t.rpc_timeout_ms.max(5000),
                // openraft's 3 MiB, within the peers' message limit.
                snapshot_max_chunk_size: (3u64 << 20).min(append_bytes as u64),
                ..Default::default()
            }
            .validate()
            .map_err(|e| NodeError::Raft(e.to_string()))?,
        );
        let me = config.id;
        // The groups the placement puts here, and any other this node
        // stores (a move that was under way): the follower loop drops those
        // that are not its any more.
        let mut wanted: BTreeSet<u64> = placement.groups_of(me).into_iter().collect();
        wanted.extend(
            db.stored_groups()?
                .into_iter()
                .filter(|&g| group_shard(g).is_none_or(|s| s < placement.shards())),
        );
        // Every group at once: opening one replays its log since its last
        // snapshot (openraft re-applies up to the saved commit index), and
        // one after another a restart took the sum of those replays.
        let opening: Vec<_> = wanted
            .into_iter()
            .map(|group| {
                let (db, raft_config, peers) = (db.clone(), raft_config.clone(), peers.clone());
                tokio::spawn(async move {
                    let opened = open_group(me, group, db, raft_config, peers).await;
                    (group, opened)
                })
            })
            .collect();
        let mut groups = BTreeMap::new();
        let now = std::time::Instant::now();
        for opened in futures::future::join_all(opening).await {
            let (group, hosted) =
                opened.map_err(|e| NodeError::Raft(format!("opening a group: {e}")))?;
            groups.insert(group, (hosted?, now));
        }
        let members: crate::auth::Members =
            Arc::new(parking_lot::RwLock::new(placement.nodes().to_vec()));
        let node = Arc::new(ClusterNode {
            config,
            cluster_id,
            db,
            peers,
            placement: RwLock::new(Arc::new(placement)),
            members,
            removed: RwLock::new(BTreeSet::new()),
            groups: RwLock::new(groups),
            raft_config,
            yielding: Arc::new(Mutex::new(HashSet::new())),
            meta_leader_hint: std::sync::atomic::AtomicU64::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
            announcing: tokio::sync::Mutex::new(()),
            opening: tokio::sync::Mutex::new(()),
            changing: Arc::new(Mutex::new(HashSet::new())),
            formed,
            token,
            datasets: Arc::new(datasets),
            previews: Default::default(),
        });
        tracing::info!(
            node = me,
            cluster = format!("{cluster_id:016x}"),
            groups = node.groups.read().len(),
            fresh,
            "node opened"
        );
        Ok(node)
    }

    pub fn id(&self) -> u64 {
        self.config.id
    }

    /// The placement as this node last learned it.
    pub fn placement(&self) -> Arc<Placement> {
        self.placement.read().clone()
    }

    /// The Raft instance of a group hosted here.
    pub fn raft(&self, group: u64) -> Option<Raft<TypeConfig>> {
        self.groups
            .read()
            .get(&group)
            .map(|(h, _)| h.raft().clone())
    }

    /// Waits until a Raft group hosted here stops on an error (openraft's
    /// `Fatal`: a storage error, a panic; not a requested stop) and says
    /// which and why. Such a group serves nothing until the node restarts
    /// and reopens its storage (RocksDB refuses every write after a
    /// background error), so the daemon exits for its service manager to
    /// restart it.
    pub async fn group_failure(&self) -> String {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let rafts: Vec<(u64, Raft<TypeConfig>)> = self
                .groups
                .read()
                .iter()
                .map(|(g, (h, _))| (*g, h.raft().clone()))
                .collect();
            for (group, raft) in rafts {
                if let Err(e) = &raft.metrics().borrow().running_state {
                    if !matches!(e, openraft::error::Fatal::Stopped) {
                        return format!("group {group} stopped: {e}");
                    }
                }
            }
        }
    }

    /// This node's replica of a shard.
    pub fn shard(&self, shard: ShardId) -> Option<Arc<ShardGroup>> {
        match self.groups.read().get(&shard_group(shard)) {
            Some((Hosted::Shard(g), _)) => Some(g.clone()),
            _ => None,
        }
    }

    /// This node's metadata replica, when it holds one.
    pub(crate) fn meta_handle(&self) -> Option<MetaHandle> {
        match self.groups.read().get(&META_GROUP) {
            Some((Hosted::Meta(_, h), _)) => Some(h.clone()),
            _ => None,
        }
    }

    /// The shard replicas hosted here.
    pub fn shard_groups(&self) -> Vec<Arc<ShardGroup>> {
        self.groups
            .read()
            .values()
            .filter_map(|(h, _)| match h {
                Hosted::Shard(g) => Some(g.clone()),
                Hosted::Meta(..) => None,
            })
            .collect()
    }

    /// The metadata this node has applied (None when it holds no replica).
    pub fn meta_state(&self) -> Option<crate::meta::MetaState> {
        self.meta_handle().map(|h| h.state())
    }

    /// `f` of this node's metadata replica (None without one), without
    /// copying it.
    pub fn with_meta<R>(&self, f: impl FnOnce(&crate::meta::MetaState) -> R) -> Option<R> {
        self.meta_handle().map(|h| h.with_state(f))
    }

    /// Whether `node` was removed from the cluster.
    pub fn is_removed(&self, node: u64) -> bool {
        self.removed.read().contains(&node)
    }

    fn members_of(&self, placement: &Placement, group: u64) -> BTreeMap<u64, BasicNode> {
        placement
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
    /// records the placement in the metadata group. Only a node that formed
    /// the cluster from its `peers` does so, and only for a group the
    /// placement still gives the members it was formed with.
    pub async fn bootstrap(self: &Arc<Self>) {
        let me = self.id();
        let initial = (self.formed && !self.config.peers.is_empty()).then(|| {
            Placement::new(
                self.config.peers.iter().map(|p| p.id).collect(),
                self.config.shards(),
                self.config.replicas,
            )
        });
        let current = self.placement();
        if let Some(initial) = &initial {
            for group in self.hosted() {
                if initial.preferred(group) != me
                    || initial.members(group) != current.members(group)
                {
                    continue;
                }
                let Some(raft) = self.raft(group) else {
                    continue;
                };
                match raft.is_initialized().await {
                    Ok(false) => {
                        if let Err(e) = raft.initialize(self.members_of(initial, group)).await {
                            tracing::warn!(node = me, group, error = %e, "initialize");
                        }
                    }
                    Ok(true) => {}
                    Err(e) => tracing::warn!(node = me, group, error = %e, "is_initialized"),
                }
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
        if let Some(initial) = initial.filter(|p| p.preferred(META_GROUP) == me) {
            let node = self.clone();
            tokio::spawn(async move {
                let nodes: BTreeMap<u64, String> = initial
                    .nodes()
                    .iter()
                    .map(|&n| (n, node.peers.addr(n).unwrap_or_default()))
                    .collect();
                let cmd = MetaCommand::Init {
                    placement: initial,
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
        tokio::spawn(self.clone().follow_placement());
        tokio::spawn(self.clone().drive_placement());
    }

    /// The groups hosted here, in id order.
    pub fn hosted(&self) -> Vec<u64> {
        self.groups.read().keys().copied().collect()
    }

    /// The bearer token clients must send (the node's own connections as
    /// a client send it too). Never log it.
    pub fn client_token(&self) -> Option<String> {
        self.token.clone()
    }

    /// The address clients reach this node at.
    /// The source address of this node's connections (node.toml
    /// `source_address`), for the connections its workers make.
    pub fn source_address(&self) -> Option<std::net::IpAddr> {
        self.config.source_address
    }

    pub fn endpoint(&self) -> String {
        self.peers
            .addr(self.id())
            .unwrap_or_else(|| self.config.listen.to_string())
    }

    /// Whether this node leads the metadata group now.
    pub fn is_meta_leader(&self) -> bool {
        self.raft(META_GROUP)
            .is_some_and(|raft| raft.metrics().borrow().current_leader == Some(self.id()))
            && !self.yielding.lock().contains(&META_GROUP)
    }
}

/// Checks the stored identity against the configuration: the node id (when
/// the config names one), shards and replicas must match. The peer list
/// may differ: members join and leave, and the stored id stays.
fn check_identity(
    config: &NodeConfig,
    have: &ClusterIdentity,
    path: &Path,
) -> Result<(), NodeError> {
    // A joined node took the cluster's shards and replicas from it.
    if (config.id != 0 && config.id != have.node)
        || (!have.joined
            && (config.shards.is_some_and(|s| s != have.shards)
                || config.replicas != have.replicas))
    {
        return Err(data_dir_error(
            path,
            format!(
                "belongs to node {} of cluster {:016x} with {} shards and {} replicas; \
                 the configuration says node {}, {} shards, {} replicas",
                have.node,
                have.cluster_id,
                have.shards,
                have.replicas,
                config.id,
                config.shards(),
                config.replicas
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config that leaves `shards` out takes the stored identity's (a
    /// cluster formed under an older default keeps starting); one that
    /// names another shard space is refused, naming both.
    #[test]
    fn unset_shards_take_the_stored_identity() {
        let mut config: crate::config::NodeConfig = toml::from_str(
            "id = 1\nlisten = \"127.0.0.1:7070\"\ndata_dir = \"/tmp/x\"\npeers = [{ id = 1, addr = \"127.0.0.1:7070\" }]\n",
        )
        .unwrap();
        let have = ClusterIdentity {
            cluster_id: 7,
            node: 1,
            shards: 64,
            replicas: 3,
            joined: false,
        };
        let path = Path::new("/tmp/x/cluster.json");
        assert_eq!(config.shards, None);
        check_identity(&config, &have, path).unwrap();
        config.shards = Some(64);
        check_identity(&config, &have, path).unwrap();
        config.shards = Some(16);
        let e = check_identity(&config, &have, path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("with 64 shards") && e.contains("16 shards"),
            "{e}"
        );
    }
}
