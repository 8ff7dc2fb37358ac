//! Hyperparameters of multi-class logistic regression.

use petuum_core::spec::{check_non_negative, check_positive, check_range, SpecError};
use serde::{Deserialize, Serialize};

fn lr() -> f64 {
    0.5
}
fn decay() -> f64 {
    1.0
}
fn batch() -> usize {
    100
}

/// `[params]` of a `multiclass_lr` job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftmaxParams {
    /// Initial step size.
    #[serde(default = "lr")]
    pub learning_rate: f64,
    /// Step size after `e` passes over the data is `learning_rate / (1 + decay * e)`.
    #[serde(default = "decay")]
    pub decay: f64,
    /// Samples per mini-batch.
    #[serde(default = "batch")]
    pub batch_size: usize,
    /// L2 regularisation strength (on weights, not biases).
    #[serde(default)]
    pub l2: f64,
    /// Mini-batches per clock (default: one pass over the worker's data).
    #[serde(default)]
    pub batches_per_clock: Option<usize>,
    /// Standardise features (mean 0, variance 1 on the training set); the
    /// saved model folds the scaling into its weights and reads raw inputs.
    #[serde(default)]
    pub standardize: bool,
}

impl SoftmaxParams {
    /// Checks values before any work starts.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_positive("params.learning_rate", self.learning_rate)?;
        check_non_negative("params.decay", self.decay)?;
        check_non_negative("params.l2", self.l2)?;
        check_range("params.batch_size", self.batch_size, 1, 1 << 20)?;
        if let Some(b) = self.batches_per_clock {
            check_range("params.batches_per_clock", b, 1, 1 << 30)?;
        }
        Ok(())
    }
}
