//! Networks of a `dnn` job: the layer list of `[params]`, its shapes and
//! parameter tensors ([`Plan`]), how those tensors sit in the `params`
//! table's rows, and libtorch-free inference of a trained network
//! ([`Network`]) for `petuumd eval` and the model's test metrics.

use crate::data::{Dataset, Features};
use crate::model::{ModelError, ModelFile};
use ndarray::{Array1, Array2, ArrayView2};
use petuum_core::spec::SpecError;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Values per row of the `params` table.
pub const ROW: usize = 4096;

fn one() -> usize {
    1
}
fn bn_momentum() -> f64 {
    0.1
}
fn bn_eps() -> f64 {
    1e-5
}

/// One layer of `params.layers`. The output layer (linear, one unit per
/// class, softmax cross-entropy) is appended by the trainer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// Fully connected: `units` outputs (flattens an image input).
    Linear {
        units: usize,
    },
    /// 2-d convolution, square `kernel`, zero `padding`.
    Conv {
        filters: usize,
        kernel: usize,
        #[serde(default = "one")]
        stride: usize,
        #[serde(default)]
        padding: usize,
    },
    /// Max pooling over square windows (`stride` defaults to `kernel`).
    MaxPool {
        kernel: usize,
        #[serde(default)]
        stride: Option<usize>,
    },
    /// Batch normalisation (per channel of an image, per unit otherwise):
    /// batch statistics while training, running averages (`momentum`)
    /// kept in the table for inference.
    BatchNorm {
        #[serde(default = "bn_momentum")]
        momentum: f64,
        #[serde(default = "bn_eps")]
        eps: f64,
    },
    /// Inverted dropout with drop probability `p` (training only).
    Dropout {
        p: f64,
    },
    Relu,
    Tanh,
    Flatten,
}

/// The most units of a linear layer, and filters, kernel, stride or
/// padding of a convolution (as `params.hidden`'s widths): with sizes this
/// bounded, shapes and parameter counts cannot overflow, and the model
/// bound (`crate::limits`) judges the rest.
pub const MAX_WIDTH: usize = 1 << 16;

/// The shape of one sample's activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shape {
    Flat(usize),
    /// Channels, height, width.
    Image(usize, usize, usize),
}

impl Shape {
    pub fn numel(self) -> usize {
        match self {
            Shape::Flat(n) => n,
            Shape::Image(c, h, w) => c * h * w,
        }
    }
    /// Channels for batch normalisation.
    fn channels(self) -> usize {
        match self {
            Shape::Flat(n) => n,
            Shape::Image(c, _, _) => c,
        }
    }
}

/// A layer with its shapes resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    Linear {
        inp: usize,
        out: usize,
    },
    Conv {
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    MaxPool {
        kernel: usize,
        stride: usize,
    },
    BatchNorm {
        channels: usize,
        momentum: f64,
        eps: f64,
    },
    Dropout {
        p: f64,
    },
    Relu,
    Tanh,
    Flatten,
}

impl Op {
    /// This op's tensors: name, shape, trained by gradient (else a buffer
    /// the forward pass updates, batch norm's running statistics).
    pub fn tensors(&self) -> Vec<(&'static str, Vec<usize>, bool)> {
        match *self {
            Op::Linear { inp, out } => {
                vec![("weight", vec![out, inp], true), ("bias", vec![out], true)]
            }
            Op::Conv {
                cin, cout, kernel, ..
            } => vec![
                ("weight", vec![cout, cin, kernel, kernel], true),
                ("bias", vec![cout], true),
            ],
            Op::BatchNorm { channels, .. } => vec![
                ("weight", vec![channels], true),
                ("bias", vec![channels], true),
                ("running_mean", vec![channels], false),
                ("running_var", vec![channels], false),
            ],
            _ => Vec::new(),
        }
    }
}

/// One parameter tensor's place in the flat parameter vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    pub op: usize,
    pub name: &'static str,
    pub shape: Vec<usize>,
    /// Offset in the flat vector (row `offset / ROW`).
    pub offset: usize,
    pub len: usize,
    pub trainable: bool,
}

/// A contiguous group of ops whose parameters share rows: each starts at
/// a linear or conv layer and takes the ops up to the next one (batch
/// norm included; the first also takes any ops before it). Backward
/// runs segment by segment from the top, and each segment's update goes
/// out as soon as its gradients exist (wait-free backprop).
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    pub ops: std::ops::Range<usize>,
    pub slots: std::ops::Range<usize>,
    /// Table rows holding this segment's parameters.
    pub rows: std::ops::Range<u64>,
    /// Flat offsets of those rows (`rows * ROW`).
    pub flat: std::ops::Range<usize>,
}

/// A network with resolved shapes and its parameter layout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub input: Shape,
    pub ops: Vec<Op>,
    /// Output shape of each op.
    pub shapes: Vec<Shape>,
}

impl Plan {
    /// Resolves `layers` (then the output layer with `classes` units) on
    /// inputs of `input` shape; errors name the `params` field.
    pub fn new(input: Shape, layers: &[LayerSpec], classes: usize) -> Result<Plan, SpecError> {
        let mut ops = Vec::new();
        let mut shapes = Vec::new();
        let mut cur = input;
        let last = LayerSpec::Linear { units: classes };
        for (i, layer) in layers.iter().chain(std::iter::once(&last)).enumerate() {
            let field = if i < layers.len() {
                format!("params.layers[{i}]")
            } else {
                "the output layer".to_string()
            };
            let bad = |problem: String| SpecError::invalid(field.clone(), problem);
            let (op, next) = match *layer {
                LayerSpec::Linear { units } => {
                    if units == 0 || units > MAX_WIDTH {
                        return Err(bad(format!(
                            "units must be between 1 and {MAX_WIDTH} (got {units})"
                        )));
                    }
                    (
                        Op::Linear {
                            inp: cur.numel(),
                            out: units,
                        },
                        Shape::Flat(units),
                    )
                }
                LayerSpec::Conv {
                    filters,
                    kernel,
                    stride,
                    padding,
                } => {
                    let Shape::Image(c, h, w) = cur else {
                        return Err(bad(
                            "a convolution needs image inputs: set params.input_shape = [channels, height, width] and keep conv layers before linear ones".into(),
                        ));
                    };
                    if filters == 0 || kernel == 0 || stride == 0 {
                        return Err(bad("filters, kernel and stride must be at least 1".into()));
                    }
                    if filters > MAX_WIDTH
                        || kernel > MAX_WIDTH
                        || stride > MAX_WIDTH
                        || padding > MAX_WIDTH
                    {
                        return Err(bad(format!(
                            "filters, kernel, stride and padding must be at most {MAX_WIDTH}"
                        )));
                    }
                    if kernel > h + 2 * padding || kernel > w + 2 * padding {
                        return Err(bad(format!(
                            "kernel {kernel} is larger than its {h}x{w} input (padding {padding})"
                        )));
                    }
                    let oh = (h + 2 * padding - kernel) / stride + 1;
                    let ow = (w + 2 * padding - kernel) / stride + 1;
                    (
                        Op::Conv {
                            cin: c,
                            cout: filters,
                            kernel,
                            stride,
                            padding,
                        },
                        Shape::Image(filters, oh, ow),
                    )
                }
                LayerSpec::MaxPool { kernel, stride } => {
                    let Shape::Image(c, h, w) = cur else {
                        return Err(bad("max_pool needs image inputs".into()));
                    };
                    let stride = stride.unwrap_or(kernel);
                    if kernel == 0 || stride == 0 || kernel > h || kernel > w {
                        return Err(bad(format!(
                            "kernel {kernel} (stride {stride}) does not fit its {h}x{w} input"
                        )));
                    }
                    (
                        Op::MaxPool { kernel, stride },
                        Shape::Image(c, (h - kernel) / stride + 1, (w - kernel) / stride + 1),
                    )
                }
                LayerSpec::BatchNorm { momentum, eps } => {
                    if momentum.is_nan() || momentum <= 0.0 || momentum > 1.0 {
                        return Err(bad(format!("momentum must be in (0, 1], got {momentum}")));
                    }
                    if eps.is_nan() || eps <= 0.0 {
                        return Err(bad(format!("eps must be positive, got {eps}")));
                    }
                    (
                        Op::BatchNorm {
                            channels: cur.channels(),
                            momentum,
                            eps,
                        },
                        cur,
                    )
                }
                LayerSpec::Dropout { p } => {
                    if !(0.0..1.0).contains(&p) {
                        return Err(bad(format!("p must be in [0, 1), got {p}")));
                    }
                    (Op::Dropout { p }, cur)
                }
                LayerSpec::Relu => (Op::Relu, cur),
                LayerSpec::Tanh => (Op::Tanh, cur),
                LayerSpec::Flatten => (Op::Flatten, Shape::Flat(cur.numel())),
            };
            ops.push(op);
            shapes.push(next);
            cur = next;
        }
        Ok(Plan { input, ops, shapes })
    }

    /// Input shape of op `i`.
    pub fn input_of(&self, i: usize) -> Shape {
        if i == 0 {
            self.input
        } else {
            self.shapes[i - 1]
        }
    }

    /// The segments and the parameter slots, in forward order.
    pub fn layout(&self) -> (Vec<Segment>, Vec<Slot>) {
        let starts: Vec<usize> = (0..self.ops.len())
            .filter(|&i| matches!(self.ops[i], Op::Linear { .. } | Op::Conv { .. }))
            .collect();
        let mut bounds: Vec<usize> = starts.clone();
        if bounds.first() != Some(&0) {
            // Ops before the first parametric one join the first segment.
            if bounds.is_empty() {
                bounds.push(0);
            } else {
                bounds[0] = 0;
            }
        }
        let mut segments = Vec::new();
        let mut slots = Vec::new();
        let mut row = 0u64;
        for (k, &start) in bounds.iter().enumerate() {
            let end = bounds.get(k + 1).copied().unwrap_or(self.ops.len());
            let first_slot = slots.len();
            let mut off = row as usize * ROW;
            for op in start..end {
                for (name, shape, trainable) in self.ops[op].tensors() {
                    let len = shape.iter().product();
                    slots.push(Slot {
                        op,
                        name,
                        shape,
                        offset: off,
                        len,
                        trainable,
                    });
                    off += len;
                }
            }
            let rows = (off - row as usize * ROW).div_ceil(ROW) as u64;
            segments.push(Segment {
                ops: start..end,
                slots: first_slot..slots.len(),
                rows: row..row + rows,
                flat: row as usize * ROW..(row + rows) as usize * ROW,
            });
            row += rows;
        }
        (segments, slots)
    }

    /// Rows of the `params` table.
    pub fn rows(&self) -> u64 {
        self.layout().0.last().map_or(0, |s| s.rows.end)
    }

    /// Every number of the network's tensors (trainable or not), counted
    /// without overflow: what the model bound judges.
    pub fn numbers(&self) -> u128 {
        self.ops
            .iter()
            .flat_map(|op| op.tensors())
            .map(|(_, shape, _)| shape.iter().map(|&d| d as u128).product::<u128>())
            .sum()
    }

    /// The numbers of one sample's activations: the input and every
    /// layer's output, counted without overflow.
    pub fn activations(&self) -> u128 {
        let numel = |s: &Shape| match *s {
            Shape::Flat(n) => n as u128,
            Shape::Image(c, h, w) => c as u128 * h as u128 * w as u128,
        };
        numel(&self.input) + self.shapes.iter().map(numel).sum::<u128>()
    }

    /// Trainable parameters (for messages and docs).
    pub fn num_params(&self) -> usize {
        self.layout()
            .1
            .iter()
            .filter(|s| s.trainable)
            .map(|s| s.len)
            .sum()
    }

    /// Initial values, PyTorch's defaults: linear and conv weights and
    /// biases uniform in ±1/sqrt(fan_in), batch norm's scale 1, shift 0,
    /// running mean 0, running variance 1.
    pub fn initial(&self, rng: &mut impl rand::Rng) -> Vec<f32> {
        let (segments, slots) = self.layout();
        let mut flat = vec![0f32; segments.last().map_or(0, |s| s.flat.end)];
        for s in &slots {
            let v = &mut flat[s.offset..s.offset + s.len];
            match (&self.ops[s.op], s.name) {
                (Op::Linear { inp, .. }, _) => {
                    let b = 1.0 / (*inp as f32).sqrt();
                    v.iter_mut().for_each(|x| *x = rng.gen_range(-b..b));
                }
                (Op::Conv { cin, kernel, .. }, _) => {
                    let b = 1.0 / ((cin * kernel * kernel) as f32).sqrt();
                    v.iter_mut().for_each(|x| *x = rng.gen_range(-b..b));
                }
                (_, "weight" | "running_var") => v.fill(1.0),
                _ => v.fill(0.0),
            }
        }
        flat
    }
}

/// A trained network for inference without libtorch.
#[derive(Clone, Debug)]
pub struct Network {
    pub plan: Plan,
    /// The flat parameters, laid out as [`Plan::layout`] says.
    flat: Vec<f32>,
    slots: Vec<Slot>,
    /// `(shift, scale)` applied to a raw input before the first layer, as
    /// in training (`x' = (x - shift) / scale`).
    input_scaling: Option<(Vec<f32>, Vec<f32>)>,
}

impl Network {
    pub fn new(plan: Plan, flat: Vec<f32>) -> Self {
        let (_, slots) = plan.layout();
        Network {
            plan,
            flat,
            slots,
            input_scaling: None,
        }
    }

    /// Scales raw inputs as training did (saved with the network).
    pub fn set_input_scaling(&mut self, shift: Vec<f32>, scale: Vec<f32>) {
        self.input_scaling = Some((shift, scale));
    }

    /// The tensors, named `op{i}.{name}`, for the model file.
    pub fn tensors(&self) -> impl Iterator<Item = (String, Vec<usize>, &[f32])> {
        self.slots.iter().map(|s| {
            (
                format!("op{}.{}", s.op, s.name),
                s.shape.clone(),
                &self.flat[s.offset..s.offset + s.len],
            )
        })
    }

    pub fn save_into(&self, file: &mut ModelFile) -> Result<(), serde_json::Error> {
        file.set("network", serde_json::to_string(&self.plan)?);
        for (name, shape, data) in self.tensors() {
            file.add_tensor(&name, shape, data.to_vec());
        }
        if let Some((shift, scale)) = &self.input_scaling {
            file.add_tensor("input_shift", vec![shift.len()], shift.clone());
            file.add_tensor("input_scale", vec![scale.len()], scale.clone());
        }
        Ok(())
    }

    pub fn from_file(file: &ModelFile) -> Result<Self, ModelError> {
        let bad = |reason: String| ModelError::Format {
            path: file.path.clone(),
            reason,
        };
        let json: String = file.meta("network")?;
        let plan: Plan =
            serde_json::from_str(&json).map_err(|e| bad(format!("network description: {e}")))?;
        let (segments, slots) = plan.layout();
        let mut flat = vec![0f32; segments.last().map_or(0, |s| s.flat.end)];
        for s in &slots {
            let name = format!("op{}.{}", s.op, s.name);
            let t = file.tensor(&name)?;
            if t.shape != s.shape {
                return Err(bad(format!(
                    "tensor {name} has shape {:?}, the network needs {:?}",
                    t.shape, s.shape
                )));
            }
            flat[s.offset..s.offset + s.len].copy_from_slice(&t.data);
        }
        let input_scaling = match (file.tensor("input_shift"), file.tensor("input_scale")) {
            (Ok(shift), Ok(scale)) => {
                let d = plan.input.numel();
                if shift.data.len() != d || scale.data.len() != d {
                    return Err(bad(format!(
                        "input scaling of {} and {} values for {d} inputs",
                        shift.data.len(),
                        scale.data.len()
                    )));
                }
                Some((shift.data.clone(), scale.data.clone()))
            }
            (Err(_), Err(_)) => None,
            _ => {
                return Err(bad(
                    "the input scaling has input_shift or input_scale but not both".into(),
                ))
            }
        };
        Ok(Network {
            plan,
            flat,
            slots,
            input_scaling,
        })
    }

    fn param(&self, op: usize, name: &str) -> &[f32] {
        let s = self
            .slots
            .iter()
            .find(|s| s.op == op && s.name == name)
            .expect("every op's tensors are in the layout");
        &self.flat[s.offset..s.offset + s.len]
    }

    /// Class scores (logits) of one sample.
    pub fn logits(&self, x: &[f32]) -> Vec<f32> {
        let mut h = x.to_vec();
        for (i, op) in self.plan.ops.iter().enumerate() {
            let shape = self.plan.input_of(i);
            h = match *op {
                Op::Linear { inp, out } => {
                    let w = ArrayView2::from_shape((out, inp), self.param(i, "weight"))
                        .expect("weight shape");
                    let y = w.dot(&Array1::from(h)) + &Array1::from(self.param(i, "bias").to_vec());
                    y.to_vec()
                }
                Op::Conv {
                    cin,
                    cout,
                    kernel,
                    stride,
                    padding,
                } => {
                    let Shape::Image(_, hh, ww) = shape else {
                        unreachable!("planned on images")
                    };
                    let Shape::Image(_, oh, ow) = self.plan.shapes[i] else {
                        unreachable!("planned on images")
                    };
                    let cols = im2col(&h, (cin, hh, ww), kernel, stride, padding, (oh, ow));
                    let w = ArrayView2::from_shape(
                        (cout, cin * kernel * kernel),
                        self.param(i, "weight"),
                    )
                    .expect("weight shape");
                    let mut y = w.dot(&cols);
                    for (c, &b) in self.param(i, "bias").iter().enumerate() {
                        y.row_mut(c).mapv_inplace(|v| v + b);
                    }
                    y.into_raw_vec_and_offset().0
                }
                Op::MaxPool { kernel, stride } => {
                    let Shape::Image(c, hh, ww) = shape else {
                        unreachable!("planned on images")
                    };
                    let Shape::Image(_, oh, ow) = self.plan.shapes[i] else {
                        unreachable!("planned on images")
                    };
                    let mut y = vec![f32::NEG_INFINITY; c * oh * ow];
                    for ch in 0..c {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let mut m = f32::NEG_INFINITY;
                                for ky in 0..kernel {
                                    for kx in 0..kernel {
                                        let v = h[ch * hh * ww
                                            + (oy * stride + ky) * ww
                                            + ox * stride
                                            + kx];
                                        if v > m {
                                            m = v;
                                        }
                                    }
                                }
                                y[ch * oh * ow + oy * ow + ox] = m;
                            }
                        }
                    }
                    y
                }
                Op::BatchNorm { channels, eps, .. } => {
                    let per = shape.numel() / channels;
                    let (g, b) = (self.param(i, "weight"), self.param(i, "bias"));
                    let (m, v) = (self.param(i, "running_mean"), self.param(i, "running_var"));
                    for c in 0..channels {
                        let scale = g[c] / (v[c] + eps as f32).sqrt();
                        for x in &mut h[c * per..(c + 1) * per] {
                            *x = (*x - m[c]) * scale + b[c];
                        }
                    }
                    h
                }
                Op::Relu => {
                    h.iter_mut().for_each(|v| *v = v.max(0.0));
                    h
                }
                Op::Tanh => {
                    h.iter_mut().for_each(|v| *v = v.tanh());
                    h
                }
                Op::Dropout { .. } | Op::Flatten => h,
            };
        }
        h
    }

    /// Log-probabilities of the classes of one sample.
    pub fn log_probs(&self, x: &[f32]) -> Vec<f32> {
        let s = self.logits(x);
        let m = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = m + s.iter().map(|v| (v - m).exp()).sum::<f32>().ln();
        s.iter().map(|v| v - lse).collect()
    }

    pub fn predict(&self, x: &Features, i: usize) -> u32 {
        let mut row = vec![0f32; self.plan.input.numel()];
        x.row_into(i, &mut row);
        if let Some((shift, scale)) = &self.input_scaling {
            for ((v, m), s) in row.iter_mut().zip(shift).zip(scale) {
                *v = (*v - m) / s;
            }
        }
        argmax(&self.logits(&row))
    }

    /// Fraction of samples classified right (samples in parallel).
    pub fn accuracy(&self, data: &Dataset) -> f64 {
        let n = data.len();
        if n == 0 {
            return 0.0;
        }
        let hits = (0..n)
            .into_par_iter()
            .filter(|&i| self.predict(&data.features, i) == data.labels[i])
            .count();
        hits as f64 / n as f64
    }
}

impl Network {
    /// Frame and utterance accuracy on stacked speech frames.
    pub fn frame_accuracies(&self, set: &crate::data::frames::FrameSet) -> (f64, f64) {
        let d = self.plan.input.numel();
        let lp: Vec<Vec<f32>> = (0..set.data.len())
            .into_par_iter()
            .map(|i| {
                let mut row = vec![0f32; d];
                set.data.features.row_into(i, &mut row);
                self.log_probs(&row)
            })
            .collect();
        crate::data::frames::accuracies(set, &lp)
    }
}

pub fn argmax(s: &[f32]) -> u32 {
    let mut best = 0;
    for (k, &v) in s.iter().enumerate() {
        if v > s[best] {
            best = k;
        }
    }
    best as u32
}

/// Columns of every receptive field: (cin·k·k) × (oh·ow), zero padded.
fn im2col(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    k: usize,
    stride: usize,
    pad: usize,
    (oh, ow): (usize, usize),
) -> Array2<f32> {
    let mut cols = Array2::<f32>::zeros((c * k * k, oh * ow));
    for ch in 0..c {
        for ky in 0..k {
            for kx in 0..k {
                let r = (ch * k + ky) * k + kx;
                let mut row = cols.row_mut(r);
                for oy in 0..oh {
                    let iy = (oy * stride + ky) as isize - pad as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for ox in 0..ow {
                        let ix = (ox * stride + kx) as isize - pad as isize;
                        if ix >= 0 && ix < w as isize {
                            row[oy * ow + ox] = x[ch * h * w + iy as usize * w + ix as usize];
                        }
                    }
                }
            }
        }
    }
    cols
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cnn() -> Vec<LayerSpec> {
        vec![
            LayerSpec::Conv {
                filters: 4,
                kernel: 3,
                stride: 1,
                padding: 1,
            },
            LayerSpec::BatchNorm {
                momentum: 0.1,
                eps: 1e-5,
            },
            LayerSpec::Relu,
            LayerSpec::MaxPool {
                kernel: 2,
                stride: None,
            },
            LayerSpec::Dropout { p: 0.25 },
            LayerSpec::Linear { units: 8 },
            LayerSpec::Relu,
        ]
    }

    #[test]
    fn a_plan_counts_its_numbers_and_activations_and_refuses_huge_widths() {
        // 784 -> 100 -> relu -> 10: weights and biases; the input, each
        // op's output.
        let p = Plan::new(
            Shape::Flat(784),
            &[LayerSpec::Linear { units: 100 }, LayerSpec::Relu],
            10,
        )
        .unwrap();
        assert_eq!(p.numbers(), 784 * 100 + 100 + 100 * 10 + 10);
        assert_eq!(p.numbers(), p.num_params() as u128);
        assert_eq!(p.activations(), 784 + 100 + 100 + 10);
        let e = Plan::new(
            Shape::Flat(4),
            &[LayerSpec::Linear {
                units: MAX_WIDTH + 1,
            }],
            2,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("layers[0]") && e.contains("65536"), "{e}");
    }

    #[test]
    fn shapes_and_layout() {
        let plan = Plan::new(Shape::Image(1, 6, 6), &cnn(), 3).unwrap();
        assert_eq!(plan.shapes[0], Shape::Image(4, 6, 6));
        assert_eq!(plan.shapes[3], Shape::Image(4, 3, 3));
        assert_eq!(plan.ops[5], Op::Linear { inp: 36, out: 8 });
        assert_eq!(plan.ops[7], Op::Linear { inp: 8, out: 3 });
        let (segs, slots) = plan.layout();
        // conv, batch norm, relu, pool, dropout | linear, relu | output
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[0].ops, 0..5);
        assert_eq!(segs[1].ops, 5..7);
        assert_eq!(
            segs.iter().map(|s| s.rows.clone()).collect::<Vec<_>>(),
            [0..1, 1..2, 2..3]
        );
        assert_eq!(slots.len(), 2 + 4 + 2 + 2);
        // Batch norm's tensors follow the conv's in its row.
        assert_eq!(slots[2].offset, 4 * 9 + 4);
        assert_eq!(slots[6].offset, ROW);
        assert_eq!(plan.num_params(), 4 * 9 + 4 + 8 + 36 * 8 + 8 + 8 * 3 + 3);
    }

    #[test]
    fn bad_layers_are_named() {
        let e = Plan::new(Shape::Flat(36), &cnn(), 3)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("params.layers[0]") && e.contains("input_shape"),
            "{e}"
        );
        let e = Plan::new(
            Shape::Image(1, 2, 2),
            &[LayerSpec::MaxPool {
                kernel: 3,
                stride: None,
            }],
            2,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("params.layers[0]"), "{e}");
        let e = Plan::new(Shape::Flat(3), &[LayerSpec::Dropout { p: 1.0 }], 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("p must be"), "{e}");
    }

    /// A 1-channel 3x3 image, a 2x2 kernel of ones, no padding: each
    /// output is the sum of its window; max pooling picks the largest.
    #[test]
    fn conv_and_pool_by_hand() {
        let layers = [
            LayerSpec::Conv {
                filters: 1,
                kernel: 2,
                stride: 1,
                padding: 0,
            },
            LayerSpec::MaxPool {
                kernel: 2,
                stride: None,
            },
        ];
        let plan = Plan::new(Shape::Image(1, 3, 3), &layers, 1).unwrap();
        let (_, slots) = plan.layout();
        let mut flat = vec![0f32; plan.rows() as usize * ROW];
        flat[slots[0].offset..slots[0].offset + 4].fill(1.0);
        flat[slots[1].offset] = 0.5; // conv bias
        flat[slots[2].offset] = 2.0; // output weight
        flat[slots[3].offset] = -1.0; // output bias
        let net = Network::new(plan, flat);
        let x = [1., 2., 3., 4., 5., 6., 7., 8., 9.];
        // windows: 12 16 24 28 (+0.5); max 28.5; out = 2 * 28.5 - 1
        assert_eq!(net.logits(&x), vec![56.0]);
    }
}
