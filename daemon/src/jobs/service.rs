//! `petuum.v1.Jobs`: the client API, served by every node.

use super::{now_ms, Jobs, TABLES_PER_JOB};
use futures::Stream;
use petuum_cluster::jobs::{JobCommand, JobRecord};
use petuum_cluster::meta::{MetaAnswer, MetaCommand};
use petuum_cluster::wire::{DataError, Refusal};
use petuum_core::spec::JobSpec;
use petuum_proto::v1::jobs_server::{Jobs as JobsApi, JobsServer};
use petuum_proto::v1::{
    DatasetInfo, DatasetList, DatasetRef, JobAction, JobInfo, JobRef, ListReply, ListRequest,
    LogLine, LogsReply, ModelChunk, SubmitRequest, UploadChunk, UploadRef, UploadState,
};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// The service, ready for [`petuum_cluster::server::serve`]'s routes.
pub fn routes(jobs: Arc<Jobs>) -> tonic::service::Routes {
    let guard = petuum_cluster::server::guard(&jobs.node, petuum_cluster::auth::Door::Client);
    let ingests = crate::datasets::Ingests::new(jobs.node.config.datasets.max_ingests);
    // Uploads a previous life of this node was receiving: kept again for
    // their clients to resume.
    tokio::spawn(ingests.uploads.clone().restore(jobs.node.clone()));
    tonic::service::Routes::new(tonic::service::interceptor::InterceptedService::new(
        JobsServer::new(JobsSvc { ingests, jobs })
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(64 << 20),
        guard,
    ))
}

struct JobsSvc {
    jobs: Arc<Jobs>,
    ingests: crate::datasets::Ingests,
}

/// A job record as the API shows it.
pub fn info(r: &JobRecord) -> JobInfo {
    let p = r.progress.clone().unwrap_or_default();
    let curve = curve(&r.history, CURVE_POINTS);
    let res = r.result.clone().unwrap_or_default();
    JobInfo {
        id: r.id,
        name: r.name.clone(),
        algorithm: r.algorithm.clone(),
        state: r.state.name().to_string(),
        host: r.host.unwrap_or(0),
        epoch: r.epoch,
        clock: p.clock,
        clocks: r.clocks,
        objective: if r.result.is_some() {
            res.objective
        } else {
            p.objective
        },
        throughput: p.throughput,
        elapsed_s: p.elapsed_s,
        has_checkpoint: r.checkpoint.is_some(),
        checkpoint: r.checkpoint.unwrap_or(0),
        recoveries: r.recoveries,
        error: r.error.clone().unwrap_or_default(),
        model_bytes: res.model_bytes,
        metrics: res.metrics.into_iter().collect(),
        submitted_ms: r.submitted_ms,
        finished_ms: r.finished_ms.unwrap_or(0),
        workers: r.workers,
        seconds: res.seconds,
        cancel_requested: r.cancel_requested,
        has_progress: r.progress.is_some(),
        placement: r.placement.clone(),
        curve_clocks: curve.iter().map(|h| h.clock).collect(),
        curve_objective: curve.iter().map(|h| h.objective).collect(),
        clock_metrics: p.metrics.into_iter().collect(),
    }
}

/// Points of the objective's curve a job's info carries.
const CURVE_POINTS: usize = 40;

/// At most `n` samples of `history`, evenly spread, the first and the
/// last included.
fn curve(
    history: &[petuum_cluster::jobs::Progress],
    n: usize,
) -> Vec<&petuum_cluster::jobs::Progress> {
    if history.len() <= n {
        return history.iter().collect();
    }
    let last = history.len() - 1;
    (0..n).map(|i| &history[i * last / (n - 1)]).collect()
}

fn status_of(e: DataError) -> Status {
    match e {
        DataError::Refused(r @ Refusal::NoSuchJob(_)) => Status::not_found(r.to_string()),
        DataError::Refused(r) => Status::failed_precondition(r.to_string()),
        other => Status::unavailable(other.to_string()),
    }
}

/// How long a submission with an id waits for the metadata group.
const SUBMIT_FOR: Duration = Duration::from_secs(30);

/// How often a `watch` stream on a node without a metadata replica reads
/// the metadata again (one with a replica awaits its changes).
const WATCH_POLL: Duration = Duration::from_millis(200);

impl JobsSvc {
    async fn record(&self, job: u64) -> Result<Arc<JobRecord>, Status> {
        self.jobs
            .node
            .meta_job_linear(job)
            .await
            .map_err(status_of)?
            .ok_or_else(|| Status::not_found(format!("job {job} not found")))
    }

    /// [`command`](Self::command) for a submission: a refusal of the spec
    /// itself (a dataset not in the store) is the submitter's error. A
    /// submission with the client's id may be sent again safely, so it is
    /// retried while the metadata group cannot take it (an election after
    /// its leader died) for up to [`SUBMIT_FOR`].
    async fn command_as(
        &self,
        origin: &str,
        cmd: JobCommand,
        request: &str,
    ) -> Result<u64, Status> {
        let cmd = if request.is_empty() {
            MetaCommand::Job(cmd)
        } else {
            MetaCommand::SubmitOnce {
                request: request.to_string(),
                submit: cmd,
            }
        };
        match self.meta_once(cmd, !request.is_empty()).await {
            Err(s) if s.code() == tonic::Code::FailedPrecondition => Err(Status::invalid_argument(
                format!("{origin}: {}", s.message()),
            )),
            r => r,
        }
    }

    /// A cancel, resume or delete under its client's id (`request`, may be
    /// empty): applied once however often it is sent (`MetaCommand::JobOnce`).
    async fn job_once(&self, cmd: JobCommand, request: &str) -> Result<u64, Status> {
        let retry = !request.is_empty();
        self.meta_once(MetaCommand::job_action(cmd, request), retry)
            .await
    }

    /// A metadata command; one under a client's id (`retry`, applied once
    /// however often it arrives) is sent again while the metadata group
    /// does not answer, for up to `SUBMIT_FOR`.
    async fn meta_once(&self, cmd: MetaCommand, retry: bool) -> Result<u64, Status> {
        let mut attempts = petuum_cluster::retry::Retry::META
            .within(SUBMIT_FOR)
            .start();
        loop {
            match self.meta(cmd.clone()).await {
                Err(s) if retry && s.code() == tonic::Code::Unavailable && !attempts.expired() => {
                    tracing::debug!(error = %s.message(), "the metadata group is not answering; again");
                    attempts.wait().await;
                }
                r => return r,
            }
        }
    }

    /// A metadata command whose answer is a job id (or a job's value).
    async fn meta(&self, cmd: MetaCommand) -> Result<u64, Status> {
        match self.jobs.node.meta_command(cmd).await.map_err(status_of)? {
            MetaAnswer::Job(v) => Ok(v),
            other => Err(Status::internal(format!("unexpected answer {other:?}"))),
        }
    }
}

type InfoStream = Pin<Box<dyn Stream<Item = Result<JobInfo, Status>> + Send>>;
type ChunkStream = Pin<Box<dyn Stream<Item = Result<ModelChunk, Status>> + Send>>;

#[tonic::async_trait]
impl JobsApi for JobsSvc {
    async fn submit(&self, req: Request<SubmitRequest>) -> Result<Response<JobInfo>, Status> {
        let req = req.into_inner();
        let origin = if req.origin.is_empty() {
            "job spec".to_string()
        } else {
            req.origin.clone()
        };
        crate::uploads::check_client_id("request_id", &req.request_id)?;
        // A submission sent again (its answer was lost) is answered with
        // the job it made, before anything of it is checked or fetched
        // again: a check that fails now (a URL down, a dataset removed
        // since) must not turn a recorded job into an error.
        if !req.request_id.is_empty() {
            let id = &req.request_id;
            let made = self
                .jobs
                .node
                .meta_view(|m| {
                    m.requests
                        .get(id)
                        .and_then(|j| m.jobs.get(j))
                        .map(|r| info(r))
                })
                .await
                .map_err(status_of)?;
            if let Some(job) = made {
                return Ok(Response::new(job));
            }
        }
        let mut spec = JobSpec::parse(&req.spec_toml, &origin)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        petuum_algorithms::apply_defaults(&mut spec);
        let base = Path::new(&req.base_dir);
        if !base.is_absolute() {
            return Err(Status::invalid_argument(format!(
                "{origin}: base_dir `{}` must be an absolute path (relative paths in the spec are resolved against it)",
                req.base_dir
            )));
        }
        spec.resolve_paths(base);
        // URLs are fetched into the dataset store now (every node then
        // reads the same bytes); datasets named must be in the store.
        crate::datasets::store_urls(&self.jobs.node, &self.ingests, &mut spec)
            .await
            .map_err(|e| Status::new(e.code(), format!("{origin}: {}", e.message())))?;
        crate::datasets::check_refs(&spec)
            .map_err(|e| Status::invalid_argument(format!("{origin}: {e}")))?;
        // Data only from the directories node.toml allows.
        self.jobs
            .node
            .config
            .check_data_paths(spec.data_files())
            .map_err(|e| Status::invalid_argument(format!("{origin}: {e}")))?;
        // The server checks again what the client checked: fields, the
        // algorithm's hyperparameters, and that the data files exist here.
        petuum_algorithms::validate(&spec)
            .map_err(|e| Status::invalid_argument(format!("{origin}: {e}")))?;
        let body = serde_json::to_string(&spec).map_err(|e| Status::internal(e.to_string()))?;
        let id = self
            .command_as(
                &origin,
                JobCommand::Submit {
                    name: spec.name.clone(),
                    algorithm: spec.algorithm.clone(),
                    spec: body,
                    workers: spec.run.workers,
                    clocks: spec.clocks(),
                    tables: TABLES_PER_JOB,
                    at_ms: now_ms(),
                },
                &req.request_id,
            )
            .await?;
        tracing::info!(job = id, name = %spec.name, algorithm = %spec.algorithm, "job submitted");
        Ok(Response::new(info(&*self.record(id).await?)))
    }

    async fn get(&self, req: Request<JobRef>) -> Result<Response<JobInfo>, Status> {
        Ok(Response::new(info(&*self.record(req.get_ref().job).await?)))
    }

    async fn list(&self, _req: Request<ListRequest>) -> Result<Response<ListReply>, Status> {
        let jobs = self
            .jobs
            .node
            .meta_view_linear(|m| m.jobs.values().map(|r| info(r)).collect())
            .await
            .map_err(status_of)?;
        Ok(Response::new(ListReply { jobs }))
    }

    async fn cancel(&self, req: Request<JobAction>) -> Result<Response<JobInfo>, Status> {
        let JobAction { job, request_id } = req.into_inner();
        crate::uploads::check_client_id("request_id", &request_id)?;
        let cmd = JobCommand::Cancel {
            job,
            at_ms: now_ms(),
        };
        self.job_once(cmd, &request_id).await?;
        let r = self.record(job).await?;
        Ok(Response::new(info(&r)))
    }

    async fn delete(&self, req: Request<JobAction>) -> Result<Response<JobInfo>, Status> {
        let JobAction { job, request_id } = req.into_inner();
        crate::uploads::check_client_id("request_id", &request_id)?;
        let r = match self.record(job).await {
            Ok(r) => r,
            // Sent again after its first attempt deleted the job (the
            // answer was lost): the metadata kept the delete's id, and
            // applying it again changes nothing and answers. Any other
            // id: no such job, as before.
            Err(s) if s.code() == tonic::Code::NotFound && !request_id.is_empty() => {
                self.job_once(JobCommand::Delete { job }, &request_id)
                    .await?;
                return Ok(Response::new(JobInfo {
                    id: job,
                    state: "deleted".into(),
                    ..Default::default()
                }));
            }
            Err(s) => return Err(s),
        };
        if !r.state.is_terminal() {
            return Err(Status::failed_precondition(format!(
                "job {job} is {}: only an ended job can be deleted (cancel it first)",
                r.state.name()
            )));
        }
        // Answered once this node's metadata replica applied the delete
        // (`meta_command`): a read through this node finds no record.
        self.jobs
            .delete(job, &request_id)
            .await
            .map_err(Status::unavailable)?;
        Ok(Response::new(info(&r)))
    }

    async fn resume(&self, req: Request<JobAction>) -> Result<Response<JobInfo>, Status> {
        let JobAction { job, request_id } = req.into_inner();
        crate::uploads::check_client_id("request_id", &request_id)?;
        let cmd = JobCommand::Resume {
            job,
            at_ms: now_ms(),
        };
        self.job_once(cmd, &request_id).await?;
        let r = self.record(job).await?;
        Ok(Response::new(info(&r)))
    }

    type WatchStream = InfoStream;

    async fn watch(&self, req: Request<JobRef>) -> Result<Response<InfoStream>, Status> {
        let job = req.get_ref().job;
        // Changes after the first read are not missed: marked seen before.
        let mut changes = self.jobs.node.meta_changes(WATCH_POLL);
        changes.take();
        // Fail at once for an unknown job.
        let first = self.record(job).await?;
        let node = self.jobs.node.clone();
        let stream = futures::stream::unfold(
            (Some(first), None::<JobInfo>, false, changes),
            move |(pending, last, ended, mut changes)| {
                let node = node.clone();
                async move {
                    if ended {
                        return None;
                    }
                    let mut pending = pending;
                    loop {
                        let r = match pending.take() {
                            Some(r) => r,
                            None => {
                                // The next change of the metadata (polled
                                // without a local replica).
                                changes.wait(WATCH_POLL).await;
                                if !changes.take() {
                                    continue;
                                }
                                match node.meta_job_linear(job).await {
                                    Ok(rec) => match rec {
                                        Some(r) => r,
                                        None => {
                                            return Some((
                                                Err(Status::not_found(format!(
                                                    "job {job} not found"
                                                ))),
                                                (None, last, true, changes),
                                            ))
                                        }
                                    },
                                    // The metadata group is electing, or no
                                    // leader confirmed the read: read again
                                    // after the next wait, change or not.
                                    Err(_) => {
                                        changes.again();
                                        continue;
                                    }
                                }
                            }
                        };
                        let i = info(&r);
                        if last.as_ref() == Some(&i) {
                            continue;
                        }
                        let done = r.state.is_terminal();
                        return Some((Ok(i.clone()), (None, Some(i), done, changes)));
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn logs(&self, req: Request<JobRef>) -> Result<Response<LogsReply>, Status> {
        let r = self.record(req.get_ref().job).await?;
        let mut lines: Vec<LogLine> = r
            .events
            .iter()
            .map(|e| LogLine {
                at_ms: e.at_ms,
                text: e.text.clone(),
            })
            .collect();
        lines.extend(r.history.iter().map(|p| LogLine {
            at_ms: p.at_ms,
            text: format!(
                "clock {}/{}: objective {:.6}, {:.0} samples/s, {:.1}s{}",
                p.clock,
                r.clocks,
                p.objective,
                p.throughput,
                p.elapsed_s,
                petuum_core::runner::metrics_suffix(
                    p.metrics.iter().map(|(k, v)| (k.as_str(), *v)),
                    "  ",
                )
            ),
        }));
        lines.sort_by_key(|l| l.at_ms);
        Ok(Response::new(LogsReply { lines }))
    }

    type ModelStream = ChunkStream;

    async fn model(&self, req: Request<JobRef>) -> Result<Response<ChunkStream>, Status> {
        let job = req.get_ref().job;
        let r = self.record(job).await?;
        if r.result.is_none() {
            return Err(Status::failed_precondition(format!(
                "job {job} is {}: a model exists once it has succeeded",
                r.state.name()
            )));
        }
        let bytes = self
            .jobs
            .model_bytes(job)
            .await
            .map_err(Status::unavailable)?;
        let chunks: Vec<ModelChunk> = bytes
            .chunks(1 << 20)
            .map(|c| ModelChunk { data: c.to_vec() })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(
            chunks.into_iter().map(Ok),
        ))))
    }

    async fn dataset_stat(
        &self,
        req: Request<DatasetRef>,
    ) -> Result<Response<DatasetInfo>, Status> {
        let sha = &req.get_ref().sha256;
        let (rec, used) = self
            .jobs
            .node
            .meta_view_linear(|m| {
                m.datasets
                    .get(sha)
                    .map(|r| (r.clone(), petuum_cluster::datasets::users(&m.jobs, sha)))
            })
            .await
            .map_err(status_of)?
            .ok_or_else(|| Status::not_found(format!("no dataset sha256:{sha}")))?;
        Ok(Response::new(crate::datasets::info(&rec, used)))
    }

    async fn upload(
        &self,
        req: Request<tonic::Streaming<UploadChunk>>,
    ) -> Result<Response<DatasetInfo>, Status> {
        let rec = crate::uploads::upload(&self.jobs.node, &self.ingests, req.into_inner()).await?;
        tracing::info!(dataset = %rec.sha256, name = %rec.name, bytes = rec.size, "dataset uploaded");
        Ok(Response::new(crate::datasets::info(&rec, Vec::new())))
    }

    async fn upload_offset(
        &self,
        req: Request<UploadRef>,
    ) -> Result<Response<UploadState>, Status> {
        let (received, finishing) = self
            .ingests
            .uploads
            .offset(&req.get_ref().upload_id)
            .await?;
        Ok(Response::new(UploadState {
            received,
            finishing,
        }))
    }

    async fn datasets(&self, _req: Request<ListRequest>) -> Result<Response<DatasetList>, Status> {
        let datasets = self
            .jobs
            .node
            .meta_view_linear(|m| {
                m.datasets
                    .values()
                    .map(|r| {
                        crate::datasets::info(
                            r,
                            petuum_cluster::datasets::users(&m.jobs, &r.sha256),
                        )
                    })
                    .collect()
            })
            .await
            .map_err(status_of)?;
        Ok(Response::new(DatasetList { datasets }))
    }

    async fn remove_dataset(
        &self,
        req: Request<DatasetRef>,
    ) -> Result<Response<DatasetInfo>, Status> {
        let sha = req.get_ref().sha256.clone();
        let rec = self
            .jobs
            .node
            .meta_dataset(&sha)
            .await
            .map_err(status_of)?
            .ok_or_else(|| Status::not_found(format!("no dataset sha256:{sha}")))?;
        let cmd = MetaCommand::Dataset(petuum_cluster::datasets::DatasetCommand::Remove {
            sha256: sha.clone(),
            only_staged: false,
        });
        self.jobs.node.meta_command(cmd).await.map_err(status_of)?;
        tracing::info!(dataset = %sha, name = %rec.name, "dataset removed");
        Ok(Response::new(crate::datasets::info(&rec, Vec::new())))
    }
}
