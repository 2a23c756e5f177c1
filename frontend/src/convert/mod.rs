//! Typed instructions → build graph ([`solver::ir`](rbuild_solver::ir)) plus the image config
//! and history, following BuildKit's `dockerfile2llb`.
//!
//! Only stages reachable from the target are resolved and converted. Each stage starts from its
//! base's config; build-time environment, working directory and user are tracked per stage;
//! metadata-only instructions change the config and history but add no op.

mod add;
mod config;
mod copy;
mod dispatch;
mod imageconfig;
mod mount;
mod onbuild;
mod paths;
mod plan;
mod run;
mod source;
mod state;
mod values;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use oci_spec::image::ImageConfiguration;
use rbuild_solver::ir::{Graph, Input, OpId, Platform, SourceSpan};

use crate::error::{Error, ErrorKind};
use crate::instructions::parse_dockerfile;
use crate::parser::parse;

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
    /// Non-fatal findings.
    pub warnings: Vec<Warning>,
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

/// A non-fatal finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// Where.
    pub span: Option<SourceSpan>,
    /// What.
    pub message: String,
}

/// Parses a `--platform` value (`linux/arm64`, `linux/arm/v7`, `arm64`, `linux`) as containerd
/// does, normalizing architecture names (`aarch64` → `arm64`, `arm64/v8` → `arm64`).
pub fn parse_platform(value: &str) -> Result<Platform, Error> {
    values::parse_platform(value.trim(), &Platform::host())
        .map_err(|reason| ErrorKind::InvalidPlatform { value: value.to_owned(), reason }.into())
}

/// Converts a Dockerfile into a build graph for `req.platform`.
pub fn build(req: &BuildRequest<'_>, resolver: &dyn ImageResolver) -> Result<BuildDefinition, Error> {
    if req.dockerfile.is_empty() {
        return Err(ErrorKind::Empty.into());
    }
    let file = req.filename.as_str();
    let parsed = parse(req.dockerfile).map_err(|e| Error::at(file, e.span, ErrorKind::Syntax(e.message)))?;
    let dockerfile = parse_dockerfile(&parsed).map_err(|errs| {
        let diags = errs.into_iter().map(|(span, e)| Error::diagnostic(file, span, e.into())).collect();
        Error::collect(diags).unwrap_or_else(|| ErrorKind::NoStages.into())
    })?;
    if dockerfile.stages.is_empty() {
        return Err(ErrorKind::NoStages.into());
    }
    let warnings: Vec<Warning> = parsed
        .warnings
        .iter()
        .map(|w| Warning {
            span: Some(crate::error::source_span(file, crate::parser::Span::new(w.line, w.line))),
            message: w.message.clone(),
        })
        .collect();
    let mut def = dispatch::Converter::new(req, &dockerfile, resolver)?.run()?;
    def.warnings.splice(0..0, warnings);
    Ok(def)
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
