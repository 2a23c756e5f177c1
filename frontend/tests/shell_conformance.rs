//! BuildKit's own shell-lexer vectors (`shell-envVarTest`, `shell-wordsTest`), read in place
//! from `shared/conformance/buildkit/` (see its README for the row formats).
//!
//! Every row is checked; all failing rows are reported together.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rbuild_frontend::shell::Lexer;

fn vector(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/buildkit").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Fails with every failing row, or if no row ran at all.
fn report(file: &str, executed: usize, failures: &[String]) {
    eprintln!("{file}: {} of {executed} rows passed", executed - failures.len());
    assert!(executed > 0, "{file}: no rows executed");
    assert!(failures.is_empty(), "{file}: {} of {executed} rows failed:\n{}", failures.len(), failures.join("\n"));
}

/// `PLATFORM|INPUT|EXPECTED`, run for platforms `A` and `U` with BuildKit's test env.
#[test]
fn env_var_test() {
    let env: BTreeMap<String, String> = [("PWD", "/home"), ("SHELL", "bash"), ("KOREAN", "한국어"), ("NULL", "")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let lexer = Lexer::new('\\');
    let (mut executed, mut failures) = (0, Vec::new());
    for (idx, raw) in vector("shell-envVarTest").lines().enumerate() {
        let row = idx + 1;
        if raw.starts_with('#') || raw.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = raw.trim().split('|').collect();
        let [platform, input, expected] = fields.as_slice() else {
            executed += 1;
            failures.push(format!("row {row}: malformed (want 3 '|' fields): {raw:?}"));
            continue;
        };
        let (platform, input, expected) = (platform.trim(), input.trim(), expected.trim());
        match platform {
            "A" | "U" => {}
            "W" => continue,
            other => {
                executed += 1;
                failures.push(format!("row {row}: unknown platform {other:?}"));
                continue;
            }
        }
        executed += 1;
        let got = lexer.process_word(input, &env);
        let pass = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(word), want) => word == want && want != "error",
            (Err(_), _) => false,
        };
        if !pass {
            failures.push(format!("row {row}: input {input:?}: expected {expected:?}, got {got:?}"));
        }
    }
    report("shell-envVarTest", executed, &failures);
}

/// `INPUT | w1,w2,...` rows; `ENV name=value` lines add to the env of the rows after them.
#[test]
fn words_test() {
    let lexer = Lexer::new('\\');
    let mut env: Vec<String> = Vec::new();
    let (mut executed, mut failures) = (0, Vec::new());
    for (idx, raw) in vector("shell-wordsTest").lines().enumerate() {
        let row = idx + 1;
        if raw.starts_with('#') || raw.trim().is_empty() {
            continue;
        }
        if let Some(assignment) = raw.strip_prefix("ENV ") {
            // Trailing blanks are part of the value (the file says so).
            env.push(assignment.trim_start_matches(' ').to_owned());
            continue;
        }
        executed += 1;
        let Some((input, expected)) = raw.split_once('|').filter(|(_, e)| !e.contains('|')) else {
            failures.push(format!("row {row}: malformed (want exactly one '|'): {raw:?}"));
            continue;
        };
        let input = input.trim();
        let expected: Vec<String> = expected.trim_start_matches(' ').split(',').map(str::to_owned).collect();
        let got = lexer.process_words(input, &env).unwrap_or_else(|_| vec!["error".to_owned()]);
        if got != expected {
            failures.push(format!("row {row}: input {input:?}: expected {expected:?}, got {got:?}"));
        }
    }
    report("shell-wordsTest", executed, &failures);
}
