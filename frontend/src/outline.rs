//! What a Dockerfile offers, without building it: its stages ([`targets`], `--call=targets`)
//! and what a target uses ([`outline`], `--call=outline`): the build args with their values and
//! descriptions, the secrets and the SSH sockets (BuildKit's `ListTargets` and `Outline`).
//!
//! Descriptions come from comments: the comment line directly above a `FROM ... AS name` or an
//! `ARG name` that starts with the name (`# name what it is`).

use serde::Serialize;

use crate::convert::{self, BuildRequest, ImageResolver};
use crate::error::{Error, ErrorKind};
use crate::parser::parse;

/// One build stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    /// `AS name` (lowercased); `None` for an unnamed stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// From the `# name ...` comment above the `FROM`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The last stage: what is built without `--target`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// The base as written.
    pub base: String,
    /// `--platform` as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Line of the `FROM` (JSON: BuildKit's `location`).
    #[serde(rename = "location", serialize_with = "location")]
    pub line: usize,
}

/// A build arg a target uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutlineArg {
    /// Name.
    pub name: String,
    /// Value for this build (a `--build-arg`, else the default), empty when unset.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// From the `# NAME ...` comment above the `ARG`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Line of the `ARG` (JSON: BuildKit's `location`).
    #[serde(rename = "location", serialize_with = "location")]
    pub line: usize,
}

/// A secret or an SSH socket a target's `RUN --mount` uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutlineMount {
    /// The id (`--secret id=...`, `--ssh ID=...`).
    pub name: String,
    /// `required=true`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// Line of the first `RUN` using it (JSON: BuildKit's `location`).
    #[serde(rename = "location", serialize_with = "location")]
    pub line: usize,
}

/// What a target needs from the build's caller.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Outline {
    /// The target stage's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its description.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Build args, by line.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<OutlineArg>,
    /// Secrets, by line.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<OutlineMount>,
    /// SSH sockets, by line.
    #[serde(skip_serializing_if = "Vec::is_empty", rename = "ssh")]
    pub ssh: Vec<OutlineMount>,
}

/// A line as BuildKit's JSON gives locations: `{"ranges": [{"start": {"line": N}, ...}]}`.
fn location<S: serde::Serializer>(line: &usize, s: S) -> Result<S::Ok, S::Error> {
    let at = serde_json::json!({ "line": line });
    serde_json::json!({ "ranges": [{ "start": at, "end": at }] }).serialize(s)
}

/// BuildKit's `getDocComment`: the rest of the first comment line starting with `name `.
pub(crate) fn doc_comment(comments: &[String], name: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    let prefix = format!("{name} ");
    comments.iter().find_map(|c| c.strip_prefix(&prefix)).unwrap_or_default().to_owned()
}

/// The stages of a Dockerfile, in order.
///
/// # Errors
///
/// The Dockerfile does not parse.
pub fn targets(dockerfile: &[u8], filename: &str) -> Result<Vec<Target>, Error> {
    if dockerfile.is_empty() {
        return Err(ErrorKind::Empty.into());
    }
    let parsed = parse(dockerfile).map_err(|e| Error::at(filename, e.span, ErrorKind::Syntax(e.message)))?;
    let df = convert::instructions(filename, &parsed)?;
    let last = df.stages.len().saturating_sub(1);
    Ok(df
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| Target {
            name: s.name.clone(),
            description: doc_comment(&s.comments, s.name.as_deref().unwrap_or_default()),
            default: i == last,
            base: s.base.clone(),
            platform: s.platform.clone(),
            line: s.span.start_line,
        })
        .collect())
}

/// What `req.target` (or the last stage) uses: the Dockerfile is converted as for a build
/// (base images are resolved) but nothing runs.
///
/// # Errors
///
/// As for [`crate::build`] (build checks never fail it).
pub fn outline(req: &BuildRequest<'_>, resolver: &dyn ImageResolver) -> Result<Outline, Error> {
    convert::outline(req, resolver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_stages_with_descriptions() {
        let src = b"ARG V=1\n# build compiles the app\nFROM busybox AS build\n\n# unrelated\nFROM build\n";
        let t = targets(src, "Dockerfile").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name.as_deref(), Some("build"));
        assert_eq!(t[0].description, "compiles the app");
        assert!(!t[0].default && t[1].default);
        assert_eq!((t[1].name.as_deref(), t[1].description.as_str(), t[1].line), (None, "", 6));
        assert!(targets(b"FROM a\nNOPE\n", "Dockerfile").is_err());
        let json = serde_json::to_value(&t[0]).unwrap();
        assert_eq!(json["location"]["ranges"][0]["start"]["line"], 3);
        assert_eq!(json["name"], "build");
        assert!(json.get("default").is_none() && json.get("platform").is_none());
    }
}
