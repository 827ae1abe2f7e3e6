//! `resh-kv-threads`: another version of the demo key-value service, built differently on
//! purpose (N-version programming): one OS thread per connection, a buffered line reader for
//! parsing, a `BTreeMap` behind a `RwLock`, and its own command table. It shares no code with
//! `resh-kv` (async, HashMap) or `kv.py` (Python asyncio), so a bug in one is unlikely to be
//! repeated in the others. It serves the same RESP subset.
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
                write!(writer, "-ERR Protocol error: {e}\r\n")?;
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

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
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

fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Vec<Vec<u8>>>> {
    let Some(first) = read_line(reader)? else { return Ok(None) };
    let Some(count) = first.strip_prefix(b"*") else {
        // Inline command.
        return Ok(Some(first.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty()).map(<[u8]>::to_vec).collect()));
    };
    let count: usize = std::str::from_utf8(count)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("invalid multibulk length"))?;
    let mut words = Vec::with_capacity(count);
    for _ in 0..count {
        let header = read_line(reader)?.ok_or_else(|| invalid("unexpected end"))?;
        let len: usize = header
            .strip_prefix(b"$")
            .and_then(|l| std::str::from_utf8(l).ok())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("invalid bulk length"))?;
        let mut word = vec![0u8; len + 2];
        reader.read_exact(&mut word)?;
        word.truncate(len);
        words.push(word);
    }
    Ok(Some(words))
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

fn number(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn run(words: &[Vec<u8>], store: &Store, w: &mut impl Write) -> io::Result<()> {
    let name = String::from_utf8_lossy(&words[0]).to_uppercase();
    let argc = words.len() - 1;
    // (minimum arguments, maximum arguments, multiple of)
    let (min, max) = match name.as_str() {
        "PING" => (0, 1),
        "ECHO" | "GET" | "INCR" | "DECR" | "LLEN" => (1, 1),
        "SET" => (2, 2),
        "DEL" | "EXISTS" | "MGET" => (1, usize::MAX),
        "MSET" | "LPUSH" => (2, usize::MAX),
        "LPOP" => (1, 2),
        "LRANGE" => (3, 3),
        "CONFIG" => (1, usize::MAX),
        _ => return write!(w, "-ERR unknown command '{}'\r\n", name.to_lowercase()),
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
        "CONFIG" => {
            if argc != 2 || !words[1].eq_ignore_ascii_case(b"GET") {
                return w.write_all(b"-ERR unknown subcommand or wrong number of arguments for 'config' command\r\n");
            }
            match String::from_utf8_lossy(&words[2]).to_lowercase().as_str() {
                "save" => w.write_all(b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n"),
                "appendonly" => w.write_all(b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"),
                _ => w.write_all(b"*0\r\n"),
            }
        }
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
        "LPUSH" => {
            let entry = map.entry(words[1].clone()).or_insert_with(|| Entry::Deque(VecDeque::new()));
            match entry {
                Entry::Deque(d) => {
                    words[2..].iter().for_each(|v| d.push_front(v.clone()));
                    write!(w, ":{}\r\n", d.len())
                }
                Entry::Bytes(_) => w.write_all(wrongtype),
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
        _ => write!(w, "-ERR unknown command '{}'\r\n", name.to_lowercase()),
    }
}
