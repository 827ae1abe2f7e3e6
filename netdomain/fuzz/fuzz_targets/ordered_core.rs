//! Fuzzes the ordered core on the deterministic simulation (`netdomain::ordered::sim`) with
//! schedules decoded from the input: the mix of the property test in
//! `netdomain/tests/ordered_core.rs` (requests, deliveries, crashes, restarts, wrong answers,
//! hangs, time after honest replicas answered; no `Wait`).
//!
//! Input layout (missing bytes read as 0):
//! - byte 0: replica count N = 3 + b % 3 (the sim keeps misbehaviour to one replica at a time,
//!   which a quorum of three or more masks)
//! - byte 1: which replicas are address replicas (bit i for replica i)
//! - byte 2: replay log size: 1 MiB when < 128, else 100 + 8 x (b - 128) bytes (small logs
//!   overflow, and rebuilding takes a checkpoint)
//! - then at most `MAX_OPS` operations, one opcode byte each (kind = b % 19, replica =
//!   (b / 19) % N), some followed by argument bytes:
//!   - 0..=5: `Order` (next byte: count 1 + b % 11; next four bytes: the seed, little-endian)
//!   - 6..=9: `Deliver` (next byte: count 1 + b % 19)
//!   - 10, 11: `DeliverAll`; 12: `Crash`; 13, 14: `Restart`; 15: `GoWrong`; 16: `Hang`
//!   - 17, 18: `Tick` (next two bytes, little-endian: ms, modulo 800)
//!
//! After every step the simulation's invariants must hold (safety: only a quorum's answer,
//! one of them honest, is released; order: each request answered once, in order; blame: only
//! replicas that misbehaved are blamed), and after `Sim::heal` its convergence ones too
//! (every request answered, every replica votes with the state its writes give, no
//! acknowledged write lost). A failure prints the schedule as a `Vec<Op>` to replay in a test.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netdomain::ordered::sim::{config, Op, Sim};

/// Longer schedules find little more and slow every execution down.
const MAX_OPS: usize = 400;

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

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
}

fn decode(input: &mut Input, replicas: usize) -> Op {
    let b = input.byte();
    let replica = (b / 19) as usize % replicas;
    match b % 19 {
        0..=5 => {
            let count = 1 + input.byte() % 11;
            Op::Order { count, seed: input.u32() }
        }
        6..=9 => Op::Deliver { replica, count: 1 + input.byte() % 19 },
        10 | 11 => Op::DeliverAll,
        12 => Op::Crash { replica },
        13 | 14 => Op::Restart { replica },
        15 => Op::GoWrong { replica },
        16 => Op::Hang { replica },
        // A reload: one replica more, or one fewer.
        18 if (b / 19) % 2 == 0 => Op::AddReplica,
        18 => Op::RemoveReplica { replica },
        _ => Op::Tick { ms: input.u16() % 800 },
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let replicas = 3 + input.byte() as usize % 3;
    let flags = input.byte();
    let address: Vec<bool> = (0..replicas).map(|i| flags & (1 << i) != 0).collect();
    let b = input.byte();
    let log_max_bytes = if b < 128 { 1 << 20 } else { 100 + 8 * (b as usize - 128) };

    let mut sim = Sim::new(config(&address, log_max_bytes));
    let mut ops = Vec::new();
    while !input.0.is_empty() && ops.len() < MAX_OPS {
        let op = decode(&mut input, replicas);
        ops.push(op.clone());
        let violations = sim.step(&op);
        assert!(
            violations.is_empty(),
            "after step {} ({op:?}): {violations:#?}\naddress = {address:?}, log_max_bytes = {log_max_bytes}\nops = {ops:?}",
            ops.len() - 1,
        );
    }
    let violations = sim.heal();
    assert!(
        violations.is_empty(),
        "after healing: {violations:#?}\naddress = {address:?}, log_max_bytes = {log_max_bytes}\nops = {ops:?}"
    );
});
