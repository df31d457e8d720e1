//! Ports: the traits the pipeline and the API talk to: what the ingest flow needs from
//! outside (the observation bus [`ObservationBus`], the dead-letter sink
//! [`DeadLetterSink`], the watched directory's [`ProcessedFiles`], the feeds' [`FeedStateStore`], the clock
//! [`Clock`])
//! and the store, split by role, one
//! small trait each ([`StoreAdmin`], [`ObservationStore`], [`DocumentLedger`],
//! [`RecordStore`] (records, history and the change stream), [`ConflictQueue`],
//! [`TrustStore`], [`ExportJobStore`], [`VerificationStore`]); each has a real adapter (MongoDB) and an
//! embedded one (redb), so the same pipeline runs with no servers. Every caller takes
//! the roles it needs and nothing more; only the composition root holds the whole
//! store ([`Store`], [`Stores`]), and a test double implements only the role it fakes.
//!
//! Invariants: every write is an idempotent upsert keyed by a deterministic id, so a
//! replay after a crash is harmless; a pair's current record is replaced only by a write
//! of an equal or newer [`RecordVersion`], so a late write of an instance that lost the
//! package (a rebalance) never replaces the new owner's newer record; errors say whether
//! retrying can help ([`StoreError`]).

mod admin;
mod bus;
pub mod clock;
mod conflicts;
mod dead_letters;
mod error;
mod export_jobs;
pub mod feed_state;
mod ledger;
mod observations;
mod processed_files;
mod records;
mod schema;
mod trust;
mod verifications;

pub use admin::StoreAdmin;
pub use bus::{ObservationBus, Origin, PublishError};
pub use clock::{now_ms, Clock, SystemClock};
pub use conflicts::ConflictQueue;
pub use dead_letters::{DeadLetter, DeadLetterError, DeadLetterSink, EventOnly};
pub use error::{StoreError, INTERNAL_ERROR_ATTEMPTS};
pub use export_jobs::{ExportJobRecord, ExportJobStore, JobResult};
pub use feed_state::{FeedState, FeedStateError, FeedStateStore};
pub use ledger::DocumentLedger;
pub use observations::ObservationStore;
pub use processed_files::ProcessedFiles;
pub use records::{
    decide_write, history_id, pair_id, timed_record_json, ChangeEvent, RecordQuery, RecordStore, TimedRecord,
    WriteDecision,
};
pub use schema::{SchemaStore, StoredObservation};
pub use trust::{trust_audit_id, TrustAudit, TrustStore};
pub use verifications::{VerificationRecord, VerificationStore};

/// The versions the records role compares (defined in the pure core).
pub use crate::domain::version::{RecordVersion, VersionedRecord};

use std::sync::Arc;

/// Every role at once: what a whole store adapter is (blanket-implemented). For the
/// composition root, the contract suite and tests of a whole store only; everything
/// else takes the roles it uses.
pub trait Store:
    StoreAdmin
    + SchemaStore
    + ObservationStore
    + DocumentLedger
    + RecordStore
    + ConflictQueue
    + TrustStore
    + ExportJobStore
    + VerificationStore
{
}

impl<T> Store for T where
    T: StoreAdmin
        + SchemaStore
        + ObservationStore
        + DocumentLedger
        + RecordStore
        + ConflictQueue
        + TrustStore
        + ExportJobStore
        + VerificationStore
{
}

/// One handle per role, built by the composition root from one store ([`Stores::of`]);
/// a test replaces the handle of the role it fakes and keeps the real store for the
/// others.
#[derive(Clone)]
pub struct Stores {
    pub admin: Arc<dyn StoreAdmin>,
    pub schema: Arc<dyn SchemaStore>,
    pub observations: Arc<dyn ObservationStore>,
    pub ledger: Arc<dyn DocumentLedger>,
    pub records: Arc<dyn RecordStore>,
    pub conflicts: Arc<dyn ConflictQueue>,
    pub trust: Arc<dyn TrustStore>,
    pub export_jobs: Arc<dyn ExportJobStore>,
    pub verifications: Arc<dyn VerificationStore>,
}

impl Stores {
    /// Every role served by `store`.
    pub fn of<S: Store>(store: Arc<S>) -> Stores {
        Stores {
            admin: store.clone(),
            schema: store.clone(),
            observations: store.clone(),
            ledger: store.clone(),
            records: store.clone(),
            conflicts: store.clone(),
            trust: store.clone(),
            export_jobs: store.clone(),
            verifications: store,
        }
    }
}
