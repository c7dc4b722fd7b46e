//! Harness for the privileged integration tests: a private tracking instance per test (its
//! own pin directory, unloaded on drop), real process trees from the `forker` helper, and
//! event-based waiting (pidfd readiness, `ready` lines), never sleeps.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use rustix::{
    event::{poll, PollFd, PollFlags, Timespec},
    process::{pidfd_open, Pid, PidfdFlags},
};

/// Path of the bpfkill binary under test: `$BPFKILL_BIN`, else next to the test binary.
pub fn bpfkill_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BPFKILL_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/bpfkill
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("bpfkill")
}

/// Returns why privileged tests cannot run here, or None when they can.
pub fn privileged_skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root to load eBPF programs (run `cargo xtask test` as root)".into());
    }
    None
}

/// Environment variable naming a file where each skipped test appends one line, so a
/// runner (`cargo xtask vm-test`) can count skips apart from passes.
pub const SKIP_LOG_ENV: &str = "BPFKILL_SKIP_LOG";

/// Records that the calling test is skipped: prints why, and appends
/// `<test name>\t<reason>` to `$BPFKILL_SKIP_LOG` when that is set.
pub fn skip(reason: &str) {
    eprintln!("SKIPPED: {reason}");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        use std::io::Write;
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{name}\t{}", reason.replace('\n', " "));
        }
    }
}

/// Skips the calling test (printing why) unless it can load eBPF here.
#[macro_export]
macro_rules! require_privileges {
    () => {
        if let Some(reason) = $crate::privileged_skip_reason() {
            $crate::skip(&reason);
            return;
        }
    };
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique name for this test process, usable as a service name or pin directory.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A private tracking instance.
pub struct Instance {
    /// Its pin directory.
    pub pin_dir: PathBuf,
    /// Its journal directory (removed on drop).
    pub journal_dir: PathBuf,
    /// Its main configuration file (`$BPFKILL_CONFIG`; empty unless a test writes it, so the
    /// host's /etc/bpfkill never leaks in), with `conf.d/` beside it. Removed on drop.
    pub config: PathBuf,
    /// Its daemon's socket for ordinary users (removed on drop).
    socket: PathBuf,
    bin: PathBuf,
}

impl Instance {
    /// An instance whose pin directory is chosen but nothing is loaded yet.
    pub fn unloaded() -> Self {
        let name = unique("bpfkill-test");
        Self::new(bpfkill_bin(), PathBuf::from(format!("/sys/fs/bpf/{name}")), &name)
    }

    /// An unloaded instance pinned under `/sys/fs/bpf/NAME/v{abi}`, as a packaged bpfkill
    /// pins (older versions' trees sit beside it).
    pub fn versioned(abi: u32) -> Self {
        let name = unique("bpfkill-test");
        Self::new(
            bpfkill_bin(),
            PathBuf::from(format!("/sys/fs/bpf/{name}/v{abi}")),
            &name,
        )
    }

    /// Another version's instance beside this one: its tree named `v{abi}` in the same
    /// directory, the same journal and configuration, run with `bin`.
    pub fn beside(&self, bin: PathBuf, abi: u32) -> Self {
        Self {
            pin_dir: self.pin_dir.with_file_name(format!("v{abi}")),
            journal_dir: self.journal_dir.clone(),
            socket: self.socket.clone(),
            config: self.config.clone(),
            bin,
        }
    }

    fn new(bin: PathBuf, pin_dir: PathBuf, name: &str) -> Self {
        assert!(
            bin.is_file(),
            "{} is missing: build it first (`cargo build -p bpfkill`, or run `cargo xtask test`)",
            bin.display()
        );
        let config_dir = std::env::temp_dir().join(format!("{name}-config"));
        std::fs::create_dir_all(&config_dir).expect("config dir");
        let config = config_dir.join("config.toml");
        std::fs::write(&config, "").expect("empty config");
        Self {
            pin_dir,
            journal_dir: std::env::temp_dir().join(format!("{name}-journal")),
            config,
            socket: PathBuf::from(format!("/run/bpfkill/{name}.sock")),
            bin,
        }
    }

    /// Loads tracking into a fresh pin directory.
    pub fn loaded() -> Self {
        let inst = Self::unloaded();
        let out = inst.run(["load"]);
        assert!(
            out.status.success(),
            "bpfkill load failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        inst
    }

    /// A bpfkill command bound to this instance.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("BPFKILL_PIN_DIR", &self.pin_dir)
            .env("BPFKILL_JOURNAL_DIR", &self.journal_dir)
            .env("BPFKILL_CONFIG", &self.config)
            .env("BPFKILL_SOCKET", &self.socket);
        c
    }

    /// Starts `bpfkill daemon` and waits until it consumes events; its log must contain
    /// `expect`. Its stderr keeps being drained; it is killed if the test fails.
    pub fn start_daemon(&self, expect: &str) -> Daemon {
        let mut daemon = self
            .cmd()
            .arg("daemon")
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn daemon");
        let mut err = BufReader::new(daemon.stderr.take().expect("stderr"));
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            assert!(
                err.read_line(&mut line).expect("read the daemon log") > 0,
                "daemon exited early:\n{seen}"
            );
            seen.push_str(&line);
            if line.contains("consuming events") {
                break;
            }
        }
        assert!(seen.contains(expect), "daemon log lacks {expect:?}:\n{seen}");
        // Keep draining the log so the daemon never blocks on a full pipe; keep it for
        // [`Daemon::wait_log`].
        let log = Arc::new(Mutex::new(seen));
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                let mut kept = kept.lock().expect("daemon log");
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        Daemon(Some(daemon), log)
    }

    /// A fresh instance whose tag map holds 4 processes (`load --max-tags 4` plus `load_args`),
    /// with a service of one `forker` that forked 6 children: 3 could not be tagged.
    pub fn with_full_tag_map(load_args: &[&str]) -> (Self, String, Tree) {
        let inst = Self::unloaded();
        let out = inst.run(["load", "--max-tags", "4"].iter().chain(load_args));
        assert_eq!(code(&out), 0, "{}", text(&out));
        let service = unique("full");
        let mut tree = inst.run_service(&service, &["forker"]);
        for _ in 0..6 {
            tree.fork_child();
        }
        (inst, service, tree)
    }

    /// Runs bpfkill with `args` and returns its output.
    pub fn run<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(&self, args: I) -> Output {
        self.cmd().args(args).output().expect("run bpfkill")
    }

    /// `bpfkill ps --service NAME --json`, parsed.
    pub fn ps(&self, service: &str) -> Vec<serde_json::Value> {
        let out = self.run(["ps", "--service", service, "--json"]);
        assert!(
            out.status.success(),
            "ps failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).expect("ps JSON")
    }

    /// PIDs listed by `ps` for a service.
    pub fn ps_pids(&self, service: &str) -> Vec<u32> {
        self.ps(service)
            .iter()
            .map(|e| e["pid"].as_u64().expect("pid") as u32)
            .collect()
    }

    /// `bpfkill status --json`, parsed, with its exit code.
    pub fn status(&self) -> (i32, serde_json::Value) {
        let out = self.run(["status", "--json"]);
        (
            out.status.code().unwrap_or(-1),
            serde_json::from_slice(&out.stdout).expect("status JSON"),
        )
    }

    /// The runs of tracking program `name` the kernel skipped so far (0 where it does not
    /// say): a skipped run is a tracking step that did not happen (see README's Limits).
    pub fn skipped_runs(&self, name: &str) -> u64 {
        let (_, status) = self.status();
        status["programs"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .and_then(|p| p["skipped_runs"].as_u64())
            .unwrap_or(0)
    }

    /// Starts `forker ARGS` as service `service` through `bpfkill run`.
    pub fn run_service(&self, service: &str, forker_args: &[&str]) -> Tree {
        let mut cmd = self.cmd();
        cmd.args(["run", "--service", service, "--"])
            .arg(forker_bin())
            .args(forker_args);
        Tree::spawn(cmd)
    }
}

impl Instance {
    /// The socket its daemon listens on for ordinary users (`$BPFKILL_SOCKET` of its
    /// commands).
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // A daemon killed by the test leaves its socket file.
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_dir_all(&self.journal_dir);
        if let Some(dir) = self.config.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
        let _ = self.cmd().arg("unload").output();
    }
}

/// A running `bpfkill daemon`, killed on drop (a failing test must not leave it behind: it
/// would hold the test's output open).
pub struct Daemon(Option<Child>, Arc<Mutex<String>>);

impl Daemon {
    /// Waits until the daemon's log has `count` lines containing `needle`; the log so far
    /// when it does not within `timeout`.
    pub fn wait_log(&self, needle: &str, count: usize, timeout: Duration) -> Result<(), String> {
        let seen = || {
            self.1
                .lock()
                .expect("daemon log")
                .lines()
                .filter(|l| l.contains(needle))
                .count()
        };
        if poll_until(timeout, || seen() >= count) {
            Ok(())
        } else {
            Err(self.1.lock().expect("daemon log").clone())
        }
    }

    /// Its PID.
    pub fn pid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_child(self.0.as_ref().expect("running"))
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; the daemon must exit 0.
    pub fn stop(mut self) {
        let mut c = self.0.take().expect("running");
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&c),
            rustix::process::Signal::TERM,
        )
        .expect("SIGTERM the daemon");
        assert!(c.wait().expect("wait").success(), "daemon must exit 0 on SIGTERM");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Path of the `forker` helper.
pub fn forker_bin() -> PathBuf {
    bpfkill_bin().with_file_name("forker")
}

/// A process tree started from the `forker` helper.
pub struct Tree {
    /// The process started (after `bpfkill run` exec'd, the service's main process).
    pub child: Child,
    stdout: BufReader<ChildStdout>,
    stdin: Option<ChildStdin>,
    /// Every PID the helper reported, killed on drop.
    pub pids: Vec<u32>,
    /// Values of the `ready` line.
    pub ready: HashMap<String, u32>,
}

fn parse_kv(line: &str) -> HashMap<String, u32> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

impl Tree {
    /// Spawns `cmd` (a forker invocation, possibly behind `bpfkill run`) and waits for its
    /// `ready` line.
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tree");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let stdin = child.stdin.take();
        let mut tree = Tree {
            child,
            stdout,
            stdin,
            pids: Vec::new(),
            ready: HashMap::new(),
        };
        let line = tree.read_line();
        assert!(
            line.starts_with("ready"),
            "unexpected first line from the helper: {line:?}"
        );
        tree.ready = parse_kv(&line);
        tree.pids.extend(tree.ready.values().copied());
        tree
    }

    /// A pause-forever helper that is not part of any service.
    pub fn unrelated(rename: &str) -> Self {
        let mut cmd = Command::new(forker_bin());
        cmd.args(["pause", "--rename", rename]);
        Self::spawn(cmd)
    }

    fn read_line(&mut self) -> String {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).expect("read helper output");
        assert!(n > 0, "helper exited before reporting");
        line.trim().to_string()
    }

    /// The exit status of the process started, once it exits (it must within `timeout`).
    pub fn exit_status(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let pid = self.child.id();
        assert!(wait_gone(pid, timeout), "{pid} did not exit within {timeout:?}");
        self.child.wait().expect("reap")
    }

    /// Value `key` of the ready line.
    pub fn pid(&self, key: &str) -> u32 {
        *self
            .ready
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {:?}", self.ready))
    }

    /// Waits until no reported process is running (`R`) or in an uninterruptible wait (`D`).
    /// Helpers report `ready` just before they block in pause() (or, a leader, exit), so on a
    /// slow machine one may still be runnable when a test compares its state. Polls: the
    /// kernel has no event for another process falling asleep.
    pub fn settle(&self) {
        for &pid in &self.pids {
            assert!(
                poll_until(Duration::from_secs(60), || !matches!(state(pid), Some('R' | 'D'))),
                "{pid} still running: state {:?}",
                state(pid)
            );
        }
    }

    /// In `forker` mode: makes the main process fork one child; returns the child's PID.
    pub fn fork_child(&mut self) -> u32 {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "fork").expect("write fork");
        stdin.flush().expect("flush");
        let line = self.read_line();
        let pid = *parse_kv(&line)
            .get("pid")
            .unwrap_or_else(|| panic!("bad child line {line:?}"));
        self.pids.push(pid);
        pid
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        for &pid in &self.pids {
            if let Ok(fd) = open_pidfd(pid) {
                let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn open_pidfd(pid: u32) -> rustix::io::Result<std::os::fd::OwnedFd> {
    pidfd_open(
        Pid::from_raw(pid as i32).ok_or(rustix::io::Errno::INVAL)?,
        PidfdFlags::empty(),
    )
}

/// True while `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// Waits (on a pidfd, no polling loop) until `pid` has exited; false on timeout.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let Ok(fd) = open_pidfd(pid) else { return true };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return !is_alive(pid);
        }
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos() as i64,
        };
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(n) if n > 0 => return true,
            Ok(_) => return !is_alive(pid),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => panic!("poll pidfd: {e}"),
        }
    }
}

/// Exit code of an Output, -1 when killed.
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Stdout and stderr of an Output, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Live (non-zombie) processes whose command line contains the word `marker`.
pub fn marker_survivors(marker: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmdline.split(|b| *b == 0).any(|w| w == marker.as_bytes()) && is_alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// The state letter of a process (`R`, `S`, `T`, `Z`, ...).
pub fn state(pid: u32) -> Option<char> {
    procfs::process::Process::new(pid as i32)
        .ok()?
        .stat()
        .ok()
        .map(|s| s.state)
}

/// Polls `check` until it holds or `timeout` passes. Only for conditions the kernel offers no
/// event for (another process's stop state, a cgroup's process count).
pub fn poll_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A cgroup made for one test; its processes are killed and it is removed on drop.
pub struct TempCgroup {
    /// Its directory.
    pub dir: PathBuf,
}

impl TempCgroup {
    /// Creates `name` under the hierarchy mounted at `mount`.
    pub fn create(mount: &std::path::Path, name: &str) -> Self {
        let dir = mount.join(name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Self { dir }
    }

    /// PIDs in the cgroup.
    pub fn procs(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for TempCgroup {
    fn drop(&mut self) {
        // Stop any forking (pids cgroups), kill whatever is left until nothing is, then
        // remove the directory once it is empty (reaping is asynchronous, with no event).
        let _ = std::fs::write(self.dir.join("pids.max"), "0");
        poll_until(Duration::from_secs(300), || {
            let procs = self.procs();
            for &pid in &procs {
                if let Ok(fd) = open_pidfd(pid) {
                    let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
                }
            }
            procs.is_empty() && std::fs::remove_dir(&self.dir).is_ok()
        });
    }
}

/// Mount point of a cgroup hierarchy that offers the pids controller (v1 `pids`, or v2 when
/// it is enabled for children of the root), or why there is none.
pub fn pids_hierarchy() -> Result<PathBuf, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split_whitespace().nth(4).unwrap_or("");
        let mut r = right.split_whitespace();
        let fstype = r.next().unwrap_or("");
        let super_opts = r.nth(1).unwrap_or("");
        if fstype == "cgroup" && super_opts.split(',').any(|o| o == "pids") {
            return Ok(PathBuf::from(mount_point));
        }
        if fstype == "cgroup2" {
            let control =
                std::fs::read_to_string(format!("{mount_point}/cgroup.subtree_control")).unwrap_or_default();
            if control.split_whitespace().any(|c| c == "pids") {
                return Ok(PathBuf::from(mount_point));
            }
        }
    }
    Err("no cgroup hierarchy with the pids controller is mounted".into())
}

/// Mount point of the cgroup v2 hierarchy.
pub fn v2_hierarchy() -> Result<PathBuf, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    mountinfo
        .lines()
        .filter_map(|l| l.split_once(" - "))
        .find(|(_, r)| r.starts_with("cgroup2 "))
        .map(|(l, _)| PathBuf::from(l.split_whitespace().nth(4).unwrap_or("")))
        .ok_or_else(|| "no cgroup v2 hierarchy is mounted".into())
}

/// The value, or None after printing why the calling test is skipped.
pub fn or_skip<T>(found: Result<T, String>) -> Option<T> {
    match found {
        Ok(v) => Some(v),
        Err(why) => {
            skip(&why);
            None
        }
    }
}

/// A scratch directory for a test, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh directory under the temporary directory.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(name));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    /// A copy of the forker helper at `name` in this directory: a binary of its own inode.
    pub fn binary(&self, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join(name);
        std::fs::copy(forker_bin(), &path).expect("copy forker");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
