//! Instructions that change the image config and build environment: `ENV`, `LABEL`, `ARG`,
//! `CMD`, `ENTRYPOINT`, `EXPOSE`, `USER`, `VOLUME`, `STOPSIGNAL`, and `WORKDIR` (which also
//! creates the directory).

use rbuild_solver::ir::{FileAction, FileOp, Input, Op};

use super::dispatch::Converter;
use super::paths;
use super::run::is_proxy_arg;
use super::state::{go_list, go_quoted_list, Progress, StageState};
use super::values::{check_signal, parse_chown, parse_port_spec};
use super::Warning;
use crate::error::{Error, ErrorKind};
use crate::instructions::{ArgDecl, Command, CommandLine, Instruction};
use crate::parser::KeyValue;

/// Build args that exist without an `ARG` (BuildKit's `defaultArgs` and the epoch).
const PREDEFINED_ARGS: [&str; 12] = [
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDOSVERSION",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETOSVERSION",
    "TARGETARCH",
    "TARGETVARIANT",
    "TARGETSTAGE",
    "SOURCE_DATE_EPOCH",
];

/// `ARG`s that configure the build rather than the steps, never put in the environment.
const NON_ENV_ARGS: [&str; 2] = ["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

impl Converter<'_> {
    /// Expands keys and values with the environment before the instruction.
    fn expand_pairs(&self, st: &StageState, kvs: &[KeyValue]) -> Result<Vec<(String, String)>, Error> {
        kvs.iter().map(|kv| Ok((self.expand(&kv.key, &st.env)?, self.expand(&kv.value, &st.env)?))).collect()
    }

    pub(super) fn dispatch_env(&self, st: &mut StageState, kvs: &[KeyValue]) -> Result<(), Error> {
        let pairs = self.expand_pairs(st, kvs)?;
        let mut msg = String::from("ENV");
        for (k, v) in pairs {
            msg.push_str(&format!(" {k}={v}"));
            st.env.set(&k, &v);
            st.config.env_set(&k, &v);
        }
        st.commit(msg, None);
        Ok(())
    }

    pub(super) fn dispatch_label(&self, st: &mut StageState, kvs: &[KeyValue]) -> Result<(), Error> {
        let pairs = self.expand_pairs(st, kvs)?;
        let mut msg = String::from("LABEL");
        for (k, v) in pairs {
            msg.push_str(&format!(" {k}={v}"));
            st.config.labels.insert(k, v);
        }
        st.commit(msg, None);
        Ok(())
    }

    /// BuildKit's `dispatchArg`: a `--build-arg` beats the default; a bare `ARG` takes the
    /// global value; the value goes into the build environment (so `RUN` sees it, even over an
    /// `ENV` of the same name) but never into the image config.
    pub(super) fn dispatch_arg(&self, st: &mut StageState, decls: &[ArgDecl]) -> Result<(), Error> {
        let mut parts = Vec::with_capacity(decls.len());
        for decl in decls {
            let build_arg = self.req.build_args.get(&decl.key);
            let value = match (build_arg, &decl.value) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(default)) => Some(self.expand(default, &st.env)?),
                (None, None) => self.global_args.lookup(&decl.key).map(str::to_owned),
            };
            if let Some(v) = &value {
                if !NON_ENV_ARGS.contains(&decl.key.as_str()) {
                    st.env.set(&decl.key, v);
                }
            }
            parts.push(match &value {
                Some(v) => format!("{}={v}", decl.key),
                None => decl.key.clone(),
            });
            st.build_args.push(ArgDecl { key: decl.key.clone(), value });
        }
        st.commit(format!("ARG {}", parts.join(" ")), None);
        Ok(())
    }

    /// Docker's warning for `--build-arg`s no `ARG` of the build declares (platform, proxy and
    /// `BUILDKIT_*` args are always consumed).
    pub(super) fn unused_build_args(&self, reachable: &std::collections::BTreeSet<usize>) -> Vec<Warning> {
        let mut declared: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
        let stage_cmds = reachable.iter().filter_map(|i| self.plans.get(*i)).flat_map(|p| p.commands.iter());
        for cmd in self.df().meta_args.iter().chain(stage_cmds) {
            if let Instruction::Arg(decls) = &cmd.instruction {
                declared.extend(decls.iter().map(|d| d.key.as_str()));
            }
        }
        let unused: Vec<&str> = self
            .req
            .build_args
            .keys()
            .map(String::as_str)
            .filter(|k| {
                !declared.contains(k) && !PREDEFINED_ARGS.contains(k) && !is_proxy_arg(k) && !k.starts_with("BUILDKIT_")
            })
            .collect();
        if unused.is_empty() {
            return Vec::new();
        }
        vec![Warning {
            span: None,
            message: format!("One or more build-args [{}] were not consumed", unused.join(" ")),
            rule: None,
        }]
    }

    /// Shell form gets the stage's shell in front; exec form is kept.
    pub(super) fn with_shell(st: &StageState, c: &CommandLine) -> Vec<String> {
        if !c.prepend_shell {
            return c.args.clone();
        }
        let mut args = st.shell();
        args.push(c.args.join(" "));
        args
    }

    pub(super) fn dispatch_cmd(&self, st: &mut StageState, c: &CommandLine) {
        let args = Self::with_shell(st, c);
        st.commit(format!("CMD {}", go_quoted_list(&args)), None);
        st.config.cmd = Some(args);
        st.config.args_escaped = true;
        st.cmd_set = true;
    }

    /// Also drops an inherited `CMD`, but not one set earlier in this stage. `ENTRYPOINT []`
    /// removes the entrypoint.
    pub(super) fn dispatch_entrypoint(&self, st: &mut StageState, c: &CommandLine) {
        let args = Self::with_shell(st, c);
        st.commit(format!("ENTRYPOINT {}", go_quoted_list(&args)), None);
        st.config.entrypoint = (!args.is_empty()).then_some(args);
        if !st.cmd_set {
            st.config.cmd = None;
        }
    }

    pub(super) fn dispatch_expose(&self, st: &mut StageState, ports: &[String]) -> Result<(), Error> {
        let mut words = Vec::new();
        for p in ports {
            words.extend(self.expand_words(p, &st.env)?);
        }
        let mut specs = Vec::new();
        for w in &words {
            specs.extend(parse_port_spec(w).map_err(ErrorKind::InvalidInstruction)?);
        }
        st.config.exposed_ports.extend(specs.iter().cloned());
        st.commit(format!("EXPOSE {}", go_port_map(&specs)), None);
        Ok(())
    }

    pub(super) fn dispatch_user(&self, st: &mut StageState, user: &str) -> Result<(), Error> {
        let user = self.expand(user, &st.env)?;
        st.user = user.clone();
        st.config.user = user.clone();
        st.commit(format!("USER {user}"), None);
        Ok(())
    }

    pub(super) fn dispatch_volume(&self, st: &mut StageState, volumes: &[String]) -> Result<(), Error> {
        let mut expanded = Vec::with_capacity(volumes.len());
        for v in volumes {
            let v = self.expand(v, &st.env)?;
            if v.is_empty() {
                return Err(
                    ErrorKind::InvalidInstruction("VOLUME specified can not be an empty string".to_owned()).into()
                );
            }
            expanded.push(v);
        }
        st.config.volumes.extend(expanded.iter().cloned());
        st.commit(format!("VOLUME {}", go_list(&expanded)), None);
        Ok(())
    }

    pub(super) fn dispatch_stop_signal(&self, st: &mut StageState, signal: &str) -> Result<(), Error> {
        let signal = self.expand(signal, &st.env)?;
        check_signal(&signal).map_err(ErrorKind::InvalidInstruction)?;
        st.config.stop_signal = Some(signal.clone());
        st.commit(format!("STOPSIGNAL {signal}"), None);
        Ok(())
    }

    /// Relative to the previous working directory; a directory other than `/` is created
    /// (parents too, owned by the current user), which makes a layer.
    pub(super) fn dispatch_workdir(
        &mut self,
        st: &mut StageState,
        progress: &mut Progress,
        cmd: &Command,
        path: &str,
    ) -> Result<(), Error> {
        let path = self.expand(path, &st.env)?;
        let wd = paths::normalize(&st.config.working_dir, &path, false);
        st.config.working_dir = wd.clone();
        st.workdir = wd.clone();
        let mut layer = None;
        if wd != "/" {
            let chown = (!st.config.user.is_empty()).then(|| parse_chown(&st.config.user));
            let op = Op::File(FileOp {
                base: st.fs,
                actions: vec![FileAction::Mkdir { path: wd.clone(), mode: 0o755, make_parents: true, chown }],
            });
            let name = progress.name(&self.display_text(&cmd.original, &st.env, false));
            let id = self.add_op(op, name, cmd.span, true)?;
            st.fs = Some(Input::of(id));
            layer = Some(id);
        }
        st.commit(format!("WORKDIR {wd}"), layer);
        Ok(())
    }
}

/// `EXPOSE`'s history text in BuildKit 0.13 (Docker 26's builder): Go's `%v` of the parsed
/// port map, `map[53/udp:{} 80/tcp:{}]` (keys sorted as strings, each once).
fn go_port_map(specs: &[String]) -> String {
    let ports: std::collections::BTreeSet<&str> = specs.iter().map(String::as_str).collect();
    let items: Vec<String> = ports.iter().map(|p| format!("{p}:{{}}")).collect();
    format!("map[{}]", items.join(" "))
}
