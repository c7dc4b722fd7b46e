//! The cpio initramfs a VM boots: the test binaries, bpfkill, forker, their shared libraries
//! and busybox at their host paths, with `vm-init` as `/init`.

use std::{
    collections::BTreeSet,
    fs::File,
    io::{BufWriter, Read, Write},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};
use vm_suite::Manifest;

use super::kernel::busybox;

/// Shared libraries (and the ELF interpreter) a dynamically linked binary needs.
pub(super) fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output().context("ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// A newc cpio archive being written.
pub(super) struct Initramfs {
    out: BufWriter<File>,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl Initramfs {
    fn create(path: &Path) -> Result<Self> {
        Ok(Initramfs {
            out: BufWriter::new(File::create(path).with_context(|| format!("create {}", path.display()))?),
            ino: 1,
            dirs: BTreeSet::new(),
        })
    }

    fn entry(&mut self, name: &str, mode: u32) -> cpio::newc::Builder {
        self.ino += 1;
        cpio::newc::Builder::new(name.trim_start_matches('/'))
            .ino(self.ino)
            .mode(mode)
            .nlink(1)
    }

    fn parents(&mut self, path: &str) -> Result<()> {
        let mut acc = String::new();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            if self.dirs.insert(acc.clone()) {
                let e = self.entry(&acc.clone(), 0o040755);
                e.write(&mut self.out, 0).finish()?;
            }
        }
        Ok(())
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        self.parents(&format!("{}/x", path.trim_end_matches('/')))
    }

    fn bytes(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        self.parents(path)?;
        let e = self.entry(path, 0o100000 | mode);
        let mut w = e.write(
            &mut self.out,
            u32::try_from(data.len()).context("file too large for cpio")?,
        );
        w.write_all(data)?;
        w.finish()?;
        Ok(())
    }

    fn file(&mut self, path: &str, source: &Path) -> Result<()> {
        let mut data = Vec::new();
        File::open(source)
            .and_then(|mut f| f.read_to_end(&mut data))
            .with_context(|| format!("read {}", source.display()))?;
        self.bytes(path, 0o755, &data)
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.parents(path)?;
        let e = self.entry(path, 0o120777);
        let mut w = e.write(&mut self.out, target.len() as u32);
        w.write_all(target.as_bytes())?;
        w.finish()?;
        Ok(())
    }

    fn char_device(&mut self, path: &str, major: u32, minor: u32) -> Result<()> {
        self.parents(path)?;
        let e = self.entry(path, 0o020600).rdev_major(major).rdev_minor(minor);
        e.write(&mut self.out, 0).finish()?;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        cpio::newc::trailer(&mut self.out)?;
        self.out.flush()?;
        Ok(())
    }
}

pub(super) fn build_initramfs(root: &Path, manifest: &Manifest, path: &Path) -> Result<()> {
    let init = root.join("target/debug/vm-init");
    let mut cpio = Initramfs::create(path)?;
    for d in ["proc", "sys", "dev", "tmp", "run", "var/lib", "etc", "root"] {
        cpio.dir(d)?;
    }
    cpio.char_device("dev/console", 5, 1)?;
    cpio.char_device("dev/null", 1, 3)?;
    cpio.file("init", &init)?;
    let bb = busybox(root)?;
    cpio.file("bin/busybox", &bb)?;
    for applet in [
        "sh", "true", "false", "sleep", "cat", "echo", "ls", "ps", "kill", "env", "mount",
    ] {
        cpio.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    cpio.bytes("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    cpio.bytes("etc/group", 0o644, b"root:x:0:\n")?;
    cpio.bytes("vm-suite/manifest", 0o644, manifest.render().as_bytes())?;
    let mut elves: Vec<PathBuf> = manifest.binaries.iter().map(|b| b.path.clone()).collect();
    elves.push(crate::bpfkill_bin());
    elves.push(crate::bpfkill_bin().with_file_name("forker"));
    elves.extend(
        manifest
            .env
            .iter()
            .filter(|(k, _)| k == crate::previous::ENV)
            .map(|(_, v)| PathBuf::from(v)),
    );
    elves.extend(
        super::SUPERVISORS
            .iter()
            .chain(&super::DEBIAN_TOOLS)
            .map(|t| Path::new("/usr/bin").join(t))
            .filter(|p| p.is_file()),
    );
    elves.push(init);
    let mut libs = BTreeSet::new();
    for elf in &elves {
        libs.extend(shared_libs(elf)?);
    }
    for elf in &elves[..elves.len() - 1] {
        cpio.file(&elf.to_string_lossy(), elf)?;
    }
    for lib in &libs {
        cpio.file(&lib.to_string_lossy(), lib)?;
    }
    cpio.finish()
}
