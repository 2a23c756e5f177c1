//! Parser directives (`# syntax=`, `# escape=`, `# check=`): comment lines at the very top of the
//! file, before any instruction, blank line or other comment (BuildKit's `DirectiveParser`).

use super::ParseError;

/// A parser directive found at the top of the Dockerfile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    /// Lowercased name: `syntax`, `escape` or `check`.
    pub name: String,
    /// Value, surrounding spaces removed.
    pub value: String,
    /// 1-based line.
    pub line: usize,
}

const VALID: [&str; 3] = ["syntax", "escape", "check"];

/// Recognizes directive lines until the first line that is not one.
#[derive(Debug, Default)]
pub(crate) struct DirectiveParser {
    line: usize,
    done: bool,
    found: Vec<Directive>,
}

impl DirectiveParser {
    /// Looks at the next physical line (newline and leading whitespace already removed).
    /// Returns the directive when the line is one.
    pub(crate) fn parse_line(&mut self, line: &str) -> Result<Option<&Directive>, ParseError> {
        self.line += 1;
        if self.done {
            return Ok(None);
        }
        let Some(rest) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(None);
        };
        let Some((name, value)) = split_directive(rest.trim_start()) else {
            self.done = true;
            return Ok(None);
        };
        let name = name.to_ascii_lowercase();
        if !VALID.contains(&name.as_str()) {
            self.done = true;
            return Ok(None);
        }
        if self.found.iter().any(|d| d.name == name) {
            return Err(ParseError::new(self.line, format!("only one {name} parser directive can be used")));
        }
        self.found.push(Directive { name, value: value.to_owned(), line: self.line });
        Ok(self.found.last())
    }

    /// The directives found so far.
    pub(crate) fn into_directives(self) -> Vec<Directive> {
        self.found
    }
}

/// Matches `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`.
fn split_directive(s: &str) -> Option<(&str, &str)> {
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, c)) if c.is_ascii_alphabetic() => {}
        _ => return None,
    }
    let name_end = s.char_indices().find(|(_, c)| !c.is_ascii_alphanumeric()).map_or(s.len(), |(i, _)| i);
    let (name, rest) = s.split_at(name_end);
    let rest = rest.trim_start().strip_prefix('=')?;
    let value = rest.trim();
    if value.is_empty() {
        return None;
    }
    Some((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! split {
        ($in:expr, $out:expr) => {
            assert_eq!(split_directive($in), $out, "input {:?}", $in);
        };
    }

    #[test]
    fn directive_syntax() {
        split!("escape=`", Some(("escape", "`")));
        split!("escape = ` ", Some(("escape", "`")));
        split!("syntax=docker/dockerfile:1 ", Some(("syntax", "docker/dockerfile:1")));
        split!("ESCAPE=\\", Some(("ESCAPE", "\\")));
        split!("1x=y", None);
        split!("escape=", None);
        split!("escape =   ", None);
        split!("escape", None);
        split!("", None);
    }

    #[test]
    fn stops_at_first_non_directive() {
        let mut p = DirectiveParser::default();
        assert!(p.parse_line("# syntax=a").unwrap().is_some());
        assert!(p.parse_line("# hello").unwrap().is_none());
        assert!(p.parse_line("# escape=`").unwrap().is_none());
        assert_eq!(p.into_directives().len(), 1);
    }

    #[test]
    fn duplicate_is_error() {
        let mut p = DirectiveParser::default();
        p.parse_line("# escape=`").unwrap();
        let err = p.parse_line("#ESCAPE=\\").unwrap_err();
        assert_eq!(err.span.start_line, 2);
    }
}
