//! A trained dictionary: the model file, the transform of new data
//! (coefficients with the dictionary fixed) and its metrics.

use super::{
    hals_row, lasso_row, linalg, mu_row_kl, BetaLoss, NmfParams, Problem, SparseCodingParams,
    EPSILON,
};
use crate::data::Csr;
use crate::model::{ModelError, ModelFile};

/// A dictionary `H` (k × d) and the problem it was trained for.
#[derive(Clone, Debug, PartialEq)]
pub struct FactorModel {
    pub problem: Problem,
    /// Row-major `k × d`.
    pub h: Vec<f64>,
    pub k: usize,
    pub d: usize,
}

impl FactorModel {
    pub fn new(problem: Problem, h: Vec<f64>, k: usize, d: usize) -> Self {
        FactorModel { problem, h, k, d }
    }

    /// Writes the dictionary as tensor `components` (k × d, f32; the name
    /// of scikit-learn's attribute) with `k`, `num_features` and `params`.
    pub fn write_into(&self, file: &mut ModelFile) {
        file.set("k", self.k);
        file.set("num_features", self.d);
        let params = match &self.problem {
            Problem::Nmf(p) => serde_json::to_string(p),
            Problem::SparseCoding(p) => serde_json::to_string(p),
        };
        file.set("params", params.expect("params serialise"));
        file.add_tensor(
            "components",
            vec![self.k, self.d],
            self.h.iter().map(|&v| v as f32).collect(),
        );
    }

    pub fn from_file(file: &ModelFile) -> Result<Self, ModelError> {
        let bad = |reason: String| ModelError::Format {
            path: file.path.clone(),
            reason,
        };
        let params: String = file.meta("params")?;
        let problem = match file.algorithm() {
            super::NAME => Problem::Nmf(
                serde_json::from_str::<NmfParams>(&params).map_err(|e| bad(e.to_string()))?,
            ),
            crate::sparse_coding::NAME => Problem::SparseCoding(
                serde_json::from_str::<SparseCodingParams>(&params)
                    .map_err(|e| bad(e.to_string()))?,
            ),
            other => return Err(bad(format!("`{other}` is not a dictionary model"))),
        };
        let t = file.tensor("components")?;
        if t.shape.len() != 2 || t.shape[0] != problem.k() {
            return Err(bad(format!(
                "components of shape {:?}, k = {}",
                t.shape,
                problem.k()
            )));
        }
        Ok(FactorModel {
            problem,
            h: t.data.iter().map(|&v| v as f64).collect(),
            k: t.shape[0],
            d: t.shape[1],
        })
    }

    /// Largest Euclidean norm of an atom.
    pub fn max_atom_norm(&self) -> f64 {
        self.h
            .chunks_exact(self.d)
            .map(|r| r.iter().map(|x| x * x).sum::<f64>().sqrt())
            .fold(0.0, f64::max)
    }

    /// Coefficients of the rows of `x` (n × k, row-major) with the
    /// dictionary fixed: NMF, Frobenius: HALS sweeps from scikit-learn's
    /// constant start `√(mean(X)/k)` until a sweep moves the row by less
    /// than 1e-4 of its ℓ1 norm; KL: multiplicative updates; sparse coding:
    /// the lasso by coordinate descent from 0. Returns the coefficients and
    /// the sweeps made in all.
    pub fn transform(&self, x: &Csr) -> (Vec<f64>, usize) {
        let (k, d) = (self.k, self.d);
        let n = x.nrows();
        let rows: Vec<usize> = (0..n).collect();
        let ht = linalg::transpose(&self.h, k, d);
        let hht = linalg::outer_gram(&self.h, k, d);
        let mut w = vec![0f64; n * k];
        let mut sweeps = 0;
        match &self.problem {
            Problem::Nmf(p) => {
                let mean = x.values.iter().map(|&v| v as f64).sum::<f64>() / (n as f64 * d as f64);
                w.fill((mean / k as f64).sqrt());
                if p.beta_loss == BetaLoss::KullbackLeibler {
                    let hsum: Vec<f64> = (0..k)
                        .map(|t| self.h[t * d..(t + 1) * d].iter().sum())
                        .collect();
                    for (wr, &r) in w.chunks_exact_mut(k).zip(&rows) {
                        let (idx, val) = x.row(r);
                        for _ in 0..p.transform_iterations {
                            let before: f64 = wr.iter().sum();
                            mu_row_kl(wr, idx, val, &ht, &hsum, k);
                            sweeps += 1;
                            let after: f64 = wr.iter().sum();
                            if (after - before).abs() <= 1e-6 * after.max(EPSILON) {
                                break;
                            }
                        }
                    }
                } else {
                    let mut xht = vec![0f64; n * k];
                    linalg::x_times(x, &rows, &ht, k, &mut xht);
                    for (wr, xh) in w.chunks_exact_mut(k).zip(xht.chunks_exact(k)) {
                        for _ in 0..p.transform_iterations {
                            let moved = hals_row(wr, xh, &hht, k);
                            sweeps += 1;
                            if moved <= 1e-4 * wr.iter().sum::<f64>() {
                                break;
                            }
                        }
                    }
                }
            }
            Problem::SparseCoding(p) => {
                let mut xht = vec![0f64; n * k];
                linalg::x_times(x, &rows, &ht, k, &mut xht);
                for (wr, xh) in w.chunks_exact_mut(k).zip(xht.chunks_exact(k)) {
                    sweeps += lasso_row(wr, xh, &hht, k, p.lambda, 10 * p.code_iterations, p.tol);
                }
            }
        }
        (w, sweeps)
    }

    /// `‖X − WH‖²_F`, `Σ x·(WH)` over the non-zeros of `x`, and (KL) the
    /// divergence `D(X ‖ WH)`.
    fn losses(&self, x: &Csr, w: &[f64]) -> (f64, f64) {
        let (k, d) = (self.k, self.d);
        let ht = linalg::transpose(&self.h, k, d);
        let (mut xx, mut cross, mut div) = (0f64, 0f64, 0f64);
        for (i, wr) in w.chunks_exact(k).enumerate() {
            let (idx, val) = x.row(i);
            for (&j, &v) in idx.iter().zip(val) {
                let v = v as f64;
                let wh: f64 = ht[j as usize * k..(j as usize + 1) * k]
                    .iter()
                    .zip(wr)
                    .map(|(a, b)| a * b)
                    .sum();
                xx += v * v;
                cross += v * wh;
                div += v * (v / wh.max(EPSILON)).ln() - v;
            }
        }
        let a = linalg::gram(w, k);
        let hht = linalg::outer_gram(&self.h, k, d);
        let whwh: f64 = a.iter().zip(&hht).map(|(p, q)| p * q).sum();
        let colsum: Vec<f64> = (0..k)
            .map(|t| w.chunks_exact(k).map(|r| r[t]).sum())
            .collect();
        let hsum: Vec<f64> = (0..k)
            .map(|t| self.h[t * d..(t + 1) * d].iter().sum())
            .collect();
        div += colsum.iter().zip(&hsum).map(|(p, q)| p * q).sum::<f64>();
        let sq = (xx - 2.0 * cross + whwh).max(0.0);
        (
            sq / xx.max(f64::MIN_POSITIVE),
            if matches!(&self.problem, Problem::Nmf(p) if p.beta_loss == BetaLoss::KullbackLeibler)
            {
                div
            } else {
                sq
            },
        )
    }

    /// Metrics of coefficients `w` for `x`: NMF: `relative_error`
    /// (`‖X − WH‖_F / ‖X‖_F`) and `objective` (`½‖X − WH‖²` or the KL
    /// divergence); sparse coding: `objective` (mean per sample of
    /// `½‖x − wH‖² + λ‖w‖₁`) and `mean_nonzeros` per code.
    pub fn metrics(&self, x: &Csr, w: &[f64]) -> Vec<(String, f64)> {
        let (rel_sq, loss) = self.losses(x, w);
        match &self.problem {
            Problem::Nmf(p) => vec![
                ("relative_error".into(), rel_sq.sqrt()),
                (
                    "objective".into(),
                    if p.beta_loss == BetaLoss::KullbackLeibler {
                        loss
                    } else {
                        0.5 * loss
                    },
                ),
            ],
            Problem::SparseCoding(p) => {
                let n = x.nrows().max(1) as f64;
                let l1: f64 = w.iter().map(|v| v.abs()).sum();
                let nnz = w.iter().filter(|&&v| v != 0.0).count() as f64;
                vec![
                    ("objective".into(), (0.5 * loss + p.lambda * l1) / n),
                    ("mean_nonzeros".into(), nnz / n),
                ]
            }
        }
    }
}

/// The `n` words of largest weight in each component (ties: lower id).
pub fn top_words(model: &FactorModel, vocab: &[String], n: usize) -> Vec<Vec<String>> {
    model
        .h
        .chunks_exact(model.d)
        .map(|row| {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            idx.into_iter()
                .take(n)
                .map(|j| vocab.get(j).cloned().unwrap_or_else(|| format!("#{j}")))
                .collect()
        })
        .collect()
}
