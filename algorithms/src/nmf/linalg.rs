//! The few dense and sparse kernels NMF and sparse coding need: products
//! of a CSR data matrix with small dense factors, a randomized truncated
//! SVD (Halko, Martinsson and Tropp 2011, as scikit-learn's
//! `randomized_svd`) and NNDSVD (Boutsidis and Gallopoulos 2008).

use crate::data::Csr;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// `out (rows × k) = X[rows] · M` for `M` of `ncols × k`, row-major.
pub fn x_times(x: &Csr, rows: &[usize], m: &[f64], k: usize, out: &mut [f64]) {
    out.fill(0.0);
    for (o, &r) in out.chunks_exact_mut(k).zip(rows) {
        let (idx, val) = x.row(r);
        for (&j, &v) in idx.iter().zip(val) {
            let mj = &m[j as usize * k..(j as usize + 1) * k];
            let v = v as f64;
            for (a, &b) in o.iter_mut().zip(mj) {
                *a += v * b;
            }
        }
    }
}

/// `out (ncols × k) += X[rows]ᵀ · M` for `M` of `rows.len() × k`.
pub fn xt_times(x: &Csr, rows: &[usize], m: &[f64], k: usize, out: &mut [f64]) {
    for (mi, &r) in m.chunks_exact(k).zip(rows) {
        let (idx, val) = x.row(r);
        for (&j, &v) in idx.iter().zip(val) {
            let o = &mut out[j as usize * k..(j as usize + 1) * k];
            let v = v as f64;
            for (a, &b) in o.iter_mut().zip(mi) {
                *a += v * b;
            }
        }
    }
}

/// `Mᵀ M` (k × k) of a row-major `n × k` matrix.
pub fn gram(m: &[f64], k: usize) -> Vec<f64> {
    let mut g = vec![0f64; k * k];
    for row in m.chunks_exact(k) {
        for a in 0..k {
            let ra = row[a];
            if ra == 0.0 {
                continue;
            }
            let ga = &mut g[a * k..(a + 1) * k];
            for (b, &rb) in row.iter().enumerate().skip(a) {
                ga[b] += ra * rb;
            }
        }
    }
    for a in 0..k {
        for b in 0..a {
            g[a * k + b] = g[b * k + a];
        }
    }
    g
}

/// `H Hᵀ` (k × k) of a row-major `k × d` matrix.
pub fn outer_gram(h: &[f64], k: usize, d: usize) -> Vec<f64> {
    let mut g = vec![0f64; k * k];
    for a in 0..k {
        for b in a..k {
            let s: f64 = h[a * d..(a + 1) * d]
                .iter()
                .zip(&h[b * d..(b + 1) * d])
                .map(|(x, y)| x * y)
                .sum();
            g[a * k + b] = s;
            g[b * k + a] = s;
        }
    }
    g
}

/// Transpose of a row-major `r × c` matrix.
pub fn transpose(m: &[f64], r: usize, c: usize) -> Vec<f64> {
    let mut t = vec![0f64; r * c];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = m[i * c + j];
        }
    }
    t
}

/// Orthonormalises the `c` columns of a row-major `r × c` matrix in place
/// (modified Gram–Schmidt, applied twice). A column that vanishes becomes 0.
fn orthonormalise(m: &mut [f64], r: usize, c: usize) {
    for _ in 0..2 {
        for j in 0..c {
            for p in 0..j {
                let dot: f64 = (0..r).map(|i| m[i * c + j] * m[i * c + p]).sum();
                for i in 0..r {
                    m[i * c + j] -= dot * m[i * c + p];
                }
            }
            let norm = (0..r).map(|i| m[i * c + j].powi(2)).sum::<f64>().sqrt();
            let inv = if norm > 1e-300 { 1.0 / norm } else { 0.0 };
            for i in 0..r {
                m[i * c + j] *= inv;
            }
        }
    }
}

/// Eigenvalues (descending) and eigenvectors (columns of the returned
/// row-major matrix) of a symmetric `n × n` matrix, by cyclic Jacobi.
pub fn sym_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        let total: f64 = a.iter().map(|x| x * x).sum();
        if off <= 1e-30 * total.max(1e-300) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = a[k * n + p];
                    let akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[p * n + k];
                    let aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let vkp = v[k * n + p];
                    let vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let vals = order.iter().map(|&i| a[i * n + i]).collect();
    let mut vecs = vec![0f64; n * n];
    for (new, &old) in order.iter().enumerate() {
        for k in 0..n {
            vecs[k * n + new] = v[k * n + old];
        }
    }
    (vals, vecs)
}

fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    // Box–Muller.
    let u1: f64 = rng.gen::<f64>().max(1e-300);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The top `r` singular values and right singular vectors (`r × ncols`,
/// row-major) of `X` (all rows), by randomized SVD with `r + 10` samples and
/// `power` power iterations (scikit-learn's defaults: 7 when
/// `r < 0.1 min(n, d)`, else 4).
pub fn randomized_svd(x: &Csr, r: usize, rng: &mut ChaCha8Rng) -> (Vec<f64>, Vec<f64>) {
    let (n, d) = (x.nrows(), x.ncols);
    let l = (r + 10).min(n).min(d);
    let power = if (r as f64) < 0.1 * n.min(d) as f64 {
        7
    } else {
        4
    };
    let rows: Vec<usize> = (0..n).collect();
    let omega: Vec<f64> = (0..d * l).map(|_| gaussian(rng)).collect();
    let mut q = vec![0f64; n * l];
    x_times(x, &rows, &omega, l, &mut q);
    orthonormalise(&mut q, n, l);
    let mut z = vec![0f64; d * l];
    for _ in 0..power {
        z.fill(0.0);
        xt_times(x, &rows, &q, l, &mut z);
        orthonormalise(&mut z, d, l);
        x_times(x, &rows, &z, l, &mut q);
        orthonormalise(&mut q, n, l);
    }
    // B = Qᵀ X (l × d), stored transposed as z = Xᵀ Q (d × l).
    z.fill(0.0);
    xt_times(x, &rows, &q, l, &mut z);
    let bbt = gram(&z, l);
    let (vals, vecs) = sym_eigen(&bbt, l);
    let r = r.min(l);
    let mut s = Vec::with_capacity(r);
    let mut v = vec![0f64; r * d];
    for c in 0..r {
        let sigma = vals[c].max(0.0).sqrt();
        s.push(sigma);
        if sigma <= 1e-12 * vals[0].max(0.0).sqrt().max(1e-300) {
            continue;
        }
        // v_c = Bᵀ u_c / σ_c.
        for j in 0..d {
            let zj = &z[j * l..(j + 1) * l];
            let dot: f64 = (0..l).map(|i| zj[i] * vecs[i * l + c]).sum();
            v[c * d + j] = dot / sigma;
        }
    }
    (s, v)
}

/// How NNDSVD builds component `k` of the coefficients from the data:
/// `w_ik = scale · part(x_i · v_k / σ_k)` where `part` is the absolute
/// value (k = 0), the positive part (`sign = 1`) or the negative part
/// (`sign = -1`); values below 1e-6 become `fill` (NNDSVDa: the data mean).
#[derive(Clone, Debug, PartialEq)]
pub struct NndsvdComponent {
    pub v: Vec<f64>,
    pub inv_sigma: f64,
    pub sign: f64,
    pub scale: f64,
}

impl NndsvdComponent {
    /// The coefficient of a row whose projection on `v` is `proj` (= x · v).
    pub fn coefficient(&self, proj: f64, fill: f64) -> f64 {
        let u = proj * self.inv_sigma;
        let p = if self.sign > 0.0 {
            u.max(0.0)
        } else if self.sign < 0.0 {
            (-u).max(0.0)
        } else {
            u.abs()
        };
        let w = self.scale * p;
        if w < NNDSVD_EPS {
            fill
        } else {
            w
        }
    }
}

/// Below this NNDSVD entries are zero (scikit-learn's `eps`).
pub const NNDSVD_EPS: f64 = 1e-6;

/// NNDSVDa initialisation (Boutsidis and Gallopoulos 2008; zeros filled
/// with the data mean, as scikit-learn's `init="nndsvda"`): the initial
/// dictionary (`k × d`) and, per component, how a worker computes its
/// rows' initial coefficients from its own data.
pub fn nndsvda(x: &Csr, k: usize, rng: &mut ChaCha8Rng) -> (Vec<f64>, Vec<NndsvdComponent>, f64) {
    let (n, d) = (x.nrows(), x.ncols);
    let mean = x.values.iter().map(|&v| v as f64).sum::<f64>() / (n as f64 * d as f64);
    let (s, v) = randomized_svd(x, k, rng);
    let rows: Vec<usize> = (0..n).collect();
    // U = X V / σ (n × k).
    let vt = transpose(&v, s.len(), d);
    let mut xv = vec![0f64; n * s.len()];
    x_times(x, &rows, &vt, s.len(), &mut xv);
    let mut h = vec![0f64; k * d];
    let mut comps = Vec::with_capacity(k);
    for c in 0..k {
        if c >= s.len() || s[c] <= 0.0 {
            comps.push(NndsvdComponent {
                v: vec![0.0; d],
                inv_sigma: 0.0,
                sign: 1.0,
                scale: 0.0,
            });
            continue;
        }
        let inv_sigma = 1.0 / s[c];
        let vc = &v[c * d..(c + 1) * d];
        let u: Vec<f64> = (0..n).map(|i| xv[i * s.len() + c] * inv_sigma).collect();
        let (sign, scale, hrow): (f64, f64, Vec<f64>) = if c == 0 {
            let sq = s[0].sqrt();
            (0.0, sq, vc.iter().map(|x| sq * x.abs()).collect())
        } else {
            let norm = |it: &mut dyn Iterator<Item = f64>| it.map(|x| x * x).sum::<f64>().sqrt();
            let up = norm(&mut u.iter().map(|&x| x.max(0.0)));
            let un = norm(&mut u.iter().map(|&x| (-x).max(0.0)));
            let vp = norm(&mut vc.iter().map(|&x| x.max(0.0)));
            let vn = norm(&mut vc.iter().map(|&x| (-x).max(0.0)));
            let (mp, mn) = (up * vp, un * vn);
            let (sign, unorm, vnorm, m) = if mp > mn {
                (1.0, up, vp, mp)
            } else {
                (-1.0, un, vn, mn)
            };
            let lbd = (s[c] * m).sqrt();
            let scale = if unorm > 0.0 { lbd / unorm } else { 0.0 };
            let hs = if vnorm > 0.0 { lbd / vnorm } else { 0.0 };
            let hrow = vc.iter().map(|&x| hs * (sign * x).max(0.0)).collect();
            (sign, scale, hrow)
        };
        for (j, hv) in hrow.into_iter().enumerate() {
            h[c * d + j] = if hv < NNDSVD_EPS { mean } else { hv };
        }
        comps.push(NndsvdComponent {
            v: vc.to_vec(),
            inv_sigma,
            sign,
            scale,
        });
    }
    for hv in h.iter_mut() {
        if *hv < NNDSVD_EPS {
            *hv = mean;
        }
    }
    (h, comps, mean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn csr(rows: &[&[f32]]) -> Csr {
        let mut c = Csr {
            indptr: vec![0],
            ncols: rows[0].len(),
            ..Default::default()
        };
        for r in rows {
            for (j, &v) in r.iter().enumerate() {
                if v != 0.0 {
                    c.indices.push(j as u32);
                    c.values.push(v);
                }
            }
            c.indptr.push(c.indices.len());
        }
        c
    }

    #[test]
    fn jacobi_recovers_eigenpairs() {
        // [[2, 1], [1, 2]]: eigenvalues 3 and 1.
        let (vals, vecs) = sym_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((vals[0] - 3.0).abs() < 1e-12 && (vals[1] - 1.0).abs() < 1e-12);
        let r = std::f64::consts::FRAC_1_SQRT_2;
        assert!((vecs[0].abs() - r).abs() < 1e-12 && (vecs[2].abs() - r).abs() < 1e-12);
    }

    #[test]
    fn randomized_svd_of_a_rank_two_matrix() {
        // Rows are combinations of (1, 0, 1, 0) and (0, 1, 0, 2): rank 2, so
        // two singular values carry all of ||X||_F².
        let x = csr(&[
            &[1.0, 0.0, 1.0, 0.0],
            &[0.0, 1.0, 0.0, 2.0],
            &[2.0, 1.0, 2.0, 2.0],
            &[1.0, 2.0, 1.0, 4.0],
        ]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (s, v) = randomized_svd(&x, 2, &mut rng);
        let mut xx = 0.0;
        for &val in &x.values {
            xx += (val as f64).powi(2);
        }
        assert!((s[0] * s[0] + s[1] * s[1] - xx).abs() < 1e-9 * xx, "{s:?}");
        // Right singular vectors are orthonormal.
        let dot: f64 = (0..4).map(|j| v[j] * v[4 + j]).sum();
        let n0: f64 = (0..4).map(|j| v[j] * v[j]).sum();
        assert!(dot.abs() < 1e-9 && (n0 - 1.0).abs() < 1e-9);
    }
}
