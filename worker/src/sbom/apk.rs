//! apk: `/lib/apk/db/installed` (Alpine, Wolfi), one record per package, one `K:value` per line.

use super::{read_text, Kind, OsRelease, Package, Party, SbomError, TEXT_DB_LIMIT};
use crate::merged::MergedView;

const INSTALLED: &str = "/lib/apk/db/installed";

/// The packages of the image's apk database.
pub(super) fn scan(
    view: &MergedView,
    release: Option<&OsRelease>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Package>, SbomError> {
    let Some(text) = read_text(view, INSTALLED, TEXT_DB_LIMIT)? else { return Ok(Vec::new()) };
    Ok(parse(&text, release, warnings))
}

fn parse(text: &str, release: Option<&OsRelease>, warnings: &mut Vec<String>) -> Vec<Package> {
    let namespace = OsRelease::namespace(release, "alpine");
    let distro = release.and_then(OsRelease::distro);
    let mut out = Vec::new();
    let mut skipped = 0;
    for record in text.split("\n\n") {
        if record.trim().is_empty() {
            continue;
        }
        let (mut name, mut version, mut arch, mut license, mut maintainer, mut origin) =
            (String::new(), String::new(), String::new(), String::new(), String::new(), String::new());
        let mut files = Vec::new();
        let mut dir = String::new();
        for line in record.lines() {
            let Some((key, value)) = line.split_once(':') else { continue };
            match key {
                "P" => name = value.to_owned(),
                "V" => version = value.to_owned(),
                "A" => arch = value.to_owned(),
                "L" => license = value.trim().to_owned(),
                "m" => maintainer = value.to_owned(),
                "o" => origin = value.to_owned(),
                "F" => dir = value.trim_matches('/').to_owned(),
                "R" if !value.is_empty() => files.push(match dir.as_str() {
                    "" => format!("/{value}"),
                    d => format!("/{d}/{value}"),
                }),
                _ => {}
            }
        }
        if name.is_empty() || version.is_empty() {
            skipped += 1;
            continue;
        }
        let mut qualifiers = Vec::new();
        if !arch.is_empty() {
            qualifiers.push(("arch", arch.clone()));
        }
        if !origin.is_empty() && origin != name {
            qualifiers.push(("upstream", origin));
        }
        out.push(Package {
            kind: Kind::Apk,
            purl: super::spdx::purl("apk", Some(&namespace), &name, &version, qualifiers, distro.clone()),
            supplier: Party::person(&maintainer),
            arch: Some(arch).filter(|a| !a.is_empty()),
            licenses: if license.is_empty() { Vec::new() } else { vec![license] },
            name,
            version,
            database: INSTALLED.to_owned(),
            files,
        });
    }
    if skipped > 0 {
        warnings.push(format!("{INSTALLED}: skipped {skipped} malformed entries (no P or V)"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_their_files() {
        let text = "C:Q1x=\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\no:musl\nm:Tim <tim@example.org>\n\
                    F:lib\nR:ld-musl-x86_64.so.1\nR:libc.musl-x86_64.so.1\n\n\
                    P:nover\n\n\
                    P:ssl_client\nV:3.1.4-r0\nA:x86_64\no:openssl\nR:top\nF:usr/bin\nR:ssl_client\n";
        let release = OsRelease { id: "alpine".into(), version_id: "3.18.4".into() };
        let mut warnings = Vec::new();
        let got = parse(text, Some(&release), &mut warnings);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].purl, "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.18.4");
        assert_eq!(got[0].files, ["/lib/ld-musl-x86_64.so.1", "/lib/libc.musl-x86_64.so.1"]);
        assert_eq!(got[0].supplier, Some(Party::Person("Tim (tim@example.org)".into())));
        assert_eq!(got[1].purl, "pkg:apk/alpine/ssl_client@3.1.4-r0?arch=x86_64&upstream=openssl&distro=alpine-3.18.4");
        assert_eq!(got[1].files, ["/top", "/usr/bin/ssl_client"]);
        assert_eq!(warnings.len(), 1);
    }
}
