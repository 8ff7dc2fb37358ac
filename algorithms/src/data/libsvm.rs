//! libsvm / svmlight text: `label idx:value idx:value ...`, one sample per
//! line, `#` comments. Indices are 1-based by convention; 0-based files are
//! detected (an index 0 anywhere) unless the caller says which.

use super::features::{Csr, Features};
use super::{DataError, RawLabels};
use std::io::BufRead;
use std::path::Path;

/// Reads a libsvm file. `one_based`: `Some(true|false)` to force, `None`
/// to detect.
pub fn read(path: &Path, one_based: Option<bool>) -> Result<(Features, RawLabels), DataError> {
    let reader = std::io::BufReader::new(super::open_maybe_gz(path)?);
    let mut csr = Csr {
        indptr: vec![0],
        ..Default::default()
    };
    let mut labels = Vec::new();
    let mut saw_zero = false;
    let mut max_index = 0u32;
    for (n, line) in reader.lines().enumerate() {
        let lineno = n as u64 + 1;
        let line = line.map_err(|e| DataError::io(path, e))?;
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| DataError::Malformed {
            file: path.to_path_buf(),
            line: lineno,
            reason,
        };
        let mut parts = line.split_ascii_whitespace();
        let label = parts.next().expect("non-empty line");
        label
            .parse::<f64>()
            .map_err(|_| bad("the label (field 1) is not a number".to_string()))?;
        labels.push(normalise_label(label));
        let mut last: Option<u32> = None;
        for (k, tok) in parts.enumerate() {
            let (i, v) = tok
                .split_once(':')
                .ok_or_else(|| bad(format!("field {} is not index:value", k + 2)))?;
            let i: u32 = i.parse().map_err(|_| {
                bad(format!(
                    "the index of field {} is not a non-negative integer",
                    k + 2
                ))
            })?;
            let v: f32 = v
                .parse()
                .map_err(|_| bad(format!("the value of feature {i} is not a number")))?;
            if !v.is_finite() {
                return Err(bad(format!("value of feature {i} is {v}")));
            }
            if last.is_some_and(|l| i <= l) {
                return Err(bad(format!("feature indices not increasing at {i}")));
            }
            last = Some(i);
            saw_zero |= i == 0;
            max_index = max_index.max(i);
            csr.indices.push(i);
            csr.values.push(v);
        }
        csr.indptr.push(csr.indices.len());
    }
    if labels.is_empty() {
        return Err(DataError::invalid(path, "no samples"));
    }
    let one_based = match one_based {
        Some(true) if saw_zero => {
            return Err(DataError::invalid(
                path,
                "feature index 0 in a file declared 1-based",
            ))
        }
        Some(b) => b,
        None => !saw_zero,
    };
    if one_based {
        for i in &mut csr.indices {
            *i -= 1;
        }
        csr.ncols = max_index as usize;
    } else {
        csr.ncols = max_index as usize + 1;
    }
    Ok((Features::Sparse(csr), RawLabels(labels)))
}

/// `+1`, `1`, `1.0` are the same class.
pub(crate) fn normalise_label(s: &str) -> String {
    match s.parse::<f64>() {
        Ok(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", v as i64),
        Ok(v) => format!("{v}"),
        Err(_) => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_detects_base_and_reports_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.libsvm");
        std::fs::write(&p, "+1 1:0.5 3:2 # c\n-1 2:1\n\n1.0 3:1\n").unwrap();
        let (f, l) = read(&p, None).unwrap();
        assert_eq!(f.ncols(), 3);
        assert_eq!(f.nrows(), 3);
        assert_eq!(l.0, vec!["1", "-1", "1"]);
        assert_eq!(f.dot(0, &[1.0, 1.0, 1.0]), 2.5);
        std::fs::write(&p, "0 0:1 2:1\n").unwrap();
        assert_eq!(read(&p, None).unwrap().0.ncols(), 3);
        for (text, needle) in [
            ("1 1:x\n", "value of feature 1 is not a number"),
            ("1 3:1 2:1\n", "not increasing"),
            ("a 1:1\n", "label (field 1) is not a number"),
            ("1 1-1\n", "field 2 is not index:value"),
        ] {
            std::fs::write(&p, format!("1 1:1\n{text}")).unwrap();
            let e = read(&p, None).unwrap_err().to_string();
            assert!(e.contains("a.libsvm:2:") && e.contains(needle), "{e}");
        }
    }
}
