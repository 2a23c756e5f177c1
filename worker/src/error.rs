//! Worker errors.

use std::path::PathBuf;

/// What can go wrong executing an op.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] rbuild_cache::Error),
    /// A file operation failed.
    #[error("{path}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A COPY source does not exist (or is excluded).
    #[error("failed to compute cache key: \"{path}\" not found in the source")]
    SourceNotFound {
        /// The source path as written.
        path: String,
        /// Why it may be missing.
        hint: Option<String>,
    },
    /// Several COPY sources but the destination is not a directory.
    #[error("when using COPY with more than one source file, the destination must be a directory and end with a /: {dest}")]
    DestNotDirectory {
        /// The destination as written.
        dest: String,
    },
    /// A path component that must be a directory is a file.
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// `--chown` names a user missing from /etc/passwd.
    #[error("unable to find user {name}: no matching entries in passwd file")]
    UnknownUser {
        /// The name.
        name: String,
    },
    /// `--chown` names a group missing from /etc/group.
    #[error("unable to find group {name}: no matching entries in group file")]
    UnknownGroup {
        /// The name.
        name: String,
    },
    /// The sandbox could not run the command.
    #[error("could not start the process")]
    Sandbox(#[from] rbuild_executor::ExecError),
    /// The command ran and failed.
    #[error("process \"{command}\" did not complete successfully: {status}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// `exit code: 3` or `killed by signal 9`.
        status: String,
        /// The last lines it printed.
        tail: Vec<String>,
    },
    /// Pulling a base image failed.
    #[error("pulling {reference}")]
    Pull {
        /// The image.
        reference: String,
        /// Why.
        #[source]
        source: rbuild_registry::Error,
    },
    /// An image reference does not parse.
    #[error("invalid image reference {reference:?}")]
    BadReference {
        /// As written.
        reference: String,
        /// Why.
        #[source]
        source: rbuild_registry::ReferenceError,
    },
    /// A layer could not be unpacked.
    #[error("unpacking layer {digest}")]
    Unpack {
        /// The layer blob.
        digest: String,
        /// Why.
        #[source]
        source: rbuild_exporter::layer::UnpackError,
    },
    /// A pulled layer's content does not match the image config.
    #[error("layer {digest} has diff id {found}, but the image config says {expected}")]
    DiffIdMismatch {
        /// The layer blob.
        digest: String,
        /// From the config.
        expected: String,
        /// Computed.
        found: String,
    },
    /// The `.dockerignore` is invalid.
    #[error(transparent)]
    Ignore(#[from] crate::context::PatternError),
    /// An invariant of the worker was broken (a bug in rbuild, not in the input).
    #[error("internal error: {0}")]
    Internal(String),
}

impl WorkerError {
    /// A suggestion for the user, when there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            WorkerError::SourceNotFound { hint: Some(h), .. } => Some(h.clone()),
            WorkerError::SourceNotFound { hint: None, .. } => {
                Some("check the path is relative to the build context (or the --from stage) and exists".into())
            }
            WorkerError::Sandbox(e) => e.hint().map(str::to_owned),
            _ => None,
        }
    }
}
