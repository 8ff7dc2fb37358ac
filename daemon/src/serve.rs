//! `petuumd serve --config node.toml`: a long-running cluster node.

use anyhow::Context;
use petuum_cluster::{server, ClusterNode, NodeConfig};
use std::path::Path;
use std::process::ExitCode;

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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("petuumd")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let node = ClusterNode::open(cfg)
            .await
            .with_context(|| format!("opening node from {}", config.display()))?;
        let id = node.id();
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
            }
        };
        eprintln!(
            "petuumd: node {id} serving on {} (cluster {:016x}, {} shards)",
            node.config.listen,
            node.cluster_id,
            node.placement.shards()
        );
        server::serve(node.clone(), shutdown, notify_ready).await?;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        node.shutdown().await;
        eprintln!("petuumd: node {id} stopped");
        Ok(ExitCode::SUCCESS)
    })
}
