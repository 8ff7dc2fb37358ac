//! `/metrics`: the node's series in the Prometheus text format
//! (docs/operations.md lists them).
//!
//! Three sources:
//! - counters and histograms recorded where things happen (storage and
//!   Raft: [`petuum_storage::StoreMetrics`]; table traffic of the jobs
//!   running here: [`JobTraffic`]);
//! - gauges read at scrape time: each group's Raft state, RocksDB
//!   properties, the process's memory and CPU;
//! - the jobs' records (clock, objective, recoveries, ...), exported by the
//!   metadata leader only, so each job has one series in the cluster
//!   whichever node is scraped.

use crate::jobs::Jobs;
use openraft::ServerState;
use parking_lot::Mutex;
use petuum_cluster::jobs::JobState;
use petuum_core::runner::Traffic;
use petuum_storage::metrics::GroupLabel;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A job's label. Not `job`: Prometheus gives that name to the scrape
/// job, and would rename ours to `exported_job`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub job_id: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobInfoLabels {
    job_id: u64,
    name: String,
    algorithm: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: u64,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;

/// How long a finished job's series stay exported.
const KEEP_ENDED: Duration = Duration::from_secs(600);

/// Table traffic of the runs on this node, per job: what its workers here
/// pushed, pulled and waited (counters; summed over nodes by a query).
#[derive(Default)]
pub struct JobTraffic {
    pushed: Family<JobLabel, Counter>,
    pulled: Family<JobLabel, Counter>,
    wait: Family<JobLabel, FloatCounter>,
    commit_wait: Family<JobLabel, FloatCounter>,
    previewed: Family<JobLabel, Counter>,
    /// Per (job, epoch): the cumulative counts already added, and when.
    seen: Mutex<HashMap<(u64, u64), (Traffic, Instant)>>,
}

impl JobTraffic {
    /// Adds what a run's workers did since its last report (`now` is
    /// cumulative since the run started).
    pub fn report(&self, job: u64, epoch: u64, now: Traffic) {
        let mut seen = self.seen.lock();
        let (before, at) = seen
            .entry((job, epoch))
            .or_insert_with(|| (Traffic::default(), Instant::now()));
        let l = JobLabel { job_id: job };
        self.pushed
            .get_or_create(&l)
            .inc_by(now.pushed_bytes.saturating_sub(before.pushed_bytes));
        self.pulled
            .get_or_create(&l)
            .inc_by(now.pulled_bytes.saturating_sub(before.pulled_bytes));
        self.wait
            .get_or_create(&l)
            .inc_by((now.read_wait_s - before.read_wait_s).max(0.0));
        self.commit_wait
            .get_or_create(&l)
            .inc_by((now.commit_wait_s - before.commit_wait_s).max(0.0));
        self.previewed
            .get_or_create(&l)
            .inc_by(now.preview_bytes.saturating_sub(before.preview_bytes));
        *before = now;
        *at = Instant::now();
    }

    /// Drops the series of jobs that ran nothing here for a while.
    fn prune(&self) {
        let mut seen = self.seen.lock();
        let before: std::collections::HashSet<u64> = seen.keys().map(|(j, _)| *j).collect();
        seen.retain(|_, (_, at)| at.elapsed() < KEEP_ENDED);
        let after: std::collections::HashSet<u64> = seen.keys().map(|(j, _)| *j).collect();
        for job in before.difference(&after) {
            let l = JobLabel { job_id: *job };
            self.pushed.remove(&l);
            self.pulled.remove(&l);
            self.wait.remove(&l);
            self.commit_wait.remove(&l);
            self.previewed.remove(&l);
        }
    }
}

/// Times the node's async runtime ran nothing for 100 ms or more past a
/// watchdog's wake-up (`serve.rs`), and the seconds it lost so.
pub static RUNTIME_STALLS: std::sync::LazyLock<Counter> =
    std::sync::LazyLock::new(Counter::default);
pub static RUNTIME_STALL_SECONDS: std::sync::LazyLock<FloatCounter> =
    std::sync::LazyLock::new(FloatCounter::default);

/// Everything `/metrics` encodes.
pub struct Metrics {
    registry: Registry,
    /// Serialises scrapes (the gauges below are cleared and refilled).
    scrape: tokio::sync::Mutex<()>,
    g: Gauges,
    jobs: Arc<Jobs>,
}

#[derive(Default)]
struct Gauges {
    term: Family<GroupLabel, Gauge>,
    leader: Family<GroupLabel, Gauge>,
    is_leader: Family<GroupLabel, Gauge>,
    last_log: Family<GroupLabel, Gauge>,
    applied: Family<GroupLabel, Gauge>,
    voters: Family<GroupLabel, Gauge>,
    quorum_ack_ms: Family<GroupLabel, Gauge>,
    node: Family<NodeLabel, Gauge>,
    sst_bytes: Gauge,
    blob_bytes: Gauge,
    memtable_bytes: Gauge,
    pending_compaction_bytes: Gauge,
    write_stopped: Gauge,
    delayed_write_rate: Gauge,
    rss_bytes: Gauge,
    disk_available: Gauge,
    disk_total: Gauge,
    cpu_seconds: FloatGauge,
    open_fds: Gauge,
    start_time: FloatGauge,
    job_info: Family<JobInfoLabels, Gauge>,
    job_clock: Family<JobLabel, Gauge>,
    job_clocks: Family<JobLabel, Gauge>,
    job_epoch: Family<JobLabel, Gauge>,
    job_objective: Family<JobLabel, FloatGauge>,
    job_throughput: Family<JobLabel, FloatGauge>,
    job_recoveries: Family<JobLabel, Gauge>,
    job_checkpoint_clock: Family<JobLabel, Gauge>,
    job_checkpoint_age: Family<JobLabel, FloatGauge>,
    job_workers: Family<JobLabel, Gauge>,
}

impl Metrics {
    pub fn new(jobs: Arc<Jobs>) -> Metrics {
        let mut r = Registry::default();
        jobs.node.db.metrics().register(&mut r);
        let g = Gauges::default();
        let t = &jobs.traffic;
        r.register_with_unit(
            "petuum_job_pushed",
            "update bytes the job's workers on this node pushed to the shards",
            Unit::Bytes,
            t.pushed.clone(),
        );
        r.register_with_unit(
            "petuum_job_pulled",
            "row bytes the job's workers on this node fetched from the shards",
            Unit::Bytes,
            t.pulled.clone(),
        );
        r.register_with_unit(
            "petuum_job_read_wait",
            "time the job's workers on this node waited on reads, including waits for the staleness bound",
            Unit::Seconds,
            t.wait.clone(),
        );
        r.register_with_unit(
            "petuum_job_commit_wait",
            "time the job's workers on this node waited in clock() for their pushed updates to be committed",
            Unit::Seconds,
            t.commit_wait.clone(),
        );
        r.register_with_unit(
            "petuum_job_preview",
            "bytes of early pushes (managed communication) the job's workers on this node sent",
            Unit::Bytes,
            t.previewed.clone(),
        );
        r.register(
            "petuum_runtime_stalls",
            "times the node's async runtime ran no task for 100 ms or more past its due time",
            RUNTIME_STALLS.clone(),
        );
        r.register_with_unit(
            "petuum_runtime_stall",
            "time the node's async runtime was late running its tasks, in stalls of 100 ms or more",
            Unit::Seconds,
            RUNTIME_STALL_SECONDS.clone(),
        );
        let gauges: [(&str, &str, &Family<GroupLabel, Gauge>); 7] = [
            ("petuum_raft_term", "the group's current Raft term", &g.term),
            (
                "petuum_raft_leader",
                "the node id this replica knows as the group's leader (0: none)",
                &g.leader,
            ),
            (
                "petuum_raft_is_leader",
                "1 when this node leads the group",
                &g.is_leader,
            ),
            (
                "petuum_raft_last_log_index",
                "the index of the last entry in this replica's log",
                &g.last_log,
            ),
            (
                "petuum_raft_applied_index",
                "the index of the last entry this replica applied",
                &g.applied,
            ),
            ("petuum_raft_voters", "voters of the group", &g.voters),
            (
                "petuum_raft_quorum_ack_age_milliseconds",
                "on a leader: time since a quorum last acknowledged it",
                &g.quorum_ack_ms,
            ),
        ];
        for (name, help, f) in gauges {
            r.register(name, help, f.clone());
        }
        r.register(
            "petuum_node",
            "1, labelled with this node's id",
            g.node.clone(),
        );
        let node_gauges: [(&str, &str, &Gauge); 6] = [
            (
                "petuum_rocksdb_sst_bytes",
                "size of the node's RocksDB SST files",
                &g.sst_bytes,
            ),
            (
                "petuum_rocksdb_blob_bytes",
                "size of the node's RocksDB blob files",
                &g.blob_bytes,
            ),
            (
                "petuum_rocksdb_memtable_bytes",
                "size of the node's RocksDB memtables",
                &g.memtable_bytes,
            ),
            (
                "petuum_rocksdb_pending_compaction_bytes",
                "bytes RocksDB estimates compaction must rewrite",
                &g.pending_compaction_bytes,
            ),
            (
                "petuum_rocksdb_write_stopped",
                "1 while RocksDB stops writes (a write stall)",
                &g.write_stopped,
            ),
            (
                "petuum_rocksdb_delayed_write_rate_bytes",
                "RocksDB's write rate limit while it delays writes (0: no delay)",
                &g.delayed_write_rate,
            ),
        ];
        for (name, help, m) in node_gauges {
            r.register(name, help, m.clone());
        }
        r.register_with_unit(
            "petuum_data_dir_available",
            "space the node may still write on its data directory's file system (a full one stops the node)",
            Unit::Bytes,
            g.disk_available.clone(),
        );
        r.register_with_unit(
            "petuum_data_dir_size",
            "size of the data directory's file system",
            Unit::Bytes,
            g.disk_total.clone(),
        );
        r.register_with_unit(
            "process_resident_memory",
            "resident memory of petuumd",
            Unit::Bytes,
            g.rss_bytes.clone(),
        );
        r.register(
            "process_cpu_seconds_total",
            "user and system CPU time of petuumd",
            g.cpu_seconds.clone(),
        );
        r.register(
            "process_open_fds",
            "open file descriptors of petuumd",
            g.open_fds.clone(),
        );
        r.register(
            "process_start_time_seconds",
            "start time of petuumd, seconds since the Unix epoch",
            g.start_time.clone(),
        );
        r.register(
            "petuum_job_info",
            "1 per job, labelled with its name, algorithm and state (metadata leader only)",
            g.job_info.clone(),
        );
        let job_gauges: [(&str, &str, &Family<JobLabel, Gauge>); 6] = [
            (
                "petuum_job_clock",
                "clocks the job finished (metadata leader only)",
                &g.job_clock,
            ),
            (
                "petuum_job_clocks",
                "clocks the job runs in all",
                &g.job_clocks,
            ),
            (
                "petuum_job_epoch",
                "the job's run number (bumped by every placement)",
                &g.job_epoch,
            ),
            (
                "petuum_job_recoveries",
                "times the job rolled back to a checkpoint and restarted",
                &g.job_recoveries,
            ),
            (
                "petuum_job_checkpoint_clock",
                "the clock of the job's newest complete checkpoint",
                &g.job_checkpoint_clock,
            ),
            ("petuum_job_workers", "the job's workers", &g.job_workers),
        ];
        for (name, help, f) in job_gauges {
            r.register(name, help, f.clone());
        }
        r.register(
            "petuum_job_objective",
            "the job's objective after its newest reported clock",
            g.job_objective.clone(),
        );
        r.register(
            "petuum_job_samples_per_second",
            "the job's throughput over its newest reported clock",
            g.job_throughput.clone(),
        );
        r.register_with_unit(
            "petuum_job_checkpoint_age",
            "time since the job's newest checkpoint completed",
            Unit::Seconds,
            g.job_checkpoint_age.clone(),
        );
        Metrics {
            registry: r,
            scrape: tokio::sync::Mutex::new(()),
            g,
            jobs,
        }
    }

    /// The text exposition, gauges read now.
    pub async fn encode(&self) -> String {
        let _one = self.scrape.lock().await;
        self.refresh();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn refresh(&self) {
        let node = &self.jobs.node;
        let g = &self.g;
        g.node.clear();
        g.node.get_or_create(&NodeLabel { node: node.id() }).set(1);
        for f in [
            &g.term,
            &g.leader,
            &g.is_leader,
            &g.last_log,
            &g.applied,
            &g.voters,
            &g.quorum_ack_ms,
        ] {
            f.clear();
        }
        for (group, raft) in node.groups() {
            let m = raft.metrics().borrow().clone();
            let l = GroupLabel::of(group);
            g.term.get_or_create(&l).set(m.current_term as i64);
            g.leader
                .get_or_create(&l)
                .set(m.current_leader.unwrap_or(0) as i64);
            g.is_leader
                .get_or_create(&l)
                .set((m.state == ServerState::Leader) as i64);
            g.last_log
                .get_or_create(&l)
                .set(m.last_log_index.unwrap_or(0) as i64);
            g.applied
                .get_or_create(&l)
                .set(m.last_applied.map_or(0, |x| x.index) as i64);
            g.voters
                .get_or_create(&l)
                .set(m.membership_config.voter_ids().count() as i64);
            if let Some(ms) = m.millis_since_quorum_ack {
                g.quorum_ack_ms.get_or_create(&l).set(ms as i64);
            }
        }
        let db = &node.db;
        let prop = |name: &str| db.property_sum(name).unwrap_or(0) as i64;
        g.sst_bytes.set(prop("rocksdb.total-sst-files-size"));
        g.blob_bytes.set(prop("rocksdb.total-blob-file-size"));
        g.memtable_bytes
            .set(prop("rocksdb.cur-size-all-mem-tables"));
        g.pending_compaction_bytes
            .set(prop("rocksdb.estimate-pending-compaction-bytes"));
        g.write_stopped.set(prop("rocksdb.is-write-stopped").min(1));
        g.delayed_write_rate
            .set(prop("rocksdb.actual-delayed-write-rate"));
        if let Some(d) = crate::disk::space(&node.config.data_dir) {
            g.disk_available.set(d.available as i64);
            g.disk_total.set(d.total as i64);
        }
        if let Some(p) = process_stats() {
            g.rss_bytes.set(p.rss_bytes as i64);
            g.cpu_seconds.set(p.cpu_seconds);
            g.open_fds.set(p.open_fds as i64);
            g.start_time.set(p.start_time_s);
        }
        self.refresh_jobs();
        self.jobs.traffic.prune();
    }

    fn refresh_jobs(&self) {
        let g = &self.g;
        g.job_info.clear();
        for f in [
            &g.job_clock,
            &g.job_clocks,
            &g.job_epoch,
            &g.job_recoveries,
            &g.job_checkpoint_clock,
            &g.job_workers,
        ] {
            f.clear();
        }
        g.job_objective.clear();
        g.job_throughput.clear();
        g.job_checkpoint_age.clear();
        let node = &self.jobs.node;
        if !node.is_meta_leader() {
            return;
        }
        let now = crate::jobs::now_ms();
        node.with_meta(|meta| {
            for r in meta.jobs.values() {
                self.export_job(r, now);
            }
        });
    }

    /// The record gauges of one job (none once it ended long ago).
    fn export_job(&self, r: &petuum_cluster::jobs::JobRecord, now: u64) {
        let g = &self.g;
        let ended_long_ago = r.state.is_terminal()
            && r.finished_ms
                .is_some_and(|f| now.saturating_sub(f) > KEEP_ENDED.as_millis() as u64);
        if ended_long_ago {
            return;
        }
        let l = JobLabel { job_id: r.id };
        g.job_info
            .get_or_create(&JobInfoLabels {
                job_id: r.id,
                name: r.name.clone(),
                algorithm: r.algorithm.clone(),
                state: r.state.name().to_string(),
            })
            .set(1);
        let p = r.progress.clone().unwrap_or_default();
        g.job_clock.get_or_create(&l).set(p.clock as i64);
        g.job_clocks.get_or_create(&l).set(r.clocks as i64);
        g.job_epoch.get_or_create(&l).set(r.epoch as i64);
        g.job_recoveries.get_or_create(&l).set(r.recoveries as i64);
        g.job_workers.get_or_create(&l).set(r.workers as i64);
        if r.progress.is_some() {
            g.job_objective.get_or_create(&l).set(p.objective);
            let running = r.state == JobState::Running;
            g.job_throughput
                .get_or_create(&l)
                .set(if running { p.throughput } else { 0.0 });
        }
        if let Some(c) = r.checkpoint {
            g.job_checkpoint_clock.get_or_create(&l).set(c as i64);
        }
        if let (Some(at), false) = (r.checkpoint_ms, r.state.is_terminal()) {
            g.job_checkpoint_age
                .get_or_create(&l)
                .set(now.saturating_sub(at) as f64 / 1000.0);
        }
    }
}

struct ProcessStats {
    rss_bytes: u64,
    cpu_seconds: f64,
    open_fds: u64,
    start_time_s: f64,
}

/// Memory, CPU time, descriptors and start time of this process, from
/// /proc (None elsewhere).
fn process_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    // SAFETY: sysconf only reads a system constant.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let cpu_seconds = (num(14)? + num(15)?) as f64 / tick;
    let rss_bytes = num(24)? * page;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())?;
    let start_time_s = boot as f64 + num(22)? as f64 / tick;
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    Some(ProcessStats {
        rss_bytes,
        cpu_seconds,
        open_fds,
        start_time_s,
    })
}
