//! Hostile input and honest reports: names that try to drive the terminal, paths that would
//! hang a reader, absurd durations, missing privileges, and kills whose reports must say
//! what they left out, what the kernel did and what they may have missed.

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use bpfkill_tests::{
    code, is_alive, poll_until, require_privileges, text, unique, wait_gone, Instance, Scratch, Tree,
};

const GONE: Duration = Duration::from_secs(10);
/// A ceiling for work the daemon does after a kill on a slow (emulated) machine, not a delay.
const SLOW: Duration = Duration::from_secs(120);

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn summary(out: &Output) -> serde_json::Value {
    json_lines(out)
        .into_iter()
        .find(|l| l["summary"] == true)
        .unwrap_or_else(|| panic!("no summary: {}", text(out)))
}

/// A root-owned pidfile (mode 0644) holding `pid`.
fn pidfile(dir: &Scratch, pid: u32) -> PathBuf {
    let path = dir.0.join("svc.pid");
    std::fs::write(&path, format!("{pid}\n")).expect("write pidfile");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    path
}

/// No byte of `out` (both streams) may drive a terminal.
fn assert_no_terminal_controls(what: &str, out: &Output) {
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let bad = bytes
            .iter()
            .any(|&b| b == 0x1b || (b < 0x20 && b != b'\n' && b != b'\t'));
        assert!(
            !bad,
            "{what}: raw control bytes on {stream}: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn names_that_drive_a_terminal_are_escaped_in_every_human_output() {
    require_privileges!();
    let inst = Instance::loaded();
    let _daemon = inst.start_daemon("consuming events");
    let service = unique("hostile-name");
    // 15 bytes: clear the screen, then a newline that would start a forged row.
    let evil = "\x1b[2J\nFORGED\x07";
    let tree = inst.run_service(&service, &["double-fork", "--rename", evil]);
    let escapee = tree.pid("escapee");
    tree.settle();

    for args in [
        vec!["ps", "--service", &service],
        vec!["ps", "--service", &service, "--wide"],
        vec!["ps", "--service", &service, "--tree"],
        vec!["-s", "KILL", "--service", &service, "--dry-run"],
        vec!["status"],
    ] {
        let out = inst.run(&args);
        assert_eq!(code(&out), 0, "{args:?}: {}", text(&out));
        assert_no_terminal_controls(&format!("{args:?}"), &out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if args[0] != "status" {
            assert!(
                stdout.contains("\\x1b[2J\\nFORGED\\x07"),
                "{args:?} shows no escaped name: {stdout}"
            );
            assert!(
                !stdout.lines().any(|l| l.starts_with("FORGED")),
                "{args:?}: a forged row: {stdout}"
            );
        }
    }
    // JSON keeps the exact name.
    let entry = inst
        .ps(&service)
        .into_iter()
        .find(|e| e["pid"] == escapee)
        .expect("escapee listed");
    assert_eq!(entry["comm"], evil);

    // The journal's human form, after the kill.
    let exit_skips = inst.skipped_runs("bpfkill_exit");
    let out = inst.run(["-s", "KILL", "--service", &service]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_no_terminal_controls("kill", &out);
    assert!(wait_gone(escapee, GONE));
    let journal = inst.journal_dir.to_str().unwrap().to_string();
    let shown = poll_until(SLOW, || {
        let log = inst.run(["log", "--service", &service, "--journal-dir", &journal]);
        assert_no_terminal_controls("log", &log);
        String::from_utf8_lossy(&log.stdout).contains("comm=\\x1b[2J\\nFORGED\\x07")
    });
    let skipped = inst.skipped_runs("bpfkill_exit").saturating_sub(exit_skips);
    if !shown && skipped > 0 {
        // The renamed comm reaches the journal only with the exit event: a preemptible
        // kernel that skipped exit runs meanwhile may have skipped the escapee's (README's
        // Limits), so this run cannot tell.
        return bpfkill_tests::skip(&format!(
            "the kernel skipped {skipped} exit run(s) during the kill: the escapee's may be one"
        ));
    }
    assert!(shown, "the escapee's exit never showed, escaped, in the log");
}

#[test]
fn paths_that_are_fifos_devices_or_directories_are_refused_at_once() {
    require_privileges!();
    let inst = Instance::loaded();
    let dir = Scratch::new("bpfkill-paths");
    let fifo = dir.0.join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
    let link = dir.0.join("link-to-fifo");
    std::os::unix::fs::symlink(&fifo, &link).expect("symlink");
    // Refused at once: exit 64, saying what the path is not.
    let refused = |args: &[&str]| {
        let out = inst.run(args);
        assert_eq!(code(&out), 64, "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("not a regular file"),
            "{args:?}: {}",
            text(&out)
        );
        out
    };
    let started = Instant::now();
    for path in [&fifo, &link, &PathBuf::from("/dev/zero"), &dir.0] {
        let p = path.to_str().unwrap();
        for args in [
            vec!["-s", "TERM", "--pidfile", p],
            vec!["track", "--service", "x", "--pidfile", p],
        ] {
            let out = refused(&args);
            assert_eq!(
                String::from_utf8_lossy(&out.stderr).lines().count(),
                1,
                "{}",
                text(&out)
            );
        }
    }
    // The journal: a FIFO in place of the journal directory, and of the journal file.
    let out = inst.run(["log", "--journal-dir", fifo.to_str().unwrap()]);
    assert_eq!(code(&out), 64, "{}", text(&out));
    let journal = Scratch::new("bpfkill-fifo-journal");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        journal.0.join("events.jsonl"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
    // ... and a symbolic link to a FIFO in place of the journal file.
    let linked = Scratch::new("bpfkill-linked-journal");
    std::os::unix::fs::symlink(&fifo, linked.0.join("events.jsonl")).expect("symlink");
    for dir in [&journal.0, &linked.0] {
        let dir = dir.to_str().unwrap();
        for command in ["log", "daemon"] {
            let out = inst.run([command, "--journal-dir", dir]);
            assert_eq!(
                code(&out),
                64,
                "{command} on the journal in {dir}: {}",
                text(&out)
            );
        }
    }
    // The configuration: a FIFO, or a link to one, is refused at once (64), as every other
    // path that is not a regular file, by check-config and by the daemon.
    for path in [&fifo, &link] {
        let p = path.to_str().unwrap();
        for args in [
            vec!["check-config", p],
            vec!["daemon", "--no-journal", "--config", p],
        ] {
            refused(&args);
        }
    }
    assert!(started.elapsed() < Duration::from_secs(60), "something blocked");

    // Missing inputs are 66, not internal errors.
    let missing = dir.0.join("missing.pid");
    let out = inst.run(["-s", "TERM", "--pidfile", missing.to_str().unwrap()]);
    assert_eq!(code(&out), 66, "{}", text(&out));
    let out = inst.run(["track", "--service", "x", "--pidfile", missing.to_str().unwrap()]);
    assert_eq!(code(&out), 66, "{}", text(&out));
    let service = unique("nocg");
    let _tree = inst.run_service(&service, &["pause"]);
    let out = inst.run([
        "-s",
        "TERM",
        "--service",
        &service,
        "--cgroup",
        "/sys/fs/cgroup/no-such-cgroup",
    ]);
    assert_eq!(code(&out), 66, "{}", text(&out));
    // One line, the cause said once.
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("does not exist").count(), 1, "{err}");
}

#[test]
fn absurd_durations_are_refused_before_any_signal() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("durations");
    let tree = inst.run_service(&service, &["pause"]);
    let main = tree.pid("pid");
    for args in [
        vec![
            "-s",
            "TERM",
            "--service",
            &service,
            "--timeout",
            "99999999999999999999s",
        ],
        vec![
            "-s",
            "TERM",
            "--service",
            &service,
            "--timeout",
            "18446744073709551615",
        ],
        vec![
            "-s",
            "TERM",
            "--service",
            &service,
            "--retry",
            "TERM/400days/KILL/5",
        ],
        vec!["log", "--since", "99999999999999999999years"],
        // Job mode's durations: refused before the command starts.
        vec![
            "run",
            "--kill-on-exit",
            "--grace",
            "99999999999999999999s",
            "--",
            "true",
        ],
        vec!["run", "--time-limit", "400000000days", "--", "true"],
    ] {
        let out = inst.run(&args);
        assert_eq!(code(&out), 64, "{args:?}: {}", text(&out));
        assert!(is_alive(main), "{args:?} signalled the service");
    }
    let out = inst.run(["log", "--service", "no such/name"]);
    assert_eq!(code(&out), 64, "{}", text(&out));
}

#[test]
fn no_grace_escalates_at_once_and_exits_0_when_all_are_gone() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("nograce");
    let tree = inst.run_service(&service, &["pause", "--ignore-term"]);
    let main = tree.pid("pid");
    let out = inst.run(["-s", "TERM", "--service", &service, "--timeout", "0s", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(summary(&out)["survivors"], 0, "{}", text(&out));
    assert!(!is_alive(main));
}

/// Runs bpfkill as the unprivileged user `nobody`.
fn as_nobody(inst: &Instance, args: &[&str]) -> Output {
    let mut cmd = inst.cmd();
    cmd.args(args).uid(65534).gid(65534);
    cmd.output().expect("run bpfkill as nobody")
}

#[test]
fn without_privileges_every_command_exits_77() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("priv");
    let tree = inst.run_service(&service, &["pause"]);
    let main = tree.pid("pid").to_string();
    let journal = Scratch::new("bpfkill-priv-journal");
    std::fs::set_permissions(&journal.0, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(journal.0.join("events.jsonl"), "").unwrap();
    let journal_dir = journal.0.to_str().unwrap();
    for args in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["ps"],
        vec!["ps", "--service", &service],
        vec!["-s", "KILL", "--service", &service],
        vec!["-s", "KILL", "--pid", &main],
        vec!["track", "--service", "mine", "--pid", &main],
        vec!["run", "--service", "mine", "--", "true"],
        vec!["load"],
        vec!["unload"],
        vec!["reload"],
        vec!["daemon", "--no-journal"],
        vec!["log", "--journal-dir", journal_dir],
        vec!["doctor"],
    ] {
        let out = as_nobody(&inst, &args);
        assert_eq!(code(&out), 77, "{args:?} as nobody: {}", text(&out));
        assert!(
            text(&out).contains("permission denied"),
            "{args:?}: {}",
            text(&out)
        );
    }
    assert!(is_alive(tree.pid("pid")));
    // Tracking is still there: unload as nobody did nothing.
    assert_eq!(inst.status().0, 0);
    // Where nothing is pinned, unload as nobody is still refused, not "nothing pinned".
    let empty = Instance::unloaded();
    let out = as_nobody(&empty, &["unload"]);
    assert_eq!(code(&out), 77, "unload of nothing as nobody: {}", text(&out));
}

#[test]
fn a_pidfile_of_an_adopted_service_reaches_what_the_service_name_does() {
    require_privileges!();
    let inst = Instance::loaded();
    let dir = Scratch::new("bpfkill-adopted");
    // Started outside bpfkill: main (a shell) and a child shell C that, once adopted (its
    // lineage unknown), forks G on request and exits, so G is reparented away from main.
    // (An asynchronous list reads /dev/null as its stdin: C reads the test's pipe as fd 3.)
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("exec 3<&0; sh -c 'read a <&3; sleep 1000 & echo pid=$!' & echo \"ready main=$$ c=$!\"; wait; exec sleep 1001");
    let mut tree = Tree::spawn(cmd);
    let main = tree.pid("main");
    let service = unique("adopted");
    let file = pidfile(&dir, main);
    let out = inst.run([
        "track",
        "--service",
        &service,
        "--pidfile",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let grandchild = tree.fork_child(); // C reads the line, forks G, exits
    assert!(wait_gone(tree.pid("c"), GONE));
    assert!(inst.ps_pids(&service).contains(&grandchild), "G is tagged");

    let out = inst.run(["-s", "KILL", "--pidfile", file.to_str().unwrap(), "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(wait_gone(main, GONE), "main survived");
    assert!(
        wait_gone(grandchild, GONE),
        "the grandchild of unknown lineage survived"
    );
    let _ = tree.child.wait();
}

#[test]
fn a_subtree_kill_says_what_it_left_out_and_does_not_exit_0() {
    require_privileges!();
    let inst = Instance::loaded();
    let dir = Scratch::new("bpfkill-subtree");
    let mut cmd = Command::new(bpfkill_tests::forker_bin());
    cmd.args(["spawn", "2"]);
    let tree = Tree::spawn(cmd);
    let main = tree.pid("pid");
    let service = unique("subtree");
    let out = inst.run(["track", "--service", &service, "--pid", &main.to_string()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let children: Vec<u32> = inst
        .ps_pids(&service)
        .into_iter()
        .filter(|&p| p != main)
        .collect();
    assert_eq!(children.len(), 2, "{children:?}");
    let file = pidfile(&dir, children[0]);
    let out = inst.run([
        "-s",
        "TERM",
        "--pidfile",
        file.to_str().unwrap(),
        "--dry-run",
        "--json",
    ]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert_eq!(
        summary(&out)["left_out"],
        serde_json::json!([children[1]]),
        "{}",
        text(&out)
    );
    let human = inst.run(["-s", "TERM", "--pidfile", file.to_str().unwrap(), "--dry-run"]);
    assert_eq!(code(&human), 2);
    assert!(
        text(&human).contains("left out: 1 process(es)"),
        "{}",
        text(&human)
    );
    assert!(children.iter().all(|&c| is_alive(c)), "a dry run signalled");
    // The children were never reported to the tree: the service kill takes them all.
    let out = inst.run(["-s", "KILL", "--service", &service]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for pid in children.into_iter().chain([main]) {
        assert!(wait_gone(pid, GONE), "{pid} survived");
    }
}

#[test]
fn a_full_tag_map_makes_kill_ps_and_status_say_so() {
    require_privileges!();
    let (inst, service, _tree) = Instance::with_full_tag_map(&[]);
    let (_, status) = inst.status();
    let svc = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == service.as_str())
        .expect("service in status")
        .clone();
    assert_eq!(svc["untagged"], 3, "{status}");
    let human = inst.run(["status"]);
    assert!(text(&human).contains("were never tagged"), "{}", text(&human));
    let ps = inst.run(["ps", "--service", &service]);
    assert!(
        String::from_utf8_lossy(&ps.stderr).contains("were never tagged"),
        "{}",
        text(&ps)
    );
    let out = inst.run(["-s", "KILL", "--service", &service, "--json"]);
    assert_eq!(
        code(&out),
        2,
        "a kill that may have missed processes must exit 2 (partial): {}",
        text(&out)
    );
    assert_eq!(summary(&out)["untagged"], 3, "{}", text(&out));
    let out = inst.run(["-s", "KILL", "--service", &service]);
    assert!(text(&out).contains("were never tagged"), "{}", text(&out));
}

#[test]
fn kernel_kills_count_processes_not_threads() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("threads");
    let tree = inst.run_service(&service, &["threads", "8"]);
    let pid = tree.pid("pid");
    let out = inst.run(["-s", "KILL", "--service", &service, "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let s = summary(&out);
    assert_eq!(s["processes"], 1, "{s}");
    assert!(
        s["kernel_kills"].as_u64().unwrap() <= 1,
        "one process, counted once: {s}"
    );
    assert!(wait_gone(pid, GONE));
}

#[test]
fn two_concurrent_kills_of_one_service_do_not_both_claim_the_kernel_kills() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("twice");
    // Forks without pause: the kernel kills its children as they are born.
    let tree = inst.run_service(&service, &["fork-loop"]);
    let main = tree.pid("pid");
    let (a, b) = std::thread::scope(|s| {
        let kill = || s.spawn(|| inst.run(["-s", "KILL", "--service", &service, "--json"]));
        let (a, b) = (kill(), kill());
        (a.join().unwrap(), b.join().unwrap())
    });
    let (sa, sb) = (summary(&a), summary(&b));
    for (out, s) in [(&a, &sa), (&b, &sb)] {
        assert!(matches!(code(out), 0 | 1), "{}", text(out));
        assert_eq!(s["survivors"], 0, "{s}");
    }
    let claims =
        |s: &serde_json::Value| s["concurrent_kill"] == false && s["kernel_kills"].as_u64().unwrap() > 0;
    assert!(
        !(claims(&sa) && claims(&sb)),
        "both kills claimed the kernel's kills as their own:\n{sa}\n{sb}"
    );
    assert!(wait_gone(main, GONE));
    assert!(inst.ps_pids(&service).is_empty(), "{:?}", inst.ps(&service));
}

#[test]
fn a_plain_shell_pipeline_shows_no_escape_and_the_column_fits() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("plain");
    // Debian's dash and coreutils' sleep where they are (the VMs carry them beside busybox,
    // whose applets rename themselves without an exec: a real rename, but not a plain shell).
    let debian = |p: &'static str, or: &'static str| if Path::new(p).is_file() { p } else { or };
    let (sh, sleep) = (debian("/usr/bin/dash", "sh"), debian("/usr/bin/sleep", "sleep"));
    let mut cmd = inst.cmd();
    cmd.args(["run", "--service", &service, "--", sh, "-c"])
        .arg(format!(
            "{sleep} 1000 & echo \"ready pid=$$ child=$!\"; exec {sleep} 1001"
        ));
    let tree = Tree::spawn(cmd);
    let (main, child) = (tree.pid("pid"), tree.pid("child"));
    assert!(
        poll_until(GONE, || {
            let ps = inst.ps(&service);
            ps.len() == 2 && ps.iter().all(|e| e["comm"] == "sleep")
        }),
        "both processes never ran sleep: {:?}",
        inst.ps(&service)
    );
    for e in inst.ps(&service) {
        assert_eq!(e["escaped"], false, "{e}");
    }
    let _ = (main, child);
    // A real escape is abbreviated in the table, spelled out with --wide.
    let other = unique("escapes");
    let tree2 = inst.run_service(&other, &["double-fork", "--setsid", "--rename", "hidden"]);
    tree2.settle();
    let table = inst.run(["ps", "--service", &other]);
    let t = String::from_utf8_lossy(&table.stdout);
    assert!(t.contains("rep,sid,ren"), "{t}");
    assert!(t.contains("rep=reparented"), "legend missing: {t}");
    // The fixed columns fit a terminal and line up; the command line (whose length depends on
    // where the tree is checked out) runs on after them.
    let header = t.lines().next().unwrap_or_default();
    let col = header.find("CMDLINE").expect("no CMDLINE column");
    assert!(col <= 100, "the fixed columns take {col} characters:\n{t}");
    let rows = t
        .lines()
        .skip(1)
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()));
    for row in rows {
        let at: String = row.chars().skip(col - 1).take(2).collect();
        assert!(
            at.starts_with(' ') && at.ends_with('/'),
            "misaligned row {row:?}:\n{t}"
        );
    }
    let wide = inst.run(["ps", "--service", &other, "--wide"]);
    assert!(
        String::from_utf8_lossy(&wide.stdout).contains("reparented,new-session,renamed"),
        "{}",
        text(&wide)
    );
    drop(tree);
}
