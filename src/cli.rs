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
    /// Generate a signing key pair: writes the private key (PKCS#8 PEM, mode 0600) and
    /// prints the public key (SPKI PEM) and its key id.
    Keygen(KeygenArgs),
    /// Inspect keys before trusting them: `keys show FILE` prints an OpenPGP certificate's
    /// fingerprint, user ids, subkeys and expiry, and the issuers.toml entry to paste once
    /// the fingerprint is checked elsewhere.
    Keys(KeysArgs),
    /// Export the consensus as a bundle: a snapshot file, manifest.json (SHA-256 and size
    /// of every file) and, with --sign-key, manifest.dsse.json (DSSE over the manifest).
    Export(ExportArgs),
    /// Verify an export bundle offline: every hash and size, and the manifest's DSSE
    /// signature when --public-key is given. Exit 0 ok, 3 hash mismatch or missing file,
    /// 4 bad or missing signature, 5 unexpected error.
    Verify(VerifyArgs),
    /// Run the stream processor: Kafka documents topic (or, by default, a watched
    /// directory / NDJSON on stdin) to consensus records in MongoDB (or the embedded store).
    Serve(ServeArgs),
    /// Pull VEX from the configured `[[feeds]]` (CSAF providers' distribution directories).
    #[command(subcommand)]
    Feed(FeedCommand),
    /// Print the current consensus records of a store (as `consensus` prints them).
    Records(RecordsArgs),
    /// Bring a store written by an older version to this one when start-up refuses to
    /// upgrade it: drops the stored observations whose new key needs their document (and
    /// every record of their pairs), re-keys the rest, recomputes every record. Ingest the
    /// documents of the dropped observations again afterwards.
    Reindex(ReindexArgs),
    /// Shorten the embedded store's file to the pages it uses (stop `serve` first) and
    /// print each table's rows and bytes (JSON on stdout).
    Compact(CompactArgs),
}

#[derive(Subcommand, Debug)]
pub enum FeedCommand {
    /// Check feeds and emit their new and changed documents. With --once: every selected
    /// feed once whatever its interval (failed documents retried now), then a JSON summary
    /// per feed on stdout; exit 1 if any feed failed.
    Run(FeedRunArgs),
    /// List the configured feeds with their state (one JSON object per feed).
    List(FeedStateArgs),
    /// Print a feed's state (JSON): validators, watermark, every document's outcome.
    /// Safe while `serve` or `feed run` runs (the state file is replaced atomically).
    Status(FeedNameArgs),
    /// A dry run: read the feed's metadata and lists and print what `feed run --once`
    /// would fetch; no document is fetched or emitted, the state is not changed.
    Check(FeedNameArgs),
    /// Forget a feed's state: its next run is a first sync (documents already ingested
    /// are ingested again, which changes no record). Run it while no `feed run` or
    /// `serve` runs the feed.
    Reset(FeedNameArgs),
}

#[derive(clap::Args, Debug)]
pub struct FeedStateArgs {
    /// Configuration file (as `serve`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory of the embedded store; feed states are kept in its `feeds/`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct FeedNameArgs {
    /// The feed (its `name`).
    pub name: String,
    #[command(flatten)]
    pub state: FeedStateArgs,
}

#[derive(clap::Args, Debug)]
pub struct FeedRunArgs {
    /// Check each feed once and exit (required in this version; `serve` will run feeds
    /// at their intervals).
    #[arg(long)]
    pub once: bool,
    /// Feeds to run (default: every enabled feed).
    pub names: Vec<String>,
    /// Configuration file (as `serve`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory of the embedded store; feed states are kept in its `feeds/`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Log format on stderr (as `serve`).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
}

#[derive(clap::Args, Debug)]
pub struct ReindexArgs {
    /// Directory of the embedded store (default: ./data, or [store] data_dir of the config).
    #[arg(long, conflicts_with = "mongo_uri")]
    pub data_dir: Option<PathBuf>,
    /// Reindex a MongoDB store instead (stop every instance that uses it first).
    #[arg(long)]
    pub mongo_uri: Option<String>,
    #[arg(long, default_value = "vexlens")]
    pub mongo_db: String,
    /// Configuration file (the consensus policy the records are recomputed with).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct CompactArgs {
    /// Directory of the embedded store (default: ./data, or [store] data_dir of the config).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Configuration file (for [store] data_dir).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Output format of records.
/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Json,
    Text,
}

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
    #[arg(long, default_value = "default", value_parser = tenant_name)]
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

/// Signature algorithm of a generated key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeygenAlg {
    /// Ed25519 (deterministic signatures).
    Ed25519,
    /// ECDSA over NIST P-256 with SHA-256 (DER signatures).
    EcdsaP256,
}

#[derive(clap::Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Print an armored OpenPGP certificate (e.g. a provider's `.asc` public key; `-` reads
    /// standard input): primary fingerprint, user ids, every key with its creation, expiry,
    /// signing capability and revocation, and a TOML snippet for config/issuers.toml.
    Show {
        /// The certificate file, or `-` for standard input.
        path: PathBuf,
        /// The issuer id to put in the snippet.
        #[arg(long, default_value = "ISSUER-ID")]
        issuer: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    #[arg(long, value_enum, default_value_t = KeygenAlg::Ed25519)]
    pub alg: KeygenAlg,
    /// Where to write the private key (PKCS#8 PEM, mode 0600).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the public key (SPKI PEM) to this file.
    #[arg(long)]
    pub public_out: Option<PathBuf>,
    /// Replace existing key files.
    #[arg(long)]
    pub force: bool,
}

/// Snapshot format of an export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormatArg {
    /// consensus.json: a JSON array of canonical records.
    Json,
    /// consensus.ndjson: one canonical record per line.
    Ndjson,
    /// consensus.openvex.json: an OpenVEX v0.2.0 document, one statement per record.
    Openvex,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[arg(long, value_enum, default_value_t = ExportFormatArg::Json)]
    pub format: ExportFormatArg,
    /// Path of the manifest to write (e.g. out/manifest.json).
    #[arg(long)]
    pub manifest: PathBuf,
    /// Directory of the snapshot file. Default: the manifest's directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only this tenant's records (store sources); the tenant the documents belong to
    /// (--from; default `default`).
    #[arg(long, value_parser = tenant_name)]
    pub tenant: Option<String>,
    /// Only records that changed at or after this time (RFC 3339, or milliseconds since the
    /// epoch). With --from: records whose evaluation time is at or after it.
    #[arg(long)]
    pub since: Option<String>,
    /// Sign the manifest with this private key (PKCS#8 PEM, e.g. from `vex-lens keygen`).
    #[arg(long)]
    pub sign_key: Option<PathBuf>,
    /// Compute the consensus straight from VEX documents (files or directories of *.json)
    /// instead of reading a store.
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub from: Vec<PathBuf>,
    /// Read the current records from MongoDB at this URI (instead of --from).
    #[arg(long, conflicts_with_all = ["from", "data_dir"])]
    pub mongo_uri: Option<String>,
    /// MongoDB database (with --mongo-uri).
    #[arg(long, default_value = "vexlens")]
    pub mongo_db: String,
    /// Read the current records from the embedded store in this directory (instead of
    /// --from; the directory `vex-lens serve --data-dir` uses).
    #[arg(long, conflicts_with_all = ["from", "mongo_uri"])]
    pub data_dir: Option<PathBuf>,
    /// Consensus mode (--from): weighted_vote, lattice, highest_weight, authoritative_first, most_recent.
    #[arg(long, default_value = "weighted_vote")]
    pub mode: vex_lens::domain::trust::Mode,
    /// Issuer directory (--from). Default: config/issuers.toml when it exists.
    #[arg(long)]
    pub issuers: Option<PathBuf>,
    /// Consensus knobs (--from). Default: config/default.toml when it exists.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Measure freshness at this RFC 3339 time (--from).
    #[arg(long)]
    pub as_of: Option<String>,
    /// Skip unreadable or invalid documents (--from).
    #[arg(long)]
    pub keep_going: bool,
    /// Largest document accepted, in bytes (--from).
    #[arg(long, default_value_t = vex_lens::domain::normalise::DEFAULT_MAX_DOCUMENT_BYTES)]
    pub max_document_bytes: usize,
    /// Print every diagnostic (--from).
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The bundle directory (its manifest.json is verified). Optional with --manifest.
    #[arg(required_unless_present = "manifest")]
    pub dir: Option<PathBuf>,
    /// The manifest to verify (default: DIR/manifest.json).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Public key (SPKI PEM, securesystemslib key JSON, or hex) to check manifest.dsse.json
    /// with. Without it the signature is NOT checked.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// Configuration file (default: config/default.toml when it exists). Environment
    /// variables VEXLENS_<SECTION>__<KEY> override it; these flags override both.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Log format on stderr: `json` (one object per line, the runbook's fields) or `text`
    /// (compact, human-readable). Default: text when stdout is a terminal, else json.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Kafka bootstrap servers (Kafka mode); without it documents come from --ingest-dir/--stdin.
    #[arg(long)]
    pub kafka_brokers: Option<String>,
    /// Documents topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Observations topic (keyed <tenant>/<package>).
    #[arg(long)]
    pub observations_topic: Option<String>,
    /// Dead-letter topic of the documents topic (default <topic>.dlq).
    #[arg(long)]
    pub dlq_topic: Option<String>,
    /// Consumer group id.
    #[arg(long)]
    pub group_id: Option<String>,
    /// MongoDB connection string; without it results go to the embedded store under --data-dir.
    #[arg(long)]
    pub mongo_uri: Option<String>,
    /// MongoDB database.
    #[arg(long)]
    pub mongo_db: Option<String>,
    /// HTTP listen address (health, metrics, status).
    #[arg(long)]
    pub listen: Option<String>,
    /// Directory watched for *.json VEX documents (embedded mode).
    #[arg(long)]
    pub ingest_dir: Option<PathBuf>,
    /// Read NDJSON VEX documents from stdin (embedded mode).
    #[arg(long)]
    pub stdin: bool,
    /// Directory of the embedded store.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Largest document/message accepted, in bytes; larger ones are dead-lettered.
    #[arg(long)]
    pub max_message_bytes: Option<usize>,
    /// Tenant of documents without a tenant header (and of embedded inputs).
    #[arg(long, value_parser = tenant_name)]
    pub tenant: Option<String>,
    /// Embedded mode: process the files present (and stdin to EOF), write, exit 0.
    #[arg(long)]
    pub once: bool,
}

#[derive(clap::Args, Debug)]
pub struct RecordsArgs {
    /// Directory of the embedded store (default: ./data, or [store] data_dir of the config).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Read from MongoDB instead.
    #[arg(long)]
    pub mongo_uri: Option<String>,
    #[arg(long, default_value = "vexlens")]
    pub mongo_db: String,
    /// Only this tenant's records.
    #[arg(long, value_parser = tenant_name)]
    pub tenant: Option<String>,
    /// Only the records of this artifact (any spelling of its key). With --vulnerability,
    /// an artifact no statement names exactly (a scanner's concrete package) gets the
    /// record derived from every stored statement that applies to it, computed on
    /// request and not stored (stderr says so).
    #[arg(long)]
    pub artifact: Option<String>,
    /// Only the records of this vulnerability.
    #[arg(long)]
    pub vulnerability: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Ndjson)]
    pub format: OutputFormat,
    /// Print the dead letters of the embedded store instead (NDJSON).
    #[arg(long)]
    pub dead_letters: bool,
    /// Print the DSSE verifications of the embedded store instead (NDJSON).
    #[arg(long, conflicts_with = "dead_letters")]
    pub verifications: bool,
    /// Print the export job records of the embedded store instead (NDJSON).
    #[arg(long, conflicts_with_all = ["dead_letters", "verifications"])]
    pub export_jobs: bool,
}

/// `--tenant`: the API's tenant-name rule (1 to 128 of `A-Z a-z 0-9 . _ -`), so that a
/// tenant the CLI or the service writes is one the API can name.
fn tenant_name(s: &str) -> Result<String, String> {
    if vex_lens::config::valid_tenant(s) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a tenant name: 1 to 128 of A-Z a-z 0-9 . _ - (the API's X-Tenant rule)"))
    }
}
