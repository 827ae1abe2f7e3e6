//! Fault events: what the votes of both modes found wrong with a replica, and the one sink that
//! logs, counts and reports them.
//!
//! The voter numbers replicas by their place in one vote and positions by offsets; operators
//! know replicas by name and want to know *where* in what: a byte offset of one session's
//! output (stream mode) or a request number of the global order (ordered mode). A
//! [`FaultEvent`] carries both and displays as one sentence, e.g.
//! `replica kv-2 diverged at request 1041 (expected 3f2a..., observed 91c0...)`.
//!
//! [`FaultSink::report`] is the one place a fault goes: a warning in the log, a record for
//! `/status` and the metrics, and the supervisor, which quarantines and repairs the replica.
use std::fmt;
use std::sync::Arc;

use replicas::Supervisor;
use tracing::{debug, info, warn};
use voter::fault::short;
use voter::FaultKind;

use crate::metrics::{unix_now, FaultRecord, Metrics};

/// Where a fault was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// A byte offset in one session's output (stream mode).
    Byte(u64),
    /// A sequence number in the global order of requests (ordered mode).
    Request(u64),
}

impl Position {
    /// The number, without its unit.
    pub fn value(self) -> u64 {
        match self {
            Position::Byte(n) | Position::Request(n) => n,
        }
    }

    /// The unit's name, as the admin API gives it (`byte`, `request`).
    pub fn unit(self) -> &'static str {
        match self {
            Position::Byte(_) => "byte",
            Position::Request(_) => "request",
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.unit(), self.value())
    }
}

/// One fault of one replica, as resh reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultEvent {
    /// The client session it was found in; `None` in ordered mode, where all sessions share
    /// the replicas' connections.
    pub session: Option<u64>,
    /// The replica's index in the configuration.
    pub replica: usize,
    /// The replica's name.
    pub name: Arc<str>,
    /// The incarnation the fault was found in.
    pub incarnation: u64,
    /// Where.
    pub position: Position,
    /// What.
    pub kind: FaultKind,
}

impl fmt::Display for FaultEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replica {} {} at {}", self.name, self.kind.name(), self.position)?;
        let unit = self.position.unit();
        match &self.kind {
            FaultKind::Diverged { expected, observed } => {
                write!(f, " (expected {}, observed {})", short(expected), short(observed))
            }
            FaultKind::Late { behind } => write!(f, " ({behind} {unit}s behind)"),
            FaultKind::Flooded { unreleased } => write!(f, " ({unreleased} unreleased bytes)"),
            FaultKind::ClosedEarly | FaultKind::Crashed => Ok(()),
        }
    }
}

/// Where faults go: the log, the metrics and `/status`, and the supervisor.
#[derive(Clone, Debug)]
pub struct FaultSink {
    metrics: Arc<Metrics>,
    supervisor: Arc<Supervisor>,
}

impl FaultSink {
    /// A sink feeding `metrics` and `supervisor`.
    pub fn new(metrics: Arc<Metrics>, supervisor: Arc<Supervisor>) -> FaultSink {
        FaultSink { metrics, supervisor }
    }

    /// Reports one fault to the supervisor; if it is the incarnation's first (see
    /// [`Supervisor::report_fault`]), logs it as a fault and records it for `/status` and the
    /// metrics; otherwise it is a consequence of that fault's repair, logged as such.
    pub fn report(&self, event: &FaultEvent) {
        let detail = event.to_string();
        let reported = self.supervisor.report_fault(event.replica, event.incarnation, &event.kind, detail.clone());
        if reported == replicas::Reported::Stopping {
            debug!(session = event.session, replica = %event.name, "lost replica {} as resh stops it ({detail}): not a fault", event.name);
            return;
        }
        if reported == replicas::Reported::Consequence {
            info!(
                session = event.session,
                replica = %event.name,
                kind = event.kind.name(),
                "lost replica {} to the repair of a fault already counted against it ({detail}): not a new fault",
                event.name
            );
            return;
        }
        warn!(
            session = event.session,
            replica = %event.name,
            kind = event.kind.name(),
            unit = event.position.unit(),
            position = event.position.value(),
            "fault: {detail}"
        );
        self.metrics.record_fault(FaultRecord {
            time: unix_now(),
            session: event.session.unwrap_or(0),
            replica: event.name.to_string(),
            kind: event.kind.name(),
            offset: event.position.value(),
            unit: event.position.unit(),
            detail,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: Position, kind: FaultKind) -> FaultEvent {
        FaultEvent { session: Some(7), replica: 1, name: "kv-2".into(), incarnation: 1, position, kind }
    }

    #[test]
    fn displays_with_name_and_position_unit() {
        let late = event(Position::Request(12), FaultKind::Late { behind: 3 });
        assert_eq!(late.to_string(), "replica kv-2 late at request 12 (3 requests behind)");
        let late = event(Position::Byte(4096), FaultKind::Late { behind: 100 });
        assert_eq!(late.to_string(), "replica kv-2 late at byte 4096 (100 bytes behind)");
        let crash = event(Position::Byte(0), FaultKind::Crashed);
        assert_eq!(crash.to_string(), "replica kv-2 crashed at byte 0");
        let d = voter::fault::digest(b"x");
        let diverged = event(Position::Request(5), FaultKind::Diverged { expected: d, observed: d });
        assert!(diverged.to_string().starts_with("replica kv-2 diverged at request 5 (expected "), "{diverged}");
    }
}
