//! The pure domain: keys, observations, normalisation, trust weights and consensus.
//!
//! Invariant: nothing here does I/O or imports tokio, actix, rdkafka or mongodb; every
//! function is deterministic in its inputs.

pub mod canonical;
pub mod codes;
pub mod consensus;
pub mod decay;
pub mod export_format;
pub mod keys;
pub mod ledger;
pub mod model;
pub mod names;
pub mod normalise;
pub mod platforms;
pub mod timestamp;
pub mod trust;
pub mod upgrade;
pub mod vers;
pub mod version;
