//! The HTTP adapter of the feed source: GETs over HTTPS (reqwest's async client on rustls
//! with the ring provider, as the OTLP exporter; the feed's `ca_file` as the only roots
//! when set), conditional when validators are known, at most `rate` requests per second,
//! each bounded by `timeout`, bodies bounded by a byte limit.
//!
//! Invariants: redirects are never followed (a 3xx is an answer, refused by the caller);
//! there is no way to turn certificate checks off; transient failures (connection,
//! timeout, truncated body, 5xx, 429) are retried with the service's one schedule
//! (`crate::backoff`) a bounded number of times, a 429's `Retry-After` honoured up to
//! [`MAX_RETRY_AFTER`]; every response is counted by status in [`Counters`].

use crate::ports::feed_state::Validators;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The longest wait a `Retry-After` can ask for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Attempts at one request before its failure is the caller's.
pub const ATTEMPTS: u32 = 4;

/// What the requests of one feed counted: responses by status (`200`, `304`, `404`, ...,
/// `error` for no response), so the run's summary and the metrics
/// (`vex_feed_requests_total`, `vex_feed_bytes_total`) see the same numbers.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    feed: String,
    by_status: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Counters {
    fn add(&self, status: &str) {
        *self.by_status.lock().expect("counters").entry(status.to_string()).or_default() += 1;
        let label = crate::telemetry::FeedStatusLabel { feed: self.feed.clone(), status: status.to_string() };
        crate::telemetry::metrics().feed_requests.get_or_create(&label).inc();
    }
    fn bytes(&self, n: usize) {
        let label = crate::telemetry::FeedLabel { feed: self.feed.clone() };
        crate::telemetry::metrics().feed_bytes.get_or_create(&label).inc_by(n as u64);
    }
    /// Responses by status since the last `take`.
    pub fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.by_status.lock().expect("counters"))
    }
}

/// A successful answer.
#[derive(Debug)]
pub enum Got {
    /// 200, with the validators of the body.
    Body { bytes: Vec<u8>, validators: Validators },
    /// 304: the validators still hold.
    NotModified,
    /// 404 (or 410).
    NotFound,
}

/// A request that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Still failing after [`ATTEMPTS`] (connection, timeout, truncated body, 5xx, 429).
    #[error("{url}: {detail}")]
    Transient { url: String, detail: String },
    /// A redirect (not followed).
    #[error("{url}: redirect to {location:?} not followed")]
    Redirect { url: String, location: String },
    /// The body is larger than allowed.
    #[error("{url}: larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    /// Any other status.
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
}

impl FetchError {
    /// The reason code a document rejected for this error is counted under.
    pub fn code(&self) -> &'static str {
        match self {
            FetchError::Transient { .. } => "fetch_failed",
            FetchError::Redirect { .. } => "redirect",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::Status { .. } => "http_status",
        }
    }
}

/// The client of one feed.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    interval: Duration,
    next_slot: Arc<tokio::sync::Mutex<Instant>>,
    pub counters: Counters,
    retry_initial: Duration,
}

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("feeds.ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("HTTPS client: {0}")]
    Client(String),
}

impl Fetcher {
    /// A client trusting `ca_file` only when given (else the platform's roots), at most
    /// `rate` requests per second, each within `timeout`.
    pub fn new(
        feed: &str,
        ca_file: Option<&std::path::Path>,
        rate: f64,
        timeout: Duration,
    ) -> Result<Fetcher, ClientError> {
        // rustls' process-wide provider: ring (a provider installed before wins).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .https_only(true)
            .user_agent(concat!("vex-lens/", env!("CARGO_PKG_VERSION"), " (CSAF feed)"));
        if let Some(path) = ca_file {
            let err = |reason: String| ClientError::CaFile { path: path.display().to_string(), reason };
            let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
            if certs.is_empty() {
                return Err(err("no PEM certificate in it".into()));
            }
            builder = builder.tls_certs_only(certs);
        }
        let client = builder.build().map_err(|e| ClientError::Client(e.to_string()))?;
        Ok(Fetcher {
            client,
            interval: Duration::from_secs_f64(1.0 / rate),
            next_slot: Arc::new(tokio::sync::Mutex::new(Instant::now())),
            counters: Counters { feed: feed.to_string(), by_status: Arc::default() },
            retry_initial: Duration::from_millis(200),
        })
    }

    /// Waits for the next request slot (`rate`).
    async fn pace(&self) {
        let mut slot = self.next_slot.lock().await;
        let now = Instant::now();
        let at = (*slot).max(now);
        *slot = at + self.interval;
        drop(slot);
        tokio::time::sleep_until(at).await;
    }

    /// GETs `url` (conditionally when `validators` are given), retrying transient
    /// failures; bodies over `limit` bytes are refused.
    pub async fn get(&self, url: &str, validators: Option<&Validators>, limit: usize) -> Result<Got, FetchError> {
        let mut delays = crate::backoff::delays(self.retry_initial, Duration::from_secs(5));
        let mut attempt = 1;
        loop {
            let (err, wait) = match self.once(url, validators, limit).await {
                Ok(got) => return Ok(got),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Retry { detail, retry_after }) => (detail, retry_after),
            };
            if attempt >= ATTEMPTS {
                return Err(FetchError::Transient {
                    url: url.to_string(),
                    detail: format!("{attempt} attempts; last: {err}"),
                });
            }
            let delay = match wait {
                Some(w) => w.min(MAX_RETRY_AFTER),
                None => delays.next().unwrap_or(Duration::from_secs(5)),
            };
            crate::warn_event!(crate::telemetry::events::LogEvent::FeedRequestRetry, url = %url, attempt, error = %err, delay_ms = delay.as_millis() as u64, "feed request failed; retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn once(&self, url: &str, validators: Option<&Validators>, limit: usize) -> Result<Got, Attempt> {
        self.pace().await;
        let mut req = self.client.get(url);
        if let Some(v) = validators {
            if let Some(e) = &v.etag {
                req = req.header(reqwest::header::IF_NONE_MATCH, e);
            }
            if let Some(m) = &v.last_modified {
                req = req.header(reqwest::header::IF_MODIFIED_SINCE, m);
            }
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.counters.add("error");
                return Err(Attempt::Retry { detail: error_chain(&e), retry_after: None });
            }
        };
        let status = resp.status();
        self.counters.add(status.as_str());
        let header = |r: &reqwest::Response, h: reqwest::header::HeaderName| {
            r.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_string)
        };
        match status.as_u16() {
            200 => {}
            304 => return Ok(Got::NotModified),
            404 | 410 => return Ok(Got::NotFound),
            300..=399 => {
                let location = header(&resp, reqwest::header::LOCATION).unwrap_or_default();
                return Err(Attempt::Final(FetchError::Redirect { url: url.to_string(), location }));
            }
            429 => {
                let wait = retry_after(header(&resp, reqwest::header::RETRY_AFTER).as_deref(), self.retry_initial);
                return Err(Attempt::Retry { detail: "HTTP 429".into(), retry_after: Some(wait) });
            }
            500..=599 => return Err(Attempt::Retry { detail: format!("HTTP {}", status.as_u16()), retry_after: None }),
            s => return Err(Attempt::Final(FetchError::Status { url: url.to_string(), status: s })),
        }
        let too_large = || Attempt::Final(FetchError::TooLarge { url: url.to_string(), limit });
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let validators = Validators {
            etag: header(&resp, reqwest::header::ETAG),
            last_modified: header(&resp, reqwest::header::LAST_MODIFIED),
        };
        let mut bytes = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if bytes.len() + c.len() > limit {
                        return Err(too_large());
                    }
                    self.counters.bytes(c.len());
                    bytes.extend_from_slice(&c);
                }
                Ok(None) => break,
                // A connection closed before the announced length, a timeout: transient.
                Err(e) => {
                    return Err(Attempt::Retry { detail: format!("body: {}", error_chain(&e)), retry_after: None })
                }
            }
        }
        Ok(Got::Body { bytes, validators })
    }
}

/// The wait a 429 asks for: its `Retry-After` in seconds, at most [`MAX_RETRY_AFTER`];
/// `fallback` when the header is absent or not a number of seconds (an HTTP date is not
/// read).
fn retry_after(header: Option<&str>, fallback: Duration) -> Duration {
    header
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(fallback, |secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

enum Attempt {
    Retry { detail: String, retry_after: Option<Duration> },
    Final(FetchError),
}

/// An error and its sources, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 429's `Retry-After` is waited for, capped at [`MAX_RETRY_AFTER`] (a provider asking
    /// for an hour does not stall the feed); without a usable value, the fallback.
    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let fallback = Duration::from_millis(250);
        assert_eq!(retry_after(Some("1"), fallback), Duration::from_secs(1));
        assert_eq!(retry_after(Some(" 7 "), fallback), Duration::from_secs(7));
        assert_eq!(retry_after(Some("60"), fallback), MAX_RETRY_AFTER);
        assert_eq!(retry_after(Some("3600"), fallback), MAX_RETRY_AFTER);
        assert_eq!(retry_after(Some("18446744073709551615"), fallback), MAX_RETRY_AFTER);
        assert_eq!(retry_after(None, fallback), fallback);
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT"), fallback), fallback);
        assert_eq!(retry_after(Some("-5"), fallback), fallback);
    }
}
