//! Kernels for the VM runs: Debian cloud kernel packages fetched with `apt-get download`
//! (cached under `target/vm/`), qemu, and a static busybox.
//!
//! Series the host's own apt sources carry (6.1, 6.12 on bookworm) come from them. Debian 11's
//! 5.10 and the newest kernel of Debian unstable (`latest`) come through a private apt
//! configuration under `target/vm/apt/`: its own source list, package lists and cache, used
//! for these downloads only and never added to the host's sources.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, SystemTime},
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

/// The suites of the private apt configuration: Debian 11 (with its security updates, where
/// its last 5.10 kernels are) and unstable.
const PRIVATE_SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
";

/// How old the private package lists may get before `latest` refreshes them.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Where apt looks: the host's configuration, or the private one under `target/vm/apt/`.
#[derive(Clone)]
enum Apt {
    Host,
    Private(PathBuf),
}

impl Apt {
    /// `-o` options for apt-get and apt-cache.
    fn options(&self) -> Vec<String> {
        let Apt::Private(dir) = self else {
            return Vec::new();
        };
        let d = dir.display();
        vec![
            format!("-oDir::Etc::SourceList={d}/sources.list"),
            "-oDir::Etc::SourceParts=/dev/null".into(),
            format!("-oDir::State::Lists={d}/lists"),
            format!("-oDir::Cache={d}/cache"),
            // Downloads land in a root-owned folder of ours; apt's sandbox user can't write there.
            "-oAPT::Sandbox::User=root".into(),
        ]
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.args(self.options());
        c
    }

    /// Refreshes the package lists (the private ones are set up on first use).
    fn update(&self) -> Result<()> {
        if let Apt::Private(dir) = self {
            std::fs::create_dir_all(dir.join("lists/partial"))?;
            std::fs::create_dir_all(dir.join("cache/archives/partial"))?;
            std::fs::write(dir.join("sources.list"), PRIVATE_SOURCES)?;
        }
        crate::run(self.command("apt-get").args(["update", "-q"]))
    }

    /// When the private lists were last fetched (None if never).
    fn lists_age(&self) -> Option<Duration> {
        let Apt::Private(dir) = self else { return None };
        let newest = std::fs::read_dir(dir.join("lists"))
            .ok()?
            .filter_map(|e| e.ok()?.metadata().ok()?.modified().ok())
            .max()?;
        SystemTime::now().duration_since(newest).ok()
    }

    /// Debian cloud kernel packages whose release starts with `series.` (every series for
    /// `None`), newest first.
    fn kernel_packages(&self, series: Option<&str>) -> Result<Vec<String>> {
        let out = self
            .command("apt-cache")
            .args(["pkgnames", "linux-image-"])
            .output()
            .context("apt-cache pkgnames")?;
        let prefix = series.map(|s| format!("linux-image-{s}."));
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|n| n.ends_with("-cloud-amd64"))
            .filter(|n| match &prefix {
                Some(p) => n.starts_with(p.as_str()),
                // A versioned image, not the metapackage `linux-image-cloud-amd64`.
                None => n["linux-image-".len()..].starts_with(|c: char| c.is_ascii_digit()),
            })
            .map(str::to_string)
            .collect();
        names.sort_by_key(|n| std::cmp::Reverse(version_key(n)));
        Ok(names)
    }

    /// Downloads a package into `dir` and unpacks it into `dir/x`.
    fn fetch_deb(&self, package: &str, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let status = self
            .command("apt-get")
            .args(["download", "-q", package])
            .current_dir(dir)
            .stdout(Stdio::null())
            .status()
            .context("apt-get download")?;
        if !status.success() {
            bail!("apt-get download {package} failed");
        }
        let x = dir.join("x");
        for deb in std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        {
            crate::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
            std::fs::remove_file(&deb)?;
        }
        if !x.is_dir() {
            bail!("no .deb for {package} in {}", dir.display());
        }
        Ok(x)
    }
}

/// The numbers in a package name, for sorting by version.
fn version_key(name: &str) -> Vec<u32> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|d| d.parse().ok())
        .collect()
}

/// Downloads a Debian package from the host's sources into `dir` and unpacks it into `dir/x`.
pub(super) fn fetch_deb(package: &str, dir: &Path) -> Result<PathBuf> {
    Apt::Host.fetch_deb(package, dir)
}

/// The packages a spec names, and the apt configuration that has them: a series (`6.1`,
/// `5.10`) from the host's lists or else the private ones; `latest` for Debian unstable's
/// newest cloud kernel; or a package name.
fn resolve(spec: &str, private_dir: &Path) -> Result<(Apt, Vec<String>)> {
    let private = Apt::Private(private_dir.to_path_buf());
    let stale = private.lists_age().is_none_or(|age| age > LISTS_MAX_AGE);
    if spec == "latest" {
        if stale {
            private.update()?;
        }
        // The highest version in the private lists (which also hold 5.10) is unstable's.
        let newest = private.kernel_packages(None)?.into_iter().next();
        return Ok((private, newest.into_iter().collect()));
    }
    let wanted = |apt: &Apt| -> Result<Vec<String>> {
        Ok(match spec.strip_prefix("linux-image-") {
            Some(_) => apt
                .kernel_packages(None)?
                .into_iter()
                .filter(|n| n == spec)
                .collect(),
            None => apt.kernel_packages(Some(spec))?,
        })
    };
    let found = wanted(&Apt::Host)?;
    if !found.is_empty() {
        return Ok((Apt::Host, found));
    }
    if private.lists_age().is_some() {
        let found = wanted(&private)?;
        if !found.is_empty() {
            return Ok((private, found));
        }
    }
    // Not in the lists at hand: fetch the private ones, then the host's (maybe stale).
    private.update()?;
    let found = wanted(&private)?;
    if !found.is_empty() {
        return Ok((private, found));
    }
    Apt::Host.update()?;
    let found = wanted(&Apt::Host)?;
    Ok((Apt::Host, found))
}

/// The vmlinuz for a spec, downloading and caching it when needed; returns (label, path).
pub(super) fn kernel_image(root: &Path, spec: &str) -> Result<(String, PathBuf)> {
    let as_path = Path::new(spec);
    if as_path.is_file() {
        return Ok((spec.to_string(), as_path.to_path_buf()));
    }
    let (apt, candidates) = resolve(spec, &cache_dir(root).join("apt"))?;
    if candidates.is_empty() {
        bail!("no Debian cloud kernel package found for {spec}");
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
        match fetch_kernel(&apt, package, &release, &tmp) {
            Ok((image, config)) => {
                std::fs::create_dir_all(&cached)?;
                std::fs::copy(&image, &vmlinuz).with_context(|| format!("vmlinuz of {package}"))?;
                if let Some(config) = config {
                    let _ = std::fs::copy(config, cached.join("config"));
                }
                let _ = std::fs::remove_dir_all(&tmp);
                return Ok((release, vmlinuz));
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no kernel for {spec}")))
}

/// Fetches a kernel package; returns the unpacked vmlinuz and config. Up to Debian 13 the
/// image package holds `boot/vmlinuz-RELEASE`; newer ones keep it in `linux-binary-RELEASE`
/// under `usr/lib/modules/RELEASE/`.
fn fetch_kernel(apt: &Apt, package: &str, release: &str, tmp: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    let x = apt.fetch_deb(package, tmp)?;
    let places = |x: &Path| {
        [
            x.join(format!("boot/vmlinuz-{release}")),
            x.join(format!("usr/lib/modules/{release}/vmlinuz")),
        ]
    };
    let config = |x: &Path| {
        [
            x.join(format!("boot/config-{release}")),
            x.join(format!("usr/lib/modules/{release}/config")),
        ]
        .into_iter()
        .find(|p| p.is_file())
    };
    if let Some(image) = places(&x).into_iter().find(|p| p.is_file()) {
        return Ok((image, config(&x)));
    }
    let x = apt.fetch_deb(&format!("linux-binary-{release}"), &tmp.join("binary"))?;
    let image = places(&x)
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| format!("no vmlinuz in {package} nor linux-binary-{release}"))?;
    Ok((image, config(&x)))
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
