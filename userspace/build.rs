//! Builds the kernel programs (`../ebpf`) for `bpfel-unknown-none` and hands the object to
//! `src/tracking/load.rs`, which embeds it. The BPF target needs Debian's rustc (it ships a prebuilt
//! `core` for it) and bpf-linker; `cargo xtask bootstrap` installs both.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const BOOTSTRAP_HINT: &str = "run `cargo xtask bootstrap` to install it";

fn find_on_path(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = env::var_os("CARGO_HOME")
        .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cargo").into_os_string()))
    {
        dirs.push(Path::new(&home).join("bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("workspace root").to_path_buf();
    let ebpf_dir = root.join("ebpf");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    for p in [
        "ebpf/src",
        "ebpf/Cargo.toml",
        "ebpf/Cargo.lock",
        "common/src",
        "common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=BPFKILL_BPF_RUSTC");

    let bpf_rustc = env::var_os("BPFKILL_BPF_RUSTC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/rustc"));
    let sysroot_core = Path::new("/usr/lib/rustlib/bpfel-unknown-none/lib");
    if !bpf_rustc.is_file() {
        panic!(
            "\n\nbpfkill: the eBPF compiler {} is missing (Debian packages rustc-web and \
             libstd-rust-web-dev-bpf); {BOOTSTRAP_HINT}.\n",
            bpf_rustc.display()
        );
    }
    if env::var_os("BPFKILL_BPF_RUSTC").is_none() && !sysroot_core.is_dir() {
        panic!(
            "\n\nbpfkill: no prebuilt `core` for bpfel-unknown-none under {} (Debian package \
             libstd-rust-web-dev-bpf); {BOOTSTRAP_HINT}.\n",
            sysroot_core.display()
        );
    }
    let Some(linker) = find_on_path("bpf-linker") else {
        panic!("\n\nbpfkill: bpf-linker 0.13.0 is not installed; {BOOTSTRAP_HINT}.\n");
    };

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = root.join("target").join("ebpf");
    let mut path = env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = linker.parent() {
        let mut dirs: Vec<PathBuf> = env::split_paths(&path).collect();
        dirs.push(dir.to_path_buf());
        path = env::join_paths(dirs).expect("PATH");
    }
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&ebpf_dir)
        .env("RUSTC", &bpf_rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("PATH", path)
        .args([
            "build",
            "--locked",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "--target-dir",
        ])
        .arg(&target_dir);
    // Settings meant for the host build must not leak into the BPF build.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTDOCFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo for the eBPF crate");
    if !status.success() {
        panic!(
            "\n\nbpfkill: building the eBPF programs in {} failed ({status})\n",
            ebpf_dir.display()
        );
    }
    let object = target_dir.join("bpfel-unknown-none/release/bpfkill");
    std::fs::copy(&object, out_dir.join("bpfkill.bpf.o"))
        .unwrap_or_else(|e| panic!("copy {}: {e}", object.display()));
}
