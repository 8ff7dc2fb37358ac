//! Property tests of a shard replica against arbitrary command sequences
//! and arbitrary bytes, as a peer speaking garbage or a client replaying
//! old runs would send them. Bounded (a fixed number of cases), so CI runs
//! them on every change; `PROPTEST_CASES=100000 cargo test --release -p
//! petuum-storage --test fuzz_shard` runs a long campaign.
//!
//! What must hold, whatever arrives:
//! - nothing panics;
//! - a refused command changes nothing and asks for no I/O;
//! - replicas are deterministic: a replica rebuilt from another's snapshot
//!   mid-sequence gives the same answers and serves the same reads (rows
//!   compared as values: a sparse row's encoding follows its hash map);
//! - a job's fence never moves back;
//! - decoders of snapshots, checkpoint parts and commands return errors,
//!   never panic, on any bytes.

use petuum_core::batch::{RowUpdate, UpdateBatch};
use petuum_core::row::{AnyRow, Row};
use petuum_core::types::{ElemType, RowKind, TableSpec};
use petuum_storage::image::ShardImage;
use petuum_storage::shard_data::{Effect, EpochCheck};
use petuum_storage::{ShardData, ShardRequest};
use proptest::prelude::*;
use std::collections::HashMap;

const SHARD: u32 = 0;
const JOBS: [u64; 2] = [5, 6];

fn row_strategy() -> impl Strategy<Value = AnyRow> {
    prop_oneof![
        proptest::collection::vec(-3i64..3, 0..4).prop_map(|v| AnyRow::I64(Row::Dense(v))),
        proptest::collection::vec(-3.0f64..3.0, 0..4).prop_map(|v| AnyRow::F64(Row::Dense(v))),
        proptest::collection::hash_map(0u32..5, -3i64..3, 0..3)
            .prop_map(|m| AnyRow::I64(Row::Sparse(m.into_iter().collect()))),
        proptest::collection::vec(-3i32..3, 0..4).prop_map(|v| AnyRow::I32(Row::Dense(v))),
    ]
}

/// One step: a replicated command, or a restore of the newest checkpoint
/// part this replica wrote (what `RestoreImage` does in the state machine).
#[derive(Clone, Debug)]
enum Op {
    Cmd(ShardRequest),
    Restore { job: u64, epoch: u64 },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let job = proptest::sample::select(JOBS.to_vec());
    let epoch = 0u64..4;
    prop_oneof![
        1 => (1u32..3, proptest::sample::select(JOBS.to_vec()), any::<bool>(), any::<bool>(), 1u32..4)
            .prop_map(|(id, job, dense, f64s, columns)| Op::Cmd(ShardRequest::CreateTable(
                TableSpec {
                    id,
                    name: format!("t{id}"),
                    job,
                    kind: if dense { RowKind::Dense } else { RowKind::Sparse },
                    elem: if f64s { ElemType::F64 } else { ElemType::I64 },
                    columns,
                }
            ))),
        1 => (job.clone(), epoch.clone(), 0u32..4, any::<bool>(), 0u64..3).prop_map(
            |(job, epoch, workers, deterministic, checkpoint_every)| Op::Cmd(
                ShardRequest::RegisterJob {
                    job,
                    epoch,
                    workers,
                    deterministic,
                    checkpoint_every,
                }
            )
        ),
        1 => (
            epoch.clone(),
            1u32..3,
            proptest::collection::vec((0u64..4, row_strategy()), 0..3)
        )
            .prop_map(|(epoch, table, rows)| Op::Cmd(ShardRequest::Load { epoch, table, rows })),
        4 => (
            epoch.clone(),
            job.clone(),
            0u32..4,
            0u64..5,
            0u32..2,
            proptest::collection::vec((1u32..3, 0u64..4, row_strategy()), 0..3)
        )
            .prop_map(|(epoch, job, worker, clock, shard, updates)| Op::Cmd(
                ShardRequest::Batch {
                    epoch,
                    batch: UpdateBatch {
                        job,
                        worker,
                        clock,
                        shard,
                        updates: updates
                            .into_iter()
                            .map(|(table, row, delta)| RowUpdate { table, row, delta })
                            .collect(),
                    },
                }
            )),
        1 => (job.clone(), epoch.clone(), 0u64..5)
            .prop_map(|(job, epoch, clock)| Op::Cmd(ShardRequest::Checkpoint { job, epoch, clock })),
        1 => (job.clone(), epoch.clone(), 0u64..5, 0u32..3).prop_map(|(job, epoch, clock, worker)| {
            Op::Cmd(ShardRequest::WorkerBlob {
                job,
                epoch,
                clock,
                worker,
                data: vec![1, 2, 3],
            })
        }),
        1 => (job.clone(), epoch.clone()).prop_map(|(job, epoch)| Op::Cmd(ShardRequest::DropJob { job, epoch })),
        1 => (job, epoch).prop_map(|(job, epoch)| Op::Restore { job, epoch }),
        1 => proptest::collection::vec(any::<u8>(), 0..8).prop_map(|b| Op::Cmd(ShardRequest::Meta(b))),
    ]
}

/// Everything a replica holds, as bytes: its base image, pending batches
/// and fences (two replicas with equal bytes serve the same reads).
fn state(d: &ShardData) -> (Vec<u8>, Vec<UpdateBatch>, Vec<(u64, u64)>) {
    (
        d.encode_base().expect("encode"),
        d.pending().cloned().collect(),
        d.fences().collect(),
    )
}

/// Applies one step; checkpoint parts written go to `parts`. Returns the
/// response's error and whether the step was refused.
fn step(d: &mut ShardData, op: &Op, parts: &mut HashMap<u64, Vec<u8>>) -> Option<String> {
    match op {
        Op::Cmd(req) => {
            let before = state(d);
            let (resp, effects) = d.apply(req.clone());
            if resp.error.is_some() {
                assert!(effects.is_empty(), "refused {req:?} asked for I/O");
                assert!(state(d) == before, "refused {req:?} changed the state");
            }
            for e in effects {
                if let Effect::Checkpoint(c) = e {
                    parts.insert(c.job, c.image);
                }
            }
            resp.error
        }
        Op::Restore { job, epoch } => {
            let image = parts.get(job)?;
            if let EpochCheck::Stale { current } = d.check_epoch(*job, *epoch) {
                return Some(format!("stale {epoch} < {current}"));
            }
            let img: ShardImage = postcard::from_bytes(image).expect("own image");
            d.restore_job(*job, *epoch, &img)
                .err()
                .map(|e| e.to_string())
        }
    }
}

/// What reads can see of a replica: every row of every table (current and
/// base state), every job's applied clocks, the fences.
type Observed = (String, Option<AnyRow>, Option<AnyRow>);

fn observable(d: &ShardData) -> Vec<Observed> {
    let mut out = Vec::new();
    for t in d.tables() {
        for r in 0..4 {
            out.push((
                format!("table {} row {r}", t.id),
                d.current().read(t.id, r).ok(),
                d.base().read(t.id, r).ok(),
            ));
        }
    }
    for job in JOBS {
        let info = format!(
            "job {job}: {:?} {:?} {:?} fence {}",
            d.current().job(job).map(|j| j.applied()).ok(),
            d.base().job(job).map(|j| j.applied()).ok(),
            d.jobs().find(|j| j.job == job),
            d.fence(job)
        );
        out.push((info, None, None));
    }
    out
}

fn rebuild(d: &ShardData) -> ShardData {
    let base: ShardImage = postcard::from_bytes(&d.encode_base().unwrap()).unwrap();
    let fences: Vec<_> = d.fences().collect();
    ShardData::from_parts(&base, d.pending().cloned().collect(), &fences).expect("rebuild")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn replicas_agree_refusals_change_nothing_and_fences_only_rise(
        ops in proptest::collection::vec(op_strategy(), 1..60),
        cut in 0usize..60,
    ) {
        let mut a = ShardData::new(SHARD);
        let mut parts_a = HashMap::new();
        let mut b: Option<(ShardData, HashMap<u64, Vec<u8>>)> = None;
        let mut fences: HashMap<u64, u64> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            if i == cut.min(ops.len() - 1) {
                // A replica that catches up from a's snapshot here.
                b = Some((rebuild(&a), parts_a.clone()));
            }
            let ra = step(&mut a, op, &mut parts_a);
            if let Some((b, parts_b)) = b.as_mut() {
                let rb = step(b, op, parts_b);
                prop_assert_eq!(&ra, &rb, "replicas answered {:?} differently", op);
            }
            for job in JOBS {
                let f = a.fence(job);
                let old = fences.insert(job, f).unwrap_or(0);
                prop_assert!(f >= old, "fence of job {} went back from {} to {}", job, old, f);
            }
        }
        if let Some((b, _)) = b {
            prop_assert_eq!(observable(&a), observable(&b), "replicas serve different reads");
        }
    }

    #[test]
    fn decoders_refuse_garbage_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = petuum_storage::snapshot::decode(&bytes, SHARD, "fuzz");
        let _ = petuum_storage::checkpoint::decode_shard_part(&bytes, 5, 1, SHARD);
        let _ = postcard::from_bytes::<ShardRequest>(&bytes);
        let _ = postcard::from_bytes::<ShardImage>(&bytes);
    }

    #[test]
    fn decoders_refuse_damaged_snapshots(flip in 0usize..4096, bit in 0u8..8) {
        // A real snapshot with one bit flipped: refused (the checksum), never
        // installed, never a panic.
        let mut d = ShardData::new(SHARD);
        let mut parts = HashMap::new();
        for op in [
            Op::Cmd(ShardRequest::CreateTable(TableSpec { id: 1, name: "t".into(), job: 5, kind: RowKind::Dense, elem: ElemType::I64, columns: 3 })),
            Op::Cmd(ShardRequest::DropJob { job: 5, epoch: 2 }),
            Op::Cmd(ShardRequest::CreateTable(TableSpec { id: 1, name: "t".into(), job: 5, kind: RowKind::Dense, elem: ElemType::I64, columns: 3 })),
            Op::Cmd(ShardRequest::RegisterJob { job: 5, epoch: 2, workers: 2, deterministic: false, checkpoint_every: 1 }),
        ] {
            prop_assert_eq!(step(&mut d, &op, &mut parts), None);
        }
        let header = petuum_storage::snapshot::SnapshotHeader {
            shard: SHARD,
            snapshot_id: "s".into(),
            last_applied: None,
            membership: Default::default(),
            clocks: vec![],
        };
        let mut bytes = petuum_storage::snapshot::encode(&header, &d).unwrap();
        let (_, decoded) = petuum_storage::snapshot::decode(&bytes, SHARD, "ok").unwrap();
        prop_assert_eq!(decoded.fence(5), 2);
        let i = flip % bytes.len();
        bytes[i] ^= 1 << bit;
        prop_assert!(petuum_storage::snapshot::decode(&bytes, SHARD, "flipped").is_err());
    }
}
