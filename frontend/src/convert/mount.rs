//! `RUN --mount` → [`Mount`]s (BuildKit's `dispatchRunMounts`, `dispatchSecret`,
//! `dispatchSSH`), with BuildKit's defaults:
//!
//! | type | source | defaults |
//! |---|---|---|
//! | bind | `from` (stage, image) or the build context; `source` path in it | read-only |
//! | cache | seed from `from`, else empty | id = target as written, shared, 0:0 0755, read-write |
//! | tmpfs | — | no size limit |
//! | secret | — | id = `id`, else `source`, else basename of target; `/run/secrets/<id>`; 0:0 0400; optional |
//! | ssh | — | id `default`; `/run/buildkit/ssh_agent.<n>`; 0:0 0600; optional |
//!
//! A relative target is taken from the working directory; `/` is refused.

use rbuild_solver::ir::{CacheSharing, Input, Mount, MountKind};

use super::dispatch::Converter;
use super::paths::{clean, join};
use super::plan::FromRef;
use super::state::StageState;
use crate::error::{Error, ErrorKind};
use crate::instructions::{parse_mount, Command, MountSpec, MountType, Sharing};

fn invalid(msg: String) -> Error {
    ErrorKind::InvalidInstruction(msg).into()
}

/// Go's `path.Base`.
fn base_name(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return if p.is_empty() { ".".to_owned() } else { "/".to_owned() };
    }
    t.rsplit('/').next().unwrap_or(t).to_owned()
}

impl Converter<'_> {
    /// The mounts of one `RUN`; `froms` are the planned `from=` of each (aligned with
    /// `raw`).
    pub(super) fn run_mounts(
        &mut self,
        st: &StageState,
        stage: usize,
        cmd: &Command,
        raw: &[String],
        froms: &[Option<FromRef>],
    ) -> Result<Vec<Mount>, Error> {
        let mut out = Vec::with_capacity(raw.len());
        let mut ssh_count = 0;
        for (i, value) in raw.iter().enumerate() {
            let spec =
                parse_mount(value, &mut |w| self.expand(w, &st.env).map_err(|e| e.to_string())).map_err(invalid)?;
            let from = froms.get(i).cloned().flatten();
            let mount = match spec.kind {
                MountType::Secret => {
                    let m = secret(&spec)?;
                    if let MountKind::Secret { id, required, .. } = &m.kind {
                        self.capture_mount(stage, false, id, *required, cmd.span);
                    }
                    m
                }
                MountType::Ssh => {
                    let m = ssh(&spec, ssh_count)?;
                    ssh_count += 1;
                    if let MountKind::Ssh { id, required, .. } = &m.kind {
                        self.capture_mount(stage, true, id, *required, cmd.span);
                    }
                    m
                }
                MountType::Tmpfs => {
                    let target = self.mount_target(st, &spec.target)?;
                    Mount { target, kind: MountKind::Tmpfs { size: (spec.size > 0).then_some(spec.size) } }
                }
                MountType::Bind => {
                    let target = self.mount_target(st, &spec.target)?;
                    let source = match &from {
                        None => self.context_input()?,
                        Some(r) => {
                            let fs = self.stage_or_image_fs(stage, r, cmd, |_| order_error(&spec))?;
                            fs.map_or_else(|| self.empty_fs(), Ok)?
                        }
                    };
                    let selector = join(&["/", &spec.source]);
                    Mount { target, kind: MountKind::Bind { source, selector, readonly: spec.readonly } }
                }
                MountType::Cache => {
                    let target = self.mount_target(st, &spec.target)?;
                    let source: Option<Input> = match &from {
                        None => None,
                        Some(r) => self.stage_or_image_fs(stage, r, cmd, |_| order_error(&spec))?,
                    };
                    let id = if spec.id.is_empty() { clean(&spec.target) } else { spec.id.clone() };
                    let sharing = match spec.sharing {
                        None | Some(Sharing::Shared) => CacheSharing::Shared,
                        Some(Sharing::Private) => CacheSharing::Private,
                        Some(Sharing::Locked) => CacheSharing::Locked,
                    };
                    Mount {
                        target,
                        kind: MountKind::Cache {
                            id,
                            sharing,
                            source,
                            selector: join(&["/", &spec.source]),
                            readonly: spec.readonly,
                            uid: spec.uid.unwrap_or(0),
                            gid: spec.gid.unwrap_or(0),
                            mode: spec.mode.unwrap_or(0o755),
                        },
                    }
                }
            };
            out.push(mount);
        }
        Ok(out)
    }

    /// BuildKit's target rule: relative targets are under the working directory.
    fn mount_target(&self, st: &StageState, target: &str) -> Result<String, Error> {
        let t = clean(target);
        let t = if t.starts_with('/') { t } else { join(&["/", &st.workdir, target]) };
        if t == "/" {
            return Err(invalid(format!("invalid mount target {}", crate::parser::go_quote(&t))));
        }
        Ok(t)
    }
}

fn order_error(spec: &MountSpec) -> ErrorKind {
    ErrorKind::InvalidInstruction(format!(
        "cannot mount from stage {} to {}, stage needs to be defined before current command",
        crate::parser::go_quote(&spec.from),
        crate::parser::go_quote(&spec.target)
    ))
}

fn secret(spec: &MountSpec) -> Result<Mount, Error> {
    let mut id = if spec.source.is_empty() { spec.id.clone() } else { spec.source.clone() };
    if id.is_empty() {
        if spec.target.is_empty() {
            return Err(invalid("one of source, target required".to_owned()));
        }
        id = base_name(&spec.target);
    }
    // Without `env`, the secret is a file (by default under /run/secrets); with `env` and no
    // target, it is only an environment variable.
    let target = match (&spec.env, spec.target.is_empty()) {
        (None, true) => format!("/run/secrets/{}", base_name(&id)),
        (_, false) => spec.target.clone(),
        (Some(_), true) => String::new(),
    };
    Ok(Mount {
        target,
        kind: MountKind::Secret {
            id,
            required: spec.required,
            env: spec.env.clone(),
            uid: spec.uid.unwrap_or(0),
            gid: spec.gid.unwrap_or(0),
            mode: spec.mode.unwrap_or(0o400),
        },
    })
}

fn ssh(spec: &MountSpec, index: usize) -> Result<Mount, Error> {
    if !spec.source.is_empty() {
        return Err(invalid("ssh does not support source".to_owned()));
    }
    let target = if spec.target.is_empty() { format!("/run/buildkit/ssh_agent.{index}") } else { spec.target.clone() };
    Ok(Mount {
        target,
        kind: MountKind::Ssh {
            id: if spec.id.is_empty() { "default".to_owned() } else { spec.id.clone() },
            required: spec.required,
            uid: spec.uid.unwrap_or(0),
            gid: spec.gid.unwrap_or(0),
            mode: spec.mode.unwrap_or(0o600),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_base() {
        assert_eq!(base_name("/run/x/"), "x");
        assert_eq!(base_name("tok"), "tok");
        assert_eq!(base_name("/"), "/");
        assert_eq!(base_name(""), ".");
    }
}
