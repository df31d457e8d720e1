//! The rows of the history log (`vex_consensus_history_log`): a row, keyed by the
//! [`change_key`] of its first position, holds the history entries of that position and
//! of the positions after it, of one tenant, packed until the row fills a page.
//!
//! Why packed: the log is append-only and redb splits a full leaf in half, so a table of
//! one row per entry stays about half full (10.3 MB of slack for 11.4 MB of entries on
//! csaf-ciq copies, session 18). A row that fills a page is a leaf of its own, full;
//! and the entries of a row share one key.
//!
//! Invariants:
//! - A tenant's rows hold its positions 1..=tail, each once, in order and without gaps:
//!   a row's entries are its key's position and the ones after it.
//! - A row is either one entry, as stores before packing wrote every row (a value
//!   `compressed::decode` reads), or a packed row: [`PACKED`], then for each entry its
//!   length (u32, little endian) and its bytes. [`PACKED`] starts with a NUL byte, which
//!   neither a zstd frame nor JSON starts with. Readers read both; nothing is rewritten.
//! - [`append`] fills the tenant's last row while it stays within [`row_limit`] (that row
//!   is rewritten in the write transaction that gives the new entries their positions),
//!   then starts new rows; an entry larger than a row gets a row of its own.

use super::records::StoredRecord;
use super::{change_key, err, position_of};
use crate::ports::StoreError;
use redb::ReadableTable;

/// The first bytes of a packed row.
const PACKED: [u8; 4] = [0, b'V', b'L', b'P'];

/// The size of a redb page (its default, which the store keeps).
const PAGE_BYTES: usize = 4096;

/// What a redb leaf of one row needs besides the key and the value: its header (4 bytes)
/// and the row's key and value end offsets (4 bytes each), with room to spare.
const LEAF_OVERHEAD: usize = 32;

/// The largest packed row under `key` that still fits in one page (0 for a key of a page
/// or more: each entry then gets a row of its own).
fn row_limit(key: &[u8]) -> usize {
    PAGE_BYTES.saturating_sub(LEAF_OVERHEAD + key.len())
}

/// The entries a row holds, in position order.
pub(super) fn entries(row: &[u8]) -> Result<Vec<&[u8]>, StoreError> {
    let Some(mut rest) = row.strip_prefix(&PACKED[..]) else { return Ok(vec![row]) };
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
        let len = usize::try_from(u32::from_le_bytes(*len)).map_err(|_| truncated())?;
        if tail.len() < len {
            return Err(truncated());
        }
        let (entry, tail) = tail.split_at(len);
        out.push(entry);
        rest = tail;
    }
    Ok(out)
}

fn truncated() -> StoreError {
    StoreError::Rejected("a packed history log row is truncated".into())
}

/// `entry` appended to the packed row `row`.
fn push(row: &mut Vec<u8>, entry: &[u8]) -> Result<(), StoreError> {
    let len = u32::try_from(entry.len())
        .map_err(|_| StoreError::Rejected(format!("a history entry of {} bytes is too large", entry.len())))?;
    row.extend_from_slice(&len.to_le_bytes());
    row.extend_from_slice(entry);
    Ok(())
}

/// A row of the log: its first position and its bytes, read in place.
type Row<'a> = (u64, redb::AccessGuard<'a, &'static [u8]>);

/// The row holding `tenant`'s position `seq` (or the last row before it).
fn row_at<'a>(
    log: &'a impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: &str,
    seq: u64,
) -> Result<Option<Row<'a>>, StoreError> {
    let (low, high) = (change_key(tenant, 0), change_key(tenant, seq));
    let Some(r) = log.range(low.as_bytes()..=high.as_bytes()).map_err(err)?.next_back() else {
        return Ok(None);
    };
    let (k, v) = r.map_err(err)?;
    Ok(Some((position_of(k.value())?, v)))
}

/// The history entry at `tenant`'s position `seq`, if the log holds it.
pub(super) fn entry_at(
    log: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: &str,
    seq: u64,
) -> Result<Option<StoredRecord>, StoreError> {
    let Some((first, row)) = row_at(log, tenant, seq)? else { return Ok(None) };
    let offset = usize::try_from(seq - first).map_err(|_| truncated())?;
    entries(row.value())?.get(offset).map(|e| StoredRecord::decode(e)).transpose()
}

/// `tenant`'s history entries from position `from` on (at most `limit`), with their
/// positions.
pub(super) fn entries_from(
    log: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: &str,
    from: u64,
    limit: usize,
) -> Result<Vec<(u64, StoredRecord)>, StoreError> {
    // The row holding `from` starts at or before it.
    let start = match row_at(log, tenant, from)? {
        Some((first, _)) => change_key(tenant, first),
        None => change_key(tenant, from),
    };
    let end = format!("{tenant}\u{1}");
    let mut out = Vec::new();
    for r in log.range(start.as_bytes()..end.as_bytes()).map_err(err)? {
        let (k, v) = r.map_err(err)?;
        let first = position_of(k.value())?;
        for (seq, entry) in (first..).zip(entries(v.value())?) {
            if out.len() >= limit {
                return Ok(out);
            }
            if seq >= from {
                out.push((seq, StoredRecord::decode(entry)?));
            }
        }
    }
    Ok(out)
}

/// The number of entries the log holds.
pub(super) fn count(log: &impl ReadableTable<&'static [u8], &'static [u8]>) -> Result<u64, StoreError> {
    let mut n = 0u64;
    for r in log.iter().map_err(err)? {
        n += entries(r.map_err(err)?.1.value())?.len() as u64;
    }
    Ok(n)
}

/// Writes `new` as `tenant`'s positions `first`, `first + 1`, ... (`first` follows the
/// tenant's last position): into its last row while that stays within [`row_limit`], then
/// into new rows. Returns the rows written.
pub(super) fn append(
    log: &mut redb::Table<&'static [u8], &'static [u8]>,
    tenant: &str,
    first: u64,
    new: &[&[u8]],
) -> Result<u64, StoreError> {
    // The row being filled: its key, its bytes and whether they changed.
    let mut open: Option<(String, Vec<u8>, bool)> = None;
    if let Some((start, row)) = row_at(log, tenant, first.saturating_sub(1))? {
        let row = row.value();
        let held = entries(row)?.len() as u64;
        if start + held == first {
            let packed = if row.starts_with(&PACKED) {
                row.to_vec()
            } else {
                let mut packed = PACKED.to_vec();
                push(&mut packed, row)?;
                packed
            };
            open = Some((change_key(tenant, start), packed, false));
        }
    }
    let mut written = 0;
    for (seq, entry) in (first..).zip(new) {
        let fits = open.as_ref().is_some_and(|(key, row, _)| row.len() + 4 + entry.len() <= row_limit(key.as_bytes()));
        if !fits {
            written += flush(log, open.take())?;
            open = Some((change_key(tenant, seq), PACKED.to_vec(), true));
        }
        let (_, row, dirty) = open.as_mut().expect("a row is open");
        push(row, entry)?;
        *dirty = true;
    }
    written += flush(log, open)?;
    Ok(written)
}

/// Writes the row `open` if it changed; returns the rows written (0 or 1).
fn flush(
    log: &mut redb::Table<&'static [u8], &'static [u8]>,
    open: Option<(String, Vec<u8>, bool)>,
) -> Result<u64, StoreError> {
    match open {
        Some((key, row, true)) => {
            log.insert(key.as_bytes(), row.as_slice()).map_err(err)?;
            Ok(1)
        }
        _ => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Database, TableDefinition};

    const LOG: TableDefinition<&[u8], &[u8]> = TableDefinition::new("log");

    fn entry(n: usize, fill: u8) -> Vec<u8> {
        let mut e = b"{\"changed_at_ms\":".to_vec();
        e.resize(n, fill);
        e
    }

    /// Entries appended over several commits read back at their positions, from rows that
    /// stay within a page; a row as older stores wrote it (one entry) is read and filled.
    #[test]
    fn appended_entries_read_back_at_their_positions_from_rows_within_a_page() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("log.redb")).unwrap();
        let old = entry(300, b'o');
        let tx = db.begin_write().unwrap();
        tx.open_table(LOG).unwrap().insert(change_key("t", 1).as_bytes(), old.as_slice()).unwrap();
        tx.commit().unwrap();
        let mut want = vec![old];
        for commit in 0..40u8 {
            let new: Vec<Vec<u8>> = (0..=commit % 7).map(|i| entry(100 + 97 * usize::from(i), commit)).collect();
            let tx = db.begin_write().unwrap();
            {
                let mut log = tx.open_table(LOG).unwrap();
                let refs: Vec<&[u8]> = new.iter().map(Vec::as_slice).collect();
                append(&mut log, "t", want.len() as u64 + 1, &refs).unwrap();
                // Another tenant's rows (sorted before "t"'s) are never read as "t"'s.
                append(&mut log, "s", u64::from(commit) + 1, &[b"x".as_slice()]).unwrap();
            }
            tx.commit().unwrap();
            want.extend(new);
        }
        let huge = entry(3 * PAGE_BYTES, b'h');
        let tx = db.begin_write().unwrap();
        append(&mut tx.open_table(LOG).unwrap(), "t", want.len() as u64 + 1, &[huge.as_slice()]).unwrap();
        tx.commit().unwrap();
        want.push(huge);

        let tx = db.begin_read().unwrap();
        let log = tx.open_table(LOG).unwrap();
        let mut rows = 0;
        let mut seen = Vec::new();
        for r in log.range(change_key("t", 0).as_bytes()..b"t\x01".as_slice()).unwrap() {
            let (k, v) = r.unwrap();
            rows += 1;
            let held = entries(v.value()).unwrap();
            assert!(v.value().len() <= row_limit(k.value()) || held.len() == 1, "a row over a page holds one entry");
            assert_eq!(position_of(k.value()).unwrap(), seen.len() as u64 + 1, "rows start where the last ended");
            seen.extend(held.into_iter().map(<[u8]>::to_vec));
        }
        assert_eq!(seen, want);
        assert!(rows * 4 < want.len(), "{rows} rows for {} entries", want.len());
        assert_eq!(count(&log).unwrap(), want.len() as u64 + 40);
        // Raw bytes, not records: compare through `entries` by position.
        for (i, w) in want.iter().enumerate() {
            let seq = i as u64 + 1;
            let (first, row) = row_at(&log, "t", seq).unwrap().unwrap();
            assert_eq!(entries(row.value()).unwrap()[(seq - first) as usize], w.as_slice(), "position {seq}");
        }
        let (first, row) = row_at(&log, "s", 40).unwrap().unwrap();
        assert_eq!(entries(row.value()).unwrap().len() as u64, 40 - first + 1, "the other tenant's rows hold its own");
    }

    /// A tenant whose key takes a page gets one row per entry, read back in order.
    #[test]
    fn a_tenant_key_longer_than_a_page_gets_a_row_per_entry() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("log.redb")).unwrap();
        let tenant = "t".repeat(PAGE_BYTES);
        let new = [entry(40, b'a'), entry(50, b'b'), entry(60, b'c')];
        let tx = db.begin_write().unwrap();
        let refs: Vec<&[u8]> = new.iter().map(Vec::as_slice).collect();
        assert_eq!(append(&mut tx.open_table(LOG).unwrap(), &tenant, 1, &refs).unwrap(), 3);
        tx.commit().unwrap();
        let tx = db.begin_read().unwrap();
        let log = tx.open_table(LOG).unwrap();
        for (i, want) in new.iter().enumerate() {
            let (first, row) = row_at(&log, &tenant, i as u64 + 1).unwrap().unwrap();
            assert_eq!((first, entries(row.value()).unwrap()), (i as u64 + 1, vec![want.as_slice()]));
        }
    }

    /// A packed row cut short is an error that says so, never fewer entries.
    #[test]
    fn a_truncated_packed_row_is_an_error() {
        let mut row = PACKED.to_vec();
        push(&mut row, b"{\"a\":1}").unwrap();
        assert_eq!(entries(&row).unwrap(), vec![b"{\"a\":1}".as_slice()]);
        for cut in PACKED.len() + 1..row.len() {
            let e = entries(&row[..cut]).unwrap_err();
            assert!(e.to_string().contains("truncated"), "{e}");
        }
        assert_eq!(entries(b"{\"a\":1}").unwrap(), vec![b"{\"a\":1}".as_slice()], "a row of one entry");
    }
}
