//! Fuzzes the frame vote with schedules decoded from the input, against a model of what every
//! replica answered to which request.
//!
//! Input layout (missing bytes read as 0):
//! - byte 0: replica count N = 1 + b % 5
//! - byte 1: quorum: majority when even, else 1 + (b / 2) % N
//! - byte 2: lag timeout: (b % 32) x 10 ms, `Duration::MAX` for 255
//! - byte 3: first sequence number: 0 when even, else b << 40
//! - then every replica joins at the first sequence number at time 0, and operations follow,
//!   one opcode byte each (kind = b % 14, replica = (b / 14) % (N + 1), so index N is out of
//!   range), some followed by an argument byte:
//!   - 0..=2: `response` with the honest vote for the request the replica answers next (a frame
//!     digest from a small alphabet, or `Closed` for some requests)
//!   - 3: `response` with an arbitrary vote (next byte: one of four frames, or `Closed`)
//!   - 4, 5: `submit`
//!   - 6: `fail`; 7: `exclude_for` (next byte: the kind); 8: `leave`
//!   - 9: `join_at`, live or not (next byte: < 128 some requests back from `next_seq`, else an
//!     offset from the first sequence number, possibly beyond `next_seq`)
//!   - 10: `pause`; 11: `resume`
//!   - 12: time (next byte): < 128 ms later and `tick`; 128..=253: (b - 128) ms later, no
//!     tick; 254: `tick` 1 ms before `next_deadline()`; 255: `tick` at `next_deadline()`
//!   - 13: `sent_to` (next byte: < 128 some requests back from `next_seq`, 255 `u64::MAX`,
//!     else up to 3 past `next_seq`)
//!
//! After every operation the target checks, against its own record of answers (by replica,
//! incarnation and time): nothing panics; each request is decided at most once, and only
//! requests that were submitted; a `Release` is the vote that at least `quorum` replicas,
//! live and in their current incarnation, gave to that request, and names one of them, and is
//! `masked` if one of them voted otherwise; an `Undecidable` request could not be released; a
//! request a quorum voted alike on is decided, and a request that can no longer reach a quorum
//! is undecidable; requests are dropped only once decided, and none are kept once every live
//! replica answered everything; `response` answers the request the model says (or `None` for
//! a replica out of the vote, or one answering more than it was asked, which is then
//! diverged); which replicas are live matches the model; faults name only live replicas and are
//! deserved: diverged or closed early only against the released vote (or for an extra
//! answer), late only for a replica that was not paused, still owed an answer to a request it
//! was sent, and trailed a quorum's answers to the last request it was sent and its own grace
//! by the lag timeout, `fail` and `exclude_for` as asked; `tick` before `next_deadline()`
//! changes nothing, and after `tick(now)` the deadline is later than `now`.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use voter::fault::digest;
use voter::{Decision, Digest, FaultKind, FrameConfig, FrameOutcome, FrameVoter, Vote};

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
}

/// One answer as the model saw it.
#[derive(Clone, Copy, Debug)]
struct Answer {
    replica: usize,
    incarnation: u64,
    vote: Vote,
    at: Duration,
}

/// One operation, for the failure messages.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug)]
enum Step {
    Response(usize, Vote, Duration),
    Submit(Duration),
    Fail(usize, Duration),
    ExcludeFor(usize, u8, Duration),
    Leave(usize, Duration),
    JoinAt(usize, u64, Duration),
    Pause(usize),
    Resume(usize, Duration),
    SentTo(usize, u64),
    Time(Duration),
    Tick(Duration, Option<Duration>),
    Decided(Decision),
}

/// The model of one replica.
#[derive(Clone, Debug)]
struct Lane {
    live: bool,
    /// Counts its joins: answers of an earlier incarnation no longer count.
    incarnation: u64,
    next: u64,
    /// What `sent_to` said (`u64::MAX` since its join: every request).
    sent: u64,
    paused: bool,
    grace_from: Duration,
}

fn disagreement(agreed: Vote, observed: Vote) -> &'static str {
    match (agreed, observed) {
        (_, Vote::Closed) => "closed_early",
        _ => "diverged",
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let replicas = 1 + input.byte() as usize % 5;
    let q = input.byte();
    let quorum = if q % 2 == 0 { replicas / 2 + 1 } else { 1 + (q as usize / 2) % replicas };
    let l = input.byte();
    let lag = if l == 255 { Duration::MAX } else { Duration::from_millis(10 * (l % 32) as u64) };
    let s = input.byte();
    let start: u64 = if s % 2 == 0 { 0 } else { (s as u64) << 40 };
    let config = FrameConfig { replicas, quorum, lag_timeout: lag };
    let mut voter = FrameVoter::starting_at(config, start).expect("the decoded config is valid");

    let frames: Vec<Digest> = (0u8..4).map(|v| digest(&[v])).collect();
    // The vote of a replica that answers request `seq` right.
    let honest = |seq: u64| if seq % 7 == 3 { Vote::Closed } else { Vote::Frame(frames[(seq % 3) as usize]) };

    let mut now = Duration::ZERO;
    let joined = |incarnation: u64, next: u64, now: Duration| Lane {
        live: true,
        incarnation,
        next,
        sent: u64::MAX,
        paused: false,
        grace_from: now,
    };
    let mut lanes = vec![joined(1, start, now); replicas];
    for r in 0..replicas {
        voter.join_at(r, start, now);
    }
    let mut next_seq = start;
    let mut answers: BTreeMap<u64, Vec<Answer>> = BTreeMap::new();
    // Decided requests: the released vote, or None if undecidable.
    let mut decided: BTreeMap<u64, Option<Vote>> = BTreeMap::new();
    let mut undecided: BTreeSet<u64> = BTreeSet::new();
    let mut base = voter.base();
    let mut trace: Vec<Step> = Vec::new();

    while !input.0.is_empty() {
        let op = input.byte();
        let kind = op % 14;
        let replica = (op / 14) as usize % (replicas + 1);
        let live_before: Vec<bool> = lanes.iter().map(|l| l.live).collect();
        // Faults this step is expected to cause: replica -> kind name (and offset if known).
        let mut asked: BTreeMap<usize, (&'static str, Option<FaultKind>)> = BTreeMap::new();
        let mut ticked = false;
        let mut quiet_tick = false;
        match kind {
            0..=3 => {
                let vote = if kind == 3 {
                    match input.byte() % 5 {
                        4 => Vote::Closed,
                        v => Vote::Frame(frames[v as usize]),
                    }
                } else {
                    honest(lanes.get(replica).map_or(0, |l| l.next))
                };
                trace.push(Step::Response(replica, vote, now));
                let got = voter.response(replica, vote, now);
                match lanes.get_mut(replica) {
                    Some(lane) if lane.live && lane.next < next_seq => {
                        assert_eq!(got, Some(lane.next), "response answered another request\n{trace:#?}");
                        answers.entry(lane.next).or_default().push(Answer {
                            replica,
                            incarnation: lane.incarnation,
                            vote,
                            at: now,
                        });
                        lane.next += 1;
                    }
                    Some(lane) if lane.live => {
                        assert_eq!(got, None, "an answer beyond the last request was taken\n{trace:#?}");
                        let name = if vote == Vote::Closed { "closed_early" } else { "diverged" };
                        asked.insert(replica, (name, None));
                    }
                    _ => assert_eq!(got, None, "an answer of a replica out of the vote was taken\n{trace:#?}"),
                }
            }
            4 | 5 => {
                trace.push(Step::Submit(now));
                let seq = voter.submit(now);
                assert_eq!(seq, next_seq, "submit gave an unexpected sequence number");
                undecided.insert(seq);
                next_seq += 1;
            }
            6 => {
                trace.push(Step::Fail(replica, now));
                voter.fail(replica, now);
                if replica < replicas && lanes[replica].live {
                    asked.insert(replica, ("crashed", Some(FaultKind::Crashed)));
                }
            }
            7 => {
                let b = input.byte();
                let fault = match b % 5 {
                    0 => FaultKind::Diverged { expected: frames[0], observed: frames[1] },
                    1 => FaultKind::ClosedEarly,
                    2 => FaultKind::Crashed,
                    3 => FaultKind::Late { behind: b as u64 },
                    _ => FaultKind::Flooded { unreleased: b as u64 },
                };
                trace.push(Step::ExcludeFor(replica, b, now));
                voter.exclude_for(replica, fault.clone(), now);
                if replica < replicas && lanes[replica].live {
                    asked.insert(replica, (fault.name(), Some(fault)));
                }
            }
            8 => {
                trace.push(Step::Leave(replica, now));
                voter.leave(replica, now);
                if let Some(lane) = lanes.get_mut(replica) {
                    lane.live = false;
                }
            }
            9 => {
                let b = input.byte();
                let seq = if b < 128 { next_seq.saturating_sub(b as u64 % 8) } else { start + (b - 128) as u64 };
                trace.push(Step::JoinAt(replica, seq, now));
                voter.join_at(replica, seq, now);
                if let Some(lane) = lanes.get_mut(replica) {
                    *lane = joined(lane.incarnation + 1, seq.min(next_seq), now);
                }
            }
            10 => {
                trace.push(Step::Pause(replica));
                voter.pause(replica);
                if let Some(lane) = lanes.get_mut(replica) {
                    lane.paused = true;
                }
            }
            11 => {
                trace.push(Step::Resume(replica, now));
                voter.resume(replica, now);
                if let Some(lane) = lanes.get_mut(replica) {
                    lane.paused = false;
                    lane.grace_from = now;
                }
            }
            13 => {
                let b = input.byte();
                let upto = match b {
                    0..=127 => next_seq.saturating_sub(b as u64 % 8),
                    255 => u64::MAX,
                    _ => next_seq + b as u64 % 4,
                };
                trace.push(Step::SentTo(replica, upto));
                voter.sent_to(replica, upto);
                if let Some(lane) = lanes.get_mut(replica) {
                    lane.sent = upto;
                }
            }
            _ => {
                let b = input.byte();
                let deadline = voter.next_deadline();
                let at = match b {
                    0..=127 => Some(now.saturating_add(Duration::from_millis(b as u64))),
                    128..=253 => {
                        now = now.saturating_add(Duration::from_millis((b - 128) as u64));
                        trace.push(Step::Time(now));
                        None
                    }
                    254 => deadline.map(|d| d.saturating_sub(Duration::from_millis(1)).max(now)),
                    255 => deadline.map(|d| d.max(now)),
                };
                if let Some(at) = at {
                    now = at;
                    trace.push(Step::Tick(now, deadline));
                    voter.tick(now);
                    ticked = true;
                    quiet_tick = deadline.is_none_or(|d| now < d);
                }
            }
        }

        // Decisions: each request once, only submitted ones.
        let decisions: Vec<_> = std::iter::from_fn(|| voter.take_decision()).collect();
        let faults = voter.take_faults();
        if quiet_tick {
            assert!(
                decisions.is_empty() && faults.is_empty(),
                "a tick before next_deadline() acted: {decisions:?} {faults:?}\n{trace:#?}"
            );
        }
        if ticked {
            if let Some(d) = voter.next_deadline() {
                assert!(d > now, "after tick({now:?}) the deadline {d:?} is already due\n{trace:#?}");
            }
        }

        // Faults: only live replicas, each deserved.
        let mut blamed = BTreeSet::new();
        for fault in &faults {
            let r = fault.replica;
            assert!(r < replicas, "fault names no replica: {fault}\n{trace:#?}");
            assert!(live_before[r] && blamed.insert(r), "fault of a replica out of the vote: {fault}\n{trace:#?}");
            assert!(!voter.is_live(r), "faulty replica still live: {fault}\n{trace:#?}");
            let lane = &lanes[r];
            let current = |seq: u64| {
                answers
                    .get(&seq)
                    .and_then(|a| a.iter().rev().find(|a| a.replica == r && a.incarnation == lane.incarnation))
                    .map(|a| a.vote)
            };
            if let Some((name, kind)) = asked.remove(&r) {
                assert_eq!(fault.kind.name(), name, "{fault}\n{trace:#?}");
                if let Some(kind) = kind {
                    assert_eq!(fault.kind, kind, "{fault}\n{trace:#?}");
                }
                assert_eq!(fault.offset, lane.next, "{fault}\n{trace:#?}");
            } else {
                match &fault.kind {
                    FaultKind::Diverged { .. } | FaultKind::ClosedEarly => {
                        // Against the released vote of the request it names.
                        let agreed = decisions
                            .iter()
                            .find(|d| d.seq == fault.offset)
                            .map(|d| match d.outcome {
                                FrameOutcome::Release { vote, .. } => Some(vote),
                                FrameOutcome::Undecidable => None,
                            })
                            .or_else(|| decided.get(&fault.offset).copied());
                        let Some(Some(agreed)) = agreed else {
                            panic!("{fault}: request {} was not released\n{trace:#?}", fault.offset);
                        };
                        let Some(observed) = current(fault.offset) else {
                            panic!("{fault}: it did not answer request {}\n{trace:#?}", fault.offset);
                        };
                        assert!(observed != agreed, "{fault}: it voted {observed:?} like the quorum\n{trace:#?}");
                        assert_eq!(fault.kind.name(), disagreement(agreed, observed), "{fault}\n{trace:#?}");
                    }
                    FaultKind::Late { behind } => {
                        assert!(ticked, "{fault} outside a tick\n{trace:#?}");
                        assert!(!lane.paused, "{fault}: it is paused\n{trace:#?}");
                        assert_eq!(fault.offset, lane.next, "{fault}\n{trace:#?}");
                        assert_eq!(*behind, next_seq - lane.next, "{fault}\n{trace:#?}");
                        let sent = lane.sent.min(next_seq);
                        assert!(lane.next < sent, "{fault}: it owes nothing it was sent\n{trace:#?}");
                        // A quorum of replicas answered the last request it was sent lag ago
                        // (in any incarnation: lenient), and its own grace is over.
                        let last = sent - 1;
                        let mut times: BTreeMap<usize, Duration> = BTreeMap::new();
                        for a in answers.get(&last).map(Vec::as_slice).unwrap_or_default() {
                            let t = times.entry(a.replica).or_insert(a.at);
                            *t = (*t).min(a.at);
                        }
                        let mut times: Vec<Duration> = times.into_values().collect();
                        times.sort();
                        let Some(quorum_at) = times.get(quorum - 1) else {
                            panic!("{fault}: no quorum answered request {last}\n{trace:#?}");
                        };
                        let since = (*quorum_at).max(lane.grace_from);
                        assert!(
                            now >= since.saturating_add(lag),
                            "{fault} at {now:?}: trailing only since {since:?}\n{trace:#?}"
                        );
                    }
                    _ => panic!("{fault}: a kind only fail or exclude_for reports\n{trace:#?}"),
                }
            }
        }
        assert!(asked.is_empty(), "expected faults not reported: {asked:?}\n{trace:#?}");
        for fault in &faults {
            lanes[fault.replica].live = false;
        }
        for (r, lane) in lanes.iter().enumerate() {
            assert_eq!(voter.is_live(r), lane.live, "replica {r}: live in the voter?\n{trace:#?}");
        }

        // The current incarnation's answers to `seq` by replicas in `live`.
        let votes_of = |seq: u64, live: &dyn Fn(usize) -> bool| -> Vec<(usize, Vote)> {
            let mut v: Vec<(usize, Vote)> = answers
                .get(&seq)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter(|a| a.incarnation == lanes[a.replica].incarnation && live(a.replica))
                .map(|a| (a.replica, a.vote))
                .collect();
            v.sort_by_key(|(r, _)| *r);
            v.dedup_by_key(|(r, _)| *r);
            v
        };
        let largest = |votes: &[(usize, Vote)]| -> usize {
            votes.iter().map(|(_, v)| votes.iter().filter(|(_, w)| w == v).count()).max().unwrap_or(0)
        };
        for d in &decisions {
            trace.push(Step::Decided(*d));
            assert!(d.seq >= start && d.seq < next_seq, "decision for a request never submitted: {d:?}\n{trace:#?}");
            assert!(!decided.contains_key(&d.seq), "request decided twice: {d:?}\n{trace:#?}");
            match d.outcome {
                FrameOutcome::Release { replica, vote } => {
                    // Decisions never happen in a join, so incarnations are those of the step.
                    let votes = votes_of(d.seq, &|r| live_before[r]);
                    let agreeing: Vec<usize> = votes.iter().filter(|(_, v)| *v == vote).map(|(r, _)| *r).collect();
                    assert!(
                        agreeing.len() >= quorum,
                        "released {vote:?} for {} which only {agreeing:?} voted ({votes:?})\n{trace:#?}",
                        d.seq
                    );
                    assert!(
                        agreeing.contains(&replica),
                        "released the answer of {replica}, not of {agreeing:?}\n{trace:#?}"
                    );
                    if votes.iter().any(|(_, v)| *v != vote) {
                        assert!(d.masked, "a live replica voted otherwise, not masked: {d:?} {votes:?}\n{trace:#?}");
                    }
                    decided.insert(d.seq, Some(vote));
                    undecided.remove(&d.seq);
                }
                FrameOutcome::Undecidable => {
                    let votes = votes_of(d.seq, &|r| lanes[r].live);
                    assert!(largest(&votes) < quorum, "undecidable though {votes:?} voted\n{trace:#?}");
                    decided.insert(d.seq, None);
                    undecided.remove(&d.seq);
                }
            }
        }

        // Undecided requests: no quorum agrees yet, and one still can.
        for &seq in &undecided {
            let votes = votes_of(seq, &|r| lanes[r].live);
            let waiting = lanes.iter().filter(|l| l.live && l.next <= seq).count();
            assert!(largest(&votes) < quorum, "request {seq} undecided though {votes:?} voted\n{trace:#?}");
            assert!(
                largest(&votes) + waiting >= quorum,
                "request {seq} undecided though no quorum can form: {votes:?} and {waiting} to answer\n{trace:#?}"
            );
        }

        // What is kept.
        assert!(voter.base() >= base, "base went back");
        base = voter.base();
        assert_eq!(voter.base() + voter.outstanding() as u64, next_seq, "kept requests are not base..next_seq");
        assert!(undecided.first().is_none_or(|s| *s >= base), "an undecided request was dropped\n{trace:#?}");
        // Settled requests are dropped by the calls that can settle them, not by `submit`,
        // `pause`, `resume` or time without a tick (so a request submitted while no replica is
        // live, undecidable at once, stays until the next tick: not checked then).
        let settles = matches!(kind, 0..=3 | 6..=9) || ticked;
        let any_live = lanes.iter().any(|l| l.live);
        if settles && any_live && undecided.is_empty() && lanes.iter().all(|l| !l.live || l.next == next_seq) {
            assert_eq!(voter.outstanding(), 0, "all decided and answered, still kept\n{trace:#?}");
        }
        assert_eq!(voter.next_seq(), next_seq);
        for (r, lane) in lanes.iter().enumerate() {
            if lane.live {
                assert_eq!(voter.next_answer(r), Some(lane.next), "replica {r}'s next answer\n{trace:#?}");
            }
        }
    }
});
