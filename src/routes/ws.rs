//! The WebSocket endpoints: `/ws`, `/ws/authenticated`, `/ws/chat/{client_id}`
//! and `/ws/json` with the room protocol.
//!
//! Each accepted socket gets a bounded outbound queue whose receiving end is the response
//! body, and a `WsSession` actor fed by the decoded request body. A socket refused for
//! authentication is upgraded and closed at once with 1008 and a reason.

use std::sync::Arc;

use actix::{Actor, AsyncContext};
use actix_http::ws::{hash_key, verify_handshake, CloseCode};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use courier_actors::client_queue::{queue, OutFrame, WsBody};
use courier_actors::ws_frames::WsFrames;
use courier_actors::ws_session::{SessionKind, WsSession};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::{self, AuthError};
use crate::error::{AppError, ErrorBody};
use crate::state::AppState;

/// Query of the WebSocket endpoints.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WsQuery {
    /// A JWT from `courier token` (also accepted as `Authorization: Bearer`).
    #[allow(dead_code)]
    token: Option<String>,
    /// `/ws/json` only: the name of an anonymous client (1–64 characters).
    name: Option<String>,
}

/// The 101 response for a valid handshake, its body fed by `stream`.
fn upgrade(req: &HttpRequest, stream: WsBody) -> Result<HttpResponse, AppError> {
    verify_handshake(req.head())
        .map_err(|e| AppError::BadRequest(format!("expected a WebSocket upgrade: {e}")))?;
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| AppError::BadRequest("missing Sec-WebSocket-Key".into()))?;
    let accept = header::HeaderValue::from_bytes(&hash_key(key.as_bytes()))
        .map_err(|_| AppError::BadRequest("bad Sec-WebSocket-Key".into()))?;
    Ok(HttpResponse::build(StatusCode::SWITCHING_PROTOCOLS)
        .upgrade("websocket")
        .insert_header((header::SEC_WEBSOCKET_ACCEPT, accept))
        .streaming(stream))
}

/// Accepts the socket and closes it at once with `code` and `reason`.
fn refuse(
    req: &HttpRequest,
    state: &AppState,
    code: CloseCode,
    reason: &str,
) -> Result<HttpResponse, AppError> {
    let (out, reader) = queue(state.realtime.queue_limits);
    let _ = out.try_send(OutFrame::Close(code, reason.to_owned()));
    upgrade(req, WsBody::new(reader))
}

/// Accepts the socket and starts its session.
fn accept(
    req: &HttpRequest,
    body: web::Payload,
    state: &AppState,
    name: Arc<str>,
    authenticated: bool,
    kind: SessionKind,
) -> Result<HttpResponse, AppError> {
    let rt = &state.realtime;
    let (out, reader) = queue(rt.queue_limits);
    let response = upgrade(req, WsBody::new(reader))?;
    let session = WsSession::new(
        rt.next_member_id(),
        name,
        authenticated,
        kind,
        out,
        rt.broker.clone(),
        rt.session.clone(),
        rt.metrics.clone(),
    );
    let frames = WsFrames::new(
        Box::pin(body),
        state.config.realtime.session.max_message_bytes,
    );
    WsSession::create(move |ctx| {
        ctx.add_stream(frames);
        session
    });
    Ok(response)
}

/// Echo: each text frame comes back as `Echo: <text>`.
#[utoipa::path(
    get, path = "/ws", tag = "realtime",
    responses(
        (status = 101, description = "WebSocket: each text frame comes back as `Echo: <text>`"),
        (status = 400, description = "Not a WebSocket upgrade", body = ErrorBody)
    )
)]
pub async fn ws_echo(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    accept(
        &req,
        body,
        &state,
        "anonymous".into(),
        false,
        SessionKind::Echo,
    )
}

/// Authenticated: `Welcome <name>`, then each frame comes back as `<name>: <text>`.
#[utoipa::path(
    get, path = "/ws/authenticated", tag = "realtime", params(WsQuery),
    responses(
        (status = 101, description = "WebSocket; a missing or bad token is closed with 1008 and a reason"),
        (status = 400, description = "Not a WebSocket upgrade", body = ErrorBody)
    )
)]
pub async fn ws_authenticated(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    match auth::user_from_request(&state.config.jwt_secret, &req) {
        Ok(Some(claims)) => accept(
            &req,
            body,
            &state,
            claims.sub.into(),
            true,
            SessionKind::Authenticated,
        ),
        Ok(None) => refuse(
            &req,
            &state,
            CloseCode::Policy,
            &AuthError::Missing.to_string(),
        ),
        Err(e) => refuse(&req, &state, CloseCode::Policy, &truncate(&e.to_string())),
    }
}

/// Close reasons must fit a control frame (123 bytes).
fn truncate(reason: &str) -> String {
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// The shared chat: everyone sees `Client <id> joined the chat`, `Client <id>: <text>` and
/// `Client <id> left the chat` (the room `chat`).
#[utoipa::path(
    get, path = "/ws/chat/{client_id}", tag = "realtime",
    params(("client_id" = String, Path, description = "The client's name in the chat, 1-64 characters")),
    responses(
        (status = 101, description = "WebSocket in the shared chat room"),
        (status = 400, description = "Not a WebSocket upgrade, or a bad client id", body = ErrorBody)
    )
)]
pub async fn ws_chat(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let client_id = path.into_inner();
    auth::validate_name(&client_id)
        .map_err(|_| AppError::BadRequest("client_id must be 1-64 printable characters".into()))?;
    accept(
        &req,
        body,
        &state,
        client_id.into(),
        false,
        SessionKind::Chat,
    )
}

/// The JSON protocol: `ping`, `message`, and rooms (`join`, `leave`, `publish`, `presence`,
/// `typing`).
#[utoipa::path(
    get, path = "/ws/json", tag = "realtime", params(WsQuery),
    responses(
        (status = 101, description = "WebSocket speaking the JSON room protocol; a bad token is closed with 1008"),
        (status = 400, description = "Not a WebSocket upgrade, or a bad name", body = ErrorBody)
    )
)]
pub async fn ws_json(
    req: HttpRequest,
    body: web::Payload,
    query: web::Query<WsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    match auth::user_from_request(&state.config.jwt_secret, &req) {
        Ok(Some(claims)) => accept(
            &req,
            body,
            &state,
            claims.sub.into(),
            true,
            SessionKind::Json,
        ),
        Ok(None) => {
            let name = match &query.name {
                Some(name) => {
                    auth::validate_name(name).map_err(|_| {
                        AppError::BadRequest("name must be 1-64 printable characters".into())
                    })?;
                    name.clone()
                }
                None => format!("guest-{}", state.realtime.next_number()),
            };
            accept(&req, body, &state, name.into(), false, SessionKind::Json)
        }
        Err(e) => refuse(&req, &state, CloseCode::Policy, &truncate(&e.to_string())),
    }
}
