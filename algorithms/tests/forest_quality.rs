//! Random forest accuracy on real data against scikit-learn.
//!
//! References (`python3 bench/reference/sklearn_refs.py rf_satimage
//! rf_shuttle rf_dna rf_digits`, scikit-learn 1.9.1,
//! `RandomForestClassifier(50 trees, max_depth=16, sqrt features)`, same
//! split, seeds 0–2): satimage 0.9207, 0.9215, 0.9231 (mean 0.9218);
//! shuttle 0.9997, 0.9999, 0.9999 (mean 0.9998); dna 0.9498, 0.9419, 0.9435
//! (mean 0.9451); digits 0.9805, 0.9833, 0.9805 (mean 0.9814).

mod common;
use common::{metric, run_spec};

/// 50 trees of depth 16 (the references' settings) with more `[params]`.
fn forest(file: &str, params: &str) -> f64 {
    forest_spec(
        file,
        "",
        &format!("num_trees = 50\nmax_depth = 16\n{params}"),
    )
}

/// Mean test accuracy of seeds 1-3 with exactly these `[params]`.
fn mean_of_seeds(file: &str, params: &str) -> f64 {
    (1..=3)
        .map(|seed| forest_spec(file, &format!("seed = {seed}"), params))
        .sum::<f64>()
        / 3.0
}

/// A forest job on `file` with exactly these `[run]` extras and `[params]`.
fn forest_spec(file: &str, run: &str, params: &str) -> f64 {
    let file = if file.contains('/') {
        file.to_string()
    } else {
        format!("classification/{file}")
    };
    let out = run_spec(&format!(
        "name = \"t\"\nalgorithm = \"random_forest\"\n[data]\nformat = \"csv\"\ntrain = \"{{data}}/{file}\"\ntest_fraction = 0.2\n[run]\nworkers = 2\nclocks = 5\n{run}\n[model]\npath = \"{{model}}\"\n[params]\n{params}\n"
    ));
    // The objective is the trees' out-of-bag error: a probability.
    assert!(
        (0.0..1.0).contains(&out.objective),
        "oob error {}",
        out.objective
    );
    metric(&out, "test_accuracy")
}

#[test]
fn satimage_within_a_point_of_sklearn() {
    let acc = forest("satimage.csv", "");
    assert!(acc >= 0.9218 - 0.01, "test accuracy {acc}, sklearn 0.9218");
}

#[test]
fn shuttle_within_a_point_of_sklearn() {
    let acc = forest("shuttle.csv", "");
    assert!(acc >= 0.9998 - 0.01, "test accuracy {acc}, sklearn 0.9998");
}

#[test]
fn dna_and_digits_within_a_point_of_sklearn() {
    // Sets the forest was not developed on: 180 binary features (most
    // constant within a deep node) and 8x8 images with blank borders. A
    // forest of 50 trees moves by a point between seeds (petuum seeds 1-4
    // and the default: dna 0.9403-0.9513, digits 0.9694-0.9861), so, like
    // the reference, the mean of three seeds is compared.
    for (file, sklearn) in [("dna.csv", 0.9451), ("digits_8x8/digits.csv", 0.9814)] {
        let mean = mean_of_seeds(file, "num_trees = 50\nmax_depth = 16");
        assert!(
            mean >= sklearn - 0.01,
            "{file}: mean test accuracy {mean}, sklearn {sklearn}"
        );
    }
}

#[test]
fn partitioned_forest_still_learns_satimage() {
    // Each tree sees half the data: about 2 points below the full bootstrap
    // (0.9005 when this test was written).
    let acc = forest("satimage.csv", "partition = true");
    assert!(acc >= 0.88, "test accuracy {acc}");
}

#[test]
fn default_settings_match_sklearn_defaults_on_untuned_sets() {
    // No `[params]` at all against `RandomForestClassifier()` with its
    // defaults (100 trees, grown until pure, floor(sqrt(features)) per
    // split), on sets the forest was never developed on. scikit-learn
    // 1.9.1, same split, n_jobs=2, random_state 0-4
    // (`RandomForestClassifier(random_state=s).fit(Xtr, ytr).score(Xte,
    // yte)` on `bench/reference/sklearn_refs.py`'s `split`): sonar 0.8293 0.9024 0.9268 0.8780 0.8780
    // (mean 0.8829); ionosphere 0.9286 0.8857 0.8857 0.9143 0.9143 (mean
    // 0.9057); breast_cancer_wdbc 0.9823 0.9823 0.9646 0.9735 0.9823 (mean
    // 0.9770). Test sets of 35-114 rows: one row is 1-3 points, so the
    // mean of three seeds is compared (petuum seeds 1-5 when written:
    // sonar mean 0.9171, ionosphere 0.9114, wdbc 0.9717).
    for (file, sklearn) in [
        ("sonar.csv", 0.8829),
        ("ionosphere.csv", 0.9057),
        ("breast_cancer_wdbc.csv", 0.9770),
    ] {
        let mean = mean_of_seeds(file, "");
        assert!(
            mean >= sklearn - 0.01,
            "{file}: mean test accuracy {mean} with default settings, sklearn {sklearn}"
        );
    }
}
