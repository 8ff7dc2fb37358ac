//! Binary linear classifiers trained by data-parallel mini-batch SGD over a
//! Bosen table, as Petuum's LR and SVM apps:
//!
//! - **logistic regression** (`logistic_regression`): log loss, L2 and/or
//!   L1 regularisation; L1 by truncated gradient (Langford, Li and Zhang,
//!   "Sparse Online Learning via Truncated Gradient", JMLR 2009).
//! - **linear SVM** (`svm`): hinge loss with L2, by SGD on the primal as in
//!   Pegasos (Shalev-Shwartz et al., ICML 2007) with the schedule
//!   `lr_e = learning_rate / (1 + decay * e)`, `e` the passes over the data.
//!
//! The weights are one dense `f32` row (features, then the bias). Each
//! clock a worker shuffles its partition with the clock's RNG stream and
//! runs `batches_per_clock` mini-batches; for each it reads the weights
//! under the job's consistency model, takes a step on
//! `mean loss + l2/2 ||w||²` (sparse data touch only their features; the L2
//! shrink is applied to the whole row), applies the L1 truncation, and
//! increments the row by the change.
//!
//! The objective reported per clock is the mean loss of its mini-batches
//! (before each update) plus the regularisation of the weights read.
//!
//! With no `learning_rate` in the spec the models train in the automatic
//! configuration of [`crate::sgd`] (scaled features, AdaGrad, `C = 1`,
//! tail averaging, the squared hinge for the SVM, a stop on convergence);
//! see [`LinearParams`].
//!
//! Limitation: with several workers, L1 truncation is applied by each
//! worker to its own view, so concurrent truncations of one weight overlap
//! and the global weights are much less sparse than with one worker.

mod params;

pub use params::{HingeLoss, LinearParams, Resolved};

use crate::data::{Csr, Dataset, Features};
use crate::model::{ModelError, ModelFile};
use crate::polish::{self, Polish};
use crate::sgd::{
    self, restore_learner, save_learner, Adagrad, Optimizer, Progress, RunStatus, Scaler,
};
use crate::softmax::InputSpec;
use petuum_core::algorithm::{
    AlgoWorker, Algorithm, BoxError, ModelSummary, StepStats, TableDecl, TableReader,
};
use petuum_core::{ElemType, Row, RowKind, Table, WorkerCtx};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::Arc;

pub const LOGISTIC: &str = "logistic_regression";
pub const SVM: &str = "svm";
const TABLE: &str = "weights";
/// Sums of iterates (features, bias, count) in row 0: the tail average of
/// a tuned run, or the polynomial-decay average of the automatic one
/// (weighted values, then the summed weight).
const AVG_TABLE: &str = "weights_avg";

/// The loss a binary linear model minimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    Logistic,
    Hinge,
    SquaredHinge,
}

impl Loss {
    fn name(self) -> &'static str {
        match self {
            Loss::Logistic => LOGISTIC,
            Loss::Hinge | Loss::SquaredHinge => SVM,
        }
    }

    /// Loss at margin `m = y z` and its derivative with respect to `m`.
    #[inline]
    fn eval(self, m: f32) -> (f32, f32) {
        let (l, d) = self.eval64(m as f64);
        (l as f32, d as f32)
    }

    /// [`eval`](Self::eval) in `f64`.
    #[inline]
    fn eval64(self, m: f64) -> (f64, f64) {
        match self {
            Loss::Logistic => {
                // log(1 + e^-m), computed stably; d/dm = -1 / (1 + e^m).
                let loss = if m > 0.0 {
                    (-m).exp().ln_1p()
                } else {
                    -m + m.exp().ln_1p()
                };
                (loss, -1.0 / (1.0 + m.exp()))
            }
            Loss::Hinge => {
                if m < 1.0 {
                    (1.0 - m, -1.0)
                } else {
                    (0.0, 0.0)
                }
            }
            Loss::SquaredHinge => {
                if m < 1.0 {
                    ((1.0 - m) * (1.0 - m), -2.0 * (1.0 - m))
                } else {
                    (0.0, 0.0)
                }
            }
        }
    }
}

/// How the saved weights average the iterates.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Averaging {
    Off,
    /// Tuned run: iterates from this clock on, in row 0.
    From(u64),
    /// Automatic run: every iterate, weighted by `sgd::avg_weight`.
    Poly,
}

/// A binary linear classifier with its data loaded.
pub struct BinaryLinear {
    loss: Loss,
    params: LinearParams,
    cfg: Resolved,
    train: Arc<Dataset>,
    test: Option<Arc<Dataset>>,
    input: InputSpec,
    scaler: Option<Scaler>,
    clocks: u64,
    /// The likely cause named if the job diverges.
    hint: Arc<str>,
}

impl BinaryLinear {
    /// Fails unless the data have exactly two classes. `loss` is
    /// `Logistic` or `Hinge` (the SVM; the parameters choose its hinge).
    pub fn new(
        loss: Loss,
        params: LinearParams,
        mut train: Dataset,
        test: Option<Dataset>,
        input: InputSpec,
        clocks: u64,
    ) -> Result<Self, BoxError> {
        if train.num_classes != 2 {
            return Err(format!(
                "{} is a binary classifier but the training data have {} classes {:?}",
                loss.name(),
                train.num_classes,
                train.class_names
            )
            .into());
        }
        let cfg = params.resolve(train.len());
        let loss = match (loss, cfg.hinge) {
            (Loss::Logistic, _) => Loss::Logistic,
            (_, HingeLoss::Hinge) => Loss::Hinge,
            (_, HingeLoss::SquaredHinge) => Loss::SquaredHinge,
        };
        let scaler = Scaler::fit(&train.features, cfg.steps.scaling);
        let hint = sgd::divergence_hint(&train.features, scaler.is_some(), &cfg.steps);
        // The test set stays as read: it is scored by the saved model, whose
        // weights have the scaling folded in (`export`).
        if let Some(s) = &scaler {
            s.apply(&mut train.features);
        }
        Ok(BinaryLinear {
            loss,
            params,
            cfg,
            train: Arc::new(train),
            test: test.map(Arc::new),
            input,
            scaler,
            clocks,
            hint: hint.into(),
        })
    }

    /// Whether the automatic configuration ends with the full-batch
    /// finish ([`crate::polish`]): not for the plain hinge (not
    /// differentiable), L1, a tuned step, or a model too wide for it.
    fn polishes(&self) -> bool {
        self.cfg.auto
            && self.params.polish.unwrap_or(true)
            && self.loss != Loss::Hinge
            && self.params.l1 == 0.0
            && self.cfg.steps.stop.tol > 0.0
            && self.train.dim() < polish::MAX_COORDS
    }

    fn averaging(&self) -> Averaging {
        if self.params.l1 > 0.0 {
            return Averaging::Off;
        }
        if self.cfg.auto {
            return match self.params.average_from {
                Some(a) if a >= 1.0 => Averaging::Off,
                _ => Averaging::Poly,
            };
        }
        let from = self.params.average_from.unwrap_or(match self.loss {
            Loss::Hinge | Loss::SquaredHinge => 0.5,
            Loss::Logistic => 1.0,
        });
        if from < 1.0 {
            Averaging::From((self.clocks as f64 * from).floor() as u64)
        } else {
            Averaging::Off
        }
    }
}

impl Algorithm for BinaryLinear {
    fn name(&self) -> &'static str {
        self.loss.name()
    }

    fn objective_name(&self) -> &'static str {
        match self.loss {
            Loss::Logistic => "log-loss+reg",
            Loss::Hinge => "hinge+reg",
            Loss::SquaredHinge => "squared-hinge+reg",
        }
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl {
                name: TABLE.into(),
                kind: RowKind::Dense,
                elem: ElemType::F32,
                columns: self.train.dim() as u32 + 1,
            },
            TableDecl {
                name: AVG_TABLE.into(),
                kind: RowKind::Dense,
                elem: ElemType::F64,
                columns: self.train.dim() as u32 + 2,
            },
            sgd::progress_table(),
            polish::polish_table(self.train.dim() + 1),
        ]
    }

    fn worker(&self, worker: u32, workers: u32) -> Result<Box<dyn AlgoWorker>, BoxError> {
        let n = self.train.len();
        let part = crate::data::partition(n, worker, workers)?;
        let d = self.train.dim();
        let polish = self.polishes().then(|| {
            let mut l2 = vec![self.cfg.steps.l2; d + 1];
            l2[d] = 0.0;
            Polish::new(l2, self.cfg.steps.stop.tol, n as u64)
        });
        let mut progress = Progress::default();
        progress.defer_status = polish.is_some();
        Ok(Box::new(LinearWorker {
            loss: self.loss,
            params: self.params.clone(),
            cfg: self.cfg.clone(),
            data: self.train.clone(),
            part,
            w: Vec::new(),
            grad: Vec::new(),
            table: None,
            averaging: self.averaging(),
            avg_buf: Vec::new(),
            ada: if self.cfg.steps.optimizer == Optimizer::Adagrad {
                Adagrad::new(d + 1, self.cfg.steps.learning_rate, self.cfg.steps.l2)
            } else {
                Adagrad::default()
            },
            progress,
            hint: self.hint.clone(),
            lazy: Lazy::default(),
            polish,
            sgd_clocks: polish::sgd_clocks(self.clocks),
        }))
    }

    fn export(&self, tables: &TableReader<'_>, path: &Path) -> Result<ModelSummary, BoxError> {
        let d = self.train.dim();
        let status = RunStatus::read(tables, self.clocks)?;
        let mut row = match tables.read::<f32>(TABLE, 0)? {
            Row::Dense(v) => v,
            r => r.to_dense(d as u32 + 1),
        };
        let avg_rows = match self.averaging() {
            Averaging::Off => vec![],
            Averaging::From(_) => vec![0],
            Averaging::Poly => vec![0],
        };
        let mut sum = vec![0f64; d + 2];
        for r in avg_rows {
            let s = tables.read::<f64>(AVG_TABLE, r)?.to_dense(d as u32 + 2);
            sum.iter_mut().zip(&s).for_each(|(a, b)| *a += b);
        }
        let count = sum[d + 1];
        if count > 0.0 {
            row = sum[..=d].iter().map(|s| (s / count) as f32).collect();
        }
        let finished = polish::read_result(tables, d + 1)?;
        if let Some(w) = &finished {
            row = w.iter().map(|&v| v as f32).collect();
        }
        let mut model = LinearModel {
            weight: row[..d].to_vec(),
            bias: row[d],
            class_names: self.train.class_names.clone(),
        };
        let mut metrics = Vec::new();
        let train_accuracy = model.accuracy(&self.train);
        let nonzero = model.weight.iter().filter(|w| **w != 0.0).count();
        if let Some(s) = &self.scaler {
            s.fold(&mut model.weight, &mut model.bias);
        }
        if let Some(test) = &self.test {
            // Scored by the model as saved, exactly as `petuumd eval` scores it.
            metrics.push(("test_accuracy".to_string(), model.accuracy(test)));
        }
        metrics.push(("train_accuracy".to_string(), train_accuracy));
        metrics.push(("nonzero_weights".to_string(), nonzero as f64));
        status.metrics(&mut metrics);
        metrics.push((
            "full_batch_finish".to_string(),
            finished.is_some() as u8 as f64,
        ));
        sgd::check_majority(self.loss.name(), &self.train, train_accuracy, &mut metrics);
        let mut file = ModelFile::new(self.loss.name());
        file.set("num_features", d);
        file.set("num_classes", 2);
        self.input.record(&mut file);
        file.set("class_names", serde_json::to_string(&model.class_names)?);
        file.set("params", serde_json::to_string(&self.params)?);
        if let Some(s) = &self.scaler {
            file.set("scaling_folded", s.kind);
        }
        file.set_metrics(&metrics);
        file.add_tensor("weight", vec![d], model.weight);
        file.add_tensor("bias", vec![1], vec![model.bias]);
        Ok(ModelSummary {
            bytes: file.save(path)?,
            metrics,
        })
    }
}

struct LinearWorker {
    loss: Loss,
    params: LinearParams,
    cfg: Resolved,
    data: Arc<Dataset>,
    part: Vec<usize>,
    w: Vec<f32>,
    grad: Vec<f32>,
    table: Option<Table<f32>>,
    averaging: Averaging,
    avg_buf: Vec<f64>,
    ada: Adagrad,
    progress: Progress,
    hint: Arc<str>,
    lazy: Lazy,
    /// The full-batch finish, when the automatic configuration has one.
    polish: Option<Polish>,
    /// Clocks after which the finish starts even if SGD has not plateaued.
    sgd_clocks: u64,
}

impl AlgoWorker for LinearWorker {
    fn step(&mut self, ctx: &mut WorkerCtx, rng: &mut ChaCha8Rng) -> Result<StepStats, BoxError> {
        let t = match self.table {
            Some(t) => t,
            None => *self.table.insert(ctx.table::<f32>(TABLE)?),
        };
        if let Some(pol) = self.polish.as_mut().filter(|p| p.active()) {
            let (data, part, loss) = (&self.data, &self.part, self.loss);
            return pol.step(ctx, part.len(), &mut |w, g| {
                full_loss_grad(loss, data, part, w, g)
            });
        }
        let p = &self.params;
        let c = ctx.clock_now();
        let bs = p.batch_size.min(self.part.len());
        let batches = p.batches_per_clock.unwrap_or(self.part.len().div_ceil(bs));
        let epochs = c as f64 * (batches * bs) as f64 / self.part.len() as f64;
        let lr = self.cfg.steps.learning_rate;
        let (l1, l2) = (p.l1, self.cfg.steps.l2);
        let adagrad = self.cfg.steps.optimizer == Optimizer::Adagrad;
        let d = self.data.dim();
        let avg_weight = match self.averaging {
            Averaging::Off => None,
            Averaging::From(from) => (c >= from).then_some(1.0),
            Averaging::Poly => Some(sgd::avg_weight(c)),
        };
        // With the stop rule on, the objective is measured exactly on the
        // worker's partition, for the model the job would save if it ended
        // now (the tail average, or the weights the clock starts from): the
        // running loss of the mini-batches and the iterates themselves are
        // too noisy to tell a plateau.
        let averaging = self.averaging;
        let exact = (self.cfg.steps.stop.tol > 0.0).then(|| -> Result<f64, BoxError> {
            current_model(ctx, t, averaging, &mut self.w)?;
            let reg = 0.5 * l2 * sq_norm(&self.w[..d])
                + l1 * self.w[..d].iter().map(|v| v.abs() as f64).sum::<f64>();
            let loss: f64 = self
                .part
                .iter()
                .map(|&i| {
                    let y = if self.data.labels[i] == 1 { 1.0 } else { -1.0 };
                    let x = &self.data.features;
                    self.loss.eval(y * (x.dot(i, &self.w) + self.w[d])).0 as f64
                })
                .sum();
            Ok(loss + reg * self.part.len() as f64)
        });
        let exact = exact.transpose()?;
        let mut order = Order::new(&self.part, rng);
        let plan = ClockPlan {
            batches,
            bs,
            avg_weight,
            sgd_lr: (!adagrad).then_some(lr / (1.0 + p.decay * epochs)),
            l2,
            l1,
        };
        let data = self.data.clone();
        let (loss_sum, reg) = match (&data.features, l1 == 0.0) {
            (Features::Sparse(csr), true) => {
                self.sparse_clock(ctx, t, csr, &data.labels, &plan, &mut order, rng)?
            }
            (x, _) => self.dense_clock(ctx, t, x, &data.labels, &plan, &mut order, rng)?,
        };
        let seen = (batches * bs) as f64;
        let stats = match exact {
            Some(objective) => StepStats {
                objective,
                weight: self.part.len() as f64,
                samples: seen as u64,
                ..Default::default()
            },
            None => StepStats {
                objective: loss_sum + reg * seen,
                weight: seen,
                samples: seen as u64,
                ..Default::default()
            },
        };
        let hint = self.hint.clone();
        let rule = polish::stop_rule(self.polish.as_ref(), self.cfg.steps.stop);
        self.progress
            .after_step(ctx, rule, &stats, &|| hint.to_string())?;
        let switch = self.progress.finished() || c + 1 >= self.sgd_clocks;
        if let Some(pol) = self.polish.as_mut().filter(|_| switch) {
            let buf = &mut self.w;
            pol.begin(ctx, stats.objective / stats.weight, |ctx| {
                current_model(ctx, t, averaging, buf)?;
                Ok(buf.iter().map(|&v| v as f64).collect())
            })?;
        }
        Ok(stats)
    }

    fn finished(&self) -> bool {
        polish::finished(self.polish.as_ref(), self.progress.finished())
    }

    fn save_state(&self) -> Vec<u8> {
        save_learner(&self.progress, &self.ada, self.polish.as_ref())
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), BoxError> {
        restore_learner(
            state,
            &mut self.progress,
            &mut self.ada,
            self.polish.as_mut(),
        )
    }
}

/// The model the job would save if it ended now, into `w`: the weights,
/// or their average when averaging.
fn current_model(
    ctx: &mut WorkerCtx,
    t: Table<f32>,
    averaging: Averaging,
    w: &mut Vec<f32>,
) -> Result<(), BoxError> {
    ctx.get_dense_into(t, 0, w)?;
    if averaging == Averaging::Poly {
        let avg = ctx.table::<f64>(AVG_TABLE)?;
        sgd::read_average(ctx, avg, [0], w)?;
    }
    Ok(())
}

/// The loss summed over `part` at `w` (features, then the bias), its
/// gradient added to `grad`; in `f64` for the full-batch finish.
fn full_loss_grad(
    loss: Loss,
    data: &Dataset,
    part: &[usize],
    w: &[f64],
    grad: &mut [f64],
) -> (f64, u64) {
    let d = data.dim();
    let x = &data.features;
    let mut sum = 0.0;
    for &i in part {
        let y = if data.labels[i] == 1 { 1.0 } else { -1.0 };
        let (l, dm) = loss.eval64(y * (x.dot64(i, w) + w[d]));
        sum += l;
        if dm != 0.0 {
            x.axpy64(i, dm * y, grad);
            grad[d] += dm * y;
        }
    }
    (sum, part.len() as u64)
}

/// What one clock of mini-batches does.
struct ClockPlan {
    batches: usize,
    bs: usize,
    /// The averaging weight of this clock's iterates, if averaging.
    avg_weight: Option<f64>,
    /// The plain SGD step of this clock (`None`: AdaGrad).
    sgd_lr: Option<f64>,
    l2: f64,
    l1: f64,
}

/// The worker's partition in a shuffled order, drawn round-robin and
/// reshuffled (with the clock's generator) each time it runs out.
struct Order {
    rows: Vec<usize>,
    pos: usize,
}

impl Order {
    fn new(part: &[usize], rng: &mut ChaCha8Rng) -> Self {
        let mut rows = part.to_vec();
        rows.shuffle(rng);
        Order { rows, pos: 0 }
    }

    fn next(&mut self, rng: &mut ChaCha8Rng) -> usize {
        if self.pos == self.rows.len() {
            self.rows.shuffle(rng);
            self.pos = 0;
        }
        self.pos += 1;
        self.rows[self.pos - 1]
    }
}

/// The error of a clock whose weights or loss stopped being finite.
fn diverged(loss_sum: f64, hint: &str) -> BoxError {
    format!(
        "diverged: the weights or the loss became {} in this clock; {hint}",
        if loss_sum.is_nan() { "NaN" } else { "infinite" }
    )
    .into()
}

impl LinearWorker {
    /// One clock the eager way: every mini-batch reads the weights, steps
    /// every coordinate (the L2 shrink, the L1 truncation) and adds the
    /// change to the table, and to the average when averaging.
    #[allow(clippy::too_many_arguments)]
    fn dense_clock(
        &mut self,
        ctx: &mut WorkerCtx,
        t: Table<f32>,
        x: &Features,
        labels: &[u32],
        c: &ClockPlan,
        order: &mut Order,
        rng: &mut ChaCha8Rng,
    ) -> Result<(f64, f64), BoxError> {
        let d = x.ncols();
        let (l1, l2) = (c.l1, c.l2);
        let sgd_lr = c.sgd_lr.unwrap_or(0.0) as f32;
        let (mut loss_sum, mut reg) = (0.0f64, 0.0f64);
        for _ in 0..c.batches {
            ctx.get_dense_into(t, 0, &mut self.w)?;
            reg = 0.5 * l2 * sq_norm(&self.w[..d])
                + l1 * self.w[..d].iter().map(|v| v.abs() as f64).sum::<f64>();
            self.grad.clear();
            self.grad.resize(d + 1, 0.0);
            for _ in 0..c.bs {
                let i = order.next(rng);
                let y = if labels[i] == 1 { 1.0 } else { -1.0 };
                let z = x.dot(i, &self.w) + self.w[d];
                let (l, dm) = self.loss.eval(y * z);
                loss_sum += l as f64;
                if dm != 0.0 {
                    x.axpy(i, dm * y, &mut self.grad);
                    self.grad[d] += dm * y;
                }
            }
            // New weights: a gradient step with the L2 shrink, then the L1
            // truncation; the increment is the difference from what was read.
            let inv = 1.0 / c.bs as f32;
            let mut finite = true;
            for j in 0..=d {
                let wj = self.w[j];
                let g = self.grad[j] * inv;
                let l2j = if j < d { l2 } else { 0.0 };
                let (mut v, step) = if c.sgd_lr.is_none() {
                    self.ada.step(j, wj, g, j == d)
                } else {
                    (wj - sgd_lr * (g + l2j as f32 * wj), sgd_lr as f64)
                };
                if l1 > 0.0 && j < d {
                    v = v.signum() * (v.abs() - (step * l1) as f32).max(0.0);
                }
                finite &= v.is_finite();
                self.grad[j] = v - wj;
            }
            if !finite || !loss_sum.is_finite() {
                return Err(diverged(loss_sum, &self.hint));
            }
            ctx.batch_inc(t, 0, &self.grad)?;
            if let Some(a) = c.avg_weight {
                let avg = ctx.table::<f64>(AVG_TABLE)?;
                self.avg_buf.clear();
                self.avg_buf.extend(
                    self.w
                        .iter()
                        .zip(&self.grad)
                        .map(|(w, g)| a * (w + g) as f64),
                );
                self.avg_buf.push(a);
                ctx.batch_inc(avg, 0, &self.avg_buf)?;
            }
        }
        Ok((loss_sum, reg))
    }

    /// One clock on sparse data without L1, in O(non-zeros of the clock's
    /// mini-batches) plus O(features) once, instead of O(features) per
    /// mini-batch. A coordinate no sample of a mini-batch touches only
    /// shrinks by its L2 factor, which stays the same until the coordinate
    /// is touched again (AdaGrad's step changes only with a gradient; the
    /// SGD step only between clocks), so its shrinks are owed and settled
    /// at once, `w s^m`, when it is next touched and at the end of the
    /// clock; its share of the average is the geometric sum
    /// `a w (s + ... + s^m)`. With one worker this is the same
    /// arithmetic as the eager loop (to rounding). The weights are read
    /// once at the start of the clock (this worker's own updates are
    /// applied locally, which is what the table would return to it) and
    /// the clock's change goes to the table in one increment.
    #[allow(clippy::too_many_arguments)]
    fn sparse_clock(
        &mut self,
        ctx: &mut WorkerCtx,
        t: Table<f32>,
        csr: &Csr,
        labels: &[u32],
        c: &ClockPlan,
        order: &mut Order,
        rng: &mut ChaCha8Rng,
    ) -> Result<(f64, f64), BoxError> {
        let d = csr.ncols;
        ctx.get_dense_into(t, 0, &mut self.w)?;
        let reg = 0.5 * c.l2 * sq_norm(&self.w[..d]);
        let mut lazy = std::mem::take(&mut self.lazy);
        lazy.start(&self.w, d, c.avg_weight.is_some());
        let ada = &mut self.ada;
        let decay = |ada: &Adagrad, j: usize| match c.sgd_lr {
            Some(lr) => 1.0 - lr * c.l2,
            None => ada.shrink(j),
        };
        let mut loss_sum = 0.0f64;
        let inv = 1.0 / c.bs as f64;
        let mut finite = true;
        for b in 0..c.batches as u32 {
            lazy.touched.clear();
            lazy.rows.clear();
            for _ in 0..c.bs {
                let i = order.next(rng);
                lazy.rows.push(i);
                for &j in csr.row(i).0 {
                    if lazy.mark[j as usize] != b + 1 {
                        lazy.mark[j as usize] = b + 1;
                        lazy.touched.push(j);
                    }
                }
            }
            for k in 0..lazy.touched.len() {
                let j = lazy.touched[k] as usize;
                lazy.settle(&mut self.w, j, b, decay(ada, j), c.avg_weight);
            }
            let mut gbias = 0.0f64;
            for k in 0..lazy.rows.len() {
                let i = lazy.rows[k];
                let y = if labels[i] == 1 { 1.0 } else { -1.0 };
                let (idx, val) = csr.row(i);
                let z = idx
                    .iter()
                    .zip(val)
                    .map(|(&j, &v)| v * self.w[j as usize])
                    .sum::<f32>()
                    + self.w[d];
                let (l, dm) = self.loss.eval(y * z);
                loss_sum += l as f64;
                if dm != 0.0 {
                    let g = (dm * y) as f64;
                    for (&j, &v) in idx.iter().zip(val) {
                        lazy.grad[j as usize] += g * v as f64;
                    }
                    gbias += g;
                }
            }
            for k in 0..lazy.touched.len() {
                let j = lazy.touched[k] as usize;
                let (wj, g) = (self.w[j], lazy.grad[j] * inv);
                lazy.grad[j] = 0.0;
                let v = match c.sgd_lr {
                    Some(lr) => (wj as f64 - lr * (g + c.l2 * wj as f64)) as f32,
                    None => ada.step(j, wj, g as f32, false).0,
                };
                finite &= v.is_finite();
                self.w[j] = v;
                lazy.since[j] = b + 1;
                if let Some(a) = c.avg_weight {
                    lazy.avg[j] += a * v as f64;
                }
            }
            let g = gbias * inv;
            self.w[d] = match c.sgd_lr {
                Some(lr) => (self.w[d] as f64 - lr * g) as f32,
                None => ada.step(d, self.w[d], g as f32, true).0,
            };
            finite &= self.w[d].is_finite();
            if let Some(a) = c.avg_weight {
                lazy.avg[d] += a * self.w[d] as f64;
                lazy.avg[d + 1] += a;
            }
            if !finite || !loss_sum.is_finite() {
                return Err(diverged(loss_sum, &self.hint));
            }
        }
        let end = c.batches as u32;
        for j in 0..d {
            lazy.settle(&mut self.w, j, end, decay(ada, j), c.avg_weight);
        }
        // Owed shrinks can overflow too (plain SGD with lr · l2 > 2).
        if !self.w.iter().all(|v| v.is_finite()) {
            return Err(diverged(loss_sum, &self.hint));
        }
        self.grad.clear();
        self.grad
            .extend(self.w.iter().zip(&lazy.base).map(|(w, w0)| w - w0));
        ctx.batch_inc(t, 0, &self.grad)?;
        if c.avg_weight.is_some() {
            let avg = ctx.table::<f64>(AVG_TABLE)?;
            ctx.batch_inc(avg, 0, &lazy.avg)?;
        }
        self.lazy = lazy;
        Ok((loss_sum, reg))
    }
}

/// Scratch space of [`LinearWorker::sparse_clock`].
#[derive(Default)]
struct Lazy {
    /// The weights read at the start of the clock.
    base: Vec<f32>,
    /// Mini-batches of the clock whose shrink coordinate j has had.
    since: Vec<u32>,
    /// `b + 1` when mini-batch `b` touched the coordinate.
    mark: Vec<u32>,
    touched: Vec<u32>,
    rows: Vec<usize>,
    /// The loss gradient of the mini-batch (touched coordinates only).
    grad: Vec<f64>,
    /// The clock's weighted sums of iterates (features, bias, weight).
    avg: Vec<f64>,
}

impl Lazy {
    fn start(&mut self, w: &[f32], d: usize, averaging: bool) {
        self.base.clear();
        self.base.extend_from_slice(w);
        self.since.clear();
        self.since.resize(d, 0);
        self.mark.clear();
        self.mark.resize(d, 0);
        self.grad.clear();
        self.grad.resize(d, 0.0);
        self.avg.clear();
        if averaging {
            self.avg.resize(d + 2, 0.0);
        }
    }

    /// Applies the shrinks coordinate `j` owes for mini-batches
    /// `since[j]..upto`, and their iterates' share of the average.
    #[inline]
    fn settle(&mut self, w: &mut [f32], j: usize, upto: u32, s: f64, avg: Option<f64>) {
        let m = upto - self.since[j];
        if m == 0 {
            return;
        }
        self.since[j] = upto;
        let wj = w[j] as f64;
        if wj == 0.0 || s == 1.0 {
            if let Some(a) = avg {
                self.avg[j] += a * wj * m as f64;
            }
            return;
        }
        let sm = s.powi(m as i32);
        if let Some(a) = avg {
            // s + s² + ... + s^m
            self.avg[j] += a * wj * s * (1.0 - sm) / (1.0 - s);
        }
        w[j] = (wj * sm) as f32;
    }
}

fn sq_norm(w: &[f32]) -> f64 {
    w.iter().map(|v| (*v as f64) * (*v as f64)).sum()
}

/// A trained binary linear model.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearModel {
    pub weight: Vec<f32>,
    pub bias: f32,
    /// `[negative, positive]` labels as written in the training data.
    pub class_names: Vec<String>,
}

impl LinearModel {
    pub fn from_file(file: &ModelFile) -> Result<Self, ModelError> {
        let w = file.tensor("weight")?;
        let b = file.tensor("bias")?;
        let class_names = file.class_names()?;
        Ok(LinearModel {
            weight: w.data.clone(),
            bias: b.data.first().copied().unwrap_or(0.0),
            class_names,
        })
    }

    /// The decision value of sample `i` (positive class when > 0).
    pub fn decision(&self, x: &Features, i: usize) -> f32 {
        x.dot(i, &self.weight) + self.bias
    }

    pub fn accuracy(&self, data: &Dataset) -> f64 {
        if data.is_empty() {
            return 0.0;
        }
        let correct = (0..data.len())
            .filter(|&i| (self.decision(&data.features, i) > 0.0) == (data.labels[i] == 1))
            .count();
        correct as f64 / data.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_and_derivatives() {
        let (l, d) = Loss::Logistic.eval(0.0);
        assert!((l - std::f32::consts::LN_2).abs() < 1e-6 && (d + 0.5).abs() < 1e-6);
        let (l, _) = Loss::Logistic.eval(-100.0);
        assert!(
            (l - 100.0).abs() < 1e-3,
            "stable for large negative margins: {l}"
        );
        assert_eq!(Loss::Hinge.eval(2.0), (0.0, 0.0));
        assert_eq!(Loss::Hinge.eval(0.5), (0.5, -1.0));
    }
}
