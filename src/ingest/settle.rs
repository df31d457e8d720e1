//! Settling an input: attempts until it is done, retrying transient failures with
//! backoff, dead-lettering permanent ones (and, per the source's policy, those out of
//! attempts); the source then acknowledges what [`Ack`] says.
//!
//! Invariants: every input ends as exactly one [`Ack`]; `Done` and `DeadLettered` may be
//! acknowledged, `NotDone` must not be (the input is processed again: the next scan, or
//! a replay after the restart); a dead letter is counted and logged (`dead_lettered`)
//! once, before the sink keeps it; shutdown ends the retries with `NotDone`.

use crate::domain::codes::DeadLetterReason;
use crate::ports::{DeadLetter, DeadLetterError, DeadLetterSink, PublishError};
use crate::telemetry::events::DeadLettered;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

/// Reason code of an input whose handling failed transiently on every attempt.
pub const RETRIES_EXHAUSTED: DeadLetterReason = DeadLetterReason::RetriesExhausted;

/// Why an attempt did not complete an input.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Worth another attempt: the pipeline, the bus or the store did not make it durable
    /// this time.
    #[error("{0}")]
    Transient(String),
    /// Will never work: dead-letter it with this reason code.
    #[error("{reason}: {detail}")]
    Permanent { reason: DeadLetterReason, detail: String },
}

impl From<PublishError> for Failure {
    fn from(e: PublishError) -> Failure {
        match e {
            PublishError::Transient(d) => Failure::Transient(d),
            PublishError::Permanent { reason, detail } => Failure::Permanent { reason, detail },
        }
    }
}

/// What the source may do with an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    /// Durable: acknowledge it.
    Done,
    /// Dead-lettered: acknowledge it.
    DeadLettered,
    /// Not done: do not acknowledge it; it is processed again.
    NotDone,
}

impl Ack {
    /// Whether the source may acknowledge the input (store its offset, remember the file).
    pub fn settled(self) -> bool {
        self != Ack::NotDone
    }
}

/// What to do with an input that still fails transiently after the last attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exhausted {
    /// Dead-letter it ([`RETRIES_EXHAUSTED`]): a stream must move on.
    DeadLetter,
    /// Leave it unacknowledged: the source offers it again later (the next scan).
    Leave,
}

/// How an input failing transiently is retried.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub max_attempts: u32,
    /// Delay before the second attempt, doubled per attempt up to `max`, with jitter
    /// (`crate::backoff`).
    pub initial: Duration,
    pub max: Duration,
    pub exhausted: Exhausted,
}

impl RetryPolicy {
    /// One attempt; a transient failure leaves the input for later.
    pub fn once() -> RetryPolicy {
        RetryPolicy { max_attempts: 1, initial: Duration::ZERO, max: Duration::ZERO, exhausted: Exhausted::Leave }
    }
}

/// The input being settled, as its dead letter and log lines name it.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub name: &'a str,
    pub correlation_id: Option<&'a str>,
    /// When it arrived (the dead letter's time).
    pub at_ms: i64,
}

/// Runs `attempt` until the input is settled (see the module documentation); records
/// `vex.attempts` and, when dead-lettered, `vex.reason` on the current span.
pub async fn to_the_end<F, Fut>(
    input: Input<'_>,
    policy: &RetryPolicy,
    dead_letters: &dyn DeadLetterSink,
    shutdown: &watch::Receiver<bool>,
    mut attempt: F,
) -> Ack
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    let span = tracing::Span::current();
    let mut delays = crate::backoff::delays(policy.initial, policy.max);
    let mut n = 1u32;
    loop {
        span.record("vex.attempts", n);
        match attempt().await {
            Ok(()) => return Ack::Done,
            Err(Failure::Permanent { reason, detail }) => {
                return dead_letter(input, reason, detail, dead_letters).await
            }
            Err(Failure::Transient(detail)) => {
                if *shutdown.borrow() {
                    return Ack::NotDone;
                }
                if n >= policy.max_attempts.max(1) {
                    return match policy.exhausted {
                        Exhausted::DeadLetter => {
                            let detail = format!("{n} attempts; last: {detail}");
                            dead_letter(input, RETRIES_EXHAUSTED, detail, dead_letters).await
                        }
                        Exhausted::Leave => {
                            crate::error_event!(crate::telemetry::events::LogEvent::PipelineUnavailable, source = input.name, error = %detail, "document not processed");
                            Ack::NotDone
                        }
                    };
                }
                let delay = delays.next().unwrap_or(policy.max);
                crate::warn_event!(crate::telemetry::events::LogEvent::HandlerRetry, source = input.name, attempt = n, error = %detail, delay_ms = delay.as_millis() as u64, "message not handled; retrying");
                let mut sd = shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = sd.changed() => return Ack::NotDone,
                }
                n += 1;
            }
        }
    }
}

/// Counts, logs and hands a dead letter to the sink.
async fn dead_letter(input: Input<'_>, reason: DeadLetterReason, detail: String, sink: &dyn DeadLetterSink) -> Ack {
    tracing::Span::current().record("vex.reason", reason.as_str());
    DeadLettered { source: input.name, correlation_id: input.correlation_id, reason, detail: &detail }.emit();
    let letter = DeadLetter {
        source: input.name.to_string(),
        reason,
        detail,
        at_ms: input.at_ms,
        correlation_id: input.correlation_id.map(str::to_string),
    };
    match sink.dead_letter(&letter).await {
        Ok(()) => Ack::DeadLettered,
        Err(DeadLetterError::NotStored(e)) => {
            crate::warn_event!(crate::telemetry::events::LogEvent::DeadLetterNotStored, error = %e, "dead letter not stored");
            Ack::DeadLettered
        }
        Err(DeadLetterError::Abandoned) => Ack::NotDone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Kept(Mutex<Vec<DeadLetter>>, Option<fn() -> DeadLetterError>);

    #[async_trait::async_trait]
    impl DeadLetterSink for Kept {
        async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), DeadLetterError> {
            self.0.lock().unwrap().push(letter.clone());
            self.1.map_or(Ok(()), |e| Err(e()))
        }
    }

    fn input() -> Input<'static> {
        Input { name: "doc", correlation_id: None, at_ms: 7 }
    }

    fn policy(max_attempts: u32, exhausted: Exhausted) -> RetryPolicy {
        RetryPolicy { max_attempts, initial: Duration::from_millis(1), max: Duration::from_millis(2), exhausted }
    }

    async fn settle(policy: &RetryPolicy, sink: &Kept, failures: Vec<Failure>) -> (Ack, usize) {
        let (_tx, rx) = watch::channel(false);
        let failures = Mutex::new(failures.into_iter());
        let calls = Mutex::new(0usize);
        let ack = to_the_end(input(), policy, sink, &rx, || {
            *calls.lock().unwrap() += 1;
            let next = failures.lock().unwrap().next();
            async move { next.map_or(Ok(()), Err) }
        })
        .await;
        let n = *calls.lock().unwrap();
        (ack, n)
    }

    #[tokio::test]
    async fn transient_failures_are_retried_then_done() {
        let sink = Kept::default();
        let t = || Failure::Transient("busy".into());
        let (ack, calls) = settle(&policy(3, Exhausted::DeadLetter), &sink, vec![t(), t()]).await;
        assert_eq!((ack, calls), (Ack::Done, 3));
        assert!(sink.0.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn out_of_attempts_is_dead_lettered_or_left_per_policy() {
        let t = || Failure::Transient("busy".into());
        let sink = Kept::default();
        let (ack, calls) = settle(&policy(2, Exhausted::DeadLetter), &sink, vec![t(), t(), t()]).await;
        assert_eq!((ack, calls), (Ack::DeadLettered, 2));
        let kept = sink.0.lock().unwrap().clone();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            (kept[0].reason, kept[0].detail.as_str(), kept[0].at_ms),
            (RETRIES_EXHAUSTED, "2 attempts; last: busy", 7)
        );
        let sink = Kept::default();
        let (ack, calls) = settle(&RetryPolicy::once(), &sink, vec![t()]).await;
        assert_eq!((ack, calls, ack.settled()), (Ack::NotDone, 1, false));
        assert!(sink.0.lock().unwrap().is_empty(), "left for later, not dead-lettered");
    }

    #[tokio::test]
    async fn a_permanent_failure_is_dead_lettered_at_once_with_its_reason() {
        let sink = Kept::default();
        let bad = Failure::Permanent { reason: DeadLetterReason::InvalidJson, detail: "x".into() };
        let (ack, calls) = settle(&policy(5, Exhausted::DeadLetter), &sink, vec![bad]).await;
        assert_eq!((ack, calls), (Ack::DeadLettered, 1));
        assert_eq!(sink.0.lock().unwrap()[0].reason, DeadLetterReason::InvalidJson);
        // A sink that could not store it still settles it; one that gave up (shutdown) does not.
        let bad = || Failure::Permanent { reason: DeadLetterReason::NotVex, detail: "y".into() };
        let not_stored = Kept(Mutex::default(), Some(|| DeadLetterError::NotStored("disk".into())));
        assert_eq!(settle(&RetryPolicy::once(), &not_stored, vec![bad()]).await.0, Ack::DeadLettered);
        let abandoned = Kept(Mutex::default(), Some(|| DeadLetterError::Abandoned));
        assert_eq!(settle(&RetryPolicy::once(), &abandoned, vec![bad()]).await.0, Ack::NotDone);
    }

    #[tokio::test]
    async fn shutdown_stops_the_retries_unsettled() {
        let sink = Kept::default();
        let (tx, rx) = watch::channel(false);
        tx.send(true).unwrap();
        let ack = to_the_end(input(), &policy(10, Exhausted::DeadLetter), &sink, &rx, || async {
            Err(Failure::Transient("busy".into()))
        })
        .await;
        assert_eq!(ack, Ack::NotDone);
        assert!(sink.0.lock().unwrap().is_empty());
    }
}
