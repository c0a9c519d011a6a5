//! `RoomBroker`: the chat room broadcaster.
//!
//! One actor owns every room on this node: its members, presence, sequence numbers, recent
//! history, and its SSE subscribers. WebSocket sessions and REST handlers send it the
//! messages of [`messages`] through its [`BrokerHandle`]; nothing else touches room state.
//!
//! Publishing: the broker assigns the room's next sequence number, writes the event once
//! (`ByteString`, see [`room`]), appends it to the bounded history and queues the same
//! buffer to every subscriber with `try_send`. A subscriber whose queue is full is evicted
//! on the spot, so a slow client never delays the others or the broker.
//!
//! With Redis configured ([`crate::redis_bus`]), sequence numbers are assigned once per room
//! across nodes by Redis, every node receives every event from Redis pub/sub in `seq` order
//! and fans it out to its own subscribers ([`bus`]), and history lives in a capped Redis
//! stream. When Redis is unreachable the broker keeps delivering locally, numbering from the
//! last `seq` it saw, and resumes cross-node delivery by itself once Redis is back.
//!
//! The parts: [`messages`] (what the broker is told and answers), [`room`] (a room and its
//! events), [`replay`] (joining with `since`), [`queries`] (presence, history, the room
//! list), [`bus`] (events from other nodes), [`server_api`] (disconnecting and unsubscribing
//! clients for the server API).

mod bus;
mod durable;
mod idempotency;
mod memory;
pub mod messages;
mod queries;
pub mod replay;
mod room;
mod server_api;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::CloseCode;
use bytestring::ByteString;

pub use durable::MAX_APPEND_BATCH;
pub use messages::*;
use room::{MemberEntry, Room, StoredEvent};
pub use server_api::DISCONNECTED_CLOSE_CODE;

use crate::access::AccessPolicy;
use crate::client_queue::{ClientQueue, OutFrame, SendError};
use crate::clock::rfc3339_now;
use crate::db::Database;
use crate::mailbox::Mailbox;
use crate::metrics::RealtimeMetrics;
use crate::protocol::{RoomEvent, ServerMsg};
use crate::redis_bus::{BusStatus, FromBus, RedisBus};
use crate::sse_feed::{Activity, FeedHandle};
use durable::Durable;
use idempotency::Idempotency;

/// The broker's address with its mailbox gauge (`courier_broker_mailbox_depth`): the only
/// way to send it messages.
pub type BrokerHandle = Mailbox<RoomBroker>;

crate::counted_handlers!(RoomBroker: Connect, Disconnect, Join, Leave, Publish, Typing,
    GetPresence, GetHistory, ListRooms, CloseAll, FromBus, BusStatus, DisconnectClients,
    Unsubscribe);

/// Tuning of the broker; every value comes from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Events kept per room for replay (`ROOM_HISTORY_SIZE`).
    pub history_limit: usize,
    /// Bytes of events kept per room (`ROOM_HISTORY_MAX_BYTES`).
    pub history_max_bytes: usize,
    /// Bytes of events kept in all rooms of this node (`HISTORY_MAX_BYTES`); past it, the
    /// history of the rooms quiet the longest is dropped first.
    pub history_budget: usize,
    /// Most rooms held at once (`MAX_ROOMS`). A room with no subscribers and no events is
    /// let go as soon as its last subscriber leaves; when the node is full, the room quiet
    /// the longest among those without subscribers is forgotten to make space.
    pub max_rooms: usize,
    /// `typing` is relayed at most once per member per room per this interval
    /// (`TYPING_INTERVAL_MS`).
    pub typing_interval: Duration,
    /// A room with no subscribers and no activity for this long is dropped from memory
    /// (`ROOM_IDLE_SECS`).
    pub room_idle: Duration,
    /// Mailbox capacity; senders that find it full get an `overloaded` error
    /// (`BROKER_MAILBOX_CAPACITY`).
    pub mailbox_capacity: usize,
    /// Rooms with more members than this send no `member_joined`/`member_left` frames
    /// (each would go to every member: quadratic work as a big room fills); clients ask
    /// for `presence` instead (`PRESENCE_EVENTS_MAX_MEMBERS`).
    pub presence_events_max_members: usize,
    /// The namespaces: a room's history size and whether it announces presence.
    pub access: Arc<AccessPolicy>,
    /// A room's events are kept this long after they were published, and a room with no
    /// event for this long is forgotten: its numbering starts again in a new epoch
    /// (`ROOM_HISTORY_TTL_SECS`).
    pub history_ttl: Duration,
    /// A publish retried with the same idempotency key within this window gets the first
    /// one's sequence number (`IDEMPOTENCY_WINDOW_SECS`).
    pub idempotency_window: Duration,
    /// Most idempotency keys kept without Redis (`IDEMPOTENCY_MAX_KEYS`).
    pub idempotency_max_keys: usize,
}

/// How often the rooms published in are written to the rooms index (`GET /rooms`).
pub const ROOMS_INDEX_INTERVAL: Duration = Duration::from_secs(1);

/// How often idle rooms are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// The broker actor.
pub struct RoomBroker {
    config: BrokerConfig,
    rooms: HashMap<Arc<str>, Room>,
    members: HashMap<MemberId, MemberEntry>,
    metrics: RealtimeMetrics,
    feed: Option<FeedHandle>,
    bus: Option<RedisBus>,
    /// Bytes of history in all rooms.
    history_bytes: usize,
    /// Without Redis: the relational store that numbers and keeps rooms' events.
    durable: Option<Durable>,
    /// With Redis: rooms published in since the rooms index was last written.
    touched: HashSet<String>,
}

impl RoomBroker {
    /// A broker; `feed` receives room activity for `/sse/updates`; `bus` connects nodes
    /// and keeps the rooms' history; without it `db` does (without either, rooms live in
    /// memory only).
    pub fn new(
        config: BrokerConfig,
        metrics: RealtimeMetrics,
        feed: Option<FeedHandle>,
        bus: Option<RedisBus>,
        db: Option<Database>,
    ) -> Self {
        let durable = match (&bus, db) {
            (None, Some(db)) => Some(Durable::new(
                db,
                Idempotency::new(
                    config.idempotency_window,
                    config.idempotency_max_keys,
                    metrics.idempotency_keys.clone(),
                ),
            )),
            _ => None,
        };
        Self {
            durable,
            touched: HashSet::new(),
            config,
            rooms: HashMap::new(),
            members: HashMap::new(),
            metrics,
            feed,
            bus,
            history_bytes: 0,
        }
    }

    /// Starts the broker on `arbiter` (a thread of its own, so fan-out never competes with
    /// an HTTP worker's event loop) and, with Redis, its subscription to the bus.
    pub fn start(self, arbiter: &actix_rt::ArbiterHandle) -> BrokerHandle {
        let bus = self.bus.clone();
        let depth = self.metrics.broker_mailbox.clone();
        let handle = Mailbox::start(self, arbiter, depth);
        if let Some(bus) = bus {
            bus.start(
                handle.recipient::<FromBus>(),
                handle.recipient::<BusStatus>(),
            );
        }
        handle
    }

    /// The bus, when it is configured and its subscription is live.
    fn connected_bus(&self) -> Option<RedisBus> {
        self.bus.clone().filter(RedisBus::is_connected)
    }

    fn activity(&self, activity: Activity) {
        if let Some(feed) = &self.feed {
            let _ = feed.try_send(activity);
        }
    }

    /// Whether membership changes in `room` are announced to its members.
    fn announces_presence(&self, room: &str) -> bool {
        self.rooms.get(room).is_none_or(|r| {
            r.presence_events && r.visible_count() <= self.config.presence_events_max_members
        })
    }

    /// Queues `text` (a presence change or `typing`) to every visible JSON member of `room`
    /// that may see presence, except `except`.
    fn tell_members(&mut self, room: &str, text: &ByteString, except: Option<&MemberId>) {
        let mut slow = Vec::new();
        if let Some(r) = self.rooms.get(room) {
            for sub in r.subs.values() {
                if sub.format != EventFormat::Json
                    || !sub.visible
                    || !sub.presence
                    || Some(&sub.id) == except
                {
                    continue;
                }
                if let Err(e) = sub.out.try_send(OutFrame::Text(text.clone())) {
                    slow.push((sub.id.clone(), e));
                }
            }
        }
        self.drop_failed(slow);
    }

    /// Stores a numbered event and fans it out to local subscribers.
    fn apply_event(&mut self, event: &RoomEvent) {
        self.deliver(&event.room, event.seq, StoredEvent::new(event));
    }

    /// Keeps event `seq` of `room` in memory and fans it out to local subscribers.
    fn deliver(&mut self, room: &str, seq: u64, ev: StoredEvent) {
        let max_bytes = self.config.history_max_bytes;
        let Ok(r) = self.room_mut(room) else {
            return;
        };
        let limit = r.history_limit;
        if seq <= r.seq && r.history.back().is_some_and(|e| e.seq >= seq) {
            return; // already applied (a duplicate from the bus)
        }
        r.seq = r.seq.max(seq);
        r.assigned = r.assigned.max(seq);
        r.last_active = Instant::now();
        let mut delivered = 0u64;
        let mut failed = Vec::new();
        let (mut text, mut sse) = (None, None);
        for sub in r.subs.values() {
            let payload = match sub.format {
                EventFormat::Json => ev.json.clone(),
                EventFormat::Text => text
                    .get_or_insert_with(|| ev.render(EventFormat::Text, None))
                    .clone(),
                EventFormat::Sse => sse
                    .get_or_insert_with(|| ev.render(EventFormat::Sse, r.epoch.as_deref()))
                    .clone(),
            };
            match sub.out.try_send(OutFrame::Text(payload)) {
                Ok(()) => delivered += 1,
                Err(e) => failed.push((sub.id.clone(), e)),
            }
        }
        let grown = r.remember(ev, limit, max_bytes);
        self.history_bytes = self.history_bytes.saturating_add_signed(grown);
        self.keep_history_budget();
        self.metrics.delivered.inc_by(delivered);
        self.drop_failed(failed);
        self.activity(Activity::Published {
            room: room.to_owned(),
            seq,
        });
    }

    /// Removes subscribers whose queue failed: full ones are evicted as slow.
    fn drop_failed(&mut self, failed: Vec<(MemberId, SendError)>) {
        for (id, err) in failed {
            if err == SendError::Full {
                self.metrics.slow_clients_dropped.inc();
                if let Some(entry) = self.members.get(&id) {
                    entry.out.evict();
                    if let Some(session) = &entry.session {
                        let _ = session.try_send(SessionNotice::Evicted {
                            reason: "outbound queue full",
                        });
                    }
                }
                log::info!("member={id} evicted: outbound queue full (slow consumer)");
            }
            self.remove_member(&id);
        }
    }

    /// Takes a member out of every room, telling the others.
    fn remove_member(&mut self, id: &MemberId) {
        let Some(entry) = self.members.remove(id) else {
            return;
        };
        for room in entry.rooms {
            self.leave_room(&room, id, false);
        }
    }

    fn leave_room(&mut self, room: &str, id: &MemberId, confirm: bool) {
        let Some(sub) = self.rooms.get_mut(room).and_then(|r| r.remove(id)) else {
            // Not a member: a client that asked is still answered.
            if confirm {
                if let Some(entry) = self.members.get(id) {
                    let _ = entry.out.text(
                        ServerMsg::room_error(room, "not_joined", &format!("not in room {room:?}"))
                            .to_text(),
                    );
                }
            }
            return;
        };
        if let Some(r) = self.rooms.get_mut(room) {
            r.last_active = Instant::now();
        }
        if let Some(entry) = self.members.get_mut(id) {
            entry.rooms.retain(|x| &**x != room);
        }
        if !sub.visible {
            self.release_if_vacant(room);
            return;
        }
        self.metrics.members.dec();
        if confirm {
            let _ = sub.out.text(ServerMsg::Left { room }.to_text());
        }
        let view = sub.view();
        if self.announces_presence(room) {
            let text = ServerMsg::MemberLeft {
                room,
                member: &view,
            }
            .to_text()
            .into();
            self.tell_members(room, &text, Some(id));
        }
        if let Some(bus) = &self.bus {
            bus.presence_left(room, &view);
        }
        self.activity(Activity::MemberLeft {
            room: room.to_owned(),
            name: view.name,
        });
        self.release_if_vacant(room);
    }
}

impl Actor for RoomBroker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.config.mailbox_capacity);
        self.load_heads(ctx);
        ctx.run_interval(SWEEP_INTERVAL, |this, ctx| {
            this.sweep();
            this.expire_stored_history(ctx);
        });
        if self.bus.is_some() {
            ctx.run_interval(ROOMS_INDEX_INTERVAL, |this, _| {
                if let (Some(bus), false) = (&this.bus, this.touched.is_empty()) {
                    bus.touch_rooms(this.touched.drain().collect());
                }
            });
            ctx.run_interval(crate::redis_bus::PRESENCE_REFRESH_INTERVAL, |this, _| {
                if let Some(bus) = &this.bus {
                    let members = this
                        .rooms
                        .values()
                        .filter(|r| r.subscribed && r.visible_count() > 0)
                        .map(|r| (r.name.to_string(), r.visible_members()))
                        .collect();
                    bus.refresh_presence(members);
                }
            });
        }
    }
}

impl Handler<Connect> for RoomBroker {
    type Result = ();

    fn handle(&mut self, msg: Connect, _: &mut Self::Context) {
        self.members.entry(msg.member).or_insert(MemberEntry {
            rooms: Vec::new(),
            out: msg.out,
            session: Some(msg.session),
            user: msg.user,
        });
    }
}

impl Handler<Disconnect> for RoomBroker {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, _: &mut Self::Context) {
        self.remove_member(&msg.member);
    }
}

impl Handler<Leave> for RoomBroker {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Self::Context) {
        self.leave_room(&msg.room, &msg.member, msg.confirm);
    }
}

/// Queues `ack {id, seq}` to a WebSocket publisher.
pub(super) fn send_ack(ack: &Option<(String, ClientQueue)>, seq: u64) {
    if let Some((id, out)) = ack {
        let _ = out.text(ServerMsg::Ack { id, seq }.to_text());
    }
}

impl Handler<Publish> for RoomBroker {
    type Result = ResponseActFuture<Self, Result<u64, BrokerError>>;

    fn handle(&mut self, msg: Publish, ctx: &mut Self::Context) -> Self::Result {
        if self.durable.is_some() {
            let reply = self.publish_durable(msg, ctx);
            return Box::pin(actix::fut::wrap_future(reply));
        }
        if let Some(bus) = self.bus.clone() {
            return self.publish_on_bus(bus, msg);
        }
        // Neither Redis nor a database: numbered in memory only.
        let Publish {
            room,
            from,
            user,
            data,
            ack,
            key: _,
        } = msg;
        let last_seq = match self.room_mut(&room) {
            Ok(r) => r.seq,
            Err(e) => {
                durable::refuse(&ack, &e);
                return Box::pin(actix::fut::ready(Err(e)));
            }
        };
        self.metrics.published.inc();
        let event = RoomEvent {
            room,
            seq: last_seq + 1,
            from,
            user,
            data,
            ts: rfc3339_now(),
        };
        self.apply_event(&event);
        send_ack(&ack, event.seq);
        Box::pin(actix::fut::ready(Ok(event.seq)))
    }
}

impl RoomBroker {
    /// Publishes through Redis, which numbers the event and sends it to every node serving
    /// the room (this one included, if it does): delivery happens when it comes back on the
    /// subscription, in seq order. While the bus is down, or when Redis does not answer,
    /// the publish is refused: nothing is ever numbered here.
    fn publish_on_bus(
        &mut self,
        bus: RedisBus,
        msg: Publish,
    ) -> ResponseActFuture<Self, Result<u64, BrokerError>> {
        let Publish {
            room,
            from,
            user,
            data,
            ack,
            key,
        } = msg;
        if !bus.is_connected() {
            let e = BrokerError::Unavailable(
                "the bus (Redis) is unavailable; nothing was published: retry with the same id"
                    .into(),
            );
            durable::refuse(&ack, &e);
            return Box::pin(actix::fut::ready(Err(e)));
        }
        let event = RoomEvent {
            room,
            seq: 0,
            from,
            user,
            data,
            ts: rfc3339_now(),
        };
        let room = event.room.clone();
        Box::pin(bus.publish(event, key).into_actor(self).map(
            move |result, this, _| match result {
                Ok(published) => {
                    if !published.repeated {
                        this.metrics.published.inc();
                        this.touched.insert(room);
                    }
                    send_ack(&ack, published.seq);
                    Ok(published.seq)
                }
                Err(e) => {
                    log::warn!("room={room}: publish through Redis failed: {e}");
                    let e = BrokerError::Unavailable(format!(
                        "the bus (Redis) did not confirm the publish ({e}); retry with the same id"
                    ));
                    durable::refuse(&ack, &e);
                    Err(e)
                }
            },
        ))
    }
}

impl Handler<Typing> for RoomBroker {
    type Result = ();

    fn handle(&mut self, msg: Typing, _: &mut Self::Context) {
        let interval = self.config.typing_interval;
        let Some(r) = self.rooms.get_mut(msg.room.as_str()) else {
            return;
        };
        let Some(sub) = r.subs.get(&msg.member) else {
            return;
        };
        let now = Instant::now();
        if r.typing
            .get(&msg.member)
            .is_some_and(|t| now.duration_since(*t) < interval)
        {
            return; // debounced
        }
        r.typing.insert(msg.member.clone(), now);
        let text = ServerMsg::Typing {
            room: &msg.room,
            from: &sub.name,
        }
        .to_text()
        .into();
        self.tell_members(&msg.room, &text, Some(&msg.member));
    }
}

impl Handler<CloseAll> for RoomBroker {
    type Result = usize;

    fn handle(&mut self, _: CloseAll, _: &mut Self::Context) -> usize {
        let n = self.members.len();
        for entry in self.members.values() {
            let _ = entry.out.try_send(OutFrame::Close(
                CloseCode::Away,
                "server shutting down".to_owned(),
            ));
        }
        n
    }
}
