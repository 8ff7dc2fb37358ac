//! This node's part of one run (epoch) of a job: the workers the metadata
//! group placed here. The coordinator (worker 0's node) first rolls the
//! shards back to the newest complete checkpoint (or clears them and runs
//! the algorithm's initialisation) and marks the epoch ready; every host
//! then runs its workers against the cluster's shards, saves their states
//! at each checkpoint clock and reports progress. When every host is done,
//! the coordinator exports the model, stores it replicated, and reports
//! the end.

use super::{now_ms, MODEL_CLOCK, TABLES_PER_JOB};
use petuum_cluster::jobs::{HostReport, JobCommand, JobRecord, JobResult, RunEnd};
use petuum_cluster::meta::MetaCommand;
use petuum_cluster::retry::Retry;
use petuum_cluster::wire::{DataError, Refusal};
use petuum_cluster::{ClusterNode, ClusterShards, ConnectOptions};
use petuum_core::algorithm::{Algorithm, BoxError, TableLoader, TableReader};
use petuum_core::runner::{
    run_workers, table_specs, ClockProgress, JobError, ProgressSink, RunConfig, WorkerHooks,
};
use petuum_core::service::ShardService;
use petuum_core::spec::JobSpec;
use petuum_core::types::{Clock, JobId, ShardId, TableId, WorkerId};
use petuum_core::worker::Node;
use petuum_core::TableError;
use petuum_storage::ShardRequest;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a host reports progress through Raft (each report is one
/// metadata write).
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// What the supervisor keeps of a run it started.
pub struct RunHandle {
    pub job: JobId,
    pub epoch: u64,
    /// Set when the run must end without reporting (cancelled, the job
    /// was reassigned, the node is stopping).
    pub abort: Arc<AtomicBool>,
    pub cancelled: Arc<AtomicBool>,
    pub shards: Arc<parking_lot::Mutex<Option<Arc<ClusterShards>>>>,
    /// Whether the run's last report is on record (the supervisor
    /// watches a run that ended without it: [`super::Jobs`]'s silent
    /// runs).
    pub last_report: Arc<parking_lot::Mutex<LastReport>>,
    pub thread: std::thread::JoinHandle<()>,
}

impl RunHandle {
    /// Makes the workers fail at their next table operation.
    pub fn abort(&self, reason: &str) {
        self.abort.store(true, Ordering::SeqCst);
        if let Some(s) = self.shards.lock().as_ref() {
            s.abort_job(self.job, reason);
        }
    }
}

/// What became of a run's last report: its `HostDone` (another host's
/// run) or its `Finish`.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum LastReport {
    /// None was made (the run ended on the way), or not yet.
    #[default]
    Unknown,
    /// Applied by the metadata group, or refused by it (the epoch was
    /// over): nothing to do.
    OnRecord,
    /// Not through within the report's retries (the metadata group
    /// unreachable all along): to be sent again.
    Lost(JobCommand),
}

/// Everything a run needs.
pub struct RunCtx {
    pub node: Arc<ClusterNode>,
    pub rt: tokio::runtime::Handle,
    pub record: JobRecord,
    pub epoch: u64,
    pub data_dir: PathBuf,
    /// This node's per-job traffic counters (Prometheus).
    pub traffic: Arc<crate::http::metrics::JobTraffic>,
}

impl RunCtx {
    fn coordinator(&self) -> bool {
        self.record.host == Some(self.node.id())
    }

    fn local_workers(&self) -> Vec<WorkerId> {
        let me = self.node.id();
        (0..self.record.workers)
            .filter(|&w| self.record.placement.get(w as usize) == Some(&me))
            .collect()
    }
}

/// Starts a run on its own thread.
pub fn start(ctx: RunCtx) -> RunHandle {
    let abort = Arc::new(AtomicBool::new(false));
    let cancelled = Arc::new(AtomicBool::new(false));
    let shards = Arc::new(parking_lot::Mutex::new(None));
    let last_report = Arc::new(parking_lot::Mutex::new(LastReport::Unknown));
    let epoch = ctx.epoch;
    let job = ctx.record.id;
    let (a, c, sh, un) = (
        abort.clone(),
        cancelled.clone(),
        shards.clone(),
        last_report.clone(),
    );
    let thread = std::thread::Builder::new()
        .name(format!("job-{job}"))
        .spawn(move || {
            let span = tracing::info_span!("job", node = ctx.node.id(), job, epoch);
            let _enter = span.enter();
            let end = run(&ctx, &a, &sh, &un);
            // The connection owns a tokio runtime: drop it here, on this
            // thread, not wherever the handle is dropped (an async task).
            drop(sh.lock().take());
            let end = match end {
                _ if c.load(Ordering::SeqCst) => Some(RunEnd::Cancelled),
                _ if a.load(Ordering::SeqCst) => {
                    tracing::info!("run aborted (job reassigned or node stopping)");
                    return;
                }
                e => e,
            };
            let Some(end) = end else {
                tracing::info!("this host's workers are done");
                return;
            };
            tracing::info!(end = %short(&end), "run ended");
            // (A cancelled run has its abort flag set and still reports.)
            let finish = JobCommand::Finish {
                job,
                epoch: ctx.epoch,
                end,
                at_ms: now_ms(),
            };
            *un.lock() = match report(&ctx, &AtomicBool::new(false), finish.clone()) {
                Ok(()) | Err(DataError::Refused(_)) => LastReport::OnRecord,
                Err(_) => LastReport::Lost(finish),
            };
        })
        .expect("spawn job thread");
    RunHandle {
        job,
        epoch,
        abort,
        cancelled,
        shards,
        last_report,
        thread,
    }
}

fn short(end: &RunEnd) -> String {
    match end {
        RunEnd::Succeeded(_) => "succeeded".into(),
        other => format!("{other:?}"),
    }
}

/// Sends a job command to the metadata group, retrying while it has no
/// leader (up to 30 s, and only until `abort` is set: a run that was
/// reassigned stops within one attempt). Refusals (a stale epoch) are
/// returned as [`DataError::Refused`] with their [`Refusal`].
pub fn report(ctx: &RunCtx, abort: &AtomicBool, cmd: JobCommand) -> Result<(), DataError> {
    let mut attempts = Retry::META.within(Duration::from_secs(30)).start();
    loop {
        if abort.load(Ordering::SeqCst) {
            return Err(DataError::Unavailable("the run was aborted".into()));
        }
        match ctx
            .rt
            .block_on(ctx.node.meta_command(MetaCommand::Job(cmd.clone())))
        {
            Ok(_) => return Ok(()),
            Err(DataError::Refused(e)) => {
                tracing::debug!(error = %e, "job report refused");
                return Err(DataError::Refused(e));
            }
            Err(e) if attempts.expired() => {
                tracing::warn!(error = %e, "job report failed");
                return Err(e);
            }
            Err(_) => attempts.wait_blocking(),
        }
    }
}

/// Whether this run's epoch is still the job's current one, asked through
/// the metadata group's leader (`JobCommand::Fence`), not this node's
/// replica. Retries while the group is unreachable, until the run is
/// aborted.
fn epoch_is_current(ctx: &RunCtx, abort: &AtomicBool) -> bool {
    let fence = JobCommand::Fence {
        job: ctx.record.id,
        epoch: ctx.epoch,
    };
    let mut attempts = Retry::META.start();
    loop {
        if abort.load(Ordering::SeqCst) {
            return false;
        }
        match ctx
            .rt
            .block_on(ctx.node.meta_command(MetaCommand::Job(fence.clone())))
        {
            Ok(_) => return true,
            Err(DataError::Refused(e)) => {
                tracing::info!(error = %e, "not starting: the epoch is over");
                return false;
            }
            Err(e) => {
                tracing::debug!(error = %e, "epoch check: metadata group unreachable");
                attempts.wait_blocking();
            }
        }
    }
}

/// How often a run waiting on the metadata checks its abort flag (and,
/// on a node without a metadata replica, reads the metadata again).
const ABORT_CHECK: Duration = Duration::from_millis(20);

/// Waits until the job's record satisfies `f` in this epoch. None when the
/// epoch ended (reassigned, finished) or the run was aborted. The record
/// is read again when the metadata changed (see
/// [`ClusterNode::meta_changes`]); the abort flag is checked every
/// [`ABORT_CHECK`].
fn wait_record(
    ctx: &RunCtx,
    abort: &AtomicBool,
    f: impl Fn(&JobRecord) -> bool,
) -> Option<Arc<JobRecord>> {
    let mut changes = ctx.node.meta_changes(ABORT_CHECK);
    loop {
        if abort.load(Ordering::SeqCst) {
            return None;
        }
        // (Reading can fail only without a local replica, where every
        // round reads.)
        if changes.take() {
            if let Ok(rec) = ctx.rt.block_on(ctx.node.meta_job(ctx.record.id)) {
                match rec {
                    // Older than this run: a stale read (from a voter that
                    // is behind, while this node's own replica has no
                    // leader), not a reason to stop; the next read may be
                    // current. (Taken as one, it ended a host's part of a
                    // new run at once and left the others waiting for its
                    // worker until the next fault: 34 s in a chaos run.)
                    Some(r) if r.epoch < ctx.epoch => {}
                    Some(r) if r.epoch != ctx.epoch || r.state.is_terminal() => return None,
                    Some(r) if f(&r) => return Some(r),
                    _ => {}
                }
            }
        }
        ctx.rt.block_on(changes.wait(ABORT_CHECK));
    }
}

/// Runs this host's part. Returns how the job ended when this host is the
/// one to say (the coordinator, or any host on a failure), None when this
/// host's workers simply finished.
fn run(
    ctx: &RunCtx,
    abort: &Arc<AtomicBool>,
    slot: &parking_lot::Mutex<Option<Arc<ClusterShards>>>,
    last_report: &parking_lot::Mutex<LastReport>,
) -> Option<RunEnd> {
    let r = &ctx.record;
    let job = r.id;
    let mut spec: JobSpec = match serde_json::from_str(&r.spec) {
        Ok(s) => s,
        Err(e) => {
            return Some(RunEnd::Failed(format!(
                "the recorded spec is unreadable: {e}"
            )))
        }
    };
    // Datasets of the store: fetched to this node (or verified here).
    if let Err((retry, e)) = ctx
        .rt
        .block_on(crate::datasets::materialize(&ctx.node, &mut spec))
    {
        return Some(if retry {
            RunEnd::Interrupted(e)
        } else {
            RunEnd::Failed(e)
        });
    }
    let algo = match petuum_algorithms::build(&spec) {
        Ok(a) => a,
        Err(e) => return Some(RunEnd::Failed(e.to_string())),
    };
    if algo.tables().len() as u64 > TABLES_PER_JOB {
        return Some(RunEnd::Failed(format!(
            "the algorithm declares {} tables; a job may have at most {TABLES_PER_JOB}",
            algo.tables().len()
        )));
    }
    let Ok(first_table) = TableId::try_from(r.first_table) else {
        return Some(RunEnd::Failed("table ids exhausted".into()));
    };
    let opts = ConnectOptions {
        token: ctx.node.client_token(),
        tls: match petuum_cluster::node::client_tls(&ctx.node.config) {
            Ok(t) => t,
            Err(e) => return Some(RunEnd::Failed(e.to_string())),
        },
        ..Default::default()
    };
    // This node's own shards are reached in process; the others over gRPC.
    let shards = match ClusterShards::connect_in(ctx.node.clone(), ctx.rt.clone(), opts) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            return Some(RunEnd::Interrupted(format!(
                "connecting to the shards: {e}"
            )))
        }
    };
    // Every command and read of this run names its epoch: once a newer run
    // has begun on a shard, this one's are refused there (and it stops).
    shards.set_epoch(job, ctx.epoch);
    // The job's tables live on `run.shards` of the cluster's shards (all of
    // them when it has fewer): its clocks, reads and checkpoints go there
    // (the span `JobRecord::span` gives every node from the same spec).
    let table_ids = table_specs(job, first_table, &algo.tables())
        .into_iter()
        .map(|t| t.id);
    shards.set_job_shards(job, spec.run.shards(), table_ids);
    *slot.lock() = Some(shards.clone());
    let cfg = RunConfig {
        job,
        first_table,
        workers: r.workers,
        consistency: spec.consistency(),
        clocks: spec.clocks(),
        seed: spec.run.seed,
        deterministic: spec.run.deterministic,
    };
    let every = spec.run.checkpoint_every.max(0) as Clock;
    let start = r.checkpoint.unwrap_or(0);
    if ctx.coordinator() {
        // This host's view of the job comes from its own metadata replica,
        // which lags after a restart: make sure the epoch is still current
        // before touching the tables (a stale coordinator's restore would
        // rewind the shards under the new epoch's workers).
        if !epoch_is_current(ctx, abort) {
            return None;
        }
        if let Err(end) = prepare(&shards, algo.as_ref(), &cfg, r.checkpoint, every) {
            return Some(end);
        }
        if let Err(e) = report(
            ctx,
            abort,
            JobCommand::Ready {
                job,
                epoch: ctx.epoch,
            },
        ) {
            tracing::info!(error = %e, "epoch ended before it was ready");
            return None;
        }
    }
    wait_record(ctx, abort, |r| r.ready)?;
    // The coordinator registered the run on every shard before marking it
    // ready; this connection's ESSP watchers follow it too.
    shards.follow_job(job);
    // This host's workers' states at the checkpoint.
    let local = ctx.local_workers();
    let span = shards.span(job);
    let mut states = BTreeMap::new();
    if start > 0 {
        for &w in &local {
            match shards.fetch_blob(span.nth(w as u64), job, start - 1, w) {
                Ok(Some(b)) => {
                    states.insert(w, b);
                }
                Ok(None) => {
                    return Some(RunEnd::Failed(format!(
                        "the checkpoint of clock {start} has no state for worker {w}"
                    )))
                }
                Err(e) => {
                    return Some(RunEnd::Interrupted(format!(
                        "reading worker {w}'s state of clock {start}: {e}"
                    )))
                }
            }
        }
    }
    tracing::info!(workers = ?local, start, coordinator = ctx.coordinator(), "starting workers");
    let node = Node::new(shards.clone(), Node::DEFAULT_CACHE_ROWS);
    if let Some(mbps) = spec.run.bandwidth_mbps {
        node.set_bandwidth(job, mbps * 1e6 / 8.0);
    }
    // Checkpoint saves leave the workers' threads: one thread stores each
    // worker state and reports the node's part, while the workers go on.
    let (saves, queue) = std::sync::mpsc::sync_channel(2 * local.len().max(1));
    let save_error = parking_lot::Mutex::new(None);
    let hooks = Hooks {
        ctx,
        abort: abort.clone(),
        last: parking_lot::Mutex::new(None),
        saves: parking_lot::Mutex::new(Some(saves)),
        save_error: &save_error,
    };
    let result = std::thread::scope(|scope| {
        let saver = std::thread::Builder::new()
            .name("ckpt-save".into())
            .spawn_scoped(scope, || {
                save_states(ctx, &shards, abort, local.len(), queue, &save_error)
            })
            .expect("spawn the checkpoint saver");
        let result = run_workers(
            &node,
            algo.as_ref(),
            &cfg,
            &local,
            start,
            &states,
            every,
            abort,
            &hooks,
        );
        // Every state handed over is stored (or failed) before the host
        // reports itself done.
        hooks.saves.lock().take();
        let _ = saver.join();
        result
    });
    if let Some(e) = save_error.lock().take() {
        tracing::debug!(error = %e, "a checkpoint save failed after the workers' last checkpoint");
    }
    if let Err(e) = result {
        if abort.load(Ordering::SeqCst) || superseded(&e) {
            tracing::info!(error = %e, "run ended: aborted or superseded");
            return None;
        }
        return Some(if infrastructure(&e) {
            RunEnd::Interrupted(e.to_string())
        } else {
            RunEnd::Failed(e.to_string())
        });
    }
    hooks.flush();
    let done = JobCommand::HostDone {
        job,
        epoch: ctx.epoch,
        node: ctx.node.id(),
    };
    if let Err(e) = report(ctx, abort, done.clone()) {
        tracing::info!(error = %e, "epoch ended before this host was done");
        // Another host's `HostDone` is sent again by the supervisor; the
        // coordinator's run ends here, so its epoch is ended instead.
        if !ctx.coordinator() {
            *last_report.lock() = match e {
                DataError::Refused(_) => LastReport::OnRecord,
                _ => LastReport::Lost(done),
            };
        }
        return None;
    }
    if !ctx.coordinator() {
        *last_report.lock() = LastReport::OnRecord;
        return None;
    }
    // Every host done: every clock of every worker is committed.
    let rec = wait_record(ctx, abort, |r| r.hosts().is_subset(&r.done_hosts))?;
    Some(finish(ctx, &shards, algo.as_ref(), &cfg, &rec))
}

/// The coordinator's preparation of an epoch. The run begins on every
/// shard with a restore of the newest checkpoint, or with a drop of the
/// job's old state followed by its tables and the algorithm's initial rows;
/// the job is registered last, so a replica that has applied the
/// registration has applied everything before it, and reads of the run
/// wait for it (exact reads on followers).
fn prepare(
    shards: &ClusterShards,
    algo: &dyn Algorithm,
    cfg: &RunConfig,
    checkpoint: Option<Clock>,
    every: Clock,
) -> Result<(), RunEnd> {
    let job = cfg.job;
    let interrupted = |what: &str, e: TableError| RunEnd::Interrupted(format!("{what}: {e}"));
    let tables = table_specs(job, cfg.first_table, &algo.tables());
    match checkpoint {
        Some(clock) => {
            match shards.checkpoint_outside_span(job, clock - 1) {
                Ok(false) => {}
                Ok(true) => {
                    return Err(RunEnd::Failed(format!(
                        "the checkpoint of clock {clock} has parts outside the job's {} shards: the job began under an older petuumd (protocol version 8) that kept its tables on every shard, and restoring its shards alone would lose rows; resubmit it (docs/cluster.md, upgrades)",
                        shards.span(job).len()
                    )))
                }
                Err(e) => return Err(interrupted("checking the checkpoint's shards", e)),
            }
            let started = Instant::now();
            shards
                .restore_checkpoint(job, clock - 1)
                .map_err(|e| interrupted("restoring the checkpoint", e))?;
            tracing::info!(
                clock,
                ms = started.elapsed().as_millis() as u64,
                "restored the checkpoint"
            );
        }
        None => {
            shards
                .drop_job_checked(job)
                .map_err(|e| interrupted("clearing the job's old state", e))?;
            for t in &tables {
                shards
                    .create_table(t)
                    .map_err(|e| interrupted("creating the tables", e))?;
            }
            algo.initialize(&TableLoader::new(shards, &tables))
                .map_err(|e| match e.downcast::<TableError>() {
                    Ok(t) => interrupted("initialising the tables", *t),
                    Err(e) => RunEnd::Failed(format!("initialisation failed: {e}")),
                })?;
        }
    }
    shards
        .register_job_every(job, cfg.workers, cfg.deterministic, every)
        .map_err(|e| interrupted("registering the job", e))?;
    Ok(())
}

/// The coordinator's end of a job: export the model, keep it replicated,
/// drop the job's tables.
fn finish(
    ctx: &RunCtx,
    shards: &ClusterShards,
    algo: &dyn Algorithm,
    cfg: &RunConfig,
    rec: &JobRecord,
) -> RunEnd {
    let job = cfg.job;
    let dir = ctx.data_dir.join("jobs").join(job.to_string());
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return RunEnd::Failed(format!("creating {}: {e}", dir.display()));
    }
    let path = dir.join("model.safetensors");
    let tables = table_specs(job, cfg.first_table, &algo.tables());
    let model = match algo.export(&TableReader::new(shards, &tables), &path) {
        Ok(m) => m,
        Err(e) => {
            let e = JobError::Export(e);
            return if infrastructure(&e) {
                RunEnd::Interrupted(e.to_string())
            } else {
                RunEnd::Failed(e.to_string())
            };
        }
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => return RunEnd::Failed(format!("reading the exported model: {e}")),
    };
    // Into replicated storage (the checkpoint store of a shard group's
    // replicas), so any node serves it.
    if let Err(e) = shards.command(
        model_shard(job, shards.placement().shards()),
        ShardRequest::WorkerBlob {
            job,
            epoch: ctx.epoch,
            clock: MODEL_CLOCK,
            worker: 0,
            data: bytes.clone(),
        },
    ) {
        return RunEnd::Interrupted(format!("storing the model: {e}"));
    }
    shards.drop_job(job);
    let p = rec.progress.clone().unwrap_or_default();
    RunEnd::Succeeded(JobResult {
        objective: p.objective,
        seconds: p.elapsed_s,
        model_bytes: bytes.len() as u64,
        metrics: model.metrics.clone(),
        node: ctx.node.id(),
    })
}

/// The shard group whose replicas keep a job's model: the first shard of
/// the job's span ([`petuum_core::types::JobShards::of_job`]), so the run
/// has begun there whatever the span.
pub fn model_shard(job: JobId, shards: u32) -> ShardId {
    (job % shards as u64) as ShardId
}

/// Whether a failure came from the cluster (retrying from a checkpoint
/// can help) rather than from the algorithm or its data.
fn infrastructure(e: &JobError) -> bool {
    match table_error(e) {
        Some(t) => matches!(
            t,
            TableError::Unavailable(_) | TableError::Aborted { .. } | TableError::StaleEpoch { .. }
        ),
        None => matches!(e, JobError::Checkpoint { .. }),
    }
}

/// The table error behind a job error, if one is.
fn table_error(e: &JobError) -> Option<&TableError> {
    match e {
        JobError::Table(t) => Some(t),
        JobError::Worker { source, .. } | JobError::Init(source) | JobError::Export(source) => {
            source.downcast_ref::<TableError>()
        }
        _ => None,
    }
}

/// Whether a newer run of the job began on the shards: this run ends
/// without a word (its reports would be refused as stale anyway).
fn superseded(e: &JobError) -> bool {
    matches!(table_error(e), Some(TableError::StaleEpoch { .. }))
}

/// Progress and checkpoint parts of this host, to the metadata group.
struct Hooks<'a> {
    ctx: &'a RunCtx,
    abort: Arc<AtomicBool>,
    /// When progress was last sent, and the newest report not sent yet.
    last: parking_lot::Mutex<Option<(Instant, Option<ClockProgress>)>>,
    /// To the checkpoint saver ([`save_states`]); `None` once the workers
    /// are done.
    saves: parking_lot::Mutex<Option<std::sync::mpsc::SyncSender<SavedState>>>,
    /// The saver's first failure, for the next worker that saves.
    save_error: &'a parking_lot::Mutex<Option<String>>,
}

/// A worker's state at a checkpoint clock, on its way to storage.
struct SavedState {
    worker: WorkerId,
    clock: Clock,
    state: Vec<u8>,
}

/// The checkpoint saver of a host's run: once all `local` workers' states
/// of a clock are in hand, stores them at once, each through a shard of
/// the job's span (one replicated command each, proposed together so that
/// a job on few shards replicates them in one round rather than one after
/// another behind its clocks), then reports the node's checkpoint part to
/// the metadata group. A checkpoint counts only once every host reported
/// its part, so a part reported late or never (the run ended first) only
/// means resuming from an earlier one. The first failure is kept in
/// `error` and the rest of the queue dropped: the next save of a worker
/// returns it and the run ends as a failed save always did (interrupted,
/// resumed from the last complete checkpoint).
fn save_states(
    ctx: &RunCtx,
    shards: &ClusterShards,
    abort: &AtomicBool,
    local: usize,
    queue: std::sync::mpsc::Receiver<SavedState>,
    error: &parking_lot::Mutex<Option<String>>,
) {
    let job = ctx.record.id;
    // States of clocks some local worker has not saved yet (a worker runs
    // at most its staleness ahead, so few clocks wait here).
    let mut waiting: BTreeMap<Clock, Vec<SavedState>> = BTreeMap::new();
    for saved in queue {
        // A stopped run stores nothing more: its next run resumes from a
        // complete checkpoint anyway.
        if error.lock().is_some() || abort.load(Ordering::SeqCst) {
            continue;
        }
        let clock = saved.clock;
        let states = waiting.entry(clock).or_default();
        states.push(saved);
        if states.len() < local {
            continue;
        }
        let states = waiting.remove(&clock).unwrap_or_default();
        let stored = store_states(ctx, shards, states);
        let reported = stored.and_then(|()| {
            report(
                ctx,
                abort,
                JobCommand::CheckpointPart {
                    job,
                    epoch: ctx.epoch,
                    node: ctx.node.id(),
                    clock,
                    at_ms: now_ms(),
                },
            )
            .map(|()| tracing::debug!(clock, "checkpoint part saved"))
            .map_err(|e| format!("reporting the checkpoint part of clock {clock}: {e}"))
        });
        if let Err(e) = reported {
            *error.lock() = Some(e);
        }
    }
}

/// Stores workers' states of one clock, each through a shard of the job's
/// span (where the run began), all proposed at once: the first failure.
fn store_states(
    ctx: &RunCtx,
    shards: &ClusterShards,
    states: Vec<SavedState>,
) -> Result<(), String> {
    let job = ctx.record.id;
    let store = |s: SavedState| {
        let (worker, clock) = (s.worker, s.clock);
        shards
            .command(
                shards.span(job).nth(worker as u64),
                ShardRequest::WorkerBlob {
                    job,
                    epoch: ctx.epoch,
                    clock: clock - 1,
                    worker,
                    data: s.state,
                },
            )
            .map(|_| ())
            .map_err(|e| format!("storing worker {worker}'s state of clock {clock}: {e}"))
    };
    if states.len() <= 1 {
        return states.into_iter().try_for_each(store);
    }
    // The scope joins every store before it returns, failed or not.
    std::thread::scope(|scope| {
        let handles: Vec<_> = states
            .into_iter()
            .map(|s| scope.spawn(move || store(s)))
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err("a state store panicked".into()))
        })
    })
}

impl Hooks<'_> {
    fn send(&self, p: &ClockProgress) {
        let cmd = JobCommand::HostProgress {
            job: self.ctx.record.id,
            epoch: self.ctx.epoch,
            node: self.ctx.node.id(),
            report: HostReport {
                clock: p.clock,
                // Back to the sum, so the metadata group can pool hosts.
                objective_sum: if p.weight > 0.0 {
                    p.objective * p.weight
                } else {
                    p.objective
                },
                weight: p.weight,
                samples: p.samples,
                throughput: p.throughput,
                elapsed_s: p.elapsed_s,
                metrics: p.metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            },
            at_ms: now_ms(),
        };
        if let Err(DataError::Refused(Refusal::StaleEpoch { .. } | Refusal::Ended { .. })) =
            report(self.ctx, &self.abort, cmd)
        {
            // Reassigned (or over): this run is stale and must stop writing.
            self.abort.store(true, Ordering::SeqCst);
        }
    }

    /// Sends the newest progress the throttle held back.
    fn flush(&self) {
        let pending = self.last.lock().as_mut().and_then(|(_, p)| p.take());
        if let Some(p) = pending {
            self.send(&p);
        }
    }
}

impl ProgressSink for Hooks<'_> {
    fn on_clock(&self, p: &ClockProgress) {
        self.ctx
            .traffic
            .report(self.ctx.record.id, self.ctx.epoch, p.traffic);
        {
            let mut last = self.last.lock();
            let due = last
                .as_ref()
                .is_none_or(|(t, _)| t.elapsed() >= PROGRESS_EVERY);
            if !due {
                if let Some((_, pending)) = last.as_mut() {
                    *pending = Some(p.clone());
                }
                return;
            }
            *last = Some((Instant::now(), None));
        }
        self.send(p);
    }
}

impl WorkerHooks for Hooks<'_> {
    /// Hands the state to the checkpoint saver and returns: the worker
    /// computes its next clocks while the state is stored (at most two
    /// states per local worker wait; a third save waits for room).
    fn save_worker(&self, worker: WorkerId, clock: Clock, state: Vec<u8>) -> Result<(), BoxError> {
        if let Some(e) = self.save_error.lock().clone() {
            return Err(e.into());
        }
        let stopped = || BoxError::from("the run's checkpoint saver has stopped");
        let saves = self.saves.lock().clone().ok_or_else(stopped)?;
        saves
            .send(SavedState {
                worker,
                clock,
                state,
            })
            .map_err(|_| stopped())
    }
}
