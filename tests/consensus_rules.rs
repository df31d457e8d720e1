//! Consensus rules that agree with the standards (issue 9, CONSENSUS.md), each from real
//! documents through normalisation and the batch consensus:
//! * aliases: a statement naming several CVEs counts in the pair of every one of them;
//! * an issuer contradicting itself in two documents with the same time: the more
//!   conservative status counts, the other is superseded, and the record says so;
//! * statement dates: a document's `last_updated` does not date its statements
//!   (OpenVEX), and a CycloneDX vulnerability's `published`/`updated` is not the
//!   analysis time.

use vex_lens::domain::consensus::{batch, ConsensusRecord, ConsensusStatus, Reason, Role};
use vex_lens::domain::model::{IngestContext, Observation, Status, TimestampSource};
use vex_lens::domain::normalise::{normalise_bytes, DEFAULT_MAX_DOCUMENT_BYTES};
use vex_lens::domain::trust::{Mode, Policy};

fn norm(name: &str, json: &str) -> Vec<Observation> {
    normalise_bytes(name, json.as_bytes(), &IngestContext::default(), DEFAULT_MAX_DOCUMENT_BYTES)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .observations
}

/// The records of `docs`, explained (each statement's observation joined).
fn records(docs: &[(&str, &str)], mode: Mode) -> Vec<ConsensusRecord> {
    let obs: Vec<Observation> = docs.iter().flat_map(|(n, j)| norm(n, j)).collect();
    let (r, errors) = batch(obs, &Policy::new(mode, Default::default(), Default::default()), true);
    assert!(errors.is_empty(), "{errors:?}");
    r
}

fn openvex(id: &str, author: &str, timestamp: &str, extra: &str, statements: &str) -> String {
    format!(
        r#"{{"@context":"https://openvex.dev/ns/v0.2.0","@id":"{id}","author":"{author}","timestamp":"{timestamp}"{extra},"version":1,"statements":[{statements}]}}"#
    )
}

const P: &str = r#""products":[{"@id":"pkg:golang/golang.org/x/crypto@v0.30.0"}]"#;

#[test]
fn a_statement_naming_two_cves_counts_in_both_pairs() {
    let go = openvex(
        "https://example.com/go",
        "Go",
        "2024-12-01T00:00:00Z",
        "",
        &format!(
            r#"{{"vulnerability":{{"name":"GO-2024-3321","aliases":["CVE-2024-45337","CVE-2024-45338","GHSA-v778"]}},{P},"status":"not_affected","justification":"vulnerable_code_not_in_execute_path"}}"#
        ),
    );
    let obs = norm("go.json", &go);
    let vulns: Vec<&str> = obs.iter().map(|o| &*o.vulnerability).collect();
    assert_eq!(vulns, ["CVE-2024-45337", "CVE-2024-45338"], "one observation per CVE");
    for o in &obs {
        assert_eq!(
            o.aliases.iter().map(|a| &**a).collect::<Vec<_>>(),
            ["CVE-2024-45337", "CVE-2024-45338", "GHSA-v778", "GO-2024-3321"]
        );
    }
    assert_ne!(obs[0].id, obs[1].id);

    // An older statement of the same issuer about the second CVE alone is superseded by
    // the newer advisory statement.
    let older = openvex(
        "https://example.com/go-old",
        "Go",
        "2024-11-01T00:00:00Z",
        "",
        &format!(r#"{{"vulnerability":{{"name":"CVE-2024-45338"}},{P},"status":"affected"}}"#),
    );
    let r = records(&[("go.json", &go), ("old.json", &older)], Mode::WeightedVote);
    let second = r.iter().find(|r| r.vulnerability == "CVE-2024-45338").expect("pair of the second CVE");
    assert_eq!(second.status, ConsensusStatus::NotAffected);
    assert_eq!(second.statements.iter().filter(|s| s.role == Role::Superseded).count(), 1);
    assert!(r.iter().any(|r| r.vulnerability == "CVE-2024-45337"));
}

#[test]
fn an_issuer_contradicting_itself_across_documents_counts_the_conservative_status() {
    let t = "2024-05-01T00:00:00Z";
    let a = openvex(
        "https://example.com/a",
        "Acme",
        t,
        "",
        &format!(r#"{{"vulnerability":{{"name":"CVE-2024-1"}},{P},"status":"affected"}}"#),
    );
    let b = openvex(
        "https://example.com/b",
        "Acme",
        t,
        "",
        &format!(
            r#"{{"vulnerability":{{"name":"CVE-2024-1"}},{P},"status":"not_affected","justification":"component_not_present"}}"#
        ),
    );
    for mode in Mode::ALL {
        let r = records(&[("a.json", &a), ("b.json", &b)], mode);
        assert_eq!(r.len(), 1);
        let r = &r[0];
        assert_eq!(r.leading_status, Some(Status::Affected), "{mode:?}: the conservative status counts");
        let counted: Vec<_> = r.statements.iter().filter(|s| s.role == Role::Counted).collect();
        assert_eq!(counted.len(), 1);
        assert_eq!(counted[0].status, Status::Affected);
        let sup = r.statements.iter().find(|s| s.role == Role::Superseded).expect("the other is superseded");
        assert_eq!(sup.status, Status::NotAffected);
        assert_eq!(
            sup.reason,
            Some(Reason::MoreConservative { superseded_by: counted[0].observation_id.clone() }),
            "{:?}",
            sup.reason
        );
        let c = r
            .conflicts
            .iter()
            .find(|c| c.reason == vex_lens::domain::codes::ConflictReason::StatusDisagreement)
            .expect("a status_disagreement conflict");
        assert_eq!(c.issuers, ["Acme"]);
        assert_eq!(c.statuses, [Status::Affected, Status::NotAffected]);
        assert!(
            c.detail.contains(&*counted[0].observation.as_ref().unwrap().document_digest)
                && c.detail.contains(&*sup.observation.as_ref().unwrap().document_digest),
            "{}",
            c.detail
        );
    }
    // Agreeing documents: no conflict. One document stating two statuses at one time
    // (CONSENSUS.md, changed by issue 17: position orders only statements that agree): the
    // more conservative status counts, with a conflict, in every mode.
    let b2 = b.replace("not_affected", "affected").replace(r#","justification":"component_not_present""#, "");
    let r = records(&[("a.json", &a), ("b2.json", &b2)], Mode::WeightedVote);
    assert!(r[0].conflicts.is_empty(), "{:?}", r[0].conflicts);
    let one_doc = openvex(
        "https://example.com/c",
        "Acme",
        t,
        "",
        &format!(
            r#"{{"vulnerability":{{"name":"CVE-2024-1"}},{P},"status":"affected"}},{{"vulnerability":{{"name":"CVE-2024-1"}},{P},"status":"fixed"}}"#
        ),
    );
    for mode in [Mode::Lattice, Mode::MostRecent, Mode::WeightedVote] {
        let r = records(&[("c.json", &one_doc)], mode);
        assert_eq!(
            r[0].status,
            ConsensusStatus::Affected,
            "{mode:?}: within one document the conservative status counts"
        );
        assert_eq!(r[0].conflicts.len(), 1, "{:?}", r[0].conflicts);
        assert!(r[0].conflicts[0].detail.contains("within one document"), "{}", r[0].conflicts[0].detail);
    }
    // The same status twice in one document: the later position counts, no conflict.
    let twice = one_doc.replace(r#""status":"fixed""#, r#""status":"affected","impact_statement":"restated""#);
    let r = records(&[("d.json", &twice)], Mode::Lattice);
    assert!(r[0].conflicts.is_empty(), "{:?}", r[0].conflicts);
    let counted: Vec<_> = r[0].statements.iter().filter(|s| s.role == Role::Counted).collect();
    assert_eq!(counted.len(), 1);
    assert_eq!(counted[0].observation.as_ref().unwrap().position, 1, "the later statement");
}

#[test]
fn a_document_last_updated_does_not_date_its_statements() {
    // Vendor's document dated 2024-01-01, touched on 2024-09-01 (last_updated); its
    // statement carries no date of its own. The scanner said `affected` on 2024-03-01.
    let vendor = openvex(
        "https://example.com/v",
        "Vendor",
        "2024-01-01T00:00:00Z",
        r#","last_updated":"2024-09-01T00:00:00Z""#,
        &format!(
            r#"{{"vulnerability":{{"name":"CVE-2024-2"}},{P},"status":"not_affected","justification":"component_not_present"}}"#
        ),
    );
    let scanner = openvex(
        "https://example.com/s",
        "Scanner",
        "2024-03-01T00:00:00Z",
        "",
        &format!(r#"{{"vulnerability":{{"name":"CVE-2024-2"}},{P},"status":"affected"}}"#),
    );
    let o = &norm("v.json", &vendor)[0];
    assert_eq!(o.timestamp.to_string(), "2024-01-01T00:00:00Z");
    assert_eq!(o.timestamp_source, TimestampSource::Document);
    let r = records(&[("v.json", &vendor), ("s.json", &scanner)], Mode::MostRecent);
    assert_eq!(r[0].status, ConsensusStatus::Affected, "the scanner's statement is the newer one");
    // A statement's own last_updated still dates it.
    let own = vendor
        .replace(r#""status":"not_affected""#, r#""status":"not_affected","last_updated":"2024-06-01T00:00:00Z""#);
    assert_eq!(norm("v2.json", &own)[0].timestamp.to_string(), "2024-06-01T00:00:00Z");
}

#[test]
fn cyclonedx_statement_time_is_the_analysis_time() {
    let bom = |analysis_dates: &str| {
        format!(
            r#"{{"bomFormat":"CycloneDX","specVersion":"1.5","metadata":{{"timestamp":"2024-02-01T00:00:00Z","component":{{"bom-ref":"app","name":"app","purl":"pkg:npm/app@1.0.0"}}}},
            "vulnerabilities":[{{"id":"CVE-2024-3","published":"2020-01-01T00:00:00Z","updated":"2023-01-01T00:00:00Z",
            "analysis":{{"state":"not_affected","justification":"code_not_reachable"{analysis_dates}}},"affects":[{{"ref":"app"}}]}}]}}"#
        )
    };
    let o = &norm("a.json", &bom(""))[0];
    assert_eq!(o.timestamp.to_string(), "2024-02-01T00:00:00Z", "metadata.timestamp, not the vulnerability's dates");
    assert_eq!(o.timestamp_source, TimestampSource::Document);
    let o = &norm("b.json", &bom(r#","firstIssued":"2024-03-01T00:00:00Z""#))[0];
    assert_eq!(o.timestamp.to_string(), "2024-03-01T00:00:00Z");
    let o = &norm("c.json", &bom(r#","firstIssued":"2024-03-01T00:00:00Z","lastUpdated":"2024-04-01T00:00:00Z""#))[0];
    assert_eq!(o.timestamp.to_string(), "2024-04-01T00:00:00Z");
    assert_eq!(o.timestamp_source, TimestampSource::Statement);
}
