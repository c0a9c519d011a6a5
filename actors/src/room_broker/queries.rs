//! Reading the rooms' state: presence, history and the list of rooms. With Redis, presence
//! and history come from Redis (every node's members, the shared history), falling back to
//! this node's memory when Redis fails.

use actix::prelude::*;
use bytestring::ByteString;

use super::messages::{GetHistory, GetPresence, ListRooms, RoomSummary};
use super::room::{Room, StoredEvent};
use super::RoomBroker;
use crate::protocol::{MemberView, ServerMsg};

impl Handler<GetPresence> for RoomBroker {
    type Result = ResponseActFuture<Self, Vec<MemberView>>;

    fn handle(&mut self, msg: GetPresence, _: &mut Self::Context) -> Self::Result {
        let local = self
            .rooms
            .get(msg.room.as_str())
            .map(Room::visible_members)
            .unwrap_or_default();
        let GetPresence { room, reply_to } = msg;
        let bus = self.connected_bus();
        let fut = async move {
            let members = match bus {
                Some(bus) => bus.presence(&room).await.unwrap_or_else(|e| {
                    log::warn!(
                        "presence from Redis failed ({e}); answering with this node's members"
                    );
                    local
                }),
                None => local,
            };
            if let Some(out) = &reply_to {
                let _ = out.text(
                    ServerMsg::Presence {
                        room: &room,
                        members: &members,
                    }
                    .to_text(),
                );
            }
            members
        };
        Box::pin(fut.into_actor(self))
    }
}

impl Handler<GetHistory> for RoomBroker {
    type Result = ResponseActFuture<Self, Vec<ByteString>>;

    fn handle(&mut self, msg: GetHistory, _: &mut Self::Context) -> Self::Result {
        let local: Vec<ByteString> = self
            .rooms
            .get(msg.room.as_str())
            .map(|r| {
                r.history
                    .iter()
                    .filter(|e| e.seq > msg.since)
                    .take(msg.limit)
                    .map(|e| e.json.clone())
                    .collect()
            })
            .unwrap_or_default();
        let bus = self.connected_bus();
        let fut = async move {
            let Some(bus) = bus else { return local };
            match bus.history(&msg.room, msg.since, msg.limit).await {
                Ok(events) => StoredEvent::from_bus(events)
                    .into_iter()
                    .map(|e| e.json)
                    .collect(),
                Err(e) => {
                    log::warn!("history from Redis failed ({e}); answering from memory");
                    local
                }
            }
        };
        Box::pin(fut.into_actor(self))
    }
}

impl Handler<ListRooms> for RoomBroker {
    type Result = Vec<RoomSummary>;

    fn handle(&mut self, _: ListRooms, _: &mut Self::Context) -> Self::Result {
        let mut rooms: Vec<RoomSummary> = self
            .rooms
            .values()
            .map(|r| {
                let members = r.visible_count();
                RoomSummary {
                    room: r.name.to_string(),
                    members,
                    subscribers: r.subs.len() - members,
                    last_seq: r.seq,
                }
            })
            .collect();
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        rooms
    }
}
