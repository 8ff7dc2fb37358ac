//! # petuum-algorithms
//!
//! Built-in algorithms over the Bosen table API of `petuum-core`, the data
//! readers they share and the model file format. Nothing here knows whether
//! it runs embedded or on a cluster: algorithms see only
//! [`petuum_core::WorkerCtx`].
//!
//! - [`registry`]: job spec → validated, data-loaded [`petuum_core::algorithm::Algorithm`].
//! - [`eval`]: held-out evaluation of a saved model.
//! - [`strads`]: scheduled model parallelism (rounds, schedulers), used by
//!   [`lasso`].

pub mod data;
pub mod dml;
pub mod dnn;
pub mod eval;
pub mod forest;
pub mod kmeans;
pub mod lasso;
pub mod lda;
pub mod limits;
pub mod linear;
pub mod medlda;
pub mod mf;
pub mod model;
pub mod nmf;
pub mod polish;
pub mod registry;
pub mod sgd;
pub mod softmax;
pub mod sparse_coding;
pub mod strads;

pub use registry::{apply_defaults, build, validate, BuildError, ALGORITHMS};
