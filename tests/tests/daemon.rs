//! The daemon as a system service: one per pin directory, a journal that survives a full
//! disk, health in `status`, and logs fit for files and log shippers.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use bpfkill_tests::{code, is_alive, poll_until, require_privileges, text, unique, Instance};

/// A ceiling for slow (emulated) machines, not a delay.
const SLOW: Duration = Duration::from_secs(120);

/// A small tmpfs, unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(size: &str) -> Self {
        let dir = std::env::temp_dir().join(unique("bpfkill-smallfs"));
        std::fs::create_dir_all(&dir).expect("mount point");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "bpfkill-test"])
            .arg(&dir)
            .status()
            .expect("mount");
        assert!(st.success(), "mount a tmpfs of {size}");
        Self(dir)
    }

    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("remount");
        assert!(st.success(), "remount the tmpfs at {size}");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Whether the daemon process runs (not a zombie).
fn alive(pid: rustix::process::Pid) -> bool {
    is_alive(pid.as_raw_nonzero().get() as u32)
}

#[test]
fn a_second_daemon_fails_at_once_with_75_even_with_another_journal() {
    require_privileges!();
    let inst = Instance::loaded();
    let first = inst.start_daemon("consuming events");
    for journal in [
        inst.journal_dir.clone(),
        std::env::temp_dir().join(unique("other-journal")),
    ] {
        let out = inst
            .cmd()
            .arg("daemon")
            .env("BPFKILL_JOURNAL_DIR", &journal)
            .output()
            .unwrap();
        assert_eq!(code(&out), 75, "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("another bpfkill daemon"), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        let _ = std::fs::remove_dir_all(&journal);
    }
    assert!(alive(first.pid()), "the first daemon was disturbed");
    first.stop();
}

#[test]
fn a_full_journal_disk_degrades_the_daemon_which_resumes_when_space_returns() {
    require_privileges!();
    let fs = SmallFs::mount("64k");
    let mut inst = Instance::loaded();
    inst.journal_dir = fs.0.join("journal");
    let daemon = inst.start_daemon("consuming events");
    let service = unique("full");
    // Fork and exit records until the 64 KiB filesystem is full.
    let mut churns = Vec::new();
    assert!(
        poll_until(SLOW, || {
            if churns.len() < 40 {
                let mut c = inst.cmd();
                c.args(["run", "--service", &service, "--"])
                    .arg(bpfkill_tests::forker_bin())
                    .args(["churn", "200"]);
                churns.push(bpfkill_tests::Tree::spawn(c));
            }
            let (_, s) = inst.status();
            s["daemon"]["journal"]["state"] == "degraded"
        }),
        "the journal never filled: {:#}",
        inst.status().1
    );
    assert!(alive(daemon.pid()), "a full journal stopped the daemon");
    let (rc, s) = inst.status();
    assert_eq!(rc, 1, "degraded: {s:#}");
    assert_eq!(s["health"], "degraded", "{s:#}");
    let human = inst.run(["status"]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains("DEGRADED"), "{human}");
    assert!(human.contains("health:   degraded"), "{human}");

    // Space returns: the daemon writes again, with a record of the gap.
    fs.resize("16m");
    assert!(
        poll_until(SLOW, || inst.status().0 == 0),
        "never healthy again: {:#}",
        inst.status().1
    );
    let (_, s) = inst.status();
    assert!(s["daemon"]["journal"]["dropped"].as_u64().unwrap() > 0, "{s:#}");
    let log = inst.run(["log", "--json"]);
    assert_eq!(code(&log), 0, "{}", text(&log));
    let gap = String::from_utf8_lossy(&log.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["event"] == "journal-lost")
        .unwrap_or_else(|| panic!("no journal-lost record: {}", text(&log)));
    assert!(gap["lost"].as_u64().unwrap() > 0, "{gap}");
    assert!(gap["error"].as_str().unwrap().contains("No space"), "{gap}");
    drop(churns);
    daemon.stop();
}

#[test]
fn status_reports_the_daemon_its_journal_and_map_fill() {
    require_privileges!();
    let inst = Instance::loaded();
    let (rc, s) = inst.status();
    assert_eq!(rc, 0, "{s:#}");
    let out = inst.run(["status", "--daemon"]);
    assert_eq!(code(&out), 69, "no daemon runs: {}", text(&out));
    let daemon = inst.start_daemon("consuming events");
    let (rc, s) = inst.status();
    assert_eq!(rc, 0, "{s:#}");
    assert_eq!(code(&inst.run(["status", "--daemon"])), 0);
    let d = &s["daemon"];
    assert_eq!(
        d["pid"].as_i64().unwrap(),
        i64::from(daemon.pid().as_raw_nonzero().get())
    );
    assert_eq!(d["version"], env!("CARGO_PKG_VERSION"), "{s:#}");
    assert!(d["uptime_secs"].is_u64(), "{s:#}");
    assert_eq!(d["config"], inst.config.to_string_lossy().as_ref(), "{s:#}");
    assert!(d["last_reload"].as_str().unwrap().ends_with('Z'), "{s:#}");
    assert_eq!(
        d["journal"]["dir"],
        inst.journal_dir.to_string_lossy().as_ref(),
        "{s:#}"
    );
    assert_eq!(d["journal"]["state"], "ok", "{s:#}");
    assert_eq!(s["health"], "ok", "{s:#}");
    for map in ["tags", "registry", "exe_rules", "comm_rules", "leave_rules"] {
        let pct = s["map_fill"][map].as_f64().unwrap_or(-1.0);
        assert!((0.0..=100.0).contains(&pct), "{map}: {s:#}");
    }
    assert!(s["events_lost"].is_u64(), "{s:#}");
    daemon.stop();
}

/// The daemon's first log lines, up to "consuming events".
fn first_log_lines(inst: &Instance, args: &[&str]) -> Vec<String> {
    let mut child = inst
        .cmd()
        .arg("daemon")
        .args(args)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.contains("consuming events");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn logs_are_plain_timestamped_text_off_a_terminal_or_json_lines() {
    require_privileges!();
    let inst = Instance::loaded();
    let text_lines = first_log_lines(&inst, &[]);
    assert!(!text_lines.is_empty());
    for l in &text_lines {
        assert!(!l.contains('\u{1b}'), "escape codes in a log file: {l:?}");
        assert!(
            l.len() > 20 && l.as_bytes()[..4].iter().all(u8::is_ascii_digit) && l.as_bytes()[4] == b'-',
            "no timestamp: {l:?}"
        );
    }
    let json_lines = first_log_lines(&inst, &["--log-format", "json"]);
    for l in &json_lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{v}");
        assert!(v["fields"]["message"].is_string(), "{v}");
    }
    assert!(json_lines.iter().any(|l| l.contains("consuming events")));
}

#[test]
fn the_journal_dir_path_in_status_is_escaped_for_people() {
    require_privileges!();
    let mut inst = Instance::loaded();
    let dir = std::env::temp_dir().join(format!("{}\u{1b}[31mred", unique("esc-journal")));
    inst.journal_dir = dir.clone();
    let daemon = inst.start_daemon("consuming events");
    let out = inst.run(["status"]);
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(!human.contains('\u{1b}'), "{human}");
    assert!(
        human.contains("\\x1b[31mred") || human.contains("\\e[31mred"),
        "{human}"
    );
    daemon.stop();
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}

#[test]
fn the_metrics_endpoint_serves_bpfkill_series_to_an_http_client() {
    require_privileges!();
    let inst = Instance::loaded();
    // A free loopback port, given back just before the daemon binds it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = inst
        .cmd()
        .args(["daemon", "--metrics", &port.to_string()])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("consuming events") {
        assert!(log.read_line(&mut seen).unwrap() > 0, "daemon exited: {seen}");
    }
    assert!(
        seen.contains(&format!("http://127.0.0.1:{port}/metrics")),
        "{seen}"
    );
    std::thread::spawn(move || for _ in log.lines() {});
    let service = unique("metered");
    let tree = inst.run_service(&service, &["double-fork", "--setsid", "--rename", "metered-esc"]);
    tree.settle();

    let body = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .expect("GET /metrics")
        .into_string()
        .unwrap();
    let series = |name: &str| {
        body.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
            .to_string()
    };
    let procs = series(&format!("bpfkill_service_processes{{service=\"{service}\"}}"));
    assert!(procs.ends_with(" 2"), "{procs}");
    let esc = series(&format!(
        "bpfkill_service_escaped_processes{{service=\"{service}\"}}"
    ));
    assert!(esc.ends_with(" 1"), "{esc}");
    series(&format!(
        "bpfkill_service_kernel_kills_total{{service=\"{service}\"}}"
    ));
    series("bpfkill_events_lost_total");
    series("bpfkill_journal_events_total");
    series("bpfkill_map_fill_ratio{map=\"tags\"}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    let missing = ureq::get(&format!("http://127.0.0.1:{port}/nothing")).call();
    assert!(matches!(missing, Err(ureq::Error::Status(404, _))), "{missing:?}");
    let _ = child.kill();
    let _ = child.wait();
}
