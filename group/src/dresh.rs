//! The D-RESH state machine of one host: pure, driven only by what the group delivers (and
//! by what the local ordered core decided), so that every host reaches the same decisions at
//! the same point of the order.
//!
//! - **One sequence.** Each host batches its local sessions' requests (with their origin:
//!   host, session, request) into [`Wire::Requests`] and multicasts them; every host numbers
//!   the requests it is delivered, in the delivered order, and hands them to its ordered core
//!   ([`Action::Order`]). All hosts' replicas execute one sequence; a request of another host
//!   is executed and voted here and answered by nobody.
//! - **No acknowledged write is lost.** CPG delivers in agreed order but not safely: a message
//!   delivered at some hosts may never reach the others (it dies with its sender, or a
//!   partition keeps it on one side). So every host multicasts the digest of its voted answer
//!   to each request ([`Wire::Answers`], each with the chain of the stream after the request,
//!   so that digests of two numberings are never compared), and the host holding the client
//!   releases the answer ([`Action::Release`]) only once a majority of the *expected* hosts,
//!   itself included, gave the same digest: they all hold the request, and every later view
//!   with quorum holds one of them. The same digests check the hosts against each other, on
//!   every request, whichever host's client sent it: a host whose answer differs from those of
//!   a majority of the other members leaves ([`Action::Leave`]).
//! - **A failed host looks fail-stop.** Requests a host multicast before it left were delivered
//!   to the survivors alike (or to none), so they execute them alike; its sessions are gone with
//!   it, and its clients reconnect to another host.
//! - **No quorum, no service.** In a view without more than half of the expected hosts, a host
//!   stops serving at once ([`Action::Fence`]) and drops the answers it held: the other side may
//!   be serving. It joins again once a view with quorum is installed.
//! - **In sync before serving.** A host that starts, or comes back from a view without quorum,
//!   multicasts [`Wire::Join`] (with the [`Point`] its replicas' state stands at, if known) in
//!   every view with quorum until it is in sync. Every member that numbers the stream answers a
//!   delivered join with [`Wire::Sync`]: where the stream stood *when that join was delivered*
//!   (the same point at every host), and whether it holds that state (it serves) or still waits
//!   for its own. The joiner numbers what it is delivered after its join from there; it needs
//!   the state at that point first ([`Action::NeedState`], from a member that holds it; one
//!   that still waits becomes a source when its [`Wire::Ready`] is delivered), unless its
//!   replicas stand there already. Every host begins to serve at the delivery of its own
//!   `Ready`, a point of the stream every host sees. A host waiting for a state that no member
//!   left can give joins again.
//! - **A new start when nobody numbers.** A member that does not number answers a join with
//!   [`Wire::Waiting`] and its state. If every member answered one join delivered in this view
//!   with `Waiting`, nobody numbers the stream: every joining member starts it at the point the
//!   last answer was delivered, from the most advanced state among the answers (by *epoch*,
//!   then number: the epoch counts views with quorum installed while numbering, so a fenced
//!   minority's history never wins over the majority's). Only answers count: what a join says
//!   was true when it was *sent*, and it may be delivered after its sender began to serve.
//!
//! Tested by `tests/dresh_properties.rs`: hosts over [`crate::sim`] with a model of the
//! ordered core, under generated schedules of requests, deliveries (to all, the sender, or a
//! part of a component), votes, crashes of a minority, restarts, partitions and heals, over
//! three and five hosts; and scenarios for the two rules the schedules rarely reach (a request
//! only a minority holds at a split; a fenced minority's state against the majority's).
//!
//! Not yet used by `resh run`: the shell (sessions, the group, the ordered core, the state
//! transfer between hosts) is the next step of multi-host mode.
//!
//! Wire format: one tag byte, then big-endian fields (see [`Wire`]). A message that cannot be
//! decoded is a peer's fault: it is counted and ignored, never a panic.
use std::collections::{BTreeMap, VecDeque};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{Delivery, HostId, View};

/// A digest of a voted answer (blake3 in the shell; opaque here).
pub type Digest = [u8; 32];

/// Where a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    /// The host holding the client's connection.
    pub host: HostId,
    /// The session on that host.
    pub session: u64,
    /// The request's number in that session.
    pub request: u64,
}

/// A message between the hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wire {
    /// Requests of the sender's sessions: (session, request, bytes).
    Requests(Vec<(u64, u64, Bytes)>),
    /// The digests of the sender's voted answers: (sequence number, digest).
    /// Each with the chain digest of the stream after that request: digests of two numberings
    /// of the stream (a fenced minority's, from before it rejoined) are never compared.
    Answers(Vec<(u64, Digest, Digest)>),
    /// The sender is not in sync and asks to be.
    Join {
        /// Tells its joins apart (one per view it joins in).
        nonce: u64,
        /// Where its replicas' state stands, if it knows (empty replicas: [`Point::START`]).
        have: Option<Point>,
    },
    /// A member that does not serve answers a delivered [`Wire::Join`].
    Waiting {
        /// Who joined.
        joiner: HostId,
        /// Its join's nonce.
        nonce: u64,
        /// Where the answering member's state stands, if it knows.
        have: Option<Point>,
    },
    /// A member that numbers the stream answers a delivered [`Wire::Join`].
    Sync {
        /// Who joined.
        joiner: HostId,
        /// Its join's nonce.
        nonce: u64,
        /// Where the stream stood when the join was delivered.
        point: Point,
        /// The answering member serves: it holds the state and can give it (one still
        /// waiting for its own state transfer does not).
        holds: bool,
    },
    /// The sender's state transfer is done: it serves from the delivery of this message on.
    Ready {
        /// Tells the sender's transfers apart.
        nonce: u64,
    },
}

const TAG_REQUESTS: u8 = 1;
const TAG_ANSWERS: u8 = 2;
const TAG_JOIN: u8 = 3;
const TAG_SYNC: u8 = 4;
const TAG_WAITING: u8 = 5;
const TAG_READY: u8 = 6;

/// Why a message could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed D-RESH message: {0}")]
pub struct WireError(&'static str);

impl Wire {
    /// The message's bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            Wire::Requests(requests) => {
                out.put_u8(TAG_REQUESTS);
                out.put_u32(requests.len() as u32);
                for (session, request, bytes) in requests {
                    out.put_u64(*session);
                    out.put_u64(*request);
                    out.put_u32(bytes.len() as u32);
                    out.put_slice(bytes);
                }
            }
            Wire::Answers(answers) => {
                out.put_u8(TAG_ANSWERS);
                out.put_u32(answers.len() as u32);
                for (seq, chain, digest) in answers {
                    out.put_u64(*seq);
                    out.put_slice(chain);
                    out.put_slice(digest);
                }
            }
            Wire::Join { nonce, have } => {
                out.put_u8(TAG_JOIN);
                out.put_u64(*nonce);
                put_have(&mut out, have);
            }
            Wire::Waiting { joiner, nonce, have } => {
                out.put_u8(TAG_WAITING);
                out.put_u32(*joiner);
                out.put_u64(*nonce);
                put_have(&mut out, have);
            }
            Wire::Sync { joiner, nonce, point, holds } => {
                out.put_u8(TAG_SYNC);
                out.put_u32(*joiner);
                out.put_u64(*nonce);
                put_point(&mut out, point);
                out.put_u8(u8::from(*holds));
            }
            Wire::Ready { nonce } => {
                out.put_u8(TAG_READY);
                out.put_u64(*nonce);
            }
        }
        out.freeze()
    }

    /// Decodes a message.
    pub fn decode(mut bytes: Bytes) -> Result<Wire, WireError> {
        fn need(b: &Bytes, n: usize) -> Result<(), WireError> {
            if b.remaining() < n {
                Err(WireError("truncated"))
            } else {
                Ok(())
            }
        }
        fn get_digest(b: &mut Bytes) -> Result<Digest, WireError> {
            need(b, 32)?;
            let mut digest = [0u8; 32];
            b.copy_to_slice(&mut digest);
            Ok(digest)
        }
        /// A count of entries of at least `each` bytes: one the message cannot hold is a lie
        /// (refused before anything is allocated for it).
        fn get_count(b: &mut Bytes, each: usize) -> Result<usize, WireError> {
            need(b, 4)?;
            let count = b.get_u32() as usize;
            if count > b.remaining() / each {
                return Err(WireError("count larger than the message"));
            }
            Ok(count)
        }
        fn get_point(b: &mut Bytes) -> Result<Point, WireError> {
            need(b, 16)?;
            let (epoch, seq) = (b.get_u64(), b.get_u64());
            Ok(Point { epoch, seq, chain: get_digest(b)? })
        }
        fn get_have(b: &mut Bytes) -> Result<Option<Point>, WireError> {
            need(b, 1)?;
            match b.get_u8() {
                0 => Ok(None),
                1 => Ok(Some(get_point(b)?)),
                _ => Err(WireError("bad state flag")),
            }
        }
        need(&bytes, 1)?;
        let wire = match bytes.get_u8() {
            TAG_REQUESTS => {
                let count = get_count(&mut bytes, 20)?;
                let mut requests = Vec::with_capacity(count);
                for _ in 0..count {
                    need(&bytes, 20)?;
                    let (session, request, len) = (bytes.get_u64(), bytes.get_u64(), bytes.get_u32() as usize);
                    need(&bytes, len)?;
                    requests.push((session, request, bytes.split_to(len)));
                }
                Wire::Requests(requests)
            }
            TAG_ANSWERS => {
                let count = get_count(&mut bytes, 72)?;
                let mut answers = Vec::with_capacity(count);
                for _ in 0..count {
                    need(&bytes, 8)?;
                    let seq = bytes.get_u64();
                    answers.push((seq, get_digest(&mut bytes)?, get_digest(&mut bytes)?));
                }
                Wire::Answers(answers)
            }
            TAG_JOIN => {
                need(&bytes, 9)?;
                let nonce = bytes.get_u64();
                Wire::Join { nonce, have: get_have(&mut bytes)? }
            }
            TAG_WAITING => {
                need(&bytes, 12)?;
                let (joiner, nonce) = (bytes.get_u32(), bytes.get_u64());
                Wire::Waiting { joiner, nonce, have: get_have(&mut bytes)? }
            }
            TAG_SYNC => {
                need(&bytes, 12)?;
                let (joiner, nonce) = (bytes.get_u32(), bytes.get_u64());
                let point = get_point(&mut bytes)?;
                need(&bytes, 1)?;
                let holds = match bytes.get_u8() {
                    0 => false,
                    1 => true,
                    _ => return Err(WireError("bad holds flag")),
                };
                Wire::Sync { joiner, nonce, point, holds }
            }
            TAG_READY => {
                need(&bytes, 8)?;
                Wire::Ready { nonce: bytes.get_u64() }
            }
            _ => return Err(WireError("unknown tag")),
        };
        if bytes.has_remaining() {
            return Err(WireError("trailing bytes"));
        }
        Ok(wire)
    }
}

/// Whether a message's bytes are a batch of requests ([`Wire::Requests`]), without decoding it
/// (the shell times its own batches from multicast to delivery).
pub fn is_requests(payload: &[u8]) -> bool {
    payload.first() == Some(&TAG_REQUESTS)
}

fn put_have(out: &mut BytesMut, have: &Option<Point>) {
    match have {
        Some(point) => {
            out.put_u8(1);
            put_point(out, point);
        }
        None => out.put_u8(0),
    }
}

fn put_point(out: &mut BytesMut, point: &Point) {
    out.put_u64(point.epoch);
    out.put_u64(point.seq);
    out.put_slice(&point.chain);
}

/// What the shell does for the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Multicast this message to the group.
    Multicast(Bytes),
    /// Hand these requests to the ordered core, numbered from `first_seq`.
    Order {
        /// The first one's sequence number.
        first_seq: u64,
        /// The requests, with their origins.
        requests: Vec<(Origin, Bytes)>,
    },
    /// The answer to request `seq` may go to its (local) client.
    Release {
        /// The request.
        seq: u64,
        /// Its origin (this host).
        origin: Origin,
    },
    /// Stop serving: close the client listener and end local sessions (the reason says why).
    Fence(String),
    /// Serve (again): in a view with quorum, in sync from `seq` on.
    Serve {
        /// The next sequence number.
        seq: u64,
    },
    /// Before serving, bring the replicas to the state at request `seq` (the ordered core's
    /// state transfer from one of `from`, which hold it), then call
    /// [`state_ready`](Dresh::state_ready); requests from `seq` on come as [`Action::Order`].
    /// Given again with the same `seq` when more members turn out to hold it (`from` may be
    /// empty at first).
    NeedState {
        /// The point.
        seq: u64,
        /// Hosts that hold that state.
        from: Vec<HostId>,
    },
    /// This host is faulty or can no longer tell what the group decides: leave the group and
    /// stop for good.
    Leave(String),
}

/// Where this host stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not in sync: waiting for a view with quorum and the answer to its join, or for the
    /// state it needs ([`Action::NeedState`]).
    Joining,
    /// In a view with quorum and in sync: it serves.
    Serving,
    /// In a view without quorum: it does not serve.
    Fenced,
    /// It left (faulty, or the group is lost to it).
    Left,
}

/// Parameters.
#[derive(Clone, Debug)]
pub struct Config {
    /// This host.
    pub local: HostId,
    /// The group's expected size (quorum: more than half of it).
    pub hosts: usize,
    /// A batch of requests or answers is multicast at about this size.
    pub max_message_bytes: usize,
    /// Tells this start of the host from its earlier ones (the shell: random, or the clock):
    /// a join of an earlier incarnation may still be answered after a restart, and must not be
    /// taken for this one's.
    pub incarnation: u32,
}

/// Where a host's state stands: the next sequence number, and a chain digest of every request
/// ordered before it (two hosts at the same number hold the same state only if their chains
/// agree: a partition may have given the two sides different last messages of the old view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Point {
    /// Views with quorum installed while in sync, by the hosts that numbered this stream (the
    /// same count at every such host: they install the same views at the same points). Of two
    /// states, the one of a later epoch went on in a view with quorum after the other stopped
    /// (a fenced minority stops counting): it holds every request a majority executed.
    pub epoch: u64,
    /// The next sequence number.
    pub seq: u64,
    /// blake3 chained over the origins and bytes of the requests before it.
    pub chain: Digest,
}

impl Point {
    /// The start of a new group.
    pub const START: Point = Point { epoch: 0, seq: 0, chain: [0; 32] };

    /// Whether two points stand for the same state (whatever their epochs).
    pub fn same_state(&self, other: &Point) -> bool {
        self.seq == other.seq && self.chain == other.chain
    }

    /// The point after `request` from `origin`.
    fn after(&self, origin: &Origin, request: &[u8]) -> Point {
        let mut h = blake3::Hasher::new();
        h.update(&self.chain);
        h.update(&origin.host.to_be_bytes());
        h.update(&origin.session.to_be_bytes());
        h.update(&origin.request.to_be_bytes());
        h.update(request);
        Point { epoch: self.epoch, seq: self.seq + 1, chain: *h.finalize().as_bytes() }
    }
}

/// A request's answer digests, this host's and the others', compared until every other member
/// gave its own (see [`Dresh::judge`]).
#[derive(Debug)]
struct Check {
    /// The stream's chain after it.
    chain: Digest,
    mine: Option<Digest>,
    remote: Vec<(HostId, Digest)>,
}

/// Requests whose digests are kept for comparing, behind the newest one ordered: a member that
/// never sends some (it joined with a copied state, or died) does not make them pile up.
const CHECK_WINDOW: u64 = 16_384;

/// This host's join in the current view.
#[derive(Debug, Clone, Copy)]
struct Joining {
    nonce: u64,
    delivered: bool,
}

/// This host numbers the stream and waits for the state at `at`.
#[derive(Debug, Clone)]
struct Syncing {
    /// Tells its transfers apart (its [`Wire::Ready`]).
    nonce: u64,
    /// The join it synced by (0: a start of the stream).
    join: u64,
    at: Point,
    /// Members that hold the state (they served when they answered).
    sources: Vec<HostId>,
    /// Members that numbered the stream but waited for their own state when they answered:
    /// sources once their Ready is delivered.
    candidates: Vec<HostId>,
    /// [`Wire::Ready`] was multicast.
    ready_sent: bool,
    /// A source was named to the shell: it may have begun to replace the replicas' state.
    began: bool,
    /// Its replicas stood at `at` already: they execute the stream from there.
    current: bool,
}

/// A join delivered in this view: whether this host was joining (not numbering) then, and
/// the `Waiting` answers so far.
#[derive(Debug, Default)]
struct JoinAnswers {
    was_joining: bool,
    waiting: BTreeMap<HostId, Option<Point>>,
}

/// The state machine of one host.
#[derive(Debug)]
pub struct Dresh {
    config: Config,
    role: Role,
    view: Option<View>,
    /// Where the ordered stream stands, while this host numbers it (in sync, or being
    /// brought to a state).
    point: Option<Point>,
    /// Where its replicas' state stands when it is not in sync (what it says in its joins;
    /// `None`: not known, e.g. a state transfer was cut short).
    have: Option<Point>,
    /// Numbering the stream, waiting for the state (see [`state_ready`](Dresh::state_ready)).
    sync: Option<Syncing>,
    join: Option<Joining>,
    next_nonce: u64,
    /// Joins delivered in the current view: (joiner, nonce) -> the answers so far.
    joins: BTreeMap<(HostId, u64), JoinAnswers>,
    /// Members whose Ready was delivered in the current view: they serve (hold the state).
    ready_seen: Vec<HostId>,
    /// Requests delivered after this host's join, numbered once it is in sync.
    unnumbered: Vec<(Origin, Bytes)>,
    /// Local requests not multicast yet.
    outgoing: Vec<(u64, u64, Bytes)>,
    outgoing_bytes: usize,
    /// Digests of this host's voted answers not multicast yet.
    answers_out: Vec<(u64, Digest, Digest)>,
    /// The chain after each request ordered and not voted yet.
    chains: BTreeMap<u64, Digest>,
    /// Local requests whose answer waits: sequence number -> origin.
    held: BTreeMap<u64, Origin>,
    /// Every request's digests, this host's and the others', by sequence number.
    checks: BTreeMap<u64, Check>,
    /// Messages from peers that could not be decoded.
    malformed: u64,
    actions: VecDeque<Action>,
}

impl Dresh {
    /// A host that has not joined yet; `have`: where its replicas' state stands
    /// ([`Point::START`] for empty replicas; `None` if not known).
    pub fn new(config: Config, have: Option<Point>) -> Dresh {
        Dresh {
            role: Role::Joining,
            view: None,
            point: None,
            have,
            sync: None,
            join: None,
            next_nonce: u64::from(config.incarnation) << 32 | 1,
            joins: BTreeMap::new(),
            ready_seen: Vec::new(),
            unnumbered: Vec::new(),
            outgoing: Vec::new(),
            outgoing_bytes: 0,
            answers_out: Vec::new(),
            chains: BTreeMap::new(),
            held: BTreeMap::new(),
            checks: BTreeMap::new(),
            malformed: 0,
            actions: VecDeque::new(),
            config,
        }
    }

    /// Where this host stands.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// The view it installed last.
    pub fn view(&self) -> Option<&View> {
        self.view.as_ref()
    }

    /// Where the ordered stream stands here, while this host numbers it.
    pub fn point(&self) -> Option<Point> {
        self.point
    }

    /// Undecodable messages from peers so far.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// The next action for the shell.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// A local session's request; false (refused) unless this host serves.
    pub fn submit(&mut self, session: u64, request: u64, bytes: Bytes) -> bool {
        self.submit_unit(session, request, vec![bytes])
    }

    /// A local session's requests that must follow each other in the order with nothing
    /// between them (a transaction), numbered from `first`: they go in one message, since
    /// another host's message may be delivered between two of this host's. False (refused)
    /// unless this host serves.
    pub fn submit_unit(&mut self, session: u64, first: u64, unit: Vec<Bytes>) -> bool {
        if self.role != Role::Serving {
            return false;
        }
        let size: usize = unit.iter().map(|b| b.len() + 20).sum();
        // A unit that would take the batch past its size goes in the next message: a message
        // then holds one unit (as large as the shell lets in) or at most a batch's size, never
        // a full batch plus a large request (more than the group may carry).
        if !self.outgoing.is_empty() && self.outgoing_bytes + size > self.config.max_message_bytes {
            self.flush_requests();
        }
        self.outgoing_bytes += size;
        self.outgoing.extend((first..).zip(unit).map(|(request, bytes)| (session, request, bytes)));
        if self.outgoing_bytes >= self.config.max_message_bytes {
            self.flush_requests();
        }
        true
    }

    /// The local core voted the answer to request `seq` (of any origin).
    pub fn voted(&mut self, seq: u64, digest: Digest) {
        if self.role == Role::Left {
            return;
        }
        let Some(chain) = self.chains.remove(&seq) else { return };
        self.answers_out.push((seq, chain, digest));
        if self.answers_out.len() * 72 >= self.config.max_message_bytes {
            self.flush_answers();
        }
        if let Some(check) = self.checks.get_mut(&seq) {
            check.mine = Some(digest);
        }
        self.judge(seq);
    }

    /// The state asked for with [`Action::NeedState`] is in place: this host serves from the
    /// delivery of its [`Wire::Ready`] on (a point of the stream, the same for every host).
    pub fn state_ready(&mut self) {
        if let Some(sync) = self.sync.as_mut().filter(|s| !s.ready_sent) {
            sync.ready_sent = true;
            let nonce = sync.nonce;
            self.actions.push_back(Action::Multicast(Wire::Ready { nonce }.encode()));
        }
    }

    fn awaiting_state(&self) -> bool {
        self.sync.is_some()
    }

    /// Multicasts what is batched (call once per turn of the shell's loop).
    pub fn flush(&mut self) {
        self.flush_requests();
        self.flush_answers();
    }

    fn flush_requests(&mut self) {
        if !self.outgoing.is_empty() {
            let requests = std::mem::take(&mut self.outgoing);
            self.outgoing_bytes = 0;
            self.actions.push_back(Action::Multicast(Wire::Requests(requests).encode()));
        }
    }

    fn flush_answers(&mut self) {
        if !self.answers_out.is_empty() {
            let answers = std::mem::take(&mut self.answers_out);
            self.actions.push_back(Action::Multicast(Wire::Answers(answers).encode()));
        }
    }

    fn quorate(&self) -> bool {
        self.view.as_ref().is_some_and(|v| v.has_quorum(self.config.hosts))
    }

    /// What the group delivered.
    pub fn delivered(&mut self, delivery: Delivery) {
        if self.role == Role::Left {
            return;
        }
        match delivery {
            Delivery::View(view) => self.install(view),
            Delivery::Message { from, payload } => match Wire::decode(payload) {
                Ok(Wire::Requests(requests)) => self.requests(from, requests),
                Ok(Wire::Answers(answers)) => self.answers(from, answers),
                Ok(Wire::Join { nonce, .. }) => self.joined(from, nonce),
                Ok(Wire::Sync { joiner, nonce, point, holds }) => self.synced(from, joiner, nonce, point, holds),
                Ok(Wire::Ready { nonce }) => self.ready(from, nonce),
                Ok(Wire::Waiting { joiner, nonce, have }) => self.waiting(from, joiner, nonce, have),
                Err(_) => self.malformed += 1,
            },
            Delivery::Lost(why) => self.leave(format!("the group is lost: {why}")),
        }
    }

    fn install(&mut self, view: View) {
        self.view = Some(view);
        self.joins.clear();
        self.ready_seen.clear();
        if !self.quorate() {
            let (members, hosts) = (self.view.as_ref().map_or(0, |v| v.members.len()), self.config.hosts);
            if self.awaiting_state() {
                // Cut short: if a transfer may have begun, its replicas' state is not known to
                // stand anywhere.
                self.forget_sync();
                self.fence(format!("the view holds {members} of {hosts} hosts: no quorum"));
            } else if self.role == Role::Serving {
                self.fence(format!("the view holds {members} of {hosts} hosts: no quorum"));
                self.role = Role::Fenced;
            }
            // A join waits for a view with quorum.
            self.join = None;
            self.unnumbered.clear();
            return;
        }
        let numbering = self.role == Role::Serving || self.awaiting_state();
        if let Some(point) = self.point.as_mut().filter(|_| numbering) {
            point.epoch += 1;
        }
        match self.role {
            Role::Serving => {
                // Fewer members: answers may have all the digests they can get.
                let seqs: Vec<u64> = self.checks.keys().copied().collect();
                for seq in seqs {
                    self.judge(seq);
                }
            }
            Role::Fenced => {
                // Back in a view with quorum: the others may have gone on meanwhile.
                self.have = self.point.take();
                self.sync = None;
                self.role = Role::Joining;
                self.send_join();
            }
            Role::Joining => {
                let members = self.view.as_ref().map(|v| v.members.clone()).unwrap_or_default();
                if let Some(sync) = self.sync.as_mut() {
                    sync.sources.retain(|h| members.contains(h));
                    sync.candidates.retain(|h| members.contains(h));
                }
                if !self.give_up_if_stranded() && !self.awaiting_state() {
                    self.send_join();
                }
            }
            Role::Left => {}
        }
    }

    /// Waiting for a state nobody left can give (every source and candidate left the view, or
    /// joins again itself): it joins again. True if it did.
    fn give_up_if_stranded(&mut self) -> bool {
        let stranded =
            self.sync.as_ref().is_some_and(|s| !s.ready_sent && s.sources.is_empty() && s.candidates.is_empty());
        if stranded {
            self.forget_sync();
            self.fence("no member that holds the state it was waiting for is left".into());
            self.send_join();
        }
        stranded
    }

    /// Stops waiting for a state; what its replicas hold: the stream so far if they stood at
    /// the sync point already (they executed it), nothing known if a transfer may have begun,
    /// else what they held before.
    fn forget_sync(&mut self) {
        if let Some(sync) = self.sync.take() {
            if sync.current {
                self.have = self.point;
            } else if sync.began {
                self.have = None;
            }
        }
        self.point = None;
    }

    /// Stops serving: the shell ends the local sessions, so their held answers and what was
    /// batched go too (after it rejoins, the numbers they were kept under may mean other
    /// requests).
    fn fence(&mut self, why: String) {
        self.held.clear();
        self.checks.clear();
        self.answers_out.clear();
        self.chains.clear();
        self.outgoing.clear();
        self.outgoing_bytes = 0;
        self.actions.push_back(Action::Fence(why));
    }

    fn send_join(&mut self) {
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        self.join = Some(Joining { nonce, delivered: false });
        self.unnumbered.clear();
        self.chains.clear();
        self.checks.clear();
        self.point = None;
        self.actions.push_back(Action::Multicast(Wire::Join { nonce, have: self.have }.encode()));
    }

    /// Whether this host numbers the stream (it answers joins with [`Wire::Sync`]).
    fn numbering(&self) -> bool {
        self.point.is_some() && (self.role == Role::Serving || self.awaiting_state())
    }

    fn joined(&mut self, from: HostId, nonce: u64) {
        if !self.view.as_ref().is_some_and(|v| v.contains(from)) {
            return;
        }
        // A member that joins numbers nothing and holds nothing now.
        if from != self.config.local {
            if let Some(sync) = self.sync.as_mut() {
                sync.sources.retain(|&h| h != from);
                sync.candidates.retain(|&h| h != from);
            }
            if self.role == Role::Joining {
                self.give_up_if_stranded();
            }
        }
        let answer = match self.point {
            Some(point) if self.numbering() => {
                Wire::Sync { joiner: from, nonce, point, holds: self.role == Role::Serving }
            }
            _ => Wire::Waiting { joiner: from, nonce, have: self.have },
        };
        self.actions.push_back(Action::Multicast(answer.encode()));
        if from == self.config.local {
            if let Some(join) = self.join.as_mut().filter(|j| j.nonce == nonce) {
                join.delivered = true;
                self.unnumbered.clear();
            }
        }
        let was_joining = self.role == Role::Joining && !self.numbering();
        self.joins.insert((from, nonce), JoinAnswers { was_joining, waiting: BTreeMap::new() });
    }

    /// A member that does not serve answered a join delivered in this view. Once every member
    /// answered one join so, nobody serves: every joining member starts the stream here, from
    /// the most advanced state among the answers (by epoch, number, then chain, so that every
    /// host picks the same).
    fn waiting(&mut self, from: HostId, joiner: HostId, nonce: u64, have: Option<Point>) {
        let Some(view) = self.view.as_ref() else { return };
        if !view.contains(from) {
            return;
        }
        let quorate = view.has_quorum(self.config.hosts);
        let members = view.members.clone();
        let numbering = self.numbering();
        let Some(entry) = self.joins.get_mut(&(joiner, nonce)) else { return };
        entry.waiting.insert(from, have);
        let complete = members.iter().all(|m| entry.waiting.contains_key(m));
        // Adopted only by hosts that were joining when that join was delivered: a numbering
        // member answers with Sync, so all of them were, and none numbers since but by a
        // start adopted by all of them at once.
        if !complete || !entry.was_joining || !quorate || self.role != Role::Joining || numbering {
            return;
        }
        let answers = &entry.waiting;
        let best =
            answers.values().flatten().max_by_key(|p| (p.epoch, p.seq, p.chain)).copied().unwrap_or(Point::START);
        let holders: Vec<HostId> =
            answers.iter().filter(|(_, h)| h.is_some_and(|p| p.same_state(&best))).map(|(m, _)| *m).collect();
        // The stream starts here: what came before (requests multicast by a host before it was
        // fenced, never released) is not part of it, at any host.
        self.unnumbered.clear();
        self.in_sync_at(best, holders, 0);
    }

    fn synced(&mut self, from: HostId, joiner: HostId, nonce: u64, point: Point, holds: bool) {
        if joiner != self.config.local || self.role != Role::Joining {
            return;
        }
        // It answered before its own Ready was delivered, and that was delivered since.
        let holds = holds || self.ready_seen.contains(&from);
        let ours = !self.numbering() && self.join.is_some_and(|j| j.nonce == nonce && j.delivered);
        if ours {
            self.in_sync_at(point, if holds { vec![from] } else { vec![] }, nonce);
            if let Some(sync) = self.sync.as_mut().filter(|_| !holds) {
                sync.candidates.push(from);
            }
            return;
        }
        // Another answer to the join it synced by: one more member that can give the state,
        // or will once it has its own.
        let Some(sync) = self.sync.as_mut().filter(|s| s.join == nonce && !s.ready_sent) else { return };
        if !holds {
            sync.candidates.push(from);
        } else if !sync.sources.contains(&from) {
            sync.sources.push(from);
            self.ask_state();
        }
    }

    /// Tells the shell which state it needs and who holds it (again, as more turn out to).
    fn ask_state(&mut self) {
        if let Some(sync) = self.sync.as_mut() {
            sync.began |= !sync.sources.is_empty();
            let (seq, from) = (sync.at.seq, sync.sources.clone());
            self.actions.push_back(Action::NeedState { seq, from });
        }
    }

    /// A member's [`Wire::Ready`] is delivered: its own, it serves from here; a candidate's
    /// source, the candidate can give the state now.
    fn ready(&mut self, from: HostId, nonce: u64) {
        if from != self.config.local {
            if !self.ready_seen.contains(&from) {
                self.ready_seen.push(from);
            }
            let Some(sync) = self.sync.as_mut().filter(|s| !s.ready_sent && s.candidates.contains(&from)) else {
                return;
            };
            sync.candidates.retain(|&c| c != from);
            if !sync.sources.contains(&from) {
                sync.sources.push(from);
                self.ask_state();
            }
            return;
        }
        if self.sync.as_ref().is_some_and(|s| s.nonce == nonce && s.ready_sent) {
            self.sync = None;
            self.have = None;
            if self.quorate() {
                self.serve();
            }
        }
    }

    /// This host numbers the stream from `point` on; it serves at once if its replicas stand
    /// there, or once it has that state from one of `sources` (and its Ready is delivered).
    fn in_sync_at(&mut self, point: Point, sources: Vec<HostId>, join: u64) {
        self.join = None;
        let current = self.have.is_some_and(|h| h.same_state(&point));
        self.point = Some(point);
        self.chains.clear();
        self.checks.clear();
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        self.sync = Some(Syncing {
            nonce,
            join,
            at: point,
            sources,
            candidates: Vec::new(),
            ready_sent: current,
            began: false,
            current,
        });
        if current {
            // It holds the state already; it serves once its Ready is delivered, like any host
            // that begins to serve (the others learn from it that it can give the state).
            self.actions.push_back(Action::Multicast(Wire::Ready { nonce }.encode()));
        } else {
            self.ask_state();
        }
        let unnumbered = std::mem::take(&mut self.unnumbered);
        self.order(unnumbered);
    }

    fn serve(&mut self) {
        if let Some(point) = self.point {
            self.role = Role::Serving;
            self.actions.push_back(Action::Serve { seq: point.seq });
        }
    }

    fn requests(&mut self, from: HostId, requests: Vec<(u64, u64, Bytes)>) {
        let batch: Vec<(Origin, Bytes)> = requests
            .into_iter()
            .map(|(session, request, bytes)| (Origin { host: from, session, request }, bytes))
            .collect();
        if self.point.is_some() && self.role != Role::Fenced {
            self.order(batch);
        } else if self.join.is_some_and(|j| j.delivered) {
            self.unnumbered.extend(batch);
        }
        // Otherwise: before this host's join, in the state it will be given; or while fenced,
        // where nothing is released (it rejoins, and is given the state if it differs).
    }

    fn order(&mut self, batch: Vec<(Origin, Bytes)>) {
        let Some(mut point) = self.point else { return };
        if batch.is_empty() {
            return;
        }
        let first_seq = point.seq;
        for (origin, bytes) in &batch {
            let seq = point.seq;
            point = point.after(origin, bytes);
            self.chains.insert(seq, point.chain);
            self.checks.insert(seq, Check { chain: point.chain, mine: None, remote: Vec::new() });
            if origin.host == self.config.local {
                self.held.insert(seq, *origin);
            }
        }
        // Digests some member never sent are not waited for without end.
        let held = &self.held;
        let oldest = point.seq.saturating_sub(CHECK_WINDOW);
        self.checks.retain(|seq, _| *seq >= oldest || held.contains_key(seq));
        self.point = Some(point);
        self.actions.push_back(Action::Order { first_seq, requests: batch });
    }

    fn answers(&mut self, from: HostId, answers: Vec<(u64, Digest, Digest)>) {
        if from == self.config.local {
            return;
        }
        for (seq, chain, digest) in answers {
            // A digest is delivered after the request it answers (its sender voted on it
            // first), so what this host does not hold by then, it never will. One of another
            // numbering of the stream says nothing about this host's request.
            if let Some(check) = self.checks.get_mut(&seq).filter(|c| c.chain == chain) {
                if !check.remote.iter().any(|(h, _)| *h == from) {
                    check.remote.push((from, digest));
                }
                self.judge(seq);
            }
        }
    }

    /// Compares this host's answer to request `seq` (of any origin) with the others'. Leaves
    /// if more other hosts agree on another answer than on this host's and they are a majority
    /// of the other members: every request checks every host, not only its clients' requests.
    /// Releases a held (local) request once a majority of the expected hosts, this one
    /// included, gave the same answer: they all hold the request, so every later view with
    /// quorum holds a host that executed it. Forgets the request once every other member's
    /// digest is in.
    fn judge(&mut self, seq: u64) {
        let Some(check) = self.checks.get(&seq) else { return };
        let Some(mine) = check.mine else { return };
        let others = self.view.as_ref().map_or(0, |v| v.members.iter().filter(|&&h| h != self.config.local).count());
        let agreeing = check.remote.iter().filter(|(_, d)| *d == mine).count();
        let differing = check.remote.len() - agreeing;
        let complete = check.remote.len() >= others;
        if differing > agreeing && differing * 2 > others {
            self.leave(format!(
                "this host's answer to request {seq} differs from {differing} of the {others} other hosts'"
            ));
            return;
        }
        if (agreeing + 1) * 2 > self.config.hosts {
            if let Some(origin) = self.held.remove(&seq) {
                self.actions.push_back(Action::Release { seq, origin });
            }
        }
        if complete && !self.held.contains_key(&seq) {
            self.checks.remove(&seq);
        }
    }

    /// This host stops for good (the shell found it can no longer serve: its local replicas
    /// lost their quorum): it tells the shell to leave the group ([`Action::Leave`]).
    pub fn leave(&mut self, why: String) {
        if self.role != Role::Left {
            self.role = Role::Left;
            self.held.clear();
            self.checks.clear();
            self.actions.push_back(Action::Leave(why));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host that serves at once (it starts the stream alone, in a group of one).
    fn serving(max_message_bytes: usize) -> Dresh {
        let config = Config { local: 1, hosts: 1, max_message_bytes, incarnation: 1 };
        let mut d = Dresh::new(config, Some(Point::START));
        let view = View { id: 1, members: vec![1], joined: vec![1], left: vec![] };
        d.delivered(Delivery::View(view));
        let mut own = Vec::new();
        while let Some(action) = d.poll_action() {
            if let Action::Multicast(m) = action {
                own.push(m);
            }
        }
        // Its join, its answer to it, its Ready: delivered back in order.
        for round in 0..3 {
            for m in std::mem::take(&mut own) {
                d.delivered(Delivery::Message { from: 1, payload: m });
            }
            while let Some(action) = d.poll_action() {
                if let Action::Multicast(m) = action {
                    own.push(m);
                }
            }
            if *d.role() == Role::Serving {
                return d;
            }
            assert!(round < 2, "not serving: {:?}", d.role());
        }
        d
    }

    #[test]
    fn a_large_request_never_joins_a_batch_that_would_overflow() {
        let mut d = serving(1000);
        assert!(d.submit(1, 0, Bytes::from(vec![b'a'; 600])));
        assert!(d.submit(1, 1, Bytes::from(vec![b'b'; 5000])));
        d.flush();
        let sizes: Vec<usize> = std::iter::from_fn(|| d.poll_action())
            .filter_map(|a| match a {
                Action::Multicast(m) => match Wire::decode(m) {
                    Ok(Wire::Requests(r)) => Some(r.len()),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(sizes, vec![1, 1], "the large request went with the batch before it");
    }

    #[test]
    fn a_unit_goes_in_one_message() {
        let mut d = serving(1000);
        assert!(d.submit(1, 0, Bytes::from(vec![b'a'; 500])));
        // Would take the batch past its size: the whole unit goes in the next message, whole.
        let unit = vec![Bytes::from(vec![b'm'; 200]), Bytes::from(vec![b's'; 300]), Bytes::from(vec![b'e'; 200])];
        assert!(d.submit_unit(2, 7, unit));
        d.flush();
        let messages: Vec<Vec<(u64, u64)>> = std::iter::from_fn(|| d.poll_action())
            .filter_map(|a| match a {
                Action::Multicast(m) => match Wire::decode(m) {
                    Ok(Wire::Requests(r)) => Some(r.iter().map(|(s, n, _)| (*s, *n)).collect()),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(messages, vec![vec![(1, 0)], vec![(2, 7), (2, 8), (2, 9)]]);
    }

    #[test]
    fn messages_round_trip_and_malformed_ones_are_refused() {
        let cases = [
            Wire::Requests(vec![(1, 2, Bytes::from_static(b"*1\r\n$4\r\nPING\r\n")), (3, 4, Bytes::new())]),
            Wire::Answers(vec![(7, [8; 32], [9; 32])]),
            Wire::Join { nonce: 3, have: Some(Point { epoch: 1, seq: 12, chain: [5; 32] }) },
            Wire::Join { nonce: 4, have: None },
            Wire::Sync { joiner: 2, nonce: 3, point: Point { epoch: 2, seq: 40, chain: [6; 32] }, holds: true },
            Wire::Ready { nonce: 7 },
            Wire::Waiting { joiner: 2, nonce: 3, have: None },
            Wire::Waiting { joiner: 1, nonce: 9, have: Some(Point::START) },
        ];
        for wire in cases {
            let bytes = wire.encode();
            assert_eq!(Wire::decode(bytes.clone()), Ok(wire));
            for cut in 0..bytes.len() {
                assert!(Wire::decode(bytes.slice(..cut)).is_err(), "a truncated message decoded");
            }
        }
        assert!(Wire::decode(Bytes::from_static(&[1, 0xff, 0xff, 0xff, 0xff])).is_err());
        assert!(Wire::decode(Bytes::from_static(&[9])).is_err());
    }
}
