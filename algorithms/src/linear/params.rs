//! Hyperparameters of the binary linear models.
//!
//! A spec without `learning_rate` gets the automatic configuration, meant
//! for data nobody tuned anything for: features scaled, AdaGrad steps,
//! L2 of scikit-learn's `C = 1`, the tail average of the iterates, the
//! squared hinge for the SVM (as `LinearSVC`), and a stop on convergence
//! (`clocks` is then an upper bound). A spec that sets `learning_rate` is
//! taken to be tuned and keeps the behaviour it was tuned with: plain SGD
//! with `learning_rate / (1 + decay e)`, raw features, no L2 unless set,
//! the hinge, no early stop. Every choice can also be set explicitly.

use crate::sgd::{check_schedule, Optimizer, Scaling, StepSpec, Steps, PATIENCE};
use petuum_core::spec::{check_non_negative, SpecError};
use serde::{Deserialize, Serialize};

fn decay() -> f64 {
    1.0
}
fn batch() -> usize {
    32
}

/// The SVM's loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HingeLoss {
    /// `max(0, 1 - m)`.
    Hinge,
    /// `max(0, 1 - m)²` (scikit-learn's `LinearSVC` default).
    SquaredHinge,
}

/// `[params]` of a `logistic_regression` or `svm` job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearParams {
    /// Step size. Unset: AdaGrad with step 0.1 on scaled features (the
    /// automatic configuration); set: plain SGD unless `optimizer` says
    /// otherwise.
    #[serde(default)]
    pub learning_rate: Option<f64>,
    /// `sgd` or `adagrad`.
    #[serde(default)]
    pub optimizer: Option<Optimizer>,
    /// SGD's step after `e` passes over the data: `learning_rate / (1 + decay * e)`.
    #[serde(default = "decay")]
    pub decay: f64,
    #[serde(default = "batch")]
    pub batch_size: usize,
    /// L2 strength λ of `mean loss + λ/2 ||w||²` (scikit-learn's C is
    /// `1 / (λ n)`). Default: `1 / n_train` (C = 1) in the automatic
    /// configuration, 0 with a `learning_rate`.
    #[serde(default)]
    pub l2: Option<f64>,
    /// L1 strength, applied by truncated gradient (Langford et al. 2009):
    /// after each step every weight is shrunk towards 0 by `lr * l1`.
    #[serde(default)]
    pub l1: f64,
    /// Mini-batches per clock (default: one pass over the worker's data).
    #[serde(default)]
    pub batches_per_clock: Option<usize>,
    /// Standardise dense features (the same as `scaling = "standard"`).
    #[serde(default)]
    pub standardize: bool,
    /// `auto` (dense standardised, sparse max-abs), `standard`, `maxabs`
    /// or `none`; folded into the saved weights. Default: `auto`, or
    /// `none` with a `learning_rate`.
    #[serde(default)]
    pub scaling: Option<Scaling>,
    /// With a `learning_rate`: save the average of the iterates of the last
    /// `1 - average_from` of the clocks (Polyak–Ruppert tail averaging);
    /// default 0.5 for the SVM and 1.0 (off) for logistic regression. In
    /// the automatic configuration the run's length is not known in
    /// advance: any value below 1 (the default) saves the polynomial-decay
    /// average (`crate::sgd::avg_weight`), 1.0 the last iterate. Models
    /// with `l1 > 0` save the last (sparse) iterate.
    #[serde(default)]
    pub average_from: Option<f64>,
    /// Stop when the objective has not improved by this fraction for
    /// `patience` clocks (0: run every clock). Default 1e-4, or 0 with a
    /// `learning_rate`.
    #[serde(default)]
    pub tol: Option<f64>,
    #[serde(default = "patience")]
    pub patience: u32,
    /// The SVM's loss: `hinge` or `squared_hinge` (default `squared_hinge`,
    /// or `hinge` with a `learning_rate`). Logistic regression refuses it.
    #[serde(default)]
    pub loss: Option<HingeLoss>,
    /// In the automatic configuration: once the SGD phase converges,
    /// minimise the objective exactly with full-batch L-BFGS
    /// ([`crate::polish`]); default true (not for the plain hinge or L1).
    #[serde(default)]
    pub polish: Option<bool>,
}

fn patience() -> u32 {
    PATIENCE
}

/// The settings a job runs with, defaults resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub steps: Steps,
    pub hinge: HingeLoss,
    /// Automatic configuration (polynomial-decay average of the iterates).
    pub auto: bool,
}

impl LinearParams {
    pub fn validate(&self) -> Result<(), SpecError> {
        self.step_spec().validate()?;
        check_schedule(
            self.decay,
            self.batch_size,
            self.batches_per_clock,
            self.average_from,
        )?;
        check_non_negative("params.l1", self.l1)
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

    /// The settings for `n_train` training samples.
    pub fn resolve(&self, n_train: usize) -> Resolved {
        let auto = self.learning_rate.is_none();
        Resolved {
            steps: self.step_spec().resolve(n_train),
            hinge: self.loss.unwrap_or(if auto {
                HingeLoss::SquaredHinge
            } else {
                HingeLoss::Hinge
            }),
            auto,
        }
    }
}
