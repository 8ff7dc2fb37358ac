//! The classifiers with **no `[params]`** on data sets nobody tuned them
//! for, against scikit-learn's default pipeline (issue 18).
//!
//! Every case runs the same spec: 2 workers, BSP, deterministic, seed 1,
//! `clocks = 300` as an upper bound (the convergence rule stops earlier),
//! `test_fraction = 0.2` (every 5th row is a test row), and nothing in
//! `[params]`. The bar is scikit-learn's test accuracy less 1 point.
//!
//! Reference figures: scikit-learn 1.9.1, same files, same split,
//! `python3 bench/reference/sklearn_refs.py defaults` (the `defaults` case
//! prints every figure below). Pipelines: dense data
//! `make_pipeline(StandardScaler(), LogisticRegression())` and
//! `make_pipeline(StandardScaler(), LinearSVC())`; sparse (libsvm) data
//! the same with `MaxAbsScaler()`, the scaler scikit-learn's user guide
//! recommends for sparse data. `LogisticRegression` is multinomial on
//! several classes. Where lbfgs stopped at its default `max_iter=100`
//! without converging, the figure with `max_iter=5000` is used.
//!
//! `ames`: the 33 numeric columns of `regression/ames_raw.csv` but
//! `Sale_Price`, label "Sale_Price above its median (160,000)"; raw values
//! from ~1 (bathrooms) to 215,245 (lot area), with the latitude and
//! longitude in between; written by the test into a temp dir
//! (`ames_binary`; the same derivation in the reference script).

mod common;
use common::{datasets, metric, run_spec};
use std::fmt::Write as _;
use std::path::Path;

/// One data set: its `[data]` block and the scikit-learn figures.
struct Case {
    name: &'static str,
    data: String,
    /// `LogisticRegression` (binary or multinomial) test accuracy.
    sk_lr: f64,
    /// `LinearSVC` test accuracy (binary sets).
    sk_svc: Option<f64>,
}

fn data_block(path: &Path) -> String {
    let fmt = if path.extension().is_some_and(|e| e == "csv") {
        "csv"
    } else {
        "libsvm"
    };
    format!(
        "format = \"{fmt}\"\ntrain = \"{}\"\ntest_fraction = 0.2",
        path.display()
    )
}

/// The binary Ames set (see the module docs) written into `dir`.
fn ames_binary(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(datasets().join("regression/ames_raw.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let price = header.iter().position(|h| *h == "Sale_Price").unwrap();
    let numeric: Vec<usize> = (0..header.len())
        .filter(|&j| j != price && rows.iter().all(|r| r[j].parse::<f64>().is_ok()))
        .collect();
    assert_eq!(numeric.len(), 33, "numeric columns of ames_raw.csv");
    let mut prices: Vec<f64> = rows.iter().map(|r| r[price].parse().unwrap()).collect();
    prices.sort_by(f64::total_cmp);
    let n = prices.len();
    let median = if n % 2 == 1 {
        prices[n / 2]
    } else {
        (prices[n / 2 - 1] + prices[n / 2]) / 2.0
    };
    let mut out = String::new();
    for &j in &numeric {
        write!(out, "{},", header[j]).unwrap();
    }
    out.push_str("label\n");
    for r in &rows {
        for &j in &numeric {
            write!(out, "{},", r[j]).unwrap();
        }
        let above = r[price].parse::<f64>().unwrap() > median;
        out.push_str(if above { "1\n" } else { "-1\n" });
    }
    let path = dir.join("ames_binary.csv");
    std::fs::write(&path, out).unwrap();
    path
}

fn binary_cases(tmp: &Path) -> Vec<Case> {
    let d = datasets();
    vec![
        Case {
            // 30 dense features up to 4,254 (areas), 456 train / 113 test rows.
            name: "breast_cancer_wdbc",
            data: data_block(&d.join("classification/breast_cancer_wdbc.csv")),
            sk_lr: 1.0000,
            sk_svc: Some(0.9912),
        },
        Case {
            name: "ames_binary",
            data: data_block(&ames_binary(tmp)),
            sk_lr: 0.9266,
            sk_svc: Some(0.9249),
        },
        Case {
            // Sparse tf-idf, 18,914 features, rows L2-normalised.
            name: "spamassassin",
            data: data_block(&d.join("spamassassin/spam.libsvm")),
            sk_lr: 0.9851,
            sk_svc: Some(0.9876),
        },
        Case {
            // Dense, already in [-1, 1]; 70 test rows (1 row = 1.4 points).
            name: "ionosphere",
            data: data_block(&d.join("classification/ionosphere.csv")),
            sk_lr: 0.8714,
            sk_svc: Some(0.8571),
        },
        Case {
            // libsvm (sparse storage), LIBSVM's [-1, 1] scaling; 54 test rows.
            name: "heart_scale",
            data: data_block(&d.join("classification/heart_scale.libsvm")),
            sk_lr: 0.8148,
            sk_svc: Some(0.8148),
        },
    ]
}

fn multiclass_cases(tmp: &Path) -> Vec<Case> {
    let d = datasets();
    let mut cases: Vec<Case> = binary_cases(tmp)
        .into_iter()
        // multiclass_lr trains on dense rows: the 18,914-column spam set
        // would be 366 MB; the binary classifiers cover it.
        .filter(|c| c.name == "breast_cancer_wdbc" || c.name == "ames_binary")
        .collect();
    cases.extend([
        Case {
            // 6 classes, 36 dense features 0-157.
            name: "satimage",
            data: data_block(&d.join("classification/satimage.csv")),
            sk_lr: 0.8609,
            sk_svc: None,
        },
        Case {
            // 3 classes, 180 sparse binary features (MaxAbsScaler pipeline).
            name: "dna",
            data: data_block(&d.join("classification/dna.libsvm")),
            sk_lr: 0.9372,
            sk_svc: None,
        },
        Case {
            // 7 classes (78.7% one class), 9 dense features up to 26,688;
            // 46,400 train / 11,600 test rows.
            name: "shuttle",
            data: data_block(&d.join("classification/shuttle.csv")),
            sk_lr: 0.9682,
            sk_svc: None,
        },
        Case {
            // 10 classes, 64 pixel features 0-16.
            name: "digits",
            data: data_block(&d.join("digits_8x8/digits.csv")),
            sk_lr: 0.9638,
            sk_svc: None,
        },
    ]);
    cases
}

fn spec(algorithm: &str, data: &str) -> String {
    format!(
        "name = \"defaults\"\nalgorithm = \"{algorithm}\"\n[data]\n{data}\n[run]\nworkers = 2\n{}\nclocks = 300\n[model]\npath = \"{{model}}\"\n[params]\n{}\n", std::env::var("RUN").unwrap_or("consistency = \"bsp\"\ndeterministic = true\nseed = 1\n".into()), std::env::var("EXTRA").unwrap_or_default().replace(";", "\n")
    )
}

/// Runs `algorithm` with default parameters on every case and checks each
/// against its reference; prints a table of everything first.
fn check(algorithm: &str, cases: &[(&'static str, String, f64)]) {
    let mut failures = Vec::new();
    for (name, data, reference) in cases {
        let started = std::time::Instant::now();
        let out = run_spec(&spec(algorithm, data));
        let acc = metric(&out, "test_accuracy");
        println!(
            "{algorithm} {name}: test accuracy {acc:.4} (scikit-learn {reference:.4}), objective {:.5}, {} clocks, converged {}, below majority {}, {:.2}s",
            out.objective,
            out.clocks,
            metric(&out, "converged"),
            metric(&out, "below_majority"),
            started.elapsed().as_secs_f64()
        );
        assert_eq!(metric(&out, "clocks_run") as u64, out.clocks);
        if acc < reference - 0.01 {
            failures.push(format!("{name}: {acc:.4} < {reference:.4} - 0.01"));
        }
        if metric(&out, "below_majority") != 0.0 {
            failures.push(format!("{name}: no better than the majority class"));
        }
    }
    assert!(failures.is_empty(), "{algorithm}: {failures:?}");
}

#[test]
fn logistic_regression_defaults_match_sklearn() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<_> = binary_cases(tmp.path())
        .into_iter()
        .map(|c| (c.name, c.data, c.sk_lr))
        .collect();
    check("logistic_regression", &cases);
}

#[test]
fn svm_defaults_match_linear_svc() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<_> = binary_cases(tmp.path())
        .into_iter()
        .map(|c| (c.name, c.data, c.sk_svc.unwrap()))
        .collect();
    check("svm", &cases);
}

#[test]
fn multiclass_lr_defaults_match_sklearn() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<_> = multiclass_cases(tmp.path())
        .into_iter()
        .map(|c| (c.name, c.data, c.sk_lr))
        .collect();
    check("multiclass_lr", &cases);
}
