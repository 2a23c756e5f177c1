//! Image references (`busybox`, `127.0.0.1:5000/a/b:1`, `name:tag@sha256:...`), parsed like docker.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::Digest;

/// The registry that names without a domain refer to.
pub const DOCKER_HUB: &str = "docker.io";
/// Where [`DOCKER_HUB`]'s API actually lives.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The tag used when a reference has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// Docker's limit on `domain/path`.
const MAX_NAME_LEN: usize = 255;

/// Why a reference did not parse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// The input is empty.
    #[error("empty image reference")]
    Empty,
    /// The registry part is not `host[:port]`.
    #[error("invalid registry {domain:?} in image reference {reference:?}")]
    InvalidDomain {
        /// The whole input.
        reference: String,
        /// The registry part.
        domain: String,
    },
    /// The repository path has upper-case letters (docker rejects those too).
    #[error("repository name must be lowercase in image reference {reference:?}")]
    Uppercase {
        /// The whole input.
        reference: String,
    },
    /// A `/`-separated component of the repository path is not `[a-z0-9]+` joined by `.`, `_`,
    /// `__` or `-`s.
    #[error("invalid repository path component {component:?} in image reference {reference:?}")]
    InvalidPath {
        /// The whole input.
        reference: String,
        /// The offending component (empty for `a//b` or a trailing `/`).
        component: String,
    },
    /// The tag is not `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    #[error("invalid tag {tag:?} in image reference {reference:?}")]
    InvalidTag {
        /// The whole input.
        reference: String,
        /// The tag.
        tag: String,
    },
    /// The part after `@` is not a digest.
    #[error("invalid digest in image reference {reference:?}")]
    InvalidDigest {
        /// The whole input.
        reference: String,
        /// Why oci-spec rejected it.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// `domain/path` is longer than 255 bytes.
    #[error("image name in {reference:?} is {len} bytes long, the limit is 255")]
    NameTooLong {
        /// The whole input.
        reference: String,
        /// The length of `domain/path`.
        len: usize,
    },
}

/// A parsed image reference: registry, repository, and a tag and/or digest.
///
/// Parsing follows docker's normalisation: a first path component is the registry only if it
/// contains `.` or `:`, is `localhost`, or has upper-case letters; otherwise the registry is
/// `docker.io`, where one-component names get a `library/` prefix. `index.docker.io` becomes
/// `docker.io`. Without tag and digest the tag is `latest`; with only a digest there is no tag.
/// [`Display`](fmt::Display) prints the canonical, fully qualified form.
///
/// ```
/// use rbuild_registry::Reference;
/// let r: Reference = "busybox".parse()?;
/// assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
/// let r: Reference = "localhost:5000/a/b:1".parse()?;
/// assert_eq!((r.registry(), r.repository(), r.tag()), ("localhost:5000", "a/b", Some("1")));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// The registry, `host[:port]` (`docker.io`, `127.0.0.1:5000`, `[::1]:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same reference pinned to `digest` (the tag is kept for display).
    #[must_use]
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self { digest: Some(digest), ..self.clone() }
    }

    /// The host the registry API is served from (`registry-1.docker.io` for `docker.io`).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What goes after `/manifests/`: the digest when pinned, else the tag.
    pub(crate) fn manifest_target(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.as_ref(),
            (None, Some(t)) => t,
            (None, None) => DEFAULT_TAG,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let reference = || input.to_owned();
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                let digest = Digest::from_str(digest)
                    .map_err(|source| ReferenceError::InvalidDigest { reference: reference(), source })?;
                (rest, Some(digest))
            }
            None => (input, None),
        };
        // A ':' after the last '/' starts the tag; one before it belongs to host:port.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        let (registry, path) = split_domain(name);
        let registry = if registry == "index.docker.io" { DOCKER_HUB } else { registry };
        if !valid_domain(registry) {
            return Err(ReferenceError::InvalidDomain { reference: reference(), domain: registry.to_owned() });
        }
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase { reference: reference() });
        }
        if let Some(bad) = path.split('/').find(|c| !valid_path_component(c)) {
            return Err(ReferenceError::InvalidPath { reference: reference(), component: bad.to_owned() });
        }
        let repository =
            if registry == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path.to_owned() };
        let len = registry.len() + 1 + repository.len();
        if len > MAX_NAME_LEN {
            return Err(ReferenceError::NameTooLong { reference: reference(), len });
        }
        if let Some(tag) = tag.filter(|t| !valid_tag(t)) {
            return Err(ReferenceError::InvalidTag { reference: reference(), tag: tag.to_owned() });
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Self { registry: registry.to_owned(), repository, tag, digest })
    }
}

/// Docker's rule: the first component is a registry if it looks like a host.
fn split_domain(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, path))
            if first.contains(['.', ':']) || first == "localhost" || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, path)
        }
        _ => (DOCKER_HUB, name),
    }
}

/// `host[:port]` where host is dot-separated labels or a bracketed IPv6 address.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = split_host_port(domain);
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !v6.is_empty() && v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        host.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
    };
    port_ok && host_ok
}

/// Splits `host:port`, `[v6]:port`, `host` or `[v6]`.
pub(crate) fn split_host_port(domain: &str) -> (&str, Option<&str>) {
    if domain.starts_with('[') {
        return match domain.find(']') {
            Some(end) => match domain[end + 1..].strip_prefix(':') {
                Some(port) => (&domain[..=end], Some(port)),
                None => (domain, None),
            },
            None => (domain, None),
        };
    }
    match domain.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    }
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or one or more `-`.
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    match tag.as_bytes() {
        [first, rest @ ..] => {
            word(*first) && rest.len() <= 127 && rest.iter().all(|&b| word(b) || b == b'.' || b == b'-')
        }
        [] => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0fdf35281991301615882ad11718cf1b4bfcad431d5a2de41c200abdb277d0a7";

    /// `parses!(input, registry, repository, tag, digest, canonical)`
    macro_rules! parses {
        ($input:expr, $reg:expr, $repo:expr, $tag:expr, $digest:expr, $canon:expr) => {{
            let r: Reference = $input.parse().unwrap_or_else(|e| panic!("{}: {e}", $input));
            assert_eq!(r.registry(), $reg, "registry of {}", $input);
            assert_eq!(r.repository(), $repo, "repository of {}", $input);
            assert_eq!(r.tag(), $tag, "tag of {}", $input);
            assert_eq!(r.digest().map(|d| d.to_string()).as_deref(), $digest, "digest of {}", $input);
            assert_eq!(r.to_string(), $canon, "display of {}", $input);
            assert_eq!(r.to_string().parse::<Reference>().ok(), Some(r), "round trip of {}", $input);
        }};
    }

    macro_rules! rejects {
        ($input:expr, $pat:pat) => {
            let r = $input.parse::<Reference>();
            assert!(matches!(r, Err($pat)), "{}: {r:?}", $input);
        };
    }

    #[test]
    fn parse_table() {
        let d = Some(D);
        parses!("busybox", "docker.io", "library/busybox", Some("latest"), None, "docker.io/library/busybox:latest");
        parses!("busybox:1.36", "docker.io", "library/busybox", Some("1.36"), None, "docker.io/library/busybox:1.36");
        parses!("user/app", "docker.io", "user/app", Some("latest"), None, "docker.io/user/app:latest");
        parses!(
            "docker.io/busybox",
            "docker.io",
            "library/busybox",
            Some("latest"),
            None,
            "docker.io/library/busybox:latest"
        );
        parses!(
            "index.docker.io/busybox",
            "docker.io",
            "library/busybox",
            Some("latest"),
            None,
            "docker.io/library/busybox:latest"
        );
        parses!("127.0.0.1:5000/busybox:1", "127.0.0.1:5000", "busybox", Some("1"), None, "127.0.0.1:5000/busybox:1");
        parses!(format!("localhost:5000/a/b@{D}"), "localhost:5000", "a/b", None, d, format!("localhost:5000/a/b@{D}"));
        parses!(
            format!("name:tag@{D}"),
            "docker.io",
            "library/name",
            Some("tag"),
            d,
            format!("docker.io/library/name:tag@{D}")
        );
        parses!("localhost/x", "localhost", "x", Some("latest"), None, "localhost/x:latest");
        parses!(
            "localhost:5000",
            "docker.io",
            "library/localhost",
            Some("5000"),
            None,
            "docker.io/library/localhost:5000"
        );
        parses!("[::1]:5000/a:b", "[::1]:5000", "a", Some("b"), None, "[::1]:5000/a:b");
        parses!(
            "ghcr.io/o/r/deep/path:v1.2.3-rc_1",
            "ghcr.io",
            "o/r/deep/path",
            Some("v1.2.3-rc_1"),
            None,
            "ghcr.io/o/r/deep/path:v1.2.3-rc_1"
        );
        parses!("Registry/x", "Registry", "x", Some("latest"), None, "Registry/x:latest");
        parses!("a/b__c.d---e", "docker.io", "a/b__c.d---e", Some("latest"), None, "docker.io/a/b__c.d---e:latest");
    }

    #[test]
    fn reject_table() {
        rejects!("", ReferenceError::Empty);
        rejects!("Busybox", ReferenceError::Uppercase { .. });
        rejects!("a//b", ReferenceError::InvalidPath { .. });
        rejects!("a/", ReferenceError::InvalidPath { .. });
        rejects!("-a", ReferenceError::InvalidPath { .. });
        rejects!("a___b", ReferenceError::InvalidPath { .. });
        rejects!("a:", ReferenceError::InvalidTag { .. });
        rejects!("a:.x", ReferenceError::InvalidTag { .. });
        rejects!(format!("a:{}", "x".repeat(129)), ReferenceError::InvalidTag { .. });
        rejects!("a@sha256:abc", ReferenceError::InvalidDigest { .. });
        rejects!("a@", ReferenceError::InvalidDigest { .. });
        rejects!("host:port/a", ReferenceError::InvalidDomain { .. });
        rejects!("-bad.io/a", ReferenceError::InvalidDomain { .. });
        rejects!(format!("x/{}", "a".repeat(250)), ReferenceError::NameTooLong { .. });
    }

    #[test]
    fn with_digest_and_api_host() {
        let r: Reference = "busybox:1".parse().expect("parse");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.manifest_target(), "1");
        let d: Digest = D.parse().expect("digest");
        let pinned = r.with_digest(d);
        assert_eq!(pinned.manifest_target(), D);
        assert_eq!(pinned.to_string(), format!("docker.io/library/busybox:1@{D}"));
    }

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("a:1"), ("a", Some("1")));
        assert_eq!(split_host_port("[::1]:5000"), ("[::1]", Some("5000")));
        assert_eq!(split_host_port("[::1]"), ("[::1]", None));
        assert_eq!(split_host_port("a"), ("a", None));
    }
}
