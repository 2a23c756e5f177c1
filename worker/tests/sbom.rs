//! The SBOM scanner on real package databases: a debootstrap'ed Debian bookworm (compared with
//! `dpkg-query`) and an rpm sqlite database written by rpm itself; every document is checked
//! with an independent validator, `pyspdxtools` (PyPI `spdx-tools==0.8.5`).
//!
//! Each test skips, saying why, when it lacks root, debootstrap, rpm/rpmbuild or pyspdxtools.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rbuild_worker::sbom::{scan, ScanOptions};
use rbuild_worker::MergedView;
use serde_json::Value;

fn opts(name: &str) -> ScanOptions {
    ScanOptions { name: name.into(), created: "2024-01-01T00:00:00Z".into() }
}

fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Validates `doc` with pyspdxtools; says so when it is not installed.
fn validate(doc: &Value, what: &str) {
    if !have("pyspdxtools") {
        eprintln!("not validating {what}: pyspdxtools missing (python3 -m pip install spdx-tools==0.8.5)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.spdx.json");
    std::fs::write(&path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    let out = Command::new("pyspdxtools").arg("-i").arg(&path).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // It exits 1 and logs "The document is invalid" with the issues; a valid one prints nothing.
    assert!(
        out.status.success() && !stderr.contains("invalid"),
        "pyspdxtools rejects the {what} document:\n{stdout}\n{stderr}"
    );
}

/// name -> (versionInfo, purl) of the document's packages (not the image's root package).
fn packages(doc: &Value) -> BTreeMap<String, (String, String)> {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["primaryPackagePurpose"].is_null())
        .map(|p| {
            let name = p["name"].as_str().unwrap().to_owned();
            let version = p["versionInfo"].as_str().unwrap().to_owned();
            let purl = p["externalRefs"][0]["referenceLocator"].as_str().unwrap().to_owned();
            (name, (version, purl))
        })
        .collect()
}

/// fileNames of what the package named `name` CONTAINS.
fn owned_files(doc: &Value, name: &str) -> Vec<String> {
    let pkg = doc["packages"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap();
    let ids: Vec<&Value> = doc["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["spdxElementId"] == pkg["SPDXID"] && r["relationshipType"] == "CONTAINS")
        .map(|r| &r["relatedSpdxElement"])
        .collect();
    doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| ids.contains(&&f["SPDXID"]))
        .map(|f| f["fileName"].as_str().unwrap().to_owned())
        .collect()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/fixtures").join(name)
}

#[test]
fn debootstrap_bookworm_matches_dpkg_query() {
    if !is_root() || !have("debootstrap") || !have("dpkg-query") {
        eprintln!("skipping: needs root, debootstrap and dpkg-query (apt-get install debootstrap dpkg)");
        return;
    }
    let out = Command::new(fixture("debian-rootfs.sh")).output().unwrap();
    assert!(out.status.success(), "debian-rootfs.sh: {}", String::from_utf8_lossy(&out.stderr));
    let root = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());

    let started = Instant::now();
    let doc = scan(&MergedView::new(vec![root.clone()]), &opts("debian:bookworm")).unwrap();
    let took = started.elapsed();
    let files = doc["files"].as_array().unwrap().len();
    eprintln!(
        "scanned the debootstrap rootfs: {files} files, {} packages in {:.2} s",
        packages(&doc).len(),
        took.as_secs_f64()
    );

    // Exactly the packages dpkg itself lists, with its versions.
    let admindir = root.join("var/lib/dpkg");
    let q = Command::new("dpkg-query")
        .arg(format!("--admindir={}", admindir.display()))
        .args(["-W", "-f", "${Package}\t${Version}\t${Architecture}\t${db:Status-Status}\n"])
        .output()
        .unwrap();
    assert!(q.status.success());
    let want: BTreeMap<String, (String, String)> = String::from_utf8(q.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.ends_with("\tinstalled"))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_owned(), (f[1].to_owned(), f[2].to_owned()))
        })
        .collect();
    let got = packages(&doc);
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (name, (version, arch)) in &want {
        let (got_version, purl) = &got[name];
        assert_eq!(got_version, version, "{name}");
        assert!(purl.starts_with(&format!("pkg:deb/debian/{}@", name.replace('+', "%2B"))), "{purl}");
        assert!(purl.contains(&format!("arch={arch}")) && purl.ends_with("&distro=debian-12"), "{purl}");
    }
    for name in ["bash", "coreutils", "dpkg"] {
        assert!(got.contains_key(name), "{name} missing");
    }
    // bash installs /bin/bash; on merged /usr that is the file usr/bin/bash.
    let bash_files = owned_files(&doc, "bash");
    assert!(bash_files.iter().any(|f| f == "usr/bin/bash"), "{bash_files:?}");
    assert!(owned_files(&doc, "coreutils").iter().any(|f| f == "usr/bin/ls"));

    // Every regular file, once.
    let on_disk =
        walkdir::WalkDir::new(&root).into_iter().filter(|e| e.as_ref().unwrap().file_type().is_file()).count();
    assert_eq!(files, on_disk);
    let libc = doc["packages"].as_array().unwrap().iter().find(|p| p["name"] == "libc6").unwrap();
    assert_ne!(libc["licenseDeclared"], "NOASSERTION", "licenses come from the copyright files");
    validate(&doc, "debootstrap");
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Debian's rpm keeps its own database under ~/.rpmdb: say where a Fedora's is, and that it is sqlite.
const RPM_DEFINES: [&str; 4] = ["--define", "_db_backend sqlite", "--define", "_dbpath /var/lib/rpm"];

/// A root in `dir` with a Fedora os-release and an rpm package installed by rpm (into a sqlite
/// database); `None` (after saying why) without root or rpm's tools.
fn rpm_root(dir: &Path) -> Option<PathBuf> {
    if !is_root() || !have("rpm") || !have("rpmbuild") {
        eprintln!("skipping: needs root, rpm and rpmbuild (apt-get install rpm)");
        return None;
    }
    let top = dir.join("rpmbuild");
    std::fs::create_dir_all(top.join("SPECS")).unwrap();
    let spec = top.join("SPECS/hello.spec");
    std::fs::write(
        &spec,
        "Name: rbuild-hello\nVersion: 1.2\nRelease: 3\nEpoch: 2\nSummary: test\nLicense: MIT and GPLv2+\n\
         Vendor: rbuild tests\nBuildArch: noarch\n\n%description\ntest\n\n%install\n\
         mkdir -p %{buildroot}/usr/share/rbuild-hello\necho hello > %{buildroot}/usr/share/rbuild-hello/hello.txt\n\n\
         %files\n/usr/share/rbuild-hello/hello.txt\n",
    )
    .unwrap();
    run(Command::new("rpmbuild").arg("--define").arg(format!("_topdir {}", top.display())).arg("-bb").arg(&spec));
    let rpm = top.join("RPMS/noarch/rbuild-hello-1.2-3.noarch.rpm");
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=fedora\nVERSION_ID=39\n").unwrap();
    run(Command::new("rpm").args(RPM_DEFINES).arg("--root").arg(&root).arg("--initdb"));
    run(Command::new("rpm")
        .args(RPM_DEFINES)
        .arg("--root")
        .arg(&root)
        .args(["-i", "--nodeps", "--noscripts"])
        .arg(&rpm));
    assert!(root.join("var/lib/rpm/rpmdb.sqlite").is_file(), "rpm wrote no sqlite database");
    Some(root)
}

fn check_hello(doc: &Value) {
    let got = packages(doc);
    let (version, purl) = &got["rbuild-hello"];
    assert_eq!(version, "2:1.2-3");
    assert_eq!(
        purl,
        "pkg:rpm/fedora/rbuild-hello@1.2-3?arch=noarch&epoch=2&upstream=rbuild-hello-1.2-3.src.rpm&distro=fedora-39"
    );
    assert_eq!(owned_files(doc, "rbuild-hello"), ["usr/share/rbuild-hello/hello.txt"]);
    let pkg = doc["packages"].as_array().unwrap().iter().find(|p| p["name"] == "rbuild-hello").unwrap();
    assert_eq!(pkg["supplier"], "Organization: rbuild tests");
    assert_eq!(pkg["licenseDeclared"], "MIT AND GPL-2.0-or-later");
}

#[test]
fn rpm_sqlite_database_written_by_rpm() {
    let t = tempfile::tempdir().unwrap();
    let Some(root) = rpm_root(t.path()) else { return };
    let doc = scan(&MergedView::new(vec![root]), &opts("fedora")).unwrap();
    assert_eq!(packages(&doc).len(), 1);
    check_hello(&doc);
    validate(&doc, "rpm");
}

/// The same package in a BerkeleyDB `Packages` file (CentOS 7's format) made by Berkeley DB's
/// own `db_load` from the headers rpm wrote, with pages small enough that each header spans an
/// overflow chain; rpm's read-only bdb backend must read that file too.
#[test]
fn rpm_berkeley_db_made_by_db_load() {
    let t = tempfile::tempdir().unwrap();
    let Some(sqlite_root) = rpm_root(t.path()) else { return };
    let Some(db_load) = ["db_load", "db5.3_load"].into_iter().find(|t| have(t)) else {
        eprintln!("skipping: needs db_load (apt-get install db5.3-util)");
        return;
    };
    let conn = rusqlite::Connection::open(sqlite_root.join("var/lib/rpm/rpmdb.sqlite")).unwrap();
    let mut stmt = conn.prepare("SELECT hnum, blob FROM Packages").unwrap();
    let rows: Vec<(u32, Vec<u8>)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(rows.len(), 1);
    // rpm's keys are native-endian instance numbers; key 0 holds the next one.
    let mut dump = String::from("VERSION=3\nformat=bytevalue\ntype=hash\ndb_pagesize=512\nHEADER=END\n");
    let next = rows.len() as u32 + 1;
    for (key, value) in std::iter::once((0u32, next.to_ne_bytes().to_vec())).chain(rows) {
        dump.push_str(&format!(" {}\n {}\n", hex::encode(key.to_ne_bytes()), hex::encode(value)));
    }
    dump.push_str("DATA=END\n");
    let root = t.path().join("bdb-root");
    std::fs::create_dir_all(root.join("var/lib/rpm")).unwrap();
    std::fs::copy(sqlite_root.join("etc/os-release"), {
        std::fs::create_dir_all(root.join("etc")).unwrap();
        root.join("etc/os-release")
    })
    .unwrap();
    std::fs::create_dir_all(root.join("usr/share/rbuild-hello")).unwrap();
    std::fs::copy(sqlite_root.join("usr/share/rbuild-hello/hello.txt"), root.join("usr/share/rbuild-hello/hello.txt"))
        .unwrap();
    let dump_file = t.path().join("dump");
    std::fs::write(&dump_file, dump).unwrap();
    run(Command::new(db_load).arg("-f").arg(&dump_file).arg(root.join("var/lib/rpm/Packages")));

    // rpm itself reads it.
    let q = Command::new("rpm")
        .args(["--define", "_db_backend bdb_ro", "--dbpath"])
        .arg(root.join("var/lib/rpm"))
        .args(["-qa", "--qf", "%{NAME}-%{VERSION}\n"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&q.stdout).trim(), "rbuild-hello-1.2", "{}", String::from_utf8_lossy(&q.stderr));

    let doc = scan(&MergedView::new(vec![root]), &opts("centos")).unwrap();
    assert_eq!(packages(&doc).len(), 1, "the bookkeeping record 0 is not a package");
    assert!(doc["creationInfo"]["comment"].is_null(), "{}", doc["creationInfo"]["comment"]);
    check_hello(&doc);
    validate(&doc, "rpm bdb");
}

#[test]
fn synthetic_documents_are_valid_spdx() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let write = |rel: &str, content: &str| {
        let p = r.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    };
    write("etc/os-release", "ID=alpine\nVERSION_ID=3.19.1\n");
    write(
        "lib/apk/db/installed",
        "P:odd\nV:1-r0\nA:x86_64\nL:GPL-2.0-or-later WITH Classpath-exception-2.0 AND Custom License\nF:bin\nR:odd\n\n\
         P:plain\nV:2-r1\nA:x86_64\nL:MIT\nm:Someone <s@example.org>\n",
    );
    write("bin/odd", "x");
    write(
        "var/lib/dpkg/status",
        "Package: weird name\nVersion: 1:2.3~rc1+dfsg-1\nArchitecture: all\nMaintainer: <a@b.c>\n",
    );
    let doc = scan(&MergedView::new(vec![r.into()]), &opts("example.com/ns/img:1.0 with spaces")).unwrap();
    assert_eq!(packages(&doc).len(), 3);
    validate(&doc, "synthetic");
    let empty = scan(&MergedView::new(Vec::<PathBuf>::new()), &opts("scratch")).unwrap();
    validate(&empty, "empty");
}
