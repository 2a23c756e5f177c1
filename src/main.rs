//! rbuild command-line interface: parses flags, wires the frontend, solver, worker and exporter
//! together, renders progress and errors. No build logic lives here.

mod attest;
mod build;
mod cache_opts;
mod checks;
mod cli;
mod explain;
mod export;
mod images;
mod inputs;
mod login;
mod manifest;
mod output;
mod platforms;
mod progress;
mod push;
mod render;
mod resolver;
mod secrets;
mod store_cmds;

use std::path::PathBuf;
use std::process::ExitCode;

use cli::{CacheCommand, Command, DebugCommand, ManifestCommand};

fn main() -> ExitCode {
    // The sandbox helper must start before any thread exists: it forks and unshares.
    if std::env::args_os().nth(1).is_some_and(|a| a == rbuild_executor::HELPER_ARG) {
        rbuild_executor::sandbox_main();
    }
    let cli = cli::parse();
    // Decided as the caller (the XDG directory when unprivileged), before becoming root in
    // a user namespace.
    let root = store_root(cli.root.clone());
    // Rootless: everything from here on runs as root in a user namespace of our own (see
    // `rbuild_executor::rootless`); still single-threaded, as `unshare` requires.
    let rootless = rbuild_executor::enter_user_namespace();
    if let (Err(e), Command::Build(_)) = (&rootless, &cli.command) {
        eprintln!("warning: running rootless needs a user namespace ({e}); RUN steps will fail");
    }
    let root_for_errors = root.clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Build(args) => build::run(root, *args).await,
            Command::Images(args) => images::run(root, args),
            Command::Tag { source, target } => images::tag(root, &source, &target),
            Command::Rmi { names } => images::rmi(root, &names),
            Command::Inspect { name, provenance: false, sbom: false } => images::inspect(root, &name),
            Command::Inspect { name, provenance, .. } => images::inspect_attestation(root, &name, provenance),
            Command::Save { names, output, format } => images::save(root, &names, &output, &format),
            Command::Login(args) => login::login(args).await,
            Command::Logout { server } => login::logout(server.as_deref()),
            Command::Push { name, insecure_registries } => push::run(root, &name, &insecure_registries).await,
            Command::Manifest(ManifestCommand::Create(args)) => manifest::create(root, args).await,
            Command::Prune(args) => store_cmds::prune(&root, &args),
            Command::Du => store_cmds::du(&root),
            Command::Cache(CacheCommand::Verify(args)) => store_cmds::verify(&root, &args),
            Command::Debug(DebugCommand::Parse { file }) => debug_parse(&file),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => render::error(&e, &root_for_errors),
    }
}

/// `--root`/`$RBUILD_ROOT`, else `/var/lib/rbuild` as root, else the XDG data directory.
fn store_root(flag: Option<PathBuf>) -> PathBuf {
    if let Some(p) = flag {
        return p;
    }
    if rustix_is_root() {
        return PathBuf::from("/var/lib/rbuild");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("rbuild");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/share/rbuild")
}

fn rustix_is_root() -> bool {
    // SAFETY-free: geteuid cannot fail.
    nix::unistd::geteuid().is_root()
}

fn debug_parse(file: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "Dockerfile".into());
    match rbuild_frontend::parser::parse(&bytes) {
        Ok(parsed) => {
            #[allow(clippy::print_stdout)]
            {
                print!("{}", rbuild_frontend::dump(&parsed.nodes));
            }
            Ok(())
        }
        Err(e) => Err(render::UserError(format!("{name}: {e}")).into()),
    }
}
