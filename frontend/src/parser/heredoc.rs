//! Heredoc detection on an instruction line (`RUN <<EOF`, `COPY <<-"A" <<B /dst/`), as
//! BuildKit's `heredocsFromLine` and `ParseHeredoc`.

use super::node::Heredoc;

/// Splits `line` into words on unquoted whitespace, keeping quotes, escapes and `${...}`
/// verbatim (BuildKit lexes with raw quotes, raw escapes and unset variables kept).
fn raw_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => {
                in_word = true;
                word.push(c);
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            '\'' | '"' => {
                in_word = true;
                word.push(c);
                while let Some(n) = chars.next() {
                    word.push(n);
                    if n == c {
                        break;
                    }
                    if n == '\\' && c == '"' {
                        if let Some(e) = chars.next() {
                            word.push(e);
                        }
                    }
                }
            }
            '$' if chars.peek() == Some(&'{') => {
                in_word = true;
                word.push(c);
                for n in chars.by_ref() {
                    word.push(n);
                    if n == '}' {
                        break;
                    }
                }
            }
            _ => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Removes shell quoting from a heredoc delimiter. Returns the words it splits into and whether
/// any quoting was present.
fn unquote(word: &str) -> Result<(Vec<String>, bool), String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = word.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '\'' => {
                in_word = true;
                quoted = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(n) => cur.push(n),
                        None => {
                            return Err("unexpected end of statement while looking for matching single-quote".to_owned())
                        }
                    }
                }
            }
            '"' => {
                in_word = true;
                quoted = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.peek() {
                            Some(&e @ ('"' | '$' | '\\')) => {
                                cur.push(e);
                                chars.next();
                            }
                            Some(_) => cur.push('\\'),
                            None => {}
                        },
                        Some(n) => cur.push(n),
                        None => {
                            return Err("unexpected end of statement while looking for matching double-quote".to_owned())
                        }
                    }
                }
            }
            _ => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok((words, quoted))
}

/// Parses one word as a heredoc opener: `^(\d*)<<(-?)\s*([^<]*)$` with a non-empty, single-word
/// delimiter. `Ok(None)` when the word is not a heredoc.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, String> {
    let digits = word.find(|c: char| !c.is_ascii_digit()).unwrap_or(word.len());
    let (fd, rest) = word.split_at(digits);
    let Some(rest) = rest.strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start();
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let (words, quoted) = unquote(rest)?;
    let [name] = words.as_slice() else {
        return Ok(None);
    };
    Ok(Some(Heredoc {
        name: name.clone(),
        // Go's ParseUint failure (overflow) yields 0.
        file_descriptor: fd.parse().unwrap_or(0),
        expand: !quoted,
        chomp,
        content: String::new(),
    }))
}

/// Every heredoc opened on `line`, in order.
pub(crate) fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let mut docs = Vec::new();
    for word in raw_words(line) {
        if let Some(doc) = parse_heredoc(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Removes leading tabs from every line (for `<<-`).
pub fn chomp_heredoc_content(src: &str) -> String {
    src.split_inclusive('\n').map(|l| l.trim_start_matches('\t')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(name: &str, fd: u32, expand: bool, chomp: bool) -> Option<Heredoc> {
        Some(Heredoc { name: name.into(), file_descriptor: fd, expand, chomp, content: String::new() })
    }

    macro_rules! heredoc {
        ($in:expr, $out:expr) => {
            assert_eq!(parse_heredoc($in).unwrap(), $out, "input {:?}", $in);
        };
    }

    #[test]
    fn openers() {
        heredoc!("<<EOF", doc("EOF", 0, true, false));
        heredoc!("<<-EOF", doc("EOF", 0, true, true));
        heredoc!("3<<EOF", doc("EOF", 3, true, false));
        heredoc!("<<'EOF'", doc("EOF", 0, false, false));
        heredoc!("<<\"EOF\"", doc("EOF", 0, false, false));
        heredoc!("<<E\"O\"F", doc("EOF", 0, false, false));
        heredoc!("<<EOF>file", doc("EOF>file", 0, true, false));
        heredoc!("<<", None);
        heredoc!("<<<EOF", None);
        heredoc!("cat<<EOF", None);
        heredoc!("EOF", None);
        assert!(parse_heredoc("<<'EOF").is_err());
    }

    #[test]
    fn several_on_a_line() {
        let docs = heredocs_from_line("COPY <<A <<-\"B C\" /dst/").unwrap();
        let names: Vec<_> = docs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["A", "B C"]);
        assert!(!docs[1].expand);
        assert!(heredocs_from_line("RUN echo '<<EOF'").unwrap().is_empty());
    }

    #[test]
    fn chomp() {
        assert_eq!(chomp_heredoc_content("\t\ta\n\tb\nc\t\n"), "a\nb\nc\t\n");
    }
}
