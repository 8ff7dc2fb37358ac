//! The shard state machine on RocksDB: min-clock state, replays,
//! checkpoints and their retention, worker blobs, snapshots, restore.

mod common;
use common::*;
use openraft::storage::RaftStateMachine;
use petuum_storage::ShardRequest;

#[test]
fn base_holds_the_state_at_the_min_clock_and_checkpoints_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, sm) = open(dir.path(), 2);
    let mut next = 0;
    apply(&sm, &mut next, setup(2, false, 2));
    // Worker 0 runs two clocks ahead of worker 1 (SSP).
    let r = apply(
        &sm,
        &mut next,
        vec![batch(0, 0, 1.0), batch(0, 1, 10.0), batch(0, 2, 100.0)],
    );
    assert!(r
        .iter()
        .all(|r| r.error.is_none() && r.checkpoints.is_empty()));
    assert_eq!(row0(&sm, false), dense(111.0, 3.0));
    assert_eq!(
        row0(&sm, true),
        dense(0.0, 0.0),
        "nothing is final before worker 1 clocks"
    );
    let r = apply(&sm, &mut next, vec![batch(1, 0, 2.0)]);
    assert_eq!(r[0].min_clock, Some(1));
    assert_eq!(
        row0(&sm, true),
        dense(3.0, 2.0),
        "state at min clock 1 = clock 0 of both"
    );
    let r = apply(&sm, &mut next, vec![batch(1, 1, 20.0)]);
    // Clocks 0 and 1 are final: with checkpoint_every = 2 that is clock 1.
    assert_eq!(r[0].checkpoints, vec![(JOB, 1)]);
    assert_eq!(row0(&sm, true), dense(33.0, 4.0));
    assert_eq!(row0(&sm, false), dense(133.0, 5.0));
    let cp = sm.checkpoints().load_shard(JOB, 1, SHARD).unwrap();
    assert_eq!(cp.rows, vec![(1, 0, dense(33.0, 4.0))]);
    assert_eq!(cp.jobs[0].clock, 2, "workers resume at clock 2");
    // Retention: keep 2 checkpoints per job.
    for c in 2..8 {
        apply(&sm, &mut next, vec![batch(0, c + 1, 0.5), batch(1, c, 0.5)]);
    }
    let clocks: Vec<u64> = sm
        .checkpoints()
        .list(JOB)
        .unwrap()
        .iter()
        .map(|c| c.clock)
        .collect();
    // Nothing is pruned before a complete checkpoint is known.
    assert_eq!(clocks, vec![1, 3, 5, 7]);
    let kept = |sm: &petuum_storage::ShardStateMachine| -> Vec<u64> {
        let cps = sm.checkpoints().list(JOB).unwrap();
        cps.iter().map(|c| c.clock).collect()
    };
    // Clock 3 complete: the two newest complete ones stay, and every
    // newer part (a checkpoint a recovery may not use yet).
    assert_eq!(
        sm.checkpoints().set_complete(JOB, 3).unwrap(),
        Vec::<u64>::new()
    );
    assert_eq!(kept(&sm), vec![1, 3, 5, 7]);
    assert_eq!(sm.checkpoints().set_complete(JOB, 5).unwrap(), vec![1]);
    assert_eq!(kept(&sm), vec![3, 5, 7]);
    // An older clock told late changes nothing.
    assert_eq!(
        sm.checkpoints().set_complete(JOB, 1).unwrap(),
        Vec::<u64>::new()
    );
    assert_eq!(sm.checkpoints().complete(JOB), Some(5));
    // Later parts are kept as they are written (newer than the complete
    // clock) and pruned once a newer clock is complete.
    apply(&sm, &mut next, vec![batch(0, 9, 0.5), batch(1, 8, 0.5)]);
    apply(&sm, &mut next, vec![batch(0, 10, 0.5), batch(1, 9, 0.5)]);
    assert_eq!(kept(&sm), vec![3, 5, 7, 9]);
    assert_eq!(sm.checkpoints().set_complete(JOB, 9).unwrap(), vec![3, 5]);
    assert_eq!(kept(&sm), vec![7, 9]);
    assert!(sm.checkpoints().load_shard(JOB, 1, SHARD).is_err());
}

#[test]
fn a_batch_applied_twice_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, sm) = open(dir.path(), 3);
    let mut next = 0;
    apply(&sm, &mut next, setup(1, false, 0));
    apply(&sm, &mut next, vec![batch(0, 0, 1.0)]);
    // The same batch in a later entry (a client retry after a crash).
    let r = apply(&sm, &mut next, vec![batch(0, 0, 1.0)]);
    assert!(r[0].duplicate);
    // The same entry re-applied (openraft replays after a restart).
    let again = sm.apply_entries(vec![ent(3, batch(0, 0, 1.0))]).unwrap();
    assert!(again[0].duplicate);
    assert_eq!(row0(&sm, false), dense(1.0, 1.0));
    assert_eq!(sm.handle().last_applied().unwrap().index, 4);
    // A gap is refused without changing anything, on every replica alike.
    let r = apply(&sm, &mut next, vec![batch(0, 5, 1.0)]);
    assert!(r[0]
        .error
        .as_deref()
        .unwrap()
        .contains("arrived before clock 1"));
    assert_eq!(row0(&sm, false), dense(1.0, 1.0));
}

#[tokio::test]
async fn snapshots_carry_the_base_and_the_pending_clocks() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let (_db1, mut leader) = open(d1.path(), 3);
    let (_db2, mut follower) = open(d2.path(), 3);
    let mut next = 0;
    apply(&leader, &mut next, setup(3, true, 0));
    // Deterministic mode, clock 1 half received.
    apply(
        &leader,
        &mut next,
        vec![
            batch(2, 0, 1000.0),
            batch(0, 0, 1.0),
            batch(1, 0, 1.0),
            batch(1, 1, 5.0),
        ],
    );
    let mut builder = leader.get_snapshot_builder().await;
    let snap = openraft::RaftSnapshotBuilder::build_snapshot(&mut builder)
        .await
        .unwrap();
    follower
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    assert_eq!(
        follower.applied_state().await.unwrap(),
        leader.applied_state().await.unwrap()
    );
    // Both continue identically: the held batch of worker 1 is kept.
    for sm in [&leader, &follower] {
        let mut n = next;
        apply(sm, &mut n, vec![batch(0, 1, 1.0), batch(2, 1, 1.0)]);
    }
    assert_eq!(row0(&leader, false), dense(1009.0, 6.0));
    assert_eq!(row0(&leader, false), row0(&follower, false));
    assert_eq!(row0(&leader, true), row0(&follower, true));
    assert_eq!(leader.handle().last_applied().unwrap().index, next + 2);
    assert_eq!(
        follower.handle().last_applied(),
        leader.handle().last_applied()
    );
    // Reopening restores the stored snapshot.
    let cur = follower.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(cur.meta, snap.meta);
}

/// A replica that joins after a checkpoint was written (and the log that
/// wrote it was compacted) gets the group's checkpoint parts and worker
/// blobs with the snapshot: once every replica that wrote them is gone,
/// the job must still resume from that checkpoint. (Found by the chaos
/// run: "no replica has shard 4's part of the checkpoint".)
#[tokio::test]
async fn a_snapshot_carries_the_groups_checkpoint_parts_and_worker_blobs() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let (db1, mut leader) = open(d1.path(), 3);
    let mut next = 0;
    apply(&leader, &mut next, setup(1, false, 2));
    apply(
        &leader,
        &mut next,
        vec![
            batch(0, 0, 1.0),
            batch(0, 1, 2.0),
            ShardRequest::WorkerBlob {
                job: JOB,
                epoch: 0,
                clock: 1,
                worker: 0,
                data: b"worker 0 at clock 1".to_vec(),
            },
            // A blob of another job through this group (a model).
            ShardRequest::WorkerBlob {
                job: JOB,
                epoch: 0,
                clock: u64::MAX,
                worker: 0,
                data: b"model".to_vec(),
            },
            batch(0, 2, 4.0),
        ],
    );
    let part = leader
        .checkpoints()
        .load_shard_bytes(JOB, 1, SHARD)
        .unwrap()
        .expect("checkpoint of clock 1 written");
    // openraft keeps only the meta of a built snapshot; what it sends is
    // the stored one, which carries the parts.
    let mut builder = leader.get_snapshot_builder().await;
    let built = openraft::RaftSnapshotBuilder::build_snapshot(&mut builder)
        .await
        .unwrap();
    let stored = leader.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(stored.meta, built.meta);
    // A machine handed to openraft at a node's start reads its snapshot
    // for the meta first: without the parts, then with them.
    let mut restarted = petuum_storage::ShardStateMachine::open(db1.clone(), GROUP, SHARD)
        .unwrap()
        .meta_only_at_start();
    let first = restarted.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(first.meta, built.meta);
    assert!(
        first.snapshot.get_ref().len() < stored.snapshot.get_ref().len(),
        "the start's read leaves the parts out"
    );
    let resent = restarted.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(resent.snapshot.get_ref(), stored.snapshot.get_ref());
    for snap in [stored, resent] {
        let d2 = tempfile::tempdir().unwrap();
        let (_db2, mut follower) = open(d2.path(), 3);
        follower
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();
        let cps = follower.checkpoints();
        assert_eq!(
            cps.load_shard_bytes(JOB, 1, SHARD).unwrap(),
            Some(part.clone())
        );
        assert_eq!(
            cps.load_shard(JOB, 1, SHARD).unwrap().rows,
            vec![(1, 0, dense(3.0, 2.0))]
        );
        assert_eq!(
            cps.load_worker_blob(JOB, 1, 0).unwrap().as_deref(),
            Some(&b"worker 0 at clock 1"[..])
        );
        assert_eq!(
            cps.load_worker_blob(JOB, u64::MAX, 0).unwrap().as_deref(),
            Some(&b"model"[..])
        );
        // The copy the follower keeps holds no parts (they are in its
        // store), and it sends them on in turn: a third replica that
        // joins from it gets them too.
        let again = follower.get_current_snapshot().await.unwrap().unwrap();
        let (_db3, mut third) = open(d2.path().join("third").as_path(), 3);
        third
            .install_snapshot(&again.meta, again.snapshot)
            .await
            .unwrap();
        assert_eq!(
            third.checkpoints().load_shard_bytes(JOB, 1, SHARD).unwrap(),
            Some(part.clone())
        );
        assert_eq!(
            third
                .checkpoints()
                .load_worker_blob(JOB, 1, 0)
                .unwrap()
                .as_deref(),
            Some(&b"worker 0 at clock 1"[..])
        );
        assert_eq!(row0(&third, false), row0(&leader, false));
    }
    let _ = d2;
}

#[test]
fn restore_rolls_a_job_back_to_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, sm) = open(dir.path(), 3);
    let mut next = 0;
    apply(&sm, &mut next, setup(1, false, 2));
    apply(
        &sm,
        &mut next,
        vec![batch(0, 0, 1.0), batch(0, 1, 2.0), batch(0, 2, 4.0)],
    );
    assert_eq!(row0(&sm, false), dense(7.0, 3.0));
    // Run 1 begins by shipping the checkpoint part of clock 1.
    let image = sm
        .checkpoints()
        .load_shard_bytes(JOB, 1, SHARD)
        .unwrap()
        .expect("checkpoint of clock 1 written");
    let r = apply(
        &sm,
        &mut next,
        vec![ShardRequest::RestoreImage {
            job: JOB,
            epoch: 1,
            clock: 1,
            image: image.clone(),
        }],
    );
    assert!(r[0].error.is_none(), "{r:?}");
    assert_eq!(row0(&sm, false), dense(3.0, 2.0));
    // The superseded run's batch of clock 2, arriving late, is refused.
    let r = apply(&sm, &mut next, vec![batch_in(0, 0, 2, 4.0)]);
    assert_eq!(r[0].superseded_by, Some(1), "{r:?}");
    assert_eq!(row0(&sm, false), dense(3.0, 2.0));
    // Run 1 continues from clock 2; its clock 1 again is a replay.
    let r = apply(
        &sm,
        &mut next,
        vec![batch_in(1, 0, 1, 9.0), batch_in(1, 0, 2, 8.0)],
    );
    assert!(r[0].duplicate && !r[1].duplicate, "{r:?}");
    assert_eq!(row0(&sm, false), dense(11.0, 3.0));
    // A restore of the superseded run is refused by every replica alike,
    // before anything is stored.
    let r = apply(
        &sm,
        &mut next,
        vec![ShardRequest::RestoreImage {
            job: JOB,
            epoch: 0,
            clock: 1,
            image,
        }],
    );
    assert_eq!(r[0].superseded_by, Some(1));
    assert_eq!(row0(&sm, false), dense(11.0, 3.0));
}

#[test]
fn worker_blobs_are_stored_per_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, sm) = open(dir.path(), 3);
    let mut next = 0;
    apply(&sm, &mut next, setup(2, false, 0));
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
    apply(
        &sm,
        &mut next,
        vec![
            ShardRequest::WorkerBlob {
                job: JOB,
                epoch: 0,
                clock: 4,
                worker: 0,
                data: b"topics".to_vec(),
            },
            ShardRequest::WorkerBlob {
                job: JOB,
                epoch: 0,
                clock: 4,
                worker: 1,
                data: big.clone(),
            },
        ],
    );
    let cps = sm.checkpoints();
    assert_eq!(cps.load_worker_blob(JOB, 4, 0).unwrap().unwrap(), b"topics");
    assert_eq!(cps.load_worker_blob(JOB, 4, 1).unwrap().unwrap(), big);
    assert_eq!(cps.load_worker_blob(JOB, 5, 1).unwrap(), None);
    let list = cps.list(JOB).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].clock, list[0].workers.clone()), (4, vec![0, 1]));
}

/// The size rule that schedules snapshots beside openraft's entry count:
/// due once the log applied since the last snapshot reaches the floor and
/// the snapshot's own size; building (or installing) one starts the count
/// again, and a state that outgrew the floor raises the bar with it.
#[test]
fn a_snapshot_is_due_when_the_log_since_the_last_one_outgrows_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, sm) = open(dir.path(), 2);
    let h = sm.handle();
    let mut next = 0;
    let mut wide = table();
    wide.id = 2;
    wide.columns = 8192;
    let mut cmds = setup(1, false, 0);
    cmds.insert(0, ShardRequest::CreateTable(wide));
    apply(&sm, &mut next, cmds);
    assert!(!h.snapshot_due(1 << 20), "a few small commands");
    // About 64 KiB of values per entry (a dense row of 8192 f64).
    let big = |clock| ShardRequest::Batch {
        epoch: 0,
        batch: petuum_core::batch::UpdateBatch {
            job: JOB,
            worker: 0,
            clock,
            shard: SHARD,
            updates: vec![petuum_core::batch::RowUpdate {
                table: 2,
                row: 0,
                delta: petuum_core::row::AnyRow::F64(petuum_core::row::Row::Dense(vec![0.5; 8192])),
            }],
        },
    };
    for c in 0..15 {
        let r = apply(&sm, &mut next, vec![big(c)]);
        assert_eq!(r[0].error, None);
    }
    assert!(!h.snapshot_due(1 << 20), "15 x 64 KiB is under 1 MiB");
    apply(&sm, &mut next, vec![big(15)]);
    assert!(h.snapshot_due(1 << 20), "16 x 64 KiB reaches 1 MiB");
    let (_, bytes) = sm.build_and_store_snapshot().unwrap();
    assert!(
        !h.snapshot_due(1 << 20),
        "a snapshot starts the count again"
    );
    // A floor below the snapshot's size: the log must outgrow the state.
    let floor = 1024;
    assert!(bytes.len() > 2 * floor);
    let mut c = 16;
    while !h.snapshot_due(floor as u64) {
        apply(&sm, &mut next, vec![big(c)]);
        c += 1;
        assert!(c < 1000, "never due");
    }
    assert!(
        (c - 16) as usize * 8192 * 8 >= bytes.len(),
        "due after {} entries, before the log reached the snapshot's {} bytes",
        c - 16,
        bytes.len()
    );
}

#[test]
fn a_node_over_its_log_budget_snapshots_its_largest_logs_first() {
    use petuum_storage::state_machine::over_budget;
    const MB: u64 = 1 << 20;
    // Within the budget: nothing, however the logs compare with their
    // snapshots.
    assert!(over_budget(&[(3 * MB, 0), (4 * MB, 0)], 8 * MB).is_empty());
    // 16 groups of 1.5 MiB each (24 MiB) against a 16 MiB budget: the
    // largest go first until at most a quarter of the budget (4 MiB) is
    // left, i.e. 14 of them (24 - 14 * 1.5 = 3 MiB).
    let mut logs = vec![(3 * MB / 2, 300 << 10); 16];
    logs[5].0 = 2 * MB; // the largest: first
    let picked = over_budget(&logs, 16 * MB);
    assert_eq!(picked[0], 5);
    assert_eq!(picked.len(), 14, "{picked:?}");
    // A log smaller than its group's last snapshot is left alone (a
    // large state is not rewritten for less than its size in log), even
    // when that leaves the node over budget.
    let logs = [(10 * MB, 40 * MB), (9 * MB, MB), (0, 0)];
    assert_eq!(over_budget(&logs, 8 * MB), vec![1]);
}
