//! Leadership: handing it off (a yield asked by a peer, a graceful stop)
//! and taking it back (the balancer).

use super::ClusterNode;
use crate::meta::{MetaCommand, NodeState};
use crate::network::Method;
use crate::placement::META_GROUP;
use crate::retry::Retry;
use crate::wire::{self, DataError, DataReply, DataRequest, Refusal, KIND_DATA};
use futures::future::join_all;
use openraft::ServerState;
use std::sync::Arc;
use std::time::Duration;

impl ClusterNode {
    /// Whether the node began to stop (see [`hand_off`](Self::hand_off)).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Hands leadership of `group` to `to`: stop heartbeats and refuse
    /// writes until the followers' leader lease runs out, so `to` (which
    /// campaigns when this returns) can win the vote.
    pub(super) async fn yield_leadership(&self, group: u64, to: u64) -> Result<(), DataError> {
        let raft = self.raft(group).ok_or(DataError::NotHere { group })?;
        let m = raft.metrics().borrow().clone();
        if m.current_leader != Some(self.id()) {
            return Err(DataError::NotLeader {
                group,
                leader: m.current_leader,
            });
        }
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|n| n == to)
        {
            return Err(DataError::Refused(Refusal::Invalid(format!(
                "node {to} is no voter of group {group}"
            ))));
        }
        if !self.yielding.lock().insert(group) {
            return Err(DataError::Refused(Refusal::Busy(
                "already handing off".into(),
            )));
        }
        tracing::info!(node = self.id(), group, to, "handing leadership off");
        raft.runtime_config().heartbeat(false);
        raft.runtime_config().elect(false);
        let lease = Duration::from_millis(self.config.raft.election_timeout_max_ms + 50);
        let restore = Duration::from_millis(self.config.raft.election_timeout_max_ms * 2);
        // The undo is scheduled before this call waits: the call is an RPC
        // handler, dropped when its caller goes away (the node taking the
        // leadership back can die mid hand-off), and an undo after the
        // wait never ran then: the group kept refusing writes with
        // heartbeats off, as leader, for good.
        let (undo_raft, yielding) = (raft.clone(), self.yielding.clone());
        tokio::spawn(async move {
            tokio::time::sleep(lease + restore).await;
            undo_raft.runtime_config().heartbeat(true);
            undo_raft.runtime_config().elect(true);
            yielding.lock().remove(&group);
        });
        tokio::time::sleep(lease).await;
        Ok(())
    }

    /// Hands leadership of `group` (led here) to voter `to`: yield, then
    /// ask `to` to campaign.
    pub(super) async fn hand_to(&self, group: u64, to: u64) -> Result<(), DataError> {
        self.yield_leadership(group, to).await?;
        self.data_call(
            to,
            &DataRequest::Elect { group },
            Duration::from_millis(500),
        )
        .await?;
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
        let ids = self.hosted();
        for &group in &ids {
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
        for &group in ids.iter().filter(|&&g| g != META_GROUP) {
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
            let mut attempts = Retry::META.within(Duration::from_secs(10)).start();
            while !attempts.expired() {
                if self.meta_command(cmd.clone()).await.is_ok() {
                    tracing::info!(node = me, "announced as leaving");
                    return;
                }
                attempts.wait().await;
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
            let voters: Vec<u64> = match self.raft(group) {
                Some(r) => r
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .collect(),
                None => Vec::new(),
            };
            for target in voters {
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
            let placement = self.placement();
            let mine: Vec<u64> = self
                .hosted()
                .into_iter()
                .filter(|&g| g != META_GROUP && placement.preferred(g) == me)
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

    /// Asks openraft for a snapshot of each shard group whose log since
    /// the last one has grown past the size rule of
    /// [`ShardHandle::snapshot_due`](petuum_storage::ShardHandle::snapshot_due)
    /// (`raft.snapshot_after_mib`), beside openraft's own count of entries:
    /// entries vary from bytes to megabytes, and a restart replays all of
    /// them.
    pub async fn schedule_snapshots(self: Arc<Self>) {
        let min_bytes = self.config.raft.snapshot_after_mib << 20;
        loop {
            // Often enough that a snapshot follows its bytes closely (two
            // atomic loads per group).
            tokio::time::sleep(Duration::from_millis(100)).await;
            if self.is_stopping() {
                return;
            }
            // Per group: its log past its bound. Per node: the groups'
            // logs together past half of the log's memtable, so that most
            // of their entries are deleted (after the snapshots) before
            // that memtable fills: when it does, every replica flushes the
            // same log at once, tens of MB each on a shared disk, and the
            // WAL syncs behind those writes stalled every group for longer
            // than an election timeout (docs/performance.md).
            let groups = self.shard_groups();
            let logs: Vec<(u64, u64)> = groups
                .iter()
                .map(|g| g.handle.log_since_snapshot())
                .collect();
            let budget =
                petuum_storage::state_machine::node_log_budget(self.db.config().write_buffer_bytes);
            let over = petuum_storage::state_machine::over_budget(&logs, budget);
            for (i, g) in groups.iter().enumerate() {
                if g.handle.snapshot_due(min_bytes) || over.contains(&i) {
                    tracing::debug!(shard = g.shard, "log past its size bound: snapshot");
                    let _ = g.raft.trigger().snapshot().await;
                }
            }
        }
    }
}

impl ClusterNode {
    /// Every group this node holds, with its Raft handle.
    pub fn groups(&self) -> Vec<(u64, openraft::Raft<petuum_storage::TypeConfig>)> {
        self.groups
            .read()
            .iter()
            .map(|(&g, (h, _))| (g, h.raft().clone()))
            .collect()
    }

    /// Logs and counts each election this node wins (one task per group,
    /// ending with the group).
    pub fn watch_elections(&self) {
        for (group, raft) in self.groups() {
            self.watch_election(group, raft);
        }
    }

    /// [`watch_elections`](Self::watch_elections) of one group.
    pub(super) fn watch_election(
        &self,
        group: u64,
        raft: openraft::Raft<petuum_storage::TypeConfig>,
    ) {
        {
            let won = self.db.metrics().group(group).elections_won;
            let me = self.id();
            // The server metrics (state, vote, leader), not the whole
            // metrics: those change with every entry appended or applied,
            // and waking this task each time put it ahead of the group's
            // replication tasks on the runtime.
            let mut rx = raft.server_metrics();
            tokio::spawn(async move {
                let mut was_leader = false;
                let mut term = 0;
                loop {
                    let (leader, now_term) = {
                        let m = rx.borrow_and_update();
                        (m.state == ServerState::Leader, m.vote.leader_id().term)
                    };
                    // A new term in which this node leads: an election won
                    // (a restart that finds itself leader of its own term
                    // counts once too).
                    if leader && (!was_leader || now_term != term) {
                        won.inc();
                        tracing::info!(node = me, group, term = now_term, "election won");
                    }
                    was_leader = leader;
                    term = now_term;
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            });
        }
    }
}
