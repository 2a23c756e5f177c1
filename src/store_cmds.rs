//! `rbuild prune`, `rbuild du`, `rbuild cache verify`: maintenance of the local store.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use rbuild_cache::{GcOptions, LockMode, Store, StoreOptions, VerifyOptions};

use crate::cli::{PruneArgs, VerifyArgs};
use crate::render::UserError;

/// Opens the store exclusively, waiting (and saying so) while builds hold it.
fn open_exclusive(root: &Path) -> Result<Store> {
    let mut opts = StoreOptions { lock: LockMode::Exclusive, wait: false, ..StoreOptions::default() };
    match Store::open_with(root, &opts) {
        Err(rbuild_cache::Error::Locked { .. }) => {
            eprintln!("waiting for the builds using {} to finish...", root.display());
            opts.wait = true;
            Store::open_with(root, &opts).with_context(|| format!("opening the store at {}", root.display()))
        }
        other => other.with_context(|| format!("opening the store at {}", root.display())),
    }
}

/// `10GB`, `512MiB`, `1.5g`, plain bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| UserError(format!("invalid size {s:?} (e.g. 10GB, 512MiB)")))?;
    let mult: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024.0f64.powi(4),
        _ => return Err(UserError(format!("invalid size unit in {s:?} (use B, KB, MB, GB, KiB, MiB, GiB)")).into()),
    };
    Ok((n * mult) as u64)
}

/// `24h`, `30m`, `90s`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num.parse().map_err(|_| UserError(format!("invalid duration {s:?} (e.g. 24h)")))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(UserError(format!("invalid duration unit in {s:?} (use s, m, h, d)")).into()),
    };
    Ok(Duration::from_secs(secs))
}

fn human(bytes: u64) -> String {
    crate::images::human_size(bytes)
}

/// `rbuild prune`: removes cache records (and with `--all` image names too), then everything no
/// remaining record or image needs.
#[allow(clippy::print_stdout)]
pub fn prune(root: &Path, args: &PruneArgs) -> Result<()> {
    let mut opts = GcOptions { all: args.all, dry_run: args.dry_run, ..GcOptions::default() };
    if let Some(k) = &args.keep_storage {
        opts.keep_storage = Some(parse_size(k)?);
    }
    for f in &args.filters {
        match f.split_once('=') {
            Some(("until", v)) => opts.until = Some(parse_duration(v)?),
            _ => return Err(UserError(format!("unsupported filter {f:?} (supported: until=DURATION)")).into()),
        }
    }
    if args.all && !args.force && !args.dry_run && std::io::stdin().is_terminal() {
        eprint!("WARNING! This removes all build cache and every image name in {}.\nAre you sure you want to continue? [y/N] ", root.display());
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            return Err(UserError("prune cancelled".into()).into());
        }
    }
    let store = open_exclusive(root)?;
    if args.all && !args.dry_run {
        for img in store.list_images()? {
            store.remove_image(&img.name)?;
        }
    }
    let report = store.gc(&opts)?;
    let verb = if args.dry_run { "Would reclaim" } else { "Total reclaimed space" };
    println!(
        "{verb}: {} ({} cache records, {} snapshots, {} blobs); {} kept",
        human(report.freed_bytes),
        report.removed_records,
        report.removed_snapshots,
        report.removed_blobs,
        human(report.kept_bytes)
    );
    Ok(())
}

/// `rbuild du`.
#[allow(clippy::print_stdout)]
pub fn du(root: &Path) -> Result<()> {
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let u = store.usage()?;
    println!("{:<12} {:>8} {:>12}", "TYPE", "COUNT", "SIZE");
    println!("{:<12} {:>8} {:>12}", "blobs", u.blobs.0, human(u.blobs.1));
    println!("{:<12} {:>8} {:>12}", "snapshots", u.snapshots.0, human(u.snapshots.1));
    println!("{:<12} {:>8} {:>12}", "records", u.records, "-");
    println!("{:<12} {:>8} {:>12}", "images", u.images, "-");
    println!("Total: {}  Reclaimable: {}", human(u.blobs.1 + u.snapshots.1), human(u.reclaimable_bytes));
    Ok(())
}

/// `rbuild cache verify`: exit status 1 when problems remain.
#[allow(clippy::print_stdout)]
pub fn verify(root: &Path, args: &VerifyArgs) -> Result<()> {
    let store = if args.repair { open_exclusive(root)? } else { Store::open(root)? };
    let report = store.verify(&VerifyOptions { rehash_blobs: args.rehash, repair: args.repair })?;
    for p in &report.problems {
        println!("{p}");
    }
    let remaining = report.problems.iter().filter(|p| !p.repaired).count();
    if remaining > 0 {
        return Err(UserError(format!(
            "{remaining} problem(s) in the store (run with --repair to fix what can be fixed)"
        ))
        .into());
    }
    println!("store OK: {}", root.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("10GB").unwrap(), 10_000_000_000);
        assert_eq!(parse_size("512MiB").unwrap(), 512 * 1024 * 1024);
        assert_eq!(parse_size("1.5g").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("42").unwrap(), 42);
        assert!(parse_size("ten").is_err());
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_duration("1y").is_err());
    }
}
