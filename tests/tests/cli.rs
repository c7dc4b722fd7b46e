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

/// The commands `--help` lists.
fn commands() -> Vec<String> {
    let help = bpfkill(&["--help"]);
    String::from_utf8_lossy(&help.stdout)
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|n| n != "help")
        .collect()
}

#[test]
fn completions_and_man_pages_cover_every_command() {
    let commands = commands();
    assert!(commands.len() >= 10, "{commands:?}");
    for shell in ["bash", "zsh", "fish"] {
        let out = bpfkill(&["completions", shell]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        for c in &commands {
            assert!(script.contains(c.as_str()), "{shell} completion lacks {c}");
        }
    }
    let out = bpfkill(&["man"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // roff escapes hyphens as `\-`.
    let page = String::from_utf8_lossy(&out.stdout).replace("\\-", "-");
    assert!(
        page.starts_with(".ie") || page.contains(".TH bpfkill 8"),
        "{page}"
    );
    for c in &commands {
        assert!(
            page.contains(&format!("bpfkill-{c}(8)")),
            "bpfkill(8) does not refer to {c}"
        );
        let sub = bpfkill(&["man", c]);
        assert_eq!(code(&sub), 0, "{}", text(&sub));
        let sub_page = String::from_utf8_lossy(&sub.stdout).replace("\\-", "-");
        assert!(
            sub_page.contains(&format!(".TH bpfkill-{c} 8")),
            "bpfkill-{c}(8): {}",
            text(&sub)
        );
    }
    let bad = bpfkill(&["man", "nosuch"]);
    assert_ne!(code(&bad), 0);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("no command \"nosuch\""),
        "{}",
        text(&bad)
    );
}
