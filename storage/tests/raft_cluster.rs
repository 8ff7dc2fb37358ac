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
    NodeDb, RaftLogStore, ShardHandle, ShardStateMachine, StorageConfig, TypeConfig,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Router = Arc<Mutex<BTreeMap<u64, Raft<TypeConfig>>>>;

struct Net {
    router: Router,
    target: u64,
}

impl Net {
    fn peer(&self) -> Option<Raft<TypeConfig>> {
        self.router.lock().unwrap().get(&self.target).cloned()
    }
}

fn unreachable<E: std::error::Error>() -> RPCError<u64, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other("no such node")))
}

struct NetFactory(Router);

impl RaftNetworkFactory<TypeConfig> for NetFactory {
    type Network = Net;
    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Net {
        Net {
            router: self.0.clone(),
            target,
        }
    }
}

impl RaftNetwork<TypeConfig> for Net {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let Some(peer) = self.peer() else {
            return Err(unreachable());
        };
        peer.append_entries(rpc)
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
        let Some(peer) = self.peer() else {
            return Err(unreachable());
        };
        peer.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let Some(peer) = self.peer() else {
            return Err(unreachable());
        };
        peer.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

const WAIT: Option<Duration> = Some(Duration::from_secs(20));

async fn start(id: u64, dir: &std::path::Path, router: &Router) -> (ShardHandle, Arc<NodeDb>) {
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: 400,
        // Small chunks, so a snapshot travels in several install RPCs.
        snapshot_max_chunk_size: 4096,
        ..Default::default()
    };
    let db = NodeDb::open(StorageConfig::new(dir)).unwrap();
    let log = RaftLogStore::new(db.clone(), GROUP);
    let sm = ShardStateMachine::open(db.clone(), GROUP, SHARD).unwrap();
    let handle = sm.handle();
    let raft = Raft::new(
        id,
        Arc::new(config.validate().unwrap()),
        NetFactory(router.clone()),
        log,
        sm,
    )
    .await
    .unwrap();
    router.lock().unwrap().insert(id, raft);
    (handle, db)
}

fn raft(router: &Router, id: u64) -> Raft<TypeConfig> {
    router.lock().unwrap()[&id].clone()
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
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let router: Router = Arc::new(Mutex::new(BTreeMap::new()));
    let mut handles = BTreeMap::new();
    for id in 1..=3u64 {
        handles.insert(id, start(id, dirs[id as usize - 1].path(), &router).await.0);
    }
    let members: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|id| (id, BasicNode::new(format!("n{id}"))))
        .collect();
    raft(&router, 1).initialize(members).await.unwrap();
    let m = raft(&router, 1)
        .wait(WAIT)
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .unwrap();
    let leader = raft(&router, m.current_leader.unwrap());
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
    handles.insert(4, start(4, dirs[3].path(), &router).await.0);
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

/// A leader sends its new entries to its followers while its own write of
/// them is still being synced, and counts itself towards the commit quorum
/// only once that write is on its disk (the patch to openraft 0.9 in
/// vendor/, docs/design.md). Unpatched, the first write below never
/// commits: openraft 0.9's core waits for the leader's sync before it
/// replicates anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_replicates_before_its_own_sync_and_counts_itself_only_after() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let router: Router = Arc::new(Mutex::new(BTreeMap::new()));
    let mut nodes = BTreeMap::new();
    for id in 1..=3u64 {
        nodes.insert(id, start(id, dirs[id as usize - 1].path(), &router).await);
    }
    let members: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|id| (id, BasicNode::new(format!("n{id}"))))
        .collect();
    raft(&router, 1).initialize(members).await.unwrap();
    let m = raft(&router, 1)
        .wait(WAIT)
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .unwrap();
    let l = m.current_leader.unwrap();
    let leader = raft(&router, l);
    let followers: Vec<u64> = (1..=3).filter(|&id| id != l).collect();
    for req in setup(2, false, 0) {
        assert!(leader.client_write(req).await.unwrap().data.error.is_none());
    }

    // The leader's disk finishes no sync: its two followers are the quorum.
    nodes[&l].1.hold_wal_syncs(true);
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
    nodes[&followers[0]].1.hold_wal_syncs(true);
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
    nodes[&followers[0]].1.hold_wal_syncs(false);
    let second = tokio::time::timeout(WAIT.unwrap(), pending)
        .await
        .expect("commits once a second copy is synced")
        .unwrap()
        .unwrap();
    assert!(second.data.error.is_none(), "{:?}", second.data);

    // The leader's syncs resume: everything goes on as before.
    nodes[&l].1.hold_wal_syncs(false);
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
    let want = summary(&nodes[&l].0);
    for id in followers {
        assert_eq!(summary(&nodes[&id].0), want, "replica {id}");
    }
    for id in 1..=3 {
        raft(&router, id).shutdown().await.unwrap();
    }
}
