//! BuildKit's s-expression dump of a parse tree (`Node.Dump()`), used by the conformance tests
//! and `rbuild debug parse`.

use std::fmt::Write as _;

use super::node::{Args, Node};

/// Dumps `nodes` one instruction a line, as BuildKit's parser tests print them:
/// `(keyword ["--flag=v"] "arg" ...)`, every string Go-quoted, `ENV`/`LABEL` as
/// `"key" "value" "sep"` triples, `ONBUILD`'s instruction nested. Ends with a newline.
pub fn dump(nodes: &[Node]) -> String {
    let mut out = String::new();
    for node in nodes {
        out.push('(');
        dump_node(node, &mut out);
        out.push_str(")\n");
    }
    out
}

fn dump_node(node: &Node, out: &mut String) {
    let start = out.len();
    out.push_str(&node.keyword.to_lowercase());
    if !node.flags.is_empty() {
        out.push_str(" [");
        for (i, f) in node.flags.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&go_quote(f));
        }
        out.push(']');
    }
    match &node.args {
        Args::Words(words) => {
            for w in words {
                out.push(' ');
                out.push_str(&go_quote(w));
            }
        }
        Args::KeyValues(kvs) => {
            for kv in kvs {
                let sep = if kv.has_equals { "=" } else { "" };
                for s in [kv.key.as_str(), kv.value.as_str(), sep] {
                    out.push(' ');
                    out.push_str(&go_quote(s));
                }
            }
        }
        Args::Nested(child) => {
            out.push_str(" (");
            dump_node(child, out);
            out.push(')');
        }
        Args::Ignored => out.push_str(" \"\""),
    }
    // Go trims the whole dump; only leading whitespace of an empty keyword can matter.
    let trimmed = out[start..].trim().to_owned();
    out.truncate(start);
    out.push_str(&trimmed);
}

/// Quotes `s` as Go's `strconv.Quote` does: `\"`, `\\`, the C escapes, `\xNN` for other ASCII
/// controls, `\uNNNN`/`\UNNNNNNNN` for non-printable characters.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// Approximates Go's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols and the
/// ASCII space; not controls, other spaces, format characters or private-use characters.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    let format = matches!(u,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f
        | 0x202a..=0x202e | 0x2060..=0x2064 | 0x2066..=0x206f | 0xfeff | 0xfff9..=0xfffb
        | 0xe0001 | 0xe0020..=0xe007f);
    let private_or_nonchar = matches!(u,
        0xe000..=0xf8ff | 0xf0000..=0x10ffff | 0xfdd0..=0xfdef)
        || (u & 0xfffe) == 0xfffe;
    !format && !private_or_nonchar
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! quote {
        ($in:expr, $out:expr) => {
            assert_eq!(go_quote($in), $out, "input {:?}", $in);
        };
    }

    #[test]
    fn quotes_as_go() {
        quote!("a b", r#""a b""#);
        quote!("a\"b\\", r#""a\"b\\""#);
        quote!("\t\n\0\u{1b}\u{7f}", r#""\t\n\x00\x1b\x7f""#);
        quote!("한국어 àöû", "\"한국어 àöû\"");
        quote!("\u{a0}\u{200b}\u{85}", r#""\u00a0\u200b\u0085""#);
        quote!("\u{f0000}", r#""\U000f0000""#);
    }
}
