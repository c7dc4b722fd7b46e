//! Applying the configuration: every configured service is declared in the registry, its
//! exe, name and boundary rules are put in the kernel's rule maps (so matching goes on while
//! the daemon is down), and running processes that match are adopted with their subtrees.
//! Exe rules are keyed by the file's device and inode: a package upgrade that renames a new
//! binary over the path gets a new inode, which [`Applied::refresh`] adds when the path's
//! directory changes.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use bpfkill_common::COMM_LEN;

use crate::{
    config::Config,
    error::Result,
    lineage::{
        adopt,
        discover::{self, Hints},
        registry,
    },
    sys::{
        files::{exe_key, kernel_dev},
        pidfile::PidSource,
        procs,
    },
    tracking::{maps::RuleSet, Tracking},
};

fn comm_key(name: &str) -> [u8; COMM_LEN] {
    let mut key = [0u8; COMM_LEN];
    let n = name.len().min(COMM_LEN - 1);
    key[..n].copy_from_slice(&name.as_bytes()[..n]);
    key
}

/// What the daemon applied: the rules and what each exe rule's path names now.
#[derive(Debug, Default)]
pub struct Applied {
    /// The rules in the kernel.
    pub rules: RuleSet,
    /// Exe rule paths, with their service ids.
    pub exe_paths: Vec<(PathBuf, u32)>,
    /// Services adopted because a running process matched, with the PIDs and how.
    pub adopted: Vec<(String, u32, String)>,
    /// Problems that do not stop the daemon (an exe rule's file missing, say).
    pub warnings: Vec<String>,
}

impl Applied {
    /// Declares the services, sets the kernel's rules to exactly the configuration's, and
    /// adopts running matches. Services configured before but not now are undeclared.
    pub fn apply(tracking: &mut Tracking, config: &Config) -> Result<Applied> {
        let mut applied = Applied::default();
        let mut ids = BTreeMap::new();
        for name in config.services.keys() {
            ids.insert(name.clone(), registry::declare(tracking, name)?.id);
        }
        for svc in registry::list(tracking) {
            if svc.record.flags & bpfkill_common::service_flags::CONFIGURED != 0
                && !ids.contains_key(&svc.name)
            {
                registry::undeclare(tracking, &svc)?;
            }
        }
        for (name, svc) in &config.services {
            let id = ids[name];
            for path in &svc.exe {
                applied.exe_paths.push((path.clone(), id));
                match exe_key(path) {
                    Some(key) => {
                        applied.rules.exe.insert(key, id);
                    }
                    None => applied.warnings.push(format!(
                        "service {name}: {} is not an executable file (yet): its rule waits for it",
                        path.display()
                    )),
                }
            }
            if let Some(comm) = &svc.comm {
                applied.rules.comm.insert(comm_key(comm), id);
            }
            for path in &svc.leave_exe {
                match exe_key(path) {
                    Some(key) => {
                        applied.rules.leave.insert((key, id));
                    }
                    None => applied.warnings.push(format!(
                        "service {name}: boundary {} does not exist",
                        path.display()
                    )),
                }
            }
        }
        tracking.set_rules(&applied.rules)?;
        applied.adopt_running(tracking, config, &ids)?;
        Ok(applied)
    }

    /// Re-reads the exe rules' paths and adds the new identity of any that changed (an
    /// upgraded binary); the old one stays, for processes that still exec it by descriptor.
    /// Returns the paths refreshed.
    pub fn refresh(&mut self, tracking: &mut Tracking) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for (path, id) in &self.exe_paths {
            if let Some(key) = exe_key(path) {
                if self.rules.exe.get(&key) != Some(id) {
                    tracking.add_exe_rule(key, *id)?;
                    self.rules.exe.insert(key, *id);
                    out.push(path.clone());
                }
            }
        }
        Ok(out)
    }

    /// The directories to watch for upgrades of the exe rules' files.
    pub fn watched_dirs(&self) -> BTreeSet<PathBuf> {
        self.exe_paths
            .iter()
            .filter_map(|(p, _)| p.parent().map(Path::to_path_buf))
            .collect()
    }

    /// Adopts the running processes that match a rule (exe, name, pidfile, unit), each with
    /// its current subtree: the topmost match only (a forked worker of a matching daemon is
    /// adopted under it), and none the kernel has already tagged for that service.
    fn adopt_running(
        &mut self,
        tracking: &mut Tracking,
        config: &Config,
        ids: &BTreeMap<String, u32>,
    ) -> Result<()> {
        let mut matches: BTreeMap<u32, (String, String)> = BTreeMap::new();
        if let Ok(all) = procfs::process::all_processes() {
            for p in all.flatten() {
                let pid = p.pid as u32;
                if pid <= 1 || pid == std::process::id() {
                    continue;
                }
                let exe = std::fs::metadata(format!("/proc/{pid}/exe"))
                    .ok()
                    .map(|m| (kernel_dev(m.dev()), m.ino()));
                let comm = procs::comm(pid);
                let hit = exe
                    .and_then(|k| self.rules.exe.get(&k).map(|id| (*id, "its executable")))
                    .or_else(|| comm.and_then(|c| self.rules.comm.get(&c).map(|id| (*id, "its name"))));
                if let Some((id, how)) = hit {
                    if let Some(name) = ids.iter().find(|(_, v)| **v == id).map(|(k, _)| k.clone()) {
                        matches.insert(pid, (name, how.to_string()));
                    }
                }
            }
        }
        for (name, svc) in &config.services {
            if svc.pidfile.is_none() && svc.unit.is_none() {
                continue;
            }
            let hints = Hints {
                pidfile: svc.pidfile.as_deref(),
                unit: svc.unit.as_deref(),
            };
            if let Some(found) = discover::by_hints(&hints) {
                matches.insert(found.pid, (name.clone(), found.via));
            }
        }
        let tags = tracking.tags();
        for (&pid, (name, how)) in &matches {
            let id = ids[name];
            let already = tags.iter().any(|(p, t)| *p == pid && t.service_id == id);
            let under_a_match = procs::ancestors(pid)
                .iter()
                .any(|a| matches.get(a).is_some_and(|(n, _)| n == name));
            if already || under_a_match {
                continue;
            }
            match adopt::track(tracking, name, &PidSource::Pid(pid)) {
                Ok(_) => self.adopted.push((name.clone(), pid, how.clone())),
                Err(e) => self
                    .warnings
                    .push(format!("service {name}: cannot adopt PID {pid}: {e}")),
            }
        }
        Ok(())
    }
}
