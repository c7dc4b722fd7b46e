//! Services from boot: a configuration of named services whose exe rules match in the kernel
//! at exec, adoption of running matches, reloads, names resolved through the init system's
//! conventions, and a registry where one name is one service and unused ones are released.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use bpfkill_tests::{
    code, forker_bin, is_alive, poll_until, require_privileges, text, unique, wait_gone, Instance, Scratch,
    Tree,
};

const GONE: Duration = Duration::from_secs(10);
/// A ceiling for slow (emulated) machines, not a delay.
const SLOW: Duration = Duration::from_secs(120);

fn write_config(inst: &Instance, text: &str) {
    std::fs::write(&inst.config, text).expect("write config");
}

fn service_names(inst: &Instance) -> Vec<String> {
    let (_, status) = inst.status();
    status["services"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Starts `program ARGS` from a shell that puts it in the background and exits at once (a
/// double-forking shell, as init scripts do): nothing of bpfkill is involved.
fn started_outside(program: &Path, args: &str) -> Tree {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!("( '{}' {args} & )", program.display()));
    Tree::spawn(cmd)
}

#[test]
fn an_exe_rule_tags_a_daemon_started_outside_bpfkill_and_spares_a_copy() {
    require_privileges!();
    let inst = Instance::unloaded();
    let dir = Scratch::new("bpfkill-rule");
    let svc_bin = dir.binary("svcd");
    let decoy_bin = dir.binary("svcd-copy");
    let service = unique("ruled");
    write_config(
        &inst,
        &format!("[services.{service}]\nexe = \"{}\"\n", svc_bin.display()),
    );
    let _daemon = inst.start_daemon("consuming events");

    // Forks at once after its exec: the child (which double-forks a setsid'd escapee) must be
    // tagged too.
    let tree = started_outside(&svc_bin, "double-fork --setsid --rename ruled-esc");
    let (main, escapee) = (tree.pid("main"), tree.pid("escapee"));
    let decoy = Tree::spawn({
        let mut c = Command::new(&decoy_bin);
        c.args(["pause", "--rename", "ruled-esc"]);
        c
    });
    let listed = inst.ps_pids(&service);
    assert!(listed.contains(&main) && listed.contains(&escapee), "{listed:?}");
    assert!(
        !listed.contains(&decoy.pid("pid")),
        "the copy of the binary matched"
    );
    let main_entry = inst.ps(&service).into_iter().find(|e| e["pid"] == main).unwrap();
    assert_eq!(main_entry["lineage"], "main", "{main_entry}");

    let out = inst.run(["-s", "KILL", "--service", &service]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(wait_gone(main, GONE) && wait_gone(escapee, GONE), "survivors");
    assert!(is_alive(decoy.pid("pid")), "the decoy was killed");
    let log = inst.run(["log", "--service", &service]);
    assert!(text(&log).contains(" match pid="), "{}", text(&log));
}

#[test]
fn an_exe_rule_matches_through_a_symlink_and_after_an_upgrade_by_rename() {
    require_privileges!();
    let inst = Instance::unloaded();
    let dir = Scratch::new("bpfkill-upgrade");
    let svc_bin = dir.binary("upd");
    let link = dir.0.join("upd-link");
    std::os::unix::fs::symlink(&svc_bin, &link).unwrap();
    let service = unique("upgraded");
    write_config(
        &inst,
        &format!("[services.{service}]\nexe = \"{}\"\n", svc_bin.display()),
    );
    let _daemon = inst.start_daemon("consuming events");

    let via_link = started_outside(&link, "pause");
    assert!(
        inst.ps_pids(&service).contains(&via_link.pid("pid")),
        "no match through the link"
    );

    // A package upgrade: a new file renamed over the old path (a new inode).
    let staged = dir.0.join("upd.new");
    std::fs::copy(forker_bin(), &staged).unwrap();
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&staged, &svc_bin).unwrap();
    assert!(
        poll_until(SLOW, || inst.status().1["rules"] == 2),
        "the daemon never added the upgraded file: {}",
        inst.status().1
    );
    let upgraded = started_outside(&svc_bin, "pause");
    assert!(
        inst.ps_pids(&service).contains(&upgraded.pid("pid")),
        "no match after the upgrade"
    );
    let out = inst.run(["-s", "KILL", "--service", &service]);
    assert_eq!(code(&out), 0, "{}", text(&out));
}

#[test]
fn running_matches_are_adopted_at_start_and_reloads_keep_a_broken_config_out() {
    require_privileges!();
    let inst = Instance::unloaded();
    let dir = Scratch::new("bpfkill-reload");
    let a_bin = dir.binary("ad");
    let b_bin = dir.binary("bd");
    let (a, b) = (unique("adopted"), unique("added"));
    // Running before the daemon starts.
    let early = started_outside(&a_bin, "pause");
    write_config(&inst, &format!("[services.{a}]\nexe = \"{}\"\n", a_bin.display()));
    let daemon = inst.start_daemon("consuming events");
    let (rc, status) = inst.status();
    assert_eq!(rc, 0, "{status}");
    assert_eq!(status["daemon"]["ready"], true, "{status}");
    let entry = inst
        .ps(&a)
        .into_iter()
        .find(|e| e["pid"] == early.pid("pid"))
        .expect("the running match was adopted");
    // Adopted while running: its lineage before adoption is unknown, and ps says so.
    assert_eq!(entry["lineage"], "adopted", "{entry}");
    assert!(
        poll_until(SLOW, || text(&inst.run(["log", "--service", &a]))
            .contains(" adopt pid=")),
        "adoption not journaled"
    );

    // A valid reload adds a service.
    write_config(
        &inst,
        &format!(
            "[services.{a}]\nexe = \"{}\"\n[services.{b}]\nexe = \"{}\"\n",
            a_bin.display(),
            b_bin.display()
        ),
    );
    let out = inst.run(["reload"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(service_names(&inst).contains(&b));
    let late = started_outside(&b_bin, "pause");
    assert!(inst.ps_pids(&b).contains(&late.pid("pid")));

    // A broken one (by SIGHUP this time) keeps the rules running and says why.
    write_config(
        &inst,
        &format!("[services.{a}]\nexe = \"{}\"\nbogus = 1\n", a_bin.display()),
    );
    rustix::process::kill_process(daemon.pid(), rustix::process::Signal::HUP).unwrap();
    assert!(
        poll_until(SLOW, || inst.status().1["daemon"]["reload_error"].is_string()),
        "{}",
        inst.status().1
    );
    let (rc, status) = inst.status();
    assert_eq!(rc, 1, "a failed reload is degraded: {status}");
    let why = status["daemon"]["reload_error"].as_str().unwrap();
    assert!(why.contains(":3:") && why.contains("bogus"), "{why}");
    let out = inst.run(["reload"]);
    assert_eq!(code(&out), 78, "{}", text(&out));
    let still = started_outside(&b_bin, "pause");
    assert!(
        inst.ps_pids(&b).contains(&still.pid("pid")),
        "the old rules stopped"
    );
    let journal = inst.journal_dir.to_str().unwrap().to_string();
    assert!(text(&inst.run(["log", "--journal-dir", &journal])).contains("reload-failed"));
    let _ = inst.run(["-s", "KILL", "--service", &a]);
    let _ = inst.run(["-s", "KILL", "--service", &b]);
}

#[test]
fn check_config_names_file_line_and_reason() {
    require_privileges!();
    let inst = Instance::unloaded();
    write_config(
        &inst,
        "[services.x]\nexe = \"/usr/bin/true\"\n\n[services.y]\ncomm = \"a-name-far-too-long\"\n",
    );
    let out = inst.run(["check-config"]);
    assert_eq!(code(&out), 78, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("{}:4:", inst.config.display())), "{err}");
    write_config(&inst, "[services.x]\nexe = \"/usr/bin/true\"\n");
    let out = inst.run(["check-config"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // The daemon refuses to start on a broken configuration.
    write_config(&inst, "[services.x]\nexe = 1\n");
    let out = inst.cmd().args(["daemon", "--no-journal"]).output().unwrap();
    assert_eq!(code(&out), 78, "{}", text(&out));
}

#[test]
fn a_name_nobody_configured_is_found_through_its_pidfile_under_run() {
    require_privileges!();
    let inst = Instance::loaded();
    let name = unique("rundaemon");
    let tree = started_outside(&forker_bin(), "spawn 2");
    let main = tree.pid("pid");
    std::fs::create_dir_all("/run").unwrap();
    let pidfile = PathBuf::from(format!("/run/{name}.pid"));
    std::fs::write(&pidfile, format!("{main}\n")).unwrap();
    std::fs::set_permissions(&pidfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _cleanup = Remove(pidfile.clone());

    let dry = inst.run(["-s", "KILL", "--service", &name, "--dry-run"]);
    assert_eq!(code(&dry), 0, "{}", text(&dry));
    assert!(is_alive(main), "a dry run signalled");
    let err = String::from_utf8_lossy(&dry.stderr);
    assert!(
        err.contains(&format!("through pidfile {}", pidfile.display())),
        "{err}"
    );
    // ... and left nothing behind: no service registered, nothing tagged.
    assert!(err.contains("dry run: released again"), "{err}");
    assert!(
        !service_names(&inst).contains(&name),
        "a dry run registered {name}"
    );
    let all = inst.run(["ps", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&all.stdout).unwrap_or_default();
    assert!(
        !listed.iter().any(|e| e["pid"] == main),
        "a dry run left {main} tagged: {listed:?}"
    );

    let out = inst.run(["-s", "KILL", "--service", &name]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(wait_gone(main, GONE));
    // Its children, never reported to the test, went too.
    assert!(poll_until(GONE, || inst.ps_pids(&name).is_empty()));

    // A typo: a clear error with the close name and how to make it known.
    let typo = format!("{name}x");
    let out = inst.run(["-s", "KILL", "--service", &typo]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("did you mean {name:?}")), "{err}");
    assert!(err.contains("bpfkill track --service"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn twenty_parallel_runs_of_one_name_are_one_service() {
    require_privileges!();
    let inst = Instance::loaded();
    let service = unique("same");
    let trees: Vec<Tree> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|_| s.spawn(|| inst.run_service(&service, &["pause"])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let named: Vec<String> = service_names(&inst)
        .into_iter()
        .filter(|n| *n == service)
        .collect();
    assert_eq!(named.len(), 1, "one name, one service");
    assert_eq!(inst.ps_pids(&service).len(), 20);
    let out = inst.run(["-s", "KILL", "--service", &service]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for t in &trees {
        assert!(wait_gone(t.pid("pid"), GONE), "a survivor");
    }
}

#[test]
fn the_registry_stays_flat_over_100_short_runs() {
    require_privileges!();
    let inst = Instance::unloaded();
    let _daemon = inst.start_daemon("consuming events");
    let before = inst.status().1["registry_used"].as_u64().unwrap();
    // A command that cannot start registers nothing.
    let out = inst.run(["run", "--service", &unique("nope"), "--", "/nonexistent/command"]);
    assert_eq!(code(&out), 127, "{}", text(&out));
    assert_eq!(inst.status().1["registry_used"].as_u64().unwrap(), before);
    for i in 0..100 {
        let out = inst.run([
            "run",
            "--service",
            &format!("job-{i}-{}", std::process::id()),
            "--",
            "true",
        ]);
        assert_eq!(code(&out), 0, "{}", text(&out));
    }
    assert!(
        poll_until(SLOW, || inst.status().1["registry_used"].as_u64() == Some(before)),
        "registry never went back to {before}: {}",
        inst.status().1["registry_used"]
    );
    // Their history stays in the journal.
    let journal = inst.journal_dir.to_str().unwrap().to_string();
    let log = text(&inst.run([
        "log",
        "--journal-dir",
        &journal,
        "--service",
        &format!("job-7-{}", std::process::id()),
    ]));
    assert!(log.contains(" exit pid="), "{log}");
}

/// A program on PATH, or None.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// A supervisor (runsv or s6-supervise) running a service directory; on drop it is killed
/// with whatever it is running then, and the directory removed.
struct Supervised {
    dir: PathBuf,
    supervisor: std::process::Child,
    /// The supervised process now, as its supervisor reports it.
    current: CurrentPid,
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let current = (self.current)(&self.dir);
        let _ = self.supervisor.kill();
        let _ = self.supervisor.wait();
        if let Some(pid) = current {
            // SAFETY: SIGKILL to the test's own supervised process.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How to ask a supervisor for the PID it runs now.
type CurrentPid = fn(&Path) -> Option<u32>;

fn runit_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("supervise/pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn s6_pid(dir: &Path) -> Option<u32> {
    let out = Command::new("s6-svstat").arg("-p").arg(dir).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .ok()
        .filter(|&p: &u32| p > 0)
}

/// Starts `supervisor` on a service directory `base/NAME` whose first run is a forker with two
/// children (its ready line in `out`) and whose restarts are a lone pause.
fn supervise(supervisor: &Path, base: &str, name: &str, current: CurrentPid) -> Supervised {
    let dir = Path::new(base).join(name);
    std::fs::create_dir_all(&dir).expect("service dir");
    let forker = forker_bin();
    let script = format!(
        "#!/bin/sh\nif [ -e ran ]; then exec '{f}' pause --quiet; fi\n: > ran\nexec '{f}' spawn 2 >> out\n",
        f = forker.display()
    );
    let run = dir.join("run");
    std::fs::write(&run, script).expect("run script");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let child = Command::new(supervisor)
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the supervisor");
    Supervised {
        dir,
        supervisor: child,
        current,
    }
}

#[test]
fn a_name_nobody_configured_is_found_through_its_runit_or_s6_supervisor_and_again_after_a_restart() {
    require_privileges!();
    let cases: [(&str, &str, &str, CurrentPid); 2] = [
        ("runsv", "/etc/sv", "runit pidfile /etc/sv/", runit_pid),
        ("s6-supervise", "/run/service", "s6 service /run/service/", s6_pid),
    ];
    let mut ran = 0;
    for (tool, base, via, current) in cases {
        let Some(supervisor) = on_path(tool) else {
            eprintln!("{tool} is not installed: its case is not run");
            continue;
        };
        ran += 1;
        let inst = Instance::loaded();
        let name = unique("sv");
        let sup = supervise(&supervisor, base, &name, current);
        let out_file = sup.dir.join("out");
        let mut first = None;
        assert!(
            poll_until(SLOW, || {
                first = std::fs::read_to_string(&out_file).ok().and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("ready pid="))
                        .and_then(|p| p.trim().parse::<u32>().ok())
                });
                first.is_some() && (sup.current)(&sup.dir) == first
            }),
            "{tool} did not start the service"
        );
        let main = first.unwrap();

        let out = inst.run(["-s", "KILL", "--service", &name]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("through {via}{name}")), "{tool}: {err}");
        assert!(wait_gone(main, GONE), "{tool}: the main process survived");
        assert!(poll_until(GONE, || inst.ps_pids(&name).is_empty()));
        let mut sup = sup;
        assert!(
            sup.supervisor.try_wait().unwrap().is_none(),
            "{tool}, the parent of the service, was signalled"
        );

        // The supervisor restarts it; the name finds the new incarnation.
        let mut again = None;
        assert!(
            poll_until(SLOW, || {
                again = (sup.current)(&sup.dir).filter(|&p| p != main);
                again.is_some()
            }),
            "{tool} did not restart the service"
        );
        let again = again.unwrap();
        let out = inst.run(["-s", "KILL", "--service", &name]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("restarted: found PID"), "{tool}: {err}");
        assert!(wait_gone(again, GONE), "{tool}: the restarted process survived");
    }
    if ran == 0 {
        bpfkill_tests::skip("neither runit's runsv nor s6-supervise is installed");
    }
}

/// The first of `paths` that exists (Debian keeps its tools in /usr/bin; /bin may be a link).
fn tool(paths: &[&str]) -> PathBuf {
    paths
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("none of {paths:?} exists"))
}

/// Live children of `parent` named `comm`.
fn children_named(parent: u32, comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let Some((head, tail)) = stat.rsplit_once(')') else {
                return false;
            };
            let name = head.split_once('(').map(|(_, n)| n).unwrap_or("");
            let mut f = tail.split_whitespace();
            let state = f.next().unwrap_or("Z");
            let ppid: u32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            name == comm && ppid == parent && state != "Z"
        })
        .collect()
}

#[test]
fn a_removed_rule_stops_matching_and_what_it_tagged_stays_tagged() {
    require_privileges!();
    let inst = Instance::unloaded();
    let dir = Scratch::new("bpfkill-removed");
    let bin = dir.binary("remd");
    let service = unique("removed");
    write_config(
        &inst,
        &format!("[services.{service}]\nexe = \"{}\"\n", bin.display()),
    );
    let _daemon = inst.start_daemon("consuming events");
    // Exec'd through a relative path: the rule names the file, not the string.
    let first = Tree::spawn({
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("cd '{}' && ( ./remd pause & )", dir.0.display()));
        c
    });
    assert!(
        inst.ps_pids(&service).contains(&first.pid("pid")),
        "no match through a relative path"
    );
    write_config(&inst, "");
    let out = inst.run(["reload"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let second = started_outside(&bin, "pause");
    let listed = inst.ps_pids(&service);
    assert!(
        listed.contains(&first.pid("pid")),
        "removing the rule untagged what it had tagged: {listed:?}"
    );
    assert!(
        !listed.contains(&second.pid("pid")),
        "a removed rule still matched"
    );
    let out = inst.run(["-s", "KILL", "--service", &service]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(wait_gone(first.pid("pid"), GONE));
    assert!(is_alive(second.pid("pid")), "an unmatched process was killed");
    let out = inst.run(["-s", "KILL", "--pid", &second.pid("pid").to_string()]);
    assert_ne!(code(&out), 0, "an untracked PID is not a target: {}", text(&out));
    // SAFETY: kill(2) of the test's own helper.
    unsafe { libc::kill(second.pid("pid") as i32, libc::SIGKILL) };
}

#[test]
fn an_exec_rule_takes_a_process_from_the_service_that_started_it() {
    require_privileges!();
    let inst = Instance::unloaded();
    let dir = Scratch::new("bpfkill-reroot");
    let bin = dir.binary("crond");
    let (cron, ssh) = (unique("cron"), unique("ssh"));
    write_config(
        &inst,
        &format!("[services.{cron}]\nexe = \"{}\"\n", bin.display()),
    );
    let _daemon = inst.start_daemon("consuming events");
    // An admin's shell, part of service ssh, restarts cron's daemon.
    let shell = Tree::spawn({
        let mut c = inst.cmd();
        c.args(["run", "--service", &ssh, "--", "sh", "-c"]).arg(format!(
            "( '{}' pause & ); exec {} pause --quiet",
            bin.display(),
            forker_bin().display()
        ));
        c
    });
    let restarted = shell.pid("pid");
    assert!(
        poll_until(GONE, || inst.ps_pids(&cron).contains(&restarted)),
        "the restarted daemon is not cron's: {:?}",
        inst.ps(&cron)
    );
    assert!(
        !inst.ps_pids(&ssh).contains(&restarted),
        "the restarted daemon stayed in ssh"
    );
    // The journal says where it came from.
    assert!(
        poll_until(SLOW, || {
            let log = inst.run(["log", "--json", "--service", &cron]);
            String::from_utf8_lossy(&log.stdout).lines().any(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .is_ok_and(|r| r["pid"] == restarted && r["from_service"] == ssh.as_str())
            })
        }),
        "no match record from {ssh}: {}",
        text(&inst.run(["log", "--service", &cron]))
    );
    let out = inst.run(["-s", "KILL", "--service", &cron]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(wait_gone(restarted, GONE));
    let out = inst.run(["-s", "KILL", "--service", &ssh]);
    assert_eq!(code(&out), 0, "{}", text(&out));
}

#[test]
fn a_leave_exe_boundary_lets_a_child_out_of_the_service() {
    require_privileges!();
    let inst = Instance::unloaded();
    let dir = Scratch::new("bpfkill-leave");
    let shell = dir.0.join("svc-sh");
    std::fs::copy(tool(&["/usr/bin/dash", "/bin/dash"]), &shell).unwrap();
    std::fs::set_permissions(&shell, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sleep = tool(&["/usr/bin/sleep", "/bin/sleep"]);
    let service = unique("bounded");
    write_config(
        &inst,
        &format!(
            "[services.{service}]\nexe = \"{}\"\nleave_exe = [\"{}\"]\n",
            shell.display(),
            sleep.display()
        ),
    );
    let _daemon = inst.start_daemon("consuming events");
    let exec_skips = inst.skipped_runs("bpfkill_exec");
    // The service's shell starts a sleep (its boundary) and a forker, then becomes a forker.
    let tree = started_outside(
        &shell,
        &format!(
            "-c '{} 1000 & {} pause --quiet & exec {} pause'",
            sleep.display(),
            forker_bin().display(),
            forker_bin().display()
        ),
    );
    let main = tree.pid("pid");
    let mut kids = Vec::new();
    assert!(
        poll_until(GONE, || {
            kids = children_named(main, "sleep");
            !kids.is_empty() && children_named(main, "forker").len() == 1
        }),
        "the shell's children did not start"
    );
    let stayed = children_named(main, "forker")[0];
    let listed = inst.ps_pids(&service);
    assert!(listed.contains(&main) && listed.contains(&stayed), "{listed:?}");
    let skipped = inst.skipped_runs("bpfkill_exec").saturating_sub(exec_skips);
    if listed.contains(&kids[0]) && skipped > 0 {
        // A preemptible kernel skipped exec runs meanwhile: a skipped exec run applies no
        // boundary (README's Limits), so this run cannot tell.
        return bpfkill_tests::skip(&format!(
            "the kernel skipped {skipped} exec run(s) during the test: the boundary's exec may be one"
        ));
    }
    assert!(
        !listed.contains(&kids[0]),
        "the boundary's process stayed in the service"
    );
    // While the main process lives, its /proc descendants are evidence too: not the one that
    // left (a dry run collects everything before it would signal).
    let out = inst.run(["-s", "KILL", "--service", &service, "--dry-run", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let would: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["outcome"] == "would-signal")
        .filter_map(|l| l["pid"].as_u64())
        .collect();
    assert!(
        would.contains(&u64::from(stayed)) && !would.contains(&u64::from(kids[0])),
        "{would:?}"
    );
    let out = inst.run(["-s", "KILL", "--service", &service]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(wait_gone(main, GONE) && wait_gone(stayed, GONE));
    assert!(
        is_alive(kids[0]),
        "the process that left was killed with the service"
    );
    // SAFETY: kill(2) of the test's own sleep.
    unsafe { libc::kill(kids[0] as i32, libc::SIGKILL) };
}

#[test]
fn a_plain_kill_takes_the_stop_schedule_from_the_daemons_configuration() {
    require_privileges!();
    let inst = Instance::loaded();
    let dir = Scratch::new("bpfkill-stop");
    let tree = Tree::spawn({
        let mut c = Command::new(forker_bin());
        c.args(["pause", "--ignore-term"]);
        c
    });
    let pid = tree.pid("pid");
    let pidfile = dir.0.join("svc.pid");
    std::fs::write(&pidfile, format!("{pid}\n")).unwrap();
    let service = unique("stop");
    write_config(
        &inst,
        &format!(
            "[services.{service}]\npidfile = \"{}\"\nstop = \"TERM/1/KILL/5\"\n",
            pidfile.display()
        ),
    );
    let _daemon = inst.start_daemon("consuming events");
    // No BPFKILL_CONFIG: the kill reads the configuration the running daemon loaded.
    let out = inst
        .cmd()
        .env_remove("BPFKILL_CONFIG")
        .args(["--service", &service])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("sent SIGTERM, SIGKILL"), "{}", text(&out));
    assert!(wait_gone(pid, GONE));
}

#[test]
fn forget_refuses_a_live_service_then_forgets_it_and_its_history_stays() {
    require_privileges!();
    let inst = Instance::loaded();
    let _daemon = inst.start_daemon("consuming events");
    let service = unique("forget");
    let tree = inst.run_service(&service, &["pause"]);
    let pid = tree.pid("pid");
    let out = inst.run(["forget", "--service", &service]);
    assert_eq!(code(&out), 64, "{}", text(&out));
    assert!(text(&out).contains("still has 1 live process"), "{}", text(&out));
    let out = inst.run(["-s", "KILL", "--service", &service]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(wait_gone(pid, GONE));
    // The daemon may release the unused service first; either way it ends up forgotten.
    let out = inst.run(["forget", "--service", &service]);
    assert!(
        code(&out) == 0 || text(&out).contains("unknown service"),
        "{}",
        text(&out)
    );
    assert!(!service_names(&inst).contains(&service), "still registered");
    // Its history stays: log --service still shows its process's exit.
    assert!(
        poll_until(SLOW, || text(&inst.run(["log", "--service", &service]))
            .contains(&format!(" exit pid={pid}"))),
        "{}",
        text(&inst.run(["log", "--service", &service]))
    );
}

#[test]
fn exe_rules_keep_matching_while_the_daemon_is_down() {
    require_privileges!();
    let inst = Instance::unloaded();
    let dir = Scratch::new("bpfkill-down");
    let bin = dir.binary("downd");
    let service = unique("down");
    write_config(
        &inst,
        &format!("[services.{service}]\nexe = \"{}\"\n", bin.display()),
    );
    let daemon = inst.start_daemon("consuming events");
    daemon.stop();
    // The rules live in pinned maps, applied by the exec hook: no daemon needed.
    let started = started_outside(&bin, "pause");
    assert!(
        inst.ps_pids(&service).contains(&started.pid("pid")),
        "no match while the daemon was down"
    );
    let out = inst.run(["-s", "KILL", "--service", &service]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(wait_gone(started.pid("pid"), GONE));
}
