//! Where a node's pipelined clocks leave it: one outbox per job and node
//! (or per worker, when its node declared no group), drained by one push
//! thread.
//!
//! * **Node-level aggregation.** The workers of a job that a node declared
//!   as a group ([`crate::worker::Node::group`]) hand their batches of a
//!   clock to the same outbox; once every member has handed that clock,
//!   the outbox sends one batch per shard for all of them, as Bosen's
//!   process op-log does: their deltas are summed, in ascending worker
//!   order, into the lowest member's batch, and the others' batches carry
//!   no rows but still advance their clocks in the same entry. In
//!   deterministic mode only the members that begin the job's worker
//!   order (workers `0, 1, ..., j`) are summed so; any other member's
//!   batch stays apart in the entry. A shard sums each clock's deltas in
//!   worker order before adding them to its rows, so the sum of workers
//!   `0..=j` is where its own sum would be at worker `j`, and the bytes
//!   do not depend on which workers share a node.
//! * **Queued clocks travel together.** When the push thread finds several
//!   complete clocks waiting (the shards are slower than the workers), it
//!   sends them in one push: one entry per shard for all of them, applied
//!   clock by clock in order, as separate entries would be.
//!
//! Each member's clocks are acknowledged to it, in order, once the push
//! that carried them is committed.

use crate::batch::{RowSum, UpdateBatch};
use crate::error::TableError;
use crate::service::ShardService;
use crate::types::{Clock, JobId, WorkerId};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The most clocks one push carries, and the most bytes of values clocks
/// merged into one push may add up to: merging stops well before an entry
/// grows too big to replicate within a heartbeat interval on a loaded host
/// (one clock of any size still goes, alone, as before).
const MAX_CLOCKS_PER_PUSH: usize = 16;
const MAX_BYTES_PER_PUSH: usize = 4 << 20;

/// An acknowledgement: the time from handing a clock to its commit, or
/// the error that ended the pushes.
pub(crate) type Ack = Result<Duration, TableError>;

/// One member's batches of one clock.
#[cfg_attr(test, derive(Clone))]
struct Part {
    worker: WorkerId,
    batches: Vec<UpdateBatch>,
    handed: Instant,
}

/// A clock every member has handed.
struct Complete {
    clock: Clock,
    parts: Vec<Part>,
}

struct State {
    /// Members still in the run, ascending.
    members: Vec<WorkerId>,
    /// Clocks some member has handed and another has not yet.
    waiting: BTreeMap<Clock, Vec<Part>>,
    acks: FxHashMap<WorkerId, Sender<Ack>>,
    /// To the push thread; dropped when the last member leaves.
    tx: Option<Sender<Complete>>,
}

pub(crate) struct Outbox {
    state: Mutex<State>,
}

impl Outbox {
    /// An outbox for `members` of `job` (ascending, non-empty), with its
    /// push thread.
    pub(crate) fn start(
        service: Arc<dyn ShardService>,
        job: JobId,
        members: Vec<WorkerId>,
        deterministic: bool,
    ) -> Arc<Outbox> {
        let (tx, rx) = std::sync::mpsc::channel::<Complete>();
        let outbox = Arc::new(Outbox {
            state: Mutex::new(State {
                members: members.clone(),
                waiting: BTreeMap::new(),
                acks: FxHashMap::default(),
                tx: Some(tx),
            }),
        });
        let name = match members.as_slice() {
            [w] => format!("push-{job}-{w}"),
            _ => format!("push-{job}"),
        };
        let weak = Arc::downgrade(&outbox);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || push_loop(service, job, deterministic, rx, weak))
            .expect("spawn a push thread");
        outbox
    }

    /// Registers a member's acknowledgement channel.
    pub(crate) fn attach(&self, worker: WorkerId) -> Receiver<Ack> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.state.lock().unwrap().acks.insert(worker, tx);
        rx
    }

    /// A member's batches of `clock`; the clock leaves once every member
    /// has handed it.
    pub(crate) fn hand(
        &self,
        worker: WorkerId,
        clock: Clock,
        batches: Vec<UpdateBatch>,
    ) -> Result<(), TableError> {
        let mut s = self.state.lock().unwrap();
        if s.tx.is_none() {
            return Err(TableError::Unavailable("the push thread stopped".into()));
        }
        s.waiting.entry(clock).or_default().push(Part {
            worker,
            batches,
            handed: Instant::now(),
        });
        send_complete(&mut s)
    }

    /// A member is done (its context dropped): later clocks no longer wait
    /// for it.
    pub(crate) fn leave(&self, worker: WorkerId) {
        let mut s = self.state.lock().unwrap();
        s.members.retain(|&w| w != worker);
        s.acks.remove(&worker);
        let _ = send_complete(&mut s);
        if s.members.is_empty() {
            s.tx = None;
        }
    }
}

/// Sends every clock, oldest first, that all members have handed.
fn send_complete(s: &mut State) -> Result<(), TableError> {
    while let Some(entry) = s.waiting.first_entry() {
        let complete = s
            .members
            .iter()
            .all(|m| entry.get().iter().any(|p| p.worker == *m));
        if !complete {
            break;
        }
        let clock = *entry.key();
        let mut parts = entry.remove();
        parts.sort_by_key(|p| p.worker);
        let tx =
            s.tx.as_ref()
                .ok_or_else(|| TableError::Unavailable("the push thread stopped".into()))?;
        tx.send(Complete { clock, parts })
            .map_err(|_| TableError::Unavailable("the push thread stopped".into()))?;
    }
    Ok(())
}

fn push_loop(
    service: Arc<dyn ShardService>,
    job: JobId,
    deterministic: bool,
    rx: Receiver<Complete>,
    outbox: std::sync::Weak<Outbox>,
) {
    // A clock that did not fit in the last push goes first in the next.
    let mut held: Option<Complete> = None;
    loop {
        let first = match held.take() {
            Some(c) => c,
            None => match rx.recv() {
                Ok(c) => c,
                Err(_) => return,
            },
        };
        // Whatever else is complete already goes in the same push, within
        // the bounds.
        let mut bytes = value_bytes(&first);
        let mut clocks = vec![first];
        while clocks.len() < MAX_CLOCKS_PER_PUSH {
            match rx.try_recv() {
                Ok(c) => {
                    let b = value_bytes(&c);
                    if bytes + b > MAX_BYTES_PER_PUSH {
                        held = Some(c);
                        break;
                    }
                    bytes += b;
                    clocks.push(c);
                }
                Err(_) => break,
            }
        }
        let first_clock = clocks[0].clock;
        let mut batches = Vec::new();
        let mut acked: Vec<(WorkerId, Instant)> = Vec::new();
        for c in clocks {
            acked.extend(c.parts.iter().map(|p| (p.worker, p.handed)));
            batches.extend(combine(c.parts, deterministic));
        }
        // One entry per shard: the shard's batches together, in clock
        // order (the push groups them by shard).
        batches.sort_by_key(|b| b.shard);
        let result = service.push(&batches);
        let Some(outbox) = outbox.upgrade() else {
            // Every member is gone; what was handed is still delivered.
            if result.is_err() {
                return;
            }
            continue;
        };
        let s = outbox.state.lock().unwrap();
        match result {
            Ok(()) => {
                for (w, handed) in acked {
                    if let Some(tx) = s.acks.get(&w) {
                        let _ = tx.send(Ok(handed.elapsed()));
                    }
                }
            }
            Err(e) => {
                // Reads of this run may be waiting for these batches: end
                // them rather than let them wait.
                service.abort_job(
                    job,
                    &format!(
                        "the batches of clock {} of workers {:?} failed: {e}",
                        first_clock, s.members
                    ),
                );
                for tx in s.acks.values() {
                    let _ = tx.send(Err(e.clone()));
                }
                return;
            }
        }
    }
}

fn value_bytes(c: &Complete) -> usize {
    c.parts
        .iter()
        .flat_map(|p| &p.batches)
        .map(UpdateBatch::value_bytes)
        .sum()
}

/// One clock's batches of all members (sorted by worker): per shard, the
/// sum of their deltas in the lowest member's batch and rowless batches
/// for the rest. In deterministic mode only workers `0, 1, ..., j` (the
/// members that begin the job's worker order) are summed, in that order,
/// which is where the shard's own sum of a clock begins
/// (`ShardState::apply_clock`); any other member's batch goes apart.
fn combine(mut parts: Vec<Part>, deterministic: bool) -> Vec<UpdateBatch> {
    if parts.len() == 1 {
        return parts.pop().expect("one part").batches;
    }
    if deterministic {
        let lead = parts
            .iter()
            .enumerate()
            .take_while(|(i, p)| p.worker == *i as WorkerId)
            .count();
        let apart = parts.split_off(lead);
        let mut out = if lead >= 2 {
            sum_parts(parts)
        } else {
            parts.into_iter().flat_map(|p| p.batches).collect()
        };
        out.extend(apart.into_iter().flat_map(|p| p.batches));
        return out;
    }
    sum_parts(parts)
}

/// The deltas of `parts` (at least one, sorted by worker) summed in
/// ascending worker order into the lowest member's batch; the others'
/// batches stay, rowless, to advance their clocks.
fn sum_parts(mut parts: Vec<Part>) -> Vec<UpdateBatch> {
    let mut rest = parts.split_off(1);
    let first = parts.pop().expect("a first part");
    let lowest = first.worker;
    let mut out = first.batches;
    // Shard -> position in `out`, and that batch's sum so far.
    let mut at: FxHashMap<u32, usize> = out.iter().enumerate().map(|(i, b)| (b.shard, i)).collect();
    let mut sums: Vec<RowSum> = out
        .iter_mut()
        .map(|b| {
            let mut sum = RowSum::default();
            sum.add(std::mem::take(&mut b.updates));
            sum
        })
        .collect();
    for part in rest.iter_mut() {
        for b in part.batches.iter_mut() {
            let i = *at.entry(b.shard).or_insert_with(|| {
                out.push(UpdateBatch {
                    job: b.job,
                    worker: lowest,
                    clock: b.clock,
                    shard: b.shard,
                    updates: Vec::new(),
                });
                sums.push(RowSum::default());
                out.len() - 1
            });
            sums[i].add(std::mem::take(&mut b.updates));
        }
    }
    for (b, sum) in out.iter_mut().zip(sums) {
        b.updates = sum.into_updates();
    }
    for part in rest {
        out.extend(part.batches);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::RowUpdate;
    use crate::row::{AnyRow, Row};
    use crate::types::RowId;

    /// (shard, worker, rows) of each batch, in order.
    fn tags(batches: &[UpdateBatch]) -> Vec<(u32, WorkerId, usize)> {
        batches
            .iter()
            .map(|b| (b.shard, b.worker, b.updates.len()))
            .collect()
    }

    fn part(worker: WorkerId, rows: &[(u32, RowId, f32)]) -> Part {
        let batches = (0..2)
            .map(|shard| UpdateBatch {
                job: 1,
                worker,
                clock: 4,
                shard,
                updates: rows
                    .iter()
                    .filter(|(s, _, _)| *s == shard)
                    .map(|&(_, row, v)| RowUpdate {
                        table: 1,
                        row,
                        delta: AnyRow::F32(Row::Dense(vec![v, 2.0 * v])),
                    })
                    .collect(),
            })
            .collect();
        Part {
            worker,
            batches,
            handed: Instant::now(),
        }
    }

    /// Every value of a row as exact bits, sparse rows sorted by column.
    fn bits(row: &AnyRow) -> Vec<(u32, u64)> {
        let mut out: Vec<(u32, u64)> = match row {
            AnyRow::F32(Row::Dense(v)) => (0..).zip(v.iter().map(|x| x.to_bits() as u64)).collect(),
            AnyRow::F64(Row::Sparse(m)) => m.iter().map(|(&c, x)| (c, x.to_bits())).collect(),
            other => panic!("unexpected row {other:?}"),
        };
        out.sort_unstable();
        out
    }

    #[test]
    fn deterministic_bytes_do_not_depend_on_which_workers_share_a_node() {
        use crate::shard::ShardState;
        use crate::types::{ElemType, RowKind, TableSpec};
        use rand::seq::SliceRandom;
        use rand::{Rng, SeedableRng};
        // Magnitudes whose f32/f64 sums depend on the order of addition.
        const VALUES: [f64; 6] = [1e8, 1.0, -1e8, 0.5, 3e-3, -7.25];
        let tables = [
            TableSpec {
                id: 1,
                name: "dense".into(),
                job: 1,
                kind: RowKind::Dense,
                elem: ElemType::F32,
                columns: 3,
            },
            TableSpec {
                id: 2,
                name: "sparse".into(),
                job: 1,
                kind: RowKind::Sparse,
                elem: ElemType::F64,
                columns: 5,
            },
        ];
        for seed in 0..200u64 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let workers: u32 = rng.gen_range(2..=5);
            let nodes: u32 = rng.gen_range(1..=3);
            let node_of: Vec<u32> = (0..workers).map(|_| rng.gen_range(0..nodes)).collect();
            let value = |rng: &mut rand_chacha::ChaCha8Rng| VALUES[rng.gen_range(0..VALUES.len())];
            // Each worker's batches of clocks 0..3 for shards 0 and 1.
            let mut parts: Vec<Vec<Part>> = Vec::new();
            for clock in 0..3 {
                let mut of_clock = Vec::new();
                for worker in 0..workers {
                    let batches = (0..2)
                        .map(|shard| {
                            let mut updates = Vec::new();
                            for row in 0..3u64 {
                                if rng.gen_bool(0.6) {
                                    let d: Vec<f32> =
                                        (0..3).map(|_| value(&mut rng) as f32).collect();
                                    updates.push(RowUpdate {
                                        table: 1,
                                        row: row * 2 + shard as u64,
                                        delta: AnyRow::F32(Row::Dense(d)),
                                    });
                                }
                                if rng.gen_bool(0.5) {
                                    let mut m = std::collections::HashMap::new();
                                    for c in 0..5u32 {
                                        if rng.gen_bool(0.5) {
                                            m.insert(c, value(&mut rng));
                                        }
                                    }
                                    updates.push(RowUpdate {
                                        table: 2,
                                        row: row * 2 + shard as u64,
                                        delta: AnyRow::F64(Row::Sparse(m)),
                                    });
                                }
                            }
                            UpdateBatch {
                                job: 1,
                                worker,
                                clock,
                                shard,
                                updates,
                            }
                        })
                        .collect();
                    of_clock.push(Part {
                        worker,
                        batches,
                        handed: Instant::now(),
                    });
                }
                parts.push(of_clock);
            }
            let fresh = || -> Vec<ShardState> {
                (0..2)
                    .map(|shard| {
                        let mut st = ShardState::new(shard);
                        for t in &tables {
                            st.create_table(t).unwrap();
                        }
                        st.register_job(1, workers, true);
                        st
                    })
                    .collect()
            };
            let apply = |states: &mut [ShardState],
                         mut batches: Vec<UpdateBatch>,
                         rng: &mut rand_chacha::ChaCha8Rng| {
                // Arrival order within a clock is anyone's; clocks in order
                // per worker.
                batches.shuffle(rng);
                batches.sort_by_key(|b| b.clock);
                for b in batches {
                    let shard = b.shard as usize;
                    states[shard].apply(b).unwrap();
                }
            };
            // Every worker's batches apart.
            let mut apart = fresh();
            let all: Vec<UpdateBatch> = parts
                .iter()
                .flat_map(|c| c.iter().flat_map(|p| p.batches.clone()))
                .collect();
            apply(&mut apart, all, &mut rng);
            // Through each node's outbox.
            let mut placed = fresh();
            let mut sent = Vec::new();
            for of_clock in &parts {
                for node in 0..nodes {
                    let members: Vec<Part> = of_clock
                        .iter()
                        .filter(|p| node_of[p.worker as usize] == node)
                        .cloned()
                        .collect();
                    if !members.is_empty() {
                        sent.extend(combine(members, true));
                    }
                }
            }
            apply(&mut placed, sent, &mut rng);
            for shard in 0..2 {
                for t in &tables {
                    for row in 0..6 {
                        assert_eq!(
                            bits(&apart[shard].read(t.id, row).unwrap()),
                            bits(&placed[shard].read(t.id, row).unwrap()),
                            "seed {seed}: {workers} workers on nodes {node_of:?}, shard {shard}, table {}, row {row}",
                            t.id
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn members_are_summed_in_worker_order_or_kept_apart() {
        // Values whose f32 sum depends on the order: ascending worker
        // order, (1e8 + 1) + -1e8, is 0 (1e8 + 1 rounds to 1e8); any other
        // order gives 1.
        let (a, b, c) = (1e8f32, 1.0f32, -1e8f32);
        let parts = || {
            vec![
                part(0, &[(0, 7, a), (1, 8, 0.5)]),
                part(2, &[(0, 7, b), (0, 9, 3.0)]),
                part(3, &[(0, 7, c)]),
            ]
        };
        // Summed: worker 0's batch of each shard carries every row once,
        // each delta added in ascending worker order; 2 and 3 send rowless
        // batches that advance their clocks in the same entry.
        let summed = combine(parts(), false);
        assert_eq!(
            tags(&summed),
            vec![
                (0, 0, 2),
                (1, 0, 1),
                (0, 2, 0),
                (1, 2, 0),
                (0, 3, 0),
                (1, 3, 0)
            ]
        );
        let in_order = |x: f32, y: f32, z: f32| (x + y) + z;
        assert_ne!(
            in_order(a, b, c),
            in_order(a, c, b),
            "values must tell orders apart"
        );
        assert_eq!(summed[0].updates[0].row, 7);
        assert_eq!(
            summed[0].updates[0].delta,
            AnyRow::F32(Row::Dense(vec![
                in_order(a, b, c),
                in_order(2.0 * a, 2.0 * b, 2.0 * c)
            ]))
        );
        assert_eq!(summed[0].updates[1].row, 9);
        assert!(summed.iter().all(|b| b.clock == 4 && b.job == 1));
        // Deterministic, members 0, 2, 3: no run of workers from 0 beyond
        // worker 0 itself, so every member's batches stay as they were, in
        // worker order.
        let apart = combine(parts(), true);
        assert_eq!(apart.len(), 6);
        assert_eq!(
            apart.iter().map(|b| b.worker).collect::<Vec<_>>(),
            vec![0, 0, 2, 2, 3, 3]
        );
        assert_eq!(apart[4].updates.len(), 1);
        // Deterministic, members 0, 1, 3: workers 0 and 1 begin the job's
        // worker order and are summed (where a shard's own sum of the clock
        // would be after worker 1); worker 3 stays apart.
        let lead = combine(
            vec![
                part(0, &[(0, 7, a), (1, 8, 0.5)]),
                part(1, &[(0, 7, b), (0, 9, 3.0)]),
                part(3, &[(0, 7, c)]),
            ],
            true,
        );
        assert_eq!(
            tags(&lead),
            vec![
                (0, 0, 2),
                (1, 0, 1),
                (0, 1, 0),
                (1, 1, 0),
                (0, 3, 1),
                (1, 3, 0)
            ]
        );
        assert_eq!(
            lead[0].updates[0].delta,
            AnyRow::F32(Row::Dense(vec![a + b, 2.0 * a + 2.0 * b]))
        );
    }
}
