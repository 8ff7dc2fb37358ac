//! # petuum-client
//!
//! The client side of petuum. Today it validates job specs exactly as the
//! server does (design.md §6: a spec is checked by the client before
//! submission and by the server again); the gRPC job API (`submit`,
//! `status`, `watch`, `cancel`, `resume`, `list`) arrives with the cluster.

use petuum_core::spec::{JobSpec, SpecError};
use std::path::Path;

/// Why the client refused to go on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// Reads a job spec, resolves its paths and validates it completely
/// (fields, data files, algorithm and hyperparameters).
pub fn load_job(path: &Path) -> Result<JobSpec, ClientError> {
    let spec = JobSpec::from_file(path)?;
    petuum_algorithms::validate(&spec)?;
    Ok(spec)
}
