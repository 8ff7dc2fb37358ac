//! # petuum-poseidon
//!
//! Data-parallel deep learning on Bosen tables, as Petuum's Poseidon
//! (issue 9; this is its first part): a multi-layer perceptron whose
//! parameters live in the dense `f32` rows of one table (`params`, the
//! layers' weights and biases flattened in order, cut into rows of
//! [`ROW`] values). Each worker trains on its partition of the data: per
//! mini-batch it reads the parameters under the job's consistency model,
//! runs forward and backward with libtorch (tch), on the GPU when there
//! is one, and sends its update `-lr * v` (SGD with momentum, `v` kept by
//! the worker and saved with checkpoints) through `inc`.
//!
//! Not yet here: CNNs, Adam, wait-free backprop (per-layer sends during
//! backward), sufficient-factor broadcasting and the speech DNN.

use petuum_algorithms::data::{load_job_data, Dataset, Features};
use petuum_algorithms::dnn::{self, DnnParams, MlpModel, Optimizer};
use petuum_algorithms::model::ModelFile;
use petuum_algorithms::registry::{input_spec, BuildError};
use petuum_algorithms::softmax::InputSpec;
use petuum_core::algorithm::{
    AlgoWorker, Algorithm, BoxError, ModelSummary, StepStats, TableDecl, TableLoader, TableReader,
};
use petuum_core::spec::{parse_params, JobSpec};
use petuum_core::{ElemType, Row, RowKind, Table, WorkerCtx};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::Arc;
use tch::{Device, Tensor};

/// Values per parameter row.
pub const ROW: usize = 4096;
const TABLE: &str = "params";

/// Registers the `dnn` trainer with the algorithm registry.
pub fn register() {
    dnn::set_builder(build);
}

/// Where the networks run: the first GPU when there is one.
pub fn device() -> Device {
    Device::cuda_if_available()
}

fn build(spec: &JobSpec) -> Result<Box<dyn Algorithm>, BuildError> {
    let params: DnnParams = parse_params(&spec.params)?;
    params.validate()?;
    let (train, test) = load_job_data(&spec.data)?;
    Ok(Box::new(Dnn::new(
        params,
        train,
        test,
        input_spec(spec),
        spec.run.seed,
        spec.run.workers,
    )))
}

/// A multi-layer perceptron on the tables.
pub struct Dnn {
    params: DnnParams,
    train: Arc<Dataset>,
    test: Option<Arc<Dataset>>,
    input: InputSpec,
    seed: u64,
    /// Layer widths, input first, classes last.
    sizes: Vec<usize>,
    device: Device,
}

impl Dnn {
    pub fn new(
        params: DnnParams,
        mut train: Dataset,
        test: Option<Dataset>,
        input: InputSpec,
        seed: u64,
        workers: u32,
    ) -> Self {
        if let Features::Sparse(_) = train.features {
            train.features = Features::Dense(train.features.to_dense());
        }
        let classes = train.num_classes.max(2) as usize;
        let mut sizes = vec![train.dim()];
        sizes.extend(&params.hidden);
        sizes.push(classes);
        // The workers of a node share its cores; torch's pool is per process.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        tch::set_num_threads((cores / workers.max(1) as usize).max(1) as i32);
        Dnn {
            params,
            train: Arc::new(train),
            test: test.map(Arc::new),
            input,
            seed,
            sizes,
            device: device(),
        }
    }

    /// (offset, out, in) of each layer's weight; its bias follows it.
    fn layout(&self) -> Vec<(usize, usize, usize)> {
        let mut off = 0;
        self.sizes
            .windows(2)
            .map(|w| {
                let l = (off, w[1], w[0]);
                off += w[1] * w[0] + w[1];
                l
            })
            .collect()
    }

    fn num_params(&self) -> usize {
        self.sizes.windows(2).map(|w| w[1] * w[0] + w[1]).sum()
    }

    fn rows(&self) -> usize {
        self.num_params().div_ceil(ROW)
    }

    fn read_flat(&self, tables: &TableReader<'_>) -> Result<Vec<f32>, BoxError> {
        let mut flat = Vec::with_capacity(self.rows() * ROW);
        for r in 0..self.rows() {
            flat.extend(tables.read::<f32>(TABLE, r as u64)?.to_dense(ROW as u32));
        }
        flat.truncate(self.num_params());
        Ok(flat)
    }

    fn model_of(&self, flat: &[f32]) -> Result<MlpModel, BoxError> {
        let mut layers = Vec::new();
        for (off, out, inp) in self.layout() {
            let w =
                ndarray::Array2::from_shape_vec((out, inp), flat[off..off + out * inp].to_vec())?;
            let b = ndarray::Array1::from(flat[off + out * inp..off + out * inp + out].to_vec());
            layers.push((w, b));
        }
        Ok(MlpModel { layers })
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
        vec![TableDecl {
            name: TABLE.into(),
            kind: RowKind::Dense,
            elem: ElemType::F32,
            columns: ROW as u32,
        }]
    }

    /// PyTorch's default initialisation of linear layers: weights and
    /// biases uniform in ±1/sqrt(fan_in), from the job's seed.
    fn initialize(&self, loader: &TableLoader<'_>) -> Result<(), BoxError> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x706f_7365_6964_6f6e);
        let mut flat = vec![0f32; self.rows() * ROW];
        for (off, out, inp) in self.layout() {
            let bound = 1.0 / (inp as f32).sqrt();
            for v in &mut flat[off..off + out * inp + out] {
                *v = rng.gen_range(-bound..bound);
            }
        }
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
        let n = self.num_params();
        Ok(Box::new(DnnWorker {
            params: self.params.clone(),
            data: self.train.clone(),
            part,
            layout: self.layout(),
            flat: vec![0.0; self.rows() * ROW],
            grad: vec![0.0; n],
            velocity: vec![0.0; n],
            second: if self.params.optimizer == Optimizer::Adam {
                vec![0.0; n]
            } else {
                Vec::new()
            },
            steps: 0,
            delta: vec![0.0; ROW],
            row_buf: Vec::new(),
            table: None,
            device: self.device,
            share: 1.0 / workers.max(1) as f32,
        }))
    }

    fn export(&self, tables: &TableReader<'_>, path: &Path) -> Result<ModelSummary, BoxError> {
        let flat = self.read_flat(tables)?;
        let model = self.model_of(&flat)?;
        let mut metrics = Vec::new();
        if let Some(test) = &self.test {
            metrics.push(("test_accuracy".to_string(), model.accuracy(test)));
        }
        let mut file = ModelFile::new(dnn::NAME);
        file.set("num_layers", model.layers.len());
        file.set("num_classes", *self.sizes.last().expect("classes"));
        file.set("num_features", self.sizes[0]);
        self.input.record(&mut file);
        file.set(
            "class_names",
            serde_json::to_string(&self.train.class_names)?,
        );
        file.set("params", serde_json::to_string(&self.params)?);
        file.set_metrics(&metrics);
        for (i, (w, b)) in model.layers.into_iter().enumerate() {
            let shape = vec![w.nrows(), w.ncols()];
            file.add_tensor(
                &format!("layer{i}.weight"),
                shape,
                w.into_raw_vec_and_offset().0,
            );
            let n = b.len();
            file.add_tensor(&format!("layer{i}.bias"), vec![n], b.to_vec());
        }
        let bytes = file.save(path)?;
        Ok(ModelSummary { bytes, metrics })
    }
}

struct DnnWorker {
    params: DnnParams,
    data: Arc<Dataset>,
    part: Vec<usize>,
    layout: Vec<(usize, usize, usize)>,
    /// The parameters as read for the current mini-batch.
    flat: Vec<f32>,
    grad: Vec<f32>,
    /// Momentum (SGD) or Adam's first moment, per parameter (worker-local,
    /// checkpointed).
    velocity: Vec<f32>,
    /// Adam's second moment (empty for SGD).
    second: Vec<f32>,
    /// Adam steps taken (bias correction).
    steps: u64,
    delta: Vec<f32>,
    row_buf: Vec<f32>,
    table: Option<Table<f32>>,
    device: Device,
    /// 1 / workers: the workers' updates add up to one step of
    /// `learning_rate` on the mean of their gradients (as synchronous
    /// data-parallel SGD over their combined batch would take).
    share: f32,
}

impl DnnWorker {
    fn read_params(&mut self, ctx: &mut WorkerCtx, t: Table<f32>) -> Result<(), BoxError> {
        for (r, chunk) in self.flat.chunks_mut(ROW).enumerate() {
            ctx.get_dense_into(t, r as u64, &mut self.row_buf)?;
            chunk.copy_from_slice(&self.row_buf);
        }
        Ok(())
    }

    /// Forward and backward of one mini-batch on the parameters just read;
    /// fills `grad`, returns the summed loss.
    fn backprop(&mut self, x: &[f32], y: &[i64], bs: usize) -> Result<f64, BoxError> {
        let dev = self.device;
        let d = self.layout[0].2;
        let params: Vec<(Tensor, Tensor)> = self
            .layout
            .iter()
            .map(|&(off, out, inp)| {
                let w = Tensor::from_slice(&self.flat[off..off + out * inp])
                    .view([out as i64, inp as i64])
                    .to_device(dev)
                    .set_requires_grad(true);
                let b = Tensor::from_slice(&self.flat[off + out * inp..off + out * inp + out])
                    .to_device(dev)
                    .set_requires_grad(true);
                (w, b)
            })
            .collect();
        let mut h = Tensor::from_slice(x)
            .view([bs as i64, d as i64])
            .to_device(dev);
        for (i, (w, b)) in params.iter().enumerate() {
            h = h.matmul(&w.tr()) + b;
            if i + 1 < params.len() {
                h = h.relu();
            }
        }
        let targets = Tensor::from_slice(y).to_device(dev);
        let loss = h.cross_entropy_for_logits(&targets);
        loss.backward();
        let loss = f64::try_from(loss.to_device(Device::Cpu))?;
        for ((off, out, inp), (w, b)) in self.layout.iter().zip(&params) {
            let nw = out * inp;
            w.grad()
                .to_device(Device::Cpu)
                .copy_data(&mut self.grad[*off..off + nw], nw);
            b.grad()
                .to_device(Device::Cpu)
                .copy_data(&mut self.grad[off + nw..off + nw + out], *out);
        }
        Ok(loss * bs as f64)
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
        let lr = (p.learning_rate / (1.0 + p.decay * epochs)) as f32 * self.share;
        let (mu, l2) = (p.momentum as f32, p.l2 as f32);
        let mut order = self.part.clone();
        order.shuffle(rng);
        let d = self.data.dim();
        let mut x = vec![0f32; bs * d];
        let mut y = vec![0i64; bs];
        let (mut loss_sum, mut seen, mut pos) = (0.0f64, 0u64, 0usize);
        for _ in 0..batches {
            for i in 0..bs {
                if pos == order.len() {
                    order.shuffle(rng);
                    pos = 0;
                }
                let s = order[pos];
                pos += 1;
                self.data.features.row_into(s, &mut x[i * d..(i + 1) * d]);
                y[i] = self.data.labels[s] as i64;
            }
            self.read_params(ctx, t)?;
            loss_sum += self.backprop(&x, &y, bs)?;
            seen += bs as u64;
            // v = mu v + g (+ l2 w on weights); the update is -lr v.
            if l2 > 0.0 {
                for &(off, out, inp) in &self.layout {
                    for j in off..off + out * inp {
                        self.grad[j] += l2 * self.flat[j];
                    }
                }
            }
            // The step direction goes into `grad` (reused as scratch).
            match p.optimizer {
                Optimizer::Sgd => {
                    for (v, g) in self.velocity.iter_mut().zip(self.grad.iter_mut()) {
                        *v = mu * *v + *g;
                        *g = *v;
                    }
                }
                Optimizer::Adam => {
                    self.steps += 1;
                    let (b1, b2, eps) = (p.beta1 as f32, p.beta2 as f32, p.eps as f32);
                    let c1 = 1.0 - b1.powi(self.steps.min(1 << 20) as i32);
                    let c2 = 1.0 - b2.powi(self.steps.min(1 << 20) as i32);
                    for ((m, v), g) in self
                        .velocity
                        .iter_mut()
                        .zip(self.second.iter_mut())
                        .zip(self.grad.iter_mut())
                    {
                        *m = b1 * *m + (1.0 - b1) * *g;
                        *v = b2 * *v + (1.0 - b2) * *g * *g;
                        *g = (*m / c1) / ((*v / c2).sqrt() + eps);
                    }
                }
            }
            for (r, chunk) in self.grad.chunks(ROW).enumerate() {
                self.delta.clear();
                self.delta.extend(chunk.iter().map(|d| -lr * d));
                self.delta.resize(ROW, 0.0);
                ctx.batch_inc(t, r as u64, &self.delta)?;
            }
        }
        Ok(StepStats {
            objective: loss_sum,
            weight: seen as f64,
            samples: seen,
        })
    }

    /// `steps`, then the first moment, then the second (Adam only).
    fn save_state(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 4 * (self.velocity.len() + self.second.len()));
        out.extend_from_slice(&self.steps.to_le_bytes());
        for v in self.velocity.iter().chain(&self.second) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), BoxError> {
        let want = 8 + 4 * (self.velocity.len() + self.second.len());
        if state.len() != want {
            return Err(format!(
                "checkpointed optimiser state has {} bytes, the network needs {want}",
                state.len()
            )
            .into());
        }
        self.steps = u64::from_le_bytes(state[..8].try_into().expect("8 bytes"));
        let mut vals = state[8..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        for v in self.velocity.iter_mut().chain(self.second.iter_mut()) {
            *v = vals.next().expect("length checked");
        }
        Ok(())
    }
}
