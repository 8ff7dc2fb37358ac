//! # petuum-proto
//!
//! The wire protocol of petuum: tonic services generated from
//! `petuum.proto`, and the version every node-to-node message
//! carries. docs/cluster.md describes the protocol.

#![allow(clippy::derive_partial_eq_without_eq)]

/// Protobuf types and gRPC stubs generated from `petuum.proto` (by
/// `cargo run --manifest-path proto/gen/Cargo.toml`; checked in so that
/// building petuum needs neither protoc nor prost-build).
#[allow(clippy::all)]
pub mod v1 {
    include!("petuum.v1.rs");
}

/// The node-to-node protocol version. A node refuses messages of any other
/// version with an error naming both. Version 2: job-scoped shard commands
/// and reads name the job's run (epoch). Version 3: refusals are typed
/// (`DataError::Refused` carries a `Refusal`) and a `Load` carries many rows.
/// Version 5: `ForgetJob` (deleting an ended job on its shards).
/// Version 6: elastic membership (joins, placement recorded per group,
/// group moves); a joining node's first message names cluster 0.
/// Version 7: per-clock job values in the hosts' progress reports.
/// Version 8: `ShardRequest::Batches` (one log entry for a shard's batches
/// of a push: a node's workers, queued clocks), which nodes of version 7
/// cannot decode; version 8 reads logs of version 7.
/// Version 9: a job's tables live on its span (`run.shards` of the
/// cluster's shards), so nodes of version 8 would place its rows and
/// clocks elsewhere; version 9 reads logs and metadata of version 8.
/// Version 10: `MetaAt` (a forwarded metadata command answered with its
/// log index, so the forwarding node answers once its own replica applied
/// it); version 10 reads logs and metadata of version 9.
/// Version 11: dense rows travel and are stored as one little-endian byte
/// string (`Row` variant `DenseLe`), which nodes of version 10 cannot
/// decode; version 11 reads logs, snapshots and checkpoints of version 10.
/// Version 12: a deterministic job's shard sums each clock's deltas in
/// worker order before adding them to its rows (`ShardState::apply_clock`),
/// and a node sums its leading workers' deltas before they leave it, so a
/// replica of version 11 would hold other float bits for the same log;
/// version 12 reads logs, snapshots and checkpoints of version 11 (a
/// deterministic job running across the upgrade is exact again from its
/// next resume).
/// Version 13: `MetaCommand::SubmitOnce` (a submission under its client's
/// id, answered with the job it made if sent again), which nodes of
/// version 12 cannot decode; version 13 reads logs and snapshots of
/// version 12 (the ids ride after the replica in a snapshot).
/// Version 14: `MetaCommand::JobOnce` (a cancel, resume or delete under
/// its client's id, taking effect once however often it is sent) and the
/// linearizable metadata reads (`DataRequest::MetaReadIndex`,
/// `MetaLinear`), which nodes of version 13 cannot decode; version 14 reads
/// logs and snapshots of version 13.
pub const PROTOCOL_VERSION: u32 = 14;
