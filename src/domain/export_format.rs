//! The formats of an export bundle's snapshot: what a caller asks for (CLI, API) and what
//! an export job record stores.
//!
//! Invariant: each format serialises (serde) to its [`ExportFormat::as_str`] name; the
//! names are stored (`vex_export_jobs.format`) and never change.

use serde::{Deserialize, Serialize};

/// Snapshot format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// `consensus.json`: a JSON array, one canonical record per line.
    Json,
    /// `consensus.ndjson`: one canonical record per line.
    Ndjson,
    /// `consensus.openvex.json`: one OpenVEX v0.2.0 document, a statement per record.
    Openvex,
}

impl ExportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Json => "json",
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Openvex => "openvex",
        }
    }

    /// Name of the snapshot file.
    pub fn file_name(self) -> &'static str {
        match self {
            ExportFormat::Json => "consensus.json",
            ExportFormat::Ndjson => "consensus.ndjson",
            ExportFormat::Openvex => "consensus.openvex.json",
        }
    }
}
