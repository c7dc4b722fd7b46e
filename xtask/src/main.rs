//! Project tasks: `cargo xtask bootstrap | demo | test | vm-test | bench`.
//!
//! `bootstrap` installs, idempotently, what building the kernel programs needs (Debian's
//! rustc with a prebuilt `core` for bpfel-unknown-none, LLVM 22, bpf-linker 0.13.0); every
//! other task runs it first, and it returns at once when everything is present.

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

mod bench;
mod vm;
use clap::{Parser, Subcommand};

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
    /// Benchmark bpfkill against pkill side by side (release build, root).
    Bench,
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
        /// A kernel to boot: a series (6.1, 6.12), a Debian package name, or a vmlinuz path.
        /// Repeatable.
        #[arg(long = "kernel", value_name = "KERNEL")]
        kernels: Vec<String>,
        /// Time limit for each VM.
        #[arg(long, default_value = "25m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Use KVM instead of TCG emulation (KVM hangs on some hosts).
        #[arg(long)]
        kvm: bool,
        /// Multi-threaded TCG: faster, but racy when the guest live-patches its code.
        #[arg(long, conflicts_with = "kvm")]
        mttcg: bool,
        /// Extra arguments for the test binaries (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

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

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
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

fn bootstrap() -> Result<()> {
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

fn bpfkill_bin() -> PathBuf {
    root().join("target/debug/bpfkill")
}

/// Runs bpfkill, echoing the command line.
fn bpfkill<I, S>(args: I) -> Result<std::process::ExitStatus>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(bpfkill_bin());
    cmd.args(args);
    let shown: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    eprintln!("\n$ bpfkill {}", shown.join(" "));
    cmd.status().context("run bpfkill")
}

fn demo() -> Result<()> {
    bootstrap()?;
    run(cargo().args(["build", "-p", "bpfkill", "-p", "bpfkill-tests", "--bins"]))?;
    if !is_root() {
        bail!("the demo loads eBPF programs: run it as root");
    }
    let was_live = Command::new(bpfkill_bin())
        .arg("status")
        .stdout(Stdio::null())
        .status()?
        .success();
    bpfkill(["load"])?;
    // The sample service: its main process double-forks a grandchild that setsid()s, is
    // reparented to init, renames itself and sleeps, like a daemon escaping its supervisor.
    let forker = root().join("target/debug/forker");
    // An unrelated process with the escapee's name, which must survive (pkill would not).
    let mut decoy = Command::new(&forker)
        .args(["pause", "--rename", "demo-escapee"])
        .stdout(Stdio::piped())
        .spawn()
        .context("start the unrelated namesake")?;
    let mut decoy_ready = String::new();
    BufReader::new(decoy.stdout.take().expect("stdout")).read_line(&mut decoy_ready)?;
    let mut child = Command::new(bpfkill_bin())
        .args(["run", "--service", "demo-sample", "--"])
        .arg(&forker)
        .args(["double-fork", "--setsid", "--rename", "demo-escapee"])
        .stdout(Stdio::piped())
        .spawn()
        .context("start the sample service")?;
    let mut ready = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut ready)?;
    eprintln!("sample service started: {}", ready.trim());
    bpfkill(["ps", "--service", "demo-sample"])?;
    bpfkill(["-s", "SIGKILL", "--service", "demo-sample"])?;
    let _ = child.wait();
    let survivors = Command::new(bpfkill_bin())
        .args(["ps", "--service", "demo-sample", "--json"])
        .output()?;
    let text = String::from_utf8_lossy(&survivors.stdout);
    let count = text.matches("\"pid\"").count();
    eprintln!("\n$ bpfkill ps --service demo-sample --json\n{}", text.trim());
    println!("survivors: {count}");
    let decoy_alive = decoy.try_wait()?.is_none();
    println!(
        "unrelated process named demo-escapee (pid {}): {}",
        decoy.id(),
        if decoy_alive { "alive, untouched" } else { "DEAD" }
    );
    let _ = decoy.kill();
    let _ = decoy.wait();
    if !decoy_alive {
        bail!("the unrelated namesake was killed");
    }
    if !was_live {
        bpfkill(["unload"])?;
    }
    if count != 0 {
        bail!("{count} process(es) of the sample service survived");
    }
    Ok(())
}

/// Installs Debian packages (root only).
fn apt_install(packages: &[&str]) -> Result<()> {
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
        Task::Demo => demo(),
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
                    test_args: args,
                },
            )
        }
        Task::Bench => {
            bootstrap()?;
            run(cargo().args([
                "build",
                "--release",
                "-p",
                "bpfkill",
                "-p",
                "bpfkill-tests",
                "--bins",
            ]))?;
            if !is_root() {
                bail!("the benchmark loads eBPF programs: run it as root");
            }
            bench::run(&root())
        }
    }
}
