//! The pseudo-filesystems bpfkill needs: bpffs (pins) and tracefs (tracepoint formats shown
//! by `status`). Minimal hosts boot without them, so they are mounted when missing.

use std::{fs, path::Path};

use rustix::fs::statfs;

use crate::error::{Error, Result};

/// Where bpffs is expected.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Where tracefs is expected.
pub const TRACEFS: &str = "/sys/kernel/tracing";

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const TRACEFS_MAGIC: i64 = 0x7472_6163;

/// True when `path` is the root of a filesystem with the given magic.
fn is_fs(path: &str, magic: i64) -> bool {
    statfs(path).map(|s| s.f_type == magic).unwrap_or(false)
}

/// True when bpffs is mounted at [`BPFFS`].
pub fn bpffs_mounted() -> bool {
    is_fs(BPFFS, BPF_FS_MAGIC)
}

fn mount_fs(fstype: &str, target: &str, data: Option<&std::ffi::CStr>) -> Result<()> {
    use rustix::mount::{mount, MountFlags};
    if !Path::new(target).exists() {
        fs::create_dir_all(target).map_err(|e| Error::io(format!("create {target}"), e))?;
    }
    mount(
        fstype,
        target,
        fstype,
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        data,
    )
    .map_err(|e| Error::io(format!("mount {fstype} at {target}"), e.into()))?;
    tracing::info!("mounted {fstype} at {target}");
    Ok(())
}

/// Mounts bpffs at [`BPFFS`] unless it is there already.
pub fn ensure_bpffs() -> Result<()> {
    if bpffs_mounted() {
        return Ok(());
    }
    mount_fs("bpf", BPFFS, Some(c"mode=0700"))
}

/// Mounts tracefs at [`TRACEFS`] unless it is there already.
pub fn ensure_tracefs() -> Result<()> {
    if is_fs(TRACEFS, TRACEFS_MAGIC) {
        return Ok(());
    }
    mount_fs("tracefs", TRACEFS, None)
}
