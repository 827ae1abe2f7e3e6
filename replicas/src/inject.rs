//! Fault injection: the primitives that fault-injection experiments (`resh inject`, `resh
//! campaign`) use to make one replica faulty, each driven by a seeded RNG and recorded as an
//! [`InjectionRecord`].
//!
//! Two families:
//! - **process faults**, done at once to the replica's process (its pid, as the supervisor
//!   knows it): [`memflip`] flips bits in a writable mapping through `/proc/PID/mem`, [`crash`]
//!   sends SIGKILL, [`hang`] sends SIGSTOP and SIGCONT after a duration. A process that is gone
//!   is a clear [`InjectError::ProcessGone`], never a panic.
//! - **data-path faults**, *armed* in the [`Injector`] and carried out by the session that next
//!   moves bytes of that replica: `outflip` flips bits in the replica's next output bytes
//!   (between the replica and the voter), `inflip` in the next input bytes delivered to it, and
//!   `delay` holds its next output for a while. The session's socket tasks call a [`Tap`] for
//!   every chunk; see [`Tap`] for the hook API.
//!
//! [`perform`] is the one entry point the admin API and the campaign runner share: it checks a
//! request, finds the replica, does or arms the injection, logs it and returns its record.
//!
//! The same seed gives the same choices: which bits of the stream (relative to where the
//! injection took effect), which bits of memory (given the same memory layout: address-space
//! randomisation moves absolute addresses between runs, so records carry the region and the
//! offset in it too).
use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize, Serializer};
use tokio::sync::watch;
use tracing::{debug, info};

use crate::supervisor::Supervisor;
use crate::sys;

/// The most bits one injection flips.
pub const MAX_BITS: u32 = 64;
/// The longest span of stream bytes an outflip/inflip may spread its bits over.
pub const MAX_SPAN_BYTES: u64 = 1 << 20;
/// The longest hang or delay one injection may ask for (one hour).
pub const MAX_DURATION_MS: u64 = 3_600_000;
/// The longest an admin request may wait for an armed injection to fire.
pub const MAX_WAIT_MS: u64 = 60_000;
/// Default hang duration when a request names none.
pub const DEFAULT_HANG_MS: u64 = 1000;
/// Default output delay when a request names none.
pub const DEFAULT_DELAY_MS: u64 = 1000;
/// How many injection records the [`Injector`] keeps.
const LOG_LEN: usize = 256;
/// How many random locations a memflip tries per bit before it gives up (a page may not be
/// readable through /proc/PID/mem, e.g. a file mapping beyond the end of its file).
const MEMFLIP_TRIES: u32 = 64;

/// A small, fast, seedable PRNG (SplitMix64). Hand-written rather than a crate so that a seed
/// means the same injections in every version of resh: a campaign report names its seed, and
/// re-running that seed must give the same plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Accept only draws below the largest multiple of n that fits, so every residue is
        // equally likely.
        let zone = u64::MAX - ((u64::MAX % n) + 1) % n;
        loop {
            let x = self.next_u64();
            if x <= zone {
                return x % n;
            }
        }
    }

    /// Uniform in `lo..=hi` (`lo` when `hi < lo`).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        match (hi - lo).checked_add(1) {
            Some(n) => lo + self.below(n),
            None => self.next_u64(),
        }
    }
}

/// A seed for a request that named none: from the clock and the pid, so two injections in a
/// row differ. The record carries it, so the injection can be repeated.
pub fn fresh_seed() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    Rng::new(nanos ^ (u64::from(std::process::id()) << 32)).next_u64()
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

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
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        InjectKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = InjectKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown fault kind `{s}`, expected one of {}", names.join(", "))
        })
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
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        MemRegion::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| format!("unknown memory region `{s}`, expected one of any, heap, stack, data, anon"))
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
    pub fn check(&self) -> Result<(), InjectError> {
        use InjectKind::*;
        let kind = self.kind;
        let invalid = |field: &'static str, reason: String| Err(InjectError::Invalid { field, reason });
        let only = |field: &'static str, set: bool, kinds: &[InjectKind]| -> Result<(), InjectError> {
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

/// Why an injection was refused.
#[derive(Debug)]
pub enum InjectError {
    /// No replica has that name.
    UnknownReplica(String),
    /// The replica has no process resh could act on (an address replica, or one not running).
    NoProcess {
        /// The replica's name.
        replica: String,
    },
    /// The process no longer exists (or is a zombie).
    ProcessGone {
        /// Its pid.
        pid: u32,
    },
    /// A request field is out of range or does not apply.
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No writable mapping matches the region selector.
    NoWritableMemory {
        /// The process.
        pid: u32,
        /// The selector.
        region: MemRegion,
    },
    /// `address` is not in a writable private mapping of the process.
    AddressNotWritable {
        /// The process.
        pid: u32,
        /// The address.
        address: u64,
    },
    /// A system call failed.
    Io {
        /// The process.
        pid: u32,
        /// What was being done.
        what: String,
        /// The OS error.
        error: io::Error,
    },
}

impl fmt::Display for InjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InjectError::UnknownReplica(name) => write!(f, "replica: no replica is named `{name}`"),
            InjectError::NoProcess { replica } => {
                write!(f, "replica {replica} has no running process resh started (an address replica, or restarting)")
            }
            InjectError::ProcessGone { pid } => write!(f, "process {pid} is gone: nothing was injected"),
            InjectError::Invalid { field, reason } => write!(f, "{field}: {reason}"),
            InjectError::NoWritableMemory { pid, region } => {
                write!(f, "process {pid} has no writable private mapping in region `{region}`")
            }
            InjectError::AddressNotWritable { pid, address } => {
                write!(f, "address {address:#x} is not in a writable private mapping of process {pid}")
            }
            InjectError::Io { pid, what, error } => {
                write!(f, "process {pid}: cannot {what}: {error}")?;
                if matches!(error.kind(), io::ErrorKind::PermissionDenied) {
                    write!(f, " (writing another process's memory needs ptrace access: run resh as the replicas' parent, as their user, with kernel.yama.ptrace_scope <= 1, or as root)")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for InjectError {}

/// A process's state letter and start time, from /proc/PID/stat. The start time tells a
/// process from a later one that got the same pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `D`, `T` (stopped), `t`, `Z` (zombie), `X`, ...
    pub state: char,
    /// Clock ticks after boot when the process started.
    pub start_time: u64,
    /// The kernel's task flags (field 9).
    pub flags: u64,
}

impl ProcStat {
    /// Whether the process has begun to exit (`PF_EXITING`). The kernel sets it before it
    /// closes the process's files, so a connection closed by a dying process is recognisable
    /// as such even before the process becomes a zombie.
    pub fn exiting(&self) -> bool {
        const PF_EXITING: u64 = 0x4;
        self.flags & PF_EXITING != 0
    }
}

/// Reads /proc/PID/stat; a process that does not exist, or is a zombie, is `ProcessGone`.
pub fn proc_stat(pid: u32) -> Result<ProcStat, InjectError> {
    let text = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            return Err(InjectError::ProcessGone { pid })
        }
        Err(error) => return Err(InjectError::Io { pid, what: "read /proc/PID/stat".into(), error }),
    };
    // The command name is in parentheses and may hold anything; the fields follow the last ')'.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let state = fields.first().and_then(|s| s.chars().next());
    // Field 22 of the whole line is the start time; fields[0] is field 3.
    let start_time = fields.get(19).and_then(|s| s.parse().ok());
    let flags = fields.get(6).and_then(|s| s.parse().ok());
    match (state, start_time, flags) {
        (Some('Z' | 'X'), _, _) => Err(InjectError::ProcessGone { pid }),
        (Some(state), Some(start_time), Some(flags)) => Ok(ProcStat { state, start_time, flags }),
        _ => Err(InjectError::Io {
            pid,
            what: "parse /proc/PID/stat".into(),
            error: io::Error::new(io::ErrorKind::InvalidData, "unexpected format"),
        }),
    }
}

fn signal(pid: u32, sig: libc::c_int, what: &str) -> Result<(), InjectError> {
    sys::signal_pid(pid, sig).map_err(|error| {
        if error.raw_os_error() == Some(libc::ESRCH) {
            InjectError::ProcessGone { pid }
        } else {
            InjectError::Io { pid, what: what.into(), error }
        }
    })
}

/// Kills process `pid` with SIGKILL: a crash the process cannot catch or clean up after.
pub fn crash(pid: u32) -> Result<Effect, InjectError> {
    proc_stat(pid)?;
    signal(pid, libc::SIGKILL, "send SIGKILL")?;
    Ok(Effect::Killed { signal: "SIGKILL".into() })
}

/// Stops process `pid` with SIGSTOP and continues it with SIGCONT after `duration`, from a
/// thread of its own (so it works with or without a runtime). SIGCONT is only sent if the pid
/// still belongs to the same process (its start time is unchanged): a process the supervisor
/// killed and whose pid was reused is left alone.
pub fn hang(pid: u32, duration: Duration) -> Result<Effect, InjectError> {
    let before = proc_stat(pid)?;
    signal(pid, libc::SIGSTOP, "send SIGSTOP")?;
    std::thread::Builder::new()
        .name(format!("resh-hang-{pid}"))
        .spawn(move || {
            std::thread::sleep(duration);
            match proc_stat(pid) {
                Ok(now) if now.start_time == before.start_time => {
                    if let Err(e) = sys::signal_pid(pid, libc::SIGCONT) {
                        debug!(pid, error = %e, "cannot continue hung process");
                    }
                }
                _ => debug!(pid, "hung process is gone; not continuing it"),
            }
        })
        .map_err(|error| {
            // Without the thread the process would stay stopped for ever: undo the stop.
            let _ = sys::signal_pid(pid, libc::SIGCONT);
            InjectError::Io { pid, what: "start the thread that ends the hang".into(), error }
        })?;
    Ok(Effect::Stopped { duration_ms: duration.as_millis().min(u128::from(u64::MAX)) as u64 })
}

/// One line of /proc/PID/maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `rw-p` and the like.
    pub perms: String,
    /// The path or pseudo-name (`[heap]`), empty for anonymous memory.
    pub path: String,
}

impl Mapping {
    /// Writable and private: flipping a bit of a *shared* writable mapping could write through
    /// to a file or to other processes, so those are never candidates.
    pub fn writable_private(&self) -> bool {
        let p = self.perms.as_bytes();
        p.get(1) == Some(&b'w') && p.get(3) == Some(&b'p')
    }

    /// Which region selector it belongs to, if any (`[vvar]`, `[vdso]` and the like: none).
    pub fn class(&self) -> Option<MemRegion> {
        let p = self.path.as_str();
        if p == "[heap]" {
            Some(MemRegion::Heap)
        } else if p == "[stack]" || p.starts_with("[stack:") {
            Some(MemRegion::Stack)
        } else if p.is_empty() || p.starts_with("[anon") {
            Some(MemRegion::Anon)
        } else if p.starts_with('/') {
            Some(MemRegion::Data)
        } else {
            None
        }
    }

    /// Whether `region` selects it.
    pub fn selected_by(&self, region: MemRegion) -> bool {
        match self.class() {
            None => false,
            Some(c) => region == MemRegion::Any || region == c,
        }
    }

    fn label(&self) -> String {
        if self.path.is_empty() {
            "anon".into()
        } else {
            self.path.clone()
        }
    }
}

/// Parses the text of /proc/PID/maps (lines it cannot read are skipped).
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let (range, perms) = (fields.first()?, fields.get(1)?);
            let (start, end) = range.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            (end > start).then(|| Mapping {
                start,
                end,
                perms: perms.to_string(),
                path: fields.get(5..).map(|p| p.join(" ")).unwrap_or_default(),
            })
        })
        .collect()
}

/// The mappings of process `pid`.
pub fn read_maps(pid: u32) -> Result<Vec<Mapping>, InjectError> {
    match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
        Ok(text) => Ok(parse_maps(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            Err(InjectError::ProcessGone { pid })
        }
        Err(error) => Err(InjectError::Io { pid, what: "read /proc/PID/maps".into(), error }),
    }
}

/// What a memflip does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemFlipSpec {
    /// How many bits (at independent random places, or in the byte at `address`).
    pub bits: u32,
    /// Which mappings may be hit.
    pub region: MemRegion,
    /// Hit this byte instead of a random one.
    pub address: Option<u64>,
}

/// Flips `spec.bits` bits in the memory of process `pid`, through /proc/PID/mem (no ptrace
/// stop: the process keeps running, as it would under a real upset).
///
/// A random location is uniform over the bytes of the selected writable private mappings (so
/// big mappings are hit more often, as they would be by a particle), and its bit is uniform
/// too; a location that cannot be read (a file mapping past its file's end) is skipped for
/// another draw. Each flip is verified by reading the byte back.
pub fn memflip(pid: u32, spec: &MemFlipSpec, rng: &mut Rng) -> Result<Vec<MemFlip>, InjectError> {
    let maps = read_maps(pid)?;
    if maps.is_empty() {
        // A zombie has no memory left; otherwise it is the process's own business.
        proc_stat(pid)?;
    }
    let mut mem = match OpenOptions::new().read(true).write(true).open(format!("/proc/{pid}/mem")) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            return Err(InjectError::ProcessGone { pid })
        }
        Err(error) => return Err(InjectError::Io { pid, what: "open /proc/PID/mem".into(), error }),
    };
    let mut flips = Vec::new();
    if let Some(address) = spec.address {
        let Some(m) = maps.iter().find(|m| m.writable_private() && m.start <= address && address < m.end) else {
            return Err(InjectError::AddressNotWritable { pid, address });
        };
        let mut bits: Vec<u8> = Vec::new();
        while bits.len() < spec.bits.min(8) as usize {
            let b = rng.below(8) as u8;
            if !bits.contains(&b) {
                bits.push(b);
            }
        }
        for bit in bits {
            let (old, new) = flip_byte(&mut mem, address, bit).map_err(|e| mem_error(pid, e))?;
            flips.push(memflip_record(m, address, bit, old, new));
        }
        return Ok(flips);
    }
    let candidates: Vec<&Mapping> =
        maps.iter().filter(|m| m.writable_private() && m.selected_by(spec.region)).collect();
    let total: u64 = candidates.iter().map(|m| m.end - m.start).sum();
    if total == 0 {
        return Err(InjectError::NoWritableMemory { pid, region: spec.region });
    }
    let mut tries = 0;
    while flips.len() < spec.bits as usize {
        tries += 1;
        if tries > MEMFLIP_TRIES * spec.bits {
            return Err(InjectError::Io {
                pid,
                what: format!("find a readable byte in region `{}`", spec.region),
                error: io::Error::other(format!("{MEMFLIP_TRIES} draws per bit failed")),
            });
        }
        let mut at = rng.below(total);
        let bit = rng.below(8) as u8;
        let Some(m) = candidates.iter().find(|m| {
            let len = m.end - m.start;
            if at < len {
                true
            } else {
                at -= len;
                false
            }
        }) else {
            continue;
        };
        let address = m.start + at;
        if flips.iter().any(|f: &MemFlip| f.address == address && f.bit == bit) {
            continue; // the same bit twice would undo the first flip
        }
        match flip_byte(&mut mem, address, bit) {
            Ok((old, new)) => flips.push(memflip_record(m, address, bit, old, new)),
            Err(e) if e.raw_os_error() == Some(libc::EIO) || e.raw_os_error() == Some(libc::EFAULT) => {
                debug!(pid, address, error = %e, "memflip: byte not accessible, drawing another");
            }
            Err(e) => return Err(mem_error(pid, e)),
        }
    }
    Ok(flips)
}

fn memflip_record(m: &Mapping, address: u64, bit: u8, old: u8, new: u8) -> MemFlip {
    MemFlip {
        address,
        region: m.label(),
        region_start: m.start,
        offset_in_region: address - m.start,
        perms: m.perms.clone(),
        bit,
        old,
        new,
    }
}

/// A failed access to /proc/PID/mem: end of file there means the address space is gone.
fn mem_error(pid: u32, error: io::Error) -> InjectError {
    if error.kind() == io::ErrorKind::UnexpectedEof || error.raw_os_error() == Some(libc::ESRCH) {
        return InjectError::ProcessGone { pid };
    }
    if let Err(gone @ InjectError::ProcessGone { .. }) = proc_stat(pid) {
        return gone;
    }
    InjectError::Io { pid, what: "access /proc/PID/mem".into(), error }
}

/// Reads the byte at `address`, writes it back with `bit` flipped, and checks the write.
fn flip_byte(mem: &mut File, address: u64, bit: u8) -> io::Result<(u8, u8)> {
    let mut byte = [0u8];
    mem.seek(SeekFrom::Start(address))?;
    mem.read_exact(&mut byte)?;
    let old = byte[0];
    let new = old ^ (1 << (bit & 7));
    mem.seek(SeekFrom::Start(address))?;
    mem.write_all(&[new])?;
    mem.seek(SeekFrom::Start(address))?;
    mem.read_exact(&mut byte)?;
    if byte[0] != new && byte[0] == old {
        return Err(io::Error::other("the write did not take"));
    }
    Ok((old, new))
}

/// A data-path injection waiting for its replica's next bytes.
#[derive(Clone, Debug)]
struct Arm {
    id: u64,
    replica: usize,
    kind: InjectKind,
    seed: u64,
    bits: u32,
    span: u64,
    delay: Duration,
}

/// The armed data-path injections of one resh, and the log of every injection. Sessions reach
/// it through [`Tap`]s; the admin API and the campaign runner through [`perform`].
#[derive(Debug)]
pub struct Injector {
    names: Vec<Arc<str>>,
    /// Armed injections per replica: the fast path of every [`Tap`] call is one load of this.
    armed: Vec<AtomicUsize>,
    pending: Mutex<Vec<Arm>>,
    log: Mutex<VecDeque<InjectionRecord>>,
    /// Bumped on every new record, so waiters wake.
    version: watch::Sender<u64>,
    next_id: AtomicU64,
}

impl Injector {
    /// An injector for replicas with these names (indexed as in the configuration).
    pub fn new(names: Vec<Arc<str>>) -> Arc<Injector> {
        let armed = names.iter().map(|_| AtomicUsize::new(0)).collect();
        Arc::new(Injector {
            names,
            armed,
            pending: Mutex::new(Vec::new()),
            log: Mutex::new(VecDeque::new()),
            version: watch::Sender::new(0),
            next_id: AtomicU64::new(1),
        })
    }

    /// A hook for one direction of one connection to replica `replica` (its index in the
    /// configuration). See [`Tap`].
    pub fn tap(self: &Arc<Self>, replica: usize) -> Tap {
        Tap { injector: Arc::clone(self), replica, offset: 0, active: None }
    }

    /// Every injection event kept (the last 256), oldest first.
    pub fn records(&self) -> Vec<InjectionRecord> {
        lock(&self.log).iter().cloned().collect()
    }

    /// How many injections are armed and have not fired yet.
    pub fn armed_count(&self) -> usize {
        self.armed.iter().map(|a| a.load(Ordering::Acquire)).sum()
    }

    /// Waits up to `timeout` until the armed injection `id` fired; its fired record then.
    pub async fn wait_fired(&self, id: u64, timeout: Duration) -> Option<InjectionRecord> {
        let mut changes = self.version.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let fired = lock(&self.log).iter().rev().find(|r| r.id == id && r.status == RecordStatus::Fired).cloned();
            if fired.is_some() {
                return fired;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }

    fn name(&self, replica: usize) -> String {
        self.names.get(replica).map(|n| n.to_string()).unwrap_or_else(|| format!("#{replica}"))
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn record(&self, record: InjectionRecord) {
        info!(
            id = record.id,
            replica = %record.replica,
            kind = record.kind.name(),
            status = ?record.status,
            seed = record.seed,
            effect = ?record.effect,
            "injection"
        );
        {
            let mut log = lock(&self.log);
            if log.len() == LOG_LEN {
                log.pop_front();
            }
            log.push_back(record);
        }
        self.version.send_modify(|v| *v += 1);
    }

    fn arm(&self, arm: Arm) -> InjectionRecord {
        let record = InjectionRecord {
            id: arm.id,
            replica: self.name(arm.replica),
            kind: arm.kind,
            status: RecordStatus::Armed,
            seed: arm.seed,
            time: unix_now(),
            pid: None,
            effect: Effect::Armed {
                bits: (arm.kind != InjectKind::Delay).then_some(arm.bits),
                span_bytes: (arm.kind != InjectKind::Delay).then_some(arm.span),
                delay_ms: (arm.kind == InjectKind::Delay).then_some(arm.delay.as_millis() as u64),
            },
        };
        let Some(counter) = self.armed.get(arm.replica) else { return record };
        lock(&self.pending).push(arm);
        counter.fetch_add(1, Ordering::Release);
        self.record(record.clone());
        record
    }

    /// Takes the oldest armed injection of `replica` that acts on `direction`.
    fn claim(&self, replica: usize, direction: Direction) -> Option<Arm> {
        let mut pending = lock(&self.pending);
        let i = pending.iter().position(|a| {
            a.replica == replica
                && match direction {
                    Direction::Output => matches!(a.kind, InjectKind::Outflip | InjectKind::Delay),
                    Direction::Input => a.kind == InjectKind::Inflip,
                }
        })?;
        let arm = pending.remove(i);
        if let Some(counter) = self.armed.get(replica) {
            counter.fetch_sub(1, Ordering::AcqRel);
        }
        Some(arm)
    }

    fn fired(&self, arm: &Arm, effect: Effect) {
        self.record(InjectionRecord {
            id: arm.id,
            replica: self.name(arm.replica),
            kind: arm.kind,
            status: RecordStatus::Fired,
            seed: arm.seed,
            time: unix_now(),
            pid: None,
            effect,
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A stream flip in progress: claimed by one connection, applied as its bytes go by.
#[derive(Debug)]
struct ActiveFlip {
    arm: Arm,
    direction: Direction,
    /// Planned flips as (stream offset, bit), in stream order.
    planned: VecDeque<(u64, u8)>,
    done: Vec<StreamFlip>,
}

impl ActiveFlip {
    /// Plans `bits` distinct bit positions in the `span` bytes from `start`, from the seed
    /// alone: the same seed flips the same bits relative to where the injection took effect,
    /// however the stream happens to be cut into chunks.
    fn new(arm: Arm, direction: Direction, start: u64) -> ActiveFlip {
        let mut rng = Rng::new(arm.seed);
        let room = arm.span.saturating_mul(8);
        let want = u64::from(arm.bits).min(room);
        let mut positions: Vec<u64> = Vec::with_capacity(want as usize);
        while (positions.len() as u64) < want {
            let p = rng.below(room);
            if !positions.contains(&p) {
                positions.push(p);
            }
        }
        positions.sort_unstable();
        let planned = positions.into_iter().map(|p| (start + p / 8, (p % 8) as u8)).collect();
        ActiveFlip { arm, direction, planned, done: Vec::new() }
    }

    /// Whether any planned flip falls in `[start, start + len)`.
    fn hits(&self, start: u64, len: usize) -> bool {
        self.planned.front().is_some_and(|&(off, _)| off < start + len as u64)
    }

    fn apply(&mut self, start: u64, chunk: &mut [u8]) {
        while let Some(&(offset, bit)) = self.planned.front() {
            let Some(byte) = offset.checked_sub(start).and_then(|i| chunk.get_mut(i as usize)) else { break };
            let old = *byte;
            *byte ^= 1 << bit;
            self.done.push(StreamFlip { offset, bit, old, new: *byte });
            self.planned.pop_front();
        }
    }

    fn finish(self, injector: &Injector) {
        let complete = self.planned.is_empty();
        injector.fired(&self.arm, Effect::StreamFlips { direction: self.direction, flips: self.done, complete });
    }
}

/// The data-path hook of one direction of one replica connection.
///
/// A session creates one `Tap` per direction and replica connection (with
/// [`Injector::tap`], or `Supervisor::tap`) and calls it for every chunk, in stream order:
/// - whoever reads the replica's output calls `tap.output(&mut chunk).await` (or
///   `tap.output_now(&mut chunk)`, which returns the delay instead of sleeping) after each
///   read and before the bytes reach the voter: an armed `outflip` flips bits in the chunk, an
///   armed `delay` holds the chunk back;
/// - whoever writes client input to the replica calls `chunk = tap.input(chunk)` (or
///   `tap.input_slice(&chunk)`) before each write: an armed `inflip` returns a copy with bits
///   flipped (the other replicas keep
///   the original bytes).
///
/// Nothing else is needed, so any dispatch discipline (stream mode, the ordered mode) can use
/// it. When nothing is armed for the replica each call costs one atomic load. An armed
/// injection is claimed by the first connection that moves bytes in its direction; if that
/// connection ends before all planned bits went by, the fired record says `complete: false`.
#[derive(Debug)]
pub struct Tap {
    injector: Arc<Injector>,
    replica: usize,
    /// Bytes this direction carried so far.
    offset: u64,
    active: Option<ActiveFlip>,
}

impl Tap {
    fn armed(&self) -> bool {
        self.injector.armed.get(self.replica).is_some_and(|a| a.load(Ordering::Acquire) > 0)
    }

    /// Claims an armed injection for `direction` if one waits and none is in progress.
    /// Returns a delay to apply (output only).
    fn claim(&mut self, direction: Direction, start: u64) -> Option<Duration> {
        if self.active.is_some() || !self.armed() {
            return None;
        }
        let arm = self.injector.claim(self.replica, direction)?;
        if arm.kind == InjectKind::Delay {
            let delay = arm.delay;
            self.injector.fired(&arm, Effect::Delayed { delay_ms: delay.as_millis() as u64, offset: start });
            return Some(delay);
        }
        self.active = Some(ActiveFlip::new(arm, direction, start));
        None
    }

    fn settle(&mut self) {
        if self.active.as_ref().is_some_and(|a| a.planned.is_empty()) {
            if let Some(active) = self.active.take() {
                active.finish(&self.injector);
            }
        }
    }

    /// Output hook: call with each chunk read from the replica, before the voter sees it.
    pub async fn output(&mut self, chunk: &mut [u8]) {
        if let Some(delay) = self.output_now(chunk) {
            tokio::time::sleep(delay).await;
        }
    }

    /// The output hook for callers that cannot wait in it (a session that polls its sockets
    /// itself): flips the chunk's bits in place if an `outflip` hits it, and returns how long
    /// to hold the chunk back if a `delay` fired on it.
    pub fn output_now(&mut self, chunk: &mut [u8]) -> Option<Duration> {
        let start = self.offset;
        self.offset += chunk.len() as u64;
        if chunk.is_empty() || (self.active.is_none() && !self.armed()) {
            return None;
        }
        // A delay never starts a flip (claim returns it instead), so applying the active flip
        // now rather than after the delay changes nothing.
        let delay = self.claim(Direction::Output, start);
        if let Some(active) = self.active.as_mut() {
            active.apply(start, chunk);
        }
        self.settle();
        delay
    }

    /// Input hook: call with each chunk before it is written to the replica; returns the bytes
    /// to write (the same `Bytes` unless an inflip hit the chunk).
    pub fn input(&mut self, chunk: Bytes) -> Bytes {
        match self.input_slice(&chunk) {
            Cow::Borrowed(_) => chunk,
            Cow::Owned(flipped) => Bytes::from(flipped),
        }
    }

    /// The input hook on a borrowed chunk: the chunk itself, or a copy with bits flipped if an
    /// `inflip` hit it.
    pub fn input_slice<'a>(&mut self, chunk: &'a [u8]) -> Cow<'a, [u8]> {
        let start = self.offset;
        self.offset += chunk.len() as u64;
        if chunk.is_empty() || (self.active.is_none() && !self.armed()) {
            return Cow::Borrowed(chunk);
        }
        self.claim(Direction::Input, start);
        let Some(active) = self.active.as_mut() else { return Cow::Borrowed(chunk) };
        if !active.hits(start, chunk.len()) {
            return Cow::Borrowed(chunk);
        }
        let mut owned = chunk.to_vec();
        active.apply(start, &mut owned);
        self.settle();
        Cow::Owned(owned)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if let Some(active) = self.active.take() {
            active.finish(&self.injector);
        }
    }
}

/// Checks `request`, finds its replica, and does (process faults) or arms (data-path faults)
/// the injection. The record is also kept in the injector's log and logged.
pub fn perform(supervisor: &Supervisor, request: &InjectRequest) -> Result<InjectionRecord, InjectError> {
    request.check()?;
    let index =
        supervisor.index_of(&request.replica).ok_or_else(|| InjectError::UnknownReplica(request.replica.clone()))?;
    let injector = supervisor.injector();
    let seed = request.seed.unwrap_or_else(fresh_seed);
    let bits = request.bits.unwrap_or(1);
    let kind = request.kind;
    let pid = || supervisor.pid(index).ok_or_else(|| InjectError::NoProcess { replica: request.replica.clone() });
    let (pid, effect) = match kind {
        InjectKind::Outflip | InjectKind::Inflip | InjectKind::Delay => {
            let arm = Arm {
                id: injector.next_id(),
                replica: index,
                kind,
                seed,
                bits,
                span: request.span_bytes.unwrap_or_else(|| u64::from(bits).div_ceil(8)),
                delay: Duration::from_millis(request.delay_ms.unwrap_or(DEFAULT_DELAY_MS)),
            };
            return Ok(injector.arm(arm));
        }
        InjectKind::Memflip => {
            let pid = pid()?;
            let spec = MemFlipSpec { bits, region: request.region.unwrap_or_default(), address: request.address };
            (pid, Effect::MemoryFlips { flips: memflip(pid, &spec, &mut Rng::new(seed))? })
        }
        InjectKind::Crash => {
            let pid = pid()?;
            (pid, crash(pid)?)
        }
        InjectKind::Hang => {
            let pid = pid()?;
            (pid, hang(pid, Duration::from_millis(request.duration_ms.unwrap_or(DEFAULT_HANG_MS)))?)
        }
    };
    let record = InjectionRecord {
        id: injector.next_id(),
        replica: request.replica.clone(),
        kind,
        status: RecordStatus::Done,
        seed,
        time: unix_now(),
        pid: Some(pid),
        effect,
    };
    injector.record(record.clone());
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let a: Vec<u64> = (0..5).scan(Rng::new(7), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..5).scan(Rng::new(7), |r, _| Some(r.next_u64())).collect();
        let c: Vec<u64> = (0..5).scan(Rng::new(8), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut r = Rng::new(1);
        let mut seen = [0u32; 6];
        for _ in 0..6000 {
            let x = r.below(6);
            seen[x as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
        assert_eq!(r.between(5, 5), 5);
        assert!((0..100).all(|_| (3..=9).contains(&r.between(3, 9))));
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn maps_are_parsed_and_classified() {
        let text = "\
55d0c6a2e000-55d0c6a4f000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
7f1000000000-7f1000001000 r--p 00000000 08:01 1234                       /usr/lib/libc.so.6
7f1000001000-7f1000002000 rw-p 00001000 08:01 1234                       /usr/lib/libc.so.6
7f2000000000-7f2000001000 rw-s 00000000 00:05 99                         /dev/shm/x
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
7ffd00100000-7ffd00102000 r--p 00000000 00:00 0                          [vvar]
garbage line
";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 7);
        let classes: Vec<Option<MemRegion>> = maps.iter().map(Mapping::class).collect();
        assert_eq!(
            classes,
            [
                Some(MemRegion::Heap),
                Some(MemRegion::Anon),
                Some(MemRegion::Data),
                Some(MemRegion::Data),
                Some(MemRegion::Data),
                Some(MemRegion::Stack),
                None
            ]
        );
        let writable: Vec<bool> = maps.iter().map(Mapping::writable_private).collect();
        assert_eq!(writable, [true, true, false, true, false, true, false]);
        assert!(maps[3].selected_by(MemRegion::Data) && maps[3].selected_by(MemRegion::Any));
        assert!(!maps[3].selected_by(MemRegion::Heap));
        assert!(!maps[6].selected_by(MemRegion::Any));
    }

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
        assert!("bitflip".parse::<InjectKind>().unwrap_err().contains("outflip, inflip"));
    }

    fn injector() -> Arc<Injector> {
        Injector::new(vec!["a".into(), "b".into()])
    }

    fn arm(inj: &Injector, replica: usize, kind: InjectKind, seed: u64, bits: u32, span: u64) -> InjectionRecord {
        inj.arm(Arm { id: inj.next_id(), replica, kind, seed, bits, span, delay: Duration::from_millis(30) })
    }

    #[test]
    fn outflip_flips_the_planned_bits_across_chunks_and_only_in_its_replica() {
        let inj = injector();
        arm(&inj, 1, InjectKind::Outflip, 99, 6, 10);
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        let mut other = inj.tap(0);
        let mut tap = inj.tap(1);
        let original: Vec<u8> = (0..20u8).collect();
        let (mut a, mut b, mut untouched) = (original[..4].to_vec(), original[4..].to_vec(), original.clone());
        rt.block_on(async {
            other.output(&mut untouched).await;
            tap.output(&mut a).await;
            tap.output(&mut b).await;
        });
        assert_eq!(untouched, original, "replica 0 had nothing armed");
        let got: Vec<u8> = a.iter().chain(&b).copied().collect();
        let differing: u32 = got.iter().zip(&original).map(|(x, y)| (x ^ y).count_ones()).sum();
        assert_eq!(differing, 6);
        assert!(got[10..] == original[10..], "flips stay within the span");
        let fired = inj.records().into_iter().find(|r| r.status == RecordStatus::Fired).expect("fired record");
        let Effect::StreamFlips { direction, flips, complete } = fired.effect else { panic!("{fired:?}") };
        assert_eq!((direction, complete, flips.len()), (Direction::Output, true, 6));
        for (i, f) in flips.iter().enumerate() {
            assert_eq!(f.old ^ f.new, 1 << f.bit);
            // Two bits may land in one byte: the last flip there shows the final byte.
            if flips[i + 1..].iter().all(|g| g.offset != f.offset) {
                assert_eq!(got[f.offset as usize], f.new);
            }
        }
        // The same seed plans the same bits, however the stream is chunked.
        let inj2 = injector();
        arm(&inj2, 1, InjectKind::Outflip, 99, 6, 10);
        let mut whole = original.clone();
        rt.block_on(inj2.tap(1).output(&mut whole));
        assert_eq!(whole, got);
        assert_eq!(inj.armed_count(), 0);
    }

    #[test]
    fn inflip_copies_only_the_chunk_it_hits_and_delay_holds_output() {
        let inj = injector();
        arm(&inj, 0, InjectKind::Inflip, 5, 1, 1);
        let mut tap = inj.tap(0);
        let original = Bytes::from_static(b"hello");
        let out = tap.input(original.clone());
        assert_eq!(out.len(), 5);
        assert_eq!(out.iter().zip(original.iter()).map(|(x, y)| (x ^ y).count_ones()).sum::<u32>(), 1);
        assert_ne!(out[0], original[0], "one bit in the next byte");
        assert_eq!(tap.input(original.clone()), original, "fires once");

        arm(&inj, 0, InjectKind::Delay, 5, 1, 1);
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        let began = std::time::Instant::now();
        let mut out_tap = inj.tap(0);
        let mut chunk = b"abc".to_vec();
        rt.block_on(out_tap.output(&mut chunk));
        assert!(began.elapsed() >= Duration::from_millis(30));
        assert_eq!(chunk, b"abc");
        assert!(rt.block_on(inj.wait_fired(2, Duration::from_millis(10))).is_some());
    }

    #[test]
    fn a_connection_that_ends_early_reports_a_partial_flip() {
        let inj = injector();
        arm(&inj, 0, InjectKind::Outflip, 1, 8, 1000);
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        let mut tap = inj.tap(0);
        let mut chunk = vec![0u8; 2];
        rt.block_on(tap.output(&mut chunk));
        drop(tap);
        let fired = inj.records().into_iter().find(|r| r.status == RecordStatus::Fired).expect("fired");
        assert!(matches!(fired.effect, Effect::StreamFlips { complete: false, .. }), "{fired:?}");
    }
}
