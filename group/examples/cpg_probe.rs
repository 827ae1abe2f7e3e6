//! Joins a CPG group through this host's Corosync, multicasts numbered messages, and prints
//! every delivery with the time it arrived: the multi-host tests compare what the hosts print.
//!
//! Usage: `cpg_probe GROUP MEMBERS SECONDS INTERVAL_MS`: waits for a view of MEMBERS hosts,
//! then multicasts `h<host>-<n>` every INTERVAL_MS for SECONDS, and keeps printing for one
//! second more. Lines: `view <ms> <members>`, `msg <ms> <from> <payload>`, `lost <ms> <why>`
//! (ms: since the Unix epoch).
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use group::corosync::CorosyncGroup;
use group::{Delivery, Group};

fn ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

fn print(delivery: &Delivery) {
    match delivery {
        Delivery::View(v) => {
            let members: Vec<String> = v.members.iter().map(u32::to_string).collect();
            println!("view {} {}", ms(), members.join(","));
        }
        Delivery::Message { from, payload } => println!("msg {} {from} {}", ms(), String::from_utf8_lossy(payload)),
        Delivery::Lost(why) => println!("lost {} {why}", ms()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let [_, name, members, seconds, interval] = args.as_slice() else {
        return Err("usage: cpg_probe GROUP MEMBERS SECONDS INTERVAL_MS".into());
    };
    let members: usize = members.parse().map_err(|e| format!("MEMBERS: {e}"))?;
    let seconds: f64 = seconds.parse().map_err(|e| format!("SECONDS: {e}"))?;
    let interval = Duration::from_millis(interval.parse().map_err(|e| format!("INTERVAL_MS: {e}"))?);
    // Corosync may still be starting: try for a while.
    let started = Instant::now();
    let mut group = loop {
        match CorosyncGroup::join(name) {
            Ok(g) => break g,
            Err(e) if started.elapsed() < Duration::from_secs(20) => {
                eprintln!("waiting for corosync: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let host = group.local();
    // Wait until the expected members are there.
    loop {
        let delivery = group.deliveries().recv().await.ok_or("deliveries ended")?;
        print(&delivery);
        match delivery {
            Delivery::View(v) if v.members.len() >= members => break,
            Delivery::Lost(why) => return Err(why),
            _ => {}
        }
    }
    let sending_until = Instant::now() + Duration::from_secs_f64(seconds);
    let end = sending_until + Duration::from_secs(1);
    let mut tick = tokio::time::interval(interval);
    let mut n = 0u64;
    loop {
        tokio::select! {
            delivery = group.deliveries().recv() => {
                let Some(delivery) = delivery else { return Err("deliveries ended".into()) };
                print(&delivery);
                if let Delivery::Lost(why) = delivery {
                    return Err(why);
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                if now >= end {
                    return Ok(());
                }
                if now < sending_until {
                    n += 1;
                    if let Err(e) = group.multicast(Bytes::from(format!("h{host}-{n}"))) {
                        eprintln!("multicast: {e}");
                    }
                }
            }
        }
    }
}
