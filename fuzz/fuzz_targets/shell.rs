//! Fuzzes the shell-word expander (`ENV`/`ARG`/`COPY`… word processing): any input, with each
//! of the lexer's modes and both escape characters, against an environment with empty, spaced
//! and glob-like values. Errors are fine; panics, and output over the expander's own limit
//! ([`MAX_EXPANSION_LEN`]: nested `${V//p/r}` legitimately grow geometrically up to it), are
//! bugs.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use rbuild_frontend::shell::{Lexer, MAX_EXPANSION_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let Ok(word) = std::str::from_utf8(rest) else { return };
    let escape = if sel & 1 == 0 { '\\' } else { '`' };
    let lexer = Lexer::new(escape)
        .with_raw_quotes(sel & 2 != 0)
        .with_raw_escapes(sel & 4 != 0)
        .with_skip_unset_env(sel & 8 != 0)
        .with_skip_process_quotes(sel & 16 != 0);
    let env: HashMap<String, String> = [
        ("A", "x y"),
        ("EMPTY", ""),
        ("PATH", "/usr/bin:/bin"),
        ("GLOB", "*.txt"),
        ("Q", "'\"$A\\"),
        ("LONG", "0123456789abcdef"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let bound = MAX_EXPANSION_LEN;
    if let Ok(out) = lexer.process_word(word, &env) {
        assert!(out.len() <= bound, "{word:?} expanded to {} bytes", out.len());
    }
    if let Ok(words) = lexer.process_words(word, &env) {
        assert!(words.iter().map(String::len).sum::<usize>() <= bound, "{word:?} expanded without bound");
    }
    let _ = lexer.process_word_with_matches(word, &env);
});
