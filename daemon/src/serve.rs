//! `petuumd serve --config node.toml`: a long-running cluster node.

use anyhow::Context;
use petuum_cluster::{server, ClusterNode, NodeConfig};
use std::path::Path;
use std::process::ExitCode;

/// How long SIGTERM waits for running jobs to reach a checkpoint. With
/// the leadership hand-off (about a second) and the Raft shutdown this
/// stays inside the unit's `TimeoutStopSec=30s`.
pub const JOB_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// Tells systemd (Type=notify) the node is up, and starts the watchdog
/// pings when the unit has `WatchdogSec`. Outside systemd this does nothing.
fn notify_ready() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        let period = std::time::Duration::from_micros(usec / 2);
        tokio::spawn(async move {
            loop {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                tokio::time::sleep(period).await;
            }
        });
    }
}

/// Runs a node until SIGTERM or SIGINT, then stops its Raft groups and
/// exits 0.
pub fn serve(config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = NodeConfig::load(config)?;
    petuum_algorithms::limits::set_max_model_bytes(cfg.max_model_mb.saturating_mul(1 << 20));
    // (load refuses this unless the config says insecure = true.)
    let missing = cfg.missing_protection();
    if !missing.is_empty() {
        tracing::warn!(
            listen = %cfg.listen,
            missing = %missing.join(", "),
            "insecure = true: serving on an address other machines can reach without TLS or a client token; anyone who reaches it can submit and drop jobs and read every table"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("petuumd")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(async move {
        let node = ClusterNode::open(cfg)
            .await
            .with_context(|| format!("opening node from {}", config.display()))?;
        let id = node.id();
        tokio::spawn(watch_runtime());
        tokio::spawn(crate::disk::watch(id, node.config.data_dir.clone()));
        let jobs = crate::jobs::Jobs::new(node.clone());
        let routes = crate::jobs::service::routes(jobs.clone());
        let stopping = node.clone();
        let jobs_stopping = jobs.clone();
        let shutdown = async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: handing off leadership, then stopping"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: handing off leadership, then stopping"),
                why = stopping.group_failure() => {
                    // Nothing to hand off in order: the storage refuses
                    // writes. Exit at once, as a crash would (every
                    // acknowledged write is in RocksDB's WAL); the restart
                    // reopens the storage and the node rejoins. `_exit`,
                    // not `exit`: the C and C++ exit handlers (libtorch's
                    // static destructors among them) must not run under
                    // threads still at work (a DNN worker then panicked in
                    // libtorch, "no schema registered", in a chaos run).
                    // The logs are written to stderr unbuffered.
                    tracing::error!(%why, "a Raft group failed; exiting for the service manager to restart the node");
                    eprintln!("petuumd: node {} exits: {why}", stopping.id());
                    // SAFETY: `_exit` ends the process at once; nothing
                    // after it runs.
                    unsafe { libc::_exit(1) };
                }
            }
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
            // Preemption: running jobs stop at a checkpoint (bounded so
            // the whole stop fits systemd's TimeoutStopSec=30s) and move
            // to other nodes; then the leaderships move.
            jobs_stopping.stop(JOB_STOP_GRACE).await;
            // Keep serving while the groups move, so writers are told
            // "not the leader" instead of finding a closed port.
            let handed = stopping.hand_off().await;
            eprintln!(
                "petuumd: node {} handed off {} groups; stopping",
                stopping.id(),
                handed.len()
            );
        };
        eprintln!(
            "petuumd: node {id} serving on {} (cluster {:016x}, {} shards)",
            node.config.listen,
            node.cluster_id,
            node.placement().shards()
        );
        // The HTTP endpoint stops with the node (after the jobs moved).
        let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some(addr) = node.config.http_listen {
            let server = crate::http::bind(addr, jobs.clone(), async move {
                let _ = http_stopped.await;
            })
            .await?;
            tokio::spawn(server);
        }
        let ready = {
            let jobs = jobs.clone();
            move || {
                jobs.spawn();
                notify_ready();
            }
        };
        server::serve(node.clone(), routes, shutdown, ready).await?;
        let _ = http_stop.send(());
        if tokio::time::timeout(RAFT_STOP_CAP, node.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(node = id, "Raft groups still stopping after {RAFT_STOP_CAP:?}; exiting");
        }
        eprintln!("petuumd: node {id} stopped");
        Ok(ExitCode::SUCCESS)
    });
    // Blocking work still running (a file write, a call to a peer) does
    // not hold the exit longer than this: every acknowledged write is in
    // RocksDB's synced WAL, as after a crash.
    rt.shutdown_timeout(RUNTIME_STOP_CAP);
    result
}

/// How long the stop waits for the Raft groups to shut down.
const RAFT_STOP_CAP: std::time::Duration = std::time::Duration::from_secs(3);

/// How long the stop waits for blocking tasks once the node stopped.
const RUNTIME_STOP_CAP: std::time::Duration = std::time::Duration::from_secs(2);

/// Logs when the async runtime stops running tasks for a while (a task
/// that blocks its worker thread: a synchronous write that waits on the
/// disk, a long computation): the node then answers nothing, neither peers
/// nor probes, and others may take it for dead.
async fn watch_runtime() {
    const PERIOD: std::time::Duration = std::time::Duration::from_millis(100);
    loop {
        let asleep = std::time::Instant::now();
        tokio::time::sleep(PERIOD).await;
        let late = asleep.elapsed().saturating_sub(PERIOD);
        if late >= PERIOD {
            crate::http::metrics::RUNTIME_STALLS.inc();
            crate::http::metrics::RUNTIME_STALL_SECONDS.inc_by(late.as_secs_f64());
        }
        if late >= std::time::Duration::from_millis(500) {
            tracing::warn!(
                late_ms = late.as_millis() as u64,
                "async runtime stalled: no task ran on time"
            );
        }
    }
}
