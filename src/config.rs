//! Typed service configuration: a file, then environment variables
//! `VEXLENS_<SECTION>__<KEY>`, then command-line flags. The file is looked up in this
//! order ([`Config::locate`]): `--config`, the environment variable `VEXLENS_CONFIG`,
//! `./config/default.toml`; with none of them the built-in defaults apply.
//!
//! Invariants: unknown keys are errors (`deny_unknown_fields`); every field has a default
//! in code, so an empty file is a valid configuration; [`Config::validate`] runs before
//! anything starts and its errors name the offending key; a named file (flag or
//! environment) that does not exist is an error, never a silent fall-back; every run says
//! which file it used (or that it used none: [`ConfigLocation`]'s `Display`).

use crate::crypto::mac::ObservationMac;
use crate::domain::trust::{Knobs, Mode};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The configuration could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    Missing(String),
    #[error("configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("configuration key {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// `[consensus]`: the policy the actors evaluate with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusConfig {
    /// Consensus mode.
    pub mode: Mode,
    /// Issuer directory (trust tiers, weights, keys); not required to exist.
    pub issuers_file: PathBuf,
    /// Weight and decision knobs.
    pub knobs: Knobs,
    /// How often each instance re-reads the tenants' trust settings changed through the
    /// API (`vex_trust_policies`), so several instances converge on the same weights.
    pub trust_poll_interval_ms: u64,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        ConsensusConfig {
            mode: Mode::WeightedVote,
            issuers_file: "config/issuers.toml".into(),
            knobs: Knobs::default(),
            trust_poll_interval_ms: 2_000,
        }
    }
}

/// `[kafka]`: the documents and observations topics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers; Kafka mode when set.
    pub brokers: Option<String>,
    /// Documents topic.
    pub topic: String,
    /// Observations topic (keyed `<tenant>/<package>`).
    pub observations_topic: String,
    /// Dead-letter topic of the documents topic (default `<topic>.dlq`).
    pub dlq_topic: Option<String>,
    /// Dead-letter topic of the observations topic (default `<observations_topic>.dlq`).
    pub observations_dlq_topic: Option<String>,
    /// Consumer group of both consumers.
    pub group_id: String,
    /// Consumer session timeout.
    pub session_timeout_ms: u64,
    /// Longest time shutdown waits for in-flight messages before committing what is done;
    /// also the longest a partition revocation (rebalance) waits for the work in flight
    /// on the revoked partitions before handing them over.
    pub drain_timeout_ms: u64,
    /// Partitions of topics created at start when missing (0: do not create).
    pub create_partitions: i32,
    /// Delay between attempts while the broker is unreachable at start.
    pub connect_retry_ms: u64,
    /// Documents in flight (normalised, observations not yet acknowledged) before pausing.
    pub max_in_flight_documents: usize,
    /// Observations in flight (not yet durable) before pausing.
    pub max_in_flight_observations: usize,
    /// Bytes of message payloads in flight per consumer before pausing (a message larger
    /// than this still passes, alone).
    pub max_in_flight_bytes: usize,
    /// Attempts at a message whose handling failed transiently (the pipeline or the store
    /// did not make it durable) before it is dead-lettered (`retries_exhausted`).
    pub handler_max_attempts: u32,
    /// First and largest delay between those attempts (doubling).
    pub handler_retry_initial_ms: u64,
    pub handler_retry_max_ms: u64,
    /// Secret (at least 32 bytes) of the HMAC-SHA256 tag the ingest stage puts on every
    /// observation it produces (header `vex-lens-mac`); an observation without a valid tag
    /// counts as unsigned. Kafka mode requires this or `observations_hmac_key_file`.
    pub observations_hmac_key: Option<Secret>,
    /// File holding that secret (surrounding whitespace trimmed); used when
    /// `observations_hmac_key` is unset.
    pub observations_hmac_key_file: Option<PathBuf>,
}

/// A secret string: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: None,
            topic: "vex.documents".into(),
            observations_topic: "vex.observations".into(),
            dlq_topic: None,
            observations_dlq_topic: None,
            group_id: "vex-lens".into(),
            session_timeout_ms: 45_000,
            drain_timeout_ms: 20_000,
            create_partitions: 6,
            connect_retry_ms: 2_000,
            max_in_flight_documents: 256,
            max_in_flight_observations: 4096,
            max_in_flight_bytes: 64 * 1024 * 1024,
            handler_max_attempts: 5,
            handler_retry_initial_ms: 200,
            handler_retry_max_ms: 10_000,
            observations_hmac_key: None,
            observations_hmac_key_file: None,
        }
    }
}

impl KafkaConfig {
    pub fn documents_dlq(&self) -> String {
        self.dlq_topic.clone().unwrap_or_else(|| format!("{}.dlq", self.topic))
    }
    pub fn observations_dlq(&self) -> String {
        self.observations_dlq_topic.clone().unwrap_or_else(|| format!("{}.dlq", self.observations_topic))
    }

    /// The key of the observations topic's HMAC tags (reads the key file when that is
    /// where it is); an error naming the key when there is none or it is unusable.
    pub fn observations_mac(&self) -> Result<ObservationMac, ConfigError> {
        let secret = match (&self.observations_hmac_key, &self.observations_hmac_key_file) {
            (Some(k), _) => k.0.trim().as_bytes().to_vec(),
            (None, Some(p)) => std::fs::read_to_string(p)
                .map_err(|e| ConfigError::Invalid {
                    key: "kafka.observations_hmac_key_file",
                    reason: format!("reading {}: {e}", p.display()),
                })?
                .trim()
                .as_bytes()
                .to_vec(),
            (None, None) => {
                return Err(ConfigError::Invalid {
                    key: "kafka.observations_hmac_key",
                    reason: "Kafka mode requires a secret (or kafka.observations_hmac_key_file) to authenticate \
                             the observations topic"
                        .into(),
                })
            }
        };
        ObservationMac::new(&secret)
            .map_err(|e| ConfigError::Invalid { key: "kafka.observations_hmac_key", reason: e.to_string() })
    }
}

/// `[mongo]`: the MongoDB-wire store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MongoConfig {
    /// Connection string; MongoDB store when set.
    pub uri: Option<String>,
    /// Database name.
    pub db: String,
}

impl Default for MongoConfig {
    fn default() -> Self {
        MongoConfig { uri: None, db: "vexlens".into() }
    }
}

/// `[http]`: health, metrics and status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// HTTP worker threads (each serves its connections to the end; default: half the
    /// available CPUs, at least 1, at most 8: the other half ingests. On 2 cores, one
    /// worker read at p95 12 ms where two took 18-24 ms and four 30-52 ms:
    /// docs/performance.md).
    pub workers: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            workers: std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).clamp(1, 8)),
        }
    }
}

/// A permission of an API token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Read consensus, explanations, history, conflicts, trust weights, the stream.
    #[serde(rename = "vex:read")]
    Read,
    /// Change trust (issuers, policy knobs); also grants every other scope.
    #[serde(rename = "vex:admin")]
    Admin,
    /// Run, list and download exports.
    #[serde(rename = "vex:export")]
    Export,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "vex:read",
            Scope::Admin => "vex:admin",
            Scope::Export => "vex:export",
        }
    }
}

/// `[[api.tokens]]`: one bearer token. Only its SHA-256 is configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who the token belongs to (logged and audited; never the secret).
    pub name: String,
    /// Lower-case hex SHA-256 of the token (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// The tenants it may act for (the only one is used when a request names none).
    pub tenants: Vec<String>,
}

/// `[api]`: the `/v1` HTTP API: tokens and request limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Bearer tokens; with none, `/v1` answers only on loopback (tenant `default` unless
    /// `X-Tenant` names one).
    pub tokens: Vec<ApiToken>,
    /// Largest request body (bytes).
    pub max_body_bytes: usize,
    /// Longest query string (bytes).
    pub max_query_bytes: usize,
    /// Page size when a list request names none.
    pub default_page_size: usize,
    /// Largest `page_size` accepted (at most 1000).
    pub max_page_size: usize,
    /// Most trust changes (`PUT /v1/vex/trust/...`) per tenant per minute on one
    /// instance; more answer 429 (0: no limit).
    pub admin_changes_per_minute: u32,
    /// Most export jobs (`POST /v1/vex/export`) per tenant per minute on one instance;
    /// more answer 429 with `Retry-After` (0: no limit).
    pub export_jobs_per_minute: u32,
    /// Most simulations (`POST /v1/vex/simulate`) per tenant per minute on one instance;
    /// more answer 429 with `Retry-After` (0: no limit).
    pub simulations_per_minute: u32,
    /// How often an open change stream (`/v1/vex/consensus/stream`) reads the store for
    /// new changes.
    pub stream_poll_ms: u64,
    /// Seconds between heartbeats (SSE comment lines) of an idle change stream.
    pub stream_heartbeat_secs: u64,
    /// Most change streams open at once on this instance (more get 503).
    pub max_streams: usize,
    /// Most change streams one tenant may hold open at once (more get 429), so that one
    /// tenant's clients cannot take every slot of `max_streams` (a value above
    /// `max_streams` is `max_streams`).
    pub max_streams_per_tenant: usize,
    /// Most change streams one API token may hold open at once (more get 429); without
    /// tokens (loopback only) the tenant and instance caps apply.
    pub max_streams_per_token: usize,
    /// A change stream ends after this many seconds (the client resumes with
    /// `Last-Event-ID`, losing nothing), so no client holds a slot for ever.
    pub stream_max_age_secs: u64,
    /// A client that has not taken a written frame for this many seconds (it stopped
    /// reading) is dropped: its connection is closed and its slot freed.
    pub stream_stall_secs: u64,
    /// Start even though no token is configured and `http.listen` is not a loopback
    /// address (e.g. `0.0.0.0:8080` so Prometheus can scrape `/metrics` from another
    /// host). `/v1` still answers only to direct loopback clients; without this key such a
    /// start is refused.
    pub allow_unauthenticated_remote: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            tokens: Vec::new(),
            max_body_bytes: 64 * 1024,
            max_query_bytes: 4096,
            default_page_size: 100,
            max_page_size: 1000,
            admin_changes_per_minute: 10,
            export_jobs_per_minute: 6,
            simulations_per_minute: 30,
            stream_poll_ms: 500,
            stream_heartbeat_secs: 15,
            max_streams: 64,
            max_streams_per_tenant: 16,
            max_streams_per_token: 8,
            stream_max_age_secs: 3600,
            stream_stall_secs: 60,
            allow_unauthenticated_remote: false,
        }
    }
}

/// Whether `t` is a valid tenant name: 1 to 128 of `A-Z a-z 0-9 . _ -`.
pub fn valid_tenant(t: &str) -> bool {
    !t.is_empty() && t.len() <= 128 && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `[ingest]`: inputs of the embedded mode and limits of both modes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Directory watched for `*.json` documents (embedded mode).
    pub dir: Option<PathBuf>,
    /// Poll interval of the directory watcher.
    pub poll_interval_ms: u64,
    /// A watched file is read once its modification time is this old, or its size and
    /// modification time stayed the same across scans this long (a file being written
    /// is not read half-written; writers that write in place must not pause longer).
    pub settle_ms: u64,
    /// Follow symlinks in the watched directory to regular files outside it (off: only
    /// symlinks to regular files inside the directory are read).
    pub follow_symlinks: bool,
    /// Read NDJSON documents from stdin (embedded mode).
    pub stdin: bool,
    /// Tenant of documents without a `tenant` header (and of every embedded input).
    pub tenant: String,
    /// Largest message/document accepted (bytes); larger ones are dead-lettered.
    pub max_message_bytes: usize,
    /// Normalisation worker threads.
    pub workers: usize,
    /// Documents in flight at once in the embedded mode.
    pub max_in_flight_documents: usize,
    /// Bytes of watched files in flight at once in the embedded mode (a larger file still
    /// passes, alone): a document's parse, observations and records take tens of times its
    /// size, so a few large documents bound the memory, while many small ones still run
    /// `max_in_flight_documents` at once.
    pub max_in_flight_bytes: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            dir: None,
            poll_interval_ms: 500,
            settle_ms: 1_000,
            follow_symlinks: false,
            stdin: false,
            tenant: "default".into(),
            max_message_bytes: 8 * 1024 * 1024,
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 8),
            max_in_flight_documents: 64,
            max_in_flight_bytes: 2 * 1024 * 1024,
        }
    }
}

/// `[store]`: the embedded store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Directory of the embedded (redb) store.
    pub data_dir: PathBuf,
    /// Memory for the embedded store's page cache in `serve`, in MiB (a tenth of it
    /// buffers the pages a commit writes; one-shot commands such as `records`, `export`
    /// and `compact` use 64). A bound, filled as a load touches pages: 32 instead of 64
    /// held 15-40 MB less resident memory on large loads and made `serve --once` 3-7 %
    /// slower on CSAF copies (docs/performance.md, session 18); 24, the default since
    /// session 22, was as fast as 64 on csaf-ciq copies once the records in flight were
    /// bounded (`actors.max_records_in_flight`).
    pub cache_mib: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { data_dir: "./data".into(), cache_mib: 24 }
    }
}

impl StoreConfig {
    /// The page cache in bytes (saturating where `usize` is 32 bits: a shift would wrap
    /// 4 GiB and more to a tiny cache).
    pub fn cache_bytes(&self) -> usize {
        usize::try_from(self.cache_mib).unwrap_or(usize::MAX).saturating_mul(1 << 20)
    }

    /// `[store]`: the cache size.
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_STORE_CACHE_MIB).contains(&self.cache_mib) {
            return Err(ConfigError::Invalid {
                key: "store.cache_mib",
                reason: format!("{} MiB: must be between 1 and {MAX_STORE_CACHE_MIB}", self.cache_mib),
            });
        }
        Ok(())
    }
}

/// The largest page cache `store.cache_mib` allows (64 GiB: a typo's guard, not a
/// recommendation).
const MAX_STORE_CACHE_MIB: u32 = 64 * 1024;

/// `[export]`: export jobs run by the service (`POST /v1/vex/export`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// Directory under which each job writes its bundle (`<dir>/<job id>/manifest.json`).
    pub dir: PathBuf,
    /// Private key (PKCS#8 PEM, e.g. from `vex-lens keygen`) that signs every job's
    /// manifest; unsigned bundles when absent.
    pub sign_key: Option<PathBuf>,
    /// Bundles kept per tenant: after each job the tenant's bundles beyond the newest
    /// `keep_per_tenant` are deleted (their job records stay, with no files; 0: no count
    /// limit).
    pub keep_per_tenant: usize,
    /// Bundles older than this many seconds are deleted after each job of their tenant
    /// (0: no age limit).
    pub max_age_secs: u64,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig { dir: "./exports".into(), sign_key: None, keep_per_tenant: 20, max_age_secs: 7 * 86_400 }
    }
}

/// `[actors]`: mailbox sizes, batching and memory bounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActorsConfig {
    /// Mailbox capacity of every actor (awaited sends wait when full).
    pub mailbox_capacity: usize,
    /// Most artifact actors alive at once; the least recently used idle ones are evicted.
    pub max_live_actors: usize,
    /// Most observations the live artifact actors' states hold together (a state takes
    /// 1-1.5 KiB per observation); beyond it the least recently used idle actors are
    /// evicted (rebuilt from the store when their package comes back).
    pub max_live_observations: usize,
    /// Artifact actors idle this long are evicted (rebuilt from the store on demand).
    pub idle_evict_secs: u64,
    /// Most consensus records evaluated and not yet written, across the artifact actors
    /// (a record takes about 2-3 KiB until it is written): an actor waits for room before
    /// it evaluates; one evaluation larger than this goes alone.
    pub max_records_in_flight: usize,
    /// Store writers: each package's writes go through one of them, in order; different
    /// packages' writes proceed in parallel.
    pub writers: usize,
    /// Arbiter threads the artifact actors run on (0: one per available core).
    pub artifact_threads: usize,
    /// Most observations written per store batch.
    pub writer_batch_max: usize,
    /// Longest wait before a partial batch is written.
    pub writer_flush_ms: u64,
    /// First and largest delay between store retries.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Longest a first store call may take before it is abandoned and retried (each
    /// retry may take twice as long as the one before, up to 16x).
    pub store_timeout_ms: u64,
}

impl Default for ActorsConfig {
    fn default() -> Self {
        ActorsConfig {
            mailbox_capacity: 256,
            max_live_actors: 10_000,
            max_live_observations: 15_000,
            idle_evict_secs: 300,
            max_records_in_flight: 6_144,
            writers: 4,
            artifact_threads: 0,
            writer_batch_max: 2_000,
            writer_flush_ms: 5,
            retry_initial_ms: 100,
            retry_max_ms: 5_000,
            store_timeout_ms: 60_000,
        }
    }
}

/// The OTLP traces URL of a configured endpoint: a bare `http://host:port` or
/// `https://host:port` (or one ending in `/`) gets the standard `/v1/traces` path; a URL
/// with a path is used as it is. `Err`: why the endpoint cannot be sent to.
pub fn otlp_traces_url(endpoint: &str) -> Result<String, String> {
    let e = endpoint.trim();
    let err = |reason: &str| reason.to_string();
    let (scheme, rest) = if let Some(rest) = e.strip_prefix("http://") {
        ("http", rest)
    } else if let Some(rest) = e.strip_prefix("https://") {
        ("https", rest)
    } else {
        return Err(err("must start with http:// or https:// (OTLP/HTTP)"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty()
        || !authority.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    {
        return Err(err("needs host:port"));
    }
    if path.is_empty() || path == "/" {
        Ok(format!("{scheme}://{authority}/v1/traces"))
    } else {
        Ok(format!("{scheme}://{authority}{path}"))
    }
}

/// `[telemetry]`: trace export (the runbook's `Telemetry:ExportEnabled`). Off by default
/// (air gap): nothing is exported and no exporter is built unless `export_enabled`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Export spans over OTLP/HTTP (protobuf) to `otlp_endpoint`.
    pub export_enabled: bool,
    /// The collector's OTLP/HTTP endpoint (`http://host:port` or `https://host:port`,
    /// `/v1/traces` is appended when it has no path; a URL with a path is used as it is).
    pub otlp_endpoint: String,
    /// PEM file of the CA certificate(s) an `https://` collector's certificate must chain
    /// to (then the only roots trusted); unset: the platform's roots.
    pub otlp_ca_file: Option<PathBuf>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Fraction of traces this service starts that are exported (0..=1); a trace whose
    /// incoming `traceparent` is sampled is always followed.
    pub sample_ratio: f64,
    /// Longest wait for the collector to answer one export (and for the final flush).
    pub export_timeout_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            export_enabled: false,
            otlp_endpoint: "http://127.0.0.1:4318".into(),
            otlp_ca_file: None,
            service_name: "vex-lens".into(),
            sample_ratio: 1.0,
            export_timeout_ms: 10_000,
        }
    }
}

/// `kind` of a feed: the only kind so far is a CSAF provider's distribution directory
/// (OASIS CSAF 2.0 section 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedKind {
    Csaf,
}

/// A TLP label of a CSAF directory or document (`UNLABELED`: none given).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tlp {
    #[serde(rename = "CLEAR")]
    Clear,
    #[serde(rename = "WHITE")]
    White,
    #[serde(rename = "GREEN")]
    Green,
    #[serde(rename = "AMBER")]
    Amber,
    #[serde(rename = "AMBER+STRICT")]
    AmberStrict,
    #[serde(rename = "RED")]
    Red,
    #[serde(rename = "UNLABELED")]
    Unlabeled,
}

impl Tlp {
    pub fn as_str(self) -> &'static str {
        match self {
            Tlp::Clear => "CLEAR",
            Tlp::White => "WHITE",
            Tlp::Green => "GREEN",
            Tlp::Amber => "AMBER",
            Tlp::AmberStrict => "AMBER+STRICT",
            Tlp::Red => "RED",
            Tlp::Unlabeled => "UNLABELED",
        }
    }

    /// The label a string names (case-insensitive; `AMBER_STRICT`/`amber-strict` too).
    pub fn from_label(s: &str) -> Option<Tlp> {
        let u = s.trim().to_ascii_uppercase().replace(['_', '-'], "+");
        [Tlp::Clear, Tlp::White, Tlp::Green, Tlp::Amber, Tlp::AmberStrict, Tlp::Red, Tlp::Unlabeled]
            .into_iter()
            .find(|t| t.as_str() == u)
    }
}

fn default_feed_tlp() -> Vec<Tlp> {
    vec![Tlp::Clear, Tlp::White, Tlp::Unlabeled]
}
fn default_feed_interval() -> String {
    "1h".into()
}
fn default_feed_rate() -> f64 {
    5.0
}
fn default_feed_timeout() -> String {
    "30s".into()
}
fn default_true() -> bool {
    true
}

/// `[[feeds]]`: one provider whose published VEX the service pulls (`vex-lens feed run`,
/// docs/feeds.md). There is no switch that turns certificate checks off: a provider with
/// a private CA is trusted through `ca_file`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Names the feed in commands, state (`<data_dir>/feeds/<name>.json`), provenance
    /// (`feed:<name>`) and metrics: 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// `csaf`: a CSAF provider's distribution directory.
    pub kind: FeedKind,
    /// The provider: a domain (`example.com`: its
    /// `https://example.com/.well-known/csaf/provider-metadata.json`) or the `https://` URL
    /// of its `provider-metadata.json`.
    pub url: String,
    /// Tenant the documents belong to (default: `ingest.tenant`).
    #[serde(default)]
    pub tenant: Option<String>,
    /// The issuer id (of the issuer directory) the provider publishes as; its
    /// `publisher.namespace` must name this issuer, or the feed stops.
    pub issuer: String,
    /// TLP labels allowed, of the directory and of each document (a document's own label
    /// must be allowed too; none given is `UNLABELED`).
    #[serde(default = "default_feed_tlp")]
    pub tlp: Vec<Tlp>,
    /// How often the feed is checked by `serve` (`30s`, `15m`, `6h`, `1d`).
    #[serde(default = "default_feed_interval")]
    pub interval: String,
    /// First sync only: documents listed before this RFC 3339 time are not fetched.
    #[serde(default)]
    pub since: Option<String>,
    /// Most requests per second to the provider.
    #[serde(default = "default_feed_rate")]
    pub rate: f64,
    /// Longest a request may take, body included (`30s`).
    #[serde(default = "default_feed_timeout")]
    pub timeout: String,
    /// Largest document fetched (default and maximum: `ingest.max_message_bytes`); a larger
    /// one is a permanent `too_large` rejection, counted.
    #[serde(default)]
    pub max_document_bytes: Option<usize>,
    /// PEM file of the CA certificate(s) the provider's certificate must chain to (then
    /// the only roots trusted for this feed); unset: the platform's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Run by `serve` and by `feed run` without names.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl FeedConfig {
    /// The feed's tenant (its own, else `ingest.tenant`).
    pub fn tenant_or<'a>(&'a self, ingest_tenant: &'a str) -> &'a str {
        self.tenant.as_deref().unwrap_or(ingest_tenant)
    }
    /// `interval` as a duration (validated at start).
    pub fn interval_duration(&self) -> std::time::Duration {
        parse_duration(&self.interval).unwrap_or(std::time::Duration::from_secs(3600))
    }
    /// `timeout` as a duration (validated at start).
    pub fn timeout_duration(&self) -> std::time::Duration {
        parse_duration(&self.timeout).unwrap_or(std::time::Duration::from_secs(30))
    }
    /// The largest document fetched.
    pub fn max_bytes(&self, ingest_max: usize) -> usize {
        self.max_document_bytes.unwrap_or(ingest_max)
    }
}

/// A duration written `<n><unit>` with unit `ms`, `s`, `m`, `h` or `d` (`90s`, `6h`).
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(n.checked_mul(ms)?))
}

/// Whether `n` is a feed name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `.`.
pub fn valid_feed_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && !n.starts_with('.')
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// How the configuration file was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigSource {
    /// `--config`.
    Flag,
    /// The environment variable `VEXLENS_CONFIG`.
    Env,
    /// `./config/default.toml` in the working directory.
    WorkingDirectory,
    /// No file: the built-in defaults.
    BuiltIn,
}

/// The configuration file a run uses (none: the built-in defaults).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigLocation {
    /// The file, as found (relative to the working directory when given so).
    pub file: Option<PathBuf>,
    pub source: ConfigSource,
}

impl std::fmt::Display for ConfigLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.file, self.source) {
            (Some(p), ConfigSource::Flag) => write!(f, "{} (--config)", p.display()),
            (Some(p), ConfigSource::Env) => write!(f, "{} ({CONFIG_ENV})", p.display()),
            (Some(p), _) => write!(f, "{} (./config/ of the working directory)", p.display()),
            (None, _) => write!(
                f,
                "built-in defaults (no --config, no {CONFIG_ENV}, no ./config/default.toml in {})",
                std::env::current_dir().map_or_else(|_| "the working directory".into(), |d| d.display().to_string())
            ),
        }
    }
}

/// The environment variable naming the configuration file (after `--config`).
pub const CONFIG_ENV: &str = "VEXLENS_CONFIG";

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub consensus: ConsensusConfig,
    pub kafka: KafkaConfig,
    pub mongo: MongoConfig,
    pub http: HttpConfig,
    pub ingest: IngestConfig,
    pub store: StoreConfig,
    pub actors: ActorsConfig,
    pub export: ExportConfig,
    pub api: ApiConfig,
    pub telemetry: TelemetryConfig,
    /// `[[feeds]]`: providers pulled by `vex-lens feed run` (and, later, `serve`).
    pub feeds: Vec<FeedConfig>,
}

/// Where documents come from and where results go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceMode {
    Kafka,
    Embedded,
}

impl Config {
    /// The configuration file to use: `flag` (`--config`), else `$VEXLENS_CONFIG`, else
    /// `./config/default.toml` when it exists, else none (built-in defaults). A file named
    /// by the flag or the variable must exist.
    pub fn locate(flag: Option<&Path>) -> Result<ConfigLocation, ConfigError> {
        Self::locate_with(flag, std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()).map(PathBuf::from))
    }

    /// [`Config::locate`] with the variable's value given (tests).
    pub fn locate_with(flag: Option<&Path>, env: Option<PathBuf>) -> Result<ConfigLocation, ConfigError> {
        let named = |p: PathBuf, source: ConfigSource| {
            if p.exists() {
                Ok(ConfigLocation { file: Some(p), source })
            } else {
                let from = if source == ConfigSource::Flag { "--config" } else { CONFIG_ENV };
                Err(ConfigError::Missing(format!("{} (from {from})", p.display())))
            }
        };
        if let Some(p) = flag {
            return named(p.to_path_buf(), ConfigSource::Flag);
        }
        if let Some(p) = env {
            return named(p, ConfigSource::Env);
        }
        let default = Path::new("config/default.toml");
        if default.exists() {
            return Ok(ConfigLocation { file: Some(default.to_path_buf()), source: ConfigSource::WorkingDirectory });
        }
        Ok(ConfigLocation { file: None, source: ConfigSource::BuiltIn })
    }

    /// Loads the file [`Config::locate`] finds, then the environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Ok(Self::load_located(path)?.0)
    }

    /// [`Config::load`], and where the file was found.
    pub fn load_located(path: Option<&Path>) -> Result<(Config, ConfigLocation), ConfigError> {
        let location = Self::locate(path)?;
        let mut fig = Figment::new();
        if let Some(p) = &location.file {
            fig = fig.merge(Toml::file(p));
        }
        Ok((Self::from_figment(fig.merge(Self::env()))?, location))
    }

    /// `VEXLENS_SECTION__KEY` variables (only those naming a section, so unrelated
    /// `VEXLENS_*` variables of the scripts are not mistaken for keys).
    pub fn env() -> Env {
        Env::prefixed("VEXLENS_").filter(|k| k.as_str().contains("__")).split("__")
    }

    pub fn from_figment(fig: Figment) -> Result<Config, ConfigError> {
        fig.extract().map_err(|e| ConfigError::Parse(Box::new(e)))
    }

    /// Kafka mode when brokers are configured.
    pub fn source_mode(&self) -> SourceMode {
        if self.kafka.brokers.as_deref().is_some_and(|b| !b.trim().is_empty()) {
            SourceMode::Kafka
        } else {
            SourceMode::Embedded
        }
    }

    /// Checks `[[feeds]]`; the error names the key (`feeds.<key>`) and the feed.
    fn validate_feeds(&self) -> Result<(), ConfigError> {
        let inv = |key: &'static str, name: &str, reason: String| {
            Err(ConfigError::Invalid { key, reason: format!("feed {name:?}: {reason}") })
        };
        let mut names = std::collections::BTreeSet::new();
        for f in &self.feeds {
            let n = f.name.as_str();
            if !valid_feed_name(n) {
                return inv(
                    "feeds.name",
                    n,
                    "not a feed name: 1 to 64 of A-Z a-z 0-9 . _ -, not starting with .".into(),
                );
            }
            if !names.insert(n) {
                return inv("feeds.name", n, "configured twice".into());
            }
            let url = f.url.trim();
            if url.is_empty() {
                return inv("feeds.url", n, "must not be empty".into());
            }
            if url.contains("://") && !url.starts_with("https://") {
                return inv("feeds.url", n, format!("{url:?}: only https:// (or a bare domain)"));
            }
            if !url.contains("://") && (url.contains('/') || url.contains(char::is_whitespace)) {
                return inv("feeds.url", n, format!("{url:?} is neither a domain nor an https:// URL"));
            }
            if let Some(t) = &f.tenant {
                if !valid_tenant(t) {
                    return inv(
                        "feeds.tenant",
                        n,
                        format!("{t:?} is not a tenant name: 1 to 128 of A-Z a-z 0-9 . _ -"),
                    );
                }
            }
            if f.issuer.trim().is_empty() {
                return inv("feeds.issuer", n, "required: the issuer id of the issuer directory".into());
            }
            if f.tlp.is_empty() {
                return inv("feeds.tlp", n, "must allow at least one label".into());
            }
            match parse_duration(&f.interval) {
                Some(d) if d >= std::time::Duration::from_secs(1) => {}
                _ => {
                    return inv(
                        "feeds.interval",
                        n,
                        format!("{:?} is not a duration of at least 1s (30s, 15m, 6h, 1d)", f.interval),
                    )
                }
            }
            match parse_duration(&f.timeout) {
                Some(d) if d >= std::time::Duration::from_millis(100) => {}
                _ => {
                    return inv(
                        "feeds.timeout",
                        n,
                        format!("{:?} is not a duration of at least 100ms (30s)", f.timeout),
                    )
                }
            }
            if !(f.rate > 0.0 && f.rate <= 1000.0) {
                return inv("feeds.rate", n, format!("{} is not in (0, 1000] requests per second", f.rate));
            }
            if let Some(since) = &f.since {
                if crate::domain::timestamp::Timestamp::parse(since).is_err() {
                    return inv("feeds.since", n, format!("{since:?} is not an RFC 3339 time"));
                }
            }
            if let Some(m) = f.max_document_bytes {
                if m == 0 || m > self.ingest.max_message_bytes {
                    return inv(
                        "feeds.max_document_bytes",
                        n,
                        format!("{m} is not in 1..=ingest.max_message_bytes ({})", self.ingest.max_message_bytes),
                    );
                }
            }
            if let Some(p) = &f.ca_file {
                if !p.is_file() {
                    return inv("feeds.ca_file", n, format!("{} is not a file", p.display()));
                }
            }
        }
        Ok(())
    }

    /// Checks every value, section by section; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.consensus.validate()?;
        self.http.validate()?;
        self.kafka.validate()?;
        if self.source_mode() == SourceMode::Kafka {
            self.kafka.observations_mac()?;
        }
        self.mongo.validate()?;
        self.ingest.validate()?;
        self.api.validate()?;
        self.actors.validate()?;
        self.store.validate()?;
        self.validate_feeds()?;
        self.telemetry.validate()
    }
}

impl ConsensusConfig {
    /// `[consensus]`: the knobs, the trust poll interval.
    fn validate(&self) -> Result<(), ConfigError> {
        let inv = |key: &'static str, reason: String| Err(ConfigError::Invalid { key, reason });
        if let Err(e) = self.knobs.validate() {
            return inv("consensus.knobs", e.to_string());
        }
        if self.trust_poll_interval_ms < 100 {
            return inv("consensus.trust_poll_interval_ms", "must be at least 100".into());
        }
        Ok(())
    }
}

impl HttpConfig {
    /// `[http]`: workers, the listen address.
    fn validate(&self) -> Result<(), ConfigError> {
        let inv = |key: &'static str, reason: String| Err(ConfigError::Invalid { key, reason });
        if !(1..=64).contains(&self.workers) {
            return inv("http.workers", format!("{} is not in 1..=64", self.workers));
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err()
            && !self.listen.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            return inv("http.listen", format!("{:?} is not host:port", self.listen));
        }
        Ok(())
    }
}

impl KafkaConfig {
    /// `[kafka]`: topics, timeouts, in-flight bounds, retries (the observations MAC is checked by [`Config::validate`] in Kafka mode).
    fn validate(&self) -> Result<(), ConfigError> {
        let inv = |key: &'static str, reason: String| Err(ConfigError::Invalid { key, reason });
        let k = self;
        for (key, v) in [
            ("kafka.topic", &k.topic),
            ("kafka.observations_topic", &k.observations_topic),
            ("kafka.group_id", &k.group_id),
        ] {
            if v.trim().is_empty() {
                return inv(key, "must not be empty".into());
            }
        }
        if k.topic == k.observations_topic {
            return inv("kafka.observations_topic", format!("must differ from kafka.topic ({})", k.topic));
        }
        if k.documents_dlq() == k.topic || k.documents_dlq() == k.observations_topic {
            return inv("kafka.dlq_topic", "must differ from the documents and observations topics".into());
        }
        if k.session_timeout_ms < 1_000 {
            return inv("kafka.session_timeout_ms", format!("{} is below 1000", k.session_timeout_ms));
        }
        if k.drain_timeout_ms >= k.session_timeout_ms {
            return inv(
                "kafka.drain_timeout_ms",
                format!("{} must be below kafka.session_timeout_ms ({})", k.drain_timeout_ms, k.session_timeout_ms),
            );
        }
        if k.max_in_flight_documents == 0 {
            return inv("kafka.max_in_flight_documents", "must be at least 1".into());
        }
        if k.max_in_flight_observations == 0 {
            return inv("kafka.max_in_flight_observations", "must be at least 1".into());
        }
        if k.max_in_flight_bytes == 0 {
            return inv("kafka.max_in_flight_bytes", "must be at least 1".into());
        }
        if k.handler_max_attempts == 0 {
            return inv("kafka.handler_max_attempts", "must be at least 1".into());
        }
        if k.handler_retry_initial_ms == 0 || k.handler_retry_max_ms < k.handler_retry_initial_ms {
            return inv(
                "kafka.handler_retry_max_ms",
                "handler_retry_initial_ms must be at least 1 and at most handler_retry_max_ms".into(),
            );
        }
        if k.create_partitions < 0 {
            return inv("kafka.create_partitions", "must not be negative".into());
        }
        Ok(())
    }
}

impl MongoConfig {
    /// `[mongo]`: the URI's scheme, the database name.
    fn validate(&self) -> Result<(), ConfigError> {
        let inv = |key: &'static str, reason: String| Err(ConfigError::Invalid { key, reason });
        if let Some(u) = &self.uri {
            if !(u.starts_with("mongodb://") || u.starts_with("mongodb+srv://")) {
                return inv("mongo.uri", format!("{u:?} is not a mongodb:// URI"));
            }
        }
        if self.db.trim().is_empty() {
            return inv("mongo.db", "must not be empty".into());
        }
        Ok(())
    }
}

impl IngestConfig {
    /// `[ingest]`: sizes, intervals, workers, the tenant name.
    fn validate(&self) -> Result<(), ConfigError> {
        let inv = |key: &'static str, reason: String| Err(ConfigError::Invalid { key, reason });
        let i = self;
        if i.max_message_bytes == 0 {
            return inv("ingest.max_message_bytes", "must be at least 1".into());
        }
        if i.poll_interval_ms == 0 {
            return inv("ingest.poll_interval_ms", "must be at least 1".into());
        }
        if i.settle_ms > 3_600_000 {
            return inv("ingest.settle_ms", "must be at most 3600000 (an hour)".into());
        }
        if i.workers == 0 {
            return inv("ingest.workers", "must be at least 1".into());
        }
        if i.max_in_flight_documents == 0 {
            return inv("ingest.max_in_flight_documents", "must be at least 1".into());
        }
        if i.max_in_flight_bytes < 1024 {
            return inv("ingest.max_in_flight_bytes", "must be at least 1024".into());
        }
        if !valid_tenant(&i.tenant) {
            return inv(
                "ingest.tenant",
                format!("{:?} is not a tenant name: 1 to 128 of A-Z a-z 0-9 . _ - (the API's X-Tenant rule)", i.tenant),
            );
        }
        Ok(())
    }
}

impl ApiConfig {
    /// `[api]`: pages, bodies, streams, tokens.
    fn validate(&self) -> Result<(), ConfigError> {
        let inv = |key: &'static str, reason: String| Err(ConfigError::Invalid { key, reason });
        let api = self;
        if api.max_page_size == 0 || api.max_page_size > 1000 {
            return inv("api.max_page_size", format!("{} is not in 1..=1000", api.max_page_size));
        }
        if api.default_page_size == 0 || api.default_page_size > api.max_page_size {
            return inv("api.default_page_size", "must be in 1..=api.max_page_size".into());
        }
        if api.max_body_bytes == 0 {
            return inv("api.max_body_bytes", "must be at least 1".into());
        }
        if api.max_query_bytes < 256 {
            return inv("api.max_query_bytes", "must be at least 256".into());
        }
        if !(10..=60_000).contains(&api.stream_poll_ms) {
            return inv("api.stream_poll_ms", "must be in 10..=60000".into());
        }
        if !(1..=3600).contains(&api.stream_heartbeat_secs) {
            return inv("api.stream_heartbeat_secs", "must be in 1..=3600".into());
        }
        if api.max_streams == 0 {
            return inv("api.max_streams", "must be at least 1".into());
        }
        if api.max_streams_per_tenant == 0 {
            return inv("api.max_streams_per_tenant", "must be at least 1".into());
        }
        if api.max_streams_per_token == 0 {
            return inv("api.max_streams_per_token", "must be at least 1".into());
        }
        if !(1..=86_400).contains(&api.stream_max_age_secs) {
            return inv("api.stream_max_age_secs", "must be in 1..=86400".into());
        }
        if !(1..=3600).contains(&api.stream_stall_secs) {
            return inv("api.stream_stall_secs", "must be in 1..=3600".into());
        }
        let mut hashes = std::collections::BTreeSet::new();
        for t in &api.tokens {
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return inv("api.tokens.sha256", format!("token {:?}: not 64 lower-case hex digits", t.name));
            }
            if !hashes.insert(t.sha256.as_str()) {
                return inv("api.tokens.sha256", format!("token {:?}: the same hash is configured twice", t.name));
            }
            if t.scopes.is_empty() {
                return inv("api.tokens.scopes", format!("token {:?}: no scopes", t.name));
            }
            if t.tenants.is_empty() || !t.tenants.iter().all(|x| valid_tenant(x)) {
                return inv("api.tokens.tenants", format!("token {:?}: needs valid tenant names", t.name));
            }
        }
        Ok(())
    }
}

impl ActorsConfig {
    /// `[actors]`: mailbox, live actors, writers, retries.
    fn validate(&self) -> Result<(), ConfigError> {
        let inv = |key: &'static str, reason: String| Err(ConfigError::Invalid { key, reason });
        let a = self;
        for (key, v) in [
            ("actors.mailbox_capacity", a.mailbox_capacity as u64),
            ("actors.max_live_actors", a.max_live_actors as u64),
            ("actors.max_live_observations", a.max_live_observations as u64),
            ("actors.idle_evict_secs", a.idle_evict_secs),
            ("actors.max_records_in_flight", a.max_records_in_flight as u64),
            ("actors.writers", a.writers as u64),
            ("actors.writer_batch_max", a.writer_batch_max as u64),
            ("actors.retry_initial_ms", a.retry_initial_ms),
            ("actors.store_timeout_ms", a.store_timeout_ms),
        ] {
            if v == 0 {
                return inv(key, "must be at least 1".into());
            }
        }
        if a.retry_max_ms < a.retry_initial_ms {
            return inv("actors.retry_max_ms", "must be at least actors.retry_initial_ms".into());
        }
        Ok(())
    }
}

impl TelemetryConfig {
    /// `[telemetry]`: the OTLP endpoint and CA file, sampling, names, timeouts.
    fn validate(&self) -> Result<(), ConfigError> {
        let inv = |key: &'static str, reason: String| Err(ConfigError::Invalid { key, reason });
        let t = self;
        match otlp_traces_url(&t.otlp_endpoint) {
            Err(reason) => {
                return inv("telemetry.otlp_endpoint", format!("OTLP endpoint {:?}: {reason}", t.otlp_endpoint))
            }
            Ok(url) if t.otlp_ca_file.is_some() && !url.starts_with("https://") => {
                return inv("telemetry.otlp_ca_file", "only used with an https:// otlp_endpoint".into())
            }
            Ok(_) => {}
        }
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            return inv("telemetry.sample_ratio", format!("{} is not in 0..=1", t.sample_ratio));
        }
        if t.service_name.trim().is_empty() {
            return inv("telemetry.service_name", "must not be empty".into());
        }
        if t.export_timeout_ms == 0 {
            return inv("telemetry.export_timeout_ms", "must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    fn parse(toml: &str) -> Result<Config, ConfigError> {
        Config::from_figment(Figment::new().merge(Toml::string(toml)))
    }

    #[test]
    fn repository_default_toml_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        let c = Config::from_figment(Figment::new().merge(Toml::file(path))).unwrap();
        c.validate().unwrap();
        assert_eq!(c.kafka.topic, "vex.documents");
        assert_eq!(c.source_mode(), SourceMode::Embedded);
    }

    /// The API's tenant-name rule for the ingest tenant (`--tenant`, VEXLENS_INGEST__TENANT),
    /// and the change stream's limits.
    #[test]
    fn ingest_tenant_and_stream_limits_are_checked() {
        for bad in ["", "a/b", "has space", "é", &"x".repeat(129)] {
            let mut c = Config::default();
            c.ingest.tenant = bad.to_string();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("ingest.tenant") && e.contains("not a tenant name"), "{bad:?}: {e}");
        }
        let mut c = Config::default();
        c.ingest.tenant = "acme.prod-1_x".into();
        c.validate().unwrap();
        for (toml, key) in [
            ("[api]\nmax_streams_per_tenant = 0\n", "api.max_streams_per_tenant"),
            ("[api]\nmax_streams_per_token = 0\n", "api.max_streams_per_token"),
            ("[api]\nstream_max_age_secs = 0\n", "api.stream_max_age_secs"),
            ("[api]\nstream_stall_secs = 0\n", "api.stream_stall_secs"),
        ] {
            let e = parse(toml).unwrap().validate().unwrap_err().to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
    }

    /// `store.cache_mib`: the repository's file says the built-in default; zero and
    /// absurd sizes are refused by name; the bytes are the MiB given.
    #[test]
    fn the_store_cache_is_checked() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        let file = Config::from_figment(Figment::new().merge(Toml::file(path))).unwrap();
        assert_eq!(file.store.cache_mib, StoreConfig::default().cache_mib);
        let c = parse("[store]\ncache_mib = 48\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.store.cache_bytes(), 48 * 1024 * 1024);
        for bad in [0u64, 64 * 1024 + 1] {
            let e = parse(&format!("[store]\ncache_mib = {bad}\n")).unwrap().validate().unwrap_err().to_string();
            assert!(e.contains("store.cache_mib") && e.contains(&format!("{bad} MiB")), "{bad}: {e}");
        }
    }

    /// `[[feeds]]`: every key parsed, defaults in code, unknown keys refused, each bad
    /// value an error naming its key and the feed.
    #[test]
    fn feeds_are_parsed_and_checked() {
        let ok = "[[feeds]]\nname = \"ciq\"\nkind = \"csaf\"\nurl = \"ciq.com\"\nissuer = \"ciq\"\n";
        let c = parse(ok).unwrap();
        c.validate().unwrap();
        let f = &c.feeds[0];
        assert_eq!(
            (f.kind, f.tlp.clone(), f.enabled),
            (FeedKind::Csaf, vec![Tlp::Clear, Tlp::White, Tlp::Unlabeled], true)
        );
        assert_eq!((f.interval_duration().as_secs(), f.timeout_duration().as_secs(), f.rate), (3600, 30, 5.0));
        assert_eq!((f.tenant_or("default"), f.max_bytes(7)), ("default", 7));
        let full = format!(
            "{ok}tenant = \"acme\"\ntlp = [\"WHITE\", \"GREEN\"]\ninterval = \"15m\"\nsince = \"2024-01-01T00:00:00Z\"\n\
             rate = 2.5\ntimeout = \"10s\"\nmax_document_bytes = 1000\nenabled = false\n"
        );
        let c = parse(&full).unwrap();
        c.validate().unwrap();
        assert_eq!(
            (c.feeds[0].tlp.clone(), c.feeds[0].interval_duration().as_secs()),
            (vec![Tlp::White, Tlp::Green], 900)
        );
        let e = parse(&format!("{ok}insecure = true\n")).unwrap_err().to_string();
        assert!(e.contains("insecure"), "unknown keys are refused: {e}");
        let e = parse("[[feeds]]\nname = \"x\"\nkind = \"rolie\"\nurl = \"a.b\"\nissuer = \"i\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rolie"), "{e}");
        let e = parse("[[feeds]]\nname = \"x\"\nkind = \"csaf\"\nurl = \"a.b\"\n").unwrap_err().to_string();
        assert!(e.contains("issuer"), "the issuer is required: {e}");
        for (extra, key) in [
            ("url = \"http://ciq.com\"\n", "feeds.url"),
            ("url = \"ciq.com/x y\"\n", "feeds.url"),
            ("tenant = \"a/b\"\n", "feeds.tenant"),
            ("tlp = []\n", "feeds.tlp"),
            ("interval = \"soon\"\n", "feeds.interval"),
            ("timeout = \"0s\"\n", "feeds.timeout"),
            ("rate = 0.0\n", "feeds.rate"),
            ("since = \"yesterday\"\n", "feeds.since"),
            ("max_document_bytes = 999999999999\n", "feeds.max_document_bytes"),
            ("ca_file = \"/nonexistent/ca.pem\"\n", "feeds.ca_file"),
        ] {
            let base = if extra.starts_with("url") { ok.replace("url = \"ciq.com\"\n", "") } else { ok.to_string() };
            let e = parse(&format!("{base}{extra}")).unwrap().validate().unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("\"ciq\""), "{extra}: {e}");
        }
        let e = parse(&format!("{ok}{ok}")).unwrap().validate().unwrap_err().to_string();
        assert!(e.contains("configured twice"), "{e}");
        let e = parse(&ok.replace("\"ciq\"\nkind", "\"../x\"\nkind")).unwrap().validate().unwrap_err().to_string();
        assert!(e.contains("feeds.name"), "{e}");
        assert_eq!(parse_duration("500ms"), Some(std::time::Duration::from_millis(500)));
        assert_eq!(parse_duration("2d"), Some(std::time::Duration::from_secs(172_800)));
        assert_eq!((parse_duration("5"), parse_duration("s"), parse_duration("5w")), (None, None, None));
        assert_eq!(
            (Tlp::from_label("white"), Tlp::from_label("amber-strict")),
            (Some(Tlp::White), Some(Tlp::AmberStrict))
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let e = parse("[kafka]\ntopik = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("topik"), "{e}");
    }

    #[test]
    fn invalid_value_names_the_key() {
        let mut c = Config::default();
        c.kafka.drain_timeout_ms = c.kafka.session_timeout_ms;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("kafka.drain_timeout_ms"), "{e}");
        let mut c = Config::default();
        c.http.listen = "nope".into();
        assert!(c.validate().unwrap_err().to_string().contains("http.listen"));
        let mut c = Config::default();
        c.consensus.knobs.conflict_threshold = 2.0;
        assert!(c.validate().unwrap_err().to_string().contains("consensus.knobs"));
        let e = parse("[kafka]\nsession_timeout_ms = \"soon\"\n").unwrap_err().to_string();
        assert!(e.contains("session_timeout_ms"), "{e}");
    }

    #[test]
    fn telemetry_is_off_by_default_and_its_keys_are_checked() {
        let c = Config::default();
        assert!(!c.telemetry.export_enabled, "traces are off by default (air gap)");
        assert_eq!(c.telemetry.otlp_endpoint, "http://127.0.0.1:4318");
        let c = parse("[telemetry]\nexport_enabled = true\notlp_endpoint = \"http://collector:4318\"\n").unwrap();
        c.validate().unwrap();
        assert!(c.telemetry.export_enabled);
        let mut c = Config::default();
        c.telemetry.otlp_endpoint = "collector:4318".into();
        assert!(c.validate().unwrap_err().to_string().contains("telemetry.otlp_endpoint"));
        c.telemetry.otlp_endpoint = "https://collector:4318".into();
        c.validate().unwrap();
        c.telemetry.otlp_ca_file = Some("ca.pem".into());
        c.validate().unwrap();
        c.telemetry.otlp_endpoint = "http://collector:4318".into();
        assert!(c.validate().unwrap_err().to_string().contains("telemetry.otlp_ca_file"), "a CA without TLS");
        let mut c = Config::default();
        c.telemetry.sample_ratio = 1.5;
        assert!(c.validate().unwrap_err().to_string().contains("telemetry.sample_ratio"));
    }

    #[test]
    fn kafka_mode_requires_an_hmac_key() {
        let mut c = Config::default();
        c.validate().unwrap();
        c.kafka.brokers = Some("127.0.0.1:9092".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("kafka.observations_hmac_key"), "{e}");
        c.kafka.observations_hmac_key = Some(Secret("too short".into()));
        assert!(c.validate().unwrap_err().to_string().contains("at least 32"));
        c.kafka.observations_hmac_key = Some(Secret("k".repeat(32)));
        c.validate().unwrap();
        assert!(!format!("{c:?}").contains(&"k".repeat(32)), "the secret is not printed");
        let dir = tempfile::tempdir().unwrap();
        c.kafka.observations_hmac_key = None;
        c.kafka.observations_hmac_key_file = Some(dir.path().join("missing"));
        assert!(c.validate().unwrap_err().to_string().contains("kafka.observations_hmac_key_file"));
        std::fs::write(dir.path().join("key"), format!("{}\n", "f".repeat(40))).unwrap();
        c.kafka.observations_hmac_key_file = Some(dir.path().join("key"));
        c.validate().unwrap();
    }

    /// The lookup order: --config, then VEXLENS_CONFIG, then ./config/default.toml (the
    /// working directory of this test is the repository), then built-in defaults; a named
    /// file that does not exist is an error naming where it was named.
    #[test]
    fn config_lookup_order_is_flag_env_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.toml"), dir.path().join("b.toml"));
        std::fs::write(&a, "").unwrap();
        std::fs::write(&b, "").unwrap();
        let l = Config::locate_with(Some(&a), Some(b.clone())).unwrap();
        assert_eq!((l.file.as_deref(), l.source), (Some(a.as_path()), ConfigSource::Flag));
        assert!(l.to_string().contains("--config"), "{l}");
        let l = Config::locate_with(None, Some(b.clone())).unwrap();
        assert_eq!((l.file.as_deref(), l.source), (Some(b.as_path()), ConfigSource::Env));
        assert!(l.to_string().contains("VEXLENS_CONFIG"), "{l}");
        let l = Config::locate_with(None, None).unwrap();
        assert_eq!(l.source, ConfigSource::WorkingDirectory, "the repository has config/default.toml");
        assert_eq!(l.file.as_deref(), Some(Path::new("config/default.toml")));
        let missing = dir.path().join("missing.toml");
        let e = Config::locate_with(None, Some(missing.clone())).unwrap_err().to_string();
        assert!(e.contains("missing.toml") && e.contains("VEXLENS_CONFIG"), "{e}");
        let e = Config::locate_with(Some(&missing), None).unwrap_err().to_string();
        assert!(e.contains("--config"), "{e}");
        let none = ConfigLocation { file: None, source: ConfigSource::BuiltIn };
        assert!(none.to_string().starts_with("built-in defaults"), "{none}");
    }

    #[test]
    fn env_overrides_file_and_ignores_unrelated_variables() {
        // Variable names unique to this test (tests run in parallel threads).
        std::env::set_var("VEXLENS_KAFKA__OBSERVATIONS_TOPIC", "from-env");
        std::env::set_var("VEXLENS_SERVICES_DIR_TEST_ONLY", "/tmp/whatever");
        let fig = Figment::new()
            .merge(Serialized::defaults(Config::default()))
            .merge(Toml::string("[kafka]\nobservations_topic = \"from-file\"\n"))
            .merge(Config::env());
        let c = Config::from_figment(fig).unwrap();
        std::env::remove_var("VEXLENS_KAFKA__OBSERVATIONS_TOPIC");
        std::env::remove_var("VEXLENS_SERVICES_DIR_TEST_ONLY");
        assert_eq!(c.kafka.observations_topic, "from-env");
        assert_eq!(c.kafka.observations_dlq(), "from-env.dlq");
    }
}
