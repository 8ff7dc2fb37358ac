//! Bad job specs and bad data files get a clear error naming the problem,
//! and a non-zero exit, from the real binaries.

use petuum_tests::{mnist_job, run};
use std::path::Path;

fn run_spec(dir: &Path, text: &str) -> (i32, String) {
    let job = dir.join("bad.toml");
    std::fs::write(&job, text).unwrap();
    let out = run(
        "petuumd",
        &["run", job.to_str().unwrap(), "--data-dir", "pd"],
        dir,
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_specs_are_rejected_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let good = mnist_job(&model, "workers = 2", "");
    let cases: Vec<(String, &[&str])> = vec![
        (
            good.replace("multiclass_lr", "deep_magic"),
            &["algorithm", "unknown algorithm `deep_magic`"],
        ),
        (
            good.replace("train-images-idx3-ubyte.gz", "no-such-file.gz"),
            &["data.train", "no-such-file.gz"],
        ),
        (
            good.replace("workers = 2", "workers = \"two\""),
            &["workers", "invalid type"],
        ),
        (
            good.replace("workers = 2", "workers = 2\nstaleness = -1"),
            &["run.staleness", ">= 0"],
        ),
        (good.replace("workers = 2", "workers = 0"), &["run.workers"]),
        (
            good.replace("learning_rate = 0.5", "learning_rate = -0.5"),
            &["params.learning_rate", "positive"],
        ),
        (
            good.replace("learning_rate = 0.5", "learning_rat = 0.5"),
            &["params", "learning_rat"],
        ),
        (
            good.replace("batch_size = 100", "batch_size = 1.5"),
            &["batch_size"],
        ),
        (good.replace("[model]", "[modle]"), &["modle"]),
        ("this is not toml".to_string(), &["bad.toml"]),
    ];
    for (text, needles) in cases {
        let (code, err) = run_spec(dir.path(), &text);
        assert_ne!(code, 0, "accepted a bad spec:\n{text}");
        for n in needles {
            assert!(err.contains(n), "error does not mention `{n}`:\n{err}");
        }
        assert!(!model.exists(), "a rejected job wrote a model");
    }
}

#[test]
fn malformed_data_files_are_reported_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let truncated = dir.path().join("truncated-images");
    let full =
        std::fs::read(petuum_tests::datasets().join("mnist/t10k-images-idx3-ubyte.gz")).unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2_free_gunzip(&full), &mut raw).unwrap();
    std::fs::write(&truncated, &raw[..raw.len() / 2]).unwrap();
    let text = mnist_job(&model, "workers = 2", "").replace(
        &petuum_tests::datasets()
            .join("mnist/train-images-idx3-ubyte.gz")
            .display()
            .to_string(),
        &truncated.display().to_string(),
    );
    let (code, err) = run_spec(dir.path(), &text);
    assert_ne!(code, 0);
    assert!(
        err.contains("truncated-images") && err.contains("truncated"),
        "{err}"
    );

    // eval with a corrupt model file
    let bogus = dir.path().join("bogus.safetensors");
    std::fs::write(&bogus, b"definitely not a model").unwrap();
    let out = run(
        "petuumd",
        &[
            "eval",
            "--model",
            bogus.to_str().unwrap(),
            "--data",
            truncated.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bogus.safetensors") && err.contains("not a petuum model"),
        "{err}"
    );
}

#[test]
fn a_text_field_in_numeric_data_is_named_once_without_its_value() {
    // A word in a column of numbers (a text column is categorical, but one
    // that mixes both is neither): the error names the file, the line and
    // the column, says so once (the job-building error carries the
    // reader's as its cause), and does not repeat the file's contents.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cuts.csv");
    std::fs::write(
        &data,
        "carat,depth,price\n0.23,61.5,326\n0.21,Premium,326\n0.25,59.8,327\n",
    )
    .unwrap();
    let text = format!(
        "name = \"t\"\nalgorithm = \"lasso\"\n[data]\nformat = \"csv\"\ntrain = \"{}\"\nlabel_column = \"price\"\n[run]\nworkers = 1\n[model]\npath = \"{}\"\n[params]\nlambda = 0.1\n",
        data.display(),
        dir.path().join("m.safetensors").display()
    );
    let (code, err) = run_spec(dir.path(), &text);
    assert_ne!(code, 0);
    let reason = "cuts.csv:3: column `depth` holds numbers (line 2) and text (line 3)";
    assert_eq!(err.matches(reason).count(), 1, "{err}");
    assert!(!err.contains("Premium"), "the value is echoed: {err}");
}

/// gunzip via the system's gzip, to keep this test crate free of codecs.
fn flate2_free_gunzip(gz: &[u8]) -> std::io::Cursor<Vec<u8>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("gzip")
        .args(["-dc"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().unwrap();
    let data = gz.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    std::io::Cursor::new(out.stdout)
}

#[test]
fn client_validates_specs_like_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let job = dir.path().join("job.toml");
    std::fs::write(&job, mnist_job(&model, "workers = 2", "")).unwrap();
    let out = run(
        "petuum-client",
        &["validate", job.to_str().unwrap()],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&job, mnist_job(&model, "workers = 2\nstaleness = -3", "")).unwrap();
    let out = run(
        "petuum-client",
        &["validate", job.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run.staleness"));
}
