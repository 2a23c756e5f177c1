//! Checks on the parse tree, for every instruction of the file whichever stages are built:
//! `NoEmptyContinuation`, `MaintainerDeprecated`, `StageNameCasing`, `FromAsCasing`,
//! `ConsistentInstructionCasing`, `DuplicateStageName`, `ReservedStageName` and the experimental
//! `InvalidDefinitionDescription` (BuildKit's `instructions.ParseInstructionWithLinter`,
//! `validateStageNames` and `validateCommandCasing`).

use std::collections::BTreeSet;

use super::rules;
use super::Linter;
use crate::parser::{go_quote, Node, Parsed, Span};

/// Stage names BuildKit gives a meaning of its own.
const RESERVED_STAGE_NAMES: [&str; 2] = ["context", "scratch"];

/// Runs the parse-tree checks.
pub(crate) fn check(parsed: &Parsed, lint: &mut Linter) {
    for w in &parsed.warnings {
        lint.report(&rules::NO_EMPTY_CONTINUATION, Span::new(w.line, w.line), &[], "Empty continuation line".into());
    }
    for node in &parsed.nodes {
        check_node(node, lint);
    }
    check_stage_names(parsed, lint);
    check_casing(parsed, lint);
}

fn check_node(node: &Node, lint: &mut Linter) {
    let comments = node.comments.as_slice();
    match node.keyword_lower.as_str() {
        "maintainer" => lint.report(
            &rules::MAINTAINER_DEPRECATED,
            node.span,
            comments,
            "Maintainer instruction is deprecated in favor of using label".into(),
        ),
        "from" => {
            let words = node.args.words();
            if let [_, as_kw, name] = words {
                if *name != name.to_lowercase() {
                    let msg = format!("Stage name '{name}' should be lowercase");
                    lint.report(&rules::STAGE_NAME_CASING, node.span, comments, msg);
                }
                if !as_matches_from(&node.keyword, as_kw) {
                    let msg = format!("'{as_kw}' and '{}' keywords' casing do not match", node.keyword);
                    lint.report(&rules::FROM_AS_CASING, node.span, comments, msg);
                }
                if as_kw.eq_ignore_ascii_case("as") {
                    check_description(lint, node, "FROM", &[name.to_lowercase()]);
                }
            }
        }
        "arg" => {
            let keys: Vec<String> =
                node.args.words().iter().map(|w| w.split_once('=').map_or(w.as_str(), |(k, _)| k).to_owned()).collect();
            check_description(lint, node, "ARG", &keys);
        }
        _ => {}
    }
}

/// `FROM x AS y`: with `FROM` all lowercase or all uppercase, `AS` must be the same.
fn as_matches_from(from: &str, as_kw: &str) -> bool {
    if from == from.to_lowercase() {
        as_kw == as_kw.to_lowercase()
    } else if from == from.to_uppercase() {
        as_kw == as_kw.to_uppercase()
    } else {
        // Mixed-case FROM is ConsistentInstructionCasing's business.
        true
    }
}

/// Experimental: the comment right above a named stage or an `ARG` should describe it
/// (`# name description`).
fn check_description(lint: &mut Linter, node: &Node, instruction: &str, keys: &[String]) {
    let (Some(last), Some(first_key)) = (node.comments.last(), keys.first()) else { return };
    let first_word = last.split(' ').next().unwrap_or_default();
    if keys.iter().any(|k| k == first_word) {
        return;
    }
    let example = if keys.len() > 1 { "<arg_key>" } else { first_key.as_str() };
    let msg = format!("Comment for {instruction} should follow the format: `# {example} <description>`");
    lint.report(&rules::INVALID_DEFINITION_DESCRIPTION, node.span, &node.comments, msg);
}

/// The stage name of a `FROM x AS name` node, lowercased.
fn stage_name(node: &Node) -> Option<String> {
    match node.args.words() {
        [_, as_kw, name] if node.keyword_lower == "from" && as_kw.eq_ignore_ascii_case("as") => {
            Some(name.to_lowercase())
        }
        _ => None,
    }
}

fn check_stage_names(parsed: &Parsed, lint: &mut Linter) {
    let mut seen = BTreeSet::new();
    for node in &parsed.nodes {
        let Some(name) = stage_name(node) else { continue };
        if RESERVED_STAGE_NAMES.contains(&name.as_str()) {
            let msg = format!("Stage name should not use the same name as reserved stage {}", go_quote(&name));
            lint.report(&rules::RESERVED_STAGE_NAME, node.span, &[], msg);
        }
        if !seen.insert(name.clone()) {
            let msg = format!("Duplicate stage name {}, stage names should be unique", go_quote(&name));
            lint.report(&rules::DUPLICATE_STAGE_NAME, node.span, &[], msg);
        }
    }
}

fn is_consistent(s: &str) -> bool {
    s == s.to_lowercase() || s == s.to_uppercase()
}

/// Every instruction from the first `FROM` on should be written in the case most of them
/// use (all lowercase or all uppercase; a tie counts as uppercase). `ARG`s before the first
/// `FROM` are not counted.
fn check_casing(parsed: &Parsed, lint: &mut Linter) {
    let Some(first) = parsed.nodes.iter().position(|n| n.keyword_lower == "from") else { return };
    let nodes = parsed.nodes.get(first..).unwrap_or_default();
    let (mut lower, mut upper) = (0usize, 0usize);
    for n in nodes.iter().filter(|n| is_consistent(&n.keyword)) {
        if n.keyword == n.keyword.to_lowercase() {
            lower += 1;
        } else {
            upper += 1;
        }
    }
    let majority_lower = lower > upper;
    for n in nodes {
        let k = &n.keyword;
        let want = if majority_lower && *k != k.to_lowercase() {
            "lowercase"
        } else if !majority_lower && *k != k.to_uppercase() {
            "uppercase"
        } else {
            continue;
        };
        let msg = format!("Command '{k}' should match the case of the command majority ({want})");
        lint.report(&rules::CONSISTENT_INSTRUCTION_CASING, n.span, &[], msg);
    }
}
