//! Jobs on a 3-node cluster of real `petuumd serve` processes, driven by
//! the `petuum-client` CLI: a node running a job is SIGKILLed, SIGTERMed,
//! or the whole cluster is stopped and restarted, and the job still
//! succeeds with a model byte-identical to an uninterrupted run
//! (deterministic mode). Bad specs are refused by the client and by the
//! server. The scenarios run one at a time (each starts its own cluster;
//! the failure detector's timings assume the machine is not oversubscribed).

use petuum_cluster::shards::ClusterShards;
use petuum_core::types::{shard_of, JobShards};
use petuum_tests::cluster::{
    client, meta_leader, signal, status, submit, u64s, wait_for, LocalCluster,
};
use petuum_tests::{datasets, run_embedded, spam_lr_job};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

const CLOCKS: u64 = 120;

/// Logistic regression on spamassassin, deterministic, checkpoint every
/// 10 clocks.
fn lr_spec(dir: &Path, model: &Path) -> PathBuf {
    let path = dir.join("lr.toml");
    std::fs::write(&path, spam_lr_job("spam-lr", CLOCKS, 10, model)).unwrap();
    path
}

/// The uninterrupted run's model (embedded, same spec).
fn reference(dir: &Path) -> (PathBuf, Vec<u8>) {
    let model = dir.join("reference.safetensors");
    let spec = lr_spec(dir, &model);
    let out = run_embedded(&spec, &dir.join("embedded"), dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (spec, std::fs::read(&model).unwrap())
}

/// `petuum-client watch JOB --json` running beside the test, its output
/// in files.
struct Watcher {
    child: std::process::Child,
    out: PathBuf,
    err: PathBuf,
}

impl Watcher {
    /// Starts the watch through `ep` and waits for its first record.
    fn start(c: &LocalCluster, ep: &str, job: u64) -> Watcher {
        let out = c.path().join(format!("watch-{job}.out"));
        let err = c.path().join(format!("watch-{job}.err"));
        let child = std::process::Command::new(petuum_tests::bin("petuum-client"))
            .args(["--endpoint", ep, "watch", &job.to_string(), "--json"])
            .current_dir(c.path())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("spawn petuum-client watch");
        let started = Instant::now();
        while std::fs::metadata(&out).map_or(0, |m| m.len()) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the watch printed nothing: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Watcher { child, out, err }
    }

    /// Once the job has ended: the watch ended too, exit code 0, its last
    /// record the success, and it said it lost `lost` and went on
    /// elsewhere.
    fn finished_through_another_node(mut self, lost: &str, job: u64) {
        let started = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!(
                    "the watch did not end with the job: {}",
                    std::fs::read_to_string(&self.err).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let err = std::fs::read_to_string(&self.err).unwrap();
        let out = std::fs::read_to_string(&self.out).unwrap();
        assert!(status.success(), "watch exited {status}: {err}");
        let last: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert_eq!(last["state"], "succeeded", "{out}");
        assert!(err.contains(&format!("lost {lost}")), "{err}");
        assert!(
            err.contains(&format!("watching job {job} through")),
            "{err}"
        );
        eprintln!("the watch through the killed node:\n{err}");
    }
}

fn endpoint(c: &LocalCluster, id: u64) -> String {
    format!("http://{}", c.nodes[id as usize - 1].addr)
}

/// Waits for success, downloads the model and checks it is the
/// reference's, byte for byte; also that logistic regression reached a
/// good model.
fn finish_and_compare(c: &LocalCluster, ep: &str, job: u64, reference: &[u8]) -> Value {
    let s = finish_and_compare_any(c, ep, job, reference, "logistic regression");
    // scikit-learn's LogisticRegression(C=1) reaches 0.9686 on this split
    // (algorithms/tests/linear_quality.rs, which runs 400 passes); these
    // 120 clocks are a fraction of that.
    let acc = s["metrics"]["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.94, "test accuracy {acc}");
    s
}

#[test]
fn killed_hosts_job_recovers_bit_identical() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (spec, reference) = reference(dir.path());
    let mut c = LocalCluster::start(3, 16, "");
    c.wait_leaders(&c.connect(), &[1, 2, 3], Duration::from_secs(60));
    let ep1 = endpoint(&c, 1);
    let job = submit(&c, &ep1, &spec);
    // Past the first checkpoints, then kill the node running the workers.
    let s = wait_for(&c, &ep1, job, Duration::from_secs(60), "progress", |s| {
        s["checkpoint"].as_u64().unwrap_or(0) >= 20 && s["state"] == "running"
    });
    let host = s["host"].as_u64().unwrap();
    let at_kill = s["clock"].as_u64().unwrap();
    // The scheduler spreads the two workers over two nodes.
    let placement = u64s(&s["placement"]);
    assert!(
        placement.len() == 2 && placement[0] != placement[1],
        "{placement:?}"
    );
    assert!(at_kill < CLOCKS, "the job finished before the kill");
    // A user following the job through the node about to die: the same
    // `petuum-client watch` process goes on through another node.
    let watcher = Watcher::start(&c, &endpoint(&c, host), job);
    c.kill(host);
    let killed = Instant::now();
    let other = (1..=3).find(|&n| n != host).unwrap();
    let ep = endpoint(&c, other);
    // The job moves to a live node without anyone typing a command...
    let moved = wait_for(&c, &ep, job, Duration::from_secs(30), "reassignment", |s| {
        s["host"].as_u64().is_some_and(|h| h != host) && s["epoch"].as_u64() > Some(1)
    });
    eprintln!(
        "host {host} killed at clock {at_kill}; job on node {} after {:?}",
        moved["host"],
        killed.elapsed()
    );
    // The killed node comes back; later a host that is not the
    // coordinator is killed too.
    c.spawn(host);
    let s = wait_for(
        &c,
        &ep,
        job,
        Duration::from_secs(60),
        "more checkpoints",
        |s| s["checkpoint"].as_u64().unwrap_or(0) >= 60 && s["state"] == "running",
    );
    let second = s["placement"][1].as_u64().unwrap();
    assert_ne!(Some(second), s["host"].as_u64(), "{s}");
    c.kill(second);
    let ep = endpoint(&c, (1..=3).find(|&n| n != second).unwrap());
    // ... and ends with the uninterrupted run's model, bit for bit.
    let s = finish_and_compare(&c, &ep, job, &reference);
    assert!(s["recoveries"].as_u64().unwrap() >= 2, "{s}");
    watcher.finished_through_another_node(&endpoint(&c, host), job);
    // `--endpoint` with the dead node first: the command goes on to the
    // next; with only dead nodes, exit 3 naming each.
    let dead = endpoint(&c, second);
    let out = client(
        &format!("{dead},{ep}"),
        &["status", &job.to_string(), "--json"],
        c.path(),
    );
    assert!(out.status.success(), "{out:?}");
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["state"], "succeeded", "{s}");
    let out = client(&format!("{dead}, http://127.0.0.1:1"), &["list"], c.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&dead) && err.contains("http://127.0.0.1:1") && err.contains("none answered"),
        "{err}"
    );
    let out = client(&ep, &["logs", &job.to_string()], c.path());
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(
        logs.contains(&format!("node {host} stopped answering")),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("node {second} stopped answering")),
        "{logs}"
    );
    assert!(logs.contains("from the checkpoint of clock"), "{logs}");
    // The second killed node comes back and serves the model too.
    c.spawn(second);
    let host = second;
    let model = c.path().join("again.safetensors");
    let start = Instant::now();
    loop {
        let out = client(
            &endpoint(&c, host),
            &["model", &job.to_string(), "-o", model.to_str().unwrap()],
            c.path(),
        );
        if out.status.success() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{out:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(std::fs::read(&model).unwrap() == reference);
}

#[test]
fn sigterm_moves_the_job_and_exits_zero() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (spec, reference) = reference(dir.path());
    let mut c = LocalCluster::start(3, 16, "");
    c.wait_leaders(&c.connect(), &[1, 2, 3], Duration::from_secs(60));
    let ep1 = endpoint(&c, 1);
    let job = submit(&c, &ep1, &spec);
    let s = wait_for(&c, &ep1, job, Duration::from_secs(60), "progress", |s| {
        s["clock"].as_u64().unwrap_or(0) >= 15 && s["state"] == "running"
    });
    let host = s["host"].as_u64().unwrap();
    let pid = c.pid(host);
    let t = Instant::now();
    signal(pid, 15);
    let code = c
        .wait_exit(host, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("node {host} did not exit within the grace period"));
    assert_eq!(code.code(), Some(0), "SIGTERM must exit 0");
    eprintln!("node {host} exited 0 after {:?}", t.elapsed());
    let ep = endpoint(&c, (1..=3).find(|&n| n != host).unwrap());
    let s = finish_and_compare(&c, &ep, job, &reference);
    let out = client(&ep, &["logs", &job.to_string()], c.path());
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(
        logs.contains(&format!("node {host} is stopping")),
        "the stopping node checkpoints the job before leaving\n{logs}\n{s}"
    );
}

#[test]
fn whole_cluster_restart_resumes_from_checkpoint() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (spec, reference) = reference(dir.path());
    let mut c = LocalCluster::start(3, 16, "");
    c.wait_leaders(&c.connect(), &[1, 2, 3], Duration::from_secs(60));
    let ep1 = endpoint(&c, 1);
    let job = submit(&c, &ep1, &spec);
    wait_for(
        &c,
        &ep1,
        job,
        Duration::from_secs(60),
        "a checkpoint",
        |s| s["checkpoint"].as_u64().unwrap_or(0) >= 20,
    );
    // Every VM preempted at once, without warning.
    for n in 1..=3 {
        c.kill(n);
    }
    for n in 1..=3 {
        c.spawn(n);
    }
    let s = finish_and_compare(&c, &ep1, job, &reference);
    assert!(s["recoveries"].as_u64().unwrap() >= 1, "{s}");
    let out = client(&ep1, &["logs", &job.to_string()], c.path());
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(
        logs.contains("restarted") && logs.contains("from the checkpoint of clock"),
        "the restarted host resumes the job from its checkpoint\n{logs}"
    );
}

#[test]
fn bad_specs_and_requests_get_clear_errors() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A 1 GiB model bound, so the over-large model below is refused the
    // same way on a machine of any memory.
    let c = LocalCluster::start(3, 16, "max_model_mb = 1024");
    c.wait_leaders(&c.connect(), &[1, 2, 3], Duration::from_secs(60));
    let ep = endpoint(&c, 2);
    let d = c.path();
    // Malformed TOML: refused by the client, naming the file and line.
    let bad = d.join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\nalgorithm = \n").unwrap();
    let out = client(&ep, &["submit", bad.to_str().unwrap()], d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.toml") && err.contains("line 2"), "{err}");
    // A data file that does not exist: refused by the client, naming it.
    let missing = d.join("missing.toml");
    std::fs::write(
        &missing,
        "name = \"m\"\nalgorithm = \"logistic_regression\"\n[data]\nformat = \"libsvm\"\ntrain = \"/no/such/spam.libsvm\"\n[model]\npath = \"m.safetensors\"\n",
    )
    .unwrap();
    let out = client(&ep, &["submit", missing.to_str().unwrap()], d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/no/such/spam.libsvm"), "{err}");
    // The server checks again (a client that skipped validation).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut cl = petuum_client::Client::connect(&ep, None).await.unwrap();
        let text = std::fs::read_to_string(&missing).unwrap();
        let e = cl
            .submit_text(&text, "missing.toml", d)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rejected") && e.contains("/no/such/spam.libsvm"),
            "{e}"
        );
        let e = cl
            .submit_text("algorithm = [", "garbage.toml", d)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("garbage.toml"), "{e}");
        let e = cl
            .submit_text(
                &text.replace("logistic_regression", "no_such_algo").replace(
                    "/no/such/spam.libsvm",
                    &datasets()
                        .join("spamassassin/spam.libsvm")
                        .display()
                        .to_string(),
                ),
                "x.toml",
                d,
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("no_such_algo"), "{e}");
        let e = cl
            .submit_text(&text, "rel.toml", Path::new("relative/dir"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("absolute"), "{e}");
    });
    // A libsvm file whose one large feature id asks for a model of 2^31
    // features (16 GB of weights): the job fails at its start naming the
    // sizes, and the node that ran it is still serving (it used to abort
    // on the allocation, and again after every restart).
    let huge = d.join("huge.libsvm");
    std::fs::write(&huge, "1 1:0.5 2000000000:1\n0 3:1\n1 2:1\n0 1:1\n").unwrap();
    let spec = d.join("huge.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"huge\"\nalgorithm = \"logistic_regression\"\n[data]\nformat = \"libsvm\"\ntrain = \"{}\"\n[model]\npath = \"huge.safetensors\"\n",
            huge.display()
        ),
    )
    .unwrap();
    let job = submit(&c, &ep, &spec);
    let s = wait_for(&c, &ep, job, Duration::from_secs(60), "the failure", |s| {
        s["state"] == "failed"
    });
    let error = s["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("2000000000 features")
            && error.contains("at most 1024 MiB")
            && error.contains("max_model_mb"),
        "{s}"
    );
    let host = s["host"].as_u64().unwrap_or(0);
    for id in 1..=3 {
        let out = client(&endpoint(&c, id), &["list"], d);
        assert!(out.status.success(), "node {id} (host {host}): {out:?}");
    }
    // Unknown job: exit 4 with the reason; unreachable node: exit 3.
    let out = client(&ep, &["status", "999"], d);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("job 999 not found"));
    let out = client("http://127.0.0.1:1", &["list"], d);
    assert_eq!(out.status.code(), Some(3));
    // Submit, cancel while it runs: the job ends cancelled, watch exits 1.
    let model = d.join("cancel.safetensors");
    let spec = lr_spec(d, &model);
    std::fs::write(
        &spec,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace(&format!("clocks = {CLOCKS}"), "clocks = 100000"),
    )
    .unwrap();
    let job = submit(&c, &ep, &spec);
    wait_for(&c, &ep, job, Duration::from_secs(60), "progress", |s| {
        s["clock"].as_u64().unwrap_or(0) >= 2
    });
    let out = client(&ep, &["cancel", &job.to_string()], d);
    assert!(out.status.success(), "{out:?}");
    let out = client(&ep, &["watch", &job.to_string(), "--json"], d);
    assert_eq!(out.status.code(), Some(1), "a cancelled job: watch exits 1");
    let last: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["state"], "cancelled");
    let out = client(&ep, &["list", "--json"], d);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(list.as_array().unwrap().iter().any(|j| j["id"] == job));
    // Only paused or failed jobs resume; a cancelled one's model is refused.
    let out = client(&ep, &["resume", &job.to_string()], d);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only a paused or failed job"));
    let out = client(&ep, &["model", &job.to_string(), "-o", "x.bin"], d);
    assert!(String::from_utf8_lossy(&out.stderr).contains("once it has succeeded"));
    // A job's per-clock values beyond the objective reach clients: a
    // Lasso's non-zeros and relative duality gap (150 SchMP rounds of 10
    // coordinates: far from converged on diabetes, where they take
    // thousands).
    let lasso = d.join("lasso.toml");
    std::fs::write(
        &lasso,
        format!(
            "name = \"l\"\nalgorithm = \"lasso\"\n[data]\nformat = \"csv\"\ntrain = \"{}\"\nlabel_column = \"target\"\n[run]\nworkers = 2\nclocks = 150\n[model]\npath = \"l.safetensors\"\n[params]\nlambda = 20.0\ntol = 1e-9\nscheduler = \"schmp\"\n",
            petuum_tests::datasets().join("regression/diabetes.csv").display()
        ),
    )
    .unwrap();
    let job = submit(&c, &ep, &lasso);
    let s = wait_for(&c, &ep, job, Duration::from_secs(120), "success", |s| {
        assert_ne!(s["state"], "failed", "{s}");
        s["state"] == "succeeded"
    });
    let m = &s["clock_metrics"];
    let nnz = m["nnz"].as_f64().unwrap_or_else(|| panic!("no nnz: {s}"));
    assert!((1.0..=10.0).contains(&nnz), "{s}");
    let gap = m["relative_gap"]
        .as_f64()
        .unwrap_or_else(|| panic!("no gap: {s}"));
    assert!(gap > 0.0 && gap < 1.0, "{s}");
    let out = client(&ep, &["status", &job.to_string()], d);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("nnz") && text.contains("relative_gap"),
        "{text}"
    );
}

#[test]
fn job_pauses_without_quorum_and_continues_when_nodes_return() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (spec, reference) = reference(dir.path());
    // 5 nodes, 3 replicas per shard: losing two neighbours leaves the
    // metadata group a quorum (3 of 5) but some shard groups none.
    let mut c = LocalCluster::start(5, 16, "");
    c.wait_leaders(&c.connect(), &[1, 2, 3, 4, 5], Duration::from_secs(60));
    let ep = |c: &LocalCluster, h: u64| endpoint(c, h);
    let job = submit(&c, &ep(&c, 1), &spec);
    let s = wait_for(
        &c,
        &ep(&c, 1),
        job,
        Duration::from_secs(60),
        "a checkpoint",
        |s| s["checkpoint"].as_u64().unwrap_or(0) >= 10 && s["state"] == "running",
    );
    let host = s["host"].as_u64().unwrap();
    let neighbour = host % 5 + 1;
    c.kill(host);
    c.kill(neighbour);
    let survivor = (1..=5).find(|&n| n != host && n != neighbour).unwrap();
    let s = wait_for(
        &c,
        &ep(&c, survivor),
        job,
        Duration::from_secs(30),
        "paused",
        |s| s["state"] == "paused",
    );
    assert!(s["host"].is_null(), "{s}");
    // One node returns: every shard group has a quorum again, and the job
    // continues by itself from its checkpoint.
    c.spawn(neighbour);
    finish_and_compare(&c, &ep(&c, survivor), job, &reference);
    let out = client(&ep(&c, survivor), &["logs", &job.to_string()], c.path());
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(logs.contains("without a quorum"), "{logs}");
    assert!(logs.contains("enough nodes are up again"), "{logs}");
}

/// Every other data-parallel algorithm, the DNN and LDA, through the job API, each
/// with its coordinator SIGKILLed after a checkpoint: each model equals
/// its uninterrupted embedded run's, byte for byte.
#[test]
fn every_algorithm_survives_a_kill_bit_identical() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = datasets();
    let data = |f: &str| d.join(f).display().to_string();
    // Every tenth diamond: a CSV file with text columns (`color`,
    // `clarity`; the label `cut` is text too), one-hot encoded by every
    // run that reads it, the resumed ones included.
    let diamonds = tempfile::tempdir().unwrap();
    let subset = diamonds.path().join("diamonds.csv");
    let text = std::fs::read_to_string(d.join("regression/diamonds.csv")).unwrap();
    let mut lines = text.lines();
    let mut sub = format!("{}\n", lines.next().unwrap());
    for l in lines.step_by(10) {
        sub.push_str(l);
        sub.push('\n');
    }
    std::fs::write(&subset, sub).unwrap();
    // (algorithm, [data] and [params], clocks, checkpoint_every)
    let jobs: Vec<(&str, String, u64, u64)> = vec![
        (
            "svm",
            format!("[data]\nformat = \"libsvm\"\ntrain = \"{}\"\ntest_fraction = 0.2\n[params]\nlearning_rate = 10.0\nbatch_size = 32\nbatches_per_clock = 10\nl2 = 0.0002", data("spamassassin/spam.libsvm")),
            80,
            10,
        ),
        (
            "multiclass_lr",
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\nlabel_column = \"cut\"\ntest_fraction = 0.2\n[params]\nlearning_rate = 0.1\nscaling = \"standard\"", subset.display()),
            80,
            10,
        ),
        (
            "kmeans",
            // Every clock runs (no stop rule), so the kill lands mid-run.
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\n[params]\nk = 10\ntol = 0.0", data("digits_8x8/digits.csv")),
            80,
            10,
        ),
        (
            "random_forest",
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\ntest_fraction = 0.2\n[params]\nnum_trees = 24", data("classification/satimage.csv")),
            12,
            2,
        ),
        (
            "dml",
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\ntest_fraction = 0.2\n[params]\nlearning_rate = 0.01", data("classification/ionosphere.csv")),
            80,
            10,
        ),
        (
            "dnn",
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\ntest_fraction = 0.2\n[params]\nhidden = [32]\nscaling = \"standard\"\nlearning_rate = 0.05\nbatch_size = 32\nbatches_per_clock = 4", data("classification/satimage.csv")),
            40,
            8,
        ),
        (
            "lda",
            format!("[data]\nformat = \"uci_bow\"\ntrain = \"{}\"\nvocab = \"{}\"\n[params]\nnum_topics = 20", data("reuters395_lda/docword.txt"), data("reuters395_lda/vocab.txt")),
            20,
            4,
        ),
    ];
    let mut c = LocalCluster::start(3, 16, "");
    c.wait_leaders(&c.connect(), &[1, 2, 3], Duration::from_secs(60));
    for (algorithm, body, clocks, every) in jobs {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("embedded.safetensors");
        let spec = dir.path().join("job.toml");
        std::fs::write(
            &spec,
            format!(
                "name = \"{algorithm}\"\nalgorithm = \"{algorithm}\"\n[run]\nworkers = 2\nconsistency = \"bsp\"\ndeterministic = true\nseed = 5\nshards = 16\nclocks = {clocks}\ncheckpoint_every = {every}\n[model]\npath = \"{}\"\n{body}\n",
                model.display()
            ),
        )
        .unwrap();
        let out = run_embedded(&spec, &dir.path().join("embedded"), dir.path());
        assert!(
            out.status.success(),
            "{algorithm}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reference = std::fs::read(&model).unwrap();
        let ep = endpoint(&c, 1);
        let job = submit(&c, &ep, &spec);
        let s = wait_for(
            &c,
            &ep,
            job,
            Duration::from_secs(120),
            "a checkpoint",
            |s| {
                s["state"] == "succeeded"
                    || (s["checkpoint"].as_u64().unwrap_or(0) >= 2 * every
                        && s["state"] == "running")
            },
        );
        assert_eq!(
            s["state"], "running",
            "{algorithm} finished before the kill: give it more clocks"
        );
        let host = s["host"].as_u64().unwrap();
        c.kill(host);
        let ep = endpoint(&c, host % 3 + 1);
        let s = finish_and_compare_any(&c, &ep, job, &reference, algorithm);
        assert!(s["recoveries"].as_u64().unwrap() >= 1, "{algorithm}: {s}");
        c.spawn(host);
        c.wait_leaders(&c.connect(), &[1, 2, 3], Duration::from_secs(60));
    }
}

/// Like `finish_and_compare`, without the logistic-regression accuracy bar.
fn finish_and_compare_any(
    c: &LocalCluster,
    ep: &str,
    job: u64,
    reference: &[u8],
    algorithm: &str,
) -> Value {
    let s = wait_for(c, ep, job, Duration::from_secs(180), "success", |s| {
        assert_ne!(s["state"], "failed", "{algorithm} failed: {s}");
        s["state"] == "succeeded"
    });
    let model = c.path().join(format!("job{job}.safetensors"));
    let out = client(
        ep,
        &["model", &job.to_string(), "-o", model.to_str().unwrap()],
        c.path(),
    );
    assert!(
        out.status.success(),
        "{algorithm} model: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&model).unwrap() == reference,
        "{algorithm}: the recovered job's model differs from the uninterrupted run's\n{s}"
    );
    s
}

/// node.toml `data_roots` confines job data: a spec reading a file outside
/// them is refused at submission, naming the field; a malformed data file
/// inside them fails the job with an error that names the file and line
/// but does not echo the file's content to clients.
#[test]
fn data_roots_confine_job_data_and_errors_do_not_echo_it() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let outside = dir.path().join("private");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let c = LocalCluster::start(
        1,
        4,
        &format!("data_roots = [{:?}]", root.display().to_string()),
    );
    c.wait_leaders(&c.connect(), &[1], Duration::from_secs(60));
    let ep = endpoint(&c, 1);
    let job = |name: &str, train: &Path| {
        let spec = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &spec,
            format!(
                "name = \"{name}\"\nalgorithm = \"logistic_regression\"\n[run]\nclocks = 2\n[data]\nformat = \"libsvm\"\ntrain = \"{}\"\n[model]\npath = \"m.safetensors\"\n",
                train.display()
            ),
        )
        .unwrap();
        spec
    };
    // Outside the roots: refused before anything runs.
    let secret = outside.join("secret.libsvm");
    std::fs::write(&secret, "1 1:0.5\n").unwrap();
    let out = client(
        &ep,
        &[
            "submit",
            "--no-upload",
            job("out", &secret).to_str().unwrap(),
        ],
        c.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`data.train`") && err.contains("data_roots"),
        "{err}"
    );
    // Inside, but malformed: the job fails naming file and line, without
    // the bytes of the file.
    let bad = root.join("bad.libsvm");
    std::fs::write(&bad, "1 1:0.5\n1 PASSWORD=hunter2\n").unwrap();
    let id = submit(&c, &ep, &job("bad", &bad));
    let s = wait_for(&c, &ep, id, Duration::from_secs(60), "failure", |s| {
        s["state"] == "failed"
    });
    let e = s["error"].as_str().unwrap_or_default();
    assert!(e.contains("bad.libsvm:2"), "{e}");
    assert!(!e.contains("hunter2") && !e.contains("PASSWORD"), "{e}");
}

/// `petuum-client delete` and the retention policy remove an ended job
/// everywhere: its record, and on every node its checkpoints, worker
/// states and model (read back from each node's RocksDB after the nodes
/// stop). A running job cannot be deleted; another job's data stays.
#[test]
fn delete_and_retention_remove_ended_jobs_everywhere() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = LocalCluster::start(3, 4, "[retention]\nkeep_finished = 1\nkeep_days = 0\n");
    c.wait_leaders(&c.connect(), &[1, 2, 3], Duration::from_secs(60));
    let ep = endpoint(&c, 2);
    let spec = |name: &str, clocks: u64| {
        let p = c.path().join(format!("{name}.toml"));
        let model = c.path().join(format!("{name}.safetensors"));
        std::fs::write(&p, spam_lr_job(name, clocks, 2, &model)).unwrap();
        p
    };
    let done = |job: u64| {
        wait_for(&c, &ep, job, Duration::from_secs(120), "success", |s| {
            s["state"] == "succeeded"
        })
    };
    let a = submit(&c, &ep, &spec("a", 6));
    done(a);
    let b = submit(&c, &ep, &spec("b", 6));
    done(b);
    // A long job, with checkpoints, stays.
    let long = submit(&c, &ep, &spec("long", 1_000_000));
    wait_for(
        &c,
        &ep,
        long,
        Duration::from_secs(120),
        "ten checkpoints",
        |s| s["checkpoint"].as_u64().unwrap_or(0) >= 20,
    );
    let out = client(&ep, &["delete", &long.to_string()], c.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("cancel it first"), "{err}");
    // Retention keeps the newest ended job (b): a goes within a round.
    let start = Instant::now();
    loop {
        let out = client(&ep, &["status", &a.to_string()], c.path());
        if out.status.code() == Some(4) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "retention did not delete job {a}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // b by hand.
    let out = client(&ep, &["delete", &b.to_string()], c.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        client(&ep, &["status", &b.to_string()], c.path())
            .status
            .code(),
        Some(4)
    );
    let out = client(&ep, &["cancel", &long.to_string()], c.path());
    assert!(out.status.success());
    let s = wait_for(&c, &ep, long, Duration::from_secs(60), "cancelled", |s| {
        s["state"] == "cancelled"
    });
    // The checkpoint a resume would read (parts labelled with their last
    // clock).
    let label = s["checkpoint"].as_u64().unwrap() - 1;
    for id in 1..=3 {
        c.kill(id);
    }
    // Every part of that checkpoint is somewhere (its groups' leaders
    // applied it before the record named it complete), and each node
    // pruned older ones: it keeps the newest `keep_checkpoints` (3) of the
    // complete ones it was told of, and every later one (how many depends
    // on when it last looked at the record, but it saw the record at ten
    // checkpoints or more, so it keeps fewer than the job wrote).
    let (mut shards, mut workers) = (BTreeSet::new(), BTreeSet::new());
    for id in 1..=3 {
        let db = petuum_storage::NodeDb::open(petuum_storage::StorageConfig::new(
            c.data_dir(id).join("db"),
        ))
        .unwrap();
        let store = petuum_storage::CheckpointStore::new(db);
        for gone in [a, b] {
            let left = store.list(gone).unwrap();
            assert!(left.is_empty(), "node {id} still has job {gone}: {left:?}");
        }
        let kept = store.list(long).unwrap();
        if let Some(cp) = kept.iter().find(|cp| cp.clock == label) {
            shards.extend(cp.shards.iter().copied());
            workers.extend(cp.workers.iter().copied());
        }
        let complete = kept.iter().filter(|cp| cp.clock <= label).count() as u64;
        let written = label.div_ceil(2);
        assert!(
            (1..written).contains(&complete),
            "node {id} keeps {complete} of the {written} complete checkpoints of job {long} (record: clock {label}): {:?}",
            kept.iter().map(|cp| cp.clock).collect::<Vec<_>>()
        );
    }
    assert_eq!(
        (shards, workers),
        ((0..4).collect(), (0..2).collect()),
        "the parts of job {long}'s checkpoint at clock {label} on the three nodes"
    );
}

/// `run.workers_per_node = 2` puts both workers of the job on one node
/// (their clocks leave it together, kept apart in deterministic mode), and
/// the model is still the embedded run's, byte for byte.
#[test]
fn packed_workers_share_a_node_and_write_the_same_model() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (spec, reference) = reference(dir.path());
    let text = std::fs::read_to_string(&spec).unwrap();
    let packed_text = text.replacen("[run]\n", "[run]\nworkers_per_node = 2\n", 1);
    assert_ne!(text, packed_text);
    let packed = dir.path().join("packed.toml");
    std::fs::write(&packed, packed_text).unwrap();
    let c = LocalCluster::start(3, 16, "");
    c.wait_leaders(&c.connect(), &[1, 2, 3], Duration::from_secs(60));
    let ep1 = endpoint(&c, 1);
    let job = submit(&c, &ep1, &packed);
    let s = wait_for(&c, &ep1, job, Duration::from_secs(60), "placement", |s| {
        s["placement"].as_array().is_some_and(|p| p.len() == 2)
    });
    let placement = u64s(&s["placement"]);
    assert_eq!(placement[0], placement[1], "{placement:?}");
    finish_and_compare(&c, &ep1, job, &reference);
}

/// A job's clocks reach the shards of its span only: with `run.shards = 3`
/// on a 16-shard cluster the job is registered (its workers' clocks kept)
/// on the three shards of `JobShards::of_job` and on no other shard of any
/// node while it runs.
#[test]
fn a_jobs_clocks_reach_only_the_shards_of_its_span() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.safetensors");
    let text = spam_lr_job("spam-lr-span", 1_000_000, 0, &model).replacen(
        "shards = 16\n",
        "shards = 3\n",
        1,
    );
    assert!(text.contains("shards = 3\n"), "{text}");
    let spec = dir.path().join("span.toml");
    std::fs::write(&spec, text).unwrap();
    let c = LocalCluster::start(3, 16, "");
    let conn = c.connect();
    c.wait_leaders(&conn, &[1, 2, 3], Duration::from_secs(60));
    let ep1 = endpoint(&c, 1);
    let job = submit(&c, &ep1, &spec);
    wait_for(&c, &ep1, job, Duration::from_secs(60), "clocks", |s| {
        s["clock"].as_u64().unwrap_or(0) >= 3 && s["state"] == "running"
    });
    let span = JobShards::of_job(job, 3, 16);
    assert_eq!(span.len(), 3);
    // A row of table 0 on each shard: `read_local` reports the job's
    // worker clocks on that row's shard (the table need not exist).
    let row_on = |shard: u32| (0u64..).find(|&r| shard_of(0, r, 16) == shard).unwrap();
    let clocks_on = |node: u64, shard: u32| {
        conn.read_local(node, 0, row_on(shard), Some(job))
            .unwrap_or_else(|e| panic!("node {node} shard {shard}: {e}\n{}", c.logs()))
            .2
    };
    for shard in 0..16 {
        if span.contains(shard) {
            // Registered before the first clock: on the replicas that
            // applied the clocks seen above (all three, once caught up).
            let deadline = Instant::now() + Duration::from_secs(30);
            while (1..=3).any(|n| clocks_on(n, shard).len() != 2) {
                assert!(
                    Instant::now() < deadline,
                    "shard {shard} of the span lacks the job"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        } else {
            for n in 1..=3 {
                let w = clocks_on(n, shard);
                assert!(
                    w.is_empty(),
                    "shard {shard} (outside {span:?}) on node {n} has the job's clocks {w:?}"
                );
            }
        }
    }
    let out = client(&ep1, &["cancel", &job.to_string()], c.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `petuum-client list --json` through `ep`.
fn list(c: &LocalCluster, ep: &str) -> Vec<Value> {
    let out = client(ep, &["list", "--json"], c.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// A 3-node cluster on a network that can be partitioned, running the
/// job of `spec` past its checkpoint `at`: the cluster, a client of it,
/// the job and its record then.
fn partitionable_job(spec: &Path, at: u64) -> (LocalCluster, ClusterShards, u64, Value) {
    let c = LocalCluster::start_partitionable(3, 16, "");
    let client = c.connect();
    c.wait_leaders(&client, &[1, 2, 3], Duration::from_secs(60));
    let job = submit(&c, &endpoint(&c, 1), spec);
    let s = wait_for(
        &c,
        &endpoint(&c, 1),
        job,
        Duration::from_secs(60),
        "progress",
        |s| s["checkpoint"].as_u64().unwrap_or(0) >= at && s["state"] == "running",
    );
    (c, client, job, s)
}

/// A submission whose answer is lost (its request reached the node, the
/// connection died before the reply came back: a client's network, or a
/// node killed right after recording the job) is sent again by the client
/// under the same submission id, and the cluster answers with the job it
/// made: one job, not two. Through a real TCP proxy that drops the first
/// connection's replies, and closes it once the job is recorded. Then a
/// model download cut part way goes on through a node that answers, and a
/// cancel and a delete whose answers are lost are sent again under their
/// ids and take effect once (before the ids, the retried delete was told
/// "not found" and a retried cancel could be refused as "already
/// cancelled").
#[test]
fn lost_answers_act_once_and_a_cut_download_goes_on() {
    use petuum_tests::proxy::Proxy;
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let spec = lr_spec(dir.path(), &dir.path().join("unused.safetensors"));
    let c = LocalCluster::start(3, 8, "");
    c.wait_leaders(&c.connect(), &[1, 2, 3], Duration::from_secs(60));
    // The request arrives and the job is recorded; its answer is dropped.
    let ep2 = endpoint(&c, 2);
    let spec_arg = spec.to_str().unwrap();
    let (out, err) = answer_lost(
        &c,
        &ep2,
        &["submit", "--no-upload", "--json", spec_arg],
        || !list(&c, &ep2).is_empty(),
    );
    let answer: Value = serde_json::from_str(out.lines().last().unwrap_or("null")).unwrap();
    let jobs = list(&c, &ep2);
    assert_eq!(
        jobs.len(),
        1,
        "a retried submission made a second job: {jobs:?}"
    );
    assert_eq!(answer["id"], jobs[0]["id"], "{answer} vs {jobs:?}");
    eprintln!("submit whose first answer was lost:\n{err}");

    // A model download whose connection breaks part way starts again
    // through a node that answers, and writes the whole model.
    let job = answer["id"].as_u64().unwrap();
    let s = wait_for(&c, &ep2, job, Duration::from_secs(120), "the end", |s| {
        s["state"] == "succeeded" || s["state"] == "failed"
    });
    assert_eq!(s["state"], "succeeded", "{s}");
    let whole =
        petuum_tests::cluster::download_model(&c, &ep2, job, &dir.path().join("whole.safetensors"));
    assert!(whole.len() > 4096, "a model of {} bytes", whole.len());
    let cut = Proxy::cutting_first_replies(&c.nodes[0].addr, 2048);
    let got = dir.path().join("got.safetensors");
    let out = client(
        &cut.endpoint(),
        &["model", &job.to_string(), "-o", got.to_str().unwrap()],
        c.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    assert!(err.contains("lost "), "the download was never cut: {err}");
    assert!(std::fs::read(&got).unwrap() == whole, "the model differs");
    eprintln!("model download cut part way:\n{err}");

    // A cancel whose answer is lost: sent again through another node under
    // its id, it is answered, not refused as "already cancelled", and the
    // job records one cancel.
    let long = dir.path().join("long.toml");
    std::fs::write(
        &long,
        spam_lr_job("long", 100_000, 10, &dir.path().join("long.safetensors")),
    )
    .unwrap();
    let running = submit(&c, &ep2, &long);
    wait_for(&c, &ep2, running, Duration::from_secs(60), "a clock", |s| {
        s["state"] == "running" && s["clock"].as_u64() > Some(0)
    });
    let (_, err) = answer_lost(&c, &ep2, &["cancel", &running.to_string()], || {
        status(&ep2, running, c.path())
            .is_some_and(|s| s["cancel_requested"] == true || s["state"] == "cancelled")
    });
    eprintln!("cancel whose first answer was lost:\n{err}");
    wait_for(
        &c,
        &ep2,
        running,
        Duration::from_secs(60),
        "the cancel",
        |s| s["state"] == "cancelled",
    );
    let out = client(&ep2, &["logs", &running.to_string()], c.path());
    let logs = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(logs.matches("cancel requested").count(), 1, "{logs}");

    // A delete whose answer is lost: the retry finds the record gone and
    // is answered all the same.
    let (out, err) = answer_lost(&c, &ep2, &["delete", &job.to_string()], || {
        !list(&c, &ep2).iter().any(|j| j["id"] == job)
    });
    assert_eq!(out.trim(), format!("job {job} deleted"), "{err}");
    eprintln!("delete whose first answer was lost:\n{err}");
    // A delete of a job that never was is still refused.
    let out = client(&ep2, &["delete", "999999"], c.path());
    assert_eq!(out.status.code(), Some(4), "{out:?}");
}

/// Runs `petuum-client ARGS` through a proxy to node 1 that loses every
/// answer to its first request, until `applied` says the request took
/// effect; then breaks the connection. The client must go on through
/// another node and succeed; returns its stdout and stderr.
fn answer_lost(
    c: &LocalCluster,
    ep2: &str,
    args: &[&str],
    applied: impl Fn() -> bool,
) -> (String, String) {
    use petuum_tests::proxy::Proxy;
    let proxy = Proxy::muting_first_request(&c.nodes[0].addr);
    let mut child = std::process::Command::new(petuum_tests::bin("petuum-client"))
        .args(["--endpoint", &proxy.endpoint()])
        .args(args)
        .current_dir(c.path())
        .env("PETUUM_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !applied() {
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "`{}` never took effect (read through {ep2}): {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    proxy.drop_connections();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "`{}` failed: {err}", args.join(" "));
    assert!(err.contains("lost "), "the answer was never lost: {err}");
    (String::from_utf8_lossy(&out.stdout).to_string(), err)
}

/// A network partition, not a crash: the node running the job is cut off
/// from the other two (its process alive, its workers still computing and
/// sending, a client still reaching it). The majority replaces the run
/// under a new epoch and goes on; the old run, once the cut heals and its
/// held messages arrive late, is fenced and stops; a job submitted through
/// the cut-off node during the cut is recorded once, after it; and the
/// model is the uninterrupted run's, byte for byte.
#[test]
fn a_partitioned_host_is_replaced_fenced_and_rejoins() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (spec, reference) = reference(dir.path());
    let (c, _client, job, s) = partitionable_job(&spec, 20);
    let host = s["host"].as_u64().unwrap();
    let epoch = s["epoch"].as_u64().unwrap();
    let others: Vec<u64> = (1..=3).filter(|&n| n != host).collect();
    c.net().isolate(host, others.clone());
    let cut = Instant::now();
    let ep = endpoint(&c, others[0]);
    // The majority side moves the job and makes progress under the cut.
    let moved = wait_for(&c, &ep, job, Duration::from_secs(30), "reassignment", |s| {
        s["host"].as_u64().is_some_and(|h| h != host) && s["epoch"].as_u64() > Some(epoch)
    });
    let from = moved["checkpoint"].as_u64().unwrap();
    let progressed = wait_for(
        &c,
        &ep,
        job,
        Duration::from_secs(60),
        "progress under the cut",
        |s| s["checkpoint"].as_u64().unwrap_or(0) >= from + 20 || s["state"] == "succeeded",
    );
    eprintln!(
        "host {host} cut off at epoch {epoch}; job on node {} (epoch {}) after {:?}; checkpoint {} -> {}",
        moved["host"],
        moved["epoch"],
        cut.elapsed(),
        from,
        progressed["checkpoint"]
    );
    // The cut-off node gives no stale answer (its metadata replica is
    // behind): it names the current run or answers nothing.
    if let Some(seen) = petuum_tests::cluster::status(&endpoint(&c, host), job, c.path()) {
        assert!(
            seen["epoch"].is_null() || seen["epoch"].as_u64() >= moved["epoch"].as_u64(),
            "the cut-off node answered with a stale record: {seen}"
        );
    }
    // A submission through the cut-off node waits for the heal.
    let second = c.path().join("second.toml");
    std::fs::write(
        &second,
        petuum_tests::spam_lr_job("spam-lr-2", 20, 10, &c.path().join("second.safetensors")),
    )
    .unwrap();
    let submitter = std::process::Command::new(petuum_tests::bin("petuum-client"))
        .args(["--endpoint", &endpoint(&c, host), "submit"])
        .arg(&second)
        .arg("--json")
        .current_dir(c.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    c.net().heal();
    // The old run, its held messages delivered late, is fenced and stops.
    c.wait_for_log(
        host,
        |log| {
            log.contains(&format!(
                "the job was reassigned: aborting this run job={job} epoch={epoch}"
            ))
        },
        Duration::from_secs(30),
        "the cut-off run stopped after the heal",
    );
    let out = submitter.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "submit through the cut-off node: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
        .as_u64()
        .expect("a job id");
    finish_and_compare(&c, &ep, job, &reference);
    let s = wait_for(
        &c,
        &ep,
        second,
        Duration::from_secs(120),
        "the second job",
        |s| {
            assert_ne!(s["state"], "failed", "{s}");
            s["state"] == "succeeded"
        },
    );
    assert_eq!(s["name"], "spam-lr-2", "{s}");
    let names: Vec<String> = list(&c, &ep)
        .iter()
        .map(|j| j["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names, ["spam-lr", "spam-lr-2"], "one job per submission");
}

/// A partial partition: the link between the metadata leader (whose
/// scheduler probes every node) and one of the job's hosts breaks, while
/// the third node reaches both. The leader asks the third node to probe
/// the host for it (an indirect probe) and keeps the job where it is, with
/// no new run and no rollback; the host's reports to the metadata leader
/// (its checkpoint parts, its end) go through the third node, and the job
/// finishes under the cut with the uninterrupted run's model.
#[test]
fn a_broken_link_to_the_metadata_leader_neither_moves_nor_stops_the_job() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (spec, reference) = reference(dir.path());
    let (c, client, job, s) = partitionable_job(&spec, 10);
    let epoch = s["epoch"].as_u64().unwrap();
    let meta_leader = meta_leader(&client);
    // The job's two workers are on two nodes: one of them is not the
    // metadata leader.
    let host = u64s(&s["placement"])
        .into_iter()
        .find(|&n| n != meta_leader)
        .expect("a host other than the metadata leader");
    let third = (1..=3).find(|&n| n != meta_leader && n != host).unwrap();
    c.net().cut(meta_leader, host);
    c.wait_for_log(
        meta_leader,
        |log| {
            log.lines().any(|l| {
                l.contains("answers other members' probes but not this node's")
                    && l.ends_with(&format!("node={host}"))
            })
        },
        Duration::from_secs(30),
        "the leader reached the host through another member",
    );
    // Well past the failure detector's 1.5 s: the same run goes on.
    std::thread::sleep(Duration::from_secs(3));
    let during = petuum_tests::cluster::status(&endpoint(&c, third), job, c.path()).unwrap();
    assert_eq!(
        during["epoch"].as_u64(),
        Some(epoch),
        "the job was moved: {during}"
    );
    // The link stays cut until the job has ended: its host reports its
    // checkpoints and its end to the metadata leader through the third
    // node (before, each report waited for the heal, and after 30 s of
    // cut the host gave its reports up).
    let s = finish_and_compare(&c, &endpoint(&c, third), job, &reference);
    assert!(c.net().is_cut(meta_leader, host), "healed before the end");
    c.net().heal();
    let log = std::fs::read_to_string(&c.nodes[meta_leader as usize - 1].log).unwrap();
    assert!(
        !log.contains(&format!(
            "node declared dead: no answer to probes; its jobs move to live nodes node={host}"
        )),
        "the leader presumed node {host} dead"
    );
    assert_eq!(s["epoch"].as_u64(), Some(epoch), "the job was moved: {s}");
    assert_eq!(s["recoveries"].as_u64(), Some(0), "{s}");
}

/// The metadata leader cut off from the other voters keeps believing it
/// leads (nothing tells it otherwise until the heal). While the majority
/// goes on, it must not answer a client from its frozen state: it refuses,
/// naming the cause, and the client asks the cluster's other nodes (as the
/// cut-off node lists them), which answer with the majority's record.
#[test]
fn a_cut_off_metadata_leader_answers_no_stale_record() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("long.toml");
    std::fs::write(
        &spec,
        petuum_tests::spam_lr_job("long", 100_000, 10, &dir.path().join("m.safetensors")),
    )
    .unwrap();
    let c = LocalCluster::start_partitionable(3, 16, "");
    let cl = c.connect();
    c.wait_leaders(&cl, &[1, 2, 3], Duration::from_secs(60));
    let job = submit(&c, &endpoint(&c, 1), &spec);
    wait_for(
        &c,
        &endpoint(&c, 1),
        job,
        Duration::from_secs(60),
        "progress",
        |s| s["clock"].as_u64().unwrap_or(0) >= 10,
    );
    let leader = meta_leader(&cl);
    let other = (1..=3).find(|&n| n != leader).unwrap();
    c.net().isolate(leader, (1..=3).filter(|&n| n != leader));
    // The majority's record moves on (a new run, or more clocks).
    let at_cut = wait_for(
        &c,
        &endpoint(&c, other),
        job,
        Duration::from_secs(30),
        "an answer",
        |s| s["state"] == "running",
    );
    let moved = wait_for(
        &c,
        &endpoint(&c, other),
        job,
        Duration::from_secs(60),
        "the majority going on",
        |s| {
            s["epoch"].as_u64() > at_cut["epoch"].as_u64()
                || s["clock"].as_u64() > at_cut["clock"].as_u64().map(|c| c + 5)
        },
    );
    let key = |s: &Value| (s["epoch"].as_u64(), s["clock"].as_u64());
    for args in [
        vec!["status".to_string(), job.to_string(), "--json".into()],
        vec!["list".into(), "--json".into()],
    ] {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let out = client(&endpoint(&c, leader), &a, c.path());
        let err = String::from_utf8_lossy(&out.stderr);
        let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert!(
            err.contains("cannot reach a majority of the metadata group")
                && err.contains("going on through"),
            "{a:?} through the cut-off leader: {answer}\n{err}"
        );
        let record = if answer.is_array() {
            answer[0].clone()
        } else {
            answer
        };
        assert!(
            key(&record) >= key(&moved),
            "{a:?} through the cut-off leader answered an older record: {record}\nthan the majority's: {moved}"
        );
    }
    c.net().heal();
    // Healed, every answer it gives holds the majority's record: a read
    // through any node sees every command committed before it (the
    // leader's read index), so none is older than `moved`, read before the
    // heal. (Before, the healed node answered from its own replica the
    // moment it followed the new leader, trailing it; CI once saw a job
    // `succeeded` and then `running` through one node.)
    let healed = Instant::now();
    let mut answers = 0;
    while answers < 20 {
        assert!(
            healed.elapsed() < Duration::from_secs(30),
            "{answers} answers through node {leader} within 30 s of the heal"
        );
        // An error (the node still catching up) is no answer.
        if let Some(s) =
            status(&endpoint(&c, leader), job, c.path()).filter(|s| s["state"].is_string())
        {
            assert!(
                key(&s) >= key(&moved),
                "node {leader} answered an older record after the heal: {s}\nthan before it: {moved}"
            );
            answers += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A link cut between one of the job's hosts and a node that leads some of
/// the job's shard groups (not the metadata leader), both still reaching
/// the third node: the leader keeps its majority, so nothing moves it, and
/// the host's writes to it go through the third node (a relay) until the
/// link heals. The job goes on during the cut and ends with the
/// uninterrupted run's model.
#[test]
fn a_link_cut_between_a_host_and_a_leader_does_not_stop_the_job() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (spec, reference) = reference(dir.path());
    let (c, client, job, s) = partitionable_job(&spec, 10);
    let epoch = s["epoch"].as_u64().unwrap();
    let status = client.status(1).unwrap();
    let meta_leader = meta_leader(&client);
    // A host and a shard leader, neither of them the metadata leader's...
    // the pair must leave the metadata leader reaching both.
    let placement = u64s(&s["placement"]);
    let (host, leader) = placement
        .iter()
        .flat_map(|&h| (1..=3).map(move |l| (h, l)))
        .find(|&(h, l)| {
            h != l
                && l != meta_leader
                && h != meta_leader
                && status
                    .groups
                    .iter()
                    .any(|g| g.group != petuum_cluster::placement::META_GROUP && g.leader == l)
        })
        .unwrap_or_else(|| panic!("no host/leader pair away from the metadata leader {meta_leader}: placement {placement:?}"));
    c.net().cut(host, leader);
    let at_cut = s["clock"].as_u64().unwrap();
    let s = wait_for(
        &c,
        &endpoint(&c, meta_leader),
        job,
        Duration::from_secs(60),
        "progress during the cut",
        |s| s["clock"].as_u64().unwrap_or(0) >= at_cut + 30 || s["state"] == "succeeded",
    );
    c.net().heal();
    assert_eq!(
        s["epoch"].as_u64(),
        Some(epoch),
        "the run was replaced: {s}"
    );
    finish_and_compare(&c, &endpoint(&c, meta_leader), job, &reference);
}
