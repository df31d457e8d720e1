//! The three normalisers through format detection: any bytes give a document or a typed
//! error, never a panic; a normalised document's observations all have parseable keys.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vex_lens::domain::keys::parse_key;
use vex_lens::domain::model::IngestContext;
use vex_lens::domain::normalise::normalise_bytes;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = normalise_bytes("fuzz.json", data, &IngestContext::default(), 1 << 20) {
        for o in &doc.observations {
            let k = parse_key(&o.artifact).expect("an observation's artifact key parses");
            assert_eq!(k.package, o.package, "package of {}", o.artifact);
        }
    }
});
