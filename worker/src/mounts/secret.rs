//! Secrets and SSH agents for `RUN --mount=type=secret|ssh`, kept in a private runtime
//! directory (on tmpfs when `/dev/shm` is one) that is removed after the step.

use std::fmt;
use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A secret value (`--secret`). Its `Debug` never shows it; rbuild writes it only to a 0400
/// file in a private runtime directory (or the step's environment, with `env=`), never into a
/// layer, the history, a cache key, a progress log or an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<Vec<u8>>) -> Secret {
        Secret(value.into())
    }

    /// The value.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

/// `TMPFS_MAGIC` from `linux/magic.h`.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// A 0700 directory for one step's secret files and agent sockets, removed on drop. On
/// `/dev/shm` when that is a tmpfs (secrets never reach a disk), else in the temp directory.
#[derive(Debug)]
pub(crate) struct RuntimeDir {
    path: PathBuf,
}

impl RuntimeDir {
    pub(crate) fn create() -> io::Result<RuntimeDir> {
        let shm = Path::new("/dev/shm");
        // `f_type`'s integer type differs between architectures.
        #[allow(clippy::unnecessary_cast)]
        let on_tmpfs = rustix::fs::statfs(shm).is_ok_and(|s| s.f_type as i64 == TMPFS_MAGIC);
        let parent = if on_tmpfs { shm.to_owned() } else { std::env::temp_dir() };
        let path = parent.join(format!("rbuild-run-{}-{}", std::process::id(), crate::unique_suffix()));
        DirBuilder::new().mode(0o700).create(&path)?;
        Ok(RuntimeDir { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `value` to a new 0400 file named `name` and returns its path.
    pub(crate) fn write_secret(&self, name: &str, value: &Secret) -> io::Result<PathBuf> {
        let path = self.path.join(name);
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o400).open(&path)?;
        f.write_all(value.expose())?;
        Ok(path)
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Forwards connections from a socket of our own (owned by `uid:gid` with `mode`, bound into
/// the sandbox) to the client's SSH agent, so the agent's socket is never exposed and its
/// owner never changed. Stops on drop.
#[derive(Debug)]
pub(crate) struct SshProxy {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SshProxy {
    pub(crate) fn start(agent: &Path, path: PathBuf, uid: u32, gid: u32, mode: u32) -> io::Result<SshProxy> {
        let listener = UnixListener::bind(&path)?;
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (agent, stopped) = (agent.to_owned(), Arc::clone(&stop));
        let thread = std::thread::Builder::new().name("rbuild-ssh-proxy".into()).spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                // An unreachable agent closes the client's connection: ssh reports it.
                if let Ok(upstream) = UnixStream::connect(&agent) {
                    let _ = splice(client, upstream);
                }
            }
        })?;
        Ok(SshProxy { path, stop, thread: Some(thread) })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Copies both directions between two streams on their own threads.
fn splice(a: UnixStream, b: UnixStream) -> io::Result<()> {
    let (mut a_read, mut b_write) = (a.try_clone()?, b.try_clone()?);
    let (mut b_read, mut a_write) = (b, a);
    std::thread::Builder::new().name("rbuild-ssh-up".into()).spawn(move || {
        let _ = io::copy(&mut a_read, &mut b_write);
        let _ = b_write.shutdown(std::net::Shutdown::Write);
    })?;
    std::thread::Builder::new().name("rbuild-ssh-down".into()).spawn(move || {
        let _ = io::copy(&mut b_read, &mut a_write);
        let _ = a_write.shutdown(std::net::Shutdown::Write);
    })?;
    Ok(())
}

impl Drop for SshProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
    }

    #[test]
    fn runtime_dir_is_private_and_removed() {
        let d = RuntimeDir::create().unwrap();
        let p = d.write_secret("s0", &Secret::new("v")).unwrap();
        assert_eq!(std::fs::metadata(d.path()).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o400);
        assert_eq!(std::fs::read(&p).unwrap(), b"v");
        let root = d.path().to_owned();
        drop(d);
        assert!(!root.exists());
    }

    #[test]
    fn ssh_proxy_forwards_to_the_agent() {
        let t = tempfile::tempdir().unwrap();
        let agent_path = t.path().join("agent.sock");
        let agent = UnixListener::bind(&agent_path).unwrap();
        let echo = std::thread::spawn(move || {
            let (mut c, _) = agent.accept().unwrap();
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).unwrap();
            c.write_all(&buf).unwrap();
        });
        let md = std::fs::metadata(t.path()).unwrap();
        let me = (std::os::unix::fs::MetadataExt::uid(&md), std::os::unix::fs::MetadataExt::gid(&md));
        let proxy = SshProxy::start(&agent_path, t.path().join("proxy.sock"), me.0, me.1, 0o600).unwrap();
        let mut c = UnixStream::connect(proxy.path()).unwrap();
        c.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ping");
        echo.join().unwrap();
        let sock = proxy.path().to_owned();
        drop(proxy);
        assert!(!sock.exists());
    }
}
