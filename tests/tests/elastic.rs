//! Elastic membership with real `petuumd serve` processes: while a
//! deterministic job runs, the cluster grows from 3 to 5 nodes (new nodes
//! join through `join` and get ids from the metadata group), shrinks back
//! to 3 (`petuum-client nodes remove`), and loses a node for good that a
//! new one with an empty data directory replaces. Each time every group
//! ends with its full replica count on the members in service, and the
//! job ends byte-identical to its uninterrupted embedded run.

use petuum_tests::cluster::{client, submit, wait_for, LocalCluster};
use petuum_tests::{run_embedded, spam_lr_job};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

const SHARDS: u32 = 16;
const CLOCKS: u64 = 400;

fn endpoint(c: &LocalCluster, id: u64) -> String {
    format!("http://{}", c.nodes[id as usize - 1].addr)
}

/// `petuum-client nodes --json` through `ep`.
fn nodes(c: &LocalCluster, ep: &str) -> Option<Value> {
    let out = client(ep, &["nodes", "--json"], c.path());
    serde_json::from_slice(&out.stdout).ok()
}

/// Waits until the recorded placement puts every shard on exactly
/// `replicas` of `members` (spread within one replica of even, and the
/// metadata group on all of them, up to five), the members are exactly
/// `members`, and every group's leader reports those voters.
fn wait_settled(c: &LocalCluster, members: &[u64], replicas: usize, timeout: Duration) {
    let want: BTreeSet<u64> = members.iter().copied().collect();
    let start = Instant::now();
    loop {
        let last = match settled(c, &want, replicas) {
            Ok(()) => {
                eprintln!(
                    "settled on {members:?} after {:.1} s",
                    start.elapsed().as_secs_f64()
                );
                return;
            }
            Err(e) => e,
        };
        assert!(
            start.elapsed() < timeout,
            "not settled on {members:?} within {timeout:?}: {last}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn settled(c: &LocalCluster, want: &BTreeSet<u64>, replicas: usize) -> Result<(), String> {
    // Every member's own view: the same placement, and for each group it
    // leads, voters equal to the placement's.
    let mut recorded: Option<Value> = None;
    let mut led: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &n in want {
        let s = nodes(c, &endpoint(c, n)).ok_or(format!("node {n} did not answer"))?;
        let ids: BTreeSet<u64> = s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_u64().unwrap())
            .collect();
        if &ids != want {
            return Err(format!("node {n} sees members {ids:?}"));
        }
        match &recorded {
            None => recorded = Some(s["placement"].clone()),
            Some(p) if *p != s["placement"] => {
                return Err(format!("node {n} has another placement"))
            }
            _ => {}
        }
        for g in s["groups"].as_array().unwrap() {
            if g["state"] == "leader" {
                let voters = g["voters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect();
                led.insert(g["group"].as_u64().unwrap(), voters);
            }
        }
        if n == *want.iter().next().unwrap() {
            let meta: BTreeSet<u64> = s["meta_voters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            if meta.len() != want.len().min(5) || !meta.is_subset(want) {
                return Err(format!("metadata voters {meta:?}"));
            }
        }
    }
    let placement = recorded.unwrap();
    let mut load: BTreeMap<u64, usize> = want.iter().map(|&n| (n, 0)).collect();
    for r in placement.as_array().unwrap() {
        let shard = r["shard"].as_u64().unwrap();
        let on: BTreeSet<u64> = r["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        if on.len() != replicas || !on.is_subset(want) {
            return Err(format!("shard {shard} on {on:?}"));
        }
        for n in &on {
            *load.get_mut(n).unwrap() += 1;
        }
        let voters: BTreeSet<u64> = led
            .get(&(shard + 1))
            .ok_or(format!("shard {shard} has no leader among the members"))?
            .iter()
            .copied()
            .collect();
        if voters != on {
            return Err(format!("shard {shard}: voters {voters:?}, placed {on:?}"));
        }
    }
    let (lo, hi) = (load.values().min().unwrap(), load.values().max().unwrap());
    if hi - lo > 1 {
        return Err(format!("replicas per node {load:?}"));
    }
    Ok(())
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
