//! Corrupt inputs: flipped bytes and truncation in snapshots, stored
//! snapshots, checkpoint values and log entries are detected and reported
//! with the shard and the key; nothing is half-applied.

mod common;
use common::*;
use openraft::storage::RaftStateMachine;
use petuum_storage::codec::chunk_key;
use petuum_storage::keys::{self, CF_CHECKPOINT, CF_LOG, CF_SNAPSHOT};
use petuum_storage::{RaftLogStore, StorageError};

fn prepared_leader(
    dir: &std::path::Path,
) -> (
    std::sync::Arc<petuum_storage::NodeDb>,
    petuum_storage::ShardStateMachine,
) {
    let (db, sm) = open(dir, 3);
    let mut next = 0;
    apply(&sm, &mut next, setup(2, false, 1));
    apply(
        &sm,
        &mut next,
        vec![batch(0, 0, 1.0), batch(1, 0, 2.0), batch(0, 1, 4.0)],
    );
    (db, sm)
}

#[tokio::test]
async fn corrupt_or_truncated_snapshots_are_refused_and_change_nothing() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let (_db1, leader) = prepared_leader(d1.path());
    let (meta, good) = leader.encode_snapshot().unwrap();
    let (_db2, mut follower) = open(d2.path(), 3);
    let before = follower.applied_state().await.unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for pos in [0, 5, 12, good.len() / 2, good.len() - 5, good.len() - 1] {
        let mut b = good.clone();
        b[pos] ^= 0x40;
        cases.push((format!("flip at {pos}"), b));
    }
    for len in [0, 3, 20, good.len() / 2, good.len() - 1] {
        cases.push((format!("truncated to {len}"), good[..len].to_vec()));
    }
    for (what, bytes) in cases {
        let err = follower.install(&meta, bytes).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                StorageError::Corrupt { shard: SHARD, .. }
                    | StorageError::UnsupportedVersion { shard: SHARD, .. }
            ),
            "{what}: {msg}"
        );
        assert!(
            msg.contains(&format!("shard {SHARD}")) && msg.contains("snapshot:"),
            "{what}: {msg}"
        );
        assert_eq!(
            follower.applied_state().await.unwrap(),
            before,
            "{what}: state changed"
        );
        assert!(
            follower.get_current_snapshot().await.unwrap().is_none(),
            "{what}: stored"
        );
    }
    // A snapshot whose metadata does not match its contents is refused too.
    let mut wrong = meta.clone();
    wrong.snapshot_id = "other".into();
    assert!(follower.install(&wrong, good.clone()).is_err());
    // The intact one installs.
    follower.install(&meta, good).unwrap();
    assert_eq!(
        follower.applied_state().await.unwrap(),
        (meta.last_log_id, meta.last_membership)
    );
}

#[test]
fn a_damaged_stored_snapshot_stops_the_state_machine_from_opening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (db, sm) = prepared_leader(dir.path());
        sm.build_and_store_snapshot().unwrap();
        // Flip a byte in the first data chunk of the stored snapshot.
        let key = chunk_key(&keys::prefix(GROUP), 1);
        let cf = db.cf(CF_SNAPSHOT);
        let mut v = db.raw().get_cf(cf, &key).unwrap().unwrap();
        v[7] ^= 1;
        db.raw().put_cf(cf, &key, v).unwrap();
    }
    let mut cfg = petuum_storage::StorageConfig::new(dir.path());
    cfg.keep_checkpoints = 3;
    let db = petuum_storage::NodeDb::open(cfg).unwrap();
    let err = petuum_storage::ShardStateMachine::open(db, GROUP, SHARD).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("shard {SHARD}")), "{msg}");
    assert!(
        msg.contains(&keys::show(
            CF_SNAPSHOT,
            &chunk_key(&keys::prefix(GROUP), 1)
        )),
        "{msg}"
    );
}

#[test]
fn damaged_checkpoint_values_are_reported_with_shard_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let (db, sm) = prepared_leader(dir.path());
    let cps = sm.checkpoints();
    assert!(cps.load_shard(JOB, 0, SHARD).is_ok());
    let part = keys::checkpoint_shard(JOB, 0, SHARD);
    let cf = db.cf(CF_CHECKPOINT);
    let k1 = chunk_key(&part, 1);
    let good = db.raw().get_cf(cf, &k1).unwrap().unwrap();
    let shown = keys::show(CF_CHECKPOINT, &k1);
    // A flipped byte, a truncated value, a missing chunk, a damaged header.
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x08;
    type Damage<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let damage: Vec<Damage> = vec![
        (
            "flipped byte",
            Box::new(|| db.raw().put_cf(cf, &k1, &flipped).unwrap()),
        ),
        (
            "truncated value",
            Box::new(|| db.raw().put_cf(cf, &k1, &good[..good.len() - 3]).unwrap()),
        ),
        (
            "missing chunk",
            Box::new(|| db.raw().delete_cf(cf, &k1).unwrap()),
        ),
    ];
    for (what, hurt) in damage {
        hurt();
        let err = cps.load_shard(JOB, 0, SHARD).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, StorageError::Corrupt { shard: SHARD, .. }),
            "{what}: {msg}"
        );
        assert!(
            msg.contains(&format!("shard {SHARD}")) && msg.contains(&shown),
            "{what}: {msg}"
        );
        db.raw().put_cf(cf, &k1, &good).unwrap();
        assert!(cps.load_shard(JOB, 0, SHARD).is_ok());
    }
    let k0 = chunk_key(&part, 0);
    let mut header = db.raw().get_cf(cf, &k0).unwrap().unwrap();
    header[0] ^= 0xff;
    db.raw().put_cf(cf, &k0, &header).unwrap();
    let msg = cps.load_shard(JOB, 0, SHARD).unwrap_err().to_string();
    assert!(msg.contains(&keys::show(CF_CHECKPOINT, &k0)), "{msg}");
}

#[test]
fn a_damaged_log_entry_is_reported_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _sm) = open(dir.path(), 3);
    let log = RaftLogStore::new(db.clone(), GROUP);
    log.append_entries((1..=4).map(|i| ent(i, batch(0, i - 1, 1.0))))
        .unwrap();
    let key = keys::log_key(GROUP, 3);
    let cf = db.cf(CF_LOG);
    let mut v = db.raw().get_cf(cf, key).unwrap().unwrap();
    v[3] ^= 0x20;
    db.raw().put_cf(cf, key, v).unwrap();
    assert_eq!(log.entries(1..3).unwrap().len(), 2);
    let msg = log.entries(..).unwrap_err().to_string();
    assert!(
        msg.contains(&keys::show(CF_LOG, &key)) && msg.contains("checksum"),
        "{msg}"
    );
}
