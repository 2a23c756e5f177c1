//! The conversion driver: resolves the bases of reachable stages, then dispatches each
//! reachable stage's instructions in file order (BuildKit's `toDispatchState` + `dispatch`).

use std::cell::RefCell;
use std::collections::BTreeMap;

use rbuild_solver::ir::{FileAction, FileOp, GraphBuilder, Input, Op, OpId, Platform, SourceOp, VertexMeta};

use super::plan::{self, CommandDeps, StagePlan};
use super::state::{uppercase_cmd, EnvList, ImageConfig, Progress, StageState};
use super::{BuildDefinition, BuildRequest, ImageResolver, NamedContext, ResolvedImage};
use crate::error::{source_span, Error, ErrorKind};
use crate::instructions::{Command, Dockerfile, Instruction};
use crate::lint::Linter;
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
    pub(super) target: usize,
    graph: GraphBuilder,
    context: Option<Input>,
    images: BTreeMap<(String, Platform), BaseImage>,
    /// Final state of each dispatched stage.
    pub(super) done: Vec<Option<StageState>>,
    /// Build check findings.
    pub(super) lint: &'a RefCell<Linter>,
    /// Building, or only checking.
    scope: Scope,
    /// What each stage declared and mounted, for the outline.
    pub(super) captured: Vec<super::outline::StageOutline>,
}

/// What a conversion is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// A build: the stages the target needs, all of which must be buildable by rbuild.
    Build,
    /// Build checks only (`--check`): every stage when no target is given.
    Check {
        /// Convert every stage, not only those the target needs.
        all_stages: bool,
    },
    /// What the target uses (`--call=outline`): the stages it needs.
    Outline,
}

impl<'a> Converter<'a> {
    /// Plans the conversion: build args, stage bases, target, `COPY --from` links. Findings of
    /// the build checks go to `lint`.
    pub(crate) fn new(
        req: &'a BuildRequest<'a>,
        df: &'a Dockerfile,
        resolver: &'a dyn ImageResolver,
        lint: &'a RefCell<Linter>,
        scope: Scope,
    ) -> Result<Converter<'a>, Error> {
        let lexer = Lexer::new(df.escape);
        let global_args = plan::global_args(req, df, &lexer, &Platform::host())?;
        crate::lint::from::check(&mut lint.borrow_mut(), req, df, &lexer, &global_args);
        let plans = plan::plan_stages(req, df, &lexer, &global_args)?;
        let target = plan::target_index(req, df)?;
        let plans_len = plans.len();
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
            lint,
            scope,
            captured: vec![super::outline::StageOutline::default(); plans_len],
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

    /// The stages to convert: those the target needs, or all of them.
    fn reachable(&self) -> std::collections::BTreeSet<usize> {
        if self.scope == (Scope::Check { all_stages: true }) {
            (0..self.plans.len()).collect()
        } else {
            plan::reachable(&self.plans, self.target)
        }
    }

    /// Converts every stage the target needs.
    pub(crate) fn run(mut self) -> Result<BuildDefinition, Error> {
        let reachable = self.dispatch_all()?;
        self.finish(&reachable)
    }

    /// Converts the stages the target needs and returns what the target uses.
    pub(crate) fn outline(mut self) -> Result<crate::outline::Outline, Error> {
        self.dispatch_all()?;
        Ok(self.outline_of())
    }

    /// Resolves and dispatches the stages to convert; returns them.
    fn dispatch_all(&mut self) -> Result<std::collections::BTreeSet<usize>, Error> {
        let mut reachable = self.reachable();
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
            reachable = self.reachable();
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
        Ok(reachable)
    }

    /// The build definition of the target, once its stages are dispatched.
    fn finish(self, reachable: &std::collections::BTreeSet<usize>) -> Result<BuildDefinition, Error> {
        let Some(Some(last)) = self.done.get(self.target).cloned() else {
            return Err(ErrorKind::NoStages.into());
        };
        let c = &last.config;
        let extra_config =
            super::imageconfig::extra_config(c.healthcheck.as_ref(), &c.onbuild, &c.shell, c.args_escaped);
        let warnings = self.unused_build_args(reachable);
        let sbom_stages = self.sbom_scan_stages(reachable);
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
            sbom_stages,
        })
    }

    /// The stages besides the target whose filesystems get an SBOM of their own:
    /// `BUILDKIT_SBOM_SCAN_STAGE` is `true` or lists the stage's name, the stage's own `ARG`
    /// winning over the global one (a `--build-arg` only sets a declared `ARG`, as BuildKit's
    /// docs say). A stage the target does not need is never built, so never scanned.
    fn sbom_scan_stages(&self, reachable: &std::collections::BTreeSet<usize>) -> Vec<super::ScanStage> {
        const KEY: &str = "BUILDKIT_SBOM_SCAN_STAGE";
        let mut out = Vec::new();
        for &i in reachable {
            let (Some(Some(state)), Some(stage)) = (self.done.get(i), self.df.stages.get(i)) else { continue };
            let Some(fs) = state.fs.filter(|_| i != self.target) else { continue };
            let own = state.build_args.iter().rev().find(|a| a.key == KEY).map(|a| a.value.clone());
            let value = own.unwrap_or_else(|| self.global_args.lookup(KEY).map(str::to_owned)).unwrap_or_default();
            let wanted = match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "" | "false" | "0" => false,
                list => stage.name.as_deref().is_some_and(|n| list.split(',').any(|s| s.trim() == n)),
            };
            if wanted {
                let name = stage.name.clone().unwrap_or_else(|| format!("stage-{i}"));
                out.push(super::ScanStage { name, fs });
            }
        }
        out
    }

    /// Fails with every use of a feature rbuild cannot build yet in the reachable stages (not
    /// when only checking: the Dockerfile is fine).
    fn check_supported(&self, reachable: &std::collections::BTreeSet<usize>) -> Result<(), Error> {
        if self.scope != Scope::Build {
            return Ok(());
        }
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
            if plan.parent.is_none() && plan.context.is_none() && !plan.base_name.eq_ignore_ascii_case("scratch") {
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
            let Some(Some(mut parent_state)) = self.done.get(parent).cloned() else {
                return Err(ErrorKind::NoStages.into());
            };
            parent_state.checks = parent_state.checks.for_child();
            parent_state
        } else if let Some(ctx) = &plan.context {
            // BuildKit gives a named context that is not an image an empty image config.
            let fs = self.named_context_fs(ctx, true, stage.span)?;
            StageState::new(Some(fs), ImageConfig::scratch(), platform.clone())
        } else if plan.base_name.eq_ignore_ascii_case("scratch") {
            StageState::new(None, ImageConfig::scratch(), platform.clone())
        } else {
            let base = self.resolve(&plan.base_name, &platform).map_err(|e| e.or_at(self.file(), stage.span))?;
            if !base.empty {
                self.check_base_platform(&plan.base_name, &platform, &base.resolved, stage.span);
            }
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
            let args_before = state.build_args.len();
            if self.req.multi_platform {
                // A stage built on another stage runs on that stage's platform.
                let suffix = super::state::target_suffix(&state.platform, &state.env);
                progress.platform = Some(format!("{}{suffix}", state.platform));
            }
            self.dispatch(&mut state, &mut progress, i, cmd, deps).map_err(|e| e.or_at(self.file(), cmd.span))?;
            let declared = state.build_args.get(args_before..).unwrap_or_default().to_vec();
            self.capture_args(i, cmd, &declared);
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
        self.check_command(st, cmd);
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

    /// The filesystem of a named context that is not an image or a stage. A local directory
    /// is read in place by `COPY --from` and mounts (`snapshot: false`); `FROM` gets a snapshot
    /// of it. A remote archive is downloaded and extracted.
    pub(super) fn named_context_fs(&mut self, ctx: &NamedContext, snapshot: bool, span: Span) -> Result<Input, Error> {
        let source = |name: String| VertexMeta { name, ..VertexMeta::default() };
        let copy_all = |src: Input, path: &str, unpack_archives: bool| {
            Op::File(FileOp {
                base: None,
                actions: vec![FileAction::Copy {
                    src,
                    src_paths: vec![path.to_owned()],
                    dest: "/".to_owned(),
                    chown: None,
                    chmod: None,
                    exclude: Vec::new(),
                    parents: false,
                    unpack_archives,
                }],
            })
        };
        match ctx {
            NamedContext::Local { name, exclude } => {
                let op = Op::Source(SourceOp::Local { name: name.clone(), exclude: exclude.clone() });
                // BuildKit's names, with the worker's `context:` prefix left out.
                let shown = name.strip_prefix("context:").unwrap_or(name);
                let local = Input::of(self.graph.add(op, source(format!("[context {shown}] load from client")))?);
                if !snapshot {
                    return Ok(local);
                }
                let id =
                    self.add_op(copy_all(local, "/", false), format!("[context {shown}] snapshot"), span, false)?;
                Ok(Input::of(id))
            }
            NamedContext::Git { remote, reference, subdir } => {
                let op = Op::Source(SourceOp::Git {
                    remote: remote.clone(),
                    reference: reference.clone(),
                    subdir: subdir.clone(),
                    keep_git_dir: false,
                });
                let shown = without_userinfo(remote);
                Ok(Input::of(self.add_op(op, format!("[context] git {shown}"), span, false)?))
            }
            NamedContext::Archive { url } => {
                let op =
                    Op::Source(SourceOp::Http { url: url.clone(), checksum: None, filename: "context".to_owned() });
                let shown = without_userinfo(url);
                let download = Input::of(self.add_op(op, format!("[context] {shown}"), span, false)?);
                let id = self.add_op(
                    copy_all(download, "/context", true),
                    format!("[context] extract {shown}"),
                    span,
                    false,
                )?;
                Ok(Input::of(id))
            }
            NamedContext::Image { .. } | NamedContext::Stage { .. } => Err(ErrorKind::InvalidInstruction(
                "internal: image and stage contexts are resolved when planning".to_owned(),
            )
            .into()),
        }
    }

    /// The filesystem of `COPY --from=<image>`.
    pub(super) fn copy_image_fs(&mut self, reference: &str, span: Span) -> Result<Option<Input>, Error> {
        let platform = self.req.platform.clone();
        let base = self.resolve(reference, &platform)?;
        let name = format!("FROM {}", pinned(&base.resolved));
        self.image_fs(&base, &platform, name, span)
    }
}

/// A URL without `user:password@`, for progress names.
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
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
    if reference.starts_with("oci-layout://") {
        // A local OCI layout (`--build-context NAME=oci-layout://DIR`): a path, not a name.
        return Ok(());
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
