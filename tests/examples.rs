//! The example configurations in `examples/` are valid, warn about nothing, and serve what
//! they say they serve (run from the repository root, as their comments say, on free ports).
//! `examples/campaign.toml` is checked by `tests/campaign.rs`.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use resh_e2e::{binary, workspace, Resh, RespClient};

/// `resh check` on an example: it passes as it is, and without a warning once its binaries are
/// where it says (on a fresh clone `target/release/` is empty: the warning says so).
fn checks_clean(name: &str) {
    let check = |path: &std::path::Path| {
        let out = Command::new(binary("resh")).args(["check", "-c"]).arg(path).output().expect("run resh check");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, stderr) = check(&workspace().join("examples").join(name));
    assert!(ok, "{name}: {stderr}");
    let dir = resh_e2e::TempDir::new("example");
    let runnable_path = dir.path().join(name);
    std::fs::write(&runnable_path, runnable(name)).expect("write");
    let (ok, stderr) = check(&runnable_path);
    assert!(ok && !stderr.contains("warning"), "{name}: {stderr}");
}

/// An example as `resh run` would take it, on free ports and with the test profile's binaries.
fn runnable(name: &str) -> String {
    let text = std::fs::read_to_string(workspace().join("examples").join(name)).expect("read example");
    let bindir = binary("resh").parent().expect("binary dir").display().to_string();
    text.replace("\"127.0.0.1:8080\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:6380\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:9090\"", "\"127.0.0.1:0\"")
        .replace("\"target/release/", &format!("\"{bindir}/"))
        // Relative paths are the repository's: the replicas start in it.
        .replace("\"demo/", &format!("\"{}/demo/", workspace().display()))
        .replace("\"examples/", &format!("\"{}/examples/", workspace().display()))
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n").expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    answer
}

#[test]
fn web_stream_example_serves_the_site() {
    checks_clean("web-stream.toml");
    let resh = Resh::start(&runnable("web-stream.toml"));
    let page = std::fs::read_to_string(workspace().join("examples/site/index.html")).expect("page");
    for _ in 0..3 {
        let answer = http_get(resh.clients, "/");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(&page), "{answer}");
    }
    let missing = http_get(resh.clients, "/missing");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    // The last session ends once every replica's answer was checked to its end.
    resh.wait_until("four sessions agreed", Duration::from_secs(20), |r| r.status()["verdicts"]["agreed"] == 4);
    assert_eq!(resh_e2e::fault_total(&resh.replica("web-1")), 0);
}

#[test]
fn redis_ordered_example_serves_three_versions() {
    checks_clean("redis-ordered.toml");
    let resh = Resh::start(&runnable("redis-ordered.toml"));
    let mut client = RespClient::connect(resh.clients).expect("connect");
    assert_eq!(client.call(&["SET", "greeting", "hello"]).expect("SET"), b"+OK\r\n");
    assert_eq!(client.call(&["GET", "greeting"]).expect("GET"), b"$5\r\nhello\r\n");
    assert_eq!(client.call(&["INCR", "visits"]).expect("INCR"), b":1\r\n");
    for name in ["rust", "python", "threads"] {
        assert_eq!(resh.replica(name)["state"], "ready");
    }
}
