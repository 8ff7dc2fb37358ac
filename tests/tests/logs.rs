//! What `petuumd` writes to its log: plain text without terminal colour
//! codes when stderr is a file or the journal, and one JSON object per line
//! with the span fields on `--log-format json`.

use petuum_tests::{bin, spam_lr_job};
use std::process::Command;

fn run_logged(format: &str) -> (std::process::Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("job.toml");
    std::fs::write(
        &spec,
        spam_lr_job("logs", 4, 2, &dir.path().join("m.safetensors")),
    )
    .unwrap();
    let out = Command::new(bin("petuumd"))
        .args(["--log-format", format, "run"])
        .arg(&spec)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("PETUUM_LOG", "info")
        .output()
        .expect("spawn petuumd");
    assert!(
        out.status.success(),
        "petuumd run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out, dir)
}

#[test]
fn text_logs_off_a_terminal_carry_no_colour_codes() {
    let (out, _dir) = run_logged("text");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines().any(|l| l.contains("INFO")),
        "no info lines at PETUUM_LOG=info:\n{err}"
    );
    assert!(
        !err.contains('\x1b'),
        "escape sequences in a log that is not a terminal:\n{err}"
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_the_job_span() {
    let (out, _dir) = run_logged("json");
    let err = String::from_utf8_lossy(&out.stderr);
    // (`petuumd run` also prints its own one-line summary of the job to
    // stderr; the log lines are the JSON ones.)
    let lines: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty(), "no log lines at PETUUM_LOG=info");
    for l in &lines {
        assert!(l["level"].is_string() && l["fields"].is_object(), "{l}");
    }
    // The embedded run's lines carry its span: {"name": "job", "job": id, ...}.
    let in_job = lines
        .iter()
        .filter(|l| l["span"]["name"] == "job" && l["span"]["job"].is_u64())
        .count();
    assert!(in_job > 0, "no line carries the job span: {err}");
}
