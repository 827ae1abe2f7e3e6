//! `TTL` and `PTTL`: the time a key has left, computed from when it expires.
//!
//! Each replica computes the time left from its own clock as it runs the command, so the
//! answers differ by the milliseconds between the replicas' runs: voted as they are, a `PTTL`
//! would often be undecidable, or blame a healthy replica. When a key expires is the same on
//! every replica (resh sends expirations as absolute times, as Redis's own replication does),
//! so resh asks that instead (`PEXPIRETIME`, voted) and computes the time left from its own
//! clock, as Redis does: a time already past is 0, and `TTL` rounds to the nearest second.
//! A server without `PEXPIRETIME` (Redis before 7.0) refuses it, alike on every replica: resh
//! then sends the request as the client sent it, voted as it is. Inside a transaction, resh
//! queues `PEXPIRETIME` in their place and makes their answers in the EXEC answer the same way.
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::encode_array;
use crate::codec::{Clock, Continuation, Dispatch, Part, RequestClass};

/// A `TTL` or `PTTL` in progress. See the module documentation.
#[derive(Debug)]
pub struct TimeLeft {
    /// `TTL` (seconds) rather than `PTTL`.
    seconds: bool,
    /// The request as the client sent it (for a server without `PEXPIRETIME`).
    request: Bytes,
    /// The time of day at `at`, to tell the time of day when the answer comes.
    wall: SystemTime,
    at: Instant,
    /// The request was sent as it is: its answer is the client's.
    plain: bool,
}

/// The first step of a `TTL` or `PTTL` with one key, or `None` for anything else (a form the
/// replicas refuse alike goes as it is).
pub fn start(command: &str, args: &[&[u8]], request: &[u8], clock: &dyn Clock) -> Option<Dispatch> {
    let seconds = match (command, args.len()) {
        ("TTL", 2) => true,
        ("PTTL", 2) => false,
        _ => return None,
    };
    let ask = Part { request: encode_array(&[&b"PEXPIRETIME"[..], args[1]]), class: RequestClass::default() };
    let then = TimeLeft {
        seconds,
        request: Bytes::copy_from_slice(request),
        wall: clock.wall(),
        at: clock.now(),
        plain: false,
    };
    Some(Dispatch::Ask { parts: vec![ask], then: Box::new(then) })
}

fn integer(frame: &[u8]) -> Option<i64> {
    let text = frame.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(text).ok()?.parse().ok()
}

impl TimeLeft {
    /// The answer for a key that expires at `expires_ms` (Unix time), at `now`.
    fn left(&self, expires_ms: i64, now: Instant) -> Bytes {
        time_left(expires_ms, self.seconds, self.wall + now.saturating_duration_since(self.at))
    }
}

/// `TTL`'s (`seconds`) or `PTTL`'s answer for a key that expires at `expires_ms` (Unix time),
/// at the time of day `now`, as Redis computes it.
pub(super) fn time_left(expires_ms: i64, seconds: bool, now: SystemTime) -> Bytes {
    let now_ms = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as i64;
    let ms = expires_ms.saturating_sub(now_ms).max(0);
    let value = if seconds { (ms + 500) / 1000 } else { ms };
    Bytes::from(format!(":{value}\r\n"))
}

/// Inside a transaction: `PEXPIRETIME key` for `TTL key` or `PTTL key` (whose answer
/// [`time_left`] then makes the client's, in the EXEC answer), and whether it was `TTL`.
pub(super) fn queued_instead(command: &str, args: &[&[u8]]) -> Option<(Bytes, bool)> {
    match (command, args.len()) {
        ("TTL", 2) => Some((encode_array(&[&b"PEXPIRETIME"[..], args[1]]), true)),
        ("PTTL", 2) => Some((encode_array(&[&b"PEXPIRETIME"[..], args[1]]), false)),
        _ => None,
    }
}

/// An integer reply's value.
pub(super) fn integer_of(frame: &[u8]) -> Option<i64> {
    integer(frame)
}

impl Continuation for TimeLeft {
    fn answered(mut self: Box<Self>, answer: &[u8], now: Instant) -> Dispatch {
        if self.plain {
            return Dispatch::Reply(Bytes::copy_from_slice(answer));
        }
        match integer(answer) {
            // No such key (-2), or no time to live (-1): the same in either unit.
            Some(n) if n < 0 => Dispatch::Reply(Bytes::copy_from_slice(answer)),
            Some(expires) => Dispatch::Reply(self.left(expires, now)),
            // Refused (an older server), or no integer at all: the request as it is.
            None => {
                self.plain = true;
                let part = Part { request: self.request.clone(), class: RequestClass::default() };
                Dispatch::Ask { parts: vec![part], then: self }
            }
        }
    }

    /// Never waits; woken all the same, it asks the request as it is.
    fn woken(mut self: Box<Self>, _now: Instant) -> Dispatch {
        self.plain = true;
        let part = Part { request: self.request.clone(), class: RequestClass::default() };
        Dispatch::Ask { parts: vec![part], then: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::FixedClock;

    fn step(command: &str, key: &str, clock: &FixedClock) -> Box<dyn Continuation> {
        let request = encode_array(&[command, key]);
        match start(command, &[command.as_bytes(), key.as_bytes()], &request, clock) {
            Some(Dispatch::Ask { parts, then }) => {
                assert_eq!(parts.len(), 1);
                assert_eq!(parts[0].request, encode_array(&["PEXPIRETIME", key]));
                assert!(!parts[0].class.logged);
                then
            }
            other => panic!("{other:?}"),
        }
    }

    fn reply(d: Dispatch) -> String {
        match d {
            Dispatch::Reply(b) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_time_left_is_computed_from_the_voted_expiry_and_resh_clock() {
        let clock = FixedClock(UNIX_EPOCH + Duration::from_millis(1_000_000), Instant::now());
        let at = clock.now();
        let pttl = step("PTTL", "k", &clock);
        assert_eq!(reply(pttl.answered(b":1004500\r\n", at)), ":4500\r\n");
        // The answer came 100 ms later: that much less is left.
        let pttl = step("PTTL", "k", &clock);
        assert_eq!(reply(pttl.answered(b":1004500\r\n", at + Duration::from_millis(100))), ":4400\r\n");
        // TTL rounds to the nearest second, as Redis does.
        let ttl = step("TTL", "k", &clock);
        assert_eq!(reply(ttl.answered(b":1004500\r\n", at)), ":5\r\n");
        let ttl = step("TTL", "k", &clock);
        assert_eq!(reply(ttl.answered(b":1004499\r\n", at)), ":4\r\n");
        // Past: 0; no key and no expiry pass as they are.
        let ttl = step("PTTL", "k", &clock);
        assert_eq!(reply(ttl.answered(b":999000\r\n", at)), ":0\r\n");
        for special in [":-1\r\n", ":-2\r\n"] {
            let ttl = step("TTL", "k", &clock);
            assert_eq!(reply(ttl.answered(special.as_bytes(), at)), special);
        }
    }

    #[test]
    fn a_server_without_pexpiretime_gets_the_request_as_it_is() {
        let clock = FixedClock(UNIX_EPOCH, Instant::now());
        let ttl = step("TTL", "k", &clock);
        match ttl.answered(b"-ERR unknown command 'PEXPIRETIME'\r\n", clock.now()) {
            Dispatch::Ask { parts, then } => {
                assert_eq!(parts[0].request, encode_array(&["TTL", "k"]));
                assert_eq!(reply(then.answered(b":7\r\n", clock.now())), ":7\r\n");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_forms_are_not_steps() {
        let clock = FixedClock(UNIX_EPOCH, Instant::now());
        assert!(start("TTL", &[b"TTL"], b"", &clock).is_none());
        assert!(start("PTTL", &[b"PTTL", b"a", b"b"], b"", &clock).is_none());
        assert!(start("GET", &[b"GET", b"a"], b"", &clock).is_none());
    }
}
