//! `petuum-chaos`: a seeded chaos run against a local cluster of real
//! `petuumd serve` processes.
//!
//! ```text
//! petuum-chaos --seed 7 --nodes 3 --jobs 4 --faults 40
//! ```
//!
//! It computes each job kind's model with an embedded `petuumd run` (the
//! reference), starts the nodes on loopback, keeps `--jobs` deterministic
//! jobs of different algorithms and worker counts running through the
//! `petuum-client` library (a finished job is replaced while faults remain
//! to inject), and drives a seeded schedule of faults on random nodes:
//! SIGKILL and restart, SIGSTOP for several election timeouts then SIGCONT,
//! SIGTERM and restart, a network partition that cuts one node off from
//! the others (alive, its workers still sending; `petuum_tests::net`) or
//! cuts the link between two nodes, then heals, a whole-cluster restart,
//! two nodes down at once
//! (no quorum: jobs pause and continue by themselves), a node killed for
//! good and replaced by a new empty one that joins (the dead one is
//! declared dead after `down_after`, 5 s here, and its replicas rebuilt),
//! and a node added (or, once the cluster has grown by two, one removed
//! with `nodes remove`). It ends when every
//! fault is injected and every job has ended, and checks that every job
//! succeeded, with a model byte-identical to its embedded run, within
//! `--max-job-seconds`. It prints the faults, the recoveries, the recovery
//! time (fault to every affected job's next clock) p50 and max, and the
//! command that reproduces the run; it exits 1 when a check failed.

use petuum_client::{is_terminal, Client};
use petuum_tests::cluster::{signal, LocalCluster};
use petuum_tests::{datasets, run_embedded};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Parser, Debug)]
#[command(about = "Seeded fault injection against a local petuum cluster")]
struct Args {
    /// Seeds the fault schedule, the nodes hit and the job order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Nodes in the cluster (each shard has 3 replicas, or fewer).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Jobs running at once.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Faults to inject.
    #[arg(long, default_value_t = 40)]
    faults: usize,
    /// Shards in the cluster's shard space.
    #[arg(long, default_value_t = 8)]
    shards: u32,
    /// A job that takes longer than this (submission to end) fails the run.
    #[arg(long, default_value_t = 300)]
    max_job_seconds: u64,
    /// Mean seconds between faults (each gap is drawn from 0.5x..1.5x).
    #[arg(long, default_value_t = 3.0)]
    fault_gap_s: f64,
    /// Extra lines appended to every node's config (TOML), e.g.
    /// `$'[raft]\ncoalesce_messages = true'`.
    #[arg(long, default_value = "")]
    node_config: String,
}

/// A deterministic job and its embedded reference model.
struct Kind {
    name: &'static str,
    spec: PathBuf,
    reference: Vec<u8>,
}

fn kind_specs(shards: u32) -> Vec<(&'static str, String)> {
    let d = datasets();
    let data = |f: &str| d.join(f).display().to_string();
    // (name, algorithm, workers, clocks, checkpoint_every, [data] + [params])
    let kinds: Vec<(&str, &str, u32, u64, u64, String)> = vec![
        (
            "lr",
            "logistic_regression",
            2,
            60,
            5,
            format!("[data]\nformat = \"libsvm\"\ntrain = \"{}\"\ntest_fraction = 0.2\n[params]\nlearning_rate = 10.0\nbatch_size = 32\nbatches_per_clock = 10\nl2 = 0.0002", data("spamassassin/spam.libsvm")),
        ),
        (
            "kmeans",
            "kmeans",
            3,
            40,
            5,
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\n[params]\nk = 10", data("digits_8x8/digits.csv")),
        ),
        (
            "lda",
            "lda",
            2,
            16,
            2,
            format!("[data]\nformat = \"uci_bow\"\ntrain = \"{}\"\nvocab = \"{}\"\n[params]\nnum_topics = 10", data("reuters395_lda/docword.txt"), data("reuters395_lda/vocab.txt")),
        ),
        (
            "dnn",
            "dnn",
            1,
            30,
            5,
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\ntest_fraction = 0.2\n[params]\nhidden = [16]\nscaling = \"standard\"\nlearning_rate = 0.05\nbatch_size = 32\nbatches_per_clock = 4", data("classification/satimage.csv")),
        ),
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, (name, algorithm, workers, clocks, every, body))| {
            // Every other kind keeps its tables on part of the cluster's
            // shards (its span; the reference on as many in-process ones).
            let shards = if i % 2 == 1 { (shards / 2 + 1).min(shards) } else { shards };
            (
                name,
                format!(
                    "name = \"chaos-{name}\"\nalgorithm = \"{algorithm}\"\n[run]\nworkers = {workers}\nconsistency = \"bsp\"\ndeterministic = true\nseed = 5\nshards = {shards}\nclocks = {clocks}\ncheckpoint_every = {every}\n[model]\npath = \"MODEL\"\n{body}\n"
                ),
            )
        })
        .collect()
}

/// Writes each kind's spec and computes its reference with `petuumd run`.
fn references(dir: &Path, shards: u32) -> Result<Vec<Kind>, String> {
    let mut out = Vec::new();
    for (name, text) in kind_specs(shards) {
        let model = dir.join(format!("{name}.reference.safetensors"));
        let spec = dir.join(format!("{name}.toml"));
        std::fs::write(&spec, text.replace("MODEL", &model.display().to_string()))
            .map_err(|e| e.to_string())?;
        let o = run_embedded(&spec, &dir.join(format!("embedded-{name}")), dir);
        if !o.status.success() {
            return Err(format!(
                "embedded {name}: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        let reference = std::fs::read(&model).map_err(|e| e.to_string())?;
        eprintln!("chaos: reference {name}: {} model bytes", reference.len());
        out.push(Kind {
            name,
            spec,
            reference,
        });
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillRestart,
    StopCont,
    TermRestart,
    Partition,
    CutLink,
    WholeCluster,
    TwoDown,
    Replace,
    AddNode,
    RemoveNode,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::KillRestart => "sigkill+restart",
            Fault::StopCont => "sigstop+sigcont",
            Fault::TermRestart => "sigterm+restart",
            Fault::Partition => "node cut off",
            Fault::CutLink => "link cut",
            Fault::WholeCluster => "whole-cluster restart",
            Fault::TwoDown => "two nodes down",
            Fault::Replace => "replace a node",
            Fault::AddNode => "add a node",
            Fault::RemoveNode => "remove a node",
        }
    }
}

enum Action {
    Spawn(u64),
    Cont(u64),
    Heal,
}

struct Running {
    kind: usize,
    submitted: Instant,
    clock: u64,
}

/// A succeeded job whose model is to be read and compared. It is read at
/// once; when no replica serves it (all of them restarting, say), again
/// once a second; unreadable for `MODEL_READ_BOUND` fails the run.
struct Unread {
    kind: usize,
    since: Instant,
    next: Instant,
    /// The first error, kept for the failure message.
    error: Option<String>,
}

/// How long a removed node may take to learn it was removed (the driver
/// first moves its replicas away, a few seconds each).
const RETIRE_BOUND: Duration = Duration::from_secs(180);

/// How long a succeeded job's model may stay unreadable. Faults come one at
/// a time and every node is back within seconds, so a model that no
/// replica serves for this long is lost, not restarting.
const MODEL_READ_BOUND: Duration = Duration::from_secs(60);

/// Whether node `id` has logged that the cluster removed it.
fn logged_removal(chaos: &Chaos, id: u64) -> bool {
    let log = &chaos.cluster.nodes[id as usize - 1].log;
    // The node's own word for its removal: its log also quotes peers'
    // refusals that name *other* removed nodes ("node 6 refused: node 5
    // was removed from the cluster"), which once failed a run for a
    // removal that never was.
    std::fs::read_to_string(log).is_ok_and(|t| t.contains("this node was removed from the cluster"))
}

/// Fetches job `id`'s model through any running member.
fn read_model(chaos: &mut Chaos, work: &std::path::Path, id: u64) -> Result<Vec<u8>, String> {
    let path = work.join(format!("job{id}.safetensors"));
    let p = path.clone();
    chaos
        .try_client(|c| {
            let p = p.clone();
            Box::pin(async move { c.model(id, &p).await })
        })
        .and_then(|_| std::fs::read(&path).map_err(|e| e.to_string()))
}

/// A fault whose recovery is being timed: the clock of every job running
/// when it struck; it is over when each has passed that clock or ended.
struct Open {
    at: Instant,
    waiting: BTreeMap<u64, u64>,
    /// The fault, for the report of the slowest recoveries.
    what: String,
}

struct Chaos {
    args: Args,
    cluster: LocalCluster,
    rt: tokio::runtime::Runtime,
    clients: BTreeMap<u64, Client>,
    up: Vec<bool>,
    stopped: Vec<bool>,
    /// The members (nodes killed for good and removed ones are not).
    members: Vec<u64>,
    /// Each node's extra config.
    node_extra: String,
    /// Nodes on the far side of a partition: the harness does not ask
    /// them (a client through them waits for the heal; tests/jobs.rs
    /// covers that).
    cut_off: Vec<u64>,
}

/// Extra node config: a node down this long is declared dead (longer than
/// any fault that brings its node back: those are transient).
const NODE_EXTRA: &str = "down_after = \"20s\"";
/// `down_after` above.
const DOWN_AFTER: Duration = Duration::from_secs(20);
/// A node back from a fault for less than this (it restarts, then answers
/// the next probe round) is still out of reach for the node declaring
/// the dead: faults that follow within it add up.
const BACK_FOR: Duration = Duration::from_secs(3);

/// How long each node was out of reach in one stretch: killed, stopped,
/// cut off, with faults less than [`BACK_FOR`] apart counted as one.
/// Each fault is far shorter than `down_after`, but the draws can hit one
/// node with several in a row (seed 7: six faults on node 2 within 20 s),
/// and then the cluster is right to declare it dead for good.
#[derive(Default)]
struct Outages {
    /// Per node: since when its current stretch runs, and when it was
    /// last seen back (None while out).
    open: BTreeMap<u64, (Instant, Option<Instant>)>,
    longest: BTreeMap<u64, Duration>,
}

impl Outages {
    /// Node `id` is out of reach (`out`) or not at `now` (looked at every
    /// round of the harness's loop).
    fn observe(&mut self, id: u64, out: bool, now: Instant) {
        // A stretch whose node has been back for BACK_FOR is over.
        if let Some(&(since, Some(back))) = self.open.get(&id) {
            if now.duration_since(back) >= BACK_FOR {
                self.open.remove(&id);
                let l = self.longest.entry(id).or_default();
                *l = (*l).max(back.duration_since(since));
            }
        }
        match (self.open.get(&id).copied(), out) {
            (None, true) => {
                self.open.insert(id, (now, None));
            }
            (Some((since, _)), true) => {
                self.open.insert(id, (since, None));
            }
            (Some((since, None)), false) => {
                self.open.insert(id, (since, Some(now)));
            }
            (None, false) | (Some((_, Some(_))), false) => {}
        }
    }

    /// The longest stretch of `id` so far (the open one included).
    fn longest(&self, id: u64, now: Instant) -> Duration {
        let open = self.open.get(&id).map_or(Duration::ZERO, |&(since, back)| {
            back.unwrap_or(now).duration_since(since)
        });
        self.longest.get(&id).copied().unwrap_or_default().max(open)
    }
}

impl Chaos {
    fn endpoint(&self, id: u64) -> String {
        format!("http://{}", self.cluster.nodes[id as usize - 1].addr)
    }

    /// Runs `f` with a client of some running node, trying each in turn.
    /// Asks each running member in turn until one answers; the error says
    /// what each one answered.
    fn try_client<T>(
        &mut self,
        f: impl Fn(
            &mut Client,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, petuum_client::ClientError>> + '_>,
        >,
    ) -> Result<T, String> {
        let mut errors = Vec::new();
        // One budget for the whole call: while the metadata group has no
        // quorum every node takes its full timeout, and the run loop that
        // waits here also restarts the nodes the faults took down (a
        // restart held up past `down_after` gets a node declared dead).
        let until = Instant::now() + TRY_CLIENT_BUDGET;
        for id in self.members.clone() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                errors.push(format!("node {id}: not asked (out of time)"));
                continue;
            }
            if !self.up[id as usize - 1]
                || self.stopped[id as usize - 1]
                || self.cut_off.contains(&id)
            {
                continue;
            }
            if !self.clients.contains_key(&id) {
                let ep = self.endpoint(id);
                match self.rt.block_on(Client::connect(&ep, None)) {
                    Ok(c) => {
                        self.clients.insert(id, c);
                    }
                    Err(e) => {
                        errors.push(format!("node {id}: {e}"));
                        continue;
                    }
                }
            }
            let c = self.clients.get_mut(&id).expect("inserted");
            let r = self.rt.block_on(async {
                tokio::time::timeout(left.min(Duration::from_secs(5)), f(c)).await
            });
            match r {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => errors.push(format!("node {id}: {e}")),
                Err(_) => errors.push(format!("node {id}: no answer in 5 s")),
            }
            self.clients.remove(&id);
        }
        if errors.is_empty() {
            errors.push("no member running".into());
        }
        Err(errors.join("; "))
    }

    fn down(&mut self, id: u64) {
        self.cluster.kill(id);
        self.up[id as usize - 1] = false;
        self.clients.remove(&id);
    }

    fn spawn(&mut self, id: u64) {
        self.cluster.spawn(id);
        self.up[id as usize - 1] = true;
    }

    /// A new node joins; returns its id.
    fn join(&mut self) -> u64 {
        let extra = self.node_extra.clone();
        let id = self.cluster.join(&extra);
        self.up.push(true);
        self.stopped.push(false);
        self.members.push(id);
        id
    }
}

/// Whether every group has its full replica count on the current members
/// (and the members are exactly those).
fn membership_settled(chaos: &Chaos) -> Result<(), String> {
    let members: std::collections::BTreeSet<u64> = chaos.members.iter().copied().collect();
    petuum_tests::cluster::settled(&chaos.cluster, &members, 3.min(members.len()))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// How long one harness call may take over all the nodes it asks.
const TRY_CLIENT_BUDGET: Duration = Duration::from_secs(8);

fn main() -> std::process::ExitCode {
    let args = <Args as clap::Parser>::parse();
    let mut command = format!(
        "petuum-chaos --seed {} --nodes {} --jobs {} --faults {} --shards {} --max-job-seconds {} --fault-gap-s {}",
        args.seed, args.nodes, args.jobs, args.faults, args.shards, args.max_job_seconds, args.fault_gap_s
    );
    if !args.node_config.is_empty() {
        command.push_str(&format!(" --node-config {:?}", args.node_config));
    }
    eprintln!("chaos: {command}");
    let work = tempfile::tempdir().expect("temp dir");
    let kinds = match references(work.path(), args.shards) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("chaos: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let node_extra = format!("{NODE_EXTRA}\n{}", args.node_config);
    let cluster = LocalCluster::start_partitionable(args.nodes, args.shards, &node_extra);
    let nodes = args.nodes;
    let mut chaos = Chaos {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime"),
        cluster,
        clients: BTreeMap::new(),
        up: vec![true; nodes as usize],
        node_extra: node_extra.clone(),
        stopped: vec![false; nodes as usize],
        members: (1..=nodes).collect(),
        cut_off: Vec::new(),
        args,
    };
    let started = Instant::now();
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    eprintln!("chaos: faults are timed from unix ms {unix_ms}");
    let mut failures: Vec<String> = Vec::new();
    let mut running: BTreeMap<u64, Running> = BTreeMap::new();
    let mut scheduled: Vec<(Instant, Action)> = Vec::new();
    let mut injected: BTreeMap<Fault, usize> = BTreeMap::new();
    let mut faults = 0usize;
    let mut open: Vec<Open> = Vec::new();
    // Nodes being removed: stopped once the cluster let them go.
    let mut retiring: Vec<(u64, Instant)> = Vec::new();
    let mut outages = Outages::default();
    // A membership fault drawn before the previous one settled waits for
    // it (at most a minute, then a SIGKILL and restart strikes instead).
    let mut deferred: Option<(Fault, Instant)> = None;
    let mut recovery_s: Vec<f64> = Vec::new();
    // Each recovery with its fault, for the slowest few in the report.
    let mut recovered: Vec<(f64, String)> = Vec::new();
    // Succeeded jobs whose model is still to be read.
    let mut unread: BTreeMap<u64, Unread> = BTreeMap::new();
    let mut finished = 0usize;
    let mut recoveries = 0u64;
    let gap = |rng: &mut rand_chacha::ChaCha8Rng, mean: f64| {
        Duration::from_secs_f64(mean * rng.gen_range(0.5..1.5))
    };
    // The first fault strikes once the jobs are under way.
    let mut next_fault = Instant::now() + Duration::from_secs(5);
    let mut next_kind = rng.gen_range(0..kinds.len());
    loop {
        let now = Instant::now();
        // Scheduled restarts and continues.
        scheduled.sort_by_key(|(t, _)| *t);
        while scheduled.first().is_some_and(|(t, _)| *t <= now) {
            let (_, a) = scheduled.remove(0);
            match a {
                Action::Spawn(id) => chaos.spawn(id),
                Action::Cont(id) => {
                    let pid = chaos.cluster.pid(id);
                    signal(pid, libc::SIGCONT);
                    chaos.stopped[id as usize - 1] = false;
                }
                Action::Heal => {
                    chaos.cluster.net().heal();
                    chaos.cut_off.clear();
                }
            }
        }
        // Calls below stop for a restart that comes due (the loop's top
        // makes it), so that a slow cluster never holds one up.
        let restart_due = |s: &Vec<(Instant, Action)>| s.iter().any(|(t, _)| *t <= Instant::now());
        // Keep the jobs running while faults remain.
        while faults < chaos.args.faults && running.len() < chaos.args.jobs {
            if restart_due(&scheduled) {
                break;
            }
            let k = next_kind;
            next_kind = (next_kind + 1 + rng.gen_range(0..2)) % kinds.len();
            let spec = kinds[k].spec.clone();
            match chaos.try_client(|c| {
                let spec = spec.clone();
                Box::pin(async move { c.submit(&spec).await })
            }) {
                Ok(info) => {
                    running.insert(
                        info.id,
                        Running {
                            kind: k,
                            submitted: Instant::now(),
                            clock: 0,
                        },
                    );
                }
                Err(_) => break,
            }
        }
        // Job states.
        let ids: Vec<u64> = running.keys().copied().collect();
        for id in ids {
            if restart_due(&scheduled) {
                break;
            }
            let Ok(info) = chaos.try_client(|c| Box::pin(async move { c.status(id).await })) else {
                break;
            };
            let r = running.get_mut(&id).expect("running");
            r.clock = r.clock.max(info.clock);
            let kind = &kinds[r.kind];
            // A job that ended is judged by its own record (submission to
            // end, as the metadata group stamped them): this loop may poll
            // it seconds after it ended, while nodes are down.
            let bound = chaos.args.max_job_seconds as f64;
            let recorded = (is_terminal(&info.state) && info.finished_ms >= info.submitted_ms)
                .then(|| (info.finished_ms - info.submitted_ms) as f64 / 1000.0);
            let over = match recorded {
                Some(took) => took > bound,
                None => r.submitted.elapsed().as_secs_f64() > bound,
            };
            if over {
                // The job's own account of its runs: what reassigned it,
                // and how far each epoch got.
                let events = chaos
                    .try_client(|c| Box::pin(async move { c.logs(id).await }))
                    .unwrap_or_default();
                for (at, text) in &events {
                    eprintln!("chaos: job {id} event at {at}: {text}");
                }
                failures.push(match recorded {
                    Some(took) => format!(
                        "job {id} ({}) {} after {took:.1} s (bound {} s)",
                        kind.name, info.state, chaos.args.max_job_seconds
                    ),
                    None => format!(
                        "job {id} ({}) still {} after {} s (bound {} s)",
                        kind.name,
                        info.state,
                        r.submitted.elapsed().as_secs(),
                        chaos.args.max_job_seconds
                    ),
                });
                running.remove(&id);
                continue;
            }
            if !is_terminal(&info.state) {
                continue;
            }
            let took = recorded.unwrap_or_else(|| r.submitted.elapsed().as_secs_f64());
            recoveries += info.recoveries as u64;
            finished += 1;
            if info.state != "succeeded" {
                failures.push(format!(
                    "job {id} ({}) ended {}: {}",
                    kind.name, info.state, info.error
                ));
            } else {
                let now = Instant::now();
                unread.insert(
                    id,
                    Unread {
                        kind: r.kind,
                        since: now,
                        next: now,
                        error: None,
                    },
                );
            }
            eprintln!(
                "chaos: job {id} ({}) {} in {took:.1} s, {} recoveries, epoch {}",
                kind.name, info.state, info.recoveries, info.epoch
            );
            running.remove(&id);
        }
        // Succeeded jobs' models: compared with the embedded run's.
        let now = Instant::now();
        let due: Vec<u64> = unread
            .iter()
            .filter(|(_, u)| u.next <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            if restart_due(&scheduled) {
                break;
            }
            let got = read_model(&mut chaos, work.path(), id);
            let u = unread.get_mut(&id).expect("listed");
            let kind = &kinds[u.kind];
            match got {
                Ok(bytes) => {
                    if bytes != kind.reference {
                        failures.push(format!(
                            "job {id} ({}): model differs from the embedded run's",
                            kind.name
                        ));
                    }
                    if u.error.is_some() {
                        eprintln!(
                            "chaos: job {id}'s model read {:.1} s after the first try",
                            u.since.elapsed().as_secs_f64()
                        );
                    }
                }
                // Its replicas may all be restarting (a whole-cluster
                // restart): read again until the bound.
                Err(e) if u.since.elapsed() < MODEL_READ_BOUND => {
                    if u.error.is_none() {
                        eprintln!("chaos: job {id}'s model not readable yet: {e}");
                        u.error = Some(e);
                    }
                    u.next = now + Duration::from_secs(1);
                    continue;
                }
                Err(e) => failures.push(format!(
                    "job {id} ({}): model unreadable for {} s: first {}; last {e}",
                    kind.name,
                    MODEL_READ_BOUND.as_secs(),
                    u.error.as_deref().unwrap_or("-")
                )),
            }
            unread.remove(&id);
        }
        retiring.retain(|&(id, since)| {
            let gone = logged_removal(&chaos, id);
            if gone {
                chaos.cluster.kill(id);
                eprintln!("chaos: node {id} removed and stopped");
            } else if since.elapsed() > RETIRE_BOUND {
                // A node that never learns of its removal would keep the
                // operator (and this run) waiting for ever.
                failures.push(format!(
                    "node {id}: not told of its removal {} s after `nodes remove`",
                    RETIRE_BOUND.as_secs()
                ));
                chaos.cluster.kill(id);
                return false;
            }
            !gone
        });
        // A member that exited by itself (a node stops when a Raft group
        // of its fails, for its service manager to restart it): nothing in
        // this run should make one, so it fails the run; it is started
        // again, as systemd would, so that the run goes on and says what
        // else happened.
        for id in chaos.members.clone() {
            let i = id as usize - 1;
            if !chaos.up[i] || chaos.stopped[i] || retiring.iter().any(|&(r, _)| r == id) {
                continue;
            }
            if let Some((status, why)) = chaos.cluster.exited(id) {
                eprintln!(
                    "chaos: node {id} exited by itself ({status}); started again, as its service manager would: {why}"
                );
                failures.push(format!("node {id} exited by itself ({status}): {why}"));
                chaos.clients.remove(&id);
                chaos.spawn(id);
            }
        }
        let now = Instant::now();
        for &id in &chaos.members {
            let i = id as usize - 1;
            let out = !chaos.up[i] || chaos.stopped[i] || chaos.cut_off.contains(&id);
            outages.observe(id, out, now);
        }
        // Recovery times.
        open.retain_mut(|o| {
            o.waiting
                .retain(|job, clock| running.get(job).is_some_and(|r| r.clock <= *clock));
            if o.waiting.is_empty() {
                let secs = now.duration_since(o.at).as_secs_f64();
                recovery_s.push(secs);
                recovered.push((secs, std::mem::take(&mut o.what)));
                false
            } else {
                true
            }
        });
        // The next fault, once the previous one's nodes are back.
        if faults < chaos.args.faults && scheduled.is_empty() && now >= next_fault {
            let (drawn, since) = match deferred.take() {
                Some((f, since)) => (f, Some(since)),
                None => (
                    match rng.gen_range(0..100) {
                        0..=24 => Fault::KillRestart,
                        25..=39 => Fault::StopCont,
                        40..=52 => Fault::TermRestart,
                        53..=61 => Fault::Partition,
                        62..=66 => Fault::CutLink,
                        67..=73 => Fault::WholeCluster,
                        74..=84 => Fault::TwoDown,
                        85..=92 => Fault::Replace,
                        _ if chaos.members.len() as u64 >= nodes + 2 => Fault::RemoveNode,
                        _ => Fault::AddNode,
                    },
                    None,
                ),
            };
            // Membership changes wait until the last one is done (every
            // group back at full strength on the members): two nodes lost
            // for good before the first is rebuilt is data loss.
            let membership = matches!(drawn, Fault::Replace | Fault::AddNode | Fault::RemoveNode);
            let unsettled = if membership {
                membership_settled(&chaos).err()
            } else {
                None
            };
            let fault = if let Some(why) = unsettled {
                let since = since.unwrap_or_else(Instant::now);
                if since.elapsed() < Duration::from_secs(60) {
                    deferred = Some((drawn, since));
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
                eprintln!(
                    "chaos: {} not injected: membership unsettled for 60 s ({why})",
                    drawn.name()
                );
                Fault::KillRestart
            } else {
                drawn
            };
            let a = chaos.members[rng.gen_range(0..chaos.members.len())];
            let back = |rng: &mut rand_chacha::ChaCha8Rng| {
                Instant::now() + Duration::from_millis(rng.gen_range(300..3000))
            };
            eprintln!(
                "chaos: fault {} at {:.1} s: {} (node {a})",
                faults + 1,
                started.elapsed().as_secs_f64(),
                fault.name()
            );
            match fault {
                Fault::KillRestart => {
                    chaos.down(a);
                    scheduled.push((back(&mut rng), Action::Spawn(a)));
                }
                Fault::StopCont => {
                    let pid = chaos.cluster.pid(a);
                    signal(pid, libc::SIGSTOP);
                    chaos.stopped[a as usize - 1] = true;
                    chaos.clients.remove(&a);
                    // Several election timeouts (600 ms at most each).
                    let t = Instant::now() + Duration::from_millis(rng.gen_range(1500..4000));
                    scheduled.push((t, Action::Cont(a)));
                }
                Fault::Partition => {
                    // Longer than the failure detector's 1.5 s at times,
                    // so runs are replaced and the old ones fenced after
                    // the heal; far shorter than `down_after`.
                    let others: Vec<u64> =
                        chaos.members.iter().copied().filter(|&m| m != a).collect();
                    chaos.cluster.net().isolate(a, others);
                    chaos.cut_off.push(a);
                    let t = Instant::now() + Duration::from_millis(rng.gen_range(1000..6000));
                    scheduled.push((t, Action::Heal));
                }
                Fault::CutLink => {
                    // Both still reach the rest: a partial partition.
                    let i = chaos.members.iter().position(|&m| m == a).expect("member");
                    let b = chaos.members[(i + 1) % chaos.members.len()];
                    chaos.cluster.net().cut(a, b);
                    let t = Instant::now() + Duration::from_millis(rng.gen_range(1000..6000));
                    scheduled.push((t, Action::Heal));
                }
                Fault::TermRestart => {
                    let pid = chaos.cluster.pid(a);
                    signal(pid, libc::SIGTERM);
                    if chaos
                        .cluster
                        .wait_exit(a, Duration::from_secs(30))
                        .is_none()
                    {
                        failures.push(format!(
                            "fault {}: node {a} did not exit within 30 s of SIGTERM",
                            faults + 1
                        ));
                    }
                    chaos.down(a);
                    scheduled.push((back(&mut rng), Action::Spawn(a)));
                }
                Fault::WholeCluster => {
                    for id in chaos.members.clone() {
                        chaos.down(id);
                    }
                    let t = back(&mut rng);
                    for id in chaos.members.clone() {
                        scheduled.push((t, Action::Spawn(id)));
                    }
                }
                Fault::Replace => {
                    // For good: never restarted; a new empty node joins.
                    chaos.down(a);
                    chaos.members.retain(|&m| m != a);
                    let id = chaos.join();
                    eprintln!("chaos: node {a} gone for good; node {id} joined");
                }
                Fault::AddNode => {
                    let id = chaos.join();
                    eprintln!("chaos: node {id} joined");
                }
                Fault::RemoveNode => {
                    let ep = chaos.endpoint(chaos.members[0]);
                    let out = petuum_tests::cluster::client(
                        &ep,
                        &["nodes", "remove", &a.to_string()],
                        chaos.cluster.path(),
                    );
                    if out.status.success() {
                        chaos.members.retain(|&m| m != a);
                        // It serves until it holds nothing; stopped then.
                        retiring.push((a, Instant::now()));
                    } else {
                        failures.push(format!(
                            "fault {}: nodes remove {a}: {}",
                            faults + 1,
                            String::from_utf8_lossy(&out.stderr)
                        ));
                    }
                }
                Fault::TwoDown => {
                    let i = chaos.members.iter().position(|&m| m == a).expect("member");
                    let b = chaos.members[(i + 1) % chaos.members.len()];
                    chaos.down(a);
                    if b != a {
                        chaos.down(b);
                    }
                    let t = Instant::now() + Duration::from_millis(rng.gen_range(2000..6000));
                    scheduled.push((t, Action::Spawn(a)));
                    if b != a {
                        scheduled.push((t, Action::Spawn(b)));
                    }
                }
            }
            *injected.entry(fault).or_default() += 1;
            faults += 1;
            if !running.is_empty() {
                open.push(Open {
                    at: Instant::now(),
                    waiting: running.iter().map(|(&j, r)| (j, r.clock)).collect(),
                    what: format!("fault {faults} ({}, node {a})", fault.name()),
                });
            }
            next_fault = Instant::now() + gap(&mut rng, chaos.args.fault_gap_s);
        }
        if faults >= chaos.args.faults
            && running.is_empty()
            && unread.is_empty()
            && scheduled.is_empty()
            && retiring.is_empty()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every transient fault is far shorter than `down_after`, so no node
    // the run kept may have been declared dead for good, unless faults in
    // a row kept it out of reach for about as long.
    for &id in &chaos.members {
        let longest = outages.longest(id, Instant::now());
        if logged_removal(&chaos, id) && longest + BACK_FOR >= DOWN_AFTER {
            eprintln!(
                "chaos: node {id} was declared dead for good after faults in a row kept it out of reach for {:.1} s (down_after {} s): as it should be",
                longest.as_secs_f64(),
                DOWN_AFTER.as_secs()
            );
        } else if logged_removal(&chaos, id) {
            failures.push(format!(
                "node {id} was removed from the cluster (declared dead for good) though only ever down for a transient fault"
            ));
        }
    }
    recovery_s.sort_by(|a, b| a.total_cmp(b));
    let kinds_line: Vec<String> = injected
        .iter()
        .map(|(f, n)| format!("{} {n}", f.name()))
        .collect();
    println!("faults injected: {faults} ({})", kinds_line.join(", "));
    println!("jobs finished: {finished}, recoveries: {recoveries}");
    println!(
        "recovery time (fault to every running job's next clock): p50 {:.2} s, max {:.2} s over {} faults",
        percentile(&recovery_s, 0.5),
        recovery_s.last().copied().unwrap_or(f64::NAN),
        recovery_s.len()
    );
    recovered.sort_by(|x, y| y.0.total_cmp(&x.0));
    let slowest: Vec<String> = recovered
        .iter()
        .take(3)
        .map(|(secs, what)| format!("{what} {secs:.1} s"))
        .collect();
    println!("slowest recoveries: {}", slowest.join(", "));
    println!("wall time: {:.0} s", started.elapsed().as_secs_f64());
    println!("reproduce: {command}");
    if failures.is_empty() {
        println!("chaos: every job succeeded with its embedded run's model");
        std::process::ExitCode::SUCCESS
    } else {
        for f in &failures {
            println!("FAILED: {f}");
        }
        println!("{}", chaos.cluster.logs());
        // A failed run's logs and data are what the failure is read from.
        if std::env::var_os("PETUUM_KEEP_CLUSTER").is_none() {
            chaos.cluster.keep_dir();
        }
        std::process::ExitCode::FAILURE
    }
}
