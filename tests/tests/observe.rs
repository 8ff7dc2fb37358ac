//! Seeing the cluster (docs/operations.md) with real parts: a real
//! Prometheus server (Debian's `prometheus`) scrapes the `/metrics` of a
//! 3-node cluster of real `petuumd serve` processes while a job runs, and
//! its HTTP API returns the job's clock rising; the dashboard is loaded in
//! headless Chromium (Debian's `chromium`), its DOM shows the nodes and the
//! running job, the job page's charts have points, and screenshots of both
//! pages are saved as test artifacts. `scripts/test.sh` installs both
//! packages when they are missing.

use petuum_tests::cluster::{client, free_port, submit, wait_for, LocalCluster};
use petuum_tests::{http_get, mnist_job};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn need(cmd: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{cmd}` not found: install the Debian package `{cmd}` (scripts/test.sh does)")
    })
}

/// Percent-encodes a query parameter value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where the tests leave files for people to look at: `$PETUUM_ARTIFACTS`,
/// else `<target dir>/test-artifacts`.
fn artifacts() -> PathBuf {
    let dir = std::env::var_os("PETUUM_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            // target/release/deps/<test> -> target/test-artifacts
            exe.ancestors().nth(3).unwrap().join("test-artifacts")
        });
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Headless Chromium on `url`: the DOM after the page's scripts ran for
/// `settle` of virtual time, and a screenshot at `shot`.
fn chromium(url: &str, shot: &Path, settle: Duration) -> String {
    let exe = need("chromium");
    let profile = tempfile::tempdir().unwrap();
    let common = |c: &mut Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1100,1300",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={}", settle.as_millis()))
        .stdin(Stdio::null());
    };
    let mut dump = Command::new(&exe);
    common(&mut dump);
    let out = dump
        .arg("--dump-dom")
        .arg(url)
        .stderr(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium --dump-dom {url} failed");
    let mut shoot = Command::new(&exe);
    common(&mut shoot);
    let st = shoot
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run chromium");
    assert!(st.success(), "chromium --screenshot {url} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Prometheus range query's samples, per series: (time, value).
fn samples(prom: &str, query: &str) -> Vec<Vec<(f64, f64)>> {
    let (code, _, body) = http_get(
        prom,
        &format!("/api/v1/query?query={}", encode(query)),
        None,
    )
    .expect("query prometheus");
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if code != 200 || v["status"] != "success" {
        return Vec::new();
    }
    v["data"]["result"]
        .as_array()
        .map(|series| {
            series
                .iter()
                .map(|s| {
                    s["values"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| Some((p[0].as_f64()?, p[1].as_str()?.parse::<f64>().ok()?)))
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn prometheus_and_the_dashboard_follow_a_running_job() {
    let prometheus = need("prometheus");
    let http: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let c = LocalCluster::start_with(3, 16, |id| {
        format!("http_listen = \"127.0.0.1:{}\"", http[id as usize - 1])
    });
    c.wait_leaders(&c.connect(), &[1, 2, 3], Duration::from_secs(60));

    // Prometheus scrapes the three nodes every second.
    let prom_port = free_port();
    let prom = format!("127.0.0.1:{prom_port}");
    let targets: Vec<String> = http.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    let config = c.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: petuum\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let _prom = Killed(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                c.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(c.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus"),
    );

    // A job that runs until it is cancelled.
    let spec = c.path().join("job.toml");
    std::fs::write(
        &spec,
        mnist_job(
            &c.path().join("model.safetensors"),
            "workers = 2\nclocks = 1000000\nshards = 16",
            "",
        ),
    )
    .unwrap();
    let ep = format!("http://{}", c.endpoints()[0]);
    let job = submit(&c, &ep, &spec);
    wait_for(&c, &ep, job, Duration::from_secs(120), "clock 20", |s| {
        s["clock"].as_u64().unwrap_or(0) >= 20
    });

    // Prometheus: every node up, and the job's clock rising in its store.
    let started = Instant::now();
    let rising = loop {
        let ups = samples(&prom, "up[1m]");
        let all_up = ups.len() == 3 && ups.iter().all(|s| s.last().is_some_and(|p| p.1 == 1.0));
        let series = samples(&prom, &format!("petuum_job_clock{{job_id=\"{job}\"}}[5m]"));
        let values: Vec<f64> = series.iter().flatten().map(|p| p.1).collect();
        let mut distinct = values.clone();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        if all_up && distinct.len() >= 3 {
            break series;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "Prometheus did not see 3 nodes up and the clock rising within 90 s: up {ups:?}, clock {series:?}\n{}",
            std::fs::read_to_string(c.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    for s in &rising {
        assert!(
            s.windows(2).all(|w| w[1].1 >= w[0].1),
            "the clock went back in a series: {s:?}"
        );
    }
    // Raft and storage series from every node.
    let terms = samples(&prom, "petuum_raft_term[1m]");
    assert!(
        terms.len() >= 3 * 16 / 3,
        "too few group term series: {}",
        terms.len()
    );
    assert!(!samples(&prom, "petuum_wal_syncs_total[1m]").is_empty());
    // Each node's free space on its data directory, at most its disk's.
    let free = samples(&prom, "petuum_data_dir_available_bytes[1m]");
    let size = samples(&prom, "petuum_data_dir_size_bytes[1m]");
    assert_eq!((free.len(), size.len()), (3, 3), "one disk series per node");
    let last = |s: &Vec<(f64, f64)>| s.last().map_or(0.0, |p| p.1);
    assert!(
        free.iter()
            .zip(&size)
            .all(|(f, t)| last(f) > 0.0 && last(f) <= last(t)),
        "free {free:?} of {size:?}"
    );
    // The runtime watchdog's counter, from each node (0 or more stalls).
    assert_eq!(
        samples(&prom, "petuum_runtime_stalls_total[1m]").len(),
        3,
        "one runtime-stall series per node"
    );
    assert!(!samples(
        &prom,
        &format!("petuum_job_pushed_bytes_total{{job_id=\"{job}\"}}[1m]")
    )
    .is_empty());
    // Where the workers' time goes: waiting for commits (the MNIST job's
    // default consistency waits for some clocks) and the leaders' time per
    // write; both have counted something by clock 20.
    let waited: f64 = samples(
        &prom,
        &format!("petuum_job_commit_wait_seconds_total{{job_id=\"{job}\"}}[1m]"),
    )
    .iter()
    .filter_map(|s| s.last().map(|p| p.1))
    .sum();
    assert!(waited > 0.0, "no commit wait counted for job {job}");
    let commits: f64 = samples(&prom, "petuum_raft_commit_seconds_count[1m]")
        .iter()
        .filter_map(|s| s.last().map(|p| p.1))
        .sum();
    assert!(commits > 0.0, "no Raft commit timed on the leaders");

    // The dashboard, in a browser.
    let out = artifacts();
    let overview = chromium(
        &format!("http://127.0.0.1:{}/", http[1]),
        &out.join("dashboard-overview.png"),
        Duration::from_millis(500),
    );
    for n in 1..=3 {
        assert!(
            overview.contains(&format!("data-node=\"{n}\" data-state=\"up\"")),
            "node {n} is not shown up:\n{overview}"
        );
    }
    assert!(
        overview.contains(&format!("data-job=\"{job}\" data-state=\"running\"")),
        "the running job is not listed:\n{overview}"
    );
    // Whether every group has a leader at that instant (a leadership
    // transfer of the balancer leaves a group without one for a moment).
    assert!(overview.contains("id=\"leaderless\""), "{overview}");
    // The job page runs its script for 5 s of virtual time (two live
    // updates of the charts).
    let page = chromium(
        &format!("http://127.0.0.1:{}/jobs/{job}", http[2]),
        &out.join("dashboard-job.png"),
        Duration::from_millis(5000),
    );
    let points = |id: &str| -> usize {
        let at = page
            .find(&format!("id=\"chart-{id}\""))
            .unwrap_or_else(|| panic!("no {id} chart:\n{page}"));
        let rest = &page[at..];
        let attr = rest.find("data-points=\"").expect("data-points") + 13;
        rest[attr..rest[attr..].find('"').unwrap() + attr]
            .parse()
            .unwrap()
    };
    assert!(points("objective") >= 2, "objective chart:\n{page}");
    assert!(points("throughput") >= 2, "throughput chart:\n{page}");
    assert!(
        page.matches("class=\"point\"").count() >= 4,
        "no points drawn:\n{page}"
    );
    for shot in ["dashboard-overview.png", "dashboard-job.png"] {
        let len = std::fs::metadata(out.join(shot)).map_or(0, |m| m.len());
        assert!(len > 10_000, "{shot}: {len} bytes");
    }

    // The job ends; `status` then shows its real clock and its curve.
    let cancel = client(&ep, &["cancel", &job.to_string()], c.path());
    assert!(cancel.status.success());
    let s = wait_for(&c, &ep, job, Duration::from_secs(60), "cancelled", |s| {
        s["state"] == "cancelled"
    });
    assert!(s["curve"].as_array().is_some_and(|c| c.len() >= 2), "{s}");
    let text = client(&ep, &["status", &job.to_string()], c.path());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("curve:"), "{text}");
}

#[test]
fn the_http_endpoint_asks_for_the_client_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let port = free_port();
    let c = LocalCluster::start(
        1,
        4,
        &format!(
            "client_token_file = \"{}\"\nhttp_listen = \"127.0.0.1:{port}\"",
            token.display()
        ),
    );
    let addr = format!("127.0.0.1:{port}");
    // The job pages below read the metadata group, which answers 503 until
    // it has a leader: wait for that first, as a user's first request
    // after a start might see 503 too.
    let client = c.connect_with(petuum_cluster::ConnectOptions {
        token: Some("s3cret-token".into()),
        ..Default::default()
    });
    c.wait_leaders(&client, &[1], Duration::from_secs(60));
    let start = Instant::now();
    let get = |auth: Option<&str>| loop {
        match http_get(&addr, "/metrics", auth) {
            Ok(r) => return r,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "no HTTP endpoint: {e}\n{}",
                    c.logs()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let (code, headers, body) = get(None);
    assert_eq!(code, 401);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "www-authenticate" && v.starts_with("Basic")),
        "{headers:?}"
    );
    assert!(!String::from_utf8_lossy(&body).contains("s3cret"));
    assert_eq!(get(Some("Bearer wrong")).0, 401);
    let (code, _, body) = get(Some("Bearer s3cret-token"));
    assert_eq!(code, 200);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("petuum_raft_term"));
    // The one node won the election of each of its 5 groups (metadata and
    // 4 shards): counted once per group and term it leads.
    let won: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("petuum_raft_elections_won_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(won.len(), 5, "{text}");
    assert!(won.iter().all(|&n| n >= 1), "{won:?}");
    // A browser's basic authentication: any user, the token as password.
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode("me:s3cret-token");
    let (code, headers, body) = http_get(&addr, "/", Some(&format!("Basic {basic}"))).unwrap();
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).contains("data-node=\"1\""));
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-security-policy" && v.contains("script-src 'self'")),
        "{headers:?}"
    );
    // Bad paths get a clear answer, not a crash.
    let (code, _, body) =
        http_get(&addr, "/jobs/not-a-number", Some("Bearer s3cret-token")).unwrap();
    assert_eq!(code, 400);
    assert!(String::from_utf8_lossy(&body).contains("positive integer"));
    let (code, _, _) = http_get(&addr, "/jobs/999", Some("Bearer s3cret-token")).unwrap();
    assert_eq!(code, 404);
}
