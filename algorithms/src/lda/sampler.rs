//! The samplers: SparseLDA (the fast one the workers run) and a plain
//! dense collapsed Gibbs sampler (the reference in tests and benches).
//!
//! Both draw from the same full conditional (Griffiths & Steyvers 2004)
//!
//! ```text
//! p(z_i = k | z_-i, w) ∝ (n_dk + α) (n_wk + β) / (n_k + Vβ)
//! ```
//!
//! SparseLDA (Yao, Mimno & McCallum, KDD 2009) splits it into
//! `s = Σ_k αβ / (n_k + Vβ)` (smoothing, changes slowly), `r = Σ_{k ∈ d}
//! n_dk β / (n_k + Vβ)` (document, sparse in `d`'s topics) and `q = Σ_{k:
//! n_wk > 0} (α + n_dk) n_wk / (n_k + Vβ)` (word, sparse in `w`'s topics),
//! keeps `s`, `r` and the coefficients `(α + n_dk)/(n_k + Vβ)` up to date
//! in O(1) per count change, and samples in O(K_d + K_w) instead of O(K).
//! Word rows are kept sorted by count, largest first, so the walk through
//! `q` usually stops after a few entries.

use super::loglik::LogLik;
use crate::data::bow::Corpus;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Tokens of a set of documents in CSR form.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tokens {
    /// Token range of document `d` is `doc_start[d]..doc_start[d + 1]`.
    pub doc_start: Vec<usize>,
    /// Word id of each token (global or local, as the owner decides).
    pub words: Vec<u32>,
}

impl Tokens {
    /// The tokens of `corpus`: per document, each word id repeated `count`
    /// times, in word order.
    pub fn of(corpus: &Corpus) -> Tokens {
        let mut doc_start = Vec::with_capacity(corpus.len() + 1);
        let mut words = Vec::with_capacity(corpus.num_tokens() as usize);
        doc_start.push(0);
        for doc in &corpus.docs {
            for &(w, c) in doc {
                words.extend(std::iter::repeat_n(w, c as usize));
            }
            doc_start.push(words.len());
        }
        Tokens { doc_start, words }
    }

    pub fn num_docs(&self) -> usize {
        self.doc_start.len().saturating_sub(1)
    }

    pub fn doc(&self, d: usize) -> std::ops::Range<usize> {
        self.doc_start[d]..self.doc_start[d + 1]
    }
}

/// Uniformly random initial topics for `n` tokens from `seed`: the same for
/// the same seed whatever the number of workers.
pub fn initial_assignments(n: usize, k: u32, seed: u64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6c64_615f_696e_6974);
    (0..n).map(|_| rng.gen_range(0..k)).collect()
}

/// SparseLDA state of one worker: topic totals and word rows (for the
/// worker's local vocabulary) as read at the start of a clock plus the
/// worker's own changes since, and per-document scratch.
pub struct SparseLda {
    k: usize,
    alpha: f64,
    beta: f64,
    vbeta: f64,
    /// `n_k` (dense, `K`).
    pub nk: Vec<i32>,
    /// `n_wk` per local word: `(topic, count > 0)`, largest count first.
    pub wt: Vec<Vec<(u32, i32)>>,
    ndk: Vec<i32>,
    doc_topics: Vec<u32>,
    doc_pos: Vec<u32>,
    coef: Vec<f64>,
    cum: Vec<f64>,
}

impl SparseLda {
    /// A sampler for `k` topics over a global vocabulary of `v` words, with
    /// `local_words` word rows.
    pub fn new(k: usize, v: usize, alpha: f64, beta: f64, local_words: usize) -> Self {
        SparseLda {
            k,
            alpha,
            beta,
            vbeta: v as f64 * beta,
            nk: vec![0; k],
            wt: vec![Vec::new(); local_words],
            ndk: vec![0; k],
            doc_topics: Vec::new(),
            doc_pos: vec![0; k],
            coef: vec![0.0; k],
            cum: Vec::new(),
        }
    }

    /// Sets a local word's row from `(topic, count)` entries (any order;
    /// non-positive counts are dropped).
    pub fn set_word(&mut self, local: usize, entries: &[(u32, i32)]) {
        let row = &mut self.wt[local];
        row.clear();
        row.extend(entries.iter().copied().filter(|&(_, c)| c > 0));
        row.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    }

    #[inline]
    fn den(&self, t: usize) -> f64 {
        self.vbeta + self.nk[t].max(0) as f64
    }

    /// One Gibbs sweep over `tokens` (words are local ids) with their
    /// assignments `z`, in document order.
    pub fn sweep<R: Rng>(&mut self, tokens: &Tokens, z: &mut [u32], rng: &mut R) {
        self.sweep_docs(tokens, z, 0..tokens.num_docs(), rng);
    }

    /// One Gibbs pass over the documents `docs` only.
    pub fn sweep_docs<R: Rng>(
        &mut self,
        tokens: &Tokens,
        z: &mut [u32],
        docs: std::ops::Range<usize>,
        rng: &mut R,
    ) {
        let (a, b) = (self.alpha, self.beta);
        let ab = a * b;
        for t in 0..self.k {
            self.coef[t] = a / self.den(t);
        }
        let mut s = 0.0;
        for d in docs {
            let range = tokens.doc(d);
            if range.is_empty() {
                continue;
            }
            // Recompute the smoothing mass now and then, so rounding
            // errors of the incremental updates cannot accumulate.
            if d % 16 == 0 || s <= 0.0 {
                s = (0..self.k).map(|t| ab / self.den(t)).sum();
            }
            for &t in &z[range.clone()] {
                let t = t as usize;
                if self.ndk[t] == 0 {
                    self.doc_pos[t] = self.doc_topics.len() as u32;
                    self.doc_topics.push(t as u32);
                }
                self.ndk[t] += 1;
            }
            let mut r = 0.0;
            for i in 0..self.doc_topics.len() {
                let t = self.doc_topics[i] as usize;
                let den = self.den(t);
                r += self.ndk[t] as f64 * b / den;
                self.coef[t] = (a + self.ndk[t] as f64) / den;
            }
            for i in range {
                let w = tokens.words[i] as usize;
                let old = z[i] as usize;
                // Remove the token.
                let den = self.den(old);
                s -= ab / den;
                r -= self.ndk[old] as f64 * b / den;
                self.nk[old] -= 1;
                self.ndk[old] -= 1;
                let den = self.den(old);
                s += ab / den;
                r += self.ndk[old] as f64 * b / den;
                self.coef[old] = (a + self.ndk[old] as f64) / den;
                if self.ndk[old] == 0 {
                    let p = self.doc_pos[old] as usize;
                    self.doc_topics.swap_remove(p);
                    if p < self.doc_topics.len() {
                        self.doc_pos[self.doc_topics[p] as usize] = p as u32;
                    }
                }
                dec_word(&mut self.wt[w], old as u32);
                // Word bucket: cumulative masses over w's topics.
                let row = &self.wt[w];
                self.cum.clear();
                let mut q = 0.0;
                for &(t, c) in row {
                    q += self.coef[t as usize] * c as f64;
                    self.cum.push(q);
                }
                let u = rng.gen::<f64>() * (s + r + q);
                // Position of the new topic in the word's row, when known.
                let mut at = None;
                let new = if u < q {
                    let j = self.cum.partition_point(|&c| c <= u).min(row.len() - 1);
                    at = Some(j);
                    row[j].0 as usize
                } else if u < q + r {
                    let mut u = u - q;
                    let mut pick = *self.doc_topics.last().unwrap_or(&(old as u32)) as usize;
                    for &t in &self.doc_topics {
                        let v = self.ndk[t as usize] as f64 * b / self.den(t as usize);
                        if u < v {
                            pick = t as usize;
                            break;
                        }
                        u -= v;
                    }
                    pick
                } else {
                    let mut u = u - q - r;
                    let mut pick = self.k - 1;
                    for t in 0..self.k {
                        let v = ab / self.den(t);
                        if u < v {
                            pick = t;
                            break;
                        }
                        u -= v;
                    }
                    pick
                };
                // Add it back with its new topic.
                let den = self.den(new);
                s -= ab / den;
                r -= self.ndk[new] as f64 * b / den;
                self.nk[new] += 1;
                if self.ndk[new] == 0 {
                    self.doc_pos[new] = self.doc_topics.len() as u32;
                    self.doc_topics.push(new as u32);
                }
                self.ndk[new] += 1;
                let den = self.den(new);
                s += ab / den;
                r += self.ndk[new] as f64 * b / den;
                self.coef[new] = (a + self.ndk[new] as f64) / den;
                match at {
                    Some(j) => inc_word_at(&mut self.wt[w], j),
                    None => inc_word(&mut self.wt[w], new as u32),
                }
                z[i] = new as u32;
            }
            for &t in &self.doc_topics {
                let t = t as usize;
                self.ndk[t] = 0;
                self.coef[t] = a / (self.vbeta + self.nk[t].max(0) as f64);
            }
            self.doc_topics.clear();
        }
    }
}

/// `n_wt -= 1`, keeping the row sorted by count (largest first).
fn dec_word(row: &mut Vec<(u32, i32)>, t: u32) {
    let Some(mut j) = row.iter().position(|&(x, _)| x == t) else {
        debug_assert!(false, "own token's topic missing from its word row");
        return;
    };
    row[j].1 -= 1;
    if row[j].1 <= 0 {
        row.remove(j);
        return;
    }
    while j + 1 < row.len() && row[j + 1].1 > row[j].1 {
        row.swap(j, j + 1);
        j += 1;
    }
}

/// `n_wt += 1`, keeping the row sorted by count (largest first).
fn inc_word(row: &mut Vec<(u32, i32)>, t: u32) {
    match row.iter().position(|&(x, _)| x == t) {
        Some(j) => inc_word_at(row, j),
        None => row.push((t, 1)),
    }
}

/// `n_wt += 1` for the entry at position `j`, keeping the order.
fn inc_word_at(row: &mut [(u32, i32)], mut j: usize) {
    row[j].1 += 1;
    while j > 0 && row[j - 1].1 < row[j].1 {
        row.swap(j, j - 1);
        j -= 1;
    }
}

/// Plain collapsed Gibbs sampling over a whole corpus in one thread, dense
/// O(K) per token: the reference the fast sampler is tested against.
pub struct ReferenceGibbs {
    pub k: usize,
    pub v: usize,
    pub alpha: f64,
    pub beta: f64,
    pub tokens: Tokens,
    pub z: Vec<u32>,
    /// `n_wk`, row-major `V × K`.
    pub nwk: Vec<i32>,
    pub nk: Vec<i32>,
    ndk: Vec<i32>,
    p: Vec<f64>,
}

impl ReferenceGibbs {
    /// Starts from the assignments `z` (one per token of `corpus`).
    pub fn new(corpus: &Corpus, k: usize, alpha: f64, beta: f64, z: Vec<u32>) -> Self {
        let tokens = Tokens::of(corpus);
        assert_eq!(tokens.words.len(), z.len(), "one assignment per token");
        let v = corpus.num_words as usize;
        let mut nwk = vec![0; v * k];
        let mut nk = vec![0; k];
        for (&w, &t) in tokens.words.iter().zip(&z) {
            nwk[w as usize * k + t as usize] += 1;
            nk[t as usize] += 1;
        }
        ReferenceGibbs {
            k,
            v,
            alpha,
            beta,
            tokens,
            z,
            nwk,
            nk,
            ndk: vec![0; k],
            p: vec![0.0; k],
        }
    }

    /// One sweep over all tokens, in document order.
    #[allow(clippy::needless_range_loop)] // indexes four arrays by topic
    pub fn sweep<R: Rng>(&mut self, rng: &mut R) {
        let (k, a, b) = (self.k, self.alpha, self.beta);
        let vb = self.v as f64 * b;
        for d in 0..self.tokens.num_docs() {
            let range = self.tokens.doc(d);
            self.ndk.iter_mut().for_each(|x| *x = 0);
            for &t in &self.z[range.clone()] {
                self.ndk[t as usize] += 1;
            }
            for i in range {
                let w = self.tokens.words[i] as usize;
                let old = self.z[i] as usize;
                self.ndk[old] -= 1;
                self.nwk[w * k + old] -= 1;
                self.nk[old] -= 1;
                let row = &self.nwk[w * k..(w + 1) * k];
                let mut total = 0.0;
                for t in 0..k {
                    total +=
                        (self.ndk[t] as f64 + a) * (row[t] as f64 + b) / (self.nk[t] as f64 + vb);
                    self.p[t] = total;
                }
                let u = rng.gen::<f64>() * total;
                let new = self.p.partition_point(|&c| c <= u).min(k - 1);
                self.ndk[new] += 1;
                self.nwk[w * k + new] += 1;
                self.nk[new] += 1;
                self.z[i] = new as u32;
            }
        }
    }

    /// `log p(w, z)` of the current state.
    pub fn loglik(&self) -> f64 {
        let ll = LogLik::new(self.k, self.v, self.alpha, self.beta);
        let mut total = 0.0;
        for w in 0..self.v {
            total += ll.word_row(
                self.nwk[w * self.k..(w + 1) * self.k]
                    .iter()
                    .map(|&c| c as i64),
            );
        }
        total += ll.topic_totals(&self.nk.iter().map(|&c| c as i64).collect::<Vec<_>>());
        let mut scratch = vec![0; self.k];
        for d in 0..self.tokens.num_docs() {
            total += ll.doc_from_z(&self.z[self.tokens.doc(d)], &mut scratch);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_rows_stay_sorted_and_drop_zeros() {
        let mut row = vec![(3, 2), (1, 1)];
        inc_word(&mut row, 1);
        inc_word(&mut row, 1);
        assert_eq!(row, vec![(1, 3), (3, 2)]);
        inc_word(&mut row, 7);
        dec_word(&mut row, 1);
        dec_word(&mut row, 1);
        assert_eq!(row, vec![(3, 2), (1, 1), (7, 1)]);
        dec_word(&mut row, 1);
        assert_eq!(row, vec![(3, 2), (7, 1)]);
    }

    /// SparseLDA and the dense sampler are the same Markov kernel (same
    /// scan order, same conditionals): from the same start, the law of the
    /// state after one sweep is the same. Compared on a tiny corpus over
    /// many independent sweeps, per token and topic.
    #[test]
    fn sparse_sweep_has_the_dense_sweeps_law() {
        let corpus = Corpus {
            num_words: 3,
            vocab: Vec::new(),
            docs: vec![
                vec![(0, 2), (1, 1)],
                vec![(1, 1), (2, 2)],
                vec![(0, 1), (2, 1)],
            ],
        };
        let (k, a, b) = (3usize, 0.5, 0.1);
        let z0 = vec![0u32, 1, 2, 1, 0, 2, 1, 0];
        let tokens = Tokens::of(&corpus);
        let n = 20_000;
        let mut dense = vec![[0usize; 3]; z0.len()];
        let mut sparse = vec![[0usize; 3]; z0.len()];
        for run in 0..n {
            let mut r = ReferenceGibbs::new(&corpus, k, a, b, z0.clone());
            r.sweep(&mut ChaCha8Rng::seed_from_u64(run));
            let mut s = SparseLda::new(k, 3, a, b, 3);
            for w in 0..3 {
                let row: Vec<(u32, i32)> = (0..k)
                    .map(|t| (t as u32, r0(&corpus, &z0, k)[w * k + t]))
                    .collect();
                s.set_word(w, &row);
            }
            s.nk = (0..k)
                .map(|t| z0.iter().filter(|&&x| x as usize == t).count() as i32)
                .collect();
            let mut z = z0.clone();
            s.sweep(
                &tokens,
                &mut z,
                &mut ChaCha8Rng::seed_from_u64(run + 1_000_000),
            );
            for i in 0..z0.len() {
                dense[i][r.z[i] as usize] += 1;
                sparse[i][z[i] as usize] += 1;
            }
        }
        for i in 0..z0.len() {
            for t in 0..k {
                let (p, q) = (
                    dense[i][t] as f64 / n as f64,
                    sparse[i][t] as f64 / n as f64,
                );
                // 4 standard errors of a difference of two proportions.
                let se = (2.0 * 0.25 / n as f64).sqrt();
                assert!(
                    (p - q).abs() < 4.0 * se,
                    "token {i} topic {t}: dense {p} sparse {q}"
                );
            }
        }
    }

    fn r0(corpus: &Corpus, z: &[u32], k: usize) -> Vec<i32> {
        let t = Tokens::of(corpus);
        let mut nwk = vec![0; corpus.num_words as usize * k];
        for (&w, &x) in t.words.iter().zip(z) {
            nwk[w as usize * k + x as usize] += 1;
        }
        nwk
    }
}
