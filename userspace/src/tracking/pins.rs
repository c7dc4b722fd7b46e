//! Where tracking lives: the pin tree under bpffs (maps and links), so tracking outlives any
//! bpfkill process; its lock; and its removal.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use aya::programs::links::PinnedLink;
use bpfkill_common::{programs, ABI_VERSION};

use crate::{
    error::{Error, Result},
    sys::mounts,
};

/// Environment variable that moves the pin directory (tests, side-by-side instances).
pub const PIN_DIR_ENV: &str = "BPFKILL_PIN_DIR";

/// Where everything of one bpfkill instance is pinned.
#[derive(Debug, Clone)]
pub struct PinPaths {
    root: PathBuf,
}

impl PinPaths {
    /// The default `/sys/fs/bpf/bpfkill/v{ABI}`, or `$BPFKILL_PIN_DIR`.
    pub fn from_env() -> Self {
        let root = std::env::var_os(PIN_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(format!("{}/bpfkill/v{ABI_VERSION}", mounts::BPFFS)));
        Self { root }
    }

    /// A pin tree rooted elsewhere.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root of the pin tree.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of the pinned maps.
    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    /// Directory of the pinned links.
    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    /// Directory of the programs pinned loaded but not attached (the doom program, attached
    /// only for the length of a kill).
    pub fn progs_dir(&self) -> PathBuf {
        self.root.join("progs")
    }

    /// Pin of the loaded program `name`.
    pub fn prog(&self, name: &str) -> PathBuf {
        self.progs_dir().join(name)
    }

    /// Pin of map `name`.
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    /// Pin of the link of program `name`.
    pub fn link(&self, name: &str) -> PathBuf {
        self.links_dir().join(name)
    }

    /// True when the pin tree exists; [`Error::Permission`] when this process may not look
    /// (the tree is root's, mode 0700), so that "not loaded" is never said for "not allowed".
    pub fn exists(&self) -> Result<bool> {
        match fs::symlink_metadata(&self.root) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("look at {}", self.root.display()), e)),
        }
    }

    /// Whether each tracking program's link is pinned (and opens).
    pub fn pinned_links(&self) -> Result<Vec<(&'static str, bool)>> {
        let mut out = Vec::with_capacity(programs::TRACKING.len());
        for (prog, _) in programs::TRACKING {
            let pinned = match PinnedLink::from_pin(self.link(prog)) {
                Ok(_) => true,
                Err(e) => match Error::pin(format!("open the pinned link of {prog}"), e) {
                    denied @ Error::Permission(_) => return Err(denied),
                    _ => false,
                },
            };
            out.push((prog, pinned));
        }
        Ok(out)
    }

    /// True when every tracking program is attached through a pinned link;
    /// [`Error::Permission`] when this process may not tell.
    pub fn is_live(&self) -> Result<bool> {
        if !self.exists()? {
            return Ok(false);
        }
        Ok(self.pinned_links()?.iter().all(|(_, ok)| *ok))
    }
}

/// Creates `path` (and its parents) readable by root only.
pub(crate) fn create_private_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))
}

/// An exclusive lock on the pin tree, so two loaders never attach twice.
pub struct PinLock(#[allow(dead_code)] fs::File);

impl PinLock {
    /// Takes the lock (blocks while another loader or unloader holds it).
    pub(crate) fn take(paths: &PinPaths) -> Result<Self> {
        let dir = fs::File::open(paths.root())
            .map_err(|e| Error::io(format!("open {}", paths.root().display()), e))?;
        rustix::fs::flock(&dir, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io(format!("lock {}", paths.root().display()), e.into()))?;
        Ok(Self(dir))
    }
}

/// Detaches everything and removes the pins. Returns false when nothing was pinned;
/// [`Error::Permission`] for anyone but root, pinned or not (a user who cannot look must not
/// hear "nothing pinned").
pub fn unload(paths: &PinPaths) -> Result<bool> {
    if !rustix::process::geteuid().is_root() {
        return Err(Error::Permission(format!(
            "unload {}: only root detaches tracking",
            paths.root().display()
        )));
    }
    if !paths.exists()? {
        return Ok(false);
    }
    let _lock = PinLock::take(paths)?;
    remove_tree(paths)?;
    Ok(true)
}

/// Removes every pin of the tree (detaching its programs) and the tree; the caller holds its
/// lock.
pub(crate) fn remove_tree(paths: &PinPaths) -> Result<()> {
    for dir in [paths.links_dir(), paths.progs_dir(), paths.maps_dir()] {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            fs::remove_file(entry.path())
                .map_err(|e| Error::io(format!("remove {}", entry.path().display()), e))?;
        }
        fs::remove_dir(&dir).map_err(|e| Error::io(format!("remove {}", dir.display()), e))?;
    }
    fs::remove_dir(paths.root()).map_err(|e| Error::io(format!("remove {}", paths.root().display()), e))?;
    // Leave /sys/fs/bpf/bpfkill when other ABI versions live there.
    if let Some(parent) = paths.root().parent() {
        let _ = fs::remove_dir(parent);
    }
    Ok(())
}
