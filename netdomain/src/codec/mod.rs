//! Framing codecs for ordered mode: they split client input into requests and replica output
//! into responses, without I/O.
//!
//! A codec answers these questions, each on plain byte slices:
//! - where the next complete request (or response) ends: [`RequestParser`] and
//!   [`ResponseParser`] are *resumable*: they remember how far they got in an incomplete frame,
//!   so a large frame that arrives in many reads is parsed once, not once per read;
//! - what to do with a request: send it through the global order to every replica, answer it
//!   locally (a command ordered mode cannot serve), or close ([`Codec::dispatch`]);
//! - which bytes of a response the vote compares ([`Codec::vote_digest`]): diverse versions
//!   may legitimately word an error differently, so an error is voted by its class first; and
//!   what of a response correct replicas may legitimately differ in ([`ReplyShape`],
//!   [`Codec::shaped_digest`]): the order of a set's members, say;
//! - what to answer when resh itself cannot give the replicas' answer ([`Codec::answer_error`],
//!   [`Codec::protocol_error`]);
//! - how to rebuild a replica's state: the request that empties it ([`Codec::reset_request`])
//!   and a [`Checkpoint`] that copies a voting replica's state as requests for another.
//!
//! RESP (Redis) is the first codec; line-based, length-prefixed and HTTP/1.1 codecs fit the
//! same trait.
use std::fmt;
use std::time::Instant;

use bytes::Bytes;
use voter::Digest;

pub mod resp;

/// Why input could not be framed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// What to do with one complete request.
#[derive(Debug)]
pub enum Dispatch {
    /// Send these bytes (the request, possibly rewritten into a canonical form) through the
    /// global order. `logged` requests are recorded for replaying to a replica that rejoins;
    /// read-only ones need not be.
    Forward {
        /// The request as the replicas get it.
        request: Bytes,
        /// Whether it may change state (and so must be replayed to a rejoining replica).
        logged: bool,
        /// How the vote compares the answers.
        shape: ReplyShape,
        /// It publishes a message to subscribers (see [`RequestClass::publish`]).
        publish: bool,
    },
    /// Send these requests through the global order with nothing between them (a transaction:
    /// `MULTI`, its commands, `EXEC`); the client's answer is the last one's, the others' are
    /// not shown (as the server's own queueing answers are not, once resh answered them).
    Unit(Vec<Part>),
    /// Ask the replicas first: send these requests through the order (a unit if more than one);
    /// the voted answer to the last goes to `then`, which says what to do next. resh answers a
    /// random choice this way: one replica proposes, the quorum checks.
    Ask {
        /// The requests.
        parts: Vec<Part>,
        /// What to do with the answer.
        then: Box<dyn Continuation>,
    },
    /// Wait, then go on with `then` ([`Continuation::woken`]): a blocking command polls this
    /// way, since it must not block the connection every session shares.
    Later {
        /// How long.
        after: std::time::Duration,
        /// What then.
        then: Box<dyn Continuation>,
    },
    /// Change the session's subscriptions and answer with these bytes (the replicas never see
    /// the request: clients subscribe to resh).
    Subscriptions {
        /// The changes.
        changes: Vec<Subscription>,
        /// The answer.
        reply: Bytes,
    },
    /// Answer what resh's own publish/subscribe knows ([`Codec::pubsub_reply`] words it): who
    /// listens to what on this host.
    PubSub(PubSubQuery),
    /// Answer locally with these bytes; the replicas never see the request.
    Reply(Bytes),
    /// Answer with these bytes, then close the connection.
    Close(Bytes),
    /// Nothing to do (e.g. an empty request).
    Ignore,
}

/// What to do with the voted answer of a [`Dispatch::Ask`], or after a [`Dispatch::Later`].
pub trait Continuation: Send + fmt::Debug {
    /// The voted answer to the last request asked, at `now`; the next step:
    /// [`Dispatch::Reply`] (the client's answer), another [`Dispatch::Ask`], or
    /// [`Dispatch::Later`].
    fn answered(self: Box<Self>, answer: &[u8], now: Instant) -> Dispatch;
    /// The wait of a [`Dispatch::Later`] is over; the next step, as for `answered`.
    fn woken(self: Box<Self>, now: Instant) -> Dispatch;
}

/// One request of a [`Dispatch::Unit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The request as the replicas get it.
    pub request: Bytes,
    /// How it is logged and voted.
    pub class: RequestClass,
}

/// How a request is logged and voted, and whether the next one belongs with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestClass {
    /// Whether it may change state (kept in the replay log).
    pub logged: bool,
    /// How the vote compares its answers.
    pub shape: ReplyShape,
    /// The next request belongs to the same unit: nothing may come between them on a
    /// replica's connection (no checkpoint's reads, no point to rebuild from).
    pub continues: bool,
    /// It publishes a message: once it is decided, resh delivers the message to its own
    /// subscribers ([`Codec::published`]), since clients subscribe to resh, not to a replica.
    pub publish: bool,
    /// What it does to its session's WATCH, which resh keeps in the order (`ordered::watch`).
    pub watch: WatchOp,
    /// It changed nothing if the agreed answer is these bytes (a read of a consumer group that
    /// found nothing new): it then leaves the replay log, so that polling does not grow it.
    pub unchanged_if: Option<&'static [u8]>,
}

impl RequestClass {
    /// The class of a request as a stateless dispatch sent it on; one that would not be
    /// forwarded alone is logged, to be safe, and voted byte for byte.
    pub fn of(dispatch: &Result<Dispatch, ProtocolError>) -> RequestClass {
        match dispatch {
            Ok(Dispatch::Forward { logged, shape, publish, .. }) => {
                RequestClass { logged: *logged, shape: *shape, publish: *publish, ..RequestClass::default() }
            }
            _ => RequestClass { logged: true, ..RequestClass::default() },
        }
    }
}

/// What a request does to its session's WATCH ([`RequestClass::watch`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WatchOp {
    /// Nothing (a write may still make watches dirty).
    #[default]
    None,
    /// The session watches the keys [`Codec::watched_keys`] gives, from here on.
    Watch,
    /// The session watches nothing any more.
    Unwatch,
    /// The EXEC of a transaction: if the session's watch is dirty, resh sends
    /// [`Codec::abort_request`] instead. Its watch ends either way.
    Exec,
}

/// A question to resh's own publish/subscribe ([`Dispatch::PubSub`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PubSubQuery {
    /// The channels with subscribers, those matching a glob if one is given.
    Channels(Option<Bytes>),
    /// How many sessions subscribe to each of these channels (patterns not counted).
    NumSub(Vec<Bytes>),
    /// How many patterns sessions subscribe to, counted once each.
    NumPat,
}

/// What resh's publish/subscribe answers to a [`PubSubQuery`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PubSubAnswer {
    /// Names (channels).
    Names(Vec<Bytes>),
    /// Names with their counts.
    Counts(Vec<(Bytes, usize)>),
    /// A count.
    Count(usize),
}

/// A change to a session's subscriptions ([`Dispatch::Subscriptions`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subscription {
    /// Subscribe to this channel (or, `pattern`, to channels matching this glob).
    Add {
        /// The channel or pattern.
        name: Bytes,
        /// A pattern.
        pattern: bool,
    },
    /// Unsubscribe.
    Remove {
        /// The channel or pattern.
        name: Bytes,
        /// A pattern.
        pattern: bool,
    },
}

/// How the vote compares the replicas' answers to one request: what correct replicas may
/// legitimately differ in. The codec says it per request ([`Dispatch::Forward`]); the client
/// always gets one agreeing replica's answer as that replica sent it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReplyShape {
    /// Byte for byte (an error by its class first, as [`Codec::vote_digest`] says).
    #[default]
    Exact,
    /// An unordered collection: compared as a multiset of its elements (a Redis set's members
    /// come in each server's own hash order).
    Set,
    /// An unordered map of alternating keys and values: compared as a multiset of pairs.
    Map,
    /// Unordered at every level of nesting (a server's command table).
    NestedSet,
    /// An array in order, each element unordered at every level (a transaction's answers,
    /// when some of its commands answer sets).
    EachNestedSet,
    /// A scan reply, `[cursor, elements]`, its elements a set.
    ScanSet,
    /// A scan reply whose elements are pairs (field and value, member and score).
    ScanMap,
    /// Not voted: every replica's answer counts as the same, and one replica's is released.
    /// Only for introspection that differs per replica by nature (`INFO`); documented as
    /// unvoted.
    Unvoted,
}

/// Why resh answers a request itself instead of with the replicas' voted answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerError {
    /// The replicas' answers did not agree: no quorum. The session is aborted after it.
    Undecidable,
    /// Fewer replicas are in the vote than the quorum; the request was not executed.
    NoQuorum,
    /// No decision within the per-request limit; the request may still take effect.
    TimedOut {
        /// The limit, in milliseconds.
        limit_ms: u64,
    },
    /// The agreed answer is larger than resh passes on.
    TooLarge {
        /// The answer's size.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// Every replica closed its connection on this request alike: the service refuses it.
    ClosedByService,
    /// This host stopped serving (fenced) after the request was handed to the order: it may
    /// still take effect (D-RESH: the other hosts may have executed it).
    Fenced,
    /// D-RESH: this host does not serve now (it is joining, or in a view without quorum); the
    /// request was not executed.
    NotServing,
    /// D-RESH: the request is larger than one group message carries; it was not executed.
    RequestTooLarge {
        /// The request's size.
        len: u64,
        /// The limit.
        limit: u64,
    },
}

/// A frame the vote compares: the digest voted on and the digest of the exact bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameDigest {
    /// What the vote compares (for an error: its class only).
    pub vote: Digest,
    /// The whole frame, byte for byte.
    pub exact: Digest,
    /// Whether the frame is an error reply.
    pub error: bool,
}

/// Finds the end of complete requests in one client's input. See the module documentation.
pub trait RequestParser: Send + fmt::Debug {
    /// The length of the complete request at the front of `buf`, or `None` if more bytes are
    /// needed. Between two calls the caller may append to `buf` but must not remove anything
    /// unless a length was returned (then it removes exactly that many bytes, and the parser
    /// starts afresh on what follows).
    fn parse(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError>;
}

/// Finds the end of complete responses in one replica's output. See the module documentation.
pub trait ResponseParser: Send + fmt::Debug {
    /// Like [`RequestParser::parse`], for responses.
    fn parse(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError>;
    /// How many bytes of the incomplete frame at the front of the buffer have been parsed.
    fn progress(&self) -> usize;
    /// The caller dropped the first `n` bytes of the incomplete frame (they were hashed and
    /// thrown away because the frame is larger than resh keeps); `n <= progress()`.
    fn consumed(&mut self, n: usize);
}

/// Copies the state of one replica (the *source*) as requests that rebuild it on another (the
/// *target*), after the target was emptied with [`Codec::reset_request`].
///
/// The caller sends the source nothing but the checkpoint's reads from the first batch until
/// [`Reads::Done`], so every read sees the state at one point of the global order.
pub trait Checkpoint: Send + fmt::Debug {
    /// The next reads to send to the source, if any can be sent now.
    fn next_reads(&mut self) -> Reads;
    /// What of the answer to the oldest read not yet answered the sources must agree on. The
    /// sources' answers are compared by it before one of them goes to [`answer`](Self::answer):
    /// what differs between correct replicas (the order of a set's members, the milliseconds
    /// left of a time to live) is left out.
    fn compare_key(&self, frame: &[u8]) -> Bytes;
    /// The source's answer to the oldest read not yet answered.
    fn answer(&mut self, frame: &[u8]) -> Result<(), CheckpointError>;
    /// Requests for the target, built since the last call.
    fn take_restores(&mut self) -> Vec<Bytes>;
    /// Every read was answered and every restore taken.
    fn is_complete(&self) -> bool;
}

/// What a checkpoint wants to send to its source.
#[derive(Debug, PartialEq, Eq)]
pub enum Reads {
    /// These reads, in order.
    Batch(Vec<Bytes>),
    /// Nothing until more answers arrived.
    Wait,
    /// Every read was sent: the source may go on with the ordered stream.
    Done,
}

/// Why a checkpoint could not be copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointError {
    /// The source answered a read with an error or something unexpected.
    Source(String),
    /// A value of a kind the codec cannot copy.
    Unsupported(String),
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::Source(why) => write!(f, "the source replica's answer: {why}"),
            CheckpointError::Unsupported(why) => write!(f, "cannot copy: {why}"),
        }
    }
}

impl std::error::Error for CheckpointError {}

/// The time, as a session tells it to its client's protocol state.
pub trait Clock {
    /// The time of day.
    fn wall(&self) -> std::time::SystemTime;
    /// The monotonic time.
    fn now(&self) -> Instant;
}

/// The system's clocks.
#[derive(Clone, Copy, Debug)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall(&self) -> std::time::SystemTime {
        std::time::SystemTime::now()
    }
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock standing still (tests, and a session that read the time once).
#[derive(Clone, Copy, Debug)]
pub struct FixedClock(pub std::time::SystemTime, pub Instant);

impl Clock for FixedClock {
    fn wall(&self) -> std::time::SystemTime {
        self.0
    }
    fn now(&self) -> Instant {
        self.1
    }
}

/// One client's protocol state: what its session remembers between requests (a client's name)
/// and answers itself, so that what a server keeps per connection works although every
/// session shares one connection per replica.
pub trait ClientState: Send + fmt::Debug {
    /// What to do with one complete request of this client; `clock` tells the time, read only
    /// by the requests that need it (TIME, expirations, blocking timeouts).
    fn dispatch(&mut self, request: &[u8], clock: &dyn Clock) -> Result<Dispatch, ProtocolError>;
    /// The client subscribes to messages: it may rightly send nothing for a long time (the
    /// session's idle timeout does not apply).
    fn listens(&self) -> bool {
        false
    }
    /// What the session orders when it ends (the end of a WATCH the order keeps).
    fn farewell(&mut self) -> Option<Part> {
        None
    }
    /// The connection state the client's requests need now, if not the shared connection's
    /// own (Redis: a database other than 0). The session then orders each submission between
    /// `enter` and `leave`, as one unit, so that every replica runs it in that state and the
    /// shared connection is back in its own state after it.
    fn context(&self) -> Option<Context> {
        None
    }
}

/// See [`ClientState::context`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// What sets the client's state up on the shared connection (`SELECT 3`).
    pub enter: Bytes,
    /// What sets the shared connection's own state back (`SELECT 0`).
    pub leave: Bytes,
}

impl Context {
    /// `parts` between `enter` and `leave`, as one logged unit (a replica rebuilt by replay
    /// may join the vote inside it, and must have been replayed its `enter`); and the index of
    /// the part whose answer is the client's (the last of `parts`).
    pub fn around(&self, parts: Vec<Part>) -> (Vec<Part>, usize) {
        let answer = parts.len();
        let unit = |request: Bytes, continues: bool| Part {
            request,
            class: RequestClass { logged: true, continues, ..RequestClass::default() },
        };
        let mut all = Vec::with_capacity(parts.len() + 2);
        all.push(unit(self.enter.clone(), true));
        all.extend(
            parts.into_iter().map(|p| Part { class: RequestClass { logged: true, continues: true, ..p.class }, ..p }),
        );
        all.push(unit(self.leave.clone(), false));
        (all, answer)
    }
}

/// A framing codec. See the module documentation.
pub trait Codec: Send + Sync + fmt::Debug {
    /// The protocol's name (`resp`).
    fn name(&self) -> &'static str;
    /// A parser for one client's requests.
    fn request_parser(&self) -> Box<dyn RequestParser>;
    /// A parser for one replica's responses.
    fn response_parser(&self) -> Box<dyn ResponseParser>;
    /// What to do with one complete request (as delimited by a request parser), for a client
    /// without state: how a request another host forwarded is logged and voted.
    fn dispatch(&self, request: &[u8]) -> Result<Dispatch, ProtocolError>;
    /// The protocol state of a new client, session `id`.
    fn client(&self, id: u64) -> Box<dyn ClientState>;
    /// How each request of a batch another host ordered is logged and voted: as its own
    /// session classified it, from the bytes alone (units included).
    fn classify(&self, requests: &[Bytes]) -> Vec<RequestClass> {
        requests.iter().map(|r| RequestClass::of(&self.dispatch(r))).collect()
    }
    /// The digests of a complete response frame.
    fn vote_digest(&self, response: &[u8]) -> FrameDigest;
    /// What the vote compares of a complete response that is not an error, under `shape`;
    /// `None` if the response does not have that shape (it is then voted as it is). Called
    /// only for shapes other than [`ReplyShape::Exact`].
    fn shaped_digest(&self, shape: ReplyShape, response: &[u8]) -> Option<Digest> {
        let _ = (shape, response);
        None
    }
    /// The answer to a malformed request (the connection is closed after it).
    fn protocol_error(&self, error: &ProtocolError) -> Bytes;
    /// What resh answers instead of the replicas' answer; `None` to say nothing (the session
    /// is then reset).
    fn answer_error(&self, error: &AnswerError) -> Option<Bytes>;
    /// The answer when a quorum agrees on an error's class but not on its wording (diverse
    /// versions): an error of that class whose text resh owns, so no replica's unvoted text
    /// reaches the client.
    fn canonical_error(&self, response: &[u8]) -> Bytes;
    /// Whether a response is an error reply.
    fn is_error(&self, response: &[u8]) -> bool;
    /// The channel and message of a request classified `publish`.
    fn published(&self, request: &[u8]) -> Option<(Bytes, Bytes)> {
        let _ = request;
        None
    }
    /// The reply to a [`Dispatch::PubSub`] question, as the protocol words it.
    fn pubsub_reply(&self, answer: &PubSubAnswer) -> Bytes;
    /// What a subscriber receives for `message` on `channel` (through `pattern`, if any).
    fn push_message(&self, channel: &[u8], message: &[u8], pattern: Option<&[u8]>) -> Bytes;
    /// The answer to a publishing request: how many of resh's subscribers received it.
    fn publish_answer(&self, receivers: usize) -> Bytes;
    /// The keys a request classified [`WatchOp::Watch`] watches.
    fn watched_keys(&self, request: &[u8]) -> Vec<Bytes> {
        let _ = request;
        Vec::new()
    }
    /// The arguments of a write that may name keys (a watch on one of them is dirty after it);
    /// `None` if it may change any key (a flush).
    fn written_keys(&self, request: &[u8]) -> Option<Vec<Bytes>> {
        let _ = request;
        None
    }
    /// What a transaction's end becomes when its watch is dirty (nothing of it runs).
    fn abort_request(&self) -> Option<Bytes> {
        None
    }
    /// The request that empties a replica's state before it is rebuilt, if the protocol has one.
    fn reset_request(&self) -> Option<Bytes> {
        None
    }
    /// A new copier of a replica's state, if the protocol can copy state.
    fn checkpoint(&self) -> Option<Box<dyn Checkpoint>> {
        None
    }

    /// The length of the complete request at the front of `buf` (a fresh parser: for tests and
    /// one-off uses; sessions keep a [`RequestParser`]).
    fn request_len(&self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        self.request_parser().parse(buf)
    }
    /// The length of the complete response at the front of `buf` (a fresh parser).
    fn response_len(&self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        self.response_parser().parse(buf)
    }
}
