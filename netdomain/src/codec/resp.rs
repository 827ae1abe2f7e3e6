//! RESP, the Redis serialisation protocol (read: <https://redis.io/docs/latest/develop/reference/protocol-spec/>).
//!
//! Requests are arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or *inline* commands
//! (`PING\r\n`, as typed into telnet or sent by `redis-benchmark`'s inline tests). Inline
//! commands are rewritten into the array form before they go to the replicas, so that every
//! replica parses exactly the same bytes.
//!
//! Responses are any RESP2 or RESP3 value. For the vote, an error reply is reduced to its first
//! word (`-ERR`, `-WRONGTYPE`): diverse implementations word their messages differently, and
//! the error *class* is what a client acts on. Everything else is compared byte for byte.
//!
//! All sessions share one connection per replica in ordered mode, so commands that keep state
//! per connection (transactions, SELECT, subscriptions, AUTH, CLIENT) or block a connection
//! (BLPOP and friends) are refused with an error naming the reason; QUIT is answered locally.
use std::borrow::Cow;
use std::collections::HashSet;

use bytes::{BufMut, Bytes, BytesMut};

use super::{Codec, Dispatch, ProtocolError};

/// Nesting deeper than this is refused (a defence against stack exhaustion).
const MAX_DEPTH: usize = 32;
/// The longest inline command or simple-type line.
const MAX_LINE: usize = 64 * 1024;
/// The most elements of one array.
const MAX_ELEMENTS: i64 = 1024 * 1024;

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
const READ_ONLY: &[&str] = &[
    "PING", "ECHO", "GET", "MGET", "EXISTS", "STRLEN", "LLEN", "LRANGE", "LINDEX", "TYPE", "TTL", "PTTL", "DBSIZE",
    "KEYS", "SCAN", "CONFIG", "COMMAND", "INFO", "HGET", "HGETALL", "SMEMBERS", "SCARD", "ZRANGE", "ZSCORE",
];

/// The RESP codec.
#[derive(Debug, Clone)]
pub struct Resp {
    max_frame: usize,
    /// Commands allowed through (upper case); `None` allows all.
    allow: Option<HashSet<String>>,
}

impl Resp {
    /// A RESP codec refusing frames over `max_frame` bytes and, if `allow` is given, commands
    /// not in it.
    pub fn new(max_frame: usize, allow: Option<&[String]>) -> Resp {
        Resp { max_frame, allow: allow.map(|a| a.iter().map(|c| c.to_ascii_uppercase()).collect()) }
    }

    fn error(message: &str) -> Bytes {
        let mut b = BytesMut::with_capacity(message.len() + 3);
        b.put_u8(b'-');
        b.put_slice(message.replace(['\r', '\n'], " ").as_bytes());
        b.put_slice(b"\r\n");
        b.freeze()
    }
}

/// Position of the `\r\n` ending the line that starts at `from`, within `max` bytes.
fn line_end(buf: &[u8], from: usize, max: usize) -> Result<Option<usize>, ProtocolError> {
    let window = &buf[from..buf.len().min(from + max + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some(from + i)),
        None if window.len() >= max + 2 => Err(ProtocolError("line too long".into())),
        None => Ok(None),
    }
}

/// The integer on the header line starting at `from` (after the type byte); returns it and the
/// offset after its `\r\n`.
fn header_int(buf: &[u8], from: usize) -> Result<Option<(i64, usize)>, ProtocolError> {
    let Some(end) = line_end(buf, from + 1, 32)? else { return Ok(None) };
    let text = std::str::from_utf8(&buf[from + 1..end]).map_err(|_| ProtocolError("invalid length".into()))?;
    let n: i64 = text.parse().map_err(|_| ProtocolError(format!("invalid length '{text}'")))?;
    Ok(Some((n, end + 2)))
}

/// Length of the RESP value starting at `from`, if complete.
fn value_len(buf: &[u8], from: usize, depth: usize, max_frame: usize) -> Result<Option<usize>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError("nesting too deep".into()));
    }
    let Some(&kind) = buf.get(from) else { return Ok(None) };
    match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
            Ok(line_end(buf, from + 1, MAX_LINE)?.map(|end| end + 2 - from))
        }
        b'$' | b'!' | b'=' => {
            let Some((n, body)) = header_int(buf, from)? else { return Ok(None) };
            if n == -1 && kind == b'$' {
                return Ok(Some(body - from));
            }
            if n < 0 || n as u64 > max_frame as u64 {
                return Err(ProtocolError(format!("invalid bulk length {n}")));
            }
            let end = body + n as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError("bulk string not followed by CRLF".into()));
            }
            Ok(Some(end + 2 - from))
        }
        b'*' | b'%' | b'~' | b'>' | b'|' => {
            let Some((n, mut at)) = header_int(buf, from)? else { return Ok(None) };
            if n == -1 && kind == b'*' {
                return Ok(Some(at - from));
            }
            if !(0..=MAX_ELEMENTS).contains(&n) {
                return Err(ProtocolError(format!("invalid multibulk length {n}")));
            }
            let elements = if kind == b'%' || kind == b'|' { n * 2 } else { n };
            for _ in 0..elements {
                match value_len(buf, at, depth + 1, max_frame)? {
                    Some(len) => at += len,
                    None => return Ok(None),
                }
                if at - from > max_frame {
                    return Err(ProtocolError("frame too large".into()));
                }
            }
            Ok(Some(at - from))
        }
        other => Err(ProtocolError(format!("unexpected byte {other:#04x} where a RESP value should start"))),
    }
}

/// The arguments of a complete array-of-bulk-strings request.
fn arguments(request: &[u8]) -> Result<Vec<&[u8]>, ProtocolError> {
    let Some((n, mut at)) = header_int(request, 0)? else {
        return Err(ProtocolError("incomplete request".into()));
    };
    let mut args = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        if request.get(at) != Some(&b'$') {
            return Err(ProtocolError("expected '$', got something else".into()));
        }
        let Some((len, body)) = header_int(request, at)? else {
            return Err(ProtocolError("incomplete request".into()));
        };
        let end = body + usize::try_from(len).map_err(|_| ProtocolError("invalid bulk length".into()))?;
        args.push(request.get(body..end).ok_or_else(|| ProtocolError("incomplete request".into()))?);
        at = end + 2;
    }
    Ok(args)
}

/// Splits an inline command into words (whitespace-separated; no quoting).
fn inline_words(line: &[u8]) -> Vec<&[u8]> {
    line.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()).collect()
}

/// The array form of a list of arguments.
fn encode_array(args: &[&[u8]]) -> Bytes {
    let mut b = BytesMut::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    b.put_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        b.put_slice(format!("${}\r\n", a.len()).as_bytes());
        b.put_slice(a);
        b.put_slice(b"\r\n");
    }
    b.freeze()
}

impl Codec for Resp {
    fn name(&self) -> &'static str {
        "resp"
    }

    fn request_len(&self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        match buf.first() {
            None => Ok(None),
            Some(b'*') => {
                let len = value_len(buf, 0, 1, self.max_frame)?;
                if let Some(len) = len {
                    // Requests are flat arrays of bulk strings.
                    arguments(&buf[..len])?;
                }
                Ok(len)
            }
            Some(_) => match buf.iter().take(MAX_LINE + 1).position(|&b| b == b'\n') {
                Some(i) => Ok(Some(i + 1)),
                None if buf.len() > MAX_LINE => Err(ProtocolError("too big inline request".into())),
                None => Ok(None),
            },
        }
    }

    fn response_len(&self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        value_len(buf, 0, 0, self.max_frame)
    }

    fn dispatch(&self, request: &[u8]) -> Result<Dispatch, ProtocolError> {
        let (args, inline) =
            if request.first() == Some(&b'*') { (arguments(request)?, false) } else { (inline_words(request), true) };
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
        let request = if inline { encode_array(&args) } else { Bytes::copy_from_slice(request) };
        Ok(Dispatch::Forward { request, logged: !READ_ONLY.contains(&command.as_str()) })
    }

    fn normalise<'a>(&self, response: &'a [u8]) -> Cow<'a, [u8]> {
        if response.first() == Some(&b'-') {
            let end = response.iter().position(|&b| b == b' ' || b == b'\r').unwrap_or(response.len());
            Cow::Borrowed(&response[..end])
        } else {
            Cow::Borrowed(response)
        }
    }

    fn protocol_error(&self, error: &ProtocolError) -> Bytes {
        Resp::error(&format!("ERR Protocol error: {error}"))
    }

    fn undecidable(&self) -> Option<Bytes> {
        // Redis clients surface error replies to the application; saying why beats a bare reset.
        Some(Resp::error("ERR resh: the replicas did not agree on an answer; the session is aborted"))
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
    fn request_lengths() {
        let r = resp();
        let get = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        assert_eq!(r.request_len(get), Ok(Some(get.len())));
        for cut in 0..get.len() {
            assert_eq!(r.request_len(&get[..cut]), Ok(None), "prefix of {cut} bytes");
        }
        assert_eq!(r.request_len(b"PING\r\nPING"), Ok(Some(6)));
        assert!(r.request_len(b"*1\r\n:1\r\n").is_err(), "requests hold bulk strings only");
        assert!(r.request_len(b"*1\r\n$3\r\nGETX\r\n").is_err());
        assert!(r.request_len(b"*x\r\n").is_err());
    }

    #[test]
    fn response_lengths() {
        let r = resp();
        for frame in [
            &b"+OK\r\n"[..],
            b"-ERR no\r\n",
            b":42\r\n",
            b"$-1\r\n",
            b"$0\r\n\r\n",
            b"$3\r\nabc\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
            b"%1\r\n+k\r\n+v\r\n",
            b"_\r\n",
        ] {
            let mut buf = frame.to_vec();
            buf.extend_from_slice(b"+NEXT\r\n");
            assert_eq!(r.response_len(&buf), Ok(Some(frame.len())), "{:?}", String::from_utf8_lossy(frame));
            assert_eq!(r.response_len(&frame[..frame.len() - 1]), Ok(None));
        }
        assert!(r.response_len(b"?\r\n").is_err());
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
    }

    #[test]
    fn errors_are_compared_by_class() {
        let r = resp();
        assert_eq!(r.normalise(b"-ERR wrong number of arguments\r\n"), r.normalise(b"-ERR syntax\r\n"));
        assert_ne!(r.normalise(b"-ERR x\r\n"), r.normalise(b"-WRONGTYPE x\r\n"));
        assert_ne!(r.normalise(b"+OK\r\n"), r.normalise(b"+KO\r\n"));
    }

    fn bulk_array(args: &[Vec<u8>]) -> Vec<u8> {
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        encode_array(&refs).to_vec()
    }

    proptest! {
        /// Any request stream, cut anywhere, frames into exactly the requests it was made of.
        #[test]
        fn requests_frame_back(requests in proptest::collection::vec(proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..5), 1..8), cut in 0usize..400) {
            let r = resp();
            let mut stream = Vec::new();
            for req in &requests {
                stream.extend(bulk_array(req));
            }
            let cut = cut.min(stream.len());
            // Framing the first `cut` bytes gives whole requests only, then waits.
            let mut at = 0;
            let mut seen = 0;
            while let Some(len) = r.request_len(&stream[at..cut]).expect("valid") {
                prop_assert_eq!(&stream[at..at + len], &bulk_array(&requests[seen])[..]);
                let args = arguments(&stream[at..at + len]).expect("valid");
                prop_assert_eq!(args.len(), requests[seen].len());
                at += len;
                seen += 1;
            }
            prop_assert!(seen <= requests.len());
        }

        /// Arbitrary bytes never panic the framer or the dispatcher.
        #[test]
        fn arbitrary_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let r = Resp::new(64, None);
            if let Ok(Some(len)) = r.request_len(&input) {
                let _ = r.dispatch(&input[..len]);
            }
            let _ = r.response_len(&input);
        }
    }
}
