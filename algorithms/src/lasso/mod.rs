//! Lasso by scheduled parallel coordinate descent over Strads (Lee et
//! al., NIPS 2014, SchMP; Bradley et al., ICML 2011, Shotgun).
//!
//! Minimises `1/(2n) ||y − Xβ − b||² + λ ||β||₁`, scikit-learn's `Lasso`
//! scaling (its `alpha` is λ). Each round (clock, BSP) the scheduler
//! chooses a block of coordinates; every worker adds `x̃_jᵀ r` over its rows
//! for each `j` of the block to the round's partials row; the next clock
//! every worker reads the sums and applies the same soft-thresholded
//! coordinate updates, and worker 0 records the changes in the `lasso_beta`
//! table (the model) and `|Δβ_j|` in `lasso_priority` (the scheduler's
//! state). `x̃_j = s_j (x_j − μ_j)`: centred when fitting an intercept,
//! scaled to unit variance with `standardize`.
//!
//! Every `gap_every` rounds the workers also add `X̃ᵀr`, `||r||²` and `rᵀy`
//! over their rows to a `lasso_gap` row; the next clock every worker
//! computes the duality gap (scikit-learn's formula) of the same state and
//! stops, or moves to the next λ of the path, when it is below
//! `tol · ||y − ȳ||²`.

mod block;
pub mod data;
mod params;
pub mod synthetic;

pub use data::{Csc, Design, RowRange, TargetTransform};
pub use params::{LassoParams, LassoScheduler};

use crate::model::{ModelError, ModelFile};
use crate::strads::{
    clear_row, ring_row, Interference, NoInterference, PriorityScheduler, Rounds, Scheduler,
    UniformScheduler,
};
use petuum_core::algorithm::{
    AlgoWorker, Algorithm, BoxError, ClockMetrics, ModelSummary, StepStats, TableDecl, TableLoader,
    TableReader,
};
use petuum_core::spec::{parse_params, DataFormat, JobSpec, SpecError};
use petuum_core::{ElemType, Row, RowKind, WorkerCtx};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::Arc;

pub const NAME: &str = "lasso";
const BETA: &str = "lasso_beta";
const PRIORITY: &str = "lasso_priority";
const GAP: &str = "lasso_gap";
const PATH: &str = "lasso_path";
/// Working sets: the Gram values of a round's block, in rows of
/// [`GRAM_CHUNK`] values, so a round moves only the rows its block fills.
const GRAM: &str = "lasso_gram";
const GRAM_CHUNK: usize = 4096;

/// The ring row of the gap sums written at clock `c` (a multiple of
/// `every`): written at `c`, read at `c + 1`, cleared at `c + 2`.
fn gap_row(c: u64, every: u64) -> u64 {
    ring_row(c / every)
}

/// Validates a `lasso` spec without reading data.
pub fn validate(spec: &JobSpec) -> Result<(), SpecError> {
    let p: LassoParams = parse_params(&spec.params)?;
    p.validate()?;
    crate::strads::require_bsp(spec)?;
    match spec.data.format {
        DataFormat::Libsvm | DataFormat::Csv => Ok(()),
        DataFormat::MatrixMarket if spec.data.train_labels.is_some() => Ok(()),
        DataFormat::MatrixMarket => Err(SpecError::invalid(
            "data.train_labels",
            "a MatrixMarket design needs its targets (one per line, or an n x 1 MatrixMarket file)",
        )),
        other => Err(SpecError::invalid(
            "data.format",
            format!("lasso reads libsvm, csv or matrix_market, not `{other:?}`").to_lowercase(),
        )),
    }
}

/// Builds a `lasso` job from its spec (reads the data).
pub fn build(spec: &JobSpec) -> Result<Lasso, crate::registry::BuildError> {
    validate(spec)?;
    let params: LassoParams = parse_params(&spec.params)?;
    let (train, test, csv) = data::load(&spec.data, params.target_transform)?;
    // The regularisation path keeps every step's coefficients.
    let d = train.x.ncols() as u128;
    crate::limits::check_model(
        "params.path_length",
        &format!("{} path steps x {d} features", params.path_length),
        params.path_length as u128 * d,
    )?;
    let input = InputFormat {
        format: match spec.data.format {
            DataFormat::Csv => "csv",
            DataFormat::MatrixMarket => "matrix_market",
            _ => "libsvm",
        }
        .into(),
        label_column: spec
            .data
            .label_column
            .clone()
            .unwrap_or_else(|| "label".into()),
        csv,
    };
    Ok(Lasso::new(params, train, test, input, spec.run.seed))
}

/// How the model reads evaluation data.
#[derive(Clone, Debug)]
pub struct InputFormat {
    pub format: String,
    pub label_column: String,
    /// CSV: how the training file's columns became features.
    pub csv: Option<crate::data::csv::Encoding>,
}

/// What every worker derives from the whole training set.
struct Shared {
    params: LassoParams,
    x: Csc,
    n: usize,
    d: usize,
    mu: Vec<f64>,
    scale: Vec<f64>,
    /// `||x̃_j||² / n`.
    z: Vec<f64>,
    y_mean: f64,
    yc: Vec<f64>,
    yc_norm2: f64,
    lambdas: Vec<f64>,
    lambda_max: f64,
    /// `X̃ᵀy_c`: the gradient at β = 0 (the working set's first scores).
    xty: Vec<f64>,
    gap_every: u64,
    block: usize,
}

impl Shared {
    fn new(params: LassoParams, train: Design) -> Shared {
        let (n, d) = (train.n(), train.d());
        let nf = n as f64;
        let mut mu = vec![0.0; d];
        let mut scale = vec![1.0; d];
        let mut z = vec![0.0; d];
        for j in 0..d {
            let (_, v) = train.x.col(j);
            let m = if params.fit_intercept {
                v.iter().sum::<f64>() / nf
            } else {
                0.0
            };
            let ss =
                v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() + (n - v.len()) as f64 * m * m;
            if params.standardize {
                let var = ss / nf;
                scale[j] = if var > 1e-12 { 1.0 / var.sqrt() } else { 1.0 };
            }
            mu[j] = m;
            z[j] = scale[j] * scale[j] * ss / nf;
        }
        let y_mean = if params.fit_intercept {
            train.y.iter().sum::<f64>() / nf
        } else {
            0.0
        };
        let yc: Vec<f64> = train.y.iter().map(|y| y - y_mean).collect();
        let yc_norm2 = yc.iter().map(|v| v * v).sum();
        let ysum: f64 = yc.iter().sum();
        let xty: Vec<f64> = (0..d)
            .map(|j| {
                let (r, v) = train.x.col(j);
                let dot: f64 = r.iter().zip(v).map(|(&i, x)| x * yc[i as usize]).sum();
                scale[j] * (dot - mu[j] * ysum)
            })
            .collect();
        let lambda_max = xty.iter().fold(0f64, |m, v| m.max(v.abs() / nf));
        let lambdas = if params.path_length == 1 {
            vec![params.lambda.expect("validated")]
        } else {
            let lo = params
                .lambda
                .unwrap_or_else(|| lambda_max * params.lambda_min_ratio.expect("validated"));
            let l = params.path_length;
            (0..l)
                .map(|k| lambda_max * (lo / lambda_max).powf(k as f64 / (l - 1) as f64))
                .collect()
        };
        let block = params.block_size().min(d).max(1);
        let gap_every = match params.scheduler {
            LassoScheduler::WorkingSet => 1,
            _ => params.gap_every.unwrap_or(d.div_ceil(block)).max(1) as u64,
        };
        Shared {
            params,
            x: train.x,
            n,
            d,
            mu,
            scale,
            z,
            y_mean,
            yc,
            yc_norm2,
            lambdas,
            lambda_max,
            xty,
            gap_every,
            block,
        }
    }

    /// Residual `y_c − X̃ β̃` of the whole training set.
    fn residual(&self, beta: &[f64]) -> Vec<f64> {
        let w: Vec<f64> = beta.iter().zip(&self.scale).map(|(b, s)| b * s).collect();
        let shift: f64 = w.iter().zip(&self.mu).map(|(w, m)| w * m).sum();
        let xw = self.x.matvec(&w);
        self.yc.iter().zip(xw).map(|(y, v)| y - v + shift).collect()
    }

    /// `x̃_jᵀ r` for every column, from `Σ x_ij r_i` and `Σ r_i`.
    fn xtr(&self, x: &Csc, r: &[f64], j: usize, rsum: f64) -> f64 {
        let (rows, vals) = x.col(j);
        let dot = data::gather_dot(rows, vals, r, 0);
        self.scale[j] * (dot - self.mu[j] * rsum)
    }

    /// The duality gap (scikit-learn's, on its unnormalised scale) from
    /// `X̃ᵀr`, `||r||²`, `rᵀy_c` and β̃.
    fn gap(&self, xtr: &[f64], r2: f64, ry: f64, beta: &[f64], lambda: f64) -> f64 {
        let alpha = lambda * self.n as f64;
        let dual = xtr.iter().fold(0f64, |m, v| m.max(v.abs()));
        let l1: f64 = beta.iter().map(|b| b.abs()).sum();
        let (c, mut gap) = if dual > alpha {
            let c = alpha / dual;
            (c, 0.5 * (r2 + r2 * c * c))
        } else {
            (1.0, r2)
        };
        gap += alpha * l1 - c * ry;
        gap
    }

    fn converged(&self, gap: f64) -> bool {
        gap <= self.params.tol * self.yc_norm2
    }

    fn scheduler(&self, interference: Arc<dyn Interference>) -> Box<dyn Scheduler> {
        match self.params.scheduler {
            LassoScheduler::Schmp => Box::new(PriorityScheduler {
                num_vars: self.d,
                block_size: self.block,
                candidates: self.params.candidates().max(self.block),
                floor: self.params.priority_floor,
                interference,
            }),
            LassoScheduler::Random | LassoScheduler::WorkingSet => Box::new(UniformScheduler {
                num_vars: self.d,
                block_size: self.block,
            }),
        }
    }

    fn working_set(&self) -> bool {
        self.params.scheduler == LassoScheduler::WorkingSet
    }

    /// Values of a working-set round's partials row: `X̃ᵀr`, `||r||²`,
    /// `rᵀy_c` (the block's Gram matrix goes to [`GRAM`]).
    fn ws_extra(&self) -> usize {
        self.d + 2
    }

    /// Rows of [`GRAM`] a round owns: enough for the largest block.
    fn gram_rows(&self) -> u64 {
        gram_chunks(self.block) as u64
    }
}

/// Rows of [`GRAM_CHUNK`] values holding the strict upper triangle of a
/// block of `m` coordinates.
fn gram_chunks(m: usize) -> usize {
    (m * m.saturating_sub(1) / 2).div_ceil(GRAM_CHUNK)
}

/// SchMP's dependency test: columns whose (centred, scaled) correlation
/// is at least the threshold interfere. Answers are memoised (the
/// scheduler asks about the same pairs again and again).
struct ColumnCorrelation {
    shared: Arc<Shared>,
    threshold: f64,
    memo: std::sync::Mutex<std::collections::HashMap<(u32, u32), bool>>,
}

impl Interference for ColumnCorrelation {
    fn interferes(&self, a: u32, b: u32) -> bool {
        let key = (a.min(b), a.max(b));
        if let Some(&v) = self.memo.lock().expect("not poisoned").get(&key) {
            return v;
        }
        let v = self.compute(key.0, key.1);
        self.memo.lock().expect("not poisoned").insert(key, v);
        v
    }
}

impl ColumnCorrelation {
    fn compute(&self, a: u32, b: u32) -> bool {
        let s = &*self.shared;
        let (a, b) = (a as usize, b as usize);
        if s.z[a] <= 0.0 || s.z[b] <= 0.0 {
            return false;
        }
        let (ra, va) = s.x.col(a);
        let (rb, vb) = s.x.col(b);
        let (mut i, mut k, mut dot) = (0, 0, 0.0);
        while i < ra.len() && k < rb.len() {
            match ra[i].cmp(&rb[k]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => k += 1,
                std::cmp::Ordering::Equal => {
                    dot += va[i] * vb[k];
                    i += 1;
                    k += 1;
                }
            }
        }
        let n = s.n as f64;
        let cov = s.scale[a] * s.scale[b] * (dot - n * s.mu[a] * s.mu[b]);
        (cov / (n * (s.z[a] * s.z[b]).sqrt())).abs() >= self.threshold
    }
}

/// Lasso with its data loaded.
pub struct Lasso {
    shared: Arc<Shared>,
    test: Option<Design>,
    input: InputFormat,
    rounds: Rounds,
    seed: u64,
}

impl Lasso {
    pub fn new(
        params: LassoParams,
        train: Design,
        test: Option<Design>,
        input: InputFormat,
        seed: u64,
    ) -> Lasso {
        let shared = Arc::new(Shared::new(params, train));
        let rounds = if shared.working_set() {
            Rounds::new(NAME, shared.block, 0, shared.ws_extra())
        } else {
            Rounds::new(NAME, shared.block, 1, 0)
        };
        Lasso {
            shared,
            test,
            input,
            rounds,
            seed,
        }
    }

    /// λ_max: the smallest λ whose solution is β = 0.
    pub fn lambda_max(&self) -> f64 {
        self.shared.lambda_max
    }

    fn interference(&self) -> Arc<dyn Interference> {
        match self.shared.params.scheduler {
            LassoScheduler::Schmp => Arc::new(ColumnCorrelation {
                shared: self.shared.clone(),
                threshold: self.shared.params.correlation_threshold,
                memo: Default::default(),
            }),
            LassoScheduler::Random | LassoScheduler::WorkingSet => Arc::new(NoInterference),
        }
    }
}

fn soft(v: f64, t: f64) -> f64 {
    if v > t {
        v - t
    } else if v < -t {
        v + t
    } else {
        0.0
    }
}

impl Algorithm for Lasso {
    fn name(&self) -> &'static str {
        NAME
    }

    fn objective_name(&self) -> &'static str {
        "lasso objective"
    }

    fn tables(&self) -> Vec<TableDecl> {
        let d = self.shared.d as u32;
        let mut t = self.rounds.tables();
        let mut decls = vec![(BETA, d), (PRIORITY, d), (GAP, d + 2), (PATH, d)];
        if self.shared.working_set() {
            decls.push((GRAM, GRAM_CHUNK as u32));
        }
        for (name, columns) in decls {
            t.push(TableDecl {
                name: name.into(),
                kind: RowKind::Dense,
                elem: ElemType::F64,
                columns,
            });
        }
        t
    }

    fn initialize(&self, loader: &TableLoader<'_>) -> Result<(), BoxError> {
        let d = self.shared.d;
        loader.load(BETA, vec![(0, Row::Dense(vec![0f64; d]))])?;
        if self.shared.working_set() {
            // Every round's block is chosen at its own clock (see
            // `LassoWorker::step_working_set`).
            return Ok(());
        }
        loader.load(PRIORITY, vec![(0, Row::Dense(vec![0f64; d]))])?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(u64::MAX);
        let first = self
            .shared
            .scheduler(self.interference())
            .schedule(&vec![0.0; d], &mut rng);
        self.rounds.load_first(loader, &first)
    }

    fn worker(&self, worker: u32, workers: u32) -> Result<Box<dyn AlgoWorker>, BoxError> {
        let s = &self.shared;
        // Contiguous row ranges: a worker reads its rows of every column
        // in place (no copy of the data per worker).
        let (lo, hi) = (
            s.n * worker as usize / workers as usize,
            s.n * (worker as usize + 1) / workers as usize,
        );
        if lo == hi {
            return Err(format!(
                "worker {worker} of {workers} has no training samples ({} in all)",
                s.n
            )
            .into());
        }
        let x = RowRange::new(&s.x, lo, hi);
        // Column sums over the rows, for centring; without it (no
        // intercept: every μ_j = 0) they are multiplied by zero.
        let colsum: Vec<f64> = if s.mu.iter().any(|&m| m != 0.0) {
            (0..s.d).map(|j| x.col(&s.x, j).1.iter().sum()).collect()
        } else {
            vec![0.0; s.d]
        };
        let yc: Vec<f64> = s.yc[lo..hi].to_vec();
        Ok(Box::new(LassoWorker {
            shared: s.clone(),
            rounds: self.rounds.clone(),
            scheduler: (worker == 0).then(|| s.scheduler(self.interference())),
            worker,
            resid: yc.clone(),
            yc,
            x,
            colsum,
            shift: 0.0,
            beta: vec![0.0; s.d],
            screened: vec![false; s.d],
            stage: 0,
            done: false,
            gap: None,
            gram_cache: None,
            buf: Vec::new(),
        }))
    }

    fn export(&self, tables: &TableReader<'_>, path: &Path) -> Result<ModelSummary, BoxError> {
        let s = &*self.shared;
        let beta = tables.read::<f64>(BETA, 0)?.to_dense(s.d as u32);
        let r = s.residual(&beta);
        let rsum: f64 = r.iter().sum();
        let xtr: Vec<f64> = (0..s.d).map(|j| s.xtr(&s.x, &r, j, rsum)).collect();
        let r2: f64 = r.iter().map(|v| v * v).sum();
        let ry: f64 = r.iter().zip(&s.yc).map(|(a, b)| a * b).sum();
        let lambda = *s.lambdas.last().expect("at least one λ");
        let gap = s.gap(&xtr, r2, ry, &beta, lambda);
        let n = s.n as f64;
        let l1: f64 = beta.iter().map(|b| b.abs()).sum();
        let objective = 0.5 * r2 / n + lambda * l1;
        let coef: Vec<f64> = beta.iter().zip(&s.scale).map(|(b, sc)| b * sc).collect();
        let intercept = s.y_mean - coef.iter().zip(&s.mu).map(|(c, m)| c * m).sum::<f64>();
        let nnz = beta.iter().filter(|b| **b != 0.0).count();
        let model = LassoModel {
            coef: coef.clone(),
            intercept,
        };
        let mut metrics = vec![
            ("objective".to_string(), objective),
            ("nnz".to_string(), nnz as f64),
            ("lambda".to_string(), lambda),
            ("duality_gap".to_string(), gap / n),
            (
                "relative_gap".to_string(),
                if s.yc_norm2 > 0.0 {
                    gap / s.yc_norm2
                } else {
                    0.0
                },
            ),
            (
                "train_r2".to_string(),
                1.0 - r2 / s.yc_norm2.max(f64::MIN_POSITIVE),
            ),
        ];
        if let Some(t) = &self.test {
            let (r2t, rmse) = model.score(t);
            metrics.push(("r2".into(), r2t));
            metrics.push(("rmse".into(), rmse));
        }
        let mut file = ModelFile::new(NAME);
        file.set("num_features", s.d);
        file.set("input_format", &self.input.format);
        file.set("label_column", &self.input.label_column);
        if let Some(e) = &self.input.csv {
            file.set("csv_encoding", e.to_json());
        }
        file.set(
            "target_transform",
            serde_json::to_string(&s.params.target_transform)?.trim_matches('"'),
        );
        file.set("intercept", intercept);
        file.set("params", serde_json::to_string(&s.params)?);
        file.set("lambdas", serde_json::to_string(&s.lambdas)?);
        file.set_metrics(&metrics);
        file.add_tensor("coef", vec![s.d], coef.iter().map(|&v| v as f32).collect());
        file.add_tensor("intercept", vec![1], vec![intercept as f32]);
        if s.lambdas.len() > 1 {
            let mut path_coef = Vec::with_capacity(s.lambdas.len() * s.d);
            tables.prefetch(PATH, 0..s.lambdas.len() as u64)?;
            for k in 0..s.lambdas.len() {
                let row = tables.read::<f64>(PATH, k as u64)?.to_dense(s.d as u32);
                path_coef.extend(row.iter().zip(&s.scale).map(|(b, sc)| (b * sc) as f32));
            }
            file.add_tensor("path_coef", vec![s.lambdas.len(), s.d], path_coef);
            file.add_tensor(
                "path_lambda",
                vec![s.lambdas.len()],
                s.lambdas.iter().map(|&l| l as f32).collect(),
            );
        }
        Ok(ModelSummary {
            bytes: file.save(path)?,
            metrics,
        })
    }
}

struct LassoWorker {
    shared: Arc<Shared>,
    rounds: Rounds,
    /// Worker 0 schedules.
    scheduler: Option<Box<dyn Scheduler>>,
    worker: u32,
    /// This worker's rows, by column (a view of the shared matrix).
    x: RowRange,
    colsum: Vec<f64>,
    yc: Vec<f64>,
    /// `r' = y_c − X S β̃` on this worker's rows; the residual is `r' + shift`
    /// with `shift = Σ_j s_j μ_j β̃_j` (centring without densifying X).
    resid: Vec<f64>,
    shift: f64,
    /// β̃, the same on every worker.
    beta: Vec<f64>,
    /// Coordinates screened out at the current λ.
    screened: Vec<bool>,
    stage: usize,
    done: bool,
    /// The newest relative duality gap (for the progress; not checkpointed).
    gap: Option<f64>,
    /// Working sets: the last block and this worker's Gram values of it
    /// (a cache: recomputing gives the same bits, so it is not
    /// checkpointed).
    gram_cache: Option<(Vec<u32>, Vec<f64>)>,
    /// Working sets: the partials row, reused from clock to clock.
    buf: Vec<f64>,
}

impl LassoWorker {
    /// The residual after `β̃_j += delta`.
    fn move_residual(&mut self, j: usize, delta: f64) {
        let s = &*self.shared;
        let step = s.scale[j] * delta;
        let (rows, vals) = self.x.col(&s.x, j);
        let row0 = self.x.row0;
        for (&i, v) in rows.iter().zip(vals) {
            self.resid[(i - row0) as usize] -= v * step;
        }
        self.shift += s.mu[j] * step;
    }

    fn rsum(&self) -> f64 {
        self.resid.iter().sum::<f64>() + self.resid.len() as f64 * self.shift
    }

    fn partial(&self, j: usize, rsum: f64) -> f64 {
        let (rows, vals) = self.x.col(&self.shared.x, j);
        let dot =
            data::gather_dot(rows, vals, &self.resid, self.x.row0) + self.shift * self.colsum[j];
        self.shared.scale[j] * (dot - self.shared.mu[j] * rsum)
    }

    /// Reads the duality gap of the state this clock starts from (`row`:
    /// `X̃ᵀr`, `||r||²`, `rᵀy_c` summed over the workers), applies Gap Safe
    /// screening, and moves to the next λ of the path when converged.
    /// True when the job is done (the last λ converged).
    fn after_gap(
        &mut self,
        ctx: &mut WorkerCtx,
        c: u64,
        row: &[f64],
        beta: &mut [f64],
        lambda: &mut f64,
        changed: &mut Vec<(u32, f64)>,
    ) -> Result<bool, BoxError> {
        let shared = self.shared.clone();
        let s = &*shared;
        let nf = s.n as f64;
        let gap = s.gap(&row[..s.d], row[s.d], row[s.d + 1], beta, *lambda);
        self.gap = Some(gap / s.yc_norm2.max(f64::MIN_POSITIVE));
        if self.worker == 0 {
            tracing::info!(
                clock = c,
                lambda = *lambda,
                duality_gap = gap / nf,
                relative_gap = gap / s.yc_norm2.max(f64::MIN_POSITIVE),
                nnz = beta.iter().filter(|b| **b != 0.0).count(),
                "lasso"
            );
        }
        if !s.converged(gap) && s.params.screening {
            // Gap Safe screening (Fercoq, Gramfort and Salmon, ICML
            // 2015): the optimum lies in the ball of radius
            // sqrt(2 gap) / (λn) around the rescaled dual point, so a
            // coordinate with |x̃_jᵀθ| + radius ||x̃_j|| < 1 is zero at
            // the optimum of this λ: set it to zero and stop scheduling
            // it. Every worker screens the same coordinates.
            let alpha = *lambda * nf;
            let dual = row[..s.d].iter().fold(alpha, |m, v| m.max(v.abs()));
            let radius = (2.0 * gap.max(0.0)).sqrt() / alpha;
            for j in 0..s.d {
                if !self.screened[j] && row[j].abs() / dual + radius * (nf * s.z[j]).sqrt() < 1.0 {
                    self.screened[j] = true;
                    if beta[j] != 0.0 {
                        let delta = -beta[j];
                        beta[j] = 0.0;
                        self.move_residual(j, delta);
                        changed.push((j as u32, delta));
                    }
                }
            }
        }
        if s.converged(gap) {
            if self.worker == 0 && s.lambdas.len() > 1 {
                let tp = ctx.table::<f64>(PATH)?;
                ctx.batch_inc(tp, self.stage as u64, beta)?;
            }
            if self.stage + 1 == s.lambdas.len() {
                self.done = true;
                return Ok(true);
            }
            self.stage += 1;
            *lambda = s.lambdas[self.stage];
            self.screened.iter_mut().for_each(|x| *x = false);
        }
        Ok(false)
    }

    /// Worker 0, the only writer of `lasso_beta`, records the coordinates
    /// of `changed`: it reads the table's exact value and adds the
    /// difference, so a coordinate set to zero is exactly zero in the
    /// table, whatever rounding its history left.
    fn record_beta(
        &self,
        ctx: &mut WorkerCtx,
        beta: &[f64],
        changed: &[(u32, f64)],
    ) -> Result<(), BoxError> {
        if self.worker != 0 || changed.iter().all(|c| c.1 == 0.0) {
            return Ok(());
        }
        let tb = ctx.table::<f64>(BETA)?;
        let mut recorded = Vec::new();
        ctx.get_dense_into(tb, 0, &mut recorded)?;
        let inc: Vec<(u32, f64)> = changed
            .iter()
            .map(|&(j, _)| (j, beta[j as usize] - recorded[j as usize]))
            .filter(|c| c.1 != 0.0)
            .collect();
        if !inc.is_empty() {
            ctx.batch_inc_sparse(tb, 0, &inc)?;
        }
        Ok(())
    }

    /// The summed Gram values of round `round`'s block of `m` coordinates.
    fn read_gram(&self, ctx: &mut WorkerCtx, round: u64, m: usize) -> Result<Vec<f64>, BoxError> {
        let s = &*self.shared;
        let tg = ctx.table::<f64>(GRAM)?;
        let mut gram = Vec::with_capacity(m * m.saturating_sub(1) / 2);
        let mut chunk = Vec::new();
        let first = ring_row(round) * s.gram_rows();
        ctx.prefetch(tg, first..first + gram_chunks(m) as u64)?;
        for k in 0..gram_chunks(m) as u64 {
            ctx.get_dense_into(tg, ring_row(round) * s.gram_rows() + k, &mut chunk)?;
            gram.extend_from_slice(&chunk);
        }
        gram.truncate(m * m.saturating_sub(1) / 2);
        Ok(gram)
    }

    /// This worker's gap sums of the current state: `X̃ᵀr` (one value per
    /// coordinate), `||r||²`, `rᵀy_c`.
    fn gap_sums(&self, rsum: f64) -> Vec<f64> {
        let mut row = Vec::with_capacity(self.shared.d + 2);
        self.gap_sums_into(rsum, &mut row);
        row
    }

    /// [`Self::gap_sums`], appended to `row`.
    fn gap_sums_into(&self, rsum: f64, row: &mut Vec<f64>) {
        row.extend((0..self.shared.d).map(|j| self.partial(j, rsum)));
        let (mut r2, mut ry) = (0.0, 0.0);
        for (r, y) in self.resid.iter().zip(&self.yc) {
            let r = r + self.shift;
            r2 += r * r;
            ry += r * y;
        }
        row.push(r2);
        row.push(ry);
    }

    /// A working-set round (`scheduler = "working_set"`), clock `c`:
    ///
    /// 1. read round `c - 1`'s sums: `X̃ᵀr`, `||r||²`, `rᵀy_c` of the state
    ///    the clock starts from, and the Gram matrix of round `c - 1`'s
    ///    block; compute the duality gap, screen, stop when converged;
    /// 2. solve round `c - 1`'s block exactly (every worker the same
    ///    arithmetic): cyclic coordinate descent on the block, its
    ///    gradients kept current through the Gram matrix;
    /// 3. choose round `c`'s block from the gradients (the block just
    ///    solved exactly, the others as of the clock's start): the
    ///    non-zeros and the zeros nearest to or beyond `|x̃_jᵀr|/n = λ`
    ///    ([`block::select`]); worker 0 records it in the schedule table;
    /// 4. add this worker's sums of the new state and of the new block.
    fn step_working_set(&mut self, ctx: &mut WorkerCtx, c: u64) -> Result<StepStats, BoxError> {
        let shared = self.shared.clone();
        let s = &*shared;
        let mut beta = std::mem::take(&mut self.beta);
        let mut lambda = s.lambdas[self.stage];
        let mut changed: Vec<(u32, f64)> = Vec::new();
        let mut row = std::mem::take(&mut self.buf);
        let grad = if c == 0 {
            s.xty.clone()
        } else {
            let prev = self.rounds.read_schedule(ctx, c - 1)?;
            self.rounds.read_row_into(ctx, c - 1, &mut row)?;
            if c == 1 {
                // Clock 0 sent no gap sums: at β = 0 they are X̃ᵀy_c,
                // ||y_c||² and ||y_c||², known to every worker.
                row[..s.d].copy_from_slice(&s.xty);
                row[s.d] = s.yc_norm2;
                row[s.d + 1] = s.yc_norm2;
            }
            if self.after_gap(ctx, c, &row, &mut beta, &mut lambda, &mut changed)? {
                self.buf = row;
                let stats = self.stats(&beta, lambda);
                self.beta = beta;
                return Ok(stats);
            }
            let gram = self.read_gram(ctx, c - 1, prev.len())?;
            let r2 = row[s.d];
            let mut grad = row[..s.d].to_vec();
            // Screening that zeroed a coordinate moved the residual the
            // sums were taken at: the block waits for the next clock's.
            if changed.is_empty() {
                let inner = block::Problem {
                    n: s.n as f64,
                    z: &s.z,
                    lambda,
                    screened: &self.screened,
                    r2,
                    // Solve the block well below the gap the job must reach.
                    tol: 0.1 * s.params.tol * s.yc_norm2,
                };
                for (j, delta) in inner.solve(&prev, &gram, &mut grad, &mut beta) {
                    self.move_residual(j as usize, delta);
                    changed.push((j, delta));
                }
            }
            self.record_beta(ctx, &beta, &changed)?;
            grad
        };
        let next = block::select(
            &grad,
            &beta,
            &self.screened,
            &s.z,
            s.n as f64,
            lambda,
            s.block,
        );
        if self.worker == 0 {
            self.rounds.write_schedule(ctx, c, &next)?;
            if c >= 2 {
                // Every worker read round c - 2 at clock c - 1.
                self.rounds.retire_partials(ctx, c - 2)?;
                let m = self.rounds.read_schedule(ctx, c - 2)?.len();
                let tg = ctx.table::<f64>(GRAM)?;
                let first = ring_row(c - 2) * s.gram_rows();
                ctx.prefetch(tg, first..first + gram_chunks(m) as u64)?;
                for k in 0..gram_chunks(m) as u64 {
                    clear_row(ctx, tg, ring_row(c - 2) * s.gram_rows() + k)?;
                }
            }
        }
        row.clear();
        if c == 0 {
            row.resize(s.d + 2, 0.0);
        } else {
            self.gap_sums_into(self.rsum(), &mut row);
        }
        let cached = self.gram_cache.take();
        let gram = block::gram(
            &s.x,
            &self.x,
            &self.colsum,
            &s.mu,
            &s.scale,
            &next,
            cached.as_ref().map(|(b, v)| (b.as_slice(), v.as_slice())),
        );
        let tg = ctx.table::<f64>(GRAM)?;
        let mut chunk = vec![0.0; GRAM_CHUNK];
        for (k, part) in gram.chunks(GRAM_CHUNK).enumerate() {
            chunk[..part.len()].copy_from_slice(part);
            chunk[part.len()..].fill(0.0);
            ctx.batch_inc(tg, ring_row(c) * s.gram_rows() + k as u64, &chunk)?;
        }
        self.gram_cache = Some((next, gram));
        self.rounds.push_row(ctx, c, &row)?;
        self.buf = row;
        let stats = self.stats(&beta, lambda);
        self.beta = beta;
        Ok(stats)
    }

    fn stats(&self, beta: &[f64], lambda: f64) -> StepStats {
        let s = &*self.shared;
        let mut obj: f64 = self
            .resid
            .iter()
            .map(|r| (r + self.shift) * (r + self.shift))
            .sum::<f64>()
            * 0.5;
        if self.worker == 0 {
            obj += s.n as f64 * lambda * beta.iter().map(|b| b.abs()).sum::<f64>();
        }
        let mut metrics =
            ClockMetrics::default().with("nnz", beta.iter().filter(|b| **b != 0.0).count() as f64);
        if let Some(gap) = self.gap {
            metrics.push("relative_gap", gap);
        }
        StepStats {
            objective: obj,
            weight: self.resid.len() as f64,
            samples: self.resid.len() as u64,
            metrics,
        }
    }
}

impl AlgoWorker for LassoWorker {
    fn step(&mut self, ctx: &mut WorkerCtx, rng: &mut ChaCha8Rng) -> Result<StepStats, BoxError> {
        let shared = self.shared.clone();
        let s = &*shared;
        let c = ctx.clock_now();
        if s.working_set() {
            return self.step_working_set(ctx, c);
        }
        let nf = s.n as f64;
        // Every worker keeps the same copy of β̃: under (non-deterministic)
        // BSP a read of `lasso_beta` at clock c may already include worker
        // 0's increments of clock c, so the table is the record, not the
        // source, of the current value.
        let mut beta = std::mem::take(&mut self.beta);
        let mut lambda = s.lambdas[self.stage];
        // Coordinates changed this clock, with their changes.
        let mut changed: Vec<(u32, f64)> = Vec::new();
        // The gap of the state this clock starts from (computed last clock).
        if c >= 1 && (c - 1).is_multiple_of(s.gap_every) {
            let tg = ctx.table::<f64>(GAP)?;
            let mut row = Vec::new();
            ctx.get_dense_into(tg, gap_row(c - 1, s.gap_every), &mut row)?;
            if self.after_gap(ctx, c, &row, &mut beta, &mut lambda, &mut changed)? {
                let stats = self.stats(&beta, lambda);
                self.beta = beta;
                return Ok(stats);
            }
        }
        // Apply the previous round.
        if c >= 1 {
            let block = self.rounds.read_schedule(ctx, c - 1)?;
            let (g, _) = self.rounds.read_partials(ctx, c - 1, block.len())?;
            for (&j, &gj) in block.iter().zip(&g) {
                let ju = j as usize;
                let z = s.z[ju];
                let old = beta[ju];
                let new = if z > 0.0 && !self.screened[ju] {
                    soft(z * old + gj / nf, lambda) / z
                } else {
                    0.0
                };
                let delta = new - old;
                changed.push((j, delta));
                if delta == 0.0 {
                    continue;
                }
                beta[ju] = new;
                self.move_residual(ju, delta);
            }
            self.record_beta(ctx, &beta, &changed)?;
        }
        let rsum = self.rsum();
        // Gap partials of this state.
        if c.is_multiple_of(s.gap_every) {
            let row = self.gap_sums(rsum);
            let tg = ctx.table::<f64>(GAP)?;
            ctx.batch_inc(tg, gap_row(c, s.gap_every), &row)?;
        }
        // This round's partials.
        let block = self.rounds.read_schedule(ctx, c)?;
        let partials: Vec<f64> = block
            .iter()
            .map(|&j| self.partial(j as usize, rsum))
            .collect();
        self.rounds
            .push_partials(ctx, c, block.len(), &partials, &[])?;
        // The scheduler clears the rows every worker has read (round
        // c - 2's partials, the gap sums of clock c - 2), so the ring rows
        // are zero when they are next written.
        if self.scheduler.is_some() && c >= 2 {
            self.rounds.retire_partials(ctx, c - 2)?;
            if (c - 2).is_multiple_of(s.gap_every) {
                let tg = ctx.table::<f64>(GAP)?;
                clear_row(ctx, tg, gap_row(c - 2, s.gap_every))?;
            }
        }
        // The scheduler picks the next round's block.
        if let Some(scheduler) = &self.scheduler {
            let mut prio = vec![0.0; s.d];
            if s.params.scheduler == LassoScheduler::Schmp {
                let tp = ctx.table::<f64>(PRIORITY)?;
                ctx.get_dense_into(tp, 0, &mut prio)?;
                let mut inc = Vec::with_capacity(changed.len());
                for &(j, delta) in &changed {
                    let p = &mut prio[j as usize];
                    let d = delta.abs() - *p;
                    if d != 0.0 {
                        inc.push((j, d));
                        *p = delta.abs();
                    }
                }
                if !inc.is_empty() {
                    ctx.batch_inc_sparse(tp, 0, &inc)?;
                }
            }
            for (p, _) in prio.iter_mut().zip(&self.screened).filter(|(_, &x)| x) {
                *p = -1.0;
            }
            let next = scheduler.schedule(&prio, rng);
            self.rounds.write_schedule(ctx, c + 1, &next)?;
        }
        let stats = self.stats(&beta, lambda);
        self.beta = beta;
        Ok(stats)
    }

    fn finished(&self) -> bool {
        self.done
    }

    fn save_state(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(25 + 8 * (self.resid.len() + self.beta.len()));
        out.extend_from_slice(&(self.stage as u64).to_le_bytes());
        out.push(self.done as u8);
        out.extend_from_slice(&self.shift.to_le_bytes());
        out.extend_from_slice(&(self.resid.len() as u64).to_le_bytes());
        for r in self.resid.iter().chain(&self.beta) {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend(self.screened.iter().map(|&x| x as u8));
        out
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), BoxError> {
        if state.is_empty() {
            return Ok(());
        }
        let bad = || -> BoxError {
            format!("lasso worker state of {} bytes is corrupt", state.len()).into()
        };
        if state.len() < 25 {
            return Err(bad());
        }
        let u64_at = |o: usize| u64::from_le_bytes(state[o..o + 8].try_into().expect("8 bytes"));
        let stage = u64_at(0) as usize;
        let done = state[8] != 0;
        let shift = f64::from_bits(u64_at(9));
        let len = u64_at(17) as usize;
        let d = self.beta.len();
        if len != self.resid.len()
            || state.len() != 25 + 8 * (len + d) + d
            || stage >= self.shared.lambdas.len()
        {
            return Err(bad());
        }
        for (k, r) in self
            .resid
            .iter_mut()
            .chain(self.beta.iter_mut())
            .enumerate()
        {
            *r = f64::from_bits(u64_at(25 + 8 * k));
        }
        let at = 25 + 8 * (len + d);
        for (x, &b) in self.screened.iter_mut().zip(&state[at..]) {
            *x = b != 0;
        }
        self.stage = stage;
        self.done = done;
        self.shift = shift;
        Ok(())
    }
}

/// A trained Lasso model on the original feature scale.
#[derive(Clone, Debug)]
pub struct LassoModel {
    pub coef: Vec<f64>,
    pub intercept: f64,
}

impl LassoModel {
    pub fn from_file(file: &ModelFile) -> Result<Self, ModelError> {
        let coef = file
            .tensor("coef")?
            .data
            .iter()
            .map(|&v| v as f64)
            .collect();
        let intercept: f64 = file.meta("intercept")?;
        Ok(LassoModel { coef, intercept })
    }

    /// Predictions for every sample of `d`.
    pub fn predict(&self, d: &Design) -> Vec<f64> {
        let mut w = self.coef.clone();
        w.resize(d.d().max(w.len()), 0.0);
        d.x.matvec(&w)
            .into_iter()
            .map(|v| v + self.intercept)
            .collect()
    }

    /// (R², RMSE) on `d`.
    pub fn score(&self, d: &Design) -> (f64, f64) {
        let p = self.predict(d);
        let n = d.n().max(1) as f64;
        let mean = d.y.iter().sum::<f64>() / n;
        let sse: f64 = p.iter().zip(&d.y).map(|(a, b)| (a - b) * (a - b)).sum();
        let sst: f64 = d.y.iter().map(|y| (y - mean) * (y - mean)).sum();
        (1.0 - sse / sst.max(f64::MIN_POSITIVE), (sse / n).sqrt())
    }
}

/// Evaluates a saved Lasso model on `data` (`labels`: targets of a
/// MatrixMarket design): R² and RMSE on the model's target scale.
pub fn evaluate(
    file: &ModelFile,
    data: &Path,
    labels: Option<&Path>,
) -> Result<(usize, Vec<(String, f64)>), crate::eval::EvalError> {
    let m = LassoModel::from_file(file)?;
    let format: String = file.meta("input_format")?;
    let column: String = file.meta("label_column")?;
    let transform = match file.meta::<String>("target_transform")?.as_str() {
        "log" => TargetTransform::Log,
        _ => TargetTransform::None,
    };
    let f = match format.as_str() {
        "csv" => DataFormat::Csv,
        "matrix_market" => DataFormat::MatrixMarket,
        _ => DataFormat::Libsvm,
    };
    let encoding = crate::eval::recorded_encoding(file)?;
    let (d, found) = data::read(f, data, labels, &column, None, transform, encoding.as_ref())?;
    if let Some(found) = &found {
        crate::eval::refuse_unrecorded_text(data, found)?;
    }
    if d.d() > m.coef.len() && f != DataFormat::Libsvm {
        return Err(crate::eval::EvalError::Usage(format!(
            "{} has {} features per sample, the model expects {}",
            data.display(),
            d.d(),
            m.coef.len()
        )));
    }
    let (r2, rmse) = m.score(&d);
    Ok((d.n(), vec![("r2".into(), r2), ("rmse".into(), rmse)]))
}
