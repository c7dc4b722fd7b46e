//! Builds real process trees for the integration tests and the demo, and reports the PIDs it
//! made on stdout as one `ready key=value ...` line once the tree is complete, so tests wait
//! on that line instead of sleeping.
//!
//! Modes:
//! - `double-fork [--setsid] [--setpgid] [--rename NAME]`: the main process forks a child that
//!   (optionally after setsid, or setpgid into a group of its own) forks a grandchild and
//!   exits; the grandchild is reparented to init.
//!   `ready main=PID escapee=PID`, then both pause.
//! - `threads N`: starts N threads, prints `ready pid=PID`, then the leader thread exits
//!   first while the others keep running.
//! - `forker`: prints `ready pid=PID`; for every `fork` line on stdin forks a child that
//!   pauses and prints `child pid=PID`; exits on EOF.
//! - `pause [--rename NAME] [--ignore-term]`: prints `ready pid=PID` and pauses.
//! - `fork-loop`: prints `ready pid=PID`, then forks in a tight loop: most children exit at
//!   once (and are reaped), every 16th pauses (at most 256 of them).
//! - `bomb DIR`: joins the cgroup DIR, prints `ready pid=PID`, then every process forks
//!   forever, each child re-exec'ing itself first (confine it with a pids cgroup).
//! - `spawn N`: forks N children that pause, then prints `ready pid=PID` and pauses.
//! - `mover DIR`: forks a child that moves itself into cgroup DIR; `ready main=PID mover=PID`.
//! - `retitle TITLE`: rewrites its command line to TITLE followed by more `=` than its arguments
//!   took, spilling into the environment as setproctitle does.
//! - `daemon [--rename NAME]`: forks a child that calls daemon(3) (fork, setsid, stdio to
//!   /dev/null); the daemonised process reports itself: `ready main=PID escapee=PID`.
//! - `clone-parent [--rename NAME]`: the main process clones with CLONE_PARENT, so the new
//!   process is a child of the main process's parent (outside the service).
//! - `vfork-exec [--rename NAME]`: posix_spawn (clone with CLONE_VM|CLONE_VFORK, then exec)
//!   of `forker pause --quiet`.
//! - `exec-other PROGRAM ARGS...`: forks a child that execs another program (reported as
//!   `escapee`).
//! - `subreaper PROGRAM ARGS...`: becomes a child subreaper, runs PROGRAM as its child (its
//!   output passes through) and reaps whatever is reparented to it, forever.
//! - `pidns [--rename NAME]`: unshares a new PID namespace and forks its init, which forks a
//!   grandchild: `ready main=PID escapee=PID nested=PID` (PIDs as seen from the initial
//!   namespace).
//! - `pause --quiet` prints nothing.
//! - `exit-codes`: forks a child that exits with code 3 (and reaps it), then one that
//!   pauses: `ready main=PID exited=PID victim=PID`.
//! - `leaky [--exit N] [--ignore-term] [--children K]`: a job that leaks the three daemons
//!   wrappers lose: a double-forked grandchild in a new session (renamed `leak-daemon`), a
//!   setsid'd child, and a child that re-execs `forker pause --quiet` with an empty
//!   environment (`env -i`); with `--ignore-term` they all ignore SIGTERM. Prints
//!   `ready main=PID double=PID setsid=PID envi=PID`, then exits with N (without `--exit`,
//!   pauses; `--children K` also forks K plain children that pause).
//! - `request SOCKET LINE...`: connects to the unix socket, sends each LINE, prints each
//!   answer line (a raw client of the daemon's socket, for requests bpfkill never makes).
//! - `churn N`: forks N children that exit at once (reaping each), then prints
//!   `ready pid=PID` and pauses.
//!
//! Any extra `--marker WORD` argument is ignored; tests use it to find every process of a
//! tree in /proc (forked children keep their parent's command line).

use std::{
    ffi::CString,
    io::{BufRead, Write},
};

fn die(what: &str) -> ! {
    eprintln!("forker: {what}: {}", std::io::Error::last_os_error());
    std::process::exit(99)
}

fn rename(name: &str) {
    let c = CString::new(name).unwrap_or_else(|_| die("bad name"));
    // SAFETY: PR_SET_NAME takes a NUL-terminated string; the kernel copies at most 16 bytes.
    if unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr() as libc::c_ulong, 0, 0, 0) } != 0 {
        die("prctl(PR_SET_NAME)");
    }
}

fn pause_forever() -> ! {
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

fn fork() -> libc::pid_t {
    // SAFETY: the forker is single-threaded whenever it forks.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        die("fork");
    }
    pid
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Forks a child that (after setsid, or setpgid into a group of its own, when asked) forks a
/// grandchild and exits; the grandchild (renamed when asked) pauses, reparented to init.
/// Returns the grandchild's PID once it runs.
fn double_fork_grandchild(setsid: bool, setpgid: bool, name: Option<&str>) -> u32 {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        die("pipe");
    }
    let child = fork();
    if child == 0 {
        if setsid {
            // SAFETY: no preconditions.
            unsafe { libc::setsid() };
        }
        // SAFETY: no preconditions; a process group of its own, in the same session.
        if setpgid && unsafe { libc::setpgid(0, 0) } != 0 {
            die("setpgid");
        }
        if fork() == 0 {
            if let Some(n) = name {
                rename(n);
            }
            let me = std::process::id().to_ne_bytes();
            // SAFETY: writes 4 bytes from a live buffer.
            unsafe { libc::write(fds[1], me.as_ptr().cast(), me.len()) };
            pause_forever();
        }
        // SAFETY: exit without running the parent's atexit handlers or flushing its buffers.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: reaps the intermediate child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    let mut buf = [0u8; 4];
    // SAFETY: reads 4 bytes into a live buffer.
    if unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), 4) } != 4 {
        die("read grandchild pid");
    }
    u32::from_ne_bytes(buf)
}

fn double_fork(args: &[String]) -> ! {
    let setsid = args.iter().any(|a| a == "--setsid");
    let setpgid = args.iter().any(|a| a == "--setpgid");
    let name = flag_value(args, "--rename");
    let escapee = double_fork_grandchild(setsid, setpgid, name.as_deref());
    say(&format!("ready main={} escapee={escapee}", std::process::id()));
    pause_forever()
}

fn leaky(args: &[String]) -> ! {
    if args.iter().any(|a| a == "--ignore-term") {
        // SAFETY: installs SIG_IGN for SIGTERM (inherited by every child, kept across exec).
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    }
    let double = double_fork_grandchild(true, false, Some("leak-daemon"));
    let setsid = fork();
    if setsid == 0 {
        // SAFETY: no preconditions.
        unsafe { libc::setsid() };
        pause_forever();
    }
    let exe = CString::new(
        std::env::current_exe()
            .unwrap_or_else(|_| die("current_exe"))
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap_or_else(|_| die("exe path"));
    let argv: Vec<CString> = ["forker", "pause", "--quiet"]
        .iter()
        .map(|a| CString::new(*a).expect("no NUL"))
        .collect();
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let envi = fork();
    if envi == 0 {
        // SAFETY: NUL-terminated argv and an empty environment, both live until exec.
        unsafe { libc::execve(exe.as_ptr(), argv_ptrs.as_ptr(), envp.as_ptr()) };
        die("execve");
    }
    let children: usize = flag_value(args, "--children")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    for _ in 0..children {
        if fork() == 0 {
            pause_forever();
        }
    }
    say(&format!(
        "ready main={} double={double} setsid={setsid} envi={envi}",
        std::process::id()
    ));
    match flag_value(args, "--exit").and_then(|n| n.parse::<i32>().ok()) {
        Some(code) => std::process::exit(code),
        None => pause_forever(),
    }
}

fn request(args: &[String]) -> ! {
    let Some((path, lines)) = args.split_first() else {
        die("request SOCKET LINE...")
    };
    let stream = std::os::unix::net::UnixStream::connect(path).unwrap_or_else(|_| die("connect"));
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap_or_else(|_| die("clone")));
    let mut writer = stream;
    for line in lines.iter().filter(|l| !l.starts_with("--")) {
        writeln!(writer, "{line}").unwrap_or_else(|_| die("write"));
        let mut answer = String::new();
        if reader.read_line(&mut answer).unwrap_or(0) == 0 {
            die("the daemon closed the connection");
        }
        print!("{answer}");
    }
    std::process::exit(0)
}

fn threads(args: &[String]) -> ! {
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(4);
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..n {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send(());
            pause_forever()
        });
    }
    for _ in 0..n {
        let _ = rx.recv();
    }
    say(&format!("ready pid={}", std::process::id()));
    // SAFETY: the raw exit(2) system call ends only the calling (leader) thread, without
    // unwinding; the process lives on in the other threads.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
    unreachable!("exit(2) returned")
}

fn forker() -> ! {
    say(&format!("ready pid={}", std::process::id()));
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "fork" {
            let child = fork();
            if child == 0 {
                pause_forever();
            }
            say(&format!("child pid={child}"));
        }
    }
    std::process::exit(0)
}

fn join_cgroup(dir: &str) {
    if let Err(e) = std::fs::write(format!("{dir}/cgroup.procs"), "0") {
        eprintln!("forker: join cgroup {dir}: {e}");
        std::process::exit(99);
    }
}

fn fork_loop() -> ! {
    say(&format!("ready pid={}", std::process::id()));
    let mut n: u64 = 0;
    let mut paused = 0;
    loop {
        let long_lived = n.is_multiple_of(16) && paused < 256;
        // SAFETY: single-threaded.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            if long_lived {
                pause_forever();
            }
            // SAFETY: leave at once without running the parent's exit handlers.
            unsafe { libc::_exit(0) };
        }
        if pid > 0 && long_lived {
            paused += 1;
        }
        n += 1;
        // Reap what has exited so the loop does not fill the PID space.
        // SAFETY: WNOHANG never blocks.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
    }
}

fn bomb(dir: &str, marker: Option<String>) -> ! {
    join_cgroup(dir);
    // Lowest priority, so that the rest of the machine stays usable while the bomb runs.
    // SAFETY: no preconditions.
    unsafe { libc::nice(19) };
    say(&format!("ready pid={}", std::process::id()));
    bomb_loop(marker)
}

/// Every bomb process forks forever; each child re-execs the helper first, so that no
/// process inherits a chain of its ancestors' address spaces (a deep chain of copied
/// address spaces makes the kernel's own teardown of a large bomb take minutes, which would
/// measure the kernel, not the kill).
fn bomb_loop(marker: Option<String>) -> ! {
    let exe = CString::new("/proc/self/exe").unwrap_or_else(|_| die("exe"));
    let mut argv_owned = vec![
        CString::new("forker").unwrap_or_else(|_| die("argv")),
        CString::new("bomb-child").unwrap_or_else(|_| die("argv")),
    ];
    if let Some(m) = marker {
        argv_owned.push(CString::new("--marker").unwrap_or_else(|_| die("argv")));
        argv_owned.push(CString::new(m).unwrap_or_else(|_| die("marker")));
    }
    let mut argv: Vec<*const libc::c_char> = argv_owned.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    loop {
        // SAFETY: single-threaded; failures (the pids limit) are ignored.
        if unsafe { libc::fork() } == 0 {
            // SAFETY: argv is a NULL-terminated array of NUL-terminated strings.
            unsafe { libc::execv(exe.as_ptr(), argv.as_ptr()) };
            // SAFETY: exec failed; leave without running exit handlers.
            unsafe { libc::_exit(1) };
        }
    }
}

fn mover(dir: &str) -> ! {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        die("pipe");
    }
    let child = fork();
    if child == 0 {
        join_cgroup(dir);
        let me = std::process::id().to_ne_bytes();
        // SAFETY: writes 4 bytes from a live buffer.
        unsafe { libc::write(fds[1], me.as_ptr().cast(), me.len()) };
        pause_forever();
    }
    let mut buf = [0u8; 4];
    // SAFETY: reads 4 bytes into a live buffer.
    if unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), 4) } != 4 {
        die("read mover pid");
    }
    say(&format!(
        "ready main={} mover={}",
        std::process::id(),
        u32::from_ne_bytes(buf)
    ));
    pause_forever()
}

/// A pipe on which a descendant reports its PID (as seen through /proc, i.e. in the initial
/// PID namespace) to the main process.
struct PidPipe([libc::c_int; 2]);

impl PidPipe {
    fn new() -> Self {
        let mut fds = [0; 2];
        // SAFETY: fds has room for two descriptors.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            die("pipe");
        }
        PidPipe(fds)
    }

    /// Called in the descendant.
    fn send_self(&self) {
        let me = proc_self_pid().to_ne_bytes();
        // SAFETY: writes 4 bytes from a live buffer.
        unsafe { libc::write(self.0[1], me.as_ptr().cast(), me.len()) };
    }

    /// Called in the main process.
    fn receive(&self) -> u32 {
        let mut buf = [0u8; 4];
        // SAFETY: reads 4 bytes into a live buffer.
        if unsafe { libc::read(self.0[0], buf.as_mut_ptr().cast(), 4) } != 4 {
            die("read a reported pid");
        }
        u32::from_ne_bytes(buf)
    }
}

/// The caller's PID in the namespace of the mounted /proc (the initial one on a host), which
/// differs from getpid() inside a new PID namespace.
fn proc_self_pid() -> u32 {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(std::process::id)
}

fn maybe_rename(args: &[String]) {
    if let Some(n) = flag_value(args, "--rename") {
        rename(&n);
    }
}

/// The escapee's half: rename if asked, report its PID, pause.
fn escapee_reports(pipe: &PidPipe, args: &[String]) -> ! {
    maybe_rename(args);
    pipe.send_self();
    pause_forever()
}

/// The main process's half: `ready main=PID escapee=PID`, then pause.
fn main_reports(pipe: &PidPipe) -> ! {
    let escapee = pipe.receive();
    say(&format!("ready main={} escapee={escapee}", std::process::id()));
    pause_forever()
}

/// Rewrites its own command line the way setproctitle does (sshd's "sshd: user@pts/0"):
/// the new title is longer than the argument area and runs on into the environment's, with
/// no NUL where the arguments ended.
fn retitle(args: &[String]) -> ! {
    const ROOM: &str = "FORKER_TITLE_ROOM";
    let title = args.first().cloned().unwrap_or_else(|| die("retitle: no title"));
    if std::env::var_os(ROOM).is_none() {
        // Re-exec with an environment big enough to take the spill-over.
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().unwrap_or_else(|_| die("current_exe"));
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(ROOM, "r".repeat(4096))
            .exec();
        die(&format!("re-exec: {err}"));
    }
    let stat = procfs::process::Process::myself()
        .and_then(|p| p.stat())
        .unwrap_or_else(|_| die("stat"));
    let (Some(start), Some(end), Some(env_end)) = (stat.arg_start, stat.arg_end, stat.env_end) else {
        die("no argument area in stat");
    };
    let new = format!("{title} {}", "=".repeat((end - start) as usize));
    if start + new.len() as u64 >= env_end {
        die("no room for the title");
    }
    // SAFETY: [arg_start, env_end) is this process's own writable stack memory holding its
    // arguments and environment, neither of which is read again.
    unsafe {
        std::ptr::copy_nonoverlapping(new.as_ptr(), start as *mut u8, new.len());
        *((start as *mut u8).add(new.len())) = 0;
    }
    say(&format!("ready main={}", std::process::id()));
    pause_forever()
}

fn daemon_mode(args: &[String]) -> ! {
    let pipe = PidPipe::new();
    if fork() == 0 {
        // SAFETY: daemon(3) forks; the parent half exits inside it.
        if unsafe { libc::daemon(0, 0) } != 0 {
            die("daemon");
        }
        escapee_reports(&pipe, args);
    }
    main_reports(&pipe)
}

fn clone_parent(args: &[String]) -> ! {
    let pipe = PidPipe::new();
    // SAFETY: a fork-like clone (no new stack, no shared VM) of a single-threaded process.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        die("clone(CLONE_PARENT)");
    }
    if pid == 0 {
        escapee_reports(&pipe, args);
    }
    main_reports(&pipe)
}

fn vfork_exec(args: &[String]) -> ! {
    let exe = CString::new("/proc/self/exe").unwrap_or_else(|_| die("exe"));
    let mut argv_owned: Vec<CString> = ["forker", "pause", "--quiet"]
        .iter()
        .map(|a| CString::new(*a).unwrap_or_else(|_| die("argv")))
        .collect();
    if let Some(n) = flag_value(args, "--rename") {
        argv_owned.push(CString::new("--rename").unwrap_or_else(|_| die("argv")));
        argv_owned.push(CString::new(n).unwrap_or_else(|_| die("argv")));
    }
    let mut argv: Vec<*mut libc::c_char> = argv_owned.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv.push(std::ptr::null_mut());
    let mut pid: libc::pid_t = 0;
    extern "C" {
        static environ: *const *mut libc::c_char;
    }
    // SAFETY: argv is NULL-terminated; no file actions or attributes; glibc's posix_spawn
    // clones with CLONE_VM|CLONE_VFORK and execs.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            exe.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            argv.as_ptr(),
            environ,
        )
    };
    if rc != 0 {
        eprintln!("forker: posix_spawn: {}", std::io::Error::from_raw_os_error(rc));
        std::process::exit(99);
    }
    say(&format!("ready main={} escapee={pid}", std::process::id()));
    pause_forever()
}

fn exec_other(args: &[String]) -> ! {
    let Some((program, rest)) = args.split_first() else {
        die("exec-other needs a program")
    };
    // The write end closes on a successful exec, so EOF on the read end means "exec'd".
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        die("pipe2");
    }
    let child = fork();
    if child == 0 {
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new(program).args(rest).exec();
        eprintln!("forker: exec {program}: {err}");
        // SAFETY: leave without running the parent's exit handlers.
        unsafe { libc::_exit(127) };
    }
    let mut byte = 0u8;
    // SAFETY: closes our copy of the write end, then reads until the child's copy closes.
    unsafe {
        libc::close(fds[1]);
        libc::read(fds[0], (&mut byte as *mut u8).cast(), 1);
    }
    say(&format!("ready main={} escapee={child}", std::process::id()));
    pause_forever()
}

fn subreaper(args: &[String]) -> ! {
    let Some((program, rest)) = args.split_first() else {
        die("subreaper needs a program")
    };
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
        die("prctl(PR_SET_CHILD_SUBREAPER)");
    }
    if let Err(e) = std::process::Command::new(program).args(rest).spawn() {
        eprintln!("forker: start {program}: {e}");
        std::process::exit(99);
    }
    loop {
        // SAFETY: blocks until a child (or an adopted orphan) exits, then reaps it.
        if unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } < 0 {
            pause_forever();
        }
    }
}

fn pidns(args: &[String]) -> ! {
    // SAFETY: the next fork's child is the init of a new PID namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        die("unshare(CLONE_NEWPID)");
    }
    let pipe = PidPipe::new();
    let ns_init = fork();
    if ns_init == 0 {
        if fork() == 0 {
            maybe_rename(args);
            pipe.send_self();
            pause_forever();
        }
        loop {
            // SAFETY: the namespace's init reaps its orphans.
            if unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } < 0 {
                pause_forever();
            }
        }
    }
    let nested = pipe.receive();
    say(&format!(
        "ready main={} escapee={ns_init} nested={nested}",
        std::process::id()
    ));
    pause_forever()
}

/// `storm exec|fork|thread N`: creates N processes that exec `/bin/true` (fork, exec, exit,
/// reap), N processes that exit at once (fork, exit, reap) or N threads (spawn, join), one
/// after another, and prints `storm ns=ELAPSED` (the benchmark's unit of tracking cost).
fn storm(args: &[String]) -> ! {
    let kind = args.first().map(String::as_str).unwrap_or("exec");
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let path = c"/bin/true";
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    let start = std::time::Instant::now();
    for _ in 0..n {
        match kind {
            "thread" => {
                let _ = std::thread::spawn(|| ()).join();
            }
            "fork" | "exec" => {
                let pid = fork();
                if pid == 0 {
                    if kind == "exec" {
                        // SAFETY: NUL-terminated path, argv and envp arrays that outlive
                        // the call; a failed exec leaves at once.
                        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
                    }
                    // SAFETY: leave at once.
                    unsafe { libc::_exit(0) };
                }
                // SAFETY: reaps that child.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            }
            other => die(&format!("unknown storm kind {other}")),
        }
    }
    say(&format!("storm ns={}", start.elapsed().as_nanos()));
    std::process::exit(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((mode, rest)) = args.split_first() else {
        eprintln!("usage: forker double-fork|threads|forker|pause ...");
        std::process::exit(2);
    };
    match mode.as_str() {
        "double-fork" => double_fork(rest),
        "leaky" => leaky(rest),
        "request" => request(rest),
        "threads" => threads(rest),
        "forker" => forker(),
        "fork-loop" => fork_loop(),
        "spawn" => {
            let n: usize = rest.first().and_then(|a| a.parse().ok()).unwrap_or(100);
            for _ in 0..n {
                if fork() == 0 {
                    pause_forever();
                }
            }
            say(&format!("ready pid={}", std::process::id()));
            pause_forever()
        }
        "bomb" => bomb(
            rest.first()
                .map(String::as_str)
                .unwrap_or_else(|| die("bomb needs a cgroup")),
            flag_value(rest, "--marker"),
        ),
        "bomb-child" => bomb_loop(flag_value(rest, "--marker")),
        "mover" => mover(
            rest.first()
                .map(String::as_str)
                .unwrap_or_else(|| die("mover needs a cgroup")),
        ),
        "daemon" => daemon_mode(rest),
        "exit-codes" => {
            let exited = fork();
            if exited == 0 {
                // SAFETY: leave at once with code 3.
                unsafe { libc::_exit(3) };
            }
            // SAFETY: reaps that child.
            unsafe { libc::waitpid(exited, std::ptr::null_mut(), 0) };
            let victim = fork();
            if victim == 0 {
                pause_forever();
            }
            say(&format!(
                "ready main={} exited={exited} victim={victim}",
                std::process::id()
            ));
            pause_forever()
        }
        "churn" => {
            let n: usize = rest.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
            for _ in 0..n {
                let pid = fork();
                if pid == 0 {
                    // SAFETY: leave at once.
                    unsafe { libc::_exit(0) };
                }
                // SAFETY: reaps that child.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            }
            say(&format!("ready pid={}", std::process::id()));
            pause_forever()
        }
        "storm" => storm(rest),
        "clone-parent" => clone_parent(rest),
        "vfork-exec" => vfork_exec(rest),
        "exec-other" => exec_other(rest),
        "subreaper" => subreaper(rest),
        "pidns" => pidns(rest),
        "retitle" => retitle(rest),
        "pause" => {
            maybe_rename(rest);
            if rest.iter().any(|a| a == "--ignore-term") {
                // SAFETY: installs SIG_IGN for SIGTERM.
                unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
            }
            if !rest.iter().any(|a| a == "--quiet") {
                say(&format!("ready pid={}", std::process::id()));
            }
            pause_forever()
        }
        other => {
            eprintln!("forker: unknown mode {other}");
            std::process::exit(2)
        }
    }
}
