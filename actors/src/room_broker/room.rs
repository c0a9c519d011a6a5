//! One room's state, and a room event written once per format.
//!
//! An event is serialised once, as the JSON of an `event` frame; its plain-text and SSE
//! forms are made from that the first time a subscriber of that kind needs them, and kept
//! with the event, so a broadcast or a replay never serialises per recipient.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use actix::Recipient;
use bytestring::ByteString;

use super::messages::{EventFormat, Evicted, MemberId, Subscriber};
use crate::client_queue::ClientQueue;
use crate::protocol::{EventFrame, MemberView, RoomEvent};
use crate::redis_bus::BusEvent;

/// One event kept in a room's history.
pub(super) struct StoredEvent {
    pub(super) seq: u64,
    /// The `event` frame's JSON: what `/ws/json` members and history readers get.
    pub(super) json: ByteString,
    text: Option<ByteString>,
    sse: Option<ByteString>,
}

impl StoredEvent {
    /// The event, serialised.
    pub(super) fn new(event: &RoomEvent) -> Self {
        let frame = EventFrame {
            kind: "event",
            room: &event.room,
            seq: event.seq,
            from: &event.from,
            data: &event.data,
            ts: &event.ts,
        };
        Self {
            seq: event.seq,
            json: serde_json::to_string(&frame)
                .expect("event serialises")
                .into(),
            text: None,
            sse: None,
        }
    }

    /// The room events among `events` (read from the Redis history).
    pub(super) fn from_bus(events: Vec<BusEvent>) -> Vec<Self> {
        events
            .iter()
            .filter_map(|ev| match ev {
                BusEvent::Event(event) => Some(Self::new(event)),
                _ => None,
            })
            .collect()
    }

    /// The event as a subscriber of `format` receives it.
    pub(super) fn render(&mut self, format: EventFormat) -> ByteString {
        match format {
            EventFormat::Json => self.json.clone(),
            EventFormat::Text => self.text.get_or_insert_with(|| text_of(&self.json)).clone(),
            EventFormat::Sse => {
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
    /// The last sequence number assigned (or seen on the bus).
    pub(super) seq: u64,
    /// The newest events, oldest first, at most `ROOM_HISTORY_SIZE`.
    pub(super) history: VecDeque<StoredEvent>,
    /// Members and SSE subscribers, in the order they joined.
    pub(super) subs: indexmap::IndexMap<MemberId, Subscriber>,
    /// When each member last had its `typing` relayed.
    pub(super) typing: HashMap<MemberId, Instant>,
    /// The last join, leave or event.
    pub(super) last_active: Instant,
}

impl Room {
    pub(super) fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            seq: 0,
            history: VecDeque::new(),
            subs: indexmap::IndexMap::new(),
            typing: HashMap::new(),
            last_active: Instant::now(),
        }
    }

    /// Appends an event, dropping the oldest beyond `limit`.
    pub(super) fn remember(&mut self, event: StoredEvent, limit: usize) {
        self.history.push_back(event);
        while self.history.len() > limit {
            self.history.pop_front();
        }
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
        self.subs.values().filter(|s| s.visible).count()
    }
}

impl Subscriber {
    /// The member as others see it.
    pub(super) fn view(&self) -> MemberView {
        MemberView {
            id: self.id.to_string(),
            name: self.name.to_string(),
        }
    }
}

/// A connection the broker knows: its rooms, queue and session.
pub(super) struct MemberEntry {
    pub(super) rooms: Vec<Arc<str>>,
    pub(super) out: ClientQueue,
    pub(super) session: Option<Recipient<Evicted>>,
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
            data: RawValue::from_string(data.to_owned()).unwrap(),
            ts: "2026-12-01T00:00:00.000Z".into(),
        })
    }

    #[test]
    fn an_event_is_written_once_per_format() {
        let mut ev = event(7, r#""hello""#);
        assert_eq!(
            &*ev.render(EventFormat::Json),
            r#"{"type":"event","room":"lobby","seq":7,"from":"alice","data":"hello","ts":"2026-12-01T00:00:00.000Z"}"#
        );
        assert_eq!(&*ev.render(EventFormat::Text), "hello");
        let sse = ev.render(EventFormat::Sse);
        assert!(sse.starts_with("id: 7\nevent: message\ndata: {\"type\":\"event\""));
        assert!(sse.ends_with("}\n\n"));
        let mut obj = event(8, r#"{"n":1}"#);
        assert_eq!(&*obj.render(EventFormat::Text), r#"{"n":1}"#);
    }

    #[test]
    fn history_keeps_the_newest_events() {
        let mut room = Room::new("lobby");
        for seq in 1..=5 {
            room.remember(event(seq, "1"), 3);
        }
        let kept: Vec<u64> = room.history.iter().map(|e| e.seq).collect();
        assert_eq!(kept, vec![3, 4, 5]);
    }
}
