//! From a job spec to a ready algorithm: name lookup, hyperparameter
//! validation (before any data is read) and data loading.

use crate::data::{idx, DataError, Dataset};
use crate::softmax::{self, InputScale, MulticlassLr, SoftmaxParams};
use petuum_core::algorithm::Algorithm;
use petuum_core::spec::{parse_params, DataFormat, JobSpec, SpecError};

/// Algorithms this build knows, by canonical name.
pub const ALGORITHMS: &[&str] = &[softmax::NAME];

/// Why a job could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("data: {0}")]
    Data(#[from] DataError),
}

/// Canonical name of an algorithm (accepts aliases).
pub fn canonical(name: &str) -> Option<&'static str> {
    match name {
        "multiclass_lr" | "softmax" | "mlr" | "multiclass_logistic_regression" => {
            Some(softmax::NAME)
        }
        _ => None,
    }
}

fn algorithm_of(spec: &JobSpec) -> Result<&'static str, SpecError> {
    canonical(&spec.algorithm).ok_or_else(|| {
        SpecError::invalid(
            "algorithm",
            format!(
                "unknown algorithm `{}` (known: {})",
                spec.algorithm,
                ALGORITHMS.join(", ")
            ),
        )
    })
}

/// Validates a spec completely without loading data: the common fields,
/// the data files' presence, the algorithm name and its hyperparameters.
pub fn validate(spec: &JobSpec) -> Result<(), SpecError> {
    spec.validate()?;
    match algorithm_of(spec)? {
        softmax::NAME => {
            let p: SoftmaxParams = parse_params(&spec.params)?;
            p.validate()?;
            if !matches!(spec.data.format, DataFormat::Idx) {
                return Err(SpecError::invalid(
                    "data.format",
                    format!(
                        "{:?} is not supported by {} yet (use idx)",
                        spec.data.format,
                        softmax::NAME
                    )
                    .to_lowercase(),
                ));
            }
            Ok(())
        }
        other => unreachable!("canonical name {other} without a builder"),
    }
}

/// Validates the spec, then loads its data and builds the algorithm.
pub fn build(spec: &JobSpec) -> Result<Box<dyn Algorithm>, BuildError> {
    validate(spec)?;
    match algorithm_of(spec)? {
        softmax::NAME => {
            let params: SoftmaxParams = parse_params(&spec.params)?;
            let (train, test) = load_labelled(spec)?;
            Ok(Box::new(MulticlassLr::new(
                params,
                train,
                test,
                InputScale(idx::PIXEL_SCALE),
                "idx_u8",
            )))
        }
        other => unreachable!("canonical name {other} without a builder"),
    }
}

fn load_labelled(spec: &JobSpec) -> Result<(Dataset, Option<Dataset>), BuildError> {
    let d = &spec.data;
    let labels = d.train_labels.as_ref().ok_or_else(|| {
        SpecError::invalid("data.train_labels", "the idx format needs a labels file")
    })?;
    let train = idx::read_images_labels(&d.train, labels)?;
    let test = match (&d.test, &d.test_labels) {
        (Some(t), Some(l)) => Some(idx::read_images_labels(t, l)?),
        _ => None,
    };
    if let Some(t) = &test {
        if t.dim() != train.dim() {
            return Err(SpecError::invalid(
                "data.test",
                format!(
                    "test samples have {} features, training samples {}",
                    t.dim(),
                    train.dim()
                ),
            )
            .into());
        }
    }
    Ok((train, test))
}
