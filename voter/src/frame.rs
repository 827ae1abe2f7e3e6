//! The frame vote: one vote per request, over the digests of the replicas' responses.
//!
//! In ordered mode every request gets a global sequence number and every replica executes the
//! requests in that order, answering each with one response frame. Replica `r`'s k-th answer
//! after it joined at sequence number `j` answers request `j + k`, so answers need no tags: the
//! voter counts them per replica. An answer is a [`Vote`]: the digest of a frame (of the
//! normalised frame, computed by the caller), or [`Vote::Closed`] when the replica closed its
//! connection instead of answering.
//!
//! A request is decided as soon as `quorum` live replicas voted alike: its answer is released
//! (even when the quorum's vote is `Closed`: then every replica refused the request alike, which
//! is the service's behaviour and no replica's fault). Live replicas that voted otherwise are
//! faulty: *diverged*, or *closed_early* for a replica that closed where the quorum answered.
//! When the replicas still to vote can no longer make a quorum, the request is *undecidable*
//! and its client session must be aborted (fail-stop).
//!
//! **Lateness is judged against the quorum's progress, not the clock alone.** A replica is
//! *late* once a quorum of replicas answered the last request it was sent `lag_timeout` ago,
//! plus as long again as the quorum itself took over that request, and it still owes an answer.
//! A request that every replica is slow on (a slow command) makes nobody late: the service is
//! slow, no replica differs. And replicas that share CPUs drift apart in proportion to the work
//! they do: one that needs 1.4 seconds for a script the others ran in one is slow, not faulty
//! (a fixed allowance would exclude it under load and, with another replica out, stop the
//! service); on a request the quorum answered at once, the allowance is `lag_timeout` alone. The voter never gives up on a request
//! by itself; a caller that wants a per-request limit answers its client with an error and
//! keeps voting.
//!
//! A replica can be *paused* (it is the source of a state transfer and answers later): it is
//! not late while paused, and gets a fresh `lag_timeout` from when it resumes. A replica
//! *joins* at a given sequence number ([`FrameVoter::join_at`]): it is expected to answer every
//! request from there on, and nothing it voted before (in an earlier incarnation) counts any
//! more.
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
    /// Identical votes needed to decide a request.
    pub quorum: usize,
    /// A replica that has not answered a request this long after a quorum answered it (plus
    /// the time the quorum took over it) is late.
    pub lag_timeout: Duration,
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
        Ok(())
    }
}

/// One replica's answer to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Vote {
    /// A response frame with this digest.
    Frame(Digest),
    /// The replica closed its connection instead of answering.
    Closed,
}

/// What was decided for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameOutcome {
    /// A quorum voted alike: release the answer of `replica` (the lowest-numbered replica of
    /// the agreeing quorum). With `vote: Vote::Closed` the quorum closed its connections: the
    /// request gets an error and was not executed by them.
    Release {
        /// Whose answer to release.
        replica: usize,
        /// What the quorum voted.
        vote: Vote,
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
    /// A replica expected to answer had failed or voted otherwise by the time of the decision:
    /// the answer was *masked* rather than agreed by everyone.
    pub masked: bool,
}

#[derive(Clone, Debug)]
struct ReplicaLane {
    live: bool,
    paused: bool,
    /// The sequence number this replica's next answer answers.
    next: u64,
    /// The requests below this one were sent to it (`u64::MAX`: every request submitted, for
    /// a caller that does not say, see [`FrameVoter::sent_to`]).
    sent: u64,
    /// Lateness is counted from no earlier than this (its join, or the end of a pause).
    grace_from: Duration,
    /// It closed its connection, with requests up to this one sent: its `Closed` vote slides
    /// forward to here while the quorum answers (see [`FrameVoter::closed`]).
    closed_through: Option<u64>,
    /// ...and its process ended with it ([`FrameVoter::closed_gone`]): it may have died on any
    /// request it was sent, having lost the answers to those before.
    gone: bool,
    /// How long its answers take, from their requests' submission: a moving average over about
    /// the last 16 (see [`FrameVoter::answer_latency`]); `None` before its first answer.
    latency: Option<Duration>,
}

impl ReplicaLane {
    /// A lane that takes no part yet, its next answer `next`, late for nothing before
    /// `grace_from` plus the lag timeout once it does.
    fn idle(next: u64, grace_from: Duration) -> ReplicaLane {
        ReplicaLane {
            live: false,
            paused: false,
            next,
            sent: u64::MAX,
            grace_from,
            closed_through: None,
            gone: false,
            latency: None,
        }
    }
}

#[derive(Clone, Debug)]
struct RequestVote {
    /// Replicas expected to answer (bit r).
    expected: u32,
    /// Replicas that answered (bit r); their votes are in [`FrameVoter::votes`].
    answered: u32,
    /// When it was submitted.
    submitted: Duration,
    /// When a quorum of replicas had answered (whatever they voted).
    quorum_at: Option<Duration>,
    /// Set once decided: the agreed vote (None if undecidable).
    decided: Option<Option<Vote>>,
    /// Some expected replica failed or voted otherwise before the decision.
    masked: bool,
    /// Decided `Closed` by replicas that may each have closed on a later request (they were
    /// sent more, and a crash loses the answers to a whole pipelined batch): whether this
    /// request ran is not known, so a replica that answers it is not wrong.
    ambiguous: bool,
}

/// The frame voter of one ordered service. See the module documentation.
#[derive(Debug)]
pub struct FrameVoter {
    config: FrameConfig,
    lanes: Vec<ReplicaLane>,
    slots: VecDeque<RequestVote>,
    /// The replicas' votes: `config.replicas` entries per slot, in slot order. One flat queue
    /// rather than a vector per slot, so a request costs no allocation.
    votes: VecDeque<Option<Vote>>,
    /// Sequence number of `slots[0]`.
    base: u64,
    next_seq: u64,
    decisions: VecDeque<Decision>,
    faults: Vec<Fault>,
    /// Replicas that answered a request decided `Closed` ambiguously: no fault, but their state
    /// may now hold a request the others' do not (see [`take_resyncs`](FrameVoter::take_resyncs)).
    resyncs: Vec<(usize, u64)>,
    /// Replicas whose `Closed` vote slid past a request and is to be cast on the next.
    slides: Vec<usize>,
}

impl FrameVoter {
    /// A voter whose first request gets sequence number 0; no replica is live yet: each takes
    /// part from its [`join_at`](Self::join_at) on.
    pub fn new(config: FrameConfig) -> Result<Self, ConfigError> {
        Self::starting_at(config, 0)
    }

    /// A voter whose first request gets sequence number `seq` (a host that joins an ordered
    /// stream in the middle).
    pub fn starting_at(config: FrameConfig, seq: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(FrameVoter {
            lanes: vec![ReplicaLane::idle(seq, Duration::ZERO); config.replicas],
            slots: VecDeque::new(),
            votes: VecDeque::new(),
            base: seq,
            next_seq: seq,
            decisions: VecDeque::new(),
            slides: Vec::new(),
            faults: Vec::new(),
            resyncs: Vec::new(),
            config,
        })
    }

    /// The parameters.
    pub fn config(&self) -> &FrameConfig {
        &self.config
    }

    /// The sequence number the next request will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The oldest request still kept (undecided, or not yet answered by every live replica).
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Whether `replica` takes part.
    pub fn is_live(&self, replica: usize) -> bool {
        self.lanes.get(replica).is_some_and(|l| l.live)
    }

    /// How many replicas take part.
    pub fn live_count(&self) -> usize {
        self.lanes.iter().filter(|l| l.live).count()
    }

    /// The sequence number `replica`'s next answer answers.
    pub fn next_answer(&self, replica: usize) -> Option<u64> {
        self.lanes.get(replica).map(|l| l.next)
    }

    /// Requests kept: undecided, or not yet answered by every live replica.
    pub fn outstanding(&self) -> usize {
        self.slots.len()
    }

    /// Takes the next decision made since the last call, in the order they were made.
    pub fn take_decision(&mut self) -> Option<Decision> {
        self.decisions.pop_front()
    }

    /// Takes the faults found since the last call.
    pub fn take_faults(&mut self) -> Vec<Fault> {
        std::mem::take(&mut self.faults)
    }

    /// Takes the replicas (with the request) that answered a request a quorum decided `Closed`
    /// ambiguously, since the last call. They are out of the vote, without a fault: they did
    /// what a healthy server does with a request it was sent, but whether the others ran it is
    /// not known, so their states may differ. The caller rebuilds them from the others.
    pub fn take_resyncs(&mut self) -> Vec<(usize, u64)> {
        std::mem::take(&mut self.resyncs)
    }

    /// A request was sent to every live replica at `now`; returns its sequence number.
    pub fn submit(&mut self, now: Duration) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let expected = self.live_mask();
        self.slots.push_back(RequestVote {
            expected,
            answered: 0,
            submitted: now,
            quorum_at: None,
            decided: None,
            masked: false,
            ambiguous: false,
        });
        self.votes.extend(std::iter::repeat_n(None, self.config.replicas));
        if (expected.count_ones() as usize) < self.config.quorum {
            let index = self.slots.len() - 1;
            self.decide_undecidable(index, seq);
            // With nobody to answer it, it is settled at once.
            self.drop_settled();
        }
        seq
    }

    /// `replica` (re)joins at `seq`: it is expected to answer every request from `seq` on
    /// (requests already submitted included), and is late for none of them before
    /// `now + lag_timeout`. Whatever it voted before no longer counts: a joining replica is a
    /// new incarnation, and its predecessor's votes are not its own.
    pub fn join_at(&mut self, replica: usize, seq: u64, now: Duration) {
        if replica >= self.lanes.len() {
            return;
        }
        // A join below `base` is fine: answers to requests no longer kept are ignored.
        let seq = seq.min(self.next_seq);
        let bit = 1u32 << replica;
        let n = self.config.replicas;
        for (index, slot) in self.slots.iter_mut().enumerate() {
            slot.answered &= !bit;
            self.votes[index * n + replica] = None;
            if self.base + index as u64 >= seq && slot.decided.is_none() {
                slot.expected |= bit;
            } else {
                slot.expected &= !bit;
            }
        }
        self.lanes[replica] = ReplicaLane { live: true, ..ReplicaLane::idle(seq, now) };
        // Requests it no longer answers (it was live and joined past them) may have become
        // undecidable: nobody may be left to make their quorum.
        self.reevaluate(now);
        self.settle_slides(now);
    }

    /// The requests below `upto` were sent to `replica` (its lateness is judged against the
    /// quorum's answer to the last of them). A caller that never says so has every submitted
    /// request count as sent.
    pub fn sent_to(&mut self, replica: usize, upto: u64) {
        if let Some(lane) = self.lanes.get_mut(replica) {
            lane.sent = upto;
        }
    }

    /// `replica` answers later than its requests are sent (it is the source of a state
    /// transfer): it is not late while paused.
    pub fn pause(&mut self, replica: usize) {
        if let Some(lane) = self.lanes.get_mut(replica) {
            lane.paused = true;
        }
    }

    /// Ends a pause (or, after it voted `Closed`, its reconnection): `replica` is late for
    /// nothing before `now + lag_timeout`.
    pub fn resume(&mut self, replica: usize, now: Duration) {
        if let Some(lane) = self.lanes.get_mut(replica) {
            lane.paused = false;
            lane.grace_from = now;
            lane.closed_through = None;
            lane.gone = false;
        }
    }

    /// Changes the lag timeout (a reload): lateness from now on is judged with it.
    pub fn set_lag_timeout(&mut self, lag_timeout: Duration) {
        self.config.lag_timeout = lag_timeout;
    }

    /// Adds a replica (a reload): not live, it takes part from its [`join_at`](Self::join_at)
    /// on, like the others at the start. Returns its number. The votes already cast are kept.
    pub fn add_replica(&mut self) -> Result<usize, ConfigError> {
        let n = self.config.replicas;
        let grown = FrameConfig { replicas: n + 1, ..self.config.clone() };
        grown.validate()?;
        // One more vote per kept request: the flat queue is laid out again.
        let mut votes = VecDeque::with_capacity(self.slots.len() * (n + 1));
        for index in 0..self.slots.len() {
            votes.extend(self.votes.range(index * n..(index + 1) * n).copied());
            votes.push_back(None);
        }
        self.votes = votes;
        self.lanes.push(ReplicaLane::idle(self.next_seq, Duration::ZERO));
        self.config = grown;
        Ok(n)
    }

    /// A reload: the replicas `leaving` take part no more (without a fault), and the quorum is
    /// `quorum`, both at once: the requests not decided yet are decided with the new set and
    /// quorum together (never with a lower quorum among replicas that are leaving). A lower
    /// quorum may decide them at once; a higher one than the replicas that may still answer
    /// them makes them undecidable.
    pub fn reconfigure(&mut self, leaving: &[usize], quorum: usize, now: Duration) -> Result<(), ConfigError> {
        let changed = FrameConfig { quorum, ..self.config.clone() };
        changed.validate()?;
        self.config = changed;
        for &r in leaving {
            if let Some(lane) = self.lanes.get_mut(r) {
                lane.live = false;
            }
        }
        self.reevaluate(now);
        self.settle_slides(now);
        Ok(())
    }

    /// How long `replica`'s answers take, from their requests' submission (waiting behind
    /// earlier ones included): a moving average over about its last 16 answers; `None` before
    /// its first.
    pub fn answer_latency(&self, replica: usize) -> Option<Duration> {
        self.lanes.get(replica).and_then(|l| l.latency)
    }

    /// `replica` answered its next request with `vote`. Returns the sequence number it
    /// answered, or `None` if the replica is not live (or answered more than it was asked).
    pub fn response(&mut self, replica: usize, vote: Vote, now: Duration) -> Option<u64> {
        let seq = self.respond(replica, vote, now);
        self.settle_slides(now);
        seq
    }

    fn respond(&mut self, replica: usize, vote: Vote, now: Duration) -> Option<u64> {
        let lane = self.lanes.get_mut(replica)?;
        if !lane.live {
            return None;
        }
        let seq = lane.next;
        if seq >= self.next_seq {
            // More answers than requests.
            let kind = match vote {
                Vote::Frame(observed) => FaultKind::Diverged { expected: crate::fault::digest(b""), observed },
                Vote::Closed => FaultKind::ClosedEarly,
            };
            self.exclude(replica, seq, kind, now);
            return None;
        }
        lane.next += 1;
        let Some(index) = self.slot_index(seq) else {
            return Some(seq);
        };
        let bit = 1u32 << replica;
        let slot = &mut self.slots[index];
        if slot.expected & bit == 0 {
            return Some(seq);
        }
        slot.answered |= bit;
        let took = now.saturating_sub(slot.submitted);
        let lane = &mut self.lanes[replica];
        lane.latency = Some(lane.latency.map_or(took, |average| (average * 15 + took) / 16));
        self.votes[index * self.config.replicas + replica] = Some(vote);
        let live = self.live_mask();
        let slot = &mut self.slots[index];
        if slot.quorum_at.is_none() && ((slot.answered & live).count_ones() as usize) >= self.config.quorum {
            slot.quorum_at = Some(now);
        }
        match slot.decided {
            Some(Some(agreed)) if agreed != vote => self.differs(replica, seq, agreed, vote, now),
            Some(_) => {}
            None => self.evaluate(index, seq, now),
        }
        self.drop_settled();
        Some(seq)
    }

    /// `replica` closed its connection (or its process ended) owing answers. Which request
    /// it closed on cannot be known: a server that refuses a request answers those before it
    /// and closes there (Redis on a protocol error), but one that dies may lose the answers it
    /// had not written yet (Redis runs pipelined requests, then writes their answers, so a
    /// crash on the last loses them all). So its `Closed` vote goes to the first request it
    /// owes and, each time the quorum answered that one, slides on to the next, up to the last
    /// request it was sent (it abstains on those it slid past: neither late nor wrong there).
    /// If a quorum closes on one of them alike, the service refused that request; if the quorum
    /// answered them all, this replica closed early. Returns where its vote rests now (it may
    /// slide further as the others answer; see [`closed_vote`](Self::closed_vote)).
    pub fn closed(&mut self, replica: usize, now: Duration) -> Option<u64> {
        let lane = self.lanes.get_mut(replica)?;
        if !lane.live {
            return None;
        }
        lane.closed_through = Some(lane.sent.min(self.next_seq).saturating_sub(1));
        self.respond(replica, Vote::Closed, now)?;
        self.settle_slides(now);
        Some(self.lanes[replica].next.saturating_sub(1))
    }

    /// Like [`closed`](Self::closed), for a replica whose process ended too: it may have died on
    /// any of the requests it was sent. A quorum of such replicas closing on one request leaves
    /// open whether that request ran: a replica that then answers it is not wrong (see
    /// [`take_resyncs`](Self::take_resyncs)).
    pub fn closed_gone(&mut self, replica: usize, now: Duration) -> Option<u64> {
        if let Some(lane) = self.lanes.get_mut(replica).filter(|l| l.live) {
            lane.gone = true;
        }
        self.closed(replica, now)
    }

    /// Where the `Closed` vote of a replica that closed rests now (see [`closed`](Self::closed)).
    pub fn closed_vote(&self, replica: usize) -> Option<u64> {
        let lane = self.lanes.get(replica)?;
        lane.closed_through.map(|_| lane.next.saturating_sub(1))
    }

    /// Where request `seq`'s vote is kept, if it still is.
    fn slot_index(&self, seq: u64) -> Option<usize> {
        seq.checked_sub(self.base).map(|i| i as usize).filter(|i| *i < self.slots.len())
    }

    /// Casts again the `Closed` votes that slid past a request the quorum answered.
    fn settle_slides(&mut self, now: Duration) {
        while let Some(replica) = self.slides.pop() {
            self.respond(replica, Vote::Closed, now);
        }
        self.drop_settled();
    }

    /// `replica` voted `observed` on `seq`, where the quorum agreed on `agreed`: excluded,
    /// unless it is a `Closed` vote that may still slide on.
    fn differs(&mut self, replica: usize, seq: u64, agreed: Vote, observed: Vote, now: Duration) {
        let index = self.slot_index(seq);
        if agreed == Vote::Closed
            && matches!(observed, Vote::Frame(_))
            && index.is_some_and(|i| self.slots[i].ambiguous)
            && self.lanes[replica].live
        {
            // It ran a request the others may not have: out of the vote, to be rebuilt; no fault.
            self.lanes[replica].live = false;
            self.resyncs.push((replica, seq));
            self.reevaluate(now);
            return;
        }
        let lane = &mut self.lanes[replica];
        if observed == Vote::Closed && lane.live && lane.closed_through.is_some_and(|last| seq < last) {
            lane.next = seq + 1;
            if let Some(index) = index {
                let bit = 1u32 << replica;
                let slot = &mut self.slots[index];
                slot.expected &= !bit;
                slot.answered &= !bit;
                self.votes[index * self.config.replicas + replica] = None;
            }
            self.slides.push(replica);
            return;
        }
        self.exclude(replica, seq, disagreement(agreed, observed), now);
    }

    /// `replica`'s connection or process failed.
    pub fn fail(&mut self, replica: usize, now: Duration) {
        self.exclude_for(replica, FaultKind::Crashed, now);
    }

    /// Excludes `replica` for a reason found outside the voter.
    pub fn exclude_for(&mut self, replica: usize, kind: FaultKind, now: Duration) {
        if self.is_live(replica) {
            let seq = self.lanes[replica].next;
            self.exclude(replica, seq, kind, now);
            self.settle_slides(now);
        }
    }

    /// Takes `replica` out without a fault (its host or its connection is being rebuilt, or it
    /// left): requests waiting for it may become decidable or undecidable.
    pub fn leave(&mut self, replica: usize, now: Duration) {
        let Some(lane) = self.lanes.get_mut(replica) else { return };
        if !lane.live {
            return;
        }
        lane.live = false;
        self.reevaluate(now);
        self.settle_slides(now);
    }

    /// The earliest time at which [`tick`](Self::tick) may change something.
    pub fn next_deadline(&self) -> Option<Duration> {
        (0..self.lanes.len()).filter_map(|r| self.late_at(r)).min()
    }

    /// Applies the timeouts due by `now`: replicas that trail the quorum by `lag_timeout` (and
    /// the quorum's own time over the request) are late.
    pub fn tick(&mut self, now: Duration) {
        for r in 0..self.lanes.len() {
            if self.late_at(r).is_some_and(|at| now >= at) {
                let seq = self.lanes[r].next;
                let behind = self.next_seq.saturating_sub(seq);
                self.exclude(r, seq, FaultKind::Late { behind }, now);
            }
        }
        self.settle_slides(now);
    }

    /// When replica `r` is late, if it still owes an answer: `lag_timeout` after a quorum had
    /// answered the *last* request `r` was sent, plus the time that quorum took over it (or
    /// `lag_timeout` after its grace began, if later); `None` if it owes nothing. Not the
    /// request it owes first: a server that batches its replies (Redis writes the answers to
    /// pipelined requests after running them all) may hold an early answer back behind a slow
    /// command it runs in step with the others; it is late only once the quorum has answered
    /// everything it was sent.
    fn late_at(&self, r: usize) -> Option<Duration> {
        let lane = &self.lanes[r];
        // One that closed owes nothing more: its vote is judged as the others answer.
        if !lane.live || lane.paused || lane.closed_through.is_some() {
            return None;
        }
        let sent = lane.sent.min(self.next_seq);
        if lane.next >= sent {
            return None;
        }
        let owed = lane.next.checked_sub(self.base).map(|i| i as usize).and_then(|i| self.slots.get(i))?;
        if owed.expected & (1 << r) == 0 {
            return None;
        }
        let index = (sent - 1).checked_sub(self.base).map(|i| i as usize)?;
        let last = self.slots.get(index)?;
        let quorum_at = last.quorum_at?;
        // The quorum's time over that request: from when it was submitted, or from when the
        // quorum had answered the one before (a request pipelined behind others waits for them).
        let previous = index.checked_sub(1).and_then(|i| self.slots.get(i)).and_then(|s| s.quorum_at);
        let started = previous.map_or(last.submitted, |p| p.max(last.submitted));
        let took = quorum_at.saturating_sub(started);
        Some(quorum_at.saturating_add(took).max(lane.grace_from).saturating_add(self.config.lag_timeout))
    }

    fn live_mask(&self) -> u32 {
        self.lanes.iter().enumerate().filter(|(_, l)| l.live).fold(0, |m, (r, _)| m | (1 << r))
    }

    /// Decides slot `index` if a quorum agrees, or if none can any more.
    fn evaluate(&mut self, index: usize, seq: u64, now: Duration) {
        let quorum = self.config.quorum;
        let live = self.live_mask();
        let n = self.config.replicas;
        let slot = &self.slots[index];
        let counted = slot.answered & live;
        let votes = self.votes.range(index * n..(index + 1) * n);
        let mut winner: Option<(Vote, usize)> = None;
        let mut largest = 0;
        for (r, v) in votes.clone().enumerate() {
            let Some(v) = v else { continue };
            if counted & (1 << r) == 0 {
                continue;
            }
            let count =
                votes.clone().enumerate().filter(|(j, e)| counted & (1 << j) != 0 && e.as_ref() == Some(v)).count();
            largest = largest.max(count);
            if count >= quorum && winner.is_none() {
                winner = Some((*v, r));
            }
        }
        if let Some((agreed, replica)) = winner {
            let differing: Vec<(usize, Vote)> = (0..n)
                .filter_map(|r| {
                    self.votes[index * n + r].filter(|v| *v != agreed && live & (1 << r) != 0).map(|v| (r, v))
                })
                .collect();
            // Every replica that closed here died, and may have died on a later request it was
            // sent (a live server that refuses a request closes on that one).
            let ambiguous = agreed == Vote::Closed
                && (0..n)
                    .filter(|r| counted & (1 << r) != 0 && self.votes[index * n + r] == Some(agreed))
                    .all(|r| self.lanes[r].gone && self.lanes[r].closed_through.is_some_and(|last| last > seq));
            let slot = &mut self.slots[index];
            slot.decided = Some(Some(agreed));
            slot.ambiguous = ambiguous;
            // Masked: a replica that was expected is gone or differs.
            slot.masked |= slot.expected & !live != 0 || !differing.is_empty();
            let masked = slot.masked;
            self.decisions.push_back(Decision {
                seq,
                outcome: FrameOutcome::Release { replica, vote: agreed },
                masked,
            });
            for (r, observed) in differing {
                self.differs(r, seq, agreed, observed, now);
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
        self.decisions.push_back(Decision { seq, outcome: FrameOutcome::Undecidable, masked: false });
    }

    fn exclude(&mut self, replica: usize, seq: u64, kind: FaultKind, now: Duration) {
        let Some(lane) = self.lanes.get_mut(replica) else { return };
        if !lane.live {
            return;
        }
        lane.live = false;
        self.faults.push(Fault { replica, offset: seq, at: now, kind });
        self.reevaluate(now);
    }

    /// Requests that waited for a replica that is gone may now be decidable, or undecidable.
    fn reevaluate(&mut self, now: Duration) {
        let live = self.live_mask();
        for index in 0..self.slots.len() {
            let slot = &mut self.slots[index];
            if slot.decided.is_none() {
                slot.masked |= slot.expected & !live != 0;
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
            self.slots.pop_front();
            self.votes.drain(..self.config.replicas.min(self.votes.len()));
            self.base += 1;
        }
    }
}

/// The fault of a live replica that voted `observed` where the quorum voted `agreed`.
fn disagreement(agreed: Vote, observed: Vote) -> FaultKind {
    match (agreed, observed) {
        (_, Vote::Closed) => FaultKind::ClosedEarly,
        (Vote::Frame(expected), Vote::Frame(observed)) => FaultKind::Diverged { expected, observed },
        (Vote::Closed, Vote::Frame(observed)) => FaultKind::Diverged { expected: crate::fault::digest(b""), observed },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::digest;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn frame(bytes: &[u8]) -> Vote {
        Vote::Frame(digest(bytes))
    }

    fn voter(n: usize, q: usize) -> FrameVoter {
        let mut v = FrameVoter::new(FrameConfig { replicas: n, quorum: q, lag_timeout: ms(2000) }).expect("valid");
        (0..n).for_each(|r| v.join_at(r, 0, ms(0)));
        v
    }

    fn decisions(v: &mut FrameVoter) -> Vec<(u64, FrameOutcome)> {
        std::iter::from_fn(|| v.take_decision()).map(|d| (d.seq, d.outcome)).collect()
    }

    fn kinds(v: &mut FrameVoter) -> Vec<(usize, &'static str)> {
        v.take_faults().iter().map(|f| (f.replica, f.kind.name())).collect()
    }

    #[test]
    fn quorum_releases_and_minority_diverges() {
        let mut v = voter(3, 2);
        let s = v.submit(ms(0));
        assert_eq!(v.response(0, frame(b"+OK"), ms(1)), Some(s));
        assert!(decisions(&mut v).is_empty());
        v.response(2, frame(b"+OK"), ms(2));
        assert_eq!(decisions(&mut v), vec![(s, FrameOutcome::Release { replica: 0, vote: frame(b"+OK") })]);
        v.response(1, frame(b"+KO"), ms(3));
        let faults = v.take_faults();
        assert_eq!((faults.len(), faults[0].replica, faults[0].offset, faults[0].kind.name()), (1, 1, s, "diverged"));
        assert_eq!(v.outstanding(), 0);
    }

    #[test]
    fn a_replica_added_keeps_the_votes_cast_and_votes_once_it_joins() {
        let mut v = voter(3, 2);
        let a = v.submit(ms(0));
        assert_eq!(v.response(0, frame(b"A"), ms(1)), Some(a));
        assert_eq!(v.add_replica(), Ok(3));
        assert!(!v.is_live(3));
        // The vote replica 0 cast before is still counted: replica 1 completes the quorum.
        assert_eq!(v.response(1, frame(b"A"), ms(2)), Some(a));
        assert_eq!(decisions(&mut v), [(a, FrameOutcome::Release { replica: 0, vote: frame(b"A") })]);
        let b = v.submit(ms(3));
        v.join_at(3, b, ms(3));
        v.reconfigure(&[], 3, ms(3)).expect("3 of 4");
        for r in [0, 3] {
            assert_eq!(v.response(r, frame(b"B"), ms(4)), Some(b));
        }
        assert!(decisions(&mut v).is_empty(), "two of a quorum of three");
        assert_eq!(v.response(1, frame(b"X"), ms(5)), Some(b));
        assert_eq!(v.response(2, frame(b"A"), ms(6)), Some(a));
        assert_eq!(v.response(2, frame(b"B"), ms(6)), Some(b));
        assert_eq!(decisions(&mut v), [(b, FrameOutcome::Release { replica: 0, vote: frame(b"B") })]);
        assert_eq!(v.take_faults().iter().map(|f| f.replica).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn a_new_quorum_decides_the_requests_waiting() {
        let mut v = voter(3, 3);
        let a = v.submit(ms(0));
        let b = v.submit(ms(0));
        for r in [0, 1] {
            assert_eq!(v.response(r, frame(b"A"), ms(1)), Some(a));
        }
        assert!(decisions(&mut v).is_empty());
        v.reconfigure(&[], 2, ms(2)).expect("2 of 3");
        assert_eq!(decisions(&mut v), [(a, FrameOutcome::Release { replica: 0, vote: frame(b"A") })]);
        // Higher than the replicas left to answer: undecidable.
        assert_eq!(v.reconfigure(&[2], 4, ms(3)), Err(ConfigError::Quorum { quorum: 4, replicas: 3 }));
        assert!(v.is_live(2), "a refused change changes nothing");
        v.reconfigure(&[2], 3, ms(3)).expect("3 of 3");
        assert_eq!(decisions(&mut v), [(b, FrameOutcome::Undecidable)]);
    }

    #[test]
    fn replicas_leave_and_the_quorum_drops_in_one_step() {
        // Two of five have answered alike, two others differently: a quorum of two among all
        // five would pick one; with the two leaving first, the two left decide.
        let mut v = voter(5, 3);
        let a = v.submit(ms(0));
        for (r, answer) in [(0, b"A"), (1, b"A"), (3, b"B"), (4, b"B")] {
            assert_eq!(v.response(r, frame(answer), ms(1)), Some(a));
        }
        assert!(decisions(&mut v).is_empty());
        v.reconfigure(&[3, 4], 2, ms(2)).expect("2 of the 3 left");
        assert_eq!(decisions(&mut v), [(a, FrameOutcome::Release { replica: 0, vote: frame(b"A") })]);
        assert!(v.take_faults().is_empty(), "leaving is no fault");
    }

    #[test]
    fn no_more_replicas_than_the_vote_takes() {
        let mut v = voter(MAX_REPLICAS - 1, 2);
        assert_eq!(v.add_replica(), Ok(MAX_REPLICAS - 1));
        assert_eq!(v.add_replica(), Err(ConfigError::Replicas(MAX_REPLICAS + 1)));
        assert_eq!(v.config().replicas, MAX_REPLICAS);
    }

    #[test]
    fn answer_latency_is_a_moving_average_from_submission() {
        let mut v = voter(3, 2);
        assert_eq!(v.answer_latency(0), None);
        let a = v.submit(ms(0));
        assert_eq!(v.response(0, frame(b"A"), ms(0)), Some(a));
        assert_eq!(v.answer_latency(0), Some(ms(0)), "a first answer in the same instant counts");
        let b = v.submit(ms(10));
        assert_eq!(v.response(0, frame(b"B"), ms(26)), Some(b));
        assert_eq!(v.answer_latency(0), Some(ms(1)), "(0 * 15 + 16) / 16");
        assert_eq!(v.response(1, frame(b"A"), ms(50)), Some(a));
        assert_eq!(v.answer_latency(1), Some(ms(50)));
        assert_eq!(v.answer_latency(2), None);
    }

    #[test]
    fn responses_are_matched_in_order_per_replica() {
        let mut v = voter(3, 2);
        let a = v.submit(ms(0));
        let b = v.submit(ms(0));
        assert_eq!(v.response(1, frame(b"A"), ms(1)), Some(a));
        assert_eq!(v.response(1, frame(b"B"), ms(1)), Some(b));
        assert_eq!(v.response(0, frame(b"A"), ms(2)), Some(a));
        assert_eq!(v.response(0, frame(b"B"), ms(2)), Some(b));
        let seqs: Vec<u64> = decisions(&mut v).iter().map(|d| d.0).collect();
        assert_eq!(seqs, vec![a, b]);
        assert!(v.take_faults().is_empty());
    }

    #[test]
    fn three_different_answers_are_undecidable() {
        let mut v = voter(3, 2);
        let s = v.submit(ms(0));
        v.response(0, frame(b"1"), ms(1));
        v.response(1, frame(b"2"), ms(1));
        assert!(decisions(&mut v).is_empty(), "replica 2 could still side with either");
        v.response(2, frame(b"3"), ms(1));
        assert_eq!(decisions(&mut v), vec![(s, FrameOutcome::Undecidable)]);
    }

    #[test]
    fn a_request_every_replica_is_slow_on_makes_nobody_late() {
        let mut v = voter(3, 2);
        let s = v.submit(ms(0));
        assert_eq!(v.next_deadline(), None, "nobody trails a quorum yet");
        v.tick(ms(60_000));
        assert!(v.take_faults().is_empty() && decisions(&mut v).is_empty());
        // A slow command: everyone answers after a long time, alike.
        v.response(0, frame(b"+OK"), ms(60_001));
        v.response(1, frame(b"+OK"), ms(60_002));
        v.response(2, frame(b"+OK"), ms(60_003));
        assert_eq!(decisions(&mut v), vec![(s, FrameOutcome::Release { replica: 0, vote: frame(b"+OK") })]);
        assert!(v.take_faults().is_empty());
    }

    #[test]
    fn a_replica_trailing_the_quorum_is_late_after_the_lag_timeout() {
        let mut v = voter(3, 2);
        v.submit(ms(0));
        v.response(0, frame(b"x"), ms(2));
        assert_eq!(v.next_deadline(), None, "one answer is not a quorum's");
        v.response(1, frame(b"x"), ms(3));
        assert_eq!(v.next_deadline(), Some(ms(2006)), "lag counted from the quorum's answer, plus its 3 ms");
        v.tick(ms(2005));
        assert!(v.take_faults().is_empty());
        v.tick(ms(2006));
        let faults = v.take_faults();
        assert_eq!((faults.len(), faults[0].replica, faults[0].kind.clone()), (1, 2, FaultKind::Late { behind: 1 }));
        assert_eq!(v.next_deadline(), None);
    }

    /// Replicas that share CPUs drift apart in proportion to the work: on a request the quorum
    /// took five seconds over, one is late only after as long again, plus the lag timeout.
    #[test]
    fn the_allowance_grows_with_the_quorums_own_time_over_the_request() {
        let mut v = voter(3, 2);
        v.submit(ms(0));
        v.response(0, frame(b"x"), ms(5000));
        v.response(1, frame(b"x"), ms(5001));
        assert_eq!(v.next_deadline(), Some(ms(12_002)), "5001 + 5001 + 2000");
        v.tick(ms(12_001));
        assert!(v.take_faults().is_empty(), "1.4 times the quorum's time is slow, not faulty");
        v.response(2, frame(b"x"), ms(12_001));
        assert!(v.take_faults().is_empty());
        // Its time is counted from when the quorum answered the request before: a request
        // pipelined behind a slow one does not inherit that one's time.
        let quick = v.submit(ms(5000));
        let after = v.submit(ms(5000));
        v.response(0, frame(b"q"), ms(13_000));
        v.response(1, frame(b"q"), ms(13_000));
        v.response(0, frame(b"a"), ms(13_010));
        v.response(1, frame(b"a"), ms(13_010));
        assert_eq!((quick, after), (1, 2));
        assert_eq!(v.next_deadline(), Some(ms(15_020)), "13010 + 10 + 2000");
    }

    #[test]
    fn an_answer_held_back_behind_a_slow_command_is_not_late() {
        let mut v = voter(3, 2);
        let s = v.submit(ms(0));
        let slow = v.submit(ms(0));
        for r in 0..3 {
            v.sent_to(r, slow + 1);
        }
        // Replicas 0 and 1 answer `s` at once; replica 2 had both in one read and, like Redis,
        // writes its answer to `s` only after running the slow command.
        v.response(0, frame(b"s"), ms(1));
        v.response(1, frame(b"s"), ms(1));
        assert_eq!(v.next_deadline(), None, "the quorum has not answered all replica 2 was sent");
        v.tick(ms(4000));
        assert!(v.take_faults().is_empty());
        v.response(0, frame(b"slow"), ms(5000));
        v.response(1, frame(b"slow"), ms(5000));
        // The slow command took the quorum from 1 ms (its answer to `s`) to 5 s.
        assert_eq!(v.next_deadline(), Some(ms(5000 + 4999 + 2000)));
        v.response(2, frame(b"s"), ms(5001));
        v.response(2, frame(b"slow"), ms(5001));
        assert!(v.take_faults().is_empty());
        assert_eq!(decisions(&mut v).iter().map(|d| d.0).collect::<Vec<_>>(), vec![s, slow]);
        // A replica that truly hangs is late a lag after the quorum answered all it was sent.
        let t = v.submit(ms(6000));
        for r in 0..3 {
            v.sent_to(r, t + 1);
        }
        v.response(0, frame(b"t"), ms(6001));
        v.response(1, frame(b"t"), ms(6001));
        v.tick(ms(8001));
        assert!(v.take_faults().is_empty());
        v.tick(ms(8002));
        assert_eq!(kinds(&mut v), vec![(2, "late")]);
    }

    #[test]
    fn two_disagreeing_answers_wait_for_the_third_until_it_is_late() {
        let mut v = voter(3, 2);
        let s = v.submit(ms(0));
        v.response(0, frame(b"1"), ms(1));
        v.response(1, frame(b"2"), ms(1));
        v.tick(ms(2002));
        assert_eq!(kinds(&mut v), vec![(2, "late")]);
        assert_eq!(decisions(&mut v), vec![(s, FrameOutcome::Undecidable)]);
    }

    #[test]
    fn a_crash_can_make_waiting_requests_undecidable() {
        let mut v = voter(3, 2);
        let s = v.submit(ms(0));
        v.response(0, frame(b"x"), ms(1));
        v.response(1, frame(b"y"), ms(1));
        v.fail(2, ms(2));
        assert_eq!(decisions(&mut v), vec![(s, FrameOutcome::Undecidable)]);
    }

    #[test]
    fn a_quorum_that_closes_decides_the_request_and_blames_nobody() {
        let mut v = voter(3, 2);
        let s = v.submit(ms(0));
        v.response(0, Vote::Closed, ms(1));
        v.response(1, Vote::Closed, ms(1));
        assert_eq!(decisions(&mut v), vec![(s, FrameOutcome::Release { replica: 0, vote: Vote::Closed })]);
        v.response(2, Vote::Closed, ms(2));
        assert!(v.take_faults().is_empty());
        assert_eq!(v.live_count(), 3);
        // They go on with the next request.
        let t = v.submit(ms(3));
        for r in 0..3 {
            assert_eq!(v.response(r, frame(b"+PONG"), ms(4)), Some(t));
        }
        assert_eq!(decisions(&mut v).len(), 1);
    }

    #[test]
    fn a_replica_that_answers_a_request_crashed_replicas_closed_on_is_resynced_not_blamed() {
        // 0 and 1 were sent `a` and `b` together and died (on `b`, having run `a`, or on
        // `a`: nothing tells); 2, behind, answers `a` as a healthy server does.
        let mut v = voter(3, 2);
        let a = v.submit(ms(0));
        v.submit(ms(0));
        v.closed_gone(0, ms(1));
        v.closed_gone(1, ms(1));
        assert_eq!(decisions(&mut v), vec![(a, FrameOutcome::Release { replica: 0, vote: Vote::Closed })]);
        v.response(2, frame(b"+OK"), ms(2));
        assert!(v.take_faults().is_empty(), "a replica that ran what it was sent is not faulty");
        assert_eq!(v.take_resyncs(), vec![(2, a)]);
        assert!(!v.is_live(2), "its state may differ from theirs: it leaves the vote to be rebuilt");
        // Closed connections of live processes are the service refusing `a`: answering it is
        // diverging from the service.
        let mut v = voter(3, 2);
        v.submit(ms(0));
        v.submit(ms(0));
        v.closed(0, ms(1));
        v.closed_gone(1, ms(1));
        decisions(&mut v);
        v.response(2, frame(b"+OK"), ms(2));
        assert_eq!(kinds(&mut v), vec![(2, "diverged")]);
        assert!(v.take_resyncs().is_empty());
    }

    #[test]
    fn a_closed_vote_slides_over_the_requests_the_quorum_answered() {
        // Replica 2 was sent `a` and `b` together, ran both, and died on `b` before it wrote
        // the answer to `a`; the others answered `a` and died on `b` too.
        let mut v = voter(3, 2);
        let a = v.submit(ms(0));
        let b = v.submit(ms(0));
        assert_eq!(v.closed(2, ms(1)), Some(a));
        v.response(0, frame(b"+OK"), ms(2));
        v.response(1, frame(b"+OK"), ms(2));
        assert_eq!(v.closed_vote(2), Some(b), "the quorum answered `a`: its vote slid on");
        assert_eq!(v.closed(0, ms(3)), Some(b));
        assert_eq!(v.closed(1, ms(3)), Some(b));
        assert!(v.take_faults().is_empty());
        assert_eq!(
            decisions(&mut v),
            vec![
                (a, FrameOutcome::Release { replica: 0, vote: frame(b"+OK") }),
                (b, FrameOutcome::Release { replica: 0, vote: Vote::Closed })
            ]
        );
        // A server that answers what came before and closes on the request it refuses: the
        // vote rests there.
        let mut v = voter(3, 2);
        let a = v.submit(ms(0));
        v.submit(ms(0));
        v.response(2, frame(b"+OK"), ms(1));
        assert_eq!(v.closed(2, ms(1)), Some(a + 1));
        assert_eq!(v.closed(0, ms(1)), Some(a));
        assert_eq!(v.closed(1, ms(1)), Some(a));
        // 0 and 1 closed on `a`, where 2 answered: 2 is outvoted; nobody else is blamed.
        assert_eq!(kinds(&mut v), vec![(2, "diverged")]);
        // Had the others answered everything it was sent, it closed early (and only then: it
        // is not late meanwhile).
        let mut v = voter(3, 2);
        v.submit(ms(0));
        let b = v.submit(ms(0));
        v.closed(2, ms(1));
        v.tick(ms(10_000));
        assert!(v.take_faults().is_empty());
        for r in 0..2 {
            v.response(r, frame(b"+OK"), ms(10_001));
        }
        assert!(v.take_faults().is_empty());
        for r in 0..2 {
            v.response(r, frame(b"+OK"), ms(10_001));
        }
        assert_eq!(v.take_faults().iter().map(|f| (f.replica, f.offset)).collect::<Vec<_>>(), vec![(2, b)]);
    }

    #[test]
    fn a_replica_that_closes_where_the_quorum_answered_closed_early() {
        let mut v = voter(3, 2);
        v.submit(ms(0));
        v.response(2, Vote::Closed, ms(1));
        v.response(0, frame(b"+OK"), ms(2));
        v.response(1, frame(b"+OK"), ms(2));
        assert_eq!(kinds(&mut v), vec![(2, "closed_early")]);
    }

    #[test]
    fn a_rejoined_replica_answers_from_its_join_and_its_old_votes_are_forgotten() {
        let mut v = voter(3, 2);
        let a = v.submit(ms(0));
        // Replica 2 answers `a` wrongly... in an incarnation that then dies before anyone else
        // answered.
        v.response(2, frame(b"wrong"), ms(1));
        v.fail(2, ms(2));
        v.take_faults();
        let b = v.submit(ms(3));
        // The new incarnation joins at `b`: it was never sent `a`.
        v.join_at(2, b, ms(3));
        assert_eq!(v.response(2, frame(b"B"), ms(4)), Some(b));
        v.response(0, frame(b"A"), ms(5));
        v.response(1, frame(b"A"), ms(5));
        v.response(0, frame(b"B"), ms(5));
        v.response(1, frame(b"B"), ms(5));
        let d: Vec<u64> = decisions(&mut v).iter().map(|d| d.0).collect();
        assert_eq!(d, vec![a, b]);
        assert!(v.take_faults().is_empty(), "the new incarnation is not blamed for the old one's vote");
        // Nobody is late for `a`, which replica 2 was never sent, however long it takes.
        v.tick(ms(100_000));
        assert!(v.take_faults().is_empty());
        assert_eq!(v.outstanding(), 0);
    }

    #[test]
    fn a_join_at_an_undecided_request_is_late_only_after_its_grace() {
        let mut v = voter(3, 2);
        let a = v.submit(ms(0));
        // Two answers (a quorum's worth) that disagree: undecided, and waiting for replica 2.
        v.response(0, frame(b"A"), ms(1));
        v.response(1, frame(b"B"), ms(1));
        assert!(decisions(&mut v).is_empty());
        assert_eq!(v.next_deadline(), Some(ms(2002)));
        // Its connection is replaced: it joins again at `a` at 10 s, long after `a`'s quorum
        // answered.
        v.join_at(2, a, ms(10_000));
        assert_eq!(v.next_deadline(), Some(ms(12_000)), "late only a lag after its join");
        assert_eq!(v.response(2, frame(b"A"), ms(10_001)), Some(a));
        assert_eq!(decisions(&mut v), vec![(a, FrameOutcome::Release { replica: 0, vote: frame(b"A") })]);
        assert_eq!(kinds(&mut v), vec![(1, "diverged")]);
    }

    #[test]
    fn a_live_replica_joining_past_an_undecided_request_leaves_it_decidable_or_undecidable() {
        // Found by the frame_vote fuzz target: two different answers, and the third replica,
        // which could have sided with either, joins again past the request.
        let mut v = voter(3, 2);
        let a = v.submit(ms(0));
        v.response(0, frame(b"x"), ms(1));
        v.response(1, frame(b"y"), ms(1));
        assert!(decisions(&mut v).is_empty());
        v.join_at(2, a + 1, ms(2));
        assert_eq!(decisions(&mut v), vec![(a, FrameOutcome::Undecidable)]);
        let b = v.submit(ms(3));
        (0..3).for_each(|r| assert_eq!(v.response(r, frame(b"z"), ms(4)), Some(b)));
        assert_eq!(v.outstanding(), 0, "later requests are not kept behind the undecided one");
    }

    #[test]
    fn a_join_does_not_expect_answers_to_decided_requests() {
        let mut v = voter(3, 2);
        v.fail(2, ms(0));
        v.take_faults();
        let a = v.submit(ms(0));
        v.response(0, frame(b"A"), ms(1));
        let b = v.submit(ms(1));
        v.response(1, frame(b"A"), ms(2));
        assert_eq!(decisions(&mut v).len(), 1);
        // Replica 2 joins at `a`: `a` is decided, `b` is not.
        v.join_at(2, a, ms(3));
        assert_eq!(v.response(2, frame(b"A"), ms(4)), Some(a));
        assert_eq!(v.response(2, frame(b"B"), ms(4)), Some(b));
        v.response(0, frame(b"B"), ms(5));
        assert_eq!(decisions(&mut v), vec![(b, FrameOutcome::Release { replica: 0, vote: frame(b"B") })]);
        v.response(1, frame(b"B"), ms(5));
        assert!(v.take_faults().is_empty());
        assert_eq!(v.outstanding(), 0);
    }

    #[test]
    fn a_paused_replica_is_not_late_until_a_lag_after_it_resumes() {
        let mut v = voter(3, 2);
        v.pause(2);
        v.submit(ms(0));
        v.response(0, frame(b"x"), ms(1));
        v.response(1, frame(b"x"), ms(1));
        assert_eq!(v.next_deadline(), None);
        v.tick(ms(50_000));
        assert!(v.take_faults().is_empty());
        v.resume(2, ms(50_000));
        assert_eq!(v.next_deadline(), Some(ms(52_000)));
        v.tick(ms(52_000));
        assert_eq!(kinds(&mut v), vec![(2, "late")]);
    }

    #[test]
    fn extra_answers_are_diverged() {
        let mut v = voter(1, 1);
        v.submit(ms(0));
        v.response(0, frame(b"x"), ms(0));
        assert_eq!(v.response(0, frame(b"y"), ms(0)), None);
        assert_eq!(v.take_faults()[0].kind.name(), "diverged");
    }

    #[test]
    fn a_voter_can_start_at_any_sequence_number() {
        let mut v =
            FrameVoter::starting_at(FrameConfig { replicas: 2, quorum: 2, lag_timeout: ms(10) }, 1_000).expect("valid");
        v.join_at(0, 1_000, ms(0));
        v.join_at(1, 1_000, ms(0));
        assert_eq!(v.submit(ms(0)), 1_000);
        assert_eq!(v.response(0, frame(b"x"), ms(0)), Some(1_000));
        assert_eq!(v.response(1, frame(b"x"), ms(0)), Some(1_000));
        assert_eq!(decisions(&mut v), vec![(1_000, FrameOutcome::Release { replica: 0, vote: frame(b"x") })]);
    }

    #[test]
    fn masked_is_set_when_a_minority_fails_or_differs() {
        let mut v = voter(3, 2);
        v.submit(ms(0));
        for r in 0..3 {
            v.response(r, frame(b"x"), ms(1));
        }
        v.submit(ms(2));
        v.response(0, frame(b"y"), ms(3));
        v.response(1, frame(b"z"), ms(3));
        v.response(2, frame(b"y"), ms(3));
        let d: Vec<bool> = std::iter::from_fn(|| v.take_decision()).map(|d| d.masked).collect();
        assert_eq!(d, vec![false, true]);
    }
}
