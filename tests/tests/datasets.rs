//! The dataset store with real `petuumd serve` processes (docs/jobs.md,
//! "Data that reaches every node"): data only the submitting side can see
//! reaches every node by upload; uploading the same bytes again sends
//! nothing; a dataset in use cannot be removed and a removed one leaves
//! every node; a corrupt chunk is caught and fetched again from another
//! holder; a URL is fetched once and every node reads the same bytes; a
//! lying upload is refused; an upload whose connection breaks goes on
//! where it stopped, and one whose node dies starts again on another.

use petuum_tests::cluster::{client, download_model as model, submit, wait_for, LocalCluster};
use petuum_tests::{datasets, run_embedded};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn endpoint(c: &LocalCluster, id: u64) -> String {
    format!("http://{}", c.nodes[id as usize - 1].addr)
}

/// Logistic regression on spamassassin (deterministic), reading `train`
/// as written (relative to the spec's directory, or a URL / dataset).
fn spec(dir: &Path, name: &str, train: &str, workers: u32, clocks: u32) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"name = "{name}"
algorithm = "logistic_regression"
[data]
format = "libsvm"
train = "{train}"
test_fraction = 0.2
[run]
workers = {workers}
consistency = "bsp"
deterministic = true
seed = 5
shards = 8
clocks = {clocks}
[params]
learning_rate = 10.0
batch_size = 32
batches_per_clock = 10
[model]
path = "{name}.safetensors"
"#
        ),
    )
    .unwrap();
    path
}

fn json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("null")).unwrap()
}

/// The model of an embedded run of `spec` (the reference bytes).
fn reference(spec: &Path, dir: &Path) -> Vec<u8> {
    let out = run_embedded(spec, &dir.join("embedded"), dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = spec.file_stem().unwrap().to_string_lossy().to_string();
    std::fs::read(dir.join(format!("{name}.safetensors"))).unwrap()
}

/// The id in `submit`'s text output (`job N `name` submitted ...`).
fn job_id_in(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("job "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no job id in {text}"))
}

fn succeeded(c: &LocalCluster, ep: &str, job: u64) -> Value {
    let s = wait_for(
        c,
        ep,
        job,
        Duration::from_secs(240),
        "the job to end",
        |s| {
            matches!(
                s["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        },
    );
    assert_eq!(s["state"], "succeeded", "{s}\n{}", c.logs());
    s
}

fn datasets_ls(c: &LocalCluster, ep: &str) -> Vec<Value> {
    json(&client(ep, &["data", "ls", "--json"], c.path()))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn copy_on(c: &LocalCluster, node: u64, sha: &str) -> PathBuf {
    c.data_dir(node).join("datasets").join(sha)
}

/// A job whose data lies in a directory only the submitting side has
/// (outside the nodes' data_roots, and deleted right after submission)
/// runs from the uploaded copy and ends with the embedded run's model,
/// byte for byte. The same bytes again are not sent; `data rm` is refused
/// while a job uses the dataset and, once allowed, removes every node's
/// copy.
#[test]
fn data_only_the_submitter_sees_reaches_every_node() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let roots = tempfile::tempdir().unwrap();
    let c = LocalCluster::start(
        3,
        8,
        &format!("data_roots = [{:?}]", roots.path().display().to_string()),
    );
    c.wait_leaders(&c.connect(), &[1, 2, 3], Duration::from_secs(60));
    let ep = endpoint(&c, 1);
    let mine = tempfile::tempdir().unwrap();
    let data = mine.path().join("spam.libsvm");
    std::fs::copy(datasets().join("spamassassin/spam.libsvm"), &data).unwrap();
    let job = spec(mine.path(), "spam", "spam.libsvm", 2, 30);
    let want = reference(&job, mine.path());

    // Without the upload the nodes refuse the path (outside data_roots).
    let out = client(
        &ep,
        &["submit", "--no-upload", job.to_str().unwrap()],
        c.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("data_roots"));

    let out = client(&ep, &["submit", job.to_str().unwrap()], c.path());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("data.train: spam.libsvm") && text.contains("uploaded"),
        "{text}"
    );
    std::fs::remove_file(&data).unwrap();
    let id = job_id_in(&text);
    succeeded(&c, &ep, id);
    assert_eq!(
        model(&c, &ep, id, &mine.path().join("got.safetensors")),
        want,
        "the uploaded dataset's model differs from the embedded run's"
    );

    let ls = datasets_ls(&c, &ep);
    assert_eq!(ls.len(), 1, "{ls:?}");
    let sha = ls[0]["sha256"].as_str().unwrap().to_string();
    assert_eq!(ls[0]["name"], "spam.libsvm");
    assert_eq!(ls[0]["size"], 8297811);
    assert_eq!(ls[0]["ready"], true);
    assert!(ls[0]["holders"].as_array().unwrap().len() >= 2, "{ls:?}");

    // The same bytes again: nothing is sent.
    std::fs::copy(datasets().join("spamassassin/spam.libsvm"), &data).unwrap();
    let long = spec(mine.path(), "long", "spam.libsvm", 2, 100_000);
    let out = client(&ep, &["submit", long.to_str().unwrap()], c.path());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("already in the cluster"), "{text}");
    let long_id = job_id_in(&text);
    wait_for(&c, &ep, long_id, Duration::from_secs(120), "running", |s| {
        s["state"] == "running"
    });
    // In use: refused, naming the job.
    let out = client(&ep, &["data", "rm", &sha[..12]], c.path());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("{long_id}")) && err.contains("used by"),
        "{err}"
    );
    assert!(copy_on(&c, 1, &sha).is_dir());
    client(&ep, &["cancel", &long_id.to_string()], c.path());
    wait_for(
        &c,
        &ep,
        long_id,
        Duration::from_secs(120),
        "cancelled",
        |s| s["state"] == "cancelled",
    );
    json(&client(&ep, &["data", "rm", &sha, "--json"], c.path()));
    assert!(datasets_ls(&c, &ep).is_empty());
    let start = Instant::now();
    while (1..=3).any(|n| copy_on(&c, n, &sha).exists()) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "a removed dataset's copies stay on the nodes\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Flips a byte of chunk 1 (of 8) in two of the three copies: the nodes
/// that run the job find it, fetch the chunk again from a holder whose
/// copy is intact, and the job ends with the reference model.
#[test]
fn a_corrupt_chunk_is_caught_and_fetched_again_from_another_holder() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = LocalCluster::start(3, 8, "");
    c.wait_leaders(&c.connect(), &[1, 2, 3], Duration::from_secs(60));
    let ep = endpoint(&c, 1);
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read(datasets().join("spamassassin/spam.libsvm")).unwrap();
    let data = dir.path().join("spam.libsvm");
    std::fs::write(&data, &original).unwrap();
    let put = json(&client(
        &ep,
        &["data", "put", data.to_str().unwrap(), "--json"],
        c.path(),
    ));
    let sha = put["sha256"].as_str().unwrap().to_string();
    // Every node holds it (an upload is acknowledged at a majority; the
    // sweep copies the rest).
    let start = Instant::now();
    while (1..=3).any(|n| !copy_on(&c, n, &sha).join("spam.libsvm").is_file()) {
        assert!(start.elapsed() < Duration::from_secs(60), "{}", c.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let at = (1 << 20) + 4321;
    for n in [1, 2] {
        let f = copy_on(&c, n, &sha).join("spam.libsvm");
        let mut bytes = std::fs::read(&f).unwrap();
        bytes[at] ^= 0x5a;
        std::fs::write(&f, bytes).unwrap();
    }
    let want = reference(&spec(dir.path(), "rot", "spam.libsvm", 3, 20), dir.path());
    let job = spec(dir.path(), "rot", &format!("sha256:{sha}"), 3, 20);
    let id = submit(&c, &ep, &job);
    succeeded(&c, &ep, id);
    assert_eq!(
        model(&c, &ep, id, &dir.path().join("got.safetensors")),
        want,
        "the job read rotten bytes"
    );
    // The nodes that ran a worker of the job verified their copy first.
    let ran = |n: u64| {
        std::fs::read_to_string(&c.nodes[n as usize - 1].log)
            .unwrap_or_default()
            .contains(&format!("starting this node's workers job={id} "))
    };
    let repaired: Vec<u64> = [1, 2].into_iter().filter(|&n| ran(n)).collect();
    assert!(
        !repaired.is_empty(),
        "no corrupted node ran the job\n{}",
        c.logs()
    );
    for n in repaired {
        let f = copy_on(&c, n, &sha).join("spam.libsvm");
        assert!(
            std::fs::read(&f).unwrap() == original,
            "node {n} ran the job but its copy is still corrupt"
        );
    }
    assert!(c.logs().contains("corrupt"), "{}", c.logs());
}

/// A URL is fetched by the node that takes the submission, stored as a
/// dataset, and the job runs on those bytes on every node; an upload that
/// lies about its hash is refused.
#[test]
fn a_url_is_fetched_once_and_a_lying_upload_is_refused() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = LocalCluster::start(3, 8, "[datasets]\nallow_private_urls = true");
    c.wait_leaders(&c.connect(), &[1, 2, 3], Duration::from_secs(60));
    let ep = endpoint(&c, 2);
    let dir = tempfile::tempdir().unwrap();
    let body = std::fs::read(datasets().join("spamassassin/spam.libsvm")).unwrap();
    let url = serve_once(body.clone());
    let want = {
        std::fs::write(dir.path().join("spam.libsvm"), &body).unwrap();
        reference(&spec(dir.path(), "web", "spam.libsvm", 2, 20), dir.path())
    };
    let job = spec(dir.path(), "web", &url, 2, 20);
    let id = submit(&c, &ep, &job);
    succeeded(&c, &ep, id);
    assert_eq!(
        model(&c, &ep, id, &dir.path().join("got.safetensors")),
        want
    );
    let ls = datasets_ls(&c, &ep);
    assert_eq!(ls.len(), 1, "{ls:?}");
    assert_eq!(ls[0]["source"].as_str().unwrap(), url.as_str());
    assert_eq!(ls[0]["name"], "spam.libsvm");

    // An upload whose bytes are not what it announced.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        let mut jobs = petuum_proto::v1::jobs_client::JobsClient::connect(ep.clone())
            .await
            .unwrap();
        let msg = petuum_proto::v1::UploadChunk {
            sha256: "ab".repeat(32),
            name: "x.csv".into(),
            size: 5,
            data: b"hello".to_vec().into(),
            ..Default::default()
        };
        jobs.upload(futures::stream::iter(vec![msg]))
            .await
            .unwrap_err()
    });
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("sha256"), "{status:?}");
    assert_eq!(
        datasets_ls(&c, &ep).len(),
        1,
        "a refused upload left a record"
    );

    // An empty file: sent without a hash (no dataset of its size yet),
    // named by the node; the second time the client hashes it, finds it
    // and sends nothing.
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, b"").unwrap();
    let (first, again) = rt.block_on(async {
        let mut client = petuum_tests::cluster::connect_client(&ep).await;
        let first = client.upload(&empty).await.expect("an empty file uploads");
        (first, client.upload(&empty).await.expect("the same again"))
    });
    assert!(first.sent && !again.sent, "{first:?} {again:?}");
    assert_eq!(
        first.info.sha256,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        (first.info.size, again.info.sha256),
        (0, first.info.sha256.clone())
    );
    assert_eq!(datasets_ls(&c, &ep).len(), 2);

    // Reads come from the node's own metadata replica, which may trail
    // the leader: each upload's answer waits until that replica applied
    // it, so a read through the same node right after lists it (the
    // second upload of the empty file above depended on this too). Run
    // through each node: at least two of them follow the leader.
    for node in 1..=3u64 {
        let ep = endpoint(&c, node);
        rt.block_on(async {
            let mut client = petuum_tests::cluster::connect_client(&ep).await;
            for i in 0..10u64 {
                let f = dir.path().join(format!("n{node}-{i}.csv"));
                std::fs::write(&f, format!("{node},{i}\n").repeat(1 + i as usize)).unwrap();
                let up = client.upload(&f).await.expect("a small file uploads");
                let listed = client.datasets().await.expect("datasets lists");
                assert!(
                    listed.iter().any(|d| d.sha256 == up.info.sha256 && d.ready),
                    "node {node}: upload {i} not listed by the node that took it: {listed:?}"
                );
            }
        });
    }
}

/// `size` bytes that repeat nowhere (each 8 a step of a xorshift), so
/// that every chunk differs.
fn noise(path: &Path, size: usize) {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut bytes = Vec::with_capacity(size + 8);
    while bytes.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes.truncate(size);
    std::fs::write(path, bytes).unwrap();
}

/// `petuum-client data put FILE --json` through `endpoint`, started now.
fn put(c: &LocalCluster, endpoint: &str, file: &Path) -> std::process::Child {
    std::process::Command::new(petuum_tests::bin("petuum-client"))
        .args(["--endpoint", endpoint, "data", "put", "--json"])
        .arg(file)
        .current_dir(c.path())
        .env("PETUUM_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn petuum-client")
}

/// Its JSON answer (a dataset), and what it said on stderr.
fn put_done(child: std::process::Child) -> (Value, String) {
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "data put failed: {err}");
    (json(&out), err)
}

/// Where the client said it resumed an upload (its stderr).
fn resumed_at(err: &str) -> u64 {
    err.split("resuming the upload at byte ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the client did not resume: {err}"))
}

/// Waits (up to a minute) until the upload through `proxy` reached its
/// limit, `what`.
fn stalled(proxy: &petuum_tests::proxy::Proxy, what: &str) {
    let t0 = Instant::now();
    while !proxy.tripped() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the upload never reached {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Uploads on a network that breaks (docs/jobs.md, "Data that reaches
/// every node"). A connection cut after 40% of a 48 MiB file: the client
/// asks the node how much arrived and sends only the rest (the proxy
/// carries well under one and a half files); the stored dataset is the
/// file's bytes. Then a connection that stalls while its node is
/// SIGKILLed: the client goes to another node of the cluster and starts
/// again there, and the upload completes.
#[test]
fn a_broken_upload_resumes_and_one_whose_node_dies_starts_again_elsewhere() {
    use petuum_tests::proxy::{OnLimit, Proxy};
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = LocalCluster::start(3, 8, "");
    c.wait_leaders(&c.connect(), &[1, 2, 3], Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let size = 48usize << 20;
    let sha_of = |p: &Path| petuum_client::hash_file_with(p, |_| {}).unwrap().0;

    let file = dir.path().join("cut.bin");
    noise(&file, size);
    let cut = Proxy::start(&c.nodes[0].addr, (size as u64) * 2 / 5, OnLimit::Cut);
    let (up, err) = put_done(put(&c, &cut.endpoint(), &file));
    assert!(cut.tripped(), "the connection was never cut: {err}");
    let resumed_at = resumed_at(&err);
    assert!(
        resumed_at > (size as u64) / 4,
        "resumed at {resumed_at}: {err}"
    );
    assert_eq!(up["sha256"].as_str().unwrap(), sha_of(&file), "{up}");
    assert_eq!(up["size"].as_u64().unwrap(), size as u64);
    assert!(
        cut.forwarded() < (size as u64) * 3 / 2,
        "{} bytes went through the proxy for a {size}-byte file: not resumed",
        cut.forwarded()
    );
    eprintln!(
        "cut upload: resumed at byte {resumed_at}, {} bytes through the proxy for {size}:\n{err}",
        cut.forwarded()
    );

    // The node behind a stalled connection dies; its other nodes are
    // known to the client from the cluster's status.
    let file = dir.path().join("dies.bin");
    noise(&file, size + 12345);
    let stall = Proxy::start(&c.nodes[0].addr, (size as u64) / 2, OnLimit::Stall);
    let child = put(&c, &stall.endpoint(), &file);
    stalled(&stall, "its middle");
    c.kill(1);
    stall.close_all();
    let (up, err) = put_done(child);
    assert!(
        err.contains("uploading again from the start through"),
        "{err}"
    );
    eprintln!("upload through a node that died:\n{err}");
    assert_eq!(up["sha256"].as_str().unwrap(), sha_of(&file), "{up}");
    let ls = datasets_ls(&c, &endpoint(&c, 2));
    assert!(
        ls.iter()
            .any(|d| d["sha256"] == up["sha256"] && d["ready"] == true),
        "{ls:?}"
    );
}

/// An upload whose node is SIGKILLed and restarted part way (a preempted
/// or crashed daemon that systemd starts again) goes on from what that
/// node had made durable, not from byte 0: a one-node cluster, a 200 MiB
/// file whose connection stalls at 150 MiB (the node marks its bytes
/// durable every 64 MiB), the node killed and started again, the stalled
/// connection closed; the client finds the node back, asks how much it
/// holds, and sends the rest. (Before, a restart lost every byte: the
/// client started again from 0.)
#[test]
fn an_upload_goes_on_after_its_node_restarts() {
    use petuum_tests::proxy::{OnLimit, Proxy};
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = LocalCluster::start(1, 4, "");
    c.wait_leaders(&c.connect(), &[1], Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let size = 200usize << 20;
    let file = dir.path().join("restart.bin");
    noise(&file, size);
    let stall = Proxy::start(&c.nodes[0].addr, 150 << 20, OnLimit::Stall);
    let child = put(&c, &stall.endpoint(), &file);
    stalled(&stall, "150 MiB");
    c.kill(1);
    c.spawn(1);
    stall.drop_connections();
    let (up, err) = put_done(child);
    let resumed_at = resumed_at(&err);
    assert!(
        (64 << 20..=150 << 20).contains(&resumed_at),
        "resumed at {resumed_at}: {err}"
    );
    let sha = petuum_client::hash_file_with(&file, |_| {}).unwrap().0;
    assert_eq!(up["sha256"].as_str().unwrap(), sha, "{up}");
    assert_eq!(up["size"].as_u64().unwrap(), size as u64);
    let log = c.logs();
    assert!(
        log.contains("before it restarted is kept for its client to resume"),
        "{log}"
    );
    eprintln!("upload across a restart: resumed at byte {resumed_at}:\n{err}");
}

/// Serves `body` at `http://127.0.0.1:PORT/data/spam.libsvm` to one
/// request (HTTP/1.1, Connection: close) and returns the URL.
fn serve_once(body: Vec<u8>) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/data/spam.libsvm", l.local_addr().unwrap());
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut req = [0u8; 4096];
            let _ = s.read(&mut req);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    url
}
