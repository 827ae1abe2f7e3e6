//! `resh`: the command line of the RESH voting front end.
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
    /// How log lines are written on standard error: `text` for people, `json` (one object per
    /// line, with the span's fields) for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

/// Replaces the log filter of the installed subscriber.
type SetFilter = std::sync::Arc<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the replicas and serve clients until SIGTERM or SIGINT.
    ///
    /// Prints `resh: clients on ADDR` and `resh: admin on http://ADDR` on standard output
    /// once the replicas are ready; logs go to standard error.
    ///
    /// SIGTERM or SIGINT drains: no new client is taken, sessions may finish for
    /// `session.drain_timeout_ms`, then the ones left are reset and the replicas stopped.
    /// SIGHUP re-reads the configuration file and applies what can change live (see
    /// `resh reload`).
    ///
    /// With `[group]` (D-RESH; a build with `--features corosync`) the host joins its group
    /// through the local Corosync, serves only while it is in a view with quorum and in sync,
    /// and exits with an error if it leaves the group (see the README, "Several hosts").
    Run {
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Worker threads of the async runtime (default: one per two CPUs, at least one: resh
        /// shares the host with its replicas).
        #[arg(long, env = "RESH_THREADS", value_name = "N")]
        threads: Option<usize>,
    },
    /// Show a running resh at a glance: its replicas, verdicts and recent faults.
    ///
    /// Reads the admin API's `GET /status`; `--watch` redraws it every second (`--interval-ms`),
    /// `--json` prints the document itself.
    Status(resh::status::StatusArgs),
    /// Have a running resh re-read its configuration file, as SIGHUP does, and print what
    /// changed.
    ///
    /// Talks to the admin API (`POST /reload`) with the admin bearer token. What can change
    /// live (the stream vote, session timeouts and limits, max_sessions, the admin token, the
    /// log filter) does so for sessions that start afterwards; other changed keys are named and
    /// need a restart. A file that does not validate is refused and the running configuration
    /// stays; the errors are printed and resh reload exits non-zero.
    Reload(resh::reload::ReloadArgs),
    /// Validate a configuration file and print the effective configuration (defaults filled in).
    Check {
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Inject a fault into one replica of a running resh and print the injection record.
    ///
    /// Talks to the admin API (`POST /inject`) with the admin bearer token.
    Inject(resh::inject::InjectArgs),
    /// Run a fault-injection campaign and write its report.
    ///
    /// A golden run, then M experiments with one injected fault each on fresh replicas, for
    /// every replica count (e.g. 3, and 1: the baseline without voting); writes
    /// experiments.jsonl, summary.csv, summary.md and outcomes.svg.
    Campaign(resh::campaign::CampaignArgs),
    /// Find what differs between the replicas' HTTP responses, and propose masks for HTTP mode.
    ///
    /// Sends each PATH (GET) to every replica directly, --rounds times, and reports the
    /// headers that differ (and whether the default vote counts them), the JSON fields and the
    /// text that differ, and what no mask should cover (different statuses, bodies that differ
    /// in substance); then an `[http]` snippet to review. The replicas come from a running
    /// resh (--admin) or --replica NAME=ADDR. Example:
    /// `resh http-noise --admin http://127.0.0.1:9090 / /api/items/1`
    HttpNoise(resh::http_noise::HttpNoiseArgs),
    /// Measure resh against the service alone and HAProxy: throughput, latency percentiles,
    /// CPU per request, peak RSS, and memory per idle session (real processes on loopback).
    ///
    /// Runs the same workloads (RESP SET/GET, 64 B and 64 KiB echo) interleaved against each
    /// target and prints medians and ratios; `--json` for machines. See docs/performance.md.
    Bench(resh::bench::BenchArgs),
    /// Show N-version programming at work: three diverse versions of a key-value service
    /// behind resh, a bug planted in one of them half-way through a checked workload.
    ///
    /// Exits 0 when no client saw a wrong answer and the buggy version was caught, restarted
    /// and resynchronised. Needs python3; uses redis-server as the third version when it is
    /// installed. The demo services (`resh-kv`, `resh-kv-threads`) must be built next to resh
    /// (`cargo build -p demo`).
    ///
    /// With `--web`: three web servers written independently (nginx, lighttpd and our
    /// `resh-web`) serving one site and JSON API behind resh in HTTP mode; the bug is planted in
    /// resh-web's API. Needs nginx and lighttpd.
    Demo {
        /// Stay up afterwards and print the address for redis-cli (or curl, with --web).
        #[arg(long)]
        keep: bool,
        /// The web demo: nginx, lighttpd and resh-web in HTTP mode.
        #[arg(long)]
        web: bool,
        /// How long the workload runs, in seconds.
        #[arg(long, default_value_t = 8, value_name = "SECONDS")]
        seconds: u64,
        /// How many clients run the workload.
        #[arg(long, default_value_t = 8, value_name = "N")]
        clients: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's progress line is the show; only errors interrupt it unless asked otherwise.
    let default_filter = if matches!(cli.command, Command::Demo { .. } | Command::Campaign(_) | Command::Bench(_)) {
        "error"
    } else {
        "info"
    };
    // The filter is fixed by `--log` or RUST_LOG; otherwise `resh run` takes the configuration's
    // `log` and a reload may change it.
    let fixed_filter = cli.log.is_some() || std::env::var_os("RUST_LOG").is_some();
    let filter = match &cli.log {
        Some(f) => EnvFilter::try_new(f),
        None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(default_filter)),
    };
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("resh: --log: invalid filter: {e}");
            return ExitCode::from(2);
        }
    };
    let set_filter: SetFilter = match cli.log_format {
        LogFormat::Text => {
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter_reloading();
            let handle = subscriber.reload_handle();
            subscriber.init();
            std::sync::Arc::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
        }
        LogFormat::Json => {
            let subscriber = tracing_subscriber::fmt()
                .json()
                .with_current_span(true)
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_filter_reloading();
            let handle = subscriber.reload_handle();
            subscriber.init();
            std::sync::Arc::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
        }
    };

    match cli.command {
        Command::Inject(args) => resh::inject::main(&args),
        Command::Reload(args) => resh::reload::main(&args),
        Command::Status(args) => resh::status::main(&args),
        Command::Campaign(args) => resh::campaign::main(&args),
        Command::Bench(args) => resh::bench::main(&args),
        Command::HttpNoise(args) => resh::http_noise::main(&args),
        Command::Demo { keep, web, seconds, clients } => {
            if clients == 0 || seconds == 0 {
                eprintln!("resh: demo: --seconds and --clients must be at least 1");
                return ExitCode::from(2);
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("resh: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let options = resh::demo::DemoOptions { duration: Duration::from_secs(seconds), clients, keep };
            let ran = if web {
                runtime.block_on(resh::webdemo::run(options)).map_err(|e| e.to_string())
            } else {
                runtime.block_on(resh::demo::run(options)).map_err(|e| e.to_string())
            };
            match ran {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("resh: demo: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                print!("{}", c.to_toml());
                for (key, reason) in c.warnings() {
                    eprintln!("resh: warning: {key}: {reason}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("resh: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config: path, threads } => {
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("resh: {e}");
                    return ExitCode::from(2);
                }
            };
            let log_filter = if fixed_filter {
                None
            } else {
                if let Some(filter) = config.log.as_deref() {
                    // Validated with the configuration.
                    if let Ok(f) = EnvFilter::try_new(filter) {
                        let _ = set_filter(f);
                    }
                }
                let set_filter = std::sync::Arc::clone(&set_filter);
                Some(netdomain::server::LogFilterHook(Box::new(move |filter: &str| {
                    let f = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
                    set_filter(f)
                })))
            };
            let options = netdomain::RunOptions { config_path: Some(path), log_filter };
            let threads = threads.unwrap_or_else(netdomain::default_worker_threads).max(1);
            // One thread: tokio's current-thread scheduler, which runs everything on this thread
            // without the work-stealing machinery (queues, idle/notify bookkeeping) that a single
            // worker cannot use anyway.
            let mut builder = if threads == 1 {
                tokio::runtime::Builder::new_current_thread()
            } else {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(threads);
                b
            };
            let runtime = match builder.enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("resh: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(netdomain::run_with(config, options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("resh: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
