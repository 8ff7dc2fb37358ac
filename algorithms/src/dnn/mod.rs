//! Deep networks (Poseidon, issue 9): the `[params]` of a `dnn` job and the
//! trained model's inference. Training needs libtorch and lives in
//! `petuum-poseidon`, which registers its builder with
//! [`set_builder`]; everything here is plain Rust, so validating a spec or
//! evaluating a saved model needs no libtorch.

use crate::data::Features;
use crate::model::{ModelError, ModelFile};
use ndarray::{Array1, Array2};
use petuum_core::algorithm::Algorithm;
use petuum_core::spec::{check_non_negative, check_positive, check_range, JobSpec, SpecError};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// Registry name.
pub const NAME: &str = "dnn";

fn lr() -> f64 {
    0.05
}
fn momentum() -> f64 {
    0.9
}
fn batch() -> usize {
    64
}
fn hidden() -> Vec<usize> {
    vec![256]
}

/// The optimiser each worker runs on its gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// SGD with (heavy-ball) momentum.
    #[default]
    Sgd,
    /// Adam (Kingma & Ba 2015), moments kept by each worker.
    Adam,
}

fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.999
}
fn eps() -> f64 {
    1e-8
}

/// `[params]` of a `dnn` job: a multi-layer perceptron (ReLU hidden
/// layers, softmax output) trained by SGD with momentum or Adam.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnnParams {
    /// Widths of the hidden layers.
    #[serde(default = "hidden")]
    pub hidden: Vec<usize>,
    #[serde(default = "lr")]
    pub learning_rate: f64,
    /// Step size after `e` passes over the worker's data is
    /// `learning_rate / (1 + decay * e)`.
    #[serde(default)]
    pub decay: f64,
    #[serde(default = "momentum")]
    pub momentum: f64,
    /// L2 weight decay (on weights, not biases).
    #[serde(default)]
    pub l2: f64,
    #[serde(default = "batch")]
    pub batch_size: usize,
    /// Mini-batches per clock (default: one pass over the worker's data).
    #[serde(default)]
    pub batches_per_clock: Option<usize>,
    /// `sgd` (default, with `momentum`) or `adam`.
    #[serde(default)]
    pub optimizer: Optimizer,
    /// Adam's decay rates and epsilon.
    #[serde(default = "beta1")]
    pub beta1: f64,
    #[serde(default = "beta2")]
    pub beta2: f64,
    #[serde(default = "eps")]
    pub eps: f64,
}

impl DnnParams {
    pub fn validate(&self) -> Result<(), SpecError> {
        check_positive("params.learning_rate", self.learning_rate)?;
        check_non_negative("params.decay", self.decay)?;
        check_non_negative("params.l2", self.l2)?;
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(SpecError::invalid(
                "params.momentum",
                format!("must be in [0, 1), got {}", self.momentum),
            ));
        }
        for (field, v) in [("params.beta1", self.beta1), ("params.beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(SpecError::invalid(
                    field,
                    format!("must be in [0, 1), got {v}"),
                ));
            }
        }
        check_positive("params.eps", self.eps)?;
        check_range("params.batch_size", self.batch_size, 1, 1 << 16)?;
        if let Some(b) = self.batches_per_clock {
            check_range("params.batches_per_clock", b, 1, 1 << 30)?;
        }
        for (i, &h) in self.hidden.iter().enumerate() {
            check_range(&format!("params.hidden[{i}]"), h, 1, 1 << 16)?;
        }
        Ok(())
    }
}

/// Builds a `dnn` job (set by petuum-poseidon).
pub type Builder = fn(&JobSpec) -> Result<Box<dyn Algorithm>, crate::BuildError>;

static BUILDER: OnceLock<Builder> = OnceLock::new();

/// Registers the trainer (petuum-poseidon's `register`).
pub fn set_builder(b: Builder) {
    let _ = BUILDER.set(b);
}

pub(crate) fn builder() -> Option<Builder> {
    BUILDER.get().copied()
}

/// A trained MLP: `layers[i] = (weight out×in, bias out)`.
#[derive(Clone, Debug)]
pub struct MlpModel {
    pub layers: Vec<(Array2<f32>, Array1<f32>)>,
}

impl MlpModel {
    pub fn from_file(file: &ModelFile) -> Result<Self, ModelError> {
        let n: usize = file.meta("num_layers")?;
        let bad = |reason: String| ModelError::Format {
            path: file.path.clone(),
            reason,
        };
        let mut layers = Vec::with_capacity(n);
        for i in 0..n {
            let w = file.tensor(&format!("layer{i}.weight"))?;
            let b = file.tensor(&format!("layer{i}.bias"))?;
            if w.shape.len() != 2 || b.shape != [w.shape[0]] {
                return Err(bad(format!(
                    "layer {i}: weight {:?} and bias {:?} do not fit",
                    w.shape, b.shape
                )));
            }
            if let Some((prev, _)) = layers.last() {
                let prev: &Array2<f32> = prev;
                if prev.nrows() != w.shape[1] {
                    return Err(bad(format!(
                        "layer {i} takes {} inputs, layer {} gives {}",
                        w.shape[1],
                        i - 1,
                        prev.nrows()
                    )));
                }
            }
            let w = Array2::from_shape_vec((w.shape[0], w.shape[1]), w.data.clone())
                .map_err(|e| bad(e.to_string()))?;
            layers.push((w, Array1::from(b.data.clone())));
        }
        Ok(MlpModel { layers })
    }

    /// Class scores of sample `i` (logits).
    pub fn logits(&self, x: &Features, i: usize) -> Array1<f32> {
        let d = self.layers.first().map_or(0, |l| l.0.ncols());
        let mut h = Array1::<f32>::zeros(d);
        x.row_into(i, h.as_slice_mut().expect("contiguous"));
        for (k, (w, b)) in self.layers.iter().enumerate() {
            h = w.dot(&h) + b;
            if k + 1 < self.layers.len() {
                h.mapv_inplace(|v| v.max(0.0));
            }
        }
        h
    }

    pub fn predict(&self, x: &Features, i: usize) -> u32 {
        let s = self.logits(x, i);
        let mut best = 0;
        for (k, &v) in s.iter().enumerate() {
            if v > s[best] {
                best = k;
            }
        }
        best as u32
    }

    pub fn accuracy(&self, data: &crate::data::Dataset) -> f64 {
        let n = data.len();
        if n == 0 {
            return 0.0;
        }
        let hits = (0..n)
            .filter(|&i| self.predict(&data.features, i) == data.labels[i])
            .count();
        hits as f64 / n as f64
    }
}
