//! The API's one error shape: `{"error": {"code", "message"}}` with the matching HTTP
//! status, for every `/v1` failure (handlers, extractors, auth, unknown routes).
//!
//! Invariants: a code is an [`ErrorCode`] (closed set, serialised snake_case); a store
//! or internal failure never leaks more than its message; 5xx only for the store or an
//! actor being unavailable.

use crate::ports::StoreError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// Machine-readable error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A query parameter, header or body field is missing or invalid (the message names it).
    InvalidParameter,
    /// The body is not valid JSON for the endpoint.
    InvalidBody,
    BodyTooLarge,
    QueryTooLong,
    /// No bearer token (tokens are configured).
    MissingToken,
    /// A bearer token that matches none.
    InvalidToken,
    /// The token lacks the scope the endpoint needs.
    InsufficientScope,
    /// The token may not act for the tenant.
    TenantForbidden,
    /// No tokens configured and the caller is not on loopback.
    LoopbackOnly,
    NotFound,
    MethodNotAllowed,
    /// The store (or an actor) is unavailable: retry.
    Unavailable,
    /// The export job failed (its record says why).
    ExportFailed,
    /// The export matched no record and its format cannot be empty (OpenVEX).
    NothingToExport,
    /// Too many admin changes for the tenant (`Retry-After` says when to retry).
    RateLimited,
    /// The resource changed concurrently (e.g. another instance's trust change): retry.
    Conflict,
    Internal,
}

/// An API error.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// `Retry-After` (seconds) of a 429.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after_secs: None }
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        ApiError {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, message)
        }
    }

    /// 400 naming the bad parameter.
    pub fn param(name: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidParameter, format!("{name}: {reason}"))
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, what)
    }

    pub fn forbidden(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn unauthorized(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) | StoreError::Internal(m) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                format!("store unavailable: {m}"),
            ),
            StoreError::Rejected(m) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, format!("store: {m}"))
            }
        }
    }
}

/// The JSON body of an error.
pub fn body(code: ErrorCode, message: &str) -> serde_json::Value {
    serde_json::json!({ "error": { "code": code, "message": message } })
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            r.insert_header(("WWW-Authenticate", "Bearer realm=\"vex-lens\""));
        }
        if let Some(secs) = self.retry_after_secs {
            r.insert_header(("Retry-After", secs.to_string()));
        }
        r.json(body(self.code, &self.message))
    }
}

/// Error handler of the JSON body extractor: 413 when too large, else 400.
pub fn json_error(err: actix_web::error::JsonPayloadError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    match err {
        J::OverflowKnownLength { .. } | J::Overflow { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::BodyTooLarge, err.to_string()).into()
        }
        J::ContentType => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidBody,
            "body: Content-Type must be application/json",
        )
        .into(),
        other => ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidBody, format!("body: {other}")).into(),
    }
}

/// Error handler of the path extractor.
pub fn path_error(err: actix_web::error::PathError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::param("path", err).into()
}

/// Unknown routes.
pub async fn not_found() -> HttpResponse {
    ApiError::not_found("no such route").error_response()
}

/// A known route with another method.
pub async fn method_not_allowed() -> HttpResponse {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed, "method not allowed on this route")
        .error_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_the_documented_shape() {
        let e = ApiError::param("page_size", "must be in 1..=1000");
        let r = e.error_response();
        assert_eq!(r.status(), 400);
        let v = body(e.code, &e.message);
        assert_eq!(v["error"]["code"], "invalid_parameter");
        assert_eq!(v["error"]["message"], "page_size: must be in 1..=1000");
        let e: ApiError = StoreError::Unavailable("down".into()).into();
        assert_eq!(e.status, 503);
        let r = ApiError::unauthorized(ErrorCode::MissingToken, "x").error_response();
        assert!(r.headers().contains_key("www-authenticate"));
    }
}
