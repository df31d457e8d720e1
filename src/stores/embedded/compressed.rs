//! The values of the embedded store's large tables (history entries, observations) as
//! zstd frames of their JSON: the record and observation JSON repeats its field names
//! and ids, and compresses about 3x (MongoDB's WiredTiger compresses its blocks the same
//! way by default).
//!
//! Invariant: a stored value is either a zstd frame (it starts with zstd's magic number,
//! which no JSON text starts with) or, written before this module, plain JSON; [`decode`]
//! reads both, so older stores need no rewrite.

use super::json_err;
use crate::ports::StoreError;

/// zstd's fastest level: the values are small and written on the ingest path.
const LEVEL: i32 = 1;

/// The first four bytes of every zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// The largest value [`decode`] inflates (a frame states its size; a value is one record
/// or one observation, far below this).
const MAX_VALUE_BYTES: usize = 256 * 1024 * 1024;

thread_local! {
    // One context per thread, reused: creating a zstd context per value was 9% of a
    // `serve --once` profile (ZSTD_createCCtx).
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn zstd_err(what: &str) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Rejected(format!("{what}: {e}"))
}

/// `value`'s JSON, compressed.
pub(super) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(value).map_err(json_err)?;
    COMPRESSOR.with_borrow_mut(|c| {
        let c = match c {
            Some(c) => c,
            None => c.insert(zstd::bulk::Compressor::new(LEVEL).map_err(zstd_err("creating a zstd context"))?),
        };
        c.compress(&json).map_err(zstd_err("compressing a value"))
    })
}

/// The value `bytes` holds (a zstd frame of JSON, or JSON).
pub(super) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    if !bytes.starts_with(&ZSTD_MAGIC) {
        return serde_json::from_slice(bytes).map_err(json_err);
    }
    let json = DECOMPRESSOR.with_borrow_mut(|d| {
        let d = match d {
            Some(d) => d,
            None => d.insert(zstd::bulk::Decompressor::new().map_err(zstd_err("creating a zstd context"))?),
        };
        d.decompress(bytes, MAX_VALUE_BYTES).map_err(zstd_err("decompressing a stored value"))
    })?;
    serde_json::from_slice(&json).map_err(json_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_plain_json_still_reads() {
        let v =
            serde_json::json!({"id": "a".repeat(64), "statements": vec![serde_json::json!({"status": "fixed"}); 8]});
        let bytes = encode(&v).unwrap();
        assert!(bytes.starts_with(&ZSTD_MAGIC) && bytes.len() < serde_json::to_vec(&v).unwrap().len());
        assert_eq!(decode::<serde_json::Value>(&bytes).unwrap(), v);
        assert_eq!(decode::<serde_json::Value>(&serde_json::to_vec(&v).unwrap()).unwrap(), v);
        let truncated = &bytes[..bytes.len() - 3];
        assert!(matches!(decode::<serde_json::Value>(truncated), Err(StoreError::Rejected(_))));
    }
}
