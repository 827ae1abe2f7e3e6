//! The in-process group keeps extended virtual synchrony under any schedule of multicasts,
//! full and partial orderings, crashes, restarts, leaves, partitions and heals: hosts that
//! installed the same two consecutive views delivered the same messages between them, views
//! grow, and a host is a member of every view it installs.
use bytes::Bytes;
use group::sim::SimGroup;
use group::{Delivery, HostId};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Multicast(HostId),
    Order(HostId),
    OrderPartially(HostId),
    /// Ordered and delivered to the sender and some members of its component for now (mask).
    OrderWithin(HostId, u8),
    Crash(HostId),
    Start(HostId),
    Leave(HostId),
    Split(u8),
    Heal,
}

fn step() -> impl Strategy<Value = Step> {
    let host = 1..=4u32;
    prop_oneof![
        6 => host.clone().prop_map(Step::Multicast),
        5 => host.clone().prop_map(Step::Order),
        3 => host.clone().prop_map(Step::OrderPartially),
        3 => (host.clone(), any::<u8>()).prop_map(|(h, m)| Step::OrderWithin(h, m)),
        1 => host.clone().prop_map(Step::Crash),
        2 => host.clone().prop_map(Step::Start),
        1 => host.prop_map(Step::Leave),
        1 => any::<u8>().prop_map(Step::Split),
        1 => Just(Step::Heal),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn the_group_keeps_virtual_synchrony(steps in proptest::collection::vec(step(), 1..200)) {
        let mut g = SimGroup::new(4);
        for h in 1..=4 {
            g.start(h);
        }
        let mut n = 0u32;
        for s in &steps {
            match *s {
                Step::Multicast(h) => {
                    n += 1;
                    let _ = g.multicast(h, Bytes::from(n.to_be_bytes().to_vec()));
                }
                Step::Order(h) => { g.order(h); }
                Step::OrderPartially(h) => { g.order_partially(h); }
                Step::OrderWithin(h, mask) => {
                    let to: Vec<HostId> = (1..=4).filter(|x| mask & (1 << (x - 1)) != 0).collect();
                    g.order_within(h, &to);
                }
                Step::Crash(h) => g.crash(h),
                Step::Start(h) => g.start(h),
                Step::Leave(h) => g.leave(h),
                Step::Split(bits) => {
                    let (a, b): (Vec<HostId>, Vec<HostId>) = (1..=4).partition(|h| bits & (1 << (h - 1)) != 0);
                    g.partition(&[&a, &b]);
                }
                Step::Heal => g.heal(),
            }
            let violations = g.violations();
            prop_assert!(violations.is_empty(), "{:?} after {:?}", violations, s);
        }
        // No message is delivered twice to one host.
        for h in g.hosts() {
            let mut seen: Vec<&Bytes> = g.history(h).iter().filter_map(|d| match d {
                Delivery::Message { payload, .. } => Some(payload),
                _ => None,
            }).collect();
            let count = seen.len();
            seen.sort();
            seen.dedup();
            prop_assert_eq!(seen.len(), count, "host {} delivered a message twice", h);
        }
    }
}
