//! The host side: spawn the helper, stream the output, collect the result, clean the upper
//! dir. Only `std::process::Command` is used here: the caller is multi-threaded (tokio), so
//! it must never fork to run Rust code.

use std::io::{BufReader, Read};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use crate::error::ExecError;
use crate::protocol::{self, Report, HELPER_ARG};
use crate::spec::{ExitStatus, OutputStream, SandboxSpec};

/// Output chunks buffered between the reader threads and `on_output` (back-pressure).
const CHUNKS_IN_FLIGHT: usize = 16;
const CHUNK_SIZE: usize = 64 * 1024;

/// Runs `spec` in a sandbox and returns how the command ended.
///
/// Blocks until the command (and everything it started) has ended; call it from a blocking
/// thread. `exe` is a binary whose `main` calls [`sandbox_main`](crate::sandbox_main) when
/// `argv[1]` is `__sandbox` (normally `/proc/self/exe`). The command's stdout and stderr are
/// passed to `on_output` as they arrive, on the calling thread; its stdin is `/dev/null`.
///
/// The caller guarantees that `upper_dir` and `work_dir` exist, are on the same filesystem,
/// and that `work_dir` is empty and used by no other run.
///
/// # Errors
///
/// [`ExecError::Setup`] when the sandbox could not be set up (bad overlay, unknown user,
/// command not found...): the command did not run. [`ExecError::OutOfMemory`] when the
/// command failed after the OOM killer hit the sandbox's memory limit. Other variants for
/// failures of the host side. A command that exits non-zero or is killed is `Ok`.
pub fn run(
    spec: &SandboxSpec,
    exe: &Path,
    on_output: &mut dyn FnMut(OutputStream, &[u8]),
) -> Result<ExitStatus, ExecError> {
    spec.validate()?;
    for dir in spec.layout().dirs() {
        std::fs::create_dir_all(dir).map_err(|source| ExecError::CreateDir { path: dir.to_owned(), source })?;
    }
    let (host_end, helper_end) = UnixStream::pair().map_err(|source| ExecError::CreateChannel { source })?;
    let mut helper = Helper::spawn(exe, helper_end)?;
    let sent = send_spec(&host_end, spec);
    let (read_error, reports) = stream_output(&mut helper.0, &host_end, on_output);
    let waited = helper.wait();
    let reports = reports?;
    let created: Vec<_> = reports
        .iter()
        .filter_map(|r| match r {
            Report::Created(created) => Some(created),
            _ => None,
        })
        .collect();
    let cleaned = crate::cleanup::clean_upper(&spec.upper_dir, &created);

    let mut exited = None;
    let mut oom_kills = 0;
    for report in reports {
        match report {
            Report::SetupFailed(error) => return Err(ExecError::Setup(error)),
            Report::Exited(status) => exited = Some(status),
            Report::OomKilled(kills) => oom_kills += kills,
            Report::Created(_) => {}
        }
    }
    cleaned?;
    if let Some(error) = read_error {
        return Err(error);
    }
    match (exited, spec.limits.memory) {
        (Some(status), Some(limit_bytes)) if oom_kills > 0 && !status.success() => {
            Err(ExecError::OutOfMemory { limit_bytes, status })
        }
        (Some(status), _) => Ok(status),
        (None, _) => {
            sent?;
            Err(ExecError::HelperDied { status: waited? })
        }
    }
}

/// The spawned helper; killed and reaped if `run` unwinds early.
#[derive(Debug)]
struct Helper(Child);

impl Helper {
    fn spawn(exe: &Path, channel: UnixStream) -> Result<Helper, ExecError> {
        let mut command = Command::new(exe);
        command
            .arg(HELPER_ARG)
            .env_clear()
            .stdin(Stdio::from(OwnedFd::from(channel)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = command.spawn().map_err(|source| ExecError::SpawnHelper { exe: exe.to_owned(), source })?;
        // `command` owns our copy of the helper's end of the channel: drop it now, or the
        // reports would never reach EOF.
        drop(command);
        Ok(Helper(child))
    }

    fn wait(&mut self) -> Result<std::process::ExitStatus, ExecError> {
        self.0.wait().map_err(|source| ExecError::WaitHelper { source })
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // Its death kills the sandbox (PR_SET_PDEATHSIG in the init).
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn send_spec(mut channel: &UnixStream, spec: &SandboxSpec) -> Result<(), ExecError> {
    let json = serde_json::to_vec(spec).map_err(|e| ExecError::SendSpec { source: e.into() })?;
    std::io::Write::write_all(&mut channel, &json)
        .and_then(|()| channel.shutdown(std::net::Shutdown::Write))
        .map_err(|source| ExecError::SendSpec { source })
}

enum Chunk {
    Data(OutputStream, Vec<u8>),
    Failed(OutputStream, std::io::Error),
}

/// Streams both outputs to `on_output` until EOF (reached when the helper and everything in
/// the sandbox have exited), then reads the reports (a few small lines, which the socket
/// buffers meanwhile). If `on_output` panics, the helper is killed (taking the sandbox with
/// it) before the panic resumes, so no thread is left waiting on a live command.
fn stream_output(
    child: &mut Child,
    channel: &UnixStream,
    on_output: &mut dyn FnMut(OutputStream, &[u8]),
) -> (Option<ExecError>, Result<Vec<Report>, ExecError>) {
    let stdout = child.stdout.take().map(|s| (OutputStream::Stdout, Box::new(s) as Box<dyn Read + Send>));
    let stderr = child.stderr.take().map(|s| (OutputStream::Stderr, Box::new(s) as Box<dyn Read + Send>));
    let mut read_error = None;
    let mut panic = None;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
        for (stream, reader) in [stdout, stderr].into_iter().flatten() {
            let tx = tx.clone();
            scope.spawn(move || pump(stream, reader, &tx));
        }
        drop(tx);
        for chunk in &rx {
            match chunk {
                Chunk::Data(stream, bytes) => {
                    let call = std::panic::AssertUnwindSafe(|| on_output(stream, &bytes));
                    if let Err(payload) = std::panic::catch_unwind(call) {
                        let _ = child.kill();
                        panic = Some(payload);
                        break;
                    }
                }
                Chunk::Failed(stream, source) => {
                    read_error.get_or_insert(ExecError::ReadOutput { stream, source });
                }
            }
        }
        drop(rx);
    });
    if let Some(payload) = panic {
        std::panic::resume_unwind(payload);
    }
    (read_error, protocol::receive_all(BufReader::new(channel)))
}

fn pump(stream: OutputStream, mut reader: Box<dyn Read + Send>, tx: &mpsc::SyncSender<Chunk>) {
    let mut buf = vec![0; CHUNK_SIZE];
    loop {
        let chunk = match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => Chunk::Data(stream, buf[..n].to_vec()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => Chunk::Failed(stream, e),
        };
        let failed = matches!(chunk, Chunk::Failed(..));
        if tx.send(chunk).is_err() || failed {
            return;
        }
    }
}
