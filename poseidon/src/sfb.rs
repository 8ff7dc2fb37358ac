//! Sufficient factors of fully connected layers (Poseidon's hybrid
//! communication, after Xie et al., "Distributed machine learning via
//! sufficient factor broadcasting", 2015).
//!
//! The gradient of a fully connected layer `z = x Wᵀ + b` over a
//! mini-batch of `K` samples is `∇W = δᵀ x`, where `δ = ∂L/∂z` (K × M)
//! and `x` (K × N) are its *sufficient factors*: `K (M + N)` values
//! instead of `M N`. Whether sending factors beats sending the matrix
//! depends on the batch, the layer and the number of workers; [`choose`]
//! is Poseidon's cost model for that choice, per layer.
//!
//! ## Transport
//!
//! A layer sent by factors keeps no weights in the `params` table (its
//! bias still goes there). Every worker keeps a replica `W` of the layer
//! as the parameter server would hold it, and one momentum buffer per
//! worker, mirroring that worker's own SGD momentum. Per clock `c` each
//! worker broadcasts its factors — every mini-batch's `(δ, x)` and the
//! step `−lr/W` — by writing them into its slot `c mod R` of a per-job
//! table `sf` (`R = 2s + 3` slots per worker and layer under staleness
//! `s`; a slot is zeroed one clock before it is reused, so every value is
//! written onto an exact zero and read back exactly). At the start of
//! clock `c` every worker reads every worker's factors of clock
//! `c − s − 1`, which SSP guarantees are visible and the slot ring
//! guarantees are not yet overwritten, rebuilds each mini-batch's
//! gradient `δᵀx`, runs it through that worker's momentum buffer and adds
//! the step to `W` — in the same order on every worker, so the replicas
//! are identical. The worker's own view is `W` plus its own updates of
//! the clocks `W` does not hold yet (read-my-writes, as the table gives).
//! At the last clock worker 0 writes `W` and the momentum buffers to a
//! table `sfb_final`, from which the export replays the last `s + 1`
//! clocks of factors still in the ring. The replica, the momentum
//! buffers and the recent own updates are worker state, checkpointed.

use crate::ROW;
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use petuum_core::algorithm::{BoxError, TableReader};
use petuum_core::{Table, WorkerCtx};
use std::collections::VecDeque;
use tch::{Kind, Tensor};

/// How a layer's updates travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comm {
    /// The dense update through the parameter server (push and pull).
    Ps,
    /// Sufficient factors broadcast to the other workers.
    Sfb,
}

/// Values each worker moves per clock for a `m × n` fully connected
/// layer: through the server, the update out and the fresh matrix back
/// (`2 m n`, however many mini-batches the clock had); by factors through
/// the slot ring (see [Transport](self#transport)), each mini-batch's
/// `k (m + n)` factors written once and zeroed once, and read back from
/// every worker's slot: `(workers + 2) · b · k (m + n)`. (Poseidon's
/// peer-to-peer broadcast moves `2 (workers − 1) · b · k (m + n)`; ours
/// goes through the shard servers so that it is replicated and
/// checkpointed with the tables.)
pub fn costs(m: usize, n: usize, k: usize, batches_per_clock: usize, workers: usize) -> (f64, f64) {
    let ps = 2.0 * m as f64 * n as f64;
    let sfb = (workers + 2) as f64 * batches_per_clock as f64 * k as f64 * (m + n) as f64;
    (ps, sfb)
}

/// Poseidon's choice for one layer: factors when they move fewer values.
pub fn choose(m: usize, n: usize, k: usize, batches_per_clock: usize, workers: usize) -> Comm {
    let (ps, sfb) = costs(m, n, k, batches_per_clock, workers);
    if workers > 1 && sfb < ps {
        Comm::Sfb
    } else {
        Comm::Ps
    }
}

/// The sufficient factors of one mini-batch's gradient of a fully
/// connected layer (row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct Factors {
    pub k: usize,
    pub m: usize,
    pub n: usize,
    /// `δ`, K × M: the loss's gradient with respect to the layer's output.
    pub u: Vec<f32>,
    /// `x`, K × N: the layer's input.
    pub v: Vec<f32>,
}

impl Factors {
    /// Factors from libtorch tensors: the layer's input `x` (K × N) and
    /// the gradient `delta` of the loss with respect to its output (K × M).
    pub fn of(x: &Tensor, delta: &Tensor) -> Factors {
        let (k, n) = x.size2().expect("x is K × N");
        let (k2, m) = delta.size2().expect("delta is K × M");
        assert_eq!(k, k2, "factors of different batch sizes");
        let (k, m, n) = (k as usize, m as usize, n as usize);
        let mut u = vec![0f32; k * m];
        let mut v = vec![0f32; k * n];
        delta
            .to_kind(Kind::Float)
            .contiguous()
            .to_device(tch::Device::Cpu)
            .copy_data(&mut u, k * m);
        x.to_kind(Kind::Float)
            .contiguous()
            .to_device(tch::Device::Cpu)
            .copy_data(&mut v, k * n);
        Factors { k, m, n, u, v }
    }

    /// Values sent: `K (M + N)`.
    pub fn len(&self) -> usize {
        self.u.len() + self.v.len()
    }

    pub fn is_empty(&self) -> bool {
        self.k == 0
    }

    /// `w += scale · δᵀ x` (`w` row-major M × N): the update the factors
    /// stand for, rebuilt where it is applied.
    pub fn add_update(&self, scale: f32, w: &mut [f32]) {
        assert_eq!(w.len(), self.m * self.n, "matrix of another layer");
        add_outer(&self.u, &self.v, self.k, self.m, self.n, scale, w);
    }
}

/// `w += scale · uᵀ v` for `u` K × M and `v` K × N (row-major).
fn add_outer(u: &[f32], v: &[f32], k: usize, m: usize, n: usize, scale: f32, w: &mut [f32]) {
    let u = ArrayView2::from_shape((k, m), u).expect("u is K × M");
    let v = ArrayView2::from_shape((k, n), v).expect("v is K × N");
    let mut w = ArrayViewMut2::from_shape((m, n), w).expect("w is M × N");
    general_mat_mul(scale, &u.t(), &v, 1.0, &mut w);
}

/// Table of the broadcast factors.
pub const SF_TABLE: &str = "sf";
/// Table of the replicas and momentum buffers at the last clock.
pub const FINAL_TABLE: &str = "sfb_final";
/// Values before a clock's factors: clock + 1 (as two f32 halves, exact
/// to 2^36), the step scale.
const HEADER: usize = 3;

/// A fully connected layer sent by factors.
#[derive(Clone, Debug)]
pub struct SfbLayer {
    /// Index of the layer's weight among the network's parameter slots.
    pub slot: usize,
    /// Offset of its weight in the flat parameters.
    pub offset: usize,
    pub m: usize,
    pub n: usize,
    /// First row of its slots in [`SF_TABLE`].
    base: u64,
    /// Rows per slot.
    chunks: u64,
    /// First row of its replica and momentum buffers in [`FINAL_TABLE`].
    final_base: u64,
}

/// How a job's factor-sent layers are laid out and exchanged.
#[derive(Clone, Debug)]
pub struct SfbPlan {
    pub layers: Vec<SfbLayer>,
    pub workers: usize,
    /// Staleness bound `s` of the job's consistency model.
    pub staleness: u64,
    /// Slots per worker and layer.
    pub ring: u64,
    /// Mini-batches per clock and samples per mini-batch (fixed: every
    /// worker's slot has the same size).
    pub batches: usize,
    pub k: usize,
}

impl SfbPlan {
    /// `layers`: (weight slot, flat offset, M, N) of each layer.
    pub fn new(
        layers: &[(usize, usize, usize, usize)],
        workers: usize,
        staleness: u64,
        batches: usize,
        k: usize,
    ) -> SfbPlan {
        let ring = 2 * staleness + 3;
        let (mut base, mut final_base) = (0u64, 0u64);
        let layers = layers
            .iter()
            .map(|&(slot, offset, m, n)| {
                let chunks = (HEADER + batches * k * (m + n)).div_ceil(ROW) as u64;
                let l = SfbLayer {
                    slot,
                    offset,
                    m,
                    n,
                    base,
                    chunks,
                    final_base,
                };
                base += chunks * ring * workers as u64;
                final_base += (m * n).div_ceil(ROW) as u64 * (1 + workers as u64);
                l
            })
            .collect();
        SfbPlan {
            layers,
            workers,
            staleness,
            ring,
            batches,
            k,
        }
    }

    fn slot_rows(&self, l: &SfbLayer, worker: usize, clock: u64) -> std::ops::Range<u64> {
        let first = l.base + ((worker as u64 * self.ring) + clock % self.ring) * l.chunks;
        first..first + l.chunks
    }

    /// Rows of the replica (`which = 0`) or of worker `which - 1`'s
    /// momentum buffer in [`FINAL_TABLE`].
    fn final_rows(&self, l: &SfbLayer, which: usize) -> std::ops::Range<u64> {
        let per = (l.m * l.n).div_ceil(ROW) as u64;
        let first = l.final_base + which as u64 * per;
        first..first + per
    }

    /// Values a worker moves per clock for this layer: its factors out
    /// and every other worker's in.
    pub fn values_per_clock(&self, l: &SfbLayer) -> usize {
        self.batches * self.k * (l.m + l.n) * self.workers
    }

    /// Applies worker `w`'s factors of one clock (`content`, header
    /// first) to the replica `global` through the momentum buffer `vel`.
    fn fold_one(
        &self,
        l: &SfbLayer,
        content: &[f32],
        mu: f32,
        vel: &mut [f32],
        global: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let scale = content[2];
        let per = self.k * (l.m + l.n);
        for b in 0..self.batches {
            let c = &content[HEADER + b * per..HEADER + (b + 1) * per];
            let (u, v) = c.split_at(self.k * l.m);
            scratch.clear();
            scratch.resize(l.m * l.n, 0.0);
            add_outer(u, v, self.k, l.m, l.n, 1.0, scratch);
            for ((vj, &g), wj) in vel.iter_mut().zip(scratch.iter()).zip(global.iter_mut()) {
                *vj = mu * *vj + g;
                *wj += scale * *vj;
            }
        }
    }
}

fn header_clock(content: &[f32]) -> u64 {
    content[0] as u64 + ((content[1] as u64) << 18)
}

fn write_header(content: &mut [f32], clock: u64, scale: f32) {
    let c = clock + 1;
    content[0] = (c & ((1 << 18) - 1)) as f32;
    content[1] = (c >> 18) as f32;
    content[2] = scale;
}

/// A worker's side of the factor-sent layers.
#[derive(Clone, Debug, Default)]
pub struct SfbState {
    /// Replica of each layer as the server would hold it (empty until
    /// the first clock reads the initial values).
    global: Vec<Vec<f32>>,
    /// Per layer, one momentum buffer per worker.
    momentum: Vec<Vec<Vec<f32>>>,
    /// Per layer, this worker's updates of recent clocks (not yet in
    /// `global`), with their clocks.
    recent: Vec<VecDeque<(u64, Vec<f32>)>>,
    /// Per layer, this worker's update in the current clock.
    pub current: Vec<Vec<f32>>,
    /// Per layer, the factors of the current clock (header first).
    outgoing: Vec<Vec<f32>>,
    scratch: Vec<f32>,
    row_buf: Vec<f32>,
}

impl SfbState {
    pub fn new(plan: &SfbPlan) -> SfbState {
        let mm = |l: &SfbLayer| vec![0f32; l.m * l.n];
        SfbState {
            global: plan.layers.iter().map(|_| Vec::new()).collect(),
            momentum: plan
                .layers
                .iter()
                .map(|l| vec![mm(l); plan.workers])
                .collect(),
            recent: plan.layers.iter().map(|_| VecDeque::new()).collect(),
            current: plan.layers.iter().map(mm).collect(),
            outgoing: plan.layers.iter().map(|_| Vec::new()).collect(),
            scratch: Vec::new(),
            row_buf: Vec::new(),
        }
    }

    /// Whether the replicas hold values (after the first clock's read or
    /// a restore).
    pub fn initialized(&self) -> bool {
        self.global.iter().all(|g| !g.is_empty())
    }

    fn read_slot(
        &mut self,
        ctx: &mut WorkerCtx,
        t: Table<f32>,
        rows: std::ops::Range<u64>,
    ) -> Result<Vec<f32>, BoxError> {
        let mut out = Vec::with_capacity((rows.end - rows.start) as usize * ROW);
        for r in rows {
            ctx.get_dense_into(t, r, &mut self.row_buf)?;
            out.extend_from_slice(&self.row_buf);
        }
        Ok(out)
    }

    /// Start of clock `c` (after the parameter rows were read into
    /// `flat`): folds every worker's factors of clock `c − s − 1` into the
    /// replicas and sets the worker's view of each layer in `flat`.
    pub fn begin_clock(
        &mut self,
        plan: &SfbPlan,
        ctx: &mut WorkerCtx,
        t: Table<f32>,
        clock: u64,
        mu: f32,
        flat: &mut [f32],
    ) -> Result<(), BoxError> {
        for (i, l) in plan.layers.iter().enumerate() {
            let w = l.offset..l.offset + l.m * l.n;
            if self.global[i].is_empty() {
                self.global[i] = flat[w.clone()].to_vec();
            }
            if clock > plan.staleness {
                let from = clock - plan.staleness - 1;
                for src in 0..plan.workers {
                    let content = self.read_slot(ctx, t, plan.slot_rows(l, src, from))?;
                    if header_clock(&content) != from + 1 {
                        return Err(format!(
                            "sufficient factors of worker {src} for clock {from} are not in the table (slot holds clock {})",
                            header_clock(&content) as i64 - 1
                        )
                        .into());
                    }
                    let mut scratch = std::mem::take(&mut self.scratch);
                    plan.fold_one(
                        l,
                        &content,
                        mu,
                        &mut self.momentum[i][src],
                        &mut self.global[i],
                        &mut scratch,
                    );
                    self.scratch = scratch;
                }
                while self.recent[i].front().is_some_and(|(c, _)| *c <= from) {
                    self.recent[i].pop_front();
                }
            }
            let view = &mut flat[w];
            view.copy_from_slice(&self.global[i]);
            for (_, d) in &self.recent[i] {
                for (v, x) in view.iter_mut().zip(d) {
                    *v += x;
                }
            }
            self.outgoing[i].clear();
            self.outgoing[i].resize(HEADER, 0.0);
        }
        Ok(())
    }

    /// Records one mini-batch's factors of layer `i`.
    pub fn record(&mut self, i: usize, f: &Factors) {
        self.outgoing[i].extend_from_slice(&f.u);
        self.outgoing[i].extend_from_slice(&f.v);
    }

    /// End of clock `c`: broadcasts this clock's factors (step `scale`),
    /// zeroes the slot the next clock will use, and at the last clock
    /// (worker 0) writes the replicas and momentum buffers for the export.
    #[allow(clippy::too_many_arguments)]
    pub fn end_clock(
        &mut self,
        plan: &SfbPlan,
        ctx: &mut WorkerCtx,
        t: Table<f32>,
        t_final: Table<f32>,
        clock: u64,
        scale: f32,
        last: bool,
    ) -> Result<(), BoxError> {
        let me = ctx.worker() as usize;
        for (i, l) in plan.layers.iter().enumerate() {
            let mut content = std::mem::take(&mut self.outgoing[i]);
            let want = HEADER + plan.batches * plan.k * (l.m + l.n);
            if content.len() != want {
                return Err(format!(
                    "{} factor values for the clock, the layout needs {want}",
                    content.len()
                )
                .into());
            }
            write_header(&mut content, clock, scale);
            content.resize(l.chunks as usize * ROW, 0.0);
            for (r, chunk) in plan.slot_rows(l, me, clock).zip(content.chunks(ROW)) {
                ctx.batch_inc(t, r, chunk)?;
            }
            // The slot of clock c + 1 still holds clock c + 1 − R: zero it.
            let next = plan.slot_rows(l, me, clock + 1);
            let old = self.read_slot(ctx, t, next.clone())?;
            if old.iter().any(|v| *v != 0.0) {
                for (r, chunk) in next.zip(old.chunks(ROW)) {
                    let neg: Vec<f32> = chunk.iter().map(|v| -v).collect();
                    ctx.batch_inc(t, r, &neg)?;
                }
            }
            let cur = std::mem::replace(&mut self.current[i], vec![0.0; l.m * l.n]);
            self.recent[i].push_back((clock, cur));
            if last && me == 0 {
                for which in 0..=plan.workers {
                    let src = if which == 0 {
                        &self.global[i]
                    } else {
                        &self.momentum[i][which - 1]
                    };
                    let mut buf = src.clone();
                    buf.resize(buf.len().div_ceil(ROW) * ROW, 0.0);
                    for (r, chunk) in plan.final_rows(l, which).zip(buf.chunks(ROW)) {
                        ctx.batch_inc(t_final, r, chunk)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Checkpointed state: per layer the replica, the momentum buffers and
    /// the recent own updates, as little-endian f32 (counts as u64).
    pub fn save(&self, out: &mut Vec<u8>) {
        let put = |v: &[f32], out: &mut Vec<u8>| {
            out.extend_from_slice(&(v.len() as u64).to_le_bytes());
            for x in v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
        for i in 0..self.global.len() {
            put(&self.global[i], out);
            for m in &self.momentum[i] {
                put(m, out);
            }
            out.extend_from_slice(&(self.recent[i].len() as u64).to_le_bytes());
            for (c, d) in &self.recent[i] {
                out.extend_from_slice(&c.to_le_bytes());
                put(d, out);
            }
        }
    }

    /// Reads what [`save`](Self::save) wrote; returns the bytes used.
    pub fn restore(&mut self, plan: &SfbPlan, mut b: &[u8]) -> Result<usize, BoxError> {
        let total = b.len();
        let short = || -> BoxError { "checkpointed sufficient-factor state is truncated".into() };
        fn u64_at(b: &mut &[u8]) -> Option<u64> {
            let (h, t) = b.split_first_chunk::<8>()?;
            *b = t;
            Some(u64::from_le_bytes(*h))
        }
        fn floats(b: &mut &[u8], max: usize) -> Option<Vec<f32>> {
            let n = u64_at(b)? as usize;
            if n > max || b.len() < 4 * n {
                return None;
            }
            let v = b[..4 * n]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            *b = &b[4 * n..];
            Some(v)
        }
        for (i, l) in plan.layers.iter().enumerate() {
            let mn = l.m * l.n;
            let g = floats(&mut b, mn).ok_or_else(short)?;
            if !(g.is_empty() || g.len() == mn) {
                return Err(short());
            }
            self.global[i] = g;
            for w in 0..plan.workers {
                let m = floats(&mut b, mn)
                    .filter(|m| m.len() == mn)
                    .ok_or_else(short)?;
                self.momentum[i][w] = m;
            }
            let n = u64_at(&mut b).ok_or_else(short)?;
            if n > plan.staleness + 2 {
                return Err(short());
            }
            self.recent[i].clear();
            for _ in 0..n {
                let c = u64_at(&mut b).ok_or_else(short)?;
                let d = floats(&mut b, mn)
                    .filter(|d| d.len() == mn)
                    .ok_or_else(short)?;
                self.recent[i].push_back((c, d));
            }
        }
        Ok(total - b.len())
    }
}

/// The exported weights of the factor-sent layers: the replica written at
/// the last clock, with the factors of the clocks it does not hold yet
/// (still in the ring) replayed in the workers' order. `clocks`: the
/// job's clocks; returns (flat offset, weights) per layer.
pub fn export_weights(
    plan: &SfbPlan,
    tables: &TableReader<'_>,
    clocks: u64,
    mu: f32,
) -> Result<Vec<(usize, Vec<f32>)>, BoxError> {
    let read = |table: &str, rows: std::ops::Range<u64>| -> Result<Vec<f32>, BoxError> {
        let mut out = Vec::new();
        tables.prefetch(table, rows.clone())?;
        for r in rows {
            out.extend(tables.read::<f32>(table, r)?.to_dense(ROW as u32));
        }
        Ok(out)
    };
    let mut out = Vec::new();
    for l in &plan.layers {
        let mn = l.m * l.n;
        let mut global = read(FINAL_TABLE, plan.final_rows(l, 0))?;
        global.truncate(mn);
        let mut momentum = Vec::new();
        for w in 0..plan.workers {
            let mut m = read(FINAL_TABLE, plan.final_rows(l, w + 1))?;
            m.truncate(mn);
            momentum.push(m);
        }
        // The replica holds clocks up to (clocks − 1) − s − 1.
        let first = clocks.saturating_sub(plan.staleness + 1);
        let mut scratch = Vec::new();
        for c in first..clocks {
            for (w, vel) in momentum.iter_mut().enumerate() {
                let content = read(SF_TABLE, plan.slot_rows(l, w, c))?;
                if header_clock(&content) != c + 1 {
                    return Err(format!(
                        "sufficient factors of worker {w} for clock {c} are missing from the table"
                    )
                    .into());
                }
                plan.fold_one(l, &content, mu, vel, &mut global, &mut scratch);
            }
        }
        out.push((l.offset, global));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The update rebuilt from the factors equals the full gradient that
    /// libtorch's autograd computes for the weight matrix (the
    /// mean-reduced cross-entropy of a ReLU layer on top), to float
    /// tolerance.
    #[test]
    fn reconstructed_update_equals_the_full_gradient() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (k, n, m, c) = (32usize, 50usize, 40usize, 10usize);
        let mut r =
            |len: usize| -> Vec<f32> { (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect() };
        let x = Tensor::from_slice(&r(k * n)).view([k as i64, n as i64]);
        let w = Tensor::from_slice(&r(m * n))
            .view([m as i64, n as i64])
            .set_requires_grad(true);
        let b = Tensor::from_slice(&r(m)).set_requires_grad(true);
        let top = Tensor::from_slice(&r(c * m)).view([c as i64, m as i64]);
        let y: Vec<i64> = (0..k as i64).map(|i| i % c as i64).collect();
        let y = Tensor::from_slice(&y);
        // Full gradient of W.
        let loss = x
            .linear(&w, Some(&b))
            .relu()
            .matmul(&top.tr())
            .cross_entropy_for_logits(&y);
        loss.backward();
        let mut full = vec![0f32; m * n];
        w.grad().copy_data(&mut full, m * n);
        // δ: the gradient at the layer's output, from a detached leaf.
        let z = x.linear(&w, Some(&b)).detach().set_requires_grad(true);
        z.relu()
            .matmul(&top.tr())
            .cross_entropy_for_logits(&y)
            .backward();
        let f = Factors::of(&x, &z.grad());
        assert_eq!(f.len(), k * (m + n));
        let mut rebuilt = vec![0f32; m * n];
        f.add_update(1.0, &mut rebuilt);
        let max = full.iter().fold(0f32, |a, v| a.max(v.abs()));
        assert!(max > 1e-3, "a gradient worth comparing ({max})");
        for (a, b) in full.iter().zip(&rebuilt) {
            assert!((a - b).abs() <= 1e-6 + 1e-5 * a.abs(), "{a} vs {b}");
        }
        // As an update: w - lr ∇W.
        let mut w2 = vec![1f32; m * n];
        f.add_update(-0.5, &mut w2);
        assert!((w2[7] - (1.0 - 0.5 * full[7])).abs() < 1e-6);
    }

    /// Factors win for wide layers and small batches on few workers, lose
    /// as workers or mini-batches per clock grow.
    #[test]
    fn cost_model_picks_the_cheaper_way() {
        // 4096 × 4096 layer, batch 32, 8 workers: 10·32·8192 ≪ 2·4096².
        assert_eq!(choose(4096, 4096, 32, 1, 8), Comm::Sfb);
        // The MNIST MLP's 256 × 784 layer, 4 batches of 64 per clock, 2
        // workers: 4·4·64·1040 = 1.06M > 2·256·784 = 401k; one batch per
        // clock: 266k < 401k.
        assert_eq!(choose(256, 784, 64, 4, 2), Comm::Ps);
        assert_eq!(choose(256, 784, 64, 1, 2), Comm::Sfb);
        // Its 10 × 256 output layer: the matrix is smaller than a batch.
        assert_eq!(choose(10, 256, 64, 1, 2), Comm::Ps);
        // One worker has nobody to send to.
        assert_eq!(choose(4096, 4096, 1, 1, 1), Comm::Ps);
        let (ps, sfb) = costs(10, 20, 4, 2, 3);
        assert_eq!((ps, sfb), (400.0, 5.0 * 2.0 * 4.0 * 30.0));
    }
}
