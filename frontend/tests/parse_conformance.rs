//! BuildKit's parser golden tests, read in place from `shared/conformance/buildkit`:
//! `testfiles/*/{Dockerfile,result}` must dump byte for byte, `testfiles-negative/*` must fail,
//! `testfile-line/Dockerfile` must give BuildKit's start/end lines.

use std::path::{Path, PathBuf};

use rbuild_frontend::parser::{dump, parse};

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/buildkit")
}

fn case_dirs(sub: &str) -> Vec<PathBuf> {
    let dir = conformance_dir().join(sub);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn positive_cases_dump_like_buildkit() {
    let mut failures = Vec::new();
    let dirs = case_dirs("testfiles");
    for dir in &dirs {
        let name = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let expected = String::from_utf8_lossy(&read(&dir.join("result"))).into_owned();
        match parse(&read(&dir.join("Dockerfile"))) {
            Err(e) => failures.push(format!("{name}: parse failed: {e}")),
            Ok(parsed) => {
                let got = dump(&parsed.nodes);
                if got != expected {
                    failures.push(format!("{name}:\n--- expected\n{expected}--- got\n{got}"));
                }
            }
        }
    }
    assert!(!dirs.is_empty(), "no conformance cases found");
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), dirs.len(), failures.join("\n"));
}

#[test]
fn negative_cases_fail() {
    let dirs = case_dirs("testfiles-negative");
    let passed: Vec<String> =
        dirs.iter().filter(|d| parse(&read(&d.join("Dockerfile"))).is_ok()).map(|d| d.display().to_string()).collect();
    assert!(!dirs.is_empty(), "no negative cases found");
    assert!(passed.is_empty(), "these should fail to parse: {passed:?}");
}

#[test]
fn line_numbers_match_buildkit() {
    let parsed = parse(&read(&conformance_dir().join("testfile-line/Dockerfile"))).unwrap();
    let got: Vec<(usize, usize)> = parsed.nodes.iter().map(|n| (n.span.start_line, n.span.end_line)).collect();
    // From BuildKit's TestParseIncludesLineNumbers.
    assert_eq!(got, vec![(5, 5), (11, 12), (17, 31)]);
}
