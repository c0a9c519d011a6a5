//! Joining a room: replaying what the client missed (`since`), then adding it as a live
//! subscriber, so it sees every event once and in order.
//!
//! When this node's memory does not reach back to `since` and Redis is configured, the
//! older events are read from the Redis history first; live events published meanwhile
//! are kept by the broker's mailbox until the replay is queued. A replay is cut to the
//! newest events that fit half the client's queue ([`replay_start`]), so a long replay
//! cannot get a reconnecting client evicted again and again; a JSON client is told where
//! its replay starts (`history_truncated`).

use std::future::Future;

use actix::prelude::*;
use actix_http::ws::CloseCode;

use super::messages::{EventFormat, Join, SessionNotice, Subscriber};
use super::room::{MemberEntry, StoredEvent};
use super::RoomBroker;
use super::MAX_APPEND_BATCH;
use crate::client_queue::{OutFrame, QueueLimits};
use crate::protocol::ServerMsg;
use crate::sse_feed::Activity;

/// Where a replay of events with these sizes (oldest first) starts so that it takes at
/// most half of the client's queue in messages and in bytes: the index of the first event
/// sent. The newest events are kept.
pub fn replay_start(sizes: &[usize], limits: QueueLimits) -> usize {
    let (mut count, mut bytes, mut start) = (0usize, 0usize, sizes.len());
    while start > 0 {
        let len = sizes[start - 1];
        if count + 1 > limits.messages / 2 || bytes + len > limits.bytes / 2 {
            break;
        }
        count += 1;
        bytes += len;
        start -= 1;
    }
    start
}

impl Handler<Join> for RoomBroker {
    type Result = ();

    fn handle(&mut self, msg: Join, ctx: &mut Self::Context) {
        // With Redis, a room is joined once this node serves it (subscribed, head read).
        if self.bus.is_some() {
            let served = self
                .rooms
                .get(msg.room.as_str())
                .is_some_and(|r| r.subscribed && r.syncing.is_none());
            if !served {
                self.serve_room(msg, ctx);
                return;
            }
        }
        self.join_served(msg, ctx);
    }
}

impl RoomBroker {
    /// Joins a room this node has (or serves): replays from memory, or from the store when
    /// memory does not reach back to `since`.
    pub(super) fn join_served(&mut self, msg: Join, ctx: &mut Context<Self>) {
        let Join {
            room,
            subscriber: sub,
            since,
            epoch,
        } = msg;
        // Read the older events from the store (Redis, or the database) when this node's
        // memory does not reach back to `since`.
        let (oldest, last) = match self.rooms.get(room.as_str()) {
            Some(r) => (r.history.front().map(|e| e.seq), r.seq),
            None => (
                None,
                self.durable
                    .as_ref()
                    .and_then(|d| d.heads.get(room.as_str()).map(|h| h.1))
                    .unwrap_or(0),
            ),
        };
        let reaches = |since: u64| oldest.is_some_and(|oldest| since.saturating_add(1) >= oldest);
        if let Some(since) = since.filter(|s| *s < last && !reaches(*s)) {
            let cap = self.config.history_limit.max(MAX_APPEND_BATCH);
            let fetch_room = room.clone();
            let fetch: Option<Fetch> = if let Some(bus) = self.connected_bus() {
                Some(Box::pin(async move {
                    bus.history(&fetch_room, since, cap)
                        .await
                        .map(StoredEvent::from_bus)
                }))
            } else if let Some(d) = &self.durable {
                let db = d.db().clone();
                Some(Box::pin(async move {
                    db.room_events_after(&fetch_room, since, cap)
                        .await
                        .map(|rows| {
                            rows.into_iter()
                                .map(|(seq, json)| {
                                    StoredEvent::from_json(
                                        u64::try_from(seq).unwrap_or(0),
                                        json.into(),
                                    )
                                })
                                .collect()
                        })
                        .map_err(|e| e.to_string())
                }))
            } else {
                None
            };
            if let Some(fetch) = fetch {
                ctx.spawn(fetch.into_actor(self).map(move |result, this, _| {
                    let fetched = result.unwrap_or_else(|e| {
                        // Replay what memory holds; the client is told it is incomplete.
                        log::warn!("room={room}: reading its history failed ({e})");
                        Vec::new()
                    });
                    this.complete_join(room, sub, since_and_epoch(Some(since), epoch), fetched);
                }));
                return;
            }
        }
        self.complete_join(room, sub, since_and_epoch(since, epoch), Vec::new());
    }
}

/// Reading older events from the store.
type Fetch = std::pin::Pin<Box<dyn Future<Output = Result<Vec<StoredEvent>, String>>>>;

/// What a joining client already has: the last sequence number, and the epoch it is in.
pub(super) struct Have {
    since: u64,
    epoch: Option<String>,
}

fn since_and_epoch(since: Option<u64>, epoch: Option<String>) -> Option<Have> {
    since.map(|since| Have { since, epoch })
}

impl RoomBroker {
    /// Tells a refused subscriber why, and its session that it is not in the room.
    pub(super) fn refuse_join(&self, room: &str, sub: &Subscriber, code: &str, message: &str) {
        if sub.format == EventFormat::Json {
            let _ = sub
                .out
                .text(ServerMsg::room_error(room, code, message).to_text());
        } else {
            let close = if code == "rate_limited" {
                CloseCode::Policy
            } else {
                CloseCode::Again
            };
            let _ = sub.out.try_send(OutFrame::Close(close, message.to_owned()));
        }
        if let Some(session) = &sub.session {
            let _ = session.try_send(SessionNotice::JoinRefused {
                room: room.to_owned(),
            });
        }
    }

    /// Adds a subscriber to a room after replaying `fetched` (older events from Redis) and
    /// then the in-memory history after `since`; live events follow, in order.
    fn complete_join(
        &mut self,
        room: String,
        sub: Subscriber,
        have: Option<Have>,
        fetched: Vec<StoredEvent>,
    ) {
        // The client may have gone (or its session disconnected) while its replay was
        // fetched: do not add a member nobody would remove.
        if sub.out.is_closed() || (sub.session.is_some() && !self.members.contains_key(&sub.id)) {
            return;
        }
        if have.is_some()
            && sub
                .replay_budget
                .as_ref()
                .is_some_and(|b| !b.with(|b| b.has_tokens()))
        {
            let message = "too much history replayed; join again later";
            self.refuse_join(&room, &sub, "rate_limited", message);
            return;
        }
        let r = match self.room_mut(&room) {
            Ok(r) => r,
            Err(e) => {
                self.refuse_join(&room, &sub, "too_many_rooms", &e.to_string());
                return;
            }
        };
        r.last_active = std::time::Instant::now();
        // The store may already hold events this node has not delivered yet: those come
        // live, in order, to every subscriber; the replay stops at what was delivered.
        let mut fetched = fetched;
        fetched.retain(|e| e.seq <= r.seq);
        let rejoin = r.subs.contains_key(&sub.id);
        let json = sub.format == EventFormat::Json;
        let epoch = r.epoch.clone();
        // What to replay, and whether that is everything the client missed.
        let mut recovered = None;
        let mut replay: Vec<&StoredEvent> = Vec::new();
        if let Some(have) = &have {
            let same_epoch = match (&have.epoch, &epoch) {
                (Some(theirs), Some(ours)) => **theirs == **ours,
                // A client that does not say its epoch is taken at its word; a room with
                // no epoch yet has no events.
                (None, _) => true,
                (Some(_), None) => have.since == 0,
            };
            if same_epoch && have.since <= r.seq {
                let oldest = fetched
                    .first()
                    .or(r.history.front())
                    .map_or(r.seq + 1, |e| e.seq);
                let after_fetched = fetched.last().map_or(have.since, |e| e.seq);
                replay = fetched
                    .iter()
                    .filter(|e| e.seq > have.since)
                    .chain(r.history.iter().filter(|e| e.seq > after_fetched))
                    .collect();
                recovered = Some(have.since.saturating_add(1) >= oldest || have.since >= r.seq);
            } else {
                // The numbering started again (or the client is from the future): its
                // `since` says nothing about what it missed.
                recovered = Some(false);
            }
        }
        if let Some(have) = &have {
            log::debug!(
                "room={room} member={}: join since {} at seq {} (history from {:?}, {} fetched): {} replayed, recovered {recovered:?}",
                sub.id,
                have.since,
                r.seq,
                r.history.front().map(|e| e.seq),
                fetched.len(),
                replay.len()
            );
        }
        let sizes: Vec<usize> = replay.iter().map(|e| e.json.len()).collect();
        let start = replay_start(&sizes, sub.out.limits());
        if start > 0 {
            recovered = Some(false);
        }
        if json {
            let _ = sub.out.text(
                ServerMsg::Joined {
                    room: &room,
                    seq: r.seq,
                    epoch: epoch.as_deref(),
                    recovered,
                }
                .to_text(),
            );
        }
        if sub.format == EventFormat::Sse {
            // SSE: the stream's state first, as an event EventSource clients may listen to.
            let state = ServerMsg::Joined {
                room: &room,
                seq: r.seq,
                epoch: epoch.as_deref(),
                recovered,
            }
            .to_text();
            let _ = sub.out.try_send(OutFrame::Text(
                format!("event: joined\ndata: {state}\n\n").into(),
            ));
        }
        if let Some(have) = &have {
            if recovered == Some(false) && json {
                let message = match replay.get(start) {
                    Some(first) if start > 0 => format!(
                        "replay starts at {}: older events do not fit the client's queue",
                        first.seq
                    ),
                    Some(first) => format!(
                        "events {}..{} are no longer kept; replay starts at {}",
                        have.since.saturating_add(1),
                        first.seq - 1,
                        first.seq
                    ),
                    None => {
                        "the events after since cannot be replayed; reload the state".to_owned()
                    }
                };
                let _ = sub
                    .out
                    .text(ServerMsg::room_error(&room, "history_truncated", &message).to_text());
            }
            let mut replayed = 0;
            for ev in &replay[start..] {
                let text = ev.render(sub.format, epoch.as_deref());
                replayed += text.len();
                let _ = sub.out.try_send(OutFrame::Text(text));
            }
            if let Some(budget) = &sub.replay_budget {
                budget.with(|b| b.charge(replayed as f64));
            }
        }
        if rejoin {
            return;
        }
        r.add(sub.clone());
        let room_name = r.name.clone();
        let entry = self
            .members
            .entry(sub.id.clone())
            .or_insert_with(|| MemberEntry {
                rooms: Vec::new(),
                out: sub.out.clone(),
                session: sub.session.clone(),
                user: sub.user.clone(),
            });
        entry.rooms.push(room_name);
        if sub.visible {
            self.metrics.members.inc();
            let view = sub.view();
            if self.announces_presence(&room) {
                let text = ServerMsg::MemberJoined {
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

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: QueueLimits = QueueLimits {
        messages: 10,
        bytes: 1000,
    };

    #[test]
    fn a_short_replay_is_sent_whole() {
        assert_eq!(replay_start(&[10, 10, 10], LIMITS), 0);
        assert_eq!(replay_start(&[], LIMITS), 0);
    }

    #[test]
    fn a_long_replay_keeps_the_newest_half_queue_of_messages() {
        let sizes = vec![1; 20];
        // Half of 10 messages: the newest five.
        assert_eq!(replay_start(&sizes, LIMITS), 15);
    }

    #[test]
    fn a_heavy_replay_keeps_the_newest_half_queue_of_bytes() {
        // Half of 1000 bytes: the newest two of 200 bytes (the third would make 600).
        assert_eq!(replay_start(&[200, 200, 200, 200], LIMITS), 2);
        // One event larger than half the queue: nothing fits.
        assert_eq!(replay_start(&[600], LIMITS), 1);
    }
}
