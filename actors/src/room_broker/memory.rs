//! What a node keeps of its rooms in memory, and when it lets them go: a room is created
//! when first used (continuing its store's numbering), released when it holds nothing
//! worth keeping, forgotten when the node needs the space, and swept when idle. The
//! history all rooms keep in memory stays within the node's byte budget.

use std::sync::Arc;

use super::room::Room;
use super::{BrokerError, RoomBroker};

impl RoomBroker {
    pub(super) fn room_mut(&mut self, name: &str) -> Result<&mut Room, BrokerError> {
        if !self.rooms.contains_key(name) {
            if self.rooms.len() >= self.config.max_rooms && !self.forget_quietest_room() {
                return Err(BrokerError::TooManyRooms(self.config.max_rooms));
            }
            let ns = self.config.access.namespace(name);
            let mut room = Room::new(
                name,
                ns.and_then(|ns| ns.history_size)
                    .unwrap_or(self.config.history_limit),
                ns.is_none_or(|ns| ns.presence_events),
            );
            // A room known to the store continues its numbering.
            if let Some((epoch, seq)) = self.durable.as_mut().and_then(|d| d.heads.remove(name)) {
                room.epoch = Some(epoch);
                room.seq = seq;
                room.assigned = seq;
            }
            self.rooms.insert(room.name.clone(), room);
            self.metrics.rooms.set(self.rooms.len() as i64);
        }
        Ok(self.rooms.get_mut(name).expect("just inserted"))
    }

    /// Forgets the room without subscribers that has been quiet the longest, to make space
    /// for a new one; false when every room has subscribers.
    pub(super) fn forget_quietest_room(&mut self) -> bool {
        let quietest = self
            .rooms
            .values()
            .filter(|r| r.subs.is_empty() && r.assigned == r.seq && r.syncing.is_none())
            .min_by_key(|r| r.last_active)
            .map(|r| r.name.clone());
        let Some(name) = quietest else {
            return false;
        };
        if let Some(room) = self.rooms.remove(&name) {
            self.let_go(room);
        }
        self.metrics.rooms_forgotten.inc();
        log::info!("room={name} forgotten: the node holds its maximum of rooms");
        true
    }

    /// Lets a room go if it holds nothing worth keeping in memory (no subscribers, and
    /// no events but those its store keeps).
    pub(super) fn release_if_vacant(&mut self, name: &str) {
        let stored = self.durable.is_some() || self.bus.is_some();
        if !self.rooms.get(name).is_some_and(|r| r.is_vacant(stored)) {
            return;
        }
        if let Some(room) = self.rooms.remove(name) {
            self.let_go(room);
        }
        self.metrics.rooms.set(self.rooms.len() as i64);
    }

    /// Drops the history of the rooms quiet the longest until all rooms' history fits the
    /// node's budget (`HISTORY_MAX_BYTES`).
    pub(super) fn keep_history_budget(&mut self) {
        while self.history_bytes > self.config.history_budget {
            let quietest = self
                .rooms
                .values()
                .filter(|r| r.history_bytes > 0)
                .min_by_key(|r| r.last_active)
                .map(|r| r.name.clone());
            let Some(name) = quietest else { break };
            let room = self.rooms.get_mut(&name).expect("found above");
            self.history_bytes -= room.forget_history();
            self.metrics.history_evictions.inc();
            log::info!("room={name}: history dropped to keep the node's history budget");
        }
        self.metrics.history_bytes.set(self.history_bytes as i64);
    }

    pub(super) fn sweep(&mut self) {
        let idle = self.config.room_idle;
        let quiet: Vec<Arc<str>> = self
            .rooms
            .values()
            .filter(|r| {
                r.subs.is_empty()
                    && r.last_active.elapsed() >= idle
                    && r.assigned == r.seq
                    && r.syncing.is_none()
            })
            .map(|r| r.name.clone())
            .collect();
        for name in quiet {
            if let Some(room) = self.rooms.remove(&name) {
                self.let_go(room);
            }
        }
        self.metrics.rooms.set(self.rooms.len() as i64);
    }

    /// A room leaves memory: its history's bytes are freed and, with a store, its head
    /// is kept so its numbering continues when it comes back.
    pub(super) fn let_go(&mut self, room: Room) {
        if room.subscribed {
            if let Some(bus) = &self.bus {
                bus.unsubscribe(&room.name);
            }
        }
        self.history_bytes -= room.history_bytes;
        self.metrics.history_bytes.set(self.history_bytes as i64);
        if let (Some(d), Some(epoch)) = (self.durable.as_mut(), room.epoch) {
            d.heads.insert(room.name, (epoch, room.seq));
        }
    }
}
