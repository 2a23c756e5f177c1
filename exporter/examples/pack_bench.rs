//! Layer packing throughput: `layer::pack` of a directory with each
//! compression, the `Compressor` alone over the same tar, and the stock tools
//! (`gzip -6`, `pigz -6 -p N`, `zstd -3 -TN`) over that tar, for comparison.
//!
//! ```sh
//! ../shared/bench/gen.sh     # /tmp/bench-ctx/bigctx, ~624 MB (or pass any directory)
//! cargo run --release -p rbuild-exporter --example pack_bench -- /tmp/bench-ctx/bigctx
//! ```
//!
//! Options after the directory: `--runs N` (best of N, default 1),
//! `--no-tools` (skip the command-line tools). The directory should be in the
//! page cache (the first row warms it). Times are wall seconds; MB/s is
//! uncompressed tar bytes (10^6) per second.
#![allow(missing_docs)]

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use rbuild_exporter::layer::{pack, Compression, Compressor, PackOptions};

/// Counts what is written and throws it away.
#[derive(Default)]
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Row {
    what: String,
    secs: f64,
    cpu: f64,
    out_bytes: u64,
}

/// User+system CPU seconds of this process plus its waited-for children,
/// from `/proc/self/stat` (utime, stime, cutime, cstime; 100 ticks a second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<f64> = after_comm.split_whitespace().skip(11).take(4).filter_map(|f| f.parse().ok()).collect();
    fields.iter().sum::<f64>() / 100.0
}

/// Best wall time of `runs`, with that run's CPU time and output size.
fn best_of<F: FnMut() -> u64>(runs: usize, mut f: F) -> (f64, f64, u64) {
    let mut best = (f64::MAX, 0.0, 0);
    for _ in 0..runs.max(1) {
        let cpu = cpu_seconds();
        let start = Instant::now();
        let bytes = f();
        let secs = start.elapsed().as_secs_f64();
        if secs < best.0 {
            best = (secs, cpu_seconds() - cpu, bytes);
        }
    }
    best
}

fn pack_row(dir: &Path, compression: Compression, threads: usize, runs: usize) -> (f64, f64, u64) {
    let mut opts = PackOptions::default();
    opts.compression(compression).threads(threads);
    best_of(runs, || {
        let mut out = Counter::default();
        pack(dir, &mut out, &opts).expect("pack");
        out.0
    })
}

fn compressor_row(tar: &Path, compression: Compression, threads: usize, runs: usize) -> (f64, f64, u64) {
    best_of(runs, || {
        let mut input = BufReader::with_capacity(1 << 20, File::open(tar).expect("open tar"));
        let mut c = Compressor::with_threads(compression, threads, Counter::default()).unwrap();
        io::copy(&mut input, &mut c).expect("compress");
        c.finish().unwrap().0
    })
}

fn tool_row(tar: &Path, program: &str, args: &[&str], runs: usize) -> Option<(f64, f64, u64)> {
    if Command::new(program).arg("--version").output().is_err() {
        eprintln!("{program} not installed: skipped");
        return None;
    }
    Some(best_of(runs, || {
        let mut child = Command::new(program)
            .args(args)
            .stdin(File::open(tar).expect("open tar"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut n = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        let mut stdout = child.stdout.take().unwrap();
        loop {
            match stdout.read(&mut buf).expect("read") {
                0 => break,
                k => n += k as u64,
            }
        }
        assert!(child.wait().expect("wait").success(), "{program} failed");
        n
    }))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut dir = PathBuf::from("/tmp/bench-ctx/bigctx");
    let mut runs = 1;
    let mut tools = true;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().and_then(|n| n.parse().ok()).expect("--runs N"),
            "--no-tools" => tools = false,
            other => dir = PathBuf::from(other),
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tmp = tempfile::tempdir().expect("tempdir");
    let tar = tmp.path().join("layer.tar");

    // The uncompressed tar, kept for the compressor-only and tool rows.
    let mut opts = PackOptions::default();
    opts.compression(Compression::None);
    let start = Instant::now();
    let layer = pack(&dir, File::create(&tar).expect("create tar"), &opts).expect("pack");
    let warm = start.elapsed().as_secs_f64();
    let tar_bytes = layer.size;
    eprintln!(
        "{}: {} entries, tar {:.1} MB (first pass {warm:.2} s), {cores} cores",
        dir.display(),
        layer.entries,
        tar_bytes as f64 / 1e6
    );

    let gzip6 = Compression::Gzip { level: 6 };
    let zstd3 = Compression::Zstd { level: 3 };
    let mut rows = Vec::new();
    let mut add = |what: String, (secs, cpu, out_bytes): (f64, f64, u64)| {
        eprintln!("  {what}: {secs:.2} s");
        rows.push(Row { what, secs, cpu, out_bytes });
    };
    add("pack, uncompressed".into(), pack_row(&dir, Compression::None, 0, runs));
    add("pack, gzip-6, 1 thread".into(), pack_row(&dir, gzip6, 1, runs));
    add(format!("pack, gzip-6, {cores} threads"), pack_row(&dir, gzip6, 0, runs));
    add(format!("pack, zstd-3, {cores} threads"), pack_row(&dir, zstd3, 0, runs));
    add("pack, zstd-3, 1 thread".into(), pack_row(&dir, zstd3, 1, runs));
    add("Compressor only, gzip-6, 1 thread".into(), compressor_row(&tar, gzip6, 1, runs));
    add(format!("Compressor only, gzip-6, {cores} threads"), compressor_row(&tar, gzip6, 0, runs));
    add(format!("Compressor only, zstd-3, {cores} threads"), compressor_row(&tar, zstd3, 0, runs));
    if tools {
        let p = format!("-p{cores}");
        let t = format!("-T{cores}");
        let tool_rows: [(String, &str, Vec<&str>); 3] = [
            ("gzip -6 (tool)".into(), "gzip", vec!["-6", "-c", "-n"]),
            (format!("pigz -6 -p {cores} (tool)"), "pigz", vec!["-6", "-c", "-n", &p]),
            (format!("zstd -3 -T{cores} (tool)"), "zstd", vec!["-3", "-c", "-q", &t]),
        ];
        for (what, program, args) in tool_rows {
            if let Some(r) = tool_row(&tar, program, &args, runs) {
                add(what, r);
            }
        }
    }

    println!("| method | wall s | MB/s | CPU s | output MB | ratio |\n|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.2} | {:.0} | {:.1} | {:.1} | {:.3} |",
            r.what,
            r.secs,
            tar_bytes as f64 / 1e6 / r.secs,
            r.cpu,
            r.out_bytes as f64 / 1e6,
            r.out_bytes as f64 / tar_bytes as f64
        );
    }
}
