//! `RUN --mount=...` values (BuildKit's `instructions/commands_runmount.go`): CSV fields of
//! `key=value` options, checked in order as BuildKit checks them.
//!
//! Values are variable-expanded with the stage's environment when the `RUN` is dispatched, so a
//! mount is parsed twice: when the Dockerfile is read, only `from` is looked at (it decides which
//! stages the `RUN` needs and may not use variables); at dispatch, the whole value with an
//! expander.

use crate::suggest::did_you_mean;

/// The kind of a `RUN --mount`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountType {
    /// `type=bind` (the default).
    Bind,
    /// `type=cache`.
    Cache,
    /// `type=tmpfs`.
    Tmpfs,
    /// `type=secret`.
    Secret,
    /// `type=ssh`.
    Ssh,
}

impl MountType {
    /// The name as written in Dockerfiles.
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// `sharing=` of a cache mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// `shared` (the default).
    Shared,
    /// `private`.
    Private,
    /// `locked`.
    Locked,
}

/// One parsed `--mount` value; absent options keep BuildKit's zero values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    /// `type`.
    pub kind: MountType,
    /// `from`: stage name or index, or image; empty for the build context.
    pub from: String,
    /// `source`/`src`.
    pub source: String,
    /// `target`/`dst`/`destination`.
    pub target: String,
    /// `ro`/`readonly`/`rw`/`readwrite`, or the type's default (read-only for bind, secret, ssh).
    pub readonly: bool,
    /// tmpfs `size` in bytes (0: no limit).
    pub size: u64,
    /// `id` (cache id, secret id, ssh id).
    pub id: String,
    /// cache `sharing`.
    pub sharing: Option<Sharing>,
    /// secret/ssh `required`.
    pub required: bool,
    /// secret `env`.
    pub env: Option<String>,
    /// `mode` (octal).
    pub mode: Option<u32>,
    /// `uid`.
    pub uid: Option<u32>,
    /// `gid`.
    pub gid: Option<u32>,
}

const MOUNT_TYPES: [&str; 5] = ["bind", "cache", "tmpfs", "secret", "ssh"];
const SHARING: [&str; 3] = ["shared", "private", "locked"];
const KEYS: [&str; 19] = [
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// Go's `encoding/csv` on one line (what `csvvalue.Fields` does): comma-separated, `"..."`
/// quoting with `""` for a quote.
pub(crate) fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    if line.is_empty() {
        return Ok(out);
    }
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => match chars.peek() {
                        None | Some(',') => break,
                        Some(_) => return Err("extraneous or missing \" in quoted-field".to_owned()),
                    },
                    Some(c) => field.push(c),
                    None => return Err("extraneous or missing \" in quoted-field".to_owned()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '"' {
                    return Err("bare \" in non-quoted-field".to_owned());
                }
                field.push(c);
                chars.next();
            }
        }
        out.push(field);
        match chars.next() {
            Some(',') => {}
            _ => return Ok(out),
        }
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `units.RAMInBytes`: `64m`, `1.5GiB`, `1024` (binary multiples).
pub(crate) fn ram_in_bytes(s: &str) -> Option<u64> {
    let num_len = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, rest) = s.split_at(num_len);
    if num.is_empty() || !num.starts_with(|c: char| c.is_ascii_digit()) || num.ends_with('.') {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let mut chars = rest.chars();
    let mut mult = 1f64;
    let mut next = chars.next();
    if let Some(c) = next {
        let power = "kmgtp".find(c.to_ascii_lowercase());
        if let Some(p) = power {
            mult = 1024f64.powi(i32::try_from(p).ok()? + 1);
            next = chars.next();
        }
    }
    if matches!(next, Some('i' | 'I')) {
        next = chars.next();
    }
    if matches!(next, Some('b' | 'B')) {
        next = chars.next();
    }
    if next.is_some() {
        return None;
    }
    let bytes = value * mult;
    // Go converts with int64(); sizes beyond that are nonsense anyway.
    (bytes.is_finite() && bytes < 9.2e18).then_some(bytes as u64)
}

fn with_suggestion(msg: String, value: &str, options: &[&str]) -> String {
    match did_you_mean(value, options, true) {
        Some(s) => format!("{msg} (did you mean {s}?)"),
        None => msg,
    }
}

/// The `from=` of a mount as written, checked for variables (which `from` does not support).
pub(crate) fn mount_from(raw: &str) -> Result<Option<String>, String> {
    let fields = csv_fields(raw).map_err(|e| format!("failed to parse csv mounts: {e}"))?;
    let mut from = None;
    for f in fields {
        let Some((k, v)) = f.split_once('=') else { continue };
        if k.eq_ignore_ascii_case("from") {
            if v.find('$').is_some_and(|i| i != v.len() - 1) {
                return Err("'from' doesn't support variable expansion, define alias stage instead".to_owned());
            }
            from = Some(v.to_owned());
        }
    }
    Ok(from.filter(|f| !f.is_empty()))
}

/// Parses a `--mount` value, expanding each value with `expand`.
pub fn parse_mount(raw: &str, expand: &mut dyn FnMut(&str) -> Result<String, String>) -> Result<MountSpec, String> {
    let fields = csv_fields(raw).map_err(|e| format!("failed to parse csv mounts: {e}"))?;
    let mut m = MountSpec {
        kind: MountType::Bind,
        from: String::new(),
        source: String::new(),
        target: String::new(),
        readonly: false,
        size: 0,
        id: String::new(),
        sharing: None,
        required: false,
        env: None,
        mode: None,
        uid: None,
        gid: None,
    };
    let mut ro_auto = true;
    for field in &fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), Some(v)),
            None => (field.to_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => m.required = true,
                "required" => {
                    return Err(format!("unexpected key '{key}' for mount type '{}'", m.kind.as_str()));
                }
                _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
            }
            continue;
        };
        let value = expand(value)?;
        let bad_value = || format!("invalid value for {key}: {value}");
        match key.as_str() {
            "type" => {
                m.kind = match value.to_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        let msg = format!("unsupported mount type {}", crate::parser::go_quote(&value));
                        return Err(with_suggestion(msg, &value, &MOUNT_TYPES));
                    }
                };
            }
            "from" => m.from = value,
            "source" | "src" => m.source = value,
            "target" | "dst" | "destination" => m.target = value,
            "readonly" | "ro" => {
                m.readonly = parse_bool(&value).ok_or_else(bad_value)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !parse_bool(&value).ok_or_else(bad_value)?;
                ro_auto = false;
            }
            "required" => {
                if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    return Err(format!("unexpected key '{key}' for mount type '{}'", m.kind.as_str()));
                }
                m.required = parse_bool(&value).ok_or_else(bad_value)?;
            }
            "size" => {
                if m.kind != MountType::Tmpfs {
                    return Err(format!("unexpected key '{key}' for mount type '{}'", m.kind.as_str()));
                }
                m.size = ram_in_bytes(&value).ok_or_else(bad_value)?;
            }
            "id" => m.id = value,
            "sharing" => {
                m.sharing = Some(match value.to_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => {
                        let msg = format!("unsupported sharing value {}", crate::parser::go_quote(&value));
                        return Err(with_suggestion(msg, &value, &SHARING));
                    }
                });
            }
            "mode" => {
                let mode = u32::from_str_radix(&value, 8).ok().filter(|_| !value.starts_with(['+', '-']));
                m.mode = Some(mode.ok_or_else(|| format!("invalid value {value} for mode"))?);
            }
            "uid" => {
                let uid = value.parse::<u32>().ok().filter(|_| !value.starts_with('+'));
                m.uid = Some(uid.ok_or_else(|| format!("invalid value {value} for uid"))?);
            }
            "gid" => {
                let gid = value.parse::<u32>().ok().filter(|_| !value.starts_with('+'));
                m.gid = Some(gid.ok_or_else(|| format!("invalid value {value} for gid"))?);
            }
            "env" => m.env = Some(value),
            _ => {
                let msg = format!("unexpected key '{key}' in '{field}'");
                return Err(with_suggestion(msg, &key, &KEYS));
            }
        }
    }
    if !matches!(m.kind, MountType::Secret | MountType::Ssh | MountType::Cache) {
        let t = crate::parser::go_quote(m.kind.as_str());
        if m.mode.is_some() {
            return Err(format!("mode not allowed for {t} type mounts"));
        }
        if m.uid.is_some() {
            return Err(format!("uid not allowed for {t} type mounts"));
        }
        if m.gid.is_some() {
            return Err(format!("gid not allowed for {t} type mounts"));
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.kind == MountType::Secret {
        if !m.from.is_empty() {
            return Err("secret mount should not have a from".to_owned());
        }
        if m.sharing.is_some() {
            return Err("secret mount should not define sharing".to_owned());
        }
        if m.source.is_empty() && m.target.is_empty() && m.id.is_empty() {
            return Err("invalid secret mount. one of source, target required".to_owned());
        }
        if !m.source.is_empty() && !m.id.is_empty() {
            return Err("both source and id can't be set".to_owned());
        }
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(format!("invalid cache sharing set for {} mount", m.kind.as_str()));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<MountSpec, String> {
        parse_mount(raw, &mut |v| Ok(v.replace("$T", "/t")))
    }

    macro_rules! mount_err {
        ($raw:expr, $msg:expr) => {
            assert_eq!(parse($raw).unwrap_err(), $msg, "{:?}", $raw);
        };
    }

    #[test]
    fn csv() {
        assert_eq!(csv_fields("a=1,b=2").unwrap(), ["a=1", "b=2"]);
        assert_eq!(csv_fields("\"target=/a,b\",ro").unwrap(), ["target=/a,b", "ro"]);
        assert_eq!(csv_fields("\"x\"\"y\"").unwrap(), ["x\"y"]);
        assert_eq!(csv_fields("a,,b,").unwrap(), ["a", "", "b", ""]);
        assert!(csv_fields("a\"b").is_err());
        assert!(csv_fields("\"ab").is_err());
        assert!(csv_fields("\"a\"b").is_err());
        assert!(csv_fields("").unwrap().is_empty());
    }

    #[test]
    fn sizes() {
        assert_eq!(ram_in_bytes("1024"), Some(1024));
        assert_eq!(ram_in_bytes("64m"), Some(64 << 20));
        assert_eq!(ram_in_bytes("1.5GiB"), Some(1536 << 20));
        assert_eq!(ram_in_bytes("2 kb"), Some(2048));
        assert_eq!(ram_in_bytes("x"), None);
        assert_eq!(ram_in_bytes("1q"), None);
        assert_eq!(ram_in_bytes(""), None);
    }

    #[test]
    fn defaults_per_type() {
        let b = parse("target=$T").unwrap();
        assert_eq!((b.kind, b.target.as_str(), b.readonly), (MountType::Bind, "/t", true));
        let c = parse("type=cache,target=/c,id=x,sharing=LOCKED,mode=0700,uid=1,gid=2").unwrap();
        assert_eq!(
            (c.readonly, c.sharing, c.mode, c.uid, c.gid),
            (false, Some(Sharing::Locked), Some(0o700), Some(1), Some(2))
        );
        assert!(!parse("type=tmpfs,target=/x,size=1m").unwrap().readonly);
        assert_eq!(parse("type=tmpfs,target=/x,size=1m").unwrap().size, 1 << 20);
        let s = parse("type=secret,id=tok,required,env=TOKEN").unwrap();
        assert!(s.readonly && s.required);
        assert_eq!(s.env.as_deref(), Some("TOKEN"));
        assert!(parse("type=ssh,required=false").unwrap().readonly);
        assert!(!parse("type=bind,target=/x,rw").unwrap().readonly);
        assert!(!parse("type=bind,target=/x,readwrite=true").unwrap().readonly);
        assert!(parse("type=cache,target=/x,ro").unwrap().readonly);
        assert_eq!(parse("Type=Bind,Source=a,DST=/b,FROM=build").unwrap().from, "build");
    }

    #[test]
    fn errors() {
        mount_err!("type=bnd", "unsupported mount type \"bnd\" (did you mean bind?)");
        mount_err!("type=cache,sharing=x", "unsupported sharing value \"x\"");
        mount_err!("targt=/x", "unexpected key 'targt' in 'targt=/x' (did you mean target?)");
        mount_err!("required,type=secret", "unexpected key 'required' for mount type 'bind'");
        mount_err!("type=cache,size=1", "unexpected key 'size' for mount type 'cache'");
        mount_err!("type=tmpfs,size=lots", "invalid value for size: lots");
        mount_err!("target=/x,mode=0600", "mode not allowed for \"bind\" type mounts");
        mount_err!("type=tmpfs,target=/x,uid=1", "uid not allowed for \"tmpfs\" type mounts");
        mount_err!("type=cache,target=/x,mode=9", "invalid value 9 for mode");
        mount_err!("type=cache,target=/x,uid=-1", "invalid value -1 for uid");
        mount_err!("ro=maybe", "invalid value for ro: maybe");
        mount_err!("bogus", "invalid field 'bogus' must be a key=value pair");
        mount_err!("type=secret,from=x,id=a", "secret mount should not have a from");
        mount_err!("type=secret", "invalid secret mount. one of source, target required");
        mount_err!("type=secret,src=a,id=b", "both source and id can't be set");
        mount_err!("type=secret,id=a,sharing=shared", "secret mount should not define sharing");
        mount_err!("type=bind,target=/x,sharing=shared", "invalid cache sharing set for bind mount");
        mount_err!("\"target=/x", "failed to parse csv mounts: extraneous or missing \" in quoted-field");
        assert_eq!(parse_mount("target=$X", &mut |_| Err("X: unset".to_owned())).unwrap_err(), "X: unset");
    }

    #[test]
    fn from_checked_before_expansion() {
        assert_eq!(mount_from("type=bind,from=build,target=/x"), Ok(Some("build".into())));
        assert_eq!(mount_from("target=/x"), Ok(None));
        assert_eq!(mount_from("from=a$"), Ok(Some("a$".into())));
        assert!(mount_from("from=$STAGE").unwrap_err().contains("doesn't support variable expansion"));
    }
}
