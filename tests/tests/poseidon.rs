//! Poseidon (issue 9): networks trained data-parallel through libtorch,
//! 2 workers under SSP(1), embedded: a 784-256-10 MLP and a small CNN on
//! MNIST, speech DNNs on frames, kill-and-resume, wait-free backprop.
//!
//! Reference: the issue's bar is 97.5% test accuracy for an MLP; PyTorch's
//! own MNIST MLP examples of this size reach 97.5–98% in a few epochs.
//! Here: 8 passes over each worker's half, 97.95% measured on 2026-11-25
//! (about 8 s on 2 cores).

use petuum_tests::{datasets, json_lines, run, run_embedded, run_until};
use std::path::Path;

#[test]
fn mnist_mlp_reaches_97_5_percent_and_evaluates() {
    let root = petuum_tests::manifest_dir().join("..");
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
    let out = run_embedded(&spec, &dir.path().join("d"), dir.path());
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
    assert_eq!(eval_mnist(dir.path(), &model), acc);
}

/// `petuumd eval --json` of a model; returns its report.
fn eval(dir: &Path, model: &Path, data: &Path, labels: Option<&Path>) -> serde_json::Value {
    let mut args = vec![
        "eval".to_string(),
        "--model".into(),
        model.display().to_string(),
        "--data".into(),
        data.display().to_string(),
        "--json".into(),
    ];
    if let Some(l) = labels {
        args.extend(["--labels".to_string(), l.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run("petuumd", &args, dir);
    assert!(out.status.success(), "{out:?}");
    json_lines(&out).remove(0)
}

/// The MNIST test set's accuracy of a saved model, by `petuumd eval`.
fn eval_mnist(dir: &Path, model: &Path) -> f64 {
    let d = petuum_tests::manifest_dir().join("../data/mnist");
    eval(
        dir,
        model,
        &d.join("t10k-images-idx3-ubyte"),
        Some(&d.join("t10k-labels-idx1-ubyte")),
    )["accuracy"]
        .as_f64()
        .unwrap()
}

#[test]
fn bad_dnn_params_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = petuum_tests::manifest_dir().join("..");
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

/// A small CNN with every layer kind (conv, batch norm, max-pool, dropout,
/// linear), wait-free backprop on.
const SMALL_CNN: &str = r#"input_shape = [1, 28, 28]
wait_free = true
layers = [
  { type = "conv", filters = 4, kernel = 5, stride = 2, padding = 2 },
  { type = "batch_norm" },
  { type = "relu" },
  { type = "max_pool", kernel = 2 },
  { type = "dropout", p = 0.2 },
  { type = "linear", units = 32 },
  { type = "relu" },
]"#;

/// The example spec with its paths made absolute and `edits` applied.
fn example(name: &str, model: &str, edits: &[(&str, &str)]) -> String {
    let root = petuum_tests::manifest_dir().join("..");
    let mut text = std::fs::read_to_string(root.join("examples/jobs").join(name))
        .unwrap()
        .replace(
            "../../../shared/datasets/",
            &format!("{}/", datasets().display()),
        )
        .replace("../../data/", &format!("{}/data/", root.display()));
    text = text
        .lines()
        .map(|l| {
            if l.starts_with("path = ") {
                format!("path = \"{model}\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    for (from, to) in edits {
        assert!(text.contains(from), "{name} has no `{from}`");
        text = text.replace(from, to);
    }
    text
}

/// Runs a spec with `petuumd run --json`; returns its last line.
fn run_spec(dir: &Path, file: &str, text: &str) -> serde_json::Value {
    std::fs::write(dir.join(file), text).unwrap();
    let out = run(
        "petuumd",
        &["run", file, "--json", "--data-dir", &format!("{file}.d")],
        dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&out).pop().unwrap()
}

/// A deterministic DNN job (BSP, 2 workers; a CNN with batch norm and
/// dropout, wait-free backprop on) SIGKILLed mid-run and resumed from its
/// checkpoint writes the same model bytes as an uninterrupted run: the
/// momentum is worker state saved with the checkpoint, batch norm's
/// running statistics live in the table, dropout masks come from the
/// worker's checkpointed generator, and libtorch on the CPU with one
/// thread per worker computes the same gradients.
#[test]
fn sigkilled_dnn_job_resumes_to_identical_model() {
    let spec = |model: &str| deterministic_mlp(model, 60, true, &[("hidden = [256]", SMALL_CNN)]);
    kill_resume_matches_reference(&spec("reference.safetensors"), &spec("model.safetensors"));
}

/// Runs `reference` (a 60-clock job checkpointing every 10) to the end;
/// runs `job`, SIGKILLs it after clock 27 once a checkpoint exists,
/// resumes it, and asserts both wrote the same model bytes.
fn kill_resume_matches_reference(reference: &str, job: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ref.toml"), reference).unwrap();
    let (clock, code, last) = run_until(
        &["run", "ref.toml", "--data-dir", "ref-data"],
        dir.path(),
        None,
    );
    assert_eq!((clock, code), (60, Some(0)), "{last}");
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
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
        "the resumed job's model differs from the uninterrupted run's"
    );
}

/// Adam (moments kept by each worker, scaled like SGD's updates): the same
/// MLP with `optimizer = "adam"`, lr 0.001, 4 passes over each half.
/// Measured 96.9% (8 passes: 97.8%).
#[test]
fn adam_trains_the_mlp() {
    let root = petuum_tests::manifest_dir().join("..");
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

/// The CNN example (two conv/batch-norm/ReLU/max-pool blocks, a fully
/// connected layer with dropout): the issue's bar is 98.5% within a
/// bounded number of epochs; 3 passes over each worker's half with the
/// step decaying to a third measured 98.89% (90 s on 2 cores); with a
/// constant step 2 passes gave 98.33–98.87%, below the bar once.
#[test]
fn mnist_cnn_reaches_98_5_percent_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("cnn.safetensors");
    let done = run_spec(
        dir.path(),
        "cnn.toml",
        &example("mnist-cnn.toml", model.to_str().unwrap(), &[]),
    );
    let acc = done["test_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.985, "CNN test accuracy {acc} < 0.985");
    assert_eq!(eval_mnist(dir.path(), &model), acc);
}

/// Wait-free backprop changes when updates are sent, not what they are:
/// in deterministic BSP the segmented backward (detached segment inputs,
/// gradients injected from above) and the sender thread give the same
/// model bytes as one plain backward with the updates sent afterwards.
#[test]
fn wait_free_backprop_sends_the_same_updates() {
    let dir = tempfile::tempdir().unwrap();
    let spec = |wf: &str, model: &str| {
        let net = SMALL_CNN.replace("wait_free = true", wf);
        deterministic_mlp(model, 30, false, &[("hidden = [256]", &net)])
    };
    run_spec(
        dir.path(),
        "on.toml",
        &spec("wait_free = true", "on.safetensors"),
    );
    run_spec(
        dir.path(),
        "off.toml",
        &spec("wait_free = false", "off.safetensors"),
    );
    // The tensors, byte for byte (the metadata records `wait_free`).
    let tensors = |f: &str| model_tensor_bytes(&dir.path().join(f));
    let on = tensors("on.safetensors");
    assert!(on.len() > 4 * 4000, "{} bytes of tensors", on.len());
    assert!(
        on == tensors("off.safetensors"),
        "wait-free backprop changed the trained model"
    );
}

/// The optimiser on the device (`device_optimizer`, the GPU default: no
/// copy of gradients to the host per mini-batch, one update per clock)
/// trains the same model as the host optimiser, for SGD with momentum and
/// for Adam, with batch norm and dropout and wait-free backprop: the same
/// steps, only summed into one `inc` per clock instead of one per
/// mini-batch. Run here on the CPU; on a GPU it is the default path
/// (docs/poseidon.md, "GPU").
#[test]
fn device_optimizer_trains_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let spec = |opt: &str, dev: bool, model: &str| {
        let lr = if opt == "adam" { "0.002" } else { "0.05" };
        let lr = format!("learning_rate = {lr}");
        let net = format!("{SMALL_CNN}\ndevice_optimizer = {dev}\noptimizer = \"{opt}\"");
        deterministic_mlp(
            model,
            30,
            false,
            &[("learning_rate = 0.05", &lr), ("hidden = [256]", &net)],
        )
    };
    let floats = |f: &str| model_values(&dir.path().join(f));
    for opt in ["sgd", "adam"] {
        let mut acc = Vec::new();
        for dev in [false, true] {
            let name = format!("{opt}-{dev}");
            let done = run_spec(
                dir.path(),
                &format!("{name}.toml"),
                &spec(opt, dev, &format!("{name}.safetensors")),
            );
            acc.push(done["test_accuracy"].as_f64().unwrap());
        }
        let (host, device) = (
            floats(&format!("{opt}-false.safetensors")),
            floats(&format!("{opt}-true.safetensors")),
        );
        assert_eq!(host.len(), device.len());
        let worst = host
            .iter()
            .zip(&device)
            .map(|(a, b)| (a - b).abs() / (1.0 + a.abs()))
            .fold(0f32, f32::max);
        eprintln!("{opt}: test accuracy {acc:?}, largest difference {worst}");
        // SGD: the same bytes (measured: identical). Adam divides by small
        // running moments, which magnifies rounding (libtorch divides by a
        // scalar as a multiplication by its inverse): measured 3.7e-4 and
        // 1.3e-3 at most (two sample orders), the same test accuracy.
        let bar = if opt == "sgd" { 0.0 } else { 5e-3 };
        assert!(worst <= bar, "{opt}: largest difference {worst}");
        assert!((acc[0] - acc[1]).abs() <= 0.002, "{opt}: accuracy {acc:?}");
    }
}

/// DNN for speech: speaker identification from Japanese Vowels LPC frames
/// with a ±2-frame context window, against logistic regression on the
/// same stacked frames (the same job with no hidden layers).
/// Reference (scikit-learn 1.9.1 on the same standardised, stacked frames,
/// 2026-11-26): LogisticRegression frame 94.67% / utterance 97.84%;
/// MLPClassifier(256, 256) frame 96.43% / utterance 98.38%. Ours measured
/// (deterministic BSP, as below): DNN 95.82% / 98.38%, logistic regression
/// 94.51% / 97.57%.
#[test]
fn speech_dnn_beats_logistic_regression_on_the_same_frames() {
    let dir = tempfile::tempdir().unwrap();
    // Deterministic BSP: the figures reproduce run to run (under SSP the
    // DNN's frame accuracy moved between 95.4% and 96.1%).
    let det = [(
        "consistency = \"ssp\"\nstaleness = 1",
        "consistency = \"bsp\"\ndeterministic = true",
    )];
    let dnn = run_spec(
        dir.path(),
        "dnn.toml",
        &example("speech-dnn.toml", "dnn.safetensors", &det),
    );
    let lr_spec = {
        let t = example("speech-dnn.toml", "lr.safetensors", &det);
        let (a, b) = (
            t.find("layers = [").unwrap(),
            t.find("]\nlearning_rate").unwrap(),
        );
        format!("{}layers = [{}", &t[..a], &t[b..])
    };
    let lr = run_spec(dir.path(), "lr.toml", &lr_spec);
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    let (dnn_frame, dnn_utt) = (f(&dnn, "test_accuracy"), f(&dnn, "test_utterance_accuracy"));
    let (lr_frame, lr_utt) = (f(&lr, "test_accuracy"), f(&lr, "test_utterance_accuracy"));
    assert!(dnn_frame >= 0.95, "speech DNN frame accuracy {dnn_frame}");
    assert!(
        dnn_frame >= lr_frame + 0.005,
        "DNN frames {dnn_frame} vs logistic regression {lr_frame}"
    );
    assert!(
        dnn_utt >= lr_utt && dnn_utt >= 0.975,
        "DNN utterances {dnn_utt} vs logistic regression {lr_utt}"
    );
    // The saved model evaluates the held-out utterances the same way.
    let data = datasets().join("speech/japanese_vowels_frames.csv");
    let v = &eval(dir.path(), &dir.path().join("dnn.safetensors"), &data, None);
    assert_eq!(f(v, "accuracy"), dnn_frame);
    assert_eq!(f(v, "utterance_accuracy"), dnn_utt);
}

/// Deterding vowels (11 vowels, speaker-independent split, 9 LPC log-area
/// ratios; no frames: every row is its own utterance). Reference
/// (scikit-learn 1.9.1, standardised): LogisticRegression 36.58%,
/// MLPClassifier(128, tanh) 50.65%; the data set's literature reports
/// 45–60% for networks. Ours measured: DNN 51.30%, logistic regression
/// 37.66%.
#[test]
fn deterding_vowels_dnn_beats_logistic_regression() {
    let dir = tempfile::tempdir().unwrap();
    let data = datasets().join("speech/vowel_deterding.csv");
    let spec = |layers: &str, model: &str| {
        format!(
            r#"name = "vowel"
algorithm = "dnn"
[data]
format = "csv"
train = "{}"
label_column = "label"
[run]
workers = 2
consistency = "ssp"
staleness = 1
clocks = 400
seed = 7
[model]
path = "{model}"
[params]
layers = [{layers}]
learning_rate = 0.05
momentum = 0.9
batch_size = 16
batches_per_clock = 4
[params.frames]
split_column = "split"
ignore_columns = ["speaker", "vowel"]
"#,
            data.display()
        )
    };
    let dnn = run_spec(
        dir.path(),
        "dnn.toml",
        &spec(
            r#"{ type = "linear", units = 128 }, { type = "tanh" }"#,
            "d.safetensors",
        ),
    );
    let lr = run_spec(dir.path(), "lr.toml", &spec("", "l.safetensors"));
    let (d, l) = (
        dnn["test_accuracy"].as_f64().unwrap(),
        lr["test_accuracy"].as_f64().unwrap(),
    );
    assert!(
        d >= 0.46 && d >= l + 0.08,
        "DNN {d} vs logistic regression {l}"
    );
}

/// The tensor data of a safetensors file: what follows its header (the
/// metadata, which records settings such as `wait_free`, left out).
fn model_tensor_bytes(path: &Path) -> Vec<u8> {
    let b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    b[8 + n..].to_vec()
}

/// The model tensors of a safetensors file as f32 values (every tensor
/// of a DNN model is f32; the layout follows the header).
fn model_values(path: &Path) -> Vec<f32> {
    model_tensor_bytes(path)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The MNIST MLP example as a deterministic BSP job of `clocks` clocks
/// (checkpointing every 10 clocks when `checkpoint`), then `edits`.
fn deterministic_mlp(model: &str, clocks: u32, checkpoint: bool, edits: &[(&str, &str)]) -> String {
    let run = if checkpoint {
        "consistency = \"bsp\"\ndeterministic = true\ncheckpoint_every = 10"
    } else {
        "consistency = \"bsp\"\ndeterministic = true"
    };
    let clocks = format!("clocks = {clocks}");
    let mut all = vec![
        ("consistency = \"ssp\"", run),
        ("staleness = 1\n", ""),
        ("clocks = 940", clocks.as_str()),
    ];
    all.extend_from_slice(edits);
    example("mnist-mlp.toml", model, &all)
}

/// An MLP job for the sufficient-factor tests: deterministic BSP, one
/// mini-batch of 64 per clock (where the cost model sends the 784 × 64
/// layer by factors when forced, and the 784 × 256 one by itself).
fn sfb_spec(model: &str, clocks: u32, sfb: &str, hidden: &str) -> String {
    let net = format!("hidden = [{hidden}]\nsfb = \"{sfb}\"");
    deterministic_mlp(
        model,
        clocks,
        true,
        &[
            ("hidden = [256]", &net),
            ("batches_per_clock = 4", "batches_per_clock = 1"),
        ],
    )
}

/// Sufficient-factor broadcasting moves each mini-batch's factors instead
/// of the 784 × 256 matrix (the cost model's choice with one mini-batch
/// of 64 per clock) and every worker rebuilds the updates from them: the
/// trained model equals the parameter server's to float tolerance (on
/// this machine bit for bit, 2026-11-26) and the accuracy is the same.
#[test]
fn sufficient_factors_train_the_same_model_as_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let ps = run_spec(
        dir.path(),
        "ps.toml",
        &sfb_spec("ps.safetensors", 300, "off", "256"),
    );
    let sf = run_spec(
        dir.path(),
        "sf.toml",
        &sfb_spec("sf.safetensors", 300, "auto", "256"),
    );
    let (a, b) = (
        model_values(&dir.path().join("ps.safetensors")),
        model_values(&dir.path().join("sf.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(diff <= 1e-4, "largest weight difference {diff}");
    let acc = |v: &serde_json::Value| v["test_accuracy"].as_f64().unwrap();
    assert!(
        (acc(&ps) - acc(&sf)).abs() <= 0.002,
        "{} vs {}",
        acc(&ps),
        acc(&sf)
    );
    assert!(acc(&sf) > 0.9, "accuracy {}", acc(&sf));
}

/// A job sending a layer by factors, SIGKILLed after a checkpoint and
/// resumed, writes the same model bytes as an uninterrupted run: the
/// replicas, per-worker momentum buffers and recent own updates are
/// worker state, and the factors of the clocks not yet folded in are in
/// the checkpointed table.
#[test]
fn sigkilled_sfb_job_resumes_to_identical_model() {
    kill_resume_matches_reference(
        &sfb_spec("reference.safetensors", 60, "on", "64"),
        &sfb_spec("model.safetensors", 60, "on", "64"),
    );
}

/// `sfb = "on"` where factors cannot work is refused with the reason, by
/// validation and by the run.
#[test]
fn sfb_on_with_adam_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        sfb_spec("x.safetensors", 10, "on", "64").replace("momentum = 0.9", "optimizer = \"adam\"");
    std::fs::write(dir.path().join("bad.toml"), text).unwrap();
    let out = run(
        "petuumd",
        &["run", "bad.toml", "--data-dir", "d"],
        dir.path(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("params.sfb") && err.contains("sgd"), "{err}");
    // Validation (what the client runs before submitting) says so too.
    let out = run("petuumd", &["validate", "bad.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("params.sfb"));
}

/// A `dnn` job with no `[params]` (the automatic configuration: inputs
/// scaled, Adam at 0.001, a clock of 8 mini-batches) on tabular sets of
/// different shapes and scales, against scikit-learn 1.9.1's
/// `make_pipeline(StandardScaler(), MLPClassifier())` on the same split
/// (every 5th row a test row), mean of `random_state` 0-2: wdbc 1.0,
/// ionosphere 0.9095, sonar 0.8699, digits 0.9740, satimage 0.9171
/// (`bench/nn_defaults.py`; docs/benchmarks.md, "DNN and DML defaults").
/// petuum, 2 workers, deterministic (BSP), no `clocks` (the automatic
/// configuration's default, 1000), seeds 1 and 2, measured 2026-12-06:
/// wdbc 1.0/1.0, ionosphere 0.914/0.914, sonar 0.902/0.878, digits
/// 0.978/0.981, satimage 0.914/0.912 (with `clocks = 500`, 2026-12-04:
/// ionosphere 0.900/0.900, digits 0.975/0.981, satimage 0.901/0.918; with
/// the old default of 10 clocks satimage was 0.846). wdbc's raw
/// features reach 4,254: the old default (SGD at 0.05 on raw inputs)
/// ended `succeeded` there at the majority class (0.628); now such a run
/// fails, naming the cause.
#[test]
fn dnn_defaults_train_on_data_nobody_tuned_them_for() {
    let dir = tempfile::tempdir().unwrap();
    let spec = |file: &str, seed: u32, params: &str| {
        format!(
            "name = \"d\"\nalgorithm = \"dnn\"\n[data]\nformat = \"csv\"\ntrain = \"{}\"\ntest_fraction = 0.2\n\
             [run]\nworkers = 2\ndeterministic = true\nseed = {seed}\n\
             [model]\npath = \"m{seed}.safetensors\"\n[params]\n{params}\n",
            datasets().join(file).display()
        )
    };
    for (file, sklearn) in [
        ("classification/breast_cancer_wdbc.csv", 1.0),
        ("classification/ionosphere.csv", 0.9095),
        ("classification/sonar.csv", 0.8699),
        ("digits_8x8/digits.csv", 0.9740),
        ("classification/satimage.csv", 0.9171),
    ] {
        let mut accs = Vec::new();
        for seed in [1, 2] {
            let done = run_spec(dir.path(), "auto.toml", &spec(file, seed, ""));
            assert_eq!(done["state"], "succeeded", "{file}: {done}");
            assert_eq!(done["below_majority"], 0.0, "{file}: {done}");
            // No `clocks` in the spec: the automatic configuration's bound.
            assert_eq!(done["clocks"], 1000, "{file}: {done}");
            accs.push(done["test_accuracy"].as_f64().unwrap());
            // The saved network scales raw inputs itself: on the whole
            // file (train rows then test rows, as the split counts them)
            // it scores what the job reported for each part.
            let report = eval(
                dir.path(),
                &dir.path().join(format!("m{seed}.safetensors")),
                &datasets().join(file),
                None,
            );
            let n = report["samples"].as_f64().unwrap();
            let n_test = (n * 0.2).floor();
            let expect = (done["train_accuracy"].as_f64().unwrap() * (n - n_test)
                + done["test_accuracy"].as_f64().unwrap() * n_test)
                / n;
            if n - n_test <= 2000.0 {
                // train_accuracy covers every training row below 2,000.
                let got = report["accuracy"].as_f64().unwrap();
                assert!(
                    (got - expect).abs() < 1e-9,
                    "{file}: eval {got}, job {expect}"
                );
            }
        }
        let mean = accs.iter().sum::<f64>() / accs.len() as f64;
        println!("{file}: test accuracy {accs:?}, mean {mean:.4}, scikit-learn {sklearn}");
        assert!(
            mean >= sklearn - 0.01,
            "{file}: mean test accuracy {mean} ({accs:?}), scikit-learn {sklearn}"
        );
    }
    // A learning rate given keeps the inputs raw: the old default on wdbc
    // now fails instead of succeeding at the majority class.
    std::fs::write(
        dir.path().join("raw.toml"),
        spec(
            "classification/breast_cancer_wdbc.csv",
            1,
            "learning_rate = 0.05",
        ),
    )
    .unwrap();
    let out = run(
        "petuumd",
        &["run", "raw.toml", "--data-dir", "raw.d"],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("diverged") && err.contains("params.scaling"),
        "{err}"
    );
}
