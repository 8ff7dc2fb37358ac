//! Latent Dirichlet allocation (Blei, Ng & Jordan, JMLR 2003) trained by
//! collapsed Gibbs sampling (Griffiths & Steyvers, PNAS 2004) over Bosen
//! tables, as Petuum's LDA app (Ho et al., NIPS 2013; Xing et al., KDD 2015).
//!
//! # Tables and local state
//!
//! - `word_topic`: sparse `i32` rows, row = word id, column = topic: `n_wk`.
//! - `topic_totals`: one dense `i32` row of width `K`: `n_k`.
//! - Worker-local: the token assignments `z` of the worker's documents
//!   (saved and restored with [`AlgoWorker::save_state`] so a checkpoint
//!   resumes them); document-topic counts are rebuilt from `z` per document
//!   as the sweep reaches it, so they need no storage.
//!
//! Every worker owns a contiguous range of documents (balanced by tokens).
//! Initial assignments are uniform draws from a stream seeded by the job
//! seed, the same for any number of workers; `initialize` bulk-loads their
//! counts.
//!
//! # One clock
//!
//! One clock is one full sweep over the worker's documents (or, with
//! `clocks_per_sweep = n`, a 1/n share of them, so that workers see each
//! other's changes n times per sweep):
//! 1. read `n_k` and the rows `n_w·` of the worker's vocabulary once each
//!    (under the job's consistency model: own increments always visible,
//!    others' within the staleness bound) into local structures; with
//!    several clocks per sweep, only the rows of the words in the clock's
//!    documents, except at the start of a sweep (the objective needs all);
//! 2. sweep with the sampler on those local copies, which the worker keeps up
//!    to date with its own changes during the sweep (other workers' changes
//!    of this clock arrive next clock: the usual data-parallel
//!    approximation of Newman et al.'s AD-LDA, JMLR 2009);
//! 3. send, per word, the difference between the local row and the row as
//!    read (`batch_inc_sparse`), and the `n_k` difference (`batch_inc`):
//!    one aggregated delta per row per clock, never one `inc` per token.
//!
//! # Samplers (`params.sampler`)
//!
//! - **SparseLDA** (Yao, Mimno & McCallum, KDD 2009; [`SparseLda`]), the
//!   default, samples *exactly* from the collapsed conditional, so per
//!   sweep it converges like plain Gibbs (`algorithms/tests/lda.rs` checks
//!   its log-likelihood against the reference sampler [`ReferenceGibbs`];
//!   a unit test checks that one sweep has the dense sweep's law), at
//!   O(K_d + K_w) per token instead of O(K).
//! - **WarpLDA** (Chen et al., VLDB 2016; [`WarpLda`], `sampler =
//!   "warp"`): Metropolis-Hastings with document and word proposals, O(1)
//!   per token and cache-resident counts (see `warp.rs`). Its cost does not
//!   grow with how many topics a word or document uses, which is what
//!   SparseLDA pays at large K while topics are still spread: on a
//!   50M-token corpus at K = 1000 it samples about 4x faster per core
//!   (2.1M tokens/s on one core; docs/benchmarks.md). It mixes more slowly
//!   per sweep (tests: twice the sweeps reach the exact sampler's
//!   log-likelihood within 1%), and once topics concentrate SparseLDA
//!   speeds up (NYT, K = 1000: 2M tokens/s per core over 30 sweeps), so to
//!   a given log-likelihood the exact sampler was as fast or faster on the
//!   corpora measured: it stays the default, WarpLDA is for throughput on
//!   large corpora at large K. Needs one clock per sweep; its pending
//!   proposals are part of the checkpoint.
//!
//! Chosen over LightLDA's alias tables per word *and* document: WarpLDA's
//! two phases need only one dense row in cache at a time (the document's
//! or the word's) and an alias table per word and sweep, which fits the
//! worker's local copies of the rows it reads once per clock.
//!
//! # Objective
//!
//! The objective reported per clock is the joint log-likelihood
//! `log p(w, z)` of the state at the *start* of the clock's sweep (with
//! `clocks_per_sweep = 1`, of the clock itself), as the corpus total: each worker reports its documents'
//! `log p(z_d)` plus `log p(w | z)` for the words it owns (`w mod workers`)
//! and worker 0 the topic-total terms, with weight 0 so the runner sums
//! them. `samples` is the worker's token count (throughput = tokens/s).
//! `export` reports the log-likelihood of the final state (`loglik`) when
//! every worker's assignments are available in process.
//!
//! # Model
//!
//! `topic_word_counts` (`K × V`, f32) with `alpha`, `beta`, `vocab` (JSON)
//! and `top_words` (JSON) in the metadata; [`LdaModel`] loads it, infers
//! topic mixtures of new documents and computes held-out perplexity by
//! document completion.

pub mod job;
mod loglik;
mod model;
mod params;
mod sampler;
pub mod synthetic;
mod warp;

pub use loglik::{ln_gamma, LnGammaTable, LogLik};
pub use model::LdaModel;
pub use params::{LdaParams, LdaSampler, MAX_TOPICS};
pub use sampler::{initial_assignments, ReferenceGibbs, SparseLda, Tokens};
pub use warp::WarpLda;

use crate::data::bow::Corpus;
use crate::model::ModelFile;
use petuum_core::algorithm::{
    AlgoWorker, Algorithm, BoxError, ModelSummary, StepStats, TableDecl, TableLoader, TableReader,
};
use petuum_core::{ElemType, Row, RowKind, Table, WorkerCtx};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Registry name.
pub const NAME: &str = "lda";
/// Table of `n_wk` (sparse rows, one per word).
pub const WORD_TOPIC: &str = "word_topic";
/// Table of `n_k` (one dense row).
pub const TOPIC_TOTALS: &str = "topic_totals";
/// Row `w`: worker `w`'s document part of `log p(w, z)` after the last
/// clock (so the export needs no worker's assignments: the workers may
/// run in other processes, on other nodes).
pub const DOC_LOGLIK: &str = "doc_loglik";

/// Errors of LDA beyond the table layer.
#[derive(Debug, thiserror::Error)]
pub enum LdaError {
    #[error("corpus has no tokens")]
    EmptyCorpus,
    #[error("checkpoint state of worker {worker} has {got} assignments, expected {expected}")]
    BadState {
        worker: u32,
        got: usize,
        expected: usize,
    },
}

/// Indices of a held-out split: a seeded permutation of `0..n`, the first
/// `round(fraction * n)` for testing. Returns `(train, test)`, each sorted.
pub fn split_holdout(n: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x0068_6f6c_646f_7574));
    let n_test = ((fraction * n as f64).round() as usize).min(n);
    let mut test = idx[..n_test].to_vec();
    let mut train = idx[n_test..].to_vec();
    test.sort_unstable();
    train.sort_unstable();
    (train, test)
}

/// Contiguous document ranges of `workers` workers, balanced by tokens.
pub fn partition(tokens: &Tokens, workers: u32) -> Vec<std::ops::Range<usize>> {
    let total = tokens.words.len();
    let docs = tokens.num_docs();
    let mut bounds = vec![0usize];
    for i in 1..workers as usize {
        let target = total * i / workers as usize;
        let d = tokens.doc_start.partition_point(|&s| s < target).min(docs);
        bounds.push(d.max(*bounds.last().expect("non-empty")));
    }
    bounds.push(docs);
    bounds.windows(2).map(|b| b[0]..b[1]).collect()
}

/// Final assignments published by workers, for export (worker → z).
type Published = Arc<Mutex<Vec<Option<Vec<u32>>>>>;

/// The algorithm with its corpus loaded.
pub struct Lda {
    params: LdaParams,
    corpus: Arc<Corpus>,
    tokens: Arc<Tokens>,
    z0: Arc<Vec<u32>>,
    test: Option<Arc<Corpus>>,
    seed: u64,
    published: Published,
    /// The job's clocks (0: unknown): workers write their document part
    /// of the log-likelihood after the last one.
    clocks: u64,
}

impl Lda {
    /// `seed` is the job seed (initial assignments, inference at export).
    pub fn new(
        params: LdaParams,
        corpus: Corpus,
        test: Option<Corpus>,
        seed: u64,
    ) -> Result<Self, LdaError> {
        let tokens = Tokens::of(&corpus);
        if tokens.words.is_empty() {
            return Err(LdaError::EmptyCorpus);
        }
        let z0 = initial_assignments(tokens.words.len(), params.num_topics, seed);
        Ok(Lda {
            params,
            corpus: Arc::new(corpus),
            tokens: Arc::new(tokens),
            z0: Arc::new(z0),
            test: test.map(Arc::new),
            seed,
            published: Arc::new(Mutex::new(Vec::new())),
            clocks: 0,
        })
    }

    /// Sets the job's clock count (see [`DOC_LOGLIK`]).
    pub fn with_clocks(mut self, clocks: u64) -> Self {
        self.clocks = clocks;
        self
    }

    pub fn params(&self) -> &LdaParams {
        &self.params
    }

    fn k(&self) -> usize {
        self.params.num_topics as usize
    }

    fn v(&self) -> usize {
        self.corpus.num_words as usize
    }

    /// Final assignments of all training tokens, if every worker of the
    /// last run published them in this process.
    pub fn final_assignments(&self) -> Option<Vec<u32>> {
        let p = self.published.lock().expect("not poisoned");
        if p.is_empty() || p.iter().any(Option::is_none) {
            return None;
        }
        Some(p.iter().flatten().flatten().copied().collect())
    }

    /// Reads the trained model from the tables.
    pub fn read_model(&self, tables: &TableReader<'_>) -> Result<LdaModel, BoxError> {
        read_model(
            tables,
            self.k(),
            self.v(),
            self.params.alpha,
            self.params.beta,
            self.corpus.vocab.clone(),
        )
    }

    /// `log p(w, z)` of the final state: word and topic parts from the
    /// tables, document part from the published assignments.
    fn final_loglik(&self, tables: &TableReader<'_>) -> Result<Option<f64>, BoxError> {
        let (k, v) = (self.k(), self.v());
        let workers = self.published.lock().expect("not poisoned").len();
        // The document part: from the workers' rows when the job's clocks
        // are known, else from assignments published in this process.
        let doc_part = if self.clocks > 0 && workers > 0 {
            let mut sum = 0.0;
            tables.prefetch(DOC_LOGLIK, 0..workers as u64)?;
            for w in 0..workers {
                sum += tables.read::<f64>(DOC_LOGLIK, w as u64)?.to_dense(1)[0];
            }
            sum
        } else {
            let Some(z) = self.final_assignments() else {
                return Ok(None);
            };
            let ll = LogLik::new(k, v, self.params.alpha, self.params.beta);
            let mut scratch = vec![0; k];
            let mut sum = 0.0;
            for d in 0..self.tokens.num_docs() {
                sum += ll.doc_from_z(&z[self.tokens.doc(d)], &mut scratch);
            }
            sum
        };
        let ll = LogLik::new(k, v, self.params.alpha, self.params.beta);
        let mut total = 0.0;
        tables.prefetch(WORD_TOPIC, 0..v as u64)?;
        for w in 0..v {
            let row = tables.read::<i32>(WORD_TOPIC, w as u64)?;
            total += ll.word_row(row.sorted_entries().into_iter().map(|(_, c)| c as i64));
        }
        let nk: Vec<i64> = tables
            .read::<i32>(TOPIC_TOTALS, 0)?
            .to_dense(k as u32)
            .into_iter()
            .map(i64::from)
            .collect();
        total += ll.topic_totals(&nk);
        Ok(Some(total + doc_part))
    }
}

impl Algorithm for Lda {
    fn name(&self) -> &'static str {
        NAME
    }

    fn objective_name(&self) -> &'static str {
        "log-likelihood"
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl {
                name: WORD_TOPIC.into(),
                kind: RowKind::Sparse,
                elem: ElemType::I32,
                columns: self.params.num_topics,
            },
            TableDecl {
                name: TOPIC_TOTALS.into(),
                kind: RowKind::Dense,
                elem: ElemType::I32,
                columns: self.params.num_topics,
            },
            TableDecl {
                name: DOC_LOGLIK.into(),
                kind: RowKind::Dense,
                elem: ElemType::F64,
                columns: 1,
            },
        ]
    }

    fn initialize(&self, loader: &TableLoader<'_>) -> Result<(), BoxError> {
        let k = self.k();
        let (rows, nk) = initial_counts(&self.tokens.words, &self.z0, k);
        loader.load(WORD_TOPIC, rows)?;
        loader.load(TOPIC_TOTALS, vec![(0, Row::Dense(nk))])?;
        Ok(())
    }

    fn worker(&self, worker: u32, workers: u32) -> Result<Box<dyn AlgoWorker>, BoxError> {
        {
            let mut p = self.published.lock().expect("not poisoned");
            if p.len() != workers as usize {
                *p = vec![None; workers as usize];
            }
        }
        let range = partition(&self.tokens, workers)[worker as usize].clone();
        Ok(Box::new(
            LdaWorker::new(
                &self.tokens,
                &self.z0,
                range,
                worker,
                workers,
                self.k(),
                self.v(),
                &self.params,
                self.published.clone(),
            )
            .last_clock(self.clocks.checked_sub(1)),
        ))
    }

    fn export(&self, tables: &TableReader<'_>, path: &Path) -> Result<ModelSummary, BoxError> {
        let model = self.read_model(tables)?;
        let mut file = ModelFile::new(NAME);
        model.write_into(&mut file, self.params.top_words);
        file.set("params", serde_json::to_string(&self.params)?);
        file.set("train_docs", self.corpus.len());
        file.set("train_tokens", self.tokens.words.len());
        file.set("infer_iterations", self.params.infer_iterations);
        let mut metrics = Vec::new();
        if let Some(ll) = self.final_loglik(tables)? {
            file.set("loglik", ll);
            metrics.push(("loglik".to_string(), ll));
            let per_token = ll / self.tokens.words.len() as f64;
            metrics.push(("loglik_per_token".to_string(), per_token));
        }
        if let Some(test) = &self.test {
            let (ppl, n) = model.perplexity(test, self.params.infer_iterations, self.seed);
            if n > 0 {
                file.set("heldout_perplexity", ppl);
                metrics.push(("heldout_perplexity".to_string(), ppl));
            }
        }
        let bytes = file.save(path)?;
        Ok(ModelSummary { bytes, metrics })
    }
}

/// Reads `n_kw` from the `word_topic` table into a model.
pub fn read_model(
    tables: &TableReader<'_>,
    k: usize,
    v: usize,
    alpha: f64,
    beta: f64,
    vocab: Vec<String>,
) -> Result<LdaModel, BoxError> {
    let mut counts = vec![0f32; k * v];
    tables.prefetch(WORD_TOPIC, 0..v as u64)?;
    for w in 0..v {
        for (t, c) in tables.read::<i32>(WORD_TOPIC, w as u64)?.sorted_entries() {
            counts[t as usize * v + w] = c as f32;
        }
    }
    Ok(LdaModel::new(k, v, alpha, beta, counts, vocab))
}

/// Word-topic rows (sparse, by word) and topic totals of assignments.
pub fn initial_counts(words: &[u32], z: &[u32], k: usize) -> (Vec<(u64, Row<i32>)>, Vec<i32>) {
    let mut pairs: Vec<u64> = words
        .iter()
        .zip(z)
        .map(|(&w, &t)| ((w as u64) << 32) | t as u64)
        .collect();
    pairs.sort_unstable();
    let mut rows: Vec<(u64, Row<i32>)> = Vec::new();
    let mut nk = vec![0i32; k];
    for p in pairs {
        let (w, t) = (p >> 32, (p & 0xffff_ffff) as u32);
        nk[t as usize] += 1;
        if rows.last().map(|r| r.0) != Some(w) {
            rows.push((w, Row::Sparse(HashMap::new())));
        }
        rows.last_mut().expect("pushed").1.add_at(t, 1);
    }
    (rows, nk)
}

/// One LDA worker: its documents, their assignments and the SparseLDA
/// state over its local vocabulary.
struct LdaWorker {
    worker: u32,
    k: usize,
    /// Local tokens (word ids are local: indices into `vocab`).
    tokens: Tokens,
    z: Vec<u32>,
    /// Global id of each local word, ascending.
    vocab: Vec<u32>,
    /// Local indices of the local words this worker owns for the objective.
    owned_local: Vec<usize>,
    /// Owned words that are not local (read only for the objective).
    owned_extra: Vec<u32>,
    sampler: Sampler,
    /// Word rows as read at the start of the clock, sorted by topic.
    read_rows: Vec<Vec<(u32, i32)>>,
    nk_read: Vec<i32>,
    ll: LogLik,
    tables: Option<(Table<i32>, Table<i32>)>,
    published: Published,
    scratch: Vec<i32>,
    delta: Vec<(u32, i32)>,
    clocks_per_sweep: u32,
    /// Share of the objective, computed at the start of each sweep.
    objective: Option<f64>,
    /// Local words of each part of a sweep (`clocks_per_sweep` parts).
    chunk_words: Vec<Vec<u32>>,
    /// The job's last clock, after which the worker writes its document
    /// part of the log-likelihood (DOC_LOGLIK).
    last_clock: Option<u64>,
}

/// The sampler a worker runs (`params.sampler`).
enum Sampler {
    Sparse(SparseLda),
    Warp(Box<WarpLda>),
}

impl Sampler {
    fn set_word(&mut self, local: usize, entries: &[(u32, i32)]) {
        match self {
            Sampler::Sparse(s) => s.set_word(local, entries),
            Sampler::Warp(s) => s.set_word(local, entries),
        }
    }

    /// A local word's row as read plus the worker's changes since.
    fn wt(&self, local: usize) -> &[(u32, i32)] {
        match self {
            Sampler::Sparse(s) => &s.wt[local],
            Sampler::Warp(s) => &s.wt[local],
        }
    }

    fn nk(&self) -> &[i32] {
        match self {
            Sampler::Sparse(s) => &s.nk,
            Sampler::Warp(s) => &s.nk,
        }
    }

    fn nk_mut(&mut self) -> &mut Vec<i32> {
        match self {
            Sampler::Sparse(s) => &mut s.nk,
            Sampler::Warp(s) => &mut s.nk,
        }
    }

    fn sweep_docs(
        &mut self,
        tokens: &Tokens,
        z: &mut [u32],
        docs: std::ops::Range<usize>,
        rng: &mut ChaCha8Rng,
    ) {
        match self {
            Sampler::Sparse(s) => s.sweep_docs(tokens, z, docs, rng),
            // Validation keeps WarpLDA to whole sweeps (one clock each).
            Sampler::Warp(s) => s.sweep(tokens, z, rng),
        }
    }
}

impl LdaWorker {
    #[allow(clippy::too_many_arguments)]
    fn new(
        all: &Tokens,
        z0: &[u32],
        docs: std::ops::Range<usize>,
        worker: u32,
        workers: u32,
        k: usize,
        v: usize,
        params: &LdaParams,
        published: Published,
    ) -> Self {
        let lo = all.doc_start[docs.start];
        let hi = all.doc_start[docs.end];
        let global = &all.words[lo..hi];
        let mut vocab: Vec<u32> = global.to_vec();
        vocab.sort_unstable();
        vocab.dedup();
        let tokens = Tokens {
            doc_start: all.doc_start[docs.start..=docs.end]
                .iter()
                .map(|s| s - lo)
                .collect(),
            words: global
                .iter()
                .map(|w| vocab.binary_search(w).expect("word is local") as u32)
                .collect(),
        };
        let owned_local = (0..vocab.len())
            .filter(|&l| vocab[l] % workers == worker)
            .collect();
        let owned_extra = (0..v as u32)
            .filter(|&g| g % workers == worker && vocab.binary_search(&g).is_err())
            .collect();
        LdaWorker {
            worker,
            k,
            sampler: if params.uses_warp() {
                Sampler::Warp(Box::new(WarpLda::new(
                    k,
                    v,
                    params.alpha,
                    params.beta,
                    params.mh_steps as usize,
                    &tokens,
                    vocab.len(),
                    &z0[lo..hi],
                )))
            } else {
                Sampler::Sparse(SparseLda::new(k, v, params.alpha, params.beta, vocab.len()))
            },
            tokens,
            z: z0[lo..hi].to_vec(),
            read_rows: vec![Vec::new(); vocab.len()],
            vocab,
            owned_local,
            owned_extra,
            nk_read: vec![0; k],
            ll: LogLik::new(k, v, params.alpha, params.beta),
            tables: None,
            published,
            scratch: vec![0; k],
            delta: Vec::new(),
            clocks_per_sweep: params.clocks_per_sweep,
            objective: None,
            chunk_words: Vec::new(),
            last_clock: None,
        }
    }

    /// Local words of the documents of part `part` of a sweep (sorted).
    fn chunk_words(&mut self, part: usize) -> &[u32] {
        if self.chunk_words.is_empty() {
            let parts = partition(&self.tokens, self.clocks_per_sweep);
            self.chunk_words = parts
                .iter()
                .map(|docs| {
                    let lo = self.tokens.doc_start[docs.start];
                    let hi = self.tokens.doc_start[docs.end];
                    let mut ws = self.tokens.words[lo..hi].to_vec();
                    ws.sort_unstable();
                    ws.dedup();
                    ws
                })
                .collect();
        }
        &self.chunk_words[part]
    }

    /// The documents sampled in clock `c`: part `c mod clocks_per_sweep`
    /// of the worker's documents, balanced by tokens.
    fn docs_of_clock(&self, c: u64) -> std::ops::Range<usize> {
        let parts = partition(&self.tokens, self.clocks_per_sweep);
        parts[(c % self.clocks_per_sweep as u64) as usize].clone()
    }

    /// This worker's share of `log p(w, z)` of the state as read: its
    /// documents' `log p(z_d)`, `log p(w | z)` for the words it owns and,
    /// on worker 0, the topic-total terms. Sums run in a fixed order (word
    /// rows as sorted by the sampler) so the figure is deterministic.
    fn objective_share(&mut self, ctx: &mut WorkerCtx, tw: Table<i32>) -> Result<f64, BoxError> {
        let mut objective = 0.0;
        for &l in &self.owned_local {
            objective += self
                .ll
                .word_row(self.sampler.wt(l).iter().map(|&(_, c)| c as i64));
        }
        for &g in &self.owned_extra {
            let row = ctx.get(tw, g as u64)?;
            objective += self
                .ll
                .word_row(row.sorted_entries().into_iter().map(|(_, c)| c as i64));
        }
        if self.worker == 0 {
            let nk: Vec<i64> = self.nk_read.iter().map(|&c| c as i64).collect();
            objective += self.ll.topic_totals(&nk);
        }
        for d in 0..self.tokens.num_docs() {
            objective += self
                .ll
                .doc_from_z(&self.z[self.tokens.doc(d)], &mut self.scratch);
        }
        Ok(objective)
    }

    fn last_clock(mut self, c: Option<u64>) -> Self {
        self.last_clock = c;
        self
    }

    fn publish(&self) {
        let mut p = self.published.lock().expect("not poisoned");
        if let Some(slot) = p.get_mut(self.worker as usize) {
            *slot = Some(self.z.clone());
        }
    }
}

impl AlgoWorker for LdaWorker {
    fn step(&mut self, ctx: &mut WorkerCtx, rng: &mut ChaCha8Rng) -> Result<StepStats, BoxError> {
        let (tw, tk) = match self.tables {
            Some(t) => t,
            None => *self.tables.insert((
                ctx.table::<i32>(WORD_TOPIC)?,
                ctx.table::<i32>(TOPIC_TOTALS)?,
            )),
        };
        // 1. Read the shared counts once: every local word at the start of
        // a sweep (the objective needs them), else only the words of this
        // clock's documents (the only rows sampled, hence changed).
        let c = ctx.clock_now();
        let sweep_start =
            self.objective.is_none() || c.is_multiple_of(self.clocks_per_sweep as u64);
        let part = (c % self.clocks_per_sweep as u64) as usize;
        let active = if sweep_start {
            None
        } else {
            Some(self.chunk_words(part))
        };
        let words: Vec<usize> = match &active {
            Some(ws) => ws.iter().map(|&l| l as usize).collect(),
            None => (0..self.vocab.len()).collect(),
        };
        // All rows of this clock in one round trip per shard (on a
        // cluster), not one per word.
        let extra: &[u32] = if sweep_start { &self.owned_extra } else { &[] };
        ctx.prefetch(
            tw,
            words
                .iter()
                .map(|&l| self.vocab[l] as u64)
                .chain(extra.iter().map(|&g| g as u64)),
        )?;
        ctx.get_dense_into(tk, 0, &mut self.nk_read)?;
        self.sampler.nk_mut().clone_from(&self.nk_read);
        for &l in &words {
            let g = self.vocab[l];
            // Unsorted is fine here: deltas go through a dense scratch row
            // and the sampler sorts its copy (by count, then topic).
            let rr = &mut self.read_rows[l];
            rr.clear();
            ctx.get_entries_into(tw, g as u64, rr)?;
            self.sampler.set_word(l, rr);
        }
        if sweep_start {
            self.objective = Some(self.objective_share(ctx, tw)?);
        }
        let objective = self.objective.expect("just computed");
        // 2. A sweep (or this clock's share of one) on the local copies.
        let docs = self.docs_of_clock(ctx.clock_now());
        let sampled = self.tokens.doc_start[docs.end] - self.tokens.doc_start[docs.start];
        self.sampler
            .sweep_docs(&self.tokens, &mut self.z, docs, rng);
        // 3. One aggregated delta per row read (rows not read this clock
        // were not sampled: their last delta is already sent).
        for &l in &words {
            for &(t, c) in &self.read_rows[l] {
                self.scratch[t as usize] -= c;
            }
            for &(t, c) in self.sampler.wt(l) {
                self.scratch[t as usize] += c;
            }
            self.delta.clear();
            for &(t, _) in self.read_rows[l].iter().chain(self.sampler.wt(l)) {
                let d = std::mem::take(&mut self.scratch[t as usize]);
                if d != 0 {
                    self.delta.push((t, d));
                }
            }
            if !self.delta.is_empty() {
                self.delta.sort_unstable_by_key(|&(t, _)| t);
                ctx.batch_inc_sparse(tw, self.vocab[l] as u64, &self.delta)?;
            }
        }
        let nk_delta: Vec<i32> = self
            .sampler
            .nk()
            .iter()
            .zip(&self.nk_read)
            .map(|(a, b)| a - b)
            .collect();
        if nk_delta.iter().any(|&d| d != 0) {
            ctx.batch_inc(tk, 0, &nk_delta)?;
        }
        if self.last_clock == Some(c) {
            let mut doc_part = 0.0;
            for d in 0..self.tokens.num_docs() {
                doc_part += self
                    .ll
                    .doc_from_z(&self.z[self.tokens.doc(d)], &mut self.scratch);
            }
            let t = ctx.table::<f64>(DOC_LOGLIK)?;
            ctx.batch_inc(t, self.worker as u64, &[doc_part])?;
        }
        self.publish();
        Ok(StepStats {
            objective,
            weight: 0.0,
            samples: sampled as u64,
            ..Default::default()
        })
    }

    /// Length-prefixed `u32` arrays: the assignments `z`, then (WarpLDA)
    /// the pending word proposals.
    fn save_state(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 4 * self.z.len());
        let mut put = |xs: &[u32]| {
            out.extend_from_slice(&(xs.len() as u64).to_le_bytes());
            for &t in xs {
                out.extend_from_slice(&t.to_le_bytes());
            }
        };
        put(&self.z);
        if let Sampler::Warp(s) = &self.sampler {
            put(&s.word_prop);
        }
        out
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), BoxError> {
        let n = self.z.len();
        let bad = |got| LdaError::BadState {
            worker: self.worker,
            got,
            expected: n,
        };
        let mut arrays = Vec::new();
        let mut rest = state;
        while !rest.is_empty() {
            if rest.len() < 8 {
                return Err(bad(0).into());
            }
            let len = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes")) as usize;
            let bytes = len.checked_mul(4).filter(|&b| b <= rest.len() - 8);
            let Some(bytes) = bytes else {
                return Err(bad(len).into());
            };
            arrays.push(
                rest[8..8 + bytes]
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect::<Vec<u32>>(),
            );
            rest = &rest[8 + bytes..];
        }
        let mut arrays = arrays.into_iter();
        let z = arrays.next().unwrap_or_default();
        if z.len() != n {
            return Err(bad(z.len()).into());
        }
        let extra: Vec<Vec<u32>> = arrays.collect();
        if let Some(&t) = z
            .iter()
            .chain(extra.first().into_iter().flatten())
            .find(|&&t| t as usize >= self.k)
        {
            return Err(format!("checkpoint assigns topic {t}, but K = {}", self.k).into());
        }
        match &mut self.sampler {
            Sampler::Warp(s) => {
                let m = n * s.mh_steps();
                match extra.as_slice() {
                    [topics] if topics.len() == m => s.word_prop.clone_from(topics),
                    // Saved by SparseLDA: no proposals pending.
                    [] => {
                        s.word_prop = warp::no_proposals(&z, s.mh_steps());
                    }
                    _ => {
                        return Err(format!(
                            "checkpoint state of worker {}: WarpLDA proposals do not match \
                             {n} tokens x {} steps",
                            self.worker,
                            s.mh_steps()
                        )
                        .into())
                    }
                }
            }
            Sampler::Sparse(_) => {
                // Proposals saved by WarpLDA are of no use to SparseLDA.
            }
        }
        self.z = z;
        self.objective = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_balances_tokens_and_covers_all_docs() {
        let t = Tokens {
            doc_start: vec![0, 10, 11, 12, 30, 31, 40],
            words: vec![0; 40],
        };
        let p = partition(&t, 3);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].start, 0);
        assert_eq!(p[2].end, 6);
        for w in p.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        // More workers than documents: some get none, all docs covered.
        let p = partition(&t, 10);
        assert_eq!(p.iter().map(|r| r.len()).sum::<usize>(), 6);
    }

    #[test]
    fn split_is_seeded_and_disjoint() {
        let (a, b) = split_holdout(100, 0.2, 1);
        assert_eq!((a.len(), b.len()), (80, 20));
        assert_eq!(split_holdout(100, 0.2, 1), (a.clone(), b.clone()));
        assert!(b.iter().all(|x| a.binary_search(x).is_err()));
    }
}
