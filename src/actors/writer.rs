//! StoreWriter: a store writer (not to be confused with export bundles). Batches
//! `Persist` (and `PersistVerification`) messages, writes DSSE verifications,
//! observations, then records (idempotent upserts), and only then fires their completion
//! signals. The pipeline runs several, each package's writes always through the same one
//! (`actors::Writers`); the batch's encoding and IO run on tokio's worker threads.
//!
//! Invariants: one writer's writes happen in the order its messages arrived; a retriable
//! store error is retried with jittered exponential backoff forever (never dropped) while the
//! mailbox fills up and back-pressures the pipeline; a permanent one (`!is_retriable()`)
//! never wedges the writer: the batch is written message by message, the input the store
//! rejects on its own answers `Rejected` (its source dead-letters it), the rest of a
//! rejected message is given back unanswered (its source retries it); a `LoadPackage` is answered only after every earlier
//! `Persist` of its package is durable (the loads that arrive together are read in one
//! store call), a `Drain` after every earlier `Persist`. Runs under an actix `Supervisor`: on restart the
//! pending batch (kept in the actor) is flushed again.
//!
//! Traces: each batch is one `vex.store.batch` span (a root: it serves many traces); under
//! the span of each contributing input (an observation's, or a verification's document's),
//! one `vex.store.write` span linked to the batch, at most `telemetry::trace::MAX_FAN_OUT`
//! per batch (the batch span counts the inputs and the traced ones), so a trace ends with
//! its consensus write and a batch of thousands does not make thousands of spans.

use super::budget::RecordShare;
use super::messages::{Done, Drain, LoadPackage, Persist, PersistVerification, Rejected};
use crate::domain::model::Observation;
use crate::domain::version::VersionedRecord;
use crate::ports::{
    ConflictQueue, ObservationStore, RecordStore, StoreError, Stores, VerificationRecord, VerificationStore,
};
use crate::telemetry::events::{
    ConflictQueueDepth, ObservationsDurable, RecordChanged, StoreAttempt, StoreRejected, StoreRetry,
};
use actix::prelude::*;
use futures::future::OptionFuture;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The store roles a writer uses: it writes verifications, observations and records,
/// loads a package's observations (an actor's rebuild) and reads the conflict-queue depth.
#[derive(Clone)]
pub struct WriterStores {
    pub verifications: Arc<dyn VerificationStore>,
    pub observations: Arc<dyn ObservationStore>,
    pub records: Arc<dyn RecordStore>,
    pub conflicts: Arc<dyn ConflictQueue>,
}

impl From<&Stores> for WriterStores {
    fn from(s: &Stores) -> Self {
        WriterStores {
            verifications: s.verifications.clone(),
            observations: s.observations.clone(),
            records: s.records.clone(),
            conflicts: s.conflicts.clone(),
        }
    }
}

impl From<Stores> for WriterStores {
    fn from(s: Stores) -> Self {
        WriterStores::from(&s)
    }
}

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
    records: Vec<VersionedRecord>,
    /// DSSE verifications (written before the observations).
    verifications: Vec<VerificationRecord>,
    done: Vec<Done>,
    /// (tenant, package) of the pending observations.
    packages: std::collections::HashSet<(String, String)>,
    /// The messages the batch was made of (ranges of the vectors above), so that a batch
    /// the store rejects permanently can be written message by message.
    units: Vec<Unit>,
    /// The span of each input (observation or verification).
    spans: Vec<tracing::Span>,
    /// The records' shares of the budget of records in flight, returned once the batch is
    /// written.
    shares: Vec<RecordShare>,
}

/// One `Persist` or `PersistVerification`: index ranges into its batch.
#[derive(Clone, Debug, Default)]
struct Unit {
    observations: std::ops::Range<usize>,
    records: std::ops::Range<usize>,
    verifications: std::ops::Range<usize>,
    done: std::ops::Range<usize>,
}

/// A message the store rejected: finds the inputs the store rejects on their own (their
/// completion signals answer `Rejected`: their sources dead-letter them) and gives the
/// others back unanswered (their sources retry them, without the culprit). Observations
/// and verifications of one message are aligned with its completion signals; when that
/// does not hold, or no input is rejected on its own, every input counts as rejected.
async fn reject_unit(
    store: &WriterStores,
    settings: &WriterSettings,
    observations: &[Observation],
    verifications: &[VerificationRecord],
    done: &mut [Option<Done>],
    error: &StoreError,
) {
    let mut culprits = vec![false; done.len()];
    if observations.len() + verifications.len() == done.len() {
        for (i, v) in verifications.iter().enumerate() {
            culprits[i] =
                retry(settings, "put_verification", || store.verifications.put_verification(v)).await.is_err();
        }
        for (i, o) in observations.iter().enumerate() {
            let one = std::slice::from_ref(o);
            culprits[verifications.len() + i] =
                retry(settings, "put_observations", || store.observations.put_observations(one)).await.is_err();
        }
    }
    if !culprits.contains(&true) {
        culprits.iter_mut().for_each(|c| *c = true);
    }
    for (d, culprit) in done.iter_mut().zip(culprits) {
        match d.take() {
            Some(d) if culprit => {
                let _ = d.send(Err(Rejected(error.to_string())));
            }
            _ => {}
        }
    }
}

/// Writes one batch (verifications, observations, then the latest record of each pair).
async fn write_batch(
    store: &WriterStores,
    settings: &WriterSettings,
    verifications: &[VerificationRecord],
    observations: &[Observation],
    records: &[VersionedRecord],
    now: i64,
) -> Result<(), StoreError> {
    for v in verifications {
        retry(settings, "put_verification", || store.verifications.put_verification(v)).await?;
    }
    retry(settings, "put_observations", || store.observations.put_observations(observations)).await?;
    retry(settings, "put_records", || store.records.put_records(records, now)).await
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.observations.is_empty() && self.records.is_empty() && self.verifications.is_empty() && self.done.is_empty()
    }
}

pub struct StoreWriter {
    store: WriterStores,
    settings: WriterSettings,
    pending: Batch,
    flush_scheduled: bool,
    /// Whether this writer keeps the conflict-queue depth gauge (one writer of the
    /// pipeline does: reading the depth is a query over the whole queue).
    reads_depth: bool,
    last_depth: Option<Instant>,
    /// Loads waiting for [`ReadLoads`].
    loads: Vec<Load>,
}

impl StoreWriter {
    /// A writer; `reads_depth`: it also reads the conflict-queue depth (at most once a
    /// second while flushing, else every two seconds) for the gauge.
    pub fn new(store: WriterStores, settings: WriterSettings, reads_depth: bool) -> Self {
        StoreWriter {
            store,
            settings,
            pending: Batch::default(),
            flush_scheduled: false,
            reads_depth,
            last_depth: None,
            loads: Vec::new(),
        }
    }

    /// Writes the pending batch; blocks the mailbox until it is durable.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if let Some(written) = self.start_flush() {
            ctx.wait(written.into_actor(self));
        }
    }

    /// Starts writing the pending batch (if any) on the runtime's worker threads; the
    /// future returned ends when the write did. A caller that has more to do after the
    /// write awaits it in the same `ctx.wait` future: actix runs the most recent wait
    /// first, so a second wait would not run after the first.
    fn start_flush(&mut self) -> Option<impl Future<Output = ()>> {
        if self.pending.is_empty() {
            return None;
        }
        let mut batch = std::mem::take(&mut self.pending);
        let spans = std::mem::take(&mut batch.spans);
        let (batch_span, writes) = batch_spans(&batch, spans);
        let store = self.store.clone();
        let settings = self.settings.clone();
        let read_depth = self.reads_depth && self.last_depth.map_or(true, |t| t.elapsed() >= Duration::from_secs(1));
        if read_depth {
            self.last_depth = Some(Instant::now());
        }
        let fut = async move {
            let Batch { observations, records: all_records, verifications, done, units, shares, .. } = batch;
            let mut split = LatestSplit::new(all_records);
            let now = crate::ports::now_ms();
            let done_total = done.len();
            let mut done: Vec<Option<Done>> = done.into_iter().map(Some).collect();
            if let Err(e) = write_batch(&store, &settings, &verifications, &observations, &split.latest, now).await {
                // Retrying the batch will not help: write it message by message, in order.
                crate::warn_event!(crate::telemetry::events::LogEvent::StoreBatchRejected, error = %e, messages = units.len(), "writing the batch message by message");
                let all_records = split.rejoin();
                for u in &units {
                    let recs = latest_per_pair(all_records[u.records.clone()].to_vec());
                    let (obs, vers) = (&observations[u.observations.clone()], &verifications[u.verifications.clone()]);
                    if let Err(e) = write_batch(&store, &settings, vers, obs, &recs, now).await {
                        StoreRejected {
                            observations: obs.len(),
                            records: recs.len(),
                            verifications: vers.len(),
                            error: &e.to_string(),
                        }
                        .emit();
                        reject_unit(&store, &settings, obs, vers, &mut done[u.done.clone()], &e).await;
                    }
                }
                split = LatestSplit::new(all_records);
            }
            let records = split.latest;
            let done: Vec<Done> = done.into_iter().flatten().collect();
            let outcome = if done.len() == done_total { "durable" } else { "partly_rejected" };
            for s in writes.iter().chain(std::iter::once(&tracing::Span::current())) {
                s.record("vex.outcome", outcome);
            }
            drop(writes);
            let durable_at = crate::ports::now_ms();
            let received: Vec<i64> = observations.iter().filter_map(|o| o.provenance.received_at_ms).collect();
            ObservationsDurable {
                observations: observations.len(),
                records: records.len(),
                received_at_ms: &received,
                now_ms: durable_at,
            }
            .emit();
            for r in &records {
                // The correlation id of an observation of this record's pair in the batch
                // (else of its vulnerability: a statement about a version-less package
                // applies to the package's concrete artifacts).
                let rec = &r.record;
                let of = |exact: bool| {
                    observations
                        .iter()
                        .filter(|o| *o.tenant == *rec.tenant && *o.vulnerability == *rec.vulnerability)
                        .filter(|o| !exact || *o.artifact == *rec.artifact)
                        .find_map(|o| o.provenance.correlation_id.as_deref())
                };
                RecordChanged { record: &r.record, correlation_id: &|| of(true).or_else(|| of(false)) }.emit();
            }
            // Written: the records' shares of the budget go back before anyone hears of it.
            drop(shares);
            for d in done {
                let _ = d.send(Ok(()));
            }
            if read_depth {
                if let Ok(depths) = store.conflicts.conflict_queue_depths().await {
                    ConflictQueueDepth { depths: &depths }.emit();
                }
            }
        };
        // Encode and write on the runtime's worker threads, not on this actor's thread;
        // the mailbox still waits for the batch (order, back-pressure).
        let spawned = tokio::spawn(tracing::Instrument::instrument(fut, batch_span));
        Some(async move {
            if let Err(e) = spawned.await {
                crate::error_event!(crate::telemetry::events::LogEvent::StoreWriteTaskFailed, error = %e, "store write task failed");
            }
        })
    }
}

/// The `vex.store.batch` span of a batch and its `vex.store.write` spans (one per distinct
/// input span, bounded), each linked to the batch.
fn batch_spans(batch: &Batch, spans: Vec<tracing::Span>) -> (tracing::Span, Vec<tracing::Span>) {
    if spans.iter().all(tracing::Span::is_disabled) {
        return (tracing::Span::none(), Vec::new());
    }
    let batch_span = tracing::info_span!(
        parent: None,
        "vex.store.batch",
        vex.observations = batch.observations.len(),
        vex.records = batch.records.len(),
        vex.verifications = batch.verifications.len(),
        vex.inputs = spans.len(),
        vex.traced = tracing::field::Empty,
        vex.outcome = tracing::field::Empty,
    );
    let writes = crate::telemetry::trace::one_child_per_parent(spans.iter(), |parent| {
        let w = tracing::info_span!(
            parent: parent,
            "vex.store.write",
            vex.batch_observations = batch.observations.len(),
            vex.batch_records = batch.records.len(),
            vex.outcome = tracing::field::Empty,
        );
        crate::telemetry::trace::link_traces(&w, [&batch_span]);
        w
    });
    batch_span.record("vex.traced", writes.len());
    (batch_span, writes)
}

/// Keeps the last record of each pair (the batch's earlier ones were never durable, so
/// they are not changes anyone could observe), in order of last occurrence.
pub fn latest_per_pair(records: Vec<VersionedRecord>) -> Vec<VersionedRecord> {
    LatestSplit::new(records).latest
}

/// A batch's records split, without copying them, into the last record of each pair
/// (`latest`: what the batch writes, in order of last occurrence) and the earlier ones,
/// each with its position in the batch, so that the batch can be put back in order (to be
/// written message by message after the store rejected it whole).
struct LatestSplit {
    latest: Vec<VersionedRecord>,
    latest_at: Vec<usize>,
    earlier: Vec<(usize, VersionedRecord)>,
}

impl LatestSplit {
    fn new(records: Vec<VersionedRecord>) -> Self {
        let pairs: Vec<crate::domain::consensus::PairKey> = records.iter().map(|r| r.record.pair()).collect();
        let mut last: std::collections::HashMap<&crate::domain::consensus::PairKey, usize> =
            std::collections::HashMap::with_capacity(records.len());
        for (i, p) in pairs.iter().enumerate() {
            last.insert(p, i);
        }
        let mut split = LatestSplit {
            latest: Vec::with_capacity(last.len()),
            latest_at: Vec::with_capacity(last.len()),
            earlier: Vec::new(),
        };
        for ((i, r), p) in records.into_iter().enumerate().zip(&pairs) {
            if last.get(p) == Some(&i) {
                split.latest.push(r);
                split.latest_at.push(i);
            } else {
                split.earlier.push((i, r));
            }
        }
        split
    }

    /// The batch's records in their first order.
    fn rejoin(self) -> Vec<VersionedRecord> {
        let mut all: Vec<(usize, VersionedRecord)> =
            self.latest_at.into_iter().zip(self.latest).chain(self.earlier).collect();
        all.sort_unstable_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, r)| r).collect()
    }
}

/// Runs `op` until it succeeds or fails permanently (`!is_retriable()`: returned; and
/// [`crate::ports::INTERNAL_ERROR_ATTEMPTS`] internal errors in a row: returned as
/// `Rejected`), with jittered exponential backoff between attempts (`crate::backoff`);
/// an attempt that does not answer within `store_timeout` (doubled per attempt, up to
/// 16x) counts as failed (retriably).
pub async fn retry<T, F, Fut>(settings: &WriterSettings, operation: &str, mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut delays = crate::backoff::delays(settings.retry_initial, settings.retry_max);
    let mut attempt = 1u32;
    // Internal errors in a row (bounded: see `StoreError::Internal`).
    let mut internal = 0u32;
    loop {
        // A slow store must still make progress: each attempt may wait twice as long.
        let limit = settings.store_timeout * 2u32.saturating_pow(attempt.saturating_sub(1).min(4));
        let t0 = Instant::now();
        let attempted = tokio::time::timeout(limit, op()).await;
        StoreAttempt { operation, duration: t0.elapsed() }.emit();
        let result = match attempted {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!("no answer within {limit:?}"))),
        };
        match result {
            Ok(v) => return Ok(v),
            Err(e) if !e.is_retriable() => return Err(e),
            Err(StoreError::Internal(m)) if internal + 1 >= crate::ports::INTERNAL_ERROR_ATTEMPTS => {
                return Err(StoreError::Rejected(format!("{} internal errors in a row; last: {m}", internal + 1)))
            }
            Err(e) => {
                internal = if matches!(e, StoreError::Internal(_)) { internal + 1 } else { 0 };
                let delay = delays.next().unwrap_or(settings.retry_max);
                StoreRetry { operation, attempt, error: &e.to_string(), delay }.emit();
                tokio::time::sleep(delay).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

impl Actor for StoreWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.settings.mailbox_capacity);
        if !self.reads_depth {
            return;
        }
        // The per-tenant depth gauge also follows changes after the last flush (it is
        // read at most once a second while flushing).
        ctx.run_interval(Duration::from_secs(2), |act, ctx| {
            if act.last_depth.is_some_and(|t| t.elapsed() < Duration::from_secs(2)) {
                return;
            }
            act.last_depth = Some(Instant::now());
            let store = act.store.conflicts.clone();
            ctx.spawn(
                async move {
                    if let Ok(depths) = store.conflict_queue_depths().await {
                        ConflictQueueDepth { depths: &depths }.emit();
                    }
                }
                .into_actor(act),
            );
        });
    }
}

impl Supervised for StoreWriter {
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        crate::warn_event!(
            crate::telemetry::events::LogEvent::StoreWriterRestarting,
            pending = self.pending.observations.len(),
            "restarting"
        );
        self.flush_scheduled = false;
        let delay = self.settings.retry_initial;
        ctx.run_later(delay, |act, ctx| {
            act.flush(ctx);
            // Loads queued before the restart (their `ReadLoads` went with the old context).
            if !act.loads.is_empty() {
                ctx.notify(ReadLoads);
            }
        });
    }
}

impl Handler<Persist> for StoreWriter {
    type Result = ();

    fn handle(&mut self, msg: Persist, ctx: &mut Context<Self>) {
        for o in &msg.observations {
            self.pending.packages.insert((o.tenant.to_string(), o.package.to_string()));
        }
        let p = &mut self.pending;
        let unit = Unit {
            observations: p.observations.len()..p.observations.len() + msg.observations.len(),
            records: p.records.len()..p.records.len() + msg.records.len(),
            verifications: p.verifications.len()..p.verifications.len(),
            done: p.done.len()..p.done.len() + msg.done.len(),
        };
        p.units.push(unit);
        self.pending.observations.extend(msg.observations);
        self.pending.records.extend(msg.records);
        self.pending.done.extend(msg.done);
        self.pending.spans.extend(msg.spans);
        self.pending.shares.push(msg.share);
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
        let p = &mut self.pending;
        let unit = Unit {
            observations: p.observations.len()..p.observations.len(),
            records: p.records.len()..p.records.len(),
            verifications: p.verifications.len()..p.verifications.len() + 1,
            done: p.done.len()..p.done.len() + 1,
        };
        p.units.push(unit);
        self.pending.verifications.push(msg.record);
        self.pending.done.push(msg.done);
        self.pending.spans.push(msg.span);
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.run_later(self.settings.flush_after, |act, ctx| {
                act.flush_scheduled = false;
                act.flush(ctx);
            });
        }
    }
}

/// A [`LoadPackage`] waiting to be read with the others that arrived with it.
struct Load {
    key: (String, String),
    answer: tokio::sync::oneshot::Sender<Option<Vec<Observation>>>,
}

/// To the writer itself: read the waiting loads (after the messages already in the
/// mailbox, so that loads arriving together are read together).
#[derive(Message)]
#[rtype(result = "()")]
struct ReadLoads;

impl Handler<LoadPackage> for StoreWriter {
    type Result = ResponseFuture<Option<Vec<Observation>>>;

    /// Queues the load; the loads that arrive together are read in one store call
    /// ([`ReadLoads`]): a document naming many packages starts as many actors at once.
    fn handle(&mut self, msg: LoadPackage, ctx: &mut Context<Self>) -> Self::Result {
        let (answer, loaded) = tokio::sync::oneshot::channel();
        if self.loads.is_empty() {
            ctx.notify(ReadLoads);
        }
        self.loads.push(Load { key: (msg.tenant, msg.package), answer });
        Box::pin(async move { loaded.await.ok().flatten() })
    }
}

impl Handler<ReadLoads> for StoreWriter {
    type Result = ();

    /// Reads the waiting loads without blocking the writer, unless one of their packages
    /// has unwritten observations: then the pending batch is written first and the loads
    /// are read right after it (both blocking the mailbox, so nothing overtakes them).
    fn handle(&mut self, _: ReadLoads, ctx: &mut Context<Self>) {
        let loads = std::mem::take(&mut self.loads);
        if loads.is_empty() {
            return;
        }
        let must_flush = loads.iter().any(|l| self.pending.packages.contains(&l.key));
        let store = self.store.observations.clone();
        let settings = self.settings.clone();
        let read = async move {
            let keys: Vec<(String, String)> = loads.iter().map(|l| l.key.clone()).collect();
            let loaded = retry(&settings, "observations_for_packages", || store.observations_for_packages(&keys))
                .await
                .map_err(|e| crate::error_event!(crate::telemetry::events::LogEvent::LoadRejected, error = %e, packages = keys.len(), "packages not loaded"))
                .ok();
            match loaded {
                Some(each) if each.len() == loads.len() => {
                    for (l, observations) in loads.into_iter().zip(each) {
                        let _ = l.answer.send(Some(observations));
                    }
                }
                _ => {
                    for l in loads {
                        let _ = l.answer.send(None);
                    }
                }
            }
        };
        if must_flush {
            let written = OptionFuture::from(self.start_flush());
            ctx.wait(
                async move {
                    written.await;
                    read.await;
                }
                .into_actor(self),
            );
        } else {
            actix::spawn(read);
        }
    }
}

impl Handler<Drain> for StoreWriter {
    type Result = AtomicResponse<Self, ()>;

    /// Answers when the pending batch is durable: the answer waits in the same future
    /// as the write (a second `ctx.wait` would run first, see [`StoreWriter::start_flush`]).
    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        let written = OptionFuture::from(self.start_flush());
        AtomicResponse::new(Box::pin(written.into_actor(self).map(|_, _, _| ())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::consensus::PairKey;
    use crate::domain::model::Status;
    use crate::domain::version::RecordVersion;
    use crate::stores::contract::{records_of, sample_observation};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A batch naming pairs a, b, a, c, b (in that order) keeps the last record of each
    /// (c's, a's second, b's second: in order of last occurrence), and the split puts the
    /// five back in their order.
    #[test]
    fn the_latest_split_keeps_each_pairs_last_record_and_rejoins_in_order() {
        let artifacts = ["pkg:npm/left@1.0.0", "pkg:npm/left@2.0.0", "pkg:npm/left@3.0.0"];
        let record = |a: usize, offset: i64| {
            let o = sample_observation("t", "vendor", artifacts[a], "CVE-2024-1", Status::Affected);
            let pair =
                PairKey { tenant: "t".into(), artifact: o.artifact.to_string(), vulnerability: "CVE-2024-1".into() };
            VersionedRecord::new(records_of(&[o], &pair), RecordVersion { epoch: 0, offset, observations: 1 })
        };
        let batch = vec![record(0, 1), record(1, 2), record(0, 3), record(2, 4), record(1, 5)];
        let offsets = |v: &[VersionedRecord]| v.iter().map(|r| r.version.offset).collect::<Vec<_>>();
        let split = LatestSplit::new(batch);
        assert_eq!(offsets(&split.latest), [3, 4, 5]);
        assert_eq!(offsets(&split.rejoin()), [1, 2, 3, 4, 5]);
    }

    fn settings() -> WriterSettings {
        WriterSettings {
            batch_max: 1,
            flush_after: Duration::from_millis(1),
            retry_initial: Duration::from_millis(1),
            retry_max: Duration::from_millis(2),
            store_timeout: Duration::from_secs(5),
            mailbox_capacity: 1,
        }
    }

    /// A writer that never flushes on its own within a test: only a load or a drain can
    /// make it write.
    fn settings_holding_the_batch() -> WriterSettings {
        WriterSettings { batch_max: 1000, flush_after: Duration::from_secs(600), mailbox_capacity: 16, ..settings() }
    }

    /// An internal error is retried, a few times only: then it counts as rejected (a
    /// failure the request causes every time must not hold the writer forever).
    #[tokio::test]
    async fn internal_errors_are_retried_a_bounded_number_of_times() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry(&settings(), "put_records", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::Internal("code 1".into()))
        })
        .await;
        assert!(matches!(r, Err(StoreError::Rejected(_))), "{r:?}");
        assert_eq!(calls.load(Ordering::SeqCst), crate::ports::INTERNAL_ERROR_ATTEMPTS);

        // Transient: two internal errors, then it works.
        let calls = AtomicU32::new(0);
        let r = retry(&settings(), "put_records", || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(StoreError::Internal("code 1".into())),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(r.unwrap(), 7);

        // Unavailable in between resets the count (an outage is retried forever).
        let calls = AtomicU32::new(0);
        let r = retry(&settings(), "put_records", || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            match n {
                n if n < 12 && n % 2 == 0 => Err(StoreError::Internal("code 1".into())),
                n if n < 12 => Err(StoreError::Unavailable("down".into())),
                _ => Ok(()),
            }
        })
        .await;
        assert!(r.is_ok(), "{r:?}");
    }

    /// Counts the loads an observation store is asked for, and how many packages each
    /// names (the rest goes to the embedded store).
    struct CountingLoads {
        inner: Arc<crate::stores::embedded::EmbeddedStore>,
        loads: std::sync::Mutex<Vec<usize>>,
    }

    #[async_trait::async_trait]
    impl ObservationStore for CountingLoads {
        async fn put_observations(&self, observations: &[Observation]) -> Result<(), StoreError> {
            self.inner.put_observations(observations).await
        }
        async fn observations_for_package(&self, tenant: &str, package: &str) -> Result<Vec<Observation>, StoreError> {
            self.loads.lock().unwrap().push(1);
            self.inner.observations_for_package(tenant, package).await
        }
        async fn observations_for_packages(
            &self,
            packages: &[(String, String)],
        ) -> Result<Vec<Vec<Observation>>, StoreError> {
            self.loads.lock().unwrap().push(packages.len());
            self.inner.observations_for_packages(packages).await
        }
        async fn tenant_packages(&self, tenant: &str) -> Result<Vec<String>, StoreError> {
            self.inner.tenant_packages(tenant).await
        }
    }

    /// Loads that arrive together are read in one store call, each answered with its own
    /// package's observations; one of a package whose observations still wait in the
    /// writer's batch is answered after they are durable, and sees them.
    #[test]
    fn loads_arriving_together_are_read_together_after_their_packages_pending_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        actix::System::new().block_on(async move {
            let inner = Arc::new(crate::stores::embedded::EmbeddedStore::open(&path).unwrap());
            let stored = sample_observation("t", "vendor", "pkg:npm/stored@1.0.0", "CVE-2024-1", Status::Affected);
            inner.put_observations(std::slice::from_ref(&stored)).await.unwrap();
            let counting = Arc::new(CountingLoads { inner: inner.clone(), loads: Default::default() });
            let stores = WriterStores { observations: counting.clone(), ..WriterStores::from(Stores::of(inner)) };
            // Nothing is flushed on its own within the test: only a load can force it.
            let s = settings_holding_the_batch();
            let writer = StoreWriter::new(stores, s, false).start();
            let pending = sample_observation("t", "vendor", "pkg:npm/pending@1.0.0", "CVE-2024-1", Status::Fixed);
            let (done, mut durable) = tokio::sync::oneshot::channel();
            let spans = vec![tracing::Span::none()];
            writer.do_send(Persist {
                observations: vec![pending.clone()],
                records: Vec::new(),
                done: vec![done],
                spans,
                share: RecordShare::default(),
            });
            let load = |package: &str| writer.send(LoadPackage { tenant: "t".into(), package: package.into() });
            let (a, b, none) = tokio::join!(load(&stored.package), load(&pending.package), load("pkg:npm/none"));
            let ids = |r: Result<Option<Vec<Observation>>, MailboxError>| {
                r.unwrap().expect("loaded").iter().map(|o| o.id.to_string()).collect::<Vec<_>>()
            };
            assert_eq!(ids(a), [stored.id.to_string()]);
            assert_eq!(ids(b), [pending.id.to_string()], "the pending observation was written before the load");
            assert!(ids(none).is_empty());
            assert!(matches!(durable.try_recv(), Ok(Ok(()))), "durable before the load was answered");
            assert_eq!(*counting.loads.lock().unwrap(), [3], "one read for the three loads");
        });
    }

    /// `Drain` answers once everything pending is durable.
    #[test]
    fn a_drain_answers_after_the_pending_batch_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        actix::System::new().block_on(async move {
            let store = Arc::new(crate::stores::embedded::EmbeddedStore::open(&path).unwrap());
            let s = settings_holding_the_batch();
            let writer = StoreWriter::new(WriterStores::from(Stores::of(store.clone())), s, false).start();
            let o = sample_observation("t", "vendor", "pkg:npm/drained@1.0.0", "CVE-2024-1", Status::Fixed);
            let (done, mut durable) = tokio::sync::oneshot::channel();
            let spans = vec![tracing::Span::none()];
            writer.do_send(Persist {
                observations: vec![o.clone()],
                records: Vec::new(),
                done: vec![done],
                spans,
                share: RecordShare::default(),
            });
            writer.send(Drain).await.unwrap();
            assert!(matches!(durable.try_recv(), Ok(Ok(()))), "durable when the drain answered");
            assert_eq!(store.observations_for_package("t", &o.package).await.unwrap().len(), 1);
        });
    }
}
