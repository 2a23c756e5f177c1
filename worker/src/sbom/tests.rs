//! Scans of synthetic layer directories.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha1::Digest as _;

use super::rpm::testblob::header;
use super::*;
use crate::testutil::require_root;

fn write(root: &Path, rel: &str, content: impl AsRef<[u8]>) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn opts(name: &str) -> ScanOptions {
    ScanOptions { name: name.into(), created: "2024-01-01T00:00:00Z".into() }
}

fn packages(doc: &Value) -> Vec<&Value> {
    doc["packages"].as_array().unwrap().iter().filter(|p| p["primaryPackagePurpose"].is_null()).collect()
}

fn package<'a>(doc: &'a Value, name: &str) -> &'a Value {
    packages(doc).into_iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no package {name}"))
}

fn purl(p: &Value) -> &str {
    p["externalRefs"][0]["referenceLocator"].as_str().unwrap()
}

/// The files package `p` CONTAINS, by fileName.
fn owned(doc: &Value, p: &Value) -> Vec<String> {
    let ids: Vec<&Value> = doc["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["spdxElementId"] == p["SPDXID"] && r["relationshipType"] == "CONTAINS")
        .map(|r| &r["relatedSpdxElement"])
        .collect();
    let mut names: Vec<String> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| ids.contains(&&f["SPDXID"]))
        .map(|f| f["fileName"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

fn debian_layer(root: &Path) {
    write(root, "usr/lib/os-release", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
    write(
        root,
        "var/lib/dpkg/status",
        "Package: bash\nStatus: install ok installed\nMaintainer: Matthias Klose <doko@debian.org>\n\
         Architecture: amd64\nVersion: 5.2.15-2+b2\nDescription: GNU shell\n long text\n\n\
         Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nMulti-Arch: same\n\
         Source: glibc\nVersion: 2.36-9+deb12u3\n\n\
         Package: removed\nStatus: deinstall ok config-files\nVersion: 1\n",
    );
    write(root, "var/lib/dpkg/info/bash.list", "/.\n/bin\n/bin/bash\n/usr/share/doc/bash/copyright\n");
    write(root, "var/lib/dpkg/info/libc6:amd64.list", "/usr/lib/x86_64-linux-gnu/libc.so.6\n");
    write(root, "usr/bin/bash", "#!bash");
    std::fs::create_dir_all(root.join("usr/lib/x86_64-linux-gnu")).unwrap();
    write(root, "usr/lib/x86_64-linux-gnu/libc.so.6", "libc");
    symlink("usr/bin", root.join("bin")).unwrap();
    write(root, "usr/share/doc/bash/copyright", "Files: *\nLicense: GPL-3+\n\nFiles: x\nLicense: public-domain\n");
}

#[test]
fn dpkg_packages_files_and_ownership() {
    let t = tempfile::tempdir().unwrap();
    debian_layer(t.path());
    let doc = scan(&MergedView::new(vec![t.path().into()]), &opts("img")).unwrap();
    assert_eq!(packages(&doc).len(), 2, "config-files-only packages are not installed");
    let bash = package(&doc, "bash");
    assert_eq!(bash["versionInfo"], "5.2.15-2+b2");
    assert_eq!(purl(bash), "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12");
    assert_eq!(bash["supplier"], "Person: Matthias Klose (doko@debian.org)");
    assert_eq!(bash["licenseDeclared"], "GPL-3.0-or-later AND LicenseRef-public-domain");
    // /bin/bash is usr/bin/bash through the image's /bin -> usr/bin.
    assert_eq!(owned(&doc, bash), ["usr/bin/bash", "usr/share/doc/bash/copyright"]);
    let libc = package(&doc, "libc6");
    assert_eq!(purl(libc), "pkg:deb/debian/libc6@2.36-9%2Bdeb12u3?arch=amd64&upstream=glibc&distro=debian-12");
    assert_eq!(libc["supplier"], "NOASSERTION");
    assert_eq!(owned(&doc, libc), ["usr/lib/x86_64-linux-gnu/libc.so.6"]);

    let file = doc["files"].as_array().unwrap().iter().find(|f| f["fileName"] == "usr/bin/bash").unwrap();
    assert_eq!(file["checksums"][0]["algorithm"], "SHA1");
    assert_eq!(file["checksums"][0]["checksumValue"], hex::encode(sha1::Sha1::digest(b"#!bash")));
    assert_eq!(file["checksums"][1]["checksumValue"], hex::encode(sha2::Sha256::digest(b"#!bash")));
    // Only regular files are listed: not the /bin and /etc/os-release symlinks, nor directories.
    let names: Vec<&str> = doc["files"].as_array().unwrap().iter().map(|f| f["fileName"].as_str().unwrap()).collect();
    assert!(!names.contains(&"bin") && !names.contains(&"etc/os-release") && !names.contains(&"usr/bin"));
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted: {names:?}");
    assert_eq!(doc["hasExtractedLicensingInfos"][0]["licenseId"], "LicenseRef-public-domain");

    let rels = doc["relationships"].as_array().unwrap();
    let root = doc["packages"].as_array().unwrap().iter().find(|p| p["primaryPackagePurpose"] == "CONTAINER").unwrap();
    assert!(rels.iter().any(|r| r["spdxElementId"] == "SPDXRef-DOCUMENT"
        && r["relationshipType"] == "DESCRIBES"
        && r["relatedSpdxElement"] == root["SPDXID"]));
    assert!(rels.iter().any(|r| r["spdxElementId"] == root["SPDXID"] && r["relatedSpdxElement"] == bash["SPDXID"]));
}

#[test]
fn output_is_deterministic_and_namespaced_by_content() {
    let t = tempfile::tempdir().unwrap();
    debian_layer(t.path());
    let view = MergedView::new(vec![t.path().into()]);
    let a = scan(&view, &opts("img")).unwrap();
    assert_eq!(a, scan(&view, &opts("img")).unwrap());
    let other = scan(&view, &opts("other")).unwrap();
    assert_ne!(a["documentNamespace"], other["documentNamespace"]);
    write(t.path(), "new-file", "x");
    let changed = scan(&view, &opts("img")).unwrap();
    assert_ne!(a["documentNamespace"], changed["documentNamespace"]);
    assert!(a["documentNamespace"].as_str().unwrap().starts_with("https://rbuild.invalid/spdx/img-"));
}

#[test]
fn distroless_status_d() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(r, "etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
    write(r, "var/lib/dpkg/status.d/base-files", "Package: base-files\nVersion: 12.4+deb12u5\nArchitecture: amd64\n");
    write(r, "var/lib/dpkg/status.d/base-files.md5sums", "abc  etc/debian_version\n");
    write(r, "var/lib/dpkg/status.d/tzdata", "Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n");
    write(r, "etc/debian_version", "12.5\n");
    let doc = scan(&MergedView::new(vec![r.into()]), &opts("distroless")).unwrap();
    assert_eq!(packages(&doc).len(), 2);
    let base = package(&doc, "base-files");
    assert_eq!(purl(base), "pkg:deb/debian/base-files@12.4%2Bdeb12u5?arch=amd64&distro=debian-12");
    assert_eq!(owned(&doc, base), ["etc/debian_version"]);
    assert_eq!(package(&doc, "tzdata")["versionInfo"], "2024a-0+deb12u1");
}

#[test]
fn apk_installed() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(r, "etc/os-release", "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.18.4\n");
    write(
        r,
        "lib/apk/db/installed",
        "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\no:musl\nm:Timo Teräs <timo.teras@iki.fi>\nF:lib\nR:ld-musl-x86_64.so.1\n\n\
         P:busybox\nV:1.36.1-r5\nA:x86_64\nL:GPL-2.0-only\no:busybox\nF:bin\nR:busybox\n",
    );
    write(r, "lib/ld-musl-x86_64.so.1", "elf");
    write(r, "bin/busybox", "elf2");
    let doc = scan(&MergedView::new(vec![r.into()]), &opts("alpine")).unwrap();
    let musl = package(&doc, "musl");
    assert_eq!(purl(musl), "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.18.4");
    assert_eq!(musl["licenseDeclared"], "MIT");
    assert_eq!(musl["originator"], "Person: Timo Teräs (timo.teras@iki.fi)");
    assert_eq!(owned(&doc, musl), ["lib/ld-musl-x86_64.so.1"]);
    assert_eq!(owned(&doc, package(&doc, "busybox")), ["bin/busybox"]);
    assert_eq!(package(&doc, "busybox")["licenseDeclared"], "GPL-2.0-only");
}

/// An rpm sqlite database as rpm writes it: a `Packages` table of header blobs.
fn rpmdb(path: &Path, blobs: &[Vec<u8>]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)").unwrap();
    for b in blobs {
        conn.execute("INSERT INTO Packages (blob) VALUES (?1)", [b]).unwrap();
    }
}

fn rpm_header(name: &str, license: &str) -> Vec<u8> {
    header(&[
        (1000, 6, name),
        (1001, 6, "1.0"),
        (1002, 6, "3.fc39"),
        (1022, 6, "noarch"),
        (1014, 6, license),
        (1011, 6, "Fedora Project"),
        (1117, 8, name),
        (1118, 8, "/usr/share/"),
        (1116, 4, "0"),
    ])
}

#[test]
fn rpm_sqlite() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(r, "etc/os-release", "ID=fedora\nVERSION_ID=39\n");
    rpmdb(&r.join("usr/lib/sysimage/rpm/rpmdb.sqlite"), &[rpm_header("hello", "MIT"), b"garbage".to_vec()]);
    write(r, "usr/share/hello", "hi");
    let doc = scan(&MergedView::new(vec![r.into()]), &opts("fedora")).unwrap();
    assert_eq!(packages(&doc).len(), 1);
    let hello = package(&doc, "hello");
    assert_eq!(hello["versionInfo"], "1.0-3.fc39");
    assert_eq!(purl(hello), "pkg:rpm/fedora/hello@1.0-3.fc39?arch=noarch&distro=fedora-39");
    assert_eq!(hello["supplier"], "Organization: Fedora Project");
    assert_eq!(owned(&doc, hello), ["usr/share/hello"]);
    let comment = doc["creationInfo"]["comment"].as_str().unwrap();
    assert!(comment.contains("skipped 1 malformed package headers"), "{comment}");
}

#[test]
fn whiteout_in_upper_layer_hides_lower_status() {
    require_root!("a whiteout (character device 0:0)");
    let t = tempfile::tempdir().unwrap();
    let (lo, up) = (t.path().join("lo"), t.path().join("up"));
    debian_layer(&lo);
    std::fs::create_dir_all(up.join("var/lib/dpkg")).unwrap();
    nix::sys::stat::mknod(
        &up.join("var/lib/dpkg/status"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        0,
    )
    .unwrap();
    let view = MergedView::new(vec![up, lo.clone()]);
    let doc = scan(&view, &opts("img")).unwrap();
    assert!(packages(&doc).is_empty(), "{:#}", doc["packages"]);
    // The lower layer alone still has them.
    assert_eq!(packages(&scan(&MergedView::new(vec![lo]), &opts("img")).unwrap()).len(), 2);
}

#[test]
fn symlinks_never_read_host_files() {
    let t = tempfile::tempdir().unwrap();
    let host = t.path().join("host");
    write(&host, "shadow", "Package: leaked\nVersion: 1\n");
    rpmdb(&host.join("rpmdb.sqlite"), &[rpm_header("leakedrpm", "MIT")]);
    let root = t.path().join("image");
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/rpm")).unwrap();
    std::fs::create_dir_all(root.join("lib/apk")).unwrap();
    // Absolute, relative-escaping and directory links to the host file.
    symlink(host.join("shadow"), root.join("var/lib/dpkg/status")).unwrap();
    symlink(
        format!("../../../../../../../../..{}", host.join("rpmdb.sqlite").display()),
        root.join("var/lib/rpm/rpmdb.sqlite"),
    )
    .unwrap();
    symlink(&host, root.join("lib/apk/db")).unwrap();
    let doc = scan(&MergedView::new(vec![root.clone()]), &opts("img")).unwrap();
    assert!(packages(&doc).is_empty(), "{:#}", doc["packages"]);
    assert!(doc["files"].as_array().unwrap().is_empty(), "symlinks are not files: {:#}", doc["files"]);

    // The same absolute link inside the image reads the image's own file.
    write(&root, &host.join("shadow").to_string_lossy()[1..], "Package: inimage\nVersion: 2\n");
    let doc = scan(&MergedView::new(vec![root]), &opts("img")).unwrap();
    let names: Vec<&Value> = packages(&doc).iter().map(|p| &p["name"]).collect();
    assert_eq!(names, ["inimage"]);
}

#[test]
fn garbage_and_truncated_databases_do_not_panic() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let junk: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    write(r, "var/lib/dpkg/status", &junk);
    write(r, "var/lib/dpkg/status.d/x", &junk);
    write(r, "lib/apk/db/installed", &junk);
    write(r, "etc/os-release", &junk);
    let doc = scan(&MergedView::new(vec![r.into()]), &opts("junk")).unwrap();
    assert!(packages(&doc).is_empty());

    // An rpm database sqlite cannot read is an error naming it.
    write(r, "var/lib/rpm/rpmdb.sqlite", &junk);
    let err = scan(&MergedView::new(vec![r.into()]), &opts("junk")).unwrap_err();
    assert!(matches!(err, SbomError::RpmDatabase { ref path, .. } if path == "var/lib/rpm/rpmdb.sqlite"), "{err}");

    // A truncated one: an error or fewer packages, never a panic.
    let full = t.path().join("full.sqlite");
    let blobs: Vec<Vec<u8>> = (0..200).map(|i| rpm_header(&format!("p{i}"), "MIT")).collect();
    rpmdb(&full, &blobs);
    let bytes = std::fs::read(&full).unwrap();
    for cut in [bytes.len() / 2, 4096, 100] {
        write(r, "var/lib/rpm/rpmdb.sqlite", &bytes[..cut]);
        if let Ok(doc) = scan(&MergedView::new(vec![r.into()]), &opts("junk")) {
            assert!(packages(&doc).len() < 200);
        }
    }
    // So is a BerkeleyDB one that is not one.
    std::fs::remove_file(r.join("var/lib/rpm/rpmdb.sqlite")).unwrap();
    write(r, "var/lib/rpm/Packages", &junk);
    let err = scan(&MergedView::new(vec![r.into()]), &opts("junk")).unwrap_err();
    assert!(matches!(err, SbomError::RpmBerkeleyDb { ref path, .. } if path == "var/lib/rpm/Packages"), "{err}");
}

#[test]
fn empty_filesystem_is_a_valid_empty_document() {
    let doc = scan(&MergedView::new(Vec::<PathBuf>::new()), &opts("scratch")).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["dataLicense"], "CC0-1.0");
    assert!(packages(&doc).is_empty());
    assert!(doc["files"].as_array().unwrap().is_empty());
    assert_eq!(doc["packages"].as_array().unwrap().len(), 1, "the image's root package");
    assert_eq!(doc["relationships"].as_array().unwrap().len(), 1, "DOCUMENT DESCRIBES root");
    assert_eq!(doc["creationInfo"]["created"], "2024-01-01T00:00:00Z");
    assert!(doc["creationInfo"]["comment"].is_null());
}

#[test]
fn creation_time_must_be_spdx_shaped() {
    let view = MergedView::new(Vec::<PathBuf>::new());
    for bad in ["", "2024-01-01", "2024-01-01T00:00:00+00:00", "2024-01-01T00:00:00.5Z", "2024-01-01 00:00:00Z"] {
        let o = ScanOptions { name: "x".into(), created: bad.into() };
        assert!(matches!(scan(&view, &o), Err(SbomError::Created(_))), "{bad:?}");
    }
}

#[test]
fn opaque_directory_in_upper_layer_hides_lower_database() {
    let t = tempfile::tempdir().unwrap();
    let (lo, up) = (t.path().join("lo"), t.path().join("up"));
    write(&lo, "lib/apk/db/installed", "P:old\nV:1-r0\n");
    write(&up, "lib/apk/db/other", "");
    if let Err(e) =
        rustix::fs::lsetxattr(up.join("lib/apk/db"), "user.overlay.opaque", b"y", rustix::fs::XattrFlags::empty())
    {
        eprintln!("skipping: this filesystem takes no user xattrs ({e})");
        return;
    }
    let doc = scan(&MergedView::new(vec![up, lo.clone()]), &opts("img")).unwrap();
    assert!(packages(&doc).is_empty(), "{:#}", doc["packages"]);
    assert_eq!(packages(&scan(&MergedView::new(vec![lo]), &opts("img")).unwrap()).len(), 1);
}
