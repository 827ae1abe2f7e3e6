//! HTTP mode for stateful services (`mode = "ordered"`, `protocol = "http"`): every client's
//! requests in one global order, on one host.
//!
//! A stateful web service (a shop's cart, a wiki) stays the same on every replica only if
//! every replica executes the same requests in the same order. Sessions hand their requests to
//! one [`HttpOrder`]: a *sequencer* task gives each a global sequence number and queues it to
//! every replica's *worker*, which sends its queue to its replica one request at a time, in
//! order, over a keep-alive connection (HTTP/1.1 pipelining is not used: servers differ in how
//! they treat it, and a server that closes a connection may have dropped what was pipelined
//! behind the answer). The responses are voted as in stateless HTTP mode (their normal form,
//! [`super::normal`]) by one [`FrameVoter`] over the global order; the session gets the agreed
//! response as soon as a quorum agrees.
//!
//! - A replica that closes its connection between requests is reconnected (normal HTTP); one
//!   whose response differs, that fails or trails the quorum by the lag timeout is reported
//!   and leaves the vote. The supervisor restarts it, and the sequencer rebuilds it by sending
//!   it the *replay log* (every request but GET, HEAD and OPTIONS, in order, their answers
//!   not voted), then lets it vote again from the next request on. The log is bounded
//!   (`ordered.log_max_bytes`); once it no longer reaches back to the first request, a replica
//!   that fails stays out until resh restarts (the log says so).
//! - Fewer voting replicas than the quorum: requests are refused with a 503 and not executed.
//! - No agreed response within `http.request_timeout_ms`: the client gets a 504 that says the
//!   request may still take effect (it stays in the order, and in the vote).
//! - Every exchange has a limit (`http.request_timeout_ms`): a request every replica leaves
//!   unanswered (a response that never ends) is voted as timed out alike, answered with a 504,
//!   and the order goes on; a replica that trails the quorum is late from when its worker
//!   started sending it the request (`FrameVoter::sent_to`), so its backlog stays bounded.
//! - A replica behind an `address` (not started by resh) is not rebuilt: it keeps its state
//!   when it is readmitted, and replaying the log onto it would run requests twice.
//! - One host only: D-RESH's group order carries RESP only.
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use voter::{FrameConfig, FrameVoter, Vote};

use super::normal::Rules;
use super::session::{
    exchange, forward, malformed_digest, plain, read_request_body, respond, timed_out_digest, Answer, ConnectError,
    Exchange, IdleGuard,
};
use crate::fault::{FaultEvent, Position};
use crate::metrics::Verdict;
use crate::server::Shared;

/// Requests waiting for their answer, at most (sessions beyond wait to submit theirs).
const MAX_PENDING: usize = 4096;
/// How often the sequencer looks for restarted replicas to rebuild.
const REJOIN_POLL: Duration = Duration::from_millis(100);
/// Requests a replica being rebuilt may have waiting; beyond, it cannot catch up with the
/// order and is taken out.
const MAX_CATCH_UP_BACKLOG: usize = 8192;

/// One request, as a session hands it over.
struct Submitted {
    parts: Arc<hyper::http::request::Parts>,
    body: Bytes,
    session: u64,
    reply: oneshot::Sender<Response<Full<Bytes>>>,
    /// Set when the answer was masked (a replica differed or failed): the session's verdict.
    masked: Arc<std::sync::atomic::AtomicBool>,
}

/// The handle sessions submit their requests through.
#[derive(Clone)]
pub struct HttpOrder {
    submit: mpsc::Sender<Submitted>,
}

impl std::fmt::Debug for HttpOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOrder").finish_non_exhaustive()
    }
}

impl HttpOrder {
    /// Starts the sequencer over the replicas the supervisor has ready now (the others join
    /// when they are ready).
    pub fn start(shared: Arc<Shared>, rules: Arc<Rules>) -> Result<HttpOrder, voter::ConfigError> {
        let config = shared.config();
        let replicas = config.replicas.len();
        let voter =
            FrameVoter::new(FrameConfig { replicas, quorum: config.quorum(), lag_timeout: config.lag_timeout() })?;
        let (submit, submissions) = mpsc::channel(256);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let lanes = config
            .replicas
            .iter()
            .map(|r| Lane {
                name: Arc::from(r.name.as_str()),
                index: usize::MAX,
                incarnation: 0,
                epoch: 0,
                state: LaneState::Out { failed_incarnation: 0 },
                queue: None,
                worker: None,
                joined_before: false,
            })
            .collect();
        let sequencer = Sequencer {
            shared,
            rules,
            voter,
            start: Instant::now(),
            lanes,
            pending: BTreeMap::new(),
            log: VecDeque::new(),
            log_bytes: 0,
            log_complete: true,
            told_incomplete: false,
            done_tx,
        };
        tokio::spawn(sequencer.run(submissions, done_rx));
        Ok(HttpOrder { submit })
    }
}

/// What a lane (one replica's place in the vote) is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LaneState {
    /// In the vote.
    Voting,
    /// Being rebuilt from the replay log: it joins the vote once it answered everything it
    /// was sent (`queued`: the last request sent, `done`: the last answered, `backlog`: how
    /// many it has yet to answer).
    CatchingUp { queued: Option<u64>, done: Option<u64>, backlog: usize },
    /// Out of the vote; it may come back as a newer incarnation.
    Out { failed_incarnation: u64 },
}

struct Lane {
    name: Arc<str>,
    /// The supervisor's index of the replica (`usize::MAX` until first admitted).
    index: usize,
    incarnation: u64,
    /// Bumped with every new worker: what an older worker reports is ignored.
    epoch: u64,
    state: LaneState,
    queue: Option<mpsc::UnboundedSender<Job>>,
    /// Its worker, aborted when the lane leaves the vote (what it still had queued must not
    /// reach the replica out of the order).
    worker: Option<tokio::task::JoinHandle<()>>,
    /// It was in the vote once (a later join is a rebuild).
    joined_before: bool,
}

impl Lane {
    /// Out of the vote: its worker stopped, its queue dropped, a new epoch.
    fn stop(&mut self) {
        self.state = LaneState::Out { failed_incarnation: self.incarnation };
        self.epoch += 1;
        self.queue = None;
        if let Some(worker) = self.worker.take() {
            worker.abort();
        }
    }
}

/// One request for one replica's worker.
struct Job {
    seq: u64,
    parts: Arc<hyper::http::request::Parts>,
    body: Bytes,
    /// Sent to rebuild the replica's state: its answer is not voted.
    replay: bool,
}

/// What a worker reports.
struct Done {
    lane: usize,
    epoch: u64,
    seq: u64,
    replay: bool,
    outcome: WorkerOutcome,
}

enum WorkerOutcome {
    /// The worker starts sending the request (the replica's lateness counts from here).
    Started,
    Exchanged(Exchange),
    /// No whole response within `http.request_timeout_ms`.
    TimedOut,
}

/// How a request ended, as far as rebuilding a replica by replaying it goes: a replica being
/// rebuilt must end a replayed request the way the quorum's answer did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Answered,
    Closed,
    Malformed,
    TimedOut,
}

impl Ending {
    fn of_vote(vote: &Vote) -> Ending {
        match vote {
            Vote::Closed => Ending::Closed,
            Vote::Frame(d) if *d == malformed_digest() => Ending::Malformed,
            Vote::Frame(d) if *d == timed_out_digest() => Ending::TimedOut,
            Vote::Frame(_) => Ending::Answered,
        }
    }

    fn of_outcome(outcome: &WorkerOutcome) -> Option<Ending> {
        match outcome {
            WorkerOutcome::Started | WorkerOutcome::Exchanged(Exchange::Unreachable(_)) => None,
            WorkerOutcome::Exchanged(Exchange::Answered(_)) => Some(Ending::Answered),
            WorkerOutcome::Exchanged(Exchange::Closed(_)) => Some(Ending::Closed),
            WorkerOutcome::Exchanged(Exchange::Malformed(_)) => Some(Ending::Malformed),
            WorkerOutcome::TimedOut => Some(Ending::TimedOut),
        }
    }
}

/// One request in the vote.
struct Pending {
    reply: Option<oneshot::Sender<Response<Full<Bytes>>>>,
    masked: Arc<std::sync::atomic::AtomicBool>,
    answers: Vec<Option<Answer>>,
    head: bool,
    session: u64,
    deadline: Instant,
}

/// A logged request, for rebuilding a replica.
struct Logged {
    seq: u64,
    parts: Arc<hyper::http::request::Parts>,
    body: Bytes,
    /// How the quorum's answer ended, once decided (`None`: not yet, or undecidable).
    ending: Option<Ending>,
}

struct Sequencer {
    shared: Arc<Shared>,
    rules: Arc<Rules>,
    voter: FrameVoter,
    start: Instant,
    lanes: Vec<Lane>,
    pending: BTreeMap<u64, Pending>,
    log: VecDeque<Logged>,
    log_bytes: usize,
    /// The log holds every logged request since the first.
    log_complete: bool,
    told_incomplete: bool,
    done_tx: mpsc::UnboundedSender<Done>,
}

/// Whether a request may change the service's state (RFC 9110 §9.2.1: the safe methods do
/// not): logged for rebuilding replicas.
fn changes_state(method: &hyper::Method) -> bool {
    !matches!(*method, hyper::Method::GET | hyper::Method::HEAD | hyper::Method::OPTIONS | hyper::Method::TRACE)
}

impl Sequencer {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    async fn run(mut self, mut submissions: mpsc::Receiver<Submitted>, mut done: mpsc::UnboundedReceiver<Done>) {
        let mut stopping = self.shared.stopping();
        self.rejoin();
        let mut poll = tokio::time::interval(REJOIN_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.voter.next_deadline().map(|d| self.start + d);
            let timeout = self.pending.values().filter(|p| p.reply.is_some()).map(|p| p.deadline).min();
            let wake = [deadline, timeout].into_iter().flatten().min();
            tokio::select! {
                submitted = submissions.recv(), if self.pending.len() < MAX_PENDING => {
                    match submitted {
                        Some(s) => self.submit(s),
                        // Every session and the server dropped their handles: resh stops.
                        None => return,
                    }
                }
                Some(d) = done.recv() => self.done(d),
                _ = async { match wake { Some(w) => tokio::time::sleep_until(w).await, None => std::future::pending().await } } => {
                    self.voter.tick(self.now());
                    self.settle();
                    self.time_out();
                }
                _ = poll.tick() => self.rejoin(),
                _ = stopping.changed() => {}
            }
            // Once resh stops and nothing is owed, the sequencer ends (and lets go of the
            // shared state).
            if *stopping.borrow() != crate::server::Stopping::No && self.pending.values().all(|p| p.reply.is_none()) {
                return;
            }
        }
    }

    fn voting(&self) -> usize {
        self.lanes.iter().filter(|l| l.state == LaneState::Voting).count()
    }

    /// Orders one request and sends it to every voting replica (and, if it may change state,
    /// to the ones being rebuilt).
    fn submit(&mut self, s: Submitted) {
        let config = self.shared.config();
        let quorum = self.voter.config().quorum;
        if self.voting() < quorum {
            self.shared.metrics.request_refused();
            let _ = s.reply.send(plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{} replicas are in the vote, fewer than the quorum of {quorum}: the request was not executed",
                    self.voting()
                ),
            ));
            return;
        }
        // A reload may have changed the lag timeout.
        self.voter.set_lag_timeout(config.lag_timeout());
        let seq = self.voter.submit(self.now());
        let logged = changes_state(&s.parts.method);
        for lane in self.lanes.iter_mut() {
            let replay = match lane.state {
                LaneState::Voting => false,
                LaneState::CatchingUp { ref mut queued, ref mut backlog, .. } if logged => {
                    *queued = Some(seq);
                    *backlog += 1;
                    true
                }
                _ => continue,
            };
            let job = Job { seq, parts: Arc::clone(&s.parts), body: s.body.clone(), replay };
            if lane.queue.as_ref().is_none_or(|q| q.send(job).is_err()) {
                debug!(replica = %lane.name, "its worker is gone");
            }
        }
        for lane in 0..self.lanes.len() {
            if matches!(self.lanes[lane].state, LaneState::CatchingUp { backlog, .. } if backlog > MAX_CATCH_UP_BACKLOG)
            {
                warn!(replica = %self.lanes[lane].name, "the replica being rebuilt cannot catch up with the order: taken out");
                self.take_out(lane, None, voter::FaultKind::Crashed);
            }
        }
        if logged {
            self.log_bytes += s.body.len() + 512;
            self.log.push_back(Logged { seq, parts: Arc::clone(&s.parts), body: s.body.clone(), ending: None });
            while self.log_bytes > config.ordered.log_max_bytes {
                let Some(old) = self.log.pop_front() else { break };
                self.log_bytes = self.log_bytes.saturating_sub(old.body.len() + 512);
                self.log_complete = false;
            }
        }
        let deadline = Instant::now() + Duration::from_millis(config.http.request_timeout_ms);
        let head = s.parts.method == hyper::Method::HEAD;
        let answers = (0..self.lanes.len()).map(|_| None).collect();
        self.pending.insert(
            seq,
            Pending { reply: Some(s.reply), masked: s.masked, answers, head, session: s.session, deadline },
        );
        self.settle();
    }

    /// A worker's report.
    fn done(&mut self, d: Done) {
        let Some(lane) = self.lanes.get(d.lane) else { return };
        if lane.epoch != d.epoch {
            return;
        }
        let now = self.now();
        if let WorkerOutcome::Started = d.outcome {
            if !d.replay {
                self.voter.sent_to(d.lane, d.seq + 1);
            }
            return;
        }
        if let WorkerOutcome::Exchanged(Exchange::Unreachable(ConnectError { why, resh_exhausted: true })) = &d.outcome
        {
            // resh's own limit (file descriptors, memory): never the replica's fault; but it
            // missed a request, so it leaves the vote until it is restarted.
            warn!(replica = %lane.name, "cannot reach replica for resh's own reason: {why}; it leaves the vote until it is restarted");
            self.voter.leave(d.lane, now);
            self.lanes[d.lane].stop();
            self.settle();
            return;
        }
        if d.replay {
            let wanted = self.log.binary_search_by_key(&d.seq, |l| l.seq).ok().and_then(|i| self.log[i].ending);
            let ending = Ending::of_outcome(&d.outcome);
            // A replayed request ends as the quorum's answer did (a request every replica
            // refused alike is refused again), or with an answer.
            if ending != Some(Ending::Answered) && ending != wanted {
                let why = match &d.outcome {
                    WorkerOutcome::Exchanged(Exchange::Closed(w) | Exchange::Malformed(w)) => w.clone(),
                    WorkerOutcome::Exchanged(Exchange::Unreachable(c)) => c.why.clone(),
                    WorkerOutcome::TimedOut => "no answer within http.request_timeout_ms".into(),
                    _ => String::new(),
                };
                warn!(replica = %lane.name, seq = d.seq, "rebuilding the replica failed: {why}");
                self.take_out(d.lane, Some(Position::Request(d.seq)), voter::FaultKind::Crashed);
                return;
            }
            if let LaneState::CatchingUp { queued, backlog, .. } = lane.state {
                self.lanes[d.lane].state =
                    LaneState::CatchingUp { queued, done: Some(d.seq), backlog: backlog.saturating_sub(1) };
                self.maybe_join(d.lane);
            }
            return;
        }
        match d.outcome {
            WorkerOutcome::Started => {}
            WorkerOutcome::Exchanged(Exchange::Answered(answer)) => {
                self.voter.response(d.lane, Vote::Frame(answer.normal.digest()), now);
                if let Some(p) = self.pending.get_mut(&d.seq) {
                    p.answers[d.lane] = Some(*answer);
                }
            }
            WorkerOutcome::Exchanged(Exchange::Closed(why)) => {
                debug!(replica = %lane.name, "replica connection ended: {why}");
                self.voter.response(d.lane, Vote::Closed, now);
            }
            WorkerOutcome::Exchanged(Exchange::Malformed(why)) => {
                warn!(replica = %lane.name, "replica response cannot be parsed: {why}");
                self.voter.response(d.lane, Vote::Frame(malformed_digest()), now);
            }
            WorkerOutcome::TimedOut => {
                // Alike on every replica, this is the service's answer (a 504); alone, it
                // is outvoted (the voter has most likely found it late before).
                self.voter.response(d.lane, Vote::Frame(timed_out_digest()), now);
            }
            WorkerOutcome::Exchanged(Exchange::Unreachable(ConnectError { why, .. })) => {
                debug!(replica = %lane.name, "cannot reach replica: {why}");
                self.voter.fail(d.lane, now);
            }
        }
        self.settle();
    }

    /// Reports the voter's faults, takes those replicas out, and answers decided requests.
    fn settle(&mut self) {
        for fault in self.voter.take_faults() {
            self.report(fault.replica, Position::Request(fault.offset), fault.kind);
        }
        while let Some(decision) = self.voter.take_decision() {
            if let voter::FrameOutcome::Release { vote, .. } = &decision.outcome {
                if let Ok(i) = self.log.binary_search_by_key(&decision.seq, |l| l.seq) {
                    self.log[i].ending = Some(Ending::of_vote(vote));
                }
            }
            let Some(mut p) = self.pending.remove(&decision.seq) else { continue };
            let names: Vec<Arc<str>> = self.lanes.iter().map(|l| Arc::clone(&l.name)).collect();
            let answers = std::mem::take(&mut p.answers);
            let (response, masked) = respond(&self.shared, &names, p.session, p.head, Some(decision), answers);
            if masked {
                p.masked.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if let Some(reply) = p.reply.take() {
                let _ = reply.send(response);
            }
        }
    }

    /// Reports a fault of `lane` and takes it out of the vote.
    fn report(&mut self, lane: usize, position: Position, kind: voter::FaultKind) {
        let Some(l) = self.lanes.get_mut(lane) else { return };
        self.shared.faults.report(&FaultEvent {
            session: None,
            replica: l.index,
            name: Arc::clone(&l.name),
            incarnation: l.incarnation,
            position,
            kind,
        });
        l.stop();
    }

    /// A replica being rebuilt failed: out again, reported.
    fn take_out(&mut self, lane: usize, position: Option<Position>, kind: voter::FaultKind) {
        self.report(lane, position.unwrap_or(Position::Request(self.voter.next_seq())), kind);
    }

    /// Requests no quorum answered within `http.request_timeout_ms`: their clients get a 504.
    fn time_out(&mut self) {
        let now = Instant::now();
        let limit = self.shared.config().http.request_timeout_ms;
        for p in self.pending.values_mut().filter(|p| p.deadline <= now) {
            if let Some(reply) = p.reply.take() {
                self.shared.metrics.request_timed_out();
                let _ = reply.send(plain(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("no agreed response within http.request_timeout_ms ({limit} ms); the request stays in the order and may still take effect"),
                ));
            }
        }
    }

    /// Replicas that are out and have a newer incarnation ready: rebuild them from the log.
    fn rejoin(&mut self) {
        let ready = self.shared.supervisor.admit_session();
        let config = self.shared.config();
        // A replica whose process ended (or was restarted) since it joined leaves the vote;
        // the supervisor reported its end.
        for lane in 0..self.lanes.len() {
            let l = &self.lanes[lane];
            if matches!(l.state, LaneState::Out { .. }) {
                continue;
            }
            if !ready.iter().any(|a| *a.name == *l.name && a.incarnation == l.incarnation) {
                info!(replica = %l.name, "replica leaves the vote: its process is not running");
                self.voter.leave(lane, self.now());
                self.lanes[lane].stop();
            }
        }
        self.settle();
        for admitted in ready {
            let Some(lane) = self.lanes.iter().position(|l| *l.name == *admitted.name) else { continue };
            let LaneState::Out { failed_incarnation } = self.lanes[lane].state else { continue };
            if admitted.incarnation <= failed_incarnation {
                continue;
            }
            let is_address = config.replicas.iter().any(|r| r.name == *admitted.name && r.address.is_some());
            if is_address && self.lanes[lane].joined_before {
                if failed_incarnation != u64::MAX {
                    warn!(replica = %admitted.name, "an address replica is not rebuilt in HTTP ordered mode (resh cannot empty it, and replaying the log onto its state would run requests twice): it stays out of the vote until resh restarts");
                    self.lanes[lane].state = LaneState::Out { failed_incarnation: u64::MAX };
                }
                continue;
            }
            if !self.log_complete {
                if !self.told_incomplete {
                    self.told_incomplete = true;
                    warn!(replica = %admitted.name, "cannot rebuild the replica: the replay log no longer reaches back to the first request (ordered.log_max_bytes); it stays out of the vote until resh restarts");
                }
                continue;
            }
            let l = &mut self.lanes[lane];
            l.index = admitted.index;
            l.incarnation = admitted.incarnation;
            l.epoch += 1;
            let (tx, rx) = mpsc::unbounded_channel();
            let limit = Duration::from_millis(config.http.request_timeout_ms);
            l.worker = Some(tokio::spawn(worker(
                lane,
                l.epoch,
                admitted.addr,
                config.connect_timeout(),
                Arc::clone(&self.rules),
                (config.http.max_body_bytes, Arc::clone(&self.shared.http_held)),
                limit,
                rx,
                self.done_tx.clone(),
            )));
            let mut queued = None;
            for logged in &self.log {
                let job =
                    Job { seq: logged.seq, parts: Arc::clone(&logged.parts), body: logged.body.clone(), replay: true };
                let _ = tx.send(job);
                queued = Some(logged.seq);
            }
            l.queue = Some(tx);
            l.state = LaneState::CatchingUp { queued, done: None, backlog: self.log.len() };
            if queued.is_some() {
                info!(replica = %admitted.name, requests = self.log.len(), "rebuilding the replica: replaying the log");
            }
            self.maybe_join(lane);
        }
    }

    /// A lane being rebuilt that answered everything it was sent joins the vote.
    fn maybe_join(&mut self, lane: usize) {
        let LaneState::CatchingUp { queued, done, .. } = self.lanes[lane].state else { return };
        if queued.is_some() && done < queued {
            return;
        }
        let next = self.voter.next_seq();
        self.voter.join_at(lane, next, self.now());
        self.lanes[lane].state = LaneState::Voting;
        self.lanes[lane].joined_before = true;
        info!(replica = %self.lanes[lane].name, from_request = next, "replica joins the vote");
        self.settle();
    }
}

/// One replica's worker: its requests one at a time, in order, on a kept-alive connection,
/// each within `limit`.
#[allow(clippy::too_many_arguments)]
async fn worker(
    lane: usize,
    epoch: u64,
    addr: std::net::SocketAddr,
    connect_timeout: Duration,
    rules: Arc<Rules>,
    (max_body, budget): (usize, Arc<tokio::sync::Semaphore>),
    limit: Duration,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    done: mpsc::UnboundedSender<Done>,
) {
    // The kept-alive connection, between requests.
    let mut sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> = None;
    while let Some(job) = jobs.recv().await {
        let report = |outcome| done.send(Done { lane, epoch, seq: job.seq, replay: job.replay, outcome }).is_ok();
        if !report(WorkerOutcome::Started) {
            return;
        }
        let deadline = Instant::now() + limit;
        let attempt = async {
            loop {
                let request = forward(&job.parts, job.body.clone());
                let limits = (max_body, &budget);
                match exchange(sender.take(), request, &rules, limits, (addr, connect_timeout)).await {
                    // resh's own lack of file descriptors is waited out until the limit (the
                    // request was not sent): it is no reason to drop a replica.
                    (_, Exchange::Unreachable(e))
                        if e.resh_exhausted && Instant::now() + Duration::from_millis(50) < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    ended => break ended,
                }
            }
        };
        let outcome = match tokio::time::timeout_at(deadline, attempt).await {
            Ok((keep, result)) => {
                sender = keep;
                WorkerOutcome::Exchanged(result)
            }
            // The connection is dropped with the exchange: the next request gets a new one.
            Err(_) => WorkerOutcome::TimedOut,
        };
        if !report(outcome) {
            return;
        }
    }
}

/// Serves one client connection: its requests go through the global order.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    order: HttpOrder,
    client: TcpStream,
    peer: std::net::SocketAddr,
    id: u64,
) {
    shared.metrics.session_started();
    let config = shared.config();
    let start = Instant::now();
    let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let masked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let service = {
        let shared = Arc::clone(&shared);
        let masked = Arc::clone(&masked);
        let busy = Arc::clone(&busy);
        let requests = Arc::clone(&requests);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let shared = Arc::clone(&shared);
            let order = order.clone();
            let busy = Arc::clone(&busy);
            let requests = Arc::clone(&requests);
            let masked = Arc::clone(&masked);
            async move {
                requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let response = handle(&shared, &order, request, id, &busy, masked).await;
                busy.store(false, std::sync::atomic::Ordering::Relaxed);
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let client = IdleGuard::new(client, config.idle_timeout(), busy);
    let served = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(client), service).await;
    let verdict = if masked.load(std::sync::atomic::Ordering::Relaxed) { Verdict::Masked } else { Verdict::Agreed };
    shared.metrics.session_ended(verdict);
    info!(
        peer = %peer,
        requests = requests.load(std::sync::atomic::Ordering::Relaxed),
        duration_ms = start.elapsed().as_millis() as u64,
        verdict = verdict.name(),
        end = served.err().map(|e| super::session::error_chain(&e)).unwrap_or_else(|| "closed".into()),
        "session ended"
    );
}

async fn handle(
    shared: &Shared,
    order: &HttpOrder,
    request: Request<Incoming>,
    session: u64,
    busy: &std::sync::atomic::AtomicBool,
    masked: Arc<std::sync::atomic::AtomicBool>,
) -> Response<Full<Bytes>> {
    let config = shared.config();
    let (parts, body) = request.into_parts();
    let body = match read_request_body(body, config.http.max_request_bytes).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    shared.metrics.client_in(body.len());
    busy.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reply, answer) = oneshot::channel();
    let submitted = Submitted { parts: Arc::new(parts), body, session, reply, masked };
    let limit = Duration::from_millis(config.http.request_timeout_ms);
    match tokio::time::timeout(limit, order.submit.send(submitted)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return plain(StatusCode::SERVICE_UNAVAILABLE, "resh is stopping".into()),
        Err(_) => {
            shared.metrics.request_refused();
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the global order has as many requests waiting as it holds: the request was not executed".into(),
            );
        }
    }
    answer.await.unwrap_or_else(|_| plain(StatusCode::SERVICE_UNAVAILABLE, "resh is stopping".into()))
}
