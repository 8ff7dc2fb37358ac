//! Evaluation of a saved model on held-out data (`petuumd eval`).

use crate::data::{idx, DataError};
use crate::model::{ModelError, ModelFile};
use crate::softmax::{self, SoftmaxModel};
use std::path::Path;

/// Why evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{0}")]
    Usage(String),
}

/// What evaluation measured.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EvalReport {
    pub algorithm: String,
    pub samples: usize,
    /// Metric name → value (e.g. accuracy).
    pub metrics: Vec<(String, f64)>,
}

/// Evaluates `model` on `data` (with `labels` for IDX data).
pub fn evaluate(model: &Path, data: &Path, labels: Option<&Path>) -> Result<EvalReport, EvalError> {
    let file = ModelFile::load(model)?;
    match file.algorithm() {
        softmax::NAME => {
            let m = SoftmaxModel::from_file(&file)?;
            let labels = labels.ok_or_else(|| {
                EvalError::Usage("IDX data needs --labels (the labels file)".into())
            })?;
            let ds = idx::read_images_labels(data, labels)?;
            let expected: usize = file.meta("num_features")?;
            if ds.dim() != expected {
                return Err(EvalError::Usage(format!(
                    "{} has {} features per sample, the model expects {expected}",
                    data.display(),
                    ds.dim()
                )));
            }
            Ok(EvalReport {
                algorithm: softmax::NAME.into(),
                samples: ds.len(),
                metrics: vec![("accuracy".into(), m.accuracy(&ds))],
            })
        }
        other => Err(EvalError::Usage(format!(
            "{}: evaluation of `{other}` models is not supported by this build",
            model.display()
        ))),
    }
}
