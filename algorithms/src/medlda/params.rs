//! Hyperparameters of MedLDA.

use crate::lda::MAX_TOPICS;
use petuum_core::spec::{check_positive, check_range, SpecError};
use serde::{Deserialize, Serialize};

fn topics() -> u32 {
    20
}
fn alpha() -> f64 {
    0.1
}
fn beta() -> f64 {
    0.01
}
fn c() -> f64 {
    1.0
}
fn margin() -> f64 {
    1.0
}
fn eta_variance() -> f64 {
    1.0
}
fn top_words() -> usize {
    20
}
fn infer_iterations() -> u32 {
    50
}

/// `[params]` of a `medlda` job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MedLdaParams {
    /// Number of topics `K`.
    #[serde(default = "topics")]
    pub num_topics: u32,
    /// Symmetric Dirichlet prior on document-topic mixtures.
    #[serde(default = "alpha")]
    pub alpha: f64,
    /// Symmetric Dirichlet prior on topic-word distributions.
    #[serde(default = "beta")]
    pub beta: f64,
    /// Regularisation constant `c` of the hinge loss (weight of the labels
    /// against the words).
    #[serde(default = "c")]
    pub c: f64,
    /// Margin `ℓ` of the hinge loss.
    #[serde(default = "margin")]
    pub margin: f64,
    /// Variance `ν²` of the Gaussian prior on the classifier weights.
    #[serde(default = "eta_variance")]
    pub eta_variance: f64,
    /// Top words per topic kept in the model file.
    #[serde(default = "top_words")]
    pub top_words: usize,
    /// Gibbs sweeps per document when inferring topics of unseen documents.
    #[serde(default = "infer_iterations")]
    pub infer_iterations: u32,
}

impl Default for MedLdaParams {
    fn default() -> Self {
        MedLdaParams {
            num_topics: topics(),
            alpha: alpha(),
            beta: beta(),
            c: c(),
            margin: margin(),
            eta_variance: eta_variance(),
            top_words: top_words(),
            infer_iterations: infer_iterations(),
        }
    }
}

impl MedLdaParams {
    /// Checks values before any work starts.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.num_topics < 2 || self.num_topics > MAX_TOPICS.min(4096) {
            return Err(SpecError::invalid(
                "params.num_topics",
                format!("must be between 2 and 4096 (got {})", self.num_topics),
            ));
        }
        for (field, v) in [
            ("params.alpha", self.alpha),
            ("params.beta", self.beta),
            ("params.c", self.c),
            ("params.margin", self.margin),
            ("params.eta_variance", self.eta_variance),
        ] {
            check_positive(field, v)?;
        }
        check_range("params.top_words", self.top_words, 1, 1000)?;
        check_range(
            "params.infer_iterations",
            self.infer_iterations as usize,
            1,
            100_000,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_the_field() {
        let mut p = MedLdaParams {
            c: -1.0,
            ..MedLdaParams::default()
        };
        assert!(p.validate().unwrap_err().to_string().contains("params.c"));
        p.c = 1.0;
        p.num_topics = 0;
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("params.num_topics"));
        p.num_topics = 5;
        p.validate().unwrap();
    }
}
