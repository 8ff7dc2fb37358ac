//! Shared helpers for the end-to-end tests in `tests/tests/`: locating the
//! real binaries and the shared data sets, and writing job specs.

pub mod cluster;
pub mod net;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The directory of the real data sets: `$PETUUM_DATASETS`, or
/// `../shared/datasets` beside the checkout.
/// This crate's directory (`tests/`): the one `cargo test` names at run
/// time, else the one it was compiled in. (A build cache shared with
/// another checkout can hold test binaries compiled elsewhere.)
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn datasets() -> PathBuf {
    let dir = std::env::var_os("PETUUM_DATASETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("../../shared/datasets"));
    assert!(
        dir.join("mnist").is_dir(),
        "data sets not found at {} (set PETUUM_DATASETS)",
        dir.display()
    );
    dir
}

/// Path of a binary of this workspace, built by `cargo build --release --bins`
/// into the same target directory as the test executables.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>; a binary of
    // this crate (the benchmarks) lives in target/<profile>/ itself.
    let here = exe.parent().expect("exe dir");
    let dir = if here.join(name).is_file() {
        here
    } else {
        here.parent().expect("target dir")
    };
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} not built: run `cargo build --release --bins` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// Runs a binary to completion.
pub fn run(bin_name: &str, args: &[&str], cwd: &Path) -> Output {
    Command::new(bin(bin_name))
        .args(args)
        .current_dir(cwd)
        .env("PETUUM_LOG", "warn")
        .output()
        .expect("spawn binary")
}

/// `petuumd run SPEC --json --data-dir DATA_DIR` (the embedded run of a
/// job spec) in `cwd`, to completion.
pub fn run_embedded(spec: &Path, data_dir: &Path, cwd: &Path) -> Output {
    run(
        "petuumd",
        &[
            "run",
            spec.to_str().expect("UTF-8 spec path"),
            "--json",
            "--data-dir",
            data_dir.to_str().expect("UTF-8 data dir"),
        ],
        cwd,
    )
}

/// Parses JSON lines from a command's stdout.
pub fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

/// A MNIST multi-class LR job spec on the shared data, with `run_extra`
/// lines appended to `[run]`.
pub fn mnist_job(model: &Path, run_extra: &str, params_extra: &str) -> String {
    let d = datasets().join("mnist");
    format!(
        r#"name = "mnist-softmax-test"
algorithm = "multiclass_lr"

[data]
format = "idx"
train = "{tr}"
train_labels = "{trl}"
test = "{te}"
test_labels = "{tel}"

[run]
{run_extra}

[model]
path = "{model}"

[params]
learning_rate = 0.5
decay = 1.0
batch_size = 100
batches_per_clock = 30
{params_extra}
"#,
        tr = d.join("train-images-idx3-ubyte.gz").display(),
        trl = d.join("train-labels-idx1-ubyte.gz").display(),
        te = d.join("t10k-images-idx3-ubyte.gz").display(),
        tel = d.join("t10k-labels-idx1-ubyte.gz").display(),
        model = model.display(),
    )
}

/// Runs `petuumd ARGS --json` in `dir` until it ends or has reported
/// `stop_after.0` clocks, in which case it gets signal `stop_after.1`.
/// Returns the last clock seen, the exit status code and the last line.
pub fn run_until(
    args: &[&str],
    dir: &Path,
    stop_after: Option<(u64, i32)>,
) -> (u64, Option<i32>, String) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(bin("petuumd"))
        .args(args)
        .arg("--json")
        .current_dir(dir)
        .env("PETUUM_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn petuumd");
    let out = BufReader::new(child.stdout.take().expect("piped"));
    let mut last_clock = 0;
    let mut last_line = String::new();
    let mut signalled = false;
    for line in out.lines() {
        let line = line.expect("petuumd output");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
        if v["event"] == "clock" {
            last_clock = v["clock"].as_u64().expect("clock");
            if let Some((at, sig)) = stop_after {
                if !signalled && last_clock >= at {
                    signalled = true;
                    cluster::signal(child.id(), sig);
                }
            }
        }
        last_line = line;
    }
    let status = child.wait().expect("wait for petuumd");
    (last_clock, status.code(), last_line)
}

/// Logistic regression on spamassassin's `spam.libsvm` (2 workers, BSP,
/// deterministic, seed 11, 16 shards): the job of the cluster job tests
/// and benchmark. The spec's `[model] path` is `model`.
pub fn spam_lr_job(name: &str, clocks: u64, checkpoint_every: u64, model: &Path) -> String {
    format!(
        r#"name = "{name}"
algorithm = "logistic_regression"
[data]
format = "libsvm"
train = "{}"
test_fraction = 0.2
[run]
workers = 2
consistency = "bsp"
deterministic = true
seed = 11
shards = 16
clocks = {clocks}
checkpoint_every = {checkpoint_every}
[params]
learning_rate = 10.0
batch_size = 32
batches_per_clock = 10
l2 = 0.0002
[model]
path = "{}"
"#,
        datasets().join("spamassassin/spam.libsvm").display(),
        model.display()
    )
}

/// An HTTP answer: status code, headers (lower-cased names), body.
pub type HttpAnswer = (u16, Vec<(String, String)>, Vec<u8>);

/// The `/metrics` text of each node serving at `addrs` (empty for one that
/// does not answer).
pub fn scrape(addrs: &[String]) -> Vec<String> {
    addrs
        .iter()
        .map(|a| match http_get(a, "/metrics", None) {
            Ok((200, _, body)) => String::from_utf8_lossy(&body).into_owned(),
            _ => String::new(),
        })
        .collect()
}

/// The sum, over `texts` (from [`scrape`]), of the values of the samples
/// whose line starts with `prefix`: a metric's name with all its labels,
/// or with the start of them (`name{`) for every series of the metric.
pub fn metric_sum(texts: &[String], prefix: &str) -> f64 {
    texts
        .iter()
        .flat_map(|t| t.lines())
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The nodes' `petuum_raft_commit_seconds` over every group, from
/// [`scrape`]'s texts: (sum, count).
pub fn raft_commits(texts: &[String]) -> (f64, f64) {
    histogram_total(texts, "petuum_raft_commit_seconds")
}

/// A histogram's (sum, count) over every node and label, from [`scrape`]'s
/// texts (`name` without the `_sum`/`_count` suffix).
pub fn histogram_total(texts: &[String], name: &str) -> (f64, f64) {
    let labelled = |suffix: &str| {
        metric_sum(texts, &format!("{name}_{suffix}{{"))
            + metric_sum(texts, &format!("{name}_{suffix} "))
    };
    (labelled("sum"), labelled("count"))
}

/// A histogram's cumulative bucket counts over every node and label, by
/// upper bound (seconds; `+Inf` as infinity), from [`scrape`]'s texts.
pub fn histogram_buckets(texts: &[String], name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut by_le: std::collections::BTreeMap<u64, (f64, f64)> = Default::default();
    for l in texts.iter().flat_map(|t| t.lines()) {
        let Some(rest) = l.strip_prefix(&prefix) else {
            continue;
        };
        let Some(le) = rest
            .split("le=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let Some(n) = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        by_le.entry(le.to_bits()).or_insert((le, 0.0)).1 += n;
    }
    // Keyed by the bounds' bits: for non-negative floats (and +Inf) their
    // order is the numbers' order.
    by_le.into_values().collect()
}

/// The bucket bound (ms) under which a share `q` of the observations
/// between two [`histogram_buckets`] readings fell: a quantile, to the
/// histogram's resolution.
pub fn bucket_quantile_ms(a: &[(f64, f64)], b: &[(f64, f64)], q: f64) -> f64 {
    let before = |le: f64| a.iter().find(|x| x.0 == le).map_or(0.0, |x| x.1);
    let total = b.last().map_or(0.0, |x| x.1 - before(x.0));
    b.iter()
        .find(|x| x.1 - before(x.0) >= q * total)
        .map_or(f64::NAN, |x| 1e3 * x.0)
}

/// The storage steps of a write, as histograms each node exports: a
/// write's proposal to its answer on the leader, a log append to its
/// durability, one WAL fsync, applying a batch of entries.
pub const WRITE_STEPS: [(&str, &str); 4] = [
    ("Raft commit (leaders)", "petuum_raft_commit_seconds"),
    ("append to durable", "petuum_raft_append_seconds"),
    ("WAL fsync", "petuum_wal_sync_seconds"),
    ("apply", "petuum_raft_apply_seconds"),
];

/// The [`WRITE_STEPS`]' (sum, count) in `texts`.
pub fn write_steps(texts: &[String]) -> Vec<(f64, f64)> {
    WRITE_STEPS
        .iter()
        .map(|(_, name)| histogram_total(texts, name))
        .collect()
}

/// Mean milliseconds per observation of each [`WRITE_STEPS`] between two
/// [`write_steps`] readings, with how many there were.
pub fn write_step_means(a: &[(f64, f64)], b: &[(f64, f64)]) -> String {
    WRITE_STEPS
        .iter()
        .zip(a.iter().zip(b))
        .map(|((what, _), (x, y))| {
            let n = y.1 - x.1;
            format!("{what} {:.2} ms ({n:.0})", 1e3 * (y.0 - x.0) / n.max(1.0))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A plain HTTP/1.1 GET to `addr` (`host:port`), with an `Authorization`
/// value when given: the status code, the headers (lower-cased names) and
/// the body (chunked transfer decoded).
pub fn http_get(
    addr: &str,
    path: &str,
    authorization: Option<&str>,
) -> std::io::Result<HttpAnswer> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let bad = |what: &str| std::io::Error::other(format!("{what} in the answer to GET {path}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad("a bad chunk"))?;
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..nl])
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim(),
                16,
            )
            .map_err(|_| bad("a bad chunk size"))?;
            if size == 0 {
                break;
            }
            let start = nl + 2;
            out.extend_from_slice(
                rest.get(start..start + size)
                    .ok_or_else(|| bad("a short chunk"))?,
            );
            rest = rest.get(start + size + 2..).unwrap_or(&[]);
        }
        body = out;
    }
    Ok((code, headers, body))
}

#[cfg(test)]
mod histogram_tests {
    use super::*;

    /// Two nodes' exposition of one histogram: buckets summed per bound,
    /// in the bounds' order (+Inf last); quantiles between two readings.
    #[test]
    fn buckets_sum_over_nodes_and_quantiles_read_between_readings() {
        let node = |a: u32, b: u32, c: u32| {
            format!(
                "x_seconds_bucket{{group=\"1\",le=\"0.001\"}} {a}\nx_seconds_bucket{{group=\"1\",le=\"0.01\"}} {b}\nx_seconds_bucket{{group=\"1\",le=\"+Inf\"}} {c}\nx_seconds_sum{{group=\"1\"}} 0.5\nx_seconds_count{{group=\"1\"}} {c}\n"
            )
        };
        let before = vec![node(1, 2, 2), node(0, 0, 0)];
        let after = vec![node(2, 9, 10), node(1, 1, 2)];
        let (a, b) = (
            histogram_buckets(&before, "x_seconds"),
            histogram_buckets(&after, "x_seconds"),
        );
        assert_eq!(a, vec![(0.001, 1.0), (0.01, 2.0), (f64::INFINITY, 2.0)]);
        assert_eq!(b, vec![(0.001, 3.0), (0.01, 10.0), (f64::INFINITY, 12.0)]);
        // Between the readings: 2 under 1 ms, 8 under 10 ms, 10 in all.
        assert_eq!(bucket_quantile_ms(&a, &b, 0.2), 1.0);
        assert_eq!(bucket_quantile_ms(&a, &b, 0.5), 10.0);
        assert_eq!(bucket_quantile_ms(&a, &b, 0.9), f64::INFINITY);
        assert_eq!(histogram_total(&after, "x_seconds"), (1.0, 12.0));
    }
}
