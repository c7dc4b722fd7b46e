//! Kernels for the VM runs: Debian cloud kernel packages fetched with `apt-get download`
//! (cached under `target/vm/`), qemu, and a static busybox.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

pub(super) fn ensure_qemu() -> Result<()> {
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Ok(());
    }
    crate::bootstrap::apt_install(&["qemu-system-x86"])
}

pub(super) fn cache_dir(root: &Path) -> PathBuf {
    root.join("target/vm")
}

/// Downloads a Debian package into `dir` and unpacks it into `dir/x`.
pub(super) fn fetch_deb(package: &str, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let status = Command::new("apt-get")
        .args(["download", "-q", package])
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()
        .context("apt-get download")?;
    if !status.success() {
        bail!("apt-get download {package} failed");
    }
    let deb = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("no .deb for {package} in {}", dir.display()))?;
    let x = dir.join("x");
    crate::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
    std::fs::remove_file(&deb)?;
    Ok(x)
}

/// Debian cloud kernel packages of a series (`6.1` → linux-image-6.1.0-N-cloud-amd64),
/// newest first.
pub(super) fn kernel_packages(series: &str) -> Result<Vec<String>> {
    let out = Command::new("apt-cache")
        .args(["pkgnames", &format!("linux-image-{series}")])
        .output()
        .context("apt-cache pkgnames")?;
    let prefix = format!("linux-image-{series}.");
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|n| n.starts_with(&prefix) && n.ends_with("-cloud-amd64"))
        .map(str::to_string)
        .collect();
    let key = |n: &String| -> Vec<u32> {
        n.split(|c: char| !c.is_ascii_digit())
            .filter_map(|d| d.parse().ok())
            .collect()
    };
    names.sort_by_key(|n| std::cmp::Reverse(key(n)));
    Ok(names)
}

/// The vmlinuz for a spec, downloading and caching it when needed; returns (label, path).
pub(super) fn kernel_image(root: &Path, spec: &str) -> Result<(String, PathBuf)> {
    let as_path = Path::new(spec);
    if as_path.is_file() {
        return Ok((spec.to_string(), as_path.to_path_buf()));
    }
    let candidates = if spec.starts_with("linux-image-") {
        vec![spec.to_string()]
    } else {
        let mut c = kernel_packages(spec)?;
        if c.is_empty() {
            crate::run(Command::new("apt-get").args(["update", "-q"]))?;
            c = kernel_packages(spec)?;
        }
        c
    };
    if candidates.is_empty() {
        bail!("no Debian cloud kernel package found for series {spec}");
    }
    let mut last_err = None;
    for package in candidates.iter().take(3) {
        let release = package.trim_start_matches("linux-image-").to_string();
        let cached = cache_dir(root).join("kernels").join(&release);
        let vmlinuz = cached.join("vmlinuz");
        if vmlinuz.is_file() {
            return Ok((release, vmlinuz));
        }
        let tmp = cache_dir(root).join("download").join(&release);
        let _ = std::fs::remove_dir_all(&tmp);
        match fetch_deb(package, &tmp) {
            Ok(x) => {
                std::fs::create_dir_all(&cached)?;
                std::fs::copy(x.join(format!("boot/vmlinuz-{release}")), &vmlinuz)
                    .with_context(|| format!("vmlinuz in {package}"))?;
                let _ = std::fs::copy(x.join(format!("boot/config-{release}")), cached.join("config"));
                let _ = std::fs::remove_dir_all(&tmp);
                return Ok((release, vmlinuz));
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no kernel for {spec}")))
}

/// A static busybox for the shell utilities the tests call.
pub(super) fn busybox(root: &Path) -> Result<PathBuf> {
    let cached = cache_dir(root).join("busybox");
    if cached.is_file() {
        return Ok(cached);
    }
    let tmp = cache_dir(root).join("download/busybox");
    let _ = std::fs::remove_dir_all(&tmp);
    let x = fetch_deb("busybox-static", &tmp)?;
    std::fs::copy(x.join("bin/busybox"), &cached)?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(cached)
}
