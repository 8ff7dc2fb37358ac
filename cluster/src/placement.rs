//! Where each shard's replicas live, and which node should lead it.
//!
//! A cluster's placement starts from a rule every node computes alike
//! ([`Placement::new`]: shard `s` on the `replicas` consecutive nodes from
//! `s mod n`), and from then on it is data: the metadata group records it
//! ([`crate::meta::MetaState::placement`]) and the placement driver
//! (`node/driver.rs`) changes it one replica at a time as nodes join,
//! drain, or die for good. Each node follows the recorded copy.

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
    /// Member node ids, sorted.
    nodes: Vec<u64>,
    shards: u32,
    replicas: u32,
    /// Each shard's replicas, its preferred leader first.
    groups: Vec<Vec<u64>>,
    /// Voters of the metadata group, its preferred leader first.
    meta: Vec<u64>,
}

impl Placement {
    /// The initial placement of a cluster formed from `nodes`.
    pub fn new(mut nodes: Vec<u64>, shards: u32, replicas: u32) -> Self {
        nodes.sort_unstable();
        nodes.dedup();
        assert!(!nodes.is_empty() && shards > 0 && replicas > 0);
        let n = nodes.len();
        let r = (replicas as usize).min(n);
        let groups = (0..shards as usize)
            .map(|s| (0..r).map(|k| nodes[(s + k) % n]).collect())
            .collect();
        let meta = nodes.iter().copied().take(MAX_META_VOTERS).collect();
        Placement {
            nodes,
            shards,
            replicas,
            groups,
            meta,
        }
    }

    /// A placement as recorded (what a status reply carries). Checks that
    /// every replica is a member and that there is one list per shard.
    pub fn from_parts(
        mut nodes: Vec<u64>,
        shards: u32,
        replicas: u32,
        groups: Vec<Vec<u64>>,
        meta: Vec<u64>,
    ) -> Result<Self, String> {
        nodes.sort_unstable();
        nodes.dedup();
        if shards == 0 || replicas == 0 || nodes.is_empty() {
            return Err("a placement needs nodes, shards and replicas".into());
        }
        if groups.len() != shards as usize {
            return Err(format!(
                "a placement lists {} shards of {shards}",
                groups.len()
            ));
        }
        for (s, g) in groups.iter().enumerate() {
            if g.is_empty() || g.iter().any(|n| !nodes.contains(n)) {
                return Err(format!("shard {s}: replicas {g:?} are not members"));
            }
        }
        if meta.is_empty() || meta.iter().any(|n| !nodes.contains(n)) {
            return Err(format!("metadata voters {meta:?} are not members"));
        }
        Ok(Placement {
            nodes,
            shards,
            replicas,
            groups,
            meta,
        })
    }

    pub fn nodes(&self) -> &[u64] {
        &self.nodes
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The replication factor asked for.
    pub fn replicas(&self) -> u32 {
        self.replicas
    }

    /// Replicas per shard wanted: `replicas`, or the cluster size if
    /// smaller.
    pub fn replication(&self) -> usize {
        (self.replicas as usize).min(self.nodes.len())
    }

    /// Voters the metadata group wants: up to five members.
    pub fn meta_replication(&self) -> usize {
        self.nodes.len().min(MAX_META_VOTERS)
    }

    /// The nodes holding `shard`, its preferred leader first.
    pub fn replicas_of(&self, shard: ShardId) -> Vec<u64> {
        self.groups[shard as usize].clone()
    }

    /// The node that should lead `shard` when it is up.
    pub fn preferred_leader(&self, shard: ShardId) -> u64 {
        self.groups[shard as usize][0]
    }

    /// Voters of the metadata group.
    pub fn meta_voters(&self) -> Vec<u64> {
        self.meta.clone()
    }

    /// Members of a group.
    pub fn members(&self, group: u64) -> Vec<u64> {
        match group_shard(group) {
            None => self.meta_voters(),
            Some(s) if s < self.shards => self.replicas_of(s),
            Some(_) => Vec::new(),
        }
    }

    /// The node that should lead a group.
    pub fn preferred(&self, group: u64) -> u64 {
        self.members(group).first().copied().unwrap_or(0)
    }

    /// Every group id of the cluster (the metadata group first).
    pub fn all_groups(&self) -> impl Iterator<Item = u64> {
        std::iter::once(META_GROUP).chain((0..self.shards).map(shard_group))
    }

    /// Every group `node` holds a replica of.
    pub fn groups_of(&self, node: u64) -> Vec<u64> {
        self.all_groups()
            .filter(|&g| self.members(g).contains(&node))
            .collect()
    }

    /// With `node` as a member (holding nothing yet).
    pub fn add_node(&mut self, node: u64) {
        if let Err(i) = self.nodes.binary_search(&node) {
            self.nodes.insert(i, node);
        }
    }

    /// Without `node`; refused while it still holds a replica.
    pub fn remove_node(&mut self, node: u64) -> Result<(), String> {
        let held = self.groups_of(node);
        if !held.is_empty() {
            return Err(format!(
                "node {node} still holds replicas of groups {held:?}"
            ));
        }
        self.nodes.retain(|&n| n != node);
        Ok(())
    }

    /// Records a group's replicas (preferred leader first).
    pub fn set_members(&mut self, group: u64, members: Vec<u64>) -> Result<(), String> {
        if members.is_empty() {
            return Err(format!("group {group}: no replicas"));
        }
        if let Some(n) = members.iter().find(|n| !self.nodes.contains(n)) {
            return Err(format!("group {group}: node {n} is not a member"));
        }
        let mut uniq = members.clone();
        uniq.sort_unstable();
        uniq.dedup();
        if uniq.len() != members.len() {
            return Err(format!("group {group}: replicas {members:?} repeat a node"));
        }
        match group_shard(group) {
            None => self.meta = members,
            Some(s) if s < self.shards => self.groups[s as usize] = members,
            Some(s) => return Err(format!("shard {s} is not one of {}", self.shards)),
        }
        Ok(())
    }

    /// The id a cluster formed from a `peers` list takes at bootstrap: a
    /// hash of its first nodes, shards and replication, so every node of
    /// that list picks the same one without a round trip. From then on the
    /// id is what each data directory stored (nodes join and leave; the id
    /// stays).
    pub fn bootstrap_cluster_id(&self) -> u64 {
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
            p.bootstrap_cluster_id(),
            Placement::new(vec![1, 2], 64, 3).bootstrap_cluster_id()
        );
        assert_eq!(
            p.bootstrap_cluster_id(),
            Placement::new(vec![1, 2, 3], 64, 3).bootstrap_cluster_id()
        );
    }
}
