//! `petuumd`: the petuum daemon.
//!
//! - `petuumd run JOB.toml`: start a single-node cluster in this process,
//!   run the job on it, write the model, exit.
//! - `petuumd eval --model M --data D [--labels L]`: evaluate a saved model.
//! - `petuumd validate JOB.toml`: check a job spec without running it.
//! - `petuumd serve --config node.toml`: run a cluster node (docs/cluster.md).

mod certs;
mod checkpoints;
mod datasets;
mod disk;
mod embedded;
mod http;
mod jobs;
mod serve;
mod uploads;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "petuumd",
    version,
    about = "petuum daemon: distributed ML on Bosen tables"
)]
struct Cli {
    /// Log lines on stderr: `text` (coloured only on a terminal) or `json`
    /// (one object per line with the span fields node, job, epoch, shard).
    /// The level filter comes from PETUUM_LOG (default `warn`).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "PETUUM_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job on an embedded single-node cluster and write its model.
    Run {
        /// The job spec (TOML). Relative paths in it are relative to its directory.
        job: PathBuf,
        /// Where the embedded node keeps its state.
        #[arg(long, default_value = "petuum-data", env = "PETUUM_DATA_DIR")]
        data_dir: PathBuf,
        /// Print one JSON object per line (progress, then a final result).
        #[arg(long)]
        json: bool,
        /// Override the job's worker count.
        #[arg(long)]
        workers: Option<u32>,
    },
    /// Continue an embedded job from its newest complete checkpoint (after
    /// a crash, kill or preemption).
    Resume {
        /// The job id (`petuumd run` prints it; see DATA_DIR/jobs/).
        job: u64,
        #[arg(long, default_value = "petuum-data", env = "PETUUM_DATA_DIR")]
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a saved model on held-out data.
    Eval {
        #[arg(long)]
        model: PathBuf,
        /// Data file (IDX images for MNIST-style models).
        #[arg(long)]
        data: PathBuf,
        /// Labels file (IDX data).
        #[arg(long)]
        labels: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The best items for a user from a saved matrix factorization model
    /// (`algorithm = "mf"`), best first, with their predicted ratings.
    Recommend {
        #[arg(long)]
        model: PathBuf,
        /// A user id as in the training data (repeatable).
        #[arg(long = "user", required = true)]
        users: Vec<String>,
        /// How many items per user.
        #[arg(long, default_value_t = 10)]
        n: usize,
        /// A ratings file (the training data's format): the items each
        /// user rated there are left out.
        #[arg(long)]
        exclude_rated: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Check a job spec (fields, data files, hyperparameters) without running it.
    Validate { job: PathBuf },
    /// Make a cluster CA (once) and certificates for nodes and clients
    /// signed by it, for `[tls]` and `petuum-client --ca/--cert/--key`
    /// (docs/deploy.md).
    Certs {
        /// Where the CA and the certificates go (`ca.pem`, `ca.key`,
        /// `node<ID>.pem/.key`, `client-<NAME>.pem/.key`). A CA already
        /// there is reused.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// A node id to make a certificate for (repeatable).
        #[arg(long = "node")]
        nodes: Vec<u64>,
        /// A host name or IP address the nodes are reached at (repeatable;
        /// goes into each node certificate made by this call).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// A client name to make a certificate for (repeatable).
        #[arg(long = "client")]
        clients: Vec<String>,
        /// Validity of the node and client certificates, in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
    /// Run a cluster node until SIGTERM (docs/cluster.md).
    Serve {
        /// The node configuration (TOML).
        #[arg(long, env = "PETUUM_CONFIG")]
        config: PathBuf,
    },
}

/// Keeps the memory of freed buffers of up to a few MiB (dataset chunks,
/// RPC payloads, delta batches) in the process for the next ones, instead
/// of glibc's default of handing it back to the kernel and faulting fresh
/// zeroed pages in for every buffer: on a cloud VM, whose host reclaims
/// freed guest pages, that first touch was the largest cost of a dataset
/// fetch (docs/performance.md, "Dataset store"). Allocations above 4 MiB
/// are still mapped and unmapped on their own; at most 64 MiB of free
/// memory is kept at the top of each heap.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    // Deep networks (`algorithm = "dnn"`) train through libtorch.
    petuum_poseidon::register();
    let result = match cli.command {
        Command::Run {
            job,
            data_dir,
            json,
            workers,
        } => embedded::run(&job, &data_dir, json, workers),
        Command::Resume {
            job,
            data_dir,
            json,
        } => embedded::resume(job, &data_dir, json),
        Command::Eval {
            model,
            data,
            labels,
            json,
        } => eval(&model, &data, labels.as_deref(), json),
        Command::Recommend {
            model,
            users,
            n,
            exclude_rated,
            json,
        } => recommend(&model, &users, n, exclude_rated.as_deref(), json),
        Command::Validate { job } => validate(&job),
        Command::Serve { config } => match serve::serve(&config) {
            // Stopped in order: every group shut down, the storage closed.
            // A worker of a run the stop aborted may still be inside
            // libtorch (a DNN's clock ends at its next table operation),
            // and `exit` would run libtorch's static destructors under it
            // (a panic, then an abort); end without the C and C++ exit
            // handlers instead. Everything is written: logs go to stderr
            // unbuffered, stdout is flushed here.
            Ok(code) if code == ExitCode::SUCCESS => {
                use std::io::Write;
                let _ = std::io::stdout().flush();
                // SAFETY: ends the process; nothing after it runs.
                unsafe { libc::_exit(0) }
            }
            other => other,
        },
        Command::Certs {
            out,
            nodes,
            hosts,
            clients,
            days,
        } => match certs::make(&certs::Request {
            out: &out,
            nodes: &nodes,
            hosts: &hosts,
            clients: &clients,
            days,
        }) {
            Ok(files) => {
                for f in files {
                    println!("{f}");
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("petuumd certs: {}", petuum_core::error_chain(e.as_ref()));
                Ok(ExitCode::from(2))
            }
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("petuumd: error: {}", petuum_core::error_chain(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let spec = std::env::var("PETUUM_LOG").unwrap_or_else(|_| "warn".into());
    let mut filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("warn"));
    // openraft logs an error (and a warning) for every failed replication
    // RPC to a peer that is down: per group, every 75 ms. The network layer
    // logs the peer's state changes instead (`peer unreachable`, `peer
    // reachable again`). A target named in PETUUM_LOG is logged as asked.
    for target in [
        "openraft::replication",
        "openraft::engine::handler::replication_handler",
    ] {
        if !spec.contains(target) {
            if let Ok(quiet) = format!("{target}=off").parse() {
                filter = filter.add_directive(quiet);
            }
        }
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // A log file or the journal gets no terminal colour codes.
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

fn eval(
    model: &std::path::Path,
    data: &std::path::Path,
    labels: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let report = petuum_algorithms::eval::evaluate(model, data, labels)
        .with_context(|| format!("evaluating {}", model.display()))?;
    if json {
        let mut obj = serde_json::Map::new();
        obj.insert("algorithm".into(), report.algorithm.clone().into());
        obj.insert("samples".into(), report.samples.into());
        for (k, v) in &report.metrics {
            obj.insert(k.clone(), (*v).into());
        }
        println!("{}", serde_json::Value::Object(obj));
    } else {
        println!("model:     {}", model.display());
        println!("algorithm: {}", report.algorithm);
        println!("samples:   {}", report.samples);
        for (k, v) in &report.metrics {
            println!("{k}: {v:.4}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn recommend(
    model: &std::path::Path,
    users: &[String],
    n: usize,
    rated: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let recs = petuum_algorithms::eval::recommend(model, users, n, rated)
        .with_context(|| format!("recommending from {}", model.display()))?;
    for (user, items) in recs {
        if json {
            let items: Vec<serde_json::Value> = items
                .iter()
                .map(|(i, s)| serde_json::json!({"item": i, "score": s}))
                .collect();
            println!("{}", serde_json::json!({"user": user, "items": items}));
        } else {
            println!("user {user}:");
            for (rank, (item, score)) in items.iter().enumerate() {
                println!("  {:>3}. {item}  {score:.4}", rank + 1);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn validate(job: &std::path::Path) -> anyhow::Result<ExitCode> {
    let mut spec = petuum_core::spec::JobSpec::from_file(job)?;
    petuum_algorithms::apply_defaults(&mut spec);
    petuum_algorithms::validate(&spec)?;
    println!(
        "{}: ok ({} with {} workers, {})",
        job.display(),
        spec.algorithm,
        spec.run.workers,
        spec.consistency().name()
    );
    Ok(ExitCode::SUCCESS)
}
