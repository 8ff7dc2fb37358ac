//! Runs an algorithm's workers on one node: one thread per worker, each
//! looping `step` then `clock`, with per-clock progress aggregated over
//! workers and reported to a sink.

use crate::algorithm::{
    AlgoWorker, Algorithm, BoxError, ModelSummary, TableDecl, TableLoader, TableReader,
};
use crate::consistency::Consistency;
use crate::error::TableError;
use crate::types::{Clock, JobId, TableId, TableSpec, WorkerId};
use crate::worker::{Node, WorkerCtx};
use parking_lot::Mutex;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How to run one job on this node.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    pub job: JobId,
    /// Id of the job's first table; the others follow.
    pub first_table: TableId,
    pub workers: u32,
    pub consistency: Consistency,
    pub clocks: Clock,
    pub seed: u64,
    pub deterministic: bool,
}

/// Clock metrics for a progress line: `{sep}name value` each (empty when
/// none), values as [`format_metric`] writes them.
pub fn metrics_suffix<'a>(metrics: impl Iterator<Item = (&'a str, f64)>, sep: &str) -> String {
    metrics
        .map(|(k, v)| format!("{sep}{k} {}", format_metric(v)))
        .collect()
}

/// A metric value for people: whole numbers as they are, others to 4
/// decimals between 0.001 and 10,000, in scientific notation beyond.
pub fn format_metric(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v}")
    } else if (1e-3..1e4).contains(&v.abs()) {
        format!("{v:.4}")
    } else {
        format!("{v:.4e}")
    }
}

/// Progress of the job after every worker finished a clock.
#[derive(Clone, Debug, PartialEq)]
pub struct ClockProgress {
    /// The clock just finished (1-based count of finished clocks).
    pub clock: Clock,
    pub clocks: Clock,
    /// The workers' objective: their summed parts divided by `weight`
    /// (the plain sum when `weight` is 0).
    pub objective: f64,
    /// Summed weight of the objective (e.g. samples), so partial
    /// aggregates (one host's workers) can be merged.
    pub weight: f64,
    pub samples: u64,
    /// Samples per second over this clock.
    pub throughput: f64,
    pub elapsed_s: f64,
    /// The job's other values after this clock (`StepStats::metrics` of
    /// the lowest-numbered worker that reported any).
    pub metrics: Vec<(&'static str, f64)>,
    /// Table traffic of this node's workers since the run started, summed
    /// over them (as of their last finished clock).
    pub traffic: Traffic,
}

/// Table traffic of a set of workers, cumulative.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Traffic {
    pub pushed_bytes: u64,
    pub pulled_bytes: u64,
    /// Seconds spent waiting on reads (staleness bound included).
    pub read_wait_s: f64,
    /// Seconds `clock()` waited for pushed clocks to be committed.
    pub commit_wait_s: f64,
    /// Bytes of early pushes on the network (managed communication).
    pub preview_bytes: u64,
}

/// Receives progress as it happens.
pub trait ProgressSink: Send + Sync {
    fn on_clock(&self, progress: &ClockProgress);
}

/// Receives consistent checkpoints (docs/design.md §3).
pub trait Checkpointer: Send + Sync {
    /// Called while every worker is stopped after finishing `clock` clocks,
    /// so the shards hold exactly the state at `clock`: every increment of
    /// clocks `< clock` applied, none later. `worker_states[w]` is worker
    /// `w`'s `save_state()`. The checkpoint counts only once this returns Ok.
    fn checkpoint(
        &self,
        job: JobId,
        clock: Clock,
        worker_states: &[Vec<u8>],
    ) -> Result<(), BoxError>;
}

/// Where a resumed job starts: the shards already hold the state at
/// `clock` (restored by the caller), and the workers get their states back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    pub clock: Clock,
    pub worker_states: Vec<Vec<u8>>,
}

/// Everything around a run besides its configuration.
pub struct RunHooks<'a> {
    pub progress: &'a dyn ProgressSink,
    /// Set to stop the job. With a checkpointer the workers first agree on
    /// a clock every one of them can still reach, checkpoint there and stop
    /// with [`JobError::Paused`] (preemption); without one they stop at once.
    pub stop: &'a AtomicBool,
    /// Take a checkpoint every `checkpoint_every` clocks (0: only on stop).
    pub checkpoint_every: Clock,
    pub checkpointer: Option<&'a dyn Checkpointer>,
    pub resume: Option<Resume>,
}

/// A sink that ignores progress.
pub struct NoProgress;
impl ProgressSink for NoProgress {
    fn on_clock(&self, _: &ClockProgress) {}
}

/// Why a job did not finish.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("table setup failed: {0}")]
    Table(#[from] TableError),
    #[error("initialisation failed: {0}")]
    Init(BoxError),
    #[error("worker {worker} failed at clock {clock}: {source}")]
    Worker {
        worker: WorkerId,
        clock: Clock,
        source: BoxError,
    },
    #[error("worker {worker} panicked: {message}")]
    Panic { worker: WorkerId, message: String },
    #[error("cancelled")]
    Cancelled,
    #[error("paused at the checkpoint of clock {clock}")]
    Paused { clock: Clock },
    #[error("checkpoint at clock {clock} failed: {source}")]
    Checkpoint { clock: Clock, source: BoxError },
    #[error("model export failed: {0}")]
    Export(BoxError),
}

/// What a finished run produced.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOutcome {
    /// Clocks run: the job's `clocks`, or fewer when the workers finished
    /// early ([`AlgoWorker::finished`]).
    pub clocks: Clock,
    pub objective: f64,
    pub seconds: f64,
    pub model: ModelSummary,
    pub tables: Vec<TableSpec>,
}

/// Table specs for a job from the algorithm's declarations.
pub fn table_specs(job: JobId, first: TableId, decls: &[TableDecl]) -> Vec<TableSpec> {
    decls
        .iter()
        .enumerate()
        .map(|(i, d)| TableSpec {
            id: first + i as TableId,
            name: d.name.clone(),
            job,
            kind: d.kind,
            elem: d.elem,
            columns: d.columns,
        })
        .collect()
}

/// The RNG stream of one worker in one clock: the same for the same
/// (seed, worker, clock) whatever happened before, which is what makes a
/// resumed deterministic run identical to an uninterrupted one.
pub fn step_rng(seed: u64, worker: WorkerId, clock: Clock) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(((worker as u64) << 40) ^ clock);
    rng
}

#[derive(Default)]
struct ClockAcc {
    reported: u32,
    objective: f64,
    weight: f64,
    samples: u64,
    /// The metrics of the lowest-numbered worker that reported any.
    metrics: Option<(WorkerId, crate::algorithm::ClockMetrics)>,
}

struct Aggregator<'a> {
    workers: u32,
    clocks: Clock,
    start: Instant,
    last: Mutex<(Instant, BTreeMap<Clock, ClockAcc>)>,
    sink: &'a dyn ProgressSink,
    final_objective: Mutex<f64>,
    /// Each worker's newest counters.
    traffic: Mutex<BTreeMap<WorkerId, crate::worker::WorkerStats>>,
}

impl Aggregator<'_> {
    fn report(
        &self,
        clock: Clock,
        s: crate::algorithm::StepStats,
        worker: crate::worker::WorkerStats,
        w: WorkerId,
    ) {
        self.traffic.lock().insert(w, worker);
        let mut guard = self.last.lock();
        let (last, pending) = &mut *guard;
        let acc = pending.entry(clock).or_default();
        acc.reported += 1;
        acc.objective += s.objective;
        acc.weight += s.weight;
        acc.samples += s.samples;
        if !s.metrics.is_empty() && acc.metrics.is_none_or(|(v, _)| w < v) {
            acc.metrics = Some((w, s.metrics));
        }
        // Clocks complete in order: a worker cannot finish clock c + 1
        // before every worker... under async it can, so emit in order.
        while let Some(entry) = pending.first_entry() {
            if entry.get().reported < self.workers {
                break;
            }
            let c = *entry.key();
            let acc = entry.remove();
            let now = Instant::now();
            let dt = now.duration_since(*last).as_secs_f64().max(1e-9);
            *last = now;
            let objective = if acc.weight > 0.0 {
                acc.objective / acc.weight
            } else {
                acc.objective
            };
            *self.final_objective.lock() = objective;
            self.sink.on_clock(&ClockProgress {
                clock: c + 1,
                clocks: self.clocks,
                objective,
                weight: acc.weight,
                samples: acc.samples,
                throughput: acc.samples as f64 / dt,
                elapsed_s: now.duration_since(self.start).as_secs_f64(),
                traffic: self.traffic(),
                metrics: acc
                    .metrics
                    .map(|(_, m)| m.iter().collect())
                    .unwrap_or_default(),
            });
        }
    }

    /// The workers' traffic so far, summed.
    fn traffic(&self) -> Traffic {
        let all = self.traffic.lock();
        Traffic {
            pushed_bytes: all.values().map(|s| s.bytes_pushed).sum(),
            pulled_bytes: all.values().map(|s| s.bytes_pulled).sum(),
            read_wait_s: all.values().map(|s| s.wait.as_secs_f64()).sum(),
            commit_wait_s: all.values().map(|s| s.commit_wait.as_secs_f64()).sum(),
            preview_bytes: all.values().map(|s| s.preview_bytes).sum(),
        }
    }
}

/// Runs a job to completion on `node` and exports its model to `model_path`.
pub fn run_job(
    node: &Arc<Node>,
    algo: &dyn Algorithm,
    cfg: &RunConfig,
    model_path: &Path,
    sink: &dyn ProgressSink,
    cancel: &AtomicBool,
) -> Result<RunOutcome, JobError> {
    run_job_with(
        node,
        algo,
        cfg,
        model_path,
        RunHooks {
            progress: sink,
            stop: cancel,
            checkpoint_every: 0,
            checkpointer: None,
            resume: None,
        },
    )
}

/// Clock bookkeeping shared by the workers for stopping at a common clock.
#[derive(Default)]
struct StopPlan {
    /// Highest clock count any worker has finished.
    max_done: Clock,
    /// The clock count at which every worker stops, once decided.
    stop_at: Option<Clock>,
}

/// What the workers share for checkpoints.
struct CheckpointSync<'a> {
    every: Clock,
    sink: Option<&'a dyn Checkpointer>,
    barrier: std::sync::Barrier,
    states: Mutex<Vec<Vec<u8>>>,
    failed: Mutex<Option<String>>,
    plan: Mutex<StopPlan>,
}

/// A worker as the algorithm built it, or why it could not.
type Built = Result<Box<dyn AlgoWorker>, BoxError>;

/// The algorithm's `workers` workers, built concurrently (each prepares its
/// share of the data), in worker order. A panic in one is re-raised.
fn make_workers(algo: &dyn Algorithm, workers: u32) -> Vec<Built> {
    if workers <= 1 {
        return (0..workers).map(|w| algo.worker(w, workers)).collect();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| scope.spawn(move || algo.worker(w, workers)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Moves the calling thread (worker `i` of a job) to core `i mod cores`,
/// then lets it run anywhere again. New threads start on their parent's
/// core, and the workers of a job wake each other every clock; the
/// scheduler places a woken thread on its waker's core and moves it to an
/// idle one only at a later balancing tick (milliseconds), so a short job's
/// workers can take turns on one core while the others idle. The move is
/// an initial placement only: the balancer is free to change it.
#[cfg(target_os = "linux")]
fn spread(i: usize) {
    // SAFETY: `cpu_set_t` is plain data; the calls read and write only the
    // sets passed and act on the calling thread (pid 0).
    unsafe {
        let mut all: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut all) != 0 {
            return;
        }
        let cores: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &all))
            .collect();
        if cores.len() < 2 {
            return;
        }
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cores[i % cores.len()], &mut one);
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_setaffinity(0, size, &one) == 0 {
            libc::sched_setaffinity(0, size, &all);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn spread(_: usize) {}

/// [`run_job`] with checkpoints, stopping and resuming.
pub fn run_job_with(
    node: &Arc<Node>,
    algo: &dyn Algorithm,
    cfg: &RunConfig,
    model_path: &Path,
    hooks: RunHooks<'_>,
) -> Result<RunOutcome, JobError> {
    let start = Instant::now();
    let service = node.service().as_ref();
    let tables = table_specs(cfg.job, cfg.first_table, &algo.tables());
    for t in &tables {
        service.create_table(t)?;
    }
    let start_clock = hooks.resume.as_ref().map_or(0, |r| r.clock);
    if hooks.resume.is_none() {
        algo.initialize(&TableLoader::new(service, &tables))
            .map_err(JobError::Init)?;
    }
    // Registered after the initial rows: on a replicated backend a replica
    // that has the job registered has applied its loads, so workers' reads
    // (served by any replica) see them (docs/design.md §7).
    service.register_job(cfg.job, cfg.workers, cfg.deterministic)?;

    let mut workers: Vec<Box<dyn AlgoWorker>> = Vec::with_capacity(cfg.workers as usize);
    for (w, worker) in make_workers(algo, cfg.workers).into_iter().enumerate() {
        let mut worker = worker.map_err(JobError::Init)?;
        if let Some(r) = &hooks.resume {
            let state = r.worker_states.get(w).map(Vec::as_slice).unwrap_or(&[]);
            worker.restore_state(state).map_err(JobError::Init)?;
        }
        workers.push(worker);
    }
    let agg = Aggregator {
        workers: cfg.workers,
        clocks: cfg.clocks,
        start,
        last: Mutex::new((start, BTreeMap::new())),
        sink: hooks.progress,
        final_objective: Mutex::new(f64::NAN),
        traffic: Mutex::new(BTreeMap::new()),
    };
    let sync = CheckpointSync {
        every: hooks.checkpoint_every,
        sink: hooks.checkpointer,
        barrier: std::sync::Barrier::new(cfg.workers as usize),
        states: Mutex::new(vec![Vec::new(); cfg.workers as usize]),
        failed: Mutex::new(None),
        plan: Mutex::new(StopPlan {
            max_done: start_clock,
            stop_at: None,
        }),
    };
    let cancel = hooks.stop;
    let first_error: Mutex<Option<JobError>> = Mutex::new(None);
    let all: Vec<WorkerId> = (0..cfg.workers).collect();
    node.group(cfg.job, &all, cfg.consistency, cfg.deterministic);
    std::thread::scope(|scope| {
        for (w, mut algo_worker) in workers.into_iter().enumerate() {
            let w = w as WorkerId;
            let (agg, first_error, tables, sync) = (&agg, &first_error, &tables, &sync);
            std::thread::Builder::new()
                .name(format!("worker-{w}"))
                .spawn_scoped(scope, move || {
                    spread(w as usize);
                    let mut ctx = WorkerCtx::new(
                        node.clone(),
                        cfg.job,
                        w,
                        cfg.workers,
                        cfg.consistency,
                        tables,
                        start_clock,
                    );
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_worker(&mut ctx, algo_worker.as_mut(), cfg, agg, cancel, sync)
                    }));
                    let err = match result {
                        Ok(Ok(())) => return,
                        Ok(Err(e)) => e,
                        Err(panic) => JobError::Panic {
                            worker: w,
                            message: panic_message(&panic),
                        },
                    };
                    let reason = err.to_string();
                    // A pause is the plan (every worker checkpointed and
                    // stopped together), not a failure to spread.
                    let paused = matches!(err, JobError::Paused { .. });
                    let mut slot = first_error.lock();
                    // Errors caused by another worker's abort are not the root cause.
                    let is_echo = matches!(&err, JobError::Worker { source, .. }
                        if matches!(source.downcast_ref::<TableError>(), Some(TableError::Aborted { .. })));
                    let replace = match slot.as_ref() {
                        None => !is_echo,
                        // Every worker reports the pause; keep one.
                        Some(_) => false,
                    };
                    if replace {
                        *slot = Some(err);
                    }
                    drop(slot);
                    if !paused {
                        service.abort_job(cfg.job, &reason);
                    }
                })
                .expect("spawn worker thread");
        }
    });
    if let Some(e) = first_error.into_inner() {
        service.drop_job(cfg.job);
        node.cache().forget_job(cfg.job);
        return Err(e);
    }
    if cancel.load(Ordering::Relaxed) && sync.sink.is_none() {
        service.drop_job(cfg.job);
        return Err(JobError::Cancelled);
    }
    let model = algo
        .export(&TableReader::new(service, &tables), model_path)
        .map_err(JobError::Export)?;
    let objective = *agg.final_objective.lock();
    let clocks = sync.plan.lock().max_done.min(cfg.clocks);
    service.drop_job(cfg.job);
    node.cache().forget_job(cfg.job);
    Ok(RunOutcome {
        clocks,
        objective,
        seconds: start.elapsed().as_secs_f64(),
        model,
        tables,
    })
}

fn run_worker(
    ctx: &mut WorkerCtx,
    algo_worker: &mut dyn AlgoWorker,
    cfg: &RunConfig,
    agg: &Aggregator<'_>,
    cancel: &AtomicBool,
    sync: &CheckpointSync<'_>,
) -> Result<(), JobError> {
    let w = ctx.worker();
    while ctx.clock_now() < cfg.clocks {
        let c = ctx.clock_now();
        if cancel.load(Ordering::Relaxed) && sync.sink.is_none() {
            return Err(JobError::Worker {
                worker: w,
                clock: c,
                source: Box::new(TableError::Aborted {
                    job: cfg.job,
                    reason: "cancelled".into(),
                }),
            });
        }
        step_and_clock(ctx, algo_worker, cfg, agg)?;
        let done = c + 1;
        if algo_worker.finished() {
            // Converged: every worker decides this after the same clock.
            let mut plan = sync.plan.lock();
            plan.max_done = plan.max_done.max(done);
            drop(plan);
            return flush(ctx);
        }
        let stop_here = {
            let mut plan = sync.plan.lock();
            plan.max_done = plan.max_done.max(done);
            if plan.stop_at.is_none() && cancel.load(Ordering::Relaxed) {
                // Workers that finished max_done before this may have moved
                // on, but none can have finished max_done + 1 without seeing
                // this decision: every worker stops there. A job that would
                // end by then simply finishes.
                plan.stop_at = Some(plan.max_done + 1);
            }
            plan.stop_at == Some(done) && done < cfg.clocks
        };
        let periodic = sync.every > 0 && done.is_multiple_of(sync.every) && done < cfg.clocks;
        if sync.sink.is_some() && (periodic || stop_here) {
            checkpoint_barrier(ctx, algo_worker, cfg, sync, done)?;
            if stop_here {
                return Err(JobError::Paused { clock: done });
            }
        }
    }
    flush(ctx)
}

/// One clock of one worker: its step with the clock's random stream, the
/// objective checked, `clock()`, and the step's stats to the aggregator.
fn step_and_clock(
    ctx: &mut WorkerCtx,
    algo_worker: &mut dyn AlgoWorker,
    cfg: &RunConfig,
    agg: &Aggregator<'_>,
) -> Result<(), JobError> {
    let (w, c) = (ctx.worker(), ctx.clock_now());
    let fail = |source: BoxError| JobError::Worker {
        worker: w,
        clock: c,
        source,
    };
    let mut rng = step_rng(cfg.seed, w, c);
    let stats = algo_worker.step(ctx, &mut rng).map_err(fail)?;
    if !stats.objective.is_finite() {
        return Err(fail(
            format!(
                "objective is {} (diverged; lower the learning rate)",
                stats.objective
            )
            .into(),
        ));
    }
    ctx.clock().map_err(|e| fail(Box::new(e)))?;
    agg.report(c, stats, ctx.stats(), w);
    Ok(())
}

/// All workers stop after `done` clocks; the barrier's leader writes the
/// checkpoint; nobody goes on until it is written.
fn checkpoint_barrier(
    ctx: &WorkerCtx,
    algo_worker: &dyn AlgoWorker,
    cfg: &RunConfig,
    sync: &CheckpointSync<'_>,
    done: Clock,
) -> Result<(), JobError> {
    sync.states.lock()[ctx.worker() as usize] = algo_worker.save_state();
    if sync.barrier.wait().is_leader() {
        let states = sync.states.lock().clone();
        let sink = sync.sink.expect("checked by the caller");
        if let Err(e) = sink.checkpoint(cfg.job, done, &states) {
            *sync.failed.lock() = Some(e.to_string());
        }
    }
    sync.barrier.wait();
    if let Some(msg) = sync.failed.lock().clone() {
        return Err(JobError::Checkpoint {
            clock: done,
            source: msg.into(),
        });
    }
    Ok(())
}

/// The message a thread panicked with (`"unknown panic"` when its payload
/// is not a string).
pub fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// What a host running some of a job's workers reports: progress over
/// its workers (as a [`ProgressSink`]) and their states at checkpoints.
pub trait WorkerHooks: ProgressSink {
    /// Worker `worker` finished `clock` clocks, a checkpoint clock
    /// (`clock % checkpoint_every == 0`): persist its state. The worker
    /// goes on when this returns.
    fn save_worker(&self, worker: WorkerId, clock: Clock, state: Vec<u8>) -> Result<(), BoxError>;
}

/// Runs the workers `local` of a job whose tables exist and are
/// initialised (or restored to `start`), without a barrier with the
/// others: each worker checkpoints its own state as it passes a
/// checkpoint clock, and the shards write their images of that clock by
/// themselves (registered with `checkpoint_every`). `states` holds the
/// restored workers' states. Setting `abort` makes the workers stop with
/// an error at their next clock.
#[allow(clippy::too_many_arguments)]
pub fn run_workers(
    node: &Arc<Node>,
    algo: &dyn Algorithm,
    cfg: &RunConfig,
    local: &[WorkerId],
    start: Clock,
    states: &BTreeMap<WorkerId, Vec<u8>>,
    checkpoint_every: Clock,
    abort: &AtomicBool,
    hooks: &dyn WorkerHooks,
) -> Result<(), JobError> {
    let tables = table_specs(cfg.job, cfg.first_table, &algo.tables());
    // One after another: on a cluster node the workers' set-up shares the
    // cores with the node's Raft groups, and a burst of concurrent set-ups
    // (every local worker of every job placed at once after a fault) is
    // what a starved heartbeat is made of.
    let mut workers = Vec::with_capacity(local.len());
    for &w in local {
        let mut worker = algo.worker(w, cfg.workers).map_err(JobError::Init)?;
        if start > 0 {
            let state = states.get(&w).ok_or_else(|| {
                JobError::Init(
                    format!("no checkpointed state for worker {w} at clock {start}").into(),
                )
            })?;
            worker.restore_state(state).map_err(JobError::Init)?;
        }
        workers.push((w, worker));
    }
    let began = Instant::now();
    let agg = Aggregator {
        workers: local.len() as u32,
        clocks: cfg.clocks,
        start: began,
        last: Mutex::new((began, BTreeMap::new())),
        sink: hooks,
        final_objective: Mutex::new(f64::NAN),
        traffic: Mutex::new(BTreeMap::new()),
    };
    let first_error: Mutex<Option<JobError>> = Mutex::new(None);
    node.group(cfg.job, local, cfg.consistency, cfg.deterministic);
    std::thread::scope(|scope| {
        for (w, mut algo_worker) in workers {
            let (tables, agg, first_error) = (&tables, &agg, &first_error);
            std::thread::Builder::new()
                .name(format!("worker-{w}"))
                .spawn_scoped(scope, move || {
                    let mut ctx = WorkerCtx::new(
                        node.clone(),
                        cfg.job,
                        w,
                        cfg.workers,
                        cfg.consistency,
                        tables,
                        start,
                    );
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        loop_worker(
                            &mut ctx,
                            algo_worker.as_mut(),
                            cfg,
                            checkpoint_every,
                            abort,
                            hooks,
                            agg,
                        )
                    }));
                    let err = match result {
                        Ok(Ok(())) => return,
                        Ok(Err(e)) => e,
                        Err(panic) => JobError::Panic {
                            worker: w,
                            message: panic_message(&panic),
                        },
                    };
                    let reason = err.to_string();
                    let mut slot = first_error.lock();
                    // Keep the root cause, not another worker's echo of it.
                    let replace = match slot.as_ref() {
                        None => true,
                        Some(prev) => is_abort_echo(prev) && !is_abort_echo(&err),
                    };
                    if replace {
                        *slot = Some(err);
                    }
                    drop(slot);
                    // Stop this host's other workers.
                    node.service().abort_job(cfg.job, &reason);
                })
                .expect("spawn worker thread");
        }
    });
    // Where this host's workers' time went (the rest is computation).
    let t = agg.traffic();
    tracing::info!(
        workers = local.len(),
        wall_s = began.elapsed().as_secs_f64(),
        read_wait_s = t.read_wait_s,
        commit_wait_s = t.commit_wait_s,
        "workers' waits"
    );
    match first_error.into_inner() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// An error caused by another worker's abort of the job.
fn is_abort_echo(e: &JobError) -> bool {
    matches!(e, JobError::Worker { source, .. }
        if matches!(source.downcast_ref::<TableError>(), Some(TableError::Aborted { .. })))
}

fn loop_worker(
    ctx: &mut WorkerCtx,
    algo_worker: &mut dyn AlgoWorker,
    cfg: &RunConfig,
    every: Clock,
    abort: &AtomicBool,
    hooks: &dyn WorkerHooks,
    agg: &Aggregator<'_>,
) -> Result<(), JobError> {
    while ctx.clock_now() < cfg.clocks {
        if abort.load(Ordering::Relaxed) {
            return Err(JobError::Worker {
                worker: ctx.worker(),
                clock: ctx.clock_now(),
                source: Box::new(TableError::Aborted {
                    job: cfg.job,
                    reason: "stopped".into(),
                }),
            });
        }
        step_and_clock(ctx, algo_worker, cfg, agg)?;
        let done = ctx.clock_now();
        if algo_worker.finished() {
            return flush(ctx);
        }
        if every > 0 && done.is_multiple_of(every) && done < cfg.clocks {
            hooks
                .save_worker(ctx.worker(), done, algo_worker.save_state())
                .map_err(|source| JobError::Checkpoint {
                    clock: done,
                    source,
                })?;
        }
    }
    flush(ctx)
}

/// A worker's end: every clock's batches acknowledged before it reports
/// itself done (pipelined clocks may still be committing).
fn flush(ctx: &mut WorkerCtx) -> Result<(), JobError> {
    ctx.flush().map_err(|e| JobError::Worker {
        worker: ctx.worker(),
        clock: ctx.clock_now(),
        source: Box::new(e),
    })
}
