//! A deterministic group without I/O, for tests: hosts, one agreed order per connected
//! component, views, crashes and partitions, each a method call, so that a test (or a
//! property test's seed) decides every interleaving.
//!
//! It gives what Corosync's CPG gives (extended virtual synchrony, see the crate docs) and
//! no more, so that what is built on top is tested against the weak points too:
//! - **agreed, not safe**: [`order_within`](SimGroup::order_within) delivers a message to its
//!   sender and part of its component only (`order_partially`: the sender alone); the others
//!   get it at the next ordering or view change, unless a crash or a partition comes first —
//!   then each side delivers what any of its members had, and the rest is lost for it;
//! - **partitions**: each side forms a view of its own and goes on ordering on its own;
//! - **views at the same point**: a view is installed after everything ordered before it, at
//!   every member alike.
//!
//! [`violations`](SimGroup::violations) checks those guarantees on what every host delivered.
use std::collections::VecDeque;

use bytes::Bytes;

use crate::{Delivery, GroupError, HostId, LeaveReason, View};

#[derive(Debug, Default)]
struct SimHost {
    up: bool,
    component: usize,
    /// Multicast, not ordered yet.
    outbox: VecDeque<Bytes>,
    /// The last view it installed.
    view: Option<View>,
    /// Delivered, not taken yet.
    inbox: VecDeque<Delivery>,
    /// Everything delivered to it, for the checks.
    history: Vec<Delivery>,
}

/// A group of hosts numbered 1..=n, all down at first.
#[derive(Debug)]
pub struct SimGroup {
    hosts: Vec<SimHost>,
    next_view: u64,
    /// Messages ordered in `pending_component` and delivered so far to some of its members
    /// only: each member got a prefix of them (`got`, per host), so that every host that
    /// delivers them delivers them in the one order.
    pending: Vec<(HostId, Bytes)>,
    got: Vec<usize>,
    pending_component: usize,
}

impl SimGroup {
    /// `hosts` hosts, numbered from 1, all down.
    pub fn new(hosts: usize) -> SimGroup {
        SimGroup {
            hosts: (0..hosts).map(|_| SimHost::default()).collect(),
            next_view: 1,
            pending: Vec::new(),
            got: vec![0; hosts],
            pending_component: 0,
        }
    }

    /// The hosts' ids.
    pub fn hosts(&self) -> impl Iterator<Item = HostId> {
        1..=self.hosts.len() as HostId
    }

    fn host(&self, h: HostId) -> Option<&SimHost> {
        (h as usize).checked_sub(1).and_then(|i| self.hosts.get(i))
    }

    fn host_mut(&mut self, h: HostId) -> Option<&mut SimHost> {
        (h as usize).checked_sub(1).and_then(|i| self.hosts.get_mut(i))
    }

    /// Whether `h` runs.
    pub fn is_up(&self, h: HostId) -> bool {
        self.host(h).is_some_and(|x| x.up)
    }

    /// Starts `h` (again: with nothing delivered yet) and joins it to the group of its component.
    pub fn start(&mut self, h: HostId) {
        let Some(host) = self.host_mut(h) else { return };
        if host.up {
            return;
        }
        let component = host.component;
        *host = SimHost { up: true, component, ..SimHost::default() };
        // It was not a member when those were ordered.
        self.got[h as usize - 1] = self.pending.len();
        self.install(component, &[]);
    }

    /// `h` multicasts `payload`: it waits in `h`'s queue until [`order`](Self::order).
    pub fn multicast(&mut self, h: HostId, payload: Bytes) -> Result<(), GroupError> {
        match self.host_mut(h) {
            Some(host) if host.up => {
                host.outbox.push_back(payload);
                Ok(())
            }
            _ => Err(GroupError::Gone(format!("host {h} is down"))),
        }
    }

    /// Orders the next message `h` multicast and delivers it to every member of `h`'s
    /// component. False if there was none.
    pub fn order(&mut self, h: HostId) -> bool {
        let Some(component) = self.host(h).filter(|x| x.up).map(|x| x.component) else { return false };
        self.complete();
        let Some(payload) = self.host_mut(h).and_then(|x| x.outbox.pop_front()) else { return false };
        self.deliver_to_component(component, None, &Delivery::Message { from: h, payload });
        true
    }

    /// Orders the next message `h` multicast and delivers it to `h` alone, for now: the others
    /// get it with the next ordering or view change in the component, unless `h` crashes first.
    pub fn order_partially(&mut self, h: HostId) -> bool {
        self.order_within(h, &[])
    }

    /// Orders the next message `h` multicast and delivers it, for now, to `h` and to those of
    /// `to` in its component that have every message ordered before it: the rest of the
    /// component gets it with the next ordering or view change, unless a crash or a partition
    /// comes first (then only the members that stay with one that has it get it).
    pub fn order_within(&mut self, h: HostId, to: &[HostId]) -> bool {
        let Some(component) = self.host(h).filter(|x| x.up).map(|x| x.component) else { return false };
        if !self.pending.is_empty() && self.pending_component != component {
            self.complete();
        }
        let Some(payload) = self.host_mut(h).and_then(|x| x.outbox.pop_front()) else { return false };
        let len = self.pending.len();
        // The sender delivered everything before its own message.
        self.deliver_prefix(h as usize - 1, len);
        self.pending.push((h, payload));
        self.pending_component = component;
        let receivers: Vec<usize> = (0..self.hosts.len())
            .filter(|&i| {
                let x = i as HostId + 1;
                x == h
                    || (to.contains(&x)
                        && self.hosts[i].up
                        && self.hosts[i].component == component
                        && self.got[i] == len)
            })
            .collect();
        for i in receivers {
            self.deliver_prefix(i, len + 1);
        }
        true
    }

    /// Delivers to host index `i` the pending messages it lacks, up to `upto`.
    fn deliver_prefix(&mut self, i: usize, upto: usize) {
        while self.got[i] < upto.min(self.pending.len()) {
            let (from, payload) = self.pending[self.got[i]].clone();
            let delivery = Delivery::Message { from, payload };
            let host = &mut self.hosts[i];
            host.inbox.push_back(delivery.clone());
            host.history.push(delivery);
            self.got[i] += 1;
        }
    }

    /// Delivers the pending messages to every member of their component that lacks them.
    fn complete(&mut self) {
        let len = self.pending.len();
        for i in 0..self.hosts.len() {
            if self.hosts[i].up && self.hosts[i].component == self.pending_component {
                self.deliver_prefix(i, len);
            }
        }
        self.pending.clear();
        self.got.iter_mut().for_each(|g| *g = 0);
    }

    /// The old component's members are split into `sides` (a new component each): every side
    /// delivers what any of its members had (virtual synchrony within a side); the rest is
    /// lost for it.
    fn complete_by_side(&mut self, side_of: &[Option<usize>]) {
        let mut best: std::collections::BTreeMap<usize, usize> = std::collections::BTreeMap::new();
        for (i, side) in side_of.iter().enumerate() {
            if let Some(side) = side {
                let e = best.entry(*side).or_insert(0);
                *e = (*e).max(self.got[i]);
            }
        }
        for (i, side) in side_of.iter().enumerate() {
            if let Some(upto) = side.and_then(|s| best.get(&s).copied()) {
                self.deliver_prefix(i, upto);
            }
        }
        self.pending.clear();
        self.got.iter_mut().for_each(|g| *g = 0);
    }

    fn deliver_to_component(&mut self, component: usize, except: Option<HostId>, delivery: &Delivery) {
        for (i, host) in self.hosts.iter_mut().enumerate() {
            if host.up && host.component == component && except != Some(i as HostId + 1) {
                host.inbox.push_back(delivery.clone());
                host.history.push(delivery.clone());
            }
        }
    }

    /// `h` crashes: what it multicast and was not ordered, and what was delivered to it alone,
    /// are lost; the rest of its component installs a view without it.
    pub fn crash(&mut self, h: HostId) {
        self.remove(h, LeaveReason::NodeDown);
    }

    /// `h` leaves the group in order (what it multicast is ordered first).
    pub fn leave(&mut self, h: HostId) {
        while self.order(h) {}
        self.remove(h, LeaveReason::Left);
    }

    fn remove(&mut self, h: HostId, reason: LeaveReason) {
        let Some(component) = self.host(h).filter(|x| x.up).map(|x| x.component) else { return };
        if self.pending_component == component && !self.pending.is_empty() {
            // The survivors deliver what any of them had; what only `h` had is lost.
            let side_of: Vec<Option<usize>> = (0..self.hosts.len())
                .map(|i| {
                    let x = &self.hosts[i];
                    (x.up && x.component == component && i as HostId + 1 != h).then_some(0)
                })
                .collect();
            self.complete_by_side(&side_of);
        }
        if let Some(host) = self.host_mut(h) {
            host.up = false;
            host.outbox.clear();
            host.inbox.clear();
        }
        self.install(component, &[(h, reason)]);
    }

    /// Splits the hosts into components (a host in none of `parts` is alone); each installs a
    /// view of its own.
    ///
    /// What some members of the old component had delivered reaches the rest of their side
    /// only (the others install their next view without it, as extended virtual synchrony
    /// allows).
    pub fn partition(&mut self, parts: &[&[HostId]]) {
        let before: Vec<usize> = self.hosts.iter().map(|x| x.component).collect();
        let lone = parts.len();
        for (i, host) in self.hosts.iter_mut().enumerate() {
            let h = i as HostId + 1;
            host.component = parts.iter().position(|p| p.contains(&h)).unwrap_or(lone + i);
        }
        if !self.pending.is_empty() {
            let from = self.pending_component;
            let side_of: Vec<Option<usize>> = (0..self.hosts.len())
                .map(|i| (self.hosts[i].up && before[i] == from).then_some(self.hosts[i].component))
                .collect();
            self.complete_by_side(&side_of);
        }
        let mut components: Vec<usize> = self.hosts.iter().filter(|x| x.up).map(|x| x.component).collect();
        components.sort_unstable();
        components.dedup();
        for component in components {
            self.install(component, &[]);
        }
    }

    /// Joins every host into one component again.
    pub fn heal(&mut self) {
        self.complete();
        for host in &mut self.hosts {
            host.component = 0;
        }
        self.install(0, &[]);
    }

    /// Installs a new view at every member of `component`, after what was ordered before it.
    fn install(&mut self, component: usize, reasons: &[(HostId, LeaveReason)]) {
        if self.pending_component == component && !self.pending.is_empty() {
            self.complete();
        }
        let members: Vec<HostId> = self
            .hosts
            .iter()
            .enumerate()
            .filter(|(_, x)| x.up && x.component == component)
            .map(|(i, _)| i as HostId + 1)
            .collect();
        if members.is_empty() {
            return;
        }
        let id = self.next_view;
        self.next_view += 1;
        for &m in &members {
            let Some(host) = self.host_mut(m) else { continue };
            let before: Vec<HostId> = host.view.as_ref().map(|v| v.members.clone()).unwrap_or_default();
            let joined = members.iter().copied().filter(|x| !before.contains(x)).collect();
            let left = before
                .iter()
                .copied()
                .filter(|x| !members.contains(x))
                .map(|x| (x, reasons.iter().find(|(r, _)| *r == x).map_or(LeaveReason::NodeDown, |(_, why)| *why)))
                .collect();
            let view = View { id, members: members.clone(), joined, left };
            host.view = Some(view.clone());
            host.inbox.push_back(Delivery::View(view.clone()));
            host.history.push(Delivery::View(view));
        }
    }

    /// The next delivery `h` has not taken yet.
    pub fn take(&mut self, h: HostId) -> Option<Delivery> {
        self.host_mut(h).and_then(|x| x.inbox.pop_front())
    }

    /// Everything delivered to `h` since it last started.
    pub fn history(&self, h: HostId) -> &[Delivery] {
        self.host(h).map_or(&[], |x| x.history.as_slice())
    }

    /// Breaches of the guarantees, in what the hosts delivered: two hosts that installed the
    /// same two consecutive views delivered the same messages, in the same order, between them;
    /// every host's views grow; a host is a member of every view it installs.
    pub fn violations(&self) -> Vec<String> {
        let mut found = Vec::new();
        let segments: Vec<Vec<Segment<'_>>> = self.hosts().map(|h| segments(self.history(h))).collect();
        for (a, sa) in segments.iter().enumerate() {
            for (b, sb) in segments.iter().enumerate().skip(a + 1) {
                for (view, next, messages) in sa {
                    let Some(next) = next else { continue };
                    let same = sb.iter().find(|(v, n, _)| v == view && *n == Some(*next));
                    if let Some((_, _, other)) = same {
                        if messages != other {
                            found.push(format!(
                                "hosts {} and {} delivered different messages between views {view} and {next}",
                                a + 1,
                                b + 1
                            ));
                        }
                    }
                }
            }
        }
        for h in self.hosts() {
            let views: Vec<&View> = self
                .history(h)
                .iter()
                .filter_map(|d| match d {
                    Delivery::View(v) => Some(v),
                    _ => None,
                })
                .collect();
            if views.windows(2).any(|w| w[0].id >= w[1].id) {
                found.push(format!("host {h} installed views out of order"));
            }
            if views.iter().any(|v| !v.contains(h)) {
                found.push(format!("host {h} installed a view it is not a member of"));
            }
        }
        found
    }
}

/// A view, the next view if any, and the messages delivered between them.
type Segment<'a> = (u64, Option<u64>, &'a [Delivery]);

/// A history cut at its views.
fn segments(history: &[Delivery]) -> Vec<Segment<'_>> {
    let starts: Vec<(usize, u64)> = history
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match d {
            Delivery::View(v) => Some((i, v.id)),
            _ => None,
        })
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &(i, id))| {
            let end = starts.get(k + 1).map_or(history.len(), |s| s.0);
            (id, starts.get(k + 1).map(|s| s.1), &history[i + 1..end])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(history: &[Delivery]) -> Vec<(HostId, &[u8])> {
        history
            .iter()
            .filter_map(|d| match d {
                Delivery::Message { from, payload } => Some((*from, payload.as_ref())),
                _ => None,
            })
            .collect()
    }

    /// Three hosts, all started.
    fn three_started() -> SimGroup {
        let mut g = SimGroup::new(3);
        for h in 1..=3 {
            g.start(h);
        }
        g
    }

    fn views(history: &[Delivery]) -> Vec<Vec<HostId>> {
        history
            .iter()
            .filter_map(|d| match d {
                Delivery::View(v) => Some(v.members.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn members_deliver_one_order_and_the_same_views() {
        let mut g = three_started();
        g.multicast(1, Bytes::from_static(b"a")).expect("up");
        g.multicast(2, Bytes::from_static(b"b")).expect("up");
        assert!(g.order(2));
        assert!(g.order(1));
        for h in 1..=3 {
            assert_eq!(messages(g.history(h)), vec![(2, &b"b"[..]), (1, &b"a"[..])]);
        }
        assert_eq!(views(g.history(3)), vec![vec![1, 2, 3]]);
        assert_eq!(views(g.history(1)), vec![vec![1], vec![1, 2], vec![1, 2, 3]]);
        assert!(g.violations().is_empty(), "{:?}", g.violations());
    }

    #[test]
    fn a_message_delivered_to_its_sender_alone_is_lost_with_it() {
        let mut g = three_started();
        g.multicast(1, Bytes::from_static(b"lost")).expect("up");
        assert!(g.order_partially(1));
        assert_eq!(messages(g.history(1)), vec![(1, &b"lost"[..])]);
        g.crash(1);
        for h in 2..=3 {
            assert!(messages(g.history(h)).is_empty());
            let last = g.history(h).last().cloned();
            assert!(
                matches!(last, Some(Delivery::View(ref v)) if v.members == vec![2, 3] && v.left == vec![(1, LeaveReason::NodeDown)])
            );
        }
        assert!(g.violations().is_empty(), "{:?}", g.violations());
    }

    #[test]
    fn a_partition_gives_each_side_its_own_views_and_order() {
        let mut g = three_started();
        g.partition(&[&[1, 2], &[3]]);
        let View { members, .. } = match g.history(3).last() {
            Some(Delivery::View(v)) => v.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(members, vec![3]);
        assert!(!View { id: 0, members, joined: vec![], left: vec![] }.has_quorum(3));
        g.multicast(3, Bytes::from_static(b"alone")).expect("up");
        g.order(3);
        assert!(messages(g.history(1)).is_empty());
        g.heal();
        assert_eq!(views(g.history(3)).last(), Some(&vec![1, 2, 3]));
        assert!(g.violations().is_empty(), "{:?}", g.violations());
    }
}
