//! `--explain`: for every step that runs, one line saying why it missed the cache.
//!
//! After each successful build, what every numbered step's cache key was made of (its own
//! definition, its inputs' keys, the image digest or context files behind them) is kept in
//! the store under the step's identity: the Dockerfile, the target and the step's position and
//! instruction (`[build 3/5] COPY`). When a step runs, its ingredients are compared with that
//! record. Values of variables named like secrets (`*TOKEN*`, `*PASSWORD*`, `*SECRET*`...)
//! are stored hashed and never printed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rbuild_solver::ir::{Graph, Op, OpId, SourceOp};
use rbuild_solver::{Prepared, ProgressEvent};
use rbuild_worker::LocalWorker;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc::UnboundedSender;

/// What a step's key was made of, as remembered between builds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StepRecord {
    key: String,
    /// The op without its input references, secret-looking values hashed.
    op: Value,
    inputs: Vec<InputRecord>,
    /// The digest of the context paths the step reads (a COPY from, or a bind mount of, a
    /// context), which its key covers.
    #[serde(default)]
    content: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct InputRecord {
    key: String,
    name: String,
    kind: InputKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum InputKind {
    /// A base image.
    Image { reference: String, digest: Option<String> },
    /// A local context, by the digest of its content.
    Context { name: String, content: Option<String> },
    /// Another step.
    Step,
}

/// Explains cache misses of one build and remembers its steps for the next one.
#[derive(Debug)]
pub struct Explainer {
    dir: PathBuf,
    tmp: PathBuf,
    build_args: BTreeSet<String>,
    no_cache: bool,
    /// Identity and record of each numbered step of this build.
    current: HashMap<OpId, (String, StepRecord)>,
    /// The record of the same step from the last successful build.
    previous: HashMap<OpId, StepRecord>,
    /// Files of the build context now, by path.
    context_files: Option<BTreeMap<String, String>>,
    names: HashMap<OpId, String>,
    /// What was said, for renderers that do not keep status lines (tty).
    said: Mutex<Vec<String>>,
}

/// Names of variables whose values are never printed or stored.
fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["TOKEN", "PASSWORD", "PASSWD", "SECRET", "API_KEY", "PRIVATE_KEY", "CREDENTIAL"].iter().any(|s| n.contains(s))
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `[build 3/5] COPY src/ /app` → `[build 3/5] COPY`; `None` for vertices that are not
/// numbered Dockerfile steps (the context, inline documents).
fn step_label(name: &str) -> Option<String> {
    let rest = name.strip_prefix('[')?;
    let (label, after) = rest.split_once("] ")?;
    let (done, total) = label.rsplit(' ').next()?.split_once('/')?;
    if done.trim().parse::<u32>().is_err() || total.parse::<u32>().is_err() {
        return None;
    }
    let keyword = after.split_whitespace().next()?;
    Some(format!("[{label}] {keyword}"))
}

/// The op as JSON with every input reference blanked (a parent's change is reported as the
/// parent's, not as this step's) and secret-looking environment values hashed.
fn normalized_op(op: &Op) -> Value {
    fn blank_inputs(v: &mut Value) {
        match v {
            Value::Object(map) => {
                if map.len() == 2 && map.contains_key("op") && map.contains_key("output") {
                    map.insert("op".into(), Value::String(String::new()));
                    return;
                }
                map.values_mut().for_each(blank_inputs);
            }
            Value::Array(items) => items.iter_mut().for_each(blank_inputs),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(op).unwrap_or(Value::Null);
    blank_inputs(&mut v);
    if let Some(Value::Array(env)) = v.pointer_mut("/Exec/env") {
        for item in env.iter_mut() {
            if let Value::String(s) = item {
                if let Some((name, value)) = s.split_once('=') {
                    if is_secret_name(name) {
                        *s = format!("{name}=sha256:{}", sha_hex(value.as_bytes()));
                    }
                }
            }
        }
    }
    v
}

fn env_map(op: &Value) -> BTreeMap<String, String> {
    let Some(Value::Array(env)) = op.pointer("/Exec/env") else { return BTreeMap::new() };
    env.iter()
        .filter_map(Value::as_str)
        .filter_map(|s| s.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn short(digest: Option<&str>) -> String {
    match digest {
        Some(d) => {
            d.strip_prefix("sha256:").map_or_else(|| d.to_owned(), |h| format!("sha256:{}", &h[..h.len().min(12)]))
        }
        None => "none".into(),
    }
}

impl Explainer {
    /// Prepares explanations for a prepared build. `scope` names the build (the Dockerfile
    /// and target), `build_args` the `--build-arg` names given.
    pub fn new(
        store_root: &std::path::Path,
        tmp: &std::path::Path,
        scope: &str,
        build_args: BTreeSet<String>,
        no_cache: bool,
        prepared: &Prepared,
        worker: &LocalWorker,
    ) -> Explainer {
        let dir = store_root.join("explain");
        let graph = prepared.graph();
        let mut current = HashMap::new();
        let mut previous = HashMap::new();
        let mut names = HashMap::new();
        for id in prepared.order() {
            let (Some(op), Some(meta), Some(keys)) = (graph.op(id), graph.meta(id), prepared.keys().get(id)) else {
                continue;
            };
            names.insert(*id, meta.name.clone());
            let Some(label) = step_label(&meta.name) else { continue };
            let identity = sha_hex(format!("{scope}\0{label}").as_bytes());
            let inputs = op
                .inputs()
                .iter()
                .zip(&keys.inputs)
                .map(|(input, key)| InputRecord {
                    key: key.to_hex(),
                    name: graph.meta(&input.op).map(|m| m.name.clone()).unwrap_or_default(),
                    kind: input_kind(graph, prepared, &input.op),
                })
                .collect();
            let content = keys.content.map(hex::encode);
            let record = StepRecord { key: keys.key.to_hex(), op: normalized_op(op), inputs, content };
            if let Some(prev) = read_json::<StepRecord>(&dir.join(format!("{identity}.json"))) {
                previous.insert(*id, prev);
            }
            current.insert(*id, (identity, record));
        }
        let context_files = worker.context_file_digests("context").map(|v| v.into_iter().collect());
        Explainer {
            dir,
            tmp: tmp.to_owned(),
            build_args,
            no_cache,
            current,
            previous,
            context_files,
            names,
            said: Mutex::new(Vec::new()),
        }
    }

    /// Why step `id`, which is about to run, missed the cache (`None` for vertices that are
    /// not numbered steps).
    pub fn explain(&self, id: &OpId, graph: &Graph) -> Option<String> {
        let (_, cur) = self.current.get(id)?;
        let reasons = if graph.meta(id).is_some_and(|m| m.ignore_cache) {
            vec![if self.no_cache { "--no-cache".to_owned() } else { "--no-cache-filter".to_owned() }]
        } else {
            self.reasons(self.previous.get(id), cur)
        };
        let text = format!("cache miss: {}", reasons.join("; "));
        if let Ok(mut said) = self.said.lock() {
            said.push(format!("{}: {text}", self.names.get(id).map_or("", String::as_str)));
        }
        Some(text)
    }

    /// Every explanation given, `name: cache miss: ...`.
    pub fn said(&self) -> Vec<String> {
        self.said.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn reasons(&self, prev: Option<&StepRecord>, cur: &StepRecord) -> Vec<String> {
        let Some(prev) = prev else { return vec!["no earlier build of this step".into()] };
        if prev.key == cur.key {
            return vec!["its cached result is no longer in the store (pruned)".into()];
        }
        let mut out = self.op_reasons(&prev.op, &cur.op);
        if let (Some(a), Some(_)) = (&prev.content, &cur.content) {
            if prev.content != cur.content && prev.op == cur.op {
                out.push(self.context_reason(a, &cur.op));
            }
        }
        if prev.inputs.len() != cur.inputs.len() {
            out.push("its inputs changed".into());
        } else {
            for (p, c) in prev.inputs.iter().zip(&cur.inputs) {
                if p.key != c.key {
                    out.push(self.input_reason(p, c));
                }
            }
        }
        if out.is_empty() {
            out.push("cache key changed".into());
        }
        out.dedup();
        out
    }

    fn op_reasons(&self, prev: &Value, cur: &Value) -> Vec<String> {
        if prev == cur {
            return Vec::new();
        }
        let mut out = Vec::new();
        if let (Some(p), Some(c)) = (prev.pointer("/Source/Image"), cur.pointer("/Source/Image")) {
            if p.get("reference") != c.get("reference") {
                out.push(format!(
                    "base image changed ({} -> {})",
                    p.get("reference").and_then(Value::as_str).unwrap_or(""),
                    c.get("reference").and_then(Value::as_str).unwrap_or("")
                ));
            } else {
                out.push(format!(
                    "base image digest changed ({} -> {})",
                    short(p.get("digest").and_then(Value::as_str)),
                    short(c.get("digest").and_then(Value::as_str))
                ));
            }
            return out;
        }
        if let (Some(p), Some(c)) = (prev.get("Exec"), cur.get("Exec")) {
            let (pe, ce) = (env_map(prev), env_map(cur));
            for name in pe.keys().chain(ce.keys()).collect::<BTreeSet<_>>() {
                let (a, b) = (pe.get(name), ce.get(name));
                if a == b {
                    continue;
                }
                let kind = if self.build_args.contains(name) { "ARG" } else { "env" };
                if is_secret_name(name) {
                    out.push(format!("{kind} {name} changed"));
                } else {
                    let show = |v: Option<&String>| v.map_or_else(|| "unset".to_owned(), |v| format!("{v:?}"));
                    out.push(format!("{kind} {name} changed ({} -> {})", show(a), show(b)));
                }
            }
            for (field, what) in [
                ("args", "command changed"),
                ("cwd", "WORKDIR changed"),
                ("user", "USER changed"),
                ("network", "network mode changed"),
                ("security", "security mode changed"),
                ("mounts", "RUN --mount options changed"),
                ("platform", "platform changed"),
            ] {
                if p.get(field) != c.get(field) {
                    out.push(what.to_owned());
                }
            }
        }
        if out.is_empty() {
            out.push("instruction changed".into());
        }
        out
    }

    fn input_reason(&self, prev: &InputRecord, cur: &InputRecord) -> String {
        match (&prev.kind, &cur.kind) {
            (InputKind::Image { digest: a, reference: ra }, InputKind::Image { digest: b, reference: rb }) => {
                if ra != rb {
                    format!("base image changed ({ra} -> {rb})")
                } else {
                    format!("base image digest changed ({} -> {})", short(a.as_deref()), short(b.as_deref()))
                }
            }
            (InputKind::Context { content: Some(a), .. }, InputKind::Context { name, content: Some(_) }) => {
                let before = read_json::<BTreeMap<String, String>>(&self.dir.join(format!("context-{a}.json")));
                match (before, &self.context_files) {
                    (Some(before), Some(now)) if name == "context" => files_changed(&before, now),
                    _ => "build context changed".into(),
                }
            }
            // The label, not the whole name: a name shows variable values.
            _ => format!("parent step {} changed", step_label(&cur.name).unwrap_or_else(|| cur.name.clone())),
        }
    }

    /// Which of the context files a step reads changed since the build whose step read
    /// content `before` (a digest), as far as the step's source paths tell.
    fn context_reason(&self, before: &str, op: &Value) -> String {
        let old = read_json::<BTreeMap<String, String>>(&self.dir.join(format!("context-{before}.json")));
        let (Some(old), Some(now)) = (old, &self.context_files) else { return "build context changed".into() };
        let prefixes = read_prefixes(op);
        let keep = |map: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            map.iter()
                .filter(|(path, _)| {
                    prefixes.is_empty()
                        || prefixes
                            .iter()
                            .any(|p| p.as_os_str().is_empty() || std::path::Path::new(path).starts_with(p))
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        files_changed(&keep(&old), &keep(now))
    }

    /// Remembers this build's steps (call after it succeeded).
    pub fn save(&self) {
        if std::fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        for (identity, record) in self.current.values() {
            write_json(&self.dir.join(format!("{identity}.json")), &self.tmp, record);
            // What the step read, for the next build's explanation.
            if let (Some(c), Some(files)) = (&record.content, &self.context_files) {
                let path = self.dir.join(format!("context-{c}.json"));
                if !path.exists() {
                    write_json(&path, &self.tmp, files);
                }
            }
            for input in &record.inputs {
                if let InputKind::Context { name, content: Some(c) } = &input.kind {
                    let path = self.dir.join(format!("context-{c}.json"));
                    if name == "context" && !path.exists() {
                        if let Some(files) = &self.context_files {
                            write_json(&path, &self.tmp, files);
                        }
                    }
                }
            }
        }
    }
}

fn input_kind(graph: &Graph, prepared: &Prepared, id: &OpId) -> InputKind {
    match graph.op(id) {
        Some(Op::Source(SourceOp::Image { reference, digest, .. })) => {
            InputKind::Image { reference: reference.clone(), digest: digest.clone() }
        }
        Some(Op::Source(SourceOp::Local { name, .. })) => InputKind::Context {
            name: name.clone(),
            content: prepared.keys().get(id).and_then(|k| k.content).map(hex::encode),
        },
        _ => InputKind::Step,
    }
}

/// The context paths (literal parts, before any wildcard) a normalized op reads: its COPY
/// sources and bind-mount selectors. Empty: unknown, all of them.
fn read_prefixes(op: &Value) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Some(actions) = op.pointer("/File/actions").and_then(Value::as_array) {
        for a in actions {
            for p in a.pointer("/Copy/src_paths").and_then(Value::as_array).into_iter().flatten() {
                out.extend(p.as_str().map(rbuild_worker::source_prefix));
            }
        }
    }
    if let Some(mounts) = op.pointer("/Exec/mounts").and_then(Value::as_array) {
        for m in mounts {
            out.extend(m.pointer("/kind/Bind/selector").and_then(Value::as_str).map(rbuild_worker::source_prefix));
        }
    }
    out
}

/// `src/main.c changed`, `a and 2 more files changed`...
fn files_changed(before: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> String {
    let mut changes = Vec::new();
    for (path, digest) in now {
        match before.get(path) {
            None => changes.push(format!("{path} added")),
            Some(d) if d != digest => changes.push(format!("{path} changed")),
            Some(_) => {}
        }
    }
    for path in before.keys().filter(|p| !now.contains_key(*p)) {
        changes.push(format!("{path} removed"));
    }
    match changes.len() {
        0 => "build context changed (modes, links or directories)".into(),
        1..=3 => changes.join(", "),
        n => format!("{} and {} more context files changed", changes[..3].join(", "), n - 3),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Best effort: a record that cannot be written only costs the next explanation.
fn write_json<T: Serialize>(path: &std::path::Path, tmp_dir: &std::path::Path, value: &T) {
    let Ok(bytes) = serde_json::to_vec(value) else { return };
    let tmp = tmp_dir.join(format!("explain-{}", sha_hex(path.as_os_str().as_encoded_bytes())));
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// With `store` (`--explain`), wraps the progress channel so that each step's start is
/// followed by the reason it missed the cache; otherwise returns `tx` unchanged.
#[allow(clippy::too_many_arguments)]
pub fn attach(
    store: Option<&rbuild_cache::Store>,
    tx: UnboundedSender<ProgressEvent>,
    dockerfile: &std::path::Path,
    target: Option<&str>,
    build_args: BTreeSet<String>,
    no_cache: bool,
    prepared: &Prepared,
    worker: &LocalWorker,
) -> (UnboundedSender<ProgressEvent>, Option<Arc<Explainer>>) {
    let Some(store) = store else { return (tx, None) };
    // The same Dockerfile is the same steps, from whatever directory it is built.
    let dockerfile = std::fs::canonicalize(dockerfile).unwrap_or_else(|_| dockerfile.to_owned());
    let scope = format!("{}\0{}", dockerfile.display(), target.unwrap_or(""));
    let explainer =
        Arc::new(Explainer::new(store.root(), store.tmp_dir(), &scope, build_args, no_cache, prepared, worker));
    let (wrapped, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (ex, graph) = (explainer.clone(), prepared.graph().clone());
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let extra = match &ev {
                ProgressEvent::Started { id, .. } => {
                    ex.explain(id, &graph).map(|text| ProgressEvent::Status { id: *id, text })
                }
                _ => None,
            };
            let _ = tx.send(ev);
            if let Some(extra) = extra {
                let _ = tx.send(extra);
            }
        }
    });
    (wrapped, Some(explainer))
}

/// After the build: repeats the explanations when the renderer did not keep them (`tty`), and
/// remembers the steps when the build `succeeded`.
pub fn finish(explainer: Option<&Explainer>, tty: bool, succeeded: bool) {
    let Some(ex) = explainer else { return };
    if tty {
        for line in ex.said() {
            eprintln!("{line}");
        }
    }
    if succeeded {
        ex.save();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explainer(args: &[&str]) -> Explainer {
        Explainer {
            dir: PathBuf::from("/nonexistent"),
            tmp: PathBuf::from("/nonexistent"),
            build_args: args.iter().map(|s| (*s).to_owned()).collect(),
            no_cache: false,
            current: HashMap::new(),
            previous: HashMap::new(),
            context_files: None,
            names: HashMap::new(),
            said: Mutex::new(Vec::new()),
        }
    }

    fn exec(env: &[&str], args: &[&str]) -> Value {
        serde_json::json!({"Exec": {"rootfs": {"op": "", "output": 0}, "args": args, "env": env, "cwd": "/",
            "user": "", "network": "Default", "security": "Sandbox",
            "platform": {"os": "linux", "architecture": "amd64"}}})
    }

    #[test]
    fn labels_are_numbered_steps_only() {
        assert_eq!(step_label("[build 3/5] COPY src/ /app").as_deref(), Some("[build 3/5] COPY"));
        assert_eq!(step_label("[ 2/12] RUN make").as_deref(), Some("[ 2/12] RUN"));
        assert_eq!(step_label("[internal] load build context"), None);
        assert_eq!(step_label("inline document"), None);
    }

    #[test]
    fn env_changes_name_the_variable_and_hide_secret_values() {
        let e = explainer(&["VERSION"]);
        let rec = |op: Value| StepRecord { key: "k".into(), op, inputs: vec![], content: None };
        let before = rec(exec(&["VERSION=1.0", "API_TOKEN=sha256:aa"], &["make"]));
        let mut after = rec(exec(&["VERSION=1.1", "API_TOKEN=sha256:bb"], &["make"]));
        after.key = "k2".into();
        let r = e.reasons(Some(&before), &after);
        assert_eq!(r, ["env API_TOKEN changed", "ARG VERSION changed (\"1.0\" -> \"1.1\")"]);
        let mut other = rec(exec(&["VERSION=1.0", "API_TOKEN=sha256:aa"], &["make", "all"]));
        other.key = "k3".into();
        assert_eq!(e.reasons(Some(&before), &other), ["command changed"]);
        assert_eq!(e.reasons(None, &after), ["no earlier build of this step"]);
        assert_eq!(e.reasons(Some(&before), &before), ["its cached result is no longer in the store (pruned)"]);
    }

    #[test]
    fn secret_looking_values_are_hashed_before_storage() {
        let op: Op = serde_json::from_value(serde_json::json!({"Exec": {"rootfs": null, "args": ["true"],
            "env": ["GITHUB_TOKEN=hunter2", "PLAIN=visible"], "cwd": "/", "user": "", "network": "Default",
            "security": "Sandbox", "platform": {"os": "linux", "architecture": "amd64"}}}))
        .unwrap();
        let text = normalized_op(&op).to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("PLAIN=visible"), "{text}");
    }

    #[test]
    fn parents_images_and_context_files() {
        let e = explainer(&[]);
        let input = |key: &str, kind: InputKind| InputRecord { key: key.into(), name: "[2/3] RUN make".into(), kind };
        assert_eq!(
            e.input_reason(&input("a", InputKind::Step), &input("b", InputKind::Step)),
            "parent step [2/3] RUN changed"
        );
        let img = |d: &str| InputKind::Image {
            reference: "r/busybox:1".into(),
            digest: Some(format!("sha256:{}", d.repeat(64))),
        };
        assert_eq!(
            e.input_reason(&input("a", img("1")), &input("b", img("2"))),
            "base image digest changed (sha256:111111111111 -> sha256:222222222222)"
        );
        let m = |v: &[(&str, &str)]| -> BTreeMap<String, String> {
            v.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
        };
        assert_eq!(
            files_changed(&m(&[("src/main.c", "1"), ("x", "1")]), &m(&[("src/main.c", "2"), ("x", "1")])),
            "src/main.c changed"
        );
        assert_eq!(files_changed(&m(&[("a", "1")]), &m(&[("b", "1")])), "b added, a removed");
        let many: Vec<(String, String)> = (0..5).map(|i| (format!("f{i}"), "1".to_owned())).collect();
        let before: BTreeMap<_, _> = many.iter().cloned().collect();
        let after: BTreeMap<_, _> = many.iter().map(|(k, _)| (k.clone(), "2".to_owned())).collect();
        assert_eq!(
            files_changed(&before, &after),
            "f0 changed, f1 changed, f2 changed and 2 more context files changed"
        );
    }
}
