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
//! All sessions share one connection per replica in ordered mode, so commands that keep state
//! per connection (transactions, SELECT, subscriptions, AUTH, CLIENT) or block a connection
//! (BLPOP and friends) are refused with an error naming the reason; QUIT is answered locally.
//!
//! A replica is rebuilt by `FLUSHALL` and a logical copy of a voting replica's keyspace
//! ([`checkpoint`]).
use std::collections::HashSet;

use bytes::{BufMut, Bytes, BytesMut};

use super::{AnswerError, Checkpoint, Codec, Dispatch, FrameDigest, ProtocolError, RequestParser, ResponseParser};

pub mod checkpoint;
pub mod frame;

use frame::{split_args, string2ll, RespRequestParser, RespResponseParser};

/// Commands refused in ordered mode because they keep state per connection.
const PER_CONNECTION: &[&str] = &[
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "UNWATCH",
    "SELECT",
    "SWAPDB",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "SSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "SUNSUBSCRIBE",
    "MONITOR",
    "AUTH",
    "HELLO",
    "CLIENT",
    "RESET",
    "SYNC",
    "PSYNC",
    "REPLCONF",
];

/// Commands refused because they block the connection they run on.
const BLOCKING: &[&str] =
    &["BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP", "WAIT", "WAITAOF"];

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
    "CONFIG",
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
    "ZRANGE",
    "ZREVRANGE",
    "ZRANGEBYSCORE",
    "ZSCORE",
    "ZMSCORE",
    "ZCARD",
    "ZCOUNT",
    "ZRANK",
    "ZREVRANK",
    "ZSCAN",
    "BITCOUNT",
    "GETBIT",
    "XLEN",
    "XRANGE",
    "XREVRANGE",
    "TIME",
    "LASTSAVE",
];

/// The most keys a checkpoint copies per batch of reads.
const CHECKPOINT_BATCH: usize = 256;

/// The RESP codec.
#[derive(Debug, Clone)]
pub struct Resp {
    max_frame: usize,
    /// Commands allowed through (upper case); `None` allows all.
    allow: Option<HashSet<String>>,
}

impl Resp {
    /// A RESP codec refusing requests over `max_frame` bytes and, if `allow` is given, commands
    /// not in it.
    pub fn new(max_frame: usize, allow: Option<&[String]>) -> Resp {
        Resp { max_frame, allow: allow.map(|a| a.iter().map(|c| c.to_ascii_uppercase()).collect()) }
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
fn arguments(request: &[u8]) -> Result<Vec<&[u8]>, ProtocolError> {
    let invalid = || ProtocolError("invalid multibulk length".into());
    let header_end = request.windows(2).position(|w| w == b"\r\n").ok_or_else(invalid)?;
    let count = string2ll(&request[1..header_end]).ok_or_else(invalid)?;
    let mut at = header_end + 2;
    let mut args = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1024));
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
        at = body + len + 2;
    }
    Ok(args)
}

/// The arguments of one complete request (array or inline form), as a replica would see them.
pub fn request_args(request: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    if request.first() == Some(&b'*') {
        Ok(arguments(request)?.into_iter().map(<[u8]>::to_vec).collect())
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
        let inline = request.first() != Some(&b'*');
        let owned;
        let args: Vec<&[u8]> = if inline {
            let line = request.strip_suffix(b"\n").unwrap_or(request);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            owned = split_args(line).ok_or_else(|| ProtocolError("unbalanced quotes in request".into()))?;
            owned.iter().map(Vec::as_slice).collect()
        } else {
            arguments(request)?
        };
        let Some(name) = args.first() else { return Ok(Dispatch::Ignore) };
        let command = String::from_utf8_lossy(name).to_ascii_uppercase();
        if command == "QUIT" {
            return Ok(Dispatch::Close(Bytes::from_static(b"+OK\r\n")));
        }
        if PER_CONNECTION.contains(&command.as_str()) {
            return Ok(Dispatch::Reply(Resp::error(&format!(
                "ERR resh: '{command}' keeps per-connection state, which ordered mode does not support (all sessions share one connection per replica)"
            ))));
        }
        let blocking_read =
            (command == "XREAD" || command == "XREADGROUP") && args.iter().any(|a| a.eq_ignore_ascii_case(b"BLOCK"));
        if BLOCKING.contains(&command.as_str()) || blocking_read {
            return Ok(Dispatch::Reply(Resp::error(&format!(
                "ERR resh: '{command}' blocks its connection, which ordered mode shares between all sessions"
            ))));
        }
        if let Some(allow) = &self.allow {
            if !allow.contains(&command) {
                return Ok(Dispatch::Reply(Resp::error(&format!(
                    "ERR resh: command '{command}' is not in the allowed set of this service"
                ))));
            }
        }
        // DEBUG SLEEP and DEBUG DIGEST change nothing: replaying them would only cost time.
        let debug_read = command == "DEBUG"
            && args.get(1).is_some_and(|a| {
                a.eq_ignore_ascii_case(b"SLEEP")
                    || a.eq_ignore_ascii_case(b"DIGEST")
                    || a.eq_ignore_ascii_case(b"DIGEST-VALUE")
            });
        let logged = !READ_ONLY.contains(&command.as_str()) && !debug_read;
        let request = if inline { encode_array(&args) } else { Bytes::copy_from_slice(request) };
        Ok(Dispatch::Forward { request, logged })
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
    use proptest::prelude::*;

    fn resp() -> Resp {
        Resp::new(1 << 20, None)
    }

    #[test]
    fn dispatch_rules() {
        let r = Resp::new(1 << 20, Some(&["get".to_string(), "set".to_string(), "ping".to_string()]));
        match r.dispatch(b"PING\r\n") {
            Ok(Dispatch::Forward { request, logged }) => {
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
        assert_eq!(r.dispatch(b"\r\n"), Ok(Dispatch::Ignore));
        assert_eq!(r.dispatch(b"*0\r\n"), Ok(Dispatch::Ignore));
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
        assert_eq!(r.dispatch(b"SET k \"a\r\n"), Err(ProtocolError("unbalanced quotes in request".into())));
        assert_eq!(
            r.protocol_error(&ProtocolError("unbalanced quotes in request".into())),
            &b"-ERR Protocol error: unbalanced quotes in request\r\n"[..]
        );
    }

    #[test]
    fn debug_sleep_is_not_logged() {
        let r = resp();
        assert!(matches!(r.dispatch(b"DEBUG SLEEP 1\r\n"), Ok(Dispatch::Forward { logged: false, .. })));
        assert!(matches!(r.dispatch(b"DEBUG RELOAD\r\n"), Ok(Dispatch::Forward { logged: true, .. })));
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
                    let args = arguments(&buf[..len]).expect("valid");
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
