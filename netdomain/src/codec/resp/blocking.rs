//! Blocking commands (`BLPOP`, `BRPOP`, `BLMPOP`, `BZPOPMIN`, `BZPOPMAX`, `BZMPOP`,
//! `BRPOPLPUSH`, `BLMOVE`, `XREAD ... BLOCK`, `XREADGROUP ... BLOCK`), served without blocking
//! the connection every session shares.
//!
//! A blocked command on the shared connection would stop every session. resh polls instead, in
//! the global order like any request, so every replica executes the same pops at the same
//! points:
//! 1. **probe**, a voted read that says whether there is anything to take (`EXISTS` the keys;
//!    for `XREAD`, the same read without `BLOCK`). Reads are not logged: polling does not grow
//!    the replay log;
//! 2. if there is, **take** it with the non-blocking form (`LMPOP`, `ZMPOP`, `RPOPLPUSH`,
//!    `LMOVE`), voted and logged like any write, and answer in the blocking command's own
//!    format. Another session may have taken it first (the take finds nothing): probe again;
//! 3. if not, wait ([`Dispatch::Later`]: 2 ms, doubling up to [`MAX_POLL`]) and probe again,
//!    until the command's timeout (`*-1`, or `$-1` for the moves, as Redis answers one).
//!
//! What differs from Redis: a pop is seen up to [`MAX_POLL`] after the push that makes it
//! possible, and clients blocked on the same key are not served in the order they blocked.
//! `XREAD` with `$` reads from the last entry when it started (resolved by `XREVRANGE`).
//!
//! `XREADGROUP` cannot be probed by a read: reading a group is what delivers its entries. Its
//! non-blocking form is the probe and the take at once, logged like any write; one that found
//! nothing answers nil and changed nothing, and leaves the replay log again
//! ([`RequestClass::unchanged_if`]), so polling does not grow the log.
//!
//! Inside MULTI, and `WAIT` and `WAITAOF`, are refused.
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::shape::elements;
use super::{encode_array, Resp};
use crate::codec::{Continuation, Dispatch, Part, RequestClass};

/// The longest wait between two probes.
pub const MAX_POLL: Duration = Duration::from_millis(50);
/// The first wait after an empty probe.
const FIRST_POLL: Duration = Duration::from_millis(2);

/// What the command takes, and how it answers.
#[derive(Debug, Clone)]
enum Take {
    /// LMPOP's arguments after the key count; BLPOP/BRPOP answer `[key, element]`.
    List { keys: Vec<Bytes>, tail: Vec<Bytes>, flat: bool },
    /// ZMPOP's; BZPOPMIN/MAX answer `[key, member, score]`.
    Zset { keys: Vec<Bytes>, tail: Vec<Bytes>, flat: bool },
    /// RPOPLPUSH or LMOVE, as the request without the timeout.
    Move { request: Vec<Bytes> },
    /// XREAD without BLOCK (the ids resolved); the read is the take.
    Stream { request: Vec<Bytes> },
    /// XREADGROUP without BLOCK: probe and take at once.
    Group { request: Vec<Bytes> },
}

/// A blocking command being served. See the module documentation.
#[derive(Debug)]
pub struct Block {
    take: Take,
    /// When the command's timeout ends; `None`: never.
    deadline: Option<Instant>,
    poll: Duration,
    stage: Stage,
    /// Streams whose `$` id is still to resolve: their index in the request.
    unresolved: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Resolving,
    Probing,
    Taking,
}

fn error(text: &str) -> Option<Dispatch> {
    Some(Dispatch::Reply(Resp::error(text)))
}

fn owned(args: &[&[u8]]) -> Vec<Bytes> {
    args.iter().map(|a| Bytes::copy_from_slice(a)).collect()
}

/// A timeout in seconds as Redis reads it (a float, not negative); Redis's error otherwise.
fn seconds(arg: &[u8], now: Instant) -> Result<Option<Instant>, Dispatch> {
    let value: Option<f64> =
        std::str::from_utf8(arg).ok().and_then(|t| t.trim().parse().ok()).filter(|v: &f64| v.is_finite());
    match value {
        None => Err(Dispatch::Reply(Resp::error("ERR timeout is not a float or out of range"))),
        Some(v) if v < 0.0 => Err(Dispatch::Reply(Resp::error("ERR timeout is negative"))),
        Some(0.0) => Ok(None),
        Some(v) => match Duration::try_from_secs_f64(v).ok().and_then(|d| now.checked_add(d)) {
            Some(at) => Ok(Some(at)),
            None => Err(Dispatch::Reply(Resp::error("ERR timeout is out of range"))),
        },
    }
}

/// A timeout in milliseconds (XREAD's BLOCK).
fn millis(arg: &[u8], now: Instant) -> Result<Option<Instant>, Dispatch> {
    match super::frame::string2ll(arg) {
        None => Err(Dispatch::Reply(Resp::error("ERR timeout is not an integer or out of range"))),
        Some(v) if v < 0 => Err(Dispatch::Reply(Resp::error("ERR timeout is negative"))),
        Some(0) => Ok(None),
        Some(v) => Ok(now.checked_add(Duration::from_millis(v as u64))),
    }
}

/// The first step of a blocking command, or `None` for anything else. A form resh cannot
/// read is answered with Redis's error: it is never sent as it is (it would block).
pub fn start(command: &str, args: &[&[u8]], now: Instant) -> Option<Dispatch> {
    let arity = || Some(wrong_arity(command));
    let (take, deadline) = match command {
        "BLPOP" | "BRPOP" | "BZPOPMIN" | "BZPOPMAX" => {
            if args.len() < 3 {
                return arity();
            }
            let deadline = match seconds(args[args.len() - 1], now) {
                Ok(d) => d,
                Err(e) => return Some(e),
            };
            let keys = owned(&args[1..args.len() - 1]);
            let side: &[u8] = match command {
                "BLPOP" => b"LEFT",
                "BRPOP" => b"RIGHT",
                "BZPOPMIN" => b"MIN",
                _ => b"MAX",
            };
            let tail = vec![Bytes::copy_from_slice(side)];
            let take = if command.starts_with("BZ") {
                Take::Zset { keys, tail, flat: true }
            } else {
                Take::List { keys, tail, flat: true }
            };
            (take, deadline)
        }
        "BLMPOP" | "BZMPOP" => {
            // BLMPOP timeout numkeys key... LEFT|RIGHT [COUNT n]
            let Some(n) = args.get(2).and_then(|n| super::frame::string2ll(n)).filter(|n| *n > 0) else {
                return if args.len() < 5 { arity() } else { error("ERR numkeys should be greater than 0") };
            };
            let n = n as usize;
            if args.len() < 3 + n + 1 {
                return error("ERR syntax error");
            }
            let deadline = match seconds(args[1], now) {
                Ok(d) => d,
                Err(e) => return Some(e),
            };
            let keys = owned(&args[3..3 + n]);
            let tail = owned(&args[3 + n..]);
            let take = if command == "BZMPOP" {
                Take::Zset { keys, tail, flat: false }
            } else {
                Take::List { keys, tail, flat: false }
            };
            (take, deadline)
        }
        "BRPOPLPUSH" | "BLMOVE" => {
            let want = if command == "BRPOPLPUSH" { 4 } else { 6 };
            if args.len() != want {
                return arity();
            }
            let deadline = match seconds(args[want - 1], now) {
                Ok(d) => d,
                Err(e) => return Some(e),
            };
            let mut request = owned(&args[..want - 1]);
            request[0] = Bytes::from_static(if command == "BRPOPLPUSH" { b"RPOPLPUSH" } else { b"LMOVE" });
            (Take::Move { request }, deadline)
        }
        "XREADGROUP" => {
            // XREADGROUP GROUP g c [COUNT n] [BLOCK ms] [NOACK] STREAMS key... id...
            let (request, deadline) = match without_block(command, args, 7, now)? {
                Ok(found) => found,
                Err(e) => return Some(e),
            };
            // Its other errors (no STREAMS, an unbalanced list, no such group) are the
            // replicas', alike: the first poll gets them.
            (Take::Group { request }, deadline)
        }
        "XREAD" => {
            // XREAD [COUNT n] [BLOCK ms] STREAMS key... id...
            let (request, deadline) = match without_block(command, args, 4, now)? {
                Ok(found) => found,
                Err(e) => return Some(e),
            };
            let Some(streams) = request.iter().position(|a| a.eq_ignore_ascii_case(b"STREAMS")) else {
                return error("ERR syntax error");
            };
            let ids = request.len() - streams - 1;
            if ids == 0 || ids % 2 != 0 {
                return error(
                    "ERR Unbalanced 'xread' list of streams: for each stream key an ID or '$' must be specified.",
                );
            }
            let unresolved: Vec<usize> =
                (streams + 1 + ids / 2..request.len()).filter(|&i| &request[i][..] == b"$").collect();
            let block = Block {
                take: Take::Stream { request },
                deadline,
                poll: FIRST_POLL,
                stage: Stage::Resolving,
                unresolved,
            };
            return Some(block.resolve_or_probe());
        }
        _ => return None,
    };
    Some(Block { take, deadline, poll: FIRST_POLL, stage: Stage::Probing, unresolved: Vec::new() }.probe())
}

/// Redis's error for a command with too few or too many arguments.
fn wrong_arity(command: &str) -> Dispatch {
    Dispatch::Reply(Resp::error(&format!("ERR wrong number of arguments for '{}' command", command.to_lowercase())))
}

/// A stream read's arguments without `BLOCK ms`, and when that timeout ends (`None`: never).
type Unblocked = (Vec<Bytes>, Option<Instant>);

/// A stream read without its `BLOCK` (see [`Unblocked`]); Redis's error for fewer than `least`
/// arguments, or a timeout it would refuse; `None` without `BLOCK`.
fn without_block(command: &str, args: &[&[u8]], least: usize, now: Instant) -> Option<Result<Unblocked, Dispatch>> {
    let at = args.iter().position(|a| a.eq_ignore_ascii_case(b"BLOCK"))?;
    if args.len() < least {
        return Some(Err(wrong_arity(command)));
    }
    let deadline = match args.get(at + 1).map(|ms| millis(ms, now)) {
        Some(Ok(d)) => d,
        Some(Err(e)) => return Some(Err(e)),
        None => return Some(Err(Dispatch::Reply(Resp::error("ERR syntax error")))),
    };
    let mut request = owned(&args[..at]);
    request.extend(owned(&args[at + 2..]));
    Some(Ok((request, deadline)))
}

fn read(args: &[Bytes]) -> Part {
    Part { request: encode_array(args), class: RequestClass::default() }
}

impl Block {
    fn ask(self, part: Part) -> Dispatch {
        Dispatch::Ask { parts: vec![part], then: Box::new(self) }
    }

    /// XREAD: the next `$` to resolve (the stream's last id now), or the first probe.
    fn resolve_or_probe(mut self) -> Dispatch {
        let Take::Stream { request } = &self.take else { return self.probe() };
        let Some(&at) = self.unresolved.first() else { return self.probe() };
        let streams = request.iter().position(|a| a.eq_ignore_ascii_case(b"STREAMS")).unwrap_or(0);
        let ids = (request.len() - streams - 1) / 2;
        let key = request[at - ids].clone();
        self.stage = Stage::Resolving;
        let last = read(&[Bytes::from_static(b"XREVRANGE"), key, "+".into(), "-".into(), "COUNT".into(), "1".into()]);
        self.ask(last)
    }

    /// Asks whether there is anything to take.
    fn probe(mut self) -> Dispatch {
        self.stage = Stage::Probing;
        let part = match &self.take {
            Take::List { keys, .. } | Take::Zset { keys, .. } => {
                let mut args = vec![Bytes::from_static(b"EXISTS")];
                args.extend(keys.iter().cloned());
                read(&args)
            }
            Take::Move { request } => read(&[Bytes::from_static(b"EXISTS"), request[1].clone()]),
            Take::Stream { request } => read(request),
            Take::Group { request } => Part {
                request: encode_array(request),
                class: RequestClass { logged: true, unchanged_if: Some(b"*-1\r\n"), ..RequestClass::default() },
            },
        };
        self.ask(part)
    }

    /// Takes what the probe found, with the non-blocking form (a write: logged).
    fn take(mut self) -> Dispatch {
        self.stage = Stage::Taking;
        let args = match &self.take {
            Take::List { keys, tail, .. } | Take::Zset { keys, tail, .. } => {
                let command: &'static [u8] = if matches!(self.take, Take::List { .. }) { b"LMPOP" } else { b"ZMPOP" };
                let mut args = vec![Bytes::from_static(command), keys.len().to_string().into()];
                args.extend(keys.iter().cloned());
                args.extend(tail.iter().cloned());
                args
            }
            Take::Move { request } | Take::Stream { request } | Take::Group { request } => request.clone(),
        };
        let logged = !matches!(self.take, Take::Stream { .. });
        let class = RequestClass { logged, ..RequestClass::default() };
        self.ask(Part { request: encode_array(&args), class })
    }

    /// Nothing to take now: wait and probe again, or answer the timeout.
    fn wait(mut self, now: Instant) -> Dispatch {
        if self.deadline.is_some_and(|d| now >= d) {
            return Dispatch::Reply(Bytes::from_static(match self.take {
                Take::Move { .. } => b"$-1\r\n",
                _ => b"*-1\r\n",
            }));
        }
        let mut after = self.poll;
        if let Some(deadline) = self.deadline {
            after = after.min(deadline.saturating_duration_since(now));
        }
        self.poll = (self.poll * 2).min(MAX_POLL);
        Dispatch::Later { after, then: Box::new(self) }
    }

    /// The blocking command's own answer to what was taken.
    fn answer(&self, taken: &[u8]) -> Bytes {
        let flat = matches!(self.take, Take::List { flat: true, .. } | Take::Zset { flat: true, .. });
        if !flat {
            return Bytes::copy_from_slice(taken);
        }
        // LMPOP/ZMPOP answer [key, [element...]] (ZMPOP's elements [member, score]);
        // BLPOP answers [key, element], BZPOPMIN [key, member, score].
        let Some((_, outer)) = elements(taken) else { return Bytes::copy_from_slice(taken) };
        let (Some(key), Some(inner)) = (outer.first(), outer.get(1)) else { return Bytes::copy_from_slice(taken) };
        let Some((_, items)) = elements(inner) else { return Bytes::copy_from_slice(taken) };
        let mut parts: Vec<&[u8]> = vec![key];
        match &self.take {
            Take::Zset { .. } => {
                let Some((_, pair)) = items.first().and_then(|p| elements(p)) else {
                    return Bytes::copy_from_slice(taken);
                };
                parts.extend(pair);
            }
            _ => parts.extend(items.first().copied()),
        }
        let mut out = format!("*{}\r\n", parts.len()).into_bytes();
        for p in parts {
            out.extend_from_slice(p);
        }
        Bytes::from(out)
    }
}

impl Continuation for Block {
    fn answered(mut self: Box<Self>, answer: &[u8], now: Instant) -> Dispatch {
        let nil = answer.starts_with(b"*-1\r\n") || answer.starts_with(b"$-1\r\n");
        if answer.first() == Some(&b'-') {
            // An error (a key of another type, a syntax the replicas refuse): Redis's answer.
            return Dispatch::Reply(Bytes::copy_from_slice(answer));
        }
        match self.stage {
            Stage::Resolving => {
                // XREVRANGE's answer: [[id, fields]] or empty: `$` is that id, or 0-0.
                let id = elements(answer)
                    .and_then(|(_, entries)| entries.first().copied().and_then(elements))
                    .and_then(|(_, entry)| entry.first().copied().and_then(elements_bulk))
                    .unwrap_or_else(|| Bytes::from_static(b"0-0"));
                let at = self.unresolved.remove(0);
                if let Take::Stream { request } = &mut self.take {
                    request[at] = id;
                }
                self.resolve_or_probe()
            }
            Stage::Probing => match &self.take {
                Take::Stream { .. } | Take::Group { .. } if !nil => Dispatch::Reply(Bytes::copy_from_slice(answer)),
                Take::Stream { .. } | Take::Group { .. } => self.wait(now),
                _ if answer.starts_with(b":0\r\n") => self.wait(now),
                _ => self.take(),
            },
            // Another session took it first: probe again, at once.
            Stage::Taking if nil => self.probe(),
            Stage::Taking => Dispatch::Reply(self.answer(answer)),
        }
    }

    /// Probes again, also at the deadline: what came during the last wait is still taken.
    fn woken(self: Box<Self>, _now: Instant) -> Dispatch {
        self.probe()
    }
}

/// A bulk string's content.
fn elements_bulk(value: &[u8]) -> Option<Bytes> {
    let line = value.windows(2).position(|w| w == b"\r\n")?;
    if value.first() != Some(&b'$') {
        return None;
    }
    Some(Bytes::copy_from_slice(value.get(line + 2..value.len().checked_sub(2)?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::sent_words as sent;

    enum Next {
        Asked(Box<dyn Continuation>, Vec<String>, bool),
        Wait(Box<dyn Continuation>, Duration),
        Reply(String),
    }

    fn next(d: Dispatch) -> Next {
        match d {
            Dispatch::Ask { parts, then } => {
                let logged = parts.iter().any(|p| p.class.logged);
                Next::Asked(then, sent(&parts), logged)
            }
            Dispatch::Later { after, then } => Next::Wait(then, after),
            Dispatch::Reply(r) => Next::Reply(String::from_utf8_lossy(&r).into_owned()),
            other => panic!("{other:?}"),
        }
    }

    fn begin(request: &str, now: Instant) -> Next {
        let args: Vec<&[u8]> = request.split(' ').map(str::as_bytes).collect();
        let command = request.split(' ').next().unwrap_or_default().to_ascii_uppercase();
        next(start(&command, &args, now).expect("a blocking command"))
    }

    #[test]
    fn blpop_probes_waits_and_takes_with_lmpop() {
        let t0 = Instant::now();
        let Next::Asked(then, asked, logged) = begin("BLPOP a b 1.5", t0) else { panic!("a probe") };
        assert_eq!(asked, ["EXISTS a b"]);
        assert!(!logged, "a probe is a read: not logged");
        let Next::Wait(then, after) = next(then.answered(b":0\r\n", t0)) else { panic!("a wait") };
        assert_eq!(after, FIRST_POLL);
        let Next::Asked(then, asked, _) = next(then.woken(t0 + after)) else { panic!("a probe") };
        assert_eq!(asked, ["EXISTS a b"]);
        let Next::Asked(then, asked, logged) = next(then.answered(b":1\r\n", t0)) else { panic!("a take") };
        assert_eq!(asked, ["LMPOP 2 a b LEFT"]);
        assert!(logged, "a take is a write: logged");
        let Next::Reply(reply) = next(then.answered(b"*2\r\n$1\r\nb\r\n*1\r\n$1\r\nx\r\n", t0)) else {
            panic!("the answer")
        };
        assert_eq!(reply, "*2\r\n$1\r\nb\r\n$1\r\nx\r\n", "BLPOP's own format: [key, element]");
    }

    #[test]
    fn the_timeout_answers_nil_and_waits_never_pass_it() {
        let t0 = Instant::now();
        let Next::Asked(mut then, _, _) = begin("BRPOP q 0.1", t0) else { panic!() };
        let mut now = t0;
        let mut waits = Vec::new();
        loop {
            match next(then.answered(b":0\r\n", now)) {
                Next::Wait(again, after) => {
                    waits.push(after);
                    now += after;
                    let Next::Asked(probe, _, _) = next(again.woken(now)) else { panic!("a probe") };
                    then = probe;
                }
                Next::Reply(reply) => {
                    assert_eq!(reply, "*-1\r\n");
                    break;
                }
                Next::Asked(..) => panic!("nothing to take"),
            }
        }
        assert!(waits.iter().all(|w| *w <= MAX_POLL));
        assert!(now - t0 >= Duration::from_millis(100) && now - t0 < Duration::from_millis(100) + MAX_POLL);
        // BRPOPLPUSH times out with a null bulk string, as Redis answers it.
        let Next::Asked(then, asked, _) = begin("BRPOPLPUSH src dst 0.01", t0) else { panic!() };
        assert_eq!(asked, ["EXISTS src"]);
        let later = t0 + Duration::from_secs(1);
        let Next::Reply(reply) = next(then.answered(b":0\r\n", later)) else { panic!() };
        assert_eq!(reply, "$-1\r\n");
    }

    /// XREADGROUP's poll is its non-blocking form: logged, but left out of the log again when
    /// it found nothing (answered nil); the first entries it finds are the answer.
    #[test]
    fn xreadgroup_polls_with_its_non_blocking_form() {
        let t0 = Instant::now();
        let request = "XREADGROUP GROUP g c COUNT 2 BLOCK 100 NOACK STREAMS s >";
        let Some(Dispatch::Ask { parts, then }) =
            start("XREADGROUP", &request.split(' ').map(str::as_bytes).collect::<Vec<_>>(), t0)
        else {
            panic!("a poll")
        };
        assert_eq!(
            parts[0].request,
            encode_array(&["XREADGROUP", "GROUP", "g", "c", "COUNT", "2", "NOACK", "STREAMS", "s", ">"])
        );
        assert!(parts[0].class.logged);
        assert_eq!(parts[0].class.unchanged_if, Some(&b"*-1\r\n"[..]));
        let Next::Wait(then, after) = next(then.answered(b"*-1\r\n", t0)) else { panic!("a wait") };
        let Next::Asked(then, asked, _) = next(then.woken(t0 + after)) else { panic!("a poll") };
        assert_eq!(asked, ["XREADGROUP GROUP g c COUNT 2 NOACK STREAMS s >"]);
        let found = b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n";
        let Next::Reply(reply) = next(then.answered(found, t0)) else { panic!("the entries") };
        assert_eq!(reply.as_bytes(), found);
        // Nothing within the timeout: nil, as Redis answers; the replicas' errors pass.
        let Some(Dispatch::Ask { then, .. }) =
            start("XREADGROUP", &request.split(' ').map(str::as_bytes).collect::<Vec<_>>(), t0)
        else {
            panic!("a poll")
        };
        let Next::Reply(reply) = next(then.answered(b"*-1\r\n", t0 + Duration::from_millis(100))) else { panic!() };
        assert_eq!(reply, "*-1\r\n");
        let Next::Asked(then, _, _) = begin("XREADGROUP GROUP g c BLOCK 0 STREAMS s >", t0) else { panic!() };
        let Next::Reply(reply) = next(then.answered(b"-NOGROUP No such key 's' or consumer group 'g'\r\n", t0)) else {
            panic!()
        };
        assert!(reply.starts_with("-NOGROUP"));
        for (request, error) in [
            ("XREADGROUP GROUP g c BLOCK x STREAMS s >", "-ERR timeout is not an integer or out of range"),
            ("XREADGROUP GROUP g BLOCK 1", "-ERR wrong number of arguments for 'xreadgroup' command"),
        ] {
            let Next::Reply(reply) = begin(request, t0) else { panic!("{request}") };
            assert!(reply.starts_with(error), "{request}: {reply}");
        }
    }

    #[test]
    fn a_take_another_session_won_probes_again() {
        let t0 = Instant::now();
        let Next::Asked(then, _, _) = begin("BZPOPMIN z 0", t0) else { panic!() };
        let Next::Asked(then, asked, _) = next(then.answered(b":1\r\n", t0)) else { panic!() };
        assert_eq!(asked, ["ZMPOP 1 z MIN"]);
        let Next::Asked(then, asked, _) = next(then.answered(b"*-1\r\n", t0)) else { panic!() };
        assert_eq!(asked, ["EXISTS z"]);
        let Next::Asked(then, _, _) = next(then.answered(b":1\r\n", t0)) else { panic!() };
        let taken = b"*2\r\n$1\r\nz\r\n*1\r\n*2\r\n$1\r\nm\r\n$3\r\n1.5\r\n";
        let Next::Reply(reply) = next(then.answered(taken, t0)) else { panic!() };
        assert_eq!(reply, "*3\r\n$1\r\nz\r\n$1\r\nm\r\n$3\r\n1.5\r\n", "BZPOPMIN's own format");
        // Errors are the replicas' (a key of another type).
        let Next::Asked(then, _, _) = begin("BLMPOP 0 1 k LEFT COUNT 2", t0) else { panic!() };
        let Next::Asked(then, asked, _) = next(then.answered(b":1\r\n", t0)) else { panic!() };
        assert_eq!(asked, ["LMPOP 1 k LEFT COUNT 2"]);
        let Next::Reply(reply) = next(then.answered(b"-WRONGTYPE Operation\r\n", t0)) else { panic!() };
        assert!(reply.starts_with("-WRONGTYPE"));
    }

    #[test]
    fn xread_block_resolves_dollar_and_reads_without_blocking() {
        let t0 = Instant::now();
        let Next::Asked(then, asked, _) = begin("XREAD COUNT 2 BLOCK 100 STREAMS s t $ 0-0", t0) else { panic!() };
        assert_eq!(asked, ["XREVRANGE s + - COUNT 1"]);
        let last = b"*1\r\n*2\r\n$3\r\n5-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n";
        let Next::Asked(then, asked, logged) = next(then.answered(last, t0)) else { panic!() };
        assert_eq!(asked, ["XREAD COUNT 2 STREAMS s t 5-1 0-0"]);
        assert!(!logged);
        let Next::Wait(then, _) = next(then.answered(b"*-1\r\n", t0)) else { panic!() };
        let Next::Asked(then, _, _) = next(then.woken(t0)) else { panic!() };
        let Next::Reply(reply) = next(then.answered(b"*1\r\n*2\r\n$1\r\ns\r\n*0\r\n", t0)) else { panic!() };
        assert_eq!(reply, "*1\r\n*2\r\n$1\r\ns\r\n*0\r\n");
        // An empty stream's `$` is 0-0.
        let Next::Asked(then, _, _) = begin("XREAD BLOCK 0 STREAMS s $", t0) else { panic!() };
        let Next::Asked(_, asked, _) = next(then.answered(b"*0\r\n", t0)) else { panic!() };
        assert_eq!(asked, ["XREAD STREAMS s 0-0"]);
    }

    #[test]
    fn malformed_forms_get_redis_errors_and_are_never_sent_as_they_are() {
        let t0 = Instant::now();
        for (request, error) in [
            ("BLPOP q x", "-ERR timeout is not a float or out of range"),
            ("BLPOP q -1", "-ERR timeout is negative"),
            ("BLPOP q", "-ERR wrong number of arguments for 'blpop' command"),
            ("BLMOVE a b LEFT 1", "-ERR wrong number of arguments for 'blmove' command"),
            ("BLMPOP 0 0 k LEFT", "-ERR numkeys should be greater than 0"),
            ("XREAD BLOCK x STREAMS s 0", "-ERR timeout is not an integer or out of range"),
            ("XREAD BLOCK 1 STREAMS s", "-ERR Unbalanced 'xread' list of streams"),
            ("XREAD BLOCK 1 s 0", "-ERR syntax error"),
            ("XREAD BLOCK 1", "-ERR wrong number of arguments for 'xread' command"),
        ] {
            let Next::Reply(reply) = begin(request, t0) else { panic!("{request}") };
            assert!(reply.starts_with(error), "{request}: {reply}");
        }
    }
}
