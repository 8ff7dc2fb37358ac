//! MatrixMarket exchange format (NIST): `%%MatrixMarket matrix coordinate
//! real|integer|pattern general|symmetric` (1-based `row col [value]`
//! entries) or `matrix array real|integer general` (dense, column-major),
//! and plain `row col value` triples.

use super::DataError;
use std::io::BufRead;
use std::path::Path;

/// A matrix as stored in a MatrixMarket file.
#[derive(Clone, Debug, PartialEq)]
pub struct Coo {
    pub rows: usize,
    pub cols: usize,
    /// `(row, col, value)`, 0-based, in file order (symmetric files
    /// expanded).
    pub entries: Vec<(u32, u32, f64)>,
}

fn malformed(path: &Path, line: u64, reason: impl Into<String>) -> DataError {
    DataError::Malformed {
        file: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

/// Reads a MatrixMarket file (coordinate or array) into coordinates.
/// An empty matrix (no rows, no columns or no entries) is refused.
pub fn read(path: &Path) -> Result<Coo, DataError> {
    let reader = std::io::BufReader::new(super::open_maybe_gz(path)?);
    let mut lines = reader.lines().enumerate();
    let (_, banner) = lines
        .next()
        .ok_or_else(|| DataError::invalid(path, "empty file (expected a %%MatrixMarket banner)"))?;
    let banner = banner.map_err(|e| DataError::io(path, e))?;
    let words: Vec<String> = banner
        .split_ascii_whitespace()
        .map(|w| w.to_ascii_lowercase())
        .collect();
    if words.len() != 5 || words[0] != "%%matrixmarket" || words[1] != "matrix" {
        return Err(malformed(
            path,
            1,
            "expected `%%MatrixMarket matrix <coordinate|array> <real|integer|pattern> <general|symmetric>`",
        ));
    }
    let array = match words[2].as_str() {
        "coordinate" => false,
        "array" => true,
        _ => {
            return Err(malformed(
                path,
                1,
                "the format is not supported (coordinate or array)".to_string(),
            ))
        }
    };
    let pattern = match words[3].as_str() {
        "real" | "integer" | "double" => false,
        "pattern" if !array => true,
        _ => {
            return Err(malformed(
                path,
                1,
                "the field is not supported (real, integer, double or pattern)".to_string(),
            ))
        }
    };
    let symmetric = match words[4].as_str() {
        "general" => false,
        "symmetric" => true,
        _ => {
            return Err(malformed(
                path,
                1,
                "the symmetry is not supported (general or symmetric)".to_string(),
            ))
        }
    };
    let mut size: Option<(usize, usize, usize)> = None;
    let mut entries = Vec::new();
    let mut k = 0usize;
    for (n, line) in lines {
        let lineno = n as u64 + 1;
        let line = line.map_err(|e| DataError::io(path, e))?;
        let t = line.trim();
        if t.is_empty() || t.starts_with('%') {
            continue;
        }
        let f: Vec<&str> = t.split_ascii_whitespace().collect();
        let num = |i: usize, what: &str| -> Result<f64, DataError> {
            let s = f
                .get(i)
                .ok_or_else(|| malformed(path, lineno, format!("missing {what}")))?;
            let v: f64 = s
                .parse()
                .map_err(|_| malformed(path, lineno, format!("{what} is not a number")))?;
            if v.is_finite() {
                Ok(v)
            } else {
                Err(malformed(path, lineno, format!("{what} is {v}")))
            }
        };
        let index = |i: usize, what: &str, max: usize| -> Result<u32, DataError> {
            let s = f
                .get(i)
                .ok_or_else(|| malformed(path, lineno, format!("missing {what}")))?;
            match s.parse::<usize>() {
                Ok(v) if v >= 1 && v <= max => Ok((v - 1) as u32),
                _ => Err(malformed(
                    path,
                    lineno,
                    format!("{what} is not an index between 1 and {max}"),
                )),
            }
        };
        let Some((rows, cols, nnz)) = size else {
            let rows = num(0, "row count")? as usize;
            let cols = num(1, "column count")? as usize;
            let nnz = if array {
                rows.checked_mul(cols).ok_or_else(|| {
                    malformed(path, lineno, format!("{rows} x {cols} entries overflow"))
                })?
            } else {
                num(2, "entry count")? as usize
            };
            if rows == 0 || cols == 0 || nnz == 0 {
                return Err(malformed(
                    path,
                    lineno,
                    format!("empty matrix ({rows} x {cols}, {nnz} entries)"),
                ));
            }
            size = Some((rows, cols, nnz));
            // What the size line declares is not yet read: reserve a
            // little, grow with what the file holds.
            entries.reserve(nnz.min(1 << 16));
            continue;
        };
        if k >= nnz {
            return Err(malformed(
                path,
                lineno,
                format!("more than the {nnz} entries declared"),
            ));
        }
        if array {
            let v = num(0, "value")?;
            let (i, j) = (k % rows, k / rows);
            if v != 0.0 {
                entries.push((i as u32, j as u32, v));
            }
        } else {
            let i = index(0, "row", rows)?;
            let j = index(1, "column", cols)?;
            let v = if pattern { 1.0 } else { num(2, "value")? };
            entries.push((i, j, v));
            if symmetric && i != j {
                entries.push((j, i, v));
            }
        }
        k += 1;
    }
    let Some((rows, cols, nnz)) = size else {
        return Err(DataError::invalid(path, "no size line: empty matrix"));
    };
    if k != nnz {
        return Err(DataError::invalid(
            path,
            format!("{k} entries, the size line declares {nnz}"),
        ));
    }
    Ok(Coo {
        rows,
        cols,
        entries,
    })
}

/// One value per line (a target vector), or a MatrixMarket `n x 1` array
/// or coordinate matrix.
pub fn read_vector(path: &Path) -> Result<Vec<f64>, DataError> {
    let mut head = String::new();
    std::io::BufReader::new(super::open_maybe_gz(path)?)
        .read_line(&mut head)
        .map_err(|e| DataError::io(path, e))?;
    if head.to_ascii_lowercase().starts_with("%%matrixmarket") {
        let m = read(path)?;
        if m.cols != 1 {
            return Err(DataError::invalid(
                path,
                format!("a {} x {} matrix, expected one column", m.rows, m.cols),
            ));
        }
        // Rows the file declares beyond its entries are zeros: bounded as
        // a model is, not by the file's size.
        if let Some(problem) =
            crate::limits::too_large(&format!("{} values declared", m.rows), m.rows as u128)
        {
            return Err(DataError::invalid(path, problem));
        }
        let mut v = vec![0.0; m.rows];
        for (i, _, x) in m.entries {
            v[i as usize] = x;
        }
        return Ok(v);
    }
    let reader = std::io::BufReader::new(super::open_maybe_gz(path)?);
    let mut v = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| DataError::io(path, e))?;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with('%') {
            continue;
        }
        let x: f64 = t
            .parse()
            .map_err(|_| malformed(path, n as u64 + 1, "the target is not a number".to_string()))?;
        if !x.is_finite() {
            return Err(malformed(path, n as u64 + 1, format!("target is {x}")));
        }
        v.push(x);
    }
    if v.is_empty() {
        return Err(DataError::invalid(path, "no values"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_coordinate_array_and_reports_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.mtx");
        std::fs::write(
            &p,
            "%%MatrixMarket matrix coordinate real general\n% c\n2 3 2\n1 3 2.5\n2 1 -1\n",
        )
        .unwrap();
        let m = read(&p).unwrap();
        assert_eq!((m.rows, m.cols), (2, 3));
        assert_eq!(m.entries, vec![(0, 2, 2.5), (1, 0, -1.0)]);
        std::fs::write(
            &p,
            "%%MatrixMarket matrix array real general\n2 2\n1\n0\n3\n4\n",
        )
        .unwrap();
        let m = read(&p).unwrap();
        assert_eq!(m.entries, vec![(0, 0, 1.0), (0, 1, 3.0), (1, 1, 4.0)]);
        for (text, needle) in [
            ("2 3 1\n1 3 x\n", "m.mtx:3: value is not a number"),
            (
                "2 3 1\n3 1 1\n",
                "m.mtx:3: row is not an index between 1 and 2",
            ),
            ("0 0 0\n", "m.mtx:2: empty matrix"),
        ] {
            std::fs::write(
                &p,
                format!("%%MatrixMarket matrix coordinate real general\n{text}"),
            )
            .unwrap();
            let e = read(&p).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        std::fs::write(&p, "1\n2.5\nx\n").unwrap();
        let e = read_vector(&p).unwrap_err().to_string();
        assert!(e.contains("m.mtx:3: the target is not a number"), "{e}");
    }
}
