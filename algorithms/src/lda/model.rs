//! A trained LDA model: topic-word counts and the vocabulary, as written
//! to the model file, with what one does with it: top words per topic,
//! topic mixtures of new documents (Gibbs sampling with the topics fixed)
//! and held-out perplexity by document completion (Wallach et al.,
//! "Evaluation methods for topic models", ICML 2009).

use crate::data::bow::Corpus;
use crate::model::{ModelError, ModelFile};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Topic-word counts of a trained model, and the priors.
#[derive(Clone, Debug, PartialEq)]
pub struct LdaModel {
    pub num_topics: usize,
    pub num_words: usize,
    pub alpha: f64,
    pub beta: f64,
    /// `n_kw`, row-major `K × V`.
    pub counts: Vec<f32>,
    /// Word of each id (empty strings... or empty when unknown).
    pub vocab: Vec<String>,
    /// `φ_kw = (n_kw + β) / (n_k + Vβ)`, stored word-major (`V × K`) so a
    /// token's topic weights are contiguous.
    phi_wk: Vec<f64>,
}

impl LdaModel {
    pub fn new(
        num_topics: usize,
        num_words: usize,
        alpha: f64,
        beta: f64,
        counts: Vec<f32>,
        vocab: Vec<String>,
    ) -> Self {
        assert_eq!(counts.len(), num_topics * num_words, "counts are K × V");
        let (k, v) = (num_topics, num_words);
        let mut phi_wk = vec![0.0; v * k];
        for t in 0..k {
            let row = &counts[t * v..(t + 1) * v];
            let nk: f64 = row.iter().map(|&c| c as f64).sum();
            let den = nk + v as f64 * beta;
            for (w, &c) in row.iter().enumerate() {
                phi_wk[w * k + t] = (c as f64 + beta) / den;
            }
        }
        LdaModel {
            num_topics,
            num_words,
            alpha,
            beta,
            counts,
            vocab,
            phi_wk,
        }
    }

    /// Reads the model of an `lda` (or `medlda`) model file.
    pub fn from_file(file: &ModelFile) -> Result<Self, ModelError> {
        let t = file.tensor("topic_word_counts")?;
        let bad = |reason: String| ModelError::Format {
            path: file.path.clone(),
            reason,
        };
        if t.shape.len() != 2 {
            return Err(bad(format!("topic_word_counts has shape {:?}", t.shape)));
        }
        let vocab: Vec<String> = match file.metadata.get("vocab") {
            Some(v) => serde_json::from_str(v).map_err(|e| bad(format!("vocab: {e}")))?,
            None => Vec::new(),
        };
        if !vocab.is_empty() && vocab.len() != t.shape[1] {
            return Err(bad(format!(
                "vocab has {} words, topic_word_counts {}",
                vocab.len(),
                t.shape[1]
            )));
        }
        Ok(LdaModel::new(
            t.shape[0],
            t.shape[1],
            file.meta("alpha")?,
            file.meta("beta")?,
            t.data.clone(),
            vocab,
        ))
    }

    /// Adds the model's tensor and metadata to `file`.
    pub fn write_into(&self, file: &mut ModelFile, top_words: usize) {
        file.set("num_topics", self.num_topics);
        file.set("num_words", self.num_words);
        file.set("alpha", self.alpha);
        file.set("beta", self.beta);
        file.set(
            "vocab",
            serde_json::to_string(&self.vocab).expect("strings serialise"),
        );
        file.set(
            "top_words",
            serde_json::to_string(&self.top_word_strings(top_words)).expect("strings serialise"),
        );
        file.add_tensor(
            "topic_word_counts",
            vec![self.num_topics, self.num_words],
            self.counts.clone(),
        );
    }

    /// `φ_kw`.
    pub fn phi(&self, k: usize, w: usize) -> f64 {
        self.phi_wk[w * self.num_topics + k]
    }

    /// Word name (or `#id` without a vocabulary).
    pub fn word(&self, w: usize) -> String {
        self.vocab
            .get(w)
            .cloned()
            .unwrap_or_else(|| format!("#{w}"))
    }

    /// The `n` most frequent word ids of each topic, by count (ties by id).
    pub fn top_words(&self, n: usize) -> Vec<Vec<u32>> {
        let v = self.num_words;
        (0..self.num_topics)
            .map(|t| {
                let row = &self.counts[t * v..(t + 1) * v];
                let mut ids: Vec<u32> = (0..v as u32).collect();
                ids.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
                ids.truncate(n);
                ids
            })
            .collect()
    }

    pub fn top_word_strings(&self, n: usize) -> Vec<Vec<String>> {
        self.top_words(n)
            .into_iter()
            .map(|ids| ids.into_iter().map(|w| self.word(w as usize)).collect())
            .collect()
    }

    /// Human-readable top words, one line per topic.
    pub fn format_topics(&self, n: usize) -> String {
        let mut out = String::new();
        for (t, words) in self.top_word_strings(n).iter().enumerate() {
            out.push_str(&format!("topic {t:>4}: {}\n", words.join(" ")));
        }
        out
    }

    /// Topic mixture `θ` of a document (`(word, count)` pairs; words outside
    /// the vocabulary are ignored), by `iterations` Gibbs sweeps over its
    /// topic assignments with the topics fixed, averaging
    /// `(n_dk + α) / (N_d + Kα)` over the second half of the sweeps.
    pub fn infer<R: Rng>(&self, doc: &[(u32, u32)], iterations: u32, rng: &mut R) -> Vec<f64> {
        let words: Vec<u32> = doc
            .iter()
            .filter(|&&(w, _)| (w as usize) < self.num_words)
            .flat_map(|&(w, c)| std::iter::repeat_n(w, c as usize))
            .collect();
        self.infer_tokens(&words, iterations, rng, true)
    }

    /// The expected empirical topic distribution `z̄ = n_d· / N_d` of a
    /// document under the same sampler (what MedLDA's classifier reads).
    pub fn infer_zbar<R: Rng>(&self, doc: &[(u32, u32)], iterations: u32, rng: &mut R) -> Vec<f64> {
        let words: Vec<u32> = doc
            .iter()
            .filter(|&&(w, _)| (w as usize) < self.num_words)
            .flat_map(|&(w, c)| std::iter::repeat_n(w, c as usize))
            .collect();
        self.infer_tokens(&words, iterations, rng, false)
    }

    fn infer_tokens<R: Rng>(
        &self,
        words: &[u32],
        iterations: u32,
        rng: &mut R,
        smooth: bool,
    ) -> Vec<f64> {
        let k = self.num_topics;
        let a = self.alpha;
        let mut theta = vec![0.0; k];
        if words.is_empty() {
            return vec![1.0 / k as f64; k];
        }
        let mut ndk = vec![0u32; k];
        let mut p = vec![0.0; k];
        let mut z: Vec<u32> = Vec::with_capacity(words.len());
        // Start from each word's most likely topics: sample with n_dk = 0.
        for &w in words {
            let t = self.draw(w, &ndk, &mut p, rng);
            z.push(t as u32);
            ndk[t] += 1;
        }
        let burn = iterations / 2;
        let mut kept = 0u32;
        for it in 0..iterations {
            for (i, &w) in words.iter().enumerate() {
                ndk[z[i] as usize] -= 1;
                let t = self.draw(w, &ndk, &mut p, rng);
                z[i] = t as u32;
                ndk[t] += 1;
            }
            if it >= burn {
                kept += 1;
                let (a, den) = if smooth {
                    (a, words.len() as f64 + k as f64 * a)
                } else {
                    (0.0, words.len() as f64)
                };
                for t in 0..k {
                    theta[t] += (ndk[t] as f64 + a) / den;
                }
            }
        }
        theta.iter_mut().for_each(|x| *x /= kept.max(1) as f64);
        theta
    }

    fn draw<R: Rng>(&self, w: u32, ndk: &[u32], p: &mut [f64], rng: &mut R) -> usize {
        let k = self.num_topics;
        let phi = &self.phi_wk[w as usize * k..(w as usize + 1) * k];
        let mut total = 0.0;
        for t in 0..k {
            total += (ndk[t] as f64 + self.alpha) * phi[t];
            p[t] = total;
        }
        let u = rng.gen::<f64>() * total;
        p.partition_point(|&c| c <= u).min(k - 1)
    }

    /// `log p(w | θ, φ)` of tokens under a mixture.
    pub fn log_prob(&self, words: &[u32], theta: &[f64]) -> f64 {
        let k = self.num_topics;
        words
            .iter()
            .map(|&w| {
                let phi = &self.phi_wk[w as usize * k..(w as usize + 1) * k];
                phi.iter().zip(theta).map(|(p, t)| p * t).sum::<f64>().ln()
            })
            .sum()
    }

    /// Held-out perplexity by document completion: each document's tokens
    /// (in word order) alternate between an observed half, from which `θ`
    /// is inferred, and a held-out half that is scored. Returns the
    /// perplexity `exp(-Σ log p / N_held)` and `N_held`.
    pub fn perplexity(&self, corpus: &Corpus, iterations: u32, seed: u64) -> (f64, u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut ll, mut n) = (0.0, 0u64);
        for doc in &corpus.docs {
            let words: Vec<u32> = doc
                .iter()
                .filter(|&&(w, _)| (w as usize) < self.num_words)
                .flat_map(|&(w, c)| std::iter::repeat_n(w, c as usize))
                .collect();
            if words.len() < 2 {
                continue;
            }
            let observed: Vec<u32> = words.iter().step_by(2).copied().collect();
            let held: Vec<u32> = words.iter().skip(1).step_by(2).copied().collect();
            let theta = self.infer_tokens(&observed, iterations, &mut rng, true);
            ll += self.log_prob(&held, &theta);
            n += held.len() as u64;
        }
        if n == 0 {
            return (f64::NAN, 0);
        }
        ((-ll / n as f64).exp(), n)
    }
}
