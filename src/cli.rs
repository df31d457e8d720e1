//! Command-line interface: argument parsing only; each command lives in `commands/`.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "vex-lens", version, about = "Trust-weighted consensus over conflicting VEX statements")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Compute the consensus of VEX documents (files or directories of *.json) and print
    /// one record per (artifact, vulnerability).
    Consensus(ConsensusArgs),
    /// Print the observations VEX documents normalise to (the JSON form the
    /// observations topic accepts), one per line.
    Normalise(NormaliseArgs),
}

/// Output format of records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One canonical JSON record per line.
    Ndjson,
    /// A JSON array, pretty-printed.
    Json,
    /// A human-readable table.
    Table,
}

#[derive(clap::Args, Debug)]
pub struct InputArgs {
    /// VEX documents, or directories searched recursively for *.json.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Tenant the statements belong to.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Report unreadable or invalid documents on stderr and process the rest (exit 0).
    #[arg(long)]
    pub keep_going: bool,
    /// Largest document accepted, in bytes.
    #[arg(long, default_value_t = vex_lens::domain::normalise::DEFAULT_MAX_DOCUMENT_BYTES)]
    pub max_document_bytes: usize,
    /// Print every diagnostic (unmatched products, missing timestamps) instead of a summary.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(clap::Args, Debug)]
pub struct ConsensusArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Consensus mode: weighted_vote, lattice, highest_weight, authoritative_first, most_recent.
    #[arg(long, default_value = "weighted_vote")]
    pub mode: vex_lens::domain::trust::Mode,
    /// Issuer directory (TOML or JSON). Default: config/issuers.toml when it exists.
    #[arg(long)]
    pub issuers: Option<PathBuf>,
    /// Consensus knobs (TOML `[consensus.knobs]` table). Default: config/default.toml when it exists.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Measure freshness at this RFC 3339 time instead of each pair's evaluation time.
    #[arg(long)]
    pub as_of: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Ndjson)]
    pub format: OutputFormat,
    /// Add the explain trace to each record (not part of the digest).
    #[arg(long)]
    pub explain: bool,
}

#[derive(clap::Args, Debug)]
pub struct NormaliseArgs {
    #[command(flatten)]
    pub input: InputArgs,
}
