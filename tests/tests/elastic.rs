//! Elastic membership with real `petuumd serve` processes: while a
//! deterministic job runs, the cluster grows from 3 to 5 nodes (new nodes
//! join through `join` and get ids from the metadata group), shrinks back
//! to 3 (`petuum-client nodes remove`), and loses a node for good that a
//! new one with an empty data directory replaces. Each time every group
//! ends with its full replica count on the members in service, and the
//! job ends byte-identical to its uninterrupted embedded run.

use petuum_tests::cluster::{client, submit, wait_for, wait_settled, LocalCluster};
use petuum_tests::{run_embedded, spam_lr_job};
use std::path::Path;
use std::time::Duration;

const SHARDS: u32 = 16;
const CLOCKS: u64 = 400;

fn endpoint(c: &LocalCluster, id: u64) -> String {
    c.endpoint(id)
}

fn reference(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let model = dir.join("reference.safetensors");
    let spec = dir.join("lr.toml");
    std::fs::write(&spec, spam_lr_job("elastic-lr", CLOCKS, 10, &model)).unwrap();
    let out = run_embedded(&spec, &dir.join("embedded"), dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (spec, std::fs::read(&model).unwrap())
}

/// Runs the job through node `via` while `change` reshapes the cluster;
/// the job must end byte-identical to the uninterrupted run.
fn while_a_job_runs(
    c: &mut LocalCluster,
    via: u64,
    spec: &Path,
    reference: &[u8],
    change: impl FnOnce(&mut LocalCluster),
) {
    let ep = endpoint(c, via);
    let job = submit(c, &ep, spec);
    wait_for(
        c,
        &ep,
        job,
        Duration::from_secs(60),
        "a first checkpoint",
        |s| s["checkpoint"].as_u64().unwrap_or(0) >= 10 && s["state"] == "running",
    );
    change(c);
    let s = wait_for(c, &ep, job, Duration::from_secs(300), "the end", |s| {
        s["state"] == "succeeded" || s["state"] == "failed"
    });
    assert_eq!(s["state"], "succeeded", "{s}");
    let model = c.path().join(format!("job{job}.safetensors"));
    let out = client(
        &ep,
        &["model", &job.to_string(), "-o", model.to_str().unwrap()],
        c.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&model).unwrap() == reference,
        "job {job}: the model differs from the uninterrupted run's"
    );
}

#[test]
fn grow_shrink_and_replace_while_jobs_run() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, reference) = reference(dir.path());
    let extra = "down_after = \"4s\"";
    let mut c = LocalCluster::start(3, SHARDS, extra);
    c.wait_leaders(&c.connect(), &[1, 2, 3], Duration::from_secs(60));

    // Grow 3 -> 5: the new nodes get ids 4 and 5 from the metadata group
    // and replicas move to them.
    while_a_job_runs(&mut c, 1, &spec, &reference, |c| {
        assert_eq!(c.join(extra), 4);
        assert_eq!(c.join(extra), 5);
        wait_settled(c, &[1, 2, 3, 4, 5], 3, Duration::from_secs(180));
    });

    // Shrink 5 -> 3: remove is graceful (everything moves off first),
    // then the removed nodes are stopped.
    while_a_job_runs(&mut c, 1, &spec, &reference, |c| {
        let ep = endpoint(c, 1);
        for n in [4, 5] {
            let out = client(&ep, &["nodes", "remove", &n.to_string()], c.path());
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        wait_settled(c, &[1, 2, 3], 3, Duration::from_secs(180));
        c.kill(4);
        c.kill(5);
    });

    // Replace: node 3 dies for good (SIGKILL, never restarted); a new
    // node with an empty data directory joins and, once node 3 has been
    // down for `down_after`, takes its replicas.
    while_a_job_runs(&mut c, 1, &spec, &reference, |c| {
        c.kill(3);
        assert_eq!(c.join(extra), 6);
        wait_settled(c, &[1, 2, 6], 3, Duration::from_secs(180));
    });
    let out = client(&endpoint(&c, 1), &["nodes"], c.path());
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}
