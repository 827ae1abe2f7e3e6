//! `resh-kv`: version 1 of the demo key-value service: async Rust (tokio), a HashMap.
//!
//! It speaks the RESP subset that `redis-cli` and `redis-benchmark -t ping,set,get,incr,lpush,
//! lpop,mset` use: PING, ECHO, SET, GET, DEL, EXISTS, INCR, DECR, MGET, MSET, LPUSH, LPOP,
//! LLEN, LRANGE, and CONFIG GET (answering like a `redis-server --save "" --appendonly no`);
//! and what resh's checkpoint (a logical copy between diverse versions) reads and writes:
//! KEYS (with Redis's glob patterns; keys sorted, so that the versions agree), TYPE, PTTL and
//! PEXPIRETIME (no key expires), RPUSH, FLUSHALL and DBSIZE. Replies are Redis 7's, byte for byte,
//! errors included (integers parsed with Redis's strict rules, Redis's unknown-command text).
//!
//! It can carry a planted fault, for demos and tests:
//! - `--wrong-get KEY`: GET KEY answers a wrong value (a software bug in this version);
//! - `--flip-stored KEY`: SET KEY stores the value with one bit flipped (a memory fault);
//! - `--arm-on-signal`: the faults stay dormant until the process receives SIGUSR1;
//! - `--once FILE`: each fault fires once (creating FILE); while FILE exists, none fires, so a
//!   restarted replica behaves.
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BytesMut};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Demo key-value service, version 1 (async Rust).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Port to listen on, on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// GET of this key answers a wrong value (a planted bug).
    #[arg(long, value_name = "KEY")]
    wrong_get: Option<String>,
    /// SET of this key stores the value with a bit flipped (a planted memory fault).
    #[arg(long, value_name = "KEY")]
    flip_stored: Option<String>,
    /// Keep the faults dormant until SIGUSR1 arrives.
    #[arg(long)]
    arm_on_signal: bool,
    /// Fire each fault once, creating FILE; no fault fires while FILE exists.
    #[arg(long, value_name = "FILE")]
    once: Option<PathBuf>,
}

#[derive(Debug, Clone)]
enum Value {
    Str(Vec<u8>),
    List(VecDeque<Vec<u8>>),
}

#[derive(Debug)]
struct Faults {
    wrong_get: Option<Vec<u8>>,
    flip_stored: Option<Vec<u8>>,
    armed: AtomicBool,
    once: Option<PathBuf>,
}

impl Faults {
    /// Whether a fault fires now (consuming the `--once` file).
    fn fire(&self) -> bool {
        if !self.armed.load(Ordering::Relaxed) {
            return false;
        }
        match &self.once {
            None => true,
            Some(path) => std::fs::OpenOptions::new().write(true).create_new(true).open(path).is_ok(),
        }
    }
}

type Db = Arc<Mutex<HashMap<Vec<u8>, Value>>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let listener = match TcpListener::bind(("127.0.0.1", args.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("resh-kv: cannot listen on 127.0.0.1:{}: {e}", args.port);
            return ExitCode::from(2);
        }
    };
    let faults = Arc::new(Faults {
        wrong_get: args.wrong_get.map(String::into_bytes),
        flip_stored: args.flip_stored.map(String::into_bytes),
        armed: AtomicBool::new(!args.arm_on_signal),
        once: args.once,
    });
    if args.arm_on_signal {
        let faults = Arc::clone(&faults);
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
            Ok(mut usr1) => {
                tokio::spawn(async move {
                    while usr1.recv().await.is_some() {
                        eprintln!("resh-kv: SIGUSR1: planted fault armed");
                        faults.armed.store(true, Ordering::Relaxed);
                    }
                });
            }
            Err(e) => eprintln!("resh-kv: cannot handle SIGUSR1: {e}"),
        }
    }
    let db: Db = Arc::default();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, Arc::clone(&db), Arc::clone(&faults)));
            }
            Err(e) => eprintln!("resh-kv: accept: {e}"),
        }
    }
}

async fn serve(mut stream: TcpStream, db: Db, faults: Arc<Faults>) {
    let _ = stream.set_nodelay(true);
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = Vec::with_capacity(16 * 1024);
    loop {
        loop {
            match parse(&input) {
                Parse::Incomplete => break,
                Parse::Invalid(why) => {
                    error_reply(&mut output, &[&b"ERR Protocol error: "[..], &why].concat());
                    let _ = stream.write_all(&output).await;
                    return;
                }
                Parse::Command(args, used) => {
                    execute(&args, &db, &faults, &mut output);
                    input.advance(used);
                }
            }
        }
        if !output.is_empty() {
            if stream.write_all(&output).await.is_err() {
                return;
            }
            output.clear();
        }
        match stream.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

enum Parse {
    Incomplete,
    /// What Redis would answer (it may hold a byte of the request).
    Invalid(Vec<u8>),
    Command(Vec<Vec<u8>>, usize),
}

/// One `*N` array of `$len` bulk strings, or an inline command, with Redis's limits: a count
/// above `INT_MAX` or a bulk length above 512 MB is refused, a count of zero or less is an
/// empty request (ignored).
fn parse(buf: &[u8]) -> Parse {
    fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
        let end = buf.get(from..)?.windows(2).position(|w| w == b"\r\n")? + from;
        Some((&buf[from..end], end + 2))
    }
    if buf.is_empty() {
        return Parse::Incomplete;
    }
    if buf[0] != b'*' {
        let Some(end) = buf.iter().position(|&b| b == b'\n') else { return Parse::Incomplete };
        let line = &buf[..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        return match split_inline(line) {
            Some(words) => Parse::Command(words, end + 1),
            None => Parse::Invalid(b"unbalanced quotes in request".to_vec()),
        };
    }
    let Some((head, mut at)) = line(buf, 1) else { return Parse::Incomplete };
    let Some(count) = string2ll(head).filter(|&n| n <= i64::from(i32::MAX)) else {
        return Parse::Invalid(b"invalid multibulk length".to_vec());
    };
    let mut args = Vec::with_capacity(count.clamp(0, 1024) as usize);
    for _ in 0..count {
        if at >= buf.len() {
            return Parse::Incomplete;
        }
        if buf[at] != b'$' {
            return Parse::Invalid([&b"expected '$', got '"[..], &[buf[at]], b"'"].concat());
        }
        let Some((len, body)) = line(buf, at + 1) else { return Parse::Incomplete };
        let Some(len) = string2ll(len).filter(|n| (0..=MAX_BULK).contains(n)) else {
            return Parse::Invalid(b"invalid bulk length".to_vec());
        };
        let len = len as usize;
        if buf.len() < body + len + 2 {
            return Parse::Incomplete;
        }
        args.push(buf[body..body + len].to_vec());
        at = body + len + 2;
    }
    Parse::Command(args, at)
}

/// Redis's `proto-max-bulk-len` default.
const MAX_BULK: i64 = 512 * 1024 * 1024;

/// Splits an inline request the way Redis's `sdssplitargs` does: words separated by white
/// space; `"..."` with C escapes (`\n`, `\xHH`, ...) and `'...'` (only `\'` escaped) quote a
/// word; a closing quote must be followed by white space. `None`: unbalanced quotes.
fn split_inline(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    // C's isspace: space, \t, \n, \v, \f, \r.
    let space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut words = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && space(line[i]) {
            i += 1;
        }
        // sdssplitargs stops at a NUL byte, like C strings do.
        if at(i) == 0 {
            return Some(words);
        }
        let mut word = Vec::new();
        let (mut in_double, mut in_single) = (false, false);
        loop {
            let c = at(i);
            if in_double {
                if c == b'\\' && at(i + 1) == b'x' && at(i + 2).is_ascii_hexdigit() && at(i + 3).is_ascii_hexdigit() {
                    let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                    word.push(hex(at(i + 2)) * 16 + hex(at(i + 3)));
                    i += 3;
                } else if c == b'\\' && at(i + 1) != 0 {
                    i += 1;
                    word.push(match at(i) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if at(i + 1) != 0 && !space(at(i + 1)) {
                        return None;
                    }
                    i += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    word.push(c);
                }
            } else if in_single {
                if c == b'\\' && at(i + 1) == b'\'' {
                    i += 1;
                    word.push(b'\'');
                } else if c == b'\'' {
                    if at(i + 1) != 0 && !space(at(i + 1)) {
                        return None;
                    }
                    i += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    word.push(c);
                }
            } else {
                // A word ends at these four only (not at \v or \f, unlike the blanks before it).
                match c {
                    0 | b' ' | b'\n' | b'\r' | b'\t' => break,
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    c => word.push(c),
                }
            }
            i += 1;
        }
        words.push(word);
    }
}

/// Redis's `string2ll`: an optional `-`, then digits with no leading zero (but `0` itself);
/// no `+`, no spaces, no `-0`, nothing outside the 64-bit range.
fn string2ll(text: &[u8]) -> Option<i64> {
    if text == b"0" {
        return Some(0);
    }
    let (negative, digits) = match text.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if !matches!(digits.first(), Some(b'1'..=b'9')) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut magnitude: u64 = 0;
    for d in digits {
        magnitude = magnitude.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

fn bulk(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", value.len()).as_bytes());
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn integer(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(format!(":{n}\r\n").as_bytes());
}

const WRONGTYPE: &[u8] = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
const NOT_INTEGER: &[u8] = b"-ERR value is not an integer or out of range\r\n";

fn execute(args: &[Vec<u8>], db: &Db, faults: &Faults, out: &mut Vec<u8>) {
    let Some(name) = args.first() else { return };
    let command = String::from_utf8_lossy(name).to_ascii_lowercase();
    let arity_ok = match command.as_str() {
        "ping" => args.len() <= 2,
        "echo" | "get" | "incr" | "decr" | "llen" | "keys" | "type" | "pttl" | "pexpiretime" => args.len() == 2,
        "set" => args.len() == 3,
        "del" | "exists" | "mget" => args.len() >= 2,
        "mset" => args.len() >= 3 && args.len() % 2 == 1,
        "lpush" | "rpush" => args.len() >= 3,
        "lpop" => args.len() == 2 || args.len() == 3,
        "lrange" => args.len() == 4,
        "config" => args.len() >= 2,
        "flushall" => true,
        "dbsize" => args.len() == 1,
        _ => {
            unknown_command(args, out);
            return;
        }
    };
    if !arity_ok {
        out.extend_from_slice(format!("-ERR wrong number of arguments for '{command}' command\r\n").as_bytes());
        return;
    }
    let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
    match command.as_str() {
        "ping" => match args.get(1) {
            Some(msg) => bulk(out, msg),
            None => out.extend_from_slice(b"+PONG\r\n"),
        },
        "echo" => bulk(out, &args[1]),
        "set" => {
            let mut value = args[2].clone();
            if faults.flip_stored.as_deref() == Some(&args[1][..]) && !value.is_empty() && faults.fire() {
                value[0] ^= 0x01;
            }
            db.insert(args[1].clone(), Value::Str(value));
            out.extend_from_slice(b"+OK\r\n");
        }
        "get" => match db.get(&args[1]) {
            None => out.extend_from_slice(b"$-1\r\n"),
            Some(Value::List(_)) => out.extend_from_slice(WRONGTYPE),
            Some(Value::Str(v)) => {
                if faults.wrong_get.as_deref() == Some(&args[1][..]) && faults.fire() {
                    let mut wrong = v.clone();
                    wrong.extend_from_slice(b"?");
                    bulk(out, &wrong);
                } else {
                    bulk(out, v);
                }
            }
        },
        "del" => {
            let n = args[1..].iter().filter(|k| db.remove(*k).is_some()).count();
            integer(out, n as i64);
        }
        "exists" => {
            let n = args[1..].iter().filter(|k| db.contains_key(*k)).count();
            integer(out, n as i64);
        }
        "incr" | "decr" => {
            let delta = if command == "incr" { 1 } else { -1 };
            let current = match db.get(&args[1]) {
                None => Some(0),
                Some(Value::List(_)) => {
                    out.extend_from_slice(WRONGTYPE);
                    return;
                }
                Some(Value::Str(v)) => string2ll(v),
            };
            let Some(current) = current else {
                out.extend_from_slice(NOT_INTEGER);
                return;
            };
            let Some(next) = current.checked_add(delta) else {
                out.extend_from_slice(b"-ERR increment or decrement would overflow\r\n");
                return;
            };
            db.insert(args[1].clone(), Value::Str(next.to_string().into_bytes()));
            integer(out, next);
        }
        "mget" => {
            out.extend_from_slice(format!("*{}\r\n", args.len() - 1).as_bytes());
            for key in &args[1..] {
                match db.get(key) {
                    Some(Value::Str(v)) => bulk(out, v),
                    _ => out.extend_from_slice(b"$-1\r\n"),
                }
            }
        }
        "mset" => {
            for pair in args[1..].chunks(2) {
                db.insert(pair[0].clone(), Value::Str(pair[1].clone()));
            }
            out.extend_from_slice(b"+OK\r\n");
        }
        "lpush" | "rpush" => {
            let list = db.entry(args[1].clone()).or_insert_with(|| Value::List(VecDeque::new()));
            let Value::List(list) = list else {
                out.extend_from_slice(WRONGTYPE);
                return;
            };
            for v in &args[2..] {
                if command == "lpush" {
                    list.push_front(v.clone());
                } else {
                    list.push_back(v.clone());
                }
            }
            integer(out, list.len() as i64);
        }
        "lpop" => {
            let count = match args.get(2) {
                None => None,
                Some(c) => match string2ll(c) {
                    Some(n) if n >= 0 => Some(n as usize),
                    _ => {
                        out.extend_from_slice(b"-ERR value is out of range, must be positive\r\n");
                        return;
                    }
                },
            };
            let list = match db.get_mut(&args[1]) {
                None => {
                    out.extend_from_slice(if count.is_some() { b"*-1\r\n" } else { b"$-1\r\n" });
                    return;
                }
                Some(Value::Str(_)) => {
                    out.extend_from_slice(WRONGTYPE);
                    return;
                }
                Some(Value::List(list)) => list,
            };
            match count {
                None => {
                    if let Some(v) = list.pop_front() {
                        bulk(out, &v);
                    }
                }
                Some(n) => {
                    let take = n.min(list.len());
                    out.extend_from_slice(format!("*{take}\r\n").as_bytes());
                    for v in list.drain(..take) {
                        bulk(out, &v);
                    }
                }
            }
            if list.is_empty() {
                db.remove(&args[1]);
            }
        }
        "llen" => match db.get(&args[1]) {
            None => integer(out, 0),
            Some(Value::Str(_)) => out.extend_from_slice(WRONGTYPE),
            Some(Value::List(l)) => integer(out, l.len() as i64),
        },
        "lrange" => {
            let (Some(start), Some(stop)) = (string2ll(&args[2]), string2ll(&args[3])) else {
                out.extend_from_slice(NOT_INTEGER);
                return;
            };
            match db.get(&args[1]) {
                None => out.extend_from_slice(b"*0\r\n"),
                Some(Value::Str(_)) => out.extend_from_slice(WRONGTYPE),
                Some(Value::List(l)) => {
                    let len = l.len() as i64;
                    let start = if start < 0 { (len + start).max(0) } else { start };
                    let stop = if stop < 0 { len + stop } else { stop.min(len - 1) };
                    if start > stop || start >= len {
                        out.extend_from_slice(b"*0\r\n");
                    } else {
                        out.extend_from_slice(format!("*{}\r\n", stop - start + 1).as_bytes());
                        for v in l.iter().skip(start as usize).take((stop - start + 1) as usize) {
                            bulk(out, v);
                        }
                    }
                }
            }
        }
        "config" => config(args, out),
        "keys" => {
            let mut keys: Vec<&Vec<u8>> = if args[1] == b"*" {
                db.keys().collect()
            } else {
                db.keys().filter(|k| glob_match(&args[1], k, false)).collect()
            };
            keys.sort_unstable();
            out.extend_from_slice(format!("*{}\r\n", keys.len()).as_bytes());
            for k in keys {
                bulk(out, k);
            }
        }
        "type" => out.extend_from_slice(match db.get(&args[1]) {
            None => b"+none\r\n",
            Some(Value::Str(_)) => b"+string\r\n",
            Some(Value::List(_)) => b"+list\r\n",
        }),
        // Nothing expires here: an existing key has no time to live.
        // Nothing expires here.
        "pttl" | "pexpiretime" => integer(out, if db.contains_key(&args[1]) { -1 } else { -2 }),
        "flushall" => {
            // Redis compares the option as a C string (up to a NUL byte), ignoring case.
            let option = args.get(1).map(|a| c_str(a, usize::MAX).to_ascii_lowercase());
            match option.as_deref() {
                None | Some(b"sync" | b"async") if args.len() <= 2 => {
                    db.clear();
                    out.extend_from_slice(b"+OK\r\n");
                }
                _ => out.extend_from_slice(b"-ERR syntax error\r\n"),
            }
        }
        "dbsize" => integer(out, db.len() as i64),
        _ => {}
    }
}

/// At most `max` bytes of `arg`, up to its first NUL byte: what C's `%.*s` prints of it.
fn c_str(arg: &[u8], max: usize) -> &[u8] {
    let end = arg.iter().position(|&b| b == 0).unwrap_or(arg.len()).min(max);
    &arg[..end]
}

/// An error reply whose text may hold client bytes: Redis turns CR and LF into spaces.
fn error_reply(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'-');
    out.extend(text.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.extend_from_slice(b"\r\n");
}

/// Redis 7's answer to an unknown command: its name and the first 128 bytes of its arguments.
fn unknown_command(args: &[Vec<u8>], out: &mut Vec<u8>) {
    let mut listed = Vec::new();
    for arg in &args[1..] {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        listed.push(b'\'');
        listed.extend_from_slice(c_str(arg, room));
        listed.extend_from_slice(b"' ");
    }
    let mut text = b"ERR unknown command '".to_vec();
    text.extend_from_slice(c_str(&args[0], 128));
    text.extend_from_slice(b"', with args beginning with: ");
    text.extend_from_slice(&listed);
    error_reply(out, &text);
}

/// Redis's glob matching (`stringmatchlen` in util.c), quirks included: `*`, `?`, `[abc]`,
/// `[^a]`, `[a-z]` (bounds in either order, compared as C's signed chars), `\` escapes; an
/// unterminated `[` class ends at the pattern's end. `!` does not negate a class. Like Redis,
/// a pattern nesting more than 1000 `*` deep matches nothing.
fn glob_match(pattern: &[u8], string: &[u8], nocase: bool) -> bool {
    let mut give_up = false;
    glob_at(pattern, string, nocase, &mut give_up, 0)
}

fn glob_at(pattern: &[u8], string: &[u8], nocase: bool, give_up: &mut bool, depth: u32) -> bool {
    if depth > 1000 {
        return false;
    }
    // Past the end reads as C's terminating NUL.
    let pat = |i: usize| pattern.get(i).copied().unwrap_or(0);
    let fold = |b: u8| if nocase { b.to_ascii_lowercase() } else { b };
    let (mut p, mut s) = (0usize, 0usize);
    while p < pattern.len() && s < string.len() {
        match pattern[p] {
            b'*' => {
                while p < pattern.len() && pat(p + 1) == b'*' {
                    p += 1;
                }
                if p + 1 == pattern.len() {
                    return true;
                }
                while s < string.len() {
                    if glob_at(&pattern[p + 1..], &string[s..], nocase, give_up, depth + 1) {
                        return true;
                    }
                    if *give_up {
                        return false;
                    }
                    s += 1;
                }
                // The rest of the pattern matches nowhere in the rest of the string: an
                // earlier `*` taking more cannot help either.
                *give_up = true;
                return false;
            }
            b'?' => s += 1,
            b'[' => {
                p += 1;
                let negate = pat(p) == b'^';
                if negate {
                    p += 1;
                }
                let c = string[s];
                let mut matched = false;
                loop {
                    if pat(p) == b'\\' && pattern.len() - p >= 2 {
                        p += 1;
                        matched |= pattern[p] == c;
                    } else if pat(p) == b']' {
                        break;
                    } else if p >= pattern.len() {
                        p -= 1;
                        break;
                    } else if pattern.len() - p >= 3 && pattern[p + 1] == b'-' {
                        // C's char is signed: bytes from 0x80 sort below ASCII. The bounds are
                        // ordered first, then folded.
                        let (mut lo, mut hi) = (pattern[p] as i8, pattern[p + 2] as i8);
                        if lo > hi {
                            std::mem::swap(&mut lo, &mut hi);
                        }
                        let fold_signed = |b: i8| fold(b as u8) as i8;
                        matched |= (fold_signed(lo)..=fold_signed(hi)).contains(&fold_signed(c as i8));
                        p += 2;
                    } else {
                        matched |= fold(pattern[p]) == fold(c);
                    }
                    p += 1;
                }
                if matched == negate {
                    return false;
                }
                s += 1;
            }
            other => {
                let literal = if other == b'\\' && pattern.len() - p >= 2 {
                    p += 1;
                    pattern[p]
                } else {
                    other
                };
                if fold(literal) != fold(string[s]) {
                    return false;
                }
                s += 1;
            }
        }
        p += 1;
        if s == string.len() {
            while pat(p) == b'*' {
                p += 1;
            }
            break;
        }
    }
    p == pattern.len() && s == string.len()
}

const CONFIG_HELP: &[&str] = &[
    "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET <pattern>",
    "    Return parameters matching the glob-like <pattern> and their values.",
    "SET <directive> <value>",
    "    Set the configuration <directive> to <value>.",
    "RESETSTAT",
    "    Reset statistics reported by the INFO command.",
    "REWRITE",
    "    Rewrite the configuration file.",
    "HELP",
    "    Prints this help.",
];

/// CONFIG answers like `redis-server --save "" --appendonly no` started without a config
/// file; GET knows `save` and `appendonly` only, SET changes nothing and says so.
fn config(args: &[Vec<u8>], out: &mut Vec<u8>) {
    const KNOWN: [(&[u8], &[u8]); 2] = [(b"save", b""), (b"appendonly", b"no")];
    let sub = args[1].to_ascii_lowercase();
    let (name, arity_ok) = match &sub[..] {
        b"get" => ("get", args.len() >= 3),
        b"set" => ("set", args.len() >= 4),
        b"resetstat" => ("resetstat", args.len() == 2),
        b"rewrite" => ("rewrite", args.len() == 2),
        b"help" => ("help", args.len() == 2),
        _ => {
            let mut text = b"ERR unknown subcommand '".to_vec();
            text.extend_from_slice(c_str(&args[1], 128));
            text.extend_from_slice(b"'. Try CONFIG HELP.");
            error_reply(out, &text);
            return;
        }
    };
    if !arity_ok {
        out.extend_from_slice(format!("-ERR wrong number of arguments for 'config|{name}' command\r\n").as_bytes());
        return;
    }
    match name {
        "get" => {
            // Each parameter once, under the first name that asked for it; a glob (by C
            // string, ignoring case) reports the parameters' own names.
            let mut found: Vec<(&[u8], &[u8])> = Vec::new();
            for asked in &args[2..] {
                let is_glob = c_str(asked, usize::MAX).iter().any(|b| b"[*?".contains(b));
                for (known, value) in KNOWN {
                    let hit = if is_glob { glob_match(asked, known, true) } else { asked.eq_ignore_ascii_case(known) };
                    if hit && !found.iter().any(|(n, _)| n.eq_ignore_ascii_case(known)) {
                        found.push((if is_glob { known } else { asked }, value));
                    }
                }
            }
            out.extend_from_slice(format!("*{}\r\n", found.len() * 2).as_bytes());
            for (n, v) in found {
                bulk(out, n);
                bulk(out, v);
            }
        }
        "set" => out.extend_from_slice(b"-ERR resh-kv: CONFIG SET is not supported\r\n"),
        "resetstat" => out.extend_from_slice(b"+OK\r\n"),
        "rewrite" => out.extend_from_slice(b"-ERR The server is running without a config file\r\n"),
        _ => {
            out.extend_from_slice(format!("*{}\r\n", CONFIG_HELP.len()).as_bytes());
            for line in CONFIG_HELP {
                out.extend_from_slice(format!("+{line}\r\n").as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_redis_string2ll() {
        for ok in [&b"0"[..], b"-1", b"42", b"9223372036854775807", b"-9223372036854775808"] {
            assert!(string2ll(ok).is_some(), "{ok:?}");
        }
        for bad in [&b""[..], b"-", b"+1", b"007", b"-0", b" 1", b"1 ", b"1_0", b"9223372036854775808", b"1e3"] {
            assert_eq!(string2ll(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn inline_requests_split_like_sdssplitargs() {
        let split = |l: &[u8]| {
            split_inline(l).map(|w| w.iter().map(|w| String::from_utf8_lossy(w).into_owned()).collect::<Vec<_>>())
        };
        assert_eq!(split(b"  SET k  v "), Some(vec!["SET".into(), "k".into(), "v".into()]));
        assert_eq!(
            split(br#"SET "a b" 'c\'d' "\x41\n""#),
            Some(vec!["SET".into(), "a b".into(), "c'd".into(), "A\n".into()])
        );
        assert_eq!(split(b"a\x0bb"), Some(vec!["a\x0bb".into()]));
        assert_eq!(split(br#"SET "a"b"#), None);
        assert_eq!(split(br#"SET "ab"#), None);
        assert_eq!(split(b""), Some(vec![]));
    }

    #[test]
    fn globs_follow_redis_stringmatchlen() {
        let m = |p: &[u8], s: &[u8]| glob_match(p, s, false);
        // An empty string matches no pattern (KEYS * lists the empty key by a shortcut).
        assert!(!m(b"*", b""));
        assert!(!m(b"**", b""));
        assert!(m(b"a*c", b"abbc"));
        assert!(m(b"h?llo", b"hallo"));
        assert!(m(b"h[ae]llo", b"hello"));
        assert!(!m(b"h[^e]llo", b"hello"));
        assert!(m(b"h[!e]llo", b"h!llo"), "`!` is literal in a class");
        assert!(m(b"h[b-a]llo", b"hallo"), "reversed range");
        assert!(m(b"[\xff-a]", b"!"), "signed chars: 0xff is -1");
        assert!(!m(b"[a-\xff]", b"\xc3"));
        assert!(m(b"\\*", b"*"));
        assert!(!m(b"\\*", b"a"));
        assert!(m(b"[a-", b"a"), "an unterminated class ends at the pattern's end");
        assert!(glob_match(b"SAV*", b"save", true));
        let deep = b"*x".repeat(1001);
        assert!(glob_match(&b"*x".repeat(1000), &[b'x'; 1100], false));
        assert!(!glob_match(&deep, &[b'x'; 1100], false), "nesting limit");
    }
}
