//! The broker's side of the cross-node bus ([`crate::redis_bus`]): the rooms this node
//! serves, kept in step with Redis.
//!
//! A node serves a room while it has a local member or SSE subscriber: the room's first
//! join subscribes to its channel and reads its head (last seq and epoch); joins that come
//! meanwhile wait, and events that arrive meanwhile are held. When the last subscriber
//! leaves, the node unsubscribes and forgets the room.
//!
//! Events are applied in `seq` order, each once. An event past the next expected `seq` (a
//! gap: messages were lost while a connection was down) holds the room while the missing
//! events are read from the Redis history; an event in another epoch (Redis lost the room
//! and numbers it again) starts the room afresh. Whenever events cannot be read back, the
//! room's clients are told with a `resync` frame (`recovered: false`) — never silently.
//! After the subscription comes back, every served room is caught up the same way.

use std::sync::Arc;

use actix::prelude::*;

use super::messages::{EventFormat, Join};
use super::room::{StoredEvent, Syncing};
use super::RoomBroker;
use crate::client_queue::OutFrame;
use crate::protocol::{MemberView, RoomEvent, ServerMsg};
use crate::redis_bus::{BusEvent, BusStatus, FromBus, Head};

/// How long to wait before reading a room back again after Redis failed.
pub const RESYNC_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

impl Handler<FromBus> for RoomBroker {
    type Result = ();

    fn handle(&mut self, msg: FromBus, ctx: &mut Self::Context) {
        match msg.event {
            BusEvent::Event(event, epoch) => self.bus_event(event, epoch, ctx),
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

    /// An event from the bus, for a room this node may serve.
    fn bus_event(&mut self, event: RoomEvent, epoch: Arc<str>, ctx: &mut Context<Self>) {
        let Some(r) = self.rooms.get_mut(event.room.as_str()) else {
            return; // not served here (a message sent before the unsubscribe took)
        };
        if let Some(syncing) = r.syncing.as_mut() {
            syncing.held.push((event, epoch));
            return;
        }
        if !r.subscribed {
            return;
        }
        let room = r.name.clone();
        if r.epoch.as_deref() != Some(&*epoch) {
            // Clients are told unless this is the room's first epoch on this node; the new
            // epoch's events are read from the start of it.
            let tell = r.epoch.is_some() || std::mem::take(&mut r.lost);
            self.new_epoch(&room, epoch.clone(), tell);
            let r = self.rooms.get_mut(&*room).expect("served");
            r.syncing = Some(Syncing {
                joins: Vec::new(),
                held: vec![(event, epoch)],
            });
            self.sync_room(room, ctx);
            return;
        }
        let r = self.rooms.get_mut(&*room).expect("served");
        if event.seq <= r.seq {
            return; // delivered already
        }
        if event.seq == r.seq + 1 {
            self.deliver(&room, event.seq, StoredEvent::new(&event));
            return;
        }
        // A gap: read the missing events back before going on.
        r.syncing = Some(Syncing {
            joins: Vec::new(),
            held: vec![(event, epoch)],
        });
        self.sync_room(room, ctx);
    }

    /// The room numbers in a new epoch (Redis lost it): what this node holds of the old one
    /// is dropped, and clients that had it are told to reload (`recovered: false`).
    fn new_epoch(&mut self, room: &str, epoch: Arc<str>, tell: bool) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let level = if tell {
            log::Level::Info
        } else {
            log::Level::Debug
        };
        log::log!(
            level,
            "room={room}: epoch {} (was {:?}, seq {})",
            epoch,
            r.epoch.as_deref(),
            r.seq
        );
        r.epoch = Some(epoch);
        r.seq = 0;
        r.assigned = 0;
        let freed = r.forget_history();
        self.history_bytes -= freed;
        self.metrics.history_bytes.set(self.history_bytes as i64);
        if tell {
            self.tell_resync(room);
        }
    }

    /// Tells every subscriber of `room` that events may be missing: reload the state.
    fn tell_resync(&mut self, room: &str) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        log::info!("room={room}: clients told to resync at seq {}", r.seq);
        let msg = ServerMsg::Resync {
            room,
            seq: r.seq,
            epoch: r.epoch.as_deref(),
            recovered: false,
        }
        .to_text();
        let sse = format!("event: resync\ndata: {msg}\n\n");
        let mut failed = Vec::new();
        for sub in r.subs.values() {
            let text = match sub.format {
                EventFormat::Json => msg.clone(),
                EventFormat::Sse => sse.clone(),
                EventFormat::Text => continue,
            };
            if let Err(e) = sub.out.try_send(OutFrame::Text(text.into())) {
                failed.push((sub.id.clone(), e));
            }
        }
        self.drop_failed(failed);
    }

    /// Starts serving `room`: subscribes and reads its head; `join` waits for it.
    pub(super) fn serve_room(&mut self, join: Join, ctx: &mut Context<Self>) {
        let room = join.room.clone();
        let r = match self.room_mut(&room) {
            Ok(r) => r,
            Err(e) => {
                self.refuse_join(&room, &join.subscriber, "too_many_rooms", &e.to_string());
                return;
            }
        };
        match r.syncing.as_mut() {
            Some(syncing) => syncing.joins.push(join),
            None => {
                r.syncing = Some(Syncing {
                    joins: vec![join],
                    held: Vec::new(),
                });
                let name = r.name.clone();
                self.sync_room(name, ctx);
            }
        }
    }

    /// Reads `room` back from Redis (subscribing first if it is not yet): its head, and the
    /// events after what this node delivered.
    fn sync_room(&mut self, room: Arc<str>, ctx: &mut Context<Self>) {
        let Some(bus) = self.bus.clone() else { return };
        let Some(r) = self.rooms.get(&*room) else {
            return;
        };
        let (subscribed, seq, epoch) = (r.subscribed, r.seq, r.epoch.clone());
        let cap = bus.history_cap();
        let name = room.clone();
        let fut = async move {
            if !subscribed {
                bus.subscribe(&name).await?;
            }
            let head = bus.head(&name).await?;
            let after = if head.epoch == epoch { seq } else { 0 };
            let events = if head.seq > after && epoch.is_some() {
                bus.history(&name, after, cap).await?
            } else {
                Vec::new()
            };
            Ok::<_, String>((head, events))
        };
        ctx.spawn(
            fut.into_actor(self)
                .map(move |result, this, ctx| match result {
                    Ok((head, events)) => this.synced(&room, head, events, ctx),
                    Err(e) => this.sync_failed(room, &e, subscribed, ctx),
                }),
        );
    }

    /// `room`'s head and missed events are read: apply them, then what was held, then the
    /// joins that waited.
    fn synced(
        &mut self,
        room: &Arc<str>,
        head: Head,
        events: Vec<BusEvent>,
        ctx: &mut Context<Self>,
    ) {
        let Some(r) = self.rooms.get_mut(&**room) else {
            return;
        };
        log::debug!(
            "room={room}: synced at head {} {:?} (had {} {:?}; {} events read, {} held)",
            head.seq,
            head.epoch.as_deref(),
            r.seq,
            r.epoch.as_deref(),
            events.len(),
            r.syncing.as_ref().map_or(0, |s| s.held.len())
        );
        let first_time = !r.subscribed;
        r.subscribed = true;
        let syncing = r.syncing.take().unwrap_or_default();
        if r.epoch != head.epoch {
            match head.epoch.clone() {
                // Lost by Redis with nothing numbered since: the next event starts anew.
                None if first_time => {}
                None => {
                    // Redis lost the room: its next event starts a new epoch, and the
                    // clients are told then (with that epoch).
                    r.epoch = None;
                    r.seq = 0;
                    r.assigned = 0;
                    r.lost = true;
                    let freed = r.forget_history();
                    self.history_bytes -= freed;
                }
                Some(epoch) => {
                    let tell = !first_time && r.epoch.is_some();
                    self.new_epoch(room, epoch, tell);
                }
            }
        }
        let r = self.rooms.get_mut(&**room).expect("served");
        if first_time {
            // Replays come from Redis; live events from here.
            r.seq = r.seq.max(head.seq);
            r.assigned = r.seq;
        } else {
            let delivered = r.seq;
            // Only the room's epoch: the history may still hold events of an earlier one.
            let epoch = r.epoch.clone();
            let events: Vec<RoomEvent> = events
                .into_iter()
                .filter_map(|ev| match ev {
                    BusEvent::Event(event, e) if Some(&e) == epoch.as_ref() => Some(event),
                    _ => None,
                })
                .collect();
            // A new epoch starts where Redis numbered on from.
            let mut expected = match (r.seq, events.first()) {
                (0, Some(first)) => first.seq,
                _ => r.seq + 1,
            };
            let mut missing = false;
            for event in events {
                {
                    if event.seq < expected {
                        continue;
                    }
                    missing |= event.seq > expected;
                    expected = event.seq + 1;
                    self.deliver(room, event.seq, StoredEvent::new(&event));
                }
            }
            let r = self.rooms.get_mut(&**room).expect("served");
            if head.seq < delivered && head.epoch == r.epoch {
                // Redis went back in time (a failover lost acknowledged writes): the next
                // event comes in a new epoch; until then clients know to reload.
                log::warn!(
                    "room={room}: Redis holds seq {} but {delivered} was delivered: writes were lost",
                    head.seq
                );
                r.seq = head.seq;
                r.assigned = head.seq;
                r.lost = true;
                self.tell_resync(room);
            } else if head.seq > r.seq || missing {
                // Older than the kept history: what is gone is gone, and clients know.
                r.seq = r.seq.max(head.seq);
                r.assigned = r.seq;
                self.tell_resync(room);
            }
        }
        for (event, epoch) in syncing.held {
            self.bus_event(event, epoch, ctx);
        }
        for join in syncing.joins {
            self.join_served(join, ctx);
        }
    }

    /// Redis did not answer: joins that waited are refused (`unavailable`); a room already
    /// served tries again, its clients told that events may be missing.
    fn sync_failed(
        &mut self,
        room: Arc<str>,
        why: &str,
        subscribed: bool,
        ctx: &mut Context<Self>,
    ) {
        log::warn!("room={room}: cannot read it from Redis ({why})");
        let Some(r) = self.rooms.get_mut(&*room) else {
            return;
        };
        let syncing = r.syncing.take().unwrap_or_default();
        let message = format!("the bus is unavailable: {why}");
        for join in &syncing.joins {
            self.refuse_join(&room, &join.subscriber, "unavailable", &message);
        }
        if subscribed {
            // Keep holding what arrives, and try again.
            if let Some(r) = self.rooms.get_mut(&*room) {
                r.syncing = Some(Syncing {
                    joins: Vec::new(),
                    held: syncing.held,
                });
            }
            ctx.run_later(RESYNC_RETRY, move |this, ctx| {
                if this.rooms.get(&*room).is_some_and(|r| r.syncing.is_some()) {
                    this.sync_room(room, ctx);
                }
            });
        } else {
            self.release_if_vacant(&room);
        }
    }
}

impl Handler<BusStatus> for RoomBroker {
    type Result = ();

    fn handle(&mut self, msg: BusStatus, ctx: &mut Self::Context) {
        self.metrics.bus_connected.set(i64::from(msg.connected));
        if !msg.connected || self.bus.is_none() {
            return;
        }
        // The subscription was made again (every served room resubscribed): catch up on
        // what was published meanwhile, and re-announce this node's members.
        let served: Vec<Arc<str>> = self
            .rooms
            .values()
            .filter(|r| r.subscribed)
            .map(|r| r.name.clone())
            .collect();
        if let Some(bus) = &self.bus {
            for r in self.rooms.values().filter(|r| r.subscribed) {
                for member in r.visible_members() {
                    bus.presence_joined(&r.name, &member);
                }
            }
        }
        for room in served {
            let r = self.rooms.get_mut(&*room).expect("served");
            if r.syncing.is_none() {
                r.syncing = Some(Syncing::default());
                self.sync_room(room, ctx);
            }
        }
    }
}
