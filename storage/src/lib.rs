//! # petuum-storage
//!
//! Persistence of petuum's shards (docs/design.md §2, §3; layout and formats in
//! docs/storage.md):
//!
//! - [`NodeDb`]: the node's one RocksDB instance, column families per
//!   purpose, shared by all Raft groups on the node.
//! - [`RaftLogStore`]: openraft's `RaftLogStorage` for one group (vote,
//!   entries, purge, truncate, committed id); an append is one synced
//!   `WriteBatch`.
//! - [`ShardStateMachine`]: openraft's `RaftStateMachine` for one shard:
//!   applies [`ShardRequest`]s (update batches and the commands around them)
//!   to a [`petuum_core::shard::ShardState`], keeps the state at each job's
//!   min clock, builds and installs checksummed snapshots.
//! - [`Tombstone`]: what a dropped replica had seen (its vote and last log
//!   id), so that a replica hosted afresh does not answer as if it had
//!   seen nothing.
//! - [`CheckpointStore`]: consistent checkpoints per `(job, clock)` and
//!   worker blobs, the newest N kept.

pub mod checkpoint;
pub mod codec;
pub mod db;
pub mod error;
pub mod image;
pub mod keys;
pub mod log_store;
pub mod metrics;
pub mod shard_data;
pub mod snapshot;
pub mod state_machine;
pub mod tombstone;
pub mod types;
pub mod workload;

pub use checkpoint::{CheckpointInfo, CheckpointStore};
pub use db::{NodeDb, StorageConfig};
pub use error::{RaftStorageError, StorageError};
pub use image::{JobImage, ShardImage};
pub use log_store::{LogEntry, RaftLogStore};
pub use metrics::StoreMetrics;
pub use shard_data::{EpochCheck, ShardData};
pub use state_machine::{Replica, ShardHandle, ShardStateMachine};
pub use tombstone::Tombstone;
pub use types::{Entry, LogId, ShardRequest, ShardResponse, TypeConfig};
