//! rbuild's Dockerfile frontend: Dockerfile text → AST with spans → typed instructions →
//! build graph ([`rbuild_solver::ir`]), image config and history.
//!
//! It follows BuildKit's behaviour (parser quirks included) and is pure: no filesystem,
//! network or async of its own. Base images are looked up through an injected
//! [`ImageResolver`].
//!
//! # Layers
//!
//! - [`parser`]: bytes → [`parser::Node`]s with exact line spans; [`dump`] prints BuildKit's
//!   s-expression form (`rbuild debug parse`).
//! - [`instructions`]: nodes → typed [`instructions::Instruction`]s grouped into stages; every
//!   invalid instruction of the file is reported at once.
//! - [`build`]: stages → [`BuildDefinition`] (graph, target, config, Docker-only config
//!   fields, history, warnings) for one platform, converting only the stages the target needs
//!   (and the stages and images their `COPY --from`, `RUN --mount=from=` and base-image
//!   `ONBUILD` triggers read).
//! - [`lint`]: BuildKit's build checks, run during [`build`] or alone with [`check`]
//!   (`docker build --check`).
//! - [`shell`]: BuildKit's word lexer and variable expansion.
//!
//! # Example
//!
//! ```
//! use std::collections::BTreeMap;
//! use rbuild_frontend::{build, BuildRequest, ImageResolver, ResolveError, ResolvedImage};
//! use rbuild_solver::ir::Platform;
//!
//! struct NoImages;
//! impl ImageResolver for NoImages {
//!     fn resolve(&self, _: &str, _: &Platform) -> Result<ResolvedImage, ResolveError> {
//!         Err(ResolveError::NotFound)
//!     }
//! }
//!
//! let req = BuildRequest {
//!     dockerfile: b"FROM scratch\nCOPY app /app\nCMD [\"/app\"]\n",
//!     filename: "Dockerfile".into(),
//!     build_args: BTreeMap::new(),
//!     target: None,
//!     platform: Platform::host(),
//!     multi_platform: false,
//!     context_excludes: vec![],
//!     no_cache: false,
//!     named_contexts: BTreeMap::new(),
//!     run_defaults: Default::default(),
//! };
//! let def = build(&req, &NoImages)?;
//! assert_eq!(def.history[0].created_by, "COPY app /app # buildkit");
//! assert_eq!(def.config.cmd().as_deref(), Some(&["/app".to_string()][..]));
//! # Ok::<(), rbuild_frontend::Error>(())
//! ```
//!
//! # Errors
//!
//! Every error tied to Dockerfile lines carries a span ([`Error::span`]) and, where there is
//! something to do, a hint ([`Error::hint`]); several problems come as one [`Error`] with
//! several [`Diagnostic`]s.

#![deny(missing_docs)]

mod convert;
mod error;
pub mod instructions;
pub mod lint;
pub mod outline;
pub mod parser;
pub mod shell;
mod suggest;

pub use convert::{
    build, check, parse_git_url, parse_platform, BuildDefinition, BuildRequest, CheckReport, GitUrl, HistoryStep,
    ImageResolver, NamedContext, ResolveError, ResolvedImage, RunDefaults, ScanStage, Warning,
};
pub use error::{Diagnostic, Error, ErrorKind};
pub use outline::{outline, targets, Outline, OutlineArg, OutlineMount, Target};
pub use parser::{dump, parse, Node, Span};
