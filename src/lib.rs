//! VEX Lens: trust-weighted consensus over conflicting VEX statements.
//!
//! `domain` and `crypto` are pure libraries; the rest wires them to I/O and is built with
//! the default feature `service` (without it the crate is the pure core, e.g. for fuzz/).

pub mod crypto;
pub mod domain;

#[cfg(feature = "service")]
pub mod actors;
#[cfg(feature = "service")]
pub mod app;
#[cfg(feature = "service")]
pub mod backoff;
#[cfg(feature = "service")]
pub mod config;
#[cfg(feature = "service")]
pub mod export;
#[cfg(feature = "service")]
pub mod http;
#[cfg(feature = "service")]
pub mod ingest;
#[cfg(feature = "service")]
pub mod input;
#[cfg(feature = "service")]
pub mod ports;
#[cfg(feature = "service")]
pub mod progress;
#[cfg(feature = "service")]
pub mod sources;
#[cfg(feature = "service")]
pub mod stores;
#[cfg(feature = "service")]
pub mod telemetry;
#[cfg(feature = "service")]
pub mod trust;
#[cfg(feature = "service")]
pub mod upgrade;
