//! Dockerfile text → [`Node`]s, following BuildKit's parser (`frontend/dockerfile/parser`) quirk
//! for quirk: parser directives, line continuations with the active escape character, comments
//! and blank lines inside continuations, JSON (exec) form with fallback to shell form, heredocs.

mod args;
mod directives;
mod dump;
mod heredoc;
mod node;
mod split;

pub use directives::Directive;
pub use dump::{dump, go_quote};
pub use heredoc::{chomp_heredoc_content, parse_heredoc};
pub use node::{Args, Heredoc, KeyValue, Node, Span};

use std::fmt;

use directives::DirectiveParser;

/// A syntax error, with the lines it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Lines of the offending instruction (or the single offending line).
    pub span: Span,
    /// What is wrong.
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(line: usize, message: impl Into<String>) -> ParseError {
        ParseError { span: Span::new(line, line), message: message.into() }
    }

    fn lines(start: usize, end: usize, message: impl Into<String>) -> ParseError {
        ParseError { span: Span::new(start, end), message: message.into() }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.span, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Something suspicious the parser accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseWarning {
    /// Line the warning is about.
    pub line: usize,
    /// Short description.
    pub message: String,
}

/// The parse tree and what was learned on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// One node per instruction, in order.
    pub nodes: Vec<Node>,
    /// The parser directives at the top of the file.
    pub directives: Vec<Directive>,
    /// The escape character in effect (`\` or `` ` ``).
    pub escape: char,
    /// Warnings (empty continuation lines).
    pub warnings: Vec<ParseWarning>,
}

/// Instructions that may carry heredocs (directly, or nested in `ONBUILD`).
const HEREDOC_INSTRUCTIONS: [&str; 3] = ["add", "copy", "run"];

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

/// BuildKit's line-continuation regexp `([^E])E[ \t]*$|^E[ \t]*$` for escape `E`: returns the
/// line without the escape (and the blanks after it) and whether the line ends the instruction.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    let Some(before) = trimmed.strip_suffix(escape) else {
        return (line, true);
    };
    match before.chars().next_back() {
        // An escaped escape character (`\\`) does not continue the line.
        Some(c) if c == escape => (line, true),
        _ => (before, false),
    }
}

/// Parses a Dockerfile. Invalid UTF-8 is replaced by U+FFFD.
pub fn parse(source: &[u8]) -> Result<Parsed, ParseError> {
    let text = String::from_utf8_lossy(source);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut p =
        Parser { lines: &lines, next: 0, escape: '\\', directives: DirectiveParser::default(), warnings: Vec::new() };
    let nodes = p.run()?;
    Ok(Parsed { nodes, escape: p.escape, warnings: p.warnings, directives: p.directives.into_directives() })
}

struct Parser<'a> {
    lines: &'a [&'a str],
    /// Index of the next physical line; equals the 1-based number of the last line read.
    next: usize,
    escape: char,
    directives: DirectiveParser,
    warnings: Vec<ParseWarning>,
}

impl<'a> Parser<'a> {
    fn read(&mut self) -> Option<&'a str> {
        let line = self.lines.get(self.next).copied()?;
        self.next += 1;
        Some(line)
    }

    /// Newline removal, optional left trim, directive detection, comment removal.
    fn process_line(&mut self, raw: &'a str, strip_left: bool) -> Result<(&'a str, bool), ParseError> {
        let mut token = trim_newline(raw);
        if strip_left {
            token = token.trim_start();
        }
        let line = self.next;
        let mut found = false;
        if let Some(d) = self.directives.parse_line(token)? {
            found = true;
            if d.name == "escape" {
                self.escape = match d.value.as_str() {
                    "`" => '`',
                    "\\" => '\\',
                    other => {
                        return Err(ParseError::new(
                            line,
                            format!("invalid escape token '{other}' does not match ` or \\"),
                        ))
                    }
                };
            }
        }
        Ok((if is_comment(token) { "" } else { token }, found))
    }

    fn run(&mut self) -> Result<Vec<Node>, ParseError> {
        let mut nodes = Vec::new();
        let mut comments: Vec<String> = Vec::new();
        while let Some(raw) = self.read() {
            if is_comment(raw) {
                let mut chars = raw.chars();
                chars.next();
                let comment = chars.as_str().trim();
                if comment.is_empty() {
                    comments.clear();
                } else {
                    comments.push(comment.to_owned());
                }
            }
            let (token, is_directive) = self.process_line(raw, true)?;
            if is_directive {
                comments.pop();
            }
            let start_line = self.next;
            let (first, mut ended) = trim_continuation(token, self.escape);
            if ended && first.is_empty() {
                continue;
            }
            let mut line = first.to_owned();
            let mut empty_continuation = false;
            while !ended {
                let Some(raw) = self.read() else { break };
                let (token, _) = self.process_line(raw, false)?;
                if is_comment(raw) {
                    continue;
                }
                if token.trim_start().is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (part, end) = trim_continuation(token, self.escape);
                ended = end;
                line.push_str(part);
            }
            if empty_continuation {
                self.warnings.push(ParseWarning {
                    line: self.next,
                    message: format!("Empty continuation line found in: {line}"),
                });
            }
            let mut node = node_from_line(&line, self.escape, std::mem::take(&mut comments), 0)
                .map_err(|m| ParseError::lines(start_line, self.next, m))?;
            if can_contain_heredoc(&node) && line.contains("<<") {
                self.read_heredocs(&mut node, &line, start_line)?;
            }
            node.span = Span::new(start_line, self.next);
            if let Args::Nested(child) = &mut node.args {
                child.span = node.span;
            }
            nodes.push(node);
        }
        if nodes.is_empty() {
            return Err(ParseError::new(self.next.max(1), "file with no instructions"));
        }
        Ok(nodes)
    }

    fn read_heredocs(&mut self, node: &mut Node, line: &str, start: usize) -> Result<(), ParseError> {
        let docs = heredoc::heredocs_from_line(line).map_err(|m| ParseError::lines(start, self.next, m))?;
        for mut doc in docs {
            let mut terminated = false;
            while let Some(raw) = self.read() {
                let mut candidate = trim_newline(raw);
                if doc.chomp {
                    candidate = candidate.trim_start_matches('\t');
                }
                if candidate == doc.name {
                    terminated = true;
                    break;
                }
                doc.content.push_str(raw);
            }
            if !terminated {
                return Err(ParseError::lines(
                    start,
                    self.next,
                    format!("unterminated heredoc: no line \"{}\" ends it", doc.name),
                ));
            }
            node.heredocs.push(doc);
        }
        Ok(())
    }
}

fn can_contain_heredoc(node: &Node) -> bool {
    let inner = match &node.args {
        Args::Nested(child) if node.keyword_lower == "onbuild" => child,
        _ => node,
    };
    HEREDOC_INSTRUCTIONS.contains(&inner.keyword_lower.as_str()) && !inner.json
}

/// How many `ONBUILD`s may nest. BuildKit has no limit, but only one level is ever valid and
/// unbounded recursion would let a hostile line exhaust the stack.
const MAX_ONBUILD_NESTING: usize = 8;

/// Builds the node for one logical line (keyword, flags, per-instruction arguments).
fn node_from_line(line: &str, escape: char, comments: Vec<String>, depth: usize) -> Result<Node, String> {
    let (keyword, flags, rest) = split::split_command(line, escape);
    let keyword_lower = keyword.to_lowercase();
    let parsed = match keyword_lower.as_str() {
        "add" | "copy" | "volume" => args::maybe_json_to_list(&rest)?,
        "arg" => args::name_or_name_val(&rest, escape),
        "cmd" | "entrypoint" | "run" | "shell" => args::maybe_json(&rest)?,
        "env" => args::name_val(&rest, "ENV", escape)?,
        "label" => args::name_val(&rest, "LABEL", escape)?,
        "expose" | "from" => args::whitespace_delimited(&rest),
        "healthcheck" => args::health_config(&rest)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => args::single(&rest),
        "onbuild" => {
            if rest.is_empty() {
                args::Parsed { args: Args::Words(Vec::new()), json: false }
            } else if depth >= MAX_ONBUILD_NESTING {
                return Err("ONBUILD nested too deeply".to_owned());
            } else {
                let child = node_from_line(&rest, escape, Vec::new(), depth + 1)?;
                args::Parsed { args: Args::Nested(Box::new(child)), json: false }
            }
        }
        _ => args::Parsed { args: Args::Ignored, json: false },
    };
    Ok(Node {
        keyword,
        keyword_lower,
        flags,
        args: parsed.args,
        json: parsed.json,
        heredocs: Vec::new(),
        original: line.to_owned(),
        span: Span::new(0, 0),
        comments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Parsed, ParseError> {
        parse(s.as_bytes())
    }

    fn spans(s: &str) -> Vec<(usize, usize)> {
        parse_str(s).unwrap().nodes.iter().map(|n| (n.span.start_line, n.span.end_line)).collect()
    }

    #[test]
    fn continuation_rules() {
        assert_eq!(trim_continuation("a \\", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a\\  \t", '\\'), ("a", false));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("a\\\\", '\\'), ("a\\\\", true));
        assert_eq!(trim_continuation("a `", '`'), ("a ", false));
        assert_eq!(trim_continuation("a \\", '`'), ("a \\", true));
    }

    #[test]
    fn lines_and_continuations() {
        assert_eq!(spans("FROM a\nRUN x \\\n  # c\n\n  y\nCMD z"), vec![(1, 1), (2, 5), (6, 6)]);
        let p = parse_str("FROM a\nRUN x \\\n\n  y\n").unwrap();
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(p.nodes[1].args.words(), ["x   y"]);
    }

    #[test]
    fn directives_and_escape() {
        let p = parse_str("# syntax=x\n# ESCAPE=`\nFROM a\nRUN b `\n c\n").unwrap();
        assert_eq!(p.escape, '`');
        assert_eq!(p.directives.len(), 2);
        assert_eq!(p.nodes[1].args.words(), ["b  c"]);
        let p = parse_str("FROM a\n# escape=`\nRUN b `\n").unwrap();
        assert_eq!(p.escape, '\\');
        assert!(parse_str("# escape=x\nFROM a").is_err());
        assert!(parse_str("# escape=`\n# escape=`\nFROM a").is_err());
    }

    #[test]
    fn heredocs() {
        let p = parse_str("FROM a\nRUN <<EOF bash\necho $x\nEOF\nCOPY <<-A <<B /d/\n\ta\n\tA\nb\nB\nRUN x").unwrap();
        let run = &p.nodes[1];
        assert_eq!(run.span, Span::new(2, 4));
        assert_eq!(run.heredocs[0].content, "echo $x\n");
        let copy = &p.nodes[2];
        assert_eq!(copy.span, Span::new(5, 9));
        assert_eq!(copy.heredocs.len(), 2);
        assert_eq!(copy.heredocs[0].content, "\ta\n");
        assert_eq!(copy.heredocs[1].content, "b\n");
        assert_eq!(p.nodes[3].span, Span::new(10, 10));
        assert!(parse_str("FROM a\nRUN <<EOF\nx\n").is_err());
        // JSON form and other instructions never take heredocs.
        assert!(parse_str("FROM a\nRUN [\"<<EOF\"]\nCMD <<EOF\n").unwrap().nodes[1].heredocs.is_empty());
        let p = parse_str("FROM a\nONBUILD RUN <<EOF\nhi\nEOF\n").unwrap();
        assert_eq!(p.nodes[1].heredocs.len(), 1);
    }

    #[test]
    fn shapes() {
        let p = parse_str("FROM a\nONBUILD --x RUN [\"a\"]\nFOO bar\nonbuild\n").unwrap();
        assert_eq!(dump(&p.nodes), "(from \"a\")\n(onbuild [\"--x\"] (run \"a\"))\n(foo \"\")\n(onbuild)\n");
    }

    #[test]
    fn empty_files_fail() {
        assert!(parse_str("").is_err());
        assert!(parse_str("# a\n\n   \n").is_err());
        assert!(parse_str("\u{feff}FROM a").is_ok());
        assert!(parse_str(&format!("FROM a\n{}RUN x", "ONBUILD ".repeat(10_000))).is_err());
    }
}
