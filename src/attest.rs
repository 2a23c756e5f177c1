//! Build attestations, as `docker buildx build --provenance/--sbom` attaches them: SLSA
//! provenance (v0.2, or v1 on request) and SPDX SBOMs wrapped in in-toto statements whose
//! subject is the image manifest, stored as one attestation manifest per platform in the
//! image index (see `rbuild_exporter::oci::build_attestation`).
//!
//! What never goes in: secret values (only the ids of the secrets and SSH agents a build
//! mounts, and those only in `mode=max`), registry credentials, and the `user:password@` of
//! any URL (git or tarball contexts, named contexts, `ADD` sources).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::OpenOptionsExt as _;
use std::time::SystemTime;

use base64::Engine as _;
use rbuild_exporter::oci::Statement;
use rbuild_exporter::oci_spec::image::Descriptor;
use rbuild_solver::ir::{Graph, Input, MountKind, NetworkMode, Op, OpId, Platform, SourceOp};
use serde_json::{json, Map, Value};

/// in-toto statement type BuildKit writes.
const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v0.1";
/// SLSA provenance v0.2 predicate type.
pub const SLSA_V02: &str = "https://slsa.dev/provenance/v0.2";
/// SLSA provenance v1 predicate type.
pub const SLSA_V1: &str = "https://slsa.dev/provenance/v1";
/// SPDX document predicate type.
pub const SPDX: &str = "https://spdx.dev/Document";
/// BuildKit's `buildType` of v0.2 provenance; the v1 one is its definitions page.
const BUILD_TYPE_V02: &str = "https://mobyproject.org/buildkit@v1";
const BUILD_TYPE_V1: &str = "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md";
const METADATA_KEY: &str = "https://mobyproject.org/buildkit@v1#metadata";
const HERMETIC_KEY: &str = "https://mobyproject.org/buildkit@v1#hermetic";

/// How much the provenance says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Builder, materials, invocation without build args, labels, secrets or steps.
    Min,
    /// Everything: build args, secret and SSH ids, the build steps and where they come from.
    Max,
}

/// Which SLSA provenance format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlsaVersion {
    /// `https://slsa.dev/provenance/v0.2` (BuildKit's default).
    V02,
    /// `https://slsa.dev/provenance/v1`.
    V1,
}

/// `--provenance` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenanceOptions {
    /// `mode=`.
    pub mode: Mode,
    /// `version=`.
    pub version: SlsaVersion,
    /// `builder-id=`.
    pub builder_id: String,
    /// `reproducible=`.
    pub reproducible: bool,
}

/// What to attest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttestOptions {
    /// SLSA provenance.
    pub provenance: Option<ProvenanceOptions>,
    /// An SPDX SBOM of each image (and of the stages that ask for it).
    pub sbom: bool,
}

impl AttestOptions {
    /// Nothing to attach.
    pub fn is_empty(&self) -> bool {
        self.provenance.is_none() && !self.sbom
    }
}

fn bool_value(key: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{key}={value:?}: expected true or false")),
    }
}

/// `--provenance` / `--attest type=provenance,...` attributes (after `type=`).
fn parse_provenance(spec: &str) -> Result<Option<ProvenanceOptions>, String> {
    let mut opts = ProvenanceOptions {
        mode: Mode::Min,
        version: SlsaVersion::V02,
        builder_id: String::new(),
        reproducible: false,
    };
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or(("", part));
        match (k, v) {
            ("", v) => {
                if !bool_value("--provenance", v)? {
                    return Ok(None);
                }
            }
            ("disabled", v) => {
                if bool_value(k, v)? {
                    return Ok(None);
                }
            }
            ("mode", "min") => opts.mode = Mode::Min,
            ("mode", "max") => opts.mode = Mode::Max,
            ("mode", other) => return Err(format!("--provenance: unknown mode {other:?}: use min or max")),
            ("version", "v0.2") => opts.version = SlsaVersion::V02,
            ("version", "v1" | "v1.0") => opts.version = SlsaVersion::V1,
            ("version", other) => return Err(format!("--provenance: unknown version {other:?}: use v0.2 or v1")),
            ("builder-id", v) => opts.builder_id = v.to_owned(),
            ("reproducible", v) => opts.reproducible = bool_value(k, v)?,
            (k, _) => {
                return Err(format!(
                "--provenance: unknown attribute {k:?}: use mode=min|max, version=v0.2|v1, builder-id=, reproducible="
            ))
            }
        }
    }
    Ok(Some(opts))
}

/// `--sbom` / `--attest type=sbom,...` attributes: on or off (`generator=` is accepted: our
/// scanner is built in).
fn parse_sbom(spec: &str) -> Result<bool, String> {
    let mut on = true;
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            None => on = bool_value("--sbom", part)?,
            Some(("disabled", v)) => on = !bool_value("disabled", v)?,
            Some(("generator", _)) => {}
            Some((k, _)) => return Err(format!("--sbom: unknown attribute {k:?}: use true, false or generator=IMAGE")),
        }
    }
    Ok(on)
}

/// The attestations a build makes from `--provenance`, `--sbom` and `--attest`. As buildx does,
/// a build that pushes gets `mode=min` provenance unless told otherwise (and unless
/// `BUILDX_NO_DEFAULT_ATTESTATIONS` is set); other outputs get none by default, like
/// `docker build` with its own image store.
pub fn parse(
    provenance: Option<&str>,
    sbom: Option<&str>,
    attest: &[String],
    pushing: bool,
) -> Result<AttestOptions, String> {
    let no_default = std::env::var_os("BUILDX_NO_DEFAULT_ATTESTATIONS").is_some_and(|v| !v.is_empty() && v != "0");
    let mut opts = AttestOptions {
        provenance: (pushing && !no_default).then(|| ProvenanceOptions {
            mode: Mode::Min,
            version: SlsaVersion::V02,
            builder_id: String::new(),
            reproducible: false,
        }),
        sbom: false,
    };
    for a in attest {
        let (kind, rest) = match a.split_once(',') {
            Some((k, r)) => (k, r),
            None => (a.as_str(), ""),
        };
        match kind.trim() {
            "type=provenance" => opts.provenance = parse_provenance(rest)?,
            "type=sbom" => opts.sbom = parse_sbom(rest)?,
            other => return Err(format!("--attest {a:?}: expected type=provenance or type=sbom first, not {other:?}")),
        }
    }
    if let Some(p) = provenance {
        opts.provenance = parse_provenance(p)?;
    }
    if let Some(s) = sbom {
        opts.sbom = parse_sbom(s)?;
    }
    Ok(opts)
}

/// A URL without the password (and without a lone user name, which is often a token).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://xxxxx@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Percent-encoding of a purl qualifier value (`linux/amd64` → `linux%2Famd64`).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The package URL of an image reference, as BuildKit names subjects and materials:
/// `pkg:docker/alpine@3.19?platform=linux%2Famd64`, `pkg:docker/127.0.0.1:5000/app@latest?...`;
/// a digest-pinned tag adds `digest=`.
pub fn image_purl(reference: &str, platform: Option<&Platform>) -> String {
    let familiar = crate::export::familiar_name(reference);
    let (named, digest) = match familiar.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (familiar, None),
    };
    let slash = named.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match named[slash..].split_once(':') {
        Some((n, t)) => (format!("{}{n}", &named[..slash]), Some(t)),
        None => (named.to_owned(), None),
    };
    let mut qualifiers = Vec::new();
    let version = match (tag, digest) {
        (Some(t), Some(d)) => {
            qualifiers.push(format!("digest={}", query_escape(d)));
            t.to_owned()
        }
        (Some(t), None) => t.to_owned(),
        (None, Some(d)) => d.to_owned(),
        (None, None) => "latest".to_owned(),
    };
    if let Some(p) = platform {
        qualifiers.push(format!("platform={}", query_escape(&p.to_string())));
    }
    let mut purl = format!("pkg:docker/{name}@{version}");
    if !qualifiers.is_empty() {
        purl.push('?');
        purl.push_str(&qualifiers.join("&"));
    }
    purl
}

/// The statement's subjects: the image manifest under each name it was given (`_` when none).
fn subjects(names: &[String], platform: &Platform, manifest: &Descriptor) -> Value {
    let digest = json!({ "sha256": manifest.digest().digest() });
    if names.is_empty() {
        return json!([{ "name": "_", "digest": digest }]);
    }
    Value::Array(names.iter().map(|n| json!({ "name": image_purl(n, Some(platform)), "digest": digest })).collect())
}

/// An in-toto statement about `manifest`.
pub fn statement(
    predicate_type: &str,
    predicate: Value,
    names: &[String],
    platform: &Platform,
    manifest: &Descriptor,
) -> Result<Statement, serde_json::Error> {
    let doc = statement_json(predicate_type, subjects(names, platform, manifest), &predicate);
    Ok(Statement { predicate_type: predicate_type.to_owned(), json: serde_json::to_vec(&doc)? })
}

/// The in-toto statement document.
fn statement_json(predicate_type: &str, subjects: Value, predicate: &Value) -> Value {
    json!({
        "_type": STATEMENT_TYPE,
        "predicateType": predicate_type,
        "subject": subjects,
        "predicate": predicate,
    })
}

/// Where the build definition came from (`invocation.configSource`).
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The remote context (git URL with its ref, or a tarball URL), credentials removed.
    pub uri: Option<String>,
    /// Its immutable digest (`sha1` commit of a git context).
    pub digest: Option<(String, String)>,
    /// The Dockerfile's name.
    pub entry_point: String,
}

/// What is known of the whole build, the same for every platform.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Shared by every platform's provenance.
    pub id: String,
    /// When the build started.
    pub started: SystemTime,
    /// When it finished (the images were made).
    pub finished: SystemTime,
    /// The options the frontend got, BuildKit's names (`build-arg:NAME`, `label:KEY`,
    /// `target`, `context:NAME`, `add-hosts`, ...). Values are the user's, URLs redacted.
    pub args: BTreeMap<String, String>,
    /// Local directories the build read (`context`, `dockerfile`, named local contexts).
    pub locals: Vec<String>,
    /// `invocation.configSource`.
    pub config_source: ConfigSource,
    /// `vcs:source`/`vcs:revision` of a local context inside a git work tree, as buildx adds.
    pub vcs: BTreeMap<String, String>,
    /// The Dockerfile (mode=max records it with the steps' line ranges).
    pub dockerfile: Vec<u8>,
    /// Its name.
    pub filename: String,
    /// Whether every input of the build is remote and pinned (a git context with no local
    /// named context): then the materials are complete.
    pub materials_complete: bool,
}

impl Invocation {
    /// A new build invocation id: 25 lower-case base-36 characters, like BuildKit's.
    pub fn new_id() -> String {
        use sha2::Digest as _;
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let mut h = sha2::Sha256::new();
        h.update(now.as_nanos().to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        if let Ok(bytes) = std::fs::read("/proc/sys/kernel/random/uuid") {
            h.update(bytes);
        }
        let digest = h.finalize();
        digest.iter().take(25).map(|b| char::from_digit(u32::from(*b) % 36, 36).unwrap_or('0')).collect()
    }
}

/// RFC 3339 UTC with nanoseconds, as Go prints `time.Time`.
fn rfc3339_nanos(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = crate::export::rfc3339(d.as_secs() as i64);
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        return secs;
    }
    let frac = format!("{nanos:09}");
    format!("{}.{}Z", secs.trim_end_matches('Z'), frac.trim_end_matches('0'))
}

/// What the worker learned while building: digests of remote sources.
pub trait ResolvedSources {
    /// `(algorithm, hex)` of what a `Git` (commit, sha1) or `Http` (content, sha256) op fetched.
    fn resolved(&self, op: &OpId) -> Option<(String, String)>;
}

/// The ops `target` needs, inputs first (each once).
fn reachable(graph: &Graph, target: Option<Input>) -> Vec<(OpId, &Op)> {
    let mut needed = BTreeSet::new();
    let mut stack: Vec<OpId> = target.map(|t| t.op).into_iter().collect();
    while let Some(id) = stack.pop() {
        if needed.insert(id) {
            if let Some(op) = graph.op(&id) {
                stack.extend(op.inputs().into_iter().map(|i| i.op));
            }
        }
    }
    graph.topological().filter(|(id, _)| needed.contains(id)).collect()
}

fn material(uri: String, digest: Option<(String, String)>) -> Value {
    let mut m = Map::new();
    m.insert("uri".into(), Value::String(uri));
    if let Some((alg, hex)) = digest {
        m.insert("digest".into(), json!({ alg: hex }));
    }
    Value::Object(m)
}

fn split_digest(d: &str) -> Option<(String, String)> {
    d.split_once(':').map(|(a, h)| (a.to_owned(), h.to_owned()))
}

/// One platform's provenance.
#[derive(Debug)]
pub struct PlatformBuild<'a> {
    /// The platform's build graph.
    pub graph: &'a Graph,
    /// Its target.
    pub target: Option<Input>,
    /// The image's layers (mode=max maps the final step to them).
    pub layers: &'a [Descriptor],
}

/// The SLSA provenance predicate of one platform's image.
pub fn provenance(
    opts: &ProvenanceOptions,
    inv: &Invocation,
    build: &PlatformBuild<'_>,
    sources: &dyn ResolvedSources,
) -> Value {
    let max = opts.mode == Mode::Max;
    let ops = reachable(build.graph, build.target);

    // Materials: every image, git repository and URL the target needs, by digest.
    let mut materials = Vec::new();
    let mut seen = BTreeSet::new();
    if let Some(uri) = &inv.config_source.uri {
        materials.push(material(uri.clone(), inv.config_source.digest.clone()));
        seen.insert(uri.clone());
    }
    let mut hermetic = true;
    let (mut secrets, mut ssh) = (BTreeMap::new(), BTreeMap::new());
    for (id, op) in &ops {
        let (uri, digest) = match op {
            Op::Source(SourceOp::Image { reference, digest, platform }) => {
                let pinned = reference.split('@').next().unwrap_or(reference);
                (image_purl(pinned, Some(platform)), digest.as_deref().and_then(split_digest))
            }
            Op::Source(SourceOp::Git { remote, reference, .. }) => {
                let mut uri = redact_url(remote);
                if let Some(r) = reference {
                    uri = format!("{uri}#{r}");
                }
                (uri, sources.resolved(id))
            }
            Op::Source(SourceOp::Http { url, checksum, .. }) => {
                (redact_url(url), checksum.as_deref().and_then(split_digest).or_else(|| sources.resolved(id)))
            }
            Op::Exec(e) => {
                hermetic &= e.network == NetworkMode::None;
                for m in &e.mounts {
                    match &m.kind {
                        MountKind::Secret { id, required, .. } => {
                            secrets.entry(id.clone()).and_modify(|o: &mut bool| *o &= !required).or_insert(!required);
                        }
                        MountKind::Ssh { id, required, .. } => {
                            ssh.entry(id.clone()).and_modify(|o: &mut bool| *o &= !required).or_insert(!required);
                        }
                        _ => {}
                    }
                }
                continue;
            }
            _ => continue,
        };
        if seen.insert(uri.clone()) {
            materials.push(material(uri, digest));
        }
    }

    // Build args and labels are left out of mode=min (they may hold what the user did not
    // mean to publish), which makes the parameters incomplete.
    let mut args = Map::new();
    let mut parameters_complete = true;
    for (k, v) in &inv.args {
        if !max && (k.starts_with("build-arg:") || k.starts_with("label:")) {
            parameters_complete = false;
            continue;
        }
        args.insert(k.clone(), Value::String(v.clone()));
    }
    let locals: Vec<Value> = inv.locals.iter().map(|n| json!({ "name": n })).collect();
    let mut parameters = Map::new();
    parameters.insert("frontend".into(), json!("dockerfile.v0"));
    parameters.insert("args".into(), Value::Object(args));
    parameters.insert("locals".into(), Value::Array(locals));
    if max {
        let list = |m: &BTreeMap<String, bool>| -> Value {
            Value::Array(m.iter().map(|(id, optional)| json!({ "id": id, "optional": optional })).collect())
        };
        if !secrets.is_empty() {
            parameters.insert("secrets".into(), list(&secrets));
        }
        if !ssh.is_empty() {
            parameters.insert("ssh".into(), list(&ssh));
        }
    }

    let mut buildkit_metadata = Map::new();
    if !inv.vcs.is_empty() {
        buildkit_metadata.insert("vcs".into(), json!(inv.vcs));
    }
    let mut build_config = None;
    if max {
        let (steps, locations, layers) = steps(&ops, build);
        build_config = Some(json!({ "llbDefinition": steps }));
        buildkit_metadata.insert(
            "source".into(),
            json!({
                "locations": locations,
                "infos": [{
                    "filename": inv.filename,
                    "language": "Dockerfile",
                    "data": base64::engine::general_purpose::STANDARD.encode(&inv.dockerfile),
                }],
            }),
        );
        buildkit_metadata.insert("layers".into(), layers);
    }

    let mut config_source = Map::new();
    if let Some(uri) = &inv.config_source.uri {
        config_source.insert("uri".into(), json!(uri));
    }
    if let Some((alg, hex)) = &inv.config_source.digest {
        config_source.insert("digest".into(), json!({ alg: hex }));
    }
    let host = Platform::host().to_string();
    let (started, finished) = (rfc3339_nanos(inv.started), rfc3339_nanos(inv.finished));
    match opts.version {
        SlsaVersion::V02 => {
            config_source.insert("entryPoint".into(), json!(inv.config_source.entry_point));
            let mut predicate = json!({
                "builder": { "id": opts.builder_id },
                "buildType": BUILD_TYPE_V02,
                "materials": materials,
                "invocation": {
                    "configSource": config_source,
                    "parameters": parameters,
                    "environment": { "platform": host },
                },
                "metadata": {
                    "buildInvocationID": inv.id,
                    "buildStartedOn": started,
                    "buildFinishedOn": finished,
                    "reproducible": opts.reproducible,
                    "completeness": {
                        "parameters": parameters_complete,
                        "environment": true,
                        "materials": inv.materials_complete,
                    },
                    HERMETIC_KEY: hermetic,
                    METADATA_KEY: buildkit_metadata,
                },
            });
            if let Some(c) = build_config {
                predicate["buildConfig"] = c;
            }
            predicate
        }
        SlsaVersion::V1 => {
            config_source.insert("path".into(), json!(inv.config_source.entry_point));
            let mut internal = json!({ "builderPlatform": host });
            if let Some(c) = build_config {
                internal["buildConfig"] = c;
            }
            json!({
                "buildDefinition": {
                    "buildType": BUILD_TYPE_V1,
                    "externalParameters": { "configSource": config_source, "request": parameters },
                    "internalParameters": internal,
                    "resolvedDependencies": materials,
                },
                "runDetails": {
                    "builder": { "id": opts.builder_id },
                    "metadata": {
                        "invocationID": inv.id,
                        "startedOn": started,
                        "finishedOn": finished,
                        "buildkit_metadata": buildkit_metadata,
                        "buildkit_hermetic": hermetic,
                        "buildkit_completeness": {
                            "request": parameters_complete,
                            "resolvedDependencies": inv.materials_complete,
                        },
                        "buildkit_reproducible": opts.reproducible,
                    },
                },
            })
        }
    }
}

/// mode=max: the build steps (`stepN`, each op as rbuild's build graph encodes it, its inputs
/// by step), each step's Dockerfile lines, and the final step's image layers.
fn steps(ops: &[(OpId, &Op)], build: &PlatformBuild<'_>) -> (Vec<Value>, Map<String, Value>, Value) {
    let index: HashMap<OpId, usize> = ops.iter().enumerate().map(|(n, (id, _))| (*id, n)).collect();
    let mut steps = Vec::with_capacity(ops.len());
    let mut locations = Map::new();
    for (n, (id, op)) in ops.iter().enumerate() {
        let inputs: Vec<String> =
            op.inputs().iter().filter_map(|i| index.get(&i.op).map(|s| format!("step{s}:{}", i.output))).collect();
        let mut step = json!({ "id": format!("step{n}"), "op": op });
        if !inputs.is_empty() {
            step["inputs"] = json!(inputs);
        }
        steps.push(step);
        if let Some(span) = build.graph.meta(id).and_then(|m| m.span.as_ref()) {
            locations.insert(
                format!("step{n}"),
                json!({ "locations": [{ "ranges": [{
                    "start": { "line": span.start_line },
                    "end": { "line": span.end_line },
                }] }] }),
            );
        }
    }
    let mut layers = Map::new();
    if let Some(step) = build.target.and_then(|t| index.get(&t.op).map(|s| format!("step{s}:{}", t.output))) {
        let descriptors: Vec<Value> = build
            .layers
            .iter()
            .map(|l| json!({ "mediaType": l.media_type().to_string(), "digest": l.digest().to_string(), "size": l.size() }))
            .collect();
        layers.insert(step, json!([descriptors]));
    }
    (steps, locations, Value::Object(layers))
}

impl ResolvedSources for rbuild_worker::LocalWorker {
    fn resolved(&self, op: &OpId) -> Option<(String, String)> {
        self.resolved_source(op)
    }
}

/// One platform's image, as [`attach`] attests it.
#[derive(Debug)]
pub struct Subject<'a> {
    /// The platform's build definition.
    pub def: &'a rbuild_frontend::BuildDefinition,
    /// The image made.
    pub image: &'a crate::export::PlatformImage,
    /// Stages whose filesystems get SBOMs of their own (`BUILDKIT_SBOM_SCAN_STAGE`).
    pub stages: &'a [(String, rbuild_worker::Snapshot)],
}

/// One attestation of one image: its predicate, and the file name BuildKit gives it where
/// attestations are written as files (`provenance.json`, `sbom.spdx.json`,
/// `sbom-<stage>.spdx.json`).
#[derive(Debug, Clone)]
pub struct Predicate {
    /// The file name.
    pub file: String,
    /// The predicate type.
    pub predicate_type: &'static str,
    /// The predicate.
    pub predicate: Value,
}

/// What [`attach`] made: the attestation manifests to list in the index after the images, and
/// each image's predicates (in the images' order), for outputs that write them as files.
#[derive(Debug, Default)]
pub struct Attached {
    /// The attestation manifests' descriptors.
    pub manifests: Vec<Descriptor>,
    /// Each image's predicates.
    pub predicates: Vec<Vec<Predicate>>,
}

/// Makes each image's attestation manifest (provenance and SBOM statements), writes its blobs
/// to the store and returns the descriptors to list in the index after the images, with the
/// predicates.
pub async fn attach(
    worker: &rbuild_worker::LocalWorker,
    opts: &AttestOptions,
    inv: &Invocation,
    names: &[String],
    subjects: &[Subject<'_>],
    sbom_created: &str,
) -> anyhow::Result<Attached> {
    use anyhow::Context as _;
    let store = worker.store();
    let mut out = Attached::default();
    for s in subjects {
        let image = &s.image.image;
        let manifest: rbuild_exporter::oci_spec::image::ImageManifest =
            serde_json::from_slice(&image.manifest_json).context("reading the image manifest to attest")?;
        let mut predicates = Vec::new();
        if let Some(p) = &opts.provenance {
            let build = PlatformBuild { graph: &s.def.graph, target: s.def.target, layers: manifest.layers() };
            let predicate_type = match p.version {
                SlsaVersion::V02 => SLSA_V02,
                SlsaVersion::V1 => SLSA_V1,
            };
            let predicate = provenance(p, inv, &build, worker);
            predicates.push(Predicate { file: "provenance.json".into(), predicate_type, predicate });
        }
        if opts.sbom {
            let name = names.first().map_or("image", String::as_str);
            let predicate = sbom(worker, &s.image.snapshot, name, sbom_created, Some(manifest.layers())).await?;
            predicates.push(Predicate { file: "sbom.spdx.json".into(), predicate_type: SPDX, predicate });
            for (stage, snapshot) in s.stages {
                let predicate = sbom(worker, snapshot, stage, sbom_created, None).await?;
                predicates.push(Predicate { file: format!("sbom-{stage}.spdx.json"), predicate_type: SPDX, predicate });
            }
        }
        let statements = predicates
            .iter()
            .map(|p| statement(p.predicate_type, p.predicate.clone(), names, &s.image.platform, &image.manifest))
            .collect::<Result<Vec<_>, _>>()?;
        let built = rbuild_exporter::oci::build_attestation(&image.manifest, &statements)
            .context("making the attestation manifest")?;
        for (desc, bytes) in built
            .blobs
            .iter()
            .map(|(d, b)| (d, b.as_slice()))
            .chain([(&built.manifest, built.manifest_json.as_slice())])
        {
            if !store.has_blob(desc.digest())? {
                store.put_blob(bytes, Some(desc.digest()))?;
            }
        }
        out.manifests.push(built.manifest);
        out.predicates.push(predicates);
    }
    Ok(out)
}

/// Writes `predicates` into `dir` (an exported filesystem) as in-toto statement files, as
/// BuildKit's local exporter does: the subjects are every regular file of `dir` (path relative
/// to it, sha256), hashed before the statements are added; files are indented JSON, mode 0600.
pub fn write_files(dir: &std::path::Path, predicates: &[Predicate]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    if predicates.is_empty() {
        return Ok(());
    }
    let mut subjects = Vec::new();
    for entry in walkdir::WalkDir::new(dir).min_depth(1).follow_links(false).sort_by_file_name() {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let digest =
            rbuild_worker::sha256_file(entry.path()).with_context(|| format!("reading {}", entry.path().display()))?;
        let name = entry.path().strip_prefix(dir).unwrap_or(entry.path()).to_string_lossy().into_owned();
        subjects.push(json!({ "name": name, "digest": { "sha256": hex::encode(digest) } }));
    }
    for p in predicates {
        let doc = statement_json(p.predicate_type, Value::Array(subjects.clone()), &p.predicate);
        // A new file or nothing: never through a symlink the image put there.
        let path = dir.join(&p.file);
        let mut f =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).with_context(|| {
                format!("writing the attestation {} (the image has a file of that name?)", path.display())
            })?;
        f.write_all(&serde_json::to_vec_pretty(&doc)?).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The SPDX document of a filesystem (scanned on a blocking thread). With the image's layers
/// (`layers`, bottom first, one per snapshot of the chain), each file's comment names the layer
/// that made it, `layerID: sha256:...`, as BuildKit adds to the scanner's document.
async fn sbom(
    worker: &rbuild_worker::LocalWorker,
    snapshot: &rbuild_worker::Snapshot,
    name: &str,
    created: &str,
    layers: Option<&[Descriptor]>,
) -> anyhow::Result<Value> {
    use anyhow::Context as _;
    let dirs = worker.lower_dirs(snapshot);
    // A chain and a manifest of different lengths cannot be matched layer for layer.
    let layers: Option<Vec<String>> =
        layers.filter(|l| l.len() == dirs.len()).map(|l| l.iter().rev().map(|d| d.digest().to_string()).collect());
    let opts = rbuild_worker::sbom::ScanOptions { name: name.to_owned(), created: created.to_owned() };
    let shown = name.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
        let view = rbuild_worker::MergedView::new(dirs.clone());
        let mut doc =
            rbuild_worker::sbom::scan(&view, &opts).with_context(|| format!("scanning {shown} for its SBOM"))?;
        if let (Some(layers), Some(files)) = (layers, doc["files"].as_array_mut()) {
            for file in files {
                let Some(path) = file["fileName"].as_str().map(|p| p.trim_start_matches(['/', '.']).to_owned()) else {
                    continue;
                };
                if file.get("comment").is_some() {
                    continue;
                }
                // The topmost layer holding the file made it.
                let Ok(Some(found)) = view.lstat(std::path::Path::new(&path)) else { continue };
                if let Some(i) = dirs.iter().position(|d| found.host_path.starts_with(d)) {
                    file["comment"] = Value::String(format!("layerID: {}", layers[i]));
                }
            }
        }
        Ok(doc)
    })
    .await
    .context("SBOM task")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provenance_flags_parse_as_buildx_reads_them() {
        let min = parse(None, None, &[], true).unwrap();
        assert_eq!(min.provenance.as_ref().map(|p| p.mode), Some(Mode::Min), "pushing defaults to mode=min");
        assert!(parse(None, None, &[], false).unwrap().is_empty(), "no attestation by default without a push");
        assert!(parse(Some("false"), None, &[], true).unwrap().provenance.is_none());
        let max = parse(Some("mode=max,version=v1,builder-id=https://ci/1"), Some("true"), &[], false).unwrap();
        let p = max.provenance.unwrap();
        assert_eq!((p.mode, p.version, p.builder_id.as_str()), (Mode::Max, SlsaVersion::V1, "https://ci/1"));
        assert!(max.sbom);
        let attest = parse(None, None, &["type=provenance,mode=max".into(), "type=sbom".into()], false).unwrap();
        assert_eq!(attest.provenance.map(|p| p.mode), Some(Mode::Max));
        assert!(attest.sbom);
        assert!(!parse(None, Some("generator=docker/buildkit-syft-scanner,disabled=true"), &[], false).unwrap().sbom);
        for bad in ["mode=all", "version=v3", "colour=red"] {
            assert!(parse(Some(bad), None, &[], false).is_err(), "{bad}");
        }
        assert!(parse(None, None, &["type=vex".into()], false).is_err());
    }

    #[test]
    fn purls_name_images_as_buildkit_does() {
        let amd64 = Platform::host();
        let p = Platform { os: "linux".into(), architecture: "arm".into(), variant: Some("v7".into()) };
        assert_eq!(
            image_purl("docker.io/library/alpine:3.19", Some(&p)),
            "pkg:docker/alpine@3.19?platform=linux%2Farm%2Fv7"
        );
        assert_eq!(
            image_purl("127.0.0.1:5000/team/app:1.0", Some(&amd64)),
            format!("pkg:docker/127.0.0.1:5000/team/app@1.0?platform=linux%2F{}", amd64.architecture)
        );
        assert_eq!(image_purl("docker.io/user/app", None), "pkg:docker/user/app@latest");
        assert_eq!(
            image_purl("docker.io/library/busybox:1@sha256:abc", None),
            "pkg:docker/busybox@1?digest=sha256%3Aabc"
        );
        assert_eq!(image_purl("docker.io/library/busybox@sha256:abc", None), "pkg:docker/busybox@sha256:abc");
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(redact_url("https://user:tok@git.example/r.git#main"), "https://xxxxx@git.example/r.git#main");
        assert_eq!(redact_url("https://ghp_token@github.com/o/r.git"), "https://xxxxx@github.com/o/r.git");
        assert_eq!(redact_url("https://example.com/a@b"), "https://example.com/a@b");
        assert_eq!(redact_url("git@github.com:o/r.git"), "git@github.com:o/r.git");
    }

    #[test]
    fn timestamps_are_go_style_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_670_500_139, 466_513_700);
        assert_eq!(rfc3339_nanos(t), "2022-12-08T11:48:59.4665137Z");
        assert_eq!(rfc3339_nanos(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
