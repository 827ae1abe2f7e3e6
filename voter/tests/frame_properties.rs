//! Property tests of the frame vote over generated schedules.
//!
//! A schedule is a list of operations on one [`FrameVoter`]: submit a request, a replica answers
//! its next request (one of a few frames, or closing), a replica fails, leaves, (re)joins at some
//! sequence number, is paused or resumed, or time passes. The test keeps its own record of who
//! answered what (per incarnation: a join starts a new one) and checks after every step:
//! - a request is decided at most once;
//! - a released vote was given for that request by at least `quorum` replicas that are live
//!   when it is decided, in their current incarnation;
//! - a replica blamed for diverging or closing early at a request answered that request
//!   otherwise than the vote that was released for it;
//! - no deadline is left in the past after a tick.
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use voter::{FaultKind, FrameConfig, FrameOutcome, FrameVoter, Vote};

#[derive(Clone, Debug)]
enum Op {
    Submit,
    /// Replica answers its next request: `Some(v)` a frame with value `v`, `None` closing.
    Answer {
        replica: usize,
        value: Option<u8>,
    },
    Fail {
        replica: usize,
    },
    Leave {
        replica: usize,
    },
    /// Joins at `next_seq - back` (clamped).
    Join {
        replica: usize,
        back: u8,
    },
    Pause {
        replica: usize,
    },
    Resume {
        replica: usize,
    },
    Tick {
        ms: u16,
    },
}

fn op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Submit),
        8 => (0..n, prop_oneof![3 => Just(Some(0u8)), 1 => (1u8..3).prop_map(Some), 1 => Just(None)])
            .prop_map(|(replica, value)| Op::Answer { replica, value }),
        1 => (0..n).prop_map(|replica| Op::Fail { replica }),
        1 => (0..n).prop_map(|replica| Op::Leave { replica }),
        1 => (0..n, 0u8..4).prop_map(|(replica, back)| Op::Join { replica, back }),
        1 => (0..n).prop_map(|replica| Op::Pause { replica }),
        1 => (0..n).prop_map(|replica| Op::Resume { replica }),
        2 => (0u16..3000).prop_map(|ms| Op::Tick { ms }),
    ]
}

fn frame(value: u8) -> Vote {
    Vote::Frame(voter::fault::digest(&[value]))
}

/// The checking model around one voter.
struct Model {
    voter: FrameVoter,
    quorum: usize,
    now: Duration,
    /// Each replica's current incarnation (bumped by every join).
    epoch: Vec<u64>,
    /// `(seq, replica) -> (epoch, vote)`.
    answers: HashMap<(u64, usize), (u64, Vote)>,
    decided: BTreeMap<u64, FrameOutcome>,
}

impl Model {
    fn step(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Submit => {
                self.voter.submit(self.now);
            }
            Op::Answer { replica, value } => {
                let vote = value.map_or(Vote::Closed, frame);
                if let Some(seq) = self.voter.response(replica, vote, self.now) {
                    self.answers.insert((seq, replica), (self.epoch[replica], vote));
                }
            }
            Op::Fail { replica } => self.voter.fail(replica, self.now),
            Op::Leave { replica } => self.voter.leave(replica, self.now),
            Op::Join { replica, back } => {
                self.epoch[replica] += 1;
                let seq = self.voter.next_seq().saturating_sub(u64::from(back));
                self.voter.join_at(replica, seq, self.now);
            }
            Op::Pause { replica } => self.voter.pause(replica),
            Op::Resume { replica } => self.voter.resume(replica, self.now),
            Op::Tick { ms } => {
                self.now += Duration::from_millis(u64::from(ms));
                self.voter.tick(self.now);
                if let Some(deadline) = self.voter.next_deadline() {
                    if deadline <= self.now {
                        return Err(format!("a deadline {deadline:?} is left behind at {:?}", self.now));
                    }
                }
            }
        }
        while let Some(d) = self.voter.take_decision() {
            if self.decided.insert(d.seq, d.outcome).is_some() {
                return Err(format!("request {} decided twice", d.seq));
            }
            if let FrameOutcome::Release { vote, .. } = d.outcome {
                let agreeing = (0..self.epoch.len())
                    .filter(|&r| self.voter.is_live(r))
                    .filter(|&r| self.answers.get(&(d.seq, r)) == Some(&(self.epoch[r], vote)))
                    .count();
                if agreeing < self.quorum {
                    return Err(format!("request {} released with {agreeing} live replicas behind it", d.seq));
                }
            }
        }
        for fault in self.voter.take_faults() {
            if matches!(fault.kind, FaultKind::Diverged { .. } | FaultKind::ClosedEarly) {
                let given = self.answers.get(&(fault.offset, fault.replica)).map(|(_, v)| *v);
                let released = match self.decided.get(&fault.offset) {
                    Some(FrameOutcome::Release { vote, .. }) => Some(*vote),
                    _ => None,
                };
                // More answers than requests is also a divergence, with nothing recorded.
                if given.is_some() && given == released {
                    return Err(format!(
                        "replica {} blamed at {} for the vote that was released",
                        fault.replica, fault.offset
                    ));
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_frame_vote_releases_only_what_a_live_quorum_gave(
        (n, quorum, ops) in (1usize..=5).prop_flat_map(|n| (Just(n), 1..=n, vec(op(n), 1..150))),
    ) {
        let config = FrameConfig { replicas: n, quorum, lag_timeout: Duration::from_millis(1000) };
        let mut model = Model {
            voter: FrameVoter::new(config).expect("valid"),
            quorum,
            now: Duration::ZERO,
            epoch: vec![0; n],
            answers: HashMap::new(),
            decided: BTreeMap::new(),
        };
        for r in 0..n {
            model.voter.join_at(r, 0, Duration::ZERO);
        }
        for (i, op) in ops.iter().enumerate() {
            let checked = model.step(op);
            prop_assert!(checked.is_ok(), "step {} ({:?}): {}", i, op, checked.err().unwrap_or_default());
        }
    }
}
