//! k-means clustering over Bosen tables, as Petuum's k-means app.
//!
//! Initialisation: greedy k-means++ (Arthur and Vassilvitskii, SODA 2007;
//! `2 + ln k` candidates per step, the one that lowers the potential most,
//! as scikit-learn does), on the whole training set, seeded by the job seed.
//!
//! **Lloyd** (default): one iteration per clock. Each worker assigns its
//! partition to the current centres and increments per-cluster sums and
//! counts into rows of the `sums` table reserved for that clock (row
//! `(c + 1) k + j`; rows `0..k` hold the initial centres). The centres used
//! at clock `c` are the sums of clock `c − 1 − s` divided by their counts:
//! under SSP(s) that clock is guaranteed complete, so every worker computes
//! the same centres; with BSP (s = 0) this is exactly Lloyd's algorithm. A
//! cluster that lost all its points keeps its previous centre.
//!
//! **Mini-batch** (`batch_size`): Sculley, "Web-scale k-means clustering",
//! WWW 2010. Each clock every worker samples `batch_size` points, assigns
//! them to the centres read from the `cumulative` table and increments that
//! table by their sums and counts; a centre is the running mean of every
//! point ever assigned to it (the per-centre learning rate `1 / n_j`).
//!
//! The objective per clock is the inertia (sum of squared distances to the
//! nearest centre) of the points the workers assigned that clock.
//!
//! **Stopping** (Lloyd): once the centres a clock uses moved from those of
//! the Lloyd step before (the clock `s + 1` earlier: under SSP(s) each
//! iterate is used for `s + 1` clocks) by a summed squared shift of at most
//! `tol` times the features' mean variance (scikit-learn's rule), the
//! workers stop. Every worker computes both from the same complete sums
//! rows of the table, so all of them stop after the same clock,
//! deterministically, resumed or not. Under `async` nothing is guaranteed
//! complete, so every clock runs.

mod params;

pub use params::KMeansParams;

use crate::data::{Dataset, Features};
use crate::model::{ModelError, ModelFile};
use crate::softmax::InputSpec;
use ndarray::{Array2, ArrayView2, Axis};
use petuum_core::algorithm::{
    AlgoWorker, Algorithm, BoxError, ModelSummary, StepStats, TableDecl, TableLoader, TableReader,
};
use petuum_core::{ElemType, Row, RowKind, WorkerCtx};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::Arc;

pub const NAME: &str = "kmeans";
const SUMS: &str = "sums";
const CUMULATIVE: &str = "cumulative";

/// k-means with its data loaded.
pub struct KMeans {
    params: KMeansParams,
    data: Arc<Array2<f32>>,
    test: Option<Array2<f32>>,
    input: InputSpec,
    seed: u64,
    staleness: u64,
    /// Lloyd's stop threshold on the centres' summed squared shift (0: none).
    shift_tol: f64,
}

/// The mean over features of their variance on the rows of `x` (f64).
fn mean_variance(x: ArrayView2<'_, f32>) -> f64 {
    let (n, d) = (x.nrows() as f64, x.ncols());
    if n == 0.0 || d == 0 {
        return 0.0;
    }
    let mut sum = vec![0f64; d];
    let mut sq = vec![0f64; d];
    for r in x.rows() {
        for ((s, q), &v) in sum.iter_mut().zip(sq.iter_mut()).zip(r.iter()) {
            let v = v as f64;
            *s += v;
            *q += v * v;
        }
    }
    sum.iter()
        .zip(&sq)
        .map(|(s, q)| (q / n - (s / n) * (s / n)).max(0.0))
        .sum::<f64>()
        / d as f64
}

impl KMeans {
    pub fn new(
        params: KMeansParams,
        train: Dataset,
        test: Option<Dataset>,
        input: InputSpec,
        seed: u64,
        staleness: u64,
    ) -> Result<Self, BoxError> {
        if train.len() < params.k {
            return Err(format!(
                "k = {} but the training data have only {} points",
                params.k,
                train.len()
            )
            .into());
        }
        let data = train.features.to_dense();
        let shift_tol = params.tol() * mean_variance(data.view());
        Ok(KMeans {
            shift_tol,
            params,
            data: Arc::new(data),
            test: test.map(|t| t.features.to_dense()),
            input,
            seed,
            staleness,
        })
    }

    fn dim(&self) -> usize {
        self.data.ncols()
    }
}

/// Greedy k-means++ seeding.
pub fn kmeans_plus_plus(x: ArrayView2<'_, f32>, k: usize, rng: &mut ChaCha8Rng) -> Array2<f32> {
    let n = x.nrows();
    let trials = 2 + (k as f64).ln() as usize;
    let norms: Vec<f32> = x.rows().into_iter().map(|r| r.dot(&r)).collect();
    let mut centers = Array2::zeros((k, x.ncols()));
    let first = rng.gen_range(0..n);
    centers.row_mut(0).assign(&x.row(first));
    let sq = |i: usize, c: &[f32]| -> f32 {
        let r = x.row(i);
        r.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum()
    };
    let mut closest: Vec<f32> = (0..n)
        .map(|i| sq(i, centers.row(0).as_slice().unwrap()))
        .collect();
    for j in 1..k {
        let total: f64 = closest.iter().map(|&d| d as f64).sum();
        let mut best: Option<(f64, usize, Vec<f32>)> = None;
        for _ in 0..trials {
            // Sample a point with probability proportional to its distance².
            let mut target = rng.gen::<f64>() * total;
            let mut cand = n - 1;
            for (i, &d) in closest.iter().enumerate() {
                target -= d as f64;
                if target <= 0.0 {
                    cand = i;
                    break;
                }
            }
            let c = x.row(cand);
            let cn = norms[cand];
            let d2: Vec<f32> = (0..n)
                .map(|i| closest[i].min((norms[i] + cn - 2.0 * x.row(i).dot(&c)).max(0.0)))
                .collect();
            let pot: f64 = d2.iter().map(|&d| d as f64).sum();
            if best.as_ref().is_none_or(|b| pot < b.0) {
                best = Some((pot, cand, d2));
            }
        }
        let (_, cand, d2) = best.expect("at least one trial");
        centers.row_mut(j).assign(&x.row(cand));
        closest = d2;
    }
    centers
}

/// Nearest centre of every row of `x` and the summed squared distances.
pub fn assign(x: ArrayView2<'_, f32>, centers: &Array2<f32>) -> (Vec<usize>, f64) {
    let cn: Vec<f32> = centers.rows().into_iter().map(|r| r.dot(&r)).collect();
    let mut labels = Vec::with_capacity(x.nrows());
    let mut inertia = 0.0f64;
    for start in (0..x.nrows()).step_by(2048) {
        let end = (start + 2048).min(x.nrows());
        let block = x.slice(ndarray::s![start..end, ..]);
        let dots = block.dot(&centers.t());
        for (r, row) in dots.rows().into_iter().enumerate() {
            let xn = block.row(r).dot(&block.row(r));
            let (mut best, mut bd) = (0usize, f32::INFINITY);
            for (j, &d) in row.iter().enumerate() {
                let dist = xn + cn[j] - 2.0 * d;
                if dist < bd {
                    bd = dist;
                    best = j;
                }
            }
            labels.push(best);
            inertia += bd.max(0.0) as f64;
        }
    }
    (labels, inertia)
}

impl Algorithm for KMeans {
    fn name(&self) -> &'static str {
        NAME
    }

    fn objective_name(&self) -> &'static str {
        "inertia"
    }

    fn tables(&self) -> Vec<TableDecl> {
        let name = if self.params.batch_size.is_some() {
            CUMULATIVE
        } else {
            SUMS
        };
        vec![TableDecl {
            name: name.into(),
            kind: RowKind::Dense,
            elem: ElemType::F64,
            columns: self.dim() as u32 + 1,
        }]
    }

    fn initialize(&self, loader: &TableLoader<'_>) -> Result<(), BoxError> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let centers = kmeans_plus_plus(self.data.view(), self.params.k, &mut rng);
        let rows = centers
            .rows()
            .into_iter()
            .enumerate()
            .map(|(j, c)| {
                let mut v: Vec<f64> = c.iter().map(|&x| x as f64).collect();
                v.push(1.0);
                (j as u64, Row::Dense(v))
            })
            .collect();
        let name = if self.params.batch_size.is_some() {
            CUMULATIVE
        } else {
            SUMS
        };
        loader.load(name, rows)?;
        Ok(())
    }

    fn worker(&self, worker: u32, workers: u32) -> Result<Box<dyn AlgoWorker>, BoxError> {
        let n = self.data.nrows();
        let (lo, hi) = (
            n * worker as usize / workers as usize,
            n * (worker as usize + 1) / workers as usize,
        );
        if hi <= lo {
            return Err(format!("worker {worker} of {workers} has no points ({n} in all)").into());
        }
        Ok(Box::new(KMeansWorker {
            k: self.params.k,
            batch: self.params.batch_size,
            data: self.data.clone(),
            lo,
            hi,
            staleness: self.staleness,
            prev: None,
            shift_tol: self.shift_tol,
            done: false,
        }))
    }

    fn export(&self, tables: &TableReader<'_>, path: &Path) -> Result<ModelSummary, BoxError> {
        let k = self.params.k;
        let d = self.dim();
        // The final centres: the last clock's sums (complete now that every
        // worker has finished), or the cumulative means.
        let (table, base) = match self.params.batch_size {
            Some(_) => (CUMULATIVE, 0),
            None => {
                let rows = tables.row_ids(SUMS)?;
                let last = rows.iter().max().copied().unwrap_or(0) / k as u64;
                (SUMS, last * k as u64)
            }
        };
        let mut centers = Array2::<f32>::zeros((k, d));
        let mut fallback = None;
        tables.prefetch(table, (0..k as u64).map(|j| base + j))?;
        for j in 0..k {
            let v = tables
                .read::<f64>(table, base + j as u64)?
                .to_dense(d as u32 + 1);
            if v[d] > 0.0 {
                for c in 0..d {
                    centers[[j, c]] = (v[c] / v[d]) as f32;
                }
            } else {
                // Empty in the last clock: fall back to the initial centre.
                let init = fallback.get_or_insert_with(|| {
                    (0..k)
                        .map(|i| {
                            tables
                                .read::<f64>(table, i as u64)
                                .map(|r| r.to_dense(d as u32 + 1))
                        })
                        .collect::<Result<Vec<_>, _>>()
                });
                let init = init.as_ref().map_err(|e| e.clone())?;
                for c in 0..d {
                    centers[[j, c]] = (init[j][c] / init[j][d].max(1.0)) as f32;
                }
            }
        }
        let (_, inertia) = assign(self.data.view(), &centers);
        let mut metrics = vec![("inertia".to_string(), inertia)];
        if let Some(t) = &self.test {
            metrics.push(("test_inertia".to_string(), assign(t.view(), &centers).1));
        }
        let mut file = ModelFile::new(NAME);
        file.set("k", k);
        file.set("num_features", d);
        self.input.record(&mut file);
        file.set("params", serde_json::to_string(&self.params)?);
        file.set_metrics(&metrics);
        file.add_tensor("centers", vec![k, d], centers.into_raw_vec_and_offset().0);
        Ok(ModelSummary {
            bytes: file.save(path)?,
            metrics,
        })
    }
}

struct KMeansWorker {
    k: usize,
    batch: Option<usize>,
    data: Arc<Array2<f32>>,
    lo: usize,
    hi: usize,
    staleness: u64,
    /// Centres used last clock (kept for clusters that become empty).
    prev: Option<Array2<f32>>,
    shift_tol: f64,
    /// Lloyd has converged: the runner stops this worker.
    done: bool,
}

impl KMeansWorker {
    /// The means of the `k` sums rows at `base` of `table`, and which of
    /// them had points (an empty cluster's row stays zero).
    fn means_at(
        &self,
        ctx: &mut WorkerCtx,
        table: &str,
        base: u64,
    ) -> Result<(Array2<f32>, Vec<bool>), BoxError> {
        let t = ctx.table::<f64>(table)?;
        let d = self.data.ncols();
        let mut means = Array2::<f32>::zeros((self.k, d));
        let mut present = vec![false; self.k];
        let mut row = Vec::new();
        ctx.prefetch(t, (0..self.k as u64).map(|j| base + j))?;
        for j in 0..self.k {
            ctx.get_dense_into(t, base + j as u64, &mut row)?;
            if row[d] > 0.0 {
                present[j] = true;
                for c in 0..d {
                    means[[j, c]] = (row[c] / row[d]) as f32;
                }
            }
        }
        Ok((means, present))
    }

    /// The centres from the sums rows at `base`; a cluster without points
    /// keeps its centre of last clock.
    fn centers_from(
        &self,
        ctx: &mut WorkerCtx,
        table: &str,
        base: u64,
    ) -> Result<Array2<f32>, BoxError> {
        let (mut centers, present) = self.means_at(ctx, table, base)?;
        if let Some(prev) = &self.prev {
            for j in (0..self.k).filter(|&j| !present[j]) {
                centers.row_mut(j).assign(&prev.row(j));
            }
        }
        Ok(centers)
    }

    /// The summed squared distance between `centers` and the means of the
    /// sums rows at `base` (clusters empty there are left out).
    fn shift_from(
        &self,
        ctx: &mut WorkerCtx,
        centers: &Array2<f32>,
        base: u64,
    ) -> Result<f64, BoxError> {
        let (older, present) = self.means_at(ctx, SUMS, base)?;
        let mut shift = 0.0f64;
        for j in (0..self.k).filter(|&j| present[j]) {
            shift += centers
                .row(j)
                .iter()
                .zip(older.row(j))
                .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                .sum::<f64>();
        }
        Ok(shift)
    }

    fn accumulate(
        &self,
        ctx: &mut WorkerCtx,
        table: &str,
        base: u64,
        x: ArrayView2<'_, f32>,
        labels: &[usize],
    ) -> Result<(), BoxError> {
        let t = ctx.table::<f64>(table)?;
        let d = x.ncols();
        let mut sums = vec![vec![0f64; d + 1]; self.k];
        for (r, &j) in x.rows().into_iter().zip(labels) {
            let s = &mut sums[j];
            for (a, &v) in s.iter_mut().zip(r.iter()) {
                *a += v as f64;
            }
            s[d] += 1.0;
        }
        for (j, s) in sums.iter().enumerate() {
            if s[d] > 0.0 {
                ctx.batch_inc(t, base + j as u64, s)?;
            }
        }
        Ok(())
    }
}

impl AlgoWorker for KMeansWorker {
    fn finished(&self) -> bool {
        self.done
    }

    /// The centres used last clock (for clusters that become empty).
    fn save_state(&self) -> Vec<u8> {
        match &self.prev {
            None => Vec::new(),
            Some(c) => c.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), BoxError> {
        let d = self.data.ncols();
        if state.is_empty() {
            self.prev = None;
            return Ok(());
        }
        if state.len() != self.k * d * 4 {
            return Err(format!(
                "k-means worker state of {} bytes, expected {}",
                state.len(),
                self.k * d * 4
            )
            .into());
        }
        let v: Vec<f32> = state
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        self.prev = Some(Array2::from_shape_vec((self.k, d), v)?);
        Ok(())
    }

    fn step(&mut self, ctx: &mut WorkerCtx, rng: &mut ChaCha8Rng) -> Result<StepStats, BoxError> {
        let c = ctx.clock_now();
        let k = self.k as u64;
        let data = self.data.clone();
        let part = data.slice(ndarray::s![self.lo..self.hi, ..]);
        let (inertia, n) = match self.batch {
            None => {
                // Centres from the newest clock every worker has finished.
                // Sums of clock c - s - 1 sit at base (c - s) k; before
                // that, the initial centres at base 0.
                let src = c.saturating_sub(self.staleness);
                let centers = self.centers_from(ctx, SUMS, src * k)?;
                // The centres of `src` are one Lloyd step from those of
                // `src - 1 - s` (whose sums' clock used them); under SSP the
                // s + 1 clocks in between hold the same iterate. Compared
                // once both are Lloyd iterates, not the seeding.
                if self.shift_tol > 0.0 && src > self.staleness + 1 {
                    let shift = self.shift_from(ctx, &centers, (src - 1 - self.staleness) * k)?;
                    self.done = shift <= self.shift_tol;
                }
                let (labels, inertia) = assign(part, &centers);
                self.accumulate(ctx, SUMS, (c + 1) * k, part, &labels)?;
                self.prev = Some(centers);
                (inertia, part.nrows())
            }
            Some(bs) => {
                let centers = self.centers_from(ctx, CUMULATIVE, 0)?;
                let idx: Vec<usize> = (0..bs).map(|_| rng.gen_range(0..part.nrows())).collect();
                let x = part.select(Axis(0), &idx);
                let (labels, inertia) = assign(x.view(), &centers);
                self.accumulate(ctx, CUMULATIVE, 0, x.view(), &labels)?;
                self.prev = Some(centers);
                (inertia, bs)
            }
        };
        Ok(StepStats {
            objective: inertia,
            weight: 0.0,
            samples: n as u64,
            ..Default::default()
        })
    }
}

/// A trained k-means model.
#[derive(Clone, Debug)]
pub struct KMeansModel {
    pub centers: Array2<f32>,
}

impl KMeansModel {
    pub fn from_file(file: &ModelFile) -> Result<Self, ModelError> {
        let t = file.tensor("centers")?;
        if t.shape.len() != 2 {
            return Err(ModelError::Format {
                path: file.path.clone(),
                reason: format!("centers of shape {:?}", t.shape),
            });
        }
        Ok(KMeansModel {
            centers: Array2::from_shape_vec((t.shape[0], t.shape[1]), t.data.clone())
                .expect("shape checked"),
        })
    }

    /// Inertia of `x` against the centres.
    pub fn inertia(&self, x: &Features) -> f64 {
        assign(x.to_dense().view(), &self.centers).1
    }
}
