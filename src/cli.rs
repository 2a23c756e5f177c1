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
    /// Write images from the local store to a docker-load archive (or an OCI layout archive).
    Save {
        /// Image names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Archive to write (`-` for standard output, which must not be a terminal).
        #[arg(short, long)]
        output: PathBuf,
        /// `docker` (what `docker load` reads) or `oci` (an OCI image layout).
        #[arg(long, default_value = "docker")]
        format: String,
    },
    /// Log in to a registry: check the credentials with it, then keep them in docker's
    /// config.json (`$DOCKER_CONFIG`, else ~/.docker), where builds and pushes find them.
    Login(LoginArgs),
    /// Forget the credentials `rbuild login` kept for a registry.
    Logout {
        /// Registry (`host[:port]`; default Docker Hub).
        server: Option<String>,
    },
    /// Print an image's manifest and config as JSON.
    Inspect {
        /// Image name.
        name: String,
        /// Print the SLSA provenance attached to the image (`{"SLSA": ...}`, per platform for
        /// a multi-platform image), as `buildx imagetools inspect --format '{{json .Provenance}}'`.
        #[arg(long, conflicts_with = "sbom")]
        provenance: bool,
        /// Print the SPDX SBOM attached to the image (`{"SPDX": ...}`, per platform for a
        /// multi-platform image), as `buildx imagetools inspect --format '{{json .SBOM}}'`.
        #[arg(long)]
        sbom: bool,
    },
    /// Multi-platform images made of images built separately.
    #[command(subcommand)]
    Manifest(ManifestCommand),
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

/// `rbuild manifest ...`
#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Make one multi-platform image (an image index) named NAME from the images SRC...
    /// (`docker buildx imagetools create -t NAME SRC...`). Each SRC is a local image or a
    /// registry reference; an SRC that is an index adds each of its manifests. The index goes
    /// into the local store, or to NAME's registry with --push.
    Create(ManifestCreateArgs),
}

/// `rbuild manifest create` flags.
#[derive(Debug, Args)]
pub struct ManifestCreateArgs {
    /// Name of the new image (`registry.example/app:1.0`).
    pub name: String,
    /// Images to merge (local names or registry references, `name:tag` or `name@digest`).
    #[arg(required = true)]
    pub sources: Vec<String>,
    /// Push the index to NAME's registry (copying there what the repository lacks) instead of
    /// storing it locally.
    #[arg(long)]
    pub push: bool,
    /// Print the index that would be made, and do nothing else.
    #[arg(long)]
    pub dry_run: bool,
    /// Registries reached over plain HTTP (besides localhost and 127.0.0.1).
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
}

/// `rbuild login` flags.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry (`host[:port]`; default Docker Hub).
    pub server: Option<String>,
    /// User name.
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password or token (visible to other users in the process list: prefer --password-stdin).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password or token from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Registries reached over plain HTTP (besides localhost and 127.0.0.1).
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
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

    /// Target platforms, `os/arch[/variant]` (e.g. `linux/amd64,linux/arm64`; comma-separated
    /// or repeated; default: this machine's). Several make a multi-platform image (an image
    /// index with one manifest per platform); RUN steps for a platform this machine cannot run
    /// go through QEMU user emulation.
    #[arg(long = "platform", env = "DOCKER_DEFAULT_PLATFORM", value_delimiter = ',')]
    pub platforms: Vec<String>,

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

    /// Set an image label `KEY=VALUE` (may be repeated; wins over the Dockerfile's LABEL).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,

    /// Add an annotation to the image manifest: `KEY=VALUE` or `manifest:KEY=VALUE` (buildx
    /// syntax; may be repeated).
    #[arg(long = "annotation", value_name = "[manifest:]KEY=VALUE")]
    pub annotations: Vec<String>,

    /// SLSA provenance attestation: `true`/`false`, or `mode=min|max[,version=v0.2|v1]
    /// [,builder-id=URL]` (buildx syntax). Pushed images get `mode=min` unless `false`.
    #[arg(long, value_name = "SPEC", num_args = 0..=1, default_missing_value = "true")]
    pub provenance: Option<String>,

    /// SPDX SBOM attestation of the image's packages and files (`true`/`false`); stages that
    /// set `ARG BUILDKIT_SBOM_SCAN_STAGE=true` get one too.
    #[arg(long, value_name = "SPEC", num_args = 0..=1, default_missing_value = "true")]
    pub sbom: Option<String>,

    /// Attestation, buildx syntax: `type=provenance[,mode=max,...]` or `type=sbom`; repeatable.
    #[arg(long = "attest", value_name = "SPEC")]
    pub attest: Vec<String>,

    /// Write the build result's metadata as JSON to this file (`containerimage.digest`,
    /// `containerimage.config.digest`, `containerimage.descriptor`, `image.name`), as buildx does.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,

    /// Load the image into the local docker daemon (`docker load`) when a docker CLI is present.
    #[arg(long)]
    pub load: bool,

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

    /// Run the build checks instead of building: print what they find and exit with status 1
    /// when they find something (same as `--call=check`).
    #[arg(long)]
    pub check: bool,

    /// Evaluate the Dockerfile instead of building it: `check` (the build checks), `targets`
    /// (the stages and their descriptions) or `outline` (the build args, secrets and SSH sockets
    /// the target uses); add `,format=json` for JSON (docker buildx syntax).
    #[arg(long, value_name = "METHOD")]
    pub call: Option<String>,

    /// Extra build context `NAME=VALUE` (docker buildx syntax; repeatable): VALUE is a
    /// directory, `docker-image://REF`, `target:STAGE`, a git URL or an HTTP(S) URL to a tar
    /// archive. It replaces the stage or image NAME in `FROM`, `COPY --from` and
    /// `RUN --mount=from=`.
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,

    /// Add `host:ip` (or `host:host-gateway`: the host, 127.0.0.1 or $RBUILD_HOST_GATEWAY_IP) to
    /// the /etc/hosts of every RUN step (never to the image).
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,

    /// Resource limit of every RUN step, `NAME=SOFT[:HARD]` (e.g. `nofile=1024:2048`).
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<String>,

    /// Size of /dev/shm in RUN steps (e.g. `128m`; default 64m).
    #[arg(long)]
    pub shm_size: Option<String>,

    /// Network of RUN steps without `--network`: `default` (the host's), `none` or `host`.
    #[arg(long, default_value = "default")]
    pub network: String,

    /// Resolve every base image against its registry (rbuild always does: a moved tag is a new
    /// digest and so a cache miss); accepted for docker compatibility.
    #[arg(long)]
    pub pull: bool,

    /// Build context: a directory, `-` (a tar archive or a Dockerfile on stdin), a tar archive
    /// file, a git URL (`https://host/repo.git#ref:subdir`, `git@host:repo`, `file:///repo`) or
    /// an HTTP(S) URL to a tar archive or a Dockerfile.
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
    // Every subcommand clap knows (so a new one cannot be mistaken for a build context),
    // plus the flags that are not a build.
    let command = <Cli as clap::CommandFactory>::command();
    let mut known: Vec<&str> = command.get_subcommands().map(clap::Command::get_name).collect();
    known.extend(["help", "--help", "-h", "--version", "-V"]);
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
        assert!(!needs_implicit_build(&argv("rbuild login reg.example -u me")));
        assert!(!needs_implicit_build(&argv("rbuild save app:1 -o app.tar")));
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
    fn build_flags_for_inputs_parse() {
        let cli = Cli::parse_from(argv(
            "rbuild build --build-context a=docker-image://x --add-host db:10.0.0.1 --ulimit nofile=1:2 \
             --shm-size 128m --network none --pull -f - -",
        ));
        let Command::Build(args) = cli.command else { panic!("not a build") };
        assert_eq!(args.build_contexts, ["a=docker-image://x"]);
        assert_eq!((args.add_hosts.len(), args.ulimits.len()), (1, 1));
        assert_eq!((args.shm_size.as_deref(), args.network.as_str(), args.pull), (Some("128m"), "none", true));
        assert_eq!(
            (args.file.as_deref(), args.context.as_os_str()),
            (Some(std::path::Path::new("-")), std::ffi::OsStr::new("-"))
        );
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

    #[test]
    fn check_and_call_parse() {
        let cli = Cli::parse_from(argv("rbuild build --check ."));
        let Command::Build(args) = cli.command else { panic!("not a build") };
        assert!(args.check && args.call.is_none());
        let cli = Cli::parse_from(argv("rbuild build --call=outline,format=json ."));
        let Command::Build(args) = cli.command else { panic!("not a build") };
        assert_eq!(args.call.as_deref(), Some("outline,format=json"));
    }

    #[test]
    fn manifest_create_parses() {
        assert!(!needs_implicit_build(&argv("rbuild manifest create a b")));
        let cli = Cli::parse_from(argv("rbuild manifest create --push r/app:1 r/app:amd64 r/app:arm64"));
        let Command::Manifest(ManifestCommand::Create(args)) = cli.command else { panic!("not manifest create") };
        assert_eq!(args.name, "r/app:1");
        assert_eq!(args.sources, ["r/app:amd64", "r/app:arm64"]);
        assert!(args.push && !args.dry_run);
        assert!(Cli::try_parse_from(argv("rbuild manifest create only-a-name")).is_err());
    }

    #[test]
    fn platform_flag_lists() {
        let cli = Cli::parse_from(argv("rbuild build --platform linux/amd64,linux/arm64 --platform linux/arm/v7 ."));
        let Command::Build(args) = cli.command else { panic!("not a build") };
        assert_eq!(args.platforms, ["linux/amd64", "linux/arm64", "linux/arm/v7"]);
    }
}
