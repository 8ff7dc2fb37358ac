//! Data for NMF and sparse coding: every format read into one CSR matrix
//! (zeros skipped, so dense images and sparse text share the kernels).

use crate::data::{bow, csv, idx, libsvm, Csr, DataError, Features};
use petuum_core::spec::DataFormat;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How a model reads new data (recorded in the model file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputDesc {
    /// `idx_u8`, `csv`, `libsvm`, `uci_bow` or `ldac`.
    pub format: String,
    /// Factor applied to the values read (IDX pixels: 1/255).
    pub scale: f32,
    /// CSV: a column to drop (the label), when the header has it.
    pub label_column: Option<String>,
}

impl InputDesc {
    pub fn of(format: DataFormat, label_column: Option<&str>) -> InputDesc {
        let (f, scale) = match format {
            DataFormat::Idx => ("idx_u8", idx::PIXEL_SCALE),
            DataFormat::Csv => ("csv", 1.0),
            DataFormat::Libsvm => ("libsvm", 1.0),
            DataFormat::UciBow => ("uci_bow", 1.0),
            DataFormat::Ldac => ("ldac", 1.0),
            // Not read by the factorisations: refused by name when loading.
            DataFormat::MatrixMarket => ("matrix_market", 1.0),
            DataFormat::Triples => ("triples", 1.0),
        };
        InputDesc {
            format: f.into(),
            scale,
            label_column: match format {
                DataFormat::Csv => Some(label_column.unwrap_or("label").to_string()),
                _ => None,
            },
        }
    }
}

/// A data matrix and, for text, its vocabulary.
pub struct Matrix {
    pub x: Csr,
    pub vocab: Vec<String>,
}

fn push_row(c: &mut Csr, vals: impl Iterator<Item = (u32, f32)>) {
    for (j, v) in vals {
        if v != 0.0 {
            c.indices.push(j);
            c.values.push(v);
        }
    }
    c.indptr.push(c.indices.len());
}

fn empty(ncols: usize) -> Csr {
    Csr {
        indptr: vec![0],
        ncols,
        ..Default::default()
    }
}

/// Features of any reader as CSR (zeros dropped).
pub fn to_csr(f: Features) -> Csr {
    match f {
        Features::Sparse(mut c) => {
            // libsvm files may hold explicit zeros.
            if c.values.contains(&0.0) {
                let mut out = empty(c.ncols);
                for i in 0..c.nrows() {
                    let (idx, val) = c.row(i);
                    push_row(&mut out, idx.iter().copied().zip(val.iter().copied()));
                }
                c = out;
            }
            c
        }
        Features::Dense(a) => {
            let mut out = empty(a.ncols());
            for r in a.rows() {
                push_row(&mut out, r.iter().enumerate().map(|(j, &v)| (j as u32, v)));
            }
            out
        }
    }
}

/// CSV with a header (RFC 4180 quoting); the column `label` is dropped
/// when present. Every other column must be numeric.
fn read_csv(path: &Path, label: Option<&str>) -> Result<Csr, DataError> {
    let (mut records, names) = csv::open_records(path)?;
    let skip = label.and_then(|l| names.iter().position(|n| n == l));
    let width = names.len() - usize::from(skip.is_some());
    let mut out = empty(width);
    let mut record = ::csv::StringRecord::new();
    while let Some(lineno) = csv::next_record(path, &mut records, &mut record, names.len())? {
        let mut row = Vec::with_capacity(width);
        for (j, f) in record.iter().enumerate() {
            if Some(j) == skip {
                continue;
            }
            let v: f32 = f
                .parse()
                .ok()
                .filter(|v: &f32| v.is_finite())
                .ok_or_else(|| DataError::Malformed {
                    file: path.to_path_buf(),
                    line: lineno,
                    reason: format!("column `{}` is not a finite number", names[j]),
                })?;
            row.push((row.len() as u32, v));
        }
        push_row(&mut out, row.into_iter());
    }
    if out.nrows() == 0 {
        return Err(DataError::invalid(path, "no rows after the header"));
    }
    Ok(out)
}

/// Reads one data file of `input`'s format.
pub fn read(
    input: &InputDesc,
    path: &Path,
    vocab: Option<&Path>,
    one_based: Option<bool>,
) -> Result<Matrix, DataError> {
    let corpus = |c: bow::Corpus| {
        let mut out = empty(c.num_words as usize);
        for d in &c.docs {
            push_row(&mut out, d.iter().map(|&(w, n)| (w, n as f32)));
        }
        Matrix {
            x: out,
            vocab: c.vocab,
        }
    };
    Ok(match input.format.as_str() {
        "idx_u8" => {
            let img = idx::read_u8(path)?;
            if img.dims.len() < 2 {
                return Err(DataError::invalid(
                    path,
                    format!("expected images of 2+ dimensions, got {:?}", img.dims),
                ));
            }
            let d: usize = img.dims[1..].iter().product();
            let mut out = empty(d);
            for r in img.data.chunks_exact(d.max(1)) {
                push_row(
                    &mut out,
                    r.iter()
                        .enumerate()
                        .map(|(j, &p)| (j as u32, p as f32 * input.scale)),
                );
            }
            Matrix {
                x: out,
                vocab: Vec::new(),
            }
        }
        "csv" => Matrix {
            x: read_csv(path, input.label_column.as_deref())?,
            vocab: Vec::new(),
        },
        "libsvm" => Matrix {
            x: to_csr(libsvm::read(path, one_based)?.0),
            vocab: Vec::new(),
        },
        "uci_bow" => corpus(bow::read_uci(path, vocab)?),
        "ldac" => corpus(bow::read_ldac(path, vocab)?),
        other => {
            return Err(DataError::invalid(
                path,
                format!("models reading `{other}` data are not supported by this build"),
            ))
        }
    })
}

/// The first negative or non-finite value: `(row, column, value)`.
pub fn first_negative(x: &Csr) -> Option<(usize, u32, f32)> {
    (0..x.nrows()).find_map(|i| {
        let (idx, val) = x.row(i);
        idx.iter()
            .zip(val)
            .find(|(_, &v)| !(v >= 0.0 && v.is_finite()))
            .map(|(&j, &v)| (i, j, v))
    })
}

/// Rows `idx` of `x`.
pub fn select(x: &Csr, idx: &[usize]) -> Csr {
    let mut out = empty(x.ncols);
    for &i in idx {
        let (c, v) = x.row(i);
        out.indices.extend_from_slice(c);
        out.values.extend_from_slice(v);
        out.indptr.push(out.indices.len());
    }
    out
}

/// The deterministic hold-out split of `crate::data::Dataset::split`: row
/// `i` is a test row iff `floor((i + 1) f) > floor(i f)`.
pub fn split(n: usize, f: f64) -> (Vec<usize>, Vec<usize>) {
    (0..n).partition(|&i| ((i + 1) as f64 * f).floor() <= (i as f64 * f).floor())
}
