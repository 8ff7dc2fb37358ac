//! Hyperparameters of distance metric learning.

use petuum_core::spec::{check_non_negative, check_positive, check_range, SpecError};
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

/// How features are scaled before the metric is learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DmlScaling {
    /// Each feature centred and divided by its own deviation (the
    /// learning starts from the standardised Euclidean metric).
    Standard,
    /// Each feature centred, all divided by one global deviation (the
    /// learning starts from the raw Euclidean metric).
    Global,
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
    /// Feature scaling (default `standard`).
    #[serde(default)]
    pub scaling: Option<DmlScaling>,
    /// Neighbours for the k-NN evaluation.
    #[serde(default = "knn")]
    pub knn: usize,
}

impl DmlParams {
    pub fn validate(&self) -> Result<(), SpecError> {
        check_positive("params.learning_rate", self.learning_rate)?;
        check_non_negative("params.pull", self.pull)?;
        check_non_negative("params.decay", self.decay)?;
        check_range("params.batch_size", self.batch_size, 1, 1 << 20)?;
        check_range(
            "params.batches_per_clock",
            self.batches_per_clock,
            1,
            1 << 20,
        )?;
        check_range("params.knn", self.knn, 1, 1 << 16)?;
        check_range("params.targets", self.targets, 1, 1 << 16)?;
        check_range("params.impostors", self.impostors, 1, 1 << 16)?;
        if let Some(d) = self.dim {
            check_range("params.dim", d, 1, 1 << 20)?;
        }
        Ok(())
    }
}
