//! Ordered mode: one global order of requests across all sessions, responses voted per request.
//!
//! A stateful service stays identical on every replica only if every replica executes the same
//! requests in the same order (state machine replication). Here that order is made by one
//! task, the *sequencer*, which owns one pipelined connection per replica:
//!
//! ```text
//! client sessions ──Submit──▶ sequencer ──batch of requests──▶ replica 1..N (one connection each)
//!        ▲                        │  ▲                               │
//!        └──── Reply (oneshot) ◀──┘  └── (frame, digest) per response ┘
//! ```
//!
//! Why one multiplexed connection per replica rather than one per session: the order must be
//! the same on every replica, and a server orders what arrives on one connection but not
//! across connections. With one request in flight per replica across sessions the order would
//! hold too, but at one round trip per request; pipelining every session's requests onto one
//! connection keeps the order for free and lets batches amortise system calls. The price:
//! state a server keeps *per connection* (transactions, SELECT, subscriptions, AUTH) would be
//! shared by all sessions, so the codec refuses those commands with a clear error.
//!
//! Each submitted request gets the next sequence number from the pure [`voter::FrameVoter`];
//! replica `r`'s k-th response answers the k-th request `r` was sent. Responses are framed and
//! digested (blake3 of the normalised frame) in the replica reader tasks, off the sequencer.
//!
//! **Resynchronisation**: state-changing requests are recorded in a bounded replay log. A
//! replica that (re)joins, e.g. after a crash or a repair, is first sent the whole log and then
//! every new request; its answers are discarded until it has answered all of them, and only
//! then does it vote. If the log ever overflowed `log_max_bytes`, a restarted replica cannot be
//! rebuilt this way and is left out (logged as an error) until resh restarts.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};
use voter::{Digest, Fault, FaultKind, FrameOutcome, FrameVoter};

use crate::codec::Codec;
use crate::config::Config;
use crate::metrics::Metrics;
use replicas::Supervisor;

pub mod session;

/// Submissions queued toward the sequencer (from all sessions).
const SUBMIT_QUEUE: usize = 4096;
/// The most requests the sequencer takes into one batch.
const BATCH: usize = 512;
/// Request bytes queued toward one replica before the sequencer stops taking new requests.
const MAX_QUEUED_BYTES: usize = 8 << 20;
/// How often the sequencer looks for replicas to (re)connect.
const ADMISSION_POLL: Duration = Duration::from_millis(50);

/// One request in the global order.
#[derive(Debug)]
pub struct Submit {
    /// The request, as every replica gets it.
    pub request: Bytes,
    /// Whether it may change state (kept in the replay log).
    pub logged: bool,
    /// Where the voted answer goes.
    pub reply: oneshot::Sender<Reply>,
}

/// The voted answer to one request.
#[derive(Debug)]
pub enum Reply {
    /// The response a quorum agreed on.
    Response(Bytes),
    /// No quorum: the session must be ended without an answer.
    Undecidable,
}

/// A handle to the running sequencer; cheap to clone, one per session.
#[derive(Clone, Debug)]
pub struct Ordered {
    submit: mpsc::Sender<Submit>,
    /// The framing codec.
    pub codec: Arc<dyn Codec>,
}

impl Ordered {
    /// Hands a request to the global order; waits while the sequencer is saturated. Fails only
    /// when resh is shutting down.
    pub async fn submit(&self, submit: Submit) -> Result<(), ()> {
        self.submit.send(submit).await.map_err(|_| ())
    }

    /// Starts the sequencer and connects it to the replicas admitted now.
    pub async fn start(
        config: &Config,
        codec: Arc<dyn Codec>,
        supervisor: Arc<Supervisor>,
        metrics: Arc<Metrics>,
    ) -> Result<Ordered, voter::ConfigError> {
        let voter = FrameVoter::new(config.frame_vote())?;
        let (submit_tx, submit_rx) = mpsc::channel(SUBMIT_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(1024);
        let n = config.replicas.len();
        let mut sequencer = Sequencer {
            voter,
            codec: Arc::clone(&codec),
            conns: (0..n).map(|_| None).collect(),
            connecting: vec![None; n],
            unsyncable: vec![None; n],
            attached: vec![None; n],
            is_address: config.replicas.iter().map(|r| r.address.is_some()).collect(),
            names: config.replicas.iter().map(|r| Arc::<str>::from(r.name.as_str())).collect(),
            pending: VecDeque::new(),
            frames: VecDeque::new(),
            pending_base: 0,
            log: ReplayLog { entries: Vec::new(), bytes: 0, max_bytes: config.ordered.log_max_bytes, complete: true },
            events_tx,
            supervisor,
            metrics,
            start: Instant::now(),
            lag_timeout: Duration::from_millis(config.vote.lag_timeout_ms.unwrap_or(config.vote.vote_timeout_ms)),
            connect_timeout: config.connect_timeout(),
            drained: Arc::new(Notify::new()),
            throttled_since: None,
        };
        // Connect to the replicas that are up before the first request, so that they all start
        // from the same (empty) history.
        sequencer.admit_new();
        let mut events_rx = events_rx;
        let deadline = Instant::now() + config.connect_timeout();
        while sequencer.connecting.iter().any(Option::is_some) {
            match tokio::time::timeout_at(deadline, events_rx.recv()).await {
                Ok(Some(event)) => sequencer.handle_event(event),
                Ok(None) | Err(_) => break,
            }
        }
        tokio::spawn(sequencer.run(submit_rx, events_rx));
        Ok(Ordered { submit: submit_tx, codec })
    }
}

/// State-changing requests, in order, for replaying to a rejoining replica.
#[derive(Debug)]
struct ReplayLog {
    entries: Vec<Bytes>,
    bytes: usize,
    max_bytes: usize,
    /// False once an entry had to be dropped: replay can no longer rebuild the state.
    complete: bool,
}

impl ReplayLog {
    fn push(&mut self, request: &Bytes) {
        if !self.complete {
            return;
        }
        if self.bytes + request.len() > self.max_bytes {
            error!(
                max_bytes = self.max_bytes,
                "replay log full: replicas that restart from now on cannot be resynchronised (raise ordered.log_max_bytes)"
            );
            self.complete = false;
            self.entries = Vec::new();
            self.bytes = 0;
            return;
        }
        self.bytes += request.len();
        self.entries.push(request.clone());
    }
}

/// What a replica connection's tasks report.
#[derive(Debug)]
enum ConnEvent {
    Connected {
        replica: usize,
        incarnation: u64,
        stream: std::io::Result<TcpStream>,
    },
    Responses {
        replica: usize,
        incarnation: u64,
        frames: Vec<(Bytes, Digest)>,
    },
    /// The connection ended; `malformed` holds the digest of output that could not be framed
    /// (a divergence: the others' output could be).
    Down {
        replica: usize,
        incarnation: u64,
        why: String,
        malformed: Option<Digest>,
    },
}

/// One replica connection of the sequencer.
#[derive(Debug)]
struct Conn {
    incarnation: u64,
    /// Batches for the writer task. Unbounded as a channel, bounded in bytes by `queued`: the
    /// sequencer must never block on one replica, or it would stop reading the others' answers.
    writer: mpsc::UnboundedSender<Bytes>,
    /// Bytes handed to the writer and not yet written.
    queued: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
    /// Answers still to be discarded (to replayed requests and those sent while catching up).
    skip: u64,
    /// Catching up: not voting yet.
    syncing: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A request waiting for its vote.
#[derive(Debug)]
struct Pending {
    reply: Option<oneshot::Sender<Reply>>,
    submitted: Instant,
    decided: bool,
}

struct Sequencer {
    voter: FrameVoter,
    codec: Arc<dyn Codec>,
    conns: Vec<Option<Conn>>,
    /// Incarnation being connected to, per replica.
    connecting: Vec<Option<u64>>,
    /// Incarnation that could not be resynchronised, per replica (not retried).
    unsyncable: Vec<Option<u64>>,
    /// The last incarnation taken into service, per replica.
    attached: Vec<Option<u64>>,
    /// Whether the replica is reached by address (resh cannot restart it with empty state).
    is_address: Vec<bool>,
    names: Vec<Arc<str>>,
    pending: VecDeque<Pending>,
    /// The replicas' response frames to the pending requests: one entry per replica and
    /// request, in request order (one flat queue, so a request costs no allocation of its own).
    frames: VecDeque<Option<Bytes>>,
    pending_base: u64,
    log: ReplayLog,
    events_tx: mpsc::Sender<ConnEvent>,
    supervisor: Arc<Supervisor>,
    metrics: Arc<Metrics>,
    start: Instant,
    lag_timeout: Duration,
    connect_timeout: Duration,
    /// Signalled by writers when they have written a batch.
    drained: Arc<Notify>,
    /// Since when new requests have been held back because a replica's input queue is full.
    throttled_since: Option<Instant>,
}

impl Sequencer {
    async fn run(mut self, mut submits: mpsc::Receiver<Submit>, mut events: mpsc::Receiver<ConnEvent>) {
        let mut admissions = tokio::time::interval(ADMISSION_POLL);
        admissions.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let deadline = self.voter.next_deadline().map(|d| self.start + d);
            // Backpressure: while a replica has too much input queued, take no new requests
            // (sessions then stop reading their clients); a replica that stays that far behind
            // for the lag timeout is cut off, so one slow replica cannot stall the service.
            let throttled = self.throttle();
            let drained = Arc::clone(&self.drained);
            tokio::select! {
                biased;
                event = events.recv() => {
                    let Some(event) = event else { break };
                    self.handle_event(event);
                }
                count = submits.recv_many(&mut batch, BATCH), if !throttled => {
                    if count == 0 {
                        break;
                    }
                    if count < BATCH {
                        // Let every session that is ready to run submit too before the batch
                        // goes out: woken by the first submission, the sequencer often runs
                        // next (tokio runs a task a task woke first) and would send batches of
                        // one request, one write per replica per request instead of per batch.
                        tokio::task::yield_now().await;
                        while batch.len() < BATCH {
                            let Ok(submit) = submits.try_recv() else { break };
                            batch.push(submit);
                        }
                    }
                    self.handle_batch(&mut batch);
                }
                _ = drained.notified(), if throttled => {}
                _ = sleep_until_opt(deadline) => self.voter.tick(self.now()),
                _ = admissions.tick() => self.admit_new(),
            }
            self.settle();
        }
        info!("sequencer stopped");
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Whether new requests must wait for a replica to take its input; cuts off a replica that
    /// has made everyone wait for the lag timeout.
    fn throttle(&mut self) -> bool {
        let slowest = (0..self.conns.len())
            .filter_map(|r| self.conns[r].as_ref().map(|c| (r, c.queued.load(Ordering::Relaxed))))
            .max_by_key(|(_, queued)| *queued);
        match slowest {
            Some((replica, queued)) if queued > MAX_QUEUED_BYTES => {
                let since = *self.throttled_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.lag_timeout {
                    self.throttled_since = None;
                    if self.voter.is_live(replica) {
                        let behind = FaultKind::Late { behind: 0 };
                        self.voter.exclude_for(replica, behind, self.now());
                        self.settle();
                    } else {
                        self.drop_conn(replica, "took no input for the lag timeout");
                    }
                    return self.throttle();
                }
                true
            }
            _ => {
                self.throttled_since = None;
                false
            }
        }
    }

    /// Gives every request of the batch its sequence number and sends the batch to every
    /// connected replica as one write.
    fn handle_batch(&mut self, batch: &mut Vec<Submit>) {
        let now = self.now();
        let count = batch.len() as u64;
        let mut bytes = BytesMut::with_capacity(batch.iter().map(|s| s.request.len()).sum());
        for submit in batch.drain(..) {
            self.voter.submit(now);
            bytes.extend_from_slice(&submit.request);
            if submit.logged {
                self.log.push(&submit.request);
            }
            self.frames.extend(std::iter::repeat_n(None, self.conns.len()));
            self.pending.push_back(Pending { reply: Some(submit.reply), submitted: Instant::now(), decided: false });
        }
        let bytes = bytes.freeze();
        for replica in 0..self.conns.len() {
            let Some(conn) = self.conns[replica].as_mut() else { continue };
            if conn.syncing {
                conn.skip += count;
            }
            conn.queued.fetch_add(bytes.len(), Ordering::Relaxed);
            if conn.writer.send(bytes.clone()).is_err() {
                self.drop_conn(replica, "connection closed");
            }
        }
        self.settle();
    }

    fn handle_event(&mut self, event: ConnEvent) {
        match event {
            ConnEvent::Connected { replica, incarnation, stream } => {
                self.connecting[replica] = None;
                match stream {
                    Ok(stream) => self.attach(replica, incarnation, stream),
                    Err(e) => {
                        warn!(replica = %self.names[replica], error = %e, "cannot connect to replica");
                        let fault =
                            Fault { replica, offset: self.voter.next_seq(), at: self.now(), kind: FaultKind::Crashed };
                        self.report(&fault, incarnation);
                    }
                }
            }
            ConnEvent::Responses { replica, incarnation, frames } => {
                let now = self.now();
                for (frame, digest) in frames {
                    let Some(conn) = self.conns[replica].as_mut().filter(|c| c.incarnation == incarnation) else {
                        return;
                    };
                    if conn.skip > 0 {
                        conn.skip -= 1;
                        if conn.skip == 0 && conn.syncing {
                            conn.syncing = false;
                            self.voter.join(replica);
                            info!(replica = %self.names[replica], "replica resynchronised: it votes again");
                        }
                        continue;
                    }
                    if let Some(seq) = self.voter.response(replica, digest, now) {
                        let index = seq.saturating_sub(self.pending_base) as usize;
                        if let Some(p) = self.pending.get(index) {
                            if !p.decided && seq >= self.pending_base {
                                let n = self.conns.len();
                                if let Some(slot) = self.frames.get_mut(index * n + replica) {
                                    *slot = Some(frame);
                                }
                            }
                        }
                    }
                    self.settle();
                }
            }
            ConnEvent::Down { replica, incarnation, why, malformed } => {
                if self.conns[replica].as_ref().is_some_and(|c| c.incarnation == incarnation) {
                    match malformed {
                        Some(observed) if self.voter.is_live(replica) => {
                            warn!(replica = %self.names[replica], reason = %why, "replica output cannot be framed");
                            let kind = FaultKind::Diverged { expected: voter::fault::digest(b""), observed };
                            self.voter.exclude_for(replica, kind, self.now());
                            self.settle();
                        }
                        _ => self.drop_conn(replica, &why),
                    }
                }
            }
        }
    }

    /// Removes a replica's connection. A voting replica is reported crashed by the voter; one
    /// still catching up is reported here. Either way the supervisor repairs it, and the new
    /// incarnation starts from a fresh process, which is what makes replaying the log correct.
    fn drop_conn(&mut self, replica: usize, why: &str) {
        if self.conns[replica].is_none() {
            return;
        }
        warn!(replica = %self.names[replica], reason = why, "replica connection lost");
        if self.voter.is_live(replica) {
            self.voter.fail(replica, self.now());
            self.settle();
        } else {
            let incarnation = self.attached[replica].unwrap_or(0);
            let fault = Fault { replica, offset: self.voter.next_seq(), at: self.now(), kind: FaultKind::Crashed };
            self.report(&fault, incarnation);
        }
        self.conns[replica] = None;
    }

    /// Starts connecting to replicas the supervisor admits and the sequencer is not connected to.
    fn admit_new(&mut self) {
        for admitted in self.supervisor.admit_session() {
            let r = admitted.index;
            // Never the same incarnation twice: its state already holds what it was sent, and
            // replaying the log to it again would apply the writes twice.
            if self.attached[r].is_some_and(|a| a >= admitted.incarnation)
                || self.connecting[r].is_some()
                || self.unsyncable[r] == Some(admitted.incarnation)
            {
                continue;
            }
            self.connecting[r] = Some(admitted.incarnation);
            let events = self.events_tx.clone();
            let timeout = self.connect_timeout;
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(timeout, TcpStream::connect(admitted.addr)).await {
                    Ok(result) => result,
                    Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout")),
                };
                let _ =
                    events.send(ConnEvent::Connected { replica: r, incarnation: admitted.incarnation, stream }).await;
            });
        }
    }

    /// Takes a new connection into service: replays the log, then lets it vote once caught up.
    fn attach(&mut self, replica: usize, incarnation: u64, stream: TcpStream) {
        if self.conns[replica].is_some() {
            self.drop_conn(replica, "replaced by a new incarnation");
        }
        let replay_needed = self.voter.next_seq() > 0;
        let kept_state = self.attached[replica].is_some() && self.is_address[replica];
        if replay_needed && kept_state {
            // resh cannot restart an address replica, so its state survived: replaying the log
            // would apply the writes twice.
            error!(
                replica = %self.names[replica],
                "cannot resynchronise an address replica that was in use before (its state is unknown): it stays out; restart it with empty state and restart resh"
            );
            self.unsyncable[replica] = Some(incarnation);
            return;
        }
        if replay_needed && !self.log.complete {
            error!(
                replica = %self.names[replica],
                "cannot resynchronise replica: the replay log overflowed ordered.log_max_bytes; it stays out until resh restarts"
            );
            self.unsyncable[replica] = Some(incarnation);
            return;
        }
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (writer_tx, writer_rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let events = self.events_tx.clone();
        let tasks = vec![
            tokio::spawn(request_writer(
                Writer {
                    replica,
                    incarnation,
                    queued: Arc::clone(&queued),
                    drained: Arc::clone(&self.drained),
                    tap: self.supervisor.tap(replica),
                },
                write,
                writer_rx,
                events.clone(),
            )),
            tokio::spawn(response_reader(
                replica,
                incarnation,
                read,
                Arc::clone(&self.codec),
                events,
                self.supervisor.tap(replica),
            )),
        ];
        let replayed = self.log.entries.len() as u64;
        if replayed > 0 {
            let mut all = BytesMut::with_capacity(self.log.bytes);
            for entry in &self.log.entries {
                all.extend_from_slice(entry);
            }
            queued.fetch_add(all.len(), Ordering::Relaxed);
            let _ = writer_tx.send(all.freeze());
        }
        info!(replica = %self.names[replica], incarnation, replayed, "replica connected");
        let syncing = replayed > 0;
        if !syncing {
            self.voter.join(replica);
        }
        self.attached[replica] = Some(incarnation);
        self.conns[replica] = Some(Conn { incarnation, writer: writer_tx, queued, tasks, skip: replayed, syncing });
    }

    /// Delivers decisions, reports faults, and forgets requests that are done.
    fn settle(&mut self) {
        for fault in self.voter.take_faults() {
            let incarnation = self.attached[fault.replica].unwrap_or(0);
            self.report(&fault, incarnation);
            self.conns[fault.replica] = None;
        }
        let n = self.conns.len();
        while let Some(decision) = self.voter.take_decision() {
            let index = decision.seq.saturating_sub(self.pending_base) as usize;
            let Some(p) = self.pending.get_mut(index) else {
                continue;
            };
            p.decided = true;
            let frames = self.frames.range_mut(index * n..((index + 1) * n).min(self.frames.len()));
            let mut chosen = None;
            for (r, frame) in frames.enumerate() {
                // The released frame is taken, the others are dropped now rather than when the
                // request leaves the queue.
                let frame = frame.take();
                if matches!(decision.outcome, FrameOutcome::Release { replica } if replica == r) {
                    chosen = frame;
                }
            }
            let reply = match decision.outcome {
                FrameOutcome::Release { .. } => match chosen {
                    Some(frame) => {
                        self.metrics.request_released();
                        Reply::Response(frame)
                    }
                    None => {
                        error!(seq = decision.seq, "internal: released response missing");
                        Reply::Undecidable
                    }
                },
                FrameOutcome::Undecidable => {
                    self.metrics.request_undecidable();
                    error!(seq = decision.seq, "request undecidable: no quorum of replicas agreed on the answer");
                    Reply::Undecidable
                }
            };
            self.metrics.vote_latency(p.submitted.elapsed());
            if let Some(tx) = p.reply.take() {
                let _ = tx.send(reply);
            }
        }
        while self.pending.front().is_some_and(|p| p.decided) {
            self.pending.pop_front();
            self.frames.drain(..n.min(self.frames.len()));
            self.pending_base += 1;
        }
    }

    fn report(&self, fault: &Fault, incarnation: u64) {
        crate::fault::FaultSink::new(Arc::clone(&self.metrics), Arc::clone(&self.supervisor)).report(
            &crate::fault::FaultEvent {
                session: None,
                replica: fault.replica,
                name: Arc::clone(&self.names[fault.replica]),
                incarnation,
                position: crate::fault::Position::Request(fault.offset),
                kind: fault.kind.clone(),
            },
        );
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Who a writer task writes for, whom it tells when it made room, and its fault-injection
/// hook (an armed `inflip` corrupts this replica's copy of the requests only).
struct Writer {
    replica: usize,
    incarnation: u64,
    queued: Arc<AtomicUsize>,
    drained: Arc<Notify>,
    tap: replicas::inject::Tap,
}

/// Writes batches of requests to one replica.
async fn request_writer(
    writer: Writer,
    mut write: OwnedWriteHalf,
    mut batches: mpsc::UnboundedReceiver<Bytes>,
    events: mpsc::Sender<ConnEvent>,
) {
    let Writer { replica, incarnation, queued, drained, mut tap } = writer;
    while let Some(batch) = batches.recv().await {
        let len = batch.len();
        let batch = tap.input(batch);
        if let Err(e) = write.write_all(&batch).await {
            let _ = events.send(ConnEvent::Down { replica, incarnation, why: e.to_string(), malformed: None }).await;
            return;
        }
        queued.fetch_sub(len, Ordering::Relaxed);
        drained.notify_one();
    }
}

/// Frames one replica's responses and digests them for the vote. `tap` is the fault-injection
/// hook: an armed `outflip` or `delay` acts on the output before it is framed.
async fn response_reader(
    replica: usize,
    incarnation: u64,
    mut read: OwnedReadHalf,
    codec: Arc<dyn Codec>,
    events: mpsc::Sender<ConnEvent>,
    mut tap: replicas::inject::Tap,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let before = buf.len();
        let why = match read.read_buf(&mut buf).await {
            Ok(0) => Some("closed its connection".to_string()),
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        tap.output(&mut buf[before..]).await;
        let mut frames = Vec::new();
        let mut malformed = None;
        loop {
            match codec.response_len(&buf) {
                Ok(Some(len)) => {
                    let frame = buf.split_to(len).freeze();
                    let digest = voter::fault::digest(&codec.normalise(&frame));
                    frames.push((frame, digest));
                }
                Ok(None) => break,
                Err(e) => {
                    let observed = voter::fault::digest(&buf[..buf.len().min(voter::fault::DIGEST_SPAN)]);
                    malformed = Some((format!("sent malformed output: {e}"), observed));
                    break;
                }
            }
        }
        if !frames.is_empty() && events.send(ConnEvent::Responses { replica, incarnation, frames }).await.is_err() {
            return;
        }
        let down = match (malformed, why) {
            (Some((why, observed)), _) => Some((why, Some(observed))),
            (None, Some(why)) => Some((why, None)),
            (None, None) => None,
        };
        if let Some((why, malformed)) = down {
            let _ = events.send(ConnEvent::Down { replica, incarnation, why, malformed }).await;
            return;
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
    }
}
