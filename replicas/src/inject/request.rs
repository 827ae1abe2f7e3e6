//! What an injection is asked to do ([`InjectRequest`]), what it did ([`InjectionRecord`]),
//! and why one was refused ([`InjectError`], [`InvalidField`], [`UnknownName`]).
use std::fmt;
use std::io;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};

/// The most bits one injection flips.
pub const MAX_BITS: u32 = 64;
/// The longest span of stream bytes an outflip/inflip may spread its bits over.
pub const MAX_SPAN_BYTES: u64 = 1 << 20;
/// The longest hang or delay one injection may ask for (one hour).
pub const MAX_DURATION_MS: u64 = 3_600_000;
/// The longest an admin request may wait for an armed injection to fire.
pub const MAX_WAIT_MS: u64 = 60_000;

/// What an injection does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InjectKind {
    /// Flip bits in the replica's next output bytes, before the voter sees them.
    Outflip,
    /// Flip bits in the next input bytes delivered to the replica.
    Inflip,
    /// Flip bits in the replica process's memory.
    Memflip,
    /// SIGKILL the replica's process.
    Crash,
    /// SIGSTOP the replica's process; SIGCONT after a duration.
    Hang,
    /// Hold the replica's next output for a while.
    Delay,
}

impl InjectKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [InjectKind; 6] = [
        InjectKind::Outflip,
        InjectKind::Inflip,
        InjectKind::Memflip,
        InjectKind::Crash,
        InjectKind::Hang,
        InjectKind::Delay,
    ];

    /// The name used on the command line, in JSON and in reports.
    pub fn name(self) -> &'static str {
        match self {
            InjectKind::Outflip => "outflip",
            InjectKind::Inflip => "inflip",
            InjectKind::Memflip => "memflip",
            InjectKind::Crash => "crash",
            InjectKind::Hang => "hang",
            InjectKind::Delay => "delay",
        }
    }

    /// Whether it is armed in the data path (rather than done to the process at once).
    pub fn is_data_path(self) -> bool {
        matches!(self, InjectKind::Outflip | InjectKind::Inflip | InjectKind::Delay)
    }
}

impl fmt::Display for InjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for InjectKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        InjectKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownName::new("fault kind", s, InjectKind::ALL.map(InjectKind::name)))
    }
}

/// Which writable mappings a memflip may hit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemRegion {
    /// Any writable private mapping.
    #[default]
    Any,
    /// The `[heap]` (brk) mapping.
    Heap,
    /// The main thread's `[stack]`.
    Stack,
    /// Writable file-backed mappings: the `.data` of the program and its libraries.
    Data,
    /// Anonymous mappings: thread stacks, large allocations, `.bss` tails.
    Anon,
}

impl MemRegion {
    /// Every selector, in the order help texts list them.
    pub const ALL: [MemRegion; 5] =
        [MemRegion::Any, MemRegion::Heap, MemRegion::Stack, MemRegion::Data, MemRegion::Anon];

    /// The selector's name.
    pub fn name(self) -> &'static str {
        match self {
            MemRegion::Any => "any",
            MemRegion::Heap => "heap",
            MemRegion::Stack => "stack",
            MemRegion::Data => "data",
            MemRegion::Anon => "anon",
        }
    }
}

impl fmt::Display for MemRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MemRegion {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        MemRegion::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| UnknownName::new("memory region", s, MemRegion::ALL.map(MemRegion::name)))
    }
}

/// A name that is none of a fixed set, such as a fault kind or a memory region given on the
/// command line (the user's input).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{name}`, expected one of {}", .expected.join(", "))]
pub struct UnknownName {
    /// What was named (`fault kind`, `memory region`).
    pub what: &'static str,
    /// The name given.
    pub name: String,
    /// Every name that is known.
    pub expected: Vec<&'static str>,
}

impl UnknownName {
    fn new(what: &'static str, name: &str, expected: impl IntoIterator<Item = &'static str>) -> UnknownName {
        UnknownName { what, name: name.to_string(), expected: expected.into_iter().collect() }
    }
}

/// One injection, as the admin API (`POST /inject`) takes it and the campaign runner builds it.
/// Fields that do not apply to the kind are errors, so a typo'd intent never passes silently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectRequest {
    /// The replica's name.
    pub replica: String,
    /// What to do.
    pub kind: InjectKind,
    /// outflip, inflip, memflip: how many bits to flip (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<u32>,
    /// The RNG seed; a fresh one (reported in the record) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// outflip, inflip: the bits land in the next `span_bytes` bytes (default: as few as hold
    /// them, so one bit flips in the very next byte).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_bytes: Option<u64>,
    /// memflip: which writable mappings may be hit (default `any`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<MemRegion>,
    /// memflip: flip bits of exactly this byte instead of a random one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<u64>,
    /// hang: how long the process stays stopped (default 1000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// delay: how long the next output is held (default 1000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// outflip, inflip, delay, through the admin API: wait up to this long for the armed
    /// injection to fire and answer with the fired record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

impl InjectRequest {
    /// A request with every option at its default.
    pub fn new(replica: impl Into<String>, kind: InjectKind) -> InjectRequest {
        InjectRequest {
            replica: replica.into(),
            kind,
            bits: None,
            seed: None,
            span_bytes: None,
            region: None,
            address: None,
            duration_ms: None,
            delay_ms: None,
            wait_ms: None,
        }
    }

    /// Checks that every field set applies to the kind and is in range.
    pub fn check(&self) -> Result<(), InvalidField> {
        use InjectKind::*;
        let kind = self.kind;
        let invalid = |field: &'static str, reason: String| Err(InvalidField { field, reason });
        let only = |field: &'static str, set: bool, kinds: &[InjectKind]| -> Result<(), InvalidField> {
            if set && !kinds.contains(&kind) {
                let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
                return invalid(field, format!("only applies to {}, not to {kind}", names.join(", ")));
            }
            Ok(())
        };
        if self.replica.is_empty() {
            return invalid("replica", "is required".into());
        }
        only("bits", self.bits.is_some(), &[Outflip, Inflip, Memflip])?;
        only("span_bytes", self.span_bytes.is_some(), &[Outflip, Inflip])?;
        only("region", self.region.is_some(), &[Memflip])?;
        only("address", self.address.is_some(), &[Memflip])?;
        only("duration_ms", self.duration_ms.is_some(), &[Hang])?;
        only("delay_ms", self.delay_ms.is_some(), &[Delay])?;
        only("wait_ms", self.wait_ms.is_some(), &[Outflip, Inflip, Delay])?;
        let bits = self.bits.unwrap_or(1);
        if bits == 0 || bits > MAX_BITS {
            return invalid("bits", format!("must be between 1 and {MAX_BITS}, not {bits}"));
        }
        if self.address.is_some() {
            if self.region.is_some() {
                return invalid("address", "set either `address` or `region`, not both".into());
            }
            if bits > 8 {
                return invalid("bits", format!("a byte at `address` has 8 bits, not {bits}"));
            }
        }
        if let Some(span) = self.span_bytes {
            let need = u64::from(bits).div_ceil(8);
            if span < need || span > MAX_SPAN_BYTES {
                return invalid(
                    "span_bytes",
                    format!("must be between {need} (room for {bits} bits) and {MAX_SPAN_BYTES}, not {span}"),
                );
            }
        }
        for (field, value) in [("duration_ms", self.duration_ms), ("delay_ms", self.delay_ms)] {
            if let Some(v) = value {
                if v == 0 || v > MAX_DURATION_MS {
                    return invalid(field, format!("must be between 1 and {MAX_DURATION_MS}, not {v}"));
                }
            }
        }
        if let Some(w) = self.wait_ms {
            if w > MAX_WAIT_MS {
                return invalid("wait_ms", format!("must be at most {MAX_WAIT_MS}, not {w}"));
            }
        }
        Ok(())
    }
}

/// Whether an injection is done, waiting in the data path, or has fired there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordStatus {
    /// A process fault, done when the record was made.
    Done,
    /// A data-path fault waiting for the replica's next bytes.
    Armed,
    /// A data-path fault that took effect (a second record with the same id as the armed one).
    Fired,
}

/// Which direction of a replica connection a stream fault hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Replica to voter.
    Output,
    /// Client (via resh) to replica.
    Input,
}

/// One bit flipped in a connection's byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StreamFlip {
    /// The byte's offset in that direction of the replica connection (for output, the offset
    /// the voter reports faults at).
    pub offset: u64,
    /// The bit (0 = least significant).
    pub bit: u8,
    /// The byte before.
    pub old: u8,
    /// The byte after.
    pub new: u8,
}

/// One bit flipped in a process's memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemFlip {
    /// The byte's virtual address in the process.
    #[serde(serialize_with = "hex")]
    pub address: u64,
    /// The mapping's name in /proc/PID/maps: `[heap]`, `[stack]`, a file path, or `anon`.
    pub region: String,
    /// Where the mapping starts.
    #[serde(serialize_with = "hex")]
    pub region_start: u64,
    /// The address's offset in the mapping (stable across runs when ASLR moves the mapping).
    pub offset_in_region: u64,
    /// The mapping's permissions (`rw-p`).
    pub perms: String,
    /// The bit (0 = least significant).
    pub bit: u8,
    /// The byte before.
    pub old: u8,
    /// The byte after.
    pub new: u8,
}

fn hex<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{value:#x}"))
}

/// What an injection did (or, while armed, will do).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Effect {
    /// Armed in the data path; fires on the replica's next bytes.
    Armed {
        /// Bits to flip (outflip, inflip).
        #[serde(skip_serializing_if = "Option::is_none")]
        bits: Option<u32>,
        /// Bytes the bits spread over (outflip, inflip).
        #[serde(skip_serializing_if = "Option::is_none")]
        span_bytes: Option<u64>,
        /// How long output will be held (delay).
        #[serde(skip_serializing_if = "Option::is_none")]
        delay_ms: Option<u64>,
    },
    /// Bits flipped in one direction of one replica connection.
    StreamFlips {
        /// Which direction.
        direction: Direction,
        /// Each flipped bit.
        flips: Vec<StreamFlip>,
        /// False when the connection ended before every planned bit went by.
        complete: bool,
    },
    /// Bits flipped in the process's memory.
    MemoryFlips {
        /// Each flipped bit.
        flips: Vec<MemFlip>,
    },
    /// The process was sent a signal that ends it.
    Killed {
        /// The signal's name.
        signal: String,
    },
    /// The process was stopped; it is continued after the duration (if it is still the same
    /// process then).
    Stopped {
        /// How long it stays stopped.
        duration_ms: u64,
    },
    /// The replica's output was held.
    Delayed {
        /// How long.
        delay_ms: u64,
        /// The output offset that waited.
        offset: u64,
    },
}

/// One injection event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InjectionRecord {
    /// Numbers injections of one resh; an armed injection and its firing share it.
    pub id: u64,
    /// The replica's name.
    pub replica: String,
    /// What was injected.
    pub kind: InjectKind,
    /// Done, armed or fired.
    pub status: RecordStatus,
    /// The RNG seed that chose the bits (repeat it with `seed`).
    pub seed: u64,
    /// Wall-clock time of this event, seconds since the Unix epoch.
    pub time: f64,
    /// The process hit (process faults).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// What was done.
    pub effect: Effect,
}

/// A field of an [`InjectRequest`] that is out of range or does not apply to its kind (the
/// request's fault: the admin API answers 400, `resh inject` names the option).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    /// The field, as JSON names it.
    pub field: &'static str,
    /// Why it is refused.
    pub reason: String,
}

/// Why an injection was refused or failed. The variants name whose the problem is: the
/// request's ([`Invalid`](Self::Invalid), [`UnknownReplica`](Self::UnknownReplica),
/// [`AddressNotWritable`](Self::AddressNotWritable)), the replica's or its process's (the
/// others but [`Io`](Self::Io)), or the system's ([`Io`](Self::Io)).
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The request: a field is out of range or does not apply.
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    /// The request: no replica has that name.
    #[error("replica: no replica is named `{0}`")]
    UnknownReplica(String),
    /// The replica: it has no process resh could act on (an address replica, or one not
    /// running).
    #[error("replica {replica} has no running process resh started (an address replica, or restarting)")]
    NoProcess {
        /// The replica's name.
        replica: String,
    },
    /// The process: it no longer exists (or is a zombie).
    #[error("process {pid} is gone: nothing was injected")]
    ProcessGone {
        /// Its pid.
        pid: u32,
    },
    /// The process: no writable mapping matches the region selector.
    #[error("process {pid} has no writable private mapping in region `{region}`")]
    NoWritableMemory {
        /// The process.
        pid: u32,
        /// The selector.
        region: MemRegion,
    },
    /// The request: `address` is not in a writable private mapping of the process.
    #[error("address {address:#x} is not in a writable private mapping of process {pid}")]
    AddressNotWritable {
        /// The process.
        pid: u32,
        /// The address.
        address: u64,
    },
    /// The process: every random location drawn in the region was unreadable (file mappings
    /// past the end of their file, for instance).
    #[error("process {pid}: cannot find a readable byte in region `{region}`: {draws} draws per bit failed")]
    NoReadableByte {
        /// The process.
        pid: u32,
        /// The selector.
        region: MemRegion,
        /// Draws per bit before giving up.
        draws: u32,
    },
    /// The process: a byte written through /proc/PID/mem read back unchanged.
    #[error("process {pid}: flipping a bit at {address:#x} did not take (the byte reads back unchanged)")]
    FlipNotTaken {
        /// The process.
        pid: u32,
        /// The address.
        address: u64,
    },
    /// The process: /proc/PID/stat does not have the fields the kernel documents.
    #[error("process {pid}: cannot parse /proc/PID/stat: unexpected format")]
    StatFormat {
        /// The process.
        pid: u32,
    },
    /// The system: a system call failed.
    #[error("process {pid}: cannot {what}: {error}{}", ptrace_hint(.error))]
    Io {
        /// The process.
        pid: u32,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        error: io::Error,
    },
}

/// What to do about a refused access to another process's memory.
fn ptrace_hint(error: &io::Error) -> &'static str {
    if error.kind() == io::ErrorKind::PermissionDenied {
        " (writing another process's memory needs ptrace access: run resh as the replicas' parent, as their user, with kernel.yama.ptrace_scope <= 1, or as root)"
    } else {
        ""
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_the_field_that_does_not_apply() {
        let mut r = InjectRequest::new("a", InjectKind::Crash);
        assert!(r.check().is_ok());
        r.bits = Some(2);
        let e = r.check().unwrap_err().to_string();
        assert!(e.starts_with("bits: only applies to outflip, inflip, memflip"), "{e}");
        let mut r = InjectRequest::new("a", InjectKind::Outflip);
        r.bits = Some(20);
        r.span_bytes = Some(2);
        assert!(r.check().unwrap_err().to_string().starts_with("span_bytes:"));
        let mut r = InjectRequest::new("a", InjectKind::Memflip);
        r.address = Some(0x1000);
        r.region = Some(MemRegion::Heap);
        assert!(r.check().unwrap_err().to_string().starts_with("address:"));
        let mut r = InjectRequest::new("a", InjectKind::Hang);
        r.duration_ms = Some(0);
        assert!(r.check().unwrap_err().to_string().starts_with("duration_ms:"));
        assert!("outflip".parse::<InjectKind>().is_ok());
        assert!("bitflip".parse::<InjectKind>().unwrap_err().to_string().contains("outflip, inflip"));
        let e = "brain".parse::<MemRegion>().unwrap_err().to_string();
        assert_eq!(e, "unknown memory region `brain`, expected one of any, heap, stack, data, anon");
    }
}
