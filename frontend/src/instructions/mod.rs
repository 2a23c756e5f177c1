//! Typed instructions: the parse tree checked and shaped per instruction (BuildKit's
//! `instructions` package), grouped into build stages.
//!
//! Nothing here is variable-expanded yet: expansion needs the build state and happens during
//! conversion.

mod duration;
mod flags;
mod mount;
mod parse;

pub(crate) use duration::format_go_duration;
pub(crate) use mount::mount_from;
pub use mount::{parse_mount, MountSpec, MountType, Sharing};
pub use parse::{parse_command, parse_dockerfile, InstructionError};

use crate::parser::{KeyValue, Span};

/// A parsed Dockerfile: the `ARG`s before the first `FROM`, and the stages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dockerfile {
    /// `ARG` instructions before the first `FROM` (usable in `FROM` lines).
    pub meta_args: Vec<Command>,
    /// Build stages, in order.
    pub stages: Vec<Stage>,
    /// Escape character in effect.
    pub escape: char,
}

/// One build stage: a `FROM` and the instructions up to the next `FROM`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// Base as written (`busybox:${V}`, `scratch`, `build`), unexpanded.
    pub base: String,
    /// `AS name`, lowercased.
    pub name: Option<String>,
    /// `--platform` value, unexpanded.
    pub platform: Option<String>,
    /// The `FROM` line's span.
    pub span: Span,
    /// The `FROM` line as written, trimmed.
    pub original: String,
    /// The stage's instructions.
    pub commands: Vec<Command>,
    /// Comment lines directly above the `FROM` (its description, `# check=` options).
    pub comments: Vec<String>,
}

/// One instruction with its location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// What it does.
    pub instruction: Instruction,
    /// Where it is.
    pub span: Span,
    /// The instruction as written (continuations joined).
    pub original: String,
    /// Comment lines directly above the instruction (an `ARG`'s description, `# check=`
    /// options).
    pub comments: Vec<String>,
}

impl Command {
    /// The keyword as written (`copy`, `COPY`).
    pub fn keyword_as_written(&self) -> &str {
        self.original.split_whitespace().next().unwrap_or_default()
    }
}

/// Every instruction but `FROM` (which starts a [`Stage`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Instruction {
    /// `ADD`.
    Add(AddInstruction),
    /// `ARG`.
    Arg(Vec<ArgDecl>),
    /// `CMD`.
    Cmd(CommandLine),
    /// `COPY`.
    Copy(CopyInstruction),
    /// `ENTRYPOINT`.
    Entrypoint(CommandLine),
    /// `ENV` pairs.
    Env(Vec<KeyValue>),
    /// `EXPOSE` port specs, sorted as written (BuildKit sorts before expansion).
    Expose(Vec<String>),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `LABEL` pairs.
    Label(Vec<KeyValue>),
    /// `MAINTAINER`.
    Maintainer(String),
    /// `ONBUILD`: the trigger text.
    Onbuild(String),
    /// `RUN`.
    Run(RunInstruction),
    /// `SHELL` (always JSON form).
    Shell(Vec<String>),
    /// `STOPSIGNAL`.
    StopSignal(String),
    /// `USER`.
    User(String),
    /// `VOLUME` paths.
    Volume(Vec<String>),
    /// `WORKDIR`.
    Workdir(String),
}

impl Instruction {
    /// The keyword, uppercase (`COPY`).
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::Add(_) => "ADD",
            Instruction::Arg(_) => "ARG",
            Instruction::Cmd(_) => "CMD",
            Instruction::Copy(_) => "COPY",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Env(_) => "ENV",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Label(_) => "LABEL",
            Instruction::Maintainer(_) => "MAINTAINER",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Run(_) => "RUN",
            Instruction::Shell(_) => "SHELL",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::User(_) => "USER",
            Instruction::Volume(_) => "VOLUME",
            Instruction::Workdir(_) => "WORKDIR",
        }
    }
}

/// One `ARG` declaration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgDecl {
    /// Name.
    pub key: String,
    /// Default value as written, if any.
    pub value: Option<String>,
}

/// An inline file from a heredoc (`RUN <<EOF`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlineFile {
    /// Delimiter.
    pub name: String,
    /// Body.
    pub data: String,
    /// `<<-`: strip leading tabs.
    pub chomp: bool,
}

/// The command of `RUN`, `CMD` or `ENTRYPOINT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLine {
    /// Exec form: the argv; shell form: one element, the command text.
    pub args: Vec<String>,
    /// Shell form: the stage's shell is put in front.
    pub prepend_shell: bool,
    /// Heredoc bodies (shell-form `RUN` only).
    pub files: Vec<InlineFile>,
}

/// `RUN` and its flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInstruction {
    /// The command.
    pub command: CommandLine,
    /// `--mount` values as written (`from=` already checked; the rest is expanded and parsed
    /// with [`parse_mount`] when the step is converted).
    pub mounts: Vec<String>,
    /// `--network`: `default`, `none` or `host` (validated).
    pub network: Option<String>,
    /// `--security`: `sandbox` or `insecure` (validated).
    pub security: Option<String>,
    /// `--device` values.
    pub devices: Vec<String>,
}

/// A heredoc used as a `COPY`/`ADD` source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceContent {
    /// File name (the delimiter).
    pub path: String,
    /// Body (chomped for `<<-`).
    pub data: String,
    /// Whether variables in the body are expanded.
    pub expand: bool,
}

/// Sources and destination of `COPY`/`ADD`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcesAndDest {
    /// Source paths (or URLs for `ADD`), unexpanded.
    pub sources: Vec<String>,
    /// Heredoc sources.
    pub contents: Vec<SourceContent>,
    /// Destination, unexpanded.
    pub dest: String,
}

/// `COPY` and its flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyInstruction {
    /// What to copy where.
    pub paths: SourcesAndDest,
    /// `--from` (stage name, index or image), never expanded.
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
}

/// `ADD` and its flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddInstruction {
    /// What to add where.
    pub paths: SourcesAndDest,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--keep-git-dir`.
    pub keep_git_dir: Option<bool>,
    /// `--checksum`.
    pub checksum: Option<String>,
    /// `--unpack`.
    pub unpack: Option<bool>,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
}

/// `HEALTHCHECK`, durations in nanoseconds (0 when not given), as Docker stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", argv...]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    /// `--interval`.
    pub interval: i64,
    /// `--timeout`.
    pub timeout: i64,
    /// `--start-period`.
    pub start_period: i64,
    /// `--start-interval`.
    pub start_interval: i64,
    /// `--retries`.
    pub retries: u32,
}
