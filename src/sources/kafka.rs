//! Kafka adapter: the documents consumer (normalise, produce observations keyed
//! `<tenant>/<package>`, dead-letter bad input), the observations consumer (route to the
//! artifact actors), topic creation, broker readiness.
//!
//! Invariants: every observation this service produces carries an HMAC tag (header
//! `vex-lens-mac`, [`crate::crypto::mac`]); an observation consumed without a valid tag
//! counts as unsigned whatever its signature claim; `enable.auto.offset.store=false`; an offset is stored only over an
//! unbroken run of completed offsets per partition ([`OffsetTracker`]): a document when
//! all its observations (or its dead letter) are acknowledged by the broker (idempotent
//! producer, acks=all), an observation when it and its records are durable; a bad
//! message never stops a consumer: a handler failure is retried with backoff (transient,
//! bounded attempts) or dead-lettered with its reason (permanent, or out of attempts), so
//! every offset completes and commits move on; in-flight work is bounded by messages,
//! payload bytes and tracked offsets; a saturated pipeline pauses the assignment instead of
//! buffering; a revocation waits (at most `drain_timeout_ms`) for the work in flight on
//! the revoked partitions, then drops the artifact actors (rebuilt from the store); an
//! observation's offset is its stream position (`provenance.sequence`, which orders
//! record writes) and its message key must be its own `<tenant>/<package>`.
//!
//! Traces: every consumed message is one span (`vex.document` or `vex.observation`, kind
//! consumer) whose parent is the W3C `traceparent` of its headers when one is there and
//! valid; the observations and dead letters this service produces carry the trace context
//! of the span that produced them (`vex.route`, `vex.dead_letter`) instead of the one they
//! came with. With export off (no spans) they carry the one they came with, unchanged:
//! an observation the document's valid `traceparent`/`tracestate` ([`trace::forward`]), a
//! dead letter all the original headers. A forged `traceparent` can only misplace spans
//! in a trace.

use crate::actors::messages::IngestOutcome;
use crate::actors::{Pipeline, PipelineError};
use crate::config::Config;
use crate::crypto::mac::{ObservationMac, HEADER_MAC};
use crate::domain::codes::DeadLetterReason;
use crate::domain::model::{IngestContext, Observation, Provenance};
use crate::telemetry::events::{DeadLettered, DocumentIngested};
use crate::telemetry::trace::{self as trace, bounded};
use futures::future::BoxFuture;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::ClientContext;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tracing::{field::Empty, Instrument, Span};

/// Reason code of a message on the observations topic that is JSON but not a valid observation.
pub const INVALID_OBSERVATION: DeadLetterReason = DeadLetterReason::InvalidObservation;
/// Headers written on dead letters.
pub const HEADER_ERROR: &str = "vex-lens-error";
pub const HEADER_ERROR_DETAIL: &str = "vex-lens-error-detail";
pub const HEADER_SOURCE_TOPIC: &str = "vex-lens-source-topic";
pub const HEADER_SOURCE_PARTITION: &str = "vex-lens-source-partition";
pub const HEADER_SOURCE_OFFSET: &str = "vex-lens-source-offset";
pub const HEADER_VALUE_TRUNCATED: &str = "vex-lens-value-truncated";

/// Reason code of a message whose observation (or DSSE verification) the store rejected
/// permanently.
pub const STORE_REJECTED: DeadLetterReason = DeadLetterReason::StoreRejected;
/// Reason code of a message whose handling failed transiently on every attempt.
pub const RETRIES_EXHAUSTED: DeadLetterReason = DeadLetterReason::RetriesExhausted;

/// Why a handler did not complete a message.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth another attempt: the pipeline or the store did not make it durable this time.
    #[error("{0}")]
    Transient(String),
    /// Will never work: dead-letter it with this reason code.
    #[error("{reason}: {detail}")]
    Permanent { reason: DeadLetterReason, detail: String },
}

/// How a consumer retries a message whose handling failed transiently.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

/// Per partition, the offsets in flight; yields the offset to store once an unbroken
/// run from the oldest in-flight offset is complete.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<(String, i32), BTreeMap<i64, bool>>,
}

impl OffsetTracker {
    pub fn begin(&mut self, topic: &str, partition: i32, offset: i64) {
        self.partitions.entry((topic.to_string(), partition)).or_default().insert(offset, false);
    }

    /// Marks `offset` complete; returns the last offset of the completed prefix when it
    /// advanced (store it: librdkafka commits it + 1).
    pub fn complete(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&(topic.to_string(), partition))?;
        *p.get_mut(&offset)? = true;
        let mut last = None;
        while let Some((&o, &done)) = p.iter().next() {
            if !done {
                break;
            }
            p.remove(&o);
            last = Some(o);
        }
        last
    }

    /// Marks `offset` complete in `tracker` and, when the completed prefix advanced,
    /// passes its last offset to `store` while still holding the lock: completions race
    /// (one task per message), and a lower offset stored after a higher one would move
    /// the partition's commit back and hold it there until the next completion.
    pub fn complete_and_store(
        tracker: &Mutex<OffsetTracker>,
        topic: &str,
        partition: i32,
        offset: i64,
        store: impl FnOnce(i64),
    ) {
        let Ok(mut t) = tracker.lock() else { return };
        if let Some(o) = t.complete(topic, partition, offset) {
            store(o);
        }
    }

    /// Offsets of a partition begun but not complete yet.
    pub fn pending(&self, topic: &str, partition: i32) -> usize {
        self.partitions.get(&(topic.to_string(), partition)).map_or(0, |p| p.values().filter(|done| !**done).count())
    }

    /// Forgets a revoked partition.
    pub fn revoke(&mut self, topic: &str, partition: i32) {
        self.partitions.remove(&(topic.to_string(), partition));
    }

    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.len()).sum()
    }
}

/// Consumer context: logs rebalances; before a revocation completes, waits (at most
/// `drain`) until the work in flight on the revoked partitions is done (durable or
/// dead-lettered, its offset stored for the revocation's commit), then forgets those
/// partitions and drops the artifact actors (a later assignment rebuilds them from the
/// store). Whatever is still in flight after `drain` may write late: the store's record
/// versions fence it (`ports::RecordVersion`).
pub struct RebalanceContext {
    name: &'static str,
    tracker: Arc<Mutex<OffsetTracker>>,
    on_revoke: Option<Pipeline>,
    drain: Duration,
    shutdown: watch::Receiver<bool>,
}

impl RebalanceContext {
    /// Waits until no offset of `partitions` is pending or `drain` has passed; returns
    /// the offsets still pending. Runs on the thread polling the consumer (the callback's):
    /// inside the multi-thread runtime it tells tokio first, so that the thread's other
    /// tasks move elsewhere.
    fn drain_revoked(&self, partitions: &[(String, i32)]) -> usize {
        let pending =
            || self.tracker.lock().map(|t| partitions.iter().map(|(tp, p)| t.pending(tp, *p)).sum()).unwrap_or(0);
        let wait = || {
            let deadline = std::time::Instant::now() + self.drain;
            loop {
                let left: usize = pending();
                if left == 0 || std::time::Instant::now() >= deadline || *self.shutdown.borrow() {
                    return left;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }
}

impl ClientContext for RebalanceContext {
    /// librdkafka statistics (every `statistics.interval.ms`): the consumer lag per
    /// assigned partition.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // Partition -1 is librdkafka's internal UA partition; lag -1 means unknown.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    crate::telemetry::events::ConsumerLag { topic, partition: *partition, lag: p.consumer_lag }.emit();
                }
            }
        }
    }
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts: Vec<String> =
                tpl.elements().iter().map(|e| format!("{}/{}", e.topic(), e.partition())).collect();
            let revoked: Vec<(String, i32)> =
                tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
            let t0 = std::time::Instant::now();
            let left = self.drain_revoked(&revoked);
            tracing::info!(event = "partitions_revoked", consumer = self.name, partitions = ?parts, drained_ms = t0.elapsed().as_millis() as u64, left_in_flight = left, "partitions revoked");
            if left > 0 {
                crate::warn_event!(
                    crate::telemetry::events::LogEvent::RevokeDrainIncomplete,
                    consumer = self.name,
                    left_in_flight = left,
                    "work on revoked partitions still in flight; its late writes are fenced by record versions"
                );
            }
            if let Ok(mut t) = self.tracker.lock() {
                for e in tpl.elements() {
                    t.revoke(e.topic(), e.partition());
                }
            }
            if let Some(p) = &self.on_revoke {
                p.reset_actors();
            }
        }
    }

    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts: Vec<String> =
                    tpl.elements().iter().map(|e| format!("{}/{}", e.topic(), e.partition())).collect();
                tracing::info!(event = "partitions_assigned", consumer = self.name, partitions = ?parts, "partitions assigned");
            }
            Rebalance::Error(e) => {
                crate::warn_event!(crate::telemetry::events::LogEvent::RebalanceError, consumer = self.name, error = %e, "rebalance error")
            }
            Rebalance::Revoke(_) => {}
        }
    }
}

type KConsumer = StreamConsumer<RebalanceContext>;

fn consumer_config(cfg: &Config, client_id: &str) -> ClientConfig {
    let k = &cfg.kafka;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", k.brokers.as_deref().unwrap_or_default())
        .set("group.id", &k.group_id)
        .set("client.id", client_id)
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", k.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", (k.session_timeout_ms / 3).clamp(100, 1_000).to_string())
        .set("max.partition.fetch.bytes", (cfg.ingest.max_message_bytes * 2 + 1024).to_string())
        .set("statistics.interval.ms", "5000");
    c
}

fn producer(cfg: &Config) -> Result<FutureProducer, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", cfg.kafka.brokers.as_deref().unwrap_or_default())
        .set("client.id", "vex-lens-producer")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.max.bytes", (cfg.ingest.max_message_bytes * 2 + 65_536).max(1_000_000).to_string())
        .create()
}

/// Waits until the broker answers a metadata request, logging each failure.
pub async fn wait_for_broker(producer: &FutureProducer, retry: Duration, shutdown: &watch::Receiver<bool>) -> bool {
    let mut attempt = 0u32;
    loop {
        if *shutdown.borrow() {
            return false;
        }
        match broker_metadata(producer).await {
            Ok(n) => {
                tracing::info!(event = "broker_reachable", brokers = n, "Kafka broker reachable");
                return true;
            }
            Err(e) => {
                attempt += 1;
                crate::warn_event!(crate::telemetry::events::LogEvent::BrokerUnreachable, attempt, error = %e, retry_ms = retry.as_millis() as u64, "Kafka broker unreachable; retrying");
                tokio::time::sleep(retry).await;
            }
        }
    }
}

/// Fetches cluster metadata (readiness); returns the number of brokers.
pub async fn broker_metadata(producer: &FutureProducer) -> Result<usize, String> {
    let p = producer.clone();
    tokio::task::spawn_blocking(move || {
        p.client().fetch_metadata(None, Duration::from_secs(2)).map(|m| m.brokers().len()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Creates the topics when missing (`kafka.create_partitions` > 0).
pub async fn ensure_topics(cfg: &Config) -> Result<(), KafkaError> {
    let k = &cfg.kafka;
    if k.create_partitions == 0 {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", k.brokers.as_deref().unwrap_or_default()).create()?;
    let names = [k.topic.clone(), k.observations_topic.clone(), k.documents_dlq(), k.observations_dlq()];
    let topics: Vec<NewTopic> =
        names.iter().map(|n| NewTopic::new(n, k.create_partitions, TopicReplication::Fixed(1))).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics(topics.iter(), &opts).await? {
        match r {
            Ok(t) => tracing::info!(event = "topic_created", topic = %t, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => {
                crate::warn_event!(crate::telemetry::events::LogEvent::TopicCreateFailed, topic = %t, error = %e, "topic not created")
            }
        }
    }
    Ok(())
}

fn header_str(m: &OwnedMessage, name: &str) -> Option<String> {
    let h = m.headers()?;
    h.iter()
        .find(|x| x.key.eq_ignore_ascii_case(name))
        .and_then(|x| x.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn source_name(m: &OwnedMessage) -> String {
    format!("kafka:{}/{}@{}", m.topic(), m.partition(), m.offset())
}

fn timestamp_ms(m: &OwnedMessage) -> i64 {
    m.timestamp().to_millis().unwrap_or_else(crate::ports::now_ms)
}

/// Produces until the broker acknowledges (or shutdown is requested: `false`).
async fn produce_acked(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), KafkaError> {
    let mut delay = Duration::from_millis(100);
    loop {
        let mut rec: FutureRecord<[u8], [u8]> = FutureRecord::to(topic).payload(payload);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        if let Some(h) = &headers {
            rec = rec.headers(h.clone());
        }
        match producer.send(rec, Timeout::After(Duration::from_secs(30))).await {
            Ok(_) => return Ok(()),
            Err((e @ KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => return Err(e),
            Err((e, _)) => {
                crate::warn_event!(crate::telemetry::events::LogEvent::ProduceRetry, topic, error = %e, "produce failed; retrying");
                if *shutdown.borrow() {
                    return Err(e);
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Sends a message to a dead-letter topic with its original headers plus the reason.
async fn dead_letter(
    producer: &FutureProducer,
    dlq: &str,
    m: &OwnedMessage,
    reason: DeadLetterReason,
    detail: &str,
    shutdown: &watch::Receiver<bool>,
) -> bool {
    let correlation = header_str(m, "correlation-id");
    let source = source_name(m);
    let span = tracing::info_span!(
        "vex.dead_letter",
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.destination.name = dlq,
        vex.reason = reason.as_str(),
    );
    let entered = span.enter();
    DeadLettered { source: &source, correlation_id: correlation.as_deref(), reason, detail }.emit();
    let detail: String = detail.chars().take(2000).collect();
    // The dead letter continues this service's trace: its own trace context replaces the
    // one it came with (kept as it was when traces are not exported).
    let context = trace::inject(&span);
    let mut headers = OwnedHeaders::new();
    if let Some(h) = m.headers() {
        for x in h.iter() {
            if context.is_empty() || !trace::is_trace_header(x.key) {
                headers = headers.insert(Header { key: x.key, value: x.value });
            }
        }
    }
    for (k, v) in &context {
        headers = headers.insert(Header { key: *k, value: Some(v.as_str()) });
    }
    drop(entered);
    let partition = m.partition().to_string();
    let offset = m.offset().to_string();
    headers = headers
        .insert(Header { key: HEADER_ERROR, value: Some(reason.as_str()) })
        .insert(Header { key: HEADER_ERROR_DETAIL, value: Some(detail.as_str()) })
        .insert(Header { key: HEADER_SOURCE_TOPIC, value: Some(m.topic()) })
        .insert(Header { key: HEADER_SOURCE_PARTITION, value: Some(partition.as_str()) })
        .insert(Header { key: HEADER_SOURCE_OFFSET, value: Some(offset.as_str()) });
    let payload = m.payload().unwrap_or_default();
    async move {
        match produce_acked(producer, dlq, m.key(), payload, Some(headers.clone()), shutdown).await {
            Ok(()) => true,
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                let headers = headers.insert(Header { key: HEADER_VALUE_TRUNCATED, value: Some("true") });
                produce_acked(producer, dlq, m.key(), &[], Some(headers), shutdown).await.is_ok()
            }
            Err(_) => false,
        }
    }
    .instrument(span)
    .await
}

/// Handles one documents-topic message: its observations produced (and acknowledged), or
/// why not.
async fn handle_document(
    m: OwnedMessage,
    pipeline: Pipeline,
    producer: FutureProducer,
    cfg: Arc<Config>,
    mac: Arc<ObservationMac>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), HandleError> {
    let name = source_name(&m);
    let Some(payload) = m.payload() else {
        return Err(HandleError::Permanent { reason: DeadLetterReason::InvalidJson, detail: "empty message".into() });
    };
    let correlation = header_str(&m, "correlation-id");
    let ctx = IngestContext {
        tenant: Some(header_str(&m, "tenant").unwrap_or_else(|| cfg.ingest.tenant.clone())),
        issuer_header: header_str(&m, "issuer"),
        provenance: Provenance {
            source: Some(name.clone()),
            correlation_id: correlation.clone(),
            received_at_ms: Some(timestamp_ms(&m)),
            sequence: None,
        },
        ..Default::default()
    };
    let span = Span::current();
    if let Some(t) = &ctx.tenant {
        span.record("vex.tenant", bounded(t));
    }
    let outcome = match pipeline.normalise(name.clone(), payload.to_vec(), ctx, cfg.ingest.max_message_bytes).await {
        Ok(o) => o,
        Err(PipelineError::Rejected(r)) => {
            return Err(HandleError::Permanent { reason: STORE_REJECTED, detail: r.to_string() })
        }
        Err(e) => return Err(HandleError::Transient(format!("document not processed: {e}"))),
    };
    match outcome {
        IngestOutcome::DeadLetter { reason, detail } => Err(HandleError::Permanent { reason, detail }),
        IngestOutcome::Observations { observations, format, diagnostics, .. } => {
            let topic = cfg.kafka.observations_topic.as_str();
            span.record("vex.observations", observations.len());
            if let Some(o) = observations.first() {
                span.record("vex.document_digest", bounded(&o.document_digest));
                if let Some(i) = &o.issuer {
                    span.record("vex.issuer", bounded(i));
                }
            }
            // Routing: the observations go to the partitions of their packages, each
            // carrying this span's trace context.
            let route = tracing::info_span!(
                "vex.route",
                otel.kind = "producer",
                messaging.system = "kafka",
                messaging.destination.name = topic,
                vex.observations = observations.len(),
            );
            let mut headers = OwnedHeaders::new();
            if let Some(c) = &correlation {
                headers = headers.insert(Header { key: "correlation-id", value: Some(c.as_str()) });
            }
            // Spans not exported: the producer's trace context passes on unchanged, so a
            // downstream consumer (or another instance exporting spans) continues its trace.
            let mut context = trace::inject(&route);
            if context.is_empty() {
                if let Some(h) = m.headers() {
                    context = trace::forward(h.iter().map(|x| (x.key, x.value.unwrap_or_default())));
                }
            }
            for (k, v) in &context {
                headers = headers.insert(Header { key: *k, value: Some(v.as_str()) });
            }
            // The HMAC input; an observation without a canonical form cannot be tagged.
            let contents: Result<Vec<Vec<u8>>, _> = observations.iter().map(|o| o.content_bytes()).collect();
            let contents = match contents {
                Ok(c) => c,
                Err(e) => {
                    return Err(HandleError::Permanent {
                        reason: DeadLetterReason::InvalidDocument,
                        detail: e.to_string(),
                    })
                }
            };
            let sends =
                observations.iter().zip(&contents).map(|(o, content)| {
                    let key = format!("{}/{}", o.tenant, o.package);
                    let value = serde_json::to_vec(o).unwrap_or_default();
                    let tag = mac.tag(key.as_bytes(), content);
                    let headers = headers.clone().insert(Header { key: HEADER_MAC, value: Some(tag.as_str()) });
                    let producer = &producer;
                    let shutdown = &shutdown;
                    async move {
                        produce_acked(producer, topic, Some(key.as_bytes()), &value, Some(headers), shutdown).await
                    }
                });
            let results = futures::future::join_all(sends).instrument(route).await;
            for r in results {
                match r {
                    Ok(()) => {}
                    Err(e @ KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                        return Err(HandleError::Permanent {
                            reason: DeadLetterReason::ObservationTooLarge,
                            detail: format!("an observation of this document cannot be produced: {e}"),
                        })
                    }
                    Err(e) => return Err(HandleError::Transient(format!("observations not produced: {e}"))),
                }
            }
            DocumentIngested {
                source: &name,
                correlation_id: correlation.as_deref(),
                format,
                observations: observations.len(),
                diagnostics,
            }
            .emit();
            Ok(())
        }
    }
}

/// Handles one observations-topic message: durable with its records, or why not.
async fn handle_observation(
    m: OwnedMessage,
    pipeline: Pipeline,
    cfg: Arc<Config>,
    mac: Arc<ObservationMac>,
) -> Result<(), HandleError> {
    let payload = m.payload().unwrap_or_default();
    if payload.len() > cfg.ingest.max_message_bytes {
        let detail = format!("{} bytes, over the {}-byte limit", payload.len(), cfg.ingest.max_message_bytes);
        return Err(HandleError::Permanent { reason: DeadLetterReason::TooLarge, detail });
    }
    let tag = m.headers().and_then(|h| h.iter().find(|x| x.key.eq_ignore_ascii_case(HEADER_MAC)).and_then(|x| x.value));
    let authentic = |o: &Observation| match tag {
        Some(t) => o.content_bytes().is_ok_and(|c| mac.verify(m.key().unwrap_or_default(), &c, t)),
        None => false,
    };
    let mut o = match crate::actors::parse_observation(payload, authentic) {
        Ok(o) => o,
        Err(detail) => {
            let reason = if serde_json::from_slice::<serde_json::Value>(payload).is_ok() {
                INVALID_OBSERVATION
            } else {
                DeadLetterReason::InvalidJson
            };
            return Err(HandleError::Permanent { reason, detail });
        }
    };
    // The key decides the partition, so the instance that owns the package: it must be
    // the observation's own (a forged key would hand the package to a second owner).
    let key = format!("{}/{}", o.tenant, o.package);
    if m.key() != Some(key.as_bytes()) {
        let got = m.key().map(String::from_utf8_lossy);
        let detail = format!("message key {got:?} is not the observation's {key:?} (<tenant>/<package>)");
        return Err(HandleError::Permanent { reason: INVALID_OBSERVATION, detail });
    }
    // Its position in the stream orders record writes; whatever the message said.
    o.provenance.sequence = Some(m.offset());
    if o.provenance.received_at_ms.is_none() {
        o.provenance.received_at_ms = Some(timestamp_ms(&m));
    }
    if o.provenance.source.is_none() {
        o.provenance.source = Some(source_name(&m));
    }
    if o.provenance.correlation_id.is_none() {
        o.provenance.correlation_id = header_str(&m, "correlation-id");
    }
    let span = Span::current();
    if !span.is_disabled() {
        span.record("vex.tenant", bounded(&o.tenant));
        span.record("vex.artifact", bounded(&o.artifact));
        span.record("vex.vulnerability", bounded(&o.vulnerability));
        span.record("vex.document_digest", bounded(&o.document_digest));
        if let Some(i) = &o.issuer {
            span.record("vex.issuer", bounded(i));
        }
        span.record("vex.signature", tracing::field::debug(&o.signature.status));
    }
    let rx = pipeline.route(o).await.map_err(|e| HandleError::Transient(format!("observation not routed: {e}")))?;
    match rx.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(rejected)) => {
            pipeline.reset_actors();
            Err(HandleError::Permanent { reason: STORE_REJECTED, detail: rejected.to_string() })
        }
        Err(_) => {
            // Not durable (its batch was rejected because of another input, or the writer
            // restarted): drop the actors' in-memory state, which may hold what the store
            // does not, so that the retry rebuilds the package from the store and
            // rewrites its records.
            pipeline.reset_actors();
            Err(HandleError::Transient("observation not made durable".into()))
        }
    }
}

type Handle = Arc<dyn Fn(OwnedMessage) -> BoxFuture<'static, Result<(), HandleError>> + Send + Sync>;

/// Handles one message to the end: retried with backoff while it fails transiently (up
/// to `policy.max_attempts`), dead-lettered with its reason when it fails permanently or
/// runs out of attempts. `true` when its offset may be stored; `false` only on shutdown
/// (the message is then replayed after the restart).
async fn process(
    m: OwnedMessage,
    handle: &Handle,
    policy: &RetryPolicy,
    producer: &FutureProducer,
    dlq: &str,
    shutdown: &watch::Receiver<bool>,
    consumer: &'static str,
) -> bool {
    let span = consume_span(&m, consumer);
    let done = handle_to_the_end(m, handle, policy, producer, dlq, shutdown).instrument(span.clone()).await;
    span.record(
        "vex.outcome",
        match (done, consumer) {
            (Handled::Done, "documents") => "ingested",
            (Handled::Done, _) => "applied",
            (Handled::DeadLettered, _) => "dead_lettered",
            (Handled::Abandoned, _) => "abandoned",
        },
    );
    done != Handled::Abandoned
}

/// What became of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handled {
    Done,
    DeadLettered,
    /// Not done (shutdown): replayed after the restart.
    Abandoned,
}

/// The span of one consumed message (`vex.document` or `vex.observation`), a child of
/// the producer's span when the message carries a valid `traceparent`.
fn consume_span(m: &OwnedMessage, consumer: &'static str) -> Span {
    let span = tracing::info_span!(
        "vex.consume",
        otel.name = if consumer == "documents" { "vex.document" } else { "vex.observation" },
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.destination.name = m.topic(),
        messaging.destination.partition.id = m.partition(),
        messaging.kafka.offset = m.offset(),
        vex.correlation_id = header_str(m, "correlation-id").as_deref().map(bounded),
        vex.bytes = m.payload().map_or(0, <[u8]>::len),
        vex.tenant = Empty,
        vex.artifact = Empty,
        vex.vulnerability = Empty,
        vex.issuer = Empty,
        vex.document_digest = Empty,
        vex.signature = Empty,
        vex.observations = Empty,
        vex.attempts = Empty,
        vex.outcome = Empty,
        vex.reason = Empty,
    );
    if let Some(h) = m.headers() {
        trace::set_remote_parent(&span, h.iter().map(|x| (x.key, x.value.unwrap_or_default())));
    }
    span
}

/// Handles one message to the end (see [`process`]).
async fn handle_to_the_end(
    m: OwnedMessage,
    handle: &Handle,
    policy: &RetryPolicy,
    producer: &FutureProducer,
    dlq: &str,
    shutdown: &watch::Receiver<bool>,
) -> Handled {
    let span = Span::current();
    let dead = |ok: bool| if ok { Handled::DeadLettered } else { Handled::Abandoned };
    let mut delay = policy.initial;
    let mut attempt = 1u32;
    loop {
        span.record("vex.attempts", attempt);
        match handle(m.clone()).await {
            Ok(()) => return Handled::Done,
            Err(HandleError::Permanent { reason, detail }) => {
                span.record("vex.reason", reason.as_str());
                return dead(dead_letter(producer, dlq, &m, reason, &detail, shutdown).await);
            }
            Err(HandleError::Transient(detail)) => {
                if *shutdown.borrow() {
                    return Handled::Abandoned;
                }
                if attempt >= policy.max_attempts {
                    let detail = format!("{attempt} attempts; last: {detail}");
                    span.record("vex.reason", RETRIES_EXHAUSTED.as_str());
                    return dead(dead_letter(producer, dlq, &m, RETRIES_EXHAUSTED, &detail, shutdown).await);
                }
                crate::warn_event!(crate::telemetry::events::LogEvent::HandlerRetry, source = %source_name(&m), attempt, error = %detail, delay_ms = delay.as_millis() as u64, "message not handled; retrying");
                let mut sd = shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = sd.changed() => return Handled::Abandoned,
                }
                delay = (delay * 2).min(policy.max);
                attempt += 1;
            }
        }
    }
}

/// Limits of one consumer's in-flight work.
#[derive(Clone, Debug)]
struct Limits {
    /// Messages being handled.
    messages: usize,
    /// Payload bytes being handled (a larger message passes alone).
    bytes: usize,
    /// Offsets tracked (handled or not) before the consumer pauses: a slow message
    /// holds back its partition's commits, and the ones after it wait here, bounded.
    tracked: usize,
}

/// Consumes one topic: in-flight work bounded by messages, bytes and tracked offsets
/// (pausing the assignment when full), every message handled to the end ([`process`]),
/// offsets stored over completed runs, drained and committed on shutdown.
#[allow(clippy::too_many_arguments)]
async fn consume_loop(
    name: &'static str,
    consumer: Arc<KConsumer>,
    tracker: Arc<Mutex<OffsetTracker>>,
    limits: Limits,
    policy: RetryPolicy,
    producer: FutureProducer,
    dlq: String,
    drain_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
    handle: Handle,
) {
    let sem = Arc::new(Semaphore::new(limits.messages));
    let byte_units = limits.bytes.div_ceil(1024).max(1);
    let bytes = Arc::new(Semaphore::new(byte_units));
    let (policy, dlq) = (Arc::new(policy), Arc::new(dlq));
    loop {
        // Too many offsets waiting on an unfinished earlier one: stop fetching until
        // that one is done (retries are bounded, so this ends).
        if tracker.lock().map(|t| t.in_flight()).unwrap_or(0) >= limits.tracked {
            let assignment = consumer.assignment().ok();
            if let Some(a) = &assignment {
                let _ = consumer.pause(a);
            }
            tracing::debug!(event = "paused", consumer = name, "offset tracker full; partitions paused");
            while tracker.lock().map(|t| t.in_flight()).unwrap_or(0) >= limits.tracked && !*shutdown.borrow() {
                tokio::select! {
                    _ = shutdown.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            if let Some(a) = &assignment {
                let _ = consumer.resume(a);
            }
        }
        let msg = tokio::select! {
            _ = shutdown.changed() => break,
            m = consumer.recv() => m,
        };
        let m = match msg {
            Ok(m) => m.detach(),
            Err(e) => {
                crate::warn_event!(crate::telemetry::events::LogEvent::ConsumeError, consumer = name, error = %e, "consumer error");
                continue;
            }
        };
        let (topic, partition, offset) = (m.topic().to_string(), m.partition(), m.offset());
        if let Ok(mut t) = tracker.lock() {
            t.begin(&topic, partition, offset);
        }
        let units = m.payload().map_or(0, <[u8]>::len).div_ceil(1024).clamp(1, byte_units) as u32;
        let permits = match (sem.clone().try_acquire_owned(), bytes.clone().try_acquire_many_owned(units)) {
            (Ok(p), Ok(b)) => (p, b),
            (p, b) => {
                let assignment = consumer.assignment().ok();
                if let Some(a) = &assignment {
                    let _ = consumer.pause(a);
                }
                tracing::debug!(event = "paused", consumer = name, "pipeline saturated; partitions paused");
                let p = match p {
                    Ok(p) => p,
                    Err(_) => sem.clone().acquire_owned().await.expect("semaphore never closed"),
                };
                let b = match b {
                    Ok(b) => b,
                    Err(_) => bytes.clone().acquire_many_owned(units).await.expect("semaphore never closed"),
                };
                if let Some(a) = &assignment {
                    let _ = consumer.resume(a);
                }
                (p, b)
            }
        };
        let (consumer2, tracker2, handle2) = (consumer.clone(), tracker.clone(), handle.clone());
        let (policy2, dlq2, producer2, shutdown2) = (policy.clone(), dlq.clone(), producer.clone(), shutdown.clone());
        tokio::spawn(async move {
            let ok = process(m, &handle2, &policy2, &producer2, &dlq2, &shutdown2, name).await;
            if ok {
                // Under the tracker's lock (`rd_kafka_offsets_store` only sets a field).
                OffsetTracker::complete_and_store(&tracker2, &topic, partition, offset, |o| {
                    if let Err(e) = consumer2.store_offset(&topic, partition, o) {
                        tracing::debug!(event = "store_offset_failed", topic, partition, offset = o, error = %e, "offset not stored");
                    }
                });
            }
            drop(permits);
        });
    }
    // Drain: wait for in-flight work, then commit what is stored (a synchronous commit:
    // off the async threads).
    let drained = tokio::time::timeout(drain_timeout, sem.acquire_many(limits.messages as u32)).await.is_ok();
    let left = tracker.lock().map(|t| t.in_flight()).unwrap_or(0);
    let c = consumer.clone();
    match tokio::task::spawn_blocking(move || c.commit_consumer_state(CommitMode::Sync)).await {
        Ok(Ok(())) | Ok(Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))) => {}
        Ok(Err(e)) => {
            crate::warn_event!(crate::telemetry::events::LogEvent::CommitFailed, consumer = name, error = %e, "final commit failed")
        }
        Err(e) => {
            crate::warn_event!(crate::telemetry::events::LogEvent::CommitFailed, consumer = name, error = %e, "final commit failed")
        }
    }
    tracing::info!(event = "consumer_stopped", consumer = name, drained, in_flight = left, "consumer stopped");
}

/// Starts both consumers; returns when shutdown is requested and they are drained.
pub async fn run(
    cfg: Arc<Config>,
    pipeline: Pipeline,
    producer: FutureProducer,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mac = Arc::new(cfg.kafka.observations_mac()?);
    if let Err(e) = ensure_topics(&cfg).await {
        crate::warn_event!(crate::telemetry::events::LogEvent::TopicCreateFailed, error = %e, "could not create topics");
    }
    let drain = Duration::from_millis(cfg.kafka.drain_timeout_ms);
    let mk = |client: &str,
              topic: &str,
              on_revoke: Option<Pipeline>,
              name: &'static str|
     -> anyhow::Result<(Arc<KConsumer>, Arc<Mutex<OffsetTracker>>)> {
        let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
        let ctx = RebalanceContext { name, tracker: tracker.clone(), on_revoke, drain, shutdown: shutdown.clone() };
        let c: KConsumer = consumer_config(&cfg, client).create_with_context(ctx)?;
        c.subscribe(&[topic])?;
        Ok((Arc::new(c), tracker))
    };
    let (docs, docs_tracker) = mk("vex-lens-documents", &cfg.kafka.topic, None, "documents")?;
    let (obs, obs_tracker) =
        mk("vex-lens-observations", &cfg.kafka.observations_topic, Some(pipeline.clone()), "observations")?;
    let h_docs: Handle = {
        let (p, pr, c, k, s) = (pipeline.clone(), producer.clone(), cfg.clone(), mac.clone(), shutdown.clone());
        Arc::new(move |m| Box::pin(handle_document(m, p.clone(), pr.clone(), c.clone(), k.clone(), s.clone())))
    };
    let h_obs: Handle = {
        let (p, c, k) = (pipeline.clone(), cfg.clone(), mac.clone());
        Arc::new(move |m| Box::pin(handle_observation(m, p.clone(), c.clone(), k.clone())))
    };
    tracing::info!(event = "consuming", topic = %cfg.kafka.topic, observations_topic = %cfg.kafka.observations_topic, group = %cfg.kafka.group_id, "consuming");
    let k = &cfg.kafka;
    let policy = RetryPolicy {
        max_attempts: k.handler_max_attempts,
        initial: Duration::from_millis(k.handler_retry_initial_ms),
        max: Duration::from_millis(k.handler_retry_max_ms),
    };
    let limits = |messages: usize| Limits { messages, bytes: k.max_in_flight_bytes, tracked: messages * 4 };
    let a = consume_loop(
        "documents",
        docs,
        docs_tracker,
        limits(k.max_in_flight_documents),
        policy.clone(),
        producer.clone(),
        k.documents_dlq(),
        drain,
        shutdown.clone(),
        h_docs,
    );
    let b = consume_loop(
        "observations",
        obs,
        obs_tracker,
        limits(k.max_in_flight_observations),
        policy,
        producer.clone(),
        k.observations_dlq(),
        drain,
        shutdown.clone(),
        h_obs,
    );
    // On the runtime's worker threads, not on the caller's (in `serve`, the actix system
    // thread, where the registry and store writer actors run): a revocation blocks the
    // polling thread while it waits for in-flight work, which needs those actors.
    let (a, b) = futures::future::join(tokio::spawn(a), tokio::spawn(b)).await;
    for r in [a, b] {
        if let Err(e) = r {
            anyhow::bail!("consumer task failed: {e}");
        }
    }
    let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
    Ok(())
}

/// Creates the producer shared by both consumers (observations and dead letters).
pub fn create_producer(cfg: &Config) -> Result<FutureProducer, KafkaError> {
    producer(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_stored_only_over_unbroken_runs() {
        let mut t = OffsetTracker::default();
        for o in 10..15 {
            t.begin("d", 0, o);
        }
        t.begin("d", 1, 3);
        assert_eq!(t.complete("d", 0, 12), None, "a gap before 12");
        assert_eq!(t.complete("d", 0, 11), None);
        assert_eq!(t.complete("d", 0, 10), Some(12), "10..=12 complete");
        assert_eq!(t.complete("d", 1, 3), Some(3), "partitions are independent");
        assert_eq!(t.complete("d", 0, 14), None);
        assert_eq!(t.in_flight(), 2);
        t.revoke("d", 0);
        assert_eq!(t.complete("d", 0, 13), None, "revoked partitions are forgotten");
        assert_eq!(t.complete("x", 0, 1), None, "unknown partitions are ignored");
        assert_eq!(t.in_flight(), 0);
    }

    /// Completions race (one task per message): the offsets they store must still only
    /// move forward, or a lower one stored last holds the partition's commit back.
    #[test]
    fn racing_completions_store_offsets_in_order() {
        for round in 0..50 {
            let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
            let n = 64i64;
            for o in 0..n {
                tracker.lock().unwrap().begin("d", 0, o);
            }
            let stored = Arc::new(Mutex::new(Vec::new()));
            let threads: Vec<_> = (0..4)
                .map(|k| {
                    let (tracker, stored) = (tracker.clone(), stored.clone());
                    std::thread::spawn(move || {
                        // Each thread completes every fourth offset, from the end or the start.
                        let mine: Vec<i64> = (0..n).filter(|o| o % 4 == k).collect();
                        let order: Vec<i64> =
                            if (round + k) % 2 == 0 { mine } else { mine.into_iter().rev().collect() };
                        for o in order {
                            OffsetTracker::complete_and_store(&tracker, "d", 0, o, |s| {
                                // A slow store widens any window between the lock and the store.
                                std::thread::yield_now();
                                stored.lock().unwrap().push(s);
                            });
                        }
                    })
                })
                .collect();
            threads.into_iter().for_each(|t| t.join().unwrap());
            let stored = stored.lock().unwrap();
            assert!(stored.windows(2).all(|w| w[0] < w[1]), "stored out of order: {stored:?}");
            assert_eq!(stored.last(), Some(&(n - 1)), "the last offset is stored");
        }
    }
}
