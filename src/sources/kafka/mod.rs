//! Kafka adapter: the documents consumer (normalise, produce observations keyed
//! `<tenant>/<package>`, dead-letter bad input), the observations consumer (route to the
//! artifact actors), topic creation, broker readiness. One job per module: [`consumer`]
//! (the consume loop), [`offsets`] (which offsets may be stored), [`rebalance`]
//! (revocation drain), [`topics`] (client set-up, readiness, topics), [`dead_letters`]
//! (the dead-letter sink of a message), [`bus`] (the observation bus), [`documents`]
//! (a message to the ingest flow, `crate::ingest`) and [`observations`] (a message to
//! the artifact actors), [`message`] and [`produce`]. The documents consumer is a
//! thin source: the flow normalises, publishes, retries and dead-letters.
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
//! an observation the document's valid `traceparent`/`tracestate` ([`crate::telemetry::trace::forward`]), a
//! dead letter all the original headers. A forged `traceparent` can only misplace spans
//! in a trace.

pub mod bus;
pub mod consumer;
pub mod dead_letters;
mod documents;
mod message;
mod observations;
pub mod offsets;
pub mod produce;
pub mod rebalance;
pub mod topics;

pub use bus::KafkaBus;
pub use dead_letters::{
    HEADER_ERROR, HEADER_ERROR_DETAIL, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, HEADER_SOURCE_TOPIC,
    HEADER_VALUE_TRUNCATED,
};
pub use observations::INVALID_OBSERVATION;
pub use offsets::OffsetTracker;
pub use rebalance::RebalanceContext;
pub use topics::{broker_metadata, create_producer, ensure_topics, wait_for_broker};

use crate::actors::Pipeline;
use crate::config::Config;
use crate::ingest::{Exhausted, Ingest, RetryPolicy};
use crate::ports::SystemClock;
use consumer::{consume_loop, Handle, Limits};
use documents::handle_document;
use observations::{handle_observation, Observations};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, Producer};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use topics::consumer_config;

pub(crate) type KConsumer = StreamConsumer<RebalanceContext>;

/// Starts both consumers; returns when shutdown is requested and they are drained.
pub async fn run(
    cfg: Arc<Config>,
    pipeline: Pipeline,
    ledger: Arc<dyn crate::ports::DocumentLedger>,
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
    let k = &cfg.kafka;
    let retry = RetryPolicy {
        max_attempts: k.handler_max_attempts,
        initial: Duration::from_millis(k.handler_retry_initial_ms),
        max: Duration::from_millis(k.handler_retry_max_ms),
        exhausted: Exhausted::DeadLetter,
    };
    let bus = KafkaBus {
        producer: producer.clone(),
        topic: k.observations_topic.clone(),
        mac: mac.clone(),
        shutdown: shutdown.clone(),
    };
    let ingest = Ingest::new(
        pipeline.clone(),
        Arc::new(bus),
        ledger,
        Arc::new(SystemClock),
        cfg.ingest.max_message_bytes,
        retry.clone(),
        shutdown.clone(),
    );
    let h_docs: Handle = {
        let (ingest, tenant, producer, dlq, shutdown) =
            (ingest, cfg.ingest.tenant.clone(), producer.clone(), k.documents_dlq(), shutdown.clone());
        let docs = Arc::new((ingest, tenant, producer, dlq, shutdown));
        Arc::new(move |m| {
            let docs = docs.clone();
            Box::pin(async move {
                let (ingest, tenant, producer, dlq, shutdown) = &*docs;
                handle_document(m, ingest, tenant, producer, dlq, shutdown).await
            })
        })
    };
    let h_obs: Handle = {
        let h = Arc::new(Observations {
            pipeline: pipeline.clone(),
            mac: mac.clone(),
            max_bytes: cfg.ingest.max_message_bytes,
            retry,
            producer: producer.clone(),
            dlq: k.observations_dlq(),
            shutdown: shutdown.clone(),
        });
        Arc::new(move |m| {
            let h = h.clone();
            Box::pin(async move { handle_observation(m, &h).await })
        })
    };
    tracing::info!(event = "consuming", topic = %cfg.kafka.topic, observations_topic = %cfg.kafka.observations_topic, group = %cfg.kafka.group_id, "consuming");
    let limits = |messages: usize| Limits { messages, bytes: k.max_in_flight_bytes, tracked: messages * 4 };
    let a = consume_loop(
        "documents",
        docs,
        docs_tracker,
        limits(k.max_in_flight_documents),
        drain,
        shutdown.clone(),
        h_docs,
    );
    let b = consume_loop(
        "observations",
        obs,
        obs_tracker,
        limits(k.max_in_flight_observations),
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
