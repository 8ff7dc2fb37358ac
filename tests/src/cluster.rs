//! A cluster of real `petuumd serve` processes on 127.0.0.1, for the
//! cluster and fault tests and the cluster benchmark.

use crate::bin;
use crate::net::Net;
use petuum_cluster::{ClusterShards, ConnectOptions};
use petuum_core::row::{AnyRow, Row};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One node process.
pub struct NodeProc {
    pub id: u64,
    pub addr: String,
    pub config: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
    /// Environment variables of its next starts (test hooks of the node).
    pub env: Vec<(String, String)>,
}

/// A local cluster; every process is killed on drop.
pub struct LocalCluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
    /// The network between the nodes, when it can be partitioned
    /// ([`LocalCluster::start_partitionable`]).
    pub net: Option<Net>,
}

/// A free TCP port on 127.0.0.1, never one this process was given before:
/// a port is free only until something binds it, so two nodes (or a node's
/// Raft and HTTP addresses) chosen before either starts could otherwise
/// get the same one.
///
/// Taken below the kernel's ephemeral range where there is room: a port
/// from that range, free when chosen, can become the source port of any
/// outgoing connection (the nodes of parallel tests connect to each other
/// all the time) before the node meant to listen on it binds it. The scan
/// starts at an offset from the process id, so benchmarks run beside the
/// tests start elsewhere.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Option<(u32, std::collections::HashSet<u16>)>> =
        std::sync::Mutex::new(None);
    const FLOOR: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let (next, taken) = given.get_or_insert_with(|| {
        let span = ephemeral_low.saturating_sub(FLOOR).max(1);
        (
            (std::process::id().wrapping_mul(7919)) % span,
            Default::default(),
        )
    });
    if ephemeral_low >= FLOOR + 2_000 {
        let span = ephemeral_low - FLOOR;
        for _ in 0..span {
            let port = (FLOOR + *next % span) as u16;
            *next = (*next + 1) % span;
            if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                taken.insert(port);
                return port;
            }
        }
    }
    // No room below the ephemeral range: one from it.
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("binding an ephemeral port")
            .port();
        if taken.insert(port) {
            return port;
        }
    }
}

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid this process spawned; no memory involved.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

impl LocalCluster {
    /// Writes configs for `n` nodes (`extra` is appended to each, e.g. a
    /// `[raft]` table) and starts them.
    pub fn start(n: u64, shards: u32, extra: &str) -> LocalCluster {
        Self::start_with(n, shards, |_| extra.to_string())
    }

    /// Like [`start`](Self::start), with per-node extra config lines.
    pub fn start_with(n: u64, shards: u32, extra: impl Fn(u64) -> String) -> LocalCluster {
        Self::start_inner(n, shards, extra, false)
    }

    /// Like [`start`](Self::start), on a network that can be partitioned
    /// ([`Net`]): each node listens on `127.0.1.<id>`, connects from it,
    /// and is reached through its proxy; `c.net()` cuts and heals.
    pub fn start_partitionable(n: u64, shards: u32, extra: &str) -> LocalCluster {
        Self::start_inner(n, shards, |_| extra.to_string(), true)
    }

    /// The partitionable network (a cluster made by
    /// [`start_partitionable`](Self::start_partitionable)).
    pub fn net(&self) -> &Net {
        self.net.as_ref().expect("a partitionable cluster")
    }

    /// Node `id`'s listen address, advertised address and the config
    /// lines that go with them.
    fn addresses(net: Option<&Net>, id: u64) -> (String, String, String) {
        let port = free_port();
        match net {
            None => {
                let addr = format!("127.0.0.1:{port}");
                (addr.clone(), addr, String::new())
            }
            Some(net) => {
                let ip = Net::node_ip(id);
                let listen = format!("{ip}:{port}");
                let front = net.front(id, listen.clone());
                let lines = format!("advertise = \"{front}\"\nsource_address = \"{ip}\"\n");
                (listen, front, lines)
            }
        }
    }

    fn start_inner(
        n: u64,
        shards: u32,
        extra: impl Fn(u64) -> String,
        partitionable: bool,
    ) -> LocalCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let net = partitionable.then(Net::new);
        let addrs: Vec<(String, String, String)> = (1..=n)
            .map(|id| Self::addresses(net.as_ref(), id))
            .collect();
        let peers: Vec<String> = (1..=n)
            .map(|id| format!("{{ id = {id}, addr = \"{}\" }}", addrs[id as usize - 1].1))
            .collect();
        let mut nodes = Vec::new();
        for id in 1..=n {
            let (listen, addr, lines) = addrs[id as usize - 1].clone();
            let config = dir.path().join(format!("node{id}.toml"));
            let text = format!(
                "id = {id}\nlisten = \"{listen}\"\n{lines}data_dir = \"{}\"\nshards = {shards}\npeers = [{}]\n{}\n",
                dir.path().join(format!("data{id}")).display(),
                peers.join(", "),
                extra(id)
            );
            std::fs::write(&config, text).expect("writing node config");
            nodes.push(NodeProc {
                id,
                addr,
                config,
                child: None,
                log: dir.path().join(format!("node{id}.log")),
                env: Vec::new(),
            });
        }
        let mut c = LocalCluster { dir, nodes, net };
        for id in 1..=n {
            c.spawn(id);
        }
        c
    }

    /// Starts a new node that joins the running cluster through the
    /// members' addresses (its config names no id: the cluster gives it
    /// the next one, which is this harness's next index as long as every
    /// node came through it). Returns its id.
    pub fn join(&mut self, extra: &str) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        let (listen, addr, lines) = Self::addresses(self.net.as_ref(), id);
        let join: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"{}\"", n.addr))
            .collect();
        let config = self.dir.path().join(format!("node{id}.toml"));
        let text = format!(
            "listen = \"{listen}\"\n{lines}data_dir = \"{}\"\njoin = [{}]\n{extra}\n",
            self.dir.path().join(format!("data{id}")).display(),
            join.join(", "),
        );
        std::fs::write(&config, text).expect("writing node config");
        self.nodes.push(NodeProc {
            id,
            addr,
            config,
            child: None,
            log: self.dir.path().join(format!("node{id}.log")),
            env: Vec::new(),
        });
        self.spawn(id);
        // Joined once the identity is written (then the next may join).
        let identity = self.data_dir(id).join("cluster.json");
        let start = Instant::now();
        loop {
            if let Some(v) = std::fs::read(&identity)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            {
                return v["node"].as_u64().expect("a node id");
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "node {id} did not join\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn node(&mut self, id: u64) -> &mut NodeProc {
        &mut self.nodes[id as usize - 1]
    }

    /// Starts (or restarts) node `id` with its data directory.
    pub fn spawn(&mut self, id: u64) {
        let n = self.node(id);
        assert!(n.child.is_none(), "node {id} is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .expect("node log");
        let child = Command::new(bin("petuumd"))
            .args(["serve", "--config"])
            .arg(&n.config)
            .envs(n.env.iter().map(|(k, v)| (k, v)))
            .env(
                "PETUUM_LOG",
                std::env::var("PETUUM_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning petuumd serve");
        n.child = Some(child);
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.node(id).child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for node `id` to exit by itself (after a signal); None if it
    /// is still running after `timeout`.
    pub fn wait_exit(&mut self, id: u64, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        let n = self.node(id);
        loop {
            let child = n.child.as_mut().expect("node running");
            if let Ok(Some(status)) = child.try_wait() {
                n.child = None;
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether node `id`, started by this cluster and not stopped by it,
    /// has exited by itself: its exit status and the line its log ends
    /// with where it said why (`petuumd: node N exits: ...`), once.
    pub fn exited(&mut self, id: u64) -> Option<(std::process::ExitStatus, String)> {
        let n = self.node(id);
        let status = n.child.as_mut()?.try_wait().ok()??;
        n.child = None;
        let log = std::fs::read_to_string(&n.log).unwrap_or_default();
        let why = log
            .lines()
            .rev()
            .find(|l| l.contains(" exits: ") || l.contains("panicked at"))
            .unwrap_or("(its log says nothing)")
            .to_string();
        Some((status, why))
    }

    /// The pid of a running node.
    pub fn pid(&mut self, id: u64) -> u32 {
        self.node(id).child.as_ref().expect("node running").id()
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// Connects a client, retrying while the nodes start.
    pub fn connect(&self) -> ClusterShards {
        self.connect_with(ConnectOptions::default())
    }

    /// Connects with options (TLS, token), retrying while the nodes start.
    pub fn connect_with(&self, opts: ConnectOptions) -> ClusterShards {
        self.connect_as(opts, 0)
    }

    /// Connects as node `me` (0: a client that is not a node; with TLS a
    /// node's certificate must go with its id), retrying while the nodes
    /// start.
    pub fn connect_as(&self, opts: ConnectOptions, me: u64) -> ClusterShards {
        let start = Instant::now();
        loop {
            match ClusterShards::connect_as(&self.endpoints(), opts.clone(), me) {
                Ok(c) => return c,
                Err(e) if start.elapsed() < Duration::from_secs(30) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("cluster did not come up: {e}\n{}", self.logs()),
            }
        }
    }

    /// Waits until every running node reports a leader for each of its
    /// groups, and the nodes agree on it. Returns group -> leader.
    pub fn wait_leaders(
        &self,
        client: &ClusterShards,
        running: &[u64],
        timeout: Duration,
    ) -> Vec<(u64, u64)> {
        let start = Instant::now();
        loop {
            let mut view: std::collections::BTreeMap<u64, u64> = Default::default();
            let mut ok = true;
            for &id in running {
                match client.status(id) {
                    Ok(s) => {
                        for g in s.groups {
                            if g.leader == 0 || !running.contains(&g.leader) {
                                ok = false;
                            }
                            if let Some(&l) = view.get(&g.group) {
                                if l != g.leader {
                                    ok = false;
                                }
                            }
                            view.insert(g.group, g.leader);
                        }
                    }
                    Err(_) => ok = false,
                }
            }
            if ok && !view.is_empty() {
                return view.into_iter().collect();
            }
            assert!(
                start.elapsed() < timeout,
                "groups without an agreed leader after {timeout:?}: {view:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The tail of every node's log, after the first panics and broken
    /// invariants anywhere in it (a panic's message is often long gone
    /// from the tail).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            out.push_str(&format!("--- node {} ({}) ---\n", n.id, n.log.display()));
            for (i, _) in lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.contains("panicked at") || l.contains("invariant broken"))
                .take(3)
            {
                out.push_str(&format!(
                    "[panic at line {}]\n{}\n",
                    i + 1,
                    lines[i..lines.len().min(i + 4)].join("\n")
                ));
            }
            out.push_str(&tail.join("\n"));
            out.push('\n');
        }
        out
    }

    /// Waits until node `id`'s log satisfies `seen` (the log is plain text:
    /// stderr is a file); panics naming `what`, with every node's log
    /// tail, after `timeout`.
    pub fn wait_for_log(
        &self,
        id: u64,
        seen: impl Fn(&str) -> bool,
        timeout: Duration,
        what: &str,
    ) {
        let log = &self.nodes[id as usize - 1].log;
        let start = Instant::now();
        while !seen(&std::fs::read_to_string(log).unwrap_or_default()) {
            assert!(
                start.elapsed() < timeout,
                "node {id}: {what} within {timeout:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://addr` of node `id`.
    pub fn endpoint(&self, id: u64) -> String {
        format!("http://{}", self.nodes[id as usize - 1].addr)
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("data{id}"))
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the cluster's directory (data, node configs, logs) after the
    /// cluster is dropped, and says where on stderr.
    pub fn keep_dir(&mut self) {
        if let Ok(spare) = tempfile::tempdir() {
            let dir = std::mem::replace(&mut self.dir, spare);
            eprintln!("keeping the cluster's directory {}", dir.keep().display());
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if std::env::var_os("PETUUM_KEEP_CLUSTER").is_some() {
            self.keep_dir();
        }
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                // A SIGSTOPped node must be continued to die promptly.
                // SAFETY: signals to our own children.
                unsafe {
                    libc::kill(c.id() as i32, libc::SIGCONT);
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Certificates for mutual TLS made by `petuumd certs`: a CA, one
/// certificate per node (named `node-<id>.petuum`, hosts 127.0.0.1 and
/// localhost) and a client's (`client-test.petuum`), in `dir`. Returns the
/// `[tls]` table of each node's config.
pub fn make_certs(dir: &Path, nodes: u64) -> Vec<String> {
    let mut args: Vec<String> = vec!["certs".into(), "--out".into(), dir.display().to_string()];
    for id in 1..=nodes {
        args.extend(["--node".into(), id.to_string()]);
    }
    args.extend(
        [
            "--host",
            "127.0.0.1",
            "--host",
            "localhost",
            "--client",
            "test",
        ]
        .map(String::from),
    );
    let out = Command::new(bin("petuumd"))
        .args(&args)
        .output()
        .expect("run petuumd certs");
    assert!(
        out.status.success(),
        "petuumd certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (1..=nodes)
        .map(|id| {
            format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n",
                dir.join(format!("node{id}.pem")).display(),
                dir.join(format!("node{id}.key")).display(),
                dir.join("ca.pem").display()
            )
        })
        .collect()
}

/// A job API client of the node at `ep` (`http://host:port`), retrying
/// for 30 s while it starts.
pub async fn connect_client(ep: &str) -> petuum_client::Client {
    let start = Instant::now();
    loop {
        match petuum_client::Client::connect(ep, None).await {
            Ok(c) => return c,
            Err(e) if start.elapsed() > Duration::from_secs(30) => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// `petuum-client --endpoint EP ARGS` in `cwd`.
/// The metadata group's leader, as node 1 sees it.
pub fn meta_leader(client: &ClusterShards) -> u64 {
    client
        .status(1)
        .unwrap()
        .groups
        .iter()
        .find(|g| g.group == petuum_cluster::placement::META_GROUP)
        .map(|g| g.leader)
        .expect("a metadata leader")
}

pub fn client(ep: &str, args: &[&str], cwd: &Path) -> std::process::Output {
    let mut all = vec!["--endpoint", ep];
    all.extend_from_slice(args);
    crate::run("petuum-client", &all, cwd)
}

/// `petuum-client model JOB -o OUT` through `ep`; panics unless it
/// succeeds. Returns the model's bytes.
pub fn download_model(c: &LocalCluster, ep: &str, job: u64, out: &Path) -> Vec<u8> {
    let o = client(
        ep,
        &["model", &job.to_string(), "-o", out.to_str().unwrap()],
        c.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(out).unwrap()
}

/// A JSON array of ids (a job's `placement`, a group's voters); panics on
/// anything else.
pub fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap_or_else(|| panic!("not an id: {x}")))
        .collect()
}

pub fn status(ep: &str, job: u64, cwd: &Path) -> Option<Value> {
    let out = client(ep, &["status", &job.to_string(), "--json"], cwd);
    serde_json::from_slice(&out.stdout).ok()
}

/// Polls the job's status through `ep` until `f` holds.
pub fn wait_for(
    c: &LocalCluster,
    ep: &str,
    job: u64,
    timeout: Duration,
    what: &str,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    let mut last = Value::Null;
    while start.elapsed() < timeout {
        if let Some(s) = status(ep, job, c.path()) {
            if f(&s) {
                return s;
            }
            last = s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "timed out waiting for {what}; last status {last}\n{}",
        c.logs()
    );
}

pub fn submit(c: &LocalCluster, ep: &str, spec: &Path) -> u64 {
    let out = client(ep, &["submit", spec.to_str().unwrap(), "--json"], c.path());
    assert!(
        out.status.success(),
        "submit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["id"].as_u64().unwrap()
}

/// `petuum-client nodes --json` through `ep`.
pub fn nodes_json(c: &LocalCluster, ep: &str) -> Option<Value> {
    let out = client(ep, &["nodes", "--json"], c.path());
    serde_json::from_slice(&out.stdout).ok()
}

/// Waits until the recorded placement puts every shard on exactly
/// `replicas` of `members` (spread within one replica of even, and the
/// metadata group on all of them, up to five), the members are exactly
/// `members`, and every group's leader reports those voters.
pub fn wait_settled(c: &LocalCluster, members: &[u64], replicas: usize, timeout: Duration) {
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

pub fn settled(c: &LocalCluster, want: &BTreeSet<u64>, replicas: usize) -> Result<(), String> {
    // Every member's own view: the same placement, and for each group it
    // leads, voters equal to the placement's.
    let mut recorded: Option<Value> = None;
    let mut led: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &n in want {
        let s = nodes_json(c, &c.endpoint(n))
            .filter(|s| s["nodes"].is_array() && s["groups"].is_array())
            .ok_or(format!("node {n} did not answer"))?;
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
                .ok_or("no metadata voters recorded yet".to_string())?
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            if meta.len() != want.len().min(5) || !meta.is_subset(want) {
                return Err(format!("metadata voters {meta:?}"));
            }
        }
    }
    let placement = recorded.unwrap_or_default();
    let mut load: BTreeMap<u64, usize> = want.iter().map(|&n| (n, 0)).collect();
    for r in placement
        .as_array()
        .ok_or("no placement recorded yet".to_string())?
    {
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

/// Waits (up to a minute per row) until each of `nodes`' replicas of rows
/// `0..rows` of the i64 `table` has applied exactly `clocks` of `job`'s
/// workers, then asserts the row holds `expected`: every acknowledged
/// increment, once, on every replica.
pub fn assert_replica_totals(
    c: &LocalCluster,
    client: &ClusterShards,
    nodes: &[u64],
    (table, rows, job): (u32, u64, u64),
    clocks: &[u64],
    expected: &[i64],
) {
    for &n in nodes {
        for r in 0..rows {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let got = client.read_local(n, table, r, Some(job));
                if let Ok((Some(AnyRow::I64(Row::Dense(v))), _, at)) = &got {
                    if at == clocks {
                        assert_eq!(v, expected, "node {n} row {r}");
                        break;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "node {n} row {r} did not reach clocks {clocks:?}: {got:?}\n{}",
                    c.logs()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
