//! The one error type handlers return, and the one JSON error shape clients see.
//!
//! Every error response has the body
//! `{"error": {"code": "...", "message": "...", "request_id": "..."}}`.
//! Handlers return [`AppError`]; extractor failures are mapped to it by the configs in
//! [`extractor_configs`]; anything else that produces a 4xx/5xx (unknown routes, wrong
//! methods, errors raised inside actix) is rewritten into the same shape by the telemetry
//! middleware, which also fills in `request_id`.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

/// An error a handler can return; each variant maps to one HTTP status and code.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// Authentication is missing or invalid (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The resource does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request body arrived too slowly (408).
    #[error("{0}")]
    RequestTimeout(String),
    /// The resource already exists or the state forbids the change (409).
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than allowed (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body's media type is not one the route reads (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request is well formed but a value is out of range or invalid (422).
    #[error("{0}")]
    Unprocessable(String),
    /// The caller is over a rate limit (429).
    #[error("{0}")]
    TooManyRequests(String),
    /// An upstream answered with an error or an unusable body (502).
    #[error("{0}")]
    BadGateway(String),
    /// A dependency is down or unreachable, or the server is too busy (503).
    #[error("{0}")]
    Unavailable(String),
    /// There is no room to store what was sent (507).
    #[error("{0}")]
    InsufficientStorage(String),
    /// An upstream or statement did not answer in time (504).
    #[error("{0}")]
    GatewayTimeout(String),
    /// A bug or unexpected failure (500); the detail is logged, not shown unless `APP_DEBUG`.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// The stable, machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::RequestTimeout(_) => "request_timeout",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Unprocessable(_) => "unprocessable_entity",
            Self::TooManyRequests(_) => "too_many_requests",
            Self::BadGateway(_) => "bad_gateway",
            Self::Unavailable(_) => "service_unavailable",
            Self::InsufficientStorage(_) => "insufficient_storage",
            Self::GatewayTimeout(_) => "gateway_timeout",
            Self::Internal(_) => "internal_error",
        }
    }

    /// The message shown to the client.
    pub fn public_message(&self) -> String {
        match self {
            Self::Internal(_) => "internal server error".to_owned(),
            other => other.to_string(),
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            Self::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        // The telemetry middleware re-renders this with the request id; this body is what a
        // caller sees if the error is rendered outside it.
        error_response(
            self.status_code(),
            self.code(),
            &self.public_message(),
            None,
        )
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `bad_gateway`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The request's id, as in the `X-Request-Id` response header.
    pub request_id: Option<String>,
}

/// Renders an error response in the one JSON shape.
pub fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: Option<&str>,
) -> HttpResponse {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
            request_id: request_id.map(str::to_owned),
        },
    };
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .body(serde_json::to_vec(&body).unwrap_or_default())
}

/// The code used for an error status that did not come from an [`AppError`].
pub fn code_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        406 => "not_acceptable",
        408 => "request_timeout",
        409 => "conflict",
        411 => "length_required",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        416 => "range_not_satisfiable",
        422 => "unprocessable_entity",
        429 => "too_many_requests",
        431 => "request_header_fields_too_large",
        501 => "not_implemented",
        502 => "bad_gateway",
        503 => "service_unavailable",
        504 => "gateway_timeout",
        507 => "insufficient_storage",
        s if s >= 500 => "internal_error",
        _ => "client_error",
    }
}

/// Extractor configurations that turn every extractor failure into an [`AppError`].
pub fn extractor_configs(
    max_body_bytes: usize,
) -> (
    web::JsonConfig,
    web::QueryConfig,
    web::PathConfig,
    web::PayloadConfig,
) {
    let json = web::JsonConfig::default()
        .limit(max_body_bytes)
        .error_handler(|err, _req: &HttpRequest| {
            use actix_web::error::JsonPayloadError as E;
            let app = match &err {
                E::OverflowKnownLength { length, limit } => AppError::PayloadTooLarge(format!(
                    "request body is {length} bytes; the limit is {limit} bytes"
                )),
                E::Overflow { limit } => AppError::PayloadTooLarge(format!(
                    "request body is larger than the limit of {limit} bytes"
                )),
                E::ContentType => AppError::UnsupportedMediaType(
                    "expected a JSON body with Content-Type: application/json".to_owned(),
                ),
                E::Deserialize(e) if e.is_data() => {
                    AppError::Unprocessable(format!("invalid JSON body: {e}"))
                }
                E::Deserialize(e) => AppError::BadRequest(format!("malformed JSON body: {e}")),
                E::Payload(e) if is_body_timeout(e) => AppError::RequestTimeout(e.to_string()),
                other => AppError::BadRequest(format!("could not read the JSON body: {other}")),
            };
            app.into()
        });
    let query = web::QueryConfig::default().error_handler(|err, _req| {
        AppError::BadRequest(format!("invalid query string: {err}")).into()
    });
    let path = web::PathConfig::default().error_handler(|err, _req| {
        AppError::BadRequest(format!("invalid path parameter: {err}")).into()
    });
    let payload = web::PayloadConfig::default().limit(max_body_bytes);
    (json, query, path, payload)
}

/// Whether a body read failed because the body arrived too slowly (see
/// [`crate::body_deadline`]).
pub fn is_body_timeout(e: &actix_web::error::PayloadError) -> bool {
    matches!(e, actix_web::error::PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

impl From<courier_actors::blocking::PoolBusy> for AppError {
    fn from(e: courier_actors::blocking::PoolBusy) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<courier_actors::db::DbError> for AppError {
    fn from(e: courier_actors::db::DbError) -> Self {
        use courier_actors::db::DbError as D;
        match e {
            D::Unavailable(m) => Self::Unavailable(m),
            D::Timeout(limit) => Self::GatewayTimeout(format!(
                "the database did not finish the statement within {} ms",
                limit.as_millis()
            )),
            D::Conflict(m) => Self::Conflict(m),
            D::Invalid(m) => Self::Unprocessable(m),
            D::NotFound(m) => Self::NotFound(m),
            D::Internal(m) => Self::Internal(m),
        }
    }
}
