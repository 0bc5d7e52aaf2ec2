//! Rules as declared items: each rule of a profile is one [`Rule`] — its id (the name `vmirom
//! check` prints), profile, severity, a one-line summary and an explanation that cites where
//! the rule comes from — declared with [`rule!`](crate::rule) next to the function that checks
//! it, so the text `vmirom check --explain RULE` prints and the item's rustdoc page are the
//! same words, written once.

use serde::Serialize;
use std::fmt;

/// How bad the worst verdict of a rule is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// The rule only informs: every finding it reports passes.
    Info,
    /// At worst the rule warns: the consumer accepts the image but something is off.
    Warn,
    /// The rule can fail: the consumer rejects the image, or the image is broken.
    Fail,
}

impl Level {
    /// The verdict of a finding at this level (`Info` findings pass).
    pub fn verdict(self) -> super::Severity {
        match self {
            Level::Info => super::Severity::Pass,
            Level::Warn => super::Severity::Warn,
            Level::Fail => super::Severity::Fail,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Fail => "fail",
        })
    }
}

/// One rule of a profile.
#[derive(Debug, Serialize)]
pub struct Rule {
    /// The profile whose findings carry this rule (`linux-vmi`, `seabios`, `pci`, `vmi-audit`).
    pub profile: &'static str,
    /// The rule's id, as `check` prints it; unique within its profile.
    pub id: &'static str,
    /// The worst verdict the rule gives.
    pub severity: Level,
    /// Where the rule comes from: the consumer's function, the specification's section.
    pub source: &'static str,
    /// The doc comment the rule was declared with, as written: a one-line summary, a blank
    /// line, the explanation ([`Rule::summary`], [`Rule::explanation`]).
    #[serde(skip)]
    pub doc: &'static str,
}

impl Rule {
    /// The doc comment's lines without the one space `///` leaves in front of each.
    fn lines(&self) -> impl Iterator<Item = &'static str> {
        self.doc
            .lines()
            .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end())
    }

    /// The one-line summary: the doc comment's first paragraph.
    pub fn summary(&self) -> String {
        self.lines()
            .take_while(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The explanation: the doc comment after its first paragraph, as written (Markdown).
    pub fn explanation(&self) -> String {
        let rest: Vec<&str> = self.lines().skip_while(|l| !l.is_empty()).collect();
        rest.join("\n").trim().to_string()
    }

    /// `profile:id`, the rule's name across profiles.
    pub fn qualified(&self) -> String {
        format!("{}:{}", self.profile, self.id)
    }
}

/// Declares one [`Rule`] as a `static`: its doc comment becomes both the item's rustdoc and the
/// rule's [summary](Rule::summary) and [explanation](Rule::explanation).
///
/// ```
/// optionrom::rule! {
///     /// The image fits in 64 KiB.
///     ///
///     /// A BIOS copies at most 64 KiB of an option ROM (PCI Firmware 3.0 §5.1.1).
///     pub static FITS {
///         profile: "example",
///         id: "fits",
///         severity: Fail,
///         source: "PCI Firmware 3.0 §5.1.1",
///     }
/// }
/// assert_eq!(FITS.id, "fits");
/// assert_eq!(FITS.summary(), "The image fits in 64 KiB.");
/// assert!(FITS.explanation().starts_with("A BIOS copies"));
/// ```
#[macro_export]
macro_rules! rule {
    (
        $(#[doc = $doc:literal])+
        $vis:vis static $name:ident {
            profile: $profile:expr,
            id: $id:literal,
            severity: $level:ident,
            source: $source:literal $(,)?
        }
    ) => {
        #[doc = concat!("`", $id, "` —")]
        $(#[doc = $doc])+
        #[doc = ""]
        #[doc = concat!("*Rule `", $id, "`, severity ", stringify!($level), "; source: ", $source, ".*")]
        $vis static $name: $crate::validate::rule::Rule = $crate::validate::rule::Rule {
            profile: $profile,
            id: $id,
            severity: $crate::validate::rule::Level::$level,
            source: $source,
            doc: concat!($($doc, "\n"),+),
        };
    };
}

/// Declares a profile's rule list twice from one list of `(RULE, check)` pairs, in the order the
/// profile evaluates and reports them: `pub static RULES: &[&Rule]` (documented with links to
/// every rule) and a private `const CHECKS: &[(&Rule, $check)]` its evaluator walks.
macro_rules! profile_rules {
    (
        $(#[doc = $doc:literal])+
        $check:ty;
        $(($rule:ident, $f:expr)),+ $(,)?
    ) => {
        $(#[doc = $doc])+
        #[doc = ""]
        $(#[doc = concat!("- [`", stringify!($rule), "`]")])+
        pub static RULES: &[&$crate::validate::rule::Rule] = &[$(&$rule),+];

        /// The rules with their checks, in evaluation order.
        const CHECKS: &[(&$crate::validate::rule::Rule, $check)] = &[$((&$rule, $f)),+];
    };
}
pub(crate) use profile_rules;

/// Levenshtein distance between two short strings (for "did you mean").
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut next = Vec::with_capacity(row.len());
        next.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let replace = row
                .get(j)
                .map_or(usize::MAX, |d| d + usize::from(ca != *cb));
            let delete = row.get(j + 1).map_or(usize::MAX, |d| d + 1);
            let insert = next.last().map_or(usize::MAX, |d| d + 1);
            next.push(replace.min(delete).min(insert));
        }
        row = next;
    }
    row.last().copied().unwrap_or(0)
}

/// The rules `query` names: an id (`checksum`: every profile's rule of that id) or
/// `profile:id` (`seabios:checksum`). Empty when none does.
pub fn lookup<'a>(rules: &[&'a Rule], query: &str) -> Vec<&'a Rule> {
    let (profile, id) = match query.split_once(':') {
        Some((p, i)) => (Some(p), i),
        None => (None, query),
    };
    rules
        .iter()
        .copied()
        .filter(|r| r.id == id && profile.is_none_or(|p| p == r.profile))
        .collect()
}

/// Up to five rule names close to `query` (edit distance at most a third of its length, or
/// sharing it as a part), nearest first, each as `profile:id`.
pub fn close_matches(rules: &[&Rule], query: &str) -> Vec<String> {
    let id = query.split_once(':').map_or(query, |(_, i)| i);
    let limit = (id.chars().count() / 3).max(2);
    let mut near: Vec<(usize, String)> = rules
        .iter()
        .filter_map(|r| {
            let d = distance(id, r.id);
            let part = id.len() >= 3 && (r.id.contains(id) || id.contains(r.id));
            (d <= limit || part).then(|| (d, r.qualified()))
        })
        .collect();
    near.sort();
    near.dedup();
    near.into_iter().take(5).map(|(_, n)| n).collect()
}

/// What is missing from the declarations of `rules`: an id that is not kebab-case or repeats
/// within its profile, a summary that is not one sentence, an empty explanation or source, a
/// rustdoc link (the text is also printed as it is).
/// Empty when every rule is fully declared.
pub fn undocumented(rules: &[&Rule]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let name = r.qualified();
        let kebab = !r.id.is_empty()
            && r.id.split('-').all(|w| {
                !w.is_empty()
                    && w.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        if !kebab {
            problems.push(format!("{name}: the id is not kebab-case"));
        }
        let again = rules.get(..i).unwrap_or_default();
        if again.iter().any(|o| o.profile == r.profile && o.id == r.id) {
            problems.push(format!("{name}: declared twice"));
        }
        let summary = r.summary();
        if summary.is_empty() || !summary.ends_with('.') {
            problems.push(format!(
                "{name}: the summary is not a sentence: {summary:?}"
            ));
        }
        if r.explanation().len() < 40 {
            problems.push(format!("{name}: no explanation"));
        }
        if r.source.trim().is_empty() {
            problems.push(format!("{name}: no source"));
        }
        if r.doc.contains("](") {
            problems.push(format!(
                "{name}: a rustdoc link, which `vmirom check --explain` would print raw"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::rule! {
        /// First line
        /// continues here.
        ///
        /// The explanation, `code` and all.
        ///
        /// A second paragraph.
        static SAMPLE {
            profile: "p",
            id: "sample-rule",
            severity: Warn,
            source: "nowhere §1",
        }
    }

    #[test]
    fn summary_and_explanation_come_from_the_doc_comment() {
        assert_eq!(SAMPLE.summary(), "First line continues here.");
        assert_eq!(
            SAMPLE.explanation(),
            "The explanation, `code` and all.\n\nA second paragraph."
        );
        assert_eq!(
            (SAMPLE.severity, SAMPLE.source),
            (Level::Warn, "nowhere §1")
        );
        assert_eq!(SAMPLE.qualified(), "p:sample-rule");
    }

    #[test]
    fn every_rule_of_every_profile_is_documented() {
        let all: Vec<&Rule> = crate::validate::rules().collect();
        assert_eq!(all.len(), 15 + 11 + 27);
        assert_eq!(undocumented(&all), Vec::<String>::new());
        for p in crate::validate::Profile::ALL {
            assert!(p.rules().iter().all(|r| r.profile == p.name()), "{p:?}");
        }
    }

    #[test]
    fn undocumented_names_what_is_missing() {
        crate::rule! {
            /// no full stop
            static BAD {
                profile: "p",
                id: "Bad_Id",
                severity: Fail,
                source: " ",
            }
        }
        let found = undocumented(&[&BAD, &SAMPLE, &SAMPLE]);
        assert_eq!(
            found,
            [
                "p:Bad_Id: the id is not kebab-case",
                "p:Bad_Id: the summary is not a sentence: \"no full stop\"",
                "p:Bad_Id: no explanation",
                "p:Bad_Id: no source",
                "p:sample-rule: declared twice",
            ]
        );
        crate::rule! {
            /// Linked.
            ///
            /// See [`SAMPLE`](super::SAMPLE) for a rule that is declared in full.
            static LINKED {
                profile: "p",
                id: "linked",
                severity: Warn,
                source: "here",
            }
        }
        assert_eq!(
            undocumented(&[&LINKED]),
            ["p:linked: a rustdoc link, which `vmirom check --explain` would print raw"]
        );
    }

    #[test]
    fn lookup_by_id_or_qualified_name_and_close_matches() {
        let rules = [&SAMPLE];
        assert_eq!(lookup(&rules, "sample-rule").len(), 1);
        assert_eq!(lookup(&rules, "p:sample-rule").len(), 1);
        assert!(lookup(&rules, "q:sample-rule").is_empty());
        assert!(lookup(&rules, "sample").is_empty());
        assert_eq!(close_matches(&rules, "sampel-rule"), ["p:sample-rule"]);
        assert_eq!(close_matches(&rules, "sample"), ["p:sample-rule"]);
        assert!(close_matches(&rules, "zzz").is_empty());
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
    }
}
