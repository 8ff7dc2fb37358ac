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

pub use params::SoftmaxParams;

use crate::data::{Dataset, Features};
use crate::model::ModelFile;
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
}

impl InputSpec {
    /// Records how inputs are read in a model's metadata.
    pub fn record(&self, file: &mut ModelFile) {
        file.set("input_scale", self.scale);
        file.set("input_format", &self.format);
        if let Some(col) = &self.label_column {
            file.set("label_column", col);
        }
    }
}

/// The algorithm with its data loaded.
pub struct MulticlassLr {
    params: SoftmaxParams,
    train: Arc<Dataset>,
    test: Option<Arc<Dataset>>,
    num_classes: u32,
    input: InputSpec,
    /// Column means and deviations when `standardize` is on.
    standardizer: Option<(Vec<f32>, Vec<f32>)>,
}

impl MulticlassLr {
    pub fn new(
        params: SoftmaxParams,
        mut train: Dataset,
        mut test: Option<Dataset>,
        input: InputSpec,
    ) -> Self {
        let num_classes = train.num_classes.max(2);
        let standardizer = params.standardize.then(|| {
            let (mean, std) = train.features.column_stats();
            train.features.standardize(&mean, &std);
            if let Some(t) = &mut test {
                t.features.standardize(&mean, &std);
            }
            (mean, std)
        });
        if let Features::Sparse(_) = train.features {
            // The worker builds dense mini-batches; expand once here.
            train.features = Features::Dense(train.features.to_dense());
        }
        MulticlassLr {
            params,
            train: Arc::new(train),
            test: test.map(Arc::new),
            num_classes,
            input,
            standardizer,
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
        vec![TableDecl {
            name: TABLE.into(),
            kind: RowKind::Dense,
            elem: ElemType::F32,
            columns: self.dim() as u32 + 1,
        }]
    }

    fn worker(&self, worker: u32, workers: u32) -> Result<Box<dyn AlgoWorker>, BoxError> {
        let n = self.train.len();
        let part = crate::data::partition(n, worker, workers)?;
        Ok(Box::new(SoftmaxWorker {
            params: self.params.clone(),
            data: self.train.clone(),
            part,
            classes: self.num_classes as usize,
            w: Array2::zeros((self.num_classes as usize, self.dim() + 1)),
            row_buf: Vec::new(),
            delta: Vec::new(),
            table: None,
        }))
    }

    fn export(&self, tables: &TableReader<'_>, path: &Path) -> Result<ModelSummary, BoxError> {
        let d = self.dim();
        let c = self.num_classes as usize;
        let mut weight = Vec::with_capacity(c * d);
        let mut bias = Vec::with_capacity(c);
        for k in 0..c {
            let row = match tables.read::<f32>(TABLE, k as u64)? {
                Row::Dense(v) => v,
                r @ Row::Sparse(_) => r.to_dense(d as u32 + 1),
            };
            weight.extend_from_slice(&row[..d]);
            bias.push(row[d]);
        }
        let mut model = SoftmaxModel {
            weight: Array2::from_shape_vec((c, d), weight)?,
            bias,
            class_names: self.train.class_names.clone(),
        };
        let mut metrics = Vec::new();
        if let Some(test) = &self.test {
            metrics.push(("test_accuracy".to_string(), model.accuracy(test)));
        }
        metrics.push(("train_accuracy".to_string(), model.accuracy(&self.train)));
        if let Some((mean, std)) = &self.standardizer {
            // Fold (x - mean) / std into the weights: the saved model reads raw inputs.
            for k in 0..c {
                let mut shift = 0.0f32;
                for j in 0..d {
                    let w = model.weight[[k, j]] / std[j];
                    model.weight[[k, j]] = w;
                    shift += w * mean[j];
                }
                model.bias[k] -= shift;
            }
        }
        let mut file = ModelFile::new(NAME);
        file.set("num_classes", c);
        file.set("num_features", d);
        self.input.record(&mut file);
        file.set("class_names", serde_json::to_string(&model.class_names)?);
        file.set("params", serde_json::to_string(&self.params)?);
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
    data: Arc<Dataset>,
    part: Vec<usize>,
    classes: usize,
    /// Weights as read for the current mini-batch (classes × (dim + 1)).
    w: Array2<f32>,
    row_buf: Vec<f32>,
    delta: Vec<f32>,
    table: Option<Table<f32>>,
}

impl SoftmaxWorker {
    fn read_weights(&mut self, ctx: &mut WorkerCtx, t: Table<f32>) -> Result<(), BoxError> {
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
        let p = &self.params;
        let bs = p.batch_size.min(self.part.len());
        let batches = p.batches_per_clock.unwrap_or(self.part.len().div_ceil(bs));
        // Decay by passes over the data, so the schedule does not depend on
        // how many clocks a pass is split into.
        let epochs = (ctx.clock_now() as f64 * (batches * bs) as f64) / self.part.len() as f64;
        let lr = (p.learning_rate / (1.0 + p.decay * epochs)) as f32;
        let mut order = self.part.clone();
        order.shuffle(rng);
        let d = self.data.dim();
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
            loss_sum += self.sgd_update(ctx, t, x.view(), &y, lr)?;
            seen += bs as u64;
        }
        Ok(StepStats {
            objective: loss_sum,
            weight: seen as f64,
            samples: seen,
        })
    }
}

impl SoftmaxWorker {
    /// One mini-batch: returns the summed loss before the update.
    fn sgd_update(
        &mut self,
        ctx: &mut WorkerCtx,
        t: Table<f32>,
        x: ArrayView2<'_, f32>,
        y: &[usize],
        lr: f32,
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
        let l2 = self.params.l2 as f32;
        self.delta.resize(d + 1, 0.0);
        for k in 0..self.classes {
            let g = grad_w.row(k);
            let wk = self.w.row(k);
            for j in 0..d {
                self.delta[j] = -lr * (g[j] * inv + l2 * wk[j]);
            }
            self.delta[d] = -lr * probs.column(k).sum() * inv;
            ctx.batch_inc(t, k as u64, &self.delta)?;
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
            let v = x.dot(i, self.weight.row(k).as_slice().expect("standard layout")) + b;
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
