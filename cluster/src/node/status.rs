//! What a node reports about itself, and its shutdown.

use super::ClusterNode;
use crate::placement::META_GROUP;
use futures::future::join_all;
use openraft::{Raft, ServerState};
use petuum_proto::v1::{GroupInfo, NodeInfo, ShardReplicas, StatusReply};
use petuum_proto::PROTOCOL_VERSION;
use petuum_storage::TypeConfig;

impl ClusterNode {
    /// Status of this node and its groups.
    pub fn status(&self) -> StatusReply {
        let (states, retiring) = self
            .with_meta(|m| (m.node_states.clone(), m.retiring.clone()))
            .unwrap_or_default();
        let placement = self.placement();
        let mut groups = Vec::new();
        for (group, raft) in self.groups() {
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
                last_log: m.last_log_index.unwrap_or(0),
                purged: m.purged.map_or(0, |l| l.index),
            });
        }
        let all: Vec<u64> = placement.all_groups().collect();
        StatusReply {
            node: self.id(),
            cluster: self.cluster_id,
            shards: placement.shards(),
            replicas: placement.replicas(),
            nodes: placement
                .nodes()
                .iter()
                .map(|&n| NodeInfo {
                    id: n,
                    addr: self.peers.addr(n).unwrap_or_default(),
                    state: states.get(&n).map_or("unknown", |s| s.name()).to_string(),
                    retiring: retiring.get(&n).map_or("", |r| r.name()).to_string(),
                    replicas: all
                        .iter()
                        .filter(|&&g| placement.members(g).contains(&n))
                        .count() as u32,
                    preferred: all
                        .iter()
                        .filter(|&&g| g != META_GROUP && placement.preferred(g) == n)
                        .count() as u32,
                })
                .collect(),
            groups,
            protocol_version: PROTOCOL_VERSION,
            placement: (0..placement.shards())
                .map(|s| ShardReplicas {
                    shard: s,
                    nodes: placement.replicas_of(s),
                })
                .collect(),
            meta_voters: placement.meta_voters(),
        }
    }

    /// Stops every Raft group.
    pub async fn shutdown(&self) {
        let all: Vec<Raft<TypeConfig>> = self.groups().into_iter().map(|(_, r)| r).collect();
        join_all(all.into_iter().map(|r| async move {
            let _ = r.shutdown().await;
        }))
        .await;
    }
}
