//! Sparse coding on digits against scikit-learn.
//!
//! Reference: `~/.cache/petuum/venv/bin/python bench/reference/nmf_refs.py
//! sc_digits` (scikit-learn 1.9.1): `MiniBatchDictionaryLearning(32,
//! alpha=1.6, random_state=seed)` fit on the training rows of
//! `digits_8x8/digits.csv` (pixels 0..16; row i is a test row iff
//! i % 5 == 4, petuum's `test_fraction = 0.2`), then `sparse_encode(X_test,
//! D, algorithm="lasso_cd", alpha=1.6)`; the objective per held-out sample
//! `½ ‖x − sD‖² + 1.6 ‖s‖₁`, averaged: 238.131663 for seed 0 (mean non-zeros
//! per code 19.911, atoms of norm 1).

mod common;
use common::{metric, run_spec_with_defaults};

const SKLEARN_HELDOUT: f64 = 238.131663;

#[test]
fn heldout_objective_within_2_percent_of_sklearn_and_atoms_bounded() {
    // `run.clocks` and the consistency left out: 200 clocks under BSP
    // (held-out objective 202.77 measured; 10 clocks under SSP(2), the
    // defaults until 2026-12-06, ended at 267.14, 12% above scikit-learn).
    let out = run_spec_with_defaults(
        "name = \"t\"\nalgorithm = \"sparse_coding\"\n[data]\nformat = \"csv\"\ntrain = \"{data}/digits_8x8/digits.csv\"\ntest_fraction = 0.2\n[run]\nworkers = 2\n[model]\npath = \"{model}\"\n[params]\nk = 32\nlambda = 1.6\nnorm_bound = 1.0\n",
    );
    let obj = metric(&out, "test_objective");
    let nnz = metric(&out, "test_mean_nonzeros");
    let norm = metric(&out, "max_atom_norm");
    eprintln!(
        "held-out objective {obj} (sklearn {SKLEARN_HELDOUT}), non-zeros {nnz}, max atom norm {norm}, train objective {}",
        metric(&out, "objective")
    );
    assert!(
        obj <= SKLEARN_HELDOUT * 1.02,
        "held-out objective {obj} vs sklearn's {SKLEARN_HELDOUT}"
    );
    // Atoms within the bound (stored as f32).
    assert!(norm <= 1.0 + 1e-6, "atom of norm {norm}");
    assert!(nnz > 0.0 && nnz < 32.0, "codes of {nnz} non-zeros");
}
