//! The kill against the kernel's limit: trees of sleeping processes, each in a cgroup v2
//! directory of its own so that "all gone" is the kernel's `populated 0` event for every
//! contender, killed by `cgroup.kill` (the kernel's atomic kill, the floor), by bpfkill from
//! its tags, by bpfkill given the cgroup, by a userspace /proc walk-and-kill loop and by
//! repeated pkill. Contenders take turns within a round, in rotating order. Then a fork bomb
//! under a v1 pids limit: bpfkill against a userspace loop over the cgroup's members.

use std::{
    collections::HashMap,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde_json::json;

use super::{
    median,
    report::{Figure, Results, Target},
    safety::{self, Cgroups},
    tree::{self, Tree},
    Bench,
};

/// Who kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Killer {
    CgroupKill,
    Bpfkill,
    BpfkillUserspace,
    BpfkillCgroup,
    ProcLoop,
    Pkill,
}

impl Killer {
    fn name(self) -> &'static str {
        match self {
            Killer::CgroupKill => "cgroup.kill",
            Killer::Bpfkill => "bpfkill (tags)",
            Killer::BpfkillUserspace => "bpfkill (tags, userspace path)",
            Killer::BpfkillCgroup => "bpfkill --cgroup",
            Killer::ProcLoop => "/proc walk-and-kill loop",
            Killer::Pkill => "pkill -f, repeated",
        }
    }
}

/// SCHED_FIFO for the measuring thread (not inherited by what it starts), for the span of
/// one bounded measurement that blocks in poll(2) rather than spinning.
struct RealTime(bool);

impl RealTime {
    fn enter() -> Self {
        let param = libc::sched_param { sched_priority: 1 };
        // SAFETY: valid sched_param, this thread only.
        let ok =
            unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param) } == 0;
        Self(ok)
    }
}

impl Drop for RealTime {
    fn drop(&mut self) {
        if self.0 {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: as above.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
        }
    }
}

/// What one kill measured.
struct Measured {
    /// Time until the tree's cgroup was empty; None when the limit passed first.
    gone: Option<Duration>,
    /// For bpfkill: its own CPU time (user + system), ms.
    cpu_ms: Option<f64>,
    /// For bpfkill: time until it returned (its report written), ms.
    returned_ms: Option<f64>,
}

/// One kill of `tree` by `killer`. "Gone" is the kernel's `populated 0` for every contender,
/// bpfkill included: it is watched while bpfkill runs, and bpfkill's return (after its
/// checks and report) is recorded beside it.
fn kill_once(b: &Bench, tree: &Tree, killer: Killer, marker: &str) -> Result<Measured> {
    let limit = b.scale.limit;
    let _rt = RealTime::enter();
    let start = Instant::now();
    match killer {
        Killer::CgroupKill => {
            std::fs::write(tree.cgroup.join("cgroup.kill"), "1").context("write cgroup.kill")?;
        }
        Killer::Bpfkill | Killer::BpfkillUserspace | Killer::BpfkillCgroup => {
            let mut cmd = b.bpfkill();
            cmd.args(["-s", "KILL", "--service", &tree.service]);
            if killer == Killer::BpfkillCgroup {
                cmd.arg("--cgroup").arg(&tree.cgroup);
            }
            if killer == Killer::BpfkillUserspace {
                cmd.env("BPFKILL_NO_KERNEL_KILL", "1");
            }
            let child = cmd.stdout(Stdio::null()).spawn().context("start bpfkill")?;
            let gone = tree.wait_empty(start, limit);
            let (status, usage) = wait4(child.id() as i32)?;
            if status != 0 {
                anyhow::bail!("bpfkill exited with status {status:#x}");
            }
            return Ok(Measured {
                gone,
                cpu_ms: Some(usage),
                returned_ms: Some(start.elapsed().as_secs_f64() * 1e3),
            });
        }
        Killer::ProcLoop => proc_loop(tree.main.id(), &tree.cgroup, start, limit),
        Killer::Pkill => {
            while start.elapsed() < limit {
                let _ = std::process::Command::new("pkill")
                    .args(["-KILL", "-f", marker])
                    .status();
                if tree::wait_unpopulated(&tree.cgroup, Instant::now(), Duration::from_millis(20)).is_some() {
                    break;
                }
            }
        }
    }
    Ok(Measured {
        gone: tree.wait_empty(start, limit),
        cpu_ms: None,
        returned_ms: None,
    })
}

/// Waits for a child with wait4(2): its exit status and its CPU time (user + system), ms.
fn wait4(pid: i32) -> Result<(i32, f64)> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child.
    if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
        return Err(std::io::Error::last_os_error()).context("wait4");
    }
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    Ok((status, ms(usage.ru_utime) + ms(usage.ru_stime)))
}

/// What a script does without bpfkill: walk /proc, kill the root and everything below it by
/// parent PID in one pass (once the root dies its children are reparented and the walk loses
/// them), and repeat until nothing is left or the limit passes.
fn proc_loop(root: u32, cgroup: &Path, start: Instant, limit: Duration) {
    let mut targets = vec![root];
    while start.elapsed() < limit {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let ppid = stat
                    .rfind(')')
                    .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
                    .and_then(|p| p.parse().ok());
                if let Some(ppid) = ppid {
                    children.entry(ppid).or_default().push(pid);
                }
            }
        }
        let mut stack = targets.clone();
        while let Some(p) = stack.pop() {
            // SAFETY: kill(2) of a process of the bench's own tree.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
            if let Some(c) = children.get(&p) {
                stack.extend(c);
                targets.extend(c);
            }
        }
        if tree::wait_unpopulated(cgroup, Instant::now(), Duration::from_millis(20)).is_some() {
            return;
        }
    }
}

/// Per killer, the time of each round (ms; None when it did not finish).
type Times = HashMap<Killer, Vec<Option<f64>>>;
/// Per bpfkill killer, its own CPU time (user + system) of each round, ms.
type Cpu = HashMap<Killer, Vec<f64>>;

/// What rounds of kills measured, per killer.
struct Rounds {
    /// Until gone, ms.
    times: Times,
    /// bpfkill's CPU time, ms.
    cpu: Cpu,
    /// Until bpfkill returned, ms (bpfkill killers only).
    returned: Times,
    /// Kills that started without a quiet machine (see [`tree::settle`]) or before the
    /// trees killed earlier were reaped (see [`tree::wait_reaped`]).
    unsettled: usize,
}

/// Tasks beyond the bench's start that a round may begin with (other work on the machine).
const REAP_SLACK: u32 = 100;
/// How long a round waits for the trees before it to be reaped.
const REAP_LIMIT: Duration = Duration::from_secs(60);

/// Rounds of a tree (`forker ARGS`, named `what`) killed by each of `killers` in rotating
/// order.
fn rounds_of(
    b: &Bench,
    cg: &Cgroups,
    what: &str,
    args: &[&str],
    rounds: usize,
    killers: &[Killer],
) -> Result<Rounds> {
    let mut times = Times::new();
    let mut cpu = Cpu::new();
    let mut returned = Times::new();
    let mut unsettled = 0;
    // The machine's tasks before any tree: each tree starts once the last one is reaped.
    let baseline = tree::tasks().unwrap_or(0);
    for round in 0..rounds {
        for i in 0..killers.len() {
            let killer = killers[(i + round) % killers.len()];
            let marker = format!("bench-marker-{what}-{round}-{i}");
            let service = format!("bench-{what}-{round}-{i}");
            let mut full: Vec<&str> = args.to_vec();
            full.extend(["--marker", &marker]);
            let reaped = tree::wait_reaped(baseline + REAP_SLACK, REAP_LIMIT);
            let tree = Tree::start(b, &cg.v2, &service, &full)?;
            let settled = if what == "loop" {
                // Let the loop reach full speed.
                std::thread::sleep(Duration::from_millis(300));
                true
            } else {
                tree::settle(Duration::from_secs(5))
            };
            if !(reaped && settled) {
                unsettled += 1;
            }
            let measured = kill_once(b, &tree, killer, &marker);
            tree.destroy();
            let m = measured?;
            times
                .entry(killer)
                .or_default()
                .push(m.gone.map(|d| d.as_secs_f64() * 1e3));
            if let Some(c) = m.cpu_ms {
                cpu.entry(killer).or_default().push(c);
            }
            if let Some(r) = m.returned_ms {
                returned.entry(killer).or_default().push(Some(r));
            }
        }
        eprintln!("bench: kill of {what}, round {} of {rounds} done", round + 1);
    }
    Ok(Rounds {
        times,
        cpu,
        returned,
        unsettled,
    })
}

/// `a / floor` per round, for rounds where both finished.
fn ratios(a: &[Option<f64>], floor: &[Option<f64>]) -> Vec<f64> {
    a.iter()
        .zip(floor)
        .filter_map(|(a, f)| Some(a.as_ref()? / f.as_ref()?))
        .collect()
}

fn medians(times: &Times, limit: Duration) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    for (k, v) in times {
        let done: Vec<f64> = v.iter().flatten().copied().collect();
        let unfinished = v.len() - done.len();
        o.insert(
            k.name().into(),
            json!({
                "median_ms": (!done.is_empty()).then(|| median(&done)),
                "did_not_finish": unfinished,
                "limit_s": limit.as_secs(),
            }),
        );
    }
    serde_json::Value::Object(o)
}

pub fn run(b: &Bench, cg: &Cgroups, results: &mut Results) -> Result<()> {
    b.load()?;
    let outcome = (|| -> Result<()> {
        let all = [
            Killer::CgroupKill,
            Killer::Bpfkill,
            Killer::BpfkillUserspace,
            Killer::BpfkillCgroup,
            Killer::ProcLoop,
            Killer::Pkill,
        ];
        let Rounds {
            times: t,
            cpu,
            returned,
            unsettled,
        } = rounds_of(b, cg, "1000", &["spawn", "1000"], b.scale.rounds_1k, &all)?;
        let floor = &t[&Killer::CgroupKill];
        results.add(
            Figure::new(
                "kill_vs_cgroup_kill",
                "1000 processes gone: bpfkill (tags) / cgroup.kill",
                "x",
                Target::AtMost(1.1),
            )
            .with_samples(ratios(&t[&Killer::Bpfkill], floor))
            .extra("contenders", medians(&t, b.scale.limit))
            .extra("kills_started_unsettled", json!(unsettled)),
        );
        for (key, killer, label) in [
            (
                "kill_userspace_vs_cgroup_kill",
                Killer::BpfkillUserspace,
                "bpfkill, userspace path",
            ),
            (
                "kill_cgroup_vs_cgroup_kill",
                Killer::BpfkillCgroup,
                "bpfkill --cgroup",
            ),
            ("proc_loop_vs_cgroup_kill", Killer::ProcLoop, "/proc loop"),
            ("pkill_vs_cgroup_kill", Killer::Pkill, "pkill, repeated"),
        ] {
            let unfinished = t[&killer].iter().filter(|x| x.is_none()).count();
            let mut f = Figure::new(
                key,
                format!("1000 processes gone: {label} / cgroup.kill"),
                "x",
                Target::None,
            )
            .with_samples(ratios(&t[&killer], floor));
            if unfinished > 0 {
                f = f.note(format!(
                    "did not finish in {} s in {unfinished} round(s)",
                    b.scale.limit.as_secs()
                ));
            }
            results.add(f);
        }
        results.add(
            Figure::new(
                "kill_returned_vs_cgroup_kill",
                "1000 processes: bpfkill (tags) returned, checks and report done / cgroup.kill gone",
                "x",
                Target::None,
            )
            .with_samples(ratios(&returned[&Killer::Bpfkill], floor)),
        );
        let own = |k: Killer| cpu.get(&k).cloned().unwrap_or_default();
        results.add(
            Figure::new(
                "kill_cli_ms",
                "bpfkill's own CPU time, 1000 processes",
                "ms",
                Target::Below(30.0),
            )
            .with_samples(own(Killer::Bpfkill))
            .extra("userspace_path_ms", json!(median(&own(Killer::BpfkillUserspace)))),
        );

        let Rounds {
            times: t, unsettled, ..
        } = rounds_of(
            b,
            cg,
            "10000",
            &["spawn", "10000"],
            b.scale.rounds_10k,
            // The userspace path at 10,000 only in full runs (a tree of 10,000 takes seconds
            // to build under --quick's time budget).
            if b.scale.quick {
                &[Killer::CgroupKill, Killer::Bpfkill][..]
            } else {
                &[Killer::CgroupKill, Killer::Bpfkill, Killer::BpfkillUserspace][..]
            },
        )?;
        results.add(
            Figure::new(
                "kill_vs_cgroup_kill_10k",
                "10,000 processes gone: bpfkill (tags) / cgroup.kill",
                "x",
                Target::AtMost(1.2),
            )
            .with_samples(ratios(&t[&Killer::Bpfkill], &t[&Killer::CgroupKill]))
            .extra(
                "userspace_path_ratio",
                json!(t
                    .get(&Killer::BpfkillUserspace)
                    .map(|u| median(&ratios(u, &t[&Killer::CgroupKill])))),
            )
            .extra("contenders", medians(&t, b.scale.limit))
            .extra("kills_started_unsettled", json!(unsettled)),
        );
        let Rounds { times: t, .. } = rounds_of(
            b,
            cg,
            "loop",
            &["fork-loop"],
            b.scale.rounds,
            &[Killer::CgroupKill, Killer::Bpfkill, Killer::Pkill],
        )?;
        let unfinished = t[&Killer::Pkill].iter().filter(|x| x.is_none()).count();
        let bpfkill: Vec<f64> = t[&Killer::Bpfkill].iter().flatten().copied().collect();
        let mut f = Figure::new(
            "fork_loop_ms",
            "tight fork loop gone: bpfkill",
            "ms",
            Target::None,
        )
        .with_samples(bpfkill)
        .extra(
            "vs_cgroup_kill",
            json!(median(&ratios(&t[&Killer::Bpfkill], &t[&Killer::CgroupKill]))),
        )
        .extra("contenders", medians(&t, b.scale.limit));
        if unfinished > 0 {
            f = f.note(format!(
                "pkill did not finish in {} s in {unfinished} round(s)",
                b.scale.limit.as_secs()
            ));
        }
        results.add(f);
        fork_bomb(b, cg, results)
    })();
    let unloaded = b.unload();
    outcome.and(unloaded)
}

/// A fork bomb confined to pids.max=2000 in a v1 pids cgroup: time from the kill until no
/// member is left, bpfkill against a loop that kills the cgroup's members over and over
/// (what a script that knows the cgroup does). No real-time priority here: the baseline
/// loop would spin at it. Each contender is bounded by the limit.
fn fork_bomb(b: &Bench, cg: &Cgroups, results: &mut Results) -> Result<()> {
    let Some(pids_root) = &cg.pids else {
        results.add(
            Figure::new(
                "fork_bomb_ms",
                "fork bomb (pids.max=2000) gone: bpfkill",
                "ms",
                Target::Below(1000.0),
            )
            .note("skipped: no v1 pids hierarchy"),
        );
        return Ok(());
    };
    let limit = b.scale.limit;
    // bpfkill every round; the member-kill loop once (it can take the whole limit).
    let mut ours = Vec::new();
    let mut sizes = Vec::new();
    let mut summaries = Vec::new();
    for round in 0..b.scale.bomb_rounds {
        let (t, size, summary) = bomb_once(b, pids_root, "bpfkill", round)?;
        ours.push(t);
        sizes.push(size);
        summaries.push(summary);
    }
    let (baseline, _, _) = bomb_once(b, pids_root, "loop", 0)?;
    let dnf = |t: Option<f64>| match t {
        Some(ms) => json!(ms),
        None => json!(format!("did not finish in {} s", limit.as_secs())),
    };
    let unfinished = ours.iter().filter(|t| t.is_none()).count();
    let mut f = Figure::new(
        "fork_bomb_ms",
        "fork bomb (pids.max=2000) gone: bpfkill",
        "ms",
        Target::Below(1000.0),
    )
    .with_samples(ours.iter().flatten().copied().collect())
    .extra("processes_at_kill", json!(sizes))
    .extra("bpfkill_summaries", json!(summaries))
    .extra("member_kill_loop_ms", dnf(baseline));
    if unfinished > 0 {
        f = f.note(format!(
            "did not finish in {} s in {unfinished} round(s)",
            limit.as_secs()
        ));
    }
    results.add(f);
    Ok(())
}

/// One bomb, grown to about 1900 processes, then killed by `tool`: the time until its cgroup
/// is empty (None at the limit), its size when the kill started, and bpfkill's summary line.
fn bomb_once(b: &Bench, pids_root: &Path, tool: &str, round: usize) -> Result<(Option<f64>, u32, String)> {
    let limit = b.scale.limit;
    let dir = pids_root.join(format!("bomb-{tool}-{round}"));
    safety::remove_cgroup_tree(&dir);
    std::fs::create_dir(&dir)?;
    std::fs::write(dir.join("pids.max"), "2000")?;
    let service = format!("bench-bomb-{tool}-{round}");
    let marker = format!("bench-bomb-marker-{tool}-{round}");
    let mut main = b
        .bpfkill()
        .args(["run", "--service", &service, "--"])
        .arg(&b.forker)
        .args(["bomb", &dir.to_string_lossy(), "--marker", &marker])
        .stdout(Stdio::piped())
        .spawn()?;
    let _ = super::first_line(main.stdout.take().context("stdout")?, Duration::from_secs(60));
    let current = || {
        std::fs::read_to_string(dir.join("pids.current"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    let grow = Instant::now();
    while current() < 1900 && grow.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(5));
    }
    let size = current();
    let start = Instant::now();
    let mut summary = String::new();
    if tool == "bpfkill" {
        let out = b
            .bpfkill()
            .args(["-s", "KILL", "--service", &service])
            .stderr(Stdio::null())
            .output()?;
        summary = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .to_string();
    } else {
        while start.elapsed() < limit && !tree::members(&dir).is_empty() {
            for pid in tree::members(&dir) {
                // SAFETY: kill(2) of a member of the bench's own cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let mut gone = None;
    while start.elapsed() < limit {
        if tree::members(&dir).is_empty() {
            gone = Some(start.elapsed().as_secs_f64() * 1e3);
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    safety::remove_cgroup_tree(&dir);
    let _ = main.kill();
    let _ = main.wait();
    Ok((gone, size, summary))
}
