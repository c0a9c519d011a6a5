//! Token buckets: how fast one client may spend something (messages, bytes, replayed
//! history), with a burst allowance.
//!
//! - [`TokenBucket`]: `rate` tokens per second, at most `burst` saved up. A cost known in
//!   advance is taken all or nothing ([`TokenBucket::try_take`]); a cost known only after
//!   the work ([`TokenBucket::charge`], e.g. the bytes of a history read) may leave the
//!   bucket in debt, which refusals repay.
//! - [`RateLimiter`]: a bucket with a flood detector, for a connection's frames: refusals
//!   past `flood_limit` within a second mean the client ignores the refusals.
//! - [`SharedBucket`]: a bucket several actors charge (a connection's replay budget, which
//!   the session holds and the broker charges).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The window in which refusals are counted towards a flood.
const FLOOD_WINDOW: Duration = Duration::from_secs(1);

/// `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self::full_at(rate, burst, Instant::now())
    }

    fn full_at(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst.max(1.0),
            last: now,
            rate: rate.max(f64::MIN_POSITIVE),
            burst: burst.max(1.0),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Takes `cost` tokens if there are that many; false (and nothing taken) otherwise.
    pub fn try_take(&mut self, cost: f64) -> bool {
        self.try_take_at(cost, Instant::now())
    }

    fn try_take_at(&mut self, cost: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// Whether anything is left to spend (the bucket is not empty or in debt).
    pub fn has_tokens(&mut self) -> bool {
        self.refill(Instant::now());
        self.tokens > 0.0
    }

    /// Takes `cost` tokens whatever is left: the bucket may go into debt.
    pub fn charge(&mut self, cost: f64) {
        self.refill(Instant::now());
        self.tokens -= cost;
    }

    /// Whether the bucket is whole again (`burst` tokens).
    pub fn is_full(&mut self, burst: f64) -> bool {
        self.refill(Instant::now());
        self.tokens >= burst.min(self.burst)
    }

    /// How long until the bucket has anything to spend again.
    pub fn wait(&mut self) -> Duration {
        self.refill(Instant::now());
        if self.tokens > 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((-self.tokens + 1.0) / self.rate)
        }
    }
}

/// A bucket shared by several actors (each charge takes a short lock).
#[derive(Debug, Clone)]
pub struct SharedBucket(Arc<Mutex<TokenBucket>>);

impl SharedBucket {
    /// A full shared bucket.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self(Arc::new(Mutex::new(TokenBucket::new(rate, burst))))
    }

    /// Runs `f` on the bucket.
    pub fn with<T>(&self, f: impl FnOnce(&mut TokenBucket) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handle it.
    Allow,
    /// Refuse it with an error frame.
    Refuse,
    /// Refuse it and close the connection: the client keeps sending past the limit.
    Flood,
}

/// A token bucket with a flood detector.
#[derive(Debug)]
pub struct RateLimiter {
    bucket: TokenBucket,
    refused: u32,
    window: Instant,
    flood_limit: u32,
}

impl RateLimiter {
    /// A full bucket: `burst` at once, refilled at `rate` per second; more than
    /// `flood_limit` refusals within a second is a flood.
    pub fn new(rate: u32, burst: u32, flood_limit: u32) -> Self {
        Self::starting_at(rate, burst, flood_limit, Instant::now())
    }

    fn starting_at(rate: u32, burst: u32, flood_limit: u32, now: Instant) -> Self {
        Self {
            bucket: TokenBucket::full_at(f64::from(rate.max(1)), f64::from(burst.max(1)), now),
            refused: 0,
            window: now,
            flood_limit,
        }
    }

    /// Counts one message (or `cost` units of one) now.
    pub fn check(&mut self, cost: u32) -> Verdict {
        self.check_at(cost, Instant::now())
    }

    fn check_at(&mut self, cost: u32, now: Instant) -> Verdict {
        if self.bucket.try_take_at(f64::from(cost), now) {
            return Verdict::Allow;
        }
        if now.saturating_duration_since(self.window) >= FLOOD_WINDOW {
            self.window = now;
            self.refused = 0;
        }
        self.refused += 1;
        if self.refused > self.flood_limit {
            Verdict::Flood
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_then_a_flood_closes() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::starting_at(10, 5, 3, t0);
        for _ in 0..5 {
            assert_eq!(limiter.check_at(1, t0), Verdict::Allow);
        }
        for _ in 0..3 {
            assert_eq!(limiter.check_at(1, t0), Verdict::Refuse);
        }
        assert_eq!(limiter.check_at(1, t0), Verdict::Flood);
    }

    #[test]
    fn tokens_come_back_at_the_rate_up_to_the_burst() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::starting_at(10, 5, 100, t0);
        for _ in 0..5 {
            limiter.check_at(1, t0);
        }
        assert_eq!(limiter.check_at(1, t0), Verdict::Refuse);
        // 10 per second: one token every 100 ms.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(limiter.check_at(1, t1), Verdict::Allow);
        assert_eq!(limiter.check_at(1, t1), Verdict::Refuse);
        // A long pause refills only up to the burst.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(limiter.check_at(1, t2), Verdict::Allow);
        }
        assert_eq!(limiter.check_at(1, t2), Verdict::Refuse);
    }

    #[test]
    fn refusals_are_counted_per_second() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::starting_at(1, 1, 2, t0);
        assert_eq!(limiter.check_at(1, t0), Verdict::Allow);
        assert_eq!(limiter.check_at(1, t0), Verdict::Refuse);
        assert_eq!(limiter.check_at(1, t0), Verdict::Refuse);
        // A new window: the count starts again (the token refilled meanwhile is spent first).
        let t1 = t0 + Duration::from_millis(1500);
        assert_eq!(limiter.check_at(1, t1), Verdict::Allow);
        assert_eq!(limiter.check_at(1, t1), Verdict::Refuse);
        assert_eq!(limiter.check_at(1, t1), Verdict::Refuse);
        assert_eq!(limiter.check_at(1, t1), Verdict::Flood);
    }

    #[test]
    fn costs_are_taken_whole_and_charges_may_go_into_debt() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full_at(100.0, 1000.0, t0);
        assert!(bucket.try_take_at(600.0, t0));
        assert!(!bucket.try_take_at(600.0, t0), "only 400 left");
        assert!(bucket.try_take_at(400.0, t0));
        bucket.tokens = 10.0;
        bucket.last = Instant::now();
        bucket.charge(500.0);
        assert!(!bucket.has_tokens());
        // 490 in debt at 100 per second: about five seconds.
        let wait = bucket.wait();
        assert!(
            wait > Duration::from_secs(4) && wait <= Duration::from_secs(5),
            "{wait:?}"
        );
    }
}
