//! `ONBUILD` triggers: a stage built on an image runs the image's recorded triggers before its
//! own instructions; a stage built on an earlier stage runs that stage's `ONBUILD` instructions
//! (BuildKit's `initOnBuildTriggers`). Triggers are consumed there: the stage's own image does
//! not inherit them.

use super::dispatch::Converter;
use super::imageconfig::DockerExtras;
use super::plan;
use crate::error::{Error, ErrorKind};
use crate::instructions::{parse_command, Command, Instruction};
use crate::parser::Span;

impl Converter<'_> {
    /// Prepends the base's triggers to stage `i`'s commands, once. Returns whether they read
    /// other stages or images (which must then be resolved too).
    pub(super) fn init_triggers(&mut self, i: usize) -> Result<bool, Error> {
        let Some(plan) = self.plans.get(i) else { return Ok(false) };
        if plan.triggers_init {
            return Ok(false);
        }
        let span = self.df().stages.get(i).map_or(Span::new(0, 0), |s| s.span);
        let triggers: Vec<String> = match plan.parent {
            Some(p) => self
                .plans
                .get(p)
                .map(|pp| {
                    pp.commands
                        .iter()
                        .filter_map(|c| match &c.instruction {
                            Instruction::Onbuild(expr) => Some(expr.clone()),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            None if plan.context.is_some() || plan.base_name.eq_ignore_ascii_case("scratch") => Vec::new(),
            None => {
                let platform = self.stage_platform(i);
                let name = plan.base_name.clone();
                let base = self.resolve_base(&name, &platform).map_err(|e| e.or_at(self.file(), span))?;
                DockerExtras::from_raw(base.raw_config.as_deref()).onbuild
            }
        };
        let mut commands = Vec::with_capacity(triggers.len());
        let mut deps = Vec::with_capacity(triggers.len());
        for trigger in &triggers {
            let cmd = parse_trigger(trigger, span).map_err(|k| Error::at(self.file(), span, k))?;
            let d = plan::command_deps(&cmd, self.df(), &self.lexer, &self.req.named_contexts)
                .map_err(|k| Error::at(self.file(), span, k))?;
            commands.push(cmd);
            deps.push(d);
        }
        let new_deps = plan::has_deps(&deps);
        if let Some(plan) = self.plans.get_mut(i) {
            plan.total_steps += commands.len();
            commands.append(&mut plan.commands);
            deps.append(&mut plan.deps);
            plan.commands = commands;
            plan.deps = deps;
            plan.triggers_init = true;
        }
        Ok(new_deps)
    }
}

/// One trigger line as a command located at the stage's `FROM`.
fn parse_trigger(trigger: &str, span: Span) -> Result<Command, ErrorKind> {
    let parsed = crate::parser::parse(trigger.as_bytes()).map_err(|e| ErrorKind::Syntax(e.message))?;
    let [node] = parsed.nodes.as_slice() else {
        return Err(ErrorKind::InvalidInstruction("onbuild trigger should be a single expression".to_owned()));
    };
    let instruction = parse_command(node).map_err(ErrorKind::from)?;
    Ok(Command { instruction, span, original: node.original.clone(), comments: Vec::new() })
}
