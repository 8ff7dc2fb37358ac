//! One run (epoch) of a job on this node: restore the newest complete
//! checkpoint if there is one, run every worker of the job here against
//! the cluster's shards, checkpoint every `checkpoint_every` clocks, and
//! report progress and the end to the metadata group.

use super::{now_ms, MODEL_CLOCK, TABLES_PER_JOB};
use petuum_cluster::jobs::{JobCommand, JobRecord, JobResult, Progress, RunEnd};
use petuum_cluster::meta::MetaCommand;
use petuum_cluster::{ClusterNode, ClusterShards, ConnectOptions};
use petuum_core::algorithm::BoxError;
use petuum_core::runner::{
    run_job_with, Checkpointer, ClockProgress, JobError, ProgressSink, Resume, RunConfig, RunHooks,
};
use petuum_core::service::ShardService;
use petuum_core::spec::JobSpec;
use petuum_core::types::{Clock, JobId, ShardId};
use petuum_core::worker::Node;
use petuum_core::TableError;
use petuum_storage::ShardRequest;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a run reports progress through Raft (each report is one
/// metadata write).
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// What the supervisor keeps of a run it started.
pub struct RunHandle {
    pub job: JobId,
    pub epoch: u64,
    /// Preemption: stop at a checkpoint every worker can reach.
    pub stop: Arc<AtomicBool>,
    /// Set when the run must end without reporting (cancelled, or the job
    /// was reassigned).
    pub abort: Arc<AtomicBool>,
    pub cancelled: Arc<AtomicBool>,
    pub shards: Arc<parking_lot::Mutex<Option<Arc<ClusterShards>>>>,
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

/// Everything a run needs.
pub struct RunCtx {
    pub node: Arc<ClusterNode>,
    pub rt: tokio::runtime::Handle,
    pub record: JobRecord,
    pub epoch: u64,
    pub data_dir: PathBuf,
}

/// Starts a run on its own thread.
pub fn start(ctx: RunCtx) -> RunHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let abort = Arc::new(AtomicBool::new(false));
    let cancelled = Arc::new(AtomicBool::new(false));
    let shards = Arc::new(parking_lot::Mutex::new(None));
    let epoch = ctx.epoch;
    let job = ctx.record.id;
    let (s, a, c, sh) = (
        stop.clone(),
        abort.clone(),
        cancelled.clone(),
        shards.clone(),
    );
    let thread = std::thread::Builder::new()
        .name(format!("job-{}", ctx.record.id))
        .spawn(move || {
            let job = ctx.record.id;
            let span = tracing::info_span!("job", node = ctx.node.id(), job, epoch);
            let _enter = span.enter();
            let end = run(&ctx, &s, &a, &sh);
            // The connection owns a tokio runtime: drop it here, on this
            // thread, not wherever the handle is dropped (an async task).
            drop(sh.lock().take());
            let end = match end {
                _ if a.load(Ordering::SeqCst) && !c.load(Ordering::SeqCst) => {
                    tracing::info!("run aborted (job reassigned or node stopping)");
                    return;
                }
                _ if c.load(Ordering::SeqCst) => RunEnd::Cancelled,
                e => e,
            };
            tracing::info!(end = %short(&end), "run ended");
            let _ = report(
                &ctx,
                JobCommand::Finish {
                    job,
                    epoch: ctx.epoch,
                    end,
                    at_ms: now_ms(),
                },
            );
        })
        .expect("spawn job thread");
    RunHandle {
        job,
        epoch,
        stop,
        abort,
        cancelled,
        shards,
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
/// leader (up to 30 s). Refusals (a stale epoch) are returned.
pub fn report(ctx: &RunCtx, cmd: JobCommand) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match ctx
            .rt
            .block_on(ctx.node.meta_command(MetaCommand::Job(cmd.clone())))
        {
            Ok(_) => return Ok(()),
            Err(petuum_cluster::wire::DataError::Refused(e)) => {
                tracing::warn!(error = %e, "job report refused");
                return Err(e);
            }
            Err(e) if start.elapsed() > Duration::from_secs(30) => {
                tracing::warn!(error = %e, "job report failed");
                return Err(e.to_string());
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn run(
    ctx: &RunCtx,
    stop: &Arc<AtomicBool>,
    abort: &Arc<AtomicBool>,
    slot: &parking_lot::Mutex<Option<Arc<ClusterShards>>>,
) -> RunEnd {
    let r = &ctx.record;
    let job = r.id;
    let spec: JobSpec = match serde_json::from_str(&r.spec) {
        Ok(s) => s,
        Err(e) => return RunEnd::Failed(format!("the recorded spec is unreadable: {e}")),
    };
    let algo = match petuum_algorithms::build(&spec) {
        Ok(a) => a,
        Err(e) => return RunEnd::Failed(e.to_string()),
    };
    if algo.tables().len() as u64 > TABLES_PER_JOB {
        return RunEnd::Failed(format!(
            "the algorithm declares {} tables; a job may have at most {TABLES_PER_JOB}",
            algo.tables().len()
        ));
    }
    let opts = ConnectOptions {
        token: ctx.node.client_token(),
        tls: match petuum_cluster::node::client_tls(&ctx.node.config) {
            Ok(t) => t,
            Err(e) => return RunEnd::Failed(e.to_string()),
        },
        ..Default::default()
    };
    let shards = match ClusterShards::connect_as(&[ctx.node.endpoint()], opts, ctx.node.id()) {
        Ok(s) => Arc::new(s),
        Err(e) => return RunEnd::Interrupted(format!("connecting to the shards: {e}")),
    };
    *slot.lock() = Some(shards.clone());
    if abort.load(Ordering::SeqCst) {
        return RunEnd::Interrupted("aborted before starting".into());
    }
    // Roll the shards back to the newest complete checkpoint, or clear
    // what an earlier run left when there is none.
    let resume = match r.checkpoint {
        Some(clock) => match restore(&shards, job, clock, r.workers) {
            Ok(res) => Some(res),
            Err(e) => return e,
        },
        None => {
            shards.drop_job(job);
            None
        }
    };
    let cfg = RunConfig {
        job,
        first_table: match petuum_core::types::TableId::try_from(r.first_table) {
            Ok(t) => t,
            Err(_) => return RunEnd::Failed("table ids exhausted".into()),
        },
        workers: r.workers,
        consistency: spec.consistency(),
        clocks: spec.clocks(),
        seed: spec.run.seed,
        deterministic: spec.run.deterministic,
    };
    let node = Node::new(shards.clone(), Node::DEFAULT_CACHE_ROWS);
    let progress = MetaProgress {
        ctx,
        abort: abort.clone(),
        last: parking_lot::Mutex::new(None),
    };
    let checkpointer = ClusterCheckpointer {
        ctx,
        shards: shards.clone(),
    };
    let model_dir = ctx.data_dir.join("jobs").join(job.to_string());
    if let Err(e) = std::fs::create_dir_all(&model_dir) {
        return RunEnd::Failed(format!("creating {}: {e}", model_dir.display()));
    }
    let model_path = model_dir.join("model.safetensors");
    let result = run_job_with(
        &node,
        algo.as_ref(),
        &cfg,
        &model_path,
        RunHooks {
            progress: &progress,
            stop,
            checkpoint_every: spec.run.checkpoint_every.max(0) as u64,
            checkpointer: Some(&checkpointer),
            resume,
        },
    );
    match result {
        Ok(out) => {
            // The last progress report may have been skipped by the throttle.
            progress.send(out.clocks, out.objective, 0, 0.0, out.seconds);
            let bytes = match std::fs::read(&model_path) {
                Ok(b) => b,
                Err(e) => return RunEnd::Failed(format!("reading the exported model: {e}")),
            };
            // The model goes into replicated storage (the checkpoint store
            // of a shard group's replicas), so any node can serve it.
            if let Err(e) = shards.command(
                model_shard(job, shards.placement().shards()),
                ShardRequest::WorkerBlob {
                    job,
                    clock: MODEL_CLOCK,
                    worker: 0,
                    data: bytes.clone(),
                },
            ) {
                return RunEnd::Interrupted(format!("storing the model: {e}"));
            }
            RunEnd::Succeeded(JobResult {
                objective: out.objective,
                seconds: out.seconds,
                model_bytes: bytes.len() as u64,
                metrics: out.model.metrics.clone(),
                node: ctx.node.id(),
            })
        }
        Err(JobError::Paused { clock }) => RunEnd::Stopped {
            clock,
            reason: format!("node {} is stopping", ctx.node.id()),
        },
        Err(e) if infrastructure(&e) => RunEnd::Interrupted(e.to_string()),
        Err(e) => RunEnd::Failed(e.to_string()),
    }
}

/// The shard group whose replicas keep a job's model.
pub fn model_shard(job: JobId, shards: u32) -> ShardId {
    (job % shards as u64) as ShardId
}

/// Whether a failure came from the cluster (retrying from a checkpoint
/// can help) rather than from the algorithm or its data.
fn infrastructure(e: &JobError) -> bool {
    let table =
        |t: &TableError| matches!(t, TableError::Unavailable(_) | TableError::Aborted { .. });
    match e {
        JobError::Table(t) => table(t),
        JobError::Worker { source, .. } | JobError::Init(source) | JobError::Export(source) => {
            source.downcast_ref::<TableError>().is_some_and(table)
        }
        JobError::Checkpoint { .. } => true,
        _ => false,
    }
}

fn restore(
    shards: &ClusterShards,
    job: JobId,
    clock: Clock,
    workers: u32,
) -> Result<Resume, RunEnd> {
    // Shard images and worker blobs are labelled with the last clock they
    // include (`clock - 1`); `clock` counts finished clocks.
    let label = clock - 1;
    let started = Instant::now();
    shards.restore_checkpoint(job, label).map_err(|e| {
        RunEnd::Interrupted(format!("restoring the checkpoint of clock {clock}: {e}"))
    })?;
    let n = shards.placement().shards();
    let mut states = Vec::with_capacity(workers as usize);
    for w in 0..workers {
        match shards.fetch_blob(w % n, job, label, w) {
            Ok(Some(b)) => states.push(b),
            Ok(None) => {
                return Err(RunEnd::Failed(format!(
                    "the checkpoint of clock {clock} has no state for worker {w}"
                )))
            }
            Err(e) => {
                return Err(RunEnd::Interrupted(format!(
                    "reading worker {w}'s state of clock {clock}: {e}"
                )))
            }
        }
    }
    tracing::info!(
        clock,
        ms = started.elapsed().as_millis() as u64,
        "restored the checkpoint"
    );
    Ok(Resume {
        clock,
        worker_states: states,
    })
}

/// Progress to the metadata group, at most every [`PROGRESS_EVERY`] (and at
/// the end).
struct MetaProgress<'a> {
    ctx: &'a RunCtx,
    abort: Arc<AtomicBool>,
    last: parking_lot::Mutex<Option<Instant>>,
}

impl MetaProgress<'_> {
    fn send(&self, clock: Clock, objective: f64, samples: u64, throughput: f64, elapsed_s: f64) {
        let cmd = JobCommand::Progress {
            job: self.ctx.record.id,
            epoch: self.ctx.epoch,
            progress: Progress {
                clock,
                objective,
                samples,
                throughput,
                elapsed_s,
                at_ms: now_ms(),
            },
        };
        if let Err(e) = report(self.ctx, cmd) {
            if e.contains("epoch") {
                // Reassigned: this run is stale and must stop writing.
                self.abort.store(true, Ordering::SeqCst);
            }
        }
    }
}

impl ProgressSink for MetaProgress<'_> {
    fn on_clock(&self, p: &ClockProgress) {
        {
            let mut last = self.last.lock();
            let due = last.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
            if !due && p.clock < p.clocks {
                return;
            }
            *last = Some(Instant::now());
        }
        self.send(p.clock, p.objective, p.samples, p.throughput, p.elapsed_s);
    }
}

/// Consistent checkpoints on the cluster (design.md §3): every shard group
/// commits "checkpoint at clock c" after every batch of clock c (each
/// replica writes its image when it applies it), each worker's state is
/// committed through a shard group, and only then does the metadata group
/// record the checkpoint complete.
struct ClusterCheckpointer<'a> {
    ctx: &'a RunCtx,
    shards: Arc<ClusterShards>,
}

impl Checkpointer for ClusterCheckpointer<'_> {
    fn checkpoint(
        &self,
        job: JobId,
        clock: Clock,
        worker_states: &[Vec<u8>],
    ) -> Result<(), BoxError> {
        let started = Instant::now();
        let label = clock - 1;
        self.shards
            .command_all(|_| ShardRequest::Checkpoint { job, clock: label })?;
        let shards_ms = started.elapsed().as_millis() as u64;
        let n = self.shards.placement().shards();
        for (w, data) in worker_states.iter().enumerate() {
            self.shards.command(
                w as u32 % n,
                ShardRequest::WorkerBlob {
                    job,
                    clock: label,
                    worker: w as u32,
                    data: data.clone(),
                },
            )?;
        }
        let blobs_ms = started.elapsed().as_millis() as u64 - shards_ms;
        report(
            self.ctx,
            JobCommand::Checkpoint {
                job,
                epoch: self.ctx.epoch,
                clock,
                at_ms: now_ms(),
            },
        )?;
        tracing::info!(
            clock,
            ms = started.elapsed().as_millis() as u64,
            shards_ms,
            blobs_ms,
            "checkpoint complete"
        );
        Ok(())
    }
}
