//! StoreWriter: a store writer (not to be confused with export bundles). Batches
//! `Persist` (and `PersistVerification`) messages, writes DSSE verifications,
//! observations, then records (idempotent upserts), and only then fires their completion
//! signals. The pipeline runs several, each package's writes always through the same one
//! (`actors::Writers`); the batch's encoding and IO run on tokio's worker threads.
//!
//! Invariants: one writer's writes happen in the order its messages arrived; a store error is retried
//! with exponential backoff forever (never dropped) while the mailbox fills up and
//! back-pressures the pipeline; a `LoadPackage` is answered only after every earlier
//! `Persist` of its package is durable, a `Drain` after every earlier `Persist`. Runs under an actix `Supervisor`: on restart the
//! pending batch (kept in the actor) is flushed again.

use super::messages::{Done, Drain, LoadPackage, Persist, PersistVerification};
use crate::domain::consensus::ConsensusRecord;
use crate::domain::model::Observation;
use crate::ports::{ConsensusStore, StoreError, VerificationRecord};
use crate::telemetry::events::{ConflictQueueDepth, ObservationsDurable, RecordChanged, StoreRetry};
use actix::prelude::*;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tuning of the store writer.
#[derive(Clone, Debug)]
pub struct WriterSettings {
    pub batch_max: usize,
    pub flush_after: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Longest a single store call may take before it counts as failed (and is retried).
    pub store_timeout: Duration,
    pub mailbox_capacity: usize,
}

#[derive(Default)]
struct Batch {
    observations: Vec<Observation>,
    records: Vec<ConsensusRecord>,
    /// DSSE verifications (written before the observations).
    verifications: Vec<VerificationRecord>,
    done: Vec<Done>,
    /// (tenant, package) of the pending observations.
    packages: std::collections::HashSet<(String, String)>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.observations.is_empty() && self.records.is_empty() && self.verifications.is_empty() && self.done.is_empty()
    }
}

pub struct StoreWriter {
    store: Arc<dyn ConsensusStore>,
    settings: WriterSettings,
    pending: Batch,
    flush_scheduled: bool,
    last_depth: Option<Instant>,
}

impl StoreWriter {
    pub fn new(store: Arc<dyn ConsensusStore>, settings: WriterSettings) -> Self {
        StoreWriter { store, settings, pending: Batch::default(), flush_scheduled: false, last_depth: None }
    }

    /// Writes the pending batch; blocks the mailbox until it is durable.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        let store = self.store.clone();
        let settings = self.settings.clone();
        let read_depth = self.last_depth.map_or(true, |t| t.elapsed() >= Duration::from_secs(1));
        if read_depth {
            self.last_depth = Some(Instant::now());
        }
        let fut = async move {
            let Batch { observations, records, verifications, done, .. } = batch;
            let records = latest_per_pair(records);
            for v in &verifications {
                retry(&settings, "put_verification", || store.put_verification(v)).await;
            }
            retry(&settings, "put_observations", || store.put_observations(&observations)).await;
            let now = now_ms();
            retry(&settings, "put_records", || store.put_records(&records, now)).await;
            let durable_at = now_ms();
            let received: Vec<i64> = observations.iter().filter_map(|o| o.provenance.received_at_ms).collect();
            ObservationsDurable {
                observations: observations.len(),
                records: records.len(),
                received_at_ms: &received,
                now_ms: durable_at,
            }
            .emit();
            for r in &records {
                let corr = observations.iter().find_map(|o| o.provenance.correlation_id.as_deref());
                RecordChanged { record: r, correlation_id: corr }.emit();
            }
            for d in done {
                let _ = d.send(());
            }
            if read_depth {
                if let Ok(depth) = store.conflict_queue_depth().await {
                    ConflictQueueDepth { depth }.emit();
                }
            }
        };
        // Encode and write on the runtime's worker threads, not on this actor's thread;
        // the mailbox still waits for the batch (order, back-pressure).
        let spawned = tokio::spawn(fut);
        ctx.wait(
            async move {
                if let Err(e) = spawned.await {
                    tracing::error!(event = "store_write_task_failed", error = %e, "store write task failed");
                }
            }
            .into_actor(self),
        );
    }
}

/// Keeps the last record of each pair (the batch's earlier ones were never durable, so
/// they are not changes anyone could observe), in order of last occurrence.
pub fn latest_per_pair(records: Vec<ConsensusRecord>) -> Vec<ConsensusRecord> {
    let mut last: std::collections::HashMap<crate::domain::consensus::PairKey, usize> = Default::default();
    for (i, r) in records.iter().enumerate() {
        last.insert(r.pair(), i);
    }
    records.into_iter().enumerate().filter(|(i, r)| last.get(&r.pair()) == Some(i)).map(|(_, r)| r).collect()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Runs `op` until it succeeds, with exponential backoff between attempts; an attempt
/// that does not answer within `store_timeout` (doubled per attempt, up to 16x) counts
/// as failed.
pub async fn retry<T, F, Fut>(settings: &WriterSettings, operation: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut delay = settings.retry_initial;
    let mut attempt = 1u32;
    loop {
        // A slow store must still make progress: each attempt may wait twice as long.
        let limit = settings.store_timeout * 2u32.saturating_pow(attempt.saturating_sub(1).min(4));
        let result = match tokio::time::timeout(limit, op()).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!("no answer within {limit:?}"))),
        };
        match result {
            Ok(v) => return v,
            Err(e) => {
                StoreRetry { operation, attempt, error: &e.to_string(), delay }.emit();
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(settings.retry_max);
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

impl Actor for StoreWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.settings.mailbox_capacity);
    }
}

impl Supervised for StoreWriter {
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        tracing::warn!(event = "store_writer_restarting", pending = self.pending.observations.len(), "restarting");
        self.flush_scheduled = false;
        let delay = self.settings.retry_initial;
        ctx.run_later(delay, |act, ctx| act.flush(ctx));
    }
}

impl Handler<Persist> for StoreWriter {
    type Result = ();

    fn handle(&mut self, msg: Persist, ctx: &mut Context<Self>) {
        for o in &msg.observations {
            if !self.pending.packages.contains(&(o.tenant.clone(), o.package.clone())) {
                self.pending.packages.insert((o.tenant.clone(), o.package.clone()));
            }
        }
        self.pending.observations.extend(msg.observations);
        self.pending.records.extend(msg.records);
        self.pending.done.extend(msg.done);
        if self.pending.observations.len() + self.pending.records.len() >= self.settings.batch_max {
            self.flush(ctx);
        } else if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.run_later(self.settings.flush_after, |act, ctx| {
                act.flush_scheduled = false;
                act.flush(ctx);
            });
        }
    }
}

impl Handler<PersistVerification> for StoreWriter {
    type Result = ();

    fn handle(&mut self, msg: PersistVerification, ctx: &mut Context<Self>) {
        self.pending.verifications.push(msg.record);
        self.pending.done.push(msg.done);
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.run_later(self.settings.flush_after, |act, ctx| {
                act.flush_scheduled = false;
                act.flush(ctx);
            });
        }
    }
}

impl Handler<LoadPackage> for StoreWriter {
    type Result = ResponseFuture<Option<Vec<Observation>>>;

    /// Loads without blocking the writer, unless the package has unwritten observations:
    /// then the pending batch is written first and the load runs right after it (both
    /// blocking the mailbox, so nothing overtakes them).
    fn handle(&mut self, msg: LoadPackage, ctx: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        let settings = self.settings.clone();
        let must_flush = self.pending.packages.contains(&(msg.tenant.clone(), msg.package.clone()));
        let load = async move {
            retry(&settings, "observations_for_package", || store.observations_for_package(&msg.tenant, &msg.package))
                .await
        };
        if !must_flush {
            return Box::pin(async move { Some(load.await) });
        }
        self.flush(ctx);
        let (tx, rx) = tokio::sync::oneshot::channel();
        ctx.wait(
            async move {
                let _ = tx.send(load.await);
            }
            .into_actor(self),
        );
        Box::pin(async move { rx.await.ok() })
    }
}

impl Handler<Drain> for StoreWriter {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) -> Self::Result {
        self.flush(ctx);
        AtomicResponse::new(Box::pin(actix::fut::ready(())))
    }
}
