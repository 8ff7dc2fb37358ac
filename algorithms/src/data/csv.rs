//! CSV with a header row (RFC 4180 quoting, gzip or not): the label
//! column, named by the caller, and feature columns that are numeric or
//! categorical (text, one-hot encoded; see [`Encoding`]).

use super::features::Features;
use super::{DataError, RawLabels};
use ndarray::Array2;
use std::path::Path;

/// How a CSV file's columns become features, found in the training data
/// and recorded in the model (`csv_encoding`), so that test and
/// evaluation data are encoded the same way.
///
/// A column whose every non-empty field is a number is a numeric feature;
/// one whose every non-empty field is text is categorical and one-hot
/// encoded, one feature per level seen in training, as pandas'
/// `get_dummies` does: the numeric columns first, in file order, then each
/// categorical column's levels in byte order, named `column=level`. An
/// empty field of a categorical column sets none of its features; a level
/// that training did not see does the same (scikit-learn's
/// `OneHotEncoder(handle_unknown="ignore")`). A column that mixes numbers
/// and text, or a numeric column with an empty field, is an error: petuum
/// does not guess which of the two a missing value or a stray word means.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Encoding {
    /// The label column's name.
    pub label: String,
    /// The other columns, in file order.
    pub columns: Vec<Column>,
}

/// One feature column of a CSV file (see [`Encoding`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Column {
    Numeric { name: String },
    Categorical { name: String, levels: Vec<String> },
}

impl Column {
    pub fn name(&self) -> &str {
        match self {
            Column::Numeric { name } | Column::Categorical { name, .. } => name,
        }
    }
}

impl Encoding {
    /// Features per sample.
    pub fn width(&self) -> usize {
        self.columns
            .iter()
            .map(|c| match c {
                Column::Numeric { .. } => 1,
                Column::Categorical { levels, .. } => levels.len(),
            })
            .sum()
    }

    /// Whether every column is numeric (the file's fields are its features).
    pub fn is_numeric(&self) -> bool {
        self.columns
            .iter()
            .all(|c| matches!(c, Column::Numeric { .. }))
    }

    /// The features' names: the numeric columns, then `column=level`.
    pub fn feature_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .columns
            .iter()
            .filter(|c| matches!(c, Column::Numeric { .. }))
            .map(|c| c.name().to_string())
            .collect();
        for c in &self.columns {
            if let Column::Categorical { name, levels } = c {
                names.extend(levels.iter().map(|l| format!("{name}={l}")));
            }
        }
        names
    }

    /// The first feature of each column (in `columns` order).
    fn offsets(&self) -> Vec<usize> {
        let mut next_numeric = 0;
        let mut next_level = self
            .columns
            .iter()
            .filter(|c| matches!(c, Column::Numeric { .. }))
            .count();
        self.columns
            .iter()
            .map(|c| match c {
                Column::Numeric { .. } => {
                    next_numeric += 1;
                    next_numeric - 1
                }
                Column::Categorical { levels, .. } => {
                    next_level += levels.len();
                    next_level - levels.len()
                }
            })
            .collect()
    }

    /// As recorded in a model's metadata.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an encoding serialises")
    }

    /// Reads [`to_json`](Self::to_json)'s text back; the error says where
    /// the text is malformed, not what it holds (levels are data).
    pub fn from_json(text: &str) -> Result<Encoding, String> {
        serde_json::from_str(text).map_err(|e| {
            format!(
                "csv_encoding is malformed ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            )
        })
    }
}

/// A CSV reader over a file, gzip or not.
type Records = ::csv::Reader<Box<dyn std::io::Read>>;

/// A CSV reader over a file (gzip or not) with its header's names.
pub(crate) fn open_records(path: &Path) -> Result<(Records, Vec<String>), DataError> {
    // Records end at `\n` (a `\r` before it is trimmed with the field), so
    // the reader's line after a record is the record's last line + 1, also
    // in CRLF files and after blank lines; field counts are checked in
    // `next_record`, after trimming, so that a line of spaces is blank.
    let mut r = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .terminator(::csv::Terminator::Any(b'\n'))
        .trim(::csv::Trim::All)
        .from_reader(super::open_maybe_gz(path)?);
    let header = r.headers().map_err(|e| csv_error(path, e))?.clone();
    if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
        return Err(DataError::invalid(
            path,
            "empty file (expected a header row)",
        ));
    }
    let names: Vec<String> = header.iter().map(str::to_string).collect();
    for (j, n) in names.iter().enumerate() {
        if names[..j].contains(n) {
            return Err(DataError::Malformed {
                file: path.to_path_buf(),
                line: 1,
                reason: format!("column `{n}` appears twice in the header"),
            });
        }
    }
    Ok((r, names))
}

/// A CSV-level error, with its line and without the file's contents.
fn csv_error(path: &Path, e: ::csv::Error) -> DataError {
    let line = e.position().map(|p| p.line()).unwrap_or(0);
    match e.into_kind() {
        ::csv::ErrorKind::Io(source) => DataError::io(path, source),
        ::csv::ErrorKind::Utf8 { .. } => DataError::Malformed {
            file: path.to_path_buf(),
            line,
            reason: "not UTF-8 text".into(),
        },
        _ => DataError::Malformed {
            file: path.to_path_buf(),
            line,
            reason: "not readable as CSV".into(),
        },
    }
}

/// Reads the next record into `record`, skipping blank lines (empty or
/// spaces only): its line, `None` at the end of the file. A record whose
/// field count is not the header's `width` is an error.
pub(crate) fn next_record(
    path: &Path,
    records: &mut Records,
    record: &mut ::csv::StringRecord,
    width: usize,
) -> Result<Option<u64>, DataError> {
    loop {
        if !records
            .read_record(record)
            .map_err(|e| csv_error(path, e))?
        {
            return Ok(None);
        }
        // The reader stands at the start of the line after the record.
        let line = records.position().line().saturating_sub(1);
        if record.is_empty() || (record.len() == 1 && record[0].is_empty()) {
            continue;
        }
        if record.len() != width {
            return Err(DataError::Malformed {
                file: path.to_path_buf(),
                line,
                reason: format!("{} fields, the header has {width}", record.len()),
            });
        }
        return Ok(Some(line));
    }
}

fn find_label(path: &Path, names: &[String], label_column: &str) -> Result<usize, DataError> {
    names
        .iter()
        .position(|n| n == label_column)
        .ok_or_else(|| DataError::Malformed {
            file: path.to_path_buf(),
            line: 1,
            reason: format!(
                "no column named `{label_column}` in the header ({} columns)",
                names.len()
            ),
        })
}

/// A field's value when it is a finite number. A non-finite spelling
/// (`NaN`, `inf`) is not one: in the training file it counts as text (a
/// level in a text column, a marker that makes a numeric column mixed),
/// in later files it is refused in a numeric column.
fn finite(f: &str) -> Option<f32> {
    f.parse::<f32>().ok().filter(|v| v.is_finite())
}

/// What one column of the training file held, as it is read.
#[derive(Default)]
struct Seen {
    /// The first line with a number, with text, with an empty field.
    number: Option<u64>,
    text: Option<u64>,
    empty: Option<u64>,
    /// Text columns: each level's id, in order of first appearance, and
    /// each sample's level id (`u32::MAX`: empty).
    levels: std::collections::HashMap<String, u32>,
    ids: Vec<u32>,
}

/// Reads a labelled CSV file, finding its [`Encoding`] (`label_column`
/// names the label column).
pub fn read(path: &Path, label_column: &str) -> Result<(Features, RawLabels, Encoding), DataError> {
    let (mut r, names) = open_records(path)?;
    let label_at = find_label(path, &names, label_column)?;
    let width = names.len() - 1;
    let mut seen: Vec<Seen> = (0..names.len()).map(|_| Seen::default()).collect();
    // The numbers of every non-label column, row-major (0 where a column
    // holds text: its features are placed after the scan).
    let mut values = Vec::new();
    let mut labels = Vec::new();
    let mut record = ::csv::StringRecord::new();
    while let Some(line) = next_record(path, &mut r, &mut record, names.len())? {
        let sample = labels.len();
        for (j, f) in record.iter().enumerate() {
            if j == label_at {
                labels.push(super::libsvm::normalise_label(f));
                continue;
            }
            let s = &mut seen[j];
            if f.is_empty() {
                s.empty.get_or_insert(line);
                values.push(0.0);
                if s.text.is_some() {
                    s.ids.push(u32::MAX);
                }
                continue;
            }
            match finite(f) {
                Some(v) => {
                    s.number.get_or_insert(line);
                    values.push(v);
                }
                None => {
                    if s.text.is_none() {
                        s.text = Some(line);
                        // Earlier samples of a text column are empty (or
                        // numbers, which is an error below).
                        s.ids.resize(sample, u32::MAX);
                    }
                    let next = s.levels.len() as u32;
                    let id = *s.levels.entry(f.to_string()).or_insert(next);
                    if s.levels.len() > MAX_LEVELS {
                        // Refused while reading: an identifier column of a
                        // large file would fill memory before the end.
                        return Err(too_many_levels(path, &names[j]));
                    }
                    s.ids.push(id);
                    values.push(0.0);
                }
            }
        }
    }
    if labels.is_empty() {
        return Err(DataError::invalid(path, "no samples after the header"));
    }
    let mut columns = Vec::with_capacity(width);
    let mut level_of = Vec::with_capacity(width);
    for (j, s) in seen.iter_mut().enumerate() {
        if j == label_at {
            continue;
        }
        let name = names[j].clone();
        match (s.number, s.text) {
            (Some(n), Some(t)) => {
                return Err(DataError::Malformed {
                    file: path.to_path_buf(),
                    line: n.max(t),
                    reason: format!(
                        "column `{name}` holds numbers (line {n}) and text (line {t}): \
                         a column is either numeric or categorical (fill in or drop \
                         missing-value markers, or give categories as text)"
                    ),
                })
            }
            (_, None) => {
                if let Some(e) = s.empty {
                    return Err(DataError::Malformed {
                        file: path.to_path_buf(),
                        line: e,
                        reason: format!(
                            "field {} (column `{name}`) is empty: missing values are not \
                             supported (fill them in or drop the rows)",
                            j + 1
                        ),
                    });
                }
                columns.push(Column::Numeric { name });
                level_of.push(Vec::new());
            }
            (None, Some(_)) => {
                // Levels in byte order; ids of first appearance mapped to
                // their sorted place.
                let mut levels: Vec<(String, u32)> = s.levels.drain().collect();
                levels.sort();
                let mut place = vec![0u32; levels.len()];
                for (k, (_, id)) in levels.iter().enumerate() {
                    place[*id as usize] = k as u32;
                }
                columns.push(Column::Categorical {
                    name,
                    levels: levels.into_iter().map(|(l, _)| l).collect(),
                });
                level_of.push(place);
            }
        }
    }
    let encoding = Encoding {
        label: label_column.to_string(),
        columns,
    };
    let n = labels.len();
    check_size(path, &encoding, n)?;
    let a = if encoding.is_numeric() {
        Array2::from_shape_vec((n, width), values).expect("rows checked")
    } else {
        let offsets = encoding.offsets();
        let mut a = Array2::<f32>::zeros((n, encoding.width()));
        let raw: Vec<usize> = (0..names.len()).filter(|&j| j != label_at).collect();
        for (c, column) in encoding.columns.iter().enumerate() {
            let s = &seen[raw[c]];
            match column {
                Column::Numeric { .. } => {
                    for i in 0..n {
                        a[[i, offsets[c]]] = values[i * width + c];
                    }
                }
                Column::Categorical { .. } => {
                    for (i, &id) in s.ids.iter().enumerate() {
                        if id != u32::MAX {
                            a[[i, offsets[c] + level_of[c][id as usize] as usize]] = 1.0;
                        }
                    }
                }
            }
        }
        a
    };
    Ok((Features::Dense(a), RawLabels(labels), encoding))
}

/// The most levels one text column may have: more is an identifier or
/// free text, whose one-hot columns would teach nothing and fill memory.
pub const MAX_LEVELS: usize = 10_000;

/// The most levels of all text columns together (each is a feature, and
/// the model records each one's text).
pub const MAX_ALL_LEVELS: usize = 1_000_000;

/// The most bytes the encoded features of one file may take (dense f32).
pub const MAX_ENCODED_BYTES: usize = 4 << 30;

fn too_many_levels(path: &Path, name: &str) -> DataError {
    DataError::invalid(
        path,
        format!(
            "text column `{name}` has more than {MAX_LEVELS} distinct values, the most a \
             categorical column may have (an identifier or free text?): drop it, or encode \
             it yourself"
        ),
    )
}

/// Refuses an encoding that would exhaust the node: more than
/// [`MAX_ALL_LEVELS`] levels in all, or `n` samples whose encoded features
/// pass [`MAX_ENCODED_BYTES`] (a column past [`MAX_LEVELS`] is refused
/// while the file is read).
fn check_size(path: &Path, encoding: &Encoding, n: usize) -> Result<(), DataError> {
    let all_levels = encoding.width()
        - encoding
            .columns
            .iter()
            .filter(|c| matches!(c, Column::Numeric { .. }))
            .count();
    // The model records every level (its metadata header is bounded).
    if all_levels > MAX_ALL_LEVELS {
        return Err(DataError::invalid(
            path,
            format!(
                "its text columns have {all_levels} distinct values in all, more than the \
                 {MAX_ALL_LEVELS} one model may encode: drop some of them"
            ),
        ));
    }
    let bytes = n.saturating_mul(encoding.width()).saturating_mul(4);
    if !encoding.is_numeric() && bytes > MAX_ENCODED_BYTES {
        let widest = encoding
            .columns
            .iter()
            .filter_map(|c| match c {
                Column::Categorical { name, levels } => Some((levels.len(), name)),
                Column::Numeric { .. } => None,
            })
            .max()
            .map(|(k, name)| format!("`{name}`, {k} levels"))
            .unwrap_or_default();
        return Err(DataError::invalid(
            path,
            format!(
                "one-hot encoding its text columns gives {n} samples x {} features ({:.1} GiB), \
                 more than {} GiB (the widest: {widest}): drop or merge categories",
                encoding.width(),
                bytes as f64 / (1u64 << 30) as f64,
                MAX_ENCODED_BYTES >> 30
            ),
        ));
    }
    Ok(())
}

/// Reads a labelled CSV file with the [`Encoding`] of the training data:
/// the same columns by name (in any order), each read as it was in
/// training.
pub fn read_encoded(path: &Path, encoding: &Encoding) -> Result<(Features, RawLabels), DataError> {
    let (mut r, names) = open_records(path)?;
    let label_at = find_label(path, &names, &encoding.label)?;
    // Where each of the encoding's columns is in this file.
    let mut at = Vec::with_capacity(encoding.columns.len());
    for c in &encoding.columns {
        let j = names.iter().position(|n| n == c.name()).ok_or_else(|| {
            DataError::invalid(
                path,
                format!("no column `{}`, which the training data had", c.name()),
            )
        })?;
        at.push(j);
    }
    if let Some(extra) = names
        .iter()
        .enumerate()
        .find(|(j, _)| *j != label_at && !at.contains(j))
    {
        return Err(DataError::invalid(
            path,
            format!("column `{}` was not in the training data", extra.1),
        ));
    }
    let offsets = encoding.offsets();
    let lookup: Vec<std::collections::HashMap<&str, usize>> = encoding
        .columns
        .iter()
        .map(|c| match c {
            Column::Numeric { .. } => Default::default(),
            Column::Categorical { levels, .. } => levels
                .iter()
                .enumerate()
                .map(|(k, l)| (l.as_str(), k))
                .collect(),
        })
        .collect();
    let width = encoding.width();
    let mut values = Vec::new();
    let mut labels = Vec::new();
    let mut record = ::csv::StringRecord::new();
    while let Some(line) = next_record(path, &mut r, &mut record, names.len())? {
        labels.push(super::libsvm::normalise_label(&record[label_at]));
        let row = values.len();
        values.resize(row + width, 0.0f32);
        for (c, column) in encoding.columns.iter().enumerate() {
            let j = at[c];
            let f = &record[j];
            match column {
                Column::Numeric { name } => {
                    values[row + offsets[c]] = finite(f).ok_or_else(|| DataError::Malformed {
                        file: path.to_path_buf(),
                        line,
                        reason: format!(
                            "field {} (column `{name}`) is not a number, as it was in the \
                             training data",
                            j + 1
                        ),
                    })?;
                }
                Column::Categorical { .. } => {
                    if let Some(k) = lookup[c].get(f) {
                        values[row + offsets[c] + k] = 1.0;
                    }
                }
            }
        }
    }
    if labels.is_empty() {
        return Err(DataError::invalid(path, "no samples after the header"));
    }
    let a = Array2::from_shape_vec((labels.len(), width), values).expect("rows checked");
    Ok((Features::Dense(a), RawLabels(labels)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        std::fs::write(&p, "a,label,b\n1,x,2\n\n3,y,4\n").unwrap();
        let (f, l, enc) = read(&p, "label").unwrap();
        assert_eq!(f.to_dense(), ndarray::arr2(&[[1.0, 2.0], [3.0, 4.0]]));
        assert_eq!(l.0, vec!["x", "y"]);
        assert_eq!(enc.feature_names(), vec!["a", "b"]);
        assert!(enc.is_numeric());
        let e = read(&p, "class").unwrap_err().to_string();
        assert!(e.contains("d.csv:1:") && e.contains("`class`"), "{e}");
        std::fs::write(&p, "a,label,b\n1,x,2\n3,y\n").unwrap();
        let e = read(&p, "label").unwrap_err().to_string();
        assert!(e.contains("d.csv:3:") && e.contains("2 fields"), "{e}");
        // A column of numbers with one word: an error naming both lines,
        // without the word.
        std::fs::write(&p, "a,label,b\n1,x,2\n1,x,oops\n").unwrap();
        let e = read(&p, "label").unwrap_err().to_string();
        assert!(
            e.contains("d.csv:3:")
                && e.contains("column `b` holds numbers (line 2) and text (line 3)")
                && !e.contains("oops"),
            "{e}"
        );
        // An empty field in a numeric column.
        std::fs::write(&p, "a,label,b\n1,x,2\n1,x,\n").unwrap();
        let e = read(&p, "label").unwrap_err().to_string();
        assert!(
            e.contains("d.csv:3:") && e.contains("field 3 (column `b`) is empty"),
            "{e}"
        );
    }

    #[test]
    fn text_columns_are_one_hot_encoded_as_get_dummies_does() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        // Quoted fields (one with a comma), an empty categorical field,
        // levels out of order.
        std::fs::write(
            &p,
            "colour,size,y,\"shape, kind\"\nred,1.5,0,round\nblue,2,1,\"flat, wide\"\n,3,1,round\n",
        )
        .unwrap();
        let (f, l, enc) = read(&p, "y").unwrap();
        assert_eq!(
            enc.feature_names(),
            vec![
                "size",
                "colour=blue",
                "colour=red",
                "shape, kind=flat, wide",
                "shape, kind=round"
            ]
        );
        assert_eq!(
            f.to_dense(),
            ndarray::arr2(&[
                [1.5, 0.0, 1.0, 0.0, 1.0],
                [2.0, 1.0, 0.0, 1.0, 0.0],
                [3.0, 0.0, 0.0, 0.0, 1.0]
            ])
        );
        assert_eq!(l.0, vec!["0", "1", "1"]);
        // The encoding survives its JSON; test data are read with it:
        // columns by name, an unseen level sets nothing.
        let back: Encoding = serde_json::from_str(&enc.to_json()).unwrap();
        assert_eq!(back, enc);
        let q = dir.path().join("t.csv");
        std::fs::write(
            &q,
            "y,size,\"shape, kind\",colour\n1,4,round,green\n0,5,\"flat, wide\",red\n",
        )
        .unwrap();
        let (tf, tl) = read_encoded(&q, &back).unwrap();
        assert_eq!(
            tf.to_dense(),
            ndarray::arr2(&[[4.0, 0.0, 0.0, 0.0, 1.0], [5.0, 0.0, 1.0, 1.0, 0.0]])
        );
        assert_eq!(tl.0, vec!["1", "0"]);
        // A missing or an extra column, a word in a numeric column.
        std::fs::write(&q, "y,size,colour\n1,4,red\n").unwrap();
        let e = read_encoded(&q, &back).unwrap_err().to_string();
        assert!(e.contains("no column `shape, kind`"), "{e}");
        std::fs::write(&q, "y,size,colour,\"shape, kind\",w\n1,4,red,round,2\n").unwrap();
        let e = read_encoded(&q, &back).unwrap_err().to_string();
        assert!(e.contains("column `w` was not in the training data"), "{e}");
        std::fs::write(&q, "y,size,\"shape, kind\",colour\n1,big,round,red\n").unwrap();
        let e = read_encoded(&q, &back).unwrap_err().to_string();
        assert!(
            e.contains("t.csv:2:") && e.contains("column `size`") && !e.contains("big"),
            "{e}"
        );
    }

    #[test]
    fn lines_are_counted_in_crlf_files_and_past_blank_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        // CRLF endings, an empty line and a line of spaces before a short
        // row (line 6); a NaN in a text column is a level.
        std::fs::write(&p, "a,y,c\r\n1,0,x\r\n\r\n   \r\n2,1,NaN\r\n3,1\r\n").unwrap();
        let e = read(&p, "y").unwrap_err().to_string();
        assert!(e.contains("d.csv:6: 2 fields, the header has 3"), "{e}");
        std::fs::write(&p, "a,y,c\r\n1,0,x\r\n\r\n   \r\n2,1,NaN\r\n").unwrap();
        let (f, l, enc) = read(&p, "y").unwrap();
        assert_eq!(enc.feature_names(), vec!["a", "c=NaN", "c=x"]);
        assert_eq!(
            f.to_dense(),
            ndarray::arr2(&[[1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
        );
        assert_eq!(l.0, vec!["0", "1"]);
        // A word among numbers after a blank line: both lines right.
        std::fs::write(&p, "a,y\n1,0\n\n\nx,1\n").unwrap();
        let e = read(&p, "y").unwrap_err().to_string();
        assert!(
            e.contains("holds numbers (line 2) and text (line 5)"),
            "{e}"
        );
        // NaN among numbers is a missing-value marker: refused.
        std::fs::write(&p, "a,y\n1,0\nnan,1\n").unwrap();
        let e = read(&p, "y").unwrap_err().to_string();
        assert!(
            e.contains("column `a` holds numbers (line 2) and text (line 3)"),
            "{e}"
        );
        // A name twice in the header.
        std::fs::write(&p, "a,y,a\n1,0,2\n").unwrap();
        let e = read(&p, "y").unwrap_err().to_string();
        assert!(e.contains("d.csv:1: column `a` appears twice"), "{e}");
        // A malformed encoding's error does not quote it.
        let bad = Encoding::from_json(r#"{"label":"y","columns":[{"kind":"secret-level"}]}"#)
            .unwrap_err();
        assert!(!bad.contains("secret"), "{bad}");
    }

    #[test]
    fn an_identifier_column_is_refused_rather_than_one_hot_encoded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ids.csv");
        let mut text = String::from("id,x,y\n");
        for i in 0..=MAX_LEVELS {
            text.push_str(&format!("user{i},{i},{}\n", i % 2));
        }
        std::fs::write(&p, text).unwrap();
        let e = read(&p, "y").unwrap_err().to_string();
        assert!(
            e.contains("text column `id` has more than 10000 distinct values")
                && !e.contains("user1"),
            "{e}"
        );
    }
}
