//! `vmirom fix FILE [-o OUT] [--size] [--checksum-byte OFF]`: repair checksum (and size).

use super::CliError;
use super::files::{self, Expect};
use optionrom::repair::{RepairOptions, repair};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `vmirom fix`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ROM file.
    file: PathBuf,
    /// Write the repaired image here instead of overwriting FILE.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Also pad to a 512-byte multiple and set the size byte and PCIR image length.
    #[arg(long)]
    size: bool,
    /// Offset of the byte to adjust (default: the last byte of each image).
    #[arg(long, value_parser = super::parse_int)]
    checksum_byte: Option<u64>,
}

/// Runs the command.
pub fn run(a: &Args) -> Result<ExitCode, CliError> {
    // Repaired in place unless -o: then the input must be a file, not a pipe read once.
    let expect = Expect {
        non_empty: true,
        pipe_ok: a.output.is_some(),
        ..Expect::ROM
    };
    let data = files::read(&a.file, &expect)?;
    let checksum_byte = a
        .checksum_byte
        .map(|v| {
            usize::try_from(v).map_err(|_| CliError(format!("--checksum-byte {v} is too large")))
        })
        .transpose()?;
    let fixed = repair(
        &data,
        &RepairOptions {
            fix_size: a.size,
            checksum_byte,
        },
    )?;
    let out = super::out_path(&a.file, a.output.as_ref());
    super::write(&out, &fixed.image)?;
    for c in &fixed.changes {
        println!("{c}");
    }
    println!("wrote {} ({} bytes)", out.display(), fixed.image.len());
    Ok(ExitCode::SUCCESS)
}
