//! Authentication and tenancy of `/v1`: bearer tokens configured as SHA-256 hashes, each
//! with scopes and the tenants it may act for; the middleware decides the caller (who,
//! which tenant, which scopes) before any handler runs, and the [`Authorized`] extractor
//! checks the scope an endpoint needs.
//!
//! Invariants: a presented token is hashed and compared with EVERY configured hash in
//! constant time (`subtle`), so timing says nothing about which one matched; a missing
//! or unknown token is 401, a known token without the scope or tenant is 403; with no
//! token configured `/v1` answers only on loopback (an IPv4-mapped IPv6 loopback peer,
//! `::ffff:127.0.0.1`, is loopback; tenant `default` unless `X-Tenant` names one), never to
//! a request carrying `Forwarded` or `X-Forwarded-For` (a reverse proxy on the same host
//! would otherwise make every client "loopback": 403), and a presented token is still 401;
//! every `/v1` request acts for exactly one valid tenant name.

use super::error::{ApiError, ErrorCode};
use super::State;
use crate::config::{valid_tenant, ApiConfig, Scope};
use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::net::IpAddr;
use subtle::ConstantTimeEq;

/// Tenant of unauthenticated loopback calls without `X-Tenant`.
pub const DEFAULT_TENANT: &str = "default";

struct TokenEntry {
    name: String,
    hash: [u8; 32],
    scopes: BTreeSet<Scope>,
    tenants: Vec<String>,
}

/// The configured tokens.
pub struct Auth {
    tokens: Vec<TokenEntry>,
}

/// Whether `ip` is a loopback address, an IPv4-mapped IPv6 one (`::ffff:127.0.0.1`, how a
/// listener on `[::]` sees an IPv4 loopback client) included.
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Where a request comes from, as far as the open (token-less) mode cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The TCP peer is a loopback address ([`is_loopback`]).
    pub loopback: bool,
    /// The request carries `Forwarded` or `X-Forwarded-For`: a proxy relayed it, so the
    /// loopback peer says nothing about the client.
    pub forwarded: bool,
}

impl Peer {
    /// A direct loopback client (tests).
    pub const LOOPBACK: Peer = Peer { loopback: true, forwarded: false };
    /// A direct remote client (tests).
    pub const REMOTE: Peer = Peer { loopback: false, forwarded: false };
}

/// Who is calling, for which tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's name, or `loopback` without tokens.
    pub name: String,
    pub tenant: String,
    scopes: BTreeSet<Scope>,
}

impl Caller {
    /// Whether the caller holds `scope` (`vex:admin` holds every scope).
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

impl Auth {
    /// From `[api]` (validated: hashes are 64 hex digits).
    pub fn new(cfg: &ApiConfig) -> Auth {
        let tokens = cfg
            .tokens
            .iter()
            .map(|t| {
                let mut hash = [0u8; 32];
                // validate() guarantees 64 hex digits; a bad one matches nothing.
                let _ = hex::decode_to_slice(&t.sha256, &mut hash);
                TokenEntry {
                    name: t.name.clone(),
                    hash,
                    scopes: t.scopes.iter().copied().collect(),
                    tenants: t.tenants.clone(),
                }
            })
            .collect();
        Auth { tokens }
    }

    /// True when no token is configured (loopback-only mode).
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Decides the caller from the `Authorization` and `X-Tenant` header values and
    /// where the request comes from.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        x_tenant: Option<&[u8]>,
        peer: Peer,
    ) -> Result<Caller, ApiError> {
        let tenant = match x_tenant {
            None => None,
            Some(raw) => match std::str::from_utf8(raw).ok().filter(|t| valid_tenant(t)) {
                Some(t) => Some(t.to_string()),
                None => return Err(ApiError::param("X-Tenant", "must be 1 to 128 of A-Z a-z 0-9 . _ -")),
            },
        };
        let token = match authorization {
            None => None,
            Some(raw) => {
                let v = std::str::from_utf8(raw).unwrap_or("");
                let t = v
                    .strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .map(str::trim)
                    .filter(|t| !t.is_empty());
                match t {
                    Some(t) => Some(t.to_string()),
                    None => {
                        return Err(ApiError::unauthorized(
                            ErrorCode::InvalidToken,
                            "Authorization must be `Bearer <token>`",
                        ))
                    }
                }
            }
        };
        let Some(token) = token else {
            if !self.is_open() {
                return Err(ApiError::unauthorized(ErrorCode::MissingToken, "a bearer token is required"));
            }
            if !peer.loopback {
                return Err(ApiError::forbidden(
                    ErrorCode::LoopbackOnly,
                    "no API tokens are configured: /v1 answers only on loopback",
                ));
            }
            if peer.forwarded {
                return Err(ApiError::forbidden(
                    ErrorCode::LoopbackOnly,
                    "no API tokens are configured: /v1 answers only to direct loopback clients, not to requests \
                     relayed by a proxy (Forwarded / X-Forwarded-For); configure [[api.tokens]]",
                ));
            }
            return Ok(Caller {
                name: "loopback".into(),
                tenant: tenant.unwrap_or_else(|| DEFAULT_TENANT.to_string()),
                scopes: [Scope::Read, Scope::Admin, Scope::Export].into_iter().collect(),
            });
        };
        let presented = crate::domain::canonical::sha256_hex(token.as_bytes());
        let mut presented_hash = [0u8; 32];
        let _ = hex::decode_to_slice(presented, &mut presented_hash);
        // Compare with every entry, without an early exit.
        let mut found: Option<&TokenEntry> = None;
        for entry in &self.tokens {
            if bool::from(entry.hash.ct_eq(&presented_hash)) {
                found = Some(entry);
            }
        }
        let Some(entry) = found else {
            return Err(ApiError::unauthorized(
                ErrorCode::InvalidToken,
                "the bearer token matches no configured token",
            ));
        };
        let tenant = match tenant {
            Some(t) if entry.tenants.contains(&t) => t,
            Some(t) => {
                return Err(ApiError::forbidden(
                    ErrorCode::TenantForbidden,
                    format!("token {:?} may not act for tenant {t:?}", entry.name),
                ))
            }
            None if entry.tenants.len() == 1 => entry.tenants[0].clone(),
            None => {
                return Err(ApiError::param("X-Tenant", "required: the token may act for several tenants"));
            }
        };
        Ok(Caller { name: entry.name.clone(), tenant, scopes: entry.scopes.clone() })
    }
}

/// Middleware of the `/v1` scope: request limits that apply before parsing (query
/// length), then the caller, stored in the request's extensions. A refusal is rendered as
/// the response here (not returned as an error), so the outer middleware sees it.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    match admit(&req) {
        Ok(caller) => {
            tracing::Span::current().record("vex.tenant", crate::telemetry::trace::bounded(&caller.tenant));
            req.extensions_mut().insert(caller);
            Ok(next.call(req).await?.map_into_boxed_body())
        }
        Err(e) => Ok(req.error_response(e)),
    }
}

/// The request's caller, or why it is refused.
fn admit(req: &ServiceRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<State>>()
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, "server state missing"))?;
    if req.query_string().len() > state.api.max_query_bytes {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            ErrorCode::QueryTooLong,
            format!("query: longer than {} bytes", state.api.max_query_bytes),
        ));
    }
    let peer = Peer {
        loopback: req.peer_addr().is_some_and(|a| is_loopback(a.ip())),
        forwarded: req.headers().contains_key("forwarded") || req.headers().contains_key("x-forwarded-for"),
    };
    state.auth.authenticate(
        req.headers().get("authorization").map(|v| v.as_bytes()),
        req.headers().get("x-tenant").map(|v| v.as_bytes()),
        peer,
    )
}

/// A scope an endpoint needs (type-level, so the route table shows it).
pub trait NeedScope {
    const SCOPE: Scope;
}
pub struct Read;
pub struct Admin;
pub struct Export;
impl NeedScope for Read {
    const SCOPE: Scope = Scope::Read;
}
impl NeedScope for Admin {
    const SCOPE: Scope = Scope::Admin;
}
impl NeedScope for Export {
    const SCOPE: Scope = Scope::Export;
}

/// The caller, checked for scope `S` (403 otherwise).
pub struct Authorized<S: NeedScope>(pub Caller, PhantomData<S>);

impl<S: NeedScope> std::ops::Deref for Authorized<S> {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl<S: NeedScope> FromRequest for Authorized<S> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let caller = req.extensions().get::<Caller>().cloned();
        std::future::ready(match caller {
            None => Err(ApiError::unauthorized(ErrorCode::MissingToken, "not authenticated")),
            Some(c) if c.allows(S::SCOPE) => Ok(Authorized(c, PhantomData)),
            Some(c) => Err(ApiError::forbidden(
                ErrorCode::InsufficientScope,
                format!("{:?} lacks scope {}", c.name, S::SCOPE.as_str()),
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiToken;

    fn auth() -> Auth {
        let token = |name: &str, secret: &str, scopes: Vec<Scope>, tenants: &[&str]| ApiToken {
            name: name.into(),
            sha256: crate::domain::canonical::sha256_hex(secret.as_bytes()),
            scopes,
            tenants: tenants.iter().map(|t| t.to_string()).collect(),
        };
        Auth::new(&ApiConfig {
            tokens: vec![
                token("reader", "r-secret", vec![Scope::Read], &["acme"]),
                token("multi", "m-secret", vec![Scope::Read, Scope::Export], &["acme", "globex"]),
                token("admin", "a-secret", vec![Scope::Admin], &["acme"]),
            ],
            ..ApiConfig::default()
        })
    }

    fn code(r: Result<Caller, ApiError>) -> (u16, ErrorCode) {
        let e = r.unwrap_err();
        (e.status.as_u16(), e.code)
    }

    #[test]
    fn tokens_decide_caller_tenant_and_status() {
        let a = auth();
        let c = a.authenticate(Some(b"Bearer r-secret"), None, Peer::REMOTE).unwrap();
        assert_eq!((c.name.as_str(), c.tenant.as_str()), ("reader", "acme"), "the token's only tenant");
        assert!(c.allows(Scope::Read) && !c.allows(Scope::Export) && !c.allows(Scope::Admin));
        assert_eq!(
            code(a.authenticate(None, None, Peer::LOOPBACK)),
            (401, ErrorCode::MissingToken),
            "loopback needs it too"
        );
        assert_eq!(code(a.authenticate(Some(b"Bearer nope"), None, Peer::LOOPBACK)), (401, ErrorCode::InvalidToken));
        assert_eq!(code(a.authenticate(Some(b"Basic abc"), None, Peer::LOOPBACK)), (401, ErrorCode::InvalidToken));
        assert_eq!(
            code(a.authenticate(Some(b"Bearer r-secret"), Some(b"globex"), Peer::LOOPBACK)),
            (403, ErrorCode::TenantForbidden)
        );
        assert_eq!(
            code(a.authenticate(Some(b"Bearer m-secret"), None, Peer::LOOPBACK)),
            (400, ErrorCode::InvalidParameter),
            "a token of several tenants must name one"
        );
        let c = a.authenticate(Some(b"Bearer m-secret"), Some(b"globex"), Peer::REMOTE).unwrap();
        assert_eq!(c.tenant, "globex");
        let admin = a.authenticate(Some(b"Bearer a-secret"), None, Peer::REMOTE).unwrap();
        assert!(admin.allows(Scope::Read) && admin.allows(Scope::Export), "admin holds every scope");
        assert_eq!(
            code(a.authenticate(Some(b"Bearer r-secret"), Some(b"../etc"), Peer::LOOPBACK)),
            (400, ErrorCode::InvalidParameter)
        );
    }

    #[test]
    fn without_tokens_only_loopback_is_served() {
        let a = Auth::new(&ApiConfig::default());
        assert!(a.is_open());
        let c = a.authenticate(None, None, Peer::LOOPBACK).unwrap();
        assert_eq!(c.tenant, DEFAULT_TENANT);
        assert_eq!(a.authenticate(None, Some(b"t1"), Peer::LOOPBACK).unwrap().tenant, "t1");
        assert_eq!(code(a.authenticate(None, None, Peer::REMOTE)), (403, ErrorCode::LoopbackOnly));
        assert_eq!(
            code(a.authenticate(Some(b"Bearer anything"), None, Peer::LOOPBACK)),
            (401, ErrorCode::InvalidToken),
            "a presented token that matches none is 401 even without tokens"
        );
        let proxied = Peer { loopback: true, forwarded: true };
        assert_eq!(code(a.authenticate(None, None, proxied)), (403, ErrorCode::LoopbackOnly), "a local proxy");
        let c = auth().authenticate(Some(b"Bearer r-secret"), None, proxied).unwrap();
        assert_eq!(c.name, "reader", "with tokens a proxied request is judged by its token");
    }

    #[test]
    fn ipv4_mapped_loopback_is_loopback() {
        for (ip, want) in [
            ("127.0.0.1", true),
            ("127.3.4.5", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:127.9.0.1", true),
            ("::ffff:10.0.0.1", false),
            ("10.0.0.1", false),
            ("::", false),
            ("fe80::1", false),
        ] {
            assert_eq!(is_loopback(ip.parse().unwrap()), want, "{ip}");
        }
    }
}
