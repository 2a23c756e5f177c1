//! Splitting a joined instruction line into keyword, builder flags and the rest, and the
//! word-splitting helpers the per-instruction argument parsers share (BuildKit's
//! `split_command.go` and `parseWords`).

/// BuildKit's `reWhitespace`: `[\t\v\f\r ]+`.
pub(crate) fn is_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{0b}' | '\u{0c}' | '\r' | ' ')
}

/// Splits on runs of [`is_ws`] at most `limit` times (`None` = no limit), like Go's
/// `Regexp.Split(s, n)`.
pub(crate) fn split_ws(s: &str, limit: Option<usize>) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if limit.is_some_and(|n| out.len() + 1 >= n) {
            out.push(rest);
            return out;
        }
        match rest.find(is_ws) {
            Some(start) => {
                let tail = &rest[start..];
                let len = tail.find(|c: char| !is_ws(c)).unwrap_or(tail.len());
                out.push(&rest[..start]);
                rest = &tail[len..];
            }
            None => {
                out.push(rest);
                return out;
            }
        }
    }
}

/// Splits a logical line into `(keyword, flags, rest)`; `rest` is trimmed.
pub(crate) fn split_command(line: &str, escape: char) -> (String, Vec<String>, String) {
    let parts = split_ws(line.trim(), Some(2));
    let cmd = parts.first().copied().unwrap_or_default().to_owned();
    let (args, flags) = match parts.get(1) {
        Some(rest) => extract_builder_flags(rest, escape),
        None => (String::new(), Vec::new()),
    };
    (cmd, flags, args.trim().to_owned())
}

#[derive(PartialEq)]
enum Phase {
    Spaces,
    Word,
    Quote(char),
}

/// Takes the leading `--flag[=value]` words off `line`; returns the remaining text and the flags.
/// Quotes inside a flag are removed and the escape character escapes the next character.
fn extract_builder_flags(line: &str, escape: char) -> (String, Vec<String>) {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut blank_ok = false;
    let mut i = 0;
    while i <= chars.len() {
        let at_end = i == chars.len();
        let (pos, ch) = chars.get(i).copied().unwrap_or((line.len(), '\0'));
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            let next_is_dash = chars.get(i + 1).is_some_and(|&(_, c)| c == '-');
            if ch != '-' || !next_is_dash {
                return (line[pos..].to_owned(), words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        match phase {
            Phase::Word => {
                if ch.is_whitespace() {
                    if word == "--" {
                        return (line[pos..].to_owned(), words);
                    }
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    phase = Phase::Spaces;
                    blank_ok = false;
                    i += 1;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                    i += 1;
                    continue;
                }
                let mut c = ch;
                if ch == escape {
                    match chars.get(i + 1) {
                        None => {
                            i += 1;
                            continue;
                        }
                        Some(&(_, next)) => {
                            i += 1;
                            c = next;
                        }
                    }
                }
                word.push(c);
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                    i += 1;
                    continue;
                }
                let mut c = ch;
                if ch == escape {
                    match chars.get(i + 1) {
                        None => {
                            phase = Phase::Word;
                            i += 1;
                            continue;
                        }
                        Some(&(_, next)) => {
                            i += 1;
                            c = next;
                        }
                    }
                }
                word.push(c);
            }
            Phase::Spaces => {}
        }
        i += 1;
    }
    (String::new(), words)
}

/// Quote-aware word split that keeps quotes and escapes in the words (BuildKit's `parseWords`,
/// used by `ENV`, `LABEL` and `ARG`).
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut blank_ok = false;
    let mut i = 0;
    while i <= chars.len() {
        let at_end = i == chars.len();
        let ch = chars.get(i).copied().unwrap_or('\0');
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        match phase {
            Phase::Word => {
                if ch.is_whitespace() {
                    phase = Phase::Spaces;
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    i += 1;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                }
                let mut c = ch;
                if ch == escape {
                    match chars.get(i + 1) {
                        // An escape at the very end is dropped.
                        None => {
                            i += 1;
                            continue;
                        }
                        Some(&next) => {
                            word.push(ch);
                            i += 1;
                            c = next;
                        }
                    }
                }
                word.push(c);
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                }
                let mut c = ch;
                // Inside single quotes the escape character is literal.
                if ch == escape && q != '\'' {
                    match chars.get(i + 1) {
                        None => {
                            phase = Phase::Word;
                            i += 1;
                            continue;
                        }
                        Some(&next) => {
                            word.push(ch);
                            i += 1;
                            c = next;
                        }
                    }
                }
                word.push(c);
            }
            Phase::Spaces => {}
        }
        i += 1;
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! words {
        ($in:expr, [$($w:expr),*]) => {
            assert_eq!(parse_words($in, '\\'), vec![$($w.to_string()),*] as Vec<String>, "input {:?}", $in);
        };
    }

    macro_rules! flags {
        ($in:expr, $rest:expr, [$($w:expr),*]) => {
            assert_eq!(extract_builder_flags($in, '\\'), ($rest.to_string(), vec![$($w.to_string()),*] as Vec<String>), "input {:?}", $in);
        };
    }

    #[test]
    fn words_as_buildkit() {
        words!("foo", ["foo"]);
        words!("foo bar", ["foo", "bar"]);
        words!("foo\\ bar", ["foo\\ bar"]);
        words!("foo=bar", ["foo=bar"]);
        words!("foo bar 'abc xyz'", ["foo", "bar", "'abc xyz'"]);
        words!("foo bar \"abc xyz\"", ["foo", "bar", "\"abc xyz\""]);
        words!("àöû", ["àöû"]);
        words!("föo bàr \"âbc xÿz\"", ["föo", "bàr", "\"âbc xÿz\""]);
        words!("a\\", ["a"]);
        words!("'a", ["'a"]);
        words!("\"a\\", ["\"a"]);
        words!("", []);
        words!("x=''", ["x=''"]);
    }

    #[test]
    fn flags_as_buildkit() {
        flags!("--from=a b c", "b c", ["--from=a"]);
        flags!("--x --y=\"a b\" rest", "rest", ["--x", "--y=a b"]);
        flags!("-- --not-a-flag", " --not-a-flag", []);
        flags!("--only", "", ["--only"]);
        flags!("-x", "-x", []);
        flags!("--a\\", "", ["--a"]);
        flags!("--a='", "", ["--a="]);
        flags!("", "", []);
    }

    #[test]
    fn split_ws_limits() {
        assert_eq!(split_ws("a  b\tc", None), vec!["a", "b", "c"]);
        assert_eq!(split_ws("a  b\tc", Some(2)), vec!["a", "b\tc"]);
        assert_eq!(split_ws("a", Some(2)), vec!["a"]);
        assert_eq!(split_ws("", None), vec![""]);
        assert_eq!(split_command("RUN --x=1 echo hi ", '\\'), ("RUN".into(), vec!["--x=1".into()], "echo hi".into()));
    }
}
