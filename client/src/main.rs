//! `petuum-client`: talks to a petuum cluster. Today: `validate`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "petuum-client", version, about = "petuum client")]
struct Cli {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
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
