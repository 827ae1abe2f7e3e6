//! RESP framing: where a request or a response ends, resumably, with Redis's own rules.
//!
//! Read: <https://redis.io/docs/latest/develop/reference/protocol-spec/>, and for requests
//! Redis's `processMultibulkBuffer`/`processInlineBuffer` (src/networking.c) and
//! `sdssplitargs` (src/sds.c): what Redis refuses, resh refuses before any replica sees it,
//! with Redis's wording, so that a request cannot be accepted here and rejected there (one
//! such request used to close every replica's shared connection at once).
//!
//! Both parsers keep their position in an incomplete frame between calls: a frame that
//! arrives in many reads is scanned once, not once per read.
use super::super::{ProtocolError, RequestParser, ResponseParser};

/// Redis's `PROTO_INLINE_MAX_SIZE`: the longest inline request, and the longest a count line
/// may grow without its `\r`.
pub const MAX_INLINE: usize = 64 * 1024;
/// Redis's multibulk limit for requests (`INT_MAX`); resh's frame limit applies as well.
const MAX_MULTIBULK: i64 = i32::MAX as i64;
/// The deepest nesting of a response resh parses. Redis's own replies nest far less (a Lua
/// table converted to RESP stops at the Lua stack limit, about 200 levels); the bound only
/// keeps a broken replica from growing the parser's stack without end.
pub const MAX_DEPTH: usize = 10_000;
/// The longest length or count line of a response (`$`, `*` and friends): 20 digits and a sign.
const MAX_HEADER: usize = 32;

/// Redis's `string2ll`: an optional `-`, then digits without a leading zero (`0` alone is
/// fine), fitting an i64. No `+`, no spaces, no `-0`.
pub fn string2ll(text: &[u8]) -> Option<i64> {
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    if text == b"0" {
        return Some(0);
    }
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(d - b'0');
        value = if negative {
            value.checked_mul(10)?.checked_sub(digit)?
        } else {
            value.checked_mul(10)?.checked_add(digit)?
        };
    }
    Some(value)
}

/// Splits an inline command the way Redis's `sdssplitargs` does: words separated by spaces;
/// `"..."` with `\n \r \t \b \a \xHH` and `\<any>` escapes; `'...'` with `\'`; a closing quote
/// must be followed by a space or the end. The line ends at a NUL byte, as the C string Redis
/// reads it as does. `None`: unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => &line[..nul],
        None => line,
    };
    // C's isspace.
    let space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r');
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while p < line.len() && space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            return Some(args);
        }
        let mut current = Vec::new();
        let (mut in_double, mut in_single) = (false, false);
        loop {
            let c = at(p);
            if in_double {
                if c == b'\\' && at(p + 1) == b'x' && hex(at(p + 2)).is_some() && hex(at(p + 3)).is_some() {
                    current.push(hex(at(p + 2)).unwrap_or(0) * 16 + hex(at(p + 3)).unwrap_or(0));
                    p += 3;
                } else if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    current.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if at(p + 1) != 0 && !space(at(p + 1)) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    current.push(c);
                }
            } else if in_single {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    current.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !space(at(p + 1)) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    current.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => {
                        if c != 0 {
                            p += 1;
                        }
                        break;
                    }
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    other => current.push(other),
                }
            }
            p += 1;
        }
        args.push(current);
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn error(text: &str) -> ProtocolError {
    ProtocolError(text.to_string())
}

/// Where a request parser is in the request at the front of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RequestState {
    /// Nothing parsed yet; `scan` bytes were searched for the end of the first line.
    Start { scan: usize },
    /// Inside a multibulk request: `left` arguments to go, the next starting at `at`;
    /// `scan` bytes after `at` were searched for the end of its length line.
    Args { left: i64, at: usize, scan: usize },
    /// Inside an argument's body, which (with its `\r\n`) ends at `end`; then `left` more.
    Body { left: i64, end: usize },
}

/// The resumable request parser of RESP. See the module documentation.
#[derive(Clone, Debug)]
pub struct RespRequestParser {
    max_frame: usize,
    state: RequestState,
}

impl RespRequestParser {
    /// A parser refusing requests over `max_frame` bytes.
    pub fn new(max_frame: usize) -> RespRequestParser {
        RespRequestParser { max_frame, state: RequestState::Start { scan: 0 } }
    }

    fn done(&mut self, len: usize) -> Result<Option<usize>, ProtocolError> {
        self.state = RequestState::Start { scan: 0 };
        Ok(Some(len))
    }
}

/// The position of the first `needle` in `buf[from..]`, searching from `from + scan`.
fn find(buf: &[u8], from: usize, scan: usize, needle: u8) -> Option<usize> {
    let start = (from + scan).min(buf.len());
    buf[start..].iter().position(|&b| b == needle).map(|i| start + i)
}

impl RequestParser for RespRequestParser {
    fn parse(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        loop {
            match self.state {
                RequestState::Start { scan } => {
                    let Some(&first) = buf.first() else { return Ok(None) };
                    if first != b'*' {
                        // Inline: up to the first '\n'.
                        return match find(buf, 0, scan, b'\n') {
                            Some(nl) => self.done(nl + 1),
                            None if buf.len() > MAX_INLINE => Err(error("too big inline request")),
                            None => {
                                self.state = RequestState::Start { scan: buf.len() };
                                Ok(None)
                            }
                        };
                    }
                    let Some(cr) = find(buf, 0, scan, b'\r') else {
                        if buf.len() > MAX_INLINE {
                            return Err(error("too big mbulk count string"));
                        }
                        self.state = RequestState::Start { scan: buf.len() };
                        return Ok(None);
                    };
                    if buf.len() < cr + 2 {
                        self.state = RequestState::Start { scan: cr };
                        return Ok(None);
                    }
                    if buf[cr + 1] != b'\n' {
                        return Err(error("invalid multibulk length"));
                    }
                    let count = string2ll(&buf[1..cr])
                        .filter(|n| *n <= MAX_MULTIBULK)
                        .ok_or_else(|| error("invalid multibulk length"))?;
                    if count <= 0 {
                        // Redis skips an empty (or negative) multibulk and reads on.
                        return self.done(cr + 2);
                    }
                    self.state = RequestState::Args { left: count, at: cr + 2, scan: 0 };
                }
                RequestState::Args { left, at, scan } => {
                    if left == 0 {
                        return self.done(at);
                    }
                    if at > self.max_frame {
                        return Err(error("invalid multibulk length"));
                    }
                    let Some(cr) = find(buf, at, scan, b'\r') else {
                        if buf.len() - at.min(buf.len()) > MAX_INLINE {
                            return Err(error("too big bulk count string"));
                        }
                        self.state = RequestState::Args { left, at, scan: buf.len().saturating_sub(at) };
                        return Ok(None);
                    };
                    if buf.len() < cr + 2 {
                        self.state = RequestState::Args { left, at, scan: cr - at };
                        return Ok(None);
                    }
                    if buf[at] != b'$' {
                        let got = buf[at] as char;
                        return Err(ProtocolError(format!("expected '$', got '{got}'")));
                    }
                    if buf[cr + 1] != b'\n' {
                        return Err(error("invalid bulk length"));
                    }
                    let len = string2ll(&buf[at + 1..cr])
                        .filter(|n| *n >= 0 && (*n as u64) <= self.max_frame as u64)
                        .ok_or_else(|| error("invalid bulk length"))?;
                    let end = cr + 2 + len as usize + 2;
                    if end > self.max_frame.saturating_add(MAX_INLINE) {
                        return Err(error("invalid bulk length"));
                    }
                    self.state = RequestState::Body { left: left - 1, end };
                }
                RequestState::Body { left, end } => {
                    if buf.len() < end {
                        return Ok(None);
                    }
                    // Redis skips the two bytes after a bulk string without looking at them
                    // (processMultibulkBuffer), and so does resh: what Redis runs, resh passes
                    // (re-encoded, see `resp::arguments`).
                    self.state = RequestState::Args { left, at: end, scan: 0 };
                }
            }
        }
    }
}

/// Where a response parser is in the response at the front of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResponseState {
    /// At the start of a value at `at`.
    Value { at: usize },
    /// Inside the first line of a value of type `kind` that starts at `at`; `scan` bytes of it
    /// were searched for its end.
    Line { kind: u8, at: usize, scan: usize },
    /// Inside a bulk value whose body (with its `\r\n`) ends at `end`.
    Body { end: usize },
}

/// Whether a value of this type is one line whose content the parser does not need (so what
/// was scanned of it may be dropped).
fn simple(kind: u8) -> bool {
    matches!(kind, b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(')
}

/// The resumable response parser of RESP (RESP2 and RESP3 values). See the module
/// documentation.
#[derive(Clone, Debug)]
pub struct RespResponseParser {
    state: ResponseState,
    /// Elements still to come at each open aggregate level.
    stack: Vec<u64>,
    /// The buffer's length at the last call: nothing beyond it was parsed.
    seen: usize,
}

impl Default for RespResponseParser {
    fn default() -> Self {
        RespResponseParser { state: ResponseState::Value { at: 0 }, stack: Vec::new(), seen: 0 }
    }
}

impl RespResponseParser {
    /// A value ended at `end`: the frame is complete once no aggregate is open.
    fn value_done(&mut self, end: usize) -> Option<usize> {
        while let Some(top) = self.stack.last_mut() {
            *top -= 1;
            if *top > 0 {
                break;
            }
            self.stack.pop();
        }
        if self.stack.is_empty() {
            self.state = ResponseState::Value { at: 0 };
            Some(end)
        } else {
            self.state = ResponseState::Value { at: end };
            None
        }
    }

    /// The value whose line `line` (without type byte and CRLF) ended at `end`.
    fn line_done(&mut self, kind: u8, line: &[u8], end: usize) -> Result<Option<usize>, ProtocolError> {
        match kind {
            b'$' | b'!' | b'=' => {
                let n = string2ll(line).ok_or_else(|| error("invalid bulk length"))?;
                if n == -1 && kind == b'$' {
                    return Ok(self.value_done(end));
                }
                let n = usize::try_from(n).map_err(|_| error("invalid bulk length"))?;
                let body_end = end.checked_add(n).and_then(|e| e.checked_add(2));
                self.state = ResponseState::Body { end: body_end.ok_or_else(|| error("invalid bulk length"))? };
                Ok(None)
            }
            b'*' | b'%' | b'~' | b'>' | b'|' => {
                let n = string2ll(line).ok_or_else(|| error("invalid aggregate length"))?;
                if n == -1 && kind == b'*' {
                    return Ok(self.value_done(end));
                }
                let n = u64::try_from(n).map_err(|_| error("invalid aggregate length"))?;
                // A map holds n pairs; an attribute n pairs and then the value it is attached to.
                let elements = match kind {
                    b'%' => n.saturating_mul(2),
                    b'|' => n.saturating_mul(2).saturating_add(1),
                    _ => n,
                };
                if elements == 0 {
                    return Ok(self.value_done(end));
                }
                if self.stack.len() >= MAX_DEPTH {
                    return Err(error("nesting too deep"));
                }
                self.stack.push(elements);
                self.state = ResponseState::Value { at: end };
                Ok(None)
            }
            _ => Ok(self.value_done(end)),
        }
    }
}

impl ResponseParser for RespResponseParser {
    fn parse(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        self.seen = buf.len();
        loop {
            match self.state {
                ResponseState::Body { end } => {
                    if buf.len() < end {
                        return Ok(None);
                    }
                    if &buf[end - 2..end] != b"\r\n" {
                        return Err(error("bulk string not followed by CRLF"));
                    }
                    if let Some(len) = self.value_done(end) {
                        return Ok(Some(len));
                    }
                }
                ResponseState::Value { at } => {
                    let Some(&kind) = buf.get(at) else { return Ok(None) };
                    if !simple(kind) && !matches!(kind, b'$' | b'!' | b'=' | b'*' | b'%' | b'~' | b'>' | b'|') {
                        return Err(ProtocolError(format!(
                            "unexpected byte {kind:#04x} where a RESP value should start"
                        )));
                    }
                    self.state = ResponseState::Line { kind, at, scan: 1 };
                }
                ResponseState::Line { kind, at, scan } => {
                    let Some(nl) = find(buf, at, scan, b'\n') else {
                        if !simple(kind) && buf.len() - at > MAX_HEADER {
                            return Err(error("length line too long"));
                        }
                        // Keep the last byte: it may be the '\r' of the "\r\n" to come.
                        let scan = (buf.len() - at).saturating_sub(1).max(scan);
                        self.state = ResponseState::Line { kind, at, scan };
                        return Ok(None);
                    };
                    if nl == 0 || buf[nl - 1] != b'\r' {
                        return Err(error("line not ended by CRLF"));
                    }
                    let line = if simple(kind) { &[][..] } else { &buf[at + 1..nl - 1] };
                    if let Some(len) = self.line_done(kind, line, nl + 1)? {
                        return Ok(Some(len));
                    }
                }
            }
        }
    }

    fn progress(&self) -> usize {
        let parsed = match self.state {
            ResponseState::Value { at } => at,
            // The line of a length or count must stay until it is read; of a simple line, what
            // was searched may go.
            ResponseState::Line { kind, at, scan } if simple(kind) => at + scan,
            ResponseState::Line { at, .. } => at,
            // A body's bytes may go as they come, but for its final CRLF (checked at the end).
            ResponseState::Body { end } => end.saturating_sub(2),
        };
        parsed.min(self.seen)
    }

    fn consumed(&mut self, n: usize) {
        self.seen = self.seen.saturating_sub(n);
        match &mut self.state {
            ResponseState::Value { at } => *at = at.saturating_sub(n),
            ResponseState::Line { at, scan, .. } => {
                // Dropping part of a simple line being scanned: its rest starts the buffer.
                let dropped_of_line = n.saturating_sub(*at);
                *at = at.saturating_sub(n);
                *scan = scan.saturating_sub(dropped_of_line);
            }
            ResponseState::Body { end } => *end = end.saturating_sub(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Option<Vec<String>> {
        split_args(line.as_bytes()).map(|v| v.into_iter().map(|a| String::from_utf8_lossy(&a).into_owned()).collect())
    }

    #[test]
    fn string2ll_is_redis_strict() {
        for (text, want) in [
            ("0", Some(0)),
            ("1", Some(1)),
            ("-1", Some(-1)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("+1", None),
            ("01", None),
            ("04", None),
            ("-0", None),
            ("", None),
            ("-", None),
            (" 1", None),
            ("1 ", None),
            ("1x", None),
        ] {
            assert_eq!(string2ll(text.as_bytes()), want, "{text:?}");
        }
    }

    #[test]
    fn inline_splitting_follows_sdssplitargs() {
        assert_eq!(args("SET k v"), Some(vec!["SET".into(), "k".into(), "v".into()]));
        assert_eq!(args("  SET   k\tv  "), Some(vec!["SET".into(), "k".into(), "v".into()]));
        assert_eq!(args(r#"SET k "a b""#), Some(vec!["SET".into(), "k".into(), "a b".into()]));
        assert_eq!(args(r#"SET k "a\nb\x41""#), Some(vec!["SET".into(), "k".into(), "a\nbA".into()]));
        assert_eq!(args(r"SET k 'it\'s'"), Some(vec!["SET".into(), "k".into(), "it's".into()]));
        assert_eq!(args(r#"SET k 'a\nb'"#), Some(vec!["SET".into(), "k".into(), "a\\nb".into()]));
        assert_eq!(args(r#"SET k foo"bar baz""#), Some(vec!["SET".into(), "k".into(), "foobar baz".into()]));
        assert_eq!(args(r#"SET k "unbalanced"#), None);
        assert_eq!(args(r#"SET k "a"b"#), None, "a closing quote must be followed by a space");
        assert_eq!(args("SET k 'x"), None);
        assert_eq!(args(""), Some(vec![]));
        assert_eq!(args("   "), Some(vec![]));
        assert_eq!(args("PING\0 ignored"), Some(vec!["PING".into()]));
    }

    fn request_len(input: &[u8]) -> Result<Option<usize>, ProtocolError> {
        RespRequestParser::new(1 << 20).parse(input)
    }

    #[test]
    fn requests_redis_refuses_are_refused() {
        for (input, why) in [
            (&b"*+1\r\n$4\r\nPING\r\n"[..], "invalid multibulk length"),
            (b"*01\r\n$4\r\nPING\r\n", "invalid multibulk length"),
            (b"*1\r\n$04\r\nPING\r\n", "invalid bulk length"),
            (b"*1\r\n$+4\r\nPING\r\n", "invalid bulk length"),
            (b"*1\r\n$-1\r\n", "invalid bulk length"),
            (b"*1\r\n:1\r\n", "expected '$', got ':'"),
            (b"*x\r\n", "invalid multibulk length"),
        ] {
            assert_eq!(request_len(input), Err(ProtocolError(why.into())), "{:?}", String::from_utf8_lossy(input));
        }
        let long = vec![b'a'; MAX_INLINE + 1];
        assert_eq!(request_len(&long), Err(ProtocolError("too big inline request".into())));
        let mut long = b"*".to_vec();
        long.extend(vec![b'1'; MAX_INLINE + 1]);
        assert_eq!(request_len(&long), Err(ProtocolError("too big mbulk count string".into())));
    }

    #[test]
    fn empty_and_negative_multibulks_are_skipped_like_redis() {
        assert_eq!(request_len(b"*0\r\nPING\r\n"), Ok(Some(4)));
        assert_eq!(request_len(b"*-10\r\nPING\r\n"), Ok(Some(6)));
    }

    #[test]
    fn a_request_fed_byte_by_byte_frames_once() {
        let get = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let mut p = RespRequestParser::new(1 << 20);
        for cut in 0..get.len() {
            assert_eq!(p.parse(&get[..cut]), Ok(None), "prefix of {cut} bytes");
        }
        assert_eq!(p.parse(get), Ok(Some(get.len())));
        assert_eq!(p.parse(b"PING\r\n"), Ok(Some(6)), "starts afresh after a frame");
    }

    fn response_len(input: &[u8]) -> Result<Option<usize>, ProtocolError> {
        RespResponseParser::default().parse(input)
    }

    #[test]
    fn responses_of_every_type_frame() {
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
            b"~2\r\n+a\r\n+b\r\n",
            b"|1\r\n+key\r\n+val\r\n:7\r\n",
            b"_\r\n",
            b",1.5\r\n",
            b"#t\r\n",
            b"(123\r\n",
            b"!3\r\nerr\r\n",
            b"=7\r\ntxt:abc\r\n",
        ] {
            let mut buf = frame.to_vec();
            buf.extend_from_slice(b"+NEXT\r\n");
            assert_eq!(response_len(&buf), Ok(Some(frame.len())), "{:?}", String::from_utf8_lossy(frame));
            let mut p = RespResponseParser::default();
            for cut in 0..frame.len() {
                assert_eq!(p.parse(&frame[..cut]), Ok(None), "{:?} cut at {cut}", String::from_utf8_lossy(frame));
            }
            assert_eq!(p.parse(&buf), Ok(Some(frame.len())));
        }
        assert!(response_len(b"?\r\n").is_err());
        assert!(response_len(b"$3\r\nabcd\r\n").is_err());
    }

    #[test]
    fn deep_replies_redis_can_produce_frame() {
        // Deeper than the old limit of 32, as a recursive Lua table gives.
        let depth = 500;
        let mut frame = b"*1\r\n".repeat(depth);
        frame.extend_from_slice(b":1\r\n");
        assert_eq!(response_len(&frame), Ok(Some(frame.len())));
        let mut too_deep = b"*1\r\n".repeat(MAX_DEPTH + 1);
        too_deep.extend_from_slice(b":1\r\n");
        assert_eq!(response_len(&too_deep), Err(ProtocolError("nesting too deep".into())));
    }

    #[test]
    fn a_large_frame_can_be_dropped_as_it_is_parsed() {
        // What the replica reader does with a frame larger than it keeps: drop what was
        // parsed, tell the parser, go on.
        let mut frame = b"*3\r\n$5\r\nhello\r\n+".to_vec();
        frame.extend(vec![b'x'; 10_000]);
        frame.extend_from_slice(b"\r\n$3\r\nend\r\n");
        let mut p = RespResponseParser::default();
        let mut buf: Vec<u8> = Vec::new();
        let mut dropped = 0;
        let mut done = None;
        for chunk in frame.chunks(7) {
            buf.extend_from_slice(chunk);
            if let Some(len) = p.parse(&buf).expect("valid") {
                done = Some(dropped + len);
                break;
            }
            let n = p.progress();
            assert!(n <= buf.len());
            buf.drain(..n);
            p.consumed(n);
            dropped += n;
        }
        assert_eq!(done, Some(frame.len()));
    }
}
