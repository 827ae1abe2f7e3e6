//! HTTP mode with three web servers written independently: nginx, lighttpd and our resh-web
//! (the web demo's setup, `resh::webdemo::prepare`), with real clients: curl and wrk.
//!
//! - The right pages, API answers and a 2 MB file come through; a 404 all three give passes
//!   through; under wrk's load, no request fails and nobody is blamed for the servers' noise
//!   (`Server`, `Date`, `ETag`, `Last-Modified`, `Accept-Ranges`, header case and order).
//! - A file changed on one server is outvoted and that server blamed in `/metrics`; so is the
//!   planted API bug of resh-web.
//! - A replica that floods (a 64 MiB body against a 1 MiB cap) or trickles its body is
//!   bounded in memory and time, outvoted and reported.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use resh_e2e::{binary, Resh, TempDir};

const WAIT: Duration = Duration::from_secs(20);

/// The web demo's three versions behind resh, `web_args` given to resh-web, `vote` added to
/// the `[vote]` table and `extra` TOML appended to the configuration.
fn start(dir: &TempDir, web_args: &[&str], vote: &str, extra: &str) -> Resh {
    for program in ["/usr/sbin/nginx", "/usr/sbin/lighttpd"] {
        assert!(Path::new(program).is_file(), "{program} is missing: scripts/test.sh installs it");
    }
    let config = resh::webdemo::prepare(dir.path(), &binary("resh-web"), web_args).expect("prepare the web demo");
    let config = config.replacen("protocol = \"http\"\n", &format!("protocol = \"http\"\n{vote}\n"), 1);
    Resh::start(&format!("{config}{extra}"))
}

fn site_file(name: &str) -> Vec<u8> {
    resh::webdemo::SITE.iter().find(|(p, _)| *p == name).map(|(_, t)| t.as_bytes().to_vec()).expect("a site file")
}

/// `curl` through resh: (status, body).
fn curl(resh: &Resh, path: &str, out: &Path) -> (u16, Vec<u8>) {
    let url = format!("http://{}{path}", resh.clients);
    let result = Command::new("curl")
        .args([
            "-s",
            "--noproxy",
            "*",
            "-o",
            &out.display().to_string(),
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
            &url,
        ])
        .output()
        .expect("run curl");
    let status = String::from_utf8_lossy(&result.stdout).trim().parse().unwrap_or(0);
    (status, std::fs::read(out).unwrap_or_default())
}

fn no_faults(resh: &Resh) {
    for name in ["nginx", "lighttpd", "resh-web"] {
        assert_eq!(
            resh_e2e::fault_total(&resh.replica(name)),
            0,
            "no false fault of {name}: {}\n{}",
            resh.status(),
            resh.log()
        );
    }
}

/// wrk for `seconds` over the site's pages and API (a Lua script cycles through them): its
/// report, checked for failed and non-2xx requests.
fn wrk(resh: &Resh, dir: &Path, seconds: u32) -> String {
    let script = dir.join("paths.lua");
    std::fs::write(
        &script,
        "local paths = {\"/\", \"/about.html\", \"/style.css\", \"/api/products\", \"/api/products/3\", \"/api/products/5\"}\n\
         local i = 0\n\
         request = function()\n  i = i + 1\n  return wrk.format(\"GET\", paths[(i % #paths) + 1])\nend\n",
    )
    .expect("write the wrk script");
    let url = format!("http://{}/", resh.clients);
    let out = Command::new("wrk")
        .args(["-t2", "-c8", &format!("-d{seconds}s"), "-s"])
        .arg(&script)
        .arg(&url)
        .output()
        .expect("run wrk (scripts/test.sh installs it)");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "wrk failed: {report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("Requests/sec:"), "{report}");
    assert!(!report.contains("Non-2xx"), "wrk saw failed requests: {report}\n{}", resh.log());
    assert!(!report.contains("Socket errors"), "wrk saw socket errors: {report}\n{}", resh.log());
    report
}

#[test]
fn nginx_lighttpd_and_ours_agree_under_curl_and_wrk_and_a_changed_file_is_outvoted() {
    let dir = TempDir::new("http-nversion");
    let resh = start(&dir, &[], "", "");
    let out = dir.path().join("out");
    for (path, file) in [
        ("/", "index.html"),
        ("/about.html", "about.html"),
        ("/style.css", "style.css"),
        ("/api/products", "api/products.json"),
        ("/api/products/3", "api/products/3.json"),
    ] {
        assert_eq!(curl(&resh, path, &out), (200, site_file(file)), "GET {path}");
    }
    let (status, body) = curl(&resh, &format!("/{}", resh::webdemo::CATALOGUE), &out);
    assert_eq!(status, 200);
    assert!(body == resh::webdemo::catalogue(), "the 2 MB file came through changed ({} bytes)", body.len());
    assert_eq!(curl(&resh, "/no/such/page", &out), (404, site_file("404.html")), "a 404 all give passes through");
    assert_eq!(curl(&resh, "/api/products/99", &out).0, 404);
    let head = Command::new("curl")
        .args(["-sI", "--noproxy", "*", "--max-time", "20"])
        .arg(format!("http://{}/{}", resh.clients, resh::webdemo::CATALOGUE))
        .output()
        .expect("curl -I");
    let text = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200") && text.contains("content-length: 2000000"), "{text}");
    no_faults(&resh);

    let report = wrk(&resh, dir.path(), 3);
    no_faults(&resh);
    let released: f64 = resh
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix("resh_requests_total{outcome=\"released\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(released > 100.0, "wrk's requests were voted: {released}\n{report}");

    // lighttpd's copy of a page changes (to a text of the same length: lighttpd may still
    // hold the file's old size for a second, and would cut a shorter file's answer short,
    // which is blamed too, as closed_early): outvoted, and lighttpd is blamed.
    let changed = String::from_utf8_lossy(&site_file("about.html")).replace("<h1>About</h1>", "<h1>Abort</h1>");
    std::fs::write(dir.path().join("lighttpd/site/about.html"), changed).expect("write");
    assert_eq!(curl(&resh, "/about.html", &out), (200, site_file("about.html")), "the majority's page");
    resh.wait_until("lighttpd is blamed", WAIT, |r| r.faults("lighttpd", "diverged") >= 1);
    let metrics = resh.metrics();
    assert!(metrics.contains("resh_replica_faults_total{replica=\"lighttpd\",kind=\"diverged\"} 1\n"), "{metrics}");
    for name in ["nginx", "resh-web"] {
        assert_eq!(resh_e2e::fault_total(&resh.replica(name)), 0, "{}", resh.status());
    }
}

#[test]
fn the_planted_api_bug_of_one_version_is_outvoted_and_blamed() {
    let dir = TempDir::new("http-nversion-bug");
    let resh = start(&dir, &["--fault", "wrong-price"], "", "");
    let out = dir.path().join("out");
    assert_eq!(curl(&resh, "/api/products/3", &out), (200, site_file("api/products/3.json")));
    resh.wait_until("resh-web is blamed", WAIT, |r| r.faults("resh-web", "diverged") == 1);
    assert!(resh.log().contains("its response differs from the agreed one: body"), "{}", resh.log());
    assert!(resh.metrics().contains("resh_replica_faults_total{replica=\"resh-web\",kind=\"diverged\"} 1\n"));
    for name in ["nginx", "lighttpd"] {
        assert_eq!(resh_e2e::fault_total(&resh.replica(name)), 0, "{}", resh.status());
    }
}

/// resh-web answers the API with a 64 MiB body; resh holds at most 1 MiB of a body: the
/// others' answer is released, resh-web is blamed, and resh's memory stays far below what
/// holding the flood would take.
#[test]
fn a_replica_that_floods_its_body_is_bounded_outvoted_and_reported() {
    let dir = TempDir::new("http-nversion-flood");
    let resh = start(&dir, &["--fault", "oversized"], "", "[http]\nmax_body_bytes = 1048576\n");
    let out = dir.path().join("out");
    for _ in 0..3 {
        assert_eq!(curl(&resh, "/api/products/2", &out), (200, site_file("api/products/2.json")));
    }
    // Its body differs from the others' (it is digested whole, not held).
    resh.wait_until("resh-web is blamed", WAIT, |r| r.faults("resh-web", "diverged") >= 1);
    let (_, peak) = resh.memory();
    assert!(peak < 48 << 20, "resh's peak memory {peak} bytes: the flood was held");
    for name in ["nginx", "lighttpd"] {
        assert_eq!(resh_e2e::fault_total(&resh.replica(name)), 0, "{}", resh.status());
    }
    // The pages, which resh-web answers rightly, still agree three ways.
    assert_eq!(curl(&resh, "/", &out), (200, site_file("index.html")));
}

/// resh-web's API bodies trickle (64 bytes every 200 ms, for two minutes): the client gets the
/// others' answer once they agree and the lag timeout passes, and resh-web is reported late.
#[test]
fn a_replica_whose_body_trickles_is_reported_late_and_the_client_served() {
    let dir = TempDir::new("http-nversion-slow");
    let resh = start(&dir, &["--fault", "slow-body"], "lag_timeout_ms = 500", "");
    let out = dir.path().join("out");
    let started = Instant::now();
    assert_eq!(curl(&resh, "/api/products/4", &out), (200, site_file("api/products/4.json")));
    assert!(started.elapsed() < Duration::from_secs(5), "served after {:?}", started.elapsed());
    resh.wait_until("resh-web is reported late", WAIT, |r| r.faults("resh-web", "late") == 1);
    for name in ["nginx", "lighttpd"] {
        assert_eq!(resh_e2e::fault_total(&resh.replica(name)), 0, "{}", resh.status());
    }
}
