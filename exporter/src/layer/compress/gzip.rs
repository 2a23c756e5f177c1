//! Block-parallel gzip, as pigz does it, with output that depends only on
//! the input bytes and the level.
//!
//! The input is cut into blocks of exactly [`GZIP_BLOCK_SIZE`] bytes (the
//! last one shorter, possibly empty). Each block is compressed on its own as
//! raw deflate, primed with the last 32 KiB of the block before it as a
//! preset dictionary (so matches can reach back across the cut, as in one
//! long stream), and ended with a sync flush (an empty stored block, which
//! byte-aligns it); the last block is ended with a final block instead. The
//! concatenation is one valid deflate stream inside one gzip member with the
//! fixed header; the trailer's crc32 combines the blocks' crc32s.
//!
//! Priming reads only the *input* of the previous block, so blocks are
//! independent jobs: a pool of worker threads compresses them in any order
//! and the writer puts them out in order. A single thread compresses the
//! same blocks inline and gives the same bytes.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Crc, FlushCompress, Status};

/// Uncompressed bytes per independently compressed gzip block. Part of the
/// output format: changing it changes every gzip layer's digest.
pub const GZIP_BLOCK_SIZE: usize = 1 << 20;

/// Size of the deflate window, and of the dictionary each block is primed with.
const DICT_SIZE: usize = 32 * 1024;

/// Fixed gzip header: magic, CM=8, FLG=0, MTIME=0, XFL (patched), OS=255.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// One block to compress.
struct Job {
    data: Vec<u8>,
    dict: Option<Arc<[u8]>>,
    last: bool,
    reply: SyncSender<io::Result<Done>>,
}

/// One compressed block; `data` is the input buffer, handed back for reuse.
struct Done {
    deflated: Vec<u8>,
    crc: Crc,
    data: Vec<u8>,
}

/// Worker threads sharing one job queue.
struct Pool {
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(threads: usize, level: u32) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let handle =
                std::thread::Builder::new().name(format!("rbuild-gzip-{i}")).spawn(move || worker(&rx, level))?;
            workers.push(handle);
        }
        Ok(Self { jobs: Some(tx), workers })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queue ends each worker after its current job.
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn worker(jobs: &Mutex<Receiver<Job>>, level: u32) {
    let mut deflate = new_deflate(level);
    loop {
        // The lock is held only while waiting for a job, not while compressing.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let result = compress_block(&mut deflate, &job.data, job.dict.as_deref(), job.last);
        let done = result.map(|(deflated, crc)| Done { deflated, crc, data: job.data });
        // The writer may be gone (dropped after an error): nothing to do.
        let _ = job.reply.send(done);
    }
}

fn new_deflate(level: u32) -> Compress {
    Compress::new(flate2::Compression::new(level), false)
}

/// Compresses one block as raw deflate; returns it with the block's crc32.
fn compress_block(deflate: &mut Compress, data: &[u8], dict: Option<&[u8]>, last: bool) -> io::Result<(Vec<u8>, Crc)> {
    deflate.reset();
    if let Some(dict) = dict {
        deflate.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let start = deflate.total_in();
    loop {
        let consumed = usize::try_from(deflate.total_in() - start).map_err(io::Error::other)?;
        let status = deflate.compress_vec(&data[consumed..], &mut out, flush).map_err(io::Error::other)?;
        let all_in = deflate.total_in() - start == data.len() as u64;
        // zlib's contract: the flush is complete once a call returns with
        // output space left over (for Finish: once it reports StreamEnd).
        let done = match status {
            Status::StreamEnd => true,
            _ if last => false,
            _ => all_in && out.len() < out.capacity(),
        };
        if done {
            break;
        }
        out.reserve(out.capacity().max(64 * 1024));
    }
    let mut crc = Crc::new();
    crc.update(data);
    Ok((out, crc))
}

/// The block-parallel gzip writer (see the module doc).
pub(crate) struct ParallelGzip<W: Write> {
    out: W,
    level: u32,
    threads: usize,
    /// The block being filled.
    block: Vec<u8>,
    /// The last [`DICT_SIZE`] bytes of the previous block.
    dict: Option<Arc<[u8]>>,
    /// Blocks handed to the pool, oldest first.
    in_flight: VecDeque<Receiver<io::Result<Done>>>,
    /// Emptied input buffers, for reuse.
    spare: Vec<Vec<u8>>,
    pool: Option<Pool>,
    /// Compressor for the single-thread path.
    inline: Option<Compress>,
    crc: Crc,
    total: u64,
    header_written: bool,
}

impl<W: Write> ParallelGzip<W> {
    pub(crate) fn new(out: W, level: u32, threads: usize) -> Self {
        Self {
            out,
            level,
            threads: threads.max(1),
            block: Vec::new(),
            dict: None,
            in_flight: VecDeque::new(),
            spare: Vec::new(),
            pool: None,
            inline: None,
            crc: Crc::new(),
            total: 0,
            header_written: false,
        }
    }

    /// Hands the current block over (to the pool, or compresses it inline).
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        let next = self.spare.pop().unwrap_or_else(|| Vec::with_capacity(GZIP_BLOCK_SIZE));
        let data = std::mem::replace(&mut self.block, next);
        let dict = self.dict.take();
        if !last {
            self.dict = Some(Arc::from(&data[data.len() - DICT_SIZE.min(data.len())..]));
        }
        // One thread, or a stream that fits in one block: no pool needed.
        if self.threads == 1 || (last && self.pool.is_none()) {
            let level = self.level;
            let deflate = self.inline.get_or_insert_with(|| new_deflate(level));
            let (deflated, crc) = compress_block(deflate, &data, dict.as_deref(), last)?;
            return self.emit(Done { deflated, crc, data });
        }
        if self.pool.is_none() {
            self.pool = Some(Pool::start(self.threads, self.level)?);
        }
        let (reply, done) = mpsc::sync_channel(1);
        let job = Job { data, dict, last, reply };
        let jobs = self.pool.as_ref().and_then(|p| p.jobs.as_ref());
        jobs.ok_or_else(pool_gone)?.send(job).map_err(|_| pool_gone())?;
        self.in_flight.push_back(done);
        while self.in_flight.len() > 2 * self.threads {
            self.collect_oldest()?;
        }
        Ok(())
    }

    /// Waits for the oldest block in flight and writes it out.
    fn collect_oldest(&mut self) -> io::Result<()> {
        let Some(rx) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let done = rx.recv().map_err(|_| pool_gone())??;
        self.emit(done)
    }

    fn emit(&mut self, done: Done) -> io::Result<()> {
        if !self.header_written {
            let mut header = HEADER;
            header[8] = match self.level {
                // RFC 1952 XFL, set as zlib and flate2 set it.
                9 => 2,
                0 | 1 => 4,
                _ => 0,
            };
            self.out.write_all(&header)?;
            self.header_written = true;
        }
        self.out.write_all(&done.deflated)?;
        self.crc.combine(&done.crc);
        self.total += done.data.len() as u64;
        let mut data = done.data;
        data.clear();
        self.spare.push(data);
        Ok(())
    }

    /// Compresses the rest, writes the trailer and returns the writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        while !self.in_flight.is_empty() {
            self.collect_oldest()?;
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        // ISIZE is the input size modulo 2^32 (RFC 1952).
        trailer[4..].copy_from_slice(&(self.total as u32).to_le_bytes());
        self.out.write_all(&trailer)?;
        self.pool = None;
        // `self` implements no Drop of its own, so `out` can be moved out.
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.block.capacity() < GZIP_BLOCK_SIZE {
            self.block.reserve_exact(GZIP_BLOCK_SIZE - self.block.len());
        }
        let n = buf.len().min(GZIP_BLOCK_SIZE - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == GZIP_BLOCK_SIZE {
            self.dispatch(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Write out what is already compressed, without waiting or cutting
        // a block (which would change the output).
        while let Some(rx) = self.in_flight.front() {
            match rx.try_recv() {
                Ok(done) => {
                    self.in_flight.pop_front();
                    self.emit(done?)?;
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return Err(pool_gone()),
            }
        }
        self.out.flush()
    }
}

fn pool_gone() -> io::Error {
    io::Error::other("a gzip compression thread stopped unexpectedly")
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gzip(data: &[u8], threads: usize, chunk: usize) -> Vec<u8> {
        let mut gz = ParallelGzip::new(Vec::new(), 6, threads);
        for piece in data.chunks(chunk.max(1)) {
            gz.write_all(piece).unwrap();
        }
        gz.finish().unwrap()
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut dec = flate2::read::GzDecoder::new(bytes);
        dec.read_to_end(&mut out).unwrap();
        // One member only: nothing may follow it.
        assert!(dec.into_inner().is_empty());
        out
    }

    /// Compressible but not trivially so.
    fn sample(len: usize) -> Vec<u8> {
        let mut x: u32 = 12345;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 7 == 0 {
                    (x >> 24) as u8
                } else {
                    b'a' + (i % 13) as u8
                }
            })
            .collect()
    }

    #[test]
    fn edges_round_trip_and_agree_across_threads() {
        for len in [0, 1, DICT_SIZE - 1, GZIP_BLOCK_SIZE - 1, GZIP_BLOCK_SIZE, GZIP_BLOCK_SIZE + 1, 2 * GZIP_BLOCK_SIZE]
        {
            let data = sample(len);
            let one = gzip(&data, 1, 4096);
            assert_eq!(gunzip(&one), data, "len {len}");
            assert_eq!(gzip(&data, 3, 999), one, "len {len}: threads/chunking");
        }
    }

    #[test]
    fn small_input_is_plain_gzip() {
        // Below one block, the stream is what one deflate call makes.
        let data = sample(10_000);
        let ours = gzip(&data, 2, 100);
        let mut reference =
            flate2::GzBuilder::new().mtime(0).operating_system(255).write(Vec::new(), flate2::Compression::new(6));
        reference.write_all(&data).unwrap();
        assert_eq!(ours, reference.finish().unwrap());
    }
}
