//! Compression: the parallel gzip and zstd writers give the same bytes for
//! any thread count, write pattern and run, and decompress (with flate2/zstd
//! and with the stock `gzip -d` / `zstd -d` when installed) to the exact input.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use rbuild_exporter::layer::{pack, Compression, Compressor, PackOptions, PackedLayer, GZIP_BLOCK_SIZE};
use rbuild_exporter::sha256_digest;

/// About 5.6 blocks of mixed data: text-like runs, incompressible noise and
/// long repeats that reach across block boundaries.
fn mixed_input() -> Vec<u8> {
    let len = GZIP_BLOCK_SIZE * 5 + GZIP_BLOCK_SIZE * 3 / 5;
    let mut out = Vec::with_capacity(len);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    while out.len() < len {
        match next() % 3 {
            0 => {
                let words = ["layer ", "tar ", "gzip ", "rbuild ", "block\n", "zstd "];
                for _ in 0..2000 {
                    out.extend_from_slice(words[(next() % 6) as usize].as_bytes());
                }
            }
            1 => {
                for _ in 0..2000 {
                    out.extend_from_slice(&next().to_le_bytes());
                }
            }
            _ => {
                let start = out.len().saturating_sub(20_000);
                let copy = out[start..].to_vec();
                out.extend_from_slice(&copy);
            }
        }
    }
    out.truncate(len);
    out
}

fn compress(compression: Compression, threads: usize, data: &[u8], chunk: usize) -> Vec<u8> {
    let mut c = Compressor::with_threads(compression, threads, Vec::new()).unwrap();
    for piece in data.chunks(chunk) {
        c.write_all(piece).unwrap();
        c.flush().unwrap(); // must not change the output
    }
    c.finish().unwrap()
}

/// Runs `program args` with `input` on stdin; `None` when not installed.
fn tool(program: &str, args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
    let mut child = match Command::new(program).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(_) => {
            eprintln!("skipping the {program} check: {program} is not installed");
            return None;
        }
    };
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success(), "{program} {args:?} failed");
    Some(out.stdout)
}

#[test]
fn parallel_gzip_is_deterministic_and_valid() {
    let data = mixed_input();
    let gz = Compression::Gzip { level: 6 };
    let reference = compress(gz, 1, &data, 64 * 1024);
    for (threads, chunk) in [(1, 1 << 20), (2, 4096), (4, 65_537), (4, 1 << 20), (2, 512)] {
        assert!(
            compress(gz, threads, &data, chunk) == reference,
            "gzip differs with {threads} threads, {chunk}-byte writes"
        );
    }
    assert!(reference.len() < data.len() * 3 / 4, "it does compress: {}", reference.len());

    // One gzip member, decodable by flate2 and by gzip(1).
    let mut dec = flate2::read::GzDecoder::new(&reference[..]);
    let mut out = Vec::new();
    dec.read_to_end(&mut out).unwrap();
    assert!(out == data, "flate2 round trip");
    assert!(dec.into_inner().is_empty(), "a single gzip member");
    if let Some(out) = tool("gzip", &["-d", "-c"], &reference) {
        assert!(out == data, "gzip -d round trip");
    }

    // Levels change the bytes, never the content.
    for level in [0, 1, 9] {
        let c = compress(Compression::Gzip { level }, 3, &data, 1 << 16);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&c[..]).read_to_end(&mut out).unwrap();
        assert!(out == data, "level {level}");
    }
}

#[test]
fn zstd_is_deterministic_and_valid() {
    // libzstd cuts its multithreaded jobs at 8 MiB for level 3: use several.
    let mut data = Vec::new();
    for i in 0..4u8 {
        data.extend(mixed_input().iter().map(|b| b.wrapping_add(i)));
    }
    assert!(data.len() > 20 << 20);
    let zs = Compression::Zstd { level: 3 };
    let reference = compress(zs, 1, &data, 64 * 1024);
    for (threads, chunk) in [(2, 4096), (4, 1 << 20)] {
        assert!(
            compress(zs, threads, &data, chunk) == reference,
            "zstd differs with {threads} threads, {chunk}-byte writes"
        );
    }
    assert_eq!(&reference[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    let out = zstd::stream::decode_all(&reference[..]).unwrap();
    assert!(out == data, "zstd crate round trip");
    if let Some(out) = tool("zstd", &["-d", "-c", "-q"], &reference) {
        assert!(out == data, "zstd -d round trip");
    }
}

/// A diff with enough content for several gzip blocks.
fn big_diff(root: &Path) {
    let data = mixed_input();
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    for (i, piece) in data.chunks(700_000).enumerate() {
        std::fs::write(root.join(format!("a/b/f{i}")), piece).unwrap();
    }
    std::fs::write(root.join("small"), b"small\n").unwrap();
    for p in ["a/b", "a", "small"] {
        common::set_mtime(&root.join(p), 1_700_000_000);
    }
}

fn pack_with(dir: &Path, compression: Compression, threads: usize) -> (PackedLayer, Vec<u8>) {
    let mut opts = PackOptions::default();
    opts.compression(compression).threads(threads);
    let mut out = Vec::new();
    let layer = pack(dir, &mut out, &opts).unwrap();
    (layer, out)
}

#[test]
fn pack_output_is_independent_of_threads() {
    let tmp = tempfile::tempdir().unwrap();
    big_diff(tmp.path());
    let (plain, tar) = pack_with(tmp.path(), Compression::None, 0);
    assert!(tar.len() > 4 * GZIP_BLOCK_SIZE);
    for compression in [Compression::Gzip { level: 6 }, Compression::Zstd { level: 3 }] {
        let (one, blob) = pack_with(tmp.path(), compression, 1);
        for threads in [2, 4, 0] {
            let (many, _) = pack_with(tmp.path(), compression, threads);
            assert_eq!(many, one, "{compression:?}, {threads} threads");
        }
        assert_eq!(one.diff_id, plain.diff_id, "diff id is the plain tar's");
        assert_eq!(one.digest, sha256_digest(&blob));
        assert_eq!(one.size, blob.len() as u64);
        assert_eq!(one.media_type, compression.media_type());
        let decoded = match compression {
            Compression::Zstd { .. } => zstd::stream::decode_all(&blob[..]).unwrap(),
            _ => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&blob[..]).read_to_end(&mut out).unwrap();
                out
            }
        };
        assert!(decoded == tar, "{compression:?} decodes to the plain tar");
    }
}
