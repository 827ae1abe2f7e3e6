//! `resh-kv-threads`: another version of the demo key-value service, built differently on
//! purpose (N-version programming): one OS thread per connection, a buffered line reader for
//! parsing, a `BTreeMap` behind a `RwLock`, and its own command table. It shares no code with
//! `resh-kv` (async, HashMap) or `kv.py` (Python asyncio), so a bug in one is unlikely to be
//! repeated in the others. It serves the same RESP subset, with the same Redis 7 replies byte
//! for byte, and the commands resh's checkpoint needs (KEYS, TYPE, PTTL, PEXPIRETIME, RPUSH, FLUSHALL,
//! DBSIZE). KEYS lists keys in the map's order, which is sorted, as the other versions do.
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::{Arc, RwLock};

use clap::Parser;

/// Demo key-value service, threaded version (BTreeMap).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Port to listen on, on 127.0.0.1.
    #[arg(long)]
    port: u16,
}

#[derive(Debug)]
enum Entry {
    Bytes(Vec<u8>),
    Deque(VecDeque<Vec<u8>>),
}

type Store = Arc<RwLock<BTreeMap<Vec<u8>, Entry>>>;

fn main() -> ExitCode {
    let args = Args::parse();
    let listener = match TcpListener::bind(("127.0.0.1", args.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("resh-kv-threads: cannot listen on 127.0.0.1:{}: {e}", args.port);
            return ExitCode::from(2);
        }
    };
    let store: Store = Arc::default();
    for conn in listener.incoming().flatten() {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            let _ = connection(conn, &store);
        });
    }
    ExitCode::SUCCESS
}

fn connection(stream: TcpStream, store: &Store) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
    let mut writer = BufWriter::with_capacity(64 * 1024, stream);
    loop {
        let words = match read_request(&mut reader) {
            Ok(Some(words)) => words,
            Ok(None) => return writer.flush(),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                if let Some(Refused(why)) = e.get_ref().and_then(|r| r.downcast_ref::<Refused>()) {
                    error_with(&mut writer, &[b"Protocol error: ", why])?;
                }
                return writer.flush();
            }
            Err(e) => return Err(e),
        };
        if !words.is_empty() {
            run(&words, store, &mut writer)?;
        }
        // Answer once the client has nothing more pipelined in our buffer.
        if reader.buffer().is_empty() {
            writer.flush()?;
        }
    }
}

/// A request Redis would refuse, and the reason it would give (bytes of the request included).
#[derive(Debug)]
struct Refused(Vec<u8>);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl std::error::Error for Refused {}

fn invalid(what: &[u8]) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Refused(what.to_vec()))
}

/// Reads one line without its line ending; `None` at end of input.
fn read_line(reader: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(Some(line))
}

/// Redis's limits on a request: elements of an array, bytes of one bulk string.
const MAX_ELEMENTS: i64 = i32::MAX as i64;
const MAX_BULK_BYTES: i64 = 512 << 20;

fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Vec<Vec<u8>>>> {
    let mut first = Vec::new();
    if reader.read_until(b'\n', &mut first)? == 0 {
        return Ok(None);
    }
    if first[0] != b'*' {
        // Inline command: the line without its "\n" and one "\r" before it.
        for end in [b'\n', b'\r'] {
            if first.last() == Some(&end) {
                first.pop();
            }
        }
        return inline_words(&first).map(Some).ok_or_else(|| invalid(b"unbalanced quotes in request"));
    }
    while matches!(first.last(), Some(b'\n' | b'\r')) {
        first.pop();
    }
    let count =
        number(&first[1..]).filter(|n| *n <= MAX_ELEMENTS).ok_or_else(|| invalid(b"invalid multibulk length"))?;
    // A count of zero or less is an empty request, which Redis ignores.
    let count = usize::try_from(count).unwrap_or(0);
    let mut words = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let header = read_line(reader)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        match header.first() {
            Some(b'$') => {}
            // read_line took the line's end off: a CR or LF here (shown as a space).
            None => return Err(invalid(b"expected '$', got ' '")),
            Some(&other) => return Err(invalid(&[&b"expected '$', got '"[..], &[other], b"'"].concat())),
        }
        let len = number(&header[1..])
            .filter(|n| (0..=MAX_BULK_BYTES).contains(n))
            .ok_or_else(|| invalid(b"invalid bulk length"))? as usize;
        let mut word = vec![0u8; len + 2];
        reader.read_exact(&mut word)?;
        word.truncate(len);
        words.push(word);
    }
    Ok(Some(words))
}

/// The words of an inline request, split as Redis's `sdssplitargs` splits them; `None` when
/// a quote is unbalanced (or a closing quote is glued to the next word).
fn inline_words(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    #[derive(PartialEq)]
    enum State {
        Between,
        Bare,
        Double,
        Single,
    }
    let is_space = |b: u8| b == b' ' || (b'\t'..=b'\r').contains(&b);
    // The line ends at a NUL byte, as a C string does.
    let line = &line[..line.iter().position(|&b| b == 0).unwrap_or(line.len())];
    let mut words = Vec::new();
    let mut word = Vec::new();
    let mut state = State::Between;
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        let next = line.get(i + 1).copied();
        match state {
            State::Between if is_space(b) => {}
            State::Between | State::Bare => match b {
                b' ' | b'\n' | b'\r' | b'\t' => {
                    words.push(std::mem::take(&mut word));
                    state = State::Between;
                }
                b'"' => state = State::Double,
                b'\'' => state = State::Single,
                _ => {
                    word.push(b);
                    state = State::Bare;
                }
            },
            State::Double => match (b, next) {
                (b'\\', Some(b'x'))
                    if line.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
                        && line.get(i + 3).is_some_and(u8::is_ascii_hexdigit) =>
                {
                    let hex =
                        std::str::from_utf8(&line[i + 2..i + 4]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                    word.push(hex.unwrap_or(0));
                    i += 3;
                }
                (b'\\', Some(escaped)) => {
                    word.push(match escaped {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                    i += 1;
                }
                (b'"', after) => {
                    if after.is_some_and(|a| !is_space(a)) {
                        return None;
                    }
                    words.push(std::mem::take(&mut word));
                    state = State::Between;
                    i += 1;
                }
                _ => word.push(b),
            },
            State::Single => match (b, next) {
                (b'\\', Some(b'\'')) => {
                    word.push(b'\'');
                    i += 1;
                }
                (b'\'', after) => {
                    if after.is_some_and(|a| !is_space(a)) {
                        return None;
                    }
                    words.push(std::mem::take(&mut word));
                    state = State::Between;
                    i += 1;
                }
                _ => word.push(b),
            },
        }
        i += 1;
    }
    match state {
        State::Double | State::Single => None,
        State::Bare => {
            words.push(word);
            Some(words)
        }
        State::Between => Some(words),
    }
}

fn reply_bulk(w: &mut impl Write, v: Option<&[u8]>) -> io::Result<()> {
    match v {
        None => w.write_all(b"$-1\r\n"),
        Some(v) => {
            write!(w, "${}\r\n", v.len())?;
            w.write_all(v)?;
            w.write_all(b"\r\n")
        }
    }
}

/// An integer as Redis reads one (`string2ll`): digits, an optional leading `-`, no leading
/// zero, no `+`, no spaces, no `-0`; within 64 bits.
fn number(v: &[u8]) -> Option<i64> {
    let (sign, digits): (i128, &[u8]) = match v {
        [b'0'] => return Some(0),
        [b'-', rest @ ..] => (-1, rest),
        _ => (1, v),
    };
    if digits.is_empty() || digits.len() > 19 || digits[0] == b'0' || digits.iter().any(|d| !d.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits.iter().fold(0i128, |n, d| n * 10 + i128::from(d - b'0'));
    i64::try_from(sign * magnitude).ok()
}

fn run(words: &[Vec<u8>], store: &Store, w: &mut impl Write) -> io::Result<()> {
    // ASCII case only: Unicode's would turn "ſet" into SET.
    let name = String::from_utf8_lossy(&words[0].to_ascii_uppercase()).into_owned();
    let argc = words.len() - 1;
    // (minimum arguments, maximum arguments)
    let (min, max) = match name.as_str() {
        "PING" => (0, 1),
        "ECHO" | "GET" | "INCR" | "DECR" | "LLEN" | "KEYS" | "TYPE" | "PTTL" | "PEXPIRETIME" => (1, 1),
        "SET" => (2, 2),
        "DEL" | "EXISTS" | "MGET" => (1, usize::MAX),
        "MSET" | "LPUSH" | "RPUSH" => (2, usize::MAX),
        "LPOP" => (1, 2),
        "LRANGE" => (3, 3),
        "CONFIG" => (1, usize::MAX),
        "FLUSHALL" => (0, usize::MAX),
        "DBSIZE" => (0, 0),
        _ => return unknown_command(words, w),
    };
    if argc < min || argc > max || (name == "MSET" && argc % 2 != 0) {
        return write!(w, "-ERR wrong number of arguments for '{}' command\r\n", name.to_lowercase());
    }
    let wrongtype = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
    match name.as_str() {
        "PING" => match words.get(1) {
            Some(m) => reply_bulk(w, Some(m)),
            None => w.write_all(b"+PONG\r\n"),
        },
        "ECHO" => reply_bulk(w, Some(&words[1])),
        "GET" => match store.read().unwrap_or_else(|p| p.into_inner()).get(&words[1]) {
            Some(Entry::Bytes(v)) => reply_bulk(w, Some(v)),
            Some(Entry::Deque(_)) => w.write_all(wrongtype),
            None => reply_bulk(w, None),
        },
        "MGET" => {
            let map = store.read().unwrap_or_else(|p| p.into_inner());
            write!(w, "*{argc}\r\n")?;
            for k in &words[1..] {
                match map.get(k) {
                    Some(Entry::Bytes(v)) => reply_bulk(w, Some(v))?,
                    _ => reply_bulk(w, None)?,
                }
            }
            Ok(())
        }
        "EXISTS" => {
            let map = store.read().unwrap_or_else(|p| p.into_inner());
            write!(w, ":{}\r\n", words[1..].iter().filter(|k| map.contains_key(*k)).count())
        }
        "LLEN" => match store.read().unwrap_or_else(|p| p.into_inner()).get(&words[1]) {
            Some(Entry::Deque(d)) => write!(w, ":{}\r\n", d.len()),
            Some(Entry::Bytes(_)) => w.write_all(wrongtype),
            None => w.write_all(b":0\r\n"),
        },
        "LRANGE" => {
            let (Some(a), Some(b)) = (number(&words[2]), number(&words[3])) else {
                return w.write_all(b"-ERR value is not an integer or out of range\r\n");
            };
            match store.read().unwrap_or_else(|p| p.into_inner()).get(&words[1]) {
                Some(Entry::Deque(d)) => {
                    let n = d.len() as i64;
                    let from = if a < 0 { 0.max(n + a) } else { a };
                    let to = if b < 0 { n + b } else { b.min(n - 1) };
                    let picked: Vec<&Vec<u8>> = if from <= to && from < n {
                        d.range(from as usize..=to as usize).collect()
                    } else {
                        Vec::new()
                    };
                    write!(w, "*{}\r\n", picked.len())?;
                    picked.into_iter().try_for_each(|v| reply_bulk(w, Some(v)))
                }
                Some(Entry::Bytes(_)) => w.write_all(wrongtype),
                None => w.write_all(b"*0\r\n"),
            }
        }
        "CONFIG" => config(words, w),
        "KEYS" => {
            let map = store.read().unwrap_or_else(|p| p.into_inner());
            // The BTreeMap iterates in byte order: the sorted list the other versions give.
            let everything = words[1] == b"*";
            let keys: Vec<&Vec<u8>> = map.keys().filter(|k| everything || redis_glob(&words[1], k, false)).collect();
            write!(w, "*{}\r\n", keys.len())?;
            keys.into_iter().try_for_each(|k| reply_bulk(w, Some(k)))
        }
        "TYPE" => w.write_all(match store.read().unwrap_or_else(|p| p.into_inner()).get(&words[1]) {
            Some(Entry::Bytes(_)) => b"+string\r\n",
            Some(Entry::Deque(_)) => b"+list\r\n",
            None => b"+none\r\n",
        }),
        // No key expires in this service.
        "PTTL" | "PEXPIRETIME" => match store.read().unwrap_or_else(|p| p.into_inner()).contains_key(&words[1]) {
            true => w.write_all(b":-1\r\n"),
            false => w.write_all(b":-2\r\n"),
        },
        "DBSIZE" => write!(w, ":{}\r\n", store.read().unwrap_or_else(|p| p.into_inner()).len()),
        _ => write_command(&name, words, store, w, wrongtype),
    }
}

/// The commands that change the store, under its write lock.
fn write_command(name: &str, words: &[Vec<u8>], store: &Store, w: &mut impl Write, wrongtype: &[u8]) -> io::Result<()> {
    let mut map = store.write().unwrap_or_else(|p| p.into_inner());
    match name {
        "SET" => {
            map.insert(words[1].clone(), Entry::Bytes(words[2].clone()));
            w.write_all(b"+OK\r\n")
        }
        "MSET" => {
            for kv in words[1..].chunks_exact(2) {
                map.insert(kv[0].clone(), Entry::Bytes(kv[1].clone()));
            }
            w.write_all(b"+OK\r\n")
        }
        "DEL" => {
            let removed = words[1..].iter().filter(|k| map.remove(*k).is_some()).count();
            write!(w, ":{removed}\r\n")
        }
        "INCR" | "DECR" => {
            let old = match map.get(&words[1]) {
                None => 0,
                Some(Entry::Deque(_)) => return w.write_all(wrongtype),
                Some(Entry::Bytes(v)) => match number(v) {
                    Some(n) => n,
                    None => return w.write_all(b"-ERR value is not an integer or out of range\r\n"),
                },
            };
            let new = if name == "INCR" { old.checked_add(1) } else { old.checked_sub(1) };
            let Some(new) = new else { return w.write_all(b"-ERR increment or decrement would overflow\r\n") };
            map.insert(words[1].clone(), Entry::Bytes(new.to_string().into_bytes()));
            write!(w, ":{new}\r\n")
        }
        "LPUSH" | "RPUSH" => {
            let entry = map.entry(words[1].clone()).or_insert_with(|| Entry::Deque(VecDeque::new()));
            match entry {
                Entry::Deque(d) if name == "LPUSH" => {
                    words[2..].iter().for_each(|v| d.push_front(v.clone()));
                    write!(w, ":{}\r\n", d.len())
                }
                Entry::Deque(d) => {
                    d.extend(words[2..].iter().cloned());
                    write!(w, ":{}\r\n", d.len())
                }
                Entry::Bytes(_) => w.write_all(wrongtype),
            }
        }
        "FLUSHALL" => {
            // Redis reads the option as a C string: up to a NUL byte, any case.
            let option = words.get(1).map(|o| o.split(|&b| b == 0).next().unwrap_or_default().to_ascii_uppercase());
            match (words.len() - 1, option.as_deref()) {
                (0, _) | (1, Some(b"SYNC" | b"ASYNC")) => {
                    map.clear();
                    w.write_all(b"+OK\r\n")
                }
                _ => w.write_all(b"-ERR syntax error\r\n"),
            }
        }
        "LPOP" => {
            let count = match words.get(2).map(|c| number(c)) {
                None => None,
                Some(Some(n)) if n >= 0 => Some(n as usize),
                Some(_) => return w.write_all(b"-ERR value is out of range, must be positive\r\n"),
            };
            let reply = match map.get_mut(&words[1]) {
                None => return w.write_all(if count.is_none() { b"$-1\r\n" } else { b"*-1\r\n" }),
                Some(Entry::Bytes(_)) => return w.write_all(wrongtype),
                Some(Entry::Deque(d)) => {
                    let popped: Vec<Vec<u8>> = d.drain(..count.unwrap_or(1).min(d.len())).collect();
                    let empty = d.is_empty();
                    (popped, empty)
                }
            };
            let (popped, empty) = reply;
            if empty {
                map.remove(&words[1]);
            }
            match count {
                None => reply_bulk(w, popped.first().map(Vec::as_slice)),
                Some(_) => {
                    write!(w, "*{}\r\n", popped.len())?;
                    popped.iter().try_for_each(|v| reply_bulk(w, Some(v)))
                }
            }
        }
        _ => unknown_command(words, w),
    }
}

/// `-ERR` and a text that may hold client bytes; Redis blanks CR and LF out of such texts.
fn error_with(w: &mut impl Write, parts: &[&[u8]]) -> io::Result<()> {
    let mut line: Vec<u8> = b"-ERR ".to_vec();
    for part in parts {
        line.extend(part.iter().map(|&b| match b {
            b'\r' | b'\n' => b' ',
            b => b,
        }));
    }
    line.extend_from_slice(b"\r\n");
    w.write_all(&line)
}

/// What C's `printf("%.*s", limit, word)` prints: up to `limit` bytes, stopping at a NUL.
fn printed(word: &[u8], limit: usize) -> &[u8] {
    let word = word.split(|&b| b == 0).next().unwrap_or_default();
    &word[..word.len().min(limit)]
}

/// Redis 7's unknown-command error: the name as sent, then the arguments quoted, until 128
/// bytes of them are listed.
fn unknown_command(words: &[Vec<u8>], w: &mut impl Write) -> io::Result<()> {
    let mut listed: Vec<u8> = Vec::new();
    for word in words[1..].iter() {
        if listed.len() >= 128 {
            break;
        }
        let shown = printed(word, 128 - listed.len());
        listed.push(b'\'');
        listed.extend_from_slice(shown);
        listed.extend_from_slice(b"' ");
    }
    error_with(w, &[b"unknown command '", printed(&words[0], 128), b"', with args beginning with: ", &listed])
}

/// CONFIG, answered like `redis-server --save "" --appendonly no` without a config file.
/// Only `save` and `appendonly` are known; CONFIG SET is refused (in the words every version
/// uses, so that they agree).
fn config(words: &[Vec<u8>], w: &mut impl Write) -> io::Result<()> {
    let parameters: [(&[u8], &[u8]); 2] = [(b"save", b""), (b"appendonly", b"no")];
    let sub = String::from_utf8_lossy(&words[1].to_ascii_uppercase()).into_owned();
    let argc = words.len();
    let enough = match sub.as_str() {
        "GET" => argc >= 3,
        "SET" => argc >= 4,
        "RESETSTAT" | "REWRITE" | "HELP" => argc == 2,
        _ => return error_with(w, &[b"unknown subcommand '", printed(&words[1], 128), b"'. Try CONFIG HELP."]),
    };
    if !enough {
        return write!(w, "-ERR wrong number of arguments for 'config|{}' command\r\n", sub.to_lowercase());
    }
    match sub.as_str() {
        "GET" => {
            let mut pairs: Vec<(&[u8], &[u8])> = Vec::new();
            for asked in &words[2..] {
                let pattern = printed(asked, usize::MAX).iter().any(|b| matches!(b, b'[' | b'*' | b'?'));
                for (param, value) in parameters {
                    let hit = match pattern {
                        true => redis_glob(asked, param, true),
                        false => asked.eq_ignore_ascii_case(param),
                    };
                    if hit && pairs.iter().all(|(seen, _)| !seen.eq_ignore_ascii_case(param)) {
                        pairs.push((if pattern { param } else { asked.as_slice() }, value));
                    }
                }
            }
            write!(w, "*{}\r\n", 2 * pairs.len())?;
            pairs.into_iter().try_for_each(|(k, v)| {
                reply_bulk(w, Some(k))?;
                reply_bulk(w, Some(v))
            })
        }
        "SET" => w.write_all(b"-ERR resh-kv: CONFIG SET is not supported\r\n"),
        "RESETSTAT" => w.write_all(b"+OK\r\n"),
        "REWRITE" => w.write_all(b"-ERR The server is running without a config file\r\n"),
        _ => w.write_all(
            b"*11\r\n\
              +CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:\r\n\
              +GET <pattern>\r\n\
              +    Return parameters matching the glob-like <pattern> and their values.\r\n\
              +SET <directive> <value>\r\n\
              +    Set the configuration <directive> to <value>.\r\n\
              +RESETSTAT\r\n\
              +    Reset statistics reported by the INFO command.\r\n\
              +REWRITE\r\n\
              +    Rewrite the configuration file.\r\n\
              +HELP\r\n\
              +    Prints this help.\r\n",
        ),
    }
}

/// Glob matching exactly as Redis 7's `stringmatchlen` does it, written from its rules:
/// `*` any run, `?` one byte, `[...]` a class (`^` negates; `a-z` ranges, either way round,
/// with bytes read as C's signed chars; `\\` escapes; a class missing its `]` runs to the
/// pattern's end), `\\` escapes a byte. An empty string matches nothing; more than 1000
/// nested `*` match nothing.
fn redis_glob(pattern: &[u8], string: &[u8], ignore_case: bool) -> bool {
    struct Matcher<'a> {
        pattern: &'a [u8],
        ignore_case: bool,
        hopeless: bool,
    }
    impl Matcher<'_> {
        /// The pattern byte at `i`; 0 past its end, like the NUL after a C string.
        fn p(&self, i: usize) -> u8 {
            self.pattern.get(i).copied().unwrap_or(0)
        }
        fn same(&self, a: u8, b: u8) -> bool {
            a == b || (self.ignore_case && a.eq_ignore_ascii_case(&b))
        }
        fn run(&mut self, mut pi: usize, string: &[u8], nesting: u32) -> bool {
            if nesting > 1000 {
                return false;
            }
            let end = self.pattern.len();
            let mut rest = string;
            while pi < end {
                let Some((&c, after)) = rest.split_first() else { break };
                match self.p(pi) {
                    b'*' => {
                        while self.p(pi + 1) == b'*' {
                            pi += 1;
                        }
                        if pi + 1 == end {
                            return true;
                        }
                        for start in 0..rest.len() {
                            if self.run(pi + 1, &rest[start..], nesting + 1) {
                                return true;
                            }
                            if self.hopeless {
                                return false;
                            }
                        }
                        self.hopeless = true;
                        return false;
                    }
                    b'?' => {}
                    b'[' => {
                        pi += 1;
                        let negated = self.p(pi) == b'^';
                        if negated {
                            pi += 1;
                        }
                        let mut hit = false;
                        loop {
                            let left = end.saturating_sub(pi);
                            if self.p(pi) == b'\\' && left >= 2 {
                                pi += 1;
                                hit |= self.p(pi) == c;
                            } else if self.p(pi) == b']' {
                                break;
                            } else if left == 0 {
                                pi -= 1;
                                break;
                            } else if left >= 3 && self.p(pi + 1) == b'-' {
                                let (a, b) = (self.p(pi) as i8, self.p(pi + 2) as i8);
                                let (low, high) = (a.min(b), a.max(b));
                                let lower =
                                    |x: i8| if self.ignore_case { (x as u8).to_ascii_lowercase() as i8 } else { x };
                                hit |= lower(low) <= lower(c as i8) && lower(c as i8) <= lower(high);
                                pi += 2;
                            } else {
                                hit |= self.same(self.p(pi), c);
                            }
                            pi += 1;
                        }
                        if hit == negated {
                            return false;
                        }
                    }
                    literal => {
                        let literal = match literal == b'\\' && end - pi >= 2 {
                            true => {
                                pi += 1;
                                self.p(pi)
                            }
                            false => literal,
                        };
                        if !self.same(literal, c) {
                            return false;
                        }
                    }
                }
                rest = after;
                pi += 1;
                if rest.is_empty() {
                    while self.p(pi) == b'*' {
                        pi += 1;
                    }
                    break;
                }
            }
            pi == end && rest.is_empty()
        }
    }
    Matcher { pattern, ignore_case, hopeless: false }.run(0, string, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_as_redis_reads_them() {
        for (text, n) in
            [(&b"0"[..], 0), (b"-7", -7), (b"9223372036854775807", i64::MAX), (b"-9223372036854775808", i64::MIN)]
        {
            assert_eq!(number(text), Some(n));
        }
        for bad in [&b""[..], b"-", b"+1", b"01", b"-0", b" 1", b"1.0", b"9223372036854775808", b"-9223372036854775809"]
        {
            assert_eq!(number(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn inline_words_follow_sdssplitargs() {
        let words = |l: &[u8]| {
            inline_words(l)
                .map(|ws| ws.into_iter().map(|w| String::from_utf8_lossy(&w).into_owned()).collect::<Vec<_>>())
        };
        assert_eq!(words(b"\x0b PING  "), Some(vec!["PING".to_string()]));
        assert_eq!(
            words(br#"SET "a\x41\n" 'it\'s' x"#),
            Some(vec!["SET".into(), "aA\n".into(), "it's".into(), "x".into()])
        );
        assert_eq!(words(br#"a"b c"d"#), None);
        assert_eq!(words(br#"a"b c" d"#), Some(vec!["ab c".into(), "d".into()]));
        assert_eq!(words(b"'open"), None);
        assert_eq!(words(b"a\x00b c"), Some(vec!["a".into()]));
    }

    #[test]
    fn globs_match_as_in_redis() {
        let glob = |p: &[u8], s: &[u8]| redis_glob(p, s, false);
        assert!(!glob(b"*", b""));
        assert!(glob(b"*", b"anything"));
        assert!(glob(b"a*b*c", b"aXbYc"));
        assert!(!glob(b"a*b*c", b"aXbY"));
        assert!(glob(b"[^x]?", b"ab"));
        assert!(glob(b"[!x]", b"!"));
        assert!(glob(b"[z-a]", b"q"));
        assert!(glob(b"[\\]]", b"]"));
        assert!(glob(b"[\xff-a]", b"["));
        assert!(!glob(b"[\xff-a]", b"\xc3"));
        assert!(glob(b"a\\?", b"a?"));
        assert!(!glob(b"a\\?", b"ab"));
        assert!(glob(b"[ab", b"b"));
        assert!(redis_glob(b"APPEND*", b"appendonly", true));
        assert!(redis_glob(&b"*x".repeat(1000), &[b'x'; 1200], false));
        assert!(!redis_glob(&b"*x".repeat(1001), &[b'x'; 1200], false));
    }
}
