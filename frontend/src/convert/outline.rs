//! The outline of a target (BuildKit's `outlineCapture` and `dispatchState.Outline`): while
//! the stages are dispatched, what each declares (`ARG`s with their values) and mounts
//! (secrets, SSH sockets) is recorded; the target's outline then gathers what it uses, from
//! itself, the stages it is built on and the stages it reads, each name once.

use std::collections::BTreeSet;

use super::dispatch::Converter;
use crate::instructions::{ArgDecl, Command, Instruction};
use crate::outline::{doc_comment, Outline, OutlineArg, OutlineMount};
use crate::parser::Span;

/// What one stage declared and mounted.
#[derive(Clone, Debug, Default)]
pub(crate) struct StageOutline {
    /// Each `ARG` name, with its own info; `None` when it takes the global `ARG`'s value (then
    /// the global one describes it).
    args: Vec<(String, Option<OutlineArg>)>,
    secrets: Vec<OutlineMount>,
    ssh: Vec<OutlineMount>,
}

impl Converter<'_> {
    /// Records an `ARG` of stage `stage` after it was dispatched (`resolved`: its names with
    /// their values).
    pub(super) fn capture_args(&mut self, stage: usize, cmd: &Command, resolved: &[ArgDecl]) {
        let Instruction::Arg(decls) = &cmd.instruction else { return };
        let Some(out) = self.captured.get_mut(stage) else { return };
        for (decl, r) in decls.iter().zip(resolved) {
            let inherits = decl.value.is_none()
                && !self.req.build_args.contains_key(&decl.key)
                && self.global_args.lookup(&decl.key).is_some();
            let info = (!inherits).then(|| OutlineArg {
                name: decl.key.clone(),
                value: r.value.clone().unwrap_or_default(),
                description: doc_comment(&cmd.comments, &decl.key),
                line: cmd.span.start_line,
            });
            out.args.push((decl.key.clone(), info));
        }
    }

    /// Records a secret or SSH mount of stage `stage` (the first use of an id counts).
    pub(super) fn capture_mount(&mut self, stage: usize, ssh: bool, id: &str, required: bool, span: Span) {
        let Some(out) = self.captured.get_mut(stage) else { return };
        let list = if ssh { &mut out.ssh } else { &mut out.secrets };
        if !list.iter().any(|m| m.name == id) {
            list.push(OutlineMount { name: id.to_owned(), required, line: span.start_line });
        }
    }

    /// The global `ARG`s (before the first `FROM`): name → (info, names its default uses).
    fn global_arg_infos(&self) -> Vec<(OutlineArg, BTreeSet<String>)> {
        let mut out: Vec<(OutlineArg, BTreeSet<String>)> = Vec::new();
        for cmd in &self.df().meta_args {
            let Instruction::Arg(decls) = &cmd.instruction else { continue };
            for d in decls {
                let mut deps = BTreeSet::new();
                if let (None, Some(default)) = (self.req.build_args.get(&d.key), &d.value) {
                    if let Ok(e) = self.lexer.process_word_with_matches(default, &self.global_args) {
                        deps = e.matched;
                        deps.remove(&d.key);
                    }
                }
                let info = OutlineArg {
                    name: d.key.clone(),
                    value: self.global_args.lookup(&d.key).unwrap_or_default().to_owned(),
                    description: doc_comment(&cmd.comments, &d.key),
                    line: cmd.span.start_line,
                };
                out.retain(|(a, _)| a.name != d.key);
                out.push((info, deps));
            }
        }
        out
    }

    /// Global `ARG`s a stage's `FROM` uses (and those of the stages it is built on).
    fn args_used_by_from(&self, i: usize) -> BTreeSet<String> {
        let mut used = BTreeSet::new();
        let mut at = Some(i);
        while let Some(s) = at {
            let Some(stage) = self.df().stages.get(s) else { break };
            for word in std::iter::once(&stage.base).chain(stage.platform.iter()) {
                if let Ok(e) = self.lexer.process_word_with_matches(word, &self.global_args) {
                    used.extend(e.matched);
                }
            }
            at = self.plans.get(s).and_then(|p| p.parent);
        }
        used
    }

    /// The outline of the target, after its stages were dispatched.
    pub(super) fn outline_of(&self) -> Outline {
        let globals = self.global_arg_infos();
        let mut out = Outline::default();
        let stage = self.df().stages.get(self.target);
        out.name = stage.and_then(|s| s.name.clone());
        out.description =
            stage.map(|s| doc_comment(&s.comments, s.name.as_deref().unwrap_or_default())).unwrap_or_default();
        let (mut seen_args, mut seen_secrets, mut seen_ssh) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        let mut visited = BTreeSet::new();
        let mut todo = vec![self.target];
        while let Some(i) = todo.pop() {
            if !visited.insert(i) {
                continue;
            }
            let captured = self.captured.get(i).cloned().unwrap_or_default();
            let mut used = self.args_used_by_from(i);
            used.extend(captured.args.iter().map(|(k, _)| k.clone()));
            // Global args used by the defaults of used global args count too.
            let mut pending: Vec<String> = used.iter().cloned().collect();
            while let Some(k) = pending.pop() {
                if let Some((_, deps)) = globals.iter().find(|(a, _)| a.name == k) {
                    for d in deps {
                        if used.insert(d.clone()) {
                            pending.push(d.clone());
                        }
                    }
                }
            }
            for k in &used {
                let own = captured.args.iter().rev().find(|(n, _)| n == k).and_then(|(_, info)| info.clone());
                let info = own.or_else(|| globals.iter().find(|(a, _)| &a.name == k).map(|(a, _)| a.clone()));
                if let Some(info) = info.filter(|_| seen_args.insert(k.clone())) {
                    out.args.push(info);
                }
            }
            out.secrets.extend(captured.secrets.into_iter().filter(|m| seen_secrets.insert(m.name.clone())));
            out.ssh.extend(captured.ssh.into_iter().filter(|m| seen_ssh.insert(m.name.clone())));
            if let Some(plan) = self.plans.get(i) {
                // Depth-first like BuildKit: the base stage, then the stages read.
                let deps: Vec<usize> = plan.deps.iter().flat_map(super::plan::CommandDeps::stages).collect();
                todo.extend(deps.into_iter().rev());
                todo.extend(plan.parent);
            }
        }
        out.args.sort_by_key(|a| a.line);
        out.secrets.sort_by_key(|m| m.line);
        out.ssh.sort_by_key(|m| m.line);
        out
    }
}
