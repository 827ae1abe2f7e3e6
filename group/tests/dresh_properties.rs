//! D-RESH hosts over the deterministic group, under generated schedules of requests,
//! deliveries (to all, to the sender, to part of a component), votes, crashes of a minority,
//! restarts, partitions and heals, over three and five hosts (`PROPTEST_CASES=100000` for a
//! real search; `DTRACE=1` prints every delivery and action). Each host's
//! ordered core is modelled by a log of what it was told to execute (a state transfer copies a
//! holder's log), its answers by a digest of that log. Checked:
//! - while serving, hosts number the stream alike: a host that serves holds the same request at
//!   every sequence number as every other host that serves;
//! - no acknowledged request is lost: a request released to its client is, at the end, at the
//!   same sequence number at every host that serves;
//! - after healing, every host serves again and a new request is released;
//! - no host leaves the group: every host answers rightly (a scenario makes one host's answers
//!   wrong, and checks that it leaves though none of the requests is its clients').
use std::collections::BTreeMap;

use bytes::Bytes;
use group::dresh::{Action, Config, Digest, Dresh, Origin, Point, Role};
use group::sim::SimGroup;
use group::HostId;
use proptest::prelude::*;

struct Host {
    dresh: Dresh,
    /// What its core was told to execute, by sequence number.
    log: Vec<(Origin, Bytes)>,
    /// Sequence numbers voted so far.
    voted: usize,
    awaiting_state: Option<(u64, Vec<HostId>)>,
    /// Requests ordered after the state it waits for.
    after_state: Vec<(Origin, Bytes)>,
    up: bool,
    next_session: u64,
    /// Its answers are wrong (a scenario's faulty host): it must leave, and nobody else.
    corrupt: bool,
}

impl Host {
    fn new(h: HostId, session_base: u64, hosts: usize) -> Host {
        let config = Config { local: h, hosts, max_message_bytes: 256, incarnation: (session_base / 1_000_000) as u32 };
        Host {
            dresh: Dresh::new(config, Some(Point::START)),
            log: Vec::new(),
            voted: 0,
            awaiting_state: None,
            after_state: Vec::new(),
            up: true,
            next_session: session_base,
            corrupt: false,
        }
    }
}

struct World {
    n: usize,
    group: SimGroup,
    hosts: Vec<Host>,
    /// origin -> (seq, bytes) of every request released to its client.
    released: BTreeMap<Origin, (u64, Bytes)>,
    violations: Vec<String>,
    restarts: u64,
}

fn digest(log: &[(Origin, Bytes)], upto: usize) -> Digest {
    let mut h = blake3::Hasher::new();
    for (origin, bytes) in &log[..upto] {
        h.update(&origin.host.to_be_bytes());
        h.update(&origin.session.to_be_bytes());
        h.update(&origin.request.to_be_bytes());
        h.update(bytes);
    }
    *h.finalize().as_bytes()
}

impl World {
    fn new(n: usize) -> World {
        let mut group = SimGroup::new(n);
        let hosts = (1..=n as HostId).map(|h| Host::new(h, 0, n)).collect();
        for h in 1..=n as HostId {
            group.start(h);
        }
        let mut w = World { n, group, hosts, released: BTreeMap::new(), violations: Vec::new(), restarts: 0 };
        w.settle();
        w
    }

    /// Requests released to their clients that a host does not hold at their sequence number.
    fn lost_releases(&self) -> Vec<String> {
        let mut lost = Vec::new();
        for (origin, (seq, bytes)) in &self.released {
            for (i, host) in self.hosts.iter().enumerate() {
                if host.log.get(*seq as usize) != Some(&(*origin, bytes.clone())) {
                    lost.push(format!("host {} lost acknowledged request {seq} ({origin:?})", i + 1));
                }
            }
        }
        lost
    }

    fn host(&mut self, h: HostId) -> &mut Host {
        &mut self.hosts[h as usize - 1]
    }

    fn pump(&mut self, h: HostId) {
        while let Some(action) = self.host(h).dresh.poll_action() {
            if std::env::var("DTRACE").is_ok() {
                match &action {
                    Action::Multicast(b) => eprintln!(
                        "  h{h} multicast {:?}",
                        group::dresh::Wire::decode(b.clone()).map(|w| match w {
                            group::dresh::Wire::Requests(r) =>
                                format!("Requests {:?}", r.iter().map(|x| x.0).collect::<Vec<_>>()),
                            other => format!("{other:?}").chars().take(80).collect(),
                        })
                    ),
                    other => eprintln!("  h{h} {}", format!("{other:?}").chars().take(120).collect::<String>()),
                }
            }
            match action {
                Action::Multicast(bytes) => {
                    let _ = self.group.multicast(h, bytes);
                }
                Action::Order { first_seq, requests } => {
                    let host = self.host(h);
                    if let Some((seq, _)) = host.awaiting_state {
                        if first_seq != seq + host.after_state.len() as u64 {
                            self.violations.push(format!(
                                "host {h} waiting for the state at {seq} told to execute from {first_seq}"
                            ));
                            return;
                        }
                        host.after_state.extend(requests);
                        continue;
                    }
                    if first_seq as usize != host.log.len() {
                        let len = host.log.len();
                        self.violations.push(format!("host {h} told to execute from {first_seq}, its log has {len}"));
                        return;
                    }
                    host.log.extend(requests);
                }
                Action::Release { seq, origin } => {
                    let entry = self.host(h).log.get(seq as usize).cloned();
                    match entry {
                        Some((o, bytes)) if o == origin => {
                            self.released.insert(origin, (seq, bytes));
                        }
                        other => self
                            .violations
                            .push(format!("host {h} released {seq} for {origin:?}, its log has {other:?}")),
                    }
                }
                Action::NeedState { seq, from } => {
                    let host = self.host(h);
                    // The same point again: more sources; the requests kept for after it stay.
                    if host.awaiting_state.as_ref().is_none_or(|(s, _)| *s != seq) {
                        host.after_state.clear();
                    }
                    host.awaiting_state = Some((seq, from));
                }
                // A transfer under way is abandoned: a new one comes with the next NeedState.
                Action::Fence(_) => {
                    let host = self.host(h);
                    host.awaiting_state = None;
                    host.after_state.clear();
                }
                Action::Serve { .. } => {}
                Action::Leave(why) => {
                    // Every host here answers rightly unless a scenario corrupts it: a host that
                    // leaves for anything else is a false alarm.
                    if !self.host(h).corrupt {
                        self.violations.push(format!("host {h} left: {why}"));
                    }
                    self.group.crash(h);
                    self.host(h).up = false;
                }
            }
        }
    }

    fn deliver(&mut self, h: HostId) {
        while let Some(d) = self.group.take(h) {
            if std::env::var("DTRACE").is_ok() {
                match &d {
                    group::Delivery::Message { from, payload } => eprintln!(
                        " h{h} <- from {from}: {}",
                        format!("{:?}", group::dresh::Wire::decode(payload.clone()))
                            .chars()
                            .take(70)
                            .collect::<String>()
                    ),
                    other => eprintln!(" h{h} <- {other:?}"),
                }
            }
            if self.host(h).up {
                self.host(h).dresh.delivered(d);
                self.pump(h);
            }
        }
    }

    fn vote(&mut self, h: HostId) {
        let host = self.host(h);
        if !host.up || host.awaiting_state.is_some() {
            return;
        }
        while host.voted < host.log.len() {
            let seq = host.voted;
            let mut d = digest(&host.log, seq + 1);
            if host.corrupt {
                d[0] ^= 1;
            }
            host.dresh.voted(seq as u64, d);
            host.voted += 1;
        }
        // A shell flushes at every turn of its loop.
        host.dresh.flush();
        self.pump(h);
    }

    /// The state transfer: the log of a holder that is up, up to `seq`.
    fn state(&mut self, h: HostId) {
        let Some((seq, from)) = self.host(h).awaiting_state.clone() else { return };
        let source = from
            .iter()
            .copied()
            .find(|&s| s != h && self.hosts[s as usize - 1].up && self.hosts[s as usize - 1].log.len() >= seq as usize);
        let log = match source {
            Some(s) => self.hosts[s as usize - 1].log[..seq as usize].to_vec(),
            None if seq == 0 => Vec::new(),
            None => return,
        };
        let host = self.host(h);
        host.log = log;
        let after = std::mem::take(&mut host.after_state);
        host.log.extend(after);
        host.voted = seq as usize;
        host.awaiting_state = None;
        host.dresh.state_ready();
        self.pump(h);
    }

    fn submit(&mut self, h: HostId) {
        let host = self.host(h);
        if !host.up || *host.dresh.role() != Role::Serving {
            return;
        }
        host.next_session += 1;
        let session = host.next_session;
        let bytes = Bytes::from(format!("SET k{} {session}", session % 3));
        host.dresh.submit(session, 1, bytes);
        host.dresh.flush();
        self.pump(h);
    }

    /// Crashes `h`, unless that leaves fewer than a majority of the hosts holding the state
    /// (up and in sync): the guarantee is for the failure of a minority (the replicas' state
    /// is in memory; a group that loses all of it starts over).
    fn crash(&mut self, h: HostId) {
        let holds = |x: &Host| x.up && matches!(x.dresh.role(), Role::Serving | Role::Fenced);
        let others = self.hosts.iter().enumerate().filter(|(i, x)| *i as HostId + 1 != h && holds(x)).count();
        if others * 2 <= self.n {
            return;
        }
        self.group.crash(h);
        self.host(h).up = false;
    }

    fn restart(&mut self, h: HostId) {
        if self.host(h).up {
            return;
        }
        self.restarts += 1;
        let base = self.restarts * 1_000_000;
        let n = self.n;
        *self.host(h) = Host::new(h, base, n);
        self.group.start(h);
        self.deliver_all();
    }

    fn deliver_all(&mut self) {
        for h in 1..=self.n as HostId {
            self.deliver(h);
        }
    }

    /// Everything ordered, delivered, voted and transferred until nothing moves.
    fn settle(&mut self) {
        for _ in 0..50 {
            for h in 1..=self.n as HostId {
                if self.host(h).up {
                    self.host(h).dresh.flush();
                    self.pump(h);
                }
                while self.group.order(h) {}
            }
            self.deliver_all();
            for h in 1..=self.n as HostId {
                self.vote(h);
                self.state(h);
                while self.group.order(h) {}
            }
            self.deliver_all();
        }
    }

    fn check_serving(&mut self) {
        let serving: Vec<usize> =
            (0..self.n).filter(|&i| self.hosts[i].up && *self.hosts[i].dresh.role() == Role::Serving).collect();
        for &a in &serving {
            for &b in &serving {
                let (la, lb) = (&self.hosts[a].log, &self.hosts[b].log);
                let n = la.len().min(lb.len());
                if la[..n] != lb[..n] {
                    self.violations.push(format!("serving hosts {} and {} hold different requests", a + 1, b + 1));
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    Submit(HostId),
    Order(HostId),
    OrderPartially(HostId),
    /// Ordered and delivered to the sender and some members of its component for now (mask).
    OrderWithin(HostId, u8),
    Deliver(HostId),
    Vote(HostId),
    State(HostId),
    Crash(HostId),
    Restart(HostId),
    Split(u8),
    Heal,
}

fn step() -> impl Strategy<Value = Step> {
    // Host numbers are taken modulo the group's size.
    let h = 1..=5 as HostId;
    prop_oneof![
        6 => h.clone().prop_map(Step::Submit),
        6 => h.clone().prop_map(Step::Order),
        2 => h.clone().prop_map(Step::OrderPartially),
        3 => (h.clone(), any::<u8>()).prop_map(|(h, m)| Step::OrderWithin(h, m)),
        6 => h.clone().prop_map(Step::Deliver),
        4 => h.clone().prop_map(Step::Vote),
        2 => h.clone().prop_map(Step::State),
        1 => h.clone().prop_map(Step::Crash),
        1 => h.prop_map(Step::Restart),
        1 => any::<u8>().prop_map(Step::Split),
        1 => Just(Step::Heal),
    ]
}

/// One schedule on a group of `n` hosts; host numbers in the steps are taken modulo `n`.
fn run(n: usize, steps: &[Step]) -> Result<(), TestCaseError> {
    let host = |x: HostId| (x - 1) % n as HostId + 1;
    let mut w = World::new(n);
    for s in steps {
        match *s {
            Step::Submit(h) => w.submit(host(h)),
            Step::Order(h) => {
                w.group.order(host(h));
            }
            Step::OrderPartially(h) => {
                w.group.order_partially(host(h));
            }
            Step::OrderWithin(h, mask) => {
                let to: Vec<HostId> = (1..=n as HostId).filter(|x| mask & (1 << (x - 1)) != 0).collect();
                w.group.order_within(host(h), &to);
            }
            Step::Deliver(h) => w.deliver(host(h)),
            Step::Vote(h) => w.vote(host(h)),
            Step::State(h) => w.state(host(h)),
            Step::Crash(h) => w.crash(host(h)),
            Step::Restart(h) => w.restart(host(h)),
            Step::Split(bits) => {
                let (a, b): (Vec<HostId>, Vec<HostId>) = (1..=n as HostId).partition(|h| bits & (1 << (h - 1)) != 0);
                w.group.partition(&[&a, &b]);
                w.deliver_all();
            }
            Step::Heal => {
                w.group.heal();
                w.deliver_all();
            }
        }
        w.check_serving();
        prop_assert!(w.violations.is_empty(), "{:?} after {:?}", w.violations, s);
    }
    // Heal: everything connected and running, everything delivered.
    w.group.heal();
    for h in 1..=n as HostId {
        w.restart(h);
    }
    w.settle();
    w.check_serving();
    prop_assert!(w.violations.is_empty(), "{:?} after healing", w.violations);
    for i in 0..n {
        prop_assert_eq!(w.hosts[i].dresh.role(), &Role::Serving, "host {} does not serve after healing", i + 1);
        // Everything delivered: every host executed exactly the same requests.
        prop_assert!(w.hosts[i].log == w.hosts[0].log, "hosts 1 and {} executed different requests", i + 1);
    }
    let lost = w.lost_releases();
    prop_assert!(lost.is_empty(), "{:?}", lost);
    // And the service goes on.
    let before = w.released.len();
    w.submit(1);
    w.settle();
    prop_assert_eq!(w.released.len(), before + 1, "a new request was not released after healing");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn three_hosts_agree_lose_no_acknowledged_request_and_recover(steps in proptest::collection::vec(step(), 1..150)) {
        run(3, &steps)?;
    }

    #[test]
    fn five_hosts_agree_lose_no_acknowledged_request_and_recover(steps in proptest::collection::vec(step(), 1..200)) {
        run(5, &steps)?;
    }
}

/// A request that only a minority holds when the group splits is never released: here host 1's
/// request reaches host 2 alone, host 2's digest of the answer reaches host 1, and the group
/// splits {1, 2} | {3, 4, 5} before the others have either. One other host's digest is not
/// enough with five hosts: the majority goes on without the request.
#[test]
fn a_request_only_a_minority_holds_is_never_released() {
    let mut w = World::new(5);
    w.submit(1);
    assert!(w.group.order_within(1, &[2]));
    w.deliver(1);
    w.deliver(2);
    w.vote(2);
    // Host 2's digest, to host 1 only (it has everything pending before it).
    assert!(w.group.order_within(2, &[1]));
    w.deliver(1);
    w.vote(1);
    w.group.partition(&[&[1, 2], &[3, 4, 5]]);
    w.deliver_all();
    w.submit(3);
    w.settle();
    w.group.heal();
    w.settle();
    assert!(w.violations.is_empty(), "{:?}", w.violations);
    assert!(w.lost_releases().is_empty(), "{:?}", w.lost_releases());
    assert!(w.released.keys().all(|o| o.host != 1), "host 1's request was released: {:?}", w.released);
}

/// A fenced minority's last request and the majority's acknowledged one end up at the same
/// sequence number; later no host serves, and the two meet in a view with quorum: the stream
/// goes on from the majority's state (a later epoch), never the minority's. Run after a few
/// common prefixes, so that the two chains compare both ways.
#[test]
fn the_majority_state_wins_over_a_fenced_minority_at_the_same_number() {
    for prefix in 0..6 {
        let mut w = World::new(3);
        for _ in 0..prefix {
            w.submit(3);
            w.settle();
        }
        // Host 1's request reaches host 1 alone; then it is cut off.
        w.submit(1);
        assert!(w.group.order_within(1, &[]));
        w.deliver(1);
        w.group.partition(&[&[1], &[2, 3]]);
        w.deliver_all();
        // Hosts 2 and 3 go on: host 2's request is released.
        w.submit(2);
        w.settle();
        assert!(w.released.keys().any(|o| o.host == 2), "prefix {prefix}: host 2's request was not released");
        // Everyone alone, then hosts 1 and 2 meet: nobody serves, they start the stream again.
        w.group.partition(&[&[1], &[2], &[3]]);
        w.deliver_all();
        w.group.partition(&[&[1, 2], &[3]]);
        w.settle();
        w.group.heal();
        w.settle();
        assert!(w.violations.is_empty(), "prefix {prefix}: {:?}", w.violations);
        assert!(w.lost_releases().is_empty(), "prefix {prefix}: {:?}", w.lost_releases());
    }
}

/// A host whose answers differ from the others' leaves the group, even when none of the
/// requests is its own clients': every host compares every answer. The others go on.
#[test]
fn a_host_whose_answers_differ_leaves_though_none_of_the_requests_is_its_own() {
    let mut w = World::new(3);
    w.host(3).corrupt = true;
    w.submit(1);
    w.settle();
    assert!(!w.host(3).up, "host 3 answered wrongly and stayed");
    assert_eq!(*w.host(3).dresh.role(), Role::Left);
    assert!(w.released.keys().any(|o| o.host == 1), "host 1's request was not released");
    w.submit(2);
    w.settle();
    assert!(w.released.keys().any(|o| o.host == 2), "host 2's request was not released");
    assert!(w.violations.is_empty(), "{:?}", w.violations);
}
