//! `petuum-client`: talks to a petuum cluster: `validate` a job spec,
//! `nodes` (the cluster's nodes and Raft group leaders), and the job
//! commands (`submit`, `status`, `watch`, `list`, `cancel`, `resume`,
//! `logs`, `model`).

use clap::{Parser, Subcommand};
use petuum_client::{Client, ClientError, Credentials, JobInfo, Submission};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "petuum-client",
    version,
    about = "petuum client: submit and follow jobs on a petuum cluster",
    after_help = "Exit codes: 0 success; 1 the job failed or was cancelled (submit --wait, watch, status); 2 bad input (job spec, arguments, files); 3 the node is unreachable or refused; 4 no such job."
)]
struct Cli {
    /// A node of the cluster, or several separated by commas (tried in
    /// order until one accepts a connection).
    #[arg(
        long,
        global = true,
        env = "PETUUM_ENDPOINT",
        default_value = "http://127.0.0.1:7070"
    )]
    endpoint: String,
    /// Bearer token, when the cluster has a client_token_file.
    #[arg(long, global = true, env = "PETUUM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The cluster CA's certificate (PEM), for an https:// endpoint.
    #[arg(long, global = true, env = "PETUUM_CA")]
    ca: Option<PathBuf>,
    /// A client certificate signed by the cluster CA (PEM; `petuumd certs`
    /// makes one): a credential instead of the token.
    #[arg(long, global = true, env = "PETUUM_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// The key of --cert (PEM).
    #[arg(long, global = true, env = "PETUUM_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// Print JSON (one object per line) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// A change of membership (docs/cluster.md, "Growing, shrinking and
/// replacing nodes"). New nodes join by starting petuumd with `join`.
#[derive(Subcommand, Clone, Copy)]
enum NodeChange {
    /// Move the node's replicas, leaderships and job workers to other
    /// nodes; it stays a member holding nothing (`add` undoes it).
    Drain { node: u64 },
    /// Drain the node, then remove it from the cluster for good.
    Remove { node: u64 },
    /// Put a drained node back in service (replicas move back to it).
    Add { node: u64 },
}

#[derive(Subcommand)]
enum Command {
    /// Check a job spec as the server would, without submitting it.
    Validate { job: PathBuf },
    /// The cluster's nodes and who leads each Raft group (exit 1 when a
    /// group has no leader); `nodes drain|remove|add ID` changes a member.
    Nodes {
        #[command(subcommand)]
        change: Option<NodeChange>,
    },
    /// Submit a job spec (validated here, then by the server).
    /// Local data files are uploaded to the cluster's dataset store first
    /// (nothing is sent for bytes the cluster already has), so the nodes
    /// need not see this machine's files.
    Submit {
        job: PathBuf,
        /// Follow the job until it ends (as `watch`).
        #[arg(long)]
        wait: bool,
        /// Send data paths as they are: every node reads them itself
        /// (under its data_roots), e.g. from a shared file system.
        #[arg(long)]
        no_upload: bool,
    },
    /// The cluster's dataset store: put, ls, rm.
    #[command(subcommand)]
    Data(DataCommand),
    /// A job's state and progress.
    Status { job: u64 },
    /// Follow a job live until it ends (progress bar on a terminal).
    Watch { job: u64 },
    /// Every job the cluster knows.
    List,
    /// Cancel a job.
    Cancel { job: u64 },
    /// Delete an ended job: its record, checkpoints and model, on every
    /// node.
    Delete { job: u64 },
    /// Continue a paused or failed job from its newest checkpoint.
    Resume { job: u64 },
    /// A job's events and progress.
    Logs { job: u64 },
    /// Download a finished job's model.
    Model {
        job: u64,
        /// Where to write it.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Upload a file (nothing is sent when the cluster has its bytes);
    /// prints its name for job specs, `sha256:<hex>`.
    Put { file: PathBuf },
    /// The datasets of the store.
    Ls,
    /// Remove a dataset from every node (refused while a job that has not
    /// ended uses it).
    Rm {
        /// Its sha256 (or `sha256:<hex>`).
        dataset: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let creds = Credentials {
        token: cli.token.clone(),
        ca: cli.ca.clone(),
        cert: cli.cert.clone(),
        key: cli.key.clone(),
    };
    match cli.command {
        Command::Nodes { change } => nodes(&cli.endpoint, &creds, json, change),
        Command::Validate { job } => match petuum_client::load_job(&job) {
            Ok(spec) => {
                if json {
                    println!("{}", serde_json::json!({"valid": true, "spec": spec}));
                } else {
                    println!("{}: ok", job.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(json, &e),
        },
        cmd => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime");
            rt.block_on(jobs(&cli.endpoint, &creds, json, cmd))
        }
    }
}

/// A progress bar for uploads on a terminal (hashing, then sending),
/// hooked into the client; cleared when dropped.
fn upload_bar(json: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    Some(bar)
}

/// The full sha256 of a dataset named by a unique prefix (as `data ls`
/// shows them).
async fn resolve_sha(c: &mut Client, prefix: &str) -> Result<String, ClientError> {
    if prefix.len() == 64 {
        return Ok(prefix.to_string());
    }
    let matching: Vec<String> = c
        .datasets()
        .await?
        .into_iter()
        .map(|d| d.sha256)
        .filter(|s| !prefix.is_empty() && s.starts_with(prefix))
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ClientError::NotFound(format!("no dataset {prefix}"))),
        _ => Err(ClientError::Invalid(format!(
            "{prefix} names {} datasets: give more digits",
            matching.len()
        ))),
    }
}

fn short_sha(sha: &str) -> String {
    sha.chars().take(12).collect()
}

fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn dataset_json(d: &petuum_client::DatasetInfo) -> serde_json::Value {
    serde_json::json!({
        "sha256": d.sha256,
        "name": d.name,
        "size": d.size,
        "holders": d.holders,
        "ready": d.ready,
        "source": d.source,
        "created_ms": d.created_ms,
        "used_by": d.used_by,
    })
}

/// Prints a one-line reason and returns the error's exit code.
fn fail(json: bool, e: &ClientError) -> ExitCode {
    if json {
        println!(
            "{}",
            serde_json::json!({"error": e.to_string(), "exit_code": e.exit_code()})
        );
    }
    eprintln!("petuum-client: {e}");
    ExitCode::from(e.exit_code())
}

async fn jobs(endpoint: &str, creds: &Credentials, json: bool, cmd: Command) -> ExitCode {
    match run_jobs(endpoint, creds, json, cmd).await {
        Ok(code) => code,
        Err(e) => fail(json, &e),
    }
}

async fn run_jobs(
    endpoint: &str,
    creds: &Credentials,
    json: bool,
    cmd: Command,
) -> Result<ExitCode, ClientError> {
    // Refuse a bad spec before touching the network.
    let submission = match &cmd {
        Command::Submit { job, .. } => Some(Submission::prepare(job)?),
        _ => None,
    };
    let mut c = Client::connect_any(endpoint, creds).await?;
    let bar = upload_bar(json);
    if let Some(b) = bar.clone() {
        c.on_upload_progress(std::sync::Arc::new(
            move |phase: &str, path: &std::path::Path, done: u64, total: u64| {
                b.set_length(total);
                b.set_position(done);
                b.set_message(format!(
                    "{phase} {}",
                    path.file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default()
                ));
            },
        ));
    }
    let clear = || {
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
    };
    // An upload that loses its node says so, and where it goes on.
    let shown = bar.clone();
    c.on_switch(std::sync::Arc::new(move |s: &petuum_client::Switch| {
        let line = match s {
            petuum_client::Switch::Lost { endpoint, reason } => {
                format!("petuum-client: lost {endpoint} ({reason}); trying the cluster's nodes")
            }
            petuum_client::Switch::UploadResumed {
                endpoint,
                offset: 0,
                ..
            } => format!("petuum-client: uploading again from the start through {endpoint}"),
            petuum_client::Switch::UploadResumed {
                endpoint,
                offset,
                size,
            } => format!(
                "petuum-client: resuming the upload at byte {offset} of {size} through {endpoint}"
            ),
            petuum_client::Switch::Resumed { endpoint } => {
                format!("petuum-client: going on through {endpoint}")
            }
        };
        match &shown {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }));
    match cmd {
        Command::Submit {
            wait, no_upload, ..
        } => {
            let mut s = submission.expect("prepared above");
            if !no_upload {
                let uploaded = c.upload_data(&mut s).await;
                clear();
                for (field, up) in uploaded? {
                    if !json {
                        println!(
                            "{field}: {} ({}, {}) {}",
                            up.info.name,
                            human_bytes(up.info.size),
                            short_sha(&up.info.sha256),
                            if up.sent {
                                "uploaded"
                            } else {
                                "already in the cluster"
                            }
                        );
                    }
                }
            }
            let info = c.submit_prepared(&s).await?;
            if json {
                println!("{}", job_json(&info));
            } else {
                println!(
                    "job {} `{}` submitted ({})",
                    info.id, info.name, info.algorithm
                );
            }
            if wait {
                return watch(&mut c, info.id, json).await;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Data(DataCommand::Put { file }) => {
            let up = c.upload(&file).await;
            clear();
            let up = up?;
            if json {
                println!("{}", dataset_json(&up.info));
            } else {
                println!(
                    "sha256:{}  {} ({}, on nodes {:?}){}",
                    up.info.sha256,
                    up.info.name,
                    human_bytes(up.info.size),
                    up.info.holders,
                    if up.sent {
                        ""
                    } else {
                        ": already in the cluster, nothing sent"
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Data(DataCommand::Ls) => {
            let all = c.datasets().await?;
            if json {
                let v: Vec<_> = all.iter().map(dataset_json).collect();
                println!("{}", serde_json::Value::Array(v));
            } else if all.is_empty() {
                println!("no datasets");
            } else {
                println!(
                    "{:<14} {:<24} {:>10}  {:<10} {:<8} {:<12} SOURCE",
                    "SHA256", "NAME", "SIZE", "NODES", "STATE", "USED BY"
                );
                for d in &all {
                    println!(
                        "{:<14} {:<24} {:>10}  {:<10} {:<8} {:<12} {}",
                        short_sha(&d.sha256),
                        truncate(&d.name, 24),
                        human_bytes(d.size),
                        d.holders
                            .iter()
                            .map(|n| n.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                        if d.ready { "ready" } else { "staged" },
                        if d.used_by.is_empty() {
                            "-".to_string()
                        } else {
                            d.used_by
                                .iter()
                                .map(|n| n.to_string())
                                .collect::<Vec<_>>()
                                .join(",")
                        },
                        d.source
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Data(DataCommand::Rm { dataset }) => {
            let sha = dataset.strip_prefix("sha256:").unwrap_or(&dataset);
            let sha = resolve_sha(&mut c, sha).await?;
            let info = c.remove_dataset(&sha).await?;
            if json {
                println!("{}", dataset_json(&info));
            } else {
                println!("dataset {} ({}) removed", short_sha(&sha), info.name);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { job } => {
            let info = c.status(job).await?;
            if json {
                println!("{}", job_json(&info));
            } else {
                print_status(&info);
            }
            Ok(final_code(&info))
        }
        Command::Watch { job } => watch(&mut c, job, json).await,
        Command::List => {
            let jobs = c.list().await?;
            if json {
                let v: Vec<_> = jobs.iter().map(job_json).collect();
                println!("{}", serde_json::Value::Array(v));
            } else if jobs.is_empty() {
                println!("no jobs");
            } else {
                println!(
                    "{:>5}  {:<20} {:<20} {:<10} {:>13}  {:>5}",
                    "ID", "NAME", "ALGORITHM", "STATE", "CLOCK", "NODE"
                );
                for j in &jobs {
                    println!(
                        "{:>5}  {:<20} {:<20} {:<10} {:>13}  {:>5}",
                        j.id,
                        truncate(&j.name, 20),
                        truncate(&j.algorithm, 20),
                        j.state,
                        format!("{}/{}", j.clock, j.clocks),
                        if j.host == 0 {
                            "-".to_string()
                        } else {
                            j.host.to_string()
                        }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel { job } => {
            let info = c.cancel(job).await?;
            if json {
                println!("{}", job_json(&info));
            } else if info.state == "cancelled" {
                println!("job {job} cancelled");
            } else {
                println!("job {job}: cancel requested (its node stops it)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Delete { job } => {
            let info = c.delete(job).await?;
            if json {
                println!("{}", job_json(&info));
            } else {
                println!("job {job} deleted");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Resume { job } => {
            let info = c.resume(job).await?;
            if json {
                println!("{}", job_json(&info));
            } else {
                println!(
                    "job {job} resumes {}",
                    if info.has_checkpoint {
                        format!("from the checkpoint of clock {}", info.checkpoint)
                    } else {
                        "from clock 0 (no checkpoint)".to_string()
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs { job } => {
            let lines = c.logs(job).await?;
            for (at, text) in lines {
                if json {
                    println!("{}", serde_json::json!({"at_ms": at, "text": text}));
                } else {
                    println!("{}  {text}", fmt_time(at));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Model { job, output } => {
            let n = c.model(job, &output).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"job": job, "path": output.display().to_string(), "bytes": n})
                );
            } else {
                println!("wrote {} ({n} bytes)", output.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { .. } | Command::Nodes { .. } => unreachable!("handled in main"),
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('~');
        t
    }
}

/// UTC time of day of a ms timestamp.
fn fmt_time(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}

fn final_code(info: &JobInfo) -> ExitCode {
    match info.state.as_str() {
        "failed" | "cancelled" => {
            if !info.error.is_empty() {
                eprintln!("petuum-client: job {} failed: {}", info.id, info.error);
            } else {
                eprintln!("petuum-client: job {} {}", info.id, info.state);
            }
            ExitCode::from(1)
        }
        _ => ExitCode::SUCCESS,
    }
}

fn job_json(i: &JobInfo) -> serde_json::Value {
    let metrics: serde_json::Map<String, serde_json::Value> = i
        .metrics
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::json!(v)))
        .collect();
    serde_json::json!({
        "id": i.id,
        "name": i.name,
        "algorithm": i.algorithm,
        "state": i.state,
        "host": if i.host == 0 { serde_json::Value::Null } else { i.host.into() },
        "placement": i.placement,
        "epoch": i.epoch,
        "clock": i.clock,
        "clocks": i.clocks,
        "objective": if i.has_progress || i.state == "succeeded" { serde_json::json!(i.objective) } else { serde_json::Value::Null },
        "throughput": i.throughput,
        "elapsed_s": i.elapsed_s,
        "checkpoint": if i.has_checkpoint { i.checkpoint.into() } else { serde_json::Value::Null },
        "recoveries": i.recoveries,
        "error": if i.error.is_empty() { serde_json::Value::Null } else { i.error.clone().into() },
        "model_bytes": i.model_bytes,
        "metrics": metrics,
        "clock_metrics": i.clock_metrics,
        "workers": i.workers,
        "seconds": i.seconds,
        "submitted_ms": i.submitted_ms,
        "finished_ms": if i.finished_ms == 0 { serde_json::Value::Null } else { i.finished_ms.into() },
        "cancel_requested": i.cancel_requested,
        "curve": i.curve_clocks.iter().zip(&i.curve_objective)
            .map(|(c, o)| serde_json::json!({"clock": c, "objective": o}))
            .collect::<Vec<_>>(),
    })
}

/// The values as a one-line chart of block characters (low to high).
fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let lo = finite.clone().fold(f64::INFINITY, f64::min);
    let hi = finite.fold(f64::NEG_INFINITY, f64::max);
    values
        .iter()
        .map(|&v| {
            if !v.is_finite() {
                ' '
            } else if hi - lo <= 0.0 {
                BARS[3]
            } else {
                BARS[(((v - lo) / (hi - lo)) * 7.0).round() as usize]
            }
        })
        .collect()
}

fn print_status(i: &JobInfo) {
    println!(
        "job {} `{}` ({}, {} workers)",
        i.id, i.name, i.algorithm, i.workers
    );
    let host = if i.host == 0 {
        String::new()
    } else {
        format!(" on node {}", i.host)
    };
    println!("  state:      {}{host} (epoch {})", i.state, i.epoch);
    if !i.placement.is_empty() {
        let p: Vec<String> = i.placement.iter().map(|n| n.to_string()).collect();
        println!("  workers on: nodes {}", p.join(", "));
    }
    if i.has_progress {
        println!(
            "  progress:   clock {}/{}, objective {:.6}, {:.0} samples/s{}",
            i.clock,
            i.clocks,
            i.objective,
            i.throughput,
            clock_metrics(i)
        );
    } else {
        println!("  progress:   clock 0/{}", i.clocks);
    }
    if i.curve_objective.len() >= 2 {
        let (first, last) = (
            i.curve_objective[0],
            i.curve_objective[i.curve_objective.len() - 1],
        );
        println!(
            "  curve:      {first:.4} {} {last:.4} (objective, clocks {}-{})",
            sparkline(&i.curve_objective),
            i.curve_clocks[0],
            i.curve_clocks[i.curve_clocks.len() - 1]
        );
    }
    if i.has_checkpoint {
        println!("  checkpoint: clock {}", i.checkpoint);
    }
    println!("  recoveries: {}", i.recoveries);
    if i.state == "succeeded" {
        println!(
            "  result:     objective {:.6} in {:.1}s, model {} bytes",
            i.objective, i.seconds, i.model_bytes
        );
        let mut m: Vec<_> = i.metrics.iter().collect();
        m.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in m {
            println!("  {k}: {v:.4}");
        }
    }
    if !i.error.is_empty() {
        println!("  error:      {}", i.error);
    }
}

async fn watch(c: &mut Client, job: u64, json: bool) -> Result<ExitCode, ClientError> {
    use indicatif::{ProgressBar, ProgressStyle};
    use std::io::IsTerminal;
    let bar: Option<ProgressBar> = (!json && std::io::stderr().is_terminal()).then(|| {
        let b = ProgressBar::new(1);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} job {prefix} clock {pos}/{len} [{bar:30}] {msg} ({elapsed}, eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b.set_prefix(job.to_string());
        b
    });
    let shown = bar.clone();
    c.on_switch(std::sync::Arc::new(move |s: &petuum_client::Switch| {
        let line = match s {
            petuum_client::Switch::Lost { endpoint, reason } => {
                format!("petuum-client: lost {endpoint} ({reason}); trying the cluster's nodes")
            }
            petuum_client::Switch::Resumed { endpoint } => {
                format!("petuum-client: watching job {job} through {endpoint}")
            }
            petuum_client::Switch::UploadResumed { endpoint, .. } => {
                format!("petuum-client: uploading through {endpoint}")
            }
        };
        match &shown {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }));
    let mut last_state = String::new();
    let info = c
        .watch(job, |i| {
            if json {
                println!("{}", job_json(i));
                return;
            }
            if let Some(b) = &bar {
                b.set_length(i.clocks.max(1));
                b.set_position(i.clock);
                b.set_message(format!(
                    "{} | objective {:.4} | {:.0} samples/s{}",
                    i.state,
                    i.objective,
                    i.throughput,
                    clock_metrics(i)
                ));
            } else if i.state != last_state || i.has_progress {
                eprintln!(
                    "job {}: {} clock {}/{} objective {:.6} {:.0} samples/s{}{}",
                    i.id,
                    i.state,
                    i.clock,
                    i.clocks,
                    i.objective,
                    i.throughput,
                    clock_metrics(i),
                    if i.host == 0 {
                        String::new()
                    } else {
                        format!(" on node {}", i.host)
                    }
                );
            }
            last_state = i.state.clone();
        })
        .await?;
    if let Some(b) = &bar {
        b.finish();
    }
    if !json {
        print_status(&info);
    }
    Ok(final_code(&info))
}

fn nodes(endpoint: &str, creds: &Credentials, json: bool, change: Option<NodeChange>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("petuum-client: {e}");
            return ExitCode::from(2);
        }
    };
    let changing = change.is_some();
    let asked = match change {
        None => rt.block_on(petuum_client::first_reachable(endpoint, |ep| {
            petuum_client::cluster_status_with(ep, creds)
        })),
        Some(c) => {
            let (action, node) = match c {
                NodeChange::Drain { node } => ("drain", node),
                NodeChange::Remove { node } => ("remove", node),
                NodeChange::Add { node } => ("add", node),
            };
            let r = rt.block_on(petuum_client::first_reachable(endpoint, |ep| {
                petuum_client::membership(ep, creds, action, node)
            }));
            if r.is_ok() && !json {
                println!("node {node}: {action} recorded; replicas move in the background (watch `petuum-client nodes`)");
            }
            r
        }
    };
    let status = match asked {
        Ok(s) => s,
        Err(e) => return fail(json, &e),
    };
    let leaderless: Vec<u64> = status
        .groups
        .iter()
        .filter(|g| g.leader == 0)
        .map(|g| g.group)
        .collect();
    let leads = |n: u64| {
        status
            .groups
            .iter()
            .filter(|g| g.leader == n && g.group != 0)
            .count()
    };
    if json {
        let nodes: Vec<_> = status
            .nodes
            .iter()
            .map(|n| serde_json::json!({"id": n.id, "addr": n.addr, "state": n.state, "retiring": n.retiring, "replicas": n.replicas, "preferred": n.preferred, "leads": leads(n.id)}))
            .collect();
        let groups: Vec<_> = status
            .groups
            .iter()
            .map(|g| serde_json::json!({"group": g.group, "leader": g.leader, "term": g.term, "applied": g.last_applied, "last_log": g.last_log, "purged": g.purged, "voters": g.voters, "state": g.state}))
            .collect();
        let placement: Vec<_> = status
            .placement
            .iter()
            .map(|r| serde_json::json!({"shard": r.shard, "nodes": r.nodes}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"cluster": format!("{:016x}", status.cluster), "answered_by": status.node, "shards": status.shards, "replicas": status.replicas, "nodes": nodes, "groups": groups, "leaderless": leaderless, "placement": placement, "meta_voters": status.meta_voters})
        );
    } else {
        println!(
            "cluster {:016x}: {} nodes, {} shards x {} replicas (as node {} sees it)",
            status.cluster,
            status.nodes.len(),
            status.shards,
            status.replicas,
            status.node
        );
        for n in &status.nodes {
            let state = if n.retiring.is_empty() {
                n.state.clone()
            } else {
                format!("{}, {}", n.state, n.retiring)
            };
            println!(
                "  node {:>3}  {:<22} {:<18} holds {:>3} replicas, leads {} shard groups",
                n.id,
                n.addr,
                state,
                n.replicas,
                leads(n.id)
            );
        }
        match status.groups.iter().find(|g| g.group == 0) {
            Some(m) if m.leader != 0 => println!("  metadata group led by node {}", m.leader),
            Some(_) => println!("  metadata group: no leader"),
            None => {}
        }
        if leaderless.is_empty() {
            println!("  every group on node {} has a leader", status.node);
        } else {
            println!("  groups without a leader: {leaderless:?}");
        }
    }
    // A recorded change succeeded whatever the cluster's health as the
    // answering node sees it (a group may be electing a leader just
    // then): exit 1 would tell a script the change was not made. A plain
    // `nodes` is a health check: a group without a leader fails it.
    if leaderless.is_empty() || changing {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "petuum-client: groups without a leader on node {}: {leaderless:?}",
            status.node
        );
        ExitCode::from(1)
    }
}

/// A job's clock metrics as `, name value` pairs, sorted by name.
fn clock_metrics(i: &JobInfo) -> String {
    let mut m: Vec<(&str, f64)> = i
        .clock_metrics
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    m.sort_by(|a, b| a.0.cmp(b.0));
    petuum_core::runner::metrics_suffix(m.into_iter(), ", ")
}

#[cfg(test)]
mod tests {
    use super::sparkline;

    #[test]
    fn a_sparkline_spans_the_lowest_to_the_highest_bar() {
        assert_eq!(sparkline(&[3.0, 1.0, 2.0]), "█▁▅");
        assert_eq!(sparkline(&[5.0, 5.0]), "▄▄");
        assert_eq!(sparkline(&[1.0, f64::NAN, 0.0]), "█ ▁");
    }
}
