//! VEX Lens: trust-weighted consensus over conflicting VEX statements.
//!
//! `domain` and `crypto` are pure libraries; the rest wires them to I/O.

pub mod actors;
pub mod app;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod export;
pub mod http;
pub mod input;
pub mod ports;
pub mod sources;
pub mod stores;
pub mod telemetry;
pub mod trust;
