//! `cargo xtask bootstrap`: installs, idempotently, what building the kernel programs needs
//! (Debian's rustc with a prebuilt `core` for bpfel-unknown-none, LLVM 22, bpf-linker 0.13.0).
//! Every other task runs it first; it returns at once when everything is present.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Result};

use crate::{is_root, run};

const APT_PACKAGES: [&str; 6] = [
    "rustc-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false)
        || cargo_bin("bpf-linker").is_some_and(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
                .unwrap_or(false)
        })
}

fn cargo_bin(name: &str) -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    let p = home.join("bin").join(name);
    p.is_file().then_some(p)
}

/// Installs whatever is missing.
pub fn bootstrap() -> Result<()> {
    let t = Instant::now();
    let apt_ok = Path::new("/usr/bin/rustc").is_file()
        && Path::new("/usr/lib/rustlib/bpfel-unknown-none/lib").is_dir()
        && Path::new(LLVM_PREFIX).join("lib/libLLVM.so").exists()
        && Path::new("/usr/include/zstd.h").exists()
        && Path::new("/usr/include/zlib.h").exists();
    if !apt_ok {
        apt_install(&APT_PACKAGES)?;
    }
    if !bpf_linker_ok() {
        run(
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args([
                    "install",
                    "bpf-linker",
                    "--version",
                    BPF_LINKER_VERSION,
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])
                .env("LLVM_PREFIX", LLVM_PREFIX)
                .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX),
        )?;
    }
    eprintln!("bootstrap: toolchain ready ({:.1?})", t.elapsed());
    Ok(())
}

/// Installs Debian packages (root only).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    if !is_root() {
        bail!(
            "missing Debian packages; as root run: apt-get install {}",
            packages.join(" ")
        );
    }
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}
