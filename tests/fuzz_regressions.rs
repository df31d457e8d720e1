//! Inputs the fuzz targets of `fuzz/` (scripts/fuzz.sh) found to break an invariant, kept
//! as ordinary tests so CI checks them without a fuzzing toolchain. Each test names its
//! target and what the input broke.

use vex_lens::domain::keys::parse_key;

/// The invariant of fuzz/purl: a key parses back to itself.
fn round_trips(input: &str) {
    if let Ok(k) = parse_key(input) {
        let again = parse_key(&k.key).unwrap_or_else(|e| panic!("{input:?} -> {:?} does not parse: {e}", k.key));
        assert_eq!(again, k, "{input:?}");
    }
}

/// fuzz/purl: a namespace segment `%2e` decoded to `.`, was written back as `/./`, and the
/// key then parsed to a different key (`.` segment dropped). Such purls are now invalid.
#[test]
fn purl_dot_namespace_segment() {
    let input = "pkg:mav//gn/agkepg:g:mavenpm/%2e/a@vers";
    round_trips(input);
    assert!(parse_key(input).is_err());
    assert!(parse_key("pkg:npm/%2e%2e/x@1").is_err());
    assert!(parse_key("pkg:npm/ns/%2e@1").is_err());
    round_trips("pkg:npm/ns/x.y@1");
}

/// fuzz/purl: `pkg:maven/./x` parsed to an empty namespace, written as `pkg:maven//x`,
/// which parsed back to a key without a namespace. Empty namespace segments are dropped.
#[test]
fn purl_empty_namespace() {
    let input = "pkg:maven/./aet,mavaet,mav";
    round_trips(input);
    round_trips("pkg:maven//aet,mavaet,mav");
    round_trips("pkg:npm/a//b/c@1");
    assert_eq!(parse_key("pkg:maven//x@1").unwrap().key, "pkg:maven/x@1");
}

/// fuzz/purl: `pkg:composer/./.\0#g!r` had a namespace of empty segments only; dropping
/// them left a composer purl without the namespace its type requires, so the key did not
/// parse back. Such purls are now invalid for types that require a namespace.
#[test]
fn purl_empty_namespace_of_a_type_that_requires_one() {
    let input = "pkg:composer/./.\0#g!r";
    round_trips(input);
    assert!(parse_key(input).is_err());
    assert!(parse_key("pkg:composer//x@1").is_err());
    assert_eq!(parse_key("pkg:composer/acme/x@1").unwrap().key, "pkg:composer/acme/x@1");
}

/// fuzz/purl: a CPE 2.2 URI component percent-decoded to an upper-case letter (`%4e`) after
/// the key was lower-cased, so the key parsed back to another key; a decoded `:` split the
/// component when read back. Decoded values are now lower-cased and escaped.
#[test]
fn cpe22_percent_decoded_components() {
    round_trips("cpe:/2.3e:box:pkg:n1.0:*pkg/:npm/pkg:ma\0%4e0t-");
    round_trips("cpe:/a:ven%3ador:pro%5cduct:1.0");
    round_trips("cpe:/a:ACME:Box%4E:1.0");
    assert_eq!(parse_key("cpe:/a:acme:box%4e:1.0").unwrap(), parse_key("cpe:/a:acme:boxn:1.0").unwrap());
}

/// fuzz/purl: a CPE component ending in a newline was kept in the key, which the parser
/// trims, so the key parsed back to another key. Whitespace and control characters make a
/// CPE invalid.
#[test]
fn cpe_whitespace_in_a_component() {
    let input = "cpe:2.3:a:me:bo*:*:*:*:*::**:*:\n:*";
    round_trips(input);
    assert!(parse_key(input).is_err());
    assert!(parse_key("cpe:2.3:a:acme:b ox:1.0:*:*:*:*:*:*:*").is_err());
    round_trips("cpe:2.3:a:acme:box:1.0:*:*:*:*:*:*:*");
}

/// fuzz/normalise: a CSAF `product_version_range` holding an `@` (`vers:generic/>=1@con=2.3`)
/// gave the name key `name:example company/abc@vers:generic/>=1@con=2.3`, which parsed back
/// split at its *last* `@`, into another package (`name:example company/abc%40vers:...`),
/// so the observation's artifact and package disagreed. A name key's package now ends at
/// its first `@` (vendor and product have theirs encoded as `%40`).
#[test]
fn name_key_version_holding_an_at_sign() {
    use vex_lens::domain::model::IngestContext;
    use vex_lens::domain::normalise::normalise_bytes;
    round_trips("name:example company/abc@vers:generic/>=1@con=2.3");
    let k = parse_key("name:example company/abc@vers:generic/>=1@con=2.3").unwrap();
    assert_eq!(k.package, "name:example company/abc");
    assert_eq!(k.version.as_deref(), Some("vers:generic/>=1@con=2.3"));
    round_trips("name:a%40b/c@1.0");
    assert_eq!(parse_key("name:a%40b/c@1.0").unwrap().package, "name:a%40b/c");
    let doc = br#"{"document": {"category": "csaf_vex", "csaf_version": "2.0",
        "publisher": {"category": "vendor", "name": "Example Company ProductCERT", "namespace": "https://psirt.example.com"},
        "title": "t", "tracking": {"current_release_date": "2022-03-03T11:00:00.000Z", "id": "X-1",
          "initial_release_date": "2022-03-03T11:00:00.000Z",
          "revision_history": [{"date": "2022-03-03T11:00:00.000Z", "number": "1", "summary": "s"}],
          "status": "final", "version": "1"}},
      "product_tree": {"branches": [{"category": "vendor", "name": "Example Company", "branches": [
        {"category": "product_name", "name": "ABC", "branches": [
          {"category": "product_version_range", "name": "vers:generic/>=1@con=2.3",
           "product": {"name": "Example Company ABC >=1.0|<=2.3", "product_id": "CSAFPID-0005"}}]}]}]},
      "vulnerabilities": [{"cve": "CVE-2021-44228", "product_status": {"known_not_affected": ["CSAFPID-0005"]}}]}"#;
    let d = normalise_bytes("crash.json", doc, &IngestContext::default(), 1 << 20).unwrap();
    assert!(!d.observations.is_empty(), "{:?}", d.diagnostics);
    for o in &d.observations {
        let k = parse_key(&o.artifact).unwrap();
        assert_eq!(*k.package, *o.package, "package of {}", o.artifact);
        assert_eq!(*k.key, *o.artifact);
    }
}

/// fuzz/purl: a `vers:` range ending in whitespace before the qualifiers (`@vers:maven/== ?x:`)
/// kept the space at the end of the key, which the parser trims, so the key parsed back to
/// another key. The range is trimmed.
#[test]
fn purl_vers_range_ending_in_whitespace() {
    let nul = "\0".repeat(61);
    round_trips(&format!("pkg:npm/!%4scrs%3{nul}A0pkman/G@/a@vers:maven/== ?x:"));
    round_trips("pkg:npm/a@vers:npm/<2.0.0 ?x:");
    round_trips("pkg:npm/a@vers:npm/<2.0.0%20");
    round_trips("pkg:npm/a@vers:npm/<2.0.0 ?b=1");
    round_trips("pkg:npm/a@vers:npm/<2.0.0%20#sub");
    round_trips("pkg:npm/a@vers:npm/<2.0.0 ");
    assert_eq!(
        parse_key("pkg:npm/a@vers:npm/<2.0.0 ?b=1").unwrap().key,
        parse_key("pkg:npm/a@vers:npm/<2.0.0?b=1").unwrap().key
    );
}

/// fuzz/purl: a `vers:` range holding `%23` decoded to `#`, written raw into the key, which
/// then parsed back with a subpath. A range holding `?` or `#` is invalid.
#[test]
fn purl_vers_range_holding_a_decoded_hash() {
    round_trips("pkg:npm/a@vers:maven/<=1.0%23x");
    assert!(parse_key("pkg:npm/a@vers:maven/<=1.0%23x").is_err());
    assert!(parse_key("pkg:npm/a@vers:maven/<=1.0%3Fx").is_err());
    round_trips("pkg:npm/a@vers:maven/<=1.0#sub/path");
    assert!(parse_key("pkg:npm/a@vers:maven/<=1.0#sub/path").is_ok());
}

/// fuzz/purl: a BOM-Link fragment ending in `%20` decoded to a trailing space at the end of
/// the key, which the parser trims, so the key parsed back to another key. The fragment is
/// trimmed.
#[test]
fn bomlink_fragment_ending_in_an_encoded_space() {
    round_trips("urn:cdx:a#compvnsreD:pm/<%20");
    round_trips("urn:cdx:a/1#comp%20");
    assert_eq!(parse_key("urn:cdx:a/1#comp%20").unwrap().key, "urn:cdx:a/1#comp");
    // Only the end: a fragment starting with whitespace and then `pkg:` is no purl, and
    // trimmed it would read back as one.
    round_trips("urn:cdx:abcc/1#\u{c}pkg:n/x@1");
}
