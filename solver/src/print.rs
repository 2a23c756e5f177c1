//! The build graph as text, for `--print-graph`: Graphviz DOT ([`to_dot`]) and JSON
//! ([`to_json`]). Both show exactly the vertices the solver would run for `target` (every op
//! the target transitively reads, inputs before readers), with their ids, progress names and
//! Dockerfile spans.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::ir::{FileAction, Graph, Input, MountKind, Op, OpId, SourceOp};

/// The ops `target` needs, in topological order (inputs first).
fn needed(graph: &Graph, target: Option<Input>) -> Vec<(OpId, &Op)> {
    let mut keep = BTreeSet::new();
    let mut todo: Vec<OpId> = target.map(|t| t.op).into_iter().collect();
    while let Some(id) = todo.pop() {
        if !keep.insert(id) {
            continue;
        }
        if let Some(op) = graph.op(&id) {
            todo.extend(op.inputs().into_iter().map(|i| i.op));
        }
    }
    graph.topological().filter(|(id, _)| keep.contains(id)).collect()
}

/// Short id for display: the first 12 hex digits.
fn short(id: &OpId) -> String {
    id.to_hex().chars().take(12).collect()
}

/// What an op does, in a few words.
fn summary(op: &Op) -> String {
    match op {
        Op::Source(SourceOp::Image { reference, .. }) => format!("image {reference}"),
        Op::Source(SourceOp::Local { name, .. }) => format!("local {name}"),
        Op::Source(SourceOp::Http { url, .. }) => format!("http {url}"),
        Op::Source(SourceOp::Git { remote, reference, .. }) => match reference {
            Some(r) => format!("git {remote}#{r}"),
            None => format!("git {remote}"),
        },
        Op::Exec(e) => format!("exec {}", e.args.join(" ")),
        Op::File(f) => {
            let parts: Vec<String> = f
                .actions
                .iter()
                .map(|a| match a {
                    FileAction::Copy { src_paths, dest, .. } => format!("copy {} {dest}", src_paths.join(" ")),
                    FileAction::Mkfile { path, .. } => format!("mkfile {path}"),
                    FileAction::Mkdir { path, .. } => format!("mkdir {path}"),
                })
                .collect();
            if parts.is_empty() {
                "file (empty)".to_owned()
            } else {
                format!("file {}", parts.join("; "))
            }
        }
        Op::Merge(m) => format!("merge of {}", m.inputs.len()),
    }
}

/// Each input of `op` with the role it plays (`rootfs`, `mount /x`, `base`, `copy`, `layer N`),
/// in `Op::inputs` order.
fn roles(op: &Op) -> Vec<(Input, String)> {
    match op {
        Op::Exec(e) => e
            .rootfs
            .map(|r| (r, "rootfs".to_owned()))
            .into_iter()
            .chain(e.mounts.iter().filter_map(|m| {
                let kind = match &m.kind {
                    MountKind::Bind { .. } => "bind",
                    MountKind::Cache { .. } => "cache",
                    _ => "mount",
                };
                m.kind.input().map(|i| (i, format!("{kind} {}", m.target)))
            }))
            .collect(),
        Op::File(f) => f
            .base
            .map(|b| (b, "base".to_owned()))
            .into_iter()
            .chain(f.actions.iter().filter_map(|a| match a {
                FileAction::Copy { src, .. } => Some((*src, "copy".to_owned())),
                _ => None,
            }))
            .collect(),
        Op::Merge(m) => m.inputs.iter().enumerate().map(|(i, inp)| (*inp, format!("layer {i}"))).collect(),
        _ => op.inputs().into_iter().map(|i| (i, String::new())).collect(),
    }
}

/// A DOT double-quoted string.
fn dot_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Display labels are cut here so one huge heredoc does not make the drawing unreadable.
const LABEL_MAX: usize = 120;

fn truncate(s: &str) -> String {
    if s.chars().count() <= LABEL_MAX {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(LABEL_MAX).collect();
    t.push('…');
    t
}

/// Graphviz DOT of the vertices `target` needs: one node per op (progress name, what it does,
/// short id, Dockerfile lines), one edge per input labelled with its role; the target is drawn
/// with a double border.
pub fn to_dot(graph: &Graph, target: Option<Input>) -> String {
    let mut out = String::from("digraph rbuild {\n  rankdir=BT;\n  node [shape=box, fontname=\"monospace\"];\n");
    for (id, op) in needed(graph, target) {
        let meta = graph.meta(&id);
        let mut label = String::new();
        if let Some(name) = meta.map(|m| m.name.as_str()).filter(|n| !n.is_empty()) {
            label.push_str(&truncate(name));
            label.push('\n');
        }
        label.push_str(&truncate(&summary(op)));
        label.push('\n');
        label.push_str(&short(&id));
        if let Some(span) = meta.and_then(|m| m.span.as_ref()) {
            let _ = write!(label, " {}:{}", span.file, span.start_line);
            if span.end_line != span.start_line {
                let _ = write!(label, "-{}", span.end_line);
            }
        }
        let mut attrs = format!("label={}", dot_quote(&label));
        if target.is_some_and(|t| t.op == id) {
            attrs.push_str(", peripheries=2");
        }
        if meta.is_some_and(|m| m.ignore_cache) {
            attrs.push_str(", style=dashed");
        }
        let _ = writeln!(out, "  \"{}\" [{attrs}];", short(&id));
        for (input, role) in roles(op) {
            let _ = write!(out, "  \"{}\" -> \"{}\"", short(&input.op), short(&id));
            if !role.is_empty() {
                let _ = write!(out, " [label={}]", dot_quote(&role));
            }
            out.push_str(";\n");
        }
    }
    out.push_str("}\n");
    out
}

fn input_json(i: &Input) -> Value {
    json!({"op": i.op.to_string(), "output": i.output})
}

/// JSON of the vertices `target` needs, inputs first:
///
/// ```json
/// {"target": {"op": "sha256:…", "output": 0},
///  "ops": [{"id": "sha256:…", "name": "[2/3] RUN make", "span": {"file": "Dockerfile",
///           "start_line": 3, "end_line": 3}, "ignore_cache": false,
///           "inputs": [{"op": "sha256:…", "output": 0, "role": "rootfs"}],
///           "op": {"Exec": {…}}}]}
/// ```
///
/// `op` is the op's own serialization (what its id is the digest of); `target` is `null` for
/// an empty result.
pub fn to_json(graph: &Graph, target: Option<Input>) -> Value {
    let ops: Vec<Value> = needed(graph, target)
        .into_iter()
        .map(|(id, op)| {
            let meta = graph.meta(&id);
            let inputs: Vec<Value> = roles(op)
                .iter()
                .map(|(i, role)| {
                    let mut v = input_json(i);
                    if let Some(o) = v.as_object_mut() {
                        o.insert("role".into(), Value::from(role.as_str()));
                    }
                    v
                })
                .collect();
            json!({
                "id": id.to_string(),
                "name": meta.map(|m| m.name.clone()).unwrap_or_default(),
                "span": meta.and_then(|m| m.span.as_ref()).map(|s| json!({
                    "file": s.file, "start_line": s.start_line, "end_line": s.end_line
                })),
                "ignore_cache": meta.is_some_and(|m| m.ignore_cache),
                "inputs": inputs,
                "op": serde_json::to_value(op).unwrap_or(Value::Null),
            })
        })
        .collect();
    json!({"target": target.as_ref().map(input_json), "ops": ops})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{
        ExecOp, FileOp, GraphBuilder, MergeOp, Mount, NetworkMode, Platform, SecurityMode, SourceSpan, VertexMeta,
    };

    fn meta(name: &str, line: usize) -> VertexMeta {
        VertexMeta {
            name: name.into(),
            span: Some(SourceSpan { file: "Dockerfile".into(), start_line: line, end_line: line }),
            ignore_cache: false,
        }
    }

    /// image → exec (with a cache mount seeded from a local source) → merge with a file op;
    /// plus one op the target does not need.
    fn sample() -> (Graph, Input, OpId) {
        let mut b = GraphBuilder::new();
        let img = b
            .add(
                Op::Source(SourceOp::Image {
                    reference: "docker.io/library/busybox:latest".into(),
                    digest: None,
                    platform: Platform::host(),
                }),
                meta("[1/3] FROM busybox", 1),
            )
            .unwrap();
        let ctx = b
            .add(Op::Source(SourceOp::Local { name: "context".into(), exclude: vec![] }), VertexMeta::default())
            .unwrap();
        let run = b
            .add(
                Op::Exec(ExecOp {
                    rootfs: Some(Input::of(img)),
                    args: vec!["/bin/sh".into(), "-c".into(), "echo \"hi\"".into()],
                    env: vec![],
                    cwd: "/".into(),
                    user: String::new(),
                    network: NetworkMode::Default,
                    security: SecurityMode::Sandbox,
                    platform: Platform::host(),
                    mounts: vec![Mount {
                        target: "/src".into(),
                        kind: MountKind::Bind { source: Input::of(ctx), selector: "/".into(), readonly: true },
                    }],
                    extra_hosts: vec![],
                    ulimits: vec![],
                    shm_size: None,
                }),
                meta("[2/3] RUN echo \"hi\"", 2),
            )
            .unwrap();
        let copy = b
            .add(
                Op::File(FileOp {
                    base: None,
                    actions: vec![FileAction::Mkdir {
                        path: "/a".into(),
                        mode: 0o755,
                        make_parents: true,
                        chown: None,
                    }],
                }),
                meta("[3/3] COPY --link a /a", 3),
            )
            .unwrap();
        let merge = b
            .add(Op::Merge(MergeOp { inputs: vec![Input::of(run), Input::of(copy)] }), meta("[3/3] LINK COPY", 3))
            .unwrap();
        let unused = b
            .add(
                Op::Source(SourceOp::Image { reference: "unused".into(), digest: None, platform: Platform::host() }),
                VertexMeta::default(),
            )
            .unwrap();
        (b.build(), Input::of(merge), unused)
    }

    #[test]
    fn json_lists_what_runs() {
        let (g, target, unused) = sample();
        let v = to_json(&g, Some(target));
        let ops = v["ops"].as_array().unwrap();
        assert_eq!(ops.len(), 5, "{v:#}");
        assert!(ops.iter().all(|o| o["id"] != unused.to_string()));
        assert_eq!(v["target"]["op"], target.op.to_string());
        // Inputs come before the ops reading them.
        let pos = |id: &Value| ops.iter().position(|o| o["id"] == *id).unwrap();
        for (i, o) in ops.iter().enumerate() {
            for inp in o["inputs"].as_array().unwrap() {
                assert!(pos(&inp["op"]) < i);
            }
        }
        let run = ops.iter().find(|o| o["op"].get("Exec").is_some()).unwrap();
        assert_eq!(run["name"], "[2/3] RUN echo \"hi\"");
        assert_eq!(run["span"]["start_line"], 2);
        let roles: Vec<&str> = run["inputs"].as_array().unwrap().iter().map(|i| i["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["rootfs", "bind /src"]);
        // The serialized op hashes to its id.
        let op: Op = serde_json::from_value(run["op"].clone()).unwrap();
        assert_eq!(op.id().to_string(), run["id"]);
        assert_eq!(to_json(&g, None), json!({"target": null, "ops": []}));
    }

    #[test]
    fn dot_draws_nodes_and_labelled_edges() {
        let (g, target, unused) = sample();
        let dot = to_dot(&g, Some(target));
        assert!(dot.starts_with("digraph rbuild {"));
        assert!(dot.trim_end().ends_with('}'));
        assert_eq!(dot.matches("[label=").count() - dot.matches("-> ").count(), 5, "{dot}");
        assert!(!dot.contains(&short(&unused)));
        assert!(dot.contains("RUN echo \\\"hi\\\""), "{dot}");
        assert!(dot.contains("[label=\"layer 1\"]"));
        assert!(dot.contains("[label=\"bind /src\"]"));
        assert!(dot.contains("peripheries=2"));
        assert!(dot.contains("Dockerfile:2"));
        assert_eq!(
            to_dot(&g, None),
            "digraph rbuild {\n  rankdir=BT;\n  node [shape=box, fontname=\"monospace\"];\n}\n"
        );
    }
}
