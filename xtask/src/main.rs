//! Project tasks: `cargo xtask bootstrap | demo | test | vm-test | bench`.
//!
//! This file is the dispatch; each task lives in a module of its own: [`bootstrap`], [`demo`],
//! [`vm`] (`test` and `vm-test`), [`bench`].

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod bench;
mod bootstrap;
mod demo;
mod dist;
mod previous;
mod vm;

use bootstrap::bootstrap;

#[derive(Parser)]
#[command(name = "xtask", about = "bpfkill project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the eBPF toolchain if anything is missing (fast when all is present).
    Bootstrap,
    /// Build, start tracking, run a double-forking sample service, show it, kill it.
    Demo,
    /// Benchmark tracking's cost and the kill against cgroup.kill, /proc loops and pkill,
    /// side by side (release build, root); writes target/bench/results.json.
    Bench {
        /// Fewer rounds and smaller storms, same figures (CI's smoke test, under 3 min):
        /// fails only when a scenario breaks, never on a missed target.
        #[arg(long)]
        quick: bool,
        /// Only these scenarios (repeatable): the table and results.json then hold their
        /// figures alone.
        #[arg(long, value_enum)]
        only: Vec<bench::Scenario>,
    },
    /// Build target/dist/bpfkill_VERSION_ARCH.deb (release binary, init files, completions,
    /// man pages) with cargo-deb, installing cargo-deb when missing.
    Dist {
        /// Then install the package here, run the daemon through its init script (start,
        /// reload, stop) and remove it again (root).
        #[arg(long)]
        check: bool,
    },
    /// Run the whole test suite on the running kernel (unit tests, then the privileged
    /// integration tests); same as `vm-test --host`.
    Test {
        /// Extra arguments for the test binaries (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the suite on the host kernel and/or Debian kernels booted in qemu, then print a
    /// per-kernel table of passed/failed/skipped tests.
    VmTest {
        /// Also run the suite on the running kernel.
        #[arg(long)]
        host: bool,
        /// A kernel to boot: a series (5.10, 6.1, 6.12), `latest` (Debian unstable's newest
        /// cloud kernel), a Debian package name, or a vmlinuz path; `KERNEL:escape,kill` runs
        /// only those test binaries on it, `KERNEL:-escape,kill` all but those. Repeatable.
        #[arg(long = "kernel", value_name = "KERNEL")]
        kernels: Vec<String>,
        /// Time limit for each VM.
        #[arg(long, default_value = "45m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Use KVM instead of TCG emulation (KVM hangs on some hosts).
        #[arg(long)]
        kvm: bool,
        /// Multi-threaded TCG: faster, but racy when the guest live-patches its code.
        #[arg(long, conflicts_with = "kvm")]
        mttcg: bool,
        /// How many VMs boot at once. A single-threaded TCG guest keeps one host core busy, so
        /// the default is the number of cores.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        jobs: Option<u16>,
        /// Extra arguments for the test binaries (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Where [`release_build`] put the binaries.
struct Release {
    /// The target tuple they were built for (the host's).
    tuple: String,
    /// Their directory, `target/TUPLE/release`.
    dir: PathBuf,
}

/// Builds the binaries of `packages` for release, statically linked (glibc's `crt-static`).
/// The shipped and benchmarked bpfkill maps no shared library,
/// so starting it never waits on a lock held by the processes it is about to kill: a fork
/// bomb of dynamically linked processes keeps the mapping lock of libc's file busy with its
/// forks and exits, and a dynamically linked bpfkill started beside a 2000-process bomb was
/// seen to wait up to 7.5 minutes in its own start (13 of 228 kills here; see README's
/// "Install on a host"). Built for the host's target tuple explicitly, so
/// that the flag reaches the binaries and not the build scripts or proc-macros.
fn release_build(packages: &[&str]) -> Result<Release> {
    let out = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .args(["--print", "host-tuple"])
        .output()
        .context("rustc --print host-tuple")?;
    let host = String::from_utf8(out.stdout)?.trim().to_string();
    if !out.status.success() || host.is_empty() {
        bail!(
            "rustc --print host-tuple failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--bins", "--target", &host])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    for p in packages {
        cmd.args(["-p", p]);
    }
    run(&mut cmd)?;
    Ok(Release {
        dir: root().join("target").join(&host).join("release"),
        tuple: host,
    })
}

/// The debug build of the bpfkill binary.
fn bpfkill_bin() -> PathBuf {
    root().join("target/debug/bpfkill")
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {:?}", cmd);
    let status = cmd
        .status()
        .with_context(|| format!("spawn {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed: {status}", cmd.get_program());
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Errors end the run with one line (and its causes), not a backtrace: CI logs keep only
/// their end, which should be the result table and the reason.
fn main() {
    if let Err(e) = task(Cli::parse().task) {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

fn task(task: Task) -> Result<()> {
    match task {
        Task::Bootstrap => bootstrap(),
        Task::Demo => demo::demo(),
        Task::Test { args } => {
            bootstrap()?;
            vm::run(
                &root(),
                &vm::Options {
                    host: true,
                    kernels: Vec::new(),
                    timeout: std::time::Duration::ZERO,
                    kvm: false,
                    mttcg: false,
                    jobs: 1,
                    test_args: args,
                },
            )
        }
        Task::VmTest {
            host,
            kernels,
            timeout,
            kvm,
            mttcg,
            jobs,
            args,
        } => {
            bootstrap()?;
            if !host && kernels.is_empty() {
                bail!("nothing to run: give --host and/or --kernel SERIES");
            }
            vm::run(
                &root(),
                &vm::Options {
                    host,
                    kernels,
                    timeout,
                    kvm,
                    mttcg,
                    jobs: jobs.map_or_else(|| vm::default_jobs(mttcg), usize::from),
                    test_args: args,
                },
            )
        }
        Task::Dist { check } => {
            bootstrap()?;
            if check {
                dist::check(&root())
            } else {
                dist::build(&root()).map(drop)
            }
        }
        Task::Bench { quick, only } => {
            bootstrap()?;
            let release = release_build(&["bpfkill", "bpfkill-tests"])?;
            if !is_root() {
                bail!("the benchmark loads eBPF programs: run it as root");
            }
            bench::run(&root(), &release.dir, quick, &only)
        }
    }
}
