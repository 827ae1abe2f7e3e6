//! The server: what every session shares, the accept loop, and the dispatch of each client to
//! its mode.
//!
//! Phases of [`run_until`], in the order they run:
//! 1. **bind** the client and admin listeners (a failure names the configuration key);
//! 2. **start** the replica supervisor and wait (at most `ready_timeout`) for the replicas;
//! 3. in ordered mode, **start the sequencer** and connect it to the ready replicas;
//! 4. **serve**: accept clients, at most `max_sessions` at once (further clients wait in the
//!    kernel's accept queue), each served by [`serve`] in stream or ordered mode;
//! 5. **drain** on the shutdown future: stop accepting, and let the sessions finish for up to
//!    `session.drain_timeout_ms` ([`Stopping::Drain`]); each closes (FIN) as soon as nothing
//!    is owed either way;
//! 6. **stop**: cut off the sessions left ([`Stopping::Now`]): a reset for any whose output
//!    was cut, never a FIN that could pass for a complete answer; stop the replicas resh
//!    started.
use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use replicas::Supervisor;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{error, info, warn, Instrument};

use crate::config::{self, Config};
use crate::fault::FaultSink;
use crate::metrics::{self, Metrics};
use crate::{admin, codec, ordered};

/// What every session shares.
#[derive(Debug)]
pub struct Shared {
    /// The effective configuration; a reload replaces it (see [`Shared::config`]).
    config: std::sync::RwLock<Arc<Config>>,
    /// Where it was read from (a reload reads it again); `None` for a resh started in-process.
    config_path: Option<std::path::PathBuf>,
    /// Sets the log filter (`None`: the filter cannot change, e.g. `--log` was given).
    log_filter: Option<LogFilterHook>,
    /// Session slots: `max_sessions` of them.
    slots: Arc<Semaphore>,
    /// Reloads run one at a time.
    reloading: tokio::sync::Mutex<()>,
    /// The replica supervisor.
    pub supervisor: Arc<Supervisor>,
    /// Process-wide counters.
    pub metrics: Arc<Metrics>,
    /// The sequencer, in ordered mode.
    pub ordered: Option<crate::ordered::Ordered>,
    /// Where both modes report faults.
    pub faults: FaultSink,
    next_id: AtomicU64,
    stopping: tokio::sync::watch::Sender<Stopping>,
    /// HTTP mode: what a response's vote covers, compiled once (`[http]` needs a restart).
    http_rules: Option<Arc<crate::http::normal::Rules>>,
    /// HTTP mode for stateful services (`mode = "ordered"`): the global order's sequencer.
    http_order: std::sync::OnceLock<crate::http::ordered::HttpOrder>,
    /// HTTP mode: the response bytes every session together may hold (`http.max_held_bytes`).
    pub(crate) http_held: Arc<Semaphore>,
}

/// Sets the process's log filter (the `resh` binary's tracing subscriber); the error says why
/// the filter was refused.
pub struct LogFilterHook(pub Box<SetLogFilter>);

/// What a [`LogFilterHook`] calls.
pub type SetLogFilter = dyn Fn(&str) -> Result<(), String> + Send + Sync;

impl fmt::Debug for LogFilterHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogFilterHook")
    }
}

/// Why a reload did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// resh was started in-process, not from a file.
    #[error("this resh was not started from a configuration file")]
    NoFile,
    /// The user's file does not load or validate.
    #[error(transparent)]
    Invalid(config::ConfigError),
}

/// How far a shutdown is: sessions watch it (see [`Shared::stopping`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stopping {
    /// Serving.
    No,
    /// No new client is taken; sessions finish what they owe and close.
    Drain,
    /// The drain time is over: sessions end at once.
    Now,
}

/// How long a stream session must have been quiet, owing nothing, to be closed with a FIN
/// while resh drains: stream mode cannot see where an answer ends, so quiet after an answer is
/// taken as its end (see `stream::session::Session::owes_nothing`).
pub const DRAIN_QUIET: std::time::Duration = std::time::Duration::from_millis(500);

impl Shared {
    /// Shared state for a running resh, with `resh run`'s options (the file a reload reads,
    /// the log hook); `http_rules`: HTTP mode's, compiled from the configuration.
    pub fn with_options(
        config: Config,
        supervisor: Arc<Supervisor>,
        metrics: Arc<Metrics>,
        (ordered, http_rules): (Option<crate::ordered::Ordered>, Option<Arc<crate::http::normal::Rules>>),
        options: RunOptions,
    ) -> Arc<Shared> {
        let faults = FaultSink::new(Arc::clone(&metrics), Arc::clone(&supervisor));
        let (stopping, _) = tokio::sync::watch::channel(Stopping::No);
        let slots = Arc::new(Semaphore::new(config.max_sessions));
        let config_http_held = config.http.max_held_bytes.min(Semaphore::MAX_PERMITS);
        Arc::new(Shared {
            config: std::sync::RwLock::new(Arc::new(config)),
            config_path: options.config_path,
            log_filter: options.log_filter,
            slots,
            reloading: tokio::sync::Mutex::new(()),
            supervisor,
            metrics,
            ordered,
            faults,
            next_id: AtomicU64::new(1),
            stopping,
            http_rules,
            http_order: std::sync::OnceLock::new(),
            http_held: Arc::new(Semaphore::new(config_http_held)),
        })
    }

    /// The configuration in force: a session takes it once, when it starts, and keeps it.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Re-reads the configuration file and applies what can change live (see
    /// [`crate::reload`]); a file that does not load is an error and the running configuration
    /// stays.
    pub async fn reload(&self) -> Result<crate::reload::Plan, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let path = self.config_path.as_ref().ok_or(ReloadError::NoFile)?;
        let new = Config::load(path).map_err(ReloadError::Invalid)?;
        let running = self.config();
        let plan = crate::reload::plan(&running, &new);
        if plan.applied.is_empty() {
            return Ok(plan);
        }
        if plan.config.log != running.log {
            if let Some(set) = &self.log_filter {
                // No `log` any more: back to the default.
                if let Err(e) = (set.0)(plan.config.log.as_deref().unwrap_or("info")) {
                    warn!(error = %e, "reload: cannot change the log filter");
                }
            } else if plan.config.log.is_some() {
                warn!("reload: the log filter is set on the command line (--log or RUST_LOG): `log` is ignored");
            }
        }
        let (was, now) = (running.max_sessions, plan.config.max_sessions);
        let mut plan = plan;
        if plan.applied.iter().any(|k| k == "replica" || k == "vote.quorum") {
            match &self.ordered {
                None => self.apply_replicas(&running, &plan.config),
                Some(ordered) => {
                    if let Err(e) = self.apply_ordered_replicas(ordered, &running, &plan.config).await {
                        // The running replicas and quorum stay.
                        error!("reload: cannot change the replicas: {e}");
                        plan.config.replicas.clone_from(&running.replicas);
                        plan.config.vote.quorum = running.vote.quorum;
                        let (kept, refused): (Vec<String>, Vec<String>) =
                            plan.applied.drain(..).partition(|k| k != "replica" && k != "vote.quorum");
                        plan.applied = kept;
                        plan.not_live.extend(refused);
                    }
                }
            }
        }
        if let Some(ordered) = &self.ordered {
            let (was_core, core) = (running.ordered_core(), plan.config.ordered_core());
            if (core.lag_timeout, core.request_timeout) != (was_core.lag_timeout, was_core.request_timeout) {
                ordered.retune(crate::ordered::Tuning {
                    lag_timeout: core.lag_timeout,
                    request_timeout: core.request_timeout,
                });
            }
        }
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(plan.config.clone());
        if now > was {
            self.slots.add_permits(now - was);
        } else if now < was {
            // Fewer slots: taken out as sessions end (a session is never cut for it).
            let slots = Arc::clone(&self.slots);
            let fewer = u32::try_from(was - now).unwrap_or(u32::MAX);
            tokio::spawn(async move {
                if let Ok(permits) = slots.acquire_many_owned(fewer).await {
                    permits.forget();
                }
            });
        }
        Ok(plan)
    }

    /// Starts the replicas `new` adds to `running` and stops the ones it drops; a replica whose
    /// spec changed (command, address, environment...) is stopped and started afresh.
    fn apply_replicas(&self, running: &Config, new: &Config) {
        let old: std::collections::BTreeMap<String, replicas::ReplicaSpec> =
            running.replica_specs().into_iter().map(|s| (s.name.clone(), s)).collect();
        let new_specs = new.replica_specs();
        for (name, spec) in &old {
            if new_specs.iter().all(|s| s != spec) && !self.supervisor.remove(name) {
                warn!(replica = %name, "reload: the replica to remove is not running");
            }
        }
        for spec in new_specs {
            if old.get(&spec.name) != Some(&spec) {
                let name = spec.name.clone();
                if let Err(e) = self.supervisor.add(spec) {
                    error!(replica = %name, "reload: cannot add the replica: {e}");
                }
            }
        }
    }

    /// Ordered mode's [`apply_replicas`](Self::apply_replicas): the added replicas are
    /// started, the core takes the new set and quorum (`Ordered::change_replicas`), and only
    /// then are the removed ones stopped, so that their end counts for nothing.
    async fn apply_ordered_replicas(
        &self,
        ordered: &crate::ordered::Ordered,
        running: &Config,
        new: &Config,
    ) -> Result<(), String> {
        let old = running.replica_specs();
        let new_specs = new.replica_specs();
        let leaving: Vec<&replicas::ReplicaSpec> = old.iter().filter(|s| !new_specs.contains(s)).collect();
        let coming: Vec<&replicas::ReplicaSpec> = new_specs.iter().filter(|s| !old.contains(s)).collect();
        // The frame vote counts replicas in a 32-bit set, removed ones included: checked here
        // too, before the supervisor starts any.
        let numbered = self.supervisor.numbered() + coming.len();
        if numbered > voter::stream::MAX_REPLICAS {
            return Err(crate::ordered::core::ReconfigureError::TooMany { numbered }.to_string());
        }
        // Out of the configuration first (a changed replica's name is free for its
        // replacement), stopped only once the core let them go.
        let remove: Vec<usize> = leaving.iter().filter_map(|s| self.supervisor.retire(&s.name)).collect();
        let mut add = Vec::new();
        let mut failed = None;
        for spec in &coming {
            let spec = (*spec).clone();
            let name = spec.name.clone();
            let address = matches!(spec.launch, replicas::Launch::Address(_));
            match self.supervisor.add(spec) {
                Ok(index) => {
                    add.push((index, crate::ordered::core::ReplicaConfig { name: name.as_str().into(), address }))
                }
                Err(e) => {
                    failed = Some(format!("replica {name}: {e}"));
                    break;
                }
            }
        }
        let outcome = match failed {
            Some(e) => Err(e),
            None => ordered.change_replicas(remove.clone(), add.clone(), new.quorum()).await,
        };
        match outcome {
            Ok(()) => {
                for index in remove {
                    self.supervisor.stop_removed(index);
                }
            }
            Err(_) => {
                // Nothing changes: the added ones go, the retired ones come back.
                for (index, _) in &add {
                    self.supervisor.retire_index(*index);
                    self.supervisor.stop_removed(*index);
                }
                for index in remove {
                    self.supervisor.restore(index);
                }
            }
        }
        outcome
    }

    /// [`reload`](Self::reload), with its outcome logged: what changed, what needs a restart,
    /// or why the file was refused (the running configuration stays).
    pub async fn reload_and_log(&self, trigger: &str) -> Result<crate::reload::Plan, ReloadError> {
        let outcome = self.reload().await;
        match &outcome {
            Ok(plan) if plan.applied.is_empty() && plan.not_live.is_empty() => {
                info!(trigger, "reload: the configuration is unchanged")
            }
            Ok(plan) => {
                if !plan.applied.is_empty() {
                    info!(trigger, changed = %plan.applied.join(", "), "reload: applied to the sessions that start from now on");
                }
                if !plan.not_live.is_empty() {
                    warn!(trigger, keys = %plan.not_live.join(", "), "reload: these changes need a restart of resh; the running values stay");
                }
                for (key, reason) in plan.config.warnings() {
                    warn!("configuration: {key}: {reason}");
                }
            }
            Err(e) => error!(trigger, "reload refused, the running configuration stays: {e}"),
        }
        outcome
    }

    /// How far a shutdown is; a session awaits its changes.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<Stopping> {
        self.stopping.subscribe()
    }

    /// Whether clients sent here now are served (`GET /ready`); the error says why not.
    pub fn readiness(&self) -> Result<(), String> {
        if *self.stopping.borrow() != Stopping::No {
            return Err("resh is shutting down".into());
        }
        let quorum = self.config().quorum();
        match &self.ordered {
            Some(ordered) => {
                // The core's: a reload that added replicas raises it as they join.
                let quorum = ordered.quorum().0;
                if !ordered.serving() {
                    return Err("this host is not serving (joining its group, or cut off from it)".into());
                }
                let voting = ordered.views().iter().filter(|v| v.state == "voting").count();
                if voting < quorum {
                    return Err(format!("{voting} replicas vote, fewer than the quorum of {quorum}"));
                }
            }
            None => {
                let ready = self.supervisor.ready_count();
                if ready < quorum {
                    return Err(format!("{ready} replicas are ready, fewer than the quorum of {quorum}"));
                }
            }
        }
        Ok(())
    }

    /// Moves the shutdown on; stream sessions watch it, ordered sessions are told through
    /// their answer channels (a session that registers later reads the state when it starts).
    fn set_stopping(&self, stopping: Stopping) {
        self.stopping.send_replace(stopping);
        if let Some(ordered) = &self.ordered {
            ordered.notify_stopping(stopping);
        }
    }

    /// HTTP mode's rules (`None` in the other modes).
    pub fn http_rules(&self) -> Option<Arc<crate::http::normal::Rules>> {
        self.http_rules.clone()
    }

    /// The configuration and the replicas a new stream or HTTP session takes, or, with fewer
    /// replicas ready than the quorum, why it is refused (logged and counted here; each mode
    /// tells its client in its own way).
    pub(crate) fn admit_session(&self) -> Result<(Arc<Config>, Vec<replicas::Admitted>), String> {
        let config = self.config();
        let quorum = config.quorum();
        let admitted = self.supervisor.admit_session();
        if admitted.len() < quorum {
            warn!(admitted = admitted.len(), quorum, "refusing client: fewer replicas admitted than the quorum");
            self.metrics.refused(crate::metrics::Refusal::NoQuorum);
            return Err(format!("{} replicas are ready, fewer than the quorum of {quorum}", admitted.len()));
        }
        Ok((config, admitted))
    }

    /// A new session number.
    pub fn next_session_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Serves one client connection to its end, in the configured mode.
pub async fn serve(shared: Arc<Shared>, client: TcpStream, peer: SocketAddr) {
    // Until the session closes it cleanly (and clears this), any end resets the connection:
    // a session aborted on shutdown must not close with a FIN that could end a cut answer.
    let _ = client.set_zero_linger();
    let id = shared.next_session_id();
    if let Some(ordered) = shared.ordered.clone() {
        return crate::ordered::session::serve(shared, ordered, client, peer, id).await;
    }
    let span = tracing::info_span!("session", id, %peer);
    if let Some(order) = shared.http_order.get().cloned() {
        return crate::http::ordered::serve(shared, order, client, peer, id).instrument(span).await;
    }
    if let Some(rules) = shared.http_rules() {
        return crate::http::session::serve(shared, rules, client, peer, id).instrument(span).await;
    }
    crate::stream::serve(shared, client, id).instrument(span).await
}

/// The tokio worker threads `resh run` uses unless told otherwise (`--threads`): one per two
/// CPUs, at least one.
///
/// resh shares its host with the replicas it votes over (that is the point of RESH), and they
/// need the CPUs as much as resh does. On resh's hot path the cost is wake-ups, not bytes: a
/// second worker thread mostly adds cross-thread wake-ups (futex calls, tasks moving between
/// cores) while the replicas wait for a core. Measured with `resh bench` on 2 CPUs (see
/// docs/performance.md), one worker served ordered mode 13-24% more requests than two and
/// stream mode with one replica about as many; stream mode with three replicas did better with
/// two (`--threads 2`).
pub fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Whether an I/O error is resh's own exhaustion (out of file descriptors, buffers or memory)
/// rather than anything the peer did: resh's error, never a replica's fault.
pub fn resh_exhausted(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// Raises the soft limit on open files to the hard limit, as daemons that hold many sockets
/// do: each client session costs resh a descriptor for the client and, in stream mode, one per
/// replica. Returns the soft limit now in force.
#[allow(unsafe_code)]
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads one rlimit from the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

/// Why resh could not start or keep running.
#[derive(Debug)]
pub enum RunError {
    /// A listen address could not be bound.
    Bind {
        /// The configuration key.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        error: std::io::Error,
    },
    /// The ordered core refused its parameters (a bug: the configuration was validated), or
    /// (D-RESH) too few local replicas vote to join the group.
    Ordered(crate::ordered::sequencer::StartError),
    /// D-RESH: the group could not be joined.
    Group(group::GroupError),
    /// D-RESH: this host left its group (fail-stop), and stopped.
    Left(String),
    /// HTTP in ordered mode: the vote refused its parameters (a bug: the configuration was
    /// validated).
    HttpOrder(voter::ConfigError),
    /// HTTP mode: the rules of `[http]` did not compile (a bug: the configuration was
    /// validated with them).
    HttpRules(String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Bind { key, addr, error } => write!(f, "{key}: cannot listen on {addr}: {error}"),
            RunError::Ordered(e @ crate::ordered::sequencer::StartError::NoQuorum { .. }) => write!(f, "{e}"),
            RunError::Ordered(e) => write!(f, "internal: {e}"),
            RunError::Group(e) => write!(f, "group: {e}"),
            RunError::Left(why) => write!(f, "this host left its group and stopped (fail-stop): {why}"),
            RunError::HttpOrder(e) => write!(f, "internal: the HTTP order's vote refused its parameters: {e}"),
            RunError::HttpRules(e) => write!(f, "internal: [http] refused after validation: {e}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Runs resh with a validated configuration until SIGINT or SIGTERM.
///
/// Prints the addresses it serves on standard output once it is ready, one per line:
/// `resh: clients on ADDR` and `resh: admin on http://ADDR`.
pub async fn run(config: Config) -> Result<(), RunError> {
    run_with(config, RunOptions::default()).await
}

/// What `resh run` adds to [`run`]: where the configuration came from (SIGHUP re-reads it) and
/// how to change the log filter.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// The configuration file.
    pub config_path: Option<std::path::PathBuf>,
    /// Sets the log filter on a reload.
    pub log_filter: Option<LogFilterHook>,
}

/// [`run`], with the options of `resh run`: SIGHUP reloads the configuration file.
pub async fn run_with(config: Config, options: RunOptions) -> Result<(), RunError> {
    match raise_fd_limit() {
        Ok(limit) => info!(open_files = limit, "limit on open files"),
        Err(e) => warn!(error = %e, "cannot raise the limit on open files"),
    }
    // The signal is awaited outside the log macro: a disabled level (`--log warn`) skips the
    // macro's arguments, and the await with them, which would stop resh at once.
    let stop = async {
        let signal = shutdown_signal().await;
        info!(signal, "stopping");
    };
    // SIGHUP reloads; its handler is installed before anything starts, since the default action
    // (terminate) would take the replicas down with resh.
    let hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot handle SIGHUP: reload through POST /reload only");
            None
        }
    };
    run_inner(config, options, hangups, stop, |running| {
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "resh: clients on {}", running.clients);
        if let Some(a) = running.admin {
            let _ = writeln!(stdout, "resh: admin on http://{a}");
        }
        let _ = stdout.flush();
    })
    .await
}

/// A resh that [`run_until`] started, as its caller sees it once the replicas are ready.
#[derive(Clone, Debug)]
pub struct Running {
    /// Where clients connect (the bound address: a port 0 in the configuration is resolved).
    pub clients: SocketAddr,
    /// The admin API's bound address, unless it is off.
    pub admin: Option<SocketAddr>,
    /// The state every session shares: the supervisor (with the fault injector) and metrics.
    pub shared: Arc<Shared>,
}

/// A resh started in this process with [`run_until`], as the demo and the campaign use it:
/// started and ready, stopped on request.
#[derive(Debug)]
pub struct InProcess {
    /// Its addresses and shared state.
    pub running: Running,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), RunError>>,
}

/// Why an [`InProcess`] resh stopped before it was ready.
#[derive(Debug, thiserror::Error)]
pub enum InProcessError {
    /// The configuration or the system: it could not bind or start (see [`RunError`]).
    #[error(transparent)]
    Run(#[from] RunError),
    /// resh itself: it returned without an error before it was ready.
    #[error("it stopped before it was ready")]
    StoppedEarly,
    /// resh itself: its task panicked or was cancelled.
    #[error("its task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl InProcess {
    /// Starts resh on `config` and waits until its replicas are ready (or the ready timeout
    /// passed); the error says why it stopped before that.
    pub async fn start(config: Config) -> Result<InProcess, InProcessError> {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Running>();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let stopped = async move {
            let _ = stop_rx.await;
        };
        let task = tokio::spawn(run_until(config, stopped, move |running| {
            let _ = ready_tx.send(running.clone());
        }));
        match ready_rx.await {
            Ok(running) => Ok(InProcess { running, stop, task }),
            Err(_) => Err(match task.await {
                Ok(Err(e)) => InProcessError::Run(e),
                Ok(Ok(())) => InProcessError::StoppedEarly,
                Err(e) => InProcessError::Task(e),
            }),
        }
    }

    /// Whether it stopped on its own.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops it and waits (at most `limit`, and at least the drain time and a little more)
    /// until its replicas are gone.
    pub async fn stop(self, limit: std::time::Duration) {
        let limit = limit.max(self.running.shared.config().drain_timeout() + std::time::Duration::from_secs(3));
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(limit, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// Runs resh until `shutdown` completes, then stops the replicas it started and returns.
/// `on_ready` is called once, when the replicas are ready (or the ready timeout passed) and
/// clients are being accepted. Prints nothing on standard output, so that a program can run
/// many (the fault-injection campaign starts a fresh one per experiment on port 0).
pub async fn run_until(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
    on_ready: impl FnOnce(&Running),
) -> Result<(), RunError> {
    run_inner(config, RunOptions::default(), None, shutdown, on_ready).await
}

async fn run_inner(
    config: Config,
    options: RunOptions,
    hangups: Option<tokio::signal::unix::Signal>,
    shutdown: impl std::future::Future<Output = ()>,
    on_ready: impl FnOnce(&Running),
) -> Result<(), RunError> {
    let started = Instant::now();
    let quorum = config.quorum();
    for (key, reason) in config.warnings() {
        warn!("configuration: {key}: {reason}");
    }
    let listen = config.listen_addr();
    let client_listener =
        TcpListener::bind(listen).await.map_err(|error| RunError::Bind { key: "listen", addr: listen, error })?;
    let admin_listener = match config.admin_addr() {
        Some(addr) => {
            Some(TcpListener::bind(addr).await.map_err(|error| RunError::Bind { key: "admin.listen", addr, error })?)
        }
        None => None,
    };

    let supervisor = Supervisor::start(config.replica_specs(), config.supervisor());
    let total = supervisor.len();
    let ready = supervisor.wait_ready(total, config.supervisor().ready_timeout).await;
    if ready < total {
        let missing = supervisor.not_ready().join("; ");
        if ready < quorum {
            error!(
                ready,
                quorum,
                "fewer replicas ready than the quorum: clients are refused until more are up; not ready: {missing}"
            );
        } else {
            warn!(ready, total, "not every replica is ready; serving with the ones that are; not ready: {missing}");
        }
    }
    let metrics = Arc::new(metrics::Metrics::default());
    let ordered = match (config.vote.mode, config.vote.protocol) {
        // HTTP in ordered mode has a sequencer of its own (`http::ordered`), started below.
        (config::Mode::Stream, _) | (config::Mode::Ordered, Some(config::Protocol::Http)) => None,
        (config::Mode::Ordered, _) => {
            let codec: Arc<dyn codec::Codec> = Arc::new(
                codec::resp::Resp::new(config.ordered.max_frame_bytes, config.ordered.allow.as_deref())
                    .allowing_unsafe(&config.ordered.allow_unsafe),
            );
            let faults = FaultSink::new(Arc::clone(&metrics), Arc::clone(&supervisor));
            let wait = config.supervisor().ready_timeout;
            let group = match config.group.as_ref().map(|g| join_group(g, wait)) {
                Some(joining) => joining.await.map(Some),
                None => Ok(None),
            };
            let group = match group {
                Ok(group) => group,
                Err(e) => {
                    supervisor.shutdown().await;
                    return Err(RunError::Group(e));
                }
            };
            let mut transfer = None;
            if let (Some(g), Some(settings)) = (&group, &config.group) {
                info!(host = g.local(), "joined the group");
                match settings.transfer_addrs().get(&g.local()).copied() {
                    Some(addr) => match TcpListener::bind(addr).await {
                        Ok(listener) => transfer = Some(listener),
                        Err(error) => {
                            supervisor.shutdown().await;
                            return Err(RunError::Bind { key: "group.transfer", addr, error });
                        }
                    },
                    None => warn!(
                        host = g.local(),
                        "group.transfer names no address for this host: it cannot give its state to a joining host"
                    ),
                }
            }
            let started = ordered::sequencer::start(
                &config,
                codec,
                Arc::clone(&supervisor),
                Arc::clone(&metrics),
                faults,
                group,
                transfer,
            )
            .await;
            match started {
                Ok(ordered) => Some(ordered),
                Err(e) => {
                    supervisor.shutdown().await;
                    return Err(RunError::Ordered(e));
                }
            }
        }
    };
    let http_rules = match config.vote.protocol {
        Some(config::Protocol::Http) => match crate::http::normal::Rules::new(&config.http.rule_config()) {
            Ok(rules) => Some(Arc::new(rules)),
            Err(problems) => {
                supervisor.shutdown().await;
                let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
                return Err(RunError::HttpRules(text.join("; ")));
            }
        },
        _ => None,
    };
    let http_ordered = config.vote.mode == config::Mode::Ordered;
    let shared = Shared::with_options(config, Arc::clone(&supervisor), metrics, (ordered, http_rules), options);
    if let (true, Some(rules)) = (http_ordered, shared.http_rules()) {
        match crate::http::ordered::HttpOrder::start(Arc::clone(&shared), rules) {
            Ok(order) => {
                let _ = shared.http_order.set(order);
            }
            Err(e) => {
                supervisor.shutdown().await;
                return Err(RunError::HttpOrder(e));
            }
        }
    }
    let reloader = hangups.map(|mut hangups| {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let _ = shared.reload_and_log("SIGHUP").await;
            }
        })
    });

    let client_addr = client_listener.local_addr().unwrap_or(listen);
    let admin_addr = admin_listener.as_ref().and_then(|a| a.local_addr().ok());
    let admin_task = admin_listener.map(|admin| tokio::spawn(admin::serve(admin, Arc::clone(&shared), started)));
    on_ready(&Running { clients: client_addr, admin: admin_addr, shared: Arc::clone(&shared) });
    info!(%client_addr, replicas = total, ready, quorum, "resh is serving");

    let slots = Arc::clone(&shared.slots);
    // Sessions belong to this run: dropping the set when it ends aborts the ones still open.
    let mut sessions = tokio::task::JoinSet::new();
    let accept = async {
        loop {
            // At most max_sessions at once: further clients wait in the kernel's accept queue.
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
            while sessions.try_join_next().is_some() {}
            match client_listener.accept().await {
                Ok((stream, _)) if !shared.ordered.as_ref().is_none_or(|o| o.serving()) => {
                    // D-RESH: a host that does not serve (joining, or cut off from the group)
                    // takes no clients; the protocol's error says why (a Redis client shows it
                    // to the application, where a bare close looks like resh being down).
                    shared.metrics.refused(metrics::Refusal::NoQuorum);
                    let said =
                        shared.ordered.as_ref().and_then(|o| o.codec.answer_error(&codec::AnswerError::NotServing));
                    // The refusal holds a session slot while it lasts (at most two seconds), so
                    // refused clients are bounded like served ones.
                    tokio::spawn(async move {
                        refuse(stream, said).await;
                        drop(slot);
                    });
                }
                Ok((stream, peer)) => {
                    let shared = Arc::clone(&shared);
                    sessions.spawn(async move {
                        serve(shared, stream, peer).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: resh's own limit. The client waits
                    // in the kernel's accept queue; resh waits a little instead of spinning.
                    if resh_exhausted(&e) {
                        warn!(error = %e, "cannot accept a client: resh is out of file descriptors or memory; retrying in 100 ms (raise `ulimit -n` or lower max_sessions)");
                    } else {
                        warn!(error = %e, "accept failed");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    };
    let left = async {
        match &shared.ordered {
            Some(ordered) => ordered.left().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        _ = accept => Ok(()),
        _ = shutdown => Ok(()),
        why = left => Err(RunError::Left(why)),
    };
    // Phase 5: drain. New clients are refused by the kernel once the listener is closed.
    drop(client_listener);
    let drain = shared.config().drain_timeout();
    let open = sessions.len();
    // Set even with no session open: `/ready` says so while the rest of the stop runs.
    shared.set_stopping(Stopping::Drain);
    if open > 0 {
        info!(sessions = open, drain_ms = drain.as_millis() as u64, "draining: letting sessions finish");
        let finished = tokio::time::timeout(drain, async { while sessions.join_next().await.is_some() {} }).await;
        // Phase 6: cut off the rest; they end themselves (a reset where output was cut), which
        // takes one turn of their loop. One that does not within a second is aborted.
        if finished.is_err() {
            warn!(sessions = sessions.len(), "drain time over: cutting off the sessions left");
            shared.set_stopping(Stopping::Now);
            let ended = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                while sessions.join_next().await.is_some() {}
            })
            .await;
            if ended.is_err() {
                error!(sessions = sessions.len(), "internal: sessions did not end when told to; aborting them");
            }
        }
    }
    drop(sessions);
    if let Some(task) = admin_task {
        task.abort();
    }
    if let Some(task) = reloader {
        task.abort();
    }
    supervisor.shutdown().await;
    outcome
}

/// Refuses a client: sends it `said` (the protocol's error) and closes. Its requests are read
/// and dropped for a moment after the close of our side, since closing a socket with unread
/// input sends a reset, which may destroy the error before the client reads it. Bounded: a
/// client that neither reads nor closes is reset after two seconds.
async fn refuse(mut stream: TcpStream, said: Option<bytes::Bytes>) {
    use tokio::io::AsyncWriteExt;
    let Some(said) = said else {
        let _ = stream.set_zero_linger();
        return;
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    let sent = async {
        stream.write_all(&said).await?;
        stream.shutdown().await
    };
    let sent = matches!(tokio::time::timeout_at(deadline, sent).await, Ok(Ok(())));
    if !(sent && discard_input(&mut stream, deadline.saturating_duration_since(tokio::time::Instant::now())).await) {
        let _ = stream.set_zero_linger();
    }
}

/// Reads and drops what a client still sends, until it closes its side or `limit` passes;
/// true if it closed. Called after resh closed its own side: closing a socket with input
/// unread sends a reset, which can destroy what the client has not read yet.
pub(crate) async fn discard_input(read: &mut (impl tokio::io::AsyncRead + Unpin), limit: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut sink = [0u8; 4096];
    let to_end = async {
        loop {
            match read.read(&mut sink).await {
                Ok(0) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    };
    tokio::time::timeout(limit, to_end).await.unwrap_or(false)
}

/// Joins the group `[group]` names, through its engine; while the engine is not there yet
/// (resh started before the local Corosync), tries again for up to `wait`.
async fn join_group(
    settings: &config::Group,
    wait: std::time::Duration,
) -> Result<Box<dyn group::Group>, group::GroupError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut said = false;
    loop {
        match join_group_once(settings) {
            Ok(group) => return Ok(group),
            Err(e) if tokio::time::Instant::now() < deadline => {
                if !said {
                    warn!(error = %e, "cannot join the group yet; retrying until supervisor.ready_timeout_ms");
                    said = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn join_group_once(settings: &config::Group) -> Result<Box<dyn group::Group>, group::GroupError> {
    match settings.engine {
        #[cfg(feature = "corosync")]
        config::Engine::Corosync => {
            Ok(Box::new(group::corosync::CorosyncGroup::join(&settings.name)?) as Box<dyn group::Group>)
        }
        #[cfg(not(feature = "corosync"))]
        config::Engine::Corosync => {
            Err(group::GroupError::Join("this resh was built without Corosync support (--features corosync)".into()))
        }
    }
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A refused client that already sent requests still reads the error, then a clean close:
    /// closing with its requests unread would reset the connection and could destroy the error.
    #[tokio::test]
    async fn a_refused_client_reads_the_reason_before_the_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream.write_all(&b"*1\r\n$4\r\nPING\r\n".repeat(1000)).await.expect("send");
            let mut got = Vec::new();
            let end = stream.read_to_end(&mut got).await;
            (got, end.map(|_| ()))
        });
        let (stream, _) = listener.accept().await.expect("accept");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        refuse(stream, Some(bytes::Bytes::from_static(b"-TRYAGAIN resh: not serving\r\n"))).await;
        let (got, end) = client.await.expect("client");
        assert_eq!(got, b"-TRYAGAIN resh: not serving\r\n");
        assert!(end.is_ok(), "{end:?}");
    }
}
