//! Hyperparameters of multi-class logistic regression.

use petuum_core::spec::SpecError;
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
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(SpecError::invalid(
                "params.learning_rate",
                format!("must be a positive number (got {})", self.learning_rate),
            ));
        }
        if !(self.decay.is_finite() && self.decay >= 0.0) {
            return Err(SpecError::invalid(
                "params.decay",
                format!("must be >= 0 (got {})", self.decay),
            ));
        }
        if self.batch_size == 0 || self.batch_size > 1 << 20 {
            return Err(SpecError::invalid(
                "params.batch_size",
                format!(
                    "must be between 1 and {} (got {})",
                    1 << 20,
                    self.batch_size
                ),
            ));
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(SpecError::invalid(
                "params.l2",
                format!("must be >= 0 (got {})", self.l2),
            ));
        }
        if self.batches_per_clock == Some(0) {
            return Err(SpecError::invalid(
                "params.batches_per_clock",
                "must be >= 1",
            ));
        }
        Ok(())
    }
}
