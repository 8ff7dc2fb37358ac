//! Sparse coding (dictionary learning), Petuum's `sparsecoding` app:
//! minimise `Σᵢ ½ ‖xᵢ − sᵢ D‖² + λ ‖sᵢ‖₁` subject to `‖D_k‖₂ ≤ c`, the
//! dictionary `D` in a table and each worker's codes as its worker state.
//! It shares its engine with NMF: see [`crate::nmf`].

pub use crate::nmf::SparseCodingParams;

pub const NAME: &str = "sparse_coding";

pub use crate::nmf::{build_sparse_coding as build, validate_sparse_coding as validate};
