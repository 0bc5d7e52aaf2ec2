//! `vmirom header --lang c|rust [-o FILE]`.

use super::CliError;
use crate::header::{Lang, generate};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `vmirom header`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output language.
    #[arg(long, value_enum, default_value = "c")]
    lang: Lang,
    /// Write to FILE instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

/// Runs the command.
pub fn run(a: &Args) -> Result<ExitCode, CliError> {
    let text = generate(a.lang);
    match &a.output {
        Some(p) => super::write(p, text.as_bytes())?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
