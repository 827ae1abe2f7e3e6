//! A logical copy of a Redis keyspace: reads on a voting replica, restores for another.
//!
//! The copy is *logical* (read each key with the command of its type, write it back with the
//! command that builds it) rather than Redis's `DUMP`/`RESTORE`, so that it works between
//! diverse versions of a service: any server that answers `KEYS`, `TYPE`, `PEXPIRETIME` and the reads
//! and writes of its types can be a source or a target. Rounds of reads, each sent as one
//! pipelined batch:
//! 0. `INFO keyspace`: which databases hold keys (a server without `INFO`, or with keys in
//!    database 0 only, is copied from database 0 alone); the rounds below go through each of
//!    them, a database other than 0 between `SELECT n` and `SELECT 0` (the shared connection is
//!    in database 0 between units, and the source goes on with the order after the copy);
//! 1. `KEYS *`: every key (the source's stream is held still for the whole copy, so the key
//!    list and every value are the state at one point of the global order);
//! 2. per batch of keys: `TYPE k` and `PEXPIRETIME k` (when it expires: the same instant on
//!    every replica, since resh sends expirations as absolute times);
//! 3. per batch: `GET` (string), `LRANGE k 0 -1` (list), `HGETALL` (hash), `SMEMBERS` (set),
//!    `ZRANGE k 0 -1 WITHSCORES` (sorted set); each answer becomes `SET`, `RPUSH`, `HSET`,
//!    `SADD` or `ZADD` for the target, and `PEXPIREAT` for a key with a time to live, so that
//!    the target's key expires when the sources' do (a relative time would be off by however
//!    long the copy took, and the target would answer `PEXPIRETIME` unlike the others).
//!
//! The target gets each database's writes between the same `SELECT n` and `SELECT 0`.
//!
//! Limits: types other than these five (streams,
//! module types) fail the copy with a clear error; a value is read in one answer, so a value
//! larger than `ordered.max_frame_bytes` fails it too; a source must answer `PEXPIRETIME`
//! (Redis 7.0 or later; the demo's versions do).
use std::collections::VecDeque;

use bytes::Bytes;

use super::encode_array;
use crate::codec::{Checkpoint, CheckpointError, Reads};

/// The type of a key, as `TYPE` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    String,
    List,
    Hash,
    Set,
    ZSet,
    /// The key is gone (it expired between `KEYS` and `TYPE`).
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing sent yet.
    Start,
    /// `INFO keyspace` sent.
    Databases,
    /// The next database's `KEYS *` is to be sent.
    List,
    /// `KEYS *` sent.
    Listing,
    /// Between batches: the next batch's `TYPE`/`PEXPIRETIME` reads are to be sent.
    Meta,
    /// A batch's `TYPE`/`PEXPIRETIME` reads were sent.
    MetaSent,
    /// A batch's value reads are to be sent.
    Values,
    /// A batch's value reads were sent.
    ValuesSent,
    /// Every key of every database was copied.
    Finished,
}

/// What an outstanding read is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    Databases,
    /// `SELECT`, around a database's reads.
    Select,
    Keys,
    Type(usize),
    Expires(usize),
    Value(usize),
}

#[derive(Clone, Debug)]
struct Key {
    name: Bytes,
    kind: Option<Kind>,
    /// When it expires (Unix time in milliseconds), or -1 for never.
    expires: Option<i64>,
}

/// The RESP checkpoint. See the module documentation.
#[derive(Debug)]
pub struct RespCheckpoint {
    batch: usize,
    phase: Phase,
    /// The databases still to copy, after `db`.
    databases: VecDeque<u64>,
    /// The database being copied.
    db: u64,
    /// Keys still to copy.
    keys: VecDeque<Bytes>,
    /// The keys of the batch being copied.
    current: Vec<Key>,
    outstanding: VecDeque<Read>,
    restores: Vec<Bytes>,
}

impl RespCheckpoint {
    /// A copier reading `batch` keys per round.
    pub fn new(batch: usize) -> RespCheckpoint {
        RespCheckpoint {
            batch: batch.max(1),
            phase: Phase::Start,
            databases: VecDeque::new(),
            db: 0,
            keys: VecDeque::new(),
            current: Vec::new(),
            outstanding: VecDeque::new(),
            restores: Vec::new(),
        }
    }

    fn after_batch(&mut self) {
        self.current.clear();
        self.phase = if self.keys.is_empty() { self.next_database() } else { Phase::Meta };
    }

    /// After a database's last key: the next database's, or the end.
    fn next_database(&mut self) -> Phase {
        match self.databases.pop_front() {
            Some(db) => {
                self.db = db;
                Phase::List
            }
            None => Phase::Finished,
        }
    }

    /// `reads` in the database being copied: between `SELECT n` and `SELECT 0` for another
    /// than 0 (their answers expected first and last).
    fn in_database(&mut self, mut reads: Vec<Bytes>, kinds: Vec<Read>) -> Reads {
        if self.db == 0 {
            self.outstanding.extend(kinds);
            return Reads::Batch(reads);
        }
        reads.insert(0, select(self.db));
        reads.push(select(0));
        self.outstanding.push_back(Read::Select);
        self.outstanding.extend(kinds);
        self.outstanding.push_back(Read::Select);
        Reads::Batch(reads)
    }
}

fn select(db: u64) -> Bytes {
    encode_array(&[&b"SELECT"[..], db.to_string().as_bytes()])
}

/// The databases other than 0 that hold keys, from `INFO keyspace`'s
/// `db<n>:keys=<count>,expires=<count>,...` lines, in order; with `persistent`, only those that
/// hold keys without a time to live. The sources are compared by these: the counts include keys
/// whose time ran out but that a server has not reclaimed yet, which each does on its own
/// schedule, so a database of such keys only may be listed by one source and not another (its
/// `KEYS`, which skips them, is voted like every read).
fn databases(info: &[u8], persistent: bool) -> Vec<u64> {
    let text = bulk(info).ok().flatten().unwrap_or_default();
    let mut found: Vec<u64> = String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|line| {
            let (db, rest) = line.strip_prefix("db")?.split_once(':')?;
            let mut counts = rest.split(',');
            let keys: u64 = counts.next()?.strip_prefix("keys=")?.parse().ok()?;
            let expires: u64 = counts.next().and_then(|e| e.strip_prefix("expires=")?.parse().ok()).unwrap_or(0);
            let holds = if persistent { keys > expires } else { keys > 0 };
            db.parse().ok().filter(|&db| db > 0 && holds)
        })
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

impl Checkpoint for RespCheckpoint {
    fn next_reads(&mut self) -> Reads {
        match self.phase {
            Phase::Start => {
                self.phase = Phase::Databases;
                self.outstanding.push_back(Read::Databases);
                Reads::Batch(vec![encode_array(&["INFO", "keyspace"])])
            }
            Phase::List => {
                self.phase = Phase::Listing;
                self.in_database(vec![encode_array(&["KEYS", "*"])], vec![Read::Keys])
            }
            Phase::Databases | Phase::Listing | Phase::MetaSent => Reads::Wait,
            Phase::ValuesSent if self.keys.is_empty() && self.databases.is_empty() => Reads::Done,
            Phase::ValuesSent => Reads::Wait,
            Phase::Finished => Reads::Done,
            Phase::Meta => {
                let take = self.batch.min(self.keys.len());
                let mut reads = Vec::with_capacity(take * 2);
                let mut kinds = Vec::with_capacity(take * 2);
                for (i, name) in self.keys.drain(..take).enumerate() {
                    reads.push(encode_array(&[&b"TYPE"[..], &name]));
                    reads.push(encode_array(&[&b"PEXPIRETIME"[..], &name]));
                    kinds.extend([Read::Type(i), Read::Expires(i)]);
                    self.current.push(Key { name, kind: None, expires: None });
                }
                self.phase = Phase::MetaSent;
                self.in_database(reads, kinds)
            }
            Phase::Values => {
                let mut reads = Vec::with_capacity(self.current.len());
                let mut kinds = Vec::with_capacity(self.current.len());
                for (i, key) in self.current.iter().enumerate() {
                    let name = &key.name[..];
                    let read = match key.kind {
                        Some(Kind::String) => encode_array(&[&b"GET"[..], name]),
                        Some(Kind::List) => encode_array(&[&b"LRANGE"[..], name, b"0", b"-1"]),
                        Some(Kind::Hash) => encode_array(&[&b"HGETALL"[..], name]),
                        Some(Kind::Set) => encode_array(&[&b"SMEMBERS"[..], name]),
                        Some(Kind::ZSet) => encode_array(&[&b"ZRANGE"[..], name, b"0", b"-1", b"WITHSCORES"]),
                        Some(Kind::None) | None => continue,
                    };
                    reads.push(read);
                    kinds.push(Read::Value(i));
                }
                if reads.is_empty() {
                    self.after_batch();
                    return self.next_reads();
                }
                self.phase = Phase::ValuesSent;
                if self.db != 0 {
                    // The target's writes go to the same database.
                    self.restores.push(select(self.db));
                }
                self.in_database(reads, kinds)
            }
        }
    }

    fn compare_key(&self, frame: &[u8]) -> Bytes {
        // Redis seeds its hash tables at random: the same set, hash or keyspace lists its
        // members in a different order on each replica: no difference between the states.
        let sorted = |pairs: usize| match bulk_array(frame) {
            Ok(items) => {
                let mut groups: Vec<Vec<Bytes>> = items.chunks(pairs).map(<[Bytes]>::to_vec).collect();
                groups.sort();
                encode_array(&groups.concat())
            }
            Err(_) => Bytes::copy_from_slice(frame),
        };
        match self.outstanding.front() {
            // Which databases hold keys, not how many keys or how long they live; a server
            // without INFO holds database 0 only.
            Some(Read::Databases) => {
                let found = if frame.first() == Some(&b'-') { Vec::new() } else { databases(frame, true) };
                Bytes::from(format!("{found:?}"))
            }
            Some(Read::Keys) => sorted(1),
            Some(Read::Value(i)) => match self.current.get(*i).and_then(|k| k.kind) {
                Some(Kind::Set) => sorted(1),
                Some(Kind::Hash) => sorted(2),
                _ => Bytes::copy_from_slice(frame),
            },
            _ => Bytes::copy_from_slice(frame),
        }
    }

    fn answer(&mut self, frame: &[u8]) -> Result<(), CheckpointError> {
        let read =
            self.outstanding.pop_front().ok_or_else(|| CheckpointError::Source("an answer to no read".into()))?;
        if read == Read::Databases {
            // An error: a server without INFO, whose one database is 0.
            let found = if frame.first() == Some(&b'-') { Vec::new() } else { databases(frame, false) };
            self.databases = found.into();
            self.db = 0;
            self.phase = Phase::List;
            return Ok(());
        }
        if frame.first() == Some(&b'-') {
            let text = String::from_utf8_lossy(frame.strip_suffix(b"\r\n").unwrap_or(frame)).into_owned();
            return Err(CheckpointError::Source(text));
        }
        match read {
            Read::Databases => {}
            Read::Select => {
                if frame != b"+OK\r\n" {
                    return Err(malformed("+OK to SELECT"));
                }
            }
            Read::Keys => {
                self.keys = bulk_array(frame)?.into();
                // (Its SELECT 0's answer may still be to come: the next reads go after it.)
                self.phase = if self.keys.is_empty() { self.next_database() } else { Phase::Meta };
            }
            Read::Type(i) => {
                let name = simple(frame)?;
                let kind = match name.as_slice() {
                    b"string" => Kind::String,
                    b"list" => Kind::List,
                    b"hash" => Kind::Hash,
                    b"set" => Kind::Set,
                    b"zset" => Kind::ZSet,
                    b"none" => Kind::None,
                    other => {
                        let key = self.current.get(i).map(|k| String::from_utf8_lossy(&k.name).into_owned());
                        return Err(CheckpointError::Unsupported(format!(
                            "key {:?} is of type '{}', which resh cannot copy",
                            key.unwrap_or_default(),
                            String::from_utf8_lossy(other)
                        )));
                    }
                };
                if let Some(key) = self.current.get_mut(i) {
                    key.kind = Some(kind);
                }
            }
            Read::Expires(i) => {
                let expires = integer(frame)?;
                if let Some(key) = self.current.get_mut(i) {
                    key.expires = Some(expires);
                }
            }
            Read::Value(i) => {
                let key = self
                    .current
                    .get(i)
                    .cloned()
                    .ok_or_else(|| CheckpointError::Source("an unexpected answer".into()))?;
                self.restore(&key, frame)?;
            }
        }
        if self.outstanding.is_empty() {
            match self.phase {
                Phase::MetaSent => self.phase = Phase::Values,
                Phase::ValuesSent => {
                    if self.db != 0 {
                        self.restores.push(select(0));
                    }
                    self.after_batch()
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn take_restores(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.restores)
    }

    fn is_complete(&self) -> bool {
        self.phase == Phase::Finished && self.outstanding.is_empty() && self.restores.is_empty()
    }
}

impl RespCheckpoint {
    /// The requests that rebuild `key` from the answer to its value read.
    fn restore(&mut self, key: &Key, frame: &[u8]) -> Result<(), CheckpointError> {
        let name = &key.name[..];
        let mut args: Vec<Bytes> = Vec::new();
        match key.kind {
            Some(Kind::String) => {
                // A string that expired between TYPE and GET reads as nil: nothing to copy.
                let Some(value) = bulk(frame)? else { return Ok(()) };
                args.extend([Bytes::from_static(b"SET"), key.name.clone(), value]);
            }
            Some(Kind::List) => {
                args.extend([Bytes::from_static(b"RPUSH"), key.name.clone()]);
                args.extend(bulk_array(frame)?);
            }
            Some(Kind::Hash) => {
                args.extend([Bytes::from_static(b"HSET"), key.name.clone()]);
                args.extend(bulk_array(frame)?);
            }
            Some(Kind::Set) => {
                args.extend([Bytes::from_static(b"SADD"), key.name.clone()]);
                args.extend(bulk_array(frame)?);
            }
            Some(Kind::ZSet) => {
                args.extend([Bytes::from_static(b"ZADD"), key.name.clone()]);
                // WITHSCORES answers member, score, ...; ZADD takes score, member, ...
                let items = bulk_array(frame)?;
                if items.len() % 2 != 0 {
                    return Err(CheckpointError::Source("ZRANGE WITHSCORES gave an odd number of items".into()));
                }
                for pair in items.chunks(2) {
                    args.push(pair[1].clone());
                    args.push(pair[0].clone());
                }
            }
            Some(Kind::None) | None => return Ok(()),
        }
        if args.len() <= 2 {
            // An empty collection cannot exist in Redis; one read as empty vanished meanwhile.
            return Ok(());
        }
        self.restores.push(encode_array(&args));
        if let Some(at) = key.expires.filter(|t| *t >= 0) {
            self.restores.push(encode_array(&[&b"PEXPIREAT"[..], name, at.to_string().as_bytes()]));
        }
        Ok(())
    }
}

fn malformed(what: &str) -> CheckpointError {
    CheckpointError::Source(format!("expected {what}"))
}

/// A line's content: `+text\r\n`.
fn simple(frame: &[u8]) -> Result<Vec<u8>, CheckpointError> {
    match frame.split_first() {
        Some((b'+', rest)) => Ok(rest.strip_suffix(b"\r\n").unwrap_or(rest).to_vec()),
        _ => Err(malformed("a status reply")),
    }
}

/// `:n\r\n`.
fn integer(frame: &[u8]) -> Result<i64, CheckpointError> {
    match frame.split_first() {
        Some((b':', rest)) => std::str::from_utf8(rest.strip_suffix(b"\r\n").unwrap_or(rest))
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| malformed("an integer")),
        _ => Err(malformed("an integer reply")),
    }
}

/// One bulk string (`None` for nil) and where it ends.
fn bulk_at(frame: &[u8], at: usize) -> Result<(Option<Bytes>, usize), CheckpointError> {
    let bad = || malformed("a bulk string");
    if frame.get(at) != Some(&b'$') {
        return Err(bad());
    }
    let line = frame[at..].windows(2).position(|w| w == b"\r\n").ok_or_else(bad)? + at;
    let len: i64 = std::str::from_utf8(&frame[at + 1..line]).ok().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
    if len < 0 {
        return Ok((None, line + 2));
    }
    let body = line + 2;
    let end = body + usize::try_from(len).map_err(|_| bad())?;
    let value = frame.get(body..end).ok_or_else(bad)?;
    Ok((Some(Bytes::copy_from_slice(value)), end + 2))
}

fn bulk(frame: &[u8]) -> Result<Option<Bytes>, CheckpointError> {
    bulk_at(frame, 0).map(|(value, _)| value)
}

/// An array of bulk strings (RESP2's answer to KEYS, LRANGE, HGETALL, SMEMBERS, ZRANGE).
fn bulk_array(frame: &[u8]) -> Result<Vec<Bytes>, CheckpointError> {
    let bad = || malformed("an array of bulk strings");
    if frame.first() != Some(&b'*') {
        return Err(bad());
    }
    let line = frame.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
    let count: i64 = std::str::from_utf8(&frame[1..line]).ok().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
    let mut items = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1 << 16));
    let mut at = line + 2;
    for _ in 0..count.max(0) {
        let (item, next) = bulk_at(frame, at)?;
        items.push(item.ok_or_else(bad)?);
        at = next;
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(c: &mut RespCheckpoint) -> Vec<String> {
        match c.next_reads() {
            Reads::Batch(b) => b.iter().map(|r| String::from_utf8_lossy(r).replace("\r\n", " ")).collect(),
            other => vec![format!("{other:?}")],
        }
    }

    /// A copier past its first round, for a source with database 0 only (one without INFO,
    /// as the demo's versions).
    fn started(batch: usize) -> RespCheckpoint {
        let mut c = RespCheckpoint::new(batch);
        assert_eq!(reads(&mut c), vec!["*2 $4 INFO $8 keyspace "]);
        assert_eq!(c.next_reads(), Reads::Wait);
        c.answer(b"-ERR unknown command 'INFO'\r\n").expect("no INFO: database 0 only");
        c
    }

    #[test]
    fn copies_every_type_with_its_ttl() {
        let mut c = started(10);
        assert_eq!(reads(&mut c), vec!["*2 $4 KEYS $1 * "]);
        assert_eq!(c.next_reads(), Reads::Wait);
        c.answer(b"*5\r\n$1\r\ns\r\n$1\r\nl\r\n$1\r\nh\r\n$2\r\nst\r\n$1\r\nz\r\n").expect("keys");
        let meta = reads(&mut c);
        assert_eq!(meta.len(), 10);
        assert_eq!(meta[0], "*2 $4 TYPE $1 s ");
        assert_eq!(meta[1], "*2 $11 PEXPIRETIME $1 s ");
        for (kind, ttl) in
            [("string", ":1700000005000"), ("list", ":-1"), ("hash", ":-1"), ("set", ":-1"), ("zset", ":-1")]
        {
            c.answer(format!("+{kind}\r\n").as_bytes()).expect("type");
            c.answer(format!("{ttl}\r\n").as_bytes()).expect("ttl");
        }
        let values = reads(&mut c);
        assert_eq!(values[0], "*2 $3 GET $1 s ");
        assert_eq!(values[4], "*5 $6 ZRANGE $1 z $1 0 $2 -1 $10 WITHSCORES ");
        assert_eq!(c.next_reads(), Reads::Done, "the last batch is out: the source may go on");
        c.answer(b"$1\r\nv\r\n").expect("get");
        c.answer(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n").expect("lrange");
        c.answer(b"*2\r\n$1\r\nf\r\n$1\r\nx\r\n").expect("hgetall");
        c.answer(b"*1\r\n$1\r\nm\r\n").expect("smembers");
        c.answer(b"*2\r\n$1\r\nm\r\n$3\r\n1.5\r\n").expect("zrange");
        let restores: Vec<String> =
            c.take_restores().iter().map(|r| String::from_utf8_lossy(r).replace("\r\n", " ")).collect();
        assert_eq!(
            restores,
            vec![
                "*3 $3 SET $1 s $1 v ",
                "*3 $9 PEXPIREAT $1 s $13 1700000005000 ",
                "*4 $5 RPUSH $1 l $1 a $1 b ",
                "*4 $4 HSET $1 h $1 f $1 x ",
                "*3 $4 SADD $2 st $1 m ",
                "*4 $4 ZADD $1 z $3 1.5 $1 m ",
            ]
        );
        assert!(c.is_complete());
    }

    #[test]
    fn batches_keys_and_an_empty_keyspace_is_done_at_once() {
        let mut c = started(1);
        reads(&mut c);
        c.answer(b"*0\r\n").expect("keys");
        assert_eq!(c.next_reads(), Reads::Done);
        assert!(c.is_complete());

        let mut c = started(1);
        reads(&mut c);
        c.answer(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n").expect("keys");
        assert_eq!(reads(&mut c).len(), 2, "one key per batch");
        c.answer(b"+string\r\n").expect("type");
        c.answer(b":-1\r\n").expect("ttl");
        assert_eq!(reads(&mut c), vec!["*2 $3 GET $1 a "]);
        assert_eq!(c.next_reads(), Reads::Wait, "another key is left");
        c.answer(b"$1\r\n1\r\n").expect("get");
        assert_eq!(reads(&mut c).len(), 2);
    }

    #[test]
    fn answers_are_compared_without_what_differs_between_correct_replicas() {
        let mut c = started(10);
        reads(&mut c);
        assert_eq!(
            c.compare_key(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
            c.compare_key(b"*2\r\n$1\r\nb\r\n$1\r\na\r\n"),
            "the keyspace in any order"
        );
        c.answer(b"*2\r\n$1\r\nh\r\n$1\r\nt\r\n").expect("keys");
        reads(&mut c);
        c.answer(b"+hash\r\n").expect("type");
        // When a key expires is the same instant on every replica: compared exactly.
        assert_ne!(c.compare_key(b":1700000005000\r\n"), c.compare_key(b":1700000004998\r\n"));
        assert_ne!(c.compare_key(b":1700000005000\r\n"), c.compare_key(b":-1\r\n"));
        c.answer(b":-1\r\n").expect("ttl");
        c.answer(b"+string\r\n").expect("type");
        c.answer(b":-1\r\n").expect("ttl");
        reads(&mut c);
        let one = b"*4\r\n$1\r\nf\r\n$1\r\n1\r\n$1\r\ng\r\n$1\r\n2\r\n";
        let other = b"*4\r\n$1\r\ng\r\n$1\r\n2\r\n$1\r\nf\r\n$1\r\n1\r\n";
        let wrong = b"*4\r\n$1\r\nf\r\n$1\r\n2\r\n$1\r\ng\r\n$1\r\n1\r\n";
        assert_eq!(c.compare_key(one), c.compare_key(other), "a hash's fields in any order");
        assert_ne!(c.compare_key(one), c.compare_key(wrong), "but each with its own value");
    }

    #[test]
    fn errors_and_unsupported_types_fail_the_copy() {
        let mut c = started(10);
        reads(&mut c);
        assert!(matches!(c.answer(b"-ERR unknown command 'KEYS'\r\n"), Err(CheckpointError::Source(_))));
        let mut c = started(10);
        reads(&mut c);
        c.answer(b"*1\r\n$1\r\nx\r\n").expect("keys");
        reads(&mut c);
        assert!(matches!(c.answer(b"+stream\r\n"), Err(CheckpointError::Unsupported(_))));
    }

    /// Databases other than 0 that hold keys are copied too, each read between `SELECT n` and
    /// `SELECT 0`, and restored so on the target; which databases hold keys is compared, not
    /// how many keys they hold.
    #[test]
    fn every_database_with_keys_is_copied_in_its_database() {
        let info = |text: &str| format!("${}\r\n{text}\r\n", text.len()).into_bytes();
        let one = info("# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\ndb3:keys=2,expires=1,avg_ttl=5000");
        let other = info("# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\ndb3:keys=2,expires=1,avg_ttl=4998");
        let fewer = info("# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0");
        let mut c = RespCheckpoint::new(10);
        reads(&mut c);
        assert_eq!(c.compare_key(&one), c.compare_key(&other));
        assert_ne!(c.compare_key(&one), c.compare_key(&fewer));
        // A database of keys with a time to live only may be listed by one source alone.
        let volatile = info("# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\ndb6:keys=2,expires=2,avg_ttl=5");
        assert_eq!(c.compare_key(&volatile), c.compare_key(&fewer));
        assert_eq!(
            c.compare_key(&fewer),
            c.compare_key(b"-ERR unknown command 'INFO'\r\n"),
            "database 0 only, either way"
        );
        c.answer(&one).expect("info");
        assert_eq!(reads(&mut c), vec!["*2 $4 KEYS $1 * "]);
        c.answer(b"*1\r\n$1\r\na\r\n").expect("keys");
        reads(&mut c);
        c.answer(b"+string\r\n").expect("type");
        c.answer(b":-1\r\n").expect("expires");
        assert_eq!(reads(&mut c), vec!["*2 $3 GET $1 a "]);
        assert_eq!(c.next_reads(), Reads::Wait, "database 3 is still to come");
        c.answer(b"$1\r\n0\r\n").expect("get");
        assert_eq!(reads(&mut c), vec!["*2 $6 SELECT $1 3 ", "*2 $4 KEYS $1 * ", "*2 $6 SELECT $1 0 "]);
        c.answer(b"+OK\r\n").expect("select");
        c.answer(b"*1\r\n$1\r\nb\r\n").expect("keys");
        // The next reads go out before SELECT 0's answer is in (pipelined behind it).
        assert_eq!(
            reads(&mut c),
            vec!["*2 $6 SELECT $1 3 ", "*2 $4 TYPE $1 b ", "*2 $11 PEXPIRETIME $1 b ", "*2 $6 SELECT $1 0 "]
        );
        for answer in ["+OK", "+OK", "+string", ":1700000005000", "+OK"] {
            c.answer(format!("{answer}\r\n").as_bytes()).expect("meta");
        }
        assert_eq!(reads(&mut c), vec!["*2 $6 SELECT $1 3 ", "*2 $3 GET $1 b ", "*2 $6 SELECT $1 0 "]);
        assert_eq!(c.next_reads(), Reads::Done);
        assert!(matches!(c.answer(b"-ERR DB index is out of range\r\n"), Err(CheckpointError::Source(_))));
        let mut c = RespCheckpoint::new(10);
        reads(&mut c);
        c.answer(&info("db0:keys=0,expires=0,avg_ttl=0\r\ndb2:keys=1,expires=0,avg_ttl=0")).expect("info");
        reads(&mut c);
        c.answer(b"*0\r\n").expect("no keys in 0");
        assert_eq!(reads(&mut c), vec!["*2 $6 SELECT $1 2 ", "*2 $4 KEYS $1 * ", "*2 $6 SELECT $1 0 "]);
        for answer in ["+OK\r\n", "*1\r\n$1\r\nk\r\n", "+OK\r\n"] {
            c.answer(answer.as_bytes()).expect("listing");
        }
        reads(&mut c);
        for answer in ["+OK", "+list", ":-1", "+OK"] {
            c.answer(format!("{answer}\r\n").as_bytes()).expect("meta");
        }
        reads(&mut c);
        for answer in ["+OK\r\n", "*1\r\n$1\r\nx\r\n", "+OK\r\n"] {
            c.answer(answer.as_bytes()).expect("values");
        }
        let restores: Vec<String> =
            c.take_restores().iter().map(|r| String::from_utf8_lossy(r).replace("\r\n", " ")).collect();
        assert_eq!(restores, vec!["*2 $6 SELECT $1 2 ", "*3 $5 RPUSH $1 k $1 x ", "*2 $6 SELECT $1 0 "]);
        assert!(c.is_complete());
    }
}
