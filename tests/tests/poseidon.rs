//! Poseidon (issue 9, first part): a 784-256-10 MLP trained data-parallel
//! on MNIST through libtorch, 2 workers under SSP(1), embedded.
//!
//! Reference: the bar is 97.5% test accuracy for an MLP; PyTorch's
//! own MNIST MLP examples of this size reach 97.5–98% in a few epochs.
//! Here: 8 passes over each worker's half, 97.95% measured on 2026-11-25
//! (about 8 s on 2 cores).

use petuum_tests::{json_lines, run, run_until};
use std::path::Path;

#[test]
fn mnist_mlp_reaches_97_5_percent_and_evaluates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let job = root.join("examples/jobs/mnist-mlp.toml");
    let model = dir.path().join("mlp.safetensors");
    // The example, with the model written into the temp dir.
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace("../../data/", &format!("{}/data/", root.display()))
        .replace(
            "../../models/mnist-mlp.safetensors",
            &model.display().to_string(),
        );
    let spec = dir.path().join("mlp.toml");
    std::fs::write(&spec, text).unwrap();
    let out = run(
        "petuumd",
        &[
            "run",
            spec.to_str().unwrap(),
            "--json",
            "--data-dir",
            dir.path().join("d").to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    let done = lines.last().unwrap();
    assert_eq!(done["state"], "succeeded");
    let acc = done["test_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.975, "MLP test accuracy {acc} < 0.975");
    // The objective went down: first clock vs last.
    let first = lines[0]["objective"].as_f64().unwrap();
    let last = lines[lines.len() - 2]["objective"].as_f64().unwrap();
    assert!(last < first / 5.0, "cross-entropy {first} -> {last}");
    // The saved model evaluates without libtorch to the same accuracy.
    let d = root.join("data/mnist");
    let out = run(
        "petuumd",
        &[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--data",
            d.join("t10k-images-idx3-ubyte").to_str().unwrap(),
            "--labels",
            d.join("t10k-labels-idx1-ubyte").to_str().unwrap(),
            "--json",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{out:?}");
    let v = &json_lines(&out)[0];
    assert_eq!(v["accuracy"].as_f64().unwrap(), acc);
}

#[test]
fn bad_dnn_params_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("examples/jobs/mnist-mlp.toml"))
        .unwrap()
        .replace("../../", &format!("{}/", root.display()))
        .replace("momentum = 0.9", "momentum = 1.5");
    let spec = dir.path().join("bad.toml");
    std::fs::write(&spec, text).unwrap();
    let out = run("petuumd", &["validate", spec.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("params.momentum"));
}

/// A deterministic DNN job (BSP, 2 workers) SIGKILLed mid-run and resumed
/// from its checkpoint writes the same model bytes as an uninterrupted run:
/// the momentum is worker state saved with the checkpoint, and libtorch on
/// the CPU with one thread per worker computes the same gradients.
#[test]
fn sigkilled_dnn_job_resumes_to_identical_model() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let spec = |model: &str| {
        std::fs::read_to_string(root.join("examples/jobs/mnist-mlp.toml"))
            .unwrap()
            .replace("../../data/", &format!("{}/data/", root.display()))
            .replace("../../models/mnist-mlp.safetensors", model)
            .replace(
                "consistency = \"ssp\"",
                "consistency = \"bsp\"\ndeterministic = true\ncheckpoint_every = 10",
            )
            .replace("staleness = 1\n", "")
            .replace("clocks = 940", "clocks = 60")
            .replace("hidden = [256]", "hidden = [64]")
    };
    std::fs::write(dir.path().join("ref.toml"), spec("reference.safetensors")).unwrap();
    let (clock, code, last) = run_until(
        &["run", "ref.toml", "--data-dir", "ref-data"],
        dir.path(),
        None,
    );
    assert_eq!((clock, code), (60, Some(0)), "{last}");
    std::fs::write(dir.path().join("job.toml"), spec("model.safetensors")).unwrap();
    let (clock, code, _) = run_until(
        &["run", "job.toml", "--data-dir", "data"],
        dir.path(),
        Some((27, 9)),
    );
    assert!((27..60).contains(&clock), "killed at clock {clock}");
    assert_eq!(code, None, "SIGKILL ends the process without an exit code");
    let (clock, code, last) = run_until(&["resume", "1", "--data-dir", "data"], dir.path(), None);
    assert_eq!((clock, code), (60, Some(0)), "{last}");
    assert!(
        std::fs::read(dir.path().join("model.safetensors")).unwrap()
            == std::fs::read(dir.path().join("reference.safetensors")).unwrap(),
        "the resumed DNN's model differs from the uninterrupted run's"
    );
}

/// Adam (moments kept by each worker, scaled like SGD's updates): the same
/// MLP with `optimizer = "adam"`, lr 0.001, 4 passes over each half.
/// Measured 96.9% (8 passes: 97.8%).
#[test]
fn adam_trains_the_mlp() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root.join("examples/jobs/mnist-mlp.toml"))
        .unwrap()
        .replace("../../data/", &format!("{}/data/", root.display()))
        .replace("../../models/mnist-mlp.safetensors", "adam.safetensors")
        .replace(
            "learning_rate = 0.05",
            "learning_rate = 0.001\noptimizer = \"adam\"",
        )
        .replace("momentum = 0.9\n", "")
        .replace("clocks = 940", "clocks = 470");
    std::fs::write(dir.path().join("adam.toml"), text).unwrap();
    let out = run(
        "petuumd",
        &["run", "adam.toml", "--json", "--data-dir", "d"],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = json_lines(&out).pop().unwrap();
    let acc = done["test_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.965, "Adam MLP test accuracy {acc}");
}
