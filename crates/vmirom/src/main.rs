//! `vmirom`: build, inspect, check, repair, pack and test VMI 3.0 option ROMs.
//!
//! Exit codes: 0 success, 1 a check failed, 2 usage or input error.

mod cmd;
mod disasm;
mod header;
mod report;
mod svg;
mod symbols;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

/// Command-line interface.
#[derive(Debug, Parser)]
#[command(
    name = "vmirom",
    version,
    about = "Build, inspect, check, repair, pack and test VMI 3.0 option ROMs",
    after_help = "Exit codes: 0 success, 1 a check or test failed, 2 usage or input error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a VMI ROM with a backend (audited before it is written).
    Build(cmd::build::Args),
    /// Print every field of every image of a ROM.
    Info(cmd::info::Args),
    /// Judge a ROM against rule profiles (exit 0 pass, 1 fail, 2 unusable input); list or
    /// explain the rules (--list-rules, --explain RULE).
    Check(cmd::check::Args),
    /// Recompute the checksum (and optionally size and padding) of a ROM.
    Fix(cmd::fix::Args),
    /// Pack ELF32 i386 relocatable objects into a VMI ROM (the post-build tool).
    Pack(cmd::pack::Args),
    /// Run every call of a ROM in a real guest and judge it (exit 0 only if all pass).
    Test(cmd::test::Args),
    /// Print the ABI as a C header or a Rust module.
    Header(cmd::header::Args),
    /// Read a trace ROM's per-call counters out of guest RAM, or run a guest and watch them live.
    #[command(subcommand)]
    Trace(cmd::trace::Command),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) generated from
    /// these definitions.
    Completions(cmd::completions::Args),
    /// Print the manual page (roff), or write one page per command with --out DIR.
    Man(cmd::man::Args),
}

/// Lets a closed pipe end the process quietly (`vmirom info x.rom | head`), as it does any
/// Unix filter, instead of making `println!` panic on EPIPE.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: `signal` with SIG_DFL installs no handler code; it runs before any thread is
    // started, so nothing races with the change of disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    default_sigpipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(a) => cmd::build::run(&a),
        Command::Info(a) => cmd::info::run(&a),
        Command::Check(a) => cmd::check::run(&a),
        Command::Fix(a) => cmd::fix::run(&a),
        Command::Pack(a) => cmd::pack::run(&a),
        Command::Header(a) => cmd::header::run(&a),
        Command::Test(a) => cmd::test::run(&a),
        Command::Trace(c) => cmd::trace::run(&c),
        Command::Completions(a) => cmd::completions::run(&a, Cli::command()),
        Command::Man(a) => cmd::man::run(&a, Cli::command()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmirom: {e}");
            ExitCode::from(2)
        }
    }
}
