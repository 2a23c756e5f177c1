//! Progress events. The solver and workers report; the binary renders (plain, tty, json).

use std::time::Duration;

use tokio::sync::mpsc;

use crate::ir::OpId;

/// Which output stream a log chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One progress event, keyed by vertex.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ProgressEvent {
    /// The vertex started executing.
    Started {
        /// Vertex.
        id: OpId,
        /// Display name.
        name: String,
    },
    /// The vertex's result came from the cache.
    Cached {
        /// Vertex.
        id: OpId,
        /// Display name.
        name: String,
    },
    /// The vertex finished (successfully when `error` is `None`).
    Completed {
        /// Vertex.
        id: OpId,
        /// Time spent executing.
        duration: Duration,
        /// The error, rendered, if it failed.
        error: Option<String>,
    },
    /// Output of a running vertex.
    Log {
        /// Vertex.
        id: OpId,
        /// Stream.
        stream: LogStream,
        /// Raw bytes.
        data: Vec<u8>,
    },
    /// A status line for a running vertex (e.g. `pulling sha256:ab… 3/5`).
    Status {
        /// Vertex.
        id: OpId,
        /// Text.
        text: String,
    },
}

/// Where a vertex reports while it runs. Cheap to clone; sending never blocks and never fails
/// (a gone renderer just drops events).
#[derive(Clone, Debug)]
pub struct Progress {
    id: OpId,
    tx: Option<mpsc::UnboundedSender<ProgressEvent>>,
}

impl Progress {
    pub(crate) fn new(id: OpId, tx: Option<mpsc::UnboundedSender<ProgressEvent>>) -> Progress {
        Progress { id, tx }
    }

    /// A sink that drops everything (tests, tools).
    pub fn discard(id: OpId) -> Progress {
        Progress { id, tx: None }
    }

    /// The vertex this handle reports for.
    pub fn id(&self) -> OpId {
        self.id
    }

    /// Reports output.
    pub fn log(&self, stream: LogStream, data: &[u8]) {
        self.send(ProgressEvent::Log { id: self.id, stream, data: data.to_vec() });
    }

    /// Reports a status line.
    pub fn status(&self, text: impl Into<String>) {
        self.send(ProgressEvent::Status { id: self.id, text: text.into() });
    }

    pub(crate) fn send(&self, ev: ProgressEvent) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(ev);
        }
    }
}
