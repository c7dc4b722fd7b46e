//! `bpfkill completions SHELL` and `bpfkill man [COMMAND]`: generated from the clap
//! definition, so they always agree with `--help`.

use std::io::Write;

use clap::CommandFactory;

use super::{args::Cli, exit};

/// Writes the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell, out: &mut impl Write) -> anyhow::Result<u8> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "bpfkill", out);
    Ok(exit::OK)
}

/// Writes bpfkill(8), or bpfkill-COMMAND(8) (the page bpfkill(8) refers to for each command).
pub fn man(command: Option<&str>, out: &mut impl Write) -> anyhow::Result<u8> {
    let root = Cli::command();
    let page = match command {
        None => root,
        Some(name) => {
            let Some(sub) = root.find_subcommand(name) else {
                let names: Vec<&str> = root.get_subcommands().map(|c| c.get_name()).collect();
                return Err(bpfkill::Error::Usage(format!(
                    "no command {name:?}; the commands are {}",
                    names.join(", ")
                ))
                .into());
            };
            let full = format!("bpfkill-{}", sub.get_name());
            sub.clone()
                .name(full)
                .version(root.get_version().unwrap_or_default().to_string())
        }
    };
    clap_mangen::Man::new(page).section("8").render(out)?;
    Ok(exit::OK)
}
