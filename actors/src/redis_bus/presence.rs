//! Presence across nodes: each node writes its members' joins and leaves to Redis (a hash
//! per room) and tells the other nodes on the room's channel. Changes wait in
//! [`PendingPresence`], coalesced per member, and one writer per node sends them in order.

use bb8_redis::redis::{self, AsyncCommands};
use serde::{Deserialize, Serialize};

use super::{RedisBus, Wire, NODE_TTL_SECS};
use crate::protocol::MemberView;

/// Presence changes written to Redis in one go.
pub const PRESENCE_BATCH: usize = 256;

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

    /// Writes one presence change and tells the other nodes.
    async fn write_presence(&self, op: PresenceOp) {
        let PresenceOp {
            room,
            member,
            joined,
        } = op;
        let wire = serde_json::to_string(&Wire {
            seq: None,
            k: if joined { "j" } else { "l" },
            from: None,
            user: None,
            data: None,
            ts: None,
            member: Some(member.clone()),
            node: Some(&self.inner.node),
            cmd: None,
        })
        .expect("wire serialises");
        let entry = serde_json::to_string(&PresenceEntry {
            id: member.id.clone(),
            name: member.name.clone(),
            user: member.user.clone(),
            node: self.inner.node.clone(),
        })
        .expect("entry serialises");
        let result = self
            .timed(async {
                let mut c = self.conn().await?;
                let mut pipe = redis::pipe();
                if joined {
                    pipe.hset(self.presence_key(&room), &member.id, entry)
                        .ignore();
                    pipe.set_ex(self.node_key(&self.inner.node), 1, NODE_TTL_SECS)
                        .ignore();
                } else {
                    pipe.hdel(self.presence_key(&room), &member.id).ignore();
                }
                pipe.publish(self.channel(&room), wire).ignore();
                pipe.query_async::<()>(&mut *c)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
        if let Err(e) = result {
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

    /// The room's members on every live node.
    pub async fn presence(&self, room: &str) -> Result<Vec<MemberView>, String> {
        let key = self.presence_key(room);
        self.timed(async {
            let mut c = self.conn().await?;
            let entries: Vec<(String, String)> =
                c.hgetall(&key).await.map_err(|e| e.to_string())?;
            let entries: Vec<PresenceEntry> = entries
                .into_iter()
                .filter_map(|(_, v)| serde_json::from_str(&v).ok())
                .collect();
            let mut nodes: Vec<&str> = entries.iter().map(|e| e.node.as_str()).collect();
            nodes.sort_unstable();
            nodes.dedup();
            let mut live = Vec::new();
            for node in nodes {
                let alive: bool = c
                    .exists(self.node_key(node))
                    .await
                    .map_err(|e| e.to_string())?;
                if alive {
                    live.push(node.to_owned());
                }
            }
            let mut members = Vec::new();
            for e in entries {
                if live.contains(&e.node) {
                    members.push(MemberView {
                        id: e.id,
                        name: e.name,
                        user: e.user,
                    });
                } else {
                    // A node that died without cleaning up: forget its members.
                    let _: Result<(), _> = c.hdel(&key, &e.id).await;
                }
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
