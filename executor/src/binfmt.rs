//! RUN steps for another CPU architecture: QEMU user-mode emulation through binfmt_misc.
//!
//! The kernel hands an executable of a foreign architecture to the interpreter a binfmt_misc
//! handler names. Registered with the `F` (fix-binary) flag, the kernel opens the interpreter
//! once, at registration, so it works inside the sandbox's own mount namespace and root without
//! the emulator being there; Debian's `qemu-user-static` registers such handlers
//! (`qemu-aarch64`, ...). The emulator turns the program's system calls into host system calls,
//! so the seccomp filter (which checks the host's `AUDIT_ARCH`) applies unchanged.
//!
//! [`prepare_emulation`] tells whether a step for an architecture can run: natively, or through a
//! handler that is registered, enabled and has `F`. As root, a missing handler is registered
//! from Debian's emulator when it is installed (mounting binfmt_misc first if needed);
//! otherwise the error says exactly what to install or run.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where binfmt_misc lives.
const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// How a step for an architecture runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Emulation {
    /// The CPU runs it.
    Native,
    /// Through a QEMU binfmt_misc handler.
    Qemu {
        /// The handler's name (`qemu-aarch64`).
        handler: String,
        /// Its interpreter.
        interpreter: PathBuf,
    },
}

/// Why a step for an architecture cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmulationError {
    /// No QEMU target is known for the architecture.
    #[error("cannot run {arch} binaries on this {host} machine: no QEMU user emulation is known for {arch}")]
    UnknownArchitecture {
        /// The architecture (Go's name, `mips`).
        arch: String,
        /// This machine's.
        host: &'static str,
    },
    /// No handler is registered, and none could be.
    #[error("cannot run {arch} binaries on this {host} machine: QEMU user emulation is not set up (no binfmt_misc handler {handler})")]
    NotRegistered {
        /// The architecture.
        arch: String,
        /// This machine's.
        host: &'static str,
        /// The handler looked for (`qemu-aarch64`).
        handler: String,
        /// What to do about it.
        hint: String,
    },
    /// A handler exists but is disabled.
    #[error("cannot run {arch} binaries: the binfmt_misc handler {handler} is disabled")]
    Disabled {
        /// The architecture.
        arch: String,
        /// The handler.
        handler: String,
    },
    /// A handler exists without the fix-binary flag: the sandbox has no emulator at the path it
    /// names.
    #[error("cannot run {arch} binaries in the sandbox: the binfmt_misc handler {handler} lacks the F (fix-binary) flag (flags: {flags:?})")]
    NotFixed {
        /// The architecture.
        arch: String,
        /// The handler.
        handler: String,
        /// Its flags.
        flags: String,
    },
    /// Registering the handler (or mounting binfmt_misc) failed.
    #[error("registering the binfmt_misc handler {handler} for {interpreter}")]
    Register {
        /// The handler.
        handler: String,
        /// The interpreter.
        interpreter: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl EmulationError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            EmulationError::NotRegistered { hint, .. } => Some(hint.clone()),
            EmulationError::Disabled { handler, .. } => Some(format!("as root: echo 1 > {BINFMT_DIR}/{handler}")),
            EmulationError::NotFixed { handler, .. } => Some(format!(
                "re-register it with the F flag, as root: echo -1 > {BINFMT_DIR}/{handler}, then \
                 apt-get install --reinstall qemu-user-static (or run rbuild as root, which registers it)"
            )),
            EmulationError::UnknownArchitecture { .. } => {
                Some("build this platform on a machine of that architecture, and merge the images with `rbuild manifest create`".into())
            }
            EmulationError::Register { .. } => {
                Some(format!("binfmt_misc must be available and writable at {BINFMT_DIR} (root, not in a container)"))
            }
        }
    }
}

/// A QEMU target: Go's architecture name, QEMU's, and the ELF header match (as
/// `scripts/qemu-binfmt-conf.sh` in QEMU writes them, escapes the kernel decodes).
struct Target {
    arch: &'static str,
    qemu: &'static str,
    magic: &'static str,
    mask: &'static str,
}

const TARGETS: &[Target] = &[
    Target {
        arch: "amd64",
        qemu: "x86_64",
        magic: r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00",
        mask: r"\xff\xff\xff\xff\xff\xfe\xfe\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
    },
    Target {
        arch: "386",
        qemu: "i386",
        magic: r"\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x03\x00",
        mask: r"\xff\xff\xff\xff\xff\xfe\xfe\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
    },
    Target {
        arch: "arm64",
        qemu: "aarch64",
        magic: r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00",
        mask: r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
    },
    Target {
        arch: "arm",
        qemu: "arm",
        magic: r"\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00",
        mask: r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
    },
    Target {
        arch: "ppc64le",
        qemu: "ppc64le",
        magic: r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x15\x00",
        mask: r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\x00",
    },
    Target {
        arch: "s390x",
        qemu: "s390x",
        magic: r"\x7fELF\x02\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x16",
        mask: r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff",
    },
    Target {
        arch: "riscv64",
        qemu: "riscv64",
        magic: r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xf3\x00",
        mask: r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
    },
    Target {
        arch: "mips64le",
        qemu: "mips64el",
        magic: r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x08\x00",
        mask: r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
    },
];

/// This machine's architecture, in Go's names.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "mips64" => "mips64le",
        other => other,
    }
}

/// Whether this machine's CPU runs `arch` binaries itself (x86-64 kernels run i386 ones).
pub fn is_native(arch: &str) -> bool {
    let host = host_arch();
    arch == host || (host == "amd64" && arch == "386")
}

/// Makes sure a RUN step for `arch` (Go's name: `arm64`, `arm`, `riscv64`) can run here, and
/// says how: natively, or through which QEMU handler. Registers a missing handler when running
/// as root and Debian's emulator is installed.
///
/// # Errors
///
/// [`EmulationError`], with a [hint](EmulationError::hint) saying what to install or run.
pub fn prepare_emulation(arch: &str) -> Result<Emulation, EmulationError> {
    if is_native(arch) {
        return Ok(Emulation::Native);
    }
    let host = host_arch();
    let target = TARGETS
        .iter()
        .find(|t| t.arch == arch)
        .ok_or_else(|| EmulationError::UnknownArchitecture { arch: arch.to_owned(), host })?;
    let dir = Path::new(BINFMT_DIR);
    let handler = format!("qemu-{}", target.qemu);
    if let Some(found) = find_handler(dir, &handler, target) {
        return check(arch, found);
    }
    let Some((interpreter, flags)) = installed_emulator(target.qemu) else {
        return Err(not_registered(arch, host, &handler, target, false));
    };
    if !nix::unistd::geteuid().is_root() {
        return Err(not_registered(arch, host, &handler, target, true));
    }
    register(dir, &handler, target, &interpreter, flags)?;
    match find_handler(dir, &handler, target) {
        Some(found) => check(arch, found),
        None => Err(EmulationError::Register {
            handler,
            interpreter,
            source: io::Error::other("the handler did not appear after registering it"),
        }),
    }
}

/// A registered handler, as its file in binfmt_misc describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Handler {
    name: String,
    enabled: bool,
    interpreter: PathBuf,
    flags: String,
}

fn check(arch: &str, h: Handler) -> Result<Emulation, EmulationError> {
    if !h.enabled {
        return Err(EmulationError::Disabled { arch: arch.to_owned(), handler: h.name });
    }
    if !h.flags.contains('F') {
        return Err(EmulationError::NotFixed { arch: arch.to_owned(), handler: h.name, flags: h.flags });
    }
    Ok(Emulation::Qemu { handler: h.name, interpreter: h.interpreter })
}

/// The handler named `name`, else any handler matching the target's ELF header (other tools
/// name them otherwise).
fn find_handler(dir: &Path, name: &str, target: &Target) -> Option<Handler> {
    if let Some(h) = read_handler(dir, name) {
        return Some(h);
    }
    let magic = hex(&unescape(target.magic));
    let entries = fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file == "register" || file == "status" {
            continue;
        }
        let Ok(text) = fs::read_to_string(entry.path()) else { continue };
        if text.lines().any(|l| l.strip_prefix("magic ").is_some_and(|m| m.trim() == magic)) {
            return parse_handler(&file, &text);
        }
    }
    None
}

fn read_handler(dir: &Path, name: &str) -> Option<Handler> {
    let text = fs::read_to_string(dir.join(name)).ok()?;
    parse_handler(name, &text)
}

/// Parses a binfmt_misc handler file (`enabled`, `interpreter /path`, `flags: POCF`, ...).
fn parse_handler(name: &str, text: &str) -> Option<Handler> {
    let mut lines = text.lines();
    let enabled = match lines.next()?.trim() {
        "enabled" => true,
        "disabled" => false,
        _ => return None,
    };
    let mut interpreter = PathBuf::new();
    let mut flags = String::new();
    for line in lines {
        if let Some(i) = line.strip_prefix("interpreter ") {
            interpreter = PathBuf::from(i.trim());
        } else if let Some(f) = line.strip_prefix("flags:") {
            flags = f.trim().to_owned();
        }
    }
    Some(Handler { name: name.to_owned(), enabled, interpreter, flags })
}

/// Debian's emulator for `qemu` and the flags it is registered with: the `-binfmt-P` wrapper
/// expects the original argv[0] (flag `P`, and like Debian `OC`: setuid binaries keep their
/// credentials), the plain static binary does not.
fn installed_emulator(qemu: &str) -> Option<(PathBuf, &'static str)> {
    let wrapper = PathBuf::from(format!("/usr/libexec/qemu-binfmt/{qemu}-binfmt-P"));
    if wrapper.exists() {
        return Some((wrapper, "POCF"));
    }
    let plain = PathBuf::from(format!("/usr/bin/qemu-{qemu}-static"));
    plain.exists().then_some((plain, "F"))
}

fn not_registered(arch: &str, host: &'static str, handler: &str, target: &Target, installed: bool) -> EmulationError {
    let register = format!(
        "echo ':{handler}:M::{}:{}:/usr/libexec/qemu-binfmt/{}-binfmt-P:POCF' > {BINFMT_DIR}/register",
        target.magic, target.mask, target.qemu
    );
    let mount = format!("mount -t binfmt_misc binfmt_misc {BINFMT_DIR}");
    let hint = if installed {
        format!("run rbuild as root (it registers the handler), or register it as root: {mount} (if not mounted); {register}")
    } else {
        format!(
            "install QEMU user emulation: apt-get install qemu-user-static (Debian/Ubuntu), then run rbuild \
             as root, which registers the handler, or as root: {mount} (if not mounted); {register}"
        )
    };
    EmulationError::NotRegistered { arch: arch.to_owned(), host, handler: handler.to_owned(), hint }
}

/// Registers `handler` (mounting binfmt_misc first when needed). A handler registered meanwhile
/// by someone else (`EEXIST`) is fine.
fn register(dir: &Path, handler: &str, target: &Target, interpreter: &Path, flags: &str) -> Result<(), EmulationError> {
    let err = |source| EmulationError::Register {
        handler: handler.to_owned(),
        interpreter: interpreter.to_path_buf(),
        source,
    };
    let register = dir.join("register");
    if !register.exists() {
        nix::mount::mount(Some("binfmt_misc"), dir, Some("binfmt_misc"), nix::mount::MsFlags::empty(), None::<&str>)
            .map_err(|e| err(io::Error::from(e)))?;
    }
    let line = format!(":{handler}:M::{}:{}:{}:{flags}", target.magic, target.mask, interpreter.display());
    let mut file = fs::OpenOptions::new().write(true).open(&register).map_err(err)?;
    match file.write_all(line.as_bytes()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// The bytes of a `\xNN`-escaped string.
fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') {
            if let Some(v) = s.get(i + 2..i + 4).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_files_parse() {
        let text = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\noffset 0\n\
                    magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";
        let h = parse_handler("qemu-aarch64", text).unwrap();
        assert!(h.enabled);
        assert_eq!(h.interpreter, Path::new("/usr/libexec/qemu-binfmt/aarch64-binfmt-P"));
        assert_eq!(h.flags, "POCF");
        assert!(matches!(check("arm64", h.clone()), Ok(Emulation::Qemu { .. })));
        let no_f = Handler { flags: "OC".into(), ..h.clone() };
        assert!(matches!(check("arm64", no_f), Err(EmulationError::NotFixed { .. })));
        let off = Handler { enabled: false, ..h };
        assert!(matches!(check("arm64", off), Err(EmulationError::Disabled { .. })));
        assert!(parse_handler("x", "garbage\n").is_none());
    }

    #[test]
    fn magic_matches_the_kernels_rendering() {
        let aarch64 = TARGETS.iter().find(|t| t.arch == "arm64").unwrap();
        assert_eq!(hex(&unescape(aarch64.magic)), "7f454c460201010000000000000000000200b700");
        assert_eq!(unescape(aarch64.mask).len(), 20);
        for t in TARGETS {
            assert_eq!(unescape(t.magic).len(), unescape(t.mask).len(), "{}", t.arch);
            assert!(unescape(t.magic).starts_with(b"\x7fELF"), "{}", t.arch);
        }
    }

    #[test]
    fn handlers_are_found_by_name_or_by_magic() {
        let dir = tempfile::tempdir().unwrap();
        let aarch64 = TARGETS.iter().find(|t| t.arch == "arm64").unwrap();
        assert!(find_handler(dir.path(), "qemu-aarch64", aarch64).is_none());
        fs::write(dir.path().join("register"), "").unwrap();
        fs::write(
            dir.path().join("arm64-by-another-tool"),
            "enabled\ninterpreter /x\nflags: F\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n",
        )
        .unwrap();
        assert_eq!(find_handler(dir.path(), "qemu-aarch64", aarch64).unwrap().name, "arm64-by-another-tool");
        fs::write(dir.path().join("qemu-aarch64"), "disabled\ninterpreter /y\nflags: F\n").unwrap();
        assert!(!find_handler(dir.path(), "qemu-aarch64", aarch64).unwrap().enabled);
    }

    #[test]
    fn missing_handlers_say_what_to_install_and_run() {
        let aarch64 = TARGETS.iter().find(|t| t.arch == "arm64").unwrap();
        let err = not_registered("arm64", "amd64", "qemu-aarch64", aarch64, false);
        assert_eq!(
            err.to_string(),
            "cannot run arm64 binaries on this amd64 machine: QEMU user emulation is not set up \
             (no binfmt_misc handler qemu-aarch64)"
        );
        let hint = err.hint().unwrap();
        assert!(hint.contains("apt-get install qemu-user-static"), "{hint}");
        assert!(hint.contains(r":qemu-aarch64:M::\x7fELF\x02"), "{hint}");
        assert!(hint.contains(":POCF' > /proc/sys/fs/binfmt_misc/register"), "{hint}");
        let installed = not_registered("arm64", "amd64", "qemu-aarch64", aarch64, true).hint().unwrap();
        assert!(installed.starts_with("run rbuild as root"), "{installed}");
    }

    #[test]
    fn registration_lines_are_the_kernels_format() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("register"), "").unwrap();
        let aarch64 = TARGETS.iter().find(|t| t.arch == "arm64").unwrap();
        let interpreter = Path::new("/usr/libexec/qemu-binfmt/aarch64-binfmt-P");
        register(dir.path(), "qemu-aarch64", aarch64, interpreter, "POCF").unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("register")).unwrap(),
            format!(":qemu-aarch64:M::{}:{}:{}:POCF", aarch64.magic, aarch64.mask, interpreter.display())
        );
    }

    /// Removes a test handler, even when the test fails half-way.
    struct Unregister(PathBuf);

    impl Drop for Unregister {
        fn drop(&mut self) {
            let _ = fs::write(&self.0, "-1");
        }
    }

    #[test]
    fn the_kernel_takes_a_registration() {
        // A handler of our own, for a header no real file has, so that the machine's QEMU
        // handlers are never touched; registering mounts binfmt_misc first when needed.
        if !nix::unistd::geteuid().is_root() || !Path::new(BINFMT_DIR).is_dir() {
            eprintln!("skipping the_kernel_takes_a_registration: needs root and binfmt_misc (CI has both)");
            return;
        }
        let name = format!("rbuild-test-{}", std::process::id());
        let target = Target {
            arch: "test",
            qemu: "test",
            magic: r"\x00rbuild\x01test\x02magic",
            mask: r"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        };
        let dir = Path::new(BINFMT_DIR);
        let _cleanup = Unregister(dir.join(&name));
        register(dir, &name, &target, Path::new("/bin/true"), "F").unwrap();
        let found = find_handler(dir, &name, &target).expect("the handler is listed");
        assert_eq!(found.name, name);
        assert!(found.enabled);
        assert_eq!(found.flags, "F");
        assert_eq!(found.interpreter, Path::new("/bin/true"));
        let text = fs::read_to_string(dir.join(&name)).unwrap();
        assert!(text.contains(&format!("magic {}", hex(&unescape(target.magic)))), "{text}");
        assert!(matches!(check("test", found), Ok(Emulation::Qemu { .. })));
        // Registering it again is not an error (another process may have won the race).
        register(dir, &name, &target, Path::new("/bin/true"), "F").unwrap();
    }

    #[test]
    fn native_and_unknown_architectures() {
        assert_eq!(prepare_emulation(host_arch()).unwrap(), Emulation::Native);
        let err = prepare_emulation("pdp11").unwrap_err();
        assert!(matches!(err, EmulationError::UnknownArchitecture { .. }), "{err}");
        assert!(err.hint().is_some());
    }
}
