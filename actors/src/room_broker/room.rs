//! One room's state, and a room event written once per format.
//!
//! An event is serialised once, as the JSON of an `event` frame, and kept in that form; a
//! broadcast makes its plain-text and SSE forms from it at most once each, whatever the
//! number of recipients. The history keeps only the JSON, so what it holds is exactly what
//! its byte bounds count.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use actix::Recipient;
use bytestring::ByteString;

use super::messages::{EventFormat, Join, MemberId, SessionNotice, Subscriber};
use crate::client_queue::ClientQueue;
use crate::protocol::{EventFrame, MemberView, RoomEvent};
use crate::redis_bus::BusEvent;

/// What keeping one event costs besides its JSON: its slot in the room's history queue, the
/// allocator's header on the JSON's buffer, and the buffer's shared reference count (made
/// when the event is first sent to a client). The history's byte bounds
/// (`ROOM_HISTORY_MAX_BYTES`, `HISTORY_MAX_BYTES`, `courier_history_bytes`) count it, so they
/// bound the memory the history holds and not only its text.
pub(super) const EVENT_OVERHEAD_BYTES: usize =
    std::mem::size_of::<StoredEvent>() + MALLOC_HEADER_BYTES + SHARED_REFCOUNT_BYTES;

/// glibc's header on each allocation (here, the event's JSON buffer).
const MALLOC_HEADER_BYTES: usize = 16;

/// The allocation `bytes` makes for a buffer's shared reference count when it is first
/// cloned (its 24-byte struct in a 32-byte chunk).
const SHARED_REFCOUNT_BYTES: usize = 32;

/// One event kept in a room's history.
pub(super) struct StoredEvent {
    pub(super) seq: u64,
    /// The `event` frame's JSON: what `/ws/json` members and history readers get.
    pub(super) json: ByteString,
}

impl StoredEvent {
    /// What the event costs to keep.
    pub(super) fn size(&self) -> usize {
        self.json.len() + EVENT_OVERHEAD_BYTES
    }

    /// The event, serialised.
    pub(super) fn new(event: &RoomEvent) -> Self {
        let frame = EventFrame {
            kind: "event",
            room: &event.room,
            seq: event.seq,
            from: &event.from,
            user: event.user.as_deref(),
            data: &event.data,
            ts: &event.ts,
        };
        let mut json = serde_json::to_string(&frame).expect("event serialises");
        // The serialiser grows its buffer by doubling: without this a kept event could
        // hold up to twice its length.
        json.shrink_to_fit();
        Self {
            seq: event.seq,
            json: json.into(),
        }
    }

    /// An event as stored: its sequence number and `event` frame JSON.
    pub(super) fn from_json(seq: u64, json: ByteString) -> Self {
        Self { seq, json }
    }

    /// The room events among `events` (read from the Redis history).
    pub(super) fn from_bus(events: Vec<BusEvent>) -> Vec<Self> {
        events
            .iter()
            .filter_map(|ev| match ev {
                BusEvent::Event(event, _) => Some(Self::new(event)),
                _ => None,
            })
            .collect()
    }

    /// The event as a subscriber of `format` receives it; an SSE event's id is
    /// `<epoch>:<seq>` (what `Last-Event-ID` sends back), or `<seq>` in a room without an
    /// epoch.
    pub(super) fn render(&self, format: EventFormat, epoch: Option<&str>) -> ByteString {
        match format {
            EventFormat::Json => self.json.clone(),
            EventFormat::Text => text_of(&self.json),
            EventFormat::Sse => match epoch {
                Some(epoch) => format!(
                    "id: {epoch}:{}\nevent: message\ndata: {}\n\n",
                    self.seq, self.json
                ),
                None => format!("id: {}\nevent: message\ndata: {}\n\n", self.seq, self.json),
            }
            .into(),
        }
    }
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

/// A room: its subscribers, numbering, history and typing debounce.
pub(super) struct Room {
    pub(super) name: Arc<str>,
    /// The last sequence number delivered to this node's subscribers (or seen on the bus).
    pub(super) seq: u64,
    /// The last sequence number given (without Redis): ahead of `seq` while events wait
    /// to be stored.
    pub(super) assigned: u64,
    /// The room's epoch; `None` until its first event.
    pub(super) epoch: Option<Arc<str>>,
    /// The newest events, oldest first, at most `ROOM_HISTORY_SIZE` and
    /// `ROOM_HISTORY_MAX_BYTES`.
    pub(super) history: VecDeque<StoredEvent>,
    /// What `history` costs, in bytes.
    pub(super) history_bytes: usize,
    /// Members and SSE subscribers, in the order they joined.
    pub(super) subs: indexmap::IndexMap<MemberId, Subscriber>,
    /// How many of them appear in presence (kept, so a join or leave in a big room does
    /// not count every member).
    visible: usize,
    /// When each member last had its `typing` relayed.
    pub(super) typing: HashMap<MemberId, Instant>,
    /// The last join, leave or event.
    pub(super) last_active: Instant,
    /// Events kept (`ROOM_HISTORY_SIZE`, or the namespace's `history_size`).
    pub(super) history_limit: usize,
    /// Whether joins and leaves are announced (the namespace's `presence_events`).
    pub(super) presence_events: bool,
    /// With Redis: whether this node is subscribed to the room's channel.
    pub(super) subscribed: bool,
    /// With Redis: joins and events waiting while the room is read from Redis.
    pub(super) syncing: Option<Syncing>,
    /// With Redis: the room's numbering was lost by Redis; its clients are told when the
    /// next epoch starts.
    pub(super) lost: bool,
}

/// A served room waiting for Redis: joins and live events wait until its head (and any
/// missed events) are read.
#[derive(Default)]
pub(super) struct Syncing {
    pub(super) joins: Vec<Join>,
    pub(super) held: Vec<(RoomEvent, Arc<str>)>,
}

impl Room {
    pub(super) fn new(name: &str, history_limit: usize, presence_events: bool) -> Self {
        Self {
            history_limit,
            presence_events,
            name: name.into(),
            seq: 0,
            assigned: 0,
            epoch: None,
            subscribed: false,
            syncing: None,
            lost: false,
            history: VecDeque::new(),
            history_bytes: 0,
            subs: indexmap::IndexMap::new(),
            visible: 0,
            typing: HashMap::new(),
            last_active: Instant::now(),
        }
    }

    /// Appends an event, dropping the oldest beyond `max_events` or `max_bytes`. Answers
    /// the change in the history's bytes.
    pub(super) fn remember(
        &mut self,
        event: StoredEvent,
        max_events: usize,
        max_bytes: usize,
    ) -> isize {
        let before = self.history_bytes;
        self.history_bytes += event.size();
        self.history.push_back(event);
        while self.history.len() > max_events || self.history_bytes > max_bytes {
            match self.history.pop_front() {
                Some(old) => self.history_bytes -= old.size(),
                None => break,
            }
        }
        self.history_bytes as isize - before as isize
    }

    /// Drops the whole history (the node's history budget needs the room); answers the
    /// bytes freed. The numbering is kept: a client asking for the dropped events is told
    /// they are gone (`history_truncated`).
    pub(super) fn forget_history(&mut self) -> usize {
        self.history = VecDeque::new();
        std::mem::take(&mut self.history_bytes)
    }

    /// Adds a member or subscriber.
    pub(super) fn add(&mut self, sub: Subscriber) {
        if sub.visible {
            self.visible += 1;
        }
        self.subs.insert(sub.id.clone(), sub);
    }

    /// Removes a member or subscriber.
    pub(super) fn remove(&mut self, id: &MemberId) -> Option<Subscriber> {
        let sub = self.subs.swap_remove(id)?;
        if sub.visible {
            self.visible -= 1;
        }
        self.typing.remove(id);
        Some(sub)
    }

    /// Members that appear in presence (WebSocket members, not SSE subscribers).
    pub(super) fn visible_members(&self) -> Vec<MemberView> {
        self.subs
            .values()
            .filter(|s| s.visible)
            .map(Subscriber::view)
            .collect()
    }

    /// How many members appear in presence.
    pub(super) fn visible_count(&self) -> usize {
        self.visible
    }

    /// Whether the room holds nothing worth keeping in memory: no subscribers, and no
    /// events that are not stored elsewhere (with a store, its head is reloaded from it).
    pub(super) fn is_vacant(&self, stored: bool) -> bool {
        self.subs.is_empty()
            && (stored || self.seq == 0)
            && self.assigned == self.seq
            && self.syncing.is_none()
    }
}

impl Subscriber {
    /// The member as others see it.
    pub(super) fn view(&self) -> MemberView {
        MemberView {
            id: self.id.to_string(),
            name: self.name.to_string(),
            user: self.user.as_deref().map(str::to_owned),
        }
    }
}

/// A connection the broker knows: its rooms, queue and session.
pub(super) struct MemberEntry {
    pub(super) rooms: Vec<Arc<str>>,
    pub(super) out: ClientQueue,
    pub(super) session: Option<Recipient<SessionNotice>>,
    /// The token's user; `None` for a guest.
    pub(super) user: Option<Arc<str>>,
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;

    fn event(seq: u64, data: &str) -> StoredEvent {
        StoredEvent::new(&RoomEvent {
            room: "lobby".into(),
            seq,
            from: "alice".into(),
            user: Some("alice".into()),
            data: RawValue::from_string(data.to_owned()).unwrap(),
            ts: "2026-12-01T00:00:00.000Z".into(),
        })
    }

    #[test]
    fn an_event_is_written_once_per_format() {
        let ev = event(7, r#""hello""#);
        assert_eq!(
            &*ev.render(EventFormat::Json, None),
            r#"{"type":"event","room":"lobby","seq":7,"from":"alice","user":"alice","data":"hello","ts":"2026-12-01T00:00:00.000Z"}"#
        );
        assert_eq!(&*ev.render(EventFormat::Text, None), "hello");
        let sse = ev.render(EventFormat::Sse, None);
        assert!(sse.starts_with("id: 7\nevent: message\ndata: {\"type\":\"event\""));
        assert!(sse.ends_with("}\n\n"));
        let with_epoch = ev.render(EventFormat::Sse, Some("0af3"));
        assert!(with_epoch.starts_with("id: 0af3:7\nevent: message\n"));
        let obj = event(8, r#"{"n":1}"#);
        assert_eq!(&*obj.render(EventFormat::Text, None), r#"{"n":1}"#);
    }

    #[test]
    fn history_keeps_the_newest_events() {
        let mut room = Room::new("lobby", 1000, true);
        for seq in 1..=5 {
            room.remember(event(seq, "1"), 3, usize::MAX);
        }
        let kept: Vec<u64> = room.history.iter().map(|e| e.seq).collect();
        assert_eq!(kept, vec![3, 4, 5]);
    }

    #[test]
    fn an_event_costs_its_json_and_its_overhead_and_holds_no_spare_capacity() {
        let ev = event(1, &format!(r#""{}""#, "x".repeat(300)));
        assert_eq!(ev.size(), ev.json.len() + EVENT_OVERHEAD_BYTES);
        // The only reference to the buffer: the vector gets it back as it was allocated.
        let vec = Vec::from(ev.json.into_bytes());
        assert_eq!(
            vec.capacity(),
            vec.len(),
            "serialised into {} bytes",
            vec.capacity()
        );
        assert_eq!(
            EVENT_OVERHEAD_BYTES, 88,
            "ROOM_HISTORY_MAX_BYTES's description names this figure"
        );
    }

    #[test]
    fn history_is_bounded_in_bytes() {
        let mut room = Room::new("lobby", 1000, true);
        let one = event(1, "1").size();
        let mut total = 0isize;
        for seq in 1..=9 {
            total += room.remember(event(seq, "1"), 1000, one * 4);
        }
        assert_eq!(room.history.len(), 4);
        assert_eq!(room.history_bytes, one * 4);
        assert_eq!(total, (one * 4) as isize);
        assert_eq!(room.forget_history(), one * 4);
        assert!(room.history.is_empty());
        assert_eq!(
            room.seq, 0,
            "numbering is the broker's; forgetting keeps it"
        );
    }
}
