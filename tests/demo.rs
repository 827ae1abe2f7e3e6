//! `resh demo`, the README's first command, end to end: it must show the planted bug outvoted
//! and repaired, and exit 0.
use std::process::Command;

use resh_e2e::binary;

#[test]
fn the_demo_shows_a_bug_outvoted_and_repaired() {
    let out = Command::new(binary("resh"))
        .args(["demo", "--seconds", "3", "--clients", "4"])
        .output()
        .expect("run resh demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "resh demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("wrong answers seen by clients: 0"), "{stdout}");
    assert!(stdout.contains("version rust     state ready       faults: diverged 1"), "{stdout}");
    assert!(stdout.contains("all three versions hold the same state"), "{stdout}");
}

/// `resh demo --web`: nginx, lighttpd and resh-web; the bug planted in resh-web is outvoted,
/// resh-web restarted, and the servers' noise never blamed.
#[test]
fn the_web_demo_shows_a_bug_outvoted_and_no_false_fault() {
    let out = Command::new(binary("resh"))
        .args(["demo", "--web", "--seconds", "3", "--clients", "4"])
        .output()
        .expect("run resh demo --web");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "resh demo --web failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("wrong answers seen by clients: 0; errors: 0"), "{stdout}");
    assert!(stdout.contains("version resh-web  state ready       faults: diverged"), "{stdout}");
    assert!(stdout.contains("version nginx     state ready       faults: none"), "{stdout}");
    assert!(stdout.contains("version lighttpd  state ready       faults: none"), "{stdout}");
}
