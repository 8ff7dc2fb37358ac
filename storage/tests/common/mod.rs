//! Helpers shared by the integration tests.
#![allow(dead_code)]

use openraft::{CommittedLeaderId, EntryPayload, LogId};
use petuum_core::batch::{RowUpdate, UpdateBatch};
use petuum_core::row::{AnyRow, Row};
use petuum_core::types::{Clock, ElemType, JobId, RowKind, TableSpec, WorkerId};
use petuum_storage::{Entry, NodeDb, ShardRequest, ShardStateMachine, StorageConfig};
use std::sync::Arc;

pub const SHARD: u32 = 3;
pub const GROUP: u64 = 30;
pub const JOB: JobId = 9;

pub fn open(dir: &std::path::Path, keep: usize) -> (Arc<NodeDb>, ShardStateMachine) {
    let mut cfg = StorageConfig::new(dir);
    cfg.keep_checkpoints = keep;
    let db = NodeDb::open(cfg).unwrap();
    let sm = ShardStateMachine::open(db.clone(), GROUP, SHARD).unwrap();
    (db, sm)
}

pub fn ent(index: u64, req: ShardRequest) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
        payload: EntryPayload::Normal(req),
    }
}

pub fn table() -> TableSpec {
    TableSpec {
        id: 1,
        name: "w".into(),
        job: JOB,
        kind: RowKind::Dense,
        elem: ElemType::F64,
        columns: 2,
    }
}

pub fn setup(workers: u32, deterministic: bool, checkpoint_every: Clock) -> Vec<ShardRequest> {
    vec![
        ShardRequest::CreateTable(table()),
        ShardRequest::RegisterJob {
            job: JOB,
            epoch: 0,
            workers,
            deterministic,
            checkpoint_every,
        },
    ]
}

pub fn batch(worker: WorkerId, clock: Clock, v: f64) -> ShardRequest {
    batch_in(0, worker, clock, v)
}

/// A batch of run `epoch`.
pub fn batch_in(epoch: u64, worker: WorkerId, clock: Clock, v: f64) -> ShardRequest {
    ShardRequest::Batch {
        epoch,
        batch: UpdateBatch {
            job: JOB,
            worker,
            clock,
            shard: SHARD,
            updates: vec![RowUpdate {
                table: 1,
                row: 0,
                delta: AnyRow::F64(Row::Dense(vec![v, 1.0])),
            }],
        },
    }
}

/// Applies requests as consecutive entries after `*next`.
pub fn apply(
    sm: &ShardStateMachine,
    next: &mut u64,
    reqs: Vec<ShardRequest>,
) -> Vec<petuum_storage::ShardResponse> {
    let entries: Vec<Entry> = reqs
        .into_iter()
        .map(|r| {
            *next += 1;
            ent(*next, r)
        })
        .collect();
    sm.apply_entries(entries).unwrap()
}

pub fn row0(sm: &ShardStateMachine, base: bool) -> AnyRow {
    sm.handle().with_replica(|r| {
        let s = if base {
            r.data.base()
        } else {
            r.data.current()
        };
        s.read(1, 0).unwrap()
    })
}

pub fn dense(v: f64, n: f64) -> AnyRow {
    AnyRow::F64(Row::Dense(vec![v, n]))
}
