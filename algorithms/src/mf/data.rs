//! Ratings: CSV (user, item and rating columns by name), MatrixMarket
//! coordinate files or `row col value` triples; ids remapped to 0..m and
//! 0..n (sorted as numbers when all ids are numbers).

use crate::data::{mm, open_maybe_gz, DataError};
use petuum_core::spec::{DataFormat, DataSpec};
use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

/// Ratings with raw ids.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawRatings {
    pub users: Vec<String>,
    pub items: Vec<String>,
    pub values: Vec<f64>,
}

/// Which CSV columns hold what.
#[derive(Clone, Debug, PartialEq)]
pub struct Columns {
    pub user: String,
    pub item: String,
    pub rating: String,
}

fn bad(path: &Path, line: u64, reason: String) -> DataError {
    DataError::Malformed {
        file: path.to_path_buf(),
        line,
        reason,
    }
}

fn rating(path: &Path, line: u64, field: &str, s: &str) -> Result<f64, DataError> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(bad(
            path,
            line,
            format!("field `{field}` is not a finite number"),
        )),
    }
}

/// Reads one ratings file.
pub fn read(format: DataFormat, path: &Path, cols: &Columns) -> Result<RawRatings, DataError> {
    let mut out = RawRatings::default();
    match format {
        DataFormat::Csv => {
            let mut lines = std::io::BufReader::new(open_maybe_gz(path)?).lines();
            let header = lines
                .next()
                .ok_or_else(|| DataError::invalid(path, "empty file (expected a header row)"))?
                .map_err(|e| DataError::io(path, e))?;
            let names: Vec<String> = header
                .split(',')
                .map(|s| s.trim().trim_matches('"').to_string())
                .collect();
            let at = |field: &str, name: &str| {
                names.iter().position(|n| n == name).ok_or_else(|| {
                    bad(
                        path,
                        1,
                        format!("no column named `{name}` ({field}) in the header {names:?}"),
                    )
                })
            };
            let (u, i, r) = (
                at("params.user_column", &cols.user)?,
                at("params.item_column", &cols.item)?,
                at("params.rating_column", &cols.rating)?,
            );
            for (n, line) in lines.enumerate() {
                let lineno = n as u64 + 2;
                let line = line.map_err(|e| DataError::io(path, e))?;
                if line.trim().is_empty() {
                    continue;
                }
                let f: Vec<&str> = line.split(',').collect();
                if f.len() != names.len() {
                    return Err(bad(
                        path,
                        lineno,
                        format!("{} fields, the header has {}", f.len(), names.len()),
                    ));
                }
                out.values.push(rating(path, lineno, &cols.rating, f[r])?);
                out.users.push(f[u].trim().trim_matches('"').to_string());
                out.items.push(f[i].trim().trim_matches('"').to_string());
            }
        }
        DataFormat::MatrixMarket => {
            let m = mm::read(path)?;
            for (i, j, v) in m.entries {
                out.users.push((i + 1).to_string());
                out.items.push((j + 1).to_string());
                out.values.push(v);
            }
        }
        DataFormat::Triples => {
            let reader = std::io::BufReader::new(open_maybe_gz(path)?);
            for (n, line) in reader.lines().enumerate() {
                let lineno = n as u64 + 1;
                let line = line.map_err(|e| DataError::io(path, e))?;
                let t = line.trim();
                if t.is_empty() || t.starts_with('#') || t.starts_with('%') {
                    continue;
                }
                let f: Vec<&str> = t.split_ascii_whitespace().collect();
                if f.len() < 3 {
                    return Err(bad(
                        path,
                        lineno,
                        format!("{} fields, expected `row col value`", f.len()),
                    ));
                }
                out.values.push(rating(path, lineno, "value", f[2])?);
                out.users.push(f[0].to_string());
                out.items.push(f[1].to_string());
            }
        }
        other => {
            return Err(DataError::invalid(
                path,
                format!("mf reads csv, matrix_market or triples ratings, not `{other:?}`")
                    .to_lowercase(),
            ))
        }
    }
    if out.values.is_empty() {
        return Err(DataError::invalid(path, "empty matrix: no ratings"));
    }
    Ok(out)
}

/// Raw id → index, with the raw ids in index order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IdMap {
    pub ids: Vec<String>,
    index: HashMap<String, u32>,
}

impl IdMap {
    fn build(raw: &[String]) -> IdMap {
        let mut ids: Vec<String> = raw.to_vec();
        ids.sort_by(|a, b| match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) => x.total_cmp(&y).then_with(|| a.cmp(b)),
            _ => a.cmp(b),
        });
        ids.dedup();
        IdMap::from_ids(ids)
    }

    pub fn from_ids(ids: Vec<String>) -> IdMap {
        let index = ids
            .iter()
            .enumerate()
            .map(|(k, s)| (s.clone(), k as u32))
            .collect();
        IdMap { ids, index }
    }

    pub fn get(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Ratings with remapped ids.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ratings {
    pub user: Vec<u32>,
    pub item: Vec<u32>,
    pub value: Vec<f64>,
}

impl Ratings {
    pub fn len(&self) -> usize {
        self.value.len()
    }
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }
}

/// Training ratings, the id maps built from them, and the test ratings
/// (those whose user or item never occurs in training are counted in
/// `unseen` and left out).
pub struct Loaded {
    pub users: IdMap,
    pub items: IdMap,
    pub train: Ratings,
    pub test: Option<Ratings>,
    pub unseen: usize,
}

/// Maps raw ratings through existing id maps, dropping unknown ids.
pub fn remap(raw: &RawRatings, users: &IdMap, items: &IdMap) -> (Ratings, usize) {
    let mut out = Ratings::default();
    let mut unseen = 0;
    for k in 0..raw.values.len() {
        match (users.get(&raw.users[k]), items.get(&raw.items[k])) {
            (Some(u), Some(i)) => {
                out.user.push(u);
                out.item.push(i);
                out.value.push(raw.values[k]);
            }
            _ => unseen += 1,
        }
    }
    (out, unseen)
}

fn pick(raw: &RawRatings, rows: &[usize]) -> RawRatings {
    RawRatings {
        users: rows.iter().map(|&k| raw.users[k].clone()).collect(),
        items: rows.iter().map(|&k| raw.items[k].clone()).collect(),
        values: rows.iter().map(|&k| raw.values[k]).collect(),
    }
}

/// Loads a job's ratings: `data.test`, or the deterministic
/// `data.test_fraction` hold-out (every `1/f`-th rating in file order, the
/// rule of [`crate::data::Dataset::split`]).
pub fn load(d: &DataSpec, cols: &Columns) -> Result<Loaded, DataError> {
    let all = read(d.format, &d.train, cols)?;
    let (train, test) = match (&d.test, d.test_fraction) {
        (Some(t), _) => (all, Some(read(d.format, t, cols)?)),
        (None, Some(f)) => {
            let (mut tr, mut te) = (Vec::new(), Vec::new());
            for k in 0..all.values.len() {
                if ((k + 1) as f64 * f).floor() > (k as f64 * f).floor() {
                    te.push(k);
                } else {
                    tr.push(k);
                }
            }
            (pick(&all, &tr), Some(pick(&all, &te)))
        }
        (None, None) => (all, None),
    };
    let users = IdMap::build(&train.users);
    let items = IdMap::build(&train.items);
    let (train_r, _) = remap(&train, &users, &items);
    let (test_r, unseen) = match &test {
        Some(t) => {
            let (r, u) = remap(t, &users, &items);
            (Some(r), u)
        }
        None => (None, 0),
    };
    Ok(Loaded {
        users,
        items,
        train: train_r,
        test: test_r,
        unseen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_formats_and_refuses_bad_input_naming_file_line_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        let cols = Columns {
            user: "u".into(),
            item: "i".into(),
            rating: "r".into(),
        };
        std::fs::write(&p, "u,i,r,t\n10,5,4.5,0\n2,5,3,0\n").unwrap();
        let r = read(DataFormat::Csv, &p, &cols).unwrap();
        assert_eq!(r.values, vec![4.5, 3.0]);
        let users = IdMap::build(&r.users);
        assert_eq!(users.ids, vec!["2", "10"]);
        std::fs::write(&p, "u,i,r,t\n1,5,4.5,0\n2,5,four,0\n").unwrap();
        let e = read(DataFormat::Csv, &p, &cols).unwrap_err().to_string();
        assert!(
            e.contains("r.csv:3:") && e.contains("field `r`") && !e.contains("four"),
            "{e}"
        );
        let other = Columns {
            rating: "stars".into(),
            ..cols.clone()
        };
        let e = read(DataFormat::Csv, &p, &other).unwrap_err().to_string();
        assert!(
            e.contains("r.csv:1:") && e.contains("`stars`") && e.contains("params.rating_column"),
            "{e}"
        );
        std::fs::write(&p, "u,i,r,t\n").unwrap();
        let e = read(DataFormat::Csv, &p, &cols).unwrap_err().to_string();
        assert!(e.contains("empty matrix"), "{e}");
        let t = dir.path().join("r.txt");
        std::fs::write(&t, "1 2 3\n# c\n2 1 x\n").unwrap();
        let e = read(DataFormat::Triples, &t, &cols)
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.txt:3:") && e.contains("field `value`"), "{e}");
        let m = dir.path().join("r.mtx");
        std::fs::write(&m, "%%MatrixMarket matrix coordinate real general\n0 0 0\n").unwrap();
        let e = read(DataFormat::MatrixMarket, &m, &cols)
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.mtx:2:") && e.contains("empty matrix"), "{e}");
    }
}
