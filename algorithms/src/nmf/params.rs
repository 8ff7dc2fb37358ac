//! Hyperparameters of NMF and sparse coding.

use petuum_core::spec::{check_non_negative, check_range, SpecError};
use serde::{Deserialize, Serialize};

/// The loss NMF minimises (scikit-learn's `beta_loss`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaLoss {
    /// `½ ‖X − WH‖²_F` (β = 2).
    #[serde(alias = "frobenius_norm")]
    Frobenius,
    /// The generalised Kullback–Leibler divergence `D(X ‖ WH)` (β = 1).
    #[serde(alias = "kl", alias = "kullback-leibler")]
    KullbackLeibler,
}

/// How NMF updates its factors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Solver {
    /// Coordinate descent (HALS, Cichocki and Phan 2009), scikit-learn's
    /// `solver="cd"`: Frobenius only.
    Cd,
    /// Multiplicative updates (Lee and Seung 2001), scikit-learn's
    /// `solver="mu"`: Frobenius or KL.
    Mu,
}

fn default_passes() -> usize {
    1
}
fn default_top_words() -> usize {
    20
}
fn default_transform_iterations() -> usize {
    200
}

/// `[params]` of an `nmf` job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NmfParams {
    /// Rank: number of components.
    pub k: usize,
    #[serde(default = "default_beta")]
    pub beta_loss: BetaLoss,
    /// Default: `cd` for Frobenius, `mu` for KL.
    #[serde(default)]
    pub solver: Option<Solver>,
    /// Sweeps over the coefficients (and over the dictionary) per clock.
    #[serde(default = "default_passes")]
    pub passes: usize,
    /// Words per component listed in the model (text data).
    #[serde(default = "default_top_words")]
    pub top_words: usize,
    /// Iterations of the transform (coefficients of new data, dictionary
    /// fixed) at export and in `petuumd eval`.
    #[serde(default = "default_transform_iterations")]
    pub transform_iterations: usize,
    /// Stop rule (scikit-learn's `NMF` `tol`, its `mu` solver's test):
    /// every 10 iterations, stop once the error `sqrt(2 · loss)` fell by
    /// less than `tol` times the first clock's error over those 10. 0
    /// runs every clock.
    #[serde(default = "default_nmf_tol")]
    pub tol: f64,
}

fn default_nmf_tol() -> f64 {
    1e-4
}

fn default_beta() -> BetaLoss {
    BetaLoss::Frobenius
}

impl NmfParams {
    pub fn solver(&self) -> Solver {
        self.solver.unwrap_or(match self.beta_loss {
            BetaLoss::Frobenius => Solver::Cd,
            BetaLoss::KullbackLeibler => Solver::Mu,
        })
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        check_k(self.k)?;
        if self.beta_loss == BetaLoss::KullbackLeibler && self.solver == Some(Solver::Cd) {
            return Err(SpecError::invalid(
                "params.solver",
                "coordinate descent (`cd`) minimises the Frobenius loss only; use `mu` with beta_loss = \"kullback_leibler\"",
            ));
        }
        check_range("params.passes", self.passes, 1, 100)?;
        check_non_negative("params.tol", self.tol)?;
        check_range("params.top_words", self.top_words, 0, 1000)?;
        check_range(
            "params.transform_iterations",
            self.transform_iterations,
            1,
            100_000,
        )
    }
}

fn default_norm_bound() -> f64 {
    1.0
}
fn default_code_iterations() -> usize {
    100
}
fn default_tol() -> f64 {
    1e-6
}

/// `[params]` of a `sparse_coding` job: minimise
/// `Σᵢ ½ ‖xᵢ − sᵢ D‖² + λ ‖sᵢ‖₁` subject to `‖D_k‖₂ ≤ c`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseCodingParams {
    /// Dictionary size (atoms); may exceed the data's dimension.
    pub k: usize,
    /// λ, the weight of the ℓ1 penalty (scikit-learn's `alpha`).
    #[serde(alias = "alpha")]
    pub lambda: f64,
    /// c, the bound on every atom's Euclidean norm.
    #[serde(default = "default_norm_bound")]
    pub norm_bound: f64,
    /// Most coordinate-descent sweeps per code and clock (and in the
    /// transform, ten times this).
    #[serde(default = "default_code_iterations")]
    pub code_iterations: usize,
    /// A code's sweeps stop when no coordinate moved by more than `tol`
    /// times the largest coordinate.
    #[serde(default = "default_tol")]
    pub tol: f64,
    /// Stop rule (scikit-learn's `DictionaryLearning` `tol`): stop once
    /// an iteration lowered the objective by less than this times the
    /// objective. 0 runs every clock.
    #[serde(default = "default_objective_tol")]
    pub objective_tol: f64,
}

fn default_objective_tol() -> f64 {
    1e-8
}

impl SparseCodingParams {
    pub fn validate(&self) -> Result<(), SpecError> {
        check_k(self.k)?;
        if !(self.lambda.is_finite() && self.lambda > 0.0) {
            return Err(SpecError::invalid(
                "params.lambda",
                format!("must be a positive number (got {})", self.lambda),
            ));
        }
        if !(self.norm_bound.is_finite() && self.norm_bound > 0.0) {
            return Err(SpecError::invalid(
                "params.norm_bound",
                format!("must be a positive number (got {})", self.norm_bound),
            ));
        }
        check_range("params.code_iterations", self.code_iterations, 1, 100_000)?;
        if !(self.tol.is_finite() && self.tol >= 0.0 && self.tol < 1.0) {
            return Err(SpecError::invalid(
                "params.tol",
                format!("must be in [0, 1) (got {})", self.tol),
            ));
        }
        check_non_negative("params.objective_tol", self.objective_tol)
    }
}

fn check_k(k: usize) -> Result<(), SpecError> {
    check_range("params.k", k, 1, 1 << 14)
}

#[cfg(test)]
mod tests {
    use super::*;
    use petuum_core::spec::parse_params;

    fn nmf(t: &str) -> Result<NmfParams, SpecError> {
        let p: NmfParams = parse_params(&t.parse::<toml::Table>().unwrap())?;
        p.validate().map(|_| p)
    }

    fn sc(t: &str) -> Result<SparseCodingParams, SpecError> {
        let p: SparseCodingParams = parse_params(&t.parse::<toml::Table>().unwrap())?;
        p.validate().map(|_| p)
    }

    #[test]
    fn defaults_and_refusals_name_the_field() {
        let p = nmf("k = 5").unwrap();
        assert_eq!((p.beta_loss, p.solver()), (BetaLoss::Frobenius, Solver::Cd));
        let p = nmf("k = 5\nbeta_loss = \"kl\"").unwrap();
        assert_eq!(p.solver(), Solver::Mu);
        for (t, field) in [
            ("k = 0", "params.k"),
            (
                "k = 5\nbeta_loss = \"kullback_leibler\"\nsolver = \"cd\"",
                "params.solver",
            ),
            ("k = 5\npasses = 0", "params.passes"),
            ("k = 5\nsolver = \"sgd\"", "params"),
            ("k = 5\nrank = 3", "params"),
            ("k = 5\ntol = -1.0", "params.tol"),
            ("k = 5\ntol = nan", "params.tol"),
        ] {
            let e = nmf(t).unwrap_err().to_string();
            assert!(e.contains(field), "{t}: {e}");
        }
        assert_eq!(nmf("k = 5").unwrap().tol, 1e-4);
        let p = sc("k = 8\nalpha = 0.5").unwrap();
        assert_eq!((p.lambda, p.norm_bound, p.objective_tol), (0.5, 1.0, 1e-8));
        for (t, field) in [
            ("k = 8\nlambda = 0", "params.lambda"),
            ("k = 8\nlambda = 1\nnorm_bound = -1", "params.norm_bound"),
            ("k = 8\nlambda = 1\ntol = 2", "params.tol"),
            ("k = 0\nlambda = 1", "params.k"),
            (
                "k = 8\nlambda = 1\nobjective_tol = -1e-3",
                "params.objective_tol",
            ),
        ] {
            let e = sc(t).unwrap_err().to_string();
            assert!(e.contains(field), "{t}: {e}");
        }
    }
}
