//! The session core driven by scripted events, without sockets: each test plays the front end
//! and checks what the core tells it to do.
use std::time::Duration;

use voter::{FaultKind, StreamConfig};

use super::{Action, Close, End, Reason, Session};
use crate::metrics::Verdict;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const IDLE: Duration = Duration::from_secs(10);

/// Vote and lag timeouts of 1 s, a 100-byte lag window, 1000 unreleased bytes per replica.
fn session(replicas: usize, quorum: usize) -> Session {
    let vote = StreamConfig {
        replicas,
        quorum,
        vote_timeout: ms(1000),
        lag_timeout: ms(1000),
        max_unreleased: 1000,
        max_lag_bytes: 100,
    };
    Session::new(vote, IDLE).expect("valid parameters")
}

fn actions(s: &mut Session) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

/// The faults among `actions`: (replica, kind name).
fn cuts(actions: &[Action]) -> Vec<(usize, &'static str)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Cut(f) => Some((f.replica, f.kind.name())),
            _ => None,
        })
        .collect()
}

/// One release and a client that takes all of it: the bytes it got.
fn deliver(s: &mut Session, now: Duration) -> Vec<u8> {
    s.release(now);
    let out = s.output().concat();
    s.client_took(out.len(), now);
    out
}

/// The client sent `data` and every replica that takes input took all of it.
fn send_to_all(s: &mut Session, data: &[u8], now: Duration) {
    assert!(s.wants_client_input());
    s.client_data(data.len(), now);
}

#[test]
fn a_slow_replica_holds_the_others_back_by_the_lag_window_and_is_late_only_after_lag_timeout() {
    let mut s = session(3, 2);
    // Even the first read is bounded by the window (100), not by max_unreleased (1000).
    assert_eq!(s.read_room(0), 100);
    s.replica_data(0, &[7; 100], ms(0));
    s.replica_data(1, &[7; 100], ms(0));
    assert_eq!(deliver(&mut s, ms(0)), vec![7; 100]);
    // Replicas 0 and 1 are a whole window ahead of replica 2: they are not read until it moves.
    assert_eq!((s.read_room(0), s.read_room(1), s.read_room(2)), (0, 0, 100));
    assert_eq!(s.next_deadline(), ms(1000), "replica 2 owes bytes released at 0");
    s.replica_data(2, &[7; 100], ms(500));
    assert_eq!((s.read_room(0), s.read_room(1)), (100, 100), "the window moves with the slowest");
    s.replica_data(0, &[8; 100], ms(600));
    s.replica_data(1, &[8; 100], ms(600));
    assert_eq!(deliver(&mut s, ms(600)), vec![8; 100]);
    assert_eq!(s.read_room(0), 0);
    // Replica 2 now owes bytes released at 600: late at 1600, not before.
    assert!(!s.tick(ms(1599)));
    assert!(actions(&mut s).is_empty());
    assert!(s.tick(ms(1600)));
    let acts = actions(&mut s);
    assert_eq!(cuts(&acts), [(2, "late")]);
    assert!(matches!(&acts[0], Action::Cut(f) if f.kind == FaultKind::Late { behind: 100 } && f.offset == 100));
    // Out of the vote, it holds nobody back any more.
    assert_eq!((s.read_room(0), s.read_room(2)), (100, 0));
}

#[test]
fn a_client_that_takes_no_output_stops_the_vote_clock() {
    let mut s = session(3, 2);
    s.replica_data(0, b"hello", ms(0));
    s.replica_data(1, b"hello", ms(0));
    assert_eq!(s.release(ms(0)).bytes, 5);
    // The client's socket is full.
    s.client_took(0, ms(0));
    // While output waits for the client no replica is read, and replica 2, which owes the
    // released bytes, is not late: the vote clock stands still.
    assert_eq!((s.read_room(0), s.read_room(1), s.read_room(2)), (0, 0, 0));
    assert_eq!(s.next_deadline(), IDLE, "only the slow-client timeout is due");
    assert!(!s.tick(ms(5000)));
    assert!(actions(&mut s).is_empty());
    // The client takes its output at 5 s: the vote clock goes on from where it stood (1 s of
    // it left for replica 2).
    s.client_took(5, ms(5000));
    assert_eq!(s.next_deadline(), ms(6000));
    s.tick(ms(5999));
    assert!(actions(&mut s).is_empty());
    s.tick(ms(6000));
    assert_eq!(cuts(&actions(&mut s)), [(2, "late")]);
}

#[test]
fn a_client_that_never_takes_its_output_is_timed_out_with_a_reset_and_nobody_is_blamed() {
    let mut s = session(3, 2);
    s.replica_data(0, b"hello", ms(0));
    s.replica_data(1, b"hello", ms(0));
    s.release(ms(0));
    s.client_took(2, ms(0)); // part of it, then the socket is full
    s.tick(ms(9999));
    assert!(s.end().is_none());
    s.tick(ms(10_000));
    let end = s.end().expect("timed out");
    assert_eq!(end, End { close: Close::Reset, verdict: Verdict::Agreed, reason: Reason::ClientStalled, released: 5 });
    assert!(actions(&mut s).is_empty(), "no replica is blamed for the client's slowness");
}

#[test]
fn a_replica_that_answers_and_closes_while_the_client_still_sends_is_not_blamed() {
    let mut s = session(3, 2);
    send_to_all(&mut s, b"req", ms(0));
    for i in 0..3 {
        s.replica_data(i, b"answer", ms(10));
        s.replica_closed(i, ms(10));
    }
    assert_eq!(deliver(&mut s, ms(10)), b"answer");
    assert_eq!(actions(&mut s), [Action::CloseOutput]);
    // The client still sends: replica 0 reset its connection, replica 1 takes nothing any more.
    send_to_all(&mut s, b"more", ms(20));
    s.input_failed(0);
    s.input_offered(1, b"more", 0, ms(20));
    assert_eq!(s.pending_input(1), Some(&b"more"[..]));
    assert!(!s.wants_client_input(), "replica 1 holds the client back");
    s.tick(ms(1019));
    assert!(!s.wants_client_input());
    // After the stall limit it simply gets no more input: its output was complete.
    assert!(s.tick(ms(1020)));
    assert_eq!(s.pending_input(1), None);
    assert!(s.wants_client_input());
    s.client_closed();
    assert_eq!(actions(&mut s), [Action::CloseInput(2)]);
    let end = s.end().expect("over");
    assert_eq!(end, End { close: Close::Fin, verdict: Verdict::Agreed, reason: Reason::Done, released: 6 });
}

#[test]
fn an_undecidable_vote_ends_with_a_reset_and_releases_nothing_unverified() {
    let mut s = session(3, 2);
    s.replica_data(0, b"abcX", ms(0));
    assert_eq!(s.release(ms(0)).bytes, 0, "one replica is no quorum");
    s.replica_data(1, b"abcY", ms(0));
    assert_eq!(deliver(&mut s, ms(0)), b"abc");
    assert!(s.end().is_none(), "replica 2 could still side with either");
    s.replica_data(2, b"abcZ", ms(0));
    assert_eq!(s.release(ms(0)).bytes, 0);
    assert!(s.output().is_empty());
    let end = s.end().expect("undecidable");
    assert_eq!((end.close, end.verdict, end.released), (Close::Reset, Verdict::Undecidable, 3));
    assert!(matches!(end.reason, Reason::Undecidable(_)));
}

#[test]
fn a_session_that_ends_with_output_the_client_has_not_got_ends_with_a_reset() {
    // Released output the client has not taken.
    let mut s = session(3, 2);
    for i in 0..3 {
        s.replica_data(i, b"0123456789", ms(0));
        s.replica_closed(i, ms(0));
    }
    s.release(ms(0));
    s.client_took(4, ms(0));
    s.client_failed();
    let end = s.end().expect("over");
    assert_eq!((end.close, end.reason), (Close::Reset, Reason::ClientGone));

    // Output still waiting for its quorum.
    let mut s = session(3, 2);
    s.replica_data(0, b"x", ms(0));
    s.client_failed();
    assert_eq!(s.end().map(|e| e.close), Some(Close::Reset));

    // Nothing outstanding: a plain close.
    let mut s = session(3, 2);
    s.tick(IDLE);
    let end = s.end().expect("idle");
    assert_eq!((end.close, end.reason), (Close::Fin, Reason::Idle));
}

#[test]
fn the_client_half_close_is_passed_on_to_every_replica_still_taking_input() {
    let mut s = session(3, 2);
    s.replica_failed(2, ms(0)); // could not connect
    assert_eq!(cuts(&actions(&mut s)), [(2, "crashed")]);
    send_to_all(&mut s, b"12345678", ms(0));
    assert!(!s.takes_input(2));
    s.input_offered(1, b"12345678", 3, ms(0));
    assert_eq!(s.pending_input(1), Some(&b"45678"[..]));
    // A front end that learns of the half-close while replica 1 is behind on input: replica 1
    // gets it only after the rest of its input.
    s.client_closed();
    assert_eq!(actions(&mut s), [Action::CloseInput(0)]);
    s.input_written(1, 2, ms(1));
    assert_eq!(s.pending_input(1), Some(&b"678"[..]));
    assert!(actions(&mut s).is_empty());
    s.input_written(1, 3, ms(2));
    assert_eq!(actions(&mut s), [Action::CloseInput(1)]);
    // The replicas answer and close: the client's side is closed in turn, and that ends it.
    for i in 0..2 {
        s.replica_data(i, b"12345678", ms(3));
        s.replica_closed(i, ms(3));
    }
    assert_eq!(deliver(&mut s, ms(3)), b"12345678");
    assert_eq!(actions(&mut s), [Action::CloseOutput]);
    let end = s.end().expect("over");
    assert_eq!((end.close, end.verdict), (Close::Fin, Verdict::Masked));
}

#[test]
fn the_input_stall_timer_runs_only_while_the_replica_output_is_read() {
    let mut s = session(3, 2);
    send_to_all(&mut s, b"ping", ms(0));
    for i in 0..3 {
        s.replica_data(i, b"pong", ms(0));
    }
    s.release(ms(0));
    s.client_took(0, ms(0)); // the client does not take the answer yet
    send_to_all(&mut s, b"more", ms(0));
    s.input_offered(2, b"more", 0, ms(0)); // replica 2 takes none of it
    assert_eq!(s.read_room(2), 0, "its output is not read while the client's waits");
    assert!(!s.tick(ms(3000)));
    assert!(actions(&mut s).is_empty(), "not its fault: it may be blocked on its own output");
    // The client takes its output at 5 s: replica 2's output is read again, and only from now
    // on does its not taking input count.
    s.client_took(4, ms(5000));
    assert!(s.read_room(2) > 0);
    assert_eq!(s.next_deadline(), ms(6000));
    s.tick(ms(5999));
    assert!(actions(&mut s).is_empty());
    s.tick(ms(6000));
    let acts = actions(&mut s);
    assert!(matches!(&acts[..], [Action::Cut(f)] if f.replica == 2 && f.kind == FaultKind::Late { behind: 0 }));
    assert!(s.wants_client_input(), "the client is read again without it");
}

#[test]
fn a_replica_that_takes_no_input_while_its_output_is_read_is_late_after_lag_timeout() {
    let mut s = session(3, 2);
    send_to_all(&mut s, b"ping", ms(0));
    s.input_offered(0, b"ping", 2, ms(0));
    s.input_written(0, 1, ms(400)); // progress restarts the timer
    assert_eq!(s.next_deadline(), ms(1400));
    s.tick(ms(1399));
    assert!(actions(&mut s).is_empty());
    s.tick(ms(1400));
    assert_eq!(cuts(&actions(&mut s)), [(0, "late")]);
    assert_eq!(s.pending_input(0), None, "a cut replica holds nobody back");
}

#[test]
fn delayed_output_is_held_until_its_time_and_the_replica_is_not_read_meanwhile() {
    let mut s = session(1, 1);
    s.replica_data_delayed(0, b"late", ms(500));
    assert_eq!(s.read_room(0), 0);
    assert_eq!(s.next_deadline(), ms(500));
    assert!(!s.tick(ms(499)));
    assert_eq!(s.release(ms(499)).bytes, 0);
    assert!(s.tick(ms(500)));
    let released = s.release(ms(500));
    assert_eq!((released.bytes, released.waited), (4, Some(ms(0))));
    assert_eq!(s.output().concat(), b"late");
}

#[test]
fn the_session_ends_only_once_a_slower_replica_was_checked_to_the_end() {
    for (answer, verdict) in [(&b"ok"[..], Verdict::Agreed), (&b"no"[..], Verdict::Masked)] {
        let mut s = session(3, 2);
        for i in 0..2 {
            s.replica_data(i, b"ok", ms(0));
            s.replica_closed(i, ms(0));
        }
        assert_eq!(deliver(&mut s, ms(0)), b"ok");
        assert_eq!(actions(&mut s), [Action::CloseOutput]);
        s.client_closed();
        actions(&mut s);
        assert!(s.end().is_none(), "replica 2 is still to be checked");
        s.replica_data(2, answer, ms(10));
        s.replica_closed(2, ms(10));
        let end = s.end().expect("over");
        assert_eq!((end.close, end.verdict), (Close::Fin, verdict));
        assert_eq!(s.release(ms(10)).bytes, 0, "nothing after the end");
    }
}

#[test]
fn a_fin_never_overtakes_released_output() {
    let mut s = session(1, 1);
    s.replica_data(0, b"last", ms(0));
    s.replica_closed(0, ms(0));
    // A front end that reports a write before it moved the new release out: no FIN yet.
    s.client_took(0, ms(0));
    assert!(actions(&mut s).is_empty());
    assert_eq!(deliver(&mut s, ms(0)), b"last");
    assert_eq!(actions(&mut s), [Action::CloseOutput]);
}

/// A small deterministic generator (splitmix64): the randomized test below replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }
}

/// How a simulated replica answers: an echo of its input, honestly or not. Faulty answers never
/// agree with each other where they differ from the echo (flips and suffixes depend on the
/// replica), so whatever a quorum produced is a prefix of the echo.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Honest,
    /// One byte of its output differs.
    Flip(usize),
    /// Closes its output after this many bytes.
    Truncate(usize),
    /// Its connection fails once it produced this many bytes.
    Crash(usize),
    /// Appends bytes of its own after the echo.
    Extra,
    /// Takes no more input after this many bytes.
    StopsInput(usize),
    /// Produces one byte at a time.
    Slow,
}

struct Replica {
    behaviour: Behaviour,
    /// The input it took, in order.
    received: Vec<u8>,
    /// The output it handed to the core.
    produced: Vec<u8>,
    input_closed: bool,
    output_done: bool,
    cut: bool,
}

impl Replica {
    /// Its output for the input it has so far, and whether that is all of it.
    fn output(&self, i: usize) -> (Vec<u8>, bool) {
        let mut out = self.received.clone();
        let mut complete = self.input_closed;
        match self.behaviour {
            Behaviour::Flip(at) if at < out.len() => out[at] ^= 1 + i as u8,
            Behaviour::Truncate(at) if out.len() >= at => {
                out.truncate(at);
                complete = true;
            }
            Behaviour::Extra if complete => out.extend_from_slice(format!("{i}extra").as_bytes()),
            _ => {}
        }
        (out, complete)
    }

    /// How much of `offered` it takes now.
    fn takes(&self, offered: usize, rng: &mut Rng) -> usize {
        match self.behaviour {
            Behaviour::StopsInput(after) if self.received.len() >= after => 0,
            _ if rng.percent(70) => offered,
            _ => rng.below(offered + 1),
        }
    }
}

/// Tallies over all runs, so the test can tell that it exercised what it claims to.
#[derive(Debug, Default)]
struct Seen {
    done: usize,
    undecidable: usize,
    reset: usize,
    faults: usize,
    stalled: usize,
}

/// One seeded session with random replicas, random scheduling, random partial writes, a client
/// that takes its output in random pieces, and random time. After every step: everything the
/// client was given was produced by at least a quorum of replicas, and (with a quorum above one)
/// is a prefix of the honest answer, since faulty replicas never agree on a wrong byte here.
fn random_session(seed: u64, seen: &mut Seen) {
    let mut rng = Rng(seed);
    let n = 1 + rng.below(5);
    let quorum = if rng.percent(75) { n / 2 + 1 } else { n / 2 + 1 + rng.below(n - n / 2) };
    let vote = StreamConfig {
        replicas: n,
        quorum,
        vote_timeout: ms(rng.pick(&[100, 300, 1000])),
        lag_timeout: ms(rng.pick(&[100, 300, 1000])),
        max_unreleased: rng.pick(&[8, 64, 1024]),
        max_lag_bytes: rng.pick(&[4, 64, 1024]),
    };
    let mut s = Session::new(vote, ms(2000)).expect("valid parameters");
    let mut replicas: Vec<Replica> = (0..n)
        .map(|_| {
            let behaviour = match rng.below(20) {
                0 => Behaviour::Flip(rng.below(200)),
                1 => Behaviour::Truncate(rng.below(200)),
                2 => Behaviour::Crash(rng.below(200)),
                3 => Behaviour::Extra,
                4 => Behaviour::StopsInput(rng.below(200)),
                5 => Behaviour::Slow,
                _ => Behaviour::Honest,
            };
            Replica {
                behaviour,
                received: Vec::new(),
                produced: Vec::new(),
                input_closed: false,
                output_done: false,
                cut: false,
            }
        })
        .collect();
    let mut sent: Vec<u8> = Vec::new();
    let mut got: Vec<u8> = Vec::new();
    let mut fin = false;
    let mut now = Duration::ZERO;
    let context = |step: usize| format!("seed {seed}, step {step}");

    for step in 0..3000 {
        match rng.below(10) {
            // Time passes.
            0 | 1 => {
                // Mostly a little, now and then past every timeout.
                let step =
                    if rng.percent(95) { rng.pick(&[0, 1, 2, 5, 10]) } else { rng.pick(&[300, 300, 1200, 2500]) };
                now += ms(step);
                s.tick(now);
            }
            // Input: what replicas have not taken yet, then maybe the client.
            2..=4 => {
                for (i, r) in replicas.iter_mut().enumerate() {
                    let Some(rest) = s.pending_input(i).map(<[u8]>::to_vec) else { continue };
                    assert!(!s.wants_client_input(), "{}", context(step));
                    let k = r.takes(rest.len(), &mut rng);
                    r.received.extend_from_slice(&rest[..k]);
                    s.input_written(i, k, now);
                }
                if s.wants_client_input() {
                    if sent.len() > 20 && rng.percent(8) {
                        s.client_closed();
                    } else if sent.len() < 600 {
                        let chunk: Vec<u8> = (0..1 + rng.below(24)).map(|_| rng.next() as u8).collect();
                        sent.extend_from_slice(&chunk);
                        s.client_data(chunk.len(), now);
                        for (i, r) in replicas.iter_mut().enumerate() {
                            if !s.takes_input(i) {
                                continue;
                            }
                            if r.output_done && rng.percent(50) {
                                s.input_failed(i); // a replica that closed may reset
                                continue;
                            }
                            let k = r.takes(chunk.len(), &mut rng);
                            r.received.extend_from_slice(&chunk[..k]);
                            if k < chunk.len() {
                                s.input_offered(i, &chunk, k, now);
                            }
                        }
                    }
                }
            }
            // Output: a replica that may be read produces some, or ends.
            5..=7 => {
                let i = rng.below(n);
                let r = &mut replicas[i];
                let room = s.read_room(i);
                if r.cut || r.output_done || room == 0 {
                    continue;
                }
                let (out, complete) = r.output(i);
                let have = r.produced.len();
                if matches!(r.behaviour, Behaviour::Crash(at) if have >= at) {
                    r.output_done = true;
                    s.replica_failed(i, now);
                } else if have < out.len() {
                    let max = if matches!(r.behaviour, Behaviour::Slow) { 1 } else { 1 + rng.below(32) };
                    let piece = &out[have..out.len().min(have + room.min(max))];
                    r.produced.extend_from_slice(piece);
                    if rng.percent(5) {
                        s.replica_data_delayed(i, piece, now + ms(rng.pick(&[1, 50, 500])));
                    } else {
                        s.replica_data(i, piece, now);
                    }
                } else if complete {
                    r.output_done = true;
                    s.replica_closed(i, now);
                }
            }
            // The client takes some of its output, or goes away.
            _ => {
                if rng.below(400) == 0 {
                    s.client_failed();
                }
                let released = s.release(now);
                if fin {
                    assert_eq!(released.bytes, 0, "released after the FIN, {}", context(step));
                }
                let out = s.output().concat();
                let k = if rng.percent(30) { 0 } else { rng.below(out.len() + 1) };
                got.extend_from_slice(&out[..k]);
                s.client_took(k, now);
            }
        }
        while let Some(action) = s.poll_action() {
            match action {
                Action::Cut(fault) => {
                    seen.faults += 1;
                    replicas[fault.replica].cut = true;
                }
                Action::CloseInput(i) => {
                    assert!(!replicas[i].cut, "{}", context(step));
                    replicas[i].input_closed = true;
                }
                Action::CloseOutput => {
                    assert!(s.output().is_empty(), "FIN with output not taken, {}", context(step));
                    fin = true;
                }
            }
        }

        // Nothing released that a quorum did not produce.
        let mut released = got.clone();
        released.extend(s.output().iter().flat_map(|c| c.iter().copied()));
        let producers = replicas.iter().filter(|r| r.produced.starts_with(&released)).count();
        assert!(producers >= quorum, "{released:?} produced by {producers} < {quorum} replicas, {}", context(step));
        // (With a quorum of one, one faulty replica is a quorum.)
        if quorum > 1 {
            assert!(sent.starts_with(&released), "released bytes that are not the answer, {}", context(step));
        }
        assert!(s.voter().released() >= released.len() as u64, "{}", context(step));

        if let Some(end) = s.end() {
            if end.close == Close::Fin {
                assert!(s.output().is_empty(), "FIN with output not taken, {}", context(step));
                assert_eq!(end.released, got.len() as u64, "{}", context(step));
            }
            if end.reason == Reason::Done {
                assert!(fin, "{}", context(step));
                seen.done += 1;
            }
            if end.close == Close::Reset {
                seen.reset += 1;
            }
            match end.reason {
                Reason::Undecidable(_) => {
                    assert_eq!(end.close, Close::Reset);
                    seen.undecidable += 1;
                }
                Reason::ClientStalled => seen.stalled += 1,
                _ => {}
            }
            // Every replica still in the vote got the client's input in order.
            for r in replicas.iter().filter(|r| !r.cut) {
                assert!(sent.starts_with(&r.received), "input out of order, {}", context(step));
            }
            return;
        }
    }
}

#[test]
fn randomized_sessions_release_only_what_a_quorum_produced() {
    let mut seen = Seen::default();
    for seed in 0..400 {
        random_session(seed, &mut seen);
    }
    // The runs must have covered the interesting ends, or the checks above prove little.
    assert!(
        seen.done > 30 && seen.undecidable > 30 && seen.reset > 100 && seen.faults > 80 && seen.stalled > 30,
        "{seen:?}"
    );
}

/// On shutdown a session owes its client an answer from its last input until output follows;
/// a drained session ends with a FIN, one cut off with a reset.
#[test]
fn a_shutdown_closes_a_session_that_owes_nothing_and_resets_one_that_does() {
    let mut s = session(3, 2);
    assert!(s.owes_nothing(), "a session with no traffic owes nothing");
    send_to_all(&mut s, b"ping", ms(10));
    assert!(!s.owes_nothing(), "the request has no answer yet");
    s.replica_data(0, b"po", ms(20));
    s.replica_data(1, b"po", ms(20));
    s.release(ms(20));
    assert!(!s.owes_nothing(), "released output the client has not taken");
    let out = s.output().concat();
    s.client_took(out.len(), ms(20));
    assert!(s.owes_nothing());
    assert_eq!(s.last_activity(), ms(20));
    s.replica_data(0, b"ng", ms(30));
    assert!(!s.owes_nothing(), "output waiting for its quorum");
    s.replica_data(1, b"ng", ms(30));
    assert_eq!(deliver(&mut s, ms(30)), b"ng");
    assert!(s.owes_nothing());
    let mut drained = s;
    drained.close_drained();
    let end = drained.end().expect("over");
    assert_eq!((end.close, end.reason), (Close::Fin, Reason::Drained));

    let mut cut = session(3, 2);
    send_to_all(&mut cut, b"ping", ms(10));
    cut.shut_down();
    let end = cut.end().expect("over");
    assert_eq!((end.close, end.reason), (Close::Reset, Reason::Shutdown));
}

#[test]
fn timing_is_each_replicas_answer_time_and_trail() {
    let mut s = session(3, 2);
    assert_eq!(s.take_timing(0), super::Timing::default(), "nothing asked, nothing produced");
    send_to_all(&mut s, b"ping", ms(10));
    s.replica_data(0, b"pong", ms(12));
    s.replica_data(1, b"po", ms(15));
    assert_eq!(deliver(&mut s, ms(15)), b"po");
    s.replica_data(1, b"ng", ms(16));
    assert_eq!(deliver(&mut s, ms(16)), b"ng");
    s.replica_data(2, b"pong", ms(40));
    let timing = |s: &mut Session, i| {
        let t = s.take_timing(i);
        (t.answer, t.trail)
    };
    assert_eq!(timing(&mut s, 0), (Some(ms(2)), Some(ms(0))));
    assert_eq!(timing(&mut s, 1), (Some(ms(5)), Some(ms(0))), "the first output after the input counts");
    assert_eq!(timing(&mut s, 2), (Some(ms(30)), Some(ms(24))), "its newest byte was released at 16 ms");
    assert_eq!(timing(&mut s, 2), (None, None), "taken");
    // A second request: only the first output after it is an answer time.
    send_to_all(&mut s, b"ping", ms(100));
    s.replica_data(0, b"po", ms(101));
    s.replica_data(0, b"ng", ms(150));
    assert_eq!(timing(&mut s, 0), (Some(ms(1)), Some(ms(0))));
}
