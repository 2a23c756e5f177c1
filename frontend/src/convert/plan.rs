//! Before any op is made: build args, each stage's expanded base and platform, the target,
//! `COPY --from` dependencies, reachability and a check for features not supported yet.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rbuild_solver::ir::Platform;

use super::state::EnvList;
use super::values::parse_platform;
use super::{BuildRequest, NamedContext};
use crate::error::{Diagnostic, Error, ErrorKind};
use crate::instructions::{mount_from, Command, Dockerfile, Instruction};
use crate::shell::Lexer;
use crate::suggest::did_you_mean;

/// What `COPY --from` or `RUN --mount=from=` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FromRef {
    /// A stage, by index.
    Stage(usize),
    /// An image reference.
    Image(String),
    /// A named context that is not an image or a stage (`--build-context`).
    Context(NamedContext),
}

/// The other stages and images one command reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CommandDeps {
    /// `COPY --from`.
    pub copy_from: Option<FromRef>,
    /// `RUN --mount` `from=`, one per mount (`None`: the build context or nothing).
    pub mounts: Vec<Option<FromRef>>,
}

impl CommandDeps {
    fn refs(&self) -> impl Iterator<Item = &FromRef> + '_ {
        self.copy_from.iter().chain(self.mounts.iter().flatten())
    }

    /// Stages read.
    pub(crate) fn stages(&self) -> impl Iterator<Item = usize> + '_ {
        self.refs().filter_map(|r| match r {
            FromRef::Stage(i) => Some(*i),
            FromRef::Image(_) | FromRef::Context(_) => None,
        })
    }

    /// Images read.
    pub(crate) fn images(&self) -> impl Iterator<Item = &str> + '_ {
        self.refs().filter_map(|r| match r {
            FromRef::Image(i) => Some(i.as_str()),
            FromRef::Stage(_) | FromRef::Context(_) => None,
        })
    }

    fn is_empty(&self) -> bool {
        self.refs().next().is_none()
    }
}

/// What is known about a stage before dispatching it.
#[derive(Clone, Debug)]
pub(crate) struct StagePlan {
    /// `FROM` base after expansion.
    pub base_name: String,
    /// `--platform`, parsed.
    pub platform: Option<Platform>,
    /// The earlier stage this one is built on.
    pub parent: Option<usize>,
    /// The named context (not an image: those become `base_name`) the stage is built on, or
    /// that replaces the stage altogether.
    pub context: Option<NamedContext>,
    /// Name in progress output (`build`, `stage-1`, or empty for a lone stage).
    pub display: String,
    /// BuildKit's step total: image `FROM`, `RUN`, `COPY`, `ADD`, `WORKDIR`, and every
    /// `ONBUILD` trigger.
    pub total_steps: usize,
    /// The commands to dispatch: `ONBUILD` triggers of the base first, then the stage's own.
    pub commands: Vec<Command>,
    /// What each command reads (aligned with `commands`).
    pub deps: Vec<CommandDeps>,
    /// Whether the base's `ONBUILD` triggers were looked up already.
    pub triggers_init: bool,
}

/// BuildKit's `defaultArgs` followed by the `ARG`s before the first `FROM`.
pub(crate) fn global_args(
    req: &BuildRequest<'_>,
    df: &Dockerfile,
    lexer: &Lexer,
    build_platform: &Platform,
) -> Result<EnvList, Error> {
    let target_name = match &req.target {
        Some(t) => t.clone(),
        None => df.stages.last().and_then(|s| s.name.clone()).unwrap_or_default(),
    };
    let target_name = if target_name.is_empty() { "default".to_owned() } else { target_name };
    let bp = build_platform;
    let tp = &req.platform;
    let defaults = [
        ("BUILDPLATFORM", bp.to_string()),
        ("BUILDOS", bp.os.clone()),
        ("BUILDOSVERSION", String::new()),
        ("BUILDARCH", bp.architecture.clone()),
        ("BUILDVARIANT", bp.variant.clone().unwrap_or_default()),
        ("TARGETPLATFORM", tp.to_string()),
        ("TARGETOS", tp.os.clone()),
        ("TARGETOSVERSION", String::new()),
        ("TARGETARCH", tp.architecture.clone()),
        ("TARGETVARIANT", tp.variant.clone().unwrap_or_default()),
        ("TARGETSTAGE", target_name),
    ];
    let mut args = EnvList::default();
    for (k, v) in defaults {
        let v = req.build_args.get(k).cloned().unwrap_or(v);
        args.set(k, &v);
    }
    for cmd in &df.meta_args {
        let Instruction::Arg(decls) = &cmd.instruction else { continue };
        for decl in decls {
            let value = match (req.build_args.get(&decl.key), &decl.value) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(default)) => Some(
                    lexer
                        .process_word(default, &args)
                        .map_err(|source| ErrorKind::Expansion { word: default.clone(), source })
                        .map_err(|k| Error::at(&req.filename, cmd.span, k))?,
                ),
                (None, None) => None,
            };
            if let Some(v) = value {
                args.set(&decl.key, &v);
            }
        }
    }
    Ok(args)
}

/// Expands every stage's base and platform, links stages to earlier stages they are built on,
/// and resolves `COPY --from` names.
pub(crate) fn plan_stages(
    req: &BuildRequest<'_>,
    df: &Dockerfile,
    lexer: &Lexer,
    args: &EnvList,
) -> Result<Vec<StagePlan>, Error> {
    let file = req.filename.as_str();
    let mut plans: Vec<StagePlan> = Vec::with_capacity(df.stages.len());
    // Lowercased stage name -> index of the latest stage so named, so far.
    let mut earlier: HashMap<String, usize> = HashMap::new();
    for (i, stage) in df.stages.iter().enumerate() {
        let at = |k: ErrorKind| Error::at(file, stage.span, k);
        let base_name = lexer
            .process_word(&stage.base, args)
            .map_err(|source| at(ErrorKind::Expansion { word: stage.base.clone(), source }))?;
        if base_name.is_empty() {
            return Err(at(ErrorKind::BlankBaseName { base: stage.base.clone() }));
        }
        let platform = match &stage.platform {
            None => None,
            Some(raw) => {
                let value = lexer
                    .process_word(raw, args)
                    .map_err(|source| at(ErrorKind::Expansion { word: raw.clone(), source }))?;
                if value.is_empty() {
                    return Err(at(ErrorKind::InvalidPlatform {
                        value: raw.clone(),
                        reason: "empty platform value".to_owned(),
                    }));
                }
                let p = parse_platform(&value, &req.platform)
                    .map_err(|reason| at(ErrorKind::InvalidPlatform { value, reason }))?;
                Some(p)
            }
        };
        let mut base_name = base_name;
        let mut parent = earlier.get(&base_name.to_lowercase()).copied();
        let mut context = None;
        let mut commands = stage.commands.clone();
        // BuildKit: a named context named like the stage replaces the whole stage; one named
        // like the base (not an earlier stage) replaces the base.
        let own = stage.name.as_deref().and_then(|n| named_context(&req.named_contexts, n));
        let replaced = own.is_some();
        let base_ctx = if replaced {
            own
        } else if parent.is_none() {
            named_context(&req.named_contexts, &base_name)
        } else {
            None
        };
        if replaced {
            commands.clear();
            parent = None;
        }
        match base_ctx {
            None => {}
            Some(NamedContext::Image { reference }) => base_name = reference.clone(),
            Some(NamedContext::Stage { name }) => {
                parent = Some(earlier_stage(df, name, i).map_err(at)?);
            }
            Some(other) => context = Some(other.clone()),
        }
        if let Some(n) = &stage.name {
            earlier.insert(n.to_lowercase(), i);
        }
        let display = stage.name.clone().unwrap_or_else(|| format!("stage-{i}"));
        let counted = commands.iter().filter(|c| counts_as_step(&c.instruction)).count();
        let from_image = parent.is_none() && context.is_none() && !base_name.eq_ignore_ascii_case("scratch");
        plans.push(StagePlan {
            base_name,
            platform,
            parent,
            context,
            display,
            total_steps: counted + usize::from(from_image),
            commands,
            deps: Vec::new(),
            triggers_init: false,
        });
    }
    // BuildKit registers a pseudo-stage for every image a `COPY --from` names and for every
    // mount whose `from` is not a stage (the build context counts as `scratch`).
    let mut pseudo_stages = 0;
    for plan in &mut plans {
        let mut deps = Vec::with_capacity(plan.commands.len());
        for cmd in &plan.commands {
            let d = command_deps(cmd, df, lexer, &req.named_contexts).map_err(|k| Error::at(file, cmd.span, k))?;
            pseudo_stages += usize::from(matches!(d.copy_from, Some(FromRef::Image(_) | FromRef::Context(_))));
            pseudo_stages += d.mounts.iter().filter(|m| !matches!(m, Some(FromRef::Stage(_)))).count();
            deps.push(d);
        }
        plan.deps = deps;
    }
    // BuildKit drops the stage prefix when the build has a single state (image sources of
    // `COPY --from` count as states).
    if plans.len() + pseudo_stages == 1 {
        for p in &mut plans {
            p.display.clear();
        }
    }
    check_cycles(df, &plans).map_err(|(i, k)| {
        let span = df.stages.get(i).map_or(crate::parser::Span::new(0, 0), |s| s.span);
        Error::at(file, span, k)
    })?;
    Ok(plans)
}

/// Whether BuildKit numbers the step (`[2/5]`).
pub(crate) fn counts_as_step(i: &Instruction) -> bool {
    matches!(i, Instruction::Add(_) | Instruction::Copy(_) | Instruction::Run(_) | Instruction::Workdir(_))
}

/// The named contexts of a build, by name as given (`--build-context NAME=...`).
pub(crate) type NamedContexts = BTreeMap<String, NamedContext>;

/// The named context a `FROM`, `--from` or stage name refers to: names compare as BuildKit's
/// `NamedContext` does, as familiar image names without `:latest` (`docker.io/library/alpine:latest`
/// is `alpine`), case-insensitively.
pub(crate) fn named_context<'n>(named: &'n NamedContexts, name: &str) -> Option<&'n NamedContext> {
    if named.is_empty() {
        return None;
    }
    let want = normalize_context_name(name);
    named.iter().find(|(k, _)| normalize_context_name(k) == want).map(|(_, v)| v)
}

/// `reference.FamiliarString` without a `:latest` tag, lowercased.
pub(crate) fn normalize_context_name(name: &str) -> String {
    let lower = name.to_lowercase();
    let familiar = ["docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"]
        .iter()
        .find_map(|p| lower.strip_prefix(p))
        .unwrap_or(&lower);
    match familiar.strip_suffix(":latest") {
        Some(n) if !familiar.contains('@') => n.to_owned(),
        _ => familiar.to_owned(),
    }
}

/// The index of stage `name` for `target:` contexts, which must come before stage `current`.
fn earlier_stage(df: &Dockerfile, name: &str, current: usize) -> Result<usize, ErrorKind> {
    match find_stage(df, name) {
        Some(j) if j < current => Ok(j),
        Some(_) => Err(ErrorKind::InvalidInstruction(format!(
            "build context target:{name} must name a stage defined before the stage that uses it"
        ))),
        None => Err(ErrorKind::InvalidInstruction(format!(
            "build context target:{name}: no stage named {name:?} in this Dockerfile"
        ))),
    }
}

/// The stages and images `cmd` reads.
pub(crate) fn command_deps(
    cmd: &Command,
    df: &Dockerfile,
    lexer: &Lexer,
    named: &NamedContexts,
) -> Result<CommandDeps, ErrorKind> {
    let mut deps = CommandDeps::default();
    match &cmd.instruction {
        Instruction::Copy(c) => {
            if let Some(from) = c.from.as_deref().filter(|f| !f.is_empty()) {
                deps.copy_from = Some(resolve_from(from, df, lexer, named)?);
            }
        }
        Instruction::Run(r) => {
            for m in &r.mounts {
                let from = mount_from(m).map_err(ErrorKind::InvalidInstruction)?;
                deps.mounts.push(from.map(|f| resolve_name(&f, df, named)).transpose()?);
            }
        }
        _ => {}
    }
    Ok(deps)
}

fn resolve_from(from: &str, df: &Dockerfile, lexer: &Lexer, named: &NamedContexts) -> Result<FromRef, ErrorKind> {
    let empty: Vec<(String, String)> = Vec::new();
    match lexer.process_word(from, &empty) {
        Ok(w) if w == from => {}
        _ => return Err(ErrorKind::FromExpansion),
    }
    resolve_name(from, df, named)
}

/// A stage index, a stage name (which a named context may have replaced), a named context,
/// else an image.
fn resolve_name(from: &str, df: &Dockerfile, named: &NamedContexts) -> Result<FromRef, ErrorKind> {
    if let Some(index) = parse_go_int(from) {
        return match usize::try_from(index).ok().filter(|i| *i < df.stages.len()) {
            Some(i) => Ok(FromRef::Stage(i)),
            None => Err(ErrorKind::StageIndex { index }),
        };
    }
    if let Some(i) = find_stage(df, from) {
        // A stage a local, git or archive context replaced is read straight from the context.
        let replaced = df.stages.get(i).and_then(|s| s.name.as_deref()).and_then(|n| named_context(named, n));
        return Ok(match replaced {
            Some(ctx @ (NamedContext::Local { .. } | NamedContext::Git { .. } | NamedContext::Archive { .. })) => {
                FromRef::Context(ctx.clone())
            }
            _ => FromRef::Stage(i),
        });
    }
    match named_context(named, from) {
        None => Ok(FromRef::Image(from.to_owned())),
        Some(NamedContext::Image { reference }) => Ok(FromRef::Image(reference.clone())),
        Some(NamedContext::Stage { name }) => match find_stage(df, name) {
            Some(i) => Ok(FromRef::Stage(i)),
            None => Err(ErrorKind::InvalidInstruction(format!(
                "build context target:{name}: no stage named {name:?} in this Dockerfile"
            ))),
        },
        Some(other) => Ok(FromRef::Context(other.clone())),
    }
}

/// Go's `strconv.Atoi` (optional sign, decimal digits).
fn parse_go_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The last stage named `name` (case-insensitive).
pub(crate) fn find_stage(df: &Dockerfile, name: &str) -> Option<usize> {
    df.stages.iter().rposition(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
}

/// The target stage index.
pub(crate) fn target_index(req: &BuildRequest<'_>, df: &Dockerfile) -> Result<usize, Error> {
    let Some(target) = &req.target else {
        return Ok(df.stages.len().saturating_sub(1));
    };
    find_stage(df, target).ok_or_else(|| {
        let names: Vec<&str> = df.stages.iter().filter_map(|s| s.name.as_deref()).collect();
        let suggestion = did_you_mean(target, &names, true);
        let err = Error::new(ErrorKind::TargetNotFound { target: target.clone(), suggestion });
        if names.is_empty() {
            err.with_hint("name a stage with `FROM image AS name` to build it with --target")
        } else {
            err.with_hint(format!("stages in this Dockerfile: {}", names.join(", ")))
        }
    })
}

fn stage_edges(plan: &StagePlan) -> impl Iterator<Item = usize> + '_ {
    plan.parent.into_iter().chain(plan.deps.iter().flat_map(CommandDeps::stages))
}

fn check_cycles(df: &Dockerfile, plans: &[StagePlan]) -> Result<(), (usize, ErrorKind)> {
    // Iterative depth-first search (a file may have very many stages).
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut mark = vec![0u8; plans.len()];
    for root in 0..plans.len() {
        if mark.get(root) != Some(&0) {
            continue;
        }
        let mut stack: Vec<(usize, Vec<usize>)> = Vec::new();
        let edges = |i: usize| plans.get(i).map(|p| stage_edges(p).collect::<Vec<_>>()).unwrap_or_default();
        if let Some(m) = mark.get_mut(root) {
            *m = 1;
        }
        stack.push((root, edges(root)));
        while let Some((node, pending)) = stack.last_mut() {
            match pending.pop() {
                Some(next) => match mark.get(next).copied() {
                    Some(0) => {
                        if let Some(m) = mark.get_mut(next) {
                            *m = 1;
                        }
                        stack.push((next, edges(next)));
                    }
                    Some(1) => {
                        let name = df.stages.get(next).and_then(|s| s.name.clone());
                        let stage =
                            name.unwrap_or_else(|| plans.get(next).map(|p| p.display.clone()).unwrap_or_default());
                        return Err((next, ErrorKind::CircularDependency { stage }));
                    }
                    _ => {}
                },
                None => {
                    if let Some(m) = mark.get_mut(*node) {
                        *m = 2;
                    }
                    stack.pop();
                }
            }
        }
    }
    Ok(())
}

/// Stages the target needs, as a set of indexes.
pub(crate) fn reachable(plans: &[StagePlan], target: usize) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if !seen.insert(i) {
            continue;
        }
        if let Some(p) = plans.get(i) {
            todo.extend(stage_edges(p));
        }
    }
    seen
}

/// Every use of a feature rbuild cannot build yet in `commands`, as located diagnostics.
pub(crate) fn unsupported(file: &str, commands: &[Command]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for cmd in commands {
        if let Instruction::Run(r) = &cmd.instruction {
            if !r.devices.is_empty() {
                let kind = ErrorKind::Unsupported { feature: "RUN --device".to_owned() };
                out.push(Error::diagnostic(file, cmd.span, kind));
            }
        }
    }
    out
}

/// Whether a trigger list adds dependencies on other stages or images.
pub(crate) fn has_deps(deps: &[CommandDeps]) -> bool {
    deps.iter().any(|d| !d.is_empty())
}
