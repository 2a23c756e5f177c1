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
//! - `rawjson`: one JSON object per event, for tools.
//! - `quiet`: nothing (errors are still reported by the caller).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rbuild_solver::ir::OpId;
use rbuild_solver::{LogStream, ProgressEvent};
use tokio::sync::mpsc;

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
