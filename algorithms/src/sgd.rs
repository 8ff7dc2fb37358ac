//! What the SGD-trained models share so that they work with no tuning:
//! automatic feature scaling, AdaGrad steps, the convergence and
//! divergence rules every worker agrees on, and the majority-class check
//! of a finished model.
//!
//! **Scaling.** Statistics are accumulated in `f64` over the training set
//! (every host holds the same training file and computes the same numbers,
//! so every worker scales alike with no message); dense data are
//! standardised (mean 0, variance 1: scikit-learn's `StandardScaler`),
//! sparse data are divided by each column's largest absolute value and
//! keep their sparsity (`MaxAbsScaler`, which scikit-learn recommends for
//! sparse data). The saved model folds the scaling into its weights, so
//! `petuumd eval` and any reader of the model use raw inputs.
//!
//! **AdaGrad** (Duchi, Hazan and Singer, JMLR 2011), in its composite form
//! for the L2 term: coordinate `j` steps by `lr / sqrt(G_j)` on the loss
//! gradient, `G_j` the sum of its squared mini-batch gradients (`f64`,
//! per worker, checkpointed with the worker), then shrinks by
//! `1 / (1 + lr_j l2)`. Per-coordinate steps make the step size forgiving
//! of the data's scale; the fixed point is the regularised optimum.
//!
//! **Stopping.** Each worker adds its clock's objective sum and weight to
//! row `c` of the `progress` table. After clock `c` it reads the rows that
//! the consistency model guarantees complete (clocks `< c - s` under
//! SSP(s), BSP being s = 0): every worker reads the same values after the
//! same clock, so they all stop after the same clock. The job has
//! converged when for `patience` complete clocks in a row the objective
//! has not gone below the best so far by `tol` (relative), as
//! scikit-learn's `SGDClassifier` (`n_iter_no_change`). It has diverged
//! when the objective is not finite or has grown for `GROWTH_CLOCKS`
//! complete clocks in a row to more than `GROWTH_FACTOR` times its best.
//! Under `async` no row is ever guaranteed complete: the job runs its
//! `clocks`.

use crate::data::{Dataset, Features};
use crate::polish::Polish;
use petuum_core::algorithm::{BoxError, StepStats, TableDecl, TableReader};
use petuum_core::spec::{check_non_negative, check_positive, check_range, SpecError};
use petuum_core::{ElemType, RowKind, Table, WorkerCtx};
use serde::{Deserialize, Serialize};

/// How features are scaled before training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scaling {
    /// Dense data standardised, sparse data max-abs scaled.
    Auto,
    /// Mean 0 and variance 1 (sparse data: divided by the deviation, not centred).
    Standard,
    /// Divided by the column's largest absolute value.
    #[serde(rename = "maxabs")]
    MaxAbs,
    /// Raw features.
    None,
}

/// The step rule of the SGD models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// `learning_rate / (1 + decay e)` after `e` passes over the data.
    Sgd,
    /// Per-coordinate `learning_rate / sqrt(sum of squared gradients)`.
    Adagrad,
}

/// Default AdaGrad step (features scaled to unit size).
pub const ADAGRAD_LR: f64 = 0.1;
/// Default relative tolerance of the convergence rule.
pub const TOL: f64 = 1e-4;

/// The step, scaling, regularisation and stopping settings as a spec gives
/// them (every field optional), shared by the binary and multi-class
/// linear models.
#[derive(Clone, Copy, Debug)]
pub struct StepSpec {
    pub learning_rate: Option<f64>,
    pub optimizer: Option<Optimizer>,
    pub scaling: Option<Scaling>,
    pub standardize: bool,
    pub l2: Option<f64>,
    pub tol: Option<f64>,
    pub patience: u32,
}

/// [`StepSpec`] resolved: with no `learning_rate` the automatic
/// configuration (AdaGrad, automatic scaling, `l2 = 1/n`, a stopping
/// tolerance), with one the plain SGD of a tuned spec.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Steps {
    pub optimizer: Optimizer,
    pub learning_rate: f64,
    pub user_lr: bool,
    pub scaling: Scaling,
    pub l2: f64,
    pub stop: StopRule,
}

impl StepSpec {
    /// Checks the values a spec set (`params.*` names in errors).
    pub fn validate(&self) -> Result<(), SpecError> {
        if let Some(lr) = self.learning_rate {
            check_positive("params.learning_rate", lr)?;
        }
        if let Some(l2) = self.l2 {
            check_non_negative("params.l2", l2)?;
        }
        if let Some(t) = self.tol {
            check_non_negative("params.tol", t)?;
        }
        check_range("params.patience", self.patience as usize, 1, 1 << 20)?;
        if self.standardize && matches!(self.scaling, Some(s) if s != Scaling::Standard) {
            return Err(SpecError::invalid(
                "params.standardize",
                "contradicts params.scaling (standardize = true is scaling = \"standard\")",
            ));
        }
        Ok(())
    }

    /// The settings for `n_train` training samples.
    pub fn resolve(&self, n_train: usize) -> Steps {
        let auto = self.learning_rate.is_none();
        let optimizer = self.optimizer.unwrap_or(if auto {
            Optimizer::Adagrad
        } else {
            Optimizer::Sgd
        });
        Steps {
            optimizer,
            learning_rate: self.learning_rate.unwrap_or(match optimizer {
                Optimizer::Adagrad => ADAGRAD_LR,
                Optimizer::Sgd => 0.5,
            }),
            user_lr: !auto,
            scaling: match (self.scaling, self.standardize) {
                (_, true) => Scaling::Standard,
                (Some(s), _) => s,
                (None, _) if auto => Scaling::Auto,
                (None, _) => Scaling::None,
            },
            l2: self.l2.unwrap_or(if auto {
                1.0 / n_train.max(1) as f64
            } else {
                0.0
            }),
            stop: StopRule {
                tol: self.tol.unwrap_or(if auto { TOL } else { 0.0 }),
                patience: self.patience,
            },
        }
    }
}
/// Checks the mini-batch schedule both SGD learners share: `decay`,
/// `batch_size`, `batches_per_clock` and `average_from`.
pub fn check_schedule(
    decay: f64,
    batch_size: usize,
    batches_per_clock: Option<usize>,
    average_from: Option<f64>,
) -> Result<(), SpecError> {
    check_non_negative("params.decay", decay)?;
    check_range("params.batch_size", batch_size, 1, 1 << 20)?;
    if let Some(b) = batches_per_clock {
        check_range("params.batches_per_clock", b, 1, 1 << 30)?;
    }
    if let Some(a) = average_from.filter(|a| !(0.0..=1.0).contains(a)) {
        return Err(SpecError::invalid(
            "params.average_from",
            format!("must be between 0 and 1 (got {a})"),
        ));
    }
    Ok(())
}

/// Complete clocks without an improvement of `tol` before stopping.
pub const PATIENCE: u32 = 10;
/// Complete clocks of growth, and the growth over the best objective,
/// that count as divergence.
pub const GROWTH_CLOCKS: u32 = 10;
pub const GROWTH_FACTOR: f64 = 1.5;

/// A feature scaling fitted on training data: `x' = (x - shift) / scale`
/// (sparse data have shift 0).
#[derive(Clone, Debug, PartialEq)]
pub struct Scaler {
    pub shift: Vec<f32>,
    pub scale: Vec<f32>,
    /// `standard` or `maxabs`, for the model's metadata.
    pub kind: &'static str,
}

impl Scaler {
    /// Fits `how` (`Auto` resolved by the storage of `x`); `None` for
    /// `Scaling::None`.
    pub fn fit(x: &Features, how: Scaling) -> Option<Scaler> {
        let sparse = matches!(x, Features::Sparse(_));
        let how = match how {
            Scaling::Auto if sparse => Scaling::MaxAbs,
            Scaling::Auto => Scaling::Standard,
            h => h,
        };
        let d = x.ncols();
        let n = x.nrows().max(1) as f64;
        match how {
            Scaling::None | Scaling::Auto => None,
            Scaling::MaxAbs => {
                let mut m = vec![0f64; d];
                for_each_value(x, |j, v| m[j] = m[j].max(v.abs()));
                Some(Scaler {
                    shift: vec![0.0; d],
                    scale: m.iter().map(|&v| unit_if_zero(v)).collect(),
                    kind: "maxabs",
                })
            }
            Scaling::Standard => {
                let mut sum = vec![0f64; d];
                for_each_value(x, |j, v| sum[j] += v);
                let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
                let mut var = vec![0f64; d];
                if sparse {
                    // Deviation about the mean, zeros included; not centred.
                    for_each_value(x, |j, v| var[j] += v * v);
                    for j in 0..d {
                        var[j] = (var[j] / n - mean[j] * mean[j]).max(0.0);
                    }
                } else {
                    for_each_value(x, |j, v| var[j] += (v - mean[j]).powi(2));
                    var.iter_mut().for_each(|v| *v /= n);
                }
                Some(Scaler {
                    shift: if sparse {
                        vec![0.0; d]
                    } else {
                        mean.iter().map(|&m| m as f32).collect()
                    },
                    scale: var.iter().map(|&v| unit_if_zero(v.sqrt())).collect(),
                    kind: "standard",
                })
            }
        }
    }

    /// Scales `x` in place (sparse data stay sparse).
    pub fn apply(&self, x: &mut Features) {
        match x {
            Features::Dense(a) => {
                for mut row in a.rows_mut() {
                    for ((v, m), s) in row.iter_mut().zip(&self.shift).zip(&self.scale) {
                        *v = (*v - m) / s;
                    }
                }
            }
            Features::Sparse(c) => {
                for (j, v) in c.indices.iter().zip(c.values.iter_mut()) {
                    *v /= self.scale[*j as usize];
                }
            }
        }
    }

    /// Turns the weights of a model of scaled inputs into one of raw
    /// inputs: `w_j / scale_j`, and the bias less `sum w_j shift_j`.
    pub fn fold(&self, weight: &mut [f32], bias: &mut f32) {
        let mut shift = 0.0f64;
        for ((w, s), m) in weight.iter_mut().zip(&self.scale).zip(&self.shift) {
            *w /= s;
            shift += *w as f64 * *m as f64;
        }
        *bias -= shift as f32;
    }
}

fn unit_if_zero(v: f64) -> f32 {
    if v > 1e-12 && v.is_finite() {
        v as f32
    } else {
        1.0
    }
}

fn for_each_value(x: &Features, mut f: impl FnMut(usize, f64)) {
    match x {
        Features::Dense(a) => {
            for row in a.rows() {
                for (j, &v) in row.iter().enumerate() {
                    f(j, v as f64);
                }
            }
        }
        Features::Sparse(c) => {
            for (&j, &v) in c.indices.iter().zip(&c.values) {
                f(j as usize, v as f64);
            }
        }
    }
}

/// The largest absolute raw feature value and its column, for messages.
pub fn largest_feature(x: &Features) -> (f64, usize) {
    let mut best = (0f64, 0usize);
    for_each_value(x, |j, v| {
        if v.abs() > best.0 {
            best = (v.abs(), j);
        }
    });
    best
}

/// What a diverged job's message says about the likely cause.
pub fn divergence_hint(raw: &Features, scaled: bool, steps: &Steps) -> String {
    let (optimizer, lr) = (steps.optimizer, steps.learning_rate);
    let (max, col) = largest_feature(raw);
    let scale = if scaled {
        format!("features were scaled (largest raw |x| = {max:.3e}, column {col})")
    } else if max > 10.0 {
        format!(
            "features are not scaled and reach |x| = {max:.3e} (column {col}): set params.scaling = \"auto\""
        )
    } else {
        format!("features are not scaled (largest |x| = {max:.3e}, column {col})")
    };
    let step = if steps.user_lr {
        format!(
            "params.learning_rate = {lr} ({optimizer:?}) is likely too large: lower it, or remove it for automatic settings"
        )
    } else {
        format!("the default step ({lr}, {optimizer:?}) is likely too large for these data")
    };
    format!("likely cause: {step}; {scale}").to_lowercase()
}

/// AdaGrad accumulators of one worker.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Adagrad {
    lr: f64,
    /// Sums of squared gradients (saved with the worker).
    g2: Vec<f64>,
    /// `lr / sqrt(g2)` (0 before the first non-zero gradient), kept so a
    /// coordinate with no gradient in a mini-batch costs no square root.
    eta: Vec<f64>,
    /// The L2 shrink `1 / (1 + eta l2)` of each coordinate for `l2`.
    shrink: Vec<f64>,
    l2: f64,
}

impl Adagrad {
    /// Accumulators for `n` coordinates with base step `lr` and L2
    /// strength `l2` (applied to every coordinate but those `step` is
    /// told are biases).
    pub fn new(n: usize, lr: f64, l2: f64) -> Self {
        Adagrad {
            lr,
            g2: vec![0.0; n],
            eta: vec![0.0; n],
            shrink: vec![1.0; n],
            l2,
        }
    }

    /// The new value of a coordinate at `w` with loss gradient `g`, and
    /// the step used: an AdaGrad step, then the L2 shrink
    /// `1 / (1 + step l2)` (none for a `bias`). A coordinate without
    /// gradient costs one multiplication.
    #[inline]
    pub fn step(&mut self, j: usize, w: f32, g: f32, bias: bool) -> (f32, f64) {
        if g != 0.0 {
            self.g2[j] += g as f64 * g as f64;
            self.set_step(j);
        }
        let eta = self.eta[j];
        if eta == 0.0 {
            return (w, 0.0);
        }
        let shrink = if bias { 1.0 } else { self.shrink[j] };
        (((w as f64 - eta * g as f64) * shrink) as f32, eta)
    }

    /// The factor a coordinate without gradient is multiplied by at a step
    /// (1 before its first gradient).
    #[inline]
    pub fn shrink(&self, j: usize) -> f64 {
        if self.eta[j] == 0.0 {
            1.0
        } else {
            self.shrink[j]
        }
    }

    fn set_step(&mut self, j: usize) {
        let a = self.g2[j];
        self.eta[j] = if a > 0.0 { self.lr / a.sqrt() } else { 0.0 };
        self.shrink[j] = 1.0 / (1.0 + self.eta[j] * self.l2);
    }

    pub fn save(&self, out: &mut StateWriter) {
        out.f64s(&self.g2);
    }

    /// Restores what [`save`](Self::save) wrote into accumulators of the
    /// same size.
    pub fn restore(&mut self, r: &mut StateReader<'_>) -> Result<(), BoxError> {
        let g2 = r.f64s()?;
        if g2.len() != self.g2.len() {
            return Err(format!(
                "worker state has {} AdaGrad sums, the model {} coordinates",
                g2.len(),
                self.g2.len()
            )
            .into());
        }
        self.g2 = g2;
        for j in 0..self.g2.len() {
            self.set_step(j);
        }
        Ok(())
    }
}

/// Name of the table of per-clock objectives.
pub const PROGRESS_TABLE: &str = "progress";
/// Row of the progress table where the decision to stop is recorded:
/// `[clocks run, clock whose objective converged + 1]`.
const STATUS_ROW: u64 = u64::MAX >> 1;

/// The progress table's declaration.
pub fn progress_table() -> TableDecl {
    TableDecl {
        name: PROGRESS_TABLE.into(),
        kind: RowKind::Dense,
        elem: ElemType::F64,
        columns: 2,
    }
}

/// How a job's run ended, from its progress table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunStatus {
    pub converged: bool,
    pub clocks_run: u64,
}

impl RunStatus {
    pub fn read(tables: &TableReader<'_>, clocks: u64) -> Result<RunStatus, BoxError> {
        let row = tables.read::<f64>(PROGRESS_TABLE, STATUS_ROW)?.to_dense(2);
        Ok(if row[0] > 0.0 {
            RunStatus {
                converged: true,
                clocks_run: row[0] as u64,
            }
        } else {
            RunStatus {
                converged: false,
                clocks_run: clocks,
            }
        })
    }

    pub fn metrics(&self, out: &mut Vec<(String, f64)>) {
        out.push(("converged".into(), if self.converged { 1.0 } else { 0.0 }));
        out.push(("clocks_run".into(), self.clocks_run as f64));
    }
}

/// Records (worker 0) that the job converged and stops after clock `c`,
/// for a stop decided outside [`Progress`] (the full-batch finish).
pub fn record_stop(ctx: &mut WorkerCtx, c: u64) -> Result<(), BoxError> {
    if ctx.worker() == 0 {
        let t: Table<f64> = ctx.table(PROGRESS_TABLE)?;
        ctx.batch_inc(t, STATUS_ROW, &[(c + 1) as f64, (c + 1) as f64])?;
    }
    Ok(())
}

/// The convergence rule's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StopRule {
    /// Relative improvement that counts; 0 never stops early.
    pub tol: f64,
    pub patience: u32,
}

/// A worker's view of the agreed per-clock objectives.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// Clocks folded in so far (rows `0..checked`).
    checked: u64,
    best: f64,
    since_best: u32,
    last: f64,
    rising: u32,
    /// Set once the rule has fired: the job stops after this clock (or,
    /// with a full-batch finish to follow, its SGD phase does).
    finished: bool,
    /// A full-batch finish follows the SGD phase and records the stop
    /// itself ([`record_stop`]); not checkpointed (it follows from the spec).
    pub defer_status: bool,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            checked: 0,
            best: f64::INFINITY,
            since_best: 0,
            last: f64::INFINITY,
            rising: 0,
            finished: false,
            defer_status: false,
        }
    }
}

impl Progress {
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// After the work of clock `ctx.clock_now()`: records its stats and
    /// folds in the clocks now guaranteed complete. Errs when they show
    /// divergence (`hint` names the likely cause).
    pub fn after_step(
        &mut self,
        ctx: &mut WorkerCtx,
        rule: StopRule,
        stats: &StepStats,
        hint: &dyn Fn() -> String,
    ) -> Result<(), BoxError> {
        let c = ctx.clock_now();
        let t: Table<f64> = ctx.table(PROGRESS_TABLE)?;
        ctx.batch_inc(t, c, &[stats.objective, stats.weight])?;
        let Some(complete) = ctx.consistency().required_min_clock(c) else {
            return Ok(());
        };
        while self.checked < complete {
            let k = self.checked;
            let row = ctx.get(t, k)?.to_dense(2);
            self.checked += 1;
            let o = if row[1] > 0.0 {
                row[0] / row[1]
            } else {
                row[0]
            };
            if !o.is_finite() {
                return Err(
                    format!("diverged: the objective of clock {k} is {o}; {}", hint()).into(),
                );
            }
            if o > self.last {
                self.rising += 1;
            } else {
                self.rising = 0;
            }
            self.last = o;
            if self.rising >= GROWTH_CLOCKS && o > GROWTH_FACTOR * self.best {
                return Err(format!(
                    "diverged: the objective grew for {} clocks in a row, to {o:.4e} at clock {k} from a best of {:.4e}; {}",
                    self.rising,
                    self.best,
                    hint()
                )
                .into());
            }
            if o < self.best - rule.tol * self.best.abs() || !self.best.is_finite() {
                self.since_best = 0;
            } else {
                self.since_best += 1;
            }
            self.best = self.best.min(o);
            if rule.tol > 0.0 && self.since_best >= rule.patience && !self.finished {
                self.finished = true;
                if ctx.worker() == 0 && !self.defer_status {
                    ctx.batch_inc(t, STATUS_ROW, &[(c + 1) as f64, (k + 1) as f64])?;
                }
            }
        }
        Ok(())
    }

    /// Appends the state to a checkpoint blob.
    pub fn save(&self, out: &mut StateWriter) {
        out.u64(self.checked);
        out.f64(self.best);
        out.u64(self.since_best as u64);
        out.f64(self.last);
        out.u64(self.rising as u64);
        out.u64(self.finished as u64);
    }

    pub fn restore(r: &mut StateReader<'_>) -> Result<Progress, BoxError> {
        Ok(Progress {
            checked: r.u64()?,
            best: r.f64()?,
            since_best: r.u64()? as u32,
            last: r.f64()?,
            rising: r.u64()? as u32,
            finished: r.u64()? != 0,
            defer_status: false,
        })
    }
}

/// A linear worker's checkpointed state: the stopping rule's progress,
/// the AdaGrad sums, then the full-batch finish's state when it has one.
pub fn save_learner(progress: &Progress, ada: &Adagrad, polish: Option<&Polish>) -> Vec<u8> {
    let mut w = StateWriter::default();
    progress.save(&mut w);
    ada.save(&mut w);
    if let Some(p) = polish {
        p.save(&mut w);
    }
    w.0
}

/// Restores what [`save_learner`] wrote; an empty state (a job that never
/// checkpointed) leaves everything as it is, and a state saved before the
/// finish existed leaves the finish waiting.
pub fn restore_learner(
    state: &[u8],
    progress: &mut Progress,
    ada: &mut Adagrad,
    polish: Option<&mut Polish>,
) -> Result<(), BoxError> {
    if state.is_empty() {
        return Ok(());
    }
    let mut r = StateReader(state);
    let defer = progress.defer_status;
    *progress = Progress::restore(&mut r)?;
    progress.defer_status = defer;
    ada.restore(&mut r)?;
    if let Some(p) = polish.filter(|_| !r.0.is_empty()) {
        p.restore(&mut r)?;
    }
    Ok(())
}

/// Little-endian encoding of worker state (exact for floats).
#[derive(Default)]
pub struct StateWriter(pub Vec<u8>);

impl StateWriter {
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64s(&mut self, v: &[f64]) {
        self.u64(v.len() as u64);
        for x in v {
            self.f64(*x);
        }
    }
}

/// Reads what a [`StateWriter`] wrote.
pub struct StateReader<'a>(pub &'a [u8]);

impl StateReader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], BoxError> {
        if self.0.len() < n {
            return Err("worker state is truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    pub fn u64(&mut self) -> Result<u64, BoxError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }
    pub fn f64(&mut self) -> Result<f64, BoxError> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into()?))
    }
    pub fn f64s(&mut self) -> Result<Vec<f64>, BoxError> {
        let n = self.u64()? as usize;
        if n > self.0.len() / 8 {
            return Err("worker state is truncated".into());
        }
        (0..n).map(|_| self.f64()).collect()
    }
}

/// The training accuracy of always answering the most frequent class.
pub fn majority_fraction(data: &Dataset) -> f64 {
    let mut counts = vec![0usize; data.num_classes.max(1) as usize];
    for &l in &data.labels {
        counts[l as usize] += 1;
    }
    counts.iter().copied().max().unwrap_or(0) as f64 / data.len().max(1) as f64
}

/// Adds the majority-class check to a model's metrics and warns when the
/// model does no better than the majority class on its training data.
pub fn check_majority(
    name: &str,
    train: &Dataset,
    train_accuracy: f64,
    out: &mut Vec<(String, f64)>,
) {
    let majority = majority_fraction(train);
    out.push(("majority_baseline".into(), majority));
    let flagged = train_accuracy <= majority + 1e-9;
    out.push(("below_majority".into(), if flagged { 1.0 } else { 0.0 }));
    if flagged {
        tracing::warn!(
            model = name,
            train_accuracy,
            majority,
            "the model is no better than predicting the majority class on its training data"
        );
    }
}

/// Weight of the iterates of clock `c` in the model's average:
/// polynomial-decay averaging (Shamir and Zhang, ICML 2013), `(c + 1)^3`.
/// The sums are plain additions, so they live in a table; the average
/// leans on the recent iterates (the first half of any run carries 1/16
/// of the weight) and, unlike a window, moves smoothly from clock to
/// clock, so the stop rule can watch its objective.
pub fn avg_weight(c: u64) -> f64 {
    ((c + 1) as f64).powi(3)
}

/// The weighted average of the sums in `rows` of an averages table
/// (weighted values, then the summed weight), into `out`; false (and `out`
/// untouched) while there is nothing to average.
pub fn read_average(
    ctx: &mut WorkerCtx,
    table: Table<f64>,
    rows: impl IntoIterator<Item = u64>,
    out: &mut [f32],
) -> Result<bool, BoxError> {
    let n = out.len();
    let mut sum = vec![0f64; n + 1];
    let rows: Vec<u64> = rows.into_iter().collect();
    ctx.prefetch(table, rows.iter().copied())?;
    for r in rows {
        let row = ctx.get(table, r)?.to_dense(n as u32 + 1);
        sum.iter_mut().zip(&row).for_each(|(a, b)| *a += b);
    }
    if sum[n] <= 0.0 {
        return Ok(false);
    }
    for (o, s) in out.iter_mut().zip(&sum) {
        *o = (s / sum[n]) as f32;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn standard_scaling_is_folded_back_exactly() {
        let raw = Features::Dense(array![[1.0, 1e4, 5.0], [3.0, 3e4, 5.0], [2.0, 2e4, 5.0]]);
        let s = Scaler::fit(&raw, Scaling::Auto).unwrap();
        assert_eq!(s.kind, "standard");
        assert_eq!(s.scale[2], 1.0, "constant column keeps scale 1");
        let mut x = raw.clone();
        s.apply(&mut x);
        let w = [0.5f32, -1.0, 2.0];
        let b = 0.25f32;
        let (mut wr, mut br) = (w, b);
        s.fold(&mut wr, &mut br);
        for i in 0..3 {
            let scaled = x.dot(i, &w) + b;
            let folded = raw.dot(i, &wr) + br;
            assert!((scaled - folded).abs() < 1e-4, "{scaled} vs {folded}");
        }
    }

    #[test]
    fn sparse_data_are_scaled_not_centred() {
        let raw = Features::Sparse(crate::data::Csr {
            indptr: vec![0, 2, 3],
            indices: vec![0, 1, 1],
            values: vec![-4.0, 2.0, 8.0],
            ncols: 3,
        });
        let s = Scaler::fit(&raw, Scaling::Auto).unwrap();
        assert_eq!((s.kind, s.scale.clone()), ("maxabs", vec![4.0, 8.0, 1.0]));
        let mut x = raw;
        s.apply(&mut x);
        let Features::Sparse(c) = x else { panic!() };
        assert_eq!(c.values, vec![-1.0, 0.25, 1.0]);
    }

    #[test]
    fn state_round_trips_and_truncation_is_an_error() {
        let p = Progress {
            checked: 7,
            best: 0.123456789,
            ..Progress::default()
        };
        let mut w = StateWriter::default();
        p.save(&mut w);
        w.f64s(&[1.5, f64::MIN_POSITIVE]);
        let mut r = StateReader(&w.0);
        assert_eq!(Progress::restore(&mut r).unwrap(), p);
        assert_eq!(r.f64s().unwrap(), vec![1.5, f64::MIN_POSITIVE]);
        assert!(Progress::restore(&mut StateReader(&w.0[..10])).is_err());
    }

    #[test]
    fn polynomial_average_leans_on_the_recent_clocks() {
        for clocks in [2u64, 10, 100, 1000] {
            let total: f64 = (0..clocks).map(avg_weight).sum();
            let first_half: f64 = (0..clocks / 2).map(avg_weight).sum();
            assert!(
                first_half / total <= 1.0 / 8.0,
                "{clocks}: {}",
                first_half / total
            );
        }
    }

    /// Feeds one worker's objectives through the progress table, one
    /// clock at a time; returns the clocks run or the error.
    fn drive(objectives: &[f64], rule: StopRule) -> Result<u64, String> {
        use petuum_core::inproc::InProcShards;
        use petuum_core::runner::table_specs;
        use petuum_core::service::ShardService;
        use petuum_core::{Consistency, Node};
        let shards = std::sync::Arc::new(InProcShards::new(2));
        let node = Node::new(shards.clone(), 1 << 10);
        let tables = table_specs(1, 1, &[progress_table()]);
        shards.create_table(&tables[0]).unwrap();
        shards.register_job(1, 1, true).unwrap();
        let mut ctx = WorkerCtx::new(node, 1, 0, 1, Consistency::Ssp { staleness: 1 }, &tables, 0);
        let mut p = Progress::default();
        for (c, &o) in objectives.iter().enumerate() {
            let stats = StepStats {
                objective: o * 10.0,
                weight: 10.0,
                samples: 10,
                ..Default::default()
            };
            p.after_step(&mut ctx, rule, &stats, &|| "hint".into())
                .map_err(|e| e.to_string())?;
            ctx.clock().unwrap();
            if p.finished() {
                return Ok(c as u64 + 1);
            }
        }
        Ok(objectives.len() as u64)
    }

    #[test]
    fn stop_rule_converges_and_detects_growth() {
        let rule = StopRule {
            tol: 1e-3,
            patience: 3,
        };
        // Improves by 10% a clock, then flat from clock 5: the rule fires
        // on row 8 (the third without improvement), which SSP(1) guarantees
        // complete at clock 10: the job stops after 11 clocks.
        let mut o: Vec<f64> = (0..6).map(|i| 0.9f64.powi(i)).collect();
        o.extend([o[5]; 20]);
        assert_eq!(drive(&o, rule), Ok(11));
        // tol 0 never stops early.
        assert_eq!(drive(&o, StopRule { tol: 0.0, ..rule }), Ok(26));
        // Noise that keeps finding new bests does not stop it.
        let noisy: Vec<f64> = (0..30)
            .map(|i| 1.0 / (1.0 + i as f64) + 0.01 * (i % 2) as f64)
            .collect();
        assert_eq!(drive(&noisy, rule), Ok(30));
        // Growth: 12 clocks up by 10% each after a best of 1.0.
        let grow: Vec<f64> = (0..14)
            .map(|i| if i < 2 { 1.0 } else { 1.1f64.powi(i - 1) })
            .collect();
        let e = drive(&grow, StopRule { tol: 0.0, ..rule }).unwrap_err();
        assert!(
            e.contains("diverged") && e.contains("grew for 10 clocks") && e.contains("hint"),
            "{e}"
        );
        // A non-finite objective is divergence at once.
        let e = drive(&[1.0, f64::NAN, 1.0, 1.0], rule).unwrap_err();
        assert!(e.contains("objective of clock 1 is NaN"), "{e}");
    }
}
