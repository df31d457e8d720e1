//! ArtifactActor: the in-memory consensus state of one (tenant, package), fed in order.
//!
//! Invariants: the state is rebuilt from the store (through the store writer, so every
//! acknowledged observation is included) BEFORE the first new observation applies; the
//! observations applied in one turn are handed to the store writer together with the
//! records they changed (each changed pair evaluated once) and their completion
//! signals, each record with its version (the policy epoch, then the highest stream
//! position and the number of the observations applying to the pair: see
//! `ports::RecordVersion`), so the store never lets an older state replace a newer one;
//! after a rebuild that found stored observations the first
//! write re-evaluates every pair (heals a crash between the observation and record
//! writes); every evaluation uses the tenant's policy installed at that moment
//! ([`Policies`]), and a `Recompute` (trust change) hands over the pending observations
//! first, rebuilds the state from the store, then re-evaluates every pair. No business
//! rule lives here: `PackageState` decides.
//! Spans: `vex.artifact.apply` under each observation's span, `vex.artifact.rebuild` under
//! the observation that triggered it, one `vex.artifact.evaluate` per hand-over under the
//! first observation's span, linked to the other traces it evaluated for (bounded).

use super::messages::{Apply, Done, LoadPackage, Persist, Recompute};
use super::writer::StoreWriter;
use crate::domain::consensus::{Effects, PackageConsensus};
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
}

/// Most observations applied before their records are handed over regardless.
const MAX_PENDING: usize = 512;

impl ArtifactActor {
    pub fn new(
        tenant: String,
        package: String,
        policies: Arc<Policies>,
        writer: Addr<StoreWriter>,
        mailbox_capacity: usize,
        held: Arc<AtomicUsize>,
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

    /// Installs the state rebuilt from `stored`; with `baseline`, evaluates every pair to
    /// record the conflicts the stored records already carry (a caller that re-evaluates
    /// every pair right away records them itself).
    fn install(&mut self, stored: Vec<Observation>, baseline: bool) {
        let t0 = Instant::now();
        let n = stored.len();
        let policy = self.policies.for_tenant(&self.tenant);
        // The stored records already carry the conflicts of the stored observations: a
        // rebuild is the baseline, not new conflicts.
        let (consensus, errors) = PackageConsensus::rebuild(stored, baseline.then_some(&*policy));
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
    /// until the store writer accepts them: back-pressure).
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if let Some(handed_over) = self.hand_over() {
            ctx.wait(handed_over.into_actor(self));
        }
    }

    /// [`Self::flush`]'s work: the future returned ends when the store writer accepted
    /// the hand-over. Whatever must follow it waits in the same future: actix runs the
    /// most recent `ctx.wait` first, so a later wait would run before it.
    fn hand_over(&mut self) -> Option<impl std::future::Future<Output = ()> + 'static> {
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
    /// the store writer (after the pending observations): a trust change.
    fn recompute(&mut self, msg: Recompute, ctx: &mut Context<Self>) {
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
        let persist = Persist { observations: Vec::new(), records, done: vec![written.0], spans: Vec::new() };
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
        let handed_over = self.hand_over();
        self.state = None;
        self.publish_held();
        // The rebuild's load is sent only once the writer has the hand-over (its own
        // wait would run first), so the load reads after it.
        ctx.wait(OptionFuture::from(handed_over).into_actor(self).map(move |_, act, ctx| {
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

    /// A trust change (`Recompute`) that arrives while an applied observation still waits
    /// for its hand-over to the writer: the rebuilt state holds the observation (the load
    /// is sent after the hand-over), and the recompute evaluates its pair.
    #[test]
    fn a_recompute_right_after_an_apply_rebuilds_with_the_applied_observation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        actix::System::new().block_on(async move {
            let store = Arc::new(crate::stores::embedded::EmbeddedStore::open(&path).unwrap());
            let settings = WriterSettings {
                batch_max: 1000,
                flush_after: Duration::from_millis(1),
                retry_initial: Duration::from_millis(1),
                retry_max: Duration::from_millis(2),
                store_timeout: Duration::from_secs(5),
                mailbox_capacity: 16,
            };
            let writer = StoreWriter::new(WriterStores::from(Stores::of(store)), settings, false).start();
            let o = sample_observation("t", "vendor", "pkg:npm/recomputed@1.0.0", "CVE-2024-1", Status::Affected);
            let held = Arc::new(AtomicUsize::new(0));
            let policies = Arc::new(Policies::new(Policy::default()));
            let actor = ArtifactActor::new("t".into(), o.package.to_string(), policies, writer, 16, held.clone());
            let actor = actor.start();
            let (done, durable) = tokio::sync::oneshot::channel();
            actor.do_send(Apply { observation: o, done, span: tracing::Span::none() });
            let (recomputed, pairs) = tokio::sync::oneshot::channel();
            actor.do_send(Recompute { reason: crate::telemetry::RECOMPUTE_ISSUER_UPDATE, done: recomputed });
            assert!(matches!(durable.await, Ok(Ok(()))));
            assert_eq!(pairs.await.unwrap().unwrap(), 1, "the recompute evaluated the applied observation's pair");
            assert_eq!(held.load(Ordering::Relaxed), 1, "the rebuilt state holds the applied observation");
        });
    }
}
