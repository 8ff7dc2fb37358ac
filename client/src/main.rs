//! `petuum-client`: talks to a petuum cluster: `validate` a job spec,
//! `nodes` (the cluster's nodes and Raft group leaders).

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "petuum-client", version, about = "petuum client")]
struct Cli {
    /// A node of the cluster.
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a job spec as the server would, without submitting it.
    Validate {
        job: PathBuf,
        /// Print the resolved spec as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The cluster's nodes and who leads each Raft group (exit 1 when a
    /// group has no leader).
    Nodes {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Nodes { json } => nodes(&cli.endpoint, cli.token.as_deref(), json),
        Command::Validate { job, json } => match petuum_client::load_job(&job) {
            Ok(spec) => {
                if json {
                    println!("{}", serde_json::json!({"valid": true, "spec": spec}));
                } else {
                    println!("{}: ok", job.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"valid": false, "error": e.to_string()})
                    );
                }
                eprintln!("petuum-client: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn nodes(endpoint: &str, token: Option<&str>, json: bool) -> ExitCode {
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
    let status = match rt.block_on(petuum_client::cluster_status(endpoint, token)) {
        Ok(s) => s,
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({"error": e.to_string()}));
            }
            eprintln!("petuum-client: {e}");
            return ExitCode::from(2);
        }
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
            .map(|n| serde_json::json!({"id": n.id, "addr": n.addr, "state": n.state, "leads": leads(n.id)}))
            .collect();
        let groups: Vec<_> = status
            .groups
            .iter()
            .map(|g| serde_json::json!({"group": g.group, "leader": g.leader, "term": g.term, "applied": g.last_applied, "voters": g.voters}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"cluster": format!("{:016x}", status.cluster), "answered_by": status.node, "shards": status.shards, "replicas": status.replicas, "nodes": nodes, "groups": groups, "leaderless": leaderless})
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
            println!(
                "  node {:>3}  {:<22} leads {} shard groups",
                n.id,
                n.addr,
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
    if leaderless.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
