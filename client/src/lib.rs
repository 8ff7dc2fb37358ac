//! # petuum-client
//!
//! The client side of petuum: validates job specs exactly as the server
//! does (design.md §6: a spec is checked by the client before submission
//! and by the server again), and asks a cluster node for the cluster's
//! state over gRPC ([`cluster_status`]). The job API (`submit`, `status`,
//! `watch`, `cancel`, `resume`, `list`) is not there yet.

use petuum_core::spec::{JobSpec, SpecError};
use std::path::Path;

/// Why the client refused to go on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("cannot reach {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("{endpoint} refused: {message}")]
    Refused { endpoint: String, message: String },
}

/// The status of a cluster as one node sees it (its nodes and the Raft
/// groups it hosts, with their leaders).
pub use petuum_proto::v1::StatusReply;

/// Asks the node at `endpoint` (`http://host:port`) for the cluster's
/// status, sending `token` as a bearer token when given.
pub async fn cluster_status(
    endpoint: &str,
    token: Option<&str>,
) -> Result<StatusReply, ClientError> {
    let unreachable = |reason: String| ClientError::Unreachable {
        endpoint: endpoint.to_string(),
        reason,
    };
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| unreachable(format!("bad endpoint: {e}")))?
        .connect_timeout(std::time::Duration::from_secs(3))
        .timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let mut client = petuum_proto::v1::cluster_client::ClusterClient::new(channel);
    let mut req = tonic::Request::new(petuum_proto::v1::StatusRequest {});
    if let Some(t) = token {
        let v = format!("Bearer {t}")
            .parse()
            .map_err(|_| unreachable("the token is not a valid header value".into()))?;
        req.metadata_mut().insert("authorization", v);
    }
    client
        .status(req)
        .await
        .map(|r| r.into_inner())
        .map_err(|s| ClientError::Refused {
            endpoint: endpoint.to_string(),
            message: s.message().to_string(),
        })
}

/// Reads a job spec, resolves its paths and validates it completely
/// (fields, data files, algorithm and hyperparameters).
pub fn load_job(path: &Path) -> Result<JobSpec, ClientError> {
    let spec = JobSpec::from_file(path)?;
    petuum_algorithms::validate(&spec)?;
    Ok(spec)
}
