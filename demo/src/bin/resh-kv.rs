//! `resh-kv`: version 1 of the demo key-value service: async Rust (tokio), a HashMap.
//!
//! It speaks the RESP subset that `redis-cli` and `redis-benchmark -t ping,set,get,incr,lpush,
//! lpop,mset` use: PING, ECHO, SET, GET, DEL, EXISTS, INCR, DECR, MGET, MSET, LPUSH, LPOP,
//! LLEN, LRANGE, and CONFIG GET (answering like a `redis-server --save "" --appendonly no`).
//! Replies use Redis's own wording where Redis has one.
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
                    output.extend_from_slice(format!("-ERR Protocol error: {why}\r\n").as_bytes());
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
    Invalid(String),
    Command(Vec<Vec<u8>>, usize),
}

/// One `*N` array of `$len` bulk strings, or an inline command.
fn parse(buf: &[u8]) -> Parse {
    fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
        let end = buf.get(from..)?.windows(2).position(|w| w == b"\r\n")? + from;
        Some((&buf[from..end], end + 2))
    }
    fn number(text: &[u8]) -> Option<i64> {
        std::str::from_utf8(text).ok()?.parse().ok()
    }
    if buf.is_empty() {
        return Parse::Incomplete;
    }
    if buf[0] != b'*' {
        let Some(end) = buf.iter().position(|&b| b == b'\n') else { return Parse::Incomplete };
        let words = buf[..end].split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()).map(<[u8]>::to_vec);
        return Parse::Command(words.collect(), end + 1);
    }
    let Some((head, mut at)) = line(buf, 1) else { return Parse::Incomplete };
    let Some(count) = number(head) else { return Parse::Invalid("invalid multibulk length".into()) };
    let mut args = Vec::with_capacity(count.max(0) as usize);
    for _ in 0..count {
        if at >= buf.len() {
            return Parse::Incomplete;
        }
        if buf[at] != b'$' {
            return Parse::Invalid(format!("expected '$', got '{}'", buf[at] as char));
        }
        let Some((len, body)) = line(buf, at + 1) else { return Parse::Incomplete };
        let Some(len) = number(len).and_then(|n| usize::try_from(n).ok()) else {
            return Parse::Invalid("invalid bulk length".into());
        };
        if buf.len() < body + len + 2 {
            return Parse::Incomplete;
        }
        args.push(buf[body..body + len].to_vec());
        at = body + len + 2;
    }
    Parse::Command(args, at)
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
        "echo" | "get" | "incr" | "decr" | "llen" => args.len() == 2,
        "set" => args.len() == 3,
        "del" | "exists" | "mget" => args.len() >= 2,
        "mset" => args.len() >= 3 && args.len() % 2 == 1,
        "lpush" => args.len() >= 3,
        "lpop" => args.len() == 2 || args.len() == 3,
        "lrange" => args.len() == 4,
        "config" => args.len() >= 2,
        _ => {
            out.extend_from_slice(
                format!("-ERR unknown command '{command}', with args beginning with: \r\n").as_bytes(),
            );
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
                Some(Value::Str(v)) => std::str::from_utf8(v).ok().and_then(|s| s.parse::<i64>().ok()),
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
        "lpush" => {
            let list = db.entry(args[1].clone()).or_insert_with(|| Value::List(VecDeque::new()));
            let Value::List(list) = list else {
                out.extend_from_slice(WRONGTYPE);
                return;
            };
            for v in &args[2..] {
                list.push_front(v.clone());
            }
            integer(out, list.len() as i64);
        }
        "lpop" => {
            let count = match args.get(2) {
                None => None,
                Some(c) => match std::str::from_utf8(c).ok().and_then(|s| s.parse::<i64>().ok()) {
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
            let parse = |b: &[u8]| std::str::from_utf8(b).ok().and_then(|s| s.parse::<i64>().ok());
            let (Some(start), Some(stop)) = (parse(&args[2]), parse(&args[3])) else {
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
        _ => {}
    }
}

/// CONFIG GET answers like `redis-server --save "" --appendonly no`; nothing else is configurable.
fn config(args: &[Vec<u8>], out: &mut Vec<u8>) {
    if !args[1].eq_ignore_ascii_case(b"get") || args.len() != 3 {
        out.extend_from_slice(b"-ERR unknown subcommand or wrong number of arguments for 'config' command\r\n");
        return;
    }
    let param = args[2].to_ascii_lowercase();
    match &param[..] {
        b"save" => out.extend_from_slice(b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n"),
        b"appendonly" => out.extend_from_slice(b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"),
        _ => out.extend_from_slice(b"*0\r\n"),
    }
}
