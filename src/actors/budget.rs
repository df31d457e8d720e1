//! RecordBudget: the consensus records evaluated but not yet written, bounded across
//! every artifact actor of a pipeline (`actors.max_records_in_flight`).
//!
//! Invariants: an artifact actor takes its share (one unit per pair it is about to
//! evaluate, at most the whole budget) before it evaluates a hand-over, and the share
//! travels with the records to the store writer, which returns it once the batch holding
//! them has been written (or dropped). So the records between the actors and the store
//! never exceed the budget, except for one hand-over larger than the whole budget, which
//! waits until every other share is back and then goes alone. An actor waiting for its
//! share holds none, and a writer never waits for a share: no cycle, no deadlock.
//!
//! Why: without it, every live actor could hand over one evaluation each (up to
//! thousands of records apiece) while the writers were busy; the records waiting for
//! them then grew with the number of packages in flight and the store's pace, not with
//! anything bounded (docs/performance.md, issue 20, session 22).

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget of records in flight (cheap to clone: every clone shares it).
#[derive(Clone, Debug)]
pub struct RecordBudget {
    permits: Arc<Semaphore>,
    total: u32,
}

/// A share of a [`RecordBudget`], returned when dropped.
#[derive(Debug, Default)]
pub struct RecordShare(Option<OwnedSemaphorePermit>);

impl RecordShare {
    /// The units this share holds.
    pub fn units(&self) -> usize {
        self.0.as_ref().map_or(0, |p| p.num_permits())
    }
}

impl RecordBudget {
    /// A budget of `total` records (at least 1).
    pub fn new(total: usize) -> Self {
        let total = u32::try_from(total.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        RecordBudget { permits: Arc::new(Semaphore::new(total as usize)), total }
    }

    /// Waits for a share of `records` units (at most the whole budget; none for 0). The
    /// future holds the budget, not `self`, so an actor can wait on it in its context.
    pub fn take(&self, records: usize) -> impl std::future::Future<Output = RecordShare> + 'static {
        let n = u32::try_from(records).unwrap_or(u32::MAX).min(self.total);
        let permits = self.permits.clone();
        async move {
            if n == 0 {
                return RecordShare(None);
            }
            // The semaphore is never closed.
            RecordShare(permits.acquire_many_owned(n).await.ok())
        }
    }

    /// Units not taken now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_wait_for_the_budget_and_return_it_when_dropped() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let budget = RecordBudget::new(10);
            let a = budget.take(6).await;
            assert_eq!((a.units(), budget.available()), (6, 4));
            // 6 more must wait for `a`.
            let waiting = tokio::spawn(budget.take(6));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            assert!(!waiting.is_finished(), "a share larger than what is left waits");
            drop(a);
            let b = waiting.await.unwrap();
            assert_eq!((b.units(), budget.available()), (6, 4));
            // Larger than the whole budget: takes all of it once the rest is back.
            let big = tokio::spawn(budget.take(1_000));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            assert!(!big.is_finished());
            drop(b);
            let big = big.await.unwrap();
            assert_eq!((big.units(), budget.available()), (10, 0));
            assert_eq!(budget.take(0).await.units(), 0, "nothing to evaluate takes nothing");
            drop(big);
            assert_eq!(budget.available(), 10);
        });
    }
}
