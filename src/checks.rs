//! Build checks in the CLI: the findings printed after a build, and the methods that evaluate
//! a Dockerfile instead of building it (`--check`, `--call=check|targets|outline`, as
//! `docker buildx build` has them).
//!
//! After a build (stderr), like buildx's summary, with the lines each finding is about:
//! ```text
//!  1 warning found:
//!  - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 3)
//!    --> Dockerfile:3
//!        3 | >>> CMD echo hi
//! ```
//! `--check` (stdout) prints BuildKit's lint report and exits with status 1 when there are
//! findings:
//! ```text
//! Check complete, 1 warning has been found!
//!
//! WARNING: JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/
//! JSON arguments recommended for CMD to prevent unintended behavior related to OS signals
//! Dockerfile:3
//! --------------------
//!    1 |     FROM alpine
//!    2 |
//!    3 | >>> CMD echo hi
//!    4 |
//! --------------------
//! ```

use std::fmt;
use std::fmt::Write as _;

use anyhow::Context as _;
use rbuild_frontend::Warning;

use crate::render::FrontendFailure;
use crate::resolver::RegistryResolver;

/// What `--call` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Run the build checks (`--check`).
    Check,
    /// The stages and their descriptions.
    Targets,
    /// The build args, secrets and SSH sockets the target uses.
    Outline,
}

/// A parsed `--call` value: `METHOD[,format=json][,ignorestatus=BOOL]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// What to evaluate.
    pub method: Method,
    /// `format=json`.
    pub json: bool,
    /// `ignorestatus=true`: exit 0 even with findings.
    pub ignore_status: bool,
}

/// Parses `--call` (and `--check`); `None` means build.
pub fn parse_call(call: Option<&str>, check: bool) -> Result<Option<Call>, String> {
    let Some(value) = call.filter(|v| !v.is_empty()) else {
        return Ok(check.then_some(Call { method: Method::Check, json: false, ignore_status: false }));
    };
    let mut method = None;
    let (mut json, mut ignore_status) = (false, false);
    for field in value.split(',').map(str::trim) {
        match field.split_once('=') {
            Some(("format", "json")) => json = true,
            Some(("format", "text" | "")) => json = false,
            Some(("format", other)) => return Err(format!("--call: unknown format {other:?}: use json or text")),
            Some(("ignorestatus", v)) => {
                ignore_status = v.parse::<bool>().map_err(|_| format!("--call: invalid ignorestatus value {v:?}"))?;
            }
            Some(_) => return Err(format!("--call: invalid field {field:?}")),
            None if method.is_some() => return Err(format!("--call: invalid value {value:?}")),
            None => {
                method = Some(match field {
                    "build" => return Ok(None),
                    "check" | "lint" => Method::Check,
                    "targets" => Method::Targets,
                    "outline" => Method::Outline,
                    other => {
                        return Err(format!("--call: unknown method {other:?}: use build, check, outline or targets"))
                    }
                });
            }
        }
    }
    let method = method.ok_or_else(|| format!("--call: no method in {value:?}"))?;
    Ok(Some(Call { method, json, ignore_status }))
}

/// What the frontend needs for a `--call`.
#[derive(Debug)]
pub struct CallInput {
    /// The Dockerfile's bytes.
    pub dockerfile: Vec<u8>,
    /// Its name, as shown.
    pub filename: String,
    /// `--build-arg`s.
    pub build_args: std::collections::BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// Platform to build for.
    pub platform: rbuild_solver::ir::Platform,
    /// `.dockerignore` patterns.
    pub context_excludes: Vec<String>,
    /// `--build-context`s.
    pub named_contexts: std::collections::BTreeMap<String, rbuild_frontend::NamedContext>,
}

impl CallInput {
    fn request(&self) -> rbuild_frontend::BuildRequest<'_> {
        rbuild_frontend::BuildRequest {
            dockerfile: &self.dockerfile,
            filename: self.filename.clone(),
            build_args: self.build_args.clone(),
            target: self.target.clone(),
            platform: self.platform.clone(),
            context_excludes: self.context_excludes.clone(),
            no_cache: false,
            multi_platform: false,
            named_contexts: self.named_contexts.clone(),
            run_defaults: rbuild_frontend::RunDefaults::default(),
        }
    }
}

#[allow(clippy::print_stdout)]
fn print_out(text: &str) {
    print!("{text}");
}

/// Runs `call` (on a blocking thread: base images are resolved synchronously) and prints its
/// result on stdout.
pub async fn run_call(call: Call, input: CallInput, resolver: RegistryResolver) -> anyhow::Result<()> {
    let input = std::sync::Arc::new(input);
    let inp = input.clone();
    let failure = |error: rbuild_frontend::Error| FrontendFailure {
        error,
        file: input.filename.clone(),
        source_text: input.dockerfile.clone(),
    };
    match call.method {
        Method::Targets => {
            let targets = rbuild_frontend::targets(&input.dockerfile, &input.filename).map_err(failure)?;
            print_out(&if call.json { format!("{:#}\n", targets_json(&targets)) } else { targets_text(&targets) });
        }
        Method::Outline => {
            let outline = tokio::task::spawn_blocking(move || rbuild_frontend::outline(&inp.request(), &resolver))
                .await
                .context("frontend task")?
                .map_err(failure)?;
            print_out(&if call.json {
                format!("{:#}\n", serde_json::to_value(&outline)?)
            } else {
                outline_text(&outline)
            });
        }
        Method::Check => {
            let report = tokio::task::spawn_blocking(move || rbuild_frontend::check(&inp.request(), &resolver))
                .await
                .context("frontend task")?;
            if call.json {
                print_out(&check_json(&report.warnings, report.error.as_ref(), &input.filename, &input.dockerfile)?);
            } else {
                let mut text = check_report(&report.warnings, &input.dockerfile);
                if report.error.is_none() && report.warnings.is_empty() {
                    text.push_str("Check complete, no warnings found.\n");
                } else if report.error.is_some() && !report.warnings.is_empty() {
                    text.push('\n');
                }
                print_out(&text);
            }
            if let Some(error) = report.error {
                return Err(failure(error).into());
            }
            if !report.warnings.is_empty() && !call.ignore_status {
                return Err(ChecksFound.into());
            }
        }
    }
    Ok(())
}

/// Go's `tabwriter` with `padding`: every cell but the last of a row padded to its column's
/// widest cell plus `padding`.
fn table(rows: &[Vec<String>], padding: usize) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols.saturating_sub(1))
        .map(|c| rows.iter().filter(|r| r.len() > c + 1).map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if let Some(w) = widths.get(c).filter(|_| c + 1 < row.len()) {
                out.push_str(&" ".repeat(w + padding - cell.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

/// `--call=targets` as buildx prints it.
pub fn targets_text(targets: &[rbuild_frontend::Target]) -> String {
    let mut rows = vec![vec!["TARGET".to_owned(), "DESCRIPTION".to_owned()]];
    for t in targets {
        let name = match (&t.name, t.default) {
            (None, true) => "(default)".to_owned(),
            (Some(n), true) => format!("{n} (default)"),
            (n, false) => n.clone().unwrap_or_default(),
        };
        rows.push(vec![name, t.description.clone()]);
    }
    table(&rows, 1)
}

fn targets_json(targets: &[rbuild_frontend::Target]) -> serde_json::Value {
    serde_json::json!({ "targets": targets })
}

/// `--call=outline` as buildx prints it.
pub fn outline_text(o: &rbuild_frontend::Outline) -> String {
    let mut out = String::new();
    if o.name.is_some() || !o.description.is_empty() {
        let mut rows = vec![vec!["TARGET:".to_owned(), o.name.clone().unwrap_or_else(|| "(default)".to_owned())]];
        if !o.description.is_empty() {
            rows.push(vec!["DESCRIPTION:".to_owned(), o.description.clone()]);
        }
        out.push_str(&table(&rows, 1));
        out.push('\n');
    }
    if !o.args.is_empty() {
        let mut rows = vec![vec!["BUILD ARG".to_owned(), "VALUE".to_owned(), "DESCRIPTION".to_owned()]];
        rows.extend(o.args.iter().map(|a| vec![a.name.clone(), a.value.clone(), a.description.clone()]));
        out.push_str(&table(&rows, 3));
        out.push('\n');
    }
    for (title, mounts) in [("SECRET", &o.secrets), ("SSH", &o.ssh)] {
        if mounts.is_empty() {
            continue;
        }
        let mut rows = vec![vec![title.to_owned(), "REQUIRED".to_owned()]];
        rows.extend(
            mounts.iter().map(|m| vec![m.name.clone(), if m.required { "true".into() } else { String::new() }]),
        );
        out.push_str(&table(&rows, 3));
        out.push('\n');
    }
    out
}

/// The check found something: exit with status 1 (the report says what).
#[derive(Debug)]
pub struct ChecksFound;

impl fmt::Display for ChecksFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("build checks found problems")
    }
}

impl std::error::Error for ChecksFound {}

/// The lines `start..=end` of `text`, marked, under ` --> file:start` (the build summary form).
fn marked_lines(out: &mut String, file: &str, text: &str, start: usize, end: usize) {
    const MAX_LINES: usize = 6;
    let _ = writeln!(out, "   --> {file}:{start}");
    let lines: Vec<&str> = text.lines().collect();
    for n in start..=end.min(start + MAX_LINES - 1) {
        let Some(line) = n.checked_sub(1).and_then(|i| lines.get(i)) else { break };
        let _ = writeln!(out, "   {n:>5} | >>> {line}");
    }
    if end >= start + MAX_LINES {
        let _ = writeln!(out, "         | ...");
    }
}

/// The warnings of a build, as printed after it (nothing when there are none).
pub fn build_summary(warnings: &[Warning], source: &[u8]) -> String {
    let mut out = String::new();
    if warnings.is_empty() {
        return out;
    }
    let text = String::from_utf8_lossy(source);
    let n = warnings.len();
    let _ = writeln!(out, "\n {n} warning{} found:", if n == 1 { "" } else { "s" });
    for w in warnings {
        let _ = writeln!(out, " - {}", w.short());
        if let Some(s) = w.span.as_ref().filter(|s| s.start_line > 0) {
            marked_lines(&mut out, &s.file, &text, s.start_line, s.end_line.max(s.start_line));
        }
    }
    out
}

/// BuildKit's source excerpt (`errdefs.Source.Print`): the lines with a few around them.
fn source_excerpt(out: &mut String, file: &str, text: &str, start: usize, end: usize) {
    let lines: Vec<&str> = text.split('\n').collect();
    if start < 1 || start > lines.len() {
        return;
    }
    let (mut from, mut to) = (start, end.min(lines.len()));
    let pad = if to == from { 4 } else { 2 };
    let mut p = 0;
    while p < pad {
        if from > 1 {
            from -= 1;
            p += 1;
        }
        if to != lines.len() {
            to += 1;
            p += 1;
        }
        p += 1;
    }
    let _ = write!(out, "{file}:{start}\n--------------------\n");
    for n in from..=to {
        let marker = if n >= start && n <= end { ">>>" } else { "   " };
        let line = lines.get(n - 1).copied().unwrap_or_default();
        let _ = writeln!(out, " {n:>3} | {marker} {line}");
    }
    out.push_str("--------------------\n");
}

/// The `--check` report (text): the count line, then each finding with its lines.
pub fn check_report(warnings: &[Warning], source: &[u8]) -> String {
    let text = String::from_utf8_lossy(source);
    let mut out = String::new();
    match warnings.len() {
        0 => return out,
        1 => out.push_str("Check complete, 1 warning has been found!\n"),
        n => {
            let _ = writeln!(out, "Check complete, {n} warnings have been found!");
        }
    }
    for w in warnings {
        let name = w.rule.map_or("", |r| r.name);
        let _ = write!(out, "\nWARNING: {name}");
        if let Some(url) = w.rule.and_then(|r| r.url) {
            let _ = write!(out, " - {url}");
        }
        let _ = writeln!(out, "\n{}", w.message);
        if let Some(s) = &w.span {
            source_excerpt(&mut out, &s.file, &text, s.start_line, s.end_line.max(s.start_line));
        }
    }
    out
}

// BuildKit's JSON for findings, field for field: `solver/pb`'s `Position`, `Range`, `Location`
// and `SourceInfo`, and the lint subrequest's `LintResults`, `Warning` and `BuildError`
// (`frontend/subrequests/lint`), as Go's `encoding/json` writes them: fields in declaration
// order, `omitempty` fields left out when zero, `[]byte` fields in base64. The LLB definition
// BuildKit puts in a `SourceInfo` (the vertex that loaded the Dockerfile) is left out: rbuild
// reads the Dockerfile without a build vertex, and the field is optional.

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A position in a source file (`pb.Position`). BuildKit's Dockerfile frontend only ever
/// locates whole lines, so its `character` is always 0 and never written.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Position {
    /// 1-based line.
    #[serde(skip_serializing_if = "is_zero")]
    line: usize,
}

/// A range of a source file (`pb.Range`).
#[derive(Debug, serde::Serialize)]
pub(crate) struct Range {
    start: Position,
    end: Position,
}

/// The ranges BuildKit gives the lines `start..=end` (its parser's `toRanges`): one range per
/// line.
pub(crate) fn line_ranges(start: usize, end: usize) -> Vec<Range> {
    (start..=end.max(start)).map(|line| Range { start: Position { line }, end: Position { line } }).collect()
}

/// Where a finding or an error is (`pb.Location`): ranges of the Dockerfile. Its
/// `sourceIndex` is always 0 (the Dockerfile is the only source), which Go leaves out.
#[derive(Debug, serde::Serialize)]
struct Location {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ranges: Vec<Range>,
}

impl Location {
    fn of(span: Option<&rbuild_solver::ir::SourceSpan>) -> Location {
        Location { ranges: span.map(|s| line_ranges(s.start_line, s.end_line)).unwrap_or_default() }
    }
}

/// A source file (`pb.SourceInfo`): the Dockerfile.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct SourceInfo {
    #[serde(skip_serializing_if = "String::is_empty")]
    filename: String,
    /// The file's bytes, base64.
    #[serde(skip_serializing_if = "String::is_empty")]
    data: String,
    language: &'static str,
}

impl SourceInfo {
    /// The Dockerfile `filename` with the bytes `source`.
    pub(crate) fn dockerfile(filename: &str, source: &[u8]) -> SourceInfo {
        use base64::Engine as _;
        SourceInfo {
            filename: filename.to_owned(),
            data: base64::engine::general_purpose::STANDARD.encode(source),
            language: "Dockerfile",
        }
    }
}

/// One finding of `--call=check,format=json` (the lint subrequest's `Warning`).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct LintWarning {
    rule_name: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    url: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    detail: String,
    location: Location,
}

/// Why the Dockerfile cannot be built (`BuildError`).
#[derive(Debug, serde::Serialize)]
struct BuildError {
    message: String,
    location: Location,
}

/// The whole `--call=check,format=json` report (`LintResults`).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct LintResults {
    /// `null` without findings: BuildKit's is a Go slice that stays nil.
    warnings: Option<Vec<LintWarning>>,
    sources: Vec<SourceInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    build_error: Option<BuildError>,
}

/// JSON text as Go's `encoding/json` writes it: `<`, `>`, `&`, U+2028 and U+2029 escaped
/// (they can only occur inside strings, so replacing them in the text is safe).
pub(crate) fn go_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The `--check` report as JSON, as `docker buildx build --call=check,format=json` prints it:
/// BuildKit's `LintResults` indented by two spaces, the Dockerfile `filename` (bytes `source`)
/// as the only source, and a trailing newline.
pub fn check_json(
    warnings: &[Warning],
    error: Option<&rbuild_frontend::Error>,
    filename: &str,
    source: &[u8],
) -> anyhow::Result<String> {
    let results = LintResults {
        warnings: (!warnings.is_empty()).then(|| {
            warnings
                .iter()
                .map(|w| LintWarning {
                    rule_name: w.rule.map_or("", |r| r.name),
                    description: w.rule.map_or("", |r| r.description),
                    url: w.rule.and_then(|r| r.url).unwrap_or_default(),
                    detail: w.message.clone(),
                    location: Location::of(w.span.as_ref()),
                })
                .collect()
        }),
        sources: vec![SourceInfo::dockerfile(filename, source)],
        build_error: error.map(|e| BuildError { message: e.to_string(), location: Location::of(e.span()) }),
    };
    Ok(format!("{}\n", go_escape(&serde_json::to_string_pretty(&results)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbuild_solver::ir::SourceSpan;

    fn warning(line: usize) -> Warning {
        Warning {
            span: Some(SourceSpan { file: "Dockerfile".into(), start_line: line, end_line: line }),
            message: "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals".into(),
            rule: Some(&rbuild_frontend::lint::rules::JSON_ARGS_RECOMMENDED),
        }
    }

    #[test]
    fn call_values() {
        let c = |m, json, ignore_status| Ok(Some(Call { method: m, json, ignore_status }));
        assert_eq!(parse_call(None, false), Ok(None));
        assert_eq!(parse_call(None, true), c(Method::Check, false, false));
        assert_eq!(parse_call(Some("build"), false), Ok(None));
        assert_eq!(parse_call(Some("check,format=json"), false), c(Method::Check, true, false));
        assert_eq!(parse_call(Some("targets"), false), c(Method::Targets, false, false));
        assert_eq!(parse_call(Some("outline,ignorestatus=true"), false), c(Method::Outline, false, true));
        assert!(parse_call(Some("nope"), false).is_err());
        assert!(parse_call(Some("check,targets"), false).is_err());
        assert!(parse_call(Some("check,format=yaml"), false).is_err());
    }

    #[test]
    fn check_report_matches_buildkit() {
        let src = b"FROM alpine\n\nCMD echo hi\n";
        let out = check_report(&[warning(3)], src);
        assert_eq!(
            out,
            "Check complete, 1 warning has been found!\n\nWARNING: JSONArgsRecommended - \
             https://docs.docker.com/go/dockerfile/rule/json-args-recommended/\n\
             JSON arguments recommended for CMD to prevent unintended behavior related to OS signals\n\
             Dockerfile:3\n--------------------\n   1 |     FROM alpine\n   2 |     \n   3 | >>> CMD echo hi\n   4 |     \n\
             --------------------\n"
        );
        assert!(
            check_report(&[warning(3), warning(3)], src).starts_with("Check complete, 2 warnings have been found!\n")
        );
        assert_eq!(check_report(&[], src), "");
    }

    #[test]
    fn tables_like_go_tabwriter() {
        let t = |name: Option<&str>, description: &str, default: bool| rbuild_frontend::Target {
            name: name.map(Into::into),
            description: description.into(),
            default,
            base: "busybox".into(),
            platform: None,
            line: 1,
        };
        let out = targets_text(&[t(Some("build"), "compiles it", false), t(None, "", false), t(None, "", true)]);
        assert_eq!(out, "TARGET    DESCRIPTION\nbuild     compiles it\n          \n(default) \n");
        let o = rbuild_frontend::Outline {
            name: Some("app".into()),
            description: "the app".into(),
            args: vec![rbuild_frontend::OutlineArg {
                name: "VERSION".into(),
                value: "1.2".into(),
                description: "which release".into(),
                line: 1,
            }],
            secrets: vec![rbuild_frontend::OutlineMount { name: "token".into(), required: true, line: 3 }],
            ssh: vec![rbuild_frontend::OutlineMount { name: "default".into(), required: false, line: 4 }],
        };
        assert_eq!(
            outline_text(&o),
            "TARGET:      app\nDESCRIPTION: the app\n\nBUILD ARG   VALUE   DESCRIPTION\nVERSION     1.2     which release\n\n\
             SECRET   REQUIRED\ntoken    true\n\nSSH       REQUIRED\ndefault   \n\n"
        );
    }

    #[test]
    fn check_json_is_buildkits_lint_results() {
        use base64::Engine as _;
        let src = b"FROM alpine\n\nCMD echo hi\n";
        let data = base64::engine::general_purpose::STANDARD.encode(src);
        let mut multi_line = warning(3);
        multi_line.span = Some(SourceSpan { file: "Dockerfile".into(), start_line: 3, end_line: 4 });
        let out = check_json(&[multi_line], None, "Dockerfile", src).unwrap();
        assert_eq!(
            out,
            format!(
                r#"{{
  "warnings": [
    {{
      "ruleName": "JSONArgsRecommended",
      "description": "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
      "url": "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/",
      "detail": "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals",
      "location": {{
        "ranges": [
          {{
            "start": {{
              "line": 3
            }},
            "end": {{
              "line": 3
            }}
          }},
          {{
            "start": {{
              "line": 4
            }},
            "end": {{
              "line": 4
            }}
          }}
        ]
      }}
    }}
  ],
  "sources": [
    {{
      "filename": "Dockerfile",
      "data": "{data}",
      "language": "Dockerfile"
    }}
  ]
}}
"#
            )
        );
        // No findings: Go's nil slice.
        let out = check_json(&[], None, "Dockerfile", src).unwrap();
        assert!(out.starts_with("{\n  \"warnings\": null,\n  \"sources\": ["), "{out}");
        // Go escapes `<`, `>` and `&` in strings.
        let w = Warning {
            span: None,
            message: "a <b> & c".into(),
            rule: Some(&rbuild_frontend::lint::rules::INVALID_DEFINITION_DESCRIPTION),
        };
        let v: serde_json::Value = serde_json::from_str(&check_json(&[w], None, "Dockerfile", src).unwrap()).unwrap();
        assert_eq!(v["warnings"][0]["detail"], "a <b> & c");
        assert_eq!(v["warnings"][0]["location"], serde_json::json!({}), "no lines: an empty location");
        let out =
            check_json(&[Warning { span: None, message: "<&>".into(), rule: None }], None, "Dockerfile", b"").unwrap();
        assert!(out.contains(r#""ruleName": "","#) && out.contains(r#""detail": "\u003c\u0026\u003e","#), "{out}");
        assert!(!out.contains("\"data\""), "an empty file has no data, as Go omits it: {out}");
    }

    #[test]
    fn build_summary_names_file_line_and_rule() {
        let out = build_summary(&[warning(3)], b"FROM alpine\n\nCMD echo hi\n");
        assert_eq!(
            out,
            "\n 1 warning found:\n - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended \
             behavior related to OS signals (line 3)\n   --> Dockerfile:3\n       3 | >>> CMD echo hi\n"
        );
        assert_eq!(build_summary(&[], b""), "");
    }
}
