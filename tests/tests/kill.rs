//! The kill on the real kernel: fork races, fork bombs, cgroup escapes, escalation, STOP/CONT,
//! selection, dry runs and exit codes. Each test loads its own tracking instance.

use std::{process::Command, time::Duration};

use bpfkill_tests::{
    code, is_alive, or_skip, poll_until, require_privileges, state, text, unique, v2_hierarchy, wait_gone,
    Instance, TempCgroup, Tree,
};

const GONE: Duration = Duration::from_secs(10);

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

#[test]
fn a_child_that_moved_to_another_cgroup_is_killed() {
    require_privileges!();
    let Some(mount) = or_skip(v2_hierarchy()) else {
        return;
    };
    let inst = Instance::loaded();
    let cg = TempCgroup::create(&mount, &unique("bpfkill-move"));
    let service = unique("move");
    let tree = inst.run_service(&service, &["mover", cg.dir.to_str().unwrap()]);
    let (main, mover) = (tree.pid("main"), tree.pid("mover"));
    assert_eq!(cg.procs(), vec![mover], "the child must have moved itself");

    // It shows up as an escapee (left-cgroup) ...
    let out = inst.run([
        "-s",
        "KILL",
        "--service",
        &service,
        "--kill-whom",
        "escaped",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let lines = json_lines(&out);
    let m = lines
        .iter()
        .find(|l| l["pid"] == mover)
        .unwrap_or_else(|| panic!("mover not listed: {lines:?}"));
    assert!(
        m["escape_reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "left-cgroup"),
        "{m}"
    );
    assert!(
        !lines.iter().any(|l| l["pid"] == main),
        "main did not escape: {lines:?}"
    );

    // ... and dies with the service.
    let out = inst.run(["-s", "KILL", "--service", &service]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(wait_gone(mover, GONE), "the mover survived");
    assert!(wait_gone(main, GONE));
}

#[test]
fn a_term_ignoring_process_is_killed_after_the_timeout() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("stubborn");
    let tree = inst.run_service(&service, &["pause", "--ignore-term"]);
    let pid = tree.pid("pid");
    let out = inst.run(["--service", &service, "--timeout", "300ms", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let lines = json_lines(&out);
    let p = lines.iter().find(|l| l["pid"] == pid).expect("listed");
    assert_eq!(p["signals"], serde_json::json!(["SIGTERM", "SIGKILL"]), "{p}");
    assert_eq!(p["exited"], true);
    assert!(wait_gone(pid, GONE));
}

#[test]
fn a_schedule_without_kill_reports_survivors_with_exit_3() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("survivor");
    let tree = inst.run_service(&service, &["pause", "--ignore-term"]);
    let pid = tree.pid("pid");
    let out = inst.run(["--service", &service, "--retry", "TERM/200ms"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("STILL ALIVE"),
        "{}",
        text(&out)
    );
    assert!(is_alive(pid));
    let out = inst.run(["--service", &service, "--retry", "TERM/200ms/KILL/5"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(wait_gone(pid, GONE));
}

#[test]
fn wait_blocks_until_the_service_is_gone() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("wait");
    let mut tree = inst.run_service(&service, &["forker"]);
    let kids = [tree.fork_child(), tree.fork_child()];
    let out = inst.run(["-s", "TERM", "--service", &service, "--wait", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for pid in kids.iter().chain([tree.pid("pid")].iter()) {
        assert!(!is_alive(*pid), "{pid} alive after --wait returned");
    }
}

#[test]
fn stop_then_cont_a_service_with_children() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("stopcont");
    let mut tree = inst.run_service(&service, &["forker"]);
    let mut pids = vec![tree.pid("pid")];
    for _ in 0..3 {
        pids.push(tree.fork_child());
    }
    let out = inst.run(["-s", "STOP", "--service", &service]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for &p in &pids {
        assert!(
            poll_until(GONE, || state(p) == Some('T')),
            "{p} not stopped: {:?}",
            state(p)
        );
    }
    let out = inst.run(["-s", "CONT", "--service", &service]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for &p in &pids {
        assert!(poll_until(GONE, || state(p) != Some('T')), "{p} still stopped");
    }
}

#[test]
fn dry_run_signals_nothing_and_shows_evidence() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("dry");
    let mut tree = inst.run_service(&service, &["forker"]);
    let main = tree.pid("pid");
    let kids = [tree.fork_child(), tree.fork_child()];
    let out = inst.run(["-s", "KILL", "--service", &service, "--dry-run", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let lines = json_lines(&out);
    for pid in [main, kids[0], kids[1]] {
        let l = lines
            .iter()
            .find(|l| l["pid"] == pid)
            .unwrap_or_else(|| panic!("{pid} missing: {lines:?}"));
        assert_eq!(l["outcome"], "would-signal");
        assert_eq!(l["evidence"], serde_json::json!(["tag", "proc"]), "{l}");
        assert!(l["signals"].as_array().unwrap().is_empty());
    }
    for pid in [main, kids[0], kids[1]] {
        assert!(is_alive(pid), "--dry-run signalled {pid}");
    }
    let out = inst.run(["-s", "KILL", "--service", &service, "--dry-run"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("would be signalled"),
        "{}",
        text(&out)
    );
}

#[test]
fn pid_selects_a_subtree_and_follows_lineage_through_exited_creators() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("subtree");
    let mut tree = inst.run_service(&service, &["forker"]);
    let main = tree.pid("pid");
    let a = tree.fork_child();
    let b = tree.fork_child();
    let out = inst.run(["-s", "KILL", "--pid", &a.to_string()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(wait_gone(a, GONE));
    assert!(
        is_alive(main) && is_alive(b),
        "--pid must not touch the rest of the service"
    );

    // The escapee's creator exited; its ghost still links it to the main process.
    let service2 = unique("subtree2");
    let tree2 = inst.run_service(&service2, &["double-fork"]);
    let (m2, esc) = (tree2.pid("main"), tree2.pid("escapee"));
    let out = inst.run(["-s", "KILL", "--pid", &m2.to_string(), "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(wait_gone(m2, GONE) && wait_gone(esc, GONE), "{}", text(&out));
    assert!(is_alive(main) && is_alive(b));
}

#[test]
fn kill_whom_main_spares_the_children() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("whom");
    let mut tree = inst.run_service(&service, &["forker"]);
    let main = tree.pid("pid");
    let kid = tree.fork_child();
    let out = inst.run(["-s", "KILL", "--service", &service, "--kill-who", "main"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(wait_gone(main, GONE));
    assert!(is_alive(kid));
}

#[test]
fn exit_codes() {
    require_privileges!();
    let inst = Instance::loaded();
    // 1: unknown service; a service with nothing left.
    let out = inst.run(["-s", "KILL", "--service", "no-such-service"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let service = unique("codes");
    let tree = inst.run_service(&service, &["pause"]);
    let out = inst.run(["-s", "KILL", "--service", &service]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(wait_gone(tree.pid("pid"), GONE));
    let out = inst.run(["-s", "KILL", "--service", &service]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    // 64: bad input; PID 1; an untrusted pidfile.
    for args in [
        vec!["-s", "NOPE", "--service", "x"],
        vec!["--service", "x", "--timeout", "soon"],
        vec!["--service", "x", "--retry", "TERM/x"],
        vec!["--pid", "1"],
    ] {
        let out = inst.run(&args);
        assert_eq!(code(&out), 64, "{args:?}: {}", text(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim().lines().count(),
            1,
            "{args:?}: {}",
            text(&out)
        );
    }
    let pidfile = std::env::temp_dir().join(unique("pidfile"));
    std::fs::write(&pidfile, format!("{}\n", std::process::id())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pidfile, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = inst.run(["--pidfile", pidfile.to_str().unwrap()]);
    std::fs::remove_file(&pidfile).unwrap();
    assert_eq!(code(&out), 64, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("world-writable"),
        "{}",
        text(&out)
    );
}

#[test]
fn bpfkill_never_signals_itself_or_its_ancestors() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("self");
    // The service's main process is a shell that runs bpfkill against its own service: the
    // shell (an ancestor) and bpfkill (itself) are tagged but must be spared: exit code 2.
    let script = format!("{} -s KILL --service {service} --json; echo rc=$?", inst_bin());
    let out = inst
        .cmd()
        .args(["run", "--service", &service, "--", "sh", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rc=2"), "{}", text(&out));
    assert!(stdout.contains("\"outcome\":\"protected\""), "{stdout}");
    assert!(
        stdout.contains("never signals itself") && stdout.contains("ancestors"),
        "{stdout}"
    );
    assert!(out.status.success(), "the shell was killed: {}", text(&out));
}

fn inst_bin() -> String {
    bpfkill_tests::bpfkill_bin().to_string_lossy().into_owned()
}

#[test]
fn unrelated_processes_are_never_candidates() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("unrel");
    let decoy = Tree::unrelated("forker");
    let tree = inst.run_service(&service, &["pause"]);
    let out = inst.run(["-s", "KILL", "--service", &service, "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "one process and the summary: {lines:?}");
    assert!(wait_gone(tree.pid("pid"), GONE));
    assert!(is_alive(decoy.pid("pid")));
    let _ = Command::new("true").status();
}

#[test]
fn a_dedicated_cgroup_adds_evidence_and_shared_ones_are_refused() {
    require_privileges!();
    let Some(mount) = or_skip(v2_hierarchy()) else {
        return;
    };
    let inst = Instance::loaded();
    let service = unique("cg");
    let tree = inst.run_service(&service, &["pause"]);
    // A process of the service's cgroup that was never tagged (started outside bpfkill).
    let outsider = Tree::unrelated("cg-member");
    let cg = TempCgroup::create(&mount, &unique("bpfkill-cg"));
    for pid in [tree.pid("pid"), outsider.pid("pid")] {
        std::fs::write(cg.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }
    let dir = cg.dir.to_str().unwrap();
    let out = inst.run([
        "-s",
        "KILL",
        "--service",
        &service,
        "--cgroup",
        dir,
        "--dry-run",
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let lines = json_lines(&out);
    let o = lines
        .iter()
        .find(|l| l["pid"] == outsider.pid("pid"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(o["evidence"], serde_json::json!(["cgroup"]), "{o}");
    let m = lines.iter().find(|l| l["pid"] == tree.pid("pid")).unwrap();
    assert_eq!(m["evidence"], serde_json::json!(["tag", "cgroup", "proc"]), "{m}");
    // The hierarchy root, and a cgroup holding bpfkill's ancestor, are shared: refused.
    let out = inst.run(["--service", &service, "--cgroup", mount.to_str().unwrap()]);
    assert_eq!(code(&out), 64, "{}", text(&out));
    // bpfkill itself inside the cgroup: a shell moves itself in, then execs bpfkill.
    let script = format!(
        "echo $$ > {dir}/cgroup.procs && exec {} --service {service} --cgroup {dir} --dry-run",
        bpfkill_tests::bpfkill_bin().display()
    );
    let out = inst
        .cmd()
        .args(["run", "--service", &unique("cg-self"), "--", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(code(&out), 64, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shared"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_sigkill_kills_the_services_own_cgroup_whole_and_the_tags_catch_what_left_it() {
    require_privileges!();
    let Some(mount) = or_skip(v2_hierarchy()) else {
        return;
    };
    let inst = Instance::loaded();
    let own = TempCgroup::create(&mount, &unique("bpfkill-own"));
    if !own.dir.join("cgroup.kill").exists() {
        bpfkill_tests::skip("no cgroup.kill (Linux 5.14+)");
        return;
    }
    let away = TempCgroup::create(&mount, &unique("bpfkill-away"));
    let service = unique("cgkill");
    // The main process and a never-tagged outsider live in the service's cgroup; a child of
    // the service moved itself away from it.
    let tree = inst.run_service(&service, &["mover", away.dir.to_str().unwrap()]);
    let outsider = Tree::unrelated("cgkill-member");
    let (main, mover, other) = (tree.pid("main"), tree.pid("mover"), outsider.pid("pid"));
    for pid in [main, other] {
        std::fs::write(own.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }
    let out = inst.run([
        "-s",
        "KILL",
        "--service",
        &service,
        "--cgroup",
        own.dir.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let lines = json_lines(&out);
    let summary = lines.last().unwrap();
    assert_eq!(summary["cgroup_killed"], 2, "{summary}");
    for pid in [main, mover, other] {
        assert!(wait_gone(pid, GONE), "{pid} survived: {}", text(&out));
    }
    let m = lines.iter().find(|l| l["pid"] == mover).unwrap();
    assert_eq!(m["signals"], serde_json::json!(["SIGKILL"]), "{m}");
    assert_eq!(m["left_cgroup"], true, "{m}");
}

#[test]
fn a_sigkill_is_sent_in_the_kernel_where_it_can_be_and_from_userspace_otherwise() {
    require_privileges!();
    let inst = Instance::loaded();
    let in_kernel = inst.status().1["kernel_kill"] == true;
    if !in_kernel {
        eprintln!("the kernel lacks bpf_send_signal_task (6.13+): only the userspace path runs");
    }
    for userspace in [false, true] {
        let service = unique("reap");
        let _tree = inst.run_service(&service, &["spawn", "50"]);
        let pids = inst.ps_pids(&service);
        assert_eq!(pids.len(), 51, "{pids:?}");
        let mut cmd = inst.cmd();
        if userspace {
            cmd.env("BPFKILL_NO_KERNEL_KILL", "1");
        }
        let out = cmd
            .args(["-s", "KILL", "--service", &service, "--json"])
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", text(&out));
        let summary = json_lines(&out).pop().unwrap();
        assert_eq!(summary["signalled"], 51, "{summary}");
        let expected = if in_kernel && !userspace { 51 } else { 0 };
        assert_eq!(summary["signalled_in_kernel"], expected, "{summary}");
        for pid in pids {
            assert!(
                wait_gone(pid, GONE),
                "{pid} survived (userspace path: {userspace})"
            );
        }
    }
}
