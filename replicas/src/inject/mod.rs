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
//!
//! Layout: `rng` (the seeded PRNG), `request` (requests, records, errors),
//! `process` (/proc/PID/stat and maps, crash, hang), `memflip` (bits in process memory), `tap`
//! (the [`Injector`] and the data-path [`Tap`]); everything public is re-exported here.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::supervisor::Supervisor;

mod memflip;
mod process;
mod request;
mod rng;
mod tap;

pub use self::memflip::{memflip, MemFlipSpec};
pub use self::process::{crash, hang, parse_maps, proc_stat, read_maps, Mapping, ProcStat};
pub use self::request::{
    Direction, Effect, InjectError, InjectKind, InjectRequest, InjectionRecord, InvalidField, MemFlip, MemRegion,
    RecordStatus, StreamFlip, UnknownName, MAX_BITS, MAX_DURATION_MS, MAX_SPAN_BYTES, MAX_WAIT_MS,
};
pub use self::rng::{fresh_seed, Rng};
use self::tap::Arm;
pub use self::tap::{Injector, Tap};

/// Default hang duration when a request names none.
pub const DEFAULT_HANG_MS: u64 = 1000;
/// Default output delay when a request names none.
pub const DEFAULT_DELAY_MS: u64 = 1000;

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
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
