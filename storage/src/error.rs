//! Errors of the storage layer. Every variant names what it was working on
//! (shard or Raft group, key) so a corrupt value can be found on disk.

use petuum_core::types::{Clock, JobId, ShardId};
use petuum_core::TableError;

/// A storage error. Converted into openraft's `StorageError` at the trait
/// boundary (see [`StorageError::into_raft`]).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// RocksDB refused an operation.
    #[error("rocksdb {op} failed (group {group}, key {key}): {source}")]
    Rocks {
        op: &'static str,
        group: u64,
        key: String,
        #[source]
        source: rocksdb::Error,
    },
    /// A stored or received value failed its checksum or did not parse.
    #[error("corrupt {what} (shard {shard}, key {key}): {reason}")]
    Corrupt {
        what: &'static str,
        shard: ShardId,
        key: String,
        reason: String,
    },
    /// A value was written by a format version this build cannot read.
    #[error("{what} (shard {shard}, key {key}) has format version {found}, this build reads {supported}")]
    UnsupportedVersion {
        what: &'static str,
        shard: ShardId,
        key: String,
        found: u16,
        supported: u16,
    },
    /// Encoding a value failed (should not happen for well-formed state).
    #[error("cannot encode {what} (shard {shard}): {reason}")]
    Encode {
        what: &'static str,
        shard: ShardId,
        reason: String,
    },
    /// A snapshot or checkpoint is for another shard than the one restoring it.
    #[error("{what} belongs to shard {found}, not shard {shard}")]
    WrongShard {
        what: &'static str,
        shard: ShardId,
        found: ShardId,
    },
    /// Rebuilding a shard from an image failed in the table layer.
    #[error("shard {shard}: restoring {what} failed: {source}")]
    Restore {
        what: &'static str,
        shard: ShardId,
        #[source]
        source: TableError,
    },
    /// A checkpoint that was asked for is not stored.
    #[error("no checkpoint of job {job} at clock {clock} for shard {shard}")]
    NoCheckpoint {
        job: JobId,
        clock: Clock,
        shard: ShardId,
    },
    /// openraft asked for something Raft never does to a correct log (a
    /// commit index that goes back): refused, rather than stored or applied.
    #[error("Raft invariant broken in group {group}: {reason}")]
    Invariant { group: u64, reason: String },
    /// The configuration is unusable.
    #[error("invalid storage config: {0}")]
    Config(String),
    /// A file-system operation outside RocksDB failed.
    #[error("io error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The openraft storage error type for petuum's node ids.
pub type RaftStorageError = openraft::StorageError<u64>;

impl StorageError {
    /// Converts into openraft's error, keeping the message and source chain.
    pub fn into_raft(self, verb: openraft::ErrorVerb) -> RaftStorageError {
        let subject = match &self {
            StorageError::Corrupt { what, .. } if what.contains("snapshot") => {
                openraft::ErrorSubject::Snapshot(None)
            }
            StorageError::Corrupt { what, .. } if what.contains("log") => {
                openraft::ErrorSubject::Logs
            }
            _ => openraft::ErrorSubject::Store,
        };
        openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&self)).into()
    }
}

/// Shorthand result type.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
