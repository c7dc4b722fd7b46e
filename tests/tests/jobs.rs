//! Job mode: `bpfkill run --kill-on-exit | --keep-running | --time-limit -- CMD`. The command
//! is the `forker leaky` helper, which leaks the daemons other wrappers lose (a double-forked
//! grandchild in a new session, a setsid'd child, an `env -i` re-exec) and reports their PIDs.

use std::{
    os::unix::process::ExitStatusExt,
    time::{Duration, Instant},
};

use bpfkill_tests::*;

/// Ceiling for any process to be gone / any job to end.
const GONE: Duration = Duration::from_secs(10);

/// `bpfkill run JOB_ARGS -- forker leaky LEAKY_ARGS` under `inst`, started.
fn job(inst: &Instance, job_args: &[&str], leaky_args: &[&str]) -> Tree {
    let mut cmd = inst.cmd();
    cmd.arg("run")
        .args(job_args)
        .arg("--")
        .arg(forker_bin())
        .arg("leaky")
        .args(leaky_args);
    Tree::spawn(cmd)
}

/// The leaked PIDs of a `leaky` job.
fn leaked(tree: &Tree) -> [u32; 3] {
    [tree.pid("double"), tree.pid("setsid"), tree.pid("envi")]
}

/// Registered services, from `status`.
fn registered(inst: &Instance) -> u64 {
    inst.status().1["registry_used"].as_u64().expect("registry_used")
}

#[test]
fn a_job_takes_every_daemon_it_leaked_and_exits_with_its_status() {
    require_privileges!();
    let inst = Instance::loaded();
    let before = registered(&inst);
    let mut tree = job(&inst, &["--kill-on-exit", "--grace", "5s"], &["--exit", "7"]);
    let status = tree.exit_status(GONE);
    assert_eq!(status.code(), Some(7), "{status:?}");
    for pid in leaked(&tree) {
        assert!(!is_alive(pid), "{pid} survived the job");
    }
    assert_eq!(registered(&inst), before, "the job's service stayed registered");
}

#[test]
fn a_job_that_ignores_the_signal_is_killed_after_the_grace() {
    require_privileges!();
    let inst = Instance::loaded();
    let grace = Duration::from_secs(1);
    let mut tree = job(
        &inst,
        &["--kill-on-exit", "--grace", "1s", "-v"],
        &["--exit", "0", "--ignore-term"],
    );
    let started = Instant::now();
    let status = tree.exit_status(GONE);
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(started.elapsed() >= grace, "SIGKILL came before the grace ended");
    for pid in leaked(&tree) {
        assert!(!is_alive(pid), "{pid} survived the job");
    }
}

#[test]
fn a_time_limit_stops_the_whole_tree_with_124() {
    require_privileges!();
    let inst = Instance::loaded();
    let before = registered(&inst);
    // Without --exit the command itself never ends.
    let mut tree = job(
        &inst,
        &["--time-limit", "1s", "--grace", "2s"],
        &["--children", "3"],
    );
    let main = tree.pid("main");
    let status = tree.exit_status(GONE);
    assert_eq!(status.code(), Some(124), "{status:?}");
    for pid in leaked(&tree).into_iter().chain([main]) {
        assert!(!is_alive(pid), "{pid} survived the time limit");
    }
    assert_eq!(registered(&inst), before, "the job's service stayed registered");
}

#[test]
fn a_job_killed_by_a_signal_exits_128_plus_it_and_signals_are_passed_on() {
    require_privileges!();
    let inst = Instance::loaded();
    // The command dies of SIGKILL: 137, its leaks cleaned up.
    let out = inst.run(["run", "--kill-on-exit", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(code(&out), 137, "{}", text(&out));
    // SIGTERM to bpfkill reaches the command (which dies of it: 143), then the leaks go.
    let mut tree = job(&inst, &["--kill-on-exit"], &[]);
    let bpfkill = rustix::process::Pid::from_raw(tree.child.id() as i32).expect("pid");
    rustix::process::kill_process(bpfkill, rustix::process::Signal::TERM).expect("SIGTERM bpfkill");
    let status = tree.exit_status(GONE);
    assert_eq!(status.code(), Some(143), "{status:?}");
    assert!(status.signal().is_none(), "bpfkill itself died of the signal");
    for pid in leaked(&tree).into_iter().chain([tree.pid("main")]) {
        assert!(!is_alive(pid), "{pid} survived");
    }
}

#[test]
fn keep_running_lists_the_leaks_and_signals_nothing() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("leaky");
    // The leaks keep bpfkill's standard streams open: stdout to nowhere, stderr to a file,
    // and only bpfkill itself waited for.
    let log = std::env::temp_dir().join(format!("{service}.stderr"));
    let mut cmd = inst.cmd();
    cmd.args(["run", "--keep-running", "--service", &service, "--"])
        .arg(forker_bin())
        .args(["leaky", "--exit", "3"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("stderr file"));
    let status = cmd.status().expect("run");
    let err = std::fs::read_to_string(&log).expect("stderr");
    let _ = std::fs::remove_file(&log);
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(err.contains("3 process(es) left running"), "{err}");
    assert!(err.contains("leak-daemon"), "{err}");
    assert!(err.contains(&format!("--service {service}")), "{err}");
    let pids = inst.ps_pids(&service);
    assert_eq!(pids.len(), 3, "{:?}", inst.ps(&service));
    // The leaks stay in the job's cgroup, which outlives the job; a later kill of the
    // service kills it through the kernel (`cgroup.kill`) and removes it once empty.
    let cgroup = v2_hierarchy()
        .ok()
        .map(|v2| v2.join("bpfkill.jobs").join(&service))
        .filter(|d| d.exists());
    // cgroup.kill is Linux 5.14+; before it, the cgroup is evidence only.
    let kill_file = cgroup.as_ref().is_some_and(|d| d.join("cgroup.kill").is_file());
    let out = inst.run(["-s", "KILL", "--service", &service, "--timeout", "5s"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for pid in pids {
        assert!(wait_gone(pid, GONE), "{pid} survived");
    }
    if kill_file {
        assert!(
            text(&out).contains("3 killed through cgroup.kill"),
            "the kill did not use the job's cgroup: {}",
            text(&out)
        );
    }
    if let Some(dir) = cgroup {
        assert!(!dir.exists(), "the job's emptied cgroup stayed");
    }
}

#[test]
fn untracked_a_job_still_runs_unless_tracking_is_required() {
    require_privileges!();
    let inst = Instance::unloaded();
    let out = inst.run(["run", "--kill-on-exit", "--", "sh", "-c", "exit 5"]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(
        text(&out).contains("nothing it leaves behind will be cleaned up"),
        "{}",
        text(&out)
    );
    let out = inst.run(["run", "--kill-on-exit", "--require-tracking", "--", "true"]);
    assert_eq!(code(&out), 69, "{}", text(&out));
    // A job's options without a job are a usage error.
    let out = inst.run(["run", "--service", "x", "--grace", "1s", "--", "true"]);
    assert_eq!(code(&out), 64, "{}", text(&out));
}

#[test]
fn fifty_jobs_leave_the_registry_where_it_started() {
    require_privileges!();
    let inst = Instance::loaded();
    let before = registered(&inst);
    let deadline = Instant::now() + Duration::from_secs(300);
    // A job that left its service registered would show after the first; fifty also cross
    // job ends with exits of the one before (the kernel may skip an exit run on 7.x).
    for i in 0..50 {
        assert!(Instant::now() < deadline, "50 jobs took over 300 s (at {i})");
        let out = inst.run(["run", "--kill-on-exit", "--", "true"]);
        assert_eq!(code(&out), 0, "job {i}: {}", text(&out));
    }
    assert_eq!(registered(&inst), before);
}

/// Ordinary users: `nobody`, and a second one with no name.
const NOBODY: u32 = 65534;
const OTHER_USER: u32 = 1000;

/// A bpfkill command of `inst` run as user `uid` (supplementary groups dropped).
fn as_user(inst: &Instance, uid: u32, args: &[&str]) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = inst.cmd();
    cmd.uid(uid).gid(uid).args(args);
    cmd
}

/// `bpfkill run ARGS -- forker leaky LEAKY` as user `uid`, started.
fn user_job(inst: &Instance, uid: u32, job_args: &[&str], leaky_args: &[&str]) -> Tree {
    let mut cmd = as_user(inst, uid, &["run"]);
    cmd.args(job_args)
        .arg("--")
        .arg(forker_bin())
        .arg("leaky")
        .args(leaky_args);
    Tree::spawn(cmd)
}

#[test]
fn an_ordinary_user_runs_a_leaky_job_through_the_daemon() {
    require_privileges!();
    let inst = Instance::loaded();
    let daemon = inst.start_daemon("socket for ordinary users");
    let mut tree = user_job(
        &inst,
        NOBODY,
        &["--kill-on-exit", "--grace", "5s"],
        &["--exit", "7"],
    );
    let status = tree.exit_status(GONE);
    assert_eq!(status.code(), Some(7), "{status:?}");
    for pid in leaked(&tree) {
        assert!(!is_alive(pid), "{pid} survived the job");
    }
    // Without the daemon it still runs, untracked, unless tracking is required.
    daemon.stop();
    let out = as_user(
        &inst,
        NOBODY,
        &["run", "--kill-on-exit", "--", "sh", "-c", "exit 4"],
    )
    .output()
    .expect("run");
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(
        text(&out).contains("nothing it leaves behind will be cleaned up"),
        "{}",
        text(&out)
    );
    let out = as_user(
        &inst,
        NOBODY,
        &["run", "--kill-on-exit", "--require-tracking", "--", "true"],
    )
    .output()
    .expect("run");
    assert_eq!(code(&out), 77, "{}", text(&out));
}

/// A command that exits at once can be gone from the tag map (its exit began) before the
/// daemon checks the handover: the job still ends as the command did, and the user's bpfkill
/// is never the target of its own job's end (seen once on 5.10: the handover was refused,
/// the caller stayed the job's main process, and the job's end killed it).
#[test]
fn an_ordinary_users_job_whose_command_exits_at_once_ends_with_its_status() {
    require_privileges!();
    let inst = Instance::loaded();
    let _daemon = inst.start_daemon("socket for ordinary users");
    for round in 0..10 {
        let out = as_user(
            &inst,
            NOBODY,
            &["run", "--kill-on-exit", "--", "sh", "-c", "exit 3"],
        )
        .output()
        .expect("run");
        assert_eq!(code(&out), 3, "round {round}: {}", text(&out));
        assert!(
            !text(&out).contains("is not the command"),
            "round {round}: the handover was refused: {}",
            text(&out)
        );
    }
}

#[test]
fn an_ordinary_user_sees_and_signals_only_its_own_jobs() {
    require_privileges!();
    let inst = Instance::loaded();
    let _daemon = inst.start_daemon("socket for ordinary users");
    let root_service = unique("rootsvc");
    let root_tree = inst.run_service(&root_service, &["forker"]);
    let theirs = unique("theirs");
    // Another user's job leaves its daemons running (and its service registered).
    let mut other = user_job(
        &inst,
        OTHER_USER,
        &["--keep-running", "--service", &theirs],
        &["--exit", "0"],
    );
    assert_eq!(other.exit_status(GONE).code(), Some(0));
    let leaked = leaked(&other);
    for service in [&root_service, &theirs] {
        for args in [
            vec!["ps", "--service", service.as_str()],
            vec!["-s", "KILL", "--service", service.as_str()],
        ] {
            let out = as_user(&inst, NOBODY, &args).output().expect("run");
            assert_eq!(code(&out), 77, "nobody {args:?}: {}", text(&out));
        }
    }
    for args in [
        vec!["status"],
        vec!["unload"],
        vec!["load"],
        vec!["forget", "--service", root_service.as_str()],
    ] {
        let out = as_user(&inst, NOBODY, &args).output().expect("run");
        assert_eq!(code(&out), 77, "nobody {args:?}: {}", text(&out));
    }
    assert!(is_alive(root_tree.pid("pid")), "a root service was signalled");
    for pid in leaked {
        assert!(is_alive(pid), "another user's process was signalled");
    }
    // Its owner reads their history (nobody may not).
    let history = || {
        let out = as_user(&inst, OTHER_USER, &["log", "--service", &theirs, "--json"])
            .output()
            .expect("log");
        assert_eq!(code(&out), 0, "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        poll_until(GONE, || history()
            .lines()
            .any(|l| l.contains(r#""event":"fork""#))),
        "the owner's log never showed the job's forks: {}",
        history()
    );
    let out = as_user(&inst, NOBODY, &["log", "--service", &theirs])
        .output()
        .expect("log");
    assert_eq!(code(&out), 77, "{}", text(&out));
    // Its owner lists and stops them.
    let out = as_user(&inst, OTHER_USER, &["ps", "--service", &theirs, "--json"])
        .output()
        .expect("ps");
    assert_eq!(code(&out), 0, "{}", text(&out));
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("ps JSON");
    assert_eq!(listed.len(), 3, "{listed:?}");
    let out = as_user(
        &inst,
        OTHER_USER,
        &["-s", "KILL", "--service", &theirs, "--timeout", "5s"],
    )
    .output()
    .expect("kill");
    assert_eq!(code(&out), 0, "{}", text(&out));
    for pid in leaked {
        assert!(wait_gone(pid, GONE), "{pid} survived its owner's kill");
    }
}

#[test]
fn the_daemon_tags_and_signals_nothing_a_user_does_not_own() {
    require_privileges!();
    let inst = Instance::loaded();
    let _daemon = inst.start_daemon("socket for ordinary users");
    let root_service = unique("rootsvc");
    let root_tree = inst.run_service(&root_service, &["forker"]);
    let victim = root_tree.pid("pid");
    let socket = inst.socket_path();
    // A raw client as nobody: starts a job, then claims a root process as its command, then
    // asks to signal a root service and to list it.
    let mut cmd = std::process::Command::new(forker_bin());
    {
        use std::os::unix::process::CommandExt;
        cmd.uid(NOBODY).gid(NOBODY);
    }
    let out = cmd
        .arg("request")
        .arg(socket)
        .arg(r#"{"op":"start-job","service":null}"#)
        .arg(format!(r#"{{"op":"job-started","pid":{victim}}}"#))
        .arg(format!(
            r#"{{"op":"kill","service":"{root_service}","signal":9,"timeout_ms":null,"json":false}}"#
        ))
        .arg(format!(r#"{{"op":"ps","service":"{root_service}","json":true}}"#))
        .arg(r#"{"op":"end-job","signal":15,"grace_ms":1000}"#)
        .output()
        .expect("raw client");
    assert_eq!(code(&out), 0, "{}", text(&out));
    let answers: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON answer"))
        .collect();
    assert_eq!(answers.len(), 5, "{answers:?}");
    assert!(answers[0]["refusal"].is_null(), "start-job: {}", answers[0]);
    for a in &answers[1..4] {
        assert_eq!(a["refusal"], "forbidden", "{a}");
    }
    assert!(answers[4]["refusal"].is_null(), "end-job: {}", answers[4]);
    assert!(is_alive(victim), "a root process was signalled");
    assert_eq!(
        inst.ps_pids(&root_service),
        vec![victim],
        "a root process changed service"
    );
}

#[test]
fn a_job_gets_a_cgroup_of_its_own_where_cgroup_v2_is_mounted() {
    require_privileges!();
    let Some(v2) = or_skip(v2_hierarchy()) else { return };
    let inst = Instance::loaded();
    let service = unique("cgjob");
    let out = inst.run([
        "run",
        "--kill-on-exit",
        "--service",
        &service,
        "--",
        "cat",
        "/proc/self/cgroup",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("0::"))
        .expect("a cgroup v2 line");
    assert!(line.ends_with(&format!("/bpfkill.jobs/{service}")), "{line}");
    assert!(
        !v2.join("bpfkill.jobs").join(&service).exists(),
        "the job's cgroup was left behind"
    );
}
