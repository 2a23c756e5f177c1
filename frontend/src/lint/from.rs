//! Checks on every stage's `FROM` line with the global `ARG`s: `InvalidDefaultArgInFrom`,
//! `UndefinedArgInFrom`, `RedundantTargetPlatform` and `FromPlatformFlagConstDisallowed`
//! (BuildKit's `validateBaseImagesWithDefaultArgs` and the checks in `buildDispatchStates`).

use std::collections::BTreeSet;

use rbuild_solver::ir::Platform;

use super::{is_valid_reference, rules, Linter};
use crate::convert::{global_args, BuildRequest, EnvList};
use crate::instructions::{Dockerfile, Instruction};
use crate::parser::go_quote;
use crate::shell::Lexer;
use crate::suggest::did_you_mean;

/// Runs the `FROM` checks of every stage; `args` are the global args of the build (defaults,
/// build args and the `ARG`s before the first `FROM`).
pub(crate) fn check(lint: &mut Linter, req: &BuildRequest<'_>, df: &Dockerfile, lexer: &Lexer, args: &EnvList) {
    check_default_args(lint, req, df, lexer);
    // Names a FROM may use: every global ARG, with or without a value, and the predefined ones.
    let mut known: BTreeSet<String> = args.keys().map(str::to_owned).collect();
    for cmd in &df.meta_args {
        if let Instruction::Arg(decls) = &cmd.instruction {
            known.extend(decls.iter().map(|d| d.key.clone()));
        }
    }
    let options: Vec<&str> = known.iter().map(String::as_str).collect();
    for stage in &df.stages {
        let comments = stage.comments.as_slice();
        let undeclared = |lint: &mut Linter, unmatched: &BTreeSet<String>| {
            for name in unmatched.iter().filter(|n| !known.contains(*n)) {
                let mut msg = format!("FROM argument '{name}' is not declared");
                if let Some(s) = did_you_mean(name, &options, true) {
                    msg.push_str(&format!(" (did you mean {s}?)"));
                }
                lint.report(&rules::UNDEFINED_ARG_IN_FROM, stage.span, comments, msg);
            }
        };
        if let Ok(e) = lexer.process_word_with_matches(&stage.base, args) {
            undeclared(lint, &e.unmatched);
        }
        let Some(platform) = &stage.platform else { continue };
        let Ok(e) = lexer.process_word_with_matches(platform, args) else { continue };
        undeclared(lint, &e.unmatched);
        if e.matched.len() == 1
            && e.unmatched.is_empty()
            && e.matched.contains("TARGETPLATFORM")
            && args.lookup("TARGETPLATFORM") == Some(e.result.as_str())
        {
            let msg = format!(
                "Setting platform to predefined {platform} in FROM is redundant as this is the default behavior"
            );
            lint.report(&rules::REDUNDANT_TARGET_PLATFORM, stage.span, comments, msg);
        }
        if e.matched.is_empty() && e.unmatched.is_empty() {
            let Ok(p) = crate::convert::values::parse_platform(&e.result, &Platform::host()) else { continue };
            let name = stage.name.as_deref().unwrap_or_default();
            if !name.contains(&p.os) && !name.contains(&p.architecture) {
                let msg = format!("FROM --platform flag should not use constant value {}", go_quote(&e.result));
                lint.report(&rules::FROM_PLATFORM_FLAG_CONST_DISALLOWED, stage.span, comments, msg);
            }
        }
    }
}

/// Each base must also be a valid image name when no build args are given (only the
/// defaults of the global `ARG`s).
fn check_default_args(lint: &mut Linter, req: &BuildRequest<'_>, df: &Dockerfile, lexer: &Lexer) {
    let defaults_only = BuildRequest { build_args: Default::default(), ..req.clone() };
    // When the defaults do not even expand, the build fails on its own; nothing to add.
    let Ok(args) = global_args(&defaults_only, df, lexer, &Platform::host()) else { return };
    for stage in &df.stages {
        let Ok(base) = lexer.process_word(&stage.base, &args) else { return };
        if !is_valid_reference(&base) {
            let msg = format!("Default value for ARG {} results in empty or invalid base image name", stage.base);
            lint.report(&rules::INVALID_DEFAULT_ARG_IN_FROM, stage.span, &[], msg);
        }
    }
}
