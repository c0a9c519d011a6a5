//! Idempotent publishing without Redis: the sequence number each idempotency key got in a
//! room, for `IDEMPOTENCY_WINDOW_SECS`, so a publish retried after a timeout or a
//! reconnect is answered with the first one's number and not stored or delivered again.
//! (With Redis the publish script keeps the keys, for every node.)
//!
//! Bounded: at most `max_keys` keys are kept; past it the oldest are forgotten first.
//!
//! A window holds one key per publish (60,000 at 200 publishes/s and the default 300 s), so
//! a key is kept as a fixed-size 128-bit digest of its room and text, not as two strings:
//! 48 bytes in the map and 32 in the expiry queue, with no allocation of its own. The
//! digest is two SipHash values under keys drawn at random when the store is made, so a
//! client cannot aim two keys at one digest, and the odds that a new key meets one of those
//! kept by chance are below 10⁻³⁰ per publish, even at the largest `IDEMPOTENCY_MAX_KEYS`.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use prometheus::IntGauge;

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

/// A room and key, as the 128-bit digest the store keeps.
type Digest = u128;

/// The keys seen lately, per room.
pub(super) struct Idempotency {
    window: Duration,
    max_keys: usize,
    /// Two independently keyed hashers: one for each half of a digest.
    digest_keys: [RandomState; 2],
    keys: HashMap<Digest, (Seen, Instant)>,
    /// Keys in the order they were first seen, for expiry and the bound.
    order: VecDeque<(Instant, Digest)>,
    /// `courier_idempotency_keys`: keys kept now.
    gauge: IntGauge,
}

impl Idempotency {
    /// Keys are kept for `window`, at most `max_keys` of them; `gauge` follows their count.
    pub(super) fn new(window: Duration, max_keys: usize, gauge: IntGauge) -> Self {
        gauge.set(0);
        Self {
            window,
            max_keys: max_keys.max(1),
            digest_keys: [RandomState::new(), RandomState::new()],
            keys: HashMap::new(),
            order: VecDeque::new(),
            gauge,
        }
    }

    fn digest(&self, room: &str, key: &str) -> Digest {
        // Hashing the pair writes each string with a terminator, so ("ab", "c") and
        // ("a", "bc") differ.
        let [a, b] = &self.digest_keys;
        (u128::from(a.hash_one((room, key))) << 64) | u128::from(b.hash_one((room, key)))
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
        self.shrink();
    }

    /// Gives back memory a burst of keys left behind once they have expired (a table stays
    /// at its largest size otherwise), and updates the gauge.
    fn shrink(&mut self) {
        if self.keys.capacity() > 4 * self.keys.len().max(1024) {
            self.keys.shrink_to(2 * self.keys.len());
        }
        if self.order.capacity() > 4 * self.order.len().max(1024) {
            self.order.shrink_to(2 * self.order.len());
        }
        self.gauge.set(self.keys.len() as i64);
    }

    /// What `key` is known for in `room` at `now`.
    pub(super) fn seen(&mut self, room: &str, key: &str, now: Instant) -> Seen {
        self.expire(now);
        self.keys
            .get(&self.digest(room, key))
            .map_or(Seen::New, |(seen, _)| *seen)
    }

    /// Records that `key` is being stored as `seq` in `room`, at `now`.
    pub(super) fn pending(&mut self, room: &str, key: &str, seq: u64, now: Instant) {
        let k = self.digest(room, key);
        self.keys.insert(k, (Seen::Pending(seq), now));
        self.order.push_back((now, k));
        self.expire(now);
    }

    /// Records that `key` was stored as `seq`.
    pub(super) fn done(&mut self, room: &str, key: &str, seq: u64) {
        let k = self.digest(room, key);
        if let Some(entry) = self.keys.get_mut(&k) {
            entry.0 = Seen::Done(seq);
        }
    }

    /// Forgets `key` (its publish failed: a retry publishes it anew).
    pub(super) fn forget(&mut self, room: &str, key: &str) {
        let k = self.digest(room, key);
        self.keys.remove(&k);
        self.gauge.set(self.keys.len() as i64);
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

    fn gauge() -> IntGauge {
        IntGauge::new("courier_idempotency_keys", "keys").unwrap()
    }

    #[test]
    fn a_key_is_remembered_per_room_until_the_window_ends() {
        let t0 = Instant::now();
        let later = |ms| t0 + Duration::from_millis(ms);
        let mut idem = Idempotency::new(Duration::from_millis(50), 100, gauge());
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
        let mut idem = Idempotency::new(Duration::from_secs(60), 3, gauge());
        for i in 0..5u64 {
            idem.pending("a", &i.to_string(), i, now);
        }
        assert_eq!(idem.len(), 3);
        assert_eq!(idem.seen("a", "0", now), Seen::New);
        assert_eq!(idem.seen("a", "4", now), Seen::Pending(4));
        idem.forget("a", "4");
        assert_eq!(idem.seen("a", "4", now), Seen::New);
    }

    #[test]
    fn keys_are_told_apart_by_room_and_text_not_by_where_they_are_split() {
        let now = Instant::now();
        let mut idem = Idempotency::new(Duration::from_secs(60), 100, gauge());
        idem.pending("ab", "c", 1, now);
        assert_eq!(idem.seen("a", "bc", now), Seen::New);
        assert_eq!(idem.seen("abc", "", now), Seen::New);
        assert_eq!(idem.seen("ab", "c", now), Seen::Pending(1));
    }

    #[test]
    fn the_gauge_follows_the_keys_and_a_burst_gives_its_memory_back() {
        let t0 = Instant::now();
        let g = gauge();
        let mut idem = Idempotency::new(Duration::from_secs(1), 1_000_000, g.clone());
        for i in 0..50_000u64 {
            idem.pending("a", &i.to_string(), i, t0);
        }
        assert_eq!(g.get(), 50_000);
        let burst = idem.keys.capacity();
        assert!(burst >= 50_000);
        // The window ends: the next publish expires the burst.
        idem.pending("a", "late", 1, t0 + Duration::from_secs(2));
        assert_eq!(g.get(), 1);
        assert!(
            idem.keys.capacity() < burst / 4 && idem.order.capacity() < burst / 4,
            "map {} and queue {} slots kept after a burst of {burst}",
            idem.keys.capacity(),
            idem.order.capacity()
        );
        idem.forget("a", "late");
        assert_eq!(g.get(), 0);
    }
}
