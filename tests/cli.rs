//! The `resh` command line: configuration errors are named by key, never a panic.
use std::process::Command;

use resh_e2e::{binary, TempDir};

fn check(config: &str) -> (i32, String, String) {
    let dir = TempDir::new("cli");
    let path = dir.path().join("resh.toml");
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(binary("resh")).arg("check").arg("-c").arg(&path).output().expect("run resh check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_prints_the_effective_configuration() {
    let (code, stdout, stderr) = check("[[replica]]\nname = \"a\"\naddress = \"127.0.0.1:7001\"\n");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("quorum = 1"), "{stdout}");
    assert!(stdout.contains("vote_timeout_ms = 2000"), "{stdout}");
}

#[test]
fn a_bad_config_names_the_key_and_the_reason() {
    let (code, _, stderr) = check("[[replica]]\nname = \"a\"\ncommand = []\n[[replica]]\nname = \"b\"\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("replica[0].command: must not be empty"), "{stderr}");
    assert!(stderr.contains("replica[1]: set `command`"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_typo_is_not_silently_ignored() {
    let (code, _, stderr) = check("[vote]\nquorom = 2\n[[replica]]\nname = \"a\"\naddress = \"x:1\"\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown field `quorom`"), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = Command::new(binary("resh")).args(["run", "-c", "/nonexistent/resh.toml"]).output().expect("run resh");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/resh.toml") && stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn help_describes_every_command() {
    let out = Command::new(binary("resh")).arg("--help").output().expect("run resh --help");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for word in ["run", "check", "--log"] {
        assert!(text.contains(word), "{text}");
    }
}

#[test]
fn check_warns_about_likely_mistakes() {
    let (code, _, stderr) = check(
        "[[replica]]\nname = \"a\"\ncommand = [\"redis-server\", \"--port\", \"6379\"]\n\
         [[replica]]\nname = \"b\"\ncommand = [\"/opt/nowhere/server\", \"{port}\"]\n\
         [[replica]]\nname = \"c\"\naddress = \"127.0.0.1:7001\"\n\
         [[replica]]\nname = \"d\"\naddress = \"127.0.0.1:7001\"\n\
         [[replica]]\nname = \"e\"\naddress = \"127.0.0.1:7002\"\n",
    );
    assert_eq!(code, 0, "warnings do not fail a check: {stderr}");
    assert!(stderr.contains("warning: replica[0].command: has no {port}"), "{stderr}");
    assert!(stderr.contains("warning: replica[1].command: /opt/nowhere/server does not exist"), "{stderr}");
    assert!(stderr.contains("warning: replica[3].address: 127.0.0.1:7001 is replica[2]'s address too"), "{stderr}");
}
