//! Before any op is made: build args, each stage's expanded base and platform, the target,
//! `COPY --from` dependencies, reachability and a check for features not supported yet.

use std::collections::{BTreeSet, HashMap};

use rbuild_solver::ir::Platform;

use super::state::EnvList;
use super::values::parse_platform;
use super::BuildRequest;
use crate::error::{Diagnostic, Error, ErrorKind};
use crate::instructions::{Dockerfile, Instruction, Stage};
use crate::parser::parse_heredoc;
use crate::shell::Lexer;
use crate::suggest::did_you_mean;

/// What `COPY --from` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FromRef {
    /// A stage, by index.
    Stage(usize),
    /// An image reference.
    Image(String),
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
    /// Name in progress output (`build`, `stage-1`, or empty for a lone stage).
    pub display: String,
    /// Numbered steps (image `FROM`, `RUN`, `COPY`, `ADD`, `WORKDIR`).
    pub total_steps: usize,
    /// `COPY --from` target per command (aligned with the stage's commands).
    pub copy_from: Vec<Option<FromRef>>,
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
        let parent = earlier.get(&base_name.to_lowercase()).copied();
        if let Some(n) = &stage.name {
            earlier.insert(n.to_lowercase(), i);
        }
        let display = stage.name.clone().unwrap_or_else(|| format!("stage-{i}"));
        let counted = stage
            .commands
            .iter()
            .filter(|c| {
                matches!(
                    c.instruction,
                    Instruction::Add(_) | Instruction::Copy(_) | Instruction::Run(_) | Instruction::Workdir(_)
                )
            })
            .count();
        let from_image = parent.is_none() && !base_name.eq_ignore_ascii_case("scratch");
        plans.push(StagePlan {
            base_name,
            platform,
            parent,
            display,
            total_steps: counted + usize::from(from_image),
            copy_from: Vec::new(),
        });
    }
    let mut image_deps = 0;
    for (i, stage) in df.stages.iter().enumerate() {
        let mut froms = Vec::with_capacity(stage.commands.len());
        for cmd in &stage.commands {
            let from = match &cmd.instruction {
                Instruction::Copy(c) => c.from.as_deref(),
                _ => None,
            };
            let Some(from) = from.filter(|f| !f.is_empty()) else {
                froms.push(None);
                continue;
            };
            let r = resolve_from(from, df, lexer).map_err(|k| Error::at(file, cmd.span, k))?;
            image_deps += usize::from(matches!(r, FromRef::Image(_)));
            froms.push(Some(r));
        }
        if let Some(plan) = plans.get_mut(i) {
            plan.copy_from = froms;
        }
    }
    // BuildKit drops the stage prefix when the build has a single state (image sources of
    // `COPY --from` count as states).
    if plans.len() + image_deps == 1 {
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

fn resolve_from(from: &str, df: &Dockerfile, lexer: &Lexer) -> Result<FromRef, ErrorKind> {
    let empty: Vec<(String, String)> = Vec::new();
    match lexer.process_word(from, &empty) {
        Ok(w) if w == from => {}
        _ => return Err(ErrorKind::FromExpansion),
    }
    if let Some(index) = parse_go_int(from) {
        return match usize::try_from(index).ok().filter(|i| *i < df.stages.len()) {
            Some(i) => Ok(FromRef::Stage(i)),
            None => Err(ErrorKind::StageIndex { index }),
        };
    }
    match find_stage(df, from) {
        Some(i) => Ok(FromRef::Stage(i)),
        None => Ok(FromRef::Image(from.to_owned())),
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
    plan.parent.into_iter().chain(plan.copy_from.iter().filter_map(|f| match f {
        Some(FromRef::Stage(i)) => Some(*i),
        _ => None,
    }))
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

/// Every use of a feature rbuild cannot build yet in `stage`, as located diagnostics.
pub(crate) fn unsupported(file: &str, stage: &Stage) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for cmd in &stage.commands {
        let mut flag = |feature: &str| {
            out.push(Error::diagnostic(file, cmd.span, ErrorKind::Unsupported { feature: feature.to_owned() }));
        };
        match &cmd.instruction {
            Instruction::Add(_) => flag("ADD"),
            Instruction::Onbuild(_) => flag("ONBUILD"),
            Instruction::Healthcheck(_) => flag("HEALTHCHECK"),
            Instruction::Run(r) => {
                if !r.mounts.is_empty() {
                    flag("RUN --mount");
                }
                if !r.devices.is_empty() {
                    flag("RUN --device");
                }
                let single_heredoc = r.command.args.len() == 1
                    && matches!(r.command.args.first().map(|a| parse_heredoc(a)), Some(Ok(Some(_))));
                let script = r.command.files.first().map(|f| {
                    if f.chomp {
                        crate::parser::chomp_heredoc_content(&f.data)
                    } else {
                        f.data.clone()
                    }
                });
                if single_heredoc && script.is_some_and(|d| d.starts_with("#!")) {
                    flag("RUN with a heredoc script starting with #!");
                }
            }
            Instruction::Copy(c) => {
                if c.link {
                    flag("COPY --link");
                }
                if c.parents {
                    flag("COPY --parents");
                }
                if !c.excludes.is_empty() {
                    flag("COPY --exclude");
                }
                if !c.paths.contents.is_empty() {
                    flag("COPY from a heredoc");
                }
            }
            _ => {}
        }
    }
    out
}
