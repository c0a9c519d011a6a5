//! `SseFeed`: the server-wide SSE topics.
//!
//! - `updates` (`/sse/updates`): what happens in the server — members joining and leaving
//!   rooms at once, message activity per room at most once per [`FeedConfig::coalesce`]
//!   (so a busy room cannot flood dashboards), and job events.
//! - `heartbeat` (`/sse/heartbeat`): a `heartbeat` event with the ISO-8601 time every
//!   [`FeedConfig::heartbeat`], rendered once per tick for every subscriber.
//!
//! Subscribers are bounded queues ([`crate::outbound`]); one that does not keep up is
//! dropped. A subscriber whose client disconnects is removed when its stream is dropped.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;
use chrono::{SecondsFormat, Utc};
use serde_json::json;

use crate::metrics::RealtimeMetrics;
use crate::outbound::{OutFrame, Outbound, SendError};

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
    pub out: Outbound,
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
    topics: HashMap<Topic, indexmap::IndexMap<u64, Outbound>>,
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

    fn update(&mut self, data: serde_json::Value) {
        let text = format!("event: update\ndata: {data}\n\n");
        self.broadcast(Topic::Updates, text.into());
    }

    fn flush_pending(&mut self) {
        let ts = now();
        for (room, (seq, count)) in std::mem::take(&mut self.pending) {
            self.update(json!({
                "kind": "room_activity",
                "room": room,
                "last_seq": seq,
                "messages": count,
                "ts": ts,
            }));
        }
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Actor for SseFeed {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(65_536);
        ctx.run_interval(self.config.heartbeat, |this, _| {
            let text = format!("event: heartbeat\ndata: {}\n\n", now());
            this.broadcast(Topic::Heartbeat, text.into());
        });
        ctx.run_interval(self.config.coalesce, |this, _| this.flush_pending());
    }
}

impl Handler<Activity> for SseFeed {
    type Result = ();

    fn handle(&mut self, msg: Activity, _: &mut Self::Context) {
        self.metrics.feed_mailbox.dec();
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
            Activity::MemberJoined { room, name } => self.update(json!({
                "kind": "member_joined", "room": room, "name": name, "ts": now(),
            })),
            Activity::MemberLeft { room, name } => self.update(json!({
                "kind": "member_left", "room": room, "name": name, "ts": now(),
            })),
            Activity::Other { kind, data } => self.update(json!({
                "kind": kind, "data": data, "ts": now(),
            })),
        }
    }
}

impl Handler<Subscribe> for SseFeed {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) {
        self.metrics.feed_mailbox.dec();
        self.topics
            .entry(msg.topic)
            .or_default()
            .insert(msg.id, msg.out);
    }
}

impl Handler<Unsubscribe> for SseFeed {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) {
        self.metrics.feed_mailbox.dec();
        for subs in self.topics.values_mut() {
            subs.swap_remove(&msg.id);
        }
    }
}

impl Handler<CloseFeeds> for SseFeed {
    type Result = usize;

    fn handle(&mut self, _: CloseFeeds, _: &mut Self::Context) -> usize {
        self.metrics.feed_mailbox.dec();
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
