//! The Berkeley DB hash database rpm used before 4.16 (`/var/lib/rpm/Packages`: CentOS 7 and
//! 8, RHEL 8, Amazon Linux 2): its values, the packages' header blobs, read page by page.
//!
//! Layout (Berkeley DB's `db_page.h`): page 0 is the hash metadata page (magic `0x061561` at
//! 12, page size at 20, encryption at 24, type 8 at 25, last page number at 32), in the byte
//! order of the machine that wrote it. Every page starts with a 26-byte header (next page at
//! 16, entry count at 20, high free offset at 22, type at 25). Hash pages (types 2 and 13)
//! hold `entries` 16-bit item offsets after the header, key and value alternating; an item
//! is either inline (type 1, its bytes up to the previous item's start) or off-page (type 3:
//! first overflow page at +4, total length at +8), continued on overflow pages (type 7) that
//! each hold `high free offset` bytes after their header.

use std::fs::File;
use std::os::unix::fs::FileExt;

const MAGIC: u32 = 0x0006_1561;
const HEADER: usize = 26;
const P_HASH_UNSORTED: u8 = 2;
const P_OVERFLOW: u8 = 7;
const P_HASHMETA: u8 = 8;
const P_HASH: u8 = 13;
const H_KEYDATA: u8 = 1;
const H_OFFPAGE: u8 = 3;
/// The largest value read (rpm's own header limit).
const MAX_VALUE: usize = 256 << 20;

/// Why a file is not a Berkeley DB hash database this reader can read.
#[derive(Debug, thiserror::Error)]
pub enum BerkeleyDbError {
    /// Not a hash database's metadata page.
    #[error("not a Berkeley DB hash database")]
    NotHash,
    /// Encrypted, or a page size Berkeley DB never writes.
    #[error("unsupported Berkeley DB database: {0}")]
    Unsupported(String),
    /// Reading the file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The database's values, in page order, and how many items could not be read.
#[derive(Debug, Default)]
pub(super) struct Values {
    pub(super) values: Vec<Vec<u8>>,
    pub(super) unreadable: usize,
}

#[derive(Debug, Clone, Copy)]
struct Order {
    big: bool,
}

impl Order {
    fn u16(self, b: &[u8], at: usize) -> Option<u16> {
        let v: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
        Some(if self.big { u16::from_be_bytes(v) } else { u16::from_le_bytes(v) })
    }

    fn u32(self, b: &[u8], at: usize) -> Option<u32> {
        let v: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(if self.big { u32::from_be_bytes(v) } else { u32::from_le_bytes(v) })
    }
}

/// Reads every value of the hash database in `file` whose key is not rpm's bookkeeping
/// record 0 (the next instance number).
pub(super) fn read_values(file: &File) -> Result<Values, BerkeleyDbError> {
    let mut meta = [0u8; 512];
    file.read_exact_at(&mut meta, 0).map_err(|_| BerkeleyDbError::NotHash)?;
    let order = [Order { big: false }, Order { big: true }]
        .into_iter()
        .find(|o| o.u32(&meta, 12) == Some(MAGIC))
        .ok_or(BerkeleyDbError::NotHash)?;
    if meta[25] != P_HASHMETA {
        return Err(BerkeleyDbError::NotHash);
    }
    if meta[24] != 0 {
        return Err(BerkeleyDbError::Unsupported("encrypted".into()));
    }
    let page_size = order.u32(&meta, 20).unwrap_or_default();
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(BerkeleyDbError::Unsupported(format!("page size {page_size}")));
    }
    let page_size = page_size as usize;
    let last = order.u32(&meta, 32).unwrap_or_default();
    let db = Db { file, order, page_size, pages: u64::from(last) + 1 };

    let mut out = Values::default();
    let mut page = vec![0u8; page_size];
    for pgno in 1..db.pages {
        if !db.read_page(pgno, &mut page)? {
            break;
        }
        if page[25] != P_HASH && page[25] != P_HASH_UNSORTED {
            continue;
        }
        let entries = usize::from(order.u16(&page, 20).unwrap_or_default());
        let offsets: Option<Vec<usize>> =
            (0..entries).map(|i| order.u16(&page, HEADER + 2 * i).map(usize::from)).collect();
        let Some(offsets) = offsets.filter(|o| o.len() % 2 == 0) else {
            out.unreadable += 1;
            continue;
        };
        for pair in (0..offsets.len()).step_by(2) {
            let key = db.item(&page, &offsets, pair);
            if key.as_deref() == Some(&[0, 0, 0, 0][..]) {
                continue;
            }
            match db.item(&page, &offsets, pair + 1) {
                Some(v) => out.values.push(v),
                None => out.unreadable += 1,
            }
        }
    }
    Ok(out)
}

struct Db<'a> {
    file: &'a File,
    order: Order,
    page_size: usize,
    pages: u64,
}

impl Db<'_> {
    /// Reads page `pgno`; false when the file ends before it.
    fn read_page(&self, pgno: u64, buf: &mut [u8]) -> Result<bool, BerkeleyDbError> {
        match self.file.read_exact_at(buf, pgno * self.page_size as u64) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Item `i` of a hash page: inline bytes, or an off-page item gathered from its overflow
    /// pages. `None` when it is malformed.
    fn item(&self, page: &[u8], offsets: &[usize], i: usize) -> Option<Vec<u8>> {
        let start = *offsets.get(i)?;
        let end = if i == 0 { self.page_size } else { *offsets.get(i - 1)? };
        let item = page.get(start..end)?;
        match *item.first()? {
            H_KEYDATA => Some(item[1..].to_vec()),
            H_OFFPAGE => {
                let first = self.order.u32(item, 4)?;
                let len = usize::try_from(self.order.u32(item, 8)?).ok()?;
                self.overflow(first, len)
            }
            _ => None,
        }
    }

    /// The `len` bytes of an overflow chain starting at page `pgno`.
    fn overflow(&self, mut pgno: u32, len: usize) -> Option<Vec<u8>> {
        if len > MAX_VALUE {
            return None;
        }
        let mut out = Vec::with_capacity(len.min(1 << 20));
        let mut page = vec![0u8; self.page_size];
        // Each page at most once: a cycle in a damaged file ends here.
        let mut visited = 0;
        while out.len() < len {
            visited += 1;
            if pgno == 0 || u64::from(pgno) >= self.pages || visited > self.pages {
                return None;
            }
            if !self.read_page(u64::from(pgno), &mut page).ok()? || page[25] != P_OVERFLOW {
                return None;
            }
            let here = usize::from(self.order.u16(&page, 22)?);
            out.extend_from_slice(page.get(HEADER..HEADER.checked_add(here)?)?);
            pgno = self.order.u32(&page, 16)?;
        }
        out.truncate(len);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    /// A little-endian database of 512-byte pages: metadata, one hash page holding one
    /// inline pair and one off-page value, and two overflow pages.
    fn tiny() -> Vec<u8> {
        let ps = 512;
        let mut db = vec![0u8; ps * 4];
        db[12..16].copy_from_slice(&MAGIC.to_le_bytes());
        db[20..24].copy_from_slice(&(ps as u32).to_le_bytes());
        db[25] = P_HASHMETA;
        db[32..36].copy_from_slice(&3u32.to_le_bytes());
        let p = &mut db[ps..2 * ps];
        p[25] = P_HASH;
        p[20..22].copy_from_slice(&4u16.to_le_bytes());
        // Items from the end of the page down: key 1 (inline), value (inline), key 2, value (off-page).
        let items: [&[u8]; 4] = [
            &[H_KEYDATA, 1, 0, 0, 0],
            &[H_KEYDATA, b'h', b'i'],
            &[H_KEYDATA, 2, 0, 0, 0],
            &[H_OFFPAGE, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0],
        ];
        let mut end = ps;
        for (i, item) in items.iter().enumerate() {
            let start = end - item.len();
            p[start..end].copy_from_slice(item);
            p[HEADER + 2 * i..HEADER + 2 * i + 2].copy_from_slice(&(start as u16).to_le_bytes());
            end = start;
        }
        // 512 bytes of value: 486 on page 2, 26 on page 3.
        for (pgno, next, n, fill) in [(2usize, 3u32, 486u16, b'a'), (3, 0, 26, b'b')] {
            let p = &mut db[pgno * ps..(pgno + 1) * ps];
            p[25] = P_OVERFLOW;
            p[16..20].copy_from_slice(&next.to_le_bytes());
            p[22..24].copy_from_slice(&n.to_le_bytes());
            p[HEADER..HEADER + usize::from(n)].fill(fill);
        }
        db
    }

    #[test]
    fn inline_and_overflow_values() {
        let got = read_values(&file(&tiny())).unwrap();
        assert_eq!(got.unreadable, 0);
        assert_eq!(got.values.len(), 2);
        assert_eq!(got.values[0], b"hi");
        assert_eq!(got.values[1].len(), 512);
        assert!(got.values[1][..486].iter().all(|&b| b == b'a') && got.values[1][486..].iter().all(|&b| b == b'b'));
    }

    #[test]
    fn damaged_databases_do_not_panic_or_loop() {
        assert!(matches!(read_values(&file(b"short")), Err(BerkeleyDbError::NotHash)));
        assert!(matches!(read_values(&file(&[0u8; 4096])), Err(BerkeleyDbError::NotHash)));
        let db = tiny();
        // A cycle in the overflow chain: page 3 points back to page 2.
        // Both pages empty, so only the cycle guard ends it.
        let mut cyclic = db.clone();
        cyclic[3 * 512 + 16..3 * 512 + 20].copy_from_slice(&2u32.to_le_bytes());
        cyclic[2 * 512 + 22..2 * 512 + 24].copy_from_slice(&0u16.to_le_bytes());
        cyclic[3 * 512 + 22..3 * 512 + 24].copy_from_slice(&0u16.to_le_bytes());
        let got = read_values(&file(&cyclic)).unwrap();
        assert_eq!((got.values.len(), got.unreadable), (1, 1));
        // Every byte of the hash and overflow pages set to each of a few values.
        for i in 512..db.len() {
            for v in [0u8, 1, 3, 0xff] {
                let mut d = db.clone();
                d[i] = v;
                let _ = read_values(&file(&d));
            }
        }
        // Truncated anywhere.
        for len in (0..db.len()).step_by(37) {
            let _ = read_values(&file(&db[..len]));
        }
    }
}
