//! `vmirom pack OBJ... -o ROM`: the post-build tool.

use super::CliError;
use super::files::{self, Expect};
use optionrom::pack::{Object, PackOptions, pack};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `vmirom pack`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// ELF32 i386 relocatable objects (gcc -m32 -fPIE/-fPIC -c, as --32, clang ...).
    #[arg(required = true)]
    objects: Vec<PathBuf>,
    /// Output ROM file.
    #[arg(short, long)]
    output: PathBuf,
    /// Pin the linear load address, allowing R_386_32 absolute relocations.
    #[arg(long, value_parser = super::parse_u32)]
    base: Option<u32>,
    /// Manufacturer string ($PnP), printed by Linux.
    #[arg(long)]
    vendor: Option<String>,
    /// Product string ($PnP), printed by Linux.
    #[arg(long)]
    product: Option<String>,
    /// License string (Linux accepts exactly "GPL" or "GPL v2").
    #[arg(long)]
    license: Option<String>,
    /// ROM code revision MAJOR.MINOR (PCIR).
    #[arg(long, value_parser = parse_version)]
    version: Option<(u8, u8)>,
    /// PCI ids VVVV:DDDD in hex (default 15ad:0801, what Linux expects).
    #[arg(long, value_parser = parse_pci_id)]
    pci_id: Option<(u16, u16)>,
    /// VMI header virtual_top (lowest linear address the hypervisor claims; 0 = none).
    #[arg(long, value_parser = super::parse_u32)]
    virtual_top: Option<u32>,
    /// Print the layout and relocation counts.
    #[arg(short, long)]
    verbose: bool,
}

/// Parses `MAJOR.MINOR`.
pub fn parse_version(s: &str) -> Result<(u8, u8), String> {
    let (a, b) = s
        .split_once('.')
        .ok_or_else(|| format!("{s:?}: expected MAJOR.MINOR, e.g. 1.0"))?;
    let p = |x: &str| {
        x.parse::<u8>()
            .map_err(|e| format!("{s:?}: {x:?} is not 0-255: {e}"))
    };
    Ok((p(a)?, p(b)?))
}

/// Parses `VVVV:DDDD` (hex).
pub fn parse_pci_id(s: &str) -> Result<(u16, u16), String> {
    let (v, d) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected VVVV:DDDD in hex, e.g. 15ad:0801"))?;
    let p = |x: &str| {
        u16::from_str_radix(x, 16).map_err(|e| format!("{s:?}: {x:?} is not a 16-bit hex id: {e}"))
    };
    Ok((p(v)?, p(d)?))
}

/// Runs the command.
pub fn run(a: &Args) -> Result<ExitCode, CliError> {
    let datas = a
        .objects
        .iter()
        .map(|p| files::read(p, &Expect::OBJECT))
        .collect::<Result<Vec<_>, _>>()?;
    let names: Vec<String> = a.objects.iter().map(|p| p.display().to_string()).collect();
    let objects: Vec<Object<'_>> = names
        .iter()
        .zip(&datas)
        .map(|(name, data)| Object { name, data })
        .collect();
    let d = PackOptions::default();
    let opts = PackOptions {
        base: a.base.or(d.base),
        vendor: a.vendor.clone().unwrap_or(d.vendor),
        product: a.product.clone().unwrap_or(d.product),
        license: a.license.clone().unwrap_or(d.license),
        version: a.version.unwrap_or(d.version),
        pci_id: a.pci_id.unwrap_or(d.pci_id),
        virtual_top: a.virtual_top.unwrap_or(d.virtual_top),
    };
    let packed = pack(&objects, &opts)?;
    super::write(&a.output, &packed.image)?;
    if a.verbose {
        println!("{packed:#?}");
    }
    println!(
        "wrote {} ({} bytes)",
        a.output.display(),
        packed.image.len()
    );
    Ok(ExitCode::SUCCESS)
}
