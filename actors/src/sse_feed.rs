//! `SseFeed`: the server-wide SSE topics.
//!
//! - `updates` (`/sse/updates`): what happens in the server — members joining and leaving
//!   rooms at once, message activity per room at most once per [`FeedConfig::coalesce`]
//!   (so a busy room cannot flood dashboards), and job events.
//! - `heartbeat` (`/sse/heartbeat`): a `heartbeat` event with the ISO-8601 time every
//!   [`FeedConfig::heartbeat`], rendered once per tick for every subscriber.
//!
//! Subscribers are bounded queues ([`crate::client_queue`]); one that does not keep up is
//! dropped. A subscriber whose client disconnects is removed when its stream is dropped.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;

use crate::client_queue::{ClientQueue, OutFrame, SendError};
use crate::clock::rfc3339_now;
use crate::mailbox::Mailbox;
use crate::metrics::RealtimeMetrics;

/// Messages the feed's mailbox holds before [`FeedHandle::try_send`] refuses: room activity
/// beyond this is dropped rather than queued without bound.
pub const FEED_MAILBOX_CAPACITY: usize = 65_536;

/// The feed's address with its mailbox gauge (`courier_sse_feed_mailbox_depth`): the only
/// way to send it messages.
pub type FeedHandle = Mailbox<SseFeed>;

crate::counted_handlers!(SseFeed: Activity, Subscribe, Unsubscribe, CloseFeeds);

/// The feed's timing; from configuration.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// Interval of `/sse/heartbeat` events (`SSE_HEARTBEAT_INTERVAL_MS`, 30 s by default).
    pub heartbeat: Duration,
    /// Message activity per room is reported at most once per this interval.
    pub coalesce: Duration,
}

/// A topic of the feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `/sse/updates`.
    Updates,
    /// `/sse/heartbeat`.
    Heartbeat,
}

/// The data of an `update` event on `/sse/updates`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Update {
    /// What happened: `member_joined`, `member_left`, `room_activity` (messages published
    /// in a room, at most once per room per `SSE_UPDATES_COALESCE_MS`), or a job event
    /// (`job_completed`, ...).
    pub kind: String,
    /// The room (member and room events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The member's name (member events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The room's last sequence number (`room_activity`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    /// How many messages were published since the last `room_activity` of the room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    /// The event's details (job events).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    /// When (RFC 3339, UTC).
    pub ts: String,
}

impl Update {
    fn new(ts: String) -> Self {
        Self {
            kind: String::new(),
            room: None,
            name: None,
            last_seq: None,
            messages: None,
            data: None,
            ts,
        }
    }
}

/// Something that happened, for `/sse/updates`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub enum Activity {
    /// A member joined a room.
    MemberJoined {
        /// The room.
        room: String,
        /// The member's name.
        name: String,
    },
    /// A member left a room.
    MemberLeft {
        /// The room.
        room: String,
        /// The member's name.
        name: String,
    },
    /// A message was published (coalesced per room).
    Published {
        /// The room.
        room: String,
        /// Its sequence number.
        seq: u64,
    },
    /// Any other event, e.g. from the job worker: `kind` and a JSON object.
    Other {
        /// What happened, e.g. `job_completed`.
        kind: String,
        /// Details.
        data: serde_json::Value,
    },
}

/// Subscribe a client's queue to a topic.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Subscribe {
    /// The topic.
    pub topic: Topic,
    /// The subscriber's id (unique per node).
    pub id: u64,
    /// Its queue.
    pub out: ClientQueue,
}

/// The subscriber's client went away.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    /// The subscriber's id.
    pub id: u64,
}

/// End every stream: the server is stopping.
#[derive(Message, Debug)]
#[rtype(result = "usize")]
pub struct CloseFeeds;

/// The feed actor.
pub struct SseFeed {
    config: FeedConfig,
    topics: HashMap<Topic, indexmap::IndexMap<u64, ClientQueue>>,
    pending: BTreeMap<String, (u64, u64)>,
    metrics: RealtimeMetrics,
}

impl SseFeed {
    /// A feed with `config`.
    pub fn new(config: FeedConfig, metrics: RealtimeMetrics) -> Self {
        Self {
            config,
            topics: HashMap::new(),
            pending: BTreeMap::new(),
            metrics,
        }
    }

    /// Starts the feed on `arbiter`.
    pub fn start(self, arbiter: &actix_rt::ArbiterHandle) -> FeedHandle {
        let depth = self.metrics.feed_mailbox.clone();
        Mailbox::start(self, arbiter, depth)
    }

    fn broadcast(&mut self, topic: Topic, text: ByteString) {
        let Some(subs) = self.topics.get_mut(&topic) else {
            return;
        };
        let mut gone = Vec::new();
        for (id, out) in subs.iter() {
            match out.try_send(OutFrame::Text(text.clone())) {
                Ok(()) => {}
                Err(SendError::Full) => {
                    out.evict();
                    self.metrics.slow_clients_dropped.inc();
                    gone.push(*id);
                }
                Err(SendError::Closed) => gone.push(*id),
            }
        }
        for id in gone {
            subs.swap_remove(&id);
        }
    }

    fn update(&mut self, update: Update) {
        let data = serde_json::to_string(&update).expect("updates serialise");
        let text = format!("event: update\ndata: {data}\n\n");
        self.broadcast(Topic::Updates, text.into());
    }

    fn flush_pending(&mut self) {
        let ts = rfc3339_now();
        for (room, (seq, count)) in std::mem::take(&mut self.pending) {
            self.update(Update {
                kind: "room_activity".into(),
                room: Some(room),
                last_seq: Some(seq),
                messages: Some(count),
                ..Update::new(ts.clone())
            });
        }
    }
}

impl Actor for SseFeed {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(FEED_MAILBOX_CAPACITY);
        ctx.run_interval(self.config.heartbeat, |this, _| {
            let text = format!("event: heartbeat\ndata: {}\n\n", rfc3339_now());
            this.broadcast(Topic::Heartbeat, text.into());
        });
        ctx.run_interval(self.config.coalesce, |this, _| this.flush_pending());
    }
}

impl Handler<Activity> for SseFeed {
    type Result = ();

    fn handle(&mut self, msg: Activity, _: &mut Self::Context) {
        if self
            .topics
            .get(&Topic::Updates)
            .is_none_or(|s| s.is_empty())
        {
            return;
        }
        match msg {
            Activity::Published { room, seq } => {
                let entry = self.pending.entry(room).or_insert((0, 0));
                entry.0 = entry.0.max(seq);
                entry.1 += 1;
            }
            Activity::MemberJoined { room, name } => self.update(Update {
                kind: "member_joined".into(),
                room: Some(room),
                name: Some(name),
                ..Update::new(rfc3339_now())
            }),
            Activity::MemberLeft { room, name } => self.update(Update {
                kind: "member_left".into(),
                room: Some(room),
                name: Some(name),
                ..Update::new(rfc3339_now())
            }),
            Activity::Other { kind, data } => self.update(Update {
                kind,
                data: Some(data),
                ..Update::new(rfc3339_now())
            }),
        }
    }
}

impl Handler<Subscribe> for SseFeed {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) {
        self.topics
            .entry(msg.topic)
            .or_default()
            .insert(msg.id, msg.out);
    }
}

impl Handler<Unsubscribe> for SseFeed {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) {
        for subs in self.topics.values_mut() {
            subs.swap_remove(&msg.id);
        }
    }
}

impl Handler<CloseFeeds> for SseFeed {
    type Result = usize;

    fn handle(&mut self, _: CloseFeeds, _: &mut Self::Context) -> usize {
        let mut n = 0;
        for subs in self.topics.values_mut() {
            for out in subs.values() {
                let _ = out.try_send(OutFrame::Close(
                    actix_http::ws::CloseCode::Away,
                    String::new(),
                ));
                n += 1;
            }
            subs.clear();
        }
        n
    }
}
