//! `rbuild build`: Dockerfile → graph → solve → image → outputs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rbuild_cache::Store;
use rbuild_frontend::{BuildDefinition, BuildRequest};
use rbuild_solver::ir::Platform;
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

    // Frontend, on a blocking thread: it resolves base images synchronously.
    let platform = Platform::host();
    let request_platform = platform.clone();
    let resolver = RegistryResolver::new(registry.clone(), tokio::runtime::Handle::current());
    let build_args = parse_build_args(&args.build_args);
    let (target, no_cache) = (args.target.clone(), args.no_cache);
    let df = dockerfile.clone();
    let fname = filename.clone();
    let excl = excludes.clone();
    let def: BuildDefinition = tokio::task::spawn_blocking(move || {
        let req = BuildRequest {
            dockerfile: &df,
            filename: fname,
            build_args,
            target,
            platform: request_platform,
            context_excludes: excl,
            no_cache,
        };
        rbuild_frontend::build(&req, &resolver)
    })
    .await
    .context("frontend task")?
    .map_err(|error| FrontendFailure { error, file: filename.clone(), source_text: dockerfile.clone() })?;
    for w in &def.warnings {
        match &w.span {
            Some(s) => eprintln!("warning: {}:{}: {}", s.file, s.start_line, w.message),
            None => eprintln!("warning: {}", w.message),
        }
    }

    if let Some(format) = &args.print_graph {
        let text = match format.as_str() {
            "dot" => rbuild_solver::print::to_dot(&def.graph, def.target),
            "json" => serde_json::to_string_pretty(&rbuild_solver::print::to_json(&def.graph, def.target))?,
            other => return Err(UserError(format!("--print-graph={other}: use dot or json")).into()),
        };
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
    // BuildKit's `--oci-worker-snapshotter`: overlayfs, native (a copy), or auto.
    let run_rootfs: rbuild_worker::RunRootfs = std::env::var("RBUILD_SNAPSHOTTER")
        .unwrap_or_default()
        .parse()
        .map_err(|e: String| UserError(format!("RBUILD_SNAPSHOTTER: {e}")))?;
    let worker = Arc::new(
        LocalWorker::new(store.clone(), registry, exe, contexts)
            .with_run_rootfs(run_rootfs)
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
    let graph = Arc::new(def.graph.clone());
    let solve = async {
        match def.target {
            Some(t) => solver.solve(graph, t, Some(tx)).await,
            None => {
                drop(tx);
                Ok(Output::Fs(Snapshot::default()))
            }
        }
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
    let _ = renderer.await;
    let snapshot = match result {
        Ok(Output::Fs(s)) => s,
        Ok(Output::Context(_)) => return Err(UserError("the target is a build context, not an image".into()).into()),
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

    let image = export::commit(&worker, &snapshot, &def, &platform, &layer_opts).await?;
    export::write_outputs(&worker, &image, &snapshot, &tags, &outputs, quiet).await?;
    if outputs.contains(&OutputSpec::Registry) {
        for name in &tags {
            crate::push::push(&push_client, worker.store(), &image.manifest, name, quiet).await?;
        }
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, image.config.digest().to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.quiet {
        #[allow(clippy::print_stdout)]
        {
            println!("{}", image.config.digest());
        }
    }
    Ok(())
}
