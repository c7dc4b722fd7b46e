//! Resource limits bpfkill raises for itself: RLIMIT_MEMLOCK, which kernels before 5.11
//! charge BPF maps and programs to (later ones charge the memory cgroup; the tag map alone
//! takes megabytes, and the default limit was 64 KiB), and RLIMIT_NOFILE, since a kill holds
//! a pidfd per live target (the usual soft limit of 1024 is below a fork bomb's size).

fn get(resource: libc::__rlimit_resource_t) -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit for the kernel to fill.
    if unsafe { libc::getrlimit(resource, &mut r) } != 0 {
        return (0, 0);
    }
    (r.rlim_cur, r.rlim_max)
}

fn set(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> bool {
    let r = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `r` is a valid rlimit.
    unsafe { libc::setrlimit(resource, &r) == 0 }
}

/// The (soft, hard) RLIMIT_MEMLOCK; `RLIM_INFINITY` for unlimited.
pub fn memlock() -> (u64, u64) {
    get(libc::RLIMIT_MEMLOCK)
}

/// Raises RLIMIT_MEMLOCK as far as this process may: to unlimited (raising the hard limit
/// needs CAP_SYS_RESOURCE), else the soft limit to the hard one. Returns the limits now in
/// force.
pub fn raise_memlock() -> (u64, u64) {
    let (soft, hard) = memlock();
    if soft != libc::RLIM_INFINITY
        && !set(libc::RLIMIT_MEMLOCK, libc::RLIM_INFINITY, libc::RLIM_INFINITY)
        && soft < hard
    {
        set(libc::RLIMIT_MEMLOCK, hard, hard);
    }
    let now = memlock();
    if now != (soft, hard) {
        tracing::debug!("RLIMIT_MEMLOCK raised from {soft}/{hard} to {}/{}", now.0, now.1);
    }
    now
}

/// Raises the soft RLIMIT_NOFILE to the hard one, so that a kill can hold a pidfd per
/// target. Returns the soft limit now in force.
pub fn raise_nofile() -> u64 {
    let (soft, hard) = get(libc::RLIMIT_NOFILE);
    if soft < hard && set(libc::RLIMIT_NOFILE, hard, hard) {
        tracing::debug!("RLIMIT_NOFILE raised from {soft} to {hard}");
        return hard;
    }
    soft
}
