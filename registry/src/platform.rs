//! Target platforms (`linux/arm64/v8`) and how index entries are matched against them.

use std::fmt;
use std::str::FromStr;

/// Why a platform string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// Not `os/arch[/variant]`, `arch` or `os`.
    #[error("invalid platform {input:?}: {reason}")]
    Invalid {
        /// The input.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// An OS, CPU architecture and optional variant, in Go's names (`linux`, `arm64`, `v8`).
///
/// Values are normalised on construction the way containerd does it: `x86_64` becomes `amd64`,
/// `aarch64` becomes `arm64`, `arm64/v8` and `amd64/v1` drop their default variant, and `arm`
/// gets `v7` when no variant is given. Display prints `os/arch[/variant]`.
///
/// ```
/// use rbuild_registry::Platform;
/// let p: Platform = "linux/aarch64/v8".parse()?;
/// assert_eq!(p.to_string(), "linux/arm64");
/// assert_eq!("linux/arm".parse::<Platform>()?.to_string(), "linux/arm/v7");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl Platform {
    /// A normalised platform.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        let os = match os.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_owned(),
            other => other.to_owned(),
        };
        let (architecture, variant) = normalize_arch(&architecture.to_ascii_lowercase(), variant);
        Self { os, architecture, variant }
    }

    /// The platform this process runs on. The OS is always `linux`: containers are Linux here.
    pub fn host() -> Self {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "mips64" if cfg!(target_endian = "little") => ("mips64le", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Self::new("linux", arch, variant)
    }

    /// The operating system (`linux`).
    pub fn os(&self) -> &str {
        &self.os
    }

    /// The CPU architecture (`amd64`, `arm64`).
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// The CPU variant (`v7`), `None` for the architecture's baseline.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    /// Whether an image for `candidate` runs on `self`.
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.preference(candidate).is_some()
    }

    /// How well `candidate` fits: `Some(0)` is exact, larger is a compatible older variant
    /// (an `arm/v7` host runs `arm/v6` images, an `amd64/v3` host runs `amd64/v2` ones),
    /// `None` is no match.
    pub(crate) fn preference(&self, candidate: &Platform) -> Option<u32> {
        if self.os != candidate.os || self.architecture != candidate.architecture {
            return None;
        }
        if self.variant == candidate.variant {
            return Some(0);
        }
        // Only numbered variants (v5..v8, v2..v4) are ordered; the baseline counts as v1 on
        // amd64 and unset never appears for arm after normalisation.
        let level = |v: Option<&str>| -> Option<u32> {
            match v {
                None => Some(1),
                Some(v) => v.strip_prefix('v')?.parse().ok(),
            }
        };
        let ordered = matches!(self.architecture.as_str(), "arm" | "amd64");
        match (ordered, level(self.variant()), level(candidate.variant())) {
            (true, Some(want), Some(have)) if have < want => Some(want - have),
            _ => None,
        }
    }

    /// Parses an oci-spec descriptor platform.
    pub(crate) fn from_oci(p: &oci_spec::image::Platform) -> Self {
        Self::new(&p.os().to_string(), &p.architecture().to_string(), p.variant().as_deref())
    }
}

fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let variant = variant.filter(|v| !v.is_empty());
    let (arch, variant) = match (arch, variant) {
        ("x86_64" | "x86-64" | "amd64", Some("v1") | None) => ("amd64", None),
        ("x86_64" | "x86-64" | "amd64", v) => ("amd64", v),
        ("i386" | "i686", v) => ("386", v),
        ("aarch64" | "arm64", Some("8" | "v8" | "v8.0") | None) => ("arm64", None),
        ("aarch64" | "arm64", Some("9" | "9.0" | "v9.0")) => ("arm64", Some("v9")),
        ("aarch64", v) => ("arm64", v),
        ("armhf", _) => ("arm", Some("v7")),
        ("armel", _) => ("arm", Some("v6")),
        ("arm", None | Some("7")) => ("arm", Some("v7")),
        ("arm", Some("5")) => ("arm", Some("v5")),
        ("arm", Some("6")) => ("arm", Some("v6")),
        ("arm", Some("8")) => ("arm", Some("v8")),
        (a, v) => (a, v),
    };
    (arch.to_owned(), variant.map(str::to_owned))
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    /// `os/arch[/variant]`; a lone `linux`-like OS gets the host architecture, a lone
    /// architecture gets `linux`.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| PlatformError::Invalid { input: input.to_owned(), reason };
        let parts: Vec<&str> = input.trim().split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(invalid("empty component"));
        }
        match parts.as_slice() {
            [one] if KNOWN_OS.contains(&one.to_ascii_lowercase().as_str()) => {
                let host = Self::host();
                Ok(Self::new(one, &host.architecture, host.variant()))
            }
            [arch] => Ok(Self::new("linux", arch, None)),
            [os, arch] => Ok(Self::new(os, arch, None)),
            [os, arch, variant] => Ok(Self::new(os, arch, Some(variant))),
            _ => Err(invalid("expected os/arch[/variant]")),
        }
    }
}

const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "illumos",
    "ios",
    "linux",
    "macos",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// `norm!(input, displayed)`
    macro_rules! norm {
        ($input:expr, $shown:expr) => {
            assert_eq!(p($input).to_string(), $shown, "normalising {}", $input);
        };
    }

    /// `pref!(wanted, candidate, preference)`
    macro_rules! pref {
        ($want:expr, $have:expr, $expected:expr) => {
            assert_eq!(p($want).preference(&p($have)), $expected, "{} running {}", $want, $have);
        };
    }

    #[test]
    fn normalise_table() {
        norm!("linux/amd64", "linux/amd64");
        norm!("linux/x86_64", "linux/amd64");
        norm!("linux/amd64/v1", "linux/amd64");
        norm!("linux/amd64/v3", "linux/amd64/v3");
        norm!("linux/aarch64", "linux/arm64");
        norm!("linux/arm64/v8", "linux/arm64");
        norm!("linux/arm64/v9.0", "linux/arm64/v9");
        norm!("linux/arm", "linux/arm/v7");
        norm!("linux/armhf", "linux/arm/v7");
        norm!("linux/arm/6", "linux/arm/v6");
        norm!("Linux/i386", "linux/386");
        norm!("arm64", "linux/arm64");
        norm!("windows/amd64", "windows/amd64");
    }

    #[test]
    fn reject_table() {
        for bad in ["", "linux/", "/amd64", "a/b/c/d", "linux//v7"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn match_table() {
        pref!("linux/amd64", "linux/amd64", Some(0));
        pref!("linux/amd64", "linux/x86_64/v1", Some(0));
        pref!("linux/amd64", "linux/arm64", None);
        pref!("linux/amd64", "windows/amd64", None);
        pref!("linux/amd64", "linux/amd64/v3", None);
        pref!("linux/amd64/v3", "linux/amd64", Some(2));
        pref!("linux/arm64/v8", "linux/arm64", Some(0));
        pref!("linux/arm64", "linux/arm64/v8", Some(0));
        pref!("linux/arm/v7", "linux/arm/v6", Some(1));
        pref!("linux/arm/v6", "linux/arm/v7", None);
        pref!("linux/arm/v7", "linux/arm/v7", Some(0));
        pref!("linux/riscv64", "linux/riscv64", Some(0));
    }

    #[test]
    fn host_is_linux() {
        let host = Platform::host();
        assert_eq!(host.os(), "linux");
        assert!(host.matches(&host));
    }

    #[test]
    fn lone_os_takes_host_arch() {
        assert_eq!(p("linux"), Platform::host());
    }
}
