//! Shared by the algorithm quality tests: run a job spec in process on the
//! embedded backend (the code path of `petuumd run`) and return its metrics.

#![allow(dead_code)]

use petuum_core::inproc::InProcShards;
use petuum_core::runner::{run_job, NoProgress, RunConfig, RunOutcome};
use petuum_core::spec::JobSpec;
use petuum_core::worker::Node;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The shared data sets: `$PETUUM_DATASETS` or `../shared/datasets`.
pub fn datasets() -> PathBuf {
    let dir = std::env::var_os("PETUUM_DATASETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets"));
    assert!(
        dir.is_dir(),
        "data sets not found at {} (set PETUUM_DATASETS)",
        dir.display()
    );
    dir
}

/// Runs `spec` (TOML; `{data}` is replaced by the data set directory, the
/// model goes to a temp dir) and returns the outcome.
pub fn run_spec(spec: &str) -> RunOutcome {
    let dir = tempfile::tempdir().unwrap();
    run_spec_at(spec, &dir.path().join("model.safetensors"))
}

/// [`run_spec`] with the model written to `model`.
pub fn run_spec_at(spec: &str, model: &std::path::Path) -> RunOutcome {
    let text = spec
        .replace("{data}", &datasets().display().to_string())
        .replace("{model}", &model.display().to_string());
    let spec = JobSpec::parse(&text, "test.toml").unwrap();
    let algo = petuum_algorithms::build(&spec).unwrap_or_else(|e| panic!("{e}"));
    let node = Node::new(Arc::new(InProcShards::new(spec.run.shards)), 1 << 16);
    let cfg = RunConfig {
        job: 1,
        first_table: 1,
        workers: spec.run.workers,
        consistency: spec.consistency(),
        clocks: spec.clocks(),
        seed: spec.run.seed,
        deterministic: spec.run.deterministic,
    };
    let out = run_job(
        &node,
        algo.as_ref(),
        &cfg,
        &spec.model.path,
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap_or_else(|e| panic!("job failed: {e}"));
    assert!(spec.model.path.is_file(), "no model written");
    out
}

/// A metric of a finished run.
pub fn metric(out: &RunOutcome, name: &str) -> f64 {
    out.model
        .metrics
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no metric {name} in {:?}", out.model.metrics))
        .1
}
