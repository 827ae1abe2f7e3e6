//! `resh-echo`: a TCP echo server for resh's tests and examples, with switches that make it
//! misbehave the way a faulty replica would.
//!
//! Offsets count the bytes of output on one connection. Each fault applies to every connection
//! unless `--once FILE` is given: then the first connection that reaches the fault creates FILE,
//! and no fault is injected while FILE exists (so a restarted replica behaves).
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use clap::Parser;

/// A TCP echo server that can be told to misbehave.
#[derive(Parser, Debug, Clone)]
#[command(version, about, long_about = None)]
struct Args {
    /// Port to listen on, on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// Flip bits of the output byte at this offset (XOR with --corrupt-mask).
    #[arg(long, value_name = "OFFSET")]
    corrupt_at: Option<u64>,
    /// The XOR mask --corrupt-at applies.
    #[arg(long, default_value_t = 0x01, value_name = "MASK")]
    corrupt_mask: u8,
    /// Close the connection after this many output bytes.
    #[arg(long, value_name = "OFFSET")]
    close_at: Option<u64>,
    /// Stop reading and writing after this many output bytes, holding the connection open.
    #[arg(long, value_name = "OFFSET")]
    stall_at: Option<u64>,
    /// After this many output bytes, send garbage without end.
    #[arg(long, value_name = "OFFSET")]
    flood_at: Option<u64>,
    /// Exit the whole process (status 3) when a connection reaches this many output bytes.
    #[arg(long, value_name = "OFFSET")]
    exit_at: Option<u64>,
    /// Inject faults only while FILE does not exist; the first fault creates it.
    #[arg(long, value_name = "FILE")]
    once: Option<PathBuf>,
    /// Delay every write by this many milliseconds.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    delay_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let listener = match TcpListener::bind(("127.0.0.1", args.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("resh-echo: cannot listen on 127.0.0.1:{}: {e}", args.port);
            return ExitCode::from(2);
        }
    };
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let args = args.clone();
                thread::spawn(move || {
                    let _ = serve(stream, &args);
                });
            }
            Err(e) => eprintln!("resh-echo: accept: {e}"),
        }
    }
    ExitCode::SUCCESS
}

/// Whether faults are armed (no `--once` file yet); arming consumes the `--once` file.
fn fire(args: &Args) -> bool {
    match &args.once {
        None => true,
        Some(path) => std::fs::OpenOptions::new().write(true).create_new(true).open(path).is_ok(),
    }
}

fn armed(args: &Args) -> bool {
    args.once.as_ref().is_none_or(|p| !p.exists())
}

fn serve(mut stream: TcpStream, args: &Args) -> io::Result<()> {
    // Each read is echoed at once: without NODELAY, Nagle's algorithm holds back the last
    // part of a large message until the peer's delayed ACK (40 ms on Linux).
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut written: u64 = 0;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            stream.shutdown(Shutdown::Write)?;
            return Ok(());
        }
        let out = &mut buf[..n];
        let (start, end) = (written, written + n as u64);
        let hits = |at: Option<u64>| at.filter(|&k| k >= start && k < end).map(|k| (k - start) as usize);
        if armed(args) {
            if let Some(i) = hits(args.corrupt_at) {
                if fire(args) {
                    out[i] ^= args.corrupt_mask;
                }
            }
            for (at, action) in [
                (args.close_at, Action::Close),
                (args.stall_at, Action::Stall),
                (args.flood_at, Action::Flood),
                (args.exit_at, Action::Exit),
            ] {
                if let Some(i) = hits(at) {
                    if fire(args) {
                        stream.write_all(&out[..i])?;
                        return act(stream, action);
                    }
                }
            }
        }
        if args.delay_ms > 0 {
            thread::sleep(Duration::from_millis(args.delay_ms));
        }
        stream.write_all(out)?;
        written = end;
    }
}

enum Action {
    Close,
    Stall,
    Flood,
    Exit,
}

fn act(mut stream: TcpStream, action: Action) -> io::Result<()> {
    match action {
        Action::Close => stream.shutdown(Shutdown::Both),
        Action::Stall => loop {
            thread::sleep(Duration::from_secs(3600));
        },
        Action::Flood => {
            let garbage = vec![0xA5u8; 64 * 1024];
            loop {
                stream.write_all(&garbage)?;
            }
        }
        Action::Exit => std::process::exit(3),
    }
}
