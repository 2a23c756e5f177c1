//! Which checks run and whether findings fail the build: the `# check=` directive (or the
//! `BUILDKIT_DOCKERFILE_CHECK` build arg, which replaces it), and `# check=` comments directly
//! above one instruction, which add to it for that instruction only (BuildKit's
//! `linter.ParseLintOptions` and `WithMergedConfigFromComments`).
//!
//! The value is up to three `;`-separated options: `skip=all` or `skip=RULE,RULE`,
//! `experimental=all` or `experimental=RULE,...`, and `error=BOOL`.

use std::collections::BTreeSet;

use super::rules::Rule;

/// A `check=` value that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckOptionError {
    /// An option without `=`, or one with an unknown name.
    #[error("invalid check option {}", crate::parser::go_quote(.0))]
    Invalid(String),
    /// `error=` with something that is not a boolean.
    #[error("failed to parse check option {}: invalid syntax", crate::parser::go_quote(.0))]
    NotBool(String),
}

/// Parsed check options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// `skip=all`.
    pub skip_all: bool,
    /// `skip=RULE,...`.
    pub skip: BTreeSet<String>,
    /// `experimental=all`.
    pub experimental_all: bool,
    /// `experimental=RULE,...`.
    pub experimental: BTreeSet<String>,
    /// `error=true`: findings fail the build.
    pub error: bool,
}

impl CheckConfig {
    /// Parses a `check=` value, e.g. `skip=JSONArgsRecommended,StageNameCasing;error=true`.
    ///
    /// # Errors
    ///
    /// [`CheckOptionError`] for an unknown option or a non-boolean `error=`.
    pub fn parse(value: &str) -> Result<CheckConfig, CheckOptionError> {
        let value = value.trim();
        let mut out = CheckConfig::default();
        if value.is_empty() {
            return Ok(out);
        }
        // Like Go's `SplitN(s, ";", 3)`: a third part keeps any further `;`.
        for part in value.splitn(3, ';') {
            let Some((key, v)) = part.split_once('=') else {
                return Err(CheckOptionError::Invalid(part.to_owned()));
            };
            let list = |v: &str| -> (bool, BTreeSet<String>) {
                let v = v.trim();
                if v == "all" {
                    (true, BTreeSet::new())
                } else {
                    (false, v.split(',').map(|r| r.trim().to_owned()).collect())
                }
            };
            match key.trim() {
                "skip" => (out.skip_all, out.skip) = list(v),
                "experimental" => (out.experimental_all, out.experimental) = list(v),
                "error" => {
                    out.error = parse_go_bool(v.trim()).ok_or_else(|| CheckOptionError::NotBool(part.to_owned()))?
                }
                other => return Err(CheckOptionError::Invalid(other.to_owned())),
            }
        }
        Ok(out)
    }

    /// Whether `rule` runs under this configuration.
    pub fn enabled(&self, rule: &Rule) -> bool {
        if rule.experimental {
            self.experimental_all || self.experimental.contains(rule.name)
        } else {
            !(self.skip_all || self.skip.contains(rule.name))
        }
    }

    /// This configuration plus the first `check=` directive among an instruction's comments
    /// (its skips and experimental rules are added; `error` is not changed). Comments that do
    /// not parse change nothing.
    pub(crate) fn with_comments(&self, comments: &[String]) -> Option<CheckConfig> {
        let value = comments.iter().find_map(|c| comment_directive(c))?;
        let value = value.split(' ').next().unwrap_or_default();
        let other = CheckConfig::parse(value).ok()?;
        let mut merged = self.clone();
        merged.skip_all |= other.skip_all;
        merged.skip.extend(other.skip);
        merged.experimental_all |= other.experimental_all;
        merged.experimental.extend(other.experimental);
        Some(merged)
    }
}

/// The value of a `check=VALUE` comment (the comment text without its `#`).
fn comment_directive(comment: &str) -> Option<&str> {
    let (name, value) = comment.split_once('=')?;
    let name = name.trim();
    let first_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if !first_ok || !name.chars().all(|c| c.is_ascii_alphanumeric()) || !name.eq_ignore_ascii_case("check") {
        return None;
    }
    let value = value.trim();
    (!value.is_empty()).then_some(value)
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lint::rules;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_options() {
        assert_eq!(CheckConfig::parse("").unwrap(), CheckConfig::default());
        let c = CheckConfig::parse("skip=JSONArgsRecommended, StageNameCasing;error=true").unwrap();
        assert_eq!(c.skip, set(&["JSONArgsRecommended", "StageNameCasing"]));
        assert!(c.error && !c.skip_all);
        let c = CheckConfig::parse(" skip = all ; error=1;experimental=all").unwrap();
        assert!(c.skip_all && c.error && c.experimental_all);
        let c = CheckConfig::parse("experimental=InvalidDefinitionDescription").unwrap();
        assert!(c.enabled(&rules::INVALID_DEFINITION_DESCRIPTION));
        assert!(!CheckConfig::default().enabled(&rules::INVALID_DEFINITION_DESCRIPTION));
        assert_eq!(CheckConfig::parse("skip").unwrap_err().to_string(), "invalid check option \"skip\"");
        assert_eq!(CheckConfig::parse("nope=1").unwrap_err().to_string(), "invalid check option \"nope\"");
        assert_eq!(
            CheckConfig::parse("error=yes").unwrap_err().to_string(),
            "failed to parse check option \"error=yes\": invalid syntax"
        );
    }

    #[test]
    fn skip_applies_to_stable_rules_only() {
        let c = CheckConfig::parse("skip=all").unwrap();
        assert!(!c.enabled(&rules::UNDEFINED_VAR));
        let c = CheckConfig::parse("skip=UndefinedVar").unwrap();
        assert!(!c.enabled(&rules::UNDEFINED_VAR));
        assert!(c.enabled(&rules::STAGE_NAME_CASING));
    }

    #[test]
    fn comments_add_skips() {
        let base = CheckConfig::parse("skip=StageNameCasing;error=true").unwrap();
        let comments = vec!["some text".to_owned(), "check=skip=UndefinedVar // allowed here".to_owned()];
        let merged = base.with_comments(&comments).unwrap();
        assert_eq!(merged.skip, set(&["StageNameCasing", "UndefinedVar"]));
        assert!(merged.error);
        assert_eq!(base.with_comments(&["plain comment".to_owned()]), None);
        assert_eq!(base.with_comments(&["check=bogus".to_owned()]), None);
        let merged = base.with_comments(&["CHECK = skip=all".to_owned()]).unwrap();
        assert!(merged.skip_all);
    }
}
