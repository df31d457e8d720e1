//! The purl / artifact-key parser: any string gives a key or an error, never a panic, and
//! a key's normalised form parses back to the same key (normalisation is idempotent).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vex_lens::domain::keys::parse_key;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(k) = parse_key(s) {
        let again = parse_key(&k.key).unwrap_or_else(|e| panic!("{s:?} -> {:?} does not parse: {e}", k.key));
        assert_eq!(again, k, "{s:?}");
        let _ = k.applies_to(&again);
    }
});
