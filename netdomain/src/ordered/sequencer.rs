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
//!
//! D-RESH (`[group]`): the group is the order source instead ([`super::multihost`]). Local
//! requests go to the D-RESH state machine, which multicasts them; the batches the group
//! delivers go to the core, at every host alike; a local request's answer goes to its session
//! when the state machine releases it. The sequencer also carries out the state machine's
//! other actions (fence, serve, leave) and the state transfers ([`super::transfer`]): holding
//! the core still while a joining host's copy is read, and starting a new core after a copy
//! came in.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use group::dresh::{self, Dresh};
use group::{Delivery, Group};
use replicas::Supervisor;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::conn::{self, Conn, ConnEvent, ReaderSetup};
use super::core::{Action, Answer, CoreConfig, Note, OrderedCore, Origin, Request};
use super::multihost::{Export, GroupSource, GroupStatus, WaitingState};
use super::transfer::{self, ExportRequest};
use super::{Ordered, SessionAnswer, SessionNotice, SessionTable, Submission, SUBMIT_QUEUE};
use crate::codec::{AnswerError, Codec, WatchOp};
use crate::config::Config;
use crate::fault::{FaultEvent, FaultSink, Position};
use crate::metrics::Metrics;

/// The most requests ordered in one batch.
const BATCH: usize = 512;
/// How often the supervisor is asked for newly admitted replicas, and `/status` refreshed.
const ADMISSION_POLL: Duration = Duration::from_millis(50);
/// D-RESH: how many times `ordered.max_held_bytes` the group's requests may pile up in a host
/// that falls behind before it leaves.
const LAG_FACTOR: usize = 4;
/// How soon messages the group's send queue had no room for are offered again.
const OUTBOX_RETRY: Duration = Duration::from_millis(2);

/// Why the sequencer could not start.
#[derive(Debug)]
pub enum StartError {
    /// The core refused the configuration (a bug: it was validated).
    Config(super::core::CoreConfigError),
    /// D-RESH: fewer local replicas vote than the quorum; a host joins its group only with them.
    NoQuorum {
        /// Replicas in the vote.
        voting: usize,
        /// The quorum.
        quorum: usize,
    },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "ordered core: {e}"),
            StartError::NoQuorum { voting, quorum } => write!(
                f,
                "only {voting} local replicas vote, fewer than the quorum ({quorum}): a host joins its group only with a quorum of its replicas"
            ),
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
    group: Option<Box<dyn Group>>,
    transfer_listener: Option<tokio::net::TcpListener>,
) -> Result<Ordered, StartError> {
    let core = OrderedCore::new(config.ordered_core(), Arc::clone(&codec), 0).map_err(StartError::Config)?;
    let (left_tx, left_rx) = watch::channel(None);
    let source = match (group.as_deref(), &config.group) {
        (Some(engine), Some(settings)) => {
            let local = engine.local();
            let max_message = engine.max_message();
            // Room in one message for a batch's framing and one request of up to this size.
            let batch_bytes = settings.max_message_bytes.min(max_message / 2);
            let incarnation = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| (d.as_secs() as u32) ^ d.subsec_nanos());
            let dresh = Dresh::new(
                dresh::Config { local, hosts: settings.hosts, max_message_bytes: batch_bytes, incarnation },
                // The replicas resh starts are empty; address replicas are taken to be (see
                // the README's D-RESH section).
                Some(dresh::Point::START),
            );
            let status = Arc::new(GroupStatus::new("corosync", settings.name.clone(), settings.hosts, local));
            let mut source = Box::new(GroupSource::new(dresh, local, max_message.saturating_sub(64)));
            source.transfer_addrs = settings.transfer_addrs();
            Some((source, status))
        }
        _ => None,
    };
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
        quorum: Arc::new(Mutex::new((config.quorum(), None))),
        buffered: Arc::new(AtomicUsize::new(0)),
        group: source.as_ref().map(|(_, status)| Arc::clone(status)),
        left: left_rx,
        broker: Arc::default(),
        tuning: Arc::default(),
        changes: Arc::default(),
    };
    let (source, group_status) = source.map_or((None, None), |(s, st)| (Some(s), Some(st)));
    let (transfer_tx, transfer_rx) = mpsc::channel(16);
    let (export_tx, export_rx) = mpsc::channel(1);
    if let Some(listener) = transfer_listener {
        tokio::spawn(transfer::serve(listener, export_tx));
    }
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
        codec: Arc::clone(&ordered.codec),
        core_config: config.ordered_core(),
        quorum: config.quorum(),
        max_frame: config.ordered.max_frame_bytes,
        request_timeout: Duration::from_millis(config.ordered.request_timeout_ms),
        tuning: Arc::clone(&ordered.tuning),
        quorum_shown: Arc::clone(&ordered.quorum),
        changes: Arc::clone(&ordered.changes),
        transfer_tx,
        exports: 0,
        source,
        group_status,
        left: left_tx,
        broker: Arc::clone(&ordered.broker),
        publishes: HashMap::new(),
        watches: super::watch::WatchTable::default(),
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
    if sequencer.source.is_some() && !sequencer.core.can_serve() {
        let voting =
            sequencer.views.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|v| v.state == "voting").count();
        return Err(StartError::NoQuorum { voting, quorum: config.quorum() });
    }
    tokio::spawn(sequencer.run(submit_rx, events_rx, group, transfer_rx, export_rx));
    Ok(ordered)
}

struct Sequencer {
    core: OrderedCore,
    /// Timeouts a reload changed, to be taken at the next admission poll.
    tuning: Arc<std::sync::Mutex<Option<super::Tuning>>>,
    /// The quorum `/status` shows (see `Ordered::quorum`).
    quorum_shown: Arc<Mutex<(usize, Option<usize>)>>,
    /// Replica sets reloads changed, to be taken at the next admission poll.
    changes: Arc<std::sync::Mutex<std::collections::VecDeque<super::ReplicaChange>>>,
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
    /// The codec: which delivered requests go to the replay log, and the state transfers.
    codec: Arc<dyn Codec>,
    /// To build a new core after a state transfer.
    core_config: CoreConfig,
    quorum: usize,
    max_frame: usize,
    request_timeout: Duration,
    /// Where the state transfer tasks report.
    transfer_tx: mpsc::Sender<TransferEvent>,
    /// Exports started so far (their ids).
    exports: u64,
    /// D-RESH: the group as the order source (`None`: the local order).
    source: Option<Box<GroupSource>>,
    group_status: Option<Arc<GroupStatus>>,
    /// D-RESH: set once this host left its group.
    left: watch::Sender<Option<String>>,
    /// Who subscribes to what.
    broker: Arc<Mutex<super::pubsub::Broker>>,
    /// Messages published by ordered requests not yet decided, by sequence number: delivered
    /// to the subscribers once decided.
    publishes: HashMap<u64, (Bytes, Bytes)>,
    /// Who watches what (WATCH, kept in the order).
    watches: super::watch::WatchTable,
}

/// What a state transfer task reports to the sequencer.
#[derive(Debug)]
enum TransferEvent {
    /// Export `id` read all it needs from the replicas: the core may go on.
    ExportRead(u64),
    /// Export `id` ended (the number of restores sent, or why not).
    Exported(u64, Result<u64, String>),
    /// An import ended: the state stands at this request (with the order's own state there),
    /// or why not.
    Imported(Result<(u64, Vec<Bytes>), String>),
}

/// The next delivery of the group, if there is one (never, on a single host).
async fn next_delivery(group: &mut Option<Box<dyn Group>>) -> Option<Delivery> {
    match group {
        Some(group) => group.deliveries().recv().await,
        None => std::future::pending().await,
    }
}

impl Sequencer {
    async fn run(
        mut self,
        mut submits: mpsc::Receiver<Submission>,
        mut events: mpsc::Receiver<ConnEvent>,
        mut group: Option<Box<dyn Group>>,
        mut transfers: mpsc::Receiver<TransferEvent>,
        mut exports: mpsc::Receiver<ExportRequest>,
    ) {
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
            let room = self.core.room() && !self.source.as_ref().is_some_and(|g| g.backlogged());
            let outbox_waits = self.source.as_ref().is_some_and(|g| !g.outbox.is_empty());
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
                    self.change_replicas();
                    self.admit();
                    self.retune();
                    self.publish();
                }
                delivery = next_delivery(&mut group) => {
                    let Some(delivery) = delivery else {
                        self.delivered(Delivery::Lost("the group engine stopped".into()));
                        group = None;
                        continue;
                    };
                    self.delivered(delivery);
                    // Whatever else was delivered meanwhile, before anything else.
                    if let Some(g) = group.as_mut() {
                        for _ in 0..BATCH {
                            let Ok(delivery) = g.deliveries().try_recv() else { break };
                            self.delivered(delivery);
                        }
                    }
                }
                _ = tokio::time::sleep(OUTBOX_RETRY), if outbox_waits => {}
                Some(event) = transfers.recv() => self.transfer_event(event),
                Some(request) = exports.recv() => self.export_requested(request),
            }
            self.transfer_step();
            self.carry_out();
            if let Some(g) = self.source.as_mut() {
                // One message of requests and one of answer digests per turn of the loop.
                g.dresh.flush();
            }
            self.carry_out();
            self.send_outbox(group.as_deref());
            if self.left.borrow().is_some() {
                // It left: the group is dropped (left), and resh stops (run_until waits on it).
                group = None;
            }
        }
        info!("sequencer stopped");
    }

    /// Offers the waiting messages to the group, oldest first, while it takes them.
    fn send_outbox(&mut self, group: Option<&dyn Group>) {
        let (Some(g), Some(engine)) = (self.source.as_mut(), group) else { return };
        while let Some(message) = g.outbox.front() {
            match engine.multicast(message.clone()) {
                Ok(()) => {
                    if dresh::is_requests(message) {
                        g.sent_at.push_back(Instant::now().into_std());
                    }
                    g.outbox.pop_front();
                }
                Err(group::GroupError::Full) => break,
                Err(e) => {
                    // Gone, or a message larger than the engine carries (the batches are cut
                    // below its limit: a bug). Either way this host cannot go on in the group.
                    g.dresh.leave(format!("cannot multicast: {e}"));
                    g.outbox.clear();
                    break;
                }
            }
        }
    }

    /// Hands a delivery to the D-RESH state machine.
    fn delivered(&mut self, delivery: Delivery) {
        let (Some(g), Some(status)) = (self.source.as_mut(), self.group_status.as_ref()) else { return };
        match &delivery {
            Delivery::View(view) => {
                status.view_installed();
                info!(view = ?view.members, joined = ?view.joined, left = ?view.left, "group view");
                // Batches sent before a view change may be lost: the latency is timed anew.
                g.sent_at.clear();
            }
            Delivery::Message { from, payload } if *from == g.local && dresh::is_requests(payload) => {
                if let Some(sent) = g.sent_at.pop_front() {
                    status.delivered_after(sent.elapsed());
                }
            }
            Delivery::Message { .. } => {}
            Delivery::Lost(why) => warn!(reason = %why, "the group is lost"),
        }
        g.dresh.delivered(delivery);
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Numbers the batch in the local order and hands it to the core, or, while the core
    /// cannot serve, answers it here.
    fn order(&mut self, batch: &mut Vec<Submission>) {
        if let Some(g) = self.source.as_mut() {
            // D-RESH: the group orders them; the core gets them when they are delivered.
            let sessions = self.sessions.lock();
            for s in batch.drain(..) {
                let size = s.bytes.len() + s.more.iter().map(|p| p.request.len()).sum::<usize>();
                let requests = s.requests();
                let refused = if size > g.max_message {
                    Some(AnswerError::RequestTooLarge { len: size as u64, limit: g.max_message as u64 })
                } else {
                    let unit = std::iter::once(s.bytes).chain(s.more.into_iter().map(|p| p.request)).collect();
                    (!g.dresh.submit_unit(s.session, s.request, unit)).then_some(AnswerError::NotServing)
                };
                if let Some(error) = refused {
                    answer_all(&sessions, s.session, requests, &error);
                    self.metrics.request_refused();
                }
            }
            return;
        }
        if !self.core.can_serve() {
            let sessions = self.sessions.lock();
            for s in batch.drain(..) {
                self.metrics.request_refused();
                answer_all(&sessions, s.session, s.requests(), &AnswerError::NoQuorum);
            }
            return;
        }
        let mut requests = Vec::with_capacity(batch.len());
        let first_seq = self.core.next_seq();
        for s in batch.drain(..) {
            let origin = |request| Origin { host: 0, session: s.session, request };
            requests.push(Request { origin: origin(s.request), bytes: s.bytes, class: s.class });
            for (request, part) in (s.request + 1..).zip(s.more) {
                requests.push(Request { origin: origin(request), bytes: part.request, class: part.class });
            }
        }
        self.note_publishes(first_seq, &requests);
        self.apply_watches(&mut requests);
        let now = self.now();
        if let Err(e) = self.core.order(first_seq, requests, now) {
            // The local order numbers requests itself: a gap is a bug.
            error!(error = %e, "internal: the local order is out of step with the core");
        }
    }

    /// Keeps the WATCH table (see [`super::watch`]) in the order of a batch: watches start and
    /// end, writes make them dirty, and the EXEC of a session whose watch is dirty becomes the
    /// codec's abort (nothing of the transaction runs). The same order on every host gives the
    /// same decisions.
    fn apply_watches(&mut self, requests: &mut [Request]) {
        if self.watches.is_empty() && !requests.iter().any(|r| r.class.watch == WatchOp::Watch) {
            return;
        }
        // The writes queued in a transaction take effect at its EXEC.
        let mut unit: Option<Vec<Bytes>> = Some(Vec::new());
        for request in requests.iter_mut() {
            let watcher = (request.origin.host, request.origin.session);
            match request.class.watch {
                WatchOp::Watch => self.watches.watch(watcher, self.codec.watched_keys(&request.bytes)),
                WatchOp::Unwatch => {
                    self.watches.take(watcher);
                }
                WatchOp::Exec => {
                    let queued = unit.replace(Vec::new());
                    if self.watches.take(watcher) == Some(true) {
                        if let Some(abort) = self.codec.abort_request() {
                            request.bytes = abort;
                        }
                        continue;
                    }
                    match queued {
                        Some(keys) => self.watches.touch(keys.iter().map(|k| &k[..])),
                        None => self.watches.touch_all(),
                    }
                }
                WatchOp::None if request.class.logged && !self.watches.is_empty() => {
                    match (self.codec.written_keys(&request.bytes), unit.as_mut()) {
                        (Some(keys), Some(queued)) => queued.extend(keys),
                        (Some(_), None) => {}
                        (None, _) => unit = None,
                    }
                    if !request.class.continues {
                        // A request of its own, or the end of a unit without an EXEC (a
                        // session's database around its request, resh's own units): its
                        // writes ran.
                        match unit.replace(Vec::new()) {
                            Some(keys) => self.watches.touch(keys.iter().map(|k| &k[..])),
                            None => self.watches.touch_all(),
                        }
                    }
                }
                WatchOp::None => {}
            }
        }
    }

    /// Keeps the messages of the publishing requests of a batch numbered from `first_seq`.
    fn note_publishes(&mut self, first_seq: u64, requests: &[Request]) {
        for (seq, request) in (first_seq..).zip(requests) {
            if let Some(published) = request.class.publish.then(|| self.codec.published(&request.bytes)).flatten() {
                self.publishes.insert(seq, published);
            }
        }
    }

    /// Request `seq` is decided: if it published a message, the subscribers get it now; the
    /// publisher's answer is how many did.
    fn deliver_published(&mut self, seq: u64, answer: &Answer) -> Option<Answer> {
        if self.publishes.is_empty() {
            return None;
        }
        let (channel, message) = self.publishes.remove(&seq)?;
        // Undecided or refused: nothing was published.
        let Answer::Frame(_) = answer else { return None };
        let receivers = self.broker.lock().unwrap_or_else(|p| p.into_inner()).receivers(&channel);
        let sessions = self.sessions.lock();
        for receiver in &receivers {
            let push = self.codec.push_message(&channel, &message, receiver.pattern.as_deref());
            if let Some(tx) = sessions.get(&receiver.session) {
                let _ = tx.send(SessionNotice::Push(push));
            }
        }
        Some(Answer::Frame(self.codec.publish_answer(receivers.len())))
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
                        self.supervisor.count_output(replica, usize::try_from(frame.len).unwrap_or(usize::MAX));
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
            // A replica a reload just added that the core does not know yet: at the next poll.
            if r >= self.addrs.len() {
                continue;
            }
            if self.addrs[r].is_none_or(|(inc, _)| inc < admitted.incarnation) {
                self.addrs[r] = Some((admitted.incarnation, admitted.addr));
                self.core.admitted(r, admitted.incarnation, now);
            }
        }
        self.carry_out();
    }

    /// Takes the timeouts a reload changed, if it did: for the core, a core built later (a
    /// state transfer) and the sequencer's own waits.
    fn retune(&mut self) {
        let Some(tuning) = self.tuning.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        self.core.retune(tuning.lag_timeout, tuning.request_timeout);
        self.core_config.lag_timeout = tuning.lag_timeout;
        self.core_config.request_timeout = tuning.request_timeout;
        self.request_timeout = tuning.request_timeout;
    }

    /// Takes the replica sets reloads changed (see `Ordered::change_replicas`), in order.
    fn change_replicas(&mut self) {
        loop {
            let Some(change) = self.changes.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else { break };
            let outcome = self.change_replicas_to(&change.remove, &change.add, change.quorum);
            if let Err(e) = &outcome {
                error!("reload: the ordered core did not take the new replicas: {e}");
            }
            let _ = change.done.send(outcome);
            self.carry_out();
        }
    }

    fn change_replicas_to(
        &mut self,
        remove: &[usize],
        add: &[(usize, super::core::ReplicaConfig)],
        quorum: usize,
    ) -> Result<(), String> {
        if self.source.is_some() {
            return Err("a D-RESH host keeps its replicas until it restarts".into());
        }
        let now = self.now();
        self.core.reconfigure(remove, add.to_vec(), quorum, now).map_err(|e| e.to_string())?;
        // (`core_config` and `quorum` serve D-RESH's state transfers only: not changed here.)
        for (index, config) in add {
            // Numbers the supervisor gave to replicas of a reload that did not go through are
            // the core's removed replicas: their places stay empty.
            self.conns.resize_with(index + 1, || None);
            self.addrs.resize(index + 1, None);
            self.names.resize(*index, Arc::from("(never added)"));
            self.names.push(Arc::clone(&config.name));
        }
        let (in_force, target) = self.core.quorum();
        info!(
            removed = remove.len(),
            added = add.len(),
            quorum = in_force,
            target = target.unwrap_or(in_force),
            "reload: the ordered core took the new replicas"
        );
        Ok(())
    }

    /// Refreshes what `/status` and the metrics show of each replica.
    fn publish(&self) {
        let views = (0..self.names.len()).filter_map(|r| self.core.view(r)).collect();
        *self.views.lock().unwrap_or_else(|p| p.into_inner()) = views;
        *self.quorum_shown.lock().unwrap_or_else(|p| p.into_inner()) = self.core.quorum();
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

    /// Carries out the core's and the group's actions until neither has any left (a delivered
    /// batch makes the core act; the core's answers make the group act).
    fn carry_out_actions(&mut self) {
        loop {
            self.carry_out_core();
            // Fail-stop: a host that serves without a quorum of its replicas can no longer
            // execute the group's stream. (A host being given a state does not serve yet: it
            // tells the group it can only once its new core can serve.)
            let serving = self.source.as_ref().is_some_and(|g| *g.dresh.role() == group::dresh::Role::Serving);
            if serving && !self.core.can_serve() {
                if let Some(g) = self.source.as_mut() {
                    g.dresh.leave("fewer local replicas vote than the quorum".into());
                }
            }
            if !self.carry_out_group() {
                break;
            }
        }
    }

    /// Carries out the D-RESH state machine's actions; true if there were any.
    fn carry_out_group(&mut self) -> bool {
        let Some(mut g) = self.source.take() else { return false };
        let mut any = false;
        let mut detail = None;
        while let Some(action) = g.dresh.poll_action() {
            any = true;
            match action {
                dresh::Action::Multicast(message) => g.outbox.push_back(message),
                dresh::Action::Order { first_seq, requests } => {
                    if let Some(status) = &self.group_status {
                        status.batch_delivered(requests.len());
                    }
                    if let Some(waiting) = g.waiting.as_mut() {
                        waiting.batches.push((first_seq, requests));
                    } else if g.export.is_some() || g.ready_pending {
                        // The core's input is held still while a joiner's state is read, or
                        // until a new core's replicas vote (requests ordered before would be
                        // refused for want of a quorum).
                        g.paused.push((first_seq, requests));
                    } else {
                        self.order_delivered(&mut g, first_seq, requests);
                    }
                }
                dresh::Action::Release { seq, origin } => {
                    if let Some((session, answer)) = g.held.remove(&seq) {
                        debug_assert_eq!(session, origin.session);
                        if let Some(tx) = self.sessions.lock().get(&session) {
                            let _ = tx.send(SessionNotice::Answer(answer));
                        }
                    }
                }
                dresh::Action::Fence(why) => {
                    warn!(reason = %why, "this host stops serving (fenced); its clients are disconnected");
                    self.end_sessions(&mut g, AnswerError::Fenced);
                    // A copy for a joiner is abandoned (the joiner asks again elsewhere).
                    if let Some(Export::Reading { task, .. }) = g.export.take() {
                        task.abort();
                    }
                    if g.ready_pending {
                        // A state it was given and had not yet served from: the state machine
                        // takes it as unknown and has it given again, with what followed.
                        g.paused.clear();
                    } else {
                        // Batches held back for a copy are part of the stream this host
                        // numbered: its replicas must execute them, since it rejoins saying
                        // they did.
                        self.resume_paused(&mut g);
                    }
                    // A state it waited for is not wanted any more (it joins again).
                    g.waiting = None;
                    g.ready_pending = false;
                    detail = Some(why);
                }
                dresh::Action::Serve { seq } => {
                    info!(request = seq, "this host serves: in a view with quorum and in sync");
                    detail = None;
                }
                dresh::Action::NeedState { seq, from } => {
                    let why = format!("getting the service's state at request {seq} from another host");
                    info!(request = seq, sources = ?from, "this host needs the service's state before it serves");
                    // The same point again with more sources keeps what was delivered since.
                    let (batches, since) = match g.waiting.take() {
                        Some(w) if w.seq == seq => (w.batches, w.since),
                        _ => (Vec::new(), std::time::Instant::now()),
                    };
                    g.waiting = Some(WaitingState { seq, from, batches, since });
                    g.ready_pending = false;
                    detail = Some(why);
                }
                dresh::Action::Leave(why) => {
                    error!(reason = %why, "this host leaves the group and stops (fail-stop)");
                    self.end_sessions(&mut g, AnswerError::Fenced);
                    self.left.send_replace(Some(why.clone()));
                    detail = Some(why);
                }
            }
        }
        if let Some(status) = &self.group_status {
            status.publish(&g, detail);
        }
        self.source = Some(g);
        any
    }

    /// Gives a delivered batch to the core (without the requests the state it was given holds).
    fn order_delivered(&mut self, g: &mut GroupSource, first_seq: u64, requests: Vec<(dresh::Origin, Bytes)>) {
        let skip = g.skip_below.saturating_sub(first_seq).min(requests.len() as u64);
        let first_seq = first_seq + skip;
        // Every host logs and votes each request as the codec says (the same codec everywhere,
        // from the bytes alone, units included).
        let bytes: Vec<Bytes> = requests.iter().map(|(_, b)| b.clone()).collect();
        let classes = self.codec.classify(&bytes);
        let mut requests: Vec<Request> = requests
            .into_iter()
            .zip(classes)
            .skip(skip as usize)
            .map(|((origin, bytes), class)| Request {
                origin: Origin { host: origin.host, session: origin.session, request: origin.request },
                bytes,
                class,
            })
            .collect();
        if requests.is_empty() {
            return;
        }
        self.note_publishes(first_seq, &requests);
        self.apply_watches(&mut requests);
        let now = self.now();
        if let Err(e) = self.core.order(first_seq, requests, now) {
            // The group's stream and the core disagree on numbering: this host cannot tell
            // what it executes any more.
            error!(error = %e, "internal: the group's order is out of step with the core");
            g.dresh.leave(format!("internal: {e}"));
        }
        // The group's requests come whether this host keeps up or not (its own clients wait on
        // its core's room, the other hosts' do not): a host whose replicas fall this far behind
        // leaves rather than hold without bound, and comes back through a state transfer.
        let limit = self.core_config.max_held_bytes.saturating_mul(LAG_FACTOR);
        if self.core.held_bytes() > limit {
            g.dresh.leave(format!(
                "this host's replicas fell behind the group: {} bytes of requests and answers held, more than {LAG_FACTOR} x ordered.max_held_bytes",
                self.core.held_bytes()
            ));
        }
    }

    /// Ends every local session: answers waiting for the group and requests not answered yet
    /// get `error`.
    fn end_sessions(&mut self, g: &mut GroupSource, error: AnswerError) {
        let held = std::mem::take(&mut g.held);
        let sessions = self.sessions.lock();
        for (_, (session, mut answer)) in held {
            if let Some(tx) = sessions.get(&session) {
                answer.answer = Answer::Error(error.clone());
                let _ = tx.send(SessionNotice::Answer(answer));
            }
        }
        for tx in sessions.values() {
            let _ = tx.send(SessionNotice::Ended(error.clone()));
        }
    }

    /// A joiner asks this host for the state.
    fn export_requested(&mut self, request: ExportRequest) {
        let refusal = match self.source.as_ref() {
            None => Some("not a member of a group".to_string()),
            Some(g) if *g.dresh.role() != group::dresh::Role::Serving => Some("this host does not serve now".into()),
            Some(g) if g.export.is_some() => Some("busy with another transfer".into()),
            Some(_) if self.core.next_seq() < request.seq => Some(format!(
                "this host executed the stream up to request {} only, before the {} asked for",
                self.core.next_seq(),
                request.seq
            )),
            Some(_) => None,
        };
        if let Some(why) = refusal {
            info!(peer = %request.peer, reason = %why, "state transfer refused");
            tokio::spawn(async move { transfer::refuse(request.stream, &why).await });
            return;
        }
        if let Some(g) = self.source.as_mut() {
            info!(peer = %request.peer, request = request.seq, "a joining host asks for the state: holding the core's input until it is at rest");
            g.export = Some(Export::Pending { request, since: std::time::Instant::now() });
        }
    }

    /// Moves state transfers on: an export once the core is at rest, an import once it may
    /// start, the group told once a new core can serve.
    fn transfer_step(&mut self) {
        let Some(mut g) = self.source.take() else { return };
        self.export_step(&mut g);
        self.import_step(&mut g);
        // The state is in and the new core's replicas vote: the group may count on this host.
        if g.ready_pending && self.core.can_serve() {
            g.ready_pending = false;
            self.resume_paused(&mut g);
            g.dresh.state_ready();
        }
        self.source = Some(g);
    }

    /// Starts a pending export once the core is at rest: its voting replicas then stand at one
    /// point. Refuses it if that does not happen within the request timeout.
    fn export_step(&mut self, g: &mut GroupSource) {
        if let Some(Export::Reading { since, task, .. }) = &g.export {
            // A joiner that reads slowly (or not at all) must not hold this host still.
            if since.elapsed() > self.request_timeout {
                warn!("copying the state to a joining host took longer than ordered.request_timeout_ms: abandoned");
                task.abort();
                g.export = None;
                self.resume_paused(g);
            }
            return;
        }
        let Some(Export::Pending { since, .. }) = &g.export else { return };
        let sources: Vec<SocketAddr> = self
            .core
            .voting_replicas()
            .iter()
            .filter_map(|&(r, inc)| self.addrs[r].filter(|(i, _)| *i == inc).map(|(_, a)| a))
            .take(self.quorum)
            .collect();
        let ready = self.core.quiescent() && sources.len() >= self.quorum;
        if !ready && since.elapsed() <= self.request_timeout {
            return;
        }
        let Some(Export::Pending { request, .. }) = g.export.take() else { return };
        let checkpoint = self.codec.checkpoint();
        let (Some(checkpoint), true) = (checkpoint, ready) else {
            warn!(peer = %request.peer, "state transfer refused: no quorum of voting replicas at rest in time, or a protocol that cannot copy state");
            tokio::spawn(transfer::refuse(request.stream, "the source cannot copy its state now; try again"));
            self.resume_paused(g);
            return;
        };
        let at = self.core.next_seq();
        info!(peer = %request.peer, at, "copying this host's state to a joining host");
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let (codec, max_frame, events) = (Arc::clone(&self.codec), self.max_frame, self.transfer_tx.clone());
        let read_events = events.clone();
        self.exports += 1;
        let id = self.exports;
        tokio::spawn(async move {
            if done_rx.await.is_ok() {
                let _ = read_events.send(TransferEvent::ExportRead(id)).await;
            }
        });
        let limit = self.request_timeout;
        // The WATCH table as the stream up to `at` left it (the core took nothing after).
        let snapshot = transfer::Snapshot { at, checkpoint, order_state: self.watches.export() };
        let task = tokio::spawn(async move {
            // After the reads, the rest of the copy goes out from memory: bounded in time too.
            let export = transfer::export(request.stream, snapshot, sources, codec, max_frame, done_tx);
            let result = match tokio::time::timeout(limit * 2, export).await {
                Ok(result) => result,
                Err(_) => Err("the joining host did not take the copy in time".into()),
            };
            let _ = events.send(TransferEvent::Exported(id, result)).await;
        });
        g.export = Some(Export::Reading { since: std::time::Instant::now(), task, id });
    }

    /// Starts getting the state this host waits for, from a host that holds it, once its core
    /// is at rest: a request the old core wrote to a replica must not run after the reset that
    /// begins the copy (a fenced host's core may still finish some; bounded by the request
    /// timeout, after which its replicas are reset anyway).
    fn import_step(&mut self, g: &mut GroupSource) {
        let may_start = g.importing.is_none()
            && g.import_after.is_none_or(|t| std::time::Instant::now() >= t)
            && g.waiting.as_ref().is_some_and(|w| {
                !w.from.is_empty() && (self.core.quiescent() || w.since.elapsed() > self.request_timeout)
            });
        let Some(w) = g.waiting.as_ref().filter(|_| may_start) else { return };
        let sources: Vec<SocketAddr> = w.from.iter().filter_map(|h| g.transfer_addrs.get(h).copied()).collect();
        if sources.is_empty() {
            let why = format!("no group.transfer address for the hosts that hold the state ({:?})", w.from);
            warn!("{why}: this host cannot be given the state");
            g.import_after = Some(std::time::Instant::now() + self.request_timeout);
            if let Some(status) = &self.group_status {
                status.publish(g, Some(why));
            }
            return;
        }
        let seq = w.seq;
        let replicas: Vec<(usize, u64, SocketAddr)> =
            self.addrs.iter().enumerate().filter_map(|(r, a)| a.map(|(inc, addr)| (r, inc, addr))).collect();
        info!(request = seq, ?sources, replicas = replicas.len(), "getting the state from another host");
        // The old core lets go of its replicas: they get the copy, then a new core.
        self.conns.iter_mut().for_each(|c| *c = None);
        match OrderedCore::new(self.core_config.clone(), Arc::clone(&self.codec), 0) {
            Ok(idle) => self.core = idle,
            Err(e) => error!(error = %e, "internal: cannot build an idle core"),
        }
        g.importing = Some(replicas.iter().map(|&(r, inc, _)| (r, inc)).collect());
        let (codec, max_frame, timeout, events) =
            (Arc::clone(&self.codec), self.max_frame, self.request_timeout, self.transfer_tx.clone());
        let addrs = replicas.iter().map(|&(_, _, a)| a).collect();
        tokio::spawn(async move {
            let result = transfer::import(sources, seq, addrs, codec, max_frame, timeout).await;
            let _ = events.send(TransferEvent::Imported(result)).await;
        });
    }

    fn transfer_event(&mut self, event: TransferEvent) {
        let Some(mut g) = self.source.take() else { return };
        match event {
            TransferEvent::ExportRead(id) => self.export_done(&mut g, id),
            TransferEvent::Exported(id, result) => {
                if let Some(status) = &self.group_status {
                    status.transfer(true, result.is_ok());
                }
                match result {
                    Ok(restores) => info!(restores, "state copied to a joining host"),
                    Err(e) => warn!(error = %e, "copying the state to a joining host failed"),
                }
                self.export_done(&mut g, id);
            }
            TransferEvent::Imported(result) => {
                if let Some(status) = &self.group_status {
                    status.transfer(false, result.is_ok());
                }
                let preloaded = g.importing.take().unwrap_or_default();
                let wanted = g.waiting.as_ref().map(|w| w.seq);
                let result = result.and_then(|(at, frames)| {
                    let watches = super::watch::WatchTable::import(&frames)
                        .map_err(|e| format!("the WATCH table it sent: {e}"))?;
                    Ok((at, watches))
                });
                match (result, wanted) {
                    (Ok((at, watches)), Some(seq)) if at >= seq => self.state_imported(&mut g, at, &preloaded, watches),
                    (Ok((at, _)), _) => info!(at, "a copied state is not wanted any more (the host joins anew)"),
                    (Err(e), _) => {
                        warn!(error = %e, "getting the state from another host failed; retrying");
                        g.import_after = Some(std::time::Instant::now() + super::RETRY_DELAY);
                        if let Some(w) = g.waiting.as_mut() {
                            w.from.rotate_left(1);
                        }
                    }
                }
            }
        }
        self.source = Some(g);
        self.carry_out();
    }

    /// The replicas hold the state at request `at`: a new core starts there, and gets what the
    /// group delivered from there on.
    fn state_imported(
        &mut self,
        g: &mut GroupSource,
        at: u64,
        preloaded: &[(usize, u64)],
        watches: super::watch::WatchTable,
    ) {
        let codec = Arc::clone(&self.codec);
        let core = match OrderedCore::with_state(self.core_config.clone(), codec, at, preloaded) {
            Ok(core) => core,
            Err(e) => {
                error!(error = %e, "internal: cannot build the core");
                return;
            }
        };
        info!(at, "the state is in: the replicas go on from here");
        self.core = core;
        // The requests the old core held are not the new one's to decide; the watches are the
        // group's as they stood at `at` (those this table held belong to sessions the fence
        // ended, or to a stream this host no longer follows).
        self.publishes.clear();
        self.watches = watches;
        self.conns.iter_mut().for_each(|c| *c = None);
        let now = self.now();
        for (r, addr) in self.addrs.iter().enumerate() {
            if let Some((incarnation, _)) = addr {
                self.core.admitted(r, *incarnation, now);
            }
        }
        g.skip_below = at;
        g.import_after = None;
        // What was delivered meanwhile goes to the core once its replicas vote.
        if let Some(waiting) = g.waiting.take() {
            g.paused.extend(waiting.batches);
        }
        g.ready_pending = true;
    }

    /// Export `id` no longer needs the core held still (its reads are done, or it ended).
    fn export_done(&mut self, g: &mut GroupSource, id: u64) {
        if matches!(g.export, Some(Export::Reading { id: current, .. }) if current == id) {
            g.export = None;
            self.resume_paused(g);
        }
    }

    /// The core's input goes on: the batches delivered while it was held still.
    fn resume_paused(&mut self, g: &mut GroupSource) {
        for (first_seq, requests) in std::mem::take(&mut g.paused) {
            self.order_delivered(g, first_seq, requests);
        }
    }

    fn carry_out_core(&mut self) {
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
                Action::Reply { origin, seq, answer, masked, waited, shaped } => {
                    let published = self.deliver_published(seq, &answer);
                    // D-RESH: other hosts' requests are executed and voted here too; the
                    // metrics count this host's clients' requests.
                    let local = origin.host == self.source.as_ref().map_or(0, |g| g.local);
                    if local {
                        self.metrics.vote_latency(waited);
                    }
                    match &answer {
                        _ if !local => {}
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
                    if let Some(g) = self.source.as_mut() {
                        // D-RESH: every host votes every request; the answer to a local one
                        // waits for the other hosts' digests.
                        let digest = match &answer {
                            // A set's members come in each replica's own order: the hosts
                            // compare what the vote compared.
                            Answer::Frame(bytes) => *shaped.unwrap_or_else(|| blake3::hash(bytes)).as_bytes(),
                            Answer::Error(e) => *blake3::hash(format!("resh error: {e:?}").as_bytes()).as_bytes(),
                        };
                        if origin.host == g.local {
                            // A publisher learns how many of this host's subscribers got it;
                            // the hosts compared the replicas' answer.
                            let answer = published.unwrap_or(answer);
                            let answer = SessionAnswer { request: origin.request, answer, masked };
                            g.held.insert(seq, (origin.session, answer));
                        }
                        g.dresh.voted(seq, digest);
                    } else if origin.host == 0 {
                        let answer =
                            SessionAnswer { request: origin.request, answer: published.unwrap_or(answer), masked };
                        replies.push((origin.session, SessionNotice::Answer(answer)));
                    }
                }
                Action::Masked { origin, seq: _ } => {
                    self.metrics.request_masked_late();
                    let local = self.source.as_ref().map_or(0, |g| g.local);
                    if origin.host == local {
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
            Note::Refused { seq, voided } if voided.end - voided.start > 1 => warn!(
                request = seq,
                unit = ?voided,
                "every replica closed its connection on this request of a transaction: the transaction is refused (not replayed), no replica is blamed"
            ),
            Note::Refused { seq, .. } => warn!(
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

/// Answers each of `requests` of `session` with `error` (a submission the order did not take).
fn answer_all(
    sessions: &HashMap<u64, mpsc::UnboundedSender<SessionNotice>>,
    session: u64,
    requests: std::ops::Range<u64>,
    error: &AnswerError,
) {
    if let Some(tx) = sessions.get(&session) {
        for request in requests {
            let answer = SessionAnswer { request, answer: Answer::Error(error.clone()), masked: false };
            let _ = tx.send(SessionNotice::Answer(answer));
        }
    }
}
