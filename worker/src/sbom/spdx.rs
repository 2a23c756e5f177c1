//! The SPDX 2.3 JSON document, in the shape syft writes it: ids, purls, license expressions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::files::FileEntry;
use super::{Package, ScanOptions};
use crate::merged::MergedView;

const NOASSERTION: &str = "NOASSERTION";

/// Builds the document.
pub(super) fn document(
    view: &MergedView,
    opts: &ScanOptions,
    mut packages: Vec<Package>,
    files: &[FileEntry],
    warnings: &[String],
) -> Value {
    let name = if opts.name.trim().is_empty() { "rootfs" } else { opts.name.as_str() };
    packages.sort_by(|a, b| {
        (a.kind, &a.name, &a.version, &a.arch, &a.database).cmp(&(b.kind, &b.name, &b.version, &b.arch, &b.database))
    });

    let file_ids: Vec<String> = files.iter().map(file_id).collect();
    let by_path: HashMap<&str, usize> = files.iter().enumerate().map(|(i, f)| (f.path.as_str(), i)).collect();
    let mut owner = Owner { view, parents: HashMap::new() };

    let root_id = format!("SPDXRef-DocumentRoot-Image-{}", sanitize(name));
    let mut licenses = Licenses::default();
    let mut spdx_packages = Vec::with_capacity(packages.len() + 1);
    let mut relationships = vec![relationship("SPDXRef-DOCUMENT", "DESCRIBES", &root_id)];
    let mut contains = Vec::new();
    let mut seen_ids = BTreeSet::new();
    for p in &packages {
        let id = package_id(p);
        if !seen_ids.insert(id.clone()) {
            // The same package listed twice in one database says nothing new.
            continue;
        }
        let owned: BTreeSet<usize> = p
            .files
            .iter()
            .filter_map(|f| owner.resolve(f))
            .filter_map(|rel| by_path.get(rel.as_str()).copied())
            .collect();
        let mut pkg = json!({
            "name": p.name,
            "SPDXID": id,
            "versionInfo": p.version,
            "supplier": p.supplier.as_ref().map_or_else(|| NOASSERTION.to_owned(), super::Party::spdx),
            "downloadLocation": NOASSERTION,
            // SPDX: a package that CONTAINS files analysed them (and says how, with a code).
            "filesAnalyzed": !owned.is_empty(),
            "sourceInfo": format!("acquired package info from {} DB: {}", source_kind(p), p.database),
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": licenses.declared(&p.licenses),
            "copyrightText": NOASSERTION,
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": p.purl,
            }],
        });
        if let Some(s) = &p.supplier {
            pkg["originator"] = Value::String(s.spdx());
        }
        if !owned.is_empty() {
            let code = verification_code(owned.iter().map(|&i| &files[i]));
            pkg["packageVerificationCode"] = json!({ "packageVerificationCodeValue": code });
        }
        spdx_packages.push(pkg);
        relationships.push(relationship(&root_id, "CONTAINS", &id));
        contains.extend(owned.into_iter().map(|i| relationship(&id, "CONTAINS", &file_ids[i])));
    }
    relationships.extend(contains);
    spdx_packages.push(json!({
        "name": name,
        "SPDXID": root_id,
        "supplier": NOASSERTION,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": false,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "primaryPackagePurpose": "CONTAINER",
    }));

    let spdx_files: Vec<Value> = files
        .iter()
        .zip(&file_ids)
        .map(|(f, id)| {
            json!({
                "fileName": f.path,
                "SPDXID": id,
                "checksums": [
                    {"algorithm": "SHA1", "checksumValue": hex::encode(f.sha1)},
                    {"algorithm": "SHA256", "checksumValue": hex::encode(f.sha256)},
                ],
                "licenseConcluded": NOASSERTION,
                "licenseInfoInFiles": [NOASSERTION],
                "copyrightText": NOASSERTION,
            })
        })
        .collect();

    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": "",
        "creationInfo": {
            "licenseListVersion": license_list_version(),
            "creators": [format!("Tool: rbuild-{}", env!("CARGO_PKG_VERSION"))],
            "created": opts.created,
        },
        "packages": spdx_packages,
        "files": spdx_files,
        "relationships": relationships,
    });
    if !warnings.is_empty() {
        doc["creationInfo"]["comment"] = Value::String(warnings.join("\n"));
    }
    let extracted = licenses.extracted();
    if !extracted.is_empty() {
        doc["hasExtractedLicensingInfos"] = Value::Array(extracted);
    }
    // The namespace names this exact content: a hash of the document without it.
    let digest = Sha256::digest(doc.to_string().as_bytes());
    doc["documentNamespace"] =
        Value::String(format!("https://rbuild.invalid/spdx/{}-{}", uri_segment(name), uuid_from(&digest)));
    doc
}

/// SPDX 2.3 section 7.9: the SHA-1 of the package's files' SHA-1s (hex), sorted, concatenated.
fn verification_code<'a>(files: impl Iterator<Item = &'a FileEntry>) -> String {
    let mut sums: Vec<String> = files.map(|f| hex::encode(f.sha1)).collect();
    sums.sort();
    hex::encode(<sha1::Sha1 as sha1::Digest>::digest(sums.concat().as_bytes()))
}

fn relationship(a: &str, kind: &str, b: &str) -> Value {
    json!({"spdxElementId": a, "relatedSpdxElement": b, "relationshipType": kind})
}

fn source_kind(p: &Package) -> &'static str {
    match p.kind {
        super::Kind::Apk => "APK",
        super::Kind::Deb => "DPKG",
        super::Kind::Rpm => "RPM",
    }
}

/// `3.29.0` -> `3.29` (SPDX wants major.minor).
fn license_list_version() -> String {
    ::spdx::license_version().split('.').take(2).collect::<Vec<_>>().join(".")
}

/// Maps package-database paths to the files of the view they name: parent directories are
/// resolved through the image's symlinks (`/bin/bash` is `usr/bin/bash` on a merged-/usr
/// system), the final component is not followed.
struct Owner<'a> {
    view: &'a MergedView,
    parents: HashMap<String, Option<PathBuf>>,
}

impl Owner<'_> {
    fn resolve(&mut self, path: &str) -> Option<String> {
        let (parent, name) = path.trim_end_matches('/').rsplit_once('/')?;
        if name.is_empty() || name == "." || name == ".." {
            return None;
        }
        let view = self.view;
        let dir = self
            .parents
            .entry(parent.to_owned())
            .or_insert_with(|| view.resolve(Path::new(if parent.is_empty() { "/" } else { parent }), true).ok())
            .as_ref()?;
        Some(dir.join(name).to_string_lossy().into_owned())
    }
}

/// `[A-Za-z0-9.-]` only (what an SPDX id may hold), anything else as `-`.
fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect()
}

/// The first 16 hex digits of the SHA-256 of `parts` joined by NULs.
fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

fn package_id(p: &Package) -> String {
    let hash = short_hash(&[p.kind.as_str(), &p.name, &p.version, p.arch.as_deref().unwrap_or(""), &p.database]);
    format!("SPDXRef-Package-{}-{}-{hash}", p.kind.as_str(), sanitize(&p.name))
}

/// syft's shape: `SPDXRef-File-<last components, at most 40 chars>-<hash>`.
fn file_id(f: &FileEntry) -> String {
    let mut tail = String::new();
    for part in f.path.rsplit('/') {
        if !tail.is_empty() && tail.len() + part.len() + 1 > 40 {
            tail.insert_str(0, "...");
            break;
        }
        tail = if tail.is_empty() { part.to_owned() } else { format!("{part}/{tail}") };
    }
    let hash = short_hash(&[&f.path, &hex::encode(f.sha256)]);
    format!("SPDXRef-File-{}-{hash}", sanitize(&tail))
}

/// A UUID-shaped (version 5 style) rendering of a digest.
fn uuid_from(d: &[u8]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// `s` percent-encoded except for unreserved characters and those in `keep`.
fn pct(s: &str, keep: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.as_bytes().contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn uri_segment(name: &str) -> String {
    pct(name, "/:@")
}

/// A package URL as syft writes it: qualifiers in the given order, then `distro`.
pub(super) fn purl(
    ty: &str,
    namespace: Option<&str>,
    name: &str,
    version: &str,
    qualifiers: Vec<(&str, String)>,
    distro: Option<String>,
) -> String {
    let mut out = format!("pkg:{ty}/");
    if let Some(ns) = namespace {
        out.push_str(&pct(ns, ""));
        out.push('/');
    }
    out.push_str(&pct(name, ""));
    out.push('@');
    out.push_str(&pct(version, ""));
    let all = qualifiers.into_iter().chain(distro.map(|d| ("distro", d))).filter(|(_, v)| !v.is_empty());
    for (i, (k, v)) in all.enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        out.push_str(&pct(&v, ":/@"));
    }
    out
}

/// Declared licenses as valid SPDX expressions; what is not one becomes a `LicenseRef-`
/// listed in `hasExtractedLicensingInfos`.
#[derive(Debug, Default)]
struct Licenses {
    /// LicenseRef id -> the text it stands for.
    refs: BTreeMap<String, String>,
}

impl Licenses {
    fn declared(&mut self, raw: &[String]) -> String {
        let exprs: Vec<String> = raw.iter().map(|l| self.expression(l)).collect::<BTreeSet<_>>().into_iter().collect();
        match exprs.len() {
            0 => NOASSERTION.to_owned(),
            1 => exprs[0].clone(),
            _ => exprs
                .iter()
                .map(|e| if e.contains(' ') { format!("({e})") } else { e.clone() })
                .collect::<Vec<_>>()
                .join(" AND "),
        }
    }

    fn expression(&mut self, raw: &str) -> String {
        if let Some(e) = to_spdx_expression(raw) {
            return e;
        }
        let id = format!("LicenseRef-{}", sanitize(raw.trim()));
        self.refs.entry(id.clone()).or_insert_with(|| raw.trim().to_owned());
        id
    }

    fn extracted(&self) -> Vec<Value> {
        self.refs.iter().map(|(id, text)| json!({"licenseId": id, "name": text, "extractedText": text})).collect()
    }
}

/// `raw` as a valid SPDX expression, with the spellings package databases use mapped
/// (`GPL-2+`, `GPLv3+`, `LGPL-2.1`, `Expat`, `BSD-3-clause`), or `None`.
fn to_spdx_expression(raw: &str) -> Option<String> {
    let mut words = Vec::new();
    for word in raw.replace('(', " ( ").replace(')', " ) ").split_whitespace() {
        words.push(match word.to_ascii_uppercase().as_str() {
            "AND" | "OR" | "WITH" | "(" | ")" => word.to_ascii_uppercase(),
            _ => normalize_id(word),
        });
    }
    if words.is_empty() {
        return None;
    }
    let joined = words.join(" ").replace("( ", "(").replace(" )", ")");
    // Strict: the spdx crate's lax mode guesses versions (`gpl` as GPL-2.0-only), which an
    // SBOM must not do; what the mapping below does not pin down becomes a LicenseRef.
    ::spdx::Expression::parse(&joined).ok().map(|_| joined)
}

/// One license name mapped to an SPDX id where the mapping is certain.
fn normalize_id(word: &str) -> String {
    // (`license_id` ignores a trailing `+`: keep it, it is SPDX's "or later".)
    let plus = if word.ends_with('+') { "+" } else { "" };
    if let Some(id) = ::spdx::license_id(word).filter(|id| !id.is_deprecated()) {
        return format!("{}{plus}", id.name);
    }
    let lower = word.to_ascii_lowercase();
    match lower.as_str() {
        "expat" => return "MIT".to_owned(),
        "apache-2" | "apache2" => return "Apache-2.0".to_owned(),
        _ => {}
    }
    // GNU families: GPL-2, GPL-2+, GPLv2+, LGPL-2.1+, AGPL-3, GFDL-1.3+.
    for family in ["agpl", "lgpl", "gpl", "gfdl"] {
        let Some(rest) = lower.strip_prefix(family) else { continue };
        let rest = rest.trim_start_matches(['-', 'v']);
        let (version, plus) = match rest.strip_suffix('+') {
            Some(v) => (v, true),
            None => (rest, false),
        };
        if !version.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let version = if version.contains('.') { version.to_owned() } else { format!("{version}.0") };
        let id = format!("{}-{version}-{}", family.to_ascii_uppercase(), if plus { "or-later" } else { "only" });
        if ::spdx::license_id(&id).is_some() {
            return id;
        }
    }
    // Case-insensitive match of a listed id (BSD-3-clause).
    ::spdx::identifiers::LICENSES
        .iter()
        .find(|l| {
            l.name.eq_ignore_ascii_case(word.trim_end_matches('+')) && l.flags & ::spdx::flags::IS_DEPRECATED == 0
        })
        .map_or_else(|| word.to_owned(), |l| format!("{}{plus}", l.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn license_spellings_become_spdx_or_refs() {
        let cases = [
            ("GPL-2+", Some("GPL-2.0-or-later")),
            ("GPL-2", Some("GPL-2.0-only")),
            ("GPLv3+", Some("GPL-3.0-or-later")),
            ("LGPL-2.1+", Some("LGPL-2.1-or-later")),
            ("BSD-3-clause", Some("BSD-3-Clause")),
            ("Expat", Some("MIT")),
            ("GPL-1+ or Artistic", None),
            ("LGPL-3+ or GPL-2+", Some("LGPL-3.0-or-later OR GPL-2.0-or-later")),
            ("MIT AND (BSD-2-Clause OR Apache-2.0)", Some("MIT AND (BSD-2-Clause OR Apache-2.0)")),
            ("public-domain", None),
            ("GPL", None),
            ("gnu gpl v2", None),
            ("bsd", None),
            ("GPL-2.0+ WITH Classpath-exception-2.0", Some("GPL-2.0-or-later WITH Classpath-exception-2.0")),
            ("Apache-2.0+", Some("Apache-2.0+")),
            ("mit or apache-2.0", Some("MIT OR Apache-2.0")),
            ("GPL-3+ with Bison exception", None),
            ("", None),
            ("(((", None),
        ];
        for (raw, want) in cases {
            assert_eq!(to_spdx_expression(raw).as_deref(), want, "{raw:?}");
        }
        let mut l = Licenses::default();
        assert_eq!(
            l.declared(&["GPL-2+".into(), "public domain".into(), "GPL-2+".into()]),
            "GPL-2.0-or-later AND LicenseRef-public-domain"
        );
        assert_eq!(l.extracted()[0]["extractedText"], "public domain");
        assert_eq!(l.declared(&[]), NOASSERTION);
    }

    #[test]
    fn purls_encode_like_syft() {
        let p = purl(
            "deb",
            Some("debian"),
            "bash",
            "5.2.15-2+b2",
            vec![("arch", "amd64".into())],
            Some("debian-12".into()),
        );
        assert_eq!(p, "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12");
        assert_eq!(purl("rpm", None, "a b", "1", vec![], None), "pkg:rpm/a%20b@1");
    }

    #[test]
    fn ids_are_valid_and_short() {
        let f = FileEntry {
            path: "usr/share/some/very/long/directory/names/here/file name.txt".into(),
            sha1: [0; 20],
            sha256: [1; 32],
        };
        let id = file_id(&f);
        assert!(id.starts_with("SPDXRef-File-...long-directory-names-here-file-name.txt-"), "{id}");
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'), "{id}");
        assert_eq!(uuid_from(&[0xff; 32]).len(), 36);
    }
}
