//! What tracking costs: storms of processes created one after another (fork+exec+exit of
//! `/bin/true`, fork+exit, thread spawn+join), timed with tracking unloaded and loaded (the
//! daemon running, as on a real host), for processes of no service (what every process on
//! the host pays), of a service (tagged), and with exec rules from the configuration. The
//! phases of a round run in alternating order so drift cancels out.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::{
    first_line, median,
    report::{Figure, Results, Target},
    Bench, Daemon,
};

/// The storms: kind of event, and whether it is measured inside a service too.
const KINDS: [&str; 3] = ["exec", "fork", "thread"];

/// Elapsed ns of one storm of `n` of `kind`, run plainly or as a service's main process.
fn storm(b: &Bench, kind: &str, n: usize, service: Option<&str>) -> Result<f64> {
    let mut cmd = match service {
        Some(s) => {
            let mut c = b.bpfkill();
            c.args(["run", "--service", s, "--"]).arg(&b.forker);
            c
        }
        None => Command::new(&b.forker),
    };
    let mut child = cmd
        .args(["storm", kind, &n.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .context("start a storm")?;
    // A storm of 20,000 takes seconds; ten minutes means something is wrong.
    let line = first_line(child.stdout.take().context("stdout")?, Duration::from_secs(600));
    let status = child.wait()?;
    let line = line?;
    let ns: f64 = line
        .trim()
        .strip_prefix("storm ns=")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("storm said {line:?}"))?;
    if !status.success() {
        bail!("storm failed: {status}");
    }
    Ok(ns)
}

/// A configuration with 32 exec rules (executables the storm never runs) and 32 name rules.
fn rules_config() -> String {
    let mut exes: Vec<String> = std::fs::read_dir("/usr/bin")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.path().to_string_lossy().into_owned())
                .filter(|p| !p.ends_with("/true") && !p.contains('"') && !p.contains('\\'))
                .collect()
        })
        .unwrap_or_default();
    exes.sort();
    exes.truncate(32);
    let mut out = String::new();
    for (i, exe) in exes.iter().enumerate() {
        out.push_str(&format!(
            "[services.bench-rule-{i}]\nexe = \"{exe}\"\n\n[services.bench-name-{i}]\ncomm = \"bench-name-{i}\"\n\n"
        ));
    }
    out
}

/// Per-round storm times, ns: (phase, kind) → samples.
#[derive(Default)]
struct Samples {
    unloaded: [Vec<f64>; 3],
    untagged: [Vec<f64>; 3],
    tagged: [Vec<f64>; 3],
    rules: Vec<f64>,
}

pub fn run(b: &Bench, results: &mut Results) -> Result<()> {
    let n = b.scale.storm;
    let mut s = Samples::default();
    let mut peaks = Vec::new();
    let rules = rules_config();
    for round in 0..b.scale.rounds {
        let mut phases = ["unloaded", "loaded", "rules"];
        if round % 2 == 1 {
            phases.reverse();
        }
        for phase in phases {
            match phase {
                "unloaded" => {
                    b.unload()?;
                    for (k, kind) in KINDS.iter().enumerate() {
                        s.unloaded[k].push(storm(b, kind, n, None)?);
                    }
                }
                "loaded" => {
                    std::fs::write(&b.config, "")?;
                    let d = Daemon::start(b)?;
                    for (k, kind) in KINDS.iter().enumerate() {
                        s.untagged[k].push(storm(b, kind, n, None)?);
                        let service = format!("bench-storm-{round}-{kind}");
                        s.tagged[k].push(storm(b, kind, n, Some(&service))?);
                    }
                    peaks.extend(d.stop());
                    b.unload()?;
                }
                _ => {
                    std::fs::write(&b.config, &rules)?;
                    let d = Daemon::start(b)?;
                    s.rules.push(storm(b, "exec", n, None)?);
                    peaks.extend(d.stop());
                    b.unload()?;
                }
            }
        }
        eprintln!(
            "bench: tracking overhead, round {} of {} done",
            round + 1,
            b.scale.rounds
        );
    }
    std::fs::write(&b.config, "")?;

    let ratios = |a: &[f64], base: &[f64]| a.iter().zip(base).map(|(x, y)| x / y).collect::<Vec<_>>();
    let per_event = |a: &[f64], base: &[f64]| (median(a) - median(base)) / n as f64;
    let what = |k: usize| match KINDS[k] {
        "exec" => "fork+exec+exit",
        "fork" => "fork+exit",
        _ => "thread spawn+join",
    };
    let keys_untagged = [
        "tracking_overhead_untagged",
        "tracking_overhead_untagged_fork",
        "tracking_overhead_untagged_thread",
    ];
    let keys_tagged = [
        "tracking_overhead_tagged",
        "tracking_overhead_tagged_fork",
        "tracking_overhead_tagged_thread",
    ];
    for k in 0..KINDS.len() {
        let base_ns = median(&s.unloaded[k]) / n as f64;
        let phases = [
            (keys_untagged[k], "of no service", &s.untagged[k], 1.01),
            (keys_tagged[k], "inside a service", &s.tagged[k], 1.03),
        ];
        for (key, whose, loaded, target) in phases {
            results.add(
                Figure::new(
                    key,
                    format!("tracking on/off, {} {whose}", what(k)),
                    "x",
                    Target::AtMost(target),
                )
                .with_samples(ratios(loaded, &s.unloaded[k]))
                .extra("ns_per_event", json!(per_event(loaded, &s.unloaded[k])))
                .extra("untracked_ns_per_event", json!(base_ns)),
            );
        }
    }
    results.add(
        Figure::new(
            "tracking_overhead_rules",
            "tracking on/off, fork+exec+exit with 64 rules",
            "x",
            Target::AtMost(1.01),
        )
        .with_samples(ratios(&s.rules, &s.unloaded[0]))
        .extra("ns_per_event", json!(per_event(&s.rules, &s.unloaded[0]))),
    );
    results.peaks.extend(peaks);
    Ok(())
}
