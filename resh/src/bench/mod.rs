//! `resh bench`: what resh costs, side by side with the service alone and with HAProxy.
//!
//! One invocation starts every target as real processes and runs the same workloads against
//! each, interleaved (for each round, for each workload, for each target, the target order
//! rotating from round to round), so that a machine that gets slower or faster during the run
//! affects every target alike:
//!
//! | target | what clients connect to |
//! |---|---|
//! | `direct` | the service itself (one process) |
//! | `haproxy` | Debian's HAProxy, `mode tcp`, as many threads as resh has workers, in front of that same process |
//! | `resh1` | `resh run`, stream mode, one replica |
//! | `resh3` | `resh run`, stream mode, three replicas |
//! | `ordered3` | `resh run`, ordered mode (RESP, or HTTP for the http workload), three replicas (not for echo) |
//!
//! The replicas are identical copies of one service (`resh-kv` for RESP, `resh-echo` for the
//! echo workloads, nginx for http), so the figures measure resh's overhead rather than the spread between
//! diverse versions. The load generator ([`load`]) shares the machine with everything else; its
//! own CPU share is reported. For each target the bench reports throughput and latency
//! percentiles (median over the rounds), CPU time per request of the proxy (resh or HAProxy)
//! and of everything serving the request (proxy and replicas), and the proxy's peak RSS; then a
//! fresh resh with three replicas is given idle client sessions to measure memory per session.
pub mod load;
pub mod procs;
mod report;
mod web;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use self::load::{LoadError, LoadSpec, RequestFailure, Workload};
use self::procs::{Proc, ProcError, ReshProc};
use crate::error::FileError;

/// `resh bench` arguments.
#[derive(Args, Debug, Clone)]
#[command(after_long_help = "\
Targets (--only):
  direct    the service itself
  haproxy   HAProxy (mode tcp, nbthread = resh's worker threads) in front of one replica;
            needs Debian's haproxy (apt-get install haproxy), skipped with a note without it
  resh1     resh, stream mode, N=1
  resh3     resh, stream mode, N=3
  ordered3  resh, ordered mode (RESP; HTTP for the http workload), N=3; n/a for the echo
            workloads

Workloads (--workloads):
  resp      RESP SET/GET alternating on the connection's own key (--value-size bytes), on
            resh-kv replicas
  echo64    64-byte messages echoed back, on resh-echo replicas
  echo64k   64 KiB messages echoed back, on resh-echo replicas
  http      GET /api/products/3 (62 bytes of JSON) with keep-alive, load by wrk (Debian's),
            on nginx replicas serving the web demo's site; resh targets in HTTP mode,
            haproxy in mode http; needs nginx and wrk (apt-get install nginx-light wrk);
            wrk reports no 99.9th percentile

Every connection is closed-loop: one request in flight, the next sent when the whole reply
arrived and was checked byte for byte (http: wrk counts socket errors and non-2xx answers).
Each round runs every workload against every target in turn (the order rotates from round to
round); the table shows medians over the rounds and ratios against direct and haproxy.
The services (resh-kv, resh-echo) must be built next to resh: cargo build --release.

Example:
  cargo build --release
  target/release/resh bench --rounds 3 --seconds 5")]
pub struct BenchArgs {
    /// Seconds each workload runs against each target in each round (after the warm-up).
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    pub seconds: f64,
    /// Run this many requests per workload, target and round instead of --seconds.
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Seconds of unmeasured warm-up before each measurement.
    #[arg(long, default_value_t = 0.5, value_name = "SECONDS")]
    pub warmup: f64,
    /// Rounds; targets are interleaved within each round.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub rounds: usize,
    /// Client connections (each with one request in flight).
    #[arg(short = 'c', long, default_value_t = 50, value_name = "N")]
    pub connections: usize,
    /// Value size of the RESP workload, in bytes.
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub value_size: usize,
    /// Targets to run, comma-separated: direct,haproxy,resh1,resh3,ordered3.
    #[arg(long, value_delimiter = ',', default_value = "direct,haproxy,resh1,resh3,ordered3", value_name = "LIST")]
    pub only: Vec<String>,
    /// Workloads to run, comma-separated: resp,echo64,echo64k,http.
    #[arg(long, value_delimiter = ',', default_value = "resp,echo64,echo64k,http", value_name = "LIST")]
    pub workloads: Vec<String>,
    /// Idle client sessions opened to a fresh resh (N=3, stream) to measure memory per
    /// session; 0 skips the measurement.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub idle_sessions: usize,
    /// resh's worker threads (and HAProxy's nbthread); default: what `resh run` picks.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// The resh binary to measure (default: this one), e.g. an older build for a before/after
    /// comparison. The services are taken from next to this binary.
    #[arg(long, value_name = "FILE")]
    pub resh: Option<PathBuf>,
    /// Also run every resh target with this (e.g. an older) resh binary, interleaved with the
    /// others, as `<target>@base`: a before/after comparison in one invocation.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the results as JSON to this file (with the table on standard output).
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
}

/// The targets, in the order they run and are shown.
pub const TARGETS: [&str; 5] = ["direct", "haproxy", "resh1", "resh3", "ordered3"];

/// What one run (one round of one workload against one target) measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    /// Requests per second.
    pub throughput: f64,
    /// Requests measured.
    pub requests: u64,
    /// Connections that failed (http: wrk's failed and non-2xx requests).
    pub errors: u64,
    /// Latency percentiles and mean, microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// CPU microseconds per request of the proxy (resh or HAProxy); none for `direct`.
    pub proxy_cpu_us: Option<f64>,
    /// CPU microseconds per request of the proxy and the replicas together.
    pub total_cpu_us: f64,
    /// Peak RSS of the proxy during the run, KiB.
    pub proxy_peak_rss_kib: Option<u64>,
    /// The load generator's CPU use, in cores (1.0 = one core busy).
    pub loadgen_cores: f64,
}

/// The results for one workload and target.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// Workload name.
    pub workload: String,
    /// Target name.
    pub target: String,
    /// Why there is no figure (`n/a`, not installed, failed), if there is none.
    pub note: Option<String>,
    /// Each round.
    pub rounds: Vec<Sample>,
    /// Medians over the rounds (errors: the sum).
    pub median: Option<Sample>,
}

/// Memory of idle sessions.
#[derive(Clone, Debug, Serialize)]
pub struct IdleMemory {
    /// Sessions opened.
    pub sessions: usize,
    /// resh's RSS before, KiB.
    pub rss_before_kib: u64,
    /// With the sessions connected and no traffic, KiB.
    pub rss_connected_kib: u64,
    /// After one 64-byte echo on each session, idle again, KiB.
    pub rss_after_echo_kib: u64,
    /// (connected - before) / sessions, bytes.
    pub bytes_per_session: f64,
    /// (after echo - before) / sessions, bytes.
    pub bytes_per_session_after_echo: f64,
}

/// Everything one `resh bench` measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The machine and settings.
    pub setup: serde_json::Value,
    /// Per workload and target.
    pub results: Vec<Outcome>,
    /// Idle-session memory, if measured.
    pub idle: Option<IdleMemory>,
    /// Problems that did not stop the bench.
    pub notes: Vec<String>,
}

/// Why `resh bench` could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The user's arguments: a count is zero.
    #[error("--rounds and --connections must be at least 1")]
    ZeroCount,
    /// The user's arguments: a duration is out of range.
    #[error("--seconds must be positive and --warmup not negative")]
    BadDuration,
    /// The user's arguments: an unknown workload.
    #[error("--workloads: unknown workload `{0}` (resp, echo64, echo64k, http)")]
    UnknownWorkload(String),
    /// The user's arguments: an unknown target.
    #[error("--only: unknown target `{name}` ({})", TARGETS.join(", "))]
    UnknownTarget {
        /// The name given.
        name: String,
    },
    /// The system: the running resh executable cannot be found.
    #[error("cannot find the resh binary: {0}")]
    CurrentExe(#[source] io::Error),
    /// The setup: a service is not built next to resh.
    #[error("{} not found next to resh: build the services with `cargo build --release`", .0.display())]
    MissingService(PathBuf),
    /// The system: the bench's directory could not be made.
    #[error(transparent)]
    File(#[from] FileError),
    /// The system: the load generator's runtime could not be started.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] io::Error),
    /// A process of the bench could not be started or stopped working.
    #[error(transparent)]
    Proc(#[from] ProcError),
}

/// Why one measurement gave no figure.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// The load could not be run.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The target: every connection failed before completing a measured request.
    #[error("every connection failed{}", .first.as_ref().map(|e| format!(" (the first: {e})")).unwrap_or_default())]
    AllFailed {
        /// The first failure.
        first: Option<RequestFailure>,
    },
    /// wrk (the http workload) could not run or its report not be read.
    #[error("{0}")]
    Wrk(String),
}

/// Why the memory of idle sessions could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum IdleError {
    /// resh could not be started.
    #[error(transparent)]
    Start(#[from] ProcError),
    /// resh: a session could not be opened (session 0 is the warm-up).
    #[error("cannot open session {session} to resh: {error}")]
    Connect {
        /// The session's number.
        session: usize,
        /// The OS error.
        #[source]
        error: io::Error,
    },
    /// resh: an echo could not be sent.
    #[error("cannot send an echo: {0}")]
    Send(#[source] io::Error),
    /// resh: an echo did not come back.
    #[error("cannot read an echo: {0}")]
    Receive(#[source] io::Error),
    /// The system: resh's memory use cannot be read.
    #[error("cannot read /proc/{0}/status")]
    Rss(u32),
}

/// Runs `resh bench`.
pub fn main(args: &BenchArgs) -> ExitCode {
    match run(args) {
        Ok(report) => {
            if let Some(path) = &args.save {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => {
                        if let Err(e) = std::fs::write(path, text + "\n") {
                            eprintln!("resh: bench: cannot write {}: {e}", path.display());
                        }
                    }
                    Err(e) => eprintln!("resh: bench: cannot encode the results for {}: {e}", path.display()),
                }
            }
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("resh: bench: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report::table(&report));
            }
            let failed = report.results.iter().any(|o| o.median.as_ref().is_some_and(|m| m.errors > 0));
            if failed {
                eprintln!("resh: bench: some requests failed (see the errors column)");
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("resh: bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// The executables the bench starts.
struct Binaries {
    resh: PathBuf,
    baseline: Option<PathBuf>,
    /// The services, found next to resh when a workload needs them.
    kv: Option<PathBuf>,
    echo: Option<PathBuf>,
    haproxy: Option<PathBuf>,
    /// The http workload's server and load generator (Debian's).
    nginx: Option<PathBuf>,
    wrk: Option<PathBuf>,
}

fn binaries(args: &BenchArgs, jobs: &[Job]) -> Result<Binaries, BenchError> {
    let resh = match &args.resh {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(BenchError::CurrentExe)?,
    };
    let dir = resh.parent().map(Path::to_path_buf).unwrap_or_default();
    let sibling = |name: &str| {
        let p = dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(BenchError::MissingService(p))
        }
    };
    let needs = |service: Service| jobs.iter().any(|j| j.service() == service);
    Ok(Binaries {
        kv: if needs(Service::Kv) { Some(sibling("resh-kv")?) } else { None },
        // The idle-session measurement runs resh-echo replicas too.
        echo: if needs(Service::Echo) || args.idle_sessions > 0 { Some(sibling("resh-echo")?) } else { None },
        resh,
        baseline: args.baseline.clone(),
        haproxy: procs::find_program("haproxy"),
        nginx: procs::find_program("nginx"),
        wrk: procs::find_program("wrk"),
    })
}

/// One workload: the in-process generator's, or wrk's (`http`, see [`web`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Job {
    Load(Workload),
    Http,
}

impl Job {
    fn name(self) -> String {
        match self {
            Job::Load(w) => w.name(),
            Job::Http => "http".into(),
        }
    }

    /// What the replicas (and `direct`) run.
    fn service(self) -> Service {
        match self {
            Job::Load(w) if w.is_resp() => Service::Kv,
            Job::Load(_) => Service::Echo,
            Job::Http => Service::Web,
        }
    }
}

fn parse_workloads(args: &BenchArgs) -> Result<Vec<Job>, BenchError> {
    let mut out = Vec::new();
    for w in &args.workloads {
        let workload = match w.trim() {
            "resp" => Job::Load(Workload::Resp { value: args.value_size }),
            "echo64" => Job::Load(Workload::Echo { size: 64 }),
            "echo64k" => Job::Load(Workload::Echo { size: 64 * 1024 }),
            "http" => Job::Http,
            other => return Err(BenchError::UnknownWorkload(other.to_string())),
        };
        if !out.contains(&workload) {
            out.push(workload);
        }
    }
    Ok(out)
}

fn parse_targets(args: &BenchArgs) -> Result<Vec<&'static str>, BenchError> {
    let mut out = Vec::new();
    for t in &args.only {
        let t = t.trim();
        match TARGETS.iter().find(|k| **k == t) {
            Some(k) if !out.contains(k) => out.push(*k),
            Some(_) => {}
            None => return Err(BenchError::UnknownTarget { name: t.to_string() }),
        }
    }
    // Run (and show) them in the canonical order, so ratios always have their reference first.
    out.sort_by_key(|t| TARGETS.iter().position(|k| k == t));
    Ok(out)
}

/// resh's default worker threads, the same rule `resh run` applies.
fn resh_threads(args: &BenchArgs) -> usize {
    args.threads.unwrap_or_else(netdomain::default_worker_threads)
}

fn run(args: &BenchArgs) -> Result<Report, BenchError> {
    if args.rounds == 0 || args.connections == 0 {
        return Err(BenchError::ZeroCount);
    }
    let valid = |x: f64, least: f64| x.is_finite() && x >= least;
    if !valid(args.seconds, f64::MIN_POSITIVE) || !valid(args.warmup, 0.0) {
        return Err(BenchError::BadDuration);
    }
    let workloads = parse_workloads(args)?;
    let targets = parse_targets(args)?;
    let bins = binaries(args, &workloads)?;
    let threads = resh_threads(args);
    procs::stop_children_on_signal();
    let mut notes = Vec::new();
    if targets.contains(&"haproxy") && bins.haproxy.is_none() {
        notes.push("haproxy not found: target haproxy skipped (install it with `apt-get install haproxy`)".into());
    }
    let dir = std::env::temp_dir().join(format!("resh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(FileError::on("create", &dir))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(BenchError::Runtime)?;
    let env = Env { bins: &bins, dir: &dir, threads, runtime: &runtime };

    let mut results = Vec::new();
    for service in [Service::Kv, Service::Echo, Service::Web] {
        let group: Vec<Job> = workloads.iter().copied().filter(|j| j.service() == service).collect();
        if group.is_empty() {
            continue;
        }
        if service == Service::Web && (bins.nginx.is_none() || bins.wrk.is_none()) {
            notes.push("the http workload needs nginx and wrk (apt-get install nginx-light wrk): skipped".into());
            results.extend(targets.iter().map(|t| Outcome {
                workload: Job::Http.name(),
                target: t.to_string(),
                note: Some("nginx or wrk not installed".into()),
                rounds: Vec::new(),
                median: None,
            }));
            continue;
        }
        results.extend(run_group(&env, args, service, &group, &targets, &mut notes)?);
    }
    let idle = if args.idle_sessions > 0 {
        match idle_memory(&env, args.idle_sessions) {
            Ok(m) => Some(m),
            Err(e) => {
                notes.push(format!("idle-session memory not measured: {e}"));
                None
            }
        }
    } else {
        None
    };
    let _ = std::fs::remove_dir_all(&dir);
    let setup = serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "resh": bins.resh.display().to_string(),
        "resh_threads": threads,
        "haproxy_nbthread": threads,
        "connections": args.connections,
        "value_size": args.value_size,
        "seconds": args.requests.is_none().then_some(args.seconds),
        "requests": args.requests,
        "warmup_seconds": args.warmup,
        "rounds": args.rounds,
        "replicas": "identical copies: resh-kv (RESP), resh-echo (echo), nginx (http)",
        "loadgen": "in-process, one thread (tokio current_thread), closed loop; wrk -t1 for http",
    });
    Ok(Report { setup, results, idle, notes })
}

/// What every run needs.
struct Env<'a> {
    bins: &'a Binaries,
    dir: &'a Path,
    threads: usize,
    runtime: &'a tokio::runtime::Runtime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    Kv,
    Echo,
    /// nginx serving the web demo's site (the http workload).
    Web,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Kv => "resh-kv",
            Service::Echo => "resh-echo",
            Service::Web => "nginx",
        }
    }

    /// The program to run (found by [`binaries`] when a workload needs it).
    fn binary(self, bins: &Binaries) -> Option<&Path> {
        match self {
            Service::Kv => bins.kv.as_deref(),
            Service::Echo => bins.echo.as_deref(),
            Service::Web => bins.nginx.as_deref(),
        }
    }
}

/// One running target.
struct Target {
    name: String,
    addr: SocketAddr,
    /// The proxy (resh or HAProxy); `None` for direct.
    proxy: Option<u32>,
    /// Processes serving behind the proxy (or the service itself, for direct).
    backends: Vec<u32>,
}

/// Runs one service's workloads against every target, interleaved.
fn run_group(
    env: &Env,
    args: &BenchArgs,
    service: Service,
    workloads: &[Job],
    targets: &[&'static str],
    notes: &mut Vec<String>,
) -> Result<Vec<Outcome>, BenchError> {
    // Every process of the group stays up for all its rounds; they are stopped when dropped.
    let mut procs: Vec<Proc> = Vec::new();
    let mut running: Vec<Target> = Vec::new();
    let mut unavailable: Vec<(&'static str, String)> = Vec::new();
    let port = procs::free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let binary = service.binary(env.bins).ok_or_else(|| BenchError::MissingService(service.name().into()))?;
    let web = if service == Service::Web { Some(web::Site::write(env.dir)?) } else { None };
    let mut command = Command::new(binary);
    match &web {
        Some(site) => command.args(site.direct_args(port)?),
        None => command.args(["--port", &port.to_string()]),
    };
    let mut direct =
        Proc::spawn(service.name(), &mut command, &env.dir.join(format!("{}-direct.log", service.name())))?;
    let replica = match &web {
        Some(site) => site.replica_command(),
        None => port_command(binary),
    };
    procs::wait_listening(addr, &mut direct, Duration::from_secs(10))?;
    let direct_pid = direct.pid();
    procs.push(direct);
    for &name in targets {
        if name == "ordered3" && service == Service::Echo {
            unavailable.push((name, "n/a (ordered mode needs requests: RESP or HTTP)".into()));
            continue;
        }
        match name {
            "direct" => running.push(Target { name: name.into(), addr, proxy: None, backends: vec![direct_pid] }),
            "haproxy" => match &env.bins.haproxy {
                None => unavailable.push((name, "haproxy not installed".into())),
                Some(haproxy) => {
                    let (proc, front) = start_haproxy(env, haproxy, addr, service)?;
                    let proxy = Some(proc.pid());
                    running.push(Target { name: name.into(), addr: front, proxy, backends: vec![direct_pid] });
                    procs.push(proc);
                }
            },
            _ => {
                let (n, ordered) = match name {
                    "resh1" => (1, false),
                    "resh3" => (3, false),
                    _ => (3, true),
                };
                let builds = std::iter::once((name.to_string(), &env.bins.resh))
                    .chain(env.bins.baseline.iter().map(|b| (format!("{name}@base"), b)));
                for (label, binary) in builds {
                    let resh = start_resh(env, binary, service, &label, n, ordered, &replica)?;
                    let pid = resh.proc.pid();
                    let backends = procs::children(pid);
                    running.push(Target { name: label, addr: resh.clients, proxy: Some(pid), backends });
                    procs.push(resh.proc);
                }
            }
        }
    }

    let mut samples: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); running.len()]; workloads.len()];
    let mut failures: Vec<Vec<Option<String>>> = vec![vec![None; running.len()]; workloads.len()];
    for round in 0..args.rounds {
        for (w, &workload) in workloads.iter().enumerate() {
            // The order rotates from round to round, so that no target always runs first, or
            // always right after the same other one (a run leaves sockets in TIME_WAIT, caches
            // and CPU frequency behind it for the next).
            for t in (0..running.len()).map(|k| (k + round) % running.len()) {
                let target = &running[t];
                if failures[w][t].is_some() {
                    continue;
                }
                if !args.json {
                    eprintln!(
                        "resh bench: round {}/{}: {} against {}",
                        round + 1,
                        args.rounds,
                        workload.name(),
                        target.name
                    );
                }
                let measured = match workload {
                    Job::Load(w) => measure(env, args, target, w),
                    Job::Http => web::measure(args, env.bins.wrk.as_deref(), target),
                };
                match measured {
                    Ok(sample) => samples[w][t].push(sample),
                    Err(e) => {
                        notes.push(format!("{} against {}: {e}", workload.name(), target.name));
                        failures[w][t] = Some(e.to_string());
                    }
                }
            }
        }
        for p in &mut procs {
            p.check_alive()?;
        }
    }

    let mut out = Vec::new();
    for (w, workload) in workloads.iter().enumerate() {
        for &name in targets {
            let mut found = false;
            for (t, target) in running.iter().enumerate() {
                if target.name != name && target.name.strip_suffix("@base") != Some(name) {
                    continue;
                }
                found = true;
                let rounds = std::mem::take(&mut samples[w][t]);
                let note = failures[w][t].take().map(|e| format!("failed: {e}"));
                let median = (!rounds.is_empty()).then(|| median(&rounds));
                out.push(Outcome { workload: workload.name(), target: target.name.clone(), note, rounds, median });
            }
            if !found {
                let note = unavailable.iter().find(|(n, _)| *n == name).map(|(_, why)| why.clone());
                out.push(Outcome {
                    workload: workload.name(),
                    target: name.into(),
                    note,
                    rounds: Vec::new(),
                    median: None,
                });
            }
        }
    }
    Ok(out)
}

/// One measurement: the load against `target`, with its CPU time and peak RSS around it.
fn measure(env: &Env, args: &BenchArgs, target: &Target, workload: Workload) -> Result<Sample, MeasureError> {
    let spec = LoadSpec {
        addr: target.addr,
        workload,
        connections: args.connections,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.seconds),
        requests: args.requests,
    };
    let reset_ok = target.proxy.is_some_and(procs::reset_peak_rss);
    let me = std::process::id();
    let probe = || {
        let proxy = target.proxy.and_then(procs::cpu_seconds);
        let backends: f64 = target.backends.iter().filter_map(|&p| procs::cpu_seconds(p)).sum();
        (proxy, proxy.unwrap_or(0.0) + backends, procs::cpu_seconds(me).unwrap_or(0.0))
    };
    let (result, before, after) = env.runtime.block_on(load::run(&spec, probe))?;
    let peak = target.proxy.and_then(|p| procs::status_kib(p, if reset_ok { "VmHWM" } else { "VmRSS" }));
    let requests = result.requests.max(1) as f64;
    let us = |ns: u64| ns as f64 / 1000.0;
    let secs = result.elapsed.as_secs_f64().max(1e-9);
    if result.errors > 0 && result.requests == 0 {
        return Err(MeasureError::AllFailed { first: result.first_error });
    }
    Ok(Sample {
        throughput: result.throughput(),
        requests: result.requests,
        errors: result.errors,
        p50_us: us(result.latency.value_at_quantile(0.5)),
        p99_us: us(result.latency.value_at_quantile(0.99)),
        p999_us: us(result.latency.value_at_quantile(0.999)),
        mean_us: result.latency.mean() / 1000.0,
        proxy_cpu_us: match (before.0, after.0) {
            (Some(a), Some(b)) => Some((b - a) * 1e6 / requests),
            _ => None,
        },
        total_cpu_us: (after.1 - before.1) * 1e6 / requests,
        proxy_peak_rss_kib: peak,
        loadgen_cores: (after.2 - before.2) / secs,
    })
}

/// The median of each figure over the rounds; errors are summed.
fn median(rounds: &[Sample]) -> Sample {
    fn mid(mut v: Vec<f64>) -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
    let of = |f: &dyn Fn(&Sample) -> f64| mid(rounds.iter().map(f).collect());
    let proxy: Vec<f64> = rounds.iter().filter_map(|s| s.proxy_cpu_us).collect();
    Sample {
        throughput: of(&|s| s.throughput),
        requests: rounds.iter().map(|s| s.requests).sum(),
        errors: rounds.iter().map(|s| s.errors).sum(),
        p50_us: of(&|s| s.p50_us),
        p99_us: of(&|s| s.p99_us),
        p999_us: of(&|s| s.p999_us),
        mean_us: of(&|s| s.mean_us),
        proxy_cpu_us: (!proxy.is_empty()).then(|| mid(proxy)),
        total_cpu_us: of(&|s| s.total_cpu_us),
        proxy_peak_rss_kib: rounds.iter().filter_map(|s| s.proxy_peak_rss_kib).max(),
        loadgen_cores: of(&|s| s.loadgen_cores),
    }
}

/// Starts HAProxy in front of `backend` (`mode tcp`; `mode http` for the web service, with
/// keep-alive on both sides, its default); returns it and its front address.
fn start_haproxy(
    env: &Env,
    haproxy: &Path,
    backend: SocketAddr,
    service: Service,
) -> Result<(Proc, SocketAddr), ProcError> {
    let port = procs::free_port()?;
    let front = SocketAddr::from(([127, 0, 0, 1], port));
    // Timeouts as long as resh's idle timeout; maxconn well above the bench's connections (and
    // low enough that HAProxy's file-descriptor need, about twice maxconn, fits common limits).
    let config = format!(
        "global\n    nbthread {threads}\n    maxconn 4096\n\n\
         defaults\n    mode {mode}\n    timeout connect 5s\n    timeout client 300s\n    timeout server 300s\n    maxconn 4096\n\n\
         frontend bench\n    bind {front}\n    default_backend replica\n\n\
         backend replica\n    server r1 {backend}\n",
        threads = env.threads,
        mode = if service == Service::Web { "http" } else { "tcp" },
    );
    let path = env.dir.join(format!("haproxy-{}.cfg", service.name()));
    write_config(&path, config)?;
    let mut proc = Proc::spawn(
        "haproxy",
        Command::new(haproxy).arg("-db").arg("-f").arg(&path),
        &env.dir.join(format!("haproxy-{}.log", service.name())),
    )?;
    procs::wait_listening(front, &mut proc, Duration::from_secs(10))?;
    Ok((proc, front))
}

/// Writes a resh configuration for `n` replicas of `service` and starts `resh run` on it.
/// (`replica`: a replica's `command`, as TOML.)
fn start_resh(
    env: &Env,
    resh: &Path,
    service: Service,
    name: &str,
    n: usize,
    ordered: bool,
    replica: &str,
) -> Result<ReshProc, ProcError> {
    let mut config = String::from("listen = \"127.0.0.1:0\"\nmax_sessions = 16384\n");
    let protocol = if service == Service::Web { "http" } else { "resp" };
    match (ordered, service == Service::Web) {
        (true, _) => config.push_str(&format!("[vote]\nmode = \"ordered\"\nprotocol = \"{protocol}\"\n")),
        (false, true) => config.push_str("[vote]\nprotocol = \"http\"\n"),
        (false, false) => {}
    }
    config.push_str("[session]\nidle_timeout_ms = 600000\n[admin]\nlisten = \"\"\n");
    for i in 1..=n {
        config.push_str(&format!("[[replica]]\nname = \"r{i}\"\ncommand = {replica}\n"));
    }
    let path = env.dir.join(format!("{name}-{}.toml", service.name()));
    write_config(&path, config)?;
    procs::start_resh(resh, name, &path, env.threads, &env.dir.join(format!("{name}-{}.log", service.name())))
}

/// A replica's `command` (TOML) that runs `program --port {port}`.
fn port_command(program: &Path) -> String {
    format!("[{:?}, \"--port\", \"{{port}}\"]", program.display().to_string())
}

/// Writes a configuration file of a process the bench starts.
fn write_config(path: &Path, text: String) -> Result<(), ProcError> {
    Ok(std::fs::write(path, text).map_err(FileError::on("write", path))?)
}

/// Idle sessions opened at once before a short pause.
const IDLE_BURST: usize = 25;

/// Opens `sessions` idle client sessions to a fresh resh (N=3, stream mode, echo replicas) and
/// reads its RSS before, with them connected, and after one small echo on each.
fn idle_memory(env: &Env, sessions: usize) -> Result<IdleMemory, IdleError> {
    let echo = env.bins.echo.as_deref().unwrap_or(Path::new("resh-echo"));
    let resh = start_resh(env, &env.bins.resh, Service::Echo, "idle", 3, false, &port_command(echo))?;
    let pid = resh.proc.pid();
    let addr = resh.clients;
    env.runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // One session first, so what is allocated once per process is not counted per session.
        let mut warm =
            tokio::net::TcpStream::connect(addr).await.map_err(|error| IdleError::Connect { session: 0, error })?;
        echo_once(&mut warm).await?;
        drop(warm);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = settled_rss(pid).await?;
        let mut conns = Vec::with_capacity(sessions);
        for i in 0..sessions {
            let c = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|error| IdleError::Connect { session: i + 1, error })?;
            conns.push(c);
            if i % IDLE_BURST == IDLE_BURST - 1 {
                // Paced: every session opens a connection to each replica, and a burst of
                // thousands would overflow a replica's accept queue (resh-echo's is 128), which
                // resh rightly reports as a replica that cannot be reached.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Sessions connect to their replicas as they are accepted; the RSS settles once all
        // are set up.
        let connected = settled_rss(pid).await?;
        for c in &mut conns {
            c.write_all(&[7u8; 64]).await.map_err(IdleError::Send)?;
        }
        for c in &mut conns {
            let mut buf = [0u8; 64];
            c.read_exact(&mut buf).await.map_err(IdleError::Receive)?;
        }
        let after = settled_rss(pid).await?;
        drop(conns);
        let per = |kib: u64| (kib.saturating_sub(before) as f64 * 1024.0) / sessions as f64;
        Ok(IdleMemory {
            sessions,
            rss_before_kib: before,
            rss_connected_kib: connected,
            rss_after_echo_kib: after,
            bytes_per_session: per(connected),
            bytes_per_session_after_echo: per(after),
        })
    })
}

async fn echo_once(stream: &mut tokio::net::TcpStream) -> Result<(), IdleError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(&[7u8; 64]).await.map_err(IdleError::Send)?;
    let mut buf = [0u8; 64];
    stream.read_exact(&mut buf).await.map_err(IdleError::Receive)?;
    Ok(())
}

/// resh's RSS once it stopped changing (for 500 ms; at most 10 s), KiB.
async fn settled_rss(pid: u32) -> Result<u64, IdleError> {
    let read = || procs::status_kib(pid, "VmRSS").ok_or(IdleError::Rss(pid));
    let mut last = read()?;
    let mut stable_since = tokio::time::Instant::now();
    let deadline = stable_since + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now_rss = read()?;
        let now = tokio::time::Instant::now();
        if now_rss != last {
            last = now_rss;
            stable_since = now;
        } else if now.duration_since(stable_since) >= Duration::from_millis(500) || now >= deadline {
            return Ok(last);
        }
    }
}
