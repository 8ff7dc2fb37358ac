//! Corpora drawn from LDA's own generative model, seeded, for scaling
//! benchmarks (`LDA_BENCH_SYNTHETIC=50000000 cargo bench -p
//! petuum-algorithms --bench lda`) at sizes no real data set here has:
//!
//! - each topic `φ_k ~ Dirichlet(β)` over the vocabulary,
//! - each document `θ_d ~ Dirichlet(α)` over the topics,
//! - each token: a topic `z ~ θ_d`, then a word `w ~ φ_z`.
//!
//! Documents are generated in parallel, each from its own stream derived
//! from (seed, document), so the corpus does not depend on the threads.

use crate::data::bow::Corpus;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// The generator's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Synthetic {
    pub docs: usize,
    pub vocab: u32,
    pub topics: usize,
    /// Tokens per document.
    pub doc_len: u32,
    pub alpha: f64,
    pub beta: f64,
    pub seed: u64,
}

impl Synthetic {
    /// About `tokens` tokens in documents of 500, a 20,000-word
    /// vocabulary and 100 topics (α = 0.1, β = 0.01).
    pub fn with_tokens(tokens: u64, seed: u64) -> Synthetic {
        let doc_len = 500;
        Synthetic {
            docs: (tokens / doc_len as u64).max(1) as usize,
            vocab: 20_000,
            topics: 100,
            doc_len,
            alpha: 0.1,
            beta: 0.01,
            seed,
        }
    }

    pub fn tokens(&self) -> u64 {
        self.docs as u64 * self.doc_len as u64
    }

    /// The corpus and the topics it was drawn from (`topics × vocab`).
    pub fn generate(&self) -> (Corpus, Vec<Vec<f64>>) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let phi: Vec<Vec<f64>> = (0..self.topics)
            .map(|_| dirichlet(&mut rng, self.beta, self.vocab as usize))
            .collect();
        let alias: Vec<Alias> = phi.iter().map(|p| Alias::new(p)).collect();
        let docs = (0..self.docs)
            .into_par_iter()
            .map(|d| {
                let mut rng = ChaCha8Rng::seed_from_u64(
                    self.seed ^ (d as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                );
                let theta = dirichlet(&mut rng, self.alpha, self.topics);
                let mut cum = Vec::with_capacity(theta.len());
                let mut acc = 0.0;
                for t in &theta {
                    acc += t;
                    cum.push(acc);
                }
                let mut words: Vec<u32> = (0..self.doc_len)
                    .map(|_| {
                        let u = rng.gen::<f64>() * acc;
                        let z = cum.partition_point(|&c| c <= u).min(self.topics - 1);
                        alias[z].sample(&mut rng)
                    })
                    .collect();
                words.sort_unstable();
                let mut out: Vec<(u32, u32)> = Vec::new();
                for w in words {
                    match out.last_mut() {
                        Some((lw, c)) if *lw == w => *c += 1,
                        _ => out.push((w, 1)),
                    }
                }
                out
            })
            .collect();
        (
            Corpus {
                num_words: self.vocab,
                vocab: Vec::new(),
                docs,
            },
            phi,
        )
    }
}

/// Gamma(shape, 1) by Marsaglia and Tsang (2000), with the `U^(1/a)`
/// boost for shapes below 1.
fn gamma(rng: &mut impl Rng, shape: f64) -> f64 {
    if shape < 1.0 {
        let u: f64 = rng.gen::<f64>().max(f64::MIN_POSITIVE);
        return gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        // A standard normal by Box–Muller.
        let (u1, u2): (f64, f64) = (rng.gen::<f64>().max(f64::MIN_POSITIVE), rng.gen());
        let x = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u: f64 = rng.gen::<f64>().max(f64::MIN_POSITIVE);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// A symmetric Dirichlet(a) draw of dimension `n`.
fn dirichlet(rng: &mut impl Rng, a: f64, n: usize) -> Vec<f64> {
    let mut g: Vec<f64> = (0..n).map(|_| gamma(rng, a)).collect();
    let s: f64 = g.iter().sum();
    if s > 0.0 {
        g.iter_mut().for_each(|x| *x /= s);
    } else {
        // Every draw underflowed (tiny a): all mass on one coordinate.
        g[rng.gen_range(0..n)] = 1.0;
    }
    g
}

/// Walker's alias table (Vose's construction): O(1) draws from a discrete
/// distribution.
struct Alias {
    prob: Vec<f64>,
    alias: Vec<u32>,
}

impl Alias {
    fn new(p: &[f64]) -> Alias {
        let n = p.len();
        let total: f64 = p.iter().sum();
        let mut prob: Vec<f64> = p.iter().map(|x| x * n as f64 / total).collect();
        let mut alias = vec![0u32; n];
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| prob[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            alias[s] = l as u32;
            prob[l] -= 1.0 - prob[s];
            if prob[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        for i in large.into_iter().chain(small) {
            prob[i] = 1.0;
        }
        Alias { prob, alias }
    }

    fn sample(&self, rng: &mut impl Rng) -> u32 {
        let i = rng.gen_range(0..self.prob.len());
        if rng.gen::<f64>() < self.prob[i] {
            i as u32
        } else {
            self.alias[i]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> Synthetic {
        Synthetic {
            docs: 200,
            vocab: 300,
            topics: 5,
            doc_len: 50,
            alpha: 0.1,
            beta: 0.01,
            seed,
        }
    }

    #[test]
    fn seeded_and_sized() {
        let (a, phi) = small(1).generate();
        assert_eq!(a.len(), 200);
        assert_eq!(a.num_tokens(), 200 * 50);
        assert!(a.docs.iter().all(|d| d.windows(2).all(|w| w[0].0 < w[1].0)));
        assert_eq!(phi.len(), 5);
        assert!(phi
            .iter()
            .all(|p| (p.iter().sum::<f64>() - 1.0).abs() < 1e-9));
        assert_eq!(small(1).generate().0, a);
        assert_ne!(small(2).generate().0, a);
    }

    /// With β = 0.01 over 300 words a topic puts most of its mass on a few
    /// words, and with α = 0.1 a document uses few topics: documents use
    /// far fewer distinct words than uniform draws would.
    #[test]
    fn follows_the_generative_model() {
        let (c, phi) = small(3).generate();
        let top: f64 = phi
            .iter()
            .map(|p| {
                let mut s = p.clone();
                s.sort_by(|a, b| b.total_cmp(a));
                s[..10].iter().sum::<f64>()
            })
            .sum::<f64>()
            / phi.len() as f64;
        assert!(top > 0.5, "top-10 words hold {top} of a topic");
        let distinct = c.docs.iter().map(|d| d.len()).sum::<usize>() as f64 / c.len() as f64;
        // 50 uniform draws from 300 words give about 46 distinct.
        assert!(distinct < 35.0, "{distinct} distinct words per document");
    }

    #[test]
    fn alias_table_matches_its_distribution() {
        let p = [0.5, 0.25, 0.125, 0.125];
        let a = Alias::new(&p);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut n = [0u32; 4];
        for _ in 0..80_000 {
            n[a.sample(&mut rng) as usize] += 1;
        }
        for (i, &pi) in p.iter().enumerate() {
            let f = n[i] as f64 / 80_000.0;
            assert!((f - pi).abs() < 0.01, "word {i}: {f} vs {pi}");
        }
    }
}
