//! `cargo xtask bench`: bpfkill against pkill, side by side in one run, on real process trees
//! (release builds). Each scenario measures the time from starting the killer until no
//! process of the tree is alive.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// Live (non-zombie) processes whose command line contains the word `marker`.
fn survivors(marker: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|s| s.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if !cmdline.split(|b| *b == 0).any(|w| w == marker.as_bytes()) {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .unwrap_or("Z");
        if state != "Z" && state != "X" {
            n += 1;
        }
    }
    n
}

/// Live (non-zombie) processes in a cgroup. Used for the bomb: reading 2000 command lines
/// while they fork and exec would measure mmap-lock contention, not the kill.
fn cgroup_survivors(dir: &Path) -> usize {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    procs
        .lines()
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .unwrap_or("Z");
            state != "Z" && state != "X"
        })
        .count()
}

/// Waits until `alive()` is zero; None on timeout.
fn until_none(alive: impl Fn() -> usize, start: Instant, limit: Duration) -> Option<Duration> {
    loop {
        if alive() == 0 {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until no process carries the marker; None on timeout. Polls /proc: the processes
/// are not our children, and a whole tree has no single event to wait on.
fn until_gone(marker: &str, start: Instant, limit: Duration) -> Option<Duration> {
    until_none(|| survivors(marker), start, limit)
}

fn real_time() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: valid sched_param, this thread only.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        eprintln!("bench: no real-time priority; figures under load will be noisy");
    }
}

fn normal_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: as above.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
}

struct Bench {
    bin: PathBuf,
    forker: PathBuf,
    pin_dir: String,
}

impl Bench {
    fn bpfkill(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("BPFKILL_PIN_DIR", &self.pin_dir);
        c
    }

    fn start_service(&self, service: &str, args: &[&str]) -> Result<Child> {
        let mut child = self
            .bpfkill()
            .args(["run", "--service", service, "--"])
            .arg(&self.forker)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        if !line.starts_with("ready") {
            bail!("helper did not start: {line:?}");
        }
        Ok(child)
    }

    fn bpfkill_kill(
        &self,
        service: &str,
        alive: impl Fn() -> usize,
        limit: Duration,
    ) -> Result<Option<Duration>> {
        let t = Instant::now();
        let status = self
            .bpfkill()
            .args(["-s", "KILL", "--service", service])
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("bpfkill failed: {status}");
        }
        Ok(until_none(alive, t, limit))
    }

    fn pkill_kill(
        &self,
        pkill_args: &[&str],
        alive: impl Fn() -> usize,
        limit: Duration,
    ) -> Option<Duration> {
        // pkill sees only what exists when it scans: repeat it, as an admin would, until
        // nothing is left.
        let t = Instant::now();
        loop {
            // pkill itself can block for minutes reading /proc under a fork bomb: it gets
            // only what is left of the time limit.
            if let Ok(mut p) = Command::new("pkill").arg("-KILL").args(pkill_args).spawn() {
                while matches!(p.try_wait(), Ok(None)) {
                    if t.elapsed() > limit {
                        let _ = p.kill();
                        let _ = p.wait();
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            if alive() == 0 {
                return Some(t.elapsed());
            }
            if t.elapsed() > limit {
                return None;
            }
        }
    }
}

fn fmt(d: Option<Duration>, limit: Duration) -> String {
    match d {
        Some(d) => format!("{:.1} ms", d.as_secs_f64() * 1e3),
        None => format!("> {:.0} s (gave up)", limit.as_secs_f64()),
    }
}

fn ratio(a: Option<Duration>, b: Option<Duration>, limit: Duration) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.1}x", b.as_secs_f64() / a.as_secs_f64().max(1e-6)),
        (Some(a), None) => format!("> {:.0}x", limit.as_secs_f64() / a.as_secs_f64().max(1e-6)),
        _ => "n/a".into(),
    }
}

fn cleanup(marker: &str) {
    let _ = Command::new("pkill").args(["-KILL", "-f", marker]).status();
    until_gone(marker, Instant::now(), Duration::from_secs(60));
}

fn pids_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut r = right.split_whitespace();
        (r.next()? == "cgroup" && r.nth(1)?.split(',').any(|o| o == "pids"))
            .then(|| PathBuf::from(left.split_whitespace().nth(4).unwrap_or("")))
    })
}

pub fn run(root: &Path) -> Result<()> {
    let bench = Bench {
        bin: root.join("target/release/bpfkill"),
        forker: root.join("target/release/forker"),
        pin_dir: format!("/sys/fs/bpf/bpfkill-bench-{}", std::process::id()),
    };
    let status = bench.bpfkill().arg("load").stdout(Stdio::null()).status()?;
    if !status.success() {
        bail!("bpfkill load failed");
    }
    let result = scenarios(&bench).and_then(|()| forensics(&bench));
    let _ = bench.bpfkill().arg("unload").stdout(Stdio::null()).status();
    result
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Times `cmd` (stdout discarded) `runs` times; returns the median.
fn time_command(mut cmd: impl FnMut() -> Command, runs: usize) -> Result<Duration> {
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let status = cmd().stdout(Stdio::null()).status()?;
        times.push(t.elapsed());
        if !status.success() {
            bail!("command failed: {status}");
        }
    }
    Ok(median(times))
}

/// Forensics: `bpfkill ps --json` over 10,000 tagged processes against procps `ps` listing
/// the same fields for every process; then the journal under a fork storm.
fn forensics(b: &Bench) -> Result<()> {
    let marker = format!("bench-ps-{}", std::process::id());
    let service = "bench-ps";
    let mut child = b.start_service(service, &["spawn", "10000", "--marker", &marker])?;
    let result = (|| -> Result<(Duration, Duration, Duration, usize)> {
        let listed = b
            .bpfkill()
            .args(["ps", "--service", service, "--json"])
            .output()?;
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout)?;
        let ps_with = |source: &'static str| {
            move || {
                let mut c = b.bpfkill();
                c.env("BPFKILL_PS_SOURCE", source)
                    .args(["ps", "--service", service, "--json"]);
                c
            }
        };
        let ours = time_command(ps_with("kernel"), 7)?;
        let from_proc = time_command(ps_with("proc"), 7)?;
        let procps = time_command(
            || {
                let mut c = Command::new("ps");
                c.args(["-e", "-o", "pid,ppid,uid,stat,sid,lstart,comm,args"]);
                c
            },
            7,
        )?;
        Ok((ours, from_proc, procps, entries.len()))
    })();
    cleanup(&marker);
    let _ = child.wait();
    let (ours, from_proc, procps, n) = result?;

    // The journal under a fork storm: 20,000 children forked and exited as fast as one
    // process can, with the daemon writing every fork and exit.
    let journal = std::env::temp_dir().join(format!("bpfkill-bench-journal-{}", std::process::id()));
    let mut daemon = b
        .bpfkill()
        .arg("daemon")
        .env("BPFKILL_JOURNAL_DIR", &journal)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()?;
    // The daemon announces nothing at warn level: wait for its journal file to appear.
    let active = journal.join("events.jsonl");
    let t0 = Instant::now();
    while !active.exists() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let storm_marker = format!("bench-storm-{}", std::process::id());
    let forks = 20_000;
    let t = Instant::now();
    let mut storm = b.start_service(
        "bench-storm",
        &["churn", &forks.to_string(), "--marker", &storm_marker],
    )?;
    let storm_time = t.elapsed();
    // Wait until the journal holds every fork and exit of the storm (or gives up).
    let expected = 2 * forks;
    let count = || {
        let text = std::fs::read_to_string(&active).unwrap_or_default();
        let storm: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("\"service\":\"bench-storm\""))
            .collect();
        let lost: u64 = text
            .lines()
            .filter(|l| l.contains("\"event\":\"lost\""))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["lost"].as_u64())
            .sum();
        (
            storm.iter().filter(|l| !l.contains("\"event\":\"exec\"")).count(),
            lost,
        )
    };
    let mut journaled = (0, 0);
    let t1 = Instant::now();
    while t1.elapsed() < Duration::from_secs(60) {
        journaled = count();
        if journaled.0 >= expected || journaled.1 > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let lag = t1.elapsed();
    cleanup(&storm_marker);
    let _ = storm.wait();
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(&journal);

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "\n{:<44} {:>14} {:>14} {:>14} {:>9}",
        "forensics (median of 7)", "task iterator", "bpfkill /proc", "procps ps -e", "ratio"
    );
    println!(
        "{:<44} {:>11.1} ms {:>11.1} ms {:>11.1} ms {:>8.1}x",
        format!("ps --service --json, {n} tagged processes"),
        ms(ours),
        ms(from_proc),
        ms(procps),
        procps.as_secs_f64() / ours.as_secs_f64().max(1e-9)
    );
    println!(
        "journal under a fork storm: {forks} forks+exits in {:.2} s ({:.0} forks/s); {} of {expected} events journaled, {} lost; caught up {:.0} ms after the storm",
        storm_time.as_secs_f64(),
        forks as f64 / storm_time.as_secs_f64(),
        journaled.0,
        journaled.1,
        lag.as_secs_f64() * 1e3
    );
    Ok(())
}

type Row = (&'static str, &'static str, Option<Duration>);

/// Runs the helper with `args` as a service once per tool, and times each tool until no
/// process carrying the run's marker is alive. The tree is cleaned up whatever happens.
fn marker_scenario(
    b: &Bench,
    name: &'static str,
    tag: &str,
    args: &[&str],
    warmup: Duration,
    limit: Duration,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for tool in ["bpfkill", "pkill"] {
        let marker = format!("bench-{tag}-{tool}-{}", std::process::id());
        let service = format!("bench-{tag}-{tool}");
        let mut full_args = args.to_vec();
        full_args.extend(["--marker", &marker]);
        let mut child = b.start_service(&service, &full_args)?;
        std::thread::sleep(warmup);
        let alive = || survivors(&marker);
        let t = if tool == "bpfkill" {
            b.bpfkill_kill(&service, alive, limit)
        } else {
            Ok(b.pkill_kill(&["-f", &marker], alive, limit))
        };
        cleanup(&marker);
        let _ = child.wait();
        rows.push((name, tool, t?));
    }
    Ok(rows)
}

fn scenarios(b: &Bench) -> Result<()> {
    let limit = Duration::from_secs(30);
    let mut rows = Vec::new();

    // 1. A service with 1000 sleeping processes; 2. a process forking in a tight loop.
    rows.extend(marker_scenario(
        b,
        "1000 sleeping processes",
        "spawn",
        &["spawn", "1000"],
        Duration::ZERO,
        limit,
    )?);
    rows.extend(marker_scenario(
        b,
        "tight fork loop",
        "loop",
        &["fork-loop"],
        Duration::from_millis(300), // let the loop run at full speed
        limit,
    )?);

    // 3. A fork bomb confined to pids.max=2000.
    if let Some(mount) = pids_mount() {
        for tool in ["bpfkill", "pkill"] {
            let marker = format!("bench-bomb-{tool}-{}", std::process::id());
            let dir = mount.join(format!("bpfkill-bench-{tool}-{}", std::process::id()));
            std::fs::create_dir(&dir)?;
            std::fs::write(dir.join("pids.max"), "2000")?;
            let mut child = b.start_service(
                &format!("bench-bomb-{tool}"),
                &["bomb", dir.to_str().unwrap_or(""), "--marker", &marker],
            )?;
            real_time();
            let current = || {
                std::fs::read_to_string(dir.join("pids.current"))
                    .unwrap_or_default()
                    .trim()
                    .parse::<u32>()
                    .unwrap_or(0)
            };
            let t0 = Instant::now();
            while current() < 1900 && t0.elapsed() < limit {
                std::thread::sleep(Duration::from_millis(5));
            }
            let alive = || cgroup_survivors(&dir);
            let t = if tool == "bpfkill" {
                b.bpfkill_kill(&format!("bench-bomb-{tool}"), alive, limit)
            } else {
                // By name: the bomb's processes are all called `forker`.
                Ok(b.pkill_kill(&["-x", "forker"], alive, limit))
            };
            // Stop the bomb for good: no more forks, then kill what is left.
            let _ = std::fs::write(dir.join("pids.max"), "0");
            until_none(
                || {
                    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                    for pid in procs.lines() {
                        let _ = Command::new("kill")
                            .args(["-9", pid.trim()])
                            .stderr(Stdio::null())
                            .status();
                    }
                    cgroup_survivors(&dir)
                },
                Instant::now(),
                Duration::from_secs(120),
            );
            rows.push(("fork bomb, pids.max=2000", tool, t?));
            normal_priority();
            let _ = child.wait();
            let t0 = Instant::now();
            while std::fs::remove_dir(&dir).is_err() && t0.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    } else {
        println!("fork bomb scenario skipped: no v1 pids cgroup hierarchy");
    }

    println!(
        "\n{:<28} {:>18} {:>22} {:>12}",
        "scenario (time to 0 alive)", "bpfkill", "pkill (repeated)", "pkill/bpfkill"
    );
    for pair in rows.chunks(2) {
        let [(name, _, a), (_, _, p)] = pair else { continue };
        println!(
            "{:<28} {:>18} {:>22} {:>12}",
            name,
            fmt(*a, limit),
            fmt(*p, limit),
            ratio(*a, *p, limit)
        );
    }
    Ok(())
}
