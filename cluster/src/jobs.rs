//! Job records in the metadata group (design.md §6, docs/jobs.md): what
//! was submitted, where it runs, its state, newest complete checkpoint and
//! progress. Every change is a [`JobCommand`] committed through Raft, so
//! any node answers `status` and a new metadata leader knows every job.
//!
//! Lifecycle: `submitted → running → (recovering → running)* →
//! succeeded | failed | cancelled | paused`. Each assignment of a job to a
//! host bumps its `epoch`; reports carry the epoch they were made under,
//! and a report from an older epoch (a host presumed dead that was not)
//! is refused, so it cannot overwrite the state of the current run.

use petuum_core::types::Clock;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// The node running the job's workers now.
    pub host: Option<u64>,
    /// Bumped by every assignment; reports from older epochs are refused.
    pub epoch: u64,
    /// Clocks finished at the newest complete checkpoint.
    pub checkpoint: Option<Clock>,
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

    fn check_epoch(&self, epoch: u64) -> Result<(), String> {
        if epoch != self.epoch {
            return Err(format!(
                "job {}: report of epoch {epoch}, but the job is at epoch {} (reassigned)",
                self.id, self.epoch
            ));
        }
        if self.state.is_terminal() {
            return Err(format!("job {} is already {}", self.id, self.state.name()));
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
    /// Stopped at the checkpoint of `clock` (preemption of the host): the
    /// job moves to another node.
    Stopped {
        clock: Clock,
        reason: String,
    },
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
    /// Puts the job on `node` (compare-and-set on `epoch`): its supervisor
    /// there starts the workers, restoring the newest checkpoint if any.
    Assign {
        job: u64,
        node: u64,
        epoch: u64,
        reason: String,
        at_ms: u64,
    },
    /// Too few nodes to run on: wait (no host).
    Pause {
        job: u64,
        epoch: u64,
        reason: String,
        at_ms: u64,
    },
    Progress {
        job: u64,
        epoch: u64,
        progress: Progress,
    },
    /// Every part of the checkpoint at `clock` is durable.
    Checkpoint {
        job: u64,
        epoch: u64,
        clock: Clock,
        at_ms: u64,
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
pub fn apply(
    jobs: &mut BTreeMap<u64, JobRecord>,
    next_id: &mut u64,
    cmd: JobCommand,
) -> Result<u64, String> {
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
                return Err("a job needs at least one worker".into());
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
                epoch: 0,
                checkpoint: None,
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
            jobs.insert(id, r);
            Ok(id)
        }
        JobCommand::Assign {
            job,
            node,
            epoch,
            reason,
            at_ms,
        } => {
            let r = record(jobs, job)?;
            if r.epoch != epoch {
                return Err(format!(
                    "job {job}: assignment for epoch {epoch}, but the job is at epoch {}",
                    r.epoch
                ));
            }
            if r.state.is_terminal() {
                return Err(format!("job {job} is already {}", r.state.name()));
            }
            if r.cancel_requested {
                return Err(format!("job {job} is being cancelled"));
            }
            let restart = r.progress.is_some() || r.checkpoint.is_some();
            if restart && r.epoch > 0 {
                r.recoveries += 1;
            }
            r.epoch += 1;
            r.host = Some(node);
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
            r.event(
                at_ms,
                format!("epoch {}: on node {node} {from} ({reason})", r.epoch),
            );
            Ok(r.epoch)
        }
        JobCommand::Pause {
            job,
            epoch,
            reason,
            at_ms,
        } => {
            let r = record(jobs, job)?;
            r.check_epoch(epoch)?;
            r.host = None;
            r.epoch += 1;
            r.state = JobState::Paused;
            r.event(at_ms, format!("paused: {reason}"));
            Ok(r.epoch)
        }
        JobCommand::Progress {
            job,
            epoch,
            progress,
        } => {
            let r = record(jobs, job)?;
            r.check_epoch(epoch)?;
            if r.state == JobState::Recovering {
                r.state = JobState::Running;
            }
            r.history.push(progress.clone());
            if r.history.len() > HISTORY {
                let excess = r.history.len() - HISTORY;
                r.history.drain(..excess);
            }
            r.progress = Some(progress);
            Ok(r.epoch)
        }
        JobCommand::Checkpoint {
            job,
            epoch,
            clock,
            at_ms,
        } => {
            let r = record(jobs, job)?;
            r.check_epoch(epoch)?;
            if r.checkpoint.is_some_and(|c| c > clock) {
                return Err(format!(
                    "job {job}: checkpoint at clock {clock} is older than the recorded {}",
                    r.checkpoint.unwrap_or(0)
                ));
            }
            r.checkpoint = Some(clock);
            r.event(at_ms, format!("checkpoint complete at clock {clock}"));
            Ok(r.epoch)
        }
        JobCommand::Finish {
            job,
            epoch,
            end,
            at_ms,
        } => {
            let r = record(jobs, job)?;
            r.check_epoch(epoch)?;
            match end {
                RunEnd::Succeeded(res) => {
                    r.state = JobState::Succeeded;
                    r.event(
                        at_ms,
                        format!(
                            "succeeded in {:.1}s: objective {:.6}, model {} bytes",
                            res.seconds, res.objective, res.model_bytes
                        ),
                    );
                    r.result = Some(res);
                    r.finished_ms = Some(at_ms);
                    r.host = None;
                }
                RunEnd::Failed(e) => {
                    r.state = JobState::Failed;
                    r.event(at_ms, format!("failed: {e}"));
                    r.error = Some(e);
                    r.finished_ms = Some(at_ms);
                    r.host = None;
                }
                RunEnd::Cancelled => {
                    r.state = JobState::Cancelled;
                    r.event(at_ms, "cancelled");
                    r.finished_ms = Some(at_ms);
                    r.host = None;
                }
                RunEnd::Stopped { clock, reason } => {
                    r.checkpoint = Some(clock);
                    r.state = JobState::Recovering;
                    r.event(
                        at_ms,
                        format!("stopped at the checkpoint of clock {clock}: {reason}"),
                    );
                    r.host = None;
                }
                RunEnd::Interrupted(reason) => {
                    r.state = JobState::Recovering;
                    r.event(at_ms, format!("interrupted: {reason}"));
                    r.host = None;
                }
            }
            r.epoch += 1;
            Ok(r.epoch)
        }
        JobCommand::Cancel { job, at_ms } => {
            let r = record(jobs, job)?;
            if r.state.is_terminal() {
                return Err(format!("job {job} is already {}", r.state.name()));
            }
            if r.host.is_some() {
                r.cancel_requested = true;
                r.event(at_ms, "cancel requested");
            } else {
                r.state = JobState::Cancelled;
                r.epoch += 1;
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
                    r.host = None;
                    r.error = None;
                    r.finished_ms = None;
                    r.epoch += 1;
                    r.event(at_ms, "resume requested");
                    Ok(r.epoch)
                }
                s => Err(format!(
                    "job {job} is {}: only a paused or failed job can be resumed",
                    s.name()
                )),
            }
        }
    }
}

fn record(jobs: &mut BTreeMap<u64, JobRecord>, job: u64) -> Result<&mut JobRecord, String> {
    jobs.get_mut(&job)
        .ok_or_else(|| format!("job {job} not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(jobs: &mut BTreeMap<u64, JobRecord>, next: &mut u64) -> u64 {
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

    #[test]
    fn lifecycle_with_recovery_and_fencing() {
        let (mut jobs, mut next) = (BTreeMap::new(), 1);
        let id = submit(&mut jobs, &mut next);
        assert_eq!((id, jobs[&id].first_table, next), (1, 2, 4));
        let assign = |node, epoch| JobCommand::Assign {
            job: id,
            node,
            epoch,
            reason: "test".into(),
            at_ms: 2,
        };
        assert_eq!(apply(&mut jobs, &mut next, assign(1, 0)), Ok(1));
        assert_eq!(jobs[&id].state, JobState::Running);
        // A stale assignment is refused.
        assert!(apply(&mut jobs, &mut next, assign(2, 0)).is_err());
        let ckpt = JobCommand::Checkpoint {
            job: id,
            epoch: 1,
            clock: 5,
            at_ms: 3,
        };
        apply(&mut jobs, &mut next, ckpt).unwrap();
        // Host 1 lost: reassigned, recovering from the checkpoint.
        assert_eq!(apply(&mut jobs, &mut next, assign(2, 1)), Ok(2));
        let r = &jobs[&id];
        assert_eq!(
            (r.state, r.host, r.checkpoint, r.recoveries),
            (JobState::Recovering, Some(2), Some(5), 1)
        );
        // The old host's late report is fenced off.
        let late = JobCommand::Progress {
            job: id,
            epoch: 1,
            progress: Progress::default(),
        };
        assert!(apply(&mut jobs, &mut next, late)
            .unwrap_err()
            .contains("epoch"));
        let p = JobCommand::Progress {
            job: id,
            epoch: 2,
            progress: Progress {
                clock: 6,
                ..Default::default()
            },
        };
        apply(&mut jobs, &mut next, p).unwrap();
        assert_eq!(jobs[&id].state, JobState::Running);
        let done = JobCommand::Finish {
            job: id,
            epoch: 2,
            end: RunEnd::Succeeded(JobResult::default()),
            at_ms: 4,
        };
        apply(&mut jobs, &mut next, done).unwrap();
        assert_eq!(jobs[&id].state, JobState::Succeeded);
        assert!(apply(
            &mut jobs,
            &mut next,
            JobCommand::Cancel { job: id, at_ms: 5 }
        )
        .is_err());
        assert!(apply(
            &mut jobs,
            &mut next,
            JobCommand::Resume { job: id, at_ms: 5 }
        )
        .is_err());
    }

    #[test]
    fn cancel_and_resume() {
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
            JobCommand::Pause {
                job: id,
                epoch: 0,
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
        assert!(apply(
            &mut jobs,
            &mut next,
            JobCommand::Resume { job: 99, at_ms: 2 }
        )
        .unwrap_err()
        .contains("not found"));
    }
}
