//! End-to-end tests of HTTP mode (`vote.protocol = "http"`) with real clients (curl) and real
//! web servers (python3's http.server, whose `Date` and `Last-Modified` differ between
//! replicas): answers agree on what counts, a replica that serves a changed file is outvoted
//! and blamed, and with every header counted the error says which header differed.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use resh_e2e::{payload, Resh, TempDir};

const WAIT: Duration = Duration::from_secs(20);

/// Three sites with the same files; `site(i)` is replica i's directory.
struct Sites {
    dir: TempDir,
}

impl Sites {
    fn new() -> Sites {
        let dir = TempDir::new("http-sites");
        let big = payload(2_000_000, 7);
        for i in 0..3 {
            let site = dir.path().join(format!("site{i}"));
            std::fs::create_dir_all(site.join("api")).expect("site dir");
            std::fs::write(site.join("index.html"), b"<h1>hello</h1>\n").expect("write");
            std::fs::write(site.join("api/item.json"), br#"{"id": 7, "name": "seven"}"#).expect("write");
            std::fs::write(site.join("big.bin"), &big).expect("write");
        }
        Sites { dir }
    }

    fn site(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("site{i}"))
    }

    /// A resh configuration over python3 http.server replicas of the three sites.
    fn config(&self, http: &str) -> String {
        let mut text = format!(
            "listen = \"127.0.0.1:0\"\n[vote]\nprotocol = \"http\"\n[http]\n{http}\n[admin]\nlisten = \"127.0.0.1:0\"\n"
        );
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            text.push_str(&format!(
                "[[replica]]\nname = \"{name}\"\ncommand = [\"python3\", \"-m\", \"http.server\", \"--bind\", \"127.0.0.1\", \"--directory\", {:?}, \"{{port}}\"]\n",
                self.site(i).display().to_string()
            ));
        }
        text
    }
}

/// `curl` through resh: (status, body).
fn curl(resh: &Resh, path: &str, out: &Path) -> (u16, Vec<u8>) {
    let url = format!("http://{}{path}", resh.clients);
    let result = Command::new("curl")
        .args(["-s", "-o", &out.display().to_string(), "-w", "%{http_code}", "--max-time", "20", &url])
        .output()
        .expect("run curl");
    let status = String::from_utf8_lossy(&result.stdout).trim().parse().unwrap_or(0);
    (status, std::fs::read(out).unwrap_or_default())
}

#[test]
fn diverse_answers_agree_a_changed_file_is_outvoted_and_its_server_blamed() {
    let sites = Sites::new();
    // Replica c serves a changed page (a planted difference).
    std::fs::write(sites.site(2).join("index.html"), b"<h1>HELLO</h1>\n").expect("write");
    let resh = Resh::start(&sites.config(""));
    let out = sites.dir.path().join("out");
    let (status, body) = curl(&resh, "/api/item.json", &out);
    assert_eq!((status, body.as_slice()), (200, &br#"{"id": 7, "name": "seven"}"#[..]));
    let (status, body) = curl(&resh, "/big.bin", &out);
    assert_eq!(status, 200);
    assert!(body == payload(2_000_000, 7), "the 2 MB file came through changed ({} bytes)", body.len());
    let (status, _) = curl(&resh, "/no/such/page", &out);
    assert_eq!(status, 404, "a 404 every replica gives is the service's answer");
    // HEAD: no body, and the length of the one it stands for.
    let url = format!("http://{}/big.bin", resh.clients);
    let head = Command::new("curl").args(["-sI", "--max-time", "20", &url]).output().expect("curl -I");
    let text = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200") && text.contains("content-length: 2000000"), "{text}");
    assert_eq!(resh.status()["mode"], "http");
    for name in ["a", "b", "c"] {
        assert_eq!(resh_e2e::fault_total(&resh.replica(name)), 0, "no false fault: {}", resh.status());
    }
    let (status, body) = curl(&resh, "/index.html", &out);
    assert_eq!((status, body.as_slice()), (200, &b"<h1>hello</h1>\n"[..]), "the majority's page");
    resh.wait_until("c is blamed", WAIT, |r| r.faults("c", "diverged") == 1);
    assert!(resh.metrics().contains("resh_replica_faults_total{replica=\"c\",kind=\"diverged\"} 1\n"));
    assert!(resh.log().contains("its response differs from the agreed one: body"), "{}", resh.log());
}

/// With every header counted, the replicas' `Last-Modified` headers (each site's file was
/// written at its own time) are noise resh cannot vote over: the client gets a 502 that names
/// the header, and nobody is blamed for what every replica does.
#[test]
fn counting_every_header_names_the_one_that_differs() {
    let sites = Sites::new();
    for (i, when) in ["200001010000", "200002020000", "200003030000"].iter().enumerate() {
        let file = sites.site(i).join("api/item.json");
        let touched = Command::new("touch").args(["-t", when]).arg(&file).status().expect("touch");
        assert!(touched.success());
    }
    let resh = Resh::start(&sites.config("count_all_headers = true"));
    let out = sites.dir.path().join("out");
    let (status, body) = curl(&resh, "/api/item.json", &out);
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 502, "{text}");
    // The first difference in name order is named: `date`, if the replicas answered across a
    // second's boundary (seen once in a run), else `last-modified`.
    assert!(text.contains("header last-modified") || text.contains("header date"), "{text}");
    for name in ["a", "b", "c"] {
        assert_eq!(resh_e2e::fault_total(&resh.replica(name)), 0, "{}", resh.status());
    }
    // By default Last-Modified is noise: the same request is answered.
    drop(resh);
    let resh = Resh::start(&sites.config(""));
    assert_eq!(curl(&resh, "/api/item.json", &out).0, 200);
}

/// A replica that answers with what is not HTTP at all is outvoted and blamed; the client gets
/// the others' answer. A request body beyond http.max_request_bytes is refused with 413.
#[test]
fn a_replica_that_answers_garbage_is_blamed_and_limits_hold() {
    let sites = Sites::new();
    let garbage = "import socket,sys\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('127.0.0.1',int(sys.argv[1])))\ns.listen()\nwhile True:\n    c,_=s.accept()\n    c.recv(65536)\n    c.sendall(b'NOT HTTP AT ALL\\r\\n\\r\\n')\n    c.close()\n";
    let script = sites.dir.path().join("garbage.py");
    std::fs::write(&script, garbage).expect("write");
    let config = sites.config("max_request_bytes = 1000").replacen(
        &format!("command = [\"python3\", \"-m\", \"http.server\", \"--bind\", \"127.0.0.1\", \"--directory\", {:?}, \"{{port}}\"]", sites.site(2).display().to_string()),
        &format!("command = [\"python3\", {:?}, \"{{port}}\"]", script.display().to_string()),
        1,
    );
    assert!(config.contains("garbage.py"));
    let resh = Resh::start(&config);
    let out = sites.dir.path().join("out");
    let (status, body) = curl(&resh, "/index.html", &out);
    assert_eq!((status, body.as_slice()), (200, &b"<h1>hello</h1>\n"[..]));
    resh.wait_until("c is blamed", WAIT, |r| r.faults("c", "diverged") == 1);
    for name in ["a", "b"] {
        assert_eq!(resh_e2e::fault_total(&resh.replica(name)), 0, "{}", resh.status());
    }
    let big = sites.dir.path().join("big-request");
    std::fs::write(&big, vec![b'x'; 5000]).expect("write");
    let url = format!("http://{}/index.html", resh.clients);
    let posted = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", "--data-binary"])
        .arg(format!("@{}", big.display()))
        .arg(&url)
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&posted.stdout), "413");
}

/// `GET path` on an open connection, read to the end of its response: (status, body).
fn get(stream: &mut std::net::TcpStream, path: &str) -> (u16, Vec<u8>) {
    resh_e2e::http_request(stream, "GET", path, b"")
}

/// Every replica stalls alike (SIGSTOP): the client gets a 504 after http.request_timeout_ms,
/// nobody is blamed, and once they go on, the next request on the same connection is answered
/// (the replicas are reached afresh; what they owed for the first request counts for nothing).
#[test]
fn all_replicas_slow_alike_is_a_504_and_no_fault() {
    let sites = Sites::new();
    let resh = Resh::start(&sites.config("request_timeout_ms = 1000"));
    let pids: Vec<u64> = ["a", "b", "c"].iter().map(|n| resh.replica(n)["pid"].as_u64().expect("pid")).collect();
    let mut client = std::net::TcpStream::connect(resh.clients).expect("connect");
    client.set_read_timeout(Some(WAIT)).expect("timeout");
    assert_eq!(get(&mut client, "/index.html"), (200, b"<h1>hello</h1>\n".to_vec()));
    // The client has its answer once two agree; the third may still be answering. Let it
    // finish: one stopped while the others had answered would be late, rightly.
    std::thread::sleep(Duration::from_millis(300));
    for pid in &pids {
        resh_e2e::signal_pid(*pid, libc::SIGSTOP).expect("SIGSTOP");
    }
    let started = std::time::Instant::now();
    let (status, body) = get(&mut client, "/index.html");
    assert_eq!(status, 504, "{}", String::from_utf8_lossy(&body));
    assert!(started.elapsed() < Duration::from_secs(5));
    for pid in &pids {
        resh_e2e::signal_pid(*pid, libc::SIGCONT).expect("SIGCONT");
    }
    assert_eq!(get(&mut client, "/api/item.json"), (200, br#"{"id": 7, "name": "seven"}"#.to_vec()));
    for name in ["a", "b", "c"] {
        assert_eq!(resh_e2e::fault_total(&resh.replica(name)), 0, "{}", resh.status());
    }
}

/// A client that asks for a 12 MB file and never reads it is cut off after
/// session.idle_timeout_ms of taking no output: it cannot hold its session (and the file held
/// for it) for ever. A client that reads slowly is served whole.
#[test]
fn a_client_that_never_reads_is_timed_out_and_a_slow_one_is_served() {
    use std::io::Write;
    let sites = Sites::new();
    // More than the kernel's socket buffers hold, so that resh's writes do wait.
    let huge = payload(12_000_000, 9);
    for i in 0..3 {
        std::fs::write(sites.site(i).join("huge.bin"), &huge).expect("write");
    }
    // An idle limit the slow reader's download (about 8 s) outlasts, with room for a loaded
    // machine's pauses.
    let resh = Resh::start(&sites.config("").replace("[admin]", "[session]\nidle_timeout_ms = 5000\n[admin]"));
    let mut stalled = std::net::TcpStream::connect(resh.clients).expect("connect");
    stalled.write_all(b"GET /huge.bin HTTP/1.1\r\nHost: test\r\n\r\n").expect("send");
    resh.wait_until("the stalled client is cut off", WAIT, |r| {
        r.log().contains("idle (nothing read or written) for session.idle_timeout_ms")
    });
    let out = sites.dir.path().join("out");
    let url = format!("http://{}/huge.bin", resh.clients);
    let slow = Command::new("curl")
        .args(["-s", "-o", &out.display().to_string(), "-w", "%{http_code}", "--limit-rate", "1500k", &url])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&slow.stdout), "200");
    let got = std::fs::read(&out).expect("read");
    assert!(got == huge, "the slow client got {} bytes: {}", got.len(), resh.log());
    drop(stalled);
}

/// A client that sends part of a request body and stops is cut off after
/// session.idle_timeout_ms, like one that takes no output.
#[test]
fn a_client_that_stops_sending_its_request_is_timed_out() {
    use std::io::{Read, Write};
    let sites = Sites::new();
    let resh = Resh::start(&sites.config("").replace("[admin]", "[session]\nidle_timeout_ms = 1000\n[admin]"));
    let mut client = std::net::TcpStream::connect(resh.clients).expect("connect");
    client.write_all(b"POST /index.html HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\nonly part").expect("send");
    client.set_read_timeout(Some(WAIT)).expect("timeout");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
    assert!(started.elapsed() < Duration::from_secs(10), "not cut off: {:?}", started.elapsed());
    let text = String::from_utf8_lossy(&rest);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 400"), "{text}");
}

/// A service with noise in every part: a JSON field and a text timestamp that change with
/// every answer, a Cache-Control header one replica sets otherwise, a request id. Voted as it
/// is, no quorum forms (502); `resh http-noise` samples the replicas through the admin API's
/// addresses and proposes masks; with its snippet, the same requests are answered.
#[test]
fn http_noise_proposes_masks_with_which_the_replicas_agree() {
    let dir = TempDir::new("http-noise");
    let script = dir.path().join("noisy.py");
    std::fs::write(
        &script,
        r#"import datetime, http.server, json, sys, time, uuid
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path.startswith("/api"):
            body = json.dumps({"id": 1, "name": "one", "meta": {"at": time.time_ns()}}).encode()
            kind = "application/json"
        else:
            body = ("<p>Rendered at %s for you</p>\n" % datetime.datetime.now().strftime("%H:%M:%S.%f")).encode()
            kind = "text/html; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Cache-Control", "max-age=" + sys.argv[2])
        self.send_header("X-Request-Id", str(uuid.uuid4()))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#,
    )
    .expect("write");
    let config = |http: &str| {
        let mut text = format!(
            "listen = \"127.0.0.1:0\"\n[vote]\nprotocol = \"http\"\n{http}\n[admin]\nlisten = \"127.0.0.1:0\"\n"
        );
        for (name, max_age) in [("a", "60"), ("b", "60"), ("c", "120")] {
            text.push_str(&format!(
                "[[replica]]\nname = \"{name}\"\ncommand = [\"python3\", {:?}, \"{{port}}\", \"{max_age}\"]\n",
                script.display().to_string()
            ));
        }
        text
    };
    let resh = Resh::start(&config(""));
    let out = dir.path().join("out");
    let (status, body) = curl(&resh, "/api/item", &out);
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    let noise = Command::new(resh_e2e::binary("resh"))
        .args(["http-noise", "--admin", &format!("http://{}", resh.admin), "--rounds", "2", "--pause-ms", "10"])
        .args(["/api/item", "/page"])
        .output()
        .expect("run resh http-noise");
    let report = String::from_utf8_lossy(&noise.stdout).to_string();
    assert!(noise.status.success(), "{report}{}", String::from_utf8_lossy(&noise.stderr));
    assert!(report.contains("x-request-id             not voted, changes between rounds"), "{report}");
    assert!(report.contains("cache-control            VOTED by default"), "{report}");
    let snippet = &report[report.find("[http]").expect("a snippet")..];
    assert!(snippet.contains("\"cache-control\""), "{snippet}");
    assert!(snippet.contains("\"/meta/at\""), "{snippet}");
    assert!(snippet.contains(r"'\d+:\d+:\d+\.\d+'") || snippet.contains(r#""\\d+:\\d+:\\d+\\.\\d+""#), "{snippet}");
    drop(resh);
    let resh = Resh::start(&config(snippet));
    let (status, body) = curl(&resh, "/api/item", &out);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).starts_with(r#"{"id": 1, "name": "one", "meta": {"at": "#));
    let (status, body) = curl(&resh, "/page", &out);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    for name in ["a", "b", "c"] {
        assert_eq!(resh_e2e::fault_total(&resh.replica(name)), 0, "{}", resh.status());
    }
}

/// resh holds at most http.max_held_bytes of response bodies at once: a body beyond what is
/// left is a 503 (resh's own limit), and no replica is blamed; smaller answers still pass.
#[test]
fn the_memory_resh_holds_for_bodies_is_bounded_and_its_own_limit() {
    let sites = Sites::new();
    let resh = Resh::start(&sites.config("max_held_bytes = 100000"));
    let out = sites.dir.path().join("out");
    let (status, body) = curl(&resh, "/big.bin", &out);
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body[..body.len().min(300)]));
    assert!(String::from_utf8_lossy(&body).contains("http.max_held_bytes"));
    assert_eq!(curl(&resh, "/index.html", &out), (200, b"<h1>hello</h1>\n".to_vec()));
    for name in ["a", "b", "c"] {
        assert_eq!(resh_e2e::fault_total(&resh.replica(name)), 0, "{}", resh.status());
    }
}

/// Two of three replicas die under an open connection: its vote cannot decide any more, so
/// the client gets a 503 and the connection is closed (not a 502 per request for ever).
#[test]
fn a_connection_left_with_fewer_replicas_than_the_quorum_is_told_and_closed() {
    use std::io::Read;
    let sites = Sites::new();
    let resh = Resh::start(
        &sites
            .config("")
            .replace("[admin]", "[supervisor]\nrestart_backoff_ms = 60000\nrestart_backoff_max_ms = 60000\n[admin]"),
    );
    let mut client = std::net::TcpStream::connect(resh.clients).expect("connect");
    client.set_read_timeout(Some(WAIT)).expect("timeout");
    assert_eq!(get(&mut client, "/index.html").0, 200);
    for name in ["b", "c"] {
        let pid = resh.replica(name)["pid"].as_u64().expect("pid");
        resh_e2e::signal_pid(pid, libc::SIGKILL).expect("SIGKILL");
    }
    resh.wait_until("b and c are down", WAIT, |r| ["b", "c"].iter().all(|n| r.replica(n)["state"] != "ready"));
    // The first request finds them gone (no quorum for it); after that the connection is told.
    let (mut status, mut body) = get(&mut client, "/index.html");
    if status == 502 {
        (status, body) = get(&mut client, "/index.html");
    }
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("reconnect"), "{}", String::from_utf8_lossy(&body));
    let mut rest = Vec::new();
    let end = client.read_to_end(&mut rest);
    assert!(matches!(end, Ok(0)), "the connection is closed: {end:?}, {} bytes", rest.len());
}
