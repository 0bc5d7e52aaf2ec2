//! One module per subcommand; each returns the process exit code or a [`CliError`].

pub mod build;
pub mod check;
pub mod completions;
pub mod files;
pub mod fix;
pub mod header;
pub mod info;
pub mod man;
pub mod pack;
pub mod test;
pub mod trace;

use std::fmt;
use std::path::{Path, PathBuf};

/// A usage or input error (exit code 2).
#[derive(Debug)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<optionrom::Error> for CliError {
    fn from(e: optionrom::Error) -> Self {
        CliError(e.to_string())
    }
}

/// Reads a whole ROM file that vmirom judges itself ([`files::Expect::ROM`]).
pub fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    files::read(path, &files::Expect::ROM)
}

/// Writes a whole output file ([`files::write`]).
pub fn write(path: &Path, data: &[u8]) -> Result<(), CliError> {
    files::write(path, data)
}

/// Writes bytes to stdout as they are.
pub fn print_bytes(b: &[u8]) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(b)
        .and_then(|()| out.flush())
        .map_err(|e| CliError(format!("writing to stdout: {e}")))
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json(v: &impl serde::Serialize) -> Result<(), CliError> {
    let s = serde_json::to_string_pretty(v).map_err(|e| CliError(format!("encoding JSON: {e}")))?;
    println!("{s}");
    Ok(())
}

/// Parses an integer written in decimal or with a `0x` prefix.
pub fn parse_int(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => t.replace('_', "").parse::<u64>(),
    };
    r.map_err(|e| format!("{s:?} is not a number: {e}"))
}

/// Parses a 32-bit address (`0xC00C0000`).
pub fn parse_u32(s: &str) -> Result<u32, String> {
    let v = parse_int(s)?;
    u32::try_from(v).map_err(|_| format!("{s:?} does not fit in 32 bits"))
}

/// Output path defaulting to the input.
pub fn out_path(input: &Path, out: Option<&PathBuf>) -> PathBuf {
    out.cloned().unwrap_or_else(|| input.to_path_buf())
}
