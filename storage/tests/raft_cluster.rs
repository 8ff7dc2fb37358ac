//! Three replicas of a shard under openraft over an in-process network; a
//! fourth joins after the leader purged its log, so it must install the
//! leader's snapshot (this crate's format) and then follow the log.

mod common;
use common::*;
use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Config, Raft};
use petuum_storage::{
    tombstone, NodeDb, RaftLogStore, ShardHandle, ShardStateMachine, StorageConfig, TypeConfig,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Each node's replica and its database (whose tombstones answer for a
/// replica dropped before, as a node's Raft service does).
type Router = Arc<Mutex<BTreeMap<u64, (Raft<TypeConfig>, Arc<NodeDb>)>>>;

/// Nodes cut off from the others (both ways).
type Blocked = Arc<Mutex<std::collections::BTreeSet<u64>>>;

struct Net {
    router: Router,
    me: u64,
    target: u64,
    blocked: Blocked,
}

impl Net {
    fn peer(&self) -> Option<(Raft<TypeConfig>, Arc<NodeDb>)> {
        let cut = {
            let b = self.blocked.lock().unwrap();
            b.contains(&self.me) || b.contains(&self.target)
        };
        if cut {
            return None;
        }
        self.router.lock().unwrap().get(&self.target).cloned()
    }
}

fn unreachable<E: std::error::Error>() -> RPCError<u64, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other("no such node")))
}

struct NetFactory {
    router: Router,
    me: u64,
    blocked: Blocked,
}

impl RaftNetworkFactory<TypeConfig> for NetFactory {
    type Network = Net;
    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Net {
        Net {
            router: self.router.clone(),
            me: self.me,
            target,
            blocked: self.blocked.clone(),
        }
    }
}

impl RaftNetwork<TypeConfig> for Net {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let Some((peer, db)) = self.peer() else {
            return Err(unreachable());
        };
        tombstone::append_entries(&db, GROUP, &peer, rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        let Some((peer, db)) = self.peer() else {
            return Err(unreachable());
        };
        tombstone::install_snapshot(&db, GROUP, &peer, rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let Some((peer, db)) = self.peer() else {
            return Err(unreachable());
        };
        tombstone::vote(&db, GROUP, &peer, rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

const WAIT: Option<Duration> = Some(Duration::from_secs(20));

async fn start(id: u64, dir: &std::path::Path, router: &Router, blocked: &Blocked) -> ShardHandle {
    let db = NodeDb::open(StorageConfig::new(dir)).unwrap();
    start_on(id, db, router, blocked).await
}

/// Starts node `id`'s replica on an open database.
async fn start_on(id: u64, db: Arc<NodeDb>, router: &Router, blocked: &Blocked) -> ShardHandle {
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: 400,
        // Small chunks, so a snapshot travels in several install RPCs.
        snapshot_max_chunk_size: 4096,
        ..Default::default()
    };
    let log = RaftLogStore::new(db.clone(), GROUP);
    let sm = ShardStateMachine::open(db.clone(), GROUP, SHARD).unwrap();
    let handle = sm.handle();
    let raft = Raft::new(
        id,
        Arc::new(config.validate().unwrap()),
        NetFactory {
            router: router.clone(),
            me: id,
            blocked: blocked.clone(),
        },
        log,
        sm,
    )
    .await
    .unwrap();
    router.lock().unwrap().insert(id, (raft, db));
    handle
}

fn raft(router: &Router, id: u64) -> Raft<TypeConfig> {
    router.lock().unwrap()[&id].0.clone()
}

/// Nodes 1 to `n` started on a network of their own, each on its own
/// directory: the directories, the network, its cut links, and each
/// node's replica handle.
async fn start_nodes(
    n: u64,
) -> (
    Vec<tempfile::TempDir>,
    Router,
    Blocked,
    BTreeMap<u64, ShardHandle>,
) {
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let router: Router = Arc::new(Mutex::new(BTreeMap::new()));
    let blocked = Blocked::default();
    let mut handles = BTreeMap::new();
    for id in 1..=n {
        let h = start(id, dirs[id as usize - 1].path(), &router, &blocked).await;
        handles.insert(id, h);
    }
    (dirs, router, blocked, handles)
}

/// Forms the group of nodes 1, 2 and 3; returns its first leader.
async fn form_123(router: &Router) -> u64 {
    let members: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|id| (id, BasicNode::new(format!("n{id}"))))
        .collect();
    raft(router, 1).initialize(members).await.unwrap();
    raft(router, 1)
        .wait(WAIT)
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .unwrap()
        .current_leader
        .unwrap()
}

/// Rows of table 1 and the job's clocks, in both states of a replica.
fn summary(h: &ShardHandle) -> String {
    h.with_replica(|r| {
        let mut out = String::new();
        for s in [r.data.current(), r.data.base()] {
            for row in s.row_ids(1) {
                out += &format!("{row}:{:?};", s.read(1, row).unwrap());
            }
            out += &format!("{:?}|", s.job(JOB).map(|j| j.applied()).ok());
        }
        out
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_replica_catches_up_from_a_snapshot_then_the_log() {
    let (_dirs, router, blocked, mut handles) = start_nodes(3).await;
    let dir4 = tempfile::tempdir().unwrap();
    let leader = raft(&router, form_123(&router).await);
    for req in setup(3, false, 2) {
        assert!(leader.client_write(req).await.unwrap().data.error.is_none());
    }
    for clock in 0..6u64 {
        for worker in 0..3 {
            let v = (clock * 10 + worker as u64) as f64;
            let resp = leader.client_write(batch(worker, clock, v)).await.unwrap();
            assert!(resp.data.error.is_none(), "{:?}", resp.data);
        }
    }
    // Worker 0 runs ahead: the snapshot carries a pending clock.
    leader.client_write(batch(0, 6, 0.5)).await.unwrap();
    leader.trigger().snapshot().await.unwrap();
    let snap = leader
        .wait(WAIT)
        .metrics(|m| m.snapshot.is_some(), "snapshot")
        .await
        .unwrap()
        .snapshot
        .unwrap();
    leader.trigger().purge_log(snap.index).await.unwrap();
    leader
        .wait(WAIT)
        .purged(Some(snap), "purged")
        .await
        .unwrap();
    let last = leader
        .client_write(batch(1, 6, 0.25))
        .await
        .unwrap()
        .log_id
        .index;

    // Node 4 joins: the entries it needs are purged, so it gets the snapshot.
    handles.insert(4, start(4, dir4.path(), &router, &blocked).await);
    leader
        .add_learner(4, BasicNode::new("n4"), true)
        .await
        .unwrap();
    for id in 1..=4u64 {
        raft(&router, id)
            .wait(WAIT)
            .applied_index_at_least(Some(last), "caught up")
            .await
            .unwrap();
    }
    let want = summary(&handles[&1]);
    assert!(want.contains("Some([7, 7, 6])"), "{want}");
    for id in 2..=4 {
        assert_eq!(summary(&handles[&id]), want, "replica {id}");
    }
    let m4 = raft(&router, 4).metrics().borrow().clone();
    assert_eq!(
        m4.snapshot.map(|s| s.index),
        Some(snap.index),
        "node 4 installed the snapshot"
    );
    // And it keeps following the log.
    let last = leader
        .client_write(batch(2, 6, 1.0))
        .await
        .unwrap()
        .log_id
        .index;
    raft(&router, 4)
        .wait(WAIT)
        .applied_index_at_least(Some(last), "follows")
        .await
        .unwrap();
    assert_eq!(summary(&handles[&4]), summary(&handles[&1]));
    for id in 1..=4 {
        raft(&router, id).shutdown().await.unwrap();
    }
}

/// Nodes 1 to 5 started, the group formed on 1, 2 and 3 with a job set up;
/// returns the nodes' directories, the network, and the group's leader.
async fn five_nodes_group_123() -> (Vec<tempfile::TempDir>, Router, Blocked, u64) {
    let (dirs, router, blocked, _) = start_nodes(5).await;
    let l = form_123(&router).await;
    for req in setup(2, false, 0) {
        raft(&router, l).client_write(req).await.unwrap();
    }
    (dirs, router, blocked, l)
}

/// Drops node `id`'s replica as a node does when its group moved away
/// (`DropGroup`, or `host_group`'s stale path): stops it, deletes its state
/// (keeping the tombstone) and hosts an empty replica on the same database.
async fn drop_and_host_afresh(router: &Router, blocked: &Blocked, id: u64) {
    let (old, db) = router.lock().unwrap().remove(&id).unwrap();
    old.shutdown().await.unwrap();
    drop(old);
    db.delete_group(GROUP).unwrap();
    start_on(id, db, router, blocked).await;
    let m = raft(router, id).metrics().borrow().clone();
    assert_eq!(m.last_log_index, None, "node {id} starts afresh");
    assert!(m.membership_config.log_id().is_none());
}

/// Cuts node `stale` off while the group moves from {1, 2, 3} to
/// {other, 4, 5} and commits; returns the committed log id and `fresh`,
/// the member of {1, 2, 3} that is neither (its replica is then dropped).
async fn move_away_from(
    router: &Router,
    blocked: &Blocked,
    leader: u64,
    stale: u64,
) -> (openraft::LogId<u64>, u64) {
    let fresh = (1..=3).find(|&i| i != leader && i != stale).unwrap();
    blocked.lock().unwrap().insert(stale);
    let l = raft(router, leader);
    for n in [4, 5] {
        l.add_learner(n, BasicNode::new(format!("n{n}")), true)
            .await
            .unwrap();
    }
    l.change_membership([leader, 4, 5], false).await.unwrap();
    for clock in 0..5 {
        l.client_write(batch(0, clock, 1.0)).await.unwrap();
    }
    let committed = l.metrics().borrow().last_applied.unwrap();
    (committed, fresh)
}

/// The hazard behind a chaos failure (docs/performance.md, "A leader's sync
/// beside its followers'"): a replica dropped from its group and later
/// hosted afresh on the same node has an empty log and no vote. A node cut
/// off while the group moved away from it still holds the old
/// configuration; back, it campaigns, and without the tombstone the fresh
/// replica's vote let it lead without the committed entries (two leaders,
/// committed entries overwritten). The tombstone answers for the dropped
/// replica: the stale candidate's log is behind what it had seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_hosted_afresh_does_not_elect_a_stale_candidate() {
    let (_dirs, router, blocked, l) = five_nodes_group_123().await;
    let stale = (1..=3).find(|&i| i != l).unwrap();
    let (committed, fresh) = move_away_from(&router, &blocked, l, stale).await;
    drop_and_host_afresh(&router, &blocked, fresh).await;
    // The stale node comes back and campaigns with its old configuration.
    blocked.lock().unwrap().remove(&stale);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = raft(&router, stale).metrics().borrow().clone();
    assert!(
        m.current_term > 1,
        "node {stale} campaigned (term {})",
        m.current_term
    );
    assert!(
        !(m.state == openraft::ServerState::Leader && m.last_log_index < Some(committed.index)),
        "node {stale} leads term {} with its log at {:?}, below the committed {committed}",
        m.current_term,
        m.last_log_index
    );
    let f = raft(&router, fresh).metrics().borrow().clone();
    assert!(
        f.vote.leader_id().node_id != stale,
        "node {fresh} voted for the stale node: {}",
        f.vote
    );
    // The group itself goes on.
    let w = raft(&router, l)
        .client_write(batch(1, 0, 2.0))
        .await
        .unwrap();
    assert!(w.log_id.index > committed.index);
    for id in 1..=5 {
        let _ = raft(&router, id).shutdown().await;
    }
}

/// The same hazard from a deposed leader: cut off, it still believes it
/// leads the old configuration. Back, able to reach only the replica hosted
/// afresh, without the tombstone it had that replica acknowledge its
/// appends and committed a write beside the real group. The tombstone makes
/// the replica answer with the later term it had seen: the old leader steps
/// down and commits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_hosted_afresh_does_not_let_a_deposed_leader_commit() {
    let (_dirs, router, blocked, deposed) = five_nodes_group_123().await;
    // Cut off, the leader is replaced by one of the other two.
    blocked.lock().unwrap().insert(deposed);
    let leader = raft(&router, (1..=3).find(|&i| i != deposed).unwrap())
        .wait(WAIT)
        .metrics(
            |m| m.current_leader.is_some_and(|n| n != deposed),
            "a new leader",
        )
        .await
        .unwrap()
        .current_leader
        .unwrap();
    let (committed, fresh) = move_away_from(&router, &blocked, leader, deposed).await;
    drop_and_host_afresh(&router, &blocked, fresh).await;
    // Back, the deposed leader reaches only the fresh replica.
    {
        let mut b = blocked.lock().unwrap();
        b.remove(&deposed);
        b.insert(leader);
    }
    let d = raft(&router, deposed);
    assert_eq!(
        d.metrics().borrow().state,
        openraft::ServerState::Leader,
        "node {deposed} still believes it leads"
    );
    let write =
        tokio::time::timeout(Duration::from_secs(3), d.client_write(batch(1, 0, 9.0))).await;
    if let Ok(Ok(w)) = write {
        panic!(
            "the deposed node {deposed} committed {} beside the group (committed {committed})",
            w.log_id
        );
    }
    blocked.lock().unwrap().clear();
    for id in 1..=5 {
        let _ = raft(&router, id).shutdown().await;
    }
}

/// A leader sends its new entries to its followers while its own write of
/// them is still being synced, and counts itself towards the commit quorum
/// only once that write is on its disk (the patch to openraft 0.9 in
/// vendor/, docs/design.md). Unpatched, the first write below never
/// commits: openraft 0.9's core waits for the leader's sync before it
/// replicates anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_replicates_before_its_own_sync_and_counts_itself_only_after() {
    let (_dirs, router, _blocked, handles) = start_nodes(3).await;
    let db = |id: u64| router.lock().unwrap()[&id].1.clone();
    let l = form_123(&router).await;
    let leader = raft(&router, l);
    let followers: Vec<u64> = (1..=3).filter(|&id| id != l).collect();
    for req in setup(2, false, 0) {
        assert!(leader.client_write(req).await.unwrap().data.error.is_none());
    }

    // The leader's disk finishes no sync: its two followers are the quorum.
    db(l).hold_wal_syncs(true);
    let first = tokio::time::timeout(WAIT.unwrap(), leader.client_write(batch(0, 0, 1.0)))
        .await
        .expect("a write commits on the followers while the leader's sync is held")
        .unwrap();
    assert!(first.data.error.is_none(), "{:?}", first.data);
    for id in 1..=3 {
        raft(&router, id)
            .wait(WAIT)
            .applied_index_at_least(Some(first.log_id.index), "applied")
            .await
            .unwrap();
    }

    // And one follower's too: one synced copy is no quorum, whatever the
    // leader holds unsynced.
    db(followers[0]).hold_wal_syncs(true);
    let pending = tokio::spawn({
        let leader = leader.clone();
        async move { leader.client_write(batch(1, 0, 2.0)).await }
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !pending.is_finished(),
        "committed with one synced copy of three"
    );
    for id in 1..=3 {
        let applied = raft(&router, id).metrics().borrow().last_applied;
        assert_eq!(
            applied,
            Some(first.log_id),
            "node {id} applied past the quorum"
        );
    }
    db(followers[0]).hold_wal_syncs(false);
    let second = tokio::time::timeout(WAIT.unwrap(), pending)
        .await
        .expect("commits once a second copy is synced")
        .unwrap()
        .unwrap();
    assert!(second.data.error.is_none(), "{:?}", second.data);

    // The leader's syncs resume: everything goes on as before.
    db(l).hold_wal_syncs(false);
    let last = leader
        .client_write(batch(0, 1, 4.0))
        .await
        .unwrap()
        .log_id
        .index;
    for id in 1..=3 {
        raft(&router, id)
            .wait(WAIT)
            .applied_index_at_least(Some(last), "applied")
            .await
            .unwrap();
    }
    let want = summary(&handles[&l]);
    for id in followers {
        assert_eq!(summary(&handles[&id]), want, "replica {id}");
    }
    for id in 1..=3 {
        raft(&router, id).shutdown().await.unwrap();
    }
}
