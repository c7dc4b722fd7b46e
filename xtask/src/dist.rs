//! `cargo xtask dist`: the release binary with its completions and man pages, packed with
//! cargo-deb (installed when missing) into `target/dist/bpfkill_VERSION_ARCH.deb`; the files
//! it installs besides the binary live in `dist/` (see `[package.metadata.deb]` in
//! userspace/Cargo.toml). `cargo xtask dist --check` then installs the package on this
//! machine, runs the daemon through its init script, and removes it again.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{cargo, is_root, release_build, run};

/// The cargo-deb release the package is built with.
const CARGO_DEB_VERSION: &str = "2.12.1";

/// What `build` made: the package, and the (static) binary it holds.
pub struct Built {
    pub deb: PathBuf,
    pub bin: PathBuf,
}

/// Builds the package.
pub fn build(root: &Path) -> Result<Built> {
    let release = release_build(&["bpfkill"])?;
    let bin = release.dir.join("bpfkill");
    let out = root.join("target/dist");
    let generated = out.join("gen");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(generated.join("man"))?;
    for (shell, file) in [
        ("bash", "bpfkill.bash"),
        ("zsh", "_bpfkill"),
        ("fish", "bpfkill.fish"),
    ] {
        let text = output(Command::new(&bin).args(["completions", shell]))?;
        std::fs::write(generated.join(file), text)?;
    }
    let mut pages = vec![(None, "bpfkill.8".to_string())];
    pages.extend(
        commands(&bin)?
            .into_iter()
            .map(|c| (Some(c.clone()), format!("bpfkill-{c}.8"))),
    );
    for (command, file) in pages {
        let mut cmd = Command::new(&bin);
        cmd.arg("man").args(command);
        let path = generated.join("man").join(file);
        std::fs::write(&path, output(&mut cmd)?)?;
        // Reproducible: no name or time stamp in the gzip header.
        run(Command::new("gzip").args(["-9nf"]).arg(&path))?;
    }
    ensure_cargo_deb()?;
    run(cargo()
        .args([
            "deb",
            "-p",
            "bpfkill",
            "--no-build",
            "--target",
            &release.tuple,
            "--output",
        ])
        .arg(&out))?;
    let deb = std::fs::read_dir(&out)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("cargo deb wrote no .deb")?;
    println!("{}", deb.display());
    Ok(Built { deb, bin })
}

/// The subcommands `bpfkill --help` lists (each gets a man page of its own).
fn commands(bin: &Path) -> Result<Vec<String>> {
    let help = String::from_utf8(output(Command::new(bin).arg("--help"))?)?;
    let names: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        bail!("`bpfkill --help` lists no commands");
    }
    Ok(names)
}

fn output(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

fn ensure_cargo_deb() -> Result<()> {
    let present = cargo()
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_DEB_VERSION));
    if !present {
        run(cargo().args(["install", "cargo-deb", "--locked", "--version", CARGO_DEB_VERSION]))?;
    }
    Ok(())
}

/// Installs the package on this machine and exercises it: the files are where they belong,
/// the unit passes `systemd-analyze verify` (when systemd's tools are installed), the LSB
/// script starts the daemon (ready), reloads it (a broken configuration keeps it running and
/// `status` says so), stops it leaving tracking loaded, and removing the package stops
/// everything and unloads tracking, leaving no process behind. Root only; the package is
/// purged again whatever happens.
pub fn check(root: &Path) -> Result<()> {
    if !is_root() {
        bail!("the package check installs a .deb: run it as root");
    }
    let built = build(root)?;
    if Path::new("/etc/bpfkill/config.toml").exists() && !installed() {
        bail!("/etc/bpfkill/config.toml exists outside the package: not touching this host");
    }
    let result = exercise(&built);
    // Whatever happened: the daemon stopped, tracking unloaded, the package gone.
    let _ = Command::new("/etc/init.d/bpfkill").arg("stop").status();
    let _ = Command::new("dpkg").args(["--purge", "bpfkill"]).status();
    result
}

fn installed() -> bool {
    Command::new("dpkg")
        .args(["-s", "bpfkill"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn step(what: &str) {
    eprintln!("\n== dist check: {what}");
}

fn exercise(built: &Built) -> Result<()> {
    let deb = &built.deb;
    step("install");
    run(Command::new("dpkg").arg("-i").arg(deb))?;
    let listing = String::from_utf8(output(Command::new("dpkg").args(["-L", "bpfkill"]))?)?;
    for want in [
        "/usr/bin/bpfkill",
        "/lib/systemd/system/bpfkill.service",
        "/etc/init.d/bpfkill",
        "/usr/share/bpfkill/openrc/bpfkill",
        "/etc/bpfkill/config.toml",
        "/usr/share/bash-completion/completions/bpfkill",
        "/usr/share/zsh/vendor-completions/_bpfkill",
        "/usr/share/fish/vendor_completions.d/bpfkill.fish",
        "/usr/share/man/man8/bpfkill.8.gz",
        "/usr/share/man/man8/bpfkill-daemon.8.gz",
    ] {
        if !listing.lines().any(|l| l == want) {
            bail!("the package lacks {want}:\n{listing}");
        }
    }
    let conffiles = std::fs::read_to_string("/var/lib/dpkg/info/bpfkill.conffiles").unwrap_or_default();
    if !conffiles.lines().any(|l| l == "/etc/bpfkill/config.toml") {
        bail!("/etc/bpfkill/config.toml is not a conffile: {conffiles:?}");
    }
    if which("systemd-analyze") {
        step("systemd-analyze verify");
        run(Command::new("systemd-analyze").args(["verify", "/lib/systemd/system/bpfkill.service"]))?;
    }

    step("start through the LSB script");
    run(Command::new("/etc/init.d/bpfkill").arg("start"))?;
    let pid = daemon_pid()?;
    status_is(0, "a started daemon is healthy")?;

    step("reload");
    run(Command::new("/etc/init.d/bpfkill").arg("reload"))?;
    let config = Path::new("/etc/bpfkill/config.toml");
    let kept = std::fs::read(config)?;
    std::fs::write(config, "[services.broken\n")?;
    let reload = Command::new("/usr/bin/bpfkill").arg("reload").status()?;
    std::fs::write(config, kept)?;
    if reload.code() != Some(78) {
        bail!("a reload of a broken configuration exited {reload}, not 78");
    }
    if !alive(pid) {
        bail!("the daemon died on a broken configuration");
    }
    status_is(1, "the failed reload shows as degraded")?;
    run(Command::new("/etc/init.d/bpfkill").arg("reload"))?;
    status_is(0, "a good reload heals it")?;

    step("upgrade (the same package again): a new daemon, the same tracking");
    let mut tracked = Command::new("/usr/bin/bpfkill")
        .args(["run", "--service", "dist-check-upgrade", "--", "sleep", "1000"])
        .spawn()
        .context("start a tracked process")?;
    let tracked_pid = tracked.id();
    wait_listed("dist-check-upgrade", tracked_pid)?;
    let upgrade = String::from_utf8(output(Command::new("dpkg").arg("-i").arg(deb))?)?;
    eprint!("{upgrade}");
    if upgrade.contains("failed") {
        bail!("the upgrade's maintainer scripts reported a failure");
    }
    let new_pid = daemon_pid()?;
    if new_pid == pid {
        bail!("the upgrade did not restart the daemon (PID {pid})");
    }
    wait_gone(pid)?;
    status_is(0, "the upgraded daemon is healthy")?;
    wait_listed("dist-check-upgrade", tracked_pid)?;
    run(Command::new("/usr/bin/bpfkill").args(["-s", "KILL", "--service", "dist-check-upgrade"]))?;
    let _ = tracked.wait();
    let pid = new_pid;

    step("stop: the daemon goes, tracking stays");
    run(Command::new("/etc/init.d/bpfkill").arg("stop"))?;
    wait_gone(pid)?;
    status_is(0, "tracking stays loaded without its daemon")?;

    step("start again, then remove the package");
    run(Command::new("/etc/init.d/bpfkill").arg("start"))?;
    let pid = daemon_pid()?;
    run(Command::new("dpkg").args(["--remove", "bpfkill"]))?;
    wait_gone(pid)?;
    if Path::new("/usr/bin/bpfkill").exists() {
        bail!("/usr/bin/bpfkill is still there after removal");
    }
    let left = &built.bin;
    let st = Command::new(left).arg("status").output()?;
    if st.status.code() != Some(69) {
        bail!(
            "tracking is still loaded after removal: {}",
            String::from_utf8_lossy(&st.stdout)
        );
    }
    let stray = output(Command::new("ps").args(["-eo", "pid=,args="]))?;
    let stray: Vec<&str> = std::str::from_utf8(&stray)?
        .lines()
        .filter(|l| l.contains("/usr/bin/bpfkill"))
        .collect();
    if !stray.is_empty() {
        bail!("processes left behind: {stray:?}");
    }
    step("purge");
    run(Command::new("dpkg").args(["--purge", "bpfkill"]))?;
    eprintln!("\ndist check: ok");
    Ok(())
}

/// Waits until `bpfkill ps --service SERVICE` lists `pid` (tracking saw it).
fn wait_listed(service: &str, pid: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("/usr/bin/bpfkill")
            .args(["ps", "--service", service, "--json"])
            .output()?;
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if listed
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["pid"] == pid))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{service}: PID {pid} is not tracked: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn daemon_pid() -> Result<u32> {
    let text = std::fs::read_to_string("/run/bpfkill.pid").context("read /run/bpfkill.pid")?;
    let pid: u32 = text.trim().parse().context("parse /run/bpfkill.pid")?;
    if !alive(pid) {
        bail!("the daemon (PID {pid}) is not running");
    }
    Ok(pid)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

fn wait_gone(pid: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(pid) {
        if Instant::now() > deadline {
            bail!("PID {pid} is still alive 30 s after it was stopped");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn status_is(want: i32, what: &str) -> Result<()> {
    let out = Command::new("/usr/bin/bpfkill").arg("status").output()?;
    if out.status.code() != Some(want) {
        bail!(
            "{what}: `bpfkill status` exited {:?}, not {want}:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(())
}
