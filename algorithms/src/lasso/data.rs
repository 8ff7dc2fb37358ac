//! Regression data for Lasso: a design matrix stored by column (CSC, f64)
//! and a real target, from libsvm, CSV (target column by name) or
//! MatrixMarket (targets in `data.train_labels`).

use crate::data::{csv, libsvm, mm, DataError, Features};
use petuum_core::spec::{DataFormat, DataSpec};
use std::path::Path;

/// A sparse matrix stored by column, row indices increasing in a column.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Csc {
    pub nrows: usize,
    pub indptr: Vec<usize>,
    pub rows: Vec<u32>,
    pub vals: Vec<f64>,
}

impl Csc {
    pub fn ncols(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    /// The (row, value) pairs of column `j`.
    #[inline]
    pub fn col(&self, j: usize) -> (&[u32], &[f64]) {
        let (a, b) = (self.indptr[j], self.indptr[j + 1]);
        (&self.rows[a..b], &self.vals[a..b])
    }

    pub fn nnz(&self) -> usize {
        self.vals.len()
    }

    /// From `(row, col, value)` triples (zeros dropped, duplicates summed).
    pub fn from_triples(nrows: usize, ncols: usize, mut t: Vec<(u32, u32, f64)>) -> Csc {
        t.sort_unstable_by_key(|&(i, j, _)| (j, i));
        let mut out = Csc {
            nrows,
            indptr: vec![0; ncols + 1],
            ..Default::default()
        };
        let mut last: Option<(u32, u32)> = None;
        for (i, j, v) in t {
            if last == Some((i, j)) {
                *out.vals.last_mut().expect("a previous entry") += v;
                continue;
            }
            last = Some((i, j));
            out.rows.push(i);
            out.vals.push(v);
            out.indptr[j as usize + 1] = out.rows.len();
        }
        for j in 0..ncols {
            out.indptr[j + 1] = out.indptr[j + 1].max(out.indptr[j]);
        }
        out
    }

    /// From row-major features (dense zeros are not stored).
    pub fn from_features(f: &Features) -> Csc {
        let mut t = Vec::new();
        match f {
            Features::Dense(a) => {
                for ((i, j), &v) in a.indexed_iter() {
                    if v != 0.0 {
                        t.push((i as u32, j as u32, v as f64));
                    }
                }
            }
            Features::Sparse(c) => {
                for i in 0..c.nrows() {
                    let (idx, val) = c.row(i);
                    for (&j, &v) in idx.iter().zip(val) {
                        if v != 0.0 {
                            t.push((i as u32, j, v as f64));
                        }
                    }
                }
            }
        }
        Csc::from_triples(f.nrows(), f.ncols(), t)
    }

    /// The rows `rows` (in that order, renumbered from 0).
    pub fn select_rows(&self, rows: &[usize]) -> Csc {
        let mut map = vec![u32::MAX; self.nrows];
        for (new, &old) in rows.iter().enumerate() {
            map[old] = new as u32;
        }
        // Branch-free copy: every entry is written, and the write position
        // advances only for kept rows.
        let total = self.nnz();
        let mut out_rows = vec![0u32; total];
        let mut out_vals = vec![0f64; total];
        let mut indptr = Vec::with_capacity(self.ncols() + 1);
        indptr.push(0);
        let mut len = 0;
        for j in 0..self.ncols() {
            let (r, v) = self.col(j);
            for (&i, &x) in r.iter().zip(v) {
                let m = map[i as usize];
                out_rows[len] = m;
                out_vals[len] = x;
                len += (m != u32::MAX) as usize;
            }
            indptr.push(len);
        }
        out_rows.truncate(len);
        out_vals.truncate(len);
        out_rows.shrink_to_fit();
        out_vals.shrink_to_fit();
        // Rows taken in ascending order keep every column sorted; others
        // are sorted column by column.
        if !rows.windows(2).all(|w| w[0] < w[1]) {
            let mut col: Vec<(u32, f64)> = Vec::new();
            for j in 0..self.ncols() {
                let (a, b) = (indptr[j], indptr[j + 1]);
                col.clear();
                col.extend(
                    out_rows[a..b]
                        .iter()
                        .copied()
                        .zip(out_vals[a..b].iter().copied()),
                );
                col.sort_unstable_by_key(|e| e.0);
                for (k, &(i, x)) in col.iter().enumerate() {
                    out_rows[a + k] = i;
                    out_vals[a + k] = x;
                }
            }
        }
        Csc {
            nrows: rows.len(),
            indptr,
            rows: out_rows,
            vals: out_vals,
        }
    }

    /// Widens to `ncols` columns (empty ones appended).
    pub fn set_ncols(&mut self, ncols: usize) {
        while self.ncols() < ncols {
            self.indptr.push(self.rows.len());
        }
    }

    /// `X w` for a dense `w`.
    pub fn matvec(&self, w: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; self.nrows];
        for (j, &wj) in w.iter().enumerate().take(self.ncols()) {
            if wj != 0.0 {
                let (r, v) = self.col(j);
                for (&i, &x) in r.iter().zip(v) {
                    out[i as usize] += x * wj;
                }
            }
        }
        out
    }
}

/// `Σ_k vals[k] · r[rows[k] − row0]`: a sparse column's dot product with a
/// dense vector indexed from `row0`. Four running sums (entries `k mod
/// 4`), added pairwise at the end: one sum's chain of dependent additions
/// bound the loop by the adder's latency. A fixed order, so every caller
/// gets the same bits for the same column and vector.
#[inline]
pub fn gather_dot(rows: &[u32], vals: &[f64], r: &[f64], row0: u32) -> f64 {
    let mut acc = [0.0f64; 4];
    let (rc, rt) = rows.split_at(rows.len() & !3);
    let (vc, vt) = vals.split_at(rc.len());
    for (ri, vi) in rc.chunks_exact(4).zip(vc.chunks_exact(4)) {
        for l in 0..4 {
            acc[l] += vi[l] * r[(ri[l] - row0) as usize];
        }
    }
    for (l, (&i, &v)) in rt.iter().zip(vt).enumerate() {
        acc[l] += v * r[(i - row0) as usize];
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

/// The contiguous rows `[lo, hi)` of a [`Csc`], by column, without a
/// copy: each column's entries in the range are a contiguous slice of the
/// matrix's arrays (rows are sorted within a column). Row ids stay the
/// matrix's; the range's own index of row `i` is `i − row0`.
#[derive(Clone, Debug)]
pub struct RowRange {
    pub row0: u32,
    pub rows: usize,
    spans: Vec<(usize, usize)>,
}

impl RowRange {
    pub fn new(x: &Csc, lo: usize, hi: usize) -> RowRange {
        let spans = (0..x.ncols())
            .map(|j| {
                let (r, _) = x.col(j);
                // The first and last ranges need one search, not two.
                let a = if lo == 0 {
                    0
                } else {
                    r.partition_point(|&i| (i as usize) < lo)
                };
                let b = if hi >= x.nrows {
                    r.len()
                } else {
                    a + r[a..].partition_point(|&i| (i as usize) < hi)
                };
                (x.indptr[j] + a, x.indptr[j] + b)
            })
            .collect();
        RowRange {
            row0: lo as u32,
            rows: hi - lo,
            spans,
        }
    }

    /// Column `j`'s entries in the range: (row ids of `x`, values).
    pub fn col<'a>(&self, x: &'a Csc, j: usize) -> (&'a [u32], &'a [f64]) {
        let (a, b) = self.spans[j];
        (&x.rows[a..b], &x.vals[a..b])
    }
}

/// A regression data set.
#[derive(Clone, Debug, PartialEq)]
pub struct Design {
    pub x: Csc,
    pub y: Vec<f64>,
}

impl Design {
    pub fn n(&self) -> usize {
        self.y.len()
    }
    pub fn d(&self) -> usize {
        self.x.ncols()
    }
}

/// How the target is transformed before fitting (and evaluating).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetTransform {
    None,
    /// Natural logarithm (e.g. prices); every target must be > 0.
    Log,
}

/// Which sample of a CSV file (counting non-blank data lines) is on
/// which line, for messages about a sample found after reading.
fn csv_line_of(path: &Path, sample: usize) -> u64 {
    // Read again the way the reader read it (quoted line breaks, blank
    // lines): only for an error message.
    let Ok((mut records, names)) = csv::open_records(path) else {
        return 0;
    };
    let mut record = ::csv::StringRecord::new();
    let mut k = 0;
    while let Ok(Some(line)) = csv::next_record(path, &mut records, &mut record, names.len()) {
        if k == sample {
            return line;
        }
        k += 1;
    }
    0
}

/// Refuses a design whose feature count alone makes the model too large
/// for the node (a libsvm file's largest id sets it), before its columns
/// are allocated: coefficients, priorities, scaling and the path's copies.
fn fits(path: &Path, ncols: usize) -> Result<(), DataError> {
    let d = ncols as u128;
    match crate::limits::too_large(&format!("{d} features"), 8 * (d + 1)) {
        None => Ok(()),
        Some(problem) => Err(DataError::invalid(path, problem)),
    }
}

/// Reads one regression file of `format` (`labels`: the target file of a
/// MatrixMarket design; `column`: the CSV target column; `encoding`: the
/// training data's CSV encoding, found when `None`). Returns the CSV
/// encoding it found.
pub fn read(
    format: DataFormat,
    path: &Path,
    labels: Option<&Path>,
    column: &str,
    one_based: Option<bool>,
    transform: TargetTransform,
    encoding: Option<&csv::Encoding>,
) -> Result<(Design, Option<csv::Encoding>), DataError> {
    let mut found = None;
    type LineOf<'a> = Box<dyn Fn(usize) -> u64 + 'a>;
    let (x, raw, line_of): (Csc, Vec<String>, LineOf<'_>) = match format {
        DataFormat::Libsvm => {
            let (f, l) = libsvm::read(path, one_based)?;
            fits(path, f.ncols())?;
            (Csc::from_features(&f), l.0, Box::new(|_| 0))
        }
        DataFormat::Csv => {
            let (f, l) = match encoding {
                Some(e) => csv::read_encoded(path, e)?,
                None => {
                    let (f, l, e) = csv::read(path, column)?;
                    found = Some(e);
                    (f, l)
                }
            };
            fits(path, f.ncols())?;
            (
                Csc::from_features(&f),
                l.0,
                Box::new(move |i| csv_line_of(path, i)),
            )
        }
        DataFormat::MatrixMarket => {
            let m = mm::read(path)?;
            let labels = labels.ok_or_else(|| {
                DataError::invalid(
                    path,
                    "a MatrixMarket design needs its targets in data.train_labels (data.test_labels for data.test)",
                )
            })?;
            let y = mm::read_vector(labels)?;
            if y.len() != m.rows {
                return Err(DataError::invalid(
                    labels,
                    format!(
                        "{} targets for the {} rows of {}",
                        y.len(),
                        m.rows,
                        path.display()
                    ),
                ));
            }
            fits(path, m.cols)?;
            let x = Csc::from_triples(m.rows, m.cols, m.entries);
            return Ok((finish(x, y, labels, &|i| i as u64 + 1, transform)?, None));
        }
        other => {
            return Err(DataError::invalid(
                path,
                format!("lasso reads libsvm, csv or matrix_market, not `{other:?}`").to_lowercase(),
            ))
        }
    };
    let mut y = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        let v: f64 = s.parse().map_err(|_| DataError::Malformed {
            file: path.to_path_buf(),
            line: line_of(i),
            reason: format!("target `{column}` is not a number"),
        })?;
        y.push(v);
    }
    Ok((finish(x, y, path, &*line_of, transform)?, found))
}

fn finish(
    x: Csc,
    mut y: Vec<f64>,
    path: &Path,
    line_of: &dyn Fn(usize) -> u64,
    transform: TargetTransform,
) -> Result<Design, DataError> {
    if y.is_empty() || x.ncols() == 0 {
        return Err(DataError::invalid(
            path,
            format!("empty matrix ({} samples, {} features)", y.len(), x.ncols()),
        ));
    }
    if transform == TargetTransform::Log {
        for (i, v) in y.iter_mut().enumerate() {
            if v.is_nan() || *v <= 0.0 {
                return Err(DataError::Malformed {
                    file: path.to_path_buf(),
                    line: line_of(i),
                    reason: format!(
                        "target {v} of sample {}: target_transform = \"log\" needs targets > 0",
                        i + 1
                    ),
                });
            }
            *v = v.ln();
        }
    }
    Ok(Design { x, y })
}

/// A job's training data and its test set (`data.test`, or the
/// deterministic `data.test_fraction` hold-out of
/// [`crate::data::Dataset::split`]).
pub fn load(
    d: &DataSpec,
    transform: TargetTransform,
) -> Result<(Design, Option<Design>, Option<csv::Encoding>), DataError> {
    let column = d.label_column.as_deref().unwrap_or("label");
    let (train, encoding) = read(
        d.format,
        &d.train,
        d.train_labels.as_deref(),
        column,
        d.one_based,
        transform,
        None,
    )?;
    if let Some(t) = &d.test {
        let (mut test, _) = read(
            d.format,
            t,
            d.test_labels.as_deref(),
            column,
            d.one_based,
            transform,
            encoding.as_ref(),
        )?;
        let mut train = train;
        if test.d() > train.d() && d.format != DataFormat::Libsvm {
            return Err(DataError::invalid(
                t,
                format!("{} features, the training data has {}", test.d(), train.d()),
            ));
        }
        let cols = test.d().max(train.d());
        fits(t, cols)?;
        train.x.set_ncols(cols);
        test.x.set_ncols(cols);
        return Ok((train, Some(test), encoding));
    }
    if let Some(f) = d.test_fraction {
        let (mut tr, mut te) = (Vec::new(), Vec::new());
        for i in 0..train.n() {
            if ((i + 1) as f64 * f).floor() > (i as f64 * f).floor() {
                te.push(i);
            } else {
                tr.push(i);
            }
        }
        let pick = |rows: &[usize]| Design {
            x: train.x.select_rows(rows),
            y: rows.iter().map(|&i| train.y[i]).collect(),
        };
        return Ok((pick(&tr), Some(pick(&te)), encoding));
    }
    Ok((train, None, encoding))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csc_from_triples_and_row_ranges() {
        let x = Csc::from_triples(
            3,
            3,
            vec![(2, 0, 1.0), (0, 0, 2.0), (1, 2, 3.0), (1, 2, 1.0)],
        );
        assert_eq!(x.col(0), (&[0u32, 2][..], &[2.0, 1.0][..]));
        assert_eq!(x.col(1).0.len(), 0);
        assert_eq!(x.col(2), (&[1u32][..], &[4.0][..]));
        let r = RowRange::new(&x, 1, 3);
        assert_eq!((r.row0, r.rows), (1, 2));
        assert_eq!(r.col(&x, 0), (&[2u32][..], &[1.0][..]));
        assert_eq!(r.col(&x, 1).0.len(), 0);
        assert_eq!(r.col(&x, 2), (&[1u32][..], &[4.0][..]));
        assert_eq!(x.matvec(&[1.0, 0.0, 1.0]), vec![2.0, 4.0, 1.0]);
    }

    #[test]
    fn bad_targets_are_refused_with_file_line_and_field() {
        // The error of reading CSV file `p` with target `column`.
        let err = |p: &Path, column: &str, transform| {
            read(DataFormat::Csv, p, None, column, None, transform, None)
                .unwrap_err()
                .to_string()
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        std::fs::write(&p, "a,price\n1,2\n\n2,x\n").unwrap();
        let e = err(&p, "price", TargetTransform::None);
        assert!(
            e.contains("r.csv:4:") && e.contains("target `price`"),
            "{e}"
        );
        let e = err(&p, "cost", TargetTransform::None);
        assert!(e.contains("r.csv:1:") && e.contains("`cost`"), "{e}");
        // A quoted field across two lines: the bad target is on line 4.
        std::fs::write(&p, "a,b,price\n1,\"x\ny\",2\n2,z,oops\n").unwrap();
        let e = err(&p, "price", TargetTransform::None);
        assert!(
            e.contains("r.csv:4:") && e.contains("target `price`"),
            "{e}"
        );
        std::fs::write(&p, "a,price\n1,2\n2,-1\n").unwrap();
        let e = err(&p, "price", TargetTransform::Log);
        assert!(e.contains("r.csv:3:") && e.contains("> 0"), "{e}");
        std::fs::write(&p, "a,price\n").unwrap();
        let e = err(&p, "price", TargetTransform::None);
        assert!(e.contains("no samples"), "{e}");
    }
}
