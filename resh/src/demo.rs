//! `resh demo`: N-version programming in one command.
//!
//! Starts three diverse versions of a key-value service (async Rust `resh-kv`, Python asyncio
//! `kv.py`, and `redis-server` when it is installed, otherwise the threaded Rust
//! `resh-kv-threads`) behind resh in ordered mode, and runs a workload of several clients that
//! check every answer they get. Half-way, a bug is planted in the Rust version (it starts
//! answering one key wrongly, the way a software fault in one version would). The progress
//! line shows requests, wrong answers seen by clients, and each version's faults and restarts;
//! at the end the demo checks that no client saw a wrong answer, that the buggy version was
//! caught, restarted and resynchronised, and that all three versions hold the same state.
//!
//! The scenario lives with the other tools in the `resh` crate: it drives a whole resh
//! ([`netdomain::InProcess`]) and the `demo` crate, which holds the services, stays free of the
//! Domain-NV.
use std::io::{self, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use netdomain::codec::resp::Resp;
use netdomain::codec::{Codec, ProtocolError};
use netdomain::config::{Config, ConfigError};
use netdomain::{InProcessError, Running};

use crate::error::FileError;

/// The Python version's source, carried in the binary so the demo runs from anywhere.
const KV_PY: &str = include_str!("../../demo/kv.py");

/// The key the planted bug answers wrongly.
const BUGGY_KEY: &str = "demo:answer";

/// What the demo is asked to do.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// How long the workload runs.
    pub duration: Duration,
    /// How many clients run it.
    pub clients: usize,
    /// Stay up afterwards (for `redis-cli`; for curl in the web demo).
    pub keep: bool,
}

/// Why the demo could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The system: a file or directory of the demo could not be made.
    #[error(transparent)]
    File(#[from] FileError),
    /// The system: the running resh executable cannot be found.
    #[error("cannot find the resh binary: {0}")]
    CurrentExe(#[source] io::Error),
    /// The setup: a demo service is not built next to resh.
    #[error("{} not found next to resh: build the demo services with `cargo build -p demo`", .0.display())]
    MissingService(PathBuf),
    /// The setup: python3 is not installed.
    #[error("python3 is needed for the Python version of the demo service")]
    NoPython,
    /// resh itself: the configuration the demo wrote is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// resh could not be started.
    #[error("cannot start resh: {0}")]
    Start(#[from] InProcessError),
    /// The versions: not all of them started.
    #[error("only {ready} of {total} versions started (see the log)")]
    NotReady {
        /// Versions ready.
        ready: usize,
        /// Versions configured.
        total: usize,
    },
    /// resh: the request that sets up the workload failed.
    #[error("setting up the workload: {0}")]
    Setup(#[from] ClientError),
    /// The bug could not be planted.
    #[error(transparent)]
    Plant(#[from] PlantError),
}

/// Why a demo's planted bug could not be armed (with SIGUSR1) in a version.
#[derive(Debug, thiserror::Error)]
pub enum PlantError {
    /// The version has no process to plant the bug in.
    #[error("version {0} is not running")]
    NotRunning(String),
    /// The system: `kill` could not be run.
    #[error("cannot run kill to signal version {version} (pid {pid}): {error}")]
    Kill {
        /// The version.
        version: String,
        /// Its pid.
        pid: u32,
        /// The OS error.
        #[source]
        error: io::Error,
    },
    /// The version: the signal was not delivered.
    #[error("cannot signal version {version} (pid {pid}): kill {status}")]
    Signal {
        /// The version.
        version: String,
        /// Its pid.
        pid: u32,
        /// How `kill` exited.
        status: ExitStatus,
    },
}

/// Why a request of the demo's RESP client failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// resh or a version: nothing accepts connections at the address.
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        error: io::Error,
    },
    /// The connection failed while sending.
    #[error("cannot send a request: {0}")]
    Send(#[source] io::Error),
    /// The connection failed while reading.
    #[error("cannot read an answer: {0}")]
    Receive(#[source] io::Error),
    /// The server: its answer is not RESP.
    #[error("malformed answer: {0}")]
    Malformed(#[from] ProtocolError),
    /// The server: no answer in time.
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
    /// The server closed the connection.
    #[error("connection closed")]
    Closed,
    /// The server: an answer other than the one a correct service gives.
    #[error("{request} answered {answer:?}")]
    Unexpected {
        /// The request, as its arguments.
        request: String,
        /// The answer.
        answer: String,
    },
}

/// Why the versions' states could not be shown to be the same.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The version is not running: it has no address.
    #[error("version {0} has no address")]
    NoAddress(String),
    /// The version could not be asked.
    #[error("version {version}: {error}")]
    Client {
        /// The version.
        version: String,
        /// What failed.
        #[source]
        error: ClientError,
    },
    /// The versions hold different states.
    #[error("version {version} differs from version {reference}")]
    Differs {
        /// The version that differs.
        version: String,
        /// The version it was compared with.
        reference: String,
    },
}

/// How long the demo's client waits for an answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters the clients share.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) requests: AtomicU64,
    pub(crate) wrong: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// Runs the demo; `Ok(true)` when everything it shows held.
pub async fn run(options: DemoOptions) -> Result<bool, DemoError> {
    let work = std::env::temp_dir().join(format!("resh-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(FileError::on("create", &work))?;
    let result = run_in(&options, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn run_in(options: &DemoOptions, work: &Path) -> Result<bool, DemoError> {
    let config = demo_config(work)?;
    let versions: Vec<String> = config.replicas.iter().map(|r| r.name.clone()).collect();
    println!("resh demo: three versions of one key-value service behind resh (ordered mode, RESP)");
    for r in &config.replicas {
        let argv: Vec<String> = r
            .command
            .iter()
            .flatten()
            .map(|a| if a.is_empty() || a.contains(' ') { format!("{a:?}") } else { a.clone() })
            .collect();
        println!("  version {:<8} {}", r.name, argv.join(" "));
    }

    let resh = netdomain::InProcess::start(config).await?;
    let running = resh.running.clone();
    let supervisor = Arc::clone(&running.shared.supervisor);
    if supervisor.ready_count() < versions.len() {
        let ready = supervisor.ready_count();
        resh.stop(Duration::from_secs(10)).await;
        return Err(DemoError::NotReady { ready, total: versions.len() });
    }
    println!("  resh serves clients on {}\n", running.clients);

    // Everybody reads this key; the Rust version will start getting it wrong.
    let mut setup = Client::connect(running.clients).await?;
    expect(&mut setup, &["SET", BUGGY_KEY, "42"], b"+OK\r\n").await?;

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let deadline = started + options.duration;
    let clients: Vec<_> =
        (0..options.clients).map(|c| tokio::spawn(client(c, running.clients, deadline, Arc::clone(&tally)))).collect();

    let injected = format!("version 'rust' now answers GET {BUGGY_KEY} wrongly (a planted bug)");
    let repaired =
        run_workload(&running, options, (started, &tally), clients, ("rust", &injected), "resh demo").await?;
    // The sequencer replays the history to the restarted version before it votes again; its
    // state matches once that is done.
    let mut identical = same_state(&running, options.clients).await;
    for _ in 0..40 {
        if identical.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        identical = same_state(&running, options.clients).await;
    }

    let status = supervisor.status();
    print_result(&tally, &status);
    let wrong = tally.wrong.load(Ordering::Relaxed);
    let errors = tally.errors.load(Ordering::Relaxed);
    let caught = status.iter().any(|r| r.name == "rust" && r.faults.iter().any(|(k, n)| k == "diverged" && *n > 0));
    match &identical {
        Ok(()) => println!("  all three versions hold the same state"),
        Err(e) => println!("  STATE DIFFERS: {e}"),
    }
    let ok = wrong == 0 && errors == 0 && caught && repaired && identical.is_ok();
    if ok {
        println!("\nthe planted bug was outvoted: clients only ever saw the majority's answers;");
        println!("resh named the faulty version, restarted it and replayed the history to it.");
    } else {
        println!("\nthe demo did NOT go as expected (caught: {caught}, repaired: {repaired})");
    }

    if options.keep {
        println!(
            "\nresh keeps running: try `redis-cli -p {}` (admin API: {}); Ctrl-C stops it",
            running.clients.port(),
            running.admin.map(|a| format!("http://{a}/status")).unwrap_or_else(|| "off".into())
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    resh.stop(Duration::from_secs(10)).await;
    Ok(ok)
}

/// The demo's resh configuration: ordered mode, the three versions, the planted bug dormant.
fn demo_config(work: &Path) -> Result<Config, DemoError> {
    let here = std::env::current_exe().map_err(DemoError::CurrentExe)?;
    let bin_dir = here.parent().map(Path::to_path_buf).unwrap_or_default();
    let bin = |name: &str| -> Result<PathBuf, DemoError> {
        let path = bin_dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(DemoError::MissingService(path))
        }
    };
    let kv = bin("resh-kv")?;
    if !on_path("python3") {
        return Err(DemoError::NoPython);
    }
    let kv_py = work.join("kv.py");
    std::fs::write(&kv_py, KV_PY).map_err(FileError::on("write", &kv_py))?;
    let fired = work.join("bug-fired");
    let quote = |p: &Path| format!("{:?}", p.display().to_string());
    let third = if on_path("redis-server") {
        "name = \"redis\"\ncommand = [\"redis-server\", \"--port\", \"{port}\", \"--bind\", \"127.0.0.1\", \"--save\", \"\", \"--appendonly\", \"no\"]".to_string()
    } else {
        format!("name = \"threads\"\ncommand = [{}, \"--port\", \"{{port}}\"]", quote(&bin("resh-kv-threads")?))
    };
    let text = format!(
        r#"listen = "127.0.0.1:0"
[vote]
mode = "ordered"
protocol = "resp"
[ordered]
allow = ["PING", "ECHO", "SET", "GET", "DEL", "EXISTS", "INCR", "DECR", "MGET", "MSET", "LPUSH", "LPOP", "LLEN", "LRANGE", "CONFIG"]
[admin]
listen = "127.0.0.1:0"
[[replica]]
name = "rust"
command = [{kv}, "--port", "{{port}}", "--wrong-get", "{BUGGY_KEY}", "--arm-on-signal", "--once", {fired}]
[[replica]]
name = "python"
command = ["python3", {kv_py}, "--port", "{{port}}"]
[[replica]]
{third}
"#,
        kv = quote(&kv),
        fired = quote(&fired),
        kv_py = quote(&kv_py),
    );
    Ok(Config::parse(&text, "the demo configuration")?)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Arms the planted bug of `version` (it waits for SIGUSR1).
pub(crate) fn plant_bug(running: &Running, version: &str) -> Result<(), PlantError> {
    let status = running.shared.supervisor.status();
    let pid = status
        .iter()
        .find(|r| r.name == version)
        .and_then(|r| r.pid)
        .ok_or_else(|| PlantError::NotRunning(version.into()))?;
    let sent = std::process::Command::new("kill").args(["-USR1", &pid.to_string()]).status();
    match sent {
        Ok(s) if s.success() => Ok(()),
        Ok(status) => Err(PlantError::Signal { version: version.into(), pid, status }),
        Err(error) => Err(PlantError::Kill { version: version.into(), pid, error }),
    }
}

/// The middle of a demo: `clients` (spawned at `started`, running until `options.duration`
/// is over) check every answer; half-way the bug of `bug.0` is planted (`bug.1` says what it
/// does), and the progress is shown. Returns, once the clients are done, whether the buggy
/// version was restarted (caught) and is ready again within 15 s.
pub(crate) async fn run_workload<E: std::fmt::Display>(
    running: &Running,
    options: &DemoOptions,
    (started, tally): (Instant, &Tally),
    clients: Vec<tokio::task::JoinHandle<Result<(), E>>>,
    bug: (&str, &str),
    demo: &str,
) -> Result<bool, PlantError> {
    let mut show = Show::new();
    let mut injected = false;
    while started.elapsed() < options.duration {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !injected && started.elapsed() >= options.duration / 2 {
            injected = true;
            plant_bug(running, bug.0)?;
            if show.terminal {
                println!();
            }
            println!("  >> injecting a fault: {}", bug.1);
        }
        show.tick(running, tally, started.elapsed());
    }
    join_clients(clients, tally, demo).await;
    if show.terminal {
        println!();
    }
    let supervisor = &running.shared.supervisor;
    Ok(wait_for(Duration::from_secs(15), || {
        supervisor.status().iter().any(|r| r.name == bug.0 && r.incarnation >= 2 && r.state == "ready")
    })
    .await)
}

/// The clients' end: a client that failed counts as an error (`demo`: for the message).
async fn join_clients<E: std::fmt::Display>(
    clients: Vec<tokio::task::JoinHandle<Result<(), E>>>,
    tally: &Tally,
    demo: &str,
) {
    for c in clients {
        if let Ok(Err(e)) = c.await {
            tally.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("\n{demo}: a client failed: {e}");
        }
    }
}

/// The result lines: what the clients saw, then each version's state, faults and restarts.
pub(crate) fn print_result(tally: &Tally, status: &[replicas::ReplicaStatus]) {
    println!("\nresult:");
    println!(
        "  clients sent {} requests; wrong answers seen by clients: {}; errors: {}",
        tally.requests.load(Ordering::Relaxed),
        tally.wrong.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed)
    );
    // A column a space wider than the longest name, at least 8.
    let width = status.iter().map(|r| r.name.len() + 1).max().unwrap_or(0).max(8);
    for r in status {
        let faults: Vec<String> = r.faults.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k} {n}")).collect();
        println!(
            "  version {:<width$} state {:<11} faults: {:<14} restarts: {}",
            r.name,
            r.state,
            if faults.is_empty() { "none".to_string() } else { faults.join(", ") },
            r.restarts
        );
    }
}

/// What the demos print while their workload runs: the progress line (redrawn in a terminal,
/// once a second otherwise), and a line when resh first catches a fault.
pub(crate) struct Show {
    pub(crate) terminal: bool,
    last_line: Instant,
    caught_shown: bool,
}

impl Show {
    pub(crate) fn new() -> Show {
        Show {
            terminal: std::io::stdout().is_terminal(),
            last_line: Instant::now() - Duration::from_secs(1),
            caught_shown: false,
        }
    }

    /// Called every 100 ms or so.
    pub(crate) fn tick(&mut self, running: &Running, tally: &Tally, elapsed: Duration) {
        if !self.caught_shown {
            if let Some(r) = running.shared.supervisor.status().into_iter().find(|r| r.faults.values().sum::<u64>() > 0)
            {
                self.caught_shown = true;
                if self.terminal {
                    println!();
                }
                println!("  >> resh: {}; restarting that version", r.last_fault.clone().unwrap_or_default());
            }
        }
        if self.terminal || self.last_line.elapsed() >= Duration::from_secs(1) {
            self.last_line = Instant::now();
            let line = progress(running, tally, elapsed);
            if self.terminal {
                print!("\r{line}\x1b[K");
                let _ = std::io::stdout().flush();
            } else {
                println!("{line}");
            }
        }
    }
}

/// The progress line: requests, wrong answers, and each version's state, faults and restarts.
pub(crate) fn progress(running: &Running, tally: &Tally, elapsed: Duration) -> String {
    let requests = tally.requests.load(Ordering::Relaxed);
    let rate = requests as f64 / elapsed.as_secs_f64().max(0.001);
    let mut line = format!(
        "  [{:5.1}s] requests {requests:>7} ({rate:>6.0}/s)  wrong {}",
        elapsed.as_secs_f64(),
        tally.wrong.load(Ordering::Relaxed)
    );
    for r in running.shared.supervisor.status() {
        let faults: u64 = r.faults.values().sum();
        line.push_str(&format!(" | {} {} f{} r{}", r.name, r.state, faults, r.restarts));
    }
    line
}

pub(crate) async fn wait_for(limit: Duration, check: impl Fn() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// One client of the workload: its own keys, a counter, a list, and the shared key; every
/// answer is checked against what a correct service must say.
async fn client(id: usize, addr: SocketAddr, deadline: Instant, tally: Arc<Tally>) -> Result<(), ClientError> {
    let mut c = Client::connect(addr).await?;
    let mut round: u64 = 0;
    let (count, list) = (format!("c{id}:count"), format!("c{id}:list"));
    while Instant::now() < deadline {
        round += 1;
        let key = format!("c{id}:k{}", round % 50);
        let value = format!("v{round}");
        let checks: [(Vec<&str>, Vec<u8>); 5] = [
            (vec!["SET", &key, &value], b"+OK\r\n".to_vec()),
            (vec!["GET", &key], format!("${}\r\n{value}\r\n", value.len()).into_bytes()),
            (vec!["INCR", &count], format!(":{round}\r\n").into_bytes()),
            (vec!["LPUSH", &list, &value], format!(":{round}\r\n").into_bytes()),
            (vec!["GET", BUGGY_KEY], b"$2\r\n42\r\n".to_vec()),
        ];
        for (args, want) in &checks {
            let got = c.call(args).await?;
            tally.requests.fetch_add(1, Ordering::Relaxed);
            if &got != want {
                tally.wrong.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// Reads every client's keys directly from each version and compares.
async fn same_state(running: &Running, clients: usize) -> Result<(), StateError> {
    let status = running.shared.supervisor.status();
    let mut first: Option<(String, Vec<Vec<u8>>)> = None;
    for r in &status {
        let addr: SocketAddr =
            r.addr.as_deref().and_then(|a| a.parse().ok()).ok_or_else(|| StateError::NoAddress(r.name.clone()))?;
        let state = version_state(addr, clients)
            .await
            .map_err(|error| StateError::Client { version: r.name.clone(), error })?;
        match &first {
            None => first = Some((r.name.clone(), state)),
            Some((name, reference)) if *reference != state => {
                return Err(StateError::Differs { version: r.name.clone(), reference: name.clone() });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Every client's keys, read from the version at `addr`.
async fn version_state(addr: SocketAddr, clients: usize) -> Result<Vec<Vec<u8>>, ClientError> {
    let mut c = Client::connect(addr).await?;
    let mut state = vec![c.call(&["GET", BUGGY_KEY]).await?];
    for id in 0..clients {
        state.push(c.call(&["GET", &format!("c{id}:count")]).await?);
        state.push(c.call(&["LRANGE", &format!("c{id}:list"), "0", "-1"]).await?);
        for k in 0..50 {
            state.push(c.call(&["GET", &format!("c{id}:k{k}")]).await?);
        }
    }
    Ok(state)
}

async fn expect(c: &mut Client, args: &[&str], want: &[u8]) -> Result<(), ClientError> {
    let got = c.call(args).await?;
    if got == want {
        Ok(())
    } else {
        Err(ClientError::Unexpected {
            request: format!("{args:?}"),
            answer: String::from_utf8_lossy(&got).into_owned(),
        })
    }
}

/// A minimal RESP client.
struct Client {
    stream: TcpStream,
    buf: BytesMut,
    codec: Resp,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr).await.map_err(|error| ClientError::Connect { addr, error })?;
        let _ = stream.set_nodelay(true);
        Ok(Client { stream, buf: BytesMut::with_capacity(4096), codec: Resp::new(1 << 24, None) })
    }

    async fn call(&mut self, args: &[&str]) -> Result<Vec<u8>, ClientError> {
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.stream.write_all(request.as_bytes()).await.map_err(ClientError::Send)?;
        loop {
            if let Some(len) = self.codec.response_len(&self.buf)? {
                return Ok(self.buf.split_to(len).to_vec());
            }
            let n = tokio::time::timeout(ANSWER_TIMEOUT, self.stream.read_buf(&mut self.buf))
                .await
                .map_err(|_| ClientError::NoAnswer(ANSWER_TIMEOUT))?
                .map_err(ClientError::Receive)?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
        }
    }
}
