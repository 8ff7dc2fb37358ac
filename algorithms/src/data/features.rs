//! Feature matrices: dense (ndarray) or sparse (CSR), with the few
//! per-sample primitives linear models need.

use ndarray::Array2;

/// A sparse matrix in compressed sparse row form.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Csr {
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
    pub ncols: usize,
}

impl Csr {
    pub fn nrows(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    /// The (column, value) pairs of row `i`.
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[i], self.indptr[i + 1]);
        (&self.indices[a..b], &self.values[a..b])
    }

    pub fn nnz(&self) -> usize {
        self.values.len()
    }
}

/// The features of a data set, one sample per row.
#[derive(Clone, Debug, PartialEq)]
pub enum Features {
    Dense(Array2<f32>),
    Sparse(Csr),
}

impl Features {
    pub fn nrows(&self) -> usize {
        match self {
            Features::Dense(a) => a.nrows(),
            Features::Sparse(c) => c.nrows(),
        }
    }

    pub fn ncols(&self) -> usize {
        match self {
            Features::Dense(a) => a.ncols(),
            Features::Sparse(c) => c.ncols,
        }
    }

    /// `x_i · w` (w may be longer than the row: extra entries are ignored).
    #[inline]
    pub fn dot(&self, i: usize, w: &[f32]) -> f32 {
        match self {
            Features::Dense(a) => {
                let row = a.row(i);
                let row = row.as_slice().expect("standard layout");
                row.iter().zip(w).map(|(x, w)| x * w).sum()
            }
            Features::Sparse(c) => {
                let (idx, val) = c.row(i);
                idx.iter().zip(val).map(|(&j, &x)| x * w[j as usize]).sum()
            }
        }
    }

    /// [`dot`](Self::dot) with eight running sums over a dense row (added
    /// pairwise at the end), which the compiler turns into vector
    /// instructions; one chain of dependent additions cannot be. For
    /// evaluation (a model's scores over a data set): the bits differ from
    /// `dot`'s, so training keeps `dot`.
    pub fn dot_wide(&self, i: usize, w: &[f32]) -> f32 {
        match self {
            Features::Dense(a) => {
                let row = a.row(i);
                let row = row.as_slice().expect("standard layout");
                let n = row.len().min(w.len());
                let (row, w) = (&row[..n], &w[..n]);
                let mut acc = [0.0f32; 8];
                let (rc, rt) = row.split_at(n & !7);
                let (wc, wt) = w.split_at(n & !7);
                for (x, w) in rc.chunks_exact(8).zip(wc.chunks_exact(8)) {
                    for l in 0..8 {
                        acc[l] += x[l] * w[l];
                    }
                }
                for (l, (x, w)) in rt.iter().zip(wt).enumerate() {
                    acc[l] += x * w;
                }
                ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
            }
            Features::Sparse(_) => self.dot(i, w),
        }
    }

    /// `out += a * x_i`.
    #[inline]
    pub fn axpy(&self, i: usize, a: f32, out: &mut [f32]) {
        match self {
            Features::Dense(m) => {
                for (o, x) in out.iter_mut().zip(m.row(i)) {
                    *o += a * x;
                }
            }
            Features::Sparse(c) => {
                let (idx, val) = c.row(i);
                for (&j, &x) in idx.iter().zip(val) {
                    out[j as usize] += a * x;
                }
            }
        }
    }

    /// `x_i · w` in `f64` (extra entries of `w` are ignored).
    #[inline]
    pub fn dot64(&self, i: usize, w: &[f64]) -> f64 {
        match self {
            Features::Dense(a) => {
                let row = a.row(i);
                let row = row.as_slice().expect("standard layout");
                row.iter().zip(w).map(|(&x, w)| x as f64 * w).sum()
            }
            Features::Sparse(c) => {
                let (idx, val) = c.row(i);
                idx.iter()
                    .zip(val)
                    .map(|(&j, &x)| x as f64 * w[j as usize])
                    .sum()
            }
        }
    }

    /// `out += a * x_i` in `f64`.
    #[inline]
    pub fn axpy64(&self, i: usize, a: f64, out: &mut [f64]) {
        match self {
            Features::Dense(m) => {
                for (o, &x) in out.iter_mut().zip(m.row(i)) {
                    *o += a * x as f64;
                }
            }
            Features::Sparse(c) => {
                let (idx, val) = c.row(i);
                for (&j, &x) in idx.iter().zip(val) {
                    out[j as usize] += a * x as f64;
                }
            }
        }
    }

    /// Writes row `i` densely into `out` (of length `ncols`).
    pub fn row_into(&self, i: usize, out: &mut [f32]) {
        match self {
            Features::Dense(a) => {
                out.copy_from_slice(a.row(i).as_slice().expect("standard layout"))
            }
            Features::Sparse(c) => {
                out.fill(0.0);
                let (idx, val) = c.row(i);
                for (&j, &x) in idx.iter().zip(val) {
                    out[j as usize] = x;
                }
            }
        }
    }

    /// Column means and standard deviations (std 1 for constant columns).
    pub fn column_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let a = self.to_dense();
        let n = a.nrows().max(1) as f64;
        let mut mean = vec![0f32; a.ncols()];
        let mut std = vec![1f32; a.ncols()];
        for j in 0..a.ncols() {
            let col = a.column(j);
            let m = col.iter().map(|&x| x as f64).sum::<f64>() / n;
            let v = col.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n;
            mean[j] = m as f32;
            std[j] = if v > 1e-12 { v.sqrt() as f32 } else { 1.0 };
        }
        (mean, std)
    }

    /// `x ← (x − mean) / std` column-wise (sparse matrices become dense).
    pub fn standardize(&mut self, mean: &[f32], std: &[f32]) {
        let mut a = self.to_dense();
        for mut row in a.rows_mut() {
            for ((x, m), s) in row.iter_mut().zip(mean).zip(std) {
                *x = (*x - m) / s;
            }
        }
        *self = Features::Dense(a);
    }

    /// Column indices touched by row `i` (all of them for dense rows).
    pub fn row_columns(&self, i: usize) -> Vec<u32> {
        match self {
            Features::Dense(a) => (0..a.ncols() as u32).collect(),
            Features::Sparse(c) => c.row(i).0.to_vec(),
        }
    }

    /// Squared Euclidean norm of row `i`.
    pub fn norm2(&self, i: usize) -> f32 {
        match self {
            Features::Dense(a) => a.row(i).iter().map(|x| x * x).sum(),
            Features::Sparse(c) => c.row(i).1.iter().map(|x| x * x).sum(),
        }
    }

    /// Dense copy (sparse matrices are expanded).
    pub fn to_dense(&self) -> Array2<f32> {
        match self {
            Features::Dense(a) => a.clone(),
            Features::Sparse(c) => {
                let mut a = Array2::zeros((c.nrows(), c.ncols));
                for i in 0..c.nrows() {
                    let (idx, val) = c.row(i);
                    for (&j, &x) in idx.iter().zip(val) {
                        a[[i, j as usize]] = x;
                    }
                }
                a
            }
        }
    }

    /// The rows at `rows`, in that order.
    pub fn select(&self, rows: &[usize]) -> Features {
        match self {
            Features::Dense(a) => Features::Dense(a.select(ndarray::Axis(0), rows)),
            Features::Sparse(c) => {
                let mut out = Csr {
                    indptr: vec![0],
                    ncols: c.ncols,
                    ..Default::default()
                };
                for &i in rows {
                    let (idx, val) = c.row(i);
                    out.indices.extend_from_slice(idx);
                    out.values.extend_from_slice(val);
                    out.indptr.push(out.indices.len());
                }
                Features::Sparse(out)
            }
        }
    }

    /// Widens to `ncols` columns (a test file may use fewer features).
    pub fn set_ncols(&mut self, ncols: usize) {
        match self {
            Features::Sparse(c) => c.ncols = c.ncols.max(ncols),
            Features::Dense(a) if a.ncols() < ncols => {
                let mut b = Array2::zeros((a.nrows(), ncols));
                b.slice_mut(ndarray::s![.., ..a.ncols()]).assign(a);
                *a = b;
            }
            Features::Dense(_) => {}
        }
    }
}
