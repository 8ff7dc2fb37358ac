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
//! Limitation: with several workers, L1 truncation is applied by each
//! worker to its own view, so concurrent truncations of one weight overlap
//! and the global weights are much less sparse than with one worker.

mod params;

pub use params::LinearParams;

use crate::data::{Dataset, Features};
use crate::model::{ModelError, ModelFile};
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
/// Sum of the iterates seen after `average_from` (features, bias, count).
const AVG_TABLE: &str = "weights_avg";

/// The loss a binary linear model minimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    Logistic,
    Hinge,
}

impl Loss {
    fn name(self) -> &'static str {
        match self {
            Loss::Logistic => LOGISTIC,
            Loss::Hinge => SVM,
        }
    }

    /// Loss at margin `m = y z` and its derivative with respect to `m`.
    #[inline]
    fn eval(self, m: f32) -> (f32, f32) {
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
        }
    }
}

/// A binary linear classifier with its data loaded.
pub struct BinaryLinear {
    loss: Loss,
    params: LinearParams,
    train: Arc<Dataset>,
    test: Option<Arc<Dataset>>,
    input: InputSpec,
    standardizer: Option<(Vec<f32>, Vec<f32>)>,
    clocks: u64,
}

impl BinaryLinear {
    /// Fails unless the data have exactly two classes.
    pub fn new(
        loss: Loss,
        params: LinearParams,
        mut train: Dataset,
        mut test: Option<Dataset>,
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
        let standardizer = (params.standardize && matches!(train.features, Features::Dense(_)))
            .then(|| {
                let (mean, std) = train.features.column_stats();
                train.features.standardize(&mean, &std);
                if let Some(t) = &mut test {
                    t.features.standardize(&mean, &std);
                }
                (mean, std)
            });
        Ok(BinaryLinear {
            loss,
            params,
            train: Arc::new(train),
            test: test.map(Arc::new),
            input,
            standardizer,
            clocks,
        })
    }

    fn average_from(&self) -> f64 {
        self.params.average_from.unwrap_or(match self.loss {
            Loss::Hinge => 0.5,
            Loss::Logistic => 1.0,
        })
    }

    fn averaging(&self) -> bool {
        self.params.l1 == 0.0 && self.average_from() < 1.0
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
        ]
    }

    fn worker(&self, worker: u32, workers: u32) -> Result<Box<dyn AlgoWorker>, BoxError> {
        let n = self.train.len();
        let part = crate::data::partition(n, worker, workers)?;
        Ok(Box::new(LinearWorker {
            loss: self.loss,
            params: self.params.clone(),
            data: self.train.clone(),
            part,
            w: Vec::new(),
            grad: Vec::new(),
            table: None,
            average_after: self
                .averaging()
                .then(|| (self.clocks as f64 * self.average_from()).floor() as u64),
            avg_buf: Vec::new(),
        }))
    }

    fn export(&self, tables: &TableReader<'_>, path: &Path) -> Result<ModelSummary, BoxError> {
        let d = self.train.dim();
        let mut row = match tables.read::<f32>(TABLE, 0)? {
            Row::Dense(v) => v,
            r => r.to_dense(d as u32 + 1),
        };
        if self.averaging() {
            let sum = tables.read::<f64>(AVG_TABLE, 0)?.to_dense(d as u32 + 2);
            let count = sum[d + 1];
            if count > 0.0 {
                row = sum[..=d].iter().map(|s| (s / count) as f32).collect();
            }
        }
        let mut model = LinearModel {
            weight: row[..d].to_vec(),
            bias: row[d],
            class_names: self.train.class_names.clone(),
        };
        let mut metrics = Vec::new();
        if let Some(test) = &self.test {
            metrics.push(("test_accuracy".to_string(), model.accuracy(test)));
        }
        metrics.push(("train_accuracy".to_string(), model.accuracy(&self.train)));
        metrics.push((
            "nonzero_weights".to_string(),
            model.weight.iter().filter(|w| **w != 0.0).count() as f64,
        ));
        if let Some((mean, std)) = &self.standardizer {
            let mut shift = 0.0;
            for j in 0..d {
                model.weight[j] /= std[j];
                shift += model.weight[j] * mean[j];
            }
            model.bias -= shift;
        }
        let mut file = ModelFile::new(self.loss.name());
        file.set("num_features", d);
        file.set("num_classes", 2);
        self.input.record(&mut file);
        file.set("class_names", serde_json::to_string(&model.class_names)?);
        file.set("params", serde_json::to_string(&self.params)?);
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
    data: Arc<Dataset>,
    part: Vec<usize>,
    w: Vec<f32>,
    grad: Vec<f32>,
    table: Option<Table<f32>>,
    /// Clock from which iterates are summed into the average table.
    average_after: Option<u64>,
    avg_buf: Vec<f64>,
}

impl AlgoWorker for LinearWorker {
    fn step(&mut self, ctx: &mut WorkerCtx, rng: &mut ChaCha8Rng) -> Result<StepStats, BoxError> {
        let t = match self.table {
            Some(t) => t,
            None => *self.table.insert(ctx.table::<f32>(TABLE)?),
        };
        let p = &self.params;
        let bs = p.batch_size.min(self.part.len());
        let batches = p.batches_per_clock.unwrap_or(self.part.len().div_ceil(bs));
        let epochs = ctx.clock_now() as f64 * (batches * bs) as f64 / self.part.len() as f64;
        let lr = (p.learning_rate / (1.0 + p.decay * epochs)) as f32;
        let (l1, l2) = (p.l1 as f32, p.l2 as f32);
        let d = self.data.dim();
        let x = &self.data.features;
        let mut order = self.part.clone();
        order.shuffle(rng);
        let mut pos = 0;
        let mut loss_sum = 0.0f64;
        let mut reg = 0.0f64;
        for _ in 0..batches {
            ctx.get_dense_into(t, 0, &mut self.w)?;
            reg = 0.5 * p.l2 * sq_norm(&self.w[..d])
                + p.l1 * self.w[..d].iter().map(|v| v.abs() as f64).sum::<f64>();
            self.grad.clear();
            self.grad.resize(d + 1, 0.0);
            for _ in 0..bs {
                if pos == order.len() {
                    order.shuffle(rng);
                    pos = 0;
                }
                let i = order[pos];
                pos += 1;
                let y = if self.data.labels[i] == 1 { 1.0 } else { -1.0 };
                let z = x.dot(i, &self.w) + self.w[d];
                let (l, dm) = self.loss.eval(y * z);
                loss_sum += l as f64;
                if dm != 0.0 {
                    x.axpy(i, dm * y, &mut self.grad);
                    self.grad[d] += dm * y;
                }
            }
            // New weights: gradient step with L2 shrink, then L1 truncation;
            // the increment is the difference from what was read.
            let inv = 1.0 / bs as f32;
            for j in 0..=d {
                let wj = self.w[j];
                let g = self.grad[j] * inv + if j < d { l2 * wj } else { 0.0 };
                let mut v = wj - lr * g;
                if l1 > 0.0 && j < d {
                    v = v.signum() * (v.abs() - lr * l1).max(0.0);
                }
                self.grad[j] = v - wj;
            }
            ctx.batch_inc(t, 0, &self.grad)?;
            if self.average_after.is_some_and(|c| ctx.clock_now() >= c) {
                let avg = ctx.table::<f64>(AVG_TABLE)?;
                self.avg_buf.clear();
                self.avg_buf
                    .extend(self.w.iter().zip(&self.grad).map(|(w, g)| (w + g) as f64));
                self.avg_buf.push(1.0);
                ctx.batch_inc(avg, 0, &self.avg_buf)?;
            }
        }
        let seen = (batches * bs) as f64;
        Ok(StepStats {
            objective: loss_sum + reg * seen,
            weight: seen,
            samples: seen as u64,
        })
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
