//! The tracking engine end to end on the real kernel: real programs, real process trees,
//! real survivors. Each test loads its own tracking instance and unloads it afterwards.

use std::{process::Command, time::Duration};

use bpfkill_tests::{code, is_alive, require_privileges, text, unique, wait_gone, Instance, Tree};

const GONE: Duration = Duration::from_secs(10);

#[test]
fn double_forked_grandchild_is_tagged_and_killed_while_namesake_survives() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("dbl");
    let name = "escapee-dbl";
    let decoy = Tree::unrelated(name);
    let tree = inst.run_service(&service, &["double-fork", "--setsid", "--rename", name]);
    let (main, escapee) = (tree.pid("main"), tree.pid("escapee"));

    let ps = inst.ps(&service);
    let entry = ps
        .iter()
        .find(|e| e["pid"] == escapee)
        .unwrap_or_else(|| panic!("escapee {escapee} not tagged: {ps:?}"));
    assert_eq!(entry["comm"], name);
    assert_eq!(entry["escaped"], true, "{entry}");
    assert_ne!(entry["creator_pid"], entry["ppid"], "{entry}");
    assert!(
        ps.iter().any(|e| e["pid"] == main),
        "main {main} not tagged: {ps:?}"
    );

    let out = inst.run(["-s", "SIGKILL", "--service", &service]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(wait_gone(main, GONE), "main survived");
    assert!(wait_gone(escapee, GONE), "escapee survived");
    assert!(is_alive(decoy.pid("pid")), "the unrelated namesake was killed");
    assert!(inst.ps_pids(&service).is_empty());
}

#[test]
fn threads_add_no_entries_and_leader_exit_first_stays_tracked() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("thr");
    let (_, before) = inst.status();
    let tagged_before = before["tagged"].as_u64().unwrap();
    let tree = inst.run_service(&service, &["threads", "8"]);
    let pid = tree.pid("pid");

    // The leader has exited; its 8 threads live on.
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().count();
    assert!(
        tasks >= 8,
        "expected the worker threads to run, found {tasks} tasks"
    );
    assert_eq!(
        inst.ps_pids(&service),
        vec![pid],
        "threads must not create entries"
    );
    let (_, after) = inst.status();
    assert_eq!(after["tagged"].as_u64().unwrap(), tagged_before + 1, "{after}");

    let out = inst.run(["-s", "KILL", "--service", &service]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(wait_gone(pid, GONE), "thread group survived");
    assert!(inst.ps_pids(&service).is_empty(), "tag outlived the process");
}

#[test]
fn tracking_survives_daemon_kill9_and_restart() {
    require_privileges!();
    let inst = Instance::unloaded();
    let mut daemon = inst.start_daemon("tracking loaded");
    let service = unique("dmn");
    let mut tree = inst.run_service(&service, &["forker"]);
    let main = tree.pid("pid");
    let c1 = tree.fork_child();

    daemon.kill9();
    let c2 = tree.fork_child();
    let (rc, status) = inst.status();
    assert_eq!(rc, 0, "tracking must stay live without the daemon: {status}");
    let mut pids = inst.ps_pids(&service);
    pids.sort();
    assert_eq!(pids, vec![main, c1, c2]);

    let daemon = inst.start_daemon("adopted pinned tracking");
    let c3 = tree.fork_child();
    let ps = inst.ps(&service);
    let e3 = ps
        .iter()
        .find(|e| e["pid"] == c3)
        .expect("child forked after restart is tagged");
    assert_eq!(e3["creator_pid"], main);

    let out = inst.run(["-s", "SIGKILL", "--service", &service]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for pid in [main, c1, c2, c3] {
        assert!(wait_gone(pid, GONE), "{pid} survived");
    }
    daemon.stop();
    assert_eq!(inst.status().0, 0, "SIGTERM must keep tracking pinned");
}

/// Makes the next process created on the machine get PID `pid` (via ns_last_pid) and starts
/// an unrelated `forker` there; retries when another process takes the number first, or when
/// it starts in the same clock tick as `old_start_ticks` (/proc cannot tell two processes
/// started in one tick apart; see README).
fn spawn_at_pid(pid: u32, old_start_ticks: u64) -> Option<Tree> {
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).ok()?;
        let mut cmd = Command::new(bpfkill_tests::forker_bin());
        cmd.arg("forker");
        let tree = Tree::spawn(cmd);
        if tree.pid("pid") == pid && bpfkill::sys::procs::start_ticks(pid) != Some(old_start_ticks) {
            return Some(tree);
        }
    }
    None
}

#[test]
fn recycled_pid_number_is_not_signalled() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("rcy");
    let mut tree = inst.run_service(&service, &["pause"]);
    let pid = tree.pid("pid");

    let paths = bpfkill::tracking::PinPaths::at(&inst.pin_dir);
    let mut tracking = bpfkill::tracking::Tracking::open(&paths).expect("open maps");
    let old_tag = tracking.tag(pid).expect("main process tagged");

    // The tagged process dies; its number goes to an unrelated process.
    tree.child.kill().unwrap();
    tree.child.wait().unwrap();
    tree.pids.clear();
    assert!(tracking.tag(pid).is_none(), "exit must remove the tag");
    let Some(mut stranger) = spawn_at_pid(pid, bpfkill::sys::clock::ns_to_ticks(old_tag.start_ns)) else {
        bpfkill_tests::skip(&format!("could not get PID {pid} reused (busy machine)"));
        return;
    };
    // A tag that outlived its process (as if its exit had been missed) names the number.
    tracking.set_tag(pid, &old_tag).expect("plant stale tag");

    let out = inst.run(["-s", "SIGKILL", "--service", &service, "--json"]);
    assert_eq!(code(&out), 1, "nothing may be signalled: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"outcome\":\"pid-recycled\""), "{stdout}");
    assert!(is_alive(pid), "the process that reused the PID was signalled");
    // The kill forgot the tag that outlived its process.
    assert!(tracking.tag(pid).is_none(), "the stale tag stayed");

    // Nor does the kernel trust a stale tag: the stranger's children are not tagged.
    tracking
        .set_tag(pid, &old_tag)
        .expect("plant the stale tag again");
    let before = inst.status().1["counters"]["stale_creator"].as_u64().unwrap();
    let child = stranger.fork_child();
    assert!(bpfkill::sys::procs::stat(child).is_some());
    assert!(
        tracking.tag(child).is_none(),
        "child of a recycled PID was tagged"
    );
    let after = inst.status().1["counters"]["stale_creator"].as_u64().unwrap();
    assert!(after > before, "stale creator not counted");
    assert!(
        inst.ps_pids(&service).is_empty(),
        "ps must not list a recycled PID"
    );
}

#[test]
fn track_adopts_a_running_tree_and_kernel_tags_later_forks() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("trk");
    let mut cmd = Command::new(bpfkill_tests::forker_bin());
    cmd.arg("forker");
    let mut tree = Tree::spawn(cmd);
    let main = tree.pid("pid");
    let a = tree.fork_child();
    let b = tree.fork_child();

    let out = inst.run(["track", "--service", &service, "--pid", &main.to_string()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let c = tree.fork_child();
    let ps = inst.ps(&service);
    let lineage = |pid: u32| ps.iter().find(|e| e["pid"] == pid).map(|e| e["lineage"].clone());
    assert_eq!(lineage(main), Some("adopted".into()), "{ps:?}");
    assert_eq!(
        lineage(a),
        Some("unknown".into()),
        "adopted lineage must be unknown: {ps:?}"
    );
    assert_eq!(lineage(b), Some("unknown".into()));
    assert_eq!(
        lineage(c),
        Some("forked".into()),
        "fork after tracking must be tagged"
    );

    let out = inst.run(["-s", "KILL", "--service", &service]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for pid in [main, a, b, c] {
        assert!(wait_gone(pid, GONE), "{pid} survived");
    }
}

#[test]
fn track_refuses_pid_1_and_itself() {
    require_privileges!();
    let inst = Instance::loaded();
    let out = inst.run(["track", "--service", &unique("one"), "--pid", "1"]);
    assert_eq!(code(&out), 64, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PID 1"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_full_tag_map_is_counted_and_shown() {
    require_privileges!();
    let (inst, _service, _tree) = Instance::with_full_tag_map(&["--kernel-log", "warn"]);
    let (rc, status) = inst.status();
    assert_eq!(rc, 0);
    assert_eq!(status["max_tagged"], 4, "{status}");
    assert_eq!(status["tagged"], 4, "{status}");
    assert_eq!(status["counters"]["tags_full"], 3, "{status}");
    let human = inst.run(["status"]);
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("WARNING:  tags_full=3"),
        "{}",
        text(&human)
    );
    // Loaded with --kernel-log warn: the programs said so themselves, and the daemon forwards
    // what they said (written before it started) to its log.
    assert_eq!(status["kernel_log"], "warn", "{status}");
    let daemon = inst.start_daemon("forwarding the kernel programs' diagnostics (level warn)");
    if let Err(log) = daemon.wait_log("tag map full: pid", 3, GONE) {
        panic!("the daemon never forwarded the kernel's three tag-map-full warnings:\n{log}");
    }
    daemon.stop();
}

#[test]
fn kernel_diagnostics_are_off_unless_asked_for() {
    require_privileges!();
    let (inst, _service, _tree) = Instance::with_full_tag_map(&[]);
    let (_, status) = inst.status();
    assert_eq!(status["kernel_log"], "off", "{status}");
    assert_eq!(status["counters"]["tags_full"], 3, "{status}");
    // Asking an adopting load for another level says it cannot change.
    let out = inst.run(["load", "--kernel-log", "debug"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("fixed when they were loaded"),
        "{}",
        text(&out)
    );
}

#[test]
fn every_kernel_diagnostic_passes_the_verifier() {
    require_privileges!();
    // At debug, no log statement is pruned: the verifier sees them all (the doom program's
    // too, loaded by the kill).
    let inst = Instance::unloaded();
    let out = inst.run(["load", "--kernel-log", "debug"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let service = unique("chatty");
    // Forks without pause, so the kernel kills some of it (the doom program's paths).
    let tree = inst.run_service(&service, &["fork-loop"]);
    let main = tree.pid("pid");
    let out = inst.run(["-s", "KILL", "--service", &service]);
    assert!(matches!(code(&out), 0 | 1), "{}", text(&out));
    assert!(wait_gone(main, GONE), "main survived");
    assert!(inst.ps_pids(&service).is_empty(), "{:?}", inst.ps(&service));
}
