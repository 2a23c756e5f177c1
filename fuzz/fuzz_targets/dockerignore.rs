//! Fuzzes the `.dockerignore` matcher: the input's lines before a `\0` are the file, the lines
//! after it paths to match. Invalid patterns are errors, never panics; matching never panics;
//! and a path the matcher excludes is always explained by a pattern that was written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbuild_worker::IgnoreMatcher;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (file, paths) = text.split_once('\0').unwrap_or((&text, "a/b/c\nfoo.txt\n.git/config"));
    let patterns = IgnoreMatcher::parse_file(file);
    let Ok(matcher) = IgnoreMatcher::new(&patterns) else { return };
    for path in paths.lines().take(64) {
        let excluded = matcher.is_excluded(path);
        let by = matcher.excluded_by(path);
        assert_eq!(excluded, by.is_some(), "{path:?}");
        if let Some(pattern) = by {
            assert!(patterns.iter().any(|p| p == pattern), "{pattern:?} was not written");
        }
    }
});
