//! Hyperparameters of multi-class logistic regression.

use crate::sgd::{check_schedule, Optimizer, Scaling, StepSpec, Steps, PATIENCE};
use petuum_core::spec::SpecError;
use serde::{Deserialize, Serialize};

fn patience() -> u32 {
    PATIENCE
}
fn decay() -> f64 {
    1.0
}
fn batch() -> usize {
    100
}

/// `[params]` of a `multiclass_lr` job.
///
/// As for the binary models (`crate::linear::LinearParams`): without
/// `learning_rate` the automatic configuration (features scaled, AdaGrad
/// with step 0.1, L2 of scikit-learn's `C = 1`, tail averaging, a stop on
/// convergence); with one, the tuned behaviour of before (plain SGD, raw
/// features unless `standardize`, `l2` 0 unless set, every clock run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftmaxParams {
    /// Step size (see above).
    #[serde(default)]
    pub learning_rate: Option<f64>,
    /// `sgd` or `adagrad` (default: `adagrad`, or `sgd` with a `learning_rate`).
    #[serde(default)]
    pub optimizer: Option<Optimizer>,
    /// Step size after `e` passes over the data is `learning_rate / (1 + decay * e)`.
    #[serde(default = "decay")]
    pub decay: f64,
    /// Samples per mini-batch.
    #[serde(default = "batch")]
    pub batch_size: usize,
    /// L2 regularisation strength λ of `mean loss + λ/2 ||W||²` (on
    /// weights, not biases). Default `1 / n_train` (scikit-learn's C = 1),
    /// or 0 with a `learning_rate`.
    #[serde(default)]
    pub l2: Option<f64>,
    /// Mini-batches per clock (default: one pass over the worker's data).
    #[serde(default)]
    pub batches_per_clock: Option<usize>,
    /// Standardise features (mean 0, variance 1 on the training set); the
    /// saved model folds the scaling into its weights and reads raw inputs.
    #[serde(default)]
    pub standardize: bool,
    /// `auto` (dense standardised, sparse max-abs), `standard`, `maxabs`
    /// or `none`. Default `auto`, or `none` with a `learning_rate`.
    #[serde(default)]
    pub scaling: Option<Scaling>,
    /// In the automatic configuration: below 1 (the default) the model is
    /// the polynomial-decay average of the iterates
    /// (`crate::sgd::avg_weight`); 1.0 saves the last iterate. Tuned runs
    /// save the last iterate.
    #[serde(default)]
    pub average_from: Option<f64>,
    /// Stop when the objective has not improved by this fraction for
    /// `patience` clocks (0: run every clock). Default 1e-4, or 0 with a
    /// `learning_rate`.
    #[serde(default)]
    pub tol: Option<f64>,
    #[serde(default = "patience")]
    pub patience: u32,
    /// In the automatic configuration: once the SGD phase converges,
    /// minimise the objective exactly with full-batch L-BFGS
    /// ([`crate::polish`]); default true.
    #[serde(default)]
    pub polish: Option<bool>,
}

/// The settings a job runs with, defaults resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub steps: Steps,
    /// Save the polynomial-decay average of the iterates.
    pub average: bool,
    /// End with the full-batch finish.
    pub polish: bool,
}

impl SoftmaxParams {
    /// Checks values before any work starts.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.step_spec().validate()?;
        check_schedule(
            self.decay,
            self.batch_size,
            self.batches_per_clock,
            self.average_from,
        )
    }

    fn step_spec(&self) -> StepSpec {
        StepSpec {
            learning_rate: self.learning_rate,
            optimizer: self.optimizer,
            scaling: self.scaling,
            standardize: self.standardize,
            l2: self.l2,
            tol: self.tol,
            patience: self.patience,
        }
    }

    /// The settings for `n_train` training samples of `classes` classes.
    pub fn resolve(&self, n_train: usize, classes: u32) -> Resolved {
        let auto = self.learning_rate.is_none();
        let mut steps = self.step_spec().resolve(n_train);
        if classes == 2 && auto && self.l2.is_none() {
            // Two classes: the loss depends only on w₁ − w₀, and the
            // penalty (l2/2)(|w₀|² + |w₁|²) is least at w₁ = −w₀, where it
            // is (l2/4)|w₁ − w₀|²: half the binary model's. Doubling it
            // gives the optimum of scikit-learn's binary LogisticRegression
            // (C = 1), the model a user compares with on two classes.
            steps.l2 *= 2.0;
        }
        Resolved {
            steps,
            average: auto && self.average_from.is_none_or(|a| a < 1.0),
            polish: auto && self.polish.unwrap_or(true) && steps.stop.tol > 0.0,
        }
    }
}
