//! `WsSession`: one actor per WebSocket connection.
//!
//! The session reads the client's frames (decoded by [`crate::ws_frames::WsFrames`]),
//! enforces the per-connection limits, answers the plain-text endpoints (`/ws`,
//! `/ws/authenticated`, `/ws/chat`) and the `/ws/json` protocol, and sends the `RoomBroker` typed messages. Everything it sends to its client
//! goes through its bounded [`ClientQueue`] queue, the same queue the broker fans room events
//! into, so a client's frames keep their order and a client that stops reading is dropped
//! instead of growing the server.
//!
//! Limits (all from configuration): frames and reassembled messages up to
//! `max_message_bytes` (close 1009 beyond); invalid UTF-8 closes with 1007; a token-bucket
//! message rate (error frames, then close 1008 on a sustained flood); a cap on rooms per
//! connection; a heartbeat ping every `heartbeat` and a close when the client has been
//! silent for `client_timeout`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::{CloseCode, Frame, Item, ProtocolError};
use bytes::{Bytes, BytesMut};

use crate::access::{AccessPolicy, Action, Grant, Identity, TokenVerifier};
use crate::client_queue::{ClientQueue, OutFrame, SendError};
use crate::metrics::RealtimeMetrics;
use crate::protocol::ServerMsg;
use crate::rate_limit::{RateLimiter, SharedBucket, Verdict};
use crate::room_broker::{
    BrokerHandle, Connect, Disconnect, EventFormat, Join, Leave, MemberId, Publish, SessionNotice,
    Subscriber,
};

mod json;

pub use json::TOKEN_EXPIRED_CLOSE_CODE;

/// The room `/ws/chat/{client_id}` talks in.
pub const CHAT_ROOM: &str = "chat";

/// Per-connection limits and timings; from configuration.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Ping interval (`WS_HEARTBEAT_INTERVAL_MS`).
    pub heartbeat: Duration,
    /// A client silent this long is disconnected (`WS_CLIENT_TIMEOUT_MS`).
    pub client_timeout: Duration,
    /// Largest frame or reassembled message (`WS_MAX_MESSAGE_BYTES`).
    pub max_message_bytes: usize,
    /// Sustained messages per second allowed (`WS_RATE_PER_SEC`).
    pub rate_per_sec: u32,
    /// Messages allowed in a burst (`WS_RATE_BURST`).
    pub rate_burst: u32,
    /// Refused messages within one second that close the connection (`WS_FLOOD_LIMIT`).
    pub flood_limit: u32,
    /// Rooms one connection may join (`WS_MAX_ROOMS_PER_CONNECTION`).
    pub max_rooms: usize,
    /// Whether connections without a token may publish (refused in production).
    pub anonymous_publish: bool,
    /// Sustained inbound bytes per second allowed (`WS_BYTES_PER_SEC`).
    pub bytes_per_sec: u32,
    /// Inbound bytes allowed in a burst (`WS_BYTES_BURST`, at least `WS_MAX_MESSAGE_BYTES`).
    pub bytes_burst: u32,
    /// Deepest nesting of arrays and objects in published data (`JSON_MAX_DEPTH`).
    pub json_max_depth: usize,
    /// History replayed to one connection per second, in bytes (`REPLAY_BYTES_PER_SEC`).
    pub replay_bytes_per_sec: u32,
    /// History replayed to one connection at once, in bytes (`REPLAY_BYTES_BURST`).
    pub replay_bytes_burst: u32,
    /// Who may do what in which room (the namespaces).
    pub access: Arc<AccessPolicy>,
    /// Checks `refresh` and subscription tokens.
    pub tokens: Arc<dyn TokenVerifier>,
    /// After its token expires, a connection has this long to `refresh` it before it is
    /// closed (`TOKEN_REFRESH_GRACE_MS`).
    pub token_grace: Duration,
}

/// Which endpoint the connection came in on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionKind {
    /// `/ws`: `Echo: <text>`.
    Echo,
    /// `/ws/authenticated`: `Welcome <name>`, then `<name>: <text>`.
    Authenticated,
    /// `/ws/chat/{client_id}`: the shared chat room, plain text.
    Chat,
    /// `/ws/json`: the JSON protocol with rooms.
    Json,
}

/// A message being reassembled from continuation frames.
struct Fragment {
    text: bool,
    buf: BytesMut,
}

/// The session actor.
pub struct WsSession {
    id: MemberId,
    name: Arc<str>,
    kind: SessionKind,
    out: ClientQueue,
    broker: BrokerHandle,
    config: Arc<SessionConfig>,
    metrics: RealtimeMetrics,
    /// Who the client is (its token's user and capabilities, or a guest).
    identity: Identity,
    /// When the connection's token expires (seconds since the Unix epoch).
    expires_at: Option<u64>,
    /// The timer that ends the connection when its expired token is not refreshed.
    expiry: Option<SpawnHandle>,
    last_seen: Instant,
    rooms: HashSet<String>,
    /// Messages per second.
    limiter: RateLimiter,
    /// Inbound bytes per second.
    byte_limiter: RateLimiter,
    /// History replayed to this connection (charged by the broker).
    replay_budget: SharedBucket,
    fragment: Option<Fragment>,
    closing: bool,
}

impl WsSession {
    /// A session for connection `id`, named `name`, on endpoint `kind`, for the client the
    /// token `grant` (a guest's has no user) says it is.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: MemberId,
        name: Arc<str>,
        grant: Grant,
        kind: SessionKind,
        out: ClientQueue,
        broker: BrokerHandle,
        config: Arc<SessionConfig>,
        metrics: RealtimeMetrics,
    ) -> Self {
        let limiter = RateLimiter::new(config.rate_per_sec, config.rate_burst, config.flood_limit);
        let byte_limiter =
            RateLimiter::new(config.bytes_per_sec, config.bytes_burst, config.flood_limit);
        let replay_budget = SharedBucket::new(
            f64::from(config.replay_bytes_per_sec),
            f64::from(config.replay_bytes_burst),
        );
        Self {
            id,
            name,
            kind,
            out,
            broker,
            config,
            metrics,
            identity: grant.identity,
            expires_at: grant.expires_at,
            expiry: None,
            last_seen: Instant::now(),
            rooms: HashSet::new(),
            limiter,
            byte_limiter,
            replay_budget,
            fragment: None,
            closing: false,
        }
    }

    fn subscriber(&self, ctx: &Context<Self>, format: EventFormat, room: &str) -> Subscriber {
        Subscriber {
            id: self.id.clone(),
            name: self.name.clone(),
            user: self.identity.user.clone(),
            presence: self.may(room, Action::Presence).is_ok(),
            out: self.out.clone(),
            format,
            visible: true,
            session: Some(ctx.address().recipient()),
            replay_budget: Some(self.replay_budget.clone()),
        }
    }

    /// Queues a frame to the client. A full queue means the client stopped reading: it is
    /// evicted (counted in `courier_slow_clients_dropped_total`) and the session stops, as
    /// when the client is gone. False when the frame was not queued.
    fn queue(&mut self, ctx: &mut Context<Self>, frame: OutFrame) -> bool {
        match self.out.try_send(frame) {
            Ok(()) => true,
            Err(SendError::Full) => {
                self.metrics.slow_clients_dropped.inc();
                self.out.evict();
                ctx.stop();
                false
            }
            Err(SendError::Closed) => {
                ctx.stop();
                false
            }
        }
    }

    /// Queues a text frame.
    fn send(&mut self, ctx: &mut Context<Self>, text: String) {
        self.queue(ctx, OutFrame::Text(text.into()));
    }

    fn error(&mut self, ctx: &mut Context<Self>, code: &str, message: &str) {
        self.error_about(ctx, code, message, None, None);
    }

    /// An `error` frame naming the room and the publish id of the refused frame, so a
    /// client can tell which of its requests failed.
    fn error_about(
        &mut self,
        ctx: &mut Context<Self>,
        code: &str,
        message: &str,
        room: Option<&str>,
        id: Option<&str>,
    ) {
        self.metrics.bad_frames.inc();
        let text = match self.kind {
            SessionKind::Json => ServerMsg::Error {
                code,
                message,
                room,
                id,
            }
            .to_text(),
            _ => format!("error: {message}"),
        };
        self.send(ctx, text);
    }

    /// Sends a close frame and stops.
    fn close(&mut self, ctx: &mut Context<Self>, code: CloseCode, reason: &str) {
        if !self.closing {
            self.closing = true;
            self.queue(ctx, OutFrame::Close(code, reason.to_owned()));
        }
        ctx.stop();
    }

    /// Counts a message against the rate limit; false when it is refused (the client was
    /// told, or the connection closed for flooding).
    fn allowed(&mut self, ctx: &mut Context<Self>) -> bool {
        match self.limiter.check(1) {
            Verdict::Allow => true,
            Verdict::Refuse => {
                self.error(ctx, "rate_limited", "too many messages; slow down");
                false
            }
            Verdict::Flood => {
                self.close(ctx, CloseCode::Policy, "message rate limit exceeded");
                false
            }
        }
    }

    /// Counts `n` inbound bytes against the byte rate limit; false when the frame is
    /// refused (the client was told, or the connection closed for flooding).
    fn bytes_allowed(&mut self, ctx: &mut Context<Self>, n: usize) -> bool {
        match self
            .byte_limiter
            .check(u32::try_from(n).unwrap_or(u32::MAX))
        {
            Verdict::Allow => true,
            Verdict::Refuse => {
                self.error(ctx, "rate_limited", "too many bytes; slow down");
                false
            }
            Verdict::Flood => {
                self.close(ctx, CloseCode::Policy, "byte rate limit exceeded");
                false
            }
        }
    }

    fn on_text(&mut self, bytes: Bytes, ctx: &mut Context<Self>) {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            // RFC 6455 §8.1: invalid UTF-8 in a text message fails the connection with 1007.
            self.close(ctx, CloseCode::Invalid, "invalid UTF-8 in a text frame");
            return;
        };
        if !self.allowed(ctx) {
            return;
        }
        match self.kind {
            SessionKind::Echo => self.send(ctx, format!("Echo: {text}")),
            SessionKind::Authenticated => {
                let line = format!("{}: {text}", self.name);
                self.send(ctx, line);
            }
            SessionKind::Chat => {
                let line = format!("Client {}: {text}", self.name);
                self.publish_chat(ctx, line);
            }
            SessionKind::Json => self.on_json(text, ctx),
        }
    }

    fn on_binary(&mut self, ctx: &mut Context<Self>) {
        self.error(
            ctx,
            "unsupported",
            "binary frames are not supported; send JSON text frames",
        );
    }
}

impl Actor for WsSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.metrics.ws_connections.inc();
        self.broker.do_send(Connect {
            member: self.id.clone(),
            user: self.identity.user.clone(),
            out: self.out.clone(),
            session: ctx.address().recipient(),
        });
        self.watch_expiry(ctx);
        ctx.run_interval(self.config.heartbeat, |this, ctx| {
            if this.last_seen.elapsed() > this.config.client_timeout {
                log::debug!("member={} silent too long; closing", this.id);
                this.close(ctx, CloseCode::Away, "no response to heartbeat");
                return;
            }
            this.queue(ctx, OutFrame::Ping);
        });
        match self.kind {
            SessionKind::Authenticated => {
                let welcome = format!("Welcome {}", self.name);
                self.send(ctx, welcome);
            }
            SessionKind::Chat => {
                if let Err(denied) = self.may(CHAT_ROOM, Action::Subscribe) {
                    self.close(ctx, CloseCode::Policy, &denied.to_string());
                    return;
                }
                self.broker.do_send(Join {
                    room: CHAT_ROOM.to_owned(),
                    subscriber: self.subscriber(ctx, EventFormat::Text, CHAT_ROOM),
                    since: None,
                    epoch: None,
                });
                self.rooms.insert(CHAT_ROOM.to_owned());
                if self.announces_chat() {
                    let line = format!("Client {} joined the chat", self.name);
                    self.chat_line(ctx, line);
                }
            }
            SessionKind::Json => {
                let hello = ServerMsg::Hello {
                    client_id: &self.id,
                    user: self.identity.user.as_deref(),
                    name: &self.name,
                    expires_at: self.expires_at,
                }
                .to_text();
                self.send(ctx, hello);
            }
            SessionKind::Echo => {}
        }
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        if self.kind == SessionKind::Chat && self.rooms.contains(CHAT_ROOM) {
            self.broker.do_send(Leave {
                room: CHAT_ROOM.to_owned(),
                member: self.id.clone(),
                confirm: false,
            });
            if self.announces_chat() {
                let line = format!("Client {} left the chat", self.name);
                let data = serde_json::value::to_raw_value(&line).expect("a string serialises");
                self.broker.do_send(Publish {
                    room: CHAT_ROOM.to_owned(),
                    from: self.name.clone(),
                    user: self.identity.user.clone(),
                    data,
                    ack: None,
                    key: None,
                });
            }
        }
        self.broker.do_send(Disconnect {
            member: self.id.clone(),
        });
        Running::Stop
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.metrics.ws_connections.dec();
    }
}

impl StreamHandler<Result<Frame, ProtocolError>> for WsSession {
    fn handle(&mut self, item: Result<Frame, ProtocolError>, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        self.last_seen = Instant::now();
        let max = self.config.max_message_bytes;
        match item {
            Err(ProtocolError::Overflow) => self.close(
                ctx,
                CloseCode::Size,
                &format!("message larger than {max} bytes"),
            ),
            Err(e) => self.close(ctx, CloseCode::Protocol, &e.to_string()),
            Ok(Frame::Text(bytes)) => {
                if !self.bytes_allowed(ctx, bytes.len()) {
                    return;
                }
                if self.fragment.is_some() {
                    self.close(
                        ctx,
                        CloseCode::Protocol,
                        "new message inside a fragmented one",
                    );
                } else {
                    self.on_text(bytes, ctx);
                }
            }
            Ok(Frame::Binary(bytes)) => {
                if !self.bytes_allowed(ctx, bytes.len()) {
                    return;
                }
                if self.fragment.is_some() {
                    self.close(
                        ctx,
                        CloseCode::Protocol,
                        "new message inside a fragmented one",
                    );
                } else {
                    self.on_binary(ctx);
                }
            }
            Ok(Frame::Continuation(item)) => {
                let (first, chunk, last) = match item {
                    Item::FirstText(b) => (Some(true), b, false),
                    Item::FirstBinary(b) => (Some(false), b, false),
                    Item::Continue(b) => (None, b, false),
                    Item::Last(b) => (None, b, true),
                };
                // A message in pieces is refused as soon as it would pass the limit, before
                // the piece is kept; and a refused piece cannot be skipped, so it closes.
                let so_far = self.fragment.as_ref().map_or(0, |f| f.buf.len());
                if so_far + chunk.len() > max {
                    self.close(
                        ctx,
                        CloseCode::Size,
                        &format!("message larger than {max} bytes"),
                    );
                    return;
                }
                if matches!(
                    self.byte_limiter.check(chunk.len() as u32),
                    Verdict::Refuse | Verdict::Flood
                ) {
                    self.close(ctx, CloseCode::Policy, "byte rate limit exceeded");
                    return;
                }
                match (first, self.fragment.as_mut()) {
                    (Some(text), None) => {
                        self.fragment = Some(Fragment {
                            text,
                            buf: BytesMut::from(&chunk[..]),
                        })
                    }
                    (None, Some(f)) => f.buf.extend_from_slice(&chunk),
                    _ => {
                        self.close(ctx, CloseCode::Protocol, "unexpected continuation frame");
                        return;
                    }
                }
                if last {
                    let f = self.fragment.take().expect("fragment in progress");
                    if f.text {
                        self.on_text(f.buf.freeze(), ctx);
                    } else if self.allowed(ctx) {
                        self.on_binary(ctx);
                    }
                }
            }
            Ok(Frame::Ping(payload)) => {
                if !self.allowed(ctx) || !self.bytes_allowed(ctx, payload.len()) {
                    return;
                }
                self.queue(ctx, OutFrame::Pong(payload));
            }
            Ok(Frame::Pong(_)) => {}
            Ok(Frame::Close(reason)) => {
                // Echo the client's code when it may be sent on the wire (RFC 6455 §7.4).
                let code = match reason.map(|r| u16::from(r.code)) {
                    Some(c @ (1000..=1003 | 1007..=1014 | 3000..=4999)) => CloseCode::from(c),
                    _ => CloseCode::Normal,
                };
                self.closing = true;
                let _ = self.out.try_send(OutFrame::CloseReply(code));
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<SessionNotice> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: SessionNotice, ctx: &mut Self::Context) {
        match msg {
            SessionNotice::Evicted { reason } => {
                log::info!("member={} disconnected: {reason}", self.id);
                self.closing = true;
                ctx.stop();
            }
            SessionNotice::JoinRefused { room } | SessionNotice::Unsubscribed { room } => {
                self.rooms.remove(&room);
                self.identity.revoke(&room);
            }
            SessionNotice::Disconnected => {
                log::info!("member={} disconnected by the server API", self.id);
                self.closing = true;
                ctx.stop();
            }
        }
    }
}
