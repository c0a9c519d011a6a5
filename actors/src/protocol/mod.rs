//! The `/ws/json` protocol: what clients send and what the server sends back.
//!
//! Client frames are JSON objects with a `type`: `ping`, `message`, `join {room, since?,
//! token?}`, `leave {room}`, `publish {room, data, id?}`, `presence {room}`, `typing
//! {room}`, `refresh {token}`. Unknown types and unknown fields are refused with an `error`
//! frame; the connection stays open.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// Longest room name.
pub const MAX_ROOM_NAME_LEN: usize = 64;

/// Longest client-chosen publish id echoed in `ack`.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// A frame a client sent on `/ws/json`.
#[derive(Debug)]
pub enum ClientMsg {
    /// `{"type":"ping"}` → `pong`.
    Ping,
    /// `{"type":"message","content":...}` → `response` with `Received: <content>`.
    Message {
        /// What to echo back.
        content: String,
    },
    /// Join a room; replay everything after `since` first.
    Join {
        /// The room.
        room: String,
        /// The last sequence number the client already has.
        since: Option<u64>,
        /// The room's epoch when the client got `since` (from `joined`); a different epoch
        /// means the numbering started again and `since` says nothing.
        epoch: Option<String>,
        /// A subscription token for this room.
        token: Option<String>,
    },
    /// Replace the connection's token (before it expires).
    Refresh {
        /// The new token.
        token: String,
    },
    /// Leave a room.
    Leave {
        /// The room.
        room: String,
    },
    /// Publish `data` to a room; `id` is echoed in the `ack`.
    Publish {
        /// The room.
        room: String,
        /// Any JSON value, kept as sent.
        data: Box<RawValue>,
        /// The client's id for this message.
        id: Option<String>,
    },
    /// Ask for the room's members.
    Presence {
        /// The room.
        room: String,
    },
    /// Tell the room this member is typing.
    Typing {
        /// The room.
        room: String,
    },
}

/// Why a client frame was refused; becomes an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolViolation {
    /// Stable code: `invalid_json`, `missing_type`, `unknown_type`, `invalid_message`,
    /// `invalid_room`.
    pub code: &'static str,
    /// Human-readable detail.
    pub message: String,
}

impl ProtocolViolation {
    /// A violation with a code and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[derive(Deserialize)]
struct Tag<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NoFields {
    #[serde(rename = "type")]
    _kind: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MessageFields {
    #[serde(rename = "type")]
    _kind: String,
    /// What to echo back (a string, or any JSON value, echoed as its text).
    #[schema(value_type = Option<serde_json::Value>)]
    content: Option<serde_json::Value>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct JoinFields {
    #[serde(rename = "type")]
    _kind: String,
    /// The room.
    room: String,
    /// The last sequence number the client already has: events after it are replayed.
    since: Option<u64>,
    /// The room's epoch when the client got `since` (from `joined`).
    epoch: Option<String>,
    /// A subscription token for this room.
    token: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RefreshFields {
    #[serde(rename = "type")]
    _kind: String,
    /// A new token for the connection's user.
    token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RoomFields {
    #[serde(rename = "type")]
    _kind: String,
    /// The room.
    room: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PublishFields {
    #[serde(rename = "type")]
    _kind: String,
    /// The room.
    room: String,
    /// Any JSON value.
    #[schema(value_type = serde_json::Value)]
    data: Box<RawValue>,
    /// The client's id for this message, echoed in `ack`; also its idempotency key.
    id: Option<String>,
}

/// Every frame type a client may send, with the schema of its fields (`type` included):
/// what [`parse_client`] reads, for the AsyncAPI document.
pub fn client_frames() -> Vec<(&'static str, &'static str, RefOr<Schema>)> {
    vec![
        ("ping", "Ask for a `pong`.", NoFields::schema()),
        (
            "message",
            "Echo: answered with `response`.",
            MessageFields::schema(),
        ),
        (
            "join",
            "Join a room; replay what came after `since`.",
            JoinFields::schema(),
        ),
        ("leave", "Leave a room.", RoomFields::schema()),
        (
            "publish",
            "Publish to a room; answered with `ack`.",
            PublishFields::schema(),
        ),
        (
            "presence",
            "Ask for a room's members.",
            RoomFields::schema(),
        ),
        (
            "typing",
            "Tell a room this member is typing.",
            RoomFields::schema(),
        ),
        (
            "refresh",
            "Replace the connection's token.",
            RefreshFields::schema(),
        ),
    ]
}

fn fields<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, ProtocolViolation> {
    serde_json::from_str(text).map_err(|e| ProtocolViolation::new("invalid_message", e.to_string()))
}

/// Parses one client frame.
pub fn parse_client(text: &str) -> Result<ClientMsg, ProtocolViolation> {
    let tag: Tag<'_> = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            ProtocolViolation::new(
                "invalid_message",
                "a frame must be a JSON object with a \"type\"",
            )
        } else {
            ProtocolViolation::new("invalid_json", format!("malformed JSON: {e}"))
        }
    })?;
    let kind = tag
        .kind
        .ok_or_else(|| ProtocolViolation::new("missing_type", "the frame has no \"type\""))?;
    Ok(match kind.as_ref() {
        "ping" => {
            fields::<NoFields>(text)?;
            ClientMsg::Ping
        }
        "message" => {
            let f: MessageFields = fields(text)?;
            let content = match f.content {
                Some(serde_json::Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => "None".to_owned(),
            };
            ClientMsg::Message { content }
        }
        "join" => {
            let f: JoinFields = fields(text)?;
            if f.epoch.as_ref().is_some_and(|e| e.len() > MAX_EPOCH_LEN) {
                return Err(ProtocolViolation::new(
                    "invalid_message",
                    format!("epoch is at most {MAX_EPOCH_LEN} characters"),
                ));
            }
            ClientMsg::Join {
                room: checked_room(f.room)?,
                since: f.since,
                epoch: f.epoch,
                token: f.token,
            }
        }
        "refresh" => ClientMsg::Refresh {
            token: fields::<RefreshFields>(text)?.token,
        },
        "leave" => ClientMsg::Leave {
            room: checked_room(fields::<RoomFields>(text)?.room)?,
        },
        "presence" => ClientMsg::Presence {
            room: checked_room(fields::<RoomFields>(text)?.room)?,
        },
        "typing" => ClientMsg::Typing {
            room: checked_room(fields::<RoomFields>(text)?.room)?,
        },
        "publish" => {
            let f: PublishFields = fields(text)?;
            if let Some(id) = &f.id {
                if id.is_empty() || id.len() > MAX_CLIENT_ID_LEN {
                    return Err(ProtocolViolation::new(
                        "invalid_message",
                        format!("id must be 1-{MAX_CLIENT_ID_LEN} characters"),
                    ));
                }
            }
            ClientMsg::Publish {
                room: checked_room(f.room)?,
                data: f.data,
                id: f.id,
            }
        }
        other => {
            return Err(ProtocolViolation::new(
                "unknown_type",
                format!(
                    "unknown type {other:?}; expected ping, message, join, leave, publish, presence, typing or refresh"
                ),
            ))
        }
    })
}

fn checked_room(room: String) -> Result<String, ProtocolViolation> {
    validate_room(&room).map_err(|m| ProtocolViolation::new("invalid_room", m))?;
    Ok(room)
}

/// A new room epoch: 16 random hex digits.
pub fn new_epoch() -> std::sync::Arc<str> {
    format!("{:016x}", rand::random::<u64>()).into()
}

/// Longest epoch a client may send back.
pub const MAX_EPOCH_LEN: usize = 32;

/// Room names: 1–64 characters of ASCII letters, digits, `-`, `_`, `.` and `:`; a personal
/// room adds `#` and the users it is for, separated by commas (`dm:#alice,bob`).
pub fn validate_room(room: &str) -> Result<(), String> {
    let plain = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    let ok = !room.is_empty()
        && room.len() <= MAX_ROOM_NAME_LEN
        && match room.split_once('#') {
            None => plain(room),
            Some((name, users)) => {
                !name.is_empty()
                    && plain(name)
                    && !users.is_empty()
                    && users.split(',').all(|u| !u.is_empty() && plain(u))
            }
        };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "room names are 1-{MAX_ROOM_NAME_LEN} characters of letters, digits, '-', '_', '.' and ':' (a personal room adds '#' and its users, separated by ',')"
        ))
    }
}

/// Published data as it is kept and sent: the client's JSON with the whitespace outside
/// strings removed, so an event never carries a raw CR or LF (an SSE `data:` line must not
/// be split) and is no larger than it needs to be; arrays and objects nested deeper than
/// `max_depth` are refused (JSON parsers of subscribers have recursion limits).
pub fn compact_data(raw: Box<RawValue>, max_depth: usize) -> Result<Box<RawValue>, String> {
    let text = raw.get();
    let (mut in_string, mut escaped, mut depth) = (false, false, 0usize);
    let mut spaces = 0usize;
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(format!(
                        "data is nested deeper than {max_depth} levels of arrays and objects"
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b' ' | b'\t' | b'\n' | b'\r' => spaces += 1,
            _ => {}
        }
    }
    if spaces == 0 {
        return Ok(raw);
    }
    let mut compact = String::with_capacity(text.len() - spaces);
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        } else if c == '"' {
            in_string = true;
        }
        compact.push(c);
    }
    RawValue::from_string(compact).map_err(|e| format!("data is not JSON: {e}"))
}

/// A member as others see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct MemberView {
    /// The connection's id, unique across nodes.
    pub id: String,
    /// The member's name: the user's, or a guest's `guest-…` name.
    pub name: String,
    /// The token's user; `null` for a guest.
    #[serde(default)]
    pub user: Option<String>,
}

/// Server frames other than room events (which the broker renders itself).
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg<'a> {
    /// The first frame of a `/ws/json` connection: who the server takes the client for.
    Hello {
        /// The connection's id (as in presence).
        client_id: &'a str,
        /// The token's user; `null` for a guest.
        user: Option<&'a str>,
        /// The name others see.
        name: &'a str,
        /// When the token expires (seconds since the Unix epoch); `null` without one.
        expires_at: Option<u64>,
    },
    /// A `refresh` was accepted.
    Refreshed {
        /// When the new token expires (seconds since the Unix epoch).
        expires_at: u64,
    },
    /// Answer to `ping`.
    Pong,
    /// Answer to `message`.
    Response {
        /// `Received: <content>`.
        data: String,
    },
    /// The member is in the room; `seq` is the room's last sequence number.
    Joined {
        /// The room.
        room: &'a str,
        /// The last sequence number assigned in the room.
        seq: u64,
        /// The room's epoch: it changes when the room's history is lost, and sequence
        /// numbers start again; `null` for a room nothing was published in yet.
        epoch: Option<&'a str>,
        /// With `since`: whether every event after it was replayed. `false` means events
        /// are missing (the epoch changed, or they are no longer kept): reload the state.
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    /// Events of the room may have been missed (the room's history was lost, or could not
    /// be read back after an outage): reload the state; live events follow from `seq`.
    Resync {
        /// The room.
        room: &'a str,
        /// The last sequence number in the room now.
        seq: u64,
        /// The room's epoch now.
        epoch: Option<&'a str>,
        /// Always `false`.
        recovered: bool,
    },
    /// The member left the room.
    Left {
        /// The room.
        room: &'a str,
    },
    /// A publish was accepted with this sequence number.
    Ack {
        /// The client's id.
        id: &'a str,
        /// The sequence number assigned.
        seq: u64,
    },
    /// The room's members.
    Presence {
        /// The room.
        room: &'a str,
        /// Its members.
        #[schema(value_type = Vec<MemberView>)]
        members: &'a [MemberView],
    },
    /// Someone joined.
    MemberJoined {
        /// The room.
        room: &'a str,
        /// Who.
        #[schema(value_type = MemberView)]
        member: &'a MemberView,
    },
    /// Someone left.
    MemberLeft {
        /// The room.
        room: &'a str,
        /// Who.
        #[schema(value_type = MemberView)]
        member: &'a MemberView,
    },
    /// Someone is typing.
    Typing {
        /// The room.
        room: &'a str,
        /// Who.
        from: &'a str,
    },
    /// A refused frame or failed request; the connection stays open.
    Error {
        /// Stable code.
        code: &'a str,
        /// Human-readable detail.
        message: &'a str,
        /// The room the refused frame named (a join, leave, presence or typing), when
        /// there was one.
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<&'a str>,
        /// The `id` of the refused publish, when it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
}

impl<'a> ServerMsg<'a> {
    /// An `error` frame about no room or publish in particular.
    pub fn error(code: &'a str, message: &'a str) -> Self {
        Self::Error {
            code,
            message,
            room: None,
            id: None,
        }
    }

    /// An `error` frame about `room`.
    pub fn room_error(room: &'a str, code: &'a str, message: &'a str) -> Self {
        Self::Error {
            code,
            message,
            room: Some(room),
            id: None,
        }
    }

    /// The frame's JSON text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("server frames serialise")
    }
}

/// A numbered room event, as the broker keeps, relays and renders it.
#[derive(Debug, Clone)]
pub struct RoomEvent {
    /// The room.
    pub room: String,
    /// The room's sequence number for this event.
    pub seq: u64,
    /// The publisher's name.
    pub from: std::sync::Arc<str>,
    /// The publisher's user; `None` for a guest or the server API.
    pub user: Option<std::sync::Arc<str>>,
    /// The published JSON value, as sent.
    pub data: Box<RawValue>,
    /// When the event was accepted (RFC 3339, UTC, milliseconds).
    pub ts: String,
}

/// A room event as clients receive it (`event` frames, SSE data, history).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventFrame<'a> {
    /// Always `event`.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The room.
    pub room: &'a str,
    /// The room's sequence number for this event.
    pub seq: u64,
    /// The publisher's name.
    pub from: &'a str,
    /// The publisher's user (the token's); `null` for a guest or the server API.
    pub user: Option<&'a str>,
    /// The published JSON value.
    #[serde(borrow)]
    #[schema(value_type = serde_json::Value)]
    pub data: &'a RawValue,
    /// When the event was accepted (RFC 3339, UTC, milliseconds).
    pub ts: &'a str,
}

#[cfg(test)]
mod tests;
