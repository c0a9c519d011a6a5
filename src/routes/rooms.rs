//! Rooms over REST: publish, history, presence and the list of rooms. Every handler checks
//! what the caller may do in the room (its namespace; the API key may do everything), sends
//! the `RoomBroker` a message and renders its reply.

use actix_web::{web, HttpRequest, HttpResponse};
use courier_actors::access::{Action, Denied, Identity};
use courier_actors::protocol::{compact_data, validate_room, MemberView};
use courier_actors::room_broker::{GetHistory, GetPresence, ListRooms, Publish, RoomSummary};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::auth::room_grant_of;
use crate::error::{AppError, ErrorBody};
use crate::routes::access::grant;
use crate::state::AppState;

/// Checks that `who` may do `action` in `room`: 401 or 403 when not.
fn allowed(state: &AppState, who: &Identity, room: &str, action: Action) -> Result<(), AppError> {
    state
        .config
        .realtime
        .session
        .access
        .check(who, room, action)
        .map_err(denied)
}

/// A refusal as the client sees it.
pub fn denied(d: Denied) -> AppError {
    match d {
        Denied::Unauthorized(m) => AppError::Unauthorized(m),
        Denied::Forbidden(m) => AppError::Forbidden(m),
    }
}

/// The header that makes a REST publish idempotent.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Longest idempotency key (a WebSocket publish `id` is bounded alike).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = courier_actors::protocol::MAX_CLIENT_ID_LEN;

/// Rooms `GET /rooms` lists unless `limit` says otherwise.
pub const DEFAULT_ROOMS_LIMIT: usize = 100;
/// Most rooms one `GET /rooms` lists.
pub const MAX_ROOMS_LIMIT: usize = 1000;

/// Events returned by one history request unless `limit` says otherwise.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;
/// Most events one history request returns.
pub const MAX_HISTORY_LIMIT: usize = 1000;

fn room_name(path: web::Path<String>) -> Result<String, AppError> {
    let room = path.into_inner();
    validate_room(&room).map_err(AppError::BadRequest)?;
    Ok(room)
}

/// Who a request for `room` is: the API key, a connection token, a subscription token for
/// `room`, or a guest.
fn room_identity(state: &AppState, req: &HttpRequest, room: &str) -> Result<Identity, AppError> {
    let config = &state.config;
    Ok(room_grant_of(&config.jwt_secret, &config.api_keys, req, room)?.identity)
}

fn broker_down(e: impl std::fmt::Display) -> AppError {
    AppError::Unavailable(format!("the room broker is unavailable: {e}"))
}

/// A message to publish.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    /// Any JSON value; subscribers receive it as the event's `data`.
    #[schema(value_type = Object)]
    data: Box<RawValue>,
}

/// A published message.
#[derive(Debug, Serialize, ToSchema)]
pub struct Published {
    /// The room.
    room: String,
    /// The sequence number the message got.
    seq: u64,
}

/// Publishes to a room, as the room's namespace allows the caller (a user's token, or the
/// server API key, which may publish anywhere). WebSocket and SSE subscribers on every node
/// receive it. With an `Idempotency-Key`, a retry within `IDEMPOTENCY_WINDOW_SECS` answers
/// the first publish's `seq` and publishes nothing: a timeout or a 503 is safe to retry.
#[utoipa::path(
    post, path = "/rooms/{room}/messages", tag = "rooms",
    params(
        ("room" = String, Path, description = "Room name"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: within IDEMPOTENCY_WINDOW_SECS the same key from the same publisher answers the first seq and publishes nothing")
    ),
    request_body = PublishBody,
    responses(
        (status = 201, description = "Published", body = Published),
        (status = 400, description = "Bad room name or body", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The namespace does not allow the caller to publish", body = ErrorBody),
        (status = 413, description = "Message larger than WS_MAX_MESSAGE_BYTES", body = ErrorBody),
        (status = 422, description = "data nested deeper than JSON_MAX_DEPTH", body = ErrorBody),
        (status = 503, description = "Broker overloaded", body = ErrorBody)
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn publish(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<PublishBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let room = room_name(path)?;
    let who = room_identity(&state, &req, &room)?;
    // A publish over REST is always someone's: a user, or the server API.
    if who.user.is_none() && !who.superuser() {
        return Err(crate::auth::AuthError::Missing.into());
    }
    allowed(&state, &who, &room, Action::Publish)?;
    let data = compact_data(body.into_inner().data, state.config.json_max_depth)
        .map_err(AppError::Unprocessable)?;
    let max = state.config.realtime.session.max_message_bytes;
    if data.get().len() > max {
        return Err(AppError::PayloadTooLarge(format!(
            "data is {} bytes; the limit is {max} bytes",
            data.get().len()
        )));
    }
    let key = match req.headers().get(IDEMPOTENCY_KEY) {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_LEN)
                .ok_or_else(|| {
                    AppError::BadRequest(format!(
                        "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
                    ))
                })?;
            // Keys are the publisher's own: the same key from someone else is another message.
            Some(match &who.user {
                Some(user) => format!("u:{user}:{key}"),
                None => format!("s:{key}"),
            })
        }
    };
    let seq = state
        .realtime
        .broker
        .send(Publish {
            key,
            room: room.clone(),
            from: who
                .user
                .clone()
                .unwrap_or_else(|| crate::auth::SERVER_USER.into()),
            user: who.user.clone(),
            data,
            ack: None,
        })
        .await
        .map_err(broker_down)?
        .map_err(|e| AppError::Unavailable(e.to_string()))?;
    Ok(HttpResponse::Created().json(Published { room, seq }))
}

/// Query of `/rooms/{room}/history`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Only events after this sequence number (default 0: from the oldest kept).
    since: Option<u64>,
    /// At most this many, 1–1000 (default 100).
    limit: Option<usize>,
}

/// The room's recent events after `since`, oldest first (`ROOM_HISTORY_SIZE` are kept).
#[utoipa::path(
    get, path = "/rooms/{room}/history", tag = "rooms",
    params(("room" = String, Path, description = "Room name"), HistoryQuery),
    responses(
        (status = 200, description = "`{\"room\": ..., \"events\": [event, ...]}`", body = Object),
        (status = 400, description = "Bad room name or query", body = ErrorBody),
        (status = 401, description = "The namespace needs a token, or the token is invalid", body = ErrorBody),
        (status = 403, description = "The caller may not read the room's history", body = ErrorBody),
        (status = 422, description = "limit out of range", body = ErrorBody),
        (status = 429, description = "The client read too much history lately (REPLAY_BYTES_PER_SEC)", body = ErrorBody)
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
pub async fn history(
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<HistoryQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let room = room_name(path)?;
    allowed(
        &state,
        &room_identity(&state, &req, &room)?,
        &room,
        Action::History,
    )?;
    let limit = q.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
    if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
        return Err(AppError::Unprocessable(format!(
            "limit must be between 1 and {MAX_HISTORY_LIMIT}"
        )));
    }
    // History reads spend the client's replay budget (by address): charged what they send.
    let budget = state.replay_budgets.of(req.peer_addr().map(|a| a.ip()));
    let wait = budget.with(|b| b.wait());
    if !wait.is_zero() {
        return Err(AppError::TooManyRequests(format!(
            "too much history read; try again in {} s",
            wait.as_secs().max(1)
        )));
    }
    let events = state
        .realtime
        .broker
        .send(GetHistory {
            room: room.clone(),
            since: q.since.unwrap_or(0),
            limit,
        })
        .await
        .map_err(broker_down)?;
    // The events are already JSON; join them without parsing them again.
    let mut body = String::with_capacity(64 + events.iter().map(|e| e.len() + 1).sum::<usize>());
    body.push_str("{\"room\":");
    body.push_str(&serde_json::to_string(&room).expect("a string serialises"));
    body.push_str(",\"events\":[");
    for (i, ev) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(ev);
    }
    body.push_str("]}");
    budget.with(|b| b.charge(body.len() as f64));
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// The members of a room.
#[derive(Debug, Serialize, ToSchema)]
pub struct Presence {
    /// The room.
    room: String,
    /// Its members (with Redis: on every node).
    #[schema(value_type = Vec<Object>)]
    members: Vec<MemberView>,
}

/// Who is in the room.
#[utoipa::path(
    get, path = "/rooms/{room}/presence", tag = "rooms",
    params(("room" = String, Path, description = "Room name")),
    responses(
        (status = 200, description = "The room's members", body = Presence),
        (status = 400, description = "Bad room name", body = ErrorBody),
        (status = 401, description = "The namespace needs a token, or the token is invalid", body = ErrorBody),
        (status = 403, description = "The caller may not see the room's members", body = ErrorBody)
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
pub async fn presence(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<web::Json<Presence>, AppError> {
    let room = room_name(path)?;
    allowed(
        &state,
        &room_identity(&state, &req, &room)?,
        &room,
        Action::Presence,
    )?;
    let members = state
        .realtime
        .broker
        .send(GetPresence {
            room: room.clone(),
            reply_to: None,
        })
        .await
        .map_err(broker_down)?;
    Ok(web::Json(Presence { room, members }))
}

/// The rooms the caller may join.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rooms {
    /// Rooms with their member counts and last sequence numbers.
    #[schema(value_type = Vec<Object>)]
    rooms: Vec<RoomSummary>,
    /// `cluster`: members and numbers are every node's (read from Redis; `subscribers`
    /// stays this node's SSE streams); `node`: this node's.
    scope: &'static str,
}

/// Query of `/rooms`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RoomsQuery {
    /// At most this many rooms, 1–1000 (default 100); with Redis, the most recently
    /// active.
    limit: Option<usize>,
}

/// The rooms the caller may join, with member counts and last sequence numbers: with
/// Redis the whole cluster's (`scope: cluster`), else this node's.
#[utoipa::path(
    get, path = "/rooms", tag = "rooms", params(RoomsQuery),
    responses(
        (status = 200, description = "The rooms", body = Rooms),
        (status = 422, description = "limit out of range", body = ErrorBody)
    )
)]
pub async fn list(
    req: HttpRequest,
    q: web::Query<RoomsQuery>,
    state: web::Data<AppState>,
) -> Result<web::Json<Rooms>, AppError> {
    let who = grant(&state, &req)?.identity;
    let limit = q.limit.unwrap_or(DEFAULT_ROOMS_LIMIT);
    if !(1..=MAX_ROOMS_LIMIT).contains(&limit) {
        return Err(AppError::Unprocessable(format!(
            "limit must be between 1 and {MAX_ROOMS_LIMIT}"
        )));
    }
    let access = &state.config.realtime.session.access;
    let list = state
        .realtime
        .broker
        .send(ListRooms { limit })
        .await
        .map_err(broker_down)?;
    let rooms = list
        .rooms
        .into_iter()
        .filter(|r| access.check(&who, &r.room, Action::Subscribe).is_ok())
        .collect();
    Ok(web::Json(Rooms {
        rooms,
        scope: if list.cluster { "cluster" } else { "node" },
    }))
}
