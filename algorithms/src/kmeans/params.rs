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
    /// Lloyd stops once the centres move less than this between clocks:
    /// the sum of their squared shifts at most `tol` times the mean
    /// variance of the features (scikit-learn's `KMeans` rule and default,
    /// 1e-4); `run.clocks` is then an upper bound (unset: 300,
    /// scikit-learn's `max_iter`). 0: every clock runs. Not with
    /// `batch_size`.
    #[serde(default)]
    pub tol: Option<f64>,
}

/// Lloyd's default stop tolerance (scikit-learn's).
pub const DEFAULT_TOL: f64 = 1e-4;

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
        if let Some(t) = self.tol {
            if !(t.is_finite() && t >= 0.0) {
                return Err(SpecError::invalid(
                    "params.tol",
                    format!("must be a number >= 0 (got {t})"),
                ));
            }
            if self.batch_size.is_some() {
                return Err(SpecError::invalid(
                    "params.tol",
                    "the stop rule is Lloyd's: mini-batch k-means (batch_size) runs every clock",
                ));
            }
        }
        Ok(())
    }

    /// The stop tolerance that runs: 0 (none) for mini-batch k-means.
    pub fn tol(&self) -> f64 {
        match self.batch_size {
            Some(_) => 0.0,
            None => self.tol.unwrap_or(DEFAULT_TOL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(text: &str) -> KMeansParams {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn tol_is_lloyds_and_checked() {
        assert_eq!(params("k = 3").tol(), DEFAULT_TOL);
        assert_eq!(params("k = 3\ntol = 0.0").tol(), 0.0);
        assert_eq!(params("k = 3\nbatch_size = 10").tol(), 0.0);
        for bad in [
            "k = 3\ntol = -1.0",
            "k = 3\ntol = nan",
            "k = 3\nbatch_size = 10\ntol = 1e-3",
        ] {
            let e = params(bad).validate().unwrap_err().to_string();
            assert!(e.contains("params.tol"), "{bad}: {e}");
        }
    }
}
