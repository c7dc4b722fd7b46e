//! Who created whom. Every tag records its creator (pid and start time); when a creator has
//! exited, its ghost (kept by the kernel in an LRU map) still remembers its own creator, so
//! lineage can be followed through processes that are long gone. Both the kill's `--pid`
//! selection and `ps --tree` walk it here.

use std::collections::HashMap;

use bpfkill_common::Tag;

use crate::{sys::clock::same_tick, tracking::Tracking};

/// A process as lineage knows it: PID and start time (boot-time ns).
pub type Proc = (u32, u64);

/// The creator links of live tagged processes, and the ghosts of exited ones.
pub struct Creators<'a> {
    tracking: &'a Tracking,
    live: &'a HashMap<u32, Tag>,
}

impl<'a> Creators<'a> {
    /// Lineage over the live tags `live` (by PID) and the pinned ghosts.
    pub fn new(tracking: &'a Tracking, live: &'a HashMap<u32, Tag>) -> Self {
        Self { tracking, live }
    }

    /// True when (pid, start) is one of the live tagged processes.
    pub fn is_live(&self, (pid, start_ns): Proc) -> bool {
        self.live
            .get(&pid)
            .is_some_and(|t| same_tick(t.start_ns, start_ns))
    }

    /// The recorded creator of (pid, start): from its live tag, else from its ghost. None
    /// when unknown (the main process, an adopted process, a ghost forgotten by the LRU, or a
    /// PID number that now names another process).
    pub fn creator_of(&self, (pid, start_ns): Proc) -> Option<Proc> {
        if let Some(t) = self.live.get(&pid).filter(|t| same_tick(t.start_ns, start_ns)) {
            return (t.creator_pid != 0).then_some((t.creator_pid, t.creator_start_ns));
        }
        let g = self
            .tracking
            .ghost(pid)
            .filter(|g| same_tick(g.start_ns, start_ns))?;
        (g.creator_pid != 0).then_some((g.creator_pid, g.creator_start_ns))
    }

    /// True when (pid, start) descends from `root` (itself included) by recorded creators.
    pub fn descends_from(&self, proc_: Proc, root: Proc) -> bool {
        let mut cur = proc_;
        for _ in 0..4096 {
            if cur.0 == root.0 && same_tick(cur.1, root.1) {
                return true;
            }
            match self.creator_of(cur) {
                Some(next) => cur = next,
                None => return false,
            }
        }
        false
    }

    /// The topmost known ancestor of (pid, start) by recorded creators (itself when its
    /// creator is unknown), and how many steps up it is.
    pub fn topmost(&self, proc_: Proc) -> (u32, usize) {
        let mut cur = proc_;
        for step in 0..4096 {
            match self.creator_of(cur) {
                Some(next) => cur = next,
                None => return (cur.0, step),
            }
        }
        (cur.0, 4096)
    }
}
