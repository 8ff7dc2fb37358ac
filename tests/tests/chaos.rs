//! The short seeded chaos run CI makes on every change: 40 faults
//! (SIGKILL and restart, SIGSTOP/SIGCONT, SIGTERM and restart, whole-cluster
//! restarts, two nodes down at once) against 3 real `petuumd serve` nodes
//! running 4 deterministic jobs at a time (logistic regression, k-means,
//! LDA, a DNN). Every job must succeed with its embedded run's model, byte
//! for byte. `petuum-chaos` prints the command that reproduces a run; the
//! long run's figures are in docs/reliability.md.

use petuum_tests::bin;
use std::process::Command;

#[test]
fn forty_faults_and_every_job_matches_its_embedded_run() {
    let out = Command::new(bin("petuum-chaos"))
        .args([
            "--seed", "1", "--nodes", "3", "--jobs", "4", "--faults", "40",
        ])
        .env("PETUUM_LOG", "warn")
        .output()
        .expect("run petuum-chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chaos run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("faults injected: 40"), "{stdout}");
    assert!(stdout.contains("every job succeeded"), "{stdout}");
}
