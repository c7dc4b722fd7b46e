//! The pseudo-filesystems bpfkill needs: bpffs (pins), tracefs (tracepoint formats shown by
//! `status`) and securityfs (the list of active LSMs, which tells whether the fork backstop
//! can run). Minimal hosts boot without them, so they are mounted when missing.

use std::{fs, path::Path};

use rustix::fs::statfs;

use crate::error::{Error, Result};

/// Where bpffs is expected.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Where tracefs is expected.
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Where securityfs is expected.
pub const SECURITYFS: &str = "/sys/kernel/security";

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const TRACEFS_MAGIC: i64 = 0x7472_6163;
const SECURITYFS_MAGIC: i64 = 0x7363_6673;

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

/// Mounts securityfs at [`SECURITYFS`] unless it is there already.
pub fn ensure_securityfs() -> Result<()> {
    if is_fs(SECURITYFS, SECURITYFS_MAGIC) {
        return Ok(());
    }
    mount_fs("securityfs", SECURITYFS, None)
}

/// Whether the BPF LSM is active (`bpf` in securityfs's `lsm` list, which the kernel
/// configuration or the `lsm=` boot parameter decides): Err says why not, or why it is not
/// known.
pub fn bpf_lsm_active() -> std::result::Result<(), String> {
    ensure_securityfs().map_err(|e| e.to_string())?;
    let list = fs::read_to_string(Path::new(SECURITYFS).join("lsm"))
        .map_err(|e| format!("cannot read {SECURITYFS}/lsm: {e}"))?;
    if list.trim().split(',').any(|l| l == "bpf") {
        Ok(())
    } else {
        Err(format!(
            "BPF LSM is not active (active LSMs: {}; it needs CONFIG_BPF_LSM and bpf in lsm=)",
            list.trim()
        ))
    }
}
