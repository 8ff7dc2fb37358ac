//! Jobs on the cluster (docs/design.md §3 and §6, docs/jobs.md).
//!
//! - The **scheduler** runs on the metadata leader: it probes every node,
//!   places submitted jobs on a live node, and when a job's host stops
//!   answering it reassigns the job (a new epoch) to a live node, which
//!   rolls the job back to its newest complete checkpoint. While some
//!   shard group has lost its quorum, jobs wait in `paused` and continue
//!   by themselves when nodes return.
//! - The **supervisor** runs on every node: it starts the runs the
//!   metadata group assigns to this node, cancels them on request, aborts
//!   runs that were reassigned elsewhere, and on SIGTERM stops them at a
//!   checkpoint so they move to another node.
//! - [`service`] is the client-facing gRPC API (`petuum.v1.Jobs`).

pub mod runner;
pub mod service;

use petuum_cluster::jobs::{JobCommand, JobState, RunEnd};
use petuum_cluster::meta::{MetaCommand, NodeState};
use petuum_cluster::ClusterNode;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Table ids reserved per job (the job id is followed by its tables).
pub const TABLES_PER_JOB: u64 = 64;
/// Where a finished job's model is kept in the checkpoint store.
pub const MODEL_CLOCK: u64 = u64::MAX;

/// How long a draining node waits for each of its jobs' next checkpoint
/// before it releases the job's workers anyway.
const DRAIN_GRACE: Duration = Duration::from_secs(120);
/// A node that has not answered a probe for this long is presumed dead.
pub const DEAD_AFTER: Duration = Duration::from_millis(1500);
/// How often the metadata leader applies the retention policy.
const RETENTION_EVERY: Duration = Duration::from_secs(10);
/// How often the scheduler and the supervisors look at the job records.
const TICK: Duration = Duration::from_millis(200);
/// How long after a run's thread ended by itself the supervisor waits
/// for the job's record to show the run's end before it ends the epoch
/// ([`silent_run`]).
const SILENT_END_GRACE: Duration = Duration::from_secs(5);
/// How long the scheduler waits for a node's answer to a probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);

/// Placements of a job again after a run that ended interrupted, in a row
/// without a new checkpoint, that go out at once; later ones wait.
const RETRIES_AT_ONCE: u32 = 5;
/// The longest wait between two such placements.
const RETRY_WAIT_MAX: Duration = Duration::from_secs(10);
/// A run that lasted this long counts as progress even without a
/// checkpoint.
const RETRY_FORGIVEN_AFTER: Duration = Duration::from_secs(60);

/// The scheduler's backoff for jobs whose runs keep ending interrupted
/// before they get anywhere (a checkpoint no replica can serve, a node that
/// refuses every run): each placement again is a new epoch and a Raft
/// write of the metadata group, and placing again every tick wrote five a
/// second for as long as the fault lasted. The first
/// [`RETRIES_AT_ONCE`] go out at once (a kill usually costs one or two
/// while leaders move); then the waits double from two ticks up to
/// [`RETRY_WAIT_MAX`]. A new checkpoint, or a run that lasted
/// [`RETRY_FORGIVEN_AFTER`], starts the count again.
#[derive(Default)]
struct Retries {
    jobs: HashMap<u64, Retry>,
}

struct Retry {
    checkpoint: Option<u64>,
    streak: u32,
    at: Instant,
}

impl Retries {
    /// Whether `job`, at checkpoint `checkpoint`, may be placed again at
    /// `now`; if so the placement is counted.
    fn may_place(&mut self, job: u64, checkpoint: Option<u64>, now: Instant) -> bool {
        let Some(r) = self.jobs.get_mut(&job) else {
            self.jobs.insert(
                job,
                Retry {
                    checkpoint,
                    streak: 1,
                    at: now,
                },
            );
            return true;
        };
        let since = now.saturating_duration_since(r.at);
        if r.checkpoint != checkpoint || since >= RETRY_FORGIVEN_AFTER {
            *r = Retry {
                checkpoint,
                streak: 1,
                at: now,
            };
            return true;
        }
        if since < Self::wait(r.streak) {
            return false;
        }
        r.streak += 1;
        r.at = now;
        if r.streak == RETRIES_AT_ONCE + 1 {
            tracing::warn!(
                job,
                tries = RETRIES_AT_ONCE,
                "the job's runs keep ending before its next checkpoint: placing it again with a growing wait"
            );
        }
        true
    }

    /// The wait after `streak` placements in a row.
    fn wait(streak: u32) -> Duration {
        if streak < RETRIES_AT_ONCE {
            return Duration::ZERO;
        }
        let doublings = (streak - RETRIES_AT_ONCE).min(16);
        (TICK * 2 * 2u32.pow(doublings)).min(RETRY_WAIT_MAX)
    }

    /// Forgets the jobs not in `live`.
    fn retain(&mut self, live: &petuum_cluster::jobs::JobMap) {
        self.jobs.retain(|id, _| live.contains_key(id));
    }
}

/// The epoch of `job` this node last started a run of (a file in its data
/// directory), None when it never ran the job.
fn started_epoch(data_dir: &std::path::Path, job: u64) -> Option<u64> {
    let path = data_dir.join("jobs").join(job.to_string()).join("started");
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Records, durably, that this node starts a run of `job` at `epoch`.
fn mark_started(data_dir: &std::path::Path, job: u64, epoch: u64) -> std::io::Result<()> {
    use std::io::Write;
    let dir = data_dir.join("jobs").join(job.to_string());
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join("started.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(epoch.to_string().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join("started"))?;
    std::fs::File::open(&dir)?.sync_all()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What the metadata leader's log last said about a job.
#[derive(Clone, Copy, PartialEq)]
struct Noted {
    state: JobState,
    checkpoint: Option<u64>,
    recoveries: u32,
}

/// Logs each job's new checkpoints, recoveries and end (the metadata
/// leader calls this every tick; a new leader starts from what it finds,
/// without repeating history).
fn note_job_changes(jobs: &petuum_cluster::jobs::JobMap, noted: &mut HashMap<u64, Noted>) {
    noted.retain(|id, _| jobs.contains_key(id));
    for r in jobs.values() {
        let now = Noted {
            state: r.state,
            checkpoint: r.checkpoint,
            recoveries: r.recoveries,
        };
        let Some(before) = noted.insert(r.id, now) else {
            continue;
        };
        if before == now {
            continue;
        }
        if now.checkpoint != before.checkpoint {
            if let Some(clock) = now.checkpoint {
                tracing::info!(job = r.id, epoch = r.epoch, clock, "checkpoint completed");
            }
        }
        if now.recoveries > before.recoveries {
            tracing::warn!(
                job = r.id,
                epoch = r.epoch,
                recoveries = now.recoveries,
                checkpoint = ?r.checkpoint,
                reason = r.events.last().map_or("", |e| e.text.as_str()),
                "job recovering from its checkpoint"
            );
        }
        if now.state != before.state && now.state.is_terminal() {
            tracing::info!(
                job = r.id,
                epoch = r.epoch,
                state = now.state.name(),
                "job ended"
            );
        }
    }
}

/// What the supervisor does about a run of this node (`me`) of `epoch`
/// whose thread ended by itself, `waited` ago, with `pending` the last
/// report it could not get on record.
#[derive(Debug, PartialEq)]
enum SilentRun {
    /// Nothing more: the record shows the run's end (the epoch moved on,
    /// the job ended or is being cancelled, or this host's part is done).
    Settled,
    /// Not yet: this node's replica may not have applied the run's last
    /// reports.
    Wait,
    /// The record is still the run's, [`SILENT_END_GRACE`] after its end:
    /// this goes to the metadata group (fenced on the epoch like every
    /// report, so a record that moved on refuses it).
    Send(JobCommand),
}

/// Decides [`SilentRun`]. A run whose report was lost has it sent again;
/// a run that ended with nothing to say while its epoch is current
/// (every such path of the runner is a failure or an epoch that ended)
/// ends the epoch as interrupted, so the job resumes from its checkpoint
/// elsewhere or here.
fn silent_run(
    record: Option<&petuum_cluster::jobs::JobRecord>,
    me: u64,
    epoch: u64,
    pending: Option<&JobCommand>,
    waited: Duration,
) -> SilentRun {
    let Some(r) = record else {
        return SilentRun::Settled;
    };
    if r.epoch != epoch || r.state.is_terminal() || r.cancel_requested || !r.placement.contains(&me)
    {
        return SilentRun::Settled;
    }
    // A host's part, done and on record: the coordinator goes on.
    if r.host != Some(me) && r.done_hosts.contains(&me) {
        return SilentRun::Settled;
    }
    if waited < SILENT_END_GRACE {
        return SilentRun::Wait;
    }
    SilentRun::Send(pending.cloned().unwrap_or_else(|| JobCommand::Finish {
        job: r.id,
        epoch,
        end: RunEnd::Interrupted(format!(
            "node {me}'s part of epoch {epoch} ended without its end on record"
        )),
        at_ms: now_ms(),
    }))
}

/// The job machinery of one node.
pub struct Jobs {
    pub node: Arc<ClusterNode>,
    data_dir: PathBuf,
    runs: parking_lot::Mutex<HashMap<u64, runner::RunHandle>>,
    stopping: AtomicBool,
    /// Set while this node's runs are being released because it drains.
    draining: Arc<AtomicBool>,
    /// Table traffic of the runs here, per job (Prometheus).
    pub traffic: Arc<crate::http::metrics::JobTraffic>,
}

impl Jobs {
    pub fn new(node: Arc<ClusterNode>) -> Arc<Jobs> {
        let data_dir = node.config.data_dir.clone();
        Arc::new(Jobs {
            node,
            data_dir,
            runs: parking_lot::Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            draining: Arc::new(AtomicBool::new(false)),
            traffic: Default::default(),
        })
    }

    /// Starts the supervisor and scheduler loops.
    pub fn spawn(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move { me.supervise().await });
        let me = self.clone();
        tokio::spawn(async move { me.schedule().await });
        tokio::spawn(crate::datasets::sweep_forever(self.node.clone()));
    }

    /// The supervisor: keeps this node's runs in line with the records.
    ///
    /// Each run's start is recorded durably first (`jobs/<id>/started`),
    /// and the runs this life started are remembered, so an epoch placed
    /// here falls in one of three cases:
    /// - this life started it: nothing to do (running, or this host's
    ///   workers are done and the coordinator is finishing);
    /// - a previous life started it (a crash, a preemption, a reboot): its
    ///   workers died with that life, so the job is claimed under a new
    ///   epoch, which fences anything of the old run still in flight, and
    ///   resumes from its checkpoint;
    /// - nobody here started it (assigned while this node was down, or by
    ///   another node's claim after a whole-cluster restart): nothing was
    ///   lost here, so it simply starts, and one fault costs one rollback.
    async fn supervise(self: Arc<Self>) {
        let me = self.node.id();
        // (job, epoch) of the runs this life started or claimed.
        let mut mine: HashSet<(u64, u64)> = HashSet::new();
        // Runs of this life whose threads ended by themselves (not
        // aborted): when each ended, and the end it could not report.
        let mut ended: HashMap<(u64, u64), (Instant, Option<JobCommand>)> = HashMap::new();
        loop {
            tokio::time::sleep(TICK).await;
            let Ok(meta) = self.node.meta_active().await else {
                continue;
            };
            if meta.placement.is_none() {
                continue;
            }
            self.confirm_checkpoints(&meta.jobs);
            // Drained, removed or declared dead: this node's runs move to
            // other nodes at their next checkpoint (the scheduler places
            // nothing new here meanwhile).
            if meta.retiring.contains_key(&me) {
                let busy = self.runs.lock().values().any(|h| !h.thread.is_finished());
                if busy && !self.draining.swap(true, Ordering::SeqCst) {
                    let jobs = self.clone();
                    tokio::spawn(async move {
                        jobs.release_runs(DRAIN_GRACE, "is draining").await;
                        jobs.draining.store(false, Ordering::SeqCst);
                    });
                }
            }
            mine.retain(|(job, epoch)| {
                meta.jobs
                    .get(job)
                    .is_some_and(|r| r.epoch == *epoch && !r.state.is_terminal())
            });
            let placed_here = |r: &&Arc<petuum_cluster::jobs::JobRecord>| {
                r.placement.contains(&me)
                    && matches!(r.state, JobState::Running | JobState::Recovering)
                    && !r.cancel_requested
            };
            let lost: Vec<(u64, u64, Vec<u64>)> = meta
                .jobs
                .values()
                .filter(placed_here)
                .filter(|r| !mine.contains(&(r.id, r.epoch)))
                .filter(|r| started_epoch(&self.data_dir, r.id) == Some(r.epoch))
                .map(|r| (r.id, r.epoch, r.placement.clone()))
                .collect();
            for (job, epoch, placement) in lost {
                let cmd = JobCommand::Assign {
                    job,
                    placement,
                    epoch,
                    reason: format!("node {me} restarted"),
                    at_ms: now_ms(),
                };
                match self.node.meta_command(MetaCommand::Job(cmd)).await {
                    // Claimed, or the epoch moved on meanwhile: either way
                    // this epoch is settled.
                    Ok(_) | Err(petuum_cluster::wire::DataError::Refused(_)) => {
                        mine.insert((job, epoch));
                    }
                    Err(e) => {
                        tracing::warn!(job, error = %e, "claiming a job after restart");
                    }
                }
            }
            let stopping = self.stopping.load(Ordering::SeqCst);
            let unstarted: Vec<(u64, u64)> = {
                let mut runs = self.runs.lock();
                // Reap finished runs.
                runs.retain(|_, h| {
                    let done = h.thread.is_finished();
                    if done && !h.abort.load(Ordering::SeqCst) {
                        match std::mem::take(&mut *h.last_report.lock()) {
                            runner::LastReport::OnRecord => {}
                            runner::LastReport::Unknown => {
                                ended.insert((h.job, h.epoch), (Instant::now(), None));
                            }
                            runner::LastReport::Lost(cmd) => {
                                ended.insert((h.job, h.epoch), (Instant::now(), Some(cmd)));
                            }
                        }
                    }
                    !done
                });
                // Runs that are no longer ours (reassigned, ended) stop.
                for (job, h) in runs.iter() {
                    let current = meta.jobs.get(job).is_some_and(|r| {
                        r.placement.contains(&me) && r.epoch == h.epoch && !r.state.is_terminal()
                    });
                    if !current && !h.abort.load(Ordering::SeqCst) {
                        tracing::warn!(
                            job,
                            epoch = h.epoch,
                            "the job was reassigned: aborting this run"
                        );
                        h.abort("reassigned to another node");
                    }
                    if let Some(r) = meta.jobs.get(job) {
                        if r.cancel_requested && !h.cancelled.load(Ordering::SeqCst) {
                            tracing::info!(job, "cancelling");
                            h.cancelled.store(true, Ordering::SeqCst);
                            h.abort("cancelled");
                        }
                    }
                }
                if stopping {
                    continue;
                }
                for r in meta.jobs.values().filter(placed_here) {
                    if runs.contains_key(&r.id)
                        || mine.contains(&(r.id, r.epoch))
                        || started_epoch(&self.data_dir, r.id) == Some(r.epoch)
                    {
                        continue;
                    }
                    tracing::info!(job = r.id, epoch = r.epoch, checkpoint = ?r.checkpoint, "starting this node's workers");
                    // Durably before the run touches anything: after a crash,
                    // this tells the next life which epoch died with it.
                    if let Err(e) = mark_started(&self.data_dir, r.id, r.epoch) {
                        tracing::warn!(job = r.id, error = %e, "recording the run's start; not starting it");
                        continue;
                    }
                    let h = runner::start(runner::RunCtx {
                        node: self.node.clone(),
                        rt: tokio::runtime::Handle::current(),
                        record: (**r).clone(),
                        epoch: r.epoch,
                        data_dir: self.data_dir.clone(),
                        traffic: self.traffic.clone(),
                    });
                    runs.insert(r.id, h);
                    mine.insert((r.id, r.epoch));
                }
                // A cancel that came after the placement but before this
                // coordinator started its run: no run here will report the
                // end, so the coordinator does (the other hosts' runs stop on
                // the cancel, or never start).
                meta.jobs
                    .values()
                    .filter(|r| {
                        r.cancel_requested
                            && r.host == Some(me)
                            && matches!(r.state, JobState::Running | JobState::Recovering)
                            && !runs.contains_key(&r.id)
                    })
                    .map(|r| (r.id, r.epoch))
                    .collect()
            };
            self.settle_silent_runs(&meta.jobs, &mut ended).await;
            for (job, epoch) in unstarted {
                let cmd = JobCommand::Finish {
                    job,
                    epoch,
                    end: petuum_cluster::jobs::RunEnd::Cancelled,
                    at_ms: now_ms(),
                };
                match self.node.meta_command(MetaCommand::Job(cmd)).await {
                    Ok(_) => tracing::info!(job, epoch, "cancelled before its run started here"),
                    Err(e) => tracing::debug!(job, error = %e, "ending a cancelled job"),
                }
            }
        }
    }

    /// Settles the runs of this node whose threads ended by themselves
    /// while the job's record does not show their end (see
    /// [`silent_run`]): nothing else would, since the host is alive and
    /// answers probes, so the scheduler never moves the job and its
    /// coordinator waits for the host for ever.
    async fn settle_silent_runs(
        &self,
        jobs: &petuum_cluster::jobs::JobMap,
        ended: &mut HashMap<(u64, u64), (Instant, Option<JobCommand>)>,
    ) {
        let me = self.node.id();
        let mut due = Vec::new();
        ended.retain(|&(job, epoch), (since, pending)| {
            match silent_run(
                jobs.get(&job).map(|r| &**r),
                me,
                epoch,
                pending.as_ref(),
                since.elapsed(),
            ) {
                SilentRun::Settled => false,
                SilentRun::Wait => true,
                SilentRun::Send(cmd) => {
                    due.push(((job, epoch), cmd));
                    true
                }
            }
        });
        for (key, cmd) in due {
            tracing::warn!(job = key.0, epoch = key.1, command = ?cmd, "a run here ended without its end on record: sending it");
            match self.node.meta_command(MetaCommand::Job(cmd)).await {
                // Refused: the epoch moved on meanwhile.
                Ok(_) | Err(petuum_cluster::wire::DataError::Refused(_)) => {
                    ended.remove(&key);
                }
                Err(e) => tracing::debug!(job = key.0, error = %e, "settling a silent run"),
            }
        }
    }

    /// Tells this node's checkpoint store which checkpoint of each job is
    /// complete (its record says so: every host stored its part), so that
    /// retention keeps it and everything newer whatever the count: the
    /// shards' parts can run several checkpoints ahead of the record while
    /// the hosts' worker states are still being stored, and the record's
    /// checkpoint is the one a recovery reads.
    fn confirm_checkpoints(&self, jobs: &petuum_cluster::jobs::JobMap) {
        let store = petuum_storage::CheckpointStore::deferred(self.node.db.clone());
        for r in jobs.values() {
            // The record counts clocks done; the parts are labelled with
            // the last clock they include.
            let Some(label) = r.checkpoint.and_then(|c| c.checked_sub(1)) else {
                continue;
            };
            if store.complete(r.id).is_some_and(|c| c >= label) {
                continue;
            }
            if let Err(e) = store.set_complete(r.id, label) {
                tracing::warn!(job = r.id, error = %e, "pruning old checkpoints");
            }
        }
    }

    /// The scheduler (acts only on the metadata leader). It also logs, once
    /// each, the cluster's events: nodes declared dead, checkpoints
    /// completed, recoveries, jobs ended.
    async fn schedule(self: Arc<Self>) {
        // How long each node has not answered probes, counted in rounds
        // (the leader's own stalls do not count); a new leader counts every
        // node as having just answered.
        let mut silence = petuum_cluster::liveness::Silence::new(TICK + PROBE_TIMEOUT);
        let mut leading = false;
        // Nodes presumed dead now, and what the log last said of each job.
        let mut dead_now: HashSet<u64> = HashSet::new();
        let mut noted: HashMap<u64, Noted> = HashMap::new();
        let mut retries = Retries::default();
        let mut retention_at = Instant::now();
        // The members that answered this node's own probes last round, and
        // those that answered only other members' (indirect probes).
        let mut last_answered: BTreeSet<u64> = BTreeSet::new();
        let mut indirect_now: HashSet<u64> = HashSet::new();
        loop {
            tokio::time::sleep(TICK).await;
            if !self.node.is_meta_leader() {
                leading = false;
                continue;
            }
            // The members now (nodes join and leave).
            let nodes = self.node.placement().nodes().to_vec();
            if !leading {
                leading = true;
                silence.reset();
            }
            // A node that missed the last round is also probed through up
            // to two members that answered it (indirect probes, as SWIM
            // does), in the same round: a link broken between this node
            // and it alone (a partial partition) must not move its jobs to
            // nodes that may not reach it either, while a dead node is
            // presumed dead as soon as before.
            let me = self.node.id();
            let helpers: Vec<u64> = last_answered
                .iter()
                .copied()
                .filter(|&h| h != me && nodes.contains(&h))
                .collect();
            let direct = nodes.iter().map(|&n| {
                let node = self.node.clone();
                async move { (n, node.ping(n, PROBE_TIMEOUT).await) }
            });
            let indirect = nodes
                .iter()
                .filter(|&&n| n != me && !last_answered.contains(&n))
                .flat_map(|&n| {
                    helpers
                        .iter()
                        .filter(move |&&h| h != n)
                        .take(2)
                        .map(move |&h| (n, h))
                })
                .map(|(n, h)| {
                    let node = self.node.clone();
                    async move { (n, node.ping_via(h, n, PROBE_TIMEOUT).await) }
                })
                .collect::<Vec<_>>();
            let (direct, indirect) = futures::future::join(
                futures::future::join_all(direct),
                futures::future::join_all(indirect),
            )
            .await;
            let mut answered: std::collections::BTreeSet<u64> = direct
                .into_iter()
                .filter(|&(_, ok)| ok)
                .map(|(n, _)| n)
                .collect();
            let through_others: BTreeSet<u64> = indirect
                .into_iter()
                .filter(|&(n, ok)| ok && !answered.contains(&n))
                .map(|(n, _)| n)
                .collect();
            for &n in &through_others {
                if indirect_now.insert(n) {
                    tracing::warn!(
                        node = n,
                        "node answers other members' probes but not this node's (a broken link?): counted live"
                    );
                }
            }
            indirect_now.retain(|n| through_others.contains(n));
            last_answered = answered.clone();
            answered.extend(through_others);
            let now = Instant::now();
            silence.round(now, &nodes, &answered);
            let live = |n: u64| nodes.contains(&n) && silence.of(n) < DEAD_AFTER;
            for &n in &nodes {
                if !live(n) && dead_now.insert(n) {
                    tracing::warn!(
                        node = n,
                        silent_ms = DEAD_AFTER.as_millis() as u64,
                        "node declared dead: no answer to probes; its jobs move to live nodes"
                    );
                } else if live(n) && dead_now.remove(&n) {
                    tracing::info!(node = n, "node answers probes again");
                }
            }
            let Some(meta) = self.node.meta_state() else {
                continue;
            };
            note_job_changes(&meta.jobs, &mut noted);
            retries.retain(&meta.jobs);
            if retention_at.elapsed() >= RETENTION_EVERY {
                retention_at = Instant::now();
                let ended: Vec<(u64, u64)> = meta
                    .jobs
                    .values()
                    .filter(|r| r.state.is_terminal())
                    .map(|r| (r.id, r.finished_ms.unwrap_or(r.submitted_ms)))
                    .collect();
                let expired = self.node.config.retention.expired(ended, now_ms());
                // A few per round: deleting is a command on every shard.
                for job in expired.into_iter().take(8) {
                    match self.delete(job, "").await {
                        Ok(()) => tracing::info!(job, "retention: ended job deleted"),
                        Err(e) => {
                            tracing::warn!(job, error = %e, "retention: delete failed; retried next round")
                        }
                    }
                }
            }
            // Stopping, or retiring (drained, removed, dead): no new work.
            let leaving = |n: u64| {
                meta.node_states.get(&n) == Some(&NodeState::Leaving)
                    || meta.retiring.contains_key(&n)
            };
            let up: Vec<u64> = nodes.iter().copied().filter(|&n| live(n)).collect();
            let candidates: Vec<u64> = up.iter().copied().filter(|&n| !leaving(n)).collect();
            // A job can run when every shard group of its span keeps a
            // quorum of live replicas (its workers touch each of them).
            let placement = self.node.placement();
            let lost: Vec<u32> = (0..placement.shards())
                .filter(|&s| {
                    let m = placement.members(petuum_cluster::placement::shard_group(s));
                    m.iter().filter(|&&n| live(n)).count() < m.len() / 2 + 1
                })
                .collect();
            // Jobs per host, to spread new assignments.
            // Workers per node, to spread new placements.
            let mut load: HashMap<u64, usize> = candidates.iter().map(|&n| (n, 0)).collect();
            for r in meta.jobs.values() {
                if !r.state.is_terminal() {
                    for &h in &r.placement {
                        *load.entry(h).or_default() += 1;
                    }
                }
            }
            for r in meta.jobs.values() {
                if r.state.is_terminal() {
                    continue;
                }
                // (The spec is read only while some group has no quorum.)
                let span = (!lost.is_empty()).then(|| r.span(placement.shards()));
                let lost: Vec<u32> = span.map_or_else(Vec::new, |sp| {
                    lost.iter().copied().filter(|&s| sp.contains(s)).collect()
                });
                let dead: Vec<u64> = r.placement.iter().copied().filter(|&h| !live(h)).collect();
                let reason = if !r.placement.is_empty() {
                    if let Some(h) = dead.first() {
                        format!("node {h} stopped answering")
                    } else if !lost.is_empty() && !r.cancel_requested {
                        // Its workers would block on the shards without a
                        // quorum: stop the run (the new epoch fences it).
                        "shard groups lost their quorum".to_string()
                    } else {
                        continue;
                    }
                } else if r.state == JobState::Submitted {
                    "placed".to_string()
                } else if r.state == JobState::Paused {
                    "enough nodes are up again".into()
                } else {
                    if !r.cancel_requested && !retries.may_place(r.id, r.checkpoint, now) {
                        continue;
                    }
                    "placed again".into()
                };
                let cmd = if r.cancel_requested {
                    JobCommand::Finish {
                        job: r.id,
                        epoch: r.epoch,
                        end: RunEnd::Cancelled,
                        at_ms: now_ms(),
                    }
                } else if lost.is_empty() && !candidates.is_empty() {
                    // Each worker on the least loaded node: round-robin
                    // over the nodes for one job on an idle cluster. With
                    // `run.workers_per_node = k`, up to k of the job's
                    // workers share a node (Bosen's worker threads of one
                    // client process): a node that has some of them and
                    // room for more first, then the least loaded.
                    // Among equally loaded nodes, the one that leads the
                    // job's own shard (`job mod n`: its model's, the first
                    // of a partial span, one of a whole one) when the
                    // cluster is balanced (its preferred leader): that
                    // node's workers reach the leader in process and read
                    // its replica, which has the job's clocks as soon as
                    // they commit.
                    let per_node = serde_json::from_str::<petuum_core::spec::JobSpec>(&r.spec)
                        .ok()
                        .and_then(|s| s.run.workers_per_node)
                        .unwrap_or(1) as usize;
                    let home =
                        placement.preferred_leader(runner::model_shard(r.id, placement.shards()));
                    let mut mine: HashMap<u64, usize> = HashMap::new();
                    let placement: Vec<u64> = (0..r.workers)
                        .map(|_| {
                            let n = *candidates
                                .iter()
                                .min_by_key(|&&n| {
                                    let have = mine.get(&n).copied().unwrap_or(0);
                                    let room = have > 0 && have < per_node;
                                    (!room, load.get(&n).copied().unwrap_or(0), n != home, n)
                                })
                                .expect("not empty");
                            *load.entry(n).or_default() += 1;
                            *mine.entry(n).or_default() += 1;
                            n
                        })
                        .collect();
                    JobCommand::Assign {
                        job: r.id,
                        placement,
                        epoch: r.epoch,
                        reason,
                        at_ms: now_ms(),
                    }
                } else if r.state != JobState::Paused {
                    JobCommand::Pause {
                        job: r.id,
                        epoch: r.epoch,
                        reason: format!(
                            "{} of {} nodes up; {} of the job's {} shard groups without a quorum ({reason})",
                            up.len(),
                            nodes.len(),
                            lost.len(),
                            span.map_or(0, |s| s.len())
                        ),
                        at_ms: now_ms(),
                    }
                } else {
                    continue;
                };
                tracing::info!(job = r.id, ?cmd, "scheduling");
                if let Err(e) = self.node.meta_command(MetaCommand::Job(cmd)).await {
                    tracing::warn!(job = r.id, error = %e, "scheduling command failed");
                }
            }
        }
    }

    /// Preemption (SIGTERM): takes no new runs and tells the metadata
    /// group this node is leaving (nothing is placed here). For each job
    /// with workers here it waits, at most `grace`, for the job's next
    /// complete checkpoint (its workers keep running meanwhile), then
    /// releases its workers: the job rolls back to that fresh checkpoint
    /// and is placed again on the other nodes, losing (almost) nothing.
    pub async fn stop(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let me = self.node.id();
        let _ = self
            .node
            .meta_command(MetaCommand::SetNodeState {
                node: me,
                state: NodeState::Leaving,
            })
            .await;
        self.release_runs(grace, "is stopping").await;
    }

    /// Releases the workers of every run on this node, each at its job's
    /// next complete checkpoint (at most `grace` later): the job rolls back
    /// to that fresh checkpoint and is placed on other nodes. `why` ends
    /// "node N ..." in the job's events.
    async fn release_runs(&self, grace: Duration, why: &str) {
        let me = self.node.id();
        let runs: Vec<(u64, u64)> = self
            .runs
            .lock()
            .values()
            .filter(|h| !h.thread.is_finished())
            .map(|h| (h.job, h.epoch))
            .collect();
        if runs.is_empty() {
            return;
        }
        tracing::info!(
            runs = runs.len(),
            "waiting for the next checkpoint of each job here"
        );
        // Per job: its checkpoint when the stop began, and its period.
        let first = self.node.meta_active().await.ok();
        let at_stop: HashMap<u64, (Option<u64>, i64)> = runs
            .iter()
            .filter_map(|&(job, _)| {
                let r = first.as_ref()?.jobs.get(&job)?;
                let every = serde_json::from_str::<petuum_core::spec::JobSpec>(&r.spec)
                    .map_or(0, |s| s.run.checkpoint_every);
                Some((job, (r.checkpoint, every)))
            })
            .collect();
        let deadline = Instant::now() + grace;
        let mut pending: Vec<(u64, u64)> = runs;
        while !pending.is_empty() {
            let meta = self.node.meta_active().await.ok();
            let late = Instant::now() >= deadline;
            let mut still = Vec::new();
            for (job, epoch) in pending {
                let Some(r) = meta.as_ref().and_then(|m| m.jobs.get(&job)) else {
                    still.push((job, epoch));
                    continue;
                };
                // Older than the run: a stale read; ask again.
                if r.epoch < epoch {
                    still.push((job, epoch));
                    continue;
                }
                if r.epoch != epoch || r.state.is_terminal() {
                    continue;
                }
                let (before, every) = at_stop.get(&job).copied().unwrap_or((None, 0));
                let fresh = r.checkpoint > before;
                if !(fresh || every <= 0 || late) {
                    still.push((job, epoch));
                    continue;
                }
                let reason = if late && !fresh {
                    format!("node {me} {why} (no new checkpoint within {grace:?})")
                } else {
                    format!("node {me} {why}")
                };
                tracing::info!(job, checkpoint = ?r.checkpoint, "releasing the job's workers");
                let cmd = JobCommand::Release {
                    job,
                    epoch,
                    node: me,
                    reason,
                    at_ms: now_ms(),
                };
                if let Err(e) = self.node.meta_command(MetaCommand::Job(cmd)).await {
                    tracing::warn!(job, error = %e, "releasing the job");
                }
                if let Some(h) = self.runs.lock().get(&job) {
                    h.abort(&format!("node {why}"));
                }
            }
            pending = still;
            if !pending.is_empty() {
                if Instant::now() >= deadline + Duration::from_secs(2) {
                    tracing::warn!(jobs = pending.len(), "could not release every job");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Let the aborted runs wind down (they report nothing).
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until && self.runs.lock().values().any(|h| !h.thread.is_finished()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Jobs {
    /// Deletes an ended job: first every shard forgets it (tables,
    /// checkpoints, worker states, the model, on each replica), then its
    /// record goes. A failure in between leaves the record, so the delete
    /// (or the retention policy) can be repeated. Under a client's id
    /// (`request`, may be empty), the record's removal applies once
    /// however often it is sent (`MetaCommand::JobOnce`).
    pub async fn delete(&self, job: u64, request: &str) -> Result<(), String> {
        let node = self.node.clone();
        let rt = tokio::runtime::Handle::current();
        let opts = petuum_cluster::ConnectOptions {
            token: node.client_token(),
            tls: petuum_cluster::node::client_tls(&node.config).map_err(|e| e.to_string())?,
            ..Default::default()
        };
        tokio::task::spawn_blocking(move || {
            petuum_cluster::ClusterShards::connect_in(node, rt, opts)
                .and_then(|s| s.forget_job(job))
                .map_err(|e| format!("forgetting job {job} on its shards: {e}"))
        })
        .await
        .map_err(|e| e.to_string())??;
        self.node
            .meta_command(MetaCommand::job_action(JobCommand::Delete { job }, request))
            .await
            .map_err(|e| format!("deleting the record of job {job}: {e}"))?;
        let _ = std::fs::remove_dir_all(self.data_dir.join("jobs").join(job.to_string()));
        tracing::info!(job, "job deleted");
        Ok(())
    }

    /// A succeeded job's model file, from any replica of its model shard
    /// (this node's first). The error says which replicas failed.
    pub async fn model_bytes(&self, job: u64) -> Result<Vec<u8>, String> {
        use petuum_cluster::placement::shard_group;
        use petuum_cluster::wire::{DataReply, DataRequest};
        let node = &self.node;
        let shard = runner::model_shard(job, node.placement().shards());
        let mut members = node.placement().members(shard_group(shard));
        members.sort_by_key(|&n| n != node.id());
        let mut failed = Vec::with_capacity(members.len());
        let req = DataRequest::Blob {
            job,
            clock: MODEL_CLOCK,
            worker: 0,
        };
        for n in members {
            let r = match node.data_call(n, &req, Duration::from_secs(30)).await {
                Ok(DataReply::Blob(b)) => Ok(b),
                Ok(other) => Err(format!("unexpected reply {other:?}")),
                Err(e) => Err(e.to_string()),
            };
            match r {
                Ok(Some(b)) => return Ok(b),
                Ok(None) => failed.push(format!("node {n} has no copy (yet)")),
                Err(e) => failed.push(format!("node {n}: {e}")),
            }
        }
        if failed.is_empty() {
            failed.push("its shard has no replica".into());
        }
        // Every replica's answer: which were down and which lag tells a
        // restart apart from a lost model.
        Err(format!(
            "the model of job {job} could not be read from any replica: {}",
            failed.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use petuum_cluster::jobs::{apply, JobMap};

    /// A run of job 1 ended on node 2 (worker 1's host; node 1 is the
    /// coordinator) or on node 1, its record driven through the metadata's
    /// own transitions: what the supervisor does about it.
    #[test]
    fn a_run_that_ended_unseen_is_settled_through_the_metadata() {
        let (mut jobs, mut next) = (JobMap::new(), 1u64);
        let job = apply(
            &mut jobs,
            &mut next,
            JobCommand::Submit {
                name: "lr".into(),
                algorithm: "logistic_regression".into(),
                spec: "{}".into(),
                workers: 2,
                clocks: 10,
                tables: 2,
                at_ms: 1,
            },
        )
        .unwrap();
        let cmd = |c: JobCommand, jobs: &mut JobMap, next: &mut u64| apply(jobs, next, c).unwrap();
        cmd(
            JobCommand::Assign {
                job,
                placement: vec![1, 2],
                epoch: 0,
                reason: "test".into(),
                at_ms: 2,
            },
            &mut jobs,
            &mut next,
        );
        let epoch = jobs[&job].epoch;
        let late = SILENT_END_GRACE;
        let early = SILENT_END_GRACE / 2;
        let done = JobCommand::HostDone {
            job,
            epoch,
            node: 2,
        };
        let look = |jobs: &JobMap, me, pending: Option<&JobCommand>, waited| {
            silent_run(jobs.get(&job).map(|r| &**r), me, epoch, pending, waited)
        };
        // Within the grace, nothing: the replica may lag the run's reports.
        assert_eq!(look(&jobs, 2, None, early), SilentRun::Wait);
        // A host's lost `HostDone` is sent again.
        assert_eq!(
            look(&jobs, 2, Some(&done), late),
            SilentRun::Send(done.clone())
        );
        // A run that ended with nothing to say ends the epoch, interrupted.
        for me in [1, 2] {
            match look(&jobs, me, None, late) {
                SilentRun::Send(JobCommand::Finish {
                    job: j,
                    epoch: e,
                    end: RunEnd::Interrupted(why),
                    ..
                }) => {
                    assert_eq!((j, e), (job, epoch));
                    assert!(
                        why.contains(&format!("node {me}'s part of epoch {epoch}")),
                        "{why}"
                    );
                }
                other => panic!("node {me}: {other:?}"),
            }
        }
        // Once node 2's part is on record it is settled; the coordinator's
        // is not (it ends the job, and its thread ended first).
        cmd(done.clone(), &mut jobs, &mut next);
        assert_eq!(look(&jobs, 2, None, late), SilentRun::Settled);
        assert_eq!(look(&jobs, 2, Some(&done), late), SilentRun::Settled);
        assert!(matches!(look(&jobs, 1, None, late), SilentRun::Send(_)));
        // A node outside the placement, an older epoch, a job not known:
        // settled.
        assert_eq!(look(&jobs, 3, None, late), SilentRun::Settled);
        assert_eq!(
            silent_run(jobs.get(&job).map(|r| &**r), 1, epoch - 1, None, late),
            SilentRun::Settled
        );
        assert_eq!(silent_run(None, 1, epoch, None, late), SilentRun::Settled);
        // The coordinator's lost `Finish` is sent again; once the job ended
        // (that `Finish` applied), settled.
        let finish = JobCommand::Finish {
            job,
            epoch,
            end: RunEnd::Cancelled,
            at_ms: 3,
        };
        assert_eq!(
            look(&jobs, 1, Some(&finish), late),
            SilentRun::Send(finish.clone())
        );
        cmd(finish.clone(), &mut jobs, &mut next);
        assert_eq!(look(&jobs, 1, Some(&finish), late), SilentRun::Settled);
    }

    /// Five placements at once, then waits doubling from 0.4 s to 10 s; a
    /// new checkpoint, or a minute since the last placement, starts over.
    #[test]
    fn placements_again_back_off_until_progress() {
        let mut r = Retries::default();
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        for i in 0..RETRIES_AT_ONCE as u64 {
            assert!(r.may_place(7, Some(10), ms(i)), "try {i}");
        }
        // The sixth waits two ticks after the fifth.
        let fifth = RETRIES_AT_ONCE as u64 - 1;
        assert!(!r.may_place(7, Some(10), ms(fifth + 399)));
        assert!(r.may_place(7, Some(10), ms(fifth + 400)));
        // Then twice that, and so on up to the cap.
        let sixth = fifth + 400;
        assert!(!r.may_place(7, Some(10), ms(sixth + 799)));
        assert!(r.may_place(7, Some(10), ms(sixth + 800)));
        let mut at = sixth + 800;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let mut next = at;
            while !r.may_place(7, Some(10), ms(next)) {
                next += 100;
            }
            waits.push(next - at);
            at = next;
        }
        assert_eq!(
            waits,
            [1600, 3200, 6400, 10_000, 10_000, 10_000, 10_000, 10_000]
        );
        // Another job is not held back.
        assert!(r.may_place(8, None, ms(at)));
        // A new checkpoint starts the count again.
        assert!(r.may_place(7, Some(20), ms(at + 1)));
        assert!(r.may_place(7, Some(20), ms(at + 2)));
        // So does a minute without a placement.
        for i in 0..10 {
            r.may_place(7, Some(20), ms(at + 3 + i));
        }
        assert!(!r.may_place(7, Some(20), ms(at + 300)));
        assert!(r.may_place(7, Some(20), ms(at + 70_000)));
        assert!(r.may_place(7, Some(20), ms(at + 70_001)));
    }
}
