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
    #[error(
        "when using COPY with more than one source file, the destination must be a directory and end with a /: {dest}"
    )]
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
    /// Copying the input filesystem of a RUN step (the copy fallback) failed.
    #[error("cannot copy the root filesystem for the step (overlayfs is not used)")]
    CopyRootfs(#[source] rbuild_exporter::rootfs::RootfsError),
    /// The store's filesystem refused an overlay whiteout (a character device 0:0), as
    /// overlayfs does: a deletion in a RUN step cannot be recorded there.
    #[error("cannot record the deletion of {} in the store: its filesystem refuses overlay whiteouts", path.display())]
    WhiteoutRefused {
        /// The deleted path, as the image names it.
        path: PathBuf,
    },
    /// The sandbox could not run the command.
    #[error("could not start the process")]
    Sandbox(#[from] rbuild_executor::ExecError),
    /// The step is for an architecture this machine cannot run, and QEMU emulation is not
    /// set up.
    #[error(transparent)]
    Emulation(#[from] rbuild_executor::EmulationError),
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
    /// A snapshot could not be packed into a layer blob (its cause says why: a full disk, an
    /// unreadable file).
    #[error("packing the layer of snapshot {id}")]
    Pack {
        /// The snapshot.
        id: String,
        /// Why.
        #[source]
        source: rbuild_exporter::layer::PackError,
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
    /// An `--exclude` pattern does not compile.
    #[error("invalid --exclude pattern {:?}", .0.pattern)]
    Exclude(#[source] crate::context::PatternError),
    /// A file would replace a directory.
    #[error("{path} is a directory")]
    IsADirectory {
        /// The path as written.
        path: PathBuf,
    },
    /// `ADD` of a local archive failed to extract.
    #[error("extracting archive {archive}")]
    Archive {
        /// The source path of the archive.
        archive: String,
        /// Why.
        #[source]
        source: crate::archive::ArchiveError,
    },
    /// An `ADD <url>` download failed.
    #[error("downloading {url}")]
    Download {
        /// The URL (credentials removed).
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// An `ADD <url>` server answered with an error status.
    #[error("invalid response status {status} downloading {url}")]
    HttpStatus {
        /// The URL (credentials removed).
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The downloaded content does not match `ADD --checksum` (BuildKit's wording).
    #[error("digest mismatch {actual}: {expected}")]
    DigestMismatch {
        /// `sha256:` of what was downloaded.
        actual: String,
        /// `sha256:` that `--checksum` asked for.
        expected: String,
    },
    /// `ADD --checksum` is not a `sha256:<64 hex digits>` digest.
    #[error("invalid checksum {checksum:?}: expected sha256:<64 hex digits>")]
    BadChecksum {
        /// As written.
        checksum: String,
    },
    /// The file name for a download is not a single path component.
    #[error("invalid file name {name:?} for a download")]
    BadFileName {
        /// As given.
        name: String,
    },
    /// A `git` command failed.
    #[error("git {step} of {remote} failed: {stderr}")]
    Git {
        /// The repository (credentials removed).
        remote: String,
        /// `ls-remote`, `fetch`, `checkout`...
        step: &'static str,
        /// The end of git's error output.
        stderr: String,
    },
    /// The branch or tag is not in the repository.
    #[error("git reference {reference:?} not found in {remote}")]
    GitRefNotFound {
        /// The repository (credentials removed).
        remote: String,
        /// The branch or tag.
        reference: String,
    },
    /// A git remote, reference or subdirectory that is not usable.
    #[error("invalid git {what} {value:?}")]
    BadGitSource {
        /// `remote`, `reference` or `subdirectory`.
        what: &'static str,
        /// As given (credentials removed).
        value: String,
    },
    /// `RUN --mount=type=secret` names a secret that was not provided.
    #[error("secret {id} not found")]
    SecretNotFound {
        /// The secret id.
        id: String,
    },
    /// A secret used as an environment variable is not valid UTF-8 or has a NUL byte (the
    /// value itself is never shown).
    #[error("secret {id} cannot be an environment variable: it is not UTF-8 text without NUL bytes")]
    SecretNotEnv {
        /// The secret id.
        id: String,
    },
    /// `RUN --mount=type=ssh` names an agent that was not provided.
    #[error("no SSH agent socket or keys found for id {id}")]
    SshNotFound {
        /// The agent id.
        id: String,
    },
    /// A step asks for an entitlement (`RUN --security=insecure`) the build was not given.
    #[error("{entitlement} is not allowed: pass --allow {entitlement}")]
    NotEntitled {
        /// `security.insecure`.
        entitlement: &'static str,
    },
    /// A `--ulimit` names a resource rbuild does not know.
    #[error("invalid ulimit {name:?}: use core, cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending or stack")]
    BadUlimit {
        /// The name as given.
        name: String,
    },
    /// A build context (the main one or a named one) is unusable.
    #[error("build context {context}: {reason}")]
    BadContext {
        /// The context as given (credentials removed).
        context: String,
        /// What is wrong.
        reason: String,
    },
    /// A shared build cache (`--cache-from`) could not be read.
    #[error("reading the build cache at {location}")]
    RemoteCache {
        /// The registry reference or directory.
        location: String,
        /// Why.
        #[source]
        source: Box<crate::remote_cache::RemoteCacheError>,
    },
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
            WorkerError::Emulation(e) => e.hint(),
            WorkerError::WhiteoutRefused { .. } => Some(
                "the store is on overlayfs (rbuild in a container?): put it on another filesystem, \
                 e.g. a volume mounted at --root"
                    .into(),
            ),
            WorkerError::SecretNotFound { id } => {
                Some(format!("pass it with --secret id={id},src=FILE or --secret id={id},env=VARIABLE"))
            }
            WorkerError::NotEntitled { entitlement } => Some(format!(
                "only allow {entitlement} for Dockerfiles you trust: the step then runs with all \
                 capabilities, no seccomp filter and a writable /sys"
            )),
            WorkerError::SshNotFound { id } => Some(format!("pass an agent socket with --ssh {id}=$SSH_AUTH_SOCK")),
            WorkerError::Archive { source: crate::archive::ArchiveError::UnsupportedCompression { .. }, .. } => {
                Some("use COPY to copy the file without extracting it".into())
            }
            _ => None,
        }
    }
}
