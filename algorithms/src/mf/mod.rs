//! Matrix factorisation `R ≈ μ + b 1ᵀ + 1 cᵀ + W Hᵀ` of a ratings matrix,
//! minimising `Σ_(u,i) (r_ui − μ − b_u − c_i − w_uᵀh_i)² + λ (Σ_u n_u
//! (||w_u||² + b_u²) + Σ_i n_i (||h_i||² + c_i²))` (`μ` the mean training
//! rating; `n_u`, `n_i`: ratings of the user / item, the per-rating
//! weighting of LIBMF and ALS-WR; the user and item biases `b`, `c` unless
//! `biases = false`).
//!
//! The biases are two more ranks with one side pinned at 1: rank `rank`
//! is `(b, 1)` and rank `rank + 1` is `(1, c)`, so every solver and table
//! treats them as factors, and a pinned side is never updated.
//!
//! **`ccd`** (default): CCD++ (Yu et al., ICDM 2012) as a Strads program.
//! The model is two tables with a row per rank: row `k` of `mf_W` is the
//! column `W[:, k]` (one value per user), of `mf_H` the column `H[:, k]`.
//! The schedule is static: clock `c` updates rank `k = (c / 2·inner) mod
//! rank`, users on even clocks, items on odd ones; users and items are
//! partitioned over the workers, and each worker updates its own users'
//! (items') entries of the rank and writes them to the table. A worker
//! keeps the residuals of its users' ratings and of its items' ratings and
//! brings them up to date with the other side's changes read from the
//! table the next clock (`W` is written only on even clocks and read on odd
//! ones, `H` the other way round, so under BSP every read is complete and
//! the same for everyone).
//!
//! **`sgd`**: Bosen-style data-parallel SGD: each clock every worker runs
//! one pass over a `1/batches` share of its ratings (users partitioned
//! over workers) on its copy of the model with AdaGrad step sizes
//! (per-row accumulated squared gradients, as LIBMF) and adds its changes
//! to the tables.

pub mod data;

use crate::model::{ModelError, ModelFile};
use data::{Columns, IdMap, Ratings};
use petuum_core::algorithm::{
    AlgoWorker, Algorithm, BoxError, ClockMetrics, ModelSummary, StepStats, TableDecl, TableLoader,
    TableReader,
};
use petuum_core::spec::{
    check_positive, check_range, parse_params, DataFormat, JobSpec, SpecError,
};
use petuum_core::worker::Table;
use petuum_core::{ElemType, Row, RowKind, WorkerCtx};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

pub const NAME: &str = "mf";
const W_TABLE: &str = "mf_W";
const H_TABLE: &str = "mf_H";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Solver {
    Ccd,
    Sgd,
}

fn d_rank() -> usize {
    10
}
/// LIBMF's default L2 weight (per rating, as here).
fn d_lambda() -> f64 {
    0.1
}
fn d_solver() -> Solver {
    Solver::Ccd
}
fn d_inner() -> usize {
    1
}
fn d_lr() -> f64 {
    0.1
}
fn d_batches() -> usize {
    1
}
fn d_biases() -> bool {
    true
}
fn d_user() -> String {
    "user".into()
}
fn d_item() -> String {
    "item".into()
}
fn d_rating() -> String {
    "rating".into()
}

/// `[params]` of an `mf` job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfParams {
    #[serde(default = "d_rank")]
    pub rank: usize,
    /// L2 weight per rating.
    #[serde(default = "d_lambda")]
    pub lambda: f64,
    /// `ccd` (CCD++ over Strads) or `sgd` (data-parallel, AdaGrad).
    #[serde(default = "d_solver")]
    pub solver: Solver,
    /// CCD++: alternations between a rank's users and items before the
    /// next rank.
    #[serde(default = "d_inner")]
    pub inner: usize,
    /// SGD: AdaGrad's base step size.
    #[serde(default = "d_lr")]
    pub learning_rate: f64,
    /// SGD: clocks per pass over the data.
    #[serde(default = "d_batches")]
    pub batches: usize,
    /// Fit a bias per user and per item (two ranks with one side pinned
    /// at 1), regularised like the factors.
    #[serde(default = "d_biases")]
    pub biases: bool,
    /// CSV ratings: the column names.
    #[serde(default = "d_user")]
    pub user_column: String,
    #[serde(default = "d_item")]
    pub item_column: String,
    #[serde(default = "d_rating")]
    pub rating_column: String,
}

impl MfParams {
    /// Clocks of one pass over the ratings: CCD++ updates each rank's
    /// users then items (`inner` times) on clocks of their own, the two
    /// bias ranks included; SGD makes a pass in `batches` clocks.
    pub fn clocks_per_pass(&self) -> usize {
        match self.solver {
            Solver::Ccd => 2 * self.inner * (self.rank + if self.biases { 2 } else { 0 }),
            Solver::Sgd => self.batches,
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        check_range("params.rank", self.rank, 1, 1024)?;
        check_positive("params.lambda", self.lambda)?;
        check_range("params.inner", self.inner, 1, 100)?;
        check_positive("params.learning_rate", self.learning_rate)?;
        check_range("params.batches", self.batches, 1, 1 << 20)?;
        Ok(())
    }

    fn columns(&self) -> Columns {
        Columns {
            user: self.user_column.clone(),
            item: self.item_column.clone(),
            rating: self.rating_column.clone(),
        }
    }
}

/// Validates an `mf` spec without reading data.
pub fn validate(spec: &JobSpec) -> Result<(), SpecError> {
    let p: MfParams = parse_params(&spec.params)?;
    p.validate()?;
    if p.solver == Solver::Ccd {
        crate::strads::require_bsp(spec)?;
    }
    match spec.data.format {
        DataFormat::Csv | DataFormat::MatrixMarket | DataFormat::Triples => Ok(()),
        other => Err(SpecError::invalid(
            "data.format",
            format!("mf reads csv, matrix_market or triples ratings, not `{other:?}`")
                .to_lowercase(),
        )),
    }
}

/// Builds an `mf` job from its spec (reads the ratings).
pub fn build(spec: &JobSpec) -> Result<Mf, crate::registry::BuildError> {
    validate(spec)?;
    let params: MfParams = parse_params(&spec.params)?;
    let loaded = data::load(&spec.data, &params.columns())?;
    // A factor row (and bias) per user and per item.
    let rows = (loaded.users.ids.len() + loaded.items.ids.len()) as u128;
    crate::limits::check_model(
        "params.rank",
        &format!("{rows} users and items x rank {}", params.rank),
        rows * (params.rank as u128 + 2),
    )?;
    let format = match spec.data.format {
        DataFormat::Csv => "csv",
        DataFormat::MatrixMarket => "matrix_market",
        _ => "triples",
    };
    let mean = loaded.train.value.iter().sum::<f64>() / loaded.train.len().max(1) as f64;
    Ok(Mf {
        shared: Arc::new(Shared {
            params,
            mean,
            users: loaded.users,
            items: loaded.items,
            train: loaded.train,
            test: loaded.test,
            seed: spec.run.seed,
        }),
        unseen: loaded.unseen,
        format: format.into(),
    })
}

struct Shared {
    params: MfParams,
    /// The mean training rating, fitted as a global bias (as LIBMF does).
    mean: f64,
    users: IdMap,
    items: IdMap,
    train: Ratings,
    test: Option<Ratings>,
    seed: u64,
}

impl Shared {
    fn m(&self) -> usize {
        self.users.len()
    }
    fn n(&self) -> usize {
        self.items.len()
    }
    /// Ranks of the tables and the solvers: the factors, then the two
    /// bias ranks.
    fn width(&self) -> usize {
        self.params.rank + if self.params.biases { 2 } else { 0 }
    }
    /// Whether `W`'s side of rank `f` is pinned at 1 (the item biases').
    fn pinned_w(&self, f: usize) -> bool {
        self.params.biases && f == self.params.rank + 1
    }
    /// Whether `H`'s side of rank `f` is pinned at 1 (the user biases').
    fn pinned_h(&self, f: usize) -> bool {
        self.params.biases && f == self.params.rank
    }

    /// Initial factors, the same on every worker, rank-major: `H` (and
    /// `W` for SGD) uniform in `[0, 1/sqrt(rank))`; CCD++ starts from `W
    /// = 0`; biases 0, their pinned sides 1.
    fn initial(&self) -> (Vec<f64>, Vec<f64>) {
        let k = self.params.rank;
        let (m, n) = (self.m(), self.n());
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(u64::MAX - 1);
        let s = 1.0 / (k as f64).sqrt();
        let mut h: Vec<f64> = (0..k * n).map(|_| rng.gen::<f64>() * s).collect();
        let mut w: Vec<f64> = match self.params.solver {
            Solver::Ccd => vec![0.0; k * m],
            Solver::Sgd => (0..k * m).map(|_| rng.gen::<f64>() * s).collect(),
        };
        if self.params.biases {
            // Rank k: (b, 1); rank k + 1: (1, c).
            w.extend(std::iter::repeat_n(0.0, m).chain(std::iter::repeat_n(1.0, m)));
            h.extend(std::iter::repeat_n(1.0, n).chain(std::iter::repeat_n(0.0, n)));
        }
        (w, h)
    }
}

/// Matrix factorisation with its ratings loaded.
pub struct Mf {
    shared: Arc<Shared>,
    unseen: usize,
    format: String,
}

/// RMSE of `ratings` under `mean + W Hᵀ`, factors rank-major (`w[k·m + u]`).
fn rmse(r: &Ratings, mean: f64, w: &[f64], h: &[f64], m: usize, n: usize, k: usize) -> f64 {
    let mut sse = 0.0;
    for e in 0..r.len() {
        let (u, i) = (r.user[e] as usize, r.item[e] as usize);
        let p: f64 = mean + (0..k).map(|f| w[f * m + u] * h[f * n + i]).sum::<f64>();
        sse += (r.value[e] - p) * (r.value[e] - p);
    }
    (sse / r.len().max(1) as f64).sqrt()
}

impl Algorithm for Mf {
    fn name(&self) -> &'static str {
        NAME
    }

    fn objective_name(&self) -> &'static str {
        "train MSE"
    }

    fn tables(&self) -> Vec<TableDecl> {
        let s = &self.shared;
        vec![
            TableDecl {
                name: W_TABLE.into(),
                kind: RowKind::Dense,
                elem: ElemType::F64,
                columns: s.m() as u32,
            },
            TableDecl {
                name: H_TABLE.into(),
                kind: RowKind::Dense,
                elem: ElemType::F64,
                columns: s.n() as u32,
            },
        ]
    }

    fn initialize(&self, loader: &TableLoader<'_>) -> Result<(), BoxError> {
        let s = &self.shared;
        let (w, h) = s.initial();
        let (m, n) = (s.m(), s.n());
        let rows = |v: &[f64], width: usize| -> Vec<(u64, Row<f64>)> {
            v.chunks(width)
                .enumerate()
                .map(|(k, c)| (k as u64, Row::Dense(c.to_vec())))
                .collect()
        };
        loader.load(W_TABLE, rows(&w, m))?;
        loader.load(H_TABLE, rows(&h, n))?;
        Ok(())
    }

    fn worker(&self, worker: u32, workers: u32) -> Result<Box<dyn AlgoWorker>, BoxError> {
        let s = &self.shared;
        let (w, h) = s.initial();
        let own_user = |u: u32| u % workers == worker;
        let own_item = |i: u32| i % workers == worker;
        let centred = |e: usize| (s.train.user[e], s.train.item[e], s.train.value[e] - s.mean);
        let mut by_user = Lists::build(
            s.m(),
            (0..s.train.len())
                .map(centred)
                .filter(|&(u, _, _)| own_user(u)),
        );
        let ccd = s.params.solver == Solver::Ccd;
        let mut by_item = Lists::build(
            s.n(),
            (0..s.train.len())
                .map(centred)
                .filter(|&(_, i, _)| ccd && own_item(i))
                .map(|(u, i, r)| (i, u, r)),
        );
        if by_user.idx.is_empty() {
            return Err(format!("worker {worker} of {workers} has no users with ratings").into());
        }
        // CCD++ keeps residuals, starting at r − mean − w·h; SGD the
        // centred ratings.
        let (m, n, k) = (s.m(), s.n(), s.width());
        let pred =
            |u: usize, i: usize| -> f64 { (0..k).map(|f| w[f * m + u] * h[f * n + i]).sum() };
        for u in (0..m).filter(|_| ccd) {
            let (items, res) = by_user.row_mut(u);
            for (i, r) in items.iter().zip(res) {
                *r = (*r as f64 - pred(u, *i as usize)) as f32;
            }
        }
        for i in 0..n {
            let (users, res) = by_item.row_mut(i);
            for (u, r) in users.iter().zip(res) {
                *r = (*r as f64 - pred(*u as usize, i)) as f32;
            }
        }
        let users: Vec<u32> = (0..m as u32).filter(|&u| own_user(u)).collect();
        let users_ratings = users.iter().map(|&u| by_user.row(u as usize).0.len()).sum();
        let items: Vec<u32> = (0..n as u32).filter(|&i| own_item(i)).collect();
        let adagrad = s.params.solver == Solver::Sgd;
        Ok(Box::new(MfWorker {
            shared: s.clone(),
            worker,
            w,
            h,
            by_user,
            by_item,
            users,
            items,
            gw: if adagrad { vec![0.0; m] } else { Vec::new() },
            gh: if adagrad { vec![0.0; n] } else { Vec::new() },
            test_rmse: None,
            last_sse: None,
            rated: users_ratings,
        }))
    }

    fn export(&self, tables: &TableReader<'_>, path: &Path) -> Result<ModelSummary, BoxError> {
        let s = &*self.shared;
        let (m, n, k) = (s.m(), s.n(), s.width());
        let mut w = Vec::with_capacity(k * m);
        let mut h = Vec::with_capacity(k * n);
        tables.prefetch(W_TABLE, 0..k as u64)?;
        tables.prefetch(H_TABLE, 0..k as u64)?;
        for f in 0..k {
            w.extend(tables.read::<f64>(W_TABLE, f as u64)?.to_dense(m as u32));
            h.extend(tables.read::<f64>(H_TABLE, f as u64)?.to_dense(n as u32));
        }
        let mut metrics = vec![(
            "train_rmse".to_string(),
            rmse(&s.train, s.mean, &w, &h, m, n, k),
        )];
        if let Some(t) = &s.test {
            metrics.push(("test_rmse".into(), rmse(t, s.mean, &w, &h, m, n, k)));
            metrics.push(("test_unseen".into(), self.unseen as f64));
        }
        // Saved user-major: W is m x rank, H is n x rank (the factors
        // only); the biases apart.
        let rank = s.params.rank;
        let transpose = |v: &[f64], rows: usize| -> Vec<f32> {
            let mut out = vec![0f32; rows * rank];
            for f in 0..rank {
                for r in 0..rows {
                    out[r * rank + f] = v[f * rows + r] as f32;
                }
            }
            out
        };
        let mut file = ModelFile::new(NAME);
        file.set("rank", rank);
        file.set("mean", s.mean);
        file.set("input_format", &self.format);
        file.set("params", serde_json::to_string(&s.params)?);
        file.set("user_ids", serde_json::to_string(&s.users.ids)?);
        file.set("item_ids", serde_json::to_string(&s.items.ids)?);
        file.set_metrics(&metrics);
        file.add_tensor("W", vec![m, rank], transpose(&w, m));
        file.add_tensor("H", vec![n, rank], transpose(&h, n));
        if s.params.biases {
            let bias = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
            file.add_tensor("user_bias", vec![m], bias(&w[rank * m..(rank + 1) * m]));
            file.add_tensor(
                "item_bias",
                vec![n],
                bias(&h[(rank + 1) * n..(rank + 2) * n]),
            );
        }
        Ok(ModelSummary {
            bytes: file.save(path)?,
            metrics,
        })
    }
}

/// CCD++'s update of one rank for some rows of one side (users, or
/// items): each row `x` of `rows` gets the least-squares value of its
/// factor `mine[x]` against the other side's factor `other`, with L2
/// weight `lambda` per rating, and its residuals follow. With `refresh`
/// (`(own, change)`: this side's factor at the rank the other side just
/// changed, and that change) the residuals first take the other side's
/// change, in the same pass that reads them. With `sse` the squared
/// residuals after the update are added to it, row by row in order.
/// Returns the changes of the factor (`(x, new − old)`, non-zero ones).
/// With `update` false (this side is pinned) the factor stays and only the
/// refresh and the error are done.
#[allow(clippy::too_many_arguments)]
fn half_step(
    lists: &mut Lists,
    rows: &[u32],
    mine: &[f64],
    other: &[f64],
    refresh: Option<(&[f64], &[f64])>,
    lambda: f64,
    update: bool,
    mut sse: Option<&mut f64>,
) -> Vec<(u32, f64)> {
    let mut inc = Vec::with_capacity(rows.len());
    for &x in rows {
        let old = mine[x as usize];
        let (js, res) = lists.row_mut(x as usize);
        let (mut num, mut den) = (0.0, lambda * js.len() as f64);
        match refresh {
            Some((own, change)) => {
                let a = own[x as usize];
                for (&j, r) in js.iter().zip(res.iter_mut()) {
                    let rr = *r as f64 - a * change[j as usize];
                    *r = rr as f32;
                    let v = other[j as usize];
                    num += (*r as f64 + old * v) * v;
                    den += v * v;
                }
            }
            None => {
                for (&j, &r) in js.iter().zip(res.iter()) {
                    let v = other[j as usize];
                    num += (r as f64 + old * v) * v;
                    den += v * v;
                }
            }
        }
        let new = if !update {
            old
        } else if den > 0.0 {
            num / den
        } else {
            0.0
        };
        let d = new - old;
        if d != 0.0 {
            for (&j, r) in js.iter().zip(res.iter_mut()) {
                *r = (*r as f64 - d * other[j as usize]) as f32;
            }
            inc.push((x, d));
        }
        if let Some(sse) = sse.as_deref_mut() {
            for &r in res.iter() {
                *sse += r as f64 * r as f64;
            }
        }
    }
    inc
}

/// Ratings grouped by row (a user's, or an item's), stored compressed:
/// row `x` holds the other ids `idx[at[x]..at[x + 1]]` and the values
/// (centred ratings, or residuals) `val[..]` beside them, in the order
/// they were added. Contiguous rows and separate id and value arrays keep
/// CCD++'s passes over them streaming; values are stored as f32 (the
/// passes are memory-bound; every sum is taken in f64).
#[derive(Clone, Debug, Default)]
struct Lists {
    at: Vec<usize>,
    idx: Vec<u32>,
    val: Vec<f32>,
}

impl Lists {
    /// `entries` are `(row, other id, value)`; rows keep their entries in
    /// the order given.
    fn build(rows: usize, entries: impl Iterator<Item = (u32, u32, f64)> + Clone) -> Lists {
        let mut at = vec![0usize; rows + 1];
        for (x, _, _) in entries.clone() {
            at[x as usize + 1] += 1;
        }
        for x in 0..rows {
            at[x + 1] += at[x];
        }
        let mut fill = at.clone();
        let (mut idx, mut val) = (vec![0u32; at[rows]], vec![0f32; at[rows]]);
        for (x, j, v) in entries {
            let p = &mut fill[x as usize];
            idx[*p] = j;
            val[*p] = v as f32;
            *p += 1;
        }
        Lists { at, idx, val }
    }

    fn row(&self, x: usize) -> (&[u32], &[f32]) {
        let r = self.at[x]..self.at[x + 1];
        (&self.idx[r.clone()], &self.val[r])
    }

    fn row_mut(&mut self, x: usize) -> (&[u32], &mut [f32]) {
        let r = self.at[x]..self.at[x + 1];
        (&self.idx[r.clone()], &mut self.val[r])
    }
}

struct MfWorker {
    shared: Arc<Shared>,
    worker: u32,
    /// Every worker's copy of the factors, rank-major.
    w: Vec<f64>,
    h: Vec<f64>,
    /// Residuals of this worker's users' ratings `(item, r − w·h)`, and of
    /// its items' ratings `(user, r − w·h)` (CCD++).
    by_user: Lists,
    by_item: Lists,
    users: Vec<u32>,
    items: Vec<u32>,
    /// SGD: AdaGrad's accumulated mean squared gradients per row.
    gw: Vec<f64>,
    gh: Vec<f64>,
    /// The newest test RMSE (worker 0), reported with every clock: the
    /// cluster's progress reports are throttled and would mostly miss a
    /// value sent once per pass. Not checkpointed (progress only).
    test_rmse: Option<f64>,
    /// CCD++: the squared error of this worker's ratings at its last
    /// users' clock. Not checkpointed (the residuals are; it is computed
    /// from them again).
    last_sse: Option<f64>,
    /// How many ratings this worker's users have.
    rated: usize,
}

impl MfWorker {
    /// The squared error of this worker's ratings, from its users'
    /// residuals (CCD++).
    fn sse(&self) -> f64 {
        let mut sse = 0.0;
        for &u in &self.users {
            for &r in self.by_user.row(u as usize).1 {
                sse += r as f64 * r as f64;
            }
        }
        sse
    }

    /// Reads row `f` of `table` and returns (new values, the change from
    /// this worker's copy), updating the copy.
    fn refresh(
        ctx: &mut WorkerCtx,
        table: &str,
        f: usize,
        copy: &mut [f64],
    ) -> Result<Vec<f64>, BoxError> {
        let t = ctx.table::<f64>(table)?;
        let mut row = Vec::new();
        ctx.get_dense_into(t, f as u64, &mut row)?;
        let delta: Vec<f64> = row.iter().zip(copy.iter()).map(|(a, b)| a - b).collect();
        copy.copy_from_slice(&row);
        Ok(delta)
    }

    /// One CCD++ clock: rank `f` of this worker's users (even clocks) or
    /// items (odd clocks), after bringing their residuals up to date with
    /// the other side's change of the clock before. On users' clocks it
    /// returns the squared error of this worker's ratings (the users'
    /// residuals are only touched then).
    fn ccd_step(&mut self, ctx: &mut WorkerCtx) -> Result<Option<f64>, BoxError> {
        let s = self.shared.clone();
        let (m, n, k) = (s.m(), s.n(), s.width());
        let lambda = s.params.lambda;
        let c = ctx.clock_now() as usize;
        let per_rank = 2 * s.params.inner;
        let f = (c / per_rank) % k;
        if c.is_multiple_of(2) {
            // Items changed last clock (rank fp): the users' residuals
            // take that change as they are read.
            let dv = if c >= 1 {
                let fp = ((c - 1) / per_rank) % k;
                let dv = Self::refresh(ctx, H_TABLE, fp, &mut self.h[fp * n..(fp + 1) * n])?;
                Some((fp, dv))
            } else {
                None
            };
            let mut sse = 0.0;
            let inc = half_step(
                &mut self.by_user,
                &self.users,
                &self.w[f * m..(f + 1) * m],
                &self.h[f * n..(f + 1) * n],
                dv.as_ref()
                    .map(|(fp, dv)| (&self.w[fp * m..(fp + 1) * m], &dv[..])),
                lambda,
                !s.pinned_w(f),
                Some(&mut sse),
            );
            // The copy of W keeps the table's value until the next clock's
            // read, which applies every user's change (this worker's too)
            // to the items' residuals.
            let t = ctx.table::<f64>(W_TABLE)?;
            ctx.batch_inc_sparse(t, f as u64, &inc)?;
            Ok(Some(sse))
        } else {
            // Users changed last clock (rank f): the items' residuals.
            let du = Self::refresh(ctx, W_TABLE, f, &mut self.w[f * m..(f + 1) * m])?;
            let inc = half_step(
                &mut self.by_item,
                &self.items,
                &self.h[f * n..(f + 1) * n],
                &self.w[f * m..(f + 1) * m],
                Some((&self.h[f * n..(f + 1) * n], &du[..])),
                lambda,
                !s.pinned_h(f),
                None,
            );
            let t = ctx.table::<f64>(H_TABLE)?;
            ctx.batch_inc_sparse(t, f as u64, &inc)?;
            Ok(None)
        }
    }

    /// One SGD clock over this clock's share of the worker's users, then
    /// the squared error of all its ratings. The factors are worked on in
    /// a user- and item-major copy (a rating's two rank-`k` vectors are
    /// contiguous there; the tables, and `w`/`h`, are rank-major), and
    /// only the rows this clock touched are sent and copied back.
    fn sgd_step(
        &mut self,
        ctx: &mut WorkerCtx,
        rng: &mut ChaCha8Rng,
    ) -> Result<(f64, usize), BoxError> {
        let s = self.shared.clone();
        let (m, n, k) = (s.m(), s.n(), s.width());
        let (lambda, eta) = (s.params.lambda, s.params.learning_rate);
        // The pinned sides of the bias ranks take no step.
        let free_w: Vec<f64> = (0..k)
            .map(|f| if s.pinned_w(f) { 0.0 } else { 1.0 })
            .collect();
        let free_h: Vec<f64> = (0..k)
            .map(|f| if s.pinned_h(f) { 0.0 } else { 1.0 })
            .collect();
        let free = s.params.rank as f64 + if s.params.biases { 1.0 } else { 0.0 };
        // The current model (others' changes included as consistency allows).
        let (tw, th) = (ctx.table::<f64>(W_TABLE)?, ctx.table::<f64>(H_TABLE)?);
        let mut row = Vec::new();
        ctx.prefetch(tw, 0..k as u64)?;
        ctx.prefetch(th, 0..k as u64)?;
        for f in 0..k {
            ctx.get_dense_into(tw, f as u64, &mut row)?;
            self.w[f * m..(f + 1) * m].copy_from_slice(&row);
            ctx.get_dense_into(th, f as u64, &mut row)?;
            self.h[f * n..(f + 1) * n].copy_from_slice(&row);
        }
        // `w` and `h` keep the values read until the changes are taken.
        let transpose = |v: &[f64], rows: usize| -> Vec<f64> {
            let mut t = vec![0.0; v.len()];
            for f in 0..k {
                for (x, &val) in v[f * rows..(f + 1) * rows].iter().enumerate() {
                    t[x * k + f] = val;
                }
            }
            t
        };
        let (mut wr, mut hr) = (transpose(&self.w, m), transpose(&self.h, n));
        // This clock's share of the worker's ratings, in a random order.
        let c = ctx.clock_now() as usize;
        let b = s.params.batches;
        let mut todo: Vec<(u32, u32, f64)> = Vec::new();
        let mut touched_u = Vec::new();
        let mut touched_i = vec![false; n];
        for (k_u, &u) in self.users.iter().enumerate() {
            if k_u % b == c % b {
                touched_u.push(u);
                let (items, ratings) = self.by_user.row(u as usize);
                for (&i, &r) in items.iter().zip(ratings) {
                    todo.push((u, i, r as f64));
                    touched_i[i as usize] = true;
                }
            }
        }
        for a in (1..todo.len()).rev() {
            todo.swap(a, rng.gen_range(0..=a));
        }
        let (mut gp, mut gq) = (vec![0.0; k], vec![0.0; k]);
        let touched_i: Vec<u32> = (0..n as u32).filter(|&i| touched_i[i as usize]).collect();
        // With managed communication the clock's changes go to the op log
        // in parts as they are made (a budget's early pushes can only send
        // what is there); otherwise once, at the end.
        let parts = if ctx.manages_communication() {
            MANAGED_PARTS
        } else {
            1
        };
        let part_len = todo.len().div_ceil(parts).max(1);
        // At least one (empty) part: the touched rows' changes are taken
        // whatever the clock sampled.
        let chunks: Vec<&[(u32, u32, f64)]> = if todo.is_empty() {
            vec![&[]]
        } else {
            todo.chunks(part_len).collect()
        };
        for chunk in chunks {
            for &(u, i, r) in chunk {
                let (u, i) = (u as usize, i as usize);
                let (p, q) = (&mut wr[u * k..(u + 1) * k], &mut hr[i * k..(i + 1) * k]);
                let mut e = r;
                for f in 0..k {
                    e -= p[f] * q[f];
                }
                let (mut sp, mut sq) = (0.0, 0.0);
                for f in 0..k {
                    gp[f] = (-e * q[f] + lambda * p[f]) * free_w[f];
                    gq[f] = (-e * p[f] + lambda * q[f]) * free_h[f];
                    sp += gp[f] * gp[f];
                    sq += gq[f] * gq[f];
                }
                self.gw[u] += sp / free;
                self.gh[i] += sq / free;
                let (ap, aq) = (eta / self.gw[u].sqrt(), eta / self.gh[i].sqrt());
                for f in 0..k {
                    p[f] -= ap * gp[f];
                    q[f] -= aq * gq[f];
                }
            }
            push_changes(
                ctx,
                (tw, th),
                (&mut self.w, &mut self.h),
                (&wr, &hr),
                (&touched_u, &touched_i),
                (m, n, k),
            )?;
        }
        let (mut sse, mut count) = (0.0, 0);
        for &u in &self.users {
            let p = &wr[u as usize * k..(u as usize + 1) * k];
            let (items, ratings) = self.by_user.row(u as usize);
            for (&i, &r) in items.iter().zip(ratings) {
                let q = &hr[i as usize * k..(i as usize + 1) * k];
                let pred: f64 = (0..k).map(|f| p[f] * q[f]).sum();
                sse += (r as f64 - pred) * (r as f64 - pred);
                count += 1;
            }
        }
        Ok((sse, count))
    }
}

impl AlgoWorker for MfWorker {
    fn step(&mut self, ctx: &mut WorkerCtx, rng: &mut ChaCha8Rng) -> Result<StepStats, BoxError> {
        let s = self.shared.clone();
        let (sse, count) = match s.params.solver {
            Solver::Ccd => {
                // Items' clocks leave the users' residuals as they were:
                // the error is the users' clock's (or, first thing after a
                // restore, computed again from the same residuals).
                let sse = match self.ccd_step(ctx)? {
                    Some(sse) => sse,
                    None => match self.last_sse {
                        Some(sse) => sse,
                        None => self.sse(),
                    },
                };
                self.last_sse = Some(sse);
                (sse, self.rated)
            }
            Solver::Sgd => self.sgd_step(ctx, rng)?,
        };
        // Test RMSE once per pass (CCD++: every rank updated once), by worker 0.
        let c = ctx.clock_now() as usize + 1;
        let epoch = match s.params.solver {
            Solver::Ccd => 2 * s.params.inner * s.width(),
            Solver::Sgd => s.params.batches,
        };
        let mut metrics = ClockMetrics::default();
        if self.worker == 0 && c.is_multiple_of(epoch) {
            if let Some(t) = &s.test {
                let r = rmse(t, s.mean, &self.w, &self.h, s.m(), s.n(), s.width());
                self.test_rmse = Some(r);
                tracing::info!(
                    clock = c,
                    train_mse = sse / count.max(1) as f64,
                    test_rmse = r,
                    "mf"
                );
            }
        }
        if let Some(r) = self.test_rmse {
            metrics.push("test_rmse", r);
        }
        Ok(StepStats {
            objective: sse,
            weight: count as f64,
            samples: count as u64,
            metrics,
        })
    }

    fn save_state(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |v: &[f64]| {
            out.extend_from_slice(&(v.len() as u64).to_le_bytes());
            for x in v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
        put(&self.w);
        put(&self.h);
        put(&self.gw);
        put(&self.gh);
        // The residuals widened to f64 (exact): the state's layout is the
        // same as when they were stored as f64.
        let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        put(&wide(&self.by_user.val));
        put(&wide(&self.by_item.val));
        out
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), BoxError> {
        if state.is_empty() {
            return Ok(());
        }
        let mut at = 0usize;
        let mut take = |want: usize| -> Result<Vec<f64>, BoxError> {
            let bad = || -> BoxError { "mf worker state is corrupt".into() };
            let len =
                u64::from_le_bytes(state.get(at..at + 8).ok_or_else(bad)?.try_into()?) as usize;
            if len != want {
                return Err(bad());
            }
            at += 8;
            let bytes = state.get(at..at + 8 * len).ok_or_else(bad)?;
            at += 8 * len;
            Ok(bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect())
        };
        self.w = take(self.w.len())?;
        self.h = take(self.h.len())?;
        self.gw = take(self.gw.len())?;
        self.gh = take(self.gh.len())?;
        let narrow = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
        self.by_user.val = narrow(take(self.by_user.val.len())?);
        self.by_item.val = narrow(take(self.by_item.val.len())?);
        self.last_sse = None;
        Ok(())
    }
}

/// A trained factorisation.
#[derive(Clone, Debug)]
pub struct MfModel {
    pub rank: usize,
    pub mean: f64,
    /// `users x rank`, `items x rank`, row-major.
    pub w: Vec<f32>,
    pub h: Vec<f32>,
    /// Per user, per item (empty in a model without biases).
    pub user_bias: Vec<f32>,
    pub item_bias: Vec<f32>,
    pub users: IdMap,
    pub items: IdMap,
}

impl MfModel {
    pub fn from_file(file: &ModelFile) -> Result<Self, ModelError> {
        let ids = |key: &str| -> Result<IdMap, ModelError> {
            let v: Vec<String> = serde_json::from_str(&file.meta::<String>(key)?).map_err(|e| {
                ModelError::Metadata {
                    path: file.path.clone(),
                    key: key.into(),
                    reason: e.to_string(),
                }
            })?;
            Ok(IdMap::from_ids(v))
        };
        // A model saved before biases existed has none.
        let bias = |key: &str| -> Result<Vec<f32>, ModelError> {
            match file.tensor(key) {
                Ok(t) => Ok(t.data.clone()),
                Err(ModelError::MissingTensor { .. }) => Ok(Vec::new()),
                Err(e) => Err(e),
            }
        };
        let m = MfModel {
            rank: file.meta("rank")?,
            mean: file.meta("mean")?,
            w: file.tensor("W")?.data.clone(),
            h: file.tensor("H")?.data.clone(),
            user_bias: bias("user_bias")?,
            item_bias: bias("item_bias")?,
            users: ids("user_ids")?,
            items: ids("item_ids")?,
        };
        let shapes = [
            ("W", m.w.len(), m.users.len() * m.rank),
            ("H", m.h.len(), m.items.len() * m.rank),
            ("user_bias", m.user_bias.len(), m.users.len()),
            ("item_bias", m.item_bias.len(), m.items.len()),
        ];
        for (name, got, want) in shapes {
            let optional = name.ends_with("_bias") && got == 0;
            if got != want && !optional {
                return Err(ModelError::Format {
                    path: file.path.clone(),
                    reason: format!(
                        "tensor `{name}` has {got} values, the model's ids and rank need {want}"
                    ),
                });
            }
        }
        Ok(m)
    }

    fn score(&self, u: usize, i: usize) -> f64 {
        let k = self.rank;
        self.mean
            + self.user_bias.get(u).copied().unwrap_or(0.0) as f64
            + self.item_bias.get(i).copied().unwrap_or(0.0) as f64
            + (0..k)
                .map(|f| self.w[u * k + f] as f64 * self.h[i * k + f] as f64)
                .sum::<f64>()
    }

    /// The `n` items with the highest predicted rating for `user` (a raw
    /// id as in the training data), best first (ties: the earlier item),
    /// skipping `exclude`; `None` when the model does not know the user.
    pub fn top_n(
        &self,
        user: &str,
        n: usize,
        exclude: &std::collections::HashSet<&str>,
    ) -> Option<Vec<(String, f64)>> {
        let u = self.users.get(user)? as usize;
        let mut scored: Vec<(f64, usize)> = (0..self.items.len())
            .filter(|&i| !exclude.contains(self.items.ids[i].as_str()))
            .map(|i| (self.score(u, i), i))
            .collect();
        let better = |a: &(f64, usize), b: &(f64, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if n < scored.len() {
            // Only the best n need sorting.
            scored.select_nth_unstable_by(n, better);
            scored.truncate(n);
        }
        scored.sort_by(better);
        Some(
            scored
                .into_iter()
                .map(|(s, i)| (self.items.ids[i].clone(), s))
                .collect(),
        )
    }
}

/// Per user asked for, its best items with their predicted ratings.
pub type Recommendations = Vec<(String, Vec<(String, f64)>)>;

/// The best `n` items for each of `users` from a saved factorisation, best
/// first; with `rated` (a ratings file in the training data's format), the
/// items a user rated there are left out.
pub fn recommend(
    file: &ModelFile,
    users: &[String],
    n: usize,
    rated: Option<&Path>,
) -> Result<Recommendations, crate::eval::EvalError> {
    let m = MfModel::from_file(file)?;
    let mut seen: std::collections::HashMap<&str, std::collections::HashSet<&str>> = users
        .iter()
        .map(|u| (u.as_str(), Default::default()))
        .collect();
    let raw;
    if let Some(path) = rated {
        let (format, params) = saved_input(file)?;
        raw = data::read(format, path, &params.columns())?;
        for (u, i) in raw.users.iter().zip(&raw.items) {
            if let Some(set) = seen.get_mut(u.as_str()) {
                set.insert(i.as_str());
            }
        }
    }
    users
        .iter()
        .map(|u| {
            let top = m.top_n(u, n, &seen[u.as_str()]).ok_or_else(|| {
                crate::eval::EvalError::Usage(format!(
                    "user `{}` is not in the model ({} users; ids as in the training data)",
                    u.chars().take(80).collect::<String>(),
                    m.users.len()
                ))
            })?;
            Ok((u.clone(), top))
        })
        .collect()
}

/// How the model's training data was read (format, and the columns).
fn saved_input(file: &ModelFile) -> Result<(DataFormat, MfParams), ModelError> {
    let format = match file.meta::<String>("input_format")?.as_str() {
        "csv" => DataFormat::Csv,
        "matrix_market" => DataFormat::MatrixMarket,
        _ => DataFormat::Triples,
    };
    let params: MfParams = serde_json::from_str(&file.meta::<String>("params")?).map_err(|e| {
        ModelError::Metadata {
            path: file.path.clone(),
            key: "params".into(),
            reason: e.to_string(),
        }
    })?;
    Ok((format, params))
}

/// Evaluates a saved factorisation on a ratings file: RMSE over the
/// ratings whose user and item the model knows, and how many it does not.
pub fn evaluate(
    file: &ModelFile,
    data: &Path,
) -> Result<(usize, Vec<(String, f64)>), crate::eval::EvalError> {
    let m = MfModel::from_file(file)?;
    let (format, params) = saved_input(file)?;
    let raw = data::read(format, data, &params.columns())?;
    let (r, unseen) = data::remap(&raw, &m.users, &m.items);
    let mut sse = 0.0;
    for e in 0..r.len() {
        let p = m.score(r.user[e] as usize, r.item[e] as usize);
        sse += (r.value[e] - p) * (r.value[e] - p);
    }
    Ok((
        r.len(),
        vec![
            ("rmse".into(), (sse / r.len().max(1) as f64).sqrt()),
            ("unseen".into(), unseen as f64),
        ],
    ))
}

/// A seeded low-rank ratings matrix: `W`, `H` with N(0, 1) entries, each
/// (user, item) observed with probability `density`, rating `w_uᵀh_i /
/// sqrt(rank) + sigma · N(0, 1)`. Returns `row col value` lines (1-based).
pub fn synthetic(
    users: usize,
    items: usize,
    rank: usize,
    density: f64,
    sigma: f64,
    seed: u64,
) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = |rng: &mut ChaCha8Rng| -> f64 {
        let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
        let v: f64 = rng.gen();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    };
    let w: Vec<f64> = (0..users * rank).map(|_| normal(&mut rng)).collect();
    let h: Vec<f64> = (0..items * rank).map(|_| normal(&mut rng)).collect();
    let mut out = String::new();
    let scale = 1.0 / (rank as f64).sqrt();
    for u in 0..users {
        for i in 0..items {
            if rng.gen::<f64>() < density {
                let p: f64 = (0..rank)
                    .map(|f| w[u * rank + f] * h[i * rank + f])
                    .sum::<f64>()
                    * scale;
                let r = p + sigma * normal(&mut rng);
                out.push_str(&format!("{} {} {}\n", u + 1, i + 1, r as f32));
            }
        }
    }
    out
}

/// Parts an SGD clock's changes go to the op log in when the job's
/// communication is managed (`run.bandwidth_mbps`).
const MANAGED_PARTS: usize = 8;

/// Adds the changes of the touched rows since the last call (others are
/// unchanged) to the op log, rank by rank in row order; the copies `w`
/// and `h` take the new values.
fn push_changes(
    ctx: &mut WorkerCtx,
    (tw, th): (Table<f64>, Table<f64>),
    (w, h): (&mut [f64], &mut [f64]),
    (wr, hr): (&[f64], &[f64]),
    (touched_u, touched_i): (&[u32], &[u32]),
    (m, n, k): (usize, usize, usize),
) -> Result<(), BoxError> {
    for f in 0..k {
        let mut dw = Vec::with_capacity(touched_u.len());
        for &u in touched_u {
            let (new, old) = (wr[u as usize * k + f], &mut w[f * m + u as usize]);
            if new - *old != 0.0 {
                dw.push((u, new - *old));
            }
            *old = new;
        }
        let mut dh = Vec::with_capacity(touched_i.len());
        for &i in touched_i {
            let (new, old) = (hr[i as usize * k + f], &mut h[f * n + i as usize]);
            if new - *old != 0.0 {
                dh.push((i, new - *old));
            }
            *old = new;
        }
        ctx.batch_inc_sparse(tw, f as u64, &dw)?;
        ctx.batch_inc_sparse(th, f as u64, &dh)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Rank 1, mean 3: user a likes what user b dislikes.
    fn model() -> MfModel {
        let ids = |v: &[&str]| IdMap::from_ids(v.iter().map(|s| s.to_string()).collect());
        MfModel {
            rank: 1,
            mean: 3.0,
            w: vec![1.0, -1.0],
            h: vec![0.5, -1.0, 1.5, 0.5],
            user_bias: Vec::new(),
            item_bias: Vec::new(),
            users: ids(&["a", "b"]),
            items: ids(&["i0", "i1", "i2", "i3"]),
        }
    }

    #[test]
    fn top_n_is_best_first_ties_in_item_order_and_skips_what_is_excluded() {
        let m = model();
        let none = HashSet::new();
        let names = |v: Vec<(String, f64)>| v.into_iter().map(|(i, _)| i).collect::<Vec<_>>();
        assert_eq!(
            m.top_n("a", 3, &none).unwrap(),
            vec![
                ("i2".to_string(), 4.5),
                ("i0".into(), 3.5),
                ("i3".into(), 3.5)
            ]
        );
        assert_eq!(names(m.top_n("b", 2, &none).unwrap()), ["i1", "i0"]);
        let seen: HashSet<&str> = ["i2", "i0"].into();
        assert_eq!(names(m.top_n("a", 10, &seen).unwrap()), ["i3", "i1"]);
        assert_eq!(m.top_n("a", 0, &none).unwrap(), vec![]);
        assert!(m.top_n("c", 3, &none).is_none());
    }

    #[test]
    fn biases_add_to_the_predicted_rating_and_change_the_order() {
        let mut m = model();
        m.user_bias = vec![0.25, -1.0];
        m.item_bias = vec![0.0, 2.0, 0.0, 0.0];
        // a: 3 + 0.25 + c_i + w·h; i1 gets +2 and overtakes i0 and i3.
        assert_eq!(m.score(0, 1), 3.0 + 0.25 + 2.0 - 1.0);
        let top = m.top_n("a", 2, &HashSet::new()).unwrap();
        assert_eq!(top, vec![("i2".to_string(), 4.75), ("i1".into(), 4.25)]);
    }
}
