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

async fn start(id: u64, dir: &std::path::Path, router: &Router) -> ShardHandle {
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
    let sm = ShardStateMachine::open(db, GROUP, SHARD).unwrap();
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
    handle
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
        handles.insert(id, start(id, dirs[id as usize - 1].path(), &router).await);
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
    handles.insert(4, start(4, dirs[3].path(), &router).await);
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
