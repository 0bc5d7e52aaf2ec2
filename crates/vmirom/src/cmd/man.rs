//! `vmirom man [--out DIR]`: the manual page in roff, generated from the command-line
//! definitions (clap_mangen): `vmirom.1` on stdout, or one page per command in DIR
//! (`vmirom.1`, `vmirom-build.1`, …, `vmirom-trace-run.1`).

use super::CliError;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, roman};
use std::path::PathBuf;
use std::process::ExitCode;

/// What every page says under EXIT STATUS.
const EXIT_STATUS: &str = "0 success, 1 a check or test failed, 2 usage or input error.";

/// Arguments of `vmirom man`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write one page per command into DIR (created if missing) instead of printing
    /// vmirom.1.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Prints or writes the pages; `cli` is vmirom's whole command line.
pub fn run(a: &Args, cli: clap::Command) -> Result<ExitCode, CliError> {
    let mut cli = cli.disable_help_subcommand(true);
    cli.build();
    let Some(dir) = &a.out else {
        super::print_bytes(page(&cli)?.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(dir).map_err(|e| {
        CliError(format!(
            "--out {}: {}",
            dir.display(),
            super::files::io_problem(dir, &e)
        ))
    })?;
    let mut pages = Vec::new();
    collect(&cli, &mut pages)?;
    for (name, text) in pages {
        let path = dir.join(name);
        super::write(&path, text.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Every command's page, `(file name, roff)`: this one's, then each subcommand's, depth first.
fn collect(cmd: &clap::Command, out: &mut Vec<(String, String)>) -> Result<(), CliError> {
    out.push((Man::new(cmd.clone()).get_filename(), page(cmd)?));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, out)?;
    }
    Ok(())
}

/// One command's page: clap_mangen's sections, with EXIT STATUS instead of its EXTRA (the
/// `after_help` text).
fn page(cmd: &clap::Command) -> Result<String, CliError> {
    let man = Man::new(cmd.clone());
    let mut w: Vec<u8> = Vec::new();
    let mut sections = || -> std::io::Result<()> {
        man.render_title(&mut w)?;
        man.render_name_section(&mut w)?;
        man.render_synopsis_section(&mut w)?;
        man.render_description_section(&mut w)?;
        if cmd.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut w)?;
        }
        if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
            man.render_subcommands_section(&mut w)?;
        }
        Roff::new()
            .control("SH", ["EXIT STATUS"])
            .text([roman(EXIT_STATUS)])
            .to_writer(&mut w)?;
        if cmd.get_version().is_some() {
            man.render_version_section(&mut w)?;
        }
        Ok(())
    };
    sections().map_err(|e| CliError(format!("rendering {}: {e}", man.get_filename())))?;
    Ok(ascii(&w))
}

/// The page with every non-ASCII character written as a groff escape (`…` → `\[u2026]`):
/// troff reads its input as Latin-1 unless told otherwise, so UTF-8 bytes would come out as
/// garbage (and `groff -ww` warns about them).
fn ascii(page: &[u8]) -> String {
    let mut out = String::with_capacity(page.len());
    for c in String::from_utf8_lossy(page).chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_becomes_groff_escapes() {
        assert_eq!(
            ascii("fish, … ≤ x".as_bytes()),
            "fish, \\[u2026] \\[u2264] x"
        );
    }
}
