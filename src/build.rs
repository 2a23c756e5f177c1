//! `rbuild build`: Dockerfile → graph → solve → image → outputs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rbuild_cache::Store;
use rbuild_frontend::{BuildDefinition, BuildRequest};
use rbuild_solver::{SolveError, SolveOptions, Solver};
use rbuild_worker::{ContextDir, IgnoreMatcher, LocalWorker, Output, Snapshot};
use tokio::sync::mpsc;

use crate::cli::{BuildArgs, ProgressMode};
use crate::export;
use crate::inputs;
use crate::output::{self, Output as OutputSpec};
use crate::render::{FrontendFailure, StepFailure, UserError};
use crate::resolver::RegistryResolver;

/// `KEY=VALUE` as given, `KEY` from the environment (unset: not sent, the default stays).
fn parse_build_args(args: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_owned(), v.to_owned());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    out
}

/// The ignore file: `<Dockerfile>.dockerignore` beside the Dockerfile wins over the context's
/// `.dockerignore`.
fn read_ignore(dockerfile: Option<&Path>, context: &Path) -> Result<Vec<String>> {
    let beside = dockerfile.map(|d| {
        let mut b = d.as_os_str().to_owned();
        b.push(".dockerignore");
        PathBuf::from(b)
    });
    for p in beside.into_iter().chain([context.join(".dockerignore")]) {
        match std::fs::read_to_string(&p) {
            Ok(text) => return Ok(IgnoreMatcher::parse_file(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }
    Ok(Vec::new())
}

/// `--label KEY=VALUE` (a bare `KEY` is an empty label, as with docker) over the Dockerfile's labels.
fn apply_labels(config: &mut oci_spec::image::Config, labels: &[String]) -> Result<()> {
    if labels.is_empty() {
        return Ok(());
    }
    let mut all = config.labels().clone().unwrap_or_default();
    for l in labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            return Err(UserError(format!("--label {l:?}: the key is empty (use --label KEY=VALUE)")).into());
        }
        all.insert(k.to_owned(), v.to_owned());
    }
    config.set_labels(Some(all));
    Ok(())
}

/// What `--metadata-file` holds, with buildx's keys.
fn metadata(built: &export::BuildResult, tags: &[String], warnings: &[rbuild_frontend::Warning]) -> serde_json::Value {
    let top = built.top();
    let mut out = serde_json::json!({
        "containerimage.descriptor": top,
        "containerimage.digest": top.digest().to_string(),
    });
    // A single image's config; an index has none of its own (as buildx writes it).
    if let [one] = built.images.as_slice() {
        out["containerimage.config.digest"] = serde_json::Value::String(one.image.config.digest().to_string());
    }
    if !tags.is_empty() {
        out["image.name"] = serde_json::Value::String(tags.join(","));
    }
    if !warnings.is_empty() {
        out["buildx.build.warnings"] = warnings.iter().map(rbuild_frontend::Warning::to_json).collect();
    }
    out
}

/// Whether warnings are printed after the build (not in quiet or JSON progress modes).
fn show_warnings(progress: ProgressMode, quiet: bool) -> bool {
    !matches!(crate::progress::effective(progress, quiet), ProgressMode::Quiet | ProgressMode::Rawjson)
}

/// Removes a context directory materialised for this build when dropped.
struct TempContext(Option<PathBuf>);

impl Drop for TempContext {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The Dockerfile (its path as shown, bytes and file name) and the context's ignore patterns:
/// from stdin (`-f -`), from a context that came as a stream or archive (confined to it), or
/// from the file system.
fn load_dockerfile(
    file: &Option<PathBuf>,
    m: &inputs::Materialized,
    dockerfile_from_stdin: bool,
) -> Result<(PathBuf, Vec<u8>, String, Vec<String>)> {
    let context = m.root.clone();
    let (dockerfile_path, dockerfile) = if dockerfile_from_stdin {
        (PathBuf::from("Dockerfile"), inputs::read_stdin_dockerfile()?)
    } else if let Some(text) = m.dockerfile.clone() {
        (PathBuf::from("Dockerfile"), text)
    } else if m.temporary {
        // Inside a context that came from elsewhere: -f names a file in it.
        let rel = file.clone().unwrap_or_else(|| PathBuf::from("Dockerfile"));
        let text = inputs::read_confined(&context, &rel)?.ok_or_else(|| {
            UserError(format!(
                "cannot read Dockerfile {} in the build context (use -f to name another file)",
                rel.display()
            ))
        })?;
        (rel, text)
    } else {
        let path = file.clone().unwrap_or_else(|| context.join("Dockerfile"));
        let text = std::fs::read(&path).map_err(|e| {
            UserError(format!("cannot read Dockerfile {}: {e} (use -f to name another file)", path.display()))
        })?;
        (path, text)
    };
    let filename =
        dockerfile_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "Dockerfile".into());
    let excludes = if m.temporary {
        let mut beside = dockerfile_path.as_os_str().to_owned();
        beside.push(".dockerignore");
        let text = match inputs::read_confined(&context, Path::new(&beside))? {
            Some(t) => Some(t),
            None => inputs::read_confined(&context, Path::new(".dockerignore"))?,
        };
        text.map(|t| IgnoreMatcher::parse_file(&String::from_utf8_lossy(&t))).unwrap_or_default()
    } else {
        let on_disk = !dockerfile_from_stdin && m.dockerfile.is_none();
        read_ignore(on_disk.then_some(dockerfile_path.as_path()), &context)?
    };
    Ok((dockerfile_path, dockerfile, filename, excludes))
}

/// The provenance's account of this invocation: the options BuildKit's frontend would have
/// got (with BuildKit's names), the local directories read, where the Dockerfile came from.
fn describe_invocation(
    args: &BuildArgs,
    context_arg: &inputs::ContextArg,
    materialized: &inputs::Materialized,
    filename: &str,
    dockerfile: &[u8],
    started: std::time::SystemTime,
) -> crate::attest::Invocation {
    use crate::attest::redact_url;
    let mut fa = BTreeMap::new();
    for (k, v) in parse_build_args(&args.build_args) {
        fa.insert(format!("build-arg:{k}"), v);
    }
    for l in &args.labels {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        fa.insert(format!("label:{k}"), v.to_owned());
    }
    if let Some(t) = &args.target {
        fa.insert("target".into(), t.clone());
    }
    if filename != "Dockerfile" {
        fa.insert("filename".into(), filename.to_owned());
    }
    let mut locals = Vec::new();
    for c in &args.build_contexts {
        let (name, value) = c.split_once('=').unwrap_or((c, ""));
        let local = !value.contains("://") && !value.starts_with("target:") && !value.starts_with("git@");
        if local {
            locals.push(name.to_owned());
            fa.insert(format!("context:{name}"), format!("local:{name}"));
        } else {
            fa.insert(format!("context:{name}"), redact_url(value));
        }
    }
    if !args.add_hosts.is_empty() {
        fa.insert("add-hosts".into(), args.add_hosts.join(","));
    }
    if let Some(s) = &args.shm_size {
        fa.insert("shm-size".into(), s.clone());
    }
    if !args.ulimits.is_empty() {
        fa.insert("ulimit".into(), args.ulimits.join(","));
    }
    if args.no_cache {
        fa.insert("no-cache".into(), String::new());
    } else if !args.no_cache_filter.is_empty() {
        fa.insert("no-cache".into(), args.no_cache_filter.join(","));
    }
    if args.network != "default" && !args.network.is_empty() {
        fa.insert("force-network-mode".into(), args.network.clone());
    }
    let remote = matches!(context_arg, inputs::ContextArg::Git(_) | inputs::ContextArg::Url(_));
    if !remote {
        locals.insert(0, "context".to_owned());
    }
    if !remote || args.file.as_deref() == Some(Path::new("-")) {
        locals.insert(usize::from(!remote), "dockerfile".to_owned());
    }
    let mut config_source = crate::attest::ConfigSource { entry_point: filename.to_owned(), ..Default::default() };
    match (context_arg, &materialized.git_source) {
        (inputs::ContextArg::Git(_), Some((uri, commit))) => {
            config_source.uri = Some(uri.clone());
            config_source.digest = Some(("sha1".into(), commit.clone()));
        }
        (inputs::ContextArg::Url(url), _) => config_source.uri = Some(redact_url(url)),
        _ => {}
    }
    let vcs = match context_arg {
        inputs::ContextArg::Dir(dir) => git_vcs(dir),
        _ => BTreeMap::new(),
    };
    crate::attest::Invocation {
        id: crate::attest::Invocation::new_id(),
        started,
        finished: started,
        args: fa,
        materials_complete: config_source.digest.is_some() && locals.iter().all(|l| l == "dockerfile"),
        locals,
        config_source,
        vcs,
        dockerfile: dockerfile.to_vec(),
        filename: filename.to_owned(),
    }
}

/// `vcs:source`/`vcs:revision` of a context directory inside a git work tree, as buildx
/// reports them (the remote's URL without credentials, the HEAD commit). Empty when git is
/// missing or the directory is not in a repository.
fn git_vcs(dir: &Path) -> BTreeMap<String, String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "safe.directory=*"])
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    let mut vcs = BTreeMap::new();
    if let Some(rev) = git(&["rev-parse", "HEAD"]) {
        vcs.insert("revision".to_owned(), rev);
        if let Some(url) = git(&["remote", "get-url", "origin"]) {
            vcs.insert("source".to_owned(), crate::attest::redact_url(&url));
        }
    }
    vcs
}

/// `--print-graph`: each platform's graph (DOT files may hold several graphs; JSON becomes an
/// array in platform order).
#[allow(clippy::print_stdout)]
fn print_graphs(defs: &[BuildDefinition], format: &str) -> Result<()> {
    let mut texts = Vec::with_capacity(defs.len());
    for def in defs {
        texts.push(match format {
            "dot" => rbuild_solver::print::to_dot(&def.graph, def.target),
            "json" => serde_json::to_string_pretty(&rbuild_solver::print::to_json(&def.graph, def.target))?,
            other => return Err(UserError(format!("--print-graph={other}: use dot or json")).into()),
        });
    }
    let text = if texts.len() > 1 && format == "json" { format!("[{}]", texts.join(",\n")) } else { texts.join("\n") };
    println!("{text}");
    Ok(())
}

/// What is done with a build's result: its names, outputs, layer options and exports.
struct Delivery {
    tags: Vec<String>,
    outputs: Vec<OutputSpec>,
    layer_opts: output::LayerOptions,
    cache_exports: Vec<crate::cache_opts::CacheExport>,
    /// `SOURCE_DATE_EPOCH`, set once the build args are known.
    epoch: Option<i64>,
    annotations: BTreeMap<String, String>,
    /// Attestations to attach (`--provenance`, `--sbom`, `--attest`).
    attest: crate::attest::AttestOptions,
    /// What the provenance says of the build, set once its inputs are known.
    invocation: Option<crate::attest::Invocation>,
}

impl Delivery {
    /// Parses and checks the output flags, before anything is built.
    fn from_args(args: &BuildArgs) -> Result<Delivery> {
        let mut layer_opts = output::LayerOptions::default();
        let mut outputs: Vec<OutputSpec> =
            args.outputs.iter().map(|o| output::parse(o, &mut layer_opts)).collect::<Result<_>>()?;
        if args.push {
            outputs.push(OutputSpec::Registry);
        }
        if outputs.contains(&OutputSpec::Registry) && args.tags.is_empty() {
            return Err(UserError("pushing needs an image name: add -t registry.example/name:tag".into()).into());
        }
        if args.load {
            export::docker_cli()?;
        }
        let cache_exports = args
            .cache_to
            .iter()
            .map(|v| crate::cache_opts::parse_cache_to(v))
            .collect::<Result<_, _>>()
            .map_err(UserError)?;
        let pushing = outputs.contains(&OutputSpec::Registry);
        let mut attest = crate::attest::parse(args.provenance.as_deref(), args.sbom.as_deref(), &args.attest, pushing)
            .map_err(UserError)?;
        if !attest.is_empty() && !layer_opts.oci_mediatypes {
            // As BuildKit: attestation manifests are OCI artifacts a Docker manifest list
            // cannot carry.
            if !args.quiet {
                eprintln!("WARNING: attestations are not supported with oci-mediatypes=false: dropping them");
            }
            attest = crate::attest::AttestOptions::default();
        }
        let carried = outputs.is_empty()
            || outputs.iter().any(|o| !matches!(o, OutputSpec::Tar { .. } | OutputSpec::Docker { .. }));
        if !attest.is_empty() && !carried && !args.quiet {
            eprintln!(
                "WARNING: attestations go to images (the store, a registry, an OCI archive) and, as files, \
                 to type=local outputs: this build's outputs get none"
            );
        }
        Ok(Delivery {
            tags: export::normalize_tags(&args.tags)?,
            outputs,
            layer_opts,
            cache_exports,
            epoch: None,
            annotations: export::parse_annotations(&args.annotations)?,
            attest,
            invocation: None,
        })
    }
}

/// One platform's solved build: its definition, the target's filesystem and those of the
/// stages its SBOM attestation also describes.
struct Solved<'a> {
    def: &'a BuildDefinition,
    platform: &'a rbuild_solver::ir::Platform,
    snapshot: Snapshot,
    stages: Vec<(String, Snapshot)>,
}

/// Commits each platform's image (an index over several), writes and pushes the outputs, loads
/// into docker, writes the metadata file and the id, and exports the build cache.
#[allow(clippy::too_many_arguments)] // the build's results, each from another phase
async fn deliver(
    d: &Delivery,
    args: &BuildArgs,
    worker: &Arc<LocalWorker>,
    push_client: &rbuild_registry::Client,
    results: Vec<Solved<'_>>,
    keys: &[rbuild_solver::CacheKey],
    warnings: &[rbuild_frontend::Warning],
    quiet: bool,
) -> Result<()> {
    let compression = d.layer_opts.compression;
    let mut images = Vec::with_capacity(results.len());
    let mut defs = Vec::with_capacity(results.len());
    let mut stages = Vec::with_capacity(results.len());
    for Solved { def, platform, snapshot, stages: scanned } in results {
        defs.push(def);
        stages.push(scanned);
        let inline = crate::cache_opts::inline_field(worker, &d.cache_exports, keys, &snapshot, compression).await?;
        let image =
            export::commit_with(worker, &snapshot, def, platform, &d.layer_opts, d.epoch, &d.annotations, inline)
                .await?;
        images.push(export::PlatformImage { platform: platform.clone(), image, snapshot });
    }
    let mut attestations = crate::attest::Attached::default();
    if let Some(inv) = d.invocation.as_ref().filter(|_| !d.attest.is_empty()) {
        let inv = crate::attest::Invocation { finished: std::time::SystemTime::now(), ..inv.clone() };
        let subjects: Vec<crate::attest::Subject<'_>> = defs
            .iter()
            .zip(&images)
            .zip(&stages)
            .map(|((def, image), stages)| crate::attest::Subject { def, image, stages })
            .collect();
        let created = export::created(d.epoch);
        attestations = crate::attest::attach(worker, &d.attest, &inv, &d.tags, &subjects, &created)
            .await
            .context("attesting the build")?;
    }
    let built = export::BuildResult::new(worker, images, attestations.manifests, d.layer_opts.oci_mediatypes)?;
    export::write_outputs(worker, &built, &d.tags, &d.outputs, &attestations.predicates, quiet).await?;
    if d.outputs.contains(&OutputSpec::Registry) {
        for name in &d.tags {
            crate::push::push(push_client, worker.store(), &built.top(), name, quiet).await?;
        }
    }
    if args.load {
        crate::export::docker_load(worker, &built.images[0].image, &d.tags, quiet).await?;
    }
    if let Some(path) = &args.metadata_file {
        let json = serde_json::to_vec_pretty(&metadata(&built, &d.tags, warnings))?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    // The shared cache holds every platform's steps (mode=max); its final-image layers are
    // the first platform's.
    let first = &built.images[0].snapshot;
    crate::cache_opts::export(worker, push_client, &d.cache_exports, keys, first, compression, quiet).await?;
    if let Some(path) = &args.iidfile {
        std::fs::write(path, built.id().to_string()).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.quiet {
        #[allow(clippy::print_stdout)]
        {
            println!("{}", built.id());
        }
    }
    Ok(())
}

/// Runs a build.
pub async fn run(root: PathBuf, args: BuildArgs) -> Result<()> {
    let started = std::time::SystemTime::now();
    let mut delivery = Delivery::from_args(&args)?;
    let context_arg = inputs::classify(&args.context)?;
    let dockerfile_from_stdin = args.file.as_deref() == Some(Path::new("-"));
    if dockerfile_from_stdin && context_arg == inputs::ContextArg::Stdin {
        return Err(UserError("stdin cannot be both the build context and the Dockerfile (-f -)".into()).into());
    }
    let entitlements = crate::cli::parse_entitlements(&args.allow).map_err(UserError)?;
    let run_defaults =
        inputs::parse_run_defaults(&args.add_hosts, &args.ulimits, args.shm_size.as_deref(), &args.network)?;
    let (named_contexts, named_dirs) = inputs::parse_named_contexts(&args.build_contexts)?;

    let store = Arc::new(Store::open(&root).with_context(|| format!("opening the store at {}", root.display()))?);
    let materialized = inputs::materialize(&context_arg, store.tmp_dir()).await?;
    // Removed when the build ends, whichever way.
    let _cleanup = TempContext(materialized.temporary.then(|| materialized.root.clone()));
    let context = materialized.root.clone();
    let (dockerfile_path, dockerfile, filename, excludes) =
        load_dockerfile(&args.file, &materialized, dockerfile_from_stdin)?;
    if !delivery.attest.is_empty() {
        delivery.invocation =
            Some(describe_invocation(&args, &context_arg, &materialized, &filename, &dockerfile, started));
    }
    // --pull: base images are always resolved against their registry (`RegistryResolver`).
    let _ = args.pull;
    let ignore = IgnoreMatcher::new(&excludes).map_err(|e| UserError(e.to_string()))?;
    let call = crate::checks::parse_call(args.call.as_deref(), args.check).map_err(UserError)?;
    let mut reg_opts = rbuild_registry::ClientOptions::default();
    reg_opts.insecure_hosts.extend(args.insecure_registries.iter().cloned());
    let registry = rbuild_registry::Client::new(reg_opts).context("creating the registry client")?;
    if let Some(call) = call {
        let input = crate::checks::CallInput {
            dockerfile,
            filename,
            build_args: parse_build_args(&args.build_args),
            target: args.target.clone(),
            // Checked for the first target platform (`InvalidBaseImagePlatform` compares it).
            platform: crate::platforms::parse(&args.platforms)?
                .into_iter()
                .next()
                .unwrap_or_else(rbuild_solver::ir::Platform::host),
            context_excludes: excludes,
            named_contexts: named_contexts.clone(),
        };
        let resolver = RegistryResolver::new(registry, tokio::runtime::Handle::current());
        return crate::checks::run_call(call, input, resolver).await;
    }
    let push_client = registry.clone();

    // Frontend, on a blocking thread: it resolves base images synchronously. One conversion
    // per target platform; their graphs are merged so that what they share is built once.
    let platforms = crate::platforms::parse(&args.platforms)?;
    let multi_platform = platforms.len() > 1;
    if multi_platform && delivery.outputs.iter().any(|o| matches!(o, OutputSpec::Docker { .. })) {
        return Err(UserError(format!(
            "docker exporter does not currently support exporting manifest lists ({} platforms requested): \
             use -o type=oci,dest=FILE for a multi-platform archive, or one --platform per type=docker build",
            platforms.len()
        ))
        .into());
    }
    if multi_platform && args.load {
        return Err(UserError(format!(
            "--load takes one image, not {} platforms: build one --platform for docker, or push the index",
            platforms.len()
        ))
        .into());
    }
    let resolver = RegistryResolver::new(registry.clone(), tokio::runtime::Handle::current());
    let build_args = parse_build_args(&args.build_args);
    delivery.epoch = export::source_date_epoch(&build_args)?;
    let (target, no_cache) = (args.target.clone(), args.no_cache);
    let df = dockerfile.clone();
    let fname = filename.clone();
    let excl = excludes.clone();
    let request_platforms = platforms.clone();
    let defs: Vec<BuildDefinition> = tokio::task::spawn_blocking(move || {
        request_platforms
            .into_iter()
            .map(|platform| {
                let req = BuildRequest {
                    dockerfile: &df,
                    filename: fname.clone(),
                    build_args: build_args.clone(),
                    target: target.clone(),
                    platform,
                    multi_platform,
                    context_excludes: excl.clone(),
                    no_cache,
                    named_contexts: named_contexts.clone(),
                    run_defaults: run_defaults.clone(),
                };
                rbuild_frontend::build(&req, &resolver)
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .context("frontend task")?
    .map_err(|error| {
        if show_warnings(args.progress, args.quiet) {
            eprint!("{}", crate::checks::build_summary(error.warnings(), &dockerfile));
        } else if crate::progress::effective(args.progress, args.quiet) == ProgressMode::Rawjson {
            if let Ok(lines) = crate::progress::rawjson_warnings(error.warnings(), &filename, &dockerfile) {
                eprint!("{lines}");
            }
        }
        FrontendFailure { error, file: filename.clone(), source_text: dockerfile.clone() }
    })?;
    let mut defs = defs;
    for def in &mut defs {
        apply_labels(&mut def.config, &args.labels)?;
    }
    // Each platform's conversion finds the same problems: say each once.
    let mut warned = std::collections::HashSet::new();
    let warnings: Vec<rbuild_frontend::Warning> = defs
        .iter()
        .flat_map(|d| &d.warnings)
        .filter(|w| warned.insert((w.span.clone().map(|s| (s.file, s.start_line)), w.message.clone())))
        .cloned()
        .collect();

    if let Some(format) = &args.print_graph {
        return print_graphs(&defs, format);
    }

    let context_root = std::fs::canonicalize(&context).with_context(|| format!("resolving {}", context.display()))?;
    let mut contexts =
        HashMap::from([("context".to_owned(), Arc::new(ContextDir { root: context_root.clone(), ignore }))]);
    for n in named_dirs {
        contexts.insert(n.name, Arc::new(n.dir));
    }
    let exe = std::env::current_exe().context("locating the rbuild binary for the sandbox helper")?;
    let secrets = crate::secrets::parse_secrets(&args.secrets)?;
    let ssh = crate::secrets::parse_ssh(&args.ssh)?;
    // BuildKit's `--oci-worker-snapshotter`: overlayfs, native (a copy), or auto.
    let run_rootfs: rbuild_worker::RunRootfs = std::env::var("RBUILD_SNAPSHOTTER")
        .unwrap_or_default()
        .parse()
        .map_err(|e: String| UserError(format!("RBUILD_SNAPSHOTTER: {e}")))?;
    let sandbox_exe = exe.clone();
    let worker = LocalWorker::new(store.clone(), registry, exe, contexts)
        .with_run_rootfs(run_rootfs)
        .with_secrets(secrets)
        .with_ssh(ssh)
        .with_allow_insecure(entitlements.insecure)
        .with_debug(args.debug);
    let mode = crate::progress::effective(args.progress, args.quiet);
    let quiet = mode == ProgressMode::Quiet;
    if mode == ProgressMode::Rawjson {
        eprint!("{}", crate::progress::rawjson_warnings(&warnings, &filename, &dockerfile)?);
    }
    let imported = crate::cache_opts::load_imports(&worker, &args.cache_from, quiet).await?;
    let worker = Arc::new(worker.with_remote_caches(imported));
    let mut solve_opts = SolveOptions { no_cache: args.no_cache, ..SolveOptions::default() };
    if let Some(n) = args.max_parallelism {
        solve_opts.max_parallelism = n;
    }
    let solver = Solver::new(worker.clone(), solve_opts);

    let (tx, rx) = mpsc::unbounded_channel();
    let renderer = tokio::spawn(crate::progress::render(rx, mode));
    let mut merged = rbuild_solver::ir::GraphBuilder::new();
    for def in &defs {
        merged.merge(&def.graph).context("merging the platforms' build graphs")?;
    }
    let mut graph = merged.build();
    for unknown in crate::cache_opts::apply_no_cache_filter(&mut graph, &dockerfile, &args.no_cache_filter) {
        if !quiet {
            eprintln!("WARNING: --no-cache-filter: no stage named {unknown:?}");
        }
    }
    let graph = Arc::new(graph);
    // The sandbox's start-up (seccomp filters, the helpers' zygote) overlaps the pulls.
    if graph.topological().any(|(_, op)| matches!(op, rbuild_solver::ir::Op::Exec(_))) {
        drop(tokio::task::spawn_blocking(move || rbuild_executor::warm_up(&sandbox_exe)));
    }
    // Platforms whose target is an empty filesystem (scratch) need nothing solved.
    let mut targets: Vec<rbuild_solver::ir::Input> = defs.iter().filter_map(|d| d.target).collect();
    // With --sbom, the stages that ask to be scanned too (their results follow the images').
    let scanned_stages: Vec<(usize, &rbuild_frontend::ScanStage)> = if delivery.attest.sbom {
        defs.iter().enumerate().flat_map(|(i, d)| d.sbom_stages.iter().map(move |s| (i, s))).collect()
    } else {
        Vec::new()
    };
    if !targets.is_empty() {
        targets.extend(scanned_stages.iter().map(|(_, s)| s.fs));
    }
    let mut explainer = None;
    let solve = async {
        if targets.is_empty() {
            drop(tx);
            return Ok((Vec::new(), None));
        }
        let prepared = solver.prepare(graph, &targets, Some(&tx)).await?;
        let (tx, ex) = crate::explain::attach(
            args.explain.then_some(&*store),
            tx,
            &dockerfile_path,
            args.target.as_deref(),
            parse_build_args(&args.build_args).into_keys().collect(),
            args.no_cache,
            &prepared,
            &worker,
        );
        explainer = ex;
        solver.run(&prepared, Some(tx)).await.map(|out| (out, Some(prepared)))
    };
    // Ctrl-C (or SIGTERM, how CI systems cancel a job): stop here. Every sandbox is taken
    // down (its helper kills it, removes its cgroups and returns), so the blocking tasks that
    // ran them end at once and drop what they held in the store's temp area; the runtime
    // waits for them before the process ends, and the store removes its temp area last.
    // Nothing is left behind.
    let terminated = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => signal.recv().await,
            Err(_) => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        r = solve => r,
        _ = tokio::signal::ctrl_c() => {
            rbuild_executor::cancel_all();
            return Err(UserError("build cancelled (interrupted)".into()).into());
        }
        _ = terminated => {
            rbuild_executor::cancel_all();
            return Err(UserError("build cancelled (terminated)".into()).into());
        }
    };
    if materialized.temporary {
        worker.forget_context(&context_root);
    }
    let _ = renderer.await;
    crate::explain::finish(explainer.as_deref(), mode == ProgressMode::Tty, result.is_ok());
    if !quiet {
        for w in worker.cache_warnings() {
            eprintln!("WARNING: {w}");
        }
    }
    // After the progress, like buildx: the build checks' findings and other warnings.
    if show_warnings(args.progress, args.quiet) {
        eprint!("{}", crate::checks::build_summary(&warnings, &dockerfile));
    }
    let (solved, prepared) = match result {
        Ok(outputs) => outputs,
        Err(SolveError::Vertex { name, span, source, .. }) => {
            return Err(StepFailure {
                step: name,
                location: span.map(|s| (s.file, s.start_line, s.end_line)),
                source_text: dockerfile,
                error: source,
            }
            .into())
        }
        Err(e) => return Err(e).context("solving the build graph"),
    };
    let mut solved = solved.into_iter();
    let mut snapshots = Vec::with_capacity(defs.len());
    for def in &defs {
        snapshots.push(match def.target {
            None => Snapshot::default(),
            Some(_) => match solved.next() {
                Some(Output::Fs(s)) => s,
                Some(Output::Context(_)) => {
                    return Err(UserError("the target is a build context, not an image".into()).into())
                }
                None => anyhow::bail!("the solver returned fewer results than there are platforms"),
            },
        });
    }

    let mut stage_snapshots: Vec<Vec<(String, Snapshot)>> = vec![Vec::new(); defs.len()];
    for ((i, stage), out) in scanned_stages.iter().zip(solved) {
        if let (Output::Fs(snapshot), Some(list)) = (out, stage_snapshots.get_mut(*i)) {
            list.push((stage.name.clone(), snapshot));
        }
    }

    let keys: Vec<rbuild_solver::CacheKey> =
        prepared.as_ref().map(|p| p.keys().values().map(|k| k.key).collect()).unwrap_or_default();
    let results = defs
        .iter()
        .zip(&platforms)
        .zip(snapshots)
        .zip(stage_snapshots)
        .map(|(((def, platform), snapshot), stages)| Solved { def, platform, snapshot, stages })
        .collect();
    deliver(&delivery, &args, &worker, &push_client, results, &keys, &warnings, quiet).await
}
