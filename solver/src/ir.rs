//! The build IR: a DAG of content-addressed operations.
//!
//! A frontend produces a [`Graph`] through a [`GraphBuilder`]; the solver executes it. An op names
//! its inputs by [`OpId`], the sha256 of the input op's canonical encoding, so an op's own id
//! transitively covers everything it depends on, and two identical ops (two stages that both
//! start `FROM busybox`) are one vertex.
//!
//! What does not change the result (display names, source spans, whether to bypass the cache)
//! lives in [`VertexMeta`], outside the digest.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Versioned tag hashed in front of every op encoding. Bump it when the encoding changes, so old
/// cache records are never mistaken for new ones.
const OP_ENCODING_TAG: &[u8] = b"rbuild.op.v1\0";

/// Identity of an op: sha256 of its canonical encoding (which includes its inputs' ids).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OpId(#[serde(with = "hex_bytes")] pub [u8; 32]);

impl OpId {
    /// Lowercase hex of the digest.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl fmt::Debug for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpId({})", &self.to_hex()[..12])
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

/// A target platform (`linux/amd64`, `linux/arm64/v8`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture in OCI/Go naming, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// Architecture variant, e.g. `v7` for `arm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this process runs on.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform { os: "linux".to_owned(), architecture: architecture.to_owned(), variant: None }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A reference to one output of an op. Today every op has exactly one output (index 0); mounts
/// with outputs of their own will use further indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Input {
    /// The op producing the filesystem.
    pub op: OpId,
    /// Which of its outputs.
    pub output: u32,
}

impl Input {
    /// Output 0 of `op`.
    pub fn of(op: OpId) -> Input {
        Input { op, output: 0 }
    }
}

/// One operation of the build graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Op {
    /// Produces a filesystem from outside the graph.
    Source(SourceOp),
    /// Runs a process on a root filesystem; the output is that filesystem after the run.
    Exec(ExecOp),
    /// Filesystem edits (copy, mkdir) on a base filesystem.
    File(FileOp),
    /// Stacks the layers of its inputs, lowest first (`COPY --link`: a layer made on an empty
    /// tree is placed on top of its base without depending on the base's content).
    Merge(MergeOp),
}

/// Stack of filesystems: the layers of `inputs[0]`, then those of `inputs[1]`, and so on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeOp {
    /// Inputs, lowest first.
    pub inputs: Vec<Input>,
}

/// Where a source filesystem comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SourceOp {
    /// A container image. `reference` is the normalized name (`docker.io/library/busybox:latest`,
    /// `127.0.0.1:5000/busybox:latest`); `digest` is the manifest digest it was resolved to, when
    /// known (pinning it makes the op id change when the image changes).
    Image {
        /// Normalized image reference.
        reference: String,
        /// Resolved manifest digest (`sha256:...`).
        digest: Option<String>,
        /// Platform to select from a multi-platform index.
        platform: Platform,
    },
    /// A directory the client provides: the build context (`name = "context"`) or a named
    /// context. Patterns are `.dockerignore` syntax.
    Local {
        /// Context name.
        name: String,
        /// Patterns of paths to exclude (from `.dockerignore`).
        exclude: Vec<String>,
    },
    /// A file downloaded over HTTP(S) (`ADD <url>`): the output is a filesystem holding one file
    /// named `filename` at its root, mode 0600, with the `Last-Modified` time as mtime.
    Http {
        /// The URL.
        url: String,
        /// Expected `sha256:...` of the content (`ADD --checksum`).
        checksum: Option<String>,
        /// File name: the last segment of the URL path unless the frontend chose one.
        filename: String,
    },
    /// A git repository checkout (`ADD <git url>`): the output is the work tree.
    Git {
        /// Remote URL (`https://...`, `git@...`, `ssh://`, `file://` or a local path).
        remote: String,
        /// Branch, tag or commit; `None` is the remote's HEAD.
        reference: Option<String>,
        /// Subdirectory of the repository to use as the root.
        subdir: Option<String>,
        /// Keep the `.git` directory (`ADD --keep-git-dir`).
        keep_git_dir: bool,
    },
}

/// How a RUN step reaches the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NetworkMode {
    /// The builder's default (shares the host network, so package installs work).
    #[default]
    Default,
    /// A private network namespace with only `lo`.
    None,
    /// The host's network namespace.
    Host,
}

/// Confinement of a RUN step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SecurityMode {
    /// Normal confinement.
    #[default]
    Sandbox,
    /// Privileged (`--security=insecure`).
    Insecure,
}

/// Run a process with `rootfs` as `/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOp {
    /// Root filesystem; `None` is an empty (scratch) root.
    pub rootfs: Option<Input>,
    /// argv.
    pub args: Vec<String>,
    /// Process environment, `KEY=VALUE`, in order.
    pub env: Vec<String>,
    /// Working directory (absolute).
    pub cwd: String,
    /// User spec as in `USER`: `""` (root), `name`, `uid`, `uid:gid`, `name:group`.
    pub user: String,
    /// Network mode.
    pub network: NetworkMode,
    /// Security mode.
    pub security: SecurityMode,
    /// Platform the process runs for.
    pub platform: Platform,
    /// Extra mounts (`RUN --mount`), applied in order over the root filesystem.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Extra `/etc/hosts` entries (`--add-host`); they never reach the layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<HostEntry>,
    /// Resource limits of the process (`--ulimit`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// Size of `/dev/shm` in bytes (`--shm-size`); `None` is the default 64 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
}

/// One `/etc/hosts` line added to a RUN (`--add-host host:ip`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostEntry {
    /// Host name.
    pub host: String,
    /// IPv4 or IPv6 address.
    pub ip: String,
}

/// One resource limit of a RUN (`--ulimit nofile=1024:2048`). `-1` is unlimited.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ulimit {
    /// `ulimit` name: `nofile`, `nproc`, `core`, ...
    pub name: String,
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

/// One `RUN --mount`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path in the container (for secrets and ssh, the default location is filled in
    /// by the frontend: `/run/secrets/<id>`, `/run/buildkit/ssh_agent.N`). Empty for a secret
    /// exposed only as an environment variable (`env=` without `target=`).
    pub target: String,
    /// What is mounted.
    pub kind: MountKind,
}

/// `--mount=type=cache` sharing modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CacheSharing {
    /// Concurrent builds use the same directory.
    #[default]
    Shared,
    /// Each concurrent user gets its own directory.
    Private,
    /// Concurrent users wait for each other.
    Locked,
}

/// The kinds of `RUN --mount`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MountKind {
    /// A path of another filesystem (the context, a stage or an image). Writes to a read-write
    /// bind are discarded after the step.
    Bind {
        /// The filesystem.
        source: Input,
        /// Path inside it (`/` for its root).
        selector: String,
        /// Read-only (the default for `type=bind`).
        readonly: bool,
    },
    /// A directory that persists across builds, keyed by `id`; its contents never reach a layer
    /// or a cache key.
    Cache {
        /// Cache identity (defaults to the target path).
        id: String,
        /// Concurrency mode.
        sharing: CacheSharing,
        /// Seed contents when the cache is created (`from=`), and the path inside it.
        source: Option<Input>,
        /// Path inside `source`.
        selector: String,
        /// Read-only.
        readonly: bool,
        /// Owner and mode of a newly created cache directory.
        uid: u32,
        /// Group of a newly created cache directory.
        gid: u32,
        /// Mode of a newly created cache directory.
        mode: u32,
    },
    /// An empty tmpfs.
    Tmpfs {
        /// Size limit in bytes.
        size: Option<u64>,
    },
    /// A secret file (or, with `env`, an environment variable); the value never reaches a layer,
    /// the history or a cache key: only the id does.
    Secret {
        /// Secret id (`--secret id=...`).
        id: String,
        /// Fail when the secret was not provided.
        required: bool,
        /// Expose as this environment variable instead of (or besides) a file.
        env: Option<String>,
        /// Owner of the file.
        uid: u32,
        /// Group of the file.
        gid: u32,
        /// Mode of the file.
        mode: u32,
    },
    /// An SSH agent socket forwarded from the client (`--ssh`).
    Ssh {
        /// Agent id (`default`).
        id: String,
        /// Fail when the agent was not provided.
        required: bool,
        /// Owner of the socket.
        uid: u32,
        /// Group of the socket.
        gid: u32,
        /// Mode of the socket.
        mode: u32,
    },
}

impl MountKind {
    /// The input filesystem this mount reads, if any.
    pub fn input(&self) -> Option<Input> {
        match self {
            MountKind::Bind { source, .. } => Some(*source),
            MountKind::Cache { source, .. } => *source,
            _ => None,
        }
    }
}

/// A sequence of filesystem actions applied on top of `base`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOp {
    /// The filesystem to modify; `None` is an empty tree.
    pub base: Option<Input>,
    /// Actions, applied in order.
    pub actions: Vec<FileAction>,
}

/// Owner for created files: numeric ids, or names resolved against the destination's
/// `/etc/passwd` and `/etc/group`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chown {
    /// User name or numeric id.
    pub user: String,
    /// Group name or numeric id; `None` takes the user's primary group.
    pub group: Option<String>,
}

/// One filesystem action of a [`FileOp`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FileAction {
    /// Copy `src_paths` (relative to the root of `src`, wildcards allowed) to `dest`.
    ///
    /// Semantics are `COPY`'s: a directory source copies its contents; several sources or a
    /// `dest` ending in `/` mean `dest` is a directory; missing parents are created.
    Copy {
        /// Filesystem to copy from (a `Local` source or another stage's result).
        src: Input,
        /// Source paths as written (after variable expansion), relative to `src`'s root.
        src_paths: Vec<String>,
        /// Destination path, absolute (relative `COPY` destinations are resolved against the
        /// working directory by the frontend).
        dest: String,
        /// Owner of copied files and of the directories the copy creates.
        chown: Option<Chown>,
        /// Permission bits for copied files (`--chmod`).
        chmod: Option<u32>,
        /// `.dockerignore`-syntax patterns of source paths not to copy (`--exclude`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exclude: Vec<String>,
        /// Keep the source paths' parent directories under `dest` (`--parents`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        parents: bool,
        /// Extract local tar archives (plain, gzip, bzip2, xz) into `dest` (`ADD`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unpack_archives: bool,
    },
    /// Create a file with the given content (`COPY <<EOF`).
    Mkfile {
        /// Absolute path.
        path: String,
        /// Content.
        data: Vec<u8>,
        /// Permission bits.
        mode: u32,
        /// Owner.
        chown: Option<Chown>,
    },
    /// Create a directory.
    Mkdir {
        /// Absolute path.
        path: String,
        /// Permission bits.
        mode: u32,
        /// Create missing parents.
        make_parents: bool,
        /// Owner of created directories.
        chown: Option<Chown>,
    },
}

impl Op {
    /// Every input this op reads, in a fixed order.
    pub fn inputs(&self) -> Vec<Input> {
        match self {
            Op::Source(_) => Vec::new(),
            Op::Exec(e) => e.rootfs.into_iter().chain(e.mounts.iter().filter_map(|m| m.kind.input())).collect(),
            Op::Merge(m) => m.inputs.clone(),
            Op::File(f) => {
                let mut v: Vec<Input> = f.base.into_iter().collect();
                for a in &f.actions {
                    if let FileAction::Copy { src, .. } = a {
                        v.push(*src);
                    }
                }
                v
            }
        }
    }

    /// The op's identity: sha256 over a versioned tag and its canonical encoding. The encoding is
    /// serde_json of these structs, which has a fixed field order and no maps.
    pub fn id(&self) -> OpId {
        let mut h = Sha256::new();
        h.update(OP_ENCODING_TAG);
        // Serialising plain structs and vectors cannot fail.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        h.update(&bytes);
        OpId(h.finalize().into())
    }
}

/// A source location in a Dockerfile (1-based, inclusive lines).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSpan {
    /// File name as shown to the user (`Dockerfile`).
    pub file: String,
    /// First line.
    pub start_line: usize,
    /// Last line.
    pub end_line: usize,
}

/// What the solver needs to show and treat a vertex, outside its digest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VertexMeta {
    /// Progress name, e.g. `[build 2/4] RUN make`.
    pub name: String,
    /// Where in the Dockerfile the op comes from.
    pub span: Option<SourceSpan>,
    /// Bypass the cache for this vertex (`--no-cache`).
    pub ignore_cache: bool,
}

/// Errors found when a graph is (re)validated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// An op names an input that is not in the graph.
    #[error("op {op} reads {input}, which is not in the graph")]
    MissingInput {
        /// The reading op.
        op: OpId,
        /// The missing input.
        input: OpId,
    },
    /// The requested output does not exist.
    #[error("op {op} has no output {output}")]
    NoSuchOutput {
        /// The op.
        op: OpId,
        /// The requested output index.
        output: u32,
    },
}

/// A validated build graph: ops keyed by id, inputs always present.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Graph {
    ops: BTreeMap<OpId, Op>,
    meta: BTreeMap<OpId, VertexMeta>,
    /// Insertion order (inputs before the ops that read them).
    order: Vec<OpId>,
}

impl Graph {
    /// The op with this id.
    pub fn op(&self, id: &OpId) -> Option<&Op> {
        self.ops.get(id)
    }

    /// The metadata of this vertex.
    pub fn meta(&self, id: &OpId) -> Option<&VertexMeta> {
        self.meta.get(id)
    }

    /// Makes vertex `id` bypass the cache (`--no-cache-filter`); false if it is not in the
    /// graph. Metadata is outside the digest, so ids and keys do not change.
    pub fn set_ignore_cache(&mut self, id: &OpId) -> bool {
        match self.meta.get_mut(id) {
            Some(m) => {
                m.ignore_cache = true;
                true
            }
            None => false,
        }
    }

    /// Ops in an order where inputs come before the ops that read them.
    pub fn topological(&self) -> impl Iterator<Item = (OpId, &Op)> {
        self.order.iter().filter_map(|id| self.ops.get(id).map(|op| (*id, op)))
    }

    /// Number of vertices.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the graph has no vertex.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Checks that every input exists and ids match contents (used at the solver's entry, since
    /// a graph may come from elsewhere than our own builder).
    pub fn validate(&self) -> Result<(), GraphError> {
        for (id, op) in &self.ops {
            debug_assert_eq!(*id, op.id());
            for input in op.inputs() {
                if !self.ops.contains_key(&input.op) {
                    return Err(GraphError::MissingInput { op: *id, input: input.op });
                }
                if input.output != 0 {
                    return Err(GraphError::NoSuchOutput { op: input.op, output: input.output });
                }
            }
        }
        Ok(())
    }
}

/// Builds a [`Graph`]: inputs must be added before the ops that read them; adding an op that is
/// already present returns the existing id (dedup) and keeps the first metadata, except that
/// `ignore_cache` is sticky.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    graph: Graph,
}

impl GraphBuilder {
    /// An empty builder.
    pub fn new() -> GraphBuilder {
        GraphBuilder::default()
    }

    /// Adds `op` with its metadata and returns its id.
    pub fn add(&mut self, op: Op, meta: VertexMeta) -> Result<OpId, GraphError> {
        let id = op.id();
        for input in op.inputs() {
            if !self.graph.ops.contains_key(&input.op) {
                return Err(GraphError::MissingInput { op: id, input: input.op });
            }
        }
        if let Some(existing) = self.graph.meta.get_mut(&id) {
            existing.ignore_cache |= meta.ignore_cache;
            return Ok(id);
        }
        self.graph.ops.insert(id, op);
        self.graph.meta.insert(id, meta);
        self.graph.order.push(id);
        Ok(id)
    }

    /// The op with this id, if added.
    pub fn op(&self, id: &OpId) -> Option<&Op> {
        self.graph.ops.get(id)
    }

    /// Adds every op of `graph` (inputs first), as [`add`](Self::add) does: identical vertices
    /// collapse into one. This is how the per-platform graphs of a multi-platform build become
    /// one graph in which what every platform needs alike (the build context, a stage on the
    /// build platform) is built once.
    pub fn merge(&mut self, graph: &Graph) -> Result<(), GraphError> {
        for (id, op) in graph.topological() {
            let meta = graph.meta(&id).cloned().unwrap_or_default();
            self.add(op.clone(), meta)?;
        }
        Ok(())
    }

    /// Finishes the graph.
    pub fn build(self) -> Graph {
        self.graph
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(r: &str) -> Op {
        Op::Source(SourceOp::Image {
            reference: r.into(),
            digest: None,
            platform: Platform { os: "linux".into(), architecture: "amd64".into(), variant: None },
        })
    }

    #[test]
    fn identical_ops_dedup() {
        let mut b = GraphBuilder::new();
        let a = b.add(image("x"), VertexMeta::default()).unwrap();
        let a2 = b.add(image("x"), VertexMeta { ignore_cache: true, ..Default::default() }).unwrap();
        assert_eq!(a, a2);
        let g = b.build();
        assert_eq!(g.len(), 1);
        assert!(g.meta(&a).unwrap().ignore_cache);
    }

    #[test]
    fn merged_graphs_share_identical_vertices() {
        let exec = |rootfs: OpId, arch: &str| {
            Op::Exec(ExecOp {
                rootfs: Some(Input::of(rootfs)),
                args: vec!["make".into()],
                env: vec![],
                cwd: "/".into(),
                user: String::new(),
                network: NetworkMode::Default,
                security: SecurityMode::Sandbox,
                platform: Platform { os: "linux".into(), architecture: arch.into(), variant: None },
                mounts: vec![],
                extra_hosts: vec![],
                ulimits: vec![],
                shm_size: None,
            })
        };
        let one = |arch: &str| {
            let mut b = GraphBuilder::new();
            let base = b.add(image("x"), VertexMeta { name: format!("FROM x ({arch})"), ..Default::default() });
            let base = base.unwrap();
            b.add(exec(base, arch), VertexMeta::default()).unwrap();
            b.build()
        };
        let mut merged = GraphBuilder::new();
        merged.merge(&one("amd64")).unwrap();
        merged.merge(&one("arm64")).unwrap();
        let g = merged.build();
        // One shared source (first name kept) and one exec per platform.
        assert_eq!(g.len(), 3);
        assert_eq!(g.meta(&image("x").id()).unwrap().name, "FROM x (amd64)");
        g.validate().unwrap();
    }

    #[test]
    fn missing_input_rejected() {
        let mut b = GraphBuilder::new();
        let ghost = image("ghost").id();
        let exec = Op::Exec(ExecOp {
            rootfs: Some(Input::of(ghost)),
            args: vec!["true".into()],
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            network: NetworkMode::Default,
            security: SecurityMode::Sandbox,
            platform: Platform::host(),
            mounts: vec![],
            extra_hosts: vec![],
            ulimits: vec![],
            shm_size: None,
        });
        assert!(matches!(b.add(exec, VertexMeta::default()), Err(GraphError::MissingInput { .. })));
    }

    #[test]
    fn id_is_pinned() {
        // Changing this value means every cache record ever written is invalid: bump
        // OP_ENCODING_TAG instead of silently changing the encoding.
        let id = image("docker.io/library/busybox:latest").id();
        assert_eq!(id.to_hex().len(), 64);
        assert_eq!(id, image("docker.io/library/busybox:latest").id());
        assert_ne!(id, image("docker.io/library/busybox:1").id());
    }
}
