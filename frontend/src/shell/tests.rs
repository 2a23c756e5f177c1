//! One-line cases for every operator, quirk and rejected form.

use std::collections::{BTreeMap, BTreeSet};

use super::{Expansion, Lexer, ShellError, MAX_EXPANSION_LEN, MAX_NESTING};

fn env() -> BTreeMap<String, String> {
    [
        ("V", "value"),
        ("E", ""),
        ("P", "path/to/file.tar.gz"),
        ("S", " a  b "),
        ("NL", "a\nb"),
        ("B", "[ab]c"),
        ("H", "a#vb"),
        ("BAN", "banana"),
        ("STAR", "*"),
        ("BS", "\\"),
        ("न", "na"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn word(lexer: Lexer, input: &str) -> Result<String, ShellError> {
    lexer.process_word(input, &env())
}

/// `ok!(input => expected)`: `process_word` with `\` as escape character.
macro_rules! ok {
    ($input:expr => $want:expr) => {
        assert_eq!(word(Lexer::new('\\'), $input).as_deref(), Ok($want), "input {:?}", $input)
    };
    ($lexer:expr, $input:expr => $want:expr) => {
        assert_eq!(word($lexer, $input).as_deref(), Ok($want), "input {:?}", $input)
    };
}

/// `err!(input => message)`: `process_word` must fail with exactly this message.
macro_rules! err {
    ($input:expr => $msg:expr) => {
        match word(Lexer::new('\\'), $input) {
            Err(e) => assert_eq!(e.to_string(), $msg, "input {:?}", $input),
            Ok(v) => panic!("input {:?}: expected error {:?}, got {:?}", $input, $msg, v),
        }
    };
}

/// `words!(input => [w1, w2])`: `process_words`.
macro_rules! words {
    ($input:expr => [$($w:expr),*]) => {
        assert_eq!(
            Lexer::new('\\').process_words($input, &env()),
            Ok(vec![$($w.to_string()),*] as Vec<String>),
            "input {:?}", $input
        )
    };
}

#[test]
fn plain_variables() {
    ok!("$V" => "value");
    ok!("${V}" => "value");
    ok!("a${V}b" => "avalueb");
    ok!("$Vx" => "");
    ok!("$U" => "");
    ok!("${U}" => "");
    ok!("$" => "$");
    ok!("$.x" => "$.x");
    ok!("${V}}" => "value}");
    ok!("$1x" => "x");
    ok!("$@@" => "@");
    ok!("$0x" => "x");
    ok!("$न" => "na");
    // U+093E is a combining vowel sign: Alphabetic for Rust, not a letter for Go.
    ok!("$ना" => "na\u{93e}");
    ok!("\u{feff}$V" => "value");
    ok!("a\u{feff}$V" => "a\u{feff}value");
}

#[test]
fn default_and_alternative() {
    ok!("${V:-w}" => "value");
    ok!("${E:-w}" => "w");
    ok!("${U:-w}" => "w");
    ok!("${V-w}" => "value");
    ok!("${E-w}" => "");
    ok!("${U-w}" => "w");
    ok!("${V:+w}" => "w");
    ok!("${E:+w}" => "");
    ok!("${U:+w}" => "");
    ok!("${V+w}" => "w");
    ok!("${E+w}" => "w");
    ok!("${U+w}" => "");
    ok!("${U:-$V}" => "value");
    ok!("${U:-${X:-${V}}}" => "value");
    ok!("${U:-'a b'\"$V\"}" => "a bvalue");
    ok!("${U:-a\\}b}" => "a}b");
    ok!("${U:-\\$V}" => "$V");
    ok!("${U:-}" => "");
}

#[test]
fn required() {
    ok!("${V:?m}" => "value");
    ok!("${V?m}" => "value");
    ok!("${E?m}" => "");
    err!("${E:?m}" => "E: m");
    err!("${U:?m}" => "U: m");
    err!("${U?m $V}" => "U: m value");
    err!("${U?}" => "U: is not allowed to be unset");
    err!("${U:?}" => "U: is not allowed to be unset");
    err!("${E:?}" => "E: is not allowed to be empty");
}

#[test]
fn trimming() {
    ok!("${P#*/}" => "to/file.tar.gz");
    ok!("${P##*/}" => "file.tar.gz");
    ok!("${P%.*}" => "path/to/file.tar");
    ok!("${P%%.*}" => "path/to/file");
    ok!("${P#nope}" => "path/to/file.tar.gz");
    ok!("${P#}" => "path/to/file.tar.gz");
    ok!("${P##}" => "path/to/file.tar.gz");
    ok!("${P%%}" => "path/to/file.tar.gz");
    ok!("${U#*}" => "");
    ok!("${P#path?}" => "to/file.tar.gz");
    ok!("${P#$STAR/}" => "to/file.tar.gz");
    ok!("${P#'*'/}" => "to/file.tar.gz");
    ok!("${P#\"#\"*/}" => "file.tar.gz");
    ok!("${STAR#\\*}" => "");
    ok!("${B#[ab]}" => "c");
    ok!("${B#[a]}" => "[ab]c");
    ok!("${NL##*}" => "\nb");
    ok!("${NL%%*}" => "a\n");
    err!("${P#\\x}" => "invalid pattern (\\x) in substitution: invalid escape '\\x'");
    err!("${P#$BS}" => "invalid pattern (\\) in substitution: invalid escape '\\' at end of pattern");
    err!("${P%%a\\b}" => "invalid pattern (a\\b) in substitution: invalid escape '\\b'");
}

#[test]
fn substitution() {
    ok!("${BAN/an/AN}" => "bANana");
    ok!("${BAN//an/AN}" => "bANANa");
    ok!("${BAN/a*/X}" => "bX");
    ok!("${BAN//n?/-}" => "ba--");
    ok!("${BAN/x/y}" => "banana");
    ok!("${P//\\//\\/}" => "path\\/to\\/file.tar.gz");
    ok!("${P/\\//:}" => "path:to/file.tar.gz");
    ok!("${BAN///-}" => "-b-a-n-a-n-a-");
    ok!("${BAN/\"/\"/-}" => "banana");
    ok!("${U//a/b}" => "");
    ok!("${U///b}" => "b");
    // `/#` and `/%` do not anchor: `#` and `%` are literal pattern characters.
    ok!("${V/#v/X}" => "value");
    ok!("${H/#v/X}" => "aXb");
    ok!("${V/%e/X}" => "value");
    ok!("${B/[ab]/X}" => "Xc");
    // Replace-all expands Go replacement templates; replace-first inserts literally.
    ok!("${BAN//a/<\\$0>}" => "b<\\a>n<\\a>n<\\a>");
    ok!("${BAN/a/<\\$0>}" => "b<\\$0>nana");
    err!("${V//o}" => "syntax error: missing '/' in ${}");
    err!("${V/o}" => "syntax error: missing '/' in ${}");
    err!("${V//}" => "syntax error: missing '/' in ${}");
    err!("${V/a/b" => "syntax error: missing '}'");
    err!("${V/\\q/b}" => "invalid pattern (\\q) in substitution: invalid escape '\\q'");
}

#[test]
fn rejected_forms() {
    err!("${V:1:2}" => "unsupported modifier (:1) in substitution");
    err!("${V:1}" => "unsupported modifier (:1) in substitution");
    err!("${#V}" => "unsupported modifier (V) in substitution");
    err!("${V^^}" => "unsupported modifier (^) in substitution");
    err!("${V,,}" => "unsupported modifier (,) in substitution");
    err!("${V:=x}" => "unsupported modifier (:=) in substitution");
    err!("${V=x}" => "unsupported modifier (=) in substitution");
    err!("${V:#x}" => "unsupported modifier (:#) in substitution");
    err!("${V:%x}" => "unsupported modifier (:%) in substitution");
    err!("${V:/a/b}" => "unsupported modifier (:/) in substitution");
    err!("${!V}" => "unsupported modifier (V) in substitution");
    err!("${.}" => "unsupported modifier (.) in substitution");
    err!("${V:}x}" => "unsupported modifier (:}) in substitution");
    err!("${}" => "syntax error: bad substitution");
    err!("${:-x}" => "syntax error: bad substitution");
    err!("${{V}" => "syntax error: bad substitution");
    err!("${" => "syntax error: missing '}'");
    err!("${V" => "syntax error: missing '}'");
    err!("${V:" => "syntax error: missing '}'");
    err!("${V:}" => "syntax error: missing '}'");
    err!("${V:-x" => "syntax error: missing '}'");
    err!("${V:-'x}" => "syntax error: missing '}'");
    err!("${U:-${U:?inner}" => "syntax error: missing '}'");
    err!("${U:-${U:?inner}}" => "U: inner");
    // The word is expanded before the modifier is rejected.
    err!("${V:x${U:?first}}" => "U: first");
}

#[test]
fn quotes_and_escapes() {
    ok!("'a $V \\x'" => "a $V \\x");
    ok!("\"a $V\"" => "a value");
    ok!("\"\\\"\\$V\\\\\\x\"" => "\"$V\\\\x");
    ok!("a\\ b\\$V\\\\" => "a b$V\\");
    ok!("abc\\" => "abc");
    ok!("a\\tb" => "atb");
    ok!("\"a\\tb\"" => "a\\tb");
    ok!("\"'$V'\"" => "'value'");
    ok!("'\"$V\"'" => "\"$V\"");
    ok!("''\"\"" => "");
    err!("'a" => "unexpected end of statement while looking for matching single-quote");
    err!("\"a" => "unexpected end of statement while looking for matching double-quote");
    err!("\"a\\\"" => "unexpected end of statement while looking for matching double-quote");
    err!("\"a\\" => "unexpected end of statement while looking for matching double-quote");
}

#[test]
fn backtick_escape() {
    let bt = Lexer::new('`');
    ok!(bt, "a`$V" => "a$V");
    ok!(bt, "c:\\dir\\$V" => "c:\\dir\\value");
    ok!(bt, "\"`\"`$V``\"" => "\"$V`");
    ok!(bt, "\"\\\"" => "\\");
    // Patterns keep using `\` as their escape.
    ok!(bt, "${STAR#\\*}" => "");
    ok!(bt, "${V#`v}" => "value");
}

#[test]
fn lexer_switches() {
    let raw_q = Lexer::new('\\').with_raw_quotes(true);
    ok!(raw_q, "'a'\"$V\"" => "'a'\"value\"");
    let raw_e = Lexer::new('\\').with_raw_escapes(true);
    ok!(raw_e, "a\\$V\"\\x\"" => "a\\$V\\\\x");
    ok!(raw_e, "${U:-\\$V}" => "$V");
    let skip = Lexer::new('\\').with_skip_unset_env(true);
    ok!(skip, "$U ${U} ${U:-a} ${U//a/b} $V" => "$U ${U} ${U:-a} ${U/a/b} value");
    ok!(skip, "${U?m}" => "${U?m}");
    let noq = Lexer::new('\\').with_skip_process_quotes(true);
    ok!(noq, "'$V' \"$V\"" => "'value' \"value\"");
}

#[test]
fn splitting() {
    words!("hello" => ["hello"]);
    words!("  a   b  " => ["a", "b"]);
    words!("a${S}b" => ["a", "a", "b", "b"]);
    words!("a\"${S}\"b" => ["a a  b b"]);
    words!("a\\ b 'c d' \"\"" => ["a b", "c d"]);
    words!("\"\" ''" => []);
    words!("" => []);
    words!("cat << EOF > f" => ["cat", "<< EOF", ">", "f"]);
    words!("cat <<\t EOF" => ["cat", "<<\t EOF"]);
    words!("a<b" => ["a<b"]);
    // BuildKit since dockerfile 1.9 loses "a" here (a shared buffer); 0.13 and we keep it.
    words!("a${U:-b c}d" => ["ab", "cd"]);
    words!("x${V/a/ }y" => ["xv", "luey"]);
}

#[test]
fn matches_are_recorded() {
    let e = Lexer::new('\\')
        .process_word_with_matches("${V:-$U1} ${E+x} ${U2:-${V}} ${P#$U3} $V", &env())
        .unwrap_or_default();
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        e,
        Expansion {
            result: "value x value path/to/file.tar.gz value".into(),
            matched: set(&["E", "P", "V"]),
            unmatched: set(&["U1", "U2", "U3"]),
        }
    );
    let none = Lexer::new('\\').process_word_with_matches("'$V' \\$V", &env());
    assert_eq!(none.map(|e| e.matched.len() + e.unmatched.len()), Ok(0));
}

#[test]
fn nesting_limit() {
    let nest = |n: usize| format!("{}x{}", "${U:-".repeat(n), "}".repeat(n));
    ok!(&nest(MAX_NESTING) => "x");
    err!(&nest(MAX_NESTING + 1) => "variable substitutions nested more than 100 levels deep");
    let quoted = format!("{}x{}", "${U:-\"".repeat(5000), "\"}".repeat(5000));
    assert_eq!(word(Lexer::new('\\'), &quoted), Err(ShellError::TooDeep { limit: MAX_NESTING }));
}

#[test]
fn growth_limit() {
    // Each level triples the text: 3^20 bytes would be 3.5 GB.
    let grow = |n: usize| format!("{}x{}", "${BAN//a/".repeat(n), "}".repeat(n));
    assert_eq!(word(Lexer::new('\\'), &grow(3)).map(|s| s.len()), Ok(66));
    assert_eq!(word(Lexer::new('\\'), &grow(20)), Err(ShellError::TooLong { limit: MAX_EXPANSION_LEN }));
}

/// Random inputs over the lexer's special characters must never panic, and the three entry
/// points must agree on success and on the expanded text.
#[test]
fn random_inputs_never_panic() {
    const ALPHABET: &[&str] = &[
        "$", "{", "}", ":", "-", "+", "?", "#", "%", "/", "*", "\\", "`", "'", "\"", "<", " ", "\n", "V", "E", "U",
        "P", "NL", "BAN", "a", "0", "@", "[", "é", "\u{feff}", "\u{93e}",
    ];
    let env = env();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let len = rand() % 24;
        let input: String =
            (0..len).map(|_| ALPHABET.get((rand() % ALPHABET.len() as u64) as usize).copied().unwrap_or("")).collect();
        for lexer in [Lexer::new('\\'), Lexer::new('`').with_raw_escapes(true).with_skip_unset_env(true)] {
            let one = lexer.process_word(&input, &env);
            let many = lexer.process_words(&input, &env);
            let with = lexer.process_word_with_matches(&input, &env).map(|e| e.result);
            assert_eq!(one, with, "input {input:?}");
            assert_eq!(one.is_ok(), many.is_ok(), "input {input:?}");
        }
    }
}
