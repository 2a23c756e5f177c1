//! Supply-chain attestations end to end: `--provenance` and `--sbom` pushed to a real registry,
//! read back with an independent client (`skopeo inspect --raw`, blobs over the registry API
//! with curl) and checked against BuildKit's layout: one attestation manifest per platform,
//! listed after the images with platform `unknown/unknown` and the reference annotations,
//! in-toto statements whose subject is the image manifest. No secret or credential may appear
//! in anything pushed.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use support::{ready, Registry};

const SECRET: &str = "s3cr3t-value-never-in-an-attestation";
const PASSWORD: &str = "hunter2-attest-password";
const USER: &str = "attester";

/// Runs rbuild with its own store and docker config (attestation defaults as buildx's: no
/// `BUILDX_NO_DEFAULT_ATTESTATIONS`); returns success and the output.
fn rbuild(root: &Path, docker_config: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    support::rbuild_with_config(Path::new(env!("CARGO_BIN_EXE_rbuild")), root, docker_config, args, stdin)
}

fn sh(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).current_dir(dir).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// What the registry holds, read with tools that are not rbuild.
struct Remote<'a> {
    reg: &'a Registry,
    repo: String,
    /// Every document and blob fetched, to grep for secrets at the end.
    seen: std::cell::RefCell<Vec<u8>>,
}

impl Remote<'_> {
    /// `skopeo inspect --raw` of `name@digest` or `name:tag`.
    fn manifest(&self, reference: &str) -> Value {
        let mut cmd = Command::new("skopeo");
        cmd.arg("inspect").arg("--raw").args(self.reg.skopeo_flags());
        cmd.arg(format!("docker://{}/{}{reference}", self.reg.host(), self.repo));
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "skopeo: {}", String::from_utf8_lossy(&out.stderr));
        self.seen.borrow_mut().extend_from_slice(&out.stdout);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A blob over the distribution API.
    fn blob(&self, digest: &str) -> Vec<u8> {
        let url = format!("http://{}/v2/{}/blobs/{digest}", self.reg.host(), self.repo);
        let mut cmd = Command::new("curl");
        cmd.args(["-fsSL", &url]);
        if let Some(creds) = self.reg.creds() {
            cmd.args(["-u", &creds]);
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
        self.seen.borrow_mut().extend_from_slice(&out.stdout);
        out.stdout
    }
}

/// The index's image entries and, for each, its attestation manifest's statements (checked to
/// be laid out as BuildKit lays them out), keyed by `os/arch`.
fn attestations(remote: &Remote<'_>, index: &Value) -> Vec<(String, String, Vec<Value>)> {
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let manifests = index["manifests"].as_array().unwrap();
    let is_attestation = |m: &Value| m["annotations"]["vnd.docker.reference.type"] == "attestation-manifest";
    let images: Vec<&Value> = manifests.iter().filter(|m| !is_attestation(m)).collect();
    let attests: Vec<&Value> = manifests.iter().filter(|m| is_attestation(m)).collect();
    assert_eq!(images.len(), attests.len(), "one attestation manifest per image: {index:#}");
    // After all the images.
    let first_attest = manifests.iter().position(is_attestation).unwrap();
    assert!(manifests[first_attest..].iter().all(is_attestation), "{index:#}");
    let mut out = Vec::new();
    for image in images {
        let digest = image["digest"].as_str().unwrap();
        let platform = format!(
            "{}/{}",
            image["platform"]["os"].as_str().unwrap(),
            image["platform"]["architecture"].as_str().unwrap()
        );
        let attest = attests
            .iter()
            .find(|a| a["annotations"]["vnd.docker.reference.digest"] == digest)
            .unwrap_or_else(|| panic!("no attestation manifest for {digest}: {index:#}"));
        assert_eq!(attest["platform"]["os"], "unknown");
        assert_eq!(attest["platform"]["architecture"], "unknown");
        assert_eq!(attest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        let manifest = remote.manifest(&format!("@{}", attest["digest"].as_str().unwrap()));
        let config: Value =
            serde_json::from_slice(&remote.blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
        assert_eq!(config["architecture"], "unknown");
        let mut statements = Vec::new();
        for layer in manifest["layers"].as_array().unwrap() {
            assert_eq!(layer["mediaType"], "application/vnd.in-toto+json");
            let statement: Value = serde_json::from_slice(&remote.blob(layer["digest"].as_str().unwrap())).unwrap();
            assert_eq!(statement["_type"], "https://in-toto.io/Statement/v0.1");
            assert_eq!(layer["annotations"]["in-toto.io/predicate-type"], statement["predicateType"]);
            // The subject is the image manifest.
            for subject in statement["subject"].as_array().unwrap() {
                assert_eq!(subject["digest"]["sha256"].as_str(), digest.strip_prefix("sha256:"), "{statement:#}");
            }
            statements.push(statement);
        }
        out.push((platform, digest.to_owned(), statements));
    }
    out
}

/// A git repository with a Dockerfile that uses a secret, a build arg and a base image; returns
/// its path and commit.
fn repo(dir: &Path, registry: &str) -> (PathBuf, String) {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(
        repo.join("Dockerfile"),
        format!(
            "FROM --platform=$BUILDPLATFORM {registry}/busybox AS build\n\
             ARG GREETING\n\
             RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /len && echo \"$GREETING\" > /greeting\n\
             FROM scratch\n\
             COPY --from=build /len /greeting /\n\
             COPY app.txt /\n"
        ),
    )
    .unwrap();
    std::fs::write(repo.join("app.txt"), "app\n").unwrap();
    let git = |args: &[&str]| {
        let mut all =
            vec!["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main"];
        all.extend_from_slice(args);
        sh(&repo, &all)
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "one"]);
    let commit = git(&["rev-parse", "HEAD"]);
    (repo, commit)
}

#[test]
fn pushed_max_provenance_is_laid_out_as_buildkit_does_and_holds_no_secret() {
    let test = "pushed_max_provenance_is_laid_out_as_buildkit_does_and_holds_no_secret";
    let opts = support::RegistryOptions { tls: false, htpasswd: Some((USER.into(), PASSWORD.into())) };
    if !ready(test) || !support::require_registry_with(test, &opts) || !support::require_tool(test, "git", "git") {
        return;
    }
    let reg = Registry::start_with(opts);
    reg.seed_busybox("busybox:latest");
    let t = tempfile::tempdir().unwrap();
    let (root, config) = (t.path().join("store"), t.path().join("docker"));
    let (repo, commit) = repo(t.path(), &reg.host());
    let secret_file = t.path().join("token");
    std::fs::write(&secret_file, SECRET).unwrap();
    let host = reg.host();
    let (ok, _) = rbuild(&root, &config, &["login", &host, "-u", USER, "--password-stdin"], PASSWORD);
    assert!(ok);

    let name = format!("{host}/app:1.0");
    let context = format!("file://{}#main", repo.display());
    let secret = format!("id=token,src={}", secret_file.display());
    let (ok, out) = rbuild(
        &root,
        &config,
        &[
            "build",
            "--push",
            "-t",
            &name,
            "--platform",
            "linux/amd64,linux/arm64",
            "--provenance=mode=max",
            "--secret",
            &secret,
            "--build-arg",
            "GREETING=hello",
            &context,
        ],
        "",
    );
    assert!(ok, "{out}");
    assert!(!out.contains(SECRET) && !out.contains(PASSWORD));

    let remote = Remote { reg: &reg, repo: "app".into(), seen: Default::default() };
    let index = remote.manifest(":1.0");
    let found = attestations(&remote, &index);
    let platforms: Vec<&str> = found.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    let busybox_digest = {
        let out = Command::new("skopeo")
            .args(["inspect", "--format", "{{.Digest}}"])
            .args(reg.skopeo_flags())
            .arg(format!("docker://{}", reg.reference("busybox:latest")))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    for (platform, _, statements) in &found {
        assert_eq!(statements.len(), 1, "provenance only");
        let s = &statements[0];
        assert_eq!(s["predicateType"], "https://slsa.dev/provenance/v0.2");
        let arch = platform.split('/').nth(1).unwrap();
        assert_eq!(s["subject"][0]["name"], format!("pkg:docker/{host}/app@1.0?platform=linux%2F{arch}"));
        let p = &s["predicate"];
        assert_eq!(p["buildType"], "https://mobyproject.org/buildkit@v1");
        assert_eq!(p["builder"]["id"], "");
        // Materials: the git source by commit, the base image by digest (for the build platform).
        let materials = p["materials"].as_array().unwrap();
        let uri = format!("file://{}#main", repo.display());
        assert!(materials.iter().any(|m| m["uri"] == uri.as_str() && m["digest"]["sha1"] == commit.as_str()), "{p:#}");
        let base = materials
            .iter()
            .find(|m| {
                m["uri"].as_str().unwrap().starts_with(&format!("pkg:docker/{host}/busybox@latest?platform=linux%2F"))
            })
            .unwrap_or_else(|| panic!("no base image material: {p:#}"));
        assert_eq!(Some(base["digest"]["sha256"].as_str().unwrap()), busybox_digest.strip_prefix("sha256:"));
        // Invocation: the git context is the config source; mode=max keeps build args and
        // names the secret without its value.
        let inv = &p["invocation"];
        assert_eq!(inv["configSource"]["uri"], uri.as_str());
        assert_eq!(inv["configSource"]["digest"]["sha1"], commit.as_str());
        assert_eq!(inv["configSource"]["entryPoint"], "Dockerfile");
        assert_eq!(inv["parameters"]["frontend"], "dockerfile.v0");
        assert_eq!(inv["parameters"]["args"]["build-arg:GREETING"], "hello");
        assert_eq!(inv["parameters"]["secrets"][0]["id"], "token");
        assert!(inv["parameters"]["locals"].as_array().unwrap().is_empty(), "a git context reads no local dir");
        assert!(inv["environment"]["platform"].as_str().unwrap().starts_with("linux/"));
        // mode=max: the steps, their Dockerfile lines, and the Dockerfile itself.
        let steps = p["buildConfig"]["llbDefinition"].as_array().unwrap();
        assert!(steps.len() >= 4, "{steps:#?}");
        for (n, step) in steps.iter().enumerate() {
            assert_eq!(step["id"], format!("step{n}"));
            for input in step["inputs"].as_array().into_iter().flatten() {
                let from: usize =
                    input.as_str().unwrap().strip_prefix("step").unwrap().split(':').next().unwrap().parse().unwrap();
                assert!(from < n, "inputs come first: {step:#}");
            }
        }
        let meta = &p["metadata"];
        assert_eq!(meta["completeness"]["parameters"], true);
        assert_eq!(meta["completeness"]["materials"], true, "a git context with no local input is complete");
        assert_eq!(meta["https://mobyproject.org/buildkit@v1#hermetic"], false, "RUN had the network");
        let source = &meta["https://mobyproject.org/buildkit@v1#metadata"]["source"];
        assert_eq!(source["infos"][0]["filename"], "Dockerfile");
        assert!(source["locations"]
            .as_object()
            .unwrap()
            .values()
            .any(|l| l["locations"][0]["ranges"][0]["start"]["line"] == 3));
        let started = meta["buildStartedOn"].as_str().unwrap();
        assert!(started.ends_with('Z') && started <= meta["buildFinishedOn"].as_str().unwrap());
    }
    // Both platforms share the invocation.
    assert_eq!(
        found[0].2[0]["predicate"]["metadata"]["buildInvocationID"],
        found[1].2[0]["predicate"]["metadata"]["buildInvocationID"]
    );

    // `rbuild inspect --provenance` shows the same, per platform.
    let (ok, out) = rbuild(&root, &config, &["inspect", &name, "--provenance"], "");
    assert!(ok);
    let shown: Value = serde_json::from_str(&out[..out.rfind('}').unwrap() + 1]).unwrap();
    assert_eq!(shown["linux/arm64"]["SLSA"]["buildType"], "https://mobyproject.org/buildkit@v1");

    // The image index is still a runnable image: a build on top of it picks the host's entry.
    let ctx = t.path().join("child");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), format!("FROM {name}\nCOPY --from={host}/busybox /bin/busybox /bin/busybox\nRUN [\"/bin/busybox\", \"cat\", \"/greeting\"]\n")).unwrap();
    let (ok, out) = rbuild(&root, &config, &["build", "--progress=plain", "--no-cache", ctx.to_str().unwrap()], "");
    assert!(ok && out.contains("hello"), "{out}");

    let seen = remote.seen.borrow();
    let text = String::from_utf8_lossy(&seen);
    for needle in [SECRET, PASSWORD, &format!("{USER}:{PASSWORD}")] {
        assert!(!text.contains(needle), "{needle:?} leaked into what was pushed");
    }
    let auth = std::fs::read_to_string(config.join("config.json")).unwrap();
    let auth: Value = serde_json::from_str(&auth).unwrap();
    let encoded = auth["auths"][host.as_str()]["auth"].as_str().unwrap().to_owned();
    assert!(!text.contains(&encoded), "the stored credential leaked");
}

#[test]
fn push_defaults_to_min_provenance_and_false_or_docker_media_types_drop_it() {
    let test = "push_defaults_to_min_provenance_and_false_or_docker_media_types_drop_it";
    if !ready(test) {
        return;
    }
    let reg = support::busybox_registry();
    let t = tempfile::tempdir().unwrap();
    let (root, config) = (t.path().join("store"), t.path().join("docker"));
    let ctx = t.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}\nARG V\nLABEL v=$V\nRUN echo $V > /v\n", reg.reference("busybox")),
    )
    .unwrap();
    let c = ctx.to_str().unwrap();
    let remote = Remote { reg, repo: "minprov".into(), seen: Default::default() };

    // No flag: mode=min, which leaves build args and labels out (and so is incomplete).
    let name = reg.reference("minprov:default");
    let (ok, _) = rbuild(
        &root,
        &config,
        &["build", "--push", "-t", &name, "--build-arg", "V=private-arg", "--label", "l=private-label", c],
        "",
    );
    assert!(ok);
    let found = attestations(&remote, &remote.manifest(":default"));
    let p = &found[0].2[0]["predicate"];
    assert_eq!(found[0].2[0]["predicateType"], "https://slsa.dev/provenance/v0.2");
    assert!(p["invocation"]["parameters"]["args"].as_object().unwrap().is_empty(), "{p:#}");
    assert!(p.get("buildConfig").is_none());
    assert!(p["invocation"]["parameters"].get("secrets").is_none());
    assert_eq!(p["metadata"]["completeness"]["parameters"], false);
    assert_eq!(p["metadata"]["completeness"]["materials"], false, "a local context is not a tracked material");
    assert_eq!(
        p["invocation"]["parameters"]["locals"],
        serde_json::json!([{"name": "context"}, {"name": "dockerfile"}])
    );
    assert!(!String::from_utf8_lossy(&remote.seen.borrow()).contains("private-arg"));

    // version=v1: SLSA v1's shape.
    let name = reg.reference("minprov:v1");
    let (ok, _) = rbuild(
        &root,
        &config,
        &["build", "--push", "-t", &name, "--provenance=mode=max,version=v1", "--build-arg", "V=x", c],
        "",
    );
    assert!(ok);
    let found = attestations(&remote, &remote.manifest(":v1"));
    let s = &found[0].2[0];
    assert_eq!(s["predicateType"], "https://slsa.dev/provenance/v1");
    let p = &s["predicate"];
    assert_eq!(
        p["buildDefinition"]["buildType"],
        "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md"
    );
    assert_eq!(p["buildDefinition"]["externalParameters"]["configSource"]["path"], "Dockerfile");
    assert_eq!(p["buildDefinition"]["externalParameters"]["request"]["args"]["build-arg:V"], "x");
    assert!(p["buildDefinition"]["internalParameters"]["buildConfig"]["llbDefinition"].as_array().unwrap().len() >= 2);
    assert!(p["buildDefinition"]["resolvedDependencies"][0]["uri"].as_str().unwrap().starts_with("pkg:docker/"));
    assert_eq!(p["runDetails"]["metadata"]["buildkit_completeness"]["request"], true);

    // --provenance=false: a plain image manifest.
    let name = reg.reference("minprov:none");
    let (ok, _) = rbuild(&root, &config, &["build", "--push", "-t", &name, "--provenance=false", c], "");
    assert!(ok);
    assert_eq!(remote.manifest(":none")["mediaType"], "application/vnd.oci.image.manifest.v1+json");

    // Docker media types cannot carry attestations: dropped, with a note.
    let name = reg.reference("minprov:docker");
    let (ok, out) = rbuild(&root, &config, &["build", "-t", &name, "-o", "type=registry,oci-mediatypes=false", c], "");
    assert!(ok);
    assert!(out.contains("attestations are not supported with oci-mediatypes=false"), "{out}");
    assert_eq!(remote.manifest(":docker")["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");

    // A local build asks for nothing by default: the image is a plain manifest, like docker build's.
    let (ok, _) = rbuild(&root, &config, &["build", "-t", "local:1", c], "");
    assert!(ok);
    let (ok, out) = rbuild(&root, &config, &["inspect", "local:1", "--provenance"], "");
    assert!(!ok && out.contains("has no provenance attestation"), "{out}");
}

/// The debootstrap'ed Debian root filesystem (made once by the fixture script), or why not.
fn debian_rootfs(test: &str) -> Option<PathBuf> {
    if !support::require_tool(test, "debootstrap", "debootstrap") {
        return None;
    }
    let out = Command::new(support::fixture("debian-rootfs.sh")).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "debian-rootfs.sh: {}", String::from_utf8_lossy(&out.stderr));
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

#[test]
fn sbom_of_a_debian_image_lists_dpkg_packages_and_passes_an_spdx_validator() {
    let test = "sbom_of_a_debian_image_lists_dpkg_packages_and_passes_an_spdx_validator";
    if !ready(test) || !support::require_tool(test, "pyspdxtools", "python3 -m pip install spdx-tools") {
        return;
    }
    let Some(rootfs) = debian_rootfs(test) else { return };
    let reg = support::busybox_registry();
    let t = tempfile::tempdir().unwrap();
    let (root, config) = (t.path().join("store"), t.path().join("docker"));
    let ctx = t.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    // A Debian image (the rootfs as a named context), and a busybox stage that asks for an SBOM
    // of its own.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM scratch AS debian\nCOPY --from=rootfs / /\n\
             FROM {} AS tools\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nRUN echo tool > /tool\n\
             FROM debian\nCOPY --from=tools /tool /usr/local/bin/tool\n\
             RUN dpkg-query -W -f '${{Version}}' bash > /bash-version\n",
            reg.reference("busybox")
        ),
    )
    .unwrap();
    let name = reg.reference("debian-sbom:1");
    let rootfs_context = format!("rootfs={}", rootfs.display());
    let (ok, out) = rbuild(
        &root,
        &config,
        &[
            "build",
            "--push",
            "-t",
            &name,
            "--sbom=true",
            "--provenance=mode=max",
            "--build-context",
            &rootfs_context,
            "-o",
            &format!("type=local,dest={}", t.path().join("fs").display()),
            ctx.to_str().unwrap(),
        ],
        "",
    );
    assert!(ok, "{out}");
    let bash_version = std::fs::read_to_string(t.path().join("fs/bash-version")).unwrap();
    // The local output gets the attestations as files (BuildKit's local exporter): each a
    // statement about every file of the output.
    for (file, kind) in [
        ("provenance.json", "https://slsa.dev/provenance/v0.2"),
        ("sbom.spdx.json", "https://spdx.dev/Document"),
        ("sbom-tools.spdx.json", "https://spdx.dev/Document"),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let path = t.path().join("fs").join(file);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "{file}");
        let s: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(s["predicateType"], kind, "{file}");
        let subjects = s["subject"].as_array().unwrap();
        let own = subjects.iter().find(|x| x["name"] == "bash-version").unwrap_or_else(|| panic!("{file}: no subject"));
        let digest = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(bash_version.as_bytes()))
        };
        assert_eq!(own["digest"]["sha256"], digest.as_str());
        assert!(!subjects.iter().any(|x| x["name"].as_str().is_some_and(|n| n.ends_with(".spdx.json"))));
    }

    let remote = Remote { reg, repo: "debian-sbom".into(), seen: Default::default() };
    let found = attestations(&remote, &remote.manifest(":1"));
    let (_, _, statements) = &found[0];
    let kinds: Vec<&str> = statements.iter().map(|s| s["predicateType"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["https://slsa.dev/provenance/v0.2", "https://spdx.dev/Document", "https://spdx.dev/Document"]);

    // The image's SBOM: every package dpkg knows, at the version dpkg reports inside the image.
    let image_sbom = &statements[1]["predicate"];
    assert_eq!(image_sbom["spdxVersion"], "SPDX-2.3");
    let packages = image_sbom["packages"].as_array().unwrap();
    let bash = packages.iter().find(|p| p["name"] == "bash").unwrap_or_else(|| panic!("no bash package"));
    assert_eq!(bash["versionInfo"], bash_version.as_str());
    let listed = Command::new("dpkg-query")
        .arg(format!("--admindir={}", rootfs.join("var/lib/dpkg").display()))
        .args(["-W", "-f", "${Package}\n"])
        .output()
        .unwrap();
    let dpkg_names: Vec<String> = String::from_utf8_lossy(&listed.stdout).lines().map(str::to_owned).collect();
    assert!(dpkg_names.len() > 50, "{dpkg_names:?}");
    for n in &dpkg_names {
        assert!(packages.iter().any(|p| p["name"] == n.as_str()), "package {n} missing from the SBOM");
    }
    let purl = bash["externalRefs"].as_array().unwrap().iter().find(|r| r["referenceType"] == "purl").unwrap();
    assert!(purl["referenceLocator"].as_str().unwrap().starts_with("pkg:deb/debian/bash@"), "{purl}");
    // Files: the one this build added is there, with its checksums and, as BuildKit adds, the
    // layer that made it (the COPY's, the second of three).
    let files = image_sbom["files"].as_array().unwrap();
    let tool = files
        .iter()
        .find(|f| f["fileName"].as_str().is_some_and(|n| n.ends_with("usr/local/bin/tool")))
        .unwrap_or_else(|| panic!("no tool file in the SBOM"));
    assert!(tool["checksums"].as_array().unwrap().iter().any(|c| c["algorithm"] == "SHA256"));
    let image_manifest = remote.manifest(&format!("@{}", found[0].1));
    let layers = image_manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "{image_manifest}");
    assert_eq!(tool["comment"], format!("layerID: {}", layers[1]["digest"].as_str().unwrap()));

    // The stage's SBOM describes the busybox stage, not the image.
    let stage_sbom = &statements[2]["predicate"];
    let stage_files = stage_sbom["files"].as_array().unwrap();
    assert!(stage_files.iter().any(|f| f["fileName"].as_str().is_some_and(|n| n.ends_with("bin/busybox"))));
    assert!(!stage_sbom["packages"].as_array().unwrap().iter().any(|p| p["name"] == "bash"));

    // An independent validator accepts both documents.
    for (n, doc) in [image_sbom, stage_sbom].iter().enumerate() {
        let path = t.path().join(format!("sbom-{n}.spdx.json"));
        std::fs::write(&path, serde_json::to_vec(doc).unwrap()).unwrap();
        let out = Command::new("pyspdxtools").arg("-i").arg(&path).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && !text.contains("invalid"), "pyspdxtools on {}: {text}", path.display());
    }

    // `rbuild inspect --sbom` shows the image's document and the stage's.
    let (ok, out) = rbuild(&root, &config, &["inspect", &name, "--sbom"], "");
    assert!(ok);
    let shown: Value = serde_json::from_str(&out[..out.rfind('}').unwrap() + 1]).unwrap();
    assert_eq!(shown["SPDX"]["spdxVersion"], "SPDX-2.3");
    assert_eq!(shown["AdditionalSPDXs"].as_array().map(Vec::len), Some(1));
}

#[test]
fn local_output_attestation_files_never_go_through_the_image_s_symlinks() {
    let test = "local_output_attestation_files_never_go_through_the_image_s_symlinks";
    if !ready(test) {
        return;
    }
    let reg = support::busybox_registry();
    let t = tempfile::tempdir().unwrap();
    let (root, config) = (t.path().join("store"), t.path().join("docker"));
    let outside = t.path().join("outside-target");
    let ctx = t.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}\nRUN ln -s {} /provenance.json\n", reg.reference("busybox"), outside.display()),
    )
    .unwrap();
    let dest = format!("type=local,dest={}", t.path().join("fs").display());
    let (ok, out) = rbuild(&root, &config, &["build", "--provenance=true", "-o", &dest, ctx.to_str().unwrap()], "");
    assert!(!ok, "{out}");
    assert!(out.contains("the image has a file of that name"), "{out}");
    assert!(!outside.exists(), "the attestation was written through the image's symlink");
}
