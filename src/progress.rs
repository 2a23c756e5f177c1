//! Progress rendering: BuildKit's plain format, line by line, on stderr.
//!
//! ```text
//! #3 [build 2/3] RUN make
//! #3 0.412 gcc -o app main.c
//! #3 DONE 1.2s
//! #4 [build 3/3] COPY app /usr/bin/
//! #4 CACHED
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use rbuild_solver::ir::OpId;
use rbuild_solver::ProgressEvent;
use tokio::sync::mpsc;

#[derive(Debug)]
struct Vertex {
    number: usize,
    started: Instant,
    partial: Vec<u8>,
}

/// Renders events until the channel closes.
pub async fn render_plain(mut rx: mpsc::UnboundedReceiver<ProgressEvent>, quiet: bool) {
    let mut vertices: HashMap<OpId, Vertex> = HashMap::new();
    let mut next = 1;
    let mut err = std::io::stderr();
    while let Some(ev) = rx.recv().await {
        if quiet {
            continue;
        }
        let mut number_for = |id: OpId, vertices: &mut HashMap<OpId, Vertex>| {
            vertices
                .entry(id)
                .or_insert_with(|| {
                    let v = Vertex { number: next, started: Instant::now(), partial: Vec::new() };
                    next += 1;
                    v
                })
                .number
        };
        let _ = match ev {
            ProgressEvent::Started { id, name } => {
                let n = number_for(id, &mut vertices);
                if let Some(v) = vertices.get_mut(&id) {
                    v.started = Instant::now();
                }
                writeln!(err, "#{n} {name}")
            }
            ProgressEvent::Cached { id, name } => {
                let n = number_for(id, &mut vertices);
                writeln!(err, "#{n} {name}\n#{n} CACHED")
            }
            ProgressEvent::Log { id, data, .. } => {
                let n = number_for(id, &mut vertices);
                let Some(v) = vertices.get_mut(&id) else { continue };
                v.partial.extend_from_slice(&data);
                let t = v.started.elapsed().as_secs_f64();
                let mut out = String::new();
                while let Some(pos) = v.partial.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = v.partial.drain(..=pos).collect();
                    out.push_str(&format!("#{n} {t:.3} {}\n", String::from_utf8_lossy(&line[..line.len() - 1])));
                }
                err.write_all(out.as_bytes())
            }
            ProgressEvent::Status { id, text } => {
                let n = number_for(id, &mut vertices);
                writeln!(err, "#{n} {text}")
            }
            ProgressEvent::Completed { id, duration, error } => {
                let n = number_for(id, &mut vertices);
                if let Some(v) = vertices.get_mut(&id) {
                    if !v.partial.is_empty() {
                        let line = String::from_utf8_lossy(&v.partial).into_owned();
                        v.partial.clear();
                        let _ = writeln!(err, "#{n} {:.3} {line}", duration.as_secs_f64());
                    }
                }
                match error {
                    None => writeln!(err, "#{n} DONE {:.1}s", duration.as_secs_f64()),
                    Some(e) => writeln!(err, "#{n} ERROR: {e}"),
                }
            }
            _ => Ok(()),
        };
    }
    let _ = err.flush();
}
