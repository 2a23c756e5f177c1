//! The character-by-character expansion engine behind [`super::Lexer`].
//!
//! Structure follows BuildKit's `shellWord`: one "read until this stop character" loop that
//! hands `$`, quotes and `<` to handlers, and a `${...}` handler that re-enters the loop for
//! its word part with a given escape mode.

use std::collections::BTreeSet;

use super::pattern;
use super::unicode::{is_digit, is_letter};
use super::{check_len, Env, Lexer, ShellError, MAX_NESTING};

/// Result of one run over a word.
pub(super) struct Output {
    pub(super) result: String,
    pub(super) words: Vec<String>,
    pub(super) matched: BTreeSet<String>,
    pub(super) unmatched: BTreeSet<String>,
}

/// Word splitting of the expanded text (BuildKit's `wordsStruct`).
///
/// Text from `$` expansions and unquoted characters splits on white space; quoted text and
/// escaped characters never split. Empty quotes (`""`) make no word.
struct Words {
    enabled: bool,
    words: Vec<String>,
    buf: String,
    in_word: bool,
}

impl Words {
    fn new(enabled: bool) -> Words {
        Words { enabled, words: Vec::new(), buf: String::new(), in_word: false }
    }

    /// An unquoted character: white space ends the current word.
    fn add_char(&mut self, c: char) {
        if !self.enabled {
            return;
        }
        if c.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }

    /// A character that never splits (escaped).
    fn add_raw_char(&mut self, c: char) {
        if self.enabled {
            self.buf.push(c);
            self.in_word = true;
        }
    }

    /// Expanded variable text: splits on white space.
    fn add_str(&mut self, s: &str) {
        if self.enabled {
            s.chars().for_each(|c| self.add_char(c));
        }
    }

    /// Quoted text: never splits.
    fn add_raw_str(&mut self, s: &str) {
        if self.enabled {
            self.buf.push_str(s);
            self.in_word = true;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(self.buf);
        }
        self.words
    }
}

/// What ends a [`Scan::until`] loop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The end of the input (the top level).
    Eof,
    /// This character, which is consumed (the `}` or `/` of a `${...}`).
    At(char),
}

/// State of one run over a word.
struct Scan<'a> {
    lexer: &'a Lexer,
    env: &'a dyn Env,
    src: Vec<char>,
    pos: usize,
    depth: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

/// Runs the lexer over `word`; `words` turns on word splitting.
pub(super) fn run(lexer: &Lexer, word: &str, env: &dyn Env, words: bool) -> Result<Output, ShellError> {
    check_len(word.len())?;
    let mut src: Vec<char> = word.chars().collect();
    // Go's text/scanner drops a byte order mark at the very start of its input.
    if src.first() == Some(&'\u{feff}') {
        src.remove(0);
    }
    let mut scan = Scan { lexer, env, src, pos: 0, depth: 0, matched: BTreeSet::new(), unmatched: BTreeSet::new() };
    let mut split = Words::new(words);
    let result = scan.until(Stop::Eof, lexer.raw_escapes, &mut split)?;
    Ok(Output { result, words: split.finish(), matched: scan.matched, unmatched: scan.unmatched })
}

impl Scan<'_> {
    fn peek(&self) -> Option<char> {
        self.src.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn at_eof(&self) -> bool {
        self.pos >= self.src.len()
    }

    /// Looks a variable up, recording whether it was set.
    fn lookup(&mut self, name: &str) -> Option<String> {
        match self.env.get(name) {
            Some(v) => {
                if !self.matched.contains(name) {
                    self.matched.insert(name.to_owned());
                }
                Some(v.to_owned())
            }
            None => {
                if !self.unmatched.contains(name) {
                    self.unmatched.insert(name.to_owned());
                }
                None
            }
        }
    }

    /// Processes input until `stop`. `raw` keeps escape characters in the output (used for
    /// pattern and replacement text, where the pattern matcher interprets them).
    fn until(&mut self, stop: Stop, raw: bool, words: &mut Words) -> Result<String, ShellError> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if stop == Stop::At(c) {
                self.pos += 1;
                return Ok(out);
            }
            let quotes = !self.lexer.skip_process_quotes;
            match c {
                '$' => {
                    let v = self.dollar()?;
                    words.add_str(&v);
                    out.push_str(&v);
                    check_len(out.len())?;
                }
                '<' => {
                    let v = self.heredoc_marker();
                    words.add_raw_str(&v);
                    out.push_str(&v);
                }
                '\'' if quotes => {
                    let v = self.single_quoted()?;
                    words.add_raw_str(&v);
                    out.push_str(&v);
                    check_len(out.len())?;
                }
                '"' if quotes => {
                    let v = self.double_quoted(raw)?;
                    words.add_raw_str(&v);
                    out.push_str(&v);
                    check_len(out.len())?;
                }
                c => {
                    self.pos += 1;
                    if c == self.lexer.escape {
                        if raw {
                            words.add_raw_char(c);
                            out.push(c);
                        }
                        // An escape at the very end is dropped.
                        let Some(e) = self.next() else { break };
                        words.add_raw_char(e);
                        out.push(e);
                    } else {
                        words.add_char(c);
                        out.push(c);
                    }
                }
            }
        }
        match stop {
            Stop::Eof => Ok(out),
            Stop::At('/') => Err(ShellError::MissingSlash),
            Stop::At(_) => Err(ShellError::MissingBrace),
        }
    }

    /// Reads the part of a `${...}` up to `stop`. Any failure that leaves us at the end of
    /// the input is reported as the missing delimiter, as BuildKit does.
    fn delimited(&mut self, stop: char, raw: bool) -> Result<String, ShellError> {
        self.until(Stop::At(stop), raw, &mut Words::new(false)).map_err(|e| {
            if !self.at_eof() {
                e
            } else if stop == '/' {
                ShellError::MissingSlash
            } else {
                ShellError::MissingBrace
            }
        })
    }

    /// `'...'`: everything literal, no escapes.
    fn single_quoted(&mut self) -> Result<String, ShellError> {
        let raw_quotes = self.lexer.raw_quotes;
        self.pos += 1;
        let mut out = String::new();
        if raw_quotes {
            out.push('\'');
        }
        loop {
            match self.next() {
                None => return Err(ShellError::UnterminatedSingleQuote),
                Some('\'') => {
                    if raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    /// `"..."`: `$` expands; the escape character escapes only `"`, `$` and itself and is
    /// kept literally before anything else.
    fn double_quoted(&mut self, raw: bool) -> Result<String, ShellError> {
        let raw_quotes = self.lexer.raw_quotes;
        let escape = self.lexer.escape;
        self.pos += 1;
        let mut out = String::new();
        if raw_quotes {
            out.push('"');
        }
        loop {
            match self.peek() {
                None => return Err(ShellError::UnterminatedDoubleQuote),
                Some('"') => {
                    self.pos += 1;
                    if raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let v = self.dollar()?;
                    out.push_str(&v);
                    check_len(out.len())?;
                }
                Some(mut c) => {
                    self.pos += 1;
                    if c == escape {
                        if raw {
                            out.push(c);
                        }
                        match self.peek() {
                            // Reported as an unterminated quote on the next turn.
                            None => continue,
                            Some(e) if e == '"' || e == '$' || e == escape => {
                                self.pos += 1;
                                c = e;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    /// `<` and `<<`: BuildKit keeps `<<` and the blanks after it together as one word so
    /// that `<< EOF` stays a single heredoc marker.
    fn heredoc_marker(&mut self) -> String {
        self.pos += 1;
        if self.peek() != Some('<') {
            return "<".to_owned();
        }
        self.pos += 1;
        let mut out = "<<".to_owned();
        while let Some(c @ (' ' | '\t' | '\r')) = self.peek() {
            out.push(c);
            self.pos += 1;
        }
        out
    }

    /// A variable name after `$`: a run of digits, one special parameter character, or
    /// letters, digits and `_` (Unicode letters and decimal digits, as Go classifies them).
    /// Empty if none of those follows.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && is_digit(c) {
                while let Some(d) = self.peek().filter(|d| is_digit(*d)) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                name.push(c);
                return name;
            }
            if !(is_letter(c) || is_digit(c) || c == '_') {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        name
    }

    /// `$NAME` or `${...}`, starting at the `$`.
    fn dollar(&mut self) -> Result<String, ShellError> {
        if self.depth >= MAX_NESTING {
            return Err(ShellError::TooDeep { limit: MAX_NESTING });
        }
        self.depth += 1;
        let result = self.dollar_inner();
        self.depth -= 1;
        result
    }

    fn dollar_inner(&mut self) -> Result<String, ShellError> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(ShellError::MissingBrace),
            Some('{' | '}' | ':') => return Err(ShellError::BadSubstitution),
            Some(_) => {}
        }
        let name = self.name();
        // BuildKit reports "unsupported modifier (\u{fffd})" here; a missing brace is clearer.
        let Some(op) = self.next() else {
            return Err(ShellError::MissingBrace);
        };
        match op {
            '}' => Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => self.modifier(name, op),
            '/' => self.substitution(name),
            other => Err(ShellError::UnsupportedModifier { modifier: other.to_string() }),
        }
    }

    /// `${NAME<op>WORD}` for `-`, `+`, `?`, `#`, `%`, optionally with a leading `:`; the
    /// scanner is just past `op`.
    fn modifier(&mut self, name: String, op: char) -> Result<String, ShellError> {
        let mut modifier = op.to_string();
        let (colon, op) = if op == ':' {
            // `${NAME:` at the end: BuildKit reads on and fails on the missing brace.
            let Some(op) = self.next() else {
                return Err(ShellError::MissingBrace);
            };
            modifier.push(op);
            (true, op)
        } else {
            (false, op)
        };
        let trim = op == '#' || op == '%';
        if colon && trim {
            return Err(ShellError::UnsupportedModifier { modifier });
        }
        // The word is read (and its own variables expanded) before NAME is looked up, and
        // before an unknown modifier after `:` is rejected.
        let word = self.delimited('}', trim)?;
        let value = self.lookup(&name);
        let Some(value) = value else {
            if self.lexer.skip_unset_env {
                return Ok(format!("${{{name}{modifier}{word}}}"));
            }
            return match op {
                '-' => Ok(word),
                '+' => Ok(String::new()),
                '?' => Err(ShellError::Unset { name, message: non_empty(word) }),
                '#' | '%' => trim_value(op, &word, ""),
                _ => Err(ShellError::UnsupportedModifier { modifier }),
            };
        };
        let null = colon && value.is_empty();
        match op {
            '-' if null => Ok(word),
            '-' => Ok(value),
            '+' if null => Ok(String::new()),
            '+' => Ok(word),
            '?' if null => Err(ShellError::Empty { name, message: non_empty(word) }),
            '?' => Ok(value),
            '#' | '%' => trim_value(op, &word, &value),
            _ => Err(ShellError::UnsupportedModifier { modifier }),
        }
    }

    /// `${NAME/PATTERN/REPLACEMENT}` and `${NAME//PATTERN/REPLACEMENT}`; the scanner is just
    /// past the first `/`. Both parts keep their escape characters for the matcher.
    fn substitution(&mut self, name: String) -> Result<String, ShellError> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let pat = self.delimited('/', true)?;
        let replacement = self.delimited('}', true)?;
        let value = match self.lookup(&name) {
            Some(v) => v,
            // BuildKit writes a single `/` back here, even for `//`.
            None if self.lexer.skip_unset_env => return Ok(format!("${{{name}/{pat}/{replacement}}}")),
            None => String::new(),
        };
        pattern::replace(&pat, &replacement, &value, all)
    }
}

/// `${V#p}`, `${V##p}`, `${V%p}`, `${V%%p}`: a doubled operator (the first character of
/// the expanded word) asks for the longest match.
fn trim_value(op: char, word: &str, value: &str) -> Result<String, ShellError> {
    let (greedy, pat) = match word.strip_prefix(op) {
        Some(rest) => (true, rest),
        None => (false, word),
    };
    if op == '%' {
        pattern::trim_suffix(pat, value, greedy)
    } else {
        pattern::trim_prefix(pat, value, greedy)
    }
}

fn non_empty(word: String) -> Option<String> {
    (!word.is_empty()).then_some(word)
}
