//! Outcome classification: a pure function from what the client received (compared with the
//! golden run), how its sessions ended, and what resh reported, to one outcome class.
//!
//! The classes, worst first (an experiment gets the worst that applies):
//! - `sdc`: silent data corruption: the client received a wrong byte, more bytes than the
//!   golden run, or a connection closed normally (FIN) before all of the golden answer arrived
//!   (a client cannot tell that truncation from a complete answer).
//! - `timeout`: the workload did not finish in time (no wrong byte).
//! - `fail-stop`: a session was aborted (reset, refused, failed) or the host stopped, and
//!   every byte received was right.
//! - `masked`: the client received exactly the golden output, and the voter named a faulty
//!   replica (it diverged, crashed, closed early, lagged or flooded, and was outvoted).
//! - `no-effect`: exactly the golden output, and no replica output was ever found faulty.
use serde::{Serialize, Serializer};

/// The outcome of one experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// No replica output diverged and the client got the golden output.
    NoEffect,
    /// A replica diverged or failed, and the voter masked and named it.
    Masked,
    /// The client received wrong bytes.
    Sdc,
    /// A session was aborted or the host stopped; no wrong byte was sent.
    FailStop,
    /// The workload did not finish in time.
    Timeout,
}

impl Outcome {
    /// Every outcome, in report order.
    pub const ALL: [Outcome; 5] =
        [Outcome::NoEffect, Outcome::Masked, Outcome::Sdc, Outcome::FailStop, Outcome::Timeout];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::NoEffect => "no-effect",
            Outcome::Masked => "masked",
            Outcome::Sdc => "sdc",
            Outcome::FailStop => "fail-stop",
            Outcome::Timeout => "timeout",
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// How one client session ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEnd {
    /// The server closed its side normally (FIN).
    Closed,
    /// The connection was reset (resh aborted the session: no quorum).
    Reset,
    /// The connection could not be made, or was reset before the client sent anything.
    Refused,
    /// Another I/O error.
    Failed(String),
    /// The experiment's time ran out during this session (or before it began).
    TimedOut,
}

impl SessionEnd {
    /// Whether the session was aborted without the client being told everything is there.
    pub fn aborted(&self) -> bool {
        matches!(self, SessionEnd::Reset | SessionEnd::Refused | SessionEnd::Failed(_))
    }
}

/// What one client session got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionResult {
    /// Every byte received.
    pub received: Vec<u8>,
    /// How it ended.
    pub end: SessionEnd,
}

/// The inputs of [`classify`].
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    /// What each session received in the golden run.
    pub golden: &'a [Vec<u8>],
    /// What each session received in this experiment (same order and count; a session that
    /// never ran is `TimedOut` with nothing received).
    pub sessions: &'a [SessionResult],
    /// resh stopped on its own (it was not asked to).
    pub host_stopped: bool,
    /// How many faults the voter reported (any replica).
    pub faults_named: usize,
}

/// The first offset where `received` departs from `golden` (a differing byte, or a byte past
/// the golden end); `None` when `received` is a prefix of `golden`.
pub fn first_wrong_byte(golden: &[u8], received: &[u8]) -> Option<u64> {
    let common = golden.len().min(received.len());
    match golden[..common].iter().zip(&received[..common]).position(|(g, r)| g != r) {
        Some(i) => Some(i as u64),
        None if received.len() > golden.len() => Some(golden.len() as u64),
        None => None,
    }
}

/// Whether a session delivered wrong output: a wrong byte, extra bytes, or a normal close
/// before the whole golden answer.
pub fn session_is_wrong(golden: &[u8], session: &SessionResult) -> bool {
    first_wrong_byte(golden, &session.received).is_some()
        || (session.end == SessionEnd::Closed && session.received.len() < golden.len())
}

/// Classifies one experiment (see the module docs for the classes and their order).
pub fn classify(obs: &Observation<'_>) -> Outcome {
    let empty = Vec::new();
    let wrong = obs.sessions.iter().enumerate().any(|(i, s)| session_is_wrong(obs.golden.get(i).unwrap_or(&empty), s));
    // A session missing from the record counts as not finished.
    let unfinished =
        obs.sessions.len() < obs.golden.len() || obs.sessions.iter().any(|s| s.end == SessionEnd::TimedOut);
    if wrong {
        Outcome::Sdc
    } else if unfinished {
        Outcome::Timeout
    } else if obs.host_stopped || obs.sessions.iter().any(|s| s.end.aborted()) {
        Outcome::FailStop
    } else if obs.faults_named > 0 {
        Outcome::Masked
    } else {
        Outcome::NoEffect
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(bytes: &[u8]) -> SessionResult {
        SessionResult { received: bytes.to_vec(), end: SessionEnd::Closed }
    }

    fn ended(bytes: &[u8], end: SessionEnd) -> SessionResult {
        SessionResult { received: bytes.to_vec(), end }
    }

    fn outcome(golden: &[&[u8]], sessions: &[SessionResult], faults: usize) -> Outcome {
        let golden: Vec<Vec<u8>> = golden.iter().map(|g| g.to_vec()).collect();
        classify(&Observation { golden: &golden, sessions, host_stopped: false, faults_named: faults })
    }

    #[test]
    fn golden_output_without_faults_is_no_effect() {
        assert_eq!(outcome(&[b"abc", b"de"], &[ok(b"abc"), ok(b"de")], 0), Outcome::NoEffect);
    }

    #[test]
    fn golden_output_with_a_named_fault_is_masked() {
        // e.g. N=3, an outflip in one replica: the voter named it, the client got the golden bytes.
        assert_eq!(outcome(&[b"abc", b"de"], &[ok(b"abc"), ok(b"de")], 1), Outcome::Masked);
    }

    #[test]
    fn a_wrong_byte_is_sdc_whatever_else_happened() {
        // e.g. N=1, an outflip: one bit of the answer differs.
        assert_eq!(outcome(&[b"abc"], &[ok(b"abd")], 0), Outcome::Sdc);
        assert_eq!(outcome(&[b"abc"], &[ok(b"abd")], 2), Outcome::Sdc);
        // A wrong byte then a reset is still wrong: the client saw the byte.
        assert_eq!(outcome(&[b"abc", b"x"], &[ended(b"ab!", SessionEnd::Reset), ok(b"x")], 0), Outcome::Sdc);
        // A wrong byte in a session that then timed out.
        assert_eq!(outcome(&[b"abc"], &[ended(b"z", SessionEnd::TimedOut)], 0), Outcome::Sdc);
    }

    #[test]
    fn extra_bytes_and_a_truncated_normal_close_are_sdc() {
        assert_eq!(outcome(&[b"abc"], &[ok(b"abcd")], 0), Outcome::Sdc);
        // A FIN after "ab": the client takes "ab" for the whole answer.
        assert_eq!(outcome(&[b"abc"], &[ok(b"ab")], 0), Outcome::Sdc);
    }

    #[test]
    fn an_aborted_session_with_only_right_bytes_is_fail_stop() {
        // e.g. N=1, a crash: resh resets the session after the agreed bytes, and the next
        // session is refused while the replica restarts.
        let sessions = [ended(b"ab", SessionEnd::Reset), ended(b"", SessionEnd::Refused)];
        assert_eq!(outcome(&[b"abc", b"de"], &sessions, 1), Outcome::FailStop);
        let failed = [ended(b"", SessionEnd::Failed("broken pipe".into()))];
        assert_eq!(outcome(&[b"abc"], &failed, 0), Outcome::FailStop);
        let golden = vec![b"abc".to_vec()];
        let stopped =
            classify(&Observation { golden: &golden, sessions: &[ok(b"abc")], host_stopped: true, faults_named: 0 });
        assert_eq!(stopped, Outcome::FailStop);
    }

    #[test]
    fn an_unfinished_workload_is_a_timeout() {
        assert_eq!(outcome(&[b"abc"], &[ended(b"ab", SessionEnd::TimedOut)], 0), Outcome::Timeout);
        // Sessions that never ran count as unfinished, even after an abort.
        assert_eq!(outcome(&[b"abc", b"de"], &[ended(b"a", SessionEnd::Reset)], 0), Outcome::Timeout);
    }

    #[test]
    fn first_wrong_byte_finds_the_offset() {
        assert_eq!(first_wrong_byte(b"abc", b"abc"), None);
        assert_eq!(first_wrong_byte(b"abc", b"ab"), None);
        assert_eq!(first_wrong_byte(b"abc", b"aXc"), Some(1));
        assert_eq!(first_wrong_byte(b"abc", b"abcd"), Some(3));
    }
}
