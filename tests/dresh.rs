//! D-RESH end to end: three hosts in network namespaces, each with its own Corosync and its own
//! `resh run` in front of three redis-server replicas, and clients in a namespace of their own
//! that talk to the hosts over the bridge, as clients on another machine would. Needs root
//! (CI runs it as root); everything is removed at the end, also when a test fails.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use resh_e2e::netns::{cpg_probe, in_ns, Hosts};
use resh_e2e::{have, Resh, RespClient};

const PORT: u16 = 6380;

/// One group of hosts at a time: each runs three Corosyncs with sub-second failure detection,
/// and two groups at once on two CPUs would make each other's token late.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn host_config(i: usize, replicas: usize) -> String {
    assert!(have("redis-server"), "redis-server is not installed: run ./scripts/test.sh, which installs it");
    let mut text = format!(
        "listen = \"{addr}:{PORT}\"\n[vote]\nmode = \"ordered\"\nprotocol = \"resp\"\n[admin]\nlisten = \"127.0.0.1:9100\"\n[group]\nengine = \"corosync\"\nname = \"kv\"\nhosts = 3\n[group.transfer]\n1 = \"{h1}:6390\"\n2 = \"{h2}:6390\"\n3 = \"{h3}:6390\"\n",
        addr = Hosts::addr(i),
        h1 = Hosts::addr(1),
        h2 = Hosts::addr(2),
        h3 = Hosts::addr(3),
    );
    for r in 1..=replicas {
        text.push_str(&format!(
            "[[replica]]\nname = \"r{r}\"\ncommand = [\"redis-server\", \"--port\", \"{{port}}\", \"--bind\", \"127.0.0.1\", \"--save\", \"\", \"--appendonly\", \"no\", \"--enable-debug-command\", \"yes\"]\n"
        ));
    }
    text
}

fn client_addr(i: usize) -> SocketAddr {
    SocketAddr::from((Hosts::addr(i), PORT))
}

/// Three hosts with Corosync and resh, all serving.
fn three_hosts() -> (Hosts, Vec<Option<Resh>>) {
    let mut hosts = Hosts::new(3);
    for i in 1..=3 {
        hosts.start_corosync(i);
    }
    let resh: Vec<Option<Resh>> = (1..=3).map(|i| Some(Resh::start_in(&hosts.ns(i), &host_config(i, 3)))).collect();
    for r in resh.iter().flatten() {
        wait_role(r, "serving", Duration::from_secs(30));
    }
    (hosts, resh)
}

fn role(resh: &Resh) -> String {
    resh.get("/status")
        .ok()
        .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|s| s["group"]["role"].as_str().map(String::from))
        .unwrap_or_default()
}

fn wait_role(resh: &Resh, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if role(resh) == want {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("resh did not become {want}; status: {}\nlog:\n{}", resh.status(), resh.log());
}

/// One client's run: INCR of its own counter against its host, falling over to the next host
/// when its host fails. It checks that no acknowledged increment is lost: after a failure the
/// counter holds every acknowledged increment, and at most the one whose answer was lost.
#[derive(Debug, Default)]
struct ClientRun {
    acked: u64,
    errors: Vec<String>,
    failovers: u32,
    /// The longest time between two answers.
    longest_gap: Duration,
}

fn client(key: String, mut hosts: Vec<usize>, stop: Arc<AtomicBool>, limit: usize) -> ClientRun {
    let mut run = ClientRun::default();
    let mut conn: Option<RespClient> = None;
    let mut last = Instant::now();
    let mut value = 0u64;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) && n < limit {
        n += 1;
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match RespClient::connect(client_addr(hosts[0])) {
                Ok(mut c) => {
                    // Where the counter stands after a failure: every acknowledged increment,
                    // and perhaps the one whose answer was lost.
                    match c.call(&["GET", &key]) {
                        Ok(reply) => {
                            let now = parse_bulk_int(&reply).unwrap_or(0);
                            if now != run.acked && now != run.acked + 1 {
                                run.errors.push(format!("{key}: {now} after {} acknowledged increments", run.acked));
                            }
                            value = now;
                            run.acked = now;
                        }
                        Err(_) => {
                            hosts.rotate_left(1);
                            thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                    }
                    conn.insert(c)
                }
                Err(_) => {
                    hosts.rotate_left(1);
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
            },
        };
        match c.call(&["INCR", &key]) {
            Ok(reply) if reply.starts_with(b":") => {
                let got: u64 = std::str::from_utf8(&reply[1..]).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
                if got != value + 1 {
                    run.errors.push(format!("{key}: INCR answered {got}, expected {}", value + 1));
                }
                value = got;
                run.acked = got;
                run.longest_gap = run.longest_gap.max(last.elapsed());
                last = Instant::now();
            }
            _ => {
                // An error reply or a reset: this host stopped serving; try the next.
                conn = None;
                run.failovers += 1;
                hosts.rotate_left(1);
            }
        }
    }
    run
}

/// Waits (at most 10 s) until `resh` stopped with an error, having logged `why`.
fn stops_with(resh: &mut Resh, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = resh.exited() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the host did not stop; log:\n{}", resh.log());
        thread::sleep(Duration::from_millis(50));
    };
    assert!(!exit.success(), "the host stopped with {exit}");
    assert!(resh.log().contains(why), "log:\n{}", resh.log());
}

fn parse_bulk_int(reply: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(reply).ok()?;
    let mut lines = text.split("\r\n");
    let head = lines.next()?;
    if head == "$-1" {
        return Some(0);
    }
    lines.next()?.parse().ok()
}

/// `DEBUG DIGEST` of every replica of host `i`, asked directly (from the host's namespace, at
/// the addresses its `/status` lists), once their answers to everything delivered are in.
fn digests(hosts: &Hosts, resh: &Resh, i: usize) -> Vec<Vec<u8>> {
    let status = resh.status();
    let addrs: Vec<std::net::SocketAddr> = status["replicas"]
        .as_array()
        .map(|list| list.iter().filter_map(|r| r["addr"].as_str().and_then(|a| a.parse().ok())).collect())
        .unwrap_or_default();
    assert_eq!(addrs.len(), 3, "host {i}'s replicas: {status}");
    // One request through resh first: its answer comes after every earlier request's.
    in_ns(&hosts.client_ns(), move || {
        let mut c = RespClient::connect(client_addr(i)).expect("connect");
        c.call(&["PING"]).expect("PING")
    });
    in_ns(&hosts.ns(i), move || {
        addrs
            .iter()
            .map(|a| RespClient::connect(*a).and_then(|mut c| c.call(&["DEBUG", "DIGEST"])).expect("DEBUG DIGEST"))
            .collect()
    })
}

/// Every replica of every host holds one state (asked again for a while: a replica outside its
/// host's quorum may still be executing the last requests).
fn assert_one_state(hosts: &Hosts, resh: &[Option<Resh>]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let all: Vec<(usize, Vec<Vec<u8>>)> = resh
            .iter()
            .enumerate()
            .filter_map(|(k, r)| r.as_ref().map(|r| (k + 1, digests(hosts, r, k + 1))))
            .collect();
        let first = &all[0].1[0];
        let differing: Vec<String> = all
            .iter()
            .flat_map(|(host, list)| {
                list.iter()
                    .enumerate()
                    .filter(|(_, d)| *d != first)
                    .map(move |(r, _)| format!("host {host} r{}", r + 1))
            })
            .collect();
        if differing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "these replicas hold another state than host {}'s r1: {differing:?}",
            all[0].0
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// Clients on every host; then one host crashes (SIGKILL of everything on it) in the middle of
/// the workload: the other hosts' clients see no error, its clients go on at another host,
/// no acknowledged write is lost, and every host's replicas end in one state.
#[test]
fn three_hosts_serve_one_state_and_survive_a_host_crash() {
    let _one = one_at_a_time();
    let (mut hosts, mut resh) = three_hosts();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for k in 0..6 {
        let home = k % 3 + 1;
        let order: Vec<usize> = (0..3).map(|j| (home - 1 + j) % 3 + 1).collect();
        let stop = Arc::clone(&stop);
        let ns = hosts.client_ns();
        clients.push(thread::spawn(move || in_ns(&ns, move || client(format!("c{k}"), order, stop, 200_000))));
    }
    thread::sleep(Duration::from_secs(2));
    if let Some(r) = &resh[0] {
        eprintln!("host 1 before the crash: {}", r.status()["group"]);
    }
    // A session of host 1 watches a key across the crash and the rejoin; another session
    // writes in database 4. The restarted host must get both with the state.
    let (mut watcher, mut other_db) = in_ns(&hosts.client_ns(), || {
        let mut watcher = RespClient::connect(client_addr(1)).expect("connect to host 1");
        assert_eq!(watcher.call(&["WATCH", "watched"]).expect("WATCH"), b"+OK\r\n");
        let mut other_db = RespClient::connect(client_addr(2)).expect("connect to host 2");
        assert_eq!(other_db.call(&["SELECT", "4"]).expect("SELECT"), b"+OK\r\n");
        assert_eq!(other_db.call(&["SET", "in-4", "four"]).expect("SET"), b"+OK\r\n");
        (watcher, other_db)
    });
    hosts.kill_host(3);
    if let Some(mut r) = resh[2].take() {
        r.kill();
    }
    thread::sleep(Duration::from_secs(3));
    // The crashed host comes back with empty replicas: it is given the state by another host
    // while the workload goes on, and serves again.
    hosts.start_corosync(3);
    let back = Resh::start_in(&hosts.ns(3), &host_config(3, 3));
    let restarted = Instant::now();
    wait_role(&back, "serving", Duration::from_secs(30));
    eprintln!("the restarted host serves after {:?}", restarted.elapsed());
    assert_eq!(back.status()["group"]["state_transfers"]["taken"], 1, "{}", back.status());
    let given: u64 =
        resh[..2].iter().flatten().filter_map(|r| r.status()["group"]["state_transfers"]["given"].as_u64()).sum();
    assert_eq!(given, 1, "one of the others gave the state");
    resh[2] = Some(back);
    // The watched key changes after the rejoin: the watcher's transaction is discarded on
    // every host, the restarted one included (it got the WATCH table with the state).
    let (exec, in_4) = in_ns(&hosts.client_ns(), move || {
        let mut writer = RespClient::connect(client_addr(3)).expect("connect to host 3");
        assert_eq!(writer.call(&["SET", "watched", "changed"]).expect("SET"), b"+OK\r\n");
        assert_eq!(watcher.call(&["MULTI"]).expect("MULTI"), b"+OK\r\n");
        assert_eq!(watcher.call(&["SET", "watched", "by the watcher"]).expect("SET"), b"+QUEUED\r\n");
        let exec = watcher.call(&["EXEC"]).expect("EXEC");
        assert_eq!(writer.call(&["SELECT", "4"]).expect("SELECT"), b"+OK\r\n");
        let in_4 = writer.call(&["GET", "in-4"]).expect("GET");
        other_db.call(&["DEL", "in-4"]).expect("DEL");
        (exec, in_4)
    });
    assert_eq!(exec, b"*-1\r\n", "the watched key changed: the transaction is discarded");
    assert_eq!(in_4, b"$4\r\nfour\r\n", "database 4 was copied to the restarted host");
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let runs: Vec<ClientRun> = clients.into_iter().map(|c| c.join().expect("client")).collect();
    for (k, run) in runs.iter().enumerate() {
        eprintln!(
            "client c{k} (host {}): {} increments, {} failovers, longest gap {:?}",
            k % 3 + 1,
            run.acked,
            run.failovers,
            run.longest_gap
        );
        assert!(run.errors.is_empty(), "client c{k}: {:?}", run.errors);
        assert!(run.acked > 0, "client c{k} got no answer");
        if k % 3 + 1 != 3 {
            assert_eq!(run.failovers, 0, "client c{k} of a surviving host saw an error");
        }
    }
    let gap = runs.iter().map(|r| r.longest_gap).max().unwrap_or_default();
    eprintln!("longest service gap of any client: {gap:?}");
    // The goal is under a second (failure detection takes ~0.7 s); a loaded CI machine may
    // stretch it, a group that stalls would not stay within this.
    assert!(gap < Duration::from_secs(3), "a client waited {gap:?} for an answer");
    // No acknowledged increment is lost: each counter holds what its client was told, or one
    // more (an increment whose answer a failover cut off).
    for (k, run) in runs.iter().enumerate() {
        let key = format!("c{k}");
        let value = in_ns(&hosts.client_ns(), move || {
            RespClient::connect(client_addr(1)).and_then(|mut c| c.call(&["GET", &key])).expect("GET")
        });
        let value = parse_bulk_int(&value).unwrap_or(0);
        assert!(value == run.acked || value == run.acked + 1, "c{k}: {value} after {} acknowledged", run.acked);
    }
    assert_one_state(&hosts, &resh);
    for r in resh.iter().flatten() {
        assert_eq!(role(r), "serving");
    }
}

/// One host is cut off from the others (its link down for a while): it stops serving within
/// the failure-detection time (its view has no quorum), the other two go on, and once the link
/// is back it rejoins, is given the state it missed, and serves the same state again.
#[test]
fn a_host_cut_off_stops_serving_and_rejoins_when_the_link_is_back() {
    let _one = one_at_a_time();
    let (hosts, resh) = three_hosts();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for k in 0..2 {
        let home = k + 1;
        let stop = Arc::clone(&stop);
        let ns = hosts.client_ns();
        // Clients of hosts 1 and 2 only: the cut-off host's clients could not reach it anyway.
        clients.push(thread::spawn(move || in_ns(&ns, move || client(format!("p{k}"), vec![home], stop, 200_000))));
    }
    thread::sleep(Duration::from_secs(1));
    let cut = Instant::now();
    hosts.set_link(3, false);
    let r3 = resh[2].as_ref().expect("host 3");
    wait_role(r3, "fenced", Duration::from_secs(5));
    let fenced_after = cut.elapsed();
    eprintln!("the cut-off host stopped serving after {fenced_after:?}");
    assert!(fenced_after < Duration::from_secs(2), "the cut-off host served for {fenced_after:?}");
    // A client that reaches it meanwhile (from its own namespace: its link is down) is told why
    // it is refused, then the connection closes cleanly.
    let refused = in_ns(&hosts.ns(3), || {
        let mut c = RespClient::connect(client_addr(3))?;
        let reply = c.reply()?;
        let mut rest = Vec::new();
        std::io::Read::read_to_end(c.stream(), &mut rest).map(|_| (reply, rest))
    });
    let (reply, rest) = refused.expect("the refusal reads cleanly");
    assert!(reply.starts_with(b"-TRYAGAIN resh: this host is not serving"), "{}", String::from_utf8_lossy(&reply));
    assert!(rest.is_empty());
    let metrics = r3.metrics();
    let refusals = metrics
        .lines()
        .find_map(|l| l.strip_prefix("resh_sessions_refused_total{reason=\"no_quorum\"} "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(refusals.is_some_and(|n| n >= 1), "the refusal is counted: {metrics}");
    thread::sleep(Duration::from_secs(2));
    hosts.set_link(3, true);
    let healed = Instant::now();
    wait_role(r3, "serving", Duration::from_secs(30));
    eprintln!("the host serves again {:?} after its link came back", healed.elapsed());
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for (k, run) in clients.into_iter().map(|c| c.join().expect("client")).enumerate() {
        eprintln!("client p{k}: {} increments, longest gap {:?}", run.acked, run.longest_gap);
        assert!(run.errors.is_empty(), "client p{k}: {:?}", run.errors);
        assert_eq!(run.failovers, 0, "client p{k} of a host that kept its quorum saw an error");
    }
    assert_one_state(&hosts, &resh);
}

/// Two of one host's three replicas share a bug (GET of one key answers a wrong value): that
/// host's replicas outvote its correct one, so its answer differs from the other hosts', here
/// to another host's client's request. It leaves the group and stops (fail-stop, never wrong):
/// its own client gets an error or a reset, never the wrong value, and the other hosts go on.
#[test]
fn a_host_whose_replicas_agree_on_a_wrong_answer_leaves_and_stops() {
    let _one = one_at_a_time();
    let mut hosts = Hosts::new(3);
    for i in 1..=3 {
        hosts.start_corosync(i);
    }
    let kv = resh_e2e::binary("resh-kv");
    let mut config2 = host_config(2, 1);
    for r in 2..=3 {
        config2.push_str(&format!(
            "[[replica]]\nname = \"buggy{r}\"\ncommand = [\"{}\", \"--port\", \"{{port}}\", \"--wrong-get\", \"probe\"]\n",
            kv.display()
        ));
    }
    let mut resh: Vec<Resh> = (1..=3)
        .map(|i| Resh::start_in(&hosts.ns(i), &if i == 2 { config2.clone() } else { host_config(i, 3) }))
        .collect();
    for r in &resh {
        wait_role(r, "serving", Duration::from_secs(30));
    }
    let ns = hosts.client_ns();
    let (through_1, mut c2) = in_ns(&ns, || {
        let mut c1 = RespClient::connect(client_addr(1)).expect("connect host 1");
        assert_eq!(c1.call(&["SET", "probe", "right"]).expect("SET"), b"+OK\r\n");
        let c2 = RespClient::connect(client_addr(2)).expect("connect host 2");
        // Only host 1's client asks: host 2 executes and answers that request too, and its
        // answer is compared although the request is not its clients'.
        (c1.call(&["GET", "probe"]).expect("GET through host 1"), c2)
    });
    assert_eq!(through_1, b"$5\r\nright\r\n", "host 1 answered wrong");
    stops_with(&mut resh[1], "leaves the group");
    // Its client gets an error reply, or a reset (as good as an error): never the wrong value.
    if let Ok(reply) = c2.call(&["GET", "probe"]) {
        assert!(reply.starts_with(b"-"), "host 2 answered {:?}", String::from_utf8_lossy(&reply));
    }
    // The others go on.
    let after = in_ns(&ns, || {
        let mut c = RespClient::connect(client_addr(3)).expect("connect host 3");
        c.call(&["INCR", "after"]).expect("INCR")
    });
    assert_eq!(after, b":1\r\n");
    for i in [0, 2] {
        assert_eq!(role(&resh[i]), "serving");
    }
}

/// Clients nobody here wrote, through the hosts: `redis-cli` writes through one host and reads
/// through the others; `redis-benchmark` runs against all three hosts at once (pipelined too),
/// without an error, and every replica of every host ends in one state; a stray member of the
/// group sending garbage first changes nothing but the count of undecodable messages.
#[test]
fn redis_cli_and_redis_benchmark_work_through_every_host() {
    let _one = one_at_a_time();
    assert!(have("redis-cli") && have("redis-benchmark"), "redis-tools is not installed: run ./scripts/test.sh");
    let (hosts, resh) = three_hosts();
    // A process that is not resh joins the group on host 1 and multicasts what no host can
    // decode (as a stray or hostile group member would): it is counted and ignored.
    let probe = hosts.command(1, &cpg_probe().display().to_string()).args(["kv", "3", "1", "100"]).output();
    assert!(probe.as_ref().is_ok_and(|o| o.status.success()), "cpg_probe: {probe:?}");
    let cli = |host: usize, args: &[&str]| {
        let out = hosts
            .command_in(&hosts.client_ns(), "redis-cli")
            .args(["-h", &Hosts::addr(host).to_string(), "-p", &PORT.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(1, &["SET", "greeting", "hello"]), "OK");
    assert_eq!(cli(2, &["GET", "greeting"]), "hello");
    assert_eq!(cli(3, &["INCR", "n"]), "1");
    assert_eq!(cli(1, &["INCR", "n"]), "2");
    assert_eq!(cli(2, &["LPUSH", "l", "a", "b"]), "2");
    assert_eq!(cli(3, &["LRANGE", "l", "0", "-1"]), "b\na");
    // Each redis-server lists a set in its own hash order: every host votes it as a set and
    // compares the same digest with the others (a host whose digest differed would leave).
    let members: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    let mut sadd = vec!["SADD", "s"];
    sadd.extend(members.iter().map(String::as_str));
    assert_eq!(cli(1, &sadd), "300");
    for host in 1..=3 {
        let mut listed: Vec<String> = cli(host, &["SMEMBERS", "s"]).lines().map(String::from).collect();
        listed.sort();
        let mut expected = members.clone();
        expected.sort();
        assert_eq!(listed, expected, "host {host}");
    }
    // A transaction through one host runs whole on every host: MULTI, its commands and EXEC
    // travel in one group message.
    let answers = in_ns(&hosts.client_ns(), || {
        let mut c = RespClient::connect(client_addr(2)).expect("connect");
        c.pipeline(&[&["MULTI"], &["INCR", "n"], &["SMEMBERS", "s"], &["INCR", "n"], &["EXEC"]]).expect("EXEC")
    });
    let exec = String::from_utf8_lossy(&answers[4]);
    assert!(exec.starts_with("*3\r\n:3\r\n*300\r\n") && exec.ends_with(":4\r\n"), "{exec}");
    assert_eq!(cli(3, &["GET", "n"]), "4");
    // A message published through one host reaches a subscriber of another: PUBLISH goes
    // through the group, and every host delivers it to its own subscribers.
    let (confirmed, published, message) = in_ns(&hosts.client_ns(), || {
        let mut subscriber = RespClient::connect(client_addr(3)).expect("connect");
        let confirmed = subscriber.call(&["SUBSCRIBE", "news"]).expect("SUBSCRIBE");
        let mut publisher = RespClient::connect(client_addr(1)).expect("connect");
        let published = publisher.call(&["PUBLISH", "news", "hello"]).expect("PUBLISH");
        (confirmed, published, subscriber.reply().expect("the message"))
    });
    assert_eq!(confirmed, b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n");
    assert_eq!(published, b":0\r\n", "host 1 has no subscriber of its own");
    assert_eq!(message, b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n");
    // A request larger than one group message is refused with the reason; the session goes on
    // and the host keeps serving.
    let (big, after) = in_ns(&hosts.client_ns(), || {
        let mut c = RespClient::connect(client_addr(1)).expect("connect");
        let value = "v".repeat(2 << 20);
        (c.call(&["SET", "big", &value]).expect("SET big"), c.call(&["GET", "greeting"]).expect("GET"))
    });
    let big = String::from_utf8_lossy(&big);
    assert!(big.starts_with("-ERR resh: the request is") && big.contains("than the group carries"), "{big}");
    assert_eq!(after, b"$5\r\nhello\r\n");
    let benchmarks: Vec<_> = (1..=3)
        .map(|host| {
            hosts
                .command_in(&hosts.client_ns(), "redis-benchmark")
                .args(["-h", &Hosts::addr(host).to_string(), "-p", &PORT.to_string()])
                .args([
                    "-t",
                    "set,get,incr,lpush",
                    "-n",
                    "1000",
                    "-c",
                    "10",
                    "-P",
                    if host == 2 { "8" } else { "1" },
                    "-q",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run redis-benchmark")
        })
        .collect();
    for (k, child) in benchmarks.into_iter().enumerate() {
        let out = child.wait_with_output().expect("redis-benchmark");
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "host {}: {text}", k + 1);
        for test in ["SET", "GET", "INCR", "LPUSH"] {
            assert!(text.contains(&format!("{test}: ")), "host {}: {test}: {text}", k + 1);
        }
        assert!(!text.to_lowercase().contains("error"), "host {}: {text}", k + 1);
    }
    for r in resh.iter().flatten() {
        let status = r.status();
        assert_eq!(status["requests"]["undecidable"], 0, "{status}");
        assert_eq!(status["group"]["role"], "serving", "{status}");
        assert!(status["group"]["malformed_messages"].as_u64() >= Some(5), "the stray messages: {status}");
    }
    assert_one_state(&hosts, &resh);
}

/// Two of one host's three replicas crash at once: the host can no longer execute the group's
/// stream (its replicas form no quorum), so it leaves the group and stops rather than wait or
/// guess; the other hosts serve on.
#[test]
fn a_host_that_loses_the_quorum_of_its_replicas_leaves_and_stops() {
    let _one = one_at_a_time();
    let (hosts, mut resh) = three_hosts();
    let status = resh[1].as_ref().expect("host 2").status();
    let pids: Vec<String> = status["replicas"]
        .as_array()
        .map(|list| list.iter().take(2).filter_map(|r| r["pid"].as_u64().map(|p| p.to_string())).collect())
        .unwrap_or_default();
    assert_eq!(pids.len(), 2, "{status}");
    let killed = std::process::Command::new("kill").arg("-9").args(&pids).status().expect("kill");
    assert!(killed.success());
    stops_with(resh[1].as_mut().expect("host 2"), "fewer local replicas vote than the quorum");
    let answer = in_ns(&hosts.client_ns(), || {
        RespClient::connect(client_addr(1)).and_then(|mut c| c.call(&["SET", "still", "here"])).expect("SET")
    });
    assert_eq!(answer, b"+OK\r\n");
}
