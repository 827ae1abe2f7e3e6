//! The watchdog: kills the replicas' process groups when resh dies, even by SIGKILL.
//!
//! Each command replica runs in a process group of its own, and its first process gets
//! `PR_SET_PDEATHSIG`; but the death signal is not inherited, so a replica started through a
//! wrapper (`sh -c "server ...; echo"`) would leave the real server running under PID 1 when
//! resh is killed without a chance to stop it. The watchdog is a small `sh` process, in a
//! process group of its own and deaf to SIGINT, SIGTERM and SIGHUP, that reads
//! `+ PGID` / `- PGID` lines on a pipe from resh: the groups that are alive. When the pipe
//! closes (resh exited, however it did), it kills every group still listed and exits. A normal
//! stop removes each group first, so nothing is left to kill.
//!
//! Why a process and not a sweep of leftovers at the next start: the leftovers would keep
//! their ports, files and memory (and keep answering a load balancer) until someone starts resh
//! again, which may be never.
use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

use tracing::warn;

/// The watchdog's script (POSIX sh; the groups are kept as a space-separated list).
const SCRIPT: &str = r#"trap '' INT TERM HUP
groups=' '
while read -r op pg; do
  case "$op" in
    +) groups="$groups$pg " ;;
    -) case "$groups" in *" $pg "*) groups="${groups%% $pg *} ${groups#* $pg }" ;; esac ;;
  esac
done
for pg in $groups; do kill -s KILL -- "-$pg" 2>/dev/null; done
"#;

/// The watchdog process and the pipe to it.
#[derive(Debug)]
pub struct Watchdog {
    inner: Mutex<Option<(Child, ChildStdin)>>,
}

impl Watchdog {
    /// Starts the watchdog. Without one (no `sh`), replicas still die with resh when it stops
    /// normally, and their first process when it is killed: that is logged, not fatal.
    pub fn start() -> Watchdog {
        let mut command = Command::new("sh");
        command.args(["-c", SCRIPT, "resh-watchdog"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
        // Its own group: a Ctrl-C at resh's terminal (SIGINT to the foreground group) must not
        // take it down before resh has stopped the replicas.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let inner = match command.spawn() {
            Ok(mut child) => child.stdin.take().map(|stdin| (child, stdin)),
            Err(e) => {
                warn!(error = %e, "cannot start the watchdog (sh): replicas started through a wrapper may outlive resh if it is killed");
                None
            }
        };
        Watchdog { inner: Mutex::new(inner) }
    }

    /// Process group `pgid` is alive: kill it if resh dies.
    pub fn watch(&self, pgid: u32) {
        self.say('+', pgid);
    }

    /// Process group `pgid` was stopped by resh.
    pub fn forget(&self, pgid: u32) {
        self.say('-', pgid);
    }

    fn say(&self, op: char, pgid: u32) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, stdin)) = inner.as_mut() {
            // A line is far below the pipe's buffer and the watchdog reads at once: this does
            // not block in practice.
            if let Err(e) = writeln!(stdin, "{op} {pgid}") {
                warn!(error = %e, "the watchdog is gone: replicas started through a wrapper may outlive resh if it is killed");
                *inner = None;
            }
        }
    }

    /// Closes the pipe (the watchdog kills what is still listed, normally nothing) and reaps it.
    pub fn stop(&self) {
        let taken = self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((mut child, stdin)) = taken {
            drop(stdin);
            // It exits as soon as it read the end of the pipe; reaped off the async threads.
            std::thread::spawn(move || {
                let _ = child.wait();
            });
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}
