//! The pieces of Gibbs MedLDA that are plain math: the classifier
//! statistics, the Gaussian draw of the weights, the inverse-Gaussian draw
//! of the augmentation variables.

use super::params::MedLdaParams;
use rand::Rng;

/// Width of one classifier's block of statistics rows: `K` rows of
/// `A = Σ_d z̄_d z̄_dᵀ / λ_d`, then one row `b = Σ_d y_d (λ_d + cℓ) / λ_d z̄_d`.
pub fn block_rows(k: usize) -> usize {
    k + 1
}

/// Target of document label `label` for classifier `j` of `m` (+1 / -1):
/// one classifier (class 1 positive) for two classes, one-vs-all above.
pub fn target(label: u32, j: usize, m: usize) -> f64 {
    let pos = if m == 1 {
        label == 1
    } else {
        label as usize == j
    };
    if pos {
        1.0
    } else {
        -1.0
    }
}

/// `z̄_d` as sparse `(topic, share)` pairs sorted by topic; `scratch` is a
/// zeroed `K`-wide buffer and is left zeroed.
pub fn zbar(z: &[u32], scratch: &mut [i32]) -> Vec<(u32, f64)> {
    let mut topics = Vec::new();
    for &t in z {
        if scratch[t as usize] == 0 {
            topics.push(t);
        }
        scratch[t as usize] += 1;
    }
    topics.sort_unstable();
    let n = z.len().max(1) as f64;
    topics
        .into_iter()
        .map(|t| (t, std::mem::take(&mut scratch[t as usize]) as f64 / n))
        .collect()
}

/// Adds one document's contribution (for classifier `j`) to `stats`
/// (`m × (K + 1) × K`, row-major), times `sign` (+1 add, -1 remove).
#[allow(clippy::too_many_arguments)]
pub fn add_contribution(
    stats: &mut [f64],
    k: usize,
    j: usize,
    zbar: &[(u32, f64)],
    y: f64,
    lambda: f64,
    p: &MedLdaParams,
    sign: f64,
) {
    let base = j * block_rows(k) * k;
    for &(a, za) in zbar {
        for &(b, zb) in zbar {
            stats[base + a as usize * k + b as usize] += sign * za * zb / lambda;
        }
        stats[base + k * k + a as usize] += sign * y * (lambda + p.c * p.margin) / lambda * za;
    }
}

/// In-place Cholesky factor (lower) of a symmetric positive definite
/// `n × n` matrix. Returns false if it is not positive definite.
pub fn cholesky(a: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        let mut d = a[j * n + j];
        for s in 0..j {
            d -= a[j * n + s] * a[j * n + s];
        }
        if d <= 0.0 || !d.is_finite() {
            return false;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut v = a[i * n + j];
            for s in 0..j {
                v -= a[i * n + s] * a[j * n + s];
            }
            a[i * n + j] = v / d;
        }
        for i in 0..j {
            a[i * n + j] = 0.0;
        }
    }
    true
}

/// A standard normal draw (Box–Muller).
pub fn normal<R: Rng>(rng: &mut R) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// An inverse-Gaussian draw `IG(mean, shape)` (Michael, Schucany & Haas 1976).
pub fn inverse_gaussian<R: Rng>(mean: f64, shape: f64, rng: &mut R) -> f64 {
    let nu = normal(rng);
    let y = nu * nu;
    let m = mean;
    let x = m + m * m * y / (2.0 * shape)
        - m / (2.0 * shape) * (4.0 * m * shape * y + m * m * y * y).sqrt();
    if rng.gen::<f64>() <= m / (m + x) {
        x
    } else {
        m * m / x
    }
}

/// Posterior of classifier `j`'s weights given the statistics:
/// `η ~ N(μ, Σ)`, `Σ⁻¹ = I/ν² + c² A`, `μ = Σ c b`. Returns `μ` and, when
/// `rng` is given, a draw.
pub fn eta_posterior<R: Rng>(
    stats: &[f64],
    k: usize,
    j: usize,
    p: &MedLdaParams,
    rng: Option<&mut R>,
) -> (Vec<f64>, Vec<f64>) {
    let base = j * block_rows(k) * k;
    let mut prec: Vec<f64> = stats[base..base + k * k]
        .iter()
        .map(|a| p.c * p.c * a)
        .collect();
    for i in 0..k {
        prec[i * k + i] += 1.0 / p.eta_variance;
    }
    let h: Vec<f64> = stats[base + k * k..base + k * k + k]
        .iter()
        .map(|b| p.c * b)
        .collect();
    if !cholesky(&mut prec, k) {
        // Only a corrupt or stale view can get here; fall back to the prior.
        return (vec![0.0; k], vec![0.0; k]);
    }
    let l = &prec;
    // Solve L u = h, then Lᵀ μ = u.
    let mut u = vec![0.0; k];
    for i in 0..k {
        let mut v = h[i];
        for s in 0..i {
            v -= l[i * k + s] * u[s];
        }
        u[i] = v / l[i * k + i];
    }
    let back = |rhs: &[f64]| {
        let mut x = vec![0.0; k];
        for i in (0..k).rev() {
            let mut v = rhs[i];
            for s in i + 1..k {
                v -= l[s * k + i] * x[s];
            }
            x[i] = v / l[i * k + i];
        }
        x
    };
    let mean = back(&u);
    let draw = match rng {
        Some(rng) => {
            let eps: Vec<f64> = (0..k).map(|_| normal(rng)).collect();
            let noise = back(&eps);
            mean.iter().zip(&noise).map(|(m, n)| m + n).collect()
        }
        None => mean.clone(),
    };
    (mean, draw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn cholesky_solves() {
        let mut a = vec![4.0, 2.0, 2.0, 3.0];
        assert!(cholesky(&mut a, 2));
        assert_eq!(a, vec![2.0, 0.0, 1.0, 2f64.sqrt()]);
        assert!(!cholesky(&mut [1.0, 2.0, 2.0, 1.0], 2));
    }

    #[test]
    fn inverse_gaussian_has_its_mean_and_variance() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (m, s) = (0.7, 1.0);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| inverse_gaussian(m, s, &mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        // IG(μ, λ): mean μ, variance μ³/λ.
        assert!((mean - m).abs() < 0.01, "{mean}");
        assert!((var - m * m * m / s).abs() < 0.02, "{var}");
    }

    #[test]
    fn eta_posterior_mean_solves_the_normal_equations() {
        let p = MedLdaParams::default();
        let k = 2;
        // One document with z̄ = (1, 0), y = +1, λ = 1: A = e1 e1ᵀ,
        // b = (1 + cℓ) e1 → μ1 = c(1 + cℓ) / (1/ν² + c²) = 1.
        let mut stats = vec![0.0; block_rows(k) * k];
        add_contribution(&mut stats, k, 0, &[(0, 1.0)], 1.0, 1.0, &p, 1.0);
        let (mean, _) = eta_posterior::<ChaCha8Rng>(&stats, k, 0, &p, None);
        assert!(
            (mean[0] - 1.0).abs() < 1e-12 && mean[1].abs() < 1e-12,
            "{mean:?}"
        );
    }
}
