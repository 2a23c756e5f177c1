//! `ADD`: `COPY` from the build context that extracts local tar archives, plus remote sources
//! (BuildKit's `dispatchCopy` with `isAddCommand`):
//!
//! - a URL becomes an [`SourceOp::Http`] (saved as the last path segment, never extracted
//!   unless `--unpack`), copied to the destination;
//! - a git URL becomes a [`SourceOp::Git`] checkout, its root copied to the destination;
//! - a local path is copied with `unpack_archives` (unless `--unpack=false`).

use rbuild_solver::ir::{FileAction, Input, Op, SourceOp};

use super::dispatch::Converter;
use super::paths::relative_to_workdir;
use super::source::{classify, AddSource};
use super::state::{Progress, StageState};
use crate::error::{Error, ErrorKind};
use crate::instructions::{AddInstruction, Command};

fn invalid(msg: impl Into<String>) -> Error {
    ErrorKind::InvalidInstruction(msg.into()).into()
}

/// go-digest's `Parse` for `--checksum`.
fn check_digest(d: &str) -> Result<(), Error> {
    let Some((alg, hex)) = d.split_once(':') else {
        return Err(invalid("invalid checksum digest format"));
    };
    let len = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ if alg.is_empty() || !alg.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) => {
            return Err(invalid("invalid checksum digest format"))
        }
        _ => return Err(invalid("unsupported digest algorithm")),
    };
    if hex.len() != len {
        return Err(invalid("invalid checksum digest length"));
    }
    if !hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
        return Err(invalid("invalid checksum digest format"));
    }
    Ok(())
}

impl Converter<'_> {
    /// Sources, destination, `--chown`, `--chmod` and `--checksum` are variable-expanded.
    pub(super) fn dispatch_add(
        &mut self,
        st: &mut StageState,
        progress: &mut Progress,
        cmd: &Command,
        a: &AddInstruction,
    ) -> Result<(), Error> {
        let opts = self.copy_options(st, a.chown.as_ref(), a.chmod.as_ref(), &a.excludes)?;
        let checksum = match &a.checksum {
            Some(raw) => Some(self.expand(raw, &st.env)?).filter(|s| !s.is_empty()),
            None => None,
        };
        let mut sources = Vec::with_capacity(a.paths.sources.len());
        for s in &a.paths.sources {
            let s = self.expand(s, &st.env)?;
            let kind = classify(&s).map_err(ErrorKind::InvalidInstruction)?;
            sources.push((s, kind));
        }
        if let Some(c) = &checksum {
            if sources.len() != 1 {
                return Err(invalid("checksum can't be specified for multiple sources"));
            }
            if !matches!(sources.first(), Some((_, AddSource::Http { .. }))) {
                return Err(invalid("checksum can't be specified for non-HTTP sources"));
            }
            check_digest(c)?;
        }
        let dest_written = self.expand(&a.paths.dest, &st.env)?;
        let mut dest = relative_to_workdir(&st.workdir, &dest_written);
        let local_count = sources.iter().filter(|(_, k)| *k == AddSource::Local).count();
        let action_count = usize::from(local_count > 0) + sources.len() - local_count + a.paths.contents.len();
        if action_count > 1 && !dest.ends_with('/') {
            dest.push('/');
        }

        // The step's progress name, which BuildKit also gives the remote source vertices.
        let step_name = {
            let mut p = progress.clone();
            p.name(&self.display_text(&cmd.original, &st.env, false))
        };
        let mut actions: Vec<FileAction> = Vec::new();
        // Local sources are copied by one action, placed where the first of them is written.
        let mut locals: Vec<String> = Vec::new();
        let mut locals_at = 0;
        for (src, kind) in &sources {
            match kind {
                AddSource::Local => {
                    if locals.is_empty() {
                        locals_at = actions.len();
                    }
                    locals.push(src.clone());
                }
                AddSource::Http { url, filename } => {
                    let op = Op::Source(SourceOp::Http {
                        url: url.clone(),
                        checksum: checksum.clone(),
                        filename: filename.clone(),
                    });
                    let id = self.add_op(op, step_name.clone(), cmd.span, true)?;
                    let unpack = a.unpack.unwrap_or(false);
                    actions.push(opts.copy_with(Input::of(id), vec![filename.clone()], dest.clone(), false, unpack));
                }
                AddSource::Git(git) => {
                    let keep_git_dir = match (a.keep_git_dir, git.keep_git_dir) {
                        (Some(flag), Some(query)) if flag != query => {
                            return Err(invalid("inconsistent keep-git-dir configuration"))
                        }
                        (flag, query) => flag.or(query).unwrap_or(false),
                    };
                    let op = Op::Source(SourceOp::Git {
                        remote: git.remote.clone(),
                        reference: git.reference.clone(),
                        subdir: git.subdir.clone(),
                        keep_git_dir,
                    });
                    let id = self.add_op(op, step_name.clone(), cmd.span, true)?;
                    actions.push(opts.copy(Input::of(id), vec!["/".to_owned()], dest.clone()));
                }
            }
        }
        if !locals.is_empty() {
            let ctx = self.context_input()?;
            let unpack = a.unpack.unwrap_or(true);
            actions.insert(locals_at, opts.copy_with(ctx, locals, dest.clone(), false, unpack));
        }
        let (docs, docs_history) = self.heredoc_copies(st, cmd, &a.paths.contents, &opts, &dest)?;
        actions.extend(docs);

        let mut created_by = format!("ADD{}", opts.history_flags(false));
        for (s, _) in &sources {
            created_by.push(' ');
            created_by.push_str(s);
        }
        created_by.push_str(&docs_history);
        created_by.push_str(&format!(" {dest_written} # buildkit"));
        self.finish_copy(st, progress, cmd, actions, &opts, a.link, created_by)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        assert!(check_digest(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(check_digest(&format!("sha512:{}", "0".repeat(128))).is_ok());
        let msg = |d: &str| check_digest(d).unwrap_err().to_string();
        assert_eq!(msg("abc"), "invalid checksum digest format");
        assert_eq!(msg("md5:abc"), "unsupported digest algorithm");
        assert_eq!(msg("sha256:abc"), "invalid checksum digest length");
        assert_eq!(msg(&format!("sha256:{}", "A".repeat(64))), "invalid checksum digest format");
    }
}
