//! Readers of standard data formats into in-memory data sets.
//!
//! Every reader reports malformed input with the file, the line (or byte
//! offset for binary formats) and the reason.

pub mod bow;
pub mod csv;
pub mod features;
pub mod frames;
pub mod idx;
pub mod libsvm;
pub mod mm;

pub use features::{Csr, Features};
use std::path::{Path, PathBuf};

/// A problem reading a data file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {reason}")]
    Malformed {
        file: PathBuf,
        line: u64,
        reason: String,
    },
    #[error("{file}: {reason}")]
    Invalid { file: PathBuf, reason: String },
}

impl DataError {
    pub fn io(file: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            file: file.to_path_buf(),
            source,
        }
    }
    pub fn invalid(file: &Path, reason: impl Into<String>) -> Self {
        DataError::Invalid {
            file: file.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// Labels as written in a file (`1`, `-1`, `spam`...), before mapping to
/// class indices.
#[derive(Clone, Debug, PartialEq)]
pub struct RawLabels(pub Vec<String>);

/// A labelled data set.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// One sample per row.
    pub features: Features,
    /// Class index of each sample, `0..num_classes`.
    pub labels: Vec<u32>,
    pub num_classes: u32,
    /// Label of each class as written in the data (class `i` is
    /// `class_names[i]`): sorted numerically when all labels are numbers.
    pub class_names: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn dim(&self) -> usize {
        self.features.ncols()
    }

    /// Builds a data set, numbering the classes found in `raw`.
    pub fn from_raw(features: Features, raw: RawLabels) -> Dataset {
        let mut names: Vec<String> = raw.0.clone();
        names.sort_by(|a, b| match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) => x.total_cmp(&y),
            _ => a.cmp(b),
        });
        names.dedup();
        let labels = raw
            .0
            .iter()
            .map(|l| names.iter().position(|n| n == l).expect("present") as u32)
            .collect();
        Dataset {
            features,
            labels,
            num_classes: names.len() as u32,
            class_names: names,
        }
    }

    /// Builds a data set whose classes must be among `class_names`.
    pub fn with_classes(
        features: Features,
        raw: RawLabels,
        class_names: &[String],
        file: &Path,
    ) -> Result<Dataset, DataError> {
        let labels = raw
            .0
            .iter()
            .map(|l| {
                class_names
                    .iter()
                    .position(|n| n == l)
                    .map(|i| i as u32)
                    .ok_or_else(|| {
                        DataError::invalid(
                            file,
                            format!(
                                "a label is not one of the {} training classes",
                                class_names.len()
                            ),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Dataset {
            features,
            labels,
            num_classes: class_names.len() as u32,
            class_names: class_names.to_vec(),
        })
    }

    /// The samples at `rows`.
    pub fn select(&self, rows: &[usize]) -> Dataset {
        Dataset {
            features: self.features.select(rows),
            labels: rows.iter().map(|&i| self.labels[i]).collect(),
            num_classes: self.num_classes,
            class_names: self.class_names.clone(),
        }
    }

    /// Deterministic hold-out split: row `i` is a test row iff
    /// `floor((i + 1) f) > floor(i f)` (for f = 0.2: every 5th row). Easy to
    /// reproduce elsewhere, e.g. in the scikit-learn reference scripts.
    pub fn split(&self, test_fraction: f64) -> (Dataset, Dataset) {
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for i in 0..self.len() {
            if ((i + 1) as f64 * test_fraction).floor() > (i as f64 * test_fraction).floor() {
                test.push(i);
            } else {
                train.push(i);
            }
        }
        (self.select(&train), self.select(&test))
    }
}

/// The rows of `n` that worker `worker` of `workers` trains on: every
/// `workers`-th row, so that files sorted by class (many UCI sets are)
/// still give every worker every class.
pub fn worker_rows(n: usize, worker: u32, workers: u32) -> Vec<usize> {
    (worker as usize..n)
        .step_by(workers.max(1) as usize)
        .collect()
}

/// [`worker_rows`], refusing a worker with no rows.
pub fn partition(
    n: usize,
    worker: u32,
    workers: u32,
) -> Result<Vec<usize>, petuum_core::algorithm::BoxError> {
    let rows = worker_rows(n, worker, workers);
    if rows.is_empty() {
        return Err(
            format!("worker {worker} of {workers} has no training samples ({n} in all)").into(),
        );
    }
    Ok(rows)
}

/// Reads a labelled data file in one of the supported formats. CSV is
/// read with `encoding` (the training data's) when given, else its
/// encoding is found and returned.
pub fn read_labelled(
    format: petuum_core::spec::DataFormat,
    path: &Path,
    labels: Option<&Path>,
    label_column: Option<&str>,
    one_based: Option<bool>,
    encoding: Option<&csv::Encoding>,
) -> Result<(Features, RawLabels, Option<csv::Encoding>), DataError> {
    use petuum_core::spec::DataFormat;
    match format {
        DataFormat::Idx => {
            let labels =
                labels.ok_or_else(|| DataError::invalid(path, "IDX images need a labels file"))?;
            idx::read_features_labels(path, labels).map(|(f, l)| (f, l, None))
        }
        DataFormat::Libsvm => libsvm::read(path, one_based).map(|(f, l)| (f, l, None)),
        DataFormat::Csv => match encoding {
            Some(e) => csv::read_encoded(path, e).map(|(f, l)| (f, l, None)),
            None => {
                csv::read(path, label_column.unwrap_or("label")).map(|(f, l, e)| (f, l, Some(e)))
            }
        },
        other => Err(DataError::invalid(
            path,
            format!("{other:?} data has no labels per sample").to_lowercase(),
        )),
    }
}

/// Loads a job's labelled training data and its test set: the `test`
/// file(s) when given (CSV read with the training data's encoding), else
/// a deterministic `test_fraction` hold-out. With CSV, also the encoding
/// (for the model).
pub fn load_job_data(
    d: &petuum_core::spec::DataSpec,
) -> Result<(Dataset, Option<Dataset>, Option<csv::Encoding>), DataError> {
    let (f, l, encoding) = read_labelled(
        d.format,
        &d.train,
        d.train_labels.as_deref(),
        d.label_column.as_deref(),
        d.one_based,
        None,
    )?;
    let mut all = Dataset::from_raw(f, l);
    if let Some(test) = &d.test {
        let (mut tf, tl, _) = read_labelled(
            d.format,
            test,
            d.test_labels.as_deref(),
            d.label_column.as_deref(),
            d.one_based,
            encoding.as_ref(),
        )?;
        if tf.ncols() > all.dim() && d.format != petuum_core::spec::DataFormat::Libsvm {
            return Err(DataError::invalid(
                test,
                format!(
                    "{} features per sample, the training data has {}",
                    tf.ncols(),
                    all.dim()
                ),
            ));
        }
        // libsvm files of one data set may end at different feature indices.
        let ncols = tf.ncols().max(all.dim());
        tf.set_ncols(ncols);
        all.features.set_ncols(ncols);
        // Classes present only in the test file are an error, not a new class.
        let test = Dataset::with_classes(tf, tl, &all.class_names, test)?;
        return Ok((all, Some(test), encoding));
    }
    if let Some(f) = d.test_fraction {
        let (train, test) = all.split(f);
        return Ok((train, Some(test), encoding));
    }
    Ok((all, None, encoding))
}

/// Opens a file, transparently decompressing gzip (detected by its magic).
pub fn open_maybe_gz(path: &Path) -> Result<Box<dyn std::io::Read>, DataError> {
    use std::io::{BufReader, Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(|e| DataError::io(path, e))?;
    f.seek(SeekFrom::Start(0))
        .map_err(|e| DataError::io(path, e))?;
    let reader = BufReader::with_capacity(1 << 20, f);
    if n == 2 && magic == [0x1f, 0x8b] {
        // A plain file's size bounds what its reader keeps; a gzip file
        // may expand a thousandfold, so its output is bounded by the
        // node's memory (four times the model bound).
        let cap = crate::limits::max_model_bytes().saturating_mul(4);
        Ok(Box::new(Capped::new(
            flate2::read::MultiGzDecoder::new(reader),
            cap,
        )))
    } else {
        Ok(Box::new(reader))
    }
}

/// A reader that fails once more than `cap` bytes came through it.
pub struct Capped<R> {
    inner: R,
    left: u64,
    cap: u64,
}

impl<R> Capped<R> {
    pub fn new(inner: R, cap: u64) -> Self {
        Capped {
            inner,
            left: cap,
            cap,
        }
    }
}

impl<R: std::io::Read> std::io::Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => Err(std::io::Error::other(format!(
                "decompresses to more than {} MiB, more than this node's memory could hold once read (node.toml `max_model_mb` sets a quarter of it)",
                self.cap >> 20
            ))),
        }
    }
}

#[cfg(test)]
mod capped_tests {
    use super::Capped;
    use std::io::Read;

    #[test]
    fn a_capped_reader_fails_past_its_cap_and_passes_below() {
        let data = vec![7u8; 5000];
        let mut out = Vec::new();
        Capped::new(&data[..], 5000).read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 5000);
        let e = Capped::new(&data[..], 4096)
            .read_to_end(&mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("decompresses to more than"), "{e}");
    }
}
