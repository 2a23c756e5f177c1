//! The Docker-only runtime-config fields OCI's `Config` has no room for (`Healthcheck`,
//! `OnBuild`, `Shell`, `ArgsEscaped`): read from a base image's raw config blob, carried through
//! the stages, and handed to the exporter as JSON with Docker's names and shapes.

use serde_json::{Map, Value};

use crate::instructions::{format_go_duration, Healthcheck};

/// Docker's `HealthConfig`: durations in nanoseconds, 0 meaning "inherit the default".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HealthConfig {
    pub test: Vec<String>,
    pub interval: i64,
    pub timeout: i64,
    pub start_period: i64,
    pub start_interval: i64,
    pub retries: i64,
}

impl HealthConfig {
    pub(crate) fn from_instruction(h: &Healthcheck) -> HealthConfig {
        HealthConfig {
            test: h.test.clone(),
            interval: h.interval,
            timeout: h.timeout,
            start_period: h.start_period,
            start_interval: h.start_interval,
            retries: i64::from(h.retries),
        }
    }

    /// Docker's JSON: every field `omitempty`.
    pub(crate) fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.test.is_empty() {
            m.insert("Test".into(), Value::from(self.test.clone()));
        }
        for (k, v) in [
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
            ("Retries", self.retries),
        ] {
            if v != 0 {
                m.insert(k.into(), Value::from(v));
            }
        }
        Value::Object(m)
    }

    fn from_json(v: &Value) -> Option<HealthConfig> {
        let o = v.as_object()?;
        let num = |k: &str| o.get(k).and_then(Value::as_i64).unwrap_or(0);
        Some(HealthConfig {
            test: string_list(o.get("Test")).unwrap_or_default(),
            interval: num("Interval"),
            timeout: num("Timeout"),
            start_period: num("StartPeriod"),
            start_interval: num("StartInterval"),
            retries: num("Retries"),
        })
    }

    /// The history text of BuildKit 0.13 (and Docker's classic builder): Go's `%q` of a
    /// pointer to the struct, e.g. `&{["CMD-SHELL" "curl -f x"] "30s" "3s" "0s" "0s" '\x03'}`.
    pub(crate) fn history_text(&self) -> String {
        let test: Vec<String> = self.test.iter().map(|t| crate::parser::go_quote(t)).collect();
        let d = |ns: i64| crate::parser::go_quote(&format_go_duration(ns));
        format!(
            "&{{[{}] {} {} {} {} {}}}",
            test.join(" "),
            d(self.interval),
            d(self.timeout),
            d(self.start_period),
            d(self.start_interval),
            go_quote_rune(self.retries)
        )
    }
}

/// Go's `%q` of an integer: a quoted character literal (`strconv.QuoteRune`).
fn go_quote_rune(n: i64) -> String {
    let c = u32::try_from(n).ok().and_then(char::from_u32).unwrap_or('\u{fffd}');
    let body = match c {
        '\x07' => "\\a".to_owned(),
        '\x08' => "\\b".to_owned(),
        '\x0c' => "\\f".to_owned(),
        '\n' => "\\n".to_owned(),
        '\r' => "\\r".to_owned(),
        '\t' => "\\t".to_owned(),
        '\x0b' => "\\v".to_owned(),
        '\'' => "\\'".to_owned(),
        '\\' => "\\\\".to_owned(),
        c if (c as u32) < 0x20 || c == '\x7f' => format!("\\x{:02x}", c as u32),
        c if c.is_control() => format!("\\u{:04x}", c as u32),
        c => c.to_string(),
    };
    format!("'{body}'")
}

fn string_list(v: Option<&Value>) -> Option<Vec<String>> {
    v?.as_array()?.iter().map(|s| s.as_str().map(str::to_owned)).collect()
}

/// The Docker-only fields of a config blob's `config` object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DockerExtras {
    pub healthcheck: Option<HealthConfig>,
    pub onbuild: Vec<String>,
    pub shell: Vec<String>,
    pub args_escaped: bool,
}

impl DockerExtras {
    /// Reads them from a raw config blob; a blob that is not JSON gives nothing.
    pub(crate) fn from_raw(raw: Option<&[u8]>) -> DockerExtras {
        let Some(v) = raw.and_then(|r| serde_json::from_slice::<Value>(r).ok()) else {
            return DockerExtras::default();
        };
        let Some(c) = v.get("config") else {
            return DockerExtras::default();
        };
        DockerExtras {
            healthcheck: c.get("Healthcheck").and_then(HealthConfig::from_json),
            onbuild: string_list(c.get("OnBuild")).unwrap_or_default(),
            shell: string_list(c.get("Shell")).unwrap_or_default(),
            args_escaped: c.get("ArgsEscaped").and_then(Value::as_bool).unwrap_or(false),
        }
    }
}

/// `BuildDefinition::extra_config` from the final values.
pub(crate) fn extra_config(
    healthcheck: Option<&HealthConfig>,
    onbuild: &[String],
    shell: &[String],
    args_escaped: bool,
) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(h) = healthcheck {
        m.insert("Healthcheck".into(), h.to_json());
    }
    if !onbuild.is_empty() {
        m.insert("OnBuild".into(), Value::from(onbuild.to_vec()));
    }
    if !shell.is_empty() {
        m.insert("Shell".into(), Value::from(shell.to_vec()));
    }
    if args_escaped {
        m.insert("ArgsEscaped".into(), Value::Bool(true));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_config_round_trip() {
        let raw = br#"{"config":{"Healthcheck":{"Test":["CMD","true"],"Interval":1000000000,"Retries":2},
            "OnBuild":["RUN x"],"Shell":["/bin/bash","-c"],"ArgsEscaped":true},"rootfs":{}}"#;
        let x = DockerExtras::from_raw(Some(raw));
        let h = x.healthcheck.clone().unwrap();
        assert_eq!((h.interval, h.retries, h.timeout), (1_000_000_000, 2, 0));
        assert_eq!(x.onbuild, ["RUN x"]);
        assert_eq!(x.shell, ["/bin/bash", "-c"]);
        let m = extra_config(x.healthcheck.as_ref(), &x.onbuild, &x.shell, x.args_escaped);
        assert_eq!(
            Value::Object(m),
            serde_json::json!({"Healthcheck":{"Test":["CMD","true"],"Interval":1000000000,"Retries":2},
                "OnBuild":["RUN x"],"Shell":["/bin/bash","-c"],"ArgsEscaped":true})
        );
        assert_eq!(DockerExtras::from_raw(Some(b"not json")), DockerExtras::default());
        assert_eq!(DockerExtras::from_raw(None), DockerExtras::default());
    }

    #[test]
    fn history_text_is_go_percent_q() {
        let h = HealthConfig {
            test: vec!["CMD-SHELL".into(), "curl -f http://x/".into()],
            interval: 30_000_000_000,
            timeout: 3_000_000_000,
            retries: 3,
            ..HealthConfig::default()
        };
        assert_eq!(h.history_text(), r#"&{["CMD-SHELL" "curl -f http://x/"] "30s" "3s" "0s" "0s" '\x03'}"#);
        assert_eq!(go_quote_rune(65), "'A'");
        assert_eq!(go_quote_rune(10), "'\\n'");
    }
}
