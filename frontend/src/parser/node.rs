//! The untyped syntax tree: one [`Node`] per Dockerfile instruction.

use std::fmt;

/// Lines an instruction occupies in the Dockerfile (1-based, inclusive), continuation lines and
/// heredoc bodies included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// First line.
    pub start_line: usize,
    /// Last line.
    pub end_line: usize,
}

impl Span {
    /// A span covering lines `start_line..=end_line`.
    pub fn new(start_line: usize, end_line: usize) -> Span {
        Span { start_line, end_line }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start_line == self.end_line {
            write!(f, "{}", self.start_line)
        } else {
            write!(f, "{}-{}", self.start_line, self.end_line)
        }
    }
}

/// One `key=value` (or legacy `key value`) pair of `ENV` or `LABEL`, unexpanded: quotes and
/// escapes are still in `value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key as written.
    pub key: String,
    /// The value as written (quotes kept; removed at expansion time).
    pub value: String,
    /// True for `key=value`, false for the legacy `KEY key value` form.
    pub has_equals: bool,
}

/// The arguments of an instruction, shaped per instruction as BuildKit's parser shapes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Args {
    /// A list of words: whitespace-split (`FROM`, `EXPOSE`), the decoded strings of a JSON array
    /// (exec form), the whole rest of the line as one word (shell form of `RUN`, `CMD`,
    /// `ENTRYPOINT`, `SHELL`, and `USER`, `WORKDIR`, `MAINTAINER`, `STOPSIGNAL`) or quote-aware
    /// words (`ARG`). `HEALTHCHECK` has its type (`CMD`, `NONE`) as first word.
    Words(Vec<String>),
    /// Key/value pairs of `ENV` and `LABEL`.
    KeyValues(Vec<KeyValue>),
    /// The instruction nested in an `ONBUILD`.
    Nested(Box<Node>),
    /// An instruction the parser does not know: its arguments are not parsed (the typed layer
    /// reports it).
    Ignored,
}

impl Args {
    /// The words, when the arguments are a word list.
    pub fn words(&self) -> &[String] {
        match self {
            Args::Words(w) => w,
            _ => &[],
        }
    }

    /// True when there are no arguments at all.
    pub fn is_empty(&self) -> bool {
        match self {
            Args::Words(w) => w.is_empty(),
            Args::KeyValues(kv) => kv.is_empty(),
            Args::Nested(_) | Args::Ignored => false,
        }
    }
}

/// A heredoc attached to an instruction (`RUN <<EOF`, `COPY <<EOF /dest`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, quotes removed (`EOF`).
    pub name: String,
    /// File descriptor written before `<<` (`3<<EOF`), 0 when absent.
    pub file_descriptor: u32,
    /// False when the delimiter was quoted (`<<"EOF"`): the body is not variable-expanded.
    pub expand: bool,
    /// `<<-EOF`: leading tabs are removed from the body lines and the terminator.
    pub chomp: bool,
    /// The body, each line with its line ending, terminator excluded.
    pub content: String,
}

/// One parsed instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The instruction keyword as written (`Run`, `COPY`).
    pub keyword: String,
    /// The keyword lowercased (`run`, `copy`), used for dispatch.
    pub keyword_lower: String,
    /// Builder flags as written, with their leading dashes (`--from=build`, `--link`).
    pub flags: Vec<String>,
    /// The arguments.
    pub args: Args,
    /// True when the arguments were a JSON array (exec form).
    pub json: bool,
    /// Heredoc bodies, in the order their delimiters appear on the line.
    pub heredocs: Vec<Heredoc>,
    /// The instruction text with continuations joined (comments and line breaks removed).
    pub original: String,
    /// Lines the instruction occupies.
    pub span: Span,
    /// Comment lines directly above the instruction, `#` and surrounding spaces removed.
    pub comments: Vec<String>,
}

impl Node {
    /// The flags split into `(name, value)`: `--from=x` is `("from", Some("x"))`, `--link` is
    /// `("link", None)`.
    pub fn flag_pairs(&self) -> Vec<(&str, Option<&str>)> {
        self.flags
            .iter()
            .map(|f| {
                let f = f.strip_prefix("--").unwrap_or(f);
                match f.split_once('=') {
                    Some((k, v)) => (k, Some(v)),
                    None => (f, None),
                }
            })
            .collect()
    }
}
