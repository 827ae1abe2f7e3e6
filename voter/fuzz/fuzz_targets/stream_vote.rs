//! Fuzzes the stream vote with schedules decoded from the input.
//!
//! Input layout (missing bytes read as 0):
//! - byte 0: replica count N = 1 + b % 5
//! - byte 1: quorum: majority when even, else 1 + (b / 2) % N
//! - byte 2: max_unreleased: 1 MiB when < 128, else 1 + b % 32
//! - byte 3: max_lag_bytes: 1 MiB when < 128, else b % 32 (0 allowed)
//! - byte 4: vote timeout (low nibble) and lag timeout (high nibble), in steps of 100 ms
//! - then operations, one opcode byte each (kind = b % 8, replica = (b >> 3) % (N + 1), so
//!   index N is out of range), some followed by argument bytes:
//!   - 0..=2: push the next `len` (next byte % 16) bytes of the shared reference stream
//!   - 3: push `len` (next byte % 16) raw bytes taken from the input
//!   - 4: close
//!   - 5: fail
//!   - 6: tick after next byte x 10 ms; 255 ticks exactly at `next_deadline()`
//!   - 7: like 0..=2, with one byte (chosen by the next byte) corrupted
//!
//! Replicas pushing the reference stream agree, so quorums form and bytes get released; raw
//! and corrupted pushes make them disagree. After every operation the target checks that the
//! released bytes are a prefix of what at least `quorum` replicas pushed (before they closed
//! or failed), and that a finished output was closed there by `quorum` replicas.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use voter::{Status, StreamConfig, StreamVoter};

/// The stream honest replicas produce: fixed, non-periodic bytes from a small alphabet.
fn reference(at: usize) -> u8 {
    ((at as u32).wrapping_mul(2_654_435_761) >> 29) as u8
}

/// Reads the input one byte at a time; past the end it yields zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, len: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        head
    }
}

fn limit(b: u8, small: usize) -> usize {
    if b < 128 {
        1 << 20
    } else {
        small
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let replicas = 1 + input.byte() as usize % 5;
    let q = input.byte();
    let quorum = if q % 2 == 0 { replicas / 2 + 1 } else { 1 + (q as usize / 2) % replicas };
    let b = input.byte();
    let max_unreleased = limit(b, 1 + b as usize % 32);
    let b = input.byte();
    let max_lag_bytes = limit(b, b as usize % 32);
    let t = input.byte();
    let config = StreamConfig {
        replicas,
        quorum,
        vote_timeout: Duration::from_millis(100 * (t & 0x0f) as u64),
        lag_timeout: Duration::from_millis(100 * (t >> 4) as u64),
        max_unreleased,
        max_lag_bytes,
    };
    let mut voter = StreamVoter::new(config).expect("the decoded config is valid");

    // What each replica pushed in total (its position in its own stream), and what it pushed
    // while it was still open: its output as far as the voter may count it.
    let mut pushed = vec![0usize; replicas];
    let mut sent: Vec<Vec<u8>> = vec![Vec::new(); replicas];
    let mut stopped = vec![false; replicas];
    let mut closed = vec![false; replicas];
    let mut released: Vec<u8> = Vec::new();
    let mut now = Duration::ZERO;

    while !input.0.is_empty() {
        let op = input.byte();
        let replica = (op >> 3) as usize % (replicas + 1);
        let status_before = voter.status().clone();
        let released_before = released.len();
        match op % 8 {
            kind @ (0..=3 | 7) => {
                let len = input.byte() as usize % 16;
                let start = pushed.get(replica).copied().unwrap_or(0);
                let mut chunk: Vec<u8> =
                    if kind == 3 { input.bytes(len).to_vec() } else { (start..start + len).map(reference).collect() };
                if kind == 7 && !chunk.is_empty() {
                    let at = input.byte() as usize % chunk.len();
                    chunk[at] ^= 0x80;
                }
                if replica < replicas {
                    pushed[replica] += chunk.len();
                    if !stopped[replica] {
                        sent[replica].extend_from_slice(&chunk);
                    }
                }
                voter.push(replica, &chunk, now);
            }
            4 => {
                if replica < replicas && !stopped[replica] {
                    stopped[replica] = true;
                    closed[replica] = true;
                }
                voter.close(replica, now);
            }
            5 => {
                if replica < replicas {
                    stopped[replica] = true;
                }
                voter.fail(replica, now);
            }
            _ => {
                let step = input.byte();
                if step == 255 {
                    if let Some(deadline) = voter.next_deadline() {
                        now = now.max(deadline);
                    }
                } else {
                    now += Duration::from_millis(10 * step as u64);
                }
                voter.tick(now);
            }
        }

        while let Some(chunk) = voter.take_released() {
            assert!(!chunk.is_empty(), "empty release");
            released.extend_from_slice(&chunk);
        }
        for fault in voter.take_faults() {
            assert!(fault.replica < replicas, "fault names no replica: {fault}");
            assert!(!voter.is_live(fault.replica), "faulty replica still live: {fault}");
        }
        assert_eq!(voter.released(), released.len() as u64);

        // Safety: every released byte was produced, identically, by a quorum.
        let confirming = sent.iter().filter(|s| s.starts_with(&released)).count();
        assert!(
            confirming >= quorum,
            "released {released:?} is a prefix of only {confirming} replicas' output {sent:?}"
        );
        if *voter.status() == Status::Finished {
            let closed_at_end = (0..replicas).filter(|&i| closed[i] && sent[i] == released).count();
            assert!(closed_at_end >= quorum, "finished with {closed_at_end} replicas closed at the end");
        }
        // A decided vote stays decided and releases nothing more.
        if status_before != Status::Open {
            assert_eq!(*voter.status(), status_before);
            assert_eq!(released.len(), released_before);
        }
    }
});
