//! The sequencer: the tokio task around the [ordered core](super::core), and the local order
//! source.
//!
//! It owns the core and feeds it, one event at a time: the local sessions' requests (numbered
//! here, in the order they arrive: the *local order*), the replica connections' events, the
//! supervisor's admissions (polled), and the clock. After each event it carries out the
//! core's actions: connects and drops replica connections, hands bytes to their writers,
//! routes answers to the sessions that asked, and reports faults. It decides nothing itself.
//!
//! Backpressure: it takes no requests while the core has no room (its window or byte budget is
//! full); sessions then wait on the submission queue and stop reading their clients. It stops
//! reading a replica whose answers, held for the vote, fill its share of the byte budget. While
//! fewer replicas vote than the quorum, it answers requests itself, without ordering them
//! ([`AnswerError::NoQuorum`]): nothing is executed that could not be voted.
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use replicas::Supervisor;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::conn::{self, Conn, ConnEvent, ReaderSetup};
use super::core::{Action, Answer, Note, OrderedCore, Origin, Request};
use super::{Ordered, SessionAnswer, SessionNotice, SessionTable, Submission, SUBMIT_QUEUE};
use crate::codec::{AnswerError, Codec};
use crate::config::Config;
use crate::fault::{FaultEvent, FaultSink, Position};
use crate::metrics::Metrics;

/// The most requests ordered in one batch.
const BATCH: usize = 512;
/// How often the supervisor is asked for newly admitted replicas, and `/status` refreshed.
const ADMISSION_POLL: Duration = Duration::from_millis(50);

/// Why the sequencer could not start.
#[derive(Debug)]
pub enum StartError {
    /// The core refused the configuration (a bug: it was validated).
    Config(super::core::CoreConfigError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "ordered core: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Starts the sequencer and connects it to the replicas admitted now, so that they all start
/// from the same history; returns the handle sessions use.
pub async fn start(
    config: &Config,
    codec: Arc<dyn Codec>,
    supervisor: Arc<Supervisor>,
    metrics: Arc<Metrics>,
    faults: FaultSink,
) -> Result<Ordered, StartError> {
    let core = OrderedCore::new(config.ordered_core(), Arc::clone(&codec), 0).map_err(StartError::Config)?;
    let (submit_tx, submit_rx) = mpsc::channel(SUBMIT_QUEUE);
    let (events_tx, events_rx) = mpsc::channel(1024);
    let n = config.replicas.len();
    let views = Arc::new(Mutex::new(Vec::new()));
    let sessions = Arc::new(SessionTable::default());
    let ordered = Ordered {
        submit: submit_tx,
        sessions: Arc::clone(&sessions),
        codec: Arc::clone(&codec),
        views: Arc::clone(&views),
        buffered: Arc::new(AtomicUsize::new(0)),
    };
    let mut sequencer = Sequencer {
        core,
        start: Instant::now(),
        conns: (0..n).map(|_| None).collect(),
        addrs: vec![None; n],
        names: config.replicas.iter().map(|r| Arc::<str>::from(r.name.as_str())).collect(),
        reader: ReaderSetup { codec, max_frame: config.ordered.max_frame_bytes, supervisor: Arc::clone(&supervisor) },
        supervisor,
        metrics,
        faults,
        sessions,
        views,
        events_tx,
        connect_timeout: config.connect_timeout(),
    };
    sequencer.admit();
    let mut events_rx = events_rx;
    // Connect to the replicas that are up before the first request.
    let deadline = Instant::now() + config.connect_timeout();
    while sequencer.conns.iter().zip(&sequencer.addrs).any(|(c, a)| c.is_none() && a.is_some()) {
        match tokio::time::timeout_at(deadline, events_rx.recv()).await {
            Ok(Some(event)) => sequencer.handle_event(event),
            Ok(None) | Err(_) => break,
        }
    }
    sequencer.publish();
    tokio::spawn(sequencer.run(submit_rx, events_rx));
    Ok(ordered)
}

struct Sequencer {
    core: OrderedCore,
    start: Instant,
    conns: Vec<Option<Conn>>,
    /// The address and incarnation the supervisor last admitted, per replica.
    addrs: Vec<Option<(u64, SocketAddr)>>,
    names: Vec<Arc<str>>,
    reader: ReaderSetup,
    supervisor: Arc<Supervisor>,
    metrics: Arc<Metrics>,
    faults: FaultSink,
    sessions: Arc<SessionTable>,
    views: Arc<Mutex<Vec<super::ReplicaView>>>,
    events_tx: mpsc::Sender<ConnEvent>,
    connect_timeout: Duration,
}

impl Sequencer {
    async fn run(mut self, mut submits: mpsc::Receiver<Submission>, mut events: mpsc::Receiver<ConnEvent>) {
        let mut admissions = tokio::time::interval(ADMISSION_POLL);
        admissions.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(BATCH);
        // One timer, moved when the core's next deadline moves (not a new one per event).
        let timer = tokio::time::sleep_until(self.start);
        tokio::pin!(timer);
        loop {
            let deadline = self.core.next_deadline().map(|d| self.start + d);
            if let Some(deadline) = deadline.filter(|&d| d != timer.deadline()) {
                timer.as_mut().reset(deadline);
            }
            let room = self.core.room();
            tokio::select! {
                biased;
                event = events.recv() => {
                    let Some(event) = event else { break };
                    self.handle_event(event);
                    // Take whatever else is there before looking at anything else: answers
                    // decide requests, and writes reported free room.
                    while let Ok(event) = events.try_recv() {
                        self.handle_event(event);
                    }
                }
                count = submits.recv_many(&mut batch, BATCH), if room => {
                    if count == 0 {
                        break;
                    }
                    if count < BATCH {
                        // Let every session that is ready to run submit too before the batch
                        // goes out: woken by the first submission, the sequencer often runs
                        // next and would send batches of one request (one write per replica
                        // per request instead of per batch).
                        tokio::task::yield_now().await;
                        while batch.len() < BATCH {
                            let Ok(submission) = submits.try_recv() else { break };
                            batch.push(submission);
                        }
                    }
                    self.order(&mut batch);
                }
                _ = &mut timer, if deadline.is_some() => {
                    let now = self.now();
                    self.core.tick(now);
                }
                _ = admissions.tick() => {
                    self.admit();
                    self.publish();
                }
            }
            self.carry_out();
        }
        info!("sequencer stopped");
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Numbers the batch in the local order and hands it to the core, or, while the core
    /// cannot serve, answers it here.
    fn order(&mut self, batch: &mut Vec<Submission>) {
        if !self.core.can_serve() {
            let sessions = self.sessions.lock();
            for s in batch.drain(..) {
                self.metrics.request_refused();
                if let Some(tx) = sessions.get(&s.session) {
                    let _ = tx.send(SessionNotice::Answer(SessionAnswer {
                        request: s.request,
                        answer: Answer::Error(AnswerError::NoQuorum),
                        masked: false,
                    }));
                }
            }
            return;
        }
        let requests = batch
            .drain(..)
            .map(|s| Request {
                origin: Origin { host: 0, session: s.session, request: s.request },
                bytes: s.bytes,
                logged: s.logged,
            })
            .collect();
        let now = self.now();
        if let Err(e) = self.core.order(self.core.next_seq(), requests, now) {
            // The local order numbers requests itself: a gap is a bug.
            error!(error = %e, "internal: the local order is out of step with the core");
        }
    }

    fn handle_event(&mut self, event: ConnEvent) {
        let now = self.now();
        match event {
            ConnEvent::Connected { replica, incarnation, result } => match result {
                Ok(stream) => {
                    let conn = conn::start(replica, incarnation, stream, self.reader.clone(), self.events_tx.clone());
                    self.conns[replica] = Some(conn);
                    self.core.connected(replica, incarnation, now);
                }
                Err(e) => {
                    let exhausted = crate::server::resh_exhausted(&e);
                    if !exhausted {
                        warn!(replica = %self.names[replica], error = %e, "cannot connect to replica");
                    }
                    self.core.connect_failed(replica, incarnation, exhausted, &e.to_string(), now);
                }
            },
            ConnEvent::Frames { replica, incarnation, frames } => {
                if self.conns[replica].as_ref().is_some_and(|c| c.incarnation == incarnation) {
                    for frame in frames {
                        self.core.response(replica, incarnation, frame, now);
                    }
                }
            }
            // The bytes are counted by `count_written`, before the core is asked what to do.
            ConnEvent::Progress { .. } => {}
            ConnEvent::Closed { replica, incarnation, process_gone, malformed, why } => {
                if self.conns[replica].as_ref().is_some_and(|c| c.incarnation == incarnation) {
                    debug!(replica = %self.names[replica], reason = %why, process_gone, "replica connection ended");
                    if malformed.is_some() {
                        warn!(replica = %self.names[replica], reason = %why, "replica output cannot be framed");
                    }
                    self.conns[replica] = None;
                    self.core.closed(replica, incarnation, process_gone, malformed, now);
                }
            }
        }
    }

    /// Tells the core about incarnations the supervisor admitted since the last poll.
    fn admit(&mut self) {
        let now = self.now();
        for admitted in self.supervisor.admit_session() {
            let r = admitted.index;
            if self.addrs[r].is_none_or(|(inc, _)| inc < admitted.incarnation) {
                self.addrs[r] = Some((admitted.incarnation, admitted.addr));
                self.core.admitted(r, admitted.incarnation, now);
            }
        }
        self.carry_out();
    }

    /// Refreshes what `/status` and the metrics show of each replica.
    fn publish(&self) {
        let views = (0..self.names.len()).filter_map(|r| self.core.view(r)).collect();
        *self.views.lock().unwrap_or_else(|p| p.into_inner()) = views;
    }

    /// Tells the core what the writers wrote since the last call; true if they wrote anything.
    fn count_written(&mut self) -> bool {
        let now = self.now();
        let mut any = false;
        for (r, conn) in self.conns.iter().enumerate() {
            let Some(conn) = conn else { continue };
            let bytes = conn.take_written();
            if bytes > 0 {
                self.core.written(r, conn.incarnation, bytes, now);
                any = true;
            }
        }
        any
    }

    /// Carries out the core's actions; then, for every replica whose writes wait for room,
    /// asks its writer to report its next write.
    fn carry_out(&mut self) {
        self.count_written();
        loop {
            self.carry_out_actions();
            for (r, conn) in self.conns.iter().enumerate() {
                if let Some(conn) = conn.as_ref().filter(|c| self.core.write_blocked(r, c.incarnation)) {
                    conn.want_progress();
                }
            }
            // A write that finished before the flag was set sent no event: it is counted here,
            // and may have made room. (Ends: a writer writes only what it was handed.)
            if !self.count_written() {
                break;
            }
        }
        for (r, conn) in self.conns.iter().enumerate() {
            if let Some(conn) = conn {
                conn.pause_reading(self.core.read_paused(r));
            }
        }
    }

    fn carry_out_actions(&mut self) {
        let mut replies: Vec<(u64, SessionNotice)> = Vec::new();
        // A replica's place in the vote changes only with these: `/status` then shows it at once
        // rather than at the next poll.
        let mut changed = false;
        while let Some(action) = self.core.poll_action() {
            changed |= matches!(
                action,
                Action::Connect { .. } | Action::Disconnect { .. } | Action::Fault { .. } | Action::Note(_)
            );
            match action {
                Action::Connect { replica, incarnation } => {
                    self.conns[replica] = None;
                    match self.addrs[replica] {
                        Some((inc, addr)) if inc == incarnation => {
                            conn::connect(replica, incarnation, addr, self.connect_timeout, self.events_tx.clone())
                        }
                        _ => {
                            // Not admitted (any more): a newer incarnation will be, or none.
                            let now = self.now();
                            self.core.connect_failed(replica, incarnation, true, "not admitted by the supervisor", now);
                        }
                    }
                }
                Action::Disconnect { replica } => self.conns[replica] = None,
                Action::Write { replica, incarnation, bytes } => {
                    let written =
                        self.conns[replica].as_ref().filter(|c| c.incarnation == incarnation).map(|c| c.write(bytes));
                    if written == Some(false) {
                        // The writer ended: the reader reports the closed connection.
                        debug!(replica = %self.names[replica], "replica writer gone");
                    }
                }
                Action::Reply { origin, seq: _, answer, masked, waited } => {
                    self.metrics.vote_latency(waited);
                    match &answer {
                        Answer::Frame(_) => self.metrics.request_released(masked),
                        Answer::Error(AnswerError::Undecidable) => {
                            self.metrics.request_undecidable();
                            error!(
                                session = origin.session,
                                "request undecidable: no quorum of replicas agreed on the answer"
                            );
                        }
                        Answer::Error(AnswerError::TimedOut { limit_ms }) => {
                            self.metrics.request_timed_out();
                            warn!(
                                session = origin.session,
                                limit_ms, "request not decided within ordered.request_timeout_ms"
                            );
                        }
                        Answer::Error(_) => self.metrics.request_refused(),
                    }
                    if origin.host == 0 {
                        let answer = SessionAnswer { request: origin.request, answer, masked };
                        replies.push((origin.session, SessionNotice::Answer(answer)));
                    }
                }
                Action::Masked { origin, seq: _ } => {
                    self.metrics.request_masked_late();
                    if origin.host == 0 {
                        replies.push((origin.session, SessionNotice::Masked));
                    }
                }
                Action::Fault { replica, incarnation, seq, kind } => self.faults.report(&FaultEvent {
                    session: None,
                    replica,
                    name: Arc::clone(&self.names[replica]),
                    incarnation,
                    position: Position::Request(seq),
                    kind,
                }),
                Action::Note(note) => self.note(note),
            }
        }
        if !replies.is_empty() {
            let sessions = self.sessions.lock();
            for (session, answer) in replies {
                if let Some(tx) = sessions.get(&session) {
                    let _ = tx.send(answer);
                }
            }
        }
        if changed {
            self.publish();
        }
    }

    fn note(&self, note: Note) {
        match note {
            Note::Joined { replica, seq, rebuilt: true } => {
                info!(replica = %self.names[replica], request = seq, "replica resynchronised: it votes again");
            }
            Note::Joined { replica, seq, rebuilt: false } => {
                info!(replica = %self.names[replica], request = seq, "replica connected: it votes");
            }
            Note::Rebuilding { replica, how } => info!(replica = %self.names[replica], "rebuilding replica: {how}"),
            Note::RebuildFailed { replica, why } => {
                warn!(replica = %self.names[replica], "cannot rebuild replica now (retried): {why}");
            }
            Note::Resumed { replica, seq } => {
                info!(replica = %self.names[replica], request = seq, "replica reconnected: it goes on from this request");
            }
            Note::Refused { seq } => warn!(
                request = seq,
                "every replica closed its connection on this request: it is refused (not replayed), no replica is blamed"
            ),
            Note::ConnectDelayed { replica, why } => warn!(
                replica = %self.names[replica],
                "cannot connect to replica for resh's own reasons ({why}): retrying; the replica is not blamed"
            ),
        }
    }
}
