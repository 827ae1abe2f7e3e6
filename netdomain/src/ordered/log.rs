//! The replay log: the state-changing requests of the global order, each with its sequence
//! number, for rebuilding a replica without stopping the others.
//!
//! It is bounded by bytes: when it is full, the oldest entries go, and the log then covers the
//! order only from some sequence number on ([`ReplayLog::covers_from`]). A replica whose state
//! is known at a point the log still covers (a fresh process while the log reaches back to the
//! start; a replica rebuilt by a checkpoint at a recent point) catches up by replaying the log
//! from there. A request that every replica refused (closed on) is taken out again: it changed
//! nothing and must not be replayed. An entry is marked *answered* once any replica answered
//! it (voting, or replaying it): a replica that dies or closes replaying an answered entry is
//! faulty; one that does so on an entry no replica ever answered (it was in flight when every
//! replica died on an earlier one) found a request the service refuses, which then leaves the
//! log.
//!
//! A unit (a transaction: `MULTI` ... `EXEC`, sent whole) leaves the log whole: if any part of
//! it was refused, no part of it changed anything (a server drops a transaction whose
//! connection closed before `EXEC` ran), and replaying the rest would leave a replica inside an
//! open transaction, queueing whatever comes next.
use std::collections::VecDeque;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

#[derive(Debug)]
struct Entry {
    seq: u64,
    /// `None` for a request taken out again.
    request: Option<Bytes>,
    answered: bool,
    /// The request is part of a unit that goes on with the next one.
    continues: bool,
}

/// See the module documentation.
#[derive(Debug)]
pub struct ReplayLog {
    entries: VecDeque<Entry>,
    bytes: usize,
    max_bytes: usize,
    /// Every logged request with a sequence number from here on is in `entries`.
    covered_from: u64,
    /// How many requests were ever logged.
    logged_ever: u64,
}

impl ReplayLog {
    /// An empty log of at most `max_bytes` bytes of requests.
    pub fn new(max_bytes: usize) -> ReplayLog {
        ReplayLog { entries: VecDeque::new(), bytes: 0, max_bytes, covered_from: 0, logged_ever: 0 }
    }

    /// A log that starts at request `seq`, with the replicas holding a state from before it (a
    /// state copied from another host): it covers nothing before `seq`, and counts as having
    /// logged something (the replicas' state is not the initial one).
    pub fn starting_at(max_bytes: usize, seq: u64) -> ReplayLog {
        ReplayLog { entries: VecDeque::new(), bytes: 0, max_bytes, covered_from: seq, logged_ever: 1 }
    }

    /// Records request `seq` (`continues`: a unit goes on with the next request); drops the
    /// oldest entries while the log is over its bound.
    pub fn push(&mut self, seq: u64, request: Bytes, continues: bool) {
        self.logged_ever += 1;
        self.bytes += request.len();
        self.entries.push_back(Entry { seq, request: Some(request), answered: false, continues });
        while self.bytes > self.max_bytes {
            let Some(old) = self.entries.pop_front() else { break };
            self.bytes -= old.request.map_or(0, |r| r.len());
            self.covered_from = old.seq + 1;
        }
    }

    fn find(&mut self, seq: u64) -> Option<&mut Entry> {
        let i = self.entries.binary_search_by_key(&seq, |e| e.seq).ok()?;
        self.entries.get_mut(i)
    }

    /// Takes request `seq` out again (the service refused it: it must not be replayed), with
    /// the rest of its unit if it is part of one; the sequence numbers taken out (`seq..seq + 1`
    /// for a request of its own).
    pub fn remove(&mut self, seq: u64) -> Range<u64> {
        let Ok(i) = self.entries.binary_search_by_key(&seq, |e| e.seq) else { return seq..seq + 1 };
        // A unit's parts are consecutive requests, all logged.
        let (mut first, mut last) = (i, i);
        while first > 0
            && self.entries[first - 1].continues
            && self.entries[first - 1].seq + 1 == self.entries[first].seq
        {
            first -= 1;
        }
        while self.entries[last].continues
            && self.entries.get(last + 1).is_some_and(|next| next.seq == self.entries[last].seq + 1)
        {
            last += 1;
        }
        for entry in self.entries.range_mut(first..=last) {
            if let Some(request) = entry.request.take() {
                self.bytes -= request.len();
            }
        }
        self.entries[first].seq..self.entries[last].seq + 1
    }

    /// A replica answered request `seq` (it executes it without closing or dying).
    pub fn mark_answered(&mut self, seq: u64) {
        if let Some(entry) = self.find(seq) {
            entry.answered = true;
        }
    }

    /// Whether request `seq` is in the log and some replica answered it.
    pub fn was_answered(&self, seq: u64) -> bool {
        let i = self.entries.binary_search_by_key(&seq, |e| e.seq);
        i.is_ok_and(|i| self.entries[i].answered && self.entries[i].request.is_some())
    }

    /// From which sequence number on the log holds every logged request.
    pub fn covers_from(&self) -> u64 {
        self.covered_from
    }

    /// Whether any request was ever logged: until then every replica's state is the initial
    /// one.
    pub fn logged_anything(&self) -> bool {
        self.logged_ever > 0
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The logged requests with sequence numbers in `from..to`, concatenated, up to about
    /// `max_bytes` (at least one request), with their sequence numbers and the sequence number
    /// after the last one taken (`to` once none is left below it). `None` if the log no longer
    /// covers `from`. A request no replica ever answered comes in a chunk of its own (`alone`):
    /// it may be one the service dies on, and a replica that dies on it must not lose the
    /// answers to others with it (that would make its death point at them).
    pub fn chunk(&self, from: u64, to: u64, max_bytes: usize) -> Option<Chunk> {
        if from < self.covered_from {
            return None;
        }
        let start = self.entries.partition_point(|e| e.seq < from);
        let mut bytes = BytesMut::new();
        let mut seqs = Vec::new();
        let mut next = to;
        let mut alone = false;
        for entry in self.entries.range(start..) {
            if entry.seq >= to {
                break;
            }
            let Some(request) = &entry.request else { continue };
            if !seqs.is_empty() && (bytes.len() >= max_bytes || !entry.answered) {
                next = entry.seq;
                break;
            }
            bytes.extend_from_slice(request);
            seqs.push(entry.seq);
            if !entry.answered {
                alone = true;
                next = entry.seq + 1;
                break;
            }
        }
        Some(Chunk { bytes: bytes.freeze(), seqs, next, alone })
    }
}

/// Part of the log, for one replica catching up.
#[derive(Debug)]
pub struct Chunk {
    /// The requests, concatenated.
    pub bytes: Bytes,
    /// Their sequence numbers.
    pub seqs: Vec<u64>,
    /// Where the next chunk starts.
    pub next: u64,
    /// It holds one request no replica ever answered, and nothing else.
    pub alone: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(n: u8) -> Bytes {
        Bytes::from(vec![n; 10])
    }

    #[test]
    fn chunks_follow_the_order_and_stop_at_the_bound() {
        let mut log = ReplayLog::new(1000);
        for seq in [0, 2, 5, 9] {
            log.push(seq, req(seq as u8), false);
            log.mark_answered(seq);
        }
        let c = log.chunk(0, 10, 15).expect("covered");
        assert_eq!((c.seqs, c.next, c.bytes.len()), (vec![0, 2], 5, 20));
        let c = log.chunk(5, 10, 1000).expect("covered");
        assert_eq!((c.seqs, c.next), (vec![5, 9], 10));
        let c = log.chunk(3, 9, 1000).expect("covered");
        assert_eq!((c.seqs, c.next), (vec![5], 9));
    }

    #[test]
    fn a_full_log_forgets_its_oldest_entries_and_says_so() {
        let mut log = ReplayLog::new(25);
        assert!(!log.logged_anything());
        for seq in 0..4 {
            log.push(seq, req(seq as u8), false);
            log.mark_answered(seq);
        }
        assert!(log.logged_anything());
        assert_eq!(log.covers_from(), 2);
        assert!(log.chunk(1, 10, 100).is_none());
        assert_eq!(log.chunk(2, 10, 100).expect("covered").seqs, vec![2, 3]);
    }

    #[test]
    fn a_removed_request_is_not_replayed_and_answers_are_marked_per_entry() {
        let mut log = ReplayLog::new(1000);
        for seq in 0..3 {
            log.push(seq, req(seq as u8), false);
        }
        log.mark_answered(0);
        log.mark_answered(2);
        log.remove(1);
        let c = log.chunk(0, 3, 1000).expect("covered");
        assert_eq!((c.seqs, c.bytes.len()), (vec![0, 2], 20));
        assert_eq!(log.bytes(), 20);
        assert!(log.was_answered(0));
        assert!(!log.was_answered(1) && !log.was_answered(7));
    }

    #[test]
    fn a_refused_part_of_a_unit_takes_the_whole_unit_out() {
        let mut log = ReplayLog::new(1000);
        // 0, then a unit 1..=3, then 4; then a unit 5..=6.
        for (seq, continues) in [(0, false), (1, true), (2, true), (3, false), (4, false), (5, true), (6, false)] {
            log.push(seq, req(seq as u8), continues);
            log.mark_answered(seq);
        }
        assert_eq!(log.remove(3), 1..4);
        assert_eq!(log.remove(5), 5..7);
        assert_eq!(log.remove(4), 4..5);
        assert_eq!(log.chunk(0, 7, 1000).expect("covered").seqs, vec![0]);
        assert_eq!(log.bytes(), 10);
        // A unit cut by the bound: what is left of it goes.
        let mut log = ReplayLog::new(25);
        for (seq, continues) in [(0, true), (1, true), (2, false)] {
            log.push(seq, req(seq as u8), continues);
        }
        assert_eq!(log.covers_from(), 1);
        assert_eq!(log.remove(2), 1..3);
        assert_eq!(log.bytes(), 0);
    }

    #[test]
    fn a_request_no_replica_answered_is_replayed_alone() {
        let mut log = ReplayLog::new(1000);
        for seq in 0..5 {
            log.push(seq, req(seq as u8), false);
        }
        for seq in [0, 1, 3, 4] {
            log.mark_answered(seq);
        }
        let c = log.chunk(0, 5, 1000).expect("covered");
        assert_eq!((c.seqs, c.next, c.alone), (vec![0, 1], 2, false));
        let c = log.chunk(2, 5, 1000).expect("covered");
        assert_eq!((c.seqs, c.next, c.alone), (vec![2], 3, true));
        let c = log.chunk(3, 5, 1000).expect("covered");
        assert_eq!((c.seqs, c.next, c.alone), (vec![3, 4], 5, false));
    }
}
