//! BuildKit-compatible shell-word lexer and variable expansion.
//!
//! Dockerfile instructions (ENV, ARG, COPY, WORKDIR, FROM, ...) expand their arguments with
//! BuildKit's own small lexer (moby/buildkit `frontend/dockerfile/shell/lex.go`), not with a
//! POSIX shell. [`Lexer`] reproduces it, including where it differs from `sh`:
//!
//! | Syntax | Meaning |
//! |---|---|
//! | `$V`, `${V}` | value of `V`; empty if unset. `$` before anything else stays `$` |
//! | `$1`, `$001`, `$@ $* $# $? $- $$ $! $0` | looked up like any name (so normally empty) |
//! | `${V:-w}` / `${V-w}` | `w` if `V` is unset or empty / unset |
//! | `${V:+w}` / `${V+w}` | `w` if `V` is set and non-empty / set |
//! | `${V:?m}` / `${V?m}` | error `V: m` if `V` is unset or empty / unset |
//! | `${V#p}` `${V##p}` | remove the shortest / longest prefix matching `p` |
//! | `${V%p}` `${V%%p}` | remove the shortest / longest suffix matching `p` |
//! | `${V/p/r}` `${V//p/r}` | replace the first / every match of `p` with `r` |
//! | `'...'` | literal; `"..."` expands `$` and honours escapes of `"`, `$`, escape |
//!
//! The word parts (`w`, `m`, `p`, `r`) are expanded themselves. Patterns know `*` and `?`
//! only: `[...]` is literal, `/#` and `/%` do not anchor, and wildcards do not cross a
//! newline. `${V:1:2}`, `${#V}`, `${V^^}`, `${V:=w}`, `${V:#p}` and `${V//p}` are errors.
//!
//! ```
//! use std::collections::BTreeMap;
//! use rbuild_frontend::shell::Lexer;
//!
//! let env = BTreeMap::from([("FILE".to_string(), "app.tar.gz".to_string())]);
//! let lexer = Lexer::new('\\');
//! assert_eq!(lexer.process_word("${FILE%%.*}-${TAG:-latest}", &env)?, "app-latest");
//! assert_eq!(lexer.process_words("a 'b c' $FILE", &env)?, ["a", "b c", "app.tar.gz"]);
//! let e = lexer.process_word_with_matches("$FILE $TAG", &env)?;
//! assert!(e.matched.contains("FILE") && e.unmatched.contains("TAG"));
//! # Ok::<(), rbuild_frontend::shell::ShellError>(())
//! ```

mod engine;
mod env;
mod pattern;
mod unicode;

use std::collections::BTreeSet;

pub use env::Env;
pub use pattern::PatternError;

/// How deeply `${...}` may nest inside each other's word parts. BuildKit has no limit; ours
/// keeps hostile input from exhausting the stack.
pub const MAX_NESTING: usize = 100;

/// The longest text, in bytes, that a word or any part of it may expand to (16 MiB; Linux
/// itself refuses a single argument over 128 KiB). `${V//p/$r}` nested a few times grows
/// exponentially; this stops it before memory runs out.
pub const MAX_EXPANSION_LEN: usize = 16 << 20;

/// The most (pattern element × value character) steps one pattern match may take.
/// Matching is linear in each; the product bounds the time hostile input can cost.
pub const MAX_MATCH_WORK: usize = 1 << 30;

/// Fails once `len` exceeds [`MAX_EXPANSION_LEN`].
fn check_len(len: usize) -> Result<(), ShellError> {
    if len > MAX_EXPANSION_LEN {
        Err(ShellError::TooLong { limit: MAX_EXPANSION_LEN })
    } else {
        Ok(())
    }
}

/// BuildKit's shell-word lexer, configured with the Dockerfile's escape character.
///
/// The `with_*` switches mirror BuildKit's `Lex` fields and are off by default; the plain
/// [`Lexer::new`] is what instruction arguments use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_unset_env: bool,
    skip_process_quotes: bool,
}

impl Default for Lexer {
    /// A lexer with the default escape character `\`.
    fn default() -> Lexer {
        Lexer::new('\\')
    }
}

/// The outcome of [`Lexer::process_word_with_matches`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word.
    pub result: String,
    /// Names looked up and found set (possibly empty) in the environment.
    pub matched: BTreeSet<String>,
    /// Names looked up and not set.
    pub unmatched: BTreeSet<String>,
}

/// Why a word could not be expanded.
///
/// Messages are BuildKit's. BuildKit prefixes them with `failed to process "<word>": `;
/// callers add the word and its location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShellError {
    /// A `'` is never closed.
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    /// A `"` is never closed.
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    /// A `${` is never closed.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${V/p` or `${V//p}` lacks the `/` before the replacement.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${:...}` or `${{...`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// `${V<modifier>...}` with a modifier BuildKit does not know (`:=`, `:1`, `^`, `:#`...).
    #[error("unsupported modifier ({modifier}) in substitution")]
    UnsupportedModifier {
        /// The modifier as written, with its `:` if any.
        modifier: String,
    },
    /// `${V?m}` or `${V:?m}` with `V` unset.
    #[error("{name}: {}", message.as_deref().unwrap_or("is not allowed to be unset"))]
    Unset {
        /// The variable.
        name: String,
        /// The user's message, if the word after `?` was not empty.
        message: Option<String>,
    },
    /// `${V:?m}` with `V` set to the empty string.
    #[error("{name}: {}", message.as_deref().unwrap_or("is not allowed to be empty"))]
    Empty {
        /// The variable.
        name: String,
        /// The user's message, if the word after `?` was not empty.
        message: Option<String>,
    },
    /// The pattern of `${V#p}`, `${V%p}` or `${V/p/r}` is malformed.
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern {
        /// The pattern after expansion.
        pattern: String,
        /// What is wrong with it.
        reason: PatternError,
    },
    /// The expansion would exceed [`MAX_EXPANSION_LEN`] bytes.
    #[error("expansion longer than {limit} bytes")]
    TooLong {
        /// The limit, [`MAX_EXPANSION_LEN`].
        limit: usize,
    },
    /// A pattern match would take more than [`MAX_MATCH_WORK`] steps.
    #[error("pattern of {pattern_len} elements is too expensive to match against a value of {value_len} characters")]
    PatternTooExpensive {
        /// Elements (literals, `?`, `*` runs) in the pattern.
        pattern_len: usize,
        /// Characters in the value.
        value_len: usize,
    },
    /// `${...}` nested more than [`MAX_NESTING`] levels deep.
    #[error("variable substitutions nested more than {limit} levels deep")]
    TooDeep {
        /// The limit, [`MAX_NESTING`].
        limit: usize,
    },
}

impl Lexer {
    /// A lexer whose escape character is `escape`: `\` by default, or a backtick after an
    /// `# escape=` directive naming it.
    pub fn new(escape: char) -> Lexer {
        Lexer { escape, raw_quotes: false, raw_escapes: false, skip_unset_env: false, skip_process_quotes: false }
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Keep quote characters in the output (BuildKit `RawQuotes`; used to print RUN
    /// commands and to tell quoted heredoc markers apart).
    #[must_use]
    pub fn with_raw_quotes(mut self, on: bool) -> Lexer {
        self.raw_quotes = on;
        self
    }

    /// Keep escape characters outside quotes and `${...}` words (BuildKit `RawEscapes`).
    #[must_use]
    pub fn with_raw_escapes(mut self, on: bool) -> Lexer {
        self.raw_escapes = on;
        self
    }

    /// Leave references to unset variables as written, `$V`, `${V}`, `${V:-w}`...
    /// (BuildKit `SkipUnsetEnv`). `${V//p/r}` comes back as `${V/p/r}`, as in BuildKit.
    #[must_use]
    pub fn with_skip_unset_env(mut self, on: bool) -> Lexer {
        self.skip_unset_env = on;
        self
    }

    /// Treat quotes as ordinary characters (BuildKit `SkipProcessQuotes`; heredoc bodies).
    #[must_use]
    pub fn with_skip_process_quotes(mut self, on: bool) -> Lexer {
        self.skip_process_quotes = on;
        self
    }

    /// Expands one word (as for ENV/ARG/COPY/WORKDIR...): quotes removed, escapes processed,
    /// variables expanded. White space is kept.
    ///
    /// # Errors
    ///
    /// A [`ShellError`] for unterminated quotes or `${`, malformed or unsupported `${...}`
    /// forms, `${V?m}`/`${V:?m}` failing, bad patterns, and the size limits.
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<String, ShellError> {
        engine::run(self, word, env, false).map(|out| out.result)
    }

    /// Expands `word` and splits the result into words (BuildKit's `ProcessWords`).
    ///
    /// Splitting happens on white space that is unquoted and unescaped, including white
    /// space inside expanded variables; quoted and escaped text never splits, and `""`
    /// alone makes no word. `<<` keeps the blanks after it, so `<< EOF` is one word.
    ///
    /// # Errors
    ///
    /// As for [`Lexer::process_word`].
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ShellError> {
        engine::run(self, word, env, true).map(|out| out.words)
    }

    /// Like [`Lexer::process_word`], also returning the variable names referenced and
    /// whether each was set (for the UndefinedVar lint and for cache keys).
    ///
    /// # Errors
    ///
    /// As for [`Lexer::process_word`].
    pub fn process_word_with_matches(&self, word: &str, env: &dyn Env) -> Result<Expansion, ShellError> {
        engine::run(self, word, env, false).map(|out| Expansion {
            result: out.result,
            matched: out.matched,
            unmatched: out.unmatched,
        })
    }
}

#[cfg(test)]
mod tests;
