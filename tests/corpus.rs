//! The shared corpus (../shared/corpus): every document normalises without error into
//! the expected number of observations, and the consensus over it is deterministic.

use std::path::{Path, PathBuf};
use vex_lens::domain::consensus::{batch, ConsensusStatus};
use vex_lens::domain::model::{IngestContext, Observation, Status};
use vex_lens::domain::normalise::{normalise_bytes, DEFAULT_MAX_DOCUMENT_BYTES};
use vex_lens::domain::trust::{Mode, Policy};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus")
}

/// Observations per file: one per (statement, product) for OpenVEX, per (vulnerability,
/// product id in a status list) for CSAF, per (vulnerability, affects entry or version
/// entry) for CycloneDX. OpenVEX/vexhub counts were cross-checked with an independent
/// Python count of statement products (15,364 in all); two vexhub statements name two CVEs
/// each (GHSA/GO advisories aliasing both), so they give one observation more each
/// (CONSENSUS.md "Keys": one observation per CVE named): 15,366.
const COUNTS: &[(&str, usize)] = &[
    ("openvex/go-vex_v0.0.1-noversion.json", 2),
    ("openvex/go-vex_v0.0.1.json", 2),
    ("openvex/go-vex_v0.2.0.json", 5),
    ("openvex/go-vex_v001-1.vex.json", 1),
    ("openvex/go-vex_v001-2.vex.json", 1),
    ("openvex/go-vex_v020-1.vex.json", 1),
    ("openvex/go-vex_v020-2.vex.json", 1),
    ("openvex/vexctl_demo.vex.json", 2),
    ("openvex/vexctl_document1.vex.json", 1),
    ("openvex/vexctl_document2.vex.json", 1),
    ("openvex/vexctl_sample-1statement.openvex.json", 1),
    ("openvex/vexctl_sample-2vulns.openvex.json", 2),
    ("openvex/vexctl_sample-history.openvex.json", 2),
    ("csaf/2022-evd-uc-01-a-001.json", 1),
    ("csaf/2022-evd-uc-01-f-001.json", 1),
    ("csaf/2022-evd-uc-01-na-001.json", 1),
    ("csaf/2022-evd-uc-01-ui-001.json", 1),
    ("csaf/2022-evd-uc-02-na-001.json", 19),
    ("csaf/2022-evd-uc-03-ms-001.json", 19),
    ("csaf/2022-evd-uc-04-001.json", 3),
    ("csaf/2022-evd-uc-05-001.json", 1),
    ("csaf/2022-evd-uc-06-001.json", 7),
    ("csaf/2022-evd-uc-07-001.json", 10),
    ("csaf/2022-evd-uc-08-001.json", 21),
    ("csaf/2022-evd-uc-09-001.json", 4),
    ("csaf/go-vex_csaf-purl.json", 1),
    ("csaf/go-vex_csaf-relationships.json", 2),
    ("csaf/redhat_rhsa-2020_1358.json", 1474),
    ("csaf/sec-vex-2022-0001.json", 3),
    ("cyclonedx/CISA-Use-Cases_Case-1_vex-affected.json", 1),
    ("cyclonedx/CISA-Use-Cases_Case-1_vex-fixed.json", 1),
    ("cyclonedx/CISA-Use-Cases_Case-1_vex-not_affected.json", 1),
    ("cyclonedx/CISA-Use-Cases_Case-1_vex-under_investigation.json", 1),
    ("cyclonedx/CISA-Use-Cases_Case-2_vex.json", 19),
    ("cyclonedx/CISA-Use-Cases_Case-3_vex.json", 19),
    ("cyclonedx/CISA-Use-Cases_Case-4_vex.json", 3),
    ("cyclonedx/CISA-Use-Cases_Case-5_vex.json", 1),
    ("cyclonedx/CISA-Use-Cases_Case-6_vex.json", 7),
    ("cyclonedx/CISA-Use-Cases_Case-7_vex.json", 10),
    ("cyclonedx/CISA-Use-Cases_Case-8_vex.json", 24),
    ("cyclonedx/Use-Cases_Case-10_vex.json", 13),
    ("cyclonedx/Use-Cases_Case-11_vex.json", 19),
    ("cyclonedx/Use-Cases_Case-12_vex.json", 3),
    ("cyclonedx/Use-Cases_Case-13_vex.json", 3),
    ("cyclonedx/Use-Cases_Case-1_vex.json", 1),
    ("cyclonedx/Use-Cases_Case-2_vex.json", 1),
    ("cyclonedx/Use-Cases_Case-3_vex.json", 1),
    ("cyclonedx/Use-Cases_Case-4_vex.json", 1),
    ("cyclonedx/Use-Cases_Case-5_vex.json", 2),
    ("cyclonedx/Use-Cases_Case-6_vex.json", 3),
    ("cyclonedx/Use-Cases_Case-7_vex.json", 0),
    ("cyclonedx/Use-Cases_Case-8_vex.json", 4),
    ("cyclonedx/Use-Cases_Case-9_vex.json", 57),
    ("cyclonedx/vex.json", 1),
    ("vexhub/golang_github.com_aquasecurity_trivy_trivy.openvex.json", 22),
    ("vexhub/golang_github.com_harvester_docker-machine-driver-harvester_scan.openvex.json", 214),
    ("vexhub/golang_github.com_harvester_harvester-cloud-provider_scan.openvex.json", 218),
    ("vexhub/golang_github.com_harvester_harvester-csi-driver_scan.openvex.json", 311),
    ("vexhub/golang_github.com_harvester_harvester-installer_scan.openvex.json", 224),
    ("vexhub/golang_github.com_harvester_harvester-load-balancer_scan.openvex.json", 428),
    ("vexhub/golang_github.com_harvester_harvester-network-controller_scan.openvex.json", 455),
    ("vexhub/golang_github.com_harvester_harvester_scan.openvex.json", 384),
    ("vexhub/golang_github.com_harvester_networkfs-manager_scan.openvex.json", 171),
    ("vexhub/golang_github.com_harvester_node-disk-manager_scan.openvex.json", 202),
    ("vexhub/golang_github.com_harvester_node-manager_scan.openvex.json", 277),
    ("vexhub/golang_github.com_harvester_pcidevices_scan.openvex.json", 409),
    ("vexhub/golang_github.com_harvester_seeder_scan.openvex.json", 297),
    ("vexhub/golang_github.com_harvester_vm-import-controller_scan.openvex.json", 296),
    ("vexhub/golang_github.com_harvester_webhook_scan.openvex.json", 33),
    ("vexhub/golang_github.com_k3s-io_helm-set-status_scan.openvex.json", 4),
    ("vexhub/golang_github.com_k3s-io_k3s_scan.openvex.json", 806),
    ("vexhub/golang_github.com_k3s-io_kine_scan.openvex.json", 10),
    ("vexhub/golang_github.com_longhorn_backing-image-manager_scan.openvex.json", 153),
    ("vexhub/golang_github.com_longhorn_cli_scan.openvex.json", 162),
    ("vexhub/golang_github.com_longhorn_longhorn-engine_scan.openvex.json", 90),
    ("vexhub/golang_github.com_longhorn_longhorn-instance-manager_scan.openvex.json", 102),
    ("vexhub/golang_github.com_longhorn_longhorn-manager_scan.openvex.json", 343),
    ("vexhub/golang_github.com_longhorn_longhorn-share-manager_scan.openvex.json", 269),
    ("vexhub/golang_github.com_rancher_aks-operator_scan.openvex.json", 215),
    ("vexhub/golang_github.com_rancher_backup-restore-operator_scan.openvex.json", 393),
    ("vexhub/golang_github.com_rancher_backup-restore-operator_tests_scan.openvex.json", 911),
    ("vexhub/golang_github.com_rancher_cis-operator_scan.openvex.json", 79),
    ("vexhub/golang_github.com_rancher_confd_scan.openvex.json", 28),
    ("vexhub/golang_github.com_rancher_csp-adapter_scan.openvex.json", 198),
    ("vexhub/golang_github.com_rancher_eks-operator_scan.openvex.json", 295),
    ("vexhub/golang_github.com_rancher_fleet_pkg_apis_scan.openvex.json", 724),
    ("vexhub/golang_github.com_rancher_fleet_scan.openvex.json", 572),
    ("vexhub/golang_github.com_rancher_gitjob_pkg_apis_scan.openvex.json", 66),
    ("vexhub/golang_github.com_rancher_gitjob_scan.openvex.json", 44),
    ("vexhub/golang_github.com_rancher_gke-operator_scan.openvex.json", 149),
    ("vexhub/golang_github.com_rancher_helm-project-operator_scan.openvex.json", 34),
    ("vexhub/golang_github.com_rancher_image-build-rke2-cloud-provider_scan.openvex.json", 864),
    ("vexhub/golang_github.com_rancher_kube-api-auth_scan.openvex.json", 187),
    ("vexhub/golang_github.com_rancher_local-path-provisioner_scan.openvex.json", 149),
    ("vexhub/golang_github.com_rancher_machine_scan.openvex.json", 326),
    ("vexhub/golang_github.com_rancher_prometheus-federator_scan.openvex.json", 183),
    ("vexhub/golang_github.com_rancher_rancher_pkg_apis_scan.openvex.json", 276),
    ("vexhub/golang_github.com_rancher_rancher_pkg_client_scan.openvex.json", 187),
    ("vexhub/golang_github.com_rancher_rancher_scan.openvex.json", 578),
    ("vexhub/golang_github.com_rancher_rke2_scan.openvex.json", 1666),
    ("vexhub/golang_github.com_rancher_support-bundle-kit_scan.openvex.json", 37),
    ("vexhub/golang_github.com_rancher_system-agent_scan.openvex.json", 300),
    ("vexhub/golang_github.com_rancher_system-upgrade-controller_scan.openvex.json", 187),
    ("vexhub/golang_github.com_rancher_telemetry_scan.openvex.json", 56),
    ("vexhub/golang_github.com_rancher_ui-plugin-operator_scan.openvex.json", 12),
    ("vexhub/golang_github.com_rancher_webhook_scan.openvex.json", 646),
    ("vexhub/golang_github.com_rancher_wharfie_scan.openvex.json", 39),
    ("vexhub/oci_ghcr.io_aquasecurity_trivy_oci.openvex.json", 21),
    ("vexhub/oci_index.docker.io_aquasec_trivy_oci.openvex.json", 21),
    ("vexhub/oci_public.ecr.aws_aquasecurity_trivy_oci.openvex.json", 21),
];

fn normalise_file(rel: &str) -> Vec<Observation> {
    let path = corpus().join(rel);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match normalise_bytes(rel, &bytes, &IngestContext::default(), DEFAULT_MAX_DOCUMENT_BYTES) {
        Ok(d) => d.observations,
        Err(e) => panic!("{rel}: {e}"),
    }
}

#[test]
fn every_corpus_file_normalises_to_the_expected_count() {
    let mut listed: Vec<String> = Vec::new();
    for dir in ["openvex", "csaf", "cyclonedx", "vexhub"] {
        for e in std::fs::read_dir(corpus().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "json") {
                listed.push(format!("{dir}/{}", p.file_name().unwrap().to_string_lossy()));
            }
        }
    }
    listed.sort();
    let mut expected: Vec<String> = COUNTS.iter().map(|(f, _)| f.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected, "the corpus changed: update COUNTS");
    let mut failures = Vec::new();
    for (rel, n) in COUNTS {
        let got = normalise_file(rel).len();
        if got != *n {
            failures.push(format!("{rel}: {got} observations, expected {n}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(COUNTS.iter().map(|(_, n)| n).sum::<usize>(), 17_130);
}

fn load_all(order: &[&(&str, usize)]) -> Vec<Observation> {
    order.iter().flat_map(|(rel, _)| normalise_file(rel)).collect()
}

#[test]
fn corpus_consensus_is_byte_identical_in_any_document_order() {
    let policy = Policy::default();
    let forward: Vec<&(&str, usize)> = COUNTS.iter().collect();
    let mut reversed = forward.clone();
    reversed.reverse();
    // An interleaving: odd positions first, then even.
    let mut interleaved: Vec<&(&str, usize)> = forward.iter().skip(1).step_by(2).copied().collect();
    interleaved.extend(forward.iter().step_by(2).copied());
    let render = |obs: Vec<Observation>| -> Vec<String> {
        let (records, errors) = batch(obs, &policy, false);
        assert!(errors.is_empty(), "{errors:?}");
        records.iter().map(|r| r.to_canonical_json().unwrap()).collect()
    };
    let a = render(load_all(&forward));
    assert!(a.len() > 40_000, "{} records", a.len());
    assert_eq!(a, render(load_all(&reversed)));
    assert_eq!(a, render(load_all(&interleaved)));
    // Observations shuffled inside the stream too.
    let mut obs = load_all(&forward);
    obs.reverse();
    let mid = obs.len() / 3;
    obs.rotate_left(mid);
    assert_eq!(a, render(obs));
}

/// go-vex's merge pairs: `most_recent` gives the effective status OpenVEX's "latest
/// statement wins" rule gives (computed here independently, from the raw JSON).
#[test]
fn most_recent_matches_openvex_latest_statement_wins_on_merge_pairs() {
    let pairs = [
        ("openvex/go-vex_v001-1.vex.json", "openvex/go-vex_v001-2.vex.json"),
        ("openvex/go-vex_v020-1.vex.json", "openvex/go-vex_v020-2.vex.json"),
        ("openvex/vexctl_document1.vex.json", "openvex/vexctl_document2.vex.json"),
    ];
    let policy = Policy::new(Mode::MostRecent, Default::default(), Default::default());
    let mut checked = 0;
    for (a, b) in pairs {
        // Independent reference: the latest statement (by timestamp) per (product, vuln).
        let mut latest: std::collections::BTreeMap<(String, String), (vex_lens::domain::timestamp::Timestamp, String)> =
            Default::default();
        for rel in [a, b] {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(corpus().join(rel)).unwrap()).unwrap();
            let doc_ts = v.get("timestamp").and_then(|t| t.as_str());
            for st in v["statements"].as_array().unwrap() {
                let t = st.get("timestamp").and_then(|t| t.as_str()).or(doc_ts).unwrap();
                let t = vex_lens::domain::timestamp::Timestamp::parse(t).unwrap();
                let vuln = match &st["vulnerability"] {
                    serde_json::Value::String(s) => s.clone(),
                    o => o["name"].as_str().unwrap().to_string(),
                };
                for p in st["products"].as_array().unwrap() {
                    let id = p.as_str().map(str::to_string).unwrap_or_else(|| p["@id"].as_str().unwrap().to_string());
                    let status = st["status"].as_str().unwrap().to_string();
                    let e = latest.entry((id, vuln.clone())).or_insert((t, status.clone()));
                    if t > e.0 {
                        *e = (t, status);
                    }
                }
            }
        }
        let mut obs = normalise_file(a);
        obs.extend(normalise_file(b));
        let (records, _) = batch(obs, &policy, false);
        for ((product, vuln), (_, status)) in &latest {
            let r = records
                .iter()
                .find(|r| r.artifact == *product && r.vulnerability == *vuln)
                .unwrap_or_else(|| panic!("no record for {product} {vuln}"));
            assert_eq!(r.status.as_str(), status, "{a} + {b}: {product} {vuln}");
            checked += 1;
        }
    }
    assert!(checked >= 3);
}

#[test]
fn the_merge_pair_history_keeps_the_superseded_statement() {
    let mut obs = normalise_file("openvex/go-vex_v001-1.vex.json");
    obs.extend(normalise_file("openvex/go-vex_v001-2.vex.json"));
    let (records, _) = batch(obs, &Policy::default(), false);
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.status, ConsensusStatus::Fixed);
    assert_eq!(r.statements.len(), 2);
    assert_eq!(r.statements.iter().filter(|s| s.status == Status::UnderInvestigation).count(), 1);
    assert!(r
        .statements
        .iter()
        .any(|s| matches!(s.reason, Some(vex_lens::domain::consensus::Reason::Superseded { .. }))));
}
