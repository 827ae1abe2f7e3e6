//! A deterministic group without I/O, for tests: hosts, one agreed order per connected
//! component, views, crashes and partitions, each a method call, so that a test (or a
//! property test's seed) decides every interleaving.
//!
//! It gives what Corosync's CPG gives (extended virtual synchrony, see the crate docs) and
//! no more, so that what is built on top is tested against the weak points too:
//! - **agreed, not safe**: [`order_partially`](SimGroup::order_partially) delivers a message
//!   to its sender only; the others get it at the next ordering or view change, unless the
//!   sender crashes first — then it is lost for them, though its sender delivered it;
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
    /// Messages ordered and delivered to their sender only (one sender at a time, so that the
    /// others, delivering them later, see the same order).
    unspread: VecDeque<(HostId, Bytes)>,
    /// The component the unspread messages were ordered in.
    unspread_component: usize,
}

impl SimGroup {
    /// `hosts` hosts, numbered from 1, all down.
    pub fn new(hosts: usize) -> SimGroup {
        SimGroup {
            hosts: (0..hosts).map(|_| SimHost::default()).collect(),
            next_view: 1,
            unspread: VecDeque::new(),
            unspread_component: 0,
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
        self.spread();
        let Some(payload) = self.host_mut(h).and_then(|x| x.outbox.pop_front()) else { return false };
        self.deliver_to_component(component, None, &Delivery::Message { from: h, payload });
        true
    }

    /// Orders the next message `h` multicast and delivers it to `h` alone, for now: the others
    /// get it with the next ordering or view change in the component, unless `h` crashes first.
    /// False if there was none (or another host's message is unspread: then it orders fully).
    pub fn order_partially(&mut self, h: HostId) -> bool {
        let Some(component) = self.host(h).filter(|x| x.up).map(|x| x.component) else { return false };
        if self.unspread.front().is_some_and(|(from, _)| *from != h) {
            return self.order(h);
        }
        let Some(payload) = self.host_mut(h).and_then(|x| x.outbox.pop_front()) else { return false };
        let message = Delivery::Message { from: h, payload: payload.clone() };
        if let Some(host) = self.host_mut(h) {
            host.inbox.push_back(message.clone());
            host.history.push(message);
        }
        self.unspread.push_back((h, payload));
        self.unspread_component = component;
        true
    }

    /// Delivers the unspread messages to the rest of their component.
    fn spread(&mut self) {
        let component = self.unspread_component;
        while let Some((from, payload)) = self.unspread.pop_front() {
            self.deliver_to_component(component, Some(from), &Delivery::Message { from, payload });
        }
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
        if self.unspread.front().is_some_and(|(from, _)| *from == h) {
            self.unspread.clear();
        } else {
            self.spread();
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
    pub fn partition(&mut self, parts: &[&[HostId]]) {
        self.spread();
        let lone = parts.len();
        for (i, host) in self.hosts.iter_mut().enumerate() {
            let h = i as HostId + 1;
            host.component = parts.iter().position(|p| p.contains(&h)).unwrap_or(lone + i);
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
        self.spread();
        for host in &mut self.hosts {
            host.component = 0;
        }
        self.install(0, &[]);
    }

    /// Installs a new view at every member of `component`, after what was ordered before it.
    fn install(&mut self, component: usize, reasons: &[(HostId, LeaveReason)]) {
        if self.unspread_component == component {
            self.spread();
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
        let mut g = SimGroup::new(3);
        for h in 1..=3 {
            g.start(h);
        }
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
        let mut g = SimGroup::new(3);
        for h in 1..=3 {
            g.start(h);
        }
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
        let mut g = SimGroup::new(3);
        for h in 1..=3 {
            g.start(h);
        }
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
