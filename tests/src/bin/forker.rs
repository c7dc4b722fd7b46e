//! Builds real process trees for the integration tests and the demo, and reports the PIDs it
//! made on stdout as one `ready key=value ...` line once the tree is complete, so tests wait
//! on that line instead of sleeping.
//!
//! Modes:
//! - `double-fork [--setsid] [--rename NAME]`: the main process forks a child that (optionally
//!   after setsid) forks a grandchild and exits; the grandchild is reparented to init.
//!   `ready main=PID escapee=PID`, then both pause.
//! - `threads N`: starts N threads, prints `ready pid=PID`, then the leader thread exits
//!   first while the others keep running.
//! - `forker`: prints `ready pid=PID`; for every `fork` line on stdin forks a child that
//!   pauses and prints `child pid=PID`; exits on EOF.
//! - `pause [--rename NAME]`: prints `ready pid=PID` and pauses.

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

fn double_fork(args: &[String]) -> ! {
    let setsid = args.iter().any(|a| a == "--setsid");
    let name = flag_value(args, "--rename");
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        die("pipe");
    }
    let main_pid = std::process::id();
    let child = fork();
    if child == 0 {
        if setsid {
            // SAFETY: no preconditions.
            unsafe { libc::setsid() };
        }
        let grandchild = fork();
        if grandchild == 0 {
            if let Some(n) = &name {
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
    say(&format!(
        "ready main={main_pid} escapee={}",
        u32::from_ne_bytes(buf)
    ));
    pause_forever()
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((mode, rest)) = args.split_first() else {
        eprintln!("usage: forker double-fork|threads|forker|pause ...");
        std::process::exit(2);
    };
    match mode.as_str() {
        "double-fork" => double_fork(rest),
        "threads" => threads(rest),
        "forker" => forker(),
        "pause" => {
            if let Some(n) = flag_value(rest, "--rename") {
                rename(&n);
            }
            say(&format!("ready pid={}", std::process::id()));
            pause_forever()
        }
        other => {
            eprintln!("forker: unknown mode {other}");
            std::process::exit(2)
        }
    }
}
