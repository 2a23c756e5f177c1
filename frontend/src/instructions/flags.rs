//! Builder flags (`--from=x`, `--link`) of one instruction, checked against the flags the
//! instruction accepts (BuildKit's `BFlags`).

use std::collections::BTreeMap;

use crate::suggest::did_you_mean;

/// The kind of value a flag takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlagKind {
    /// `--x`, `--x=true|false`.
    Bool,
    /// `--x=value`, at most once.
    String,
    /// `--x=value`, repeatable.
    Strings,
}

/// Flag values after parsing.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    values: BTreeMap<String, Vec<String>>,
}

impl Flags {
    /// Parses `raw` (as written, `--name[=value]`) against the accepted `(name, kind)` list.
    pub(crate) fn parse(raw: &[String], accepted: &[(&str, FlagKind)]) -> Result<Flags, String> {
        let mut flags = Flags::default();
        for arg in raw {
            if arg == "--" {
                break;
            }
            let Some(body) = arg.strip_prefix("--") else {
                return Err(format!("arg should start with -- : {arg}"));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(_, kind)) = accepted.iter().find(|(n, _)| *n == name) else {
                let names: Vec<&str> = accepted.iter().map(|(n, _)| *n).collect();
                let mut msg = format!("unknown flag: --{name}");
                if let Some(s) = did_you_mean(name, &names, true) {
                    msg.push_str(&format!(" (did you mean {s}?)"));
                }
                return Err(msg);
            };
            if kind != FlagKind::Strings && flags.values.contains_key(name) {
                return Err(format!("duplicate flag specified: --{name}"));
            }
            let value = match (kind, value) {
                (FlagKind::Bool, Some("")) => return Err(format!("missing a value on flag: --{name}")),
                (FlagKind::Bool, None) => "true".to_owned(),
                (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" => "true".to_owned(),
                    "false" => "false".to_owned(),
                    _ => return Err(format!("expecting boolean value for flag --{name}, not: {v}")),
                },
                (_, None) => return Err(format!("missing a value on flag: --{name}")),
                (_, Some(v)) => v.to_owned(),
            };
            flags.values.entry(name.to_owned()).or_default().push(value);
        }
        Ok(flags)
    }

    /// The value of a string flag, if given.
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.last()).cloned()
    }

    /// Every value of a repeatable flag.
    pub(crate) fn strings(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    /// A bool flag: `None` when absent.
    pub(crate) fn bool(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCEPTED: &[(&str, FlagKind)] =
        &[("from", FlagKind::String), ("link", FlagKind::Bool), ("exclude", FlagKind::Strings)];

    fn parse(raw: &[&str]) -> Result<Flags, String> {
        let raw: Vec<String> = raw.iter().map(|s| s.to_string()).collect();
        Flags::parse(&raw, ACCEPTED)
    }

    #[test]
    fn flag_rules() {
        let f = parse(&["--from=a", "--link", "--exclude=x", "--exclude=y"]).unwrap();
        assert_eq!(f.string("from").as_deref(), Some("a"));
        assert_eq!(f.bool("link"), Some(true));
        assert_eq!(f.strings("exclude"), ["x", "y"]);
        assert_eq!(parse(&["--link=FALSE"]).unwrap().bool("link"), Some(false));
        assert_eq!(parse(&["--form=a"]).unwrap_err(), "unknown flag: --form (did you mean from?)");
        assert!(parse(&["--from"]).unwrap_err().contains("missing a value"));
        assert!(parse(&["--from=a", "--from=b"]).unwrap_err().contains("duplicate"));
        assert!(parse(&["--link="]).is_err());
        assert!(parse(&["--link=maybe"]).is_err());
        assert!(parse(&["--", "--whatever"]).is_ok());
    }
}
