//! The embedded single-node cluster behind `petuumd run`: the same shard
//! state machine and worker code as the cluster, in one process, with its
//! state under `--data-dir`.

use crate::checkpoints;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use petuum_core::inproc::InProcShards;
use petuum_core::runner::{
    run_job_with, ClockProgress, JobError, ProgressSink, RunConfig, RunHooks,
};
use petuum_core::spec::JobSpec;
use petuum_core::worker::Node;
use petuum_storage::{CheckpointStore, NodeDb, StorageConfig};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Node state in the data directory: a stable node id and a job counter.
struct DataDir {
    root: std::path::PathBuf,
}

impl DataDir {
    fn open(root: &Path) -> anyhow::Result<DataDir> {
        std::fs::create_dir_all(root.join("jobs"))
            .with_context(|| format!("creating data directory {}", root.display()))?;
        Ok(DataDir {
            root: root.to_path_buf(),
        })
    }

    /// Allocates the next job id (persisted, so ids are never reused).
    fn next_job_id(&self) -> anyhow::Result<u64> {
        // One `petuumd run` per data directory at a time: RocksDB's lock
        // refuses a second one when the node database is opened.
        let path = self.root.join("next-job-id");
        let next = match std::fs::read_to_string(&path) {
            Ok(s) => s
                .trim()
                .parse::<u64>()
                .with_context(|| format!("{} is corrupt: `{}`", path.display(), s.trim()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        checkpoints::write_atomic(&path, format!("{}\n", next + 1).as_bytes())?;
        Ok(next)
    }
}

/// Where progress goes: a bar on a terminal, plain lines otherwise, or JSON.
struct Reporter {
    json: bool,
    bar: Option<ProgressBar>,
    log: std::sync::Mutex<std::fs::File>,
    objective_name: &'static str,
}

impl ProgressSink for Reporter {
    fn on_clock(&self, p: &ClockProgress) {
        let mut line = json!({
            "event": "clock",
            "clock": p.clock,
            "clocks": p.clocks,
            "objective": p.objective,
            "samples": p.samples,
            "throughput": p.throughput,
            "elapsed_s": p.elapsed_s,
        });
        if !p.metrics.is_empty() {
            line["metrics"] = p
                .metrics
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
        }
        let extra = petuum_core::runner::metrics_suffix(p.metrics.iter().copied(), "  ");
        if let Ok(mut f) = self.log.lock() {
            // One write per line: formatting straight into the file made
            // a system call per token (46 per clock), on the worker's path.
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
        if self.json {
            println!("{line}");
        } else if let Some(bar) = &self.bar {
            bar.set_position(p.clock);
            bar.set_message(format!(
                "{} {:.4} | {:.0} samples/s{extra}",
                self.objective_name, p.objective, p.throughput
            ));
        } else {
            eprintln!(
                "clock {}/{}  {} {:.4}  {:.0} samples/s  {:.1}s{extra}",
                p.clock, p.clocks, self.objective_name, p.objective, p.throughput, p.elapsed_s
            );
        }
    }
}

/// `petuumd run`: a new job.
pub fn run(
    job_path: &Path,
    data_dir: &Path,
    json_out: bool,
    workers: Option<u32>,
) -> anyhow::Result<ExitCode> {
    let mut spec = JobSpec::from_file(job_path)?;
    petuum_algorithms::apply_defaults(&mut spec);
    if let Some(w) = workers {
        spec.run.workers = w;
    }
    for (field, p) in spec.data_files() {
        if petuum_core::spec::is_remote(p) {
            anyhow::bail!(
                "`{field}` = {}: petuumd run reads local files; a dataset of a cluster's store or a URL is for jobs submitted to a cluster (download the file and name its path)",
                p.display()
            );
        }
    }
    let algo = petuum_algorithms::build(&spec)?;
    let dir = DataDir::open(data_dir)?;
    let job_id = dir.next_job_id()?;
    let job_dir = dir.root.join("jobs").join(job_id.to_string());
    std::fs::create_dir_all(&job_dir)?;
    checkpoints::write_atomic(
        &job_dir.join("spec.json"),
        &serde_json::to_vec_pretty(&spec)?,
    )?;
    execute(&dir, job_id, &spec, algo.as_ref(), json_out, false)
}

/// `petuumd resume`: continue a job from its newest complete checkpoint.
pub fn resume(job_id: u64, data_dir: &Path, json_out: bool) -> anyhow::Result<ExitCode> {
    let dir = DataDir::open(data_dir)?;
    let job_dir = dir.root.join("jobs").join(job_id.to_string());
    let spec_path = job_dir.join("spec.json");
    let spec: JobSpec = serde_json::from_slice(
        &std::fs::read(&spec_path)
            .with_context(|| format!("job {job_id}: no record in {}", job_dir.display()))?,
    )
    .with_context(|| format!("{} is corrupt", spec_path.display()))?;
    let algo = petuum_algorithms::build(&spec)?;
    execute(&dir, job_id, &spec, algo.as_ref(), json_out, true)
}

fn execute(
    dir: &DataDir,
    job_id: u64,
    spec: &JobSpec,
    algo: &dyn petuum_core::algorithm::Algorithm,
    json_out: bool,
    resuming: bool,
) -> anyhow::Result<ExitCode> {
    let job_dir = dir.root.join("jobs").join(job_id.to_string());
    let span = tracing::info_span!("job", job = job_id, name = %spec.name);
    let _enter = span.enter();
    let db = NodeDb::open(StorageConfig::new(dir.root.join("db")))
        .with_context(|| format!("opening the node database in {}", dir.root.display()))?;
    let store = CheckpointStore::new(db.clone());
    let shards = Arc::new(InProcShards::new(spec.run.shards()));
    let resume = if resuming {
        match checkpoints::complete_clock(&job_dir)? {
            Some(clock) => Some(checkpoints::restore(
                &shards,
                &store,
                job_id,
                clock,
                spec.run.workers,
            )?),
            None => {
                if !json_out {
                    eprintln!("job {job_id} has no complete checkpoint: starting it from clock 0");
                }
                None
            }
        }
    } else {
        None
    };
    let start_clock = resume.as_ref().map_or(0, |r| r.clock);
    tracing::info!(algorithm = %spec.algorithm, workers = spec.run.workers, start_clock, "starting embedded job");
    let node = Node::new(shards.clone(), Node::DEFAULT_CACHE_ROWS);
    let cfg = RunConfig {
        job: job_id,
        first_table: 1,
        workers: spec.run.workers,
        consistency: spec.consistency(),
        clocks: spec.clocks(),
        seed: spec.run.seed,
        deterministic: spec.run.deterministic,
    };
    if !json_out {
        eprintln!(
            "job {job_id} `{}`: {} on {} workers, {}, {} clocks{}",
            spec.name,
            algo.name(),
            cfg.workers,
            cfg.consistency.name(),
            cfg.clocks,
            if start_clock > 0 {
                format!(", resuming at clock {start_clock}")
            } else {
                String::new()
            }
        );
    }
    let bar = (!json_out && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(cfg.clocks);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} clock {pos}/{len} [{bar:30}] {msg} ({elapsed}, eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_position(start_clock);
        bar
    });
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(job_dir.join("progress.jsonl"))?;
    let reporter = Reporter {
        json: json_out,
        bar,
        log: std::sync::Mutex::new(log),
        objective_name: algo.objective_name(),
    };
    // SIGTERM (preemption) and SIGINT stop the job at a clock every worker
    // can reach, after a checkpoint there; a second SIGINT exits at once.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())?;
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let checkpointer = checkpoints::EmbeddedCheckpointer::new(
        shards.clone(),
        db,
        job_dir.clone(),
        cfg.workers,
        cfg.deterministic,
        spec.run.checkpoint_every.max(0) as u64,
    );
    let result = run_job_with(
        &node,
        algo,
        &cfg,
        &spec.model.path,
        RunHooks {
            progress: &reporter,
            stop: &stop,
            checkpoint_every: checkpointer.every,
            checkpointer: Some(&checkpointer),
            resume,
        },
    );
    // The last checkpoint's writing ends before the job does: a pause
    // promises a complete checkpoint at its clock, and a failed write
    // fails the job, as it would have at the checkpoint itself.
    let result = match (result, checkpointer.wait()) {
        (Ok(_) | Err(JobError::Paused { .. }), Err(e)) => Err(e),
        (r, _) => r,
    };
    if let Some(bar) = &reporter.bar {
        bar.finish();
    }
    let (state, code, final_line) = match result {
        Ok(out) => {
            let mut v = json!({
                "event": "done",
                "state": "succeeded",
                "job": job_id,
                "clocks": out.clocks,
                "objective": out.objective,
                "model_path": spec.model.path.display().to_string(),
                "model_bytes": out.model.bytes,
                "seconds": out.seconds,
            });
            for (k, m) in &out.model.metrics {
                v[k] = json!(m);
            }
            if !json_out {
                eprintln!(
                    "job {job_id} succeeded in {:.1}s: {} {:.4}; model written to {}",
                    out.seconds,
                    algo.objective_name(),
                    out.objective,
                    spec.model.path.display()
                );
                for (k, m) in &out.model.metrics {
                    eprintln!("  {k}: {m:.4}");
                }
            }
            ("succeeded", ExitCode::SUCCESS, v)
        }
        Err(JobError::Paused { clock }) => {
            if !json_out {
                eprintln!(
                    "job {job_id} paused at the checkpoint of clock {clock}; continue with `petuumd resume {job_id} --data-dir {}`",
                    dir.root.display()
                );
            }
            (
                "paused",
                ExitCode::SUCCESS,
                json!({"event": "done", "state": "paused", "job": job_id, "clocks": clock}),
            )
        }
        Err(e) => {
            if !json_out {
                eprintln!("petuumd: job {job_id} failed: {e}");
            }
            (
                "failed",
                ExitCode::from(1),
                json!({"event": "done", "state": "failed", "job": job_id, "error": e.to_string()}),
            )
        }
    };
    checkpoints::write_atomic(
        &job_dir.join("result.json"),
        &serde_json::to_vec_pretty(&final_line)?,
    )?;
    tracing::info!(state, "job finished");
    if json_out {
        println!("{final_line}");
    }
    Ok(code)
}
