//! What `StoreOptions::durable` costs: small blob and record puts with and without fsync.
//!
//! `cargo run --release -p rbuild-cache --example durable_cost [DIR] [N]` (DIR defaults to the
//! system temp dir; put it on the filesystem the store will live on).

use std::time::Instant;

use rbuild_cache::{Record, RecordLayer, Store, StoreOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let base = args.next().map_or_else(std::env::temp_dir, Into::into);
    let n: usize = args.next().map_or(Ok(1000), |s| s.parse())?;
    for durable in [false, true] {
        let dir = tempfile::tempdir_in(&base)?;
        let store = Store::open_with(dir.path(), &StoreOptions { durable, ..StoreOptions::default() })?;
        let t = Instant::now();
        for i in 0..n {
            store.put_blob(format!("small blob {i} {durable}").as_bytes(), None)?;
        }
        let blobs = t.elapsed();
        let rec = Record { chain: vec![RecordLayer { id: "x".into(), producer: None }] };
        let t = Instant::now();
        for i in 0..n {
            store.put_record(&format!("{i:064x}"), &rec)?;
        }
        let records = t.elapsed();
        println!(
            "durable={durable:<5} {n} blob puts: {:>8.1} ms ({:>6.1} µs each)   {n} record puts: {:>8.1} ms ({:>6.1} µs each)",
            blobs.as_secs_f64() * 1e3,
            blobs.as_secs_f64() * 1e6 / n as f64,
            records.as_secs_f64() * 1e3,
            records.as_secs_f64() * 1e6 / n as f64,
        );
    }
    Ok(())
}
