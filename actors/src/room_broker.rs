//! `RoomBroker`: the chat room broadcaster.
//!
//! One actor owns every room on this node: its members, presence, sequence numbers, recent
//! history, and its SSE subscribers. WebSocket sessions, REST handlers and (later) jobs send
//! it messages; nothing else touches room state.
//!
//! Publishing: the broker assigns the room's next sequence number, renders the event once
//! (`ByteString`), appends it to the bounded history and queues the same buffer to every
//! subscriber with `try_send`. A subscriber whose queue is full is evicted on the spot, so a
//! slow client never delays the others or the broker.
//!
//! With Redis configured ([`crate::redis_bus`]), sequence numbers are assigned once per room
//! across nodes by Redis, every node receives every event from Redis pub/sub in `seq` order
//! and fans it out to its own subscribers, and history lives in a capped Redis stream. When
//! Redis is unreachable the broker keeps delivering locally, numbering from the last `seq` it
//! saw, and resumes cross-node delivery by itself once Redis is back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::CloseCode;
use bytestring::ByteString;
use chrono::{SecondsFormat, Utc};
use serde_json::value::RawValue;

use crate::metrics::RealtimeMetrics;
use crate::outbound::{OutFrame, Outbound, SendError};
use crate::protocol::{EventFrame, MemberView, ServerMsg};
use crate::redis_bus::{BusEvent, RedisBus};
use crate::sse_feed::{Activity, SseFeed};

/// A connection's id, unique across nodes.
pub type MemberId = Arc<str>;

/// Tuning of the broker; every value comes from configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Events kept per room for replay (`ROOM_HISTORY_SIZE`).
    pub history_limit: usize,
    /// Most rooms held at once (`MAX_ROOMS`).
    pub max_rooms: usize,
    /// `typing` is relayed at most once per member per room per this interval.
    pub typing_interval: Duration,
    /// A room with no subscribers and no activity for this long is dropped from memory.
    pub room_idle: Duration,
    /// Mailbox capacity; senders that find it full get an `overloaded` error.
    pub mailbox_capacity: usize,
    /// Rooms with more members than this send no `member_joined`/`member_left` frames
    /// (each would go to every member: quadratic work as a big room fills); clients ask
    /// for `presence` instead (`PRESENCE_EVENTS_MAX_MEMBERS`).
    pub presence_events_max_members: usize,
}

/// How a subscriber wants room events rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `/ws/json` frames: `event`, `member_joined`, ...
    Json,
    /// Plain text (the seed's `/ws/chat`): the event's data when it is a string.
    Text,
    /// An SSE stream: `id: <seq>`, `event: message`, `data: <event JSON>`.
    Sse,
}

/// A subscriber to hand to [`Join`].
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// The connection's id.
    pub id: MemberId,
    /// The name others see.
    pub name: Arc<str>,
    /// The connection's outbound queue.
    pub out: Outbound,
    /// How events are rendered for it.
    pub format: Format,
    /// Whether it appears in presence (WebSocket members) or not (SSE subscribers).
    pub visible: bool,
    /// Told when the broker evicts the connection for being slow.
    pub session: Option<Recipient<Evicted>>,
}

/// Sent to a session the broker evicted because its queue was full.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Evicted {
    /// Why.
    pub reason: &'static str,
}

/// Join a room (or subscribe to it over SSE), replaying events after `since` first.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Join {
    /// The room (already validated).
    pub room: String,
    /// Who joins.
    pub subscriber: Subscriber,
    /// The last sequence number the subscriber already has.
    pub since: Option<u64>,
}

/// A WebSocket connection opened; it is closed with 1001 by [`CloseAll`] on shutdown.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Connect {
    /// The connection's id.
    pub member: MemberId,
    /// Its queue.
    pub out: Outbound,
    /// Its session.
    pub session: Recipient<Evicted>,
}

/// Leave a room.
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

/// A connection is gone: leave every room.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Disconnect {
    /// Who.
    pub member: MemberId,
}

/// Publish to a room. Replies with the sequence number assigned.
#[derive(Message, Debug)]
#[rtype(result = "Result<u64, BrokerError>")]
pub struct Publish {
    /// The room (already validated).
    pub room: String,
    /// The publisher's name.
    pub from: Arc<str>,
    /// The JSON value to publish.
    pub data: Box<RawValue>,
    /// Where to send `ack {id, seq}` (or an `error` frame), for WebSocket publishers.
    pub ack: Option<(String, Outbound)>,
}

/// Relay `typing` to the room's other members (at most once per interval).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Typing {
    /// The room.
    pub room: String,
    /// Who types.
    pub member: MemberId,
}

/// The members of a room. With `reply_to`, a `presence` frame is also queued there.
#[derive(Message, Debug)]
#[rtype(result = "Vec<MemberView>")]
pub struct GetPresence {
    /// The room.
    pub room: String,
    /// Queue a `presence` frame to this client as well.
    pub reply_to: Option<Outbound>,
}

/// Recent events of a room with `seq > since`, oldest first, at most `limit`.
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

/// Every room with its member count and last sequence number.
#[derive(Message, Debug)]
#[rtype(result = "Vec<RoomSummary>")]
pub struct ListRooms;

/// One room in [`ListRooms`].
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct RoomSummary {
    /// The room.
    pub room: String,
    /// Members (WebSocket) on this node.
    pub members: usize,
    /// SSE subscribers on this node.
    pub subscribers: usize,
    /// The last sequence number assigned.
    pub last_seq: u64,
}

/// Close every connection (WebSocket close 1001, SSE streams ended): the server is stopping.
#[derive(Message, Debug)]
#[rtype(result = "usize")]
pub struct CloseAll;

/// An event that arrived from the cross-node bus (or a publish that Redis numbered).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Remote(pub BusEvent);

/// The bus connected or dropped; on reconnect the broker catches up from history.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct BusState {
    /// Whether the subscription is live.
    pub connected: bool,
}

/// Why a publish was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BrokerError {
    /// The node holds `MAX_ROOMS` rooms already.
    #[error("the server holds its maximum of {0} rooms")]
    TooManyRooms(usize),
    /// The broker's mailbox is full.
    #[error("the server is overloaded; try again")]
    Overloaded,
}

/// One event kept in a room's history, rendered once per format on demand.
struct StoredEvent {
    seq: u64,
    json: ByteString,
    text: Option<ByteString>,
    sse: Option<ByteString>,
}

impl StoredEvent {
    fn render(&mut self, format: Format) -> ByteString {
        match format {
            Format::Json => self.json.clone(),
            Format::Text => self.text.get_or_insert_with(|| text_of(&self.json)).clone(),
            Format::Sse => {
                let (seq, json) = (self.seq, &self.json);
                self.sse
                    .get_or_insert_with(|| {
                        format!("id: {seq}\nevent: message\ndata: {json}\n\n").into()
                    })
                    .clone()
            }
        }
    }
}

fn stored_event(room: &str, seq: u64, from: &str, data: &RawValue, ts: &str) -> StoredEvent {
    let frame = EventFrame {
        kind: "event",
        room,
        seq,
        from,
        data,
        ts,
    };
    StoredEvent {
        seq,
        json: serde_json::to_string(&frame)
            .expect("event serialises")
            .into(),
        text: None,
        sse: None,
    }
}

/// The room events among `events` (from the Redis history), rendered for storage.
fn stored_events(events: Vec<BusEvent>) -> Vec<StoredEvent> {
    events
        .into_iter()
        .filter_map(|ev| match ev {
            BusEvent::Event {
                room,
                seq,
                from,
                data,
                ts,
            } => Some(stored_event(&room, seq, &from, &data, &ts)),
            _ => None,
        })
        .collect()
}

/// The text form of an event: its data when that is a JSON string, else the data's JSON.
fn text_of(json: &ByteString) -> ByteString {
    let parsed: Result<EventFrame<'_>, _> = serde_json::from_str(json);
    match parsed {
        Ok(ev) => match serde_json::from_str::<String>(ev.data.get()) {
            Ok(s) => s.into(),
            Err(_) => ev.data.get().to_owned().into(),
        },
        Err(_) => json.clone(),
    }
}

struct Room {
    name: Arc<str>,
    seq: u64,
    history: VecDeque<StoredEvent>,
    subs: indexmap::IndexMap<MemberId, Subscriber>,
    typing: HashMap<MemberId, Instant>,
    last_active: Instant,
}

impl Room {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            seq: 0,
            history: VecDeque::new(),
            subs: indexmap::IndexMap::new(),
            typing: HashMap::new(),
            last_active: Instant::now(),
        }
    }

    fn visible_members(&self) -> Vec<MemberView> {
        self.subs
            .values()
            .filter(|s| s.visible)
            .map(|s| MemberView {
                id: s.id.to_string(),
                name: s.name.to_string(),
            })
            .collect()
    }
}

struct MemberEntry {
    rooms: Vec<Arc<str>>,
    out: Outbound,
    session: Option<Recipient<Evicted>>,
}

/// The broker actor.
pub struct RoomBroker {
    config: BrokerConfig,
    rooms: HashMap<Arc<str>, Room>,
    members: HashMap<MemberId, MemberEntry>,
    metrics: RealtimeMetrics,
    feed: Option<Addr<SseFeed>>,
    bus: Option<RedisBus>,
    /// Live bus events held back while the catch-up after a reconnect is fetched, so the
    /// older events are applied first and nothing is taken for a duplicate.
    held: Option<Vec<BusEvent>>,
}

/// How often idle rooms are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

impl RoomBroker {
    /// A broker; `feed` receives room activity for `/sse/updates`; `bus` connects nodes.
    pub fn new(
        config: BrokerConfig,
        metrics: RealtimeMetrics,
        feed: Option<Addr<SseFeed>>,
        bus: Option<RedisBus>,
    ) -> Self {
        Self {
            config,
            rooms: HashMap::new(),
            members: HashMap::new(),
            metrics,
            feed,
            bus,
            held: None,
        }
    }

    fn activity(&self, activity: Activity) {
        if let Some(feed) = &self.feed {
            self.metrics.feed_mailbox.inc();
            if feed.try_send(activity).is_err() {
                self.metrics.feed_mailbox.dec();
            }
        }
    }

    fn room_mut(&mut self, name: &str) -> Result<&mut Room, BrokerError> {
        if !self.rooms.contains_key(name) {
            if self.rooms.len() >= self.config.max_rooms {
                return Err(BrokerError::TooManyRooms(self.config.max_rooms));
            }
            let room = Room::new(name);
            self.rooms.insert(room.name.clone(), room);
            self.metrics.rooms.set(self.rooms.len() as i64);
        }
        Ok(self.rooms.get_mut(name).expect("just inserted"))
    }

    /// Whether membership changes in `room` are announced to its members.
    fn announces_presence(&self, room: &str) -> bool {
        self.rooms.get(room).is_none_or(|r| {
            r.subs.values().filter(|s| s.visible).count() <= self.config.presence_events_max_members
        })
    }

    /// Queues `text` to every visible JSON member of `room` except `except`.
    fn tell_members(&mut self, room: &str, text: &ByteString, except: Option<&MemberId>) {
        let mut slow = Vec::new();
        if let Some(r) = self.rooms.get(room) {
            for sub in r.subs.values() {
                if sub.format != Format::Json || !sub.visible || Some(&sub.id) == except {
                    continue;
                }
                if let Err(e) = sub.out.try_send(OutFrame::Text(text.clone())) {
                    slow.push((sub.id.clone(), e));
                }
            }
        }
        self.drop_failed(slow);
    }

    /// Stores an event numbered `seq` and fans it out to local subscribers.
    fn apply_event(&mut self, room: &str, seq: u64, from: &str, data: &RawValue, ts: &str) {
        let limit = self.config.history_limit;
        let Ok(r) = self.room_mut(room) else {
            return;
        };
        if seq <= r.seq && r.history.back().is_some_and(|e| e.seq >= seq) {
            return; // already applied (a duplicate from the bus)
        }
        r.seq = r.seq.max(seq);
        r.last_active = Instant::now();
        let mut ev = stored_event(room, seq, from, data, ts);
        let mut delivered = 0u64;
        let mut failed = Vec::new();
        let (mut text, mut sse) = (None, None);
        for sub in r.subs.values() {
            let payload = match sub.format {
                Format::Json => ev.json.clone(),
                Format::Text => text.get_or_insert_with(|| ev.render(Format::Text)).clone(),
                Format::Sse => sse.get_or_insert_with(|| ev.render(Format::Sse)).clone(),
            };
            match sub.out.try_send(OutFrame::Text(payload)) {
                Ok(()) => delivered += 1,
                Err(e) => failed.push((sub.id.clone(), e)),
            }
        }
        r.history.push_back(ev);
        while r.history.len() > limit {
            r.history.pop_front();
        }
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
                        let _ = session.try_send(Evicted {
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
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let Some(sub) = r.subs.swap_remove(id) else {
            return;
        };
        r.typing.remove(id);
        r.last_active = Instant::now();
        if let Some(entry) = self.members.get_mut(id) {
            entry.rooms.retain(|x| &**x != room);
        }
        if sub.visible {
            self.metrics.members.dec();
            if confirm {
                let _ = sub.out.text(ServerMsg::Left { room }.to_text());
            }
            let view = MemberView {
                id: sub.id.to_string(),
                name: sub.name.to_string(),
            };
            if self.announces_presence(room) {
                let text: ByteString = ServerMsg::MemberLeft {
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
        }
    }

    fn sweep(&mut self) {
        let idle = self.config.room_idle;
        let before = self.rooms.len();
        self.rooms
            .retain(|_, r| !r.subs.is_empty() || r.last_active.elapsed() < idle);
        if self.rooms.len() != before {
            self.metrics.rooms.set(self.rooms.len() as i64);
        }
    }
}

impl Actor for RoomBroker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.config.mailbox_capacity);
        ctx.run_interval(SWEEP_INTERVAL, |this, _| this.sweep());
        if let Some(bus) = &self.bus {
            bus.start(ctx.address());
        }
    }
}

/// Counts a message out of the mailbox gauge.
macro_rules! dequeued {
    ($self:ident) => {
        $self.metrics.broker_mailbox.dec()
    };
}

impl Handler<Join> for RoomBroker {
    type Result = ();

    fn handle(&mut self, msg: Join, ctx: &mut Self::Context) {
        dequeued!(self);
        let Join {
            room,
            subscriber: sub,
            since,
        } = msg;
        // Replay from Redis when this node's memory does not reach back to `since`.
        if let (Some(since), Some(bus)) = (since, self.bus.clone().filter(|b| b.is_connected())) {
            let oldest = self
                .rooms
                .get(room.as_str())
                .and_then(|r| r.history.front().map(|e| e.seq));
            if oldest.is_none_or(|oldest| since.saturating_add(1) < oldest) {
                let cap = bus.history_cap();
                let fetch_room = room.clone();
                let fut = async move { bus.history(&fetch_room, since, cap).await };
                ctx.spawn(fut.into_actor(self).map(move |result, this, _| {
                    let fetched = match result {
                        Ok(events) => stored_events(events),
                        Err(e) => {
                            // Replay what memory holds; the client is told what is missing.
                            log::warn!("replay from Redis failed ({e}); replaying from memory");
                            Vec::new()
                        }
                    };
                    this.complete_join(room, sub, Some(since), fetched);
                }));
                return;
            }
        }
        self.complete_join(room, sub, since, Vec::new());
    }
}

impl RoomBroker {
    /// Adds a subscriber to a room after replaying `fetched` (older events from Redis) and
    /// then the in-memory history after `since`; live events follow, in order.
    fn complete_join(
        &mut self,
        room: String,
        sub: Subscriber,
        since: Option<u64>,
        mut fetched: Vec<StoredEvent>,
    ) {
        // The client may have gone (or its session disconnected) while its replay was
        // fetched: do not add a member nobody would remove.
        if sub.out.is_closed() || (sub.session.is_some() && !self.members.contains_key(&sub.id)) {
            return;
        }
        let max_rooms = self.config.max_rooms;
        let r = match self.room_mut(&room) {
            Ok(r) => r,
            Err(e) => {
                if sub.format == Format::Json {
                    let _ = sub.out.text(
                        ServerMsg::Error {
                            code: "too_many_rooms",
                            message: &e.to_string(),
                        }
                        .to_text(),
                    );
                } else {
                    let _ = sub.out.try_send(OutFrame::Close(
                        CloseCode::Again,
                        format!("server holds {max_rooms} rooms"),
                    ));
                }
                return;
            }
        };
        r.last_active = Instant::now();
        if let Some(last) = fetched.last() {
            r.seq = r.seq.max(last.seq);
        }
        let rejoin = r.subs.contains_key(&sub.id);
        if sub.format == Format::Json {
            let _ = sub.out.text(
                ServerMsg::Joined {
                    room: &room,
                    seq: r.seq,
                }
                .to_text(),
            );
        }
        if let Some(since) = since {
            let oldest = fetched
                .first()
                .or(r.history.front())
                .map(|e| e.seq)
                .unwrap_or(r.seq + 1);
            if since.saturating_add(1) < oldest && sub.format == Format::Json {
                let _ = sub.out.text(
                    ServerMsg::Error {
                        code: "history_truncated",
                        message: &format!(
                            "events {}..{} are no longer kept; replay starts at {oldest}",
                            since.saturating_add(1),
                            oldest - 1
                        ),
                    }
                    .to_text(),
                );
            }
            let after_fetched = fetched.last().map_or(since, |e| e.seq);
            let mut replay: Vec<&mut StoredEvent> = fetched
                .iter_mut()
                .filter(|e| e.seq > since)
                .chain(r.history.iter_mut().filter(|e| e.seq > after_fetched))
                .collect();
            // Replay only the newest events that fit half the client's queue, so a long
            // replay cannot get a reconnecting client evicted again and again.
            let limits = sub.out.limits();
            let (mut count, mut bytes, mut start) = (0usize, 0usize, replay.len());
            while start > 0 {
                let len = replay[start - 1].json.len();
                if count + 1 > limits.messages / 2 || bytes + len > limits.bytes / 2 {
                    break;
                }
                count += 1;
                bytes += len;
                start -= 1;
            }
            if start > 0 && sub.format == Format::Json {
                let message = match replay.get(start) {
                    Some(first) => format!(
                        "replay starts at {}: older events do not fit the client's queue",
                        first.seq
                    ),
                    None => "the events to replay do not fit the client's queue".to_owned(),
                };
                let _ = sub.out.text(
                    ServerMsg::Error {
                        code: "history_truncated",
                        message: &message,
                    }
                    .to_text(),
                );
            }
            for ev in replay.drain(start..) {
                let _ = sub.out.try_send(OutFrame::Text(ev.render(sub.format)));
            }
        }
        if rejoin {
            return;
        }
        r.subs.insert(sub.id.clone(), sub.clone());
        let room_name = r.name.clone();
        let entry = self
            .members
            .entry(sub.id.clone())
            .or_insert_with(|| MemberEntry {
                rooms: Vec::new(),
                out: sub.out.clone(),
                session: sub.session.clone(),
            });
        entry.rooms.push(room_name);
        if sub.visible {
            self.metrics.members.inc();
            let view = MemberView {
                id: sub.id.to_string(),
                name: sub.name.to_string(),
            };
            if self.announces_presence(&room) {
                let text: ByteString = ServerMsg::MemberJoined {
                    room: &room,
                    member: &view,
                }
                .to_text()
                .into();
                self.tell_members(&room, &text, Some(&sub.id));
            }
            if let Some(bus) = &self.bus {
                bus.presence_joined(&room, &view);
            }
            self.activity(Activity::MemberJoined {
                room: room.clone(),
                name: view.name,
            });
        }
    }
}

impl Handler<Leave> for RoomBroker {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Self::Context) {
        dequeued!(self);
        self.leave_room(&msg.room, &msg.member, msg.confirm);
    }
}

impl Handler<Connect> for RoomBroker {
    type Result = ();

    fn handle(&mut self, msg: Connect, _: &mut Self::Context) {
        dequeued!(self);
        self.members.entry(msg.member).or_insert(MemberEntry {
            rooms: Vec::new(),
            out: msg.out,
            session: Some(msg.session),
        });
    }
}

impl Handler<Disconnect> for RoomBroker {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, _: &mut Self::Context) {
        dequeued!(self);
        self.remove_member(&msg.member);
    }
}

fn now_ts() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Handler<Publish> for RoomBroker {
    type Result = ResponseActFuture<Self, Result<u64, BrokerError>>;

    fn handle(&mut self, msg: Publish, _: &mut Self::Context) -> Self::Result {
        dequeued!(self);
        let Publish {
            room,
            from,
            data,
            ack,
        } = msg;
        let last_seq = match self.room_mut(&room) {
            Ok(r) => r.seq,
            Err(e) => {
                if let Some((_, out)) = &ack {
                    let _ = out.text(
                        ServerMsg::Error {
                            code: "too_many_rooms",
                            message: &e.to_string(),
                        }
                        .to_text(),
                    );
                }
                return Box::pin(actix::fut::ready(Err(e)));
            }
        };
        self.metrics.published.inc();
        let ts = now_ts();
        let send_ack = |ack: &Option<(String, Outbound)>, seq: u64| {
            if let Some((id, out)) = ack {
                let _ = out.text(ServerMsg::Ack { id, seq }.to_text());
            }
        };

        if let Some(bus) = self.bus.as_ref().filter(|b| b.is_connected()) {
            // Redis numbers the event and broadcasts it to every node, this one included;
            // delivery happens when it comes back on the subscription, in seq order.
            let fut = bus.publish(
                room.clone(),
                from.clone(),
                data.clone(),
                ts.clone(),
                last_seq,
            );
            return Box::pin(
                fut.into_actor(self)
                    .map(move |result, this, _| match result {
                        Ok(seq) => {
                            send_ack(&ack, seq);
                            Ok(seq)
                        }
                        Err(e) => {
                            // Redis failed mid-publish: deliver locally so nothing accepted is lost.
                            log::warn!("room={room} bus publish failed ({e}); delivering locally");
                            let seq = this.rooms.get(&*room).map(|r| r.seq).unwrap_or(last_seq) + 1;
                            this.apply_event(&room, seq, &from, &data, &ts);
                            send_ack(&ack, seq);
                            Ok(seq)
                        }
                    }),
            );
        }

        let seq = last_seq + 1;
        self.apply_event(&room, seq, &from, &data, &ts);
        send_ack(&ack, seq);
        Box::pin(actix::fut::ready(Ok(seq)))
    }
}

impl Handler<Typing> for RoomBroker {
    type Result = ();

    fn handle(&mut self, msg: Typing, _: &mut Self::Context) {
        dequeued!(self);
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
        let text: ByteString = ServerMsg::Typing {
            room: &msg.room,
            from: &sub.name,
        }
        .to_text()
        .into();
        self.tell_members(&msg.room, &text, Some(&msg.member));
    }
}

impl Handler<GetPresence> for RoomBroker {
    type Result = ResponseActFuture<Self, Vec<MemberView>>;

    fn handle(&mut self, msg: GetPresence, _: &mut Self::Context) -> Self::Result {
        dequeued!(self);
        let local = self
            .rooms
            .get(msg.room.as_str())
            .map(Room::visible_members)
            .unwrap_or_default();
        let GetPresence { room, reply_to } = msg;
        let bus = self.bus.clone().filter(|b| b.is_connected());
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
        dequeued!(self);
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
        let bus = self.bus.clone().filter(|b| b.is_connected());
        let fut = async move {
            let Some(bus) = bus else { return local };
            match bus.history(&msg.room, msg.since, msg.limit).await {
                Ok(events) => stored_events(events).into_iter().map(|e| e.json).collect(),
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
    type Result = MessageResult<ListRooms>;

    fn handle(&mut self, _: ListRooms, _: &mut Self::Context) -> Self::Result {
        dequeued!(self);
        let mut rooms: Vec<RoomSummary> = self
            .rooms
            .values()
            .map(|r| RoomSummary {
                room: r.name.to_string(),
                members: r.subs.values().filter(|s| s.visible).count(),
                subscribers: r.subs.values().filter(|s| !s.visible).count(),
                last_seq: r.seq,
            })
            .collect();
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        MessageResult(rooms)
    }
}

impl Handler<CloseAll> for RoomBroker {
    type Result = usize;

    fn handle(&mut self, _: CloseAll, _: &mut Self::Context) -> usize {
        dequeued!(self);
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

impl Handler<Remote> for RoomBroker {
    type Result = ();

    fn handle(&mut self, msg: Remote, _: &mut Self::Context) {
        if let (Some(held), BusEvent::Event { .. }) = (self.held.as_mut(), &msg.0) {
            held.push(msg.0);
            return;
        }
        match msg.0 {
            BusEvent::Event {
                room,
                seq,
                from,
                data,
                ts,
            } => self.apply_event(&room, seq, &from, &data, &ts),
            BusEvent::MemberJoined { room, member, node } => {
                self.relay_presence(&room, &member, &node, true)
            }
            BusEvent::MemberLeft { room, member, node } => {
                self.relay_presence(&room, &member, &node, false)
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
        let text: ByteString = msg.to_text().into();
        self.tell_members(room, &text, None);
    }
}

impl Handler<BusState> for RoomBroker {
    type Result = ();

    fn handle(&mut self, msg: BusState, ctx: &mut Self::Context) {
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
        let members: Vec<(String, MemberView)> = self
            .rooms
            .values()
            .flat_map(|r| {
                r.subs.values().filter(|s| s.visible).map(|s| {
                    (
                        r.name.to_string(),
                        MemberView {
                            id: s.id.to_string(),
                            name: s.name.to_string(),
                        },
                    )
                })
            })
            .collect();
        for (room, member) in &members {
            bus.presence_joined(room, member);
        }
        self.held.get_or_insert_with(Vec::new);
        let fut = async move { bus.catch_up(rooms).await };
        ctx.spawn(fut.into_actor(self).map(|events, this, _| {
            let held = this.held.take().unwrap_or_default();
            for ev in events.into_iter().chain(held) {
                if let BusEvent::Event {
                    room,
                    seq,
                    from,
                    data,
                    ts,
                } = ev
                {
                    this.apply_event(&room, seq, &from, &data, &ts);
                }
            }
        }));
    }
}

/// The broker's address with its mailbox-depth gauge: use this to send it messages.
#[derive(Clone)]
pub struct BrokerHandle {
    addr: Addr<RoomBroker>,
    depth: prometheus::IntGauge,
}

impl BrokerHandle {
    /// Starts the broker on `arbiter` (a thread of its own, so fan-out never competes with
    /// an HTTP worker's event loop).
    pub fn start(broker: RoomBroker, arbiter: &actix_rt::ArbiterHandle) -> Self {
        let depth = broker.metrics.broker_mailbox.clone();
        let addr = RoomBroker::start_in_arbiter(arbiter, move |_| broker);
        Self { addr, depth }
    }

    /// Sends and awaits the reply; waits while the mailbox is full.
    pub async fn send<M>(&self, msg: M) -> Result<M::Result, MailboxError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        RoomBroker: Handler<M>,
    {
        self.depth.inc();
        let result = self.addr.send(msg).await;
        if result.is_err() {
            self.depth.dec();
        }
        result
    }

    /// Sends without waiting; `Overloaded` when the mailbox is full.
    pub fn try_send<M>(&self, msg: M) -> Result<(), BrokerError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        RoomBroker: Handler<M>,
    {
        self.depth.inc();
        self.addr.try_send(msg).map_err(|_| {
            self.depth.dec();
            BrokerError::Overloaded
        })
    }

    /// Sends ignoring the mailbox bound; for disconnect notices that must not be lost.
    pub fn do_send<M>(&self, msg: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        RoomBroker: Handler<M>,
    {
        self.depth.inc();
        self.addr.do_send(msg);
    }

    /// The actor's address.
    pub fn addr(&self) -> &Addr<RoomBroker> {
        &self.addr
    }
}
