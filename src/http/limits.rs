//! Per-tenant rates of the API's expensive operations: export jobs
//! (`api.export_jobs_per_minute`) and simulate (`api.simulations_per_minute`), beside the
//! trust changes' own limit (`crate::trust`).
//!
//! Invariants: a sliding minute per (operation, tenant) on this instance; a request over
//! the rate is refused before any work (429 with `Retry-After`, the seconds until the
//! oldest counted request leaves the minute) and is not counted; 0 means no limit.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The operations with a rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    ExportJob,
    Simulate,
}

/// The recent requests per (operation, tenant).
#[derive(Default)]
pub struct Rates {
    recent: Mutex<HashMap<(Operation, String), VecDeque<Instant>>>,
}

impl Rates {
    /// Counts one request of `tenant` at `now`, or the seconds to wait (at least 1) when
    /// `per_minute` requests were counted in the last minute.
    pub fn admit(&self, op: Operation, tenant: &str, per_minute: u32, now: Instant) -> Result<(), u64> {
        if per_minute == 0 {
            return Ok(());
        }
        let window = Duration::from_secs(60);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let q = recent.entry((op, tenant.to_string())).or_default();
        while q.front().is_some_and(|t| now.saturating_duration_since(*t) >= window) {
            q.pop_front();
        }
        if q.len() >= per_minute as usize {
            let oldest = q.front().copied().unwrap_or(now);
            let wait = window.saturating_sub(now.saturating_duration_since(oldest));
            return Err(wait.as_secs().max(1));
        }
        q.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tenant_and_operation_has_its_own_minute() {
        let r = Rates::default();
        let t0 = Instant::now();
        assert!(r.admit(Operation::ExportJob, "acme", 2, t0).is_ok());
        assert!(r.admit(Operation::ExportJob, "acme", 2, t0 + Duration::from_secs(10)).is_ok());
        assert_eq!(r.admit(Operation::ExportJob, "acme", 2, t0 + Duration::from_secs(20)), Err(40));
        assert!(r.admit(Operation::ExportJob, "globex", 2, t0).is_ok(), "another tenant");
        assert!(r.admit(Operation::Simulate, "acme", 2, t0).is_ok(), "another operation");
        assert!(r.admit(Operation::ExportJob, "acme", 2, t0 + Duration::from_secs(60)).is_ok(), "the first left");
        assert!((0..100).all(|_| r.admit(Operation::Simulate, "x", 0, t0).is_ok()), "0: no limit");
    }
}
