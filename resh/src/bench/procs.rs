//! The processes a bench runs (services, HAProxy, `resh run`) and what `/proc` says about them.
//!
//! Every target is a real process, so the bench measures what a deployment would see: resh's
//! CPU time and peak RSS come from `/proc/PID/stat` and `/proc/PID/status` of the `resh run`
//! child, exactly as for HAProxy. Children are stopped with SIGTERM (then SIGKILL) when their
//! handle is dropped; replicas that resh starts die with it.
use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use crate::error::FileError;

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, 100 on every Linux port that
/// resh runs on).
const USER_HZ: f64 = 100.0;

/// The children running now, so that a bench stopped by a signal stops them too (the handles'
/// destructors do not run then).
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Vec<u32>> {
    RUNNING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sends SIGTERM to a process (`kill` is procps', present on every Debian).
fn terminate(pid: u32) {
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// On SIGINT or SIGTERM, stops every child the bench started (resh stops its replicas), then
/// exits with status 130. Runs a small signal-watching thread of its own.
pub fn stop_children_on_signal() {
    std::thread::spawn(|| {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        runtime.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut term) = signal(SignalKind::terminate()) else { return };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            let pids: Vec<u32> = running().clone();
            for pid in pids {
                terminate(pid);
            }
            eprintln!("resh bench: interrupted");
            std::process::exit(130);
        });
    });
}

/// Why a process of the bench could not be started, or stopped working.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The system: a log or configuration file could not be made.
    #[error(transparent)]
    File(#[from] FileError),
    /// The system (or a program that is not installed): the process could not be started.
    #[error("cannot start {name}: {error}")]
    Spawn {
        /// The program.
        name: String,
        /// The OS error.
        #[source]
        error: io::Error,
    },
    /// The process: it exited.
    #[error("{name} exited: {status}; its output:\n{output}")]
    Exited {
        /// What it is.
        name: String,
        /// How it exited.
        status: ExitStatus,
        /// What it wrote to its log.
        output: String,
    },
    /// The system: whether it runs could not be found out.
    #[error("{name}: cannot tell whether it runs: {error}")]
    Wait {
        /// What it is.
        name: String,
        /// The OS error.
        #[source]
        error: io::Error,
    },
    /// The system: no loopback port is free.
    #[error("cannot find a free port: {0}")]
    FreePort(#[source] io::Error),
    /// The process: it did not accept connections in time.
    #[error("{name} did not accept connections on {addr} within {timeout:?}")]
    NotListening {
        /// What it is.
        name: String,
        /// Where it should listen.
        addr: SocketAddr,
        /// How long it was given.
        timeout: Duration,
    },
    /// resh itself: the child's standard output was not captured.
    #[error("resh's standard output was not captured")]
    NoStdout,
    /// resh: it did not print where clients connect.
    #[error("{name} did not print its address; its log:\n{log}")]
    NoAddress {
        /// What it is.
        name: String,
        /// Its log.
        log: String,
    },
}

/// A child process, stopped when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    /// What it is, for messages.
    pub name: String,
    /// Where its output goes.
    log: PathBuf,
}

impl Proc {
    /// Starts `command` with its output going to `log` (a file in the bench's directory).
    pub fn spawn(name: &str, command: &mut Command, log: &Path) -> Result<Proc, ProcError> {
        let log_file = create_log(log)?;
        let err_file = log_file.try_clone().map_err(FileError::on("share the handle of", log))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .map_err(|error| ProcError::Spawn { name: name.to_string(), error })?;
        running().push(child.id());
        Ok(Proc { child, name: name.to_string(), log: log.to_path_buf() })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited already.
    pub fn check_alive(&mut self) -> Result<(), ProcError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                Err(ProcError::Exited { name: self.name.clone(), status, output: log.trim_end().to_string() })
            }
            Err(error) => Err(ProcError::Wait { name: self.name.clone(), error }),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id();
        running().retain(|&p| p != pid);
        stop(&mut self.child);
    }
}

/// Creates the file a child's output goes to.
fn create_log(path: &Path) -> Result<std::fs::File, ProcError> {
    Ok(std::fs::File::create(path).map_err(FileError::on("create", path))?)
}

/// Stops a child process and reaps it: SIGTERM (which lets resh stop its replicas), up to 5 s
/// to exit, then SIGKILL. Also what the end-to-end test harness stops its `resh run` with.
pub fn stop(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    terminate(child.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A free loopback port (bound, read, released: a small race with other programs, acceptable
/// on a bench machine).
pub fn free_port() -> Result<u16, ProcError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(ProcError::FreePort)?;
    listener.local_addr().map(|a| a.port()).map_err(ProcError::FreePort)
}

/// Waits until something accepts connections on `addr`.
pub fn wait_listening(addr: SocketAddr, proc: &mut Proc, timeout: Duration) -> Result<(), ProcError> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        proc.check_alive()?;
        if Instant::now() >= deadline {
            return Err(ProcError::NotListening { name: proc.name.clone(), addr, timeout });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `resh run` child and the client address it printed.
#[derive(Debug)]
pub struct ReshProc {
    /// The process.
    pub proc: Proc,
    /// Where clients connect.
    pub clients: SocketAddr,
}

/// Starts `resh run -c <config>` and waits for its `resh: clients on ADDR` line.
pub fn start_resh(resh: &Path, name: &str, config: &Path, threads: usize, log: &Path) -> Result<ReshProc, ProcError> {
    let log_file = create_log(log)?;
    let mut child = Command::new(resh)
        .args(["--log", "warn", "run", "--threads", &threads.to_string(), "-c"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(|error| ProcError::Spawn { name: resh.display().to_string(), error })?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        return Err(ProcError::NoStdout);
    };
    running().push(child.id());
    let mut proc = Proc { child, name: name.to_string(), log: log.to_path_buf() };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Reads to the end, so resh never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) => {
                if let Some(addr) = line.strip_prefix("resh: clients on ").and_then(|a| a.trim().parse().ok()) {
                    return Ok(ReshProc { proc, clients: addr });
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => proc.check_alive()?,
            Err(_) => {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                return Err(ProcError::NoAddress { name: name.to_string(), log });
            }
        }
    }
}

/// CPU time (user + system) of a process so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    // utime and stime are fields 14 and 15 of stat(5), i.e. 12 and 13 after the name.
    stat_seconds(&format!("/proc/{pid}"), 11)
}

/// CPU time (user + system) of this process's children that it waited for (wrk), in seconds.
pub fn children_cpu_seconds() -> Option<f64> {
    // cutime and cstime are fields 16 and 17 of stat(5), i.e. 14 and 15 after the name.
    stat_seconds("/proc/self", 13)
}

/// Two adjacent clock-tick fields of `<dir>/stat`, `index` and the next one counted from the
/// first field after the command name, summed, in seconds.
fn stat_seconds(dir: &str, index: usize) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let first: u64 = fields.get(index)?.parse().ok()?;
    let second: u64 = fields.get(index + 1)?.parse().ok()?;
    Some((first + second) as f64 / USER_HZ)
}

/// The parent pid of a process.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split_whitespace().nth(1)?.parse().ok()
}

/// The processes whose parent is `pid` (resh's replicas).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| parent(p) == Some(pid))
        .collect()
}

/// A line of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?;
    line[key.len() + 1..].split_whitespace().next()?.parse().ok()
}

/// Resets a process's peak RSS (`VmHWM`) to its current RSS, so the next reading is the peak
/// of what follows (`echo 5 > /proc/PID/clear_refs`; we own the child, so this is allowed).
/// Returns false where the kernel does not allow it: the peak is then since the start.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Finds a program on the PATH (or in the sbin directories, where Debian puts haproxy).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].into_iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(status_kib(me, "VmRSS").is_some_and(|k| k > 0));
        assert!(parent(me).is_some());
    }
}
