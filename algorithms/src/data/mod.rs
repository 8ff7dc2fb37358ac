//! Readers of standard data formats into in-memory data sets.
//!
//! Every reader reports malformed input with the file, the line (or byte
//! offset for binary formats) and the reason.

pub mod idx;

use ndarray::Array2;
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

/// A labelled data set with dense features.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// One sample per row.
    pub features: Array2<f32>,
    /// Class index of each sample, `0..num_classes`.
    pub labels: Vec<u32>,
    pub num_classes: u32,
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
        Ok(Box::new(flate2::read::MultiGzDecoder::new(reader)))
    } else {
        Ok(Box::new(reader))
    }
}
