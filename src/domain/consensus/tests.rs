//! Unit and property tests of the consensus (CONSENSUS.md "Properties").

use super::*;
use crate::domain::canonical;
use crate::domain::keys::parse_key;
use crate::domain::model::{EntryKind, IssuerSource, Provenance, Signature, SignatureReason, TimestampSource};
use crate::domain::model::{Justification, SignatureStatus, SourceFormat, Status};
use crate::domain::timestamp::Timestamp;
use crate::domain::trust::{Issuer, IssuerDirectory, Knobs, TenantOverride};
use crate::domain::trust::{Mode, Policy};
use proptest::prelude::*;
use std::collections::BTreeMap;

pub(super) fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

pub(super) fn obs(issuer: Option<&str>, artifact: &str, vuln: &str, status: Status, t: &str) -> Observation {
    let k = parse_key(artifact).unwrap();
    Observation {
        id: "".into(),
        kind: EntryKind::Statement,
        tenant: "default".into(),
        issuer: issuer.map(Into::into),
        issuer_source: if issuer.is_some() { IssuerSource::Document } else { IssuerSource::None },
        artifact: k.key.into(),
        package: k.package.into(),
        scope: vec![],
        vulnerability: vuln.into(),
        aliases: vec![vuln.into()],
        status,
        status_original: status.as_str().into(),
        justification: (status == Status::NotAffected).then_some(Justification::VulnerableCodeNotPresent),
        justification_original: None,
        impact_statement: None,
        action_statement: None,
        timestamp: ts(t),
        timestamp_source: TimestampSource::Statement,
        document_id: None,
        document_version: None,
        document_digest: format!(
            "sha256:{}",
            crate::domain::canonical::sha256_hex(format!("{issuer:?}{artifact}{t}").as_bytes())
        )
        .into(),
        position: 0,
        format: SourceFormat::Openvex,
        signature: Signature::default(),
        provenance: Provenance::default(),
    }
    .with_id()
    .unwrap()
}

fn issuer(id: &str, tier: Tier, weight: Option<f64>) -> Issuer {
    Issuer {
        id: id.into(),
        display_name: String::new(),
        tier,
        weight,
        aliases: vec![],
        keys: vec![],
        tenants: Default::default(),
    }
}

fn policy(mode: Mode) -> Policy {
    Policy::new(
        mode,
        IssuerDirectory {
            issuers: vec![
                issuer("vendor", Tier::Authoritative, None),
                issuer("distro", Tier::Trusted, None),
                issuer("scanner", Tier::Known, None),
                issuer("randomer", Tier::Untrusted, None),
            ],
        },
        Knobs::default(),
    )
}

fn one(obs: Vec<Observation>, p: &Policy) -> ConsensusRecord {
    let (r, e) = batch(obs, p, true);
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(r.len(), 1, "{r:#?}");
    r.into_iter().next().unwrap()
}

const A: &str = "pkg:npm/left-pad@1.0.0";

#[test]
fn weights_are_the_product_of_factors_in_ppm() {
    let r = one(
        vec![
            obs(Some("vendor"), A, "CVE-1", Status::NotAffected, "2024-04-01T00:00:00Z"),
            // 90 days older: freshness 0.5.
            obs(Some("distro"), A, "CVE-1", Status::NotAffected, "2024-01-02T00:00:00Z"),
        ],
        &policy(Mode::WeightedVote),
    );
    let v = r.statements.iter().find(|e| *e.issuer == *"vendor").unwrap();
    assert_eq!(
        (v.factors.issuer_ppm, v.factors.signature_ppm, v.factors.freshness_ppm),
        (1_000_000, 700_000, 1_000_000)
    );
    assert_eq!(v.weight_ppm, 700_000);
    let d = r.statements.iter().find(|e| *e.issuer == *"distro").unwrap();
    assert_eq!(d.factors.freshness_ppm, 500_000);
    assert_eq!(d.weight_ppm, 280_000); // 0.8 x 0.7 x 0.5
    assert_eq!(r.evaluation_time.to_string(), "2024-04-01T00:00:00Z");
    assert_eq!(r.status, ConsensusStatus::NotAffected);
    assert_eq!(r.confidence_ppm, 1_000_000);
    assert_eq!(r.justification, Some(Justification::VulnerableCodeNotPresent));
    assert!(r.conflicts.is_empty());
    assert_eq!(r.consensus_digest, r.compute_digest().unwrap());
}

#[test]
fn freshness_has_a_floor_and_no_bonus_for_the_future() {
    let p = policy(Mode::WeightedVote);
    let r = one(
        vec![
            obs(Some("vendor"), A, "CVE-1", Status::Fixed, "2024-01-01T00:00:00Z"),
            obs(Some("scanner"), A, "CVE-1", Status::Fixed, "2020-01-01T00:00:00Z"),
            // An unknown issuer's future-dated statement does not move the evaluation time.
            obs(Some("somebody"), A, "CVE-1", Status::Fixed, "2030-01-01T00:00:00Z"),
        ],
        &p,
    );
    assert_eq!(r.evaluation_time.to_string(), "2024-01-01T00:00:00Z");
    let f = |i: &str| r.statements.iter().find(|e| *e.issuer == *i).unwrap().factors.freshness_ppm;
    assert_eq!(f("scanner"), 300_000);
    assert_eq!(f("somebody"), 1_000_000);
    assert_eq!(f("vendor"), 1_000_000);
}

#[test]
fn disagreement_is_disputed_with_leading_status() {
    let r = one(
        vec![
            obs(Some("vendor"), A, "CVE-1", Status::NotAffected, "2024-01-01T00:00:00Z"),
            obs(Some("distro"), A, "CVE-1", Status::Affected, "2024-01-01T00:00:00Z"),
        ],
        &policy(Mode::WeightedVote),
    );
    // 700000 vs 560000: runner-up share 0.444 >= 0.3.
    assert_eq!(r.status, ConsensusStatus::Disputed);
    assert_eq!(r.leading_status, Some(Status::NotAffected));
    assert_eq!(r.scores_ppm[&Status::NotAffected], 700_000);
    assert_eq!(r.scores_ppm[&Status::Affected], 560_000);
    assert_eq!(r.confidence_ppm, 555_556);
    assert_eq!(r.confidence_decimal(3), "0.556");
    assert_eq!(r.conflicts.len(), 1);
    assert_eq!(r.conflicts[0].reason, ConflictReason::StatusDisagreement);
    assert_eq!(r.conflicts[0].issuers, vec!["distro", "vendor"]);
}

#[test]
fn a_small_minority_does_not_dispute_and_ties_go_conservative() {
    let r = one(
        vec![
            obs(Some("vendor"), A, "CVE-1", Status::NotAffected, "2024-01-01T00:00:00Z"),
            obs(Some("randomer"), A, "CVE-1", Status::Affected, "2024-01-01T00:00:00Z"),
        ],
        &policy(Mode::WeightedVote),
    );
    assert_eq!(r.status, ConsensusStatus::NotAffected);
    assert_eq!(r.conflicts[0].reason, ConflictReason::StatusDisagreement);
    let r = one(
        vec![
            obs(Some("a"), A, "CVE-1", Status::NotAffected, "2024-01-01T00:00:00Z"),
            obs(Some("b"), A, "CVE-1", Status::Affected, "2024-01-01T00:00:00Z"),
        ],
        &policy(Mode::WeightedVote),
    );
    assert_eq!(r.status, ConsensusStatus::Disputed);
    assert_eq!(r.leading_status, Some(Status::Affected));
}

#[test]
fn too_little_weight_is_inconclusive() {
    let r = one(
        vec![obs(Some("randomer"), A, "CVE-1", Status::Affected, "2024-01-01T00:00:00Z")],
        &policy(Mode::WeightedVote),
    );
    assert_eq!(r.total_weight_ppm, 70_000);
    assert_eq!(r.status, ConsensusStatus::Inconclusive);
    assert_eq!(r.leading_status, Some(Status::Affected));
}

#[test]
fn only_the_latest_statement_of_an_issuer_counts() {
    let r = one(
        vec![
            obs(Some("vendor"), A, "CVE-1", Status::UnderInvestigation, "2024-01-01T00:00:00Z"),
            obs(Some("vendor"), A, "CVE-1", Status::Fixed, "2024-02-01T00:00:00Z"),
        ],
        &policy(Mode::WeightedVote),
    );
    assert_eq!(r.status, ConsensusStatus::Fixed);
    let roles: Vec<Role> = r.statements.iter().map(|e| e.role).collect();
    assert_eq!(roles, vec![Role::Superseded, Role::Counted]);
    assert!(r.conflicts.is_empty());
}

#[test]
fn modes_pick_differently() {
    let v = || {
        vec![
            obs(Some("vendor"), A, "CVE-1", Status::NotAffected, "2024-01-01T00:00:00Z"),
            obs(Some("scanner"), A, "CVE-1", Status::Affected, "2024-01-03T00:00:00Z"),
            obs(Some("distro"), A, "CVE-1", Status::Fixed, "2024-01-02T00:00:00Z"),
        ]
    };
    assert_eq!(one(v(), &policy(Mode::Lattice)).status, ConsensusStatus::Affected);
    assert_eq!(one(v(), &policy(Mode::HighestWeight)).status, ConsensusStatus::NotAffected);
    assert_eq!(one(v(), &policy(Mode::MostRecent)).status, ConsensusStatus::Affected);
    let af = one(v(), &policy(Mode::AuthoritativeFirst));
    assert_eq!(af.status, ConsensusStatus::NotAffected);
    assert_eq!(af.confidence_ppm, 1_000_000);
    assert_eq!(one(v(), &policy(Mode::WeightedVote)).status, ConsensusStatus::Disputed);
}

#[test]
fn failed_signatures_are_excluded_and_missing_provenance_is_reported() {
    let mut forged = obs(Some("vendor"), A, "CVE-1", Status::NotAffected, "2024-03-01T00:00:00Z");
    forged.signature = Signature {
        kind: None,
        status: SignatureStatus::Failed,
        reason: Some(SignatureReason::BadSignature),
        keyid: None,
    };
    let forged = forged.with_id().unwrap();
    let r = one(
        vec![
            forged,
            obs(Some("vendor"), A, "CVE-1", Status::Affected, "2024-01-01T00:00:00Z"),
            obs(None, A, "CVE-1", Status::Affected, "2024-01-01T00:00:00Z"),
        ],
        &policy(Mode::WeightedVote),
    );
    assert_eq!(r.status, ConsensusStatus::Affected);
    let ex: Vec<&StatementEntry> = r.statements.iter().filter(|e| e.role == Role::Excluded).collect();
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].weight_ppm, 0);
    assert!(r.statements.iter().any(|e| *e.issuer == *"unknown" && e.role == Role::Counted));
    let mp = r.conflicts.iter().find(|c| c.reason == ConflictReason::MissingProvenance).unwrap();
    assert!(mp.detail.contains("1 statement(s) name no issuer; 1 statement(s) failed"), "{}", mp.detail);
}

#[test]
fn versionless_statements_apply_to_known_versions_with_scope_mismatch() {
    let (records, _) = batch(
        vec![
            obs(Some("vendor"), "pkg:golang/x/y", "CVE-1", Status::NotAffected, "2024-01-01T00:00:00Z"),
            obs(Some("distro"), "pkg:golang/x/y@v1.2.0", "CVE-1", Status::Affected, "2024-01-01T00:00:00Z"),
            obs(Some("distro"), "pkg:golang/x/y@v1.3.0", "CVE-2", Status::Fixed, "2024-01-01T00:00:00Z"),
        ],
        &policy(Mode::WeightedVote),
        false,
    );
    let keys: Vec<(String, String)> = records.iter().map(|r| (r.artifact.clone(), r.vulnerability.clone())).collect();
    assert_eq!(
        keys,
        vec![
            ("pkg:golang/x/y".into(), "CVE-1".into()),
            ("pkg:golang/x/y@v1.2.0".into(), "CVE-1".into()),
            ("pkg:golang/x/y@v1.3.0".into(), "CVE-1".into()),
            ("pkg:golang/x/y@v1.3.0".into(), "CVE-2".into()),
        ]
    );
    assert_eq!(records[0].status, ConsensusStatus::NotAffected);
    let reasons: Vec<&str> = records[1].conflicts.iter().map(|c| c.reason.as_str()).collect();
    assert_eq!(reasons, vec!["scope_mismatch", "status_disagreement"]);
    assert_eq!(records[2].status, ConsensusStatus::NotAffected);
}

#[test]
fn tenant_overrides_change_weights() {
    let mut dir = policy(Mode::WeightedVote).directory;
    dir.issuers[2].tenants.insert("acme".into(), TenantOverride { tier: Some(Tier::Authoritative), weight: None });
    let p = Policy::new(Mode::WeightedVote, dir, Knobs::default());
    let mut o = obs(Some("scanner"), A, "CVE-1", Status::Affected, "2024-01-01T00:00:00Z");
    o.tenant = "acme".into();
    let r = one(vec![o.with_id().unwrap()], &p);
    assert_eq!(r.statements[0].factors.issuer_ppm, 1_000_000);
    assert_eq!(r.tenant, "acme");
}

#[test]
fn apply_rejects_other_packages_and_ignores_duplicates() {
    let mut s = PackageState::new();
    let o = obs(Some("vendor"), A, "CVE-1", Status::Fixed, "2024-01-01T00:00:00Z");
    assert_eq!(s.apply(o.clone()).unwrap().len(), 1);
    assert!(s.apply(o).unwrap().is_empty());
    let other = obs(Some("vendor"), "pkg:npm/other@1", "CVE-1", Status::Fixed, "2024-01-01T00:00:00Z");
    assert!(matches!(s.apply(other), Err(ApplyError::WrongPackage { .. })));
}

// ---- properties -------------------------------------------------------------------

const ISSUERS: [Option<&str>; 6] =
    [Some("vendor"), Some("distro"), Some("scanner"), Some("randomer"), Some("someone"), None];
/// One package: version-less, versions, a range, qualifiers, and platforms (issue 17:
/// claims about two platforms never meet; a platform-less claim applies on every one).
const ARTIFACTS: [&str; 9] = [
    "pkg:golang/x/y",
    "pkg:golang/x/y@v1.0.0",
    "pkg:golang/x/y@v2.0.0",
    "pkg:golang/x/y@vers:semver/>=1.0.0|<2.0.0",
    "pkg:golang/x/y@v1.5.0?os=linux",
    "pkg:golang/x/y?distro=rocky-8.6",
    "pkg:golang/x/y@v1.0.0?distro=rocky-8.6",
    "pkg:golang/x/y@v1.0.0?distro=rhel-8-appstream",
    "pkg:golang/x/y@v1.0.0?platform=cpe%3A2.3%3Ao%3Aacme%3Abox%3A1%3A*%3A*%3A*%3A*%3A*%3A*%3A*",
];

fn arb_obs() -> impl Strategy<Value = Observation> {
    (0..ISSUERS.len(), 0..ARTIFACTS.len(), 0..3usize, 0..4usize, 0..400i64, 0..3u8, any::<bool>(), 0..3usize, 0..3usize)
        .prop_map(|(i, a, v, s, day, sig, justified, doc, version)| {
            let t = Timestamp::from_unix_nanos((1_700_000_000 + day * 86_400) as i128 * 1_000_000_000, 0);
            let mut o =
                obs(ISSUERS[i], ARTIFACTS[a], ["CVE-1", "CVE-2", "GHSA-x"][v], Status::ALL[s], "2024-01-01T00:00:00Z");
            o.timestamp = t;
            o.position = (day % 7) as u32;
            o.signature.status =
                [SignatureStatus::Verified, SignatureStatus::Unsigned, SignatureStatus::Failed][sig as usize];
            if !justified {
                o.justification = None;
            }
            // Versions of two documents (and statements of no document): retraction.
            if doc < 2 {
                let (d, ver) = (["doc-a", "doc-b"][doc], ["1", "2", "10"][version]);
                o.document_id = Some(d.into());
                o.document_version = Some(ver.into());
                o.document_digest =
                    format!("sha256:{}", crate::domain::canonical::sha256_hex(format!("{i}{d}{ver}").as_bytes()))
                        .into();
            }
            o.with_id().unwrap()
        })
}

fn canonical(records: &[ConsensusRecord]) -> Vec<String> {
    records.iter().map(|r| r.to_canonical_json().unwrap()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Property 1: any order gives byte-identical records.
    /// Claims about two platforms never meet in one record, and a platform-less claim
    /// counts wherever it applies.
    #[test]
    fn no_record_counts_two_platforms(v in prop::collection::vec(arb_obs(), 1..25)) {
        let (records, _) = batch(v, &policy(Mode::WeightedVote), false);
        for r in &records {
            let own = parse_key(&r.artifact).unwrap().platform();
            for s in &r.statements {
                let theirs = parse_key(&s.artifact).unwrap().platform();
                prop_assert!(theirs.is_none() || theirs == own, "{} counts {}", r.artifact, s.artifact);
            }
        }
    }

    #[test]
    fn order_independence(v in prop::collection::vec(arb_obs(), 1..25), seed in any::<u64>(), mode in 0..5usize) {
        let p = policy(Mode::ALL[mode]);
        let (a, _) = batch(v.clone(), &p, true);
        let mut shuffled = v.clone();
        // Deterministic Fisher-Yates from the seed.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let (b, _) = batch(shuffled, &p, true);
        prop_assert_eq!(canonical(&a), canonical(&b));
    }

    /// Properties 2 and 3: applying one by one (keeping only the records of the pairs each
    /// apply reports) equals the batch result, and duplicates change nothing.
    #[test]
    fn incremental_equals_batch_and_duplicates_are_noops(v in prop::collection::vec(arb_obs(), 1..25), dup in any::<prop::sample::Index>()) {
        let p = policy(Mode::WeightedVote);
        let mut state = PackageState::new();
        let mut records: BTreeMap<PairKey, ConsensusRecord> = BTreeMap::new();
        for o in &v {
            for pair in state.apply(o.clone()).unwrap() {
                records.insert(pair.clone(), state.evaluate(&pair, &p, false).unwrap().unwrap());
            }
        }
        let again = dup.get(&v).clone();
        prop_assert!(state.apply(again).unwrap().is_empty());
        let (batch_records, _) = batch(v.clone(), &p, false);
        let mut inc: Vec<ConsensusRecord> = records.into_values().collect();
        inc.sort_by(|a, b| a.artifact.cmp(&b.artifact).then(a.vulnerability.cmp(&b.vulnerability)));
        prop_assert_eq!(canonical(&inc), canonical(&batch_records));
    }

    /// Property 4: raising one issuer's weight never lowers the score of the status it states.
    #[test]
    fn monotone_trust(v in prop::collection::vec(arb_obs(), 1..25), who in 0..4usize, w1 in 0.0f64..1.0, dw in 0.0f64..1.0) {
        let w2 = (w1 + dw).min(1.0);
        let with = |w: f64| {
            let mut p = policy(Mode::WeightedVote);
            p.directory.issuers[who].weight = Some(w);
            let p = Policy::new(Mode::WeightedVote, p.directory, Knobs::default());
            batch(v.clone(), &p, false).0
        };
        let (lo, hi) = (with(w1), with(w2));
        prop_assert_eq!(lo.len(), hi.len());
        let id = ["vendor", "distro", "scanner", "randomer"][who];
        for (a, b) in lo.iter().zip(hi.iter()) {
            for e in a.statements.iter().filter(|e| *e.issuer == *id && e.role == Role::Counted) {
                prop_assert!(b.scores_ppm.get(&e.status).copied().unwrap_or(0) >= a.scores_ppm[&e.status]);
            }
        }
    }
}

/// A record is serialised once: the canonical JSON kept from computing its digest is
/// exactly what serialising it afresh gives, and a changed, re-digested record is
/// serialised afresh (the kept JSON is not shown for it).
#[test]
fn canonical_json_kept_from_the_digest_equals_a_fresh_serialisation() {
    let p = policy(Mode::WeightedVote);
    let mut r = one(
        vec![
            obs(Some("vendor"), "pkg:npm/a@1.0.0", "CVE-1", Status::NotAffected, "2024-01-01T00:00:00Z"),
            obs(Some("distro"), "pkg:npm/a@1.0.0", "CVE-1", Status::Affected, "2024-01-02T00:00:00Z"),
        ],
        &p,
    );
    let kept = r.to_canonical_json().unwrap();
    assert_eq!(kept, canonical::to_string(&r).unwrap());
    let v: serde_json::Value = serde_json::from_str(&kept).unwrap();
    assert_eq!(v["consensus_digest"], serde_json::json!(r.consensus_digest));
    r.status = ConsensusStatus::from(Status::Fixed);
    r.consensus_digest = r.compute_digest().unwrap();
    let fresh = r.to_canonical_json().unwrap();
    assert_ne!(fresh, kept);
    assert_eq!(fresh, canonical::to_string(&r).unwrap());
}

/// The record types are written in declaration order ([`canonical::to_vec_ordered`]):
/// with every optional member present (explain, claimed issuer, justification, free
/// text with escapes and non-ASCII, scope, reasons, conflicts with statuses, scores of
/// every status), the bytes are still exactly `serde_json_canonicalizer`'s (in any build
/// profile; debug builds also check each serialisation).
#[test]
fn every_member_of_a_record_is_written_in_rfc8785_order() {
    let p = policy(Mode::WeightedVote);
    let mut r = one(
        vec![
            obs(Some("vendor"), "pkg:npm/a@1.0.0", "CVE-1", Status::NotAffected, "2024-01-01T00:00:00Z"),
            obs(Some("distro"), "pkg:npm/a@1.0.0", "CVE-1", Status::Affected, "2024-01-02T00:00:00Z"),
            obs(None, "pkg:npm/a@1.0.0", "CVE-1", Status::Fixed, "2024-01-03T00:00:00Z"),
        ],
        &p,
    );
    let reasons = [
        Reason::SignatureFailed { signature_reason: Some(crate::domain::model::SignatureReason::BadSignature) },
        Reason::Retracted { retracted_by: vec!["sha256:01".into(), "sha256:00".into()], version: Some("2".into()) },
        Reason::MoreConservative { superseded_by: "0a".into() },
    ];
    for ((i, s), reason) in r.statements.iter_mut().enumerate().zip(reasons) {
        s.justification = Some(Justification::ComponentNotPresent);
        s.reason = Some(reason);
        // What explain joins (not digested).
        s.observation = Some(StatementText {
            action_statement: Some("\u{2028}upgrade".into()),
            document_digest: "sha256:00".into(),
            document_id: Some("urn:x".into()),
            document_version: Some("2".into()),
            format: crate::domain::model::SourceFormat::Csaf,
            impact_statement: Some("tab\there, back\\slash, </script>".into()),
            issuer_claimed: Some(format!("Ïssuer \"{i}\"\n\u{1}\u{1F600}").into()),
            justification_original: Some("component_not_present".into()),
            position: 3,
            scope: vec!["pkg:npm/a@1.0.0".into(), "pkg:npm/a@0.9.0".into()],
            status_original: "known_affected".into(),
        });
    }
    r.conflicts.push(Conflict {
        reason: crate::domain::codes::ConflictReason::ScopeMismatch,
        detail: "détail".into(),
        issuers: vec!["b".into(), "a".into()],
        statuses: vec![Status::Fixed, Status::Affected],
    });
    for st in [Status::UnderInvestigation, Status::Fixed, Status::NotAffected, Status::Affected] {
        r.scores_ppm.entry(st).or_insert(1);
    }
    r.aliases = vec!["GHSA-xxxx".into()];
    r.explain = Some(vec!["line \u{7f}".into()]);
    r.consensus_digest = r.compute_digest().unwrap();
    assert_eq!(r.to_canonical_json().unwrap(), canonical::to_string(&r).unwrap());
    assert_eq!(canonical::to_vec_ordered(&r).unwrap(), canonical::to_vec(&r).unwrap());
    r.strip_explain();
    let bare = {
        let mut b = r.clone();
        b.consensus_digest.clear();
        b
    };
    assert_eq!(canonical::to_vec_ordered(&bare).unwrap(), canonical::to_vec(&bare).unwrap());
    assert_eq!(r.compute_digest().unwrap(), canonical::sha256_prefixed(&canonical::to_vec(&bare).unwrap()));
}

/// The batch evaluates packages in parallel rounds: one thread or four, the records and
/// their order are the same, over more pairs than one round holds.
#[test]
fn batch_output_does_not_depend_on_the_number_of_threads() {
    let p = policy(Mode::WeightedVote);
    let mut all = Vec::new();
    for i in 0..(batch::BATCH_ROUND + 300) {
        let pkg = ["a", "b", "c"][i % 3];
        let status = [Status::Affected, Status::NotAffected, Status::Fixed][i % 3];
        all.push(obs(
            Some("vendor"),
            &format!("pkg:npm/{pkg}@1.0.{}", i % 7),
            &format!("CVE-{i}"),
            status,
            "2024-01-01T00:00:00Z",
        ));
        all.push(obs(
            Some("distro"),
            &format!("pkg:npm/{pkg}@1.0.{}", i % 7),
            &format!("CVE-{i}"),
            Status::Affected,
            "2024-01-02T00:00:00Z",
        ));
    }
    let run = |threads: usize, obs: Vec<Observation>| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let (lines, errors) = batch_map(obs, &p, false, |r| r.into_canonical_json());
            assert!(errors.is_empty(), "{errors:?}");
            lines.into_iter().map(|(_, l)| l).collect::<Vec<String>>()
        })
    };
    let one = run(1, all.clone());
    assert!(one.len() > batch::BATCH_ROUND, "{} records", one.len());
    let mut reversed = all;
    reversed.reverse();
    assert_eq!(run(4, reversed), one);
}

/// A newer version of a document that no longer makes a statement retracts it: the pair
/// it was the only statement of is listed as changed by the new version (although the new
/// version says nothing about it) and no longer counts it; a version restating it
/// supersedes it instead.
#[test]
fn a_newer_document_version_retracts_what_it_no_longer_says() {
    let p = policy(Mode::WeightedVote);
    let doc = |version: &str, artifact: &str, status: Status, t: &str| {
        let mut o = obs(Some("vendor"), artifact, "CVE-1", status, t);
        o.document_id = Some("https://vendor.example/vex/1".into());
        o.document_version = Some(version.into());
        o.document_digest = format!("sha256:{}", canonical::sha256_hex(version.as_bytes())).into();
        o.with_id().unwrap()
    };
    let v1_a = doc("1", "pkg:npm/a@1", Status::Affected, "2024-01-01T00:00:00Z");
    let v1_b = doc("1", "pkg:npm/a@2", Status::Affected, "2024-01-01T00:00:00Z");
    let v2_a = doc("2", "pkg:npm/a@1", Status::Fixed, "2024-02-01T00:00:00Z");
    let mut state = PackageState::new();
    state.apply(v1_a.clone()).unwrap();
    state.apply(v1_b.clone()).unwrap();
    let changed = state.apply(v2_a.clone()).unwrap();
    let pair = |a: &str| PairKey { tenant: "default".into(), artifact: a.into(), vulnerability: "CVE-1".into() };
    assert_eq!(changed, [pair("pkg:npm/a@1"), pair("pkg:npm/a@2")]);
    let r2 = state.evaluate(&pair("pkg:npm/a@2"), &p, true).unwrap().unwrap();
    assert_eq!(r2.status, ConsensusStatus::Inconclusive);
    assert_eq!(r2.statements[0].role, Role::Retracted);
    assert_eq!(
        r2.statements[0].reason,
        Some(Reason::Retracted { retracted_by: vec![v2_a.document_digest.clone()], version: Some("2".into()) })
    );
    let trace = r2.explain.unwrap();
    assert!(
        trace.iter().any(|l| l.contains("(retracted: version 2 of document https://vendor.example/vex/1 (sha256:")),
        "{trace:?}"
    );
    let r1 = state.evaluate(&pair("pkg:npm/a@1"), &p, false).unwrap().unwrap();
    assert_eq!(r1.status, ConsensusStatus::Fixed);
    assert_eq!(r1.statements.iter().map(|s| s.role).collect::<Vec<_>>(), [Role::Superseded, Role::Counted]);
    // Any order gives the same records.
    let (b, _) = batch(vec![v2_a, v1_b, v1_a], &p, false);
    assert_eq!(canonical(&b)[1], canonical(&[state.evaluate(&pair("pkg:npm/a@2"), &p, false).unwrap().unwrap()])[0]);
}

/// A scanner's concrete package that no statement names exactly gets the consensus of
/// every statement that applies to it: version-less, a range containing its version, its
/// platform's (a subset of its qualifiers); not another platform's, not another version's.
#[test]
fn a_concrete_artifact_no_one_stated_gets_every_statement_that_applies() {
    let p = policy(Mode::WeightedVote);
    let any = obs(Some("distro"), "pkg:rpm/rocky/bind", "CVE-1", Status::Affected, "2024-01-01T00:00:00Z");
    let on_86 =
        obs(Some("vendor"), "pkg:rpm/rocky/bind?distro=rocky-8.6", "CVE-1", Status::Affected, "2024-01-02T00:00:00Z");
    let on_92 =
        obs(Some("other"), "pkg:rpm/rocky/bind?distro=rocky-9.2", "CVE-1", Status::Fixed, "2024-01-02T00:00:00Z");
    let other_version =
        obs(Some("scanner"), "pkg:rpm/rocky/bind@9.0-1?arch=x86_64", "CVE-1", Status::Fixed, "2024-01-02T00:00:00Z");
    let (st, errors) = PackageState::rebuild(vec![any, on_86, on_92, other_version]);
    assert!(errors.is_empty());
    let concrete = "pkg:rpm/rocky/bind@9.11.36-14.el8_10?arch=x86_64&distro=rocky-8.6";
    assert!(!st.holds_artifact(concrete));
    let pair = PairKey { tenant: "default".into(), artifact: concrete.into(), vulnerability: "CVE-1".into() };
    let r = st.evaluate(&pair, &p, false).unwrap().unwrap();
    let applied: Vec<&str> = r.statements.iter().map(|s| &*s.artifact).collect();
    assert_eq!(applied, ["pkg:rpm/rocky/bind", "pkg:rpm/rocky/bind?distro=rocky-8.6"]);
    assert_eq!(r.status, ConsensusStatus::Affected);
    assert_eq!(r.artifact, concrete);
    // Another package, or a key that does not parse: nothing applies.
    let other = PairKey { artifact: "pkg:rpm/rocky/openssl@1-1".into(), ..pair.clone() };
    assert!(st.evaluate(&other, &p, false).unwrap().is_none());
    // A concrete artifact held by the state is evaluated as before.
    let held = PairKey { artifact: "pkg:rpm/rocky/bind@9.0-1?arch=x86_64".into(), ..pair };
    assert!(st.holds_artifact(&held.artifact));
    assert_eq!(st.evaluate(&held, &p, false).unwrap().unwrap().statements.len(), 2);
}

/// One version of `doc-1` by `vendor`: a statement about `pkg:npm/<p>@1` for each package
/// `p` it names.
fn doc_version(version: &str, packages: &[&str], status: Status, t: &str) -> Vec<Observation> {
    let digest = format!("sha256:{}", canonical::sha256_hex(format!("{version}{packages:?}{status:?}").as_bytes()));
    packages
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut o = obs(Some("vendor"), &format!("pkg:npm/{p}@1"), "CVE-1", status, t);
            o.document_id = Some("https://vendor.example/vex/doc-1".into());
            o.document_version = Some(version.into());
            o.document_digest = digest.clone().into();
            o.position = i as u32;
            o.with_id().unwrap()
        })
        .collect()
}

fn pair_of(artifact: &str) -> PairKey {
    PairKey { tenant: "default".into(), artifact: artifact.into(), vulnerability: "CVE-1".into() }
}

/// Issue 17 item 4, the edge case: a newer version that names no product of package `b`
/// retracts the older version's claim about it (through the ledger's version marker, in
/// the batch and in a package state), whichever comes first; `a`, still named, is
/// superseded as before.
#[test]
fn a_newer_version_naming_no_product_of_a_package_retracts_its_claims() {
    let p = policy(Mode::WeightedVote);
    let v1 = doc_version("1", &["a", "b"], Status::Affected, "2024-01-01T00:00:00Z");
    let v2 = doc_version("2", &["a"], Status::Fixed, "2024-02-01T00:00:00Z");
    let all: Vec<Observation> = v1.iter().chain(&v2).cloned().collect();
    let (records, errors) = batch(all.clone(), &p, true);
    assert!(errors.is_empty(), "{errors:?}");
    let b = records.iter().find(|r| r.artifact == "pkg:npm/b@1").unwrap();
    assert_eq!(b.status, ConsensusStatus::Inconclusive, "v1's claim about b no longer counts");
    assert_eq!(b.statements.len(), 1);
    assert_eq!(b.statements[0].role, Role::Retracted);
    match &b.statements[0].reason {
        Some(Reason::Retracted { retracted_by, version }) => {
            assert_eq!(version.as_deref(), Some("2"));
            assert_eq!(retracted_by.len(), 1);
            assert!(retracted_by[0].starts_with("sha256:"), "{retracted_by:?}");
        }
        other => panic!("not retracted: {other:?}"),
    }
    assert!(b.explain.as_ref().unwrap().iter().any(|l| l.contains("retracted")));
    let a = records.iter().find(|r| r.artifact == "pkg:npm/a@1").unwrap();
    assert_eq!(a.status, ConsensusStatus::Fixed);

    // Package b's state: the marker before or after v1's statement gives b's batch record;
    // applying the marker lists b's pair (its record changes).
    let marker = crate::domain::ledger::DocumentVersion::of(&v2)[0].marker("pkg:npm/b");
    let mut after = PackageState::new();
    after.apply(v1[1].clone()).unwrap();
    assert_eq!(after.apply(marker.clone()).unwrap(), [pair_of("pkg:npm/b@1")]);
    let mut before = PackageState::new();
    assert!(before.apply(marker.clone()).unwrap().is_empty());
    assert_eq!(before.apply(v1[1].clone()).unwrap(), [pair_of("pkg:npm/b@1")]);
    let want = b.to_canonical_json().unwrap();
    for st in [&after, &before] {
        let r = st.evaluate(&pair_of("pkg:npm/b@1"), &p, true).unwrap().unwrap();
        assert_eq!(r.to_canonical_json().unwrap(), want);
    }
    // The marker grows the pair's record version; a duplicate changes nothing.
    assert_eq!(after.pair_extent(&pair_of("pkg:npm/b@1")).1, 2);
    assert!(after.apply(marker.clone()).unwrap().is_empty());
    // A marker of another package is refused like a statement.
    assert!(matches!(
        after.apply(crate::domain::ledger::DocumentVersion::of(&v2)[0].marker("pkg:npm/c")),
        Err(ApplyError::WrongPackage { .. })
    ));
    // Any order of the input gives the same records.
    let mut reversed = all;
    reversed.reverse();
    assert_eq!(canonical(&batch(reversed, &p, true).0), canonical(&records));
}

/// A version naming the package again (v3) un-retracts nothing it does not restate but
/// counts itself; a marker of an equal version retracts nothing.
#[test]
fn markers_retract_only_versions_below_them() {
    let p = policy(Mode::WeightedVote);
    let v1 = doc_version("1", &["a", "b"], Status::Affected, "2024-01-01T00:00:00Z");
    let v2 = doc_version("2", &["a"], Status::Fixed, "2024-02-01T00:00:00Z");
    let v3 = doc_version("3", &["b"], Status::NotAffected, "2024-03-01T00:00:00Z");
    let (records, _) = batch(v1.iter().chain(&v2).chain(&v3).cloned(), &p, false);
    let b = records.iter().find(|r| r.artifact == "pkg:npm/b@1").unwrap();
    assert_eq!(b.status, ConsensusStatus::NotAffected);
    assert_eq!(b.statements.iter().map(|s| s.role).collect::<Vec<_>>(), [Role::Superseded, Role::Counted]);
    // v2 and v2' (same version number, another digest) name disjoint packages: no marker.
    let v2b = doc_version("2", &["b"], Status::Affected, "2024-02-01T00:00:00Z");
    let (records, _) = batch(v2.iter().chain(&v2b).cloned(), &p, false);
    assert!(records.iter().all(|r| r.statements.iter().all(|s| s.role == Role::Counted)));
}

/// The ingest flow's view, simulated: each version (in the given order) is recorded in the
/// ledger, owes the markers [`crate::domain::ledger::owed_on_arrival`] says, and its
/// observations and markers are applied to their packages' states; the records each apply
/// reports as changed, kept, are the final records.
fn incremental(versions: &[Vec<Observation>], p: &Policy) -> Vec<ConsensusRecord> {
    use crate::domain::ledger::{owed_on_arrival, DocumentVersion};
    let mut seen: Vec<DocumentVersion> = Vec::new();
    let mut states: BTreeMap<String, PackageState> = BTreeMap::new();
    let mut records: BTreeMap<PairKey, ConsensusRecord> = BTreeMap::new();
    for v in versions {
        let mut entries = v.clone();
        for dv in DocumentVersion::of(v) {
            entries.extend(owed_on_arrival(&dv, &seen));
            seen.push(dv);
        }
        for o in entries {
            let st = states.entry(o.package.to_string()).or_default();
            for pair in st.apply(o).unwrap() {
                records.insert(pair.clone(), st.evaluate(&pair, p, true).unwrap().unwrap());
            }
        }
    }
    let mut out: Vec<ConsensusRecord> = records.into_values().collect();
    out.sort_by(|a, b| {
        a.artifact.cmp(&b.artifact).then(a.vulnerability.cmp(&b.vulnerability)).then(a.tenant.cmp(&b.tenant))
    });
    out
}

fn arb_version() -> impl Strategy<Value = Vec<Observation>> {
    (0..4usize, 0..8u8, 0..4usize, 0..60i64).prop_map(|(v, mask, s, day)| {
        let named: Vec<&str> =
            ["a", "b", "c"].into_iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, p)| p).collect();
        let t = Timestamp::from_unix_nanos((1_700_000_000 + day * 86_400) as i128 * 1_000_000_000, 0);
        doc_version(["1", "2", "3", "10"][v], &named, Status::ALL[s], &t.to_string())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Issue 17 item 4: versions of one document naming random subsets of three packages,
    /// ingested one by one in any order (each owing the ledger's markers on arrival), give
    /// byte-identical records to the batch over their observations.
    #[test]
    fn ledger_incremental_equals_batch_in_any_order(versions in prop::collection::vec(arb_version(), 1..7), seed in any::<u64>()) {
        let p = policy(Mode::WeightedVote);
        let all: Vec<Observation> = versions.iter().flatten().cloned().collect();
        let (want, errors) = batch(all, &p, true);
        prop_assert!(errors.is_empty());
        prop_assert_eq!(canonical(&incremental(&versions, &p)), canonical(&want));
        let mut shuffled = versions.clone();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(canonical(&incremental(&shuffled, &p)), canonical(&want));
    }
}

/// A record of schema version 4 (as history holds it after an upgrade) still reads: the
/// text it copied is dropped and its free-text reason kept as text.
#[test]
fn a_version_4_record_reads_with_its_reason_as_text() {
    let p = policy(Mode::WeightedVote);
    let r = one(
        vec![
            obs(Some("vendor"), "pkg:npm/a@1.0.0", "CVE-1", Status::Affected, "2024-01-01T00:00:00Z"),
            obs(Some("vendor"), "pkg:npm/a@1.0.0", "CVE-1", Status::Fixed, "2024-01-02T00:00:00Z"),
        ],
        &p,
    );
    let json = r.to_canonical_json().unwrap();
    assert_eq!(ConsensusRecord::digest_of_json(&json).unwrap(), r.consensus_digest);
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["schema_version"] = 4.into();
    let s = &mut v["statements"][0];
    assert_eq!(s["reason"]["code"], "superseded", "{s}");
    s["reason"] = "superseded by x (fixed at 2024-01-02T00:00:00Z)".into();
    s["document_digest"] = "sha256:00".into();
    s["impact_statement"] = "copied".into();
    s["position"] = 3.into();
    // Its digest is checked on its JSON as written (the decoded record lost members).
    let mut sealed = v.clone();
    sealed.as_object_mut().unwrap().remove("consensus_digest");
    sealed.as_object_mut().unwrap().remove("explain");
    for st in sealed["statements"].as_array_mut().unwrap() {
        st.as_object_mut().unwrap().remove("observation");
    }
    sealed["consensus_digest"] = canonical::sha256_prefixed(&canonical::to_vec(&sealed).unwrap()).into();
    let written = sealed.to_string();
    assert_eq!(ConsensusRecord::digest_of_json(&written).unwrap(), sealed["consensus_digest"].as_str().unwrap());
    let old: ConsensusRecord = serde_json::from_value(v).unwrap();
    assert_ne!(old.compute_digest().unwrap(), sealed["consensus_digest"].as_str().unwrap());
    assert_eq!(old.statements[0].reason, Some(Reason::Text("superseded by x (fixed at 2024-01-02T00:00:00Z)".into())));
    assert_eq!(old.statements[1], r.statements[1]);
    let back = serde_json::to_value(&old).unwrap();
    assert_eq!(back["statements"][0]["reason"], "superseded by x (fixed at 2024-01-02T00:00:00Z)");
    assert!(back["statements"][0].get("impact_statement").is_none());
}

/// A state holds of an observation's provenance only its stream position: the record's
/// version still sees the sequence, the record is the same as from the observation with
/// all of its provenance, and where it came from is not kept.
#[test]
fn a_state_keeps_only_the_sequence_of_provenance() {
    let plain = obs(Some("vendor"), "pkg:npm/a@1", "CVE-1", Status::Fixed, "2024-01-01T00:00:00Z");
    let mut full = plain.clone();
    full.provenance = Provenance {
        source: Some("/feeds/vendor/advisory-1.json".into()),
        correlation_id: Some("0123456789abcdef0123456789abcdef".into()),
        received_at_ms: Some(1_765_000_000_000),
        sequence: Some(41),
    };
    let mut st = PackageState::new();
    assert_eq!(st.apply(full.clone()).unwrap(), [pair_of("pkg:npm/a@1")]);
    let held: Vec<&Observation> = st.observations().collect();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].provenance, Provenance { sequence: Some(41), ..Provenance::default() });
    assert_eq!(Observation { provenance: full.provenance.clone(), ..held[0].clone() }, full);
    assert_eq!(st.pair_extent(&pair_of("pkg:npm/a@1")), (41, 1));
    let p = Policy::default();
    let mut other = PackageState::new();
    other
        .apply(Observation { provenance: Provenance { sequence: Some(41), ..Provenance::default() }, ..plain })
        .unwrap();
    let r = |s: &PackageState| s.evaluate(&pair_of("pkg:npm/a@1"), &p, true).unwrap().unwrap().to_canonical_json();
    assert_eq!(r(&st).unwrap(), r(&other).unwrap());
}

/// One look-up of a pair's statements gives the same record and extent as evaluating the
/// pair and asking its extent apart: for a version's pair (its own statement and the
/// version-less one) and for an artifact no statement names exactly.
#[test]
fn evaluate_with_extent_is_evaluate_and_pair_extent() {
    let p = Policy::default();
    let mut st = PackageState::new();
    for (i, (artifact, status)) in
        [("pkg:npm/a@1", Status::Fixed), ("pkg:npm/a@2", Status::Affected), ("pkg:npm/a", Status::NotAffected)]
            .into_iter()
            .enumerate()
    {
        let mut o = obs(Some("vendor"), artifact, "CVE-1", status, "2024-01-01T00:00:00Z");
        o.provenance.sequence = Some(10 + i as i64);
        st.apply(o).unwrap();
    }
    for artifact in ["pkg:npm/a@1", "pkg:npm/a@2", "pkg:npm/a@3"] {
        let pair = pair_of(artifact);
        let (record, extent) = st.evaluate_with_extent(&pair, &p).unwrap().unwrap();
        assert_eq!(record, st.evaluate(&pair, &p, false).unwrap().unwrap(), "{artifact}");
        assert_eq!(extent, st.pair_extent(&pair), "{artifact}");
    }
    assert_eq!(st.pair_extent(&pair_of("pkg:npm/a@2")), (12, 2));
    assert!(st.evaluate_with_extent(&pair_of("pkg:npm/b@1"), &p).unwrap().is_none());
}
