//! Every example job in `examples/jobs/` is a valid spec whose data files
//! exist (the README's main job needs `./scripts/setup.sh` first, which
//! `scripts/test.sh` runs).

use petuum_tests::run;

#[test]
fn every_example_job_validates() {
    let root = petuum_tests::manifest_dir().join("..");
    let dir = root.join("examples/jobs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let out = run("petuumd", &["validate", path.to_str().unwrap()], &root);
        assert!(
            out.status.success(),
            "{} does not validate (did ./scripts/setup.sh run?): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(
        checked >= 7,
        "only {checked} example jobs found in {}",
        dir.display()
    );
}
