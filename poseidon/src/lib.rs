//! # petuum-poseidon
//!
//! Data-parallel deep learning on Bosen tables, as Petuum's Poseidon: a
//! network of `[params]` (MLP or CNN: linear, conv, max-pool, batch-norm,
//! dropout, ReLU/tanh; see `petuum_algorithms::dnn::net`) whose parameters
//! live in the dense `f32` rows of one table (`params`; each layer's
//! tensors start on a row of their own, [`ROW`] values per row). Each
//! worker trains on its partition of the data: per mini-batch it reads
//! the parameters under the job's consistency model, runs forward and
//! backward with libtorch (tch), on the GPU when there is one, and sends
//! its update (SGD with momentum or Adam, the optimiser state kept by the
//! worker and saved with checkpoints) through `inc`, scaled by 1/workers.
//!
//! **Wait-free backprop** (Zhang et al., Poseidon, USENIX ATC 2017): the
//! forward pass runs in segments, one per parametric layer, each taking
//! a detached leaf copy of the activations below it; backward then runs
//! segment by segment from the top, and as soon as a segment's gradients
//! exist a sender thread takes them (optimiser step, `inc` of its rows,
//! the worker's own view of them updated for the next mini-batch) while backward goes
//! on with the segments below. The worker reports how much of the
//! sender's time was hidden behind backward.
//!
//! **Sufficient-factor broadcasting** of fully connected layers, chosen
//! per layer by Poseidon's cost model: see [`sfb`].

pub mod sfb;

use petuum_algorithms::data::{frames, load_job_data, Dataset, Features};
use petuum_algorithms::dnn::net::{Op, Segment, Slot};
use petuum_algorithms::dnn::{self, DnnParams, Network, Optimizer, Plan, SfbMode, Shape};
use petuum_algorithms::model::ModelFile;
use petuum_algorithms::registry::{input_spec, BuildError};
use petuum_algorithms::sgd::{Scaler, Scaling};
use petuum_algorithms::softmax::InputSpec;
use petuum_core::algorithm::{
    AlgoWorker, Algorithm, BoxError, ModelSummary, StepStats, TableDecl, TableLoader, TableReader,
};
use petuum_core::spec::{parse_params, JobSpec, SpecError};
use petuum_core::{Consistency, ElemType, Row, RowKind, Table, WorkerCtx};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

pub use petuum_algorithms::dnn::ROW;
const TABLE: &str = "params";

/// Registers the `dnn` trainer with the algorithm registry.
pub fn register() {
    dnn::set_builder(build);
}

/// Where the networks run by default: the first GPU when there is one.
pub fn device() -> Device {
    Device::cuda_if_available()
}

/// The device `params.device` names; a GPU that libtorch does not see is
/// refused, naming the parameter.
pub fn device_for(choice: Option<&str>) -> Result<Device, BuildError> {
    let choice = match choice {
        Some(s) => dnn::parse_device(s)?,
        None => dnn::DeviceChoice::Auto,
    };
    let gpus = tch::Cuda::device_count().max(0) as usize;
    match choice {
        dnn::DeviceChoice::Auto => Ok(device()),
        dnn::DeviceChoice::Cpu => Ok(Device::Cpu),
        dnn::DeviceChoice::Cuda(n) if n < gpus => Ok(Device::Cuda(n)),
        dnn::DeviceChoice::Cuda(n) => Err(SpecError::invalid(
            "params.device",
            format!(
                "GPU {n} asked for, but libtorch sees {gpus} GPU(s) (a CPU-only libtorch, \
                 or no CUDA driver on this node)"
            ),
        )
        .into()),
    }
}

/// Mini-batches per clock in the automatic configuration. Workers see
/// each other's updates at clock boundaries: with a whole pass per clock,
/// two workers trained apart for a pass and then averaged, which on
/// satimage left the network at 0.87-0.89 test accuracy after 100 passes
/// (train 0.89-0.91) against 0.91-0.92 for one worker or a clock of 4-10
/// mini-batches.
pub const AUTO_BATCHES_PER_CLOCK: usize = 8;

fn build(spec: &JobSpec) -> Result<Box<dyn Algorithm>, BuildError> {
    let mut params: DnnParams = parse_params(&spec.params)?;
    params.validate()?;
    if params.auto() && params.batches_per_clock.is_none() {
        params.batches_per_clock = Some(AUTO_BATCHES_PER_CLOCK);
    }
    let (train, test, frames, encoding) = match &params.frames {
        Some(f) => {
            let label = spec.data.label_column.as_deref().unwrap_or_default();
            let (train, test, standardise, names) =
                frames::read_job(f, &spec.data.train, spec.data.test.as_deref(), label)?;
            let test_frames = test.clone();
            (
                train.data,
                test.map(|t| t.data),
                Some(FrameInfo {
                    test: test_frames,
                    standardise,
                    names,
                }),
                None,
            )
        }
        None => {
            let (train, test, encoding) = load_job_data(&spec.data)?;
            (train, test, None, encoding)
        }
    };
    let mut dnn = Dnn::new(
        params,
        train,
        test,
        input_spec(spec, encoding),
        spec.run.seed,
        spec.run.workers,
    )?;
    dnn.frames = frames;
    dnn.set_sfb(spec.consistency(), spec.run.clocks())?;
    Ok(Box::new(dnn))
}

/// Frame data of a speech job (see `petuum_algorithms::data::frames`).
struct FrameInfo {
    test: Option<frames::FrameSet>,
    standardise: frames::Standardise,
    names: Vec<String>,
}

/// A network on the tables.
pub struct Dnn {
    params: DnnParams,
    train: Arc<Dataset>,
    test: Option<Arc<Dataset>>,
    input: InputSpec,
    seed: u64,
    plan: Plan,
    device: Device,
    frames: Option<FrameInfo>,
    /// Fully connected layers sent by sufficient factors, if any.
    sfb: Option<Arc<sfb::SfbPlan>>,
    workers: u32,
    /// The job's clocks (the last one writes the factor-sent layers'
    /// replicas for the export).
    clocks: u64,
    /// The input scaling of the training data, saved with the network.
    scaler: Option<Scaler>,
}

/// The input scaling `params` ask for: with `auto`, images (an
/// `input_shape`) are standardised per channel (one mean and deviation
/// per channel over all its pixels, so a convolution sees the same
/// transform everywhere), other inputs as the linear models scale them.
fn fit_scaler(params: &DnnParams, x: &Features) -> Option<Scaler> {
    match (params.scaling(), params.input_shape) {
        (Scaling::Auto, Some([c, h, w])) if x.ncols() == c * h * w => {
            let plane = h * w;
            let (mut sum, mut sq) = (vec![0f64; c], vec![0f64; c]);
            let mut row = vec![0f32; x.ncols()];
            for i in 0..x.nrows() {
                x.row_into(i, &mut row);
                for (k, v) in row.iter().enumerate() {
                    sum[k / plane] += *v as f64;
                    sq[k / plane] += (*v as f64) * (*v as f64);
                }
            }
            let n = (x.nrows() * plane).max(1) as f64;
            let (mut shift, mut scale) = (Vec::new(), Vec::new());
            for ch in 0..c {
                let mean = sum[ch] / n;
                let sd = (sq[ch] / n - mean * mean).max(0.0).sqrt();
                shift.extend(std::iter::repeat_n(mean as f32, plane));
                let sd = if sd > 1e-12 && sd.is_finite() {
                    sd as f32
                } else {
                    1.0
                };
                scale.extend(std::iter::repeat_n(sd, plane));
            }
            Some(Scaler {
                shift,
                scale,
                kind: "channel",
            })
        }
        (how, _) => Scaler::fit(x, how),
    }
}

impl Dnn {
    /// Chooses the fully connected layers sent by sufficient factors
    /// (`params.sfb`, Poseidon's cost model) for a job of `clocks` clocks
    /// under `consistency`.
    pub fn set_sfb(&mut self, consistency: Consistency, clocks: i64) -> Result<(), BuildError> {
        let p = &self.params;
        let workers = self.workers as usize;
        p.check_sfb_on(self.workers, consistency, clocks)?;
        if p.sfb == SfbMode::Off || p.sfb_blocker(self.workers, consistency, clocks).is_some() {
            return Ok(());
        }
        // Async was refused above: the bound is BSP's 0 or (E)SSP's s.
        let staleness = match consistency {
            Consistency::Ssp { staleness } | Consistency::Essp { staleness } => staleness as u64,
            _ => 0,
        };
        let (k, batches) = (p.batch_size, p.batches_per_clock.unwrap_or(1));
        let (_, slots) = self.plan.layout();
        let mut layers = Vec::new();
        for (i, op) in self.plan.ops.iter().enumerate() {
            if let Op::Linear { inp, out } = *op {
                let pick = p.sfb == SfbMode::On
                    || sfb::choose(out, inp, k, batches, workers) == sfb::Comm::Sfb;
                if pick {
                    let slot = slots
                        .iter()
                        .position(|s| s.op == i && s.name == "weight")
                        .expect("a linear layer has a weight");
                    layers.push((slot, slots[slot].offset, out, inp));
                }
            }
        }
        if !layers.is_empty() {
            self.sfb = Some(Arc::new(sfb::SfbPlan::new(
                &layers, workers, staleness, batches, k,
            )));
        }
        self.clocks = clocks.max(0) as u64;
        Ok(())
    }

    pub fn new(
        params: DnnParams,
        mut train: Dataset,
        test: Option<Dataset>,
        input: InputSpec,
        seed: u64,
        workers: u32,
    ) -> Result<Self, BuildError> {
        // The network and the dense training data must fit before either
        // is allocated (a libsvm id or a layer width sets their size).
        let classes = train.num_classes.max(2) as usize;
        let plan = params.plan(train.dim(), classes)?;
        let field = match (&params.hidden, &params.layers) {
            (Some(_), _) => "params.hidden",
            (_, Some(_)) => "params.layers",
            _ => "data.train",
        };
        // The parameters, and a mini-batch's activations with their
        // gradients (f32 each: one counted number per activation).
        let (weights, batch) = (plan.numbers(), params.batch_size as u128);
        let activations = batch * plan.activations();
        petuum_algorithms::limits::check_model(
            field,
            &format!(
                "{weights} network parameters for {} features and {activations} activations of a {batch}-sample batch",
                train.dim()
            ),
            weights + activations,
        )?;
        if let Features::Sparse(_) = train.features {
            // Made dense below (f32: half a counted number each).
            let (n, d) = (train.len() as u128, train.dim() as u128);
            petuum_algorithms::limits::check_model(
                "data.train",
                &format!("the training data made dense: {n} samples x {d} features"),
                n * d / 2,
            )?;
        }
        // Scaled training data; the test data stay raw: the saved network
        // scales what it evaluates, the export's test accuracy included.
        let scaler = fit_scaler(&params, &train.features);
        if let Some(s) = &scaler {
            s.apply(&mut train.features);
        }
        if let Features::Sparse(_) = train.features {
            train.features = Features::Dense(train.features.to_dense());
        }
        // The workers of a node share its cores; torch's pool is per process.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = params
            .threads
            .unwrap_or((cores / workers.max(1) as usize).max(1));
        tch::set_num_threads(threads as i32);
        let device = device_for(params.device.as_deref())?;
        tracing::info!(?device, threads, "dnn: training device");
        Ok(Dnn {
            params,
            train: Arc::new(train),
            test: test.map(Arc::new),
            input,
            seed,
            plan,
            device,
            frames: None,
            sfb: None,
            clocks: 0,
            workers,
            scaler,
        })
    }

    fn read_flat(&self, tables: &TableReader<'_>) -> Result<Vec<f32>, BoxError> {
        let rows = self.plan.rows();
        let mut flat = Vec::with_capacity(rows as usize * ROW);
        tables.prefetch(TABLE, 0..rows)?;
        for r in 0..rows {
            flat.extend(tables.read::<f32>(TABLE, r)?.to_dense(ROW as u32));
        }
        Ok(flat)
    }
}

impl Algorithm for Dnn {
    fn name(&self) -> &'static str {
        dnn::NAME
    }

    fn objective_name(&self) -> &'static str {
        "cross-entropy"
    }

    fn tables(&self) -> Vec<TableDecl> {
        let dense = |name: &str| TableDecl {
            name: name.into(),
            kind: RowKind::Dense,
            elem: ElemType::F32,
            columns: ROW as u32,
        };
        let mut t = vec![dense(TABLE)];
        if self.sfb.is_some() {
            t.push(dense(sfb::SF_TABLE));
            t.push(dense(sfb::FINAL_TABLE));
        }
        t
    }

    /// PyTorch's default initialisation (see [`Plan::initial`]), from the
    /// job's seed.
    fn initialize(&self, loader: &TableLoader<'_>) -> Result<(), BoxError> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x706f_7365_6964_6f6e);
        let flat = self.plan.initial(&mut rng);
        let rows = flat
            .chunks(ROW)
            .enumerate()
            .map(|(r, c)| (r as u64, Row::Dense(c.to_vec())))
            .collect();
        loader.load(TABLE, rows)?;
        Ok(())
    }

    fn worker(&self, worker: u32, workers: u32) -> Result<Box<dyn AlgoWorker>, BoxError> {
        let part = petuum_algorithms::data::partition(self.train.len(), worker, workers)?;
        if self.sfb.is_some() && part.len() < self.params.batch_size {
            return Err(format!(
                "worker {worker} has {} samples, fewer than batch_size {} (sufficient factors need full mini-batches)",
                part.len(),
                self.params.batch_size
            )
            .into());
        }
        let mut w = DnnWorker::new(
            self.params.clone(),
            self.plan.clone(),
            self.train.clone(),
            part,
            self.device,
            workers,
        );
        if let Some(plan) = &self.sfb {
            w.state.sfb = Some(sfb::SfbState::new(plan));
            for (i, l) in plan.layers.iter().enumerate() {
                w.sfb_of_slot[l.slot] = Some(i);
            }
            w.sfb = Some(plan.clone());
            w.last_clock = self.clocks.saturating_sub(1);
            // Factor-sent layers keep their updates on the host.
            w.dev = None;
        }
        Ok(Box::new(w))
    }

    fn export(&self, tables: &TableReader<'_>, path: &Path) -> Result<ModelSummary, BoxError> {
        let mut flat = self.read_flat(tables)?;
        if let Some(plan) = &self.sfb {
            let mu = self.params.momentum as f32;
            for (offset, w) in sfb::export_weights(plan, tables, self.clocks, mu)? {
                flat[offset..offset + w.len()].copy_from_slice(&w);
            }
        }
        let mut net = Network::new(self.plan.clone(), flat);
        let mut metrics = Vec::new();
        if self.frames.is_none() {
            // Flag a network no better than the majority class, on (a
            // sample of at most 2,000 of) its training rows, which are
            // held scaled: before the network learns to scale raw inputs.
            let n = self.train.len();
            let rows: Vec<usize> = (0..n).step_by(n.div_ceil(2000).max(1)).collect();
            let train_accuracy = net.accuracy(&self.train.select(&rows));
            metrics.push(("train_accuracy".to_string(), train_accuracy));
            petuum_algorithms::sgd::check_majority(
                dnn::NAME,
                &self.train,
                train_accuracy,
                &mut metrics,
            );
        }
        if let Some(s) = &self.scaler {
            net.set_input_scaling(s.shift.clone(), s.scale.clone());
        }
        match (&self.frames, &self.test) {
            (Some(FrameInfo { test: Some(t), .. }), _) => {
                let (frame, utterance) = net.frame_accuracies(t);
                metrics.push(("test_accuracy".to_string(), frame));
                metrics.push(("test_utterance_accuracy".to_string(), utterance));
            }
            (_, Some(test)) => metrics.push(("test_accuracy".to_string(), net.accuracy(test))),
            _ => {}
        }
        let mut file = ModelFile::new(dnn::NAME);
        file.set(
            "num_classes",
            self.plan.shapes.last().map_or(0, |s| s.numel()),
        );
        file.set("num_features", self.plan.input.numel());
        self.input.record(&mut file);
        file.set(
            "class_names",
            serde_json::to_string(&self.train.class_names)?,
        );
        file.set("params", serde_json::to_string(&self.params)?);
        if let Some(s) = &self.scaler {
            file.set("input_scaling", s.kind);
        }
        if let (Some(f), Some(spec)) = (&self.frames, &self.params.frames) {
            file.set("frames", serde_json::to_string(spec)?);
            file.set("frame_standardise", serde_json::to_string(&f.standardise)?);
            file.set("frame_features", serde_json::to_string(&f.names)?);
        }
        file.set_metrics(&metrics);
        net.save_into(&mut file)?;
        let bytes = file.save(path)?;
        Ok(ModelSummary { bytes, metrics })
    }
}

/// What the sender thread owns: the parameters as last read, the
/// optimiser state, scratch.
#[derive(Default)]
struct SendState {
    /// The parameters as read for the current mini-batch (flat layout).
    flat: Vec<f32>,
    /// Gradients, then the deltas sent (flat layout; padding stays 0).
    grad: Vec<f32>,
    /// Momentum (SGD) or Adam's first moment (worker-local, checkpointed).
    velocity: Vec<f32>,
    /// Adam's second moment (empty for SGD).
    second: Vec<f32>,
    /// Adam steps taken (bias correction).
    steps: u64,
    row_buf: Vec<f32>,
    /// The factor-sent layers' replicas and buffers.
    sfb: Option<sfb::SfbState>,
}

/// Per-mini-batch settings the sender needs.
#[derive(Clone, Copy)]
struct StepCfg {
    lr: f32,
    share: f32,
}

struct DnnWorker {
    params: DnnParams,
    plan: Plan,
    segments: Vec<Segment>,
    slots: Vec<Slot>,
    /// First slot of each op.
    op_slot: Vec<usize>,
    data: Arc<Dataset>,
    part: Vec<usize>,
    /// One tensor per slot, on the device; trainable ones track gradients.
    tensors: Vec<Tensor>,
    state: SendState,
    table: Option<Table<f32>>,
    device: Device,
    /// 1 / workers: the workers' updates add up to one step of
    /// `learning_rate` on the mean of their gradients (as synchronous
    /// data-parallel SGD over their combined batch would take).
    share: f32,
    /// Wait-free backprop on (the parameter; off by default).
    wait_free: bool,
    timing: Timing,
    /// The factor-sent layers, and which slot is whose weight.
    sfb: Option<Arc<sfb::SfbPlan>>,
    sfb_of_slot: Vec<Option<usize>>,
    /// The job's last clock.
    last_clock: u64,
    /// Optimiser state on the device (`params.device_optimizer`).
    dev: Option<DevOpt>,
}

/// The optimiser on the device (`params.device_optimizer`): per slot,
/// momentum (or Adam's moments) and the clock's summed update as device
/// tensors, so a mini-batch needs no copy to the host; the update goes to
/// the table once per clock. The host vectors of [`SendState`] stay the
/// checkpointed truth: loaded at the start of each clock, written back at
/// its end.
struct DevOpt {
    vel: Vec<Tensor>,
    second: Vec<Tensor>,
    acc: Vec<Tensor>,
    /// Batch norm's running statistics before the mini-batch.
    prev: Vec<Tensor>,
}

impl DevOpt {
    fn new(slots: &[Slot], device: Device, adam: bool) -> Self {
        let zeros = |s: &Slot| {
            let shape: Vec<i64> = s.shape.iter().map(|&d| d as i64).collect();
            Tensor::zeros(shape.as_slice(), (Kind::Float, device))
        };
        DevOpt {
            vel: slots.iter().map(zeros).collect(),
            second: if adam {
                slots.iter().map(zeros).collect()
            } else {
                Vec::new()
            },
            acc: slots.iter().map(zeros).collect(),
            prev: slots.iter().map(zeros).collect(),
        }
    }

    /// Start of a clock, after the parameters were read.
    fn begin_clock(&mut self, tensors: &[Tensor], st: &SendState, slots: &[Slot]) {
        tch::no_grad(|| {
            for (i, s) in slots.iter().enumerate() {
                let r = s.offset..s.offset + s.len;
                if s.trainable {
                    load_into(&self.vel[i], &st.velocity[r.clone()]);
                    if let Some(m2) = self.second.get(i) {
                        load_into(m2, &st.second[r]);
                    }
                } else {
                    self.prev[i].shallow_clone().copy_(&tensors[i]);
                }
                let _ = self.acc[i].shallow_clone().zero_();
            }
        });
    }
}

/// Where the sender's time went (wait-free backprop's figures).
#[derive(Default)]
struct Timing {
    /// Sender busy with the updates of mini-batches.
    busy: Duration,
    /// Of that, time the trainer waited after its backward had finished.
    exposed: Duration,
    batches: u64,
    /// Bytes of updates this worker pushed to the tables so far.
    bytes_pushed: u64,
}

impl Drop for DnnWorker {
    fn drop(&mut self) {
        let t = &self.timing;
        if t.batches > 0 {
            let busy = t.busy.as_secs_f64();
            let hidden = if busy > 0.0 {
                (1.0 - t.exposed.as_secs_f64() / busy).max(0.0)
            } else {
                0.0
            };
            tracing::info!(
                wait_free = self.wait_free,
                batches = t.batches,
                send_ms = busy * 1e3,
                exposed_ms = t.exposed.as_secs_f64() * 1e3,
                hidden_fraction = hidden,
                bytes_pushed = t.bytes_pushed,
                "updates sent by the worker's sender thread"
            );
        }
    }
}

impl DnnWorker {
    fn new(
        params: DnnParams,
        plan: Plan,
        data: Arc<Dataset>,
        part: Vec<usize>,
        device: Device,
        workers: u32,
    ) -> Self {
        let (segments, slots) = plan.layout();
        let n = segments.last().map_or(0, |s| s.flat.end);
        let mut op_slot = vec![usize::MAX; plan.ops.len()];
        for (i, s) in slots.iter().enumerate().rev() {
            op_slot[s.op] = i;
        }
        let flat = vec![0f32; n];
        let tensors = slots
            .iter()
            .map(|s| {
                let shape: Vec<i64> = s.shape.iter().map(|&d| d as i64).collect();
                if s.trainable && device == Device::Cpu {
                    // A view of the worker's own copy of the parameters:
                    // the sender's update of `flat` is the tensor's update.
                    let mut strides = vec![1i64; shape.len()];
                    for k in (0..shape.len().saturating_sub(1)).rev() {
                        strides[k] = strides[k + 1] * shape[k + 1];
                    }
                    // SAFETY: `flat` is allocated once here and never
                    // resized; it moves with the worker (the heap block
                    // stays put) and outlives the tensors (fields drop in
                    // declaration order: `tensors` before `state`).
                    unsafe {
                        Tensor::from_blob(
                            flat[s.offset..].as_ptr() as *const u8,
                            &shape,
                            &strides,
                            Kind::Float,
                            Device::Cpu,
                        )
                    }
                    .set_requires_grad(true)
                } else {
                    Tensor::zeros(shape.as_slice(), (Kind::Float, device))
                        .set_requires_grad(s.trainable)
                }
            })
            .collect();
        let adam = params.optimizer() == Optimizer::Adam;
        let wait_free = params.wait_free.unwrap_or(false);
        // Poseidon's hybrid communication: the cost model's figures for
        // each fully connected layer (`params.sfb = "auto"` follows them).
        let k = params.batch_size.min(part.len().max(1));
        let per_clock = params.batches_per_clock.unwrap_or(part.len().div_ceil(k));
        for (i, op) in plan.ops.iter().enumerate() {
            if let Op::Linear { inp, out } = *op {
                let (ps, sfb) = sfb::costs(out, inp, k, per_clock, workers as usize);
                tracing::debug!(
                    op = i,
                    out,
                    inp,
                    ps_values = ps,
                    sfb_values = sfb,
                    choice = ?sfb::choose(out, inp, k, per_clock, workers as usize),
                    "fully connected layer: communication cost per clock"
                );
            }
        }
        DnnWorker {
            state: SendState {
                flat,
                grad: vec![0.0; n],
                velocity: vec![0.0; n],
                second: if adam { vec![0.0; n] } else { Vec::new() },
                steps: 0,
                row_buf: Vec::new(),
                sfb: None,
            },
            sfb: None,
            sfb_of_slot: vec![None; slots.len()],
            last_clock: 0,
            dev: params
                .device_optimizer
                .unwrap_or(device != Device::Cpu)
                .then(|| DevOpt::new(&slots, device, adam)),
            params,
            plan,
            segments,
            slots,
            op_slot,
            data,
            part,
            tensors,
            table: None,
            device,
            share: 1.0 / workers.max(1) as f32,
            wait_free,
            timing: Timing::default(),
        }
    }
}

/// Writes `src` into a parameter tensor in place (outside autograd).
fn load_into(t: &Tensor, src: &[f32]) {
    if t.device() == Device::Cpu {
        debug_assert!(t.is_contiguous() && t.kind() == Kind::Float && t.numel() == src.len());
        // SAFETY: a contiguous CPU f32 tensor of src.len() elements that
        // no other thread touches while the sender loads it (the trainer
        // waits for the sender before its next forward pass).
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), t.data_ptr() as *mut f32, src.len());
        }
    } else {
        tch::no_grad(|| {
            let mut t = t.shallow_clone();
            t.copy_(&Tensor::from_slice(src).view(t.size().as_slice()));
        });
    }
}

/// Copies a tensor's values to `dst` (host memory).
fn store_from(t: &Tensor, dst: &mut [f32]) {
    if t.device() == Device::Cpu {
        t.copy_data(dst, dst.len());
    } else {
        t.to_device(Device::Cpu).copy_data(dst, dst.len());
    }
}

/// L2 decay of slot `s`: `l2` on the weights of conv and linear layers,
/// none on biases and batch norm.
fn weight_decay(s: &Slot, plan: &Plan, l2: f32) -> f32 {
    let decayed =
        s.name == "weight" && matches!(plan.ops[s.op], Op::Linear { .. } | Op::Conv { .. });
    if decayed {
        l2
    } else {
        0.0
    }
}

/// Adam's constants for the step after `steps` steps, in f32 (the host
/// pass's precision; the device pass widens the same values).
struct AdamStep {
    b1: f32,
    b2: f32,
    eps: f32,
    /// Bias corrections `1 - b^k`.
    c1: f32,
    c2: f32,
}

impl AdamStep {
    fn new(p: &DnnParams, steps: u64) -> Self {
        let (b1, b2, eps) = (p.beta1 as f32, p.beta2 as f32, p.eps as f32);
        let k = steps.min(1 << 20) as i32;
        AdamStep {
            b1,
            b2,
            eps,
            c1: 1.0 - b1.powi(k),
            c2: 1.0 - b2.powi(k),
        }
    }
}

/// The sender's side of one segment: its gradients (and batch norm's
/// updated running statistics) → optimiser → `inc` of its rows, and the
/// worker's own view of them updated for the next mini-batch.
///
/// On the CPU the trainable tensors are views of `flat` (see
/// [`DnnWorker::new`]) and their gradients are read and zeroed in place,
/// so each value is touched in one fused pass plus the `inc`.
#[allow(clippy::too_many_arguments)]
fn send_segment(
    st: &mut SendState,
    ctx: &mut WorkerCtx,
    t: Table<f32>,
    seg: &Segment,
    slots: &[Slot],
    plan: &Plan,
    tensors: &mut [Tensor],
    p: &DnnParams,
    cfg: StepCfg,
    sfb_of_slot: &[Option<usize>],
    factors: Option<(usize, sfb::Factors)>,
) -> Result<(), BoxError> {
    let (mu, l2) = (p.momentum as f32, p.l2 as f32);
    // Rows holding only factor-sent weights are not sent at all.
    let mut skip = Vec::new();
    let lr = cfg.lr;
    for i in seg.slots.clone() {
        let s = &slots[i];
        let r = s.offset..s.offset + s.len;
        if !s.trainable {
            // Running statistics: the forward pass moved them from the
            // values read; each worker adds its share of that move.
            store_from(&tensors[i], &mut st.grad[r.clone()]);
            for j in r.clone() {
                st.grad[j] = cfg.share * (st.grad[j] - st.flat[j]);
                st.flat[j] += st.grad[j];
            }
            load_into(&tensors[i], &st.flat[r]);
            continue;
        }
        let gt = tensors[i].grad();
        let on_cpu = tensors[i].device() == Device::Cpu;
        let mut copied;
        let g: &mut [f32] = if !gt.defined() {
            copied = vec![0.0; s.len];
            &mut copied
        } else if on_cpu && gt.is_contiguous() && gt.kind() == Kind::Float {
            // SAFETY: the contiguous f32 gradient of this tensor, s.len
            // values; backward has finished with it (the trainer announced
            // the segment) and nothing else touches it until the next
            // backward, which comes after this function returns.
            unsafe { std::slice::from_raw_parts_mut(gt.data_ptr() as *mut f32, s.len) }
        } else {
            copied = vec![0.0; s.len];
            store_from(&gt, &mut copied);
            tensors[i].zero_grad();
            &mut copied
        };
        let decay = weight_decay(s, plan, l2);
        let (flat, delta) = (&mut st.flat[r.clone()], &mut st.grad[r.clone()]);
        match p.optimizer() {
            Optimizer::Sgd => {
                let vel = &mut st.velocity[r];
                for j in 0..s.len {
                    let grad = g[j] + decay * flat[j];
                    g[j] = 0.0;
                    let v = mu * vel[j] + grad;
                    vel[j] = v;
                    delta[j] = -lr * v;
                    flat[j] += delta[j];
                }
            }
            Optimizer::Adam => {
                let AdamStep {
                    b1,
                    b2,
                    eps,
                    c1,
                    c2,
                } = AdamStep::new(p, st.steps);
                let (m1, m2) = (&mut st.velocity[r.clone()], &mut st.second[r]);
                for j in 0..s.len {
                    let grad = g[j] + decay * flat[j];
                    g[j] = 0.0;
                    let m = b1 * m1[j] + (1.0 - b1) * grad;
                    let v = b2 * m2[j] + (1.0 - b2) * grad * grad;
                    m1[j] = m;
                    m2[j] = v;
                    delta[j] = -lr * (m / c1) / ((v / c2).sqrt() + eps);
                    flat[j] += delta[j];
                }
            }
        }
        if !on_cpu {
            load_into(&tensors[i], flat);
        }
        if let (Some(li), Some(state)) = (sfb_of_slot[i], st.sfb.as_mut()) {
            // The update stays in the worker's view; it travels as factors.
            for (c, d) in state.current[li].iter_mut().zip(delta.iter_mut()) {
                *c += *d;
                *d = 0.0;
            }
            skip.push(s.offset.div_ceil(ROW) as u64..((s.offset + s.len) / ROW) as u64);
        }
    }
    if let (Some((li, f)), Some(state)) = (factors, st.sfb.as_mut()) {
        state.record(li, &f);
    }
    for row in seg.rows.clone() {
        if skip.iter().any(|r| r.contains(&row)) {
            continue;
        }
        let r = row as usize * ROW..(row as usize + 1) * ROW;
        ctx.batch_inc(t, row, &st.grad[r])?;
    }
    Ok(())
}

/// [`send_segment`] with the optimiser on the device (`DevOpt`): the
/// step runs as tensor operations where the gradients are; at the clock's
/// last mini-batch (`flush`) the clock's summed update (and the optimiser
/// state, for checkpoints) comes to the host once and goes to the table.
#[allow(clippy::too_many_arguments)]
fn send_segment_dev(
    st: &mut SendState,
    dev: &mut DevOpt,
    ctx: &mut WorkerCtx,
    t: Table<f32>,
    seg: &Segment,
    slots: &[Slot],
    plan: &Plan,
    tensors: &mut [Tensor],
    p: &DnnParams,
    cfg: StepCfg,
    flush: bool,
) -> Result<(), BoxError> {
    let (mu, l2, lr) = (p.momentum, p.l2 as f32, cfg.lr as f64);
    tch::no_grad(|| {
        for i in seg.slots.clone() {
            let s = &slots[i];
            let mut w = tensors[i].shallow_clone();
            let mut acc = dev.acc[i].shallow_clone();
            if !s.trainable {
                // Running statistics: this worker's share of their move.
                let mut prev = dev.prev[i].shallow_clone();
                let d = (&w - &prev) * cfg.share as f64;
                let _ = prev.g_add_(&d);
                w.copy_(&prev);
                let _ = acc.g_add_(&d);
                continue;
            }
            let mut g = w.grad();
            if !g.defined() {
                continue;
            }
            let decay = weight_decay(s, plan, l2) as f64;
            let grad = if decay != 0.0 {
                &g + &w * decay
            } else {
                g.shallow_clone()
            };
            let mut m1 = dev.vel[i].shallow_clone();
            let d = match p.optimizer() {
                Optimizer::Sgd => {
                    let _ = m1.g_mul_scalar_(mu);
                    let _ = m1.g_add_(&grad);
                    &m1 * -lr
                }
                Optimizer::Adam => {
                    // The host pass's f32 constants, so both paths agree.
                    let a = AdamStep::new(p, st.steps);
                    let (b1, b2, eps, c1, c2) = (
                        a.b1 as f64,
                        a.b2 as f64,
                        a.eps as f64,
                        a.c1 as f64,
                        a.c2 as f64,
                    );
                    let (d1, d2) = ((1.0 - a.b1) as f64, (1.0 - a.b2) as f64);
                    let mut m2 = dev.second[i].shallow_clone();
                    let _ = m1.g_mul_scalar_(b1);
                    let _ = m1.g_add_(&(&grad * d1));
                    let _ = m2.g_mul_scalar_(b2);
                    let _ = m2.g_add_(&(&grad * d2 * &grad));
                    (&m1 / c1) * -lr / ((&m2 / c2).sqrt() + eps)
                }
            };
            let _ = w.g_add_(&d);
            let _ = acc.g_add_(&d);
            let _ = g.zero_();
        }
    });
    if !flush {
        return Ok(());
    }
    for i in seg.slots.clone() {
        let s = &slots[i];
        let r = s.offset..s.offset + s.len;
        store_from(&dev.acc[i], &mut st.grad[r.clone()]);
        if s.trainable {
            store_from(&dev.vel[i], &mut st.velocity[r.clone()]);
            if let Some(m2) = dev.second.get(i) {
                store_from(m2, &mut st.second[r]);
            }
        }
    }
    for row in seg.rows.clone() {
        let r = row as usize * ROW..(row as usize + 1) * ROW;
        ctx.batch_inc(t, row, &st.grad[r])?;
    }
    Ok(())
}

/// Reads a segment's rows (under the consistency model, at the start of
/// each clock) into `flat` and its parameter tensors.
fn read_segment(
    st: &mut SendState,
    ctx: &mut WorkerCtx,
    t: Table<f32>,
    seg: &Segment,
    slots: &[Slot],
    tensors: &[Tensor],
    sfb_of_slot: &[Option<usize>],
) -> Result<(), BoxError> {
    for row in seg.rows.clone() {
        // Rows holding only a factor-sent weight hold its initial value
        // in the table; read once, then the replica takes over.
        let replicated = st.sfb.as_ref().is_some_and(|s| s.initialized());
        let factor_only = replicated
            && seg.slots.clone().any(|i| {
                let s = &slots[i];
                sfb_of_slot[i].is_some()
                    && (s.offset.div_ceil(ROW) as u64..((s.offset + s.len) / ROW) as u64)
                        .contains(&row)
            });
        if factor_only {
            continue;
        }
        ctx.get_dense_into(t, row, &mut st.row_buf)?;
        st.flat[row as usize * ROW..(row as usize + 1) * ROW].copy_from_slice(&st.row_buf);
    }
    for i in seg.slots.clone() {
        let s = &slots[i];
        if !(s.trainable && tensors[i].device() == Device::Cpu) {
            load_into(&tensors[i], &st.flat[s.offset..s.offset + s.len]);
        }
    }
    Ok(())
}

/// Trainer → sender.
enum Msg {
    /// Read every segment (start of a clock).
    ReadAll,
    /// Segment `k`'s gradients are ready (with the factors of its
    /// factor-sent layer).
    Segment(usize, Option<(usize, sfb::Factors)>),
}

/// The sending side of a worker for one clock: owns the table context
/// and the optimiser state while the trainer runs forward and backward.
struct Sender<'a> {
    st: &'a mut SendState,
    ctx: &'a mut WorkerCtx,
    t: Table<f32>,
    segments: &'a [Segment],
    slots: &'a [Slot],
    plan: &'a Plan,
    tensors: Vec<Tensor>,
    p: &'a DnnParams,
    cfg: StepCfg,
    /// Time spent on mini-batch updates.
    busy: Duration,
    sfb: Option<(&'a sfb::SfbPlan, Table<f32>, Table<f32>)>,
    sfb_of_slot: &'a [Option<usize>],
    /// The optimiser on the device, if on; the clock's mini-batches and
    /// how many have been sent (the last one flushes).
    dev: Option<&'a mut DevOpt>,
    batches: usize,
    sent: usize,
}

impl Sender<'_> {
    fn handle(&mut self, msg: Msg) -> Result<(), BoxError> {
        let started = Instant::now();
        match msg {
            Msg::ReadAll => {
                for seg in self.segments {
                    read_segment(
                        self.st,
                        self.ctx,
                        self.t,
                        seg,
                        self.slots,
                        &self.tensors,
                        self.sfb_of_slot,
                    )?;
                }
                if let Some(dev) = self.dev.as_deref_mut() {
                    dev.begin_clock(&self.tensors, self.st, self.slots);
                }
                if let (Some((plan, t_sf, _)), Some(state)) = (self.sfb, self.st.sfb.as_mut()) {
                    let clock = self.ctx.clock_now();
                    let mu = self.p.momentum as f32;
                    state.begin_clock(plan, self.ctx, t_sf, clock, mu, &mut self.st.flat)?;
                    for l in &plan.layers {
                        if self.tensors[l.slot].device() != Device::Cpu {
                            load_into(
                                &self.tensors[l.slot],
                                &self.st.flat[l.offset..l.offset + l.m * l.n],
                            );
                        }
                    }
                }
                return Ok(());
            }
            Msg::Segment(k, factors) => {
                if k == self.segments.len() - 1 && self.p.optimizer() == Optimizer::Adam {
                    self.st.steps += 1;
                }
                if let Some(dev) = self.dev.as_deref_mut() {
                    send_segment_dev(
                        self.st,
                        dev,
                        self.ctx,
                        self.t,
                        &self.segments[k],
                        self.slots,
                        self.plan,
                        &mut self.tensors,
                        self.p,
                        self.cfg,
                        self.sent + 1 == self.batches,
                    )?;
                    if k == 0 {
                        self.sent += 1;
                    }
                    self.busy += started.elapsed();
                    return Ok(());
                }
                send_segment(
                    self.st,
                    self.ctx,
                    self.t,
                    &self.segments[k],
                    self.slots,
                    self.plan,
                    &mut self.tensors,
                    self.p,
                    self.cfg,
                    self.sfb_of_slot,
                    factors,
                )?;
            }
        }
        self.busy += started.elapsed();
        Ok(())
    }

    /// End of the clock: the factor-sent layers' broadcast.
    fn end_clock(&mut self, last_clock: u64) -> Result<(), BoxError> {
        if let (Some((plan, t_sf, t_final)), Some(state)) = (self.sfb, self.st.sfb.as_mut()) {
            let clock = self.ctx.clock_now();
            state.end_clock(
                plan,
                self.ctx,
                t_sf,
                t_final,
                clock,
                -self.cfg.lr,
                clock == last_clock,
            )?;
        }
        Ok(())
    }
}

impl DnnWorker {
    /// Op `i` on `h` (training mode: batch statistics, dropout masks from
    /// the worker's generator).
    fn apply(&self, i: usize, h: Tensor, rng: &mut ChaCha8Rng) -> Tensor {
        let w = |k: usize| &self.tensors[self.op_slot[i] + k];
        match self.plan.ops[i] {
            Op::Linear { .. } => {
                let h = if h.dim() > 2 { h.flatten(1, -1) } else { h };
                h.matmul(&w(0).tr()) + w(1)
            }
            Op::Conv {
                stride, padding, ..
            } => {
                let (s, p) = (stride as i64, padding as i64);
                h.conv2d(w(0), Some(w(1)), [s, s], [p, p], [1, 1], 1)
            }
            Op::MaxPool { kernel, stride } => {
                let (k, s) = (kernel as i64, stride as i64);
                h.max_pool2d([k, k], [s, s], [0, 0], [1, 1], false)
            }
            Op::BatchNorm { momentum, eps, .. } => h.batch_norm(
                Some(w(0)),
                Some(w(1)),
                Some(w(2)),
                Some(w(3)),
                true,
                momentum,
                eps,
                self.device != Device::Cpu,
            ),
            Op::Dropout { p } => {
                if p == 0.0 {
                    return h;
                }
                let keep = 1.0 / (1.0 - p) as f32;
                let mask: Vec<f32> = (0..h.numel())
                    .map(|_| if rng.gen::<f64>() < p { 0.0 } else { keep })
                    .collect();
                let mask = Tensor::from_slice(&mask)
                    .view(h.size().as_slice())
                    .to_device(self.device);
                h * mask
            }
            Op::Relu => h.relu(),
            Op::Tanh => h.tanh(),
            Op::Flatten => h.flatten(1, -1),
        }
    }

    /// The factor-sent layer index of op `i`, if it is one.
    fn sfb_layer_of_op(&self, i: usize) -> Option<usize> {
        self.sfb.as_ref()?;
        let first = self.op_slot[i];
        if first == usize::MAX {
            return None;
        }
        match self.plan.ops[i] {
            Op::Linear { .. } => self.sfb_of_slot[first],
            _ => None,
        }
    }

    fn input_tensor(&self, x: &[f32], bs: usize) -> Tensor {
        let t = Tensor::from_slice(x);
        let t = match self.plan.input {
            Shape::Flat(d) => t.view([bs as i64, d as i64]),
            Shape::Image(c, h, w) => t.view([bs as i64, c as i64, h as i64, w as i64]),
        };
        t.to_device(self.device)
    }

    /// Forward and backward of one mini-batch; tells the sender about each
    /// segment as its gradients are ready. Returns the summed loss (a
    /// scalar on the device: no wait for the device here).
    fn backprop(
        &self,
        x: &[f32],
        y: &[i64],
        rng: &mut ChaCha8Rng,
        send: &mut dyn FnMut(Msg) -> Result<(), BoxError>,
    ) -> Result<Tensor, BoxError> {
        let bs = y.len();
        let targets = Tensor::from_slice(y).to_device(self.device);
        let top = self.segments.len() - 1;
        let mut h = self.input_tensor(x, bs);
        let loss = if self.wait_free || self.sfb.is_some() {
            // Segments joined by detached leaves: backward stops at each.
            // A factor-sent layer's output is cut too, to catch δ there.
            let mut leaves = Vec::with_capacity(self.segments.len());
            let mut outs = Vec::with_capacity(self.segments.len());
            let mut cuts = Vec::with_capacity(self.segments.len());
            for (k, seg) in self.segments.iter().enumerate() {
                if k > 0 {
                    h = h.detach().set_requires_grad(true);
                    leaves.push(h.shallow_clone());
                }
                let mut cut = None;
                for i in seg.ops.clone() {
                    match self.sfb_layer_of_op(i) {
                        Some(li) => {
                            let x2 = if h.dim() > 2 { h.flatten(1, -1) } else { h };
                            let z = self.apply(i, x2.shallow_clone(), rng);
                            h = z.detach().set_requires_grad(true);
                            cut = Some((li, x2, z, h.shallow_clone()));
                        }
                        None => h = self.apply(i, h, rng),
                    }
                }
                cuts.push(cut);
                if k < top {
                    outs.push(h.shallow_clone());
                }
            }
            // Backward from a cut to the segment's input; the factors.
            let finish = |cut: Option<(usize, Tensor, Tensor, Tensor)>| {
                cut.map(|(li, x2, z, zl)| {
                    let delta = zl.grad();
                    (&z * &delta).sum(Kind::Float).backward();
                    (li, sfb::Factors::of(&x2.detach(), &delta))
                })
            };
            let loss = h.cross_entropy_for_logits(&targets);
            loss.backward();
            let mut cuts: Vec<_> = cuts.into_iter().map(Some).collect();
            let f = finish(cuts[top].take().flatten());
            send(Msg::Segment(top, f))?;
            for k in (0..top).rev() {
                let g = leaves[k].grad();
                (&outs[k] * g).sum(Kind::Float).backward();
                let f = finish(cuts[k].take().flatten());
                send(Msg::Segment(k, f))?;
            }
            loss
        } else {
            for i in 0..self.plan.ops.len() {
                h = self.apply(i, h, rng);
            }
            let loss = h.cross_entropy_for_logits(&targets);
            loss.backward();
            for k in (0..=top).rev() {
                send(Msg::Segment(k, None))?;
            }
            loss
        };
        Ok(loss.detach().to_kind(Kind::Double) * bs as f64)
    }
}

impl AlgoWorker for DnnWorker {
    fn step(&mut self, ctx: &mut WorkerCtx, rng: &mut ChaCha8Rng) -> Result<StepStats, BoxError> {
        let t = match self.table {
            Some(t) => t,
            None => *self.table.insert(ctx.table::<f32>(TABLE)?),
        };
        let p = self.params.clone();
        let bs = p.batch_size.min(self.part.len());
        let batches = p.batches_per_clock.unwrap_or(self.part.len().div_ceil(bs));
        let epochs = (ctx.clock_now() as f64 * (batches * bs) as f64) / self.part.len() as f64;
        let cfg = StepCfg {
            lr: (p.lr() / (1.0 + p.decay * epochs)) as f32 * self.share,
            share: self.share,
        };
        // The clock's samples: a uniformly random ordered subset of the
        // worker's partition, drawn without replacement (a partial
        // Fisher-Yates: O(samples), not O(partition) per clock).
        let need = (bs * batches).min(self.part.len());
        let draw = |rng: &mut ChaCha8Rng| -> Vec<usize> {
            let mut all = self.part.clone();
            all.partial_shuffle(rng, need).0.to_vec()
        };
        let mut order = draw(rng);
        let d = self.data.dim();
        let mut x = vec![0f32; bs * d];
        let mut y = vec![0i64; bs];
        let (mut losses, mut seen, mut pos) = (Vec::with_capacity(batches), 0u64, 0usize);
        // Table handles first: nothing may fail while the state (whose
        // buffer the parameter tensors view) is out of `self`.
        let sf_handles = match &self.sfb {
            Some(_) => Some((
                ctx.table::<f32>(sfb::SF_TABLE)?,
                ctx.table::<f32>(sfb::FINAL_TABLE)?,
            )),
            None => None,
        };
        let mut state = std::mem::take(&mut self.state);
        let mut dev = self.dev.take();
        let this = &*self;
        let sfb_tables = this
            .sfb
            .as_deref()
            .zip(sf_handles)
            .map(|(plan, (sf, fin))| (plan, sf, fin));
        let mut sender = Sender {
            st: &mut state,
            ctx,
            t,
            segments: &this.segments,
            slots: &this.slots,
            plan: &this.plan,
            tensors: this.tensors.iter().map(|t| t.shallow_clone()).collect(),
            p: &p,
            cfg,
            busy: Duration::ZERO,
            sfb: sfb_tables,
            sfb_of_slot: &this.sfb_of_slot,
            dev: dev.as_mut(),
            batches,
            sent: 0,
        };
        let mut exposed = Duration::ZERO;
        let mut batch = |rng: &mut ChaCha8Rng,
                         send: &mut dyn FnMut(Msg) -> Result<(), BoxError>|
         -> Result<Tensor, BoxError> {
            for i in 0..bs {
                if pos == order.len() {
                    order = draw(rng);
                    pos = 0;
                }
                let s = order[pos];
                pos += 1;
                this.data.features.row_into(s, &mut x[i * d..(i + 1) * d]);
                y[i] = this.data.labels[s] as i64;
            }
            this.backprop(&x, &y, rng, send)
        };
        let result = if !self.wait_free {
            // Everything in this thread, one step after the other.
            (|| -> Result<(), BoxError> {
                sender.handle(Msg::ReadAll)?;
                for _ in 0..batches {
                    let before = sender.busy;
                    losses.push(batch(rng, &mut |m| sender.handle(m))?);
                    exposed += sender.busy - before;
                    seen += bs as u64;
                }
                Ok(())
            })()
        } else {
            // The sender in its own thread; the trainer hands it each
            // segment as backward reaches it and waits for it only before
            // the next forward pass.
            std::thread::scope(|scope| -> Result<(), BoxError> {
                let (to_sender, inbox) = mpsc::channel::<Option<Msg>>();
                let (reply, replies) = mpsc::channel::<Result<(), BoxError>>();
                let sender = &mut sender;
                let thread = scope.spawn(move || {
                    let mut failed = false;
                    for msg in inbox {
                        match msg {
                            Some(m) if !failed => {
                                if let Err(e) = sender.handle(m) {
                                    failed = true;
                                    let _ = reply.send(Err(e));
                                }
                            }
                            Some(_) => {}
                            None if !failed => {
                                let _ = reply.send(Ok(()));
                            }
                            None => {}
                        }
                    }
                });
                let mut run = || -> Result<(), BoxError> {
                    to_sender.send(Some(Msg::ReadAll))?;
                    to_sender.send(None)?;
                    replies.recv()??;
                    for _ in 0..batches {
                        losses.push(batch(rng, &mut |m| Ok(to_sender.send(Some(m))?))?);
                        seen += bs as u64;
                        let waited = Instant::now();
                        to_sender.send(None)?;
                        replies.recv()??;
                        exposed += waited.elapsed();
                    }
                    Ok(())
                };
                let r = run();
                drop(to_sender);
                thread
                    .join()
                    .map_err(|_| "the DNN sender thread panicked")?;
                r
            })
        };
        let result = result.and_then(|_| sender.end_clock(this.last_clock));
        // Pushed at the runner's clock(): this clock's bytes show next time.
        let pushed = sender.ctx.stats().bytes_pushed;
        self.timing.busy += sender.busy;
        self.timing.bytes_pushed = pushed;
        self.timing.exposed += exposed;
        self.timing.batches += batches as u64;
        self.state = state;
        self.dev = dev;
        result?;
        // One copy of the clock's losses to the host.
        let loss_sum = match losses.len() {
            0 => 0.0,
            _ => f64::try_from(
                Tensor::stack(&losses, 0)
                    .sum(Kind::Double)
                    .to_device(Device::Cpu),
            )?,
        };
        // Diverged: a loss that is not a number, or a mean cross-entropy
        // fifty times that of guessing uniformly (a network that is
        // confidently wrong about everything); both end the job `failed`.
        let classes = self.plan.shapes.last().map_or(2, |s| s.numel()).max(2);
        let mean = loss_sum / seen.max(1) as f64;
        if !mean.is_finite() || mean > 50.0 * (classes as f64).ln() {
            return Err(format!(
                "diverged: the mean cross-entropy became {} in clock {} (guessing gives {:.3}); lower params.learning_rate (now {}){}",
                if mean.is_nan() {
                    "NaN".to_string()
                } else {
                    format!("{mean:.4e}")
                },
                ctx.clock_now(),
                (classes as f64).ln(),
                p.lr(),
                if p.scaling() == Scaling::None {
                    " or let the inputs be scaled (leave params.scaling out, or set it to \"auto\")"
                } else {
                    ""
                }
            )
            .into());
        }
        Ok(StepStats {
            objective: loss_sum,
            weight: seen as f64,
            samples: seen,
            ..Default::default()
        })
    }

    /// `steps`, then the first moment, then the second (Adam only), then
    /// the factor-sent layers' state.
    fn save_state(&self) -> Vec<u8> {
        let st = &self.state;
        let mut out = Vec::with_capacity(8 + 4 * (st.velocity.len() + st.second.len()));
        out.extend_from_slice(&st.steps.to_le_bytes());
        for v in st.velocity.iter().chain(&st.second) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(sfb) = &st.sfb {
            sfb.save(&mut out);
        }
        out
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), BoxError> {
        let st = &mut self.state;
        let want = 8 + 4 * (st.velocity.len() + st.second.len());
        let (state, rest) = state.split_at(want.min(state.len()));
        if let (Some(sfb), Some(plan)) = (st.sfb.as_mut(), &self.sfb) {
            let used = sfb.restore(plan, rest)?;
            if used != rest.len() {
                return Err(format!(
                    "checkpointed worker state has {} bytes after the factor-sent layers' state",
                    rest.len() - used
                )
                .into());
            }
        } else if !rest.is_empty() {
            return Err(format!(
                "checkpointed optimiser state has {} bytes, the network needs {want}",
                want + rest.len()
            )
            .into());
        }
        if state.len() != want {
            return Err(format!(
                "checkpointed optimiser state has {} bytes, the network needs {want}",
                state.len()
            )
            .into());
        }
        st.steps = u64::from_le_bytes(state[..8].try_into().expect("8 bytes"));
        let mut vals = state[8..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        for v in st.velocity.iter_mut().chain(st.second.iter_mut()) {
            *v = vals.next().expect("length checked");
        }
        Ok(())
    }
}
