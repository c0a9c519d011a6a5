//! Presence across nodes: each node writes its members' joins and leaves to Redis (a hash
//! per room) and tells the other nodes on the room's channel. Changes wait in
//! [`PendingPresence`], coalesced per member, and one writer per node sends them in order.
//! Every entry expires unless its node writes it again ([`PRESENCE_REFRESH_INTERVAL`]), so
//! a lost leave or a dead node leaves no ghost for longer than [`PRESENCE_TTL`].

use bb8_redis::redis::{self, AsyncCommands};
use serde::{Deserialize, Serialize};

use super::{RedisBus, Wire};
use crate::access::unix_now;
use crate::protocol::MemberView;

/// Presence changes written to Redis in one go.
pub const PRESENCE_BATCH: usize = 256;
/// A presence entry its node stops refreshing (its leave was lost, or the node died)
/// disappears after this long.
pub const PRESENCE_TTL: std::time::Duration = std::time::Duration::from_secs(30);
/// How often a node writes its members' entries again.
pub const PRESENCE_REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// One presence change.
pub(super) struct PresenceOp {
    room: String,
    member: MemberView,
    joined: bool,
}

/// Presence changes waiting to be written, at most one per member and room: a newer change
/// replaces an older one not yet written (a join then a leave is written as the leave), so
/// the queue is bounded by the members this node has and nothing is ever dropped. Written
/// in the order the members first changed.
#[derive(Default)]
pub(super) struct PendingPresence {
    ops: std::sync::Mutex<indexmap::IndexMap<(String, String), PresenceOp>>,
    ready: tokio::sync::Notify,
}

impl PendingPresence {
    pub(super) fn push(&self, op: PresenceOp) {
        let key = (op.room.clone(), op.member.id.clone());
        self.ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, op);
        self.ready.notify_one();
    }

    /// Up to [`PRESENCE_BATCH`] changes, oldest first.
    pub(super) fn take(&self) -> Vec<PresenceOp> {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let n = ops.len().min(PRESENCE_BATCH);
        ops.drain(..n).map(|(_, op)| op).collect()
    }
}

#[derive(Serialize, Deserialize)]
struct PresenceEntry {
    id: String,
    name: String,
    #[serde(default)]
    user: Option<String>,
    node: String,
    /// When the entry expires unless its node refreshes it (seconds since the epoch).
    #[serde(default)]
    exp: u64,
}

impl RedisBus {
    /// Starts the task that writes presence changes as they come.
    pub(super) fn start_presence_writer(&self) {
        let bus = self.clone();
        actix_rt::spawn(async move {
            loop {
                let ops = bus.inner.presence.take();
                if ops.is_empty() {
                    bus.inner.presence.ready.notified().await;
                    continue;
                }
                for op in ops {
                    bus.write_presence(op).await;
                }
            }
        });
    }

    fn announce(&self, room: &str, member: &MemberView, joined: bool) {
        let op = PresenceOp {
            room: room.to_owned(),
            member: member.clone(),
            joined,
        };
        self.inner.presence.push(op);
    }

    fn entry(&self, member: &MemberView) -> String {
        serde_json::to_string(&PresenceEntry {
            id: member.id.clone(),
            name: member.name.clone(),
            user: member.user.clone(),
            node: self.inner.node.clone(),
            exp: unix_now() + PRESENCE_TTL.as_secs(),
        })
        .expect("entry serialises")
    }

    /// Writes one presence change and tells the other nodes serving the room.
    async fn write_presence(&self, op: PresenceOp) {
        let PresenceOp {
            room,
            member,
            joined,
        } = op;
        let wire = serde_json::to_string(&Wire {
            member: Some(member.clone()),
            node: Some(&self.inner.node),
            ..Wire::kind(if joined { "j" } else { "l" })
        })
        .expect("wire serialises");
        let entry = self.entry(&member);
        let result = self
            .timed(async {
                let mut c = self.conn().await?;
                let mut pipe = redis::pipe();
                if joined {
                    pipe.hset(self.presence_key(&room), &member.id, entry)
                        .ignore();
                } else {
                    pipe.hdel(self.presence_key(&room), &member.id).ignore();
                }
                pipe.cmd("SPUBLISH")
                    .arg(self.channel(&room))
                    .arg(wire)
                    .ignore();
                pipe.query_async::<()>(&mut c)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
        if let Err(e) = result {
            // Not lost for good: the next refresh writes every member again, and an entry
            // nobody refreshes expires.
            log::debug!("bus: presence update for room={room} not stored: {e}");
        }
    }

    /// Records a member in the room's presence and tells other nodes.
    pub fn presence_joined(&self, room: &str, member: &MemberView) {
        self.announce(room, member, true);
    }

    /// Removes a member from the room's presence and tells other nodes.
    pub fn presence_left(&self, room: &str, member: &MemberView) {
        self.announce(room, member, false);
    }

    /// Writes every member this node has again, with a new expiry: a member whose join
    /// was written but whose leave was lost (or whose node died) disappears within
    /// [`PRESENCE_TTL`].
    pub fn refresh_presence(&self, rooms: Vec<(String, Vec<MemberView>)>) {
        let bus = self.clone();
        actix_rt::spawn(async move {
            for (room, members) in rooms {
                if members.is_empty() {
                    continue;
                }
                let result = bus
                    .timed(async {
                        let mut c = bus.conn().await?;
                        let mut pipe = redis::pipe();
                        for chunk in members.chunks(PRESENCE_BATCH) {
                            let fields: Vec<(String, String)> =
                                chunk.iter().map(|m| (m.id.clone(), bus.entry(m))).collect();
                            pipe.hset_multiple(bus.presence_key(&room), &fields)
                                .ignore();
                        }
                        pipe.query_async::<()>(&mut c)
                            .await
                            .map_err(|e| e.to_string())
                    })
                    .await;
                if let Err(e) = result {
                    log::debug!("bus: presence refresh of room={room} failed: {e}");
                }
            }
        });
    }

    /// The room's members on every node (entries past their expiry are removed).
    pub async fn presence(&self, room: &str) -> Result<Vec<MemberView>, String> {
        let key = self.presence_key(room);
        self.timed(async {
            let mut c = self.conn().await?;
            let entries: Vec<(String, String)> =
                c.hgetall(&key).await.map_err(|e| e.to_string())?;
            let now = unix_now();
            let mut members = Vec::new();
            let mut expired = Vec::new();
            for (field, value) in entries {
                match serde_json::from_str::<PresenceEntry>(&value) {
                    Ok(e) if e.exp >= now => members.push(MemberView {
                        id: e.id,
                        name: e.name,
                        user: e.user,
                    }),
                    _ => expired.push(field),
                }
            }
            if !expired.is_empty() {
                let _: Result<(), _> = c.hdel(&key, &expired).await;
            }
            members.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
            Ok(members)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(room: &str, id: &str, joined: bool) -> PresenceOp {
        PresenceOp {
            room: room.into(),
            member: MemberView {
                id: id.into(),
                name: id.into(),
                user: None,
            },
            joined,
        }
    }

    #[test]
    fn presence_changes_coalesce_per_member_and_are_never_dropped() {
        let pending = PendingPresence::default();
        for i in 0..10_000 {
            pending.push(op("lobby", &format!("m{i}"), true));
        }
        // A member who joined and left before anything was written: only the leave is.
        pending.push(op("lobby", "m0", false));
        let mut written = Vec::new();
        loop {
            let batch = pending.take();
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= PRESENCE_BATCH);
            written.extend(batch);
        }
        assert_eq!(written.len(), 10_000, "one change per member, none dropped");
        assert_eq!(written[0].member.id, "m0");
        assert!(!written[0].joined, "the newest change of m0");
    }
}
