//! Where each shard's replicas live, and which node should lead it.
//!
//! Placement is a pure function of the cluster's node ids, shard count and
//! replication factor, so every node computes the same answer without a
//! round trip; the metadata group stores it too (for clients and status).

use petuum_core::types::ShardId;
use serde::{Deserialize, Serialize};

/// Group id of the metadata group.
pub const META_GROUP: u64 = 0;

/// The Raft group id of a shard.
pub fn shard_group(shard: ShardId) -> u64 {
    shard as u64 + 1
}

/// The shard of a group id (`None` for the metadata group).
pub fn group_shard(group: u64) -> Option<ShardId> {
    group.checked_sub(1).map(|s| s as ShardId)
}

/// Most voters of the metadata group.
pub const MAX_META_VOTERS: usize = 5;

/// Replica placement of a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Node ids, sorted.
    nodes: Vec<u64>,
    shards: u32,
    replicas: u32,
}

impl Placement {
    pub fn new(mut nodes: Vec<u64>, shards: u32, replicas: u32) -> Self {
        nodes.sort_unstable();
        nodes.dedup();
        assert!(!nodes.is_empty() && shards > 0 && replicas > 0);
        Placement {
            nodes,
            shards,
            replicas,
        }
    }

    pub fn nodes(&self) -> &[u64] {
        &self.nodes
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// Replicas per shard actually used: `replicas`, or the cluster size if
    /// smaller.
    pub fn replication(&self) -> usize {
        (self.replicas as usize).min(self.nodes.len())
    }

    /// The nodes holding `shard`, its preferred leader first: consecutive
    /// nodes starting at `shard mod n`, so each node leads and holds an even
    /// share.
    pub fn replicas_of(&self, shard: ShardId) -> Vec<u64> {
        let n = self.nodes.len();
        (0..self.replication())
            .map(|k| self.nodes[(shard as usize + k) % n])
            .collect()
    }

    /// The node that should lead `shard` when it is up.
    pub fn preferred_leader(&self, shard: ShardId) -> u64 {
        self.nodes[shard as usize % self.nodes.len()]
    }

    /// Voters of the metadata group: the first (up to) five nodes.
    pub fn meta_voters(&self) -> Vec<u64> {
        self.nodes.iter().copied().take(MAX_META_VOTERS).collect()
    }

    /// Members of a group.
    pub fn members(&self, group: u64) -> Vec<u64> {
        match group_shard(group) {
            None => self.meta_voters(),
            Some(s) => self.replicas_of(s),
        }
    }

    /// The node that should lead a group.
    pub fn preferred(&self, group: u64) -> u64 {
        match group_shard(group) {
            None => self.nodes[0],
            Some(s) => self.preferred_leader(s),
        }
    }

    /// Every group `node` holds a replica of.
    pub fn groups_of(&self, node: u64) -> Vec<u64> {
        let mut out = Vec::new();
        if self.meta_voters().contains(&node) {
            out.push(META_GROUP);
        }
        for s in 0..self.shards {
            if self.replicas_of(s).contains(&node) {
                out.push(shard_group(s));
            }
        }
        out
    }

    /// A stable id of the cluster (its nodes, shards and replication): two
    /// nodes configured for different clusters refuse each other's messages.
    pub fn cluster_id(&self) -> u64 {
        let mut h = crc32c::crc32c(b"petuum-cluster-v1") as u64;
        let mut feed = |x: u64| {
            h = (h ^ x).wrapping_mul(0x100_0000_01b3);
            h ^= h >> 29;
        };
        feed(self.shards as u64);
        feed(self.replicas as u64);
        for &n in &self.nodes {
            feed(n);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaders_and_replicas_are_spread() {
        let p = Placement::new(vec![3, 1, 2], 64, 3);
        let mut leads = [0; 3];
        let mut holds = [0; 3];
        for s in 0..64 {
            let r = p.replicas_of(s);
            assert_eq!(r.len(), 3);
            assert_eq!(r[0], p.preferred_leader(s));
            leads[(r[0] - 1) as usize] += 1;
            for n in r {
                holds[(n - 1) as usize] += 1;
            }
        }
        assert_eq!(leads, [22, 21, 21]);
        assert_eq!(holds, [64, 64, 64]);
        let small = Placement::new(vec![1], 8, 3);
        assert_eq!(small.replicas_of(5), vec![1]);
        assert_eq!(p.groups_of(1).len(), 65);
        assert_ne!(
            p.cluster_id(),
            Placement::new(vec![1, 2], 64, 3).cluster_id()
        );
        assert_eq!(
            p.cluster_id(),
            Placement::new(vec![1, 2, 3], 64, 3).cluster_id()
        );
    }
}
