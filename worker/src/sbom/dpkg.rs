//! dpkg: `/var/lib/dpkg/status` (Debian, Ubuntu) and `/var/lib/dpkg/status.d/*` (distroless),
//! file lists from `info/<pkg>[:arch].list` (or distroless's `status.d/<pkg>.md5sums`) and
//! licenses from `/usr/share/doc/<pkg>/copyright`.

use std::collections::BTreeSet;

use super::{list_dir, read_text, Kind, OsRelease, Package, Party, SbomError, TEXT_DB_LIMIT};
use crate::merged::MergedView;

const STATUS: &str = "/var/lib/dpkg/status";
const STATUS_D: &str = "/var/lib/dpkg/status.d";
const INFO: &str = "/var/lib/dpkg/info";

/// The packages of the image's dpkg databases.
pub(super) fn scan(
    view: &MergedView,
    release: Option<&OsRelease>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Package>, SbomError> {
    let mut out = Vec::new();
    if let Some(text) = read_text(view, STATUS, TEXT_DB_LIMIT)? {
        for stanza in parse_stanzas(&text, STATUS, warnings) {
            let list = read_list(view, &stanza)?;
            out.push(to_package(view, release, stanza, STATUS, list)?);
        }
    }
    for name in list_dir(view, STATUS_D)? {
        if name.ends_with(".md5sums") || name.starts_with('.') {
            continue;
        }
        let path = format!("{STATUS_D}/{name}");
        let Some(text) = read_text(view, &path, TEXT_DB_LIMIT)? else { continue };
        for stanza in parse_stanzas(&text, &path, warnings) {
            let files = match read_text(view, &format!("{STATUS_D}/{name}.md5sums"), TEXT_DB_LIMIT)? {
                Some(sums) => md5sums_paths(&sums),
                None => Vec::new(),
            };
            out.push(to_package(view, release, stanza, &path, files)?);
        }
    }
    Ok(out)
}

/// One package's fields from a control-file stanza.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Stanza {
    package: String,
    version: String,
    architecture: String,
    maintainer: String,
    /// `Source:` name and version, when the source package differs from the binary's.
    source: Option<(String, Option<String>)>,
}

/// The installed packages of a status file; stanzas without a name or version are skipped
/// (counted in `warnings`), as are packages dpkg only remembers (`not-installed`,
/// `config-files`: no files of theirs are left).
fn parse_stanzas(text: &str, db: &str, warnings: &mut Vec<String>) -> Vec<Stanza> {
    let mut out = Vec::new();
    let mut skipped = 0;
    for block in text.split("\n\n") {
        if block.trim().is_empty() {
            continue;
        }
        let mut s = Stanza::default();
        let mut status = None;
        for line in block.lines() {
            // Continuation lines (starting with a blank) belong to multi-line fields we ignore.
            if line.starts_with([' ', '\t']) {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            match key {
                "Package" => s.package = value.to_owned(),
                "Version" => s.version = value.to_owned(),
                "Architecture" => s.architecture = value.to_owned(),
                "Maintainer" => s.maintainer = value.to_owned(),
                "Status" => status = value.split_whitespace().nth(2).map(str::to_owned),
                "Source" => {
                    let (name, version) = match value.split_once('(') {
                        Some((n, v)) => (n.trim(), Some(v.trim_end_matches(')').trim().to_owned())),
                        None => (value, None),
                    };
                    if !name.is_empty() {
                        s.source = Some((name.to_owned(), version.filter(|v| !v.is_empty())));
                    }
                }
                _ => {}
            }
        }
        if matches!(status.as_deref(), Some("not-installed" | "config-files")) {
            continue;
        }
        if s.package.is_empty() || s.version.is_empty() {
            skipped += 1;
            continue;
        }
        out.push(s);
    }
    if skipped > 0 {
        warnings.push(format!("{db}: skipped {skipped} malformed entries (no Package or Version)"));
    }
    out
}

/// The files of a package from `info/<pkg>:<arch>.list` or `info/<pkg>.list`.
fn read_list(view: &MergedView, s: &Stanza) -> Result<Vec<String>, SbomError> {
    let mut names = Vec::with_capacity(2);
    if !s.architecture.is_empty() {
        names.push(format!("{INFO}/{}:{}.list", s.package, s.architecture));
    }
    names.push(format!("{INFO}/{}.list", s.package));
    for path in names {
        if let Some(text) = read_text(view, &path, TEXT_DB_LIMIT)? {
            return Ok(text.lines().filter(|l| l.starts_with('/')).map(str::to_owned).collect());
        }
    }
    Ok(Vec::new())
}

/// The paths of an `md5sums` file (`<md5>  <path relative to />`), made absolute.
fn md5sums_paths(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .map(|(_, path)| format!("/{}", path.trim_start().trim_start_matches('/')))
        .filter(|p| p.len() > 1)
        .collect()
}

fn to_package(
    view: &MergedView,
    release: Option<&OsRelease>,
    s: Stanza,
    db: &str,
    files: Vec<String>,
) -> Result<Package, SbomError> {
    let licenses = match read_text(view, &format!("/usr/share/doc/{}/copyright", s.package), TEXT_DB_LIMIT)? {
        Some(text) => copyright_licenses(&text),
        None => Vec::new(),
    };
    let mut qualifiers = Vec::new();
    if !s.architecture.is_empty() {
        qualifiers.push(("arch", s.architecture.clone()));
    }
    if let Some((name, version)) = &s.source {
        qualifiers.push((
            "upstream",
            match version {
                Some(v) => format!("{name}@{v}"),
                None => name.clone(),
            },
        ));
    }
    let namespace = OsRelease::namespace(release, "debian");
    let purl = super::spdx::purl(
        "deb",
        Some(&namespace),
        &s.package,
        &s.version,
        qualifiers,
        release.and_then(OsRelease::distro),
    );
    Ok(Package {
        kind: Kind::Deb,
        supplier: Party::person(&s.maintainer),
        arch: Some(s.architecture).filter(|a| !a.is_empty()),
        name: s.package,
        version: s.version,
        licenses,
        purl,
        database: db.to_owned(),
        files,
    })
}

/// The distinct licenses a Debian copyright file names, in order: its `License:` fields
/// (machine-readable format) and the `/usr/share/common-licenses/<name>` it points to (the
/// free-form files of e.g. libc6 do only that).
fn copyright_licenses(text: &str) -> Vec<String> {
    const COMMON: &str = "/usr/share/common-licenses/";
    let fields = text.lines().filter_map(|l| l.strip_prefix("License:")).map(str::trim);
    let pointers = text.match_indices(COMMON).map(|(at, _)| {
        let rest = &text[at + COMMON.len()..];
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || ".+_-".contains(c))).unwrap_or(rest.len());
        rest[..end].trim_end_matches('.')
    });
    let mut seen = BTreeSet::new();
    fields.chain(pointers).filter(|l| !l.is_empty() && seen.insert(*l)).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanzas_skip_removed_and_nameless_packages() {
        let text = "Package: a\nStatus: install ok installed\nVersion: 1.0-1\nArchitecture: amd64\n\
                    Maintainer: Jo Doe <jo@example.org>\nSource: asrc (1.0)\nDescription: x\n more\n\n\
                    Package: gone\nStatus: deinstall ok config-files\nVersion: 2\n\n\
                    Status: install ok installed\nVersion: 3\n\n\
                    Package: b\nVersion: 4\n";
        let mut warnings = Vec::new();
        let got = parse_stanzas(text, "db", &mut warnings);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].package, "a");
        assert_eq!(got[0].source, Some(("asrc".to_owned(), Some("1.0".to_owned()))));
        assert_eq!(got[1].package, "b");
        assert_eq!(warnings, ["db: skipped 1 malformed entries (no Package or Version)"]);
    }

    #[test]
    fn copyright_and_md5sums() {
        let text = "Format: x\n\nFiles: *\nLicense: GPL-2+\n\nFiles: a\nLicense: MIT\n text\n\nLicense: GPL-2+\n";
        assert_eq!(copyright_licenses(text), ["GPL-2+", "MIT"]);
        let free_form = "see /usr/share/common-licenses/LGPL-2.1.\nAnd /usr/share/common-licenses/GPL-2, also\n\
                         /usr/share/common-licenses/LGPL-2.1 and /usr/share/common-licenses/";
        assert_eq!(copyright_licenses(free_form), ["LGPL-2.1", "GPL-2"]);
        assert_eq!(md5sums_paths("d41d8  usr/bin/x\nbad\nabc  /etc/y\n"), ["/usr/bin/x", "/etc/y"]);
    }
}
