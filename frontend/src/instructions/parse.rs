//! Parse tree → typed instructions and stages (BuildKit's `instructions/parse.go`).

use super::flags::{FlagKind, Flags};
use super::{
    AddInstruction, ArgDecl, Command, CommandLine, CopyInstruction, Dockerfile, Healthcheck, InlineFile, Instruction,
    RunInstruction, SourceContent, SourcesAndDest, Stage,
};
use crate::parser::{chomp_heredoc_content, parse_heredoc, Args, KeyValue, Node, Parsed, Span};
use crate::suggest::did_you_mean;

/// Why one instruction is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstructionError {
    /// The keyword is not a Dockerfile instruction.
    Unknown {
        /// The keyword as written.
        instruction: String,
        /// The closest instruction name, in the keyword's case.
        suggestion: Option<String>,
    },
    /// Wrong arguments or flags.
    Invalid(String),
}

const INSTRUCTIONS: [&str; 18] = [
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

type Res<T> = Result<T, InstructionError>;

fn invalid<T>(msg: impl Into<String>) -> Res<T> {
    Err(InstructionError::Invalid(msg.into()))
}

fn flags(node: &Node, accepted: &[(&str, FlagKind)]) -> Res<Flags> {
    Flags::parse(&node.flags, accepted).map_err(InstructionError::Invalid)
}

fn exactly_one(node: &Node, name: &str) -> Res<String> {
    match node.args.words() {
        [one] => Ok(one.clone()),
        _ => invalid(format!("{name} requires exactly one argument")),
    }
}

fn at_least_one<'a>(node: &'a Node, name: &str) -> Res<&'a [String]> {
    let words = node.args.words();
    if words.is_empty() {
        return invalid(format!("{name} requires at least one argument"));
    }
    Ok(words)
}

/// Parses one instruction that is not `FROM` (an `ONBUILD` trigger, say).
pub fn parse_command(node: &Node) -> Result<Instruction, InstructionError> {
    if node.keyword_lower == "from" {
        return invalid("FROM isn't allowed as an ONBUILD trigger");
    }
    parse_instruction(node)
}

/// Parses the whole tree into stages, collecting every instruction's error (with its span)
/// instead of stopping at the first.
pub fn parse_dockerfile(parsed: &Parsed) -> Result<Dockerfile, Vec<(Span, InstructionError)>> {
    let mut errors = Vec::new();
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &parsed.nodes {
        if node.keyword_lower == "from" {
            match parse_from(node) {
                Ok(stage) => stages.push(stage),
                Err(e) => {
                    errors.push((node.span, e));
                    // Keep a placeholder so later instructions still have a stage.
                    stages.push(placeholder_stage(node));
                }
            }
            continue;
        }
        let command = match parse_instruction(node) {
            Ok(instruction) => Command {
                instruction,
                span: node.span,
                original: node.original.clone(),
                comments: node.comments.clone(),
            },
            Err(e) => {
                errors.push((node.span, e));
                continue;
            }
        };
        match stages.last_mut() {
            Some(stage) => stage.commands.push(command),
            None if matches!(command.instruction, Instruction::Arg(_)) => meta_args.push(command),
            None => errors.push((node.span, InstructionError::Invalid("no build stage in current context".to_owned()))),
        }
    }
    if errors.is_empty() {
        Ok(Dockerfile { meta_args, stages, escape: parsed.escape })
    } else {
        Err(errors)
    }
}

fn placeholder_stage(node: &Node) -> Stage {
    Stage {
        base: String::new(),
        name: None,
        platform: None,
        span: node.span,
        original: node.original.trim().to_owned(),
        commands: Vec::new(),
        comments: node.comments.clone(),
    }
}

fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

fn parse_from(node: &Node) -> Res<Stage> {
    let words = node.args.words();
    let name = match words {
        [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
            let lower = name.to_lowercase();
            if !is_valid_stage_name(&lower) {
                return invalid(format!(
                    "invalid name for build stage: {}, name can't start with a number or contain symbols",
                    crate::parser::go_quote(name)
                ));
            }
            Some(lower)
        }
        [_] => None,
        _ => return invalid("FROM requires either one or three arguments"),
    };
    let flags = flags(node, &[("platform", FlagKind::String)])?;
    Ok(Stage {
        base: words.first().cloned().unwrap_or_default(),
        name,
        platform: flags.string("platform"),
        span: node.span,
        original: node.original.trim().to_owned(),
        commands: Vec::new(),
        comments: node.comments.clone(),
    })
}

/// Parses one non-`FROM` node.
fn parse_instruction(node: &Node) -> Res<Instruction> {
    const NO_FLAGS: &[(&str, FlagKind)] = &[];
    let plain = |node: &Node| flags(node, NO_FLAGS).map(|_| ());
    Ok(match node.keyword_lower.as_str() {
        "env" => {
            plain(node)?;
            Instruction::Env(key_values(node, "ENV")?)
        }
        "label" => {
            plain(node)?;
            Instruction::Label(key_values(node, "LABEL")?)
        }
        "maintainer" => {
            let m = exactly_one(node, "MAINTAINER")?;
            plain(node)?;
            Instruction::Maintainer(m)
        }
        "add" => Instruction::Add(parse_add(node)?),
        "copy" => Instruction::Copy(parse_copy(node)?),
        "onbuild" => Instruction::Onbuild(parse_onbuild(node)?),
        "workdir" => {
            let p = exactly_one(node, "WORKDIR")?;
            plain(node)?;
            Instruction::Workdir(p)
        }
        "run" => Instruction::Run(parse_run(node)?),
        "cmd" => {
            plain(node)?;
            Instruction::Cmd(command_line(node))
        }
        "entrypoint" => {
            plain(node)?;
            Instruction::Entrypoint(command_line(node))
        }
        "healthcheck" => Instruction::Healthcheck(parse_healthcheck(node)?),
        "expose" => {
            let mut ports = at_least_one(node, "EXPOSE")?.to_vec();
            plain(node)?;
            ports.sort();
            Instruction::Expose(ports)
        }
        "user" => {
            let u = exactly_one(node, "USER")?;
            plain(node)?;
            Instruction::User(u)
        }
        "volume" => {
            let words = at_least_one(node, "VOLUME")?;
            plain(node)?;
            let mut volumes = Vec::with_capacity(words.len());
            for v in words {
                let v = v.trim();
                if v.is_empty() {
                    return invalid("VOLUME specified can not be an empty string");
                }
                volumes.push(v.to_owned());
            }
            Instruction::Volume(volumes)
        }
        "stopsignal" => {
            let s = exactly_one(node, "STOPSIGNAL")?;
            plain(node)?;
            Instruction::StopSignal(s)
        }
        "arg" => Instruction::Arg(parse_arg(node)?),
        "shell" => {
            plain(node)?;
            let args = node.args.words();
            if args.is_empty() {
                return invalid("SHELL requires at least one argument");
            }
            if !node.json {
                return invalid("SHELL requires the arguments to be in JSON form");
            }
            Instruction::Shell(args.to_vec())
        }
        _ => {
            let suggestion = did_you_mean(&node.keyword, &INSTRUCTIONS, false);
            return Err(InstructionError::Unknown { instruction: node.keyword.clone(), suggestion });
        }
    })
}

fn key_values(node: &Node, name: &str) -> Res<Vec<KeyValue>> {
    let Args::KeyValues(kvs) = &node.args else {
        return invalid(format!("{name} requires at least one argument"));
    };
    if kvs.is_empty() {
        return invalid(format!("{name} requires at least one argument"));
    }
    if kvs.iter().any(|kv| kv.key.is_empty()) {
        return invalid(format!("{name} names can not be blank"));
    }
    Ok(kvs.clone())
}

fn parse_arg(node: &Node) -> Res<Vec<ArgDecl>> {
    let words = at_least_one(node, "ARG")?;
    let mut out = Vec::with_capacity(words.len());
    for w in words {
        let decl = match w.split_once('=') {
            Some(("", _)) => return invalid("ARG names can not be blank"),
            Some((k, v)) => ArgDecl { key: k.to_owned(), value: Some(v.to_owned()) },
            None => ArgDecl { key: w.clone(), value: None },
        };
        out.push(decl);
    }
    Ok(out)
}

/// `handleJSONArgs` + heredoc files: shell form joins the words into one string.
fn command_line(node: &Node) -> CommandLine {
    let words = node.args.words();
    let args = if node.json || words.is_empty() { words.to_vec() } else { vec![words.join(" ")] };
    let files = node
        .heredocs
        .iter()
        .map(|h| InlineFile { name: h.name.clone(), data: h.content.clone(), chomp: h.chomp })
        .collect();
    CommandLine { args, prepend_shell: !node.json, files }
}

fn parse_run(node: &Node) -> Res<RunInstruction> {
    let f = flags(
        node,
        &[
            ("mount", FlagKind::Strings),
            ("network", FlagKind::String),
            ("security", FlagKind::String),
            ("device", FlagKind::Strings),
        ],
    )?;
    let network = f.string("network");
    if let Some(n) = &network {
        if !["default", "none", "host"].contains(&n.as_str()) {
            return invalid(format!("invalid network mode {}", crate::parser::go_quote(n)));
        }
    }
    let security = f.string("security");
    if let Some(s) = &security {
        if !["sandbox", "insecure"].contains(&s.as_str()) {
            return invalid(format!("security {} is not valid", crate::parser::go_quote(s)));
        }
    }
    let mounts = f.strings("mount");
    for m in &mounts {
        super::mount::mount_from(m).map_err(InstructionError::Invalid)?;
    }
    Ok(RunInstruction { command: command_line(node), mounts, network, security, devices: f.strings("device") })
}

fn sources_and_dest(node: &Node, name: &str) -> Res<SourcesAndDest> {
    let words = node.args.words();
    let Some((dest, srcs)) = words.split_last().filter(|(_, s)| !s.is_empty()) else {
        return invalid(format!(
            "{name} requires at least two arguments, but only one was provided. Destination could not be determined"
        ));
    };
    if matches!(parse_heredoc(dest), Ok(Some(_))) {
        return invalid(format!("{name} cannot accept a heredoc as a destination"));
    }
    let mut sources = Vec::new();
    let mut contents = Vec::new();
    for src in srcs {
        match parse_heredoc(src) {
            Ok(Some(doc)) => {
                let body = node.heredocs.iter().find(|h| h.name == doc.name);
                let mut data = body.map(|h| h.content.clone()).unwrap_or_default();
                if doc.chomp {
                    data = chomp_heredoc_content(&data);
                }
                contents.push(SourceContent { path: doc.name, data, expand: doc.expand });
            }
            _ => sources.push(src.clone()),
        }
    }
    Ok(SourcesAndDest { sources, contents, dest: dest.clone() })
}

fn parse_copy(node: &Node) -> Res<CopyInstruction> {
    let paths = sources_and_dest(node, "COPY")?;
    let f = flags(
        node,
        &[
            ("chown", FlagKind::String),
            ("from", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("exclude", FlagKind::Strings),
            ("parents", FlagKind::Bool),
        ],
    )?;
    Ok(CopyInstruction {
        paths,
        from: f.string("from"),
        chown: f.string("chown"),
        chmod: f.string("chmod"),
        link: f.bool("link").unwrap_or(false),
        parents: f.bool("parents").unwrap_or(false),
        excludes: f.strings("exclude"),
    })
}

fn parse_add(node: &Node) -> Res<AddInstruction> {
    let paths = sources_and_dest(node, "ADD")?;
    let f = flags(
        node,
        &[
            ("chown", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("keep-git-dir", FlagKind::Bool),
            ("checksum", FlagKind::String),
            ("unpack", FlagKind::Bool),
            ("exclude", FlagKind::Strings),
        ],
    )?;
    Ok(AddInstruction {
        paths,
        chown: f.string("chown"),
        chmod: f.string("chmod"),
        link: f.bool("link").unwrap_or(false),
        keep_git_dir: f.bool("keep-git-dir"),
        checksum: f.string("checksum"),
        unpack: f.bool("unpack"),
        excludes: f.strings("exclude"),
    })
}

fn parse_onbuild(node: &Node) -> Res<String> {
    let Args::Nested(child) = &node.args else {
        return invalid("ONBUILD requires at least one argument");
    };
    flags(node, &[])?;
    let trigger = child.keyword.to_uppercase();
    match trigger.as_str() {
        "ONBUILD" => return invalid("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
        "MAINTAINER" | "FROM" => return invalid(format!("{trigger} isn't allowed as an ONBUILD trigger")),
        _ => {}
    }
    let trimmed = node.original.trim_start();
    let mut expr = match trimmed.get(..7) {
        Some(k) if k.eq_ignore_ascii_case("onbuild") => trimmed[7..].trim_start().to_owned(),
        _ => trimmed.to_owned(),
    };
    for h in &node.heredocs {
        expr.push('\n');
        expr.push_str(&h.content);
        expr.push_str(&h.name);
    }
    Ok(expr)
}

fn parse_healthcheck(node: &Node) -> Res<Healthcheck> {
    let words = at_least_one(node, "HEALTHCHECK")?;
    let (typ, rest) = match words.split_first() {
        Some((t, r)) => (t.to_uppercase(), r),
        None => return invalid("HEALTHCHECK requires at least one argument"),
    };
    if typ == "NONE" {
        if !rest.is_empty() {
            return invalid("HEALTHCHECK NONE takes no arguments");
        }
        return Ok(Healthcheck {
            test: vec![typ],
            interval: 0,
            timeout: 0,
            start_period: 0,
            start_interval: 0,
            retries: 0,
        });
    }
    let f = flags(
        node,
        &[
            ("interval", FlagKind::String),
            ("timeout", FlagKind::String),
            ("start-period", FlagKind::String),
            ("start-interval", FlagKind::String),
            ("retries", FlagKind::String),
        ],
    )?;
    if typ != "CMD" {
        return invalid(format!("Unknown type {} in HEALTHCHECK (try CMD)", crate::parser::go_quote(&typ)));
    }
    if rest.is_empty() {
        return invalid("Missing command after HEALTHCHECK CMD");
    }
    let mut test = vec![if node.json { "CMD".to_owned() } else { "CMD-SHELL".to_owned() }];
    if node.json {
        test.extend(rest.iter().cloned());
    } else {
        test.push(rest.join(" "));
    }
    let retries = match f.string("retries").filter(|r| !r.is_empty()) {
        None => 0,
        Some(r) => match r.parse::<i32>() {
            Ok(n) if n < 0 => return invalid(format!("--retries cannot be negative ({n})")),
            Ok(n) => n.unsigned_abs(),
            Err(_) => {
                let why = if r.trim_start_matches(['+', '-']).chars().all(|c| c.is_ascii_digit()) && r.len() > 1 {
                    "value out of range"
                } else {
                    "invalid syntax"
                };
                return invalid(format!("strconv.ParseInt: parsing {}: {why}", crate::parser::go_quote(&r)));
            }
        },
    };
    Ok(Healthcheck {
        test,
        interval: interval(&f, "interval")?,
        timeout: interval(&f, "timeout")?,
        start_period: interval(&f, "start-period")?,
        start_interval: interval(&f, "start-interval")?,
        retries,
    })
}

/// BuildKit's `parseOptInterval`: a Go duration, 0 when absent, else at least 1ms.
fn interval(f: &Flags, name: &str) -> Res<i64> {
    let Some(s) = f.string(name).filter(|s| !s.is_empty()) else {
        return Ok(0);
    };
    let d = super::duration::parse_go_duration(&s).map_err(InstructionError::Invalid)?;
    if d != 0 && d < 1_000_000 {
        return invalid(format!("Interval {} cannot be less than 1ms", crate::parser::go_quote(name)));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse;

    fn df(src: &str) -> Result<Dockerfile, Vec<(Span, InstructionError)>> {
        parse_dockerfile(&parse(src.as_bytes()).unwrap())
    }

    fn err_messages(src: &str) -> Vec<(usize, String)> {
        df(src)
            .unwrap_err()
            .into_iter()
            .map(|(s, e)| {
                let msg = match e {
                    InstructionError::Invalid(m) => m,
                    InstructionError::Unknown { instruction, suggestion } => {
                        format!("unknown {instruction} {suggestion:?}")
                    }
                };
                (s.start_line, msg)
            })
            .collect()
    }

    macro_rules! first_err {
        ($src:expr, $line:expr, $needle:expr) => {
            let errs = err_messages($src);
            assert!(
                errs.first().is_some_and(|(l, m)| *l == $line && m.contains($needle)),
                "source {:?}: got {errs:?}",
                $src
            );
        };
    }

    #[test]
    fn stages_and_meta_args() {
        let d = df("ARG V=1\nFROM a:$V AS Build\nRUN x\nFROM --platform=linux/arm64 build\nCMD y").unwrap();
        assert_eq!(d.meta_args.len(), 1);
        assert_eq!(d.stages.len(), 2);
        assert_eq!(d.stages[0].name.as_deref(), Some("build"));
        assert_eq!(d.stages[0].commands.len(), 1);
        assert_eq!(d.stages[1].platform.as_deref(), Some("linux/arm64"));
    }

    #[test]
    fn collects_all_errors() {
        let errs = err_messages("FROM a\nCOPPY x y\nRUN --moun=x y\nWORKDIR\nEXPOSE\n");
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert_eq!(errs[0], (2, "unknown COPPY Some(\"COPY\")".to_owned()));
        assert!(errs[1].1.contains("did you mean mount?"));
    }

    #[test]
    fn instruction_errors() {
        first_err!("RUN x", 1, "no build stage in current context");
        first_err!("FROM a b", 1, "one or three arguments");
        first_err!("FROM a AS 1x", 1, "invalid name for build stage");
        first_err!("FROM a\nCOPY x", 2, "requires at least two arguments");
        first_err!("FROM a\nSHELL sh -c", 2, "JSON form");
        first_err!("FROM a\nRUN --network=bridge x", 2, "invalid network mode \"bridge\"");
        first_err!("FROM a\nONBUILD FROM x", 2, "isn't allowed as an ONBUILD trigger");
        first_err!("FROM a\nHEALTHCHECK FOO x", 2, "Unknown type \"FOO\"");
        first_err!("FROM a\nARG =x", 2, "ARG names can not be blank");
        first_err!("FROM a\nCOPY x <<EOF\nEOF\n", 2, "heredoc as a destination");
        first_err!("FROM a\nRUN --mount=from=$X,target=/x y", 2, "'from' doesn't support variable expansion");
        first_err!("FROM a\nHEALTHCHECK --interval=1 CMD x", 2, "time: missing unit in duration \"1\"");
        first_err!("FROM a\nHEALTHCHECK --timeout=10us CMD x", 2, "Interval \"timeout\" cannot be less than 1ms");
        first_err!("FROM a\nHEALTHCHECK --retries=99999999999 CMD x", 2, "value out of range");
        first_err!("FROM a\nADD --from=x a b", 2, "unknown flag: --from");
        first_err!("FROM a\nCOPY --keep-git-dir a b", 2, "unknown flag: --keep-git-dir");
        first_err!("FROM a\nONBUILD ONBUILD RUN x", 2, "Chaining ONBUILD");
    }

    #[test]
    fn shapes() {
        let d = df("FROM a\nRUN echo  hi\nCMD [\"a\",\"b\"]\nONBUILD  run x\nHEALTHCHECK CMD a b\nEXPOSE 80 443/udp 22\nCOPY <<-A x /d\n\tbody\nA\n").unwrap();
        let c = &d.stages[0].commands;
        let Instruction::Run(r) = &c[0].instruction else { panic!() };
        assert_eq!(r.command.args, ["echo  hi"]);
        assert!(r.command.prepend_shell);
        let Instruction::Cmd(cmd) = &c[1].instruction else { panic!() };
        assert_eq!(cmd.args, ["a", "b"]);
        assert!(!cmd.prepend_shell);
        assert_eq!(c[2].instruction, Instruction::Onbuild("run x".into()));
        let Instruction::Healthcheck(h) = &c[3].instruction else { panic!() };
        assert_eq!(h.test, ["CMD-SHELL", "a b"]);
        assert_eq!((h.interval, h.retries), (0, 0));
        let d = df("FROM a\nHEALTHCHECK --interval=1m30s --timeout=5s --start-period=2s --start-interval=1s --retries=4 CMD [\"x\"]").unwrap();
        let Instruction::Healthcheck(h) = &d.stages[0].commands[0].instruction else { panic!() };
        assert_eq!(h.test, ["CMD", "x"]);
        assert_eq!(
            (h.interval, h.timeout, h.start_period, h.start_interval, h.retries),
            (90_000_000_000, 5_000_000_000, 2_000_000_000, 1_000_000_000, 4)
        );
        let Instruction::Run(r) =
            &df("FROM a\nRUN --mount=type=cache,target=/c --mount=from=b,target=/b x").unwrap().stages[0].commands[0]
                .instruction
        else {
            panic!()
        };
        assert_eq!(r.mounts, ["type=cache,target=/c", "from=b,target=/b"]);
        assert_eq!(c[4].instruction, Instruction::Expose(vec!["22".into(), "443/udp".into(), "80".into()]));
        let Instruction::Copy(cp) = &c[5].instruction else { panic!() };
        assert_eq!(cp.paths.sources, ["x"]);
        assert_eq!(cp.paths.contents[0].data, "body\n");
    }
}
