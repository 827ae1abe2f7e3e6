//! Ordered mode: one global order of requests across all sessions, responses voted per request.
//!
//! A stateful service stays identical on every replica only if every replica executes the same
//! requests in the same order (state machine replication). Here:
//!
//! ```text
//! sessions ──(session, request n, bytes)──▶ sequencer task ──order(batch)──▶ core (pure)
//!    ▲                                         │    ▲                          │
//!    └─────── answers, in request order ◀──────┘    └── frames, closes ────────┤ writes
//!                                                                               ▼
//!                                     one pipelined connection per replica (reader + writer task)
//! ```
//!
//! - [`core`]: the ordered core, a sans-I/O state machine that owns the frame vote, the
//!   requests in flight, the replay log, each replica's state (voting, being rebuilt, out),
//!   flow control and fencing. Everything that must be right is there, testable without
//!   sockets or clocks.
//! - [`log`]: the bounded replay log.
//! - [`sequencer`]: the thin tokio shell around the core: it orders the local sessions'
//!   requests (the *local order source*; D-RESH feeds the group's order instead), connects to
//!   replicas, moves bytes, routes answers to sessions, reports faults and keeps `/status`.
//! - [`conn`]: one replica connection: a writer task and a reader task that frames and
//!   digests the replica's responses off the sequencer.
//! - [`session`]: one client: frames its requests, hands them to the order, writes the
//!   answers back in request order, within a byte budget.
//! - [`sim`]: a deterministic simulation of replicas around the core, with the invariants the
//!   core's property test and fuzz target check after every step.
//!
//! Why one multiplexed connection per replica rather than one per session: the order must be
//! the same on every replica, and a server orders what arrives on one connection but not across
//! connections. Pipelining every session's requests onto one connection keeps the order for
//! free and lets batches amortise system calls. The price: state a server keeps *per
//! connection* (transactions, SELECT, subscriptions, AUTH) would be shared by all sessions, so
//! the codec refuses those commands with a clear error.
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::codec::{AnswerError, Codec, Part, RequestClass};

pub mod conn;
pub mod core;
pub mod log;
pub mod multihost;
pub mod pubsub;
pub mod sequencer;
pub mod session;
pub mod sim;
pub mod transfer;
pub mod watch;

pub use self::core::{Answer, OrderedCore, ReplicaView};

/// Bytes handed to one replica's writer and not yet written, before the core holds back.
pub const MAX_QUEUED_BYTES: usize = 8 << 20;
/// How long resh waits before retrying what failed for its own reasons (a connect without file
/// descriptors, a rebuild without a source).
pub const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Submissions queued toward the sequencer (from all sessions).
const SUBMIT_QUEUE: usize = 4096;

/// One request from a local session, for the order.
#[derive(Debug)]
pub struct Submission {
    /// The session.
    pub session: u64,
    /// The request's number in the session.
    pub request: u64,
    /// The request as every replica gets it.
    pub bytes: Bytes,
    /// How it is logged and voted.
    pub class: RequestClass,
    /// The rest of its unit (a transaction), numbered `request + 1` on: they follow it in the
    /// order with nothing between them. Empty for a request on its own.
    pub more: Vec<Part>,
}

impl Submission {
    /// The request numbers it holds: one per request of its unit.
    pub fn requests(&self) -> std::ops::Range<u64> {
        self.request..self.request + 1 + self.more.len() as u64
    }
}

/// The answer to one of a session's requests.
#[derive(Debug)]
pub struct SessionAnswer {
    /// The request's number in the session.
    pub request: u64,
    /// The answer.
    pub answer: Answer,
    /// A minority failed or differed.
    pub masked: bool,
}

/// What a session is told by the sequencer.
#[derive(Debug)]
pub enum SessionNotice {
    /// The answer to its next request.
    Answer(SessionAnswer),
    /// One of its requests, answered already, was masked after all (a replica's differing
    /// answer came after the quorum's).
    Masked,
    /// The session ends: its next unanswered request gets this error, and the connection
    /// closes (D-RESH: this host stopped serving).
    Ended(AnswerError),
    /// A message for a subscriber, after whatever answers it has waiting.
    Push(Bytes),
    /// resh is shutting down (see `server::Stopping`). Sent through the session's own channel,
    /// which it waits on anyway: a shutdown costs its loop nothing while resh serves.
    Stopping(crate::server::Stopping),
}

/// Why a request could not be handed to the order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequencerGone;

impl std::fmt::Display for SequencerGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the sequencer stopped (resh is shutting down)")
    }
}

impl std::error::Error for SequencerGone {}

/// The sessions the sequencer answers, by session id.
#[derive(Debug, Default)]
struct SessionTable(Mutex<HashMap<u64, mpsc::UnboundedSender<SessionNotice>>>);

impl SessionTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<SessionNotice>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A handle to the running sequencer; cheap to clone, one per session.
#[derive(Clone, Debug)]
pub struct Ordered {
    submit: mpsc::Sender<Submission>,
    sessions: Arc<SessionTable>,
    /// The framing codec.
    pub codec: Arc<dyn Codec>,
    /// Each replica as the core sees it, for `/status` and the metrics.
    views: Arc<Mutex<Vec<ReplicaView>>>,
    /// The quorum in force, and a reload's higher one while replicas join toward it.
    quorum: Arc<Mutex<(usize, Option<usize>)>>,
    /// Answer bytes all sessions hold for their clients.
    buffered: Arc<AtomicUsize>,
    /// D-RESH: where this host stands in the group.
    pub group: Option<Arc<multihost::GroupStatus>>,
    /// D-RESH: why this host left the group, once it did (resh then stops).
    left: tokio::sync::watch::Receiver<Option<String>>,
    /// Who subscribes to what (resh's own pub/sub).
    pub broker: Arc<Mutex<pubsub::Broker>>,
    /// New timeouts from a reload, for the sequencer to take (see [`Ordered::retune`]).
    tuning: Arc<Mutex<Option<Tuning>>>,
    /// Replica sets from reloads, for the sequencer to take in order (see
    /// [`Ordered::change_replicas`]).
    changes: Arc<Mutex<VecDeque<ReplicaChange>>>,
}

/// A reload's change of ordered mode's replicas and quorum (see
/// [`OrderedCore::reconfigure`](core::OrderedCore::reconfigure)).
#[derive(Debug)]
pub(crate) struct ReplicaChange {
    /// Which change (to withdraw it if it is not taken in time).
    id: u64,
    /// The replicas that leave, by number.
    remove: Vec<usize>,
    /// The replicas added, with the numbers the supervisor gave them.
    add: Vec<(usize, core::ReplicaConfig)>,
    /// The new quorum.
    quorum: usize,
    /// Told when the core took the change, or why it did not.
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// The timeouts of ordered mode a reload may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// `vote.lag_timeout_ms`.
    pub lag_timeout: Duration,
    /// `ordered.request_timeout_ms`.
    pub request_timeout: Duration,
}

/// A session's registration: answers arrive here; dropping it unregisters the session.
#[derive(Debug)]
pub struct Registration {
    id: u64,
    sessions: Arc<SessionTable>,
    broker: Arc<Mutex<pubsub::Broker>>,
    /// The session's answers, in request order.
    pub answers: mpsc::UnboundedReceiver<SessionNotice>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.id);
        self.broker.lock().unwrap_or_else(|p| p.into_inner()).drop_session(self.id);
    }
}

impl Ordered {
    /// Registers session `id` for answers.
    pub fn register(&self, id: u64) -> Registration {
        let (tx, answers) = mpsc::unbounded_channel();
        self.sessions.lock().insert(id, tx);
        Registration { id, sessions: Arc::clone(&self.sessions), broker: Arc::clone(&self.broker), answers }
    }

    /// Applies a session's subscription changes.
    pub fn subscriptions(&self, session: u64, changes: Vec<crate::codec::Subscription>) {
        let mut broker = self.broker.lock().unwrap_or_else(|p| p.into_inner());
        for change in changes {
            match change {
                crate::codec::Subscription::Add { name, pattern } => broker.subscribe(session, name, pattern),
                crate::codec::Subscription::Remove { name, pattern } => broker.unsubscribe(session, &name, pattern),
            }
        }
    }

    /// What this host's publish/subscribe answers to `query`.
    pub fn pubsub(&self, query: &crate::codec::PubSubQuery) -> crate::codec::PubSubAnswer {
        self.broker.lock().unwrap_or_else(|p| p.into_inner()).answer(query)
    }

    /// New timeouts (a reload): the sequencer takes them at its next admission poll (every
    /// 50 ms), off its hot path.
    pub fn retune(&self, tuning: Tuning) {
        *self.tuning.lock().unwrap_or_else(|p| p.into_inner()) = Some(tuning);
    }

    /// A new replica set and quorum (a reload): the sequencer takes it at its next admission
    /// poll (every 50 ms); returns once the core took it (a removed replica's process may be
    /// stopped then: nothing it does counts any more), or why it did not.
    pub async fn change_replicas(
        &self,
        remove: Vec<usize>,
        add: Vec<(usize, core::ReplicaConfig)>,
        quorum: usize,
    ) -> Result<(), String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let (done, mut taken) = tokio::sync::oneshot::channel();
        self.changes.lock().unwrap_or_else(|p| p.into_inner()).push_back(ReplicaChange {
            id,
            remove,
            add,
            quorum,
            done,
        });
        match tokio::time::timeout(Duration::from_secs(10), &mut taken).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err("the sequencer stopped".into()),
            Err(_) => {
                // Not taken in time: withdrawn, so that it is never applied after the caller
                // gave up on it. If the sequencer took it meanwhile, it applied it whole, at
                // once, and its outcome is on its way.
                let withdrawn = {
                    let mut changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
                    changes.iter().position(|c| c.id == id).and_then(|at| changes.remove(at)).is_some()
                };
                if withdrawn {
                    return Err("the sequencer did not take the change within 10 s".into());
                }
                taken.await.unwrap_or_else(|_| Err("the sequencer stopped".into()))
            }
        }
    }

    /// Tells every session how far a shutdown is.
    pub fn notify_stopping(&self, stopping: crate::server::Stopping) {
        for tx in self.sessions.lock().values() {
            let _ = tx.send(SessionNotice::Stopping(stopping));
        }
    }

    /// Hands a request to the global order; waits while the sequencer is saturated.
    pub async fn submit(&self, submission: Submission) -> Result<(), SequencerGone> {
        self.submit.send(submission).await.map_err(|_| SequencerGone)
    }

    /// Each replica as the ordered core sees it.
    pub fn views(&self) -> Vec<ReplicaView> {
        self.views.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replica `index` as the ordered core sees it.
    pub fn view(&self, index: usize) -> Option<ReplicaView> {
        self.views.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|v| v.index == index).cloned()
    }

    /// The quorum in force, and the higher one a reload set while the replicas it added
    /// join (see `OrderedCore::reconfigure`).
    pub fn quorum(&self) -> (usize, Option<usize>) {
        *self.quorum.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answer bytes all sessions hold (the shared counter sessions add to and take from).
    pub fn buffered(&self) -> &AtomicUsize {
        &self.buffered
    }

    /// Answer bytes all sessions hold now.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    /// Whether this host takes clients now: always on a single host; in D-RESH, while it serves
    /// (in a view with quorum and in sync).
    pub fn serving(&self) -> bool {
        self.group.as_ref().is_none_or(|g| g.role() == "serving")
    }

    /// Waits until this host left its group (never on a single host); returns why.
    pub async fn left(&self) -> String {
        let mut left = self.left.clone();
        loop {
            if let Some(why) = left.borrow_and_update().clone() {
                return why;
            }
            if left.changed().await.is_err() {
                // The sequencer is gone without leaving: wait for the shutdown instead.
                std::future::pending::<()>().await;
            }
        }
    }
}
