//! Job records in the metadata group (docs/design.md §6, docs/jobs.md): what
//! was submitted, where it runs, its state, newest complete checkpoint and
//! progress. Every change is a [`JobCommand`] committed through Raft, so
//! any node answers `status` and a new metadata leader knows every job.
//!
//! Lifecycle: `submitted → running → (recovering → running)* →
//! succeeded | failed | cancelled | paused`. Each assignment of a job to a
//! host bumps its `epoch`; reports carry the epoch they were made under,
//! and a report from an older epoch (a host presumed dead that was not)
//! is refused, so it cannot overwrite the state of the current run.

use crate::wire::Refusal;
use petuum_core::types::Clock;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The job records by id. Each record sits behind an `Arc`, so a copy of
/// the metadata copies pointers, not every job's history and events; a
/// command changes a record copy-on-write (`Arc::make_mut`).
pub type JobMap = BTreeMap<u64, Arc<JobRecord>>;

/// How many progress samples a job record keeps (the newest).
pub const HISTORY: usize = 2000;
/// How many events a job record keeps (the newest).
pub const EVENTS: usize = 500;

/// Where a job is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Accepted, waiting for a host.
    Submitted,
    /// A host runs its workers.
    Running,
    /// Rolling back to its newest complete checkpoint after losing its
    /// host (or being preempted), waiting for / starting on a new host.
    Recovering,
    Succeeded,
    Failed,
    Cancelled,
    /// Stopped at a checkpoint: too few nodes to go on, or paused by hand.
    /// The scheduler continues it by itself once enough nodes are up;
    /// `petuum-client resume` does it at once.
    Paused,
}

impl JobState {
    pub fn name(self) -> &'static str {
        match self {
            JobState::Submitted => "submitted",
            JobState::Running => "running",
            JobState::Recovering => "recovering",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Paused => "paused",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// Progress after a clock (the aggregate over the job's workers).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub clock: Clock,
    pub objective: f64,
    pub samples: u64,
    pub throughput: f64,
    /// Seconds since this run (epoch) started.
    pub elapsed_s: f64,
    /// Wall-clock time of the report, ms since the Unix epoch.
    pub at_ms: u64,
    /// The job's other values (see [`HostReport::metrics`]): the
    /// coordinator's, else the first host's that has any.
    pub metrics: Vec<(String, f64)>,
}

/// One host's progress: sums over its workers after `clock` clocks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    pub clock: Clock,
    pub objective_sum: f64,
    pub weight: f64,
    pub samples: u64,
    pub throughput: f64,
    pub elapsed_s: f64,
    /// The job's other values after `clock` (a duality gap, a held-out
    /// error), as this host's lowest-numbered worker reported them.
    pub metrics: Vec<(String, f64)>,
}

/// What a finished job produced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub objective: f64,
    pub seconds: f64,
    pub model_bytes: u64,
    /// Held-out metrics of the model (accuracy, ...).
    pub metrics: Vec<(String, f64)>,
    /// The node that exported the model.
    pub node: u64,
}

/// A line of a job's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub at_ms: u64,
    pub text: String,
}

/// One job as the metadata group records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: u64,
    pub name: String,
    pub algorithm: String,
    /// The validated spec (JSON of `petuum_core::spec::JobSpec`, paths
    /// absolute), exactly what every host runs.
    pub spec: String,
    pub workers: u32,
    pub clocks: Clock,
    /// Id of the job's first table (the others follow).
    pub first_table: u64,
    pub state: JobState,
    /// The job's coordinator now (the node of worker 0): it restores or
    /// initialises the tables, exports the model and reports the end.
    pub host: Option<u64>,
    /// The node of each worker in this epoch (empty while unplaced).
    pub placement: Vec<u64>,
    /// This epoch's tables are restored or initialised: workers may start.
    pub ready: bool,
    /// Nodes that saved their workers' states, per checkpoint clock not
    /// yet complete.
    pub parts: BTreeMap<Clock, BTreeSet<u64>>,
    /// Each host's newest progress in this epoch.
    pub host_progress: BTreeMap<u64, HostReport>,
    /// Hosts whose workers finished every clock in this epoch.
    pub done_hosts: BTreeSet<u64>,
    /// Bumped by every assignment; reports from older epochs are refused.
    pub epoch: u64,
    /// Clocks finished at the newest complete checkpoint.
    pub checkpoint: Option<Clock>,
    /// When that checkpoint completed (ms since the Unix epoch).
    pub checkpoint_ms: Option<u64>,
    pub progress: Option<Progress>,
    /// Progress samples, oldest first (at most [`HISTORY`]).
    pub history: Vec<Progress>,
    pub events: Vec<JobEvent>,
    pub result: Option<JobResult>,
    pub error: Option<String>,
    /// Set by `cancel` while the job runs; its host stops it.
    pub cancel_requested: bool,
    /// How often the job was rolled back to a checkpoint and restarted.
    pub recoveries: u32,
    pub submitted_ms: u64,
    pub finished_ms: Option<u64>,
}

impl JobRecord {
    /// The shards that hold the job's tables on a cluster of `total`
    /// shards: `run.shards` of its spec ([`JobShards::of_job`]); every
    /// shard when the spec cannot be read (it was validated when
    /// submitted, so only a record from another version).
    pub fn span(&self, total: u32) -> petuum_core::types::JobShards {
        match serde_json::from_str::<petuum_core::spec::JobSpec>(&self.spec) {
            Ok(spec) => petuum_core::types::JobShards::of_job(self.id, spec.run.shards(), total),
            Err(_) => petuum_core::types::JobShards::all(total),
        }
    }

    fn event(&mut self, at_ms: u64, text: impl Into<String>) {
        self.events.push(JobEvent {
            at_ms,
            text: text.into(),
        });
        if self.events.len() > EVENTS {
            let excess = self.events.len() - EVENTS;
            self.events.drain(..excess);
        }
    }

    /// The nodes of this epoch's placement.
    pub fn hosts(&self) -> BTreeSet<u64> {
        self.placement.iter().copied().collect()
    }

    /// Forgets the per-epoch state (a new epoch starts).
    fn next_epoch(&mut self) {
        self.epoch += 1;
        self.ready = false;
        // The new run starts from the last complete checkpoint (or clock
        // 0): the job's clock is that until the run's hosts report, so
        // that (epoch, clock) never goes back as a client reads it.
        let from = self.checkpoint.unwrap_or(0);
        if let Some(p) = &mut self.progress {
            p.clock = p.clock.min(from);
        }
        self.parts.clear();
        self.host_progress.clear();
        self.done_hosts.clear();
    }

    /// Leaves the job without hosts.
    fn unplace(&mut self) {
        self.host = None;
        self.placement.clear();
    }

    /// Merges the hosts' reports into the job's progress, once every host
    /// of the run reported: until then no clock is complete on all of them
    /// and the pooled objective would be one host's. (Before, a missing
    /// host counted as clock 0: each new run put the job back to clock 0,
    /// with one host's objective in the curve there, and a client saw the
    /// clock of one run go back: CI, `a_cut_off_metadata_leader_answers_
    /// no_stale_record`.)
    fn merge_progress(&mut self, at_ms: u64) {
        let hosts = self.hosts();
        let Some(reports) = hosts
            .iter()
            .map(|h| self.host_progress.get(h))
            .collect::<Option<Vec<_>>>()
        else {
            return;
        };
        let mut p = Progress {
            clock: Clock::MAX,
            at_ms,
            ..Default::default()
        };
        let (mut sum, mut weight) = (0.0, 0.0);
        for r in reports {
            p.clock = p.clock.min(r.clock);
            sum += r.objective_sum;
            weight += r.weight;
            p.samples += r.samples;
            p.throughput += r.throughput;
            p.elapsed_s = p.elapsed_s.max(r.elapsed_s);
        }
        if p.clock == Clock::MAX {
            p.clock = 0;
        }
        p.metrics = self
            .host
            .iter()
            .chain(&hosts)
            .filter_map(|h| self.host_progress.get(h))
            .map(|r| &r.metrics)
            .find(|m| !m.is_empty())
            .cloned()
            .unwrap_or_default();
        p.objective = if weight > 0.0 { sum / weight } else { sum };
        let advanced = self.history.last().is_none_or(|l| l.clock != p.clock);
        if advanced {
            self.history.push(p.clone());
            if self.history.len() > HISTORY {
                let excess = self.history.len() - HISTORY;
                self.history.drain(..excess);
            }
        }
        self.progress = Some(p);
    }

    fn check_epoch(&self, epoch: u64) -> Result<(), Refusal> {
        if epoch != self.epoch {
            return Err(Refusal::StaleEpoch {
                job: self.id,
                epoch,
                current: self.epoch,
            });
        }
        self.check_not_ended()
    }

    fn check_not_ended(&self) -> Result<(), Refusal> {
        if self.state.is_terminal() {
            return Err(Refusal::Ended {
                job: self.id,
                state: self.state,
            });
        }
        Ok(())
    }
}

/// How a run of a job ended, as its host reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RunEnd {
    Succeeded(JobResult),
    /// The algorithm or the data failed: retrying does not help.
    Failed(String),
    Cancelled,
    /// Lost the cluster under it (shards unavailable): retried from the
    /// newest checkpoint.
    Interrupted(String),
}

/// A change to the job records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum JobCommand {
    /// Records a new job; answers its id. `tables` ids are reserved after
    /// the job id for its tables.
    Submit {
        name: String,
        algorithm: String,
        spec: String,
        workers: u32,
        clocks: Clock,
        tables: u64,
        at_ms: u64,
    },
    /// Places the job's workers (`placement[w]` is worker `w`'s node;
    /// compare-and-set on `epoch`): the coordinator (worker 0's node)
    /// restores the newest checkpoint if any, and every host starts its
    /// workers once the job is ready.
    Assign {
        job: u64,
        placement: Vec<u64>,
        epoch: u64,
        reason: String,
        at_ms: u64,
    },
    /// Too few nodes to run on: wait (no hosts).
    Pause {
        job: u64,
        epoch: u64,
        reason: String,
        at_ms: u64,
    },
    /// The coordinator restored or initialised the tables.
    Ready {
        job: u64,
        epoch: u64,
    },
    /// Changes nothing; refused unless `epoch` is the job's current epoch
    /// (and the job is not over). A host sends it, through the metadata
    /// group's leader, before acting on its own replica's view of the job:
    /// after a restart that replica replays old entries, and a node that
    /// was a job's coordinator in an old epoch must not restore the job's
    /// tables under the new epoch's running workers.
    Fence {
        job: u64,
        epoch: u64,
    },
    /// A host's progress.
    HostProgress {
        job: u64,
        epoch: u64,
        node: u64,
        report: HostReport,
        at_ms: u64,
    },
    /// `node` saved the states of its workers at `clock`; the checkpoint
    /// is complete once every host has (the shards write their images by
    /// themselves as the clock passes).
    CheckpointPart {
        job: u64,
        epoch: u64,
        node: u64,
        clock: Clock,
        at_ms: u64,
    },
    /// `node`'s workers finished every clock.
    HostDone {
        job: u64,
        epoch: u64,
        node: u64,
    },
    /// `node` gives its workers up (it is stopping): the job rolls back to
    /// its newest checkpoint and is placed again without it.
    Release {
        job: u64,
        epoch: u64,
        node: u64,
        reason: String,
        at_ms: u64,
    },
    /// Removes an ended job's record (after its shards forgot it).
    Delete {
        job: u64,
    },
    Finish {
        job: u64,
        epoch: u64,
        end: RunEnd,
        at_ms: u64,
    },
    Cancel {
        job: u64,
        at_ms: u64,
    },
    /// Continue a paused or failed job from its newest checkpoint.
    Resume {
        job: u64,
        at_ms: u64,
    },
}

/// Applies a job command to the records; refusals change nothing.
pub fn apply(jobs: &mut JobMap, next_id: &mut u64, cmd: JobCommand) -> Result<u64, Refusal> {
    match cmd {
        JobCommand::Submit {
            name,
            algorithm,
            spec,
            workers,
            clocks,
            tables,
            at_ms,
        } => {
            if workers == 0 {
                return Err(Refusal::Invalid("a job needs at least one worker".into()));
            }
            let id = (*next_id).max(1);
            *next_id = id + 1 + tables;
            let mut r = JobRecord {
                id,
                name,
                algorithm,
                spec,
                workers,
                clocks,
                first_table: id + 1,
                state: JobState::Submitted,
                host: None,
                placement: Vec::new(),
                ready: false,
                parts: BTreeMap::new(),
                host_progress: BTreeMap::new(),
                done_hosts: BTreeSet::new(),
                epoch: 0,
                checkpoint: None,
                checkpoint_ms: None,
                progress: None,
                history: Vec::new(),
                events: Vec::new(),
                result: None,
                error: None,
                cancel_requested: false,
                recoveries: 0,
                submitted_ms: at_ms,
                finished_ms: None,
            };
            r.event(at_ms, "submitted");
            jobs.insert(id, Arc::new(r));
            Ok(id)
        }
        JobCommand::Assign {
            job,
            placement,
            epoch,
            reason,
            at_ms,
        } => {
            let r = record(jobs, job)?;
            if r.epoch != epoch {
                return Err(Refusal::StaleAssignment {
                    job,
                    epoch,
                    current: r.epoch,
                });
            }
            r.check_not_ended()?;
            if r.cancel_requested {
                return Err(Refusal::Cancelling(job));
            }
            if placement.len() != r.workers as usize {
                return Err(Refusal::Invalid(format!(
                    "job {job}: a placement of {} workers for a job of {}",
                    placement.len(),
                    r.workers
                )));
            }
            // A run was under way (even one that never finished a clock):
            // this assignment replaces it.
            let restart = r.progress.is_some()
                || r.checkpoint.is_some()
                || matches!(r.state, JobState::Running | JobState::Recovering);
            if restart && r.epoch > 0 {
                r.recoveries += 1;
            }
            r.next_epoch();
            r.host = placement.first().copied();
            r.placement = placement;
            r.state = if restart {
                JobState::Recovering
            } else {
                JobState::Running
            };
            let from = match r.checkpoint {
                Some(c) => format!("from the checkpoint of clock {c}"),
                None if restart => "from clock 0 (no complete checkpoint)".into(),
                None => "from clock 0".into(),
            };
            let nodes: Vec<String> = r.hosts().iter().map(|n| n.to_string()).collect();
            r.event(
                at_ms,
                format!(
                    "epoch {}: workers on node{} {} {from} ({reason})",
                    r.epoch,
                    if nodes.len() > 1 { "s" } else { "" },
                    nodes.join(", ")
                ),
            );
            Ok(r.epoch)
        }
        JobCommand::Pause {
            job,
            epoch,
            reason,
            at_ms,
        } => {
            let r = current(jobs, job, epoch)?;
            r.unplace();
            r.next_epoch();
            r.state = JobState::Paused;
            r.event(at_ms, format!("paused: {reason}"));
            Ok(r.epoch)
        }
        JobCommand::Ready { job, epoch } => {
            let r = current(jobs, job, epoch)?;
            r.ready = true;
            Ok(r.epoch)
        }
        JobCommand::Fence { job, epoch } => Ok(current(jobs, job, epoch)?.epoch),
        JobCommand::HostProgress {
            job,
            epoch,
            node,
            report,
            at_ms,
        } => {
            let r = current(jobs, job, epoch)?;
            if r.state == JobState::Recovering {
                r.state = JobState::Running;
            }
            r.host_progress.insert(node, report);
            r.merge_progress(at_ms);
            Ok(r.epoch)
        }
        JobCommand::CheckpointPart {
            job,
            epoch,
            node,
            clock,
            at_ms,
        } => {
            let r = current(jobs, job, epoch)?;
            if r.checkpoint.is_some_and(|c| c >= clock) {
                return Ok(r.epoch);
            }
            let hosts = r.hosts();
            let parts = r.parts.entry(clock).or_default();
            parts.insert(node);
            if hosts.is_subset(parts) {
                r.checkpoint = Some(clock);
                r.checkpoint_ms = Some(at_ms);
                r.parts.retain(|&c, _| c > clock);
                r.event(at_ms, format!("checkpoint complete at clock {clock}"));
            }
            Ok(r.epoch)
        }
        JobCommand::HostDone { job, epoch, node } => {
            let r = current(jobs, job, epoch)?;
            r.done_hosts.insert(node);
            Ok(r.epoch)
        }
        JobCommand::Release {
            job,
            epoch,
            node,
            reason,
            at_ms,
        } => {
            let r = current(jobs, job, epoch)?;
            r.unplace();
            r.next_epoch();
            r.state = JobState::Recovering;
            r.event(at_ms, format!("node {node} released its workers: {reason}"));
            Ok(r.epoch)
        }
        JobCommand::Finish {
            job,
            epoch,
            end,
            at_ms,
        } => {
            let r = current(jobs, job, epoch)?;
            match end {
                RunEnd::Succeeded(res) => {
                    r.state = JobState::Succeeded;
                    // Every clock ran: the progress shown is the last one
                    // (the hosts' reports are throttled, so the newest
                    // merged one can be clocks behind).
                    let mut last = r.progress.clone().unwrap_or_default();
                    last.clock = r.clocks;
                    last.objective = res.objective;
                    last.at_ms = at_ms;
                    if r.history.last().is_none_or(|h| h.clock != last.clock) {
                        r.history.push(last.clone());
                        if r.history.len() > HISTORY {
                            r.history.remove(0);
                        }
                    }
                    r.progress = Some(last);
                    r.event(
                        at_ms,
                        format!(
                            "succeeded in {:.1}s: objective {:.6}, model {} bytes",
                            res.seconds, res.objective, res.model_bytes
                        ),
                    );
                    r.result = Some(res);
                    r.finished_ms = Some(at_ms);
                    r.unplace();
                }
                RunEnd::Failed(e) => {
                    r.state = JobState::Failed;
                    r.event(at_ms, format!("failed: {e}"));
                    r.error = Some(e);
                    r.finished_ms = Some(at_ms);
                    r.unplace();
                }
                RunEnd::Cancelled => {
                    r.state = JobState::Cancelled;
                    r.event(at_ms, "cancelled");
                    r.finished_ms = Some(at_ms);
                    r.unplace();
                }
                RunEnd::Interrupted(reason) => {
                    r.state = JobState::Recovering;
                    r.event(at_ms, format!("interrupted: {reason}"));
                    r.unplace();
                    // The next run is a new epoch.
                    r.next_epoch();
                    return Ok(r.epoch);
                }
            }
            // An ended job keeps its last epoch (the run that ended it):
            // every later report is refused as `Ended` already.
            r.ready = false;
            r.host_progress.clear();
            r.done_hosts.clear();
            Ok(r.epoch)
        }
        JobCommand::Delete { job } => {
            let r = record(jobs, job)?;
            if !r.state.is_terminal() {
                return Err(Refusal::Invalid(format!(
                    "job {job} is {}: only an ended job can be deleted (cancel it first)",
                    r.state.name()
                )));
            }
            let epoch = r.epoch;
            jobs.remove(&job);
            Ok(epoch)
        }
        JobCommand::Cancel { job, at_ms } => {
            let r = record(jobs, job)?;
            r.check_not_ended()?;
            if r.host.is_some() {
                r.cancel_requested = true;
                r.event(at_ms, "cancel requested");
            } else {
                r.state = JobState::Cancelled;
                r.next_epoch();
                r.finished_ms = Some(at_ms);
                r.event(at_ms, "cancelled");
            }
            Ok(r.epoch)
        }
        JobCommand::Resume { job, at_ms } => {
            let r = record(jobs, job)?;
            match r.state {
                JobState::Paused | JobState::Failed => {
                    r.state = JobState::Recovering;
                    r.unplace();
                    r.error = None;
                    r.finished_ms = None;
                    r.next_epoch();
                    r.event(at_ms, "resume requested");
                    Ok(r.epoch)
                }
                state => Err(Refusal::NotResumable { job, state }),
            }
        }
    }
}

/// The record of a running job, for a report made under `epoch`.
fn current(jobs: &mut JobMap, job: u64, epoch: u64) -> Result<&mut JobRecord, Refusal> {
    let r = record(jobs, job)?;
    r.check_epoch(epoch)?;
    Ok(r)
}

fn record(jobs: &mut JobMap, job: u64) -> Result<&mut JobRecord, Refusal> {
    jobs.get_mut(&job)
        .map(Arc::make_mut)
        .ok_or(Refusal::NoSuchJob(job))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(jobs: &mut JobMap, next: &mut u64) -> u64 {
        apply(
            jobs,
            next,
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
        .unwrap()
    }

    fn assign(job: u64, placement: Vec<u64>, epoch: u64) -> JobCommand {
        JobCommand::Assign {
            job,
            placement,
            epoch,
            reason: "test".into(),
            at_ms: 2,
        }
    }

    fn report(clock: Clock, objective_sum: f64, weight: f64) -> HostReport {
        HostReport {
            clock,
            objective_sum,
            weight,
            ..Default::default()
        }
    }

    #[test]
    fn lifecycle_with_recovery_and_fencing() {
        let (mut jobs, mut next) = (BTreeMap::new(), 1);
        let id = submit(&mut jobs, &mut next);
        assert_eq!((id, jobs[&id].first_table, next), (1, 2, 4));
        let assign = |placement: Vec<u64>, epoch| assign(id, placement, epoch);
        // A placement must cover every worker.
        assert!(apply(&mut jobs, &mut next, assign(vec![1], 0)).is_err());
        assert_eq!(apply(&mut jobs, &mut next, assign(vec![1, 2], 0)), Ok(1));
        assert_eq!(
            (jobs[&id].state, jobs[&id].host),
            (JobState::Running, Some(1))
        );
        // A stale assignment is refused.
        assert!(matches!(
            apply(&mut jobs, &mut next, assign(vec![2, 3], 0)),
            Err(Refusal::StaleAssignment { .. })
        ));
        // Progress merges the hosts: the slower host's clock, the pooled mean.
        let hp = |node, r| JobCommand::HostProgress {
            job: id,
            epoch: 1,
            node,
            report: r,
            at_ms: 3,
        };
        // One host's report alone completes no clock: no progress yet.
        apply(&mut jobs, &mut next, hp(1, report(6, 3.0, 1.0))).unwrap();
        assert!(jobs[&id].progress.is_none() && jobs[&id].history.is_empty());
        apply(&mut jobs, &mut next, hp(2, report(5, 1.0, 1.0))).unwrap();
        let p = jobs[&id].progress.clone().unwrap();
        assert_eq!((p.clock, p.objective), (5, 2.0));
        // A checkpoint is complete once every host saved its part.
        let part = |node, clock| JobCommand::CheckpointPart {
            job: id,
            epoch: 1,
            node,
            clock,
            at_ms: 4,
        };
        apply(&mut jobs, &mut next, part(1, 5)).unwrap();
        assert_eq!(jobs[&id].checkpoint, None);
        apply(&mut jobs, &mut next, part(2, 5)).unwrap();
        assert_eq!(jobs[&id].checkpoint, Some(5));
        // Host 1 lost: placed again, recovering from the checkpoint.
        assert_eq!(apply(&mut jobs, &mut next, assign(vec![2, 3], 1)), Ok(2));
        let r = &jobs[&id];
        assert_eq!(
            (r.state, r.host, r.checkpoint, r.recoveries, r.ready),
            (JobState::Recovering, Some(2), Some(5), 1, false)
        );
        assert!(r.host_progress.is_empty());
        // The new run's first report, of one of its two hosts, leaves the
        // progress where it was (it never goes back to clock 0).
        let hp2 = |node, r| JobCommand::HostProgress {
            job: id,
            epoch: 2,
            node,
            report: r,
            at_ms: 5,
        };
        let history = jobs[&id].history.len();
        apply(&mut jobs, &mut next, hp2(3, report(6, 1.0, 1.0))).unwrap();
        let r = &jobs[&id];
        assert_eq!(
            (r.state, r.progress.as_ref().unwrap().clock, r.history.len()),
            (JobState::Running, 5, history)
        );
        // The old epoch's late report is fenced off.
        assert_eq!(
            apply(&mut jobs, &mut next, hp(1, report(7, 0.0, 1.0))),
            Err(Refusal::StaleEpoch {
                job: id,
                epoch: 1,
                current: 2
            })
        );
        // So is an old epoch's host about to act (a restarted former
        // coordinator); the current epoch passes, and nothing changes.
        let before = jobs[&id].clone();
        assert!(matches!(
            apply(
                &mut jobs,
                &mut next,
                JobCommand::Fence { job: id, epoch: 1 }
            ),
            Err(Refusal::StaleEpoch { .. })
        ));
        apply(
            &mut jobs,
            &mut next,
            JobCommand::Fence { job: id, epoch: 2 },
        )
        .unwrap();
        assert_eq!(jobs[&id], before);
        apply(
            &mut jobs,
            &mut next,
            JobCommand::Ready { job: id, epoch: 2 },
        )
        .unwrap();
        let done = |node| JobCommand::HostDone {
            job: id,
            epoch: 2,
            node,
        };
        apply(&mut jobs, &mut next, done(2)).unwrap();
        apply(&mut jobs, &mut next, done(3)).unwrap();
        assert!(jobs[&id].hosts().is_subset(&jobs[&id].done_hosts));
        let fin = JobCommand::Finish {
            job: id,
            epoch: 2,
            end: RunEnd::Succeeded(JobResult::default()),
            at_ms: 4,
        };
        apply(&mut jobs, &mut next, fin).unwrap();
        assert_eq!(jobs[&id].state, JobState::Succeeded);
        assert_eq!(
            apply(
                &mut jobs,
                &mut next,
                JobCommand::Cancel { job: id, at_ms: 5 }
            ),
            Err(Refusal::Ended {
                job: id,
                state: JobState::Succeeded
            })
        );
        assert!(matches!(
            apply(
                &mut jobs,
                &mut next,
                JobCommand::Resume { job: id, at_ms: 5 }
            ),
            Err(Refusal::NotResumable { .. })
        ));
    }

    #[test]
    fn a_run_replaced_before_its_first_clock_counts_as_a_recovery() {
        let (mut jobs, mut next) = (BTreeMap::new(), 1);
        let id = submit(&mut jobs, &mut next);
        let assign = |placement: Vec<u64>, epoch| assign(id, placement, epoch);
        apply(&mut jobs, &mut next, assign(vec![1, 2], 0)).unwrap();
        assert_eq!(jobs[&id].recoveries, 0);
        // No progress, no checkpoint: the run still existed and was lost.
        apply(&mut jobs, &mut next, assign(vec![2, 3], 1)).unwrap();
        apply(&mut jobs, &mut next, assign(vec![3, 1], 2)).unwrap();
        let r = &jobs[&id];
        assert_eq!(
            (r.recoveries, r.epoch, r.state),
            (2, 3, JobState::Recovering)
        );
    }

    #[test]
    fn release_cancel_and_resume() {
        let (mut jobs, mut next) = (BTreeMap::new(), 1);
        let id = submit(&mut jobs, &mut next);
        apply(
            &mut jobs,
            &mut next,
            JobCommand::Cancel { job: id, at_ms: 1 },
        )
        .unwrap();
        assert_eq!(jobs[&id].state, JobState::Cancelled);
        let id = submit(&mut jobs, &mut next);
        apply(
            &mut jobs,
            &mut next,
            JobCommand::Assign {
                job: id,
                placement: vec![1, 2],
                epoch: 0,
                reason: "t".into(),
                at_ms: 1,
            },
        )
        .unwrap();
        apply(
            &mut jobs,
            &mut next,
            JobCommand::Release {
                job: id,
                epoch: 1,
                node: 2,
                reason: "node 2 is stopping".into(),
                at_ms: 2,
            },
        )
        .unwrap();
        let r = &jobs[&id];
        assert_eq!((r.state, r.host, r.epoch), (JobState::Recovering, None, 2));
        apply(
            &mut jobs,
            &mut next,
            JobCommand::Pause {
                job: id,
                epoch: 2,
                reason: "1 of 3 nodes up".into(),
                at_ms: 1,
            },
        )
        .unwrap();
        assert_eq!(jobs[&id].state, JobState::Paused);
        apply(
            &mut jobs,
            &mut next,
            JobCommand::Resume { job: id, at_ms: 2 },
        )
        .unwrap();
        assert_eq!(jobs[&id].state, JobState::Recovering);
        let refused = apply(
            &mut jobs,
            &mut next,
            JobCommand::Resume { job: 99, at_ms: 2 },
        );
        assert_eq!(refused, Err(Refusal::NoSuchJob(99)));
        // The message is the one clients have always seen.
        assert_eq!(refused.unwrap_err().to_string(), "job 99 not found");
    }
}
