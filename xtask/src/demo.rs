//! `cargo xtask demo`: start tracking, run a double-forking sample service, list it, kill it,
//! and check that nothing of it survived while an unrelated namesake did.

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::{bootstrap::bootstrap, bpfkill_bin, cargo, is_root, root, run};

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

/// Runs the demo.
pub fn demo() -> Result<()> {
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
