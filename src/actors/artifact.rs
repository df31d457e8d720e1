//! ArtifactActor: the in-memory consensus state of one (tenant, package), fed in order.
//!
//! Invariants: the state is rebuilt from the store (through the export actor, so every
//! acknowledged observation is included) BEFORE the first new observation applies; each
//! observation's changed records go to the export actor together with the observation
//! and its completion signal; after a rebuild that found stored observations the first
//! write re-evaluates every pair (heals a crash between the observation and record
//! writes). No business rule lives here: `PackageState` decides.

use super::exporter::ExportActor;
use super::messages::{Apply, LoadPackage, Persist};
use crate::domain::consensus::PackageState;
use crate::domain::trust::Policy;
use crate::telemetry::events::Recomputed;
use crate::telemetry::{RECOMPUTE_INGESTION_DELTA, RECOMPUTE_REBUILD};
use actix::prelude::*;
use std::sync::Arc;
use std::time::Instant;

pub struct ArtifactActor {
    tenant: String,
    package: String,
    policy: Arc<Policy>,
    export: Addr<ExportActor>,
    state: Option<PackageState>,
    heal: bool,
    mailbox_capacity: usize,
}

impl ArtifactActor {
    pub fn new(
        tenant: String,
        package: String,
        policy: Arc<Policy>,
        export: Addr<ExportActor>,
        mailbox_capacity: usize,
    ) -> Self {
        ArtifactActor { tenant, package, policy, export, state: None, heal: false, mailbox_capacity }
    }

    fn install(&mut self, stored: Vec<crate::domain::model::Observation>) {
        let t0 = Instant::now();
        let mut st = PackageState::new();
        let n = stored.len();
        for o in stored {
            if let Err(e) = st.apply(o) {
                tracing::warn!(event = "rebuild_skip", tenant = %self.tenant, package = %self.package, error = %e, "stored observation skipped");
            }
        }
        self.heal = n > 0;
        Recomputed {
            reason: RECOMPUTE_REBUILD,
            tenant: &self.tenant,
            package: &self.package,
            pairs: n,
            duration: t0.elapsed(),
        }
        .emit();
        self.state = Some(st);
    }

    /// Applies one observation and hands the result to the export actor.
    fn apply(&mut self, msg: Apply) -> ResponseActFuture<Self, ()> {
        let t0 = Instant::now();
        let Some(state) = self.state.as_mut() else {
            return Box::pin(actix::fut::ready(()));
        };
        let Apply { observation, done } = msg;
        let changed = match state.apply(observation.clone()) {
            Ok(c) => c,
            Err(e) => {
                // Validated before routing; a mismatch here is a bug, not bad input.
                tracing::error!(event = "apply_rejected", error = %e, "observation not applied");
                return Box::pin(actix::fut::ready(()));
            }
        };
        let pairs = if self.heal { state.pairs() } else { changed };
        self.heal = false;
        let records: Vec<_> = pairs.iter().filter_map(|p| state.evaluate(p, &self.policy, false)).collect();
        Recomputed {
            reason: RECOMPUTE_INGESTION_DELTA,
            tenant: &self.tenant,
            package: &self.package,
            pairs: records.len(),
            duration: t0.elapsed(),
        }
        .emit();
        let persist = Persist { observations: vec![observation], records, done: vec![done] };
        let export = self.export.clone();
        Box::pin(
            async move {
                if let Err(e) = export.send(persist).await {
                    tracing::error!(event = "export_unreachable", error = %e, "export actor unreachable");
                }
            }
            .into_actor(self),
        )
    }
}

impl Actor for ArtifactActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
    }
}

impl Handler<Apply> for ArtifactActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Apply, _: &mut Context<Self>) -> Self::Result {
        if self.state.is_some() {
            return AtomicResponse::new(self.apply(msg));
        }
        let load = self.export.send(LoadPackage { tenant: self.tenant.clone(), package: self.package.clone() });
        AtomicResponse::new(Box::pin(async move { load.await }.into_actor(self).then(
            move |loaded, act, _| match loaded {
                Ok(stored) => {
                    act.install(stored);
                    act.apply(msg)
                }
                Err(e) => {
                    tracing::error!(event = "rebuild_failed", error = %e, "export actor unreachable");
                    Box::pin(actix::fut::ready(()))
                }
            },
        )))
    }
}
