//! Several Raft groups in one RocksDB: logs, votes and purges stay apart,
//! and everything survives a reopen.

use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};
use petuum_storage::{Entry, NodeDb, RaftLogStore, StorageConfig, Tombstone};

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

#[tokio::test]
async fn replication_reads_stop_at_their_byte_budget() {
    use openraft::RaftLogReader;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let db = NodeDb::open(StorageConfig::new(dir.path())).unwrap();
    let budget = Arc::new(AtomicUsize::new(1));
    let mut log = RaftLogStore::new(db, 1).with_read_budget(budget.clone());
    log.append_entries((1..=100).map(|i| blank(1, i))).unwrap();
    // Below one entry's size: still one entry (openraft needs progress).
    let got = log.limited_get_log_entries(1, 101).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].log_id.index, 1);
    // The stored size of one (blank) entry: the smallest budget past
    // which a read takes a second entry, less one.
    assert_eq!(log.entries_within(1..101, usize::MAX).unwrap().len(), 100);
    let per_entry = (2..4096)
        .find(|&b| log.entries_within(1..101, b).unwrap().len() > 1)
        .unwrap()
        - 1;
    // The budget is read anew at each read: ten entries' worth.
    budget.store(per_entry * 10, Ordering::Relaxed);
    let got = log.limited_get_log_entries(5, 101).await.unwrap();
    assert_eq!(got.len(), 10);
    assert_eq!(
        got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        (5..15).collect::<Vec<_>>()
    );
    // A range within the budget comes whole; the plain read ignores it.
    assert_eq!(log.limited_get_log_entries(50, 53).await.unwrap().len(), 3);
    assert_eq!(log.try_get_log_entries(1..101).await.unwrap().len(), 100);
}

/// A read whose start was purged returns nothing rather than the entries
/// after the purge: openraft puts what the reader returns right after the
/// `prev` it chose, so a later run of entries would give a follower a log
/// with a gap it cannot restart from (seen with a leader whose progress
/// for a wiped follower had gone wrong, before `loosen-follower-log-revert`).
#[tokio::test]
async fn reads_never_skip_to_entries_after_a_purged_start() {
    use openraft::RaftLogReader;
    let dir = tempfile::tempdir().unwrap();
    let db = NodeDb::open(StorageConfig::new(dir.path())).unwrap();
    let mut log = RaftLogStore::new(db, 7);
    log.append_entries((1..=20).map(|i| blank(1, i))).unwrap();
    log.purge_upto(blank(1, 10).log_id).unwrap();
    assert!(log.limited_get_log_entries(5, 15).await.unwrap().is_empty());
    // openraft's own reads (`try_get_log_entries`) get what the range
    // holds, as its storage suite requires.
    assert_eq!(log.try_get_log_entries(0..15).await.unwrap().len(), 4);
    let from_11: Vec<u64> = log
        .limited_get_log_entries(11, 15)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(from_11, vec![11, 12, 13, 14]);
}

/// An entry whose payload takes `size` bytes, told apart by term and index.
fn sized(term: u64, index: u64, size: usize) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(petuum_storage::ShardRequest::Meta(vec![
            (index as u8)
                ^ (term as u8);
            size
        ])),
    }
}

fn shown(entries: &[Entry]) -> Vec<(LogId<u64>, usize, u8)> {
    entries
        .iter()
        .map(|e| match &e.payload {
            EntryPayload::Normal(petuum_storage::ShardRequest::Meta(m)) => {
                (e.log_id, m.len(), m.first().copied().unwrap_or(0))
            }
            _ => (e.log_id, 0, 0),
        })
        .collect()
}

/// The in-memory cache of a group's latest entries never answers
/// differently from the log on disk: through appends (small and larger
/// than the cache), truncations, purges and reads of every kind, each read
/// of the store that appended equals the same read by a store opened
/// afresh on the same database (which has nothing cached and reads
/// RocksDB).
#[test]
fn reads_from_the_entry_cache_equal_reads_of_the_stored_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = NodeDb::open(StorageConfig::new(dir.path())).unwrap();
    let log = RaftLogStore::new(db.clone(), 7);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n.max(1)
    };
    let (mut first, mut last, mut term) = (1u64, 0u64, 1u64);
    let mut hits = 0;
    for step in 0..300 {
        match next(10) {
            0 if last >= first => {
                // A conflicting suffix goes; the new leader's entries follow.
                let from = first + next(last - first + 1);
                log.truncate_from(from).unwrap();
                last = from - 1;
                term += 1;
            }
            1 if last >= first => {
                let upto = first + next(last - first + 1);
                log.purge_upto(sized(term, upto, 0).log_id).unwrap();
                first = upto + 1;
            }
            k => {
                // Mostly small entries; now and then ones that overflow the
                // 2 MiB cache alone or together.
                let size = if k == 9 {
                    600_000 + next(1_200_000) as usize
                } else {
                    next(40_000) as usize
                };
                let n = 1 + next(4);
                log.append_entries((last + 1..=last + n).map(|i| sized(term, i, size)))
                    .unwrap();
                last += n;
            }
        }
        let fresh = RaftLogStore::new(db.clone(), 7);
        for _ in 0..6 {
            let a = first.saturating_sub(1) + next(last - first + 3);
            let b = a + next(6);
            let budget = [1usize, 50_000, 1 << 20, usize::MAX][next(4) as usize];
            let cached = log.entries_within(a..b, budget).unwrap();
            assert_eq!(
                shown(&cached),
                shown(&fresh.entries_within(a..b, budget).unwrap()),
                "step {step}: entries_within({a}..{b}, {budget})"
            );
            assert_eq!(
                shown(&log.entries(a..=b).unwrap()),
                shown(&fresh.entries(a..=b).unwrap()),
                "step {step}: entries({a}..={b})"
            );
            hits += usize::from(!cached.is_empty());
        }
        if step % 10 == 0 {
            assert_eq!(
                shown(&log.entries(..).unwrap()),
                shown(&fresh.entries(..).unwrap())
            );
        }
    }
    assert!(hits > 500, "the reads found entries only {hits} times");
}

/// A committed index never goes back in Raft; openraft compares log ids by
/// term first, so a later term's lower index would look like an advance and
/// its apply would read an empty range (a panic in openraft's core). The
/// store refuses it with an error naming the group, both log ids and the
/// vote, and keeps the stored committed id; a higher term at a higher
/// index, or the same id again, is accepted.
#[tokio::test]
async fn a_committed_index_that_goes_back_is_refused_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let db = NodeDb::open(StorageConfig::new(dir.path())).unwrap();
    let mut log = RaftLogStore::new(db.clone(), 7);
    log.append_entries((1..=20).map(|i| blank(4, i))).unwrap();
    log.save_vote(&Vote::new(5, 1)).await.unwrap();
    log.save_committed(Some(blank(4, 18).log_id)).await.unwrap();
    log.save_committed(Some(blank(4, 18).log_id)).await.unwrap();

    let err = log
        .save_committed(Some(blank(5, 12).log_id))
        .await
        .expect_err("a lower committed index under a later term");
    let msg = err.to_string();
    for part in [
        "group 7",
        "went back",
        "T4-N1-18",
        "T5-N1-12",
        "T4-N1-20",
        "T5-N1",
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }
    assert_eq!(
        log.read_committed().await.unwrap(),
        Some(blank(4, 18).log_id)
    );

    // A store opened afresh knows the stored id (read at start) and
    // checks against it; a real advance is taken.
    let mut again = RaftLogStore::new(db, 7);
    assert_eq!(
        again.read_committed().await.unwrap(),
        Some(blank(4, 18).log_id)
    );
    assert!(again
        .save_committed(Some(blank(5, 3).log_id))
        .await
        .is_err());
    again
        .save_committed(Some(blank(5, 20).log_id))
        .await
        .unwrap();
    assert_eq!(
        again.read_committed().await.unwrap(),
        Some(blank(5, 20).log_id)
    );
}

#[tokio::test]
async fn a_dropped_group_leaves_a_tombstone_of_what_it_had_seen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = NodeDb::open(StorageConfig::new(dir.path())).unwrap();
        let mut a = RaftLogStore::new(db.clone(), 1);
        let mut b = RaftLogStore::new(db.clone(), 2);
        a.append_entries((1..=30).map(|i| blank(4, i))).unwrap();
        a.save_vote(&Vote::new_committed(4, 1)).await.unwrap();
        a.purge_upto(blank(4, 10).log_id).unwrap();
        b.append_entries((1..=5).map(|i| blank(2, i))).unwrap();
        b.save_vote(&Vote::new(2, 1)).await.unwrap();
        assert_eq!(db.stored_groups().unwrap(), vec![1, 2]);
        assert_eq!(db.tombstone(1).unwrap(), None);
        db.delete_group(1).unwrap();
        // Its state is gone, the tombstone kept; the other group untouched.
        let a = RaftLogStore::new(db.clone(), 1);
        assert_eq!(a.log_state().unwrap().last_log_id, None);
        assert_eq!(a.vote().unwrap(), None);
        assert_eq!(b.log_state().unwrap().last_log_id, Some(blank(2, 5).log_id));
        assert_eq!(
            db.stored_groups().unwrap(),
            vec![2],
            "a tombstone is no replica"
        );
    }
    let db = NodeDb::open(StorageConfig::new(dir.path())).unwrap();
    let want = Tombstone {
        vote: Some(Vote::new_committed(4, 1)),
        last_log_id: Some(blank(4, 30).log_id),
    };
    assert_eq!(db.tombstone(1).unwrap(), Some(want), "after a reopen");
    assert_eq!(db.stored_groups().unwrap(), vec![2]);
    // Hosted again, it votes in a later term with a shorter log, and is
    // dropped again before it caught up: the tombstone keeps the most of
    // each.
    let mut a = RaftLogStore::new(db.clone(), 1);
    a.append_entries((1..=3).map(|i| blank(6, i))).unwrap();
    a.save_vote(&Vote::new(6, 2)).await.unwrap();
    assert_eq!(db.stored_groups().unwrap(), vec![1, 2]);
    db.delete_group(1).unwrap();
    assert_eq!(
        db.tombstone(1).unwrap(),
        Some(Tombstone {
            vote: Some(Vote::new(6, 2)),
            // Raft orders log ids by term first: (6, 3) is after (4, 30).
            last_log_id: Some(blank(6, 3).log_id),
        })
    );
    // A corrupt tombstone is reported with its key, not read as none.
    let key = petuum_storage::keys::meta_key(1, petuum_storage::keys::META_DROPPED);
    let cf = db.cf(petuum_storage::keys::CF_META);
    db.raw().put_cf(cf, key, b"garbage!").unwrap();
    drop((a, db));
    let db = NodeDb::open(StorageConfig::new(dir.path())).unwrap();
    let err = db.tombstone(1).unwrap_err().to_string();
    assert!(err.contains("tombstone"), "{err}");
}
