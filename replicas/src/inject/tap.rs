//! Data-path injections: the [`Injector`] that keeps armed injections and the injection log,
//! and the [`Tap`] through which a session's bytes pass.
use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tracing::info;

use super::{unix_now, Direction, Effect, InjectKind, InjectionRecord, RecordStatus, Rng, StreamFlip};

/// How many injection records the [`Injector`] keeps.
const LOG_LEN: usize = 256;

/// A data-path injection waiting for its replica's next bytes.
#[derive(Clone, Debug)]
pub(super) struct Arm {
    pub(super) id: u64,
    pub(super) replica: usize,
    pub(super) kind: InjectKind,
    pub(super) seed: u64,
    pub(super) bits: u32,
    pub(super) span: u64,
    pub(super) delay: Duration,
}

/// The armed data-path injections of one resh, and the log of every injection. Sessions reach
/// it through [`Tap`]s; the admin API and the campaign runner through [`perform`](super::perform).
#[derive(Debug)]
pub struct Injector {
    /// Replica names by index; a replica added while resh runs gets the next index.
    names: std::sync::RwLock<Vec<Arc<str>>>,
    /// Armed injections per replica: the fast path of every [`Tap`] call is one load of this.
    armed: Vec<AtomicUsize>,
    pending: Mutex<Vec<Arm>>,
    log: Mutex<VecDeque<InjectionRecord>>,
    /// Bumped on every new record, so waiters wake.
    version: watch::Sender<u64>,
    next_id: AtomicU64,
}

impl Injector {
    /// An injector for replicas with these names (indexed as in the configuration), with room
    /// for replicas added later up to `capacity` in all.
    pub fn new(names: Vec<Arc<str>>, capacity: usize) -> Arc<Injector> {
        let armed = (0..capacity.max(names.len())).map(|_| AtomicUsize::new(0)).collect();
        Arc::new(Injector {
            names: std::sync::RwLock::new(names),
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
        let names = self.names.read().unwrap_or_else(|p| p.into_inner());
        names.get(replica).map(|n| n.to_string()).unwrap_or_else(|| format!("#{replica}"))
    }

    /// A replica added while resh runs, at index `replica` (the next one).
    pub fn add(&self, replica: usize, name: Arc<str>) {
        let mut names = self.names.write().unwrap_or_else(|p| p.into_inner());
        if names.len() == replica {
            names.push(name);
        }
    }

    pub(super) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn record(&self, record: InjectionRecord) {
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

    pub(super) fn arm(&self, arm: Arm) -> InjectionRecord {
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
#[cfg(test)]
mod tests {
    use super::*;

    fn injector() -> Arc<Injector> {
        Injector::new(vec!["a".into(), "b".into()], 2)
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
