//! Listing, journal, memory and job mode: `ps --service --json` over 10,000 tagged processes
//! against procps `ps`; the journal under a fork storm (events per second with none lost);
//! the daemon's peak memory through every storm of the run; the cost of wrapping a command
//! in `bpfkill run --kill-on-exit`.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde_json::json;

use super::{
    median,
    report::{Figure, Results, Target},
    safety::Cgroups,
    tree::Tree,
    Bench, Daemon,
};

/// Wall time of `cmd` (stdout discarded), ms.
fn time_ms(mut cmd: Command) -> Result<f64> {
    let t = Instant::now();
    let status = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

pub fn run(b: &Bench, cg: &Cgroups, results: &mut Results) -> Result<()> {
    b.load()?;
    let outcome = listing(b, cg, results)
        .and_then(|()| journal(b, cg, results))
        .and_then(|()| job(b, results));
    let unloaded = b.unload();
    outcome?;
    unloaded?;
    let peak = results.peaks.iter().map(|p| p.0).fold(0.0, f64::max);
    let mapped = results.peaks.iter().map(|p| p.1).fold(0.0, f64::max);
    let per_daemon: Vec<f64> = results.peaks.iter().map(|p| p.0).collect();
    results.add(
        Figure::new(
            "daemon_peak_rss_kib",
            "daemon peak RSS through every storm",
            "KiB",
            Target::Below(16384.0),
        )
        .with_samples(if peak > 0.0 { vec![peak] } else { Vec::new() })
        .extra("per_daemon_kib", json!(per_daemon))
        .extra("of_which_mapped_bpf_maps_kib", json!(mapped)),
    );
    Ok(())
}

/// `ps --service --json` over 10,000 tagged processes (the task iterator, and /proc), against
/// procps `ps -e` listing the same fields for every process: interleaved, one of each per
/// round.
fn listing(b: &Bench, cg: &Cgroups, results: &mut Results) -> Result<()> {
    let tree = Tree::start(
        b,
        &cg.v2,
        "bench-ps",
        &["spawn", "10000", "--marker", "bench-ps-marker"],
    )?;
    // (processes listed, ms from the task iterator, from /proc, procps)
    type Listing = (usize, Vec<f64>, Vec<f64>, Vec<f64>);
    let measured = (|| -> Result<Listing> {
        let listed = b
            .bpfkill()
            .args(["ps", "--service", "bench-ps", "--json"])
            .output()?;
        let n = serde_json::from_slice::<Vec<serde_json::Value>>(&listed.stdout)?.len();
        let (mut kernel, mut proc, mut procps) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..b.scale.rounds.max(3) {
            let ps = |source: &str| {
                let mut c = b.bpfkill();
                c.env("BPFKILL_PS_SOURCE", source)
                    .args(["ps", "--service", "bench-ps", "--json"]);
                c
            };
            kernel.push(time_ms(ps("kernel"))?);
            proc.push(time_ms(ps("proc"))?);
            let mut c = Command::new("ps");
            c.args(["-e", "-o", "pid,ppid,uid,stat,sid,lstart,comm,args"]);
            procps.push(time_ms(c)?);
        }
        Ok((n, kernel, proc, procps))
    })();
    tree.destroy();
    let (n, kernel, proc, procps) = measured?;
    results.add(
        Figure::new(
            "ps_10k_ms",
            format!("ps --service --json, {n} tagged processes"),
            "ms",
            Target::Below(50.0),
        )
        .with_samples(kernel)
        .extra("listed", json!(n))
        .extra("from_proc_ms", json!(median(&proc)))
        .extra("procps_ps_e_ms", json!(median(&procps))),
    );
    Ok(())
}

/// The journal under a fork storm: a service forks and reaps `storm` children as fast as it
/// can while the daemon journals every fork and exit; the rate counts from the storm's start
/// until the journal holds them all.
fn journal(b: &Bench, cg: &Cgroups, results: &mut Results) -> Result<()> {
    let forks = b.scale.storm;
    let _ = std::fs::remove_dir_all(&b.journal);
    std::fs::create_dir_all(&b.journal)?;
    std::fs::write(&b.config, "")?;
    let daemon = Daemon::start(b)?;
    // Every journal file (`events.jsonl` and its rotations): the active one rotates at 16 MiB
    // during a storm of 20,000.
    let count = || {
        let mut text = String::new();
        if let Ok(dir) = std::fs::read_dir(&b.journal) {
            for e in dir.flatten() {
                if e.file_name().to_string_lossy().starts_with("events.jsonl") {
                    text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        let mut events = 0u64;
        let mut lost = 0u64;
        for l in text.lines() {
            if l.contains("\"event\":\"lost\"") {
                lost += serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["lost"].as_u64())
                    .unwrap_or(0);
            } else if l.contains("\"service\":\"bench-storm\"") && !l.contains("\"event\":\"exec\"") {
                events += 1;
            }
        }
        (events, lost)
    };
    let start = Instant::now();
    let tree = Tree::start(
        b,
        &cg.v2,
        "bench-storm",
        &["churn", &forks.to_string(), "--marker", "bench-storm"],
    );
    let expected = 2 * forks as u64;
    let mut seen = (0, 0);
    let deadline = Duration::from_secs(120);
    if tree.is_ok() {
        while start.elapsed() < deadline {
            seen = count();
            if seen.0 >= expected || seen.1 > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let took = start.elapsed().as_secs_f64();
    if let Ok(t) = tree {
        t.destroy();
    }
    results.peaks.extend(daemon.stop());
    let (events, lost) = seen;
    let mut f = Figure::new(
        "journal_events_per_s",
        format!("journal: fork+exit events of a {forks}-fork storm per second"),
        "events/s",
        Target::None,
    )
    .with_samples(vec![events as f64 / took])
    .extra("journaled", json!(events))
    .extra("expected", json!(expected));
    if events < expected {
        f = f.note(format!(
            "{events} of {expected} events journaled within {} s",
            deadline.as_secs()
        ));
    }
    results.add(f);
    results.add(
        Figure::new(
            "events_lost",
            "journal: events lost",
            "count",
            Target::AtMost(0.0),
        )
        .with_samples(vec![lost as f64]),
    );
    Ok(())
}

/// `bpfkill run --kill-on-exit -- /bin/true` against `/bin/true`, interleaved.
fn job(b: &Bench, results: &mut Results) -> Result<()> {
    let (mut wrapped, mut plain) = (Vec::new(), Vec::new());
    for i in 0..b.scale.rounds * 4 {
        let mut w = b.bpfkill();
        w.args([
            "run",
            "--service",
            &format!("bench-job-{i}"),
            "--kill-on-exit",
            "--",
            "/bin/true",
        ]);
        wrapped.push(time_ms(w)?);
        plain.push(time_ms(Command::new("/bin/true"))?);
    }
    let ratios: Vec<f64> = wrapped.iter().zip(&plain).map(|(w, p)| w / p).collect();
    results.add(
        Figure::new(
            "job_overhead",
            "bpfkill run --kill-on-exit -- true / true",
            "x",
            Target::None,
        )
        .with_samples(ratios)
        .extra("wrapped_ms", json!(median(&wrapped)))
        .extra("plain_ms", json!(median(&plain))),
    );
    Ok(())
}
