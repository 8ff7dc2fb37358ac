//! WarpLDA (Chen, Li, Zhu & Chen, VLDB 2016): a Metropolis-Hastings
//! sampler that costs O(1) per token and touches only cache-resident
//! counts, for large K.
//!
//! The target is the collapsed conditional of [`super::sampler`],
//! `π(k) ∝ (n_dk + α)(n_wk + β)/(n_k + Vβ)`. Each clock has two phases:
//!
//! - **Document phase**, document by document, with `n_d·` in a dense
//!   scratch row: accept or reject the token's pending *word proposals*
//!   (drawn from `q_w(k) ∝ n_wk + β` in the previous word phase; the word
//!   factors cancel, so the ratio is `(n_dt + α)(n_s + Vβ) / ((n_ds + α)
//!   (n_t + Vβ))` with the token's own count taken out), then draw
//!   *document proposals* from `q_d(k) ∝ n_dk + α` in O(1): the topic of a
//!   random token of the document, or with probability `Kα/(L_d + Kα)` a
//!   uniform topic.
//! - **Word phase**, word by word, with `n_w·` in a dense scratch row (the
//!   row as read at the start of the clock plus this worker's changes):
//!   accept or reject the document proposals (the document factors cancel:
//!   ratio `(n_wt + β)(n_s + Vβ) / ((n_ws + β)(n_t + Vβ))`), then draw the
//!   next word proposals from an alias table over the word's non-zero
//!   counts (mixed with the uniform `β` part), built once per word and
//!   clock in O(K_w).
//!
//! `mh_steps` proposals of each kind per token and clock. As in WarpLDA,
//! a proposal's cancelled factor is the one of the phase that drew it
//! (delayed by at most one phase), so the chain is an approximation of
//! collapsed Gibbs; the tests compare its log-likelihood with the exact
//! reference sampler after the same number of sweeps.
//!
//! Per token and clock the sampler reads and writes its own assignment,
//! its proposals and a few entries of rows that stay in cache (`n_d·`,
//! `n_w·`, `n_·`, the word's alias table): no walk over a word's topics
//! per token, which is what SparseLDA pays at large K.

use super::sampler::Tokens;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A small fast generator for the inner loops, seeded once per clock from
/// the worker's stream (so runs stay deterministic and resumable).
struct SplitMix(u64);

impl SplitMix {
    #[inline]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    #[inline]
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in 0..n.
    #[inline]
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
}

/// WarpLDA state of one worker (see the module docs): topic totals and
/// word rows for its local vocabulary as read at the start of a clock
/// plus its own changes, the tokens in word order, and the pending word
/// proposals (`mh_steps` per token, saved with checkpoints).
pub struct WarpLda {
    k: usize,
    alpha: f64,
    beta: f64,
    vbeta: f64,
    mh: usize,
    /// `n_k` (dense, `K`).
    pub nk: Vec<i32>,
    /// `n_wk` per local word: `(topic, count > 0)`, by topic.
    pub wt: Vec<Vec<(u32, i32)>>,
    /// Tokens of local word `l`: `word_tok[word_start[l]..word_start[l + 1]]`.
    word_start: Vec<usize>,
    word_tok: Vec<u32>,
    /// Pending word proposals, `mh` per token (document order).
    pub word_prop: Vec<u32>,
    doc_prop: Vec<u32>,
    z_start: Vec<u32>,
    dense: Vec<i32>,
    seen: Vec<bool>,
    touched: Vec<u32>,
    alias: Alias,
}

impl WarpLda {
    /// A sampler for `k` topics over a global vocabulary of `v` words, for
    /// `tokens` (local word ids) with initial assignments `z`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        k: usize,
        v: usize,
        alpha: f64,
        beta: f64,
        mh_steps: usize,
        tokens: &Tokens,
        local_words: usize,
        z: &[u32],
    ) -> Self {
        let mut word_start = vec![0usize; local_words + 1];
        for &w in &tokens.words {
            word_start[w as usize + 1] += 1;
        }
        for l in 0..local_words {
            word_start[l + 1] += word_start[l];
        }
        let mut fill = word_start.clone();
        let mut word_tok = vec![0u32; tokens.words.len()];
        for (i, &w) in tokens.words.iter().enumerate() {
            word_tok[fill[w as usize]] = i as u32;
            fill[w as usize] += 1;
        }
        let mh = mh_steps.max(1);
        WarpLda {
            k,
            alpha,
            beta,
            vbeta: v as f64 * beta,
            mh,
            nk: vec![0; k],
            wt: vec![Vec::new(); local_words],
            word_start,
            word_tok,
            // No pending proposals yet: proposing the current topic is a
            // no-op.
            word_prop: no_proposals(z, mh),
            doc_prop: vec![0; z.len() * mh],
            z_start: Vec::new(),
            dense: vec![0; k],
            seen: vec![false; k],
            touched: Vec::with_capacity(k),
            alias: Alias::default(),
        }
    }

    /// Proposals per token and phase.
    pub fn mh_steps(&self) -> usize {
        self.mh
    }

    /// Sets a local word's row from `(topic, count)` entries (any order;
    /// non-positive counts are dropped).
    pub fn set_word(&mut self, local: usize, entries: &[(u32, i32)]) {
        let row = &mut self.wt[local];
        row.clear();
        row.extend(entries.iter().copied().filter(|&(_, c)| c > 0));
        row.sort_unstable_by_key(|&(t, _)| t);
    }

    /// One clock (a document phase, then a word phase) over all tokens.
    pub fn sweep(&mut self, tokens: &Tokens, z: &mut [u32], rng: &mut ChaCha8Rng) {
        let mut r = SplitMix(rng.gen());
        self.z_start.clear();
        self.z_start.extend_from_slice(z);
        self.doc_phase(tokens, z, &mut r);
        self.word_phase(z, &mut r);
    }

    #[inline]
    fn den(&self, t: usize) -> f64 {
        self.vbeta + self.nk[t].max(0) as f64
    }

    /// One Metropolis-Hastings test of moving a token from topic `s` to
    /// the proposed `t`, with the token taken out. `dense` holds the row
    /// of the phase (the document's counts with prior α, or the word's
    /// with β); the proposal came from the other factor, which cancels.
    /// On acceptance the token moves in `dense` and `nk`.
    #[inline]
    fn accept(&mut self, r: &mut SplitMix, prior: f64, s: usize, t: usize) -> bool {
        let num = (self.dense[t].max(0) as f64 + prior) * (self.den(s) - 1.0).max(self.vbeta);
        let den = ((self.dense[s] - 1).max(0) as f64 + prior) * self.den(t);
        let ok = r.unit() * den < num;
        if ok {
            self.dense[s] -= 1;
            self.dense[t] += 1;
            self.nk[s] -= 1;
            self.nk[t] += 1;
        }
        ok
    }

    fn doc_phase(&mut self, tokens: &Tokens, z: &mut [u32], r: &mut SplitMix) {
        let (a, mh, k) = (self.alpha, self.mh, self.k);
        let ka = k as f64 * a;
        for d in 0..tokens.num_docs() {
            let range = tokens.doc(d);
            if range.is_empty() {
                continue;
            }
            for &t in &z[range.clone()] {
                self.dense[t as usize] += 1;
            }
            for i in range.clone() {
                for j in 0..mh {
                    let t = self.word_prop[i * mh + j] as usize;
                    let s = z[i] as usize;
                    if t == s {
                        continue;
                    }
                    // π(t) q_w(s|t) / (π(s) q_w(t|s)): the word's factors
                    // cancel.
                    if self.accept(r, a, s, t) {
                        z[i] = t as u32;
                    }
                }
            }
            // Document proposals from the counts after this phase.
            let len = range.len();
            let total = len as f64 + ka;
            for i in range.clone() {
                for j in 0..mh {
                    let u = r.unit() * total;
                    let t = if u < len as f64 {
                        z[range.start + (u as usize).min(len - 1)]
                    } else {
                        r.below(k) as u32
                    };
                    self.doc_prop[i * mh + j] = t;
                }
            }
            for &t in &z[range] {
                self.dense[t as usize] = 0;
            }
        }
    }

    fn word_phase(&mut self, z: &mut [u32], r: &mut SplitMix) {
        let (b, mh, k) = (self.beta, self.mh, self.k);
        let kb = k as f64 * b;
        for l in 0..self.wt.len() {
            let toks = self.word_start[l]..self.word_start[l + 1];
            // n_w· now: the row as read plus this clock's own changes.
            self.touched.clear();
            for &(t, c) in &self.wt[l] {
                self.dense[t as usize] += c;
                self.seen[t as usize] = true;
                self.touched.push(t);
            }
            for p in toks.clone() {
                let i = self.word_tok[p] as usize;
                let (now, was) = (z[i] as usize, self.z_start[i] as usize);
                if now != was {
                    self.dense[now] += 1;
                    self.dense[was] -= 1;
                    if !self.seen[now] {
                        self.seen[now] = true;
                        self.touched.push(now as u32);
                    }
                }
            }
            // Accept or reject the document proposals.
            for p in toks.clone() {
                let i = self.word_tok[p] as usize;
                for j in 0..mh {
                    let t = self.doc_prop[i * mh + j] as usize;
                    let s = z[i] as usize;
                    if t == s {
                        continue;
                    }
                    // The document's factors cancel.
                    if self.accept(r, b, s, t) {
                        z[i] = t as u32;
                        if !self.seen[t] {
                            self.seen[t] = true;
                            self.touched.push(t as u32);
                        }
                    }
                }
            }
            // The word's row after this clock, and its alias table.
            self.touched.sort_unstable();
            let row = &mut self.wt[l];
            row.clear();
            let mut mass = 0i64;
            for &t in &self.touched {
                let c = self.dense[t as usize];
                if c > 0 {
                    row.push((t, c));
                    mass += c as i64;
                }
            }
            self.alias.build(row, mass);
            // Word proposals for the next document phase.
            let total = mass as f64 + kb;
            for p in toks {
                let i = self.word_tok[p] as usize;
                for j in 0..mh {
                    let u = r.unit() * total;
                    let t = if u < mass as f64 && !self.alias.is_empty() {
                        self.alias.sample(r)
                    } else {
                        r.below(k) as u32
                    };
                    self.word_prop[i * mh + j] = t;
                }
            }
            for &t in &self.touched {
                self.dense[t as usize] = 0;
                self.seen[t as usize] = false;
            }
        }
    }
}

/// Pending word proposals that change nothing (each token's own topic).
pub fn no_proposals(z: &[u32], mh: usize) -> Vec<u32> {
    z.iter().flat_map(|&t| std::iter::repeat_n(t, mh)).collect()
}

/// Vose's alias table over a word's `(topic, count)` entries; its buffers
/// are reused from word to word.
#[derive(Default)]
struct Alias {
    /// Slot `i` gives `topic[i]` with probability `prob[i]`, else `other[i]`.
    prob: Vec<f32>,
    topic: Vec<u32>,
    other: Vec<u32>,
    scaled: Vec<f64>,
    small: Vec<u32>,
    large: Vec<u32>,
}

impl Alias {
    /// The table of `row`, whose counts sum to `mass`.
    fn build(&mut self, row: &[(u32, i32)], mass: i64) {
        let n = row.len();
        self.prob.clear();
        self.other.clear();
        self.topic.clear();
        self.small.clear();
        self.large.clear();
        self.scaled.clear();
        if n == 0 {
            return;
        }
        let scale = n as f64 / mass as f64;
        let p = &mut self.scaled;
        p.extend(row.iter().map(|&(_, c)| c as f64 * scale));
        for (i, &(t, _)) in row.iter().enumerate() {
            self.topic.push(t);
            self.other.push(t);
            if p[i] < 1.0 {
                self.small.push(i as u32);
            } else {
                self.large.push(i as u32);
            }
        }
        self.prob.resize(n, 1.0);
        while let (Some(&s), Some(&g)) = (self.small.last(), self.large.last()) {
            self.small.pop();
            let (s, g) = (s as usize, g as usize);
            self.prob[s] = p[s] as f32;
            self.other[s] = self.topic[g];
            p[g] -= 1.0 - p[s];
            if p[g] < 1.0 {
                self.large.pop();
                self.small.push(g as u32);
            }
        }
        // Leftovers are 1 up to rounding.
        for &i in self.small.iter().chain(self.large.iter()) {
            self.prob[i as usize] = 1.0;
        }
    }

    fn is_empty(&self) -> bool {
        self.topic.is_empty()
    }

    /// A topic drawn with probability count / mass.
    #[inline]
    fn sample(&self, r: &mut SplitMix) -> u32 {
        let slot = r.below(self.topic.len());
        if (r.unit() as f32) < self.prob[slot] {
            self.topic[slot]
        } else {
            self.other[slot]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn test_rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    #[test]
    fn alias_table_has_the_rows_law() {
        let row = vec![(2u32, 5i32), (7, 1), (9, 14), (11, 0)];
        let row: Vec<_> = row.into_iter().filter(|&(_, c)| c > 0).collect();
        let mass: i64 = row.iter().map(|&(_, c)| c as i64).sum();
        let mut alias = Alias::default();
        alias.build(&row, mass);
        let mut r = SplitMix(7);
        let mut hits = std::collections::HashMap::new();
        let n = 400_000;
        for _ in 0..n {
            let k = alias.sample(&mut r);
            *hits.entry(k).or_insert(0usize) += 1;
        }
        for &(k, c) in &row {
            let want = c as f64 / mass as f64;
            let got = hits[&k] as f64 / n as f64;
            assert!((want - got).abs() < 0.005, "topic {k}: {got} vs {want}");
        }
        assert_eq!(hits.len(), row.len());
    }

    #[test]
    fn counts_stay_consistent_with_assignments() {
        // Random tokens; after sweeps, the rows and totals the sampler
        // keeps equal the counts of the assignments.
        let mut g = test_rng(1);
        let (k, v, docs) = (20usize, 30usize, 40usize);
        let mut doc_start = vec![0];
        let mut words = Vec::new();
        for _ in 0..docs {
            let len = g.gen_range(1..30);
            for _ in 0..len {
                words.push(g.gen_range(0..v as u32));
            }
            doc_start.push(words.len());
        }
        let tokens = Tokens { doc_start, words };
        let mut z: Vec<u32> = (0..tokens.words.len())
            .map(|_| g.gen_range(0..k as u32))
            .collect();
        let mut s = WarpLda::new(k, v, 0.1, 0.01, 2, &tokens, v, &z);
        let count = |z: &[u32]| {
            let mut nwk = vec![0i32; v * k];
            let mut nk = vec![0i32; k];
            for (&w, &t) in tokens.words.iter().zip(z) {
                nwk[w as usize * k + t as usize] += 1;
                nk[t as usize] += 1;
            }
            (nwk, nk)
        };
        let (nwk, nk) = count(&z);
        for w in 0..v {
            let row: Vec<(u32, i32)> = (0..k).map(|t| (t as u32, nwk[w * k + t])).collect();
            s.set_word(w, &row);
        }
        s.nk = nk;
        for _ in 0..5 {
            s.sweep(&tokens, &mut z, &mut g);
        }
        let (nwk, nk) = count(&z);
        assert_eq!(s.nk, nk);
        for w in 0..v {
            let want: Vec<(u32, i32)> = (0..k)
                .filter(|&t| nwk[w * k + t] > 0)
                .map(|t| (t as u32, nwk[w * k + t]))
                .collect();
            assert_eq!(s.wt[w], want, "word {w}");
        }
        assert!(s.word_prop.iter().all(|&t| (t as usize) < k));
    }
}

#[cfg(test)]
mod stationary {
    use super::*;
    use crate::data::bow::Corpus;
    use crate::lda::ReferenceGibbs;
    use rand::SeedableRng;

    /// Long chains of exact Gibbs and of WarpLDA on a tiny corpus (15
    /// documents): the mean log-likelihood at stationarity. WarpLDA's
    /// cancelled factors are a phase old, which on a corpus this small
    /// biases it slightly (measured: 0.8% below Gibbs; an acceptance rule
    /// with the cross factors that do not cancel was 3% below).
    #[test]
    fn stationary_loglik_is_near_gibbs() {
        let mut g = ChaCha8Rng::seed_from_u64(3);
        let (k, v) = (5usize, 12u32);
        let docs: Vec<Vec<(u32, u32)>> = (0..15)
            .map(|_| {
                let mut d: Vec<(u32, u32)> = (0..6)
                    .map(|_| (g.gen_range(0..v), g.gen_range(1..4)))
                    .collect();
                d.sort();
                d.dedup_by_key(|x| x.0);
                d
            })
            .collect();
        let corpus = Corpus {
            num_words: v,
            vocab: Vec::new(),
            docs,
        };
        let tokens = Tokens::of(&corpus);
        let (a, b) = (0.5, 0.1);
        let z0: Vec<u32> = (0..tokens.words.len())
            .map(|_| g.gen_range(0..k as u32))
            .collect();
        let mut r = ReferenceGibbs::new(&corpus, k, a, b, z0.clone());
        let (mut ref_ll, mut warp_ll) = (0.0, 0.0);
        let n = 6000;
        let mut s = WarpLda::new(k, v as usize, a, b, 2, &tokens, v as usize, &z0);
        let mut z = z0.clone();
        let init = ReferenceGibbs::new(&corpus, k, a, b, z0.clone());
        for w in 0..v as usize {
            let row: Vec<(u32, i32)> = (0..k).map(|t| (t as u32, init.nwk[w * k + t])).collect();
            s.set_word(w, &row);
        }
        s.nk = init.nk.clone();
        for it in 0..n + 500 {
            r.sweep(&mut g);
            s.sweep(&tokens, &mut z, &mut g);
            if it >= 500 {
                ref_ll += r.loglik();
                warp_ll += ReferenceGibbs::new(&corpus, k, a, b, z.clone()).loglik();
            }
        }
        let (ref_ll, warp_ll) = (ref_ll / n as f64, warp_ll / n as f64);
        eprintln!("mean loglik: gibbs {ref_ll:.3}, warp {warp_ll:.3}");
        assert!(
            (ref_ll - warp_ll).abs() < 0.015 * ref_ll.abs(),
            "gibbs {ref_ll} warp {warp_ll}"
        );
    }
}
