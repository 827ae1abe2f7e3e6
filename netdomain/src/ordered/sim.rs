//! A deterministic simulation of replicas around the [ordered core](super::core), for its
//! scenario tests, its property test and its fuzz target.
//!
//! Each simulated replica is a small Redis-like key-value store that executes, in order, the
//! RESP requests the core writes to it and queues its answers; the schedule decides when
//! answers are delivered, when replicas crash, restart, hang or answer wrongly, and when time
//! passes. Every request carries its sequence number as a last argument the store ignores, so
//! the simulation knows which replica answered what to which request, and each store records
//! the sequence numbers of the writes it applied (in a key of its own, which a checkpoint
//! copies like any other). Checked after every step:
//! - **safety**: an answer the core releases was produced, for that request, by a quorum of
//!   replicas, one of them honest; `CLOSE` and `DIE` (requests every replica refuses, by
//!   closing its connection or by dying) are never answered with a frame;
//! - **order**: each request is answered once, in the order of the requests;
//! - **blame**: a fault is only ever reported for a replica that misbehaved in that
//!   incarnation (crashed, answered wrongly, hung), although each replica lists `KEYS` in an
//!   order of its own (voted as a set);
//! - **units**: nothing but a unit's own requests (`MULTI` ... `EXEC`) is written to a replica
//!   inside one (no checkpoint read, no restore);
//! - and, after [`Sim::heal`]: every request was answered, every replica votes again, all
//!   with the same state; each applied every write at most once and in order, every write
//!   acknowledged to a client and none refused, and holds exactly the state that applying
//!   those writes in order gives (rebuilding always converges, and loses nothing).
//!
//! Not a mock of the real path: the real path runs the same core with real sockets and real
//! redis-server replicas in the end-to-end tests.
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use voter::FaultKind;

use super::core::{Action, Answer, CoreConfig, OrderedCore, Origin, ReconfigureError, ReplicaConfig, Request};
use crate::codec::resp::{encode_array, Resp};
use crate::codec::{AnswerError, Codec, ReplyShape, RequestClass, RequestParser};

/// A value of the simulated store.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Str(Vec<u8>),
    List(Vec<Vec<u8>>),
}

/// The key under which a store records the sequence numbers of the writes it applied.
const APPLIED: &[u8] = b"~applied";

/// The simulated store: what every replica executes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv {
    keys: BTreeMap<Vec<u8>, Value>,
}

fn bulk(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", v.len()).as_bytes());
    out.extend_from_slice(v);
    out.extend_from_slice(b"\r\n");
}

impl Kv {
    /// The sequence numbers of the writes applied, in the order applied.
    fn applied(&self) -> Vec<u64> {
        match self.keys.get(APPLIED) {
            Some(Value::List(l)) => l.iter().filter_map(|t| std::str::from_utf8(t).ok()?.parse().ok()).collect(),
            _ => Vec::new(),
        }
    }

    /// Executes one request; `None` for `CLOSE` (the connection is closed instead of an
    /// answer) and `DIE` (a query of death: the process ends). `wrong`: answer reads wrongly
    /// (a faulty version). `KEYS` lists the keys in an order of the store's own, rotated by
    /// `hash_seed`, as each redis-server lists a set in its own hash order.
    fn execute(&mut self, args: &[Vec<u8>], wrong: bool, hash_seed: usize) -> Option<Bytes> {
        // The sequence number tag: recorded for writes, invisible to the command.
        let (args, tag) = match args.split_last() {
            Some((last, rest)) if last.first() == Some(&b'#') => (rest, Some(last[1..].to_vec())),
            _ => (args, None),
        };
        let write = args
            .first()
            .is_some_and(|a| matches!(a.to_ascii_uppercase().as_slice(), b"SET" | b"INCR" | b"RPUSH" | b"DEL"));
        if let (Some(tag), true) = (tag, write) {
            match self.keys.entry(APPLIED.to_vec()).or_insert_with(|| Value::List(Vec::new())) {
                Value::List(l) => l.push(tag),
                Value::Str(_) => {}
            }
        }
        let mut out = Vec::new();
        let name = args.first().map(|a| a.to_ascii_uppercase()).unwrap_or_default();
        let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
        match name.as_slice() {
            b"CLOSE" | b"DIE" => return None,
            b"PING" => out.extend_from_slice(b"+PONG\r\n"),
            // A unit's bounds (the simulation checks that nothing else lands inside one).
            b"MULTI" | b"EXEC" => out.extend_from_slice(b"+OK\r\n"),
            b"SET" => {
                self.keys.insert(arg(1), Value::Str(arg(2)));
                out.extend_from_slice(b"+OK\r\n");
            }
            b"GET" => match self.keys.get(&arg(1)) {
                None => out.extend_from_slice(b"$-1\r\n"),
                Some(Value::Str(v)) => {
                    let mut v = v.clone();
                    if wrong {
                        v.push(b'?');
                    }
                    bulk(&mut out, &v);
                }
                Some(Value::List(_)) => {
                    out.extend_from_slice(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
                }
            },
            b"INCR" => {
                let n = match self.keys.get(&arg(1)) {
                    None => Some(0),
                    Some(Value::Str(v)) => std::str::from_utf8(v).ok().and_then(|t| t.parse::<i64>().ok()),
                    Some(Value::List(_)) => None,
                };
                match n {
                    Some(n) => {
                        self.keys.insert(arg(1), Value::Str((n + 1).to_string().into_bytes()));
                        out.extend_from_slice(format!(":{}\r\n", n + 1).as_bytes());
                    }
                    None => out.extend_from_slice(b"-ERR value is not an integer or out of range\r\n"),
                }
            }
            b"RPUSH" => {
                let entry = self.keys.entry(arg(1)).or_insert_with(|| Value::List(Vec::new()));
                match entry {
                    Value::List(l) => {
                        l.extend(args.iter().skip(2).cloned());
                        out.extend_from_slice(format!(":{}\r\n", l.len()).as_bytes());
                    }
                    Value::Str(_) => {
                        out.extend_from_slice(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
                    }
                }
            }
            b"LRANGE" => match self.keys.get(&arg(1)) {
                Some(Value::List(l)) => {
                    out.extend_from_slice(format!("*{}\r\n", l.len()).as_bytes());
                    for item in l {
                        bulk(&mut out, item);
                    }
                }
                _ => out.extend_from_slice(b"*0\r\n"),
            },
            b"KEYS" => {
                let mut keys: Vec<&[u8]> = self.keys.keys().map(Vec::as_slice).collect();
                if !keys.is_empty() {
                    let n = keys.len();
                    keys.rotate_left(hash_seed % n);
                }
                if wrong {
                    keys.push(b"?");
                }
                out.extend_from_slice(format!("*{}\r\n", keys.len()).as_bytes());
                for k in keys {
                    bulk(&mut out, k);
                }
            }
            b"TYPE" => out.extend_from_slice(match self.keys.get(&arg(1)) {
                None => b"+none\r\n",
                Some(Value::Str(_)) => b"+string\r\n",
                Some(Value::List(_)) => b"+list\r\n",
            }),
            b"PTTL" | b"PEXPIRETIME" => {
                out.extend_from_slice(if self.keys.contains_key(&arg(1)) { b":-1\r\n" } else { b":-2\r\n" })
            }
            b"FLUSHALL" => {
                self.keys.clear();
                out.extend_from_slice(b"+OK\r\n");
            }
            _ => out.extend_from_slice(b"-ERR unknown command\r\n"),
        }
        Some(Bytes::from(out))
    }
}

/// How a simulated replica behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// It answers right.
    Honest,
    /// It answers reads wrongly (a faulty version, or a flipped bit).
    Wrong,
    /// It takes requests and answers nothing.
    Hung,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SimLink {
    Down,
    Up,
}

/// One simulated replica.
#[derive(Debug)]
pub struct SimReplica {
    kv: Kv,
    incarnation: u64,
    /// Its process runs.
    alive: bool,
    link: SimLink,
    inbox: BytesMut,
    parser: Box<dyn RequestParser>,
    outbox: VecDeque<Bytes>,
    /// It executed `CLOSE` (or `DIE`): it closes its connection once its answers are out
    /// (and its process ends).
    closing: bool,
    dying: bool,
    behaviour: Behaviour,
    /// It misbehaved in this incarnation (crashed, wrong, hung): it may be blamed.
    blameable: bool,
    /// The incarnations that misbehaved.
    misbehaved: Vec<u64>,
    address: bool,
    /// Its connection is inside a unit (after `MULTI`, before `EXEC`): anything but the
    /// unit's own requests written now would land inside a transaction.
    in_unit: bool,
    /// The requests queued in that transaction, run at `EXEC` (as Redis does: each answers
    /// `+QUEUED`, and a connection that closes first drops them).
    queued: Vec<Vec<Vec<u8>>>,
    /// Removed by a reload: its process stopped, and nothing of it counts any more.
    removed: bool,
}

impl SimReplica {
    fn new(codec: &dyn Codec, address: bool) -> SimReplica {
        SimReplica {
            kv: Kv::default(),
            incarnation: 0,
            alive: true,
            link: SimLink::Down,
            inbox: BytesMut::new(),
            parser: codec.request_parser(),
            outbox: VecDeque::new(),
            closing: false,
            dying: false,
            behaviour: Behaviour::Honest,
            blameable: false,
            misbehaved: Vec::new(),
            address,
            in_unit: false,
            queued: Vec::new(),
            removed: false,
        }
    }
}

/// One step of a schedule.
#[derive(Clone, Debug)]
pub enum Op {
    /// A session orders `count` requests drawn from `seed`.
    Order {
        /// How many.
        count: u8,
        /// Which (the request mix).
        seed: u32,
    },
    /// Up to `count` answers of `replica` reach the core.
    Deliver {
        /// The replica.
        replica: usize,
        /// How many.
        count: u8,
    },
    /// Every answer of every honest replica reaches the core.
    DeliverAll,
    /// The replica's process dies.
    Crash {
        /// The replica.
        replica: usize,
    },
    /// The supervisor starts a new incarnation (empty for a command replica; an address
    /// replica keeps whatever state it had).
    Restart {
        /// The replica.
        replica: usize,
    },
    /// The replica starts to answer reads wrongly.
    GoWrong {
        /// The replica.
        replica: usize,
    },
    /// The replica stops answering.
    Hang {
        /// The replica.
        replica: usize,
    },
    /// Time passes (after every honest replica answered what it had).
    Tick {
        /// How long.
        ms: u16,
    },
    /// Time passes while every replica is busy (a slow request): nobody answers.
    Wait {
        /// How long.
        ms: u16,
    },
    /// A reload adds a replica (at most [`MAX_SIM_REPLICAS`]), with a majority quorum of the
    /// replicas configured then; the supervisor starts it.
    AddReplica,
    /// A reload removes a replica (while more than three are configured), with a majority
    /// quorum of the replicas left; the supervisor stops it.
    RemoveReplica {
        /// The replica.
        replica: usize,
    },
}

/// The most replicas a schedule adds up to (removed ones included).
pub const MAX_SIM_REPLICAS: usize = 7;

/// The simulation. See the module documentation.
pub struct Sim {
    /// The core under test.
    pub core: OrderedCore,
    now: Duration,
    replicas: Vec<SimReplica>,
    codec: Arc<dyn Codec>,
    /// Every ordered request's arguments (without its tag), by sequence number.
    requests: BTreeMap<u64, Vec<Vec<u8>>>,
    /// The answers replicas produced, per request: the answer and whether an honest replica
    /// produced it.
    produced: BTreeMap<u64, Vec<(Bytes, bool)>>,
    /// How many replicas died with their answer to a request run but not yet written.
    lost: BTreeMap<u64, usize>,
    /// The `EXEC` that ends the unit of each request queued in one.
    exec_of: BTreeMap<u64, u64>,
    answered: BTreeMap<u64, Answer>,
    next_request: u64,
    /// Faults reported, as `(replica, kind)`.
    pub faults: Vec<(usize, FaultKind)>,
    violations: Vec<String>,
    /// A query of death (`DIE`) killed replicas at some point.
    query_of_death: bool,
    /// Print every action of the core to standard error (to understand a failing schedule).
    pub trace: bool,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .field("core", &self.core)
            .field(
                "replicas",
                &self
                    .replicas
                    .iter()
                    .map(|r| (r.kv.applied(), r.incarnation, r.alive, r.behaviour))
                    .collect::<Vec<_>>(),
            )
            .field("answered", &self.answered)
            .finish()
    }
}

/// The simulation's core parameters for `n` replicas (`address`: which are address replicas).
pub fn config(address: &[bool], log_max_bytes: usize) -> CoreConfig {
    CoreConfig {
        replicas: address
            .iter()
            .enumerate()
            .map(|(i, a)| ReplicaConfig { name: format!("r{i}").into(), address: *a })
            .collect(),
        quorum: address.len() / 2 + 1,
        lag_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(5_000),
        max_outstanding: 16,
        max_queued_bytes: 4096,
        // Small, so that replicas that run ahead are paused (see `OrderedCore::read_paused`).
        max_held_bytes: 512,
        log_max_bytes,
        max_frame_bytes: 1 << 20,
        retry_delay: Duration::from_millis(100),
    }
}

impl Sim {
    /// A simulation of the core with `config`; every replica starts and is admitted.
    pub fn new(config: CoreConfig) -> Sim {
        let codec: Arc<dyn Codec> = Arc::new(Resp::new(1 << 20, None));
        let replicas = config.replicas.iter().map(|r| SimReplica::new(&*codec, r.address)).collect();
        let core = match OrderedCore::new(config, Arc::clone(&codec), 0) {
            Ok(core) => core,
            Err(e) => panic!("sim config: {e}"),
        };
        let mut sim = Sim {
            core,
            now: Duration::ZERO,
            replicas,
            codec,
            requests: BTreeMap::new(),
            produced: BTreeMap::new(),
            lost: BTreeMap::new(),
            exec_of: BTreeMap::new(),
            answered: BTreeMap::new(),
            next_request: 0,
            faults: Vec::new(),
            violations: Vec::new(),
            query_of_death: false,
            trace: false,
        };
        for r in 0..sim.replicas.len() {
            sim.restart(r);
        }
        sim.pump();
        sim
    }

    /// Runs one step and checks the invariants; the violations so far.
    pub fn step(&mut self, op: &Op) -> &[String] {
        match *op {
            Op::Order { count, seed } => self.order(count, seed),
            Op::Deliver { replica, count } => self.deliver(replica % self.replicas.len(), count as usize),
            Op::DeliverAll => self.deliver_all(),
            Op::Crash { replica } => {
                let r = replica % self.replicas.len();
                let healthy_others = self.healthy_others(r);
                let x = &mut self.replicas[r];
                if x.alive && healthy_others {
                    x.alive = false;
                    x.blameable = true;
                    x.misbehaved.push(x.incarnation);
                    x.outbox.clear();
                    x.inbox.clear();
                    x.in_unit = false;
                    x.queued.clear();
                    if x.link == SimLink::Up {
                        x.link = SimLink::Down;
                        let inc = x.incarnation;
                        self.core.closed(r, inc, true, None, self.now);
                    }
                }
            }
            Op::Restart { replica } => {
                let r = replica % self.replicas.len();
                // (The supervisor restarts a process that ended, or a replica found faulty.)
                if !self.replicas[r].removed && !self.replicas[r].alive
                    || self.replicas[r].blameable
                    || self.core.view(r).is_some_and(|v| v.state == "out")
                {
                    self.restart(r);
                }
            }
            Op::GoWrong { replica } => {
                let r = replica % self.replicas.len();
                if self.healthy_others(r) {
                    self.replicas[r].behaviour = Behaviour::Wrong;
                    self.replicas[r].blameable = true;
                    let inc = self.replicas[r].incarnation;
                    self.replicas[r].misbehaved.push(inc);
                }
            }
            Op::Hang { replica } => {
                let r = replica % self.replicas.len();
                if self.healthy_others(r) {
                    self.replicas[r].behaviour = Behaviour::Hung;
                    self.replicas[r].blameable = true;
                    let inc = self.replicas[r].incarnation;
                    self.replicas[r].misbehaved.push(inc);
                }
            }
            Op::Tick { ms } => {
                // Honest replicas answer within the lag timeout: time passes after they did.
                self.deliver_all();
                self.now += Duration::from_millis(u64::from(ms));
                self.core.tick(self.now);
            }
            Op::Wait { ms } => {
                self.now += Duration::from_millis(u64::from(ms));
                self.core.tick(self.now);
            }
            Op::AddReplica => self.add_replica(),
            Op::RemoveReplica { replica } => self.remove_replica(replica % self.replicas.len()),
        }
        self.pump();
        &self.violations
    }

    /// Whether every replica but `r` behaves and votes: the schedule keeps misbehaviour to one
    /// replica at a time (one being rebuilt counts), the minority a quorum of three masks.
    /// Beyond that fault model only safety is promised, and [`Sim::heal`] may find replicas
    /// that cannot be rebuilt without trusting one replica's state alone: resh then stays
    /// stopped for them and says why.
    fn healthy_others(&self, r: usize) -> bool {
        self.replicas.iter().enumerate().all(|(i, x)| {
            let view = self.core.view(i);
            i == r
                || x.removed
                || (!x.blameable
                    && x.alive
                    && view.is_some_and(|v| v.state == "voting" && v.incarnation == x.incarnation))
        })
    }

    /// Makes every replica honest and running, and lets the system settle; then checks that
    /// every request was answered and every replica votes, with the state its writes give.
    pub fn heal(&mut self) -> &[String] {
        for _ in 0..400 {
            // The supervisor: processes that ended, and replicas out of the vote, restarted.
            for r in 0..self.replicas.len() {
                if self.replicas[r].removed {
                    continue;
                }
                let out = self.core.view(r).is_some_and(|v| v.state == "out");
                if !self.replicas[r].alive || self.replicas[r].behaviour != Behaviour::Honest || out {
                    self.replicas[r].behaviour = Behaviour::Honest;
                    self.restart(r);
                }
            }
            self.deliver_all();
            self.now += Duration::from_millis(50);
            self.core.tick(self.now);
            self.pump();
        }
        let ordered = self.core.next_seq();
        // After a query of death killed the replicas that held the state, only what the log can
        // rebuild comes back: a replica that needs a copy can get one only from a quorum of
        // voting replicas (resh never copies a state no quorum vouches for). resh stays stopped
        // for the others (fail-stop), and says why.
        let log_from_start = self.core.replay_covers_from() == 0;
        let may_be_stuck = |x: &SimReplica| self.query_of_death && (x.address || !log_from_start);
        let stuck: Vec<bool> = self
            .replicas
            .iter()
            .enumerate()
            .map(|(r, x)| may_be_stuck(x) && self.core.view(r).is_some_and(|v| v.state != "voting"))
            .collect();
        for (r, stuck) in stuck.iter().enumerate() {
            if *stuck && self.core.view(r).and_then(|v| v.detail).is_none() {
                self.violations.push(format!("replica {r} does not vote and /status does not say why"));
            }
        }
        let serving =
            (0..self.replicas.len()).filter(|&r| self.core.view(r).is_some_and(|v| v.state == "voting")).count()
                >= self.core.quorum().0;
        for seq in 0..ordered {
            if !self.answered.contains_key(&seq) && serving {
                self.violations.push(format!("request {seq} was never answered"));
            }
        }
        let mut common: Option<(usize, Kv)> = None;
        for (r, stuck) in stuck.iter().enumerate() {
            if self.replicas[r].removed {
                if self.core.view(r).is_some() {
                    self.violations.push(format!("replica {r} was removed and still shows"));
                }
                continue;
            }
            match self.core.view(r) {
                Some(view) if view.state == "voting" => {}
                _ if *stuck => continue,
                other => {
                    self.violations.push(format!("replica {r} does not vote after healing: {other:?}"));
                    continue;
                }
            }
            let kv = self.replicas[r].kv.clone();
            let applied = kv.applied();
            if applied.windows(2).any(|w| w[0] >= w[1]) {
                self.violations.push(format!("replica {r} applied writes twice or out of order: {applied:?}"));
            }
            // The state those writes give, applied in order.
            let mut reference = Kv::default();
            for seq in &applied {
                if let Some(args) = self.requests.get(seq) {
                    let mut tagged = args.clone();
                    tagged.push(format!("#{seq}").into_bytes());
                    reference.execute(&tagged, false, 0);
                }
            }
            if reference != kv {
                self.violations.push(format!("replica {r}'s state is not what its writes {applied:?} give"));
            }
            for (seq, answer) in &self.answered {
                let write =
                    self.requests.get(seq).is_some_and(|a| matches!(a[0].as_slice(), b"SET" | b"INCR" | b"RPUSH"));
                // A write queued in a transaction is acknowledged by its EXEC's answer.
                let acknowledged = match answer {
                    Answer::Frame(b) if b.as_ref() == b"+QUEUED\r\n" => self
                        .exec_of
                        .get(seq)
                        .and_then(|exec| self.answered.get(exec))
                        .is_some_and(|a| matches!(a, Answer::Frame(_))),
                    Answer::Frame(_) => true,
                    Answer::Error(_) => false,
                };
                if write && acknowledged && !applied.contains(seq) {
                    self.violations.push(format!("replica {r} lost write {seq}, which a client was told succeeded"));
                }
                if matches!(answer, Answer::Error(AnswerError::ClosedByService)) && applied.contains(seq) {
                    self.violations.push(format!("replica {r} applied request {seq}, which was refused"));
                }
            }
            match &common {
                None => common = Some((r, kv)),
                Some((first, state)) if *state != kv => {
                    self.violations.push(format!("replicas {first} and {r} vote with different states"))
                }
                Some(_) => {}
            }
        }
        &self.violations
    }

    /// The replicas configured (not removed).
    fn configured(&self) -> usize {
        self.replicas.iter().filter(|x| !x.removed).count()
    }

    /// A reload that adds a replica (see [`Op::AddReplica`]). Like the fault model's other
    /// steps, only while every replica votes: a replica being rebuilt counts as the one
    /// replica out that a quorum masks.
    fn add_replica(&mut self) {
        if self.replicas.len() >= MAX_SIM_REPLICAS || !self.healthy_others(usize::MAX) {
            return;
        }
        let r = self.replicas.len();
        // A majority of the replicas configured once this one is added.
        let configured = self.configured() + 1;
        let quorum = configured / 2 + 1;
        let added = ReplicaConfig { name: format!("r{r}").into(), address: false };
        if let Err(e) = self.core.reconfigure(&[], vec![(r, added)], quorum, self.now) {
            self.violations.push(format!("replica {r} could not be added: {e}"));
            return;
        }
        self.replicas.push(SimReplica::new(&*self.codec, false));
        self.restart(r);
    }

    /// A reload that removes replica `r` (see [`Op::RemoveReplica`]): the core first, then the
    /// supervisor stops its process.
    fn remove_replica(&mut self, r: usize) {
        if self.replicas[r].removed || self.configured() <= 3 {
            return;
        }
        let quorum = (self.configured() - 1) / 2 + 1;
        match self.core.reconfigure(&[r], Vec::new(), quorum, self.now) {
            Ok(()) => {}
            // It votes, and without it too few would: the reload is refused, nothing changes.
            Err(ReconfigureError::TooFewVoting { .. }) => return,
            Err(e) => {
                self.violations.push(format!("removing replica {r} refused: {e}"));
                return;
            }
        }
        self.pump();
        let x = &mut self.replicas[r];
        x.removed = true;
        x.alive = false;
        x.outbox.clear();
        x.inbox.clear();
        x.link = SimLink::Down;
        // The process ends, and its connection with it: the core dropped that connection
        // already (the `Disconnect` above), and must count the end as nothing.
        let inc = x.incarnation;
        self.core.closed(r, inc, true, None, self.now);
    }

    /// A query of death killed a replica.
    fn note_death(&mut self) {
        self.query_of_death = true;
    }

    fn restart(&mut self, r: usize) {
        let x = &mut self.replicas[r];
        x.incarnation += 1;
        x.alive = true;
        x.blameable = x.behaviour != Behaviour::Honest;
        if x.blameable {
            x.misbehaved.push(x.incarnation);
        }
        x.link = SimLink::Down;
        x.inbox.clear();
        x.outbox.clear();
        x.closing = false;
        x.dying = false;
        x.in_unit = false;
        x.queued.clear();
        x.parser = self.codec.request_parser();
        if !x.address {
            // A fresh process: the initial (empty) state.
            x.kv = Kv::default();
        }
        let inc = x.incarnation;
        self.core.admitted(r, inc, self.now);
    }

    fn order(&mut self, count: u8, seed: u32) {
        if !self.core.can_serve() {
            return;
        }
        let mut batch = Vec::new();
        let mut x = seed.wrapping_mul(2_654_435_761) | 1;
        for _ in 0..count.max(1) {
            if !self.core.room() {
                break;
            }
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let key = format!("k{}", x % 4);
            if x % 17 == 0 {
                // A unit: nothing may come between its requests on any replica's connection.
                let unit: [Vec<Vec<u8>>; 4] = [
                    vec![b"MULTI".to_vec()],
                    vec![b"SET".to_vec(), key.clone().into_bytes(), format!("u{}", x % 100).into_bytes()],
                    vec![b"INCR".to_vec(), b"n0".to_vec()],
                    vec![b"EXEC".to_vec()],
                ];
                let exec = self.core.next_seq() + batch.len() as u64 + 3;
                for (i, args) in unit.into_iter().enumerate() {
                    let seq = self.core.next_seq() + batch.len() as u64;
                    if i > 0 && i < 3 {
                        self.exec_of.insert(seq, exec);
                    }
                    let mut request = self.request(seq, args);
                    // All of a unit is logged: a replica may join the vote in its middle.
                    request.class = RequestClass { logged: true, continues: i < 3, ..RequestClass::default() };
                    batch.push(request);
                }
                continue;
            }
            let args: Vec<Vec<u8>> = match x % 11 {
                0..=2 => vec![b"SET".to_vec(), key.into_bytes(), format!("v{}", x % 100).into_bytes()],
                3..=5 => vec![b"GET".to_vec(), key.into_bytes()],
                6 | 7 => vec![b"INCR".to_vec(), format!("n{}", x % 2).into_bytes()],
                8 => vec![b"RPUSH".to_vec(), b"list".to_vec(), format!("{}", x % 10).into_bytes()],
                9 => vec![b"LRANGE".to_vec(), b"list".to_vec(), b"0".to_vec(), b"-1".to_vec()],
                _ if x % 3 == 0 => vec![b"KEYS".to_vec()],
                _ if x % 7 == 0 => vec![b"CLOSE".to_vec()],
                _ if x % 13 == 0 => vec![b"DIE".to_vec()],
                _ => vec![b"PING".to_vec()],
            };
            let seq = self.core.next_seq() + batch.len() as u64;
            batch.push(self.request(seq, args));
        }
        if batch.is_empty() {
            return;
        }
        let first = self.core.next_seq();
        if let Err(e) = self.core.order(first, batch, self.now) {
            self.violations.push(format!("order refused: {e}"));
        }
    }

    /// Request `seq` (tagged with its number, which the replicas record with the writes).
    fn request(&mut self, seq: u64, args: Vec<Vec<u8>>) -> Request {
        let logged = !matches!(args[0].as_slice(), b"GET" | b"LRANGE" | b"PING" | b"KEYS");
        let shape = if args[0] == b"KEYS" { ReplyShape::Set } else { ReplyShape::Exact };
        let mut tagged = args.clone();
        tagged.push(format!("#{seq}").into_bytes());
        self.requests.insert(seq, args);
        let request = self.next_request;
        self.next_request += 1;
        let class = RequestClass { logged, shape, ..RequestClass::default() };
        Request { origin: Origin { host: 0, session: 1, request }, bytes: encode_array(&tagged), class }
    }

    /// A session orders these requests, in one batch.
    pub fn order_requests(&mut self, requests: &[&[&str]]) {
        let mut batch = Vec::new();
        for args in requests {
            let seq = self.core.next_seq() + batch.len() as u64;
            batch.push(self.request(seq, args.iter().map(|a| a.as_bytes().to_vec()).collect()));
        }
        let first = self.core.next_seq();
        if let Err(e) = self.core.order(first, batch, self.now) {
            self.violations.push(format!("order refused: {e}"));
        }
        self.pump();
    }

    fn deliver(&mut self, r: usize, count: usize) {
        for _ in 0..count {
            let x = &mut self.replicas[r];

            // The shell stops reading a replica that holds its share of answers.
            if x.link != SimLink::Up || x.behaviour == Behaviour::Hung || self.core.read_paused(r) {
                return;
            }
            let inc = x.incarnation;
            match x.outbox.pop_front() {
                Some(answer) => {
                    let digest = self.codec.vote_digest(&answer);
                    let frame = super::core::Frame { len: answer.len() as u64, bytes: Some(answer), digest };
                    self.core.response(r, inc, frame, self.now);
                    self.pump();
                }
                None if x.closing => {
                    // It answered everything before CLOSE (or DIE): now it closes (or dies).
                    x.link = SimLink::Down;
                    x.closing = false;
                    x.inbox.clear();
                    x.in_unit = false;
                    x.queued.clear();
                    let gone = std::mem::take(&mut x.dying);
                    if gone {
                        x.alive = false;
                    }
                    self.core.closed(r, inc, gone, None, self.now);
                    if gone {
                        self.note_death();
                    }
                    self.pump();
                    return;
                }
                None => return,
            }
        }
    }

    fn deliver_all(&mut self) {
        for _ in 0..64 {
            let before = self.answered.len() + self.faults.len();
            let mut any = false;
            for r in 0..self.replicas.len() {
                let x = &self.replicas[r];
                if x.link == SimLink::Up && x.behaviour != Behaviour::Hung && (!x.outbox.is_empty() || x.closing) {
                    any = true;
                    self.deliver(r, usize::MAX);
                }
            }
            if !any && self.answered.len() + self.faults.len() == before {
                return;
            }
        }
    }

    /// Carries out the core's actions, as the shell would; checks every answer.
    fn pump(&mut self) {
        while let Some(action) = self.core.poll_action() {
            if self.trace {
                eprintln!("{:>8?} {action:?}", self.now);
            }
            match action {
                Action::Connect { replica, incarnation } => {
                    let x = &mut self.replicas[replica];
                    if x.incarnation == incarnation && x.alive {
                        x.link = SimLink::Up;
                        x.inbox.clear();
                        x.outbox.clear();
                        x.closing = false;
                        x.dying = false;
                        x.parser = self.codec.request_parser();
                        // A transaction is per connection.
                        x.in_unit = false;
                        x.queued.clear();
                        self.core.connected(replica, incarnation, self.now);
                    } else {
                        self.core.connect_failed(replica, incarnation, false, "gone", self.now);
                    }
                }
                Action::Disconnect { replica } => {
                    let x = &mut self.replicas[replica];
                    x.link = SimLink::Down;
                    x.in_unit = false;
                    x.queued.clear();
                    x.inbox.clear();
                    x.outbox.clear();
                    x.closing = false;
                    if std::mem::take(&mut x.dying) {
                        x.alive = false;
                        self.note_death();
                    }
                }
                Action::Write { replica, incarnation, bytes } => {
                    let x = &mut self.replicas[replica];
                    if x.incarnation != incarnation || x.link != SimLink::Up {
                        continue;
                    }
                    x.inbox.extend_from_slice(&bytes);
                    // Answers to this write are written after it is all run (as Redis does
                    // with pipelined requests): a replica that dies on one loses them.
                    let unwritten_from = x.outbox.len();
                    let mut unwritten = Vec::new();
                    while !x.closing {
                        let len = match x.parser.parse(&x.inbox) {
                            Ok(Some(len)) => len,
                            Ok(None) => break,
                            Err(e) => {
                                self.violations.push(format!("the core wrote a malformed request to {replica}: {e}"));
                                break;
                            }
                        };
                        let request = x.inbox.split_to(len);
                        let args = match crate::codec::resp::request_args(&request) {
                            Ok(args) => args,
                            Err(_) => {
                                self.violations.push(format!("unparsable request written to {replica}"));
                                break;
                            }
                        };
                        let tag = args
                            .last()
                            .and_then(|t| t.strip_prefix(b"#"))
                            .and_then(|t| std::str::from_utf8(t).ok()?.parse::<u64>().ok());
                        let command = args.first().map(|a| a.to_ascii_uppercase()).unwrap_or_default();
                        if tag.is_none() && x.in_unit {
                            self.violations.push(format!(
                                "{} was written to replica {replica} inside a unit",
                                String::from_utf8_lossy(&command)
                            ));
                        }
                        let hash_seed = replica + x.incarnation as usize;
                        let wrong = x.behaviour == Behaviour::Wrong;
                        let answer = match command.as_slice() {
                            b"MULTI" => {
                                x.in_unit = true;
                                x.kv.execute(&args, wrong, hash_seed)
                            }
                            b"EXEC" => {
                                x.in_unit = false;
                                let queued = std::mem::take(&mut x.queued);
                                let mut all = format!("*{}\r\n", queued.len()).into_bytes();
                                for part in &queued {
                                    all.extend_from_slice(&x.kv.execute(part, wrong, hash_seed).unwrap_or_default());
                                }
                                Some(Bytes::from(all))
                            }
                            _ if x.in_unit => {
                                x.queued.push(args.clone());
                                Some(Bytes::from_static(b"+QUEUED\r\n"))
                            }
                            _ => x.kv.execute(&args, wrong, hash_seed),
                        };
                        match answer {
                            Some(answer) => {
                                if let Some(seq) = tag {
                                    self.produced
                                        .entry(seq)
                                        .or_default()
                                        .push((answer.clone(), x.behaviour == Behaviour::Honest));
                                }
                                x.outbox.push_back(answer);
                                unwritten.extend(tag);
                            }
                            None => {
                                x.closing = true;
                                x.dying = args.first().is_some_and(|a| a.eq_ignore_ascii_case(b"DIE"));
                                if x.dying {
                                    x.outbox.truncate(unwritten_from);
                                    for seq in &unwritten {
                                        *self.lost.entry(*seq).or_default() += 1;
                                    }
                                }
                            }
                        }
                    }
                    let len = bytes.len();
                    self.core.written(replica, incarnation, len, self.now);
                }
                Action::Reply { origin: _, seq, answer, .. } => self.check_reply(seq, answer),
                Action::Fault { replica, incarnation, kind, .. } => {
                    let x = &self.replicas[replica];
                    let misbehaved =
                        x.misbehaved.contains(&incarnation) || (x.blameable && x.incarnation == incarnation);
                    if !misbehaved {
                        self.violations
                            .push(format!("replica {replica} blamed ({}) though it did nothing wrong", kind.name()));
                    }
                    self.faults.push((replica, kind));
                }
                Action::Masked { seq, .. } => {
                    if !self.answered.contains_key(&seq) {
                        self.violations.push(format!("request {seq} called masked before it was answered"));
                    }
                }
                Action::Note(_) => {}
            }
        }
    }

    fn check_reply(&mut self, seq: u64, answer: Answer) {
        if let Some(last) = self.answered.keys().next_back() {
            if *last >= seq {
                self.violations.push(format!("request {seq} answered after request {last}"));
            }
        }
        let Some(args) = self.requests.get(&seq) else {
            self.violations.push(format!("an answer to request {seq}, which was never ordered"));
            return;
        };
        let refused = matches!(args[0].as_slice(), b"CLOSE" | b"DIE");
        match &answer {
            Answer::Frame(got) if refused => self.violations.push(format!(
                "request {seq} (refused by every replica) was answered {:?}",
                String::from_utf8_lossy(got)
            )),
            Answer::Frame(got) => {
                let produced = self.produced.get(&seq).map(Vec::as_slice).unwrap_or_default();
                // A set's members may come in any order: the same set is the same answer.
                let as_set = args[0] == b"KEYS";
                let codec = &self.codec;
                let alike = |a: &Bytes| {
                    a == got
                        || (as_set
                            && codec.shaped_digest(ReplyShape::Set, a).is_some()
                            && codec.shaped_digest(ReplyShape::Set, a) == codec.shaped_digest(ReplyShape::Set, got))
                };
                let same = produced.iter().filter(|(a, _)| alike(a)).count();
                let honest = produced.iter().any(|(a, honest)| alike(a) && *honest);
                if same < self.core.quorum().0 || !honest {
                    self.violations.push(format!(
                        "request {seq}: released {:?}, which {same} replicas produced ({}), fewer than the quorum or none honest",
                        String::from_utf8_lossy(got),
                        if honest { "one honest" } else { "none honest" }
                    ));
                }
            }
            // Unless a quorum died with its answer unwritten: then nothing tells it from the
            // request they died on, and it is lost as with one server that crashed.
            Answer::Error(AnswerError::ClosedByService)
                if !refused && self.lost.get(&seq).copied().unwrap_or(0) < self.core.quorum().0 =>
            {
                self.violations
                    .push(format!("request {seq} was called refused by the service, but the service answers it"))
            }
            // Within the fault model (one replica misbehaving at a time) a quorum always
            // agrees, unless a query of death took replicas out together.
            Answer::Error(AnswerError::Undecidable) if !self.query_of_death => {
                self.violations.push(format!("request {seq} was undecidable with one replica at most misbehaving"))
            }
            _ => {}
        }
        self.answered.insert(seq, answer);
    }

    /// The quorum.
    pub fn quorum(&self) -> usize {
        self.core.quorum().0
    }

    /// The answer given to request `seq`, if any.
    pub fn answer(&self, seq: u64) -> Option<&Answer> {
        self.answered.get(&seq)
    }
}
