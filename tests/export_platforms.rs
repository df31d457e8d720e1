//! The OpenVEX export keeps platforms (issue 17 item 6): each (package, platform) of a real
//! distro feed (CIQ's CSAF VEX, `../shared/corpus/csaf-ciq/`) is its own OpenVEX product
//! whose purl names the platform (`distro` qualifier, else `platform`), never a
//! subcomponent. The exported
//! ids are read back by an independent purl parser, PyPI's `packageurl-python` (installed
//! in a venv under the services directory), not by this crate's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use vex_lens::domain::consensus::batch;
use vex_lens::domain::model::{IngestContext, Observation};
use vex_lens::domain::normalise::{normalise_bytes, DEFAULT_MAX_DOCUMENT_BYTES};
use vex_lens::domain::trust::Policy;

const CIQ: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/csaf-ciq");
const PACKAGEURL_PYTHON: &str = "0.16.0";

/// A venv with packageurl-python (created once).
fn python() -> PathBuf {
    let base = std::env::var("VEXLENS_SERVICES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(".services"));
    let venv = base.join(format!("venv-packageurl-{PACKAGEURL_PYTHON}"));
    let py = venv.join("bin/python");
    if !py.exists() {
        std::fs::create_dir_all(&base).unwrap();
        let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().unwrap().success();
        assert!(ok, "python3 -m venv {}", venv.display());
        let out = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", &format!("packageurl-python=={PACKAGEURL_PYTHON}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "pip install packageurl-python: {}", String::from_utf8_lossy(&out.stderr));
    }
    py
}

#[test]
fn each_package_on_a_platform_is_its_own_exported_product_with_the_platform_in_its_purl() {
    let mut obs: Vec<Observation> = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(CIQ).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    for path in names {
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        obs.extend(
            normalise_bytes(&name, &bytes, &IngestContext::default(), DEFAULT_MAX_DOCUMENT_BYTES).unwrap().observations,
        );
    }
    let (records, errors) = batch(obs.clone(), &Policy::default(), false);
    assert!(errors.is_empty(), "{errors:?}");
    let texts = vex_lens::export::texts_of(&records, &obs);
    let doc = vex_lens::export::openvex::document(&records, &texts, "test").unwrap().unwrap();
    let statements = doc["statements"].as_array().unwrap();
    assert_eq!(statements.len(), records.len());
    let mut ids = Vec::new();
    for s in statements {
        let products = s["products"].as_array().unwrap();
        assert_eq!(products.len(), 1);
        assert!(products[0].get("subcomponents").is_none(), "a platform is not a subcomponent: {s}");
        ids.push(products[0]["@id"].as_str().unwrap().to_string());
    }
    let rpm: Vec<&String> = ids.iter().filter(|i| i.starts_with("pkg:rpm/")).collect();
    assert!(rpm.len() > 500, "{} rpm products", rpm.len());
    // Read back by packageurl-python: (type, namespace, name, version, distro) per id.
    let input = rpm.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n");
    let script = r#"
import sys
from packageurl import PackageURL
for line in sys.stdin.read().splitlines():
    p = PackageURL.from_string(line)
    print("\t".join([p.type, p.namespace or "", p.name, p.version or "", (p.qualifiers or {}).get("distro", ""), (p.qualifiers or {}).get("platform", "")]))
"#;
    let tmp = tempfile::tempdir().unwrap();
    let ids_file = tmp.path().join("ids.txt");
    std::fs::write(&ids_file, input).unwrap();
    let out =
        Command::new(python()).args(["-c", script]).stdin(std::fs::File::open(&ids_file).unwrap()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let parsed: Vec<Vec<String>> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| l.split('\t').map(str::to_string).collect()).collect();
    assert_eq!(parsed.len(), rpm.len());
    let mut by_platform = BTreeSet::new();
    for p in &parsed {
        assert_eq!(p[0], "rpm");
        // `distro` where the platform table knows the platform, else `platform` (CIQ's
        // FIPS platform has no CPE: its name key).
        assert!(!p[4].is_empty() || p[5].starts_with("name:"), "no platform in {p:?}");
        by_platform.insert((p[1].clone(), p[2].clone(), format!("{}{}", p[4], p[5])));
    }
    // bind on CentOS 7.9 and on Rocky 8.6 (say) are two products: more (package,
    // platform) pairs than packages.
    let packages: BTreeSet<(String, String)> = parsed.iter().map(|p| (p[1].clone(), p[2].clone())).collect();
    assert!(by_platform.len() > packages.len(), "{} vs {}", by_platform.len(), packages.len());
    let distros: BTreeSet<&str> = by_platform.iter().map(|(_, _, d)| d.as_str()).collect();
    assert!(distros.contains("rocky-8.6") && distros.contains("centos-7.9"), "{distros:?}");
}
