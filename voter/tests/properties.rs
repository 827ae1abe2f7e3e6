//! Property tests of the stream vote over generated schedules.
//!
//! Every replica's whole intended output is generated up front (honest copies of a reference
//! output, or corrupted / arbitrary variants). A schedule is a list of operations: push the next
//! chunk of replica i's output, close replica i, fail replica i, or let time pass and tick. The
//! simulation feeds the schedule to a [`StreamVoter`] and checks invariants after every step.
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use voter::{Fault, FaultKind, Status, StreamConfig, StreamVoter};

/// One step of a schedule.
#[derive(Clone, Debug)]
enum Op {
    /// Push the next `len` bytes of `replica`'s output (fewer or none once it is exhausted).
    Push { replica: usize, len: usize },
    /// The replica closes its output.
    Close { replica: usize },
    /// The replica's connection fails.
    Fail { replica: usize },
    /// Time passes; the voter is ticked.
    Tick { advance_ms: u64 },
}

/// How a replica's intended output is derived from the reference output.
#[derive(Clone, Debug)]
enum Variant {
    Honest,
    /// One byte replaced (position taken modulo the length).
    Flip {
        at: usize,
        byte: u8,
    },
    /// Only the first `len` bytes.
    Truncate {
        len: usize,
    },
    /// The reference followed by extra bytes.
    Extend {
        extra: Vec<u8>,
    },
    /// Unrelated bytes.
    Arbitrary {
        bytes: Vec<u8>,
    },
}

impl Variant {
    fn apply(&self, reference: &[u8]) -> Vec<u8> {
        match self {
            Variant::Honest => reference.to_vec(),
            Variant::Flip { at, byte } => {
                let mut out = reference.to_vec();
                if !out.is_empty() {
                    let at = at % out.len();
                    out[at] = *byte;
                }
                out
            }
            Variant::Truncate { len } => reference[..(*len).min(reference.len())].to_vec(),
            Variant::Extend { extra } => [reference, extra].concat(),
            Variant::Arbitrary { bytes } => bytes.clone(),
        }
    }
}

/// A small alphabet, so that corrupted and arbitrary outputs often agree with the reference (or
/// with each other) for a while: that is where votes are interesting.
fn small_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(0u8..4, 0..max_len)
}

fn variant() -> impl Strategy<Value = Variant> {
    prop_oneof![
        4 => Just(Variant::Honest),
        2 => (any::<usize>(), 0u8..4).prop_map(|(at, byte)| Variant::Flip { at, byte }),
        1 => (0usize..24).prop_map(|len| Variant::Truncate { len }),
        1 => small_bytes(6).prop_map(|extra| Variant::Extend { extra }),
        1 => small_bytes(30).prop_map(|bytes| Variant::Arbitrary { bytes }),
    ]
}

/// Operations on replicas `0..replica_bound` (indexes from `replicas` up are out of range).
fn op(replica_bound: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..replica_bound, 0usize..8).prop_map(|(replica, len)| Op::Push { replica, len }),
        2 => (0..replica_bound).prop_map(|replica| Op::Close { replica }),
        1 => (0..replica_bound).prop_map(|replica| Op::Fail { replica }),
        3 => (0u64..800).prop_map(|advance_ms| Op::Tick { advance_ms }),
    ]
}

fn config(replicas: usize, quorum: usize, max_unreleased: usize, max_lag_bytes: usize) -> StreamConfig {
    StreamConfig {
        replicas,
        quorum,
        vote_timeout: Duration::from_millis(1_000),
        lag_timeout: Duration::from_millis(1_500),
        max_unreleased,
        max_lag_bytes,
    }
}

/// Byte limits: mostly out of the way, sometimes small enough to trigger floods and lag.
fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(1usize << 20), 1 => 1usize..16]
}

/// What the voter reported after one step; compared across runs for determinism.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Observation {
    released: Vec<u8>,
    faults: Vec<Fault>,
    status: Status,
    next_deadline: Option<Duration>,
}

/// A voter driven by a schedule, with the simulated replicas' side of the story.
struct Sim {
    voter: StreamVoter,
    quorum: usize,
    outputs: Vec<Vec<u8>>,
    /// How far each replica has got in its intended output.
    cursor: Vec<usize>,
    /// What each replica pushed before it closed or failed: what it actually produced.
    sent: Vec<Vec<u8>>,
    closed: Vec<bool>,
    stopped: Vec<bool>,
    now: Duration,
    released: Vec<u8>,
    faults: Vec<Fault>,
}

impl Sim {
    fn new(config: StreamConfig, outputs: Vec<Vec<u8>>) -> Self {
        let n = outputs.len();
        assert_eq!(n, config.replicas);
        Sim {
            quorum: config.quorum,
            voter: StreamVoter::new(config).expect("valid config"),
            outputs,
            cursor: vec![0; n],
            sent: vec![Vec::new(); n],
            closed: vec![false; n],
            stopped: vec![false; n],
            now: Duration::ZERO,
            released: Vec::new(),
            faults: Vec::new(),
        }
    }

    fn remaining(&self, replica: usize) -> usize {
        self.outputs[replica].len() - self.cursor[replica]
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Push { replica, len } => {
                if replica < self.outputs.len() {
                    let start = self.cursor[replica];
                    let end = (start + len).min(self.outputs[replica].len());
                    self.cursor[replica] = end;
                    let chunk = &self.outputs[replica][start..end];
                    // Bytes pushed after a close or a failure are not part of what the replica
                    // produced (the voter must ignore them).
                    if !self.stopped[replica] {
                        self.sent[replica].extend_from_slice(chunk);
                    }
                    self.voter.push(replica, chunk, self.now);
                } else {
                    self.voter.push(replica, b"out of range", self.now);
                }
            }
            Op::Close { replica } => {
                if replica < self.outputs.len() && !self.stopped[replica] {
                    self.closed[replica] = true;
                    self.stopped[replica] = true;
                }
                self.voter.close(replica, self.now);
            }
            Op::Fail { replica } => {
                if let Some(stopped) = self.stopped.get_mut(replica) {
                    *stopped = true;
                }
                self.voter.fail(replica, self.now);
            }
            Op::Tick { advance_ms } => {
                self.now += Duration::from_millis(advance_ms);
                self.voter.tick(self.now);
            }
        }
    }

    /// Applies `op`, collects what the voter reported and checks the invariants.
    fn step(&mut self, op: &Op) -> Result<Observation, TestCaseError> {
        let before = self.observe();
        let settled_before = self.voter.settled();
        let deadline = self.voter.next_deadline();
        self.apply(op);
        let released_before = self.released.len();
        let faults_before = self.faults.len();
        while let Some(chunk) = self.voter.take_released() {
            prop_assert!(!chunk.is_empty());
            self.released.extend_from_slice(&chunk);
        }
        let new_faults = self.voter.take_faults();
        self.faults.extend(new_faults.iter().cloned());
        let after = self.observe();

        self.check_safety()?;
        self.check_faults(&new_faults, released_before)?;
        prop_assert_eq!(self.voter.released(), self.released.len() as u64);
        if before.status != Status::Open {
            // A decided vote never changes again: nothing more is released.
            prop_assert_eq!(&after.status, &before.status);
            prop_assert_eq!(self.released.len(), released_before);
            if matches!(before.status, Status::Undecidable(_)) || settled_before {
                prop_assert_eq!(self.faults.len(), faults_before);
                prop_assert_eq!(after.next_deadline, None);
            }
            // After the end, only lanes that had not reached it can still be found faulty.
            for fault in &new_faults {
                let r = fault.replica;
                prop_assert!(!(self.closed[r] && self.sent[r] == self.released), "blamed a lane that finished");
            }
        }
        if self.voter.settled() {
            prop_assert_eq!(after.next_deadline, None);
        }
        if let Op::Tick { .. } = op {
            // `next_deadline` is exact: ticking before it changes nothing, ticking at or
            // after it changes something.
            let due = deadline.is_some_and(|d| self.now >= d);
            let changed =
                after.status != before.status || self.released.len() != released_before || !new_faults.is_empty();
            prop_assert_eq!(changed, due, "deadline {:?}, now {:?}", deadline, self.now);
        }
        Ok(after)
    }

    fn observe(&self) -> Observation {
        Observation {
            released: self.released.clone(),
            faults: self.faults.clone(),
            status: self.voter.status().clone(),
            next_deadline: self.voter.next_deadline(),
        }
    }

    /// The released bytes are a prefix of what at least `quorum` replicas produced, and the
    /// output is finished only if `quorum` replicas closed exactly there.
    fn check_safety(&self) -> Result<(), TestCaseError> {
        let confirming = self.sent.iter().filter(|sent| sent.starts_with(&self.released)).count();
        prop_assert!(
            confirming >= self.quorum,
            "released {:?} is a prefix of only {} replicas' output: {:?}",
            self.released,
            confirming,
            self.sent
        );
        if *self.voter.status() == Status::Finished {
            let closed_at_end =
                (0..self.sent.len()).filter(|&i| self.closed[i] && self.sent[i] == self.released).count();
            prop_assert!(closed_at_end >= self.quorum, "finished with only {} closed at the end", closed_at_end);
        }
        Ok(())
    }

    /// Every fault names a real replica once, and blames it for something it really did.
    fn check_faults(&self, new_faults: &[Fault], released_before: usize) -> Result<(), TestCaseError> {
        for fault in new_faults {
            let r = fault.replica;
            prop_assert!(r < self.sent.len());
            prop_assert_eq!(self.faults.iter().filter(|f| f.replica == r).count(), 1, "one fault per replica");
            prop_assert!(!self.voter.is_live(r));
            prop_assert_eq!(fault.at, self.now);
            let offset = fault.offset as usize;
            let sent = &self.sent[r];
            match fault.kind {
                FaultKind::Diverged { expected, observed } => {
                    prop_assert_ne!(expected, observed);
                    // It agreed with the released output up to the offset, and differs there (or
                    // has bytes past the released end that no quorum confirmed).
                    prop_assert!(offset <= self.released.len());
                    prop_assert_eq!(&sent[..offset], &self.released[..offset]);
                    match self.released.get(offset) {
                        Some(want) => prop_assert_ne!(sent.get(offset), Some(want)),
                        None => prop_assert!(sent.len() > offset),
                    }
                }
                FaultKind::ClosedEarly => {
                    prop_assert!(self.closed[r]);
                    prop_assert_eq!(sent.len(), offset);
                    prop_assert!(offset < self.released.len());
                    prop_assert!(self.released.starts_with(sent));
                }
                FaultKind::Late { behind } => {
                    // Behind the released output, or (after the end) not closed at it.
                    prop_assert!(offset <= self.released.len());
                    prop_assert_eq!(offset as u64 + behind, self.released.len() as u64);
                }
                FaultKind::Crashed => {
                    prop_assert!(offset <= released_before.max(self.released.len()));
                }
                FaultKind::Flooded { unreleased } => {
                    prop_assert!(unreleased >= 1);
                    prop_assert_eq!(offset, self.released.len());
                }
            }
        }
        Ok(())
    }
}

/// Runs a whole schedule, checking the invariants after every step; returns what was observed.
fn run(config: &StreamConfig, outputs: &[Vec<u8>], ops: &[Op]) -> Result<Vec<Observation>, TestCaseError> {
    let mut sim = Sim::new(config.clone(), outputs.to_vec());
    ops.iter().map(|op| sim.step(op)).collect()
}

/// A voter config and the replicas' outputs, for N in 1..=5 and any quorum (majority half the
/// time), plus a schedule touching replicas up to two past the last (out of range).
fn scenario() -> impl Strategy<Value = (StreamConfig, Vec<Vec<u8>>, Vec<Op>)> {
    (1usize..=5)
        .prop_flat_map(|n| {
            let quorum = prop_oneof![Just(n / 2 + 1), 1..=n];
            (Just(n), quorum, limit(), limit(), small_bytes(24), vec(variant(), n), vec(op(n + 2), 0..150))
        })
        .prop_map(|(n, quorum, max_unreleased, max_lag_bytes, reference, variants, ops)| {
            let outputs = variants.iter().map(|v| v.apply(&reference)).collect();
            (config(n, quorum, max_unreleased, max_lag_bytes), outputs, ops)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Safety (and no panics): whatever the replicas do, what is released is a prefix of what
    /// at least `quorum` of them produced; faults blame replicas for what they did.
    #[test]
    fn released_output_is_confirmed_by_a_quorum((config, outputs, ops) in scenario()) {
        run(&config, &outputs, &ops)?;
    }

    /// Determinism: the same schedule gives the same releases, faults, status and deadlines.
    #[test]
    fn same_schedule_same_decisions((config, outputs, ops) in scenario()) {
        let first = run(&config, &outputs, &ops)?;
        let second = run(&config, &outputs, &ops)?;
        prop_assert_eq!(first, second);
    }
}

/// One operation of the three-replica schedule with one faulty replica. Replica roles are
/// resolved when the schedule runs: `Lane(k)` is the k-th lane in (honest, honest, faulty).
#[derive(Clone, Debug)]
enum MixedOp {
    Push {
        lane: usize,
        len: usize,
    },
    Close {
        lane: usize,
    },
    /// Only the faulty replica fails: an honest replica that crashes is not honest.
    FailFaulty,
    /// Time passes, but never as far as a timeout (see the property).
    Tick {
        advance_ms: u64,
    },
}

fn mixed_op() -> impl Strategy<Value = MixedOp> {
    prop_oneof![
        10 => (0usize..3, 1usize..12).prop_map(|(lane, len)| MixedOp::Push { lane, len }),
        2 => (0usize..3).prop_map(|lane| MixedOp::Close { lane }),
        1 => Just(MixedOp::FailFaulty),
        2 => (0u64..20).prop_map(|advance_ms| MixedOp::Tick { advance_ms }),
    ]
}

/// The faulty replica's intended output: anything, including a corrupted reference.
fn faulty_output(reference: &[u8]) -> impl Strategy<Value = Vec<u8>> {
    let reference = reference.to_vec();
    prop_oneof![small_bytes(80), variant().prop_map(move |v| v.apply(&reference)),]
}

/// Runs the three-replica schedule: lanes 0 and 1 of `roles` are honest (they send the reference
/// output, in the schedule's chunks, and close only once they sent all of it), lane 2 is faulty.
/// With `faulty_silent`, the faulty replica's operations are dropped. After the schedule the
/// honest replicas send what they still have and close. Returns the released bytes, checking
/// at every step that they are a prefix of the reference.
fn run_honest_majority(
    roles: [usize; 3],
    reference: &[u8],
    faulty: &[u8],
    ops: &[MixedOp],
    faulty_silent: bool,
) -> Result<(Vec<u8>, Status, Vec<Fault>), TestCaseError> {
    // Timeouts far beyond the time the schedule can advance (150 ops x 20 ms), so that only
    // disagreement can decide anything.
    let config = StreamConfig {
        vote_timeout: Duration::from_secs(10),
        lag_timeout: Duration::from_secs(10),
        ..StreamConfig::majority(3)
    };
    let mut outputs = vec![Vec::new(); 3];
    outputs[roles[0]] = reference.to_vec();
    outputs[roles[1]] = reference.to_vec();
    outputs[roles[2]] = faulty.to_vec();
    let faulty_replica = roles[2];
    let mut sim = Sim::new(config, outputs);

    for op in ops {
        let op = match *op {
            MixedOp::Push { lane, .. } | MixedOp::Close { lane } if faulty_silent && lane == 2 => continue,
            MixedOp::FailFaulty if faulty_silent => continue,
            MixedOp::Push { lane, len } => Op::Push { replica: roles[lane], len },
            // An honest replica closes only at the end of its output.
            MixedOp::Close { lane } if lane < 2 && sim.remaining(roles[lane]) > 0 => continue,
            MixedOp::Close { lane } => Op::Close { replica: roles[lane] },
            MixedOp::FailFaulty => Op::Fail { replica: faulty_replica },
            MixedOp::Tick { advance_ms } => Op::Tick { advance_ms },
        };
        sim.step(&op)?;
        prop_assert!(reference.starts_with(&sim.released), "released {:?}", sim.released);
        prop_assert!(!matches!(sim.voter.status(), Status::Undecidable(_)), "{:?}", sim.voter.status());
    }
    // The honest replicas deliver the rest of their output and close.
    for &replica in &roles[..2] {
        let len = sim.remaining(replica);
        sim.step(&Op::Push { replica, len })?;
        if !sim.closed[replica] {
            sim.step(&Op::Close { replica })?;
        }
        prop_assert!(reference.starts_with(&sim.released), "released {:?}", sim.released);
    }
    prop_assert!(sim.now < Duration::from_secs(10));
    Ok((sim.released, sim.voter.status().clone(), sim.faults))
}

fn roles() -> impl Strategy<Value = [usize; 3]> {
    prop_oneof![Just([0, 1, 2]), Just([0, 2, 1]), Just([1, 2, 0]), Just([1, 0, 2]), Just([2, 0, 1]), Just([2, 1, 0]),]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// N=3, q=2 with two honest replicas and one arbitrary one: as long as no timeout expires
    /// (and outputs stay under the byte limits), the honest pair always gets the reference
    /// output out whole, finishes, and is never blamed; what the faulty replica does changes
    /// nothing that is released (at every step the release is a prefix of the reference, and
    /// the end result is the same as with the faulty replica silent).
    #[test]
    fn honest_majority_releases_exactly_the_reference(
        roles in roles(),
        (reference, faulty) in small_bytes(60).prop_flat_map(|r| (Just(r.clone()), faulty_output(&r))),
        ops in vec(mixed_op(), 0..150),
    ) {
        let (released, status, faults) = run_honest_majority(roles, &reference, &faulty, &ops, false)?;
        prop_assert_eq!(&released, &reference);
        prop_assert_eq!(status, Status::Finished);
        prop_assert!(faults.iter().all(|f| f.replica == roles[2]), "honest replica blamed: {:?}", faults);

        let (released_without, status_without, faults_without) =
            run_honest_majority(roles, &reference, &faulty, &ops, true)?;
        prop_assert_eq!(released_without, released);
        prop_assert_eq!(status_without, Status::Finished);
        prop_assert!(faults_without.iter().all(|f| f.replica == roles[2]));
    }
}

/// Raw calls with arbitrary arguments, for robustness: no call sequence panics.
#[derive(Clone, Debug)]
enum RawOp {
    Push { replica: usize, data: Vec<u8>, at_ms: u64 },
    Close { replica: usize, at_ms: u64 },
    Fail { replica: usize, at_ms: u64 },
    Exclude { replica: usize, at_ms: u64 },
    Tick { at_ms: u64 },
    TickAtDeadline,
}

fn raw_op() -> impl Strategy<Value = RawOp> {
    let replica = prop_oneof![4 => 0usize..6, 1 => any::<usize>()];
    // Times jump around, backwards too: the voter must not do arithmetic that assumes order.
    let at_ms = 0u64..10_000;
    prop_oneof![
        8 => (replica.clone(), small_bytes(12), at_ms.clone())
            .prop_map(|(replica, data, at_ms)| RawOp::Push { replica, data, at_ms }),
        2 => (replica.clone(), at_ms.clone()).prop_map(|(replica, at_ms)| RawOp::Close { replica, at_ms }),
        1 => (replica.clone(), at_ms.clone()).prop_map(|(replica, at_ms)| RawOp::Fail { replica, at_ms }),
        1 => (replica, at_ms.clone()).prop_map(|(replica, at_ms)| RawOp::Exclude { replica, at_ms }),
        2 => at_ms.prop_map(|at_ms| RawOp::Tick { at_ms }),
        1 => Just(RawOp::TickAtDeadline),
    ]
}

fn timeout() -> impl Strategy<Value = Duration> {
    prop_oneof![(0u64..3_000).prop_map(Duration::from_millis), Just(Duration::ZERO), Just(Duration::MAX),]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_call_sequence_panics(
        (replicas, quorum) in (1usize..=5).prop_flat_map(|n| (Just(n), 1..=n)),
        vote_timeout in timeout(),
        lag_timeout in timeout(),
        max_unreleased in 1usize..64,
        max_lag_bytes in 0usize..64,
        ops in vec(raw_op(), 0..120),
    ) {
        let config = StreamConfig { replicas, quorum, vote_timeout, lag_timeout, max_unreleased, max_lag_bytes };
        let mut voter = StreamVoter::new(config).expect("valid config");
        let ms = Duration::from_millis;
        for op in ops {
            match op {
                RawOp::Push { replica, data, at_ms } => voter.push(replica, &data, ms(at_ms)),
                RawOp::Close { replica, at_ms } => voter.close(replica, ms(at_ms)),
                RawOp::Fail { replica, at_ms } => voter.fail(replica, ms(at_ms)),
                RawOp::Exclude { replica, at_ms } => voter.exclude_for(replica, FaultKind::Crashed, ms(at_ms)),
                RawOp::Tick { at_ms } => voter.tick(ms(at_ms)),
                RawOp::TickAtDeadline => {
                    if let Some(deadline) = voter.next_deadline() {
                        voter.tick(deadline);
                    }
                }
            }
            while voter.take_released().is_some() {}
            for fault in voter.take_faults() {
                let _ = fault.to_string();
            }
            let _ = (voter.live_count(), voter.unreleased(3), voter.is_live(7), voter.released());
        }
    }
}
