//! End-to-end tests of where a build's inputs come from: a context (or a Dockerfile alone) on
//! stdin, a context archive file, git and tarball-URL contexts, `--build-context` named
//! contexts of every kind, and the build-wide RUN options (`--add-host`, `host-gateway`
//! included, `--ulimit`, `--shm-size`, `--network`), each observed from inside a RUN and
//! checked absent from the image. The real binary builds; repositories, archives and an HTTP
//! server are made here.
//!
//! They need root (the store, namespaces); the RUN and image tests also the registry tools.
//! Without them each test says why it skips. CI runs as root with the packages.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::Registry;

fn registry() -> &'static Registry {
    support::busybox_registry()
}

fn ready_registry(test: &str) -> bool {
    support::require_root(test) && support::require_busybox(test) && support::require_registry(test)
}

fn ready(test: &str) -> bool {
    support::require_root(test)
}

/// `rbuild --root <dir>/store <args>`, with `stdin` fed from a file when given.
fn rbuild(dir: &Path, args: &[&str], stdin: Option<&Path>) -> Output {
    rbuild_env(dir, args, stdin, &[])
}

fn rbuild_env(dir: &Path, args: &[&str], stdin: Option<&Path>, envs: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.arg("--root").arg(dir.join("store")).args(args).env("RBUILD_NO_PROGRESS", "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdin(match stdin {
        Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
        None => Stdio::null(),
    });
    let out = cmd.output().expect("run rbuild");
    eprintln!("rbuild {args:?} -> {}\n--- stderr ---\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

/// Builds `args` (context last) into a fresh `type=local` directory and returns it.
fn build_local(dir: &Path, name: &str, args: &[&str], stdin: Option<&Path>) -> PathBuf {
    let out_dir = dir.join(name);
    let dest = format!("type=local,dest={}", out_dir.display());
    let mut all = vec!["build", "-o", dest.as_str()];
    all.extend_from_slice(args);
    let out = rbuild(dir, &all, stdin);
    assert!(out.status.success(), "build {name} failed");
    out_dir
}

fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (name, content) in files {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

fn sh(cwd: &Path, args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).current_dir(cwd).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A context directory with a `FROM scratch` Dockerfile copying `hello.txt`.
fn scratch_context(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx");
    write_files(&ctx, &[("Dockerfile", "FROM scratch\nCOPY hello.txt /hello.txt\n"), ("hello.txt", "hello\n")]);
    ctx
}

#[test]
fn context_archives_on_stdin_and_as_files_in_every_compression() {
    if !ready("context_archives_on_stdin_and_as_files_in_every_compression") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = scratch_context(t.path());
    for (flag, ext) in [("", "tar"), ("z", "tar.gz"), ("j", "tar.bz2"), ("J", "tar.xz")] {
        let archive = t.path().join(format!("ctx.{ext}"));
        sh(&ctx, &["tar", &format!("-c{flag}f"), archive.to_str().unwrap(), "."]);
        let out = build_local(t.path(), &format!("stdin-{ext}"), &["-"], Some(&archive));
        assert_eq!(read(&out.join("hello.txt")), "hello\n", "{ext} on stdin");
        let out = build_local(t.path(), &format!("file-{ext}"), &[archive.to_str().unwrap()], None);
        assert_eq!(read(&out.join("hello.txt")), "hello\n", "{ext} as a file");
    }
    // -f names a file inside the archive.
    write_files(&ctx, &[("alt/Other.Dockerfile", "FROM scratch\nCOPY hello.txt /other.txt\n")]);
    let archive = t.path().join("alt.tar.gz");
    sh(&ctx, &["tar", "-czf", archive.to_str().unwrap(), "."]);
    let out = build_local(t.path(), "alt", &["-f", "alt/Other.Dockerfile", "-"], Some(&archive));
    assert_eq!(read(&out.join("other.txt")), "hello\n");
    // Materialised contexts leave nothing behind in the store's temp area or index.
    let store = t.path().join("store");
    let leftovers: Vec<_> = walk(&store).into_iter().filter(|p| p.ends_with("hello.txt")).collect();
    assert!(leftovers.iter().all(|p| p.to_string_lossy().contains("snapshots")), "{leftovers:?}");
}

#[test]
fn dockerfile_alone_on_stdin_or_with_f_dash() {
    if !ready("dockerfile_alone_on_stdin_or_with_f_dash") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    // `rbuild build - < Dockerfile`: the context is empty.
    let df = t.path().join("Dockerfile.alone");
    std::fs::write(&df, "FROM scratch\nCOPY <<EOF /made.txt\nmade\nEOF\n").unwrap();
    let out = build_local(t.path(), "alone", &["-"], Some(&df));
    assert_eq!(read(&out.join("made.txt")), "made\n");
    let copy_ctx = t.path().join("Dockerfile.copy");
    std::fs::write(&copy_ctx, "FROM scratch\nCOPY hello.txt /x\n").unwrap();
    let failed = rbuild(t.path(), &["build", "-"], Some(&copy_ctx));
    assert!(!failed.status.success(), "the context of a Dockerfile on stdin is empty");

    // `-f -` with a directory context.
    let ctx = scratch_context(t.path());
    std::fs::write(ctx.join("Dockerfile"), "this is not the Dockerfile used").unwrap();
    let df = t.path().join("Dockerfile.stdin");
    std::fs::write(&df, "FROM scratch\nCOPY hello.txt /via-stdin.txt\n").unwrap();
    let out = build_local(t.path(), "f-dash", &["-f", "-", ctx.to_str().unwrap()], Some(&df));
    assert_eq!(read(&out.join("via-stdin.txt")), "hello\n");
    let both = rbuild(t.path(), &["build", "-f", "-", "-"], Some(&df));
    assert!(!both.status.success());
    assert!(String::from_utf8_lossy(&both.stderr).contains("stdin"));
}

/// One tar entry (512-byte header plus padded data), written by hand so that hostile names
/// (`..`, absolute paths) are possible.
fn tar_entry(out: &mut Vec<u8>, name: &str, kind: u8, data: &[u8], link: &str) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn tar_end(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0u8; 1024]);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn hostile_context_archives_are_rejected_or_confined() {
    if !ready("hostile_context_archives_are_rejected_or_confined") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let df = b"FROM scratch\nCOPY . /ctx/\n";

    // `..` entries: refused.
    let mut dotdot = Vec::new();
    tar_entry(&mut dotdot, "Dockerfile", b'0', df, "");
    tar_entry(&mut dotdot, "../../../../../../escape-marker", b'0', b"x", "");
    tar_end(&mut dotdot);
    // A symlink to a host directory, then a file through it: refused.
    let mut through = Vec::new();
    tar_entry(&mut through, "Dockerfile", b'0', df, "");
    tar_entry(&mut through, "link", b'2', b"", outside.to_str().unwrap());
    tar_entry(&mut through, "link/escape-marker", b'0', b"x", "");
    tar_end(&mut through);
    // A Dockerfile that is a symlink to a host file: never read from the host.
    let host_df = t.path().join("host.Dockerfile");
    std::fs::write(&host_df, "FROM scratch\nCOPY <<EOF /leak\nread from the host\nEOF\n").unwrap();
    let mut df_link = Vec::new();
    tar_entry(&mut df_link, "Dockerfile", b'2', b"", host_df.to_str().unwrap());
    tar_end(&mut df_link);
    for (name, bytes, why) in [
        ("dotdot", &dotdot, "escapes"),
        ("through", &through, "through the symlink"),
        ("df-link", &df_link, "Dockerfile"),
    ] {
        let path = t.path().join(format!("{name}.tar"));
        std::fs::write(&path, bytes).unwrap();
        let out = rbuild(t.path(), &["build", "-o", "type=local,dest=/nonexistent-never", "-"], Some(&path));
        assert_eq!(out.status.code(), Some(1), "{name} must be refused as bad input");
        assert!(String::from_utf8_lossy(&out.stderr).contains(why), "{name}");
    }
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing written through the symlink");
    let escaped: Vec<_> = walk(t.path())
        .into_iter()
        .chain([PathBuf::from("/escape-marker"), std::env::temp_dir().join("escape-marker")])
        .filter(|p| p.ends_with("escape-marker") && p.exists())
        .collect();
    assert!(escaped.is_empty(), "{escaped:?}");

    // Absolute names are kept inside the context.
    let mut absolute = Vec::new();
    tar_entry(&mut absolute, "Dockerfile", b'0', df, "");
    tar_entry(&mut absolute, "/abs-marker-rbuild", b'0', b"inside", "");
    tar_end(&mut absolute);
    let path = t.path().join("absolute.tar");
    std::fs::write(&path, &absolute).unwrap();
    let out = build_local(t.path(), "absolute", &["-"], Some(&path));
    assert_eq!(read(&out.join("ctx/abs-marker-rbuild")), "inside");
    assert!(!Path::new("/abs-marker-rbuild").exists());
}

/// A repository with `sub/Dockerfile` and `sub/f.txt`: `v1` tagged, then `v2` on `main`.
fn git_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let mut all =
            vec!["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main"];
        all.extend_from_slice(args);
        sh(&repo, &all);
    };
    git(&["init", "-q"]);
    write_files(
        &repo,
        &[("sub/Dockerfile", "FROM scratch\nCOPY . /ctx/\n"), ("sub/f.txt", "v1\n"), ("top.txt", "top\n")],
    );
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "one"]);
    git(&["tag", "v1"]);
    write_files(&repo, &[("sub/f.txt", "v2\n")]);
    git(&["commit", "-q", "-am", "two"]);
    repo
}

#[test]
fn git_contexts_with_ref_and_subdir() {
    if !ready("git_contexts_with_ref_and_subdir") || !support::have("git") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = git_repo(t.path());
    let url = |r: &str| format!("file://{}#{r}", repo.display());
    let v1 = build_local(t.path(), "v1", &[&url("v1:sub")], None);
    assert_eq!(read(&v1.join("ctx/f.txt")), "v1\n");
    assert!(!v1.join("ctx/top.txt").exists(), "only the subdirectory is the context");
    assert!(!v1.join("ctx/.git").exists());
    let main = build_local(t.path(), "main", &[&url("main:sub")], None);
    assert_eq!(read(&main.join("ctx/f.txt")), "v2\n");
    // A local path with a fragment is the repository at that ref, not the work tree.
    write_files(&repo, &[("sub/f.txt", "uncommitted\n")]);
    let path_form = format!("{}#v1:sub", repo.display());
    let local = build_local(t.path(), "local-path", &[&path_form], None);
    assert_eq!(read(&local.join("ctx/f.txt")), "v1\n");
    // The whole repository, with -f inside it: no .git in the context.
    let whole = build_local(t.path(), "whole", &["-f", "sub/Dockerfile", &url("main")], None);
    assert_eq!(read(&whole.join("ctx/top.txt")), "top\n");
    assert!(!whole.join("ctx/.git").exists());
    let missing = rbuild(t.path(), &["build", &url("nosuchref")], None);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nosuchref"));
}

/// Serves `files` over HTTP on a loopback port until the process ends; returns the base URL.
fn serve(files: HashMap<String, Vec<u8>>) -> String {
    serve_with_auth(files, None)
}

/// [`serve`], answering `401` to requests without the `Authorization` header `auth`.
fn serve_with_auth(files: HashMap<String, Vec<u8>>, auth: Option<&'static str>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&req);
            let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let authorized = auth.is_none_or(|a| {
                text.lines().any(|l| {
                    l.split_once(':').is_some_and(|(k, v)| k.eq_ignore_ascii_case("authorization") && v.trim() == a)
                })
            });
            if !authorized {
                let _ = s.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                continue;
            }
            let _ = match files.get(&path) {
                Some(body) => {
                    let head =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                    s.write_all(head.as_bytes()).and_then(|()| s.write_all(body))
                }
                None => s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            };
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[test]
fn tarball_and_dockerfile_urls_as_contexts() {
    if !ready("tarball_and_dockerfile_urls_as_contexts") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = scratch_context(t.path());
    let archive = t.path().join("ctx.tar.gz");
    sh(&ctx, &["tar", "-czf", archive.to_str().unwrap(), "."]);
    let base = serve(HashMap::from([
        ("/ctx.tar.gz".to_owned(), std::fs::read(&archive).unwrap()),
        ("/Dockerfile".to_owned(), b"FROM scratch\nCOPY <<EOF /u.txt\nfrom a url\nEOF\n".to_vec()),
    ]));
    let out = build_local(t.path(), "tgz", &[&format!("{base}/ctx.tar.gz")], None);
    assert_eq!(read(&out.join("hello.txt")), "hello\n");
    let out = build_local(t.path(), "df", &[&format!("{base}/Dockerfile")], None);
    assert_eq!(read(&out.join("u.txt")), "from a url\n");
    assert!(!rbuild(t.path(), &["build", &format!("{base}/missing.tar")], None).status.success());
}

#[test]
fn named_contexts_of_every_kind_replace_from_and_copy_from() {
    if !ready("named_contexts_of_every_kind_replace_from_and_copy_from") || !support::have("git") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("dirctx");
    write_files(&dir, &[("d.txt", "dir\n"), ("skip.tmp", "ignored\n"), (".dockerignore", "*.tmp\n")]);
    let repo = git_repo(t.path());
    let tarsrc = t.path().join("tarsrc");
    write_files(&tarsrc, &[("t.txt", "tar\n")]);
    let archive = t.path().join("named.tar.gz");
    sh(&tarsrc, &["tar", "-czf", archive.to_str().unwrap(), "."]);
    let base = serve(HashMap::from([("/named.tar.gz".to_owned(), std::fs::read(&archive).unwrap())]));
    // Each kind once as a FROM (a stage built on it) and once as COPY --from. `alpine` is an
    // image name: the context wins over the registry.
    let ctx = t.path().join("main");
    write_files(
        &ctx,
        &[(
            "Dockerfile",
            "FROM alpine AS fd\n\
             FROM gitctx AS fg\n\
             FROM tarctx AS ft\n\
             FROM builder AS replaced\n\
             COPY <<EOF /never\nthis stage is replaced\nEOF\n\
             FROM scratch\n\
             COPY --from=fd /d.txt /from-dir.txt\n\
             COPY --from=fg /f.txt /from-git.txt\n\
             COPY --from=ft /t.txt /from-tar.txt\n\
             COPY --from=alpine:latest / /copy-dir/\n\
             COPY --from=gitctx /f.txt /copy-git.txt\n\
             COPY --from=tarctx /t.txt /copy-tar.txt\n\
             COPY --from=replaced /f.txt /replaced.txt\n\
             COPY --from=alias /t.txt /alias.txt\n",
        )],
    );
    let args = |d: &Path| {
        vec![
            format!("alpine={}", d.display()),
            format!("gitctx=file://{}#v1:sub", repo.display()),
            format!("tarctx={base}/named.tar.gz"),
            format!("replaced=file://{}#main:sub", repo.display()),
            "alias=target:ft".to_owned(),
        ]
    };
    let mut all = Vec::new();
    for a in args(&dir) {
        all.push("--build-context".to_owned());
        all.push(a);
    }
    all.push(ctx.to_str().unwrap().to_owned());
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = build_local(t.path(), "named", &all, None);
    assert_eq!(read(&out.join("from-dir.txt")), "dir\n");
    assert_eq!(read(&out.join("copy-dir/d.txt")), "dir\n");
    assert!(!out.join("copy-dir/skip.tmp").exists(), "the directory's .dockerignore applies");
    assert_eq!(read(&out.join("from-git.txt")), "v1\n");
    assert_eq!(read(&out.join("copy-git.txt")), "v1\n");
    assert_eq!(read(&out.join("from-tar.txt")), "tar\n");
    assert_eq!(read(&out.join("copy-tar.txt")), "tar\n");
    assert_eq!(read(&out.join("replaced.txt")), "v2\n", "the named context replaces the stage");
    assert_eq!(read(&out.join("alias.txt")), "tar\n");

    // Named contexts take part in cache keys: a changed file is seen.
    write_files(&dir, &[("d.txt", "dir changed\n")]);
    let out = build_local(t.path(), "named-again", &all, None);
    assert_eq!(read(&out.join("from-dir.txt")), "dir changed\n");
    assert_eq!(read(&out.join("copy-dir/d.txt")), "dir changed\n");
}

#[test]
fn docker_image_context_keeps_the_image_config() {
    if !ready_registry("docker_image_context_keeps_the_image_config") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let reg = registry();
    let marked = reg.reference("marked:1");
    let ctx = t.path().join("img");
    write_files(&ctx, &[("Dockerfile", "ARG BASE\nFROM $BASE\nENV MARK=from-the-image\n")]);
    let arg = format!("BASE={}", reg.reference("busybox:latest"));
    let out = rbuild(t.path(), &["build", "-t", &marked, "--build-arg", &arg, "--push", ctx.to_str().unwrap()], None);
    assert!(out.status.success());

    let main = t.path().join("main");
    write_files(
        &main,
        &[(
            "Dockerfile",
            "FROM nosuch/base AS b\nRUN echo \"$MARK\" > /mark\n\
             FROM scratch\nCOPY --from=b /mark /mark\nCOPY --from=tools /bin/busybox /busybox\n",
        )],
    );
    let c1 = format!("nosuch/base=docker-image://{marked}");
    let c2 = format!("tools=docker-image://{}", reg.reference("busybox:latest"));
    let out =
        build_local(t.path(), "out", &["--build-context", &c1, "--build-context", &c2, main.to_str().unwrap()], None);
    assert_eq!(read(&out.join("mark")), "from-the-image\n");
    assert!(out.join("busybox").is_file());
}

/// Interfaces in a `/proc/net/dev` listing.
fn interfaces(text: &str) -> Vec<String> {
    text.lines().skip(2).filter_map(|l| l.split(':').next()).map(|s| s.trim().to_owned()).collect()
}

#[test]
fn run_options_are_seen_inside_run_and_never_in_the_image() {
    if !ready_registry("run_options_are_seen_inside_run_and_never_in_the_image") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    write_files(
        &ctx,
        &[(
            "Dockerfile",
            "ARG BASE\nFROM $BASE\n\
             RUN cat /etc/hosts > /hosts.txt && ulimit -Sn > /nofile-soft && ulimit -Hn > /nofile-hard \
             && df -k /dev/shm | tail -n 1 > /shm.txt && cat /proc/net/dev > /net-none.txt\n\
             RUN --network=host cat /proc/net/dev > /net-host.txt\n",
        )],
    );
    let arg = format!("BASE={}", registry().reference("busybox:latest"));
    let out = build_local(
        t.path(),
        "out",
        &[
            "--build-arg",
            &arg,
            "--add-host",
            "db.internal:10.1.2.3",
            "--ulimit",
            "nofile=1024:2048",
            "--shm-size",
            "128m",
            "--network",
            "none",
            ctx.to_str().unwrap(),
        ],
        None,
    );
    let hosts = read(&out.join("hosts.txt"));
    assert!(hosts.contains("10.1.2.3\tdb.internal"), "{hosts}");
    // The image has no /etc/hosts: the RUN got one (as BuildKit binds it), the layer none.
    assert!(!out.join("etc/hosts").exists(), "the added host never reaches a layer");
    assert_eq!(read(&out.join("nofile-soft")).trim(), "1024");
    assert_eq!(read(&out.join("nofile-hard")).trim(), "2048");
    let shm = read(&out.join("shm.txt"));
    assert_eq!(shm.split_whitespace().nth(1), Some("131072"), "{shm}");
    assert!(!out.join("dev/shm").exists() || std::fs::read_dir(out.join("dev/shm")).unwrap().next().is_none());
    assert_eq!(interfaces(&read(&out.join("net-none.txt"))), ["lo"], "--network none");
    let host_ifaces = interfaces(&std::fs::read_to_string("/proc/net/dev").unwrap());
    if host_ifaces.len() > 1 {
        assert!(interfaces(&read(&out.join("net-host.txt"))).len() > 1, "RUN --network=host overrides");
    }
}

#[test]
fn host_gateway_reaches_the_host() {
    if !ready_registry("host_gateway_reaches_the_host") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    // A service on the host's loopback only: what host-gateway must reach.
    let base = serve(HashMap::from([("/hello".to_owned(), b"from the host\n".to_vec())]));
    let port = base.rsplit(':').next().unwrap().to_owned();
    let ctx = t.path().join("ctx");
    write_files(
        &ctx,
        &[(
            "Dockerfile",
            // The test image has no /etc/hosts: every RUN gets one all the same.
            "ARG BASE\nFROM $BASE\nARG PORT\n\
             RUN cat /etc/hosts > /hosts.txt && wget -q -O /fetched.txt http://docker:$PORT/hello\n",
        )],
    );
    let arg = format!("BASE={}", registry().reference("busybox:latest"));
    let port_arg = format!("PORT={port}");
    let args = ["--build-arg", &arg, "--build-arg", &port_arg, "--add-host", "docker:host-gateway"];
    let out = build_local(t.path(), "out", &[&args[..], &[ctx.to_str().unwrap()]].concat(), None);
    let hosts = read(&out.join("hosts.txt"));
    assert!(hosts.contains("\n127.0.0.1\tdocker\n"), "{hosts}");
    assert_eq!(read(&out.join("fetched.txt")), "from the host\n", "the RUN reached the host's service");
    assert!(!out.join("etc/hosts").exists(), "the entry never reaches a layer");

    // RBUILD_HOST_GATEWAY_IP sets the addresses (one entry each), like dockerd's host-gateway-ip.
    write_files(&ctx, &[("Dockerfile", "ARG BASE\nFROM $BASE\nRUN cat /etc/hosts > /hosts.txt\n")]);
    let out_dir = t.path().join("env");
    let dest = format!("type=local,dest={}", out_dir.display());
    let gateway = Path::new("10.9.8.7,fd00::7");
    let build = ["build", "-o", &dest, "--build-arg", &arg, "--add-host", "docker=host-gateway", ctx.to_str().unwrap()];
    let out = rbuild_env(t.path(), &build, None, &[("RBUILD_HOST_GATEWAY_IP", gateway)]);
    assert!(out.status.success());
    let hosts = read(&out_dir.join("hosts.txt"));
    assert!(hosts.ends_with("\n10.9.8.7\tdocker\nfd00::7\tdocker\n"), "{hosts}");

    let bad = rbuild_env(t.path(), &build, None, &[("RBUILD_HOST_GATEWAY_IP", Path::new("gateway"))]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid RBUILD_HOST_GATEWAY_IP"));
}

#[test]
fn oci_layout_context_replaces_from_and_copy_from() {
    if !ready("oci_layout_context_replaces_from_and_copy_from") || !support::require_busybox("oci_layout_context") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let layout = support::busybox_layout();
    let ctx = t.path().join("ctx");
    write_files(
        &ctx,
        &[(
            "Dockerfile",
            "FROM bb AS x\nRUN echo \"ran on $PATH\" > /ran\n\
             FROM scratch\nCOPY --from=x /ran /ran\nCOPY --from=bb /bin/busybox /busybox\n",
        )],
    );
    let c = format!("bb=oci-layout://{}:latest", layout.display());
    let out = build_local(t.path(), "out", &["--build-context", &c, ctx.to_str().unwrap()], None);
    assert!(read(&out.join("ran")).starts_with("ran on /"), "RUN ran on the layout's image");
    assert!(out.join("busybox").is_file());
    let bad = format!("bb=oci-layout://{}:nosuchtag", layout.display());
    let failed = rbuild(t.path(), &["build", "--build-context", &bad, ctx.to_str().unwrap()], None);
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("tag"));
}

#[test]
fn url_contexts_use_the_registry_auth_store_for_their_host() {
    if !ready("url_contexts_use_the_registry_auth_store_for_their_host") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = scratch_context(t.path());
    let archive = t.path().join("ctx.tar.gz");
    sh(&ctx, &["tar", "-czf", archive.to_str().unwrap(), "."]);
    let bytes = std::fs::read(&archive).unwrap();
    // base64("user:pass")
    let base = serve_with_auth(HashMap::from([("/ctx.tar.gz".to_owned(), bytes)]), Some("Basic dXNlcjpwYXNz"));
    let url = format!("{base}/ctx.tar.gz");
    let no_creds = t.path().join("no-creds");
    std::fs::create_dir(&no_creds).unwrap();
    let out = rbuild_env(t.path(), &["build", &url], None, &[("DOCKER_CONFIG", &no_creds)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));

    let config = t.path().join("docker");
    let host = base.trim_start_matches("http://");
    write_files(
        &config,
        &[("config.json", &format!(r#"{{"auths":{{"{host}":{{"username":"user","password":"pass"}}}}}}"#))],
    );
    let dest = t.path().join("out");
    let o = format!("type=local,dest={}", dest.display());
    let out = rbuild_env(t.path(), &["build", "-o", &o, &url], None, &[("DOCKER_CONFIG", &config)]);
    assert!(out.status.success());
    assert_eq!(read(&dest.join("hello.txt")), "hello\n");
    // The same for a named context (downloaded by the worker, as ADD does).
    let main = t.path().join("main");
    write_files(&main, &[("Dockerfile", "FROM scratch\nCOPY --from=remote /hello.txt /named.txt\n")]);
    let named = format!("remote={url}");
    let dest = t.path().join("out-named");
    let o = format!("type=local,dest={}", dest.display());
    let args = ["build", "-o", &o, "--build-context", &named, main.to_str().unwrap()];
    let out = rbuild_env(t.path(), &args, None, &[("DOCKER_CONFIG", &config)]);
    assert!(out.status.success());
    assert_eq!(read(&dest.join("named.txt")), "hello\n");
}

/// Serves the bare repositories under `root` over git's smart HTTP (`git http-backend` as a
/// CGI), answering `401` to requests without the `Authorization` header `auth`.
fn serve_git(root: PathBuf, auth: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            let head_end = loop {
                if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break req.len(),
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            };
            let head = String::from_utf8_lossy(&req[..head_end]).into_owned();
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| {
                        l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
                    })
                    .map(str::to_owned)
            };
            let mut body = req[head_end..].to_vec();
            let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            while body.len() < length {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body.extend_from_slice(&buf[..n]),
                }
            }
            if header("authorization").as_deref() != Some(auth) {
                let _ = s.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let mut words = head.split_whitespace();
            let (method, target) = (words.next().unwrap_or("GET").to_owned(), words.next().unwrap_or("/").to_owned());
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let mut cgi = Command::new("git")
                .arg("http-backend")
                .env("GIT_PROJECT_ROOT", &root)
                .env("GIT_HTTP_EXPORT_ALL", "1")
                .env("REQUEST_METHOD", &method)
                .env("PATH_INFO", path)
                .env("QUERY_STRING", query)
                .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
                .env("CONTENT_LENGTH", body.len().to_string())
                .env("HTTP_CONTENT_ENCODING", header("content-encoding").unwrap_or_default())
                .env("GIT_PROTOCOL", header("git-protocol").unwrap_or_default())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            cgi.stdin.take().unwrap().write_all(&body).unwrap();
            let out = cgi.wait_with_output().unwrap().stdout;
            let split = out.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
            let split = split.or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
            let Some((at, sep)) = split else { continue };
            let cgi_head = String::from_utf8_lossy(&out[..at]).into_owned();
            let status = cgi_head
                .lines()
                .find_map(|l| l.strip_prefix("Status:"))
                .map_or("200 OK".to_owned(), |v| v.trim().to_owned());
            let headers: String = cgi_head
                .lines()
                .filter(|l| !l.starts_with("Status:") && !l.trim().is_empty())
                .map(|l| format!("{}\r\n", l.trim_end()))
                .collect();
            let payload = &out[at + sep..];
            let reply =
                format!("HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n", payload.len());
            let _ = s.write_all(reply.as_bytes()).and_then(|()| s.write_all(payload));
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[test]
fn git_over_http_uses_the_registry_auth_store_for_its_host() {
    if !ready("git_over_http_uses_the_registry_auth_store_for_its_host") || !support::have("git") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = git_repo(t.path());
    let served = t.path().join("served");
    std::fs::create_dir(&served).unwrap();
    sh(&served, &["git", "clone", "-q", "--bare", repo.to_str().unwrap(), "repo.git"]);
    // base64("user:pass")
    let base = serve_git(served, "Basic dXNlcjpwYXNz");
    let url = format!("{base}/repo.git#v1:sub");
    let no_creds = t.path().join("no-creds");
    std::fs::create_dir(&no_creds).unwrap();
    let out = rbuild_env(t.path(), &["build", &url], None, &[("DOCKER_CONFIG", &no_creds)]);
    assert!(!out.status.success(), "the server wants credentials");

    let config = t.path().join("docker");
    let host = base.trim_start_matches("http://");
    write_files(
        &config,
        &[("config.json", &format!(r#"{{"auths":{{"{host}":{{"username":"user","password":"pass"}}}}}}"#))],
    );
    let dest = t.path().join("out");
    let o = format!("type=local,dest={}", dest.display());
    let out = rbuild_env(t.path(), &["build", "-o", &o, &url], None, &[("DOCKER_CONFIG", &config)]);
    assert!(out.status.success());
    assert_eq!(read(&dest.join("ctx/f.txt")), "v1\n");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("pass"), "the password is never shown");
}

#[test]
fn pull_re_resolves_a_moved_tag() {
    if !ready_registry("pull_re_resolves_a_moved_tag") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let reg = registry();
    reg.seed_busybox("moving:1");
    let moving = reg.reference("moving:1");
    let ctx = t.path().join("ctx");
    write_files(&ctx, &[("Dockerfile", "ARG BASE\nFROM $BASE\nRUN echo \"mark=$MARK\" > /m\n")]);
    let arg = format!("BASE={moving}");
    let first = build_local(t.path(), "first", &["--build-arg", &arg, ctx.to_str().unwrap()], None);
    assert_eq!(read(&first.join("m")), "mark=\n");
    // The tag moves to another image.
    let other = t.path().join("other");
    write_files(&other, &[("Dockerfile", "ARG BASE\nFROM $BASE\nENV MARK=moved\n")]);
    let busybox = format!("BASE={}", reg.reference("busybox:latest"));
    let out =
        rbuild(t.path(), &["build", "-t", &moving, "--build-arg", &busybox, "--push", other.to_str().unwrap()], None);
    assert!(out.status.success());
    let second = build_local(t.path(), "second", &["--pull", "--build-arg", &arg, ctx.to_str().unwrap()], None);
    assert_eq!(read(&second.join("m")), "mark=moved\n", "the base is resolved again, not taken from the cache");
}
