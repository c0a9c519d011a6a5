//! Joining a room: replaying what the client missed (`since`), then adding it as a live
//! subscriber, so it sees every event once and in order.
//!
//! When this node's memory does not reach back to `since` and Redis is configured, the
//! older events are read from the Redis history first; live events published meanwhile
//! are kept by the broker's mailbox until the replay is queued. A replay is cut to the
//! newest events that fit half the client's queue ([`replay_start`]), so a long replay
//! cannot get a reconnecting client evicted again and again; a JSON client is told where
//! its replay starts (`history_truncated`).

use actix::prelude::*;
use actix_http::ws::CloseCode;

use super::messages::{EventFormat, Join, SessionNotice, Subscriber};
use super::room::{MemberEntry, StoredEvent};
use super::RoomBroker;
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
        let Join {
            room,
            subscriber: sub,
            since,
        } = msg;
        // Replay from Redis when this node's memory does not reach back to `since`.
        if let (Some(since), Some(bus)) = (since, self.connected_bus()) {
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
                        Ok(events) => StoredEvent::from_bus(events),
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
    /// Tells a refused subscriber why, and its session that it is not in the room.
    fn refuse_join(&self, room: &str, sub: &Subscriber, code: &str, message: &str) {
        if sub.format == EventFormat::Json {
            let _ = sub.out.text(ServerMsg::Error { code, message }.to_text());
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
        since: Option<u64>,
        fetched: Vec<StoredEvent>,
    ) {
        // The client may have gone (or its session disconnected) while its replay was
        // fetched: do not add a member nobody would remove.
        if sub.out.is_closed() || (sub.session.is_some() && !self.members.contains_key(&sub.id)) {
            return;
        }
        if since.is_some()
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
        if let Some(last) = fetched.last() {
            r.seq = r.seq.max(last.seq);
        }
        let rejoin = r.subs.contains_key(&sub.id);
        let json = sub.format == EventFormat::Json;
        if json {
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
            if since.saturating_add(1) < oldest && json {
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
            let replay: Vec<&StoredEvent> = fetched
                .iter()
                .filter(|e| e.seq > since)
                .chain(r.history.iter().filter(|e| e.seq > after_fetched))
                .collect();
            let sizes: Vec<usize> = replay.iter().map(|e| e.json.len()).collect();
            let start = replay_start(&sizes, sub.out.limits());
            if start > 0 && json {
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
            let mut replayed = 0;
            for ev in &replay[start..] {
                let text = ev.render(sub.format);
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
