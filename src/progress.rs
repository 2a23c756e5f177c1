//! Progress rendering. The solver and worker emit events; this module shows them:
//!
//! - `plain`: BuildKit's line-by-line format, for CI logs:
//!   ```text
//!   #3 [build 2/3] RUN make
//!   #3 0.412 gcc -o app main.c
//!   #3 DONE 1.2s
//!   #4 [build 3/3] COPY app /usr/bin/
//!   #4 CACHED
//!   ```
//! - `tty`: live lines for the running steps (the tail of their output), finished steps above.
//! - `rawjson`: one JSON object per event, for tools; the build checks' findings come first,
//!   one `warning` event each, in BuildKit's `VertexWarning` fields ([`rawjson_warnings`]).
//! - `quiet`: nothing (errors are still reported by the caller).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rbuild_frontend::Warning;
use rbuild_solver::ir::OpId;
use rbuild_solver::{LogStream, ProgressEvent};
use tokio::sync::mpsc;

use crate::checks::{go_escape, line_ranges, Range, SourceInfo};
use crate::cli::ProgressMode;

/// The renderer actually used for `mode` in this environment.
pub fn effective(mode: ProgressMode, quiet: bool) -> ProgressMode {
    if quiet || std::env::var_os("RBUILD_NO_PROGRESS").is_some_and(|v| v == "quiet") {
        return ProgressMode::Quiet;
    }
    match mode {
        ProgressMode::Auto => {
            let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
            if std::io::stderr().is_terminal() && !ci && std::env::var_os("RBUILD_NO_PROGRESS").is_none() {
                ProgressMode::Tty
            } else {
                ProgressMode::Plain
            }
        }
        other => other,
    }
}

/// Renders events until the channel closes.
pub async fn render(rx: mpsc::UnboundedReceiver<ProgressEvent>, mode: ProgressMode) {
    match mode {
        ProgressMode::Quiet => drain(rx).await,
        ProgressMode::Rawjson => render_json(rx).await,
        ProgressMode::Tty => render_tty(rx).await,
        ProgressMode::Plain | ProgressMode::Auto => render_plain(rx).await,
    }
}

async fn drain(mut rx: mpsc::UnboundedReceiver<ProgressEvent>) {
    while rx.recv().await.is_some() {}
}

/// Splits complete lines off a per-vertex buffer.
fn take_lines(partial: &mut Vec<u8>, data: &[u8]) -> Vec<String> {
    partial.extend_from_slice(data);
    let mut out = Vec::new();
    while let Some(pos) = partial.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = partial.drain(..=pos).collect();
        out.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
    }
    out
}

#[derive(Debug)]
struct Vertex {
    number: usize,
    started: Instant,
    partial: Vec<u8>,
    bar: Option<ProgressBar>,
    name: String,
}

#[derive(Debug, Default)]
struct Vertices {
    map: HashMap<OpId, Vertex>,
    next: usize,
}

impl Vertices {
    fn get(&mut self, id: OpId, name: Option<&str>) -> &mut Vertex {
        let next = &mut self.next;
        let v = self.map.entry(id).or_insert_with(|| {
            *next += 1;
            Vertex { number: *next, started: Instant::now(), partial: Vec::new(), bar: None, name: String::new() }
        });
        if let Some(n) = name {
            v.name = n.to_owned();
        }
        v
    }
}

async fn render_plain(mut rx: mpsc::UnboundedReceiver<ProgressEvent>) {
    let mut vs = Vertices::default();
    let mut err = std::io::stderr();
    while let Some(ev) = rx.recv().await {
        let mut out = String::new();
        match ev {
            ProgressEvent::Started { id, name } => {
                let v = vs.get(id, Some(&name));
                v.started = Instant::now();
                out = format!("#{} {name}\n", v.number);
            }
            ProgressEvent::Cached { id, name } => {
                let n = vs.get(id, Some(&name)).number;
                out = format!("#{n} {name}\n#{n} CACHED\n");
            }
            ProgressEvent::Log { id, data, .. } => {
                let v = vs.get(id, None);
                let t = v.started.elapsed().as_secs_f64();
                for line in take_lines(&mut v.partial, &data) {
                    out.push_str(&format!("#{} {t:.3} {line}\n", v.number));
                }
            }
            ProgressEvent::Status { id, text } => {
                out = format!("#{} {text}\n", vs.get(id, None).number);
            }
            ProgressEvent::Completed { id, duration, error } => {
                let v = vs.get(id, None);
                if !v.partial.is_empty() {
                    out.push_str(&format!(
                        "#{} {:.3} {}\n",
                        v.number,
                        duration.as_secs_f64(),
                        String::from_utf8_lossy(&v.partial)
                    ));
                    v.partial.clear();
                }
                match error {
                    None => out.push_str(&format!("#{} DONE {:.1}s\n", v.number, duration.as_secs_f64())),
                    Some(e) => out.push_str(&format!("#{} ERROR: {e}\n", v.number)),
                }
            }
            _ => {}
        }
        let _ = err.write_all(out.as_bytes());
    }
    let _ = err.flush();
}

async fn render_tty(mut rx: mpsc::UnboundedReceiver<ProgressEvent>) {
    let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
    let style = ProgressStyle::with_template(" {spinner} {msg} {elapsed:>4}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ");
    let mut vs = Vertices::default();
    let build_start = Instant::now();
    while let Some(ev) = rx.recv().await {
        match ev {
            ProgressEvent::Started { id, name } => {
                let v = vs.get(id, Some(&name));
                v.started = Instant::now();
                let bar = mp.add(
                    ProgressBar::new_spinner()
                        .with_style(style.clone())
                        .with_message(format!("=> {}", truncate(&name, 70))),
                );
                bar.enable_steady_tick(Duration::from_millis(100));
                v.bar = Some(bar);
            }
            ProgressEvent::Cached { name, .. } => {
                let _ = mp.println(format!(" => CACHED {name}"));
            }
            ProgressEvent::Log { id, data, stream } => {
                let v = vs.get(id, None);
                let lines = take_lines(&mut v.partial, &data);
                if let (Some(bar), Some(last)) = (&v.bar, lines.last()) {
                    let mark = if stream == LogStream::Stderr { "!" } else { "#" };
                    bar.set_message(format!("=> {}\n   => {mark} {}", truncate(&v.name, 70), truncate(last, 70)));
                }
            }
            ProgressEvent::Status { id, text } => {
                let v = vs.get(id, None);
                if let Some(bar) = &v.bar {
                    bar.set_message(format!("=> {} ({})", truncate(&v.name, 50), truncate(&text, 30)));
                }
            }
            ProgressEvent::Completed { id, duration, error } => {
                let v = vs.get(id, None);
                if let Some(bar) = v.bar.take() {
                    bar.finish_and_clear();
                    mp.remove(&bar);
                }
                let line = match error {
                    None => format!(" => {:<70} {:>6.1}s", truncate(&v.name, 70), duration.as_secs_f64()),
                    Some(e) => format!(" => ERROR {} {:.1}s: {e}", v.name, duration.as_secs_f64()),
                };
                let _ = mp.println(line);
            }
            _ => {}
        }
    }
    let _ = mp.println(format!("[+] Built in {:.1}s", build_start.elapsed().as_secs_f64()));
    let _ = mp.clear();
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

async fn render_json(mut rx: mpsc::UnboundedReceiver<ProgressEvent>) {
    let start = Instant::now();
    let mut err = std::io::stderr();
    while let Some(ev) = rx.recv().await {
        let t = start.elapsed().as_secs_f64();
        let v = match ev {
            ProgressEvent::Started { id, name } => {
                serde_json::json!({"time": t, "vertex": id.to_string(), "event": "started", "name": name})
            }
            ProgressEvent::Cached { id, name } => {
                serde_json::json!({"time": t, "vertex": id.to_string(), "event": "cached", "name": name})
            }
            ProgressEvent::Completed { id, duration, error } => serde_json::json!({
                "time": t, "vertex": id.to_string(), "event": if error.is_some() { "error" } else { "completed" },
                "duration": duration.as_secs_f64(), "error": error,
            }),
            ProgressEvent::Log { id, stream, data } => serde_json::json!({
                "time": t, "vertex": id.to_string(), "event": "log",
                "stream": if stream == LogStream::Stdout { 1 } else { 2 }, "data": String::from_utf8_lossy(&data),
            }),
            ProgressEvent::Status { id, text } => {
                serde_json::json!({"time": t, "vertex": id.to_string(), "event": "status", "text": text})
            }
            _ => continue,
        };
        let _ = writeln!(err, "{v}");
    }
}

/// A finding as BuildKit reports it in its status stream (`client.VertexWarning`, the
/// `warnings` of a `SolveStatus`), with Go's encoding: `short` and `detail` are base64.
///
/// BuildKit's `vertex` is the vertex that loaded the Dockerfile; rbuild reads the Dockerfile
/// without one, so the field (optional in BuildKit's JSON too) is left out.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct VertexWarning {
    /// Always 1: the Dockerfile frontend's level for its findings.
    level: u8,
    /// `Rule: message (line N)`, what `docker build` lists after the build.
    short: String,
    /// The rule's description.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    detail: Vec<String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    url: &'static str,
    source_info: SourceInfo,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    range: Vec<Range>,
}

impl VertexWarning {
    fn new(w: &Warning, source: &SourceInfo) -> VertexWarning {
        use base64::Engine as _;
        let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        VertexWarning {
            level: 1,
            short: b64(&w.short()),
            detail: w.rule.map(|r| vec![b64(r.description)]).unwrap_or_default(),
            url: w.rule.and_then(|r| r.url).unwrap_or_default(),
            source_info: source.clone(),
            range: w.span.as_ref().map(|s| line_ranges(s.start_line, s.end_line)).unwrap_or_default(),
        }
    }
}

/// A `--progress=rawjson` line: the event's kind, then its fields.
#[derive(Debug, serde::Serialize)]
struct WarningEvent {
    event: &'static str,
    #[serde(flatten)]
    warning: VertexWarning,
}

/// The `--progress=rawjson` lines of the build's findings: one `{"event":"warning", ...}`
/// object per finding with the fields of BuildKit's `VertexWarning`, the Dockerfile `filename`
/// (bytes `source`) as their `sourceInfo`. BuildKit's frontend reports findings while it
/// converts the Dockerfile, before any step runs: print these before the steps' events. Like
/// BuildKit's, they carry no time.
pub fn rawjson_warnings(warnings: &[Warning], filename: &str, source: &[u8]) -> serde_json::Result<String> {
    let info = SourceInfo::dockerfile(filename, source);
    let mut out = String::new();
    for w in warnings {
        let line = serde_json::to_string(&WarningEvent { event: "warning", warning: VertexWarning::new(w, &info) })?;
        out.push_str(&go_escape(&line));
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use rbuild_solver::ir::SourceSpan;

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn rawjson_warnings_are_buildkits_vertex_warnings() {
        let src = b"FROM alpine\nCMD echo \\\n  hi\n";
        let warnings = [
            Warning {
                span: Some(SourceSpan { file: "Dockerfile".into(), start_line: 2, end_line: 3 }),
                message: "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals"
                    .into(),
                rule: Some(&rbuild_frontend::lint::rules::JSON_ARGS_RECOMMENDED),
            },
            Warning { span: None, message: "One or more build-args [X] were not consumed".into(), rule: None },
        ];
        let out = rawjson_warnings(&warnings, "Dockerfile", src).unwrap();
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let source_info = serde_json::json!({"filename": "Dockerfile", "data": b64(src), "language": "Dockerfile"});
        assert_eq!(
            lines,
            [
                serde_json::json!({
                    "event": "warning",
                    "level": 1,
                    "short": b64(
                        b"JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior \
                          related to OS signals (line 2)"
                    ),
                    "detail": [b64(rbuild_frontend::lint::rules::JSON_ARGS_RECOMMENDED.description.as_bytes())],
                    "url": "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/",
                    "sourceInfo": source_info,
                    "range": [
                        {"start": {"line": 2}, "end": {"line": 2}},
                        {"start": {"line": 3}, "end": {"line": 3}},
                    ],
                }),
                serde_json::json!({
                    "event": "warning",
                    "level": 1,
                    "short": b64(b"One or more build-args [X] were not consumed"),
                    "sourceInfo": source_info,
                }),
            ]
        );
        assert!(out.starts_with("{\"event\":\"warning\",\"level\":1,\"short\":"), "BuildKit's field order: {out}");
        assert_eq!(rawjson_warnings(&[], "Dockerfile", src).unwrap(), "");
    }
}
