//! The Corosync CPG engine of the `group` crate on three hosts in network namespaces, each
//! with its own Corosync (configured as the README recommends: knet, encrypted, fast failure
//! detection): every host delivers the same messages in the same order, and when one host's
//! Corosync is killed the others install a view without it within the detection time and go
//! on agreeing.
use std::process::{Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use resh_e2e::netns::{cpg_probe, Hosts};

#[derive(Debug, Default)]
struct Log {
    /// (ms, members)
    views: Vec<(u128, Vec<u32>)>,
    /// (ms, from, payload)
    messages: Vec<(u128, u32, String)>,
    lost: bool,
}

fn parse(out: &Output) -> Log {
    let mut log = Log::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let words: Vec<&str> = line.splitn(4, ' ').collect();
        let at = words.get(1).and_then(|w| w.parse().ok()).unwrap_or(0);
        match words.first() {
            Some(&"view") => {
                let members =
                    words.get(2).map(|m| m.split(',').filter_map(|x| x.parse().ok()).collect()).unwrap_or_default();
                log.views.push((at, members));
            }
            Some(&"msg") => {
                let from = words.get(2).and_then(|w| w.parse().ok()).unwrap_or(0);
                log.messages.push((at, from, words.get(3).unwrap_or(&"").to_string()));
            }
            Some(&"lost") => log.lost = true,
            _ => {}
        }
    }
    log
}

fn payloads(log: &Log) -> Vec<&str> {
    log.messages.iter().map(|(_, _, p)| p.as_str()).collect()
}

fn start(hosts: &mut Hosts) {
    for i in 1..=3 {
        hosts.start_corosync(i);
    }
}

fn run_probes(hosts: &Hosts, probe: &std::path::Path, group: &str, seconds: &str) -> Vec<std::process::Child> {
    (1..=3)
        .map(|i| {
            hosts
                .command(i, probe.to_str().expect("path"))
                .args([group, "3", seconds, "5"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start probe")
        })
        .collect()
}

#[test]
fn three_hosts_deliver_one_order_and_a_killed_host_leaves_the_view_fast() {
    let probe = cpg_probe();
    let mut hosts = Hosts::new(3);
    start(&mut hosts);

    // Every host delivers every message, in one order.
    let children = run_probes(&hosts, &probe, "order", "2");
    let logs: Vec<Log> = children.into_iter().map(|c| parse(&c.wait_with_output().expect("probe"))).collect();
    for (i, log) in logs.iter().enumerate() {
        assert!(!log.lost, "host {} lost its group: {}", i + 1, hosts.corosync_log(i + 1));
        assert!(
            log.views.iter().any(|(_, m)| m == &vec![1, 2, 3]),
            "host {} never saw all three: {:?}",
            i + 1,
            log.views
        );
    }
    let first = payloads(&logs[0]);
    for (i, log) in logs.iter().enumerate().skip(1) {
        assert_eq!(payloads(log), first, "host {} delivered another order", i + 1);
    }
    for h in 1..=3u32 {
        assert!(logs[0].messages.iter().filter(|(_, from, _)| *from == h).count() > 100, "too few from host {h}");
    }
    println!("one order: {} messages delivered alike on three hosts", first.len());

    // Kill host 3's Corosync in the middle: hosts 1 and 2 agree on what they delivered, and
    // install a view without 3 soon after.
    let children = run_probes(&hosts, &probe, "failure", "4");
    thread::sleep(Duration::from_millis(2500));
    let killed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
    hosts.kill_corosync(3);
    let started = Instant::now();
    let logs: Vec<Log> = children.into_iter().map(|c| parse(&c.wait_with_output().expect("probe"))).collect();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(logs[2].lost, "host 3's probe did not notice its corosync died");
    assert_eq!(payloads(&logs[0]), payloads(&logs[1]), "the survivors delivered different orders");
    let detected = logs[0]
        .views
        .iter()
        .find(|(at, m)| *at >= killed_at && m == &vec![1, 2])
        .map(|(at, _)| at - killed_at)
        .unwrap_or_else(|| panic!("no view without host 3: {:?}", logs[0].views));
    let last_from_3 =
        logs[0].messages.iter().filter(|(_, from, _)| *from == 3).map(|(at, _, _)| *at).max().unwrap_or(0);
    let gap = logs[0]
        .messages
        .windows(2)
        .filter(|w| w[0].0 >= killed_at.saturating_sub(1000))
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or(0);
    println!(
        "host 3 killed: the survivors installed a view without it after {detected} ms; last message from it {} ms before the kill; longest gap in delivery {gap} ms",
        killed_at as i128 - last_from_3 as i128
    );
    assert!(detected < 2000, "failure detected only after {detected} ms");
    assert!(
        logs[0].messages.iter().any(|(at, from, _)| *at > killed_at + detected && *from != 3),
        "the survivors did not go on"
    );
}
