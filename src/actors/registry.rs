//! ArtifactRegistry: owns the artifact actors, one per (tenant, package), created on
//! demand and evicted when idle or when the live or the observation bound is reached.
//!
//! Invariants: an actor with observations in flight is never evicted (its successor
//! would rebuild without them); after `ResetActors` (partition revocation) no actor from
//! before the reset receives new work once idle, so states are rebuilt from the store;
//! the number of live actors stays at `max_live` plus those busy at the moment, and the
//! observations their states hold at `max_observations` plus those of busy actors (as
//! last published by each actor after a hand-over: checked whenever an actor settles;
//! after a check that busy actors kept above it, the next waits until the states hold
//! another eighth of it more, or for the periodic check);
//! a package is rebuilt without a heal only when its previous actor, of the current
//! generation and following the package's stream, left with every observation and
//! recompute it was given answered durable (a reset forgets every package: another
//! instance may own it, or a write failed);
//! an actor runs on the arbiter thread and writes through the store writer of its
//! package's shard, so one package is always handled by one thread and one writer.

use super::artifact::ArtifactActor;
use super::budget::RecordBudget;
use super::messages::{Apply, LiveActors, LivePackages, Recompute, RecomputePackage, ResetActors, Route};
use super::{shard_of, Writers};
use crate::telemetry::events::{InFlight, RegistryLoad};
use crate::trust::Policies;
use actix::prelude::*;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tuning of the registry.
#[derive(Clone, Debug)]
pub struct RegistrySettings {
    pub max_live: usize,
    /// Most observations the live actors' states hold together; the least recently used
    /// idle actors are evicted beyond it (a package's state grows with its observations:
    /// without this bound an idle package is held until `idle_evict`).
    pub max_observations: usize,
    pub idle_evict: Duration,
    pub mailbox_capacity: usize,
    /// Most consensus records evaluated and not yet written, across the actors
    /// ([`RecordBudget`]).
    pub max_records_in_flight: usize,
}

struct Entry {
    addr: Addr<ArtifactActor>,
    last_used: Instant,
    in_flight: usize,
    generation: u64,
    /// The observations the actor's state holds, as the actor publishes them.
    held: Arc<AtomicUsize>,
    /// `held` when the registry last counted it (in `ArtifactRegistry::held`).
    counted: usize,
    /// Every observation and recompute it was given was answered durable, and it follows
    /// the package's stream (not made for one recompute).
    clean: bool,
}

pub struct ArtifactRegistry {
    policies: Arc<Policies>,
    writers: Writers,
    arbiters: Vec<ArbiterHandle>,
    settings: RegistrySettings,
    actors: HashMap<(String, String), Entry>,
    generation: u64,
    /// The sum of the live entries' `counted`.
    held: usize,
    /// Above the bound, `held` at which the next scan for idle actors runs (0: at the
    /// bound).
    rescan_above: usize,
    /// The records in flight to the writers, shared by every actor this registry makes.
    budget: RecordBudget,
    /// The packages (hashed) whose stored records follow from their stored observations
    /// as far as this registry knows: their last actor, of the current generation, left
    /// with every write it was given durable. Their next actor rebuilds without a heal.
    consistent: HashSet<u64, foldhash::fast::RandomState>,
}

/// Most packages [`ArtifactRegistry`] remembers as consistent (about 2.5 MB); beyond
/// it the set starts again (those packages heal once more when rebuilt).
const MAX_CONSISTENT: usize = 1 << 18;

impl ArtifactRegistry {
    /// `arbiters` must not be empty.
    pub fn new(
        policies: Arc<Policies>,
        writers: Writers,
        arbiters: Vec<ArbiterHandle>,
        settings: RegistrySettings,
    ) -> Self {
        assert!(!arbiters.is_empty(), "the artifact actors need at least one arbiter");
        ArtifactRegistry {
            policies,
            writers,
            arbiters,
            budget: RecordBudget::new(settings.max_records_in_flight),
            settings,
            actors: HashMap::new(),
            generation: 0,
            held: 0,
            rescan_above: 0,
            consistent: HashSet::default(),
        }
    }

    fn report_load(&self) {
        RegistryLoad { live_actors: self.actors.len(), observations: self.held }.emit();
    }

    fn evict_idle(&mut self, older_than: Duration) {
        let now = Instant::now();
        let gen = self.generation;
        let idle: Vec<(String, String)> = self
            .actors
            .iter()
            .filter(|(_, e)| e.in_flight == 0 && (e.generation != gen || now.duration_since(e.last_used) >= older_than))
            .map(|(k, _)| k.clone())
            .collect();
        for k in idle {
            self.remove(&k);
        }
    }

    /// Drops the actor of `key`; a clean one of the current generation leaves its package
    /// consistent ([`Self::consistent`]).
    fn remove(&mut self, key: &(String, String)) {
        if let Some(e) = self.actors.remove(key) {
            self.held -= e.counted;
            if e.clean && e.in_flight == 0 && e.generation == self.generation {
                if self.consistent.len() >= MAX_CONSISTENT {
                    self.consistent.clear();
                }
                self.consistent.insert(self.consistent.hasher().hash_one(key));
            }
        }
    }

    /// Counts what the actor of `key` now publishes, then keeps the bound
    /// ([`Self::bound_held`]).
    fn count_held(&mut self, key: &(String, String)) {
        if let Some(e) = self.actors.get_mut(key) {
            let now = e.held.load(Ordering::Relaxed);
            self.held = self.held - e.counted + now;
            e.counted = now;
        }
        self.bound_held();
    }

    /// Beyond `max_observations`, evicts the least recently used idle actors until their
    /// states hold an eighth less than the bound, so the scan and sort are paid once per
    /// eighth, not per settle. When busy actors hold too much for that, the next scan
    /// waits until the states hold another eighth more (or the periodic check): a busy
    /// package larger than the bound does not make every settle scan every actor.
    fn bound_held(&mut self) {
        let max = self.settings.max_observations;
        if self.held <= max.max(self.rescan_above) {
            return;
        }
        let target = max - max / 8;
        let mut idle: Vec<(Instant, (String, String))> = self
            .actors
            .iter()
            .filter(|(_, e)| e.in_flight == 0 && e.counted > 0)
            .map(|(k, e)| (e.last_used, k.clone()))
            .collect();
        idle.sort_unstable_by_key(|(t, _)| *t);
        for (_, k) in idle {
            if self.held <= target {
                break;
            }
            self.remove(&k);
        }
        self.rescan_above = if self.held > target { self.held + max / 8 } else { 0 };
    }

    /// Evicts least recently used idle actors until there is room for one more. At the bound
    /// it evicts an eighth of it at once (at least what the bound needs), so a stream of new
    /// packages costs one scan of the live actors per `max_live / 8` actors created, not one
    /// scan and sort per actor (quadratic: 49% of `serve --once` on 50 MB of CSAF copies).
    fn make_room(&mut self) {
        if self.actors.len() < self.settings.max_live {
            return;
        }
        let needed = self.actors.len() + 1 - self.settings.max_live;
        let mut idle: Vec<(Instant, &(String, String))> =
            self.actors.iter().filter(|(_, e)| e.in_flight == 0).map(|(k, e)| (e.last_used, k)).collect();
        let evict = needed.max(self.settings.max_live / 8).min(idle.len());
        if evict == 0 {
            return;
        }
        if evict < idle.len() {
            idle.select_nth_unstable_by_key(evict - 1, |(t, _)| *t);
        }
        let keys: Vec<(String, String)> = idle[..evict].iter().map(|(_, k)| (*k).clone()).collect();
        for k in keys {
            self.remove(&k);
        }
    }

    fn actor_for(&mut self, key: &(String, String)) -> Addr<ArtifactActor> {
        let stale = self.actors.get(key).is_some_and(|e| e.generation != self.generation && e.in_flight == 0);
        if stale {
            self.remove(key);
        }
        if !self.actors.contains_key(key) {
            self.make_room();
            let held = Arc::new(AtomicUsize::new(0));
            let consistent = self.consistent.remove(&self.consistent.hasher().hash_one(key));
            let actor = ArtifactActor::new(
                key.clone(),
                self.policies.clone(),
                self.writers.for_package(&key.0, &key.1).clone(),
                self.settings.mailbox_capacity,
                held.clone(),
                self.budget.clone(),
                consistent,
            );
            let arbiter = &self.arbiters[shard_of(&key.0, &key.1, self.arbiters.len())];
            let addr = ArtifactActor::start_in_arbiter(arbiter, move |_| actor);
            let entry = Entry {
                addr,
                last_used: Instant::now(),
                in_flight: 0,
                generation: self.generation,
                held,
                counted: 0,
                clean: true,
            };
            self.actors.insert(key.clone(), entry);
        }
        let e = self.actors.get_mut(key).expect("inserted above");
        e.last_used = Instant::now();
        e.in_flight += 1;
        e.addr.clone()
    }
}

impl Actor for ArtifactRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.settings.mailbox_capacity);
        let every = (self.settings.idle_evict / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        ctx.run_interval(every, |act, _| {
            let idle = act.settings.idle_evict;
            act.evict_idle(idle);
            act.rescan_above = 0;
            act.bound_held();
            act.report_load();
        });
    }
}

/// To the registry, from the task of a routed observation (or a recompute): its actor
/// handed it over and it is durable (or failed), so the actor is no longer busy with it.
/// A message rather than a future in the registry's context: actix polls every future
/// its context holds whenever the context wakes, so one future per observation in flight
/// (thousands while a CSAF document's are written) made each wake cost as many polls.
#[derive(Message)]
#[rtype(result = "()")]
struct Settled {
    key: (String, String),
    addr: Addr<ArtifactActor>,
    /// The actor was created for this recompute alone: dropped once idle.
    drop_if_idle: bool,
    /// An observation (counted by [`InFlight`]), not a recompute.
    observation: bool,
    /// Answered durable (not failed, not unanswered).
    durable: bool,
}

impl Handler<Settled> for ArtifactRegistry {
    type Result = ();

    fn handle(&mut self, s: Settled, _: &mut Context<Self>) {
        if let Some(e) = self.actors.get_mut(&s.key) {
            if e.addr == s.addr {
                e.in_flight = e.in_flight.saturating_sub(1);
                e.last_used = Instant::now();
                // Made for a recompute of a package this instance may not own: another
                // instance may write it meanwhile.
                e.clean &= s.durable && !s.drop_if_idle;
                if s.drop_if_idle && e.in_flight == 0 {
                    self.remove(&s.key);
                } else {
                    self.count_held(&s.key);
                }
            }
        }
        if s.observation {
            InFlight::settled();
        }
        self.report_load();
    }
}

/// The task of one routed observation (or recompute): waits until the actor took it
/// (`sent`) and answered (`answered`: durable or failed), tells the registry it settled,
/// then passes the answer on. `Settled` goes before the answer: whatever the caller sends
/// the registry next finds the actor settled.
async fn settle_then_answer<T, E>(
    sent: impl std::future::Future<Output = Result<(), MailboxError>>,
    answered: tokio::sync::oneshot::Receiver<Result<T, E>>,
    answer: tokio::sync::oneshot::Sender<Result<T, E>>,
    registry: Addr<ArtifactRegistry>,
    mut settled: Settled,
    unreachable: &'static str,
) {
    let result = match sent.await {
        Ok(()) => answered.await.ok(),
        Err(e) => {
            crate::error_event!(crate::telemetry::events::LogEvent::ArtifactActorUnreachable, error = %e, "{unreachable}");
            None
        }
    };
    settled.durable = matches!(result, Some(Ok(_)));
    registry.do_send(settled);
    if let Some(result) = result {
        let _ = answer.send(result);
    }
}

impl Handler<Route> for ArtifactRegistry {
    type Result = ResponseFuture<()>;

    /// Answers once the observation is durable (or failed); meanwhile its task, not the
    /// registry, waits ([`Settled`]).
    fn handle(&mut self, msg: Route, ctx: &mut Context<Self>) -> Self::Result {
        let key = (msg.observation.tenant.to_string(), msg.observation.package.to_string());
        let addr = self.actor_for(&key);
        InFlight::routed();
        // The actor counts as busy until the observation is durable (or failed), so it
        // is never evicted with work it has not handed over.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = addr.send(Apply { observation: msg.observation, done: tx, span: msg.span });
        let settled = Settled { key, addr, drop_if_idle: false, observation: true, durable: false };
        Box::pin(settle_then_answer(sent, rx, msg.done, ctx.address(), settled, "observation not applied"))
    }
}

impl Handler<RecomputePackage> for ArtifactRegistry {
    type Result = ResponseFuture<()>;

    /// Like [`Route`]: the actor counts as busy (never evicted) until its records are durable.
    /// An actor created for the recompute alone is dropped once idle (this instance may
    /// not own the package: its state would not follow new observations).
    fn handle(&mut self, msg: RecomputePackage, ctx: &mut Context<Self>) -> Self::Result {
        let key = (msg.tenant, msg.package);
        let existed = self.actors.get(&key).is_some_and(|e| e.generation == self.generation || e.in_flight > 0);
        let addr = self.actor_for(&key);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = addr.send(Recompute { reason: msg.reason, done: tx });
        let settled = Settled { key, addr, drop_if_idle: !existed, observation: false, durable: false };
        Box::pin(settle_then_answer(sent, rx, msg.done, ctx.address(), settled, "package not recomputed"))
    }
}

impl Handler<LivePackages> for ArtifactRegistry {
    type Result = Vec<String>;

    fn handle(&mut self, msg: LivePackages, _: &mut Context<Self>) -> Vec<String> {
        let mut v: Vec<String> = self.actors.keys().filter(|(t, _)| *t == msg.tenant).map(|(_, p)| p.clone()).collect();
        v.sort();
        v
    }
}

impl Handler<ResetActors> for ArtifactRegistry {
    type Result = ();

    fn handle(&mut self, _: ResetActors, _: &mut Context<Self>) {
        self.generation += 1;
        // Another instance may own these packages now, or a write failed.
        self.consistent.clear();
        self.evict_idle(Duration::ZERO);
        tracing::info!(event = "artifact_actors_reset", busy = self.actors.len(), "artifact actors dropped");
    }
}

impl Handler<LiveActors> for ArtifactRegistry {
    type Result = usize;

    fn handle(&mut self, _: LiveActors, _: &mut Context<Self>) -> usize {
        self.actors.len()
    }
}
