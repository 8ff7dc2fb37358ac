//! # petuum-cluster
//!
//! The replicated side of petuum (docs/design.md §2, docs/cluster.md):
//!
//! - [`ClusterNode`]: one node: a Raft group (openraft, storage from
//!   petuum-storage) per shard replica placed on it, plus the metadata
//!   group; [`server::serve`] puts it on the network (tonic).
//! - [`network`]: one HTTP/2 channel per peer, carrying every group's Raft
//!   messages and the table traffic in versioned envelopes.
//! - [`ClusterShards`]: the networked table backend, the same
//!   [`petuum_core::service::ShardService`] the embedded node implements,
//!   so algorithm code does not change between embedded and cluster mode.
//! - [`retry`]: the one retry policy (backoff with jitter, cap, deadline)
//!   of every loop that waits for a leader, a replica or the metadata group.
//! - [`auth`]: who may call what: peers by node certificate, clients by
//!   token or certificate, one interceptor for every service.
//! - [`liveness`]: the failure detectors' count of silence, in probe
//!   rounds so that the observer's own stalls do not count.
//! - [`wire::Refusal`]: why a request was refused, typed, so callers match
//!   on variants rather than on messages.

pub mod auth;
pub mod config;
pub mod datasets;
pub mod jobs;
pub mod liveness;
pub mod meta;
pub mod network;
pub mod node;
pub mod placement;
pub mod previews;
pub mod retry;
pub mod server;
pub mod shards;
pub mod wire;

pub use config::NodeConfig;
pub use node::{ClusterNode, NodeError};
pub use placement::Placement;
pub use shards::{ClusterShards, ConnectOptions};
