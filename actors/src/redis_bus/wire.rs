//! What travels on the bus: room events, presence changes and server-API commands, as
//! they are written to a room's channel and history, and read back.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::COMMAND_ROOM;
use crate::protocol::{MemberView, RoomEvent};

/// Something that arrived on the bus.
#[derive(Debug)]
pub enum BusEvent {
    /// A room event, numbered by Redis, in its epoch.
    Event(RoomEvent, Arc<str>),
    /// A member joined on some node.
    MemberJoined {
        /// The room.
        room: String,
        /// Who.
        member: MemberView,
        /// The node it joined on.
        node: String,
    },
    /// A member left on some node.
    MemberLeft {
        /// The room.
        room: String,
        /// Who.
        member: MemberView,
        /// The node it left from.
        node: String,
    },
    /// The server API disconnected or unsubscribed clients on some node; every other node
    /// does the same with its own connections.
    Command(ServerCommand),
}

/// A server-API command for every node: disconnect (no `room`) or unsubscribe from `room`
/// every connection of `user`, or the connection `client`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCommand {
    /// The room to take them out of; `None`: disconnect them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Every connection of this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// This connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The node that received the request (it has applied it already).
    pub node: String,
}

/// What travels on a room channel and is kept in its history.
#[derive(Serialize, Deserialize)]
pub(super) struct Wire<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) epoch: Option<&'a str>,
    pub(super) k: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) user: Option<&'a str>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    pub(super) data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ts: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) member: Option<MemberView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) node: Option<&'a str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) cmd: Option<ServerCommand>,
}

impl Wire<'_> {
    pub(super) fn kind(k: &str) -> Wire<'_> {
        Wire {
            seq: None,
            epoch: None,
            k,
            from: None,
            user: None,
            data: None,
            ts: None,
            member: None,
            node: None,
            cmd: None,
        }
    }
}

/// A room's head in Redis: its last sequence number and epoch (`None`: Redis has no
/// numbering for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The last sequence number given.
    pub seq: u64,
    /// The epoch; `None` when the room has none (nothing published, or lost).
    pub epoch: Option<Arc<str>>,
}

pub(super) fn parse_wire(room: String, payload: &[u8]) -> Option<BusEvent> {
    let wire: Wire<'_> = serde_json::from_slice(payload).ok()?;
    match wire.k {
        "e" => Some(BusEvent::Event(
            RoomEvent {
                room,
                seq: wire.seq?,
                from: wire.from?.into(),
                user: wire.user.map(Into::into),
                data: wire.data?.to_owned(),
                ts: wire.ts?.to_owned(),
            },
            wire.epoch?.into(),
        )),
        "j" => Some(BusEvent::MemberJoined {
            room,
            member: wire.member?,
            node: wire.node?.to_owned(),
        }),
        "l" => Some(BusEvent::MemberLeft {
            room,
            member: wire.member?,
            node: wire.node?.to_owned(),
        }),
        "c" if room == COMMAND_ROOM => Some(BusEvent::Command(wire.cmd?)),
        _ => None,
    }
}

/// A publish's outcome: the sequence number, its epoch, and whether it was a retry of an
/// earlier publish with the same idempotency key (nothing new was published).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The sequence number.
    pub seq: u64,
    /// The room's epoch.
    pub epoch: Arc<str>,
    /// True when the key was seen: the earlier publish's number.
    pub repeated: bool,
}
