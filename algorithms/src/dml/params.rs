//! Hyperparameters of distance metric learning.

use petuum_core::spec::SpecError;
use serde::{Deserialize, Serialize};

fn lr() -> f64 {
    0.01
}
fn decay() -> f64 {
    0.01
}
fn batch() -> usize {
    100
}
fn batches() -> usize {
    10
}
fn pull() -> f64 {
    0.5
}
fn targets() -> usize {
    3
}
fn impostors() -> usize {
    10
}
fn knn() -> usize {
    5
}

/// `[params]` of a `dml` job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DmlParams {
    /// Output dimension (default: the input dimension).
    #[serde(default)]
    pub dim: Option<usize>,
    #[serde(default = "lr")]
    pub learning_rate: f64,
    /// Step size at clock c: `learning_rate / (1 + decay c)`.
    #[serde(default = "decay")]
    pub decay: f64,
    /// Pairs per mini-batch (half similar, half dissimilar).
    #[serde(default = "batch")]
    pub batch_size: usize,
    #[serde(default = "batches")]
    pub batches_per_clock: usize,
    /// Weight μ of the pull on similar pairs.
    #[serde(default = "pull")]
    pub pull: f64,
    /// Similar pairs per point: its nearest same-class neighbours.
    #[serde(default = "targets")]
    pub targets: usize,
    /// Dissimilar pairs per point: its nearest other-class points.
    #[serde(default = "impostors")]
    pub impostors: usize,
    /// Neighbours for the k-NN evaluation.
    #[serde(default = "knn")]
    pub knn: usize,
}

impl DmlParams {
    pub fn validate(&self) -> Result<(), SpecError> {
        for (field, v) in [("learning_rate", self.learning_rate), ("pull", self.pull)] {
            if !(v.is_finite() && v >= 0.0) || (field == "learning_rate" && v == 0.0) {
                return Err(SpecError::invalid(
                    format!("params.{field}"),
                    format!("must be a positive number (got {v})"),
                ));
            }
        }
        if !(self.decay.is_finite() && self.decay >= 0.0) {
            return Err(SpecError::invalid(
                "params.decay",
                format!("must be >= 0 (got {})", self.decay),
            ));
        }
        for (field, v) in [
            ("batch_size", self.batch_size),
            ("batches_per_clock", self.batches_per_clock),
            ("knn", self.knn),
            ("targets", self.targets),
            ("impostors", self.impostors),
        ] {
            if v == 0 {
                return Err(SpecError::invalid(
                    format!("params.{field}"),
                    "must be >= 1",
                ));
            }
        }
        if let Some(0) = self.dim {
            return Err(SpecError::invalid("params.dim", "must be >= 1"));
        }
        Ok(())
    }
}
