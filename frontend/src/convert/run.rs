//! `RUN`: an exec op on the stage's filesystem (BuildKit's `dispatchRun`).

use rbuild_solver::ir::{ExecOp, Input, NetworkMode, Op, SecurityMode};

use super::dispatch::Converter;
use super::state::{Progress, StageState};
use crate::error::{Error, ErrorKind};
use crate::instructions::{ArgDecl, Command, CommandLine, RunInstruction};
use crate::parser::{chomp_heredoc_content, parse_heredoc};

impl Converter<'_> {
    /// Never variable-expanded by the frontend: the shell does that at run time, with the
    /// build environment (config `ENV`s plus in-scope `ARG`s) as process environment.
    pub(super) fn dispatch_run(
        &mut self,
        st: &mut StageState,
        progress: &mut Progress,
        cmd: &Command,
        run: &RunInstruction,
    ) -> Result<(), Error> {
        let (command, summary) = with_heredocs(&run.command)?;
        let args = Self::with_shell(st, &command);
        let network = match run.network.as_deref() {
            Some("none") => NetworkMode::None,
            Some("host") => NetworkMode::Host,
            _ => NetworkMode::Default,
        };
        let security = match run.security.as_deref() {
            Some("insecure") => SecurityMode::Insecure,
            _ => SecurityMode::Sandbox,
        };
        let op = Op::Exec(ExecOp {
            rootfs: st.fs,
            args: args.clone(),
            env: st.env.to_strings(),
            cwd: st.workdir.clone(),
            user: st.user.clone(),
            network,
            security,
            platform: st.platform.clone(),
            mounts: Vec::new(),
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
}

/// Folds heredoc bodies into the command as BuildKit does: a lone `<<EOF` runs the body as
/// the shell command; otherwise the bodies are appended so the shell reads them. Returns the
/// command and, for the lone form, the summary shown in the progress name.
fn with_heredocs(c: &CommandLine) -> Result<(CommandLine, Option<String>), Error> {
    if c.files.is_empty() {
        return Ok((c.clone(), None));
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
        out.args = vec![data];
        return Ok((out, Some(summarize_heredoc(&first.data))));
    }
    let mut script = line.clone();
    for f in &c.files {
        script.push('\n');
        script.push_str(&f.data);
        script.push_str(&f.name);
    }
    out.args = vec![script];
    Ok((out, None))
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
        let (c, s) = with_heredocs(&cl(&["<<EOF"], &[("EOF", "echo a\necho b\n", false)])).unwrap();
        assert_eq!(c.args, ["echo a\necho b\n"]);
        assert_eq!(s.as_deref(), Some("echo a..."));
        let (c, s) = with_heredocs(&cl(&["<<-EOF"], &[("EOF", "\techo a\n", true)])).unwrap();
        assert_eq!(c.args, ["echo a\n"]);
        assert_eq!(s.as_deref(), Some("echo a"));
        let (c, s) = with_heredocs(&cl(&["cat <<A > /f"], &[("A", "x\n", false)])).unwrap();
        assert_eq!(c.args, ["cat <<A > /f\nx\nA"]);
        assert!(s.is_none());
    }
}
