//! `--platform` values: which platforms a build is for.

use anyhow::Result;
use rbuild_solver::ir::Platform;

use crate::render::UserError;

/// The platforms `--platform` names (each value may list several, comma-separated), normalized
/// (`linux/aarch64` → `linux/arm64`) and without duplicates, in the order given; this machine's
/// platform when none is named.
pub fn parse(values: &[String]) -> Result<Vec<Platform>> {
    let mut out: Vec<Platform> = Vec::new();
    for item in values.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
        let platform = rbuild_frontend::parse_platform(item).map_err(|e| {
            UserError(format!("invalid --platform {item:?}: {e} (expected os/arch[/variant], e.g. linux/arm64)"))
        })?;
        if platform.os != "linux" {
            return Err(UserError(format!("--platform {item}: only linux images can be built")).into());
        }
        if !out.contains(&platform) {
            out.push(platform);
        }
    }
    if out.is_empty() {
        out.push(Platform::host());
    }
    Ok(out)
}

/// `linux_arm64`, `linux_arm_v7`: the directory BuildKit gives each platform's files in a
/// multi-platform `type=local` or `type=tar` output.
pub fn dir_name(p: &Platform) -> String {
    p.to_string().replace('/', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(values: &[&str]) -> Result<Vec<String>> {
        let values: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        Ok(parse(&values)?.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn platform_lists() {
        assert_eq!(names(&[]).unwrap(), [Platform::host().to_string()]);
        assert_eq!(names(&["linux/amd64,linux/arm64"]).unwrap(), ["linux/amd64", "linux/arm64"]);
        assert_eq!(
            names(&["linux/arm64", " linux/aarch64 ", "linux/arm/v7"]).unwrap(),
            ["linux/arm64", "linux/arm/v7"]
        );
        assert_eq!(names(&["linux/arm64/v8,"]).unwrap(), ["linux/arm64"]);
        let err = names(&["linux//arm64"]).unwrap_err().to_string();
        assert!(err.contains("invalid --platform \"linux//arm64\""), "{err}");
        assert!(names(&["windows/amd64"]).unwrap_err().to_string().contains("only linux"));
        assert_eq!(dir_name(&rbuild_frontend::parse_platform("linux/arm/v7").unwrap()), "linux_arm_v7");
    }
}
