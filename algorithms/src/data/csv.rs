//! CSV with a header row: every column is a numeric feature except the
//! label column, named by the caller.

use super::features::Features;
use super::{DataError, RawLabels};
use ndarray::Array2;
use std::io::BufRead;
use std::path::Path;

/// The remaining lines of a CSV file and the column names of its header.
pub(crate) type Lines = std::io::Lines<std::io::BufReader<Box<dyn std::io::Read>>>;

pub(crate) fn open_with_header(path: &Path) -> Result<(Lines, Vec<String>), DataError> {
    let mut lines = std::io::BufReader::new(super::open_maybe_gz(path)?).lines();
    let header = match lines.next() {
        Some(h) => h.map_err(|e| DataError::io(path, e))?,
        None => {
            return Err(DataError::invalid(
                path,
                "empty file (expected a header row)",
            ))
        }
    };
    let names = header
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .collect();
    Ok((lines, names))
}

/// Reads a CSV file; `label_column` names the label column.
pub fn read(
    path: &Path,
    label_column: &str,
) -> Result<(Features, RawLabels, Vec<String>), DataError> {
    let (lines, names) = open_with_header(path)?;
    let label_at = names
        .iter()
        .position(|n| n == label_column)
        .ok_or_else(|| DataError::Malformed {
            file: path.to_path_buf(),
            line: 1,
            reason: format!(
                "no column named `{label_column}` in the header ({} columns)",
                names.len()
            ),
        })?;
    let width = names.len() - 1;
    let mut values = Vec::new();
    let mut labels = Vec::new();
    for (n, line) in lines.enumerate() {
        let lineno = n as u64 + 2;
        let line = line.map_err(|e| DataError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != names.len() {
            return Err(DataError::Malformed {
                file: path.to_path_buf(),
                line: lineno,
                reason: format!("{} fields, the header has {}", fields.len(), names.len()),
            });
        }
        for (j, f) in fields.iter().enumerate() {
            let f = f.trim().trim_matches('"');
            if j == label_at {
                labels.push(super::libsvm::normalise_label(f));
                continue;
            }
            let v: f32 = f.parse().map_err(|_| DataError::Malformed {
                file: path.to_path_buf(),
                line: lineno,
                reason: format!(
                    "field {} (column `{}`) is not a number: feature columns must be \
                     numeric (give categories as numbers or one-hot columns)",
                    j + 1,
                    names[j]
                ),
            })?;
            if !v.is_finite() {
                return Err(DataError::Malformed {
                    file: path.to_path_buf(),
                    line: lineno,
                    reason: format!("field {} is {v}", j + 1),
                });
            }
            values.push(v);
        }
    }
    if labels.is_empty() {
        return Err(DataError::invalid(path, "no samples after the header"));
    }
    let feature_names = names
        .into_iter()
        .enumerate()
        .filter(|(j, _)| *j != label_at)
        .map(|(_, n)| n)
        .collect();
    let a = Array2::from_shape_vec((labels.len(), width), values).expect("rows checked");
    Ok((Features::Dense(a), RawLabels(labels), feature_names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        std::fs::write(&p, "a,label,b\n1,x,2\n3,y,4\n").unwrap();
        let (f, l, names) = read(&p, "label").unwrap();
        assert_eq!(f.to_dense(), ndarray::arr2(&[[1.0, 2.0], [3.0, 4.0]]));
        assert_eq!(l.0, vec!["x", "y"]);
        assert_eq!(names, vec!["a", "b"]);
        let e = read(&p, "class").unwrap_err().to_string();
        assert!(e.contains("d.csv:1:") && e.contains("`class`"), "{e}");
        std::fs::write(&p, "a,label,b\n1,x,2\n3,y\n").unwrap();
        let e = read(&p, "label").unwrap_err().to_string();
        assert!(e.contains("d.csv:3:") && e.contains("2 fields"), "{e}");
        std::fs::write(&p, "a,label,b\n1,x,oops\n").unwrap();
        let e = read(&p, "label").unwrap_err().to_string();
        assert!(
            e.contains("d.csv:2:")
                && e.contains("field 3 (column `b`) is not a number")
                && !e.contains("oops"),
            "{e}"
        );
    }
}
