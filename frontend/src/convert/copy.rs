//! `COPY`: a file op copying from the build context, another stage or an image
//! (BuildKit's `dispatchCopy`), and what `ADD` shares with it: owner and mode flags, heredoc
//! sources, `--link`.

use rbuild_solver::ir::{Chown, FileAction, FileOp, Input, Op, OpId, VertexMeta};

use super::dispatch::Converter;
use super::paths::{join, relative_to_workdir};
use super::plan::FromRef;
use super::source::{classify, AddSource};
use super::state::{Progress, StageState};
use super::values::{parse_chmod, parse_chown, Mode};
use crate::error::{Error, ErrorKind};
use crate::instructions::{Command, CopyInstruction, SourceContent};

/// Name BuildKit gives the op writing a heredoc to a file.
pub(crate) const INLINE_DOCUMENT: &str = "[internal] preparing inline document";

/// Flags `COPY` and `ADD` share, expanded and checked.
pub(super) struct CopyOptions {
    /// `--chown` as written (expanded), for the history.
    pub chown_text: Option<String>,
    /// `--chmod` as written (expanded), for the history.
    pub chmod_text: Option<String>,
    pub chown: Option<Chown>,
    pub chmod: Option<u32>,
    pub exclude: Vec<String>,
}

impl CopyOptions {
    /// A `Copy` action with these options.
    pub(super) fn copy(&self, src: Input, src_paths: Vec<String>, dest: String) -> FileAction {
        self.copy_with(src, src_paths, dest, false, false)
    }

    /// A `Copy` action with these options, `--parents` and archive extraction.
    pub(super) fn copy_with(
        &self,
        src: Input,
        src_paths: Vec<String>,
        dest: String,
        parents: bool,
        unpack_archives: bool,
    ) -> FileAction {
        FileAction::Copy {
            src,
            src_paths,
            dest,
            chown: self.chown.clone(),
            chmod: self.chmod,
            exclude: self.exclude.clone(),
            parents,
            unpack_archives,
        }
    }

    /// `--parents`, `--chown`, `--chmod` as BuildKit writes them into the history.
    pub(super) fn history_flags(&self, parents: bool) -> String {
        let mut s = String::new();
        if parents {
            s.push_str(" --parents");
        }
        if let Some(o) = &self.chown_text {
            s.push_str(&format!(" --chown={o}"));
        }
        if let Some(m) = &self.chmod_text {
            s.push_str(&format!(" --chmod={m}"));
        }
        s
    }
}

/// Whether an owner is numeric (`1000`, `1000:1000`), which a `--link` copy can apply without an
/// `/etc/passwd`.
fn numeric_owner(c: &Chown) -> bool {
    let numeric = |s: &str| !s.is_empty() && s.chars().all(|ch| ch.is_ascii_digit());
    numeric(&c.user) && c.group.as_deref().is_none_or(numeric)
}

impl Converter<'_> {
    /// Expands and checks `--chown`, `--chmod` and `--exclude`.
    pub(super) fn copy_options(
        &self,
        st: &StageState,
        chown: Option<&String>,
        chmod: Option<&String>,
        exclude: &[String],
    ) -> Result<CopyOptions, Error> {
        let chown_text = match chown {
            Some(raw) => Some(self.expand(raw, &st.env)?).filter(|s| !s.is_empty()),
            None => None,
        };
        let chmod_text = match chmod {
            Some(raw) => Some(self.expand(raw, &st.env)?).filter(|s| !s.is_empty()),
            None => None,
        };
        let chmod = match &chmod_text {
            None => None,
            Some(m) => match parse_chmod(m).map_err(ErrorKind::InvalidInstruction)? {
                Mode::Octal(n) => Some(n),
                Mode::Symbolic => {
                    let feature = "--chmod with a symbolic mode".to_owned();
                    return Err(ErrorKind::Unsupported { feature }.into());
                }
            },
        };
        Ok(CopyOptions {
            chown: chown_text.as_deref().map(parse_chown),
            chown_text,
            chmod_text,
            chmod,
            exclude: exclude.to_vec(),
        })
    }

    /// Heredoc sources: each body becomes a file on an empty tree (mode 0644, variables expanded
    /// unless the delimiter was quoted), copied to `dest`. Returns the actions and history text.
    pub(super) fn heredoc_copies(
        &mut self,
        st: &StageState,
        cmd: &Command,
        contents: &[SourceContent],
        opts: &CopyOptions,
        dest: &str,
    ) -> Result<(Vec<FileAction>, String), Error> {
        let mut actions = Vec::with_capacity(contents.len());
        let mut history = String::new();
        for c in contents {
            history.push_str(&format!(" <<{}", c.path));
            let data = if c.expand {
                let lexer = crate::shell::Lexer::new('\\').with_skip_process_quotes(true);
                lexer
                    .process_word(&c.data, &st.env)
                    .map_err(|source| ErrorKind::Expansion { word: c.data.clone(), source })?
            } else {
                c.data.clone()
            };
            let path = join(&["/", &c.path]);
            let op = Op::File(FileOp {
                base: None,
                actions: vec![FileAction::Mkfile {
                    path: path.clone(),
                    data: data.into_bytes(),
                    mode: 0o644,
                    chown: None,
                }],
            });
            let id = self.add_op(op, INLINE_DOCUMENT.to_owned(), cmd.span, false)?;
            actions.push(opts.copy(Input::of(id), vec![path], dest.to_owned()));
        }
        Ok((actions, history))
    }

    /// Adds the file op of a `COPY`/`ADD` step. With `--link` (and no `--chmod`, as BuildKit),
    /// the actions run on an empty tree and a merge stacks that layer on the stage.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish_copy(
        &mut self,
        st: &mut StageState,
        progress: &mut Progress,
        cmd: &Command,
        actions: Vec<FileAction>,
        opts: &CopyOptions,
        link: bool,
        created_by: String,
    ) -> Result<(), Error> {
        let text = self.display_text(&cmd.original, &st.env, false);
        let name = progress.name(&text);
        let link = link && opts.chmod_text.is_none();
        let (layer, result) = if link {
            if let Some(c) = opts.chown.as_ref().filter(|c| !numeric_owner(c)) {
                let owner = opts.chown_text.clone().unwrap_or_else(|| c.user.clone());
                let msg = format!(
                    "--chown={owner} cannot be used with --link: a linked copy is made on an empty filesystem, where user and group names cannot be looked up"
                );
                return Err(Error::new(ErrorKind::InvalidInstruction(msg))
                    .with_hint("use numeric ids (--chown=1000:1000) or drop --link"));
            }
            let copy = self.add_op(Op::File(FileOp { base: None, actions }), name, cmd.span, true)?;
            let result = match st.fs {
                Some(base) => {
                    let merge = Op::Merge(rbuild_solver::ir::MergeOp { inputs: vec![base, Input::of(copy)] });
                    self.add_op(merge, progress.same(&format!("LINK {text}")), cmd.span, true)?
                }
                None => copy,
            };
            (copy, result)
        } else {
            let id = self.add_op(Op::File(FileOp { base: st.fs, actions }), name, cmd.span, true)?;
            (id, id)
        };
        st.fs = Some(Input::of(result));
        st.commit(created_by, Some(layer));
        Ok(())
    }

    /// Sources, destination, `--chown` and `--chmod` are variable-expanded; `--from` and
    /// `--exclude` are not. The destination is resolved against the working directory, a
    /// trailing `/` kept; the worker implements the copy semantics.
    pub(super) fn dispatch_copy(
        &mut self,
        st: &mut StageState,
        progress: &mut Progress,
        stage: usize,
        cmd: &Command,
        c: &CopyInstruction,
        from: Option<FromRef>,
    ) -> Result<(), Error> {
        let opts = self.copy_options(st, c.chown.as_ref(), c.chmod.as_ref(), &c.excludes)?;
        let mut sources = Vec::with_capacity(c.paths.sources.len());
        for s in &c.paths.sources {
            let s = self.expand(s, &st.env)?;
            match classify(&s).map_err(ErrorKind::InvalidInstruction)? {
                AddSource::Git(_) => {
                    return Err(ErrorKind::InvalidInstruction("source can't be a git ref for COPY".to_owned()).into())
                }
                AddSource::Http { .. } => {
                    return Err(ErrorKind::InvalidInstruction("source can't be a URL for COPY".to_owned()).into())
                }
                AddSource::Local => sources.push(s),
            }
        }
        let dest_written = self.expand(&c.paths.dest, &st.env)?;
        let mut dest = relative_to_workdir(&st.workdir, &dest_written);
        if !c.paths.sources.is_empty() && !c.paths.contents.is_empty() && !dest.ends_with('/') {
            dest.push('/');
        }
        let mut actions = Vec::new();
        if !sources.is_empty() {
            let src = self.copy_source(stage, cmd, c, from)?;
            actions.push(opts.copy_with(src, sources.clone(), dest.clone(), c.parents, false));
        }
        let (docs, docs_history) = self.heredoc_copies(st, cmd, &c.paths.contents, &opts, &dest)?;
        actions.extend(docs);

        let mut created_by = format!("COPY{}", opts.history_flags(c.parents));
        for s in &sources {
            created_by.push(' ');
            created_by.push_str(s);
        }
        created_by.push_str(&docs_history);
        created_by.push_str(&format!(" {dest_written} # buildkit"));
        self.finish_copy(st, progress, cmd, actions, &opts, c.link, created_by)
    }

    /// The filesystem `COPY` reads from.
    fn copy_source(
        &mut self,
        stage: usize,
        cmd: &Command,
        c: &CopyInstruction,
        from: Option<FromRef>,
    ) -> Result<Input, Error> {
        let from_name = c.from.clone().unwrap_or_default();
        let Some(r) = from else { return self.context_input() };
        let order = |current| ErrorKind::StageOrder { from: from_name.clone(), stage: current };
        self.stage_or_image_fs(stage, &r, cmd, order)?.ok_or_else(|| {
            Error::new(ErrorKind::InvalidInstruction(format!(
                "cannot copy from {from_name:?}: it is an empty filesystem (scratch)"
            )))
        })
    }

    /// The filesystem of a stage or image another instruction reads (`None`: empty). A stage
    /// not built before the current one is an error made by `order_error`.
    pub(super) fn stage_or_image_fs(
        &mut self,
        stage: usize,
        r: &FromRef,
        cmd: &Command,
        order_error: impl FnOnce(String) -> ErrorKind,
    ) -> Result<Option<Input>, Error> {
        match r {
            FromRef::Stage(i) => match self.done.get(*i) {
                Some(Some(done)) if *i < stage => Ok(done.fs),
                _ => Err(order_error(self.stage_label(stage)).into()),
            },
            FromRef::Image(reference) => self.image_input(reference, cmd.span),
            FromRef::Context(ctx) => self.named_context_fs(ctx, false, cmd.span).map(Some),
        }
    }

    /// An empty filesystem as an input (a file op with no actions on an empty tree).
    pub(super) fn empty_fs(&mut self) -> Result<Input, Error> {
        let op = Op::File(FileOp { base: None, actions: Vec::new() });
        let meta = VertexMeta { name: "[internal] empty filesystem".to_owned(), ..VertexMeta::default() };
        let id: OpId = self.add_op_meta(op, meta)?;
        Ok(Input::of(id))
    }
}
