//! The actor pipeline: ingest workers -> registry -> artifact actors -> store writers.
//! Actors are thin shells around the pure core; sources (Kafka, files, stdin) talk to
//! the pipeline only through [`Pipeline`], with awaited sends (bounded mailboxes give
//! back-pressure; nothing on the hot path uses `do_send`).
//!
//! Parallelism without losing per-package order: artifact actors run on a pool of
//! arbiter threads (one per core by default) and writes go to several store writers;
//! both are chosen by a hash of (tenant, package) ([`shard_of`]), so one package's
//! observations are applied by one actor in order and its writes go through one writer
//! in order, while different packages proceed in parallel.
//!
//! Traces: each call carries the caller's current span into the actors' messages, so
//! the stages' spans (`vex.normalise`, `vex.dsse.verify`, `vex.artifact.*`, `vex.store.*`)
//! hang under the document's or observation's span.
//!
//! Must be started inside an actix `System` running on a multi-thread tokio runtime.

pub mod artifact;
pub mod budget;
pub mod export_job;
pub mod ingest;
pub mod messages;
pub mod registry;
pub mod verifier;
pub mod writer;

use crate::crypto::KeyDirectory;
use crate::domain::keys::parse_key;
use crate::domain::model::{IngestContext, Observation, SignatureReason, SignatureStatus};
use crate::domain::trust::Policy;
use crate::ports::VerificationRecord;
use crate::trust::Policies;
use actix::prelude::*;
use ingest::IngestActor;
use messages::{
    Drain, IngestOutcome, IngestStep, LiveActors, LivePackages, NormaliseDocument, PersistVerification,
    RecomputePackage, Rejected, ResetActors, Route, Verified, VerifiedDocument,
};
use registry::{ArtifactRegistry, RegistrySettings};
use std::sync::Arc;
use tokio::sync::oneshot;
use verifier::VerifierActor;
use writer::{StoreWriter, WriterSettings, WriterStores};

/// Handle to the running actors (cheap to clone, usable from any tokio task).
#[derive(Clone)]
pub struct Pipeline {
    ingest: Addr<IngestActor>,
    verifier: Addr<VerifierActor>,
    registry: Addr<ArtifactRegistry>,
    writers: Writers,
    arrivals: Arc<ArrivalSequence>,
}

/// The embedded mode's stream position of an observation (`provenance.sequence`; Kafka
/// mode uses the observations topic's offset): strictly increasing in a process and
/// seeded by the clock (microseconds since the epoch), so it keeps increasing across
/// restarts. Within one store writer the record versions it feeds only grow anyway
/// (a package's state only grows; see `ports::RecordVersion`).
#[derive(Debug, Default)]
pub struct ArrivalSequence(std::sync::atomic::AtomicI64);

impl ArrivalSequence {
    pub fn next(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let prev = self
            .0
            .fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |p| {
                Some(p.saturating_add(1).max(now))
            })
            .unwrap_or(now);
        prev.saturating_add(1).max(now)
    }
}

/// The store writers, one package always to the same one ([`shard_of`]).
#[derive(Clone)]
pub struct Writers(Arc<[Addr<StoreWriter>]>);

impl Writers {
    /// The writer of (tenant, package).
    pub fn for_package(&self, tenant: &str, package: &str) -> &Addr<StoreWriter> {
        &self.0[shard_of(tenant, package, self.0.len())]
    }

    /// The writer for a value with no package (e.g. a DSSE verification), by its id.
    pub fn for_id(&self, id: &str) -> &Addr<StoreWriter> {
        &self.0[shard_of(id, "", self.0.len())]
    }

    pub fn all(&self) -> &[Addr<StoreWriter>] {
        &self.0
    }
}

/// Stable shard of (tenant, package) among `n` (FNV-1a: the same in every process and
/// release, unlike std's randomly keyed hasher).
pub fn shard_of(tenant: &str, package: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tenant.bytes().chain(std::iter::once(0)).chain(package.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n.max(1) as u64) as usize
}

/// The pipeline could not do it.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The pipeline is gone (the actor system stopped) or dropped the work: retry later.
    #[error("actor pipeline unavailable: {0}")]
    Unavailable(#[from] MailboxError),
    /// The store rejected it for good.
    #[error(transparent)]
    Rejected(#[from] Rejected),
    /// Not made durable (its batch was rejected because of another input, or the writer
    /// restarted): retry it.
    #[error("not made durable")]
    NotDurable,
}

/// Sizes of the pipeline.
#[derive(Clone, Debug)]
pub struct PipelineSettings {
    pub workers: usize,
    /// Store writers (writes of different packages proceed in parallel).
    pub writers: usize,
    /// Arbiter threads the artifact actors run on (0: one per available core).
    pub artifact_threads: usize,
    pub writer: WriterSettings,
    pub registry: RegistrySettings,
}

impl Pipeline {
    /// Starts the actors with one policy for every tenant (call inside the actix system);
    /// `stores`: the roles the store writers use ([`WriterStores`], e.g. from
    /// [`crate::ports::Stores`]).
    pub fn start(stores: impl Into<WriterStores>, policy: Arc<Policy>, settings: PipelineSettings) -> Pipeline {
        Pipeline::start_with_policies(stores, Arc::new(Policies::new((*policy).clone())), settings)
    }

    /// Starts the actors on the live per-tenant policies (trust changes take effect at
    /// the next evaluation); DSSE keys come from the configuration's directory.
    pub fn start_with_policies(
        stores: impl Into<WriterStores>,
        policies: Arc<Policies>,
        settings: PipelineSettings,
    ) -> Pipeline {
        // The directory was validated on load (every key parses), so this cannot fail
        // for a loaded policy; a hand-built invalid one verifies nothing.
        let keys = Arc::new(KeyDirectory::from_directory(&policies.base().directory).unwrap_or_else(|e| {
            crate::error_event!(crate::telemetry::events::LogEvent::IssuerKeysUnusable, error = %e, "no DSSE keys: envelopes count as unsigned");
            KeyDirectory::default()
        }));
        let stores = stores.into();
        let writers: Vec<Addr<StoreWriter>> = (0..settings.writers.max(1))
            .map(|i| {
                let (store, writer_settings) = (stores.clone(), settings.writer.clone());
                Supervisor::start(move |_| StoreWriter::new(store, writer_settings, i == 0))
            })
            .collect();
        let writers = Writers(writers.into());
        let threads = match settings.artifact_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let arbiters = (0..threads).map(|_| Arbiter::new().handle()).collect();
        let registry = ArtifactRegistry::new(policies, writers.clone(), arbiters, settings.registry.clone()).start();
        let ingest = {
            let keys = keys.clone();
            SyncArbiter::start(settings.workers.max(1), move || IngestActor::new(keys.clone()))
        };
        let verifier = SyncArbiter::start(settings.workers.max(1), move || {
            VerifierActor::new(keys.clone(), crate::crypto::DEFAULT_THRESHOLD)
        });
        Pipeline { ingest, verifier, registry, writers, arrivals: Arc::new(ArrivalSequence::default()) }
    }

    /// Normalises a document on a worker thread. A signed document (DSSE envelope, or a
    /// detached OpenPGP signature) is judged on the verifier pool, then normalised on a
    /// worker with the verification's result; its verification is durable
    /// (`put_verification`) before this returns, so before the source can acknowledge the
    /// document (store its offset, remember the file).
    pub async fn normalise(
        &self,
        name: String,
        bytes: Vec<u8>,
        ctx: IngestContext,
        max_bytes: usize,
    ) -> Result<IngestOutcome, PipelineError> {
        let span = tracing::Span::current();
        match self.ingest.send(NormaliseDocument { name, bytes, ctx, max_bytes, span }).await? {
            IngestStep::Done(outcome) => Ok(outcome),
            IngestStep::Envelope(v) => {
                let verified = self.verifier.send(v).await?;
                self.normalise_verified(verified).await
            }
            IngestStep::Detached(v) => {
                let verified = self.verifier.send(v).await?;
                self.normalise_verified(verified).await
            }
            IngestStep::Malformed { outcome, record } => {
                self.persist_verification(record).await?;
                Ok(outcome)
            }
        }
    }

    /// Normalises a document the verifier judged (on an ingest worker) and persists its
    /// verification.
    async fn normalise_verified(&self, verified: Verified) -> Result<IngestOutcome, PipelineError> {
        let VerifiedDocument { outcome, record } = self.ingest.send(verified).await?;
        self.persist_verification(record).await?;
        Ok(outcome)
    }

    /// Hands a verification to the store writer; returns once it is durable.
    async fn persist_verification(&self, record: VerificationRecord) -> Result<(), PipelineError> {
        let (done, rx) = oneshot::channel();
        let span = tracing::Span::current();
        self.writers.for_id(&record.envelope_digest).send(PersistVerification { record, done, span }).await?;
        rx.await.map_err(|_| PipelineError::Unavailable(MailboxError::Closed))?.map_err(PipelineError::Rejected)
    }

    /// Routes an observation to its artifact actor; returns once the actor has applied it
    /// and handed the result to the store writer. The receiver fires when it is durable
    /// (and errors if it never will be). An observation without a stream position
    /// (`provenance.sequence`: the embedded sources) gets the next arrival sequence.
    pub async fn route(
        &self,
        mut observation: Observation,
    ) -> Result<oneshot::Receiver<Result<(), Rejected>>, PipelineError> {
        if observation.provenance.sequence.is_none() {
            observation.provenance.sequence = Some(self.arrivals.next());
        }
        let (done, rx) = oneshot::channel();
        let span = tracing::Span::current();
        self.registry.send(Route { observation, done, span }).await?;
        Ok(rx)
    }

    /// Routes every observation and waits until all are durable. `Ok(false)` when some
    /// will never be (the pipeline is shutting down or an actor failed); then the
    /// artifact actors are dropped ([`Pipeline::recover`]).
    pub async fn route_all_durable(&self, observations: Vec<Observation>) -> Result<bool, PipelineError> {
        let receivers = futures::future::join_all(observations.into_iter().map(|o| self.route(o))).await;
        let mut ok = true;
        let mut unavailable = None;
        for r in receivers {
            match r {
                Ok(rx) => ok &= matches!(rx.await, Ok(Ok(()))),
                Err(e) => unavailable = unavailable.or(Some(e)),
            }
        }
        if !ok || unavailable.is_some() {
            self.recover();
        }
        match unavailable {
            Some(e) => Err(e),
            None => Ok(ok),
        }
    }

    /// Applies one observation and waits until it and its records are durable; on
    /// failure the pipeline recovers ([`Pipeline::recover`]) before answering.
    pub async fn apply_durable(&self, observation: Observation) -> Result<(), PipelineError> {
        let rx = self.route(observation).await?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(rejected)) => {
                self.recover();
                Err(PipelineError::Rejected(rejected))
            }
            Err(_) => {
                self.recover();
                Err(PipelineError::NotDurable)
            }
        }
    }

    /// Recovery after a failed write: drops the artifact actors, whose in-memory state
    /// may hold what the store does not, so that a retry rebuilds the package from the
    /// store and rewrites its records.
    fn recover(&self) {
        self.reset_actors();
    }

    /// Writes everything pending (every writer); returns once it is durable.
    pub async fn drain(&self) -> Result<(), PipelineError> {
        for w in self.writers.all() {
            w.send(Drain).await?;
        }
        Ok(())
    }

    /// Drops every artifact actor (partition revocation); not on the hot path.
    pub fn reset_actors(&self) {
        self.registry.do_send(ResetActors);
    }

    pub async fn live_actors(&self) -> Result<usize, PipelineError> {
        Ok(self.registry.send(LiveActors).await?)
    }
}

/// The embedded observation bus: observations go straight to the artifact actors (the
/// registry's mailbox); published once they and their records are durable.
#[async_trait::async_trait]
impl crate::ports::ObservationBus for Pipeline {
    async fn publish(
        &self,
        observations: Vec<Observation>,
        _: &crate::ports::Origin<'_>,
    ) -> Result<(), crate::ports::PublishError> {
        use tracing::Instrument;
        let route = tracing::info_span!("vex.route", vex.observations = observations.len());
        match self.route_all_durable(observations).instrument(route).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(crate::ports::PublishError::Transient("observations not made durable".into())),
            Err(e) => Err(crate::ports::PublishError::Transient(format!("observations not routed: {e}"))),
        }
    }
}

impl crate::trust::Recompute for Pipeline {
    fn recompute_package(
        &self,
        tenant: &str,
        package: &str,
        reason: &'static str,
    ) -> crate::trust::BoxFut<Result<usize, String>> {
        let registry = self.registry.clone();
        let (done, rx) = oneshot::channel();
        let msg = RecomputePackage { tenant: tenant.to_string(), package: package.to_string(), reason, done };
        Box::pin(async move {
            registry.send(msg).await.map_err(|e| format!("actor pipeline unavailable: {e}"))?;
            match rx.await {
                Ok(Ok(n)) => Ok(n),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("the package's actor stopped before its records were durable".into()),
            }
        })
    }

    fn live_packages(&self, tenant: &str) -> crate::trust::BoxFut<Result<Vec<String>, String>> {
        let registry = self.registry.clone();
        let msg = LivePackages { tenant: tenant.to_string() };
        Box::pin(async move { registry.send(msg).await.map_err(|e| format!("actor pipeline unavailable: {e}")) })
    }
}

/// Checks an observation received from the observations topic (or stdin) and
/// recomputes its id: the artifact key must parse and the package must be its package.
/// A version marker must name its package as artifact and its document.
pub fn accept_observation(mut o: Observation) -> Result<Observation, String> {
    if !o.kind.is_statement() {
        if o.artifact != o.package || o.document_id.as_deref().map_or(true, |d| d.trim().is_empty()) {
            return Err("a version marker names its package as artifact and its document id".into());
        }
        if o.tenant.trim().is_empty() {
            return Err("tenant is empty".into());
        }
        o.id = o.compute_id().map_err(|e| format!("version marker has no canonical form: {e}"))?.into();
        return Ok(o);
    }
    let k = parse_key(&o.artifact).map_err(|e| format!("artifact {:?}: {e}", o.artifact))?;
    if *k.package != *o.package {
        return Err(format!(
            "package {:?} is not the package of artifact {:?} ({:?})",
            o.package, o.artifact, k.package
        ));
    }
    if o.tenant.trim().is_empty() {
        return Err("tenant is empty".into());
    }
    if o.vulnerability.trim().is_empty() {
        return Err("vulnerability is empty".into());
    }
    o.id = o.compute_id().map_err(|e| format!("observation has no canonical form: {e}"))?.into();
    Ok(o)
}

/// `signature.reason` of an observation that claimed a signature status without the
/// internal hop's tag to back it.
pub const UNAUTHENTICATED_CLAIM: SignatureReason = SignatureReason::UnauthenticatedClaim;

/// Marks down an observation whose tag did not verify: a claimed `verified` (or `failed`)
/// counts as `unsigned`; the issuer stays as claimed. An observation already claiming
/// `unsigned` claims nothing this service must vouch for and is left as it is.
pub fn mark_unauthenticated(o: &mut Observation) {
    if o.signature.status != SignatureStatus::Unsigned {
        o.signature.status = SignatureStatus::Unsigned;
        o.signature.reason = Some(UNAUTHENTICATED_CLAIM);
    }
}

/// Parses one message of the observations topic (the documented JSON form). `authentic`
/// says whether the message's tag verifies for the parsed observation; when it does not,
/// the observation is marked down ([`mark_unauthenticated`]) before its id is computed,
/// so a marked-down forgery never shares a genuine observation's id.
pub fn parse_observation(bytes: &[u8], authentic: impl FnOnce(&Observation) -> bool) -> Result<Observation, String> {
    let mut o: Observation = serde_json::from_slice(bytes).map_err(|e| format!("not an observation: {e}"))?;
    if !authentic(&o) {
        // A marker retracts an issuer's statements: only this service's ledger makes one.
        if !o.kind.is_statement() {
            return Err("a version marker without this service's tag (vex-lens-mac) is refused".into());
        }
        mark_unauthenticated(&mut o);
    }
    accept_observation(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::consensus::{batch, ConsensusRecord, PairKey};
    use crate::domain::model::Status;
    use crate::domain::version::VersionedRecord;
    use crate::ports::{ChangeEvent, ObservationStore, RecordQuery, RecordStore, StoreError, Stores, TimedRecord};
    use crate::stores::contract::sample_observation;
    use crate::stores::embedded::EmbeddedStore;

    #[test]
    fn observation_messages_are_checked_and_reidentified() {
        let o = sample_observation("t", "acme", "pkg:npm/a@1.0.0", "CVE-2024-1", Status::Affected);
        let mut tampered = o.clone();
        tampered.id = "forged".into();
        let got = parse_observation(serde_json::to_string(&tampered).unwrap().as_bytes(), |_| true).unwrap();
        assert_eq!(got.id, o.id);
        let mut wrong = o.clone();
        wrong.package = "pkg:npm/b".into();
        assert!(parse_observation(serde_json::to_string(&wrong).unwrap().as_bytes(), |_| true).is_err());
        assert!(parse_observation(b"{\"x\":1}", |_| true).is_err());
    }

    /// A version marker (issue 17 item 4) retracts an issuer's statements: from the
    /// observations topic it is accepted only with this service's tag, and only naming its
    /// package as artifact and its document.
    #[test]
    fn a_version_marker_needs_the_tag_and_its_document() {
        use crate::domain::ledger::{DocumentKey, DocumentVersion};
        let v = DocumentVersion {
            key: DocumentKey { tenant: "t".into(), issuer: Some("acme".into()), document_id: "doc".into() },
            digest: "sha256:02".into(),
            version: Some("2".into()),
            format: crate::domain::model::SourceFormat::Openvex,
            newest: crate::domain::timestamp::Timestamp::parse("2024-01-01T00:00:00Z").unwrap(),
            packages: Default::default(),
        };
        let marker = v.marker("pkg:npm/b");
        let bytes = serde_json::to_vec(&marker).unwrap();
        assert_eq!(parse_observation(&bytes, |_| true).unwrap(), marker);
        let e = parse_observation(&bytes, |_| false).unwrap_err();
        assert!(e.contains("version marker without this service's tag"), "{e}");
        let mut elsewhere = marker.clone();
        elsewhere.artifact = "pkg:npm/b@1".into();
        assert!(parse_observation(&serde_json::to_vec(&elsewhere).unwrap(), |_| true).is_err());
        let mut no_document = marker;
        no_document.document_id = None;
        assert!(parse_observation(&serde_json::to_vec(&no_document).unwrap(), |_| true).is_err());
    }

    #[test]
    fn an_unauthenticated_signature_claim_counts_as_unsigned_with_its_own_id() {
        let mut genuine = sample_observation("t", "acme", "pkg:npm/a@1.0.0", "CVE-2024-1", Status::Affected);
        genuine.signature.status = SignatureStatus::Verified;
        genuine.signature.keyid = Some("k1".into());
        let genuine = genuine.with_id().unwrap();
        let bytes = serde_json::to_vec(&genuine).unwrap();
        let kept = parse_observation(&bytes, |_| true).unwrap();
        assert_eq!(kept.signature.status, SignatureStatus::Verified);
        assert_eq!(kept.id, genuine.id);
        let forged = parse_observation(&bytes, |_| false).unwrap();
        assert_eq!(forged.signature.status, SignatureStatus::Unsigned);
        assert_eq!(forged.signature.reason, Some(UNAUTHENTICATED_CLAIM));
        assert_eq!(forged.issuer.as_deref(), Some("acme"), "the issuer stays as claimed");
        assert_ne!(forged.id, genuine.id, "the marked-down forgery has its own id");
        let mut failed = genuine.clone();
        failed.signature.status = SignatureStatus::Failed;
        let failed = parse_observation(&serde_json::to_vec(&failed).unwrap(), |_| false).unwrap();
        assert_eq!(failed.signature.status, SignatureStatus::Unsigned);
        // An untagged observation that claims nothing is unchanged (same id as if tagged).
        let plain = sample_observation("t", "acme", "pkg:npm/a@1.0.0", "CVE-2024-2", Status::Fixed).with_id().unwrap();
        let got = parse_observation(&serde_json::to_vec(&plain).unwrap(), |_| false).unwrap();
        assert_eq!(got.id, plain.id);
        // A signature reason is a code: an invented one is no observation (it was kept
        // as free text in the record before), a known one reads as it is written.
        let mut v = serde_json::to_value(&plain).unwrap();
        v["signature"]["reason"] = "trust me".into();
        let e = parse_observation(&serde_json::to_vec(&v).unwrap(), |_| false).unwrap_err();
        assert!(e.contains("trust me"), "{e}");
        v["signature"]["reason"] = "unknown_key".into();
        let got = parse_observation(&serde_json::to_vec(&v).unwrap(), |_| false).unwrap();
        assert_eq!(got.signature.reason, Some(SignatureReason::UnknownKey));
    }

    fn settings(max_live: usize) -> PipelineSettings {
        PipelineSettings {
            workers: 2,
            writers: 2,
            artifact_threads: 2,
            writer: WriterSettings {
                batch_max: 3,
                flush_after: std::time::Duration::from_millis(2),
                retry_initial: std::time::Duration::from_millis(5),
                retry_max: std::time::Duration::from_millis(20),
                store_timeout: std::time::Duration::from_secs(10),
                mailbox_capacity: 4,
            },
            registry: RegistrySettings {
                max_live,
                max_observations: 50_000,
                idle_evict: std::time::Duration::from_secs(60),
                mailbox_capacity: 4,
                max_records_in_flight: 3,
            },
        }
    }

    fn observations() -> Vec<Observation> {
        let mut v = Vec::new();
        for (i, pkg) in ["a", "b", "c", "d"].iter().enumerate() {
            for (j, st) in [Status::Affected, Status::NotAffected, Status::Fixed].iter().enumerate() {
                let issuer = format!("issuer{j}");
                v.push(sample_observation("t", &issuer, &format!("pkg:npm/{pkg}@1.{i}.0"), "CVE-2024-9", *st));
                v.push(sample_observation("t", &issuer, &format!("pkg:npm/{pkg}"), "CVE-2024-8", *st));
            }
        }
        v
    }

    /// Routes every observation one at a time (packages in turn), then everything again
    /// in reverse: the stored records, the batch computation's and the live actors
    /// after the first pass.
    fn route_and_replay(settings: PipelineSettings) -> (Vec<ConsensusRecord>, Vec<ConsensusRecord>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let sys = two_threads();
        sys.block_on(async move {
            let store = Arc::new(EmbeddedStore::open(&path).unwrap());
            let p = Pipeline::start(Stores::of(store.clone()), Arc::new(Policy::default()), settings);
            let obs = observations();
            // One at a time, interleaving packages: actors are evicted and rebuilt.
            for o in &obs {
                assert!(p.route_all_durable(vec![o.clone()]).await.unwrap());
            }
            let live = p.live_actors().await.unwrap();
            // Everything again, concurrently and in reverse: replays change nothing.
            let replay: Vec<Observation> = obs.iter().rev().cloned().collect();
            assert!(p.route_all_durable(replay).await.unwrap());
            p.drain().await.unwrap();
            let (expected, _) = batch(obs, &Policy::default(), false);
            (store.list_records(None, None).await.unwrap(), expected, live)
        })
    }

    /// An actix system on a tokio runtime of two worker threads.
    fn two_threads() -> actix::SystemRunner {
        actix::System::with_tokio_rt(|| {
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
        })
    }

    fn digests(records: &[ConsensusRecord]) -> Vec<&str> {
        records.iter().map(|r| r.consensus_digest.as_str()).collect()
    }

    /// The actors' records equal the batch computation, also when actors are evicted
    /// (max_live 1) and rebuilt from the store, and when everything is replayed.
    #[test]
    fn pipeline_equals_batch_with_eviction_and_replay() {
        let (records, expected, live) = route_and_replay(settings(1));
        assert!(live <= 1, "live actors bounded, got {live}");
        assert_eq!(digests(&records), digests(&expected));
    }

    /// Beyond `max_observations` held by the live states, idle actors are evicted (each
    /// package here has 6 observations: a bound of 4 leaves at most the one in use) and
    /// rebuilt from the store when their package comes back, with the batch's records;
    /// under a bound they fit in, all 4 stay.
    #[test]
    fn actors_beyond_the_observation_bound_are_evicted_and_rebuilt() {
        let mut bounded = settings(100);
        bounded.registry.max_observations = 4;
        let (records, expected, live) = route_and_replay(bounded);
        assert!(live <= 1, "the states' observations are not bounded: {live} live actors");
        assert_eq!(digests(&records), digests(&expected));
        let (records, expected, live) = route_and_replay(settings(100));
        assert_eq!(live, 4, "actors evicted under a bound they fit in");
        assert_eq!(digests(&records), digests(&expected));
    }

    /// A package whose actor left with every write durable is rebuilt without a heal: an
    /// observation stored behind the pipeline's back (what a crash between an observation's
    /// write and its records' leaves) gets no record from the next actor. After a reset
    /// (partition revocation, failed write) the package heals: the record is written.
    #[test]
    fn a_package_left_clean_is_rebuilt_without_a_heal_and_one_after_a_reset_heals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let sys = two_threads();
        sys.block_on(async move {
            let store = Arc::new(EmbeddedStore::open(&path).unwrap());
            let p = Pipeline::start(Stores::of(store.clone()), Arc::new(Policy::default()), settings(1));
            let a =
                |issuer: &str, vuln: &str| sample_observation("t", issuer, "pkg:npm/a@1.0.0", vuln, Status::Affected);
            let other = |issuer: &str| sample_observation("t", issuer, "pkg:npm/b@1.0.0", "CVE-2024-1", Status::Fixed);
            let orphan = a("vendor", "CVE-2024-2").with_id().unwrap();
            let orphan_pair = PairKey {
                tenant: "t".into(),
                artifact: orphan.artifact.to_string(),
                vulnerability: "CVE-2024-2".into(),
            };
            // Package a, then b: a's actor is evicted (one live actor), its writes durable.
            assert!(p.route_all_durable(vec![a("vendor", "CVE-2024-1")]).await.unwrap());
            assert!(p.route_all_durable(vec![other("vendor")]).await.unwrap());
            store.put_observations(std::slice::from_ref(&orphan)).await.unwrap();
            assert!(p.route_all_durable(vec![a("scanner", "CVE-2024-1")]).await.unwrap());
            assert!(store.get_record(&orphan_pair).await.unwrap().is_none(), "rebuilt with a heal");
            assert!(p.route_all_durable(vec![other("scanner")]).await.unwrap());
            p.reset_actors();
            assert!(p.route_all_durable(vec![a("distro", "CVE-2024-1")]).await.unwrap());
            assert!(store.get_record(&orphan_pair).await.unwrap().is_some(), "not healed after a reset");
        });
    }

    /// A trust change installed in the live policies, then a recompute of every package
    /// (live or rebuilt from the store): the stored records equal the batch computation
    /// under the changed policy, and another tenant's records are untouched.
    #[test]
    fn recompute_after_a_trust_change_equals_batch_under_the_new_policy() {
        use crate::domain::trust::{Tier, TrustChange};
        use crate::trust::Recompute;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let sys = two_threads();
        let (records, expected, other, other_expected) = sys.block_on(async move {
            let store = Arc::new(EmbeddedStore::open(&path).unwrap());
            let policies = Arc::new(Policies::new(Policy::default()));
            let p = Pipeline::start_with_policies(Stores::of(store.clone()), policies.clone(), settings(1));
            let obs = observations();
            let mut other_obs = obs.clone();
            for o in &mut other_obs {
                o.tenant = "u".into();
                *o = o.clone().with_id().unwrap();
            }
            assert!(p.route_all_durable(obs.iter().chain(&other_obs).cloned().collect()).await.unwrap());
            let change = TrustChange::Issuer { id: "issuer0".into(), tier: Some(Tier::Authoritative), weight: None };
            let changed = policies.trust("t").changed(policies.base(), &change).unwrap();
            let after = (*policies.install(changed).unwrap()).clone();
            let live_before = p.live_packages("t").await.unwrap();
            for pkg in ["pkg:npm/a", "pkg:npm/b", "pkg:npm/c", "pkg:npm/d"] {
                p.recompute_package("t", pkg, crate::telemetry::RECOMPUTE_ISSUER_UPDATE).await.unwrap();
            }
            let live_after = p.live_packages("t").await.unwrap();
            assert!(
                live_after.iter().all(|x| live_before.contains(x)),
                "actors made for the recompute alone are dropped: {live_before:?} -> {live_after:?}"
            );
            let (expected, _) = batch(obs, &after, false);
            let (other_expected, _) = batch(other_obs, &Policy::default(), false);
            (
                store.list_records(Some("t"), None).await.unwrap(),
                expected,
                store.list_records(Some("u"), None).await.unwrap(),
                other_expected,
            )
        });
        assert_ne!(digests(&expected), digests(&other_expected), "fixture: the change changes the records");
        assert_eq!(digests(&records), digests(&expected));
        assert_eq!(digests(&other), digests(&other_expected), "the other tenant keeps its records");
    }

    /// A store whose writes fail (retriably) a few times first.
    struct FlakyStore {
        inner: EmbeddedStore,
        failures_left: std::sync::atomic::AtomicU32,
        /// The first `put_records` never answers.
        hang_once: std::sync::atomic::AtomicBool,
    }

    impl FlakyStore {
        fn fail(&self) -> Result<(), StoreError> {
            let left = self.failures_left.load(std::sync::atomic::Ordering::SeqCst);
            if left > 0 {
                self.failures_left.store(left - 1, std::sync::atomic::Ordering::SeqCst);
                return Err(StoreError::Unavailable("flaky".into()));
            }
            Ok(())
        }
    }

    /// Faults in the observations role: writes and loads fail first.
    #[async_trait::async_trait]
    impl ObservationStore for FlakyStore {
        async fn put_observations(&self, o: &[Observation]) -> Result<(), StoreError> {
            self.fail()?;
            self.inner.put_observations(o).await
        }
        async fn observations_for_package(&self, t: &str, p: &str) -> Result<Vec<Observation>, StoreError> {
            self.fail()?;
            self.inner.observations_for_package(t, p).await
        }
        async fn tenant_packages(&self, t: &str) -> Result<Vec<String>, StoreError> {
            self.inner.tenant_packages(t).await
        }
    }

    /// Faults in the records role: writes fail first (the first may hang); reads pass.
    #[async_trait::async_trait]
    impl RecordStore for FlakyStore {
        async fn put_records(&self, r: &[VersionedRecord], at: i64) -> Result<(), StoreError> {
            if self.hang_once.swap(false, std::sync::atomic::Ordering::SeqCst) {
                futures::future::pending::<()>().await;
            }
            self.fail()?;
            self.inner.put_records(r, at).await
        }
        async fn get_record(&self, p: &PairKey) -> Result<Option<ConsensusRecord>, StoreError> {
            self.inner.get_record(p).await
        }
        async fn list_records(&self, t: Option<&str>, s: Option<i64>) -> Result<Vec<ConsensusRecord>, StoreError> {
            self.inner.list_records(t, s).await
        }
        async fn query_records(&self, q: &RecordQuery) -> Result<Vec<TimedRecord>, StoreError> {
            self.inner.query_records(q).await
        }
        async fn record_history(&self, p: &PairKey) -> Result<Vec<TimedRecord>, StoreError> {
            self.inner.record_history(p).await
        }
        async fn changes_after(&self, t: &str, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
            self.inner.changes_after(t, after, limit).await
        }
        async fn change_tail(&self, t: &str) -> Result<u64, StoreError> {
            self.inner.change_tail(t).await
        }
    }

    /// Store errors are retried until they succeed: nothing is dropped, and completion
    /// signals fire only once the writes went through.
    #[test]
    fn store_errors_are_retried_never_dropped() {
        retried_until_durable(7, false);
    }

    /// A store call that never answers is abandoned after the timeout and retried.
    #[test]
    fn a_hung_store_call_is_retried() {
        retried_until_durable(0, true);
    }

    fn retried_until_durable(failures: u32, hang: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let sys = two_threads();
        let (records, expected) = sys.block_on(async move {
            let inner = EmbeddedStore::open(&path).unwrap();
            let flaky =
                Arc::new(FlakyStore { inner: inner.clone(), failures_left: failures.into(), hang_once: hang.into() });
            let stores = Stores { observations: flaky.clone(), records: flaky, ..Stores::of(Arc::new(inner.clone())) };
            let mut s = settings(100);
            s.writer.store_timeout = std::time::Duration::from_millis(100);
            let p = Pipeline::start(stores, Arc::new(Policy::default()), s);
            let obs = observations();
            let all = tokio::time::timeout(std::time::Duration::from_secs(30), p.route_all_durable(obs.clone()));
            assert!(all.await.expect("no hang").unwrap(), "every observation becomes durable");
            let (expected, _) = batch(obs, &Policy::default(), false);
            (inner.list_records(None, None).await.unwrap(), expected)
        });
        assert_eq!(digests(&records), digests(&expected));
    }

    /// After a restart (state in the store), a burst of replayed and new observations for
    /// the same packages, all in flight at once, completes and equals the batch result.
    #[test]
    fn restart_with_a_concurrent_burst_completes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let sys = two_threads();
        let (records, expected) = sys.block_on(async move {
            let store = Arc::new(EmbeddedStore::open(&path).unwrap());
            let mut obs = Vec::new();
            for pkg in ["a", "b", "c"] {
                for i in 0..300 {
                    let st = [Status::Affected, Status::NotAffected, Status::Fixed][i % 3];
                    let artifact = format!("pkg:npm/{pkg}@1.{}.0", i % 7);
                    obs.push(sample_observation(
                        "t",
                        &format!("issuer{}", i % 4),
                        &artifact,
                        &format!("CVE-2024-{}", i % 50),
                        st,
                    ));
                }
            }
            let mut s = settings(100);
            s.writer.batch_max = 2000;
            s.writer.mailbox_capacity = 16;
            s.registry.mailbox_capacity = 16;
            let first = Pipeline::start(Stores::of(store.clone()), Arc::new(Policy::default()), s.clone());
            assert!(first.route_all_durable(obs[..400].to_vec()).await.unwrap());
            let second = Pipeline::start(Stores::of(store.clone()), Arc::new(Policy::default()), s);
            let burst = tokio::time::timeout(std::time::Duration::from_secs(60), second.route_all_durable(obs.clone()));
            assert!(burst.await.expect("the burst completes").unwrap());
            let (expected, _) = batch(obs, &Policy::default(), false);
            (store.list_records(None, None).await.unwrap(), expected)
        });
        assert_eq!(digests(&records), digests(&expected));
    }
}
