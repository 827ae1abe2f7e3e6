//! `resh`: the command line of the RESH voting front end.
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use netdomain::config::Config;
use tracing_subscriber::EnvFilter;

/// resh: Redundant Execution on a Single Host.
///
/// resh sits in front of N replicas of a TCP service (N copies, or N diverse versions), sends
/// every client's input to all of them, and releases to the client only output that a quorum
/// of replicas produced identically. A faulty minority is masked, named and repaired; without a
/// quorum the session is reset rather than answered wrongly.
#[derive(Parser, Debug)]
#[command(name = "resh", version, about, long_about, propagate_version = true)]
struct Cli {
    /// Log filter, e.g. `info`, `debug`, `netdomain=debug,replicas=info` (overrides RUST_LOG).
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the replicas and serve clients until SIGINT or SIGTERM.
    ///
    /// Prints `resh: clients on ADDR` and `resh: admin on http://ADDR` on standard output
    /// once the replicas are ready; logs go to standard error.
    Run {
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration file and print the effective configuration (defaults filled in).
    Check {
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match &cli.log {
        Some(f) => EnvFilter::try_new(f),
        None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info")),
    };
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("resh: --log: invalid filter: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                print!("{}", c.to_toml());
                if c.quorum_below_majority() {
                    eprintln!(
                        "resh: warning: vote.quorum {} is below a majority of {} replicas",
                        c.quorum(),
                        c.replicas.len()
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("resh: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("resh: {e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("resh: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(netdomain::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("resh: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
