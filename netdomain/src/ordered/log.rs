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
use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

#[derive(Debug)]
struct Entry {
    seq: u64,
    /// `None` for a request taken out again.
    request: Option<Bytes>,
    answered: bool,
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

    /// Records request `seq`; drops the oldest entries while the log is over its bound.
    pub fn push(&mut self, seq: u64, request: Bytes) {
        self.logged_ever += 1;
        self.bytes += request.len();
        self.entries.push_back(Entry { seq, request: Some(request), answered: false });
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

    /// Takes request `seq` out again (the service refused it: it must not be replayed).
    pub fn remove(&mut self, seq: u64) {
        if let Some(request) = self.find(seq).and_then(|e| e.request.take()) {
            self.bytes -= request.len();
        }
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
            log.push(seq, req(seq as u8));
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
            log.push(seq, req(seq as u8));
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
            log.push(seq, req(seq as u8));
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
    fn a_request_no_replica_answered_is_replayed_alone() {
        let mut log = ReplayLog::new(1000);
        for seq in 0..5 {
            log.push(seq, req(seq as u8));
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
