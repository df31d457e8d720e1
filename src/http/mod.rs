//! HTTP server of `vex-lens serve`: health, status and metrics (open), the OpenAPI
//! document (`/openapi.json`, open) and the `/v1` API (authenticated, tenant-scoped):
//! consensus, explain, history, the change stream (SSE), conflicts, exports, trust weights,
//! trust changes and simulate, the feeds, one module per resource.
//!
//! Invariants: every `/v1` route passes the auth middleware (caller and tenant decided
//! before any handler) and answers errors as `{"error": {"code", "message"}}`; every
//! served route is in [`ROUTES`] and in the OpenAPI document (a test checks both ways);
//! no handler blocks the server. Every request but the health checks and `/metrics` is
//! one `vex.http.request` span (kind server; parent: the request's `traceparent`, if any);
//! no header value (tokens) is recorded.

pub mod auth;
pub mod conflicts;
pub mod consensus;
pub mod error;
pub mod exports;
pub mod feeds;
pub mod health;
pub mod limits;
pub mod params;
pub mod stream;
pub mod trust;

use crate::actors::export_job::ExportJobActor;
use crate::config::ApiConfig;
use crate::domain::trust::Policy;
use crate::ports::Stores;
use crate::trust::TrustService;
use actix_web::{middleware, web, App, HttpResponse, HttpServer};
use serde::Serialize;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

/// An extra readiness check (e.g. Kafka broker metadata): `Err(reason)` when not ready.
pub type ReadinessCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// The OpenAPI 3.1 document of this API (`docs/openapi.json`), served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// Every served route (method, OpenAPI path template).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/health/liveness"),
    ("get", "/health/readiness"),
    ("get", "/metrics"),
    ("get", "/status"),
    ("get", "/openapi.json"),
    ("get", "/v1/vex/consensus"),
    ("get", "/v1/vex/consensus/explain"),
    ("get", "/v1/vex/consensus/history"),
    ("get", "/v1/vex/consensus/stream"),
    ("get", "/v1/vex/conflicts"),
    ("post", "/v1/vex/export"),
    ("get", "/v1/vex/exports"),
    ("get", "/v1/vex/exports/{id}"),
    ("get", "/v1/vex/exports/{id}/files/{name}"),
    ("get", "/v1/vex/trust/weights"),
    ("put", "/v1/vex/trust/issuers/{id}"),
    ("put", "/v1/vex/trust/policy"),
    ("post", "/v1/vex/simulate"),
    ("get", "/v1/vex/feeds"),
];

/// What `/status` reports.
#[derive(Clone, Debug, Serialize)]
pub struct StatusInfo {
    pub version: &'static str,
    pub commit: Option<&'static str>,
    /// `kafka` or `embedded`.
    pub mode: &'static str,
    /// `mongodb` or `embedded`.
    pub store: &'static str,
    pub feature_flags: std::collections::BTreeMap<&'static str, bool>,
    /// The configuration file and issuer directory this run uses (`None` in tests).
    pub config: Option<ConfigStatus>,
    /// The feeds this instance runs: names and health only (`[]`: none).
    pub feeds: crate::sources::feeds::FeedsHealth,
}

/// Where the configuration came from (`/status`): which file (or the built-in defaults)
/// and which issuer directory (or none: every issuer unknown).
#[derive(Clone, Debug, Serialize)]
pub struct ConfigStatus {
    /// The file (`null`: built-in defaults).
    pub file: Option<String>,
    /// `flag`, `env`, `working_directory` or `built_in`.
    pub source: crate::config::ConfigSource,
    /// `consensus.issuers_file` as configured.
    pub issuers_file: String,
    /// Whether that file was found and loaded (else no issuer is known).
    pub issuers_loaded: bool,
    /// Issuers in the loaded directory.
    pub issuers: usize,
}

/// What the server needs.
pub struct ServerDeps {
    /// The store, one handle per role (each handler uses the roles it reads).
    pub stores: Stores,
    pub broker: Option<ReadinessCheck>,
    pub status: StatusInfo,
    pub export: Option<actix::Addr<ExportJobActor>>,
    /// Where export jobs write (`<dir>/<job id>/`).
    pub export_dir: PathBuf,
    /// Trust changes and the live per-tenant policies the actors run (explain and
    /// simulate recompute with them).
    pub trust: Arc<TrustService>,
    pub api: ApiConfig,
    /// HTTP worker threads (`http.workers`).
    pub workers: usize,
    /// The configured feeds and their states (`GET /v1/vex/feeds`).
    pub feeds: feeds::FeedsView,
}

/// Shared state of the handlers.
pub struct State {
    pub stores: Stores,
    pub broker: Option<ReadinessCheck>,
    pub status: StatusInfo,
    pub export: Option<actix::Addr<ExportJobActor>>,
    pub export_dir: PathBuf,
    pub trust: Arc<TrustService>,
    pub auth: auth::Auth,
    pub api: ApiConfig,
    /// Change streams open now (bounded by `api.max_streams`, per tenant and per token).
    pub streams: stream::OpenStreams,
    /// Per-tenant rates of export jobs and simulate.
    pub rates: limits::Rates,
    /// The configured feeds and their states (`GET /v1/vex/feeds`).
    pub feeds: feeds::FeedsView,
}

impl State {
    /// The policy `tenant` is evaluated with now (its trust changes included).
    pub fn policy_for(&self, tenant: &str) -> Arc<Policy> {
        self.trust.policies().for_tenant(tenant)
    }
}

/// The route template of [`ROUTES`] that `path` matches (`{x}` matches one segment).
fn route_template(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    ROUTES.iter().map(|(_, t)| *t).find(|t| {
        let parts: Vec<&str> = t.split('/').collect();
        parts.len() == segments.len()
            && parts.iter().zip(&segments).all(|(p, s)| p == s || (p.starts_with('{') && !s.is_empty()))
    })
}

/// A request's correlation id (the `X-Correlation-Id` it sent when usable, else one
/// minted for it), in the request's extensions and on every response.
#[derive(Clone, Debug)]
pub struct CorrelationId(pub String);

/// The correlation id header of requests and responses.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// Gives the request its correlation id ([`CorrelationId`]; echoed on the response, the
/// auth middleware's refusals included) and runs it inside its `vex.http.request` span, named
/// `<METHOD> <route template>` (health checks and `/metrics`, polled all the time, are
/// not traced).
async fn trace_request(
    req: actix_web::dev::ServiceRequest,
    next: middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    use actix_web::HttpMessage;
    use tracing::Instrument;
    let correlation = req
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::telemetry::correlation::accept)
        .unwrap_or_else(crate::telemetry::correlation::mint);
    req.extensions_mut().insert(CorrelationId(correlation.clone()));
    // The auth middleware renders its refusals as responses, so they carry the id too.
    let with_id = |result: Result<actix_web::dev::ServiceResponse<_>, actix_web::Error>| {
        let mut resp = result?.map_into_boxed_body();
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&correlation) {
            resp.headers_mut().insert(actix_web::http::header::HeaderName::from_static(CORRELATION_HEADER), v);
        }
        Ok(resp)
    };
    let path = req.path();
    if path.starts_with("/health/") || path == "/metrics" {
        return with_id(next.call(req).await);
    }
    // The template, never the raw path: ids stay out of span names.
    let route = route_template(path).unwrap_or("unmatched");
    let span = tracing::info_span!(
        "vex.http.request",
        otel.name = format!("{} {route}", req.method()).as_str(),
        otel.kind = "server",
        http.request.method = req.method().as_str(),
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        vex.tenant = tracing::field::Empty,
        vex.correlation_id = crate::telemetry::trace::bounded(&correlation),
        vex.outcome = tracing::field::Empty,
    );
    crate::telemetry::trace::set_remote_parent(&span, req.headers().iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
    let result = next.call(req).instrument(span.clone()).await;
    if !span.is_disabled() {
        let status = match &result {
            Ok(r) => r.status(),
            Err(e) => e.as_response_error().status_code(),
        };
        span.record("http.response.status_code", status.as_u16());
        span.record("vex.outcome", if status.is_server_error() { "error" } else { "ok" });
    }
    with_id(result)
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(OPENAPI)
}

/// The application (also used by in-process tests).
pub fn app(
    state: web::Data<State>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let max_body = state.api.max_body_bytes;
    let res = |path: &str| web::resource(path.to_string()).default_service(web::to(error::method_not_allowed));
    App::new()
        .wrap(middleware::from_fn(trace_request))
        .app_data(state)
        .app_data(web::JsonConfig::default().limit(max_body).error_handler(error::json_error))
        .app_data(web::PathConfig::default().error_handler(error::path_error))
        .app_data(web::QueryConfig::default().error_handler(params::query_error))
        .service(res("/health/liveness").route(web::get().to(health::liveness)))
        .service(res("/health/readiness").route(web::get().to(health::readiness)))
        .service(res("/metrics").route(web::get().to(health::metrics_text)))
        .service(res("/status").route(web::get().to(health::status)))
        .service(res("/openapi.json").route(web::get().to(openapi)))
        .service(
            web::scope("/v1")
                .wrap(middleware::from_fn(auth::middleware))
                .service(res("/vex/consensus").route(web::get().to(consensus::get)))
                .service(res("/vex/consensus/explain").route(web::get().to(consensus::explain)))
                .service(res("/vex/consensus/history").route(web::get().to(consensus::history)))
                .service(res("/vex/consensus/stream").route(web::get().to(stream::stream)))
                .service(res("/vex/conflicts").route(web::get().to(conflicts::list)))
                .service(res("/vex/export").route(web::post().to(exports::run)))
                .service(res("/vex/exports").route(web::get().to(exports::list)))
                .service(res("/vex/exports/{id}").route(web::get().to(exports::get)))
                .service(res("/vex/exports/{id}/files/{name}").route(web::get().to(exports::download)))
                .service(res("/vex/trust/weights").route(web::get().to(trust::weights)))
                .service(res("/vex/trust/issuers/{id}").route(web::put().to(trust::put_issuer)))
                .service(res("/vex/trust/policy").route(web::put().to(trust::put_policy)))
                .service(res("/vex/simulate").route(web::post().to(trust::simulate)))
                .service(res("/vex/feeds").route(web::get().to(feeds::list)))
                .default_service(web::to(error::not_found)),
        )
        .default_service(web::to(error::not_found))
}

/// Binds `listen` and returns the server (to spawn) and the bound address. With no token
/// configured, an address that is not loopback is refused (an error naming the address
/// and the ways out) unless `api.allow_unauthenticated_remote`.
pub fn serve(listen: &str, deps: ServerDeps) -> std::io::Result<(actix_web::dev::Server, std::net::SocketAddr)> {
    let auth = auth::Auth::new(&deps.api);
    if auth.is_open() && !deps.api.allow_unauthenticated_remote {
        let addrs = std::net::ToSocketAddrs::to_socket_addrs(listen)?;
        if let Some(a) = addrs.into_iter().find(|a| !auth::is_loopback(a.ip())) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "refusing to listen on {a} (not a loopback address) with no API tokens configured: configure \
                     [[api.tokens]], listen on 127.0.0.1, or set api.allow_unauthenticated_remote = true (then /v1 \
                     still answers only to direct loopback clients; health, /metrics and /status answer everyone)"
                ),
            ));
        }
    }
    if auth.is_open() {
        crate::warn_event!(
            crate::telemetry::events::LogEvent::ApiLoopbackOnly,
            "no API tokens configured ([api.tokens]): /v1 answers only on loopback, tenant `default` unless X-Tenant names one"
        );
    } else {
        tracing::info!(event = "api_tokens", tokens = deps.api.tokens.len(), "API bearer tokens configured");
    }
    let state = web::Data::new(State {
        stores: deps.stores,
        broker: deps.broker,
        status: deps.status,
        export: deps.export,
        export_dir: deps.export_dir,
        trust: deps.trust,
        auth,
        api: deps.api,
        streams: stream::OpenStreams::default(),
        rates: limits::Rates::default(),
        feeds: deps.feeds,
    });
    let server = HttpServer::new(move || app(state.clone()))
        .on_connect(stream::on_connect)
        .workers(deps.workers.max(1))
        .disable_signals()
        .shutdown_timeout(2)
        .bind(listen)?;
    let addr = server.addrs().first().copied().ok_or_else(|| std::io::Error::other("no address bound"))?;
    Ok((server.run(), addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn documented() -> BTreeSet<(String, String)> {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("docs/openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let mut out = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for method in ops.as_object().expect("operations").keys() {
                if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                    out.insert((method.clone(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn the_openapi_document_names_exactly_the_served_routes() {
        let served: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        assert_eq!(documented(), served);
    }

    /// Every route of [`ROUTES`] is served by [`app`] (none falls to the unknown-route
    /// handler), so the two-way check above covers what the server really serves.
    #[actix_web::test]
    async fn every_listed_route_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::of(Arc::new(crate::stores::embedded::EmbeddedStore::open(dir.path()).unwrap()));
        let policies = Arc::new(crate::trust::Policies::new(Policy::default()));
        let state = web::Data::new(State {
            stores: stores.clone(),
            broker: None,
            status: StatusInfo {
                version: "test",
                commit: None,
                mode: "embedded",
                store: "embedded",
                feature_flags: Default::default(),
                config: None,
                feeds: Default::default(),
            },
            export: None,
            export_dir: dir.path().join("exports"),
            trust: Arc::new(TrustService::new(stores.trust, stores.observations, policies, None, 0)),
            auth: auth::Auth::new(&ApiConfig::default()),
            api: ApiConfig::default(),
            streams: stream::OpenStreams::default(),
            rates: limits::Rates::default(),
            feeds: Default::default(),
        });
        let app = actix_web::test::init_service(app(state)).await;
        for (method, path) in ROUTES {
            let uri = path.replace("{id}", "1-0").replace("{name}", "manifest.json");
            let req = match *method {
                "post" => actix_web::test::TestRequest::post().set_json(serde_json::json!({})),
                "put" => actix_web::test::TestRequest::put().set_json(serde_json::json!({})),
                _ => actix_web::test::TestRequest::get(),
            }
            .uri(&uri)
            .peer_addr("127.0.0.1:40000".parse().unwrap())
            .to_request();
            let resp = actix_web::test::call_service(&app, req).await;
            let status = resp.status();
            if path.ends_with("/stream") {
                // An open event stream: its body never ends.
                assert_eq!(status, 200, "{method} {path}");
                assert_eq!(resp.headers().get("content-type").unwrap(), "text/event-stream");
                continue;
            }
            let body = actix_web::test::read_body(resp).await;
            let text = String::from_utf8_lossy(&body);
            assert!(!text.contains("no such route"), "{method} {path} is not served: {status} {text}");
            assert_ne!(status, 405, "{method} {path}: {text}");
        }
        assert_eq!(
            route_template("/v1/vex/exports/1-0/files/manifest.json"),
            Some("/v1/vex/exports/{id}/files/{name}")
        );
        assert_eq!(route_template("/v1/vex/exports/1-0"), Some("/v1/vex/exports/{id}"));
        assert_eq!(route_template("/v1/vex/exports//files/x"), None);
        assert_eq!(route_template("/v1/vex/nope"), None);
        let req = actix_web::test::TestRequest::get().uri("/v1/vex/nope").peer_addr("127.0.0.1:1".parse().unwrap());
        let resp = actix_web::test::call_service(&app, req.to_request()).await;
        assert_eq!(resp.status(), 404);
    }

    fn test_state(api: ApiConfig) -> (tempfile::TempDir, web::Data<State>) {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::of(Arc::new(crate::stores::embedded::EmbeddedStore::open(dir.path()).unwrap()));
        let policies = Arc::new(crate::trust::Policies::new(Policy::default()));
        let state = web::Data::new(State {
            stores: stores.clone(),
            broker: None,
            status: StatusInfo {
                version: "test",
                commit: None,
                mode: "embedded",
                store: "embedded",
                feature_flags: Default::default(),
                config: None,
                feeds: Default::default(),
            },
            export: None,
            export_dir: dir.path().join("exports"),
            trust: Arc::new(TrustService::new(stores.trust, stores.observations, policies, None, 0)),
            auth: auth::Auth::new(&api),
            api,
            streams: stream::OpenStreams::default(),
            rates: limits::Rates::default(),
            feeds: Default::default(),
        });
        (dir, state)
    }

    /// Without tokens: an IPv4 loopback client of a `[::]` listener (an IPv4-mapped
    /// address) is served; a request relayed by a proxy on the same host is not.
    #[actix_web::test]
    async fn open_mode_serves_mapped_loopback_and_refuses_proxied_requests() {
        let (_dir, state) = test_state(ApiConfig::default());
        let app = actix_web::test::init_service(app(state)).await;
        let call = |peer: &str, header: Option<(&'static str, &'static str)>| {
            let mut req = actix_web::test::TestRequest::get().uri("/v1/vex/conflicts").peer_addr(peer.parse().unwrap());
            if let Some(h) = header {
                req = req.insert_header(h);
            }
            req.to_request()
        };
        for (peer, header, want) in [
            ("127.0.0.1:4000", None, 200),
            ("[::1]:4000", None, 200),
            ("[::ffff:127.0.0.1]:4000", None, 200),
            ("[::ffff:192.0.2.7]:4000", None, 403),
            ("192.0.2.7:4000", None, 403),
            ("127.0.0.1:4000", Some(("X-Forwarded-For", "192.0.2.7")), 403),
            ("127.0.0.1:4000", Some(("Forwarded", "for=192.0.2.7")), 403),
            ("[::ffff:127.0.0.1]:4000", Some(("x-forwarded-for", "127.0.0.1")), 403),
        ] {
            // The middleware's refusals are errors (rendered by the server into responses).
            let (status, body) = match actix_web::test::try_call_service(&app, call(peer, header)).await {
                Ok(resp) => (resp.status().as_u16(), actix_web::test::read_body(resp).await),
                Err(e) => {
                    let resp = e.error_response();
                    (resp.status().as_u16(), actix_web::body::to_bytes(resp.into_body()).await.unwrap_or_default())
                }
            };
            assert_eq!(status, want, "{peer} {header:?}: {}", String::from_utf8_lossy(&body));
            if want == 403 {
                assert!(String::from_utf8_lossy(&body).contains("loopback_only"));
            }
        }
    }

    /// Without tokens, a non-loopback listen address is refused unless allowed; loopback
    /// addresses (and any address with tokens) start.
    #[actix_web::test]
    async fn open_mode_refuses_a_remote_bind_unless_allowed() {
        let deps = |api: ApiConfig| {
            let (dir, state) = test_state(api.clone());
            let s = state.into_inner();
            (
                dir,
                ServerDeps {
                    stores: s.stores.clone(),
                    broker: None,
                    status: s.status.clone(),
                    export: None,
                    export_dir: s.export_dir.clone(),
                    trust: s.trust.clone(),
                    api,
                    workers: 1,
                    feeds: Default::default(),
                },
            )
        };
        for listen in ["0.0.0.0:0", "[::]:0"] {
            let (_d, dp) = deps(ApiConfig::default());
            let e = serve(listen, dp).err().unwrap_or_else(|| panic!("{listen} was bound without tokens"));
            let text = e.to_string();
            assert!(
                text.contains("not a loopback address") && text.contains("api.allow_unauthenticated_remote"),
                "{text}"
            );
            let (_d, dp) = deps(ApiConfig { allow_unauthenticated_remote: true, ..ApiConfig::default() });
            let (server, _) = serve(listen, dp).unwrap();
            drop(server);
        }
        for listen in ["127.0.0.1:0", "[::1]:0", "localhost:0"] {
            let (_d, dp) = deps(ApiConfig::default());
            match serve(listen, dp) {
                Ok((server, _)) => drop(server),
                // A host without IPv6 cannot bind [::1]; the refusal is what must not happen.
                Err(e) => assert!(!e.to_string().contains("not a loopback"), "{listen}: {e}"),
            }
        }
        let token = crate::config::ApiToken {
            name: "t".into(),
            sha256: "0".repeat(64),
            scopes: vec![crate::config::Scope::Read],
            tenants: vec!["acme".into()],
        };
        let (_d, dp) = deps(ApiConfig { tokens: vec![token], ..ApiConfig::default() });
        let (server, _) = serve("0.0.0.0:0", dp).unwrap();
        drop(server);
    }
}
