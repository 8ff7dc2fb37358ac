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

/// A leader that sends a snapshot again from its start under the same id
/// (its first transfer failed part way, and it read the snapshot again:
/// the parts attached to a snapshot as it leaves can change between two
/// reads, so the bytes may differ, in length too) must have the follower
/// install exactly the second transfer. openraft 0.9.25 kept the first
/// transfer's buffer and wrote the second over it from offset 0: a longer
/// first transfer left its tail behind the second, the install found the
/// snapshot's checksum wrong, and the group's core stopped (the node
/// exited): seen in a chaos run ("corrupt snapshot ... checksum mismatch
/// ... (truncated or altered)" on a node receiving a 15 MB snapshot).
/// And a transfer that arrives corrupt is refused to its sender without
/// stopping the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_sent_again_from_its_start_is_installed_as_sent_the_second_time() {
    use openraft::{SnapshotMeta, Vote};
    // The snapshot: a state machine of its own, entries applied by hand.
    let src = tempfile::tempdir().unwrap();
    let (_db, sm) = open(src.path(), 3);
    let mut next = 0;
    apply(&sm, &mut next, setup(2, false, 0));
    for clock in 0..3 {
        for worker in 0..2 {
            apply(&sm, &mut next, vec![batch(worker, clock, 2.0)]);
        }
    }
    let (meta, bytes): (SnapshotMeta<u64, BasicNode>, Vec<u8>) = sm.encode_snapshot().unwrap();
    let want = row0(&sm, false);
    // A fresh node receives it from a leader of term 5 (node 9).
    let dir = tempfile::tempdir().unwrap();
    let (raft, handle) = start(dir.path()).await;
    let vote = Vote::new_committed(5, 9);
    // Chunks small enough that each transfer takes several.
    let chunk = 40;
    let send = |data: &[u8], offset: usize, done: bool| InstallSnapshotRequest::<TypeConfig> {
        vote,
        meta: meta.clone(),
        offset: offset as u64,
        data: data.to_vec(),
        done,
    };
    // The first transfer: longer (other parts attached), cut off before
    // its end.
    let mut first = bytes.clone();
    first.extend_from_slice(&[7u8; 3000]);
    for (i, c) in first.chunks(chunk).enumerate() {
        raft.install_snapshot(send(c, i * chunk, false))
            .await
            .unwrap();
    }
    // A whole transfer whose bytes are wrong (a peer speaking garbage, or
    // a transfer assembled wrong): refused to the sender, and the group
    // goes on (it stopped its Raft core, and the node, before).
    let mut bad = bytes.clone();
    bad[bytes.len() / 2] ^= 0x40;
    let n = bad.chunks(chunk).count();
    let mut refused = None;
    for (i, c) in bad.chunks(chunk).enumerate() {
        if let Err(e) = raft.install_snapshot(send(c, i * chunk, i + 1 == n)).await {
            refused = Some((i, e.to_string()));
        }
    }
    let (at, why) = refused.expect("a corrupt snapshot was accepted");
    assert_eq!(at + 1, n, "refused before its last chunk: {why}");
    assert!(
        why.contains("received snapshot refused") && why.contains("checksum"),
        "{why}"
    );
    // The second, whole.
    let n = bytes.chunks(chunk).count();
    for (i, c) in bytes.chunks(chunk).enumerate() {
        raft.install_snapshot(send(c, i * chunk, i + 1 == n))
            .await
            .unwrap_or_else(|e| panic!("chunk {i} of {n}: {e}"));
    }
    raft.wait(WAIT)
        .snapshot(meta.last_log_id.unwrap(), "installed")
        .await
        .unwrap();
    assert_eq!(row(&handle), want);
    raft.shutdown().await.unwrap();
}
