//! `/init` of the test VM (`cargo xtask vm-test --kernel ...`).
//!
//! As PID 1 it mounts the pseudo filesystems a real host has (proc, sys, devtmpfs, tmpfs,
//! a pure cgroup v2 hierarchy with the pids controller enabled, tracefs, bpffs), brings up
//! the loopback interface, starts
//! itself again as the suite runner, reaps every orphan until the runner ends (a real init's
//! job, which the escape tests depend on), prints the end marker and powers off.

use std::{path::Path, process::Command};

use rustix::{
    mount::{mount, MountFlags},
    process::{wait, WaitOptions},
    system::{reboot, RebootCommand},
};
use vm_suite::{Manifest, END_MARKER};

/// Where xtask puts the manifest inside the initramfs.
const MANIFEST: &str = "/vm-suite/manifest";

fn mount_fs(fstype: &str, target: &str) {
    if let Err(e) = std::fs::create_dir_all(target) {
        println!("vm-init: mkdir {target}: {e}");
    }
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let flags = if fstype == "devtmpfs" || fstype == "tmpfs" {
        MountFlags::NOSUID
    } else {
        flags
    };
    if let Err(e) = mount(fstype, target, fstype, flags, None) {
        println!("vm-init: mount {fstype} on {target}: {e}");
    }
}

fn setup() {
    mount_fs("proc", "/proc");
    mount_fs("sysfs", "/sys");
    mount_fs("devtmpfs", "/dev");
    // The initramfs is already a writable tmpfs/ramfs: a tmpfs on /tmp would hide the test
    // binaries when the checkout lives under /tmp (they sit at their host paths).
    for dir in ["/tmp", "/run"] {
        let empty = std::fs::read_dir(dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true);
        if empty {
            mount_fs("tmpfs", dir);
        }
    }
    mount_fs("cgroup2", "/sys/fs/cgroup");
    mount_fs("tracefs", "/sys/kernel/tracing");
    mount_fs("bpf", "/sys/fs/bpf");
    // Let child cgroups use the pids controller, as a systemd host does.
    if let Err(e) = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+pids") {
        println!("vm-init: enable the pids controller: {e}");
    }
    let _ = std::fs::create_dir_all("/var/lib");
    loopback_up();
}

/// Brings up `lo`, as every host has it (the metrics test talks HTTP over 127.0.0.1).
fn loopback_up() {
    // SAFETY: a plain socket for the interface ioctls, closed below; `ifr` is a zeroed ifreq
    // whose name is NUL-terminated, read and written by the kernel only within the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            println!("vm-init: socket: {}", std::io::Error::last_os_error());
            return;
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) != 0 {
                println!("vm-init: bring lo up: {}", std::io::Error::last_os_error());
            }
        } else {
            println!("vm-init: read lo's flags: {}", std::io::Error::last_os_error());
        }
        libc::close(fd);
    }
}

fn runner() -> i32 {
    let text = match std::fs::read_to_string(MANIFEST) {
        Ok(t) => t,
        Err(e) => {
            println!("vm-init: read {MANIFEST}: {e}");
            return 1;
        }
    };
    let manifest = match Manifest::parse(&text) {
        Ok(m) => m,
        Err(e) => {
            println!("vm-init: {e}");
            return 1;
        }
    };
    let mut manifest = manifest;
    // `bpfkill.tests=escape,kill` on the kernel command line runs only those test binaries,
    // `bpfkill.tests=-escape,kill` all but those.
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if let Some(only) = vm_suite::only_tests(&cmdline) {
        manifest.binaries.retain(|b| only.runs(&b.name));
        if manifest.binaries.is_empty() {
            println!(
                "vm-init: bpfkill.tests={}{} selects no test binary",
                if only.except { "-" } else { "" },
                only.names.join(",")
            );
            return 1;
        }
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "vm-init: kernel {}, {} test binaries",
        release.trim(),
        manifest.binaries.len()
    );
    let tally = vm_suite::run(&manifest, Path::new("/tmp/skipped-tests"));
    for s in &tally.skips {
        println!("skipped: {s}");
    }
    for b in &tally.failing_binaries {
        println!("failing: {b}");
    }
    for line in &tally.failures {
        println!("{} {line}", vm_suite::FAILURE_MARKER);
    }
    println!("{} elapsed={:.1}s", tally.marker(), tally.elapsed.as_secs_f64());
    i32::from(tally.failed != 0)
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--runner") {
        std::process::exit(runner());
    }
    if std::process::id() != 1 {
        eprintln!("vm-init: this is the test VM's /init; it must run as PID 1");
        std::process::exit(64);
    }
    setup();
    let ok = match Command::new("/proc/self/exe")
        .arg("--runner")
        .env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
        .spawn()
    {
        Ok(child) => {
            let runner_pid = child.id();
            // Reap everything; the runner's own status decides the outcome.
            loop {
                match wait(WaitOptions::empty()) {
                    Ok(Some((pid, status))) if pid.as_raw_nonzero().get() as u32 == runner_pid => {
                        break status.exit_status() == Some(0);
                    }
                    Ok(_) | Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => {
                        println!("vm-init: wait: {e}");
                        break false;
                    }
                }
            }
        }
        Err(e) => {
            println!("vm-init: start the runner: {e}");
            false
        }
    };
    println!("{END_MARKER} {}", if ok { "ok" } else { "fail" });
    rustix::fs::sync();
    let _ = reboot(RebootCommand::PowerOff);
    // Unreachable unless reboot failed; PID 1 must not exit.
    loop {
        std::thread::park();
    }
}
