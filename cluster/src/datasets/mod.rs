//! The dataset store (docs/jobs.md, "Data that reaches every node").
//!
//! A dataset is a file a job reads, kept by the cluster itself so the
//! nodes need no shared file system:
//! - **content-addressed**: named by the sha256 of its bytes, so uploading
//!   the same file twice stores it once and a job names exactly the bytes
//!   it was submitted with (`data.train = "sha256:<hex>"`);
//! - **chunked**: cut into [`CHUNK`]-byte chunks, each with its own sha256;
//!   the list of chunk hashes is itself hashed, and that hash is all the
//!   metadata group keeps besides the name, the size and the holders;
//! - **replicated**: kept whole on `replicas` nodes (the holders). A node
//!   that runs a job on a dataset it lacks fetches the chunks from the
//!   holders, verifying each, and becomes a holder itself;
//! - **verified on read**: a chunk served to a peer or read for a job is
//!   checked against its hash first; a corrupt chunk is fetched again from
//!   another holder and written in place.
//!
//! The records live in the metadata group ([`DatasetRecord`], changed by
//! [`DatasetCommand`]s); the bytes live under each holder's
//! `DATA_DIR/datasets/<sha256>/` ([`store::Store`]); moving them between
//! nodes is [`fetch`].

pub mod fetch;
pub mod place;
pub mod store;

use crate::jobs::JobMap;
use crate::wire::Refusal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The size of a chunk (the last one of a file may be shorter).
pub const CHUNK: u64 = 1 << 20;

/// How a job spec names a dataset of the store: `sha256:<64 hex digits>`.
pub const REF_PREFIX: &str = "sha256:";

/// The datasets by sha256 (hex).
pub type DatasetMap = BTreeMap<String, DatasetRecord>;

/// A dataset as the metadata group records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRecord {
    /// sha256 of the content, lowercase hex.
    pub sha256: String,
    /// The file name it was first uploaded (or fetched) under: the name
    /// it has on every node, so errors name the file the user knows.
    pub name: String,
    pub size: u64,
    pub chunk_size: u64,
    /// sha256 of the concatenated 32-byte BLAKE3 chunk hashes (hex):
    /// the chunk list a holder hands out is checked against it.
    pub chunks_sha256: String,
    /// "upload", or the URL it was fetched from.
    pub source: String,
    /// Nodes holding a complete, verified copy.
    pub holders: Vec<u64>,
    /// Sealed: enough holders have it and jobs may use it. An unsealed
    /// (staged) record belongs to an upload in progress.
    pub ready: bool,
    pub created_ms: u64,
}

impl DatasetRecord {
    /// Checks the fields that name files and size buffers: a record that
    /// arrives in a peer's request is used only when these hold.
    pub fn check(&self) -> Result<(), String> {
        if !is_sha256_hex(&self.sha256) || !is_sha256_hex(&self.chunks_sha256) {
            return Err("a dataset record with a malformed sha256".into());
        }
        if store::safe_name(&self.name) != self.name {
            return Err(format!(
                "a dataset record with the file name `{}`",
                self.name.chars().take(80).collect::<String>()
            ));
        }
        if !(1..=64 << 20).contains(&self.chunk_size) {
            return Err(format!(
                "a dataset record with chunks of {} bytes",
                self.chunk_size
            ));
        }
        Ok(())
    }

    /// The number of chunks.
    pub fn chunks(&self) -> u64 {
        self.size.div_ceil(self.chunk_size.max(1))
    }

    /// The byte range of chunk `i`.
    pub fn chunk_range(&self, i: u64) -> (u64, u64) {
        let start = i * self.chunk_size;
        (start, (start + self.chunk_size).min(self.size))
    }
}

/// A change to the dataset records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DatasetCommand {
    /// A node holds a complete copy of a new dataset (an upload or a URL
    /// fetched): records it unsealed with that node as its holder. For a
    /// dataset already recorded (the same bytes again) it adds the node as
    /// a holder and changes nothing else.
    Stage { record: DatasetRecord },
    /// `node` holds a complete, verified copy.
    Hold { sha256: String, node: u64 },
    /// Enough holders: jobs may use it.
    Seal { sha256: String },
    /// Forgets a dataset (its files go from every node at their next
    /// sweep). Refused while a job that has not ended names it. With
    /// `only_staged`, only an unsealed record is removed (an abandoned
    /// upload).
    Remove { sha256: String, only_staged: bool },
}

/// Whether `s` is 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The sha256 a data path names, when it names one (`sha256:<hex>`).
pub fn dataset_ref(path: &str) -> Option<&str> {
    path.strip_prefix(REF_PREFIX)
}

/// The datasets a job spec (its JSON text) names.
pub fn refs_in(spec: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = spec;
    while let Some(i) = rest.find(REF_PREFIX) {
        let after = &rest[i + REF_PREFIX.len()..];
        if let Some(hex) = after.get(..64).filter(|h| is_sha256_hex(h)) {
            out.push(hex);
        }
        rest = after;
    }
    out
}

/// Jobs that have not ended and name `sha256`.
pub fn users(jobs: &JobMap, sha256: &str) -> Vec<u64> {
    jobs.values()
        .filter(|r| !r.state.is_terminal() && refs_in(&r.spec).contains(&sha256))
        .map(|r| r.id)
        .collect()
}

/// Checks that every dataset a job spec names is recorded and sealed (a
/// job is refused at submission rather than failing on every node).
pub fn check_refs(datasets: &DatasetMap, spec: &str) -> Result<(), Refusal> {
    for sha in refs_in(spec) {
        match datasets.get(sha) {
            Some(d) if d.ready => {}
            Some(_) => {
                return Err(Refusal::Invalid(format!(
                    "dataset sha256:{sha} is still being uploaded"
                )))
            }
            None => {
                return Err(Refusal::Invalid(format!(
                    "no dataset sha256:{sha} in this cluster (upload it with `petuum-client data put`, or submit with petuum-client, which uploads local files)"
                )))
            }
        }
    }
    Ok(())
}

/// Applies a command; refusals leave the records unchanged.
pub fn apply(datasets: &mut DatasetMap, jobs: &JobMap, cmd: DatasetCommand) -> Result<(), Refusal> {
    match cmd {
        DatasetCommand::Stage { record } => {
            record.check().map_err(Refusal::Invalid)?;
            if record.holders.len() != 1 {
                return Err(Refusal::Invalid(format!(
                    "a staged dataset has one holder (got {:?})",
                    record.holders
                )));
            }
            match datasets.get_mut(&record.sha256) {
                Some(d) => {
                    if d.size != record.size || d.chunks_sha256 != record.chunks_sha256 {
                        return Err(Refusal::Invalid(format!(
                            "dataset sha256:{} is recorded with other chunks or size",
                            record.sha256
                        )));
                    }
                    let node = record.holders[0];
                    if !d.holders.contains(&node) {
                        d.holders.push(node);
                    }
                }
                None => {
                    let mut r = record;
                    r.ready = false;
                    datasets.insert(r.sha256.clone(), r);
                }
            }
            Ok(())
        }
        DatasetCommand::Hold { sha256, node } => {
            let d = datasets
                .get_mut(&sha256)
                .ok_or_else(|| Refusal::Invalid(format!("no dataset sha256:{sha256}")))?;
            if !d.holders.contains(&node) {
                d.holders.push(node);
            }
            Ok(())
        }
        DatasetCommand::Seal { sha256 } => {
            let d = datasets
                .get_mut(&sha256)
                .ok_or_else(|| Refusal::Invalid(format!("no dataset sha256:{sha256}")))?;
            d.ready = true;
            Ok(())
        }
        DatasetCommand::Remove {
            sha256,
            only_staged,
        } => {
            let Some(d) = datasets.get(&sha256) else {
                return Err(Refusal::Invalid(format!("no dataset sha256:{sha256}")));
            };
            if only_staged && d.ready {
                return Err(Refusal::Busy(format!(
                    "dataset sha256:{sha256} was sealed meanwhile"
                )));
            }
            let using = users(jobs, &sha256);
            if !using.is_empty() {
                return Err(Refusal::Busy(format!(
                    "dataset sha256:{sha256} ({}) is used by job(s) {using:?}, which have not ended; cancel or wait for them first",
                    d.name
                )));
            }
            datasets.remove(&sha256);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(sha: &str, node: u64) -> DatasetRecord {
        DatasetRecord {
            sha256: sha.into(),
            name: "a.csv".into(),
            size: 3 * CHUNK + 5,
            chunk_size: CHUNK,
            chunks_sha256: "c".repeat(64),
            source: "upload".into(),
            holders: vec![node],
            ready: true,
            created_ms: 1,
        }
    }

    #[test]
    fn refs_are_found_in_a_spec_text() {
        let a = "a".repeat(64);
        let b = "0123456789abcdef".repeat(4);
        let spec = format!(
            r#"{{"train":"sha256:{a}","test":"sha256:{b}","x":"sha256:zz","y":"sha256:{}"}}"#,
            &a[..10]
        );
        assert_eq!(refs_in(&spec), vec![a.as_str(), b.as_str()]);
        assert!(refs_in("no refs").is_empty());
    }

    #[test]
    fn staging_is_unsealed_and_a_second_stage_adds_a_holder() {
        let sha = "a".repeat(64);
        let mut d = DatasetMap::new();
        let jobs = JobMap::new();
        apply(
            &mut d,
            &jobs,
            DatasetCommand::Stage {
                record: rec(&sha, 1),
            },
        )
        .unwrap();
        assert!(!d[&sha].ready, "a stage is never sealed");
        assert!(check_refs(&d, &format!("sha256:{sha}")).is_err());
        apply(
            &mut d,
            &jobs,
            DatasetCommand::Stage {
                record: rec(&sha, 2),
            },
        )
        .unwrap();
        apply(
            &mut d,
            &jobs,
            DatasetCommand::Hold {
                sha256: sha.clone(),
                node: 2,
            },
        )
        .unwrap();
        assert_eq!(d[&sha].holders, vec![1, 2]);
        let mut other = rec(&sha, 3);
        other.size += 1;
        assert!(apply(&mut d, &jobs, DatasetCommand::Stage { record: other }).is_err());
        apply(
            &mut d,
            &jobs,
            DatasetCommand::Seal {
                sha256: sha.clone(),
            },
        )
        .unwrap();
        check_refs(&d, &format!("x sha256:{sha}")).unwrap();
        assert!(apply(
            &mut d,
            &jobs,
            DatasetCommand::Remove {
                sha256: sha.clone(),
                only_staged: true
            }
        )
        .is_err());
        apply(
            &mut d,
            &jobs,
            DatasetCommand::Remove {
                sha256: sha.clone(),
                only_staged: false,
            },
        )
        .unwrap();
        assert!(d.is_empty());
        assert!(check_refs(&d, &format!("sha256:{sha}")).is_err());
    }

    #[test]
    fn records_naming_other_paths_or_huge_chunks_are_refused() {
        let good = rec(&"a".repeat(64), 1);
        good.check().unwrap();
        for bad in [
            DatasetRecord {
                sha256: "../../etc".into(),
                ..good.clone()
            },
            DatasetRecord {
                name: "../x".into(),
                ..good.clone()
            },
            DatasetRecord {
                chunk_size: 1 << 40,
                ..good.clone()
            },
            DatasetRecord {
                chunk_size: 0,
                ..good.clone()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chunk_ranges_cover_the_file() {
        let r = rec(&"a".repeat(64), 1);
        assert_eq!(r.chunks(), 4);
        assert_eq!(r.chunk_range(3), (3 * CHUNK, 3 * CHUNK + 5));
    }
}
