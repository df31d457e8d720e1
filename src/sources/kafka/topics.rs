//! Client set-up: the consumer and producer configurations, broker readiness, and the
//! topics (documents, observations and their dead-letter topics) created when missing.
//!
//! Invariants: consumers never store offsets automatically (`enable.auto.offset.store=false`:
//! the consume loop stores them over completed runs); the producer is idempotent with
//! `acks=all`, so an acknowledged observation or dead letter is on the broker once.

use crate::config::Config;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer};
use std::time::Duration;
use tokio::sync::watch;

pub(super) fn consumer_config(cfg: &Config, client_id: &str) -> ClientConfig {
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

/// Creates the producer shared by both consumers (observations and dead letters).
pub fn create_producer(cfg: &Config) -> Result<FutureProducer, KafkaError> {
    producer(cfg)
}
