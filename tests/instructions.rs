//! End-to-end tests of every Dockerfile instruction and flag (issue 3), beyond what
//! `tests/dockerfile.rs` covers: the real `rbuild` binary builds on a busybox base served by a
//! loopback registry, and each test checks the image it wrote (config with skopeo, files with
//! umoci). Most checks run inside the image: a final `RUN` records what it sees in a file.
//!
//! They need root and the packages `scripts/install-deps.sh` installs; without them each test
//! says why it skips. CI runs as root with the packages.

mod dfkit;
mod support;

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use dfkit::{base, config_of, created_by, registry, run_logged, serve_once, Ctx};
use serde_json::{json, Value};

fn ready(test: &str) -> bool {
    dfkit::ready(test)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn from_platform_global_args_and_predefined_platform_args() {
    if !ready("from_platform_global_args_and_predefined_platform_args") {
        return;
    }
    // Global ARGs (one with a default, one from --build-arg) make up the FROM line; the
    // predefined platform args are usable in FROM without a declaration, and inside a stage
    // once declared; undeclared ones, and global ARGs not re-declared, are empty.
    let ctx = Ctx::new(
        "ARG BASE\nARG REPO=busybox\nARG REGISTRY\n\
         FROM --platform=$BUILDPLATFORM ${REGISTRY}/${REPO}:latest AS build\n\
         ARG TARGETPLATFORM\nARG TARGETOS\nARG TARGETARCH\nARG TARGETVARIANT\nARG BUILDPLATFORM\nARG BUILDOS\nARG BUILDARCH\n\
         RUN echo \"$TARGETPLATFORM|$TARGETOS|$TARGETARCH|$TARGETVARIANT|$BUILDPLATFORM|$BUILDOS|$BUILDARCH\" > /platforms\n\
         FROM --platform=linux/amd64 $BASE\nCOPY --from=build /platforms /platforms\n\
         RUN echo \"[$TARGETARCH][$REPO][$BUILDOS]\" > /undeclared\n",
        &[],
    );
    let registry_arg = format!("REGISTRY={}", registry().host());
    let image = ctx.build_oci(&["--build-arg", &registry_arg]);
    let rootfs = ctx.rootfs();
    assert_eq!(ctx.read(&rootfs, "platforms"), "linux/amd64|linux|amd64||linux/amd64|linux|amd64\n");
    assert_eq!(ctx.read(&rootfs, "undeclared"), "[][][]\n");
    let config = config_of(&image);
    assert_eq!((config["architecture"].as_str(), config["os"].as_str()), (Some("amd64"), Some("linux")));
    // The platform args are not part of the config.
    let env = config["config"]["Env"].to_string();
    assert!(!env.contains("TARGET") && !env.contains("BUILD"), "{env}");
}

#[test]
fn user_chown_chmod_and_workdir_ownership() {
    if !ready("user_chown_chmod_and_workdir_ownership") {
        return;
    }
    let ctx = Ctx::new(
        "ARG BASE\nFROM $BASE\n\
         COPY --chown=app:app f /owned/app-app\n\
         COPY --chown=1234:5678 --chmod=0640 f /owned/numeric\n\
         COPY --chown=app f /owned/app-primary\n\
         COPY --chown=app:staff dir /owned/dir/\n\
         COPY --chmod=700 dir /exec/\n\
         ADD --chown=nobody:nogroup --chmod=600 f /owned/added\n\
         RUN echo \"$HOME\" > /root-home\n\
         USER app\nWORKDIR /work/sub\n\
         RUN id > /work/sub/id && echo \"$HOME\" > /work/sub/home && touch /work/sub/by-app\n\
         USER app:staff\nRUN id > /tmp/id-group\n\
         USER 1234\nRUN echo \"$HOME\" > /tmp/home-unknown\n\
         USER root\n\
         RUN cd / && stat -c '%n %u:%g %a' owned owned/app-app owned/numeric owned/app-primary owned/dir \
             owned/dir/inner owned/added exec exec/inner work work/sub work/sub/by-app > /stat\n",
        &[("f", b"f\n"), ("dir/inner", b"inner\n")],
    );
    let image = ctx.build_oci(&[]);
    let rootfs = ctx.rootfs();
    let stat = ctx.read(&rootfs, "stat");
    let want = [
        // COPY --chown gives the directories it creates the owner too.
        "owned 1000:1000 755",
        "owned/app-app 1000:1000 644",
        "owned/numeric 1234:5678 640",
        // A user name without a group takes the user's primary group.
        "owned/app-primary 1000:1000 644",
        "owned/dir 1000:50 755",
        "owned/dir/inner 1000:50 644",
        "owned/added 65534:65534 600",
        // --chmod applies to what is copied, not to the directory COPY creates.
        "exec 0:0 755",
        "exec/inner 0:0 700",
        // WORKDIR creates the directory and its missing parents owned by the USER.
        "work 1000:1000 755",
        "work/sub 1000:1000 755",
        "work/sub/by-app 1000:1000 644",
    ];
    assert_eq!(stat.lines().collect::<Vec<_>>(), want, "{stat}");
    let id = ctx.read(&rootfs, "work/sub/id");
    assert!(id.starts_with("uid=1000(app) gid=1000(app) groups="), "{id}");
    assert!(id.contains("50(staff)"), "a user name gets its supplementary groups: {id}");
    // HOME comes from passwd (runc's rule): /root for root, the user's home, `/` for an unknown uid.
    assert_eq!(ctx.read(&rootfs, "root-home"), "/root\n");
    assert_eq!(ctx.read(&rootfs, "work/sub/home"), "/home/app\n");
    // `user:group` gets that group only. (BuildKit also lists the primary group among the
    // supplementary ones, `groups=50(staff)`; rbuild's executor sets none there.)
    let id_group = ctx.read(&rootfs, "tmp/id-group");
    assert!(id_group.starts_with("uid=1000(app) gid=50(staff)"), "{id_group}");
    assert!(!id_group.split_once("groups=").is_some_and(|(_, g)| g.contains("1000")), "{id_group}");
    assert_eq!(ctx.read(&rootfs, "tmp/home-unknown"), "/\n");

    let config = config_of(&image);
    assert_eq!(config["config"]["User"], "root");
    assert_eq!(config["config"]["WorkingDir"], "/work/sub");
    let history = created_by(&config);
    for want in [
        "COPY --chown=1234:5678 --chmod=0640 f /owned/numeric # buildkit",
        "COPY --chown=app:staff dir /owned/dir/ # buildkit",
        "ADD --chown=nobody:nogroup --chmod=600 f /owned/added # buildkit",
        "USER app",
        "USER app:staff",
        "WORKDIR /work/sub",
    ] {
        assert!(history.iter().any(|h| h == want), "missing history {want:?} in {history:#?}");
    }
}

#[test]
fn history_and_config_are_written_as_buildkit_writes_them() {
    if !ready("history_and_config_are_written_as_buildkit_writes_them") {
        return;
    }
    let ctx = Ctx::new(
        "ARG BASE\nFROM $BASE\nMAINTAINER someone\nENV A=b C=\"d e\"\nARG X=1\nLABEL a=b\nEXPOSE 80 53/udp\n\
         WORKDIR /app\nCOPY file /x\nRUN echo hi > /hi\nRUN true\nRUN [\"/bin/sh\", \"-c\", \"echo exec > exec\"]\n\
         VOLUME /v\nSTOPSIGNAL 9\nSHELL [\"/bin/sh\", \"-ec\"]\n\
         ONBUILD RUN echo later\nUSER app\nCMD [\"sh\"]\nENTRYPOINT echo e\n",
        &[("file", b"file\n")],
    );
    let image = ctx.build_oci(&[]);
    let config = config_of(&image);
    let history = config["history"].as_array().unwrap();
    // The base image's own entry comes first, as it was.
    assert!(history[0]["created_by"].as_str().unwrap().starts_with("rbuild fixture: "), "{history:#?}");
    let ours: Vec<(String, bool)> = history[1..]
        .iter()
        .map(|h| (h["created_by"].as_str().unwrap().to_owned(), h["empty_layer"].as_bool().unwrap_or(false)))
        .collect();
    let want: Vec<(String, bool)> = [
        ("MAINTAINER someone", true),
        ("ENV A=b C=d e", true),
        ("ARG X=1", true),
        ("LABEL a=b", true),
        ("EXPOSE map[53/udp:{} 80/tcp:{}]", true),
        // WORKDIR makes a layer when it creates the directory.
        ("WORKDIR /app", false),
        ("COPY file /x # buildkit", false),
        ("RUN |1 X=1 /bin/sh -c echo hi > /hi # buildkit", false),
        // A RUN that changes nothing adds no layer.
        ("RUN |1 X=1 /bin/sh -c true # buildkit", true),
        // Exec form: the argv as it is, run in WORKDIR.
        ("RUN |1 X=1 /bin/sh -c echo exec > exec # buildkit", false),
        ("VOLUME [/v]", true),
        ("STOPSIGNAL 9", true),
        ("SHELL [/bin/sh -ec]", true),
        // ONBUILD adds no history entry.
        ("USER app", true),
        ("CMD [\"sh\"]", true),
        ("ENTRYPOINT [\"/bin/sh\" \"-ec\" \"echo e\"]", true),
    ]
    .iter()
    .map(|(s, e)| ((*s).to_owned(), *e))
    .collect();
    assert_eq!(ours, want);
    for h in &history[1..] {
        assert_eq!(h["comment"], "buildkit.dockerfile.v0", "{h}");
        assert!(h["created"].is_string(), "every entry has a time: {h}");
    }
    // One layer per non-empty entry.
    let layers = history.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), layers);

    let rootfs = ctx.rootfs();
    assert_eq!(ctx.read(&rootfs, "app/exec"), "exec\n");
    assert!(!rootfs.join("v").exists(), "VOLUME creates no directory");
    let c = &config["config"];
    assert_eq!(config["author"], "someone");
    // ENV keeps the inherited PATH first.
    assert_eq!(c["Env"], json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=b", "C=d e"]));
    assert_eq!(c["Labels"], json!({"a": "b"}));
    assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["Volumes"], json!({"/v": {}}));
    assert_eq!(c["StopSignal"], "9");
    assert_eq!(c["Shell"], json!(["/bin/sh", "-ec"]));
    assert_eq!(c["OnBuild"], json!(["RUN echo later"]));
    assert_eq!(c["User"], "app");
    // ENTRYPOINT after CMD in the same stage keeps that CMD; the shell form uses SHELL.
    assert_eq!(c["Cmd"], json!(["sh"]));
    assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-ec", "echo e"]));
    assert!(c.get("ARG").is_none() && !c["Env"].to_string().contains("X="), "ARGs stay out of the config: {c}");
}

#[test]
fn healthcheck_forms_and_config_inherited_across_stages() {
    if !ready("healthcheck_forms_and_config_inherited_across_stages") {
        return;
    }
    let dockerfile = "ARG BASE\nFROM $BASE AS exec-form\nENV FROM_PARENT=1\n\
                      HEALTHCHECK --retries=2 CMD [\"/bin/check\", \"--fast\"]\n\
                      ONBUILD RUN echo triggered > /onbuild\n\
                      FROM exec-form AS none\nHEALTHCHECK NONE\n\
                      FROM none AS entry\nENTRYPOINT [\"/bin/echo\"]\n";
    let ctx = Ctx::new(dockerfile, &[]);

    let image = ctx.build_oci(&["--target", "exec-form"]);
    let config = config_of(&image);
    let c = &config["config"];
    assert_eq!(c["Healthcheck"], json!({"Test": ["CMD", "/bin/check", "--fast"], "Retries": 2}));
    // Inherited from busybox: its CMD and PATH.
    assert_eq!(c["Cmd"], json!(["sh"]));
    assert_eq!(c["OnBuild"], json!(["RUN echo triggered > /onbuild"]));
    assert!(!ctx.rootfs().join("onbuild").exists(), "a stage does not run its own triggers");
    let history = created_by(&config);
    let want = "HEALTHCHECK &{[\"CMD\" \"/bin/check\" \"--fast\"] \"0s\" \"0s\" \"0s\" \"0s\" '\\x02'}";
    assert!(history.iter().any(|h| h == want), "missing {want:?} in {history:#?}");

    let image = ctx.build_oci(&["--target", "none"]);
    let config = config_of(&image);
    assert_eq!(config["config"]["Healthcheck"], json!({"Test": ["NONE"]}));
    assert!(config["config"]["Env"].as_array().unwrap().contains(&json!("FROM_PARENT=1")));
    // A stage built on that stage runs its triggers, which are then gone from the config.
    assert_eq!(ctx.read(&ctx.rootfs(), "onbuild"), "triggered\n");
    assert!(config["config"].get("OnBuild").is_none_or(Value::is_null), "{config}");

    // A stage built on a stage inherits its config; ENTRYPOINT resets the inherited CMD.
    let image = ctx.build_oci(&["--target", "entry"]);
    let config = config_of(&image);
    let c = &config["config"];
    assert_eq!(c["Healthcheck"], json!({"Test": ["NONE"]}));
    assert_eq!(c["Entrypoint"], json!(["/bin/echo"]));
    assert!(c.get("Cmd").is_none_or(Value::is_null), "{c}");
    assert!(c["Env"].as_array().unwrap().contains(&json!("FROM_PARENT=1")));
    // The history of every stage on the way is kept, in order.
    let history = created_by(&config);
    let pos = |s: &str| history.iter().position(|h| h.starts_with(s)).unwrap_or_else(|| panic!("{s} in {history:#?}"));
    assert!(
        pos("ENV FROM_PARENT=1") < pos("HEALTHCHECK &{[\"NONE\"]")
            && pos("HEALTHCHECK &{[\"NONE\"]") < pos("ENTRYPOINT")
    );
}

#[test]
fn run_bind_and_cache_mounts_and_their_options() {
    if !ready("run_bind_and_cache_mounts_and_their_options") {
        return;
    }
    let base = base();
    let dockerfile = format!(
        "ARG BASE\nFROM $BASE AS seed\nRUN mkdir /seed && echo seeded > /seed/s\n\
         FROM $BASE\n\
         RUN --mount=type=bind,source=src,target=/src,rw echo scribble > /src/new && ls /src > /bind-rw-ls\n\
         RUN --mount=type=bind,source=src,target=/src2 (touch /src2/x 2>/dev/null && echo writable || echo readonly) > /bind-ro\n\
         RUN --mount=type=bind,from={base},source=/etc,target=/img-etc cat /img-etc/group > /bind-image\n\
         RUN --mount=target=/whole cat /whole/src/input > /bind-default\n\
         ARG N\n\
         RUN --mount=type=cache,id=shared,target=/a echo \"$N\" >> /a/log\n\
         RUN --mount=type=cache,id=shared,target=/b,sharing=locked cat /b/log > /cache-log\n\
         RUN --mount=type=cache,target=/c,uid=1000,gid=50,mode=0700 stat -c '%u:%g %a' /c > /cache-owner\n\
         RUN --mount=type=cache,target=/d,from=seed,source=/seed,sharing=private cat /d/s > /cache-seeded\n\
         RUN --mount=type=cache,target=/e,ro (touch /e/x 2>/dev/null && echo writable || echo readonly) > /cache-ro\n"
    );
    let ctx = Ctx::new(&dockerfile, &[("src/input", b"context input\n")]);
    ctx.build_oci(&["--build-arg", "N=1"]);
    let rootfs = ctx.rootfs();
    let read = |p: &str| ctx.read(&rootfs, p);
    // bind: rw lets the step write, but nothing reaches the context or the layer.
    assert_eq!(read("bind-rw-ls"), "input\nnew\n");
    assert!(!ctx.path("ctx/src/new").exists(), "a rw bind mount must not write the context");
    assert_eq!(read("bind-ro"), "readonly\n");
    assert!(read("bind-image").starts_with("root:x:0:"), "{}", read("bind-image"));
    assert_eq!(read("bind-default"), "context input\n");
    // cache: shared by id between targets, owned as asked, seeded from a stage, read-only.
    assert_eq!(read("cache-log"), "1\n");
    assert_eq!(read("cache-owner"), "1000:50 700\n");
    assert_eq!(read("cache-seeded"), "seeded\n");
    assert_eq!(read("cache-ro"), "readonly\n");
    for gone in ["src", "src2", "img-etc", "whole", "a", "b", "c", "d", "e"] {
        assert!(!rootfs.join(gone).exists(), "mount point /{gone} must not reach the image");
    }

    // The cache mount keeps its contents for the next build.
    ctx.build_oci(&["--build-arg", "N=2"]);
    let rootfs = ctx.rootfs();
    assert_eq!(ctx.read(&rootfs, "cache-log"), "1\n2\n");
}

/// A listening unix socket standing in for an SSH agent (the build only needs to reach it).
fn fake_agent(dir: &Path) -> (UnixListener, String) {
    let path = dir.join("agent.sock");
    let listener = UnixListener::bind(&path).unwrap();
    (listener, path.display().to_string())
}

#[test]
fn run_tmpfs_secret_and_ssh_mounts_and_their_options() {
    if !ready("run_tmpfs_secret_and_ssh_mounts_and_their_options") {
        return;
    }
    let dockerfile = "ARG BASE\nFROM $BASE\n\
         RUN --mount=type=tmpfs,target=/t,size=1m df -k /t | tail -n 1 > /tmpfs-df\n\
         RUN --mount=type=secret,id=tok,target=/etc/tok,mode=0440,uid=1000,gid=50 stat -c '%u:%g %a' /etc/tok > /secret-stat && wc -c < /etc/tok > /secret-size\n\
         RUN --mount=type=secret,id=tok,env=TOKEN echo \"${#TOKEN}\" > /secret-env-len\n\
         RUN --mount=type=secret,id=absent (test -e /run/secrets/absent && echo present || echo absent) > /secret-optional\n\
         RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /ssh-default\n\
         RUN --mount=type=ssh,id=other,target=/agent.sock,mode=0600,uid=1000,gid=50,required stat -c '%F %u:%g %a' /agent.sock > /ssh-other\n";
    let ctx = Ctx::new(dockerfile, &[]);
    let secret = ctx.path("tok.txt");
    std::fs::write(&secret, "s3cret-value").unwrap();
    let secret_arg = format!("id=tok,src={}", secret.display());
    let (_agent, sock) = fake_agent(ctx.dir.path());
    let ssh_default = format!("default={sock}");
    let ssh_other = format!("other={sock}");
    let image = ctx.build_oci(&["--secret", &secret_arg, "--ssh", &ssh_default, "--ssh", &ssh_other]);
    let rootfs = ctx.rootfs();
    let read = |p: &str| ctx.read(&rootfs, p);
    let df: Vec<String> = read("tmpfs-df").split_whitespace().map(str::to_owned).collect();
    assert_eq!(df.get(1).map(String::as_str), Some("1024"), "a 1m tmpfs: {df:?}");
    assert_eq!(read("secret-stat"), "1000:50 440\n");
    assert_eq!(read("secret-size").trim(), "12");
    assert_eq!(read("secret-env-len"), "12\n");
    assert_eq!(read("secret-optional"), "absent\n");
    assert_eq!(read("ssh-default"), "/run/buildkit/ssh_agent.0\n");
    assert_eq!(read("ssh-other"), "socket 1000:50 600\n");
    for gone in ["t", "etc/tok", "agent.sock", "run"] {
        assert!(!rootfs.join(gone).exists(), "mount point /{gone} must not reach the image");
    }
    assert!(!config_of(&image).to_string().contains("s3cret-value"));
}

/// `ssh-agent -D` on a socket in `dir`; killed on drop.
struct SshAgent {
    child: Child,
    sock: std::path::PathBuf,
}

impl SshAgent {
    fn start(dir: &Path) -> SshAgent {
        let sock = dir.join("real-agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ssh-agent");
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        SshAgent { child, sock }
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies the host's `program` and the shared libraries `ldd` names into `root` at their own
/// paths, so the program runs in a busybox image.
fn copy_with_libraries(program: &str, root: &Path) {
    let path =
        String::from_utf8(Command::new("sh").args(["-c", &format!("command -v {program}")]).output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned();
    let ldd = Command::new("ldd").arg(&path).output().unwrap();
    assert!(ldd.status.success(), "ldd {path}");
    let mut files = vec![path];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let lib = line.split("=>").last().unwrap_or("").split_whitespace().next().unwrap_or("");
        if lib.starts_with('/') {
            files.push(lib.to_owned());
        }
    }
    for f in files {
        let dest = root.join(f.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap_or_else(|e| panic!("copying {f}: {e}"));
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn run_ssh_mount_forwards_the_agent() {
    let test = "run_ssh_mount_forwards_the_agent";
    if !ready(test) {
        return;
    }
    if !["ssh-agent", "ssh-add", "ssh-keygen", "ldd"].iter().all(|t| support::have(t)) {
        eprintln!("skipping {test}: needs `apt-get install openssh-client` (CI installs it)");
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("key");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "rbuild-ssh-test", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let agent = SshAgent::start(keys.path());
    let st =
        Command::new("ssh-add").arg(&key).env("SSH_AUTH_SOCK", &agent.sock).stderr(Stdio::null()).status().unwrap();
    assert!(st.success(), "ssh-add to the test agent");

    // The real ssh-add runs in the step, as root with the default mount, and as a user the
    // `uid` option gives the socket to.
    let ctx = Ctx::new(
        "ARG BASE\nFROM $BASE\nCOPY sshroot/ /\nRUN --mount=type=ssh ssh-add -l > /keys-root\n\
         USER app\nRUN --mount=type=ssh,id=deploy,uid=1000 ssh-add -l > /tmp/keys-app\n",
        &[],
    );
    copy_with_libraries("ssh-add", &ctx.path("ctx/sshroot"));
    let default = format!("default={}", agent.sock.display());
    let deploy = format!("deploy={}", agent.sock.display());
    ctx.build_oci(&["--ssh", &default, "--ssh", &deploy]);
    let rootfs = ctx.rootfs();
    for listing in ["keys-root", "tmp/keys-app"] {
        let keys = ctx.read(&rootfs, listing);
        assert!(keys.contains("rbuild-ssh-test (ED25519)"), "{listing}: {keys}");
    }
    assert!(!rootfs.join("run").exists());
}

#[test]
fn run_network_and_security_modes() {
    if !ready("run_network_and_security_modes") {
        return;
    }
    let port = serve_once(b"served\n", 3);
    let url = format!("http://127.0.0.1:{port}/f");
    let dockerfile = format!(
        "ARG BASE\nFROM $BASE\n\
         RUN --network=none ls /sys/class/net > /net-none && (wget -q -T 2 -O /dev/null {url} && echo reached || echo unreachable) > /net-none-wget\n\
         RUN --network=host ls /sys/class/net > /net-host\n\
         RUN --network=default wget -q -O /net-default {url}\n\
         RUN wget -q -O /net-implicit {url}\n\
         RUN --security=sandbox grep CapEff /proc/self/status > /cap-sandbox\n\
         RUN --security=insecure grep CapEff /proc/self/status > /cap-insecure\n"
    );
    let ctx = Ctx::new(&dockerfile, &[]);
    ctx.build_oci(&["--allow", "security.insecure,network.host"]);
    let rootfs = ctx.rootfs();
    let read = |p: &str| ctx.read(&rootfs, p);
    assert_eq!(read("net-none"), "lo\n");
    assert_eq!(read("net-none-wget"), "unreachable\n");
    let mut host: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    host.sort();
    assert_eq!(read("net-host").lines().collect::<Vec<_>>(), host);
    assert_eq!(read("net-default"), "served\n");
    assert_eq!(read("net-implicit"), "served\n");
    assert_eq!(read("cap-sandbox"), "CapEff:\t00000000a80425fb\n");
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let host_caps = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    assert_eq!(read("cap-insecure").trim_end(), host_caps, "insecure runs with the builder's capabilities");
}

#[test]
fn copy_from_an_image_a_stage_name_and_an_index() {
    if !ready("copy_from_an_image_a_stage_name_and_an_index") {
        return;
    }
    let dockerfile = format!(
        "ARG BASE\nFROM $BASE AS Builder\nRUN echo built > /artifact\n\
         FROM scratch\nCOPY --from={} /bin/busybox /bin/busybox\n\
         COPY --from=builder /artifact /by-name\nCOPY --from=0 /artifact /by-index\n\
         COPY --from=BUILDER /artifact /by-name-any-case\n",
        base()
    );
    let ctx = Ctx::new(&dockerfile, &[]);
    let image = ctx.build_oci(&[]);
    let rootfs = ctx.rootfs();
    let size = std::fs::metadata(rootfs.join("bin/busybox")).unwrap().len();
    assert_eq!(size, std::fs::metadata("/bin/busybox").unwrap().len(), "the image's busybox is the host's");
    for p in ["by-name", "by-index", "by-name-any-case"] {
        assert_eq!(ctx.read(&rootfs, p), "built\n", "{p}");
    }
    let config = config_of(&image);
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 4);
    let history = created_by(&config);
    assert_eq!(
        history,
        [
            "COPY /bin/busybox /bin/busybox # buildkit",
            "COPY /artifact /by-name # buildkit",
            "COPY /artifact /by-index # buildkit",
            "COPY /artifact /by-name-any-case # buildkit"
        ]
    );
    assert_eq!(config["config"]["Env"], json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]));
}

fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_owned()
}

#[test]
fn add_checksum_link_and_exclude() {
    if !ready("add_checksum_link_and_exclude") {
        return;
    }
    let body: &'static [u8] = b"checked download\n";
    let port = serve_once(body, 2);
    let sum = sha256_hex(body);
    // A local archive whose entries belong to 123:456.
    let staging = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(staging.path().join("pkg")).unwrap();
    std::fs::write(staging.path().join("pkg/f"), "packed\n").unwrap();
    let tar = staging.path().join("pkg.tar");
    let st = Command::new("tar")
        .args(["--owner=123", "--group=456", "--numeric-owner", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(staging.path())
        .arg("pkg")
        .status()
        .unwrap();
    assert!(st.success());
    let tar = std::fs::read(&tar).unwrap();
    let ctx = Ctx::new(
        &format!(
            "ARG BASE\nFROM $BASE\nADD --checksum=sha256:{sum} http://127.0.0.1:{port}/pkg/data.txt /dl/\n\
             ADD --link --exclude=*.tmp --exclude=cache tree /linked/\n\
             ADD --exclude=*.txt tree /plain/\n\
             ADD --chown=app:app pkg.tar /unpacked/\n\
             COPY suid /copied-suid\n\
             RUN stat -c '%n %u:%g' /unpacked /unpacked/pkg /unpacked/pkg/f > /unpacked-stat\n"
        ),
        &[
            ("tree/a.txt", b"a"),
            ("tree/b.tmp", b"b"),
            ("tree/cache/c", b"c"),
            ("tree/sub/d.txt", b"d"),
            ("pkg.tar", &tar),
        ],
    );
    // COPY keeps the context's mode bits (setuid included) and mtime.
    ctx.write("suid", b"#!/bin/sh\n");
    let suid = ctx.path("ctx/suid");
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let st = Command::new("touch").args(["-d", "@1600000000"]).arg(&suid).status().unwrap();
    assert!(st.success());
    let image = ctx.build_oci(&[]);
    let rootfs = ctx.rootfs();
    let meta = std::fs::metadata(rootfs.join("copied-suid")).unwrap();
    assert_eq!((meta.permissions().mode() & 0o7777, meta.mtime()), (0o4755, 1_600_000_000));
    // A download gets mode 0600 and the Last-Modified time (serve_once says 1700000000).
    let meta = std::fs::metadata(rootfs.join("dl/data.txt")).unwrap();
    assert_eq!((meta.permissions().mode() & 0o7777, meta.mtime()), (0o600, 1_700_000_000));
    // An archive keeps its owners; --chown only owns the directory ADD creates.
    assert_eq!(ctx.read(&rootfs, "unpacked/pkg/f"), "packed\n");
    assert_eq!(
        ctx.read(&rootfs, "unpacked-stat"),
        "/unpacked 1000:1000\n/unpacked/pkg 123:456\n/unpacked/pkg/f 123:456\n"
    );
    assert_eq!(ctx.read(&rootfs, "dl/data.txt"), "checked download\n");
    assert_eq!(ctx.read(&rootfs, "linked/a.txt"), "a");
    assert_eq!(ctx.read(&rootfs, "linked/sub/d.txt"), "d");
    assert!(!rootfs.join("linked/b.tmp").exists() && !rootfs.join("linked/cache").exists());
    assert_eq!(ctx.read(&rootfs, "plain/b.tmp"), "b");
    assert!(!rootfs.join("plain/a.txt").exists(), "excluded");
    // Patterns match paths relative to the source, `*` not crossing `/` (BuildKit's matcher).
    assert_eq!(ctx.read(&rootfs, "plain/sub/d.txt"), "d");
    let history = created_by(&config_of(&image));
    let want = format!("ADD http://127.0.0.1:{port}/pkg/data.txt /dl/ # buildkit");
    assert!(history.contains(&want), "{history:#?}");
    assert!(history.iter().any(|h| h == "ADD tree /linked/ # buildkit"), "{history:#?}");
}

/// `git daemon` serving `base` on a free loopback port; killed on drop.
struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> GitDaemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("git")
            .args(["daemon", "--export-all", "--reuseaddr", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start git daemon");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        GitDaemon { child, port }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn add_git_repository_with_and_without_keep_git_dir() {
    if !ready("add_git_repository_with_and_without_keep_git_dir") {
        return;
    }
    if !support::have("git") {
        eprintln!("skipping add_git_repository_with_and_without_keep_git_dir: needs `apt-get install git`");
        return;
    }
    let served = tempfile::tempdir().unwrap();
    let repo = served.path().join("repo.git");
    std::fs::create_dir_all(repo.join("sub")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("hello.txt"), "v1\n").unwrap();
    std::fs::write(repo.join("sub/inner.txt"), "inner\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    git(&repo, &["tag", "v1"]);
    std::fs::write(repo.join("hello.txt"), "v2\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "two"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let daemon = GitDaemon::start(served.path());
    let url = format!("git://127.0.0.1:{}/repo.git", daemon.port);

    let ctx = Ctx::new(
        &format!(
            "ARG BASE\nFROM $BASE\nADD {url}#v1 /tagged/\nADD --keep-git-dir=true {url}#main /kept/\n\
             ADD {url}#v1:sub /subdir/\nADD {url} /head/\n"
        ),
        &[],
    );
    let image = ctx.build_oci(&[]);
    let rootfs = ctx.rootfs();
    assert_eq!(ctx.read(&rootfs, "tagged/hello.txt"), "v1\n");
    assert_eq!(ctx.read(&rootfs, "tagged/sub/inner.txt"), "inner\n");
    assert!(!rootfs.join("tagged/.git").exists(), ".git is dropped by default");
    assert_eq!(ctx.read(&rootfs, "kept/hello.txt"), "v2\n");
    assert!(rootfs.join("kept/.git").is_dir(), "--keep-git-dir keeps .git");
    let mut kept_head = String::new();
    if let Ok(mut f) = std::fs::File::open(rootfs.join("kept/.git/HEAD")) {
        f.read_to_string(&mut kept_head).unwrap();
    }
    assert!(!kept_head.is_empty());
    assert_eq!(ctx.read(&rootfs, "subdir/inner.txt"), "inner\n");
    assert!(!rootfs.join("subdir/hello.txt").exists());
    assert_eq!(ctx.read(&rootfs, "head/hello.txt"), "v2\n");
    let history = created_by(&config_of(&image));
    assert!(history.iter().any(|h| h == &format!("ADD {url}#v1 /tagged/ # buildkit")), "{history:#?}");
    assert!(!head.is_empty());
}

#[test]
fn build_args_from_the_environment_proxy_args_and_unused_warning() {
    if !ready("build_args_from_the_environment_proxy_args_and_unused_warning") {
        return;
    }
    let ctx = Ctx::new(
        "ARG BASE\nFROM $BASE\nARG FROM_ENV=default\nARG EMPTY_ENV=default\nARG UNSET_ENV=default\n\
         RUN echo \"$FROM_ENV|$EMPTY_ENV|$UNSET_ENV|$HTTP_PROXY|$http_proxy|$NO_PROXY|$no_proxy\" > /args\n",
        &[],
    );
    let dest = format!("type=oci,dest={}", ctx.path("image.tar").display());
    let args = [
        "-t",
        "test:1",
        "-o",
        &dest,
        "--build-arg",
        "FROM_ENV",
        "--build-arg",
        "EMPTY_ENV",
        "--build-arg",
        "UNSET_ENV",
        "--build-arg",
        "HTTP_PROXY=http://proxy.invalid:3128",
        "--build-arg",
        "no_proxy=localhost",
        "--build-arg",
        "NOT_DECLARED=1",
    ];
    let mut cmd = ctx.command(&args);
    cmd.env("FROM_ENV", "env-value").env("EMPTY_ENV", "").env_remove("UNSET_ENV");
    let out = run_logged(cmd, &args);
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(err.contains("One or more build-args [NOT_DECLARED] were not consumed"), "{err}");
    let rootfs = ctx.rootfs();
    assert_eq!(
        ctx.read(&rootfs, "args"),
        "env-value||default|http://proxy.invalid:3128|http://proxy.invalid:3128|localhost|localhost\n"
    );
    let config = config_of(&format!("oci-archive:{}", ctx.path("image.tar").display()));
    let text = config.to_string();
    assert!(!text.contains("proxy.invalid") && !text.contains("localhost"), "proxy args stay out of the image: {text}");
    let history = created_by(&config);
    assert!(
        history.iter().any(|h| h.starts_with("RUN |3 FROM_ENV=env-value EMPTY_ENV= UNSET_ENV=default /bin/sh -c echo")),
        "{history:#?}"
    );
}

/// Every file under `root`, relative, sorted.
fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn dockerignore_patterns_filter_copy_bind_mounts_and_the_cache_key() {
    if !ready("dockerignore_patterns_filter_copy_bind_mounts_and_the_cache_key") {
        return;
    }
    let dockerfile = "ARG BASE\nFROM $BASE\nCOPY . /ctx/\nADD . /added/\n\
                      RUN --mount=type=bind,target=/b cd /b && find . -type f | sort > /bind-listing\n";
    let files: &[(&str, &[u8])] = &[
        (".dockerignore", b"# comment\n*.key\nlogs/\n!logs/keep.log\n**/*.tmp\n/build/\n"),
        ("keep.txt", b"keep"),
        ("secret.key", b"key"),
        ("logs/a.log", b"a"),
        ("logs/keep.log", b"k"),
        ("deep/x/y/z.tmp", b"t"),
        ("deep/x/y/z.txt", b"z"),
        ("build/out.bin", b"o"),
        ("sub/build/nested.bin", b"n"),
        ("sub/secret.key", b"not matched: *.key is for the root only"),
    ];
    let ctx = Ctx::new(dockerfile, files);
    let want = [
        ".dockerignore",
        "Dockerfile",
        "deep/x/y/z.txt",
        "keep.txt",
        "logs/keep.log",
        "sub/build/nested.bin",
        "sub/secret.key",
    ];
    let build = |iid: &str| {
        let iidfile = ctx.path(iid);
        let dest = format!("type=oci,dest={}", ctx.path("image.tar").display());
        let args = ["-t", "test:1", "-o", &dest, "--iidfile", iidfile.to_str().unwrap()];
        let mut cmd = ctx.command(&args);
        cmd.env("SOURCE_DATE_EPOCH", "1700000000");
        let out = run_logged(cmd, &args);
        assert!(out.status.success());
        (std::fs::read_to_string(iidfile).unwrap(), stderr(&out))
    };
    let (first, _) = build("iid1");
    let rootfs = ctx.rootfs();
    assert_eq!(files_under(&rootfs.join("ctx")), want);
    assert_eq!(files_under(&rootfs.join("added")), want, "ADD sees what COPY sees");
    let bind: Vec<String> =
        ctx.read(&rootfs, "bind-listing").lines().map(|l| l.trim_start_matches("./").to_owned()).collect();
    assert_eq!(bind, want, "a bind mount of the context sees what COPY sees");

    // Ignored files are not part of the context's cache key.
    ctx.write("secret.key", b"changed");
    ctx.write("logs/a.log", b"changed");
    let (second, log) = build("iid2");
    assert_eq!(first, second, "{log}");
    assert!(!log.contains("DONE"), "nothing should run again:\n{log}");
    ctx.write("logs/keep.log", b"changed");
    let (third, _) = build("iid3");
    assert_ne!(first, third);

    // <Dockerfile>.dockerignore beside the Dockerfile replaces the context's .dockerignore.
    ctx.write("build.Dockerfile", dockerfile.as_bytes());
    ctx.write("build.Dockerfile.dockerignore", b"keep.txt\n**/*.bin\n");
    ctx.build_oci(&["-f", ctx.path("ctx/build.Dockerfile").to_str().unwrap()]);
    let rootfs = ctx.rootfs();
    let got = files_under(&rootfs.join("ctx"));
    assert!(got.contains(&"secret.key".to_owned()) && got.contains(&"logs/a.log".to_owned()), "{got:?}");
    assert!(!got.iter().any(|f| f == "keep.txt" || f.ends_with(".bin")), "{got:?}");
}

/// Runs a build that must fail; returns its stderr.
fn build_error(dockerfile: &str, args: &[&str]) -> String {
    let ctx = Ctx::new(dockerfile, &[("f", b"f")]);
    let out = ctx.rbuild(args);
    assert_eq!(out.status.code(), Some(1), "a user error exits with 1: {}", stderr(&out));
    stderr(&out)
}

#[test]
fn errors_name_the_line_show_it_and_say_what_to_do() {
    if !ready("errors_name_the_line_show_it_and_say_what_to_do") {
        return;
    }
    let missing = registry().reference("no-such-image:1");
    let missing_from = format!("FROM {missing}\nRUN true\n");
    let missing_copy = format!("ARG BASE\nFROM $BASE\nCOPY --from={missing} /f /f\n");
    let cases: &[(&str, &[&str], &[&str])] = &[
        // (Dockerfile, extra args, what stderr must contain)
        (
            "ARG BASE\nFROM $BASE\nRUNN echo\n",
            &[],
            &["Dockerfile:3", ">>> RUNN echo", "unknown instruction: RUNN (did you mean RUN?)"],
        ),
        (
            "ARG BASE\nFROM $BASE\nCOPY --chwon=app f /f\n",
            &[],
            &["Dockerfile:3", ">>> COPY --chwon=app f /f", "unknown flag: --chwon (did you mean chown?)"],
        ),
        (
            "ARG BASE\nFROM $BASE AS first\nCOPY --from=later f /f\nFROM $BASE AS later\n",
            &["--target", "first"],
            &["Dockerfile:3", ">>> COPY --from=later f /f", "hint: move the stage you copy from above this one"],
        ),
        (
            "ARG BASE\nFROM $BASE\nCOPY missing.txt /\n",
            &[],
            &["Dockerfile:3", ">>> COPY missing.txt /", "\"missing.txt\" not found", "hint: check the path"],
        ),
        (
            "ARG BASE\nFROM $BASE\nRUN --mount=type=bogus true\n",
            &[],
            &["Dockerfile:3", ">>> RUN --mount=type=bogus true", "unsupported mount type \"bogus\""],
        ),
        (
            "ARG BASE\nFROM $BASE\nRUN --mount=type=secret,id=tok,required true\n",
            &[],
            &["Dockerfile:3", ">>> RUN --mount=type=secret,id=tok,required true", "secret tok not found", "hint: "],
        ),
        (
            "ARG BASE\nFROM $BASE\nRUN --mount=type=ssh,id=nokey,required=true true\n",
            &[],
            &["Dockerfile:3", "nokey", "hint: pass an agent socket with --ssh nokey="],
        ),
        (
            "ARG BASE\nFROM $BASE\nHEALTHCHECK --interval=abc CMD true\n",
            &[],
            &["Dockerfile:3", ">>> HEALTHCHECK --interval=abc CMD true", "\"abc\""],
        ),
        (
            "ARG BASE\nFROM $BASE\nRUN --security=insecure true\n",
            &[],
            &["Dockerfile:3", "security.insecure is not allowed", "hint: only allow security.insecure"],
        ),
        ("ARG BASE\nFROM $BASE AS one\nRUN true\n", &["--target", "onee"], &["could not be found (did you mean one?)"]),
        (
            "ARG BASE\nFROM $BASE\nADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 f /f\n",
            &[],
            &["Dockerfile:3", "checksum can't be specified for non-HTTP sources"],
        ),
        (
            "ARG BASE\nFROM $BASE AS a\nARG S=a\nCOPY --from=${S} /bin/sh /x\n",
            &[],
            &["Dockerfile:4", ">>> COPY --from=${S} /bin/sh /x", "variable expansion is not supported for --from", "hint: "],
        ),
        ("ARG BASE\nFROM $BASE\nONBUILD ONBUILD RUN true\n", &[], &["Dockerfile:3", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"]),
        ("ARG BASE\nFROM $BASE\nSTOPSIGNAL SIGFOO\n", &[], &["Dockerfile:3", ">>> STOPSIGNAL SIGFOO", "Invalid signal: SIGFOO"]),
        (&missing_from, &[], &["Dockerfile:1", &format!(">>> FROM {missing}"), missing.as_str(), "failed to resolve"]),
        (&missing_copy, &[], &["Dockerfile:3", &format!(">>> COPY --from={missing} /f /f"), "failed to resolve"]),
    ];
    // Independent builds: run them side by side.
    let errors: Vec<String> = std::thread::scope(|s| {
        let running: Vec<_> =
            cases.iter().map(|(dockerfile, args, _)| s.spawn(move || build_error(dockerfile, args))).collect();
        running.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((dockerfile, _, needles), err) in cases.iter().zip(&errors) {
        for n in *needles {
            assert!(err.contains(n), "for {dockerfile:?}: missing {n:?} in\n{err}");
        }
    }
}
