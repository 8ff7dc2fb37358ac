//! What watching the cluster costs (docs/performance.md, "Metrics and
//! dashboard"), on local `petuumd serve` nodes:
//!
//! - `petuum-observe-bench overhead [RUNS]`: the README's MNIST job on two
//!   3-node clusters, alternately: one without `http_listen`, one whose
//!   `/metrics` (all three nodes) and dashboard overview are fetched every
//!   second while the job runs. Prints each run's job time and clocks/s.
//! - `petuum-observe-bench scrape [SCRAPES]`: one node holding 64 shard
//!   groups and the metadata group, with 20 finished jobs and one running;
//!   times `/metrics` and the overview page.
//!
//! Release build: `cargo build --release --bins`, then
//! `target/release/petuum-observe-bench overhead 3`.

use petuum_tests::cluster::{connect_client, free_port, LocalCluster};
use petuum_tests::{http_get, spam_lr_job};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Submits `spec` and waits for success: the job's own seconds and clocks.
async fn run_job(ep: &str, spec: &std::path::Path) -> (f64, u64) {
    let mut c = connect_client(ep).await;
    let job = c.submit(spec).await.expect("submit").id;
    let start = Instant::now();
    loop {
        let i = c.status(job).await.expect("status");
        match i.state.as_str() {
            "succeeded" => return (i.seconds, i.clocks),
            "failed" | "cancelled" => panic!("job {job} {}: {}", i.state, i.error),
            _ => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "job {job} too slow"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cluster(http: bool) -> (LocalCluster, Vec<u16>) {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let c = LocalCluster::start_with(3, 16, |id| {
        if http {
            format!("http_listen = \"127.0.0.1:{}\"", ports[id as usize - 1])
        } else {
            String::new()
        }
    });
    c.wait_leaders(&c.connect(), &[1, 2, 3], Duration::from_secs(60));
    (c, ports)
}

fn overhead(runs: usize) {
    let spec = petuum_tests::manifest_dir()
        .join("../examples/jobs/mnist-softmax.toml")
        .canonicalize()
        .expect("examples/jobs/mnist-softmax.toml (run scripts/setup.sh for MNIST)");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (plain, _) = cluster(false);
    let (watched, ports) = cluster(true);
    // Scrape every node's /metrics and load the overview, every second.
    let stop = Arc::new(AtomicBool::new(false));
    let scrapes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let scraper = {
        let (stop, scrapes) = (stop.clone(), scrapes.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                for p in &ports {
                    let addr = format!("127.0.0.1:{p}");
                    if http_get(&addr, "/metrics", None).is_ok_and(|r| r.0 == 200) {
                        scrapes.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let _ = http_get(&format!("127.0.0.1:{}", ports[0]), "/", None);
                std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
            }
        })
    };
    println!(
        "{:<36} {:>8} {:>10}",
        "README MNIST job, 3 nodes", "job s", "clocks/s"
    );
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for (name, c, out) in [
            ("no http_listen", &plain, &mut a),
            ("metrics + dashboard fetched every 1 s", &watched, &mut b),
        ] {
            let ep = format!("http://{}", c.nodes[0].addr);
            let (s, clocks) = rt.block_on(run_job(&ep, &spec));
            let rate = clocks as f64 / s;
            out.push(rate);
            println!("{name:<36} {s:>8.2} {rate:>10.1}");
        }
    }
    stop.store(true, Ordering::SeqCst);
    scraper.join().unwrap();
    let (ma, mb) = (quantile(&mut a, 0.5), quantile(&mut b, 0.5));
    println!(
        "median clocks/s: {ma:.1} without, {mb:.1} watched ({:+.1}%); {} scrapes",
        100.0 * (mb - ma) / ma,
        scrapes.load(Ordering::SeqCst)
    );
}

fn scrape(n: usize) {
    let port = free_port();
    let c = LocalCluster::start(1, 64, &format!("http_listen = \"127.0.0.1:{port}\""));
    c.wait_leaders(&c.connect(), &[1], Duration::from_secs(60));
    let ep = format!("http://{}", c.nodes[0].addr);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for i in 0..20 {
        let spec = c.path().join(format!("job{i}.toml"));
        let model = c.path().join(format!("m{i}.safetensors"));
        std::fs::write(&spec, spam_lr_job(&format!("scrape-{i}"), 4, 2, &model)).unwrap();
        rt.block_on(run_job(&ep, &spec));
    }
    // One more, running while the node is scraped.
    let spec = c.path().join("long.toml");
    let model = c.path().join("long.safetensors");
    std::fs::write(&spec, spam_lr_job("scrape-long", 100_000, 50, &model)).unwrap();
    rt.block_on(async {
        connect_client(&ep)
            .await
            .submit(&spec)
            .await
            .expect("submit");
    });
    std::thread::sleep(Duration::from_secs(3));
    let addr = format!("127.0.0.1:{port}");
    for (path, what) in [("/metrics", "/metrics"), ("/", "overview page")] {
        let mut times = Vec::new();
        let mut bytes = 0;
        let mut lines = 0;
        for _ in 0..n {
            let t = Instant::now();
            let (code, _, body) = http_get(&addr, path, None).expect("GET");
            times.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(code, 200);
            bytes = body.len();
            lines = body.iter().filter(|&&b| b == b'\n').count();
        }
        println!(
            "{what:<14} 65 groups, 21 jobs: p50 {:.2} ms, p99 {:.2} ms, {bytes} bytes, {lines} lines ({n} requests)",
            quantile(&mut times, 0.5),
            quantile(&mut times, 0.99)
        );
    }
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let n = std::env::args().nth(2).and_then(|v| v.parse().ok());
    match mode.as_str() {
        "overhead" => overhead(n.unwrap_or(3)),
        "scrape" => scrape(n.unwrap_or(200)),
        _ => {
            eprintln!("usage: petuum-observe-bench overhead [RUNS] | scrape [REQUESTS]");
            std::process::exit(2);
        }
    }
}
