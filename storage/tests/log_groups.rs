//! Several Raft groups in one RocksDB: logs, votes and purges stay apart,
//! and everything survives a reopen.

use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};
use petuum_storage::{Entry, NodeDb, RaftLogStore, StorageConfig};

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Blank,
    }
}

#[tokio::test]
async fn groups_share_one_db_without_mixing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = NodeDb::open(StorageConfig::new(dir.path())).unwrap();
        let mut a = RaftLogStore::new(db.clone(), 1);
        let b = RaftLogStore::new(db.clone(), 2);
        a.append_entries((1..=300).map(|i| blank(1, i))).unwrap();
        b.append_entries((1..=5).map(|i| blank(2, i))).unwrap();
        a.save_vote(&Vote::new(3, 1)).await.unwrap();
        b.purge_upto(blank(2, 2).log_id).unwrap();
        a.truncate_from(251).unwrap();
        a.save_committed(Some(blank(1, 200).log_id)).await.unwrap();
    }
    let db = NodeDb::open(StorageConfig::new(dir.path())).unwrap();
    let mut a = RaftLogStore::new(db.clone(), 1);
    let mut b = RaftLogStore::new(db.clone(), 2);
    let sa = a.log_state().unwrap();
    assert_eq!(sa.last_log_id, Some(blank(1, 250).log_id));
    assert_eq!(sa.last_purged_log_id, None);
    // Index 256 sorts after 255 (big-endian keys), so order is log order.
    let idx: Vec<u64> = a
        .entries(..)
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(idx, (1..=250).collect::<Vec<_>>());
    let sb = b.log_state().unwrap();
    assert_eq!(sb.last_purged_log_id, Some(blank(2, 2).log_id));
    assert_eq!(sb.last_log_id, Some(blank(2, 5).log_id));
    assert_eq!(b.entries(..).unwrap().len(), 3);
    assert_eq!(a.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
    assert_eq!(b.read_vote().await.unwrap(), None);
    assert_eq!(
        a.read_committed().await.unwrap(),
        Some(blank(1, 200).log_id)
    );
    assert_eq!(a.entries(100..103).unwrap().len(), 3);
    assert_eq!(
        RaftLogStore::new(db, 3).log_state().unwrap().last_log_id,
        None
    );
}
