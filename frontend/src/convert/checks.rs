//! The build checks that need a stage's state, run as each command is dispatched, before it
//! changes the state (BuildKit runs them in `dispatch`, `dispatchEnv`, `dispatchLabel`,
//! `dispatchArg`, `dispatchWorkdir`, `dispatchCmd`, `dispatchEntrypoint`,
//! `dispatchHealthcheck`, `dispatchCopy` and `resolveBaseImage`).

use std::collections::BTreeSet;

use rbuild_solver::ir::Platform;

use super::dispatch::Converter;
use super::source::{classify, AddSource};
use super::state::{EnvList, StageState};
use super::ResolvedImage;
use crate::instructions::{ArgDecl, Command, Instruction};
use crate::lint::{copy_ignored, rules, Rule};
use crate::parser::{go_quote, KeyValue, Span};
use crate::shell::Lexer;
use crate::suggest::did_you_mean;

/// `ARG`s that never reach the environment (and so are never undefined).
const NON_ENV_ARGS: [&str; 2] = ["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// What the checks remember about a stage.
#[derive(Clone, Debug, Default)]
pub(crate) struct StageChecks {
    /// A `WORKDIR` ran in this stage or a stage it is built on (later relative ones are fine).
    workdir_set: bool,
    /// Where this stage last set `CMD`, `ENTRYPOINT`, `HEALTHCHECK`.
    cmd: Option<Span>,
    entrypoint: Option<Span>,
    healthcheck: Option<Span>,
}

impl StageChecks {
    /// For a stage built on another: the working directory counts, the instructions used once
    /// per stage start over.
    pub(crate) fn for_child(&self) -> StageChecks {
        StageChecks { workdir_set: self.workdir_set, ..StageChecks::default() }
    }
}

/// BuildKit's secret-looking names: one of the `_`-separated parts of the name (any case) is
/// `apikey`, `auth`, `credential(s)`, `key`, `password`, `pword`, `passwd`, `secret` or
/// `token`, and none is `public`, `file` or `version`.
fn looks_secret(key: &str) -> bool {
    const DENY: [&str; 10] =
        ["apikey", "auth", "credential", "credentials", "key", "password", "pword", "passwd", "secret", "token"];
    const ALLOW: [&str; 3] = ["public", "file", "version"];
    // `(?:_|^)TOKEN(?:_|$)`: any `_`-separated part equal to the token.
    let parts: Vec<String> = key.split('_').map(str::to_lowercase).collect();
    let has = |set: &[&str]| parts.iter().any(|p| set.contains(&p.as_str()));
    has(&DENY) && !has(&ALLOW)
}

/// `os/arch[/variant]` as containerd formats a normalized platform.
fn format_platform(os: &str, arch: &str, variant: Option<&str>) -> String {
    let variant = match (arch, variant.unwrap_or_default()) {
        ("arm64", "v8" | "8") | ("amd64", "v1") => "",
        ("arm", "") => "v7",
        (_, v) => v,
    };
    if variant.is_empty() {
        format!("{os}/{arch}")
    } else {
        format!("{os}/{arch}/{variant}")
    }
}

impl Converter<'_> {
    fn report(&self, rule: &'static Rule, span: Span, comments: &[String], message: String) {
        self.lint.borrow_mut().report(rule, span, comments, message);
    }

    /// `InvalidBaseImagePlatform`: the image resolved for a stage's base is for another OS or
    /// architecture than the stage is built for.
    pub(super) fn check_base_platform(&self, name: &str, expected: &Platform, image: &ResolvedImage, span: Span) {
        let os = image.config.os().to_string();
        let arch = image.config.architecture().to_string();
        if os == expected.os && arch == expected.architecture {
            return;
        }
        let actual = format_platform(&os, &arch, image.config.variant().as_deref());
        let want = format_platform(&expected.os, &expected.architecture, expected.variant.as_deref());
        let msg = format!(
            "Base image {name} was pulled with platform {}, expected {} for current build",
            go_quote(&actual),
            go_quote(&want)
        );
        self.report(&rules::INVALID_BASE_IMAGE_PLATFORM, span, &[], msg);
    }

    /// The checks of one command, with the state before it.
    pub(super) fn check_command(&self, st: &mut StageState, cmd: &Command) {
        let comments = cmd.comments.as_slice();
        let name = cmd.keyword_as_written();
        let at = |rule: &'static Rule, msg: String| self.report(rule, cmd.span, comments, msg);
        match &cmd.instruction {
            Instruction::Env(kvs) => {
                self.check_legacy_format(kvs, name, cmd);
                for kv in kvs {
                    let key = self.lexer.process_word(&kv.key, &st.env).unwrap_or_else(|_| kv.key.clone());
                    if looks_secret(&key) {
                        at(&rules::SECRETS_USED_IN_ARG_OR_ENV, secret_message("ENV", &key));
                    }
                }
            }
            Instruction::Label(kvs) => self.check_legacy_format(kvs, name, cmd),
            Instruction::Arg(decls) => {
                for d in decls.iter().filter(|d| looks_secret(&d.key)) {
                    at(&rules::SECRETS_USED_IN_ARG_OR_ENV, secret_message("ARG", &d.key));
                }
                self.check_arg_vars(st, cmd, decls);
            }
            Instruction::Workdir(path) => {
                if !st.checks.workdir_set {
                    let path = self.lexer.process_word(path, &st.env).unwrap_or_else(|_| path.clone());
                    if !path.starts_with('/') {
                        let msg = format!(
                            "Relative workdir {} can have unexpected results if the base image changes",
                            go_quote(&path)
                        );
                        at(&rules::WORKDIR_RELATIVE_PATH, msg);
                    }
                }
                st.checks.workdir_set = true;
            }
            Instruction::Cmd(c) | Instruction::Entrypoint(c) => {
                let slot = if matches!(cmd.instruction, Instruction::Cmd(_)) {
                    &mut st.checks.cmd
                } else {
                    &mut st.checks.entrypoint
                };
                self.check_used_once(slot, name, cmd);
                if c.prepend_shell && st.config.shell.is_empty() {
                    let msg = format!(
                        "JSON arguments recommended for {name} to prevent unintended behavior related to OS signals"
                    );
                    at(&rules::JSON_ARGS_RECOMMENDED, msg);
                }
            }
            Instruction::Healthcheck(_) => self.check_used_once(&mut st.checks.healthcheck, name, cmd),
            Instruction::Expose(ports) => {
                let words = ports.iter().filter_map(|p| self.lexer.process_words(p, &st.env).ok()).flatten();
                for raw in words {
                    let (mapped, proto) = expose_parts(&raw);
                    if proto != proto.to_lowercase() {
                        at(
                            &rules::EXPOSE_PROTO_CASING,
                            format!("Defined protocol '{raw}' in EXPOSE instruction should be lowercase"),
                        );
                    }
                    if mapped {
                        let msg = format!(
                            "EXPOSE instruction should not define an IP address or host-port mapping, found '{raw}'"
                        );
                        at(&rules::EXPOSE_INVALID_FORMAT, msg);
                    }
                }
            }
            Instruction::Copy(c) if c.from.as_deref().is_none_or(str::is_empty) => {
                self.check_ignored(st, cmd, &c.paths.sources, "Copy");
            }
            Instruction::Add(a) => self.check_ignored(st, cmd, &a.paths.sources, "Add"),
            _ => {}
        }
        for (word, raw) in expanded_words(&cmd.instruction) {
            let lexer = if raw { Lexer::new('\\').with_skip_process_quotes(true) } else { self.lexer };
            if let Ok(e) = lexer.process_word_with_matches(word, &st.env) {
                self.report_undefined(st, cmd, &e.unmatched, &[], &st.env);
            }
        }
    }

    fn check_legacy_format(&self, kvs: &[KeyValue], name: &str, cmd: &Command) {
        for _ in kvs.iter().filter(|kv| !kv.has_equals) {
            let msg = format!("\"{name} key=value\" should be used instead of legacy \"{name} key value\" format");
            self.report(&rules::LEGACY_KEY_VALUE_FORMAT, cmd.span, &cmd.comments, msg);
        }
    }

    /// `MultipleInstructionsDisallowed`, reported at the earlier instruction (the one that has
    /// no effect).
    fn check_used_once(&self, slot: &mut Option<Span>, name: &str, cmd: &Command) {
        if let Some(previous) = slot.replace(cmd.span) {
            let msg = format!(
                "Multiple {name} instructions should not be used in the same stage because only the last one will be used"
            );
            self.report(&rules::MULTIPLE_INSTRUCTIONS_DISALLOWED, previous, &cmd.comments, msg);
        }
    }

    /// `CopyIgnoredFile` for the build-context sources of `COPY`/`ADD`.
    fn check_ignored(&self, st: &StageState, cmd: &Command, sources: &[String], verb: &str) {
        for src in sources {
            let Ok(src) = self.lexer.process_word(src, &st.env) else { continue };
            if verb == "Add" && !matches!(classify(&src), Ok(AddSource::Local)) {
                continue;
            }
            if copy_ignored(&self.req.context_excludes, &src) {
                let clean = clean_path(&src);
                let msg = format!("Attempting to {verb} file {} that is excluded by .dockerignore", go_quote(&clean));
                self.report(&rules::COPY_IGNORED_FILE, cmd.span, &cmd.comments, msg);
            }
        }
    }

    /// `UndefinedVar` for an `ARG`'s defaults: each is expanded with the environment so far,
    /// including the earlier names of the same instruction.
    fn check_arg_vars(&self, st: &StageState, cmd: &Command, decls: &[ArgDecl]) {
        let mut env = st.env.clone();
        let mut declared: Vec<String> = Vec::new();
        for d in decls {
            let value = match (self.req.build_args.get(&d.key), &d.value) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(default)) => match self.lexer.process_word_with_matches(default, &env) {
                    Ok(e) => {
                        self.report_undefined(st, cmd, &e.unmatched, &declared, &env);
                        Some(e.result)
                    }
                    Err(_) => None,
                },
                (None, None) => self.global_args.lookup(&d.key).map(str::to_owned),
            };
            if let Some(v) = value.filter(|_| !NON_ENV_ARGS.contains(&d.key.as_str())) {
                env.set(&d.key, &v);
            }
            declared.push(d.key.clone());
        }
    }

    /// Reports the names in `unmatched` that no `ARG` of the stage (or `extra`) declares.
    fn report_undefined(
        &self,
        st: &StageState,
        cmd: &Command,
        unmatched: &BTreeSet<String>,
        extra: &[String],
        env: &EnvList,
    ) {
        let declared = |n: &str| st.build_args.iter().any(|a| a.key == n) || extra.iter().any(|k| k == n);
        let mut options: Vec<&str> = env.keys().collect();
        options.sort_unstable();
        for name in unmatched.iter().filter(|n| !declared(n.as_str()) && !NON_ENV_ARGS.contains(&n.as_str())) {
            let mut msg = format!("Usage of undefined variable '${name}'");
            if let Some(s) = did_you_mean(name, &options, true) {
                msg.push_str(&format!(" (did you mean ${s}?)"));
            }
            self.report(&rules::UNDEFINED_VAR, cmd.span, &cmd.comments, msg);
        }
    }
}

/// An `EXPOSE` port spec `[[ip:]host:]port[/proto]`: whether it has an IP or a host port, and
/// its protocol as written.
fn expose_parts(raw: &str) -> (bool, &str) {
    let mut parts = raw.rsplitn(2, ':');
    let container = parts.next().unwrap_or_default();
    let mapped = parts.next().is_some();
    (mapped, container.split_once('/').map_or("", |(_, proto)| proto))
}

fn secret_message(instruction: &str, key: &str) -> String {
    format!("Do not use ARG or ENV instructions for sensitive data ({instruction} {})", go_quote(key))
}

/// Go's `filepath.Clean`, as the message shows the path.
fn clean_path(p: &str) -> String {
    let rooted = p.starts_with('/');
    let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    match (rooted, parts.is_empty()) {
        (true, _) => format!("/{}", parts.join("/")),
        (false, true) => ".".to_owned(),
        (false, false) => parts.join("/"),
    }
}

/// The words BuildKit expands when dispatching an instruction (its `Expand` and `ExpandRaw`),
/// each with whether it is expanded raw (heredoc bodies: quotes kept, `\` as escape). `ARG`
/// defaults are handled apart; `RUN` commands, `CMD`, `ENTRYPOINT`, `EXPOSE`, `SHELL`,
/// `HEALTHCHECK` and `ONBUILD` are not expanded.
fn expanded_words(i: &Instruction) -> Vec<(&str, bool)> {
    let mut out: Vec<(&str, bool)> = Vec::new();
    match i {
        Instruction::Env(kvs) | Instruction::Label(kvs) => {
            for kv in kvs {
                out.push((kv.key.as_str(), false));
                out.push((kv.value.as_str(), false));
            }
        }
        Instruction::Copy(c) => {
            out.extend([&c.chown, &c.chmod].into_iter().flatten().map(|w| (w.as_str(), false)));
            out.extend(c.paths.sources.iter().map(|w| (w.as_str(), false)));
            out.push((c.paths.dest.as_str(), false));
            out.extend(c.paths.contents.iter().filter(|h| h.expand).map(|h| (h.data.as_str(), true)));
        }
        Instruction::Add(a) => {
            out.extend([&a.chown, &a.chmod, &a.checksum].into_iter().flatten().map(|w| (w.as_str(), false)));
            out.extend(a.paths.sources.iter().map(|w| (w.as_str(), false)));
            out.push((a.paths.dest.as_str(), false));
            out.extend(a.paths.contents.iter().filter(|h| h.expand).map(|h| (h.data.as_str(), true)));
        }
        Instruction::Workdir(w) | Instruction::User(w) | Instruction::StopSignal(w) => out.push((w.as_str(), false)),
        Instruction::Volume(v) => out.extend(v.iter().map(|w| (w.as_str(), false))),
        Instruction::Run(r) => out.extend(r.mounts.iter().map(|w| (w.as_str(), false))),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for key in
            ["SECRET_PASSPHRASE", "SUPER_Secret", "password", "super_duper_secret_token", "auth", "git_key", "apikey"]
        {
            assert!(looks_secret(key), "{key}");
        }
        for key in ["sunflower", "PUBLIC_KEY", "public_token", "SECRET_PASSPHRASE_FILE", "AUTH_MODULE_VERSION", "keys"]
        {
            assert!(!looks_secret(key), "{key}");
        }
    }

    #[test]
    fn platforms_format_normalized() {
        assert_eq!(format_platform("linux", "arm64", Some("v8")), "linux/arm64");
        assert_eq!(format_platform("linux", "arm", None), "linux/arm/v7");
        assert_eq!(format_platform("linux", "amd64", None), "linux/amd64");
    }
}
