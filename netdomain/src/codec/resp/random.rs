//! Commands whose answer is a random choice (`SPOP`, `SRANDMEMBER`, `HRANDFIELD`,
//! `ZRANDMEMBER`, `RANDOMKEY`), made once and checked by the quorum.
//!
//! Each replica would choose differently: the answers could not be voted, and `SPOP` would leave
//! the replicas' sets different. So resh asks in steps ([`Dispatch::Ask`]):
//! 1. **propose**: the same read, ordered but unvoted (one replica's choice; an error is still
//!    voted by its class, like any error);
//! 2. **check**: a voted read that the choice holds on every replica (`SMISMEMBER` the members,
//!    `HMGET` the fields and their values, `ZMSCORE` the members and their scores, `EXISTS` the
//!    key; for an empty choice, that the collection is empty). The client gets the proposal as
//!    the replica sent it once the quorum confirmed it;
//! 3. `SPOP` instead **pops** the proposed members in one unit, `MULTI`, `SMISMEMBER`, `SREM`,
//!    `EXEC`, voted and logged like any write; the client gets the members the quorum says were
//!    there and are now removed.
//!
//! Another session may change the data between the steps: a proposal that no longer holds is
//! made again, up to [`TRIES`] times; then the client gets an error. So does a replica that
//! proposes what the others do not have: nothing unverified reaches a client.
use std::time::Instant;

use bytes::Bytes;

use super::shape::{aggregate, elements};
use super::{encode_array, Resp};
use crate::codec::{Continuation, Dispatch, Part, ReplyShape, RequestClass};

/// How many proposals resh makes for one request before it gives up.
pub const TRIES: u8 = 3;

/// Which command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Spop,
    Srandmember,
    Hrandfield,
    Zrandmember,
    Randomkey,
}

/// A RESP2 value, as far as these answers need.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Nil,
    Bulk(Bytes),
    Int(i64),
    Array(Vec<Value>),
    Error,
    Other,
}

fn parse(frame: &[u8]) -> Value {
    match frame.first() {
        Some(b'-') => Value::Error,
        Some(b':') => std::str::from_utf8(&frame[1..frame.len().saturating_sub(2)])
            .ok()
            .and_then(|t| t.parse().ok())
            .map_or(Value::Other, Value::Int),
        Some(b'$') if frame.starts_with(b"$-1\r\n") => Value::Nil,
        Some(b'*') if frame.starts_with(b"*-1\r\n") => Value::Nil,
        Some(b'$') => {
            let Some(line) = frame.windows(2).position(|w| w == b"\r\n") else { return Value::Other };
            frame
                .get(line + 2..frame.len().saturating_sub(2))
                .map_or(Value::Other, |v| Value::Bulk(Bytes::copy_from_slice(v)))
        }
        Some(b'*') if aggregate(frame).is_some() => match elements(frame) {
            Some((_, items)) => Value::Array(items.into_iter().map(parse).collect()),
            None => Value::Other,
        },
        _ => Value::Other,
    }
}

fn read(args: &[&[u8]]) -> Part {
    Part { request: encode_array(args), class: RequestClass::default() }
}

fn ask(parts: Vec<Part>, then: Pick) -> Dispatch {
    Dispatch::Ask { parts, then: Box::new(then) }
}

/// One random pick in progress. See the module documentation.
#[derive(Debug)]
pub struct Pick {
    kind: Kind,
    /// The request as the client sent it (the proposal).
    request: Vec<Bytes>,
    /// The count argument, if any (a single pick answers a bulk string, not an array).
    count: Option<i64>,
    /// WITHVALUES or WITHSCORES: the answer pairs each pick with its value.
    pairs: bool,
    tries: u8,
    stage: Stage,
}

#[derive(Debug)]
enum Stage {
    Proposed,
    /// The proposal, waiting for the quorum's check.
    Checking(Bytes, Vec<Value>),
    /// The members being popped.
    Popping(Vec<Bytes>),
}

/// The first step of a random pick, or `None` for anything else (or a form whose error the
/// replicas give alike: it is then sent as it is).
pub fn start(command: &str, args: &[&[u8]]) -> Option<Dispatch> {
    let kind = match command {
        "SPOP" => Kind::Spop,
        "SRANDMEMBER" => Kind::Srandmember,
        "HRANDFIELD" => Kind::Hrandfield,
        "ZRANDMEMBER" => Kind::Zrandmember,
        "RANDOMKEY" => Kind::Randomkey,
        _ => return None,
    };
    let (count, pairs) = match (kind, args.len()) {
        (Kind::Randomkey, 1) | (Kind::Spop | Kind::Srandmember | Kind::Hrandfield | Kind::Zrandmember, 2) => {
            (None, false)
        }
        (Kind::Randomkey, _) => return None,
        (_, 3) => (Some(super::frame::string2ll(args[2])?), false),
        (Kind::Hrandfield, 4) if args[3].eq_ignore_ascii_case(b"WITHVALUES") => {
            (Some(super::frame::string2ll(args[2])?), true)
        }
        (Kind::Zrandmember, 4) if args[3].eq_ignore_ascii_case(b"WITHSCORES") => {
            (Some(super::frame::string2ll(args[2])?), true)
        }
        _ => return None,
    };
    // SPOP takes no negative count: the replicas' error is Redis's.
    if kind == Kind::Spop && count.is_some_and(|c| c < 0) {
        return None;
    }
    let request: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
    let pick = Pick { kind, request, count, pairs, tries: 0, stage: Stage::Proposed };
    Some(pick.propose())
}

impl Pick {
    /// Asks one replica's choice: the same read (SPOP's is SRANDMEMBER's), unvoted.
    fn propose(mut self) -> Dispatch {
        self.tries += 1;
        self.stage = Stage::Proposed;
        let mut args: Vec<&[u8]> = self.request.iter().map(|a| &a[..]).collect();
        if self.kind == Kind::Spop {
            args[0] = b"SRANDMEMBER";
        }
        let proposal = Part {
            request: encode_array(&args),
            class: RequestClass { logged: false, shape: ReplyShape::Unvoted, ..RequestClass::default() },
        };
        ask(vec![proposal], self)
    }

    fn key(&self) -> &[u8] {
        self.request.get(1).map_or(&[][..], |k| &k[..])
    }

    /// A proposal that did not hold: another one, or the error once every try is spent.
    fn again(self) -> Dispatch {
        if self.tries >= TRIES {
            let command = String::from_utf8_lossy(&self.request[0]).to_ascii_uppercase();
            return Dispatch::Reply(Resp::error(&format!(
                "ERR resh: '{command}': {TRIES} random picks in a row did not hold on every replica (the data changed meanwhile, or a replica proposed what the others do not have); nothing was changed"
            )));
        }
        self.propose()
    }

    /// The picks of a proposal: members, fields or keys (each once per pick), with their
    /// values if the answer pairs them.
    fn picks(&self, proposal: &Value) -> Option<Vec<Value>> {
        match proposal {
            Value::Bulk(_) => Some(vec![proposal.clone()]),
            Value::Nil => Some(Vec::new()),
            Value::Array(items) if items.iter().all(|i| matches!(i, Value::Bulk(_))) => Some(items.clone()),
            _ => None,
        }
    }

    /// The read the quorum answers to confirm `picks` (names, with values when paired).
    fn check(&self, picks: &[Value]) -> Part {
        let key = self.key();
        let names: Vec<&[u8]> = picks
            .iter()
            .step_by(if self.pairs { 2 } else { 1 })
            .filter_map(|v| match v {
                Value::Bulk(b) => Some(&b[..]),
                _ => None,
            })
            .collect();
        if names.is_empty() {
            // An empty pick holds if the collection is empty (or missing).
            return match self.kind {
                // Not DBSIZE: it counts keys whose time to live ran out but that a replica
                // has not reclaimed yet (and is unvoted). KEYS skips them, voted as a set.
                Kind::Randomkey => Part {
                    request: encode_array(&["KEYS", "*"]),
                    class: RequestClass { shape: ReplyShape::Set, ..RequestClass::default() },
                },
                Kind::Spop | Kind::Srandmember => read(&[b"SCARD", key]),
                Kind::Hrandfield => read(&[b"HLEN", key]),
                Kind::Zrandmember => read(&[b"ZCARD", key]),
            };
        }
        let mut args: Vec<&[u8]> = vec![match self.kind {
            Kind::Randomkey => b"EXISTS",
            Kind::Spop | Kind::Srandmember => b"SMISMEMBER",
            Kind::Hrandfield => b"HMGET",
            Kind::Zrandmember => b"ZMSCORE",
        }];
        if self.kind != Kind::Randomkey {
            args.push(key);
        }
        args.extend(names);
        read(&args)
    }

    /// Whether the quorum's answer to [`check`](Self::check) confirms `picks`.
    fn confirmed(&self, picks: &[Value], check: &Value) -> bool {
        let names = picks.len() / if self.pairs { 2 } else { 1 };
        match (names, check) {
            (0, Value::Int(n)) => *n == 0,
            (0, Value::Array(keys)) => self.kind == Kind::Randomkey && keys.is_empty(),
            (_, Value::Int(n)) => self.kind == Kind::Randomkey && *n == 1,
            (_, Value::Array(answers)) if answers.len() == names => match self.kind {
                Kind::Spop | Kind::Srandmember => answers.iter().all(|a| *a == Value::Int(1)),
                Kind::Hrandfield | Kind::Zrandmember if self.pairs => {
                    // The values proposed are the values there.
                    answers.iter().zip(picks.iter().skip(1).step_by(2)).all(|(a, v)| a == v)
                }
                Kind::Hrandfield | Kind::Zrandmember => answers.iter().all(|a| matches!(a, Value::Bulk(_))),
                Kind::Randomkey => false,
            },
            _ => false,
        }
    }

    /// SPOP's pop of `members`, as one unit.
    fn pop(mut self, members: Vec<Bytes>) -> Dispatch {
        let key = Bytes::copy_from_slice(self.key());
        let with = |command: &'static [u8]| {
            let mut args: Vec<&[u8]> = vec![command, &key];
            args.extend(members.iter().map(|m| &m[..]));
            encode_array(&args)
        };
        let requests =
            [encode_array(&[super::OWN_MULTI]), with(b"SMISMEMBER"), with(b"SREM"), encode_array(&[super::OWN_EXEC])];
        let parts: Vec<Part> = requests
            .into_iter()
            .enumerate()
            .map(|(i, request)| Part {
                request,
                class: RequestClass { logged: true, continues: i < 3, ..RequestClass::default() },
            })
            .collect();
        self.stage = Stage::Popping(members);
        ask(parts, self)
    }
}

impl Continuation for Pick {
    /// A pick never waits; woken, it proposes again.
    fn woken(self: Box<Self>, _now: Instant) -> Dispatch {
        self.again()
    }

    fn answered(mut self: Box<Self>, answer: &[u8], _now: Instant) -> Dispatch {
        let value = parse(answer);
        match std::mem::replace(&mut self.stage, Stage::Proposed) {
            Stage::Proposed => {
                // An error (voted by its class) or an answer of a shape resh does not check
                // goes to the client as the replicas' answer.
                let Some(picks) = self.picks(&value) else {
                    return Dispatch::Reply(Bytes::copy_from_slice(answer));
                };
                // A count of 0 asks for nothing: nothing to check.
                if self.count == Some(0) {
                    return Dispatch::Reply(Bytes::copy_from_slice(answer));
                }
                // SPOP's pop checks the members itself, in the same unit.
                if self.kind == Kind::Spop && !picks.is_empty() {
                    let members = picks.into_iter().filter_map(|p| match p {
                        Value::Bulk(b) => Some(b),
                        _ => None,
                    });
                    return self.pop(members.collect());
                }
                let check = self.check(&picks);
                self.stage = Stage::Checking(Bytes::copy_from_slice(answer), picks);
                ask(vec![check], *self)
            }
            Stage::Checking(proposal, picks) => {
                if !self.confirmed(&picks, &value) {
                    return self.again();
                }
                let members: Vec<Bytes> = picks
                    .into_iter()
                    .filter_map(|p| match p {
                        Value::Bulk(b) => Some(b),
                        _ => None,
                    })
                    .collect();
                if self.kind == Kind::Spop && !members.is_empty() {
                    return self.pop(members);
                }
                // Confirmed; SPOP of an empty set answers as SRANDMEMBER did (nil, or an empty
                // array).
                Dispatch::Reply(proposal)
            }
            Stage::Popping(members) => {
                // EXEC's answer: [[1, 0, ...] (which were there), removed count].
                let Value::Array(results) = value else { return self.again() };
                let Some(Value::Array(present)) = results.first() else { return self.again() };
                let popped: Vec<&Bytes> =
                    members.iter().zip(present).filter(|(_, p)| **p == Value::Int(1)).map(|(m, _)| m).collect();
                match (self.count, popped.first()) {
                    (None, Some(member)) => Dispatch::Reply(super::bulk(member)),
                    // Another session took them first: pick again.
                    (_, None) => self.again(),
                    (Some(_), Some(_)) => Dispatch::Reply(encode_array(&popped)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start_with(request: &str) -> (Box<dyn Continuation>, Vec<String>) {
        let args: Vec<&[u8]> = request.split(' ').map(str::as_bytes).collect();
        let command = request.split(' ').next().unwrap_or_default().to_ascii_uppercase();
        match start(&command, &args) {
            Some(Dispatch::Ask { parts, then }) => (then, sent(&parts)),
            other => panic!("{request}: {other:?}"),
        }
    }

    use super::super::sent_words as sent;

    /// Feeds `answer`; returns the next step's requests, or the reply.
    fn step(then: Box<dyn Continuation>, answer: &[u8]) -> Result<(Box<dyn Continuation>, Vec<String>), String> {
        match then.answered(answer, Instant::now()) {
            Dispatch::Ask { parts, then } => Ok((then, sent(&parts))),
            Dispatch::Reply(reply) => Err(String::from_utf8_lossy(&reply).into_owned()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn spop_proposes_checks_and_pops_in_one_unit() {
        let (then, asked) = start_with("spop s 2");
        assert_eq!(asked, ["SRANDMEMBER s 2"]);
        // The pop checks the members itself, in the same unit.
        let (then, asked) = step(then, b"*2\r\n$1\r\na\r\n$1\r\nb\r\n").expect("a pop");
        assert_eq!(asked, ["multi", "SMISMEMBER s a b", "SREM s a b", "exec"], "a unit of resh's own");
        // b was taken by another session between the check and the pop.
        let reply = step(then, b"*2\r\n*2\r\n:1\r\n:0\r\n:1\r\n").expect_err("the reply");
        assert_eq!(reply, "*1\r\n$1\r\na\r\n");
    }

    #[test]
    fn spop_of_one_answers_a_bulk_string_and_of_an_empty_set_what_redis_answers() {
        let (then, _) = start_with("SPOP s");
        let (then, asked) = step(then, b"$1\r\nx\r\n").expect("a pop");
        assert_eq!(asked, ["multi", "SMISMEMBER s x", "SREM s x", "exec"]);
        assert_eq!(step(then, b"*2\r\n*1\r\n:1\r\n:1\r\n").expect_err("the reply"), "$1\r\nx\r\n");
        // Taken by another session first: proposed again.
        let (then, _) = start_with("SPOP s");
        let (then, _) = step(then, b"$1\r\nx\r\n").expect("a pop");
        let (_, asked) = step(then, b"*2\r\n*1\r\n:0\r\n:0\r\n").expect("another proposal");
        assert_eq!(asked, ["SRANDMEMBER s"]);
        // Empty: the quorum confirms the set is empty; the answer is the proposal's.
        let (then, _) = start_with("SPOP s");
        let (then, asked) = step(then, b"$-1\r\n").expect("a check");
        assert_eq!(asked, ["SCARD s"]);
        assert_eq!(step(then, b":0\r\n").expect_err("the reply"), "$-1\r\n");
        // An error is the replicas' (voted by its class).
        let (then, _) = start_with("SPOP s 3");
        assert!(step(then, b"-WRONGTYPE Operation against a key\r\n")
            .expect_err("the reply")
            .starts_with("-WRONGTYPE"));
        // A negative count goes to the replicas as it is.
        assert!(start("SPOP", &[b"SPOP", b"s", b"-1"]).is_none());
    }

    #[test]
    fn a_proposal_that_does_not_hold_is_made_again_then_refused() {
        let (mut then, _) = start_with("SRANDMEMBER s");
        for _ in 1..TRIES {
            let (checking, _) = step(then, b"$4\r\nfake\r\n").expect("a check");
            let (again, asked) = step(checking, b"*1\r\n:0\r\n").expect("another proposal");
            assert_eq!(asked, ["SRANDMEMBER s"]);
            then = again;
        }
        let (checking, _) = step(then, b"$4\r\nfake\r\n").expect("a check");
        let reply = step(checking, b"*1\r\n:0\r\n").expect_err("given up");
        assert!(reply.starts_with("-ERR resh: 'SRANDMEMBER': 3 random picks"), "{reply}");
        // A replica claiming an empty set the quorum says is not empty is not believed either.
        let (then, _) = start_with("SRANDMEMBER s 2");
        let (then, _) = step(then, b"*0\r\n").expect("a check");
        assert!(step(then, b":5\r\n").is_ok(), "proposed again");
    }

    #[test]
    fn fields_and_members_with_values_are_checked_with_their_values() {
        let (then, _) = start_with("HRANDFIELD h 2 WITHVALUES");
        let proposal = b"*4\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n";
        let (then, asked) = step(then, proposal).expect("a check");
        assert_eq!(asked, ["HMGET h a b"]);
        let reply = step(then, b"*2\r\n$1\r\n1\r\n$1\r\n2\r\n").expect_err("confirmed");
        assert_eq!(reply.as_bytes(), proposal, "the proposal as the replica sent it");
        let (then, _) = start_with("HRANDFIELD h 2 WITHVALUES");
        let (then, _) = step(then, proposal).expect("a check");
        assert!(step(then, b"*2\r\n$1\r\n1\r\n$1\r\n9\r\n").is_ok(), "a wrong value: proposed again");
        let (then, _) = start_with("ZRANDMEMBER z -3 WITHSCORES");
        let (then, asked) = step(then, b"*4\r\n$1\r\nm\r\n$3\r\n1.5\r\n$1\r\nm\r\n$3\r\n1.5\r\n").expect("a check");
        assert_eq!(asked, ["ZMSCORE z m m"], "a negative count repeats picks");
        assert!(step(then, b"*2\r\n$3\r\n1.5\r\n$3\r\n1.5\r\n").is_err());
        let (then, _) = start_with("RANDOMKEY");
        let (then, asked) = step(then, b"$3\r\nkey\r\n").expect("a check");
        assert_eq!(asked, ["EXISTS key"]);
        assert_eq!(step(then, b":1\r\n").expect_err("confirmed"), "$3\r\nkey\r\n");
        let (then, _) = start_with("RANDOMKEY");
        let (then, asked) = step(then, b"$-1\r\n").expect("a check");
        assert_eq!(asked, ["KEYS *"]);
        assert_eq!(step(then, b"*0\r\n").expect_err("confirmed"), "$-1\r\n");
        // SRANDMEMBER with a count of 0 asks for nothing.
        let (then, _) = start_with("SRANDMEMBER s 0");
        assert_eq!(step(then, b"*0\r\n").expect_err("answered"), "*0\r\n");
    }
}
