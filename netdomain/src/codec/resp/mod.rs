//! RESP, the Redis serialisation protocol (read: <https://redis.io/docs/latest/develop/reference/protocol-spec/>).
//!
//! Requests are arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or *inline* commands
//! (`PING\r\n`, as typed into telnet or sent by `redis-benchmark`'s inline tests). Framing follows
//! Redis's own parser exactly ([`frame`]): what Redis would refuse is refused here, with Redis's
//! wording, before any replica sees it. Inline commands are rewritten into the array form
//! before they go to the replicas, so that every replica parses exactly the same bytes.
//!
//! Responses are any RESP2 or RESP3 value. An error reply is voted by its class (its first
//! word: `-ERR`, `-WRONGTYPE`) first, since diverse implementations word their messages
//! differently and the class is what a client acts on; the text released is one a quorum
//! produced byte for byte, or, when the quorum agrees on the class only, a canonical error of
//! that class whose text is resh's ([`Codec::canonical_error`]). Nothing one replica alone
//! produced reaches a client. Everything else is compared byte for byte.
//!
//! All sessions share one connection per replica in ordered mode, so what a server keeps per
//! connection (transactions, the database, subscriptions, CLIENT names) is kept per session by
//! [`RespClient`], commands that block a connection (BLPOP and friends) are served by polling
//! ([`blocking`]), and the rest (AUTH, MONITOR...) are refused with an error naming the reason.
//!
//! A replica is rebuilt by `FLUSHALL` and a logical copy of a voting replica's keyspace
//! ([`checkpoint`]).
//!
//! Layout: this module frames, classifies and votes (the command table, shaped digests, the
//! classification of units another host delivers); `client` holds each session's own state
//! ([`RespClient`]); [`random`], [`blocking`] and [`ttl`] are the requests answered in steps.
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::{BufMut, Bytes, BytesMut};

use super::{
    AnswerError, Checkpoint, ClientState, Clock, Codec, Context, Continuation, Dispatch, FrameDigest, Part,
    ProtocolError, PubSubAnswer, PubSubQuery, ReplyShape, RequestClass, RequestParser, ResponseParser, Subscription,
    WatchOp,
};

pub mod blocking;
mod client;
pub use client::RespClient;
pub mod checkpoint;
pub mod frame;
pub mod random;
pub mod shape;
pub mod ttl;

use frame::{split_args, string2ll, RespRequestParser, RespResponseParser};

/// Commands refused in ordered mode because they keep state per connection and all sessions
/// share one connection per replica (`SELECT`, `CLIENT SETNAME` and friends, `HELLO 2` and
/// `RESET` are served: see [`RespClient`]).
const PER_CONNECTION: &[&str] = &[
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "UNWATCH",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "SSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "SUNSUBSCRIBE",
    "AUTH",
    "HELLO",
    "CLIENT",
    "RESET",
    "READONLY",
    "READWRITE",
    "ASKING",
];

/// Commands never passed: they turn the shared connection into something else (a replication
/// stream, a feed of every command).
const NEVER: &[&str] = &["MONITOR", "SYNC", "PSYNC", "REPLCONF"];

/// Commands refused unless `ordered.allow_unsafe` names them: they stop, re-point or
/// reconfigure every replica at once, or act on one host's files. Entries with a subcommand
/// name only that subcommand.
pub const UNSAFE: &[&str] = &[
    "SHUTDOWN",
    "REPLICAOF",
    "SLAVEOF",
    "FAILOVER",
    "DEBUG",
    "CONFIG SET",
    "CONFIG REWRITE",
    "MODULE",
    "ACL",
    "CLUSTER",
];

/// Commands refused because they block the connection they run on.
const BLOCKING: &[&str] =
    &["BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP", "WAIT", "WAITAOF"];

/// Commands whose answer is each replica's own random choice, or whose effect is: they cannot
/// be voted, and a random write would leave the replicas different.
const RANDOM: &[&str] = &["SPOP", "RANDOMKEY", "SRANDMEMBER", "HRANDFIELD", "ZRANDMEMBER"];

/// Commands that do not change state; they need not be replayed to a rejoining replica.
/// Anything not listed is logged: a read logged by mistake only costs replay time, a write not
/// logged would leave a rebuilt replica different.
const READ_ONLY: &[&str] = &[
    "PING",
    "ECHO",
    "GET",
    "MGET",
    "EXISTS",
    "STRLEN",
    "GETRANGE",
    "SUBSTR",
    "LLEN",
    "LRANGE",
    "LINDEX",
    "LPOS",
    "TYPE",
    "TTL",
    "PTTL",
    "EXPIRETIME",
    "PEXPIRETIME",
    "DBSIZE",
    "KEYS",
    "SCAN",
    "COMMAND",
    "INFO",
    "HGET",
    "HMGET",
    "HGETALL",
    "HKEYS",
    "HVALS",
    "HLEN",
    "HEXISTS",
    "HSTRLEN",
    "HSCAN",
    "SMEMBERS",
    "SCARD",
    "SISMEMBER",
    "SMISMEMBER",
    "SSCAN",
    "SINTER",
    "SUNION",
    "SDIFF",
    "SINTERCARD",
    "ZRANGE",
    "ZREVRANGE",
    "ZRANGEBYSCORE",
    "ZREVRANGEBYSCORE",
    "ZRANGEBYLEX",
    "ZREVRANGEBYLEX",
    "ZSCORE",
    "ZMSCORE",
    "ZCARD",
    "ZCOUNT",
    "ZLEXCOUNT",
    "ZRANK",
    "ZREVRANK",
    "ZSCAN",
    "ZUNION",
    "ZINTER",
    "ZDIFF",
    "ZINTERCARD",
    "BITCOUNT",
    "BITPOS",
    "GETBIT",
    "BITFIELD_RO",
    "XLEN",
    "XRANGE",
    "XREVRANGE",
    "XINFO",
    "XPENDING",
    "GEOPOS",
    "GEODIST",
    "GEOHASH",
    "GEOSEARCH",
    "GEORADIUS_RO",
    "GEORADIUSBYMEMBER_RO",
    "PFCOUNT",
    "OBJECT",
    "MEMORY",
    "LASTSAVE",
    "ROLE",
    "LOLWUT",
    "SLOWLOG",
    "LATENCY",
    "DUMP",
    "SORT_RO",
    "LCS",
    "TOUCH",
];

/// Replies that list a set's members or a hash's fields in each server's own hash order.
const SET_REPLIES: &[&str] = &["SMEMBERS", "SINTER", "SUNION", "SDIFF", "KEYS", "HKEYS", "HVALS"];

/// Introspection answered by one replica without a vote: what it reports differs per replica
/// by nature (ports, memory, timings, connection ids). Documented as unvoted in the README.
/// DBSIZE too: it counts keys whose time to live ran out but that the server has not reclaimed
/// yet, which each replica does on its own schedule.
const UNVOTED: &[&str] = &["INFO", "LASTSAVE", "ROLE", "LOLWUT", "LATENCY", "MEMORY", "TIME", "DBSIZE"];

/// Redis's `SCAN` count that makes one call iterate the whole collection: it stops early only
/// after `count` elements or `count * 10` empty buckets.
const FULL_SCAN_COUNT: &str = "4294967295";

/// The most keys a checkpoint copies per batch of reads.
const CHECKPOINT_BATCH: usize = 256;

/// The RESP codec.
#[derive(Debug, Clone)]
pub struct Resp {
    max_frame: usize,
    /// Commands allowed through (upper case); `None` allows all.
    allow: Option<Arc<HashSet<String>>>,
    /// Entries of [`UNSAFE`] passed nonetheless.
    allow_unsafe: Arc<HashSet<String>>,
}

impl Resp {
    /// A RESP codec refusing requests over `max_frame` bytes and, if `allow` is given, commands
    /// not in it.
    pub fn new(max_frame: usize, allow: Option<&[String]>) -> Resp {
        let allow = allow.map(|a| Arc::new(a.iter().map(|c| c.to_ascii_uppercase()).collect()));
        Resp { max_frame, allow, allow_unsafe: Arc::default() }
    }

    /// Whether `command` (upper case) is in the allowed set, if there is one.
    fn allowed(&self, command: &str) -> bool {
        self.allow.as_ref().is_none_or(|allow| allow.contains(command))
    }

    /// Passes these entries of [`UNSAFE`] (`ordered.allow_unsafe`; the configuration checks
    /// them).
    pub fn allowing_unsafe(mut self, allow_unsafe: &[String]) -> Resp {
        self.allow_unsafe = Arc::new(allow_unsafe.iter().map(|c| c.trim().to_ascii_uppercase()).collect());
        self
    }

    /// An error reply with `message` (line breaks replaced: an error is one line).
    pub fn error(message: &str) -> Bytes {
        let mut b = BytesMut::with_capacity(message.len() + 3);
        b.put_u8(b'-');
        b.put_slice(message.replace(['\r', '\n'], " ").as_bytes());
        b.put_slice(b"\r\n");
        b.freeze()
    }
}

/// The arguments of a complete array-of-bulk-strings request, as the request parser delimited
/// it.
/// Also whether the request is canonical: Redis, like resh's framing, skips the two bytes after
/// a bulk string without looking at them, so a request with something else there is sent to
/// the replicas re-encoded (a stricter server would refuse what Redis runs).
fn arguments(request: &[u8]) -> Result<(Vec<&[u8]>, bool), ProtocolError> {
    let invalid = || ProtocolError("invalid multibulk length".into());
    let header_end = request.windows(2).position(|w| w == b"\r\n").ok_or_else(invalid)?;
    let count = string2ll(&request[1..header_end]).ok_or_else(invalid)?;
    let mut at = header_end + 2;
    let mut args = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1024));
    let mut canonical = true;
    for _ in 0..count.max(0) {
        let rest = request.get(at..).ok_or_else(invalid)?;
        let line = rest.windows(2).position(|w| w == b"\r\n").ok_or_else(invalid)?;
        let len = rest
            .get(1..line)
            .and_then(string2ll)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| ProtocolError("invalid bulk length".into()))?;
        let body = at + line + 2;
        args.push(request.get(body..body + len).ok_or_else(invalid)?);
        canonical &= request.get(body + len..body + len + 2) == Some(b"\r\n");
        at = body + len + 2;
    }
    Ok((args, canonical))
}

/// Calls `f` with whether a complete request must be re-encoded before it goes to the replicas
/// (an inline command, or an array whose bulk strings are not all followed by CRLF) and its
/// arguments, as a replica would see them.
fn with_args<T>(request: &[u8], f: impl FnOnce(bool, &[&[u8]]) -> T) -> Result<T, ProtocolError> {
    if request.first() == Some(&b'*') {
        let (args, canonical) = arguments(request)?;
        return Ok(f(!canonical, &args));
    }
    let line = request.strip_suffix(b"\n").unwrap_or(request);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let owned = split_args(line).ok_or_else(|| ProtocolError("unbalanced quotes in request".into()))?;
    let args: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    Ok(f(true, &args))
}

/// The arguments of one complete request (array or inline form), as a replica would see them.
pub fn request_args(request: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    if request.first() == Some(&b'*') {
        Ok(arguments(request)?.0.into_iter().map(<[u8]>::to_vec).collect())
    } else {
        let line = request.strip_suffix(b"\n").unwrap_or(request);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        split_args(line).ok_or_else(|| ProtocolError("unbalanced quotes in request".into()))
    }
}

/// The array form of a list of arguments.
pub fn encode_array<A: AsRef<[u8]>>(args: &[A]) -> Bytes {
    let mut b = BytesMut::with_capacity(16 + args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>());
    b.put_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        let a = a.as_ref();
        b.put_slice(format!("${}\r\n", a.len()).as_bytes());
        b.put_slice(a);
        b.put_slice(b"\r\n");
    }
    b.freeze()
}

/// The class of an error reply: its first word, with the `-`.
fn error_class(response: &[u8]) -> &[u8] {
    let end = response.iter().position(|&b| b == b' ' || b == b'\r').unwrap_or(response.len());
    &response[..end]
}

/// A bulk string reply.
fn bulk(bytes: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(bytes.len() + 16);
    b.put_slice(format!("${}\r\n", bytes.len()).as_bytes());
    b.put_slice(bytes);
    b.put_slice(b"\r\n");
    b.freeze()
}

/// What a request's agreed answer is when it changed nothing, for the few requests that may or
/// may not change state (see [`RequestClass::unchanged_if`]): a later poll of a blocked
/// `XREADGROUP` that found no new entry answers nil.
pub(crate) fn unchanged_if(request: &[u8]) -> Option<&'static [u8]> {
    // `*<count>\r\n$10\r\nxreadgroup\r\n...`: a later poll of resh's own (see [`blocking`]);
    // a client's XREADGROUP is sent in upper case.
    let rest = request.strip_prefix(b"*")?;
    let line = rest.iter().position(|&b| b == b'\r')?;
    let name = rest.get(line..)?.strip_prefix(b"\r\n$10\r\n")?.get(..10)?;
    (name == b"xreadgroup").then_some(b"*-1\r\n")
}

/// `MULTI` and `EXEC` around a unit of resh's own (a pick's pop, a database's trial), in lower
/// case: another host classifies them as a unit, but not as a client's transaction, whose EXEC
/// ends the client's WATCH. A client's own are sent in upper case.
pub(crate) const OWN_MULTI: &str = "multi";
pub(crate) const OWN_EXEC: &str = "exec";

/// `SELECT index`, as resh sends it (the form [`selected_index`] recognises).
fn select_request(index: u64) -> Bytes {
    encode_array(&[&b"SELECT"[..], index.to_string().as_bytes()])
}

/// The index of a `SELECT` in the form resh sends it.
fn selected_index(request: &[u8]) -> Option<u64> {
    let rest = request.strip_prefix(b"*2\r\n$6\r\nSELECT\r\n$")?;
    let (len, rest) = rest.split_at(rest.iter().position(|&b| b == b'\r')?);
    let len: usize = std::str::from_utf8(len).ok()?.parse().ok()?;
    let digits = rest.strip_prefix(b"\r\n")?.strip_suffix(b"\r\n")?;
    if digits.len() != len || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The requests of `parts` as words, for tests.
#[cfg(test)]
fn sent_words(parts: &[Part]) -> Vec<String> {
    parts
        .iter()
        .map(|p| {
            let args = request_args(&p.request).expect("valid");
            args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>().join(" ")
        })
        .collect()
}

/// A command name in upper case, without allocating for the names commands have (a name longer
/// than the buffer, or not UTF-8, is allocated: it names no command anyway).
fn upper(name: &[u8]) -> Upper {
    let mut buf = [0u8; 24];
    match (buf.get_mut(..name.len()), std::str::from_utf8(name)) {
        (Some(dst), Ok(_)) => {
            for (d, s) in dst.iter_mut().zip(name) {
                *d = s.to_ascii_uppercase();
            }
            Upper::Short(buf, name.len())
        }
        _ => Upper::Long(String::from_utf8_lossy(name).to_ascii_uppercase()),
    }
}

/// See [`upper`].
enum Upper {
    Short([u8; 24], usize),
    Long(String),
}

impl Upper {
    fn as_str(&self) -> &str {
        match self {
            // Upper-casing ASCII bytes of valid UTF-8 keeps it valid.
            Upper::Short(buf, len) => std::str::from_utf8(&buf[..*len]).unwrap_or_default(),
            Upper::Long(s) => s,
        }
    }
}

/// The prefix of the `PING` argument that orders a session's WATCH (the replicas only echo it).
const WATCH_MARKER: &[u8] = b"\0resh:watch\0";
/// The same, for the end of a session's watch.
const UNWATCH_MARKER: &[u8] = b"\0resh:unwatch\0";

/// The `PING` that orders a WATCH of `keys` (each length-prefixed), or the end of one.
fn watch_request(keys: Option<&[&[u8]]>) -> Part {
    let (marker, op) = match keys {
        Some(keys) => {
            let mut marker = WATCH_MARKER.to_vec();
            for key in keys {
                marker.extend_from_slice(&(key.len() as u32).to_le_bytes());
                marker.extend_from_slice(key);
            }
            (marker, WatchOp::Watch)
        }
        None => (UNWATCH_MARKER.to_vec(), WatchOp::Unwatch),
    };
    let class = RequestClass { watch: op, ..RequestClass::default() };
    Part { request: encode_array(&[&b"PING"[..], &marker]), class }
}

/// A watch marker's op and keys, if `request` is one.
fn watch_marker(request: &[u8]) -> Option<(WatchOp, Vec<Bytes>)> {
    // Markers are resh's own encoding: anything else is passed over without parsing it.
    if !request.starts_with(b"*2\r\n$4\r\nPING\r\n$") {
        return None;
    }
    let args = request_args(request).ok()?;
    let [ping, marker] = &args[..] else { return None };
    if !ping.eq_ignore_ascii_case(b"PING") {
        return None;
    }
    if marker == UNWATCH_MARKER {
        return Some((WatchOp::Unwatch, Vec::new()));
    }
    let mut rest = marker.strip_prefix(WATCH_MARKER)?;
    let mut keys = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        keys.push(Bytes::copy_from_slice(rest.get(4..4 + len)?));
        rest = &rest[4 + len..];
    }
    Some((WatchOp::Watch, keys))
}

/// Whether `request` is the command `name` without arguments.
///
/// Only resh's own encoding counts (`encode_array(&[name])`, a name shorter than ten bytes): the
/// units it looks for are the ones resh built, and another host classifies every request it is
/// delivered, so this must not parse each one.
fn is_alone(request: &[u8], name: &str) -> bool {
    let name = name.as_bytes();
    let Some(rest) = request.strip_prefix(b"*1\r\n$") else { return false };
    name.len() < 10
        && rest.first() == Some(&(b'0' + name.len() as u8))
        && rest.get(1..3) == Some(b"\r\n")
        && rest.get(3..3 + name.len()) == Some(name)
        && rest.get(3 + name.len()..) == Some(b"\r\n")
}

impl Resp {
    /// Where the context unit starting at `at` ends (its `SELECT 0`), if one does: `SELECT n`
    /// (n > 0), then one request or one `MULTI` ... `EXEC`, then `SELECT 0`.
    fn context_end(&self, requests: &[Bytes], at: usize) -> Option<usize> {
        selected_index(&requests[at]).filter(|&n| n > 0)?;
        let inner_end = if requests.get(at + 1).is_some_and(|r| is_alone(r, "MULTI")) {
            (at + 2..requests.len()).find(|&i| is_alone(&requests[i], "EXEC"))?
        } else if requests.get(at + 1).is_some_and(|r| is_alone(r, OWN_MULTI)) {
            (at + 2..requests.len()).find(|&i| is_alone(&requests[i], OWN_EXEC))?
        } else {
            at + 1
        };
        let end = inner_end + 1;
        (selected_index(requests.get(end)?) == Some(0)).then_some(end)
    }

    /// How the requests of a transaction unit (`MULTI`, its commands, `EXEC`) are logged and
    /// voted. All are logged, read-only ones too: a replica rebuilt by replay may join the vote
    /// in the middle of a unit, and must have been replayed its `MULTI`. Each command's answer
    /// is `+QUEUED` (or a queueing error), voted byte for byte; `EXEC`'s answer holds theirs, so
    /// it is compared element by element as unordered as the most lenient of them.
    pub fn classify_unit(&self, requests: &[Bytes]) -> Vec<RequestClass> {
        let shapes: Vec<ReplyShape> = requests
            .get(1..requests.len().saturating_sub(1))
            .unwrap_or_default()
            .iter()
            .map(|r| match self.dispatch(r) {
                Ok(Dispatch::Forward { shape, .. }) => shape,
                _ => ReplyShape::Exact,
            })
            .collect();
        let exec_shape = if shapes.contains(&ReplyShape::Unvoted) {
            ReplyShape::Unvoted
        } else if shapes.iter().any(|s| *s != ReplyShape::Exact) {
            ReplyShape::EachNestedSet
        } else {
            ReplyShape::Exact
        };
        let last = requests.len().saturating_sub(1);
        (0..requests.len())
            .map(|i| RequestClass {
                logged: true,
                shape: if i == last { exec_shape } else { ReplyShape::Exact },
                continues: i != last,
                // A PUBLISH inside a transaction reaches the replicas only (documented).
                publish: false,
                // The session's watch is checked at its EXEC (see `ordered::watch`).
                watch: if i == last && is_alone(&requests[i], "EXEC") { WatchOp::Exec } else { WatchOp::None },
                unchanged_if: None,
            })
            .collect()
    }
}

/// Whether `arg` is `name`, in any case.
fn is(arg: Option<&&[u8]>, name: &str) -> bool {
    arg.is_some_and(|a| a.eq_ignore_ascii_case(name.as_bytes()))
}

/// What the command tables say of one command, looked up once per request.
#[derive(Clone, Copy, Debug, Default)]
struct Class {
    per_connection: bool,
    never: bool,
    blocking: bool,
    random: bool,
    read_only: bool,
    set_reply: bool,
    unvoted: bool,
    /// Refused as unsafe (all its subcommands).
    unsafe_command: bool,
    /// Has subcommands the rules look at.
    subcommands: bool,
}

/// The command tables as one map, built once.
fn classes() -> &'static HashMap<&'static str, Class> {
    static CLASSES: OnceLock<HashMap<&'static str, Class>> = OnceLock::new();
    CLASSES.get_or_init(|| {
        let mut map: HashMap<&'static str, Class> = HashMap::new();
        fn mark(map: &mut HashMap<&'static str, Class>, names: &[&'static str], set: fn(&mut Class)) {
            for name in names {
                set(map.entry(name).or_default());
            }
        }
        mark(&mut map, PER_CONNECTION, |c| c.per_connection = true);
        mark(&mut map, NEVER, |c| c.never = true);
        mark(&mut map, BLOCKING, |c| c.blocking = true);
        mark(&mut map, RANDOM, |c| c.random = true);
        mark(&mut map, READ_ONLY, |c| c.read_only = true);
        mark(&mut map, SET_REPLIES, |c| c.set_reply = true);
        mark(&mut map, UNVOTED, |c| c.unvoted = true);
        for name in UNSAFE {
            match name.split_once(' ') {
                Some((command, _)) => map.entry(command).or_default().subcommands = true,
                None => map.entry(name).or_default().unsafe_command = true,
            }
        }
        mark(&mut map, &["CONFIG", "DEBUG", "COMMAND", "SLOWLOG", "OBJECT"], |c| c.subcommands = true);
        map
    })
}

impl Resp {
    /// What to do with a request of these arguments (`request` as the client sent it).
    /// `steps`: a session's request, at this time: a random choice or a blocking command starts
    /// the steps of [`random`] or [`blocking`]. Without (a request another host ordered), it is
    /// classified as those steps send it.
    fn dispatch_args(&self, request: &[u8], rewrite: bool, args: &[&[u8]], steps: Option<&dyn Clock>) -> Dispatch {
        let Some(name) = args.first() else { return Dispatch::Ignore };
        let upper_name = upper(name);
        let command = upper_name.as_str();
        let class = classes().get(command).copied().unwrap_or_default();
        // The subcommand, for the few commands whose rules depend on it.
        let sub = match args.get(1) {
            Some(sub) if class.subcommands => String::from_utf8_lossy(sub).to_ascii_uppercase(),
            _ => String::new(),
        };
        let refuse = |why: String| Dispatch::Reply(Resp::error(&format!("ERR resh: {why}")));
        if command == "QUIT" {
            return Dispatch::Close(Bytes::from_static(b"+OK\r\n"));
        }
        if command == "HELLO" && args.len() == 2 && args[1] == b"2" {
            // What a session's HELLO becomes (see [`RespClient`]).
            let request = encode_array(args);
            return Dispatch::Forward { request, logged: false, shape: ReplyShape::Unvoted, publish: false };
        }
        if class.per_connection {
            return refuse(format!(
                "'{command}' keeps per-connection state, which ordered mode does not support (all sessions share one connection per replica)"
            ));
        }
        if class.never {
            return refuse(format!("'{command}' would take over the connection resh shares between all sessions"));
        }
        let blocking_read =
            (command == "XREAD" || command == "XREADGROUP") && args.iter().any(|a| a.eq_ignore_ascii_case(b"BLOCK"));
        // Blocking commands are served by polling (see [`blocking`]), after the allowed set.
        let blocks = class.blocking || blocking_read;
        if blocks && (steps.is_none() || matches!(command, "WAIT" | "WAITAOF")) {
            return refuse(format!(
                "'{command}' blocks its connection, which ordered mode shares between all sessions"
            ));
        }
        // DEBUG's read-only subcommands pass; the rest crash, reload or reconfigure a replica.
        let debug_read =
            command == "DEBUG" && matches!(sub.as_str(), "DIGEST" | "DIGEST-VALUE" | "SLEEP" | "OBJECT" | "HELP");
        if (class.unsafe_command || class.subcommands) && !debug_read {
            let unsafe_name = UNSAFE.iter().copied().find(|u| match u.split_once(' ') {
                Some((c, s)) => c == command && s == sub,
                None => *u == command,
            });
            if let Some(name) = unsafe_name.filter(|name| !self.allow_unsafe.contains(*name)) {
                return refuse(format!(
                    "'{name}' acts on every replica at once (stop, re-point, reconfigure or crash them) and is refused; name it in ordered.allow_unsafe to pass it"
                ));
            }
        }
        if let Some(allow) = &self.allow {
            if !allow.contains(command) {
                return refuse(format!("command '{command}' is not in the allowed set of this service"));
            }
        }
        if let Some(clock) = steps.filter(|_| blocks) {
            if let Some(polling) = blocking::start(command, args, clock.now()) {
                return polling;
            }
            return refuse(format!(
                "'{command}' blocks its connection, which ordered mode shares between all sessions"
            ));
        }
        if class.random {
            if let Some(steps) = random::start(command, args).filter(|_| steps.is_some()) {
                return steps;
            }
            // As the steps send it: an SRANDMEMBER (and friends) is a proposal, unvoted. An
            // SPOP goes as it is only when the replicas refuse it alike (a negative count).
            let request = if rewrite { encode_array(args) } else { Bytes::copy_from_slice(request) };
            let spop = command == "SPOP";
            let shape = if spop { ReplyShape::Exact } else { ReplyShape::Unvoted };
            return Dispatch::Forward { request, logged: spop, shape, publish: false };
        }
        if let Some(clock) = steps {
            if let Some(time_left) = ttl::start(command, args, request, clock) {
                return time_left;
            }
        }
        if let Some(scan) = self.full_scan(command, args) {
            return scan;
        }
        let shape = if class.set_reply {
            ReplyShape::Set
        } else if command == "HGETALL" {
            ReplyShape::Map
        } else if command == "COMMAND" && !matches!(sub.as_str(), "COUNT" | "GETKEYS" | "GETKEYSANDFLAGS") {
            ReplyShape::NestedSet
        } else if class.unvoted
            || (command == "CONFIG" && sub == "GET")
            || (command == "SLOWLOG" && sub != "RESET")
            || (command == "OBJECT" && matches!(sub.as_str(), "FREQ" | "IDLETIME"))
            || (command == "DEBUG" && sub == "OBJECT")
        {
            ReplyShape::Unvoted
        } else {
            ReplyShape::Exact
        };
        let read_only = class.read_only
            || debug_read
            || (command == "CONFIG" && matches!(sub.as_str(), "GET" | "HELP" | "RESETSTAT"));
        let request = if rewrite {
            encode_array(args)
        } else if command == "XREADGROUP" && args[0] != b"XREADGROUP" {
            // In upper case: resh's own later polls are told by their lower-case name.
            let mut upper_case = args.to_vec();
            upper_case[0] = b"XREADGROUP";
            encode_array(&upper_case)
        } else {
            Bytes::copy_from_slice(request)
        };
        // A message is delivered by resh to its own subscribers; the replicas, which have none,
        // still execute it (in order, for keyspace effects such as scripts' PUBLISH aside).
        let publish = command == "PUBLISH" && args.len() == 3;
        Dispatch::Forward { request, logged: !read_only, shape, publish }
    }

    /// `SCAN` and its family, served by one call that iterates the whole collection: each
    /// replica's cursors follow its own hash table, so no cursor could be voted. The client gets
    /// every element once, with cursor 0 (the end), as Redis itself answers for a small
    /// collection. A cursor other than 0 can only be a client's own invention: the iteration it
    /// continues is over.
    fn full_scan(&self, command: &str, args: &[&[u8]]) -> Option<Dispatch> {
        let (cursor_at, pairs) = match command {
            "SCAN" => (1, false),
            "SSCAN" => (2, false),
            "HSCAN" => (2, !args.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"NOVALUES"))),
            "ZSCAN" => (2, true),
            _ => return None,
        };
        let cursor = args.get(cursor_at)?;
        // Anything malformed goes to the replicas as it is: their error is Redis's.
        let options = args.get(cursor_at + 1..)?;
        if options.len() % 2 != 0 {
            return None;
        }
        let Some(cursor) = std::str::from_utf8(cursor).ok().and_then(|c| c.parse::<u64>().ok()) else {
            return Some(Dispatch::Reply(Resp::error("ERR invalid cursor")));
        };
        if cursor != 0 {
            return Some(Dispatch::Reply(Bytes::from_static(b"*2\r\n$1\r\n0\r\n*0\r\n")));
        }
        let mut rewritten: Vec<&[u8]> = args[..=cursor_at].to_vec();
        for option in options.chunks(2) {
            if !is(option.first(), "COUNT") {
                rewritten.extend_from_slice(option);
            }
        }
        rewritten.extend_from_slice(&[b"COUNT", FULL_SCAN_COUNT.as_bytes()]);
        let shape = if pairs { ReplyShape::ScanMap } else { ReplyShape::ScanSet };
        Some(Dispatch::Forward { request: encode_array(&rewritten), logged: false, shape, publish: false })
    }
}

impl Codec for Resp {
    fn name(&self) -> &'static str {
        "resp"
    }

    fn request_parser(&self) -> Box<dyn RequestParser> {
        Box::new(RespRequestParser::new(self.max_frame))
    }

    fn response_parser(&self) -> Box<dyn ResponseParser> {
        Box::new(RespResponseParser::default())
    }

    fn dispatch(&self, request: &[u8]) -> Result<Dispatch, ProtocolError> {
        with_args(request, |rewrite, args| self.dispatch_args(request, rewrite, args, None))
    }

    fn classify(&self, requests: &[Bytes]) -> Vec<RequestClass> {
        let mut classes = Vec::with_capacity(requests.len());
        let mut at = 0;
        while at < requests.len() {
            // A session in another database orders each submission (one request, or one
            // transaction) between `SELECT n` and `SELECT 0`, as one logged unit.
            if let Some(end) = self.context_end(requests, at) {
                let inner = self.classify(&requests[at + 1..end]);
                let enter = RequestClass { logged: true, continues: true, ..RequestClass::default() };
                classes.push(enter);
                classes.extend(inner.into_iter().map(|c| RequestClass { logged: true, continues: true, ..c }));
                classes.push(RequestClass { logged: true, ..RequestClass::default() });
                at = end + 1;
                continue;
            }
            // A session never forwards MULTI alone: it starts a unit that ends at its EXEC.
            // resh's own units (lower case) are units too, but their EXEC ends no WATCH.
            let own = is_alone(&requests[at], OWN_MULTI);
            let (multi, exec) = if own { (OWN_MULTI, OWN_EXEC) } else { ("MULTI", "EXEC") };
            let unit_end = (own || is_alone(&requests[at], multi))
                .then(|| (at + 1..requests.len()).find(|&i| is_alone(&requests[i], exec)))
                .flatten();
            match unit_end {
                Some(end) => {
                    let mut unit = self.classify_unit(&requests[at..=end]);
                    if own {
                        unit.iter_mut().for_each(|c| c.watch = WatchOp::None);
                    }
                    classes.extend(unit);
                    at = end + 1;
                }
                None => {
                    let watch = watch_marker(&requests[at]).map_or(WatchOp::None, |(op, _)| op);
                    let unchanged_if = unchanged_if(&requests[at]);
                    classes.push(RequestClass {
                        watch,
                        unchanged_if,
                        ..RequestClass::of(&self.dispatch(&requests[at]))
                    });
                    at += 1;
                }
            }
        }
        classes
    }

    fn client(&self, id: u64) -> Box<dyn ClientState> {
        Box::new(RespClient::new(self.clone(), id))
    }

    fn vote_digest(&self, response: &[u8]) -> FrameDigest {
        let exact = voter::fault::digest(response);
        if response.first() == Some(&b'-') {
            FrameDigest { vote: voter::fault::digest(error_class(response)), exact, error: true }
        } else {
            FrameDigest { vote: exact, exact, error: false }
        }
    }

    fn protocol_error(&self, error: &ProtocolError) -> Bytes {
        Resp::error(&format!("ERR Protocol error: {error}"))
    }

    fn answer_error(&self, error: &AnswerError) -> Option<Bytes> {
        // Redis clients surface error replies to the application; saying why beats a bare reset.
        let text = match error {
            AnswerError::Undecidable => {
                "ERR resh: the replicas did not agree on an answer; the session is aborted".to_string()
            }
            AnswerError::NoQuorum => {
                "TRYAGAIN resh: fewer replicas are in the vote than the quorum; the request was not executed".to_string()
            }
            AnswerError::TimedOut { limit_ms } => format!(
                "ERR resh: no agreed answer within ordered.request_timeout_ms ({limit_ms} ms); the request may still take effect"
            ),
            AnswerError::TooLarge { len, limit } => format!(
                "ERR resh: the answer is {len} bytes, more than ordered.max_frame_bytes ({limit}); the request was executed"
            ),
            AnswerError::ClosedByService => {
                "ERR resh: every replica closed its connection on this request; it is refused".to_string()
            }
            AnswerError::Fenced => {
                "ERR resh: this host stopped serving; the request's outcome is unknown (other hosts may have executed it)"
                    .to_string()
            }
            AnswerError::NotServing => {
                "TRYAGAIN resh: this host is not serving now (joining, or cut off from the group); the request was not executed: try another host".to_string()
            }
            AnswerError::RequestTooLarge { len, limit } => format!(
                "ERR resh: the request is {len} bytes, more than the group carries in one message ({limit}); it was not executed"
            ),
        };
        Some(Resp::error(&text))
    }

    fn canonical_error(&self, response: &[u8]) -> Bytes {
        let class = String::from_utf8_lossy(error_class(response).get(1..).unwrap_or_default()).into_owned();
        Resp::error(&format!("{class} resh: the replicas agree on a {class} error but word it differently"))
    }

    fn shaped_digest(&self, shape: ReplyShape, response: &[u8]) -> Option<voter::Digest> {
        shape::shaped_digest(shape, response)
    }

    fn published(&self, request: &[u8]) -> Option<(Bytes, Bytes)> {
        let args = request_args(request).ok()?;
        match &args[..] {
            [command, channel, message] if command.eq_ignore_ascii_case(b"PUBLISH") => {
                Some((Bytes::copy_from_slice(channel), Bytes::copy_from_slice(message)))
            }
            _ => None,
        }
    }

    fn push_message(&self, channel: &[u8], message: &[u8], pattern: Option<&[u8]>) -> Bytes {
        match pattern {
            Some(pattern) => encode_array(&[&b"pmessage"[..], pattern, channel, message]),
            None => encode_array(&[&b"message"[..], channel, message]),
        }
    }

    fn publish_answer(&self, receivers: usize) -> Bytes {
        Bytes::from(format!(":{receivers}\r\n"))
    }

    fn pubsub_reply(&self, answer: &PubSubAnswer) -> Bytes {
        match answer {
            PubSubAnswer::Names(names) => encode_array(names),
            PubSubAnswer::Counts(counts) => {
                let mut out = BytesMut::new();
                out.extend_from_slice(format!("*{}\r\n", counts.len() * 2).as_bytes());
                for (name, count) in counts {
                    out.extend_from_slice(&bulk(name));
                    out.extend_from_slice(format!(":{count}\r\n").as_bytes());
                }
                out.freeze()
            }
            PubSubAnswer::Count(n) => Bytes::from(format!(":{n}\r\n")),
        }
    }

    fn watched_keys(&self, request: &[u8]) -> Vec<Bytes> {
        watch_marker(request).map(|(_, keys)| keys).unwrap_or_default()
    }

    fn written_keys(&self, request: &[u8]) -> Option<Vec<Bytes>> {
        let args = request_args(request).ok()?;
        let command = args.first()?;
        if [&b"FLUSHALL"[..], b"FLUSHDB", b"SWAPDB"].iter().any(|c| command.eq_ignore_ascii_case(c)) {
            return None;
        }
        // A session's database around its requests names no key; nor does a read (logged all
        // the same inside a unit, such as a session's database's).
        let read_only = classes().get(upper(command).as_str()).is_some_and(|c| c.read_only);
        if read_only || command.eq_ignore_ascii_case(b"SELECT") {
            return Some(Vec::new());
        }
        Some(args.into_iter().skip(1).map(Bytes::from).collect())
    }

    fn abort_request(&self) -> Option<Bytes> {
        Some(encode_array(&["DISCARD"]))
    }

    fn is_error(&self, response: &[u8]) -> bool {
        matches!(response.first(), Some(b'-') | Some(b'!'))
    }

    fn reset_request(&self) -> Option<Bytes> {
        Some(encode_array(&["FLUSHALL"]))
    }

    fn checkpoint(&self) -> Option<Box<dyn Checkpoint>> {
        Some(Box::new(checkpoint::RespCheckpoint::new(CHECKPOINT_BATCH)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{FixedClock, RequestClass};
    use proptest::prelude::*;

    fn resp() -> Resp {
        Resp::new(1 << 20, None)
    }

    #[test]
    fn dispatch_rules() {
        let r = Resp::new(1 << 20, Some(&["get".to_string(), "set".to_string(), "ping".to_string()]));
        match r.dispatch(b"PING\r\n") {
            Ok(Dispatch::Forward { request, logged, .. }) => {
                assert_eq!(&request[..], b"*1\r\n$4\r\nPING\r\n");
                assert!(!logged);
            }
            other => panic!("{other:?}"),
        }
        match r.dispatch(b"*3\r\n$3\r\nset\r\n$1\r\nk\r\n$1\r\nv\r\n") {
            Ok(Dispatch::Forward { logged, .. }) => assert!(logged),
            other => panic!("{other:?}"),
        }
        assert!(matches!(r.dispatch(b"*1\r\n$5\r\nMULTI\r\n"), Ok(Dispatch::Reply(e)) if e.starts_with(b"-ERR resh:")));
        assert!(matches!(r.dispatch(b"*3\r\n$5\r\nBLPOP\r\n$1\r\nl\r\n$1\r\n0\r\n"), Ok(Dispatch::Reply(_))));
        assert!(
            matches!(r.dispatch(b"*1\r\n$4\r\nINCR\r\n"), Ok(Dispatch::Reply(e)) if e.starts_with(b"-ERR resh: command 'INCR'"))
        );
        assert!(matches!(r.dispatch(b"*1\r\n$4\r\nquit\r\n"), Ok(Dispatch::Close(_))));
        assert!(matches!(r.dispatch(b"\r\n"), Ok(Dispatch::Ignore)));
        assert!(matches!(r.dispatch(b"*0\r\n"), Ok(Dispatch::Ignore)));
    }

    #[test]
    fn inline_commands_are_split_like_redis_and_sent_as_arrays() {
        let r = resp();
        match r.dispatch(b"SET k \"a b\"\r\n") {
            Ok(Dispatch::Forward { request, .. }) => {
                assert_eq!(&request[..], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\na b\r\n")
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(r.dispatch(b"SET k \"a\r\n"), Err(e) if e == ProtocolError("unbalanced quotes in request".into()))
        );
        assert_eq!(
            r.protocol_error(&ProtocolError("unbalanced quotes in request".into())),
            &b"-ERR Protocol error: unbalanced quotes in request\r\n"[..]
        );
    }

    #[test]
    fn what_redis_skips_after_a_bulk_string_resh_skips_and_re_encodes() {
        let r = resp();
        let input = b"*1\r\n$3\r\nPINGX\r\n";
        // Redis runs `PIN` (and then sees an empty line): so does resh's framing.
        assert_eq!(r.request_len(input), Ok(Some(13)));
        match r.dispatch(&input[..13]) {
            Ok(Dispatch::Forward { request, .. }) => assert_eq!(request, encode_array(&["PIN"])),
            other => panic!("{other:?}"),
        }
        // A canonical request goes as it came (no copy into a new encoding).
        assert!(
            matches!(r.dispatch(b"*1\r\n$4\r\nPING\r\n"), Ok(Dispatch::Forward { request, .. }) if &request[..] == b"*1\r\n$4\r\nPING\r\n")
        );
    }

    #[test]
    fn debug_sleep_is_not_logged_and_the_rest_of_debug_is_unsafe() {
        let r = resp();
        assert!(matches!(r.dispatch(b"DEBUG SLEEP 1\r\n"), Ok(Dispatch::Forward { logged: false, .. })));
        assert!(matches!(r.dispatch(b"DEBUG DIGEST\r\n"), Ok(Dispatch::Forward { logged: false, .. })));
        assert!(
            matches!(r.dispatch(b"DEBUG RELOAD\r\n"), Ok(Dispatch::Reply(e)) if e.starts_with(b"-ERR resh: 'DEBUG'"))
        );
        let r = resp().allowing_unsafe(&["debug".to_string()]);
        assert!(matches!(r.dispatch(b"DEBUG RELOAD\r\n"), Ok(Dispatch::Forward { logged: true, .. })));
    }

    fn refused(r: &Resp, request: &str) -> String {
        match r.dispatch(&encode_array(&request.split(' ').collect::<Vec<_>>())) {
            Ok(Dispatch::Reply(e)) if e.starts_with(b"-") => String::from_utf8_lossy(&e).into_owned(),
            other => panic!("{request}: {other:?}"),
        }
    }

    fn forwarded(r: &Resp, request: &str) -> (Bytes, bool, ReplyShape) {
        match r.dispatch(&encode_array(&request.split(' ').collect::<Vec<_>>())) {
            Ok(Dispatch::Forward { request, logged, shape, .. }) => (request, logged, shape),
            other => panic!("{request}: {other:?}"),
        }
    }

    #[test]
    fn commands_that_act_on_every_replica_are_refused_unless_allowed() {
        let r = resp();
        for request in [
            "SHUTDOWN",
            "shutdown NOSAVE",
            "REPLICAOF 10.0.0.1 6379",
            "SLAVEOF no one",
            "CONFIG SET save x",
            "CONFIG REWRITE",
            "DEBUG SEGFAULT",
            "FAILOVER",
            "MODULE LOAD x",
            "ACL SETUSER u",
        ] {
            assert!(refused(&r, request).contains("ordered.allow_unsafe"), "{request}");
        }
        for request in ["MONITOR", "SYNC", "PSYNC ? -1", "REPLCONF listening-port 1"] {
            assert!(refused(&r, request).contains("take over the connection"), "{request}");
        }
        // Reading the configuration is introspection, unvoted and not logged.
        assert!(!forwarded(&r, "CONFIG GET port").1);
        assert_eq!(forwarded(&r, "CONFIG GET port").2, ReplyShape::Unvoted);
        let r = resp().allowing_unsafe(&[" config set ".to_string()]);
        // Allowed, it is ordered and logged, so that a replica rebuilt by replay gets it too.
        let (_, logged, shape) = forwarded(&r, "CONFIG SET maxmemory 1gb");
        assert!(logged);
        assert_eq!(shape, ReplyShape::Exact);
        assert!(refused(&r, "CONFIG REWRITE").contains("ordered.allow_unsafe"));
        assert!(forwarded(&r, "FLUSHALL ASYNC").1, "FLUSHALL is logged");
    }

    #[test]
    fn unordered_replies_are_voted_by_their_shape() {
        let r = resp();
        for (request, shape) in [
            ("SMEMBERS s", ReplyShape::Set),
            ("sinter a b", ReplyShape::Set),
            ("SUNION a b", ReplyShape::Set),
            ("SDIFF a b", ReplyShape::Set),
            ("KEYS *", ReplyShape::Set),
            ("HKEYS h", ReplyShape::Set),
            ("HVALS h", ReplyShape::Set),
            ("HGETALL h", ReplyShape::Map),
            ("COMMAND", ReplyShape::NestedSet),
            ("COMMAND INFO get", ReplyShape::NestedSet),
            ("COMMAND COUNT", ReplyShape::Exact),
            ("INFO", ReplyShape::Unvoted),
            ("SLOWLOG GET", ReplyShape::Unvoted),
            ("SLOWLOG RESET", ReplyShape::Exact),
            ("OBJECT FREQ k", ReplyShape::Unvoted),
            ("OBJECT ENCODING k", ReplyShape::Exact),
            ("DEBUG OBJECT k", ReplyShape::Unvoted),
            ("LRANGE l 0 -1", ReplyShape::Exact),
            ("ZRANGE z 0 -1", ReplyShape::Exact),
        ] {
            let (_, logged, got) = forwarded(&r, request);
            assert_eq!(got, shape, "{request}");
            assert!(!logged, "{request} changes nothing");
        }
    }

    /// A database other than 0: tried on the replicas in a unit of its own, then every
    /// submission is ordered between `SELECT n` and `SELECT 0`, and another host classifies
    /// those units from their bytes as the session did.
    #[test]
    fn a_session_database_is_tried_then_wraps_its_requests() {
        let r = Resp::new(1 << 20, None);
        let mut a = r.client(1);
        assert_eq!(a.context(), None);
        let (parts, then) = match client_says(&mut *a, "SELECT 3") {
            Dispatch::Ask { parts, then } => (parts, then),
            other => panic!("{other:?}"),
        };
        let sent: Vec<Bytes> = parts.iter().map(|p| p.request.clone()).collect();
        assert_eq!(
            sent,
            vec![
                encode_array(&["multi"]),
                encode_array(&["SELECT", "3"]),
                encode_array(&["SELECT", "0"]),
                encode_array(&["exec"])
            ]
        );
        // Another host classifies the trial as a unit of resh's own: its EXEC ends no WATCH.
        let classes = r.classify(&sent);
        assert_eq!(classes, parts.iter().map(|p| p.class).collect::<Vec<_>>());
        assert!(classes.iter().all(|c| c.watch == WatchOp::None));
        assert!(parts.iter().all(|p| p.class.logged));
        assert_eq!(parts.iter().map(|p| p.class.continues).collect::<Vec<_>>(), vec![true, true, true, false]);
        assert_eq!(a.context(), None, "not before the replicas took it");
        // The replicas refuse it: the client gets their error, and stays where it was.
        let refused = then.answered(b"*2\r\n-ERR DB index is out of range\r\n+OK\r\n", std::time::Instant::now());
        assert_eq!(reply(refused), "-ERR DB index is out of range\r\n");
        assert_eq!(a.context(), None);
        let Dispatch::Ask { then, .. } = client_says(&mut *a, "SELECT 3") else { panic!("a step") };
        assert_eq!(reply(then.answered(b"*2\r\n+OK\r\n+OK\r\n", std::time::Instant::now())), "+OK\r\n");
        let context = a.context().expect("database 3");
        assert_eq!(
            (context.enter.clone(), context.leave.clone()),
            (encode_array(&["SELECT", "3"]), encode_array(&["SELECT", "0"]))
        );
        assert_eq!(reply(client_says(&mut *a, "SELECT 3")), "+OK\r\n", "the same database again");
        // Around a request, and around a transaction: each one unit, as another host sees it.
        let get = Part { request: encode_array(&["GET", "k"]), class: RequestClass::default() };
        let (wrapped, answer) = context.around(vec![get]);
        assert_eq!(answer, 1);
        let bytes: Vec<Bytes> = wrapped.iter().map(|p| p.request.clone()).collect();
        let classes = r.classify(&bytes);
        assert_eq!(classes, wrapped.iter().map(|p| p.class).collect::<Vec<_>>());
        assert_eq!(
            classes.iter().map(|c| (c.logged, c.continues)).collect::<Vec<_>>(),
            vec![(true, true), (true, true), (true, false)]
        );
        for command in ["MULTI", "SADD s a", "SMEMBERS s"] {
            assert_eq!(
                reply(client_says(&mut *a, command)),
                if command == "MULTI" { "+OK\r\n" } else { "+QUEUED\r\n" }
            );
        }
        let Dispatch::Unit(parts) = client_says(&mut *a, "EXEC") else { panic!("a unit") };
        let (wrapped, answer) = context.around(parts);
        assert_eq!(answer, 4, "EXEC's answer is the client's");
        let bytes: Vec<Bytes> = wrapped.iter().map(|p| p.request.clone()).collect();
        let classes = r.classify(&bytes);
        assert_eq!(classes, wrapped.iter().map(|p| p.class).collect::<Vec<_>>());
        assert_eq!(classes[4].shape, ReplyShape::EachNestedSet, "EXEC keeps its shape inside the context");
        // Not a context unit: SELECT 0 first, or no SELECT 0 at the end.
        let plain = [encode_array(&["SELECT", "0"]), encode_array(&["GET", "k"])];
        assert!(r.classify(&plain).iter().all(|c| !c.continues));
        // SELECT inside a transaction is not served; RESET goes back to database 0.
        client_says(&mut *a, "MULTI");
        assert!(reply(client_says(&mut *a, "SELECT 1")).contains("cannot be part of a transaction"));
        assert!(reply(client_says(&mut *a, "EXEC")).starts_with("-EXECABORT"));
        assert_eq!(reply(client_says(&mut *a, "RESET")), "+RESET\r\n");
        assert_eq!(a.context(), None);
    }

    #[test]
    fn random_choices_are_asked_in_steps_and_classified_as_the_steps_send_them() {
        let r = resp();
        let mut c = r.client(1);
        for request in
            ["SPOP s", "SPOP s 2", "RANDOMKEY", "SRANDMEMBER s", "HRANDFIELD h 2 WITHVALUES", "ZRANDMEMBER z"]
        {
            assert!(matches!(client_says(&mut *c, request), Dispatch::Ask { .. }), "{request}");
        }
        // What Redis refuses alike goes as it is.
        assert!(matches!(client_says(&mut *c, "SPOP s -1"), Dispatch::Forward { logged: true, .. }));
        // Another host sees the proposal (SRANDMEMBER and friends): unvoted, not logged.
        for request in ["SRANDMEMBER s", "SRANDMEMBER s 2", "RANDOMKEY", "HRANDFIELD h", "ZRANDMEMBER z 1 WITHSCORES"] {
            let (_, logged, shape) = forwarded(&r, request);
            assert!(!logged, "{request}");
            assert_eq!(shape, ReplyShape::Unvoted, "{request}");
        }
        // The allowed set applies first, to what resh serves itself too.
        let only = Resp::new(1 << 20, Some(&["GET".to_string()]));
        for request in ["SPOP s", "MULTI", "WATCH k", "SUBSCRIBE c", "BLPOP q 0"] {
            assert!(reply(client_says(&mut *only.client(2), request)).contains("not in the allowed set"), "{request}");
        }
    }

    #[test]
    fn a_scan_is_one_full_iteration() {
        let r = resp();
        let (request, logged, shape) = forwarded(&r, "SCAN 0 MATCH user:* COUNT 10 TYPE string");
        assert_eq!(
            request,
            encode_array(&["SCAN", "0", "MATCH", "user:*", "TYPE", "string", "COUNT", FULL_SCAN_COUNT])
        );
        assert!(!logged);
        assert_eq!(shape, ReplyShape::ScanSet);
        // Dispatching the rewritten request again (another host's) gives the same request.
        assert!(matches!(r.dispatch(&request), Ok(Dispatch::Forward { request: again, .. }) if again == request));
        assert_eq!(forwarded(&r, "SSCAN s 0").2, ReplyShape::ScanSet);
        assert_eq!(forwarded(&r, "HSCAN h 0 MATCH f*").2, ReplyShape::ScanMap);
        assert_eq!(forwarded(&r, "ZSCAN z 0").2, ReplyShape::ScanMap);
        assert_eq!(forwarded(&r, "HSCAN h 0").0, encode_array(&["HSCAN", "h", "0", "COUNT", FULL_SCAN_COUNT]));
        // A cursor resh never gave: the iteration is over.
        assert!(
            matches!(r.dispatch(&encode_array(&["SCAN", "17"])), Ok(Dispatch::Reply(a)) if &a[..] == b"*2\r\n$1\r\n0\r\n*0\r\n")
        );
        assert_eq!(refused(&r, "SCAN x"), "-ERR invalid cursor\r\n");
        // Malformed options go to the replicas, whose error is Redis's.
        assert_eq!(forwarded(&r, "SCAN 0 COUNT").0, encode_array(&["SCAN", "0", "COUNT"]));
    }

    fn client_says(c: &mut dyn ClientState, request: &str) -> Dispatch {
        c.dispatch(
            &encode_array(&request.split(' ').collect::<Vec<_>>()),
            &FixedClock(SystemTime::UNIX_EPOCH, std::time::Instant::now()),
        )
        .expect("valid")
    }

    fn reply(d: Dispatch) -> String {
        match d {
            Dispatch::Reply(a) => String::from_utf8_lossy(&a).into_owned(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn relative_times_are_pinned_by_resh() {
        let r = resp();
        let mut c = r.client(1);
        let wall = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_000_000);
        let clock = FixedClock(wall, std::time::Instant::now());
        let mut sent = |request: &str| match c.dispatch(&encode_array(&request.split(' ').collect::<Vec<_>>()), &clock)
        {
            Ok(Dispatch::Forward { request, logged, .. }) => {
                let args = request_args(&request).expect("valid");
                (args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>().join(" "), logged)
            }
            other => panic!("{request}: {other:?}"),
        };
        assert_eq!(sent("EXPIRE k 10"), ("PEXPIREAT k 1010000".into(), true));
        assert_eq!(sent("pexpire k 10 NX").0, "PEXPIREAT k 1000010 NX");
        assert_eq!(sent("SETEX k 5 v").0, "SET k v PXAT 1005000");
        assert_eq!(sent("PSETEX k 5 v").0, "SET k v PXAT 1000005");
        assert_eq!(sent("SET k v NX ex 2 GET").0, "SET k v NX PXAT 1002000 GET");
        assert_eq!(sent("GETEX k PX 7").0, "GETEX k PXAT 1000007");
        // What Redis refuses or treats specially goes as it is: the replicas' answer is Redis's.
        assert_eq!(sent("EXPIRE k 0").0, "EXPIRE k 0");
        assert_eq!(sent("EXPIRE k -1").0, "EXPIRE k -1");
        assert_eq!(sent("SETEX k x v").0, "SETEX k x v");
        assert_eq!(sent("EXPIRE k 99999999999999999").0, "EXPIRE k 99999999999999999");
        assert_eq!(sent("SET k EX 10").0, "SET k EX 10");
        assert_eq!(sent("SET k v EX").0, "SET k v EX");
        // XADD *: the millisecond is resh's, the sequence Redis's.
        assert_eq!(sent("XADD s * f v").0, format!("XADD s {}-* f v", client::LAST_XADD_MS.load(Ordering::Relaxed)));
        assert!(sent("XADD s * f v").0.ends_with("-* f v"));
        assert!(sent("XADD s NOMKSTREAM MAXLEN ~ 100 LIMIT 10 * f v")
            .0
            .starts_with("XADD s NOMKSTREAM MAXLEN ~ 100 LIMIT 10 "));
        assert_eq!(sent("XADD s 5-1 f v").0, "XADD s 5-1 f v");
        let ms: u64 = sent("XADD s MINID 0 * f v")
            .0
            .split(' ')
            .nth(4)
            .and_then(|id| id.strip_suffix("-*")?.parse().ok())
            .expect("pinned");
        assert!(ms >= 1_000_000, "monotonic: never below the clock");
    }

    #[test]
    fn a_client_keeps_its_own_name_and_id() {
        let r = resp();
        let mut a = r.client(7);
        let mut b = r.client(8);
        assert_eq!(reply(client_says(&mut *a, "CLIENT ID")), ":7\r\n");
        assert_eq!(reply(client_says(&mut *a, "CLIENT GETNAME")), "$-1\r\n");
        assert_eq!(reply(client_says(&mut *a, "client setname worker-1")), "+OK\r\n");
        assert_eq!(reply(client_says(&mut *a, "CLIENT GETNAME")), "$8\r\nworker-1\r\n");
        assert_eq!(reply(client_says(&mut *b, "CLIENT GETNAME")), "$-1\r\n", "names are per session");
        assert!(reply(client_says(&mut *a, "CLIENT SETNAME a\nb")).starts_with("-ERR Client names cannot"));
        assert_eq!(reply(client_says(&mut *a, "CLIENT SETINFO LIB-NAME redis-py")), "+OK\r\n");
        assert_eq!(reply(client_says(&mut *a, "CLIENT SETINFO lib-ver 5.0.1")), "+OK\r\n");
        assert_eq!(reply(client_says(&mut *a, "CLIENT SETINFO foo x")), "-ERR Unrecognized option 'foo'\r\n");
        assert!(reply(client_says(&mut *a, "CLIENT KILL ID 3")).contains("ordered mode serves CLIENT ID"));
        assert!(reply(client_says(&mut *a, "CLIENT GETNAME x"))
            .starts_with("-ERR wrong number of arguments for 'client|getname'"));
        assert_eq!(reply(client_says(&mut *a, "RESET")), "+RESET\r\n");
        assert_eq!(reply(client_says(&mut *a, "CLIENT GETNAME")), "$-1\r\n");
        assert_eq!(reply(client_says(&mut *a, "SELECT 0")), "+OK\r\n");
        assert_eq!(reply(client_says(&mut *a, "SELECT x")), "-ERR value is not an integer or out of range\r\n");
        assert_eq!(reply(client_says(&mut *a, "SELECT -1")), "-ERR DB index is out of range\r\n");
        assert_eq!(reply(client_says(&mut *a, "TIME")), "*2\r\n$1\r\n0\r\n$1\r\n0\r\n");
        assert_eq!(reply(client_says(&mut *a, "HELLO 3")), "-NOPROTO unsupported protocol version\r\n");
        match client_says(&mut *a, "HELLO 2 SETNAME app") {
            Dispatch::Forward { request, logged: false, shape: ReplyShape::Unvoted, .. } => {
                assert_eq!(request, encode_array(&["HELLO", "2"]))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(reply(client_says(&mut *a, "CLIENT GETNAME")), "$3\r\napp\r\n");
        // The forwarded HELLO, dispatched again by another host, is the same.
        assert!(matches!(
            r.dispatch(&encode_array(&["HELLO", "2"])),
            Ok(Dispatch::Forward { shape: ReplyShape::Unvoted, .. })
        ));
        // Everything else is the codec's.
        assert!(matches!(client_says(&mut *a, "GET k"), Dispatch::Forward { logged: false, .. }));
    }

    #[test]
    fn a_transaction_is_queued_by_resh_and_sent_as_one_unit() {
        let r = resp();
        let mut c = r.client(1);
        assert_eq!(reply(client_says(&mut *c, "EXEC")), "-ERR EXEC without MULTI\r\n");
        assert_eq!(reply(client_says(&mut *c, "DISCARD")), "-ERR DISCARD without MULTI\r\n");
        assert!(reply(client_says(&mut *c, "MULTI x")).starts_with("-ERR wrong number of arguments for 'multi'"));
        assert_eq!(reply(client_says(&mut *c, "MULTI")), "+OK\r\n");
        assert_eq!(reply(client_says(&mut *c, "SET k v")), "+QUEUED\r\n");
        assert_eq!(reply(client_says(&mut *c, "EXPIRE k 10")), "+QUEUED\r\n");
        assert_eq!(reply(client_says(&mut *c, "SMEMBERS s")), "+QUEUED\r\n");
        assert_eq!(reply(client_says(&mut *c, "MULTI")), "-ERR MULTI calls can not be nested\r\n");
        assert_eq!(reply(client_says(&mut *c, "WATCH k")), "-ERR WATCH inside MULTI is not allowed\r\n");
        let Dispatch::Unit(parts) = client_says(&mut *c, "EXEC") else { panic!("a unit") };
        let args: Vec<Vec<Vec<u8>>> = parts.iter().map(|p| request_args(&p.request).expect("valid")).collect();
        assert_eq!(args[0], vec![b"MULTI".to_vec()]);
        assert_eq!(args[1], vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]);
        assert_eq!(args[2][0], b"PEXPIREAT".to_vec(), "queued commands are pinned like any other");
        assert_eq!(args[4], vec![b"EXEC".to_vec()]);
        // All logged (a rebuilt replica may join inside a unit), all but EXEC byte for byte, all
        // but the last continued; EXEC's answer holds a set.
        assert!(parts.iter().all(|p| p.class.logged));
        assert!(parts[..4].iter().all(|p| p.class.continues && p.class.shape == ReplyShape::Exact));
        assert_eq!(
            parts[4].class,
            RequestClass {
                logged: true,
                shape: ReplyShape::EachNestedSet,
                watch: WatchOp::Exec,
                ..RequestClass::default()
            }
        );
        // Another host classifies the same bytes the same way.
        let bytes: Vec<Bytes> = parts.iter().map(|p| p.request.clone()).collect();
        let mut batch = vec![encode_array(&["GET", "a"])];
        batch.extend(bytes.iter().cloned());
        batch.push(encode_array(&["SMEMBERS", "s"]));
        let classes = r.classify(&batch);
        assert_eq!(classes[1..6], parts.iter().map(|p| p.class).collect::<Vec<_>>()[..]);
        assert_eq!(classes[0], RequestClass::default());
        assert_eq!(classes[6], RequestClass { shape: ReplyShape::Set, ..RequestClass::default() });
        // Out of the transaction again.
        assert!(matches!(client_says(&mut *c, "GET k"), Dispatch::Forward { .. }));
    }

    /// TTL and PTTL inside a transaction: queued as PEXPIRETIME, and their answers in EXEC's
    /// made from the voted expiry and resh's clock, as outside one.
    #[test]
    fn time_left_inside_a_transaction_is_made_from_the_expiry() {
        let r = resp();
        let mut c = r.client(1);
        let wall = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_000_000);
        let at = std::time::Instant::now();
        let clock = FixedClock(wall, at);
        let mut says =
            |request: &str| c.dispatch(&encode_array(&request.split(' ').collect::<Vec<_>>()), &clock).expect("valid");
        for (request, answer) in [
            ("MULTI", "+OK\r\n"),
            ("PTTL k", "+QUEUED\r\n"),
            ("SET x 1", "+QUEUED\r\n"),
            ("TTL k", "+QUEUED\r\n"),
            ("TTL none", "+QUEUED\r\n"),
        ] {
            assert_eq!(reply(says(request)), answer, "{request}");
        }
        let Dispatch::Ask { parts, then } = says("EXEC") else { panic!("EXEC is finished by resh") };
        let sent: Vec<Bytes> = parts.iter().map(|p| p.request.clone()).collect();
        assert_eq!(sent[1], encode_array(&["PEXPIRETIME", "k"]));
        assert_eq!(sent[3], encode_array(&["PEXPIRETIME", "k"]));
        let exec = b"*4\r\n:1004500\r\n+OK\r\n:1004500\r\n:-2\r\n";
        let answered = then.answered(exec, at + std::time::Duration::from_millis(100));
        assert_eq!(reply(answered), "*4\r\n:4400\r\n+OK\r\n:4\r\n:-2\r\n");
        // An aborted transaction's answer passes as it is.
        for request in ["MULTI", "TTL k"] {
            says(request);
        }
        let Dispatch::Ask { then, .. } = says("EXEC") else { panic!() };
        assert_eq!(reply(then.answered(b"-EXECABORT x\r\n", at)), "-EXECABORT x\r\n");
    }

    #[test]
    fn blocking_commands_poll_in_a_session_and_are_refused_elsewhere() {
        let r = resp();
        let mut c = r.client(1);
        for request in [
            "BLPOP q 0",
            "BRPOP a b 1",
            "BZPOPMIN z 1",
            "BLMOVE a b LEFT RIGHT 0",
            "XREAD BLOCK 10 STREAMS s 0",
            "XREADGROUP GROUP g c BLOCK 0 STREAMS s >",
        ] {
            assert!(matches!(client_says(&mut *c, request), Dispatch::Ask { .. }), "{request}");
            // Another host never gets one: a session sends only its probes and takes.
            assert!(refused(&r, request).contains("blocks its connection"), "{request}");
        }
        // A poll of XREADGROUP, as another host classifies it: it leaves the log if it found
        // nothing.
        let poll = encode_array(&["xreadgroup", "GROUP", "g", "c", "STREAMS", "s", ">"]);
        assert_eq!(r.classify(&[poll])[0].unchanged_if, Some(&b"*-1\r\n"[..]));
        let first = encode_array(&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"]);
        assert_eq!(r.classify(&[first])[0].unchanged_if, None, "a client's, or a first poll");
        // A client's own XREADGROUP goes in upper case, whatever case it was sent in.
        match client_says(&mut *c, "xreadgroup GROUP g c STREAMS s >") {
            Dispatch::Forward { request, logged: true, .. } => {
                assert_eq!(request, encode_array(&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"]))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.classify(&[encode_array(&["XREAD", "STREAMS", "s", "0"])])[0].unchanged_if, None);
        for request in ["WAIT 1 0", "WAITAOF 1 0 0"] {
            assert!(reply(client_says(&mut *c, request)).contains("blocks its connection"), "{request}");
        }
        assert!(reply(client_says(&mut *c, "BLPOP q x")).starts_with("-ERR timeout is not a float"));
        // Not inside a transaction.
        assert_eq!(reply(client_says(&mut *c, "MULTI")), "+OK\r\n");
        assert!(reply(client_says(&mut *c, "BLPOP q 0")).contains("cannot be part of a transaction"));
        assert!(reply(client_says(&mut *c, "EXEC")).starts_with("-EXECABORT"));
    }

    fn subscriptions(d: Dispatch) -> (Vec<Subscription>, String) {
        match d {
            Dispatch::Subscriptions { changes, reply } => (changes, String::from_utf8_lossy(&reply).into_owned()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_subscriber_is_served_by_resh_in_redis_subscribed_mode() {
        let r = resp();
        let mut c = r.client(1);
        assert!(!c.listens());
        let (changes, reply) = subscriptions(client_says(&mut *c, "SUBSCRIBE a b"));
        assert_eq!(changes.len(), 2);
        assert_eq!(reply, "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n");
        assert!(c.listens(), "the idle timeout does not apply to a subscriber");
        let (changes, reply) = subscriptions(client_says(&mut *c, "PSUBSCRIBE n*"));
        assert_eq!(changes, vec![Subscription::Add { name: Bytes::from_static(b"n*"), pattern: true }]);
        assert!(reply.ends_with(":3\r\n"));
        // Subscribed: only (un)subscribing, PING, QUIT and RESET, as in Redis.
        assert_eq!(
            reply_of(client_says(&mut *c, "GET k")),
            "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"
        );
        assert_eq!(reply_of(client_says(&mut *c, "PING")), "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
        let (changes, reply) = subscriptions(client_says(&mut *c, "UNSUBSCRIBE"));
        assert_eq!(changes.len(), 2, "every channel");
        assert!(reply.ends_with(":1\r\n"), "the pattern is left: {reply}");
        let (changes, reply) = subscriptions(client_says(&mut *c, "RESET"));
        assert_eq!(changes, vec![Subscription::Remove { name: Bytes::from_static(b"n*"), pattern: true }]);
        assert_eq!(reply, "+RESET\r\n");
        assert!(!c.listens());
        let (changes, reply) = subscriptions(client_says(&mut *c, "UNSUBSCRIBE"));
        assert!(changes.is_empty());
        assert_eq!(reply, "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n");
        // PUBLISH goes through the order, marked for delivery; another host marks it alike.
        assert!(matches!(client_says(&mut *c, "PUBLISH a hi"), Dispatch::Forward { publish: true, logged: true, .. }));
        assert!(r.classify(&[encode_array(&["PUBLISH", "a", "hi"])])[0].publish);
        assert_eq!(
            r.published(&encode_array(&["publish", "a", "hi"])),
            Some((Bytes::from_static(b"a"), Bytes::from_static(b"hi")))
        );
        assert_eq!(&r.push_message(b"a", b"hi", None)[..], b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n");
        assert!(reply_of(client_says(&mut *c, "SPUBLISH c m")).contains("not served"));
        let query = |d: Dispatch| match d {
            Dispatch::PubSub(q) => q,
            other => panic!("{other:?}"),
        };
        assert_eq!(query(client_says(&mut *c, "PUBSUB CHANNELS h*")), PubSubQuery::Channels(Some("h*".into())));
        assert_eq!(query(client_says(&mut *c, "pubsub numsub a b")), PubSubQuery::NumSub(vec!["a".into(), "b".into()]));
        assert_eq!(query(client_says(&mut *c, "PUBSUB NUMPAT")), PubSubQuery::NumPat);
        assert_eq!(
            r.pubsub_reply(&PubSubAnswer::Counts(vec![("a".into(), 2), ("b".into(), 0)])),
            "*4\r\n$1\r\na\r\n:2\r\n$1\r\nb\r\n:0\r\n"
        );
    }

    fn reply_of(d: Dispatch) -> String {
        reply(d)
    }

    #[test]
    fn watch_is_ordered_as_a_marker_and_checked_at_exec() {
        let r = resp();
        let mut c = r.client(1);
        let Dispatch::Ask { parts, .. } = client_says(&mut *c, "WATCH a b") else { panic!("ordered") };
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].class.watch, WatchOp::Watch);
        assert_eq!(r.watched_keys(&parts[0].request), vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        // Another host classifies the marker alike; the replicas only echo it.
        assert_eq!(r.classify(&[parts[0].request.clone()])[0].watch, WatchOp::Watch);
        assert!(sent_words(&parts)[0].starts_with("PING "));
        // A watched transaction's EXEC: a DISCARD's +OK (the watch was dirty) is a nil reply.
        client_says(&mut *c, "MULTI");
        client_says(&mut *c, "INCR a");
        let Dispatch::Ask { parts, then } = client_says(&mut *c, "EXEC") else { panic!("asked") };
        assert_eq!(parts.last().map(|p| p.class.watch), Some(WatchOp::Exec));
        let now = std::time::Instant::now();
        assert!(matches!(then.answered(b"+OK\r\n", now), Dispatch::Reply(b) if &b[..] == b"*-1\r\n"));
        // Not watching any more: the next transaction is a plain unit, UNWATCH answers at once.
        assert_eq!(reply(client_says(&mut *c, "UNWATCH")), "+OK\r\n");
        client_says(&mut *c, "MULTI");
        assert!(matches!(client_says(&mut *c, "EXEC"), Dispatch::Unit(_)));
        // UNWATCH, DISCARD, RESET and the session's end order the end of a watch.
        for end in ["UNWATCH", "RESET"] {
            assert!(matches!(client_says(&mut *c, "WATCH k"), Dispatch::Ask { .. }));
            let Dispatch::Ask { parts, .. } = client_says(&mut *c, end) else { panic!("{end}") };
            assert_eq!(parts[0].class.watch, WatchOp::Unwatch);
        }
        assert!(matches!(client_says(&mut *c, "WATCH k"), Dispatch::Ask { .. }));
        client_says(&mut *c, "MULTI");
        assert!(matches!(client_says(&mut *c, "DISCARD"), Dispatch::Ask { .. }));
        assert!(matches!(client_says(&mut *c, "WATCH k"), Dispatch::Ask { .. }));
        assert_eq!(c.farewell().map(|p| p.class.watch), Some(WatchOp::Unwatch));
        assert!(c.farewell().is_none());
        assert!(reply(client_says(&mut *c, "WATCH")).starts_with("-ERR wrong number of arguments for 'watch'"));
        // What the order makes dirty: a write's arguments, or everything for a flush.
        assert_eq!(
            r.written_keys(&encode_array(&["SET", "k", "v"])),
            Some(vec![Bytes::from_static(b"k"), Bytes::from_static(b"v")])
        );
        assert_eq!(r.written_keys(&encode_array(&["FLUSHALL"])), None);
        // Reads and a session's database name no key, though a unit logs them.
        assert_eq!(r.written_keys(&encode_array(&["GET", "k"])), Some(Vec::new()));
        assert_eq!(r.written_keys(&encode_array(&["SELECT", "3"])), Some(Vec::new()));
    }

    #[test]
    fn units_and_markers_are_recognised_in_resh_own_encoding_only() {
        assert!(is_alone(&encode_array(&["MULTI"]), "MULTI"));
        assert!(is_alone(&encode_array(&["EXEC"]), "EXEC"));
        assert!(!is_alone(b"MULTI\r\n", "MULTI"));
        assert!(!is_alone(&encode_array(&["multi"]), "MULTI"));
        assert!(!is_alone(&encode_array(&["MULTI", "x"]), "MULTI"));
        assert!(!is_alone(&encode_array(&["EXECX"]), "EXEC"));
        let marker = watch_request(Some(&[&b"k"[..]])).request;
        assert_eq!(watch_marker(&marker), Some((WatchOp::Watch, vec![Bytes::from_static(b"k")])));
        assert_eq!(watch_marker(&encode_array(&["PING", "hello"])), None);
        assert_eq!(watch_marker(&encode_array(&["GET", "k"])), None);
    }

    #[test]
    fn a_refused_command_aborts_the_transaction_as_in_redis() {
        let r = resp();
        let mut c = r.client(1);
        assert_eq!(reply(client_says(&mut *c, "MULTI")), "+OK\r\n");
        assert_eq!(reply(client_says(&mut *c, "INCR n")), "+QUEUED\r\n");
        assert!(reply(client_says(&mut *c, "SHUTDOWN")).contains("ordered.allow_unsafe"));
        assert!(reply(client_says(&mut *c, "TIME")).contains("cannot be part of a transaction"));
        assert_eq!(
            reply(client_says(&mut *c, "EXEC")),
            "-EXECABORT Transaction discarded because of previous errors.\r\n"
        );
        assert_eq!(reply(client_says(&mut *c, "MULTI")), "+OK\r\n");
        assert_eq!(reply(client_says(&mut *c, "INCR n")), "+QUEUED\r\n");
        assert_eq!(reply(client_says(&mut *c, "DISCARD")), "+OK\r\n");
        assert!(matches!(client_says(&mut *c, "INCR n"), Dispatch::Forward { .. }), "discarded: out of it");
        assert_eq!(reply(client_says(&mut *c, "MULTI")), "+OK\r\n");
        assert_eq!(reply(client_says(&mut *c, "RESET")), "+RESET\r\n");
        assert!(matches!(client_says(&mut *c, "INCR n"), Dispatch::Forward { .. }), "reset: out of it");
        // A transaction larger than a frame is refused, and aborts.
        let r = Resp::new(64, None);
        let mut c = r.client(2);
        assert_eq!(reply(client_says(&mut *c, "MULTI")), "+OK\r\n");
        assert_eq!(reply(client_says(&mut *c, "SET k 0123456789012345678901234567890")), "+QUEUED\r\n");
        assert!(reply(client_says(&mut *c, "SET k 0123456789012345678901234567890")).contains("max_frame_bytes"));
        assert!(reply(client_says(&mut *c, "EXEC")).starts_with("-EXECABORT"));
        // An empty transaction is a unit too.
        let mut c = resp().client(3);
        client_says(&mut *c, "MULTI");
        assert!(matches!(client_says(&mut *c, "EXEC"), Dispatch::Unit(parts) if parts.len() == 2));
    }

    #[test]
    fn errors_are_voted_by_class_and_kept_whole() {
        let r = resp();
        let a = r.vote_digest(b"-ERR wrong number of arguments\r\n");
        let b = r.vote_digest(b"-ERR syntax\r\n");
        assert_eq!(a.vote, b.vote);
        assert_ne!(a.exact, b.exact);
        assert!(a.error);
        assert_ne!(r.vote_digest(b"-ERR x\r\n").vote, r.vote_digest(b"-WRONGTYPE x\r\n").vote);
        let ok = r.vote_digest(b"+OK\r\n");
        assert_eq!(ok.vote, ok.exact);
        assert_ne!(ok.vote, r.vote_digest(b"+KO\r\n").vote);
        assert_eq!(
            &r.canonical_error(b"-WRONGTYPE Operation against a key\r\n")[..],
            b"-WRONGTYPE resh: the replicas agree on a WRONGTYPE error but word it differently\r\n"
        );
    }

    proptest! {
        /// Any request stream, cut anywhere and fed in pieces to one resumable parser, frames
        /// into exactly the requests it was made of.
        #[test]
        fn requests_frame_back(requests in proptest::collection::vec(proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..5), 1..8), step in 1usize..50) {
            let r = resp();
            let mut stream = Vec::new();
            for req in &requests {
                stream.extend_from_slice(&encode_array(req));
            }
            let mut parser = r.request_parser();
            let mut buf: Vec<u8> = Vec::new();
            let mut seen = 0;
            for chunk in stream.chunks(step) {
                buf.extend_from_slice(chunk);
                while let Some(len) = parser.parse(&buf).expect("valid") {
                    prop_assert_eq!(&buf[..len], &encode_array(&requests[seen])[..]);
                    let (args, _) = arguments(&buf[..len]).expect("valid");
                    prop_assert_eq!(args.len(), requests[seen].len());
                    buf.drain(..len);
                    seen += 1;
                }
            }
            prop_assert_eq!(seen, requests.len());
        }

        /// Any response stream fed in pieces frames into its frames.
        #[test]
        fn responses_frame_back(values in proptest::collection::vec(proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..4), 1..8), step in 1usize..50) {
            let mut stream = Vec::new();
            let frames: Vec<Bytes> = values.iter().map(|v| encode_array(v)).collect();
            for f in &frames {
                stream.extend_from_slice(f);
            }
            let mut parser = resp().response_parser();
            let mut buf: Vec<u8> = Vec::new();
            let mut seen = 0;
            for chunk in stream.chunks(step) {
                buf.extend_from_slice(chunk);
                while let Some(len) = parser.parse(&buf).expect("valid") {
                    prop_assert_eq!(&buf[..len], &frames[seen][..]);
                    buf.drain(..len);
                    seen += 1;
                }
            }
            prop_assert_eq!(seen, frames.len());
        }

        /// Arbitrary bytes never panic the framers or the dispatcher, whole or in pieces.
        #[test]
        fn arbitrary_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..200), step in 1usize..20) {
            let r = Resp::new(64, None);
            if let Ok(Some(len)) = r.request_len(&input) {
                prop_assert!(len <= input.len());
                let _ = r.dispatch(&input[..len]);
            }
            let _ = r.response_len(&input);
            let mut parser = r.response_parser();
            let mut buf = Vec::new();
            for chunk in input.chunks(step) {
                buf.extend_from_slice(chunk);
                match parser.parse(&buf) {
                    Ok(Some(len)) => { prop_assert!(len <= buf.len()); buf.drain(..len); parser = r.response_parser(); }
                    Ok(None) => { let n = parser.progress(); prop_assert!(n <= buf.len()); buf.drain(..n); parser.consumed(n); }
                    Err(_) => break,
                }
            }
        }
    }
}
