//! Faults: what the voter found wrong with one replica, and where.
//!
//! Every fault names the replica (its index in the session), the stream offset at which it was
//! found and the session time. The caller adds the session and the replica's name and feeds the
//! event to logs, metrics and the supervisor.
use std::fmt;
use std::time::Duration;

/// A blake3 digest of a span of output.
pub type Digest = blake3::Hash;

/// How many bytes on either side of a divergence are digested for the report.
pub const DIGEST_SPAN: usize = 4096;

/// Digest of a span of output, as carried in [`FaultKind::Diverged`].
pub fn digest(bytes: &[u8]) -> Digest {
    blake3::hash(bytes)
}

/// What went wrong with a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Its bytes differ from the quorum's from `offset` on. `expected` is the digest of the
    /// quorum's bytes and `observed` of the replica's, each over at most [`DIGEST_SPAN`] bytes
    /// from the first differing one (an empty span where one side had nothing there, e.g. output
    /// that no quorum produced).
    Diverged {
        /// Digest of what the quorum produced at the offset.
        expected: Digest,
        /// Digest of what this replica produced at the offset.
        observed: Digest,
    },
    /// It closed its output before the end the quorum agreed on.
    ClosedEarly,
    /// Its connection failed (reset, I/O error, the process died).
    Crashed,
    /// It stayed behind the released output (stream vote) or behind the quorum's answers (frame
    /// vote) for longer than the lag timeout.
    Late {
        /// How far behind it was: in bytes in the stream vote, in requests in the frame vote.
        behind: u64,
    },
    /// It held more unreleased output than allowed, or sat on a full buffer of output that no
    /// quorum confirmed within the vote timeout.
    Flooded {
        /// How many unreleased bytes it held.
        unreleased: u64,
    },
}

impl FaultKind {
    /// The short, stable name used in logs and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Diverged { .. } => "diverged",
            FaultKind::ClosedEarly => "closed_early",
            FaultKind::Crashed => "crashed",
            FaultKind::Late { .. } => "late",
            FaultKind::Flooded { .. } => "flooded",
        }
    }

    /// All kind names, in a fixed order (for metrics that list zeros too).
    pub const NAMES: [&'static str; 5] = ["diverged", "closed_early", "crashed", "late", "flooded"];
}

/// One fault of one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The replica's index in the session.
    pub replica: usize,
    /// The output offset where it was found (for `Late`, how far the replica had got).
    pub offset: u64,
    /// Session time when the voter decided.
    pub at: Duration,
    /// What went wrong.
    pub kind: FaultKind,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replica {} {} at offset {}", self.replica, self.kind.name(), self.offset)?;
        match &self.kind {
            FaultKind::Diverged { expected, observed } => {
                write!(f, " (expected {}, observed {})", short(expected), short(observed))
            }
            FaultKind::Late { behind } => write!(f, " ({behind} bytes behind)"),
            FaultKind::Flooded { unreleased } => write!(f, " ({unreleased} unreleased bytes)"),
            FaultKind::ClosedEarly | FaultKind::Crashed => Ok(()),
        }
    }
}

/// The first 16 hex digits of a digest: enough to tell spans apart in a log line.
pub fn short(d: &Digest) -> String {
    d.to_hex()[..16].to_string()
}
