//! Idempotent publishing without Redis: the sequence number each idempotency key got in a
//! room, for `IDEMPOTENCY_WINDOW_SECS`, so a publish retried after a timeout or a
//! reconnect is answered with the first one's number and not stored or delivered again.
//! (With Redis the publish script keeps the keys, for every node.)
//!
//! Bounded: at most `max_keys` keys are kept; past it the oldest are forgotten first.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// What a key is known for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// Not seen in the window.
    New,
    /// Being stored, as this sequence number.
    Pending(u64),
    /// Stored and delivered as this sequence number.
    Done(u64),
}

/// The keys seen lately, per room.
pub(super) struct Idempotency {
    window: Duration,
    max_keys: usize,
    keys: HashMap<(String, String), (Seen, Instant)>,
    /// Keys in the order they were first seen, for expiry and the bound.
    order: VecDeque<(Instant, (String, String))>,
}

impl Idempotency {
    /// Keys are kept for `window`, at most `max_keys` of them.
    pub(super) fn new(window: Duration, max_keys: usize) -> Self {
        Self {
            window,
            max_keys: max_keys.max(1),
            keys: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.window && self.order.len() <= self.max_keys
            {
                break;
            }
            let (at, key) = self.order.pop_front().expect("front exists");
            // Only the entry this order slot was made for (a key forgotten and seen again
            // has a newer one).
            if self.keys.get(&key).is_some_and(|(_, since)| *since == at) {
                self.keys.remove(&key);
            }
        }
    }

    /// What `key` is known for in `room` at `now`.
    pub(super) fn seen(&mut self, room: &str, key: &str, now: Instant) -> Seen {
        self.expire(now);
        self.keys
            .get(&(room.to_owned(), key.to_owned()))
            .map_or(Seen::New, |(seen, _)| *seen)
    }

    /// Records that `key` is being stored as `seq` in `room`, at `now`.
    pub(super) fn pending(&mut self, room: &str, key: &str, seq: u64, now: Instant) {
        let k = (room.to_owned(), key.to_owned());
        self.keys.insert(k.clone(), (Seen::Pending(seq), now));
        self.order.push_back((now, k));
        self.expire(now);
    }

    /// Records that `key` was stored as `seq`.
    pub(super) fn done(&mut self, room: &str, key: &str, seq: u64) {
        if let Some(entry) = self.keys.get_mut(&(room.to_owned(), key.to_owned())) {
            entry.0 = Seen::Done(seq);
        }
    }

    /// Forgets `key` (its publish failed: a retry publishes it anew).
    pub(super) fn forget(&mut self, room: &str, key: &str) {
        self.keys.remove(&(room.to_owned(), key.to_owned()));
    }

    /// Keys kept now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_remembered_per_room_until_the_window_ends() {
        let t0 = Instant::now();
        let later = |ms| t0 + Duration::from_millis(ms);
        let mut idem = Idempotency::new(Duration::from_millis(50), 100);
        assert_eq!(idem.seen("a", "alice:1", t0), Seen::New);
        idem.pending("a", "alice:1", 7, t0);
        assert_eq!(idem.seen("a", "alice:1", later(10)), Seen::Pending(7));
        idem.done("a", "alice:1", 7);
        assert_eq!(idem.seen("a", "alice:1", later(49)), Seen::Done(7));
        assert_eq!(
            idem.seen("b", "alice:1", later(49)),
            Seen::New,
            "keys are per room"
        );
        assert_eq!(
            idem.seen("a", "alice:1", later(50)),
            Seen::New,
            "the window ended"
        );
        assert_eq!(idem.len(), 0);
    }

    #[test]
    fn keys_are_bounded_oldest_first_and_a_failure_forgets() {
        let now = Instant::now();
        let mut idem = Idempotency::new(Duration::from_secs(60), 3);
        for i in 0..5u64 {
            idem.pending("a", &i.to_string(), i, now);
        }
        assert_eq!(idem.len(), 3);
        assert_eq!(idem.seen("a", "0", now), Seen::New);
        assert_eq!(idem.seen("a", "4", now), Seen::Pending(4));
        idem.forget("a", "4");
        assert_eq!(idem.seen("a", "4", now), Seen::New);
    }
}
