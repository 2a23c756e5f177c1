//! Shell patterns for `${V#p}`, `${V%p}` and `${V/p/r}`, matched the way BuildKit does it.
//!
//! BuildKit turns the pattern into a Go regular expression and lets Go's leftmost-first
//! engine match it. The consequences we reproduce here:
//! - `*` is `.*` (greedy: `##`, `%%`, `/`) or `.*?` (shortest: `#`, `%`), `?` is `.`, and
//!   `.` never matches `\n`, so wildcards do not cross newlines.
//! - there are no bracket expressions: `[ab]` is three literal characters.
//! - `\*`, `\?` and `\\` are literal; `\}` and `\/` drop the backslash; any other `\x`
//!   (and a trailing `\`) is an error. The backslash is meant here even when the
//!   Dockerfile's escape character is a backtick.
//! - a leading U+FEFF (byte order mark) is dropped, as Go's `text/scanner` does.
//! - `${V%p}` matches the reversed pattern against the reversed value.
//! - `${V//p/r}` expands Go replacement templates in `r`: `$0`/`${0}` is the match, `$$`
//!   is `$`, any other `$name`/`${name}` is empty.
//!
//! Instead of backtracking we compute, for every (pattern position, value position), the end
//! of the first match in priority order; that is what a leftmost-first engine reports, and
//! it takes O(pattern × value) time with no recursion.

use super::unicode::{is_digit, is_letter};
use super::{check_len, ShellError, MAX_MATCH_WORK};

/// Why a `${V#p}`-style pattern could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// A backslash escapes something other than `*`, `?`, `\`, `}` or `/`.
    #[error("invalid escape '\\{escaped}'")]
    InvalidEscape {
        /// The escaped character.
        escaped: char,
    },
    /// The pattern ends in a lone backslash.
    #[error("invalid escape '\\' at end of pattern")]
    TrailingEscape,
}

/// One element of a compiled pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// Exactly this character.
    Lit(char),
    /// Any character except `\n` (`?`).
    Any,
    /// Any run of characters without `\n` (`*`).
    Star,
}

/// A compiled shell pattern.
#[derive(Debug, Clone)]
struct Pattern {
    toks: Vec<Tok>,
    /// `*` prefers the longest run (`.*`) rather than the shortest (`.*?`).
    greedy: bool,
}

impl Pattern {
    /// Compiles `pattern` (already variable-expanded). Runs of `*` collapse into one, which
    /// matches the same text with the same preference.
    fn compile(pattern: &[char], greedy: bool) -> Result<Pattern, PatternError> {
        let pattern = match pattern.split_first() {
            Some(('\u{feff}', rest)) => rest,
            _ => pattern,
        };
        let mut toks = Vec::with_capacity(pattern.len());
        let mut it = pattern.iter().copied().peekable();
        while let Some(c) = it.next() {
            match c {
                '*' if toks.last() == Some(&Tok::Star) => {}
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::Any),
                '\\' => match it.peek().copied() {
                    // The escape only kept `}` or `/` from ending the ${} part.
                    Some('}' | '/') => {}
                    Some(e @ ('*' | '?' | '\\')) => {
                        it.next();
                        toks.push(Tok::Lit(e));
                    }
                    Some(escaped) => return Err(PatternError::InvalidEscape { escaped }),
                    None => return Err(PatternError::TrailingEscape),
                },
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok(Pattern { toks, greedy })
    }

    /// For every start position `i` in `value`, the end of the match that a leftmost-first
    /// engine reports when the match must start at `i` (or `None`).
    fn match_ends(&self, value: &[char]) -> Result<Vec<Option<usize>>, ShellError> {
        let n = value.len();
        let work = self.toks.len().saturating_mul(n.saturating_add(1));
        if work > MAX_MATCH_WORK {
            return Err(ShellError::PatternTooExpensive { pattern_len: self.toks.len(), value_len: n });
        }
        // Row for "pattern fully consumed": the match ends where we are.
        let mut next: Vec<Option<usize>> = (0..=n).map(Some).collect();
        let mut cur: Vec<Option<usize>> = vec![None; n + 1];
        for tok in self.toks.iter().rev() {
            for i in (0..=n).rev() {
                let ch = value.get(i).copied();
                let step = |row: &[Option<usize>]| row.get(i + 1).copied().flatten();
                let ends = match *tok {
                    Tok::Lit(c) if ch == Some(c) => step(&next),
                    Tok::Lit(_) => None,
                    Tok::Any if ch.is_some_and(|c| c != '\n') => step(&next),
                    Tok::Any => None,
                    Tok::Star => {
                        let here = next.get(i).copied().flatten();
                        let longer = if ch.is_some_and(|c| c != '\n') { step(&cur) } else { None };
                        if self.greedy {
                            longer.or(here)
                        } else {
                            here.or(longer)
                        }
                    }
                };
                if let Some(slot) = cur.get_mut(i) {
                    *slot = ends;
                }
            }
            std::mem::swap(&mut next, &mut cur);
        }
        Ok(next)
    }

    /// Removes the prefix that the pattern matches at the start of `value`.
    fn trim_prefix_chars(&self, value: &[char]) -> Result<Vec<char>, ShellError> {
        let end = self.match_ends(value)?.first().copied().flatten().unwrap_or(0);
        Ok(value.get(end..).unwrap_or_default().to_vec())
    }
}

/// Compiles `pattern`, naming it in the error.
fn compile(pattern: &str, chars: &[char], greedy: bool) -> Result<Pattern, ShellError> {
    Pattern::compile(chars, greedy).map_err(|reason| ShellError::InvalidPattern { pattern: pattern.to_owned(), reason })
}

/// `${V#p}` / `${V##p}`: removes the shortest (longest if `greedy`) prefix matching `pattern`.
pub(super) fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, ShellError> {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    let out = compile(pattern, &p, greedy)?.trim_prefix_chars(&v)?;
    Ok(out.into_iter().collect())
}

/// `${V%p}` / `${V%%p}`: removes the shortest (longest if `greedy`) suffix matching
/// `pattern`, by trimming the reversed pattern from the reversed value.
pub(super) fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, ShellError> {
    let p = reverse_pattern(pattern);
    let v: Vec<char> = value.chars().rev().collect();
    let mut out = compile(pattern, &p, greedy)?.trim_prefix_chars(&v)?;
    out.reverse();
    Ok(out.into_iter().collect())
}

/// Reverses a pattern keeping each `\x` escape pair in order (`a\*c` → `c\*a`).
fn reverse_pattern(pattern: &str) -> Vec<char> {
    let mut units: Vec<(char, Option<char>)> = Vec::new();
    let mut it = pattern.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\\' {
            if let Some(e) = it.next() {
                units.push(('\\', Some(e)));
                continue;
            }
        }
        units.push((c, None));
    }
    units.iter().rev().flat_map(|&(a, b)| std::iter::once(a).chain(b)).collect()
}

/// `${V/p/r}` (first match, `r` inserted literally) and `${V//p/r}` (every match, `r` is a Go
/// replacement template). Fails rather than build a result over [`MAX_EXPANSION_LEN`](super::MAX_EXPANSION_LEN).
pub(super) fn replace(pattern: &str, replacement: &str, value: &str, all: bool) -> Result<String, ShellError> {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    let ends = compile(pattern, &p, true)?.match_ends(&v)?;
    let slice = |a: usize, b: usize| -> String { v.get(a..b).unwrap_or_default().iter().collect() };
    let find_from =
        |from: usize| ends.iter().enumerate().skip(from).find_map(|(start, end)| end.map(|end| (start, end)));
    if !all {
        return Ok(match find_from(0) {
            Some((start, end)) => {
                let mut out = slice(0, start);
                out.push_str(replacement);
                out.push_str(&slice(end, v.len()));
                out
            }
            None => value.to_owned(),
        });
    }
    // Go's Regexp.ReplaceAllString loop, in character positions.
    let template = parse_template(replacement);
    let n = v.len();
    let mut out = String::with_capacity(value.len());
    let mut last_end = 0;
    let mut search = 0;
    while search <= n {
        let Some((start, end)) = find_from(search) else {
            break;
        };
        out.push_str(&slice(last_end, start));
        // No replacement for an empty match right after the previous match.
        if end > last_end || start == 0 {
            expand_template(&template, &slice(start, end), &mut out)?;
        }
        last_end = end;
        let width = usize::from(search < n);
        search = if search + width > end {
            search + width
        } else if search + 1 > end {
            search + 1
        } else {
            end
        };
    }
    out.push_str(&slice(last_end, n));
    Ok(out)
}

/// A piece of a parsed replacement template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// Literal text.
    Text(String),
    /// The whole match (`$0`, `${0}`).
    Match,
}

/// Parses a replacement template the way Go's `Regexp.Expand` reads it, for a regexp without
/// capture groups: `$$` → `$`, `$0`/`${0}` → the whole match, other well-formed
/// `$name`/`${name}` → nothing, a malformed `$` stays literal.
fn parse_template(template: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    let mut text = String::new();
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        text.push_str(rest.get(..at).unwrap_or_default());
        rest = rest.get(at + 1..).unwrap_or_default();
        if let Some(after) = rest.strip_prefix('$') {
            text.push('$');
            rest = after;
            continue;
        }
        match template_name(rest) {
            Some((name, after)) => {
                if name == "0" {
                    segs.push(Seg::Text(std::mem::take(&mut text)));
                    segs.push(Seg::Match);
                }
                rest = after;
            }
            None => text.push('$'),
        }
    }
    text.push_str(rest);
    segs.push(Seg::Text(text));
    segs.retain(|s| *s != Seg::Text(String::new()));
    segs
}

/// Appends the template with `matched` filled in, failing once `out` grows too long.
fn expand_template(segs: &[Seg], matched: &str, out: &mut String) -> Result<(), ShellError> {
    for seg in segs {
        match seg {
            Seg::Text(t) => out.push_str(t),
            Seg::Match => out.push_str(matched),
        }
        check_len(out.len())?;
    }
    Ok(())
}

/// Reads the group name after a `$` in a replacement template, with its optional braces.
fn template_name(s: &str) -> Option<(&str, &str)> {
    let (braced, body) = match s.strip_prefix('{') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let len =
        body.char_indices().find(|&(_, c)| !(is_letter(c) || is_digit(c) || c == '_')).map_or(body.len(), |(i, _)| i);
    if len == 0 {
        return None;
    }
    let (name, after) = body.split_at_checked(len)?;
    if braced {
        Some((name, after.strip_prefix('}')?))
    } else {
        Some((name, after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! prefix {
        ($p:expr, $v:expr, $greedy:expr => $want:expr) => {
            assert_eq!(trim_prefix($p, $v, $greedy).as_deref(), Ok($want), "#{} on {:?}", $p, $v)
        };
    }
    macro_rules! suffix {
        ($p:expr, $v:expr, $greedy:expr => $want:expr) => {
            assert_eq!(trim_suffix($p, $v, $greedy).as_deref(), Ok($want), "%{} on {:?}", $p, $v)
        };
    }
    macro_rules! repl {
        ($p:expr, $r:expr, $v:expr, $all:expr => $want:expr) => {
            assert_eq!(replace($p, $r, $v, $all).as_deref(), Ok($want), "/{}/{} on {:?}", $p, $r, $v)
        };
    }

    #[test]
    fn prefixes() {
        prefix!("*/", "a/b/c", false => "b/c");
        prefix!("*/", "a/b/c", true => "c");
        prefix!("*", "abc", false => "abc");
        prefix!("*", "abc", true => "");
        prefix!("*x*y", "xxyy", false => "y");
        prefix!("?\\?", "???y", false => "?y");
        prefix!("[ab]", "[ab]c", true => "c");
        prefix!("[ab]", "ac", true => "ac");
        prefix!("()[]{\\}^$.\\*\\?|\\\\", "()[]{}^$.*?|\\x", false => "x");
        prefix!("*", "a\nb", true => "\nb");
        prefix!("a*", "ab\ncd", true => "\ncd");
        prefix!("\u{feff}a", "ab", false => "b");
        prefix!("", "abc", true => "abc");
        prefix!("x", "", true => "");
        prefix!("*a*", "bab", true => "");
    }

    #[test]
    fn suffixes() {
        suffix!(".*", "f.tar.gz", false => "f.tar");
        suffix!(".*", "f.tar.gz", true => "f");
        suffix!("\\**", "xx**", true => "xx");
        suffix!("\\**\\*", "a***yy*", true => "a");
        suffix!("x", "xxyy", false => "xxyy");
        suffix!("🚀*", "👽🚀🖖", false => "👽");
    }

    #[test]
    fn replacements() {
        repl!("\\*/", ".", "/foo*/*/*.txt", false => "/foo.*/*.txt");
        repl!("\\*/", ".", "/foo*/*/*.txt", true => "/foo..*.txt");
        repl!("/?/", "/", "/a/foo/b/c.txt", true => "/foo/c.txt");
        repl!("", "ww", "xxyy", false => "wwxxyy");
        repl!("", "-", "abc", true => "-a-b-c-");
        repl!("", "-", "", true => "-");
        repl!("b*", "-", "abc", true => "a-");
        repl!("?", "-", "ab", true => "--");
        repl!("*", "-", "ab\ncd", true => "-\n-");
        repl!("a", "<$0>", "banana", true => "b<a>n<a>n<a>");
        repl!("a", "<${0}|$1|$x|$$|${x|$>", "ba", true => "b<a|||$|${x|$>");
        repl!("a", "<$0>", "banana", false => "b<$0>nana");
        repl!("#a", "X", "a#ab", false => "aXb");
        repl!("%a", "X", "a%ab", true => "aXb");
    }

    #[test]
    fn bad_escapes() {
        let reason = |r: Result<String, ShellError>| match r {
            Err(ShellError::InvalidPattern { reason, .. }) => Some(reason),
            _ => None,
        };
        let bad = |escaped| Some(PatternError::InvalidEscape { escaped });
        assert_eq!(reason(trim_prefix("\\x", "", true)), bad('x'));
        assert_eq!(reason(trim_prefix("\\", "", true)), Some(PatternError::TrailingEscape));
        assert_eq!(reason(trim_prefix("\\\\\\", "", true)), Some(PatternError::TrailingEscape));
        assert_eq!(reason(trim_suffix("ab\\", "", true)), bad('b'));
        assert_eq!(reason(replace("a\\}\\/\\q", "", "", true)), bad('q'));
    }

    #[test]
    fn limits() {
        let big = "a".repeat(1 << 16);
        let star_pattern = "*a".repeat(1 << 15);
        assert!(matches!(trim_prefix(&star_pattern, &big, true), Err(ShellError::PatternTooExpensive { .. })));
        // Runs of stars collapse and do not count against the budget.
        assert_eq!(trim_prefix(&"*".repeat(1 << 20), &big, true).as_deref(), Ok(""));
        let huge_template = "$0".repeat(300);
        assert!(matches!(replace("*", &huge_template, &big, true), Err(ShellError::TooLong { .. })));
    }

    #[test]
    fn reversal_keeps_escape_pairs() {
        let s = |v: Vec<char>| v.into_iter().collect::<String>();
        assert_eq!(s(reverse_pattern("a\\*c")), "c\\*a");
        assert_eq!(s(reverse_pattern("\\\\\\ab")), "b\\a\\\\");
        assert_eq!(s(reverse_pattern("ab\\")), "\\ba");
        assert_eq!(s(reverse_pattern("👽\\🚀🖖")), "🖖\\🚀👽");
        assert_eq!(s(reverse_pattern("\\\\b")), "b\\\\");
    }
}
