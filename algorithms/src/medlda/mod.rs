//! MedLDA: maximum-margin supervised topic models, trained by the Gibbs
//! sampler with data augmentation of Zhu, Chen, Perkins & Zhang, "Gibbs
//! max-margin topic models with data augmentation" (JMLR 15, 2014), as
//! Petuum's MedLDA app; several classes one-vs-all (one binary classifier
//! for two classes).
//!
//! Each document `d` has topic assignments `z_d` as in LDA and a label; the
//! classifier `j` scores `η_jᵀ z̄_d` with `z̄_d` the empirical topic
//! distribution of `d`. The hinge loss `2c max(0, ℓ - y_dj η_jᵀ z̄_d)` is
//! made conditionally Gaussian by augmentation variables `λ_dj`, so every
//! step is a plain conditional draw:
//!
//! - `η_j ~ N(μ, Σ)`, `Σ⁻¹ = I/ν² + c² Σ_d z̄_d z̄_dᵀ / λ_dj`,
//!   `μ = Σ c Σ_d y_dj (λ_dj + cℓ) / λ_dj z̄_d`;
//! - `λ_dj⁻¹ ~ IG(1 / (c |ζ_dj|), 1)` with `ζ_dj = ℓ - y_dj η_jᵀ z̄_d`;
//! - `z_dn = k` with the LDA conditional times
//!   `exp(Σ_j c y_dj (cℓ + λ_dj) η_jk / (N_d λ_dj) - c² (η_jk² + 2 η_jk Λ_dj) / (2 λ_dj N_d²))`,
//!   `Λ_dj = Σ_{n' ≠ n} η_j,z_dn'`.
//!
//! # Over the tables
//!
//! Word-topic counts and topic totals are tables exactly as in [`crate::lda`].
//! The classifier lives in a third, dense `f64` table `classifier_stats`
//! holding, per classifier, the sufficient statistics of `η`'s posterior
//! (`Σ_d z̄ z̄ᵀ/λ` and `Σ_d y (λ + cℓ)/λ z̄`): each worker adds the change of
//! its documents' contribution once per clock. At the start of a clock
//! every worker reads them and draws `η` from a stream seeded by the job
//! seed and the clock, so under BSP all workers draw the same `η` without a
//! master (under SSP each draws from the statistics it sees). Then it draws
//! `λ` for its documents and sweeps their tokens (dense O(K) per token: the
//! supervision term couples every topic). Clock 0 runs with `η = 0` (plain
//! LDA), since no statistics exist yet. `z` and `λ` are the worker state
//! saved at checkpoints.
//!
//! The objective per clock is the mean training hinge loss
//! `max(0, ζ_dj)` under the `η` of that clock. Unseen documents are
//! classified from `z̄` inferred with the topics fixed (the paper's
//! prediction rule) and the posterior mean of `η`.

mod gibbs;
mod params;
pub mod svm;

pub use gibbs::{eta_posterior, inverse_gaussian};
pub use params::MedLdaParams;
pub use svm::LinearSvm;

use crate::data::bow::{self, Corpus};
use crate::lda::{
    self, initial_assignments, partition, LdaModel, Tokens, TOPIC_TOTALS, WORD_TOPIC,
};
use crate::model::{ModelError, ModelFile};
use crate::registry::BuildError;
use gibbs::{add_contribution, block_rows, target, zbar};
use petuum_core::algorithm::{
    AlgoWorker, Algorithm, BoxError, ModelSummary, StepStats, TableDecl, TableLoader, TableReader,
};
use petuum_core::spec::{parse_params, JobSpec, SpecError};
use petuum_core::{ElemType, Row, RowKind, Table, WorkerCtx};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::Arc;

/// Registry name.
pub const NAME: &str = "medlda";
/// Table of the classifiers' posterior statistics.
pub const STATS: &str = "classifier_stats";

/// Errors of MedLDA beyond the table layer.
#[derive(Debug, thiserror::Error)]
pub enum MedLdaError {
    #[error("corpus has no tokens")]
    EmptyCorpus,
    #[error("{labels} labels for {docs} documents")]
    LabelCount { labels: usize, docs: usize },
    #[error("checkpoint state of worker {worker} does not match its documents")]
    BadState { worker: u32 },
}

/// Number of binary classifiers for `classes` classes.
pub fn classifiers(classes: u32) -> usize {
    if classes <= 2 {
        1
    } else {
        classes as usize
    }
}

/// The algorithm with its labelled corpus loaded.
pub struct MedLda {
    params: MedLdaParams,
    corpus: Arc<Corpus>,
    tokens: Arc<Tokens>,
    labels: Arc<Vec<u32>>,
    num_classes: u32,
    z0: Arc<Vec<u32>>,
    test: Option<(Corpus, Vec<u32>)>,
    label_column: String,
    seed: u64,
}

impl MedLda {
    pub fn new(
        params: MedLdaParams,
        corpus: Corpus,
        labels: Vec<u32>,
        test: Option<(Corpus, Vec<u32>)>,
        seed: u64,
    ) -> Result<Self, MedLdaError> {
        if labels.len() != corpus.len() {
            return Err(MedLdaError::LabelCount {
                labels: labels.len(),
                docs: corpus.len(),
            });
        }
        if let Some((c, l)) = &test {
            if c.len() != l.len() {
                return Err(MedLdaError::LabelCount {
                    labels: l.len(),
                    docs: c.len(),
                });
            }
        }
        let tokens = Tokens::of(&corpus);
        if tokens.words.is_empty() {
            return Err(MedLdaError::EmptyCorpus);
        }
        let max_label = labels
            .iter()
            .chain(test.iter().flat_map(|(_, l)| l.iter()))
            .copied()
            .max()
            .unwrap_or(0);
        let z0 = initial_assignments(tokens.words.len(), params.num_topics, seed);
        Ok(MedLda {
            params,
            corpus: Arc::new(corpus),
            tokens: Arc::new(tokens),
            labels: Arc::new(labels),
            num_classes: (max_label + 1).max(2),
            z0: Arc::new(z0),
            test,
            label_column: "label".into(),
            seed,
        })
    }

    fn k(&self) -> usize {
        self.params.num_topics as usize
    }

    fn m(&self) -> usize {
        classifiers(self.num_classes)
    }

    /// Reads the trained model (topics and posterior-mean classifiers).
    pub fn read_model(&self, tables: &TableReader<'_>) -> Result<MedLdaModel, BoxError> {
        let (k, m) = (self.k(), self.m());
        let p = &self.params;
        let lda = lda::read_model(
            tables,
            k,
            self.corpus.num_words as usize,
            p.alpha,
            p.beta,
            self.corpus.vocab.clone(),
        )?;
        let mut stats = vec![0.0; m * block_rows(k) * k];
        tables.prefetch(STATS, 0..m as u64)?;
        let width = (block_rows(k) * k) as u32;
        for (j, chunk) in stats.chunks_mut(width as usize).enumerate() {
            chunk.copy_from_slice(&tables.read::<f64>(STATS, j as u64)?.to_dense(width));
        }
        let eta = (0..m)
            .map(|j| eta_posterior::<ChaCha8Rng>(&stats, k, j, p, None).0)
            .collect();
        Ok(MedLdaModel {
            lda,
            eta,
            num_classes: self.num_classes,
            infer_iterations: p.infer_iterations,
        })
    }
}

impl Algorithm for MedLda {
    fn name(&self) -> &'static str {
        NAME
    }

    fn objective_name(&self) -> &'static str {
        "hinge loss"
    }

    fn tables(&self) -> Vec<TableDecl> {
        let k = self.params.num_topics;
        vec![
            TableDecl {
                name: WORD_TOPIC.into(),
                kind: RowKind::Sparse,
                elem: ElemType::I32,
                columns: k,
            },
            TableDecl {
                name: TOPIC_TOTALS.into(),
                kind: RowKind::Dense,
                elem: ElemType::I32,
                columns: k,
            },
            // One row per classifier, its whole block (the precision
            // matrix and the vector of its normal equations): a read of
            // it is one row, so it holds the same workers' clocks in
            // both. As k + 1 rows, a read under SSP could take some of
            // them before a worker's clock reached their shards and the
            // rest after, and the posterior of eta drawn from such a mix
            // could be far off (the hinge loss of the test job jumped
            // from 0.02 to 8.9 once in a full test run).
            TableDecl {
                name: STATS.into(),
                kind: RowKind::Dense,
                elem: ElemType::F64,
                columns: (block_rows(k as usize) * k as usize) as u32,
            },
        ]
    }

    fn initialize(&self, loader: &TableLoader<'_>) -> Result<(), BoxError> {
        let (rows, nk) = lda::initial_counts(&self.tokens.words, &self.z0, self.k());
        loader.load(WORD_TOPIC, rows)?;
        loader.load(TOPIC_TOTALS, vec![(0, Row::Dense(nk))])?;
        Ok(())
    }

    fn worker(&self, worker: u32, workers: u32) -> Result<Box<dyn AlgoWorker>, BoxError> {
        let docs = partition(&self.tokens, workers)[worker as usize].clone();
        Ok(Box::new(MedWorker::new(self, docs, worker)))
    }

    fn export(&self, tables: &TableReader<'_>, path: &Path) -> Result<ModelSummary, BoxError> {
        let model = self.read_model(tables)?;
        let mut file = ModelFile::new(NAME);
        model.write_into(&mut file, self.params.top_words);
        file.set("params", serde_json::to_string(&self.params)?);
        file.set("label_column", &self.label_column);
        let mut metrics = Vec::new();
        if let Some((test, labels)) = &self.test {
            let acc = model.accuracy(test, labels, self.seed);
            file.set("test_accuracy", acc);
            metrics.push(("test_accuracy".to_string(), acc));
        }
        let bytes = file.save(path)?;
        Ok(ModelSummary { bytes, metrics })
    }
}

/// One MedLDA worker.
struct MedWorker {
    worker: u32,
    k: usize,
    m: usize,
    v: usize,
    p: MedLdaParams,
    seed: u64,
    tokens: Tokens,
    z: Vec<u32>,
    /// `y_dj` (±1), document-major.
    y: Vec<f64>,
    /// `λ_dj`, document-major.
    lambda: Vec<f64>,
    vocab: Vec<u32>,
    /// `n_wk` of the local words, dense `L × K`, and as read.
    nwk: Vec<i32>,
    nwk_read: Vec<i32>,
    nk: Vec<i32>,
    nk_read: Vec<i32>,
    /// This worker's contribution to `classifier_stats` as last sent.
    sent: Vec<f64>,
    tables: Option<(Table<i32>, Table<i32>, Table<f64>)>,
    row: Vec<f64>,
}

impl MedWorker {
    fn new(algo: &MedLda, docs: std::ops::Range<usize>, worker: u32) -> Self {
        let all = &algo.tokens;
        let (lo, hi) = (all.doc_start[docs.start], all.doc_start[docs.end]);
        let global = &all.words[lo..hi];
        let mut vocab = global.to_vec();
        vocab.sort_unstable();
        vocab.dedup();
        let words = global
            .iter()
            .map(|w| vocab.binary_search(w).expect("local word") as u32)
            .collect();
        let doc_start = all.doc_start[docs.start..=docs.end]
            .iter()
            .map(|s| s - lo)
            .collect();
        let (k, m) = (algo.k(), algo.m());
        let y = docs
            .clone()
            .flat_map(|d| (0..m).map(move |j| (d, j)))
            .map(|(d, j)| target(algo.labels[d], j, m))
            .collect();
        MedWorker {
            worker,
            k,
            m,
            v: algo.corpus.num_words as usize,
            p: algo.params.clone(),
            seed: algo.seed,
            tokens: Tokens { doc_start, words },
            z: algo.z0[lo..hi].to_vec(),
            y,
            lambda: vec![1.0; docs.len() * m],
            nwk: vec![0; vocab.len() * k],
            nwk_read: vec![0; vocab.len() * k],
            vocab,
            nk: vec![0; k],
            nk_read: vec![0; k],
            sent: vec![0.0; m * block_rows(k) * k],
            tables: None,
            row: Vec::new(),
        }
    }

    /// Draws `η` for this clock from the statistics (0 at clock 0).
    fn draw_eta(&mut self, ctx: &mut WorkerCtx, ts: Table<f64>) -> Result<Vec<f64>, BoxError> {
        let (k, m) = (self.k, self.m);
        if ctx.clock_now() == 0 {
            return Ok(vec![0.0; m * k]);
        }
        let mut stats = vec![0.0; m * block_rows(k) * k];
        let width = block_rows(k) * k;
        ctx.prefetch(ts, 0..m as u64)?;
        for j in 0..m {
            ctx.get_dense_into(ts, j as u64, &mut self.row)?;
            stats[j * width..(j + 1) * width].copy_from_slice(&self.row);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x6d65_646c_6461_6574);
        rng.set_stream(ctx.clock_now());
        let mut eta = Vec::with_capacity(m * k);
        for j in 0..m {
            eta.extend(eta_posterior(&stats, k, j, &self.p, Some(&mut rng)).1);
        }
        Ok(eta)
    }

    /// Samples `λ` for every document given `η`; returns the summed hinge
    /// loss and the number of (document, classifier) pairs.
    fn draw_lambda(&mut self, eta: &[f64], rng: &mut ChaCha8Rng, first: bool) -> (f64, usize) {
        let (k, m) = (self.k, self.m);
        let (c, l) = (self.p.c, self.p.margin);
        let mut scratch = vec![0; k];
        let mut loss = 0.0;
        let mut pairs = 0;
        for d in 0..self.tokens.num_docs() {
            let range = self.tokens.doc(d);
            if range.is_empty() {
                continue;
            }
            let zb = zbar(&self.z[range], &mut scratch);
            for j in 0..m {
                let score: f64 = zb.iter().map(|&(t, s)| eta[j * k + t as usize] * s).sum();
                let zeta = l - self.y[d * m + j] * score;
                loss += zeta.max(0.0);
                pairs += 1;
                if !first {
                    let mean = 1.0 / (c * zeta.abs()).max(1e-9);
                    let inv = inverse_gaussian(mean, 1.0, rng);
                    self.lambda[d * m + j] = (1.0 / inv).clamp(1e-9, 1e9);
                }
            }
        }
        (loss, pairs)
    }

    /// One sweep over the worker's tokens with the supervision term.
    fn sweep(&mut self, eta: &[f64], rng: &mut ChaCha8Rng) {
        let (k, m) = (self.k, self.m);
        let (a, b, c, l) = (self.p.alpha, self.p.beta, self.p.c, self.p.margin);
        let vb = self.v as f64 * b;
        let mut ndk = vec![0i32; k];
        let mut p = vec![0.0; k];
        let mut e = vec![0.0; k];
        let mut ca = vec![0.0; m];
        let mut cb = vec![0.0; m];
        let mut lam = vec![0.0; m];
        for d in 0..self.tokens.num_docs() {
            let range = self.tokens.doc(d);
            if range.is_empty() {
                continue;
            }
            let n = range.len() as f64;
            ndk.iter_mut().for_each(|x| *x = 0);
            lam.iter_mut().for_each(|x| *x = 0.0);
            for &t in &self.z[range.clone()] {
                ndk[t as usize] += 1;
                for j in 0..m {
                    lam[j] += eta[j * k + t as usize];
                }
            }
            for j in 0..m {
                let ld = self.lambda[d * m + j];
                ca[j] = c * self.y[d * m + j] * (c * l + ld) / (n * ld);
                cb[j] = c * c / (2.0 * ld * n * n);
            }
            for i in range {
                let w = self.tokens.words[i] as usize;
                let old = self.z[i] as usize;
                ndk[old] -= 1;
                self.nwk[w * k + old] -= 1;
                self.nk[old] -= 1;
                for j in 0..m {
                    lam[j] -= eta[j * k + old];
                }
                let row = &self.nwk[w * k..(w + 1) * k];
                let mut emax = f64::NEG_INFINITY;
                for t in 0..k {
                    let mut s = 0.0;
                    for j in 0..m {
                        let h = eta[j * k + t];
                        s += (ca[j] - cb[j] * (h + 2.0 * lam[j])) * h;
                    }
                    e[t] = s;
                    emax = emax.max(s);
                }
                let mut total = 0.0;
                for t in 0..k {
                    total += (ndk[t] as f64 + a) * (row[t].max(0) as f64 + b)
                        / (self.nk[t].max(0) as f64 + vb)
                        * (e[t] - emax).exp();
                    p[t] = total;
                }
                let u = rng.gen::<f64>() * total;
                let new = p.partition_point(|&x| x <= u).min(k - 1);
                ndk[new] += 1;
                self.nwk[w * k + new] += 1;
                self.nk[new] += 1;
                for j in 0..m {
                    lam[j] += eta[j * k + new];
                }
                self.z[i] = new as u32;
            }
        }
    }

    /// This worker's documents' contribution to the statistics.
    fn contribution(&self) -> Vec<f64> {
        let (k, m) = (self.k, self.m);
        let mut out = vec![0.0; m * block_rows(k) * k];
        let mut scratch = vec![0; k];
        for d in 0..self.tokens.num_docs() {
            let range = self.tokens.doc(d);
            if range.is_empty() {
                continue;
            }
            let zb = zbar(&self.z[range], &mut scratch);
            for j in 0..m {
                add_contribution(
                    &mut out,
                    k,
                    j,
                    &zb,
                    self.y[d * m + j],
                    self.lambda[d * m + j],
                    &self.p,
                    1.0,
                );
            }
        }
        out
    }
}

impl AlgoWorker for MedWorker {
    fn step(&mut self, ctx: &mut WorkerCtx, rng: &mut ChaCha8Rng) -> Result<StepStats, BoxError> {
        let (tw, tk, ts) = match self.tables {
            Some(t) => t,
            None => *self.tables.insert((
                ctx.table::<i32>(WORD_TOPIC)?,
                ctx.table::<i32>(TOPIC_TOTALS)?,
                ctx.table::<f64>(STATS)?,
            )),
        };
        let k = self.k;
        ctx.prefetch(tw, self.vocab.iter().map(|&g| g as u64))?;
        ctx.get_dense_into(tk, 0, &mut self.nk_read)?;
        self.nk.clone_from(&self.nk_read);
        for (l, &g) in self.vocab.iter().enumerate() {
            let row = &mut self.nwk_read[l * k..(l + 1) * k];
            row.iter_mut().for_each(|x| *x = 0);
            for (t, c) in ctx.get(tw, g as u64)?.sorted_entries() {
                row[t as usize] = c;
            }
        }
        self.nwk.clone_from(&self.nwk_read);
        let first = ctx.clock_now() == 0;
        let eta = self.draw_eta(ctx, ts)?;
        let (loss, pairs) = self.draw_lambda(&eta, rng, first);
        self.sweep(&eta, rng);
        // Statistics: the change of this worker's contribution.
        let now = self.contribution();
        let width = block_rows(k) * k;
        for j in 0..self.m {
            let delta: Vec<f64> = (0..width)
                .map(|i| now[j * width + i] - self.sent[j * width + i])
                .collect();
            if delta.iter().any(|&x| x != 0.0) {
                ctx.batch_inc(ts, j as u64, &delta)?;
            }
        }
        self.sent = now;
        // Counts: one aggregated delta per row.
        let mut delta = Vec::new();
        for (l, &g) in self.vocab.iter().enumerate() {
            delta.clear();
            for t in 0..k {
                let d = self.nwk[l * k + t] - self.nwk_read[l * k + t];
                if d != 0 {
                    delta.push((t as u32, d));
                }
            }
            if !delta.is_empty() {
                ctx.batch_inc_sparse(tw, g as u64, &delta)?;
            }
        }
        let nk_delta: Vec<i32> = self
            .nk
            .iter()
            .zip(&self.nk_read)
            .map(|(a, b)| a - b)
            .collect();
        if nk_delta.iter().any(|&d| d != 0) {
            ctx.batch_inc(tk, 0, &nk_delta)?;
        }
        Ok(StepStats {
            objective: loss,
            weight: pairs as f64,
            samples: self.z.len() as u64,
            ..Default::default()
        })
    }

    fn save_state(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 4 * self.z.len() + 8 * self.lambda.len());
        out.extend_from_slice(&(self.z.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.lambda.len() as u64).to_le_bytes());
        for &t in &self.z {
            out.extend_from_slice(&t.to_le_bytes());
        }
        for &x in &self.lambda {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend(self.sent.iter().flat_map(|x| x.to_le_bytes()));
        out
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), BoxError> {
        let bad = || MedLdaError::BadState {
            worker: self.worker,
        };
        let (nz, nl, ns) = (self.z.len(), self.lambda.len(), self.sent.len());
        if state.len() != 16 + 4 * nz + 8 * nl + 8 * ns
            || state[..8] != (nz as u64).to_le_bytes()
            || state[8..16] != (nl as u64).to_le_bytes()
        {
            return Err(bad().into());
        }
        let mut at = 16;
        for t in self.z.iter_mut() {
            *t = u32::from_le_bytes(state[at..at + 4].try_into().expect("4 bytes"));
            if *t as usize >= self.k {
                return Err(bad().into());
            }
            at += 4;
        }
        for x in self.lambda.iter_mut().chain(self.sent.iter_mut()) {
            *x = f64::from_le_bytes(state[at..at + 8].try_into().expect("8 bytes"));
            at += 8;
        }
        Ok(())
    }
}

/// A trained MedLDA model: topics and one weight vector per classifier.
#[derive(Clone, Debug)]
pub struct MedLdaModel {
    pub lda: LdaModel,
    /// `η_j` (posterior mean), one per classifier.
    pub eta: Vec<Vec<f64>>,
    pub num_classes: u32,
    pub infer_iterations: u32,
}

impl MedLdaModel {
    pub fn from_file(file: &ModelFile) -> Result<Self, ModelError> {
        let lda = LdaModel::from_file(file)?;
        let t = file.tensor("eta")?;
        if t.shape.len() != 2 || t.shape[1] != lda.num_topics {
            return Err(ModelError::Format {
                path: file.path.clone(),
                reason: format!("eta has shape {:?}, K = {}", t.shape, lda.num_topics),
            });
        }
        Ok(MedLdaModel {
            eta: t
                .data
                .chunks(t.shape[1])
                .map(|r| r.iter().map(|&x| x as f64).collect())
                .collect(),
            lda,
            num_classes: file.meta("num_classes")?,
            infer_iterations: file.meta("infer_iterations")?,
        })
    }

    pub fn write_into(&self, file: &mut ModelFile, top_words: usize) {
        self.lda.write_into(file, top_words);
        file.set("num_classes", self.num_classes);
        file.set("infer_iterations", self.infer_iterations);
        let k = self.lda.num_topics;
        file.add_tensor(
            "eta",
            vec![self.eta.len(), k],
            self.eta.iter().flatten().map(|&x| x as f32).collect(),
        );
    }

    /// Class of a topic distribution `z̄`.
    pub fn predict_zbar(&self, zbar: &[f64]) -> u32 {
        let scores: Vec<f64> = self.eta.iter().map(|e| svm::dot(e, zbar)).collect();
        if scores.len() == 1 {
            u32::from(scores[0] >= 0.0)
        } else {
            svm::argmax(&scores) as u32
        }
    }

    /// Class of a document, from `z̄` inferred with the topics fixed.
    pub fn predict<R: Rng>(&self, doc: &[(u32, u32)], rng: &mut R) -> u32 {
        self.predict_zbar(&self.lda.infer_zbar(doc, self.infer_iterations, rng))
    }

    /// Fraction of documents classified correctly (inference seeded by `seed`).
    pub fn accuracy(&self, corpus: &Corpus, labels: &[u32], seed: u64) -> f64 {
        if corpus.is_empty() {
            return 0.0;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ok = corpus
            .docs
            .iter()
            .zip(labels)
            .filter(|(d, &y)| self.predict(d, &mut rng) == y)
            .count();
        ok as f64 / corpus.len() as f64
    }
}

/// Validates a `medlda` spec without reading data.
pub fn validate(spec: &JobSpec) -> Result<(), SpecError> {
    let p: MedLdaParams = parse_params(&spec.params)?;
    p.validate()?;
    lda::job::check_bow_format(spec)?;
    if spec.data.train_labels.is_none() {
        return Err(SpecError::invalid(
            "data.train_labels",
            "medlda needs a labels file (CSV with a header; column data.label_column)",
        ));
    }
    if spec.data.test.is_some() && spec.data.test_labels.is_none() {
        return Err(SpecError::invalid(
            "data.test_labels",
            "data.test needs data.test_labels",
        ));
    }
    Ok(())
}

/// Validates the spec, reads corpus and labels, builds the algorithm.
pub fn build(spec: &JobSpec) -> Result<MedLda, BuildError> {
    validate(spec)?;
    let params: MedLdaParams = parse_params(&spec.params)?;
    let d = &spec.data;
    let column = d.label_column.clone().unwrap_or_else(|| "label".into());
    let labels_path = d.train_labels.as_ref().expect("validated");
    let labels = bow::read_labels_csv(labels_path, &column)?;
    let lda::job::Loaded {
        train,
        test,
        train_idx,
        test_idx,
    } = lda::job::load(spec)?;
    lda::job::check_size(&train, params.num_topics)?;
    let n_all = if d.test.is_some() {
        train.len()
    } else {
        train_idx.len() + test_idx.len()
    };
    if labels.len() != n_all {
        return Err(SpecError::invalid(
            "data.train_labels",
            format!("{} labels for {n_all} documents", labels.len()),
        )
        .into());
    }
    let train_labels: Vec<u32> = train_idx.iter().map(|&i| labels[i]).collect();
    let test = match (test, &d.test_labels) {
        (Some(t), Some(p)) if d.test.is_some() => {
            let l = bow::read_labels_csv(p, &column)?;
            Some((t, l))
        }
        (Some(t), _) => Some((t, test_idx.iter().map(|&i| labels[i]).collect())),
        (None, _) => None,
    };
    let mut algo = MedLda::new(params, train, train_labels, test, spec.run.seed)
        .map_err(|e| SpecError::invalid("data.train", e.to_string()))?;
    algo.label_column = column;
    Ok(algo)
}
