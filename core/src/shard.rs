//! The state of one shard, as a sans-IO state machine: committed update
//! batches go in, rows and per-worker clocks come out. The in-process
//! backend drives it directly; the replicated backend drives it from the
//! Raft state machine. Nothing here blocks or does I/O.

use crate::batch::UpdateBatch;
use crate::error::TableError;
use crate::row::{AnyRow, Row};
use crate::types::{Clock, JobId, RowId, ShardId, TableId, TableSpec, WorkerId};
use std::collections::{BTreeMap, HashMap};

/// Per-job clock bookkeeping on one shard.
#[derive(Clone, Debug, PartialEq)]
pub struct JobClocks {
    /// Clocks received from each worker (the next expected batch clock).
    received: Vec<Clock>,
    /// Deterministic mode: batches are held until every worker's batch of a
    /// clock is present, then applied in worker order.
    deterministic: bool,
    /// Deterministic mode: received but not yet applied batches, by clock.
    held: BTreeMap<Clock, Vec<Option<UpdateBatch>>>,
    /// Deterministic mode: number of clocks fully applied.
    applied_all: Clock,
}

impl JobClocks {
    fn new(workers: u32, deterministic: bool) -> Self {
        JobClocks {
            received: vec![0; workers as usize],
            deterministic,
            held: BTreeMap::new(),
            applied_all: 0,
        }
    }

    /// Number of workers in the job.
    pub fn workers(&self) -> u32 {
        self.received.len() as u32
    }

    /// Whether the job applies whole clocks in worker order.
    pub fn deterministic(&self) -> bool {
        self.deterministic
    }

    /// Clocks whose batches are applied to the rows, per worker.
    pub fn applied(&self) -> Vec<Clock> {
        if self.deterministic {
            vec![self.applied_all; self.received.len()]
        } else {
            self.received.clone()
        }
    }

    /// The min clock: every increment tagged below it is applied.
    pub fn min_clock(&self) -> Clock {
        if self.deterministic {
            self.applied_all
        } else {
            self.received.iter().copied().min().unwrap_or(0)
        }
    }
}

/// What applying a batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// The batch had been applied before (a replay); nothing changed.
    pub duplicate: bool,
    /// The job's min clock before and after.
    pub min_clock_before: Clock,
    pub min_clock_after: Clock,
}

/// Rows and clocks of one shard.
#[derive(Clone, Debug, Default)]
pub struct ShardState {
    shard: ShardId,
    tables: HashMap<TableId, TableSpec>,
    rows: HashMap<(TableId, RowId), AnyRow>,
    jobs: HashMap<JobId, JobClocks>,
    /// Incremented on every change; lets caches keep the newest copy.
    version: u64,
}

impl ShardState {
    pub fn new(shard: ShardId) -> Self {
        ShardState {
            shard,
            ..Default::default()
        }
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Answers a read if this state meets the request's clock conditions
    /// (`Ok(None)`: not yet; the caller waits for more batches). Every
    /// replica runs the same check, which is what makes follower reads
    /// safe (docs/design.md §2).
    pub fn try_fetch(
        &self,
        req: &crate::service::FetchRequest,
    ) -> Result<Option<crate::service::RowSnapshot>, TableError> {
        let clocks = self.job(req.job)?;
        let min_clock = clocks.min_clock();
        let applied = clocks.applied();
        let own = applied
            .get(req.worker as usize)
            .copied()
            .ok_or(TableError::NoSuchWorker {
                job: req.job,
                worker: req.worker,
                workers: clocks.workers(),
            })?;
        if req.min_clock.is_none_or(|m| min_clock >= m) && own >= req.own_clock {
            return Ok(Some(crate::service::RowSnapshot {
                row: std::sync::Arc::new(self.read(req.table, req.row)?),
                min_clock,
                worker_clocks: applied.into(),
                version: self.version,
            }));
        }
        Ok(None)
    }

    /// Defines a table. Idempotent for an identical definition.
    pub fn create_table(&mut self, spec: &TableSpec) -> Result<(), TableError> {
        match self.tables.get(&spec.id) {
            Some(existing) if existing == spec => Ok(()),
            Some(_) => Err(TableError::TableConflict(spec.id)),
            None => {
                self.tables.insert(spec.id, spec.clone());
                self.version += 1;
                Ok(())
            }
        }
    }

    /// Every table defined on this shard.
    pub fn tables(&self) -> impl Iterator<Item = &TableSpec> {
        self.tables.values()
    }

    pub fn table(&self, id: TableId) -> Result<&TableSpec, TableError> {
        self.tables.get(&id).ok_or(TableError::NoSuchTable(id))
    }

    /// Registers a job's workers. Idempotent.
    pub fn register_job(&mut self, job: JobId, workers: u32, deterministic: bool) {
        self.jobs
            .entry(job)
            .or_insert_with(|| JobClocks::new(workers, deterministic));
    }

    pub fn job(&self, job: JobId) -> Result<&JobClocks, TableError> {
        self.jobs.get(&job).ok_or(TableError::NoSuchJob(job))
    }

    /// Bulk load of an initial row value (a job's init phase).
    /// Checks rows to load without loading them: the same checks `load`
    /// makes, so a chunk is loaded whole or refused whole.
    pub fn validate_load(
        &self,
        table: TableId,
        rows: &[(RowId, AnyRow)],
    ) -> Result<(), TableError> {
        let spec = self.table(table)?;
        rows.iter()
            .try_for_each(|(row, value)| check_delta(spec, *row, value))
    }

    pub fn load(&mut self, table: TableId, row: RowId, value: AnyRow) -> Result<(), TableError> {
        let spec = self.table(table)?;
        check_delta(spec, row, &value)?;
        // Stored in the table's own row kind (a sparse value for a dense
        // table, or the reverse, is converted), so every replica and every
        // image of the shard holds the same representation.
        let value = if value.kind() == spec.kind {
            value
        } else {
            let mut r = AnyRow::zero(spec.elem, spec.kind, spec.columns);
            r.add(&value);
            r
        };
        self.rows.insert((table, row), value);
        self.version += 1;
        Ok(())
    }

    /// Checks a batch without applying it: the same checks `apply` makes.
    pub fn validate(&self, batch: &UpdateBatch) -> Result<(), TableError> {
        if batch.shard != self.shard {
            return Err(TableError::NoSuchShard {
                shard: batch.shard,
                shards: self.shard + 1,
            });
        }
        let clocks = self.job(batch.job)?;
        if batch.worker >= clocks.workers() {
            return Err(TableError::NoSuchWorker {
                job: batch.job,
                worker: batch.worker,
                workers: clocks.workers(),
            });
        }
        for u in &batch.updates {
            let spec = self.table(u.table)?;
            if spec.job != batch.job {
                return Err(TableError::NoSuchTable(u.table));
            }
            check_delta(spec, u.row, &u.delta)?;
        }
        Ok(())
    }

    /// Applies a committed batch. A batch whose clock the shard has already
    /// received from that worker is a replay and is ignored; a batch from the
    /// future (a gap) is refused.
    pub fn apply(&mut self, batch: UpdateBatch) -> Result<ApplyOutcome, TableError> {
        self.apply_cow(std::borrow::Cow::Owned(batch))
    }

    /// [`apply`](Self::apply) for a borrowed batch (copied only when
    /// deterministic mode must hold it until its clock is complete).
    pub fn apply_ref(&mut self, batch: &UpdateBatch) -> Result<ApplyOutcome, TableError> {
        self.apply_cow(std::borrow::Cow::Borrowed(batch))
    }

    fn apply_cow(
        &mut self,
        batch: std::borrow::Cow<'_, UpdateBatch>,
    ) -> Result<ApplyOutcome, TableError> {
        self.validate(&batch)?;
        let shard = self.shard;
        let clocks = self.jobs.get_mut(&batch.job).expect("validated");
        let before = clocks.min_clock();
        let w = batch.worker as usize;
        let job = batch.job;
        let expected = clocks.received[w];
        if batch.clock < expected {
            return Ok(ApplyOutcome {
                duplicate: true,
                min_clock_before: before,
                min_clock_after: before,
            });
        }
        if batch.clock > expected {
            return Err(TableError::ClockGap {
                shard,
                job: batch.job,
                worker: batch.worker,
                clock: batch.clock,
                expected,
            });
        }
        clocks.received[w] += 1;
        if clocks.deterministic {
            let n = clocks.received.len();
            let slot = clocks
                .held
                .entry(batch.clock)
                .or_insert_with(|| vec![None; n]);
            slot[w] = Some(batch.into_owned());
            // Apply every complete clock, in clock order: each clock's
            // deltas summed in worker order, then added to the rows.
            let mut ready = Vec::new();
            while let Some(entry) = clocks.held.first_entry() {
                if *entry.key() != clocks.applied_all || entry.get().iter().any(Option::is_none) {
                    break;
                }
                ready.push(entry.remove().into_iter().flatten().collect::<Vec<_>>());
                clocks.applied_all += 1;
            }
            for batches in ready {
                self.apply_clock(batches);
            }
        } else {
            self.apply_rows(&batch);
        }
        self.version += 1;
        let after = self.jobs[&job].min_clock();
        Ok(ApplyOutcome {
            duplicate: false,
            min_clock_before: before,
            min_clock_after: after,
        })
    }

    /// Deterministic mode's summation order for one complete clock: per
    /// row, the workers' deltas are summed in worker order (a left fold
    /// from the first worker's delta of that row, `((d0 + d1) + d2) + ...`),
    /// and the sum is added to the row once. A node that holds workers
    /// `0..=j` may therefore send their deltas already summed in that
    /// order ([`crate::outbox`]): the fold continues from the sum exactly
    /// as it would from the separate deltas, so the bytes do not depend on
    /// which workers share a node.
    fn apply_clock(&mut self, batches: Vec<UpdateBatch>) {
        let mut with_rows = batches.iter().filter(|b| !b.updates.is_empty());
        let (first, more) = (with_rows.next(), with_rows.next().is_some());
        if !more {
            // One worker's deltas (or a node's sum): the sum is the deltas.
            if let Some(b) = first {
                self.apply_rows(b);
            }
            return;
        }
        let mut sum = crate::batch::RowSum::default();
        for b in batches {
            sum.add(b.updates);
        }
        self.apply_updates(&sum.into_updates());
    }

    fn apply_rows(&mut self, batch: &UpdateBatch) {
        self.apply_updates(&batch.updates);
    }

    fn apply_updates(&mut self, updates: &[crate::batch::RowUpdate]) {
        for u in updates {
            let spec = &self.tables[&u.table];
            let row = self
                .rows
                .entry((u.table, u.row))
                .or_insert_with(|| AnyRow::zero(spec.elem, spec.kind, spec.columns));
            let ok = row.add(&u.delta);
            debug_assert!(ok, "validated batch had a mistyped delta");
        }
    }

    /// The current value of a row (zero if never written).
    pub fn read(&self, table: TableId, row: RowId) -> Result<AnyRow, TableError> {
        let spec = self.table(table)?;
        Ok(self
            .rows
            .get(&(table, row))
            .cloned()
            .unwrap_or_else(|| AnyRow::zero(spec.elem, spec.kind, spec.columns)))
    }

    /// Row ids of a table present on this shard, sorted.
    pub fn row_ids(&self, table: TableId) -> Vec<RowId> {
        let mut ids: Vec<RowId> = self
            .rows
            .keys()
            .filter(|(t, _)| *t == table)
            .map(|&(_, r)| r)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Drops a finished job's clocks and tables.
    pub fn drop_job(&mut self, job: JobId) {
        self.jobs.remove(&job);
        let tables: Vec<TableId> = self
            .tables
            .values()
            .filter(|t| t.job == job)
            .map(|t| t.id)
            .collect();
        for t in &tables {
            self.tables.remove(t);
        }
        self.rows.retain(|(t, _), _| !tables.contains(t));
        self.version += 1;
    }

    /// Worker of a job whose batches are applied up to `clock`.
    pub fn applied_clock(&self, job: JobId, worker: WorkerId) -> Result<Clock, TableError> {
        let clocks = self.job(job)?;
        clocks
            .applied()
            .get(worker as usize)
            .copied()
            .ok_or(TableError::NoSuchWorker {
                job,
                worker,
                workers: clocks.workers(),
            })
    }
}

/// Checks that a delta (or initial value) fits a table's definition.
pub fn check_delta(spec: &TableSpec, row: RowId, delta: &AnyRow) -> Result<(), TableError> {
    if delta.elem() != spec.elem {
        return Err(TableError::WrongType {
            table: spec.id,
            expected: spec.elem,
            found: delta.elem(),
        });
    }
    macro_rules! check {
        ($r:expr) => {
            match $r {
                Row::Dense(v) => {
                    if v.len() != spec.columns as usize {
                        return Err(TableError::WidthMismatch {
                            table: spec.id,
                            row,
                            got: v.len(),
                            columns: spec.columns,
                        });
                    }
                }
                Row::Sparse(m) => {
                    if let Some(&col) = m.keys().find(|&&c| c >= spec.columns) {
                        return Err(TableError::ColumnOutOfRange {
                            table: spec.id,
                            row,
                            col,
                            columns: spec.columns,
                        });
                    }
                }
            }
        };
    }
    match delta {
        AnyRow::F32(r) => check!(r),
        AnyRow::F64(r) => check!(r),
        AnyRow::I32(r) => check!(r),
        AnyRow::I64(r) => check!(r),
    }
    // A dense delta on a sparse table (or the reverse) is fine: rows add
    // column by column.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::RowUpdate;
    use crate::types::{ElemType, RowKind};

    fn spec() -> TableSpec {
        TableSpec {
            id: 1,
            name: "t".into(),
            job: 7,
            kind: RowKind::Dense,
            elem: ElemType::F64,
            columns: 2,
        }
    }

    fn batch(worker: WorkerId, clock: Clock, v: f64) -> UpdateBatch {
        UpdateBatch {
            job: 7,
            worker,
            clock,
            shard: 0,
            updates: vec![RowUpdate {
                table: 1,
                row: 0,
                delta: AnyRow::F64(Row::Dense(vec![v, 0.0])),
            }],
        }
    }

    #[test]
    fn replays_are_ignored_and_gaps_refused() {
        let mut s = ShardState::new(0);
        s.create_table(&spec()).unwrap();
        s.register_job(7, 2, false);
        assert!(!s.apply(batch(0, 0, 1.0)).unwrap().duplicate);
        assert!(s.apply(batch(0, 0, 1.0)).unwrap().duplicate);
        assert!(matches!(
            s.apply(batch(1, 1, 1.0)),
            Err(TableError::ClockGap { expected: 0, .. })
        ));
        let out = s.apply(batch(1, 0, 2.0)).unwrap();
        assert_eq!((out.min_clock_before, out.min_clock_after), (0, 1));
        assert_eq!(
            s.read(1, 0).unwrap(),
            AnyRow::F64(Row::Dense(vec![3.0, 0.0]))
        );
    }

    #[test]
    fn deterministic_mode_applies_whole_clocks_in_worker_order() {
        let mut s = ShardState::new(0);
        s.create_table(&spec()).unwrap();
        s.register_job(7, 3, true);
        // Arrival order 2, 0, 1. In arrival order the sum would be
        // (1e16 + 1) + 1 = 1e16 (each +1 rounds away); in worker order it is
        // (1 + 1) + 1e16 = 1e16 + 2 exactly.
        s.apply(batch(2, 0, 1e16)).unwrap();
        assert_eq!(
            s.read(1, 0).unwrap(),
            AnyRow::F64(Row::Dense(vec![0.0, 0.0]))
        );
        s.apply(batch(0, 0, 1.0)).unwrap();
        assert_eq!(s.job(7).unwrap().min_clock(), 0);
        s.apply(batch(1, 0, 1.0)).unwrap();
        assert_eq!(s.job(7).unwrap().min_clock(), 1);
        assert_eq!(s.job(7).unwrap().applied(), vec![1, 1, 1]);
        assert_eq!(
            s.read(1, 0).unwrap(),
            AnyRow::F64(Row::Dense(vec![1e16 + 2.0, 0.0]))
        );
    }

    #[test]
    fn deterministic_clocks_are_summed_first_so_leading_workers_may_arrive_summed() {
        // After clock 0 the row is 1e16 (f64 steps of 2 there). Clock 1's
        // deltas are 1, 1, 1: added one by one each would round away, 1e16;
        // summed first in worker order, (1 + 1) + 1 = 3, then added once.
        let big = 1e16f64;
        let sequential = ((big + 1.0) + 1.0) + 1.0;
        let summed = big + ((1.0 + 1.0) + 1.0);
        assert_ne!(sequential, summed, "values must tell the orders apart");
        let fresh = || {
            let mut s = ShardState::new(0);
            s.create_table(&spec()).unwrap();
            s.register_job(7, 3, true);
            s.apply(batch(0, 0, big)).unwrap();
            s.apply(batch(1, 0, 0.0)).unwrap();
            s.apply(batch(2, 0, 0.0)).unwrap();
            s
        };
        // Each worker's batch apart, arriving out of order.
        let mut apart = fresh();
        for w in [2, 1, 0] {
            apart.apply(batch(w, 1, 1.0)).unwrap();
        }
        // A node holding workers 0 and 1 sends their sum in worker 0's
        // batch and a rowless one for worker 1 (crate::outbox); worker 2's
        // comes from elsewhere.
        let mut node = fresh();
        let mut rowless = batch(1, 1, 0.0);
        rowless.updates.clear();
        node.apply(batch(2, 1, 1.0)).unwrap();
        node.apply(batch(0, 1, 1.0 + 1.0)).unwrap();
        node.apply(rowless).unwrap();
        for s in [&apart, &node] {
            assert_eq!(s.job(7).unwrap().min_clock(), 2);
            assert_eq!(
                s.read(1, 0).unwrap(),
                AnyRow::F64(Row::Dense(vec![summed, 0.0]))
            );
        }
    }

    #[test]
    fn mistyped_and_misshaped_deltas_are_refused() {
        let mut s = ShardState::new(0);
        s.create_table(&spec()).unwrap();
        s.register_job(7, 1, false);
        let mut b = batch(0, 0, 1.0);
        b.updates[0].delta = AnyRow::F32(Row::Dense(vec![1.0, 2.0]));
        assert!(matches!(s.apply(b), Err(TableError::WrongType { .. })));
        let mut b = batch(0, 0, 1.0);
        b.updates[0].delta = AnyRow::F64(Row::Dense(vec![1.0]));
        assert!(matches!(s.apply(b), Err(TableError::WidthMismatch { .. })));
        // Nothing was applied and the clock did not move.
        assert_eq!(s.job(7).unwrap().min_clock(), 0);
    }
}
