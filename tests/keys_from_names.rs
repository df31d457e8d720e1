//! Keys from names on real distro feeds (issue 18, "Done when"): every NEVRA product of
//! CIQ's CSAF VEX sample (`../shared/corpus/csaf-ciq/`) yields a `pkg:rpm` key, and the
//! distinct package keys equal the distinct (namespace, RPM name) set that this test
//! computes on its own from the product trees (its own walk, its own NEVRA split from the
//! architecture branch, its own platform map), not through the product's parser.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use vex_lens::domain::model::{DiagnosticCode, IngestContext, Observation};
use vex_lens::domain::normalise::{normalise_bytes, DEFAULT_MAX_DOCUMENT_BYTES};

fn corpus(dir: &str) -> Vec<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no documents", d.display());
    files
}

/// Every product of the tree: id -> (architecture branch, vendor branch, name).
fn walk(
    branches: &serde_json::Value,
    arch: Option<&str>,
    vendor: Option<&str>,
    out: &mut BTreeMap<String, (Option<String>, Option<String>, String)>,
) {
    for b in branches.as_array().into_iter().flatten() {
        let (mut arch, mut vendor) = (arch, vendor);
        match b["category"].as_str() {
            Some("architecture") => arch = b["name"].as_str(),
            Some("vendor") => vendor = b["name"].as_str(),
            _ => {}
        }
        if let Some(p) = b.get("product") {
            out.insert(
                p["product_id"].as_str().unwrap().to_string(),
                (arch.map(str::to_string), vendor.map(str::to_string), p["name"].as_str().unwrap().to_string()),
            );
        }
        walk(&b["branches"], arch, vendor, out);
    }
}

/// The RPM name of a product under an architecture branch: a bare name under `src`, else
/// the name with `.<arch>` and the last two `-` fields (version, release) removed.
fn rpm_name(arch: &str, name: &str) -> String {
    let Some(nvr) = name.strip_suffix(&format!(".{arch}")) else {
        assert_eq!(arch, "src", "{name} does not end in .{arch}");
        return name.to_string();
    };
    let mut parts: Vec<&str> = nvr.rsplitn(3, '-').collect();
    assert_eq!(parts.len(), 3, "{name}");
    parts.pop().unwrap().to_string()
}

/// The test's own platform map: CPE product -> purl namespace (docs/consensus.md
/// "Platforms"); any other platform: the lower-cased vendor branch.
fn namespace(platform_cpe: Option<&str>, vendor: &str) -> String {
    let product = platform_cpe.and_then(|c| c.split(':').nth(4));
    match product {
        Some("rocky_linux_from_ciq_lts") => "rocky".into(),
        Some("centos_linux_bridge") => "centos".into(),
        _ => vendor.to_lowercase(),
    }
}

fn normalise(path: &Path) -> (Vec<Observation>, Vec<DiagnosticCode>) {
    let bytes = std::fs::read(path).unwrap();
    let d = normalise_bytes(&path.display().to_string(), &bytes, &IngestContext::default(), DEFAULT_MAX_DOCUMENT_BYTES)
        .unwrap_or_else(|e| panic!("{e}"));
    (d.observations, d.diagnostics.iter().map(|x| x.code).collect())
}

#[test]
fn every_ciq_nevra_product_is_a_pkg_rpm_key_of_the_right_namespace_and_name() {
    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    let mut got: BTreeSet<(String, String)> = BTreeSet::new();
    let (mut named, mut observations) = (0usize, 0usize);
    for path in corpus("csaf-ciq") {
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let mut products = BTreeMap::new();
        walk(&doc["product_tree"]["branches"], None, None, &mut products);
        let cpe = |id: &str| -> Option<String> {
            fn find(b: &serde_json::Value, id: &str) -> Option<String> {
                for x in b.as_array().into_iter().flatten() {
                    if x["product"]["product_id"].as_str() == Some(id) {
                        return x["product"]["product_identification_helper"]["cpe"].as_str().map(str::to_string);
                    }
                    if let Some(c) = find(&x["branches"], id) {
                        return Some(c);
                    }
                }
                None
            }
            find(&doc["product_tree"]["branches"], id)
        };
        let relationships: BTreeMap<&str, (&str, &str)> = doc["product_tree"]["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["full_product_name"]["product_id"].as_str().unwrap(),
                    (r["product_reference"].as_str().unwrap(), r["relates_to_product_reference"].as_str().unwrap()),
                )
            })
            .collect();
        for v in doc["vulnerabilities"].as_array().unwrap() {
            for list in v["product_status"].as_object().unwrap().values() {
                for pid in list.as_array().unwrap() {
                    let (component, platform) = relationships[pid.as_str().unwrap()];
                    let (arch, vendor, name) = &products[component];
                    let arch = arch.as_deref().expect("every CIQ package is under an architecture branch");
                    expected.insert((
                        namespace(cpe(platform).as_deref(), vendor.as_deref().unwrap()),
                        rpm_name(arch, name),
                    ));
                    named += 1;
                }
            }
        }
        let (obs, codes) = normalise(&path);
        assert!(!codes.contains(&DiagnosticCode::UnparsedPackageName), "{}: {codes:?}", path.display());
        assert!(!codes.contains(&DiagnosticCode::UnmatchedProduct), "{}: {codes:?}", path.display());
        for o in &obs {
            assert!(o.artifact.starts_with("pkg:rpm/"), "{}: {}", path.display(), o.artifact);
            let p: packageurl::PackageUrl = o.package.parse().unwrap();
            assert_eq!(p.version(), None, "{}", o.package);
            got.insert((p.namespace().unwrap().to_string(), p.name().to_string()));
        }
        observations += obs.len();
    }
    assert_eq!(observations, named, "one observation per product status");
    assert_eq!(got, expected);
    // The sample's figures, for the record: a few hundred RPM names, not one package per NEVRA.
    assert!(expected.len() > 50 && expected.len() * 2 < named, "{} packages for {named} statuses", expected.len());
    eprintln!("{} statuses, {} packages", named, expected.len());
    assert!(got.iter().any(|(_, n)| n == "OpenEXR"), "case is kept: {got:?}");
    assert!(got.iter().any(|(ns, _)| ns == "centos") && got.iter().any(|(ns, _)| ns == "ciq"), "{got:?}");
}

#[test]
fn a_source_claim_applies_to_the_binary_of_the_same_name_and_versions_stay_outside_the_package() {
    use vex_lens::domain::keys::parse_key;
    let mut src = None;
    let mut bin = None;
    for path in corpus("csaf-ciq") {
        for o in normalise(&path).0 {
            let k = parse_key(&o.artifact).unwrap();
            assert_eq!(k.package, *o.package);
            match k.qualifiers.get("arch").map(String::as_str) {
                None => src = src.or(Some(k)),
                Some("x86_64") => bin = bin.or(Some(k)),
                _ => {}
            }
        }
    }
    let (src, bin) = (src.expect("a bare source package"), bin.expect("a binary RPM"));
    assert_eq!(src.version, None, "a bare source name is version-less: {}", src.key);
    assert!(bin.version.as_deref().is_some_and(|v| v.contains('-')), "{}", bin.key);
    // A binary of the same name on the source claim's platform (issue 17: the platform is
    // part of the key; a claim about a package on a platform applies only there).
    let platform = match src.platform() {
        Some(vex_lens::domain::keys::PlatformTag::Distro(d)) => format!("&distro={d}"),
        Some(vex_lens::domain::keys::PlatformTag::Key(k)) => {
            format!("&platform={}", percent_encoding::utf8_percent_encode(&k, percent_encoding::NON_ALPHANUMERIC))
        }
        None => String::new(),
    };
    let same_name = parse_key(&format!("{}@1.0-1.el8?arch=x86_64{platform}", src.package)).unwrap();
    assert!(src.applies_to(&same_name), "{} on {}", src.key, same_name.key);
    if !platform.is_empty() {
        let elsewhere = parse_key(&format!("{}@1.0-1.el8?arch=x86_64&distro=elsewhere-1", src.package)).unwrap();
        assert!(!src.applies_to(&elsewhere), "{} applies only on its platform, not {}", src.key, elsewhere.key);
    }
}

#[test]
fn red_hat_rpms_are_keyed_in_the_redhat_namespace() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/csaf/redhat_rhsa-2020_1358.json");
    let (obs, codes) = normalise(&path);
    assert!(!codes.contains(&DiagnosticCode::UnparsedPackageName), "{codes:?}");
    let rpm: Vec<&Observation> = obs.iter().filter(|o| o.artifact.starts_with("pkg:rpm/")).collect();
    assert!(!rpm.is_empty());
    assert!(
        rpm.iter().all(|o| o.package.starts_with("pkg:rpm/redhat/")),
        "{:?}",
        rpm.iter().map(|o| &o.package).collect::<Vec<_>>()
    );
    // The NEVRAs spell epoch 0 (`hivex-0:1.3.15-...`): it is dropped, as RPM reads no epoch as 0.
    assert!(rpm.iter().all(|o| !o.artifact.contains("epoch=0")));
    assert!(rpm.iter().any(|o| o.artifact.contains("arch=src")));
}
