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
//! What is here: the factors as libtorch produces them ([`Factors::of`]),
//! the reconstruction of the update from them ([`Factors::add_update`]),
//! the cost model, and the trainer's per-layer report of its choice. Not
//! yet here: the peer-to-peer transport that would broadcast the factors
//! between workers instead of sending the matrices through the table
//! (layers marked `sfb` by the cost model still go through the table).

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
/// (`2 m n`, however many mini-batches the clock had); by broadcasting,
/// each mini-batch's `k (m + n)` factors to and from each of the
/// `workers - 1` peers.
pub fn costs(m: usize, n: usize, k: usize, batches_per_clock: usize, workers: usize) -> (f64, f64) {
    let ps = 2.0 * m as f64 * n as f64;
    let sfb = 2.0
        * batches_per_clock as f64
        * k as f64
        * (m + n) as f64
        * workers.saturating_sub(1) as f64;
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
        for s in 0..self.k {
            let v = &self.v[s * self.n..(s + 1) * self.n];
            for (i, &d) in self.u[s * self.m..(s + 1) * self.m].iter().enumerate() {
                if d == 0.0 {
                    continue;
                }
                let a = scale * d;
                for (wij, &x) in w[i * self.n..(i + 1) * self.n].iter_mut().zip(v) {
                    *wij += a * x;
                }
            }
        }
    }
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

    /// Poseidon's examples: factors win for wide layers and small batches
    /// on few workers, lose as workers or batches grow.
    #[test]
    fn cost_model_picks_the_cheaper_way() {
        // 4096 × 4096 layer, batch 32, 8 workers: 2·32·8192·7 ≪ 2·4096².
        assert_eq!(choose(4096, 4096, 32, 1, 8), Comm::Sfb);
        // The MNIST MLP's 256 × 784 layer, 4 batches of 64 per clock, 2
        // workers: 2·4·64·1040 = 532k > 2·256·784 = 401k.
        assert_eq!(choose(256, 784, 64, 4, 2), Comm::Ps);
        assert_eq!(choose(256, 784, 64, 1, 2), Comm::Sfb);
        // One worker has nobody to broadcast to.
        assert_eq!(choose(4096, 4096, 1, 1, 1), Comm::Ps);
        let (ps, sfb) = costs(10, 20, 4, 2, 3);
        assert_eq!((ps, sfb), (400.0, 2.0 * 2.0 * 4.0 * 30.0 * 2.0));
    }
}
