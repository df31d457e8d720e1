//! The store contract, written once as generic async functions, one per role of
//! `crate::ports` (each bounded by that role's trait: [`admin_contract`],
//! [`observation_contract`], [`ledger_contract`] (the document ledger, and version
//! markers kept as observations), [`record_contract`] (with the conflict queue its writes
//! keep, the change stream and the version fence), [`verification_contract`],
//! [`export_job_contract`], [`trust_contract`]), and run against every adapter through
//! [`store_contract_suite`]: the embedded store in `cargo test`, MongoDB in the
//! integration tests. [`schema_contract`] (the schema role and the upgrade) needs an
//! empty store and runs on its own.
//!
//! Invariants: the suite uses a tenant unique to each run, so it passes on a store that
//! already holds data (depth checks are relative), and it panics with a message naming
//! the broken clause.

use crate::domain::codes::ConflictReason;
use crate::domain::consensus::{ConsensusRecord, PackageState, PairKey};
use crate::domain::keys::parse_key;
use crate::domain::model::{
    EntryKind, IssuerSource, Observation, Provenance, Signature, SourceFormat, Status, TimestampSource,
};
use crate::domain::timestamp::Timestamp;
use crate::domain::trust::Policy;
use crate::domain::version::{RecordVersion, VersionedRecord};
use crate::ports::{
    ConflictQueue, DocumentLedger, ExportJobRecord, ExportJobStore, ObservationStore, RecordQuery, RecordStore,
    SchemaStore, Store, StoreAdmin, StoredObservation, TrustAudit, TrustStore, VerificationRecord, VerificationStore,
};
use std::collections::BTreeSet;

/// A test observation (`issuer` says `status` about `artifact`/`vuln` for `tenant`).
pub fn sample_observation(tenant: &str, issuer: &str, artifact: &str, vuln: &str, status: Status) -> Observation {
    let k = parse_key(artifact).expect("sample artifact key parses");
    Observation {
        id: "".into(),
        kind: EntryKind::Statement,
        tenant: tenant.into(),
        issuer: Some(issuer.into()),
        issuer_source: IssuerSource::Document,
        artifact: k.key.into(),
        package: k.package.into(),
        scope: vec![],
        vulnerability: vuln.into(),
        aliases: vec![vuln.into()],
        status,
        status_original: status.as_str().into(),
        justification: None,
        justification_original: None,
        impact_statement: (status == Status::NotAffected).then(|| "not reachable".into()),
        action_statement: None,
        timestamp: Timestamp::parse("2024-05-01T10:00:00Z").expect("valid timestamp"),
        timestamp_source: TimestampSource::Statement,
        document_id: Some(format!("doc-{issuer}").into()),
        document_version: Some("1".into()),
        document_digest: format!(
            "sha256:{}",
            crate::domain::canonical::sha256_hex(format!("{tenant}{issuer}{artifact}{vuln}").as_bytes())
        )
        .into(),
        position: 0,
        format: SourceFormat::Openvex,
        signature: Signature::default(),
        provenance: Provenance { source: Some("contract".into()), received_at_ms: Some(1), ..Default::default() },
    }
    .with_id()
    .expect("sample observation has an id")
}

/// The record of `pair` that the test observations `obs` give under the default policy.
pub fn records_of(obs: &[Observation], pair: &PairKey) -> ConsensusRecord {
    let mut st = PackageState::new();
    for o in obs {
        st.apply(o.clone()).expect("sample observation applies");
    }
    st.evaluate(pair, &Policy::default(), false).expect("record digests").expect("pair has a record")
}

fn ids(v: &[Observation]) -> BTreeSet<String> {
    v.iter().map(|o| o.id.to_string()).collect()
}

/// Runs every clause of the store contract against `store`, role by role (each role's
/// clauses are also a function of their own, bounded by that role's trait).
pub async fn store_contract_suite<S: Store>(store: &S) {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let tenant = format!("contract-{nanos}");
    let other_tenant = format!("{tenant}-other");
    admin_contract(store).await;
    observation_contract(store, &tenant, &other_tenant).await;
    ledger_contract(store, &tenant, &other_tenant).await;
    record_contract(store, &tenant, &other_tenant).await;
    verification_contract(store, nanos).await;
    export_job_contract(store, &tenant, &other_tenant).await;
    trust_contract(store, &tenant, &other_tenant).await;
}

/// Set-up and readiness: init is idempotent; ping answers.
pub async fn admin_contract<S: StoreAdmin>(store: &S) {
    store.init().await.expect("init");
    store.init().await.expect("init twice");
    store.ping().await.expect("ping");
}

/// Observations: upsert by id, first provenance kept, grouped by (tenant, package);
/// a tenant's packages.
pub async fn observation_contract<S: ObservationStore>(store: &S, tenant: &str, other_tenant: &str) {
    let a = sample_observation(tenant, "vendor", "pkg:npm/contract-a@1.0.0", "CVE-2024-0001", Status::Affected);
    let b = sample_observation(tenant, "scanner", "pkg:npm/contract-a@1.0.0", "CVE-2024-0001", Status::NotAffected);
    let c = sample_observation(tenant, "vendor", "pkg:npm/contract-b@2.0.0", "CVE-2024-0001", Status::Fixed);
    let d = sample_observation(other_tenant, "vendor", "pkg:npm/contract-a@1.0.0", "CVE-2024-0001", Status::Fixed);
    store.put_observations(&[a.clone(), c.clone(), d.clone()]).await.expect("put_observations");
    let mut a_again = a.clone();
    a_again.provenance.source = Some("replayed".into());
    store.put_observations(&[a_again, b.clone()]).await.expect("put_observations is an upsert");
    store.put_observations(&[]).await.expect("empty put_observations");
    let got = store.observations_for_package(tenant, &a.package).await.expect("observations_for_package");
    assert_eq!(ids(&got), ids(&[a.clone(), b.clone()]), "observations_for_package returns exactly that package's");
    assert_eq!(got.len(), 2, "a replayed observation is stored once");
    let stored_a = got.iter().find(|o| o.id == a.id).expect("a is stored");
    assert_eq!(stored_a, &a, "an observation round-trips unchanged, keeping its first provenance");
    let other = store.observations_for_package(other_tenant, &a.package).await.expect("other tenant");
    assert_eq!(ids(&other), ids(std::slice::from_ref(&d)), "observations are per tenant");
    let none = store.observations_for_package(tenant, "pkg:npm/contract-none").await.expect("unknown package");
    assert!(none.is_empty(), "an unknown package has no observations");
    // Read together: each package's own, in the order asked (an unknown one empty).
    let key = |t: &str, o: &Observation| (t.to_string(), o.package.to_string());
    let asked =
        [key(tenant, &c), (tenant.to_string(), "pkg:npm/contract-none".into()), key(other_tenant, &d), key(tenant, &a)];
    let each = store.observations_for_packages(&asked).await.expect("observations_for_packages");
    let each: Vec<BTreeSet<String>> = each.iter().map(|os| ids(os)).collect();
    let expected =
        [ids(std::slice::from_ref(&c)), BTreeSet::new(), ids(std::slice::from_ref(&d)), ids(&[a.clone(), b.clone()])];
    assert_eq!(each, expected, "observations_for_packages: each package's own, in the order asked");
    assert!(store.observations_for_packages(&[]).await.expect("no packages").is_empty());
    assert_eq!(
        store.tenant_packages(tenant).await.expect("tenant_packages"),
        vec![a.package.to_string(), c.package.to_string()],
        "tenant_packages: each package of the tenant once, sorted"
    );
    assert_eq!(store.tenant_packages(other_tenant).await.expect("tenant_packages"), vec![d.package.to_string()]);
    assert!(store.tenant_packages(&format!("{tenant}-none")).await.expect("tenant_packages").is_empty());
}

/// The document ledger: a version is recorded once (a replay returns the same versions),
/// the answer holds every version of the document recorded so far and nothing of another
/// document, issuer or tenant; a version marker is stored and read back as an observation
/// of its package, its kind kept.
pub async fn ledger_contract<S: DocumentLedger + ObservationStore>(store: &S, tenant: &str, other_tenant: &str) {
    use crate::domain::ledger::{DocumentKey, DocumentVersion};
    let version =
        |tenant: &str, issuer: Option<&str>, doc: &str, digest: &str, v: &str, packages: &[&str]| DocumentVersion {
            key: DocumentKey { tenant: tenant.into(), issuer: issuer.map(Into::into), document_id: doc.into() },
            digest: digest.into(),
            version: Some(v.into()),
            format: SourceFormat::Openvex,
            newest: Timestamp::parse("2024-01-01T00:00:00Z").unwrap(),
            packages: packages.iter().map(|p| p.to_string()).collect(),
        };
    let v1 = version(tenant, Some("acme"), "doc", "sha256:01", "1", &["pkg:npm/a", "pkg:npm/b"]);
    let v2 = version(tenant, Some("acme"), "doc", "sha256:02", "2", &["pkg:npm/a"]);
    assert_eq!(store.record_version(&v1).await.unwrap(), std::slice::from_ref(&v1), "ledger: first version alone");
    assert_eq!(store.record_version(&v1).await.unwrap(), std::slice::from_ref(&v1), "ledger: a replay changes nothing");
    // Other documents, issuers (or none) and tenants are apart.
    for other in [
        version(tenant, Some("acme"), "doc-2", "sha256:03", "1", &["pkg:npm/c"]),
        version(tenant, Some("other"), "doc", "sha256:04", "1", &["pkg:npm/c"]),
        version(tenant, None, "doc", "sha256:05", "1", &["pkg:npm/c"]),
        version(other_tenant, Some("acme"), "doc", "sha256:06", "1", &["pkg:npm/c"]),
    ] {
        assert_eq!(
            store.record_version(&other).await.unwrap(),
            std::slice::from_ref(&other),
            "ledger: {:?} apart",
            other.key
        );
    }
    assert_eq!(
        store.record_version(&v2).await.unwrap(),
        [v1.clone(), v2.clone()],
        "ledger: every version of the document"
    );
    // The marker v2 owes package b round-trips as an observation of b.
    let marker = v2.marker("pkg:npm/b");
    store.put_observations(std::slice::from_ref(&marker)).await.unwrap();
    let back = store.observations_for_package(tenant, "pkg:npm/b").await.unwrap();
    let markers: Vec<&Observation> = back.iter().filter(|o| o.kind == EntryKind::VersionMarker).collect();
    assert_eq!(markers, [&marker], "ledger: a version marker is kept as it was");
}

/// Records (current records, history, the read API's queries and one-pair answer, the
/// change stream, the version fence) and the conflict queue their writes keep. Uses the
/// pairs of [`observation_contract`]'s fixtures (evaluated here, not read back). The
/// clauses run in this order, each on the writes of the ones before it.
pub async fn record_contract<S: RecordStore + ConflictQueue>(store: &S, tenant: &str, other_tenant: &str) {
    let f = RecordFixtures::new(tenant);
    let depth0 = put_clauses(store, &f, tenant, other_tenant).await;
    list_clauses(store, &f, tenant, other_tenant).await;
    resolve_clauses(store, &f, tenant, depth0).await;
    history_clauses(store, &f, other_tenant).await;
    query_clauses(store, &f, tenant, other_tenant).await;
    answer_clauses(store, &f, other_tenant).await;
    conflict_filter_clauses(store, &f, tenant, other_tenant).await;
    let written =
        [(1_000, &f.agreed), (2_000, &f.disputed), (4_000, &f.rec_c), (5_000, &f.agreed), (7_000, &f.disputed)];
    change_stream_clauses(store, tenant, other_tenant, &written, &f.agreed).await;
    fence_clauses(store, tenant).await;
}

/// The records [`record_contract`] writes: `pair` agreed (one issuer) then disputed (two
/// issuers disagree), and the record of another pair (`rec_c`).
struct RecordFixtures {
    a: Observation,
    c: Observation,
    pair: PairKey,
    agreed: ConsensusRecord,
    disputed: ConsensusRecord,
    rec_c: ConsensusRecord,
}

impl RecordFixtures {
    fn new(tenant: &str) -> RecordFixtures {
        let a = sample_observation(tenant, "vendor", "pkg:npm/contract-a@1.0.0", "CVE-2024-0001", Status::Affected);
        let b = sample_observation(tenant, "scanner", "pkg:npm/contract-a@1.0.0", "CVE-2024-0001", Status::NotAffected);
        let c = sample_observation(tenant, "vendor", "pkg:npm/contract-b@2.0.0", "CVE-2024-0001", Status::Fixed);
        let pair = PairKey {
            tenant: tenant.to_string(),
            artifact: a.artifact.to_string(),
            vulnerability: a.vulnerability.to_string(),
        };
        let agreed = records_of(std::slice::from_ref(&a), &pair);
        let disputed = records_of(&[a.clone(), b.clone()], &pair);
        assert!(agreed.conflicts.is_empty() && !disputed.conflicts.is_empty(), "fixture: one clean, one conflicted");
        let pair_c = PairKey {
            tenant: tenant.to_string(),
            artifact: c.artifact.to_string(),
            vulnerability: c.vulnerability.to_string(),
        };
        let rec_c = records_of(std::slice::from_ref(&c), &pair_c);
        RecordFixtures { a, c, pair, agreed, disputed, rec_c }
    }
}

/// Records: upsert by pair, a record round-trips, the conflict queue counts the
/// conflicted ones per tenant, queueing is idempotent. Writes at 1 000 (agreed), 2 000
/// and 3 000 (disputed, then its replay) and 4 000 (`rec_c`); returns the queue depth
/// before them.
async fn put_clauses<S: RecordStore + ConflictQueue>(
    store: &S,
    f: &RecordFixtures,
    tenant: &str,
    other_tenant: &str,
) -> u64 {
    let (pair, agreed, disputed) = (&f.pair, &f.agreed, &f.disputed);
    assert_eq!(store.get_record(pair).await.expect("get_record"), None, "no record before the first write");
    let depth0 = store.conflict_queue_depth().await.expect("depth");
    store.put_records(&[VersionedRecord::unversioned(agreed.clone())], 1_000).await.expect("put_records");
    let got = store.get_record(pair).await.expect("get_record").expect("record stored");
    assert_eq!(got.consensus_digest, agreed.consensus_digest, "get_record returns the written record");
    assert_eq!(&got, agreed, "a record round-trips unchanged");
    assert_eq!(got.compute_digest().unwrap(), got.consensus_digest, "a stored record re-digests to its digest");
    assert_eq!(store.conflict_queue_depth().await.expect("depth"), depth0, "a clean record opens no conflict");

    store.put_records(&[VersionedRecord::unversioned(disputed.clone())], 2_000).await.expect("put_records changed");
    assert_eq!(store.conflict_queue_depth().await.expect("depth"), depth0 + 1, "a conflicted record is queued");
    let per_tenant = store.conflict_queue_depths().await.expect("depths");
    assert!(per_tenant.contains(&(tenant.to_string(), 1)), "the queue counts per tenant: {per_tenant:?}");
    assert!(
        !per_tenant.iter().any(|(t, _)| *t == other_tenant),
        "a tenant without conflicts is left out: {per_tenant:?}"
    );
    store.put_records(&[VersionedRecord::unversioned(disputed.clone())], 3_000).await.expect("put_records replay");
    assert_eq!(store.conflict_queue_depth().await.expect("depth"), depth0 + 1, "queueing is idempotent");
    store.put_records(&[VersionedRecord::unversioned(f.rec_c.clone())], 4_000).await.expect("put_records other pair");
    depth0
}

/// `list_records`: one current record per pair, sorted by artifact, the latest write
/// current; `changed_at` moves only when the digest changes; per tenant.
async fn list_clauses<S: RecordStore>(store: &S, f: &RecordFixtures, tenant: &str, other_tenant: &str) {
    let all = store.list_records(Some(tenant), None).await.expect("list_records");
    assert_eq!(all.len(), 2, "one current record per pair");
    assert_eq!(*all[0].artifact, *f.a.artifact, "sorted by artifact");
    assert_eq!(all[0].consensus_digest, f.disputed.consensus_digest, "the latest write is current");
    let since = store.list_records(Some(tenant), Some(2_500)).await.expect("list_records since");
    assert_eq!(
        since.iter().map(|r| r.artifact.clone()).collect::<Vec<_>>(),
        vec![f.c.artifact.to_string()],
        "a replay with an unchanged digest does not move changed_at"
    );
    let since = store.list_records(Some(tenant), Some(1_500)).await.expect("list_records since");
    assert_eq!(since.len(), 2, "changed_at moves when the digest changes");
    let everyone = store.list_records(None, None).await.expect("list_records all tenants");
    assert!(everyone.len() >= 2, "list_records without a tenant includes this tenant's");
    assert!(
        store.list_records(Some(other_tenant), None).await.expect("other tenant").is_empty(),
        "records are per tenant"
    );
}

/// A write that resolves the conflict (at 5 000) takes the pair off the queue, and the
/// tenant whose queue emptied off the per-tenant depths; an empty write (at 6 000) is
/// accepted.
async fn resolve_clauses<S: RecordStore + ConflictQueue>(store: &S, f: &RecordFixtures, tenant: &str, depth0: u64) {
    store.put_records(&[VersionedRecord::unversioned(f.agreed.clone())], 5_000).await.expect("put_records resolves");
    assert_eq!(store.conflict_queue_depth().await.expect("depth"), depth0, "a resolved conflict leaves the queue");
    assert!(
        !store.conflict_queue_depths().await.expect("depths").iter().any(|(t, _)| *t == tenant),
        "a tenant whose queue emptied is left out"
    );
    assert_eq!(
        store.get_record(&f.pair).await.expect("get_record").map(|r| r.consensus_digest),
        Some(f.agreed.consensus_digest.clone())
    );
    store.put_records(&[], 6_000).await.expect("empty put_records");
}

/// Reads of the HTTP API: a pair's history, per tenant.
async fn history_clauses<S: RecordStore>(store: &S, f: &RecordFixtures, other_tenant: &str) {
    let history = store.record_history(&f.pair).await.expect("record_history");
    assert_eq!(
        history.iter().map(|h| (h.changed_at_ms, h.record.consensus_digest.clone())).collect::<Vec<_>>(),
        vec![
            (1_000, f.agreed.consensus_digest.clone()),
            (2_000, f.disputed.consensus_digest.clone()),
            (5_000, f.agreed.consensus_digest.clone())
        ],
        "history holds every change once (a replay adds nothing, a return to an earlier version does), oldest first"
    );
    assert_eq!(history[1].record, f.disputed, "a history entry round-trips unchanged");
    let other_pair = PairKey { tenant: other_tenant.to_string(), ..f.pair.clone() };
    assert!(store.record_history(&other_pair).await.expect("history").is_empty(), "history is per tenant");
}

/// The artifacts of `query_records`' answer, in its order.
fn keys(v: &[crate::ports::TimedRecord]) -> Vec<String> {
    v.iter().map(|t| t.record.artifact.clone()).collect::<Vec<_>>()
}

/// The artifacts `query_records` answers `q` with.
async fn query_keys<S: RecordStore>(store: &S, q: RecordQuery) -> Vec<String> {
    keys(&store.query_records(&q).await.expect("filtered query"))
}

/// All of a tenant's records, the page the read API asks for.
fn tenant_query(tenant: &str) -> RecordQuery {
    RecordQuery { tenant: tenant.to_string(), limit: 1000, ..Default::default() }
}

/// Reads of the HTTP API: paged and filtered queries (before the pair is disputed again).
async fn query_clauses<S: RecordStore>(store: &S, f: &RecordFixtures, tenant: &str, other_tenant: &str) {
    let (a, c, agreed, rec_c) = (&f.a, &f.c, &f.agreed, &f.rec_c);
    let q = tenant_query(tenant);
    let all = store.query_records(&q).await.expect("query_records");
    assert_eq!(keys(&all), vec![a.artifact.to_string(), c.artifact.to_string()], "query_records in artifact order");
    assert_eq!(all[0].changed_at_ms, 5_000, "query_records carries changed_at");
    assert_eq!(&all[0].record, agreed, "query_records returns the current record");
    let first = store.query_records(&RecordQuery { limit: 1, ..q.clone() }).await.expect("page 1");
    assert_eq!(keys(&first), vec![a.artifact.to_string()], "limit bounds a page");
    let after = Some((first[0].record.artifact.clone(), first[0].record.vulnerability.clone()));
    let second = store.query_records(&RecordQuery { limit: 1, after, ..q.clone() }).await.expect("page 2");
    assert_eq!(keys(&second), vec![c.artifact.to_string()], "the cursor resumes after the last key");
    let by = |filter: RecordQuery| query_keys(store, filter);
    assert_eq!(by(RecordQuery { status: Some(rec_c.status), ..q.clone() }).await, vec![c.artifact.to_string()]);
    assert_eq!(
        by(RecordQuery { package: Some(a.package.to_string()), ..q.clone() }).await,
        vec![a.artifact.to_string()]
    );
    assert_eq!(
        by(RecordQuery { artifact: Some(c.artifact.to_string()), ..q.clone() }).await,
        vec![c.artifact.to_string()]
    );
    let one = RecordQuery {
        artifact: Some(c.artifact.to_string()),
        vulnerability: Some(c.vulnerability.to_string()),
        ..q.clone()
    };
    assert_eq!(by(one.clone()).await, vec![c.artifact.to_string()], "one pair");
    assert!(
        by(RecordQuery { status: Some(agreed.status), ..one.clone() }).await.is_empty()
            || agreed.status == rec_c.status
    );
    assert!(by(RecordQuery { tenant: other_tenant.to_string(), ..one }).await.is_empty(), "one pair is per tenant");
    assert_eq!(by(RecordQuery { issuer: Some("vendor".into()), ..q.clone() }).await.len(), 2, "issuer filter");
    assert!(by(RecordQuery { issuer: Some("scanner".into()), ..q.clone() }).await.is_empty(), "issuer filter");
    assert!(by(RecordQuery { vulnerability: Some("CVE-1999-0001".into()), ..q.clone() }).await.is_empty());
    assert_eq!(by(RecordQuery { since_ms: Some(4_500), ..q.clone() }).await, vec![a.artifact.to_string()], "since");
    assert!(by(RecordQuery { conflicted: true, ..q.clone() }).await.is_empty(), "no open conflict");
}

/// The read API's one-pair answer: the RFC 8785 JSON of the current record with its
/// changed_at_ms (the members query_records gives), per tenant, and never older than a
/// write that returned (a store may cache it). Disputes the pair again (at 7 000).
async fn answer_clauses<S: RecordStore>(store: &S, f: &RecordFixtures, other_tenant: &str) {
    let pair = &f.pair;
    let other_pair = PairKey { tenant: other_tenant.to_string(), ..pair.clone() };
    let answer_of = |p: PairKey| async move { store.current_record_json(&p).await.expect("current_record_json") };
    let canonical_of = |record: &ConsensusRecord, changed_at_ms| {
        crate::domain::canonical::to_vec(&crate::ports::TimedRecord { record: record.clone(), changed_at_ms })
            .expect("canonical JSON")
    };
    let answer = answer_of(pair.clone()).await.expect("a stored pair has an answer");
    assert_eq!(&answer[..], &canonical_of(&f.agreed, 5_000)[..], "current_record_json: the canonical timed record");
    assert!(answer_of(other_pair.clone()).await.is_none(), "current_record_json is per tenant");
    let unknown = PairKey { vulnerability: "CVE-1999-0001".into(), ..pair.clone() };
    assert!(answer_of(unknown).await.is_none(), "no answer for a pair without a record");
    store
        .put_records(&[VersionedRecord::unversioned(f.disputed.clone())], 7_000)
        .await
        .expect("put_records disputes again");
    let answer = answer_of(pair.clone()).await.expect("a stored pair has an answer");
    assert_eq!(
        &answer[..],
        &canonical_of(&f.disputed, 7_000)[..],
        "current_record_json shows a returned write at once"
    );
}

/// Reads of the HTTP API once the pair is disputed again: the conflicted and conflict
/// reason filters, per tenant.
async fn conflict_filter_clauses<S: RecordStore>(store: &S, f: &RecordFixtures, tenant: &str, other_tenant: &str) {
    let (a, disputed) = (&f.a, &f.disputed);
    let q = tenant_query(tenant);
    let by = |filter: RecordQuery| query_keys(store, filter);
    assert_eq!(by(RecordQuery { conflicted: true, ..q.clone() }).await, vec![a.artifact.to_string()], "conflicted");
    let reason = disputed.conflicts[0].reason;
    let with_reason = RecordQuery { conflicted: true, conflict_reason: Some(reason), ..q.clone() };
    assert_eq!(by(with_reason).await, vec![a.artifact.to_string()], "conflict reason filter");
    let absent = *ConflictReason::ALL
        .iter()
        .find(|c| disputed.conflicts.iter().all(|x| x.reason != **c))
        .expect("a conflict reason the disputed record lacks");
    let no_reason = RecordQuery { conflicted: true, conflict_reason: Some(absent), ..q.clone() };
    assert!(by(no_reason).await.is_empty(), "conflict reason filter");
    assert!(
        by(RecordQuery { tenant: other_tenant.to_string(), ..q.clone() }).await.is_empty(),
        "query_records is per tenant"
    );
}

/// Verifications: upsert by envelope digest (`nanos` makes the digest unique to the run).
pub async fn verification_contract<S: VerificationStore>(store: &S, nanos: u128) {
    let v = VerificationRecord {
        envelope_digest: format!("sha256:{:064x}", nanos),
        kind: Some(crate::domain::codes::SignatureKind::Openpgp),
        issuer: Some("vendor".into()),
        keyid: Some("k1".into()),
        result: crate::domain::model::SignatureStatus::Verified,
        reason: None,
        verified_at_ms: 7,
        source: Some("contract".into()),
    };
    store.put_verification(&v).await.expect("put_verification");
    store.put_verification(&v).await.expect("put_verification is an upsert");
}

/// Export job records: upserts by job id, listed per tenant.
pub async fn export_job_contract<S: ExportJobStore>(store: &S, tenant: &str, other_tenant: &str) {
    let mut job = ExportJobRecord {
        job_id: format!("contract-{tenant}"),
        format: crate::domain::export_format::ExportFormat::Json,
        tenant: Some(tenant.to_string()),
        since_ms: None,
        started_at_ms: 7,
        duration_ms: 3,
        result: crate::ports::JobResult::Failure,
        error: Some("contract".into()),
        manifest: None,
        bundle_id: None,
        records: 0,
    };
    store.put_export_job(&job).await.expect("put_export_job");
    job.result = crate::ports::JobResult::Success;
    store.put_export_job(&job).await.expect("put_export_job is an upsert");
    let jobs = store.list_export_jobs(tenant).await.expect("list_export_jobs");
    assert_eq!(jobs, vec![job.clone()], "list_export_jobs returns the tenant's jobs, upserted once");
    assert!(store.list_export_jobs(other_tenant).await.expect("list").is_empty(), "export jobs are per tenant");
    assert_eq!(store.get_export_job(&job.job_id).await.expect("get_export_job"), Some(job.clone()));
    assert_eq!(store.get_export_job("contract-no-such-job").await.expect("get_export_job"), None);
}

/// Fenced writes: an older version never replaces a newer one (nor adds history or
/// touches the conflict queue); an equal version of the same record changes nothing; a
/// higher epoch wins whatever its offset; the same record at a newer version only raises
/// the stored version.
async fn fence_clauses<S: RecordStore + ConflictQueue>(store: &S, tenant: &str) {
    let e = sample_observation(tenant, "vendor", "pkg:npm/contract-f@1.0.0", "CVE-2024-0002", Status::Affected);
    let f = sample_observation(tenant, "scanner", "pkg:npm/contract-f@1.0.0", "CVE-2024-0002", Status::NotAffected);
    let pair_f = PairKey {
        tenant: tenant.to_string(),
        artifact: e.artifact.to_string(),
        vulnerability: e.vulnerability.to_string(),
    };
    let (one, two) = (records_of(std::slice::from_ref(&e), &pair_f), records_of(&[e.clone(), f.clone()], &pair_f));
    assert!(one.conflicts.is_empty() && !two.conflicts.is_empty(), "fixture: one clean, one conflicted");
    let v = |epoch: u64, offset: i64, observations: u64| RecordVersion { epoch, offset, observations };
    let put = |r: &ConsensusRecord, version: RecordVersion, at: i64| {
        let w = VersionedRecord::new(r.clone(), version);
        async move { store.put_records(&[w], at).await.expect("versioned put_records") }
    };
    let current = || async { store.get_record(&pair_f).await.expect("get_record").map(|r| r.consensus_digest) };
    let history = || async {
        let h = store.record_history(&pair_f).await.expect("record_history");
        h.into_iter().map(|t| (t.changed_at_ms, t.record.consensus_digest)).collect::<Vec<_>>()
    };
    let depth = store.conflict_queue_depth().await.expect("depth");
    put(&two, v(0, 20, 2), 10_000).await;
    assert_eq!(current().await, Some(two.consensus_digest.clone()));
    assert_eq!(store.conflict_queue_depth().await.expect("depth"), depth + 1, "the conflicted record is queued");
    put(&one, v(0, 10, 1), 11_000).await;
    assert_eq!(current().await, Some(two.consensus_digest.clone()), "a lower offset never replaces a higher one");
    put(&one, v(0, 20, 1), 11_500).await;
    assert_eq!(current().await, Some(two.consensus_digest.clone()), "the same offset with fewer observations loses");
    assert_eq!(store.conflict_queue_depth().await.expect("depth"), depth + 1, "a write that lost leaves the queue");
    put(&two, v(0, 20, 2), 12_000).await;
    assert_eq!(history().await, vec![(10_000, two.consensus_digest.clone())], "no history for lost or replayed writes");
    put(&one, v(1, 5, 1), 13_000).await;
    assert_eq!(current().await, Some(one.consensus_digest.clone()), "a higher epoch wins with a lower offset");
    assert_eq!(store.conflict_queue_depth().await.expect("depth"), depth, "the winner resolves the conflict");
    put(&two, v(0, 30, 9), 14_000).await;
    assert_eq!(current().await, Some(one.consensus_digest.clone()), "a lower epoch never wins");
    assert_eq!(store.conflict_queue_depth().await.expect("depth"), depth, "a stale write does not reopen a conflict");
    put(&one, v(2, 5, 1), 15_000).await;
    put(&two, v(1, 99, 9), 16_000).await;
    assert_eq!(current().await, Some(one.consensus_digest.clone()), "the same record at a newer version raises it");
    assert_eq!(
        history().await,
        vec![(10_000, two.consensus_digest.clone()), (13_000, one.consensus_digest.clone())],
        "history holds the writes that won, once"
    );
    let q = RecordQuery {
        tenant: tenant.to_string(),
        artifact: Some(e.artifact.to_string()),
        limit: 10,
        ..Default::default()
    };
    let timed = store.query_records(&q).await.expect("query_records");
    assert_eq!(
        timed.iter().map(|t| t.changed_at_ms).collect::<Vec<_>>(),
        vec![13_000],
        "raising a version is no change"
    );
    put(&two, v(2, 5, 1), 17_000).await;
    assert_eq!(current().await, Some(two.consensus_digest.clone()), "an equal version with another record replaces it");
    assert_eq!(store.conflict_queue_depth().await.expect("depth"), depth + 1);
    put(&one, v(2, 4, 1), 18_000).await;
    assert_eq!(current().await, Some(two.consensus_digest.clone()), "an older version after the equal one loses");
}

/// Trust policies: compare-and-set on the tenant's epoch, audit entries per tenant.
pub async fn trust_contract<S: TrustStore>(store: &S, tenant: &str, other_tenant: &str) {
    use crate::domain::trust::{TenantTrust, Tier, TrustChange};
    let base = Policy::default();
    let mine = |t: &[TenantTrust]| t.iter().filter(|x| x.tenant == tenant).cloned().collect::<Vec<_>>();
    assert!(mine(&store.trust_policies().await.expect("trust_policies")).is_empty(), "no policy before a change");
    let seed = TenantTrust::new(tenant);
    let change = TrustChange::Issuer { id: "vendor.example".into(), tier: Some(Tier::Untrusted), weight: None };
    let e1 = seed.changed(&base, &change).expect("change applies");
    let audit = |before: &TenantTrust, after: &TenantTrust| TrustAudit {
        tenant: tenant.to_string(),
        epoch: after.epoch,
        at_ms: 1_000 + after.epoch as i64,
        who: "contract".into(),
        kind: crate::domain::trust::TrustChangeKind::Issuer,
        issuer: Some("vendor.example".into()),
        reason: None,
        before: before.clone(),
        after: after.clone(),
    };
    assert!(store.put_trust_policy(&e1, &audit(&seed, &e1)).await.expect("first change"), "epoch 0 -> 1 is written");
    assert!(
        !store.put_trust_policy(&e1, &audit(&seed, &e1)).await.expect("stale change"),
        "a second writer from epoch 0 loses (compare-and-set)"
    );
    let knobs = serde_json::json!({"conflict_threshold": 0.25}).as_object().cloned().expect("object");
    let e2 = e1.changed(&base, &TrustChange::Policy { mode: None, knobs }).expect("change applies");
    let mut skip = e2.clone();
    skip.epoch = 3;
    assert!(!store.put_trust_policy(&skip, &audit(&e1, &skip)).await.expect("skipping"), "epochs never skip");
    assert!(store.put_trust_policy(&e2, &audit(&e1, &e2)).await.expect("second change"), "epoch 1 -> 2 is written");
    assert_eq!(
        mine(&store.trust_policies().await.expect("trust_policies")),
        vec![e2.clone()],
        "the latest, round-tripped"
    );
    let entries = store.trust_audit(tenant).await.expect("trust_audit");
    assert_eq!(entries, vec![audit(&seed, &e1), audit(&e1, &e2)], "one audit entry per applied change, oldest first");
    assert!(store.trust_audit(other_tenant).await.expect("trust_audit").is_empty(), "audit is per tenant");
    assert!(
        !store.trust_policies().await.expect("trust_policies").iter().any(|t| t.tenant == other_tenant),
        "policies are per tenant"
    );
    // Every applied change has its audit entry: repairing finds nothing missing and
    // writes nothing twice.
    store.repair_trust_audit().await.expect("repair_trust_audit");
    assert_eq!(store.trust_audit(tenant).await.expect("trust_audit"), entries, "repair is idempotent");

    // The recompute mark: absent (0) until set, only rises, per tenant.
    let mark = |v: Vec<(String, u64)>| v.into_iter().find(|(t, _)| t == tenant).map_or(0, |(_, e)| e);
    assert_eq!(mark(store.trust_recomputed().await.expect("trust_recomputed")), 0, "nothing recomputed yet");
    store.mark_trust_recomputed(tenant, 2).await.expect("mark");
    store.mark_trust_recomputed(tenant, 1).await.expect("a lower mark");
    assert_eq!(mark(store.trust_recomputed().await.expect("trust_recomputed")), 2, "the mark never goes back");
    let others = store.trust_recomputed().await.expect("trust_recomputed");
    assert!(!others.iter().any(|(t, e)| t == other_tenant && *e > 0), "marks are per tenant");
}

/// The change stream: every history entry of the tenant once, at dense positions in the
/// order written; resuming after a position gives exactly the later entries; per tenant.
/// `written` are the tenant's history entries so far (time, record), `again` a record
/// that changes the pair of `written[0]` once more.
async fn change_stream_clauses<S: RecordStore>(
    store: &S,
    tenant: &str,
    other_tenant: &str,
    written: &[(i64, &ConsensusRecord)],
    again: &ConsensusRecord,
) {
    let view = |v: &[crate::ports::ChangeEvent]| {
        v.iter().map(|e| (e.seq, e.entry.changed_at_ms, e.entry.record.consensus_digest.clone())).collect::<Vec<_>>()
    };
    let want: Vec<_> =
        written.iter().enumerate().map(|(i, (t, r))| (i as u64 + 1, *t, r.consensus_digest.clone())).collect();
    assert_eq!(store.change_tail(tenant).await.expect("change_tail"), want.len() as u64, "one position per change");
    let all = store.changes_after(tenant, 0, 1000).await.expect("changes_after");
    assert_eq!(view(&all), want, "every history entry once, positions 1.. in the order written");
    assert!(all.iter().all(|e| e.entry.record.tenant == tenant), "only the tenant's changes");
    assert_eq!(&all[1].entry.record, written[1].1, "a change carries the record as written");
    assert_eq!(view(&store.changes_after(tenant, 0, 2).await.expect("page")), want[..2].to_vec(), "limit");
    assert_eq!(view(&store.changes_after(tenant, 3, 1000).await.expect("resume")), want[3..].to_vec(), "resume");
    let tail = want.len() as u64;
    assert!(store.changes_after(tenant, tail, 1000).await.expect("at the tail").is_empty(), "nothing after the tail");
    let last = VersionedRecord::unversioned(written[written.len() - 1].1.clone());
    store.put_records(&[last], 8_000).await.expect("replay");
    assert_eq!(store.change_tail(tenant).await.expect("change_tail"), tail, "a replay adds no change");
    store.put_records(&[VersionedRecord::unversioned(again.clone())], 9_000).await.expect("put_records");
    let next = store.changes_after(tenant, tail, 1000).await.expect("changes_after");
    assert_eq!(view(&next), vec![(tail + 1, 9_000, again.consensus_digest.clone())], "a new change, once");
    assert_eq!(store.change_tail(other_tenant).await.expect("change_tail"), 0, "positions are per tenant");
    assert!(store.changes_after(other_tenant, 0, 1000).await.expect("other").is_empty(), "the stream is per tenant");
}

/// A CSAF observation stored the version-2 way: the component's key as artifact, the
/// platform's key as scope.
fn v2_relationship_observation(tenant: &str) -> Observation {
    let mut o = sample_observation(tenant, "distro", "pkg:generic/acme/openssl", "CVE-2024-0001", Status::NotAffected);
    o.format = SourceFormat::Csaf;
    o.scope = vec!["cpe:2.3:o:acme:acme_linux:8:*:*:*:*:*:*:*".into()];
    o.with_id().expect("v2 observation has an id")
}

/// A `name:` key lower-cased as version 2 stored it (lossy since version 3).
fn v2_name_observation(tenant: &str) -> Observation {
    let mut o = sample_observation(tenant, "vendor", "pkg:npm/contract-name", "CVE-2024-0002", Status::Fixed);
    o.format = SourceFormat::Csaf;
    o.artifact = "name:acme/widget server@2.4".into();
    o.package = "name:acme/widget server".into();
    o.with_id().expect("name observation has an id")
}

/// Every record of `observations`, as the artifact actor computes them.
fn all_records(observations: Vec<Observation>) -> Vec<ConsensusRecord> {
    let (st, _) = PackageState::rebuild(observations);
    let mut out: Vec<ConsensusRecord> =
        st.pairs().iter().filter_map(|p| st.evaluate(p, &Policy::default(), false).expect("evaluates")).collect();
    out.sort_by(|a, b| (&a.artifact, &a.vulnerability).cmp(&(&b.artifact, &b.vulnerability)));
    out
}

/// The schema role and the upgrade it serves (`crate::upgrade`), on an EMPTY store (the
/// upgrade deletes every current record: never run this on a store holding data):
/// a new store has no version and gets the current one; a version-2 store is re-keyed
/// where lossless and its records recomputed; a lossy one is refused without a change
/// until `reindex` drops the lossy observations; a second upgrade changes nothing.
pub async fn schema_contract<S: SchemaStore + ObservationStore + RecordStore + ConflictQueue>(store: &S) {
    use crate::domain::upgrade::STORE_SCHEMA_VERSION;
    use crate::upgrade::{reindex, upgrade, UpgradeError, UpgradeStores};
    let stores = || UpgradeStores { schema: store, observations: store, records: store };
    let policy = |_: &str| std::sync::Arc::new(Policy::default());
    assert_eq!(store.schema_version().await.expect("schema_version"), None, "a new store has no version");
    let r = upgrade(stores(), &policy).await.expect("upgrade of a new store");
    assert!(!r.upgraded(), "a new store is not upgraded");
    assert_eq!(store.schema_version().await.expect("schema_version"), Some(STORE_SCHEMA_VERSION));

    // A version-2 store: a relationship observation (re-keyed) and a purl one (unchanged),
    // with a stale record and conflict-queue entry.
    let tenant = "schema";
    let rel = v2_relationship_observation(tenant);
    let plain = sample_observation(tenant, "vendor", "pkg:npm/contract-a@1.0.0", "CVE-2024-0001", Status::Affected);
    let other = sample_observation(tenant, "scanner", "pkg:npm/contract-a@1.0.0", "CVE-2024-0001", Status::NotAffected);
    store.put_observations(&[rel.clone(), plain.clone(), other.clone()]).await.expect("put");
    let stale = all_records(vec![rel.clone()]);
    assert_eq!(stale.len(), 1);
    let conflicted = all_records(vec![plain.clone(), other.clone()]);
    let versioned: Vec<VersionedRecord> =
        stale.iter().chain(&conflicted).cloned().map(VersionedRecord::unversioned).collect();
    store.put_records(&versioned, 1).await.expect("put records");
    assert!(store.conflict_queue_depth().await.expect("depth") > 0, "the contradicting pair is queued");
    store.set_schema_version(2).await.expect("set_schema_version");
    assert_eq!(store.schema_version().await.expect("schema_version"), Some(2));
    assert_eq!(
        store.stored_packages().await.expect("stored_packages"),
        vec![(tenant.to_string(), rel.package.to_string()), (tenant.to_string(), other.package.to_string())],
        "stored_packages: every (tenant, package) once, sorted"
    );

    let r = upgrade(stores(), &policy).await.expect("a lossless upgrade");
    assert_eq!((r.from, r.rekeyed, r.unchanged, r.dropped), (2, 1, 2, 0), "{r:?}");
    let upgraded = store.observations_for_package(tenant, &rel.package).await.expect("observations");
    assert_eq!(upgraded.len(), 1, "the old observation is replaced, not kept beside the new one");
    assert!(upgraded[0].scope.is_empty() && upgraded[0].artifact.contains("acme_linux"), "{:?}", upgraded[0]);
    assert_ne!(upgraded[0].id, rel.id, "the re-keyed observation has its new id");
    assert_eq!(upgraded[0].id.to_string(), upgraded[0].compute_id().expect("id"), "its id is its content's");
    let mut want = all_records(upgraded.clone());
    want.extend(all_records(vec![plain.clone(), other.clone()]));
    want.sort_by(|a, b| (&a.artifact, &a.vulnerability).cmp(&(&b.artifact, &b.vulnerability)));
    let got = store.list_records(Some(tenant), None).await.expect("list");
    assert_eq!(got, want, "records are recomputed from the upgraded observations");
    assert!(!got.iter().any(|r| r.artifact == stale[0].artifact), "the stale record is gone");
    // The recompute replaced the current records, not the history: each pair keeps the
    // entry written before the upgrade.
    let kept = store.record_history(&stale[0].pair()).await.expect("history");
    assert_eq!(kept.iter().map(|h| (h.changed_at_ms, &h.record)).collect::<Vec<_>>(), vec![(1, &stale[0])]);
    let kept = store.record_history(&conflicted[0].pair()).await.expect("history");
    assert!(kept.iter().any(|h| h.changed_at_ms == 1 && h.record == conflicted[0]), "{kept:?}");
    assert!(store.conflict_queue_depth().await.expect("depth") > 0, "the recompute queues the conflict again");
    assert_eq!(store.schema_version().await.expect("schema_version"), Some(STORE_SCHEMA_VERSION));
    let again = upgrade(stores(), &policy).await.expect("upgrade again");
    assert!(!again.upgraded() && again.rekeyed == 0, "a second upgrade changes nothing: {again:?}");
    assert_eq!(store.list_records(Some(tenant), None).await.expect("list"), want);

    // A lossy observation: refused, nothing changed; reindex drops it and its records.
    let name = v2_name_observation(tenant);
    store.put_observations(std::slice::from_ref(&name)).await.expect("put");
    let name_records = all_records(vec![name.clone()]);
    store
        .put_records(&name_records.iter().cloned().map(VersionedRecord::unversioned).collect::<Vec<_>>(), 2)
        .await
        .expect("put records");
    store.set_schema_version(2).await.expect("set_schema_version");
    match upgrade(stores(), &policy).await {
        Err(UpgradeError::Lossy(msg)) => {
            assert!(msg.contains("vex-lens reindex") && msg.contains("widget server"), "{msg}")
        }
        other => panic!("a lossy store must be refused, got {other:?}"),
    }
    assert_eq!(store.schema_version().await.expect("schema_version"), Some(2), "a refusal changes nothing");
    assert_eq!(store.observations_for_package(tenant, &name.package).await.expect("observations").len(), 1);
    assert!(store.get_record(&name_records[0].pair()).await.expect("get").is_some(), "a refusal changes nothing");
    let r = reindex(stores(), &policy).await.expect("reindex");
    assert_eq!((r.from, r.dropped, r.rekeyed), (2, 1, 0), "{r:?}");
    assert!(store.observations_for_package(tenant, &name.package).await.expect("observations").is_empty());
    assert!(store.get_record(&name_records[0].pair()).await.expect("get").is_none(), "its record is dropped");
    assert_eq!(store.list_records(Some(tenant), None).await.expect("list"), want, "the rest is recomputed");
    assert_eq!(store.schema_version().await.expect("schema_version"), Some(STORE_SCHEMA_VERSION));

    // replace_observations is idempotent (a crash in the middle of an upgrade reruns it).
    let n = upgraded[0].clone();
    store.replace_observations(&[StoredObservation::of(&rel)], std::slice::from_ref(&n)).await.expect("replace");
    store.replace_observations(&[StoredObservation::of(&rel)], std::slice::from_ref(&n)).await.expect("again");
    assert_eq!(store.observations_for_package(tenant, &rel.package).await.expect("observations"), upgraded);
}
