//! Types shared by the bpfkill kernel programs and userspace.
//!
//! Everything here is `#[repr(C)]` plain data: it is the layout of BPF map keys and values,
//! ring-buffer event records and load-time globals. Changing a layout changes the on-kernel
//! ABI, so [`ABI_VERSION`] (part of the pin path) must be bumped with it.
#![no_std]

#[cfg(feature = "user")]
extern crate std;

#[cfg(feature = "user")]
pub mod user;

/// Version of the map/event layout. Pins live under `/sys/fs/bpf/bpfkill/v{ABI_VERSION}`, so
/// a bpfkill built with another layout never adopts incompatible maps.
pub const ABI_VERSION: u32 = 6;

/// SIGKILL's number: the one signal the kernel programs send, and the one userspace treats
/// specially (doom mode).
pub const SIGKILL: u32 = 9;

/// Longest service name, including the terminating NUL padding.
pub const SERVICE_NAME_LEN: usize = 64;
/// Length of a task's `comm`.
pub const COMM_LEN: usize = 16;
/// Bytes of an exec'd filename carried in an event.
pub const FILENAME_LEN: usize = 256;

/// Default capacity of the tag map (processes tracked at once, all services together).
pub const DEFAULT_MAX_TAGS: u32 = 131_072;
/// Capacity of the service registry.
pub const MAX_SERVICES: u32 = 4096;
/// Size of the event ring buffer in bytes (a power of two, multiple of the page size).
pub const EVENTS_BYTES: u32 = 8 << 20;

/// Names of the maps, as declared by the kernel programs and pinned by userspace.
pub mod maps {
    /// `HashMap<u32 tgid, Tag>`: every live tagged process.
    pub const TAGS: &str = "BPFKILL_TAGS";
    /// `PerCpuHashMap<u32 service id, ServiceStats>`: per-service counters.
    pub const SERVICE_STATS: &str = "BPFKILL_SVC_STATS";
    /// `Array<DaemonState>` of one entry: the running daemon.
    pub const DAEMON: &str = "BPFKILL_DAEMON";
    /// `HashMap<ExeKey, u32 service id>`: exe rules, applied at exec.
    pub const RULES: &str = "BPFKILL_RULES";
    /// `HashMap<[u8; 16] comm, u32 service id>`: name rules, applied at exec.
    pub const COMM_RULES: &str = "BPFKILL_COMM_RULES";
    /// `HashMap<LeaveKey, u32>`: boundary rules, applied at exec.
    pub const LEAVE_RULES: &str = "BPFKILL_LEAVE_RULES";
    /// `HashMap<u32 service id, ServiceRecord>`: the service registry.
    pub const SERVICES: &str = "BPFKILL_SERVICES";
    /// `PerCpuArray<u64>` indexed by [`crate::stat`]: counters.
    pub const STATS: &str = "BPFKILL_STATS";
    /// `RingBuf` of [`crate::Event`] records.
    pub const EVENTS: &str = "BPFKILL_EVENTS";
    /// `LruHashMap<u32 tgid, Ghost>`: recently exited tagged processes, so lineage can be
    /// followed through creators that are gone.
    pub const GHOSTS: &str = "BPFKILL_GHOSTS";
    /// `HashMap<u32 service id, u64 expiry>`: services being SIGKILLed as a whole; every
    /// tagged process of one is killed in the kernel until the entry expires (boot-time ns),
    /// so a crashed kill never leaves a service doomed.
    pub const DOOMED_SERVICES: &str = "BPFKILL_DOOMED_SERVICES";
    /// `Array<KernelLayout>` with one entry: the layout the loaded programs use.
    pub const LAYOUT: &str = "BPFKILL_LAYOUT";
    /// `HashMap<u64 task address, Tag>`: new processes of tagged creators whose fork run
    /// has not tagged them (yet), written by the fork backstop (see
    /// [`crate::programs::BACKSTOP`]); `start_ns` is 0 until the tag is recovered.
    pub const UNSEEN: &str = "BPFKILL_UNSEEN";
}

/// Capacity of the unseen map: children of tagged creators between their creation and the
/// fork program's run, and those whose fork run the kernel skipped, until they are tagged or
/// freed.
pub const MAX_UNSEEN: u32 = 16_384;

/// Capacity of the ghost map (least recently written entries are evicted first).
pub const MAX_GHOSTS: u32 = 65_536;

/// Names of the kernel programs (one per hook) and the raw tracepoint each attaches to.
pub mod programs {
    /// Process creation, in the creator's context.
    pub const FORK: (&str, &str) = ("bpfkill_fork", "task_newtask");
    /// Successful exec.
    pub const EXEC: (&str, &str) = ("bpfkill_exec", "sched_process_exec");
    /// Thread exit; the process is gone when its last thread exits.
    pub const EXIT: (&str, &str) = ("bpfkill_exit", "sched_process_exit");
    /// The hooks that make up tracking, in attach order.
    pub const TRACKING: [(&str, &str); 3] = [FORK, EXEC, EXIT];
    /// Doom mode, attached only while a SIGKILL is in progress: a doomed process returning
    /// from any system call (a new child returning from fork first of all) is killed before
    /// it runs another user instruction.
    pub const DOOM: (&str, &str) = ("bpfkill_doom", "sys_exit");
    /// The task iterators behind `ps`: one [`crate::TaskSnapshot`] (then its command line)
    /// per live tagged process, read in one pass instead of ten /proc files per process. Two
    /// halves (even and odd tgids), so two CPUs can read them at once.
    /// The in-kernel kill: a task iterator that sends SIGKILL to every doomed, tagged
    /// process whose start time matches (the `bpf_send_signal_task` kfunc, Linux 6.13+).
    pub const REAP: (&str, &str) = ("bpfkill_reap", "task");
    /// The immediate of the reap program's kfunc call before the loader patches in the
    /// kfunc's BTF id: a value no BTF id reaches.
    pub const KFUNC_PLACEHOLDER: u32 = 0x7ead_c0de;
    /// The fork backstop, BPF LSM programs (the kernel never skips an LSM program's run, as
    /// it skips a raw tracepoint program's while another run of it is preempted on the same
    /// CPU, as on Linux 7.2, whose tracepoints are preemptible): `task_alloc` records, under the new
    /// task's address, the tag its tagged creator would give it; the fork program removes
    /// the record when it tags the child; a record it left (its run skipped) becomes a tag
    /// when the fork, exec, doom, kill or ps programs next meet the process; `task_free`
    /// removes what is left. Attached where BPF LSM is active.
    pub const BACKSTOP: [(&str, &str); 2] = [("bpfkill_alloc", "task_alloc"), ("bpfkill_free", "task_free")];
    pub const SNAPSHOT: [(&str, &str); 2] = [
        ("bpfkill_snapshot_even", "task"),
        ("bpfkill_snapshot_odd", "task"),
    ];
}

/// Indices into the `STATS` per-CPU array.
pub mod stat {
    /// A tagged process forked a child that could not be tagged because the tag map was full.
    pub const TAGS_FULL: u32 = 0;
    /// An event could not be written because the ring buffer was full (nobody consuming).
    pub const EVENTS_LOST: u32 = 1;
    /// A kernel read (bpf_probe_read_kernel) failed; the event was skipped.
    pub const READ_ERRORS: u32 = 2;
    /// Children tagged in the kernel at fork.
    pub const FORKS_TAGGED: u32 = 3;
    /// Tagged processes whose last thread exited.
    pub const EXITS: u32 = 4;
    /// Execs by tagged processes.
    pub const EXECS: u32 = 5;
    /// A creator's tag had another start time than the creator: a stale entry, not trusted.
    pub const STALE_CREATOR: u32 = 6;
    /// Doomed processes killed in the kernel (at fork, or returning from a system call).
    pub const DOOM_KILLS: u32 = 7;
    /// Processes tagged late from the fork backstop's record: the kernel skipped the fork
    /// program's run that should have tagged them.
    pub const FORKS_RECOVERED: u32 = 8;
    /// A child of a tagged creator could not be recorded by the fork backstop (its map full).
    pub const UNSEEN_FULL: u32 = 9;
    /// Number of counters.
    pub const COUNT: u32 = 10;
    /// Human names, by index.
    pub const NAMES: [&str; COUNT as usize] = [
        "tags_full",
        "events_lost",
        "read_errors",
        "forks_tagged",
        "exits",
        "execs",
        "stale_creator",
        "doom_kills",
        "forks_recovered",
        "unseen_full",
    ];
}

/// Bits of [`Tag::flags`].
pub mod tag_flags {
    /// Tagged by the kernel when its creator (a tagged process) forked it.
    pub const FORKED: u32 = 1 << 0;
    /// The service's main process, registered by `bpfkill run`.
    pub const MAIN: u32 = 1 << 1;
    /// Adopted by `bpfkill track`: its lineage before tracking is unknown.
    pub const ADOPTED: u32 = 1 << 2;
    /// `start_ns` came from /proc (clock-tick precision), not from the kernel task.
    pub const START_FROM_PROC: u32 = 1 << 3;
    /// The process has exec'd at least once since it was tagged.
    pub const EXECED: u32 = 1 << 4;
    /// The process was created with CLONE_PARENT (its parent is not its creator).
    pub const CLONE_PARENT: u32 = 1 << 5;
    /// A SIGKILL is in progress for this process: the kernel kills it when it forks or
    /// returns from a system call, and dooms every child it manages to create.
    pub const DOOMED: u32 = 1 << 6;
    /// Never killed in the kernel, even when its service is doomed: bpfkill marks its own
    /// ancestors (and itself) with this before dooming a service they belong to.
    pub const SPARED: u32 = 1 << 7;
    /// The kernel has killed this process (set at its first SIGKILL from the kernel, so a
    /// process is counted once however many of its threads return from a system call).
    pub const KILL_COUNTED: u32 = 1 << 8;
    /// Put at the root of its service by a rule when it exec'd the service's executable (or
    /// took its name).
    pub const MATCHED: u32 = 1 << 9;
    /// Tagged late, from the fork backstop's record: the kernel skipped the fork program's
    /// run (`tagged_ns` is still the creation time).
    pub const RECOVERED: u32 = 1 << 10;
}

/// [`DaemonState::flags`] bits.
pub mod daemon_flags {
    /// The configuration's rules are in the kernel and running matches are adopted.
    pub const READY: u32 = 1 << 0;
    /// The last reload failed (the previous rules stay); `error` says why.
    pub const RELOAD_FAILED: u32 = 1 << 1;
    /// The journal cannot be written (a full disk, a read-only or vanished directory): events
    /// are counted in `journal_dropped`, not written; `journal_error` says why.
    pub const JOURNAL_DEGRADED: u32 = 1 << 2;
}

/// Bytes of a path kept in [`DaemonState`].
pub const DAEMON_PATH_LEN: usize = 256;

/// Bytes of a daemon error message kept in [`DaemonState`].
pub const DAEMON_ERROR_LEN: usize = 256;

/// What the running daemon says of itself (one entry of a pinned array, written by the
/// daemon only), so `status` and `reload` find it and know whether it is ready.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DaemonState {
    /// Its PID (0: no daemon).
    pub pid: u32,
    /// [`daemon_flags`] bits.
    pub flags: u32,
    /// Its start time in ns since boot (with `pid`, its identity).
    pub start_ns: u64,
    /// Configurations applied so far (the start counts as one).
    pub generation: u64,
    /// Wall-clock ns of the last (re)load attempt.
    pub loaded_unix_ns: u64,
    /// Journal records not written since the daemon started (the journal was degraded).
    pub journal_dropped: u64,
    /// Why the last reload failed, NUL-padded UTF-8.
    pub error: [u8; DAEMON_ERROR_LEN],
    /// Why the journal is degraded, NUL-padded UTF-8.
    pub journal_error: [u8; DAEMON_ERROR_LEN],
    /// The daemon's version, NUL-padded.
    pub version: [u8; 32],
    /// Its main configuration file, NUL-padded.
    pub config: [u8; DAEMON_PATH_LEN],
    /// Its journal directory, NUL-padded (empty: no journal).
    pub journal: [u8; DAEMON_PATH_LEN],
}

impl Default for DaemonState {
    fn default() -> Self {
        Self {
            pid: 0,
            flags: 0,
            start_ns: 0,
            generation: 0,
            loaded_unix_ns: 0,
            journal_dropped: 0,
            error: [0; DAEMON_ERROR_LEN],
            journal_error: [0; DAEMON_ERROR_LEN],
            version: [0; 32],
            config: [0; DAEMON_PATH_LEN],
            journal: [0; DAEMON_PATH_LEN],
        }
    }
}

/// Capacity of each rule map.
pub const MAX_RULES: u32 = 4096;

/// An executable as the kernel identifies it: the device of its filesystem (the kernel's
/// `dev_t`, `major << 20 | minor`) and its inode number. Key of the exe rules, so a rule
/// matches the executed file whatever path, relative or through a link, named it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExeKey {
    /// `inode->i_sb->s_dev`.
    pub dev: u64,
    /// `inode->i_ino`.
    pub ino: u64,
}

/// Key of a boundary rule: a process of `service_id` that execs this file leaves the service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LeaveKey {
    /// The executable.
    pub exe: ExeKey,
    /// The service it leaves.
    pub service_id: u32,
    /// Zero.
    pub reserved: u32,
}

/// Per-service counters the kernel keeps (a per-CPU hash keyed by service id; userspace sums
/// the CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Children of the service's processes that could not be tagged (the tag map was full):
    /// the service may have processes bpfkill does not know about.
    pub untagged: u64,
    /// Processes of the service killed by the kernel during a SIGKILL (doom mode), each
    /// counted once.
    pub kernel_kills: u64,
}

/// A tagged process that has exited, kept (LRU-bounded) so that the lineage of its
/// descendants can still be followed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ghost {
    /// Service it belonged to.
    pub service_id: u32,
    /// Raw wait status of its exit.
    pub exit_status: u32,
    /// Its start time (ns since boot).
    pub start_ns: u64,
    /// Its creator (0 when unknown).
    pub creator_pid: u32,
    /// Its tag flags.
    pub flags: u32,
    /// Its creator's start time.
    pub creator_start_ns: u64,
    /// Boot-time ns of its exit.
    pub exit_ns: u64,
}

/// One tracked process (thread group), keyed by its tgid in the tag map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tag {
    /// Service the process belongs to.
    pub service_id: u32,
    /// [`tag_flags`] bits.
    pub flags: u32,
    /// The process's `start_boottime` in ns; `ns / (1e9 / USER_HZ)` equals field 22 of
    /// `/proc/PID/stat`, so a recycled PID number never matches.
    pub start_ns: u64,
    /// Tgid of the process that called fork/clone (0 when unknown).
    pub creator_pid: u32,
    /// Number of execs since the process was tagged.
    pub exec_count: u32,
    /// `start_boottime` of the creator, in ns (0 when unknown).
    pub creator_start_ns: u64,
    /// cgroup v2 id of the creator when it forked this process.
    pub cgroup_id: u64,
    /// clone flags of the creating call.
    pub clone_flags: u64,
    /// Boot-time ns when the tag was written.
    pub tagged_ns: u64,
    /// The name the kernel gave the process: inherited at fork, set by its last exec (the
    /// basename of the path passed to execve). A `comm` that differs now was renamed.
    pub comm: [u8; COMM_LEN],
}

/// [`ServiceRecord::flags`] bits.
pub mod service_flags {
    /// Declared in the configuration: never forgotten while configured.
    pub const CONFIGURED: u32 = 1 << 0;
}

/// A registered service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceRecord {
    /// NUL-padded UTF-8 name.
    pub name: [u8; SERVICE_NAME_LEN],
    /// Main process tgid.
    pub main_pid: u32,
    /// [`service_flags`] bits.
    pub flags: u32,
    /// Main process start time (ns since boot, tick precision).
    pub main_start_ns: u64,
    /// Wall-clock registration time, ns since the Unix epoch.
    pub registered_unix_ns: u64,
}

impl Default for ServiceRecord {
    fn default() -> Self {
        Self {
            name: [0; SERVICE_NAME_LEN],
            main_pid: 0,
            flags: 0,
            main_start_ns: 0,
            registered_unix_ns: 0,
        }
    }
}

/// Kind of an [`Event`].
pub mod event_kind {
    /// A tagged process created a child process.
    pub const FORK: u32 = 1;
    /// A tagged process exec'd.
    pub const EXEC: u32 = 2;
    /// A tagged process's last thread exited.
    pub const EXIT: u32 = 3;
    /// A rule put a process at the root of a service at exec (`prev_service_id`: the service
    /// it belonged to before, 0 for none).
    pub const MATCH: u32 = 4;
    /// A process left its service at exec (a boundary rule); `service_id` is the one it left.
    pub const LEAVE: u32 = 5;
}

/// A fork/exec/exit record written to the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// [`event_kind`].
    pub kind: u32,
    /// The process the event is about (tgid).
    pub pid: u32,
    /// Its parent (tgid of `real_parent`) at the time of the event.
    pub ppid: u32,
    /// Its creator, if known.
    pub creator_pid: u32,
    /// Service id.
    pub service_id: u32,
    /// For exits: the raw wait status (`exit_code` of the task: code << 8 | signal).
    pub exit_status: u32,
    /// For matches: the service the process belonged to before (0: none).
    pub prev_service_id: u32,
    /// Zero.
    pub reserved: u32,
    /// Boot-time ns when the event happened.
    pub time_ns: u64,
    /// The process's start time (ns since boot).
    pub start_ns: u64,
    /// cgroup v2 id of the current task at the event.
    pub cgroup_id: u64,
    /// For forks: clone flags.
    pub clone_flags: u64,
    /// `comm` at the event.
    pub comm: [u8; COMM_LEN],
    /// For execs: the filename passed to exec (NUL-terminated, possibly truncated).
    pub filename: [u8; FILENAME_LEN],
}

/// Kernel structure offsets, read from BTF at load time and passed to the programs as a
/// global. Every field is a byte offset; 0 is never a valid offset for these fields, so a
/// zero means "not loaded" and the programs do nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    /// `task_struct.pid`
    pub task_pid: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.start_boottime` (u64, ns)
    pub task_start_boottime: u32,
    /// `task_struct.real_parent` (pointer)
    pub task_real_parent: u32,
    /// `task_struct.group_leader` (pointer)
    pub task_group_leader: u32,
    /// `task_struct.signal` (pointer)
    pub task_signal: u32,
    /// `task_struct.exit_code` (int)
    pub task_exit_code: u32,
    /// `signal_struct.live` (atomic_t)
    pub signal_live: u32,
    /// `linux_binprm.filename` (pointer)
    pub bprm_filename: u32,
    /// 1 when `sched_process_exit` passes `group_dead` as its second argument (6.16+).
    pub exit_has_group_dead: u32,
    /// Nanoseconds per clock tick of /proc (1e9 / USER_HZ), to compare start times at the
    /// precision /proc reports them.
    pub ns_per_tick: u32,
    /// `task_struct.__state` (unsigned int)
    pub task_state: u32,
    /// `task_struct.exit_state` (int)
    pub task_exit_state: u32,
    /// `task_struct.comm`
    pub task_comm: u32,
    /// `task_struct.cred` (pointer)
    pub task_cred: u32,
    /// `cred.euid` (kuid_t)
    pub cred_euid: u32,
    /// `task_struct.cgroups` (struct css_set pointer)
    pub task_cgroups: u32,
    /// `css_set.dfl_cgrp` (struct cgroup pointer)
    pub css_set_dfl_cgrp: u32,
    /// `cgroup.kn` (struct kernfs_node pointer)
    pub cgroup_kn: u32,
    /// `kernfs_node.id` (u64)
    pub kernfs_node_id: u32,
    /// `task_struct.thread_pid` (struct pid pointer)
    pub task_thread_pid: u32,
    /// `pid.level` (unsigned int)
    pub pid_level: u32,
    /// `pid.numbers` (array of struct upid)
    pub pid_numbers: u32,
    /// `sizeof(struct upid)`
    pub upid_size: u32,
    /// `upid.ns` (struct pid_namespace pointer)
    pub upid_ns: u32,
    /// `pid_namespace.ns.inum` (unsigned int)
    pub pidns_inum: u32,
    /// `signal_struct.pids[PIDTYPE_SID]` (struct pid pointer)
    pub signal_sid_pid: u32,
    /// `task_struct.mm` (pointer)
    pub task_mm: u32,
    /// `mm_struct.arg_start` (unsigned long)
    pub mm_arg_start: u32,
    /// `mm_struct.arg_end` (unsigned long)
    pub mm_arg_end: u32,
    /// `mm_struct.exe_file` (struct file pointer)
    pub mm_exe_file: u32,
    /// `linux_binprm.file`: the file an exec runs (exe rules).
    pub bprm_file: u32,
    /// `file.f_inode`.
    pub file_inode: u32,
    /// `inode.i_ino`.
    pub inode_ino: u32,
    /// `inode.i_sb`.
    pub inode_sb: u32,
    /// `super_block.s_dev` (the kernel's `dev_t`: major << 20 | minor).
    pub sb_dev: u32,
    /// `signal_struct.flags` (`SIGNAL_GROUP_EXIT`: the process is dying already).
    pub signal_flags: u32,
    /// `signal_struct.pids[PIDTYPE_PGID]` (struct pid pointer)
    pub signal_pgid_pid: u32,
    /// The kernel programs' log level, fixed at load ([`kernel_log`]): their diagnostics
    /// (a full map, an unreadable kernel structure) below it are pruned by the verifier.
    pub log_level: u32,
}

/// Levels of the kernel programs' diagnostics (aya-log's, whose `AYA_LOG_LEVEL` global takes
/// the same value): a level enables itself and every level below it.
pub mod kernel_log {
    /// No diagnostics: every log statement is dead code (the default).
    pub const OFF: u32 = 0;
    /// Something is broken: the programs run without a kernel layout.
    pub const ERROR: u32 = 1;
    /// A process could not be tracked (a full map) or a kernel read failed.
    pub const WARN: u32 = 2;
    /// Rare, expected decisions: a rule matched at exec, a process left its service.
    pub const INFO: u32 = 3;
    /// Per-process decisions: stale creators, kills in the kernel.
    pub const DEBUG: u32 = 4;
    /// Names, by level.
    pub const NAMES: [&str; 5] = ["off", "error", "warn", "info", "debug"];
}

/// Longest command line the task iterator copies (longer ones are cut and flagged).
pub const SNAPSHOT_CMDLINE_MAX: usize = 4096;

/// `TaskSnapshot.flags` bits.
pub mod snapshot_flags {
    /// The command line was longer than [`crate::SNAPSHOT_CMDLINE_MAX`] and was cut.
    pub const CMDLINE_TRUNCATED: u32 = 1;
    /// The command line could not be read (no mm: a zombie, or a kernel thread).
    pub const NO_CMDLINE: u32 = 2;
}

/// What the in-kernel kill (the reap iterator) writes for each process it signalled: the
/// report needs nothing else, so the tag map is read after the kill, not before it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    /// The process (its tgid).
    pub pid: u32,
    /// Padding (zero).
    pub reserved: u32,
    /// Its tag when it was signalled.
    pub tag: Tag,
}

/// What the task iterator writes for one live tagged process (a thread-group leader),
/// followed by `cmdline_len` bytes of its command line (NUL-separated arguments).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskSnapshot {
    /// Its tag.
    pub tag: Tag,
    /// tgid.
    pub pid: u32,
    /// `real_parent`'s tgid.
    pub ppid: u32,
    /// `__state`.
    pub state: u32,
    /// `exit_state`.
    pub exit_state: u32,
    /// Session id (in the initial PID namespace).
    pub sid: u32,
    /// Effective uid.
    pub euid: u32,
    /// `start_boottime` in ns.
    pub start_ns: u64,
    /// cgroup v2 id now.
    pub cgroup_id: u64,
    /// Inode of its PID namespace.
    pub pidns: u32,
    /// Live threads (`signal->live`).
    pub live_threads: u32,
    /// [`snapshot_flags`] bits.
    pub flags: u32,
    /// Bytes of command line that follow.
    pub cmdline_len: u32,
    /// Process group id (in the initial PID namespace).
    pub pgid: u32,
    /// Reserved (keeps `exe_key` 8-aligned).
    pub reserved: u32,
    /// comm.
    pub comm: [u8; COMM_LEN],
    /// Identity of its executable (`mm->exe_file`, as an opaque key): processes with the same
    /// key run the same file, so userspace resolves each path once. 0 when unknown.
    pub exe_key: u64,
}
