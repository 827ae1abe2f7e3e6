//! `resh-memtarget`: a process whose memory fault-injection tests can flip and read back.
//!
//! It fills a heap buffer with a known pattern, prints `pid=PID addr=0xADDR len=LEN` on one line,
//! and then answers commands on standard input, one per line:
//! - `check`: prints `diff N` and then `OFFSET OLD NEW` for each byte (up to 16) that no longer
//!   holds the pattern, as the process itself reads them;
//! - `quit` (or end of input): exits.
use std::hint::black_box;
use std::io::{self, BufRead, Write};

/// The buffer's size: below glibc's mmap threshold, so it lives in `[heap]`.
const LEN: usize = 64 * 1024;

/// The byte the pattern puts at `i`.
fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(131).wrapping_add(7) & 0xFF) as u8
}

fn main() -> io::Result<()> {
    let mut buf: Vec<u8> = (0..LEN).map(pattern).collect();
    let mut out = io::stdout().lock();
    writeln!(out, "pid={} addr={:#x} len={}", std::process::id(), buf.as_ptr() as usize, buf.len())?;
    out.flush()?;
    for line in io::stdin().lock().lines() {
        let line = line?;
        // Another process may have written the buffer: make the compiler read it afresh.
        black_box(&mut buf);
        match line.trim() {
            "check" => {
                let diffs: Vec<(usize, u8, u8)> = buf
                    .iter()
                    .enumerate()
                    .filter(|(i, b)| **b != pattern(*i))
                    .map(|(i, b)| (i, pattern(i), *b))
                    .collect();
                writeln!(out, "diff {}", diffs.len())?;
                for (i, old, new) in diffs.iter().take(16) {
                    writeln!(out, "{i} {old} {new}")?;
                }
                out.flush()?;
            }
            "quit" => break,
            other => {
                writeln!(out, "unknown command `{other}`: try check or quit")?;
                out.flush()?;
            }
        }
    }
    Ok(())
}
