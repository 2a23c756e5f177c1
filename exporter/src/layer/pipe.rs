//! Moving the tar's sha256 off the thread that builds the tar.
//!
//! Packing a layer streams every byte through the tar's sha256 (the diff id), the blob's
//! sha256 (the store's writer computes it) and a `write`: on one thread that is slower than
//! reading the files, and far slower than copying cached compressed blocks. [`TarTap`] hashes
//! the tar on a thread of its own; data moves in 1 MiB buffers through a bounded channel
//! (memory stays bounded), and buffers come back for reuse.
//!
//! (Writing the blob from a thread of its own was tried too: on the benchmark VM it made the
//! kernel's copy into fresh page-cache pages about twice as slow, for no gain.)

use std::io::{self, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};

/// Bytes per buffer handed to another thread.
const BUF: usize = 1 << 20;
/// Buffers in flight per channel.
const DEPTH: usize = 8;

fn digest_of(hasher: Sha256) -> Digest {
    let hex = hex::encode(hasher.finalize());
    Digest::try_from(format!("sha256:{hex}")).expect("sha256 hex is a valid digest")
}

fn gone() -> io::Error {
    io::Error::other("a layer packing thread stopped unexpectedly")
}

/// Collects bytes into 1 MiB buffers and sends them down a channel.
struct Shipper {
    buf: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    spare: Receiver<Vec<u8>>,
}

impl Shipper {
    fn new(tx: SyncSender<Vec<u8>>, spare: Receiver<Vec<u8>>) -> Self {
        Self { buf: Vec::with_capacity(BUF), tx: Some(tx), spare }
    }

    fn put(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = data.len().min(BUF - self.buf.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == BUF {
                self.ship()?;
            }
        }
        Ok(())
    }

    fn ship(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self.spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(BUF));
        let full = std::mem::replace(&mut self.buf, next);
        self.tx.as_ref().ok_or_else(gone)?.send(full).map_err(|_| gone())
    }

    /// Sends what is left and closes the channel.
    fn close(&mut self) -> io::Result<()> {
        self.ship()?;
        self.tx = None;
        Ok(())
    }
}

/// Passes writes on to `inner` and hashes them on a thread of its own.
pub(crate) struct TarTap<W> {
    inner: W,
    shipper: Shipper,
    hasher: Option<JoinHandle<Digest>>,
}

impl<W: Write> TarTap<W> {
    pub(crate) fn new(inner: W) -> io::Result<Self> {
        let (tx, rx) = sync_channel::<Vec<u8>>(DEPTH);
        let (back, spare) = channel::<Vec<u8>>();
        let hasher = std::thread::Builder::new().name("rbuild-tar-hash".into()).spawn(move || {
            let mut h = Sha256::new();
            for mut buf in rx {
                h.update(&buf);
                buf.clear();
                let _ = back.send(buf);
            }
            digest_of(h)
        })?;
        Ok(Self { inner, shipper: Shipper::new(tx, spare), hasher: Some(hasher) })
    }

    pub(crate) fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Returns the inner writer and the sha256 of everything written.
    pub(crate) fn finish(mut self) -> io::Result<(W, Digest)> {
        self.shipper.close()?;
        let digest = self.hasher.take().ok_or_else(gone)?.join().map_err(|_| gone())?;
        Ok((self.inner, digest))
    }
}

impl<W: Write> Write for TarTap<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.shipper.put(&buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
