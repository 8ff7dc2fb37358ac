//! Multi-class logistic regression (softmax regression) trained by
//! data-parallel mini-batch SGD over a Bosen table, as Petuum's MLR app.
//!
//! The model is one dense `f32` table `weights` with one row per class;
//! each row holds the class's weight vector followed by its bias. Every
//! worker owns a contiguous partition of the training set. In each clock it
//! shuffles its partition with the clock's RNG stream and runs
//! `batches_per_clock` mini-batches (default: one pass over the partition).
//! For each mini-batch it reads the weights under the job's consistency
//! model (its own updates are always visible, other workers' within the
//! staleness bound), computes the gradient of the mean cross-entropy plus
//! `l2/2 ||W||²`, and increments the rows by `-lr_c * gradient`, where
//! `lr = learning_rate / (1 + decay * e)` with `e` the passes over the
//! worker's data made so far.
//!
//! The objective reported per clock is the mean training cross-entropy of
//! the clock's mini-batches, measured before each mini-batch's update.

mod params;

pub use params::{Resolved, SoftmaxParams};

use crate::data::{Dataset, Features};
use crate::model::ModelFile;
use crate::polish::{self, Polish};
use crate::sgd::{
    self, restore_learner, save_learner, Adagrad, Optimizer, Progress, RunStatus, Scaler,
};
use ndarray::{s, Array2, ArrayView2, Axis};
use petuum_core::algorithm::{
    AlgoWorker, Algorithm, BoxError, ModelSummary, StepStats, TableDecl, TableReader,
};
use petuum_core::{ElemType, Row, RowKind, Table, WorkerCtx};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::Arc;

/// Registry name.
pub const NAME: &str = "multiclass_lr";
const TABLE: &str = "weights";
/// Sums of iterates for the polynomial-decay average (`sgd::avg_weight`):
/// row `k` holds class `k`'s weighted weights and bias, then the summed
/// weight.
const AVG_TABLE: &str = "weights_avg";

/// How the model's inputs are read and scaled, recorded in the model so
/// that evaluation reads data the same way.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    /// `idx_u8`, `libsvm` or `csv`.
    pub format: String,
    /// Raw values are multiplied by this before the model (1/255 for IDX).
    pub scale: f32,
    /// CSV: the label column.
    pub label_column: Option<String>,
    /// CSV: how the training file's columns became features.
    pub csv: Option<crate::data::csv::Encoding>,
}

impl InputSpec {
    /// Records how inputs are read in a model's metadata.
    pub fn record(&self, file: &mut ModelFile) {
        file.set("input_scale", self.scale);
        file.set("input_format", &self.format);
        if let Some(col) = &self.label_column {
            file.set("label_column", col);
        }
        if let Some(e) = &self.csv {
            file.set("csv_encoding", e.to_json());
        }
    }
}

/// The algorithm with its data loaded.
pub struct MulticlassLr {
    params: SoftmaxParams,
    cfg: Resolved,
    train: Arc<Dataset>,
    test: Option<Arc<Dataset>>,
    num_classes: u32,
    input: InputSpec,
    /// The feature scaling, folded into the saved weights.
    scaler: Option<Scaler>,
    clocks: u64,
    hint: Arc<str>,
}

impl MulticlassLr {
    pub fn new(
        params: SoftmaxParams,
        mut train: Dataset,
        test: Option<Dataset>,
        input: InputSpec,
        clocks: u64,
    ) -> Self {
        let num_classes = train.num_classes.max(2);
        let cfg = params.resolve(train.len(), num_classes);
        if params.standardize {
            // As before `scaling` existed: sparse data densified and centred.
            if let Features::Sparse(_) = train.features {
                train.features = Features::Dense(train.features.to_dense());
            }
        }
        let scaler = Scaler::fit(&train.features, cfg.steps.scaling);
        let hint = sgd::divergence_hint(&train.features, scaler.is_some(), &cfg.steps);
        // The test set stays as read: it is scored by the saved model, whose
        // weights have the scaling folded in (`export`).
        if let Some(s) = &scaler {
            s.apply(&mut train.features);
        }
        if let Features::Sparse(_) = train.features {
            // The worker builds dense mini-batches; expand once here.
            train.features = Features::Dense(train.features.to_dense());
        }
        MulticlassLr {
            params,
            cfg,
            train: Arc::new(train),
            test: test.map(Arc::new),
            num_classes,
            input,
            scaler,
            clocks,
            hint: hint.into(),
        }
    }

    fn dim(&self) -> usize {
        self.train.dim()
    }
}

impl Algorithm for MulticlassLr {
    fn name(&self) -> &'static str {
        NAME
    }

    fn objective_name(&self) -> &'static str {
        "cross-entropy"
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl {
                name: TABLE.into(),
                kind: RowKind::Dense,
                elem: ElemType::F32,
                columns: self.dim() as u32 + 1,
            },
            TableDecl {
                name: AVG_TABLE.into(),
                kind: RowKind::Dense,
                elem: ElemType::F64,
                columns: self.dim() as u32 + 2,
            },
            sgd::progress_table(),
            polish::polish_table(self.num_classes as usize * (self.dim() + 1)),
        ]
    }

    fn worker(&self, worker: u32, workers: u32) -> Result<Box<dyn AlgoWorker>, BoxError> {
        let n = self.train.len();
        let part = crate::data::partition(n, worker, workers)?;
        let c = self.num_classes as usize;
        let stride = self.dim() + 1;
        let polish = (self.cfg.polish && c * stride < polish::MAX_COORDS).then(|| {
            let l2 = (0..c * stride)
                .map(|j| {
                    if j % stride == self.dim() {
                        0.0
                    } else {
                        self.cfg.steps.l2
                    }
                })
                .collect();
            Polish::new(l2, self.cfg.steps.stop.tol, n as u64)
        });
        let mut progress = Progress::default();
        progress.defer_status = polish.is_some();
        Ok(Box::new(SoftmaxWorker {
            params: self.params.clone(),
            cfg: self.cfg.clone(),
            data: self.train.clone(),
            part,
            classes: c,
            w: Array2::zeros((c, self.dim() + 1)),
            row_buf: Vec::new(),
            delta: Vec::new(),
            avg_buf: Vec::new(),
            table: None,
            ada: if self.cfg.steps.optimizer == Optimizer::Adagrad {
                Adagrad::new(
                    c * (self.dim() + 1),
                    self.cfg.steps.learning_rate,
                    self.cfg.steps.l2,
                )
            } else {
                Adagrad::default()
            },
            progress,
            hint: self.hint.clone(),
            polish,
            sgd_clocks: polish::sgd_clocks(self.clocks),
        }))
    }

    fn export(&self, tables: &TableReader<'_>, path: &Path) -> Result<ModelSummary, BoxError> {
        let d = self.dim();
        let c = self.num_classes as usize;
        let status = RunStatus::read(tables, self.clocks)?;
        let mut weight = Vec::with_capacity(c * d);
        let mut bias = Vec::with_capacity(c);
        tables.prefetch(TABLE, 0..c as u64)?;
        for k in 0..c {
            let mut row = match tables.read::<f32>(TABLE, k as u64)? {
                Row::Dense(v) => v,
                r @ Row::Sparse(_) => r.to_dense(d as u32 + 1),
            };
            if self.cfg.average {
                let mut sum = vec![0f64; d + 2];
                let s = tables
                    .read::<f64>(AVG_TABLE, k as u64)?
                    .to_dense(d as u32 + 2);
                sum.iter_mut().zip(&s).for_each(|(a, b)| *a += b);
                if sum[d + 1] > 0.0 {
                    row = sum[..=d].iter().map(|v| (v / sum[d + 1]) as f32).collect();
                }
            }
            weight.extend_from_slice(&row[..d]);
            bias.push(row[d]);
        }
        let finished = polish::read_result(tables, c * (d + 1))?;
        if let Some(w) = &finished {
            for (k, wk) in w.chunks_exact(d + 1).enumerate() {
                weight[k * d..(k + 1) * d]
                    .iter_mut()
                    .zip(wk)
                    .for_each(|(a, &b)| *a = b as f32);
                bias[k] = wk[d] as f32;
            }
        }
        let mut model = SoftmaxModel {
            weight: Array2::from_shape_vec((c, d), weight)?,
            bias,
            class_names: self.train.class_names.clone(),
        };
        let mut metrics = Vec::new();
        let train_accuracy = model.accuracy(&self.train);
        if let Some(s) = &self.scaler {
            // Fold the scaling into the weights: the saved model reads raw inputs.
            for k in 0..c {
                let mut row = model.weight.row_mut(k);
                s.fold(
                    row.as_slice_mut().expect("standard layout"),
                    &mut model.bias[k],
                );
            }
        }
        if let Some(test) = &self.test {
            // Scored by the model as saved, exactly as `petuumd eval` scores it.
            metrics.push(("test_accuracy".to_string(), model.accuracy(test)));
        }
        metrics.push(("train_accuracy".to_string(), train_accuracy));
        status.metrics(&mut metrics);
        metrics.push((
            "full_batch_finish".to_string(),
            finished.is_some() as u8 as f64,
        ));
        sgd::check_majority(NAME, &self.train, train_accuracy, &mut metrics);
        let mut file = ModelFile::new(NAME);
        file.set("num_classes", c);
        file.set("num_features", d);
        self.input.record(&mut file);
        file.set("class_names", serde_json::to_string(&model.class_names)?);
        file.set("params", serde_json::to_string(&self.params)?);
        if let Some(s) = &self.scaler {
            file.set("scaling_folded", s.kind);
        }
        file.set_metrics(&metrics);
        file.add_tensor(
            "weight",
            vec![c, d],
            model.weight.into_raw_vec_and_offset().0,
        );
        file.add_tensor("bias", vec![c], model.bias);
        let bytes = file.save(path)?;
        Ok(ModelSummary { bytes, metrics })
    }
}

struct SoftmaxWorker {
    params: SoftmaxParams,
    cfg: Resolved,
    data: Arc<Dataset>,
    part: Vec<usize>,
    classes: usize,
    /// Weights as read for the current mini-batch (classes × (dim + 1)).
    w: Array2<f32>,
    row_buf: Vec<f32>,
    delta: Vec<f32>,
    avg_buf: Vec<f64>,
    table: Option<Table<f32>>,
    ada: Adagrad,
    progress: Progress,
    hint: Arc<str>,
    /// The full-batch finish, when the automatic configuration has one.
    polish: Option<Polish>,
    /// Clocks after which the finish starts even if SGD has not plateaued.
    sgd_clocks: u64,
}

impl SoftmaxWorker {
    /// The model the job would save if it ended now, into `self.w`: the
    /// weights, or their average when averaging.
    fn current_model(&mut self, ctx: &mut WorkerCtx, t: Table<f32>) -> Result<(), BoxError> {
        self.read_weights(ctx, t)?;
        if self.cfg.average {
            let avg = ctx.table::<f64>(AVG_TABLE)?;
            for k in 0..self.classes {
                let mut row = self.w.row_mut(k);
                sgd::read_average(
                    ctx,
                    avg,
                    [k as u64],
                    row.as_slice_mut().expect("standard layout"),
                )?;
            }
        }
        Ok(())
    }

    fn read_weights(&mut self, ctx: &mut WorkerCtx, t: Table<f32>) -> Result<(), BoxError> {
        ctx.prefetch(t, 0..self.classes as u64)?;
        for k in 0..self.classes {
            ctx.get_dense_into(t, k as u64, &mut self.row_buf)?;
            self.w
                .row_mut(k)
                .as_slice_mut()
                .expect("standard layout")
                .copy_from_slice(&self.row_buf);
        }
        Ok(())
    }
}

impl AlgoWorker for SoftmaxWorker {
    fn step(&mut self, ctx: &mut WorkerCtx, rng: &mut ChaCha8Rng) -> Result<StepStats, BoxError> {
        let t = match self.table {
            Some(t) => t,
            None => *self.table.insert(ctx.table::<f32>(TABLE)?),
        };
        if let Some(pol) = self.polish.as_mut().filter(|p| p.active()) {
            let (data, part, classes) = (&self.data, &self.part, self.classes);
            return pol.step(ctx, part.len(), &mut |w, g| {
                full_loss_grad(data, part, classes, w, g)
            });
        }
        let p = &self.params;
        let c = ctx.clock_now();
        let bs = p.batch_size.min(self.part.len());
        let batches = p.batches_per_clock.unwrap_or(self.part.len().div_ceil(bs));
        // Decay by passes over the data, so the schedule does not depend on
        // how many clocks a pass is split into.
        let epochs = (c as f64 * (batches * bs) as f64) / self.part.len() as f64;
        let lr = (self.cfg.steps.learning_rate / (1.0 + p.decay * epochs)) as f32;
        let d = self.data.dim();
        // With the stop rule on, the objective is measured exactly on the
        // partition at the weights the clock starts from (the running loss
        // of the mini-batches is too noisy to tell a plateau).
        let exact = if self.cfg.steps.stop.tol > 0.0 {
            self.current_model(ctx, t)?;
            Some(self.exact_objective())
        } else {
            None
        };
        let mut order = self.part.clone();
        order.shuffle(rng);
        let mut x = Array2::<f32>::zeros((bs, d));
        let mut y = vec![0usize; bs];
        let mut loss_sum = 0.0f64;
        let mut seen = 0u64;
        let mut pos = 0;
        for _ in 0..batches {
            for (i, yi) in y.iter_mut().enumerate() {
                if pos == order.len() {
                    order.shuffle(rng);
                    pos = 0;
                }
                let s = order[pos];
                pos += 1;
                self.data
                    .features
                    .row_into(s, x.row_mut(i).into_slice().expect("standard layout"));
                *yi = self.data.labels[s] as usize;
            }
            self.read_weights(ctx, t)?;
            loss_sum += self.sgd_update(ctx, t, x.view(), &y, lr, c)?;
            seen += bs as u64;
            if !loss_sum.is_finite() {
                return Err(format!(
                    "diverged: the cross-entropy became {loss_sum} in this clock; {}",
                    self.hint
                )
                .into());
            }
        }
        let stats = match exact {
            Some(objective) => StepStats {
                objective,
                weight: self.part.len() as f64,
                samples: seen,
                ..Default::default()
            },
            None => StepStats {
                objective: loss_sum,
                weight: seen as f64,
                samples: seen,
                ..Default::default()
            },
        };
        let hint = self.hint.clone();
        let rule = polish::stop_rule(self.polish.as_ref(), self.cfg.steps.stop);
        self.progress
            .after_step(ctx, rule, &stats, &|| hint.to_string())?;
        let switch = self.progress.finished() || c + 1 >= self.sgd_clocks;
        if switch && self.polish.as_ref().is_some_and(|p| !p.active()) {
            let mut pol = self.polish.take().expect("checked");
            let started = pol.begin(ctx, stats.objective / stats.weight, |ctx| {
                self.current_model(ctx, t)?;
                Ok(self.w.iter().map(|&v| v as f64).collect())
            });
            self.polish = Some(pol);
            started?;
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

/// The cross-entropy summed over `part` at `w` (class-major rows of
/// features then bias), its gradient added to `grad`; in `f64` for the
/// full-batch finish.
fn full_loss_grad(
    data: &Dataset,
    part: &[usize],
    classes: usize,
    w: &[f64],
    grad: &mut [f64],
) -> (f64, u64) {
    let d = data.dim();
    let stride = d + 1;
    let x = &data.features;
    let mut z = vec![0f64; classes];
    let mut sum = 0.0;
    for &i in part {
        for (k, zk) in z.iter_mut().enumerate() {
            let wk = &w[k * stride..(k + 1) * stride];
            *zk = x.dot64(i, &wk[..d]) + wk[d];
        }
        let max = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let total: f64 = z.iter().map(|v| (v - max).exp()).sum();
        let y = data.labels[i] as usize;
        sum += total.ln() - (z[y] - max);
        for (k, zk) in z.iter().enumerate() {
            let p = (zk - max).exp() / total - if k == y { 1.0 } else { 0.0 };
            let gk = &mut grad[k * stride..(k + 1) * stride];
            x.axpy64(i, p, &mut gk[..d]);
            gk[d] += p;
        }
    }
    (sum, part.len() as u64)
}

impl SoftmaxWorker {
    /// Summed cross-entropy of the partition at `self.w`, plus the L2
    /// term times the partition's size.
    fn exact_objective(&self) -> f64 {
        let d = self.data.dim();
        let Features::Dense(a) = &self.data.features else {
            unreachable!("multiclass_lr densifies its data")
        };
        let mut logits = vec![0f32; self.classes];
        let mut loss = 0.0f64;
        for &i in &self.part {
            let xi = a.row(i);
            let xi = xi.as_slice().expect("standard layout");
            for (k, l) in logits.iter_mut().enumerate() {
                let wk = self.w.row(k);
                let wk = wk.as_slice().expect("standard layout");
                *l = xi.iter().zip(&wk[..d]).map(|(x, w)| x * w).sum::<f32>() + wk[d];
            }
            let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let z: f64 = logits.iter().map(|&v| ((v - max) as f64).exp()).sum();
            loss += z.ln() - (logits[self.data.labels[i] as usize] - max) as f64;
        }
        let reg: f64 = self
            .w
            .slice(s![.., ..d])
            .iter()
            .map(|&v| (v as f64) * (v as f64))
            .sum();
        loss + 0.5 * self.cfg.steps.l2 * reg * self.part.len() as f64
    }

    /// One mini-batch: returns the summed loss before the update.
    fn sgd_update(
        &mut self,
        ctx: &mut WorkerCtx,
        t: Table<f32>,
        x: ArrayView2<'_, f32>,
        y: &[usize],
        lr: f32,
        clock: u64,
    ) -> Result<f64, BoxError> {
        let d = x.ncols();
        let bs = x.nrows();
        let wd = self.w.slice(s![.., ..d]);
        let bias = self.w.column(d);
        let mut probs = x.dot(&wd.t());
        probs += &bias.view().insert_axis(Axis(0));
        let mut loss = 0.0f64;
        for (i, mut row) in probs.rows_mut().into_iter().enumerate() {
            let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            row.mapv_inplace(|v| (v - max).exp());
            let z: f32 = row.sum();
            row /= z;
            loss -= (row[y[i]].max(1e-30) as f64).ln();
            row[y[i]] -= 1.0; // gradient of the loss w.r.t. the logits
        }
        let grad_w = probs.t().dot(&x); // classes × d
        let inv = 1.0 / bs as f32;
        let l2 = self.cfg.steps.l2;
        let adagrad = self.cfg.steps.optimizer == Optimizer::Adagrad;
        let avg = if self.cfg.average {
            Some((ctx.table::<f64>(AVG_TABLE)?, sgd::avg_weight(clock)))
        } else {
            None
        };
        self.delta.resize(d + 1, 0.0);
        for k in 0..self.classes {
            let g = grad_w.row(k);
            let wk = self.w.row(k);
            let gb = probs.column(k).sum() * inv;
            if adagrad {
                let off = k * (d + 1);
                for j in 0..d {
                    let (v, _) = self.ada.step(off + j, wk[j], g[j] * inv, false);
                    self.delta[j] = v - wk[j];
                }
                let (v, _) = self.ada.step(off + d, wk[d], gb, true);
                self.delta[d] = v - wk[d];
            } else {
                let l2 = l2 as f32;
                for j in 0..d {
                    self.delta[j] = -lr * (g[j] * inv + l2 * wk[j]);
                }
                self.delta[d] = -lr * gb;
            }
            if self.delta.iter().any(|v| !v.is_finite()) {
                return Err(format!(
                    "diverged: the weights of class {k} became non-finite in this clock; {}",
                    self.hint
                )
                .into());
            }
            ctx.batch_inc(t, k as u64, &self.delta)?;
            if let Some((avg, a)) = avg {
                self.avg_buf.clear();
                self.avg_buf
                    .extend(wk.iter().zip(&self.delta).map(|(w, g)| a * (w + g) as f64));
                self.avg_buf.push(a);
                ctx.batch_inc(avg, k as u64, &self.avg_buf)?;
            }
        }
        Ok(loss)
    }
}

/// A trained softmax model, for prediction.
#[derive(Clone, Debug)]
pub struct SoftmaxModel {
    pub weight: Array2<f32>,
    pub bias: Vec<f32>,
    /// Label of each class as written in the training data.
    pub class_names: Vec<String>,
}

impl SoftmaxModel {
    /// Loads a model written by [`MulticlassLr`].
    pub fn from_file(file: &ModelFile) -> Result<Self, crate::model::ModelError> {
        let w = file.tensor("weight")?;
        let b = file.tensor("bias")?;
        let bad = |reason: String| crate::model::ModelError::Format {
            path: file.path.clone(),
            reason,
        };
        if w.shape.len() != 2 || b.shape != [w.shape[0]] {
            return Err(bad(format!(
                "weight {:?} and bias {:?} do not match",
                w.shape, b.shape
            )));
        }
        let class_names = file.class_names()?;
        Ok(SoftmaxModel {
            weight: Array2::from_shape_vec((w.shape[0], w.shape[1]), w.data.clone())
                .map_err(|e| bad(e.to_string()))?,
            bias: b.data.clone(),
            class_names,
        })
    }

    /// Predicted class of sample `i`.
    pub fn predict(&self, x: &Features, i: usize) -> u32 {
        let mut best = (0u32, f32::NEG_INFINITY);
        for (k, b) in self.bias.iter().enumerate() {
            let v = x.dot_wide(i, self.weight.row(k).as_slice().expect("standard layout")) + b;
            if v > best.1 {
                best = (k as u32, v);
            }
        }
        best.0
    }

    /// Fraction of samples classified correctly.
    pub fn accuracy(&self, data: &Dataset) -> f64 {
        if data.is_empty() {
            return 0.0;
        }
        let correct = (0..data.len())
            .filter(|&i| self.predict(&data.features, i) == data.labels[i])
            .count();
        correct as f64 / data.len() as f64
    }
}
