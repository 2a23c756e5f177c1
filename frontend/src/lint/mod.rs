//! Build checks: BuildKit's Dockerfile lint rules ([`rules`]), run while a Dockerfile is
//! converted ([`crate::build`]) or on their own ([`crate::check`], `rbuild build --check`).
//!
//! Each finding is a [`Warning`] naming its [`Rule`], with BuildKit's message and the lines it is
//! about. Which rules run and whether findings fail the build is set by the `# check=` directive
//! or the `BUILDKIT_DOCKERFILE_CHECK` build arg ([`CheckConfig`]); a `# check=skip=RULE` comment
//! directly above an instruction skips rules for that instruction only.
//!
//! Where the rules run:
//!
//! - on the parse tree, for every instruction of the file: casing, stage names, `MAINTAINER`,
//!   empty continuation lines (`lint/nodes.rs`);
//! - on every stage's `FROM` with the global `ARG`s: undeclared or invalid args, `--platform`
//!   (`lint/from.rs`);
//! - while each stage the build needs is converted (with `--check` and no `--target`: every
//!   stage), with that stage's environment: `ENV`/`LABEL`/`ARG`/`WORKDIR`/`CMD`/`ENTRYPOINT`/
//!   `HEALTHCHECK`/`EXPOSE`/`COPY`/`ADD` rules, undefined variables and the base image's
//!   platform (`convert/checks.rs`).
//!
//! Experimental rules (`InvalidDefinitionDescription`) run only when named in
//! `# check=experimental=...` (or `experimental=all`); `skip=all` does not turn them off.

mod config;
pub(crate) mod from;
mod ignore;
pub(crate) mod nodes;
mod reference;
pub mod rules;

use std::collections::BTreeSet;

pub use config::{CheckConfig, CheckOptionError};
pub(crate) use ignore::copy_ignored;
pub(crate) use reference::is_valid_reference;
pub use rules::Rule;

use rbuild_solver::ir::SourceSpan;

use crate::error::{source_span, ErrorKind};
use crate::parser::Span;

/// A non-fatal finding: a build check's, or another warning of the build (unused build args).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// Where.
    pub span: Option<SourceSpan>,
    /// What, in BuildKit's words (`JSON arguments recommended for CMD to ...`).
    pub message: String,
    /// The check that found it; `None` for other warnings.
    pub rule: Option<&'static Rule>,
}

impl Warning {
    /// BuildKit's one-line form, as `docker build` lists warnings after a build:
    /// `JSONArgsRecommended: JSON arguments recommended for CMD to ... (line 3)`.
    pub fn short(&self) -> String {
        let mut out = match self.rule {
            Some(r) => format!("{}: {}", r.name, self.message),
            None => self.message.clone(),
        };
        if let Some(s) = self.span.as_ref().filter(|s| s.start_line > 0) {
            out.push_str(&format!(" (line {})", s.start_line));
        }
        out
    }

    /// The warning as JSON, with the fields of BuildKit's lint results (`ruleName`,
    /// `description`, `url`, `detail`, `location`), for metadata files.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        if let Some(r) = self.rule {
            out.insert("ruleName".into(), r.name.into());
            out.insert("description".into(), r.description.into());
            if let Some(u) = r.url {
                out.insert("url".into(), u.into());
            }
        }
        out.insert("detail".into(), self.message.clone().into());
        if let Some(s) = &self.span {
            out.insert(
                "location".into(),
                serde_json::json!({
                    "file": s.file,
                    "ranges": [{"start": {"line": s.start_line}, "end": {"line": s.end_line}}],
                }),
            );
        }
        serde_json::Value::Object(out)
    }
}

/// Collects the findings of one conversion (BuildKit's `linter.Linter`).
#[derive(Debug)]
pub(crate) struct Linter {
    config: CheckConfig,
    file: String,
    warnings: Vec<Warning>,
    /// Rules that reported something (for `error=true`).
    called: BTreeSet<&'static str>,
}

impl Linter {
    pub(crate) fn new(file: &str, config: CheckConfig) -> Linter {
        Linter { config, file: file.to_owned(), warnings: Vec::new(), called: BTreeSet::new() }
    }

    /// Records a finding of `rule` at `span`, unless the configuration, or a `# check=`
    /// comment among `comments` (those above the instruction), turns the rule off.
    pub(crate) fn report(&mut self, rule: &'static Rule, span: Span, comments: &[String], message: String) {
        let enabled = match self.config.with_comments(comments) {
            Some(merged) => merged.enabled(rule),
            None => self.config.enabled(rule),
        };
        if !enabled {
            return;
        }
        self.called.insert(rule.name);
        self.warnings.push(Warning { span: Some(source_span(&self.file, span)), message, rule: Some(rule) });
    }

    /// With `error=true` and findings: the error that fails the build.
    pub(crate) fn violation(&self) -> Option<ErrorKind> {
        (self.config.error && !self.called.is_empty())
            .then(|| ErrorKind::ChecksFailed { rules: self.called.iter().map(|r| (*r).to_owned()).collect() })
    }

    /// The findings, in line order (findings on one line in the order found).
    pub(crate) fn into_warnings(mut self) -> Vec<Warning> {
        self.warnings.sort_by_key(|w| w.span.as_ref().map_or(0, |s| s.start_line));
        self.warnings
    }
}
