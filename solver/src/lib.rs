//! rbuild's solver: owns the build IR ([`ir`]), derives cache keys ([`CacheKey`]) and runs the
//! vertices a target needs, independent ones in parallel, through a [`Worker`].
//!
//! The solver knows nothing about Dockerfiles (the frontend lowers those to [`ir::Graph`]) nor
//! about sandboxes and stores (a [`Worker`] implements ops).

pub mod ir;
mod key;
pub mod print;
mod progress;
mod scheduler;
mod worker;

pub use key::CacheKey;
pub use progress::{LogStream, Progress, ProgressEvent};
pub use scheduler::{KeyIngredients, Prepared, SolveError, SolveOptions, Solver};
pub use worker::{ExecContext, Worker};
