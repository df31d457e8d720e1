//! Keys from names (src/domain/names.rs): any string, read as an RPM NEVRA, a Debian
//! `name_version_arch` or an image reference (with and without an architecture branch),
//! gives a package or a reason, never a panic; every key made parses back to itself, its
//! package is the key without version and qualifiers, and a version-less key of the same
//! package applies to it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vex_lens::domain::keys::{parse_key, ArtifactKey};
use vex_lens::domain::names::{image_reference_key, parse_deb, parse_nevra};

fn check(input: &str, k: &ArtifactKey) {
    let again = parse_key(&k.key).unwrap_or_else(|e| panic!("{input:?} -> {:?} does not parse: {e}", k.key));
    assert_eq!(&again, k, "{input:?}");
    assert!(k.key.starts_with(&k.package), "{input:?}: {} is not under {}", k.key, k.package);
    let bare = parse_key(&k.package).unwrap_or_else(|e| panic!("{input:?}: package {:?} does not parse: {e}", k.package));
    assert!(bare.applies_to(k), "{input:?}: {} does not cover {}", bare.key, k.key);
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    // The first line, if any, is the architecture branch.
    let (arch, name) = match s.split_once('\n') {
        Some((a, n)) => (Some(a), n),
        None => (None, s),
    };
    for ns in ["redhat", "Rocky", "ciq"] {
        if let Ok(p) = parse_nevra(name, arch) {
            assert_eq!(p.ty, "rpm");
            if let Ok(k) = p.key(ns) {
                check(name, &k);
            }
        }
        if let Ok(p) = parse_deb(name, arch) {
            assert_eq!(p.ty, "deb");
            if let Ok(k) = p.key(ns) {
                check(name, &k);
            }
        }
    }
    if let Ok(k) = image_reference_key(name) {
        check(name, &k);
    }
});
