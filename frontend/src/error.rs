//! Frontend errors: every problem tied to Dockerfile lines carries a [`SourceSpan`], a message
//! saying what is wrong and, where there is something to do, a hint. Problems found while
//! checking the whole file (unknown instructions, bad flags, unsupported features) are collected
//! into one [`Error`] with several [`Diagnostic`]s.

use std::fmt;

use rbuild_solver::ir::{GraphError, SourceSpan};

use crate::convert::ResolveError;
use crate::lint::{CheckOptionError, Warning};
use crate::parser::Span;
use crate::shell::ShellError;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The Dockerfile is empty.
    #[error("the Dockerfile cannot be empty")]
    Empty,
    /// The text is not a valid Dockerfile.
    #[error("dockerfile parse error: {0}")]
    Syntax(String),
    /// The keyword is not an instruction.
    #[error("unknown instruction: {instruction}{}", suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    UnknownInstruction {
        /// The keyword as written.
        instruction: String,
        /// The closest instruction.
        suggestion: Option<String>,
    },
    /// Wrong arguments, flags or values.
    #[error("{0}")]
    InvalidInstruction(String),
    /// Valid Dockerfile syntax rbuild cannot build yet.
    #[error("{feature} is not supported by rbuild yet")]
    Unsupported {
        /// The instruction or flag (`RUN --device`).
        feature: String,
    },
    /// Variable expansion failed.
    #[error("failed to process {}: {source}", crate::parser::go_quote(word))]
    Expansion {
        /// The word being expanded.
        word: String,
        /// Why.
        #[source]
        source: ShellError,
    },
    /// `COPY --from` uses a variable.
    #[error("variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround")]
    FromExpansion,
    /// `FROM` expanded to nothing.
    #[error("base name ({base}) should not be blank")]
    BlankBaseName {
        /// The base as written.
        base: String,
    },
    /// A `--platform` value is not a platform.
    #[error("failed to parse platform {value}: {reason}")]
    InvalidPlatform {
        /// The value after expansion.
        value: String,
        /// Why.
        reason: String,
    },
    /// An image reference is malformed.
    #[error("failed to parse stage name {}: {reason}", crate::parser::go_quote(reference))]
    InvalidReference {
        /// The reference.
        reference: String,
        /// Why.
        reason: String,
    },
    /// The image resolver failed.
    #[error("failed to resolve base image {}: {source}", crate::parser::go_quote(reference))]
    ResolveImage {
        /// The reference as written (after expansion).
        reference: String,
        /// The resolver's error.
        #[source]
        source: ResolveError,
    },
    /// `--target` names no stage.
    #[error("target stage {} could not be found{}", crate::parser::go_quote(target), suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    TargetNotFound {
        /// The requested target.
        target: String,
        /// The closest stage name.
        suggestion: Option<String>,
    },
    /// `--from=N` with no stage N.
    #[error("invalid stage index {index}")]
    StageIndex {
        /// The index.
        index: i64,
    },
    /// `COPY --from` a stage defined later.
    #[error(
        "cannot copy from stage {}, it needs to be defined before current stage {}",
        crate::parser::go_quote(from),
        crate::parser::go_quote(stage)
    )]
    StageOrder {
        /// The referenced stage.
        from: String,
        /// The current stage.
        stage: String,
    },
    /// Stages depend on each other in a cycle.
    #[error("circular dependency detected on stage: {stage}")]
    CircularDependency {
        /// A stage in the cycle.
        stage: String,
    },
    /// Only `ARG`s, no `FROM`.
    #[error("dockerfile contains no stages to build")]
    NoStages,
    /// `# check=...;error=true`: build checks found something.
    #[error("lint violation found for rules: {}", rules.join(", "))]
    ChecksFailed {
        /// Names of the rules that reported findings.
        rules: Vec<String>,
    },
    /// The `# check=` directive or `BUILDKIT_DOCKERFILE_CHECK` cannot be used.
    #[error("failed to parse {origin}: {source}")]
    CheckOptions {
        /// `check options` (the directive) or `build-arg:BUILDKIT_DOCKERFILE_CHECK`.
        origin: String,
        /// Why.
        #[source]
        source: CheckOptionError,
    },
    /// The graph builder rejected an op (a frontend bug).
    #[error("internal error building the graph: {0}")]
    Graph(#[from] GraphError),
}

impl ErrorKind {
    fn default_hint(&self) -> Option<String> {
        Some(match self {
            ErrorKind::UnknownInstruction { .. } => {
                "instructions are listed at https://docs.docker.com/reference/dockerfile/".to_owned()
            }
            ErrorKind::Unsupported { .. } => {
                "rewrite this step with supported instructions (RUN, COPY, ENV, WORKDIR, ...) or build this Dockerfile with docker buildx for now".to_owned()
            }
            ErrorKind::ResolveImage { .. } => {
                "check the image name and tag, that the registry is reachable and that you are logged in if it is private".to_owned()
            }
            ErrorKind::FromExpansion => {
                "declare `ARG NAME` before the first FROM, add `FROM ${NAME} AS src`, then use `COPY --from=src`".to_owned()
            }
            ErrorKind::StageOrder { .. } => "move the stage you copy from above this one".to_owned(),
            ErrorKind::ChecksFailed { .. } => {
                "fix what the checks found, or skip a rule with `# check=skip=RULE` (rules: https://docs.docker.com/reference/build-checks/)".to_owned()
            }
            ErrorKind::CheckOptions { .. } => {
                "use `skip=RULE,RULE` or `skip=all`, `error=true|false` and `experimental=RULE`, separated by `;`".to_owned()
            }
            ErrorKind::Empty | ErrorKind::NoStages => {
                "a Dockerfile needs at least one FROM instruction".to_owned()
            }
            _ => return None,
        })
    }
}

/// One problem, located when it comes from a Dockerfile line.
#[derive(Debug)]
pub struct Diagnostic {
    /// File and lines.
    pub span: Option<SourceSpan>,
    /// What is wrong.
    pub kind: ErrorKind,
    /// What to do about it.
    pub hint: Option<String>,
}

/// The frontend's error: one or more [`Diagnostic`]s, first one most relevant, and the build
/// check findings made before it (BuildKit reports them with the error).
#[derive(Debug)]
pub struct Error {
    diagnostics: Vec<Diagnostic>,
    warnings: Vec<Warning>,
}

impl Error {
    /// An error without location.
    pub(crate) fn new(kind: ErrorKind) -> Error {
        let hint = kind.default_hint();
        Error { diagnostics: vec![Diagnostic { span: None, kind, hint }], warnings: Vec::new() }
    }

    /// An error at `span` of `file`.
    pub(crate) fn at(file: &str, span: Span, kind: ErrorKind) -> Error {
        Error::new(kind).or_at(file, span)
    }

    /// Several problems at once; `None` when there are none.
    pub(crate) fn collect(diagnostics: Vec<Diagnostic>) -> Option<Error> {
        (!diagnostics.is_empty()).then_some(Error { diagnostics, warnings: Vec::new() })
    }

    /// Builds a diagnostic at `span` with the kind's default hint.
    pub(crate) fn diagnostic(file: &str, span: Span, kind: ErrorKind) -> Diagnostic {
        let hint = kind.default_hint();
        Diagnostic { span: Some(source_span(file, span)), kind, hint }
    }

    /// Locates the diagnostics that have no location yet.
    pub(crate) fn or_at(mut self, file: &str, span: Span) -> Error {
        for d in &mut self.diagnostics {
            if d.span.is_none() {
                d.span = Some(source_span(file, span));
            }
        }
        self
    }

    /// Replaces the hint of the first diagnostic.
    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Error {
        if let Some(d) = self.diagnostics.first_mut() {
            d.hint = Some(hint.into());
        }
        self
    }

    /// Where the (first) problem is, for `Dockerfile:12` and quoting the line.
    pub fn span(&self) -> Option<&SourceSpan> {
        self.diagnostics.first().and_then(|d| d.span.as_ref())
    }

    /// What to do about the (first) problem.
    pub fn hint(&self) -> Option<&str> {
        self.diagnostics.first().and_then(|d| d.hint.as_deref())
    }

    /// What the (first) problem is.
    pub fn kind(&self) -> &ErrorKind {
        // `diagnostics` is never empty: every constructor puts one in.
        match self.diagnostics.first() {
            Some(d) => &d.kind,
            None => &ErrorKind::NoStages,
        }
    }

    /// Every problem found, in file order.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// Build check findings made before the error, in line order.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// Attaches the findings made before the error.
    pub(crate) fn with_warnings(mut self, warnings: Vec<Warning>) -> Error {
        self.warnings = warnings;
        self
    }
}

pub(crate) fn source_span(file: &str, span: Span) -> SourceSpan {
    SourceSpan { file: file.to_owned(), start_line: span.start_line, end_line: span.end_line }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Error {
        Error::new(kind)
    }
}

impl From<GraphError> for Error {
    fn from(e: GraphError) -> Error {
        Error::new(ErrorKind::Graph(e))
    }
}

impl fmt::Display for Error {
    /// The first problem's message; with several, one `file:line: message` line per further
    /// problem. Locations of the first one and hints are left to the renderer ([`Error::span`],
    /// [`Error::hint`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind())?;
        for d in self.diagnostics.iter().skip(1) {
            match &d.span {
                Some(s) => write!(f, "\n{}:{}: {}", s.file, s.start_line, d.kind)?,
                None => write!(f, "\n{}", d.kind)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(self.kind())
    }
}
