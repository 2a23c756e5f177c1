//! `RUN`: an exec op on the stage's filesystem (BuildKit's `dispatchRun`).

use rbuild_solver::ir::{ExecOp, FileAction, FileOp, Input, Mount, MountKind, NetworkMode, Op, SecurityMode};

use super::copy::INLINE_DOCUMENT;
use super::dispatch::Converter;
use super::plan::CommandDeps;
use super::state::{Progress, StageState};
use crate::error::{Error, ErrorKind};
use crate::instructions::{ArgDecl, Command, CommandLine, RunInstruction};
use crate::parser::{chomp_heredoc_content, parse_heredoc};

/// Where a `RUN <<EOF` script starting with `#!` is mounted (BuildKit's choice).
const PIPES_DIR: &str = "/dev/pipes";

/// The proxy build args BuildKit passes to every `RUN` without an `ARG`, each under both
/// spellings (they never reach the image or the history).
const PROXY_ARGS: [(&str, &str); 5] = [
    ("HTTP_PROXY", "http_proxy"),
    ("HTTPS_PROXY", "https_proxy"),
    ("FTP_PROXY", "ftp_proxy"),
    ("NO_PROXY", "no_proxy"),
    ("ALL_PROXY", "all_proxy"),
];

/// Whether `key` is one of the predefined proxy args (any case).
pub(crate) fn is_proxy_arg(key: &str) -> bool {
    PROXY_ARGS.iter().any(|(upper, _)| upper.eq_ignore_ascii_case(key))
}

impl Converter<'_> {
    /// Never variable-expanded by the frontend: the shell does that at run time, with the
    /// build environment (config `ENV`s plus in-scope `ARG`s, then proxy build args) as process
    /// environment. Mount options are expanded.
    pub(super) fn dispatch_run(
        &mut self,
        st: &mut StageState,
        progress: &mut Progress,
        stage: usize,
        cmd: &Command,
        run: &RunInstruction,
        deps: &CommandDeps,
    ) -> Result<(), Error> {
        let (command, summary, script) = with_heredocs(&run.command)?;
        let mut mounts = Vec::new();
        if let Some((name, data)) = script {
            // A lone heredoc starting with `#!` is written to a file on an empty tree, mounted
            // read-only, and run by its interpreter line.
            let path = super::paths::join(&["/", &name]);
            let op = Op::File(FileOp {
                base: None,
                actions: vec![FileAction::Mkfile {
                    path: path.clone(),
                    data: data.into_bytes(),
                    mode: 0o755,
                    chown: None,
                }],
            });
            let id = self.add_op(op, INLINE_DOCUMENT.to_owned(), cmd.span, false)?;
            mounts.push(Mount {
                target: PIPES_DIR.to_owned(),
                kind: MountKind::Bind { source: Input::of(id), selector: "/".to_owned(), readonly: true },
            });
        }
        mounts.extend(self.run_mounts(st, stage, cmd, &run.mounts, &deps.mounts)?);
        let args = Self::with_shell(st, &command);
        // `--network=default` (or none given) is the build's `--network`, as in BuildKit.
        let defaults = &self.req.run_defaults;
        let network = match run.network.as_deref() {
            Some("none") => NetworkMode::None,
            Some("host") => NetworkMode::Host,
            _ => defaults.network,
        };
        let security = match run.security.as_deref() {
            Some("insecure") => SecurityMode::Insecure,
            _ => SecurityMode::Sandbox,
        };
        let mut env = st.env.to_strings();
        env.extend(self.proxy_env(&env));
        let op = Op::Exec(ExecOp {
            rootfs: st.fs,
            args: args.clone(),
            env,
            cwd: st.workdir.clone(),
            user: st.user.clone(),
            network,
            security,
            platform: st.platform.clone(),
            mounts,
            extra_hosts: defaults.extra_hosts.clone(),
            ulimits: defaults.ulimits.clone(),
            shm_size: defaults.shm_size,
        });
        let mut text = cmd.original.clone();
        if let Some(s) = summary {
            text.push_str(&format!(" ({s})"));
        }
        let name = progress.name(&self.display_text(&text, &st.env, true));
        let id = self.add_op(op, name, cmd.span, true)?;
        st.fs = Some(Input::of(id));
        let created_by = format!("RUN {} # buildkit", run_command_string(&args, &st.build_args, st));
        st.commit(created_by, Some(id));
        Ok(())
    }

    /// `HTTP_PROXY=v`, `http_proxy=v`, ... for the proxy build args given, unless the build
    /// environment has the name already.
    fn proxy_env(&self, env: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for (upper, lower) in PROXY_ARGS {
            // BuildKit takes the build arg matching case-insensitively, last in sorted order.
            let matching = self.req.build_args.iter().filter(|(k, _)| k.eq_ignore_ascii_case(upper));
            let Some((_, v)) = matching.max_by_key(|(k, _)| k.as_str()) else {
                continue;
            };
            if v.is_empty() {
                continue;
            }
            for k in [upper, lower] {
                if !env.iter().any(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == k) {
                    out.push(format!("{k}={v}"));
                }
            }
        }
        out
    }
}

/// A heredoc script run from a file: its name and body.
type Script = Option<(String, String)>;

/// Folds heredoc bodies into the command as BuildKit does: a lone `<<EOF` runs the body as
/// the shell command (or, starting with `#!`, as a script file); otherwise the bodies are
/// appended so the shell reads them. Returns the command, for the lone form the summary
/// shown in the progress name, and the script file to mount.
fn with_heredocs(c: &CommandLine) -> Result<(CommandLine, Option<String>, Script), Error> {
    if c.files.is_empty() {
        return Ok((c.clone(), None, None));
    }
    let [line] = c.args.as_slice() else {
        return Err(invalid_run(c));
    };
    if !c.prepend_shell {
        return Err(invalid_run(c));
    }
    let mut out = c.clone();
    out.files.clear();
    if let (Ok(Some(_)), Some(first)) = (parse_heredoc(line), c.files.first()) {
        let data = if first.chomp { chomp_heredoc_content(&first.data) } else { first.data.clone() };
        let summary = Some(summarize_heredoc(&first.data));
        if data.starts_with("#!") {
            out.args = vec![super::paths::join(&[PIPES_DIR, &first.name])];
            return Ok((out, summary, Some((first.name.clone(), data))));
        }
        out.args = vec![data];
        return Ok((out, summary, None));
    }
    let mut script = line.clone();
    for f in &c.files {
        script.push('\n');
        script.push_str(&f.data);
        script.push_str(&f.name);
    }
    out.args = vec![script];
    Ok((out, None, None))
}

fn invalid_run(c: &CommandLine) -> Error {
    ErrorKind::InvalidInstruction(format!("parsing produced an invalid run command: {:?}", c.args)).into()
}

/// First line of the body, with `...` when there are more.
fn summarize_heredoc(doc: &str) -> String {
    let doc = doc.trim().replace("\r\n", "\n");
    let mut lines = doc.split('\n');
    let first = lines.next().unwrap_or_default().to_owned();
    if lines.next().is_some() {
        format!("{first}...")
    } else {
        first
    }
}

/// BuildKit's `runCommandString`: `|N K=V ... argv` when the stage has `ARG`s, each arg's value
/// taken from the build environment (so a later `ENV` shows) or its declared value.
fn run_command_string(args: &[String], build_args: &[ArgDecl], st: &StageState) -> String {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for a in build_args {
        let v = st.env.lookup(&a.key).map(str::to_owned).or_else(|| a.value.clone()).unwrap_or_default();
        match pairs.iter_mut().find(|(k, _)| *k == a.key) {
            Some(slot) => slot.1 = v,
            None => pairs.push((a.key.clone(), v)),
        }
    }
    let mut parts = Vec::new();
    if !pairs.is_empty() {
        parts.push(format!("|{}", pairs.len()));
        parts.extend(pairs.into_iter().map(|(k, v)| format!("{k}={v}")));
    }
    parts.extend(args.iter().cloned());
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instructions::InlineFile;

    fn cl(args: &[&str], files: &[(&str, &str, bool)]) -> CommandLine {
        CommandLine {
            args: args.iter().map(|s| s.to_string()).collect(),
            prepend_shell: true,
            files: files
                .iter()
                .map(|(n, d, c)| InlineFile { name: n.to_string(), data: d.to_string(), chomp: *c })
                .collect(),
        }
    }

    #[test]
    fn heredoc_folding() {
        let (c, s, f) = with_heredocs(&cl(&["<<EOF"], &[("EOF", "echo a\necho b\n", false)])).unwrap();
        assert_eq!(c.args, ["echo a\necho b\n"]);
        assert_eq!(s.as_deref(), Some("echo a..."));
        assert!(f.is_none());
        let (c, s, _) = with_heredocs(&cl(&["<<-EOF"], &[("EOF", "\techo a\n", true)])).unwrap();
        assert_eq!(c.args, ["echo a\n"]);
        assert_eq!(s.as_deref(), Some("echo a"));
        let (c, s, _) = with_heredocs(&cl(&["cat <<A > /f"], &[("A", "x\n", false)])).unwrap();
        assert_eq!(c.args, ["cat <<A > /f\nx\nA"]);
        assert!(s.is_none());
        let (c, s, f) = with_heredocs(&cl(&["<<-S"], &[("S", "\t#!/bin/sh\necho\n", true)])).unwrap();
        assert_eq!(c.args, ["/dev/pipes/S"]);
        assert_eq!(s.as_deref(), Some("#!/bin/sh..."));
        assert_eq!(f, Some(("S".to_owned(), "#!/bin/sh\necho\n".to_owned())));
    }
}
