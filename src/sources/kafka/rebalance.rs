//! The consumers' rebalance context: before a revocation completes, waits (at most the
//! drain timeout) for the work in flight on the revoked partitions, then forgets them
//! and drops the artifact actors; reports the consumer lag from librdkafka's statistics.
//!
//! Invariant: a revoked partition's offsets are forgotten only after its in-flight work
//! is done or the drain timeout passed; late writes after that are fenced by record
//! versions (`ports::RecordVersion`).

use super::offsets::OffsetTracker;
use crate::actors::Pipeline;
use rdkafka::consumer::{ConsumerContext, Rebalance};
use rdkafka::ClientContext;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Consumer context: logs rebalances; before a revocation completes, waits (at most
/// `drain`) until the work in flight on the revoked partitions is done (durable or
/// dead-lettered, its offset stored for the revocation's commit), then forgets those
/// partitions and drops the artifact actors (a later assignment rebuilds them from the
/// store). Whatever is still in flight after `drain` may write late: the store's record
/// versions fence it (`ports::RecordVersion`).
pub struct RebalanceContext {
    pub(super) name: &'static str,
    pub(super) tracker: Arc<Mutex<OffsetTracker>>,
    pub(super) on_revoke: Option<Pipeline>,
    pub(super) drain: Duration,
    pub(super) shutdown: watch::Receiver<bool>,
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
