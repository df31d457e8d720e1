//! The feed source: pulls a CSAF provider's distribution directory (OASIS CSAF 2.0
//! section 7) and hands each new or changed document to the one ingest flow
//! (`crate::ingest`), remembering what it did in the feed state port
//! ([`FeedStateStore`]). A thin source: the rules are the pure [`plan`] core, the HTTP is
//! the [`fetch`] adapter, the documents go through [`Ingest::document`] like every other
//! source's.
//!
//! Invariants: a document is recorded done (`emitted`, `dead_lettered`) only once the
//! ingest flow acknowledged it (durable, or its dead letter taken), else it is `failed`
//! and retried with backoff; a document whose bytes and signature are those already
//! acknowledged is not emitted again (a new listing of the same bytes changes nothing);
//! the watermark moves only over settled rows; the state is saved every
//! [`SAVE_EVERY`] documents and at the end of a run (a crash in between re-emits at most
//! those documents, which the idempotent pipeline absorbs); a feed-level failure (the
//! metadata, `publisher.namespace` not naming the configured issuer) stops that feed
//! only; nothing but the provider's own origin is contacted.

pub mod fetch;
pub mod plan;

use crate::config::FeedConfig;
use crate::domain::model::{IngestContext, Provenance};
use crate::ingest::{Ack, Document, Ingest};
use crate::ports::feed_state::{
    DirectoryState, DocDigests, DocOutcome, DocState, FeedFailure, FeedState, MetadataState,
};
use crate::ports::{Clock, DeadLetterSink, FeedStateStore};
use fetch::{FetchError, Fetcher, Got};
use plan::{FeedError, HashFiles, Metadata, Role, Verdict, Warning};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Documents handled between two saves of the state.
pub const SAVE_EVERY: usize = 25;
/// Largest `provider-metadata.json` read.
pub const METADATA_LIMIT: usize = 1 << 20;
/// Largest `index.txt` / `changes.csv` read.
pub const LIST_LIMIT: usize = 64 << 20;
/// Largest hash file or `.asc` read.
pub const SIDE_LIMIT: usize = 64 << 10;
/// First and largest delay before a failed document is fetched again (doubling, with
/// jitter: `crate::backoff`).
pub const RETRY_INITIAL: Duration = Duration::from_secs(60);
pub const RETRY_MAX: Duration = Duration::from_secs(6 * 3600);
/// A deterministic failpoint for crash tests: `abort_after_emits:<n>` aborts the process
/// right after the n-th acknowledged emit of a run, before the state records it.
pub const FAILPOINT_ENV: &str = "VEXLENS_FEED_FAILPOINT";

/// What one run of one feed did (printed by `feed run`, one JSON object per feed).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub feed: String,
    /// No feed-level failure.
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Responses by HTTP status (`error`: no response).
    pub requests: BTreeMap<String, u64>,
    /// Documents fetched (200).
    pub fetched: u64,
    /// Acknowledged by the ingest flow as durable.
    pub emitted: u64,
    /// Acknowledged by the ingest flow as dead-lettered.
    pub dead_lettered: u64,
    /// Fetched again, but bytes and signature as already acknowledged: not emitted.
    pub unchanged: u64,
    /// Older than their listing (a stale cache): fetched again later.
    pub deferred: u64,
    /// Rejected (retried with backoff, or for good: path rules, too large), by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Not emitted on purpose (TLP, publisher), by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Counted rule warnings (year folder, file name, no hash, no signature), by kind.
    pub warnings: BTreeMap<String, u64>,
    /// `changes.csv` went back and was reconciled against `index.txt`.
    pub rewinds: u64,
    /// `changes.csv` rows skipped: malformed, duplicate.
    pub malformed_rows: u64,
    pub duplicate_rows: u64,
    /// A dry run (`feed check`): the documents a run would fetch now (directory URL and
    /// path).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would_fetch: Vec<String>,
}

impl Summary {
    fn count(map: &mut BTreeMap<String, u64>, key: &str) {
        *map.entry(key.to_string()).or_default() += 1;
    }
}

/// One configured feed, ready to run.
pub struct FeedSource {
    cfg: FeedConfig,
    tenant: String,
    /// The configured issuer's names (id, display name, aliases).
    issuer_names: Vec<String>,
    max_bytes: usize,
    since_ms: Option<i64>,
    fetcher: Fetcher,
    state: Arc<dyn FeedStateStore>,
    emit: Option<Emitter>,
    clock: Arc<dyn Clock>,
    /// [`FAILPOINT_ENV`]'s `abort_after_emits:<n>`.
    abort_after_emits: Option<u64>,
}

/// Where a feed's documents go.
#[derive(Clone)]
pub enum Emitter {
    /// The embedded pipeline: the ingest flow and its dead-letter sink (acknowledged
    /// when durable or dead-lettered).
    Ingest { ingest: Ingest, dead_letters: Arc<dyn DeadLetterSink> },
    /// The documents topic (acknowledged by the broker, `acks=all`), with the headers
    /// `tenant`, `correlation-id` and `provenance` (`feed:<name>`), keyed by the
    /// document's URL (its versions stay in order on one partition).
    Kafka { producer: rdkafka::producer::FutureProducer, topic: String, shutdown: tokio::sync::watch::Receiver<bool> },
}

/// What a feed needs besides its configuration.
#[derive(Clone)]
pub struct FeedDeps {
    pub state: Arc<dyn FeedStateStore>,
    /// `None`: a dry run (`feed check`): the lists are read, the plan is reported, no
    /// document is fetched or emitted and the state is not saved.
    pub emit: Option<Emitter>,
    pub clock: Arc<dyn Clock>,
}

/// How one document of a run ended (before it is written into the state).
enum Handled {
    Done(DocOutcome, Option<String>, Option<DocDigests>),
    Failed(String, Option<DocDigests>),
}

impl FeedSource {
    /// The feed `cfg` of tenant `tenant`, whose issuer is known by `issuer_names`,
    /// fetching documents of at most `max_bytes`.
    pub fn new(
        cfg: FeedConfig,
        tenant: String,
        issuer_names: Vec<String>,
        max_bytes: usize,
        deps: FeedDeps,
    ) -> Result<FeedSource, fetch::ClientError> {
        let fetcher = Fetcher::new(&cfg.name, cfg.ca_file.as_deref(), cfg.rate, cfg.timeout_duration())?;
        let since_ms = cfg
            .since
            .as_deref()
            .and_then(|s| crate::domain::timestamp::Timestamp::parse(s).ok())
            .map(|t| t.unix_millis());
        Ok(FeedSource {
            cfg,
            tenant,
            issuer_names,
            max_bytes,
            since_ms,
            fetcher,
            state: deps.state,
            emit: deps.emit,
            clock: deps.clock,
            abort_after_emits: std::env::var(FAILPOINT_ENV)
                .ok()
                .and_then(|v| v.strip_prefix("abort_after_emits:").and_then(|n| n.parse().ok())),
        })
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Sets the feed's interval gauge and its last success: the state's, or now when it
    /// never succeeded (so the staleness alert counts from the start of the feed); and
    /// creates the feed's counter series at 0 (rewinds, bytes, documents by unreasoned
    /// outcome, `200` and `304` requests) before its first run, because `increase()` never
    /// counts a series' first sample: after a restart the first run can already rewind.
    pub async fn prime_metrics(&self, interval: Duration) {
        let m = crate::telemetry::metrics();
        let feed = crate::telemetry::FeedLabel { feed: self.cfg.name.clone() };
        let _ = m.feed_rewinds.get_or_create(&feed);
        let _ = m.feed_bytes.get_or_create(&feed);
        for outcome in PRIMED_OUTCOMES {
            let l = crate::telemetry::FeedOutcomeLabel {
                feed: self.cfg.name.clone(),
                outcome: outcome.to_string(),
                reason: String::new(),
            };
            let _ = m.feed_documents.get_or_create(&l);
        }
        for status in ["200", "304"] {
            let l = crate::telemetry::FeedStatusLabel { feed: self.cfg.name.clone(), status: status.to_string() };
            let _ = m.feed_requests.get_or_create(&l);
        }
        m.feed_interval.get_or_create(&feed).set(interval.as_secs() as i64);
        let last = self.state.load(&self.cfg.name).await.ok().flatten().and_then(|s| s.last_success_ms);
        m.feed_last_success.get_or_create(&feed).set(last.unwrap_or_else(|| self.clock.now_ms()) / 1000);
    }

    /// Checks the feed once: metadata, each allowed directory, every document owed; with
    /// `retry_all`, failed documents are retried now whatever their next retry time.
    pub async fn run_once(&self, retry_all: bool) -> Summary {
        let name = self.cfg.name.clone();
        let mut sum = Summary { feed: name.clone(), ok: true, ..Default::default() };
        let loaded = match self.state.load(&name).await {
            Ok(s) => s,
            Err(e) => {
                self.fail(&mut sum, FeedError::State(e.to_string()));
                return sum;
            }
        };
        // State is per (tenant, feed): a feed moved to another tenant starts afresh.
        let mut state =
            loaded.filter(|s| s.tenant == self.tenant).unwrap_or_else(|| FeedState::new(&name, &self.tenant));
        let result = self.sync(&mut state, retry_all, &mut sum).await;
        let now = self.clock.now_ms();
        state.last_attempt_ms = Some(now);
        match result {
            Ok(()) => {
                state.last_success_ms = Some(now);
                state.last_error = None;
            }
            Err(e) => {
                state.last_error = Some(FeedFailure { code: e.code().to_string(), message: e.to_string(), at_ms: now });
                self.fail(&mut sum, e);
            }
        }
        if self.emit.is_some() {
            if let Err(e) = self.state.save(&state).await {
                self.fail(&mut sum, FeedError::State(e.to_string()));
            }
        }
        sum.requests = self.fetcher.counters.take();
        if self.emit.is_some() {
            record_metrics(&sum, state.last_success_ms);
        }
        tracing::info!(
            event = "feed_run",
            feed = %name,
            ok = sum.ok,
            fetched = sum.fetched,
            emitted = sum.emitted,
            dead_lettered = sum.dead_lettered,
            rejected = sum.rejected.values().sum::<u64>(),
            skipped = sum.skipped.values().sum::<u64>(),
            "feed checked"
        );
        sum
    }

    fn fail(&self, sum: &mut Summary, e: FeedError) {
        crate::warn_event!(crate::telemetry::events::LogEvent::FeedFailed, feed = %self.cfg.name, reason = e.code(), error = %e, "feed stopped");
        sum.ok = false;
        sum.error_code = Some(e.code().to_string());
        sum.error = Some(e.to_string());
    }

    async fn sync(&self, state: &mut FeedState, retry_all: bool, sum: &mut Summary) -> Result<(), FeedError> {
        let url = plan::metadata_url(&self.cfg.url);
        let known = state.metadata.clone().filter(|m| m.url == url);
        let got = self
            .fetcher
            .get(&url, known.as_ref().map(|m| &m.validators).filter(|v| !v.is_empty()), METADATA_LIMIT)
            .await
            .map_err(|e| FeedError::Fetch(e.to_string()))?;
        let meta = match (got, known) {
            (Got::Body { bytes, validators }, _) => {
                let m = plan::parse_metadata(&bytes, &url)?;
                state.metadata = Some(MetadataState {
                    url: url.clone(),
                    validators,
                    role: m.role.as_str().to_string(),
                    namespace: m.namespace.clone(),
                    directories: m.directories.clone(),
                });
                m
            }
            (Got::NotModified, Some(k)) => Metadata {
                role: Role::parse(&k.role).unwrap_or(Role::CsafTrustedProvider),
                namespace: k.namespace,
                directories: k.directories,
            },
            (Got::NotModified, None) => {
                return Err(FeedError::Fetch(format!("{url}: 304 for a request that was not conditional")))
            }
            (Got::NotFound, _) => return Err(FeedError::Fetch(format!("{url}: not found"))),
        };
        if !plan::namespace_names_issuer(&meta.namespace, &self.issuer_names) {
            return Err(FeedError::PublisherMismatch { namespace: meta.namespace, issuer: self.cfg.issuer.clone() });
        }
        state.directories.retain(|d, _| meta.directories.contains(d));
        for dir in &meta.directories {
            if !self.cfg.tlp.contains(&plan::folder_tlp(dir)) {
                Summary::count(&mut sum.skipped, "tlp_not_allowed_directory");
                continue;
            }
            self.sync_directory(dir, &meta, state, retry_all, sum).await?;
        }
        Ok(())
    }

    async fn sync_directory(
        &self,
        dir: &str,
        meta: &Metadata,
        state: &mut FeedState,
        retry_all: bool,
        sum: &mut Summary,
    ) -> Result<(), FeedError> {
        let fetch_err = |e: FetchError| FeedError::Fetch(e.to_string());
        let ds = state.directories.entry(dir.to_string()).or_default();
        let first_sync = !ds.synced;
        let conditional = |v: &crate::ports::feed_state::Validators| (!v.is_empty()).then_some(v.clone());
        let changes_validators = conditional(&ds.changes);
        // New validators are stored only once every row was handled (see the port).
        let mut new_changes = None;
        let mut new_index = None;
        let changes =
            match self.fetcher.get(&format!("{dir}changes.csv"), changes_validators.as_ref(), LIST_LIMIT).await {
                Ok(Got::Body { bytes, validators }) => {
                    new_changes = Some(validators);
                    Some(plan::parse_changes(&String::from_utf8_lossy(&bytes)))
                }
                Ok(Got::NotModified) => None,
                Ok(Got::NotFound) => Some(plan::Changes::default()),
                Err(e) => return Err(fetch_err(e)),
            };
        if let Some(c) = &changes {
            sum.malformed_rows += c.malformed as u64;
            sum.duplicate_rows += c.duplicates as u64;
        }
        let now = self.clock.now_ms();
        let mut p = plan::plan(changes.as_ref(), None, ds, self.since_ms, now, retry_all);
        let changes_missing = changes.as_ref().is_some_and(|c| c.rows.is_empty());
        if first_sync || p.rewound || changes_missing {
            let index_validators = if first_sync { None } else { conditional(&ds.index) };
            let index = match self.fetcher.get(&format!("{dir}index.txt"), index_validators.as_ref(), LIST_LIMIT).await
            {
                Ok(Got::Body { bytes, validators }) => {
                    new_index = Some(validators);
                    Some(plan::parse_index(&String::from_utf8_lossy(&bytes)))
                }
                Ok(Got::NotModified | Got::NotFound) => None,
                Err(e) => return Err(fetch_err(e)),
            };
            if p.rewound {
                sum.rewinds += 1;
            }
            let rewound = p.rewound;
            p = plan::plan(changes.as_ref(), index.as_deref(), ds, self.since_ms, now, retry_all);
            p.rewound = rewound;
        }
        if self.emit.is_none() {
            sum.would_fetch.extend(p.fetch.iter().map(|c| format!("{dir}{}", c.path)));
            return Ok(());
        }
        for (n, cand) in p.fetch.iter().enumerate() {
            let handled = self.document(dir, meta, cand, state, sum).await;
            if self.abort_after_emits.is_some_and(|n| sum.emitted >= n) {
                // The failpoint: emitted and acknowledged, not yet in the state.
                std::process::abort();
            }
            let ds = state.directories.entry(dir.to_string()).or_default();
            let prev = ds.documents.get(&cand.path);
            let failures = prev.map_or(0, |d| if d.outcome.settled() { 0 } else { d.failures });
            let entry = match handled {
                Handled::Done(outcome, reason, digests) => {
                    DocState { listed: cand.listed.clone(), outcome, reason, digests, failures: 0, next_retry_ms: None }
                }
                Handled::Failed(reason, digests) => {
                    let failures = failures + 1;
                    let delay = crate::backoff::delays(RETRY_INITIAL, RETRY_MAX)
                        .nth(failures.saturating_sub(1) as usize)
                        .unwrap_or(RETRY_MAX);
                    DocState {
                        // A failed document keeps the listing last handled, so that the
                        // watermark does not pass it.
                        listed: cand.listed.clone(),
                        outcome: DocOutcome::Failed,
                        reason: Some(reason),
                        digests: digests.or_else(|| prev.and_then(|d| d.digests.clone())),
                        failures,
                        next_retry_ms: Some(self.clock.now_ms() + delay.as_millis() as i64),
                    }
                }
            };
            ds.documents.insert(cand.path.clone(), entry);
            if (n + 1) % SAVE_EVERY == 0 {
                if let Err(e) = self.state.save(state).await {
                    return Err(FeedError::State(e.to_string()));
                }
            }
        }
        let ds = state.directories.entry(dir.to_string()).or_default();
        if let Some(c) = &changes {
            let from = if p.rewound { None } else { ds.watermark_ms };
            ds.watermark_ms = plan::watermark(c, ds, from);
            ds.rows_seen = c.rows.len();
        }
        // Every row listed was handled (settled, or failed with its retry recorded).
        if let Some(v) = new_changes {
            ds.changes = v;
        }
        if let Some(v) = new_index {
            ds.index = v;
        }
        ds.synced = true;
        Ok(())
    }

    /// A hash file or `.asc` beside a document: `Ok(None)` when absent.
    async fn side(&self, url: &str) -> Result<Option<Vec<u8>>, FetchError> {
        match self.fetcher.get(url, None, SIDE_LIMIT).await? {
            Got::Body { bytes, .. } => Ok(Some(bytes)),
            Got::NotFound => Ok(None),
            Got::NotModified => Err(FetchError::Status { url: url.to_string(), status: 304 }),
        }
    }

    fn reject(&self, sum: &mut Summary, path: &str, reason: &str) {
        Summary::count(&mut sum.rejected, reason);
        crate::warn_event!(crate::telemetry::events::LogEvent::FeedDocumentRejected, feed = %self.cfg.name, path = %path, reason = reason, "feed document rejected");
    }

    async fn document(
        &self,
        dir: &str,
        meta: &Metadata,
        cand: &plan::Candidate,
        state: &FeedState,
        sum: &mut Summary,
    ) -> Handled {
        let path = cand.path.as_str();
        let url = match plan::resolve(dir, path) {
            Ok(u) => u,
            Err(r) => {
                self.reject(sum, path, r.code());
                return Handled::Done(DocOutcome::Rejected, Some(r.code().to_string()), None);
            }
        };
        let bytes = match self.fetcher.get(&url, None, self.max_bytes).await {
            Ok(Got::Body { bytes, .. }) => bytes,
            Ok(Got::NotFound) => {
                self.reject(sum, path, "not_found");
                return Handled::Failed("not_found".into(), None);
            }
            Ok(Got::NotModified) => {
                self.reject(sum, path, "http_status");
                return Handled::Failed("http_status".into(), None);
            }
            Err(e @ FetchError::TooLarge { .. }) => {
                self.reject(sum, path, e.code());
                return Handled::Done(DocOutcome::Rejected, Some(e.code().to_string()), None);
            }
            Err(e) => {
                self.reject(sum, path, e.code());
                return Handled::Failed(e.code().to_string(), None);
            }
        };
        sum.fetched += 1;
        let sides = async {
            let a = self.side(&format!("{url}.sha256")).await?;
            let b = self.side(&format!("{url}.sha512")).await?;
            let c = self.side(&format!("{url}.asc")).await?;
            Ok::<_, FetchError>((a, b, c))
        };
        let (sha256, sha512, asc) = match sides.await {
            Ok(s) => s,
            Err(e) => {
                self.reject(sum, path, e.code());
                return Handled::Failed(e.code().to_string(), None);
            }
        };
        let digests = DocDigests {
            document: plan::sha256_hex(&bytes),
            sha256_file: sha256.as_deref().map(plan::sha256_hex),
            sha512_file: sha512.as_deref().map(plan::sha256_hex),
            asc: asc.as_deref().map(plan::sha256_hex),
        };
        let file_name = path.rsplit('/').next().unwrap_or(path);
        let files = HashFiles { sha256: sha256.as_deref(), sha512: sha512.as_deref() };
        match plan::check_hashes(&bytes, file_name, files, meta.role) {
            Ok(true) => {}
            Ok(false) => Summary::count(&mut sum.warnings, Warning::NoHash.code()),
            Err(h) => {
                self.reject(sum, path, h.code());
                return Handled::Failed(h.code().to_string(), Some(digests));
            }
        }
        if asc.is_none() {
            Summary::count(&mut sum.warnings, Warning::NoSignature.code());
        }
        // Already acknowledged with these bytes and this signature: nothing to emit.
        let prev = state.directories.get(dir).and_then(|d| d.documents.get(path));
        if let Some(p) = prev.filter(|p| matches!(p.outcome, DocOutcome::Emitted | DocOutcome::DeadLettered)) {
            if p.digests.as_ref().is_some_and(|d| d.document == digests.document && d.asc == digests.asc) {
                sum.unchanged += 1;
                return Handled::Done(p.outcome, p.reason.clone(), Some(digests));
            }
        }
        match plan::inspect(&bytes, path, &meta.namespace, &self.cfg.tlp, cand.listed_ms) {
            Verdict::Skip(r) => {
                Summary::count(&mut sum.skipped, r.code());
                Handled::Done(DocOutcome::Skipped, Some(r.code().to_string()), Some(digests))
            }
            Verdict::Defer => {
                sum.deferred += 1;
                Handled::Failed("stale".into(), None)
            }
            Verdict::Emit(warnings) => {
                for w in warnings {
                    Summary::count(&mut sum.warnings, w.code());
                }
                match self.emit(&url, bytes, asc).await {
                    Ack::Done => {
                        sum.emitted += 1;
                        Handled::Done(DocOutcome::Emitted, None, Some(digests))
                    }
                    Ack::DeadLettered => {
                        sum.dead_lettered += 1;
                        Handled::Done(DocOutcome::DeadLettered, None, Some(digests))
                    }
                    Ack::NotDone => {
                        self.reject(sum, path, "not_acknowledged");
                        Handled::Failed("not_acknowledged".into(), None)
                    }
                }
            }
        }
    }

    /// The document's ingest context: the feed's tenant, provenance `feed:<name>` (the
    /// flow mints the correlation id). No `issuer` claim is added: the document's own
    /// `publisher.namespace` is its claimed issuer, and the feed emits only documents
    /// whose namespace is the provider's, which names the configured issuer; a claim
    /// here would change the observations' claimed issuer and source (and so their ids)
    /// from what `vex-lens consensus` computes on the same files, for the same issuer.
    /// The ingest context of a document: the feed's tenant, its provenance, and the
    /// detached `.asc` served beside it (judged by ingest, as for every source).
    fn context(&self, signature: Option<Vec<u8>>) -> IngestContext {
        IngestContext {
            tenant: Some(self.tenant.clone()),
            provenance: Provenance { source: Some(format!("feed:{}", self.cfg.name)), ..Default::default() },
            openpgp_signature: signature,
            ..Default::default()
        }
    }

    /// Hands one document to the ingest flow in its `vex.document` span.
    async fn emit(&self, url: &str, bytes: Vec<u8>, signature: Option<Vec<u8>>) -> Ack {
        use tracing::Instrument;
        let span = tracing::info_span!(
            parent: None,
            "vex.intake",
            otel.name = "vex.document",
            vex.source = crate::telemetry::trace::bounded(url),
            vex.tenant = crate::telemetry::trace::bounded(&self.tenant),
            vex.bytes = bytes.len(),
            vex.observations = tracing::field::Empty,
            vex.outcome = tracing::field::Empty,
            vex.reason = tracing::field::Empty,
        );
        match &self.emit {
            None => Ack::NotDone,
            Some(Emitter::Ingest { ingest, dead_letters }) => {
                let doc = Document::new(url, bytes, self.context(signature));
                ingest.document(doc, dead_letters.as_ref()).instrument(span).await
            }
            Some(Emitter::Kafka { producer, topic, shutdown }) => {
                let correlation = crate::telemetry::correlation::mint();
                let provenance = format!("feed:{}", self.cfg.name);
                let mut headers: Vec<(&str, &[u8])> = vec![
                    ("tenant", self.tenant.as_bytes()),
                    ("correlation-id", correlation.as_bytes()),
                    ("provenance", provenance.as_bytes()),
                ];
                // The `.asc` as served, in the header every producer uses (docs/openpgp.md).
                if let Some(sig) = &signature {
                    headers.push(("openpgp-signature", sig));
                }
                let sent = crate::sources::kafka::produce::produce_document(
                    producer,
                    topic,
                    url.as_bytes(),
                    &bytes,
                    &headers,
                    shutdown,
                )
                .instrument(span)
                .await;
                match sent {
                    Ok(()) => Ack::Done,
                    Err(e) => {
                        crate::warn_event!(crate::telemetry::events::LogEvent::FeedDocumentRejected, feed = %self.cfg.name, url = %url, error = %e, "feed document not produced");
                        Ack::NotDone
                    }
                }
            }
        }
    }
}

/// The document outcomes without a reason (`vex_feed_documents_total`), in the order of
/// [`record_metrics`]' counts.
const PRIMED_OUTCOMES: [&str; 5] = ["fetched", "emitted", "dead_lettered", "unchanged", "deferred"];

/// Counts a run in the feed metrics (`vex_feed_documents_total`, `vex_feed_rewinds_total`,
/// `vex_feed_last_success_timestamp_seconds`; requests and bytes are counted as they
/// happen).
fn record_metrics(sum: &Summary, last_success_ms: Option<i64>) {
    use crate::telemetry::{metrics, FeedLabel, FeedOutcomeLabel};
    let m = metrics();
    let add = |outcome: &str, reason: &str, n: u64| {
        let l = FeedOutcomeLabel { feed: sum.feed.clone(), outcome: outcome.to_string(), reason: reason.to_string() };
        m.feed_documents.get_or_create(&l).inc_by(n);
    };
    let counts = [sum.fetched, sum.emitted, sum.dead_lettered, sum.unchanged, sum.deferred];
    for (outcome, n) in PRIMED_OUTCOMES.into_iter().zip(counts) {
        add(outcome, "", n);
    }
    for (reason, n) in &sum.rejected {
        add("rejected", reason, *n);
    }
    for (reason, n) in &sum.skipped {
        add("skipped", reason, *n);
    }
    let feed = FeedLabel { feed: sum.feed.clone() };
    m.feed_rewinds.get_or_create(&feed).inc_by(sum.rewinds);
    if let Some(ms) = last_success_ms {
        m.feed_last_success.get_or_create(&feed).set(ms / 1000);
    }
}

/// The health of the feeds `serve` runs, for `/status` (names and health only; details
/// are in `GET /v1/vex/feeds` and `feed status`): `pending` (not run yet), `ok` (last run without a feed-level
/// failure) or `failing`.
#[derive(Clone, Debug, Default)]
pub struct FeedsHealth(Arc<std::sync::Mutex<BTreeMap<String, &'static str>>>);

impl FeedsHealth {
    pub fn set(&self, feed: &str, health: &'static str) {
        self.0.lock().expect("feeds health").insert(feed.to_string(), health);
    }
    pub fn is_empty(&self) -> bool {
        self.0.lock().expect("feeds health").is_empty()
    }
    /// The health of `feed`, `None` when this instance does not run it.
    pub fn get(&self, feed: &str) -> Option<&'static str> {
        self.0.lock().expect("feeds health").get(feed).copied()
    }
}

impl Serialize for FeedsHealth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let m = self.0.lock().expect("feeds health").clone();
        let mut seq = s.serialize_seq(Some(m.len()))?;
        for (name, health) in m {
            seq.serialize_element(&serde_json::json!({"name": name, "health": health}))?;
        }
        seq.end()
    }
}

/// Runs a feed every `interval` (the first run at once) until shutdown (`serve`); a run
/// in progress when shutdown comes ends early (the ingest flow answers not done), and
/// what it did not settle is retried by the next start.
pub async fn run_every(
    source: FeedSource,
    interval: Duration,
    health: FeedsHealth,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    health.set(source.name(), "pending");
    source.prime_metrics(interval).await;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let s = source.run_once(false).await;
        health.set(source.name(), if s.ok { "ok" } else { "failing" });
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => break,
        }
    }
}

/// The state of a directory (for `feed status`).
pub fn directory_counts(d: &DirectoryState) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for doc in d.documents.values() {
        let k = match doc.outcome {
            DocOutcome::Emitted => "emitted",
            DocOutcome::DeadLettered => "dead_lettered",
            DocOutcome::Skipped => "skipped",
            DocOutcome::Rejected => "rejected",
            DocOutcome::Failed => "failed",
        };
        *m.entry(k).or_default() += 1;
    }
    m
}
