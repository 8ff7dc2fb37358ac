//! Jobs benchmark (docs/performance.md, "Jobs"), on three local
//! `petuumd serve` nodes, with the embedded run of the same job beside it:
//!
//! 1. checkpoint overhead: the same logistic-regression job (spamassassin,
//!    2 workers, BSP, deterministic) with `checkpoint_every` off, 10 and 1,
//!    each as a share of the embedded runs' median (three runs) without
//!    checkpoints and with the same `checkpoint_every`;
//! 2. recovery: SIGKILL the node running a job, N times: time until the
//!    job is reassigned, time until it reports progress again from its
//!    checkpoint, and the clocks of work lost.
//!
//! Usage: petuum-jobs-bench [CLOCKS] [KILLS]   (release build:
//! `cargo build --release --bins && target/release/petuum-jobs-bench`)
//!
//! `petuum-jobs-bench mnist [RUNS]` instead runs the README's job
//! (`examples/jobs/mnist-softmax.toml`, after `scripts/setup.sh` fetched
//! MNIST) embedded and submitted to three local nodes, alternately, and
//! prints wall time (submission to the end as the client sees it), the
//! job's own run time and test accuracy of each.
//! `petuum-jobs-bench managed [RUNS] [MBPS]` runs the logistic-regression
//! (`examples/jobs/spam-logistic-regression.toml`) and matrix-factorization
//! (`examples/jobs/movielens-mf-sgd.toml`) examples on three local nodes
//! without and with `run.bandwidth_mbps = MBPS` (managed communication,
//! default 100), alternately, and prints each run's objective over time:
//! the time each took to reach the objective both runs of a pair reached,
//! and the final objective and held-out metrics.
//! `PETUUM_BENCH_RUN` sets lines of the jobs' `[run]` tables (e.g.
//! `workers_per_node = 1`, replacing the file's; for MNIST, of the
//! cluster submission only).
//! `PETUUM_BENCH_SHARDS` sets the cluster's shard count (default 16);
//! `PETUUM_BENCH_CONFIG` is appended to every node's config (e.g.
//! `$'[raft]\ncoalesce_messages = true'`).
//! `PETUUM_BENCH_CHECKPOINTS` sets the checkpoint settings of part 1 and
//! their order (default `0,10,1`); a setting listed more than once also
//! gets the median of its jobs (e.g. `0,10,0,10,0,10`).

use petuum_client::{Client, JobInfo};
use petuum_tests::cluster::{connect_client, LocalCluster};
use petuum_tests::{run_embedded, spam_lr_job};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Extra node config lines from `PETUUM_BENCH_CONFIG`.
fn bench_config() -> String {
    std::env::var("PETUUM_BENCH_CONFIG").unwrap_or_default()
}

/// `text` with `extra`'s lines (`key = value`) in its `[run]` table,
/// replacing the lines for the same keys.
fn with_run_lines(text: &str, extra: &str) -> String {
    let keys: Vec<&str> = extra
        .lines()
        .filter_map(|l| l.split('=').next())
        .map(str::trim)
        .collect();
    let text: String = text
        .lines()
        .filter(|l| {
            l.split('=')
                .next()
                .map(str::trim)
                .is_none_or(|k| !keys.contains(&k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    text.replacen("[run]\n", &format!("[run]\n{extra}\n"), 1)
}

/// The logistic-regression job's spec (`PETUUM_BENCH_RUN` lines in its
/// `[run]` table, for both the embedded and the cluster runs).
fn spec(dir: &Path, name: &str, clocks: u64, every: u64) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let model = dir.join(format!("{name}.safetensors"));
    let mut text = spam_lr_job(name, clocks, every, &model);
    if let Ok(extra) = std::env::var("PETUUM_BENCH_RUN") {
        text = with_run_lines(&text, &extra);
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

async fn poll(c: &mut Client, job: u64, what: &str, f: impl Fn(&JobInfo) -> bool) -> JobInfo {
    let start = Instant::now();
    loop {
        if let Ok(i) = c.status(job).await {
            if f(&i) {
                return i;
            }
            assert_ne!(i.state, "failed", "job failed: {}", i.error);
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The README's MNIST job, embedded and on 3 local nodes, `runs` times
/// each, alternately.
fn mnist(runs: usize) {
    let spec = petuum_tests::manifest_dir().join("../examples/jobs/mnist-softmax.toml");
    let spec = spec
        .canonicalize()
        .expect("examples/jobs/mnist-softmax.toml");
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let shards = std::env::var("PETUUM_BENCH_SHARDS").map_or(16, |s| s.parse().unwrap());
    // Lines added to the cluster submission's [run] table (e.g.
    // "workers_per_node = 2"); the embedded run takes the file as it is.
    let run_extra = std::env::var("PETUUM_BENCH_RUN").ok();
    let c = LocalCluster::start(3, shards, &bench_config());
    c.wait_leaders(&c.connect(), &[1, 2, 3], Duration::from_secs(60));
    let ep = format!("http://{}", c.nodes[0].addr);
    println!(
        "{:<28} {:>8} {:>8} {:>10}",
        "README MNIST job", "wall s", "job s", "test acc"
    );
    for i in 0..runs {
        let t = Instant::now();
        let out = run_embedded(&spec, &dir.path().join(format!("embedded{i}")), dir.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let wall = t.elapsed().as_secs_f64();
        let last: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap())
                .unwrap();
        println!(
            "{:<28} {:>8.2} {:>8.2} {:>10.4}",
            "embedded (petuumd run)",
            wall,
            last["seconds"].as_f64().unwrap(),
            last["test_accuracy"].as_f64().unwrap_or(f64::NAN)
        );
        let t = Instant::now();
        let info = rt.block_on(async {
            let mut cl = connect_client(&ep).await;
            let job = match &run_extra {
                None => cl.submit(&spec).await.unwrap().id,
                Some(extra) => {
                    let text = with_run_lines(&std::fs::read_to_string(&spec).unwrap(), extra);
                    let dir = spec.parent().unwrap();
                    cl.submit_text(&text, "mnist-softmax.toml", dir)
                        .await
                        .unwrap()
                        .id
                }
            };
            poll(&mut cl, job, "success", |i| i.state == "succeeded").await
        });
        println!(
            "{:<28} {:>8.2} {:>8.2} {:>10.4}",
            "3 nodes x 3 replicas",
            t.elapsed().as_secs_f64(),
            info.seconds,
            info.metrics
                .get("test_accuracy")
                .copied()
                .unwrap_or(f64::NAN)
        );
    }
}

/// First time (job seconds) at which a run's objective was at most `target`.
fn time_to(curve: &[(f64, f64)], target: f64) -> f64 {
    curve
        .iter()
        .find(|&&(_, o)| o <= target)
        .map_or(f64::NAN, |&(t, _)| t)
}

/// Managed communication on LR and MF: without and with a budget.
fn managed(runs: usize, mbps: f64) {
    let examples = petuum_tests::manifest_dir()
        .join("../examples/jobs")
        .canonicalize()
        .expect("examples/jobs");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let shards = std::env::var("PETUUM_BENCH_SHARDS").map_or(16, |s| s.parse().unwrap());
    let http: Vec<u16> = (0..3).map(|_| petuum_tests::cluster::free_port()).collect();
    let c = LocalCluster::start_with(3, shards, |id| {
        format!(
            "http_listen = \"127.0.0.1:{}\"\n{}",
            http[id as usize - 1],
            bench_config()
        )
    });
    c.wait_leaders(&c.connect(), &[1, 2, 3], Duration::from_secs(60));
    let ep = format!("http://{}", c.nodes[0].addr);
    // Bytes the job's workers sent (`what`: "preview" or "pushed"), summed
    // over the nodes' /metrics.
    let sent = |what: &str, job: u64| -> f64 {
        let series = format!("petuum_job_{what}_bytes_total{{job_id=\"{job}\"}} ");
        http.iter()
            .filter_map(|p| {
                petuum_tests::http_get(&format!("127.0.0.1:{p}"), "/metrics", None).ok()
            })
            .flat_map(|(_, _, body)| {
                String::from_utf8_lossy(&body)
                    .lines()
                    .filter_map(|l| {
                        l.strip_prefix(series.as_str())
                            .and_then(|v| v.trim().parse::<f64>().ok())
                    })
                    .collect::<Vec<_>>()
            })
            .sum()
    };
    println!(
        "{:<18} {:<14} {:>7} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10} {:>9}  held-out",
        "job",
        "budget",
        "job s",
        "obj @25%",
        "obj @50%",
        "obj @75%",
        "final obj",
        "s to fin",
        "preview MB",
        "pushed MB"
    );
    for file in ["spam-logistic-regression.toml", "movielens-mf-sgd.toml"] {
        let text = std::fs::read_to_string(examples.join(file)).unwrap();
        let with = text.replacen("[run]\n", &format!("[run]\nbandwidth_mbps = {mbps}\n"), 1);
        assert_ne!(text, with, "{file} has a [run] table");
        for _ in 0..runs {
            let mut pair = Vec::new();
            // PETUUM_BENCH_MANAGED_FIRST=1 runs the managed job first in
            // each pair (to tell the budget from the order).
            let mut order = [("none", &text), ("managed", &with)];
            if std::env::var_os("PETUUM_BENCH_MANAGED_FIRST").is_some() {
                order.reverse();
            }
            for (label, spec) in order {
                let (info, curve) = rt.block_on(async {
                    let mut cl = connect_client(&ep).await;
                    let job = cl.submit_text(spec, file, &examples).await.unwrap().id;
                    let mut curve = Vec::new();
                    let info = cl
                        .watch(job, |i| {
                            if i.has_progress && i.objective.is_finite() {
                                curve.push((i.elapsed_s, i.objective));
                            }
                        })
                        .await
                        .unwrap();
                    assert_eq!(info.state, "succeeded", "{}", info.error);
                    (info, curve)
                });
                let mb = (
                    sent("preview", info.id) / 1e6,
                    sent("pushed", info.id) / 1e6,
                );
                pair.push((label, info, curve, mb));
            }
            let common = pair
                .iter()
                .map(|(_, i, _, _)| i.objective)
                .fold(f64::NEG_INFINITY, f64::max);
            // The objective at a quarter, half and three quarters of the
            // unmanaged run's time, averaged over the reports within 5% of
            // its time around each (a clock's objective is noisy).
            let span = pair
                .iter()
                .find(|(l, ..)| *l == "none")
                .expect("an unmanaged run")
                .1
                .seconds;
            let at = |curve: &[(f64, f64)], frac: f64| -> f64 {
                let (lo, hi) = ((frac - 0.05) * span, (frac + 0.05) * span);
                let v: Vec<f64> = curve
                    .iter()
                    .filter(|(t, _)| (lo..=hi).contains(t))
                    .map(|&(_, o)| o)
                    .collect();
                v.iter().sum::<f64>() / v.len() as f64
            };
            for (label, info, curve, mb) in &pair {
                let budget = if *label == "none" {
                    "none".to_string()
                } else {
                    format!("{mbps} Mbit/s")
                };
                let held_out = ["test_accuracy", "test_rmse"]
                    .iter()
                    .find_map(|k| info.metrics.get(*k).map(|v| format!("{k} {v:.4}")))
                    .unwrap_or_default();
                println!(
                    "{:<18} {:<14} {:>7.2} {:>10.5} {:>10.5} {:>10.5} {:>10.5} {:>8.2} {:>10.2} {:>9.2}  {}",
                    info.name,
                    budget,
                    info.seconds,
                    at(curve, 0.25),
                    at(curve, 0.5),
                    at(curve, 0.75),
                    info.objective,
                    time_to(curve, common),
                    mb.0,
                    mb.1,
                    held_out
                );
            }
        }
    }
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("managed") {
        let runs = std::env::args().nth(2).map_or(2, |r| {
            r.parse()
                .expect("usage: petuum-jobs-bench managed [RUNS] [MBPS]")
        });
        let mbps = std::env::args().nth(3).map_or(100.0, |r| {
            r.parse()
                .expect("usage: petuum-jobs-bench managed [RUNS] [MBPS]")
        });
        return managed(runs, mbps);
    }
    if std::env::args().nth(1).as_deref() == Some("mnist") {
        let runs = std::env::args().nth(2).map_or(2, |r| {
            r.parse().expect("usage: petuum-jobs-bench mnist [RUNS]")
        });
        return mnist(runs);
    }
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("usage: petuum-jobs-bench [CLOCKS] [KILLS]")
        })
        .collect();
    let clocks = args.first().copied().unwrap_or(200);
    let kills = args.get(1).copied().unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // PETUUM_BENCH_CHECKPOINTS: the settings and their order (default
    // "0,10,1"; jobs run one after another on the same nodes, so the
    // order shows whether an earlier job's leftovers slow a later one).
    let settings: Vec<u64> = std::env::var("PETUUM_BENCH_CHECKPOINTS")
        .unwrap_or_else(|_| "0,10,1".into())
        .split(',')
        .map(|v| {
            v.trim()
                .parse()
                .expect("PETUUM_BENCH_CHECKPOINTS: comma-separated clocks")
        })
        .collect();

    // The embedded runs of the same job (the single-process peer): without
    // checkpoints, and with each checkpoint setting the cluster runs (the
    // same spec submitted either way), three runs each; the median is the
    // reference (one run of 0.3 s moves by a third on this VM).
    let mut embedded: BTreeMap<u64, f64> = BTreeMap::new();
    let mut wanted: Vec<u64> = std::iter::once(0).chain(settings.iter().copied()).collect();
    wanted.sort_unstable();
    wanted.dedup();
    for &every in &wanted {
        let mut rates: Vec<f64> = (0..3)
            .map(|i| {
                let s = spec(dir.path(), &format!("embedded{every}-{i}"), clocks, every);
                let out = run_embedded(
                    &s,
                    &dir.path().join(format!("embedded{every}-{i}")),
                    dir.path(),
                );
                assert!(out.status.success());
                let last: serde_json::Value = serde_json::from_str(
                    String::from_utf8_lossy(&out.stdout).lines().last().unwrap(),
                )
                .unwrap();
                clocks as f64 / last["seconds"].as_f64().unwrap()
            })
            .collect();
        let runs = rates
            .iter()
            .map(|r| format!("{r:.1}"))
            .collect::<Vec<_>>()
            .join(", ");
        let m = median(&mut rates);
        embedded.insert(every, m);
        println!(
            "embedded (petuumd run), checkpoint_every = {every}: {clocks} clocks at {runs} clocks/s, median {m:.1}"
        );
    }

    // Each node serves /metrics: after each job, where its workers' time
    // went (read from the nodes, not timed here).
    let http: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", petuum_tests::cluster::free_port()))
        .collect();
    let mut c = LocalCluster::start_with(3, 16, |id| {
        format!(
            "http_listen = \"{}\"\n{}",
            http[id as usize - 1],
            bench_config()
        )
    });
    c.wait_leaders(&c.connect(), &[1, 2, 3], Duration::from_secs(60));
    let ep = |c: &LocalCluster, n: u64| format!("http://{}", c.nodes[n as usize - 1].addr);

    println!("\ncheckpoint overhead, 3 nodes x 3 replicas, {clocks} clocks:");
    println!(
        "{:<20} {:>10} {:>10} {:>12} {:>24} {:>14} {:>11} {:>13} {:>11} {:>13} {:>14} {:>12}",
        "checkpoint_every",
        "run s",
        "clocks/s",
        "vs off",
        "of embedded (off; same)",
        "checkpoints",
        "recoveries",
        "commit wait",
        "read wait",
        "Raft commit",
        "writes/clock",
        "syncs/clock"
    );
    let syncs = |texts: &[String]| petuum_tests::metric_sum(texts, "petuum_wal_syncs_total ");
    let first = petuum_tests::scrape(&http);
    let mut raft_before = petuum_tests::raft_commits(&first);
    let mut syncs_before = syncs(&first);
    let mut off = None;
    // Each setting's rates, for the medians of a setting listed twice or
    // more (single jobs of about a second move by a fifth on this VM).
    let mut rates: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for every in settings {
        let s = spec(dir.path(), &format!("ckpt{every}"), clocks, every);
        let info = rt.block_on(async {
            let mut cl = connect_client(&ep(&c, 1)).await;
            let job = cl.submit(&s).await.unwrap().id;
            poll(&mut cl, job, "success", |i| i.state == "succeeded").await
        });
        let rate = clocks as f64 / info.seconds;
        rates.entry(every).or_default().push(rate);
        if every == 0 {
            off = Some(rate);
        }
        let vs = off.map_or("-".to_string(), |base| {
            format!("{:.1}%", 100.0 * rate / base)
        });
        let n = clocks.checked_div(every).unwrap_or(0);
        // The workers' waits as shares of their time (workers x run time),
        // and the mean Raft commit (proposal to answer on the leaders) of
        // every write meanwhile.
        let worker_s = info.workers as f64 * info.seconds;
        let texts = petuum_tests::scrape(&http);
        let share = |name: &str| {
            let key = format!("{name}{{job_id=\"{}\"}}", info.id);
            let v = petuum_tests::metric_sum(&texts, &key);
            format!("{:.0}%", 100.0 * v / worker_s)
        };
        let raft_after = petuum_tests::raft_commits(&texts);
        let (sum, count) = (raft_after.0 - raft_before.0, raft_after.1 - raft_before.1);
        raft_before = raft_after;
        let syncs_after = syncs(&texts);
        let synced = syncs_after - syncs_before;
        syncs_before = syncs_after;
        println!(
            "{:<20} {:>10.2} {:>10.1} {:>12} {:>24} {:>14} {:>11} {:>13} {:>11} {:>10.2} ms {:>14.2} {:>12.2}",
            if every == 0 {
                "off".to_string()
            } else {
                every.to_string()
            },
            info.seconds,
            rate,
            vs,
            format!(
                "{:.1}%; {:.1}%",
                100.0 * rate / embedded[&0],
                100.0 * rate / embedded[&every]
            ),
            n,
            info.recoveries,
            share("petuum_job_commit_wait_seconds_total"),
            share("petuum_job_read_wait_seconds_total"),
            1e3 * sum / count.max(1.0),
            count / clocks as f64,
            synced / clocks as f64
        );
    }
    println!(
        "(of embedded: the cluster's clocks/s as a share of the embedded runs' median without checkpoints, then with the same checkpoint_every; commit wait, read wait: shares of the workers' time, the rest is computation; Raft commit: mean time from a write's proposal to its answer on the leaders; writes/clock: Raft writes answered on the leaders (every group, the metadata group's included) per clock; syncs/clock: write-ahead log fsyncs of all three nodes per clock)"
    );
    for (every, mut r) in rates.into_iter().filter(|(_, r)| r.len() > 1) {
        let n = r.len();
        let m = median(&mut r);
        println!(
            "median of {n} jobs, checkpoint_every = {every}: {m:.1} clocks/s, {:.1}% of embedded without checkpoints, {:.1}% with the same",
            100.0 * m / embedded[&0],
            100.0 * m / embedded[&every]
        );
    }

    println!("\nrecovery after SIGKILL of the job's node (checkpoint_every = 10):");
    let (mut to_assign, mut to_run, mut lost) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..kills {
        let s = spec(dir.path(), &format!("kill{k}"), 100_000, 10);
        let (host, job, before) = rt.block_on(async {
            let mut cl = connect_client(&ep(&c, 1)).await;
            let job = cl.submit(&s).await.unwrap().id;
            // Kill at a varying distance from the last checkpoint.
            let target = 20 + 3 * k;
            let i = poll(&mut cl, job, "progress", |i| {
                i.state == "running" && i.clock >= target
            })
            .await;
            (i.host, job, i)
        });
        c.kill(host);
        let t0 = Instant::now();
        let other = (1..=3).find(|&n| n != host).unwrap();
        let (assigned, running, after) = rt.block_on(async {
            let mut cl = connect_client(&ep(&c, other)).await;
            let a = poll(&mut cl, job, "reassignment", |i| {
                i.host != host && i.host != 0
            })
            .await;
            let assigned = t0.elapsed().as_secs_f64();
            let r = poll(&mut cl, job, "progress after recovery", |i| {
                i.epoch == a.epoch && i.state == "running"
            })
            .await;
            let running = t0.elapsed().as_secs_f64();
            cl.cancel(job).await.unwrap();
            (assigned, running, r)
        });
        // Clocks finished before the kill that were redone: at least the
        // last reported clock minus the checkpoint the job resumed from.
        let redo = before.clock.saturating_sub(after.checkpoint);
        println!(
            "  kill {}: node {host} at clock >= {} (checkpoint {}): reassigned after {:.2}s, running again after {:.2}s, {} clocks redone",
            k + 1,
            before.clock,
            after.checkpoint,
            assigned,
            running,
            redo
        );
        to_assign.push(assigned);
        to_run.push(running);
        lost.push(redo as f64);
        c.spawn(host);
        // Let it rejoin and catch up before the next round.
        std::thread::sleep(Duration::from_secs(5));
    }
    if kills > 0 {
        println!(
            "median over {kills} kills: reassigned {:.2}s, running again {:.2}s (goal < 5 s), {:.0} clocks redone (bound: checkpoint_every = 10)",
            median(&mut to_assign),
            median(&mut to_run),
            median(&mut lost)
        );
    }
}
