//! Traces: `tracing` spans exported over OTLP/HTTP (protobuf) through `tracing-opentelemetry`,
//! and the W3C trace context (`traceparent`, `tracestate`) carried in message headers.
//!
//! Invariants: off by default (air gap): unless `telemetry.export_enabled` is set, no
//! exporter, tracer provider or OpenTelemetry layer is built, every span is disabled at its
//! call site and nothing is sent anywhere. Spans carry no secrets (no tokens, no HMAC key
//! or tag, no payloads); every attribute value that comes from input is cut to
//! [`MAX_ATTRIBUTE_CHARS`]. An incoming trace context is only ever a parent: one that does
//! not parse is ignored, and it decides nothing but where spans hang in a trace. Fan-out
//! from one span to many (a store batch, an evaluation) is bounded by [`MAX_FAN_OUT`].
//! A failed export is visible to operators (`vex_trace_export_errors_total`, a
//! rate-limited `trace_export_failed` warn line) and never touches the service's work.

use crate::config::TelemetryConfig;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use std::time::Duration;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C trace context headers (lower case; matched case-insensitively).
pub const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// Longest header value read as trace context (a `traceparent` is 55 characters, a
/// `tracestate` at most 512 by the W3C recommendation).
const MAX_HEADER_BYTES: usize = 1024;

/// Longest attribute value taken from input (tenant, artifact, issuer, ...).
pub const MAX_ATTRIBUTE_CHARS: usize = 256;

/// Most child spans or links one span fans out to (a store batch writes for many traces).
pub const MAX_FAN_OUT: usize = 64;

/// The trace exporter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// `telemetry.otlp_endpoint` is not an `http://` or `https://` URL.
    #[error("OTLP endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    /// `telemetry.otlp_ca_file` cannot be read or holds no PEM certificate.
    #[error("OTLP CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    /// The HTTPS client could not be built.
    #[error("OTLP HTTPS client: {0}")]
    Client(String),
    /// The OTLP exporter refused its configuration.
    #[error("OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The OTLP traces URL of a configured endpoint ([`crate::config::otlp_traces_url`]).
pub fn traces_url(endpoint: &str) -> Result<String, TraceError> {
    crate::config::otlp_traces_url(endpoint)
        .map_err(|reason| TraceError::Endpoint { endpoint: endpoint.to_string(), reason })
}

/// The HTTPS client of an `https://` endpoint: rustls with ring (see [`build`]); the
/// server certificate is checked against `telemetry.otlp_ca_file` only when it is set
/// (a private CA), else against the platform's roots.
fn https_client(cfg: &TelemetryConfig, timeout: Duration) -> Result<reqwest::blocking::Client, TraceError> {
    let mut builder = reqwest::blocking::Client::builder().timeout(timeout);
    if let Some(path) = &cfg.otlp_ca_file {
        let err = |reason: String| TraceError::CaFile { path: path.display().to_string(), reason };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("no PEM certificate in it".into()));
        }
        builder = builder.tls_certs_only(certs);
    }
    builder.build().map_err(|e| TraceError::Client(e.to_string()))
}

/// The running trace export; [`TraceExport::shutdown`] (or dropping it) flushes the spans
/// still queued.
pub struct TraceExport {
    provider: Option<SdkTracerProvider>,
}

impl TraceExport {
    /// Exports what is queued and stops the exporter (waits for the export to answer, at
    /// most the exporter's timeout).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                // The subscriber may already be gone: stderr directly.
                eprintln!("vex-lens: trace export shutdown: {e}");
            }
        }
    }
}

impl Drop for TraceExport {
    fn drop(&mut self) {
        self.stop();
    }
}

fn instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host}-{}", std::process::id())
}

/// Builds the OTLP exporter and the tracer provider (batched export on its own thread).
/// Call outside any async runtime (the blocking HTTP client owns one).
pub(crate) fn build(
    cfg: &TelemetryConfig,
) -> Result<(SdkTracerProvider, opentelemetry_sdk::trace::SdkTracer), TraceError> {
    let url = traces_url(&cfg.otlp_endpoint)?;
    // reqwest is built with rustls but without a crypto provider of its own (its default
    // would pull aws-lc): every reqwest client, the exporter's plain-HTTP one included,
    // takes the process-wide provider, ring (already in use; a provider installed before
    // is kept).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let timeout = Duration::from_millis(cfg.export_timeout_ms);
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(timeout);
    if url.starts_with("https://") {
        builder = builder.with_http_client(https_client(cfg, timeout)?);
    }
    let exporter = builder.build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(cfg.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attribute(opentelemetry::KeyValue::new("service.instance.id", instance_id()))
        .build();
    let exporter = Observed { inner: exporter, endpoint: url, failing: Default::default() };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(cfg.sample_ratio))))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("vex-lens");
    Ok((provider, tracer))
}

/// The OTLP exporter with its failures made visible: a failed export is a
/// [`TraceExportFailed`](crate::telemetry::events::TraceExportFailed) event (counter,
/// rate-limited warn line), the first success after failures a
/// [`TraceExportRecovered`](crate::telemetry::events::TraceExportRecovered) one. The
/// result is passed on unchanged (the SDK drops the batch; nothing is retried here).
#[derive(Debug)]
struct Observed<E> {
    inner: E,
    endpoint: String,
    failing: std::sync::atomic::AtomicBool,
}

impl<E: SpanExporter> SpanExporter for Observed<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        use std::sync::atomic::Ordering;
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    crate::telemetry::events::TraceExportRecovered { endpoint: &self.endpoint }.emit();
                }
            }
            Err(e) => {
                self.failing.store(true, Ordering::Relaxed);
                let error = e.to_string();
                crate::telemetry::events::TraceExportFailed { endpoint: &self.endpoint, error: &error, spans }.emit();
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

impl TraceExport {
    pub(crate) fn new(provider: SdkTracerProvider) -> TraceExport {
        TraceExport { provider: Some(provider) }
    }
}

/// A header list read as trace context: only the W3C headers, bounded, UTF-8.
struct Carrier(Vec<(&'static str, String)>);

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        if let Some(k) = TRACE_HEADERS.iter().find(|h| h.eq_ignore_ascii_case(key)) {
            self.0.push((*k, value));
        }
    }
}

/// Whether `name` is a trace context header.
pub fn is_trace_header(name: &str) -> bool {
    TRACE_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// The trace context in `headers` (name, value), if a valid one is there.
pub fn extract<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Option<opentelemetry::Context> {
    let mut carrier = Carrier(Vec::new());
    for (name, value) in headers {
        let Some(&k) = TRACE_HEADERS.iter().find(|h| h.eq_ignore_ascii_case(name)) else { continue };
        if value.len() > MAX_HEADER_BYTES || carrier.0.iter().any(|(x, _)| *x == k) {
            continue;
        }
        if let Ok(v) = std::str::from_utf8(value) {
            carrier.0.push((k, v.trim().to_string()));
        }
    }
    if carrier.0.is_empty() {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes the trace context in `headers` (if valid) the parent of `span` (which must not
/// have been entered yet). Nothing happens when spans are not exported.
pub fn set_remote_parent<'a>(span: &Span, headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) {
    if span.is_disabled() {
        return;
    }
    if let Some(cx) = extract(headers) {
        let _ = span.set_parent(cx);
    }
}

/// The trace context of an incoming message, to forward unchanged onto the messages
/// produced from it while spans are not exported (so that a downstream consumer, or
/// another instance exporting spans, still continues the producer's trace): the
/// `traceparent` as it came (trimmed) when it is a valid one, with its `tracestate`
/// (bounded, UTF-8); empty otherwise (an invalid or missing `traceparent` is not passed on).
pub fn forward<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<(&'static str, String)> {
    let mut found: Vec<(&'static str, &'a [u8])> = Vec::new();
    for (name, value) in headers {
        let Some(&k) = TRACE_HEADERS.iter().find(|h| h.eq_ignore_ascii_case(name)) else { continue };
        if !found.iter().any(|(x, _)| *x == k) {
            found.push((k, value));
        }
    }
    if extract(found.iter().map(|(k, v)| (*k, *v))).is_none() {
        return Vec::new();
    }
    found
        .into_iter()
        .filter(|(_, v)| v.len() <= MAX_HEADER_BYTES)
        .filter_map(|(k, v)| std::str::from_utf8(v).ok().map(|v| (k, v.trim().to_string())))
        .collect()
}

/// `span`'s trace context as headers (`traceparent`, and `tracestate` when set) to write
/// on a message it produces; empty when spans are not exported.
pub fn inject(span: &Span) -> Vec<(&'static str, String)> {
    if span.is_disabled() {
        return Vec::new();
    }
    let mut carrier = Carrier(Vec::new());
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.0
}

/// The OpenTelemetry span context of `span` (none when it is not exported).
pub fn span_context(span: &Span) -> Option<SpanContext> {
    if span.is_disabled() {
        return None;
    }
    let sc = span.context().span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The trace id of `span` as 32 hex digits (none when it is not exported).
pub fn trace_id(span: &Span) -> Option<String> {
    span_context(span).map(|c| c.trace_id().to_string())
}

/// Links `span` to at most [`MAX_FAN_OUT`] of `others` (one per trace); returns how many
/// traces were linked.
pub fn link_traces<'a>(span: &Span, others: impl IntoIterator<Item = &'a Span>) -> usize {
    if span.is_disabled() {
        return 0;
    }
    let mut seen: Vec<TraceId> = Vec::new();
    for o in others {
        if seen.len() >= MAX_FAN_OUT {
            break;
        }
        if let Some(sc) = span_context(o) {
            if !seen.contains(&sc.trace_id()) {
                seen.push(sc.trace_id());
                span.add_link(sc);
            }
        }
    }
    seen.len()
}

/// One span per distinct span among `parents`, at most [`MAX_FAN_OUT`], made by
/// `child(parent)`; empty when spans are not exported.
pub fn one_child_per_parent<'a>(
    parents: impl IntoIterator<Item = &'a Span>,
    mut child: impl FnMut(&Span) -> Span,
) -> Vec<Span> {
    let mut seen: Vec<SpanId> = Vec::new();
    let mut out = Vec::new();
    for p in parents {
        if out.len() >= MAX_FAN_OUT {
            break;
        }
        if let Some(sc) = span_context(p) {
            if !seen.contains(&sc.span_id()) {
                seen.push(sc.span_id());
                out.push(child(p));
            }
        }
    }
    out
}

/// An attribute value from input, cut to [`MAX_ATTRIBUTE_CHARS`] characters.
pub fn bounded(s: &str) -> &str {
    match s.char_indices().nth(MAX_ATTRIBUTE_CHARS) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traces_url_adds_the_standard_path_and_refuses_what_it_cannot_send_to() {
        assert_eq!(traces_url("http://127.0.0.1:4318").unwrap(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://localhost:4318/").unwrap(), "http://localhost:4318/v1/traces");
        assert_eq!(traces_url("http://c:1/otlp/v1/traces").unwrap(), "http://c:1/otlp/v1/traces");
        assert_eq!(traces_url("https://c:4318").unwrap(), "https://c:4318/v1/traces");
        for bad in ["ftp://c:4318", "c:4318", "http://", "http://c", "https://c", "http://:4318", "http://c:port"] {
            assert!(traces_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn extract_reads_a_valid_traceparent_and_ignores_garbage() {
        let cx = extract([("TraceParent", PARENT.as_bytes())]).expect("valid");
        let sc = cx.span().span_context().clone();
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_remote() && sc.is_sampled());
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(extract([("traceparent", bad.as_bytes())]).is_none(), "{bad:?}");
        }
        assert!(extract([("traceparent", &[0xff, 0xfe][..])]).is_none(), "not UTF-8");
        let long = format!("{PARENT}{}", " ".repeat(MAX_HEADER_BYTES));
        assert!(extract([("traceparent", long.as_bytes())]).is_none(), "oversized");
        assert!(extract([("vex-lens-mac", PARENT.as_bytes())]).is_none(), "only the W3C headers");
    }

    #[test]
    fn forward_passes_a_valid_context_on_unchanged_and_nothing_else() {
        let state = "vendor=opaque-value";
        let got = forward([("TraceParent", PARENT.as_bytes()), ("tracestate", state.as_bytes()), ("x", b"y")]);
        assert_eq!(got, vec![("traceparent", PARENT.to_string()), ("tracestate", state.to_string())]);
        assert_eq!(forward([("traceparent", PARENT.as_bytes())]), vec![("traceparent", PARENT.to_string())]);
        // The first of repeated headers is the one read and passed on.
        let other = "00-11111111111111111111111111111111-2222222222222222-01";
        assert_eq!(
            forward([("traceparent", PARENT.as_bytes()), ("traceparent", other.as_bytes())]),
            vec![("traceparent", PARENT.to_string())]
        );
        for bad in ["garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""] {
            assert!(forward([("traceparent", bad.as_bytes()), ("tracestate", state.as_bytes())]).is_empty(), "{bad:?}");
        }
        assert!(forward([("tracestate", state.as_bytes())]).is_empty(), "a tracestate alone is not a context");
        let long = "k=".to_string() + &"v".repeat(MAX_HEADER_BYTES);
        let got = forward([("traceparent", PARENT.as_bytes()), ("tracestate", long.as_bytes())]);
        assert_eq!(got, vec![("traceparent", PARENT.to_string())], "an oversized tracestate is dropped");
    }

    #[test]
    fn without_export_spans_are_disabled_and_nothing_is_injected() {
        // No OpenTelemetry layer in unit tests: spans are disabled, as with export off.
        let span = tracing::info_span!("vex.test");
        set_remote_parent(&span, [("traceparent", PARENT.as_bytes())]);
        assert!(inject(&span).is_empty());
        assert!(span_context(&span).is_none());
        assert_eq!(link_traces(&span, [&span]), 0);
        assert!(one_child_per_parent([&span], |_| tracing::info_span!("child")).is_empty());
    }

    /// With an OpenTelemetry layer (no exporter): the remote parent is adopted, injected
    /// headers carry its trace and the span's own id, fan-out stops at [`MAX_FAN_OUT`].
    #[test]
    fn with_a_layer_the_trace_continues_and_fan_out_is_bounded() {
        use tracing_subscriber::layer::SubscriberExt;
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("vex.test");
            set_remote_parent(&span, [("traceparent", PARENT.as_bytes())]);
            let headers = inject(&span);
            let (name, value) = &headers[0];
            assert_eq!(*name, "traceparent");
            assert!(value.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{value}");
            assert!(!value.contains("00f067aa0ba902b7"), "the span's own id, not the parent's: {value}");
            assert_eq!(trace_id(&span).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
            let roots: Vec<Span> = (0..MAX_FAN_OUT + 10).map(|_| tracing::info_span!(parent: None, "root")).collect();
            let same_trace: Vec<Span> = (0..3).map(|_| tracing::info_span!(parent: &span, "child")).collect();
            let batch = tracing::info_span!(parent: None, "batch");
            assert_eq!(link_traces(&batch, same_trace.iter()), 1, "one link per trace");
            assert_eq!(link_traces(&batch, roots.iter()), MAX_FAN_OUT);
            let twice = same_trace.iter().chain(&same_trace);
            assert_eq!(one_child_per_parent(twice, |p| tracing::info_span!(parent: p, "w")).len(), 3);
            let children =
                one_child_per_parent(same_trace.iter().chain(&roots), |p| tracing::info_span!(parent: p, "w"));
            assert_eq!(children.len(), MAX_FAN_OUT);
            assert_eq!(trace_id(&children[0]), trace_id(&span));
        });
    }

    /// An exporter that fails (or succeeds) as told.
    #[derive(Debug)]
    struct Scripted(std::sync::atomic::AtomicBool);

    impl SpanExporter for Scripted {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            if self.0.load(std::sync::atomic::Ordering::SeqCst) {
                Ok(())
            } else {
                Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure("HTTP export failed: network error".into()))
            }
        }
    }

    #[test]
    fn every_failed_export_is_counted_and_its_result_passed_on() {
        use std::sync::atomic::Ordering;
        let errors = || crate::telemetry::metrics().trace_export_errors.get();
        let logged = || {
            let l = crate::telemetry::LogEventLabel { level: "warn".into(), event: "trace_export_failed".into() };
            crate::telemetry::metrics().log_events.get_or_create(&l).get()
        };
        let exporter = Observed {
            inner: Scripted(Default::default()),
            endpoint: "http://127.0.0.1:9/v1/traces".into(),
            failing: Default::default(),
        };
        let (before, logged_before) = (errors(), logged());
        for _ in 0..3 {
            assert!(futures::executor::block_on(exporter.export(Vec::new())).is_err(), "the failure is passed on");
        }
        assert_eq!(errors() - before, 3, "each failure counts");
        assert!(logged() - logged_before <= 1, "one line a minute at most");
        assert!(exporter.failing.load(Ordering::SeqCst));
        exporter.inner.0.store(true, Ordering::SeqCst);
        assert!(futures::executor::block_on(exporter.export(Vec::new())).is_ok());
        assert!(!exporter.failing.load(Ordering::SeqCst), "recovered");
        assert_eq!(errors() - before, 3);
    }

    #[test]
    fn bounded_cuts_on_a_character_boundary() {
        let s = "é".repeat(MAX_ATTRIBUTE_CHARS + 10);
        assert_eq!(bounded(&s).chars().count(), MAX_ATTRIBUTE_CHARS);
        assert_eq!(bounded("short"), "short");
    }
}
