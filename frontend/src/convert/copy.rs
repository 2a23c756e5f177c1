//! `COPY`: a file op copying from the build context, another stage or an image
//! (BuildKit's `dispatchCopy`).

use rbuild_solver::ir::{FileAction, FileOp, Input, Op};

use super::dispatch::Converter;
use super::paths::relative_to_workdir;
use super::plan::FromRef;
use super::state::{Progress, StageState};
use super::values::{parse_chmod, parse_chown, Mode};
use crate::error::{Error, ErrorKind};
use crate::instructions::{Command, CopyInstruction};

impl Converter<'_> {
    /// Sources, destination, `--chown` and `--chmod` are variable-expanded; `--from` is not.
    /// The destination is resolved against the working directory, a trailing `/` kept; the
    /// solver implements the copy semantics.
    pub(super) fn dispatch_copy(
        &mut self,
        st: &mut StageState,
        progress: &mut Progress,
        stage: usize,
        cmd: &Command,
        c: &CopyInstruction,
        from: Option<FromRef>,
    ) -> Result<(), Error> {
        let chown = match &c.chown {
            Some(raw) => Some(self.expand(raw, &st.env)?).filter(|s| !s.is_empty()),
            None => None,
        };
        let chmod = match &c.chmod {
            Some(raw) => Some(self.expand(raw, &st.env)?).filter(|s| !s.is_empty()),
            None => None,
        };
        let mut sources = Vec::with_capacity(c.paths.sources.len());
        for s in &c.paths.sources {
            sources.push(self.expand(s, &st.env)?);
        }
        let dest_written = self.expand(&c.paths.dest, &st.env)?;
        let mode = match &chmod {
            None => None,
            Some(m) => match parse_chmod(m).map_err(ErrorKind::InvalidInstruction)? {
                Mode::Octal(n) => Some(n),
                Mode::Symbolic => {
                    return Err(
                        ErrorKind::Unsupported { feature: "COPY --chmod with a symbolic mode".to_owned() }.into()
                    )
                }
            },
        };
        if sources.iter().any(|s| s.starts_with("http://") || s.starts_with("https://")) {
            return Err(ErrorKind::InvalidInstruction("source can't be a URL for COPY".to_owned()).into());
        }
        let src = self.copy_source(stage, cmd, c, from)?;
        let dest = relative_to_workdir(&st.workdir, &dest_written);

        let mut created_by = String::from("COPY");
        if c.parents {
            created_by.push_str(" --parents");
        }
        if let Some(o) = &chown {
            created_by.push_str(&format!(" --chown={o}"));
        }
        if let Some(m) = &chmod {
            created_by.push_str(&format!(" --chmod={m}"));
        }
        for s in &sources {
            created_by.push(' ');
            created_by.push_str(s);
        }
        created_by.push_str(&format!(" {dest_written} # buildkit"));

        let name = progress.name(&self.display_text(&cmd.original, &st.env, false));
        let op = Op::File(FileOp {
            base: st.fs,
            actions: vec![FileAction::Copy {
                src,
                src_paths: sources,
                dest,
                chown: chown.as_deref().map(parse_chown),
                chmod: mode,
                exclude: Vec::new(),
                parents: false,
                unpack_archives: false,
            }],
        });
        let id = self.add_op(op, name, cmd.span, true)?;
        st.fs = Some(Input::of(id));
        st.commit(created_by, Some(id));
        Ok(())
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
        let empty = || {
            Error::new(ErrorKind::InvalidInstruction(format!(
                "cannot copy from {from_name:?}: it is an empty filesystem (scratch)"
            )))
        };
        match from {
            None => self.context_input(),
            Some(FromRef::Stage(i)) => {
                if i >= stage {
                    let current = self.stage_label(stage);
                    return Err(ErrorKind::StageOrder { from: from_name, stage: current }.into());
                }
                let Some(Some(done)) = self.done.get(i) else {
                    return Err(ErrorKind::StageOrder { from: from_name, stage: self.stage_label(stage) }.into());
                };
                done.fs.ok_or_else(empty)
            }
            Some(FromRef::Image(r)) if r.eq_ignore_ascii_case("scratch") => Err(empty()),
            Some(FromRef::Image(r)) => self.copy_image_fs(&r, cmd.span)?.ok_or_else(empty),
        }
    }
}
