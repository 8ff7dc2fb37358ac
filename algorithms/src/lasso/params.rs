//! Hyperparameters of Lasso.

use super::data::TargetTransform;
use petuum_core::spec::{check_positive, check_range, SpecError};
use serde::{Deserialize, Serialize};

/// How a round's coordinates are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LassoScheduler {
    /// Working sets (the default): each round takes the non-zeros and the
    /// coordinates that most violate the optimality conditions, and every
    /// worker solves that block exactly (cyclic coordinate descent on the
    /// block's aggregated Gram matrix), so any block size is safe.
    WorkingSet,
    /// SchMP: priority ∝ |Δβ_j| + floor, correlated candidates dropped.
    Schmp,
    /// Shotgun: uniformly at random, no dependency check.
    Random,
}

fn default_true() -> bool {
    true
}
fn default_tol() -> f64 {
    1e-4
}
fn default_scheduler() -> LassoScheduler {
    LassoScheduler::WorkingSet
}

/// Largest working-set block: a round's partials hold its Gram matrix,
/// `b (b - 1) / 2` values (130,816 at 512, about 1 MiB).
pub const MAX_WORKING_SET: usize = 512;
fn default_threshold() -> f64 {
    0.1
}
fn default_floor() -> f64 {
    0.1
}
fn default_path_length() -> usize {
    1
}
fn default_transform() -> TargetTransform {
    TargetTransform::None
}

/// `[params]` of a `lasso` job: minimises `1/(2n) ||y - Xβ - b||² + λ ||β||₁`
/// (scikit-learn's `Lasso(alpha = λ)` scaling).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LassoParams {
    /// λ (scikit-learn's `alpha`). With a path, the last λ of the path.
    #[serde(default)]
    pub lambda: Option<f64>,
    /// Fit an unpenalised intercept (centre X and y).
    #[serde(default = "default_true")]
    pub fit_intercept: bool,
    /// Scale every column to unit variance before fitting; the scaling is
    /// folded into the saved coefficients.
    #[serde(default)]
    pub standardize: bool,
    /// `none` or `log` (fit log y).
    #[serde(default = "default_transform")]
    pub target_transform: TargetTransform,
    /// Stop when the duality gap is below `tol · ||y - mean(y)||² / n`
    /// (scikit-learn's rule).
    #[serde(default = "default_tol")]
    pub tol: f64,
    /// `working_set` (default), `schmp` or `random`.
    #[serde(default = "default_scheduler")]
    pub scheduler: LassoScheduler,
    /// Coordinates per round. `working_set`: at most this many (default
    /// 256, at most 512). `schmp`/`random`: default `floor(1 /
    /// correlation_threshold)`: then any block of pairwise correlations
    /// below the threshold has a diagonally dominant Gram matrix, and the
    /// parallel update cannot overshoot.
    #[serde(default)]
    pub block_size: Option<usize>,
    /// Candidates sampled per round before the dependency check
    /// (default 4 × block_size).
    #[serde(default)]
    pub candidates: Option<usize>,
    /// SchMP: drop a candidate whose column correlation with a chosen one
    /// is at least this.
    #[serde(default = "default_threshold")]
    pub correlation_threshold: f64,
    /// SchMP: sampling weight floor, relative to the mean priority.
    #[serde(default = "default_floor")]
    pub priority_floor: f64,
    /// `schmp`/`random`: compute the duality gap every this many rounds
    /// (default: one pass over the coordinates, `ceil(d / block_size)`).
    /// `working_set` computes it every round.
    #[serde(default)]
    pub gap_every: Option<usize>,
    /// λ path: `path_length` values from λ_max (the smallest λ with β = 0)
    /// down to `lambda`, or to `lambda_min_ratio · λ_max`, geometrically;
    /// each solved to `tol` and used as the warm start of the next.
    #[serde(default = "default_path_length")]
    pub path_length: usize,
    #[serde(default)]
    pub lambda_min_ratio: Option<f64>,
    /// Gap Safe screening at every gap computation: coordinates proven to
    /// be zero at the optimum are set to zero and no longer scheduled.
    #[serde(default = "default_true")]
    pub screening: bool,
}

impl LassoParams {
    pub fn validate(&self) -> Result<(), SpecError> {
        check_range("params.path_length", self.path_length, 1, 1000)?;
        match (self.lambda, self.path_length, self.lambda_min_ratio) {
            (None, 1, _) => {
                return Err(SpecError::invalid(
                    "params.lambda",
                    "required (or a path: params.path_length > 1 with params.lambda_min_ratio)",
                ))
            }
            (Some(_), _, Some(_)) => {
                return Err(SpecError::invalid(
                    "params.lambda_min_ratio",
                    "give either params.lambda (the end of the path) or params.lambda_min_ratio, not both",
                ))
            }
            (None, _, None) => {
                return Err(SpecError::invalid(
                    "params.lambda_min_ratio",
                    "a path without params.lambda needs params.lambda_min_ratio",
                ))
            }
            _ => {}
        }
        if let Some(l) = self.lambda {
            check_positive("params.lambda", l)?;
        }
        if let Some(r) = self.lambda_min_ratio {
            if !(r > 0.0 && r < 1.0) {
                return Err(SpecError::invalid(
                    "params.lambda_min_ratio",
                    format!("must be between 0 and 1, exclusive (got {r})"),
                ));
            }
        }
        check_positive("params.tol", self.tol)?;
        if !(self.correlation_threshold > 0.0 && self.correlation_threshold <= 1.0) {
            return Err(SpecError::invalid(
                "params.correlation_threshold",
                format!("must be in (0, 1] (got {})", self.correlation_threshold),
            ));
        }
        check_positive("params.priority_floor", self.priority_floor)?;
        if let Some(b) = self.block_size {
            if self.scheduler == LassoScheduler::WorkingSet {
                check_range("params.block_size", b, 1, MAX_WORKING_SET)?;
            } else {
                check_range("params.block_size", b, 1, 1 << 16)?;
            }
        }
        if self.scheduler == LassoScheduler::WorkingSet && self.gap_every.is_some() {
            return Err(SpecError::invalid(
                "params.gap_every",
                "the working_set scheduler computes the duality gap every round; \
                 gap_every applies to schmp and random",
            ));
        }
        if let Some(c) = self.candidates {
            check_range("params.candidates", c, 1, 1 << 20)?;
        }
        if let Some(g) = self.gap_every {
            check_range("params.gap_every", g, 1, 1 << 30)?;
        }
        Ok(())
    }

    pub fn block_size(&self) -> usize {
        match self.scheduler {
            LassoScheduler::WorkingSet => self.block_size.unwrap_or(256),
            _ => self
                .block_size
                .unwrap_or(((1.0 / self.correlation_threshold).floor() as usize).max(1)),
        }
    }

    pub fn candidates(&self) -> usize {
        self.candidates.unwrap_or(4 * self.block_size())
    }
}
