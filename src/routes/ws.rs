//! The WebSocket endpoints: `/ws`, `/ws/authenticated`, `/ws/chat/{client_id}`
//! and `/ws/json` with the room protocol.
//!
//! Each accepted socket gets a bounded outbound queue and a `WsSession` actor. Through the
//! server's upgrade handler ([`crate::upgrade`]) the socket then leaves the HTTP layer: a
//! connection driver writes the queue and feeds the session what the client sends. Called
//! without the upgrade handler (the application in a test), the queue's reader is the
//! response body and the session reads the request body. A socket refused for
//! authentication is upgraded and closed at once with 1008 and a reason; an upgrade from
//! an origin that is not allowed is refused with 403 before it is upgraded.
//!
//! Who a client is comes from its token (`?token=` or `Authorization: Bearer`) or the API
//! key; without either it is a guest, shown as `guest-<name>`, never under a name a user
//! could hold. A client with a token is shown under its token's user.

use std::sync::Arc;

use actix::{Actor, AsyncContext};
use actix_http::ws::{hash_key, verify_handshake, CloseCode};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use courier_actors::access::{Grant, Identity};
use courier_actors::client_queue::{queue, OutFrame, WsBody};
use courier_actors::ws_frames::{BodyStream, WsFrames};
use courier_actors::ws_session::{SessionKind, WsSession};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::{self, AuthError};
use crate::error::{AppError, ErrorBody};
use crate::state::AppState;
use crate::upgrade::{inbound, HandOff, InboundSender};

/// Query of the WebSocket endpoints.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WsQuery {
    /// A JWT from `courier token` (also accepted as `Authorization: Bearer`).
    #[allow(dead_code)]
    token: Option<String>,
    /// The display name of a client without a token (1–64 characters); it is shown as
    /// `guest-<name>`. Clients with a token are shown under their token's user.
    name: Option<String>,
}

/// The 101 response for a valid handshake. Through the upgrade handler
/// ([`crate::upgrade`]) the socket goes to `outbound` and `inbound` by its hand-off and the
/// response has no body; otherwise the response body carries `outbound`.
fn upgrade(
    req: &HttpRequest,
    outbound: WsBody,
    inbound: Option<InboundSender>,
) -> Result<HttpResponse, AppError> {
    verify_handshake(req.head())
        .map_err(|e| AppError::BadRequest(format!("expected a WebSocket upgrade: {e}")))?;
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| AppError::BadRequest("missing Sec-WebSocket-Key".into()))?;
    let accept = header::HeaderValue::from_bytes(&hash_key(key.as_bytes()))
        .map_err(|_| AppError::BadRequest("bad Sec-WebSocket-Key".into()))?;
    let mut response = HttpResponse::build(StatusCode::SWITCHING_PROTOCOLS);
    response
        .upgrade("websocket")
        .insert_header((header::SEC_WEBSOCKET_ACCEPT, accept));
    Ok(match HandOff::of(req) {
        Some(hand_off) if hand_off.full() => {
            return Err(AppError::Unavailable(
                "this server holds as many WebSockets as it may; try again later".into(),
            ))
        }
        Some(hand_off) => {
            hand_off.accept(outbound, inbound);
            response.finish()
        }
        None => response.streaming(outbound),
    })
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
    upgrade(req, WsBody::new(reader), None)
}

/// Refuses (403) an upgrade whose `Origin` is not allowed: `WS_ALLOWED_ORIGINS`, or by
/// default the server's own origin and `CORS_ALLOWED_ORIGINS`. Requests without `Origin`
/// (clients that are not browsers) are allowed.
fn check_origin(req: &HttpRequest, state: &AppState) -> Result<(), AppError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let allowed = state
        .config
        .ws_origins
        .as_ref()
        .unwrap_or(&state.config.cors_origins);
    if allowed.allows(origin, host) {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!(
            "WebSocket connections from the origin {origin:?} are not allowed (WS_ALLOWED_ORIGINS)"
        )))
    }
}

/// The name a guest is shown under: `guest-<name>` for a `?name=`, else `guest-<hex>`; a
/// guest can never be shown under a name a user could hold.
fn guest_name(state: &AppState, name: Option<&str>) -> Result<Arc<str>, AppError> {
    match name {
        Some(name) => {
            let name = name.strip_prefix(auth::GUEST_PREFIX).unwrap_or(name);
            auth::validate_display_name(name).map_err(|_| {
                AppError::BadRequest(format!(
                    "name must be 1-{} printable characters",
                    auth::MAX_USER_NAME_LEN
                ))
            })?;
            Ok(format!("{}{name}", auth::GUEST_PREFIX).into())
        }
        None => Ok(format!("{}{:04x}", auth::GUEST_PREFIX, state.realtime.next_number()).into()),
    }
}

/// The name a client with `grant` is shown under: its user, `server` for the API key, or a
/// guest name.
fn display_name(state: &AppState, grant: &Grant, name: Option<&str>) -> Result<Arc<str>, AppError> {
    match &grant.identity.user {
        Some(user) => Ok(user.clone()),
        None if grant.identity.api_key => Ok(auth::SERVER_USER.into()),
        None => guest_name(state, name),
    }
}

/// Accepts the socket and starts its session.
fn accept(
    req: &HttpRequest,
    body: web::Payload,
    state: &AppState,
    name: Arc<str>,
    grant: Grant,
    kind: SessionKind,
) -> Result<HttpResponse, AppError> {
    let rt = &state.realtime;
    let (out, reader) = queue(rt.queue_limits);
    // What the client sends: from the upgraded socket, or from the request body.
    let (sender, received): (_, BodyStream) = match HandOff::of(req) {
        Some(_) => {
            let (sender, received) = inbound();
            (Some(sender), Box::pin(received))
        }
        None => (None, Box::pin(body)),
    };
    let response = upgrade(req, WsBody::new(reader), sender)?;
    let session = WsSession::new(
        rt.next_member_id(),
        name,
        grant,
        kind,
        out,
        rt.broker.clone(),
        rt.session.clone(),
        rt.metrics.clone(),
    );
    let frames = WsFrames::new(received, state.config.realtime.session.max_message_bytes);
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
        (status = 400, description = "Not a WebSocket upgrade", body = ErrorBody),
        (status = 403, description = "The `Origin` is not allowed (WS_ALLOWED_ORIGINS)", body = ErrorBody)
    )
)]
pub async fn ws_echo(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    check_origin(&req, &state)?;
    let grant = Grant {
        identity: Identity::guest(),
        expires_at: None,
    };
    accept(
        &req,
        body,
        &state,
        "anonymous".into(),
        grant,
        SessionKind::Echo,
    )
}

/// Authenticated: `Welcome <name>`, then each frame comes back as `<name>: <text>`.
#[utoipa::path(
    get, path = "/ws/authenticated", tag = "realtime", params(WsQuery),
    responses(
        (status = 101, description = "WebSocket; a missing or bad token is closed with 1008 and a reason"),
        (status = 400, description = "Not a WebSocket upgrade", body = ErrorBody),
        (status = 403, description = "The `Origin` is not allowed (WS_ALLOWED_ORIGINS)", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn ws_authenticated(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    check_origin(&req, &state)?;
    let Some(token) = auth::token_from_request(&req) else {
        return refuse(
            &req,
            &state,
            CloseCode::Policy,
            &AuthError::Missing.to_string(),
        );
    };
    match auth::connection_grant(&state.config.jwt_secret, &token) {
        Ok(grant) => {
            let name = display_name(&state, &grant, None)?;
            accept(&req, body, &state, name, grant, SessionKind::Authenticated)
        }
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
        (status = 400, description = "Not a WebSocket upgrade, or a bad client id", body = ErrorBody),
        (status = 403, description = "The `Origin` is not allowed (WS_ALLOWED_ORIGINS)", body = ErrorBody)
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
pub async fn ws_chat(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    check_origin(&req, &state)?;
    let client_id = path.into_inner();
    auth::validate_display_name(&client_id)
        .map_err(|_| AppError::BadRequest("client_id must be 1-64 printable characters".into()))?;
    match auth::grant_of(&state.config.jwt_secret, &state.config.api_keys, &req) {
        Ok(grant) => {
            let name = display_name(&state, &grant, Some(&client_id))?;
            accept(&req, body, &state, name, grant, SessionKind::Chat)
        }
        Err(e) => refuse(&req, &state, CloseCode::Policy, &truncate(&e.to_string())),
    }
}

/// The JSON protocol: `ping`, `message`, and rooms (`join`, `leave`, `publish`, `presence`,
/// `typing`).
#[utoipa::path(
    get, path = "/ws/json", tag = "realtime", params(WsQuery),
    responses(
        (status = 101, description = "WebSocket speaking the JSON room protocol; a bad token is closed with 1008"),
        (status = 400, description = "Not a WebSocket upgrade, or a bad name", body = ErrorBody),
        (status = 403, description = "The `Origin` is not allowed (WS_ALLOWED_ORIGINS)", body = ErrorBody)
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
pub async fn ws_json(
    req: HttpRequest,
    body: web::Payload,
    query: web::Query<WsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    check_origin(&req, &state)?;
    match auth::grant_of(&state.config.jwt_secret, &state.config.api_keys, &req) {
        Ok(grant) => {
            let name = display_name(&state, &grant, query.name.as_deref())?;
            accept(&req, body, &state, name, grant, SessionKind::Json)
        }
        Err(e) => refuse(&req, &state, CloseCode::Policy, &truncate(&e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;
    use actix_web::{HttpMessage as _, ResponseError as _};
    use courier_actors::client_queue::QueueLimits;

    use super::*;

    fn handshake_through(hand_off: &HandOff) -> HttpRequest {
        let req = TestRequest::get()
            .uri("/ws")
            .insert_header((header::UPGRADE, "websocket"))
            .insert_header((header::CONNECTION, "Upgrade"))
            .insert_header((header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ=="))
            .insert_header((header::SEC_WEBSOCKET_VERSION, "13"))
            .to_http_request();
        req.extensions_mut().insert(hand_off.clone());
        req
    }

    fn outbound() -> WsBody {
        let limits = QueueLimits {
            messages: 8,
            bytes: 1024,
        };
        WsBody::new(queue(limits).1)
    }

    #[actix_rt::test]
    async fn a_server_holding_its_most_websockets_answers_503_and_takes_nothing() {
        let full = HandOff::new(true);
        let refused = upgrade(&handshake_through(&full), outbound(), None).unwrap_err();
        assert_eq!(refused.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!full.accepted());

        let room = HandOff::new(false);
        let accepted = upgrade(&handshake_through(&room), outbound(), None).unwrap();
        assert_eq!(accepted.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert!(
            room.accepted(),
            "the socket's halves are left in the hand-off"
        );
    }
}
