//! Hyperparameters of the binary linear models.

use petuum_core::spec::{check_non_negative, check_positive, check_range, SpecError};
use serde::{Deserialize, Serialize};

fn lr() -> f64 {
    0.5
}
fn decay() -> f64 {
    1.0
}
fn batch() -> usize {
    32
}

/// `[params]` of a `logistic_regression` or `svm` job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearParams {
    /// Initial step size.
    #[serde(default = "lr")]
    pub learning_rate: f64,
    /// Step size after `e` passes over the data: `learning_rate / (1 + decay * e)`.
    #[serde(default = "decay")]
    pub decay: f64,
    #[serde(default = "batch")]
    pub batch_size: usize,
    /// L2 strength λ of `mean loss + λ/2 ||w||²` (scikit-learn's C is
    /// `1 / (λ n)`).
    #[serde(default)]
    pub l2: f64,
    /// L1 strength, applied by truncated gradient (Langford et al. 2009):
    /// after each step every weight is shrunk towards 0 by `lr * l1`.
    #[serde(default)]
    pub l1: f64,
    /// Mini-batches per clock (default: one pass over the worker's data).
    #[serde(default)]
    pub batches_per_clock: Option<usize>,
    /// Standardise dense features (folded into the saved weights).
    #[serde(default)]
    pub standardize: bool,
    /// Save the average of the iterates of the last `1 - average_from` of
    /// the clocks (Polyak–Ruppert tail averaging) instead of the last
    /// iterate; 1.0 turns averaging off. Default: 0.5 for the SVM, whose
    /// non-smooth loss leaves the last iterate noisy; 1.0 for logistic
    /// regression, whose iterates are still improving late in training.
    /// Models with `l1 > 0` save the last (sparse) iterate.
    #[serde(default)]
    pub average_from: Option<f64>,
}

impl LinearParams {
    pub fn validate(&self) -> Result<(), SpecError> {
        check_positive("params.learning_rate", self.learning_rate)?;
        check_non_negative("params.decay", self.decay)?;
        check_non_negative("params.l2", self.l2)?;
        check_non_negative("params.l1", self.l1)?;
        check_range("params.batch_size", self.batch_size, 1, 1 << 20)?;
        if let Some(a) = self.average_from.filter(|a| !(0.0..=1.0).contains(a)) {
            return Err(SpecError::invalid(
                "params.average_from",
                format!("must be between 0 and 1 (got {a})"),
            ));
        }
        if let Some(b) = self.batches_per_clock {
            check_range("params.batches_per_clock", b, 1, 1 << 30)?;
        }
        Ok(())
    }
}
