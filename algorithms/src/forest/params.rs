//! Hyperparameters of the random forest.

use petuum_core::spec::SpecError;
use serde::{Deserialize, Serialize};

/// scikit-learn's `n_estimators` default.
fn trees() -> usize {
    100
}
/// Deep enough that trees grow until their leaves are pure (scikit-learn's
/// `max_depth=None`) on any data a node holds; the bound keeps the
/// recursive grower's stack small.
pub const MAX_DEPTH: usize = 64;
fn depth() -> usize {
    MAX_DEPTH
}
fn split() -> usize {
    2
}

/// `[params]` of a `random_forest` job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForestParams {
    #[serde(default = "trees")]
    pub num_trees: usize,
    #[serde(default = "depth")]
    pub max_depth: usize,
    #[serde(default = "split")]
    pub min_samples_split: usize,
    /// Features tried per split (default: floor(sqrt(features)), scikit-learn's "sqrt").
    #[serde(default)]
    pub max_features: Option<usize>,
    /// Bootstrap from the worker's own partition of the data (Petuum's RF,
    /// for data too large for one node) instead of from the whole training
    /// set. Each tree then sees `1 / workers` of the data: on satimage with
    /// 2 workers this costs about 2 points of accuracy.
    #[serde(default)]
    pub partition: bool,
}

impl ForestParams {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.num_trees == 0 || self.num_trees > 100_000 {
            return Err(SpecError::invalid(
                "params.num_trees",
                format!("must be between 1 and 100000 (got {})", self.num_trees),
            ));
        }
        if self.max_depth == 0 || self.max_depth > MAX_DEPTH {
            return Err(SpecError::invalid(
                "params.max_depth",
                format!("must be between 1 and {MAX_DEPTH} (got {})", self.max_depth),
            ));
        }
        if self.min_samples_split < 2 {
            return Err(SpecError::invalid(
                "params.min_samples_split",
                format!("must be >= 2 (got {})", self.min_samples_split),
            ));
        }
        if self.max_features == Some(0) {
            return Err(SpecError::invalid("params.max_features", "must be >= 1"));
        }
        Ok(())
    }
}
