//! Forensics on the real kernel: the `ps` fields, the lineage tree, the history journal the
//! daemon writes and `bpfkill log` reads (exit codes, killing signals, a torn tail, losses).

use std::{
    io::{BufRead, BufReader},
    process::{Child, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use bpfkill_tests::{code, require_privileges, text, unique, wait_gone, Instance, Tree};

const GONE: Duration = Duration::from_secs(10);

#[test]
fn ps_fields_describe_a_double_forked_escapee() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("f-ps");
    let tree = inst.run_service(&service, &["double-fork", "--setsid", "--rename", "f-escapee"]);
    let (main, escapee) = (tree.pid("main"), tree.pid("escapee"));
    tree.settle();
    let ps = inst.ps(&service);
    let m = ps.iter().find(|e| e["pid"] == main).expect("main listed");
    let e = ps.iter().find(|e| e["pid"] == escapee).expect("escapee listed");

    assert_eq!(m["lineage"], "main");
    assert_eq!(m["creator_pid"], serde_json::Value::Null);
    assert_eq!(m["escaped"], false, "{m}");
    assert!(
        m["cmdline"].as_str().unwrap().contains("double-fork --setsid"),
        "{m}"
    );

    assert_eq!(e["lineage"], "forked");
    assert_eq!(
        e["creator_alive"], false,
        "its creator (the intermediate child) exited: {e}"
    );
    assert_ne!(e["creator_pid"], e["ppid"]);
    assert_eq!(e["uid"], 0);
    assert_eq!(e["state"], "S");
    assert_eq!(e["comm"], "f-escapee");
    assert_ne!(e["sid"], m["sid"], "setsid gave it a new session");
    assert_eq!(e["pidns"], m["pidns"]);
    assert!(e["started"].as_str().unwrap().ends_with('Z'), "{e}");
    if e["cgroup"].is_string() {
        assert_eq!(e["cgroup"], e["cgroup_at_fork"], "it did not move: {e}");
    }
    let reasons: Vec<&str> = e["escape_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["reparented", "new-session", "renamed"], "{e}");

    // --escaped lists only the escapee.
    let out = inst.run(["ps", "--service", &service, "--escaped", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["pid"], escapee);
}

#[test]
fn the_tree_shows_a_double_forked_grandchild_under_its_creator() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("f-tree");
    let tree = inst.run_service(&service, &["double-fork", "--rename", "f-grandchild"]);
    let (main, escapee) = (tree.pid("main"), tree.pid("escapee"));
    let out = inst.run(["ps", "--service", &service, "--tree"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = shown.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not in the tree:\n{shown}"))
    };
    let depth = |i: usize| lines[i].find(|c: char| c.is_alphanumeric() || c == '[').unwrap();
    let (m, x, g) = (
        at(&format!(" {main}")),
        at("[exited]"),
        at(&format!("f-grandchild {escapee}")),
    );
    assert!(
        m < x && x < g,
        "main, then its exited child, then the grandchild:\n{shown}"
    );
    assert!(depth(m) < depth(x) && depth(x) < depth(g), "nesting:\n{shown}");
    assert!(lines[g].contains("ESCAPED: reparented"), "{shown}");
    assert!(
        lines[g].contains("(ppid "),
        "its real parent is shown too:\n{shown}"
    );
    assert!(
        !shown.contains("\x1b["),
        "no colour when stdout is not a terminal"
    );
}

/// `bpfkill log --follow --json` as a child, with its lines delivered on a channel.
struct Follow {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
}

impl Follow {
    fn start(inst: &Instance, service: &str) -> Self {
        let mut child = inst
            .cmd()
            .args(["log", "--follow", "--json", "--service", service])
            .stdout(Stdio::piped())
            .spawn()
            .expect("bpfkill log --follow");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Follow { child, lines }
    }

    /// Waits for a record satisfying `want`; returns it.
    fn until(&self, what: &str, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        // A ceiling for slow (emulated) machines, not a delay: records arrive as written.
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if want(&v) => return v,
                Ok(_) => continue,
                Err(_) => panic!("no {what} in the followed log"),
            }
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_journal_records_exit_codes_and_killing_signals_and_survives_a_torn_tail() {
    require_privileges!();
    let inst = Instance::unloaded();
    let daemon = inst.start_daemon("tracking loaded");
    let service = unique("f-log");
    let follow = Follow::start(&inst, &service);
    let mut tree = inst.run_service(&service, &["exit-codes"]);
    let (main, exited, victim) = (tree.pid("main"), tree.pid("exited"), tree.pid("victim"));
    tree.pids.retain(|&p| p != exited); // long gone; its number may be reused
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(victim as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    assert!(wait_gone(victim, GONE));

    let fork = follow.until("fork of the exited child", |r| {
        r["event"] == "fork" && r["pid"] == exited
    });
    assert_eq!(fork["creator_pid"], main);
    assert_eq!(fork["ppid"], main);
    assert_eq!(fork["service"], service.as_str());
    let three = follow.until("exit with code 3", |r| r["event"] == "exit" && r["pid"] == exited);
    assert_eq!(three["exit_code"], 3, "{three}");
    assert_eq!(three["signal"], serde_json::Value::Null, "{three}");
    let killed = follow.until("exit by SIGKILL", |r| r["event"] == "exit" && r["pid"] == victim);
    assert_eq!(killed["signal"], "SIGKILL", "{killed}");
    assert_eq!(killed["exit_code"], serde_json::Value::Null, "{killed}");
    for key in [
        "time",
        "event",
        "service",
        "pid",
        "ppid",
        "creator_pid",
        "exe",
        "comm",
        "exit_code",
        "signal",
    ] {
        assert!(killed.get(key).is_some(), "field {key} missing: {killed}");
    }
    let t = killed["time"].as_str().unwrap();
    assert!(t.ends_with('Z') && t.contains('T'), "RFC 3339 time: {t}");

    // History without --follow: the same records, filtered by pid.
    let out = inst.run([
        "log",
        "--service",
        &service,
        "--pid",
        &victim.to_string(),
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let text_out = String::from_utf8_lossy(&out.stdout).into_owned();
    let records: Vec<serde_json::Value> = text_out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(records.iter().all(|r| r["pid"] == victim), "{text_out}");
    assert_eq!(
        records.iter().filter(|r| r["event"] == "exit").count(),
        1,
        "{text_out}"
    );
    let human = inst.run(["log", "--service", &service]);
    let human = String::from_utf8_lossy(&human.stdout).into_owned();
    assert!(
        human.contains(&format!("exit pid={victim} killed by SIGKILL")),
        "{human}"
    );
    assert!(human.contains(&format!("exit pid={exited} code=3")), "{human}");

    // A crash mid-record leaves a torn tail: it is skipped with a warning, never fatal ...
    daemon.stop();
    drop(follow);
    let active = inst.journal_dir.join("events.jsonl");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&active).unwrap();
        f.write_all(br#"{"time":"2026-11-24T00:00:00Z","event":"fo"#)
            .unwrap();
    }
    let out = inst.run(["log", "--service", &service, "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{}",
        text(&out)
    );
    let before = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(before >= 5, "{}", text(&out));

    // ... and a restarted daemon appends on a fresh line after it.
    let daemon = inst.start_daemon("adopted pinned tracking");
    let follow = Follow::start(&inst, &service);
    let mut t2 = inst.run_service(&service, &["exit-codes"]);
    let exited2 = t2.pid("exited");
    t2.pids.retain(|&p| p != exited2);
    follow.until("exit of the second run", |r| {
        r["event"] == "exit" && r["pid"] == exited2
    });
    let out = inst.run(["log", "--service", &service, "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).lines().count() > before);
    daemon.stop();
}

#[test]
fn lost_events_are_counted_and_shown_in_status_and_log() {
    require_privileges!();
    let inst = Instance::unloaded();
    let daemon = inst.start_daemon("tracking loaded");
    // Freeze the consumer, overflow the 8 MiB ring buffer (two events per child), thaw it.
    let pid = daemon.pid();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    let service = unique("f-lost");
    let tree = inst.run_service(&service, &["churn", "16000"]);
    let _ = tree.pid("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    let (_, status) = inst.status();
    let lost = status["counters"]["events_lost"]
        .as_u64()
        .unwrap_or_else(|| panic!("no events_lost: {status}"));
    assert!(lost > 0, "the ring buffer must have overflowed: {status}");
    let follow = Follow::start(&inst, &service);
    let rec = follow.until("a lost record", |r| r["event"] == "lost");
    assert!(rec["lost"].as_u64().unwrap() > 0, "{rec}");
    drop(follow);
    daemon.stop();
}

#[test]
fn processes_adopted_by_track_have_unknown_lineage() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("f-track");
    // A tree that existed before tracking: a process with 3 children.
    let mut cmd = std::process::Command::new(bpfkill_tests::forker_bin());
    cmd.args(["spawn", "3"]);
    let tree = Tree::spawn(cmd);
    let root = tree.pid("pid");
    let out = inst.run(["track", "--service", &service, "--pid", &root.to_string()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let ps = inst.ps(&service);
    assert_eq!(ps.len(), 4, "{ps:#?}");
    for e in ps.iter().filter(|e| e["pid"] != root) {
        assert_eq!(e["lineage"], "unknown", "{e}");
        assert_eq!(
            e["creator_pid"],
            serde_json::Value::Null,
            "never an invented creator: {e}"
        );
        assert_eq!(e["creator_alive"], serde_json::Value::Null, "{e}");
    }
    let out = inst.run(["-s", "KILL", "--service", &service]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(wait_gone(root, GONE));
}

#[test]
fn ps_from_the_kernel_task_iterator_matches_proc() {
    require_privileges!();
    let inst = Instance::loaded();
    let iterator = inst.pin_dir.join("links/bpfkill_snapshot_even");
    if !iterator.exists() {
        bpfkill_tests::skip("the kernel did not load the sleepable task iterator (ps reads /proc)");
        return;
    }
    let service = unique("f-iter");
    let a = inst.run_service(&service, &["double-fork", "--setsid", "--rename", "f-iter-esc"]);
    let b = inst.run_service(&service, &["pidns", "--rename", "f-iter-ns"]);
    let c = inst.run_service(&service, &["threads", "3"]);
    // A title rewritten as sshd's: the kernel's copy of the argument area ends without a NUL.
    let d = inst.run_service(&service, &["retitle", "f-iter: alice@pts/0 [priv]"]);
    for tree in [&a, &b, &c, &d] {
        tree.settle(); // a state read while one is still running would differ between reads
    }
    let listing = |source: &str| -> Vec<serde_json::Value> {
        let out = inst
            .cmd()
            .env("BPFKILL_PS_SOURCE", source)
            .args(["ps", "--service", &service, "--json"])
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", text(&out));
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let (kernel, proc) = (listing("kernel"), listing("proc"));
    assert_eq!(kernel.len(), 7, "{kernel:#?}");
    for (k, p) in kernel.iter().zip(&proc) {
        assert_eq!(k, p, "the task iterator and /proc disagree");
    }
    let retitled = kernel
        .iter()
        .find(|e| e["pid"] == d.pid("main"))
        .unwrap_or_else(|| panic!("the retitled process is not listed: {kernel:#?}"));
    let cmdline = retitled["cmdline"].as_str().unwrap();
    assert!(
        cmdline.starts_with("f-iter: alice@pts/0 [priv] ===")
            && cmdline.ends_with('=')
            && !cmdline.contains("rrrr"),
        "the whole rewritten title, nothing of the environment: {cmdline:?}"
    );
}

/// The kernel's (major, minor).
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut n = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok());
    (n.next().unwrap(), n.next().unwrap())
}

fn doctor(inst: &Instance) -> serde_json::Value {
    let out = inst.run(["doctor", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("doctor JSON")
}

fn outcome<'a>(report: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .map(|c| c["outcome"].as_str().unwrap())
}

#[test]
fn doctor_says_what_this_kernel_offers_and_status_names_what_it_lacks() {
    require_privileges!();
    let version = kernel_version();
    // On a host with no tracking: a scratch load, gone afterwards.
    let empty = Instance::unloaded();
    // For the console log of each kernel of the matrix.
    eprintln!("{}", String::from_utf8_lossy(&empty.run(["doctor"]).stdout));
    let scratch = doctor(&empty);
    assert_eq!(scratch["scratch_load"], true, "{scratch:#}");
    assert_eq!(scratch["usable"], true, "{scratch:#}");
    for required in ["BTF", "tracking", "pidfd"] {
        assert_eq!(outcome(&scratch, required), Some("ok"), "{required}: {scratch:#}");
    }
    let leftovers = |dir: &str| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("bpfkill-doctor-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(leftovers("/sys/fs/bpf").is_empty(), "scratch pins left");
    // What degrades where (Debian's kernels carry none of these features early).
    let expect = [
        ("kernel kill", version >= (6, 13)),
        ("ps iterator", version >= (5, 18)),
        ("skipped runs", version >= (5, 12)),
        ("batch reads", true),
    ];
    for (name, present) in expect {
        let found = outcome(&scratch, name);
        // Skipped runs may be counted and non-zero on a preemptible kernel: degraded then.
        if name == "skipped runs" && present {
            assert!(found.is_some(), "{name}: {scratch:#}");
            continue;
        }
        let want = if present { "ok" } else { "degraded" };
        assert_eq!(found, Some(want), "{name} on {version:?}: {scratch:#}");
    }
    // Whether the kernel allows LSM programs is the host's choice, not the version's (this
    // VM's 6.18 refuses them): the check is always there, with its reason when degraded.
    assert!(outcome(&scratch, "fork backstop").is_some(), "{scratch:#}");
    if let Some(kill) = outcome(&scratch, "cgroup.kill") {
        assert_eq!(kill == "ok", version >= (5, 14), "cgroup.kill on {version:?}");
    }

    // On a live tree: the same answers, and status lists the degraded ones.
    let inst = Instance::loaded();
    let live = doctor(&inst);
    assert_eq!(live["scratch_load"], false);
    let (_, status) = inst.status();
    let missing: Vec<&str> = status["missing_features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for name in ["kernel kill", "ps iterator", "fork backstop"] {
        assert_eq!(outcome(&live, name), outcome(&scratch, name), "{name}");
        assert_eq!(
            missing.contains(&name),
            outcome(&live, name) == Some("degraded"),
            "{name}: status {missing:?}"
        );
    }
    assert_eq!(status["kernel_kill"], outcome(&live, "kernel kill") == Some("ok"));
    let human = inst.run(["status"]);
    for name in &missing {
        assert!(
            text(&human).contains(&format!("degraded: {name}:")),
            "{name}: {}",
            text(&human)
        );
    }
}
