//! The full-batch finish of the automatic configuration: once the SGD
//! phase has converged by its stop rule, the linear models (logistic
//! regression, the squared-hinge SVM, multi-class LR) minimise the same
//! regularised objective exactly with L-BFGS (Liu and Nocedal 1989), as
//! scikit-learn's `lbfgs` solver does, so a default job ends at the
//! optimum its peer reaches rather than at the noise floor of SGD, whose
//! last percent of objective costs hundreds of passes on ill-conditioned
//! data.
//!
//! **Protocol.** Every function evaluation is one clock: each worker adds
//! its partition's loss sum, sample count and loss-gradient sum at the
//! trial point to row `c` of the `polish` table (a sparse `f64` row, so
//! sparse data send only the columns they touch). The row is complete at
//! the first clock `c'` with `c' - s > c` (SSP(s), BSP being s = 0); every
//! worker reads it at that clock, and every worker runs the same
//! deterministic L-BFGS step on the same sums, so they all hold the same
//! iterate, history and trial point with no further message. Worker 0
//! writes each accepted iterate into the result row, which the exported
//! model reads, and clears an evaluation row once every worker has read
//! it (adding minus its complete value leaves exactly zero, and a sparse
//! row drops zeros), so the table does not grow with the iterations.
//!
//! The start point is the model the SGD phase would have saved (the
//! averaged weights), read by worker 0 in the clock the stop rule fired and
//! written to the result row; the others read it back once complete.
//!
//! **Step.** Two-loop recursion over the last `m` pairs (`m` ≤ 10, fewer
//! for very wide models so the history stays under 64 MiB), the first
//! step scaled to unit length, Armijo backtracking with quadratic
//! interpolation. It stops, converged, when the largest gradient
//! coordinate is at most `tol` (scikit-learn's `gtol = tol` on the same
//! mean-loss objective) or the objective no longer decreases (relative
//! change below 1e-12); it stops, not converged, after 100 iterations
//! (scikit-learn's `max_iter`) or a failed line search, keeping the best
//! iterate. Its whole state is checkpointed with the worker.
//!
//! Under `async` no row is ever guaranteed complete, so there is no
//! finish (the job ends after its SGD phase).

use crate::sgd::{StateReader, StateWriter, StopRule};
use petuum_core::algorithm::{BoxError, StepStats, TableDecl, TableReader};
use petuum_core::spec::MAX_WORKERS;
use petuum_core::{ElemType, RowKind, Table, WorkerCtx};
use std::collections::VecDeque;

pub const POLISH_TABLE: &str = "polish";
/// Row holding the accepted iterate (columns `0..n`), with column `n` set
/// to 1 once the finish has started.
const RESULT_ROW: u64 = u64::MAX >> 1;
/// Largest model the finish takes on (coordinates).
pub const MAX_COORDS: usize = 1 << 20;
/// Iterations before giving up (scikit-learn's `max_iter`).
pub const MAX_ITER: u32 = 100;
/// Line-search trials per iteration before giving up.
const MAX_BACKTRACKS: u32 = 30;
const ARMIJO: f64 = 1e-4;
/// The SGD phase's stop tolerance when the finish follows: SGD hands over
/// once it has plateaued to a tenth of a percent (its last percent costs
/// hundreds of passes; the finish converges superlinearly from there).
pub const SWITCH_TOL: f64 = 1e-3;

/// The clocks of a job of `clocks` that its SGD phase may take at most
/// before the finish starts, so the finish always has room for its
/// iterations (scikit-learn's lbfgs allows 100).
pub fn sgd_clocks(clocks: u64) -> u64 {
    (clocks / 3).max(1)
}

/// The stop rule of a worker's SGD phase: [`sgd_phase`] of `rule` when a
/// finish follows.
pub fn stop_rule(polish: Option<&Polish>, rule: StopRule) -> StopRule {
    match polish {
        Some(_) => sgd_phase(rule),
        None => rule,
    }
}

/// Whether a worker with this finish (if any) is done: the finish decides
/// once it has started, the SGD phase's rule before.
pub fn finished(polish: Option<&Polish>, sgd_finished: bool) -> bool {
    match polish {
        Some(p) if p.active() => p.done(),
        _ => sgd_finished,
    }
}

/// The SGD phase's stop rule when a finish follows `rule`.
pub fn sgd_phase(rule: StopRule) -> StopRule {
    StopRule {
        tol: rule.tol.max(SWITCH_TOL),
        ..rule
    }
}
const FTOL: f64 = 1e-12;

/// The finish table's declaration for a model of `n` coordinates.
pub fn polish_table(n: usize) -> TableDecl {
    TableDecl {
        name: POLISH_TABLE.into(),
        kind: RowKind::Sparse,
        elem: ElemType::F64,
        columns: n as u32 + 3 + MAX_WORKERS,
    }
}

/// The finish's result, if it started: the model's coordinates.
pub fn read_result(tables: &TableReader<'_>, n: usize) -> Result<Option<Vec<f64>>, BoxError> {
    let row = tables
        .read::<f64>(POLISH_TABLE, RESULT_ROW)?
        .to_dense(n as u32 + 1);
    Ok((row[n] > 0.0).then(|| row[..n].to_vec()))
}

/// Where the finish is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stage {
    /// The SGD phase is still running.
    Waiting,
    /// Worker 0 has written (or is writing) the start point.
    Start,
    /// The evaluation of `trial` is summed in this row.
    Eval(u64),
    /// Over; every worker stops after this clock (the first at which
    /// each is guaranteed to have seen the last evaluation).
    Closing(u64),
    Done,
}

/// How the finish ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Converged,
    /// Iteration limit or failed line search.
    Stalled,
}

/// One worker's copy of the finish (every worker holds the same).
#[derive(Clone, Debug)]
pub struct Polish {
    /// L2 strength of each coordinate (0 for biases).
    l2: Vec<f64>,
    gtol: f64,
    m: usize,
    stage: Stage,
    /// Whether an iterate has been evaluated (the first evaluation is of
    /// the start point).
    started: bool,
    w: Vec<f64>,
    f: f64,
    g: Vec<f64>,
    trial: Vec<f64>,
    dir: Vec<f64>,
    step: f64,
    /// `g · dir` at `w`.
    slope: f64,
    hist: VecDeque<(Vec<f64>, Vec<f64>, f64)>,
    iters: u32,
    backtracks: u32,
    /// Worker 0: evaluation rows to clear once every worker has read them.
    to_clear: Vec<u64>,
    /// Training samples over all workers: an evaluation row is complete
    /// when its count reaches it.
    total: u64,
    outcome: Option<Outcome>,
    /// The SGD phase's last objective, reported until the first
    /// evaluation is in.
    sgd_objective: f64,
}

/// `eval(w, grad)`: the loss summed over a worker's partition at `w`, its
/// gradient sum added to `grad`, and the number of samples.
pub type Evaluate<'a> = dyn FnMut(&[f64], &mut [f64]) -> (f64, u64) + 'a;

/// What the finish did in a clock.
struct Tick {
    /// Samples evaluated by this worker.
    samples: u64,
    /// The objective at the accepted iterate (the SGD phase's last one
    /// until the first evaluation is in).
    objective: f64,
}

impl Polish {
    /// A finish for `l2` (per coordinate) stopping at gradient `gtol`.
    pub fn new(l2: Vec<f64>, gtol: f64, total: u64) -> Self {
        let n = l2.len();
        Polish {
            total,
            m: (MAX_COORDS * 4 / n.max(1)).clamp(3, 10),
            l2,
            gtol,
            stage: Stage::Waiting,
            started: false,
            w: Vec::new(),
            f: f64::INFINITY,
            g: Vec::new(),
            trial: Vec::new(),
            dir: Vec::new(),
            step: 1.0,
            slope: 0.0,
            hist: VecDeque::new(),
            iters: 0,
            backtracks: 0,
            to_clear: Vec::new(),
            outcome: None,
            sgd_objective: f64::NAN,
        }
    }

    fn n(&self) -> usize {
        self.l2.len()
    }

    pub fn active(&self) -> bool {
        self.stage != Stage::Waiting
    }

    pub fn done(&self) -> bool {
        self.stage == Stage::Done
    }

    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// Starts the finish in this clock from the current model (`start`
    /// reads it; only worker 0 calls it); `objective` is the SGD phase's
    /// last. False (nothing started) under a consistency model with no
    /// staleness bound.
    pub fn begin(
        &mut self,
        ctx: &mut WorkerCtx,
        objective: f64,
        start: impl FnOnce(&mut WorkerCtx) -> Result<Vec<f64>, BoxError>,
    ) -> Result<bool, BoxError> {
        if ctx
            .consistency()
            .required_min_clock(ctx.clock_now())
            .is_none()
        {
            return Ok(false);
        }
        self.sgd_objective = objective;
        if ctx.worker() == 0 {
            let w = start(ctx)?;
            let t = ctx.table::<f64>(POLISH_TABLE)?;
            let mut e: Vec<(u32, f64)> = nonzero(&w);
            e.push((self.n() as u32, 1.0));
            ctx.batch_inc_sparse(t, RESULT_ROW, &e)?;
        }
        self.stage = Stage::Start;
        Ok(true)
    }

    fn reported(&self) -> f64 {
        if self.started {
            self.f
        } else {
            self.sgd_objective
        }
    }

    /// One clock of the finish on a worker whose partition holds `rows`
    /// samples (`eval` evaluates on it), as the clock's stats: the
    /// objective at the accepted iterate, weighted by `rows`.
    pub fn step(
        &mut self,
        ctx: &mut WorkerCtx,
        rows: usize,
        eval: &mut Evaluate<'_>,
    ) -> Result<StepStats, BoxError> {
        let tick = self.tick(ctx, eval)?;
        Ok(StepStats {
            objective: tick.objective * rows as f64,
            weight: rows as f64,
            samples: tick.samples,
            ..Default::default()
        })
    }

    /// One clock of the finish. `eval(w, grad)` returns the loss summed
    /// over the worker's partition at `w` and adds its gradient sum to
    /// `grad`, and the number of samples it summed over.
    fn tick(&mut self, ctx: &mut WorkerCtx, eval: &mut Evaluate<'_>) -> Result<Tick, BoxError> {
        let t = ctx.table::<f64>(POLISH_TABLE)?;
        if ctx.worker() == 0 {
            self.clear_rows(ctx, t)?;
        }
        let n = self.n();
        let waiting = Tick {
            samples: 0,
            objective: self.reported(),
        };
        let mut entries = Vec::new();
        let c = ctx.clock_now();
        let next = match self.stage {
            Stage::Waiting | Stage::Done => return Ok(waiting),
            Stage::Closing(at) => {
                if c >= at {
                    self.finish(ctx)?;
                }
                return Ok(waiting);
            }
            Stage::Start => {
                ctx.get_entries_into(t, RESULT_ROW, &mut entries)?;
                if !entries.iter().any(|&(j, v)| j as usize == n && v > 0.0) {
                    return Ok(waiting);
                }
                self.trial = vec![0.0; n];
                for &(j, v) in &entries {
                    if (j as usize) < n {
                        self.trial[j as usize] = v;
                    }
                }
                0
            }
            Stage::Eval(k) => {
                ctx.get_entries_into(t, k, &mut entries)?;
                let mut g = vec![0.0; n];
                let (mut loss, mut count, mut written) = (0.0, 0.0, 0.0f64);
                for &(j, v) in &entries {
                    let j = j as usize;
                    if j < n {
                        g[j] = v;
                    } else if j == n {
                        loss = v;
                    } else if j == n + 1 {
                        count = v;
                    } else if j >= n + 3 {
                        written = written.max(v);
                    }
                }
                if count != self.total as f64 {
                    // Not every worker's share is in (or not yet visible
                    // here): wait; SSP makes it visible within s + 1 clocks.
                    return Ok(waiting);
                }
                ctx.inc(t, k, n as u32 + 2, 1.0)?;
                if ctx.worker() == 0 {
                    self.to_clear.push(k);
                }
                let mut f = loss / count;
                for ((gj, l2), w) in g.iter_mut().zip(&self.l2).zip(&self.trial) {
                    *gj = *gj / count + l2 * w;
                    f += 0.5 * l2 * w * w;
                }
                if !self.absorb(f, g) {
                    // Every worker reads this row by the clock SSP makes it
                    // complete for all (the last write clock + s + 1) and
                    // stops after that clock, so they all stop together.
                    let s = c - ctx.consistency().required_min_clock(c).unwrap_or(c);
                    let at = written as u64 + s; // written holds clock + 1
                    self.stage = Stage::Closing(at);
                    if c >= at {
                        self.finish(ctx)?;
                    }
                    return Ok(Tick {
                        samples: 0,
                        objective: self.reported(),
                    });
                }
                if ctx.worker() == 0 {
                    self.publish(ctx, t)?;
                }
                k + 1
            }
        };
        // Evaluate the trial point on this worker's partition.
        let mut grad = vec![0.0; n];
        let (loss, count) = eval(&self.trial, &mut grad);
        if !loss.is_finite() && !self.started {
            return Err(format!("the objective at the finish's start point is {loss}").into());
        }
        let mut e = nonzero(&grad);
        e.push((n as u32, loss));
        e.push((n as u32 + 1, count as f64));
        e.push((n as u32 + 3 + ctx.worker(), (c + 1) as f64));
        ctx.batch_inc_sparse(t, next, &e)?;
        self.stage = Stage::Eval(next);
        Ok(Tick {
            samples: count,
            objective: self.reported(),
        })
    }

    /// Folds in the objective and gradient at `trial`; false when the
    /// finish is over, else `trial` is the next point to evaluate.
    fn absorb(&mut self, f: f64, g: Vec<f64>) -> bool {
        if !self.started {
            if !f.is_finite() {
                self.outcome = Some(Outcome::Stalled);
                return false;
            }
            self.started = true;
            self.w = std::mem::take(&mut self.trial);
            self.f = f;
            self.g = g;
            return self.next_direction();
        }
        if f.is_finite() && f <= self.f + ARMIJO * self.step * self.slope {
            let s: Vec<f64> = self.trial.iter().zip(&self.w).map(|(a, b)| a - b).collect();
            let y: Vec<f64> = g.iter().zip(&self.g).map(|(a, b)| a - b).collect();
            let sy = dot(&s, &y);
            if sy > 1e-10 * dot(&y, &y).sqrt() * dot(&s, &s).sqrt() {
                if self.hist.len() == self.m {
                    self.hist.pop_front();
                }
                self.hist.push_back((s, y, 1.0 / sy));
            }
            let decrease = self.f - f;
            self.w = std::mem::take(&mut self.trial);
            self.g = g;
            let before = self.f;
            self.f = f;
            self.iters += 1;
            if decrease <= FTOL * before.abs().max(f.abs()).max(1.0) {
                self.outcome = Some(Outcome::Converged);
                return false;
            }
            return self.next_direction();
        }
        // Armijo failed: backtrack (quadratic interpolation, kept within
        // [0.1, 0.5] of the step).
        self.backtracks += 1;
        if self.backtracks > MAX_BACKTRACKS {
            self.outcome = Some(Outcome::Stalled);
            return false;
        }
        let a = self.step;
        let q = if f.is_finite() {
            -self.slope * a * a / (2.0 * (f - self.f - self.slope * a))
        } else {
            0.1 * a
        };
        self.step = q.clamp(0.1 * a, 0.5 * a);
        self.set_trial();
        true
    }

    /// After an accepted iterate: the convergence test, then the L-BFGS
    /// direction and the first trial along it.
    fn next_direction(&mut self) -> bool {
        let gmax = self.g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if gmax <= self.gtol {
            self.outcome = Some(Outcome::Converged);
            return false;
        }
        if self.iters >= MAX_ITER {
            self.outcome = Some(Outcome::Stalled);
            return false;
        }
        // Two-loop recursion.
        let mut q = self.g.clone();
        let mut alpha = Vec::with_capacity(self.hist.len());
        for (s, y, rho) in self.hist.iter().rev() {
            let a = rho * dot(s, &q);
            axpy(-a, y, &mut q);
            alpha.push(a);
        }
        let gamma = self
            .hist
            .back()
            .map_or(1.0, |(s, y, _)| dot(s, y) / dot(y, y));
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, y, rho), a) in self.hist.iter().zip(alpha.iter().rev()) {
            let b = rho * dot(y, &q);
            axpy(a - b, s, &mut q);
        }
        q.iter_mut().for_each(|v| *v = -*v);
        let mut slope = dot(&self.g, &q);
        if slope >= 0.0 || !slope.is_finite() {
            // Not a descent direction: restart from steepest descent.
            self.hist.clear();
            q = self.g.iter().map(|v| -v).collect();
            slope = -dot(&self.g, &self.g);
        }
        self.step = if self.hist.is_empty() {
            (1.0 / dot(&q, &q).sqrt()).min(1.0)
        } else {
            1.0
        };
        self.dir = q;
        self.slope = slope;
        self.backtracks = 0;
        self.set_trial();
        true
    }

    fn set_trial(&mut self) {
        self.trial = self
            .w
            .iter()
            .zip(&self.dir)
            .map(|(w, d)| w + self.step * d)
            .collect();
    }

    /// Worker 0: moves the result row to the accepted iterate.
    fn publish(&mut self, ctx: &mut WorkerCtx, t: Table<f64>) -> Result<(), BoxError> {
        let mut cur = Vec::new();
        ctx.get_entries_into(t, RESULT_ROW, &mut cur)?;
        let n = self.n();
        let mut delta = self.w.clone();
        for &(j, v) in &cur {
            if (j as usize) < n {
                delta[j as usize] -= v;
            }
        }
        ctx.batch_inc_sparse(t, RESULT_ROW, &nonzero(&delta))?;
        Ok(())
    }

    fn finish(&mut self, ctx: &mut WorkerCtx) -> Result<(), BoxError> {
        let c = ctx.clock_now();
        self.stage = Stage::Done;
        if ctx.worker() == 0 && self.started {
            let t = ctx.table::<f64>(POLISH_TABLE)?;
            self.publish(ctx, t)?;
            if self.outcome == Some(Outcome::Converged) {
                crate::sgd::record_stop(ctx, c)?;
            }
        }
        Ok(())
    }

    /// Worker 0 clears the evaluation rows every worker has read (each
    /// adds 1 to the row's read count when it reads it).
    fn clear_rows(&mut self, ctx: &mut WorkerCtx, t: Table<f64>) -> Result<(), BoxError> {
        let n = self.n() as u32;
        let workers = ctx.workers() as f64;
        let mut e = Vec::new();
        let mut keep = Vec::new();
        for &row in &self.to_clear {
            e.clear();
            ctx.get_entries_into(t, row, &mut e)?;
            if e.iter().any(|&(j, v)| j == n + 2 && v == workers) {
                e.iter_mut().for_each(|(_, v)| *v = -*v);
                ctx.batch_inc_sparse(t, row, &e)?;
            } else {
                keep.push(row);
            }
        }
        self.to_clear = keep;
        Ok(())
    }

    pub fn save(&self, out: &mut StateWriter) {
        let (tag, at) = match self.stage {
            Stage::Waiting => (0, 0),
            Stage::Start => (1, 0),
            Stage::Eval(k) => (2, k),
            Stage::Done => (3, 0),
            Stage::Closing(c) => (4, c),
        };
        out.u64(tag);
        out.u64(at);
        out.u64(self.started as u64);
        out.f64s(&self.w);
        out.f64(self.f);
        out.f64s(&self.g);
        out.f64s(&self.trial);
        out.f64s(&self.dir);
        out.f64(self.step);
        out.f64(self.slope);
        out.u64(self.hist.len() as u64);
        for (s, y, rho) in &self.hist {
            out.f64s(s);
            out.f64s(y);
            out.f64(*rho);
        }
        out.u64(self.iters as u64);
        out.u64(self.backtracks as u64);
        out.u64(self.to_clear.len() as u64);
        for &r in &self.to_clear {
            out.u64(r);
        }
        out.u64(match self.outcome {
            None => 0,
            Some(Outcome::Converged) => 1,
            Some(Outcome::Stalled) => 2,
        });
        out.f64(self.sgd_objective);
    }

    pub fn restore(&mut self, r: &mut StateReader<'_>) -> Result<(), BoxError> {
        let (tag, at) = (r.u64()?, r.u64()?);
        self.stage = match tag {
            0 => Stage::Waiting,
            1 => Stage::Start,
            2 => Stage::Eval(at),
            3 => Stage::Done,
            4 => Stage::Closing(at),
            t => return Err(format!("finish state has stage {t}").into()),
        };
        self.started = r.u64()? != 0;
        let n = self.n();
        let vec = |r: &mut StateReader<'_>, what: &str| -> Result<Vec<f64>, BoxError> {
            let v = r.f64s()?;
            if !v.is_empty() && v.len() != n {
                return Err(
                    format!("finish state: {what} of {} values, model {n}", v.len()).into(),
                );
            }
            Ok(v)
        };
        self.w = vec(r, "iterate")?;
        self.f = r.f64()?;
        self.g = vec(r, "gradient")?;
        self.trial = vec(r, "trial")?;
        self.dir = vec(r, "direction")?;
        self.step = r.f64()?;
        self.slope = r.f64()?;
        let h = r.u64()? as usize;
        if h > self.m {
            return Err(format!("finish state has {h} history pairs, at most {}", self.m).into());
        }
        self.hist.clear();
        for _ in 0..h {
            let s = vec(r, "history")?;
            let y = vec(r, "history")?;
            self.hist.push_back((s, y, r.f64()?));
        }
        self.iters = r.u64()? as u32;
        self.backtracks = r.u64()? as u32;
        let k = r.u64()? as usize;
        if k > 1 << 16 {
            return Err(format!("finish state lists {k} rows to clear").into());
        }
        self.to_clear = (0..k).map(|_| r.u64()).collect::<Result<_, BoxError>>()?;
        self.outcome = match r.u64()? {
            0 => None,
            1 => Some(Outcome::Converged),
            2 => Some(Outcome::Stalled),
            o => return Err(format!("finish state has outcome {o}").into()),
        };
        self.sgd_objective = r.f64()?;
        Ok(())
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

fn nonzero(v: &[f64]) -> Vec<(u32, f64)> {
    v.iter()
        .enumerate()
        .filter(|(_, x)| **x != 0.0)
        .map(|(j, &x)| (j as u32, x))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives `absorb` directly on a quadratic: the iterates reach its
    /// minimum to the gradient tolerance.
    #[test]
    fn minimises_an_ill_conditioned_quadratic() {
        let h = [1.0, 100.0, 0.01];
        let target = [3.0, -2.0, 50.0];
        let fg = |w: &[f64]| {
            let f: f64 = (0..3)
                .map(|j| 0.5 * h[j] * (w[j] - target[j]).powi(2))
                .sum();
            let g: Vec<f64> = (0..3).map(|j| h[j] * (w[j] - target[j])).collect();
            (f, g)
        };
        let mut p = Polish::new(vec![0.0; 3], 1e-8, 1);
        p.trial = vec![0.0; 3];
        let mut evals = 0;
        loop {
            let (f, g) = fg(&p.trial);
            evals += 1;
            if !p.absorb(f, g) {
                break;
            }
        }
        assert_eq!(p.outcome, Some(Outcome::Converged));
        for (w, t) in p.w.iter().zip(target) {
            assert!((w - t).abs() < 1e-5, "{:?}", p.w);
        }
        assert!(evals < 60, "{evals} evaluations");
    }

    #[test]
    fn state_round_trips() {
        let mut p = Polish::new(vec![0.5; 4], 1e-4, 1);
        p.trial = vec![1.0, 2.0, 3.0, 4.0];
        p.absorb(1.0, vec![0.1, 0.2, 0.3, 0.4]);
        p.stage = Stage::Eval(7);
        p.to_clear.push(5);
        let mut w = StateWriter::default();
        p.save(&mut w);
        let mut q = Polish::new(vec![0.5; 4], 1e-4, 1);
        q.restore(&mut StateReader(&w.0)).unwrap();
        assert_eq!(q.stage, p.stage);
        assert_eq!(q.w, p.w);
        assert_eq!(q.trial, p.trial);
        assert_eq!(q.to_clear, p.to_clear);
        let mut w2 = StateWriter::default();
        q.save(&mut w2);
        assert_eq!(w.0, w2.0);
        assert!(Polish::new(vec![0.5; 3], 1e-4, 1)
            .restore(&mut StateReader(&w.0))
            .is_err());
    }
}
