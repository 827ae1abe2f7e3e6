//! Deterministic scenarios of the stream vote.
//!
//! Each test drives a [`StreamVoter`] through a fixed sequence of pushes, closes, failures and
//! ticks (time is a plain `Duration`) and checks exactly what was released, which faults were
//! reported (replica, offset, time, kind, digests) and the final status.
use std::time::Duration;

use voter::fault::{digest, DIGEST_SPAN};
use voter::stream::MAX_REPLICAS;
use voter::{ConfigError, Fault, FaultKind, Status, StreamConfig, StreamVoter, Undecidable};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const T0: Duration = Duration::ZERO;

/// A config with round numbers, so deadlines in the tests are easy to read.
fn config(replicas: usize, quorum: usize) -> StreamConfig {
    StreamConfig {
        replicas,
        quorum,
        vote_timeout: ms(2_000),
        lag_timeout: ms(3_000),
        max_unreleased: 1 << 20,
        max_lag_bytes: 1 << 20,
    }
}

/// A voter plus everything it has handed out so far.
struct Run {
    voter: StreamVoter,
    released: Vec<u8>,
    faults: Vec<Fault>,
}

impl Run {
    fn new(config: StreamConfig) -> Self {
        Run { voter: StreamVoter::new(config).expect("valid config"), released: Vec::new(), faults: Vec::new() }
    }

    fn push(&mut self, replica: usize, data: &[u8], now: Duration) -> &mut Self {
        self.voter.push(replica, data, now);
        self.collect()
    }

    fn close(&mut self, replica: usize, now: Duration) -> &mut Self {
        self.voter.close(replica, now);
        self.collect()
    }

    fn fail(&mut self, replica: usize, now: Duration) -> &mut Self {
        self.voter.fail(replica, now);
        self.collect()
    }

    fn tick(&mut self, now: Duration) -> &mut Self {
        self.voter.tick(now);
        self.collect()
    }

    fn collect(&mut self) -> &mut Self {
        while let Some(chunk) = self.voter.take_released() {
            assert!(!chunk.is_empty(), "released chunks are never empty");
            self.released.extend_from_slice(&chunk);
        }
        self.faults.extend(self.voter.take_faults());
        assert_eq!(self.voter.released(), self.released.len() as u64, "released() counts what was handed out");
        self
    }

    fn status(&self) -> &Status {
        self.voter.status()
    }
}

fn fault(replica: usize, offset: u64, at: Duration, kind: FaultKind) -> Fault {
    Fault { replica, offset, at, kind }
}

fn diverged(expected: &[u8], observed: &[u8]) -> FaultKind {
    FaultKind::Diverged { expected: digest(expected), observed: digest(observed) }
}

/// 300 bytes that are not periodic, so a misplaced comparison cannot pass by accident.
fn reference_output() -> Vec<u8> {
    (0..300u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

/// Pushes `data` from `replica` in pieces of the given sizes (the last piece takes the rest).
fn push_split(run: &mut Run, replica: usize, data: &[u8], sizes: &[usize], now: Duration) {
    let mut rest = data;
    for &size in sizes {
        let (head, tail) = rest.split_at(size.min(rest.len()));
        run.push(replica, head, now);
        rest = tail;
    }
    run.push(replica, rest, now);
}

#[test]
fn three_honest_replicas_with_different_splits_and_orders() {
    let output = reference_output();
    let mut run = Run::new(config(3, 2));

    // Lane 0 is ahead: nothing is released while only one lane has spoken.
    run.push(0, &output[..100], ms(1));
    assert!(run.released.is_empty());
    // Lane 2 arrives second, in small pieces; each piece confirms as much as it covers.
    run.push(2, &output[..7], ms(2));
    assert_eq!(run.released, &output[..7]);
    // Lane 2 goes past lane 0: only what both produced (100 bytes) is released.
    push_split(&mut run, 2, &output[7..150], &[1, 1, 30, 2], ms(3));
    assert_eq!(run.released, &output[..100]);
    // Lane 1 starts late, behind the released offset, catches up in odd splits and confirms
    // lane 2's extra 50 bytes.
    push_split(&mut run, 1, &output, &[13, 0, 200, 1], ms(4));
    assert_eq!(run.released, &output[..150]);
    // Lane 0 is now behind; it catches up and confirms the rest with lane 1.
    run.push(0, &output[100..], ms(5));
    assert_eq!(run.released, &output[..], "every byte is released exactly once");
    // Lane 2 is behind too and delivers its last bytes after the release.
    run.push(2, &output[150..], ms(5));
    assert_eq!(run.released, &output[..]);

    run.close(1, ms(6));
    assert_eq!(run.status(), &Status::Open, "one close is not a quorum");
    run.close(2, ms(7));
    assert_eq!(run.status(), &Status::Finished);
    assert!(run.faults.is_empty(), "{:?}", run.faults);
    assert_eq!(run.voter.live_count(), 3);
    // Lane 0 has not closed yet: it is still expected to, within the lag timeout.
    assert!(!run.voter.settled());
    assert_eq!(run.voter.next_deadline(), Some(ms(3_007)));
    run.close(0, ms(8));
    assert!(run.voter.settled());
    assert_eq!(run.voter.next_deadline(), None);

    // Once settled, nothing changes any more.
    run.push(0, b"more", ms(9)).tick(ms(60_000));
    assert_eq!(run.released, &output[..]);
    assert!(run.faults.is_empty());
}

#[test]
fn after_the_end_a_slower_replica_is_still_checked() {
    let mut run = Run::new(config(3, 2));
    run.push(0, b"hello", ms(1)).push(1, b"hello", ms(1)).close(0, ms(2)).close(1, ms(2));
    assert_eq!(run.status(), &Status::Finished);
    assert!(!run.voter.settled(), "lane 2 has not answered yet");
    // Lane 2 answers after the client already has everything: its wrong byte is still found.
    run.push(2, b"helLo", ms(3));
    assert_eq!(run.faults, vec![fault(2, 3, ms(3), diverged(b"lo", b"Lo"))]);
    assert!(run.voter.settled());
    assert_eq!(run.released, b"hello");
}

#[test]
fn after_the_end_extra_output_is_diverged_and_no_close_is_late() {
    let mut run = Run::new(config(3, 2));
    run.push(0, b"hi", ms(1)).push(1, b"hi", ms(1)).close(0, ms(1)).close(1, ms(1));
    run.push(2, b"hi!", ms(2));
    assert_eq!(run.faults, vec![fault(2, 2, ms(2), diverged(b"", b"!"))]);

    let mut run = Run::new(config(3, 2));
    run.push(0, b"hi", ms(1)).push(1, b"hi", ms(1)).close(0, ms(1)).close(1, ms(1));
    run.push(2, b"hi", ms(2));
    assert_eq!(run.voter.next_deadline(), Some(ms(3_001)));
    run.tick(ms(3_000));
    assert!(run.faults.is_empty());
    run.tick(ms(3_001));
    assert_eq!(run.faults, vec![fault(2, 2, ms(3_001), FaultKind::Late { behind: 0 })]);
    assert!(run.voter.settled());
}

#[test]
fn chunk_arrival_order_does_not_change_the_result() {
    let output = reference_output();
    let splits: [&[usize]; 3] = [&[1, 299], &[150, 150], &[10, 20, 30, 40, 50, 60, 70, 20]];
    // Every order of the three lanes, with each lane using its own split.
    let orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    for order in orders {
        let mut run = Run::new(config(3, 2));
        // Round-robin the pieces of the lanes in `order`.
        let mut cursors = [0usize; 3];
        let mut piece = [0usize; 3];
        loop {
            let mut progressed = false;
            for &lane in &order {
                if let Some(&size) = splits[lane].get(piece[lane]) {
                    run.push(lane, &output[cursors[lane]..cursors[lane] + size], ms(1));
                    cursors[lane] += size;
                    piece[lane] += 1;
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        for lane in order {
            run.close(lane, ms(2));
        }
        assert_eq!(run.released, output, "order {order:?}");
        assert!(run.faults.is_empty(), "order {order:?}: {:?}", run.faults);
        assert_eq!(run.status(), &Status::Finished);
    }
}

#[test]
fn replica_corrupting_byte_k_is_diverged_at_k() {
    const K: usize = 137;
    let output = reference_output();
    let mut corrupt = output.clone();
    corrupt[K] ^= 0x40;

    let mut run = Run::new(config(3, 2));
    run.push(0, &output, ms(1));
    // The corrupt lane agrees with lane 0 up to K: exactly those bytes are confirmed.
    run.push(2, &corrupt, ms(2));
    assert_eq!(run.released, &output[..K]);
    assert!(run.faults.is_empty());
    // Lane 1 confirms the rest; lane 2 is out from K.
    run.push(1, &output, ms(3));
    assert_eq!(run.released, output);
    assert_eq!(run.faults, vec![fault(2, K as u64, ms(3), diverged(&output[K..], &corrupt[K..]))]);
    let FaultKind::Diverged { expected, observed } = &run.faults[0].kind else { unreachable!() };
    assert_ne!(expected, observed);
    assert!(!run.voter.is_live(2));

    run.close(0, ms(4)).close(1, ms(4));
    assert_eq!(run.status(), &Status::Finished);
    assert_eq!(run.faults.len(), 1);
}

#[test]
fn diverged_digests_cover_at_most_digest_span() {
    let output: Vec<u8> = (0..3 * DIGEST_SPAN).map(|i| (i % 251) as u8).collect();
    let mut corrupt = output.clone();
    corrupt[10] = 0xff;
    let mut run = Run::new(config(3, 2));
    run.push(0, &output, T0).push(1, &output, T0).push(2, &corrupt, T0);
    assert_eq!(run.released, output);
    // Lane 2 was behind (empty) when 0 and 1 released; its bytes are checked against the tail.
    assert_eq!(
        run.faults,
        vec![fault(2, 10, T0, diverged(&output[10..10 + DIGEST_SPAN], &corrupt[10..10 + DIGEST_SPAN]))]
    );
}

#[test]
fn replica_behind_then_diverging_against_released_tail() {
    let output = reference_output();
    let mut run = Run::new(config(3, 2));
    run.push(0, &output, ms(1)).push(1, &output, ms(1));
    assert_eq!(run.released, output);

    // Lane 2 is behind: its first 40 bytes match the released output.
    run.push(2, &output[..40], ms(2));
    assert!(run.faults.is_empty());
    // Its next piece differs at offset 52 (the 13th byte of the piece).
    let mut piece = output[40..90].to_vec();
    piece[12] = piece[12].wrapping_add(1);
    run.push(2, &piece, ms(3));
    assert_eq!(run.faults, vec![fault(2, 52, ms(3), diverged(&output[52..], &piece[12..]))]);
    assert_eq!(run.released, output, "a lane that is behind never changes the released output");
    assert_eq!(run.status(), &Status::Open);
}

#[test]
fn replica_behind_catching_up_is_not_a_fault() {
    let output = reference_output();
    let mut run = Run::new(config(3, 2));
    run.push(0, &output[..120], ms(1)).push(1, &output[..100], ms(1));
    assert_eq!(run.released, &output[..100]);

    // Lane 2 catches up byte by byte, then goes past the released offset; its extra bytes
    // agree with lane 0's pending ones and are released with them.
    for (i, byte) in output[..110].iter().enumerate() {
        run.push(2, std::slice::from_ref(byte), ms(2 + i as u64));
    }
    assert_eq!(run.released, &output[..110]);
    assert_eq!(run.voter.unreleased(0), 10);
    assert_eq!(run.voter.unreleased(2), 0);

    run.push(1, &output[100..], ms(200)).push(2, &output[110..], ms(201)).push(0, &output[120..], ms(202));
    run.close(0, ms(203)).close(1, ms(203)).close(2, ms(203));
    assert_eq!(run.released, output);
    assert!(run.faults.is_empty(), "{:?}", run.faults);
    assert_eq!(run.status(), &Status::Finished);
}

#[test]
fn behind_replica_catching_up_adds_to_the_vote() {
    // Lanes 0 and 1 released "abcdef"; lane 0 holds "ghi" that nobody confirmed. Lane 2 was
    // behind; when it catches up and adds "gh", those bytes are confirmed by lanes 0 and 2.
    let mut run = Run::new(config(3, 2));
    run.push(0, b"abcdefghi", T0).push(1, b"abcdef", T0);
    assert_eq!(run.released, b"abcdef");
    run.push(2, b"abcdefgh", ms(1));
    assert_eq!(run.released, b"abcdefgh");
    assert!(run.faults.is_empty());
}

#[test]
fn replica_closing_before_the_released_end_is_closed_early() {
    let output = reference_output();
    // Closing while already behind the released offset.
    let mut run = Run::new(config(3, 2));
    run.push(0, &output, ms(1)).push(1, &output, ms(1));
    run.push(2, &output[..5], ms(2)).close(2, ms(3));
    assert_eq!(run.faults, vec![fault(2, 5, ms(3), FaultKind::ClosedEarly)]);
    run.close(0, ms(4)).close(1, ms(4));
    assert_eq!(run.status(), &Status::Finished);
    assert_eq!(run.released, output);

    // Closing first, then the quorum releasing past the close.
    let mut run = Run::new(config(3, 2));
    run.push(2, &output[..5], ms(1)).close(2, ms(1));
    run.push(0, &output[..10], ms(2));
    assert_eq!(run.released, &output[..5], "lanes 0 and 2 agree on the first 5 bytes");
    assert!(run.faults.is_empty());
    run.push(1, &output[..10], ms(3));
    assert_eq!(run.released, &output[..10]);
    assert_eq!(run.faults, vec![fault(2, 5, ms(3), FaultKind::ClosedEarly)]);
}

#[test]
fn failed_replica_is_crashed() {
    let output = reference_output();
    let mut run = Run::new(config(3, 2));
    run.push(0, &output[..50], ms(1)).push(1, &output[..50], ms(1)).push(2, &output[..20], ms(1));
    // Behind: the fault names how far it got.
    run.fail(2, ms(2));
    assert_eq!(run.faults, vec![fault(2, 20, ms(2), FaultKind::Crashed)]);
    // Ahead: the fault names the released offset (its extra bytes were never confirmed).
    run.push(0, &output[50..60], ms(3)).fail(0, ms(4));
    assert_eq!(run.faults[1], fault(0, 50, ms(4), FaultKind::Crashed));
    // Two of three lanes gone: a quorum of 2 is impossible.
    assert_eq!(run.status(), &Status::Undecidable(Undecidable::NoQuorumPossible { offset: 50, live: 1 }));
    assert_eq!(run.released, &output[..50]);
    // A second failure of an excluded lane is not reported again.
    run.fail(2, ms(5));
    assert_eq!(run.faults.len(), 2);
}

#[test]
fn replica_behind_for_lag_timeout_is_late_on_tick() {
    let mut run = Run::new(config(3, 2));
    run.push(0, b"abc", ms(1000)).push(1, b"abc", ms(1000));
    assert_eq!(run.released, b"abc");
    // Lane 2 is behind since 1s; the lag timeout is 3s.
    assert_eq!(run.voter.next_deadline(), Some(ms(4000)));
    run.tick(ms(3999));
    assert!(run.faults.is_empty());
    run.push(2, b"a", ms(3500)).tick(ms(3999));
    assert!(run.faults.is_empty(), "partial progress does not reset the lag clock");
    run.tick(ms(4000));
    assert_eq!(run.faults, vec![fault(2, 1, ms(4000), FaultKind::Late { behind: 2 })]);
    assert_eq!(run.status(), &Status::Open);
    assert_eq!(run.voter.live_count(), 2);
    assert_eq!(run.voter.next_deadline(), None);
}

#[test]
fn a_replica_that_trails_but_keeps_up_is_not_late() {
    // Lane 2 is always one chunk behind the quorum, for longer than the lag timeout in all,
    // but never owes a byte released more than 1 s ago: it is slower, not late.
    let mut run = Run::new(config(3, 2));
    for k in 0..10u64 {
        let chunk = [b'a' + k as u8; 4];
        run.push(0, &chunk, ms(1000 * k)).push(1, &chunk, ms(1000 * k));
        if k > 0 {
            let previous = [b'a' + k as u8 - 1; 4];
            run.push(2, &previous, ms(1000 * k + 500));
        }
        // Its lag clock is the release time of the chunk it still owes.
        assert_eq!(run.voter.next_deadline(), Some(ms(1000 * k + 3000)));
        run.tick(ms(1000 * k + 999));
    }
    assert!(run.faults.is_empty(), "{:?}", run.faults);
    // Once it stops, the chunk it owes ages and it is late at that chunk's time + the timeout.
    run.tick(ms(9000 + 2999));
    assert!(run.faults.is_empty());
    run.tick(ms(9000 + 3000));
    assert_eq!(run.faults, vec![fault(2, 36, ms(12_000), FaultKind::Late { behind: 4 })]);
}

#[test]
fn caught_up_replica_is_not_late() {
    let mut run = Run::new(config(3, 2));
    run.push(0, b"abc", T0).push(1, b"abc", T0).push(2, b"abc", ms(2999));
    run.tick(ms(10_000));
    assert!(run.faults.is_empty());
    assert_eq!(run.voter.next_deadline(), None);
}

#[test]
fn vote_timeout_with_silent_quorum_excludes_the_minority_as_diverged() {
    let mut run = Run::new(config(3, 2));
    run.push(0, b"abc", T0).push(1, b"abc", T0).push(2, b"abc", T0);
    run.push(2, b"xyz", ms(1000));
    assert_eq!(run.voter.next_deadline(), Some(ms(3000)));
    run.tick(ms(2999));
    assert!(run.faults.is_empty());
    run.tick(ms(3000));
    assert_eq!(run.faults, vec![fault(2, 3, ms(3000), diverged(b"", b"xyz"))]);
    assert_eq!(run.status(), &Status::Open);
    run.close(0, ms(3001)).close(1, ms(3001));
    assert_eq!(run.status(), &Status::Finished);
    assert_eq!(run.released, b"abc");
}

#[test]
fn vote_timeout_with_silent_quorum_excludes_a_full_minority_as_flooded() {
    let mut config = config(3, 2);
    config.max_unreleased = 4;
    let mut run = Run::new(config);
    // Exactly at the limit is allowed on push, but sitting on a full buffer is a flood.
    run.push(2, b"wxyz", ms(10));
    assert!(run.faults.is_empty());
    run.tick(ms(2010));
    assert_eq!(run.faults, vec![fault(2, 0, ms(2010), FaultKind::Flooded { unreleased: 4 })]);
    assert_eq!(run.status(), &Status::Open);
}

#[test]
fn vote_timeout_without_silent_quorum_is_undecidable() {
    let mut run = Run::new(config(3, 2));
    run.push(0, b"ab", T0).push(1, b"ab", T0).push(2, b"ab", T0);
    // Lanes 1 and 2 disagree; lane 0 is silent and could side with either: still decidable.
    run.push(1, b"cd", ms(100)).push(2, b"ef", ms(100));
    assert_eq!(run.status(), &Status::Open);
    run.tick(ms(2100));
    assert_eq!(run.status(), &Status::Undecidable(Undecidable::VoteTimeout { offset: 2 }));
    assert!(run.faults.is_empty(), "nobody can be blamed: {:?}", run.faults);
    assert_eq!(run.voter.next_deadline(), None);
    // Lane 0 speaking now is too late: nothing more is released.
    run.push(0, b"cd", ms(2101));
    assert_eq!(run.released, b"ab");
}

#[test]
fn two_replicas_corrupting_differently_make_quorum_impossible() {
    let mut run = Run::new(config(3, 2));
    run.push(1, b"abXdef", T0).push(2, b"abYdef", T0);
    // The two faulty lanes agree on "ab", which is what the honest one will say too.
    assert_eq!(run.released, b"ab");
    assert_eq!(run.status(), &Status::Open, "the silent lane could still side with either");
    run.push(0, b"abcdef", ms(1));
    assert_eq!(run.status(), &Status::Undecidable(Undecidable::NoQuorumPossible { offset: 2, live: 3 }));
    assert_eq!(run.released, b"ab", "no byte that only one lane produced is released");
    assert!(run.faults.is_empty());
    run.push(1, b"def", ms(2)).close(0, ms(2)).close(1, ms(2));
    assert_eq!(run.released, b"ab");
}

#[test]
fn single_replica_passes_through() {
    let mut run = Run::new(config(1, 1));
    run.push(0, b"hello ", T0);
    assert_eq!(run.released, b"hello ");
    run.push(0, b"world", ms(1));
    assert_eq!(run.released, b"hello world");
    assert_eq!(run.voter.next_deadline(), None);
    run.close(0, ms(2));
    assert_eq!(run.status(), &Status::Finished);
    assert!(run.faults.is_empty());
}

#[test]
fn unanimity_waits_for_every_replica() {
    let mut run = Run::new(config(3, 3));
    run.push(0, b"abc", T0).push(1, b"abc", T0);
    assert!(run.released.is_empty());
    run.push(2, b"ab", T0);
    assert_eq!(run.released, b"ab");
    run.push(2, b"c", T0);
    assert_eq!(run.released, b"abc");
    run.close(0, T0).close(1, T0);
    assert_eq!(run.status(), &Status::Open);
    run.close(2, T0);
    assert_eq!(run.status(), &Status::Finished);
    assert!(run.faults.is_empty());

    // One dissenting lane makes unanimity impossible; nothing is released past the disagreement.
    let mut run = Run::new(config(3, 3));
    run.push(0, b"abc", T0).push(1, b"abc", T0).push(2, b"abd", T0);
    assert_eq!(run.released, b"ab");
    assert_eq!(run.status(), &Status::Undecidable(Undecidable::NoQuorumPossible { offset: 2, live: 3 }));
}

#[test]
fn extra_output_after_a_quorum_closed_is_diverged() {
    let mut run = Run::new(config(3, 2));
    run.push(0, b"abc", T0).push(2, b"abcd", T0);
    assert_eq!(run.released, b"abc");
    run.push(1, b"abc", ms(1));
    run.close(0, ms(2));
    assert_eq!(run.status(), &Status::Open);
    run.close(1, ms(3));
    assert_eq!(run.status(), &Status::Finished);
    assert_eq!(run.faults, vec![fault(2, 3, ms(3), diverged(b"", b"d"))]);
    assert_eq!(run.released, b"abc");
}

#[test]
fn closing_with_unconfirmed_output_is_not_an_end() {
    // A lane that closes with output nobody else has cannot help finish at the released offset.
    let mut run = Run::new(config(3, 2));
    run.push(0, b"abc", T0).push(1, b"abc", T0).push(2, b"abc", T0);
    run.push(2, b"d", T0).close(2, T0).close(0, T0);
    assert_eq!(run.status(), &Status::Open);
    run.close(1, T0);
    assert_eq!(run.status(), &Status::Finished);
    assert_eq!(run.faults, vec![fault(2, 3, T0, diverged(b"", b"d"))]);
}

#[test]
fn too_much_unreleased_output_is_flooded() {
    let mut config = config(3, 2);
    config.max_unreleased = 8;
    let mut run = Run::new(config);
    run.push(2, b"12345", ms(1));
    assert!(run.faults.is_empty());
    assert_eq!(run.voter.unreleased(2), 5);
    run.push(2, b"6789", ms(2));
    assert_eq!(run.faults, vec![fault(2, 0, ms(2), FaultKind::Flooded { unreleased: 9 })]);
    assert_eq!(run.voter.unreleased(2), 0);
    assert!(!run.voter.is_live(2));
    // Released bytes do not count against the limit.
    run.push(0, b"12345678", ms(3)).push(1, b"12345678", ms(3)).push(0, b"abcdefgh", ms(4));
    assert_eq!(run.released, b"12345678");
    assert_eq!(run.faults.len(), 1);
}

#[test]
fn replica_too_far_behind_is_late() {
    let mut config = config(3, 2);
    config.max_lag_bytes = 4;
    let mut run = Run::new(config.clone());
    run.push(0, b"abcd", ms(1)).push(1, b"abcd", ms(1));
    assert!(run.faults.is_empty(), "exactly max_lag_bytes behind is allowed");
    run.push(2, b"a", ms(2));
    run.push(0, b"ef", ms(3)).push(1, b"ef", ms(3));
    assert_eq!(run.released, b"abcdef");
    assert_eq!(run.faults, vec![fault(2, 1, ms(3), FaultKind::Late { behind: 5 })]);
    assert_eq!(run.status(), &Status::Open);

    // The release that puts a lane too far behind excludes it at once.
    let mut run = Run::new(config);
    run.push(0, b"abcde", ms(1)).push(1, b"abcde", ms(1));
    assert_eq!(run.faults, vec![fault(2, 0, ms(1), FaultKind::Late { behind: 5 })]);
}

#[test]
fn next_deadline_is_the_earliest_timeout() {
    let mut run = Run::new(config(3, 2));
    assert_eq!(run.voter.next_deadline(), None, "nothing waits at the start");
    // Unconfirmed output waits for the vote timeout (2s).
    run.push(0, b"abc", ms(500));
    assert_eq!(run.voter.next_deadline(), Some(ms(2500)));
    // More unconfirmed output does not restart the wait.
    run.push(0, b"d", ms(900));
    assert_eq!(run.voter.next_deadline(), Some(ms(2500)));
    // A release with output left over restarts it; lane 2 is now behind (lag timeout 3s).
    run.push(1, b"ab", ms(1000));
    assert_eq!(run.released, b"ab");
    assert_eq!(run.voter.next_deadline(), Some(ms(3000)));
    // Once everything is confirmed, only lane 2's lag is left.
    run.push(1, b"cd", ms(1500));
    assert_eq!(run.voter.next_deadline(), Some(ms(4000)));
    // Ticking before a deadline changes nothing.
    run.tick(ms(3999));
    assert!(run.faults.is_empty());
    // Lane 2 catches up: no deadline.
    run.push(2, b"abcd", ms(3999));
    assert_eq!(run.voter.next_deadline(), None);
    run.close(0, ms(4000)).close(1, ms(4000));
    assert_eq!(run.status(), &Status::Finished);
    // Lane 2 must reach the same end within the lag timeout.
    assert_eq!(run.voter.next_deadline(), Some(ms(7000)));
    run.close(2, ms(4001));
    assert_eq!(run.voter.next_deadline(), None);
}

#[test]
fn timeouts_of_duration_max_mean_never() {
    let mut config = config(3, 2);
    config.vote_timeout = Duration::MAX;
    config.lag_timeout = Duration::MAX;
    let mut run = Run::new(config);
    run.push(0, b"abc", ms(1)).push(1, b"ab", ms(1));
    assert_eq!(run.voter.next_deadline(), Some(Duration::MAX));
    run.tick(ms(1 << 40));
    assert!(run.faults.is_empty());
    assert_eq!(run.status(), &Status::Open);
}

#[test]
fn config_validation() {
    let bad = |change: fn(&mut StreamConfig)| {
        let mut config = config(3, 2);
        change(&mut config);
        let err = config.validate().expect_err("invalid");
        assert_eq!(StreamVoter::new(config).expect_err("refused"), err);
        err
    };
    assert_eq!(bad(|c| c.replicas = 0), ConfigError::Replicas(0));
    assert_eq!(bad(|c| c.replicas = MAX_REPLICAS + 1), ConfigError::Replicas(MAX_REPLICAS + 1));
    assert_eq!(bad(|c| c.quorum = 0), ConfigError::Quorum { quorum: 0, replicas: 3 });
    assert_eq!(bad(|c| c.quorum = 4), ConfigError::Quorum { quorum: 4, replicas: 3 });
    assert_eq!(bad(|c| c.max_unreleased = 0), ConfigError::ZeroLimit("max_unreleased"));
    assert_eq!(ConfigError::Replicas(0).to_string(), format!("replica count 0 is not in 1..={MAX_REPLICAS}"));
    assert_eq!(
        ConfigError::Quorum { quorum: 4, replicas: 3 }.to_string(),
        "quorum 4 is not in 1..=3 (the replica count)"
    );
    assert_eq!(ConfigError::ZeroLimit("max_unreleased").to_string(), "max_unreleased must be at least 1");

    assert_eq!(config(MAX_REPLICAS, 1).validate(), Ok(()));
    assert_eq!(config(1, 1).validate(), Ok(()));
    for n in 1..=7 {
        let majority = StreamConfig::majority(n);
        assert_eq!(majority.validate(), Ok(()));
        assert_eq!(majority.quorum, n / 2 + 1);
        assert!(2 * majority.quorum > n);
    }
}

#[test]
fn out_of_range_and_repeated_calls_are_ignored() {
    let mut run = Run::new(config(3, 2));
    run.push(3, b"abc", T0).close(7, T0).fail(usize::MAX, T0).push(0, b"", T0);
    assert!(run.faults.is_empty());
    assert!(!run.voter.is_live(3));
    assert_eq!(run.voter.unreleased(3), 0);
    run.push(0, b"abc", T0).close(0, T0).close(0, T0).push(0, b"more", T0);
    assert_eq!(run.voter.unreleased(0), 3, "output after close is ignored");
    run.push(1, b"abc", T0).close(1, T0);
    assert_eq!(run.status(), &Status::Finished);
    assert_eq!(run.released, b"abc");
    assert!(run.faults.is_empty());
}

#[test]
fn exclude_for_reports_the_given_fault() {
    let mut run = Run::new(config(3, 2));
    run.push(0, b"abc", T0).push(1, b"abc", T0);
    run.voter.exclude_for(2, FaultKind::Crashed, ms(5));
    run.collect();
    assert_eq!(run.faults, vec![fault(2, 0, ms(5), FaultKind::Crashed)]);
    assert_eq!(run.voter.next_deadline(), None);
}

/// Regression: a lane that had closed at the released offset is found closed early by the same
/// release that leaves another lane behind. Excluding it used to reset the start of the
/// released tail before the new chunk was added to it, so the tail claimed to start at the new
/// released offset and the lane that was behind hit an arithmetic underflow (a panic) when it
/// caught up.
#[test]
fn closed_early_during_a_release_that_leaves_a_lane_behind() {
    let mut run = Run::new(config(4, 2));
    // Lane 2 closes with no output; it is not yet early (nothing was released).
    run.close(2, T0);
    run.push(0, b"abcd", ms(1)).push(1, b"abcd", ms(1));
    assert_eq!(run.released, b"abcd");
    assert_eq!(run.faults, vec![fault(2, 0, ms(1), FaultKind::ClosedEarly)]);
    // Lane 3 was behind by the whole release; it must be checked against "abcd".
    run.push(3, b"ab", ms(2));
    assert_eq!(run.faults.len(), 1);
    run.push(3, b"cX", ms(3));
    assert_eq!(run.faults[1], fault(3, 3, ms(3), diverged(b"d", b"X")));

    // The same with a lane catching up correctly, and closing.
    let mut run = Run::new(config(4, 2));
    run.close(3, T0).push(0, b"abcd", ms(1)).push(1, b"abcd", ms(1));
    run.push(2, b"abcd", ms(2)).close(2, ms(2)).close(0, ms(2));
    assert_eq!(run.status(), &Status::Finished);
    assert_eq!(run.faults, vec![fault(3, 0, ms(1), FaultKind::ClosedEarly)]);
}

#[test]
fn trail_is_how_long_after_its_release_a_replica_produced_the_bytes() {
    let mut run = Run::new(config(3, 2));
    let v = &mut run.voter;
    assert_eq!(v.take_trail(0), None, "nothing produced yet");
    v.push(0, b"hello ", ms(10));
    assert_eq!(v.take_trail(0), Some(T0), "ahead of the vote: it trails by nothing");
    assert_eq!(v.take_trail(0), None, "taken");
    v.push(1, b"hello ", ms(12));
    assert_eq!(v.take_trail(1), Some(T0), "it made the quorum");
    v.push(0, b"world", ms(20));
    v.push(1, b"world", ms(25));
    // Replica 2 reproduces both released chunks at 100 ms: the newest was released at 25 ms.
    v.push(2, b"hello world", ms(100));
    assert_eq!(v.take_trail(2), Some(ms(75)));
    // Part of the way: "hel" was released at 12 ms.
    let mut run = Run::new(config(3, 2));
    let v = &mut run.voter;
    v.push(0, b"hello", ms(10));
    v.push(1, b"hello", ms(12));
    v.push(2, b"hel", ms(40));
    assert_eq!(v.take_trail(2), Some(ms(28)));
    // Reproducing the rest and running ahead in one push counts the reproduced part.
    v.push(2, b"lo, you", ms(50));
    assert_eq!(v.take_trail(2), Some(ms(38)));
    v.push(2, b"!", ms(51));
    assert_eq!(v.take_trail(2), Some(T0), "now ahead");
}
