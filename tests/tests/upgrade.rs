//! Upgrading across a kernel-side layout change: the previous layout's bpfkill (built from
//! git by `cargo xtask test` and `vm-test`, see xtask/src/previous.rs) tracks services with
//! real pins of its layout; this version loads beside it and carries the live tracking over
//! before the old programs are detached.

use std::{path::PathBuf, time::Duration};

use bpfkill_common::ABI_VERSION;
use bpfkill_tests::*;

const GONE: Duration = Duration::from_secs(10);
const PREVIOUS_ABI: u32 = ABI_VERSION - 1;

/// (this version, the previous layout's version beside it), both unloaded; None (the test
/// skipped, saying why) without the previous layout's binary.
fn versions() -> Option<(Instance, Instance)> {
    let previous = std::env::var_os("BPFKILL_PREVIOUS_BIN")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            format!("no ABI v{PREVIOUS_ABI} bpfkill in $BPFKILL_PREVIOUS_BIN (`cargo xtask test` builds it from git)")
        });
    let new = Instance::versioned(ABI_VERSION);
    let old = new.beside(or_skip(previous)?, PREVIOUS_ABI);
    Some((new, old))
}

/// (pid, creator, escape reasons) of each process `ps` lists for `service`, sorted.
fn lineage(inst: &Instance, service: &str) -> Vec<(u64, serde_json::Value, serde_json::Value)> {
    let mut rows: Vec<_> = inst
        .ps(service)
        .iter()
        .map(|e| {
            (
                e["pid"].as_u64().expect("pid"),
                e["creator_pid"].clone(),
                e["escape_reasons"].clone(),
            )
        })
        .collect();
    rows.sort_by_key(|r| r.0);
    rows
}

#[test]
fn an_upgrade_carries_the_previous_layouts_live_tracking_over() {
    require_privileges!();
    let Some((new, old)) = versions() else { return };
    let out = old.run(["load"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // Under the old version: a service whose grandchild escaped (a double fork into a new
    // session, renamed: its creator has exited, a ghost), and a service that forks on request.
    let service = unique("upgrade");
    let escapes = old.run_service(&service, &["double-fork", "--setsid", "--rename", "hidden"]);
    escapes.settle();
    let before = lineage(&old, &service);
    assert_eq!(before.len(), 2, "{before:?}");
    let other = unique("upgrade-forker");
    let mut forker = old.run_service(&other, &["forker"]);
    let first = forker.fork_child();

    let out = new.run(["load"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains(&format!("migrated the live tracking of ABI v{PREVIOUS_ABI}")),
        "{}",
        text(&out)
    );
    assert!(!old.pin_dir.exists(), "the old tree is still pinned");
    // The same processes with the same lineage and escapes, now in this version's maps.
    assert_eq!(lineage(&new, &service), before);
    // A child forked now is tagged by this version's programs.
    let second = forker.fork_child();
    let pids = new.ps_pids(&other);
    for pid in [forker.pid("pid"), first, second] {
        assert!(
            pids.contains(&pid),
            "{pid} not tracked after the upgrade: {pids:?}"
        );
    }
    let (rc, status) = new.status();
    assert_eq!(rc, 0, "{status}");
    assert_eq!(status["problems"], serde_json::json!([]), "{status}");

    // A kill takes every process, those of before the upgrade too.
    let mut all = before.iter().map(|r| r.0 as u32).collect::<Vec<_>>();
    all.extend(pids);
    for svc in [&service, &other] {
        let out = new.run(["-s", "KILL", "--service", svc]);
        assert_eq!(code(&out), 0, "{}", text(&out));
    }
    for pid in all {
        assert!(wait_gone(pid, GONE), "{pid} survived");
    }
}

#[test]
fn an_older_tree_whose_daemon_runs_is_left_alone_until_it_stops() {
    require_privileges!();
    let Some((new, old)) = versions() else { return };
    let daemon = old.start_daemon("tracking loaded");
    let service = unique("held");
    let tree = old.run_service(&service, &["forker"]);
    let main = tree.pid("pid");

    let out = new.run(["load"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("still served by its daemon"),
        "{}",
        text(&out)
    );
    assert!(
        old.pin_dir.exists(),
        "the old tree was taken from under its daemon"
    );
    let (rc, status) = new.status();
    assert_eq!(rc, 1, "an older tree still attached is a problem: {status}");
    assert!(
        status["problems"][0]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("v{PREVIOUS_ABI}")),
        "{status}"
    );

    daemon.stop();
    let out = new.run(["load"]);
    assert!(
        text(&out).contains(&format!("migrated the live tracking of ABI v{PREVIOUS_ABI}")),
        "{}",
        text(&out)
    );
    assert_eq!(new.ps_pids(&service), vec![main]);
    let out = new.run(["-s", "KILL", "--service", &service]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(wait_gone(main, GONE), "main survived");
}
