//! The [`Group`] trait in one process: members share one [`SimGroup`], which orders every
//! multicast at once; a test holds the [`LocalNet`] to crash, cut off and rejoin members.
//! For tests of what runs on top of a group, not a transport.
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::sim::SimGroup;
use crate::{Delivery, Group, GroupError, HostId};

/// Deliveries a member may hold before multicasts wait for it ([`GroupError::Full`]).
const QUEUE: usize = 4096;

#[derive(Debug)]
struct Shared {
    sim: SimGroup,
    /// Per host (index = id - 1): where its deliveries go while it runs.
    outlets: Vec<Option<mpsc::Sender<Delivery>>>,
}

impl Shared {
    /// Moves what the group delivered into the members' queues.
    fn pump(&mut self) {
        for (i, outlet) in self.outlets.iter_mut().enumerate() {
            let h = i as HostId + 1;
            while let Some(delivery) = self.sim.take(h) {
                if let Some(tx) = outlet {
                    // A member that went away (its receiver dropped) takes nothing more.
                    if tx.try_send(delivery).is_err() {
                        *outlet = None;
                    }
                }
            }
        }
    }

    fn room(&self) -> bool {
        self.outlets.iter().flatten().all(|tx| tx.capacity() > 0)
    }
}

/// The test's handle on an in-process group.
#[derive(Clone, Debug)]
pub struct LocalNet {
    shared: Arc<Mutex<Shared>>,
}

/// One member of an in-process group.
#[derive(Debug)]
pub struct LocalMember {
    host: HostId,
    shared: Arc<Mutex<Shared>>,
    deliveries: mpsc::Receiver<Delivery>,
}

impl LocalNet {
    /// A group of `hosts` hosts, none started.
    pub fn new(hosts: usize) -> LocalNet {
        let shared = Shared { sim: SimGroup::new(hosts), outlets: vec![None; hosts] };
        LocalNet { shared: Arc::new(Mutex::new(shared)) }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A test that panicked while holding the lock has failed already.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts host `h` and returns its member handle; its first delivery is the view it joined.
    pub fn start(&self, h: HostId) -> LocalMember {
        let (tx, deliveries) = mpsc::channel(QUEUE);
        let mut shared = self.lock();
        if let Some(outlet) = (h as usize).checked_sub(1).and_then(|i| shared.outlets.get_mut(i)) {
            *outlet = Some(tx);
        }
        shared.sim.start(h);
        shared.pump();
        LocalMember { host: h, shared: Arc::clone(&self.shared), deliveries }
    }

    /// Host `h` crashes: its member gets [`Delivery::Lost`] and nothing more; the others a view.
    pub fn crash(&self, h: HostId) {
        let mut shared = self.lock();
        shared.sim.crash(h);
        if let Some(outlet) = (h as usize).checked_sub(1).and_then(|i| shared.outlets.get_mut(i)) {
            if let Some(tx) = outlet.take() {
                let _ = tx.try_send(Delivery::Lost(format!("host {h} crashed")));
            }
        }
        shared.pump();
    }

    /// Splits the hosts into components (see [`SimGroup::partition`]).
    pub fn partition(&self, parts: &[&[HostId]]) {
        let mut shared = self.lock();
        shared.sim.partition(parts);
        shared.pump();
    }

    /// Joins every host into one component again.
    pub fn heal(&self) {
        let mut shared = self.lock();
        shared.sim.heal();
        shared.pump();
    }

    /// Breaches of the group's guarantees so far (see [`SimGroup::violations`]).
    pub fn violations(&self) -> Vec<String> {
        self.lock().sim.violations()
    }
}

impl Group for LocalMember {
    fn local(&self) -> HostId {
        self.host
    }

    fn multicast(&self, payload: Bytes) -> Result<(), GroupError> {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if !shared.room() {
            return Err(GroupError::Full);
        }
        shared.sim.multicast(self.host, payload)?;
        shared.sim.order(self.host);
        shared.pump();
        Ok(())
    }

    fn deliveries(&mut self) -> &mut mpsc::Receiver<Delivery> {
        &mut self.deliveries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn members_take_one_order_through_the_trait() {
        let net = LocalNet::new(3);
        let mut members: Vec<LocalMember> = (1..=3).map(|h| net.start(h)).collect();
        members[0].multicast(Bytes::from_static(b"one")).expect("multicast");
        members[2].multicast(Bytes::from_static(b"two")).expect("multicast");
        net.crash(2);
        members[0].multicast(Bytes::from_static(b"three")).expect("multicast");
        let mut logs = Vec::new();
        for m in members.iter_mut().filter(|m| m.local() != 2) {
            let mut log = Vec::new();
            while let Ok(d) = m.deliveries().try_recv() {
                log.push(d);
            }
            logs.push(log);
        }
        let tail = |log: &[Delivery]| -> Vec<Delivery> {
            let from = log.iter().rposition(|d| matches!(d, Delivery::View(v) if v.members == vec![1, 2, 3]));
            log[from.map_or(0, |i| i + 1)..].to_vec()
        };
        assert_eq!(tail(&logs[0]), tail(&logs[1]));
        assert_eq!(tail(&logs[0]).len(), 4, "{:?}", logs[0]);
        let mut crashed = Vec::new();
        while let Ok(d) = members[1].deliveries().try_recv() {
            crashed.push(d);
        }
        assert!(matches!(crashed.last(), Some(Delivery::Lost(_))), "{crashed:?}");
        assert!(net.violations().is_empty());
    }
}
