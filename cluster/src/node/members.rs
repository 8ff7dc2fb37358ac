//! Membership on the node's side: joining a running cluster, following
//! the placement the metadata group records (addresses, members, the
//! groups to host), and opening and dropping group replicas.

use super::{data_dir_error, open_group, write_file, ClusterNode, Hosted, KnownMembers, NodeError};
use crate::config::NodeConfig;
use crate::meta::{MetaAnswer, MetaCommand};
use crate::network::{Method, Peers};
use crate::placement::{group_shard, META_GROUP};
use crate::wire::{self, DataError, DataReply, DataRequest, JoinInfo, Refusal, KIND_DATA};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a node compares its placement with the metadata's.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// How long an empty replica opened for a move may wait to be added to
/// its group before the node drops it (the move was abandoned).
const UNADDED_GRACE: Duration = Duration::from_secs(120);

/// Pseudo node id of a join address (the member's id is not known yet).
const JOIN_TARGET: u64 = u64::MAX;

/// Joins a running cluster through the first address of `join` that
/// admits this node; retries the list for up to five minutes (the members
/// may be starting too).
pub(super) async fn join(
    config: &NodeConfig,
    tls: Option<tonic::transport::ClientTlsConfig>,
    token: Option<String>,
) -> Result<JoinInfo, NodeError> {
    // One nonce per attempt to join, kept until the identity is written: a
    // join whose answer was lost gets the same id when asked again.
    let nonce_path = config.data_dir.join("join.nonce");
    let nonce = match std::fs::read_to_string(&nonce_path) {
        Ok(t) if t.trim().parse::<u64>().is_ok() => t.trim().parse().expect("checked"),
        _ => {
            let n: u64 = rand::random::<u64>() | 1;
            write_file(&nonce_path, n.to_string().as_bytes())?;
            n
        }
    };
    let req = DataRequest::Join {
        nonce,
        addr: config.advertised(),
        id: config.id,
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = String::from("no address answered");
    loop {
        for addr in &config.join {
            let peers = Peers::new(
                config.id,
                0,
                HashMap::from([(JOIN_TARGET, addr.clone())]),
                tls.clone(),
                token.clone(),
            );
            peers.set_source(config.source_address);
            let r = peers
                .call(
                    JOIN_TARGET,
                    Method::Data,
                    META_GROUP,
                    KIND_DATA,
                    wire::encode(&req),
                    Duration::from_secs(10),
                )
                .await;
            let reply = match r {
                Ok(bytes) => wire::decode::<Result<DataReply, DataError>>(&bytes, "join reply")
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string())),
                Err(e) => Err(e.to_string()),
            };
            match reply {
                Ok(DataReply::Joined(info)) => {
                    tracing::info!(
                        node = info.id,
                        cluster = format!("{:016x}", info.cluster),
                        via = %addr,
                        "joined the cluster"
                    );
                    let _ = std::fs::remove_file(&nonce_path);
                    return Ok(*info);
                }
                Ok(other) => last = format!("{addr}: unexpected reply {other:?}"),
                // A refusal that retrying cannot change (an id taken, an
                // address in use) ends the attempt.
                Err(e) if e.contains("is taken") || e.contains("belongs to member") => {
                    return Err(data_dir_error(
                        &config.data_dir,
                        format!("joining through {addr}: {e}"),
                    ));
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        if Instant::now() >= deadline {
            return Err(data_dir_error(
                &config.data_dir,
                format!("could not join through {:?}: {last}", config.join),
            ));
        }
        tracing::warn!(error = %last, "join not answered yet; retrying");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl ClusterNode {
    /// Admits a joining node (on any member; the metadata leader records
    /// it) and tells it what it needs to start.
    pub(super) async fn admit(
        &self,
        nonce: u64,
        addr: String,
        id: u64,
    ) -> Result<DataReply, DataError> {
        if !addr.contains(':') {
            return Err(DataError::Refused(Refusal::Invalid(format!(
                "join address `{addr}` is not host:port"
            ))));
        }
        let id = match self
            .meta_command(MetaCommand::Join { nonce, addr, id })
            .await?
        {
            MetaAnswer::Joined { id } => id,
            other => {
                return Err(DataError::Unavailable(format!(
                    "unexpected join answer {other:?}"
                )))
            }
        };
        // The answer is committed; this node's view may lag it a moment.
        for _ in 0..50 {
            let meta = self.meta_active().await?;
            if let Some(p) = meta.placement.filter(|p| p.nodes().contains(&id)) {
                return Ok(DataReply::Joined(Box::new(JoinInfo {
                    id,
                    cluster: self.cluster_id,
                    shards: p.shards(),
                    replicas: p.replicas(),
                    placement: p,
                    nodes: meta.nodes.into_iter().collect(),
                })));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(DataError::Unavailable(
            "the join is recorded but not yet visible here; ask again".into(),
        ))
    }

    /// Hosts an empty replica of `group` (to be added to the group as a
    /// learner), unless it is hosted already.
    pub(crate) async fn host_group(&self, group: u64) -> Result<(), DataError> {
        let placement = self.placement();
        if group_shard(group).is_some_and(|s| s >= placement.shards()) {
            return Err(DataError::Refused(Refusal::Invalid(format!(
                "group {group} does not exist ({} shards)",
                placement.shards()
            ))));
        }
        if self.is_stopping() {
            return Err(DataError::Refused(Refusal::Busy(format!(
                "node {} is stopping",
                self.id()
            ))));
        }
        let _one = self.opening.lock().await;
        let stale = match self.groups.read().get(&group) {
            // A replica its group removed (it may never have heard): start
            // afresh rather than rejoin with its old log.
            Some((h, _)) => {
                let m = h.raft().metrics().borrow().membership_config.clone();
                let me = self.id();
                if super::lists(m.membership(), me) || m.log_id().is_none() {
                    return Ok(());
                }
                Some(h.clone())
            }
            None => None,
        };
        if let Some(old) = stale {
            self.groups.write().remove(&group);
            let _ = old.raft().shutdown().await;
            self.delete_group_state(group).await?;
        }
        let hosted = open_group(
            self.id(),
            group,
            self.db.clone(),
            self.raft_config.clone(),
            self.peers.clone(),
        )
        .await
        .map_err(|e| DataError::Unavailable(e.to_string()))?;
        let raft = hosted.raft().clone();
        self.groups.write().insert(group, (hosted, Instant::now()));
        self.watch_election(group, raft);
        tracing::info!(node = self.id(), group, "hosting a new replica");
        Ok(())
    }

    /// Deletes a stopped replica's stored state (off the async threads).
    async fn delete_group_state(&self, group: u64) -> Result<(), DataError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.delete_group(group))
            .await
            .map_err(|e| DataError::Unavailable(e.to_string()))?
            .map_err(|e| DataError::Unavailable(e.to_string()))
    }

    /// Stops this node's replica of `group` and deletes its state.
    pub(crate) async fn drop_group(&self, group: u64) -> Result<(), DataError> {
        let _one = self.opening.lock().await;
        let Some((hosted, _)) = self.groups.write().remove(&group) else {
            return Ok(());
        };
        let _ = hosted.raft().shutdown().await;
        self.delete_group_state(group).await?;
        tracing::info!(node = self.id(), group, "replica dropped: the group moved");
        Ok(())
    }

    /// Follows the metadata: the placement, members' addresses and removed
    /// nodes; hosts the groups the placement gives this node and drops the
    /// ones that left it (once the group's own membership no longer lists
    /// it). Saves what it learned for the next start.
    pub(super) async fn follow_placement(self: Arc<Self>) {
        let me = self.id();
        let known_path = self.config.data_dir.join("members.json");
        let mut saved: Option<(Arc<crate::placement::Placement>, BTreeMap<u64, String>)> = None;
        loop {
            tokio::time::sleep(FOLLOW_EVERY).await;
            if self.is_stopping() {
                return;
            }
            let Ok(meta) = self.meta_active().await else {
                continue;
            };
            let Some(placement) = meta.placement.clone() else {
                continue;
            };
            for (&n, addr) in &meta.nodes {
                if n != me && self.peers.addr(n).as_deref() != Some(addr.as_str()) {
                    self.peers.set_addr(n, addr.clone());
                }
            }
            *self.removed.write() = meta.removed.clone();
            let placement = Arc::new(placement);
            if *self.placement() != *placement {
                *self.members.write() = placement.nodes().to_vec();
                *self.placement.write() = placement.clone();
            }
            if saved
                .as_ref()
                .is_none_or(|(p, a)| **p != *placement || *a != meta.nodes)
            {
                let known = KnownMembers {
                    placement: (*placement).clone(),
                    addrs: meta.nodes.clone(),
                };
                let (path, bytes) = (
                    known_path.clone(),
                    serde_json::to_vec_pretty(&known).expect("plain struct"),
                );
                match tokio::task::spawn_blocking(move || write_file(&path, &bytes)).await {
                    Ok(Ok(())) => saved = Some((placement.clone(), meta.nodes.clone())),
                    Ok(Err(e)) => tracing::warn!(node = me, error = %e, "saving the member list"),
                    Err(e) => tracing::warn!(node = me, error = %e, "saving the member list"),
                }
            }
            if meta.removed.contains(&me) {
                tracing::warn!(
                    node = me,
                    "this node was removed from the cluster; it serves nothing (stop it)"
                );
                continue;
            }
            // Groups placed here but not hosted (a restart that lost a
            // race with a move): host them.
            let mine: BTreeSet<u64> = placement.groups_of(me).into_iter().collect();
            for &g in &mine {
                if !self.groups.read().contains_key(&g) {
                    let _ = self.host_group(g).await;
                }
            }
            // Replicas opened for a move that never came (the driver gave
            // up before adding them) are dropped after a while. Any other
            // replica is dropped only at the driver's word (`DropGroup`),
            // which it gives once the group's leader no longer counts it:
            // this node's own view may lag (a new replica installs a
            // snapshot whose membership predates its own addition), and
            // deleting a replica that is in fact a voter loses entries the
            // group counted on.
            let others: Vec<(u64, Hosted, Instant)> = self
                .groups
                .read()
                .iter()
                .filter(|(g, _)| !mine.contains(g))
                .map(|(&g, (h, at))| (g, h.clone(), *at))
                .collect();
            for (g, hosted, opened_at) in others {
                let initialized = hosted
                    .raft()
                    .metrics()
                    .borrow()
                    .membership_config
                    .log_id()
                    .is_some();
                let gone = !initialized && opened_at.elapsed() > UNADDED_GRACE;
                if gone {
                    let _ = self.drop_group(g).await;
                }
            }
        }
    }
}
