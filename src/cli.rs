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
    Build(BuildArgs),
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
    /// Print an image's manifest and config as JSON.
    Inspect {
        /// Image name.
        name: String,
    },
    /// Developer tools.
    #[command(subcommand)]
    Debug(DebugCommand),
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

    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,

    /// Progress output.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,

    /// Only print the image id.
    #[arg(short, long)]
    pub quiet: bool,

    /// Write the image id to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,

    /// Most steps running at once (default: number of CPUs).
    #[arg(long)]
    pub max_parallelism: Option<usize>,

    /// Registries reached over plain HTTP (besides localhost and 127.0.0.1).
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,

    /// Build context directory.
    pub context: PathBuf,
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
    let known = ["build", "images", "tag", "rmi", "inspect", "debug", "help", "--help", "-h", "--version", "-V"];
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
}
