//! ArtifactActor: the in-memory consensus state of one (tenant, package), fed in order.
//!
//! Invariants: the state is rebuilt from the store (through the store writer, so every
//! acknowledged observation is included) BEFORE the first new observation applies; the
//! observations applied in one turn are handed to the store writer together with the
//! records they changed (each changed pair evaluated once) and their completion
//! signals, evaluated only once the pipeline's [`RecordBudget`] gave a share for them
//! (the share goes with the records and comes back when they are written), each record
//! with its version (the policy epoch, then the highest stream position and the number
//! of the observations applying to the pair: see `ports::RecordVersion`), so the store
//! never lets an older state replace a newer one; after a rebuild that found stored
//! observations the first write re-evaluates every pair (heals a crash between the
//! observation and record writes), unless the registry knows the package's stored
//! records follow from its stored observations (its previous actor in this process and
//! generation left with every write durable); every evaluation uses the tenant's policy
//! installed at that moment ([`Policies`]), and a `Recompute` (trust change) hands over the
//! pending observations first, rebuilds the state from the store, then re-evaluates every
//! pair.
//! No business rule lives here: `PackageState` decides.
//! Spans: `vex.artifact.apply` under each observation's span, `vex.artifact.rebuild` under
//! the observation that triggered it, one `vex.artifact.evaluate` per hand-over under the
//! first observation's span, linked to the other traces it evaluated for (bounded).

use super::budget::{RecordBudget, RecordShare};
use super::messages::{Apply, Done, LoadPackage, Persist, Recompute};
use super::writer::StoreWriter;
use crate::domain::consensus::{Effects, PackageConsensus, Rebuild};
use crate::domain::model::Observation;
use crate::telemetry::events::{ConflictsAppeared, Recomputed};
use crate::telemetry::{RECOMPUTE_INGESTION_DELTA, RECOMPUTE_REBUILD};
use crate::trust::Policies;
use actix::prelude::*;
use futures::future::OptionFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct ArtifactActor {
    tenant: String,
    package: String,
    policies: Arc<Policies>,
    writer: Addr<StoreWriter>,
    /// The package's consensus (`apply -> effects`), once rebuilt from the store.
    state: Option<PackageConsensus>,
    mailbox_capacity: usize,
    pending: Vec<Observation>,
    pending_done: Vec<Done>,
    /// The span of each pending observation.
    pending_spans: Vec<tracing::Span>,
    flush_scheduled: bool,
    /// The observations the state holds, for the registry's bound on them
    /// (`actors.max_live_observations`): set whenever the state changes.
    held: Arc<AtomicUsize>,
    /// The records in flight to the store writers, shared by the pipeline's actors.
    budget: RecordBudget,
    /// The package's stored records follow from its stored observations (its previous
    /// actor in this process left with every write durable): the rebuild needs no heal.
    consistent: bool,
}

/// Most observations applied before their records are handed over regardless.
const MAX_PENDING: usize = 512;

impl ArtifactActor {
    /// The actor of `(tenant, package)`.
    pub fn new(
        (tenant, package): (String, String),
        policies: Arc<Policies>,
        writer: Addr<StoreWriter>,
        mailbox_capacity: usize,
        held: Arc<AtomicUsize>,
        budget: RecordBudget,
        consistent: bool,
    ) -> Self {
        ArtifactActor {
            tenant,
            package,
            policies,
            writer,
            state: None,
            mailbox_capacity,
            pending: Vec::new(),
            pending_done: Vec::new(),
            pending_spans: Vec::new(),
            flush_scheduled: false,
            held,
            budget,
            consistent,
        }
    }

    /// Publishes how many observations the state holds (none without a state).
    fn publish_held(&self) {
        let n = self.state.as_ref().map_or(0, |s| s.state().len());
        self.held.store(n, Ordering::Relaxed);
    }

    /// Counts the conflicts that appeared (the effects say which), each line with the
    /// correlation id of an observation of its pair among `applied` (this turn's).
    fn emit_conflicts(&self, effects: &Effects, applied: &[Observation]) {
        for c in &effects.conflicts_appeared {
            let reasons: Vec<&str> = c.reasons.iter().map(|r| r.as_str()).collect();
            let correlation_id = applied
                .iter()
                .filter(|o| *o.artifact == *c.pair.artifact && *o.vulnerability == *c.pair.vulnerability)
                .find_map(|o| o.provenance.correlation_id.as_deref());
            ConflictsAppeared {
                tenant: &c.pair.tenant,
                artifact: &c.pair.artifact,
                vulnerability: &c.pair.vulnerability,
                reasons: &reasons,
                correlation_id,
            }
            .emit();
        }
        for e in &effects.undigestible {
            crate::error_event!(crate::telemetry::events::LogEvent::RecordUndigestible, error = %e, "record not written");
        }
    }

    /// Installs the state rebuilt from `stored`; with `baseline`, the conflicts the stored
    /// records already carry are the baseline (a caller that re-evaluates every pair right
    /// away records them itself).
    fn install(&mut self, stored: Vec<Observation>, baseline: bool) {
        let t0 = Instant::now();
        let n = stored.len();
        // The stored records already carry the conflicts of the stored observations: a
        // rebuild is the baseline, not new conflicts.
        let how =
            Rebuild { heal: !self.consistent, baseline: baseline.then(|| self.policies.for_tenant(&self.tenant)) };
        let (consensus, errors) = PackageConsensus::rebuild(stored, how);
        for e in errors {
            crate::warn_event!(crate::telemetry::events::LogEvent::RebuildSkip, tenant = %self.tenant, package = %self.package, error = %e, "stored observation skipped");
        }
        Recomputed {
            reason: RECOMPUTE_REBUILD,
            tenant: &self.tenant,
            package: &self.package,
            pairs: n,
            duration: t0.elapsed(),
        }
        .emit();
        self.state = Some(consensus);
        self.publish_held();
    }

    /// Applies one observation to the state; its records are evaluated and handed over
    /// with the other observations applied in the same turn ([`Self::flush`]).
    fn apply(&mut self, msg: Apply, ctx: &mut Context<Self>) {
        let Some(state) = self.state.as_mut() else {
            return;
        };
        let Apply { observation, done, span: parent } = msg;
        let span = apply_span(&parent, &observation);
        let _entered = span.enter();
        match state.stage(observation.clone()) {
            Ok(changed) => {
                span.record("vex.pairs_changed", changed);
                span.record("vex.outcome", "applied");
            }
            Err(e) => {
                // Validated before routing; a mismatch here is a bug, not bad input.
                span.record("vex.outcome", "rejected");
                crate::telemetry::events::ObservationRejected { error: &e.to_string() }.emit();
                return;
            }
        }
        self.pending.push(observation);
        self.pending_done.push(done);
        self.pending_spans.push(parent);
        if self.pending.len() >= MAX_PENDING {
            self.flush(ctx);
        } else if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.run_later(Duration::ZERO, |act, ctx| {
                act.flush_scheduled = false;
                act.flush(ctx);
            });
        }
    }

    /// Evaluates every pair changed since the last flush once and hands observations,
    /// records and completion signals to the store writer (blocking this actor's mailbox
    /// until the budget gives a share for the records and the store writer accepts them:
    /// back-pressure).
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if !self.pending.is_empty() {
            ctx.wait(self.share_then_hand_over());
        }
    }

    /// Waits for the budget's share of the pairs the pending observations changed (the
    /// mailbox waits too, so nothing is staged meanwhile), then hands them over
    /// ([`Self::hand_over`]); ends when the store writer accepted them. Whatever must
    /// follow it waits in the same future: actix runs the most recent `ctx.wait` first, so
    /// a later wait would run before it.
    fn share_then_hand_over(&mut self) -> impl ActorFuture<Self, Output = ()> + 'static {
        let pairs = match self.state.as_mut() {
            Some(state) if !self.pending.is_empty() => state.pairs_to_evaluate(),
            _ => 0,
        };
        self.budget
            .take(pairs)
            .into_actor(self)
            .then(|share, act, _| OptionFuture::from(act.hand_over(share)).into_actor(act))
            .map(|_, _, _| ())
    }

    /// Evaluates the pending observations' pairs and hands everything to the store
    /// writer, with the budget's `share` of the records; the future returned ends when
    /// the store writer accepted the hand-over.
    fn hand_over(&mut self, share: RecordShare) -> Option<impl std::future::Future<Output = ()> + 'static> {
        if self.pending.is_empty() {
            return None;
        }
        let state = self.state.as_mut()?;
        let t0 = Instant::now();
        let heal = state.heals_next();
        let span = match self.pending_spans.first() {
            Some(first) => tracing::info_span!(
                parent: first,
                "vex.artifact.evaluate",
                vex.tenant = crate::telemetry::trace::bounded(&self.tenant),
                vex.package = crate::telemetry::trace::bounded(&self.package),
                vex.observations = self.pending.len(),
                vex.heal = heal,
                vex.records = tracing::field::Empty,
                vex.conflicts = tracing::field::Empty,
                vex.traces_linked = tracing::field::Empty,
            ),
            None => tracing::Span::none(),
        };
        if !span.is_disabled() {
            let linked = crate::telemetry::trace::link_traces(&span, self.pending_spans.iter().skip(1));
            span.record("vex.traces_linked", linked);
        }
        let _entered = span.enter();
        let policy = self.policies.for_tenant(&self.tenant);
        let effects = state.effects(&policy);
        self.publish_held();
        self.emit_conflicts(&effects, &self.pending);
        let records = effects.records;
        span.record("vex.records", records.len());
        span.record("vex.conflicts", records.iter().filter(|r| !r.record.conflicts.is_empty()).count());
        Recomputed {
            reason: RECOMPUTE_INGESTION_DELTA,
            tenant: &self.tenant,
            package: &self.package,
            pairs: records.len(),
            duration: t0.elapsed(),
        }
        .emit();
        let persist = Persist {
            observations: std::mem::take(&mut self.pending),
            records,
            done: std::mem::take(&mut self.pending_done),
            spans: std::mem::take(&mut self.pending_spans),
            share,
        };
        let writer = self.writer.clone();
        Some(async move {
            if let Err(e) = writer.send(persist).await {
                crate::error_event!(crate::telemetry::events::LogEvent::StoreWriterUnreachable, error = %e, "store writer unreachable");
            }
        })
    }
}

impl ArtifactActor {
    /// Re-evaluates every pair with the tenant's installed policy and hands the records to
    /// the store writer (after the pending observations): a trust change. Waits for the
    /// budget's share of every pair first (the mailbox waits too).
    fn recompute(&mut self, msg: Recompute, ctx: &mut Context<Self>) {
        let Some(state) = self.state.as_ref() else {
            return;
        };
        let share = self.budget.take(state.pair_count());
        ctx.wait(share.into_actor(self).map(move |share, act, ctx| act.recompute_with(msg, share, ctx)));
    }

    fn recompute_with(&mut self, msg: Recompute, share: RecordShare, ctx: &mut Context<Self>) {
        let Some(state) = self.state.as_mut() else {
            return;
        };
        let t0 = Instant::now();
        let policy = self.policies.for_tenant(&self.tenant);
        // The new policy's conflicts are the new baseline: `vex_consensus_conflicts_total`
        // counts conflicts that statements bring, not a re-evaluation's (the conflict
        // queue and its depth show them).
        let effects = state.recompute(&policy);
        self.emit_conflicts(&effects, &[]);
        let records = effects.records;
        Recomputed {
            reason: msg.reason,
            tenant: &self.tenant,
            package: &self.package,
            pairs: records.len(),
            duration: t0.elapsed(),
        }
        .emit();
        let (written, reply, n) =
            (tokio::sync::oneshot::channel::<Result<(), super::messages::Rejected>>(), msg.done, records.len());
        actix::spawn(async move {
            if let Ok(result) = written.1.await {
                let _ = reply.send(result.map(|()| n));
            }
        });
        let persist = Persist { observations: Vec::new(), records, done: vec![written.0], spans: Vec::new(), share };
        let writer = self.writer.clone();
        ctx.wait(
            async move {
                if let Err(e) = writer.send(persist).await {
                    crate::error_event!(crate::telemetry::events::LogEvent::StoreWriterUnreachable, error = %e, "store writer unreachable");
                }
            }
            .into_actor(self),
        );
    }

    /// Runs `then` once the state is installed (rebuilding it from the store first when
    /// this actor has none yet, in a `vex.artifact.rebuild` span under `parent`; the
    /// mailbox waits meanwhile).
    fn with_state(
        &mut self,
        ctx: &mut Context<Self>,
        baseline: bool,
        parent: &tracing::Span,
        then: impl FnOnce(&mut Self, &mut Context<Self>) + 'static,
    ) {
        if self.state.is_some() {
            return then(self, ctx);
        }
        let span = tracing::info_span!(
            parent: parent,
            "vex.artifact.rebuild",
            vex.tenant = crate::telemetry::trace::bounded(&self.tenant),
            vex.package = crate::telemetry::trace::bounded(&self.package),
            vex.observations = tracing::field::Empty,
        );
        // Sent when this wait runs. Actix runs the most recent wait first: a caller with
        // a hand-over of pending observations calls this once the writer has it
        // (`Recompute`), so the load sees them.
        let (writer, load) =
            (self.writer.clone(), LoadPackage { tenant: self.tenant.clone(), package: self.package.clone() });
        ctx.wait(async move { writer.send(load).await }.into_actor(self).map(move |loaded, act, ctx| match loaded {
            Ok(Some(stored)) => {
                {
                    let _entered = span.enter();
                    span.record("vex.observations", stored.len());
                    act.install(stored, baseline);
                }
                drop(span);
                then(act, ctx);
            }
            Ok(None) => crate::error_event!(crate::telemetry::events::LogEvent::RebuildFailed, "store writer restarted during the load"),
            Err(e) => crate::error_event!(crate::telemetry::events::LogEvent::RebuildFailed, error = %e, "store writer unreachable"),
        }));
    }
}

/// The `vex.artifact.apply` span of one observation, under its span.
fn apply_span(parent: &tracing::Span, o: &Observation) -> tracing::Span {
    use crate::telemetry::trace::bounded;
    if parent.is_disabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        parent: parent,
        "vex.artifact.apply",
        vex.tenant = bounded(&o.tenant),
        vex.artifact = bounded(&o.artifact),
        vex.vulnerability = bounded(&o.vulnerability),
        vex.issuer = o.issuer.as_deref().map(bounded),
        vex.document_digest = bounded(&o.document_digest),
        vex.status = ?o.status,
        vex.pairs_changed = tracing::field::Empty,
        vex.outcome = tracing::field::Empty,
    )
}

impl Actor for ArtifactActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
    }
}

impl Handler<Apply> for ArtifactActor {
    type Result = ();

    fn handle(&mut self, msg: Apply, ctx: &mut Context<Self>) {
        let parent = msg.span.clone();
        self.with_state(ctx, true, &parent, move |act, ctx| act.apply(msg, ctx));
    }
}

impl Handler<Recompute> for ArtifactActor {
    type Result = ();

    /// Hands over the pending observations, then rebuilds from the store before
    /// re-evaluating: an actor of a package this instance does not own (created by an
    /// earlier recompute) may hold a state older than the store's.
    fn handle(&mut self, msg: Recompute, ctx: &mut Context<Self>) {
        // The rebuild's load is sent only once the writer has the hand-over (its own
        // wait would run first), so the load reads after it.
        ctx.wait(self.share_then_hand_over().map(move |(), act, ctx| {
            act.state = None;
            act.publish_held();
            act.with_state(ctx, false, &tracing::Span::none(), move |act, ctx| act.recompute(msg, ctx));
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::writer::{WriterSettings, WriterStores};
    use crate::domain::model::Status;
    use crate::domain::trust::Policy;
    use crate::ports::Stores;
    use crate::stores::contract::sample_observation;

    /// An embedded store, a writer on it, and an actor of `o`'s package sharing `budget`.
    fn actor_on_a_store(
        path: &std::path::Path,
        o: &Observation,
        budget: RecordBudget,
    ) -> (Arc<crate::stores::embedded::EmbeddedStore>, Addr<ArtifactActor>, Arc<AtomicUsize>) {
        let store = Arc::new(crate::stores::embedded::EmbeddedStore::open(path).unwrap());
        let settings = WriterSettings {
            batch_max: 1000,
            flush_after: Duration::from_millis(1),
            retry_initial: Duration::from_millis(1),
            retry_max: Duration::from_millis(2),
            store_timeout: Duration::from_secs(5),
            mailbox_capacity: 16,
        };
        let writer = StoreWriter::new(WriterStores::from(Stores::of(store.clone())), settings, false).start();
        let held = Arc::new(AtomicUsize::new(0));
        let policies = Arc::new(Policies::new(Policy::default()));
        let actor =
            ArtifactActor::new(("t".into(), o.package.to_string()), policies, writer, 16, held.clone(), budget, false);
        (store, actor.start(), held)
    }

    /// A trust change (`Recompute`) that arrives while an applied observation still waits
    /// for its hand-over to the writer: the rebuilt state holds the observation (the load
    /// is sent after the hand-over), and the recompute evaluates its pair.
    #[test]
    fn a_recompute_right_after_an_apply_rebuilds_with_the_applied_observation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        actix::System::new().block_on(async move {
            let o = sample_observation("t", "vendor", "pkg:npm/recomputed@1.0.0", "CVE-2024-1", Status::Affected);
            let (_store, actor, held) = actor_on_a_store(&path, &o, RecordBudget::new(1));
            let (done, durable) = tokio::sync::oneshot::channel();
            actor.do_send(Apply { observation: o, done, span: tracing::Span::none() });
            let (recomputed, pairs) = tokio::sync::oneshot::channel();
            actor.do_send(Recompute { reason: crate::telemetry::RECOMPUTE_ISSUER_UPDATE, done: recomputed });
            assert!(matches!(durable.await, Ok(Ok(()))));
            assert_eq!(pairs.await.unwrap().unwrap(), 1, "the recompute evaluated the applied observation's pair");
            assert_eq!(held.load(Ordering::Relaxed), 1, "the rebuilt state holds the applied observation");
        });
    }

    /// With the budget of records in flight taken, an applied observation's record is not
    /// evaluated nor handed over (nothing is written); once the budget is back it is, and
    /// its share returns when the writer has written it.
    #[test]
    fn the_hand_over_waits_for_the_budget_and_returns_its_share_once_written() {
        use crate::ports::RecordStore;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        actix::System::new().block_on(async move {
            let o = sample_observation("t", "vendor", "pkg:npm/budgeted@1.0.0", "CVE-2024-2", Status::Affected);
            let budget = RecordBudget::new(4);
            let (store, actor, _) = actor_on_a_store(&path, &o, budget.clone());
            let all = budget.take(4).await;
            let (done, mut durable) = tokio::sync::oneshot::channel();
            actor.do_send(Apply { observation: o.clone(), done, span: tracing::Span::none() });
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(durable.try_recv().is_err(), "handed over without a share of the budget");
            assert!(store.list_records(Some("t"), None).await.unwrap().is_empty(), "a record was written");
            drop(all);
            assert!(matches!(durable.await, Ok(Ok(()))));
            assert_eq!(store.list_records(Some("t"), None).await.unwrap().len(), 1);
            assert_eq!(budget.available(), 4, "the written record's share came back");
        });
    }
}
