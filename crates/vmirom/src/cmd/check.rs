//! `vmirom check FILE [--profile P]... [--json]`: rule-by-rule verdicts.
//! Exit 0 when no rule fails, 1 when one does, 2 when the file cannot be read.
//! `vmirom check --list-rules [--profile P]... [--json]` lists the rules, `vmirom check
//! --explain RULE` explains one ([`catalog`]).

mod catalog;

use super::CliError;
use optionrom::validate::rule::Rule;
use optionrom::validate::{Finding, Profile, Severity, validate, worst};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `vmirom check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ROM file.
    #[arg(required_unless_present_any = ["list_rules", "explain"])]
    file: Option<PathBuf>,
    /// Rule profile (repeatable): linux-vmi, seabios, pci, vmi-audit. Default: linux-vmi,
    /// seabios and pci for a VMI ROM; seabios and pci otherwise. With --list-rules or
    /// --explain: only these profiles' rules (default: all four).
    #[arg(long = "profile", short = 'p', value_parser = parse_profile)]
    profiles: Vec<CheckProfile>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Show only warnings and failures.
    #[arg(long, short, conflicts_with_all = ["list_rules", "explain"])]
    quiet: bool,
    /// List the rules (id, severity, summary) of every profile instead of checking a file.
    #[arg(long, conflicts_with_all = ["file", "explain"])]
    list_rules: bool,
    /// Explain a rule: RULE is an id (every profile's rule of that id, e.g. checksum) or
    /// PROFILE:ID (seabios:checksum).
    #[arg(long, value_name = "RULE", conflicts_with = "file")]
    explain: Option<String>,
}

/// A profile `check` can run: one of optionrom's, or the static audit of vmi-rom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckProfile {
    /// An optionrom rule profile.
    Rom(Profile),
    /// `vmi-audit`: the static audit of the code (vmi_rom::audit).
    VmiAudit,
}

impl CheckProfile {
    /// Every profile, in the order `--list-rules` lists them.
    const ALL: [CheckProfile; 4] = [
        CheckProfile::Rom(Profile::LinuxVmi),
        CheckProfile::Rom(Profile::Seabios),
        CheckProfile::Rom(Profile::Pci),
        CheckProfile::VmiAudit,
    ];

    fn name(self) -> &'static str {
        match self {
            CheckProfile::Rom(p) => p.name(),
            CheckProfile::VmiAudit => vmi_rom::audit::PROFILE,
        }
    }

    /// The profile's rules, in the order it reports them.
    fn rules(self) -> &'static [&'static Rule] {
        match self {
            CheckProfile::Rom(p) => p.rules(),
            CheckProfile::VmiAudit => vmi_rom::audit::rules::RULES,
        }
    }

    fn run(self, data: &[u8], rom: &optionrom::Rom) -> Vec<Finding> {
        match self {
            CheckProfile::Rom(p) => validate(data, rom, p),
            CheckProfile::VmiAudit => vmi_rom::audit::audit(data).findings,
        }
    }
}

fn parse_profile(s: &str) -> Result<CheckProfile, String> {
    if s == vmi_rom::audit::PROFILE {
        return Ok(CheckProfile::VmiAudit);
    }
    s.parse::<Profile>()
        .map(CheckProfile::Rom)
        .map_err(|e| format!("{e}, or vmi-audit"))
}

/// Runs the command.
pub fn run(a: &Args) -> Result<ExitCode, CliError> {
    if a.list_rules {
        return catalog::list(&a.profiles, a.json);
    }
    if let Some(rule) = &a.explain {
        return catalog::explain(rule, &a.profiles, a.json);
    }
    let Some(file) = &a.file else {
        return Err(CliError("check: no FILE given".into()));
    };
    check(a, file)
}

/// Judges `file` against the profiles.
fn check(a: &Args, file: &Path) -> Result<ExitCode, CliError> {
    let data = super::read(file)?;
    let rom = optionrom::parse(&data);
    let profiles = if a.profiles.is_empty() {
        let vmi = rom.images.first().is_some_and(|i| i.vmi.is_some());
        let rom_profiles: &[Profile] = if vmi {
            &Profile::ALL
        } else {
            &[Profile::Seabios, Profile::Pci]
        };
        rom_profiles.iter().map(|p| CheckProfile::Rom(*p)).collect()
    } else {
        a.profiles.clone()
    };
    let findings: Vec<Finding> = profiles.iter().flat_map(|p| p.run(&data, &rom)).collect();
    let verdict = worst(&findings);
    if a.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            file: String,
            profiles: Vec<&'static str>,
            verdict: Severity,
            findings: &'a [Finding],
        }
        super::print_json(&Out {
            file: file.display().to_string(),
            profiles: profiles.iter().map(|p| p.name()).collect(),
            verdict,
            findings: &findings,
        })?;
    } else {
        print_text(a, file, &profiles, &findings, verdict);
    }
    Ok(if verdict == Severity::Fail {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_text(
    a: &Args,
    file: &Path,
    profiles: &[CheckProfile],
    findings: &[Finding],
    verdict: Severity,
) {
    for p in profiles {
        println!("{} [{}]", file.display(), p.name());
        for f in findings.iter().filter(|f| f.profile == p.name()) {
            if a.quiet && f.severity == Severity::Pass {
                continue;
            }
            let at = f
                .offset
                .map_or(String::from("      "), |o| format!("@{o:#06x}"));
            println!("  {:<4}  {:<22} {at}  {}", f.severity, f.rule, f.message);
        }
    }
    let count = |s| findings.iter().filter(|f| f.severity == s).count();
    println!(
        "result: {} ({} fail, {} warn, {} pass)",
        match verdict {
            Severity::Fail => "FAIL",
            Severity::Warn => "pass with warnings",
            Severity::Pass => "pass",
        },
        count(Severity::Fail),
        count(Severity::Warn),
        count(Severity::Pass)
    );
}
