//! openraft's own storage conformance suite against the RocksDB stores.

use openraft::testing::{StoreBuilder, Suite};
use petuum_storage::{
    NodeDb, RaftLogStore, RaftStorageError, ShardStateMachine, StorageConfig, TypeConfig,
};
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, RaftLogStore, ShardStateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, RaftLogStore, ShardStateMachine), RaftStorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = NodeDb::open(StorageConfig::new(dir.path())).expect("open db");
        // Group 7 in a DB that also holds group 6's keys below and group 8's
        // above, so prefix bounds are exercised by every suite test.
        let log = RaftLogStore::new(db.clone(), 7);
        let sm = ShardStateMachine::open(db.clone(), 7, 3).expect("open state machine");
        for g in [6, 8] {
            RaftLogStore::new(db.clone(), g)
                .append_entries((0..5).map(|i| openraft::Entry {
                    log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(9, 9), i),
                    payload: openraft::EntryPayload::Blank,
                }))
                .expect("neighbour group append");
        }
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes_on_rocksdb() {
    Suite::test_all(RocksBuilder).unwrap();
}
