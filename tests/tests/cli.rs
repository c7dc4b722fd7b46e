//! Command-line behaviour that needs no privileges: usage errors and exit codes.

use bpfkill_tests::{bpfkill_bin, code, text};
use std::process::Command;

fn bpfkill(args: &[&str]) -> std::process::Output {
    let bin = bpfkill_bin();
    if !bin.is_file() {
        panic!(
            "{} is missing: build it first (`cargo build -p bpfkill`)",
            bin.display()
        );
    }
    Command::new(bin)
        .args(args)
        .env("BPFKILL_PIN_DIR", "/nonexistent/bpfkill-cli-test")
        .output()
        .expect("run bpfkill")
}

#[test]
fn unknown_signal_is_a_usage_error() {
    let out = bpfkill(&["-s", "SIGFOO", "--service", "x"]);
    assert_eq!(code(&out), 64, "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown signal"));
}

#[test]
fn no_target_is_a_usage_error() {
    let out = bpfkill(&["-s", "KILL"]);
    assert_eq!(code(&out), 64, "{}", text(&out));
}

#[test]
fn not_loaded_is_69() {
    let out = bpfkill(&["status"]);
    assert_eq!(code(&out), 69, "{}", text(&out));
    let out = bpfkill(&["-s", "KILL", "--service", "x"]);
    assert_eq!(code(&out), 69, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one-line error expected: {err}");
}

#[test]
fn list_signals_and_help() {
    let out = bpfkill(&["-l"]);
    assert_eq!(code(&out), 0);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains(" 9 SIGKILL") && s.contains("SIGRTMIN+3"), "{s}");
    let out = bpfkill(&["--help"]);
    assert_eq!(code(&out), 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Exit codes"));
}
