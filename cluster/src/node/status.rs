//! What a node reports about itself, and its shutdown.

use super::ClusterNode;
use crate::placement::{shard_group, META_GROUP};
use futures::future::join_all;
use openraft::{Raft, ServerState};
use petuum_proto::v1::{GroupInfo, NodeInfo, StatusReply};
use petuum_proto::PROTOCOL_VERSION;
use petuum_storage::TypeConfig;

impl ClusterNode {
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
