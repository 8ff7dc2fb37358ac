//! Frame-level speech features (a CSV with a header, one row per frame):
//! frames are grouped into utterances, ordered, standardised with the
//! training frames' statistics and stacked with their neighbours into a
//! context window — the input of an acoustic-model DNN (each frame
//! classified from frames `t-k ..= t+k`, edges repeated).
//!
//! Columns: the label (`data.label_column`), optionally an utterance id,
//! a frame index, a train/test split and columns to ignore; every other
//! column is a numeric feature.

use super::{DataError, Dataset, Features, RawLabels};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// `[params.frames]` of a `dnn` job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameSpec {
    /// Column naming each frame's utterance (default: every row is an
    /// utterance of its own).
    #[serde(default)]
    pub utterance_column: Option<String>,
    /// Column ordering the frames of an utterance (default: file order).
    #[serde(default)]
    pub frame_column: Option<String>,
    /// Column whose value is `train` or `test` (default: the job's
    /// `data.test` file, read the same way).
    #[serde(default)]
    pub split_column: Option<String>,
    /// Non-feature columns to skip (e.g. a speaker id that is not the label).
    #[serde(default)]
    pub ignore_columns: Vec<String>,
    /// Frames of context on each side (0: frames alone).
    #[serde(default)]
    pub context: usize,
}

/// Stacked frames with the utterance of each.
#[derive(Clone, Debug)]
pub struct FrameSet {
    pub data: Dataset,
    /// Utterance index of each sample (frames of one utterance are
    /// consecutive).
    pub utterance: Vec<u32>,
    pub utterances: usize,
}

/// Per-feature standardisation learnt on the training frames.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Standardise {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

struct Utterance {
    label: String,
    /// (order, features)
    frames: Vec<(f64, Vec<f32>)>,
}

/// Utterances by split.
type Groups = BTreeMap<String, Vec<Utterance>>;

/// Rows of one file, grouped by split ("train"/"test"/"" without a split
/// column) and utterance, in order of first appearance.
fn read_utterances(
    path: &Path,
    spec: &FrameSpec,
    label_column: &str,
) -> Result<(Groups, Vec<String>), DataError> {
    let (mut records, names) = super::csv::open_records(path)?;
    let find = |name: &str, what: &str| {
        names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| DataError::Malformed {
                file: path.to_path_buf(),
                line: 1,
                reason: format!("no column named `{name}` ({what}) in the header"),
            })
    };
    let label_at = find(label_column, "data.label_column")?;
    let utt_at = spec
        .utterance_column
        .as_deref()
        .map(|c| find(c, "params.frames.utterance_column"))
        .transpose()?;
    let frame_at = spec
        .frame_column
        .as_deref()
        .map(|c| find(c, "params.frames.frame_column"))
        .transpose()?;
    let split_at = spec
        .split_column
        .as_deref()
        .map(|c| find(c, "params.frames.split_column"))
        .transpose()?;
    let mut skip = vec![false; names.len()];
    for c in &spec.ignore_columns {
        skip[find(c, "params.frames.ignore_columns")?] = true;
    }
    for i in [Some(label_at), utt_at, frame_at, split_at]
        .into_iter()
        .flatten()
    {
        skip[i] = true;
    }
    let feature_names: Vec<String> = (0..names.len())
        .filter(|&j| !skip[j])
        .map(|j| names[j].clone())
        .collect();
    if feature_names.is_empty() {
        return Err(DataError::invalid(path, "no feature columns left"));
    }
    let mut out = Groups::new();
    let mut index: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut record = ::csv::StringRecord::new();
    while let Some(lineno) = super::csv::next_record(path, &mut records, &mut record, names.len())?
    {
        let bad = |reason: String| DataError::Malformed {
            file: path.to_path_buf(),
            line: lineno,
            reason,
        };
        let fields: Vec<&str> = record.iter().collect();
        let split = match split_at {
            Some(j) => match fields[j] {
                s @ ("train" | "test") => s.to_string(),
                _ => {
                    return Err(bad(format!(
                        "field {} (the split) is neither train nor test",
                        j + 1
                    )))
                }
            },
            None => String::new(),
        };
        let order = match frame_at {
            Some(j) => fields[j]
                .parse::<f64>()
                .map_err(|_| bad(format!("field {} (the frame order) is not a number", j + 1)))?,
            None => lineno as f64,
        };
        let mut x = Vec::with_capacity(feature_names.len());
        for (j, f) in fields.iter().enumerate() {
            if skip[j] {
                continue;
            }
            let v: f32 = f
                .parse()
                .ok()
                .filter(|v: &f32| v.is_finite())
                .ok_or_else(|| bad(format!("field {} is not a finite number", j + 1)))?;
            x.push(v);
        }
        let label = super::libsvm::normalise_label(fields[label_at]);
        let utts = out.entry(split.clone()).or_default();
        let key = match utt_at {
            Some(j) => (split, fields[j].to_string()),
            None => (split, format!("#{lineno}")),
        };
        let u = *index.entry(key).or_insert_with(|| {
            utts.push(Utterance {
                label: label.clone(),
                frames: Vec::new(),
            });
            utts.len() - 1
        });
        if utts[u].label != label {
            return Err(bad(
                "this frame's label differs from an earlier frame of its utterance".to_string(),
            ));
        }
        utts[u].frames.push((order, x));
    }
    Ok((out, feature_names))
}

fn stack(
    utts: &[Utterance],
    dim: usize,
    k: usize,
    st: &Standardise,
) -> (Vec<f32>, RawLabels, Vec<u32>) {
    let width = (2 * k + 1) * dim;
    let mut values = Vec::new();
    let mut labels = Vec::new();
    let mut utterance = Vec::new();
    for (u, utt) in utts.iter().enumerate() {
        let mut frames: Vec<&(f64, Vec<f32>)> = utt.frames.iter().collect();
        frames.sort_by(|a, b| a.0.total_cmp(&b.0));
        let n = frames.len() as isize;
        for t in 0..n {
            let start = values.len();
            for o in -(k as isize)..=k as isize {
                let f = &frames[(t + o).clamp(0, n - 1) as usize].1;
                values.extend(
                    f.iter()
                        .zip(&st.mean)
                        .zip(&st.std)
                        .map(|((v, m), s)| (v - m) / s),
                );
            }
            debug_assert_eq!(values.len() - start, width);
            labels.push(utt.label.clone());
            utterance.push(u as u32);
        }
    }
    (values, RawLabels(labels), utterance)
}

fn standardise(utts: &[Utterance], dim: usize) -> Standardise {
    let mut sum = vec![0f64; dim];
    let mut sq = vec![0f64; dim];
    let mut n = 0f64;
    for (_, x) in utts.iter().flat_map(|u| &u.frames) {
        for j in 0..dim {
            sum[j] += x[j] as f64;
            sq[j] += (x[j] as f64).powi(2);
        }
        n += 1.0;
    }
    let n = n.max(1.0);
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let std = sq
        .iter()
        .zip(&sum)
        .map(|(q, s)| {
            let v = q / n - (s / n).powi(2);
            if v > 1e-12 {
                v.sqrt() as f32
            } else {
                1.0
            }
        })
        .collect();
    Standardise { mean, std }
}

fn frame_set(
    utts: &[Utterance],
    dim: usize,
    k: usize,
    st: &Standardise,
    classes: Option<&[String]>,
    path: &Path,
) -> Result<FrameSet, DataError> {
    if utts.is_empty() {
        return Err(DataError::invalid(path, "no frames"));
    }
    let (values, raw, utterance) = stack(utts, dim, k, st);
    let rows = utterance.len();
    let x =
        Array2::from_shape_vec((rows, values.len() / rows), values).expect("rows of equal width");
    let data = match classes {
        None => Dataset::from_raw(Features::Dense(x), raw),
        Some(c) => Dataset::with_classes(Features::Dense(x), raw, c, path)?,
    };
    Ok(FrameSet {
        data,
        utterance,
        utterances: utts.len(),
    })
}

/// Reads the training (and test) frames of a job: the split column of
/// `train`, or `test` as a second file. Returns the standardisation learnt
/// on the training frames with the feature names.
pub fn read_job(
    spec: &FrameSpec,
    train: &Path,
    test: Option<&Path>,
    label_column: &str,
) -> Result<(FrameSet, Option<FrameSet>, Standardise, Vec<String>), DataError> {
    let (mut groups, names) = read_utterances(train, spec, label_column)?;
    let (tr, te) = if spec.split_column.is_some() {
        let tr = groups.remove("train").unwrap_or_default();
        let te = groups.remove("test");
        (tr, te)
    } else {
        let tr = groups.remove("").unwrap_or_default();
        let te = match test {
            Some(t) => {
                let (mut g, tnames) = read_utterances(t, spec, label_column)?;
                if tnames != names {
                    return Err(DataError::invalid(
                        t,
                        format!(
                            "feature columns {tnames:?} differ from the training file's {names:?}"
                        ),
                    ));
                }
                g.remove("")
            }
            None => None,
        };
        (tr, te)
    };
    let dim = names.len();
    let st = standardise(&tr, dim);
    let train_set = frame_set(&tr, dim, spec.context, &st, None, train)?;
    let test_set = match te {
        Some(te) => Some(frame_set(
            &te,
            dim,
            spec.context,
            &st,
            Some(&train_set.data.class_names),
            test.unwrap_or(train),
        )?),
        None => None,
    };
    Ok((train_set, test_set, st, names))
}

/// Reads held-out frames for a trained model (its standardisation and
/// class names; with a split column, the `test` rows).
pub fn read_eval(
    spec: &FrameSpec,
    path: &Path,
    label_column: &str,
    st: &Standardise,
    feature_names: &[String],
    classes: &[String],
) -> Result<FrameSet, DataError> {
    let (mut groups, names) = read_utterances(path, spec, label_column)?;
    if names != feature_names {
        return Err(DataError::invalid(
            path,
            format!("feature columns {names:?}, the model was trained on {feature_names:?}"),
        ));
    }
    let key = if spec.split_column.is_some() {
        "test"
    } else {
        ""
    };
    let utts = groups.remove(key).unwrap_or_default();
    frame_set(&utts, names.len(), spec.context, st, Some(classes), path)
}

/// Frame accuracy and utterance accuracy (each utterance labelled by the
/// class with the largest summed log-probability over its frames), given
/// each frame's class log-probabilities.
pub fn accuracies(set: &FrameSet, log_probs: &[Vec<f32>]) -> (f64, f64) {
    let n = set.data.len();
    let classes = set.data.num_classes as usize;
    let mut frame_hits = 0usize;
    let mut sums = vec![vec![0f64; classes]; set.utterances];
    let mut truth = vec![0u32; set.utterances];
    for (i, lp) in log_probs.iter().enumerate().take(n) {
        if super::super::dnn::net::argmax(lp) == set.data.labels[i] {
            frame_hits += 1;
        }
        let u = set.utterance[i] as usize;
        for (c, &v) in lp.iter().enumerate().take(classes) {
            sums[u][c] += v as f64;
        }
        truth[u] = set.data.labels[i];
    }
    let utt_hits = sums
        .iter()
        .zip(&truth)
        .filter(|(s, &t)| {
            let best = s
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(c, _)| c as u32);
            best == t
        })
        .count();
    (
        frame_hits as f64 / n.max(1) as f64,
        utt_hits as f64 / set.utterances.max(1) as f64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        let p = dir.join("f.csv");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn spec(k: usize) -> FrameSpec {
        FrameSpec {
            utterance_column: Some("utt".into()),
            frame_column: Some("t".into()),
            split_column: Some("split".into()),
            ignore_columns: vec![],
            context: k,
        }
    }

    /// Frames out of order are sorted; the context window repeats the
    /// edge frames; features are standardised with the training frames.
    #[test]
    fn stacks_context_in_frame_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "utt,split,t,x,lab\n1,train,1,3,a\n1,train,0,1,a\n2,train,0,5,b\n2,test,0,9,b\n",
        );
        let (tr, te, st, names) = read_job(&spec(1), &p, None, "lab").unwrap();
        assert_eq!(names, ["x"]);
        assert_eq!((st.mean[0], st.std[0]), (3.0, (8.0f32 / 3.0).sqrt()));
        assert_eq!(tr.utterances, 2);
        assert_eq!(tr.utterance, [0, 0, 1]);
        let s = st.std[0];
        let row0: Vec<f32> = tr.data.features.to_dense().row(0).to_vec();
        assert_eq!(row0, [-2.0 / s, -2.0 / s, 0.0]);
        let row1: Vec<f32> = tr.data.features.to_dense().row(1).to_vec();
        assert_eq!(row1, [-2.0 / s, 0.0, 0.0]);
        let te = te.unwrap();
        assert_eq!(te.data.labels, [1]);
        // Utterance accuracy sums log-probabilities over frames.
        // Utterance 0's second frame is wrong alone, right in the sum.
        let lp = vec![vec![-0.1, -4.0], vec![-3.0, -0.5], vec![-1.0, -0.2]];
        let (f, u) = accuracies(&tr, &lp);
        assert_eq!((f, u), (2.0 / 3.0, 1.0));
    }

    #[test]
    fn malformed_frames_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "utt,split,t,x,lab\n1,train,0,abc,a\n");
        let e = read_job(&spec(0), &p, None, "lab").unwrap_err().to_string();
        assert!(
            e.contains(":2:") && e.contains("field 4 is not a finite number") && !e.contains("abc"),
            "{e}"
        );
        let p = write(dir.path(), "utt,split,t,x,lab\n1,dev,0,1,a\n");
        let e = read_job(&spec(0), &p, None, "lab").unwrap_err().to_string();
        assert!(e.contains("neither train nor test"), "{e}");
        let p = write(
            dir.path(),
            "utt,split,t,x,lab\n1,train,0,1,a\n1,train,1,1,b\n",
        );
        let e = read_job(&spec(0), &p, None, "lab").unwrap_err().to_string();
        assert!(e.contains(":3:") && e.contains("label"), "{e}");
        let e = read_job(&spec(0), &p, None, "nope")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`nope`"), "{e}");
    }
}
