//! What the `RoomBroker` is told and asked, and what it answers.
//!
//! Sessions and handlers send these through the broker's [`super::BrokerHandle`]:
//!
//! - [`Connect`] / [`Disconnect`]: a WebSocket opened or closed;
//! - [`Join`] / [`Leave`]: a member (WebSocket) or subscriber (SSE) enters or leaves a
//!   room; `Join` replays what the client missed first;
//! - [`Publish`]: a message for a room; answered with its sequence number;
//! - [`Typing`]: a member is typing (relayed, debounced);
//! - [`GetPresence`], [`GetHistory`], [`ListRooms`]: read the rooms' state;
//! - [`DisconnectClients`], [`Unsubscribe`]: the server API forces clients out;
//! - [`CloseAll`]: the server is stopping.
//!
//! The broker tells a session what it decided about it with a [`SessionNotice`]: evicted
//! for being too slow, or a join refused (so the session's own list of rooms stays true).

use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;
use serde_json::value::RawValue;

use crate::client_queue::ClientQueue;
use crate::protocol::MemberView;
use crate::rate_limit::SharedBucket;

/// A connection's id, unique across nodes.
pub type MemberId = Arc<str>;

/// How a subscriber wants room events written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFormat {
    /// `/ws/json` frames: `event`, `member_joined`, ...
    Json,
    /// Plain text (`/ws/chat`): the event's data when it is a string.
    Text,
    /// An SSE stream: `id: <seq>`, `event: message`, `data: <event JSON>`.
    Sse,
}

/// A connection entering a room, as [`Join`] carries it.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// The connection's id.
    pub id: MemberId,
    /// The name others see.
    pub name: Arc<str>,
    /// The token's user; `None` for a guest.
    pub user: Option<Arc<str>>,
    /// Whether it is told of joins, leaves and typing (it may see presence).
    pub presence: bool,
    /// The connection's queue.
    pub out: ClientQueue,
    /// How events are written for it.
    pub format: EventFormat,
    /// Whether it appears in presence (WebSocket members) or not (SSE subscribers).
    pub visible: bool,
    /// Told when the broker evicts the connection or refuses its join.
    pub session: Option<Recipient<SessionNotice>>,
    /// The client's budget for replayed history (`REPLAY_BYTES_PER_SEC`): a join with
    /// `since` is refused while it is spent, and charged the bytes it replays.
    pub replay_budget: Option<SharedBucket>,
}

/// A WebSocket connection opened. The broker keeps its queue so that [`CloseAll`] can
/// close it with 1001 and a slow client can be evicted even before it joins a room.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Connect {
    /// The connection's id.
    pub member: MemberId,
    /// The token's user; `None` for a guest.
    pub user: Option<Arc<str>>,
    /// Its queue.
    pub out: ClientQueue,
    /// Its session.
    pub session: Recipient<SessionNotice>,
}

/// A connection is gone: it leaves every room it was in.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Disconnect {
    /// Who.
    pub member: MemberId,
}

/// Enter a room (a WebSocket member) or follow it (an SSE subscriber). Events after
/// `since` are replayed first, then live events follow in order. A JSON member gets a
/// `joined` frame first.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Join {
    /// The room (already validated).
    pub room: String,
    /// Who joins.
    pub subscriber: Subscriber,
    /// The last sequence number the subscriber already has.
    pub since: Option<u64>,
    /// The room's epoch when the subscriber got `since`, when it knows it.
    pub epoch: Option<String>,
}

/// Leave a room; the other members are told. With `confirm`, the member always gets an
/// answer: `left`, or `not_joined` when it was not in the room.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Leave {
    /// The room.
    pub room: String,
    /// Who leaves.
    pub member: MemberId,
    /// Send a `left` frame to the member.
    pub confirm: bool,
}

/// Publish to a room. Answers the sequence number the message got.
#[derive(Message, Debug)]
#[rtype(result = "Result<u64, BrokerError>")]
pub struct Publish {
    /// The room (already validated).
    pub room: String,
    /// The publisher's name.
    pub from: Arc<str>,
    /// The publisher's user; `None` for a guest or the server API.
    pub user: Option<Arc<str>>,
    /// The JSON value to publish (compact, already checked).
    pub data: Box<RawValue>,
    /// Where to send `ack {id, seq}` (or an `error` frame), for WebSocket publishers.
    pub ack: Option<(String, ClientQueue)>,
    /// The idempotency key: who publishes, and the id they gave the message (the
    /// WebSocket `id`, or REST's `Idempotency-Key`). A publish with a key seen in the
    /// room within `IDEMPOTENCY_WINDOW_SECS` is answered with the first one's sequence
    /// number and neither stored nor delivered again.
    pub key: Option<String>,
}

/// A member is typing: the room's other members are told, at most once per
/// `TYPING_INTERVAL_MS` per member.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Typing {
    /// The room.
    pub room: String,
    /// Who types.
    pub member: MemberId,
}

/// The members of a room (on every node when Redis is configured). With `reply_to`, a
/// `presence` frame is also queued there.
#[derive(Message, Debug)]
#[rtype(result = "Vec<MemberView>")]
pub struct GetPresence {
    /// The room.
    pub room: String,
    /// Queue a `presence` frame to this client as well.
    pub reply_to: Option<ClientQueue>,
}

/// Recent events of a room with `seq > since`, oldest first, at most `limit`, each the
/// JSON of an `event` frame.
#[derive(Message, Debug)]
#[rtype(result = "Vec<ByteString>")]
pub struct GetHistory {
    /// The room.
    pub room: String,
    /// Only events after this sequence number.
    pub since: u64,
    /// At most this many.
    pub limit: usize,
}

/// Every room this node holds, with its member count and last sequence number.
#[derive(Message, Debug)]
#[rtype(result = "RoomList")]
pub struct ListRooms {
    /// At most this many rooms.
    pub limit: usize,
}

/// The answer to [`ListRooms`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomList {
    /// The rooms.
    pub rooms: Vec<RoomSummary>,
    /// Whether `members` and `last_seq` are the whole cluster's (read from Redis) or this
    /// node's.
    pub cluster: bool,
}

/// One room in the answer to [`ListRooms`].
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct RoomSummary {
    /// The room.
    pub room: String,
    /// Members (WebSocket): on every node when the list is the cluster's, else this node's.
    pub members: usize,
    /// SSE subscribers on this node.
    pub subscribers: usize,
    /// The last sequence number assigned.
    pub last_seq: u64,
}

/// Disconnect the connections of a user, or one connection (the server API). Answers how
/// many were disconnected.
#[derive(Message, Debug)]
#[rtype(result = "usize")]
pub struct DisconnectClients {
    /// Every connection of this user.
    pub user: Option<String>,
    /// This connection.
    pub client: Option<String>,
}

/// Take a user's connections, or one connection, out of a room (the server API). Answers
/// how many left.
#[derive(Message, Debug)]
#[rtype(result = "usize")]
pub struct Unsubscribe {
    /// The room.
    pub room: String,
    /// Every connection of this user.
    pub user: Option<String>,
    /// This connection.
    pub client: Option<String>,
}

/// Close every connection (WebSocket close 1001, SSE streams ended): the server is
/// stopping. Answers how many WebSocket connections were told.
#[derive(Message, Debug)]
#[rtype(result = "usize")]
pub struct CloseAll;

/// What the broker tells a session about its connection.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub enum SessionNotice {
    /// The connection was evicted because its queue was full.
    Evicted {
        /// Why.
        reason: &'static str,
    },
    /// A join was refused (the client got an error frame saying why).
    JoinRefused {
        /// The room.
        room: String,
    },
    /// The server API took the connection out of a room (it was told `left`).
    Unsubscribed {
        /// The room.
        room: String,
    },
    /// The server API disconnected the client (a close frame is queued).
    Disconnected,
}

/// Why a publish (or a join) was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BrokerError {
    /// The node holds `MAX_ROOMS` rooms already.
    #[error("the server holds its maximum of {0} rooms")]
    TooManyRooms(usize),
    /// The broker's mailbox is full.
    #[error("the server is overloaded; try again")]
    Overloaded,
    /// The store that numbers the room's events (Redis, or the database) cannot be
    /// reached: nothing was published. Retry with the same idempotency key.
    #[error("{0}")]
    Unavailable(String),
}

impl BrokerError {
    /// The code clients see in an `error` frame.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooManyRooms(_) => "too_many_rooms",
            Self::Overloaded => "overloaded",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl From<crate::mailbox::MailboxFull> for BrokerError {
    fn from(_: crate::mailbox::MailboxFull) -> Self {
        Self::Overloaded
    }
}
