//! Runs a job spec in process on the embedded backend (the code path of
//! `petuumd run`, without building the daemon) and prints the seconds and
//! the model's metrics as one JSON line. For benchmarks and debugging.
//!
//! `cargo run --release -p petuum-algorithms --example run_spec -- JOB.toml`

use petuum_core::inproc::InProcShards;
use petuum_core::runner::{run_job, ClockProgress, ProgressSink, RunConfig};
use petuum_core::spec::JobSpec;
use petuum_core::worker::Node;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// Progress every `.0` clocks, kept until the job ends (written then: a
/// line written as the job runs makes the reader of the pipe, e.g. the
/// benchmark, compete with the workers for the cores).
struct Every(
    u64,
    std::sync::atomic::AtomicU64,
    std::sync::Mutex<Vec<String>>,
);
impl ProgressSink for Every {
    fn on_clock(&self, p: &ClockProgress) {
        self.1
            .fetch_max(p.clock, std::sync::atomic::Ordering::Relaxed);
        if self.0 > 0 && p.clock.is_multiple_of(self.0) {
            let metrics: String = p
                .metrics
                .iter()
                .map(|(k, v)| format!(" {k}={v:.10e}"))
                .collect();
            self.2.lock().expect("progress lines").push(format!(
                "clock {} objective {:.10e} elapsed {:.6}s{metrics}",
                p.clock, p.objective, p.elapsed_s
            ));
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .expect("usage: run_spec JOB.toml [PRINT_EVERY]");
    let every: u64 = args.get(1).map_or(0, |s| s.parse().expect("a number"));
    let spec = JobSpec::from_file(std::path::Path::new(path)).unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let algo = petuum_algorithms::build(&spec).unwrap_or_else(|e| panic!("{e}"));
    let loaded = started.elapsed().as_secs_f64();
    let node = Node::new(Arc::new(InProcShards::new(spec.run.shards())), 1 << 16);
    let cfg = RunConfig {
        job: 1,
        first_table: 1,
        workers: spec.run.workers,
        consistency: spec.consistency(),
        clocks: spec.clocks(),
        seed: spec.run.seed,
        deterministic: spec.run.deterministic,
    };
    let t = Instant::now();
    let sink = Every(every, Default::default(), Default::default());
    let out = run_job(
        &node,
        algo.as_ref(),
        &cfg,
        &spec.model.path,
        &sink,
        &AtomicBool::new(false),
    )
    .unwrap_or_else(|e| panic!("job failed: {e}"));
    let train_s = t.elapsed().as_secs_f64();
    for line in sink.2.lock().expect("progress lines").iter() {
        eprintln!("{line}");
    }
    let metrics: serde_json::Map<String, serde_json::Value> = out
        .model
        .metrics
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::json!(v)))
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "spec": path,
            "load_s": loaded,
            "train_s": train_s,
            "clocks": sink.1.load(std::sync::atomic::Ordering::Relaxed),
            "metrics": metrics,
        })
    );
}
