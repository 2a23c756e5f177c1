//! Error rendering: `error:` with the cause chain, the Dockerfile lines involved, and a hint.
//!
//! ```text
//! error: process "/bin/sh -c exit 3" did not complete successfully: exit code: 3
//!  --> Dockerfile:4
//!    3 |     FROM busybox
//!    4 | >>> RUN exit 3
//! hint: ...
//! ```
//! Exit status: 1 for problems with the input (Dockerfile, arguments, a failing RUN), 2 for
//! everything else.

use std::fmt;
use std::io::Write;
use std::process::ExitCode;

/// A frontend error with the Dockerfile text it refers to.
#[derive(Debug)]
pub struct FrontendFailure {
    /// The error.
    pub error: rbuild_frontend::Error,
    /// Dockerfile name as shown.
    pub file: String,
    /// Its bytes.
    pub source_text: Vec<u8>,
}

impl fmt::Display for FrontendFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)
    }
}

impl std::error::Error for FrontendFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

/// A failed build step, with where it comes from.
#[derive(Debug)]
pub struct StepFailure {
    /// `[2/4] RUN make`.
    pub step: String,
    /// Dockerfile name and lines, when known.
    pub location: Option<(String, usize, usize)>,
    /// The Dockerfile text.
    pub source_text: Vec<u8>,
    /// The worker's error.
    pub error: std::sync::Arc<rbuild_worker::WorkerError>,
}

impl fmt::Display for StepFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)
    }
}

impl std::error::Error for StepFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.error)
    }
}

/// An error caused by the user's input (exit status 1 rather than 2).
#[derive(Debug)]
pub struct UserError(pub String);

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UserError {}

fn excerpt(out: &mut String, file: &str, text: &[u8], start: usize, end: usize) {
    let text = String::from_utf8_lossy(text);
    let lines: Vec<&str> = text.lines().collect();
    out.push_str(&format!(" --> {file}:{start}\n"));
    let from = start.saturating_sub(2).max(1);
    let to = end.min(lines.len());
    for n in from..=to {
        let Some(line) = lines.get(n - 1) else { break };
        let marker = if n >= start && n <= end { ">>> " } else { "    " };
        out.push_str(&format!("{n:>5} | {marker}{line}\n"));
    }
}

/// Whether `e` comes from a full filesystem: an `ENOSPC` (or `EDQUOT`) anywhere in its chain,
/// or a failed step whose output says so.
fn out_of_space(e: &anyhow::Error) -> bool {
    const SAYS: [&str; 2] = ["No space left on device", "Disk quota exceeded"];
    let says = |text: &str| SAYS.iter().any(|s| text.contains(s));
    e.chain().any(|cause| {
        let io = cause.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error);
        io.is_some_and(|code| code == nix::errno::Errno::ENOSPC as i32 || code == nix::errno::Errno::EDQUOT as i32)
            || says(&cause.to_string())
    }) || e.downcast_ref::<StepFailure>().is_some_and(|s| match &*s.error {
        rbuild_worker::WorkerError::CommandFailed { tail, .. } => tail.iter().any(|l| says(l)),
        _ => false,
    })
}

/// Prints `e` to stderr and returns the process exit code. `store` is the store directory,
/// named when the error is a full disk.
pub fn error(e: &anyhow::Error, store: &std::path::Path) -> ExitCode {
    // `--check` found something: its report is the output.
    if e.downcast_ref::<crate::checks::ChecksFound>().is_some() {
        return ExitCode::from(1);
    }
    let mut out = String::new();
    out.push_str(&format!("error: {e}\n"));
    let mut user = false;
    let mut hint: Option<String> = None;
    if let Some(f) = e.downcast_ref::<FrontendFailure>() {
        user = true;
        if let Some(span) = f.error.span() {
            excerpt(&mut out, &f.file, &f.source_text, span.start_line, span.end_line);
        }
        hint = f.error.hint().map(str::to_owned);
    } else if let Some(s) = e.downcast_ref::<StepFailure>() {
        user = true;
        out = format!("error: {} failed: {}\n", s.step, s.error);
        if let rbuild_worker::WorkerError::CommandFailed { tail, .. } = &*s.error {
            if !tail.is_empty() {
                out.push_str("  last output:\n");
                for l in tail {
                    out.push_str(&format!("    {l}\n"));
                }
            }
        }
        if let Some((file, start, end)) = &s.location {
            excerpt(&mut out, file, &s.source_text, *start, *end);
        }
        hint = s.error.hint();
    } else if e.downcast_ref::<UserError>().is_some() {
        user = true;
    }
    // The cause chain, below the headline (skipping what the headline already says).
    let headline = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !headline.contains(&c) {
            out.push_str(&format!("  caused by: {c}\n"));
        }
    }
    if out_of_space(e) {
        out.push_str(&format!(
            "hint: a filesystem is full (no space left on device); steps and layers are written to \
             the store at {}: free space there (`rbuild prune` removes unused data), or use --root on \
             a larger filesystem\n",
            store.display()
        ));
    }
    if let Some(h) = hint {
        out.push_str(&format!("hint: {h}\n"));
    }
    let _ = std::io::stderr().write_all(out.as_bytes());
    ExitCode::from(if user { 1 } else { 2 })
}

/// An error and its sources on one line, `a: b: c`, for warnings that do not stop the build.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disks_are_recognised_wherever_they_are_in_the_chain() {
        let enospc = anyhow::Error::new(std::io::Error::from_raw_os_error(nix::errno::Errno::ENOSPC as i32))
            .context("writing layer")
            .context("exporting the image");
        assert!(out_of_space(&enospc));
        let said = anyhow::anyhow!("copying a.txt: No space left on device (os error 28)");
        assert!(out_of_space(&said));
        let step = StepFailure {
            step: "[2/2] RUN fill".into(),
            location: None,
            source_text: Vec::new(),
            error: std::sync::Arc::new(rbuild_worker::WorkerError::CommandFailed {
                command: "/bin/sh -c fill".into(),
                status: "exit code: 1".into(),
                tail: vec!["head: write error: No space left on device".into()],
            }),
        };
        assert!(out_of_space(&anyhow::Error::new(step)));
        let other = anyhow::Error::new(std::io::Error::from_raw_os_error(nix::errno::Errno::EACCES as i32));
        assert!(!out_of_space(&other.context("writing layer")));
    }
}
