//! RLIMIT_MEMLOCK, which kernels before 5.11 charge BPF maps and programs to (later ones
//! charge the memory cgroup). The tag map alone takes megabytes; the default limit was 64 KiB.

/// The (soft, hard) limits; `RLIM_INFINITY` for unlimited.
pub fn limits() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit for the kernel to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return (0, 0);
    }
    (r.rlim_cur, r.rlim_max)
}

fn set(soft: u64, hard: u64) -> bool {
    let r = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `r` is a valid rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) == 0 }
}

/// Raises the limit as far as this process may: to unlimited (raising the hard limit needs
/// CAP_SYS_RESOURCE), else the soft limit to the hard one. Returns the limits now in force.
pub fn raise() -> (u64, u64) {
    let (soft, hard) = limits();
    if soft != libc::RLIM_INFINITY && !set(libc::RLIM_INFINITY, libc::RLIM_INFINITY) && soft < hard {
        set(hard, hard);
    }
    let now = limits();
    if now != (soft, hard) {
        tracing::debug!("RLIMIT_MEMLOCK raised from {soft}/{hard} to {}/{}", now.0, now.1);
    }
    now
}
