//! A deterministic workload of shard commands, a pure function of the log
//! index. The crash test and its child process (`petuum-storage-crashloop`)
//! both derive it, so the test can check a reopened log entry by entry and
//! the reopened state against a replay.

use crate::shard_data::{Effect, ShardData};
use crate::types::{Entry, LogId, ShardRequest};
use openraft::{CommittedLeaderId, EntryPayload};
use petuum_core::batch::{RowUpdate, UpdateBatch};
use petuum_core::row::{AnyRow, Row};
use petuum_core::types::{Clock, ElemType, JobId, RowKind, ShardId, TableSpec};
use std::collections::{BTreeMap, HashMap};

/// The job of the workload.
pub const JOB: JobId = 1;
/// The shard of the workload.
pub const SHARD: ShardId = 0;
/// Workers of the job.
pub const WORKERS: u32 = 3;
/// Checkpoint period of the job, in clocks.
pub const CHECKPOINT_EVERY: Clock = 5;
/// Rows touched per table.
pub const ROWS: u64 = 64;
/// Entries before the first batch (tables and job).
pub const SETUP_ENTRIES: u64 = 3;

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The tables of the workload: a dense and a sparse `i64` table (integer
/// values, so any application order gives the same sums).
pub fn tables() -> [TableSpec; 2] {
    let t = |id, kind, columns| TableSpec {
        id,
        name: format!("t{id}"),
        job: JOB,
        kind,
        elem: ElemType::I64,
        columns,
    };
    [t(1, RowKind::Dense, 16), t(2, RowKind::Sparse, 1000)]
}

/// The command at log index `index` (1-based).
pub fn request(index: u64) -> ShardRequest {
    assert!(index >= 1);
    let [dense, sparse] = tables();
    match index {
        1 => ShardRequest::CreateTable(dense),
        2 => ShardRequest::CreateTable(sparse),
        3 => ShardRequest::RegisterJob {
            job: JOB,
            epoch: 0,
            workers: WORKERS,
            deterministic: false,
            checkpoint_every: CHECKPOINT_EVERY,
        },
        _ => {
            let k = index - SETUP_ENTRIES - 1;
            let h = mix(index);
            let dense_delta: Vec<i64> = (0..16).map(|c| ((mix(h ^ c) % 21) as i64) - 10).collect();
            let sparse_delta: HashMap<u32, i64> = (0..3)
                .map(|j| ((mix(h + j) % 1000) as u32, (j as i64) + 1))
                .collect();
            ShardRequest::Batch {
                epoch: 0,
                batch: UpdateBatch {
                    job: JOB,
                    worker: (k % WORKERS as u64) as u32,
                    clock: k / WORKERS as u64,
                    shard: SHARD,
                    updates: vec![
                        RowUpdate {
                            table: 1,
                            row: h % ROWS,
                            delta: AnyRow::I64(Row::Dense(dense_delta)),
                        },
                        RowUpdate {
                            table: 2,
                            row: (h >> 8) % ROWS,
                            delta: AnyRow::I64(Row::Sparse(sparse_delta)),
                        },
                    ],
                },
            }
        }
    }
}

/// Job id under which the crash loop stores large worker blobs (written by
/// SST ingestion), apart from the workload job's checkpoints.
pub const BLOB_JOB: JobId = 2;
/// Bytes of such a blob: above the ingestion threshold.
pub const BLOB_BYTES: usize = 5 << 20;

/// The content of the large blob stored for `clock`.
pub fn blob(clock: Clock) -> Vec<u8> {
    let h = mix(clock);
    (0..BLOB_BYTES as u64)
        .map(|i| (h.wrapping_add(i * 31) >> 8) as u8)
        .collect()
}

/// The log entry at `index` (term 1, leader node 0).
pub fn entry(index: u64) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
        payload: EntryPayload::Normal(request(index)),
    }
}

/// Replays entries `1..=last` into a fresh replica. Returns it and the
/// checkpoint images the replay produced, by clock.
pub fn replay(last: u64) -> (ShardData, BTreeMap<Clock, Vec<u8>>) {
    let mut d = ShardData::new(SHARD);
    let mut checkpoints = BTreeMap::new();
    for i in 1..=last {
        let (resp, effects) = d.apply(request(i));
        assert!(resp.error.is_none(), "workload entry {i} refused: {resp:?}");
        for e in effects {
            if let Effect::Checkpoint(c) = e {
                checkpoints.insert(c.clock, c.image);
            }
        }
    }
    (d, checkpoints)
}
