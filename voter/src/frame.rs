//! The frame vote: one vote per request, over the digests of the replicas' responses.
//!
//! In ordered mode every request gets a global sequence number and every replica executes the
//! requests in that order, answering each with one response frame. Replica `r`'s k-th response
//! is its answer to the k-th request it was sent, so responses need no tags: the voter counts
//! them per replica. A request's response is released as soon as `quorum` replicas answered it
//! with the same digest (of the normalised frame, computed by the caller); replicas that
//! answered differently are *diverged*. When the remaining replicas can no longer make a
//! quorum, or none forms within the vote timeout, that request is *undecidable* and its client
//! session must be aborted.
//!
//! A replica that is slow is checked as long as its answers are kept (up to `max_outstanding`
//! requests, and `lag_timeout` after a request was sent); beyond that it is *late*.
//!
//! Like the stream vote, the frame vote is pure: time is passed in, and the same calls give
//! the same decisions.
use std::collections::VecDeque;
use std::time::Duration;

use crate::fault::{Digest, Fault, FaultKind};
use crate::stream::{ConfigError, MAX_REPLICAS};

/// Parameters of a frame vote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameConfig {
    /// Number of replicas.
    pub replicas: usize,
    /// Identical responses needed to release one.
    pub quorum: usize,
    /// A request with no quorum this long after it was sent is decided without one.
    pub vote_timeout: Duration,
    /// A replica that has not answered a request this long after it was sent is late.
    pub lag_timeout: Duration,
    /// The most requests kept for slow replicas; a replica further behind is late.
    pub max_outstanding: usize,
}

impl FrameConfig {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.replicas == 0 || self.replicas > MAX_REPLICAS {
            return Err(ConfigError::Replicas(self.replicas));
        }
        if self.quorum == 0 || self.quorum > self.replicas {
            return Err(ConfigError::Quorum { quorum: self.quorum, replicas: self.replicas });
        }
        if self.max_outstanding == 0 {
            return Err(ConfigError::ZeroLimit("max_outstanding"));
        }
        Ok(())
    }
}

/// What was decided for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameOutcome {
    /// Release the response of `replica` (the lowest-numbered replica of the agreeing quorum).
    Release {
        /// Whose response bytes to send.
        replica: usize,
    },
    /// No quorum: abort the session that sent the request.
    Undecidable,
}

/// A decision for the request with sequence number `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The request's sequence number.
    pub seq: u64,
    /// What to do with it.
    pub outcome: FrameOutcome,
}

#[derive(Clone, Debug)]
struct Lane {
    live: bool,
    /// The sequence number this replica's next response answers.
    next: u64,
}

#[derive(Clone, Debug)]
struct Slot {
    sent_at: Duration,
    /// Replicas expected to answer (bit r).
    expected: u32,
    /// Replicas that answered (bit r); their digests are in [`FrameVoter::digests`].
    answered: u32,
    /// Set once decided: the agreed digest (None if undecidable).
    decided: Option<Option<Digest>>,
}

/// The frame voter of one ordered service. See the module documentation.
#[derive(Debug)]
pub struct FrameVoter {
    config: FrameConfig,
    lanes: Vec<Lane>,
    slots: VecDeque<Slot>,
    /// The digests the replicas answered with: `config.replicas` entries per slot, in slot
    /// order. One flat queue rather than a vector per slot, so a request costs no allocation.
    digests: VecDeque<Option<Digest>>,
    /// Sequence number of `slots[0]`.
    base: u64,
    next_seq: u64,
    decisions: VecDeque<Decision>,
    faults: Vec<Fault>,
}

impl FrameVoter {
    /// A voter with no replica live yet: each takes part from its [`join`](Self::join) on.
    pub fn new(config: FrameConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(FrameVoter {
            lanes: vec![Lane { live: false, next: 0 }; config.replicas],
            slots: VecDeque::new(),
            digests: VecDeque::new(),
            base: 0,
            next_seq: 0,
            decisions: VecDeque::new(),
            faults: Vec::new(),
            config,
        })
    }

    /// The sequence number the next request will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether `replica` takes part.
    pub fn is_live(&self, replica: usize) -> bool {
        self.lanes.get(replica).is_some_and(|l| l.live)
    }

    /// How many replicas take part.
    pub fn live_count(&self) -> usize {
        self.lanes.iter().filter(|l| l.live).count()
    }

    /// Requests sent and not yet answered by every live replica.
    pub fn outstanding(&self) -> usize {
        self.slots.len()
    }

    /// Takes the decisions made since the last call.
    pub fn take_decision(&mut self) -> Option<Decision> {
        self.decisions.pop_front()
    }

    /// Takes the faults found since the last call.
    pub fn take_faults(&mut self) -> Vec<Fault> {
        std::mem::take(&mut self.faults)
    }

    /// A request was sent to every live replica at `now`; returns its sequence number.
    pub fn submit(&mut self, now: Duration) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let expected = self.live_mask();
        self.slots.push_back(Slot { sent_at: now, expected, answered: 0, decided: None });
        self.digests.extend(std::iter::repeat_n(None, self.config.replicas));
        if expected == 0 || self.live_count() < self.config.quorum {
            self.decide_undecidable(self.slots.len() - 1, seq);
        }
        self.enforce_outstanding(now);
        seq
    }

    /// `replica` (re)joins: it is expected to answer every request from the next one on.
    /// Requests it is replayed to catch up are the caller's to discard.
    pub fn join(&mut self, replica: usize) {
        if let Some(lane) = self.lanes.get_mut(replica) {
            lane.live = true;
            lane.next = self.next_seq;
        }
    }

    /// `replica` answered its next request with a response whose digest is `digest`. Returns
    /// the sequence number it answered, or `None` if the replica is not live.
    pub fn response(&mut self, replica: usize, digest: Digest, now: Duration) -> Option<u64> {
        let lane = self.lanes.get_mut(replica)?;
        if !lane.live {
            return None;
        }
        let seq = lane.next;
        if seq >= self.next_seq {
            // More answers than requests.
            let expected = crate::fault::digest(b"");
            self.exclude(replica, seq, FaultKind::Diverged { expected, observed: digest }, now);
            return None;
        }
        lane.next += 1;
        let index = seq.saturating_sub(self.base) as usize;
        let Some(slot) = self.slots.get_mut(index) else { return Some(seq) };
        let bit = 1u32 << replica;
        if slot.expected & bit == 0 {
            return Some(seq);
        }
        slot.answered |= bit;
        self.digests[index * self.config.replicas + replica] = Some(digest);
        match slot.decided {
            Some(Some(agreed)) if agreed != digest => {
                self.exclude(replica, seq, FaultKind::Diverged { expected: agreed, observed: digest }, now);
            }
            Some(_) => {}
            None => self.evaluate(index, seq, now),
        }
        self.drop_settled();
        Some(seq)
    }

    /// `replica`'s connection failed.
    pub fn fail(&mut self, replica: usize, now: Duration) {
        if self.is_live(replica) {
            let seq = self.lanes[replica].next;
            self.exclude(replica, seq, FaultKind::Crashed, now);
        }
    }

    /// Excludes `replica` for a reason found outside the voter.
    pub fn exclude_for(&mut self, replica: usize, kind: FaultKind, now: Duration) {
        if self.is_live(replica) {
            let seq = self.lanes[replica].next;
            self.exclude(replica, seq, kind, now);
        }
    }

    /// The earliest time at which [`tick`](Self::tick) may change something.
    pub fn next_deadline(&self) -> Option<Duration> {
        let mut best: Option<Duration> = None;
        let mut consider = |t: Duration| best = Some(best.map_or(t, |b| b.min(t)));
        if let Some(front) = self.slots.front() {
            if front.decided.is_some() && front.expected & !front.answered & self.live_mask() != 0 {
                consider(front.sent_at.saturating_add(self.config.lag_timeout));
            }
        }
        if let Some(slot) = self.slots.iter().find(|s| s.decided.is_none()) {
            consider(slot.sent_at.saturating_add(self.config.vote_timeout));
        }
        best
    }

    /// Applies the timeouts due by `now`.
    pub fn tick(&mut self, now: Duration) {
        // Replicas that did not answer a decided request within the lag timeout.
        while let Some(front) = self.slots.front() {
            let missing = front.expected & !front.answered & self.live_mask();
            if front.decided.is_none() || missing == 0 || now < front.sent_at.saturating_add(self.config.lag_timeout) {
                break;
            }
            let seq = self.base;
            for r in 0..self.lanes.len() {
                if missing & (1 << r) != 0 {
                    self.exclude(r, seq, FaultKind::Late { behind: self.next_seq - self.lanes[r].next }, now);
                }
            }
            self.drop_settled();
        }
        // Requests with no quorum within the vote timeout: the silent replicas are late, and the
        // request is decided with the answers there are.
        let mut index = 0;
        while index < self.slots.len() {
            let slot = &self.slots[index];
            if slot.decided.is_none() {
                if now < slot.sent_at.saturating_add(self.config.vote_timeout) {
                    break;
                }
                let seq = self.base + index as u64;
                let missing = slot.expected & !slot.answered & self.live_mask();
                for r in 0..self.lanes.len() {
                    if missing & (1 << r) != 0 {
                        self.exclude(r, seq, FaultKind::Late { behind: self.next_seq - self.lanes[r].next }, now);
                    }
                }
                if let Some(slot) = self.slots.get(index) {
                    if slot.decided.is_none() {
                        self.decide_undecidable(index, seq);
                    }
                }
            }
            index += 1;
        }
        self.drop_settled();
    }

    fn live_mask(&self) -> u32 {
        self.lanes.iter().enumerate().filter(|(_, l)| l.live).fold(0, |m, (r, _)| m | (1 << r))
    }

    /// Decides slot `index` if a quorum agrees, or if none can any more.
    fn evaluate(&mut self, index: usize, seq: u64, now: Duration) {
        let quorum = self.config.quorum;
        let live = self.live_mask();
        let slot = &self.slots[index];
        let n = self.config.replicas;
        let digests = self.digests.range(index * n..(index + 1) * n);
        let mut winner: Option<(Digest, usize)> = None;
        let mut largest = 0;
        for (r, d) in digests.clone().enumerate() {
            let Some(d) = d else { continue };
            if slot.answered & live & (1 << r) == 0 {
                continue;
            }
            let count = digests
                .clone()
                .enumerate()
                .filter(|(j, e)| slot.answered & live & (1 << j) != 0 && e.as_ref() == Some(d))
                .count();
            largest = largest.max(count);
            if count >= quorum && winner.is_none() {
                winner = Some((*d, r));
            }
        }
        if let Some((agreed, replica)) = winner {
            self.slots[index].decided = Some(Some(agreed));
            self.decisions.push_back(Decision { seq, outcome: FrameOutcome::Release { replica } });
            for r in 0..n {
                let observed = self.digests[index * n + r];
                if let Some(observed) = observed.filter(|d| *d != agreed && live & (1 << r) != 0) {
                    self.exclude(r, seq, FaultKind::Diverged { expected: agreed, observed }, now);
                }
            }
            return;
        }
        let waiting = (slot.expected & !slot.answered & live).count_ones() as usize;
        if largest + waiting < quorum {
            self.decide_undecidable(index, seq);
        }
    }

    fn decide_undecidable(&mut self, index: usize, seq: u64) {
        self.slots[index].decided = Some(None);
        self.decisions.push_back(Decision { seq, outcome: FrameOutcome::Undecidable });
    }

    fn exclude(&mut self, replica: usize, seq: u64, kind: FaultKind, now: Duration) {
        let Some(lane) = self.lanes.get_mut(replica) else { return };
        if !lane.live {
            return;
        }
        lane.live = false;
        self.faults.push(Fault { replica, offset: seq, at: now, kind });
        // Requests that waited for this replica may now be decidable, or undecidable.
        for index in 0..self.slots.len() {
            if self.slots[index].decided.is_none() {
                let seq = self.base + index as u64;
                self.evaluate(index, seq, now);
            }
        }
    }

    /// Drops decided requests at the front that every live replica has answered.
    fn drop_settled(&mut self) {
        let live = self.live_mask();
        while let Some(front) = self.slots.front() {
            if front.decided.is_none() || front.expected & !front.answered & live != 0 {
                break;
            }
            self.pop_slot();
            self.base += 1;
        }
    }

    /// Forgets the front slot and its digests.
    fn pop_slot(&mut self) {
        self.slots.pop_front();
        self.digests.drain(..self.config.replicas.min(self.digests.len()));
    }

    /// A replica more than `max_outstanding` requests behind is late.
    fn enforce_outstanding(&mut self, now: Duration) {
        while self.slots.len() > self.config.max_outstanding {
            let Some(front) = self.slots.front() else { return };
            let missing = front.expected & !front.answered & self.live_mask();
            if missing == 0 {
                // Undecided with everyone answered cannot happen; drop it only if decided.
                if front.decided.is_some() {
                    self.pop_slot();
                    self.base += 1;
                    continue;
                }
                return;
            }
            let seq = self.base;
            for r in 0..self.lanes.len() {
                if missing & (1 << r) != 0 {
                    self.exclude(r, seq, FaultKind::Late { behind: self.next_seq - self.lanes[r].next }, now);
                }
            }
            self.drop_settled();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::digest;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn voter(n: usize, q: usize) -> FrameVoter {
        let mut v = FrameVoter::new(FrameConfig {
            replicas: n,
            quorum: q,
            vote_timeout: ms(1000),
            lag_timeout: ms(2000),
            max_outstanding: 100,
        })
        .expect("valid");
        (0..n).for_each(|r| v.join(r));
        v
    }

    fn decisions(v: &mut FrameVoter) -> Vec<Decision> {
        std::iter::from_fn(|| v.take_decision()).collect()
    }

    #[test]
    fn quorum_releases_and_minority_diverges() {
        let mut v = voter(3, 2);
        let s = v.submit(ms(0));
        assert_eq!(v.response(0, digest(b"+OK"), ms(1)), Some(s));
        assert!(decisions(&mut v).is_empty());
        v.response(2, digest(b"+OK"), ms(2));
        assert_eq!(decisions(&mut v), vec![Decision { seq: s, outcome: FrameOutcome::Release { replica: 0 } }]);
        v.response(1, digest(b"+KO"), ms(3));
        let faults = v.take_faults();
        assert_eq!(faults.len(), 1);
        assert_eq!((faults[0].replica, faults[0].offset, faults[0].kind.name()), (1, s, "diverged"));
        assert_eq!(v.outstanding(), 0);
    }

    #[test]
    fn responses_are_matched_in_order_per_replica() {
        let mut v = voter(3, 2);
        let a = v.submit(ms(0));
        let b = v.submit(ms(0));
        // Replica 1 answers both before the others answer anything.
        assert_eq!(v.response(1, digest(b"A"), ms(1)), Some(a));
        assert_eq!(v.response(1, digest(b"B"), ms(1)), Some(b));
        assert_eq!(v.response(0, digest(b"A"), ms(2)), Some(a));
        assert_eq!(v.response(0, digest(b"B"), ms(2)), Some(b));
        let seqs: Vec<u64> = decisions(&mut v).iter().map(|d| d.seq).collect();
        assert_eq!(seqs, vec![a, b]);
        assert!(v.take_faults().is_empty());
    }

    #[test]
    fn three_different_answers_are_undecidable() {
        let mut v = voter(3, 2);
        let s = v.submit(ms(0));
        v.response(0, digest(b"1"), ms(1));
        v.response(1, digest(b"2"), ms(1));
        assert!(decisions(&mut v).is_empty(), "replica 2 could still side with either");
        v.response(2, digest(b"3"), ms(1));
        assert_eq!(decisions(&mut v), vec![Decision { seq: s, outcome: FrameOutcome::Undecidable }]);
    }

    #[test]
    fn silent_replicas_are_late_at_the_vote_timeout() {
        let mut v = voter(3, 2);
        let s = v.submit(ms(0));
        v.response(0, digest(b"x"), ms(1));
        assert_eq!(v.next_deadline(), Some(ms(1000)));
        v.tick(ms(999));
        assert!(v.take_faults().is_empty());
        v.tick(ms(1000));
        let kinds: Vec<&str> = v.take_faults().iter().map(|f| f.kind.name()).collect();
        assert_eq!(kinds, vec!["late", "late"]);
        assert_eq!(decisions(&mut v), vec![Decision { seq: s, outcome: FrameOutcome::Undecidable }]);
    }

    #[test]
    fn a_slow_replica_is_late_after_the_lag_timeout() {
        let mut v = voter(3, 2);
        v.submit(ms(0));
        v.response(0, digest(b"x"), ms(1));
        v.response(1, digest(b"x"), ms(1));
        assert_eq!(v.next_deadline(), Some(ms(2000)));
        v.tick(ms(2000));
        let faults = v.take_faults();
        assert_eq!((faults.len(), faults[0].replica, faults[0].kind.name()), (1, 2, "late"));
        assert_eq!(v.next_deadline(), None);
    }

    #[test]
    fn a_crash_can_make_waiting_requests_undecidable() {
        let mut v = voter(3, 2);
        let s = v.submit(ms(0));
        v.response(0, digest(b"x"), ms(1));
        v.response(1, digest(b"y"), ms(1));
        v.fail(2, ms(2));
        assert_eq!(decisions(&mut v), vec![Decision { seq: s, outcome: FrameOutcome::Undecidable }]);
    }

    #[test]
    fn a_rejoined_replica_answers_from_its_join_on() {
        let mut v = voter(3, 2);
        v.fail(2, ms(0));
        let a = v.submit(ms(0));
        v.join(2);
        let b = v.submit(ms(0));
        v.response(0, digest(b"A"), ms(1));
        v.response(1, digest(b"A"), ms(1));
        assert_eq!(v.response(2, digest(b"B"), ms(1)), Some(b), "replica 2 was not sent request {a}");
        v.response(0, digest(b"B"), ms(1));
        assert!(v.take_faults().iter().all(|f| f.kind.name() == "crashed"));
        assert_eq!(decisions(&mut v).len(), 2);
    }

    #[test]
    fn extra_answers_are_diverged() {
        let mut v = voter(1, 1);
        v.submit(ms(0));
        v.response(0, digest(b"x"), ms(0));
        assert_eq!(v.response(0, digest(b"y"), ms(0)), None);
        assert_eq!(v.take_faults()[0].kind.name(), "diverged");
    }

    #[test]
    fn too_many_outstanding_requests_make_the_laggard_late() {
        let mut v = FrameVoter::new(FrameConfig {
            replicas: 3,
            quorum: 2,
            vote_timeout: ms(1000),
            lag_timeout: ms(1000),
            max_outstanding: 2,
        })
        .expect("valid");
        (0..3).for_each(|r| v.join(r));
        for _ in 0..3 {
            v.submit(ms(0));
            v.response(0, digest(b"x"), ms(0));
            v.response(1, digest(b"x"), ms(0));
        }
        let faults = v.take_faults();
        assert_eq!((faults.len(), faults[0].replica, faults[0].kind.name()), (1, 2, "late"));
    }
}
