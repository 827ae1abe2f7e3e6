//! `dresh-bench`: voted requests per second through three D-RESH hosts against one resh host,
//! the same closed-loop workload, in one run (rounds interleaved), on hosts in network
//! namespaces with a Corosync each (as the multi-host tests set them up). Needs root.
//!
//! Each round starts, in turn: one host (resh in ordered mode, three redis-server replicas, no
//! group) with every connection on it; then three hosts (the same resh with `[group]`, three
//! replicas each) with the connections spread evenly. The clients run in a namespace of their
//! own. It prints requests per second, client latency, the ratio of three hosts to one, and the
//! group's delivery latency (from multicasting a batch to its delivery, as host 1's `/status`
//! reports it: upper bucket bounds).
//!
//! Run with `scripts/bench.sh --dresh` (release build), or
//! `cargo run --release -p resh-e2e --bin dresh-bench -- --help`.
use std::net::SocketAddr;
use std::time::Duration;

use resh::bench::load::{self, LoadResult, LoadSpec, Workload};
use resh_e2e::netns::{in_ns, Hosts};
use resh_e2e::Resh;

const PORT: u16 = 6380;

struct Args {
    realtime: bool,
    seconds: u64,
    rounds: usize,
    connections: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { realtime: false, seconds: 5, rounds: 3, connections: 48 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            it.next().and_then(|v| v.parse().ok()).ok_or_else(|| format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--seconds" => args.seconds = value("--seconds")?.max(1),
            "--rounds" => args.rounds = value("--rounds")?.max(1) as usize,
            "--connections" => args.connections = (value("--connections")?.max(3) as usize / 3) * 3,
            "--realtime" => args.realtime = true,
            "--help" | "-h" => {
                println!("dresh-bench [--seconds N (5)] [--rounds N (3)] [--connections N (48, a multiple of 3)] [--realtime]");
                println!("  --realtime: Corosync at its default realtime priority (three of them then take the");
                println!("              CPUs of one machine from the replicas and resh; the default runs them at");
                println!("              a normal priority, closer to three hosts with CPUs of their own)");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok(args)
}

fn config(i: usize, group: bool) -> String {
    let mut text = format!(
        "listen = \"{}:{PORT}\"\n[vote]\nmode = \"ordered\"\nprotocol = \"resp\"\n[admin]\nlisten = \"127.0.0.1:9100\"\n",
        Hosts::addr(i)
    );
    if group {
        text.push_str("[group]\nengine = \"corosync\"\nname = \"bench\"\nhosts = 3\n");
    }
    for r in 1..=3 {
        text.push_str(&format!(
            "[[replica]]\nname = \"r{r}\"\ncommand = [\"redis-server\", \"--port\", \"{{port}}\", \"--bind\", \"127.0.0.1\", \"--save\", \"\", \"--appendonly\", \"no\"]\n"
        ));
    }
    text
}

/// Runs `connections` split evenly over `hosts`' client addresses, from the clients' namespace.
fn measure(hosts: &Hosts, targets: &[usize], connections: usize, seconds: u64) -> Result<LoadResult, String> {
    let specs: Vec<LoadSpec> = targets
        .iter()
        .map(|&i| LoadSpec {
            addr: SocketAddr::from((Hosts::addr(i), PORT)),
            workload: Workload::Resp { value: 32 },
            connections: connections / targets.len(),
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(seconds),
            requests: None,
        })
        .collect();
    in_ns(&hosts.client_ns(), move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let runs = specs.iter().map(|spec| load::run(spec, || ()));
            let mut total: Option<LoadResult> = None;
            for outcome in futures_join(runs.collect()).await {
                let (result, _, _) = outcome.map_err(|e| e.to_string())?;
                total = Some(match total {
                    None => result,
                    Some(mut t) => {
                        t.requests += result.requests;
                        t.errors += result.errors;
                        let _ = t.latency.add(&result.latency);
                        t.elapsed = t.elapsed.max(result.elapsed);
                        t
                    }
                });
            }
            total.ok_or_else(|| "no target".to_string())
        })
    })
}

/// Awaits every future, concurrently, in order.
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

fn serving(resh: &Resh) -> bool {
    resh.get("/status")
        .ok()
        .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
        .is_some_and(|s| s["group"]["role"] == "serving")
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("dresh-bench: {e}");
            std::process::exit(2);
        }
    };
    let mut hosts = Hosts::with_priority(3, args.realtime);
    for i in 1..=3 {
        hosts.start_corosync(i);
    }
    let mut one = Vec::new();
    let mut three = Vec::new();
    let mut delivery = Vec::new();
    for round in 1..=args.rounds {
        {
            let single = Resh::start_in(&hosts.ns(1), &config(1, false));
            match measure(&hosts, &[1], args.connections, args.seconds) {
                Ok(r) => one.push(r),
                Err(e) => eprintln!("round {round}, one host: {e}"),
            }
            drop(single);
        }
        {
            let group: Vec<Resh> = (1..=3).map(|i| Resh::start_in(&hosts.ns(i), &config(i, true))).collect();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !group.iter().all(serving) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            match measure(&hosts, &[1, 2, 3], args.connections, args.seconds) {
                Ok(r) => three.push(r),
                Err(e) => eprintln!("round {round}, three hosts: {e}"),
            }
            if let Some(status) =
                group[0].get("/status").ok().and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            {
                delivery.push(status["group"]["delivery_latency_ms"].clone());
            }
        }
        eprintln!(
            "round {round}: one host {:.0} req/s, three hosts {:.0} req/s",
            one.last().map_or(0.0, LoadResult::throughput),
            three.last().map_or(0.0, LoadResult::throughput)
        );
    }
    let median = |runs: &[LoadResult]| {
        let mut v: Vec<f64> = runs.iter().map(LoadResult::throughput).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let quantile = |runs: &[LoadResult], q: f64| {
        let mut h = load::histogram();
        for r in runs {
            let _ = h.add(&r.latency);
        }
        h.value_at_quantile(q) as f64 / 1e6
    };
    let errors: u64 = one.iter().chain(&three).map(|r| r.errors).sum();
    let (m1, m3) = (median(&one), median(&three));
    println!(
        "workload: RESP SET/GET (32 B values), {} connections, {} s per run, {} rounds",
        args.connections, args.seconds, args.rounds
    );
    println!("{:<12} {:>10} {:>10} {:>10}", "target", "req/s", "p50 ms", "p99 ms");
    println!("{:<12} {:>10.0} {:>10.2} {:>10.2}", "one host", m1, quantile(&one, 0.5), quantile(&one, 0.99));
    println!("{:<12} {:>10.0} {:>10.2} {:>10.2}", "three hosts", m3, quantile(&three, 0.5), quantile(&three, 0.99));
    println!("ratio three hosts / one host: {:.2}x", if m1 > 0.0 { m3 / m1 } else { 0.0 });
    println!(
        "group delivery latency per round (host 1, bucket upper bounds, ms): {}",
        serde_json::Value::Array(delivery)
    );
    if errors > 0 {
        println!("connections that failed: {errors}");
    }
}
