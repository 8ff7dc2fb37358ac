//! The cluster with real processes: `petuumd serve` nodes on 127.0.0.1,
//! real RocksDB data directories, real gRPC; nodes are SIGKILLed and
//! SIGSTOPped. (issue: petuumd cluster)

#![allow(clippy::result_large_err)]

use petuum_cluster::placement::shard_group;
use petuum_cluster::wire::{
    encode, DataRequest, RaftBatch, RaftBatchReply, KIND_APPEND, KIND_BATCH, KIND_CHUNK, KIND_DATA,
    MAX_BATCH_MESSAGES,
};
use petuum_core::consistency::Consistency;
use petuum_core::service::ShardService;
use petuum_core::types::{shard_of, ElemType, RowKind, TableSpec};
use petuum_core::worker::{Node, WorkerCtx};
use petuum_proto::v1::peer_client::PeerClient;
use petuum_proto::v1::Envelope;
use petuum_proto::PROTOCOL_VERSION;
use petuum_tests::cluster::{assert_replica_totals, signal, LocalCluster};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn counters(job: u64, columns: u32) -> TableSpec {
    TableSpec {
        id: 1,
        name: "counters".into(),
        job,
        kind: RowKind::Dense,
        elem: ElemType::I64,
        columns,
    }
}

/// Job 3's one worker under SSP(1) on a new `counters` table, and its
/// step: one clock adding 1 to rows 0..12 (so after n steps every row of
/// table 1 holds n).
fn counting_worker(
    client: petuum_cluster::ClusterShards,
) -> (
    Arc<petuum_cluster::ClusterShards>,
    WorkerCtx,
    impl Fn(&mut WorkerCtx),
) {
    let spec = counters(3, 1);
    client.create_table(&spec).unwrap();
    client.register_job(3, 1, false).unwrap();
    let client = Arc::new(client);
    let node = Node::new(client.clone(), 1024);
    let w = WorkerCtx::new(node, 3, 0, 1, Consistency::Ssp { staleness: 1 }, &[spec], 0);
    let t = w.table::<i64>("counters").unwrap();
    let step = move |w: &mut WorkerCtx| {
        for r in 0..12 {
            w.inc(t, r, 0, 1).unwrap();
        }
        w.clock().unwrap();
    };
    (client, w, step)
}

/// Leaders per node over the shard groups.
fn leader_counts(view: &[(u64, u64)]) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for &(g, l) in view {
        if g != 0 {
            *m.entry(l).or_default() += 1;
        }
    }
    m
}

#[test]
fn three_nodes_form_with_64_shards_and_spread_leaders() {
    let c = LocalCluster::start(3, 64, "");
    let client = c.connect();
    let view = c.wait_leaders(&client, &[1, 2, 3], Duration::from_secs(60));
    assert_eq!(view.len(), 65, "64 shard groups and the metadata group");
    let counts = leader_counts(&view);
    for (node, n) in &counts {
        assert!(*n <= 32, "node {node} leads {n} of 64 shards: {counts:?}");
    }
    // Every shard group has 3 voters on every node's view.
    let s = client.status(2).unwrap();
    assert_eq!(s.groups.len(), 65);
    assert!(
        s.groups.iter().all(|g| g.voters.len() == 3),
        "{:?}",
        s.groups
    );
    // The CLI shows the same picture.
    let ep = format!("http://{}", c.nodes[1].addr);
    let out = petuum_tests::run(
        "petuum-client",
        &["nodes", "--json", "--endpoint", &ep],
        c.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = &petuum_tests::json_lines(&out)[0];
    assert_eq!(j["shards"], 64);
    assert_eq!(j["leaderless"].as_array().unwrap().len(), 0);
    for n in j["nodes"].as_array().unwrap() {
        assert!(
            ["up", "unknown"].contains(&n["state"].as_str().unwrap()),
            "{n}"
        );
    }
    let led: u64 = j["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["leads"].as_u64().unwrap())
        .sum();
    assert_eq!(led, 64);
    // Each replica's log indices: nothing is applied past its last entry.
    for g in j["groups"].as_array().unwrap() {
        assert!(
            g["last_log"].as_u64().unwrap() >= g["applied"].as_u64().unwrap()
                && g["purged"].as_u64().is_some(),
            "{g}"
        );
    }
    let out = petuum_tests::run(
        "petuum-client",
        &["nodes", "--endpoint", "http://127.0.0.1:1"],
        c.path(),
    );
    assert_eq!(out.status.code(), Some(3), "unreachable: exit 3");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach http://127.0.0.1:1"));
    // A table over the 64 shards takes writes and reads on every shard.
    client.create_table(&counters(7, 2)).unwrap();
    client.register_job(7, 1, false).unwrap();
    let node = Node::new(Arc::new(client), 1024);
    let mut w = WorkerCtx::new(
        node.clone(),
        7,
        0,
        1,
        Consistency::Bsp,
        &[counters(7, 2)],
        0,
    );
    let t = w.table::<i64>("counters").unwrap();
    let mut shards_hit = std::collections::BTreeSet::new();
    for r in 0..400u64 {
        w.inc(t, r, 1, r as i64).unwrap();
        shards_hit.insert(shard_of(1, r, 64));
    }
    assert_eq!(shards_hit.len(), 64);
    w.clock().unwrap();
    for r in (0..400u64).step_by(37) {
        assert_eq!(w.get(t, r).unwrap().value(1), r as i64);
    }
}

/// Counters under SSP(2) with 4 workers (two of them aggregated on their
/// node); the leader of row 0's shard is SIGKILLed mid-run and restarted
/// later. Every acknowledged increment
/// must be in the final totals, exactly, on every replica.
#[test]
fn killed_leader_loses_no_acknowledged_increment() {
    const WORKERS: u32 = 4;
    const CLOCKS: u64 = 30;
    const ROWS: u64 = 24;
    let mut c = LocalCluster::start(3, 16, "");
    let client = c.connect();
    c.wait_leaders(&client, &[1, 2, 3], Duration::from_secs(60));
    let spec = counters(1, WORKERS);
    client.create_table(&spec).unwrap();
    client.register_job(1, WORKERS, false).unwrap();
    let client = Arc::new(client);
    let node = Node::new(client.clone(), 4096);
    // Workers 0 and 1 send their clocks together (node-level aggregation:
    // one summed batch per shard per clock); 2 and 3 each send their own.
    node.group(1, &[0, 1], Consistency::Ssp { staleness: 2 }, false);
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..WORKERS).map(|_| AtomicU64::new(0)).collect());
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let node = node.clone();
            let spec = spec.clone();
            let progress = progress.clone();
            std::thread::spawn(move || {
                let mut ctx = WorkerCtx::new(
                    node,
                    1,
                    w,
                    WORKERS,
                    Consistency::Ssp { staleness: 2 },
                    &[spec],
                    0,
                );
                let t = ctx.table::<i64>("counters").unwrap();
                for clock in 0..CLOCKS {
                    for r in 0..ROWS {
                        // SSP(2): a worker at clock c sees every other
                        // worker's increments of clocks < c - 2, and its own.
                        let row = ctx.get(t, r).unwrap();
                        for other in 0..WORKERS {
                            let seen = row.value(other);
                            let done_clocks = if other == w {
                                clock
                            } else {
                                clock.saturating_sub(2)
                            };
                            let lower = (done_clocks * (done_clocks + 1) / 2) as i64;
                            assert!(
                                seen >= lower,
                                "worker {w} clock {clock} row {r}: column {other} = {seen} < {lower}"
                            );
                        }
                        ctx.inc(t, r, w, clock as i64 + 1).unwrap();
                    }
                    // Handed to the transport: at most 2 clocks (SSP(2))
                    // are then still uncommitted.
                    ctx.clock().unwrap();
                    progress[w as usize].store(clock + 1, Ordering::SeqCst);
                }
                // Acknowledged: committed by a quorum of every shard.
                ctx.flush().unwrap();
            })
        })
        .collect();
    // Kill the leader of row 0's shard once every worker is a few clocks in.
    let start = Instant::now();
    while progress
        .iter()
        .map(|p| p.load(Ordering::SeqCst))
        .min()
        .unwrap()
        < 5
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "workers stalled\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let group = shard_group(shard_of(1, 0, 16));
    let victim = client
        .status(1)
        .unwrap()
        .groups
        .iter()
        .find(|g| g.group == group)
        .unwrap()
        .leader;
    c.kill(victim);
    let killed_at: Vec<u64> = progress.iter().map(|p| p.load(Ordering::SeqCst)).collect();
    std::thread::sleep(Duration::from_secs(3));
    let during: Vec<u64> = progress.iter().map(|p| p.load(Ordering::SeqCst)).collect();
    c.spawn(victim);
    for h in handles {
        h.join().expect("worker panicked");
    }
    assert!(
        during.iter().zip(&killed_at).any(|(d, k)| d > k) || during.iter().all(|&d| d == CLOCKS),
        "no worker progressed while node {victim} was down: {killed_at:?} -> {during:?}"
    );
    // The restarted node takes back leadership of the shards it is the
    // preferred leader of (leadership balancing).
    let placement = client.placement().clone();
    let preferred: Vec<u64> = (0..16)
        .filter(|&s| placement.preferred_leader(s) == victim)
        .map(shard_group)
        .collect();
    let start = Instant::now();
    loop {
        let view = c.wait_leaders(&client, &[1, 2, 3], Duration::from_secs(60));
        let back = view
            .iter()
            .filter(|(g, l)| preferred.contains(g) && *l == victim)
            .count();
        if back == preferred.len() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "node {victim} leads {back} of its {} preferred groups: {view:?}\n{}",
            preferred.len(),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Every replica (3 of 3 nodes) ends with the exact totals.
    let per_worker = (CLOCKS * (CLOCKS + 1) / 2) as i64;
    let expected: Vec<i64> = vec![per_worker; WORKERS as usize];
    assert_replica_totals(
        &c,
        &client,
        &[1, 2, 3],
        (1, ROWS, 1),
        &[CLOCKS; WORKERS as usize],
        &expected,
    );
}

/// A SIGSTOPped node (a stand-in for a partition) loses its leaderships,
/// the others keep serving, and after SIGCONT it catches up through a
/// snapshot (its peers purged the log it missed).
#[test]
fn stopped_node_loses_leadership_and_catches_up() {
    let mut c = LocalCluster::start(3, 6, "[raft]\nsnapshot_after_entries = 20\n");
    let client = c.connect();
    let view = c.wait_leaders(&client, &[1, 2, 3], Duration::from_secs(60));
    let led_by_2: Vec<u64> = view
        .iter()
        .filter(|(g, l)| *g != 0 && *l == 2)
        .map(|(g, _)| *g)
        .collect();
    assert!(!led_by_2.is_empty(), "node 2 leads nothing: {view:?}");
    let (client, mut w, step) = counting_worker(client);
    for _ in 0..5 {
        step(&mut w);
    }
    let pid = c.pid(2);
    signal(pid, libc::SIGSTOP);
    // The others elect new leaders for node 2's groups. Node 2 holds no
    // entry past a new leader's last entry at its election, so once that
    // leader has purged beyond it, node 2 can only catch up from a
    // snapshot.
    let start = Instant::now();
    let mut moved: Vec<(u64, u64, u64)> = Vec::new(); // (group, leader, last log)
    while moved.len() < led_by_2.len() {
        moved.clear();
        let s1 = client.status(1).unwrap();
        for g in s1.groups.iter().filter(|g| led_by_2.contains(&g.group)) {
            if g.leader == 2 || g.leader == 0 {
                break;
            }
            let on_leader = client.status(g.leader).unwrap();
            if let Some(l) = on_leader.groups.iter().find(|l| l.group == g.group) {
                if l.state == "leader" {
                    moved.push((g.group, g.leader, l.last_log));
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "leadership did not move: {:?}",
            s1.groups
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The cluster keeps serving until those leaders purged the log node 2
    // missed. Clocks, not entries, are what the worker counts (queued
    // clocks share an entry), so the number of clocks that takes varies.
    // Whichever node leads a group by then (leadership may move again
    // between nodes 1 and 3) holds the entries of the first election, so
    // its purge past that leader's last entry is enough.
    let purged_past = || {
        moved.iter().all(|&(group, _, last)| {
            [1u64, 3].iter().any(|&n| {
                client.status(n).is_ok_and(|s| {
                    s.groups
                        .iter()
                        .any(|g| g.group == group && g.state == "leader" && g.purged > last)
                })
            })
        })
    };
    let mut clocks = 5;
    while !purged_past() {
        assert!(
            clocks < 1000,
            "the leaders {moved:?} (group, leader, last entry at election) purged nothing past node 2's log in {clocks} clocks: {:?}",
            client.status(1).map(|s| s.groups)
        );
        step(&mut w);
        clocks += 1;
    }
    eprintln!("{moved:?} (group, leader, last entry at election) purged past node 2's log after {clocks} clocks");
    signal(pid, libc::SIGCONT);
    // Node 2 catches up: rows 0..12 of table 1 hold all of job 3's clocks.
    assert_replica_totals(&c, &client, &[2], (1, 12, 3), &[clocks], &[clocks as i64]);
    let log = std::fs::read_to_string(c.path().join("node2.log")).unwrap();
    assert!(
        log.contains("snapshot installed"),
        "node 2 caught up without installing a snapshot\n{}",
        c.logs()
    );
}

/// A node SIGKILLed in the middle of installing a snapshot from its leader
/// starts again and catches up. openraft 0.9 purged the log a snapshot
/// covers as soon as the install began, before it was durable: a node
/// killed then restarted from its older snapshot with the log past it
/// gone and could not open at all ("Failed to get log entries, expected
/// index: [4642, 4706), got [None, None)", a chaos run's node 3). The
/// install is slowed by a test hook of the node so that the kill lands in
/// it; with openraft's order this test fails.
#[test]
fn a_node_killed_while_installing_a_snapshot_starts_again() {
    let mut c = LocalCluster::start(3, 2, "[raft]\nsnapshot_after_entries = 20\n");
    let client = c.connect();
    c.wait_leaders(&client, &[1, 2, 3], Duration::from_secs(60));
    // From now on node 2 takes 3 s to install a snapshot.
    c.nodes[1].env.push((
        "PETUUM_TEST_SNAPSHOT_INSTALL_DELAY_MS".into(),
        "3000".into(),
    ));
    c.kill(2);
    c.spawn(2);
    c.wait_leaders(&client, &[1, 2, 3], Duration::from_secs(60));
    let (client, mut w, step) = counting_worker(client);
    let mut clocks = 0;
    while clocks < 5 {
        step(&mut w);
        clocks += 1;
    }
    // Node 2 stopped; the others go on until their leaders purged past
    // its log, so that it can only catch up from a snapshot.
    let behind: Vec<(u64, u64)> = client
        .status(2)
        .unwrap()
        .groups
        .iter()
        .filter(|g| g.group != 0)
        .map(|g| (g.group, g.last_log))
        .collect();
    let pid = c.pid(2);
    signal(pid, libc::SIGSTOP);
    let purged_past = || {
        behind.iter().all(|&(group, last)| {
            [1u64, 3].iter().any(|&n| {
                client.status(n).is_ok_and(|s| {
                    s.groups
                        .iter()
                        .any(|g| g.group == group && g.state == "leader" && g.purged > last)
                })
            })
        })
    };
    while !purged_past() {
        assert!(
            clocks < 1000,
            "no leader purged past node 2's log {behind:?}"
        );
        step(&mut w);
        clocks += 1;
    }
    signal(pid, libc::SIGCONT);
    // Killed while it installs the first snapshot, it starts again.
    c.wait_for_log(
        2,
        |log| log.contains("installing a snapshot"),
        Duration::from_secs(60),
        "a snapshot install begun",
    );
    c.kill(2);
    c.spawn(2);
    assert!(
        c.wait_exit(2, Duration::from_secs(5)).is_none(),
        "node 2 did not start again after a kill during a snapshot install\n{}",
        c.logs()
    );
    assert_replica_totals(&c, &client, &[2], (1, 12, 3), &[clocks], &[clocks as i64]);
}

/// Garbage bytes, a wrong protocol version, a wrong cluster and
/// undecodable payloads get clear errors; the node keeps serving.
#[test]
fn garbage_and_wrong_versions_get_clear_errors() {
    let c = LocalCluster::start(1, 4, "");
    let client = c.connect();
    c.wait_leaders(&client, &[1], Duration::from_secs(30));
    let addr = c.nodes[0].addr.clone();
    // Raw garbage on the socket, with and without the HTTP/2 preface.
    for bytes in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761u32) >> 13) as u8)
            .collect::<Vec<u8>>(),
        [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice(), &[0xff; 64]].concat(),
    ] {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(&bytes);
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    }
    let status = client.status(1).expect("node still serving after garbage");
    let cluster = status.cluster;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let call = |version: u32, cluster: u64, kind: u32, raft: bool, payload: Vec<u8>| {
        rt.block_on(async {
            let mut p = PeerClient::connect(format!("http://{addr}")).await.unwrap();
            let env = Envelope {
                version,
                cluster,
                from: 1,
                group: 1,
                kind,
                payload: payload.into(),
            };
            if raft {
                p.raft(env).await
            } else {
                p.data(env).await
            }
        })
    };
    let e = call(99, cluster, KIND_DATA, false, vec![]).unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message().contains("protocol version 99")
            && e.message().contains(&format!("version {PROTOCOL_VERSION}")),
        "{}",
        e.message()
    );
    let e = call(PROTOCOL_VERSION, cluster ^ 1, KIND_DATA, false, vec![]).unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(e.message().contains("cluster"), "{}", e.message());
    let e = call(
        PROTOCOL_VERSION,
        cluster,
        KIND_DATA,
        false,
        vec![0xde, 0xad, 0xbe, 0xef, 0xff],
    )
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("cannot decode data request"),
        "{}",
        e.message()
    );
    // A chunk message that is not a chunk request, or names a dataset
    // this node does not hold.
    let e = call(PROTOCOL_VERSION, cluster, KIND_CHUNK, false, vec![0xff; 16]).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("must carry a dataset chunk request"),
        "{}",
        e.message()
    );
    let e = call(
        PROTOCOL_VERSION,
        cluster,
        KIND_CHUNK,
        false,
        chunk_request(),
    )
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    let e = call(PROTOCOL_VERSION, cluster, KIND_APPEND, true, vec![0xff; 32]).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("cannot decode append-entries"),
        "{}",
        e.message()
    );
    let e = call(PROTOCOL_VERSION, cluster, 77, true, vec![]).unwrap_err();
    assert!(
        e.message().contains("unknown Raft message kind 77"),
        "{}",
        e.message()
    );
    // Raft batches (several groups' messages in one call): garbage, a
    // batch inside a batch, and bad messages inside a good batch, each
    // answered with its own error.
    let e = call(PROTOCOL_VERSION, cluster, KIND_BATCH, true, vec![0xff; 32]).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("Raft batch"), "{}", e.message());
    let nested: RaftBatch = vec![(1, KIND_BATCH, vec![])];
    let e = call(PROTOCOL_VERSION, cluster, KIND_BATCH, true, encode(&nested)).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("inside a Raft batch"),
        "{}",
        e.message()
    );
    let too_many: RaftBatch = vec![(1, 77, vec![]); MAX_BATCH_MESSAGES + 1];
    let e = call(
        PROTOCOL_VERSION,
        cluster,
        KIND_BATCH,
        true,
        encode(&too_many),
    )
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("at most"), "{}", e.message());
    let mixed: RaftBatch = vec![
        (1, KIND_APPEND, vec![0xff; 32]),
        (1, 77, vec![]),
        (999, KIND_APPEND, vec![]),
    ];
    let reply = call(PROTOCOL_VERSION, cluster, KIND_BATCH, true, encode(&mixed)).unwrap();
    let answers: RaftBatchReply =
        petuum_cluster::wire::decode(&reply.into_inner().payload, "reply").unwrap();
    let errors: Vec<String> = answers
        .into_iter()
        .map(|a| a.expect_err("each message is refused").1)
        .collect();
    assert!(
        errors[0].contains("cannot decode append-entries"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("unknown Raft message kind 77"),
        "{errors:?}"
    );
    assert!(errors[2].contains("group 999 has no replica"), "{errors:?}");
    // Still serving: a table write and read.
    client.create_table(&counters(5, 1)).unwrap();
    client.register_job(5, 1, false).unwrap();
    assert_eq!(client.row_ids(1).unwrap(), Vec::<u64>::new());
}

/// A well-formed request for chunk 0 of a dataset nobody holds.
fn chunk_request() -> Vec<u8> {
    petuum_cluster::wire::encode(&DataRequest::DatasetChunk {
        record: petuum_cluster::datasets::DatasetRecord {
            sha256: "ab".repeat(32),
            name: "x.csv".into(),
            size: 5,
            chunk_size: petuum_cluster::datasets::CHUNK,
            chunks_sha256: "cd".repeat(32),
            source: "upload".into(),
            holders: vec![2],
            ready: true,
            created_ms: 0,
        },
        index: 0,
    })
}

/// A bad node configuration is refused at start with the field named.
#[test]
fn bad_node_config_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        "id = 4\nlisten = \"127.0.0.1:1\"\ndata_dir = \"d\"\npeers = [{ id = 1, addr = \"127.0.0.1:1\" }]\n",
    )
    .unwrap();
    let out = petuum_tests::run(
        "petuumd",
        &["serve", "--config", cfg.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`peers`") && err.contains("id 4"), "{err}");
    std::fs::write(&cfg, "id = 1\nlisten = \"nowhere\"\n").unwrap();
    let out = petuum_tests::run(
        "petuumd",
        &["serve", "--config", cfg.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen"), "{err}");
    // A data directory of another node or shard space, and a corrupt
    // identity file, are refused before anything is opened (a different
    // peer list is not: members join and leave, the stored identity stays).
    let port = petuum_tests::cluster::free_port();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("cluster.json"),
        r#"{"cluster_id": 1, "node": 1, "nodes": [1, 2], "shards": 8, "replicas": 3}"#,
    )
    .unwrap();
    std::fs::write(
        &cfg,
        format!(
            "id = 1\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nshards = 64\npeers = [{{ id = 1, addr = \"127.0.0.1:{port}\" }}]\n",
            data.display()
        ),
    )
    .unwrap();
    let serve = || {
        petuum_tests::run(
            "petuumd",
            &["serve", "--config", cfg.to_str().unwrap()],
            dir.path(),
        )
    };
    let out = serve();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("belongs to node 1 of cluster 0000000000000001 with 8 shards")
            && err.contains("the configuration says node 1, 64 shards"),
        "{err}"
    );
    std::fs::write(data.join("cluster.json"), "{not json").unwrap();
    let out = serve();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("corrupt cluster identity"), "{err}");
}

/// With `[tls]` nodes talk mutual TLS: peer RPCs need a node certificate
/// (made by `petuumd certs`) whose node id is the message's `from`; a
/// client needs the bearer token or a client certificate, and a client
/// credential cannot call peer RPCs. Each refusal is a clear status and the
/// node keeps serving; a job runs end to end through `petuum-client` over
/// TLS; the token never appears in the logs.
#[test]
fn mutual_tls_and_client_token() {
    use petuum_cluster::ConnectOptions;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let certs = tempfile::tempdir().unwrap();
    let tls = petuum_tests::cluster::make_certs(certs.path(), 3);
    let secret = "tok-5e9a1c7d2b4f8e30";
    let token_file = certs.path().join("token");
    std::fs::write(&token_file, format!("{secret}\n")).unwrap();
    let c = LocalCluster::start_with(3, 4, |id| {
        format!(
            "client_token_file = \"{}\"\n{}",
            token_file.display(),
            tls[id as usize - 1]
        )
    });
    let read = |f: &str| std::fs::read(certs.path().join(f)).unwrap();
    let ca = Certificate::from_pem(read("ca.pem"));
    let client_tls = ClientTlsConfig::new()
        .ca_certificate(ca.clone())
        .identity(Identity::from_pem(read("node1.pem"), read("node1.key")));
    let opts = ConnectOptions {
        tls: Some(client_tls.clone()),
        token: Some(secret.into()),
        ..Default::default()
    };
    // Table traffic is a peer RPC: a node's certificate, sent as that node.
    let client = c.connect_as(opts.clone(), 1);
    c.wait_leaders(&client, &[1, 2, 3], Duration::from_secs(60));
    client.create_table(&counters(9, 1)).unwrap();
    client.register_job(9, 1, false).unwrap();
    let node = Node::new(Arc::new(client), 64);
    let mut w = WorkerCtx::new(node, 9, 0, 1, Consistency::Bsp, &[counters(9, 1)], 0);
    let t = w.table::<i64>("counters").unwrap();
    w.inc(t, 3, 0, 42).unwrap();
    w.clock().unwrap();
    assert_eq!(w.get(t, 3).unwrap().value(0), 42);

    // No token and no client certificate: refused, and the error says why.
    let quick = Duration::from_secs(2);
    let no_token = ConnectOptions {
        token: None,
        deadline: quick,
        tls: Some(ClientTlsConfig::new().ca_certificate(ca.clone())),
        ..opts.clone()
    };
    let e = petuum_cluster::ClusterShards::connect(&c.endpoints(), no_token)
        .err()
        .expect("token required");
    assert!(e.to_string().contains("bearer token"), "{e}");
    // Plain HTTP/2 to a TLS node: no answer.
    let plain = ConnectOptions {
        tls: None,
        deadline: quick,
        ..opts.clone()
    };
    assert!(petuum_cluster::ClusterShards::connect(&c.endpoints(), plain).is_err());
    // TLS without a client certificate: status is allowed (clients), Raft is not.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = c.nodes[0].addr.clone();
    let cluster = rt.block_on(async {
        let ch = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(ClientTlsConfig::new().ca_certificate(ca.clone()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut status = petuum_proto::v1::cluster_client::ClusterClient::new(ch.clone());
        let mut req = tonic::Request::new(petuum_proto::v1::StatusRequest {});
        req.metadata_mut()
            .insert("authorization", format!("Bearer {secret}").parse().unwrap());
        let s = status
            .status(req)
            .await
            .expect("status over TLS without a client cert");
        let mut peer = PeerClient::new(ch);
        let mut req = tonic::Request::new(Envelope {
            version: PROTOCOL_VERSION,
            cluster: s.get_ref().cluster,
            from: 2,
            group: 1,
            kind: KIND_APPEND,
            payload: Default::default(),
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {secret}").parse().unwrap());
        let e = peer.raft(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("node certificate"), "{}", e.message());
        let cluster = s.into_inner().cluster;
        // Node 2's certificate, claiming to be node 3: refused.
        let as_node = |cert: &str, key: &str| {
            let tls = ClientTlsConfig::new()
                .ca_certificate(ca.clone())
                .identity(Identity::from_pem(read(cert), read(key)));
            let addr = addr.clone();
            async move {
                Endpoint::from_shared(format!("https://{addr}"))
                    .unwrap()
                    .tls_config(tls)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap()
            }
        };
        let envelope = |from: u64| Envelope {
            version: PROTOCOL_VERSION,
            cluster,
            from,
            group: 1,
            kind: KIND_APPEND,
            payload: Default::default(),
        };
        let mut forged = PeerClient::new(as_node("node2.pem", "node2.key").await);
        let e = forged.raft(envelope(3)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(
            e.message().contains("certificate of node 2") && e.message().contains("node 3"),
            "{}",
            e.message()
        );
        // A client certificate is no peer credential.
        let ch = as_node("client-test.pem", "client-test.key").await;
        let e = PeerClient::new(ch.clone())
            .raft(envelope(2))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(
            e.message()
                .contains("not a member yet may only ask to join"),
            "{}",
            e.message()
        );
        // ... but it is a client credential (no token needed), and the
        // node still serves after the refusals.
        petuum_proto::v1::cluster_client::ClusterClient::new(ch)
            .status(petuum_proto::v1::StatusRequest {})
            .await
            .expect("status with a client certificate");
        cluster
    });
    assert_ne!(cluster, 0);

    // A job end to end through petuum-client over TLS.
    let ep = format!("https://{}", c.nodes[1].addr);
    let ca_file = certs.path().join("ca.pem").display().to_string();
    let tls_client = |args: &[&str]| {
        let mut all = vec!["--ca", &ca_file, "--token", secret];
        all.extend_from_slice(args);
        petuum_tests::cluster::client(&ep, &all, c.path())
    };
    let spec = c.path().join("job.toml");
    std::fs::write(
        &spec,
        petuum_tests::spam_lr_job("tls", 6, 2, &c.path().join("m.safetensors")),
    )
    .unwrap();
    let out = tls_client(&["submit", spec.to_str().unwrap(), "--wait"]);
    assert!(
        out.status.success(),
        "submit over TLS: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("succeeded"));
    // A client certificate instead of the token.
    let (cert, key) = (
        certs.path().join("client-test.pem").display().to_string(),
        certs.path().join("client-test.key").display().to_string(),
    );
    let out = petuum_tests::cluster::client(
        &ep,
        &["--ca", &ca_file, "--cert", &cert, "--key", &key, "nodes"],
        c.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain HTTP/2 against the TLS port, and https without the CA: refused
    // with a message naming the problem.
    let plain = petuum_tests::cluster::client(
        &format!("http://{}", c.nodes[1].addr),
        &["--token", secret, "list"],
        c.path(),
    );
    assert_eq!(plain.status.code(), Some(3));
    let no_ca = petuum_tests::cluster::client(&ep, &["--token", secret, "list"], c.path());
    assert_eq!(no_ca.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&no_ca.stderr).contains("--ca"));
    for n in &c.nodes {
        let log = std::fs::read_to_string(&n.log).unwrap();
        assert!(!log.contains(secret), "node {} logged the token", n.id);
    }
}

/// SIGTERM (preemption, `systemctl stop`): the node hands its leaderships
/// to other replicas while still serving, exits 0 well within the unit's
/// 30 s grace period, and the cluster keeps taking writes. A connection
/// that never sends a request does not hold the exit (the server's drain
/// is bounded: hyper's graceful shutdown waits for every connection).
#[test]
fn sigterm_hands_off_leadership_and_exits_zero() {
    let mut c = LocalCluster::start(3, 8, "");
    let client = c.connect();
    let view = c.wait_leaders(&client, &[1, 2, 3], Duration::from_secs(60));
    assert!(
        view.iter().any(|&(_, l)| l == 1),
        "node 1 leads nothing: {view:?}"
    );
    client.create_table(&counters(4, 1)).unwrap();
    client.register_job(4, 1, false).unwrap();
    let client = Arc::new(client);
    let node = Node::new(client.clone(), 64);
    let mut w = WorkerCtx::new(node, 4, 0, 1, Consistency::Bsp, &[counters(4, 1)], 0);
    let t = w.table::<i64>("counters").unwrap();
    let step = |w: &mut WorkerCtx| {
        for r in 0..16 {
            w.inc(t, r, 0, 1).unwrap();
        }
        w.clock().unwrap();
    };
    for _ in 0..3 {
        step(&mut w);
    }
    // Accepted and then silent, as from a peer that stopped mid-handshake.
    let _idle = std::net::TcpStream::connect(&c.nodes[0].addr).unwrap();
    let pid = c.pid(1);
    let t0 = Instant::now();
    signal(pid, libc::SIGTERM);
    let status = c
        .wait_exit(1, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("node 1 still running 20 s after SIGTERM\n{}", c.logs()));
    let took = t0.elapsed();
    assert!(status.success(), "exit status {status:?}\n{}", c.logs());
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    // Leadership already moved: every group has a leader among 2 and 3.
    c.wait_leaders(&client, &[2, 3], Duration::from_secs(5));
    // And the metadata group knows node 1 left (node 1 announced it before
    // exiting; a follower's replica applies it with the next commit index).
    let start = Instant::now();
    loop {
        let states: Vec<(u64, String)> = client
            .status(2)
            .unwrap()
            .nodes
            .iter()
            .map(|n| (n.id, n.state.clone()))
            .collect();
        if states[0] == (1, "leaving".to_string()) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{states:?}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..3 {
        step(&mut w);
    }
    assert_eq!(w.get(t, 5).unwrap().value(0), 6);
    let log = std::fs::read_to_string(&c.nodes[0].log).unwrap();
    assert!(log.contains("handed off"), "{}", c.logs());
}

/// A restart replays each group's log since its last snapshot, and
/// entries range from bytes to megabytes, so besides openraft's count of
/// entries a node snapshots a group whose log has outgrown
/// `raft.snapshot_after_mib`. Here the count (100000) cannot fire; 3 MiB
/// of pushes to one shard do, and the snapshot the node stored (read from
/// its RocksDB after a SIGKILL) covers them.
#[test]
fn a_log_past_its_size_bound_is_snapshotted() {
    let mut c = LocalCluster::start(
        3,
        2,
        "[raft]\nsnapshot_after_entries = 100000\nsnapshot_after_mib = 1\n",
    );
    let client = c.connect();
    c.wait_leaders(&client, &[1, 2, 3], Duration::from_secs(60));
    // 16384 i64 columns: 128 KiB of values per pushed row.
    let spec = counters(3, 16384);
    client.create_table(&spec).unwrap();
    client.register_job(3, 1, false).unwrap();
    let client = Arc::new(client);
    let node = Node::new(client.clone(), 1024);
    let mut w = WorkerCtx::new(node, 3, 0, 1, Consistency::Bsp, &[spec], 0);
    let t = w.table::<i64>("counters").unwrap();
    for _ in 0..24 {
        for col in 0..16384 {
            w.inc(t, 0, col, 1).unwrap();
        }
        w.clock().unwrap();
    }
    w.flush().unwrap();
    let shard = shard_of(1, 0, 2);
    let group = shard_group(shard);
    let wanted = format!("snapshot built group={group} shard={shard}");
    c.wait_for_log(
        1,
        |log| log.contains(&wanted),
        Duration::from_secs(60),
        &format!("no snapshot of group {group} after 3 MiB of log"),
    );
    c.kill(1);
    let db =
        petuum_storage::NodeDb::open(petuum_storage::StorageConfig::new(c.data_dir(1).join("db")))
            .unwrap();
    let sm = petuum_storage::ShardStateMachine::open(db, group, shard).unwrap();
    let applied = sm.handle().last_applied().map_or(0, |l| l.index);
    // The table, the registration and at least 8 of the 128 KiB pushes
    // (1 MiB) precede the snapshot.
    assert!(
        applied >= 10,
        "the stored snapshot covers {applied} entries"
    );
}

/// A peer that is down is logged once when it goes and once when it comes
/// back, not at every heartbeat of every group it shares (openraft's
/// per-RPC replication errors are filtered out of node logs).
#[test]
fn a_down_peer_is_logged_once_not_per_heartbeat() {
    let mut c = LocalCluster::start(3, 8, "");
    let client = c.connect();
    c.wait_leaders(&client, &[1, 2, 3], Duration::from_secs(60));
    let log = c.nodes[0].log.clone();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let lines = |text: &str, what: &str| {
        text.lines()
            .filter(|l| l.contains(what) && l.contains("peer=3"))
            .count()
    };
    // (Node 3 may have been unreachable for a moment at the start too.)
    let before = read().len();
    c.kill(3);
    c.wait_for_log(
        1,
        |log| lines(&log[before..], "peer unreachable") > 0,
        Duration::from_secs(30),
        "node 3 never logged as unreachable",
    );
    // Two more seconds of heartbeats from node 1's groups to node 3
    // (75 ms apart): dozens of failed RPCs, still one line.
    std::thread::sleep(Duration::from_secs(2));
    let text = read()[before..].to_string();
    assert_eq!(lines(&text, "peer unreachable"), 1, "{text}");
    assert!(
        !text.contains("AppendEntries"),
        "per-heartbeat replication errors in the log:\n{text}"
    );
    c.spawn(3);
    c.wait_for_log(
        1,
        |log| lines(&log[before..], "peer reachable again") > 0,
        Duration::from_secs(60),
        "node 3 never logged as back",
    );
}

/// Managed communication on real nodes: a worker with a bandwidth budget
/// pushes its current clock's increments early; a reader on another node
/// sees them before the clock is pushed, and exactly once after it is
/// committed (the replica drops the preview once the clock's batch, which
/// carries the same increments, is applied there).
#[test]
fn a_preview_reaches_other_nodes_before_the_clock_and_counts_once_after() {
    let c = LocalCluster::start(3, 4, "");
    let admin = c.connect();
    c.wait_leaders(&admin, &[1, 2, 3], Duration::from_secs(60));
    let spec = TableSpec {
        id: 1,
        name: "w".into(),
        job: 7,
        kind: RowKind::Dense,
        elem: ElemType::F32,
        columns: 4,
    };
    admin.create_table(&spec).unwrap();
    admin.register_job(7, 2, false).unwrap();
    // The writer's workers run "on" node 1; the reader's on node 2.
    let writer: Arc<dyn ShardService> = Arc::new(c.connect_as(Default::default(), 1));
    let reader = c.connect_as(Default::default(), 2);
    let node = Node::new(writer, 1024);
    node.set_bandwidth(7, 10e6);
    let ssp = Consistency::Ssp { staleness: 2 };
    let mut w = WorkerCtx::new(node, 7, 0, 2, ssp, std::slice::from_ref(&spec), 0);
    let t = w.table::<f32>("w").unwrap();
    let read = |row: u64| -> Vec<f32> {
        let snap = reader
            .fetch(&petuum_core::service::FetchRequest {
                job: 7,
                table: 1,
                row,
                worker: 1,
                // As a worker reads (a replica read; `None` would be a
                // leader read of what is committed only).
                min_clock: Some(0),
                own_clock: 0,
            })
            .unwrap();
        match &*snap.row {
            petuum_core::row::AnyRow::F32(r) => r.to_dense(4),
            other => panic!("unexpected row {other:?}"),
        }
    };
    // Increments of clock 0, spread over time so that previews are due.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut total = 0.0f32;
    loop {
        for _ in 0..16 {
            w.batch_inc(t, 3, &[1.0, 0.0, 0.0, 2.0]).unwrap();
            total += 1.0;
        }
        std::thread::sleep(Duration::from_millis(3));
        let seen = read(3);
        // Never more than the worker has added, never a torn row.
        assert!(seen[0] <= total, "{seen:?} > {total}");
        assert_eq!(seen[3], 2.0 * seen[0], "{seen:?}");
        if seen[0] > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no preview reached node 2 in 20 s (worker stats {:?})",
            w.stats()
        );
    }
    assert!(w.stats().previews > 0 && w.stats().preview_bytes > 0);
    // The clock's batch carries everything; once committed and applied on
    // node 2's replica, the row holds each increment exactly once.
    w.clock().unwrap();
    w.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (row, _, clocks) = reader.read_local(2, 1, 3, Some(7)).unwrap();
        if clocks.first().copied() == Some(1) {
            assert!(row.is_some());
            break;
        }
        assert!(Instant::now() < deadline, "node 2 did not apply clock 0");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(read(3), vec![total, 0.0, 0.0, 2.0 * total]);
}

/// A job that began with its tables on every shard (as protocol version 8
/// placed them) and is run again by a node that gives it a span: its
/// checkpoint has parts outside the span, which `checkpoint_outside_span`
/// finds (the daemon then fails the run rather than restore part of it);
/// a job that had its span from the start has none there, and its span's
/// parts restore.
#[test]
fn a_checkpoint_beyond_a_jobs_span_is_found() {
    let c = LocalCluster::start(3, 8, "");
    let client = c.connect();
    c.wait_leaders(&client, &[1, 2, 3], Duration::from_secs(60));
    let client = Arc::new(client);
    // Job 4 on every shard; job 5 on 3 of the 8 from the start.
    client.set_job_shards(5, 3, [2]);
    for (job, table) in [(4u64, 1u32), (5, 2)] {
        let spec = TableSpec {
            id: table,
            ..counters(job, 1)
        };
        client.create_table(&spec).unwrap();
        client.register_job_every(job, 1, false, 2).unwrap();
        let node = Node::new(client.clone(), 64);
        let mut w = WorkerCtx::new(
            node,
            job,
            0,
            1,
            Consistency::Bsp,
            std::slice::from_ref(&spec),
            0,
        );
        let t = w.table::<i64>("counters").unwrap();
        for _ in 0..4 {
            for r in 0..32 {
                w.inc(t, r, 0, 1).unwrap();
            }
            w.clock().unwrap();
        }
        w.flush().unwrap();
    }
    assert!(!client.checkpoint_outside_span(5, 1).unwrap());
    client
        .restore_checkpoint(5, 1)
        .unwrap_or_else(|e| panic!("job 5's span lacks its checkpoint: {e}\n{}", c.logs()));
    assert!(
        !client.checkpoint_outside_span(4, 1).unwrap(),
        "every shard is its span"
    );
    client.set_job_shards(4, 3, [1]);
    assert!(client.checkpoint_outside_span(4, 1).unwrap());
}
