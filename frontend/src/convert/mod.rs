//! Typed instructions → build graph ([`solver::ir`](rbuild_solver::ir)) plus the image config
//! and history, following BuildKit's `dockerfile2llb`.
//!
//! Only stages reachable from the target are resolved and converted. Each stage starts from its
//! base's config; build-time environment, working directory and user are tracked per stage;
//! metadata-only instructions change the config and history but add no op.

mod add;
mod checks;
mod config;
mod copy;
mod dispatch;
mod imageconfig;
mod mount;
mod onbuild;
mod outline;
mod paths;
mod plan;
mod run;
mod source;
mod state;
pub(crate) mod values;

#[cfg(test)]
mod tests;

pub use source::{parse_git_url, GitUrl};

use std::cell::RefCell;
use std::collections::BTreeMap;

use oci_spec::image::ImageConfiguration;
use rbuild_solver::ir::{Graph, HostEntry, Input, NetworkMode, OpId, Platform, Ulimit};

use crate::error::{Error, ErrorKind};
use crate::instructions::parse_dockerfile;
pub use crate::lint::Warning;
use crate::lint::{CheckConfig, Linter};
use crate::parser::{parse, Parsed};
pub(crate) use plan::global_args;
pub(crate) use state::EnvList;

/// The build arg that sets the check options, replacing the `# check=` directive.
const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

/// What to build.
#[derive(Clone, Debug)]
pub struct BuildRequest<'a> {
    /// The Dockerfile's bytes.
    pub dockerfile: &'a [u8],
    /// Name shown in errors and spans, e.g. `Dockerfile`.
    pub filename: String,
    /// `--build-arg` values; they override `ARG` defaults of declared args only.
    pub build_args: BTreeMap<String, String>,
    /// `--target` stage; `None` builds the last stage.
    pub target: Option<String>,
    /// Platform to build for (`TARGETPLATFORM`).
    pub platform: Platform,
    /// This is one platform of a multi-platform build: step names start with the platform
    /// they run on (`[linux/arm64 build 2/3] RUN make`), as BuildKit names them.
    pub multi_platform: bool,
    /// `.dockerignore` patterns, put into the build context source's `exclude`.
    pub context_excludes: Vec<String>,
    /// `--no-cache`: every exec and file op bypasses the cache.
    pub no_cache: bool,
    /// `--build-context NAME=...`, by name as given.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// Build-wide settings of every `RUN` (`--network`, `--add-host`, `--ulimit`, `--shm-size`).
    pub run_defaults: RunDefaults,
}

/// What a `--build-context NAME=VALUE` provides. As in BuildKit, it replaces a stage named
/// `NAME` altogether (its instructions are not run), and otherwise the image `NAME` wherever
/// `FROM`, `COPY --from` or `RUN --mount=from=` would read it. Names match as familiar image
/// names without `:latest` (`docker.io/library/alpine:latest` is `alpine`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NamedContext {
    /// A directory of the client, known to the worker as the local context `name`, with its
    /// own `.dockerignore` patterns. `FROM` gets a snapshot of it, with an empty config.
    Local {
        /// The worker's context name.
        name: String,
        /// `.dockerignore` patterns.
        exclude: Vec<String>,
    },
    /// An image (`docker-image://REF`): resolved like a `FROM` image, config and `ONBUILD`
    /// triggers included.
    Image {
        /// The reference, resolved with the [`ImageResolver`].
        reference: String,
    },
    /// A git repository checkout (`.git` left out); `FROM` gets an empty config.
    Git {
        /// The remote.
        remote: String,
        /// Branch, tag or commit.
        reference: Option<String>,
        /// Subdirectory used as the root.
        subdir: Option<String>,
    },
    /// A tar archive (plain, gzip, bzip2 or xz) at an HTTP(S) URL, extracted; `FROM` gets an
    /// empty config.
    Archive {
        /// The URL.
        url: String,
    },
    /// Another stage of this Dockerfile (`target:STAGE`), defined before its users.
    Stage {
        /// The stage name.
        name: String,
    },
}

/// Settings applied to every `RUN` of the build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunDefaults {
    /// Network of a `RUN` without `--network` (or with `--network=default`).
    pub network: NetworkMode,
    /// Extra `/etc/hosts` entries (`--add-host`).
    pub extra_hosts: Vec<HostEntry>,
    /// Resource limits (`--ulimit`).
    pub ulimits: Vec<Ulimit>,
    /// `/dev/shm` size in bytes (`--shm-size`).
    pub shm_size: Option<u64>,
}

/// Looks up an image's manifest digest and config (blocking). The CLI implements it with a
/// registry client; tests with a map.
pub trait ImageResolver {
    /// Resolves `reference` as written in the Dockerfile (`busybox`, `alpine:3.19`,
    /// `localhost:5000/x@sha256:...`) for `platform`.
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, ResolveError>;
}

/// A resolved base image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedImage {
    /// Normalized reference, e.g. `docker.io/library/busybox:latest`.
    pub reference: String,
    /// Manifest digest, `sha256:...`.
    pub digest: String,
    /// The image's config (runtime config, rootfs, history).
    pub config: ImageConfiguration,
    /// The config blob as fetched. `config` drops Docker-only runtime fields (`OnBuild`,
    /// `Shell`, `Healthcheck`, `ArgsEscaped`); they are read from here when present.
    pub raw_config: Option<Vec<u8>>,
}

/// Why an image could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No such repository or tag.
    #[error("not found")]
    NotFound,
    /// The image exists but not for this platform.
    #[error("no image for platform {platform}")]
    NoMatchingPlatform {
        /// The requested platform.
        platform: Platform,
    },
    /// The registry refused access.
    #[error("pull access denied (the repository may not exist or may require authorization)")]
    Unauthorized,
    /// Transport or registry failure.
    #[error("{0}")]
    Registry(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The result of converting a Dockerfile.
#[derive(Clone, Debug)]
pub struct BuildDefinition {
    /// Every op the target needs.
    pub graph: Graph,
    /// The target's filesystem; `None` is an empty (scratch) filesystem.
    pub target: Option<Input>,
    /// The image at the root of the target stage's chain; `None` for scratch.
    pub base: Option<ResolvedImage>,
    /// Final runtime config (inherited from the base, changed by the Dockerfile).
    pub config: oci_spec::image::Config,
    /// `MAINTAINER` (or the base image's author).
    pub author: Option<String>,
    /// `SHELL`, which Docker-format configs keep (OCI configs have no field for it). Also in
    /// `extra_config`.
    pub shell: Option<Vec<String>>,
    /// Runtime-config keys OCI's `Config` has no field for, with Docker's names and JSON shapes,
    /// for the exporter to merge into the config's `config` object: `Healthcheck`
    /// (`{"Test": [...], "Interval": ns, "Timeout": ns, "StartPeriod": ns, "StartInterval": ns,
    /// "Retries": n}`, zero fields left out), `OnBuild` (trigger lines), `Shell` (argv) and
    /// `ArgsEscaped` (`true` once a `CMD` was set, as BuildKit writes it). Inherited values of the
    /// base image come along (read from [`ResolvedImage::raw_config`]).
    pub extra_config: serde_json::Map<String, serde_json::Value>,
    /// History entries added by this Dockerfile (for the target and the stages it is built
    /// on), in order. The base image's own history is not included: prepend
    /// `base.config.history()`.
    pub history: Vec<HistoryStep>,
    /// Non-fatal findings: the build checks' (in line order, each naming its rule), then
    /// other warnings (build args no `ARG` consumed). [`Warning::to_json`] gives each in
    /// BuildKit's lint-result shape, e.g. for a metadata file.
    pub warnings: Vec<Warning>,
    /// Stages besides the target to describe in SBOMs of their own
    /// (`BUILDKIT_SBOM_SCAN_STAGE`), in Dockerfile order.
    pub sbom_stages: Vec<ScanStage>,
}

/// A stage whose filesystem an SBOM describes besides the image's (`--sbom` with
/// `BUILDKIT_SBOM_SCAN_STAGE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanStage {
    /// The stage's name (`AS name`), or `stage-N`.
    pub name: String,
    /// Its filesystem.
    pub fs: Input,
}

/// One image history entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryStep {
    /// BuildKit's text: `RUN /bin/sh -c make # buildkit`, `ENV A=b`, `WORKDIR /app`,
    /// `COPY x /y # buildkit`, `CMD ["sh"]`.
    pub created_by: String,
    /// `buildkit.dockerfile.v0`.
    pub comment: Option<String>,
    /// The op whose diff against its input is this step's layer; `None` for a metadata-only
    /// step (`empty_layer`).
    pub layer_op: Option<OpId>,
}

/// What [`check`] found: the build check findings, and the error that stopped the checks (a
/// Dockerfile that does not parse, a base image that cannot be resolved, or `error=true` with
/// findings), as `docker build --check` reports them.
#[derive(Debug)]
pub struct CheckReport {
    /// Findings, in line order.
    pub warnings: Vec<Warning>,
    /// Why the Dockerfile cannot be built.
    pub error: Option<Error>,
}

/// Parses a `--platform` value (`linux/arm64`, `linux/arm/v7`, `arm64`, `linux`) as containerd
/// does, normalizing architecture names (`aarch64` → `arm64`, `arm64/v8` → `arm64`).
pub fn parse_platform(value: &str) -> Result<Platform, Error> {
    values::parse_platform(value.trim(), &Platform::host())
        .map_err(|reason| ErrorKind::InvalidPlatform { value: value.to_owned(), reason }.into())
}

/// Converts a Dockerfile into a build graph for `req.platform`, running the build checks on
/// the way ([`BuildDefinition::warnings`]).
///
/// # Errors
///
/// Any problem of the Dockerfile, with the check findings made before it
/// ([`Error::warnings`]); with `# check=error=true`, findings are an error
/// ([`ErrorKind::ChecksFailed`]).
pub fn build(req: &BuildRequest<'_>, resolver: &dyn ImageResolver) -> Result<BuildDefinition, Error> {
    let (result, lint) = convert(req, resolver, dispatch::Scope::Build);
    let violation = lint.as_ref().and_then(Linter::violation);
    let warnings = lint.map(Linter::into_warnings).unwrap_or_default();
    match (result, violation) {
        (Err(e), _) => Err(e.with_warnings(warnings)),
        (Ok(_), Some(kind)) => Err(Error::new(kind).with_warnings(warnings)),
        (Ok(mut def), None) => {
            def.warnings.splice(0..0, warnings);
            Ok(def)
        }
    }
}

/// Runs the build checks without building (`docker build --check`): every stage is converted
/// (only those `req.target` needs when it is set) and base images are resolved, but nothing
/// runs. Features rbuild cannot build yet are not reported.
pub fn check(req: &BuildRequest<'_>, resolver: &dyn ImageResolver) -> CheckReport {
    let scope = dispatch::Scope::Check { all_stages: req.target.is_none() };
    let (result, lint) = convert(req, resolver, scope);
    let violation = lint.as_ref().and_then(Linter::violation);
    let warnings = lint.map(Linter::into_warnings).unwrap_or_default();
    let error = match (result, violation) {
        (Err(e), _) => Some(e),
        (Ok(_), v) => v.map(Error::new),
    };
    CheckReport { warnings, error }
}

/// What the target uses (see [`crate::outline()`]).
pub(crate) fn outline(req: &BuildRequest<'_>, resolver: &dyn ImageResolver) -> Result<crate::outline::Outline, Error> {
    let dockerfile = instructions(&req.filename, &parse_source(req)?)?;
    // Findings are not part of an outline; nothing is reported.
    let lint = RefCell::new(Linter::new(&req.filename, CheckConfig { skip_all: true, ..CheckConfig::default() }));
    dispatch::Converter::new(req, &dockerfile, resolver, &lint, dispatch::Scope::Outline)?.outline()
}

/// The parse tree of the Dockerfile.
fn parse_source(req: &BuildRequest<'_>) -> Result<Parsed, Error> {
    if req.dockerfile.is_empty() {
        return Err(ErrorKind::Empty.into());
    }
    parse(req.dockerfile).map_err(|e| Error::at(&req.filename, e.span, ErrorKind::Syntax(e.message)))
}

/// The typed instructions, with every invalid one reported; at least one stage.
pub(crate) fn instructions(file: &str, parsed: &Parsed) -> Result<crate::instructions::Dockerfile, Error> {
    let dockerfile = parse_dockerfile(parsed).map_err(|errs| {
        let diags = errs.into_iter().map(|(span, e)| Error::diagnostic(file, span, e.into())).collect();
        Error::collect(diags).unwrap_or_else(|| ErrorKind::NoStages.into())
    })?;
    if dockerfile.stages.is_empty() {
        return Err(ErrorKind::NoStages.into());
    }
    Ok(dockerfile)
}

/// The check options: `BUILDKIT_DOCKERFILE_CHECK` when given, else the `# check=` directive.
fn check_config(req: &BuildRequest<'_>, parsed: &Parsed) -> Result<CheckConfig, Error> {
    let (origin, value) = match req.build_args.get(CHECK_BUILD_ARG) {
        Some(v) => (format!("build-arg:{CHECK_BUILD_ARG}"), v.as_str()),
        None => {
            let directive = parsed.directives.iter().find(|d| d.name == "check");
            let value = directive.map_or("", |d| d.value.split(' ').next().unwrap_or_default());
            ("check options".to_owned(), value)
        }
    };
    CheckConfig::parse(value).map_err(|source| ErrorKind::CheckOptions { origin, source }.into())
}

/// Parses, checks and converts; the linter is `None` when the file did not get as far.
fn convert(
    req: &BuildRequest<'_>,
    resolver: &dyn ImageResolver,
    scope: dispatch::Scope,
) -> (Result<BuildDefinition, Error>, Option<Linter>) {
    let parsed = match parse_source(req) {
        Ok(p) => p,
        Err(e) => return (Err(e), None),
    };
    let config = match check_config(req, &parsed) {
        Ok(c) => c,
        Err(e) => return (Err(e), None),
    };
    let mut linter = Linter::new(&req.filename, config);
    crate::lint::nodes::check(&parsed, &mut linter);
    let lint = RefCell::new(linter);
    let result = instructions(&req.filename, &parsed)
        .and_then(|dockerfile| dispatch::Converter::new(req, &dockerfile, resolver, &lint, scope)?.run());
    (result, Some(lint.into_inner()))
}

impl From<crate::instructions::InstructionError> for ErrorKind {
    fn from(e: crate::instructions::InstructionError) -> ErrorKind {
        match e {
            crate::instructions::InstructionError::Unknown { instruction, suggestion } => {
                ErrorKind::UnknownInstruction { instruction, suggestion }
            }
            crate::instructions::InstructionError::Invalid(m) => ErrorKind::InvalidInstruction(m),
        }
    }
}
