//! Running experiments: each on a fresh, in-process resh ([`netdomain::run_until`] on port 0) with
//! freshly started replicas, so no experiment inherits a fault (or a repair) from another.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use replicas::inject::{self, InjectError, InjectKind, InjectionRecord, RecordStatus};
use replicas::{ReplicaStatus, Supervisor};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::classify::{classify, first_wrong_byte, Observation, Outcome, SessionEnd, SessionResult};
use super::config::CampaignConfig;
use super::plan::Injection;
use super::workload;
use netdomain::config::{Config, ConfigError};
use netdomain::metrics::{unix_now, FaultRecord};
use netdomain::{InProcess, InProcessError, Running};

/// How often the target replica's state is sampled (time to repair is this precise).
const MONITOR_INTERVAL: Duration = Duration::from_millis(5);

/// Why an experiment's resh could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// resh itself: its configuration could not be written as TOML.
    #[error("cannot build resh's configuration: {0}")]
    Encode(#[from] toml::ser::Error),
    /// The user's campaign file: its settings make an invalid resh configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// resh could not be started.
    #[error("cannot start resh: {0}")]
    Start(#[from] InProcessError),
    /// The service: not every replica became ready.
    #[error("only {ready} of {total} replicas of the service became ready: {}", not_ready(.waiting))]
    NotReady {
        /// Replicas ready.
        ready: usize,
        /// Replicas started.
        total: usize,
        /// The replicas that were not ready.
        waiting: Vec<ReplicaStatus>,
    },
}

/// `r1 is starting (exit status: 1); r2 is ...`
fn not_ready(waiting: &[ReplicaStatus]) -> String {
    let why: Vec<String> = waiting
        .iter()
        .map(|r| format!("{} is {} ({})", r.name, r.state, r.last_exit.as_deref().unwrap_or("no exit status")))
        .collect();
    why.join("; ")
}

/// Why the golden run gave no reference to compare experiments with.
#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    /// resh or the service could not be set up.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The service: a session did not end cleanly without any fault (or the user's
    /// `workload.timeout_ms` is too short).
    #[error(
        "with {replicas} replicas, session {session} ended {end:?} after {received} bytes without any fault injected; \
         the workload must finish cleanly (raise workload.timeout_ms?)"
    )]
    SessionEnded {
        /// Replicas in the run.
        replicas: usize,
        /// The session.
        session: usize,
        /// How it ended.
        end: SessionEnd,
        /// Bytes it received.
        received: usize,
    },
    /// The service: resh reported a fault without any fault injected.
    #[error(
        "with {replicas} replicas, resh reported a fault without any fault injected: {detail} (is the service's output deterministic?)"
    )]
    Fault {
        /// Replicas in the run.
        replicas: usize,
        /// The fault, as resh described it.
        detail: String,
    },
    /// The service: its output differs between replica counts.
    #[error(
        "the golden runs with {first} and {second} replicas differ: the service's output is not deterministic for this workload"
    )]
    Differ {
        /// One replica count.
        first: usize,
        /// The other.
        second: usize,
    },
}

/// One experiment, as a line of `experiments.jsonl`.
#[derive(Clone, Debug, Serialize)]
pub struct ExperimentRecord {
    /// Replicas in this experiment.
    pub replicas: usize,
    /// The experiment's number in the plan.
    pub experiment: usize,
    /// The campaign seed.
    pub campaign_seed: u64,
    /// The planned injection (the same for every replica count).
    pub injection: Injection,
    /// The target replica's name.
    pub target: String,
    /// What the injection did, as the injector recorded it (absent if it was refused or the
    /// workload never reached its point).
    pub record: Option<InjectionRecord>,
    /// For data-path faults: the record of it firing (absent if no byte went by after it).
    pub fired: Option<InjectionRecord>,
    /// Why the injection was refused.
    pub error: Option<String>,
    /// The outcome class.
    pub outcome: Outcome,
    /// The target's process exited on its own (killed by the crash, or a memflip crashed it).
    pub target_crashed: bool,
    /// The target stopped making progress: it was hung (SIGSTOP) or the voter found it late.
    pub target_hung: bool,
    /// Faults the voter reported, any replica.
    pub faults: Vec<FaultRecord>,
    /// From the fault taking effect to the first fault report, in ms.
    pub detection_latency_ms: Option<f64>,
    /// From the fault taking effect until the target was admitted again in a new
    /// incarnation, in ms (absent when it never left service, or was not back within
    /// `resh.settle_ms`).
    pub repair_ms: Option<f64>,
    /// What each client session got.
    pub sessions: Vec<SessionSummary>,
    /// resh stopped on its own during the experiment.
    pub host_stopped: bool,
    /// Wall time of the experiment, ms.
    pub duration_ms: f64,
    /// How long the workload took as its client saw it (a masked hang costs no time at N=3; a
    /// stall at N=1 costs the client all of it).
    pub workload_ms: f64,
}

/// One client session of an experiment, compared with the golden run.
#[derive(Clone, Debug, Serialize)]
pub struct SessionSummary {
    /// How it ended.
    pub end: SessionEnd,
    /// Bytes received.
    pub received: usize,
    /// Bytes in the golden run.
    pub expected: usize,
    /// The first offset where it departs from the golden run.
    pub first_wrong_byte: Option<u64>,
}

/// Runs experiments of one campaign.
pub struct Runner<'a> {
    config: &'a CampaignConfig,
    bindir: PathBuf,
}

/// A resh started for one experiment.
type Instance = InProcess;

/// What the monitor saw of the target replica.
#[derive(Clone, Debug, Default)]
struct Watch {
    left_service: Option<f64>,
    back_in_service: Option<f64>,
    exited: bool,
}

impl<'a> Runner<'a> {
    /// A runner; `bindir` fills `{bindir}` in the service command.
    pub fn new(config: &'a CampaignConfig, bindir: PathBuf) -> Runner<'a> {
        Runner { config, bindir }
    }

    /// The name of replica `index` (0-based) in experiments.
    pub fn replica_name(index: usize) -> String {
        format!("r{}", index + 1)
    }

    /// The resh configuration of an experiment with `n` replicas: clients on a free port, no
    /// admin API, the campaign's timing, default quorum (a majority; 1 for N=1).
    pub fn resh_config(&self, n: usize) -> Result<Config, SetupError> {
        use toml::{Table, Value};
        let (argv, env) = self.config.service_command(&self.bindir);
        let r = &self.config.resh;
        let table = |pairs: Vec<(&str, Value)>| -> Value {
            Value::Table(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        };
        let int = |v: u64| Value::Integer(i64::try_from(v).unwrap_or(i64::MAX));
        let mut root = Table::new();
        root.insert("listen".into(), Value::String("127.0.0.1:0".into()));
        root.insert("admin".into(), table(vec![("listen", Value::String(String::new()))]));
        root.insert(
            "vote".into(),
            table(vec![("vote_timeout_ms", int(r.vote_timeout_ms)), ("lag_timeout_ms", int(r.lag_timeout_ms))]),
        );
        root.insert(
            "supervisor".into(),
            table(vec![
                ("ready_timeout_ms", int(r.ready_timeout_ms)),
                ("restart_backoff_ms", int(r.restart_backoff_ms)),
                ("restart_backoff_max_ms", int(r.restart_backoff_ms.max(1000))),
            ]),
        );
        let replicas: Vec<Value> = (0..n)
            .map(|i| {
                let mut t = Table::new();
                t.insert("name".into(), Value::String(Self::replica_name(i)));
                t.insert("command".into(), Value::Array(argv.iter().cloned().map(Value::String).collect()));
                if !env.is_empty() {
                    t.insert(
                        "env".into(),
                        Value::Table(env.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()),
                    );
                }
                if let Some(cwd) = &self.config.service.cwd {
                    t.insert("cwd".into(), Value::String(cwd.display().to_string()));
                }
                Value::Table(t)
            })
            .collect();
        root.insert("replica".into(), Value::Array(replicas));
        let text = toml::to_string(&root)?;
        Ok(Config::parse(&text, "the experiment's resh configuration")?)
    }

    async fn start(&self, n: usize) -> Result<Instance, SetupError> {
        let config = self.resh_config(n)?;
        let instance = InProcess::start(config).await?;
        let ready = instance.running.shared.supervisor.ready_count();
        if ready < n {
            let mut waiting = instance.running.shared.supervisor.status();
            waiting.retain(|r| r.state != "ready");
            stop_instance(instance).await;
            return Err(SetupError::NotReady { ready, total: n, waiting });
        }
        Ok(instance)
    }

    /// The golden run with `n` replicas: the workload without a fault. Every session must end
    /// normally and no fault may be reported, or classification would be meaningless.
    pub async fn golden(&self, n: usize) -> Result<Vec<Vec<u8>>, GoldenError> {
        let instance = self.start(n).await?;
        let deadline = Instant::now() + Duration::from_millis(self.config.workload.timeout_ms);
        let sessions = workload::run(instance.running.clients, &self.config.workload, deadline, &mut |_, _| {}).await;
        let deadline = Instant::now() + Duration::from_millis(self.config.resh.settle_ms);
        self.sessions_ended(&instance.running, deadline).await;
        let faults = instance.running.shared.metrics.recent_faults();
        stop_instance(instance).await;
        if let Some((i, s)) = sessions.iter().enumerate().find(|(_, s)| s.end != SessionEnd::Closed) {
            return Err(GoldenError::SessionEnded {
                replicas: n,
                session: i,
                end: s.end.clone(),
                received: s.received.len(),
            });
        }
        if let Some(f) = faults.first() {
            return Err(GoldenError::Fault { replicas: n, detail: f.detail.clone() });
        }
        Ok(sessions.into_iter().map(|s| s.received).collect())
    }

    /// One experiment with `n` replicas: fresh resh, the workload with `injection` at its
    /// point, settling, classification against `golden`.
    pub async fn experiment(
        &self,
        n: usize,
        golden: &[Vec<u8>],
        injection: &Injection,
    ) -> Result<ExperimentRecord, SetupError> {
        let began = Instant::now();
        let instance = self.start(n).await?;
        let supervisor = Arc::clone(&instance.running.shared.supervisor);
        let target_index = injection.target_in(n);
        let target = Self::replica_name(target_index);
        let initial = supervisor.status().get(target_index).cloned();
        let watch = Arc::new(Mutex::new(Watch::default()));
        let (stop_watch, watch_stop) = watch::channel(false);
        let monitor = initial.map(|initial| {
            tokio::spawn(monitor(Arc::clone(&supervisor), target_index, initial, Arc::clone(&watch), watch_stop))
        });

        let request = injection.request(&target, self.config);
        let mut done: Option<Result<InjectionRecord, InjectError>> = None;
        let deadline = Instant::now() + Duration::from_millis(self.config.workload.timeout_ms);
        let workload_began = Instant::now();
        let sessions = {
            let mut step = |s: usize, r: usize| {
                if done.is_none() && (s, r) == (injection.session, injection.request) {
                    done = Some(inject::perform(&supervisor, &request));
                }
            };
            workload::run(instance.running.clients, &self.config.workload, deadline, &mut step).await
        };
        let workload_ms = workload_began.elapsed().as_secs_f64() * 1000.0;
        let host_stopped = instance.is_finished();
        let injected_ok = matches!(done, Some(Ok(_)));
        // Faults of the target surface after the workload too (a late replica is found when
        // the session ends); a crashed or faulty target is then repaired: wait for both.
        let expect_repair = |faults: &[FaultRecord]| {
            (injected_ok && injection.kind == InjectKind::Crash) || faults.iter().any(|f| f.replica == target)
        };
        self.settle(&instance.running, &watch, &expect_repair).await;
        let _ = stop_watch.send(true);
        if let Some(m) = monitor {
            let _ = m.await;
        }
        let faults = instance.running.shared.metrics.recent_faults();
        let (record, error) = match done {
            Some(Ok(r)) => (Some(r), None),
            Some(Err(e)) => (None, Some(e.to_string())),
            None => (None, None),
        };
        let fired = record.as_ref().filter(|r| r.status == RecordStatus::Armed).and_then(|r| {
            supervisor.injector().records().into_iter().find(|f| f.id == r.id && f.status == RecordStatus::Fired)
        });
        stop_instance(instance).await;

        let results: &[SessionResult] = &sessions;
        let outcome = classify(&Observation { golden, sessions: results, host_stopped, faults_named: faults.len() });
        // The fault took effect when it fired (data path) or was done (process faults).
        let effect_time = fired.as_ref().or(record.as_ref()).map(|r| r.time);
        let seen = watch.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let first_fault = faults.iter().map(|f| f.time).reduce(f64::min);
        let ms = |later: Option<f64>| match (effect_time, later) {
            (Some(t0), Some(t1)) => Some(((t1 - t0) * 1000.0).max(0.0)),
            _ => None,
        };
        let injected = record.is_some();
        Ok(ExperimentRecord {
            replicas: n,
            experiment: injection.experiment,
            campaign_seed: self.config.seed,
            injection: injection.clone(),
            target: target.clone(),
            detection_latency_ms: ms(first_fault),
            repair_ms: ms(seen.back_in_service),
            // The crash itself is known; other kinds count when the supervisor saw an exit.
            target_crashed: seen.exited || (injected && injection.kind == InjectKind::Crash),
            target_hung: (injected && injection.kind == InjectKind::Hang)
                || faults.iter().any(|f| f.replica == target && f.kind == "late"),
            record,
            fired,
            error,
            outcome,
            faults,
            sessions: sessions
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let expected = golden.get(i).map_or(&[][..], Vec::as_slice);
                    SessionSummary {
                        end: s.end.clone(),
                        received: s.received.len(),
                        expected: expected.len(),
                        first_wrong_byte: first_wrong_byte(expected, &s.received),
                    }
                })
                .collect(),
            host_stopped,
            duration_ms: began.elapsed().as_secs_f64() * 1000.0,
            workload_ms,
        })
    }

    /// After the workload: waits (up to `resh.settle_ms`) until every session has ended, so a
    /// slow minority's faults are reported; then, if the target left service or
    /// `expect_repair` says it will (given the faults so far), until it is back.
    async fn settle(&self, running: &Running, watch: &Mutex<Watch>, expect_repair: &dyn Fn(&[FaultRecord]) -> bool) {
        let deadline = Instant::now() + Duration::from_millis(self.config.resh.settle_ms);
        self.sessions_ended(running, deadline).await;
        loop {
            let w = watch.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let waiting = w.left_service.is_some() || expect_repair(&running.shared.metrics.recent_faults());
            if !waiting || w.back_in_service.is_some() || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(MONITOR_INTERVAL).await;
        }
    }

    /// Waits until no session is open, or `deadline`.
    async fn sessions_ended(&self, running: &Running, deadline: Instant) {
        while running.shared.metrics.active_sessions() > 0 && Instant::now() < deadline {
            tokio::time::sleep(MONITOR_INTERVAL).await;
        }
    }
}

/// Samples the target's state: when it left service (not ready, or a new incarnation), when
/// it was back (ready in a newer incarnation), and whether its process exited on its own (a
/// repair kill by the supervisor does not count: it records no exit).
async fn monitor(
    supervisor: Arc<Supervisor>,
    index: usize,
    initial: ReplicaStatus,
    watch: Arc<Mutex<Watch>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if let Some(now) = supervisor.status().get(index) {
            let t = unix_now();
            let mut w = watch.lock().unwrap_or_else(|p| p.into_inner());
            if w.left_service.is_none() && (now.state != "ready" || now.incarnation != initial.incarnation) {
                w.left_service = Some(t);
            }
            if w.left_service.is_some()
                && w.back_in_service.is_none()
                && now.state == "ready"
                && now.incarnation > initial.incarnation
            {
                w.back_in_service = Some(t);
            }
            if now.last_exit != initial.last_exit {
                w.exited = true;
            }
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(MONITOR_INTERVAL) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Stops an experiment's resh and waits until its replicas are gone.
async fn stop_instance(instance: Instance) {
    instance.stop(Duration::from_secs(10)).await;
}
