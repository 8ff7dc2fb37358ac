//! Distance metric learning: k-NN accuracy in the learned space against
//! plain Euclidean k-NN on the raw features, same split, same k = 5.
//!
//! Euclidean 5-NN on this split (scikit-learn `KNeighborsClassifier(5)`
//! agrees on digits: 0.9861): digits 0.9861, ionosphere 0.8143, sonar 0.7805.
//! Runs are deterministic (BSP, fixed seeds) so the figures reproduce.

mod common;
use common::{metric, run_spec};

fn dml(file: &str, seed: u64) -> (f64, f64, f64) {
    let out = run_spec(&format!(
        "name = \"t\"\nalgorithm = \"dml\"\n[data]\nformat = \"csv\"\ntrain = \"{{data}}/{file}\"\ntest_fraction = 0.2\n\
         [run]\nworkers = 2\nconsistency = \"bsp\"\ndeterministic = true\nseed = {seed}\nclocks = 200\n\
         [model]\npath = \"{{model}}\"\n\
         [params]\nlearning_rate = 0.01\ndecay = 0.01\nknn = 5\npull = 0.25\ntargets = 3\nimpostors = 20\n"
    ));
    (
        metric(&out, "test_knn_accuracy"),
        metric(&out, "test_euclidean_knn_accuracy"),
        out.objective,
    )
}

#[test]
fn learned_metric_beats_euclidean_knn_on_ionosphere_and_sonar() {
    for file in ["classification/ionosphere.csv", "classification/sonar.csv"] {
        let (learned, euclid, _) = dml(file, 1);
        assert!(
            learned > euclid,
            "{file}: learned-space 5-NN {learned} vs Euclidean {euclid}"
        );
    }
}

#[test]
fn learned_metric_keeps_euclidean_knn_quality_on_digits() {
    // Digits is near the ceiling for 5-NN (5 errors in 359): the learned
    // metric ties Euclidean 5-NN (0.9833-0.9861 over seeds and schedules)
    // rather than beating it. Allow one test sample below.
    for seed in [1, 2] {
        let (learned, euclid, objective) = dml("digits_8x8/digits.csv", seed);
        assert!((euclid - 0.9861).abs() < 1e-3, "baseline {euclid}");
        assert!(
            learned >= euclid - 1.0 / 359.0,
            "seed {seed}: learned-space 5-NN {learned}, Euclidean {euclid}"
        );
        assert!(
            objective < 0.2,
            "seed {seed}: triplet loss did not fall: {objective}"
        );
    }
}
