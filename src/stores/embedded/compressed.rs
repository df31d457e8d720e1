//! The values of the embedded store's large tables (history entries, observations) as
//! zstd frames of their JSON, compressed with a dictionary of what such values share
//! (field names, enum values, id prefixes: a value is one record or one observation, too
//! small for zstd to learn them from the value alone). MongoDB's WiredTiger compresses
//! its blocks the same way by default.
//!
//! Invariants:
//! - A stored value is a zstd frame (it starts with zstd's magic number, which no JSON
//!   text starts with) or, written before compression, plain JSON; a frame names the
//!   dictionary it needs by id, or none (written before the dictionaries). [`decode`]
//!   reads all of them, so older stores need no rewrite.
//! - A shipped dictionary never changes (`dictionaries/<kind>-<id>.zdict`, made by
//!   `scripts/zstd_dictionaries.py`): a new one gets a new id, and the old one stays
//!   here for reading. A frame naming a dictionary this binary lacks is an error that
//!   says so, never a wrong value.

use super::json_err;
use crate::ports::StoreError;
use std::sync::OnceLock;
use zstd::dict::{DecoderDictionary, EncoderDictionary};

/// zstd's fastest level: the values are small and written on the ingest path.
const LEVEL: i32 = 1;

/// The first four bytes of every zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// The largest value [`decode`] inflates (a frame states its size; a value is one record
/// or one observation, far below this).
const MAX_VALUE_BYTES: usize = 256 * 1024 * 1024;

/// What a value is, and so which dictionary compresses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A history entry (`StoredRecord`).
    Record = 0,
    /// An observation.
    Observation = 1,
}

/// The dictionaries: (id, bytes), indexed by [`Kind`]. Ids are in the range zstd leaves
/// to private use (above 32767, below 2^31).
const DICTIONARIES: [(u32, &[u8]); 2] = [
    (1_447_382_017, include_bytes!("dictionaries/records-1447382017.zdict")),
    (1_447_382_018, include_bytes!("dictionaries/observations-1447382018.zdict")),
];

/// Each dictionary prepared once for compression at [`LEVEL`] and for decompression.
fn encoder(kind: Kind) -> &'static EncoderDictionary<'static> {
    static ENCODERS: [OnceLock<EncoderDictionary<'static>>; 2] = [OnceLock::new(), OnceLock::new()];
    ENCODERS[kind as usize].get_or_init(|| EncoderDictionary::copy(DICTIONARIES[kind as usize].1, LEVEL))
}

fn decoder(slot: usize) -> &'static DecoderDictionary<'static> {
    static DECODERS: [OnceLock<DecoderDictionary<'static>>; 2] = [OnceLock::new(), OnceLock::new()];
    DECODERS[slot].get_or_init(|| DecoderDictionary::copy(DICTIONARIES[slot].1))
}

thread_local! {
    // One context per thread and dictionary, reused: creating a zstd context per value
    // was 9% of a `serve --once` profile (ZSTD_createCCtx).
    static COMPRESSORS: std::cell::RefCell<[Option<zstd::bulk::Compressor<'static>>; 2]> =
        const { std::cell::RefCell::new([None, None]) };
    // The frame is written here first (room for zstd's bound on the output), then copied
    // out at its exact size: a value compresses to a fraction of its JSON, and the rows of
    // a batch wait in memory until their commit (zstd's own `compress` keeps the bound's
    // capacity in every value: 6-11 % of a `serve --once` heap peak).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    // Slot 0: frames without a dictionary; slot 1 + i: dictionary i.
    static DECOMPRESSORS: std::cell::RefCell<[Option<zstd::bulk::Decompressor<'static>>; 3]> =
        const { std::cell::RefCell::new([None, None, None]) };
}

fn zstd_err(what: &str) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Rejected(format!("{what}: {e}"))
}

/// `value`'s JSON, compressed with `kind`'s dictionary.
pub(super) fn encode<T: serde::Serialize>(kind: Kind, value: &T) -> Result<Vec<u8>, StoreError> {
    compress(kind, &serde_json::to_vec(value).map_err(json_err)?)
}

/// `json` (a value's JSON, already written), compressed with `kind`'s dictionary.
pub(super) fn compress(kind: Kind, json: &[u8]) -> Result<Vec<u8>, StoreError> {
    COMPRESSORS.with_borrow_mut(|cs| {
        let c = match &mut cs[kind as usize] {
            Some(c) => c,
            slot @ None => slot.insert(
                zstd::bulk::Compressor::with_prepared_dictionary(encoder(kind))
                    .map_err(zstd_err("creating a zstd context"))?,
            ),
        };
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            scratch.reserve(zstd::zstd_safe::compress_bound(json.len()));
            c.compress_to_buffer(json, scratch).map_err(zstd_err("compressing a value"))?;
            let frame = scratch.as_slice().to_vec();
            if scratch.capacity() > SCRATCH_KEPT_BYTES {
                *scratch = Vec::new();
            }
            Ok(frame)
        })
    })
}

/// The largest scratch buffer a thread keeps between values (one large record's frame is
/// not held for the rest of the run).
const SCRATCH_KEPT_BYTES: usize = 1024 * 1024;

/// The value `bytes` holds (a zstd frame of JSON, with or without a dictionary, or JSON).
pub(super) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    if !bytes.starts_with(&ZSTD_MAGIC) {
        return serde_json::from_slice(bytes).map_err(json_err);
    }
    let slot = match zstd::zstd_safe::get_dict_id_from_frame(bytes) {
        None => 0,
        Some(id) => match DICTIONARIES.iter().position(|(d, _)| *d == id.get()) {
            Some(i) => i + 1,
            None => {
                return Err(StoreError::Rejected(format!(
                    "a stored value was compressed with zstd dictionary {id}, which this vex-lens does not have \
                     (written by a newer version?)"
                )))
            }
        },
    };
    let json = DECOMPRESSORS.with_borrow_mut(|ds| {
        let d = match &mut ds[slot] {
            Some(d) => d,
            free @ None => free.insert(
                match slot {
                    0 => zstd::bulk::Decompressor::new(),
                    i => zstd::bulk::Decompressor::with_prepared_dictionary(decoder(i - 1)),
                }
                .map_err(zstd_err("creating a zstd context"))?,
            ),
        };
        d.decompress(bytes, MAX_VALUE_BYTES).map_err(zstd_err("decompressing a stored value"))
    })?;
    serde_json::from_slice(&json).map_err(json_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> serde_json::Value {
        serde_json::json!({"id": "a".repeat(64), "statements": vec![serde_json::json!({"status": "fixed"}); 8]})
    }

    #[test]
    fn values_round_trip_and_plain_json_still_reads() {
        let v = sample();
        for kind in [Kind::Record, Kind::Observation] {
            let bytes = encode(kind, &v).unwrap();
            assert!(bytes.starts_with(&ZSTD_MAGIC) && bytes.len() < serde_json::to_vec(&v).unwrap().len());
            let id = zstd::zstd_safe::get_dict_id_from_frame(&bytes).map(std::num::NonZeroU32::get);
            assert_eq!(id, Some(DICTIONARIES[kind as usize].0), "the frame names its dictionary");
            assert_eq!(decode::<serde_json::Value>(&bytes).unwrap(), v);
            assert_eq!(bytes.capacity(), bytes.len(), "a frame is held at its exact size");
            let truncated = &bytes[..bytes.len() - 3];
            assert!(matches!(decode::<serde_json::Value>(truncated), Err(StoreError::Rejected(_))));
        }
        assert_eq!(decode::<serde_json::Value>(&serde_json::to_vec(&v).unwrap()).unwrap(), v);
    }

    /// A value larger than the scratch buffer a thread keeps, then a small one: both round
    /// trip, each frame at its exact size.
    #[test]
    fn a_large_value_then_a_small_one_round_trip() {
        let large = serde_json::json!({"statements": (0..200_000).map(|i| format!("s{i}")).collect::<Vec<_>>()});
        assert!(serde_json::to_vec(&large).unwrap().len() > SCRATCH_KEPT_BYTES);
        for v in [large, sample()] {
            let bytes = encode(Kind::Record, &v).unwrap();
            assert_eq!(bytes.capacity(), bytes.len());
            assert_eq!(decode::<serde_json::Value>(&bytes).unwrap(), v);
        }
    }

    /// Frames written before the dictionaries (no dictionary id) still read.
    #[test]
    fn frames_without_a_dictionary_still_read() {
        let v = sample();
        let old = zstd::bulk::compress(&serde_json::to_vec(&v).unwrap(), LEVEL).unwrap();
        assert_eq!(zstd::zstd_safe::get_dict_id_from_frame(&old), None);
        assert_eq!(decode::<serde_json::Value>(&old).unwrap(), v);
    }

    /// A frame naming a dictionary this binary lacks is a clear error, not a wrong value.
    #[test]
    fn an_unknown_dictionary_is_named() {
        // The records dictionary under another id (a dictionary's id is bytes 4..8).
        let mut other = DICTIONARIES[0].1.to_vec();
        other[4..8].copy_from_slice(&7_777_777u32.to_le_bytes());
        let mut c = zstd::bulk::Compressor::with_dictionary(LEVEL, &other).unwrap();
        let frame = c.compress(&serde_json::to_vec(&sample()).unwrap()).unwrap();
        let e = decode::<serde_json::Value>(&frame).unwrap_err().to_string();
        assert!(e.contains("dictionary 7777777") && e.contains("does not have"), "{e}");
    }

    /// The dictionaries are what makes small values small: a record-like value compresses
    /// to well under what zstd makes of it alone.
    #[test]
    fn the_dictionary_shrinks_a_record() {
        let record = serde_json::json!({"changed_at_ms": 1765000000000i64, "record": {
            "aliases": [], "artifact": "pkg:npm/left-pad@1.3.0", "confidence_ppm": 1000000, "conflicts": [],
            "consensus_digest": format!("sha256:{}", "0".repeat(64)), "leading_status": "not_affected",
            "mode": "weighted", "package": "pkg:npm/left-pad", "status": "not_affected", "tenant": "default",
            "statements": [{"issuer": "vendor", "justification": "vulnerable_code_not_present",
                "observation_id": format!("sha256:{}", "1".repeat(64)), "role": "contributing",
                "signature": "unsigned", "status": "not_affected", "tier": "vendor", "weight_ppm": 1000000}],
            "vulnerability": "CVE-2024-12345"}, "version": {"epoch": 0, "offset": -1, "observations": 1}});
        let plain = zstd::bulk::compress(&serde_json::to_vec(&record).unwrap(), LEVEL).unwrap().len();
        let with = encode(Kind::Record, &record).unwrap().len();
        assert!(with * 10 < plain * 8, "with the dictionary {with} B, without {plain} B");
    }
}
