//! `vmirom completions SHELL`: the shell completion script, generated from the command-line
//! definitions (clap_complete), so it always knows every subcommand and option.

use super::CliError;
use clap_complete::Shell;
use std::process::ExitCode;

/// Arguments of `vmirom completions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell: bash, zsh, fish (also elvish, powershell).
    #[arg(value_enum)]
    shell: Shell,
}

/// Prints the script for `a.shell` on stdout; `cli` is vmirom's whole command line.
pub fn run(a: &Args, mut cli: clap::Command) -> Result<ExitCode, CliError> {
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cli, "vmirom", &mut out);
    super::print_bytes(&out)?;
    Ok(ExitCode::SUCCESS)
}
