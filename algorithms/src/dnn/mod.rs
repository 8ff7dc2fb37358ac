//! Deep networks (Poseidon, issue 9): the `[params]` of a `dnn` job and the
//! trained model's inference. Training needs libtorch and lives in
//! `petuum-poseidon`, which registers its builder with
//! [`set_builder`]; everything here is plain Rust, so validating a spec or
//! evaluating a saved model needs no libtorch.

pub mod net;

use petuum_core::algorithm::Algorithm;
use petuum_core::spec::{check_non_negative, check_positive, check_range, JobSpec, SpecError};
use petuum_core::Consistency;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// How fully connected layers send their updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SfbMode {
    #[default]
    Auto,
    On,
    Off,
}

/// Registry name.
pub const NAME: &str = "dnn";

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

/// `[params]` of a `dnn` job: a network (`layers`, or the ReLU MLP of
/// `hidden`) with a softmax output, trained by SGD with momentum or Adam.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnnParams {
    /// Widths of the hidden layers of an MLP (default [256]); or
    #[serde(default)]
    pub hidden: Option<Vec<usize>>,
    /// the layers, in order (conv, max_pool, batch_norm, dropout, linear,
    /// relu, tanh, flatten); the output layer is added.
    #[serde(default)]
    pub layers: Option<Vec<LayerSpec>>,
    /// `[channels, height, width]` of a sample (needed by conv layers).
    #[serde(default)]
    pub input_shape: Option<[usize; 3]>,
    /// Wait-free backprop: each layer's update goes to the table from a
    /// sender thread as soon as backward has produced its gradient, while
    /// backward goes on below it. Default: off. On the CPU the segmented
    /// backward and the extra thread cost more than the (already small)
    /// update time they hide unless the sender has a core of its own; on
    /// a GPU, with the optimiser on the device, the update of a mini-batch
    /// is a few kernel launches and it was slower too (docs/benchmarks.md).
    #[serde(default)]
    pub wait_free: Option<bool>,
    /// Sufficient-factor broadcasting of fully connected layers: `auto`
    /// (default: each layer by Poseidon's cost model), `on` (every fully
    /// connected layer) or `off`. Needs SGD without `l2`, several
    /// workers, `batches_per_clock`, and BSP or (E)SSP.
    #[serde(default)]
    pub sfb: SfbMode,
    /// Frame-level speech data: group the CSV's rows into utterances and
    /// stack each frame with its neighbours (`context`); reports frame and
    /// utterance accuracy.
    #[serde(default)]
    pub frames: Option<crate::data::frames::FrameSpec>,
    /// libtorch threads per worker (default: the node's cores divided
    /// among its workers).
    #[serde(default)]
    pub threads: Option<usize>,
    /// Where the network runs: `auto` (default: the first GPU when libtorch
    /// sees one, else the CPU), `cpu`, `cuda` or `cuda:N` (refused when
    /// there is no such GPU).
    #[serde(default)]
    pub device: Option<String>,
    /// Run the optimiser where the network runs (momentum and Adam state
    /// on the device) and send the clock's summed update once, at the
    /// clock's last mini-batch, instead of copying every mini-batch's
    /// gradients to the host. Default: on for GPUs, off on the CPU (where
    /// the fused host pass is faster). Not with factor-sent layers.
    #[serde(default)]
    pub device_optimizer: Option<bool>,
    /// The step size. Absent: the automatic configuration, made to train
    /// on data nobody tuned it for: inputs scaled (`scaling`), Adam at
    /// 0.001 unless `optimizer` says otherwise (SGD then steps 0.05), as
    /// scikit-learn's `MLPClassifier` after a `StandardScaler`. A learning
    /// rate given keeps the inputs as they are (unless `scaling` is set)
    /// and SGD with momentum unless `optimizer` says otherwise.
    #[serde(default)]
    pub learning_rate: Option<f64>,
    /// How inputs are scaled before training (`auto`, `standard`,
    /// `maxabs`, `none`); the scaling is saved with the model and applied
    /// to what it evaluates. Default: `auto` in the automatic
    /// configuration (dense features standardised, sparse ones divided by
    /// their largest value, images, with `input_shape`, standardised per
    /// channel), else `none`. Frame data are standardised by `frames`.
    #[serde(default)]
    pub scaling: Option<crate::sgd::Scaling>,
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
    /// Mini-batches per clock (default: 8 in the automatic configuration,
    /// else one pass over the worker's data). Workers exchange updates at
    /// clock boundaries, so a long clock lets their models drift apart.
    #[serde(default)]
    pub batches_per_clock: Option<usize>,
    /// `sgd` (with `momentum`) or `adam`; default `adam` in the automatic
    /// configuration, else `sgd`.
    #[serde(default)]
    pub optimizer: Option<Optimizer>,
    /// Adam's decay rates and epsilon.
    #[serde(default = "beta1")]
    pub beta1: f64,
    #[serde(default = "beta2")]
    pub beta2: f64,
    #[serde(default = "eps")]
    pub eps: f64,
}

impl DnnParams {
    /// No learning rate given: the automatic configuration.
    pub fn auto(&self) -> bool {
        self.learning_rate.is_none()
    }

    /// The optimiser that runs.
    pub fn optimizer(&self) -> Optimizer {
        self.optimizer.unwrap_or(if self.auto() {
            Optimizer::Adam
        } else {
            Optimizer::Sgd
        })
    }

    /// The step size that runs.
    pub fn lr(&self) -> f64 {
        self.learning_rate.unwrap_or(match self.optimizer() {
            Optimizer::Adam => 0.001,
            Optimizer::Sgd => 0.05,
        })
    }

    /// The input scaling that runs.
    pub fn scaling(&self) -> crate::sgd::Scaling {
        use crate::sgd::Scaling;
        match self.scaling {
            Some(s) => s,
            None if self.auto() && self.frames.is_none() => Scaling::Auto,
            None => Scaling::None,
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        if let Some(lr) = self.learning_rate {
            check_positive("params.learning_rate", lr)?;
        }
        if self.frames.is_some() && !matches!(self.scaling, None | Some(crate::sgd::Scaling::None))
        {
            return Err(SpecError::invalid(
                "params.scaling",
                "frame data are standardised by params.frames; leave scaling out",
            ));
        }
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
        if let Some(d) = &self.device {
            parse_device(d)?;
        }
        if let Some(b) = self.batches_per_clock {
            check_range("params.batches_per_clock", b, 1, 1 << 30)?;
        }
        if self.hidden.is_some() && self.layers.is_some() {
            return Err(SpecError::invalid(
                "params.hidden",
                "give either hidden (an MLP) or layers, not both",
            ));
        }
        for (i, &h) in self.hidden.iter().flatten().enumerate() {
            check_range(&format!("params.hidden[{i}]"), h, 1, net::MAX_WIDTH)?;
        }
        if let Some(f) = &self.frames {
            check_range("params.frames.context", f.context, 0, 64)?;
        }
        if let Some(t) = self.threads {
            check_range("params.threads", t, 1, 1024)?;
        }
        if let Some(s) = self.input_shape {
            if s.contains(&0) {
                return Err(SpecError::invalid(
                    "params.input_shape",
                    "dimensions must be at least 1",
                ));
            }
            // An input is one sample's features: at most 2^32 of them.
            let numel = s.iter().map(|&d| d as u128).product::<u128>();
            if numel > 1 << 32 {
                return Err(SpecError::invalid(
                    "params.input_shape",
                    format!("{s:?} is {numel} features per sample, more than 2^32"),
                ));
            }
        }
        // Shapes need the data; the layers' own values are checked here.
        let probe = self
            .input_shape
            .map_or(Shape::Flat(1 << 20), |[c, h, w]| Shape::Image(c, h, w));
        if let Some(layers) = &self.layers {
            Plan::new(probe, layers, 2)?;
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

pub use net::{LayerSpec, Network, Plan, Shape, ROW};

impl DnnParams {
    /// Why sufficient factors cannot carry any layer of a job of `workers`
    /// workers under `consistency` for `clocks` clocks, if they cannot
    /// (whatever `sfb` says).
    pub fn sfb_blocker(
        &self,
        workers: u32,
        consistency: Consistency,
        clocks: i64,
    ) -> Option<&'static str> {
        if workers < 2 {
            Some("it needs several workers")
        } else if self.optimizer() != Optimizer::Sgd || self.l2 != 0.0 {
            Some("it needs optimizer = \"sgd\" without l2")
        } else if self.batches_per_clock.is_none() {
            Some("it needs batches_per_clock")
        } else if consistency == Consistency::Async {
            Some("asynchronous consistency has no staleness bound")
        } else if clocks <= 0 {
            Some("it needs a fixed number of clocks")
        } else {
            None
        }
    }

    /// Refuses `sfb = "on"` where factors cannot run, naming `params.sfb`.
    pub fn check_sfb_on(
        &self,
        workers: u32,
        consistency: Consistency,
        clocks: i64,
    ) -> Result<(), SpecError> {
        match self.sfb_blocker(workers, consistency, clocks) {
            Some(why) if self.sfb == SfbMode::On => Err(SpecError::invalid(
                "params.sfb",
                format!("cannot be on: {why}"),
            )),
            _ => Ok(()),
        }
    }

    /// The network on samples of `dim` features with `classes` classes:
    /// `layers` (or the MLP of `hidden`), then the output layer.
    pub fn plan(&self, dim: usize, classes: usize) -> Result<Plan, SpecError> {
        let input = match self.input_shape {
            Some([c, h, w]) => {
                if c * h * w != dim {
                    return Err(SpecError::invalid(
                        "params.input_shape",
                        format!(
                            "{c}x{h}x{w} = {} values, but the samples have {dim} features",
                            c * h * w
                        ),
                    ));
                }
                Shape::Image(c, h, w)
            }
            None => Shape::Flat(dim),
        };
        let layers = match &self.layers {
            Some(l) => l.clone(),
            None => self
                .hidden
                .clone()
                .unwrap_or_else(hidden)
                .into_iter()
                .flat_map(|units| [LayerSpec::Linear { units }, LayerSpec::Relu])
                .collect(),
        };
        Plan::new(input, &layers, classes)
    }
}

/// Where a network runs (`params.device`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The first GPU when libtorch sees one, else the CPU.
    Auto,
    Cpu,
    /// GPU number N.
    Cuda(usize),
}

/// Parses `params.device`: `auto`, `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<DeviceChoice, SpecError> {
    match s {
        "auto" => Ok(DeviceChoice::Auto),
        "cpu" => Ok(DeviceChoice::Cpu),
        "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceChoice::Cuda)
            .ok_or_else(|| {
                SpecError::invalid(
                    "params.device",
                    format!("expected \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", got {s:?}"),
                )
            }),
    }
}

#[cfg(test)]
mod device_tests {
    use super::*;

    #[test]
    fn device_names() {
        assert_eq!(parse_device("auto").unwrap(), DeviceChoice::Auto);
        assert_eq!(parse_device("cpu").unwrap(), DeviceChoice::Cpu);
        assert_eq!(parse_device("cuda").unwrap(), DeviceChoice::Cuda(0));
        assert_eq!(parse_device("cuda:3").unwrap(), DeviceChoice::Cuda(3));
        let e = parse_device("tpu").unwrap_err().to_string();
        assert!(e.contains("params.device") && e.contains("tpu"), "{e}");
        assert!(parse_device("cuda:x").is_err());
    }
}
