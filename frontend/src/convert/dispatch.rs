//! The conversion driver: resolves the bases of reachable stages, then dispatches each
//! reachable stage's instructions in file order (BuildKit's `toDispatchState` + `dispatch`).

use std::collections::BTreeMap;

use rbuild_solver::ir::{GraphBuilder, Input, Op, OpId, Platform, SourceOp, VertexMeta};

use super::plan::{self, CommandDeps, StagePlan};
use super::state::{uppercase_cmd, EnvList, ImageConfig, Progress, StageState};
use super::{BuildDefinition, BuildRequest, ImageResolver, ResolvedImage, Warning};
use crate::error::{source_span, Error, ErrorKind};
use crate::instructions::{Command, Dockerfile, Instruction};
use crate::parser::Span;
use crate::shell::{Env, Lexer};

/// A resolved image and whether it has no layers (then it is built on an empty tree).
#[derive(Clone, Debug)]
struct BaseImage {
    resolved: ResolvedImage,
    empty: bool,
}

/// Converts one Dockerfile; holds the graph under construction.
pub(crate) struct Converter<'a> {
    pub(super) req: &'a BuildRequest<'a>,
    df: &'a Dockerfile,
    resolver: &'a dyn ImageResolver,
    pub(super) lexer: Lexer,
    pub(super) global_args: EnvList,
    pub(super) plans: Vec<StagePlan>,
    target: usize,
    graph: GraphBuilder,
    context: Option<Input>,
    images: BTreeMap<(String, Platform), BaseImage>,
    /// Final state of each dispatched stage.
    pub(super) done: Vec<Option<StageState>>,
    /// Base images whose platform is not the stage's (BuildKit's `InvalidBaseImagePlatform`).
    platform_warnings: Vec<Warning>,
}

impl<'a> Converter<'a> {
    /// Plans the conversion: build args, stage bases, target, `COPY --from` links.
    pub(crate) fn new(
        req: &'a BuildRequest<'a>,
        df: &'a Dockerfile,
        resolver: &'a dyn ImageResolver,
    ) -> Result<Converter<'a>, Error> {
        let lexer = Lexer::new(df.escape);
        let global_args = plan::global_args(req, df, &lexer, &Platform::host())?;
        let plans = plan::plan_stages(req, df, &lexer, &global_args)?;
        let target = plan::target_index(req, df)?;
        Ok(Converter {
            req,
            df,
            resolver,
            lexer,
            global_args,
            done: vec![None; plans.len()],
            plans,
            target,
            graph: GraphBuilder::new(),
            context: None,
            images: BTreeMap::new(),
            platform_warnings: Vec::new(),
        })
    }

    /// A stage's name as BuildKit reports it (`stage-N` when unnamed).
    pub(super) fn stage_label(&self, i: usize) -> String {
        self.df.stages.get(i).and_then(|s| s.name.clone()).unwrap_or_else(|| format!("stage-{i}"))
    }

    pub(super) fn df(&self) -> &'a Dockerfile {
        self.df
    }

    pub(super) fn file(&self) -> &'a str {
        self.req.filename.as_str()
    }

    /// Converts every stage the target needs.
    pub(crate) fn run(mut self) -> Result<BuildDefinition, Error> {
        let mut reachable = plan::reachable(&self.plans, self.target);
        self.check_supported(&reachable)?;
        // Base images may carry ONBUILD triggers, and triggers may read further stages or
        // images: resolve until nothing new is needed (BuildKit's `resolveStages`).
        loop {
            self.resolve_images(&reachable)?;
            let mut new_deps = false;
            for &i in &reachable {
                new_deps |= self.init_triggers(i)?;
            }
            if !new_deps {
                break;
            }
            reachable = plan::reachable(&self.plans, self.target);
        }
        self.check_supported(&reachable)?;
        for i in 0..self.plans.len() {
            if reachable.contains(&i) {
                let state = self.dispatch_stage(i)?;
                if let Some(slot) = self.done.get_mut(i) {
                    *slot = Some(state);
                }
            }
        }
        let Some(Some(last)) = self.done.get(self.target).cloned() else {
            return Err(ErrorKind::NoStages.into());
        };
        let c = &last.config;
        let extra_config =
            super::imageconfig::extra_config(c.healthcheck.as_ref(), &c.onbuild, &c.shell, c.args_escaped);
        let mut warnings = std::mem::take(&mut self.platform_warnings);
        warnings.extend(self.unused_build_args(&reachable));
        Ok(BuildDefinition {
            graph: self.graph.build(),
            target: last.fs,
            base: last.base_image,
            config: last.config.to_oci(),
            author: last.config.author.clone(),
            shell: (!last.config.shell.is_empty()).then(|| last.config.shell.clone()),
            extra_config,
            history: last.history,
            warnings,
        })
    }

    /// Fails with every use of a feature rbuild cannot build yet in the reachable stages.
    fn check_supported(&self, reachable: &std::collections::BTreeSet<usize>) -> Result<(), Error> {
        let diags: Vec<_> = reachable
            .iter()
            .filter_map(|i| self.plans.get(*i))
            .flat_map(|p| plan::unsupported(self.file(), &p.commands))
            .collect();
        match Error::collect(diags) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    pub(super) fn stage_platform(&self, i: usize) -> Platform {
        self.plans.get(i).and_then(|p| p.platform.clone()).unwrap_or_else(|| self.req.platform.clone())
    }

    /// Resolves the images reachable stages start from, copy from or mount, before anything is
    /// dispatched (so an unreachable stage's image is never looked up).
    fn resolve_images(&mut self, reachable: &std::collections::BTreeSet<usize>) -> Result<(), Error> {
        for &i in reachable {
            let Some(plan) = self.plans.get(i) else { continue };
            let stage_span = self.df.stages.get(i).map_or(Span::new(0, 0), |s| s.span);
            let mut wanted: Vec<(String, Platform, Span)> = Vec::new();
            if plan.parent.is_none() && !plan.base_name.eq_ignore_ascii_case("scratch") {
                wanted.push((plan.base_name.clone(), self.stage_platform(i), stage_span));
            }
            for (deps, cmd) in plan.deps.iter().zip(&plan.commands) {
                for r in deps.images().filter(|r| !r.eq_ignore_ascii_case("scratch")) {
                    wanted.push((r.to_owned(), self.req.platform.clone(), cmd.span));
                }
            }
            for (reference, platform, span) in wanted {
                self.resolve(&reference, &platform).map_err(|e| e.or_at(self.file(), span))?;
            }
        }
        Ok(())
    }

    /// The resolved image (cached per reference and platform).
    pub(super) fn resolve_base(&mut self, reference: &str, platform: &Platform) -> Result<ResolvedImage, Error> {
        Ok(self.resolve(reference, platform)?.resolved)
    }

    fn resolve(&mut self, reference: &str, platform: &Platform) -> Result<BaseImage, Error> {
        let key = (reference.to_owned(), platform.clone());
        if let Some(b) = self.images.get(&key) {
            return Ok(b.clone());
        }
        check_reference(reference)?;
        let resolved = self
            .resolver
            .resolve(reference, platform)
            .map_err(|source| Error::new(ErrorKind::ResolveImage { reference: reference.to_owned(), source }))?;
        let rootfs_empty = resolved.config.rootfs().diff_ids().is_empty();
        let all_empty =
            resolved.config.history().as_ref().is_none_or(|h| h.iter().all(|e| e.empty_layer().unwrap_or(false)));
        let base = BaseImage { resolved, empty: rootfs_empty && all_empty };
        self.images.insert(key, base.clone());
        Ok(base)
    }

    /// Warns when a base image is for another platform than the stage's (a single-platform
    /// image is used whatever its platform, as BuildKit does; its binaries may then not be what
    /// the stage's RUN steps expect).
    fn check_base_platform(&mut self, image: &ResolvedImage, want: &Platform, span: Span) {
        let config = &image.config;
        let arch = config.architecture().to_string();
        if arch.is_empty() {
            return;
        }
        let mut text = format!("{}/{arch}", config.os());
        if let Some(v) = config.variant().as_deref().filter(|v| !v.is_empty()) {
            text.push('/');
            text.push_str(v);
        }
        let Ok(actual) = super::values::parse_platform(&text, want) else { return };
        if actual == *want {
            return;
        }
        let message = format!(
            "InvalidBaseImagePlatform: Base image {} was pulled with platform \"{actual}\", expected \"{want}\" for current build",
            image.reference
        );
        self.platform_warnings.push(Warning { span: Some(source_span(self.file(), span)), message });
    }

    /// The image's source op (named like BuildKit's `FROM` vertex), `None` for a layerless
    /// image.
    fn image_fs(
        &mut self,
        base: &BaseImage,
        platform: &Platform,
        name: String,
        span: Span,
    ) -> Result<Option<Input>, Error> {
        if base.empty {
            return Ok(None);
        }
        let op = Op::Source(SourceOp::Image {
            reference: base.resolved.reference.clone(),
            digest: Some(base.resolved.digest.clone()),
            platform: platform.clone(),
        });
        let id = self.add_op(op, name, span, false)?;
        Ok(Some(Input::of(id)))
    }

    fn dispatch_stage(&mut self, i: usize) -> Result<StageState, Error> {
        let (Some(plan), Some(stage)) = (self.plans.get(i).cloned(), self.df.stages.get(i)) else {
            return Err(ErrorKind::NoStages.into());
        };
        let platform = self.stage_platform(i);
        let mut progress = Progress {
            stage: plan.display.clone(),
            index: 0,
            total: plan.total_steps,
            platform: self.req.multi_platform.then(|| platform.to_string()),
        };
        let mut state = if let Some(parent) = plan.parent {
            let Some(Some(parent_state)) = self.done.get(parent).cloned() else {
                return Err(ErrorKind::NoStages.into());
            };
            parent_state
        } else if plan.base_name.eq_ignore_ascii_case("scratch") {
            StageState::new(None, ImageConfig::scratch(), platform.clone())
        } else {
            let base = self.resolve(&plan.base_name, &platform).map_err(|e| e.or_at(self.file(), stage.span))?;
            self.check_base_platform(&base.resolved, &platform, stage.span);
            let name = progress.name(&format!("FROM {}", pinned(&base.resolved)));
            let fs = self.image_fs(&base, &platform, name, stage.span)?;
            let mut st = StageState::new(fs, ImageConfig::from_resolved(&base.resolved), platform);
            st.base_image = Some(base.resolved);
            st
        };
        state.apply_base_config();
        // Triggers are consumed by the stage built on them; they are not inherited.
        state.config.onbuild.clear();
        for (cmd, deps) in plan.commands.iter().zip(&plan.deps) {
            if self.req.multi_platform {
                // A stage built on another stage runs on that stage's platform.
                let suffix = super::state::target_suffix(&state.platform, &state.env);
                progress.platform = Some(format!("{}{suffix}", state.platform));
            }
            self.dispatch(&mut state, &mut progress, i, cmd, deps).map_err(|e| e.or_at(self.file(), cmd.span))?;
        }
        Ok(state)
    }

    fn dispatch(
        &mut self,
        st: &mut StageState,
        progress: &mut Progress,
        stage: usize,
        cmd: &Command,
        deps: &CommandDeps,
    ) -> Result<(), Error> {
        match &cmd.instruction {
            Instruction::Env(kvs) => self.dispatch_env(st, kvs),
            Instruction::Label(kvs) => self.dispatch_label(st, kvs),
            Instruction::Arg(decls) => self.dispatch_arg(st, decls),
            Instruction::Cmd(c) => {
                self.dispatch_cmd(st, c);
                Ok(())
            }
            Instruction::Entrypoint(c) => {
                self.dispatch_entrypoint(st, c);
                Ok(())
            }
            Instruction::Expose(ports) => self.dispatch_expose(st, ports),
            Instruction::User(u) => self.dispatch_user(st, u),
            Instruction::Volume(v) => self.dispatch_volume(st, v),
            Instruction::StopSignal(s) => self.dispatch_stop_signal(st, s),
            Instruction::Shell(s) => {
                st.config.shell = s.clone();
                st.commit(format!("SHELL {}", super::state::go_list(s)), None);
                Ok(())
            }
            Instruction::Maintainer(m) => {
                st.config.author = Some(m.clone());
                st.commit(format!("MAINTAINER {m}"), None);
                Ok(())
            }
            Instruction::Workdir(p) => self.dispatch_workdir(st, progress, cmd, p),
            Instruction::Run(r) => self.dispatch_run(st, progress, stage, cmd, r, deps),
            Instruction::Copy(c) => self.dispatch_copy(st, progress, stage, cmd, c, deps.copy_from.clone()),
            Instruction::Add(a) => self.dispatch_add(st, progress, cmd, a),
            Instruction::Onbuild(expr) => {
                st.config.onbuild.push(expr.clone());
                Ok(())
            }
            Instruction::Healthcheck(h) => {
                let h = super::imageconfig::HealthConfig::from_instruction(h);
                st.commit(format!("HEALTHCHECK {}", h.history_text()), None);
                st.config.healthcheck = Some(h);
                Ok(())
            }
        }
    }

    /// Expands variables in one word with `env`.
    pub(super) fn expand(&self, word: &str, env: &dyn Env) -> Result<String, Error> {
        self.lexer
            .process_word(word, env)
            .map_err(|source| ErrorKind::Expansion { word: word.to_owned(), source }.into())
    }

    /// Expands variables and splits into words.
    pub(super) fn expand_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, Error> {
        self.lexer
            .process_words(word, env)
            .map_err(|source| ErrorKind::Expansion { word: word.to_owned(), source }.into())
    }

    /// The instruction text for progress names (BuildKit's `processCmdEnv` + `uppercaseCmd`):
    /// variables expanded, `raw` keeping quotes and unset variables as written (for `RUN`).
    pub(super) fn display_text(&self, original: &str, env: &EnvList, raw: bool) -> String {
        let lexer = if raw { self.lexer.with_raw_quotes(true).with_skip_unset_env(true) } else { self.lexer };
        uppercase_cmd(&lexer.process_word(original, env).unwrap_or_else(|_| original.to_owned()))
    }

    /// Resolves (cached) an image for `COPY --from` or a mount: its filesystem, `None` when
    /// empty.
    pub(super) fn image_input(&mut self, reference: &str, span: Span) -> Result<Option<Input>, Error> {
        if reference.eq_ignore_ascii_case("scratch") {
            return Ok(None);
        }
        self.copy_image_fs(reference, span)
    }

    /// Adds an op with the given metadata.
    pub(super) fn add_op_meta(&mut self, op: Op, meta: VertexMeta) -> Result<OpId, Error> {
        Ok(self.graph.add(op, meta)?)
    }

    /// Adds an op with its progress name and span.
    pub(super) fn add_op(&mut self, op: Op, name: String, span: Span, cacheable_step: bool) -> Result<OpId, Error> {
        let meta = VertexMeta {
            name,
            span: Some(source_span(self.file(), span)),
            ignore_cache: cacheable_step && self.req.no_cache,
        };
        Ok(self.graph.add(op, meta)?)
    }

    /// The build context source, added on first use.
    pub(super) fn context_input(&mut self) -> Result<Input, Error> {
        if let Some(c) = self.context {
            return Ok(c);
        }
        let op = Op::Source(SourceOp::Local { name: "context".to_owned(), exclude: self.req.context_excludes.clone() });
        let meta = VertexMeta { name: "[internal] load build context".to_owned(), ..VertexMeta::default() };
        let input = Input::of(self.graph.add(op, meta)?);
        self.context = Some(input);
        Ok(input)
    }

    /// The filesystem of `COPY --from=<image>`.
    pub(super) fn copy_image_fs(&mut self, reference: &str, span: Span) -> Result<Option<Input>, Error> {
        let platform = self.req.platform.clone();
        let base = self.resolve(reference, &platform)?;
        let name = format!("FROM {}", pinned(&base.resolved));
        self.image_fs(&base, &platform, name, span)
    }
}

/// `reference@digest`, as BuildKit names the `FROM` vertex.
fn pinned(img: &ResolvedImage) -> String {
    if img.reference.contains('@') {
        img.reference.clone()
    } else {
        format!("{}@{}", img.reference, img.digest)
    }
}

/// Rejects references no registry accepts (uppercase repository, whitespace), as BuildKit's
/// `ParseNormalizedNamed` does before resolving.
fn check_reference(reference: &str) -> Result<(), Error> {
    let bad = |reason: &str| {
        Err(Error::new(ErrorKind::InvalidReference { reference: reference.to_owned(), reason: reason.to_owned() }))
    };
    if reference.is_empty() || reference.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("invalid reference format");
    }
    let name = reference.split('@').next().unwrap_or_default();
    // The first component is a registry host when it looks like one.
    let path = match name.split_once('/') {
        Some((d, p)) if d.contains(['.', ':']) || d == "localhost" || d.chars().any(|c| c.is_ascii_uppercase()) => p,
        _ => name,
    };
    let repo = match path.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => path,
    };
    if repo.chars().any(|c| c.is_ascii_uppercase()) {
        return bad("invalid reference format: repository name must be lowercase");
    }
    Ok(())
}
