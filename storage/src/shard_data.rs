//! The sans-IO core of a shard replica: the current state (what reads
//! see), the state at each job's min clock ("base", docs/design.md §3), and the
//! batches in between. Commands go in; responses and checkpoint images to
//! persist come out. The Raft state machine wraps it with I/O.

use crate::error::Result;
use crate::image::{encode_image, JobImage, ShardImage};
use crate::types::ShardRequest;
use crate::types::ShardResponse;
use petuum_core::batch::UpdateBatch;
use petuum_core::shard::ShardState;
use petuum_core::types::{Clock, JobId, ShardId, TableId, TableSpec, WorkerId};
use std::collections::{BTreeMap, BTreeSet};

/// A consistent checkpoint part that applying produced and that must be
/// persisted: the state of `job` on this shard at `clock` (every increment
/// of clocks `<= clock` applied, none later).
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointImage {
    pub job: JobId,
    pub clock: Clock,
    /// An encoded [`ShardImage`] of the job's tables and clocks.
    pub image: Vec<u8>,
}

/// I/O a command asks the wrapper to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Persist a shard checkpoint part.
    Checkpoint(CheckpointImage),
    /// Persist a worker blob of a checkpoint.
    WorkerBlob {
        job: JobId,
        clock: Clock,
        worker: WorkerId,
        data: Vec<u8>,
    },
    /// Delete everything stored for a job (checkpoints, blobs, its model).
    Forget(JobId),
}

/// The replica's state. See the module docs.
#[derive(Clone, Debug)]
pub struct ShardData {
    current: ShardState,
    base: ShardState,
    tables: BTreeMap<TableId, TableSpec>,
    jobs: BTreeMap<JobId, JobImage>,
    /// Batches applied to `current` and not yet to `base`, by job and clock.
    pending: BTreeMap<JobId, BTreeMap<Clock, Vec<UpdateBatch>>>,
    /// Per job, the newest run (epoch) that began on this shard. Kept after
    /// the job is dropped, so a superseded run cannot bring it back.
    fences: BTreeMap<JobId, u64>,
    /// The worker blobs (and models) committed through this group, which
    /// a snapshot sent to a new replica carries (the checkpoint store
    /// keys them by job, clock and worker, not by group). Kept until the
    /// job is forgotten; a blob pruned from the store is skipped.
    blobs: BTreeSet<(JobId, Clock, WorkerId)>,
}

/// How a command's run relates to the job's fence on a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochCheck {
    /// The command's run is the job's current one.
    Current,
    /// A newer run than any that began here.
    Newer,
    /// A superseded run: `current` began since.
    Stale { current: u64 },
}

impl ShardData {
    pub fn new(shard: ShardId) -> Self {
        ShardData {
            current: ShardState::new(shard),
            base: ShardState::new(shard),
            tables: BTreeMap::new(),
            jobs: BTreeMap::new(),
            pending: BTreeMap::new(),
            fences: BTreeMap::new(),
            blobs: BTreeSet::new(),
        }
    }

    /// The newest run of `job` that began on this shard (0: none yet).
    pub fn fence(&self, job: JobId) -> u64 {
        self.fences.get(&job).copied().unwrap_or(0)
    }

    /// Every job's fence, for snapshots.
    pub fn fences(&self) -> impl Iterator<Item = (JobId, u64)> + '_ {
        self.fences.iter().map(|(&j, &e)| (j, e))
    }

    /// The worker blobs committed through this group, for snapshots.
    pub fn blobs(&self) -> impl Iterator<Item = (JobId, Clock, WorkerId)> + '_ {
        self.blobs.iter().copied()
    }

    /// Replaces the list of worker blobs (from a snapshot).
    pub fn set_blobs(&mut self, blobs: impl IntoIterator<Item = (JobId, Clock, WorkerId)>) {
        self.blobs = blobs.into_iter().collect();
    }

    /// How run `epoch` of `job` relates to this shard's fence.
    pub fn check_epoch(&self, job: JobId, epoch: u64) -> EpochCheck {
        let fence = self.fence(job);
        match epoch.cmp(&fence) {
            std::cmp::Ordering::Equal => EpochCheck::Current,
            std::cmp::Ordering::Greater => EpochCheck::Newer,
            std::cmp::Ordering::Less => EpochCheck::Stale { current: fence },
        }
    }

    /// Whether `job` is registered here in run `epoch`: every command of
    /// that run sent before its registration (drop or restore, tables,
    /// loads) is applied.
    pub fn live_in(&self, job: JobId, epoch: u64) -> bool {
        self.check_epoch(job, epoch) == EpochCheck::Current && self.jobs.contains_key(&job)
    }

    /// Answers a read of run `epoch` once this replica can serve it
    /// exactly: the run is registered here (so its restore or loads are
    /// applied) and the request's clock conditions hold. `Ok(None)`: not
    /// yet. A superseded run's read is refused.
    pub fn try_fetch(
        &self,
        req: &petuum_core::service::FetchRequest,
        epoch: u64,
    ) -> std::result::Result<Option<petuum_core::service::RowSnapshot>, petuum_core::TableError>
    {
        match self.check_epoch(req.job, epoch) {
            EpochCheck::Stale { current } => Err(petuum_core::TableError::StaleEpoch {
                job: req.job,
                epoch,
                current,
            }),
            EpochCheck::Newer => Ok(None),
            EpochCheck::Current if !self.jobs.contains_key(&req.job) => Ok(None),
            EpochCheck::Current => self.current.try_fetch(req),
        }
    }

    /// The refusal of a command of `job` in run `epoch` unless it is the
    /// current run; `None` when it is.
    fn require_current(&self, job: JobId, epoch: u64) -> Option<ShardResponse> {
        match self.check_epoch(job, epoch) {
            EpochCheck::Current => None,
            EpochCheck::Stale { current } => Some(ShardResponse::stale(job, epoch, current)),
            EpochCheck::Newer => Some(ShardResponse::refused(format!(
                "job {job}: run {epoch} has not begun on shard {} (a run begins with a restore or a drop; current run {})",
                self.shard(),
                self.fence(job)
            ))),
        }
    }

    /// Checks that run `epoch` may begin (or continue) on this shard and
    /// moves the fence to it.
    pub fn begin_run(&mut self, job: JobId, epoch: u64) -> std::result::Result<(), ShardResponse> {
        if let EpochCheck::Stale { current } = self.check_epoch(job, epoch) {
            return Err(ShardResponse::stale(job, epoch, current));
        }
        self.fences.insert(job, epoch);
        Ok(())
    }

    pub fn shard(&self) -> ShardId {
        self.current.shard()
    }

    /// Every applied batch: what reads are served from.
    pub fn current(&self) -> &ShardState {
        &self.current
    }

    /// The state at each job's min clock.
    pub fn base(&self) -> &ShardState {
        &self.base
    }

    /// Tables defined on the shard.
    pub fn tables(&self) -> impl Iterator<Item = &TableSpec> {
        self.tables.values()
    }

    /// Jobs registered on the shard, with `clock` = the base (min) clock.
    pub fn jobs(&self) -> impl Iterator<Item = &JobImage> {
        self.jobs.values()
    }

    /// Batches held between the base and the current state, in the order a
    /// restore applies them (job, clock, worker).
    pub fn pending(&self) -> impl Iterator<Item = &UpdateBatch> {
        self.pending
            .values()
            .flat_map(|by_clock| by_clock.values().flatten())
    }

    /// Rebuilds a replica from a base image, its pending batches and its
    /// jobs' fences.
    pub fn from_parts(
        base: &ShardImage,
        pending: Vec<UpdateBatch>,
        fences: &[(JobId, u64)],
    ) -> Result<Self> {
        let mut d = ShardData::new(base.shard);
        d.fences = fences.iter().copied().collect();
        d.base = base.restore()?;
        d.current = d.base.clone();
        d.tables = base.tables.iter().map(|t| (t.id, t.clone())).collect();
        d.jobs = base.jobs.iter().map(|j| (j.job, j.clone())).collect();
        for b in pending {
            let out =
                d.current
                    .apply(b.clone())
                    .map_err(|source| crate::StorageError::Restore {
                        what: "pending batch",
                        shard: base.shard,
                        source,
                    })?;
            if !out.duplicate {
                d.pending
                    .entry(b.job)
                    .or_default()
                    .entry(b.clock)
                    .or_default()
                    .push(b);
            }
        }
        Ok(d)
    }

    /// Encodes the base state (all jobs) as an image.
    pub fn encode_base(&self) -> Result<Vec<u8>> {
        encode_image(
            &self.base,
            self.tables.values().collect(),
            self.jobs.values().cloned().collect(),
        )
    }

    /// Applies one committed command.
    pub fn apply(&mut self, req: ShardRequest) -> (ShardResponse, Vec<Effect>) {
        let mut effects = Vec::new();
        let resp = match req {
            ShardRequest::CreateTable(spec) => match self.current.create_table(&spec) {
                // Base holds the tables of current: it accepts what current
                // accepted.
                Ok(()) => match self.base.create_table(&spec) {
                    Ok(()) => {
                        self.tables.insert(spec.id, spec);
                        ShardResponse::default()
                    }
                    Err(e) => ShardResponse::refused(e),
                },
                Err(e) => ShardResponse::refused(e),
            },
            ShardRequest::RegisterJob {
                job,
                epoch,
                workers,
                deterministic,
                checkpoint_every,
            } => {
                if workers == 0 {
                    return (
                        ShardResponse::refused(format!("job {job} has no workers")),
                        effects,
                    );
                }
                match self.check_epoch(job, epoch) {
                    EpochCheck::Stale { current } => {
                        return (ShardResponse::stale(job, epoch, current), effects)
                    }
                    // A newer run of a job still registered here must first
                    // restore or drop it: registering would keep the old
                    // run's clocks (and treat the new run's batches as
                    // replays).
                    EpochCheck::Newer if self.jobs.contains_key(&job) => {
                        return (
                            ShardResponse::refused(format!(
                                "job {job}: run {epoch} must begin with a restore or a drop on shard {} (registered in run {})",
                                self.shard(),
                                self.fence(job)
                            )),
                            effects,
                        )
                    }
                    EpochCheck::Newer => {
                        self.fences.insert(job, epoch);
                    }
                    EpochCheck::Current => {}
                }
                if let Some(j) = self.jobs.get(&job) {
                    if (j.workers, j.deterministic) != (workers, deterministic) {
                        return (
                            ShardResponse::refused(format!(
                                "job {job} is registered with {} workers (deterministic: {}), not {workers} ({deterministic})",
                                j.workers, j.deterministic
                            )),
                            effects,
                        );
                    }
                }
                self.current.register_job(job, workers, deterministic);
                self.base.register_job(job, workers, deterministic);
                self.jobs.entry(job).or_insert(JobImage {
                    job,
                    workers,
                    deterministic,
                    checkpoint_every,
                    requested: BTreeSet::new(),
                    clock: 0,
                });
                ShardResponse::default()
            }
            ShardRequest::Load { epoch, table, rows } => {
                let job = match self.current.table(table) {
                    Ok(t) => t.job,
                    Err(e) => return (ShardResponse::refused(e), effects),
                };
                if let Some(r) = self.require_current(job, epoch) {
                    return (r, effects);
                }
                // Whole or not at all: every row is checked before any is
                // loaded (a refusal changes nothing, on every replica).
                // Current and base hold the same tables, so the checks on
                // one hold for the other.
                if let Err(e) = self.current.validate_load(table, &rows) {
                    return (ShardResponse::refused(e), effects);
                }
                let mut resp = ShardResponse::default();
                for (row, value) in rows {
                    let r = self
                        .current
                        .load(table, row, value.clone())
                        .and_then(|()| self.base.load(table, row, value));
                    if let Err(e) = r {
                        resp = ShardResponse::refused(e);
                        break;
                    }
                }
                resp
            }
            ShardRequest::Batch { epoch, batch } => self.apply_in_run(epoch, batch, &mut effects),
            ShardRequest::Batches { epoch, batches } => {
                let mut resp = ShardResponse::default();
                let mut duplicates = true;
                for batch in batches {
                    let mut r = self.apply_in_run(epoch, batch, &mut effects);
                    r.checkpoints.splice(0..0, resp.checkpoints.drain(..));
                    duplicates &= r.duplicate;
                    resp = r;
                    if resp.error.is_some() {
                        break;
                    }
                }
                resp.duplicate = duplicates && resp.error.is_none();
                resp
            }
            ShardRequest::Checkpoint { job, epoch, clock } => {
                match self.require_current(job, epoch) {
                    Some(r) => r,
                    None => self.request_checkpoint(job, clock, &mut effects),
                }
            }
            ShardRequest::WorkerBlob {
                job,
                epoch,
                clock,
                worker,
                data,
            } => match self.require_current(job, epoch) {
                Some(r) => r,
                None => {
                    self.blobs.insert((job, clock, worker));
                    effects.push(Effect::WorkerBlob {
                        job,
                        clock,
                        worker,
                        data,
                    });
                    ShardResponse::default()
                }
            },
            ShardRequest::DropJob { job, epoch } => match self.begin_run(job, epoch) {
                Err(r) => r,
                Ok(()) => {
                    self.current.drop_job(job);
                    self.base.drop_job(job);
                    self.jobs.remove(&job);
                    self.pending.remove(&job);
                    self.tables.retain(|_, t| t.job != job);
                    ShardResponse::default()
                }
            },
            // Needs the checkpoint store: the state machine handles it and
            // calls `restore_job`.
            ShardRequest::RestoreImage { job, .. } => {
                ShardResponse::refused(format!("restore of job {job} needs the checkpoint store"))
            }
            ShardRequest::Meta(_) => {
                ShardResponse::refused("a metadata command sent to a shard group")
            }
            ShardRequest::ForgetJob { job } => {
                self.current.drop_job(job);
                self.base.drop_job(job);
                self.jobs.remove(&job);
                self.pending.remove(&job);
                self.tables.retain(|_, t| t.job != job);
                self.blobs.retain(|&(j, _, _)| j != job);
                effects.push(Effect::Forget(job));
                ShardResponse::default()
            }
        };
        (resp, effects)
    }

    /// Replaces `job` (its tables, rows and clocks) with a checkpoint image,
    /// beginning run `epoch` (the caller checked it with [`begin_run`]).
    ///
    /// [`begin_run`]: Self::begin_run
    pub fn restore_job(&mut self, job: JobId, epoch: u64, image: &ShardImage) -> Result<()> {
        // Build both states first so a bad image changes nothing.
        let mut current = self.current.clone();
        current.drop_job(job);
        image.restore_into(&mut current)?;
        let mut base = self.base.clone();
        base.drop_job(job);
        image.restore_into(&mut base)?;
        self.current = current;
        self.base = base;
        self.pending.remove(&job);
        self.tables.retain(|_, t| t.job != job);
        for t in &image.tables {
            self.tables.insert(t.id, t.clone());
        }
        self.jobs.remove(&job);
        for j in &image.jobs {
            self.jobs.insert(j.job, j.clone());
        }
        self.fences.insert(job, epoch);
        Ok(())
    }

    /// A batch of run `epoch`: refused unless that run is the job's current.
    fn apply_in_run(
        &mut self,
        epoch: u64,
        batch: UpdateBatch,
        effects: &mut Vec<Effect>,
    ) -> ShardResponse {
        match self.require_current(batch.job, epoch) {
            Some(r) => r,
            None => self.apply_batch(batch, effects),
        }
    }

    fn apply_batch(&mut self, batch: UpdateBatch, effects: &mut Vec<Effect>) -> ShardResponse {
        let job = batch.job;
        let out = match self.current.apply_ref(&batch) {
            Ok(out) => out,
            Err(e) => return ShardResponse::refused(e),
        };
        let mut resp = ShardResponse {
            duplicate: out.duplicate,
            min_clock: Some(out.min_clock_after),
            ..Default::default()
        };
        if out.duplicate {
            return resp;
        }
        self.pending
            .entry(job)
            .or_default()
            .entry(batch.clock)
            .or_default()
            .push(batch);
        self.advance_base(job, out.min_clock_after, effects, &mut resp);
        resp
    }

    /// Feeds `base` every clock below `min_clock`, one clock at a time in
    /// worker order, writing checkpoints as their clocks complete.
    fn advance_base(
        &mut self,
        job: JobId,
        min_clock: Clock,
        effects: &mut Vec<Effect>,
        resp: &mut ShardResponse,
    ) {
        let Some(meta) = self.jobs.get(&job) else {
            return;
        };
        let mut clock = meta.clock;
        while clock < min_clock {
            let mut batches = self
                .pending
                .get_mut(&job)
                .and_then(|p| p.remove(&clock))
                .unwrap_or_default();
            batches.sort_by_key(|b| b.worker);
            for b in batches {
                if let Err(e) = self.base.apply(b) {
                    // current accepted it, so base (at an older clock of
                    // the same tables) must too.
                    tracing::error!(shard = self.shard(), job, clock, error = %e, "base refused a batch");
                    debug_assert!(false, "base refused a batch current applied: {e}");
                }
            }
            clock += 1;
            let Some(meta) = self.jobs.get_mut(&job) else {
                return;
            };
            meta.clock = clock;
            let done = clock - 1;
            let periodic = meta.checkpoint_every > 0 && clock % meta.checkpoint_every == 0;
            let asked = meta.requested.remove(&done);
            if periodic || asked {
                match self.checkpoint_image(job) {
                    Ok(image) => {
                        effects.push(Effect::Checkpoint(CheckpointImage {
                            job,
                            clock: done,
                            image,
                        }));
                        resp.checkpoints.push((job, done));
                    }
                    Err(e) => {
                        tracing::error!(shard = self.shard(), job, clock = done, error = %e, "checkpoint encode failed")
                    }
                }
            }
        }
    }

    fn request_checkpoint(
        &mut self,
        job: JobId,
        clock: Clock,
        effects: &mut Vec<Effect>,
    ) -> ShardResponse {
        let Some(meta) = self.jobs.get_mut(&job) else {
            return ShardResponse::refused(format!(
                "job {job} is not registered on shard {}",
                self.shard()
            ));
        };
        // The state at `clock` exists while the base is at `clock + 1`.
        let base = meta.clock;
        if base > clock + 1 {
            return ShardResponse::refused(format!(
                "job {job}: checkpoint at clock {clock} asked after the min clock passed it (at {base})"
            ));
        }
        if base < clock + 1 {
            meta.requested.insert(clock);
            return ShardResponse::default();
        }
        match self.checkpoint_image(job) {
            Ok(image) => {
                effects.push(Effect::Checkpoint(CheckpointImage { job, clock, image }));
                ShardResponse {
                    checkpoints: vec![(job, clock)],
                    ..Default::default()
                }
            }
            Err(e) => ShardResponse::refused(e),
        }
    }

    /// The image of one job of the base state.
    fn checkpoint_image(&self, job: JobId) -> Result<Vec<u8>> {
        let tables = self.tables.values().filter(|t| t.job == job).collect();
        let mut meta = self.jobs[&job].clone();
        meta.requested.clear();
        encode_image(&self.base, tables, vec![meta])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use petuum_core::batch::RowUpdate;
    use petuum_core::row::{AnyRow, Row};
    use petuum_core::types::{ElemType, RowKind};
    use rand::{Rng, SeedableRng};

    const WORKERS: u32 = 4;
    const STALENESS: u64 = 2;

    fn setup(d: &mut ShardData, checkpoint_every: Clock) {
        let spec = TableSpec {
            id: 1,
            name: "t".into(),
            job: 5,
            kind: RowKind::Dense,
            elem: ElemType::I64,
            columns: 3,
        };
        assert!(d.apply(ShardRequest::CreateTable(spec)).0.error.is_none());
        let reg = ShardRequest::RegisterJob {
            job: 5,
            epoch: 0,
            workers: WORKERS,
            deterministic: false,
            checkpoint_every,
        };
        assert!(d.apply(reg).0.error.is_none());
    }

    fn batch(worker: WorkerId, clock: Clock) -> UpdateBatch {
        let v = (worker as i64 + 1) * 1000 + clock as i64;
        UpdateBatch {
            job: 5,
            worker,
            clock,
            shard: 0,
            updates: vec![RowUpdate {
                table: 1,
                row: clock % 3,
                delta: AnyRow::I64(Row::Dense(vec![v, 1, -v])),
            }],
        }
    }

    /// Both replicas' current states hold the same rows and clocks.
    fn assert_same_current(a: &ShardData, b: &ShardData) {
        for r in 0..3 {
            assert_eq!(a.current.read(1, r).unwrap(), b.current.read(1, r).unwrap());
        }
        assert_eq!(
            a.current.job(5).unwrap().applied(),
            b.current.job(5).unwrap().applied()
        );
    }

    /// The state at clock `m`: a fresh shard fed only clocks below `m`.
    fn state_at(m: Clock) -> ShardState {
        let mut d = ShardData::new(0);
        setup(&mut d, 0);
        for c in 0..m {
            for w in 0..WORKERS {
                d.apply(ShardRequest::Batch {
                    epoch: 0,
                    batch: batch(w, c),
                });
            }
        }
        d.current.clone()
    }

    #[test]
    fn base_equals_the_state_at_the_min_clock_under_random_ssp_interleavings() {
        for seed in 0..20u64 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut d = ShardData::new(0);
            setup(&mut d, 3);
            let mut next = [0u64; WORKERS as usize];
            let mut checkpoints = Vec::new();
            for _ in 0..120 {
                let min = *next.iter().min().unwrap();
                // SSP(2): a worker may run at most STALENESS clocks ahead.
                let ready: Vec<usize> = (0..WORKERS as usize)
                    .filter(|&w| next[w] <= min + STALENESS)
                    .collect();
                let w = ready[rng.gen_range(0..ready.len())];
                let (resp, effects) = d.apply(ShardRequest::Batch {
                    epoch: 0,
                    batch: batch(w as u32, next[w]),
                });
                assert!(resp.error.is_none() && !resp.duplicate);
                next[w] += 1;
                let min = *next.iter().min().unwrap();
                assert_eq!(resp.min_clock, Some(min));
                assert_eq!(d.jobs[&5].clock, min);
                assert!(d
                    .pending()
                    .all(|b| b.clock >= min && b.clock < min + STALENESS + 1));
                for e in effects {
                    if let Effect::Checkpoint(c) = e {
                        assert_eq!((c.clock + 1) % 3, 0);
                        let img: ShardImage = postcard::from_bytes(&c.image).unwrap();
                        assert_eq!(img.jobs[0].clock, c.clock + 1);
                        checkpoints.push((c.clock, img));
                    }
                }
            }
            let min = *next.iter().min().unwrap();
            let want = state_at(min);
            for r in 0..3 {
                assert_eq!(
                    d.base.read(1, r).unwrap(),
                    want.read(1, r).unwrap(),
                    "seed {seed} row {r}"
                );
            }
            assert_eq!(
                d.base.job(5).unwrap().applied(),
                vec![min; WORKERS as usize]
            );
            // Every checkpoint equals the state at its clock + 1.
            assert!(!checkpoints.is_empty());
            for (clock, img) in checkpoints {
                let want = state_at(clock + 1);
                for (t, r, v) in &img.rows {
                    assert_eq!(
                        &want.read(*t, *r).unwrap(),
                        v,
                        "seed {seed} checkpoint {clock}"
                    );
                }
                assert_eq!(img.rows.len(), want.row_ids(1).len());
            }
            // A rebuild from base + pending matches the live replica.
            let base: ShardImage = postcard::from_bytes(&d.encode_base().unwrap()).unwrap();
            let rebuilt =
                ShardData::from_parts(&base, d.pending().cloned().collect(), &[]).unwrap();
            assert_same_current(&rebuilt, &d);
        }
    }

    /// An entry of several batches (queued clocks, a node's workers) leaves
    /// the shard, its base and its checkpoints exactly as the same batches
    /// in separate entries; a replayed entry is a duplicate, and a refused
    /// batch stops the entry with those before it applied.
    #[test]
    fn an_entry_of_batches_equals_its_batches_one_by_one() {
        for seed in 0..10u64 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let (mut one, mut many) = (ShardData::new(0), ShardData::new(0));
            setup(&mut one, 2);
            setup(&mut many, 2);
            let mut next = [0u64; WORKERS as usize];
            let (mut cps_one, mut cps_many) = (Vec::new(), Vec::new());
            for _ in 0..40 {
                let mut group = Vec::new();
                for _ in 0..rng.gen_range(1..6) {
                    let min = *next.iter().min().unwrap();
                    let ready: Vec<usize> = (0..WORKERS as usize)
                        .filter(|&w| next[w] <= min + STALENESS)
                        .collect();
                    let w = ready[rng.gen_range(0..ready.len())];
                    group.push(batch(w as u32, next[w]));
                    next[w] += 1;
                }
                let mut last = ShardResponse::default();
                for b in group.clone() {
                    let (r, fx) = one.apply(ShardRequest::Batch { epoch: 0, batch: b });
                    assert!(r.error.is_none());
                    cps_one.extend(r.checkpoints.iter().copied());
                    cps_one.extend(fx.into_iter().filter_map(|e| match e {
                        Effect::Checkpoint(c) => Some((5, c.clock)),
                        _ => None,
                    }));
                    last = r;
                }
                let (r, fx) = many.apply(ShardRequest::Batches {
                    epoch: 0,
                    batches: group.clone(),
                });
                assert!(r.error.is_none() && !r.duplicate);
                assert_eq!(r.min_clock, last.min_clock);
                cps_many.extend(r.checkpoints.iter().copied());
                cps_many.extend(fx.into_iter().filter_map(|e| match e {
                    Effect::Checkpoint(c) => Some((5, c.clock)),
                    _ => None,
                }));
                // A replay of the whole entry changes nothing.
                let (r, fx) = many.apply(ShardRequest::Batches {
                    epoch: 0,
                    batches: group,
                });
                assert!(r.error.is_none() && r.duplicate && fx.is_empty());
            }
            assert_eq!(cps_one, cps_many, "seed {seed}");
            assert_eq!(one.encode_base().unwrap(), many.encode_base().unwrap());
            assert_same_current(&one, &many);
            // A gap stops the entry; the batch before it is applied.
            let w = 0u32;
            let c = next[0];
            let (r, _) = many.apply(ShardRequest::Batches {
                epoch: 0,
                batches: vec![batch(w, c), batch(w, c + 2), batch(w, c + 1)],
            });
            assert!(r.error.unwrap().contains("arrived before"), "seed {seed}");
            assert_eq!(many.current.job(5).unwrap().applied()[0], c + 1);
            // A stale run's entry is refused as a whole.
            let (r, _) = many.apply(ShardRequest::Batches {
                epoch: 7,
                batches: vec![batch(1, next[1])],
            });
            assert!(r.error.is_some());
        }
    }

    #[test]
    fn checkpoint_requests_are_served_now_later_or_refused_when_too_late() {
        let mut d = ShardData::new(0);
        setup(&mut d, 0);
        for w in 0..WORKERS {
            d.apply(ShardRequest::Batch {
                epoch: 0,
                batch: batch(w, 0),
            });
        }
        // Base at clock 1: the state at clock 0 is available now.
        let (r, fx) = d.apply(ShardRequest::Checkpoint {
            job: 5,
            epoch: 0,
            clock: 0,
        });
        assert_eq!((r.checkpoints.clone(), fx.len()), (vec![(5, 0)], 1));
        // Clock 1 is written when it completes.
        let (r, fx) = d.apply(ShardRequest::Checkpoint {
            job: 5,
            epoch: 0,
            clock: 1,
        });
        assert!(r.error.is_none() && fx.is_empty());
        let mut written = Vec::new();
        for w in 0..WORKERS {
            written.extend(
                d.apply(ShardRequest::Batch {
                    epoch: 0,
                    batch: batch(w, 1),
                })
                .0
                .checkpoints,
            );
        }
        assert_eq!(written, vec![(5, 1)]);
        // Clock 0 is gone now.
        let (r, _) = d.apply(ShardRequest::Checkpoint {
            job: 5,
            epoch: 0,
            clock: 0,
        });
        assert!(r.error.unwrap().contains("passed"));
        let (r, _) = d.apply(ShardRequest::Checkpoint {
            job: 6,
            epoch: 0,
            clock: 0,
        });
        assert!(r.error.unwrap().contains("not registered"));
    }

    fn image_at(d: &ShardData, job: JobId) -> ShardImage {
        postcard::from_bytes(&d.checkpoint_image(job).unwrap()).unwrap()
    }

    fn reg(epoch: u64) -> ShardRequest {
        ShardRequest::RegisterJob {
            job: 5,
            epoch,
            workers: WORKERS,
            deterministic: false,
            checkpoint_every: 0,
        }
    }

    /// The bug of the superseded run: after a rollback to clock 1, a batch
    /// of the old run for clock 1 used to be accepted, and the new run's
    /// own batch for clock 1 was then dropped as a replay.
    #[test]
    fn a_superseded_runs_batch_after_a_rollback_is_refused() {
        let mut d = ShardData::new(0);
        setup(&mut d, 0);
        for w in 0..WORKERS {
            d.apply(ShardRequest::Batch {
                epoch: 0,
                batch: batch(w, 0),
            });
        }
        // The state after clock 0, as a checkpoint part.
        let img = image_at(&d, 5);
        let old_run_batch = |d: &mut ShardData| {
            d.apply(ShardRequest::Batch {
                epoch: 0,
                batch: batch(0, 1),
            })
            .0
        };
        // Run 1 begins: the job rolls back to the state after clock 0.
        d.begin_run(5, 1).unwrap();
        d.restore_job(5, 1, &img).unwrap();
        let stale = old_run_batch(&mut d);
        assert_eq!(stale.superseded_by, Some(1), "{stale:?}");
        assert!(stale.error.unwrap().contains("superseded"));
        // The new run's batch for clock 1 is applied, not taken for a replay.
        let (r, _) = d.apply(ShardRequest::Batch {
            epoch: 1,
            batch: batch(0, 1),
        });
        assert!(r.error.is_none() && !r.duplicate, "{r:?}");
        assert_eq!(d.current.job(5).unwrap().applied()[0], 2);
        // Every other command of run 0 is refused the same way.
        for req in [
            reg(0),
            ShardRequest::Checkpoint {
                job: 5,
                epoch: 0,
                clock: 1,
            },
            ShardRequest::WorkerBlob {
                job: 5,
                epoch: 0,
                clock: 1,
                worker: 0,
                data: vec![1],
            },
            ShardRequest::Load {
                epoch: 0,
                table: 1,
                rows: vec![(0, AnyRow::I64(Row::Dense(vec![1, 2, 3])))],
            },
            ShardRequest::DropJob { job: 5, epoch: 0 },
        ] {
            let (r, fx) = d.apply(req.clone());
            assert_eq!(r.superseded_by, Some(1), "{req:?}: {r:?}");
            assert!(fx.is_empty());
        }
        assert!(d.live_in(5, 1));
    }

    #[test]
    fn a_run_begins_with_a_drop_or_a_restore_and_reads_wait_for_its_registration() {
        use petuum_core::service::FetchRequest;
        let mut d = ShardData::new(0);
        setup(&mut d, 0);
        d.apply(ShardRequest::Batch {
            epoch: 0,
            batch: batch(0, 0),
        });
        // Registering run 1 over run 0's clocks is refused: it must drop or
        // restore first.
        let (r, _) = d.apply(reg(1));
        assert!(r.error.unwrap().contains("must begin"));
        // A batch of a run that has not begun is refused (not stale).
        let (r, _) = d.apply(ShardRequest::Batch {
            epoch: 2,
            batch: batch(1, 0),
        });
        assert!(r.error.unwrap().contains("has not begun") && r.superseded_by.is_none());
        // Run 1 from scratch: drop, table, load, register.
        assert!(d
            .apply(ShardRequest::DropJob { job: 5, epoch: 1 })
            .0
            .error
            .is_none());
        let read = FetchRequest {
            job: 5,
            worker: 0,
            table: 1,
            row: 0,
            min_clock: Some(0),
            own_clock: 0,
        };
        // Dropped, not registered again yet: a read of run 1 waits (the
        // loads may be on their way); a read of run 0 is refused.
        assert_eq!(d.try_fetch(&read, 1).unwrap(), None);
        assert!(matches!(
            d.try_fetch(&read, 0),
            Err(petuum_core::TableError::StaleEpoch { current: 1, .. })
        ));
        setup_table(&mut d);
        let load = ShardRequest::Load {
            epoch: 1,
            table: 1,
            rows: vec![(0, AnyRow::I64(Row::Dense(vec![7, 8, 9])))],
        };
        assert!(d.apply(load).0.error.is_none());
        assert_eq!(d.try_fetch(&read, 1).unwrap(), None);
        assert!(d.apply(reg(1)).0.error.is_none());
        let snap = d.try_fetch(&read, 1).unwrap().expect("registered: served");
        assert_eq!(*snap.row, AnyRow::I64(Row::Dense(vec![7, 8, 9])));
        // Idempotent within the run; a changed worker count is refused.
        assert!(d.apply(reg(1)).0.error.is_none());
        let (r, _) = d.apply(ShardRequest::RegisterJob {
            job: 5,
            epoch: 1,
            workers: WORKERS + 1,
            deterministic: false,
            checkpoint_every: 0,
        });
        assert!(r.error.unwrap().contains("registered with"));
        // The fence outlives the job and survives a rebuild from a snapshot.
        assert!(d
            .apply(ShardRequest::DropJob { job: 5, epoch: 3 })
            .0
            .error
            .is_none());
        let base: ShardImage = postcard::from_bytes(&d.encode_base().unwrap()).unwrap();
        let fences: Vec<_> = d.fences().collect();
        let mut rebuilt = ShardData::from_parts(&base, vec![], &fences).unwrap();
        assert_eq!(rebuilt.apply(reg(2)).0.superseded_by, Some(3));
    }

    fn setup_table(d: &mut ShardData) {
        let spec = TableSpec {
            id: 1,
            name: "t".into(),
            job: 5,
            kind: RowKind::Dense,
            elem: ElemType::I64,
            columns: 3,
        };
        assert!(d.apply(ShardRequest::CreateTable(spec)).0.error.is_none());
    }
}
