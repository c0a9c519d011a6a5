//! Server-Sent Events: `/sse`, `/sse/updates` and `/sse/heartbeat`, and each
//! room as a resumable stream at `/rooms/{room}/events`.
//!
//! Every stream is a bounded queue drained by the response body, with a keep-alive comment
//! when quiet. When the client goes away the body is dropped and the subscriber is removed
//! from its actor at once.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use courier_actors::access::{unix_now, Action};
use courier_actors::client_queue::{queue, SseBody};
use courier_actors::protocol::{validate_room, MAX_EPOCH_LEN};
use courier_actors::room_broker::{Disconnect, EventFormat, Join, Subscriber};
use courier_actors::sse_feed::{Subscribe, Topic, Unsubscribe};
use futures_util::stream;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::room_grant_of;
use crate::error::{AppError, ErrorBody};
use crate::routes::rooms::denied;
use crate::state::AppState;

/// How long an EventSource waits before reconnecting (sent as `retry:`).
pub const SSE_RETRY_MS: u64 = 3000;
/// The last event of a room stream whose token expired; the client reconnects with a
/// fresh token (and `Last-Event-ID`, so nothing is missed).
pub const TOKEN_EXPIRED_EVENT: &str =
    "event: error\ndata: {\"code\":\"token_expired\",\"message\":\"the token expired: reconnect with a fresh one\"}\n\n";
/// An SSE event id, `<epoch>:<seq>` or a bare `<seq>`: the epoch (if any) and the seq.
pub fn parse_event_id(id: &str) -> Option<(Option<String>, u64)> {
    let id = id.trim();
    match id.rsplit_once(':') {
        Some((epoch, seq)) => Some((Some(epoch.to_owned()), seq.parse().ok()?)),
        None => Some((None, id.parse().ok()?)),
    }
}

/// Default number of `/sse` messages.
pub const DEFAULT_SSE_COUNT: u32 = 10;
/// Most `/sse` messages a client may ask for.
pub const MAX_SSE_COUNT: u32 = 1000;

/// A `text/event-stream` response with `body`: not cached, and not buffered by proxies
/// (`X-Accel-Buffering: no`), so every event reaches the client as it is written. Every
/// SSE stream of the server is answered through this.
pub fn event_stream<S, E>(body: S) -> HttpResponse
where
    S: futures_util::Stream<Item = Result<web::Bytes, E>> + 'static,
    E: Into<Box<dyn std::error::Error>> + 'static,
{
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

/// Query of `/sse`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SseQuery {
    /// Messages to send, 1–1000 (default 10).
    count: Option<u32>,
    /// Milliseconds between messages, 0–10000 (default `SSE_DEMO_INTERVAL_MS`, 1000).
    interval_ms: Option<u64>,
}

/// A demo stream: ten `message` events, `Message 0` … `Message 9`, one per second.
#[utoipa::path(
    get, path = "/sse", tag = "realtime", params(SseQuery),
    responses(
        (status = 200, description = "text/event-stream of `message` events", content_type = "text/event-stream"),
        (status = 422, description = "count or interval out of range", body = ErrorBody)
    )
)]
pub async fn sse_demo(
    q: web::Query<SseQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let count = q.count.unwrap_or(DEFAULT_SSE_COUNT);
    if !(1..=MAX_SSE_COUNT).contains(&count) {
        return Err(AppError::Unprocessable(format!(
            "count must be between 1 and {MAX_SSE_COUNT}"
        )));
    }
    let interval = match q.interval_ms {
        Some(ms) if ms > 10_000 => {
            return Err(AppError::Unprocessable(
                "interval_ms must be between 0 and 10000".into(),
            ))
        }
        Some(ms) => Duration::from_millis(ms),
        None => state.config.realtime.sse_demo_interval,
    };
    let gauge = state.realtime.metrics.sse_connections.clone();
    gauge.inc();
    let guard = GaugeGuard(gauge);
    let closing = state.closing.clone();
    let events = stream::unfold(
        (0u32, guard, closing),
        move |(i, guard, mut closing)| async move {
            if i >= count || *closing.borrow() {
                return None;
            }
            if !interval.is_zero() {
                // The server shutting down ends the stream at once.
                tokio::select! {
                    _ = actix_rt::time::sleep(interval) => {}
                    _ = closing.changed() => return None,
                }
            }
            let chunk = web::Bytes::from(format!("event: message\ndata: Message {i}\n\n"));
            Some((Ok::<_, std::io::Error>(chunk), (i + 1, guard, closing)))
        },
    );
    Ok(event_stream(events))
}

/// Decrements a gauge when dropped.
struct GaugeGuard(prometheus::IntGauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn feed_stream(state: &AppState, topic: Topic) -> HttpResponse {
    let rt = &state.realtime;
    let (out, reader) = queue(rt.queue_limits);
    let _ = out.text(format!("retry: {SSE_RETRY_MS}\n\n"));
    let id = rt.next_number();
    let feed = rt.feed.clone();
    let metrics = rt.metrics.clone();
    metrics.sse_connections.inc();
    feed.do_send(Subscribe { topic, id, out });
    let body = SseBody::new(
        reader,
        Some(state.config.realtime.sse_keepalive),
        move || {
            metrics.sse_connections.dec();
            feed.do_send(Unsubscribe { id });
        },
    );
    event_stream(body)
}

/// What happens in the server, live: members joining and leaving rooms, room activity
/// (coalesced per room), job events. Event name `update`, data a JSON object with `kind`.
#[utoipa::path(
    get, path = "/sse/updates", tag = "realtime",
    responses((status = 200, description = "text/event-stream of `update` events", content_type = "text/event-stream"))
)]
pub async fn sse_updates(state: web::Data<AppState>) -> HttpResponse {
    feed_stream(&state, Topic::Updates)
}

/// A `heartbeat` event with the ISO-8601 time every `SSE_HEARTBEAT_INTERVAL_MS` (30 s).
#[utoipa::path(
    get, path = "/sse/heartbeat", tag = "realtime",
    responses((status = 200, description = "text/event-stream of `heartbeat` events", content_type = "text/event-stream"))
)]
pub async fn sse_heartbeat(state: web::Data<AppState>) -> HttpResponse {
    feed_stream(&state, Topic::Heartbeat)
}

/// Query of `/rooms/{room}/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RoomEventsQuery {
    /// Replay events after this sequence number (like `Last-Event-ID`, which wins).
    since: Option<u64>,
    /// The room's epoch `since` is from (the `epoch` of `joined`); with another epoch the
    /// stream starts with `joined` saying `recovered: false`.
    epoch: Option<String>,
    /// A connection token, or a subscription token for the room (EventSource cannot send
    /// headers).
    #[allow(dead_code)]
    token: Option<String>,
}

/// A room as SSE: first `event: joined` (`{"seq", "epoch", "recovered"}`), then
/// `id: <epoch>:<seq>`, `event: message`, `data: <event JSON>` per event; replays everything
/// after `Last-Event-ID` (or `?since=` and `?epoch=`) first, and says in `joined` whether
/// that was all the client missed (`recovered`). Following needs `subscribe` in the room's
/// namespace (and a replay `history`); the token (`Authorization: Bearer` or `?token=`) may
/// be a connection token or a subscription token for the room. The stream ends when the
/// token expires, with a last `error` event whose code is `token_expired`.
#[utoipa::path(
    get, path = "/rooms/{room}/events", tag = "rooms",
    params(("room" = String, Path, description = "Room name"), RoomEventsQuery),
    responses(
        (status = 200, description = "text/event-stream of the room's events", content_type = "text/event-stream"),
        (status = 400, description = "Bad room name or Last-Event-ID", body = ErrorBody),
        (status = 401, description = "The namespace needs a token, or the token is invalid", body = ErrorBody),
        (status = 403, description = "The token does not allow following the room", body = ErrorBody)
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
pub async fn room_events(
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<RoomEventsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let room = path.into_inner();
    validate_room(&room).map_err(AppError::BadRequest)?;
    let (since, epoch) = match req.headers().get("Last-Event-ID") {
        Some(v) => {
            let (epoch, seq) = v.to_str().ok().and_then(parse_event_id).ok_or_else(|| {
                AppError::BadRequest(
                    "Last-Event-ID must be an event id: <epoch>:<seq>, or a sequence number".into(),
                )
            })?;
            (Some(seq), epoch)
        }
        None => (q.since, q.epoch.clone()),
    };
    if epoch
        .as_ref()
        .is_some_and(|e| e.is_empty() || e.len() > MAX_EPOCH_LEN)
    {
        return Err(AppError::BadRequest(format!(
            "epoch must be 1-{MAX_EPOCH_LEN} characters"
        )));
    }
    let grant = room_grant_of(
        &state.config.jwt_secret,
        &state.config.api_keys,
        &req,
        &room,
    )?;
    let access = &state.config.realtime.session.access;
    let who = &grant.identity;
    access
        .check(who, &room, Action::Subscribe)
        .map_err(denied)?;
    if since.is_some() {
        access.check(who, &room, Action::History).map_err(denied)?;
    }
    let presence = access.check(who, &room, Action::Presence).is_ok();
    let rt = &state.realtime;
    let (out, reader) = queue(rt.queue_limits);
    let _ = out.text(format!("retry: {SSE_RETRY_MS}\n\n"));
    let member = rt.next_member_id();
    let subscriber = Subscriber {
        id: member.clone(),
        name: "sse".into(),
        user: who.user.clone(),
        presence,
        out,
        format: EventFormat::Sse,
        visible: false,
        session: None,
        replay_budget: Some(state.replay_budgets.of(req.peer_addr().map(|a| a.ip()))),
    };
    rt.broker
        .try_send(Join {
            room,
            subscriber,
            since,
            epoch,
        })
        .map_err(|e| AppError::Unavailable(e.to_string()))?;
    let broker = rt.broker.clone();
    let metrics = rt.metrics.clone();
    metrics.sse_connections.inc();
    let mut body = SseBody::new(
        reader,
        Some(state.config.realtime.sse_keepalive),
        move || {
            metrics.sse_connections.dec();
            broker.do_send(Disconnect { member });
        },
    );
    if let Some(expires_at) = grant.expires_at {
        let left = Duration::from_secs(expires_at.saturating_sub(unix_now()));
        body = body.ends_after(left, TOKEN_EXPIRED_EVENT);
    }
    Ok(event_stream(body))
}
