//! The replica supervisor: one monitor task per replica.
//!
//! Phases of a replica, as `/status` shows them:
//! - `starting`: the command was started (or the address is being probed) and resh is waiting
//!   until it accepts a TCP connection;
//! - `ready`: admitted: new sessions connect to it;
//! - `quarantined`: a vote found it faulty; no new session goes to it until it was repaired
//!   (a command replica is killed and started afresh; an address replica is probed again after
//!   the quarantine period);
//! - `restarting`: its process exited (or never became ready) and resh waits out the backoff;
//! - `stopped`: resh is shutting down.
//!
//! Every start or readmission begins a new *incarnation*. Sessions report faults with the
//! incarnation they connected to; a fault from an older incarnation is counted but does not
//! quarantine the replica again (it was already repaired).
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};
use voter::FaultKind;

use crate::inject::{Injector, Tap};
use crate::spec::{Launch, ReplicaSpec};
use crate::sys;
use crate::watchdog::Watchdog;

/// How many of a replica's last standard-error lines are kept, to be logged when it exits with
/// an error (the lines themselves are logged at debug as they come).
const STDERR_TAIL_LINES: usize = 10;
/// The longest stderr line kept, in characters (a replica that writes one huge line must not
/// cost memory).
const STDERR_LINE_CHARS: usize = 512;

/// Timing of the supervisor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SupervisorConfig {
    /// How long a started replica may take to accept connections.
    pub ready_timeout: Duration,
    /// First wait before restarting a replica that exited; doubled after every failed start.
    pub restart_backoff: Duration,
    /// The longest wait between restarts.
    pub restart_backoff_max: Duration,
    /// How long an address replica stays quarantined before it is probed again.
    pub quarantine: Duration,
    /// How often a starting replica is probed.
    pub probe_interval: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            ready_timeout: Duration::from_secs(10),
            restart_backoff: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(5),
            quarantine: Duration::from_secs(1),
            probe_interval: Duration::from_millis(25),
        }
    }
}

/// Where a replica is in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Started or being probed, not yet accepting connections.
    Starting,
    /// Admitted: new sessions connect to it.
    Ready,
    /// Found faulty; being repaired.
    Quarantined,
    /// Exited; waiting out the restart backoff.
    Restarting,
    /// resh is shutting down.
    Stopped,
}

impl Phase {
    /// Every phase, in life-cycle order.
    pub const ALL: [Phase; 5] = [Phase::Starting, Phase::Ready, Phase::Quarantined, Phase::Restarting, Phase::Stopped];

    /// The name used in the admin API and in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Quarantined => "quarantined",
            Phase::Restarting => "restarting",
            Phase::Stopped => "stopped",
        }
    }
}

/// What [`Supervisor::report_fault`] made of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reported {
    /// The incarnation's fault: counted (and the replica quarantined if it was admitted).
    Fault,
    /// A consequence of a fault already counted against the incarnation (its repair or its
    /// exit), or of its removal: counted as such, not as a fault.
    Consequence,
    /// resh is stopping its replicas: what sessions see of that is nobody's fault, and is not
    /// counted.
    Stopping,
}

/// A replica a new session may connect to.
#[derive(Clone, Debug)]
pub struct Admitted {
    /// The replica's index in the configuration.
    pub index: usize,
    /// Its name.
    pub name: Arc<str>,
    /// Where it accepts connections.
    pub addr: SocketAddr,
    /// Its incarnation when admitted (see the module docs).
    pub incarnation: u64,
    /// Where a stream session records its timing (see [`ReplicaTiming`]), without a lock.
    pub timing: Arc<ReplicaTiming>,
}

/// A replica as `/status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaStatus {
    /// Its number (a reload may leave gaps: removed replicas are not listed).
    #[serde(skip)]
    pub index: usize,
    /// Its name.
    pub name: String,
    /// Its version label.
    pub version: String,
    /// `command` or `address`.
    pub launch: &'static str,
    /// Its life-cycle phase.
    pub state: &'static str,
    /// Where it accepts connections, once known.
    pub addr: Option<String>,
    /// The process id of a command replica that is running.
    pub pid: Option<u32>,
    /// The current incarnation (1 for the first start).
    pub incarnation: u64,
    /// Sessions that used it.
    pub sessions: u64,
    /// Faults found, by kind (every kind, zero included).
    pub faults: std::collections::BTreeMap<String, u64>,
    /// How many times it was restarted (after an exit, a failed start or a quarantine).
    pub restarts: u64,
    /// Faults reported against an incarnation that already had one counted: sessions that
    /// lost the replica to that fault's repair (resh killing it) or to its exit. They are the
    /// repair's consequences, not new faults.
    pub repair_cuts: u64,
    /// Bytes of output resh read from it (answers, in ordered mode), in all sessions.
    pub output_bytes: u64,
    /// Stream mode: how long it takes to start answering a client's input, in milliseconds, a
    /// moving average over about its last 16 answers in all sessions (`None` before the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_ms: Option<f64>,
    /// Stream mode: how far its output trails the vote, in milliseconds: how long before it
    /// produced them its bytes had been released on a quorum's word (zero while it keeps up),
    /// a moving average over about its last 16 reads in all sessions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trail_ms: Option<f64>,
    /// The last fault, as a sentence.
    pub last_fault: Option<String>,
    /// How its last process ended.
    pub last_exit: Option<String>,
}

#[derive(Debug)]
struct ManagedState {
    phase: Phase,
    addr: Option<SocketAddr>,
    pid: Option<u32>,
    incarnation: u64,
    last_fault: Option<String>,
    last_exit: Option<String>,
    /// Why its last probe failed, until it is ready.
    not_ready: Option<String>,
    /// The newest incarnation a fault was counted against: one per incarnation.
    counted: u64,
}

/// One replica's state, shared by its monitor task, the sessions and the admin server.
#[derive(Debug)]
struct ManagedReplica {
    index: usize,
    spec: ReplicaSpec,
    name: Arc<str>,
    state: Mutex<ManagedState>,
    /// Wakes the monitor when the replica is quarantined. A wake-up is only a hint: the monitor
    /// acts on it only if the incarnation it watches is the one quarantined (see
    /// [`ManagedReplica::quarantine_of`]), since a permit left over from an earlier incarnation (a fault
    /// reported while the monitor was busy with that incarnation's exit) must not kill the next.
    quarantined: Notify,
    sessions: AtomicU64,
    faults: [AtomicU64; FaultKind::NAMES.len()],
    restarts: AtomicU64,
    repair_cuts: AtomicU64,
    output_bytes: AtomicU64,
    timing: Arc<ReplicaTiming>,
    /// The last lines its process wrote on standard error.
    stderr_tail: Mutex<VecDeque<String>>,
    /// The task that reads its standard error, until the process's end.
    stderr_task: Mutex<Option<JoinHandle<()>>>,
    watchdog: Arc<Watchdog>,
    /// Tells its monitor to stop it: resh stops, or the replica was removed.
    stop: watch::Sender<bool>,
    /// Removed from the configuration while resh runs: no session is admitted to it, and it
    /// is left out of `/status` (its index stays taken, so that older sessions' reports about
    /// it still name it).
    removed: std::sync::atomic::AtomicBool,
}

impl ManagedReplica {
    /// The state lock; a panic elsewhere while it was held leaves the state usable, so a
    /// poisoned lock is taken over rather than propagated.
    fn state(&self) -> MutexGuard<'_, ManagedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_phase(&self, phase: Phase) {
        self.state().phase = phase;
    }

    fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    fn new(index: usize, spec: ReplicaSpec, watchdog: &Arc<Watchdog>) -> ManagedReplica {
        ManagedReplica {
            index,
            name: spec.name.as_str().into(),
            spec,
            state: Mutex::new(ManagedState {
                phase: Phase::Starting,
                addr: None,
                pid: None,
                incarnation: 0,
                last_fault: None,
                last_exit: None,
                not_ready: None,
                counted: 0,
            }),
            quarantined: Notify::new(),
            sessions: AtomicU64::new(0),
            faults: Default::default(),
            restarts: AtomicU64::new(0),
            repair_cuts: AtomicU64::new(0),
            output_bytes: AtomicU64::new(0),
            timing: Arc::default(),
            stderr_tail: Mutex::new(VecDeque::new()),
            stderr_task: Mutex::new(None),
            watchdog: Arc::clone(watchdog),
            stop: watch::channel(false).0,
            removed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn stderr_tail(&self) -> MutexGuard<'_, VecDeque<String>> {
        self.stderr_tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until incarnation `incarnation` is quarantined; stale wake-ups are ignored.
    async fn quarantine_of(&self, incarnation: u64) {
        loop {
            {
                let state = self.state();
                if state.phase == Phase::Quarantined && state.incarnation == incarnation {
                    return;
                }
            }
            self.quarantined.notified().await;
        }
    }
}

/// The most replicas one resh runs in its life, removed ones included (each keeps its index).
pub const MAX_SLOTS: usize = 64;

/// Why a replica could not be added while resh runs.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// The user's configuration: a running replica has that name.
    #[error("a replica named {0} is running already")]
    NameTaken(String),
    /// resh's own limit.
    #[error("this resh has run {MAX_SLOTS} replicas (removed ones included); restart it to add more")]
    Full,
    /// resh is stopping.
    #[error("resh is stopping")]
    Stopping,
}

/// Keeps the replicas running and admitted. Created with [`Supervisor::start`].
#[derive(Debug)]
pub struct Supervisor {
    /// By index; a replica removed while resh runs stays, marked removed.
    slots: std::sync::RwLock<Vec<Arc<ManagedReplica>>>,
    config: SupervisorConfig,
    stopping: std::sync::atomic::AtomicBool,
    monitors: Mutex<Vec<JoinHandle<()>>>,
    /// Armed data-path injections and the injection log (see [`crate::inject`]).
    injector: Arc<Injector>,
    watchdog: Arc<Watchdog>,
}

impl Supervisor {
    /// Starts one monitor task per replica on the current tokio runtime.
    pub fn start(specs: Vec<ReplicaSpec>, config: SupervisorConfig) -> Arc<Supervisor> {
        let watchdog = Arc::new(Watchdog::start());
        let slots: Vec<Arc<ManagedReplica>> = specs
            .into_iter()
            .enumerate()
            .map(|(index, spec)| Arc::new(ManagedReplica::new(index, spec, &watchdog)))
            .collect();
        let monitors = slots.iter().map(|slot| spawn_monitor(Arc::clone(slot), &config)).collect();
        let injector = Injector::new(slots.iter().map(|s| Arc::clone(&s.name)).collect(), MAX_SLOTS);
        Arc::new(Supervisor {
            slots: std::sync::RwLock::new(slots),
            config,
            stopping: std::sync::atomic::AtomicBool::new(false),
            monitors: Mutex::new(monitors),
            injector,
            watchdog,
        })
    }

    /// The slots, read (short: never held across an await).
    fn slots(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<ManagedReplica>>> {
        self.slots.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The slot of replica `index`, removed or not.
    fn slot(&self, index: usize) -> Option<Arc<ManagedReplica>> {
        self.slots().get(index).cloned()
    }

    /// Starts a replica while resh runs (a reload added it); its index.
    pub fn add(&self, spec: ReplicaSpec) -> Result<usize, AddError> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(AddError::Stopping);
        }
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        if slots.iter().any(|s| !s.is_removed() && s.spec.name == spec.name) {
            return Err(AddError::NameTaken(spec.name));
        }
        if slots.len() >= MAX_SLOTS {
            return Err(AddError::Full);
        }
        let index = slots.len();
        let slot = Arc::new(ManagedReplica::new(index, spec, &self.watchdog));
        self.injector.add(index, Arc::clone(&slot.name));
        slots.push(Arc::clone(&slot));
        drop(slots);
        info!(replica = %slot.name, "replica added");
        let monitor = spawn_monitor(slot, &self.config);
        self.monitors.lock().unwrap_or_else(|p| p.into_inner()).push(monitor);
        Ok(index)
    }

    /// Stops and removes the running replica named `name` (a reload removed it); false if there
    /// is none. Sessions using it lose it: that is counted as a consequence, not a fault.
    pub fn remove(&self, name: &str) -> bool {
        self.retire(name).is_some_and(|index| self.stop_removed(index))
    }

    /// Takes the running replica named `name` out of the configuration without stopping it
    /// yet: no session is admitted to it and its name is free for a replacement. Returns its
    /// number, for [`stop_removed`](Self::stop_removed) once nothing counts on it any more
    /// (ordered mode: once the core let it go).
    pub fn retire(&self, name: &str) -> Option<usize> {
        let index = self.index_of(name)?;
        self.retire_index(index);
        Some(index)
    }

    /// [`retire`](Self::retire) by number.
    pub fn retire_index(&self, index: usize) {
        if let Some(slot) = self.slot(index) {
            slot.removed.store(true, Ordering::Relaxed);
        }
    }

    /// Takes back a replica retired and not stopped (a reload that could not be applied).
    pub fn restore(&self, index: usize) {
        if let Some(slot) = self.slot(index).filter(|s| !*s.stop.borrow()) {
            slot.removed.store(false, Ordering::Relaxed);
        }
    }

    /// Stops replica `index`, taken out with [`retire`](Self::retire); false if it was not.
    pub fn stop_removed(&self, index: usize) -> bool {
        let Some(slot) = self.slot(index).filter(|s| s.is_removed()) else { return false };
        let _ = slot.stop.send(true);
        info!(replica = %slot.name, "replica removed: stopping it");
        true
    }

    /// How many replicas this supervisor has numbered, removed ones included.
    pub fn numbered(&self) -> usize {
        self.slots().len()
    }

    /// The running replicas' specs (removed ones left out), in index order.
    pub fn specs(&self) -> Vec<ReplicaSpec> {
        self.slots().iter().filter(|s| !s.is_removed()).map(|s| s.spec.clone()).collect()
    }

    /// How many replicas are configured (removed ones left out).
    pub fn len(&self) -> usize {
        self.slots().iter().filter(|s| !s.is_removed()).count()
    }

    /// Whether no replica is configured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The index of the replica named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.slots().iter().position(|s| !s.is_removed() && &*s.name == name)
    }

    /// The process id of replica `index`, while resh runs a process for it.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.slot(index).and_then(|s| s.state().pid)
    }

    /// Whether the process behind `replica`'s incarnation `incarnation` has ended: a command
    /// replica whose process exited (or is a zombie), or that was replaced since. Sessions ask
    /// this when a replica closes its output: a close by a dying process is a crash, not an end
    /// of stream, and must not be passed on to a client as a complete answer. Always false for
    /// address replicas (resh cannot see their processes).
    pub fn process_gone(&self, replica: usize, incarnation: u64) -> bool {
        let Some(slot) = self.slot(replica) else { return false };
        if matches!(slot.spec.launch, Launch::Address(_)) {
            return false;
        }
        let state = slot.state();
        if state.incarnation != incarnation {
            return true;
        }
        match state.pid {
            None => true,
            Some(pid) => match crate::inject::proc_stat(pid) {
                Ok(stat) => stat.exiting(),
                Err(crate::inject::InjectError::ProcessGone { .. }) => true,
                Err(_) => false,
            },
        }
    }

    /// The fault injector: armed data-path injections and the injection log.
    pub fn injector(&self) -> &Arc<Injector> {
        &self.injector
    }

    /// A data-path hook for one direction of a connection to replica `index` (see [`Tap`]).
    pub fn tap(&self, index: usize) -> Tap {
        self.injector.tap(index)
    }

    /// The replicas a new session may use, in configuration order; counts a session for each.
    pub fn admit_session(&self) -> Vec<Admitted> {
        let slots = self.slots();
        let mut admitted = Vec::with_capacity(slots.len());
        for slot in slots.iter().filter(|s| !s.is_removed()) {
            let state = slot.state();
            if let (Phase::Ready, Some(addr)) = (state.phase, state.addr) {
                admitted.push(Admitted {
                    index: slot.index,
                    name: Arc::clone(&slot.name),
                    addr,
                    incarnation: state.incarnation,
                    timing: Arc::clone(&slot.timing),
                });
            }
        }
        admitted
    }

    /// Counts `n` bytes of output read from `replica`.
    pub fn count_output(&self, replica: usize, n: usize) {
        if let Some(slot) = self.slots().get(replica) {
            slot.output_bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Counts a session that `replica` takes part in.
    pub fn count_session(&self, replica: usize) {
        if let Some(slot) = self.slots().get(replica) {
            slot.sessions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The replicas that are not admitted, each as `name (address or state): why`.
    pub fn not_ready(&self) -> Vec<String> {
        self.slots()
            .iter()
            .filter(|slot| !slot.is_removed())
            .filter_map(|slot| {
                let state = slot.state();
                if state.phase == Phase::Ready {
                    return None;
                }
                let what = match &slot.spec.launch {
                    Launch::Address(addr) => format!("address {addr}"),
                    Launch::Command { .. } => format!("command, {}", state.phase.name()),
                };
                let why = state
                    .not_ready
                    .clone()
                    .or_else(|| state.last_exit.clone())
                    .unwrap_or_else(|| "no answer yet".into());
                Some(format!("{} ({what}): {why}", slot.name))
            })
            .collect()
    }

    /// How many replicas are admitted now.
    pub fn ready_count(&self) -> usize {
        self.slots().iter().filter(|s| !s.is_removed() && s.state().phase == Phase::Ready).count()
    }

    /// A session found `replica` (in `incarnation`) faulty. The first report against an
    /// incarnation is its fault: counted, and if that incarnation is still the admitted one, the
    /// replica is quarantined and repaired. Later reports against the same incarnation are
    /// other sessions losing it to that fault: to its repair (resh kills the process, and
    /// every session using it sees a crash or an early close), or to the exit the first report
    /// was about. They are counted as the repair's consequences, never as new faults, so a
    /// replica that failed once shows one fault however many sessions it was in.
    pub fn report_fault(&self, replica: usize, incarnation: u64, kind: &FaultKind, what: String) -> Reported {
        let Some(slot) = self.slot(replica) else { return Reported::Consequence };
        if self.stopping.load(Ordering::Relaxed) {
            return Reported::Stopping;
        }
        let mut state = slot.state();
        // A removed replica's connections die with it: its removal, not a fault.
        if incarnation <= state.counted || slot.is_removed() {
            drop(state);
            slot.repair_cuts.fetch_add(1, Ordering::Relaxed);
            return Reported::Consequence;
        }
        state.counted = incarnation;
        if let Some(i) = FaultKind::NAMES.iter().position(|n| *n == kind.name()) {
            slot.faults[i].fetch_add(1, Ordering::Relaxed);
        }
        state.last_fault = Some(what);
        if state.incarnation == incarnation && state.phase == Phase::Ready {
            state.phase = Phase::Quarantined;
            drop(state);
            warn!(replica = %slot.name, fault = kind.name(), "replica quarantined");
            slot.quarantined.notify_one();
        }
        Reported::Fault
    }

    /// Waits until at least `want` replicas are admitted, or `timeout` passes; returns how
    /// many are admitted.
    pub async fn wait_ready(&self, want: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ready = self.ready_count();
            if ready >= want || tokio::time::Instant::now() >= deadline {
                return ready;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The replicas' status, in configuration order.
    pub fn status(&self) -> Vec<ReplicaStatus> {
        self.slots()
            .iter()
            .filter(|slot| !slot.is_removed())
            .map(|slot| {
                let state = slot.state();
                ReplicaStatus {
                    index: slot.index,
                    name: slot.spec.name.clone(),
                    version: slot.spec.version.clone(),
                    launch: match slot.spec.launch {
                        Launch::Command { .. } => "command",
                        Launch::Address(_) => "address",
                    },
                    state: state.phase.name(),
                    addr: state.addr.map(|a| a.to_string()),
                    pid: state.pid,
                    incarnation: state.incarnation,
                    sessions: slot.sessions.load(Ordering::Relaxed),
                    faults: FaultKind::NAMES
                        .iter()
                        .zip(&slot.faults)
                        .map(|(n, c)| (n.to_string(), c.load(Ordering::Relaxed)))
                        .collect(),
                    restarts: slot.restarts.load(Ordering::Relaxed),
                    repair_cuts: slot.repair_cuts.load(Ordering::Relaxed),
                    output_bytes: slot.output_bytes.load(Ordering::Relaxed),
                    answer_ms: slot.timing.answer.get().map(|d| d.as_secs_f64() * 1000.0),
                    trail_ms: slot.timing.trail.get().map(|d| d.as_secs_f64() * 1000.0),
                    last_fault: state.last_fault.clone(),
                    last_exit: state.last_exit.clone(),
                }
            })
            .collect()
    }

    /// Stops every replica that resh started and ends the monitors.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        for slot in self.slots().iter() {
            let _ = slot.stop.send(true);
        }
        let monitors = std::mem::take(&mut *self.monitors.lock().unwrap_or_else(|p| p.into_inner()));
        for monitor in monitors {
            let _ = monitor.await;
        }
        self.watchdog.stop();
    }
}

/// Starts the monitor of one replica: it runs until the replica's stop is sent.
fn spawn_monitor(slot: Arc<ManagedReplica>, config: &SupervisorConfig) -> JoinHandle<()> {
    let config = config.clone();
    let stop = slot.stop.subscribe();
    tokio::spawn(async move {
        match slot.spec.launch.clone() {
            Launch::Command { .. } => monitor_command(&slot, &config, stop).await,
            Launch::Address(addr) => monitor_address(&slot, &config, &addr, stop).await,
        }
    })
}

/// Keeps a command replica running: start, wait until ready, watch for exit or quarantine,
/// restart.
async fn monitor_command(slot: &Arc<ManagedReplica>, config: &SupervisorConfig, mut stop: watch::Receiver<bool>) {
    let mut backoff = config.restart_backoff;
    // Failed starts and exits in a row (reset once the replica became ready).
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            break;
        }
        let ended_cleanly = match start_command(slot) {
            Err(e) => {
                error!(replica = %slot.name, "cannot start replica: {e}");
                slot.state().last_exit = Some(format!("cannot start: {e}"));
                false
            }
            Ok(mut child) => {
                let pgid = child.id();
                let ready = wait_until_ready(slot, config, Some(&mut child), &mut stop).await;
                let outcome = if ready {
                    backoff = config.restart_backoff;
                    failures = 0;
                    run_until_repair(slot, &mut child, &mut stop).await
                } else {
                    Outcome::Failed
                };
                // The group is the one started with the child, by the pid saved at its start: once
                // the leader was reaped tokio no longer knows it, and the rest of the group (a
                // wrapper's server) may still run.
                stop_child(slot, &mut child, pgid).await;
                if let Some(pgid) = pgid {
                    slot.watchdog.forget(pgid);
                }
                outcome == Outcome::Repair
            }
        };
        if *stop.borrow() {
            break;
        }
        slot.restarts.fetch_add(1, Ordering::Relaxed);
        if !ended_cleanly {
            // An exit or a failed start: back off, so a replica that cannot start does not spin.
            slot.set_phase(Phase::Restarting);
            failures += 1;
            if failures > 1 {
                warn!(replica = %slot.name, failures, backoff_ms = backoff.as_millis() as u64, "replica keeps failing: backing off before the next start (the wait doubles, up to supervisor.restart_backoff_max_ms)");
            } else {
                info!(replica = %slot.name, backoff_ms = backoff.as_millis() as u64, "restarting replica after backoff");
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
            backoff = (backoff * 2).min(config.restart_backoff_max);
        }
    }
    slot.set_phase(Phase::Stopped);
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Quarantined: restart at once.
    Repair,
    /// Exited, never became ready, or resh is stopping.
    Failed,
}

/// Why a command replica could not be started: what was tried, where, and the OS error.
#[derive(Debug, thiserror::Error)]
enum StartError {
    /// No free port on loopback (resh's or the system's limit).
    #[error("no free loopback port for it: {0}")]
    Port(std::io::Error),
    /// The configuration's command is empty (validated; a bug).
    #[error("internal: empty command")]
    Empty,
    /// The working directory is not usable.
    #[error("cwd {cwd}: {error}")]
    Cwd { cwd: String, error: std::io::Error },
    /// The program was not found on the PATH.
    #[error("`{program}` was not found on the PATH ({path})")]
    NotOnPath { program: String, path: String },
    /// Anything else the OS said about starting the program.
    #[error("`{program}`{where_}: {error}")]
    Spawn { program: String, where_: String, error: std::io::Error },
}

fn start_command(slot: &Arc<ManagedReplica>) -> Result<Child, StartError> {
    let Launch::Command { argv, env, cwd } = &slot.spec.launch else {
        return Err(StartError::Empty);
    };
    let port = free_port().map_err(StartError::Port)?;
    let argv = Launch::argv_for(argv, port);
    let (program, args) = argv.split_first().ok_or(StartError::Empty)?;
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v.replace(crate::spec::PORT_PLACEHOLDER, &port.to_string()))))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    // SAFETY: the closure only makes an async-signal-safe syscall (see sys::die_with_parent).
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(sys::die_with_parent);
    }
    let mut child = command.spawn().map_err(|error| spawn_error(program, cwd.as_deref(), error))?;
    let pid = child.id();
    if let Some(pid) = pid {
        // Its process group is the one to kill if resh dies (see `watchdog`).
        slot.watchdog.watch(pid);
    }
    slot.stderr_tail().clear();
    {
        let mut state = slot.state();
        state.phase = Phase::Starting;
        state.addr = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        state.pid = pid;
    }
    info!(replica = %slot.name, pid, port, command = ?argv, "started replica");
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward_output(Arc::clone(slot), "stdout", out));
    }
    if let Some(err) = child.stderr.take() {
        let task = tokio::spawn(forward_output(Arc::clone(slot), "stderr", err));
        *slot.stderr_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }
    Ok(child)
}

/// What the OS said about starting `program`, with what it needs to be fixed: the directory
/// it was started in, or the PATH it was looked for on.
fn spawn_error(program: &str, cwd: Option<&std::path::Path>, error: std::io::Error) -> StartError {
    if let Some(dir) = cwd {
        if let Err(e) = std::fs::read_dir(dir) {
            return StartError::Cwd { cwd: dir.display().to_string(), error: e };
        }
    }
    let where_ = match cwd {
        Some(dir) if !program.starts_with('/') && program.contains('/') => {
            format!(" (relative to cwd {})", dir.display())
        }
        _ => String::new(),
    };
    if error.kind() == std::io::ErrorKind::NotFound && !program.contains('/') {
        let path = std::env::var("PATH").unwrap_or_else(|_| "PATH is not set".into());
        return StartError::NotOnPath { program: program.to_string(), path };
    }
    StartError::Spawn { program: program.to_string(), where_, error }
}

/// Sends a replica's output lines (`stream`: `stdout` or `stderr`) to the log, so that they
/// are not lost and do not mix with resh's own standard output, and keeps the last lines of
/// standard error for [`note_exit`]. Reads by bytes, not `lines()`: a line that is not UTF-8
/// must not end the reading (the replica would block on a full pipe), nor one without an end
/// grow without bound.
async fn forward_output(slot: Arc<ManagedReplica>, stream: &'static str, out: impl AsyncRead + Unpin) {
    let mut reader = BufReader::new(out);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = tokio::io::AsyncReadExt::take(&mut reader, 64 * 1024);
        match limited.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        debug!(replica = %slot.name, stream, "{text}");
        if stream != "stderr" {
            continue;
        }
        let mut kept: String = text.chars().take(STDERR_LINE_CHARS).collect();
        if kept.len() < text.len() {
            kept.push_str("...");
        }
        let mut tail = slot.stderr_tail();
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(kept);
    }
}

/// Probes the replica until it accepts a connection; admits it then. Gives up when the
/// ready timeout passes, the child exits or resh stops.
async fn wait_until_ready(
    slot: &ManagedReplica,
    config: &SupervisorConfig,
    mut child: Option<&mut Child>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let Some(addr) = slot.state().addr else { return false };
    // An address replica is not ours to restart: it is probed until it answers.
    let deadline = child.is_some().then(|| tokio::time::Instant::now() + config.ready_timeout);
    loop {
        if *stop.borrow() {
            return false;
        }
        if let Some(child) = child.as_deref_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                note_exit(slot, status).await;
                return false;
            }
        }
        let why = match tokio::time::timeout(config.probe_interval * 8, TcpStream::connect(addr)).await {
            Ok(Ok(_probe)) => {
                let mut state = slot.state();
                state.phase = Phase::Ready;
                state.incarnation += 1;
                state.not_ready = None;
                info!(replica = %slot.name, %addr, incarnation = state.incarnation, "replica ready");
                return true;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "connect timed out".to_string(),
        };
        let why = format!("connecting to {addr}: {why}");
        // An address replica is not resh's to start: say once why it is not admitted (a command
        // replica is still starting; its timeout speaks for it).
        if child.is_none() && slot.state().not_ready.is_none() {
            warn!(replica = %slot.name, %addr, "replica does not answer: {why}; probing until it does");
        }
        slot.state().not_ready = Some(why);
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            let why = slot.state().not_ready.clone().unwrap_or_default();
            warn!(replica = %slot.name, %addr, timeout_ms = config.ready_timeout.as_millis() as u64, "replica did not accept connections within supervisor.ready_timeout_ms ({why}); is it listening on {{port}}?");
            slot.state().last_exit = Some("not ready within ready_timeout".into());
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(config.probe_interval) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Watches a ready replica until it exits, is quarantined, or resh stops.
async fn run_until_repair(slot: &ManagedReplica, child: &mut Child, stop: &mut watch::Receiver<bool>) -> Outcome {
    let incarnation = slot.state().incarnation;
    tokio::select! {
        status = child.wait() => {
            match status {
                Ok(status) => note_exit(slot, status).await,
                Err(e) => warn!(replica = %slot.name, error = %e, "cannot wait for replica"),
            }
            Outcome::Failed
        }
        _ = slot.quarantine_of(incarnation) => {
            // A replica whose crash a vote noticed first has usually exited already: keep how
            // it ended, or `/status` would show a repair without the crash that caused it.
            if let Ok(Some(status)) = child.try_wait() {
                note_exit(slot, status).await;
            }
            info!(replica = %slot.name, "repairing quarantined replica: restart");
            Outcome::Repair
        }
        _ = stop.changed() => Outcome::Failed,
    }
}

/// Notes how a replica's process ended, once its standard error was read to the end (or for at
/// most 300 ms: a process it left behind may hold the pipe open).
async fn note_exit(slot: &ManagedReplica, status: ExitStatus) {
    let task = slot.stderr_task.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(task) = task {
        let _ = tokio::time::timeout(Duration::from_millis(300), task).await;
    }
    let tail = slot.stderr_tail().iter().cloned().collect::<Vec<_>>();
    if !status.success() && !tail.is_empty() {
        warn!(replica = %slot.name, %status, "replica exited; the end of its standard error:\n  {}", tail.join("\n  "));
    } else {
        warn!(replica = %slot.name, %status, "replica exited");
    }
    let mut state = slot.state();
    state.last_exit = Some(status.to_string());
    state.pid = None;
    if state.phase == Phase::Ready {
        state.phase = Phase::Restarting;
    }
}

/// Kills the replica's whole process group (`pgid`: its first process's pid) and reaps it.
async fn stop_child(slot: &ManagedReplica, child: &mut Child, pgid: Option<u32>) {
    if let Some(pgid) = pgid {
        if let Err(e) = sys::signal_group(pgid, libc::SIGKILL) {
            // ESRCH: the whole group is gone already.
            debug!(replica = %slot.name, pgid, error = %e, "cannot signal replica group");
        }
    }
    let _ = child.kill().await;
    slot.state().pid = None;
}

/// Keeps an address replica admitted while it answers; after a quarantine, waits and probes.
async fn monitor_address(
    slot: &ManagedReplica,
    config: &SupervisorConfig,
    addr: &str,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let resolved = match tokio::net::lookup_host(addr).await.map(|mut a| a.next()) {
            Ok(Some(a)) => Some(a),
            Ok(None) | Err(_) => None,
        };
        match resolved {
            Some(a) => {
                {
                    let mut state = slot.state();
                    state.addr = Some(a);
                    state.phase = Phase::Starting;
                }
                if wait_until_ready(slot, config, None, &mut stop).await {
                    let incarnation = slot.state().incarnation;
                    tokio::select! {
                        _ = slot.quarantine_of(incarnation) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
            None => warn!(replica = %slot.name, addr, "cannot resolve replica address"),
        }
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(config.quarantine) => {}
            _ = stop.changed() => {}
        }
    }
    slot.set_phase(Phase::Stopped);
}

/// A free TCP port on loopback, found by binding port 0.
fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Stream mode: how one replica keeps time, as all sessions saw it (see
/// [`ReplicaStatus::answer_ms`] and [`ReplicaStatus::trail_ms`]).
#[derive(Debug, Default)]
pub struct ReplicaTiming {
    answer: MovingAverage,
    trail: MovingAverage,
}

impl ReplicaTiming {
    /// Takes one answer time and one trail (either may be missing) into the averages.
    pub fn record(&self, answer: Option<Duration>, trail: Option<Duration>) {
        if let Some(answer) = answer {
            self.answer.record(answer);
        }
        if let Some(trail) = trail {
            self.trail.record(trail);
        }
    }
}

/// A moving average of durations (in microseconds) shared by all sessions, over about the last
/// 16 samples: each sample moves it a sixteenth of the way. Lock-free; `u64::MAX` means no
/// sample yet.
#[derive(Debug)]
struct MovingAverage(AtomicU64);

impl Default for MovingAverage {
    fn default() -> Self {
        MovingAverage(AtomicU64::new(u64::MAX))
    }
}

impl MovingAverage {
    fn record(&self, sample: Duration) {
        let sample = u64::try_from(sample.as_micros()).unwrap_or(u64::MAX - 1).min(u64::MAX - 1);
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |average| {
            Some(if average == u64::MAX { sample } else { (average.saturating_mul(15).saturating_add(sample)) / 16 })
        });
    }

    fn get(&self) -> Option<Duration> {
        Some(self.0.load(Ordering::Relaxed)).filter(|&us| us != u64::MAX).map(Duration::from_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_is_a_moving_average_over_about_16_samples() {
        let timing = ReplicaTiming::default();
        assert_eq!((timing.answer.get(), timing.trail.get()), (None, None));
        timing.record(Some(Duration::from_micros(1600)), None);
        assert_eq!(timing.answer.get(), Some(Duration::from_micros(1600)), "the first sample is the average");
        assert_eq!(timing.trail.get(), None);
        timing.record(Some(Duration::ZERO), Some(Duration::from_secs(u64::MAX)));
        assert_eq!(timing.answer.get(), Some(Duration::from_micros(1500)), "(1600 * 15 + 0) / 16");
        assert!(timing.trail.get().is_some(), "a huge sample is clamped, not taken for `none`");
    }

    /// A command replica that accepts TCP connections: python3's HTTP server on `{port}`.
    fn http_replica() -> ReplicaSpec {
        ReplicaSpec {
            name: "web".into(),
            version: "web".into(),
            launch: Launch::Command {
                argv: ["python3", "-m", "http.server", "--bind", "127.0.0.1", "{port}"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                env: Default::default(),
                cwd: None,
            },
        }
    }

    fn incarnation(supervisor: &Supervisor) -> (u64, &'static str) {
        let status = &supervisor.status()[0];
        (status.incarnation, status.state)
    }

    /// A wake-up left over from an earlier incarnation (the notify permit of a fault that raced
    /// with the replica's exit) must not repair the next incarnation the moment it is ready.
    #[tokio::test]
    async fn a_stale_quarantine_wakeup_does_not_repair_a_fresh_incarnation() {
        let supervisor = Supervisor::start(vec![http_replica()], SupervisorConfig::default());
        assert_eq!(supervisor.wait_ready(1, Duration::from_secs(20)).await, 1, "the replica did not start");
        assert_eq!(incarnation(&supervisor), (1, "ready"));
        // The permit a fault for an earlier incarnation leaves behind.
        supervisor.slots()[0].quarantined.notify_one();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(incarnation(&supervisor), (1, "ready"), "a stale wake-up restarted the replica");

        // A fault against the current incarnation does repair it.
        supervisor.report_fault(0, 1, &FaultKind::Crashed, "test".into());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while incarnation(&supervisor) != (2, "ready") && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(incarnation(&supervisor), (2, "ready"), "the quarantined replica was not repaired");
        // And a fault against the old incarnation no longer does.
        supervisor.report_fault(0, 1, &FaultKind::Crashed, "late report".into());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(incarnation(&supervisor), (2, "ready"));
        supervisor.shutdown().await;
    }
}
