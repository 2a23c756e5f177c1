//! Block-parallel gzip, as pigz does it, with output that depends only on
//! the input bytes, the level and the entry boundaries the packer reports.
//!
//! # Format (version 2)
//!
//! The input is cut into blocks of at most [`GZIP_BLOCK_SIZE`] bytes. Each
//! block is compressed on its own as raw deflate, primed with the last
//! 32 KiB of the block before it as a preset dictionary (so matches can reach
//! back across the cut, as in one long stream), and ended with a sync flush
//! (an empty stored block, which byte-aligns it); the last block is ended
//! with a final block instead. The concatenation is one valid deflate stream
//! inside one gzip member with the fixed header; the trailer's crc32 combines
//! the blocks' crc32s.
//!
//! Where blocks end: without entry hints (plain [`Compressor`] use) every
//! block is exactly [`GZIP_BLOCK_SIZE`] bytes. `layer::pack` reports where
//! each tar entry starts, and then blocks follow the archive's files, so
//! that an unchanged file gives the same block (and the same compressed
//! bytes) wherever it sits in the stream:
//!
//! - an entry with at least [`BIG_ENTRY`] bytes of data starts a block, and
//!   the entry after it starts another; inside it, blocks are cut every
//!   [`GZIP_BLOCK_SIZE`] bytes from its start;
//! - a run of smaller entries is cut before an entry when the block holds at
//!   least [`MIN_BLOCK`] bytes and the FNV-1a hash of the entry's archive
//!   path has its low six bits zero (so cuts depend on names, not offsets,
//!   and resynchronise right after a change), or when the block is full.
//!
//! A block whose content does not compress (16 samples of 4 KiB deflated at
//! level 1 stay above 97% of their size: random or already compressed data)
//! is written as stored deflate blocks (level 0) instead of being searched
//! for matches in vain. The decision reads only the block's bytes.
//!
//! Priming reads only the *input* of the previous block, so blocks are
//! independent jobs: a pool of worker threads compresses them in any order
//! and the writer puts them out in order. A single thread compresses the
//! same blocks inline and gives the same bytes. Every block gets a fresh
//! deflate state (zlib-rs's `reset` does not make a reused state behave
//! exactly like a new one, which made the output depend on which worker got
//! which block).
//!
//! # Reusing compressed blocks
//!
//! A block's deflate bytes are a function of (level, dictionary, data, last)
//! alone, which [`block_key`] hashes. With a [`BlockCache`], a block whose
//! key the cache knows is taken from it instead of being compressed, and the
//! writer can report every block's key and place in the output
//! ([`GzipBlock`]) so that a later layer can reuse them.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Crc, FlushCompress, Status};
use sha2::{Digest as _, Sha256};

/// Largest number of uncompressed bytes in one independently compressed
/// gzip block. Part of the output format: changing it changes every gzip
/// layer's digest.
pub const GZIP_BLOCK_SIZE: usize = 1 << 20;

/// Entries with at least this much data get blocks of their own (format).
pub const BIG_ENTRY: u64 = 256 * 1024;

/// A run of small entries is cut only once its block holds this much (format).
const MIN_BLOCK: usize = 128 * 1024;

/// A cut before a small entry needs these bits of its path hash to be zero
/// (format): one entry in 64 on average.
const CUT_MASK: u64 = 63;

/// Size of the deflate window, and of the dictionary each block is primed with.
const DICT_SIZE: usize = 32 * 1024;

/// Compressibility probe (format): blocks of at least `PROBE_MIN` bytes are
/// sampled at `PROBE_SAMPLES` evenly spaced places, `PROBE_LEN` bytes each.
const PROBE_MIN: usize = 64 * 1024;
const PROBE_SAMPLES: usize = 16;
const PROBE_LEN: usize = 4096;

/// Fixed gzip header: magic, CM=8, FLG=0, MTIME=0, XFL (patched), OS=255.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// What identifies a compressed block: see [`block_key`].
pub type BlockKey = [u8; 32];

/// The key of a block: sha256 over a format tag, the level, whether the
/// block ends the stream, the dictionary it is primed with and its data.
pub fn block_key(level: u32, dict: Option<&[u8]>, data: &[u8], last: bool) -> BlockKey {
    let dict = dict.unwrap_or_default();
    let mut h = Sha256::new();
    h.update(b"rbuild gzip block v2\0");
    h.update([level as u8, u8::from(last)]);
    h.update((dict.len() as u64).to_le_bytes());
    h.update((data.len() as u64).to_le_bytes());
    h.update(dict);
    h.update(data);
    h.finalize().into()
}

/// A block's compressed form, as a [`BlockCache`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedBlock {
    /// The raw deflate bytes, ending byte-aligned (sync flush, or the final
    /// block for the last one).
    pub deflated: Vec<u8>,
    /// crc32 of the block's uncompressed data.
    pub crc: u32,
}

/// Compressed blocks from earlier layers, by key.
///
/// Implementations must only return what was recorded for exactly this key
/// (as [`GzipBlock`] describes it); the writer does not re-check it.
pub trait BlockCache: Send + Sync {
    /// The compressed block for `key`, whose data is `input_len` bytes long.
    fn get(&self, key: &BlockKey, input_len: u64) -> Option<CachedBlock>;
}

/// Where one block of a finished gzip stream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GzipBlock {
    /// Its key ([`block_key`]).
    pub key: BlockKey,
    /// Offset of its deflate bytes in the gzip stream.
    pub offset: u64,
    /// Length of its deflate bytes.
    pub len: u64,
    /// Length of its uncompressed data.
    pub input_len: u64,
    /// crc32 of its uncompressed data.
    pub crc: u32,
}

/// What the writer's threads share.
#[derive(Clone)]
struct Setup {
    level: u32,
    /// Compute keys (to report blocks or to look them up).
    keyed: bool,
    cache: Option<Arc<dyn BlockCache>>,
}

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
    crc: u32,
    key: Option<BlockKey>,
    data: Vec<u8>,
}

/// Worker threads sharing one job queue.
struct Pool {
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(threads: usize, setup: &Setup) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let setup = setup.clone();
            let handle =
                std::thread::Builder::new().name(format!("rbuild-gzip-{i}")).spawn(move || worker(&rx, &setup))?;
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

fn worker(jobs: &Mutex<Receiver<Job>>, setup: &Setup) {
    loop {
        // The lock is held only while waiting for a job, not while compressing.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let done = process(setup, job.data, job.dict.as_deref(), job.last);
        // The writer may be gone (dropped after an error): nothing to do.
        let _ = job.reply.send(done);
    }
}

/// Turns one block into its deflate bytes: from the cache, or compressed.
fn process(setup: &Setup, data: Vec<u8>, dict: Option<&[u8]>, last: bool) -> io::Result<Done> {
    let key = setup.keyed.then(|| block_key(setup.level, dict, &data, last));
    if let (Some(key), Some(cache)) = (&key, &setup.cache) {
        if let Some(hit) = cache.get(key, data.len() as u64) {
            return Ok(Done { deflated: hit.deflated, crc: hit.crc, key: Some(*key), data });
        }
    }
    let level = if setup.level > 0 && incompressible(&data) { 0 } else { setup.level };
    let deflated = compress_block(level, &data, dict, last)?;
    let mut crc = Crc::new();
    crc.update(&data);
    Ok(Done { deflated, crc: crc.sum(), key, data })
}

/// True when samples of `data` do not shrink at level 1 (see the module doc).
fn incompressible(data: &[u8]) -> bool {
    if data.len() < PROBE_MIN {
        return false;
    }
    let mut probe = Compress::new(flate2::Compression::new(1), false);
    let mut out = Vec::with_capacity(PROBE_SAMPLES * PROBE_LEN + 1024);
    let step = (data.len() - PROBE_LEN) / (PROBE_SAMPLES - 1);
    for i in 0..PROBE_SAMPLES {
        let sample = &data[i * step..i * step + PROBE_LEN];
        let start = probe.total_in();
        while probe.total_in() - start < PROBE_LEN as u64 {
            let done = (probe.total_in() - start) as usize;
            if out.len() == out.capacity() {
                out.reserve(64 * 1024);
            }
            if probe.compress_vec(&sample[done..], &mut out, FlushCompress::None).is_err() {
                return false;
            }
        }
    }
    loop {
        if out.len() == out.capacity() {
            out.reserve(64 * 1024);
        }
        match probe.compress_vec(&[], &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => break,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    out.len() * 100 >= PROBE_SAMPLES * PROBE_LEN * 97
}

/// Compresses one block as raw deflate with a fresh state.
fn compress_block(level: u32, data: &[u8], dict: Option<&[u8]>, last: bool) -> io::Result<Vec<u8>> {
    let mut deflate = Compress::new(flate2::Compression::new(level), false);
    if let Some(dict) = dict {
        deflate.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    let cap = if level == 0 { data.len() + data.len() / 16 + 64 } else { data.len() / 2 + 1024 };
    let mut out = Vec::with_capacity(cap);
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
    Ok(out)
}

/// crc32 of `A ‖ B` from crc32(A), crc32(B) and the length of `B` (zlib's
/// `crc32_combine`, by multiplication modulo the CRC polynomial).
pub(crate) fn crc32_combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    multmodp(x2nmodp(len_b, 3), crc_a) ^ crc_b
}

const POLY: u32 = 0xedb8_8320;

/// a(x) · b(x) modulo p(x), reflected bit order.
fn multmodp(a: u32, mut b: u32) -> u32 {
    let mut m: u32 = 1 << 31;
    let mut p: u32 = 0;
    loop {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                break;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

/// x^(n · 2^k) modulo p(x).
fn x2nmodp(mut n: u64, mut k: u32) -> u32 {
    // x^(2^i) mod p for i = 0..32, built on first use.
    static TABLE: std::sync::OnceLock<[u32; 32]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 32];
        let mut p: u32 = 1 << 30; // x^1
        t[0] = p;
        for slot in t.iter_mut().skip(1) {
            p = multmodp(p, p);
            *slot = p;
        }
        t
    });
    let mut p: u32 = 1 << 31; // x^0
    while n != 0 {
        if n & 1 != 0 {
            p = multmodp(table[(k & 31) as usize], p);
        }
        n >>= 1;
        k += 1;
    }
    p
}

/// FNV-1a, 64 bits (part of the format: where runs of small entries are cut).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The block-parallel gzip writer (see the module doc).
pub(crate) struct ParallelGzip<W: Write> {
    out: W,
    setup: Setup,
    threads: usize,
    /// The block being filled.
    block: Vec<u8>,
    /// The last [`DICT_SIZE`] bytes of the previous block.
    dict: Option<Arc<[u8]>>,
    /// The entry being written has blocks of its own.
    in_big_entry: bool,
    /// Blocks handed to the pool, oldest first.
    in_flight: VecDeque<Receiver<io::Result<Done>>>,
    /// Emptied input buffers, for reuse.
    spare: Vec<Vec<u8>>,
    pool: Option<Pool>,
    crc: u32,
    total: u64,
    /// Bytes written to `out` so far.
    out_pos: u64,
    /// Every block written, when keys are computed.
    blocks: Vec<GzipBlock>,
}

impl<W: Write> ParallelGzip<W> {
    pub(crate) fn new(out: W, level: u32, threads: usize) -> Self {
        Self {
            out,
            setup: Setup { level, keyed: false, cache: None },
            threads: threads.max(1),
            block: Vec::new(),
            dict: None,
            in_big_entry: false,
            in_flight: VecDeque::new(),
            spare: Vec::new(),
            pool: None,
            crc: 0,
            total: 0,
            out_pos: 0,
            blocks: Vec::new(),
        }
    }

    /// Computes every block's key and reports the blocks at the end
    /// ([`finish_with_blocks`](Self::finish_with_blocks)); with `cache`,
    /// blocks it knows are taken from it.
    pub(crate) fn record_blocks(&mut self, cache: Option<Arc<dyn BlockCache>>) {
        self.setup.keyed = true;
        self.setup.cache = cache;
    }

    /// A tar entry with `data_len` bytes of data and archive path `path`
    /// starts at the current position (see the module doc for where this
    /// cuts a block).
    pub(crate) fn entry_boundary(&mut self, data_len: u64, path: &[u8]) -> io::Result<()> {
        let big = data_len >= BIG_ENTRY;
        if !self.block.is_empty()
            && (self.in_big_entry || big || (self.block.len() >= MIN_BLOCK && fnv1a(path) & CUT_MASK == 0))
        {
            self.dispatch(false)?;
        }
        self.in_big_entry = big;
        Ok(())
    }

    /// Hands the current block over (to the pool, or compresses it inline).
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        let next = self.spare.pop().unwrap_or_default();
        let data = std::mem::replace(&mut self.block, next);
        let dict = self.dict.take();
        if !last {
            self.dict = Some(Arc::from(&data[data.len() - DICT_SIZE.min(data.len())..]));
        }
        // One thread, or a stream that fits in one block: no pool needed.
        if self.threads == 1 || (last && self.pool.is_none()) {
            let done = process(&self.setup, data, dict.as_deref(), last)?;
            return self.emit(done);
        }
        if self.pool.is_none() {
            self.pool = Some(Pool::start(self.threads, &self.setup)?);
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
        if self.out_pos == 0 {
            let mut header = HEADER;
            header[8] = match self.setup.level {
                // RFC 1952 XFL, set as zlib and flate2 set it.
                9 => 2,
                0 | 1 => 4,
                _ => 0,
            };
            self.out.write_all(&header)?;
            self.out_pos = HEADER.len() as u64;
        }
        self.out.write_all(&done.deflated)?;
        let input_len = done.data.len() as u64;
        if let Some(key) = done.key {
            self.blocks.push(GzipBlock {
                key,
                offset: self.out_pos,
                len: done.deflated.len() as u64,
                input_len,
                crc: done.crc,
            });
        }
        self.out_pos += done.deflated.len() as u64;
        self.crc = crc32_combine(self.crc, done.crc, input_len);
        self.total += input_len;
        let mut data = done.data;
        data.clear();
        self.spare.push(data);
        Ok(())
    }

    /// Compresses the rest, writes the trailer and returns the writer.
    pub(crate) fn finish(self) -> io::Result<W> {
        self.finish_with_blocks().map(|(w, _)| w)
    }

    /// [`finish`](Self::finish), also returning the blocks written (empty
    /// unless [`record_blocks`](Self::record_blocks) was called).
    pub(crate) fn finish_with_blocks(mut self) -> io::Result<(W, Vec<GzipBlock>)> {
        self.dispatch(true)?;
        while !self.in_flight.is_empty() {
            self.collect_oldest()?;
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.to_le_bytes());
        // ISIZE is the input size modulo 2^32 (RFC 1952).
        trailer[4..].copy_from_slice(&(self.total as u32).to_le_bytes());
        self.out.write_all(&trailer)?;
        self.pool = None;
        // `self` implements no Drop of its own, so fields can be moved out.
        Ok((self.out, self.blocks))
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
    use std::collections::HashMap;
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

    /// Log-like lines of pseudo-random words (what made zlib-rs's reused
    /// state show: its output then depended on the previous block).
    fn log_text(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut out = Vec::with_capacity(len + 200);
        while out.len() < len {
            let n = next();
            out.extend_from_slice(
                format!("{}.{:03} INFO svc=mod{:02} req={:08x} ", n % 100_000, n % 1000, n % 25, n >> 32).as_bytes(),
            );
            for _ in 0..(next() % 12) {
                let w = next();
                for i in 0..(2 + w % 9) {
                    out.push(b'a' + ((w >> (i * 5)) % 26) as u8);
                }
                out.push(b' ');
            }
            out.push(b'\n');
        }
        out.truncate(len);
        out
    }

    fn noise(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
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

    #[test]
    fn a_block_compresses_the_same_whatever_came_before() {
        let a = log_text(GZIP_BLOCK_SIZE, 7);
        let b = log_text(GZIP_BLOCK_SIZE, 8);
        let dict = &a[a.len() - DICT_SIZE..];
        let alone = compress_block(6, &b, Some(dict), false).unwrap();
        // The same block after others, in any order, on any thread.
        let mut data = log_text(3 * GZIP_BLOCK_SIZE, 9);
        data.extend_from_slice(&a);
        data.extend_from_slice(&b);
        let one = gzip(&data, 1, 1 << 16);
        let many = gzip(&data, 3, 77_777);
        assert_eq!(one, many);
        let pos = one.windows(alone.len()).position(|w| w == &alone[..]);
        assert!(pos.is_some(), "block 5 is compressed exactly as on its own");
    }

    #[test]
    fn incompressible_blocks_are_stored_and_still_valid() {
        let mut data = noise(3 * GZIP_BLOCK_SIZE);
        data.extend(log_text(GZIP_BLOCK_SIZE, 3));
        assert!(incompressible(&data[..GZIP_BLOCK_SIZE]));
        assert!(!incompressible(&data[3 * GZIP_BLOCK_SIZE..]));
        let out = gzip(&data, 2, 1 << 15);
        assert_eq!(gunzip(&out), data);
        // Stored: barely larger than the noise, and the text still compresses.
        assert!(out.len() < 3 * GZIP_BLOCK_SIZE + GZIP_BLOCK_SIZE / 2, "{}", out.len());
        assert_eq!(gzip(&data, 1, 4096), out);
    }

    #[test]
    fn crc_combine_matches_one_pass() {
        let data = sample(300_000);
        for cut in [0, 1, 4095, 150_000, 300_000] {
            let (a, b) = data.split_at(cut);
            let mut ca = Crc::new();
            ca.update(a);
            let mut cb = Crc::new();
            cb.update(b);
            let mut all = Crc::new();
            all.update(&data);
            assert_eq!(crc32_combine(ca.sum(), cb.sum(), b.len() as u64), all.sum(), "cut {cut}");
        }
    }

    /// Writes `entries` (data length, path, bytes) with boundaries.
    fn with_entries(
        entries: &[(Vec<u8>, Vec<u8>)],
        threads: usize,
        cache: Option<Arc<dyn BlockCache>>,
    ) -> (Vec<u8>, Vec<GzipBlock>) {
        let mut gz = ParallelGzip::new(Vec::new(), 6, threads);
        gz.record_blocks(cache);
        for (path, bytes) in entries {
            gz.entry_boundary(bytes.len() as u64, path).unwrap();
            gz.write_all(bytes).unwrap();
        }
        gz.finish_with_blocks().unwrap()
    }

    struct MapCache(HashMap<BlockKey, CachedBlock>, std::sync::atomic::AtomicUsize);

    impl BlockCache for MapCache {
        fn get(&self, key: &BlockKey, _input_len: u64) -> Option<CachedBlock> {
            let hit = self.0.get(key).cloned();
            if hit.is_some() {
                self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            hit
        }
    }

    #[test]
    fn entry_blocks_resynchronise_and_are_reused() {
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = (0..600)
            .map(|i| (format!("src/f{i:04}.txt").into_bytes(), log_text(2000 + (i * 37) % 3000, i as u64 + 1)))
            .collect();
        entries.insert(100, (b"bin/big".to_vec(), noise(2 * GZIP_BLOCK_SIZE + 5000)));
        entries.insert(300, (b"data/log".to_vec(), log_text(GZIP_BLOCK_SIZE + 77, 99)));
        let (before, blocks) = with_entries(&entries, 2, None);
        let plain: Vec<u8> = entries.iter().flat_map(|(_, b)| b.clone()).collect();
        assert_eq!(gunzip(&before), plain);
        assert_eq!(with_entries(&entries, 1, None).0, before, "threads");
        // Every block is where it says, and the key says what it holds.
        let mut pos = 0usize;
        for b in &blocks {
            assert!(b.input_len as usize <= GZIP_BLOCK_SIZE);
            pos += b.input_len as usize;
        }
        assert_eq!(pos, plain.len());
        assert!(blocks.len() > 8, "{} blocks", blocks.len());

        // Grow one small file early on: most blocks are unchanged.
        entries[20].1.extend_from_slice(b"one more line\n");
        let (after, blocks2) = with_entries(&entries, 2, None);
        let old: std::collections::HashSet<_> = blocks.iter().map(|b| b.key).collect();
        let changed = blocks2.iter().filter(|b| !old.contains(&b.key)).count();
        assert!(changed <= 3, "{changed} of {} blocks changed", blocks2.len());

        // With the old blocks as a cache, the output is byte for byte the same.
        let map = blocks
            .iter()
            .map(|b| {
                let (o, l) = (b.offset as usize, b.len as usize);
                (b.key, CachedBlock { deflated: before[o..o + l].to_vec(), crc: b.crc })
            })
            .collect();
        let cache = Arc::new(MapCache(map, Default::default()));
        let (cached, blocks3) = with_entries(&entries, 2, Some(cache.clone()));
        assert_eq!(cached, after);
        assert_eq!(blocks3, blocks2);
        assert!(cache.1.load(std::sync::atomic::Ordering::Relaxed) >= blocks2.len() - 3);
    }
}
