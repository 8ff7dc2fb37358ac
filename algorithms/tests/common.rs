//! Shared by the algorithm quality tests: run a job spec in process on the
//! embedded backend (the code path of `petuumd run`) and return its metrics.

#![allow(dead_code)]

use petuum_core::inproc::InProcShards;
use petuum_core::runner::{run_job, NoProgress, RunConfig, RunOutcome};
use petuum_core::spec::JobSpec;
use petuum_core::worker::Node;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
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

/// [`run_spec`] with what the spec leaves out filled in as `petuumd run`
/// and a submission fill it (`petuum_algorithms::apply_defaults`: e.g.
/// `run.clocks` unset is the algorithm's default).
pub fn run_spec_with_defaults(spec: &str) -> RunOutcome {
    let dir = tempfile::tempdir().unwrap();
    run_spec_inner(spec, &dir.path().join("model.safetensors"), true)
}

/// [`run_spec`] with the model written to `model`.
pub fn run_spec_at(spec: &str, model: &std::path::Path) -> RunOutcome {
    run_spec_inner(spec, model, false)
}

fn run_spec_inner(spec: &str, model: &std::path::Path, defaults: bool) -> RunOutcome {
    let text = spec
        .replace("{data}", &datasets().display().to_string())
        .replace("{model}", &model.display().to_string());
    let mut spec = JobSpec::parse(&text, "test.toml").unwrap();
    if defaults {
        petuum_algorithms::apply_defaults(&mut spec);
    }
    let algo = petuum_algorithms::build(&spec).unwrap_or_else(|e| panic!("{e}"));
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

/// The binary Ames set written into `dir`: the 33 numeric columns of
/// `regression/ames_raw.csv` but `Sale_Price` (raw values up to 215,245),
/// label 1 when the price is above its median, else -1.
pub fn ames_binary(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(datasets().join("regression/ames_raw.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let price = header.iter().position(|h| *h == "Sale_Price").unwrap();
    let numeric: Vec<usize> = (0..header.len())
        .filter(|&j| j != price && rows.iter().all(|r| r[j].parse::<f64>().is_ok()))
        .collect();
    assert_eq!(numeric.len(), 33, "numeric columns of ames_raw.csv");
    let mut prices: Vec<f64> = rows.iter().map(|r| r[price].parse().unwrap()).collect();
    prices.sort_by(f64::total_cmp);
    let n = prices.len();
    let median = if n % 2 == 1 {
        prices[n / 2]
    } else {
        (prices[n / 2 - 1] + prices[n / 2]) / 2.0
    };
    let mut out = String::new();
    for &j in &numeric {
        write!(out, "{},", header[j]).unwrap();
    }
    out.push_str("label\n");
    for r in &rows {
        for &j in &numeric {
            write!(out, "{},", r[j]).unwrap();
        }
        let above = r[price].parse::<f64>().unwrap() > median;
        out.push_str(if above { "1\n" } else { "-1\n" });
    }
    let path = dir.join("ames_binary.csv");
    std::fs::write(&path, out).unwrap();
    path
}
