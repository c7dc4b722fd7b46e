//! `bpfkill run`: register a service, tag this process as its main process, then exec the
//! command, so the service's main PID is the command's PID and its exit status the command's.

use std::{ffi::OsString, os::unix::process::CommandExt, process::Command};

use bpfkill_common::{tag_flags, Tag};

use super::registry;
use crate::{
    error::{Error, Result},
    sys::{clock, procs},
    tracking::Tracking,
};

/// Tags this process for `service_name` and execs `argv`. Returns only on failure.
pub fn run(
    mut tracking: Tracking,
    service_name: &str,
    argv: &[OsString],
) -> Result<std::convert::Infallible> {
    let Some((program, args)) = argv.split_first() else {
        return Err(Error::Usage("run needs a command after `--`".into()));
    };
    let me = std::process::id();
    let ticks = procs::start_ticks(me).ok_or_else(|| {
        Error::io(
            "read /proc/self/stat",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )
    })?;
    let start_ns = clock::ticks_to_ns(ticks);
    let (svc, created) = registry::register(&mut tracking, service_name, me, start_ns)?;
    let tag = Tag {
        service_id: svc.id,
        flags: tag_flags::MAIN | tag_flags::START_FROM_PROC,
        start_ns,
        // Replaced by the kernel at the exec that follows.
        comm: procs::comm(me).unwrap_or_default(),
        ..Tag::default()
    };
    tracking.set_tag(me, &tag)?;
    // The map fds are close-on-exec: the command inherits none of them.
    let err = Command::new(program).args(args).exec();
    // The command did not start: nothing of it is registered.
    tracking.remove_tag(me);
    if created {
        let _ = registry::forget(&mut tracking, service_name);
    }
    Err(Error::Exec {
        program: program.to_string_lossy().into_owned(),
        source: err,
    })
}
