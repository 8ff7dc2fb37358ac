//! Non-negative matrix factorisation and sparse coding (dictionary
//! learning) over Bosen tables, Petuum's `NMF` and `sparsecoding` apps.
//!
//! Both factor a data matrix `X` (n × d, one sample per row) as `X ≈ W H`
//! with coefficients `W` (n × k) and a dictionary `H` (k × d):
//!
//! - **NMF** (`nmf`): `W, H ≥ 0`, minimising `½ ‖X − WH‖²_F` or the
//!   generalised KL divergence `D(X ‖ WH)` (β = 1).
//! - **Sparse coding** (`sparse_coding`, module [`crate::sparse_coding`]):
//!   minimising `Σᵢ ½ ‖xᵢ − wᵢ H‖² + λ ‖wᵢ‖₁` subject to `‖H_k‖₂ ≤ c`.
//!
//! **Distribution.** Each worker owns the coefficients of its rows (every
//! `workers`-th row); they are its checkpointed worker state. The
//! dictionary lives in the `dictionary` table (k rows of d values). Both
//! problems alternate a coefficient step with a dictionary step, and the
//! dictionary step needs only the sums over all rows of `A = WᵀW` (k × k)
//! and `B = WᵀX` (k × d) (for KL, `Wᵀ(X / WH)` and the column sums of
//! `W`): each clock every worker adds its part of these statistics to rows
//! of the `gram` and `xtw` tables reserved for that clock (`gram`: one
//! small row per clock, kept for the model's history; `xtw`: k rows of d
//! values in a ring of `3s + 3` slots, so the table holds at most
//! `(3s + 3) k d` values: the owner of row `t` zeroes it, by adding the
//! negated sum, at clock `p + 2s + 2`, when every worker has read it and
//! before any worker can write the slot again at clock `p + 3s + 3`). At clock `c`
//! every worker reads the statistics of clock `c − 1 − s` (complete under
//! SSP(s): every worker reads the same stored sums), applies the same
//! deterministic dictionary update (k² d flops, small next to the 2 nnz(X) k
//! of the coefficient step) to its copy of the dictionary, and the owner of
//! each dictionary row (row `k` belongs to worker `k mod workers`) adds the
//! change to the `dictionary` table, from which the model is exported. With
//! BSP (s = 0) a clock is exactly one iteration of scikit-learn's
//! alternating solvers: update `W` with `H` fixed, then `H` with `W` fixed.
//!
//! **Updates.** NMF, Frobenius: coordinate descent on both factors (HALS,
//! Cichocki and Phan 2009; scikit-learn's `solver="cd"`), `passes` sweeps
//! per clock; or multiplicative updates (`solver = "mu"`, Lee and Seung
//! 2001). NMF, KL: multiplicative updates. Sparse coding: codes by cyclic
//! coordinate descent on the lasso (as scikit-learn's `lasso_cd`), warm
//! started from the previous clock's codes; atoms by block coordinate
//! descent with projection onto the ball `‖H_k‖ ≤ c` (scikit-learn's
//! `_update_dict`); an atom no sample uses keeps its value.
//!
//! **Initialisation.** NMF: NNDSVDa (Boutsidis and Gallopoulos 2008, zeros
//! filled with the data mean, scikit-learn's `init="nndsvda"`) from a
//! seeded randomized SVD of all of `X`, computed once by the coordinator:
//! the initial dictionary is loaded into `dictionary`, and the `nndsvd`
//! table holds, per component, the right singular vector and the scalars
//! from which every worker computes its own rows' initial coefficients
//! from its own data, identically whatever the number of workers. Sparse
//! coding: the top right singular vectors scaled by their singular values
//! and projected onto the norm ball (as `MiniBatchDictionaryLearning`),
//! atoms beyond the data's rank from seeded data rows; codes start at 0.
//!
//! **Per clock** the objective (NMF: `½‖X − WH‖²` or `D(X‖WH)`, summed;
//! sparse coding: the mean per sample) at the clock's `(W, H)`; the model
//! records every clock's objective with the relative reconstruction error
//! `‖X − WH‖_F / ‖X‖_F` (NMF) or the mean number of non-zeros per code
//! (sparse coding) as `history`, and worker 0 logs them as clocks complete.

pub mod data;
pub mod linalg;
mod model;
mod params;

pub use model::{top_words, FactorModel};
pub use params::{BetaLoss, NmfParams, Solver, SparseCodingParams};

use crate::model::ModelFile;
use crate::registry::BuildError;
use data::InputDesc;
use petuum_core::algorithm::{
    AlgoWorker, Algorithm, BoxError, ModelSummary, StepStats, TableDecl, TableLoader, TableReader,
};
use petuum_core::spec::{parse_params, DataFormat, JobSpec, SpecError};
use petuum_core::{ElemType, Row, RowKind, WorkerCtx};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::Arc;

pub const NAME: &str = "nmf";

const DICT: &str = "dictionary";
const INIT: &str = "nndsvd";
const XTW: &str = "xtw";
const GRAM: &str = "gram";

/// Scalars after `A` (k²) and the column sums of `W` (k) in a `gram` row.
const S_LOSS: usize = 0;
const S_XX: usize = 1;
const S_SQERR: usize = 2;
const S_NNZ: usize = 3;
const S_ROWS: usize = 4;
const N_SCALARS: usize = 8;

/// Guard for divisions in multiplicative updates (scikit-learn's
/// `EPSILON`, float32 machine epsilon).
pub(crate) const EPSILON: f64 = f32::EPSILON as f64;

/// Which factorisation.
#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    Nmf(NmfParams),
    SparseCoding(SparseCodingParams),
}

impl Problem {
    pub fn k(&self) -> usize {
        match self {
            Problem::Nmf(p) => p.k,
            Problem::SparseCoding(p) => p.k,
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Problem::Nmf(_) => NAME,
            Problem::SparseCoding(_) => crate::sparse_coding::NAME,
        }
    }
}

/// NMF or sparse coding with its data loaded.
pub struct Factorization {
    problem: Problem,
    x: Arc<crate::data::Csr>,
    test: Option<crate::data::Csr>,
    vocab: Vec<String>,
    input: InputDesc,
    seed: u64,
    staleness: u64,
}

/// Formats each problem reads, and a consistency model with a staleness
/// bound (the dictionary step needs complete statistics).
fn check_format(spec: &JobSpec, sparse_coding: bool) -> Result<(), SpecError> {
    if spec.consistency().staleness().is_none() {
        return Err(SpecError::invalid(
            "run.consistency",
            format!(
                "{} needs a staleness bound (bsp, ssp or essp): every worker applies the same dictionary update from complete statistics",
                spec.algorithm
            ),
        ));
    }
    match spec.data.format {
        DataFormat::UciBow | DataFormat::Ldac if sparse_coding => Err(SpecError::invalid(
            "data.format",
            "sparse_coding reads dense data (idx, csv or libsvm), not a bag of words",
        )),
        _ => Ok(()),
    }
}

/// Validates an `nmf` spec without reading data.
pub fn validate(spec: &JobSpec) -> Result<(), SpecError> {
    let p: NmfParams = parse_params(&spec.params)?;
    p.validate()?;
    check_format(spec, false)
}

/// Validates a `sparse_coding` spec without reading data.
pub fn validate_sparse_coding(spec: &JobSpec) -> Result<(), SpecError> {
    let p: SparseCodingParams = parse_params(&spec.params)?;
    p.validate()?;
    check_format(spec, true)
}

/// Builds an `nmf` job.
pub fn build(spec: &JobSpec) -> Result<Factorization, BuildError> {
    validate(spec)?;
    Factorization::from_spec(spec, Problem::Nmf(parse_params(&spec.params)?))
}

/// Builds a `sparse_coding` job.
pub fn build_sparse_coding(spec: &JobSpec) -> Result<Factorization, BuildError> {
    validate_sparse_coding(spec)?;
    Factorization::from_spec(spec, Problem::SparseCoding(parse_params(&spec.params)?))
}

impl Factorization {
    /// Reads the spec's data (`data.test`, or the `data.test_fraction`
    /// hold-out: every `1/f`-th row) and checks it against the problem.
    pub fn from_spec(spec: &JobSpec, problem: Problem) -> Result<Self, BuildError> {
        let d = &spec.data;
        let input = InputDesc::of(d.format, d.label_column.as_deref());
        let all = data::read(&input, &d.train, d.vocab.as_deref(), d.one_based)?;
        // The dictionary (k x columns) and its per-clock statistics.
        let (k, cols) = (problem.k() as u128, all.x.ncols as u128);
        crate::limits::check_model(
            "params.k",
            &format!("a {k} x {cols} dictionary and its statistics"),
            k * (2 * cols + k),
        )?;
        let (train, test) = if let Some(t) = &d.test {
            let mut test = data::read(&input, t, None, d.one_based)?.x;
            let widen = matches!(
                d.format,
                DataFormat::Libsvm | DataFormat::UciBow | DataFormat::Ldac
            );
            if test.ncols > all.x.ncols || (test.ncols < all.x.ncols && !widen) {
                return Err(SpecError::invalid(
                    "data.test",
                    format!(
                        "{} has {} columns, data.train has {}",
                        t.display(),
                        test.ncols,
                        all.x.ncols
                    ),
                )
                .into());
            }
            test.ncols = all.x.ncols;
            (all.x, Some(test))
        } else if let Some(f) = d.test_fraction {
            let (tr, te) = data::split(all.x.nrows(), f);
            (data::select(&all.x, &tr), Some(data::select(&all.x, &te)))
        } else {
            (all.x, None)
        };
        let f = Factorization {
            problem,
            x: Arc::new(train),
            test,
            vocab: all.vocab,
            input,
            seed: spec.run.seed,
            staleness: spec.consistency().staleness().unwrap_or(0) as u64,
        };
        f.check(&d.train, d.test.as_deref())?;
        Ok(f)
    }

    /// Builds from data in memory (tests, benchmarks).
    pub fn new(
        problem: Problem,
        train: crate::data::Csr,
        test: Option<crate::data::Csr>,
        vocab: Vec<String>,
        seed: u64,
        staleness: u64,
    ) -> Result<Self, SpecError> {
        let f = Factorization {
            problem,
            x: Arc::new(train),
            test,
            vocab,
            input: InputDesc::of(DataFormat::Libsvm, None),
            seed,
            staleness,
        };
        f.check(Path::new("data.train"), None)?;
        Ok(f)
    }

    fn check(&self, train: &Path, test: Option<&Path>) -> Result<(), SpecError> {
        let (n, d, k) = (self.x.nrows(), self.x.ncols, self.problem.k());
        if self.x.nnz() == 0 {
            return Err(SpecError::invalid(
                "data.train",
                format!("{}: every value is zero", train.display()),
            ));
        }
        if let Problem::Nmf(_) = self.problem {
            for (x, field, path) in [
                (Some(self.x.as_ref()), "data.train", Some(train)),
                (self.test.as_ref(), "data.test", test.or(Some(train))),
            ] {
                if let (Some(x), Some(path)) = (x, path) {
                    if let Some((i, j, v)) = data::first_negative(x) {
                        return Err(SpecError::invalid(
                            field,
                            format!(
                                "{}: value {v} at row {} column {}: NMF needs non-negative data",
                                path.display(),
                                i + 1,
                                j + 1
                            ),
                        ));
                    }
                }
            }
            if k > n.min(d) {
                return Err(SpecError::invalid(
                    "params.k",
                    format!(
                        "k = {k} exceeds min(rows, columns) = min({n}, {d}) of the training data (NNDSVD needs k <= {})",
                        n.min(d)
                    ),
                ));
            }
        } else if k > n {
            return Err(SpecError::invalid(
                "params.k",
                format!("k = {k} atoms but the training data have only {n} rows"),
            ));
        }
        Ok(())
    }

    fn k(&self) -> usize {
        self.problem.k()
    }

    fn d(&self) -> usize {
        self.x.ncols
    }

    fn gram_cols(&self) -> usize {
        self.k() * self.k() + self.k() + N_SCALARS
    }
}

impl Algorithm for Factorization {
    fn name(&self) -> &'static str {
        self.problem.name()
    }

    fn objective_name(&self) -> &'static str {
        match &self.problem {
            Problem::Nmf(p) if p.beta_loss == BetaLoss::KullbackLeibler => "kl_divergence",
            Problem::Nmf(_) => "frobenius",
            Problem::SparseCoding(_) => "objective_per_sample",
        }
    }

    fn tables(&self) -> Vec<TableDecl> {
        let dense = |name: &str, columns: usize| TableDecl {
            name: name.into(),
            kind: RowKind::Dense,
            elem: ElemType::F64,
            columns: columns as u32,
        };
        let mut t = vec![
            dense(DICT, self.d()),
            dense(XTW, self.d()),
            dense(GRAM, self.gram_cols()),
        ];
        if let Problem::Nmf(_) = self.problem {
            t.push(dense(INIT, self.d() + 3));
        }
        t
    }

    fn initialize(&self, loader: &TableLoader<'_>) -> Result<(), BoxError> {
        let (k, d) = (self.k(), self.d());
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let h = match &self.problem {
            Problem::Nmf(_) => {
                let (h, comps, mean) = linalg::nndsvda(&self.x, k, &mut rng);
                let mut rows: Vec<(u64, Row<f64>)> = comps
                    .into_iter()
                    .enumerate()
                    .map(|(c, comp)| {
                        let mut v = comp.v;
                        v.extend([comp.inv_sigma, comp.sign, comp.scale]);
                        (c as u64, Row::Dense(v))
                    })
                    .collect();
                let mut last = vec![0f64; d + 3];
                last[0] = mean;
                rows.push((k as u64, Row::Dense(last)));
                loader.load(INIT, rows)?;
                h
            }
            Problem::SparseCoding(p) => {
                let (s, v) = linalg::randomized_svd(&self.x, k.min(d), &mut rng);
                let mut h = vec![0f64; k * d];
                for c in 0..k {
                    let row = &mut h[c * d..(c + 1) * d];
                    let top = s.first().copied().unwrap_or(0.0);
                    if c < s.len() && s[c] > 1e-10 * top {
                        for (o, &x) in row.iter_mut().zip(&v[c * d..(c + 1) * d]) {
                            *o = s[c] * x;
                        }
                    } else {
                        // Beyond the data's rank: a seeded data row.
                        let r = rng.gen_range(0..self.x.nrows());
                        let (idx, val) = self.x.row(r);
                        for (&j, &x) in idx.iter().zip(val) {
                            row[j as usize] = x as f64;
                        }
                    }
                    project(row, p.norm_bound);
                }
                h
            }
        };
        let rows = h
            .chunks_exact(d)
            .enumerate()
            .map(|(c, r)| (c as u64, Row::Dense(r.to_vec())))
            .collect();
        loader.load(DICT, rows)?;
        Ok(())
    }

    fn worker(&self, worker: u32, workers: u32) -> Result<Box<dyn AlgoWorker>, BoxError> {
        let rows = crate::data::partition(self.x.nrows(), worker, workers)?;
        let xx = rows
            .iter()
            .map(|&r| {
                self.x
                    .row(r)
                    .1
                    .iter()
                    .map(|&v| (v as f64).powi(2))
                    .sum::<f64>()
            })
            .sum();
        Ok(Box::new(FactorWorker {
            problem: self.problem.clone(),
            k: self.k(),
            d: self.d(),
            w: vec![0.0; rows.len() * self.k()],
            x: self.x.clone(),
            rows,
            xx,
            h: None,
            worker,
            workers,
            staleness: self.staleness,
            done: false,
            losses: std::collections::BTreeMap::new(),
        }))
    }

    fn export(&self, tables: &TableReader<'_>, path: &Path) -> Result<ModelSummary, BoxError> {
        let (k, d) = (self.k(), self.d());
        let mut h = Vec::with_capacity(k * d);
        tables.prefetch(DICT, 0..k as u64)?;
        for c in 0..k {
            h.extend(tables.read::<f64>(DICT, c as u64)?.to_dense(d as u32));
        }
        let clocks = tables.row_ids(GRAM)?.iter().max().map_or(0, |&m| m + 1);
        let mut history = Vec::with_capacity(clocks as usize);
        for c in 0..clocks {
            let g = tables
                .read::<f64>(GRAM, c)?
                .to_dense(self.gram_cols() as u32);
            history.push(ClockStats::from_gram(&g[k * k + k..], &self.problem));
        }
        let model = FactorModel::new(self.problem.clone(), h, k, d);
        let mut metrics = Vec::new();
        if let Some(last) = history.last() {
            metrics.push(("objective".to_string(), last.objective));
            metrics.push((last.second_name(&self.problem).to_string(), last.second));
        }
        if let Some(t) = &self.test {
            let (w, _) = model.transform(t);
            metrics.extend(
                model
                    .metrics(t, &w)
                    .into_iter()
                    .map(|(n, v)| (format!("test_{n}"), v)),
            );
        }
        if let Problem::SparseCoding(_) = self.problem {
            metrics.push(("max_atom_norm".into(), model.max_atom_norm()));
        }
        let mut file = ModelFile::new(self.problem.name());
        model.write_into(&mut file);
        file.set("input_format", &self.input.format);
        file.set("input_scale", self.input.scale);
        if let Some(l) = &self.input.label_column {
            file.set("label_column", l);
        }
        let hist: Vec<[f64; 3]> = history
            .iter()
            .enumerate()
            .map(|(c, s)| [c as f64, s.objective, s.second])
            .collect();
        file.set(
            "history_columns",
            format!(
                "clock,{},{}",
                self.objective_name(),
                history
                    .first()
                    .map_or("relative_error", |s| s.second_name(&self.problem))
            ),
        );
        file.set("history", serde_json::to_string(&hist)?);
        if !self.vocab.is_empty() {
            if let Problem::Nmf(p) = &self.problem {
                let top = top_words(&model, &self.vocab, p.top_words);
                file.set("top_words", serde_json::to_string(&top)?);
                file.set("vocab", serde_json::to_string(&self.vocab)?);
            }
        }
        file.set_metrics(&metrics);
        Ok(ModelSummary {
            bytes: file.save(path)?,
            metrics,
        })
    }
}

/// One clock's global figures, from the summed scalars of its `gram` row.
#[derive(Clone, Copy, Debug)]
struct ClockStats {
    /// The reported objective (NMF: the sum; sparse coding: per sample).
    objective: f64,
    /// NMF: relative reconstruction error; sparse coding: mean non-zeros
    /// per code.
    second: f64,
}

impl ClockStats {
    fn from_gram(s: &[f64], problem: &Problem) -> ClockStats {
        match problem {
            Problem::Nmf(_) => ClockStats {
                objective: s[S_LOSS],
                second: (s[S_SQERR].max(0.0) / s[S_XX].max(f64::MIN_POSITIVE)).sqrt(),
            },
            Problem::SparseCoding(_) => {
                let rows = s[S_ROWS].max(1.0);
                ClockStats {
                    objective: s[S_LOSS] / rows,
                    second: s[S_NNZ] / rows,
                }
            }
        }
    }

    fn second_name(&self, problem: &Problem) -> &'static str {
        match problem {
            Problem::Nmf(_) => "relative_error",
            Problem::SparseCoding(_) => "mean_nonzeros",
        }
    }
}

/// Projects `row` onto the ball of radius `c`.
pub(crate) fn project(row: &mut [f64], c: f64) {
    let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > c {
        let s = c / norm;
        row.iter_mut().for_each(|x| *x *= s);
    }
}

/// HALS sweeps over the rows of the dictionary given `A = WᵀW` and
/// `B = WᵀX`, keeping it non-negative.
pub(crate) fn hals_dictionary(
    h: &mut [f64],
    a: &[f64],
    b: &[f64],
    k: usize,
    d: usize,
    passes: usize,
) {
    let mut g = vec![0f64; d];
    for _ in 0..passes {
        for t in 0..k {
            let hess = a[t * k + t];
            if hess == 0.0 {
                continue;
            }
            grad_row(h, a, b, k, d, t, &mut g);
            for (x, gj) in h[t * d..(t + 1) * d].iter_mut().zip(&g) {
                *x = (*x - gj / hess).max(0.0);
            }
        }
    }
}

/// `g = (A H)_t − B_t`.
fn grad_row(h: &[f64], a: &[f64], b: &[f64], k: usize, d: usize, t: usize, g: &mut [f64]) {
    for (gj, &bj) in g.iter_mut().zip(&b[t * d..(t + 1) * d]) {
        *gj = -bj;
    }
    for r in 0..k {
        let atr = a[t * k + r];
        if atr == 0.0 {
            continue;
        }
        for (gj, &hj) in g.iter_mut().zip(&h[r * d..(r + 1) * d]) {
            *gj += atr * hj;
        }
    }
}

/// One HALS sweep over a row of coefficients: `w` given `xht = x Hᵀ` and
/// `hht = H Hᵀ`.
pub(crate) fn hals_row(w: &mut [f64], xht: &[f64], hht: &[f64], k: usize) -> f64 {
    let mut moved = 0.0;
    for t in 0..k {
        let hess = hht[t * k + t];
        if hess == 0.0 {
            continue;
        }
        let grad: f64 = hht[t * k..(t + 1) * k]
            .iter()
            .zip(w.iter())
            .map(|(a, b)| a * b)
            .sum::<f64>()
            - xht[t];
        let new = (w[t] - grad / hess).max(0.0);
        moved += (new - w[t]).abs();
        w[t] = new;
    }
    moved
}

/// One multiplicative update of a row of coefficients, Frobenius loss.
pub(crate) fn mu_row_frobenius(w: &mut [f64], xht: &[f64], hht: &[f64], k: usize) {
    let den: Vec<f64> = (0..k)
        .map(|t| {
            hht[t * k..(t + 1) * k]
                .iter()
                .zip(w.iter())
                .map(|(a, b)| a * b)
                .sum::<f64>()
        })
        .collect();
    for t in 0..k {
        w[t] *= xht[t] / den[t].max(EPSILON);
    }
}

/// One multiplicative update of a row of coefficients, KL divergence:
/// `w_t ← w_t Σ_j (x_j / (wH)_j) H_tj / Σ_j H_tj` over the row's non-zeros
/// `(idx, val)`; `ht` is `Hᵀ` (d × k), `hsum` the row sums of `H`.
pub(crate) fn mu_row_kl(
    w: &mut [f64],
    idx: &[u32],
    val: &[f32],
    ht: &[f64],
    hsum: &[f64],
    k: usize,
) {
    let mut num = vec![0f64; k];
    for (&j, &x) in idx.iter().zip(val) {
        let hj = &ht[j as usize * k..(j as usize + 1) * k];
        let wh: f64 = hj.iter().zip(w.iter()).map(|(a, b)| a * b).sum();
        let r = x as f64 / wh.max(EPSILON);
        for (n, &h) in num.iter_mut().zip(hj) {
            *n += r * h;
        }
    }
    for t in 0..k {
        if hsum[t] > 0.0 {
            w[t] *= num[t] / hsum[t];
        }
    }
}

/// Lasso by cyclic coordinate descent for one code: minimises
/// `½ ‖x − w H‖² + λ ‖w‖₁` given `xht = x Hᵀ` and `hht = H Hᵀ`, from the
/// current `w`. Returns the sweeps made.
pub(crate) fn lasso_row(
    w: &mut [f64],
    xht: &[f64],
    hht: &[f64],
    k: usize,
    lambda: f64,
    iters: usize,
    tol: f64,
) -> usize {
    for it in 0..iters {
        let (mut moved, mut big) = (0f64, 0f64);
        for t in 0..k {
            let g = hht[t * k + t];
            if g <= 0.0 {
                w[t] = 0.0;
                continue;
            }
            let dot: f64 = hht[t * k..(t + 1) * k]
                .iter()
                .zip(w.iter())
                .map(|(a, b)| a * b)
                .sum();
            let r = xht[t] - dot + g * w[t];
            let new = r.signum() * (r.abs() - lambda).max(0.0) / g;
            moved = moved.max((new - w[t]).abs());
            big = big.max(new.abs());
            w[t] = new;
        }
        if moved <= tol * big || big == 0.0 {
            return it + 1;
        }
    }
    iters
}

/// One worker: its rows' coefficients and its copy of the dictionary.
struct FactorWorker {
    problem: Problem,
    k: usize,
    d: usize,
    x: Arc<crate::data::Csr>,
    rows: Vec<usize>,
    /// `‖X_w‖²_F` of the worker's rows.
    xx: f64,
    /// Coefficients, `rows.len() × k`.
    w: Vec<f64>,
    /// The dictionary as of this worker's last step (`k × d`); `None`
    /// before the first step.
    h: Option<Vec<f64>>,
    worker: u32,
    workers: u32,
    staleness: u64,
    /// The stop rule held at the last complete clock read.
    done: bool,
    /// Complete clocks' summed losses this worker has read (a cache of
    /// the `gram` rows' scalar: the dictionary update reads the row
    /// anyway, and a large `k` makes the row megabytes). Empty after a
    /// restore; a missing clock is read from the table, same value.
    losses: std::collections::BTreeMap<u64, f64>,
}

const STATE_MAGIC: &[u8; 8] = b"petfact1";

impl FactorWorker {
    fn read_rows(
        &self,
        ctx: &mut WorkerCtx,
        table: &str,
        base: u64,
        n: usize,
        width: usize,
    ) -> Result<Vec<f64>, BoxError> {
        let t = ctx.table::<f64>(table)?;
        let mut out = Vec::with_capacity(n * width);
        let mut buf = Vec::new();
        ctx.prefetch(t, (0..n as u64).map(|r| base + r))?;
        for r in 0..n as u64 {
            ctx.get_dense_into(t, base + r, &mut buf)?;
            if buf.len() != width {
                return Err(format!(
                    "{table} row {} has {} values, expected {width}",
                    base + r,
                    buf.len()
                )
                .into());
            }
            out.extend_from_slice(&buf);
        }
        Ok(out)
    }

    /// First `xtw` row of the statistics of clock `c`.
    fn slot(&self, c: u64) -> u64 {
        (c % (3 * self.staleness + 3)) * self.k as u64
    }

    /// Zeroes this worker's rows of the `xtw` slot of clock `q`, which every
    /// worker has read (they did at clock `q + 1 + s`, and this worker's
    /// clock is `q + 2s + 2`) and none writes before clock `q + 3s + 3`:
    /// the row holds exactly the sum of clock `q`, so adding its negation
    /// leaves an exact 0.
    fn clear_slot(&self, ctx: &mut WorkerCtx, q: u64) -> Result<(), BoxError> {
        let t = ctx.table::<f64>(XTW)?;
        let mut buf = Vec::new();
        for r in (self.worker as usize..self.k).step_by(self.workers as usize) {
            let row = self.slot(q) + r as u64;
            ctx.get_dense_into(t, row, &mut buf)?;
            buf.iter_mut().for_each(|v| *v = -*v);
            ctx.batch_inc(t, row, &buf)?;
        }
        Ok(())
    }

    /// The summed loss of complete clock `q` (its `gram` row's scalar).
    fn loss_at(&mut self, ctx: &mut WorkerCtx, q: u64) -> Result<f64, BoxError> {
        if let Some(&l) = self.losses.get(&q) {
            return Ok(l);
        }
        let g = self.read_rows(ctx, GRAM, q, 1, self.gram_cols())?;
        Ok(self.note_loss(q, &g))
    }

    /// Caches clock `q`'s summed loss from its `gram` row `g`.
    fn note_loss(&mut self, q: u64, g: &[f64]) -> f64 {
        let l = g[self.k * self.k + self.k + S_LOSS];
        self.losses.insert(q, l);
        l
    }

    fn gram_cols(&self) -> usize {
        self.k * self.k + self.k + N_SCALARS
    }

    /// Whether the stop rule holds at complete clock `q`. Every worker
    /// reads the same complete rows, so all decide alike after the same
    /// clock, and a resumed run decides as the first did. Under SSP(s) an
    /// iteration is s + 1 clocks apart (the dictionary of clock c is the
    /// update from the statistics of c - 1 - s), so the rules compare
    /// clocks that far apart. NMF (scikit-learn's test): every 10
    /// iterations, the error `sqrt(2 loss)` fell by less than `tol` times
    /// the first clock's. Sparse coding (`DictionaryLearning`'s): the last
    /// iteration lowered the objective by less than `objective_tol` times
    /// it.
    fn converged(&mut self, ctx: &mut WorkerCtx, q: u64) -> Result<bool, BoxError> {
        let span = self.staleness + 1;
        // Clock 0 and the last 10 iterations are all a rule reads.
        self.losses.retain(|&c, _| c == 0 || c + 10 * span >= q);
        let (tol, nmf) = match &self.problem {
            Problem::Nmf(p) => (p.tol, true),
            Problem::SparseCoding(p) => (p.objective_tol, false),
        };
        if tol == 0.0 {
            return Ok(false);
        }
        if nmf {
            let every = 10 * span;
            if q < every || !q.is_multiple_of(every) {
                return Ok(false);
            }
            let err = |l: f64| (2.0 * l.max(0.0)).sqrt();
            let first = err(self.loss_at(ctx, 0)?);
            let before = err(self.loss_at(ctx, q - every)?);
            let now = err(self.loss_at(ctx, q)?);
            Ok(first > 0.0 && (before - now) / first < tol)
        } else {
            if q < span {
                return Ok(false);
            }
            let before = self.loss_at(ctx, q - span)?;
            let now = self.loss_at(ctx, q)?;
            Ok(before - now < tol * now)
        }
    }

    /// First step: the initial dictionary and (NMF) coefficients.
    fn start(&mut self, ctx: &mut WorkerCtx) -> Result<(), BoxError> {
        let (k, d) = (self.k, self.d);
        self.h = Some(self.read_rows(ctx, DICT, 0, k, d)?);
        if let Problem::Nmf(_) = self.problem {
            let init = self.read_rows(ctx, INIT, 0, k + 1, d + 3)?;
            let fill = init[k * (d + 3)];
            let comps: Vec<linalg::NndsvdComponent> = init
                .chunks_exact(d + 3)
                .take(k)
                .map(|r| linalg::NndsvdComponent {
                    v: r[..d].to_vec(),
                    inv_sigma: r[d],
                    sign: r[d + 1],
                    scale: r[d + 2],
                })
                .collect();
            let vt = linalg::transpose(
                &comps
                    .iter()
                    .flat_map(|c| c.v.iter().copied())
                    .collect::<Vec<_>>(),
                k,
                d,
            );
            let mut proj = vec![0f64; self.rows.len() * k];
            linalg::x_times(&self.x, &self.rows, &vt, k, &mut proj);
            for (w, p) in self.w.chunks_exact_mut(k).zip(proj.chunks_exact(k)) {
                for t in 0..k {
                    w[t] = comps[t].coefficient(p[t], fill);
                }
            }
        } else {
            self.w.fill(0.0);
        }
        Ok(())
    }

    /// The dictionary step from the statistics of clock `p`; answers the
    /// clock's figures (its `gram` row's scalars).
    fn update_dictionary(&mut self, ctx: &mut WorkerCtx, p: u64) -> Result<ClockStats, BoxError> {
        let (k, d) = (self.k, self.d);
        let g = self.read_rows(ctx, GRAM, p, 1, self.gram_cols())?;
        self.note_loss(p, &g);
        let b = self.read_rows(ctx, XTW, self.slot(p), k, d)?;
        let a = &g[..k * k];
        let colsum = &g[k * k..k * k + k];
        let old = self.h.clone().expect("started");
        let h = self.h.as_mut().expect("started");
        match &self.problem {
            Problem::Nmf(params) => match (params.beta_loss, params.solver()) {
                (BetaLoss::Frobenius, Solver::Cd) => hals_dictionary(h, a, &b, k, d, params.passes),
                (BetaLoss::Frobenius, Solver::Mu) => {
                    for _ in 0..params.passes {
                        let mut ah = vec![0f64; d];
                        for t in 0..k {
                            ah.fill(0.0);
                            for r in 0..k {
                                let atr = a[t * k + r];
                                for (o, &hv) in ah.iter_mut().zip(&h[r * d..(r + 1) * d]) {
                                    *o += atr * hv;
                                }
                            }
                            for (j, x) in h[t * d..(t + 1) * d].iter_mut().enumerate() {
                                *x *= b[t * d + j] / ah[j].max(EPSILON);
                            }
                        }
                    }
                }
                (BetaLoss::KullbackLeibler, _) => {
                    for t in 0..k {
                        if colsum[t] > 0.0 {
                            for (x, &bv) in
                                h[t * d..(t + 1) * d].iter_mut().zip(&b[t * d..(t + 1) * d])
                            {
                                *x *= bv / colsum[t];
                            }
                        }
                    }
                }
            },
            Problem::SparseCoding(params) => {
                let mut gr = vec![0f64; d];
                for t in 0..k {
                    let att = a[t * k + t];
                    // An atom (almost) no code uses keeps its value.
                    if att > 1e-6 {
                        grad_row(h, a, &b, k, d, t, &mut gr);
                        for (x, gj) in h[t * d..(t + 1) * d].iter_mut().zip(&gr) {
                            *x -= gj / att;
                        }
                    }
                    project(&mut h[t * d..(t + 1) * d], params.norm_bound);
                }
            }
        }
        // Owners publish their rows' change.
        let t = ctx.table::<f64>(DICT)?;
        let mut delta = vec![0f64; d];
        for c in (self.worker as usize..k).step_by(self.workers as usize) {
            for j in 0..d {
                delta[j] = h[c * d + j] - old[c * d + j];
            }
            ctx.batch_inc(t, c as u64, &delta)?;
        }
        Ok(ClockStats::from_gram(&g[k * k + k..], &self.problem))
    }
}

impl AlgoWorker for FactorWorker {
    fn finished(&self) -> bool {
        self.done
    }

    fn save_state(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 8 * (self.w.len() + self.k * self.d));
        out.extend_from_slice(STATE_MAGIC);
        out.extend_from_slice(&(self.rows.len() as u64).to_le_bytes());
        match &self.h {
            None => out.push(0),
            Some(h) => {
                out.push(1);
                for v in self.w.iter().chain(h) {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        out
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), BoxError> {
        if state.is_empty() {
            self.h = None;
            return Ok(());
        }
        let n = self.rows.len();
        let full = 17 + 8 * (n * self.k + self.k * self.d);
        let ok = state.len() >= 17
            && &state[..8] == STATE_MAGIC
            && state[8..16] == (n as u64).to_le_bytes()
            && ((state[16] == 0 && state.len() == 17) || (state[16] == 1 && state.len() == full));
        if !ok {
            return Err(format!(
                "{} worker {}: saved state of {} bytes does not match {n} rows, k = {}, {} columns ({full} bytes expected)",
                self.problem.name(),
                self.worker,
                state.len(),
                self.k,
                self.d
            )
            .into());
        }
        if state[16] == 0 {
            self.h = None;
            return Ok(());
        }
        let vals: Vec<f64> = state[17..]
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        self.w = vals[..n * self.k].to_vec();
        self.h = Some(vals[n * self.k..].to_vec());
        Ok(())
    }

    fn step(&mut self, ctx: &mut WorkerCtx, _rng: &mut ChaCha8Rng) -> Result<StepStats, BoxError> {
        let c = ctx.clock_now();
        let (k, d) = (self.k, self.d);
        if self.h.is_none() {
            self.start(ctx)?;
        } else if c > self.staleness {
            let stats = self.update_dictionary(ctx, c - 1 - self.staleness)?;
            self.done = self.converged(ctx, c - 1 - self.staleness)?;
            if c >= 2 * self.staleness + 2 {
                self.clear_slot(ctx, c - 2 - 2 * self.staleness)?;
            }
            if self.worker == 0 {
                tracing::info!(
                    algorithm = self.problem.name(),
                    clock = c - 1 - self.staleness,
                    objective = stats.objective,
                    "{} = {:.6}",
                    stats.second_name(&self.problem),
                    stats.second
                );
            }
        }
        let h = self.h.as_ref().expect("started");
        let n = self.rows.len();
        let ht = linalg::transpose(h, k, d);
        let hht = linalg::outer_gram(h, k, d);
        let kl =
            matches!(&self.problem, Problem::Nmf(p) if p.beta_loss == BetaLoss::KullbackLeibler);
        // Coefficient step.
        if kl {
            let passes = match &self.problem {
                Problem::Nmf(p) => p.passes,
                _ => 1,
            };
            let hsum: Vec<f64> = (0..k).map(|t| h[t * d..(t + 1) * d].iter().sum()).collect();
            for _ in 0..passes {
                for (w, &r) in self.w.chunks_exact_mut(k).zip(&self.rows) {
                    let (idx, val) = self.x.row(r);
                    mu_row_kl(w, idx, val, &ht, &hsum, k);
                }
            }
        } else {
            let mut xht = vec![0f64; n * k];
            linalg::x_times(&self.x, &self.rows, &ht, k, &mut xht);
            for (w, xh) in self.w.chunks_exact_mut(k).zip(xht.chunks_exact(k)) {
                match &self.problem {
                    Problem::Nmf(p) => {
                        for _ in 0..p.passes {
                            match p.solver() {
                                Solver::Cd => {
                                    hals_row(w, xh, &hht, k);
                                }
                                Solver::Mu => mu_row_frobenius(w, xh, &hht, k),
                            }
                        }
                    }
                    Problem::SparseCoding(p) => {
                        lasso_row(w, xh, &hht, k, p.lambda, p.code_iterations, p.tol);
                    }
                }
            }
        }
        // Statistics for the dictionary step and the objective.
        let a = linalg::gram(&self.w, k);
        let mut colsum = vec![0f64; k];
        for w in self.w.chunks_exact(k) {
            for (s, &v) in colsum.iter_mut().zip(w) {
                *s += v;
            }
        }
        let mut bt = vec![0f64; d * k];
        let mut scal = [0f64; N_SCALARS];
        let cross;
        if kl {
            // B = Wᵀ (X / WH), the divergence and Σ x·(WH) at the non-zeros.
            let (mut div, mut xwh) = (0f64, 0f64);
            for (w, &r) in self.w.chunks_exact(k).zip(&self.rows) {
                let (idx, val) = self.x.row(r);
                for (&j, &x) in idx.iter().zip(val) {
                    let hj = &ht[j as usize * k..(j as usize + 1) * k];
                    let wh: f64 = hj.iter().zip(w).map(|(a, b)| a * b).sum();
                    let x = x as f64;
                    xwh += x * wh;
                    let whg = wh.max(EPSILON);
                    div += x * (x / whg).ln() - x;
                    let ratio = x / whg;
                    let o = &mut bt[j as usize * k..(j as usize + 1) * k];
                    for (a, &b) in o.iter_mut().zip(w) {
                        *a += ratio * b;
                    }
                }
            }
            let hsum: Vec<f64> = (0..k).map(|t| h[t * d..(t + 1) * d].iter().sum()).collect();
            div += colsum.iter().zip(&hsum).map(|(a, b)| a * b).sum::<f64>();
            scal[S_LOSS] = div;
            cross = xwh;
        } else {
            linalg::xt_times(&self.x, &self.rows, &self.w, k, &mut bt);
            cross = (0..d)
                .map(|j| {
                    bt[j * k..(j + 1) * k]
                        .iter()
                        .enumerate()
                        .map(|(t, &b)| b * h[t * d + j])
                        .sum::<f64>()
                })
                .sum();
        }
        let whwh: f64 = a.iter().zip(&hht).map(|(x, y)| x * y).sum();
        let sq_err = (self.xx - 2.0 * cross + whwh).max(0.0);
        let l1: f64 = self.w.iter().map(|v| v.abs()).sum();
        let nnz = self.w.iter().filter(|&&v| v != 0.0).count() as f64;
        match &self.problem {
            Problem::Nmf(p) if p.beta_loss == BetaLoss::Frobenius => scal[S_LOSS] = 0.5 * sq_err,
            Problem::Nmf(_) => {}
            Problem::SparseCoding(p) => scal[S_LOSS] = 0.5 * sq_err + p.lambda * l1,
        }
        scal[S_XX] = self.xx;
        scal[S_SQERR] = sq_err;
        scal[S_NNZ] = nnz;
        scal[S_ROWS] = n as f64;
        let mut grow = a;
        grow.extend_from_slice(&colsum);
        grow.extend_from_slice(&scal);
        let tg = ctx.table::<f64>(GRAM)?;
        ctx.batch_inc(tg, c, &grow)?;
        let tx = ctx.table::<f64>(XTW)?;
        let b = linalg::transpose(&bt, d, k);
        for t in 0..k {
            ctx.batch_inc(tx, self.slot(c) + t as u64, &b[t * d..(t + 1) * d])?;
        }
        let weight = match self.problem {
            Problem::Nmf(_) => 0.0,
            Problem::SparseCoding(_) => n as f64,
        };
        Ok(StepStats {
            objective: scal[S_LOSS],
            weight,
            samples: n as u64,
            ..Default::default()
        })
    }
}

/// Reads evaluation data the way a dictionary model's training data were
/// read, checking its width (and, for NMF, its signs).
pub fn read_for_model(
    file: &ModelFile,
    path: &Path,
) -> Result<(FactorModel, crate::data::Csr), crate::eval::EvalError> {
    use crate::data::DataError;
    let m = FactorModel::from_file(file)?;
    let input = InputDesc {
        format: file.meta("input_format")?,
        scale: file.meta("input_scale")?,
        label_column: file.meta("label_column").ok(),
    };
    let mut x = data::read(&input, path, None, None)?.x;
    let widen = matches!(input.format.as_str(), "libsvm" | "uci_bow" | "ldac");
    if x.ncols > m.d || (x.ncols < m.d && !widen) {
        return Err(DataError::invalid(
            path,
            format!("{} columns, the model has {}", x.ncols, m.d),
        )
        .into());
    }
    x.ncols = m.d;
    if let Problem::Nmf(_) = m.problem {
        if let Some((i, j, v)) = data::first_negative(&x) {
            return Err(DataError::invalid(
                path,
                format!(
                    "value {v} at row {} column {}: NMF needs non-negative data",
                    i + 1,
                    j + 1
                ),
            )
            .into());
        }
    }
    Ok((m, x))
}
