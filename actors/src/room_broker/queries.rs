//! Reading the rooms' state: presence, history and the list of rooms. With Redis, presence
//! and history come from Redis (every node's members, the shared history), falling back to
//! this node's memory when Redis fails.

use actix::prelude::*;
use bytestring::ByteString;

use super::messages::{GetHistory, GetPresence, ListRooms, RoomList, RoomSummary};
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
        let room = self.rooms.get(msg.room.as_str());
        let local: Vec<ByteString> = room
            .map(|r| {
                r.history
                    .iter()
                    .filter(|e| e.seq > msg.since)
                    .take(msg.limit)
                    .map(|e| e.json.clone())
                    .collect()
            })
            .unwrap_or_default();
        // Without Redis, memory answers when it reaches back to `since`; else the database.
        let memory_reaches = room.is_some_and(|r| {
            r.history
                .front()
                .is_some_and(|e| e.seq <= msg.since.saturating_add(1))
                || r.seq <= msg.since
        });
        if let Some(d) = self.durable.as_ref().filter(|_| !memory_reaches) {
            let db = d.db().clone();
            let fut = async move {
                match db.room_events_after(&msg.room, msg.since, msg.limit).await {
                    Ok(rows) => rows.into_iter().map(|(_, json)| json.into()).collect(),
                    Err(e) => {
                        log::warn!("history from the database failed ({e}); answering from memory");
                        local
                    }
                }
            };
            return Box::pin(fut.into_actor(self));
        }
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
    type Result = ResponseActFuture<Self, RoomList>;

    fn handle(&mut self, msg: ListRooms, _: &mut Self::Context) -> Self::Result {
        let mut local: Vec<RoomSummary> = self
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
        // Rooms the store keeps that are not in memory now.
        if let Some(d) = &self.durable {
            local.extend(d.heads.iter().map(|(room, (_, seq))| RoomSummary {
                room: room.to_string(),
                members: 0,
                subscribers: 0,
                last_seq: *seq,
            }));
        }
        local.sort_by(|a, b| a.room.cmp(&b.room));
        local.truncate(msg.limit);
        let Some(bus) = self.connected_bus() else {
            return Box::pin(actix::fut::ready(RoomList {
                rooms: local,
                cluster: false,
            }));
        };
        // With Redis: the rooms with events lately, their numbers and members from Redis;
        // SSE subscribers are this node's.
        let fut = async move { bus.rooms(msg.limit).await };
        Box::pin(
            fut.into_actor(self)
                .map(move |result, this, _| match result {
                    Ok(rooms) => {
                        let mut rooms: Vec<RoomSummary> = rooms
                            .into_iter()
                            .map(|(room, last_seq, members)| {
                                let subscribers = this
                                    .rooms
                                    .get(room.as_str())
                                    .map_or(0, |r| r.subs.len() - r.visible_count());
                                RoomSummary {
                                    room,
                                    members,
                                    subscribers,
                                    last_seq,
                                }
                            })
                            .collect();
                        rooms.sort_by(|a, b| a.room.cmp(&b.room));
                        RoomList {
                            rooms,
                            cluster: true,
                        }
                    }
                    Err(e) => {
                        log::warn!("rooms from Redis failed ({e}); answering with this node's");
                        RoomList {
                            rooms: local,
                            cluster: false,
                        }
                    }
                }),
        )
    }
}
