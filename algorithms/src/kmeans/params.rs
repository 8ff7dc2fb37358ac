//! Hyperparameters of k-means.

use petuum_core::spec::SpecError;
use serde::{Deserialize, Serialize};

/// `[params]` of a `kmeans` job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KMeansParams {
    /// Number of clusters.
    pub k: usize,
    /// Mini-batch k-means (Sculley 2010): each worker samples this many
    /// points per clock and centres are running means of their assigned
    /// points. Absent: full Lloyd iterations, one per clock.
    #[serde(default)]
    pub batch_size: Option<usize>,
}

impl KMeansParams {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.k == 0 || self.k > 1 << 16 {
            return Err(SpecError::invalid(
                "params.k",
                format!("must be between 1 and 65536 (got {})", self.k),
            ));
        }
        if self.batch_size == Some(0) {
            return Err(SpecError::invalid("params.batch_size", "must be >= 1"));
        }
        Ok(())
    }
}
