//! Bag-of-words corpora for topic models.
//!
//! - **UCI bag of words** (`docword.txt` + `vocab.txt`, the format of the UCI
//!   "Bag of Words" data sets): three header lines `D`, `W`, `NNZ`, then
//!   `NNZ` lines `docID wordID count` with 1-based ids; `vocab.txt` has the
//!   word of id `i` on line `i`.
//! - **LDA-C** (Blei's `lda-c`): one document per line,
//!   `N id:count id:count ...` with `N` distinct 0-based word ids.
//!
//! Malformed input is reported with the file, the 1-based line and the reason.
//! Plain or gzip-compressed files are accepted.

use super::{open_maybe_gz, DataError};
use std::io::BufRead;
use std::path::Path;

/// Upper bound on vocabulary and corpus sizes, so that a corrupt header
/// cannot ask for an absurd allocation.
pub const MAX_IDS: u64 = 1 << 31;

/// A corpus as sparse word counts per document.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Corpus {
    /// Vocabulary size (word ids are `0..num_words`).
    pub num_words: u32,
    /// Word of each id, when a vocabulary file was given (else empty).
    pub vocab: Vec<String>,
    /// Per document: `(word id, count)` sorted by word id, counts >= 1.
    pub docs: Vec<Vec<(u32, u32)>>,
}

impl Corpus {
    pub fn len(&self) -> usize {
        self.docs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }
    /// Total number of tokens.
    pub fn num_tokens(&self) -> u64 {
        self.docs
            .iter()
            .flat_map(|d| d.iter())
            .map(|&(_, c)| c as u64)
            .sum()
    }
    /// Tokens of one document (its length).
    pub fn doc_len(&self, d: usize) -> u32 {
        self.docs[d].iter().map(|&(_, c)| c).sum()
    }
    /// The documents `idx` (in that order), same vocabulary.
    pub fn subset(&self, idx: &[usize]) -> Corpus {
        Corpus {
            num_words: self.num_words,
            vocab: self.vocab.clone(),
            docs: idx.iter().map(|&i| self.docs[i].clone()).collect(),
        }
    }
}

fn malformed(file: &Path, line: u64, reason: impl Into<String>) -> DataError {
    DataError::Malformed {
        file: file.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

fn lines(path: &Path) -> Result<impl Iterator<Item = (u64, Result<String, DataError>)>, DataError> {
    let r = std::io::BufReader::new(open_maybe_gz(path)?);
    let p = path.to_path_buf();
    Ok(r.lines()
        .enumerate()
        .map(move |(i, l)| (i as u64 + 1, l.map_err(|e| DataError::io(&p, e)))))
}

/// Reads a vocabulary file: one word per line (surrounding blanks trimmed).
pub fn read_vocab(path: &Path) -> Result<Vec<String>, DataError> {
    let mut out = Vec::new();
    for (n, line) in lines(path)? {
        let line = line?;
        let w = line.trim();
        if w.is_empty() {
            return Err(malformed(path, n, "empty word"));
        }
        out.push(w.to_string());
    }
    Ok(out)
}

fn parse_u64(path: &Path, line: u64, s: &str, what: &str) -> Result<u64, DataError> {
    s.parse::<u64>()
        .map_err(|_| malformed(path, line, format!("{what} is not a non-negative integer")))
}

/// Reads a UCI bag-of-words `docword.txt`, with its `vocab.txt` if given
/// (which must have exactly `W` words).
pub fn read_uci(docword: &Path, vocab: Option<&Path>) -> Result<Corpus, DataError> {
    let path = docword;
    let mut it = lines(path)?;
    let mut header = [0u64; 3];
    for (i, name) in ["D (documents)", "W (words)", "NNZ (entries)"]
        .iter()
        .enumerate()
    {
        let (n, line) = it
            .next()
            .ok_or_else(|| malformed(path, i as u64 + 1, format!("missing header line {name}")))?;
        let line = line?;
        let v = parse_u64(path, n, line.trim(), name)?;
        if v > MAX_IDS {
            return Err(malformed(path, n, format!("{name} = {v} is too large")));
        }
        header[i] = v;
    }
    let [d_count, w_count, nnz] = header;
    // The header's D sets the documents kept (empty ones included) before
    // any entry is read: a 3-line file must not ask for 48 GB of them.
    if let Some(problem) = crate::limits::too_large(
        &format!("{d_count} documents declared"),
        d_count as u128 * 3,
    ) {
        return Err(malformed(path, 1, problem));
    }
    let mut docs: Vec<Vec<(u32, u32)>> = vec![Vec::new(); d_count as usize];
    let mut seen = 0u64;
    for (n, line) in it {
        let line = line?;
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let f: Vec<&str> = t.split_ascii_whitespace().collect();
        if f.len() != 3 {
            return Err(malformed(
                path,
                n,
                format!("expected `docID wordID count`, found {} fields", f.len()),
            ));
        }
        let d = parse_u64(path, n, f[0], "docID")?;
        let w = parse_u64(path, n, f[1], "wordID")?;
        let c = parse_u64(path, n, f[2], "count")?;
        if d == 0 || d > d_count {
            return Err(malformed(
                path,
                n,
                format!("docID {d} out of range 1..={d_count}"),
            ));
        }
        if w == 0 || w > w_count {
            return Err(malformed(
                path,
                n,
                format!("wordID {w} out of range 1..={w_count}"),
            ));
        }
        if c == 0 || c > u32::MAX as u64 {
            return Err(malformed(path, n, format!("count {c} must be >= 1")));
        }
        docs[d as usize - 1].push((w as u32 - 1, c as u32));
        seen += 1;
    }
    if seen != nnz {
        return Err(DataError::invalid(
            path,
            format!("header says {nnz} entries, file has {seen}"),
        ));
    }
    for doc in &mut docs {
        normalize_doc(doc);
    }
    let vocab = match vocab {
        Some(v) => {
            let words = read_vocab(v)?;
            if words.len() as u64 != w_count {
                return Err(DataError::invalid(
                    v,
                    format!(
                        "{} words, but {} says W = {w_count}",
                        words.len(),
                        path.display()
                    ),
                ));
            }
            words
        }
        None => Vec::new(),
    };
    Ok(Corpus {
        num_words: w_count as u32,
        vocab,
        docs,
    })
}

/// Sorts by word id and merges repeated ids.
fn normalize_doc(doc: &mut Vec<(u32, u32)>) {
    doc.sort_unstable_by_key(|&(w, _)| w);
    doc.dedup_by(|b, a| {
        if a.0 == b.0 {
            a.1 += b.1;
            true
        } else {
            false
        }
    });
}

/// Reads an LDA-C file (`N id:count ...`, 0-based ids), with a vocabulary
/// if given; the vocabulary size is the vocabulary's length (every id must
/// be below it) or else the largest id + 1.
pub fn read_ldac(path: &Path, vocab: Option<&Path>) -> Result<Corpus, DataError> {
    let words = match vocab {
        Some(v) => Some(read_vocab(v)?),
        None => None,
    };
    let limit = words.as_ref().map(|w| w.len() as u64).unwrap_or(MAX_IDS);
    let mut docs = Vec::new();
    let mut max_id = 0u64;
    for (n, line) in lines(path)? {
        let line = line?;
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let mut f = t.split_ascii_whitespace();
        let head = f.next().expect("non-empty line has a field");
        let count = parse_u64(path, n, head, "term count N")?;
        let mut doc = Vec::new();
        for (k, pair) in f.enumerate() {
            let (id, c) = pair.split_once(':').ok_or_else(|| {
                malformed(
                    path,
                    n,
                    format!("field {} is not of the form id:count", k + 2),
                )
            })?;
            let id = parse_u64(path, n, id, "word id")?;
            let c = parse_u64(path, n, c, "count")?;
            if id >= limit {
                return Err(malformed(
                    path,
                    n,
                    format!("word id {id} is not below the vocabulary size {limit}"),
                ));
            }
            if c == 0 || c > u32::MAX as u64 {
                return Err(malformed(path, n, format!("count {c} must be >= 1")));
            }
            max_id = max_id.max(id);
            doc.push((id as u32, c as u32));
        }
        if doc.len() as u64 != count {
            return Err(malformed(
                path,
                n,
                format!("line says N = {count} terms but lists {}", doc.len()),
            ));
        }
        normalize_doc(&mut doc);
        docs.push(doc);
    }
    let num_words = match &words {
        Some(w) => w.len() as u32,
        None if docs.iter().all(|d| d.is_empty()) => 0,
        None => max_id as u32 + 1,
    };
    Ok(Corpus {
        num_words,
        vocab: words.unwrap_or_default(),
        docs,
    })
}

/// Reads integer class labels from column `column` of a CSV file with a
/// header row (e.g. `spam` in spamassassin's `labels.csv`). Values must be
/// non-negative integers; they are the class indices.
pub fn read_labels_csv(path: &Path, column: &str) -> Result<Vec<u32>, DataError> {
    let mut it = lines(path)?;
    let (_, header) = it
        .next()
        .ok_or_else(|| DataError::invalid(path, "empty file (no header row)"))?;
    let header = header?;
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = names.iter().position(|&h| h == column).ok_or_else(|| {
        malformed(
            path,
            1,
            format!(
                "no column `{column}` (the header has {} columns)",
                names.len()
            ),
        )
    })?;
    let mut out = Vec::new();
    for (n, line) in it {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let v = f.get(col).ok_or_else(|| {
            malformed(
                path,
                n,
                format!("{} fields, column `{column}` is field {}", f.len(), col + 1),
            )
        })?;
        let v = parse_u64(path, n, v.trim(), "label")?;
        if v > 1 << 16 {
            return Err(malformed(path, n, format!("label {v} is too large")));
        }
        out.push(v as u32);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn uci_reads_and_merges() {
        let dir = tempfile::tempdir().unwrap();
        let dw = write(dir.path(), "dw", "2\n3\n4\n1 3 2\n1 1 1\n2 2 5\n1 3 1\n");
        let v = write(dir.path(), "v", "a\nb\nc\n");
        let c = read_uci(&dw, Some(&v)).unwrap();
        assert_eq!(c.num_words, 3);
        assert_eq!(c.vocab, vec!["a", "b", "c"]);
        assert_eq!(c.docs, vec![vec![(0, 1), (2, 3)], vec![(1, 5)]]);
        assert_eq!(c.num_tokens(), 9);
    }

    fn uci_err(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let dw = write(dir.path(), "docword.txt", text);
        read_uci(&dw, None).unwrap_err().to_string()
    }

    #[test]
    fn uci_errors_name_file_line_reason() {
        let e = uci_err("2\n3\n1\n1 4 1\n");
        assert!(
            e.contains("docword.txt:4:") && e.contains("wordID 4 out of range"),
            "{e}"
        );
        let e = uci_err("2\n3\n1\n3 1 1\n");
        assert!(e.contains(":4:") && e.contains("docID 3"), "{e}");
        let e = uci_err("2\nthree\n1\n");
        assert!(
            e.contains(":2:") && e.contains("not a non-negative integer") && !e.contains("three"),
            "{e}"
        );
        let e = uci_err("2\n3\n1\n1 1\n");
        assert!(e.contains(":4:") && e.contains("found 2 fields"), "{e}");
        let e = uci_err("2\n3\n1\n1 1 0\n");
        assert!(e.contains(":4:") && e.contains("count 0"), "{e}");
        let e = uci_err("2\n3\n2\n1 1 1\n");
        assert!(e.contains("header says 2 entries, file has 1"), "{e}");
        let e = uci_err("2\n");
        assert!(e.contains(":2:") && e.contains("missing header"), "{e}");
    }

    #[test]
    fn uci_vocab_size_must_match() {
        let dir = tempfile::tempdir().unwrap();
        let dw = write(dir.path(), "dw", "1\n3\n1\n1 1 1\n");
        let v = write(dir.path(), "vocab.txt", "a\nb\n");
        let e = read_uci(&dw, Some(&v)).unwrap_err().to_string();
        assert!(e.contains("vocab.txt") && e.contains("W = 3"), "{e}");
    }

    #[test]
    fn ldac_reads_and_reports_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "c.ldac", "2 0:1 4:2\n1 2:3\n");
        let c = read_ldac(&p, None).unwrap();
        assert_eq!(c.num_words, 5);
        assert_eq!(c.docs, vec![vec![(0, 1), (4, 2)], vec![(2, 3)]]);

        let bad = |text: &str| {
            let p = write(dir.path(), "bad.ldac", text);
            read_ldac(&p, None).unwrap_err().to_string()
        };
        let e = bad("2 0:1 4:2\n2 1:1\n");
        assert!(e.contains("bad.ldac:2:") && e.contains("N = 2"), "{e}");
        let e = bad("1 0-1\n");
        assert!(e.contains(":1:") && e.contains("id:count"), "{e}");
        let e = bad("1 x:1\n");
        assert!(e.contains(":1:") && e.contains("word id is not"), "{e}");
        let e = bad("1 3:0\n");
        assert!(e.contains(":1:") && e.contains("count 0"), "{e}");
        let v = write(dir.path(), "v", "a\nb\n");
        let p = write(dir.path(), "c2.ldac", "1 0:1\n1 2:1\n");
        let e = read_ldac(&p, Some(&v)).unwrap_err().to_string();
        assert!(e.contains("c2.ldac:2:") && e.contains("word id 2"), "{e}");
    }

    #[test]
    fn labels_csv_by_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "l.csv", "doc,spam\n1,0\n2,1\n");
        assert_eq!(read_labels_csv(&p, "spam").unwrap(), vec![0, 1]);
        let e = read_labels_csv(&p, "ham").unwrap_err().to_string();
        assert!(
            e.contains("l.csv:1:") && e.contains("no column `ham`"),
            "{e}"
        );
        let p = write(dir.path(), "l2.csv", "doc,spam\n1,0\n2,yes\n");
        let e = read_labels_csv(&p, "spam").unwrap_err().to_string();
        assert!(
            e.contains("l2.csv:3:") && e.contains("label") && !e.contains("yes"),
            "{e}"
        );
    }
}
