//! VEX Lens: trust-weighted consensus over conflicting VEX statements.
//!
//! `domain` and `crypto` are pure libraries; the rest wires them to I/O.

pub mod crypto;
pub mod domain;
pub mod export;
pub mod input;
pub mod ports;
