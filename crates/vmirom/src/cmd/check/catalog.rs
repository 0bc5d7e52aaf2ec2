//! The rule catalogue of `vmirom check`: `--list-rules` prints every rule of the profiles
//! (id, severity, summary), `--explain RULE` a rule's explanation and source. The text is the
//! rules' own (`optionrom::validate::rule`, `vmi_rom::audit::rules`).

use super::super::CliError;
use super::CheckProfile;
use optionrom::validate::rule::{self, Level, Rule};
use std::process::ExitCode;

/// The profiles asked for (all four when none was).
fn selected(profiles: &[CheckProfile]) -> Vec<CheckProfile> {
    if profiles.is_empty() {
        CheckProfile::ALL.to_vec()
    } else {
        profiles.to_vec()
    }
}

/// The profiles asked for, each once, in the order given (all four when none was).
fn distinct(profiles: &[CheckProfile]) -> Vec<CheckProfile> {
    let mut seen = Vec::new();
    for p in selected(profiles) {
        if !seen.contains(&p) {
            seen.push(p);
        }
    }
    seen
}

/// Every rule of `profiles`, profile by profile, each in report order.
fn rules_of(profiles: &[CheckProfile]) -> Vec<&'static Rule> {
    distinct(profiles)
        .iter()
        .flat_map(|p| p.rules().iter().copied())
        .collect()
}

/// A rule as `--json` prints it.
#[derive(serde::Serialize)]
struct RuleJson {
    profile: &'static str,
    id: &'static str,
    severity: Level,
    summary: String,
    explanation: String,
    source: &'static str,
}

impl RuleJson {
    fn of(r: &Rule) -> RuleJson {
        RuleJson {
            profile: r.profile,
            id: r.id,
            severity: r.severity,
            summary: r.summary(),
            explanation: r.explanation(),
            source: r.source,
        }
    }
}

/// Prints `{"rules": [...]}`.
fn print_json(rules: &[&Rule]) -> Result<ExitCode, CliError> {
    #[derive(serde::Serialize)]
    struct Out {
        rules: Vec<RuleJson>,
    }
    let rules = rules.iter().map(|r| RuleJson::of(r)).collect();
    super::super::print_json(&Out { rules })?;
    Ok(ExitCode::SUCCESS)
}

/// `--list-rules`: one line per rule, under a heading per profile.
pub(super) fn list(profiles: &[CheckProfile], json: bool) -> Result<ExitCode, CliError> {
    if json {
        return print_json(&rules_of(profiles));
    }
    for p in distinct(profiles) {
        let order = match p {
            CheckProfile::VmiAudit => "each reported where it is broken",
            CheckProfile::Rom(_) => "in the order check reports them",
        };
        println!("{} ({} rules, {order})", p.name(), p.rules().len());
        for r in p.rules() {
            println!("  {:<22} {:<4}  {}", r.id, r.severity, r.summary());
        }
    }
    println!("vmirom check --explain RULE (an id, or PROFILE:ID) explains a rule");
    Ok(ExitCode::SUCCESS)
}

/// `--explain RULE`: the rule's summary, explanation and source (every profile's rule of
/// that id when RULE names no profile). An unknown rule is a usage error naming close ones.
pub(super) fn explain(
    query: &str,
    profiles: &[CheckProfile],
    json: bool,
) -> Result<ExitCode, CliError> {
    let rules = rules_of(profiles);
    let found = rule::lookup(&rules, query);
    if found.is_empty() {
        return Err(unknown(query, profiles));
    }
    if json {
        return print_json(&found);
    }
    for (i, r) in found.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("{} ({})", r.qualified(), r.severity);
        println!("{}", r.summary());
        println!();
        println!("{}", r.explanation());
        println!();
        println!("Source: {}", r.source);
    }
    Ok(ExitCode::SUCCESS)
}

/// The usage error for a rule no selected profile has: the closest names of every profile.
fn unknown(query: &str, profiles: &[CheckProfile]) -> CliError {
    let all = rules_of(&[]);
    let near = rule::close_matches(&all, query);
    let mut inner = if near.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", near.join(", "))
    };
    if !profiles.is_empty() && !rule::lookup(&all, query).is_empty() {
        let names: Vec<&str> = profiles.iter().map(|p| p.name()).collect();
        inner = format!(" in profile {}{inner}", names.join(", "));
    }
    CliError(format!(
        "unknown rule {query:?}{inner}; `vmirom check --list-rules` lists the rules"
    ))
}
