//! The state a stage is built in: current filesystem, build-time environment, image config
//! being assembled, history so far (BuildKit's `dispatchState`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use oci_spec::image::{Config, ConfigBuilder, ImageConfiguration};
use rbuild_solver::ir::{Input, Platform};

use super::imageconfig::{DockerExtras, HealthConfig};
use super::{HistoryStep, ResolvedImage};
use crate::instructions::ArgDecl;
use crate::shell::Env;

/// `PATH` every Linux stage gets when its base has none.
pub(crate) const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The `comment` BuildKit writes on every history entry.
pub(crate) const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// The image config fields a Dockerfile can change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ImageConfig {
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub user: String,
    pub working_dir: String,
    pub labels: BTreeMap<String, String>,
    pub exposed_ports: BTreeSet<String>,
    pub volumes: BTreeSet<String>,
    pub stop_signal: Option<String>,
    /// `SHELL`; empty means the default `/bin/sh -c`.
    pub shell: Vec<String>,
    /// `MAINTAINER`.
    pub author: Option<String>,
    /// `HEALTHCHECK` (Docker-only field).
    pub healthcheck: Option<HealthConfig>,
    /// `ONBUILD` triggers recorded for images built on this one (Docker-only field).
    pub onbuild: Vec<String>,
    /// Docker's `ArgsEscaped`, which BuildKit sets with every `CMD`.
    pub args_escaped: bool,
    /// Position of each key in `env` (kept in step by [`ImageConfig::env_set`]).
    env_pos: HashMap<String, usize>,
}

impl ImageConfig {
    /// The config of `FROM scratch` (BuildKit's `emptyImage`).
    pub(crate) fn scratch() -> ImageConfig {
        ImageConfig { env: vec![format!("PATH={DEFAULT_PATH}")], working_dir: "/".to_owned(), ..ImageConfig::default() }
            .reindexed()
    }

    fn reindexed(mut self) -> ImageConfig {
        self.env_pos.clear();
        for (i, e) in self.env.iter().enumerate() {
            let k = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
            self.env_pos.entry(k.to_owned()).or_insert(i);
        }
        self
    }

    /// The runtime config of a pulled image, Docker-only fields read from its raw config.
    pub(crate) fn from_resolved(resolved: &ResolvedImage) -> ImageConfig {
        let mut out = ImageConfig::from_image(&resolved.config);
        let extras = DockerExtras::from_raw(resolved.raw_config.as_deref());
        out.healthcheck = extras.healthcheck;
        out.onbuild = extras.onbuild;
        out.shell = extras.shell;
        out.args_escaped = extras.args_escaped;
        out
    }

    /// The runtime config of a pulled image (OCI fields only).
    fn from_image(image: &ImageConfiguration) -> ImageConfig {
        let mut out = ImageConfig { author: image.author().clone(), ..ImageConfig::default() };
        if let Some(c) = image.config() {
            out.env = c.env().clone().unwrap_or_default();
            out.cmd = c.cmd().clone();
            out.entrypoint = c.entrypoint().clone();
            out.user = c.user().clone().unwrap_or_default();
            out.working_dir = c.working_dir().clone().unwrap_or_default();
            out.labels = c.labels().clone().unwrap_or_default().into_iter().collect();
            out.exposed_ports = c.exposed_ports().clone().unwrap_or_default().into_iter().collect();
            out.volumes = c.volumes().clone().unwrap_or_default().into_iter().collect();
            out.stop_signal = c.stop_signal().clone();
        }
        out.reindexed()
    }

    /// The value of `key` in the config env.
    pub(crate) fn env_get(&self, key: &str) -> Option<&str> {
        let e = self.env.as_slice().get(*self.env_pos.get(key)?)?;
        Some(e.split_once('=').map_or("", |(_, v)| v))
    }

    /// BuildKit's `addEnv`: replaces `key` in place, else appends.
    pub(crate) fn env_set(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self.env_pos.get(key).and_then(|&i| self.env.get_mut(i)) {
            Some(slot) => *slot = entry,
            None => {
                self.env_pos.insert(key.to_owned(), self.env.len());
                self.env.push(entry);
            }
        }
    }

    /// As an OCI runtime config.
    pub(crate) fn to_oci(&self) -> Config {
        let mut b = ConfigBuilder::default().env(self.env.clone());
        if !self.user.is_empty() {
            b = b.user(self.user.clone());
        }
        if !self.working_dir.is_empty() {
            b = b.working_dir(self.working_dir.clone());
        }
        if let Some(cmd) = &self.cmd {
            b = b.cmd(cmd.clone());
        }
        if let Some(ep) = &self.entrypoint {
            b = b.entrypoint(ep.clone());
        }
        if !self.labels.is_empty() {
            b = b.labels(self.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<HashMap<_, _>>());
        }
        if !self.exposed_ports.is_empty() {
            b = b.exposed_ports(self.exposed_ports.iter().cloned().collect::<Vec<_>>());
        }
        if !self.volumes.is_empty() {
            b = b.volumes(self.volumes.iter().cloned().collect::<Vec<_>>());
        }
        if let Some(s) = &self.stop_signal {
            b = b.stop_signal(s.clone());
        }
        // Every field has a default; building cannot fail.
        b.build().unwrap_or_default()
    }
}

/// The build-time environment (BuildKit's state env): config `ENV`s plus in-scope `ARG`s.
/// Setting a key moves it to the end, as BuildKit's `EnvList` orders keys by last set.
#[derive(Clone, Debug, Default)]
pub(crate) struct EnvList {
    /// key -> (order of last set, value)
    vars: HashMap<String, (u64, String)>,
    next: u64,
}

impl EnvList {
    pub(crate) fn set(&mut self, key: &str, value: &str) {
        self.next += 1;
        self.vars.insert(key.to_owned(), (self.next, value.to_owned()));
    }

    pub(crate) fn lookup(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(|(_, v)| v.as_str())
    }

    /// The names set, in no particular order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.vars.keys().map(String::as_str)
    }

    /// `KEY=VALUE` strings in order.
    pub(crate) fn to_strings(&self) -> Vec<String> {
        let mut all: Vec<(&u64, &String, &String)> = self.vars.iter().map(|(k, (n, v))| (n, k, v)).collect();
        all.sort_unstable_by_key(|(n, _, _)| **n);
        all.into_iter().map(|(_, k, v)| format!("{k}={v}")).collect()
    }
}

impl Env for EnvList {
    fn get(&self, name: &str) -> Option<&str> {
        self.lookup(name)
    }
}

/// Everything a stage has built so far.
#[derive(Clone, Debug)]
pub(crate) struct StageState {
    /// Current filesystem; `None` is empty (scratch).
    pub fs: Option<Input>,
    pub env: EnvList,
    pub config: ImageConfig,
    /// Working directory of build steps (the state's dir).
    pub workdir: String,
    /// User of build steps.
    pub user: String,
    pub platform: Platform,
    pub history: Vec<HistoryStep>,
    /// `ARG`s declared in this stage (and in the stages it is built on), values resolved.
    pub build_args: Vec<ArgDecl>,
    /// The image at the root of this stage's chain.
    pub base_image: Option<ResolvedImage>,
    /// `CMD` was set in this stage (so `ENTRYPOINT` keeps it).
    pub cmd_set: bool,
    /// What the build checks remember about the stage.
    pub checks: super::checks::StageChecks,
}

impl StageState {
    /// A stage on `fs` with `config`, before the base config is applied.
    pub(crate) fn new(fs: Option<Input>, config: ImageConfig, platform: Platform) -> StageState {
        StageState {
            fs,
            env: EnvList::default(),
            config,
            workdir: "/".to_owned(),
            user: String::new(),
            platform,
            history: Vec::new(),
            build_args: Vec::new(),
            base_image: None,
            cmd_set: false,
            checks: super::checks::StageChecks::default(),
        }
    }

    /// Applies the inherited config to the build state as BuildKit does at stage start: `PATH`
    /// made sure of, config env copied into the build env, working dir and user taken over.
    pub(crate) fn apply_base_config(&mut self) {
        if self.config.env_get("PATH").is_none() {
            self.config.env_set("PATH", DEFAULT_PATH);
        }
        for e in self.config.env.clone() {
            let (k, v) = e.split_once('=').unwrap_or((&e, ""));
            self.env.set(k, v);
        }
        if !self.config.working_dir.is_empty() {
            let wd = super::paths::normalize(&self.config.working_dir, &self.config.working_dir.clone(), false);
            self.config.working_dir = wd.clone();
            self.workdir = wd;
        }
        if !self.config.user.is_empty() {
            self.user = self.config.user.clone();
        }
        self.cmd_set = false;
    }

    /// The argv prefix for shell-form commands.
    pub(crate) fn shell(&self) -> Vec<String> {
        if self.config.shell.is_empty() {
            vec!["/bin/sh".to_owned(), "-c".to_owned()]
        } else {
            self.config.shell.clone()
        }
    }

    /// Records a history entry.
    pub(crate) fn commit(&mut self, created_by: String, layer_op: Option<rbuild_solver::ir::OpId>) {
        self.history.push(HistoryStep { created_by, comment: Some(HISTORY_COMMENT.to_owned()), layer_op });
    }
}

/// Progress names like BuildKit's: `[stage 2/5] RUN make`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Progress {
    /// Stage name, `stage-N` for unnamed ones, empty when the file has a single stage.
    pub stage: String,
    pub index: usize,
    pub total: usize,
    /// In a multi-platform build, the platform the step runs on, with `->arch` when the
    /// stage's `TARGET*` args name another (`linux/amd64->arm64`).
    pub platform: Option<String>,
}

impl Progress {
    /// BuildKit's `prefixCommand`: numbers the step when the stage has counted steps.
    pub(crate) fn name(&mut self, text: &str) -> String {
        if self.total == 0 {
            return text.to_owned();
        }
        self.index += 1;
        let width = self.total.to_string().len();
        let platform = self.platform.as_ref().map(|p| format!("{p} ")).unwrap_or_default();
        let stage = if self.stage.is_empty() { String::new() } else { format!("{} ", self.stage) };
        format!("[{platform}{stage}{:>width$}/{}] {text}", self.index, self.total)
    }

    /// The name of another vertex of the current step (same number), like the `LINK` merge of
    /// `COPY --link`.
    pub(crate) fn same(&mut self, text: &str) -> String {
        if self.total == 0 || self.index == 0 {
            return text.to_owned();
        }
        self.index -= 1;
        self.name(text)
    }
}

/// BuildKit's `formatTargetPlatform(platformFromEnv(env))`: `->arm64` (or `->os/arch` for
/// another OS) when the stage's `TARGETPLATFORM`, or else its `TARGETOS`/`TARGETARCH`/
/// `TARGETVARIANT`, name a platform other than `base`; empty otherwise.
pub(crate) fn target_suffix(base: &Platform, env: &EnvList) -> String {
    let target = match env.lookup("TARGETPLATFORM").and_then(|v| super::values::parse_platform(v, base).ok()) {
        Some(p) => p,
        None => {
            let (os, arch, variant) = (env.lookup("TARGETOS"), env.lookup("TARGETARCH"), env.lookup("TARGETVARIANT"));
            if os.is_none() && arch.is_none() && variant.is_none() {
                return String::new();
            }
            let os = os.filter(|o| !o.is_empty()).unwrap_or(&base.os);
            let arch = arch.filter(|a| !a.is_empty()).unwrap_or(&base.architecture);
            let text = match variant.filter(|v| !v.is_empty()) {
                Some(v) => format!("{os}/{arch}/{v}"),
                None => format!("{os}/{arch}"),
            };
            match super::values::parse_platform(&text, base) {
                Ok(p) => p,
                Err(_) => return String::new(),
            }
        }
    };
    if target.os != base.os {
        return format!("->{target}");
    }
    if target.architecture != base.architecture {
        return match &target.variant {
            Some(v) => format!("->{}/{v}", target.architecture),
            None => format!("->{}", target.architecture),
        };
    }
    String::new()
}

/// Uppercases the first word (BuildKit's `uppercaseCmd`).
pub(crate) fn uppercase_cmd(s: &str) -> String {
    match s.split_once(' ') {
        Some((first, rest)) => format!("{} {rest}", first.to_uppercase()),
        None => s.to_uppercase(),
    }
}

/// Go's `fmt.Sprintf("%q", []string)`: `["a" "b"]`.
pub(crate) fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| crate::parser::go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `fmt.Sprintf("%v", []string)`: `[a b]`.
pub(crate) fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_orders_by_last_set() {
        let mut e = EnvList::default();
        e.set("A", "1");
        e.set("B", "2");
        e.set("A", "3");
        assert_eq!(e.to_strings(), ["B=2", "A=3"]);
        let mut c = ImageConfig::scratch();
        c.env_set("A", "1");
        c.env_set("PATH", "/x");
        assert_eq!(c.env, ["PATH=/x", "A=1"]);
    }

    #[test]
    fn target_suffix_names_the_other_platform() {
        let amd = Platform { os: "linux".into(), architecture: "amd64".into(), variant: None };
        let env = |pairs: &[(&str, &str)]| {
            let mut e = EnvList::default();
            for (k, v) in pairs {
                e.set(k, v);
            }
            e
        };
        assert_eq!(target_suffix(&amd, &env(&[])), "");
        assert_eq!(target_suffix(&amd, &env(&[("TARGETPLATFORM", "linux/amd64")])), "");
        assert_eq!(target_suffix(&amd, &env(&[("TARGETPLATFORM", "linux/arm64")])), "->arm64");
        assert_eq!(target_suffix(&amd, &env(&[("TARGETARCH", "arm")])), "->arm/v7");
        assert_eq!(target_suffix(&amd, &env(&[("TARGETARCH", "arm64"), ("TARGETVARIANT", "")])), "->arm64");
        assert_eq!(target_suffix(&amd, &env(&[("TARGETOS", "windows")])), "->windows/amd64");
        // TARGETPLATFORM wins over the parts.
        assert_eq!(target_suffix(&amd, &env(&[("TARGETARCH", "s390x"), ("TARGETPLATFORM", "linux/arm64")])), "->arm64");
    }

    #[test]
    fn progress_names() {
        let mut p = Progress { stage: "build".into(), index: 0, total: 12, platform: None };
        assert_eq!(p.name("RUN x"), "[build  1/12] RUN x");
        let mut p = Progress { stage: String::new(), index: 0, total: 3, platform: None };
        assert_eq!(p.name("RUN x"), "[1/3] RUN x");
        let mut p = Progress { stage: "build".into(), index: 1, total: 3, platform: Some("linux/amd64->arm64".into()) };
        assert_eq!(p.name("RUN x"), "[linux/amd64->arm64 build 2/3] RUN x");
        let mut p = Progress::default();
        assert_eq!(p.name("FROM x"), "FROM x");
        assert_eq!(uppercase_cmd("run echo hi"), "RUN echo hi");
        assert_eq!(go_quoted_list(&["/bin/sh".into(), "-c".into()]), r#"["/bin/sh" "-c"]"#);
    }
}
