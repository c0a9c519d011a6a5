//! The `/ws/json` room protocol, and what a connection's identity allows: every frame that
//! acts on a room is checked against the namespaces ([`crate::access`]) before the broker
//! hears of it, and a refusal is an `error` frame with a stable code (`unauthorized`,
//! `forbidden`). Also the plain chat's publishing, and the connection's token lifetime:
//! when it expires the client is told (`token_expired`) and has `TOKEN_REFRESH_GRACE_MS` to
//! send `refresh` before the connection is closed (4001).

use std::time::Duration;

use actix::prelude::*;
use actix_http::ws::CloseCode;

use super::{WsSession, CHAT_ROOM};
use crate::access::{unix_now, Action, Denied};
use crate::protocol::{compact_data, parse_client, ClientMsg, ServerMsg};
use crate::room_broker::{EventFormat, GetPresence, Join, Leave, Publish, Typing};

/// The close code of a connection whose token expired and was not refreshed.
pub const TOKEN_EXPIRED_CLOSE_CODE: u16 = 4001;

impl WsSession {
    /// Whether this connection may do `action` in `room`.
    pub(super) fn may(&self, room: &str, action: Action) -> Result<(), Denied> {
        self.config.access.check(&self.identity, room, action)
    }

    /// Publishing also needs `ANONYMOUS_PUBLISH` for a guest.
    pub(super) fn may_publish(&self, room: &str) -> Result<(), Denied> {
        if self.identity.user.is_none()
            && !self.identity.superuser()
            && !self.config.anonymous_publish
        {
            return Err(Denied::Unauthorized(
                "publishing needs a token: connect with ?token=<JWT>".into(),
            ));
        }
        self.may(room, Action::Publish)
    }

    fn refuse(&mut self, ctx: &mut Context<Self>, denied: &Denied, room: &str, id: Option<&str>) {
        self.error_about(ctx, denied.code(), &denied.to_string(), Some(room), id);
    }

    /// A line a `/ws/chat` client sends, when it may publish there.
    pub(super) fn publish_chat(&mut self, ctx: &mut Context<Self>, line: String) {
        if let Err(denied) = self.may_publish(CHAT_ROOM) {
            self.error(ctx, denied.code(), &denied.to_string());
            return;
        }
        self.chat_line(ctx, line);
    }

    /// The idempotency key of a publish with `id`: the publisher (its user, or the name a
    /// guest is shown under) and the id.
    fn idempotency_key(&self, id: &str) -> String {
        match &self.identity.user {
            Some(user) => format!("u:{user}:{id}"),
            None => format!("n:{}:{id}", self.name),
        }
    }

    /// Whether `/ws/chat` joins and leaves are announced: they are presence, so they follow
    /// the namespace's `presence_events`, not the client's right to publish (the line
    /// names the client as it is shown, a guest as a guest).
    pub(super) fn announces_chat(&self) -> bool {
        self.config
            .access
            .namespace(CHAT_ROOM)
            .is_some_and(|ns| ns.presence_events)
    }

    /// Publishes `line` in the chat room as this client.
    pub(super) fn chat_line(&mut self, ctx: &mut Context<Self>, line: String) {
        let data = serde_json::value::to_raw_value(&line).expect("a string serialises");
        let msg = Publish {
            room: CHAT_ROOM.to_owned(),
            from: self.name.clone(),
            user: self.identity.user.clone(),
            data,
            ack: None,
            key: None,
        };
        if self.broker.try_send(msg).is_err() {
            self.overloaded(ctx);
        }
    }

    fn overloaded(&mut self, ctx: &mut Context<Self>) {
        self.error(ctx, "overloaded", "the server is overloaded; try again");
    }

    fn overloaded_about(&mut self, ctx: &mut Context<Self>, room: &str, id: Option<&str>) {
        let message = "the server is overloaded; try again";
        self.error_about(ctx, "overloaded", message, Some(room), id);
    }

    /// Schedules what happens when the connection's token expires.
    pub(super) fn watch_expiry(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.expiry.take() {
            ctx.cancel_future(handle);
        }
        let Some(expires_at) = self.expires_at else {
            return;
        };
        let left = Duration::from_secs(expires_at.saturating_sub(unix_now()));
        self.expiry = Some(ctx.run_later(left, |this, ctx| {
            this.error(
                ctx,
                "token_expired",
                "the token expired: send {\"type\":\"refresh\",\"token\":\"...\"}",
            );
            let grace = this.config.token_grace;
            this.expiry = Some(ctx.run_later(grace, |this, ctx| {
                this.close(
                    ctx,
                    CloseCode::Other(TOKEN_EXPIRED_CLOSE_CODE),
                    "token expired",
                );
            }));
        }));
    }

    fn refresh(&mut self, ctx: &mut Context<Self>, token: &str) {
        let grant = match self.config.tokens.connection(token) {
            Ok(grant) => grant,
            Err(reason) => {
                self.error(ctx, "unauthorized", &format!("invalid token: {reason}"));
                return;
            }
        };
        if grant.identity.user != self.identity.user {
            self.error(
                ctx,
                "forbidden",
                "a refreshed token must be for the connection's user",
            );
            return;
        }
        // Grants from subscription tokens stay with the connection.
        let grants = std::mem::take(&mut self.identity.grants);
        self.identity = grant.identity;
        self.identity.grants = grants;
        self.expires_at = grant.expires_at;
        self.watch_expiry(ctx);
        if let Some(expires_at) = self.expires_at {
            self.send(ctx, ServerMsg::Refreshed { expires_at }.to_text());
        }
    }

    pub(super) fn on_json(&mut self, text: &str, ctx: &mut Context<Self>) {
        let msg = match parse_client(text) {
            Ok(m) => m,
            Err(v) => {
                self.error(ctx, v.code, &v.message);
                return;
            }
        };
        match msg {
            ClientMsg::Ping => self.send(ctx, ServerMsg::Pong.to_text()),
            ClientMsg::Message { content } => {
                let text = ServerMsg::Response {
                    data: format!("Received: {content}"),
                }
                .to_text();
                self.send(ctx, text);
            }
            ClientMsg::Refresh { token } => self.refresh(ctx, &token),
            ClientMsg::Join {
                room,
                since,
                epoch,
                token,
            } => {
                if !self.rooms.contains(&room) && self.rooms.len() >= self.config.max_rooms {
                    let message = format!(
                        "a connection may join at most {} rooms",
                        self.config.max_rooms
                    );
                    self.error_about(ctx, "too_many_rooms", &message, Some(&room), None);
                    return;
                }
                if let Some(token) = token {
                    let user = self.identity.user.as_deref();
                    match self.config.tokens.subscription(&token, user, &room) {
                        Ok(allow) => self.identity.grant(&room, allow),
                        Err(reason) => {
                            let message = format!("invalid subscription token: {reason}");
                            self.error_about(ctx, "unauthorized", &message, Some(&room), None);
                            return;
                        }
                    }
                }
                let checked = self
                    .may(&room, Action::Subscribe)
                    .and_then(|()| match since {
                        Some(_) => self.may(&room, Action::History),
                        None => Ok(()),
                    });
                if let Err(denied) = checked {
                    if !self.rooms.contains(&room) {
                        self.identity.revoke(&room);
                    }
                    self.refuse(ctx, &denied, &room, None);
                    return;
                }
                let join = Join {
                    subscriber: self.subscriber(ctx, EventFormat::Json, &room),
                    room: room.clone(),
                    since,
                    epoch,
                };
                if self.broker.try_send(join).is_ok() {
                    self.rooms.insert(room);
                } else {
                    self.overloaded_about(ctx, &room, None);
                }
            }
            ClientMsg::Leave { room } => {
                if !self.rooms.contains(&room) {
                    let message = format!("not in room {room:?}");
                    self.error_about(ctx, "not_joined", &message, Some(&room), None);
                    return;
                }
                let leave = Leave {
                    room: room.clone(),
                    member: self.id.clone(),
                    confirm: true,
                };
                if self.broker.try_send(leave).is_ok() {
                    self.rooms.remove(&room);
                    self.identity.revoke(&room);
                } else {
                    self.overloaded_about(ctx, &room, None);
                }
            }
            ClientMsg::Publish { room, data, id } => {
                if let Err(denied) = self.may_publish(&room) {
                    self.refuse(ctx, &denied, &room, id.as_deref());
                    return;
                }
                let data = match compact_data(data, self.config.json_max_depth) {
                    Ok(data) => data,
                    Err(message) => {
                        let id = id.as_deref();
                        self.error_about(ctx, "invalid_message", &message, Some(&room), id);
                        return;
                    }
                };
                let (error_room, error_id) = (room.clone(), id.clone());
                let publish = Publish {
                    room,
                    from: self.name.clone(),
                    user: self.identity.user.clone(),
                    data,
                    key: id.as_ref().map(|id| self.idempotency_key(id)),
                    ack: id.map(|id| (id, self.out.clone())),
                };
                if self.broker.try_send(publish).is_err() {
                    self.overloaded_about(ctx, &error_room, error_id.as_deref());
                }
            }
            ClientMsg::Presence { room } => {
                if let Err(denied) = self.may(&room, Action::Presence) {
                    self.refuse(ctx, &denied, &room, None);
                    return;
                }
                let msg = GetPresence {
                    room,
                    reply_to: Some(self.out.clone()),
                };
                if self.broker.try_send(msg).is_err() {
                    self.overloaded(ctx);
                }
            }
            ClientMsg::Typing { room } => {
                if !self.rooms.contains(&room) {
                    let message = format!("not in room {room:?}");
                    self.error_about(ctx, "not_joined", &message, Some(&room), None);
                    return;
                }
                let msg = Typing {
                    room,
                    member: self.id.clone(),
                };
                if self.broker.try_send(msg).is_err() {
                    self.overloaded(ctx);
                }
            }
        }
    }
}
