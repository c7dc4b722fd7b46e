//! `cargo xtask bench [--quick]`: what tracking costs every process, and how close the kill
//! comes to the kernel's own `cgroup.kill`, every figure a ratio of contenders measured side
//! by side in one run (interleaved rounds, median and spread), on real process trees with the
//! release builds.
//!
//! - [`overhead`]: fork+exec+exit, fork+exit and thread storms with tracking unloaded and
//!   loaded, untagged, tagged and with configured rules.
//! - [`kill`]: 1000 and 10,000 sleeping processes killed by bpfkill, `cgroup.kill`, a /proc
//!   walk-and-kill loop and pkill; a fork bomb under a pids limit.
//! - [`forensics`]: `ps` over 10,000 processes, the journal under a storm, the daemon's
//!   memory, and job mode's wrapper cost.
//! - [`safety`]: the run never outlives its limits or its interruption: stale pins and
//!   cgroups of an earlier run are removed, SIGINT/SIGTERM clean up.
//!
//! Results: a table on stdout and `target/bench/results.json` (keys in README, "Benchmarks").

mod forensics;
mod kill;
mod overhead;
mod report;
mod safety;
mod tree;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

pub use report::Results;

/// How big and how long.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// `--quick`: fewer rounds and smaller storms (CI's smoke test).
    pub quick: bool,
    /// Interleaved rounds per comparison.
    pub rounds: usize,
    /// Rounds of the 1000-process kill (its ratio to cgroup.kill is a target, and one
    /// round's noise on two cores is ±20%: with 9 rounds, the median of ratios of the same
    /// build moved from 1.09 to 1.27 between runs).
    pub rounds_1k: usize,
    /// Processes (or threads) per storm.
    pub storm: usize,
    /// Rounds of the 10,000-process kill.
    pub rounds_10k: usize,
    /// Fork bombs killed by bpfkill.
    pub bomb_rounds: usize,
    /// Time limit of one kill or one baseline.
    pub limit: Duration,
}

impl Scale {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                rounds: 2,
                rounds_1k: 3,
                storm: 1000,
                rounds_10k: 1,
                bomb_rounds: 1,
                limit: Duration::from_secs(15),
            }
        } else {
            Self {
                quick,
                rounds: 5,
                rounds_1k: 21,
                storm: 20_000,
                rounds_10k: 7,
                bomb_rounds: 5,
                limit: Duration::from_secs(30),
            }
        }
    }
}

/// The binaries under test and where their tracking lives.
pub struct Bench {
    bin: PathBuf,
    forker: PathBuf,
    pins: PathBuf,
    journal: PathBuf,
    config: PathBuf,
    scale: Scale,
}

impl Bench {
    /// `bpfkill` with the bench's own pin directory, journal and (empty) configuration.
    fn bpfkill(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("BPFKILL_PIN_DIR", &self.pins)
            .env("BPFKILL_JOURNAL_DIR", &self.journal)
            .env("BPFKILL_CONFIG", &self.config)
            .env("BPFKILL_SOCKET", self.journal.with_file_name("bpfkill.sock"))
            .env_remove("RUST_LOG");
        c
    }

    /// Runs `bpfkill ARGS` to completion; fails on a non-zero exit.
    fn bpfkill_ok(&self, args: &[&str]) -> Result<()> {
        let out = self.bpfkill().args(args).stdout(Stdio::null()).output()?;
        if !out.status.success() {
            bail!(
                "bpfkill {}: {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn load(&self) -> Result<()> {
        self.bpfkill_ok(&["load"])
    }

    fn unload(&self) -> Result<()> {
        self.bpfkill_ok(&["unload"])
    }
}

/// The bench's daemon (journal on, the bench's configuration), stopped when dropped.
pub struct Daemon {
    child: std::process::Child,
}

impl Daemon {
    /// Starts `bpfkill daemon` (which loads tracking if needed) and waits until `status`
    /// says it is ready: its rules are in the kernel.
    fn start(b: &Bench) -> Result<Self> {
        let child = b
            .bpfkill()
            .arg("daemon")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start the daemon")?;
        safety::DAEMON.store(child.id(), std::sync::atomic::Ordering::SeqCst);
        let mut d = Self { child };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = b
                .bpfkill()
                .args(["status", "--daemon"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success();
            if ready {
                return Ok(d);
            }
            if let Some(st) = d.child.try_wait()? {
                bail!("the daemon exited: {st}");
            }
            if Instant::now() > deadline {
                bail!("the daemon was not ready within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its peak resident memory so far (VmHWM), KiB.
    fn peak_rss_kib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// What of its resident memory is BPF maps mapped into it (the event ring buffer, whose
    /// pages the kernel maps twice), KiB.
    fn mapped_maps_kib(&self) -> f64 {
        let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", self.child.id())).unwrap_or_default();
        let mut in_map = false;
        let mut kib = 0.0;
        for l in smaps.lines() {
            if l.split_whitespace()
                .next()
                .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
            {
                in_map = l.contains("anon_inode:bpf-map");
            } else if let Some(v) = l.strip_prefix("Rss:").filter(|_| in_map) {
                kib += v
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .unwrap_or(0.0);
            }
        }
        kib
    }

    /// Stops it (SIGTERM, then SIGKILL after 10 s) and returns its peak memory and how much
    /// of its memory is mapped BPF maps.
    fn stop(mut self) -> Option<(f64, f64)> {
        let peak = self.peak_rss_kib().map(|p| (p, self.mapped_maps_kib()));
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        safety::DAEMON.store(0, std::sync::atomic::Ordering::SeqCst);
        peak
    }
}

/// Reads the first line a helper prints (its `ready ...` or `storm ...` line) within `limit`.
fn first_line(stdout: std::process::ChildStdout, limit: Duration) -> Result<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(limit)
        .context("the helper printed nothing in time")
}

/// Median of samples (sorted copy).
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    s[s.len() / 2]
}

/// A group of figures that `--only` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Tracking's cost on fork, exec, exit and threads.
    Overhead,
    /// Kills of 1000 and 10,000 processes, the fork loop and the fork bomb.
    Kill,
    /// ps over 10,000 processes, the journal under a storm, memory, job mode.
    Forensics,
}

/// Runs every scenario (or those in `only`); writes the table and
/// `target/bench/results.json`.
pub fn run(root: &Path, bins: &Path, quick: bool, only: &[Scenario]) -> Result<()> {
    let wanted = |s: Scenario| only.is_empty() || only.contains(&s);
    let scale = Scale::new(quick);
    let name = "bpfkill-bench";
    let bench = Bench {
        bin: bins.join("bpfkill"),
        forker: bins.join("forker"),
        pins: PathBuf::from(format!("/sys/fs/bpf/{name}")),
        journal: std::env::temp_dir().join(name).join("journal"),
        config: std::env::temp_dir().join(name).join("config.toml"),
        scale,
    };
    let started = Instant::now();
    let cgroups = safety::prepare(&bench)?;
    std::fs::create_dir_all(&bench.journal)?;
    std::fs::write(&bench.config, "")?;
    let mut results = Results::new(scale);
    let outcome = (|| -> Result<()> {
        if wanted(Scenario::Overhead) {
            overhead::run(&bench, &mut results)?;
        }
        if wanted(Scenario::Kill) {
            kill::run(&bench, &cgroups, &mut results)?;
        }
        if wanted(Scenario::Forensics) {
            forensics::run(&bench, &cgroups, &mut results)?;
        }
        Ok(())
    })();
    safety::cleanup();
    outcome?;
    results.seconds = started.elapsed().as_secs_f64();
    results.print();
    let out = root.join("target/bench/results.json");
    std::fs::create_dir_all(out.parent().expect("parent"))?;
    std::fs::write(&out, serde_json::to_string_pretty(&results.to_json())? + "\n")?;
    println!("\nresults: {} ({:.0} s)", out.display(), results.seconds);
    Ok(())
}
