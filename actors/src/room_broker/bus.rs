//! The broker's side of the cross-node bus ([`crate::redis_bus`]): events, presence
//! changes and server-API commands other nodes published, and the catch-up after the bus
//! reconnects.
//!
//! While the catch-up is read from the Redis history, live events from the bus are held
//! back (`held`), so the older events are applied first and nothing is taken for a
//! duplicate.

use actix::prelude::*;

use super::RoomBroker;
use crate::protocol::{MemberView, ServerMsg};
use crate::redis_bus::{BusEvent, BusStatus, FromBus};

impl Handler<FromBus> for RoomBroker {
    type Result = ();

    fn handle(&mut self, msg: FromBus, _: &mut Self::Context) {
        if let (Some(held), BusEvent::Event(_)) = (self.held.as_mut(), &msg.event) {
            held.push(msg.event);
            return;
        }
        match msg.event {
            BusEvent::Event(event) => self.apply_event(&event),
            BusEvent::MemberJoined { room, member, node } => {
                self.relay_presence(&room, &member, &node, true)
            }
            BusEvent::MemberLeft { room, member, node } => {
                self.relay_presence(&room, &member, &node, false)
            }
            BusEvent::Command(cmd) => {
                if self.bus.as_ref().is_some_and(|b| !b.is_own(&cmd.node)) {
                    match &cmd.room {
                        Some(room) => self.unsubscribe_here(room, &cmd.user, &cmd.client),
                        None => self.disconnect_here(&cmd.user, &cmd.client),
                    };
                }
            }
        }
    }
}

impl RoomBroker {
    /// Tells this node's members of a room that someone joined or left on another node.
    fn relay_presence(&mut self, room: &str, member: &MemberView, node: &str, joined: bool) {
        if self.bus.as_ref().is_some_and(|b| b.is_own(node)) || !self.announces_presence(room) {
            return;
        }
        let msg = if joined {
            ServerMsg::MemberJoined { room, member }
        } else {
            ServerMsg::MemberLeft { room, member }
        };
        self.tell_members(room, &msg.to_text().into(), None);
    }
}

impl Handler<BusStatus> for RoomBroker {
    type Result = ();

    fn handle(&mut self, msg: BusStatus, ctx: &mut Self::Context) {
        self.metrics.bus_connected.set(i64::from(msg.connected));
        let Some(bus) = self.bus.clone() else {
            return;
        };
        if !msg.connected {
            return;
        }
        // Catch up on what was published elsewhere while the subscription was down, and
        // re-announce this node's members.
        let rooms: Vec<(String, u64)> = self
            .rooms
            .values()
            .filter(|r| !r.subs.is_empty())
            .map(|r| (r.name.to_string(), r.seq))
            .collect();
        for r in self.rooms.values() {
            for member in r.visible_members() {
                bus.presence_joined(&r.name, &member);
            }
        }
        self.held.get_or_insert_with(Vec::new);
        let fut = async move { bus.catch_up(rooms).await };
        ctx.spawn(fut.into_actor(self).map(|events, this, _| {
            let held = this.held.take().unwrap_or_default();
            for ev in events.into_iter().chain(held) {
                if let BusEvent::Event(event) = ev {
                    this.apply_event(&event);
                }
            }
        }));
    }
}
