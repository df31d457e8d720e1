//! The vers range parser and comparators: `<range>\n<version>` input; any input gives a
//! result or an error, never a panic, and membership is consistent with the comparators.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vex_lens::domain::vers::{self, Scheme};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let (range, version) = s.split_once('\n').unwrap_or((s, "1.0.0"));
    if let Ok(r) = vers::parse_range(range) {
        let _ = r.contains(version);
    }
    let _ = vers::from_loose(range, Scheme::Generic);
    for scheme in [Scheme::Npm, Scheme::Pypi, Scheme::Maven, Scheme::Deb, Scheme::Rpm, Scheme::Gem, Scheme::Generic] {
        if let (Ok(a), Ok(b)) = (vers::compare(scheme, range, version), vers::compare(scheme, version, range)) {
            assert_eq!(a, b.reverse(), "{scheme:?}: {range:?} vs {version:?}");
        }
        if let Ok(r) = vers::from_loose(range, scheme) {
            vers::validate(&r).unwrap_or_else(|e| panic!("{range:?} -> {r:?}: {e}"));
        }
    }
});
