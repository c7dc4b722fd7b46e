//! A fork bomb confined by a pids cgroup, killed by service. In a test binary of its own so
//! that no other test competes with the bomb for the two CPUs.

use std::time::{Duration, Instant};

use bpfkill_tests::{
    code, marker_survivors, or_skip, pids_hierarchy, poll_until, require_privileges, unique, wait_gone,
    Instance, TempCgroup,
};

const GONE: Duration = Duration::from_secs(10);

/// Real-time priority for the calling thread, and for the bpfkill processes it starts: with
/// 2000 runnable bomb processes on two CPUs, a normal-priority test thread would take
/// minutes to notice anything.
fn real_time() -> bool {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: valid sched_param, this thread only.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

/// The runs the kernel skipped of each tracking program, and the children the fork backstop
/// caught, from `status`: they tell a lost tracking run from a kill that missed.
fn skipped_runs(inst: &Instance) -> String {
    let (_, status) = inst.status();
    let programs = status["programs"].as_array().cloned().unwrap_or_default();
    let counts: Vec<String> = programs
        .iter()
        .map(|p| format!("{}={}", p["name"].as_str().unwrap_or("?"), p["skipped_runs"]))
        .collect();
    format!(
        "runs the kernel skipped: {}; children tagged late from the fork backstop: {}",
        counts.join(" "),
        status["counters"]["forks_recovered"]
    )
}

#[test]
fn fork_bomb_in_a_pids_cgroup_leaves_no_survivors() {
    require_privileges!();
    let Some(mount) = or_skip(pids_hierarchy()) else {
        return;
    };
    let inst = Instance::loaded();
    let cg = TempCgroup::create(&mount, &unique("bpfkill-bomb"));
    std::fs::write(cg.dir.join("pids.max"), "2000").unwrap();
    let service = unique("bomb");
    let marker = unique("marker-bomb");
    // Started before this thread turns real-time, so the bomb runs at normal priority.
    let tree = inst.run_service(&service, &["bomb", cg.dir.to_str().unwrap(), "--marker", &marker]);
    assert!(real_time(), "cannot get real-time priority");
    let current = || {
        std::fs::read_to_string(cg.dir.join("pids.current"))
            .unwrap()
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    // Full size is 1900 or more; under emulation a slow kernel may not get there in time,
    // and a bomb still growing is no easier to kill.
    if !poll_until(Duration::from_secs(180), || current() >= 1900) {
        assert!(current() >= 1000, "bomb reached only {}", current());
    }

    eprintln!("fork bomb: {} processes; killing", current());
    let t = Instant::now();
    let out = inst.run(["-s", "SIGKILL", "--service", &service, "--json"]);
    let elapsed = t.elapsed();
    eprintln!("fork bomb: the kill returned after {elapsed:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // The summary, not 2000 per-process lines, so that a failure's recap stays readable.
    assert_eq!(
        code(&out),
        0,
        "summary: {}; stderr: {}; {}",
        stdout.lines().last().unwrap_or(""),
        String::from_utf8_lossy(&out.stderr),
        skipped_runs(&inst)
    );
    // Processes past their exit hook (untagged, finishing do_exit) must be gone shortly.
    // One deadline for all of them: a failure is reported in seconds, not N x GONE.
    let deadline = Instant::now() + GONE;
    let survivors: Vec<u32> = marker_survivors(&marker)
        .into_iter()
        .filter(|&p| !wait_gone(p, deadline.saturating_duration_since(Instant::now())))
        .collect();
    assert!(
        survivors.is_empty(),
        "{} survivors, e.g. {:?}; {}",
        survivors.len(),
        &survivors[..survivors.len().min(5)],
        skipped_runs(&inst)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    eprintln!(
        "fork bomb: {} processes signalled in {elapsed:?}; {summary}; {}",
        summary["processes"],
        skipped_runs(&inst)
    );
    drop(tree);
}
