//! Evaluation of a saved model on held-out data (`petuumd eval`).

use crate::data::{idx, DataError, Dataset, Features, RawLabels};
use crate::dml::{self, DmlModel};
use crate::forest::{self, ForestModel};
use crate::kmeans::{self, KMeansModel};
use crate::linear::{self, LinearModel};
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

/// Reads evaluation data the way the model's training data was read.
fn read_for_model(
    file: &ModelFile,
    data: &Path,
    labels: Option<&Path>,
) -> Result<Dataset, EvalError> {
    let (features, raw) = read_features_for_model(file, data, labels)?;
    let class_names = file.class_names()?;
    Ok(Dataset::with_classes(features, raw, &class_names, data)?)
}

/// Reads the features (and raw labels) of evaluation data as the model's
/// training data were read.
fn read_features_for_model(
    file: &ModelFile,
    data: &Path,
    labels: Option<&Path>,
) -> Result<(Features, RawLabels), EvalError> {
    let format: String = file.meta("input_format")?;
    let (mut features, raw) = match format.as_str() {
        "idx_u8" => {
            let labels = labels.ok_or_else(|| {
                EvalError::Usage("IDX data needs --labels (the labels file)".into())
            })?;
            idx::read_features_labels(data, labels)?
        }
        "libsvm" => crate::data::libsvm::read(data, None)?,
        "csv" => read_csv_for_model(file, data)?,
        other => {
            return Err(EvalError::Usage(format!(
                "models reading `{other}` data are not supported by this build"
            )))
        }
    };
    let expected: usize = file.meta("num_features")?;
    if features.ncols() > expected || (features.ncols() < expected && format != "libsvm") {
        return Err(EvalError::Usage(format!(
            "{} has {} features per sample, the model expects {expected}",
            data.display(),
            features.ncols()
        )));
    }
    features.set_ncols(expected);
    Ok((features, raw))
}

/// The CSV encoding a model recorded (`None`: saved before encodings were
/// recorded, or not trained on CSV).
pub(crate) fn recorded_encoding(
    file: &ModelFile,
) -> Result<Option<crate::data::csv::Encoding>, EvalError> {
    match file.meta::<String>("csv_encoding") {
        Ok(json) => crate::data::csv::Encoding::from_json(&json)
            .map(Some)
            .map_err(|reason| {
                ModelError::Format {
                    path: file.path.clone(),
                    reason,
                }
                .into()
            }),
        Err(_) => Ok(None),
    }
}

/// A model without a recorded encoding read numeric columns only: data
/// whose encoding (`found`) has text columns cannot be given to it.
pub(crate) fn refuse_unrecorded_text(
    data: &Path,
    found: &crate::data::csv::Encoding,
) -> Result<(), EvalError> {
    if found.is_numeric() {
        return Ok(());
    }
    Err(EvalError::Usage(format!(
        "{} has text columns, but this model was saved before petuum encoded them: \
         its data must be numeric",
        data.display()
    )))
}

/// Reads CSV evaluation data with the encoding the model recorded.
fn read_csv_for_model(file: &ModelFile, data: &Path) -> Result<(Features, RawLabels), EvalError> {
    use crate::data::csv;
    if let Some(encoding) = recorded_encoding(file)? {
        return Ok(csv::read_encoded(data, &encoding)?);
    }
    let col: String = file.meta("label_column")?;
    let (f, l, found) = csv::read(data, &col)?;
    refuse_unrecorded_text(data, &found)?;
    Ok((f, l))
}

/// The best `n` items for each of `users` from a saved matrix
/// factorisation (`petuumd recommend`); see [`crate::mf::recommend`].
pub fn recommend(
    model: &Path,
    users: &[String],
    n: usize,
    rated: Option<&Path>,
) -> Result<crate::mf::Recommendations, EvalError> {
    let file = ModelFile::load(model)?;
    if file.algorithm() != crate::mf::NAME {
        return Err(EvalError::Usage(format!(
            "{} is a `{}` model: recommendations come from a matrix factorization (`mf`) model",
            model.display(),
            file.algorithm()
        )));
    }
    if users.is_empty() {
        return Err(EvalError::Usage("name at least one --user".into()));
    }
    crate::mf::recommend(&file, users, n, rated)
}

/// Evaluates `model` on `data` (with `labels` for IDX data).
pub fn evaluate(model: &Path, data: &Path, labels: Option<&Path>) -> Result<EvalReport, EvalError> {
    let file = ModelFile::load(model)?;
    match file.algorithm() {
        softmax::NAME => {
            let m = SoftmaxModel::from_file(&file)?;
            let ds = read_for_model(&file, data, labels)?;
            Ok(EvalReport {
                algorithm: softmax::NAME.into(),
                samples: ds.len(),
                metrics: vec![("accuracy".into(), m.accuracy(&ds))],
            })
        }
        crate::dnn::NAME if file.meta::<String>("frames").is_ok() => {
            let m = crate::dnn::Network::from_file(&file)?;
            let json = |key: &str| -> Result<String, EvalError> { Ok(file.meta::<String>(key)?) };
            let bad = |e: serde_json::Error| ModelError::Format {
                path: file.path.clone(),
                reason: format!("frame metadata: {e}"),
            };
            let spec: crate::data::frames::FrameSpec =
                serde_json::from_str(&json("frames")?).map_err(bad)?;
            let st: crate::data::frames::Standardise =
                serde_json::from_str(&json("frame_standardise")?).map_err(bad)?;
            let names: Vec<String> = serde_json::from_str(&json("frame_features")?).map_err(bad)?;
            let label: String = file.meta("label_column")?;
            let set = crate::data::frames::read_eval(
                &spec,
                data,
                &label,
                &st,
                &names,
                &file.class_names()?,
            )?;
            let (frame, utterance) = m.frame_accuracies(&set);
            Ok(EvalReport {
                algorithm: crate::dnn::NAME.into(),
                samples: set.data.len(),
                metrics: vec![
                    ("accuracy".into(), frame),
                    ("utterance_accuracy".into(), utterance),
                ],
            })
        }
        crate::dnn::NAME => {
            let m = crate::dnn::Network::from_file(&file)?;
            let ds = read_for_model(&file, data, labels)?;
            Ok(EvalReport {
                algorithm: crate::dnn::NAME.into(),
                samples: ds.len(),
                metrics: vec![("accuracy".into(), m.accuracy(&ds))],
            })
        }
        name @ (linear::LOGISTIC | linear::SVM) => {
            let m = LinearModel::from_file(&file)?;
            let ds = read_for_model(&file, data, labels)?;
            Ok(EvalReport {
                algorithm: name.into(),
                samples: ds.len(),
                metrics: vec![("accuracy".into(), m.accuracy(&ds))],
            })
        }
        crate::lda::NAME => {
            // Held-out documents: perplexity by document completion; the
            // topics' top words go to stderr (stdout is the report).
            let m = crate::lda::LdaModel::from_file(&file)?;
            let corpus = crate::lda::job::read_eval_corpus(data, m.num_words)?;
            eprint!("{}", m.format_topics(20));
            let iterations = file.meta::<u32>("infer_iterations").unwrap_or(50);
            let (ppl, n) = m.perplexity(&corpus, iterations, 0);
            Ok(EvalReport {
                algorithm: crate::lda::NAME.into(),
                samples: corpus.len(),
                metrics: vec![
                    ("perplexity".into(), ppl),
                    ("heldout_tokens".into(), n as f64),
                ],
            })
        }
        crate::medlda::NAME => {
            let m = crate::medlda::MedLdaModel::from_file(&file)?;
            let corpus = crate::lda::job::read_eval_corpus(data, m.lda.num_words)?;
            let labels = labels.ok_or_else(|| {
                EvalError::Usage(
                    "medlda models need --labels (a CSV with the model's label column)".into(),
                )
            })?;
            let column: String = file.meta("label_column")?;
            let y = crate::data::bow::read_labels_csv(labels, &column)?;
            if y.len() != corpus.len() {
                return Err(EvalError::Usage(format!(
                    "{} labels for {} documents",
                    y.len(),
                    corpus.len()
                )));
            }
            eprint!("{}", m.lda.format_topics(20));
            Ok(EvalReport {
                algorithm: crate::medlda::NAME.into(),
                samples: corpus.len(),
                metrics: vec![("accuracy".into(), m.accuracy(&corpus, &y, 0))],
            })
        }
        forest::NAME => {
            let m = ForestModel::from_file(&file)?;
            let ds = read_for_model(&file, data, labels)?;
            Ok(EvalReport {
                algorithm: forest::NAME.into(),
                samples: ds.len(),
                metrics: vec![("accuracy".into(), m.accuracy(&ds))],
            })
        }
        dml::NAME => {
            let m = DmlModel::from_file(&file)?;
            let (x, raw) = read_features_for_model(&file, data, labels)?;
            let ds = Dataset::from_raw(x, raw);
            let k: usize =
                serde_json::from_str::<serde_json::Value>(&file.meta::<String>("params")?)
                    .ok()
                    .and_then(|p| p["knn"].as_u64())
                    .unwrap_or(5) as usize;
            let raw_x = ds.features.to_dense();
            let learned = m.transform(raw_x.view());
            let classes = ds.num_classes as usize;
            Ok(EvalReport {
                algorithm: dml::NAME.into(),
                samples: ds.len(),
                metrics: vec![
                    (
                        format!("loo_{k}nn_accuracy"),
                        dml::loo_knn_accuracy(learned.view(), &ds.labels, k, classes),
                    ),
                    (
                        format!("loo_{k}nn_accuracy_euclidean"),
                        dml::loo_knn_accuracy(raw_x.view(), &ds.labels, k, classes),
                    ),
                ],
            })
        }
        crate::mf::NAME => {
            let (samples, metrics) = crate::mf::evaluate(&file, data)?;
            Ok(EvalReport {
                algorithm: crate::mf::NAME.into(),
                samples,
                metrics,
            })
        }
        crate::lasso::NAME => {
            let (samples, metrics) = crate::lasso::evaluate(&file, data, labels)?;
            Ok(EvalReport {
                algorithm: crate::lasso::NAME.into(),
                samples,
                metrics,
            })
        }
        kmeans::NAME => {
            let m = KMeansModel::from_file(&file)?;
            let (x, _) = read_features_for_model(&file, data, labels)?;
            let inertia = m.inertia(&x);
            Ok(EvalReport {
                algorithm: kmeans::NAME.into(),
                samples: x.nrows(),
                metrics: vec![
                    ("inertia".into(), inertia),
                    (
                        "mean_squared_distance".into(),
                        inertia / x.nrows().max(1) as f64,
                    ),
                ],
            })
        }
        crate::nmf::NAME | crate::sparse_coding::NAME => evaluate_factor(&file, data),
        other => Err(EvalError::Usage(format!(
            "{}: evaluation of `{other}` models is not supported by this build",
            model.display()
        ))),
    }
}

/// NMF and sparse coding: the coefficients of `data` with the dictionary
/// fixed (the transform) and their metrics; NMF models of text print their
/// components' top words to stderr.
fn evaluate_factor(file: &ModelFile, data: &Path) -> Result<EvalReport, EvalError> {
    let (m, x) = crate::nmf::read_for_model(file, data)?;
    if let Ok(top) = file.meta::<String>("top_words") {
        if let Ok(top) = serde_json::from_str::<Vec<Vec<String>>>(&top) {
            for (c, words) in top.iter().enumerate() {
                eprintln!("component {c}: {}", words.join(" "));
            }
        }
    }
    let (w, _) = m.transform(&x);
    Ok(EvalReport {
        algorithm: file.algorithm().to_string(),
        samples: x.nrows(),
        metrics: m.metrics(&x, &w),
    })
}
