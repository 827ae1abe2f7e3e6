//! D-RESH: the group as the sequencer's order source (`[group]` in the configuration).
//!
//! On one host the sequencer numbers its sessions' requests itself. With a group, it hands them
//! to the D-RESH state machine ([`group::dresh`]) instead, which multicasts them; what the group
//! *delivers*, in its agreed order, is what the ordered core gets, at every host alike. This
//! module is the glue around that state machine, and decides nothing itself:
//! - [`GroupSource`]: the state machine, the messages waiting to be multicast (the group's
//!   send queue may be full: they wait here, and the sessions wait with them), the local
//!   requests' answers waiting for the group's release, and the batches that wait for a state
//!   transfer;
//! - [`GroupStatus`]: what `/status` and `/metrics` show of the group: the view, this host's
//!   role, the stream's point, delivery latency and batch sizes.
//!
//! Why an answer waits: CPG's delivery is agreed, not safe, so a request delivered here may be
//! lost with this host. The answer goes to the client once a majority of the expected hosts gave
//! the same answer digest (see [`group::dresh`]): no acknowledged write is lost with one host.
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use group::dresh::{Dresh, Origin, Role};
use group::HostId;
use serde::Serialize;

use super::transfer::ExportRequest;
use super::SessionAnswer;

/// Messages waiting for the group's send queue; beyond this, sessions wait.
pub const MAX_OUTBOX: usize = 256;

/// The group as the sequencer's order source. See the module documentation.
#[derive(Debug)]
pub struct GroupSource {
    /// The D-RESH state machine.
    pub dresh: Dresh,
    /// This host.
    pub local: HostId,
    /// The largest message the engine carries.
    pub max_message: usize,
    /// Messages to multicast, oldest first.
    pub outbox: VecDeque<Bytes>,
    /// Answers to local requests, by sequence number, waiting for the group's release.
    pub held: BTreeMap<u64, (u64, SessionAnswer)>,
    /// Batches delivered while this host waits for a state (not yet given to the core).
    pub waiting: Option<WaitingState>,
    /// When this host multicast each of its request batches still on the way (for the
    /// delivery latency; cleared at a view change, where some may be lost).
    pub sent_at: VecDeque<Instant>,
    /// Each host's state-transfer address.
    pub transfer_addrs: BTreeMap<HostId, SocketAddr>,
    /// A joiner's request this host serves now (its core's input is held still meanwhile).
    pub export: Option<Export>,
    /// Batches delivered while the core's input is held still for an export.
    pub paused: Vec<(u64, Vec<(Origin, Bytes)>)>,
    /// An import of the state runs (into these replica incarnations).
    pub importing: Option<Vec<(usize, u64)>>,
    /// When the next import may start (after a failed one).
    pub import_after: Option<Instant>,
    /// The state is in: tell the group once the new core can serve.
    pub ready_pending: bool,
    /// Requests below this one are in the state this host was given: not executed again.
    pub skip_below: u64,
}

/// A joiner's request, as this host serves it.
#[derive(Debug)]
pub enum Export {
    /// Waiting for the core to come to rest.
    Pending {
        /// The request.
        request: ExportRequest,
        /// Since when.
        since: Instant,
    },
    /// The state is being read from the replicas.
    Reading {
        /// Since when: the core's input is held still for at most the request timeout.
        since: Instant,
        /// The export's task (aborted if it holds the core too long).
        task: tokio::task::JoinHandle<()>,
        /// Tells this export's events from an earlier one's.
        id: u64,
    },
}

/// A state transfer this host waits for: at `seq`, then these batches.
#[derive(Debug)]
pub struct WaitingState {
    /// The state's point.
    pub seq: u64,
    /// Hosts that hold it.
    pub from: Vec<HostId>,
    /// Batches delivered from `seq` on.
    pub batches: Vec<(u64, Vec<(Origin, Bytes)>)>,
    /// Since when it waits for the state at `seq`.
    pub since: Instant,
}

impl GroupSource {
    /// The group's order source for host `local`.
    pub fn new(dresh: Dresh, local: HostId, max_message: usize) -> GroupSource {
        GroupSource {
            dresh,
            local,
            max_message,
            outbox: VecDeque::new(),
            held: BTreeMap::new(),
            waiting: None,
            sent_at: VecDeque::new(),
            transfer_addrs: BTreeMap::new(),
            export: None,
            paused: Vec::new(),
            importing: None,
            import_after: None,
            ready_pending: false,
            skip_below: 0,
        }
    }

    /// Whether the sessions must wait: too many messages wait for the group.
    pub fn backlogged(&self) -> bool {
        self.outbox.len() >= MAX_OUTBOX
    }
}

/// A fixed-bucket histogram for the exposition.
#[derive(Debug)]
pub struct Buckets {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    sum: Mutex<f64>,
}

impl Buckets {
    /// A histogram with these upper bounds.
    pub fn new(bounds: &'static [f64]) -> Buckets {
        Buckets {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: Mutex::new(0.0),
        }
    }

    /// Counts one value.
    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        *self.sum.lock().unwrap_or_else(|p| p.into_inner()) += value;
    }

    /// The values counted so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The smallest bucket bound at or below which `q` of the values fall (an upper estimate of
    /// the quantile), or `None` if nothing was counted or it is above the last bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil() as u64;
        let mut seen = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            seen += count.load(Ordering::Relaxed);
            if seen >= want {
                return Some(*bound);
            }
        }
        None
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", *self.sum.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Delivery latency bounds, in seconds.
const DELIVERY_BUCKETS: [f64; 12] = [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0];
/// Requests per delivered batch.
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0];

/// Where this host stands in the group, for `/status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GroupState {
    /// `joining`, `serving`, `fenced` or `left`.
    pub role: &'static str,
    /// Why, when it does not serve.
    pub detail: Option<String>,
    /// The members of the view it installed last.
    pub members: Vec<HostId>,
    /// The next sequence number of the ordered stream, while this host numbers it.
    pub next_seq: Option<u64>,
    /// Answers of local requests waiting for the other hosts' digests.
    pub answers_waiting: usize,
    /// Messages waiting for the group's send queue.
    pub outbox: usize,
}

/// What `/status` and `/metrics` show of the group.
#[derive(Debug)]
pub struct GroupStatus {
    /// The engine's name.
    pub engine: &'static str,
    /// The group's name.
    pub name: String,
    /// The expected size.
    pub hosts: usize,
    /// This host.
    pub local: HostId,
    state: Mutex<GroupState>,
    views: AtomicU64,
    batches: AtomicU64,
    requests: AtomicU64,
    malformed: AtomicU64,
    /// State transfers: [given ok, given failed, taken ok, taken failed].
    transfers: [AtomicU64; 4],
    /// From multicasting a batch of requests to its delivery here.
    pub delivery: Buckets,
    /// Requests per delivered batch.
    pub batch_sizes: Buckets,
}

impl GroupStatus {
    /// The status of host `local` in group `name`.
    pub fn new(engine: &'static str, name: String, hosts: usize, local: HostId) -> GroupStatus {
        GroupStatus {
            engine,
            name,
            hosts,
            local,
            state: Mutex::new(GroupState { role: "joining", ..GroupState::default() }),
            views: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            transfers: Default::default(),
            delivery: Buckets::new(&DELIVERY_BUCKETS),
            batch_sizes: Buckets::new(&BATCH_BUCKETS),
        }
    }

    /// A view was installed.
    pub fn view_installed(&self) {
        self.views.fetch_add(1, Ordering::Relaxed);
    }

    /// A batch of `n` requests was delivered.
    pub fn batch_delivered(&self, n: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(n as u64, Ordering::Relaxed);
        self.batch_sizes.observe(n as f64);
    }

    /// A state transfer ended: `given` to a joining host (else taken from another), `ok` or not.
    pub fn transfer(&self, given: bool, ok: bool) {
        let i = usize::from(!given) * 2 + usize::from(!ok);
        self.transfers[i].fetch_add(1, Ordering::Relaxed);
    }

    /// One of this host's batches came back from the group after `waited`.
    pub fn delivered_after(&self, waited: Duration) {
        self.delivery.observe(waited.as_secs_f64());
    }

    /// Refreshes the state from the source; `detail` says why it does not serve.
    pub fn publish(&self, source: &GroupSource, detail: Option<String>) {
        let role = match source.dresh.role() {
            Role::Joining => "joining",
            Role::Serving => "serving",
            Role::Fenced => "fenced",
            Role::Left => "left",
        };
        self.malformed.store(source.dresh.malformed(), Ordering::Relaxed);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.role = role;
        if detail.is_some() || role == "serving" {
            state.detail = detail;
        }
        state.members = source.dresh.view().map(|v| v.members.clone()).unwrap_or_default();
        state.next_seq = source.dresh.point().map(|p| p.seq);
        state.answers_waiting = source.held.len();
        state.outbox = source.outbox.len();
    }

    /// The role now (`serving`, ...).
    pub fn role(&self) -> &'static str {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).role
    }

    /// The `group` object of `/status`.
    pub fn status(&self) -> serde_json::Value {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let ms = |q| self.delivery.quantile(q).map(|s| s * 1000.0);
        serde_json::json!({
            "engine": self.engine,
            "name": self.name,
            "hosts": self.hosts,
            "local": self.local,
            "role": state.role,
            "detail": state.detail,
            "view": state.members,
            "quorum": self.hosts / 2 + 1,
            "next_seq": state.next_seq,
            "answers_waiting": state.answers_waiting,
            "outbox": state.outbox,
            "views_installed": self.views.load(Ordering::Relaxed),
            "batches_delivered": self.batches.load(Ordering::Relaxed),
            "requests_delivered": self.requests.load(Ordering::Relaxed),
            "malformed_messages": self.malformed.load(Ordering::Relaxed),
            "state_transfers": {
                "given": self.transfers[0].load(Ordering::Relaxed),
                "given_failed": self.transfers[1].load(Ordering::Relaxed),
                "taken": self.transfers[2].load(Ordering::Relaxed),
                "taken_failed": self.transfers[3].load(Ordering::Relaxed),
            },
            "delivery_latency_ms": { "p50_at_most": ms(0.5), "p99_at_most": ms(0.99) },
        })
    }

    /// The group's lines of `/metrics`.
    pub fn prometheus(&self, out: &mut String) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut gauge = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        gauge(
            "resh_group_serving",
            "gauge",
            "1 if this host serves (in a view with quorum, in sync).",
            u64::from(state.role == "serving"),
        );
        gauge("resh_group_members", "gauge", "Hosts in the view this host installed last.", state.members.len() as u64);
        gauge("resh_group_views_total", "counter", "Membership views installed.", self.views.load(Ordering::Relaxed));
        gauge(
            "resh_group_batches_total",
            "counter",
            "Batches of requests delivered by the group.",
            self.batches.load(Ordering::Relaxed),
        );
        gauge(
            "resh_group_requests_total",
            "counter",
            "Requests delivered by the group (all hosts').",
            self.requests.load(Ordering::Relaxed),
        );
        gauge(
            "resh_group_malformed_total",
            "counter",
            "Messages from other hosts that could not be decoded.",
            self.malformed.load(Ordering::Relaxed),
        );
        gauge(
            "resh_group_answers_waiting",
            "gauge",
            "Local answers waiting for other hosts' digests.",
            state.answers_waiting as u64,
        );
        let _ = writeln!(
            out,
            "# HELP resh_group_state_transfers_total State transfers between hosts: given to a joining host, or taken from another.\n# TYPE resh_group_state_transfers_total counter"
        );
        for (i, (direction, outcome)) in
            [("given", "ok"), ("given", "failed"), ("taken", "ok"), ("taken", "failed")].iter().enumerate()
        {
            let value = self.transfers[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "resh_group_state_transfers_total{{direction=\"{direction}\",outcome=\"{outcome}\"}} {value}"
            );
        }
        self.delivery.render(
            out,
            "resh_group_delivery_seconds",
            "From multicasting a batch of this host's requests to its delivery back.",
        );
        self.batch_sizes.render(out, "resh_group_batch_requests", "Requests per delivered batch.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_bounds() {
        let b = Buckets::new(&BATCH_BUCKETS);
        assert_eq!(b.quantile(0.5), None);
        for v in [1.0, 1.0, 3.0, 100.0] {
            b.observe(v);
        }
        assert_eq!(b.quantile(0.5), Some(1.0));
        assert_eq!(b.quantile(0.75), Some(4.0));
        assert_eq!(b.quantile(1.0), Some(256.0));
        let mut out = String::new();
        b.render(&mut out, "x", "y");
        assert!(out.contains("x_bucket{le=\"4\"} 3"), "{out}");
        assert!(out.contains("x_count 4"), "{out}");
    }
}
