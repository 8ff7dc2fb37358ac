//! The stores under a real openraft `Raft` (one-node group): commands are
//! committed and applied, a snapshot is built and the log purged, and after a
//! shutdown and reopen the state comes back from snapshot + log.

mod common;
use common::*;
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
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
use std::sync::Arc;
use std::time::Duration;

/// The network of a one-node group: never used.
struct NoNetwork;

fn unreachable<E: std::error::Error>() -> RPCError<u64, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other("one-node group")))
}

impl RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = NoNetwork;
    async fn new_client(&mut self, _target: u64, _node: &BasicNode) -> NoNetwork {
        NoNetwork
    }
}

impl RaftNetwork<TypeConfig> for NoNetwork {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable())
    }
}

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

async fn start(dir: &std::path::Path) -> (Raft<TypeConfig>, ShardHandle) {
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Default::default()
    };
    // A previous instance's RocksDB lock is released once its tasks end.
    let mut tries = 0;
    let db = loop {
        match NodeDb::open(StorageConfig::new(dir)) {
            Ok(db) => break db,
            Err(e) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = e;
            }
            Err(e) => panic!("reopen: {e}"),
        }
    };
    let log = RaftLogStore::new(db.clone(), GROUP);
    let sm = ShardStateMachine::open(db, GROUP, SHARD).unwrap();
    let handle = sm.handle();
    let raft = Raft::new(1, Arc::new(config.validate().unwrap()), NoNetwork, log, sm)
        .await
        .unwrap();
    (raft, handle)
}

fn row(handle: &ShardHandle) -> petuum_core::row::AnyRow {
    handle.with_current(|s| s.read(1, 0).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_group_commits_snapshots_and_recovers_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let last_index;
    {
        let (raft, handle) = start(dir.path()).await;
        raft.initialize(BTreeMap::from([(1u64, BasicNode::new("local"))]))
            .await
            .unwrap();
        raft.wait(WAIT).current_leader(1, "leader").await.unwrap();
        for req in setup(2, false, 2) {
            assert!(raft.client_write(req).await.unwrap().data.error.is_none());
        }
        let mut checkpoints = Vec::new();
        for clock in 0..4 {
            for worker in 0..2 {
                let resp = raft.client_write(batch(worker, clock, 1.0)).await.unwrap();
                assert!(resp.data.error.is_none());
                checkpoints.extend(resp.data.checkpoints);
            }
        }
        assert_eq!(checkpoints, vec![(JOB, 1), (JOB, 3)]);
        assert_eq!(row(&handle), dense(8.0, 8.0));
        raft.trigger().snapshot().await.unwrap();
        let m = raft
            .wait(WAIT)
            .metrics(|m| m.snapshot.is_some(), "snapshot built")
            .await
            .unwrap();
        let snap = m.snapshot.unwrap();
        raft.trigger().purge_log(snap.index).await.unwrap();
        raft.wait(WAIT).purged(Some(snap), "purged").await.unwrap();
        // One more entry after the snapshot: recovered from the log.
        let resp = raft.client_write(batch(0, 4, 100.0)).await.unwrap();
        last_index = resp.log_id.index;
        raft.shutdown().await.unwrap();
    }
    let (raft, handle) = start(dir.path()).await;
    raft.wait(WAIT)
        .current_leader(1, "leader again")
        .await
        .unwrap();
    raft.wait(WAIT)
        .applied_index_at_least(Some(last_index), "state recovered")
        .await
        .unwrap();
    assert_eq!(row(&handle), dense(108.0, 9.0));
    handle.with_replica(|r| {
        assert_eq!(r.data.base().read(1, 0).unwrap(), dense(8.0, 8.0));
        assert_eq!(r.data.current().job(JOB).unwrap().applied(), vec![5, 4]);
    });
    let resp = raft.client_write(batch(1, 4, 1.0)).await.unwrap();
    assert!(resp.data.error.is_none() && !resp.data.duplicate);
    assert_eq!(row(&handle), dense(109.0, 10.0));
    raft.shutdown().await.unwrap();
}
