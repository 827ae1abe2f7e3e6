//! The stream vote: quorum release of N replicas' output byte streams.
//!
//! Each replica ("lane") produces a byte stream in answer to the same client input. The voter
//! keeps, per lane, the bytes it produced beyond the released offset `R` ("pending"), and
//! releases the longest prefix of pending bytes on which at least `quorum` live lanes agree
//! byte for byte. A lane whose bytes differ from what is released is *diverged*; a lane that is
//! slower than the quorum is *behind*: its later bytes are checked against the released tail,
//! which is kept (bounded) until every live lane has passed it.
//!
//! End of stream is voted too: the output is finished when `quorum` lanes closed at the
//! released offset. When no set of `quorum` live lanes can agree any more (their outputs are
//! pairwise contradictory, or too many lanes failed), or output sits unconfirmed for longer than
//! the vote timeout, the status becomes [`Status::Undecidable`] and nothing more is released.
//!
//! Decisions depend only on the sequence of calls and the times passed in, so the same inputs
//! in the same order always give the same releases, faults and verdict.
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

use crate::fault::{digest, Fault, FaultKind, DIGEST_SPAN};
use crate::prefix::common_prefix;

/// The most replicas one voter takes. Votes compare lanes pairwise, and N-version systems
/// rarely go past 7; the bound keeps the cost of a vote small and predictable.
pub const MAX_REPLICAS: usize = 32;

/// The least a lane's pending buffer grows by. Released chunks are cut from the front of the
/// buffer of the lane that led the vote, so a buffer grown exactly to each chunk would be
/// reallocated for every chunk; with some room, small chunks share one allocation, which is
/// reclaimed once the chunks cut from it are dropped.
const PENDING_GROWTH: usize = 4096;

/// Parameters of a stream vote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// Number of replicas (lanes) in the session.
    pub replicas: usize,
    /// How many identical outputs release bytes.
    pub quorum: usize,
    /// Output that no quorum confirmed for this long (with no release in between) is decided:
    /// a minority against a silent quorum is faulty, anything else is undecidable.
    pub vote_timeout: Duration,
    /// A lane whose output trails the released output by this long is late: the first released
    /// byte it has not produced yet was released this long ago.
    pub lag_timeout: Duration,
    /// The most unreleased bytes one lane may hold.
    pub max_unreleased: usize,
    /// The most released bytes kept for lanes that are behind; a lane further behind is late.
    pub max_lag_bytes: usize,
}

impl StreamConfig {
    /// A majority vote over `replicas` lanes with default timeouts and limits.
    pub fn majority(replicas: usize) -> Self {
        StreamConfig {
            replicas,
            quorum: replicas / 2 + 1,
            vote_timeout: Duration::from_secs(2),
            lag_timeout: Duration::from_secs(2),
            max_unreleased: 1 << 20,
            max_lag_bytes: 1 << 20,
        }
    }

    /// Checks the parameters; the voter refuses a config that does not pass.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.replicas == 0 || self.replicas > MAX_REPLICAS {
            return Err(ConfigError::Replicas(self.replicas));
        }
        if self.quorum == 0 || self.quorum > self.replicas {
            return Err(ConfigError::Quorum { quorum: self.quorum, replicas: self.replicas });
        }
        if self.max_unreleased == 0 {
            return Err(ConfigError::ZeroLimit("max_unreleased"));
        }
        Ok(())
    }
}

/// Why a [`StreamConfig`] was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The replica count is 0 or above [`MAX_REPLICAS`].
    Replicas(usize),
    /// The quorum is 0 or larger than the replica count.
    Quorum {
        /// The quorum asked for.
        quorum: usize,
        /// The replica count.
        replicas: usize,
    },
    /// A byte limit is 0.
    ZeroLimit(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Replicas(n) => write!(f, "replica count {n} is not in 1..={MAX_REPLICAS}"),
            ConfigError::Quorum { quorum, replicas } => {
                write!(f, "quorum {quorum} is not in 1..={replicas} (the replica count)")
            }
            ConfigError::ZeroLimit(name) => write!(f, "{name} must be at least 1"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why the vote cannot be decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undecidable {
    /// No set of `quorum` live replicas can agree any more on what comes at `offset`.
    NoQuorumPossible {
        /// The released offset.
        offset: u64,
        /// How many replicas were still live.
        live: usize,
    },
    /// Output at `offset` stayed unconfirmed for the vote timeout, and no quorum was silent.
    VoteTimeout {
        /// The released offset.
        offset: u64,
    },
}

impl fmt::Display for Undecidable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Undecidable::NoQuorumPossible { offset, live } => {
                write!(f, "no quorum possible at offset {offset} ({live} live replicas disagree)")
            }
            Undecidable::VoteTimeout { offset } => {
                write!(f, "no quorum within the vote timeout at offset {offset}")
            }
        }
    }
}

/// Where the vote stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Still voting.
    Open,
    /// A quorum closed at the released offset: the output is complete. Lanes that have not
    /// reached that end yet are still checked (see [`StreamVoter::settled`]).
    Finished,
    /// No quorum can be reached: abort the session, release nothing more.
    Undecidable(Undecidable),
}

/// One replica's output, as far as the voter has seen it.
#[derive(Debug, Default)]
struct ReplicaOutput {
    /// Excluded lanes take no further part in the vote.
    live: bool,
    /// The replica closed its output after `produced` bytes.
    closed: bool,
    /// Bytes received from the replica in total.
    produced: u64,
    /// Bytes beyond the released offset (empty while the lane is behind).
    pending: BytesMut,
    /// While behind: when the first released byte the lane still owes was released (it is late
    /// once that is `lag_timeout` ago). After the end, since when it has been expected to close.
    behind_since: Option<Duration>,
    /// How long after their release the lane produced the bytes of its last output (zero when
    /// they were not released yet): taken with [`StreamVoter::take_trail`].
    trail: Option<Duration>,
}

/// The stream voter of one session. See the module documentation.
#[derive(Debug)]
pub struct StreamVoter {
    config: StreamConfig,
    lanes: Vec<ReplicaOutput>,
    /// Bytes released so far (the output offset `R`).
    released: u64,
    /// Released bytes still needed by lanes that are behind: `[tail_start, released)`, each
    /// chunk with the time it was released.
    tail: VecDeque<(Bytes, Duration)>,
    tail_start: u64,
    /// Released bytes not yet taken by the caller.
    out: VecDeque<Bytes>,
    faults: Vec<Fault>,
    status: Status,
    /// When unreleased output last started waiting for a quorum.
    pending_since: Option<Duration>,
    /// Scratch space for one vote, kept to avoid an allocation per vote: the common prefix of
    /// the lane being considered with every lane (by lane), and the same values sorted.
    scratch: Vec<usize>,
    sorted: Vec<usize>,
    /// The common prefixes of the best lane so far with every lane (by lane).
    best_prefixes: Vec<usize>,
}

impl StreamVoter {
    /// A voter for the given parameters, all lanes live and empty.
    pub fn new(config: StreamConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let lanes = (0..config.replicas).map(|_| ReplicaOutput { live: true, ..ReplicaOutput::default() }).collect();
        Ok(StreamVoter {
            lanes,
            released: 0,
            tail: VecDeque::new(),
            tail_start: 0,
            out: VecDeque::new(),
            faults: Vec::new(),
            status: Status::Open,
            pending_since: None,
            scratch: vec![0; config.replicas],
            sorted: Vec::with_capacity(config.replicas),
            best_prefixes: vec![0; config.replicas],
            config,
        })
    }

    /// The parameters this voter runs with.
    pub fn config(&self) -> &StreamConfig {
        &self.config
    }

    /// Where the vote stands.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Bytes released so far.
    pub fn released(&self) -> u64 {
        self.released
    }

    /// Whether `replica` still takes part in the vote.
    pub fn is_live(&self, replica: usize) -> bool {
        self.lanes.get(replica).is_some_and(|l| l.live)
    }

    /// How many replicas still take part.
    pub fn live_count(&self) -> usize {
        self.lanes.iter().filter(|l| l.live).count()
    }

    /// Unreleased bytes held for all replicas together (0: no output waits for a quorum).
    pub fn unreleased_total(&self) -> usize {
        self.lanes.iter().map(|l| l.pending.len()).sum()
    }

    /// Takes how far `replica` trailed the vote with its last output: how long before it the
    /// newest byte it reproduced had been released (in the voter's time), or zero if none of it
    /// had been released yet. `None` if it produced nothing since the last call. For a metric: a
    /// replica that keeps trailing is slower than its peers before it is ever late.
    pub fn take_trail(&mut self, replica: usize) -> Option<Duration> {
        self.lanes.get_mut(replica).and_then(|l| l.trail.take())
    }

    /// Bytes received from `replica` so far.
    pub fn produced(&self, replica: usize) -> u64 {
        self.lanes.get(replica).map_or(0, |l| l.produced)
    }

    /// The fewest bytes any live replica produced: how far the slowest one got. A shell that
    /// reads a replica only while it is less than `max_lag_bytes` ahead of this keeps every
    /// replica within reach of the vote, and a slow one is then late only by `lag_timeout`.
    pub fn slowest_produced(&self) -> Option<u64> {
        self.lanes.iter().filter(|l| l.live).map(|l| l.produced).min()
    }

    /// Unreleased bytes held for `replica` (what its connection may not exceed).
    pub fn unreleased(&self, replica: usize) -> usize {
        self.lanes.get(replica).map_or(0, |l| l.pending.len())
    }

    /// Takes the next released chunk, in stream order.
    pub fn take_released(&mut self) -> Option<Bytes> {
        self.out.pop_front()
    }

    /// Takes the faults found since the last call, in the order found.
    pub fn take_faults(&mut self) -> Vec<Fault> {
        std::mem::take(&mut self.faults)
    }

    /// Whether lanes are still checked: while voting, and after the output finished until every
    /// live lane has reached the same end (a minority that is slower than the quorum is still
    /// checked against the released bytes, so its faults are found and reported too).
    fn watching(&self) -> bool {
        match self.status {
            Status::Open => true,
            Status::Finished => !self.settled(),
            Status::Undecidable(_) => false,
        }
    }

    /// Whether nothing is left to check: the vote is undecidable, or the output finished and
    /// every live lane closed at its end (faulty lanes were excluded on the way).
    pub fn settled(&self) -> bool {
        match self.status {
            Status::Open => false,
            Status::Undecidable(_) => true,
            Status::Finished => self.lanes.iter().all(|l| !l.live || (l.closed && l.produced == self.released)),
        }
    }

    /// The earliest time at which [`tick`](Self::tick) may change something.
    pub fn next_deadline(&self) -> Option<Duration> {
        if !self.watching() {
            return None;
        }
        let lag = self
            .lanes
            .iter()
            .filter(|l| l.live)
            .filter_map(|l| l.behind_since)
            .min()
            .map(|t| t.saturating_add(self.config.lag_timeout));
        let vote = self.pending_since.map(|t| t.saturating_add(self.config.vote_timeout));
        match (lag, vote) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Output `data` arrived from `replica` at time `now`.
    pub fn push(&mut self, replica: usize, data: &[u8], now: Duration) {
        if !self.watching() || data.is_empty() {
            return;
        }
        let Some(lane) = self.lanes.get(replica) else { return };
        if !lane.live || lane.closed {
            return;
        }
        let mut data = data;
        let mut reproduced = false;
        // A lane behind the released offset must reproduce the released bytes first.
        if lane.produced < self.released {
            reproduced = true;
            let start = lane.produced;
            let overlap = data.len().min((self.released - start) as usize);
            if let Some(at) = self.tail_mismatch(start, &data[..overlap]) {
                let expected = self.tail_span(start + at as u64);
                let observed = &data[at..data.len().min(at + DIGEST_SPAN)];
                let kind = FaultKind::Diverged { expected: digest(&expected), observed: digest(observed) };
                self.exclude(replica, start + at as u64, kind, now);
                self.vote(now);
                return;
            }
            let produced = start + overlap as u64;
            // How long ago the newest of the bytes it reproduced now was released.
            let newest_released_at = self.released_at(produced - 1);
            // Still behind: its lag is the age of the first byte it still owes. A replica that
            // keeps up, only later than the quorum, is so never late for trailing; one that
            // trails by more than `lag_timeout` is, however much it progresses meanwhile.
            let owed_since = self.released_at(produced);
            let lane = &mut self.lanes[replica];
            lane.produced = produced;
            lane.trail = newest_released_at.map(|at| now.saturating_sub(at));
            data = &data[overlap..];
            if produced == self.released {
                if self.status == Status::Open {
                    lane.behind_since = None;
                }
            } else if let Some(since) = owed_since {
                lane.behind_since = Some(since);
            }
            self.trim_tail(now);
        }
        if !data.is_empty() && self.status == Status::Finished {
            // Output past the end a quorum agreed on.
            let kind =
                FaultKind::Diverged { expected: digest(b""), observed: digest(&data[..data.len().min(DIGEST_SPAN)]) };
            self.exclude(replica, self.released, kind, now);
            return;
        }
        if !data.is_empty() {
            let lane = &mut self.lanes[replica];
            if !reproduced {
                // Ahead of the vote, or level with it: it trails by nothing.
                lane.trail = Some(Duration::ZERO);
            }
            if lane.pending.capacity() - lane.pending.len() < data.len() {
                lane.pending.reserve(data.len().max(PENDING_GROWTH));
            }
            lane.pending.extend_from_slice(data);
            lane.produced += data.len() as u64;
            let unreleased = lane.pending.len();
            if self.pending_since.is_none() {
                self.pending_since = Some(now);
            }
            if unreleased > self.config.max_unreleased {
                let kind = FaultKind::Flooded { unreleased: unreleased as u64 };
                self.exclude(replica, self.released, kind, now);
            }
        }
        self.vote(now);
    }

    /// `replica` closed its output (end of stream) at time `now`.
    pub fn close(&mut self, replica: usize, now: Duration) {
        if !self.watching() {
            return;
        }
        let Some(lane) = self.lanes.get_mut(replica) else { return };
        if !lane.live || lane.closed {
            return;
        }
        lane.closed = true;
        if lane.produced < self.released {
            let offset = lane.produced;
            self.exclude(replica, offset, FaultKind::ClosedEarly, now);
        } else if self.status == Status::Finished {
            // It ended where the quorum did: nothing more to wait for.
            lane.behind_since = None;
        }
        self.vote(now);
    }

    /// `replica`'s connection failed at time `now`: it is excluded as crashed.
    pub fn fail(&mut self, replica: usize, now: Duration) {
        if !self.watching() {
            return;
        }
        let Some(lane) = self.lanes.get(replica) else { return };
        if !lane.live {
            return;
        }
        if self.status == Status::Finished && lane.produced == self.released {
            // It had produced all of the agreed output: a reset instead of a close loses nothing.
            self.close(replica, now);
            return;
        }
        let offset = lane.produced.min(self.released);
        self.exclude(replica, offset, FaultKind::Crashed, now);
        self.vote(now);
    }

    /// Excludes `replica` for a reason found outside the voter (for example, it stopped
    /// accepting input). Reported as a fault like any other.
    pub fn exclude_for(&mut self, replica: usize, kind: FaultKind, now: Duration) {
        if !self.watching() || !self.is_live(replica) {
            return;
        }
        let offset = self.lanes[replica].produced.min(self.released);
        self.exclude(replica, offset, kind, now);
        self.vote(now);
    }

    /// Applies the timeouts that expired by `now`: late lanes, and output that no quorum
    /// confirmed within the vote timeout.
    pub fn tick(&mut self, now: Duration) {
        if !self.watching() {
            return;
        }
        for i in 0..self.lanes.len() {
            let lane = &self.lanes[i];
            if !lane.live {
                continue;
            }
            if let Some(since) = lane.behind_since {
                if now >= since.saturating_add(self.config.lag_timeout) {
                    let behind = self.released - lane.produced;
                    let offset = lane.produced;
                    self.exclude(i, offset, FaultKind::Late { behind }, now);
                }
            }
        }
        self.trim_tail(now);
        if let Some(since) = self.pending_since {
            if now >= since.saturating_add(self.config.vote_timeout) {
                self.decide_unconfirmed(now);
            }
        }
        self.vote(now);
    }

    /// Output waited for a quorum for the whole vote timeout. If a quorum of lanes is silent at
    /// the released offset (they produced nothing more, or closed there), the lanes holding
    /// output are the faulty minority; otherwise nobody can tell who is right.
    fn decide_unconfirmed(&mut self, now: Duration) {
        let released = self.released;
        let silent = self.lanes.iter().filter(|l| l.live && l.produced == released && l.pending.is_empty()).count();
        if silent < self.config.quorum {
            self.status = Status::Undecidable(Undecidable::VoteTimeout { offset: released });
            return;
        }
        for i in 0..self.lanes.len() {
            let lane = &self.lanes[i];
            if !lane.live || lane.pending.is_empty() {
                continue;
            }
            let unreleased = lane.pending.len();
            let kind = if unreleased >= self.config.max_unreleased {
                FaultKind::Flooded { unreleased: unreleased as u64 }
            } else {
                FaultKind::Diverged {
                    expected: digest(b""),
                    observed: digest(&lane.pending[..unreleased.min(DIGEST_SPAN)]),
                }
            };
            self.exclude(i, released, kind, now);
        }
        self.pending_since = None;
    }

    /// One vote: release what a quorum agrees on, then check for end of stream and for a vote
    /// that can no longer be decided.
    fn vote(&mut self, now: Duration) {
        if self.status != Status::Open {
            return;
        }
        self.release(now);
        self.check_end(now);
        if self.status == Status::Open {
            self.check_decidable();
        }
    }

    /// Releases the longest prefix of pending output that `quorum` live lanes share.
    fn release(&mut self, now: Duration) {
        let quorum = self.config.quorum;
        // For each lane, the length on which it and `quorum - 1` others agree is the
        // quorum-th largest common prefix between it and every live lane (itself included).
        // Each pair of lanes is compared at most once per vote: a lane's prefix with itself is
        // its length, and the best lane's prefixes with the others are kept for the check below.
        let mut best: Option<(usize, usize)> = None; // (lane, agreed length)
        for i in 0..self.lanes.len() {
            let li = &self.lanes[i];
            let len = li.pending.len();
            if !li.live || len == 0 || best.is_some_and(|(_, b)| len <= b) {
                continue;
            }
            self.sorted.clear();
            for (j, lj) in self.lanes.iter().enumerate() {
                let same = if !lj.live {
                    0
                } else if j == i {
                    len
                } else {
                    common_prefix(&li.pending, &lj.pending)
                };
                self.scratch[j] = same;
                if lj.live {
                    self.sorted.push(same);
                }
            }
            if self.sorted.len() < quorum {
                continue;
            }
            self.sorted.sort_unstable_by(|a, b| b.cmp(a));
            let agreed = self.sorted[quorum - 1];
            if agreed > 0 && best.is_none_or(|(_, b)| agreed > b) {
                best = Some((i, agreed));
                self.best_prefixes.copy_from_slice(&self.scratch);
            }
        }
        let Some((rep, len)) = best else { return };

        let start = self.released;
        let chunk = self.lanes[rep].pending.split_to(len).freeze();
        for j in 0..self.lanes.len() {
            if j == rep || !self.lanes[j].live || self.lanes[j].pending.is_empty() {
                continue;
            }
            let pending = &self.lanes[j].pending;
            let shared = pending.len().min(len);
            // The chunk is the best lane's pending prefix, so its common prefix with this lane
            // was measured above.
            let same = self.best_prefixes[j].min(shared);
            if same < shared {
                let kind = FaultKind::Diverged {
                    expected: digest(&chunk[same..len.min(same + DIGEST_SPAN)]),
                    observed: digest(&pending[same..pending.len().min(same + DIGEST_SPAN)]),
                };
                self.exclude(j, start + same as u64, kind, now);
            } else {
                self.lanes[j].pending.advance(shared);
            }
        }
        self.released += len as u64;
        // The chunk joins the tail before any lane is excluded below: `exclude` trims the tail,
        // and trimming an empty tail moves its start to the new released offset, which would
        // misplace the chunk. The trim at the end drops it again if no lane is behind.
        self.tail.push_back((chunk.clone(), now));

        // Lanes that produced less than the new released offset are now behind.
        for j in 0..self.lanes.len() {
            let lane = &mut self.lanes[j];
            if !lane.live || lane.produced >= self.released {
                continue;
            }
            if lane.closed {
                let offset = lane.produced;
                self.exclude(j, offset, FaultKind::ClosedEarly, now);
                continue;
            }
            lane.behind_since.get_or_insert(now);
        }
        self.trim_tail(now);
        self.out.push_back(chunk);
        self.pending_since = self.lanes.iter().any(|l| l.live && !l.pending.is_empty()).then_some(now);
    }

    /// The output is finished when `quorum` live lanes closed exactly at the released offset.
    /// Lanes still holding output past that end produced bytes the quorum did not.
    fn check_end(&mut self, now: Duration) {
        let released = self.released;
        let closed_here =
            self.lanes.iter().filter(|l| l.live && l.closed && l.produced == released && l.pending.is_empty()).count();
        if closed_here < self.config.quorum {
            return;
        }
        for i in 0..self.lanes.len() {
            let lane = &self.lanes[i];
            if lane.live && !lane.pending.is_empty() {
                let kind = FaultKind::Diverged {
                    expected: digest(b""),
                    observed: digest(&lane.pending[..lane.pending.len().min(DIGEST_SPAN)]),
                };
                self.exclude(i, released, kind, now);
            }
        }
        self.status = Status::Finished;
        self.pending_since = None;
        // The remaining live lanes must still reach the same end within the lag timeout.
        for lane in self.lanes.iter_mut().filter(|l| l.live && !l.closed) {
            lane.behind_since.get_or_insert(now);
        }
    }

    /// Undecidable when no `quorum` live lanes are still mutually consistent: for every lane
    /// taken as the longest claim, fewer than `quorum` lanes have claims that are prefixes of it
    /// (a closed lane only matches a claim of exactly its own length).
    fn check_decidable(&mut self) {
        let lanes = &self.lanes;
        let consistent_with = |i: usize| {
            let pi = &lanes[i].pending;
            lanes
                .iter()
                .enumerate()
                .filter(|(_, lj)| lj.live)
                .filter(|&(j, lj)| {
                    let pj = &lj.pending;
                    pj.len() <= pi.len()
                        && (j == i || common_prefix(pj, pi) == pj.len())
                        && (!lj.closed || pj.len() == pi.len())
                })
                .count()
        };
        let best = (0..lanes.len()).filter(|&i| lanes[i].live).map(consistent_with).max();
        if best.unwrap_or(0) < self.config.quorum {
            let live = self.live_count();
            self.status = Status::Undecidable(Undecidable::NoQuorumPossible { offset: self.released, live });
        }
    }

    fn exclude(&mut self, replica: usize, offset: u64, kind: FaultKind, now: Duration) {
        let lane = &mut self.lanes[replica];
        lane.live = false;
        lane.pending = BytesMut::new();
        lane.behind_since = None;
        self.faults.push(Fault { replica, offset, at: now, kind });
        if !self.lanes.iter().any(|l| l.live && !l.pending.is_empty()) {
            self.pending_since = None;
        }
        self.trim_tail(now);
    }

    /// Drops released bytes that no live lane still needs, and declares late a lane that is
    /// further behind than `max_lag_bytes`.
    fn trim_tail(&mut self, now: Duration) {
        loop {
            let slowest = self
                .lanes
                .iter()
                .enumerate()
                .filter(|(_, l)| l.live && l.produced < self.released)
                .min_by_key(|(_, l)| l.produced);
            let needed_from = slowest.map_or(self.released, |(_, l)| l.produced);
            while let Some((front, _)) = self.tail.front() {
                let end = self.tail_start + front.len() as u64;
                if end > needed_from {
                    break;
                }
                self.tail_start = end;
                self.tail.pop_front();
            }
            if self.tail.is_empty() {
                self.tail_start = self.released;
            }
            match slowest {
                Some((i, l)) if self.released - l.produced > self.config.max_lag_bytes as u64 => {
                    let (offset, behind) = (l.produced, self.released - l.produced);
                    let lane = &mut self.lanes[i];
                    lane.live = false;
                    lane.behind_since = None;
                    self.faults.push(Fault { replica: i, offset, at: now, kind: FaultKind::Late { behind } });
                }
                _ => return,
            }
        }
    }

    /// Index in `data` of the first byte that differs from the released tail at `start`.
    fn tail_mismatch(&self, start: u64, data: &[u8]) -> Option<usize> {
        let mut offset = self.tail_start;
        let mut checked = 0;
        for (chunk, _) in &self.tail {
            if checked == data.len() {
                break;
            }
            let end = offset + chunk.len() as u64;
            if end > start + checked as u64 {
                let from = (start + checked as u64 - offset) as usize;
                let want = &chunk[from..];
                let got = &data[checked..data.len().min(checked + want.len())];
                let same = common_prefix(want, got);
                if same < got.len() {
                    return Some(checked + same);
                }
                checked += got.len();
            }
            offset = end;
        }
        debug_assert_eq!(checked, data.len(), "the tail covers every lane that is behind");
        None
    }

    /// When the released byte at `offset` was released (`None` if the tail no longer holds it).
    fn released_at(&self, offset: u64) -> Option<Duration> {
        let mut end = self.tail_start;
        for (chunk, at) in &self.tail {
            end += chunk.len() as u64;
            if end > offset {
                return Some(*at);
            }
        }
        None
    }

    /// Up to [`DIGEST_SPAN`] released bytes from `start`, for a fault report.
    fn tail_span(&self, start: u64) -> Vec<u8> {
        let mut span = Vec::new();
        let mut offset = self.tail_start;
        for (chunk, _) in &self.tail {
            let end = offset + chunk.len() as u64;
            if end > start {
                let from = start.saturating_sub(offset) as usize;
                let take = (DIGEST_SPAN - span.len()).min(chunk.len() - from);
                span.extend_from_slice(&chunk[from..from + take]);
                if span.len() == DIGEST_SPAN {
                    break;
                }
            }
            offset = end;
        }
        span
    }
}
