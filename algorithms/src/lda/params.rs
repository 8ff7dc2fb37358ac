//! Hyperparameters of LDA.

use petuum_core::spec::{check_positive, check_range, SpecError};
use serde::{Deserialize, Serialize};

fn topics() -> u32 {
    100
}
fn alpha() -> f64 {
    0.1
}
fn beta() -> f64 {
    0.01
}
fn top_words() -> usize {
    20
}
fn infer_iterations() -> u32 {
    50
}
fn one() -> u32 {
    1
}
fn mh_steps() -> u32 {
    2
}

/// Which sampler the workers run (docs/lda.md, "Samplers").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LdaSampler {
    /// SparseLDA: exact collapsed Gibbs, O(K_d + K_w) per token. The
    /// default: the best log-likelihood per second once topics are
    /// concentrated, and the best per sweep always.
    #[default]
    Sparse,
    /// WarpLDA: Metropolis-Hastings, O(1) per token: 4x SparseLDA's
    /// tokens/s at K = 1000 while words still spread over many topics,
    /// but about twice the sweeps for the same log-likelihood.
    Warp,
}

/// Most topics a job may ask for (a topic id must fit the samplers' `u32`
/// and a dense `K`-wide row must stay small).
pub const MAX_TOPICS: u32 = 1 << 16;

/// `[params]` of an `lda` job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdaParams {
    /// Number of topics `K`.
    #[serde(default = "topics")]
    pub num_topics: u32,
    /// Symmetric Dirichlet prior on document-topic mixtures.
    #[serde(default = "alpha")]
    pub alpha: f64,
    /// Symmetric Dirichlet prior on topic-word distributions.
    #[serde(default = "beta")]
    pub beta: f64,
    /// Top words per topic kept in the model file and printed by `eval`.
    #[serde(default = "top_words")]
    pub top_words: usize,
    /// Gibbs sweeps per held-out document for inference and perplexity.
    #[serde(default = "infer_iterations")]
    pub infer_iterations: u32,
    /// Clocks per sweep over the data: each clock samples this fraction of
    /// every worker's documents, so workers exchange counts more often
    /// (less stale) at the price of more row reads. `run.clocks` counts
    /// clocks, so iterations = clocks / clocks_per_sweep.
    #[serde(default = "one")]
    pub clocks_per_sweep: u32,
    /// `sparse` (default) or `warp`: see [`LdaSampler`].
    #[serde(default)]
    pub sampler: LdaSampler,
    /// WarpLDA's proposals of each kind per token and sweep.
    #[serde(default = "mh_steps")]
    pub mh_steps: u32,
}

impl Default for LdaParams {
    fn default() -> Self {
        LdaParams {
            num_topics: topics(),
            alpha: alpha(),
            beta: beta(),
            top_words: top_words(),
            infer_iterations: infer_iterations(),
            clocks_per_sweep: 1,
            sampler: LdaSampler::Sparse,
            mh_steps: mh_steps(),
        }
    }
}

impl LdaParams {
    /// Checks values before any work starts.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.num_topics < 2 || self.num_topics > MAX_TOPICS {
            return Err(SpecError::invalid(
                "params.num_topics",
                format!(
                    "must be between 2 and {MAX_TOPICS} (got {})",
                    self.num_topics
                ),
            ));
        }
        for (field, v) in [("params.alpha", self.alpha), ("params.beta", self.beta)] {
            check_positive(field, v)?;
        }
        check_range("params.top_words", self.top_words, 1, 1000)?;
        check_range(
            "params.infer_iterations",
            self.infer_iterations as usize,
            1,
            100_000,
        )?;
        if self.clocks_per_sweep == 0 || self.clocks_per_sweep > 1000 {
            return Err(SpecError::invalid(
                "params.clocks_per_sweep",
                format!("must be between 1 and 1000 (got {})", self.clocks_per_sweep),
            ));
        }
        check_range("params.mh_steps", self.mh_steps as usize, 1, 64)?;
        if self.sampler == LdaSampler::Warp && self.clocks_per_sweep != 1 {
            return Err(SpecError::invalid(
                "params.sampler",
                "warp samples whole sweeps: it needs clocks_per_sweep = 1",
            ));
        }
        Ok(())
    }

    /// Whether the workers run WarpLDA (else SparseLDA).
    pub fn uses_warp(&self) -> bool {
        self.sampler == LdaSampler::Warp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_the_field() {
        let mut p = LdaParams {
            num_topics: 1,
            ..LdaParams::default()
        };
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("params.num_topics"));
        p.num_topics = 10;
        p.beta = 0.0;
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("params.beta"));
        p.beta = 0.1;
        p.alpha = f64::NAN;
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("params.alpha"));
        p.alpha = 0.1;
        p.validate().unwrap();
    }
}
