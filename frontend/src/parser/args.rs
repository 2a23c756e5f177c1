//! Per-instruction argument parsers (BuildKit's `line_parsers.go`): each turns the text after
//! the keyword and flags into [`Args`].

use super::node::{Args, KeyValue};
use super::split::{parse_words, split_ws};

/// Parsed arguments plus whether they were a JSON array.
pub(crate) struct Parsed {
    pub args: Args,
    pub json: bool,
}

impl Parsed {
    fn words(words: Vec<String>) -> Parsed {
        Parsed { args: Args::Words(words), json: false }
    }
}

/// Why arguments could not be parsed.
pub(crate) type ArgsError = String;

const NOT_STRING_ARRAY: &str = "when using JSON array syntax, arrays must be comprised of strings only";

/// `ENV` and `LABEL`: `key=value ...`, or the legacy `key value`.
pub(crate) fn name_val(rest: &str, keyword: &str, escape: char) -> Result<Parsed, ArgsError> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Parsed { args: Args::KeyValues(Vec::new()), json: false });
    };
    if !first.contains('=') {
        let parts = split_ws(rest, Some(2));
        let (Some(key), Some(value)) = (parts.first(), parts.get(1)) else {
            return Err(format!("{keyword} must have two arguments"));
        };
        let kv = KeyValue { key: (*key).to_owned(), value: (*value).to_owned(), has_equals: false };
        return Ok(Parsed { args: Args::KeyValues(vec![kv]), json: false });
    }
    let mut pairs = Vec::with_capacity(words.len());
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                super::dump::go_quote(&word)
            ));
        };
        pairs.push(KeyValue { key: key.to_owned(), value: value.to_owned(), has_equals: true });
    }
    Ok(Parsed { args: Args::KeyValues(pairs), json: false })
}

/// `ARG`: quote-aware words, each `name` or `name=value`.
pub(crate) fn name_or_name_val(rest: &str, escape: char) -> Parsed {
    Parsed::words(parse_words(rest, escape))
}

/// `FROM`, `EXPOSE`: whitespace-separated words.
pub(crate) fn whitespace_delimited(rest: &str) -> Parsed {
    if rest.is_empty() {
        return Parsed::words(Vec::new());
    }
    Parsed::words(split_ws(rest, None).into_iter().map(str::to_owned).collect())
}

/// `USER`, `WORKDIR`, `MAINTAINER`, `STOPSIGNAL`: the whole rest as one word.
pub(crate) fn single(rest: &str) -> Parsed {
    if rest.is_empty() {
        return Parsed::words(Vec::new());
    }
    Parsed::words(vec![rest.to_owned()])
}

enum JsonOutcome {
    Strings(Vec<String>),
    /// Valid JSON array with a non-string element: a hard error.
    NotStrings,
    /// Not a JSON array: the caller falls back to shell form.
    NotJson,
}

fn json_array(rest: &str) -> JsonOutcome {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return JsonOutcome::NotJson;
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(rest) {
        Err(_) => JsonOutcome::NotJson,
        Ok(values) => {
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                match v {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return JsonOutcome::NotStrings,
                }
            }
            JsonOutcome::Strings(out)
        }
    }
}

/// `RUN`, `CMD`, `ENTRYPOINT`, `SHELL`: a JSON array of strings (exec form), else the whole
/// rest as one word (shell form), as BuildKit falls back on invalid JSON.
pub(crate) fn maybe_json(rest: &str) -> Result<Parsed, ArgsError> {
    if rest.is_empty() {
        return Ok(Parsed::words(Vec::new()));
    }
    match json_array(rest) {
        JsonOutcome::Strings(s) => Ok(Parsed { args: Args::Words(s), json: true }),
        JsonOutcome::NotStrings => Err(NOT_STRING_ARRAY.to_owned()),
        JsonOutcome::NotJson => Ok(Parsed::words(vec![rest.to_owned()])),
    }
}

/// `COPY`, `ADD`, `VOLUME`: a JSON array of strings, else whitespace-separated words.
pub(crate) fn maybe_json_to_list(rest: &str) -> Result<Parsed, ArgsError> {
    match json_array(rest) {
        JsonOutcome::Strings(s) => Ok(Parsed { args: Args::Words(s), json: true }),
        JsonOutcome::NotStrings => Err(NOT_STRING_ARRAY.to_owned()),
        JsonOutcome::NotJson => Ok(whitespace_delimited(rest)),
    }
}

/// `HEALTHCHECK`: a type word (`CMD`, `NONE`) then a [`maybe_json`] command.
pub(crate) fn health_config(rest: &str) -> Result<Parsed, ArgsError> {
    let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if sep == 0 {
        return Ok(Parsed::words(Vec::new()));
    }
    let (typ, tail) = rest.split_at(sep);
    let cmd = maybe_json(tail.trim_start())?;
    let mut words = vec![typ.to_owned()];
    words.extend(cmd.args.words().iter().cloned());
    Ok(Parsed { args: Args::Words(words), json: cmd.json })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(p: Result<Parsed, ArgsError>) -> (Vec<String>, bool) {
        let p = p.unwrap();
        (p.args.words().to_vec(), p.json)
    }

    #[test]
    fn json_or_shell() {
        assert_eq!(words(maybe_json(r#"["a", "b"]"#)), (vec!["a".into(), "b".into()], true));
        assert_eq!(words(maybe_json(r#"[]"#)), (vec![], true));
        assert_eq!(words(maybe_json(r#"["a" "b"]"#)), (vec![r#"["a" "b"]"#.into()], false));
        assert_eq!(words(maybe_json("['a']")), (vec!["['a']".into()], false));
        assert!(maybe_json(r#"["a", ["b"]]"#).is_err());
        assert!(maybe_json(r#"[1]"#).is_err());
        assert_eq!(words(maybe_json_to_list("a  b")), (vec!["a".into(), "b".into()], false));
    }

    #[test]
    fn env_forms() {
        let p = name_val("a b c", "ENV", '\\').unwrap();
        assert_eq!(p.args, Args::KeyValues(vec![KeyValue { key: "a".into(), value: "b c".into(), has_equals: false }]));
        assert!(name_val("a", "ENV", '\\').is_err());
        assert!(name_val("a=1 b", "ENV", '\\').is_err());
    }

    #[test]
    fn healthcheck_shapes() {
        assert_eq!(words(health_config("NONE")), (vec!["NONE".into()], false));
        assert_eq!(words(health_config(r#"CMD ["a b"]"#)), (vec!["CMD".into(), "a b".into()], true));
        assert_eq!(words(health_config("CMD  x y")), (vec!["CMD".into(), "x y".into()], false));
        assert_eq!(words(health_config("")), (vec![], false));
    }
}
