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
fn read_ignore(dockerfile: &Path, context: &Path) -> Result<Vec<String>> {
    let mut beside = dockerfile.as_os_str().to_owned();
    beside.push(".dockerignore");
    for p in [PathBuf::from(beside), context.join(".dockerignore")] {
        match std::fs::read_to_string(&p) {
            Ok(text) => return Ok(IgnoreMatcher::parse_file(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }
    Ok(Vec::new())
}

/// Runs a build.
pub async fn run(root: PathBuf, args: BuildArgs) -> Result<()> {
    let mut layer_opts = output::LayerOptions::default();
    let mut outputs: Vec<OutputSpec> =
        args.outputs.iter().map(|o| output::parse(o, &mut layer_opts)).collect::<Result<_>>()?;
    if args.push {
        outputs.push(OutputSpec::Registry);
    }
    if outputs.contains(&OutputSpec::Registry) && args.tags.is_empty() {
        return Err(UserError("pushing needs an image name: add -t registry.example/name:tag".into()).into());
    }
    let context = args.context.clone();
    if !context.is_dir() {
        return Err(UserError(format!("build context {} is not a directory", context.display())).into());
    }
    let dockerfile_path = args.file.clone().unwrap_or_else(|| context.join("Dockerfile"));
    let dockerfile = std::fs::read(&dockerfile_path).map_err(|e| {
        UserError(format!("cannot read Dockerfile {}: {e} (use -f to name another file)", dockerfile_path.display()))
    })?;
    let filename =
        dockerfile_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "Dockerfile".into());
    let excludes = read_ignore(&dockerfile_path, &context)?;
    let ignore = IgnoreMatcher::new(&excludes).map_err(|e| UserError(e.to_string()))?;
    let tags = export::normalize_tags(&args.tags)?;
    let entitlements = crate::cli::parse_entitlements(&args.allow).map_err(UserError)?;

    let store = Arc::new(Store::open(&root).with_context(|| format!("opening the store at {}", root.display()))?);
    let mut reg_opts = rbuild_registry::ClientOptions::default();
    reg_opts.insecure_hosts.extend(args.insecure_registries.iter().cloned());
    let registry = rbuild_registry::Client::new(reg_opts).context("creating the registry client")?;
    let push_client = registry.clone();

    // Frontend, on a blocking thread: it resolves base images synchronously. One conversion
    // per target platform; their graphs are merged so that what they share is built once.
    let platforms = crate::platforms::parse(&args.platforms)?;
    let multi_platform = platforms.len() > 1;
    if multi_platform && outputs.iter().any(|o| matches!(o, OutputSpec::Docker { .. })) {
        return Err(UserError(format!(
            "docker exporter does not currently support exporting manifest lists ({} platforms requested): \
             use -o type=oci,dest=FILE for a multi-platform archive, or one --platform per type=docker build",
            platforms.len()
        ))
        .into());
    }
    let resolver = RegistryResolver::new(registry.clone(), tokio::runtime::Handle::current());
    let build_args = parse_build_args(&args.build_args);
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
                };
                rbuild_frontend::build(&req, &resolver)
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .context("frontend task")?
    .map_err(|error| FrontendFailure { error, file: filename.clone(), source_text: dockerfile.clone() })?;
    // Each platform's conversion finds the same problems: say each once.
    let mut warned = std::collections::HashSet::new();
    for w in defs.iter().flat_map(|d| &d.warnings) {
        if !warned.insert((w.span.clone().map(|s| (s.file, s.start_line)), w.message.clone())) {
            continue;
        }
        match &w.span {
            Some(s) => eprintln!("warning: {}:{}: {}", s.file, s.start_line, w.message),
            None => eprintln!("warning: {}", w.message),
        }
    }

    if let Some(format) = &args.print_graph {
        let mut texts = Vec::with_capacity(defs.len());
        for def in &defs {
            texts.push(match format.as_str() {
                "dot" => rbuild_solver::print::to_dot(&def.graph, def.target),
                "json" => serde_json::to_string_pretty(&rbuild_solver::print::to_json(&def.graph, def.target))?,
                other => return Err(UserError(format!("--print-graph={other}: use dot or json")).into()),
            });
        }
        // Several platforms: one graph each (DOT files may hold several graphs; JSON becomes
        // an array in platform order).
        let text =
            if texts.len() > 1 && format == "json" { format!("[{}]", texts.join(",\n")) } else { texts.join("\n") };
        #[allow(clippy::print_stdout)]
        {
            println!("{text}");
        }
        return Ok(());
    }

    let context_root = std::fs::canonicalize(&context).with_context(|| format!("resolving {}", context.display()))?;
    let contexts = HashMap::from([("context".to_owned(), Arc::new(ContextDir { root: context_root, ignore }))]);
    let exe = std::env::current_exe().context("locating the rbuild binary for the sandbox helper")?;
    let secrets = crate::secrets::parse_secrets(&args.secrets)?;
    let ssh = crate::secrets::parse_ssh(&args.ssh)?;
    let worker = Arc::new(
        LocalWorker::new(store.clone(), registry, exe, contexts)
            .with_secrets(secrets)
            .with_ssh(ssh)
            .with_allow_insecure(entitlements.insecure)
            .with_debug(args.debug),
    );
    let mut solve_opts = SolveOptions { no_cache: args.no_cache, ..SolveOptions::default() };
    if let Some(n) = args.max_parallelism {
        solve_opts.max_parallelism = n;
    }
    let solver = Solver::new(worker.clone(), solve_opts);

    let mode = crate::progress::effective(args.progress, args.quiet);
    let quiet = mode == ProgressMode::Quiet;
    let (tx, rx) = mpsc::unbounded_channel();
    let renderer = tokio::spawn(crate::progress::render(rx, mode));
    let mut merged = rbuild_solver::ir::GraphBuilder::new();
    for def in &defs {
        merged.merge(&def.graph).context("merging the platforms' build graphs")?;
    }
    let graph = Arc::new(merged.build());
    // Platforms whose target is an empty filesystem (scratch) need nothing solved.
    let targets: Vec<rbuild_solver::ir::Input> = defs.iter().filter_map(|d| d.target).collect();
    let solve = async {
        if targets.is_empty() {
            drop(tx);
            return Ok(Vec::new());
        }
        solver.solve_all(graph, &targets, Some(tx)).await
    };
    // Ctrl-C: stop here. Returning ends the process, which takes every sandbox down with it
    // (their helpers die with their parent); what they left in the store's temp area is
    // reaped by the next build.
    let result = tokio::select! {
        r = solve => r,
        _ = tokio::signal::ctrl_c() => return Err(UserError("build cancelled (interrupted)".into()).into()),
    };
    let _ = renderer.await;
    let solved = match result {
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

    let mut images = Vec::with_capacity(defs.len());
    for ((def, platform), snapshot) in defs.iter().zip(&platforms).zip(snapshots) {
        let image = export::commit(&worker, &snapshot, def, platform, &layer_opts).await?;
        images.push(export::PlatformImage { platform: platform.clone(), image, snapshot });
    }
    let built = export::BuildResult::new(&worker, images, layer_opts.oci_mediatypes)?;
    export::write_outputs(&worker, &built, &tags, &outputs, quiet).await?;
    if outputs.contains(&OutputSpec::Registry) {
        for name in &tags {
            crate::push::push(&push_client, worker.store(), &built.top(), name, quiet).await?;
        }
    }
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
