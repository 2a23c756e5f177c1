//! Command-line definitions (docker-build-compatible flags).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// rbuild: build container images from Dockerfiles, without a daemon.
#[derive(Debug, Parser)]
#[command(name = "rbuild", version, about, long_about = None)]
pub struct Cli {
    /// Store directory (default: $RBUILD_ROOT, else /var/lib/rbuild as root, else
    /// $XDG_DATA_HOME/rbuild).
    #[arg(long, global = true, env = "RBUILD_ROOT")]
    pub root: Option<PathBuf>,

    /// What to do (`build` when omitted).
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile (the default command).
    Build(Box<BuildArgs>),
    /// List images in the local store.
    Images(ImagesArgs),
    /// Give an image another name.
    Tag {
        /// Existing image name.
        source: String,
        /// New name.
        target: String,
    },
    /// Remove image names from the local store (their data goes with `rbuild prune`).
    Rmi {
        /// Image names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Push an image from the local store to its registry.
    Push {
        /// Image name (the registry is its first component).
        name: String,
        /// Registries reached over plain HTTP (besides localhost and 127.0.0.1).
        #[arg(long = "insecure-registry")]
        insecure_registries: Vec<String>,
    },
    /// Print an image's manifest and config as JSON.
    Inspect {
        /// Image name.
        name: String,
    },
    /// Remove build cache (and with --all every image name) from the store.
    Prune(PruneArgs),
    /// Show how much disk the store uses.
    Du,
    /// Store maintenance.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Developer tools.
    #[command(subcommand)]
    Debug(DebugCommand),
}

/// `rbuild cache ...`
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Check the store's consistency (blobs, snapshots, records, images).
    Verify(VerifyArgs),
}

/// `rbuild cache verify` flags.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Re-hash every blob (reads all of them).
    #[arg(long)]
    pub rehash: bool,
    /// Remove what is broken and can be rebuilt (stale temp areas, corrupt blobs, bad records).
    #[arg(long)]
    pub repair: bool,
}

/// `rbuild prune` flags.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove every cache record and every image name, not just unused data.
    #[arg(short, long)]
    pub all: bool,
    /// Keep this much storage, removing least recently used records first (e.g. 10GB).
    #[arg(long)]
    pub keep_storage: Option<String>,
    /// `until=DURATION`: only records unused for longer than this (e.g. until=24h).
    #[arg(long = "filter")]
    pub filters: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub force: bool,
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `rbuild debug ...`
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Print a Dockerfile's parse tree in BuildKit's test-dump format.
    Parse {
        /// The Dockerfile.
        file: PathBuf,
    },
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// `tty` on a terminal, `plain` otherwise (and in CI).
    Auto,
    /// Line by line, as BuildKit's plain output.
    Plain,
    /// Live lines for running steps.
    Tty,
    /// One JSON object per event.
    Rawjson,
    /// Nothing but errors.
    Quiet,
}

/// `rbuild build` flags.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name and optionally a tag (`name:tag`); may be repeated.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,

    /// Dockerfile path (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,

    /// Build-time variable `KEY=VALUE` (or `KEY` to take it from the environment).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,

    /// Stage to build.
    #[arg(long)]
    pub target: Option<String>,

    /// Output destination, `type=oci,dest=out.tar` (docker buildx syntax); may be repeated.
    #[arg(short = 'o', long = "output")]
    pub outputs: Vec<String>,

    /// Print the build graph that would run (`dot` or `json`) and exit without building.
    #[arg(long, value_name = "FORMAT", num_args = 0..=1, default_missing_value = "dot")]
    pub print_graph: Option<String>,

    /// Push the image to the registry of each `-t` name (same as `-o type=registry`).
    #[arg(long)]
    pub push: bool,

    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,

    /// Stages whose steps ignore the cache (comma-separated or repeated stage names).
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,

    /// Export the build cache: `type=registry,ref=REF[,mode=min|max]`,
    /// `type=local,dest=DIR[,mode=min|max]` or `type=inline` (in the image config); repeatable.
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,

    /// Import a build cache: `type=registry,ref=REF` (a cache, or an image with an inline
    /// cache), `type=local,src=DIR`, or just `REF`; repeatable.
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,

    /// Say, for every step that runs, why it missed the cache (which file, build arg, base
    /// image or parent step changed).
    #[arg(long)]
    pub explain: bool,

    /// Progress output.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,

    /// Only print the image id.
    #[arg(short, long)]
    pub quiet: bool,

    /// Write the image id to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,

    /// Most steps running at once (default: 4 per CPU, at least 8).
    #[arg(long)]
    pub max_parallelism: Option<usize>,

    /// Secret for `RUN --mount=type=secret`: `id=ID,src=FILE`, `id=ID,env=VAR`, or `id=ID`
    /// (the variable ID when set, else a file named ID). Never stored in the image or the cache.
    #[arg(long = "secret")]
    pub secrets: Vec<String>,

    /// SSH agent for `RUN --mount=type=ssh`: `default` (uses $SSH_AUTH_SOCK) or `ID=SOCKET`.
    #[arg(long = "ssh")]
    pub ssh: Vec<String>,

    /// Registries reached over plain HTTP (besides localhost and 127.0.0.1).
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,

    /// Extra privileged entitlement (docker buildx syntax; repeatable or comma-separated):
    /// `security.insecure` lets `RUN --security=insecure` run unconfined; `network.host` is
    /// accepted (RUN steps use the host network unless `--network=none`).
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,

    /// Print each RUN step's effective confinement (namespaces, capabilities, seccomp, masked
    /// paths, network, limits) as progress status lines of that step.
    #[arg(long)]
    pub debug: bool,

    /// Build context directory.
    pub context: PathBuf,
}

/// Entitlements `--allow` grants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Entitlements {
    /// `security.insecure`.
    pub insecure: bool,
    /// `network.host`.
    pub network_host: bool,
}

/// Parses `--allow` values (each may list several, comma-separated).
pub fn parse_entitlements(values: &[String]) -> Result<Entitlements, String> {
    let mut out = Entitlements::default();
    for item in values.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
        match item {
            "security.insecure" => out.insecure = true,
            "network.host" => out.network_host = true,
            other => {
                return Err(format!("invalid entitlement {other:?} in --allow: use security.insecure or network.host"))
            }
        }
    }
    Ok(out)
}

/// `rbuild images` flags.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Print only image ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print manifest digests.
    #[arg(long)]
    pub digests: bool,
}

/// Parses argv, treating a command line without a subcommand as `build`.
pub fn parse() -> Cli {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if needs_implicit_build(&args) {
        args.insert(1, "build".into());
    }
    Cli::parse_from(args)
}

fn needs_implicit_build(args: &[std::ffi::OsString]) -> bool {
    let known = [
        "build",
        "images",
        "tag",
        "rmi",
        "inspect",
        "push",
        "prune",
        "du",
        "cache",
        "debug",
        "help",
        "--help",
        "-h",
        "--version",
        "-V",
    ];
    let mut i = 1;
    while let Some(a) = args.get(i) {
        let a = a.to_string_lossy();
        if a == "--root" {
            i += 2;
            continue;
        }
        if a.starts_with("--root=") {
            i += 1;
            continue;
        }
        return !known.contains(&a.as_ref());
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<std::ffi::OsString> {
        s.split_whitespace().map(Into::into).collect()
    }

    #[test]
    fn build_is_the_default_command() {
        assert!(needs_implicit_build(&argv("rbuild -t x .")));
        assert!(needs_implicit_build(&argv("rbuild --root /r -t x .")));
        assert!(needs_implicit_build(&argv("rbuild .")));
        assert!(!needs_implicit_build(&argv("rbuild build -t x .")));
        assert!(!needs_implicit_build(&argv("rbuild --root=/r images")));
        assert!(!needs_implicit_build(&argv("rbuild --help")));
        assert!(!needs_implicit_build(&argv("rbuild")));
    }

    #[test]
    fn allow_takes_buildx_entitlements() {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(parse_entitlements(&[]), Ok(Entitlements::default()));
        assert_eq!(
            parse_entitlements(&v(&["security.insecure"])),
            Ok(Entitlements { insecure: true, network_host: false })
        );
        assert_eq!(
            parse_entitlements(&v(&["network.host,security.insecure"])),
            Ok(Entitlements { insecure: true, network_host: true })
        );
        assert_eq!(
            parse_entitlements(&v(&["network.host", "network.host"])),
            Ok(Entitlements { insecure: false, network_host: true })
        );
        let err = parse_entitlements(&v(&["security.unconfined"])).unwrap_err();
        assert!(err.contains("\"security.unconfined\""), "{err}");
    }

    #[test]
    fn cache_flags_parse() {
        let cli = Cli::parse_from(argv(
            "rbuild build --no-cache-filter a,B --no-cache-filter c --cache-to type=inline --cache-from r/x:c --explain .",
        ));
        let Command::Build(args) = cli.command else { panic!("not a build") };
        assert_eq!(args.no_cache_filter, ["a", "B", "c"]);
        assert_eq!(args.cache_to, ["type=inline"]);
        assert_eq!(args.cache_from, ["r/x:c"]);
        assert!(args.explain);
    }

    #[test]
    fn build_flags_allow_and_debug_parse() {
        let cli = Cli::parse_from(argv("rbuild build --allow security.insecure --allow network.host --debug ."));
        let Command::Build(args) = cli.command else { panic!("not a build") };
        assert_eq!(args.allow, ["security.insecure", "network.host"]);
        assert!(args.debug);
    }
}
