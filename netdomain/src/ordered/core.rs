//! The ordered core: one deterministic state machine that decides everything in ordered mode.
//!
//! It owns the frame vote ([`voter::FrameVoter`]), the requests in flight, the replay log, the
//! state of every replica (voting, being rebuilt, out) and the flow control toward each. It
//! does no I/O and reads no clock: the shell feeds it events and carries out its actions.
//!
//! Inputs:
//! - [`order`](OrderedCore::order): a batch of requests in the global order, each with its
//!   *origin* (host, session, request number) and an explicit first sequence number. On one
//!   host the order comes from the local sessions; in D-RESH from the group's agreed delivery.
//!   A request carries its origin rather than a channel, so a request ordered by another host
//!   is executed and voted here and answered by nobody.
//! - [`admitted`](OrderedCore::admitted), [`connected`](OrderedCore::connected),
//!   [`connect_failed`](OrderedCore::connect_failed), [`closed`](OrderedCore::closed): a
//!   replica's incarnations and its connection;
//! - [`response`](OrderedCore::response): one response frame of one replica (with digests);
//! - [`written`](OrderedCore::written): bytes the shell wrote to a replica's socket;
//! - [`tick`](OrderedCore::tick): time passes; [`fence`](OrderedCore::fence): stop serving;
//! - [`reconfigure`](OrderedCore::reconfigure): a reload's replicas and quorum.
//!
//! Outputs ([`Action`], taken with [`poll_action`](OrderedCore::poll_action)): connect to or
//! drop a replica, bytes to write to a replica, the answer for a request's origin (in the
//! order of the requests), faults, and notes for the log.
//!
//! The rules it keeps:
//! - **Only divergence is a fault.** A request every replica is slow on waits (its client gets
//!   the agreed answer, or an error after `request_timeout`), and nobody is late: lateness is
//!   measured from the moment a quorum answered. A request on which a quorum of replicas closes
//!   its connection is the service refusing it: its client gets an error, it leaves the replay
//!   log, and the replicas whose process still runs are reconnected and go on after it.
//! - **Bounded**: at most `max_outstanding` requests between the slowest voting replica's next
//!   answer and the newest sent (a slower replica sets the pace instead of being blamed);
//!   at most `max_queued_bytes` handed to the shell for one replica and not yet written; at
//!   most `max_held_bytes` of requests and answers held ([`room`](OrderedCore::room) tells the
//!   order source when to wait).
//! - **Rebuilding always converges**: a new incarnation of a replica is rebuilt outside the
//!   service's flow control, with its own pace and a progress timeout (`request_timeout`: a
//!   replayed request may be as slow as the first time it ran): by replaying the log
//!   from the start (a fresh process while the log reaches back to the start), or by a
//!   *checkpoint*: its state emptied, the state of a quorum of voting replicas copied (and voted) at one point of the
//!   order (that replica's stream held still meanwhile), then the log from that point. It joins
//!   the vote once it has caught up with the requests the core still holds.
use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use voter::{Digest, FaultKind, FrameConfig, FrameOutcome, FrameVoter, Vote};

use super::log::ReplayLog;
use crate::codec::{AnswerError, Checkpoint, Codec, FrameDigest, Reads, ReplyShape, RequestClass};

/// The largest single write handed to the shell for one replica.
const MAX_WRITE: usize = 256 * 1024;

/// Where a request came from: the host that holds the client's connection, the session, and
/// the request's number in that session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The host (0 on a single host).
    pub host: u32,
    /// The session on that host.
    pub session: u64,
    /// The request's number within the session.
    pub request: u64,
}

/// One request of a batch.
#[derive(Clone, Debug)]
pub struct Request {
    /// Who asked.
    pub origin: Origin,
    /// The request as every replica gets it.
    pub bytes: Bytes,
    /// How it is logged and voted, and whether the next request belongs with it.
    pub class: RequestClass,
}

/// One response frame of one replica, as the shell framed it.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The frame; `None` if it was larger than resh keeps (it was digested as it came).
    pub bytes: Option<Bytes>,
    /// Its length.
    pub len: u64,
    /// Its digests.
    pub digest: FrameDigest,
}

/// The answer for a request's origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The agreed response.
    Frame(Bytes),
    /// resh's own error instead.
    Error(AnswerError),
}

/// A replica's place, as configured.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// Its name.
    pub name: Arc<str>,
    /// Reached by address: resh cannot restart it, so its state after a reconnection is unknown.
    pub address: bool,
}

/// The core's parameters.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// The replicas.
    pub replicas: Vec<ReplicaConfig>,
    /// Identical answers needed.
    pub quorum: usize,
    /// How long a voting replica may trail the quorum.
    pub lag_timeout: Duration,
    /// How long a client waits for its request's agreed answer before it gets an error; also
    /// how long a replica being rebuilt (or a checkpoint source) may answer nothing: a replayed
    /// request may be as slow as it was the first time, when every replica ran it alike.
    pub request_timeout: Duration,
    /// The flow-control window in requests.
    pub max_outstanding: usize,
    /// Bytes handed to the shell for one replica and not yet written.
    pub max_queued_bytes: usize,
    /// Request and answer bytes the core holds before the order source must wait.
    pub max_held_bytes: usize,
    /// The replay log's bound.
    pub log_max_bytes: usize,
    /// The largest answer passed on (for the error that says so).
    pub max_frame_bytes: usize,
    /// How long to wait before retrying what failed for resh's own reasons (a connect without
    /// file descriptors, a rebuild without a source).
    pub retry_delay: Duration,
}

/// Why the configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreConfigError(pub voter::ConfigError);

impl fmt::Display for CoreConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "frame vote: {}", self.0)
    }
}

impl std::error::Error for CoreConfigError {}

/// Why a reload's replica set or quorum was refused (nothing changed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReconfigureError {
    /// The quorum is not between 1 and the replicas configured.
    Quorum {
        /// The quorum.
        quorum: usize,
        /// The replicas configured after the change.
        replicas: usize,
    },
    /// Fewer replicas would vote than the quorum.
    TooFewVoting {
        /// Replicas voting after the change.
        voting: usize,
        /// The quorum in force after it.
        quorum: usize,
    },
    /// More replicas than the frame vote numbers (removed ones included).
    TooMany {
        /// Replicas numbered after the change.
        numbered: usize,
    },
    /// An added replica's number is one the core has used already (a bug).
    Numbering {
        /// The number given.
        index: usize,
        /// The next free one.
        next: usize,
    },
}

impl fmt::Display for ReconfigureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReconfigureError::Quorum { quorum, replicas } => {
                write!(f, "a quorum of {quorum} with {replicas} replicas (it must be between 1 and their number)")
            }
            ReconfigureError::TooFewVoting { voting, quorum } => write!(
                f,
                "only {voting} replicas would still vote, fewer than the quorum of {quorum}: replace or remove fewer replicas at a time (each one added is rebuilt from those voting)"
            ),
            ReconfigureError::TooMany { numbered } => write!(
                f,
                "ordered mode numbers at most {} replicas while resh runs (removed ones included), and this would make {numbered}: restart resh",
                voter::stream::MAX_REPLICAS
            ),
            ReconfigureError::Numbering { index, next } => {
                write!(f, "internal: replica number {index} is taken (the next free one is {next})")
            }
        }
    }
}

impl std::error::Error for ReconfigureError {}

/// Why an ordered batch was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderError {
    /// The batch does not continue the order (a gap or a repeat).
    OutOfOrder {
        /// The sequence number expected.
        expected: u64,
        /// The batch's first.
        got: u64,
    },
}

impl fmt::Display for OrderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrderError::OutOfOrder { expected, got } => {
                write!(f, "batch starts at sequence number {got}, expected {expected}")
            }
        }
    }
}

impl std::error::Error for OrderError {}

/// What the shell must do.
#[derive(Clone, Debug)]
pub enum Action {
    /// Connect to `replica`'s incarnation `incarnation` (replacing any connection it has).
    Connect {
        /// The replica.
        replica: usize,
        /// Its incarnation.
        incarnation: u64,
    },
    /// Drop `replica`'s connection.
    Disconnect {
        /// The replica.
        replica: usize,
    },
    /// Write these bytes to `replica`'s connection, after what was written before.
    Write {
        /// The replica.
        replica: usize,
        /// Its incarnation.
        incarnation: u64,
        /// The bytes.
        bytes: Bytes,
    },
    /// The answer to request `seq`, for `origin`. Answers come in the order of the requests.
    Reply {
        /// Who asked.
        origin: Origin,
        /// The request's sequence number.
        seq: u64,
        /// The answer.
        answer: Answer,
        /// A minority failed or differed: the answer was masked rather than unanimous.
        masked: bool,
        /// How long the request waited from being ordered to its answer.
        waited: Duration,
        /// For an answer whose shape lets correct replicas differ (a set's order): the digest
        /// the vote compared, which is what other hosts compare too (D-RESH). `None`: the
        /// answer's bytes are what counts.
        shaped: Option<Digest>,
    },
    /// A replica is faulty.
    Fault {
        /// The replica.
        replica: usize,
        /// The incarnation it was found in.
        incarnation: u64,
        /// The request number it was found at.
        seq: u64,
        /// What.
        kind: FaultKind,
    },
    /// Request `seq`, answered already, turns out to have been masked: a replica's differing
    /// answer (or its failure) came after the quorum's answer was released.
    Masked {
        /// Who asked.
        origin: Origin,
        /// The request's sequence number.
        seq: u64,
    },
    /// Something worth a line in the log.
    Note(Note),
}

/// Events of the replicas' life in the core, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// A replica votes (again) from request `seq` on.
    Joined {
        /// The replica.
        replica: usize,
        /// From where.
        seq: u64,
        /// Whether it was rebuilt first.
        rebuilt: bool,
    },
    /// A replica is being rebuilt.
    Rebuilding {
        /// The replica.
        replica: usize,
        /// How.
        how: String,
    },
    /// A rebuild could not go on; it is retried.
    RebuildFailed {
        /// The replica.
        replica: usize,
        /// Why.
        why: String,
    },
    /// A replica reconnected after the service closed its connection and goes on.
    Resumed {
        /// The replica.
        replica: usize,
        /// From which request.
        seq: u64,
    },
    /// Every replica closed its connection on request `seq`: it is refused and not replayed.
    Refused {
        /// The request.
        seq: u64,
        /// The requests that leave the log with it: `seq` alone, or its whole unit.
        voided: Range<u64>,
    },
    /// A connection could not be made for resh's own reasons (e.g. no file descriptors).
    ConnectDelayed {
        /// The replica.
        replica: usize,
        /// Why.
        why: String,
    },
}

/// A replica as `/status` shows it in ordered mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaView {
    /// Its number (the supervisor's too).
    pub index: usize,
    /// `voting`, `syncing`, `out` or `down`.
    pub state: &'static str,
    /// Why it is out, or how it is being rebuilt.
    pub detail: Option<String>,
    /// Rebuild progress: requests (or keys) done and to do.
    pub progress: Option<(u64, u64)>,
    /// The incarnation the core works with (0: none yet).
    pub incarnation: u64,
    /// A voting replica's answers still owed: requests sent in the order that it has not
    /// answered yet (its lag; 0 when it is not voting).
    pub behind: u64,
    /// How long its answers take, from their requests' ordering: a moving average over about
    /// its last 16 votes (`None` before its first).
    pub answer_latency: Option<Duration>,
}

/// What a replica's next answers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Votes on ordered requests (the voter knows which).
    Votes(u64),
    /// Answers to discard (a replay); `check`: an error among them fails the rebuild.
    Discard { left: u64, check: bool },
    /// Answers to a checkpoint's reads (this replica is a source).
    Reads(u64),
    /// Answers to replayed log entries (their sequence numbers are in `replay_seqs`).
    Replay(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkState {
    Down,
    Connecting,
    Up,
    /// Connect again at this time (after a failure that was resh's, not the replica's).
    RetryAt(Duration),
}

#[derive(Debug)]
enum Role {
    /// Not in the vote and not being rebuilt.
    Out { why: String, retry_at: Option<Duration> },
    /// Being rebuilt.
    Syncing(Box<Sync>),
    /// In the vote.
    Voting,
}

#[derive(Debug)]
struct Sync {
    phase: SyncPhase,
    /// Every logged request below this was written to it (or is in its checkpoint).
    cursor: u64,
    /// When it started (for the note) and when it last answered anything.
    last_progress: Duration,
    /// Answers received during the rebuild (for `/status`).
    answered: u64,
}

#[derive(Debug)]
enum SyncPhase {
    /// Waits for its connection.
    Connecting,
    /// Replays the log from `cursor`.
    Replay,
    /// Needs a checkpoint; waits for a voting replica to take it from.
    AwaitSource,
    /// Gets a checkpoint taken at request `at` from `sources` (a quorum of voting replicas,
    /// held still at `at`, whose answers to every read must agree); the reset request was sent
    /// (`reset_sent`). `answers[k]`: source `k`'s answers not yet compared.
    Restore {
        sources: Vec<usize>,
        at: u64,
        checkpoint: Box<dyn Checkpoint>,
        reset_sent: bool,
        answers: Vec<VecDeque<Bytes>>,
    },
}

#[derive(Debug)]
struct Replica {
    name: Arc<str>,
    address: bool,
    /// The incarnation the core works with; 0: none yet.
    incarnation: u64,
    link: LinkState,
    /// Bytes handed to the shell and not yet written.
    queued: usize,
    role: Role,
    expect: VecDeque<Expect>,
    /// Voting: the next request to write.
    sent: u64,
    /// Voting: it closed its connection and voted `Closed` on this request.
    closed_at: Option<u64>,
    /// ...and its process was gone then.
    closed_gone: bool,
    /// It is the source of a checkpoint for this replica; `reads_done`: every read was sent.
    source_for: Option<(usize, bool)>,
    /// When it last answered anything (a checkpoint source is timed by it).
    last_answer: Duration,
    /// A newer incarnation the supervisor admitted, waiting for the old one's last vote.
    next_incarnation: Option<u64>,
    /// The sequence numbers of the log entries replayed to it and not answered yet.
    replay_seqs: VecDeque<u64>,
    /// This incarnation holds the state at the core's first request already (the shell
    /// copied it there): it joins the vote there once connected.
    preloaded: Option<u64>,
    /// Its state may hold a request the others' do not (it answered one decided `Closed`
    /// ambiguously): it is emptied before a replay from the start, or rebuilt by a checkpoint;
    /// never replayed onto what it holds.
    must_reset: bool,
    /// Removed from the configuration (a reload): out for good, its number kept.
    removed: bool,
}

impl Replica {
    /// A replica as configured, before its first incarnation: out, and sent nothing before
    /// request `sent`.
    fn new(config: &ReplicaConfig, sent: u64, why: &str) -> Replica {
        Replica {
            name: Arc::clone(&config.name),
            address: config.address,
            incarnation: 0,
            link: LinkState::Down,
            queued: 0,
            role: Role::Out { why: why.into(), retry_at: None },
            expect: VecDeque::new(),
            sent,
            closed_at: None,
            closed_gone: false,
            source_for: None,
            last_answer: Duration::ZERO,
            next_incarnation: None,
            replay_seqs: VecDeque::new(),
            preloaded: None,
            must_reset: false,
            removed: false,
        }
    }

    fn is_voting(&self) -> bool {
        matches!(self.role, Role::Voting)
    }
}

/// A request the core holds: until it is answered to its origin and every voting replica
/// answered it.
#[derive(Debug)]
struct HeldRequest {
    origin: Origin,
    /// The batch buffer it is part of, and where: runs of one batch are written as one slice.
    batch: Bytes,
    start: usize,
    len: usize,
    ordered_at: Duration,
    shape: ReplyShape,
    outcome: Option<FrameOutcome>,
    masked: bool,
    replied: bool,
    /// The replay log knows some replica answered it (marked once, not once per answer).
    marked_answered: bool,
    /// See [`RequestClass::unchanged_if`](crate::codec::RequestClass::unchanged_if).
    unchanged_if: Option<&'static [u8]>,
}

/// The ordered core. See the module documentation.
pub struct OrderedCore {
    config: CoreConfig,
    codec: Arc<dyn Codec>,
    voter: FrameVoter,
    replicas: Vec<Replica>,
    /// Requests from `held_base` on.
    held: VecDeque<HeldRequest>,
    /// Frames of the held requests: `replicas.len()` per request.
    frames: VecDeque<Option<Frame>>,
    held_base: u64,
    held_bytes: usize,
    /// Of `held_bytes`, the answer bytes each replica sent that are held (see
    /// [`read_paused`](OrderedCore::read_paused)).
    answer_bytes: Vec<usize>,
    /// The next request to answer to its origin.
    release: u64,
    log: ReplayLog,
    actions: VecDeque<Action>,
    fenced: bool,
    /// Requests below this one are sent one at a time (see [`decided`](Self::decided)).
    careful_until: u64,
    /// Inputs came in since the last settling (at this time).
    unsettled: Option<Duration>,
    /// Units of requests that must stay together on a replica's connection (a transaction),
    /// as `[first, end)`, while they may matter: a checkpoint is taken only between units.
    /// A unit comes whole in one batch (the order sources keep it together).
    units: VecDeque<(u64, u64)>,
    /// A reload's quorum, higher than the replicas voting now: in force once enough of them
    /// vote (see [`reconfigure`](OrderedCore::reconfigure)).
    pending_quorum: Option<usize>,
    /// Replicas configured (removed ones left out): the quorum's bound, and they share
    /// `max_held_bytes` (see [`read_paused`](OrderedCore::read_paused)).
    configured: usize,
}

impl fmt::Debug for OrderedCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrderedCore")
            .field("next_seq", &self.voter.next_seq())
            .field("held", &self.held.len())
            .field("held_bytes", &self.held_bytes)
            .field("replicas", &self.replicas)
            .finish()
    }
}

impl OrderedCore {
    /// Changes the timeouts (a reload): lateness and the clients' wait are judged with them from
    /// now on; requests already waiting are held to the new limits too.
    pub fn retune(&mut self, lag_timeout: Duration, request_timeout: Duration) {
        self.config.lag_timeout = lag_timeout;
        self.config.request_timeout = request_timeout;
        self.voter.set_lag_timeout(lag_timeout);
    }

    /// A reload of the replica set: the replicas `remove` leave, the replicas `add` are added
    /// with the numbers the supervisor gave them (numbers it gave that the core never took, from
    /// a reload that did not go through, are taken as removed replicas), and the quorum becomes
    /// `quorum`.
    ///
    /// - A removed replica leaves the vote without a fault, whatever it was doing (a
    ///   checkpoint it was a source of starts again from others), its connection is dropped,
    ///   and nothing it does counts any more; its number stays taken.
    /// - An added replica is rebuilt like a restarted one once the supervisor admits it (by the
    ///   log from the start while it reaches back there, else by a checkpoint of a quorum of
    ///   voting replicas), and votes from then on.
    /// - A lower quorum is in force at once, together with the removals: the requests waiting
    ///   are decided with both. A higher one is reached step by step as added replicas join
    ///   (see `step_quorum`). In force at once, it would stop the service (or leave no fault
    ///   masked) while the added replicas are rebuilt; kept as it was, two disagreeing halves
    ///   of the grown vote could each make it.
    /// - Refused, changing nothing: a change that leaves fewer replicas voting than the quorum
    ///   (replacing most replicas at once: the service would stop, and the new ones could be
    ///   rebuilt only from the log), or more replicas than the vote numbers.
    pub fn reconfigure(
        &mut self,
        remove: &[usize],
        add: Vec<(usize, ReplicaConfig)>,
        quorum: usize,
        now: Duration,
    ) -> Result<(), ReconfigureError> {
        let mut leaving: Vec<usize> =
            remove.iter().copied().filter(|&r| self.replicas.get(r).is_some_and(|x| !x.removed)).collect();
        leaving.sort_unstable();
        leaving.dedup();
        let kept = self.configured - leaving.len() + add.len();
        if quorum == 0 || quorum > kept {
            return Err(ReconfigureError::Quorum { quorum, replicas: kept });
        }
        let mut next = self.replicas.len();
        for (index, _) in &add {
            if *index < next {
                return Err(ReconfigureError::Numbering { index: *index, next });
            }
            next = index + 1;
        }
        if next > voter::stream::MAX_REPLICAS {
            return Err(ReconfigureError::TooMany { numbered: next });
        }
        let voting_before = self.voter.live_count();
        let voting = (0..self.replicas.len()).filter(|&r| self.voter.is_live(r) && !leaving.contains(&r)).count();
        let in_force = if quorum <= self.config.quorum { quorum } else { self.quorum_step(quorum, kept, voting) };
        // Refused if the change itself stops the service; a service stopped already (too few
        // vote) may still be given replicas, or lose ones that do not vote.
        if voting < in_force && (voting < voting_before || in_force > self.config.quorum) {
            return Err(ReconfigureError::TooFewVoting { voting, quorum: in_force });
        }
        if self.voter.reconfigure(&leaving, in_force, now).is_err() {
            return Err(ReconfigureError::Quorum { quorum: in_force, replicas: self.replicas.len() });
        }
        self.config.quorum = in_force;
        self.pending_quorum = Some(quorum).filter(|&q| q > in_force);
        for &r in &leaving {
            self.replicas[r].removed = true;
            self.replicas[r].next_incarnation = None;
            self.take_out(r, "removed from the configuration".into(), now);
        }
        for (index, config) in add {
            while self.replicas.len() < index {
                // A number the supervisor gave to a replica of a reload that did not go through.
                let r = self.replicas.len();
                self.add_replica(ReplicaConfig { name: "(never added)".into(), address: false });
                self.replicas[r].removed = true;
            }
            self.add_replica(config);
        }
        self.configured = kept;
        self.touch(now);
        Ok(())
    }

    /// The quorum on the way to a reload's higher `target`, with `kept` replicas configured
    /// and `voting` of them voting: a majority of those voting (so two disagreeing groups
    /// cannot both reach it), and as high as the target once every configured replica votes
    /// (a target above a majority included), never lower than the quorum in force.
    fn quorum_step(&self, target: usize, kept: usize, voting: usize) -> usize {
        let majority = voting / 2 + 1;
        let toward = target.saturating_sub(kept.saturating_sub(voting));
        majority.max(toward).max(self.config.quorum).min(target)
    }

    /// Adds one replica (see [`reconfigure`](Self::reconfigure)).
    fn add_replica(&mut self, config: ReplicaConfig) {
        let n = self.replicas.len();
        // Within the voter's bound: `reconfigure` checked.
        let added = self.voter.add_replica();
        debug_assert_eq!(added, Ok(n), "the voter and the core number the replicas alike");
        // One more frame per held request: the flat queue is laid out again.
        let mut frames = VecDeque::with_capacity(self.held.len() * (n + 1));
        for index in 0..self.held.len() {
            frames.extend(self.frames.range(index * n..(index + 1) * n).cloned());
            frames.push_back(None);
        }
        self.frames = frames;
        self.answer_bytes.push(0);
        self.replicas.push(Replica::new(&config, self.voter.next_seq(), "added: not started yet"));
        self.config.replicas.push(config);
    }

    /// Raises the quorum toward a reload's higher one as a replica joins: to a majority of the
    /// `voting` replicas, and to the target itself once every configured replica votes
    /// ([`quorum_step`](Self::quorum_step); see [`reconfigure`](Self::reconfigure)).
    fn step_quorum(&mut self, voting: usize, now: Duration) {
        let Some(target) = self.pending_quorum else { return };
        let step = self.quorum_step(target, self.configured, voting);
        if step > self.config.quorum && self.voter.reconfigure(&[], step, now).is_ok() {
            self.config.quorum = step;
        }
        if self.config.quorum >= target {
            self.pending_quorum = None;
        }
    }

    /// The quorum in force, and the one a reload asked for while it waits for replicas.
    pub fn quorum(&self) -> (usize, Option<usize>) {
        (self.config.quorum, self.pending_quorum)
    }

    /// A core whose first request will be `first_seq`, with no replica yet.
    pub fn new(config: CoreConfig, codec: Arc<dyn Codec>, first_seq: u64) -> Result<OrderedCore, CoreConfigError> {
        let frame =
            FrameConfig { replicas: config.replicas.len(), quorum: config.quorum, lag_timeout: config.lag_timeout };
        let voter = FrameVoter::starting_at(frame, first_seq).map_err(CoreConfigError)?;
        let config_replicas = config.replicas.len();
        let replicas = config.replicas.iter().map(|r| Replica::new(r, first_seq, "not started yet")).collect();
        Ok(OrderedCore {
            log: ReplayLog::new(config.log_max_bytes),
            config,
            codec,
            voter,
            replicas,
            held: VecDeque::new(),
            frames: VecDeque::new(),
            held_base: first_seq,
            held_bytes: 0,
            answer_bytes: vec![0; config_replicas],
            release: first_seq,
            actions: VecDeque::new(),
            fenced: false,
            careful_until: first_seq,
            unsettled: None,
            units: VecDeque::new(),
            pending_quorum: None,
            configured: config_replicas,
        })
    }

    /// A core whose first request will be `first_seq`, for replicas that hold a state from
    /// before it that the shell put there (D-RESH: copied from another host): the incarnations
    /// in `preloaded` (replica, incarnation) hold the state at `first_seq` and join the vote
    /// there once admitted and connected; any other replica is rebuilt from them (checkpoint),
    /// as after a replay log that no longer reaches back to the start.
    pub fn with_state(
        config: CoreConfig,
        codec: Arc<dyn Codec>,
        first_seq: u64,
        preloaded: &[(usize, u64)],
    ) -> Result<OrderedCore, CoreConfigError> {
        let mut core = OrderedCore::new(config, codec, first_seq)?;
        core.log = ReplayLog::starting_at(core.config.log_max_bytes, first_seq);
        for &(r, incarnation) in preloaded {
            if let Some(replica) = core.replicas.get_mut(r) {
                replica.preloaded = Some(incarnation);
            }
        }
        Ok(core)
    }

    /// Whether the core is at rest: every request ordered was answered to its origin and by
    /// every voting replica (their states stand at [`next_seq`](Self::next_seq)).
    pub fn quiescent(&self) -> bool {
        self.held.is_empty()
    }

    /// The replicas in the vote now, connected, and not busy as a checkpoint source: those a
    /// copy of the state can be read from.
    pub fn voting_replicas(&self) -> Vec<(usize, u64)> {
        (0..self.replicas.len()).filter(|&r| self.free_voter(r)).map(|r| (r, self.replicas[r].incarnation)).collect()
    }

    /// Whether replica `r` votes, is connected, and is free to be read a copy from.
    fn free_voter(&self, r: usize) -> bool {
        let x = &self.replicas[r];
        x.is_voting() && x.link == LinkState::Up && x.source_for.is_none() && x.closed_at.is_none()
    }

    /// The next action for the shell.
    pub fn poll_action(&mut self) -> Option<Action> {
        if let Some(now) = self.unsettled.take() {
            self.settle(now);
        }
        self.actions.pop_front()
    }

    /// Notes that inputs changed the state: [`settle`](Self::settle) runs once before the next
    /// action is taken, however many inputs came in between (a shell that feeds a batch of
    /// frames pays for one settling, not one per frame).
    fn touch(&mut self, now: Duration) {
        self.unsettled = Some(self.unsettled.map_or(now, |t| t.max(now)));
    }

    /// The sequence number the next ordered request must have.
    pub fn next_seq(&self) -> u64 {
        self.voter.next_seq()
    }

    /// Whether requests can be executed now: enough replicas vote and the host is not fenced.
    /// The order source answers requests itself while this is false ([`AnswerError::NoQuorum`]).
    pub fn can_serve(&self) -> bool {
        !self.fenced && self.voter.live_count() >= self.config.quorum
    }

    /// Whether the order source may order more now: the core holds less than its byte budget
    /// and fewer than `max_outstanding` requests wait to be sent.
    pub fn room(&self) -> bool {
        self.held_bytes < self.config.max_held_bytes && self.unsent() < self.config.max_outstanding as u64
    }

    /// From which request on the replay log holds every logged request (0: from the start).
    pub fn replay_covers_from(&self) -> u64 {
        self.log.covers_from()
    }

    /// Bytes of requests the replay log holds.
    pub fn replay_log_bytes(&self) -> usize {
        self.log.bytes()
    }

    /// Request and answer bytes held.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Whether the shell should stop reading replica `r`'s answers for now: the answers it
    /// sent that wait for the other replicas' (or for an earlier request's decision) hold its
    /// share of `max_held_bytes`. Admission alone does not bound them: answers come after
    /// their requests were let in, and a replica that runs ahead would have all of them held.
    /// It cannot stall the vote: answers come in order, so a paused replica already answered
    /// every request it holds answers for, and whatever decides the oldest request waits only
    /// on replicas that are still read. Resumes as the held answers are released.
    pub fn read_paused(&self, r: usize) -> bool {
        let share = self.config.max_held_bytes / self.configured.max(1);
        self.answer_bytes.get(r).is_some_and(|&b| b >= share)
    }

    /// Requests ordered and not yet written to the slowest voting replica that is not paused.
    fn unsent(&self) -> u64 {
        let next = self.voter.next_seq();
        self.replicas
            .iter()
            .filter(|r| r.is_voting() && r.source_for.is_none())
            .map(|r| next.saturating_sub(r.sent))
            .max()
            .unwrap_or(0)
    }

    /// How replica `r` is doing, for `/status`.
    pub fn view(&self, r: usize) -> Option<ReplicaView> {
        let replica = self.replicas.get(r).filter(|x| !x.removed)?;
        let next = self.voter.next_seq();
        let (state, detail, progress) = match &replica.role {
            Role::Voting => (
                "voting",
                replica.source_for.map(|(t, _)| format!("copying its state to {}", self.replicas[t].name)),
                None,
            ),
            Role::Out { why, .. } if replica.incarnation == 0 => ("down", Some(why.clone()), None),
            Role::Out { why, .. } => ("out", Some(why.clone()), None),
            Role::Syncing(sync) => {
                let detail = match &sync.phase {
                    SyncPhase::Connecting => "connecting".to_string(),
                    SyncPhase::Replay => format!("replaying the log from request {}", sync.cursor),
                    SyncPhase::AwaitSource if self.voter.live_count() == 0 => "no replica votes to copy the state from, and the replay log no longer reaches back to the start: the service's state is lost (restart resh to start empty)".to_string(),
                    SyncPhase::AwaitSource if self.voter.live_count() < self.config.quorum => format!(
                        "waiting for a quorum of voting replicas ({} of {}) to copy a state they agree on from; resh does not copy a state no quorum vouches for",
                        self.voter.live_count(),
                        self.config.quorum
                    ),
                    SyncPhase::AwaitSource => "waiting for a quorum of voting replicas to copy the state from".to_string(),
                    SyncPhase::Restore { sources, at, .. } => {
                        let names: Vec<&str> = sources.iter().map(|s| &*self.replicas[*s].name).collect();
                        format!("copying the state of {} at request {at}", names.join(" and "))
                    }
                };
                ("syncing", Some(detail), Some((sync.cursor.min(next), next)))
            }
        };
        let behind = match replica.role {
            Role::Voting => next.saturating_sub(self.voter.next_answer(r).unwrap_or(next)),
            _ => 0,
        };
        let answer_latency = self.voter.answer_latency(r);
        Some(ReplicaView {
            index: r,
            state,
            detail,
            progress,
            incarnation: replica.incarnation,
            behind,
            answer_latency,
        })
    }

    // ----- inputs -----

    /// Requests in the global order, the first numbered `first_seq`.
    pub fn order(&mut self, first_seq: u64, batch: Vec<Request>, now: Duration) -> Result<(), OrderError> {
        let expected = self.voter.next_seq();
        if first_seq != expected {
            return Err(OrderError::OutOfOrder { expected, got: first_seq });
        }
        let mut joined = BytesMut::with_capacity(batch.iter().map(|r| r.bytes.len()).sum());
        for request in &batch {
            joined.extend_from_slice(&request.bytes);
        }
        let joined = joined.freeze();
        let n = self.replicas.len();
        let mut at = 0;
        while self.units.front().is_some_and(|&(_, end)| end <= self.held_base) {
            self.units.pop_front();
        }
        let mut unit_start = None;
        for request in batch {
            let seq = self.voter.submit(now);
            let len = request.bytes.len();
            match (request.class.continues, unit_start) {
                (true, None) => unit_start = Some(seq),
                (false, Some(first)) => {
                    self.units.push_back((first, seq + 1));
                    unit_start = None;
                }
                _ => {}
            }
            if request.class.logged {
                self.log.push(seq, request.bytes, request.class.continues);
            }
            self.held.push_back(HeldRequest {
                origin: request.origin,
                batch: joined.clone(),
                start: at,
                len,
                ordered_at: now,
                shape: request.class.shape,
                outcome: None,
                masked: false,
                replied: false,
                marked_answered: false,
                unchanged_if: request.class.unchanged_if,
            });
            self.held_bytes += len;
            self.frames.extend(std::iter::repeat_n(None, n));
            at += len;
            if self.fenced {
                self.reply_error(seq, AnswerError::Fenced, now);
            }
        }
        // A batch that ends inside a unit (the sources never send one) keeps its tail together.
        if let Some(first) = unit_start {
            self.units.push_back((first, self.voter.next_seq()));
        }
        self.touch(now);
        Ok(())
    }

    /// The supervisor admits `replica`'s incarnation `incarnation` (it accepts connections).
    pub fn admitted(&mut self, r: usize, incarnation: u64, now: Duration) {
        let Some(replica) = self.replicas.get_mut(r).filter(|x| !x.removed) else { return };
        if incarnation <= replica.incarnation || replica.next_incarnation.is_some_and(|n| n >= incarnation) {
            return;
        }
        if replica.closed_at.is_some() && self.voter.is_live(r) {
            // The old incarnation closed on a request not yet decided: whether that was the
            // service refusing the request (every replica alike) or this replica's crash is
            // known once the others answered it. The new incarnation waits until then.
            replica.next_incarnation = Some(incarnation);
            return;
        }
        self.admit(r, incarnation, now);
        self.touch(now);
    }

    /// Takes incarnation `incarnation` of replica `r` into use.
    fn admit(&mut self, r: usize, incarnation: u64, now: Duration) {
        self.replicas[r].next_incarnation = None;
        // A newer incarnation replaces whatever the old one was doing; if the old one still
        // votes, its process was replaced behind the vote's back: it crashed.
        if self.voter.is_live(r) {
            self.voter.fail(r, now);
            self.absorb_voter(now);
        }
        self.abandon(r, now);
        let replica = &mut self.replicas[r];
        if replica.link != LinkState::Down {
            self.actions.push_back(Action::Disconnect { replica: r });
        }
        replica.incarnation = incarnation;
        // A new process: empty, whatever the old one held.
        replica.must_reset = false;
        replica.expect.clear();
        replica.replay_seqs.clear();
        replica.queued = 0;
        replica.closed_at = None;
        replica.closed_gone = false;
        replica.source_for = None;
        replica.role =
            Role::Syncing(Box::new(Sync { phase: SyncPhase::Connecting, cursor: 0, last_progress: now, answered: 0 }));
        replica.link = LinkState::Connecting;
        self.actions.push_back(Action::Connect { replica: r, incarnation });
    }

    /// The shell connected to `replica`'s incarnation `incarnation`.
    pub fn connected(&mut self, r: usize, incarnation: u64, now: Duration) {
        let Some(replica) = self.replicas.get_mut(r).filter(|x| x.incarnation == incarnation && !x.removed) else {
            return;
        };
        if replica.link != LinkState::Connecting {
            return;
        }
        replica.link = LinkState::Up;
        replica.queued = 0;
        replica.last_answer = now;
        let mut rebuild = false;
        match &mut replica.role {
            Role::Voting => {
                // Back after the service closed its connection (on a request every replica
                // refused, or idle): it goes on with the request it owes next.
                let seq = self.voter.next_answer(r).unwrap_or(replica.sent);
                replica.sent = seq;
                replica.expect.clear();
                self.voter.sent_to(r, seq);
                self.voter.resume(r, now);
                self.actions.push_back(Action::Note(Note::Resumed { replica: r, seq }));
            }
            Role::Syncing(sync) => {
                sync.last_progress = now;
                rebuild = matches!(sync.phase, SyncPhase::Connecting);
            }
            Role::Out { .. } => {}
        }
        if rebuild {
            self.start_rebuild(r, now);
        }
        self.touch(now);
    }

    /// The shell could not connect to `replica`'s incarnation `incarnation`. `resh_exhausted`:
    /// for resh's own reasons (no file descriptors or memory): not the replica's fault, retried.
    pub fn connect_failed(&mut self, r: usize, incarnation: u64, resh_exhausted: bool, why: &str, now: Duration) {
        let Some(replica) = self.replicas.get_mut(r).filter(|x| x.incarnation == incarnation && !x.removed) else {
            return;
        };
        if resh_exhausted {
            replica.link = LinkState::RetryAt(now + self.config.retry_delay);
            self.actions.push_back(Action::Note(Note::ConnectDelayed { replica: r, why: why.to_string() }));
            return;
        }
        replica.link = LinkState::Down;
        if matches!(replica.role, Role::Syncing(_)) && replica.must_reset {
            // Rebuilt because it ran a request the others died on (see `resync`): it was sent
            // what they were, and may well have died on the same query of death since. Not its
            // fault; the supervisor restarts it and its next incarnation is rebuilt.
            self.take_out_retry(r, format!("cannot connect while being rebuilt: {why}"), now);
        } else {
            self.replica_failed(r, FaultKind::Crashed, now);
        }
        self.touch(now);
    }

    /// `replica`'s connection ended: it closed it (`process_gone`: its process ended too), or
    /// its output could not be framed (`malformed`, with the digest of what was there).
    pub fn closed(&mut self, r: usize, incarnation: u64, process_gone: bool, malformed: Option<Digest>, now: Duration) {
        let Some(replica) = self.replicas.get_mut(r).filter(|x| x.incarnation == incarnation) else { return };
        if matches!(replica.link, LinkState::Down) {
            return;
        }
        replica.link = LinkState::Down;
        replica.queued = 0;
        // A checkpoint it was the source or the target of is lost with the connection.
        self.abandon(r, now);
        let replica = &mut self.replicas[r];
        if let Some(observed) = malformed {
            self.replica_failed(r, FaultKind::Diverged { expected: voter::fault::digest(b""), observed }, now);
            self.touch(now);
            return;
        }
        if !replica.is_voting() {
            if matches!(replica.role, Role::Syncing(_)) {
                self.rebuild_closed(r, process_gone, now);
            }
            self.touch(now);
            return;
        }
        match replica.expect.front().copied() {
            // It joined the vote with part of its replay still to be answered.
            Some(Expect::Replay(_)) => self.rebuild_closed(r, process_gone, now),
            Some(Expect::Votes(_)) => {
                // Closing is this replica's answer to the last request it was sent (see
                // `FrameVoter::closed`): if a quorum closes alike, the service refused the
                // request; if the quorum answered, this replica closed early.
                replica.closed_gone = process_gone;
                replica.expect.clear();
                let vote = if process_gone { self.voter.closed_gone(r, now) } else { self.voter.closed(r, now) };
                if let Some(seq) = vote {
                    self.replicas[r].closed_at = Some(seq);
                    // The request may be decided already (refused by the quorum, or undecidable).
                    // One no longer held was decided without this replica's vote (it joined
                    // after): its close cannot be weighed any more, and it goes on.
                    let outcome = match seq.checked_sub(self.held_base).and_then(|i| self.held.get(i as usize)) {
                        Some(held) => held.outcome,
                        None => Some(FrameOutcome::Undecidable),
                    };
                    match outcome {
                        Some(outcome) if closes_settled(outcome) => self.close_settled(r, outcome, now),
                        // The quorum answered it without counting on this replica, which
                        // joined after, and this replica's process ended with later requests
                        // in flight: it may have died on one of those (a query of death every
                        // replica dies on), losing its answers before. Not known to be its
                        // fault: it leaves, and its next incarnation is rebuilt.
                        Some(_) if process_gone && self.replicas[r].sent > seq + 1 => self.take_out(
                            r,
                            "its process ended with requests in flight, after joining: waiting for its next incarnation"
                                .into(),
                            now,
                        ),
                        // ...otherwise closing on it is this replica's failure.
                        Some(_) => self.voter.exclude_for(r, FaultKind::ClosedEarly, now),
                        None => {}
                    }
                }
            }
            None if !process_gone && !replica.address => {
                // An idle connection closed by a process that still runs (a server-side idle
                // timeout): its state is intact, it simply reconnects.
                replica.link = LinkState::Connecting;
                self.actions.push_back(Action::Connect { replica: r, incarnation });
            }
            // Mid-checkpoint, mid-replay, or an address replica (or a dead process) with
            // nothing outstanding: its state cannot be trusted to go on from here.
            _ => self.replica_failed(r, FaultKind::Crashed, now),
        }
        self.touch(now);
    }

    /// Replica `r`, being rebuilt, closed its connection (or died). On a replayed request no
    /// replica ever answered (it was in flight when every replica died on an earlier one), that
    /// is the service refusing the request: it leaves the log and the rebuild goes on after it
    /// (or, if the process ended, with the next incarnation). Otherwise the replica is faulty.
    fn rebuild_closed(&mut self, r: usize, process_gone: bool, now: Duration) {
        let replica = &self.replicas[r];
        let replaying = matches!(replica.expect.front(), Some(Expect::Replay(_)));
        let seq = replica.replay_seqs.front().copied();
        match seq {
            Some(seq) if replaying && !self.log.was_answered(seq) => {
                let voided = self.log.remove(seq);
                let next = voided.end;
                self.actions.push_back(Action::Note(Note::Refused { seq, voided }));
                if process_gone {
                    let why = format!("its process ended replaying request {seq}, which no replica ever answered");
                    self.take_out(r, why, now);
                    return;
                }
                // It may have joined the vote already: it leaves it (no fault) and replays on.
                if self.voter.is_live(r) {
                    self.voter.leave(r, now);
                }
                let replica = &mut self.replicas[r];
                let incarnation = replica.incarnation;
                replica.expect.clear();
                replica.replay_seqs.clear();
                replica.closed_at = None;
                replica.link = LinkState::Connecting;
                replica.role = Role::Syncing(Box::new(Sync {
                    phase: SyncPhase::Replay,
                    cursor: next,
                    last_progress: now,
                    answered: 0,
                }));
                self.actions.push_back(Action::Connect { replica: r, incarnation });
            }
            _ => self.replica_failed(r, FaultKind::Crashed, now),
        }
    }

    /// `replica` answered: its next response frame.
    pub fn response(&mut self, r: usize, incarnation: u64, frame: Frame, now: Duration) {
        let Some(replica) = self.replicas.get_mut(r).filter(|x| x.incarnation == incarnation) else { return };
        if replica.link != LinkState::Up {
            return;
        }
        replica.last_answer = now;
        if let Role::Syncing(sync) = &mut replica.role {
            sync.last_progress = now;
            sync.answered += 1;
        }
        let expect = replica.expect.front_mut().map(|e| {
            let taken = *e;
            match e {
                Expect::Votes(n) | Expect::Discard { left: n, .. } | Expect::Reads(n) | Expect::Replay(n) => *n -= 1,
            }
            taken
        });
        if let Some(Expect::Votes(0) | Expect::Discard { left: 0, .. } | Expect::Reads(0) | Expect::Replay(0)) =
            replica.expect.front()
        {
            replica.expect.pop_front();
        }
        if let Some(Expect::Replay(_)) = expect {
            if let Some(seq) = replica.replay_seqs.pop_front() {
                self.log.mark_answered(seq);
            }
        }
        match expect {
            Some(Expect::Votes(_)) | None => {
                let frame = self.shaped(r, frame);
                if let Some(seq) = self.voter.response(r, Vote::Frame(frame.digest.vote), now) {
                    self.mark_answered(seq);
                    self.store_frame(seq, r, frame);
                } else if expect.is_none() && !self.voter.is_live(r) {
                    // More answers than it was sent, from a replica not in the vote.
                    let observed = frame.digest.exact;
                    self.replica_failed(r, FaultKind::Diverged { expected: voter::fault::digest(b""), observed }, now);
                }
            }
            Some(Expect::Discard { check, .. }) => {
                let is_error = frame.digest.error || frame.bytes.as_deref().is_some_and(|b| self.codec.is_error(b));
                if check && is_error {
                    let text = frame.bytes.as_deref().map(|b| String::from_utf8_lossy(b).trim_end().to_string());
                    let why = format!("it refused a restore request: {}", text.unwrap_or_default());
                    self.rebuild_failed(r, &why, now);
                }
            }
            Some(Expect::Reads(_)) => self.checkpoint_answer(r, frame, now),
            Some(Expect::Replay(_)) => {}
        }
        self.touch(now);
    }

    /// The shell wrote `bytes` of what it was given for `replica`.
    pub fn written(&mut self, r: usize, incarnation: u64, bytes: usize, now: Duration) {
        let Some(replica) = self.replicas.get_mut(r).filter(|x| x.incarnation == incarnation) else { return };
        replica.queued = replica.queued.saturating_sub(bytes);
        self.touch(now);
    }

    /// Whether bytes for `replica` wait until the shell reports writes ([`written`](Self::written)):
    /// it holds `max_queued_bytes` not yet written.
    pub fn write_blocked(&self, r: usize, incarnation: u64) -> bool {
        self.replicas.get(r).is_some_and(|x| x.incarnation == incarnation && x.queued >= self.config.max_queued_bytes)
    }

    /// Applies the timeouts and retries due by `now`.
    pub fn tick(&mut self, now: Duration) {
        self.voter.tick(now);
        // Requests whose clients waited `request_timeout`, oldest first.
        while let Some(held) = self.held.get((self.release - self.held_base) as usize) {
            if held.replied || held.outcome.is_some() || now < held.ordered_at + self.config.request_timeout {
                break;
            }
            let limit_ms = self.config.request_timeout.as_millis() as u64;
            self.reply_error(self.release, AnswerError::TimedOut { limit_ms }, now);
            self.release_in_order(now);
        }
        for r in 0..self.replicas.len() {
            // A rebuild that makes no progress: the replica takes requests and answers none.
            let stalled = match &self.replicas[r].role {
                Role::Syncing(sync) => {
                    !self.replicas[r].expect.is_empty() && now >= sync.last_progress + self.config.request_timeout
                }
                _ => false,
            };
            if stalled {
                let behind = self.voter.next_seq().saturating_sub(self.sync_cursor(r));
                self.replica_failed(r, FaultKind::Late { behind }, now);
            }
            // A checkpoint source is not timed by the vote while it copies; by its reads here.
            let replica = &self.replicas[r];
            if replica.source_for.is_some()
                && replica.expect.iter().any(|e| matches!(e, Expect::Reads(_)))
                && now >= replica.last_answer + self.config.request_timeout
            {
                let behind = self.voter.next_seq().saturating_sub(self.voter.next_answer(r).unwrap_or(0));
                self.replica_failed(r, FaultKind::Late { behind }, now);
            }
            if let LinkState::RetryAt(at) = self.replicas[r].link {
                if now >= at && !self.replicas[r].removed {
                    let replica = &mut self.replicas[r];
                    replica.link = LinkState::Connecting;
                    self.actions.push_back(Action::Connect { replica: r, incarnation: replica.incarnation });
                }
            }
            if let Role::Out { retry_at: Some(at), .. } = self.replicas[r].role {
                if now >= at && self.replicas[r].incarnation > 0 {
                    self.restart_rebuild(r, now);
                }
            }
        }
        self.touch(now);
    }

    /// The earliest time at which [`tick`](Self::tick) may change something.
    pub fn next_deadline(&self) -> Option<Duration> {
        let mut best = self.voter.next_deadline();
        let mut consider = |t: Duration| best = Some(best.map_or(t, |b: Duration| b.min(t)));
        if let Some(held) = self.held.get((self.release - self.held_base) as usize) {
            if !held.replied && held.outcome.is_none() {
                consider(held.ordered_at + self.config.request_timeout);
            }
        }
        for replica in &self.replicas {
            match &replica.role {
                Role::Syncing(sync) if !replica.expect.is_empty() => {
                    consider(sync.last_progress + self.config.request_timeout)
                }
                Role::Out { retry_at: Some(at), .. } => consider(*at),
                _ => {}
            }
            if replica.source_for.is_some() && replica.expect.iter().any(|e| matches!(e, Expect::Reads(_))) {
                consider(replica.last_answer + self.config.request_timeout);
            }
            if let LinkState::RetryAt(at) = replica.link {
                consider(at);
            }
        }
        best
    }

    /// Stops serving: every request not answered yet gets an error, and so does every request
    /// ordered from now on.
    pub fn fence(&mut self, now: Duration) {
        self.fenced = true;
        for seq in self.release..self.voter.next_seq() {
            self.reply_error(seq, AnswerError::Fenced, now);
        }
        self.touch(now);
    }

    // ----- internals -----

    /// Brings everything up to date after an input: faults, decisions, answers, writes, the
    /// requests no longer needed.
    fn settle(&mut self, now: Duration) {
        self.absorb_voter(now);
        // Incarnations that waited for their predecessor's last vote to be decided.
        for r in 0..self.replicas.len() {
            if let Some(incarnation) = self.replicas[r].next_incarnation {
                if self.replicas[r].closed_at.is_none() || !self.voter.is_live(r) {
                    self.admit(r, incarnation, now);
                    self.absorb_voter(now);
                }
            }
        }
        self.release_in_order(now);
        for r in 0..self.replicas.len() {
            self.find_source(r, now);
        }
        for r in 0..self.replicas.len() {
            self.pump(r, now);
        }
        self.absorb_voter(now);
        self.release_in_order(now);
        self.drop_done();
    }

    /// Takes the voter's faults (the replicas go out) and decisions.
    fn absorb_voter(&mut self, now: Duration) {
        loop {
            let mut changed = false;
            for fault in self.voter.take_faults() {
                changed = true;
                let r = fault.replica;
                let incarnation = self.replicas[r].incarnation;
                self.actions.push_back(Action::Fault {
                    replica: r,
                    incarnation,
                    seq: fault.offset,
                    kind: fault.kind.clone(),
                });
                if let Some(seq) = self.replicas[r].closed_at {
                    self.mark_masked(seq);
                }
                self.mark_masked(fault.offset);
                self.take_out(r, format!("faulty: {}", fault.kind.name()), now);
            }
            for (r, seq) in self.voter.take_resyncs() {
                changed = true;
                self.resync(r, seq, now);
            }
            while let Some(decision) = self.voter.take_decision() {
                changed = true;
                self.decided(decision.seq, decision.outcome, decision.masked, now);
            }
            if !changed {
                break;
            }
        }
    }

    fn mark_masked(&mut self, seq: u64) {
        if let Some(held) = seq.checked_sub(self.held_base).and_then(|i| self.held.get_mut(i as usize)) {
            if held.replied && !held.masked {
                self.actions.push_back(Action::Masked { origin: held.origin, seq });
            }
            held.masked = true;
        }
    }

    /// The voter decided request `seq`.
    fn decided(&mut self, seq: u64, outcome: FrameOutcome, masked: bool, now: Duration) {
        if let FrameOutcome::Release { vote: Vote::Closed, .. } = outcome {
            // The service refused the request: it is not replayed (nor is the rest of its
            // unit, which the refusal voided).
            let voided = self.log.remove(seq);
            self.actions.push_back(Action::Note(Note::Refused { seq, voided }));
            // A server that dies on a request may have run others sent with it and lost their
            // answers: the quorum then closed on the first of those, and the one it died on
            // is still to come. Everything ordered so far goes out one request at a time, so
            // that the next close points at one request: a query of death costs at most the
            // answers lost with it once, not one request per restart.
            self.careful_until = self.careful_until.max(self.voter.next_seq());
        }
        let index = seq.checked_sub(self.held_base).map(|i| i as usize);
        if let (FrameOutcome::Release { replica, vote: Vote::Frame(_) }, Some(index)) = (outcome, index) {
            let n = self.replicas.len();
            let unchanged = self.held.get(index).and_then(|h| h.unchanged_if);
            let agreed = self.frames.get(index * n + replica).and_then(Option::as_ref).and_then(|f| f.bytes.as_deref());
            if unchanged.is_some() && unchanged == agreed {
                // It changed nothing: a replay need not run it (nor its unit). Taken out as it
                // is decided, before a replay may reach it (replays stop at the undecided).
                self.log.remove(seq);
            }
        }
        if let Some(held) = index.and_then(|i| self.held.get_mut(i)) {
            held.outcome = Some(outcome);
            held.masked |= masked;
        }
        if closes_settled(outcome) {
            for r in 0..self.replicas.len() {
                // Its vote may have slid on from where it closed (see `FrameVoter::closed`).
                if let Some(at) = self.replicas[r].closed_at {
                    self.replicas[r].closed_at = Some(self.voter.closed_vote(r).unwrap_or(at));
                }
                if self.replicas[r].closed_at == Some(seq) && self.replicas[r].is_voting() {
                    self.close_settled(r, outcome, now);
                }
            }
        }
    }

    /// Replica `r` closed its connection on a request that is now decided without blaming it:
    /// every replica refused it alike, or no quorum agreed on anything. It goes on after that
    /// request (reconnected), or, if its process ended, is out until its next incarnation is
    /// rebuilt. Not a fault either way.
    fn close_settled(&mut self, r: usize, outcome: FrameOutcome, now: Duration) {
        self.replicas[r].closed_at = None;
        if self.replicas[r].closed_gone {
            self.voter.leave(r, now);
            let why = match outcome {
                FrameOutcome::Undecidable => "its process ended on a request no quorum decided",
                _ => "its process ended on a request every replica refused",
            };
            self.take_out(r, why.into(), now);
        } else {
            self.voter.pause(r);
            let replica = &mut self.replicas[r];
            replica.link = LinkState::Connecting;
            self.actions.push_back(Action::Connect { replica: r, incarnation: replica.incarnation });
        }
    }

    /// Answers, in request order, every request that is decided.
    fn release_in_order(&mut self, now: Duration) {
        let n = self.replicas.len();
        while let Some(index) = self.release.checked_sub(self.held_base).map(|i| i as usize) {
            let Some(held) = self.held.get(index) else { break };
            if held.replied {
                self.release += 1;
                continue;
            }
            let Some(outcome) = held.outcome else { break };
            let (answer, shaped) = match outcome {
                FrameOutcome::Undecidable => (Answer::Error(AnswerError::Undecidable), None),
                FrameOutcome::Release { vote: Vote::Closed, .. } => (Answer::Error(AnswerError::ClosedByService), None),
                FrameOutcome::Release { replica, .. } => self.agreed_answer(index, replica),
            };
            let held = &mut self.held[index];
            held.replied = true;
            let (origin, masked, waited) = (held.origin, held.masked, now.saturating_sub(held.ordered_at));
            // The answer is out: the frames are no longer needed.
            for (r, frame) in self.frames.range_mut(index * n..(index + 1) * n).enumerate() {
                if let Some(f) = frame.take() {
                    let len = f.bytes.map_or(0, |b| b.len());
                    self.held_bytes -= len;
                    self.answer_bytes[r] -= len;
                }
            }
            self.actions.push_back(Action::Reply { origin, seq: self.release, answer, masked, waited, shaped });
            self.release += 1;
        }
    }

    /// A frame answering `r`'s next request, with the digest the vote compares under that
    /// request's shape (the reader digested it without knowing the request).
    fn shaped(&self, r: usize, mut frame: Frame) -> Frame {
        if frame.digest.error {
            return frame;
        }
        let held = self
            .voter
            .next_answer(r)
            .and_then(|seq| seq.checked_sub(self.held_base))
            .and_then(|i| self.held.get(i as usize));
        if let (Some(held), Some(bytes)) = (held, frame.bytes.as_deref()) {
            if held.shape != ReplyShape::Exact {
                if let Some(vote) = self.codec.shaped_digest(held.shape, bytes) {
                    frame.digest.vote = vote;
                }
            }
        }
        frame
    }

    /// The answer to release for held request `index`, whose quorum includes `replica`, and
    /// the digest the vote compared if its shape lets correct replicas differ.
    fn agreed_answer(&self, index: usize, replica: usize) -> (Answer, Option<Digest>) {
        let n = self.replicas.len();
        let frames: Vec<Option<&Frame>> = self.frames.range(index * n..(index + 1) * n).map(Option::as_ref).collect();
        let Some(chosen) = frames.get(replica).copied().flatten() else {
            // The voter released a frame the core does not have: never guess.
            return (Answer::Error(AnswerError::Undecidable), None);
        };
        let Some(bytes) = chosen.bytes.clone() else {
            let limit = self.config.max_frame_bytes as u64;
            return (Answer::Error(AnswerError::TooLarge { len: chosen.len, limit }), None);
        };
        if !chosen.digest.error {
            let shaped = (self.held[index].shape != ReplyShape::Exact && chosen.digest.vote != chosen.digest.exact)
                .then_some(chosen.digest.vote);
            return (Answer::Frame(bytes), shaped);
        }
        // An error: voted by class. Release a text a quorum produced byte for byte, or resh's
        // own text of that class.
        let agreeing: Vec<&Frame> =
            frames.iter().flatten().filter(|f| f.digest.vote == chosen.digest.vote).copied().collect();
        for candidate in &agreeing {
            let same = agreeing.iter().filter(|f| f.digest.exact == candidate.digest.exact).count();
            if same >= self.config.quorum {
                if let Some(bytes) = &candidate.bytes {
                    return (Answer::Frame(bytes.clone()), None);
                }
            }
        }
        (Answer::Frame(self.codec.canonical_error(&bytes)), None)
    }

    fn reply_error(&mut self, seq: u64, error: AnswerError, now: Duration) {
        let Some(held) = seq.checked_sub(self.held_base).and_then(|i| self.held.get_mut(i as usize)) else { return };
        if held.replied {
            return;
        }
        held.replied = true;
        let (origin, masked, waited) = (held.origin, held.masked, now.saturating_sub(held.ordered_at));
        self.actions.push_back(Action::Reply {
            origin,
            seq,
            answer: Answer::Error(error),
            masked,
            waited,
            shaped: None,
        });
    }

    /// Tells the replay log some replica answered `seq`, once per held request.
    fn mark_answered(&mut self, seq: u64) {
        let held = seq.checked_sub(self.held_base).and_then(|i| self.held.get_mut(i as usize));
        match held {
            Some(held) if held.marked_answered => {}
            Some(held) => {
                held.marked_answered = true;
                self.log.mark_answered(seq);
            }
            None => self.log.mark_answered(seq),
        }
    }

    fn store_frame(&mut self, seq: u64, r: usize, frame: Frame) {
        let n = self.replicas.len();
        let Some(index) = seq.checked_sub(self.held_base).map(|i| i as usize) else { return };
        if self.held.get(index).is_none_or(|h| h.replied) {
            return;
        }
        if let Some(slot) = self.frames.get_mut(index * n + r) {
            let len = frame.bytes.as_ref().map_or(0, |b| b.len());
            self.held_bytes += len;
            self.answer_bytes[r] += len;
            if let Some(old) = slot.replace(frame) {
                let len = old.bytes.map_or(0, |b| b.len());
                self.held_bytes -= len;
                self.answer_bytes[r] -= len;
            }
        }
    }

    /// Forgets the requests at the front that are answered and no voting replica still owes.
    fn drop_done(&mut self) {
        let n = self.replicas.len();
        // Kept: what is not answered yet, what the vote still waits for, and, for every voting
        // replica, what it has not been sent or not answered yet (a replica that joined after
        // requests were decided is not expected to answer those, but must still execute them,
        // and one that closed its connection is sent them again when it reconnects).
        let owed = (0..self.replicas.len())
            .filter(|&r| self.replicas[r].is_voting())
            .map(|r| self.replicas[r].sent.min(self.voter.next_answer(r).unwrap_or(u64::MAX)))
            .min()
            .unwrap_or(u64::MAX);
        let keep_from = self.voter.base().min(self.release).min(owed);
        while self.held_base < keep_from {
            let Some(held) = self.held.pop_front() else { break };
            self.held_bytes -= held.len;
            for (r, frame) in self.frames.drain(..n.min(self.frames.len())).enumerate() {
                if let Some(frame) = frame {
                    let len = frame.bytes.map_or(0, |b| b.len());
                    self.held_bytes -= len;
                    self.answer_bytes[r] -= len;
                }
            }
            self.held_base += 1;
        }
    }

    /// Hands the shell what replica `r` may be sent now.
    fn pump(&mut self, r: usize, now: Duration) {
        if self.replicas[r].link != LinkState::Up || self.fenced {
            return;
        }
        if let Some((target, false)) = self.replicas[r].source_for {
            // A source is first brought up to the checkpoint's point, then sent nothing but
            // the checkpoint's reads (from the target's pump) until they are all out.
            let at = match &self.replicas[target].role {
                Role::Syncing(sync) => match &sync.phase {
                    SyncPhase::Restore { at, .. } => Some(*at),
                    _ => None,
                },
                _ => None,
            };
            if let Some(at) = at {
                self.pump_requests_to(r, at);
            }
            return;
        }
        match &self.replicas[r].role {
            Role::Voting => self.pump_requests(r),
            Role::Syncing(_) => self.pump_sync(r, now),
            Role::Out { .. } => {}
        }
    }

    /// Writes ordered requests to voting replica `r`, as far as the window and its queue allow.
    fn pump_requests(&mut self, r: usize) {
        self.pump_requests_to(r, u64::MAX);
    }

    /// Like [`pump_requests`](Self::pump_requests), but never beyond request `until`.
    fn pump_requests_to(&mut self, r: usize, until: u64) {
        let window_base = self
            .replicas
            .iter()
            .enumerate()
            .filter(|(_, x)| x.is_voting() && x.source_for.is_none() && x.closed_at.is_none())
            .filter_map(|(i, _)| self.voter.next_answer(i))
            .min()
            .unwrap_or(self.voter.next_seq());
        let limit =
            self.voter.next_seq().min(window_base.saturating_add(self.config.max_outstanding as u64)).min(until);
        let incarnation = self.replicas[r].incarnation;
        while self.replicas[r].sent < limit && self.replicas[r].queued < self.config.max_queued_bytes {
            let from = self.replicas[r].sent;
            // One at a time, and only once it answered the one before.
            let careful = from < self.careful_until;
            if careful && self.voter.next_answer(r).is_some_and(|next| next < from) {
                break;
            }
            let Some(first) = from.checked_sub(self.held_base).and_then(|i| self.held.get(i as usize)) else { break };
            // A run of requests of one batch is one slice of the batch's buffer: no copy.
            let (batch, start) = (first.batch.clone(), first.start);
            let mut end = first.start + first.len;
            let mut count = 1;
            while !careful && from + count < limit && end - start < MAX_WRITE {
                match self.held.get((from + count - self.held_base) as usize) {
                    Some(next) if next.batch.as_ptr() == batch.as_ptr() && next.start == end => {
                        end += next.len;
                        count += 1;
                    }
                    _ => break,
                }
            }
            let replica = &mut self.replicas[r];
            replica.sent += count;
            replica.queued += end - start;
            push_expect(&mut replica.expect, Expect::Votes(count));
            self.voter.sent_to(r, replica.sent);
            self.actions.push_back(Action::Write { replica: r, incarnation, bytes: batch.slice(start..end) });
        }
    }

    /// Every request below this one is decided. A replay never goes beyond it: a request not
    /// yet decided may still turn out to be one the service refuses (and closes or dies on);
    /// a replica being rebuilt gets those as a voter, with everyone else.
    fn decided_prefix(&self) -> u64 {
        let undecided = self.held.iter().position(|h| h.outcome.is_none());
        self.held_base + undecided.unwrap_or(self.held.len()) as u64
    }

    /// Sends the next reads of replica `r`'s checkpoint to its sources, once every source
    /// stands at the checkpoint's point and the target keeps up with the restores.
    fn issue_reads(&mut self, r: usize, now: Duration) {
        let Role::Syncing(sync) = &self.replicas[r].role else { return };
        let SyncPhase::Restore { sources, at, .. } = &sync.phase else { return };
        let sources = sources.clone();
        let at = *at;
        let busy = |x: &Replica| x.queued >= self.config.max_queued_bytes;
        let ready = sources.iter().all(|&s| {
            let x = &self.replicas[s];
            x.sent >= at && x.link == LinkState::Up && !busy(x) && x.source_for == Some((r, false))
        });
        if !ready || busy(&self.replicas[r]) {
            return;
        }
        let Role::Syncing(sync) = &mut self.replicas[r].role else { return };
        let SyncPhase::Restore { checkpoint, .. } = &mut sync.phase else { return };
        match checkpoint.next_reads() {
            Reads::Batch(reads) => {
                let mut bytes = BytesMut::with_capacity(reads.iter().map(Bytes::len).sum());
                for read in &reads {
                    bytes.extend_from_slice(read);
                }
                let bytes = bytes.freeze();
                for s in sources {
                    let source = &mut self.replicas[s];
                    source.queued += bytes.len();
                    push_expect(&mut source.expect, Expect::Reads(reads.len() as u64));
                    let incarnation = source.incarnation;
                    self.actions.push_back(Action::Write { replica: s, incarnation, bytes: bytes.clone() });
                }
            }
            Reads::Wait => {}
            Reads::Done => {
                // Every read is out: the sources' ordered streams go on behind them.
                for s in sources {
                    if self.replicas[s].source_for == Some((r, false)) {
                        self.replicas[s].source_for = Some((r, true));
                        if !self.replicas[s].expect.iter().any(|e| matches!(e, Expect::Reads(_))) {
                            // Every read was answered already: it is done copying.
                            self.end_source(s, now);
                        }
                    }
                }
            }
        }
    }

    /// Feeds replica `r`, which is being rebuilt.
    fn pump_sync(&mut self, r: usize, now: Duration) {
        self.issue_reads(r, now);
        let incarnation = self.replicas[r].incarnation;
        // Not into a unit some of which is undecided: its refusal, or its changing nothing,
        // would take all of it out of the log, after its first requests were replayed.
        let decided = self.unit_start(self.decided_prefix());
        let join_point = self.join_point();
        let Self { replicas, actions, codec, log, config, .. } = self;
        let replica = &mut replicas[r];
        let Role::Syncing(sync) = &mut replica.role else { return };
        let join_at = match &mut sync.phase {
            SyncPhase::Connecting | SyncPhase::AwaitSource => return,
            SyncPhase::Restore { checkpoint, reset_sent, at, .. } => {
                if !*reset_sent {
                    *reset_sent = true;
                    if let Some(reset) = codec.reset_request() {
                        replica.queued += reset.len();
                        push_expect(&mut replica.expect, Expect::Discard { left: 1, check: true });
                        actions.push_back(Action::Write { replica: r, incarnation, bytes: reset });
                    }
                }
                let restores = checkpoint.take_restores();
                if !restores.is_empty() {
                    let mut bytes = BytesMut::with_capacity(restores.iter().map(Bytes::len).sum());
                    for restore in &restores {
                        bytes.extend_from_slice(restore);
                    }
                    replica.queued += bytes.len();
                    push_expect(&mut replica.expect, Expect::Discard { left: restores.len() as u64, check: true });
                    actions.push_back(Action::Write { replica: r, incarnation, bytes: bytes.freeze() });
                }
                if !checkpoint.is_complete() {
                    return;
                }
                // The checkpoint is the state at `at`: the log goes on from there.
                let at = *at;
                sync.cursor = at;
                sync.phase = SyncPhase::Replay;
                let how = format!("state copied; replaying the log from request {at}");
                actions.push_back(Action::Note(Note::Rebuilding { replica: r, how }));
                None
            }
            SyncPhase::Replay => None,
        };
        let mut join_at = join_at;
        if let SyncPhase::Replay = sync.phase {
            loop {
                // Caught up with what the core still holds, and done with what it replayed
                // (a slow replayed request would otherwise hold back its first votes): it joins
                // the vote there. While it works through its replay the core may let go of
                // requests; then it replays on from the log.
                if sync.cursor >= join_point {
                    if !replica.expect.iter().any(|e| matches!(e, Expect::Replay(_) | Expect::Discard { .. })) {
                        join_at = Some(sync.cursor);
                    }
                    break;
                }
                if replica.queued >= config.max_queued_bytes || sync.cursor >= decided {
                    break;
                }
                let Some(chunk) = log.chunk(sync.cursor, decided, MAX_WRITE) else {
                    let why = format!("the replay log no longer reaches back to request {}", sync.cursor);
                    self.rebuild_failed(r, &why, now);
                    return;
                };
                // A request no replica ever answered goes out once the replica answered all
                // it was replayed before: if it dies on it, its death points at that one.
                if chunk.alone && !replica.replay_seqs.is_empty() {
                    break;
                }
                sync.cursor = chunk.next;
                if !chunk.seqs.is_empty() {
                    replica.queued += chunk.bytes.len();
                    push_expect(&mut replica.expect, Expect::Replay(chunk.seqs.len() as u64));
                    replica.replay_seqs.extend(chunk.seqs);
                    actions.push_back(Action::Write { replica: r, incarnation, bytes: chunk.bytes });
                }
            }
        }
        if let Some(seq) = join_at {
            self.join(r, seq, now);
            self.pump(r, now);
        }
    }

    /// The earliest request a replica holding the state before it may join the vote at: the
    /// first held request that is undecided or that some replica answered. Decided requests
    /// nobody ever answered (a batch every replica lost) are replayed, not sent as a voter: a
    /// replayed request no replica answered goes out alone, and one the rebuilt replica dies
    /// on leaves the log (the query of death is found). Sent to it as a voter, it would die
    /// on it again with every rebuild.
    fn join_point(&self) -> u64 {
        self.held
            .iter()
            .position(|h| h.outcome.is_none() || h.marked_answered)
            .map_or(self.held_base + self.held.len() as u64, |i| self.held_base + i as u64)
    }

    /// Source `source` answered a checkpoint read: once every source answered it, the answers
    /// must agree (a checkpoint is voted like any answer) and go to the checkpoint.
    fn checkpoint_answer(&mut self, source: usize, frame: Frame, now: Duration) {
        let Some((target, _)) = self.replicas[source].source_for else { return };
        let names: Vec<Arc<str>> = self.replicas.iter().map(|x| Arc::clone(&x.name)).collect();
        let mut failure = None;
        if let Role::Syncing(sync) = &mut self.replicas[target].role {
            if let SyncPhase::Restore { sources, checkpoint, answers, .. } = &mut sync.phase {
                match (sources.iter().position(|&s| s == source), frame.bytes) {
                    (Some(k), Some(bytes)) => answers[k].push_back(bytes),
                    (_, None) => {
                        failure = Some(format!("a value of {} bytes is larger than ordered.max_frame_bytes", frame.len))
                    }
                    (None, _) => {}
                }
                while failure.is_none() && answers.iter().all(|a| !a.is_empty()) {
                    let round: Vec<Bytes> = answers.iter_mut().filter_map(VecDeque::pop_front).collect();
                    let keys: Vec<Bytes> = round.iter().map(|a| checkpoint.compare_key(a)).collect();
                    if keys.iter().any(|k| *k != keys[0]) {
                        let names: Vec<&str> = sources.iter().map(|s| &*names[*s]).collect();
                        failure = Some(format!(
                            "{} answered a read of the copy differently: their states differ",
                            names.join(" and ")
                        ));
                    } else if let Err(e) = checkpoint.answer(&round[0]) {
                        failure = Some(format!("copying the state failed: {e}"));
                    }
                }
            }
        }
        let reads_done = self.replicas[source].source_for.is_some_and(|(_, done)| done);
        if reads_done && !self.replicas[source].expect.iter().any(|e| matches!(e, Expect::Reads(_))) {
            // The source answered its last read: it answers ordered requests again.
            self.end_source(source, now);
        }
        if let Some(why) = failure {
            self.rebuild_failed(target, &why, now);
        }
    }

    /// Replica `r` is no longer a checkpoint source.
    fn end_source(&mut self, r: usize, now: Duration) {
        if self.replicas[r].source_for.take().is_some() && self.voter.is_live(r) {
            self.voter.resume(r, now);
        }
    }

    /// Begins rebuilding replica `r` (connected, new incarnation).
    fn start_rebuild(&mut self, r: usize, now: Duration) {
        let Role::Syncing(_) = &self.replicas[r].role else { return };
        let preloaded = self.replicas[r].preloaded.take() == Some(self.replicas[r].incarnation);
        let replica = &self.replicas[r];
        if preloaded && self.held_base == self.log.covers_from() {
            // It holds the state at the first request (nothing was let go of since).
            let first = self.held_base;
            self.join(r, first, now);
            return;
        }
        let force = replica.must_reset;
        if !force && !self.log.logged_anything() {
            // Nothing has changed any replica's state yet: it is as the others are, and was
            // before every request still held (all reads). It votes on those it can: if
            // another replica fails meanwhile, its votes keep a quorum for them.
            let first = self.join_point();
            self.join(r, first, now);
            return;
        }
        // A replica whose state may hold a request the others' do not is emptied first; then
        // the log from the start rebuilds it as it does a fresh process (no sources needed).
        let reset = self.codec.reset_request().filter(|_| force && self.log.covers_from() == 0);
        let replay = reset.is_some() || (!force && !replica.address && self.log.covers_from() == 0);
        let phase = if replay {
            let how = if reset.is_some() {
                "emptying it, then replaying the log from the start"
            } else {
                "replaying the log from the start"
            };
            self.actions.push_back(Action::Note(Note::Rebuilding { replica: r, how: how.into() }));
            if let Some(reset) = reset {
                let replica = &mut self.replicas[r];
                replica.queued += reset.len();
                push_expect(&mut replica.expect, Expect::Discard { left: 1, check: true });
                let incarnation = replica.incarnation;
                self.actions.push_back(Action::Write { replica: r, incarnation, bytes: reset });
            }
            SyncPhase::Replay
        } else if self.codec.checkpoint().is_some() {
            SyncPhase::AwaitSource
        } else {
            let why = "cannot rebuild it: the replay log no longer reaches back to the start and the protocol cannot copy state";
            self.take_out_retry(r, why.into(), now);
            return;
        };
        if let Role::Syncing(sync) = &mut self.replicas[r].role {
            sync.phase = phase;
            sync.cursor = 0;
            sync.last_progress = now;
        }
        self.find_source(r, now);
    }

    /// Starts a checkpoint for replica `target` if it waits for one and a quorum of voting
    /// replicas is free to be its sources. One source would do for the bytes, but a faulty one
    /// (a version with a bug, a flipped bit) would plant its errors in the target, and the two
    /// could then outvote the truth: the copy is voted like any answer.
    fn find_source(&mut self, target: usize, now: Duration) {
        let waiting =
            matches!(&self.replicas[target].role, Role::Syncing(s) if matches!(s.phase, SyncPhase::AwaitSource));
        if !waiting || self.replicas[target].link != LinkState::Up {
            return;
        }
        let mut eligible: Vec<usize> =
            (0..self.replicas.len()).filter(|&s| s != target && self.free_voter(s)).collect();
        if eligible.len() < self.config.quorum {
            // Too few voting replicas to vouch for a copy: wait. Copying one replica's state
            // unverified could make a faulty version's state the quorum's (fail-wrong); with
            // fewer voters than the quorum the service is stopped anyway (fail-stop).
            return;
        }
        // The ones furthest along, so little has to be sent before the copy starts.
        eligible.sort_by_key(|&s| std::cmp::Reverse(self.replicas[s].sent));
        eligible.truncate(self.config.quorum);
        let Some(checkpoint) = self.codec.checkpoint() else { return };
        let at = self.unit_boundary(eligible.iter().map(|&s| self.replicas[s].sent).max().unwrap_or(0));
        for &s in &eligible {
            self.replicas[s].source_for = Some((target, false));
            self.voter.pause(s);
        }
        let names: Vec<&str> = eligible.iter().map(|s| &*self.replicas[*s].name).collect();
        let how =
            format!("copying the state of {} at request {at} to {}", names.join(" and "), self.replicas[target].name);
        let answers = vec![VecDeque::new(); eligible.len()];
        if let Role::Syncing(sync) = &mut self.replicas[target].role {
            sync.phase = SyncPhase::Restore { sources: eligible, at, checkpoint, reset_sent: false, answers };
            sync.last_progress = now;
        }
        self.actions.push_back(Action::Note(Note::Rebuilding { replica: target, how }));
    }

    /// The first request of the unit `seq` is inside of, or `seq` if it is in none.
    fn unit_start(&self, seq: u64) -> u64 {
        self.units.iter().find(|&&(first, end)| first < seq && seq < end).map_or(seq, |&(first, _)| first)
    }

    /// The first point at or after `seq` that is not inside a unit: a checkpoint's reads sent
    /// inside a transaction would be queued in it.
    fn unit_boundary(&self, seq: u64) -> u64 {
        self.units.iter().find(|&&(first, end)| first < seq && seq < end).map_or(seq, |&(_, end)| end)
    }

    /// Replica `r` joins the vote at request `seq`.
    fn join(&mut self, r: usize, seq: u64, now: Duration) {
        let rebuilt = self.log.logged_anything();
        let replica = &mut self.replicas[r];
        replica.role = Role::Voting;
        replica.sent = seq;
        replica.closed_at = None;
        replica.must_reset = false;
        // A reload's higher quorum grows with the replicas that join (see `reconfigure`), before
        // the joining one's first vote counts. The requests still open are weighed with it
        // before the joiner is expected on them: one the voting replicas already split on may
        // turn undecidable, which takes a fault while a replica is being added (two out at once,
        // beyond what a majority masks). Raising it after the join would weigh them with the
        // joiner expected, keeping such a request decidable; not done, as the simulation has
        // only checked this order.
        if !self.voter.is_live(r) {
            self.step_quorum(self.voter.live_count() + 1, now);
        }
        self.voter.join_at(r, seq, now);
        self.voter.sent_to(r, seq);
        self.actions.push_back(Action::Note(Note::Joined { replica: r, seq, rebuilt }));
        // Others may have waited for it: a source, say.
        for t in 0..self.replicas.len() {
            self.find_source(t, now);
        }
    }

    /// Replica `r` is faulty: out of the vote (the voter reports voting replicas' faults).
    fn replica_failed(&mut self, r: usize, kind: FaultKind, now: Duration) {
        if self.voter.is_live(r) {
            self.voter.exclude_for(r, kind, now);
            return; // settle() reports it and takes it out
        }
        if matches!(self.replicas[r].role, Role::Out { .. }) {
            return;
        }
        let seq = self.sync_cursor(r);
        let incarnation = self.replicas[r].incarnation;
        self.actions.push_back(Action::Fault { replica: r, incarnation, seq, kind: kind.clone() });
        self.take_out(r, format!("faulty: {}", kind.name()), now);
    }

    fn sync_cursor(&self, r: usize) -> u64 {
        match &self.replicas[r].role {
            Role::Syncing(sync) => sync.cursor,
            _ => self.voter.next_answer(r).unwrap_or(0),
        }
    }

    /// A rebuild could not go on for a reason that is not the replica's: try again later.
    fn rebuild_failed(&mut self, r: usize, why: &str, now: Duration) {
        self.actions.push_back(Action::Note(Note::RebuildFailed { replica: r, why: why.to_string() }));
        self.take_out_retry(r, format!("rebuild failed: {why}"), now);
    }

    fn take_out_retry(&mut self, r: usize, why: String, now: Duration) {
        self.take_out(r, why, now);
        if let Role::Out { retry_at, .. } = &mut self.replicas[r].role {
            *retry_at = Some(now + self.config.retry_delay);
        }
    }

    /// Takes replica `r` out of everything it takes part in, and drops its connection.
    fn take_out(&mut self, r: usize, why: String, now: Duration) {
        if self.voter.is_live(r) {
            self.voter.leave(r, now);
        }
        self.abandon(r, now);
        let replica = &mut self.replicas[r];
        replica.role = Role::Out { why, retry_at: None };
        replica.expect.clear();
        replica.replay_seqs.clear();
        replica.closed_at = None;
        if replica.link != LinkState::Down {
            replica.link = LinkState::Down;
            replica.queued = 0;
            self.actions.push_back(Action::Disconnect { replica: r });
        }
    }

    /// Ends whatever checkpoint replica `r` takes part in, as source or target.
    fn abandon(&mut self, r: usize, now: Duration) {
        if let Some((target, _)) = self.replicas[r].source_for {
            // A source is lost: the copy cannot be voted any more. The target needs new
            // sources (and a new reset: it got part of a copy).
            self.release_sources(target, now);
            if let Role::Syncing(sync) = &mut self.replicas[target].role {
                if matches!(sync.phase, SyncPhase::Restore { .. }) {
                    sync.phase = SyncPhase::AwaitSource;
                    // What it was sent of the copy is still answered: discarded unchecked.
                    for e in self.replicas[target].expect.iter_mut() {
                        if let Expect::Discard { check, .. } = e {
                            *check = false;
                        }
                    }
                }
            }
        }
        self.release_sources(r, now);
    }

    /// The sources of `target`'s checkpoint stop copying; reads already sent are still
    /// answered and discarded.
    fn release_sources(&mut self, target: usize, now: Duration) {
        let sources = match &self.replicas[target].role {
            Role::Syncing(sync) => match &sync.phase {
                SyncPhase::Restore { sources, .. } => sources.clone(),
                _ => return,
            },
            _ => return,
        };
        for s in sources {
            if self.replicas[s].source_for.is_some_and(|(t, _)| t == target) {
                for e in self.replicas[s].expect.iter_mut() {
                    if let Expect::Reads(n) = *e {
                        *e = Expect::Discard { left: n, check: false };
                    }
                }
                self.replicas[s].source_for = None;
                if self.voter.is_live(s) {
                    self.voter.resume(s, now);
                }
            }
        }
    }

    /// Replica `r` answered request `seq`, which a quorum's closed connections decided as
    /// refused though each of them may have closed on a later request (a crash loses the
    /// answers to a whole pipelined batch): it did nothing wrong, but its state may hold `seq`
    /// and the others' may not. It is emptied and rebuilt: by the log from the start while the
    /// log reaches back there, else by a checkpoint of the others; a replay onto what it holds
    /// would apply the log twice.
    fn resync(&mut self, r: usize, seq: u64, now: Duration) {
        let how = format!(
            "it ran request {seq}, which the others died on without telling whether they ran it: rebuilding it from the same history as theirs (no fault)"
        );
        self.actions.push_back(Action::Note(Note::Rebuilding { replica: r, how }));
        self.abandon(r, now);
        self.replicas[r].must_reset = true;
        self.restart_rebuild(r, now);
    }

    /// Starts a failed rebuild of replica `r`'s current incarnation again.
    fn restart_rebuild(&mut self, r: usize, now: Duration) {
        let replica = &mut self.replicas[r];
        replica.expect.clear();
        replica.replay_seqs.clear();
        replica.role =
            Role::Syncing(Box::new(Sync { phase: SyncPhase::Connecting, cursor: 0, last_progress: now, answered: 0 }));
        replica.link = LinkState::Connecting;
        replica.queued = 0;
        self.actions.push_back(Action::Connect { replica: r, incarnation: replica.incarnation });
    }
}

/// Whether a replica that closed on a request with this outcome is free of blame.
fn closes_settled(outcome: FrameOutcome) -> bool {
    matches!(outcome, FrameOutcome::Undecidable | FrameOutcome::Release { vote: Vote::Closed, .. })
}

/// Appends an expectation, merging it into the last one when they are alike.
fn push_expect(queue: &mut VecDeque<Expect>, expect: Expect) {
    match (queue.back_mut(), expect) {
        (Some(Expect::Votes(n)), Expect::Votes(m)) => *n += m,
        (Some(Expect::Reads(n)), Expect::Reads(m)) => *n += m,
        (Some(Expect::Replay(n)), Expect::Replay(m)) => *n += m,
        (Some(Expect::Discard { left, check }), Expect::Discard { left: m, check: c }) if *check == c => *left += m,
        _ => queue.push_back(expect),
    }
}
